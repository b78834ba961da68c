"""The figures behind docs/tuning.rst: workers, lam against a source's start cost, hwm, item size, threads or processes.

Every figure is a ratio against a baseline measured in the same run, in
interleaved rounds (medians), so that a machine shared with other work
moves both alike; the absolute rates are printed too, for scale only.

- workers: a source that spends about a millisecond of pure-Python work
  per item, in this process and through ``zmq_offload(workers=1, 2, 4)``;
  items/s against the same source in this process.
- lam: a pool of sources that each wait ``--open-ms`` (a file's open and
  header read, as a sleep) before their first item and then yield items at
  once, under ``mux(k=4, lam)``; items/s against ``lam=256``.
- hwm: a source that is fast on average but stalls 20 ms every 50 items
  (a slow disk read), consumed by a loop that works 0.2 ms per item, through
  ``zmq_offload(workers=2, hwm)``; seconds against the same loop over
  items that are already there (the consumer's own cost).
- size: items of 1 KiB, 64 KiB and 4 MiB through ``zmq_offload(workers=1)``,
  MB/s against a 4 MiB item's.
- overlap: a source that waits 1 ms per item (I/O, the GIL released) or
  works 1 ms per item in Python (the GIL held), under a consumer that works
  1 ms per item (numpy, the GIL mostly released); seconds of ``prefetch(8)``
  and ``zmq_offload(workers=2)`` against the plain loop.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import pescador

from ._util import medians_side_by_side, table


def python_work(n, per_item_ms=1.0):
    """Items that each cost about ``per_item_ms`` of pure-Python work (the GIL held)."""
    loops = int(per_item_ms * 20_000)
    for i in range(n):
        total = 0
        for j in range(loops):
            total += j * j
        yield {"i": np.array([i]), "t": np.array([total])}


def waits(n, per_item_ms=1.0):
    """Items that each wait ``per_item_ms`` (I/O: the GIL released)."""
    for i in range(n):
        time.sleep(per_item_ms / 1000)
        yield {"i": np.array([i])}


def opened(open_ms):
    """An endless source that waits ``open_ms`` before its first item (opening a file)."""
    time.sleep(open_ms / 1000)
    x = np.zeros((1, 10), np.float32)
    while True:
        yield {"X": x}


def stalls(n):
    """Fast items, with a 20 ms stall every 50 items."""
    x = np.zeros((1, 10), np.float32)
    for i in range(n):
        if i % 50 == 49:
            time.sleep(0.02)
        yield {"X": x}


def sized(n, nbytes):
    x = np.ones(nbytes // 4, np.float32)
    for _ in range(n):
        yield {"X": x}


def consume(recipe, work_s=0.0):
    count = 0
    for _ in recipe:
        if work_s:
            busy_numpy(work_s)
        count += 1
    return count


def busy_numpy(seconds):
    """A training step's stand-in: numpy work (which releases the GIL in its loops) for ``seconds``."""
    end = time.perf_counter() + seconds
    a = np.ones(4096)
    while time.perf_counter() < end:
        np.sqrt(a, out=a)


def part_workers(args):
    n = args.items
    cases = [("in process", lambda: consume(pescador.stream(python_work, n)))]
    for w in (1, 2, 4):
        cases.append((f"workers={w}", lambda w=w: consume(pescador.zmq_offload(workers=w)(pescador.stream(python_work, n)))))
    times = medians_side_by_side([c[1] for c in cases], repeat=args.repeat)
    base = times[0]
    table(
        f"workers: {n} items of ~1 ms pure-Python work each ({os.cpu_count()} cores)",
        ["run", "items/s", "vs in process"],
        [[name, n / t, base / t] for (name, _), t in zip(cases, times)],
    )


def part_lam(args):
    n = args.items * 20
    pool = [pescador.stream(opened, args.open_ms) for _ in range(64)]
    lams = (4, 16, 64, 256)
    fns = [lambda lam=lam: consume(pescador.take(n, pescador.mux(4, lam, random_state=0)(pool))) for lam in lams]
    times = medians_side_by_side(fns, repeat=args.repeat)
    base = times[-1]
    table(
        f"lam: mux(k=4, lam) over sources that take {args.open_ms} ms to open, {n} items",
        ["lam", "items/s", "vs lam=256", "opens per 1000 items (about)"],
        [[lam, n / t, base / t, 1000 / lam] for lam, t in zip(lams, times)],
    )


def part_hwm(args):
    n = args.items * 5
    work = 0.0002
    ready = [{"X": np.zeros((1, 10), np.float32)}] * n
    cases = [("items already there", lambda: consume(ready, work))]
    for hwm in (1, 4, 32, 256):
        cases.append(
            (f"hwm={hwm}", lambda hwm=hwm: consume(pescador.zmq_offload(workers=2, hwm=hwm)(pescador.stream(stalls, n)), work))
        )
    times = medians_side_by_side([c[1] for c in cases], repeat=args.repeat)
    base = times[0]
    table(
        f"hwm: {n} items, a 20 ms stall every 50, a consumer working 0.2 ms per item",
        ["run", "seconds", "vs the consumer alone"],
        [[name, t, t / base] for (name, _), t in zip(cases, times)],
    )


def part_size(args):
    total = 256 << 20  # bytes per run
    sizes = [(1 << 10, "1 KiB"), (64 << 10, "64 KiB"), (4 << 20, "4 MiB")]
    fns = [
        lambda b=b: consume(pescador.zmq_offload(workers=1)(pescador.stream(sized, total // b, b)))
        for b, _ in sizes
    ]
    times = medians_side_by_side(fns, repeat=args.repeat)
    base = times[-1]
    table(
        "size: 256 MiB in items of one size through zmq_offload(workers=1)",
        ["item", "items/s", "MB/s", "MB/s vs 4 MiB items"],
        [[name, total / b / t, total / 1e6 / t, base / t] for (b, name), t in zip(sizes, times)],
    )


def part_overlap(args):
    n = args.items
    rows = []
    for label, source in (("waits 1 ms (I/O)", waits), ("works 1 ms (Python)", python_work)):
        cases = [
            ("plain", lambda s=source: consume(pescador.stream(s, n), 0.001)),
            ("prefetch(8)", lambda s=source: consume(pescador.prefetch(8)(pescador.stream(s, n)), 0.001)),
            ("zmq_offload(workers=2)", lambda s=source: consume(pescador.zmq_offload(workers=2)(pescador.stream(s, n)), 0.001)),
        ]
        times = medians_side_by_side([c[1] for c in cases], repeat=args.repeat)
        rows += [[label, name, t, t / times[0]] for (name, _), t in zip(cases, times)]
    table(
        f"overlap: {n} items, a consumer that works 1 ms per item",
        ["source", "run", "seconds", "vs plain"],
        rows,
    )


PARTS = {"workers": part_workers, "lam": part_lam, "hwm": part_hwm, "size": part_size, "overlap": part_overlap}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tuning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--open-ms", type=float, default=20.0)
    parser.add_argument("--part", choices=["all", *PARTS], default="all")
    args = parser.parse_args(argv)
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    for name, part in PARTS.items():
        if args.part in ("all", name):
            part(args)
