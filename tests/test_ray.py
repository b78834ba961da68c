"""ray_offload: its options and import cost here; on a real Ray cluster through tests/ray_cases.py."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import pescador
from pescador.exceptions import PescadorError
from pescador.stage import start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env))


def test_import_pescador_does_not_import_ray():
    done = _python(
        "import sys, pescador\n"
        "recipe = pescador.ray_offload(workers=2)(pescador.stream([{'x': 1}]))\n"
        "print(repr(recipe), 'ray' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ray_offload(workers=2)) False"), done.stdout


def test_without_ray_a_run_says_how_to_install_it():
    done = _python(
        "import sys; sys.modules['ray'] = None\n"  # (as if Ray were not installed)
        "import pescador\n"
        "try:\n"
        "    list(pescador.ray_offload()(pescador.stream([{'x': 1}])))\n"
        "except pescador.PescadorError as exc:\n"
        "    print(exc)\n"
    )
    assert "pip install 'pescador[ray]'" in done.stdout, done.stdout + done.stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed: pip install 'pescador[ray]'")
def test_ray_client_is_refused_with_the_way_to_connect():
    done = _python(
        "import sys, pescador\n"
        "import ray.util.client\n"
        "recipe = pescador.ray_offload()(pescador.stream([{'x': 1}]))\n"
        "try:\n"
        "    list(recipe)\n"  # (RAY_ADDRESS is a Ray Client address: refused before connecting)
        "except pescador.PescadorError as exc:\n"
        "    print('A:', exc)\n"
        "ray.util.client.ray.is_connected = lambda: True\n"  # (as after ray.init('ray://...'))
        "try:\n"
        "    list(recipe)\n"
        "except pescador.PescadorError as exc:\n"
        "    print('B:', exc)\n",
        RAY_ADDRESS="ray://127.0.0.1:10001",
    )
    assert "A: ray_offload: RAY_ADDRESS=ray://127.0.0.1:10001 is a Ray Client address" in done.stdout, done.stdout + done.stderr
    assert "B: ray_offload: this process is connected to Ray through Ray Client" in done.stdout, done.stdout
    assert "ray job submit" in done.stdout and "Traceback" not in done.stderr


def test_a_run_in_a_dataloader_worker_is_refused_before_ray_starts():
    torch = pytest.importorskip("torch")
    from pescador.torch import as_dataset

    recipe = pescador.ray_offload()(pescador.stream([{"x": np.zeros(2)}] * 3))
    loader = torch.utils.data.DataLoader(as_dataset(recipe), batch_size=None, num_workers=1)
    with pytest.raises(PescadorError, match="ray_offload: this run is in a PyTorch DataLoader worker process"):
        list(loader)


def test_repr_shows_the_options_chosen():
    assert repr(pescador.ray_offload(workers=3, max_restarts=0)) == "ray_offload(workers=3, max_restarts=0)"
    assert repr(pescador.ray_offload()) == "ray_offload()"


@pytest.mark.parametrize(
    "options, kind, message",
    [
        ({"workers": 0}, ValueError, "workers must be an integer between 1 and 1024; got 0"),
        ({"workers": True}, TypeError, "workers must be an integer"),
        ({"max_restarts": -1}, ValueError, "max_restarts must be an integer >= 0"),
        ({"hwm": 0}, ValueError, "hwm must be an integer >= 1"),
        ({"chunk": 0}, ValueError, "chunk must be an integer >= 1"),
        ({"chunk_bytes": 1.5}, TypeError, "chunk_bytes must be an integer >= 1"),
        ({"linger": -0.1}, ValueError, "linger must be a .*number of seconds >= 0"),
        ({"linger": None}, TypeError, "linger must be a .*number of seconds >= 0"),
        ({"placement_timeout": float("inf")}, ValueError, "placement_timeout must be None or a .*number of seconds"),
        ({"copy": "yes"}, TypeError, "copy must be True or False"),
        ({"random_state": -1}, ValueError, "random_state must be an integer >= 0"),
        ({"resources": ["num_cpus", 1]}, TypeError, "resources must be None or a dict of Ray actor options"),
        ({"resources": {1: 2}}, TypeError, "resources must be None or a dict of Ray actor options"),
        ({"resources": {"num_cpus": 1, "max_restarts": 5}}, ValueError, r"resources may not set \['max_restarts'\]"),
        ({"resources": {"lifetime": "detached"}}, ValueError, r"resources may not set \['lifetime'\]"),
    ],
)
def test_bad_options_are_refused_at_once(options, kind, message):
    with pytest.raises(PescadorError, match=message) as info:
        pescador.ray_offload(**options)
    assert isinstance(info.value, kind)  # (ParameterError is a ValueError, ParameterTypeError a TypeError)


@pytest.mark.parametrize(
    "state, message",
    [
        ({"workers": [None], "skip": [0, 0], "entropy": 1}, "field 'workers' must have 2 entries; got 1"),
        ({"workers": [None, 3], "skip": [0, 0], "entropy": 1}, "entry 1 .* must be null or a dict; got 3"),
        ({"workers": [None, {"pos": 3}], "skip": [0, 0], "entropy": 1},
         "entry 1 .* must have the fields \\['spawned', 'up'\\]"),
        ({"workers": [None, None], "skip": [0, 0], "entropy": 2**128}, "field 'entropy' must be an integer from 0 to"),
        ({"workers": [None, None], "skip": [0, -1], "entropy": 1}, "field 'skip' must be an integer from 0 to"),
        ({"shares": [None, None], "entropy": 1}, "missing \\['workers', 'skip'\\]"),
    ],
)
def test_bad_states_are_refused_before_ray_starts(state, message):
    recipe = pescador.ray_offload(workers=2)(pescador.stream([{"x": 1}]))
    with pytest.raises(PescadorError, match=message):
        start(recipe, state)


def test_one_worker_is_one_to_one():
    assert pescador.epoch_length(pescador.ray_offload()(pescador.stream([1, 2, 3]))) == 3


@pytest.mark.timeout(600)
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed: pip install 'pescador[ray]'")
def test_on_a_local_two_node_ray_cluster():
    """tests/ray_cases.py, in a process of its own session, bounded in time; what Ray leaves is killed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", os.path.join("tests", "ray_cases.py")],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail("tests/ray_cases.py did not finish within 420 s:\n" + output[-20000:])
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # (Ray's agents, if any outlived the cluster)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, output[-20000:]
