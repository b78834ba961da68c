"""zmq_offload: items cross processes intact; faults surface; nothing hangs or leaks."""

import collections
import itertools
import json
import ctypes
import faulthandler
import gc
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest
import zmq

import pescador
from pescador import PescadorError, stream, take, zmq_offload
from pescador.mux import chain_mux

pytestmark = pytest.mark.timeout(60)


# -- sources (module level, so that spawn and forkserver can pickle them) ----------


def counting(n, size=4):
    for i in range(n):
        yield {"X": np.full((1, size), i, dtype=np.float32), "i": i}


def assorted():
    yield {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "big": np.arange(100_000, dtype=np.float64).reshape(100, 1000),
        "i8": np.array([-1, 0, 1], dtype=np.int8),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "bool": np.array([[True, False]]),
        "c128": np.array([1 + 2j], dtype=np.complex128),
        "be": np.arange(5, dtype=">i4"),
        "strings": np.array(["a", "bcd"]),
        "bytes": np.array([b"xy", b"z"]),
        "when": np.array(["2020-01-01"], dtype="datetime64[D]"),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 7), dtype=np.float32),
        "strided": np.arange(2000.0).reshape(40, 50)[::2, ::3],
        "fortran": np.asfortranarray(np.arange(600.0).reshape(20, 30)),
        "npint": np.int32(7),
        "text": "hello",
        "number": 3,
        "none": None,
        "nested": {"a": [1, 2.5, "x"], "b": np.float32(1.5)},
    }


def raising_after(n):
    for i in range(n):
        yield {"i": np.array([i])}
    raise ValueError(f"broken after {n} items")


def dying_after(n, how):
    for i in range(n):
        yield {"i": np.array([i])}
    time.sleep(0.2)  # let the items leave before the process dies
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    else:
        faulthandler.disable()  # (pytest's fault handler would print a dump)
        ctypes.string_at(0)  # segmentation fault


def unsendable(n):
    for i in range(n):
        yield {"i": np.array([i])}
    yield {"i": np.array([n]), "handle": object()}


def endless(size=4):
    x = np.zeros((1, size), dtype=np.float32)
    i = 0
    while True:
        yield {"X": x, "i": i}
        i += 1


def slow_endless():
    while True:
        time.sleep(0.01)
        yield {"x": np.zeros(3)}


def with_worker_info():
    info = pescador.worker_info()
    yield {
        "id": info.id,
        "count": info.count,
        "legacy": np.random.random(4),
        "own": np.random.default_rng(info.seed).random(4),
    }


def big_items(counter):
    while True:
        with counter.get_lock():
            counter.value += 1
        yield {"X": np.ones(1 << 18, dtype=np.float32)}  # 1 MiB


def tagged(tag, n):
    for i in range(n):
        yield {"tag": np.array([tag]), "i": np.array([i])}


# -- helpers ----------------------------------------------------------------------


def children():
    """Live (not zombie) child processes of this process."""
    pids = []
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def workers_of_this_process():
    """Children that are pescador workers (not the forkserver or resource tracker)."""
    return [p for p in multiprocessing.active_children() if p.name.startswith("pescador-worker")] or [
        pid for pid in children() if "forkserver" not in _cmdline(pid) and "resource_tracker" not in _cmdline(pid)
    ]


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def pescador_dirs():
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("pescador-")}


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temporary directory of this test's own, so other runs' ipc directories do not count."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


# -- the wire: items arrive as they left --------------------------------------------


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_one_worker_delivers_every_item_in_order(transport):
    out = list(zmq_offload(transport=transport)(stream(counting, 2000)))
    assert [x["i"] for x in out] == list(range(2000))
    assert all(np.array_equal(x["X"], np.full((1, 4), x["i"], np.float32)) for x in out)


@pytest.mark.parametrize("copy", [False, True])
def test_values_arrive_with_dtype_shape_and_contents(copy):
    (got,) = list(zmq_offload(copy=copy)(stream(assorted)))
    (want,) = list(assorted())
    assert list(got) == list(want)  # same keys, same order
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype, key
            assert got[key].shape == value.shape, key
            np.testing.assert_array_equal(got[key], value)
            assert got[key].flags.aligned, key
        else:
            assert got[key] == value, key
    assert isinstance(got["npint"], np.int32)
    # large arrays are views of the frames unless copy=True; small ones are copies; all writeable
    assert got["big"].flags.owndata == copy
    assert all(got[key].flags.writeable for key in got if isinstance(got[key], np.ndarray))
    got["big"][0, 0] = -1.0


def test_a_value_that_cannot_travel_is_named_after_the_items_before_it():
    out = []
    with pytest.raises(PescadorError, match=r"(?s)key 'handle' is a object.*cannot be sent"):
        for item in zmq_offload()(stream(unsendable, 5)):
            out.append(int(item["i"][0]))
    assert out == list(range(5))


def test_object_arrays_never_travel():
    with pytest.raises(PescadorError, match="key 'o' is a numpy array of dtype object"):
        list(zmq_offload()(stream([{"o": np.array([1, "a"], dtype=object)}])))


def test_an_item_that_is_not_a_dict_is_named():
    with pytest.raises(PescadorError, match="item 1 is a list; expected a dict"):
        list(zmq_offload()(stream([{"a": 1}, [1, 2]])))


# -- faults -------------------------------------------------------------------------


def test_a_worker_exception_arrives_after_its_items_with_its_traceback():
    out = []
    with pytest.raises(ValueError) as info:  # its own type: ``except ValueError`` catches a worker's ValueError
        for item in zmq_offload()(stream(raising_after, 7)):
            out.append(int(item["i"][0]))
    assert out == list(range(7))
    assert info.value.args == ("broken after 7 items",)
    assert isinstance(info.value.__cause__, pescador.WorkerError)
    message = str(info.value.__cause__)
    assert "worker 0 raised ValueError" in message and "after sending 7 items" in message
    assert "ValueError: broken after 7 items" in message and "raising_after" in message


@pytest.mark.parametrize("how", ["kill", "exit", "segfault"])
def test_a_dead_worker_is_noticed_quickly(how):
    out = []
    start = time.monotonic()
    with pytest.raises(PescadorError, match="worker 0 .*(killed by signal|exited with code 3)"):
        for item in zmq_offload()(stream(dying_after, 50, how)):
            out.append(int(item["i"][0]))
    assert time.monotonic() - start < 3.0
    assert out == list(range(50))
    assert not workers_of_this_process()


def test_a_dead_worker_is_noticed_while_another_keeps_sending():
    pool = [stream(dying_after, 10, "kill"), stream(endless)]
    start = time.monotonic()
    with pytest.raises(PescadorError, match="killed by signal SIGKILL"):
        for _ in zmq_offload(workers=2)(stream(_by_worker, pool)):
            pass
    assert time.monotonic() - start < 3.0


def _by_worker(pool):
    """Worker i runs pool[i]."""
    yield from pool[pescador.worker_info().id]


# -- early stops and cleanup -------------------------------------------------------


def test_break_reaps_the_workers():
    for _ in zip(range(10), zmq_offload(workers=2)(stream(endless))):
        pass
    assert not workers_of_this_process()


def test_garbage_collection_reaps_the_workers():
    it = iter(zmq_offload(workers=2)(stream(endless)))
    next(it)
    assert len(workers_of_this_process()) == 2
    del it
    gc.collect()
    assert not workers_of_this_process()


def test_keyboard_interrupt_reaps_the_workers_and_the_next_run_works():
    recipe = zmq_offload()(stream(counting, 100_000))
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(recipe):
            if i == 100:
                raise KeyboardInterrupt
    assert not workers_of_this_process()
    assert len(list(take(500, recipe))) == 500


def test_a_busy_worker_is_terminated_after_timeout():
    start = time.monotonic()
    for _ in zip(range(2), zmq_offload(timeout=0.2)(stream(slow_endless))):
        pass
    assert time.monotonic() - start < 2.0
    assert not workers_of_this_process()


def _run_in_a_daemon(recipe, pipe):
    try:
        pipe.send(("ran", len(list(recipe))))
    except BaseException as exc:
        pipe.send((type(exc).__name__, str(exc)))


@pytest.mark.timeout(60)
def test_a_run_started_in_a_daemonic_process_is_refused_by_name():
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    daemon = context.Process(target=_run_in_a_daemon, args=(zmq_offload()(stream(counting, 3)), send), daemon=True)
    daemon.start()
    try:
        assert receive.poll(30)
        kind, message = receive.recv()
    finally:
        daemon.join(5)
        daemon.kill()
        daemon.join()
    assert kind == "PescadorError", (kind, message)
    assert "is daemonic" in message and "zmq_offload cannot start its workers here" in message


def processes_of_this_group():
    """(pid, state) of every process in this process group, and of every child of this process, zombies
    included (a run's guardian is a child in a session of its own)."""
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if (int(fields[2]) == os.getpgrp() or int(fields[1]) == os.getpid()) and int(entry) != os.getpid():
            out.append((int(entry), fields[0]))
    return out


HUNDRED_RUNS = """
    import os, sys, tempfile, threading
    sys.path.insert(0, sys.argv[1])
    tempfile.tempdir = sys.argv[2]  # (a directory of this test's own: other runs' ipc directories do not count)
    from pescador import stream, zmq_offload
    from test_zmq import counting, open_fds, pescador_dirs, processes_of_this_group, workers_of_this_process
    recipe = zmq_offload(workers=2, start_method="fork")(stream(counting, 20))
    list(recipe)  # warm up whatever is created once
    fds, threads, dirs = open_fds(), threading.active_count(), pescador_dirs()
    group = set(processes_of_this_group())
    for run in range(100):
        if run % 2:
            assert len(list(recipe)) == 40
        else:
            for _ in zip(range(3), recipe):  # stopped early
                pass
    assert not workers_of_this_process()
    assert not set(processes_of_this_group()) - group  # no guardian left, not even as a zombie
    assert open_fds() == fds, os.listdir("/proc/self/fd")
    assert threading.active_count() == threads, threading.enumerate()
    assert pescador_dirs() == dirs
    print("clean", flush=True)
"""


@pytest.mark.timeout(150)
def test_a_hundred_runs_leak_no_process_descriptor_thread_or_directory(tmp_path):
    """In a process of its own session, so that its process group holds only its own runs' processes
    (not those of tests running beside it, as under pytest-xdist); killed if it hangs."""
    from test_faults import run_consumer

    argv = f"sys.argv[1:] = [{os.path.dirname(__file__)!r}, {str(tmp_path)!r}]\n"
    finished, out = run_consumer(argv + textwrap.dedent(HUNDRED_RUNS), 120)  # (a session of its own, killed at 120 s)
    assert finished and out.splitlines()[-1:] == ["clean"], out[-5000:]


CONSUMER = textwrap.dedent(
    """
    import sys, time, multiprocessing
    sys.path.insert(0, {tests!r})
    import pescador, test_zmq
    if __name__ == "__main__":
        recipe = pescador.zmq_offload(workers=2, start_method={method!r})(pescador.stream(test_zmq.endless))
        for i, item in enumerate(recipe):
            if i == 10:
                print(*[p.pid for p in multiprocessing.active_children() if p.name.startswith("pescador")], flush=True)
                time.sleep(60)
    """
)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_workers_exit_by_themselves_when_their_consumer_dies(method, tmp_path):
    code = CONSUMER.format(tests=os.path.dirname(__file__), method=method)
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the consumer's ipc directory goes here
    consumer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in consumer.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        assert [d for d in os.listdir(tmp_path) if d.startswith("pescador-")]  # the run's ipc directory
        consumer.kill()
        consumer.wait()
        deadline = time.monotonic() + 2.0
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids)
        assert not [d for d in os.listdir(tmp_path) if d.startswith("pescador-")]  # the workers removed it
    finally:
        consumer.kill()
        consumer.wait()


def stubborn():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)
        yield {"x": np.zeros(2)}


def test_workers_that_ignore_sigterm_are_killed_together_not_one_by_one():
    start = time.monotonic()
    for _ in zip(range(4), zmq_offload(workers=6, timeout=0.2)(stream(stubborn))):
        pass
    assert time.monotonic() - start < 0.2 + 1.0 + 1.0  # grace, then one second for all to take SIGTERM
    assert not workers_of_this_process()


def dies_after(n):
    for i in range(n):
        yield {"w": np.array([0]), "i": np.array([i])}
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)


def _death_or_endless(n):
    if pescador.worker_info().id == 0:
        yield from dies_after(n)
    else:
        for i in itertools.count():
            yield {"w": np.array([1]), "i": np.array([i])}


def test_a_dead_workers_items_all_arrive_before_its_death_is_reported_to_a_slow_consumer():
    got = []
    with pytest.raises(PescadorError, match="worker 0 .*killed by signal SIGKILL before its stream ended; the consumer received 30 items"):
        for item in zmq_offload(workers=2)(stream(_death_or_endless, 30)):
            if item["w"][0] == 0:
                got.append(int(item["i"][0]))
                time.sleep(0.02)  # a slow consumer: the dead worker's items wait in its queue
    assert got == list(range(30))


def surrogate_failure():
    yield {"x": np.zeros(1)}
    raise FileNotFoundError("no such file: " + b"caf\xe9".decode("utf-8", "surrogateescape"))


def test_a_traceback_with_undecodable_text_still_arrives():
    with pytest.raises(FileNotFoundError) as info:
        list(zmq_offload()(stream(surrogate_failure)))
    assert info.value.args == ("no such file: " + b"caf\xe9".decode("utf-8", "surrogateescape"),)  # exactly
    assert "FileNotFoundError: no such file: caf\\udce9" in str(info.value.__cause__)  # the text, escaped


def test_tcp_runs_leave_the_users_random_state_alone():
    import random

    random.seed(5)
    expected = random.random()
    random.seed(5)
    list(zmq_offload(transport="tcp")(stream(counting, 3)))
    assert random.random() == expected


# -- start methods and pickling ------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_start_methods(method):
    out = list(zmq_offload(workers=2, start_method=method)(stream(counting, 50)))
    assert sorted(x["i"] for x in out) == sorted(list(range(50)) * 2)


def test_a_generator_defined_inside_a_function_runs_under_spawn_too():
    """It travels by value (tests/test_pickling.py has the rest); under fork nothing is pickled."""
    base = 5

    def local_generator():
        yield {"x": base}

    for method in ("spawn", "fork"):
        assert list(zmq_offload(start_method=method)(stream(local_generator))) == [{"x": 5}]


# -- several workers ---------------------------------------------------------------


def test_workers_know_who_they_are_and_draw_independent_numbers():
    out = list(zmq_offload(workers=3)(stream(with_worker_info)))
    assert sorted(x["id"] for x in out) == [0, 1, 2]
    assert {x["count"] for x in out} == {3}
    legacy = {tuple(x["legacy"]) for x in out}
    own = {tuple(x["own"]) for x in out}
    assert len(legacy) == 3 and len(own) == 3


def test_an_int_random_state_reproduces_the_workers_seeds():
    recipe = zmq_offload(workers=2, random_state=7)(stream(with_worker_info))
    first = sorted((x["id"], tuple(x["own"])) for x in recipe)
    second = sorted((x["id"], tuple(x["own"])) for x in recipe)
    assert first == second


@pytest.mark.parametrize("workers", [2, 3])
def test_a_finite_muxed_pool_is_delivered_exactly_once_across_workers(workers):
    pool = [stream(tagged, tag, n) for tag, n in enumerate([5, 0, 17, 3, 9, 1, 12])]
    recipe = pescador.mux(2, None, with_replacement=False, random_state=3)(pool)
    single = collections.Counter((int(x["tag"][0]), int(x["i"][0])) for x in recipe)
    offloaded = collections.Counter(
        (int(x["tag"][0]), int(x["i"][0])) for x in zmq_offload(workers=workers)(recipe)
    )
    assert offloaded == single and sum(single.values()) == 47
    chained = zmq_offload(workers=workers)(chain_mux()(pool))
    assert collections.Counter((int(x["tag"][0]), int(x["i"][0])) for x in chained) == single


# -- flow control ------------------------------------------------------------------


def test_a_fast_producer_is_held_back_by_the_high_water_mark():
    counter = multiprocessing.get_context("fork").Value("i", 0)
    recipe = zmq_offload(hwm=2, start_method="fork")(stream(big_items, counter))
    for i, _ in enumerate(recipe):
        if i == 0:
            time.sleep(1.0)  # a slow consumer: the producer must wait
            produced = counter.value
            break
    # two queues of two messages, a few MiB in kernel buffers, one in hand
    assert produced <= 16


def small_items(size):
    i = 0
    while True:
        yield {"x": np.full(size, i % 256, np.uint8)}
        i += 1


@pytest.mark.timeout(60)
def test_a_peeked_run_of_small_items_stops_once_its_queues_and_connection_are_full():
    """``it = iter(batches); next(it)``, then nothing: items that share messages fill each worker's two
    queues (``hwm`` messages of at most 64 KiB of data each), the message in its hands and the connection's
    operating-system buffers, then the worker waits."""
    meter, hwm, workers = pescador.Meter(), 4, 2
    it = iter(zmq_offload(workers=workers, hwm=hwm)(pescador.measure(meter)(stream(small_items, 64))))
    next(it)
    made, since = -1, time.monotonic()
    while time.monotonic() - since < 1.0:  # until the workers' reports stop changing for a second
        if meter.bytes != made:
            made, since = meter.bytes, time.monotonic()
        time.sleep(0.05)
    with open("/proc/sys/net/core/wmem_default") as f:  # (a connection's buffers, charged to the sender)
        connection = int(f.read())
    bound = workers * ((2 * hwm + 1) * 64 * 1024 + connection)
    assert 0 < meter.bytes <= bound
    time.sleep(0.5)
    assert meter.bytes <= bound, (made, meter.bytes)  # (waiting)
    it.close()


# -- binding ----------------------------------------------------------------------


def test_the_ipc_directory_is_private_and_removed(private_tmp):
    before = pescador_dirs()
    it = iter(zmq_offload(transport="ipc")(stream(endless)))
    next(it)
    (new,) = pescador_dirs() - before
    assert os.stat(os.path.join(tempfile.gettempdir(), new)).st_mode & 0o777 == 0o700
    it.close()
    assert pescador_dirs() == before


def test_the_tcp_port_range_is_honoured():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recipe = zmq_offload(transport="tcp", min_port=port, max_port=port)(stream(counting, 3))
    assert len(list(recipe)) == 3
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        with pytest.raises(PescadorError, match=f"no free TCP port on 127.0.0.1 between {port} and {port}"):
            list(recipe)
    finally:
        blocker.close()


def test_a_stranger_cannot_inject_items(private_tmp):
    before = pescador_dirs()
    it = iter(zmq_offload(transport="ipc")(stream(slow_endless)))
    next(it)
    (new,) = pescador_dirs() - before
    context = zmq.Context()
    stranger = context.socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect("ipc://" + os.path.join(tempfile.gettempdir(), new, "s0"))
    forged = pescador.wire.encode_item({"x": np.full(3, 666.0)})
    for _ in range(20):
        stranger.send_multipart(forged)
    items = [next(it) for _ in range(30)]
    it.close()
    stranger.close()
    context.term()
    assert all(not np.any(item["x"] == 666.0) for item in items)


# -- parameters and the facade -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(workers=0), "workers must be an integer between 1"),
        (dict(workers=1.5), "workers"),
        (dict(copy="yes"), "copy must be True or False"),
        (dict(timeout=-1), "timeout must be None or a number"),
        (dict(hwm=0), "hwm must be an integer >= 1"),
        (dict(transport="udp"), "transport must be 'ipc' or 'tcp'"),
        (dict(min_port=70000), "min_port"),
        (dict(min_port=6000, max_port=5000), "max_port (5000) is below min_port (6000)"),
        (dict(max_tries=0), "max_tries"),
        (dict(start_method="thread"), "start_method 'thread' does not exist"),
        (dict(random_state=-3), "random_state"),
    ],
)
def test_bad_parameters(kwargs, words):
    with pytest.raises(PescadorError) as info:
        zmq_offload(**kwargs)
    assert words in str(info.value)


def test_repr_and_pickle():
    recipe = zmq_offload(workers=2)(stream(counting, 3))
    assert "zmq_offload(workers=2" in repr(recipe)
    import pickle

    assert pickle.loads(pickle.dumps(recipe)) == recipe


def rows(n):
    for i in range(n):
        yield {"X": np.full((1, 4), i, dtype=np.float32), "i": np.array([i])}


def test_zmq_streamer_facade_with_buffering_on_either_side():
    streamer = pescador.Streamer(rows, 100)
    zs = pescador.ZMQStreamer(streamer)
    assert [int(x["i"][0]) for x in zs(max_batches=10)] == list(range(10))
    after = pescador.BufferedStreamer(zs, 10)
    batches = list(after(max_batches=5))
    assert [b["X"].shape for b in batches] == [(10, 4)] * 5
    before = pescador.ZMQStreamer(pescador.BufferedStreamer(streamer, 10))
    assert sum(b["X"].shape[0] for b in before()) == 100
    assert len(list(zip(range(250), zs.cycle()))) == 250
    tcp = pescador.ZMQStreamer(streamer, min_port=50000, max_port=50100, timeout=1)
    assert len(list(tcp(max_batches=5))) == 5


# -- resumable runs through zmq_offload -----------------------------------------------


def sharded(n):
    """Items 0..n-1, each worker its own share (its id, every count-th)."""
    info = pescador.worker_info()
    for i in range(info.id, n, info.count):
        yield {"i": np.array([i]), "w": np.array([info.id])}


def listed(n):
    return stream([{"i": np.array([i])} for i in range(n)])


def _ints(items):
    return [int(x["i"][0]) for x in items]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_resumable_run_through_one_worker_equals_the_plain_run(method):
    recipe = zmq_offload(workers=1, start_method=method)(listed(30))
    assert _ints(pescador.resumable(recipe)) == _ints(recipe) == list(range(30))


def test_a_plain_runs_state_is_refused_with_the_way_to_get_one():
    gc.collect()  # (runs of earlier tests left in reference cycles)
    it = pescador.stage.start(zmq_offload()(listed(5)))
    next(it)
    with pytest.raises(PescadorError, match="resumable"):
        it.state()
    it.close()
    assert not workers_of_this_process()


@pytest.mark.parametrize("stop", [0, 1, 13, 29, 30])
def test_one_worker_head_and_resumed_tail_equal_the_uninterrupted_run(stop):
    recipe = take(25)(pescador.tuples("i")(zmq_offload()(listed(30))))
    full = [int(t[0][0]) for t in pescador.resumable(recipe)]
    first = pescador.resumable(recipe)
    head = [int(next(first)[0][0]) for _ in range(min(stop, 25))]
    state = json.loads(json.dumps(first.state_dict()))
    del first
    rest = [int(t[0][0]) for t in pescador.resumable(recipe, state)]
    assert head + rest == full == list(range(25))


@pytest.mark.parametrize("stop", [0, 1, 17, 40])
def test_two_workers_head_and_resumed_tail_hold_every_item_once(stop):
    recipe = zmq_offload(workers=2)(stream(sharded, 40))
    by_worker = lambda items: {w: [i for i, v in items if v == w] for w in (0, 1)}  # noqa: E731
    full = [(int(x["i"][0]), int(x["w"][0])) for x in pescador.resumable(recipe)]
    first = pescador.resumable(recipe)
    head = [(int(x["i"][0]), int(x["w"][0])) for x in itertools.islice(first, stop)]
    state = json.loads(json.dumps(first.state_dict()))
    del first
    rest = [(int(x["i"][0]), int(x["w"][0])) for x in pescador.resumable(recipe, state)]
    assert collections.Counter(head + rest) == collections.Counter(full) == collections.Counter(
        (i, i % 2) for i in range(40))
    # each worker's own items continue exactly
    assert {w: h + r for (w, h), r in zip(by_worker(head).items(), by_worker(rest).values())} == by_worker(full)


def numbered(n):
    for i in range(n):
        yield {"i": np.array([i])}


@pytest.mark.timeout(60)
def test_a_worker_sends_states_now_and_then_and_a_resume_draws_again_what_it_delivered_since():
    """A fast worker does not send its state with every item: a checkpoint holds its latest state delivered
    and the count of items delivered since (skip), which the resumed worker draws again and drops."""
    recipe = zmq_offload(workers=1)(stream(numbered, 5000))
    first = pescador.resumable(recipe)
    head, with_state = [], 0
    for item in itertools.islice(first, 3000):
        head.append(int(item["i"][0]))
        stages = first.state_dict()["stages"]
        state_items = stages["workers"][0]["up"]["pos"] if stages["workers"][0] else 0  # (the share's source)
        assert state_items + stages["skip"][0] == len(head)  # (where the worker is: its state, and then skip)
        with_state += stages["skip"][0] == 0
    assert with_state < 300  # (a state every 10 ms of the worker's work, or so)
    saved = json.loads(json.dumps(first.state_dict()))
    del first
    assert head + _ints(pescador.resumable(recipe, saved)) == list(range(5000))


def test_collecting_a_resumable_run_reaps_its_workers():
    gc.collect()  # (runs of earlier tests left in reference cycles)
    run = pescador.resumable(zmq_offload(workers=2)(stream(endless)))
    next(run)
    assert len(workers_of_this_process()) == 2
    del run
    gc.collect()
    assert not workers_of_this_process()


def test_an_offloads_length_counts_every_workers_items():
    assert pescador.epoch_length(zmq_offload()(listed(7))) == 7
    # several workers each run the recipe: an epoch holds every worker's items (each counted as it runs)
    assert pescador.epoch_length(zmq_offload(workers=2)(listed(7))) == 14 == len(list(zmq_offload(workers=2)(listed(7))))


MALFORMED = r"""
import json, multiprocessing, sys
import numpy as np
import pescador
from pescador import PescadorError, stream, zmq_offload
from pescador.resume import _sign

recipe = zmq_offload(workers=2)(stream([{"i": np.array([i])} for i in range(10)]))
run = pescador.resumable(recipe)
for _ in range(5):
    next(run)
good = json.loads(json.dumps(run.state_dict()))
del run
assert sorted(good["stages"]) == ["entropy", "skip", "workers"] and len(good["stages"]["workers"]) == 2

def stages(value):
    return value

def entry(value):
    return dict(good["stages"], workers=[value, good["stages"]["workers"][1]])

def nested(value):  # (the share's stages' state: checked by the worker's own stages)
    return entry({"spawned": 0, "up": value})

def skips(value):
    return dict(good["stages"], skip=value)

cases = {
    "not a dict": stages([]),
    "no workers": stages({}),
    "an extra field": stages(dict(good["stages"], extra=1)),
    "workers not a list": stages({"workers": {"0": None}}),
    "too few workers": stages({"workers": good["stages"]["workers"][:1]}),
    "too many workers": stages({"workers": good["stages"]["workers"] + [None]}),
    "no skip": stages({"workers": good["stages"]["workers"], "entropy": good["stages"]["entropy"]}),
    "skip not a list": skips(3),
    "too few skips": skips([0]),
    "a negative skip": skips([-1, 0]),
    "a text skip": skips(["1", 0]),
    "a skip past the bound": skips([10**6, 0]),
    "a skip past the end": skips([4000, 0]),
    "an int worker": entry(5),
    "a list worker": entry([]),
    "a text worker": entry("pos"),
    "a share without its seeds": entry({"up": {"pos": 3}}),
    "a share with negative seeds": entry({"spawned": -1, "up": {"pos": 3}}),
    "a share with a null state": entry({"spawned": 0, "up": None}),
    "no entropy": stages({"workers": good["stages"]["workers"], "skip": good["stages"]["skip"]}),
    "a negative entropy": stages(dict(good["stages"], entropy=-1)),
    "a text entropy": stages(dict(good["stages"], entropy="7")),
    "nested: empty": nested({}),
    "nested: negative": nested({"pos": -1}),
    "nested: past the end": nested({"pos": 11}),
    "nested: huge": nested({"pos": 10**12}),
    "nested: text": nested({"pos": "3"}),
    "nested: bool": nested({"pos": True}),
    "nested: float": nested({"pos": 3.0}),
    "nested: extra": nested({"pos": 3, "x": 1}),
}
for name, value in cases.items():
    state = dict(good, stages=value)
    state["check"] = _sign(state)  # (as a deliberate edit: the stages check their fields)
    try:
        got = list(pescador.resumable(recipe, state))
        print(json.dumps([name, "no error", len(got)]), flush=True)
    except PescadorError as exc:
        print(json.dumps([name, "PescadorError", str(exc)]), flush=True)
    except Exception as exc:
        print(json.dumps([name, type(exc).__name__, str(exc)]), flush=True)
print(json.dumps(["left", len([p for p in multiprocessing.active_children() if p.name.startswith("pescador")])]))
"""


def _run_bounded(script, seconds):
    """Run ``script`` in a new session; kill its whole group if it outlives ``seconds``."""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True, text=True)
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"still running after {seconds} s; so far:\n{out}\n{err}")
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.timeout(150)
def test_a_malformed_offload_state_is_a_pescador_error_naming_the_field():
    results = _run_bounded(MALFORMED, 120)
    assert results[-1] == ["left", 0]
    results = results[:-1]
    assert len(results) == 30
    for name, kind, message in results:
        assert kind == "PescadorError", (name, kind, message)
        if name.startswith("nested") or name == "a skip past the end":  # (checked where the worker runs)
            assert "worker 0 cannot start from its state (entry 0 of the fields 'workers' and 'skip')" in message, (
                name, message)
            assert ("'pos'" if name.startswith("nested") else "on replay") in message.splitlines()[-1], (name, message)
        elif name.startswith("a share"):  # (the share's own fields: checked before any worker starts)
            assert "field 'workers' entry 0 (worker 0's state)" in message, (name, message)
        elif "entropy" in name:
            assert "entropy" in message, (name, message)
        elif "skip" in name:
            assert "skip" in message, (name, message)
        else:
            assert "workers" in message or (name == "not a dict" and "'stages'" in message), (name, message)


def _imports(path, module_level_only):
    """The pescador modules ``path`` imports (``from . import x``, ``from .x import y``)."""
    import ast

    tree = ast.parse(open(path).read())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pescador."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("pescador."))
    return found


def test_the_offload_is_handed_what_it_needs_and_modules_import_no_circle():
    here = os.path.dirname(pescador.__file__)
    # zmq_stream runs stages through pescador.stage, never through resume or the facade (not even lazily)
    assert not _imports(os.path.join(here, "zmq_stream.py"), False) & {"resume", "streamer"}
    graph = {
        name[:-3]: _imports(os.path.join(here, name), True) - {"__init__"}
        for name in os.listdir(here) if name.endswith(".py") and name not in ("__init__.py", "__main__.py")
    }
    # nothing below the facade imports it when imported
    assert [m for m, deps in graph.items() if "streamer" in deps] == []
    # and the module-level imports have no circle
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, f"import circle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        if module in done or module not in graph:
            return
        visiting.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


# -- several items to a message (batch_wait) ----------------------------------------------


@pytest.fixture
def kinds(monkeypatch):
    """The kinds of the messages this consumer decodes, and how many items each held."""
    seen = []
    decode = pescador.wire.decode

    def spy(frames, copy=False):
        kind, payload = decode(frames, copy)
        seen.append((kind, len(payload[0]) if kind == pescador.wire.BATCH else 1))
        return kind, payload

    monkeypatch.setattr(pescador.wire, "decode", spy)
    return seen


def test_items_that_share_messages_arrive_in_order_each_once(kinds):
    out = list(zmq_offload(batch_wait=10)(stream(counting, 5000)))
    assert [x["i"] for x in out] == list(range(5000))
    assert all(np.array_equal(x["X"], np.full((1, 4), x["i"], np.float32)) for x in out)
    assert max(n for kind, n in kinds if kind == pescador.wire.BATCH) > 1  # (they did share)


def test_two_workers_sharing_messages_deliver_every_item_and_end(kinds):
    out = list(zmq_offload(workers=2)(stream(sharded, 4000)))
    assert sorted(int(x["i"][0]) for x in out) == list(range(4000))
    for w in (0, 1):  # each worker's items in its own order
        mine = [int(x["i"][0]) for x in out if int(x["w"][0]) == w]
        assert mine == sorted(mine)


def test_a_worker_exception_arrives_after_every_item_it_held():
    out = []
    with pytest.raises(ValueError, match="broken after 3000 items") as info:
        for item in zmq_offload(batch_wait=10)(stream(raising_after, 3000)):
            out.append(int(item["i"][0]))
    assert out == list(range(3000))
    assert "after sending 3000 items" in str(info.value.__cause__)


def test_a_value_that_cannot_travel_is_named_after_the_items_held_before_it():
    out = []
    with pytest.raises(PescadorError, match=r"item 2500: the value of key 'v' contains a object"):
        for item in zmq_offload(batch_wait=10)(stream(unpackable_after, 2500)):
            out.append(int(item["i"][0]))
    assert out == list(range(2500))


def unpackable_after(n):
    for i in range(n):
        yield {"i": np.array([i]), "v": i}
    yield {"i": np.array([n]), "v": [object()]}  # shares the layout, but cannot be packed


def lockstep(received, n, burst):
    """Items 0..n-1; after the first ``burst`` (made as fast as possible), each comes only once the
    consumer has received the one before (``received``: released by the consumer for each item)."""
    for i in range(n):
        if i >= burst and not received.acquire(timeout=60):
            raise RuntimeError(f"the consumer never received item {i - 1}")
        yield {"i": np.array([i])}


@pytest.mark.parametrize("burst", [1, 3000])
def test_a_source_that_waits_for_the_consumer_still_progresses(burst):
    """Items held to share a message leave while the source waits (for the consumer to receive them)."""
    received = multiprocessing.get_context("fork").Semaphore(0)
    out = []
    for item in zmq_offload(start_method="fork")(stream(lockstep, received, burst + 200, burst)):
        out.append(int(item["i"][0]))
        if len(out) >= burst:
            received.release()
    assert out == list(range(burst + 200))


@pytest.mark.parametrize("stop", [0, 1, 700, 1025, 2999, 3000])
def test_head_and_resumed_tail_equal_the_uninterrupted_run_when_items_share_messages(stop, kinds):
    recipe = zmq_offload(batch_wait=10)(listed(3000))
    full = _ints(pescador.resumable(recipe))
    assert max(n for kind, n in kinds if kind == pescador.wire.BATCH) > 1
    first = pescador.resumable(recipe)
    head = _ints(itertools.islice(first, stop))
    state = json.loads(json.dumps(first.state_dict()))
    del first
    rest = _ints(pescador.resumable(recipe, state))
    assert head + rest == full == list(range(3000))


def test_batch_wait_zero_sends_one_message_per_item(kinds):
    assert _ints(zmq_offload(batch_wait=0)(listed(300))) == list(range(300))
    assert [kind for kind, _ in kinds if kind != pescador.wire.END] == [pescador.wire.ITEM] * 300


@pytest.mark.parametrize("bad", [-0.001, 11, float("nan"), "1ms", True])
def test_a_bad_batch_wait_is_refused(bad):
    with pytest.raises(PescadorError, match="batch_wait must be a number of seconds from 0 to 10"):
        zmq_offload(batch_wait=bad)


def reusing(n):
    """One dict and one array, changed in place for every item (what ``copy=True`` allows)."""
    item = {"X": np.zeros((1, 4), dtype=np.float32), "i": 0}
    for i in range(n):
        item["X"][...] = i
        item["i"] = i
        yield item


@pytest.mark.parametrize("copy", [False, True])
def test_a_source_that_reuses_its_item_sends_what_it_yielded(copy):
    out = list(zmq_offload(copy=copy, batch_wait=10)(stream(reusing, 3000)))
    assert [x["i"] for x in out] == list(range(3000))
    assert all(np.array_equal(x["X"], np.full((1, 4), x["i"], np.float32)) for x in out)
