"""The docs' examples run as doctests, each in a fresh temporary directory (some write files)."""

import pytest


@pytest.fixture(autouse=True)
def _in_a_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
