"""pescador ships py.typed and types its public API: mypy infers what a pipeline yields.

tests/typed_example.py states, with ``assert_type``, what mypy must infer at each step of a
pipeline; a second snippet holds wrong uses, each of which mypy must report.  Both are checked in
one mypy run (cold cache: some 20-60 s), against this source tree (MYPYPATH), with errors inside
pescador itself not reported (``--follow-imports=silent``, as for an installed package).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "typed_example.py"

try:
    import mypy  # noqa: F401
except ImportError:  # (the test extra installs it: make test)
    mypy = None

# Each line marked "# wrong" must get a mypy error; no other line may.
WRONG = '''\
from collections.abc import Iterator

import numpy as np

import pescador


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


s = pescador.stream(numbers, 3)
pescador.take(3, 42)  # wrong: an int where a source is expected
pescador.buffer(16)(42)  # wrong: an int where a stream of dicts is expected
pescador.buffer(16)(s)  # wrong: a stream of ints into buffer
pescador.stream(numbers, "3")  # wrong: the arguments do not fit numbers(n: int)
pescador.stream(numbers, 3, m=1)  # wrong: no parameter m
pescador.mux(k=2)(s)  # wrong: mux takes a pool (a list) of streams
pescador.zmq_offload(workers=2)(s).nothing  # wrong: a Stream has no such attribute
n: str = next(iter(s))  # wrong: items of s are ints
pescador.tuples(3)  # wrong: keys are strings
for batch in pescador.buffer(4)(pescador.stream([{"x": np.zeros(3)}])):
    x: int = batch  # wrong: a batch is a dict of arrays
'''


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory):
    if mypy is None:
        pytest.skip("mypy is not installed (it is in the test extra: pip install -e '.[test]', or make test)")
    where = tmp_path_factory.mktemp("typing")
    wrong = where / "wrong_uses.py"
    wrong.write_text(WRONG)
    shutil.copy(EXAMPLE, where / "typed_example.py")
    command = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-error-summary", "--show-error-codes",
               "--python-version", "3.10", "--cache-dir", str(where / "cache"), "typed_example.py", "wrong_uses.py"]
    env = dict(os.environ, MYPYPATH=str(ROOT))
    try:
        done = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mypy still running after {exc.timeout} s")
    assert done.stderr.strip() == "" or "error" not in done.stderr.lower(), done.stderr
    errors: dict[str, dict[int, list[str]]] = {"typed_example.py": {}, "wrong_uses.py": {}}
    for line in done.stdout.splitlines():
        match = re.match(r"(typed_example\.py|wrong_uses\.py):(\d+): (error|note): (.*)", line)
        assert match or not line.strip(), f"unexpected mypy output: {line}\n{done.stdout}"
        if match and match.group(3) == "error":
            errors[match.group(1)].setdefault(int(match.group(2)), []).append(match.group(4))
    return errors, done.stdout


@pytest.mark.timeout(450)
def test_the_typed_example_checks(mypy_output):
    """Every assert_type in the example holds: mypy reports nothing there."""
    errors, stdout = mypy_output
    assert errors["typed_example.py"] == {}, stdout


@pytest.mark.timeout(450)
def test_each_wrong_use_is_an_error(mypy_output):
    errors, stdout = mypy_output
    lines = WRONG.splitlines()
    marked = {number for number, text in enumerate(lines, 1) if "# wrong" in text}
    assert len(marked) == 10
    assert set(errors["wrong_uses.py"]) == marked, stdout


def test_py_typed_ships():
    """The marker is in the package (hatchling's wheel takes every file under pescador/)."""
    assert (ROOT / "pescador" / "py.typed").is_file()
    assert (ROOT / "pescador" / "_typing.pyi").is_file()


def _stub_parameters(function):
    """(name, kind, default source text) of each parameter of a function in the stub, without ``self``."""
    import ast

    args = function.args
    out = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(positional, defaults):
        if arg.arg != "self":
            out.append((arg.arg, "positional", None if default is None else ast.unparse(default)))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        out.append((arg.arg, "keyword", None if default is None else ast.unparse(default)))
    return out


def _runtime_parameters(function):
    import inspect

    out = []
    for p in inspect.signature(function).parameters.values():
        kind = "keyword" if p.kind is p.KEYWORD_ONLY else "positional"
        out.append((p.name, kind, None if p.default is p.empty else repr(p.default)))
    return out


def test_the_stubs_hand_written_signatures_are_the_run_time_ones():
    """_typing.pyi restates two signatures that type checkers cannot see through (the callable module mux, the
    overloaded buffer): each parameter there has the run-time name, kind and default, and the module's
    attributes are its public names."""
    import ast

    import pescador
    from pescador import streamer

    tree = ast.parse((ROOT / "pescador" / "_typing.pyi").read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    methods = {node.name: node for node in classes["MuxModule"].body if isinstance(node, ast.FunctionDef)}
    assert _stub_parameters(methods.pop("__call__")) == _runtime_parameters(pescador.mux.mux)
    facades = {name for name in dir(streamer) if name.endswith("Mux")}
    assert set(methods) == set(pescador.mux.__all__) | facades
    overloads = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "buffer"]
    runtime = _runtime_parameters(pescador.buffer)
    data_last = [p for p in runtime if p[0] != "source"]
    assert [_stub_parameters(node) for node in overloads] == [data_last, [p[:2] + (None,) if p[0] == "source"
                                                                          else p for p in runtime]]
