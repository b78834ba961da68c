"""The package's modules import each other in layers: no import circle, not even through an import
inside a function (DESIGN.md: core <- combinators <- offload <- facade)."""

import ast
import pathlib

import pescador

PACKAGE = pathlib.Path(pescador.__file__).parent


def _imports(path: pathlib.Path) -> set:
    """The pescador modules that ``path`` imports anywhere (at the top or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pescador."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("pescador."))
    return out


def graph() -> dict:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    seen, stack, cycles = set(), [], []

    def visit(name):
        if name in stack:
            cycles.append(stack[stack.index(name):] + [name])
            return
        if name in seen:
            return
        seen.add(name)
        stack.append(name)
        for other in sorted(edges[name]):
            visit(other)
        stack.pop()

    for name in sorted(edges):
        visit(name)
    assert cycles == []


def test_the_lower_layers_import_no_higher_one():
    edges = graph()
    assert edges["stage"] <= {"exceptions", "workers"}  # (workers, which imports only exceptions, is as low)
    assert edges["workers"] <= {"exceptions"}
    assert "resume" not in edges["zmq_stream"]
    for low in ("core", "stage", "mux", "buffered", "extras", "zmq_stream", "observe", "_random"):
        assert "streamer" not in edges[low], low
