"""Failing cases found by a fresh-eyes review of the latest changes (one test per finding).

Every case that starts processes runs its consumer as a script in a new
session, killed (with everything in the session) when its time is up.
"""

import os
import time

import pytest

import pescador
from pescador import PescadorError
from test_faults import run_consumer  # (a consumer script in its own session, killed whole on timeout)

pytestmark = pytest.mark.timeout(90)


# A consumer that is a child subreaper inherits the orphans of its workers, as a consumer that is
# the first process of a container (docker run without --init) does.
ZOMBIES = """
import ctypes, os, time
import numpy as np, pescador

def stubborn():
    i = 0
    while True:
        yield {"x": np.array([i])}
        i += 1
        if i > 5:  # ignores the stop: killed after timeout
            while True:
                try:
                    time.sleep(100)
                except BaseException:
                    pass

def zombie_children():
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                out.append(int(entry))
    return out

if __name__ == "__main__":
    assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    recipe = pescador.zmq_offload(workers=1, timeout=0.2, start_method="fork")(pescador.stream(stubborn))
    for run in range(5):
        for i, _ in enumerate(recipe):
            if i == 3:
                break
    time.sleep(1)
    print("ZOMBIES", len(zombie_children()))
"""


def test_a_worker_killed_after_timeout_leaves_no_zombie_reaper():
    """A worker killed after ``timeout`` leaves its reaper orphaned; where nothing reaps orphans
    (the consumer is PID 1 of a container, or a subreaper) each such run leaves a zombie."""
    finished, out = run_consumer(ZOMBIES, 60)
    assert finished, out
    assert "ZOMBIES 0" in out, out


SECOND_CTRL_C = """
import multiprocessing, os, signal, threading, time
import numpy as np, pescador

def slow_finally():
    try:
        i = 0
        while True:
            yield {"x": np.array([i])}
            i += 1
    finally:  # a cleanup that takes far longer than the run's timeout
        end = time.monotonic() + 40
        while time.monotonic() < end:
            try:
                time.sleep(0.5)
            except BaseException:
                pass

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job inherits SIGINT ignored)
    recipe = pescador.zmq_offload(workers=1, timeout=3, start_method="fork")(pescador.stream(slow_finally))
    try:
        for i, _ in enumerate(recipe):
            if i == 2:
                # the first Ctrl-C; a second one comes while the run is stopping its worker
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    print("ALIVE", len(multiprocessing.active_children()))
    print("DIRS", len([d for d in os.listdir(os.environ["TMPDIR"]) if d.startswith("pescador-")]), flush=True)
    os._exit(0)  # (not waiting at exit for a worker that may still run its cleanup)
"""


def test_a_second_ctrl_c_while_stopping_still_ends_the_workers_and_removes_the_directory(tmp_path):
    """A KeyboardInterrupt inside the run's cleanup (while it waits up to ``timeout`` for a worker to
    stop) cuts the cleanup short: the worker is never killed and the ipc directory stays."""
    finished, out = run_consumer(SECOND_CTRL_C, 60, env={"TMPDIR": str(tmp_path)})
    assert finished, out
    assert "ALIVE 0" in out, out
    assert "DIRS 0" in out, out


KILLED_AT_THE_END = """
import os, signal
import numpy as np, pescador
from pescador import zmq_stream

def numbered(n):
    for i in range(n):
        yield {"x": np.array([i])}

original = zmq_stream._shutdown

def shutdown_then_die(*args):
    original(*args)  # the workers have ended
    os.kill(os.getpid(), signal.SIGKILL)  # the consumer dies before it removes its directory

zmq_stream._shutdown = shutdown_then_die
if __name__ == "__main__":
    list(pescador.zmq_offload(workers=2, start_method="fork")(pescador.stream(numbered, 10)))
"""


def test_a_consumer_killed_as_its_run_ends_leaves_no_directory(tmp_path):
    """The consumer's ipc directory is removed by the workers' watchers when the consumer dies, but
    only while a worker lives: a consumer killed between its workers' end and its own cleanup (or
    before its workers start) leaves the directory and its socket file in TMPDIR.  Killing a
    consumer that loops over short runs at a random moment leaves one about a third of the time."""
    run_consumer(KILLED_AT_THE_END, 60, env={"TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 5  # (the workers have ended: nothing will remove it)
    while [d for d in os.listdir(tmp_path) if d.startswith("pescador-")] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [d for d in os.listdir(tmp_path) if d.startswith("pescador-")]


def gen():
    yield {"x": 1}


def test_tuples_refuses_a_key_that_no_item_can_have():
    """``tuples(gen, 'x')`` (a generator function first, not a stream) is taken for a pipe stage with
    the function as a key; items only have string keys, so it could never match: refuse it now."""
    with pytest.raises(PescadorError):
        pescador.tuples(gen, "x")
