"""A worker's exception is raised in the consumer as its own type where it can be rebuilt.

zmq_offload's workers send their exception pickled (they are the consumer's
own processes); remote producers never have anything unpickled: only
built-in exception types are rebuilt, from their plain arguments.  Either
way the worker's traceback is the ``__cause__`` (a pescador.WorkerError),
and what cannot be rebuilt arrives as that WorkerError.
"""

import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings

import msgpack
import numpy as np
import pytest
import zmq

import pescador
from pescador import PescadorError, WorkerError, stream, zmq_offload
from pescador.wire import ERROR, decode, error_from

pytestmark = pytest.mark.timeout(60)


# -- exceptions and sources (module level: spawn pickles them, the consumer imports them) ------------


class Custom(Exception):
    """A user's exception with an attribute of its own."""

    def __init__(self, message, code=0):
        super().__init__(message, code)
        self.code = code
        self.seen_by = "worker"


class TwoArguments(Exception):
    """An __init__ whose arguments are not ``self.args``: it cannot be rebuilt from them."""

    def __init__(self, path, line):
        super().__init__(f"{path}:{line}")


class Unpicklable(Exception):
    """Pickles in the worker, cannot be unpickled anywhere (its reduce names a missing function)."""

    def __reduce__(self):
        return (_vanished, (1,))


def _vanished(x):
    return Custom("never")


def raising(n, error):
    for i in range(n):
        yield {"i": np.array([i])}
    raise error


def raising_os_error(n):
    for i in range(n):
        yield {"i": np.array([i])}
    open(os.path.join(tempfile.gettempdir(), "pescador-no-such-dir", "file"))


def raising_with_a_lock(n):
    for i in range(n):
        yield {"i": np.array([i])}
    raise ValueError("holds a lock", threading.Lock())


def exiting():
    yield {"i": np.array([0])}
    sys.exit(3)


def received_before(recipe, expected):
    """Run ``recipe``, check the items before the error, and return the error."""
    got = []
    try:
        for item in recipe:
            got.append(int(item["i"][0]))
    except Exception as exc:
        assert got == list(range(expected))  # every item the worker yielded before its error
        return exc
    raise AssertionError("no error")


def no_workers_left():
    return not [p for p in multiprocessing.active_children() if p.name.startswith("pescador-worker")]


# -- zmq_offload: rebuilt as its own type ---------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_workers_value_error_is_caught_as_value_error_with_its_traceback(method):
    recipe = zmq_offload(start_method=method)(stream(raising, 5, ValueError("disk on fire")))
    got = []
    try:
        for item in recipe:
            got.append(int(item["i"][0]))
    except ValueError as exc:  # a plain ``except ValueError`` catches the worker's ValueError
        error = exc
    assert got == list(range(5))
    assert type(error) is ValueError and error.args == ("disk on fire",)
    cause = error.__cause__
    assert isinstance(cause, WorkerError) and isinstance(cause, PescadorError)
    assert cause.type_name == "builtins.ValueError"
    assert "in raising" in cause.traceback_text and cause.traceback_text.rstrip().endswith("ValueError: disk on fire")
    printed = "".join(traceback.format_exception(error))
    assert printed.index("in raising") < printed.index("direct cause") < printed.index("ValueError: disk on fire\n(")
    assert "zmq_offload: worker 0 raised this after sending 5 items" in printed  # the note
    assert "zmq_offload: worker 0 raised ValueError after sending 5 items; its traceback:" in str(cause)
    assert no_workers_left()


def test_a_key_error_keeps_its_arguments_and_its_repr():
    error = received_before(zmq_offload()(stream(raising, 2, KeyError("missing"))), 2)
    assert type(error) is KeyError and error.args == ("missing",) and str(error) == "'missing'"
    assert "KeyError: 'missing'" in error.__cause__.traceback_text


def test_an_os_error_keeps_its_errno_and_file_name():
    error = received_before(zmq_offload()(stream(raising_os_error, 3)), 3)
    assert type(error) is FileNotFoundError
    assert error.errno == 2 and error.filename.endswith(os.path.join("pescador-no-such-dir", "file"))


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_users_exception_from_a_module_arrives_with_its_attributes(method):
    recipe = zmq_offload(start_method=method)(stream(raising, 1, Custom("bad row", code=7)))
    error = received_before(recipe, 1)
    assert type(error) is Custom and error.args == ("bad row", 7)
    assert error.code == 7 and error.seen_by == "worker"
    assert isinstance(error.__cause__, WorkerError)
    assert error.__cause__.type_name == f"{__name__}.Custom"


def test_pescador_errors_raised_in_a_worker_stay_pescador_errors():
    error = received_before(zmq_offload()(stream([{"i": np.array([0])}, [1, 2]])), 1)
    assert type(error) is PescadorError and "item 1 is a list; expected a dict" in str(error)


@pytest.mark.parametrize(
    "source, args, type_name",
    [
        ((raising, 4, TwoArguments("data.csv", 12)), None, "TwoArguments"),  # its constructor refuses its args
        ((raising_with_a_lock, 4), None, "ValueError"),  # an argument that does not pickle
        ((raising, 4, Unpicklable("x")), None, "Unpicklable"),  # pickles, but does not unpickle
    ],
    ids=["non-standard __init__", "unpicklable argument", "does not unpickle"],
)
def test_what_cannot_be_rebuilt_arrives_as_a_worker_error_with_its_traceback(source, args, type_name):
    error = received_before(zmq_offload()(stream(*source)), 4)
    assert type(error) is WorkerError and isinstance(error, PescadorError)
    assert error.type_name.endswith(type_name)
    message = str(error)
    assert message.startswith("zmq_offload: worker 0 raised ") and "after sending 4 items; its traceback:" in message
    assert type_name in message and "Traceback (most recent call last)" in message
    assert error.__cause__ is None


def test_a_worker_that_calls_sys_exit_does_not_end_the_consumer():
    error = received_before(zmq_offload()(stream(exiting)), 1)  # (a SystemExit here would end the test run)
    assert type(error) is WorkerError and error.type_name == "builtins.SystemExit"
    assert "SystemExit: 3" in error.traceback_text


def test_the_worker_error_pickles():
    error = received_before(zmq_offload()(stream(raising, 1, Custom("x"))), 1)
    again = pickle.loads(pickle.dumps(error.__cause__))
    assert type(again) is WorkerError and again.args == error.__cause__.args
    assert again.traceback_text == error.__cause__.traceback_text and again.type_name == error.__cause__.type_name


MAIN_SCRIPT = """
import sys
import numpy as np
import pescador


class Boom(Exception):
    pass


def source():
    yield {"i": np.array([0])}
    raise Boom("from __main__")


if __name__ == "__main__":
    try:
        list(pescador.zmq_offload(start_method=sys.argv[1])(pescador.stream(source)))
    except Boom as exc:
        print("Boom", exc.args, type(exc.__cause__).__name__)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_an_exception_class_of_the_main_script_is_rebuilt(tmp_path, method):
    script = tmp_path / "main_script.py"
    script.write_text(MAIN_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=50)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert out.strip() == "Boom ('from __main__',) WorkerError", err


# -- decoding unpickles nothing ---------------------------------------------------------------------


class Creates:
    """Unpickling this makes a directory (a stand-in for any code a crafted pickle could run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def crafted_error(path, module="builtins", qualname="ValueError", args=("crafted",)):
    payload = pickle.dumps(Creates(path))
    info = [module, qualname, None if args is None else list(args), payload]
    return [msgpack.packb([ERROR, "Traceback (crafted)", info], use_bin_type=True)]


def test_the_crafted_payload_does_run_code_when_unpickled(tmp_path):
    """Decoding this payload unpickles nothing; error_from, which unpickles, makes its directory."""
    target = str(tmp_path / "made")
    kind, report = decode(crafted_error(target, qualname="NoSuchError"))
    assert not os.path.exists(target)  # decoding alone unpickles nothing
    error_from(report, "worker 0")  # (only the run's own workers get a message to the consumer)
    assert os.path.isdir(target)

