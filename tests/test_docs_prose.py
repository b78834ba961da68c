"""The user's prose names no tests: test names belong on docs/guarantees.rst (each promise names its
test) and in the README's Guarantees section, which mirrors it; elsewhere they are noise to a reader."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEST_NAME = re.compile(r"\btest_\w+")


def prose():
    """(name, text) of every docs page but the guarantees, and of the README outside its Guarantees section."""
    pages = [(p.name, p.read_text()) for p in sorted((ROOT / "docs").glob("*.rst")) if p.name != "guarantees.rst"]
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Guarantees")
    end = readme.index("\n## ", start + 1)
    return pages + [("README.md", readme[:start] + readme[end:])]


def test_the_prose_is_read():
    names = [name for name, _ in prose()]
    assert "usage.rst" in names and "README.md" in names and "guarantees.rst" not in names


def test_no_test_names_outside_the_guarantees():
    found = [f"{name}: {m.group()}" for name, text in prose() for m in TEST_NAME.finditer(text)]
    assert not found, "test names in the user's prose (move them to docs/guarantees.rst):\n" + "\n".join(found)
