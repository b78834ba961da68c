"""Collection rules for the whole repository (pytest runs pescador/, tests/, docs/ and README.md)."""

import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # (Keras defaults to TensorFlow, which is not a test extra)

# One thread for PyTorch's (OpenMP's) kernels: the tests train tiny models, and a thread per core spins
# while it waits; beside another busy process (the other xdist worker of make test, a loaded CI machine)
# such threads wait on each other, and the frameworks page's training took over two minutes instead of one
# second.
os.environ.setdefault("OMP_NUM_THREADS", "1")

collect_ignore = ["docs/conf.py", "docs/plots.py", "docs/_build", "docs/conftest.py", "tests/conftest.py",
                  "docs/check_rendering.py",
                  "tests/typed_example.py"]  # (checked by mypy in tests/test_typing.py, not run)
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("pescador/torch.py")  # its doctest needs PyTorch (make test-frameworks)
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
    collect_ignore.append("pescador/keras.py")  # its doctest needs Keras on PyTorch
