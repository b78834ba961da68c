"""Guarantees under faults, bad input and hostile bytes (the README's "Guarantees").

Every test here is bounded in time: a hang fails fast instead of eating CI.
"""

import collections
import faulthandler
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

import pescador
from pescador import PescadorError, buffer, cycle, keras_tuples, stream, take, tuples, zmq_offload
from pescador.mux import chain_mux, round_robin_mux, shuffled_mux, stochastic_mux
from pescador.wire import END, ERROR, ITEM, decode, encode_item
from test_wire import decode_bounded  # (decode, allocating nothing sized by the message's claims)

pytestmark = pytest.mark.timeout(60)


# -- sources --------------------------------------------------------------------------


def numbered(n):
    for i in range(n):
        yield {"i": np.array([i])}


def faulty(n, how):
    """``n`` good items, then a fault of the given kind."""
    for i in range(n):
        yield {"i": np.array([i])}
    if how == "raise":
        raise RuntimeError(f"fault after {n} items")
    time.sleep(0.2)  # let the items already sent reach the consumer
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(5)
    elif how == "segfault":
        faulthandler.disable()
        import ctypes

        ctypes.string_at(0)


def endless():
    i = 0
    while True:
        yield {"i": np.array([i])}
        i += 1


def nothing():
    return iter(())


def broken():
    raise OSError("cannot open the file")
    yield  # pragma: no cover


def leading_good_then(bad):
    yield {"x": np.zeros(1)}
    yield bad


# -- helpers -------------------------------------------------------------------------


def live_children():
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z" and b"forkserver" not in command and b"resource_tracker" not in command:
                found.append(int(entry))
    return found


def open_fds():
    return len(os.listdir("/proc/self/fd"))


# -- fault injection -----------------------------------------------------------------


@pytest.mark.parametrize(
    "n, how",
    [(500, "sigkill"), (500, "segfault"), (500, "exit"), (0, "raise"), (1000, "raise")],
    ids=["sigkill", "segfault", "os._exit", "raise-on-first", "raise-after-1000"],
)
def test_a_worker_fault_is_raised_quickly_after_every_item_before_it(n, how):
    recipe = zmq_offload()(stream(faulty, n, how))
    list(zmq_offload()(stream(numbered, 3)))  # warm up what is made once per process
    fds = open_fds()
    got = []
    start = time.monotonic()
    with pytest.raises(RuntimeError if how == "raise" else PescadorError) as info:  # (its own type: see below)
        for item in recipe:
            got.append(int(item["i"][0]))
    assert time.monotonic() - start < 2.0 + 0.2  # (the source itself sleeps 0.2 s before dying)
    assert got == list(range(n))
    report = info.value.__cause__ if how == "raise" else info.value  # (a raise: the worker's traceback is the cause)
    assert "worker 0" in str(report)
    assert not live_children()
    assert open_fds() == fds


def test_keyboard_interrupt_with_items_in_flight_then_a_new_run():
    recipe = zmq_offload(workers=2)(stream(endless))
    others = set(live_children())  # (another test's, say a DataLoader's persistent workers)
    # SIGINT raises KeyboardInterrupt only where Python installed its handler: a process started in the
    # background by a non-interactive shell (`make test &`) inherits SIGINT ignored, and the signal below
    # would do nothing (the loop then ran until the test's timeout)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            for n, _ in enumerate(recipe):
                if n == 1000:
                    os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed
                    time.sleep(1.0)  # (the signal arrives here)
        assert not set(live_children()) - others
        assert len(list(take(100, recipe))) == 100
    finally:
        signal.signal(signal.SIGINT, before)
        for pid in set(live_children()) - others:  # (after a failure: nothing left for the tests after this one)
            os.kill(pid, signal.SIGKILL)


def _raise_in(code, exception):
    """A trace function that raises ``exception`` at the next line run by ``code`` (an interrupt that lands
    exactly there), then stops tracing."""

    def local(frame, event, arg):
        if event == "line":
            sys.settrace(None)
            raise exception
        return local

    return lambda frame, event, arg: local if frame.f_code is code else None


def test_an_interrupt_between_two_items_stops_the_workers_whoever_keeps_the_traceback():
    """Ctrl-C (or a test's timeout) may land in the frame that hands the run's items on, between two of
    them, as it once did in this suite; the traceback holds that frame, and the frame holds the run."""
    others = set(live_children())  # (another test's, say a DataLoader's persistent workers)
    run = iter(zmq_offload(workers=2)(stream(endless)))
    next(run)
    sys.settrace(_raise_in(pescador.stage.Offloaded.__next__.__code__, KeyboardInterrupt))
    try:
        with pytest.raises(KeyboardInterrupt) as kept:
            next(run)
    finally:
        sys.settrace(None)
    try:
        assert kept.value.__traceback__ is not None and not set(live_children()) - others
    finally:
        for pid in set(live_children()) - others:  # (after a failure: nothing left for the tests after this one)
            os.kill(pid, signal.SIGKILL)


# -- bad items into every combinator ------------------------------------------------------

BAD_ITEMS = [None, 3, [np.zeros(1)], {1: np.zeros(1)}]
COMBINATORS = {  # the stages that need a dict of arrays
    "buffer": lambda s: buffer(2)(s),
    "tuples": lambda s: tuples("x")(s),
    "keras_tuples": lambda s: keras_tuples("x")(s),
    "zmq_offload": lambda s: zmq_offload()(s),
}
MUXES = {  # the stages that only move items: any item, as iterator combinators
    "mux": lambda s: pescador.mux(1, 8.0, random_state=0)([s]),
    "stochastic_mux": lambda s: stochastic_mux(1, 8.0, random_state=0)([s]),
    "shuffled_mux": lambda s: shuffled_mux(random_state=0)([s]),
    "round_robin_mux": lambda s: round_robin_mux()([s]),
    "chain_mux": lambda s: chain_mux()([s]),
}


@pytest.mark.parametrize("bad", BAD_ITEMS, ids=["None", "int", "list", "int-key"])
@pytest.mark.parametrize("name", sorted(COMBINATORS))
def test_an_item_that_is_not_a_dict_is_named_by_every_combinator_that_needs_one(name, bad):
    recipe = COMBINATORS[name](stream(leading_good_then, bad))
    with pytest.raises(PescadorError) as info:
        list(take(10, recipe))
    message = str(info.value)
    assert name in message or "zmq_offload" in message or name == "zmq_offload"
    assert "item 1" in message
    received = "key 1 of type int" if isinstance(bad, dict) else type(bad).__name__
    assert received in message, message


@pytest.mark.parametrize("bad", BAD_ITEMS, ids=["None", "int", "list", "int-key"])
@pytest.mark.parametrize("name", sorted(MUXES))
def test_every_mux_carries_any_item_and_the_next_stage_that_needs_a_dict_names_it(name, bad):
    recipe = MUXES[name](stream(leading_good_then, bad))
    out = list(take(2, recipe))
    assert out[1] is bad  # carried unchanged
    with pytest.raises(PescadorError, match="buffer: item 1"):
        list(take(10, buffer(1)(recipe)))


# -- nothing spins ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda pool: pescador.mux(2, 4.0)(pool),
        lambda pool: pescador.mux(2, 4.0, prune_empty=False)(pool),
        lambda pool: pescador.mux(2, None, with_replacement=False, revive=True)(pool),
        lambda pool: stochastic_mux(2, 4.0, mode="single_active")(pool),
        lambda pool: shuffled_mux()(pool),
        lambda pool: round_robin_mux("cycle")(pool),
        lambda pool: round_robin_mux("permuted_cycle")(pool),
        lambda pool: chain_mux("with_replacement")(pool),
    ],
    ids=["mux", "mux-no-prune", "mux-revive", "single-active", "shuffled", "rr-cycle", "rr-permuted", "chain-repl"],
)
@pytest.mark.timeout(10)
def test_a_pool_of_empty_streams_ends_and_a_pool_of_broken_ones_raises(make):
    assert list(make([stream(nothing) for _ in range(4)])) == []
    with pytest.raises(OSError, match="cannot open the file"):
        list(make([stream(broken) for _ in range(4)]))


@pytest.mark.timeout(10)
def test_cycle_over_an_empty_stream_raises():
    with pytest.raises(PescadorError, match="empty|nothing"):
        list(take(5, cycle()(stream(nothing))))
    with pytest.raises(PescadorError):
        list(take(5, pescador.Streamer(nothing).cycle()))


# -- hostile bytes --------------------------------------------------------------------


def packed(*parts):
    return msgpack.packb(list(parts), use_bin_type=True)


ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
dims = st.one_of(st.integers(-5, 70), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=3))
dtypes = st.one_of(
    st.sampled_from(["<f4", "<f8", "|u1", "|O", "O", "V8", "f4,i4", "(2,)f4", "<U2", "M8", "S0", "<q", "?", "x"]),
    st.text(max_size=6),
    ints,
    st.none(),
)
fields = st.one_of(
    st.tuples(st.text(max_size=3), dtypes, st.lists(dims, max_size=4), st.one_of(st.none(), st.binary(max_size=80))).map(list),
    st.tuples(st.text(max_size=3), st.one_of(ints, st.text(), st.none())).map(list),
    st.lists(ints, max_size=5),
)
messages = st.tuples(
    st.one_of(st.just(ITEM), st.just(END), st.just(ERROR), st.integers(-3, 9)),
    st.lists(fields, max_size=4),
    st.lists(st.binary(max_size=96), max_size=4),
)


@settings(max_examples=400)
@given(messages)
def test_malformed_messages_raise_pescador_errors_and_allocate_nothing_big(message):
    kind, body, frames = message
    raw = [packed(kind, body), *frames]
    size = sum(len(f) for f in raw)
    decoded = decode_bounded(raw)
    if decoded is not None and decoded[0] == ITEM:  # what passes is consistent
        for value in decoded[1].values():
            if isinstance(value, np.ndarray):
                assert value.nbytes <= size and not value.dtype.hasobject


@settings(max_examples=200)
@given(st.binary(max_size=300), st.integers(0, 200))
def test_truncated_and_corrupted_real_messages_raise(noise, cut):
    good = encode_item({"x": np.arange(300, dtype=np.float64), "s": "text", "n": [1, 2]})
    header, frame = bytes(good[0]), bytes(good[1])
    for raw in ([header[:cut], frame], [header, frame[: cut * 8]], [noise, frame], [header, frame, noise]):
        try:
            kind, item = decode(raw)
        except PescadorError:
            continue
        assert raw[0] == header and len(raw) == 2 and raw[1] == frame  # only the intact message decodes
        np.testing.assert_array_equal(item["x"], np.arange(300.0))


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_stranger_cannot_inject_items(transport, tmp_path, monkeypatch):
    """Connect to the consumer's endpoint (found from the outside) and send forged items."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = set(_listening_ports())
    it = iter(zmq_offload(transport=transport)(stream(endless)))
    next(it)
    if transport == "ipc":
        (directory,) = os.listdir(tmp_path)
        endpoint = "ipc://" + os.path.join(tmp_path, directory, "s0")  # (worker 0's socket)
    else:
        (port,) = set(_listening_ports()) - before
        endpoint = f"tcp://127.0.0.1:{port}"
    context = zmq.Context()
    stranger = context.socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    for identity in (None, b"pescador-0-guess"):
        if identity:
            stranger.close()
            stranger = context.socket(zmq.DEALER)
            stranger.setsockopt(zmq.LINGER, 0)
            stranger.setsockopt(zmq.IDENTITY, identity)
        stranger.connect(endpoint)
        for _ in range(50):
            stranger.send_multipart(encode_item({"i": np.array([-666])}))
    got = [int(next(it)["i"][0]) for _ in range(3000)]
    it.close()
    stranger.close()
    context.term()
    assert -666 not in got
    assert got == sorted(got)  # the worker's own items, in order


def dies_soon():
    yield {"i": np.array([0])}
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(30)
def test_a_chattering_stranger_does_not_hide_a_dead_worker(tmp_path, monkeypatch):
    """A stranger that keeps sending to a dead worker's socket does not keep its death from the consumer
    (which would then wait for ever: the test's timeout fails it)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    it = iter(zmq_offload(transport="ipc")(stream(dies_soon)))
    next(it)
    (directory,) = os.listdir(tmp_path)
    context = zmq.Context()
    stranger = context.socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect("ipc://" + os.path.join(tmp_path, directory, "s0"))
    stop = threading.Event()

    def chatter():
        while not stop.is_set():
            stranger.send(b"hello")
            time.sleep(0.005)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        with pytest.raises(PescadorError, match="killed by signal SIGKILL"):
            next(it)
    finally:
        stop.set()
        thread.join()
        stranger.close()
        context.term()


STRANGER_CONSUMER = textwrap.dedent(
    """
    import os, select, sys, time
    import numpy as np, pescador

    def paced():
        w = pescador.worker_info().id
        for i in range(10**6):
            time.sleep(0.002)
            yield {"i": np.array([i]), "w": np.array([w])}

    sys.path.insert(0, sys.argv[2])  # (tests/: the loopback ports this process listens on, one per worker)
    from test_faults import _listening_ports as listening

    meter = pescador.Meter()  # (with an observer in the workers, the consumer also listens for their reports)
    recipe = pescador.measure(meter)(pescador.stream(paced)) if sys.argv[1] == "observed" else pescador.stream(paced)
    got, last = [], None
    for item in pescador.zmq_offload(workers=2, transport="tcp")(recipe):
        got.append((int(item["w"][0]), int(item["i"][0])))
        if len(got) == 1:
            print(*listening(), flush=True)
        if last is None and select.select([sys.stdin], [], [], 0)[0]:  # (the stranger is done: 50 items more)
            last = len(got) + 50
        if len(got) == last:
            break
    mine = [[i for w, i in got if w == wid] for wid in (0, 1)]  # (each worker's items: every one once, in order)
    print("done", all(items == list(range(len(items))) for items in mine), flush=True)
    """
)


def _kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])


def _zmtp_flood(port, mib):
    """A stranger that speaks ZMTP itself: the NULL handshake, then ``mib`` MiB in frames of one message
    that never ends (each frame says more follow).  Returns how many MiB went out before it was cut off."""
    chunk = b"x" * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32)
        ready = b"\x05READY\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
        conn.sendall(b"\x04" + bytes([len(ready)]) + ready)
        try:
            for _ in range(mib):
                conn.sendall(b"\x03" + len(chunk).to_bytes(8, "big") + chunk)
                sent += 1
        except OSError:  # (cut off)
            pass
    return sent


@pytest.mark.timeout(90)
@pytest.mark.parametrize("observed", ["plain", "observed"])
def test_a_stranger_over_tcp_cannot_make_the_consumer_hold_what_it_sends(observed):
    """ZeroMQ keeps a message's frames until its last one comes, whatever their number: a stranger
    that reaches the consumer's loopback port made it hold 256 MiB (47 to 485 MiB seen, with 512).
    Each worker has a port of its own, and with an observer in the workers the consumer listens for
    their reports on one more: the stranger tries every one."""
    child = subprocess.Popen(
        [sys.executable, "-c", STRANGER_CONSUMER, observed, os.path.dirname(__file__)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        ports = [int(port) for port in child.stdout.readline().split()]
        assert len(ports) == (3 if observed == "observed" else 2), child.stderr.read()
        before = _kib(child.pid, "VmRSS")
        sent = [_zmtp_flood(port, 256) for port in ports]
        held = _kib(child.pid, "VmHWM") - before
        out, err = child.communicate("done\n", timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)  # (the consumer and its workers)
            child.wait()
    assert max(sent) < 256, f"the stranger was never cut off (MiB sent to each port: {sent})"
    assert held < 32 * 1024, f"the consumer's memory grew by {held // 1024} MiB"
    assert out.strip() == "done True", err  # (the run went on: 50 items more, no item twice)


def _listening_ports():
    """The loopback TCP ports this process listens on (not the machine's: another process's new port
    would be taken for the run's)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/self/net/tcp") as f:
        rows = [line.split() for line in list(f)[1:]]
    return [int(row[1].split(":")[1], 16) for row in rows
            if row[3] == "0A" and row[1].startswith("0100007F:") and row[9] in inodes]


# -- nothing lost ------------------------------------------------------------------------


def sequenced(source, n, width=3):
    """Items that say where they come from, and carry a checkable payload."""
    for i in range(n):
        yield {
            "source": np.array([source], dtype=np.int32),
            "seq": np.array([i], dtype=np.int64),
            "payload": np.full((1, width), source * 1_000_003 + i, dtype=np.int64),
        }


def check_delivery(batches, sizes):
    """Every (source, seq) exactly once, in order per source, payloads intact."""
    seen = collections.defaultdict(list)
    for batch in batches:
        expected = batch["source"].astype(np.int64) * 1_000_003 + batch["seq"]
        assert np.all(batch["payload"] == expected[:, None]), "corrupted payload"
        for source, seq in zip(batch["source"].tolist(), batch["seq"].tolist()):
            seen[source].append(seq)
    for source, n in enumerate(sizes):
        assert seen[source] == list(range(n)), f"source {source}: lost, duplicated or out of order"
    return sum(len(v) for v in seen.values())


def test_nothing_lost_duplicated_or_corrupted_through_mux_buffer_and_two_workers():
    sizes = [3000 + 137 * s for s in range(12)]
    pool = [stream(sequenced, s, n) for s, n in enumerate(sizes)]
    recipe = pescador.mux(4, None, with_replacement=False, random_state=0)(pool)
    # rows from one source stay in order through buffer and the wire, whichever worker runs it
    batches = list(zmq_offload(workers=2)(buffer(64, strict=False)(recipe)))
    assert check_delivery(batches, sizes) == sum(sizes)


# -- hangs, stuck workers and cleanup (issue 12) ---------------------------------------
#
# Anything here that could hang runs in a consumer subprocess in its own session,
# killed (with its workers) when its time is up.


def run_consumer(code, timeout, env=None):
    """Run ``code`` as a consumer script in a new session; kill the whole session on timeout.

    Returns (finished, stdout).
    """
    script = f"import sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n" + textwrap.dedent(code)
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env=dict(os.environ, **(env or {})),
    )
    try:
        out, _ = process.communicate(timeout=timeout)
        return process.returncode == 0, out
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        return False, out
    finally:
        _kill_session(process.pid)


def _kill_session(sid):
    """SIGKILL whatever is left of a session (workers orphaned by a killed consumer)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def drawing_from_np_random():
    """Endless items that draw from numpy's legacy global generator (as 1.0 examples do)."""
    while True:
        yield {"x": np.random.random(3)}


FORK_WITH_A_DRAWING_THREAD = """
    import threading, numpy as np, pescador, test_faults
    stop = False
    def churn():
        while not stop:
            np.random.random(200_000)
    threading.Thread(target=churn, daemon=True).start()
    recipe = pescador.zmq_offload(workers=4, start_method="fork")(pescador.stream(test_faults.drawing_from_np_random))
    for run in range({runs}):
        assert len(list(pescador.take(3)(recipe))) == 3
        print("run", run, flush=True)
    stop = True
"""


@pytest.mark.timeout(200)
def test_fork_while_a_consumer_thread_draws_from_np_random_never_hangs(tmp_path):
    """Forked workers inherit numpy's global RandomState lock held by the other thread: no hang, in
    pescador's seeding or in a source that draws from np.random."""
    runs = 25
    finished, out = run_consumer(FORK_WITH_A_DRAWING_THREAD.format(runs=runs), 180, {"TMPDIR": str(tmp_path)})
    assert finished, f"hung or failed after {out.count('run ')} of {runs} runs:\n{out[-3000:]}"
    assert out.count("run ") == runs
    assert not [d for d in os.listdir(tmp_path) if d.startswith("pescador-")]  # every run removed its ipc directory


class BlocksWhenUnpickled:
    """An argument whose unpickling blocks for ever (as if it opened a dead network share)."""

    def __init__(self, marker):
        self.marker = marker

    def __setstate__(self, state):
        self.__dict__.update(state)
        _mark(self.marker)
        threading.Event().wait()


def _mark(directory):
    with open(os.path.join(directory, f"stuck-{os.getpid()}"), "w"):
        pass


def stuck_in(where, marker):
    """Yield one item, then block for ever in the given way."""
    yield {"x": np.zeros(1)}
    _mark(marker)
    if where == "sleep":
        time.sleep(3600)
    elif where == "lock":
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()
    elif where == "c-call":
        import ctypes

        ctypes.CDLL(None).sleep(3600)  # a C call (it releases the GIL, as I/O calls do)
    elif where == "c-call-holding-the-gil":
        import ctypes

        ctypes.PyDLL(None).sleep(3600)  # C code that keeps the GIL: no thread of the worker runs again
    elif where == "signals-blocked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        time.sleep(3600)


def stuck_source(where, marker, blocker=None):
    yield from stuck_in(where, marker)


STUCK_CONSUMER = """
    import time, pescador, test_faults
    where, marker, method = {where!r}, {marker!r}, {method!r}
    blocker = test_faults.BlocksWhenUnpickled(marker) if where == "setup" else None
    recipe = pescador.zmq_offload(workers=2, start_method=method)(pescador.stream(test_faults.stuck_source, where, marker, blocker))
    for item in recipe:
        time.sleep(3600)  # the workers go on to block; this consumer is killed meanwhile
"""


@pytest.mark.parametrize(
    "where, method",
    [("setup", "forkserver"), ("sleep", "fork"), ("lock", "fork"), ("c-call", "fork"), ("signals-blocked", "fork"),
     ("sleep", "forkserver"), ("lock", "spawn"), ("c-call-holding-the-gil", "fork"),
     ("c-call-holding-the-gil", "spawn")],
)
@pytest.mark.timeout(120)
def test_a_worker_stuck_anywhere_exits_soon_after_its_consumer_is_killed(where, method, tmp_path):
    marker = tmp_path / "markers"
    marker.mkdir()
    # (the consumer's TMPDIR: a short path, as the forkserver's socket under it must be shorter than 108 bytes,
    # which one under pytest's own temporary directory is not, in a pytest-xdist worker's)
    ipc = tempfile.mkdtemp(prefix="ipc-")
    script = "import sys\nsys.path.insert(0, {!r})\n".format(os.path.dirname(__file__)) + textwrap.dedent(
        STUCK_CONSUMER.format(where=where, marker=str(marker), method=method)
    )
    consumer = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                                env=dict(os.environ, TMPDIR=ipc))
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(marker)) < 2 and time.monotonic() < deadline:
            assert consumer.poll() is None, "the consumer ended"
            time.sleep(0.05)
        pids = [int(name.split("-")[1]) for name in os.listdir(marker)]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        consumer.kill()
        consumer.wait()
        killed = time.monotonic()
        while any(alive(p) for p in pids) and time.monotonic() < killed + 10:
            time.sleep(0.02)
        assert not any(alive(p) for p in pids), f"workers still alive {time.monotonic() - killed:.1f} s after their consumer died"
        print(f"[{where}, {method}: workers gone {time.monotonic() - killed:.2f} s after the consumer's death]")
        # the run's ipc directory goes too (removed by the worker's watcher or by the guardian right after it
        # kills the workers: wait for that, bounded)
        while [d for d in os.listdir(ipc) if d.startswith("pescador-")] and time.monotonic() < killed + 20:
            time.sleep(0.02)
        assert not [d for d in os.listdir(ipc) if d.startswith("pescador-")]
    finally:
        consumer.kill()
        consumer.wait()
        _kill_session(consumer.pid)
        shutil.rmtree(ipc, ignore_errors=True)


GROUP_CONSUMER = """
    import time, pescador, test_faults
    runs = [iter(pescador.zmq_offload(workers=2, start_method=m)(pescador.stream(test_faults.endless)))
            for m in ("fork", "forkserver", "spawn")]
    for run in runs:
        next(run)
    print("running", flush=True)
    time.sleep(3600)  # killed meanwhile, with its whole process group
"""


def _processes_mentioning(text):
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def _session(sid):
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(entry)) == sid and alive(int(entry)):
                found.append(int(entry))
        except OSError:
            pass
    return found


KILLED_BEFORE_THE_GUARDIAN_WATCHES = """
    import os, time, pescador, test_faults
    from pescador import zmq_stream
    marker, real, started = {marker!r}, zmq_stream._watch_worker, []

    def slow_watch(guardian, pid):  # the consumer is killed after worker 1 starts, before the guardian has it
        started.append(pid)
        if len(started) == 2:
            open(os.path.join(marker, "window"), "w").close()
            time.sleep(3600)
        real(guardian, pid)

    zmq_stream._watch_worker = slow_watch
    source = pescador.stream(test_faults.stuck_source, "c-call-holding-the-gil", marker)
    for item in pescador.zmq_offload(workers=2, start_method="fork")(source):
        time.sleep(3600)
"""


@pytest.mark.timeout(60)
def test_a_worker_started_but_not_yet_watched_when_its_consumer_dies_still_exits(tmp_path):
    """A consumer killed between a worker's start and the moment it hands the worker to its guardian: the
    worker has not run the user's code (which might hold the GIL for ever, where only the guardian can end
    the process), so its watcher ends it."""
    marker = tmp_path / "markers"
    marker.mkdir()
    header = "import sys\nsys.path.insert(0, {!r})\n".format(os.path.dirname(__file__))
    script = header + textwrap.dedent(KILLED_BEFORE_THE_GUARDIAN_WATCHES).format(marker=str(marker))
    consumer = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "window" not in os.listdir(marker) and time.monotonic() < deadline:
            assert consumer.poll() is None, "the consumer ended"
            time.sleep(0.05)
        assert "window" in os.listdir(marker)
        # (both workers stuck, or 3 s for the second to get there: it must not)
        deadline = time.monotonic() + 3
        while len([m for m in os.listdir(marker) if m.startswith("stuck-")]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [p for p in _session(consumer.pid) if p != consumer.pid]
        assert len(workers) == 2, workers
        consumer.kill()
        consumer.wait()
        killed = time.monotonic()
        while _session(consumer.pid) and time.monotonic() < killed + 10:
            time.sleep(0.05)
        assert not _session(consumer.pid), f"still alive {time.monotonic() - killed:.1f} s after their consumer died"
        assert len([m for m in os.listdir(marker) if m.startswith("stuck-")]) == 1  # (the second never began)
    finally:
        consumer.kill()
        consumer.wait()
        _kill_session(consumer.pid)

@pytest.mark.timeout(90)
def test_killing_the_consumers_whole_process_group_leaves_no_process_or_directory(tmp_path):
    """What a Jupyter kernel restart does (``setsid python script.py``, then ``kill -KILL -PGID``): the
    consumer, its workers, the forkserver, everything in the group dies at once; under every start method
    the run's ipc directory goes, and nothing of the runs is left."""
    script = "import sys\nsys.path.insert(0, {!r})\n".format(os.path.dirname(__file__)) + textwrap.dedent(GROUP_CONSUMER)
    consumer = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE,
                                text=True, env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        assert consumer.stdout.readline() == "running\n"  # (bounded by the test's timeout)
        assert len([d for d in os.listdir(tmp_path) if d.startswith("pescador-")]) == 3
        os.killpg(consumer.pid, signal.SIGKILL)
        consumer.wait()
        killed = time.monotonic()
        while time.monotonic() < killed + 10 and (
            [d for d in os.listdir(tmp_path) if d.startswith("pescador-")] or _session(consumer.pid)
            or _processes_mentioning(str(tmp_path))
        ):
            time.sleep(0.05)
        assert not [d for d in os.listdir(tmp_path) if d.startswith("pescador-")]
        assert not _session(consumer.pid) and not _processes_mentioning(str(tmp_path))
    finally:
        consumer.kill()
        consumer.wait()
        consumer.stdout.close()
        _kill_session(consumer.pid)
        for pid in _processes_mentioning(str(tmp_path)):  # (a guardian, in a session of its own)
            os.kill(pid, signal.SIGKILL)


STARTING_CONSUMER = """
    import pescador, test_faults
    print("asking", flush=True)
    for item in pescador.zmq_offload(workers=2, start_method={method!r})(pescador.stream(test_faults.endless)):
        pass
"""


@pytest.mark.parametrize("whom", ["group", "consumer"])
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.timeout(90)
def test_a_consumer_killed_while_its_run_starts_leaves_no_process_or_directory(method, whom, short_tmp):
    """A consumer killed (alone, or with its whole process group) 0, 0.05, 0.1 and 0.2 s after it asks
    for a run, while the run makes its directory and starts its workers (and, under forkserver,
    multiprocessing's forkserver with its own ``pymp-*`` directory): nothing of the run is left."""
    header = "import sys\nsys.path.insert(0, {!r})\n".format(os.path.dirname(__file__))
    script = header + textwrap.dedent(STARTING_CONSUMER).format(method=method)
    moments = {moment: short_tmp / f"at-{moment}" for moment in (0, 0.05, 0.1, 0.2)}
    consumers = {}

    def kill_at(moment, consumer):
        if consumer.stdout.readline() == "asking\n":
            time.sleep(moment)
        if whom == "group":
            os.killpg(consumer.pid, signal.SIGKILL)
        else:
            consumer.kill()
        consumer.wait()

    try:
        for moment, tmp in moments.items():  # (one consumer per moment, side by side, each in its TMPDIR)
            tmp.mkdir()
            consumers[moment] = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                                                 stdout=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=str(tmp)))
        killers = [threading.Thread(target=kill_at, args=item) for item in consumers.items()]
        for killer in killers:
            killer.start()
        for killer in killers:
            killer.join()

        def left():
            return {moment: (os.listdir(tmp), _session(consumers[moment].pid), _processes_mentioning(str(tmp)))
                    for moment, tmp in moments.items()}

        killed = time.monotonic()
        while time.monotonic() < killed + 10 and any(any(what) for what in left().values()):
            time.sleep(0.05)
        assert left() == {moment: ([], [], []) for moment in moments}
    finally:
        for consumer in consumers.values():
            consumer.kill()
            consumer.wait()
            consumer.stdout.close()
            _kill_session(consumer.pid)
        for tmp in moments.values():
            for pid in _processes_mentioning(str(tmp)):  # (a guardian, in a session of its own)
                os.kill(pid, signal.SIGKILL)


DIES_AS_PYMP_IS_MADE = """
    import os, signal, pescador, test_faults
    real_mkdir = os.mkdir
    def mkdir(path, *args, **kwargs):  # (tempfile's mkdtemp, which multiprocessing uses, calls os.mkdir too)
        real_mkdir(path, *args, **kwargs)
        if os.path.basename(path).startswith("pymp-"):
            os.kill(os.getpid(), signal.SIGKILL)  # the worst instant: the directory is there, nothing else is
    os.mkdir = mkdir
    for item in pescador.zmq_offload(workers=2, start_method="forkserver")(pescador.stream(test_faults.endless)):
        pass
"""


@pytest.mark.timeout(60)
def test_a_consumer_killed_the_instant_the_forkserver_directory_exists_leaves_nothing(short_tmp):
    """Under forkserver a run makes multiprocessing's ``pymp-*`` directory; killed the instant after,
    the consumer leaves it to the guardian, which was told its name before it was made."""
    header = "import sys\nsys.path.insert(0, {!r})\n".format(os.path.dirname(__file__))
    consumer = subprocess.Popen([sys.executable, "-c", header + textwrap.dedent(DIES_AS_PYMP_IS_MADE)],
                                start_new_session=True, env=dict(os.environ, TMPDIR=str(short_tmp)))
    try:
        consumer.wait(timeout=40)
        assert consumer.returncode == -signal.SIGKILL  # (it died where it was meant to)
        killed = time.monotonic()
        while time.monotonic() < killed + 10 and os.listdir(short_tmp):
            time.sleep(0.05)
        assert os.listdir(short_tmp) == []
    finally:
        consumer.kill()
        consumer.wait()
        _kill_session(consumer.pid)
        for pid in _processes_mentioning(str(short_tmp)):  # (a guardian, in a session of its own)
            os.kill(pid, signal.SIGKILL)


def cleans_up(marker, how):
    """A source that starts a helper process and stops it in its ``finally``, then marks that it did."""
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], stdout=subprocess.DEVNULL)
    try:  # (the marker appears inside the try, whole: the consumer stops only once both workers are in it)
        with open(os.path.join(marker, f".helper-{os.getpid()}"), "w") as f:
            f.write(str(helper.pid))
        os.rename(os.path.join(marker, f".helper-{os.getpid()}"), os.path.join(marker, f"helper-{os.getpid()}"))
        i = 0
        while True:
            yield {"i": np.array([i])}
            i += 1
            if how == "sleep" and i == 2:
                time.sleep(3600)  # blocked when the consumer stops
    finally:
        helper.kill()
        helper.wait()
        with open(os.path.join(marker, f"finally-{os.getpid()}"), "w"):
            pass


EARLY_STOP = """
    import json, os, time, pescador, test_faults
    marker, how, method = {marker!r}, {how!r}, {method!r}
    recipe = pescador.zmq_offload(workers=2, timeout=30, start_method=method)(pescador.stream(test_faults.cleans_up, marker, how))
    for n, item in enumerate(recipe):
        if n >= 2 and len([m for m in os.listdir(marker) if m.startswith("helper-")]) == 2:
            if how == "sleep":
                time.sleep(0.5)  # (both workers reach their sleep)
            break
    print(json.dumps(sorted(os.listdir(marker))))
"""


@pytest.mark.parametrize("how", ["break", "sleep"], ids=["between-items", "blocked-in-sleep"])
@pytest.mark.parametrize("method", ["fork", "forkserver"])
@pytest.mark.timeout(120)
def test_a_sources_finally_runs_when_the_consumer_stops_early(how, method, tmp_path):
    """On early stop the source is closed (GeneratorExit) or unwound (SIGTERM interrupts its sleep),
    well before the 30 s ``timeout``: its ``finally`` runs and stops the helper process it started."""
    marker = tmp_path / "markers"
    marker.mkdir()
    start = time.monotonic()
    finished, out = run_consumer(EARLY_STOP.format(marker=str(marker), how=how, method=method), 100)
    assert finished, out
    assert time.monotonic() - start < 30  # not killed after the timeout: stopped gracefully
    names = os.listdir(marker)
    helpers = [n for n in names if n.startswith("helper-")]
    assert len(helpers) == 2, names
    for name in helpers:
        pid = name.split("-")[1]
        assert f"finally-{pid}" in names, f"worker {pid}'s finally did not run: {names}"
        helper_pid = int((marker / name).read_text())
        assert not alive(helper_pid)


def exits_right_after(n, how):
    """``n`` items, then an abrupt death with no pause (the last items may still be in the worker)."""
    for i in range(n):
        yield {"i": np.array([i])}
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(7)


@pytest.mark.parametrize("how", ["sigkill", "os._exit"])
@pytest.mark.parametrize("n", [1, 50, 2000])
def test_an_abrupt_death_reports_exactly_what_the_consumer_received(n, how):
    got = []
    with pytest.raises(PescadorError) as info:
        for item in zmq_offload()(stream(exits_right_after, n, how)):
            got.append(int(item["i"][0]))
    message = str(info.value)
    assert ("killed by signal SIGKILL" if how == "sigkill" else "exited with code 7") in message
    assert got == list(range(len(got)))  # a prefix: nothing duplicated, nothing out of order
    assert f"the consumer received {len(got)} items from it" in message, (len(got), message)
    assert not live_children()


def raises_right_after(n):
    w = pescador.worker_info().id
    for i in range(n):
        yield {"w": np.array([w]), "i": np.array([i])}
    raise KeyError(f"after {n}")


@pytest.mark.parametrize("n", [1, 50, 2000])
def test_an_exception_right_after_the_last_yield_arrives_after_every_item(n):
    got = collections.defaultdict(list)
    with pytest.raises(KeyError) as info:
        for item in zmq_offload(workers=2)(stream(raises_right_after, n)):
            got[int(item["w"][0])].append(int(item["i"][0]))
    assert info.value.args == (f"after {n}",)
    message = str(info.value.__cause__)  # the worker's traceback, in a pescador.WorkerError
    assert f"KeyError: 'after {n}'" in message
    worker = int(message.split("worker ")[1].split()[0])
    assert got[worker] == list(range(n))  # every item the raising worker yielded, in order, before its error
    assert f"after sending {n} items" in message
    assert not live_children()
