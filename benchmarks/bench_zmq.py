"""zmq_offload throughput against raw pyzmq between two processes.

Three workloads, each measured in the same run as its baseline (medians of
several runs, process start included on both sides):

- large: 500 items holding one 4 MiB float32 array, against a raw pyzmq
  PUSH/PULL pair sending the same buffer zero-copy from a forked process and
  receiving it with ``np.frombuffer``.  Goal: at least 0.7x raw pyzmq.
- small: 100,000 items holding a (1, 10) float32 array, against the same raw
  pair sending one 40-byte frame per item; zmq_offload with ``batch_wait=0``
  (one message per item, as raw pyzmq) and with the default (items share
  messages when the source is fast).  Goal: at least 0.5x raw pyzmq with one
  message per item, and beyond 1.0x where items share messages.
- cpu: a generator that spends about a millisecond of pure-Python work per
  item, with ``workers=2`` against ``workers=1``.  Goal: at least 1.6x on a
  2-core machine.
"""

from __future__ import annotations

import argparse
import multiprocessing

import numpy as np
import zmq

import pescador

from ._util import median_seconds, table


def same_array(n, shape):
    x = np.ones(shape, dtype=np.float32)
    for _ in range(n):
        yield {"X": x}


def busy(n, work):
    for i in range(n):
        total = 0
        for j in range(work):
            total += j * j
        yield {"X": np.array([total], dtype=np.int64)}


def raw_sender(endpoint, n, shape, bind=False, curve=None):
    """Send ``n`` arrays zero-copy on a raw PUSH socket, then an empty end frame (the baseline's sender).

    ``curve``: None, or ``(public, secret, True)``: the socket is a CURVE server with that key pair.
    """
    context = zmq.Context()
    sock = context.socket(zmq.PUSH)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_server = curve
    if bind:
        sock.bind(endpoint)
    else:
        sock.connect(endpoint)
    x = np.ones(shape, dtype=np.float32)
    for _ in range(n):
        sock.send(x.data, copy=False)
    sock.send(b"")
    sock.close(linger=-1)
    context.term()


def raw_pyzmq(n, shape):
    """Receive ``n`` arrays from a forked process over a raw PUSH/PULL pair."""
    context = zmq.Context()
    sock = context.socket(zmq.PULL)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    process = multiprocessing.get_context("fork").Process(
        target=raw_sender, args=(f"tcp://127.0.0.1:{port}", n, shape)
    )
    process.start()
    for _ in range(n):
        frame = sock.recv(copy=False)
        np.frombuffer(frame.buffer, dtype=np.float32).reshape(shape)
    sock.recv()
    process.join()
    sock.close()
    context.term()


def decode_costs(n=100_000):
    """Decoding alone, in this process: microseconds per (1, 10) float32 item, one message each or shared."""
    from pescador import wire

    x = np.ones((1, 10), dtype=np.float32)
    alone = [wire.encode_item({"X": x}) for _ in range(1000)]
    shared = [wire.encode_batch([{"X": x}] * 500) for _ in range(2)]  # (about as many as a message holds)

    def one_each():
        for frames in alone:
            wire.decode(frames)

    def together():
        for frames in shared:
            for _ in wire.decode(frames)[1][0]:
                pass

    return [median_seconds(f, 5) / 1000 * 1e6 for f in (one_each, together)]


def consume(recipe):
    for _ in recipe:
        pass


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks zmq")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    offload = pescador.zmq_offload(start_method="fork", transport="tcp")
    offload_ipc = pescador.zmq_offload(start_method="fork", transport="ipc")
    alone = pescador.zmq_offload(start_method="fork", transport="tcp", batch_wait=0)
    alone_ipc = pescador.zmq_offload(start_method="fork", transport="ipc", batch_wait=0)
    rows = []

    for label, n, shape in [("4 MiB arrays", 500, (1024, 1024)), ("(1, 10) arrays", 100_000, (1, 10))]:
        t_raw = median_seconds(lambda: raw_pyzmq(n, shape), args.repeat)
        rows.append([label, "raw pyzmq (tcp)", n / t_raw, n * 4 * np.prod(shape) / t_raw / 1e6, 1.0])
        paths = [("zmq_offload (tcp)", offload), ("zmq_offload (ipc)", offload_ipc)]
        if shape == (1, 10):
            paths += [("zmq_offload (tcp), batch_wait=0", alone), ("zmq_offload (ipc), batch_wait=0", alone_ipc)]
        for name, step in paths:
            recipe = step(pescador.stream(same_array, n, shape))
            t = median_seconds(lambda: consume(recipe), args.repeat)
            rows.append([label, name, n / t, n * 4 * np.prod(shape) / t / 1e6, t_raw / t])

    n, work = 2000, 30_000
    one = pescador.zmq_offload(workers=1, start_method="fork")(pescador.stream(busy, n, work))
    # two workers each run the recipe: give each half of the items
    two = pescador.zmq_offload(workers=2, start_method="fork")(pescador.stream(busy, n // 2, work))
    t1 = median_seconds(lambda: consume(one), args.repeat)
    t2 = median_seconds(lambda: consume(two), args.repeat)
    rows.append(["cpu-bound", "workers=1", n / t1, "-", 1.0])
    rows.append(["cpu-bound", "workers=2", n / t2, "-", t1 / t2])
    alone, shared = decode_costs()
    rows.append(["decode only", "one message per item (us/item)", alone, "-", 1.0])
    rows.append(["decode only", "500 items per message (us/item)", shared, "-", alone / shared])
    table(
        f"median of {args.repeat} runs; ratio: against the first row of its workload",
        ["workload", "path", "items/s", "MB/s", "ratio"],
        rows,
    )
