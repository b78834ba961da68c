"""Remote producers: serve() and remote(), CURVE keys, faults; across network namespaces."""

import collections
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import pytest
import zmq

import pescador
from pescador import PescadorError, buffer
from pescador.remote import InsecureWarning, ProducerWarning, RemoteStatus, make_keys, remote, serve

sys.path.insert(0, os.path.dirname(__file__))
import netns  # noqa: E402

pytestmark = pytest.mark.timeout(90)
TESTS = os.path.dirname(os.path.abspath(__file__))


def tagged(tag, n=None):
    i = 0
    while n is None or i < n:
        yield {"tag": np.array([tag]), "i": np.array([i]), "X": np.full((1, 4), i, dtype=np.float32)}
        i += 1


def keys_of(items):
    return [(int(x["tag"][0]), int(x["i"][0])) for x in items]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def keys(tmp_path):
    """Key pairs: two producers, a consumer, and a stranger."""
    return {name: make_keys(tmp_path / "keys", name) for name in ("p1", "p2", "consumer", "stranger")}


def serving(*args, **kwargs):
    thread = threading.Thread(target=serve, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def private_dir():
    """A short directory of mode 0700 (ipc paths are limited to 107 bytes, so not tmp_path)."""
    path = tempfile.mkdtemp(prefix="pesc")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def until(condition, timeout=60.0, what="the condition"):
    """Wait for an event (polling), failing after a generous timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def tcp_sockets(port):
    """(local port, remote port, state) of this machine's TCP sockets on ``port`` (states in hex, as in /proc)."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, remote_, state = line.split()[1:4]
            local, remote_ = int(local.rsplit(":", 1)[1], 16), int(remote_.rsplit(":", 1)[1], 16)
            if port in (local, remote_):
                found.append((local, remote_, state))
    return found


def listening(port):
    return any(local == port and state == "0A" for local, _, state in tcp_sockets(port))


def connected_to(port):
    """A connection to ``port`` is established (the kernel completes it even while the listener sleeps)."""
    return any(remote_ == port and state == "01" for _, remote_, state in tcp_sockets(port))


def gated(gate, n):
    gate.wait(60)
    yield from tagged(5, n)


def state_of(status, endpoint):
    return status.producers.get(endpoint, {}).get("state")


# -- on one machine -----------------------------------------------------------------------


def test_ipc_in_a_private_directory_delivers_every_item_in_order(private_dir):
    endpoint = f"ipc://{private_dir}/producer"
    thread = serving(pescador.stream(tagged, 1, 2000), endpoint)
    status = RemoteStatus()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no keys, no warning: the directory keeps others out
        out = keys_of(remote(endpoint, status=status))
    thread.join(30)
    assert out == [(1, i) for i in range(2000)]
    assert status.producers[endpoint]["state"] == "ended" and status.producers[endpoint]["items"] == 2000


@pytest.mark.timeout(30)
def test_a_resumable_run_over_a_remote_stream_is_refused_at_once_by_name(private_dir):
    source = remote(f"ipc://{private_dir}/nobody")  # (nothing serves there: a run would wait for grace)
    for recipe in (source, pescador.take(5)(source), pescador.zmq_offload()(source),
                   pescador.tuples("x")(source), pescador.measure(pescador.Meter())(source)):
        with pytest.raises(PescadorError) as info:
            pescador.resumable(recipe)  # refused when built, before any run starts
        assert "stream(_remote" in str(info.value) and "nobody" in str(info.value)
        assert "cannot be resumed" in str(info.value) and "producers" in str(info.value)


def test_plain_tcp_on_loopback_is_refused_unless_insecure_and_then_warns():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(PescadorError, match="open to every user of this machine.*ipc:///DIR/NAME"):
        remote(endpoint)
    with pytest.raises(PescadorError, match="open to every user of this machine"):
        serve(pescador.stream(tagged, 1, 10), endpoint)
    with pytest.warns(InsecureWarning, match="every user of this machine"):
        thread = serving(pescador.stream(tagged, 1, 300), endpoint, insecure=True)
        out = keys_of(remote(endpoint, insecure=True))
    thread.join(30)
    assert out == [(1, i) for i in range(300)]


def test_an_ipc_directory_that_others_can_enter_is_refused():
    shared = tempfile.mkdtemp(prefix="pesc")
    try:
        os.chmod(shared, 0o755)
        endpoint = f"ipc://{shared}/producer"
        with pytest.raises(PescadorError, match="has mode 755, so other users can enter it"):
            serve(pescador.stream(tagged, 1, 10), endpoint)
        with pytest.raises(PescadorError, match="has mode 755"):
            list(remote(endpoint))
        with pytest.raises(PescadorError, match="is not there.*mkdir -m 700"):
            list(remote(f"ipc://{shared}/missing/producer"))
        with pytest.warns(InsecureWarning, match="has mode 755"):
            thread = serving(pescador.stream(tagged, 1, 20), endpoint, insecure=True)
            assert len(list(remote(endpoint, insecure=True))) == 20
        thread.join(30)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _connect_as(uid, path):
    """In a child process running as user ``uid``: the errno of connecting to the Unix socket ``path`` (0: it could)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # (the child only connects a socket and exits)
        code = 0
        try:
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
        except OSError as exc:
            code = exc.errno or 255
        os.write(write, str(code).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as answer:
        return int(answer.read())


@pytest.mark.skipif(os.geteuid() != 0, reason="trying as another user needs root (to become that user)")
def test_another_user_cannot_connect_to_a_default_producer(private_dir):
    endpoint = f"ipc://{private_dir}/producer"
    gate = threading.Event()
    serving(pescador.stream(gated, gate, 500), endpoint)
    until(lambda: os.path.exists(f"{private_dir}/producer"), what="the producer to bind")
    # the stranger tries first, while the producer waits with its items ready
    assert _connect_as(65534, f"{private_dir}/producer") == errno.EACCES
    gate.set()
    assert keys_of(remote(endpoint)) == [(5, i) for i in range(500)]


def test_a_stranger_with_no_keys_gets_nothing_from_a_loopback_producer_with_keys(keys):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    context = zmq.Context()
    stranger = context.socket(zmq.PULL)
    stranger.connect(endpoint)  # connected first: it keeps trying while the producer runs
    try:
        gate = threading.Event()
        serving(pescador.stream(gated, gate, 500), endpoint, key=keys["p1"][1], authorized=keys["consumer"][0])
        until(lambda: listening(port), what="the producer to listen")
        gate.set()
        out = keys_of(remote(endpoint, key=keys["consumer"][1], producer_keys=keys["p1"][0]))
        assert out == [(5, i) for i in range(500)]
        assert stranger.poll(0) == 0  # the stranger's handshake never succeeds: nothing reached it
    finally:
        stranger.close(linger=0)
        context.term()


def taken_until_the_end(sock):
    """Everything a raw PULL socket receives up to the end of stream: the items, then the END."""
    taken = []
    while True:
        kind, payload = pescador.wire.decode(sock.recv_multipart())
        if kind == pescador.wire.END:
            return taken + [None]
        taken += payload[0] if kind == pescador.wire.BATCH else [payload]


def test_a_consumer_that_receives_nothing_says_so_within_grace():
    """With insecure=True a stranger can connect first and take every item, the end included."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    stranger = context.socket(zmq.PULL)
    stranger.connect(endpoint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureWarning)
            thread = serving(pescador.stream(tagged, 1, 50), endpoint, insecure=True)
            taken = taken_until_the_end(stranger)  # 50 items (sharing messages or not) and the end
            status = RemoteStatus()
            with pytest.warns(ProducerWarning, match="connected for 2 s and sent nothing.*another consumer"):
                with pytest.raises(PescadorError, match="(?s)no producer has been delivering for 2 s.*silent"):
                    list(remote(endpoint, insecure=True, grace=2, status=status))
        assert len(taken) == 51 and status.producers[endpoint]["state"] == "silent"
    finally:
        stranger.close(linger=0)
        context.term()
    thread.join(30)
    assert not thread.is_alive()  # (the producer ends once the stranger has gone)


@pytest.mark.parametrize("n", [40, 41])  # (the items alternate: one count or the other gives the end to the other)
def test_a_second_consumer_connected_during_the_run_also_receives_an_end(n):
    """Consumers share a producer's items in turn; each gets an end of stream, none waits forever."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    other = context.socket(zmq.PULL)
    other_monitor = other.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    other.connect(endpoint)
    status = RemoteStatus()
    gate = threading.Event()

    def open_the_gate():  # once both consumers are connected
        other_monitor.poll(60_000)
        until(lambda: state_of(status, endpoint) == "connected", what="the consumer")
        gate.set()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureWarning)
            thread = serving(pescador.stream(gated, gate, n), endpoint, insecure=True)
            threading.Thread(target=open_the_gate, daemon=True).start()
            mine = [i for _, i in keys_of(remote(endpoint, insecure=True, status=status))]
        assert mine == sorted(set(mine)) and 0 < len(mine) < n and state_of(status, endpoint) == "ended"
    finally:
        other_monitor.close(linger=0)
        other.close(linger=0)
        context.term()
    thread.join(30)


def test_curve_on_loopback_and_the_remote_stream_composes(keys):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    serving(pescador.stream(tagged, 2, 640), endpoint, key=keys["p1"][1], authorized=keys["consumer"][0])
    source = remote(endpoint, key=keys["consumer"][1], producer_keys=keys["p1"][0])
    batches = list(buffer(64)(source))
    assert len(batches) == 10 and batches[-1]["i"][-1] == 639


def big(tag):
    i = 0
    while True:
        yield {"tag": np.array([tag]), "i": np.array([i]), "X": np.zeros(1 << 18, dtype=np.float32)}  # 1 MiB
        i += 1


def test_a_slow_consumer_loses_nothing_however_long_its_queue_stays_full(private_dir):
    endpoint = f"ipc://{private_dir}/producer"
    serving(pescador.stream(big, 4), endpoint)
    status = RemoteStatus()
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProducerWarning)  # nothing may be reported lost
        for item in remote(endpoint, status=status, hwm=2):
            got.append(int(item["i"][0]))
            time.sleep(0.05)  # a slow training step: the queues stay full
            if len(got) == 60:
                break
    assert got == list(range(60))
    assert status.producers[endpoint]["state"] == "connected"


def raising(n):
    for i in range(n):
        yield {"i": np.array([i])}
    raise ValueError("the source broke")


def test_a_producer_whose_recipe_raises_reports_it_to_both_sides(private_dir):
    endpoint = f"ipc://{private_dir}/producer"
    raised = []

    def run():
        try:
            serve(pescador.stream(raising, 3), endpoint)
        except ValueError as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    status = RemoteStatus()
    got = []
    with pytest.warns(ProducerWarning, match="(?s)failed; its traceback.*ValueError: the source broke"):
        with pytest.raises(ValueError, match="the source broke") as info:  # a built-in type: rebuilt
            for item in remote(endpoint, status=status):
                got.append(int(item["i"][0]))
    assert f"remote: producer {endpoint} raised ValueError" in str(info.value.__cause__)
    assert "in raising" in info.value.__cause__.traceback_text  # the producer's frames
    thread.join(30)
    assert not thread.is_alive() and raised and got == [0, 1, 2]
    assert status.producers[endpoint]["state"] == "failed"


def test_ipv6_loopback(keys):
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = probe.getsockname()[1]
    endpoint = f"tcp://[::1]:{port}"
    serving(pescador.stream(tagged, 4, 50), endpoint, key=keys["p1"][1], authorized=keys["consumer"][0])
    out = keys_of(remote(endpoint, key=keys["consumer"][1], producer_keys=keys["p1"][0]))
    assert out == [(4, i) for i in range(50)]


def test_offload_workers_each_read_their_share_of_the_producers(private_dir):
    endpoints = [f"ipc://{private_dir}/p{n}" for n in range(2)]
    for tag, endpoint in enumerate(endpoints):
        serving(pescador.stream(tagged, tag, 400), endpoint)
    out = keys_of(pescador.zmq_offload(workers=2)(remote(*endpoints)))
    assert collections.Counter(out) == collections.Counter([(t, i) for t in range(2) for i in range(400)])


def producer_process(args, bind, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "pescador", "serve", "test_remote:tagged", *map(str, args), "--bind", bind, *extra],
        env=dict(os.environ, PYTHONPATH=TESTS), stderr=subprocess.DEVNULL,
    )


def test_status_follows_a_producer_that_dies_and_comes_back_while_another_keeps_sending(private_dir):
    endpoints = [f"ipc://{private_dir}/p{n}" for n in range(2)]
    procs = [producer_process([1], endpoints[0]), producer_process([2], endpoints[1])]
    status = RemoteStatus()
    seen = collections.Counter()
    phase = "both"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for item in remote(*endpoints, status=status, grace=60):  # (each phase waits for its event; bounded by the mark)
                seen[int(item["tag"][0])] += 1
                if phase == "both" and seen[1] >= 100 and seen[2] >= 100:
                    procs[0].kill()
                    procs[0].wait()
                    phase = "killed"
                elif phase == "killed" and state_of(status, endpoints[0]) == "lost":
                    procs[0] = producer_process([1], endpoints[0])
                    phase = "restarted"
                elif phase == "restarted" and state_of(status, endpoints[0]) == "connected":
                    seen.clear()
                    phase = "back"
                elif phase == "back" and seen[1] >= 100 and seen[2] >= 100:
                    break
        assert phase == "back"
        assert any(f"{endpoints[0]} lost" in str(w.message) for w in caught)
        assert not any("refused" in str(w.message) for w in caught)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def curve_producer(keys, tag, port, name="p1"):
    return producer_process([tag], f"tcp://127.0.0.1:{port}", "--key", str(keys[name][1]),
                            "--authorized", str(keys["consumer"][0]))


def test_a_producer_killed_during_the_handshake_is_lost_not_refused(keys):
    """The worst moment: the consumer's connection is open, the producer has not answered it yet, and dies."""
    ports = [free_port(), free_port()]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    doomed, other = curve_producer(keys, 1, ports[0]), curve_producer(keys, 2, ports[1], "p2")
    try:
        until(lambda: listening(ports[0]) and listening(ports[1]), what="the producers to listen")
        doomed.send_signal(signal.SIGSTOP)  # its kernel still completes connections; it answers none

        def kill_in_the_handshake():
            until(lambda: connected_to(ports[0]), what="the consumer's connection")
            doomed.kill()

        threading.Thread(target=kill_in_the_handshake, daemon=True).start()
        status = RemoteStatus()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            source = remote(*endpoints, key=keys["consumer"][1], producer_keys=[keys["p1"][0], keys["p2"][0]],
                            status=status, grace=60)
            for _ in source:  # the other producer keeps the stream going; bounded by the mark
                if state_of(status, endpoints[0]) != "connecting":
                    break
        assert state_of(status, endpoints[0]) == "lost", status
        assert any(f"{endpoints[0]} went away during the handshake" in str(w.message) for w in caught)
        assert not any("refused" in str(w.message) for w in caught)
    finally:
        for proc in (doomed, other):
            proc.kill()
            proc.wait()


def test_a_producer_that_does_not_answer_the_handshake_is_slow_and_read_once_it_answers(keys):
    ports = [free_port(), free_port()]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    sleeper, other = curve_producer(keys, 1, ports[0]), curve_producer(keys, 2, ports[1], "p2")
    try:
        until(lambda: listening(ports[0]) and listening(ports[1]), what="the producers to listen")
        sleeper.send_signal(signal.SIGSTOP)
        status = RemoteStatus()
        states = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            source = remote(*endpoints, key=keys["consumer"][1], producer_keys=[keys["p1"][0], keys["p2"][0]],
                            status=status, grace=3)
            for item in source:  # (waits for each event; bounded by the mark)
                state = state_of(status, endpoints[0])
                if not states or states[-1] != state:
                    states.append(state)
                if state == "slow" and "cont" not in states:
                    sleeper.send_signal(signal.SIGCONT)
                    states.append("cont")
                if int(item["tag"][0]) == 1:
                    break
        assert states[:3] == ["connecting", "slow", "cont"] and states[-1] == "connected", states
        assert any(f"{endpoints[0]} has not finished the handshake within 3 s" in str(w.message) for w in caught)
        assert not any("refused" in str(w.message) or " lost" in str(w.message) for w in caught)
    finally:
        for proc in (sleeper, other):
            proc.kill()
            proc.wait()


def read_until_the_first_is_refused(endpoints, keys):
    """Read from producers p1 (at endpoints[0]) and p2 until p1 is reported refused (bounded by the
    test's timeout); returns the tags read and the status."""
    status = RemoteStatus()
    tags = collections.Counter()
    for item in remote(*endpoints, key=keys["consumer"][1], producer_keys=[keys["p1"][0], keys["p2"][0]],
                       status=status):
        tags[int(item["tag"][0])] += 1
        if state_of(status, endpoints[0]) == "refused":  # (wait for the event itself)
            break
    return tags, status


def test_a_producer_with_the_wrong_key_on_loopback_is_refused_as_such(keys):
    ports = [free_port(), free_port()]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    serving(pescador.stream(tagged, 1), endpoints[0], key=keys["stranger"][1], authorized=keys["consumer"][0])
    serving(pescador.stream(tagged, 2), endpoints[1], key=keys["p2"][1], authorized=keys["consumer"][0])
    with pytest.warns(ProducerWarning, match="closes the connection during the handshake on every attempt: its key"):
        tags, status = read_until_the_first_is_refused(endpoints, keys)
    assert set(tags) == {2} and state_of(status, endpoints[0]) == "refused"


def test_keys_on_one_side_only_is_refused_as_such(keys):
    """Whichever side notices the mismatch first: the consumer (a protocol error) or the producer (it hangs up)."""
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureWarning)
        serving(pescador.stream(tagged, 1), endpoints[0], insecure=True)
    serving(pescador.stream(tagged, 2), endpoints[1], key=keys["p2"][1], authorized=keys["consumer"][0])
    with pytest.warns(ProducerWarning, match="one side uses keys and the other does not|or it serves without keys"):
        tags, status = read_until_the_first_is_refused(endpoints, keys)
    assert set(tags) == {2} and state_of(status, endpoints[0]) == "refused"


def test_keys_and_endpoints_are_checked(keys, tmp_path):
    with pytest.raises(PescadorError, match="tcp://HOST:PORT"):
        remote("udp://1.2.3.4:5")
    with pytest.raises(PescadorError, match="must be ipc:///ABSOLUTE/DIR/NAME"):
        remote("ipc://relative/producer")
    with pytest.raises(PescadorError, match="Unix sockets allow at most 107"):
        remote("ipc:///" + "d" * 120 + "/producer")
    with pytest.raises(PescadorError, match="at least one endpoint"):
        remote()
    with pytest.raises(PescadorError, match="must be tcp://HOST:PORT"):
        remote("tcp://127.0.0.2@127.0.0.1:47001")
    with pytest.raises(PescadorError, match="tcp://10.9.9.9:5555 is not loopback, so it needs keys"):
        remote("tcp://10.9.9.9:5555")
    with pytest.raises(PescadorError, match="not loopback, so it needs keys"):
        serve([{"x": 1}], "tcp://0.0.0.0:5555")
    with pytest.raises(PescadorError, match="holds no secret key"):
        list(remote("tcp://127.0.0.1:1", key=keys["consumer"][0], producer_keys=keys["p1"][0]))
    with pytest.raises(PescadorError, match="cannot read the key file"):
        list(remote("tcp://127.0.0.1:1", key=tmp_path / "missing", producer_keys=keys["p1"][0]))
    with pytest.raises(PescadorError, match="producer_keys has 2 entries for 1 endpoints"):
        list(remote("tcp://127.0.0.1:1", key=keys["consumer"][1], producer_keys=[keys["p1"][0]] * 2))


def test_the_keys_command_writes_a_private_pair(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pescador", "keys", str(tmp_path / "k"), "trainer"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k" / "trainer.key").exists()
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "k" / "trainer.key_secret").st_mode & 0o777 == 0o600


def test_the_serve_command_on_one_machine(private_dir):
    endpoint = f"ipc://{private_dir}/producer"
    producer = producer_process([7, 300], endpoint)
    try:
        assert keys_of(remote(endpoint, grace=60)) == [(7, i) for i in range(300)]
        assert producer.wait(30) == 0
    finally:
        producer.kill()
        producer.wait()
    bad = subprocess.run([sys.executable, "-m", "pescador", "serve", "nowhere:gen", "--bind", "tcp://127.0.0.1:1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot import 'nowhere'" in bad.stderr
    plain = subprocess.run([sys.executable, "-m", "pescador", "serve", "test_remote:tagged", "7", "--bind",
                            "tcp://127.0.0.1:1"], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=TESTS))
    assert plain.returncode == 2 and "open to every user of this machine" in plain.stderr


# -- across hosts (network namespaces joined by veth links) ------------------------------

REASON = netns.available()
across_hosts = pytest.mark.skipif(REASON is not None, reason=f"no network namespaces: {REASON}")


def produce(hosts, i, tag, n, keys, producer_key, port=5555, insecure=False, authorized="consumer"):
    argv = [sys.executable, "-m", "pescador", "serve", "test_remote:tagged", str(tag), str(n),
            "--bind", f"tcp://{hosts.addresses[i]}:{port}"]
    if insecure:
        argv.append("--insecure")
    else:
        argv += ["--key", str(keys[producer_key][1]), "--authorized", str(keys[authorized][0])]
    return hosts.run(i, argv, env=dict(os.environ, PYTHONPATH=TESTS), stderr=subprocess.DEVNULL)


@across_hosts
def test_two_producers_feed_one_consumer(keys):
    with netns.Hosts(2, "a") as hosts:
        produce(hosts, 0, 1, 3000, keys, "p1")
        produce(hosts, 1, 2, 2000, keys, "p2")
        status = RemoteStatus()
        source = remote(*(f"tcp://{a}:5555" for a in hosts.addresses), key=keys["consumer"][1],
                        producer_keys=[keys["p1"][0], keys["p2"][0]], status=status, grace=60)
        out = keys_of(source)
        per = collections.defaultdict(list)
        for tag, i in out:
            per[tag].append(i)
        assert per[1] == list(range(3000)) and per[2] == list(range(2000))
        assert {v["state"] for v in status.producers.values()} == {"ended"}


@across_hosts
def test_a_producer_killed_mid_run_is_reported_and_the_other_carries_on(keys):
    with netns.Hosts(2, "b") as hosts:
        doomed = produce(hosts, 0, 1, 10**9, keys, "p1")
        produce(hosts, 1, 2, 10**9, keys, "p2")
        status = RemoteStatus()
        source = remote(*(f"tcp://{a}:5555" for a in hosts.addresses), key=keys["consumer"][1],
                        producer_keys=[keys["p1"][0], keys["p2"][0]], status=status, grace=60)
        first = f"tcp://{hosts.addresses[0]}:5555"
        per = collections.defaultdict(list)
        after_lost = collections.Counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for n, item in enumerate(source):  # (each step waits for its event; bounded by the mark)
                tag, i = int(item["tag"][0]), int(item["i"][0])
                per[tag].append(i)
                if len(per[1]) >= 1000 and len(per[2]) >= 1000 and doomed.poll() is None:
                    doomed.kill()  # (once both deliver: a producer never connected could not be lost)
                if state_of(status, first) == "lost":
                    after_lost[tag] += 1  # (tag 1: only what was already queued here when it went)
                    if after_lost[2] >= 2000:
                        break
        assert state_of(status, first) == "lost", status
        assert any(issubclass(w.category, ProducerWarning) and f"{first} lost" in str(w.message) for w in caught)
        assert not any("refused" in str(w.message) for w in caught)
        assert per[1] == list(range(len(per[1]))) and per[2] == list(range(len(per[2])))  # none lost or doubled
        assert after_lost[1] <= 32 and after_lost[2] >= 2000  # (32: the consumer's queue, hwm)


@across_hosts
def test_a_producer_with_the_wrong_key_is_refused(keys):
    with netns.Hosts(2, "c") as hosts:
        produce(hosts, 0, 1, 10**9, keys, "stranger")  # not the key the consumer expects
        produce(hosts, 1, 2, 10**9, keys, "p2")
        status = RemoteStatus()
        endpoints = [f"tcp://{a}:5555" for a in hosts.addresses]
        tags = collections.Counter()
        with pytest.warns(ProducerWarning, match="during the handshake on every attempt: its key is not the one"):
            for item in remote(*endpoints, key=keys["consumer"][1], producer_keys=[keys["p1"][0], keys["p2"][0]],
                               status=status, grace=60):
                tags[int(item["tag"][0])] += 1
                if state_of(status, endpoints[0]) == "refused":  # (wait for the event; bounded by the mark)
                    break
        assert set(tags) == {2} and state_of(status, endpoints[0]) == "refused"
        # alone, a refused producer fails the stream after the grace period
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(PescadorError, match="no producer has been delivering for 2 s"):
                list(remote(endpoints[0], key=keys["consumer"][1], producer_keys=keys["p1"][0], grace=2))


@across_hosts
def test_a_consumer_with_an_unknown_key_is_refused_by_the_producer(keys):
    with netns.Hosts(2, "d") as hosts:
        produce(hosts, 0, 1, 10**9, keys, "p1")  # accepts only "consumer"
        produce(hosts, 1, 2, 10**9, keys, "p2", authorized="stranger")
        endpoints = [f"tcp://{a}:5555" for a in hosts.addresses]
        status = RemoteStatus()
        with pytest.warns(ProducerWarning, match="refused this consumer's key \\(ZAP status 400\\)"):
            for _ in remote(*endpoints, key=keys["stranger"][1], producer_keys=[keys["p1"][0], keys["p2"][0]],
                            status=status, grace=60):
                if state_of(status, endpoints[0]) == "refused":  # (wait for the event; bounded by the mark)
                    break
        assert state_of(status, endpoints[0]) == "refused"


@across_hosts
def test_plain_tcp_beyond_loopback_needs_insecure_and_warns(keys):
    with netns.Hosts(1, "e") as hosts:
        produce(hosts, 0, 3, 100, keys, None, insecure=True)
        endpoint = f"tcp://{hosts.addresses[0]}:5555"
        with pytest.raises(PescadorError, match="needs keys"):
            remote(endpoint)
        with pytest.warns(InsecureWarning, match="plain TCP"):
            assert len(list(remote(endpoint, insecure=True, grace=60))) == 100


# -- several items to a message -----------------------------------------------------------


@pytest.mark.parametrize("batch_wait", [0, 0.001, 10])
def test_items_that_share_messages_arrive_in_order_and_are_counted(private_dir, batch_wait, monkeypatch):
    kinds = []
    decode = pescador.wire.decode
    monkeypatch.setattr(pescador.wire, "decode", lambda frames, copy=False: kinds.append(decode(frames, copy)[0])
                        or decode(frames, copy))
    endpoint = f"ipc://{private_dir}/producer"
    thread = serving(pescador.stream(tagged, 1, 5000), endpoint, batch_wait=batch_wait)
    status = RemoteStatus()
    out = keys_of(remote(endpoint, status=status))
    thread.join(30)
    assert out == [(1, i) for i in range(5000)]
    assert status.producers[endpoint]["items"] == 5000
    if batch_wait == 0:  # one message per item
        assert pescador.wire.BATCH not in kinds
    if batch_wait == 10:  # held until a message is full (1,024 items)
        assert 0 < kinds.count(pescador.wire.BATCH) < 20


def test_a_producer_whose_recipe_raises_sends_the_items_it_held_first(private_dir):
    endpoint = f"ipc://{private_dir}/producer"

    def run():
        with pytest.raises(ValueError):
            serve(pescador.stream(raising, 3000), endpoint, batch_wait=10)

    thread = threading.Thread(target=run)
    thread.start()
    got = []
    with pytest.warns(ProducerWarning):
        with pytest.raises(ValueError, match="the source broke"):
            for item in remote(endpoint):
                got.append(int(item["i"][0]))
    thread.join(30)
    assert got == list(range(3000))


def test_a_bad_batch_wait_is_refused_by_serve(private_dir):
    with pytest.raises(PescadorError, match="batch_wait must be a number of seconds from 0 to 10"):
        serve([{"i": np.array([0])}], f"ipc://{private_dir}/producer", batch_wait=-1)
