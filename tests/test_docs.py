"""Every code block in the docs runs.

The ``>>>`` examples of the pages run as doctests (``make test`` collects
``docs/*.rst``); this module runs the other blocks, the ``.. code-block::
python`` ones, page by page in one namespace, in order, as a reader would
paste them.  Pages that need PyTorch or Keras run only where those are
installed (``make test-frameworks``).  A block whose first line is a file
name comment (``# sources.py``) is also written to that file, so the blocks
after it can import it; a script's ``if __name__ == "__main__":`` part does
not run.
"""

import importlib.util
import os
import pathlib
import re
import textwrap

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
NEEDS = {"frameworks.rst": ["torch", "torchdata", "keras"]}

pytestmark = pytest.mark.timeout(120)


def code_blocks(text):
    """The python code blocks of an rst page, dedented."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if re.match(r"\s*\.\. code-block:: python\s*$", lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip())
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n"))
        else:
            i += 1
    return blocks


PAGES = sorted(p.name for p in DOCS.glob("*.rst") if code_blocks(p.read_text()))


def test_there_are_pages_with_code_blocks():
    assert {"observability.rst", "parallel.rst", "frameworks.rst"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_the_code_blocks_of_a_page_run(page, tmp_path, monkeypatch):
    for module in NEEDS.get(page, []):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{page} needs {module} (make test-frameworks installs it)")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = {"__name__": "__docs__"}
    for number, block in enumerate(code_blocks((DOCS / page).read_text()), 1):
        first = block.splitlines()[0]
        named = re.fullmatch(r"#\s*(\w+\.py)\s*", first)
        if named:
            (tmp_path / named.group(1)).write_text(block + "\n")
        code = compile(block, f"{page}, code block {number}", "exec")
        exec(code, namespace if not named else {"__name__": named.group(1)[:-3]})
