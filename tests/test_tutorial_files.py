"""docs/tutorial_files.py (the page docs/tutorial_files.rst) runs: from .npz files on disk to a
PyTorch model and a Keras model that classify held-out rows well.  It runs in this process, as the
docs' code blocks do (tests/test_docs.py): the frameworks are imported once for the whole suite, and
zmq_offload's workers are reaped at the end of each run."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tutorial_files.py"


@pytest.mark.timeout(120)
def test_the_tutorial_trains_both_models_from_files_on_disk(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="the tutorial needs PyTorch (make test-frameworks installs it)")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    pytest.importorskip("keras", reason="the tutorial needs Keras (make test-frameworks installs it)")
    spec = importlib.util.spec_from_file_location("tutorial_files", SCRIPT)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    accuracy = tutorial.main(str(tmp_path))
    assert set(accuracy) == {"PyTorch", "Keras"}
    assert all(a > 0.9 for a in accuracy.values()), accuracy  # chance is about 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"session{i:02d}.npz" for i in range(5)]
