"""Guarantees under faults, bad input and hostile bytes (the README's "Guarantees").

Every test here is bounded in time: a hang fails fast instead of eating CI.
"""

import collections
import faulthandler
import os
import signal
import tempfile
import threading
import time
import tracemalloc

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
    with pytest.raises(PescadorError) as info:
        for item in recipe:
            got.append(int(item["i"][0]))
    assert time.monotonic() - start < 2.0 + 0.2  # (the source itself sleeps 0.2 s before dying)
    assert got == list(range(n))
    assert "worker 0" in str(info.value)
    assert not live_children()
    assert open_fds() == fds


def test_keyboard_interrupt_with_items_in_flight_then_a_new_run():
    recipe = zmq_offload(workers=2)(stream(endless))
    with pytest.raises(KeyboardInterrupt):
        for n, _ in enumerate(recipe):
            if n == 1000:
                os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed
                time.sleep(1.0)  # (the signal arrives here)
    assert not live_children()
    assert len(list(take(100, recipe))) == 100


# -- bad items into every combinator ------------------------------------------------------

BAD_ITEMS = [None, 3, [np.zeros(1)], {1: np.zeros(1)}]
COMBINATORS = {
    "buffer": lambda s: buffer(2)(s),
    "tuples": lambda s: tuples("x")(s),
    "keras_tuples": lambda s: keras_tuples("x")(s),
    "mux": lambda s: pescador.mux(1, 8.0, random_state=0)([s]),
    "stochastic_mux": lambda s: stochastic_mux(1, 8.0, random_state=0)([s]),
    "shuffled_mux": lambda s: shuffled_mux(random_state=0)([s]),
    "round_robin_mux": lambda s: round_robin_mux()([s]),
    "chain_mux": lambda s: chain_mux()([s]),
    "zmq_offload": lambda s: zmq_offload()(s),
}


@pytest.mark.parametrize("bad", BAD_ITEMS, ids=["None", "int", "list", "int-key"])
@pytest.mark.parametrize("name", sorted(COMBINATORS))
def test_an_item_that_is_not_a_dict_is_named_by_every_combinator(name, bad):
    recipe = COMBINATORS[name](stream(leading_good_then, bad))
    with pytest.raises(PescadorError) as info:
        list(take(10, recipe))
    message = str(info.value)
    assert name in message or "zmq_offload" in message or name == "zmq_offload"
    assert "item 1" in message
    received = "key 1 of type int" if isinstance(bad, dict) else type(bad).__name__
    assert received in message, message


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
    tracemalloc.start()
    try:
        decoded = decode(raw)
    except PescadorError:
        decoded = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 1024 + 8 * size  # bookkeeping only: never sized by the message's claims
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
        endpoint = "ipc://" + os.path.join(tmp_path, directory, "s")
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


def test_a_chattering_stranger_does_not_hide_a_dead_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    it = iter(zmq_offload(transport="ipc")(stream(dies_soon)))
    next(it)
    (directory,) = os.listdir(tmp_path)
    context = zmq.Context()
    stranger = context.socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect("ipc://" + os.path.join(tmp_path, directory, "s"))
    stop = threading.Event()

    def chatter():
        while not stop.is_set():
            stranger.send(b"hello")
            time.sleep(0.005)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        start = time.monotonic()
        with pytest.raises(PescadorError, match="killed by signal SIGKILL"):
            next(it)
        assert time.monotonic() - start < 2.0
    finally:
        stop.set()
        thread.join()
        stranger.close()
        context.term()


def _listening_ports():
    ports = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.startswith("0100007F:"):
                ports.append(int(local.split(":")[1], 16))
    return ports


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
