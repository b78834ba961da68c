"""Collection rules for the whole repository (pytest runs pescador/, tests/, docs/ and README.md)."""

import atexit
import importlib.util
import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")  # (Keras defaults to TensorFlow, which is not a test extra)

if os.environ.get("PYTEST_XDIST_WORKER"):  # (make test: pytest -n 2)
    # Each worker its own temporary directory (the ipc directories of zmq_offload, the kernels' files, what
    # the processes a test starts make): tests that look at what runs left behind see only their own worker's.
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix=f"tests-{os.environ['PYTEST_XDIST_WORKER']}-")
    tempfile.tempdir = None  # (gettempdir() reads TMPDIR again)
    atexit.register(shutil.rmtree, os.environ["TMPDIR"], True)

collect_ignore = ["docs/conf.py", "docs/plots.py", "docs/_build", "docs/conftest.py", "tests/conftest.py",
                  "docs/check_rendering.py",
                  "tests/typed_example.py"]  # (checked by mypy in tests/test_typing.py, not run)
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("pescador/torch.py")  # its doctest needs PyTorch (make test-frameworks)
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
    collect_ignore.append("pescador/keras.py")  # its doctest needs Keras on PyTorch
