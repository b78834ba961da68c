"""Collection rules for the whole repository (pytest runs pescador/, tests/, docs/ and README.md)."""

import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # (Keras defaults to TensorFlow, which is not a test extra)

if os.environ.get("PYTEST_XDIST_WORKER"):  # (make test: pytest -n 2)
    # One thread per worker for PyTorch's (OpenMP's) kernels: two workers, each with a thread per core,
    # on a 2-core machine would wait on each other's spinning threads (the frameworks page's training).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

collect_ignore = ["docs/conf.py", "docs/plots.py", "docs/_build", "docs/conftest.py", "tests/conftest.py",
                  "docs/check_rendering.py",
                  "tests/typed_example.py"]  # (checked by mypy in tests/test_typing.py, not run)
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("pescador/torch.py")  # its doctest needs PyTorch (make test-frameworks)
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
    collect_ignore.append("pescador/keras.py")  # its doctest needs Keras on PyTorch
