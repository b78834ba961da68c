"""Shared test settings."""

import pathlib
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# CI runs on a shared 2-core machine: no per-example deadline (timings are
# never asserted), and a bounded number of examples to keep the suite fast.
settings.register_profile(
    "pescador",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("pescador")


@pytest.fixture
def short_tmp():
    """A temporary directory of a short path, for a consumer's TMPDIR under forkserver: the forkserver's
    socket, ``<TMPDIR>/pymp-XXXXXXXX/listener-XXXXXXXX``, must fit in 107 bytes, which one under pytest's
    own temporary directory (``.../pytest-N/popen-gwK/test_...``) may not (multiprocessing refuses it)."""
    path = tempfile.mkdtemp(prefix="pt-")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)

