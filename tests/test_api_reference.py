"""The API reference (docs/api.rst) lists every public name of every public module.

A public module is every module of the package whose name does not begin
with an underscore (``pescador.demo``, the ``make demo`` script, and
``__main__`` aside); its public names are its ``__all__``.  A name counts as
documented when an autodoc directive of docs/api.rst names it, directly or
as one of the ``:members:`` of a module or class, or names the same object
under another path (``pescador.buffer`` documents
``pescador.buffered.buffer``).  A name added to an ``__all__`` without an
entry in the reference fails here.
"""

import importlib
import pathlib
import pkgutil
import re

import pytest

import pescador

API = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api.rst"
NOT_PUBLIC = {"demo", "__main__"}  # the demo script, and `python -m pescador`

DIRECTIVE = re.compile(r"^\.\. (?:auto|py:)(?:module|function|class|exception|data|attribute)::\s+(\S+)\s*$")
MEMBERS = re.compile(r"^\s+:members:\s*(.*)$")


def public_modules():
    names = ["pescador"]
    for info in pkgutil.iter_modules(pescador.__path__):
        if not info.name.startswith("_") and info.name not in NOT_PUBLIC:
            names.append(f"pescador.{info.name}")
    return sorted(names)


def documented_paths(text):
    """Dotted paths that docs/api.rst documents: each directive's target and its listed members."""
    paths, last = set(), None
    for line in text.splitlines():
        m = DIRECTIVE.match(line)
        if m:
            last = m.group(1)
            paths.add(last)
            continue
        m = MEMBERS.match(line)
        if m and last is not None:
            paths.update(f"{last}.{name.strip()}" for name in m.group(1).split(",") if name.strip())
        elif line and not line.startswith(" "):
            last = None
    return paths


def resolve(path):
    """The object at a dotted path (a module, or an attribute of one)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def test_the_directives_are_read():
    paths = documented_paths(API.read_text())
    assert {"pescador.mux.mux", "pescador.wire.decode", "pescador.Stage.state"} <= paths


def test_the_public_modules_are_found():
    assert {"pescador", "pescador.torch", "pescador.keras", "pescador.stage", "pescador.combinators"} <= set(
        public_modules()
    )


@pytest.mark.parametrize("module", public_modules())
def test_every_public_name_is_in_the_api_reference(module):
    if module in ("pescador.torch", "pescador.keras"):
        pytest.importorskip(module.split(".")[1])
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__"), f"{module} has no __all__: say which of its names are public"
    paths = documented_paths(API.read_text())
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        same_name = [p for p in paths if p.rsplit(".", 1)[-1] == name]  # (resolves only these: no torch import)
        by_identity = not isinstance(obj, (int, str, float)) and any(obj is resolve(p) for p in same_name)
        if f"{module}.{name}" not in paths and not by_identity:
            missing.append(name)
    assert not missing, f"docs/api.rst has no entry for {module}: {', '.join(missing)}"
