"""Collection rules for the whole repository (pytest runs pescador/, tests/, docs/ and README.md)."""

import importlib.util

collect_ignore = ["docs/conf.py", "docs/plots.py", "docs/_build", "docs/conftest.py", "tests/conftest.py"]
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("pescador/torch.py")  # its doctest needs PyTorch (make test-frameworks)
