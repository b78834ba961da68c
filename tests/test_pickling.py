"""Recipes travel to workers under every start method (pescador._pickling).

Functions, closures, lambdas and classes defined in ``__main__`` (``python -c``,
a script, a Jupyter notebook) or inside other functions run in workers
started by ``spawn`` and ``forkserver``, through ``zmq_offload`` and PyTorch
``DataLoader`` workers; what truly cannot travel (a live generator, an open
file, a socket, a lock, anything that does not pickle) is refused before any
worker starts, naming the object, where it sits in the recipe and the fix.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import multiprocessing.process
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
import zmq
from toolz import pipe

import pescador
from pescador import PescadorError, buffer, stream, take, zmq_offload

pytestmark = pytest.mark.timeout(60)

HAS_TORCH = importlib.util.find_spec("torch") is not None
METHODS = ["spawn", "forkserver"]


# -- module-level sources (they travel by reference) ------------------------------------------------


def counting(n):
    for i in range(n):
        yield {"x": np.array([i])}


def first(items):
    for item in items:
        yield {"x": np.array([item])}


def read(path=None, *rest):
    yield {"x": np.array([0])}


def call(obj):
    yield {"x": np.array([obj is not None])}


class Holder:
    def __init__(self, guard):
        self.guard = guard


class Reader:
    def __init__(self, connection):
        self.connection = connection

    def rows(self):
        yield {"x": np.array([1])}


def _main_functions(code: str) -> dict:
    """Run ``code`` as if it were ``__main__`` (a notebook's cell, ``python -c``): what it defines is not
    importable by name, as a notebook's functions are not."""
    namespace = {"__name__": "__main__", "np": np}
    exec(code, namespace)
    return namespace


# -- the bytes: by value where they must be, by reference otherwise --------------------------------


def test_main_functions_lambdas_and_closures_travel_by_value_module_functions_by_reference():
    from pescador._pickling import dumps, loads

    main = _main_functions(
        "k = 10\n"
        "def src(n):\n"
        "    for i in range(n):\n"
        "        yield {'x': np.array([i * k])}\n"
        "def scaled(factor):\n"
        "    return lambda n: ({'x': np.array([i * factor])} for i in range(n))\n"
    )
    recipe = pescador.mux(k=3, lam=None, with_replacement=False, random_state=0)(
        [stream(main["src"], 3), stream(main["scaled"](7), 3), stream(counting, 3)]
    )
    travelled = loads(dumps(recipe, "test"))
    assert [int(x["x"][0]) for x in travelled] == [int(x["x"][0]) for x in recipe]
    pool = travelled.args[0]
    assert pool[2].fn is counting  # (by reference: the very function, imported by name)
    assert pool[0].fn is not main["src"]  # (by value: a copy, with the global it reads)
    assert list(loads(dumps(stream(read, io.StringIO("in memory")), "test")))  # (a buffer of data travels)
    assert loads(dumps(stream(read, sys.stderr), "test")).args == (sys.stderr,)  # (as the worker's own)


# -- what cannot travel: refused by name, where it sits, with the fix, before any worker starts ----


@pytest.fixture
def no_process_starts(monkeypatch):
    """Fail the test if a worker process starts (a refusal must come first)."""
    started = []
    original = multiprocessing.process.BaseProcess.start

    def start(process):
        original(process)  # (a DataLoader's dataset is pickled in there, before the process exists)
        started.append(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    yield
    assert not started, f"processes were started: {started}"


@pytest.fixture
def closing():
    """Closes what a test opened, at its end."""
    with contextlib.ExitStack() as stack:
        yield stack


def _untravellable(kind, tmp_path, closing):
    """A recipe holding something of ``kind`` that cannot travel: (recipe, where it sits, what it is, the fix)."""
    if kind == "generator":
        return (pipe(stream(first, counting(3)), buffer(2), take(3)),
                "take -> buffer -> stream(first) argument 1", "a live generator", "pass the generator function")
    if kind == "text file":
        path = tmp_path / "data.txt"
        path.write_text("some text")
        handle = closing.enter_context(open(path))
        return stream(read, path=handle), "stream(read) keyword argument path", "an open file", "pass its path"
    if kind == "binary file":
        handle = closing.enter_context(open(__file__, "rb"))
        return (pescador.mux(k=1)([stream(counting, 2), stream(read, handle)]),
                "mux -> item [1] -> stream(read) argument 1", "an open file", "pass its path")
    if kind == "socket":
        connection = closing.enter_context(socket.socket())

        def client(n):
            yield {"x": np.array([connection.fileno()])}

        return (stream(client, 1), "function -> closure of _untravellable.<locals>.client (variable 'connection')",
                "a socket", "pass its address")
    if kind == "lock":
        main = _main_functions("def src(n):\n    with lock:\n        yield {'x': np.array([n])}\n")
        main["lock"] = threading.Lock()
        return stream(main["src"], 1), "stream(src) function -> global 'lock' of src", "a lock", "create it inside"
    if kind == "rlock":
        return (stream(call, Holder(threading.RLock())), "stream(call) argument 1 -> attribute 'guard' of",
                "a lock", "create it inside")
    if kind == "zmq context":
        context = closing.enter_context(zmq.Context())
        return stream(functools.partial(call, context)), "function -> partial argument 1", "a socket", "pass its address"
    if kind == "anything that does not pickle":
        connection = sqlite3.connect(":memory:")
        closing.callback(connection.close)
        return (stream(Reader(connection).rows),
                "function -> the instance of bound method Reader.rows -> attribute 'connection' of",
                "sqlite3.Connection", "create this object inside the generator function")
    raise AssertionError(kind)


KINDS = ["generator", "text file", "binary file", "socket", "lock", "rlock", "zmq context",
         "anything that does not pickle"]


@pytest.mark.parametrize("kind", KINDS)
def test_what_cannot_travel_to_spawned_workers_is_refused_by_name(kind, tmp_path, closing, no_process_starts):
    recipe, where, what, fix = _untravellable(kind, tmp_path, closing)
    with pytest.raises(PescadorError) as info:
        list(zmq_offload(start_method="spawn")(recipe))
    message = str(info.value)
    assert message.startswith("zmq_offload: the recipe cannot be sent to workers started with 'spawn': ")
    for part in (where, what, fix, "start_method='fork'"):
        assert part in message, (part, message)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (make test-frameworks installs it)")
@pytest.mark.parametrize("kind", ["generator", "text file", "lock"])
def test_what_cannot_travel_to_dataloader_workers_is_refused_by_name(kind, tmp_path, closing, no_process_starts):
    import pescador.torch

    recipe, where, what, fix = _untravellable(kind, tmp_path, closing)
    loader = pescador.torch.loader(recipe, num_workers=2, multiprocessing_context="forkserver")
    with pytest.raises(PescadorError) as info:
        list(loader)
    message = str(info.value)
    assert message.startswith("pescador.torch: the dataset's recipe cannot be sent to DataLoader workers")
    for part in (where, what, fix, "multiprocessing_context='fork'"):
        assert part in message, (part, message)


@pytest.mark.parametrize("kind", ["text file", "lock"])
def test_what_cannot_travel_to_ray_actors_is_refused_by_name_before_ray_starts(kind, tmp_path, closing, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # (Ray cannot be imported: a refusal must come first)
    recipe, where, what, fix = _untravellable(kind, tmp_path, closing)
    with pytest.raises(PescadorError) as info:
        list(pescador.ray_offload()(recipe))
    message = str(info.value)
    assert message.startswith("ray_offload: the recipe cannot be sent to Ray actors: ")
    for part in (where, what, fix):
        assert part in message, (part, message)


# -- recipes of __main__ in real worker processes ---------------------------------------------------

# What a user's __main__ holds: a function reading a global, a closure, a lambda, a class and an
# @streamable function, all defined there, under a mux (pescador's own stages travel by reference
# beside them), and an exception class of its own.  It prints, for each start method named on its
# command line, what each path delivered.
MAIN = """
import json, sys
import numpy as np, pescador

k = 10

def src(n):
    for i in range(n):
        yield {"x": np.array([i * k])}

def scaled(factor):
    def gen(n):
        for i in range(n):
            yield {"x": np.array([i * factor])}
    return gen

@pescador.streamable
def counted(n):
    for i in range(n):
        yield {"x": np.array([i + 1000])}

class Offset:
    def __init__(self, by):
        self.by = by
    def __call__(self, n):
        for i in range(n):
            yield {"x": np.array([i + self.by])}

def recipe():
    pool = [pescador.stream(src, 3), pescador.stream(scaled(7), 3),
            pescador.stream(lambda n: ({"x": np.array([-i])} for i in range(n)), 3),
            pescador.stream(Offset(100), 3), counted(3)]
    return pescador.mux(k=5, lam=None, with_replacement=False, random_state=0)(pool)

class BadRecord(ValueError):
    pass

def then_raise(upstream):  # (a source of __main__ over a recipe, raising a class of __main__ at its end)
    yield from upstream
    raise BadRecord("after the last item")

def run(methods, paths):
    out = {"plain": [int(x["x"][0]) for x in recipe()]}
    for method in methods:
        out[method] = {}
        if "zmq" in paths:
            items = out[method]["zmq"] = []
            try:
                for x in pescador.zmq_offload(start_method=method)(pescador.stream(then_raise, recipe())):
                    items.append(int(x["x"][0]))
            except BadRecord as exc:  # (the consumer's own class: the worker's copy went back by value)
                items.append(str(exc))
        if "torch" in paths:
            from pescador.torch import loader
            batches = loader(recipe(), num_workers=1, multiprocessing_context=method)
            out[method]["torch"] = [int(x["x"][0]) for x in batches]
    return out

if __name__ == "__main__":  # python ... spawn,forkserver zmq torch
    print(json.dumps(run(sys.argv[1].split(","), sys.argv[2:])))
"""
# The items that recipe gives (one worker, one run of each source): i*10, i*7, -i, i+100, i+1000 for i < 3.
EXPECTED = sorted([i * 10 for i in range(3)] + [i * 7 for i in range(3)] + [-i for i in range(3)]
                  + [i + 100 for i in range(3)] + [i + 1000 for i in range(3)])


def _python(args: list, timeout: float, cwd: str) -> str:
    """Run Python with ``args`` in a session of its own; kill the whole session on timeout.  Its stdout."""
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=cwd, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"python {args[0]} ... did not end within {timeout} s:\n{err}") from None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # (anything of its session left)
        except (ProcessLookupError, PermissionError):
            pass
    assert process.returncode == 0, err
    return out


def _check(out: dict, paths: list) -> None:
    """Each start method and path delivered the plain run's items, in its order (one worker); zmq_offload's
    run then raised the exception of a class of ``__main__``, caught as that class."""
    plain = out.pop("plain")
    assert sorted(plain) == EXPECTED
    assert sorted(out) == sorted(METHODS)
    for method, delivered in out.items():
        assert sorted(delivered) == sorted(paths)
        for path, items in delivered.items():
            assert items == (plain + ["after the last item"] if path == "zmq" else plain), (method, path)


# A DataLoader worker imports torch (seconds): the DataLoader runs under both start methods for
# ``python -c``; the script and the notebook run zmq_offload's workers only.


@pytest.mark.timeout(240)
def test_a_recipe_of_python_c_runs_under_spawn_and_forkserver(tmp_path):
    paths = ["zmq", "torch"] if HAS_TORCH else ["zmq"]
    _check(json.loads(_python(["-c", MAIN, ",".join(METHODS), *paths], 200, str(tmp_path))), paths)


@pytest.mark.timeout(120)
def test_a_recipe_of_a_script_runs_under_spawn_and_forkserver(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(MAIN)
    _check(json.loads(_python([str(script), ",".join(METHODS), "zmq"], 100, str(tmp_path))), ["zmq"])


@pytest.mark.timeout(180)
def test_a_recipe_of_a_jupyter_notebook_runs_under_spawn_and_forkserver(tmp_path):
    from notebook_cells import printed, run_cells

    define, _ = MAIN.split('if __name__ == "__main__":')
    outputs = run_cells([define, f"print(json.dumps(run({METHODS!r}, ['zmq'])))"], timeout=60, cwd=str(tmp_path))
    _check(json.loads(printed(outputs[1])), ["zmq"])
