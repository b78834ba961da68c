"""Packaging, the command line and the public names.

One version everywhere (package metadata, ``pescador.__version__``, the
changes page, ``python -m pescador --version``); the extras state ranges and
``constraints.txt`` pins them; ``python -m pescador --help`` is plain text
with help for every argument; ``dir(pescador)`` is ``__all__`` (and ``map`` and ``filter``, which
``__all__`` leaves out so that ``import *`` keeps the builtins); every warning
class of the package is a public name.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import io
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pescador
from pescador import __main__ as cli

ROOT = Path(pescador.__file__).resolve().parent.parent
SOURCE_TREE = (ROOT / "pyproject.toml").is_file()
needs_source = pytest.mark.skipif(not SOURCE_TREE, reason="pescador is not imported from a source tree")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in its own session; on timeout kill the whole group and fail."""
    proc = subprocess.Popen([sys.executable, *args], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"python {' '.join(args)} did not finish in {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ----------------------------------------------------------------------------
# The metadata the build backend makes from pyproject.toml
# ----------------------------------------------------------------------------


def _installed_from_here() -> importlib.metadata.Distribution | None:
    """The installed pescador distribution, if it is this source tree (editable) or this copy."""
    try:
        dist = importlib.metadata.distribution("pescador")
    except importlib.metadata.PackageNotFoundError:
        return None
    direct = dist.read_text("direct_url.json")
    if direct:
        url = json.loads(direct).get("url", "")
        if url.startswith("file://") and Path(url[len("file://"):]).resolve() == ROOT:
            return dist
    located = Path(dist.locate_file("pescador/__init__.py")).resolve()
    return dist if located == Path(pescador.__file__).resolve() else None


@pytest.fixture(scope="module")
def metadata(tmp_path_factory) -> dict:
    """Name, Version and Requires-Dist as the build backend writes them for this tree."""
    if not SOURCE_TREE:
        pytest.skip("pescador is not imported from a source tree")
    if importlib.util.find_spec("hatchling") is not None:
        out = tmp_path_factory.mktemp("metadata")
        code = "import sys, hatchling.build as b; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
        done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        message = importlib.metadata.PathDistribution(out / done.stdout.strip()).metadata
        assert message["Name"] == "pescador", done.stdout
    else:
        dist = _installed_from_here()
        if dist is None:
            pytest.skip("neither hatchling (the test extra) nor an install of this tree is there to read the metadata")
        message = dist.metadata
    return {"Version": message["Version"], "Requires-Dist": message.get_all("Requires-Dist") or []}


def _changes_version() -> str:
    text = (ROOT / "docs" / "changes.rst").read_text()
    heading = re.search(r"^(\S+)[^\n]*\n-{3,}\n", text, re.MULTILINE)
    assert heading, "docs/changes.rst has no release heading"
    return heading.group(1)


@needs_source
def test_one_version_everywhere(metadata):
    version = pescador.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert metadata["Version"] == version
    assert _changes_version() == version
    shown = _run(["-m", "pescador", "--version"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"pescador {version}"
    installed = _installed_from_here()
    if installed is not None:  # (an install of another tree, or none, says nothing about this one)
        assert installed.version == version


def test_the_version_replaces_3x():
    major = int(pescador.__version__.split(".")[0])
    assert major >= 4, "this release follows 3.x and differs from it in places: a new major version (docs/changes.rst)"


def _extra_requirements(requires: list[str], extra: str) -> dict:
    from packaging.requirements import Requirement

    found = {}
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            found[req.name] = req.specifier
    return found


@needs_source
@pytest.mark.parametrize("extra, frameworks", [("torch", {"torch"}), ("keras", {"keras", "torch"}), ("ray", {"ray"}),
                                              ("torchdata", {"torchdata", "torch"})])
def test_framework_extras_state_ranges_and_constraints_pin_them(metadata, extra, frameworks):
    pytest.importorskip("packaging")
    from packaging.requirements import Requirement

    requires = _extra_requirements(metadata["Requires-Dist"], extra)
    assert set(requires) == frameworks
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name] = req.specifier
    for name, spec in requires.items():
        operators = {s.operator for s in spec}
        assert "==" not in operators and "===" not in operators, f"{extra}: {name}{spec} pins a release"
        assert any(op in operators for op in (">=", ">")) and any(op in operators for op in ("<", "<=")), (
            f"{extra}: {name}{spec} is not a range with both ends"
        )
        (pin,) = list(pins[name])
        assert pin.operator == "==", f"constraints.txt: {name}{pins[name]}"
        assert spec.contains(pin.version), f"constraints.txt pins {name}=={pin.version}, outside {extra}'s {spec}"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*-c constraints\.txt[^\n]*\[test,torch,torchdata,keras,ray\]", makefile)


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------


def _parsers() -> dict:
    top = cli.parser()
    found = {"": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_cli_has_the_demo_command_only():
    assert set(_parsers()) == {"", "demo"}


@pytest.mark.parametrize("command", ["", "demo"])
def test_every_argument_has_plain_help(command):
    parser = _parsers()[command]
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{command or 'pescador'}: {action.option_strings or action.dest}"
    text = parser.format_help()
    for markup in ("``", ":func:", ":class:", ":mod:", ":doc:", ".. "):
        assert markup not in text, f"reST markup {markup!r} in the help of {command or 'pescador'}:\n{text}"


def test_help_of_the_command_line_is_plain_text():
    shown = _run(["-m", "pescador", "--help"])
    assert shown.returncode == 0, shown.stderr
    assert "``" not in shown.stdout
    for command in ("demo", "--version"):
        assert command in shown.stdout
    for retired in ("keys", "serve", "CURVE"):  # (the ZeroMQ producers were retired: Ray goes beyond one machine)
        assert retired not in shown.stdout


@pytest.mark.timeout(120)
def test_demo_is_a_subcommand():
    shown = _run(["-m", "pescador", "demo", "--batches", "40", "--minibatch", "32", "--workers", "1"], timeout=100)
    assert shown.returncode == 0, shown.stderr
    assert f"pescador {pescador.__version__} demo" in shown.stdout
    assert re.search(r"held-out accuracy: [0-9.]+", shown.stdout), shown.stdout


# ----------------------------------------------------------------------------
# The public names
# ----------------------------------------------------------------------------


def test_dir_lists_the_public_names():
    public = {name for name in dir(pescador) if not name.startswith("_")}
    assert public == set(pescador.__all__) | {"map", "filter"}
    for name in public:
        assert hasattr(pescador, name), name
    assert len(pescador.__all__) == len(set(pescador.__all__))


def test_a_star_import_leaves_the_builtins_map_and_filter_alone():
    """pescador.map and pescador.filter are public, but ``from pescador import *`` must not replace the
    builtins in a user's module (``map(f, xs)`` would then make a recipe, silently)."""
    namespace: dict = {}
    exec("from pescador import *\nresult = list(map(str, filter(None, [0, 1, 2])))", namespace)
    assert namespace["result"] == ["1", "2"]
    assert {"shuffle", "unbatch", "padded_batch", "bucket", "prefetch"} <= namespace.keys()
    assert callable(pescador.map) and callable(pescador.filter)


def _package_modules():
    for info in pkgutil.walk_packages(pescador.__path__, "pescador."):
        if info.name in ("pescador.__main__",):
            continue
        if info.name == "pescador.torch" and importlib.util.find_spec("torch") is None:
            continue
        yield importlib.import_module(info.name)


def test_every_warning_class_is_a_public_name():
    warnings_found = {
        obj
        for module in _package_modules()
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Warning) and obj.__module__.startswith("pescador")
    }
    assert {"FailoverWarning"} <= {cls.__name__ for cls in warnings_found}
    for cls in warnings_found:
        assert cls.__name__ in pescador.__all__, cls
        assert getattr(pescador, cls.__name__) is cls


# ----------------------------------------------------------------------------
# help() and signatures
# ----------------------------------------------------------------------------


def test_every_public_function_shows_its_real_signature():
    import pydoc

    for name in pescador.__all__:
        obj = getattr(pescador, name)
        if inspect.isclass(obj) or not callable(obj):
            continue
        shown = str(inspect.signature(obj))
        assert "object at 0x" not in shown, f"{name}{shown}"
        assert shown.split(" ->")[0] != "(*args, **kwargs)", f"{name}{shown}"
        assert "object at 0x" not in pydoc.render_doc(obj, renderer=pydoc.plaintext), name


def test_the_callable_module_has_the_signature_of_mux():
    from pescador.mux import mux

    assert inspect.signature(pescador.mux) == inspect.signature(mux)
    call = inspect.signature(type(pescador.mux).__call__)
    assert list(call.parameters.values())[1:] == list(inspect.signature(mux).parameters.values())
    assert call.return_annotation == inspect.signature(mux).return_annotation
    given = dict(weights=[1, 2], with_replacement=False, prune_empty=False, revive=True, random_state=3,
                 dist="constant", stats=pescador.MuxStats())
    assert repr(pescador.mux(2, 8, **given)) == repr(mux(2, 8, **given))
    assert repr(pescador.mux(k=2)) == repr(mux(k=2))


def test_help_of_mux_begins_with_its_signature_and_summary():
    import pydoc

    from pescador.mux import mux

    text = pydoc.render_doc(pescador.mux, renderer=pydoc.plaintext)
    lines = text.splitlines()
    name = lines.index("NAME")
    assert lines[name + 1].strip().startswith("pescador.mux - mux(k, lam=256.0, *, weights=None,"), lines[name + 1]
    assert lines[name + 1].strip().endswith(") -> PoolTransform"), lines[name + 1]  # (no markup around it)
    summary = inspect.cleandoc(mux.__doc__).splitlines()[0]
    assert summary in "\n".join(lines[: name + 6])
    head = "\n".join(lines[: lines.index("FUNCTIONS")])  # mux's parameters and examples, then the module's text
    assert head.index("k : int") < head.index(">>> mixed = pipe(streams") < head.index("siblings")


def test_keras_tuples_reads_as_its_two_calls():
    shown = str(inspect.signature(pescador.keras_tuples))
    assert "stream=None" not in shown, shown  # (the data-first call needs its stream)
    s = pescador.stream([{"a": 1, "y": 2}])
    calls = [
        lambda: pescador.keras_tuples(s, "a", "y"),
        lambda: pescador.keras_tuples(s, inputs="a", outputs="y"),
        lambda: pescador.keras_tuples(stream=s, inputs="a", outputs="y"),  # (3.x's keyword)
        lambda: pescador.keras_tuples("a", "y")(s),
        lambda: pescador.keras_tuples("a", outputs="y")(s),
        lambda: pescador.keras_tuples(inputs="a", outputs="y")(s),
    ]
    for call in calls:
        assert list(call()) == [(1, 2)]
    assert list(pescador.keras_tuples(["a", "y"])(s)) == [([1, 2], None)]
    with pytest.raises(pescador.ParameterTypeError, match="inputs twice"):
        pescador.keras_tuples("a", inputs="y")


@pytest.mark.parametrize("name", ["take", "cycle", "buffer"])
def test_a_missing_source_reads_plainly_and_still_makes_a_step(name):
    import pickle

    combinator = getattr(pescador, name)
    default = inspect.signature(combinator).parameters["source"].default
    assert repr(default) == "<no source>"
    assert pickle.loads(pickle.dumps(default)) is default
    step = combinator(2)
    assert isinstance(step, pescador.Transform)
    assert len(list(step(pescador.stream([{"x": [1]}] * 4)))) >= 1
