"""Throughput from a producer on another "host" (a network namespace joined by a veth link).

A producer runs in its own network namespace and serves items over TCP on
the veth link; the consumer runs here.  Workloads: 200 items of one 4 MiB
float32 array, and 100,000 items of a (1, 10) float32 array.  Paths:
raw pyzmq (a PUSH socket sending the same buffer zero-copy, a PULL socket
building arrays over the frames: the baseline of plain TCP), raw pyzmq with
CURVE (the same pair with keys: the baseline of CURVE), ``serve``/``remote``
in plain TCP (``insecure=True``), and ``serve``/``remote`` with CURVE; each
path's ratio is against its own baseline.  Each
producer is started and given a second to bind before the consumer's clock
starts; figures are medians of several runs, ratios against raw pyzmq in
the same run.  Needs root (``ip netns``); says why not otherwise.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import zmq

import pescador
from pescador.remote import make_keys, remote, serve

from ._util import table
from .bench_zmq import raw_sender

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import netns  # noqa: E402

PORT = 5700


def same_array(n, shape):
    x = np.ones(shape, dtype=np.float32)
    for _ in range(n):
        yield {"X": x}


def produce(mode: str, n: int, shape: tuple, bind: str, keydir: str) -> None:
    """Runs inside the producer's namespace."""
    if mode == "raw":
        raw_sender(bind, n, shape, bind=True)
        return
    if mode == "raw-curve":
        raw_sender(bind, n, shape, bind=True, curve=_keys(keydir, "producer") + (True,))
        return
    kwargs = dict(insecure=True) if mode == "plain" else dict(
        key=os.path.join(keydir, "producer.key_secret"), authorized=os.path.join(keydir, "consumer.key"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (plain TCP on a private veth link, on purpose)
        serve(pescador.stream(same_array, n, shape), bind, **kwargs)


def _keys(keydir: str, name: str) -> tuple:
    import zmq.auth

    return zmq.auth.load_certificate(os.path.join(keydir, f"{name}.key_secret"))


def consume(mode: str, n: int, shape: tuple, endpoint: str, keydir: str) -> float:
    t0 = time.perf_counter()
    if mode in ("raw", "raw-curve"):
        context = zmq.Context()
        sock = context.socket(zmq.PULL)
        if mode == "raw-curve":
            sock.curve_publickey, sock.curve_secretkey = _keys(keydir, "consumer")
            sock.curve_serverkey = _keys(keydir, "producer")[0]
        sock.connect(endpoint)
        for _ in range(n):
            np.frombuffer(sock.recv(copy=False).buffer, dtype=np.float32).reshape(shape)
        sock.recv()
        elapsed = time.perf_counter() - t0
        sock.close(linger=0)
        context.term()
        return elapsed
    kwargs = dict(insecure=True) if mode == "plain" else dict(
        key=os.path.join(keydir, "consumer.key_secret"), producer_keys=os.path.join(keydir, "producer.key"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        count = sum(1 for _ in remote(endpoint, **kwargs))
    assert count == n, (count, n)
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    if argv[:1] == ["produce"]:
        mode, n, shape, bind, keydir = argv[1], int(argv[2]), tuple(map(int, argv[3].split("x"))), argv[4], argv[5]
        produce(mode, n, shape, bind, keydir)
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks remote")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    reason = netns.available()
    if reason:
        print(f"skipped: {reason}")
        return
    keydir = tempfile.mkdtemp()
    make_keys(keydir, "producer")
    make_keys(keydir, "consumer")
    rows = []
    with netns.Hosts(1, "bench") as hosts:
        endpoint = f"tcp://{hosts.addresses[0]}:{PORT}"
        for label, n, shape in [("4 MiB arrays", 200, (1024, 1024)), ("(1, 10) arrays", 100_000, (1, 10))]:
            times = {}
            for mode in ("raw", "raw-curve", "plain", "curve"):
                runs = []
                for _ in range(args.repeat):
                    shape_arg = "x".join(map(str, shape))
                    producer = hosts.run(
                        0, [sys.executable, "-m", "benchmarks", "remote", "produce", mode, str(n), shape_arg, endpoint, keydir],
                        cwd=str(ROOT),
                    )
                    time.sleep(1.0)
                    runs.append(consume(mode, n, shape, endpoint, keydir))
                    producer.wait(30)
                times[mode] = statistics.median(runs)
            nbytes = n * 4 * int(np.prod(shape))
            for mode, name, base in [
                ("raw", "raw pyzmq (plain TCP)", "raw"), ("plain", "serve/remote, plain TCP", "raw"),
                ("raw-curve", "raw pyzmq, CURVE", "raw-curve"), ("curve", "serve/remote, CURVE", "raw-curve"),
            ]:
                t = times[mode]
                rows.append([label, name, n / t, nbytes / t / 1e6, times[base] / t])
    table(
        f"producer in a network namespace over a veth link; median of {args.repeat} runs; ratio: against raw pyzmq "
        "over the same transport (plain TCP, or CURVE)",
        ["workload", "path", "items/s", "MB/s", "ratio"],
        rows,
    )
