"""Remote producers: serve() and remote(), CURVE keys, faults; across network namespaces."""

import collections
import os
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import pescador
from pescador import PescadorError, buffer, take
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


# -- on loopback ------------------------------------------------------------------------


def test_loopback_plain_tcp_delivers_every_item_in_order():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    thread = serving(pescador.stream(tagged, 1, 2000), endpoint)
    status = RemoteStatus()
    out = keys_of(remote(endpoint, status=status))
    thread.join(10)
    assert out == [(1, i) for i in range(2000)]
    assert status.producers[endpoint]["state"] == "ended" and status.producers[endpoint]["items"] == 2000


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


def test_a_slow_consumer_loses_nothing_however_long_its_queue_stays_full():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    serving(pescador.stream(big, 4), endpoint)
    status = RemoteStatus()
    got = []
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProducerWarning)  # nothing may be reported lost
        for item in remote(endpoint, status=status, hwm=2):
            got.append(int(item["i"][0]))
            time.sleep(0.05)  # a slow training step: the queues stay full
            if time.monotonic() - start > 6.0:
                break
    assert got == list(range(len(got))) and len(got) > 50
    assert status.producers[endpoint]["state"] == "connected"


def raising(n):
    for i in range(n):
        yield {"i": np.array([i])}
    raise ValueError("the source broke")


def test_a_producer_whose_recipe_raises_reports_it_to_both_sides():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
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
        with pytest.raises(PescadorError, match="(?s)these failed.*the source broke"):
            for item in remote(endpoint, status=status):
                got.append(int(item["i"][0]))
    thread.join(10)
    assert not thread.is_alive() and raised and got == [0, 1, 2]
    assert status.producers[endpoint]["state"] == "failed"


def test_ipv6_loopback():
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = probe.getsockname()[1]
    endpoint = f"tcp://[::1]:{port}"
    serving(pescador.stream(tagged, 4, 50), endpoint)
    assert keys_of(remote(endpoint)) == [(4, i) for i in range(50)]


def test_offload_workers_each_read_their_share_of_the_producers():
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    for tag, endpoint in enumerate(endpoints):
        serving(pescador.stream(tagged, tag, 400), endpoint)
    out = keys_of(pescador.zmq_offload(workers=2)(remote(*endpoints)))
    assert collections.Counter(out) == collections.Counter([(t, i) for t in range(2) for i in range(400)])


def loopback_producer(tag, port):
    return subprocess.Popen(
        [sys.executable, "-m", "pescador", "serve", "test_remote:tagged", str(tag), "--bind", f"tcp://127.0.0.1:{port}"],
        env=dict(os.environ, PYTHONPATH=TESTS), stderr=subprocess.DEVNULL,
    )


def test_status_follows_a_producer_that_dies_and_comes_back_while_another_keeps_sending():
    ports = [free_port(), free_port()]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    procs = [loopback_producer(1, ports[0]), loopback_producer(2, ports[1])]
    status = RemoteStatus()
    seen = collections.Counter()
    phases = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.monotonic()
            for item in remote(*endpoints, status=status):
                now = time.monotonic() - start
                if not phases and now > 1.0:
                    procs[0].kill()
                    procs[0].wait()
                    phases.append("killed")
                elif phases == ["killed"] and now > 2.5:
                    phases.append(status.producers[endpoints[0]]["state"])
                    procs[0] = loopback_producer(1, ports[0])
                elif len(phases) == 2 and status.producers[endpoints[0]]["state"] == "connected":
                    phases.append("connected")  # (reconnection backs off up to a second; no fixed wait)
                    seen.clear()
                elif len(phases) == 3:
                    seen[int(item["tag"][0])] += 1
                    if seen[1] >= 100:
                        break
                if now > 30:
                    break
        assert phases[1:] == ["lost", "connected"]
        assert any("lost tcp://127.0.0.1" in str(w.message) for w in caught)
        assert seen[1] >= 100 and seen[2] > 0  # both deliver again
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_keys_and_endpoints_are_checked(keys, tmp_path):
    with pytest.raises(PescadorError, match="tcp://HOST:PORT"):
        remote("udp://1.2.3.4:5")
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


def test_the_serve_command_on_loopback():
    port = free_port()
    env = dict(os.environ, PYTHONPATH=TESTS)
    producer = subprocess.Popen(
        [sys.executable, "-m", "pescador", "serve", "test_remote:tagged", "7", "300", "--bind", f"tcp://127.0.0.1:{port}"],
        env=env, stderr=subprocess.DEVNULL,
    )
    try:
        assert keys_of(remote(f"tcp://127.0.0.1:{port}")) == [(7, i) for i in range(300)]
        assert producer.wait(10) == 0
    finally:
        producer.kill()
        producer.wait()
    bad = subprocess.run([sys.executable, "-m", "pescador", "serve", "nowhere:gen", "--bind", "tcp://127.0.0.1:1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot import 'nowhere'" in bad.stderr


# -- across hosts (network namespaces joined by veth links) ------------------------------

REASON = netns.available()
across_hosts = pytest.mark.skipif(REASON is not None, reason=f"no network namespaces: {REASON}")


def produce(hosts, i, tag, n, keys, producer_key, port=5555, insecure=False):
    argv = [sys.executable, "-m", "pescador", "serve", "test_remote:tagged", str(tag), str(n),
            "--bind", f"tcp://{hosts.addresses[i]}:{port}"]
    if insecure:
        argv.append("--insecure")
    else:
        argv += ["--key", str(keys[producer_key][1]), "--authorized", str(keys["consumer"][0])]
    return hosts.run(i, argv, env=dict(os.environ, PYTHONPATH=TESTS), stderr=subprocess.DEVNULL)


@across_hosts
def test_two_producers_feed_one_consumer(keys):
    with netns.Hosts(2, "a") as hosts:
        produce(hosts, 0, 1, 3000, keys, "p1")
        produce(hosts, 1, 2, 2000, keys, "p2")
        status = RemoteStatus()
        source = remote(*(f"tcp://{a}:5555" for a in hosts.addresses), key=keys["consumer"][1],
                        producer_keys=[keys["p1"][0], keys["p2"][0]], status=status)
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
                        producer_keys=[keys["p1"][0], keys["p2"][0]], status=status)
        tags_after = collections.Counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            killed_at = None
            for n, item in enumerate(source):
                if n == 2000:
                    doomed.kill()
                    killed_at = time.monotonic()
                if killed_at and time.monotonic() - killed_at > 4.0:
                    tags_after[int(item["tag"][0])] += 1
                    if tags_after[2] >= 2000:
                        break
        first = f"tcp://{hosts.addresses[0]}:5555"
        assert status.producers[first]["state"] == "lost"
        assert any(issubclass(w.category, ProducerWarning) and "lost" in str(w.message) for w in caught)
        assert tags_after[1] == 0 and tags_after[2] >= 2000


@across_hosts
def test_a_producer_with_the_wrong_key_is_refused(keys):
    with netns.Hosts(2, "c") as hosts:
        produce(hosts, 0, 1, 10**9, keys, "stranger")  # not the key the consumer expects
        produce(hosts, 1, 2, 500, keys, "p2")
        status = RemoteStatus()
        endpoints = [f"tcp://{a}:5555" for a in hosts.addresses]
        with pytest.warns(ProducerWarning, match="refused the handshake"):
            out = keys_of(take(500, remote(*endpoints, key=keys["consumer"][1],
                                           producer_keys=[keys["p1"][0], keys["p2"][0]], status=status)))
        assert {tag for tag, _ in out} == {2}
        assert status.producers[endpoints[0]]["state"] == "refused"
        # alone, a refused producer fails the stream after the grace period
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(PescadorError, match="no producer connected for 2 s"):
                list(remote(endpoints[0], key=keys["consumer"][1], producer_keys=keys["p1"][0], grace=2))


@across_hosts
def test_a_consumer_with_an_unknown_key_is_refused_by_the_producer(keys):
    with netns.Hosts(1, "d") as hosts:
        produce(hosts, 0, 1, 10**9, keys, "p1")
        endpoint = f"tcp://{hosts.addresses[0]}:5555"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(PescadorError, match="refused"):
                list(remote(endpoint, key=keys["stranger"][1], producer_keys=keys["p1"][0], grace=2))


@across_hosts
def test_plain_tcp_beyond_loopback_needs_insecure_and_warns(keys):
    with netns.Hosts(1, "e") as hosts:
        produce(hosts, 0, 3, 100, keys, None, insecure=True)
        endpoint = f"tcp://{hosts.addresses[0]}:5555"
        with pytest.raises(PescadorError, match="needs keys"):
            remote(endpoint)
        with pytest.warns(InsecureWarning, match="plain TCP"):
            assert len(list(remote(endpoint, insecure=True))) == 100
