"""mux per-item overhead over the raw cost of producing the items.

Two parts, each against a raw loop that draws the same number of items from
the same generators with no mux, measured in the same run (medians); the
overhead is the difference per item.

1. Pool size: 100 streams with k=10, lam=16, and 10,000 streams with
   k=1000, lam=16; items are dicts holding a (1, 10) float32 array.
   Goal: at most 2 microseconds per item, not growing with k or the pool.
2. Weight ratio: 200 finite streams of 50 items, k=10, weights spread
   geometrically from 1 to ``ratio`` (1, 1e3, 1e6, 1e9), with and without
   replacement, lam=16 and lam=None.  Without replacement the whole pool is
   run once (the heavy streams tend to go first, so at the end only light
   ones are left); with replacement ``--items`` items are taken.  Goal: the
   cost of a choice does not depend on the ratio.  A configuration that takes
   longer than ``--timeout`` seconds for one run is reported as such.
"""

from __future__ import annotations

import argparse
import itertools
import signal

import numpy as np

import pescador

from ._util import median_seconds, table


def rows(seed):
    x = np.full((1, 10), seed, dtype=np.float32)
    while True:
        yield {"X": x}


def finite_rows(seed, n):
    x = np.full((1, 10), seed, dtype=np.float32)
    for _ in range(n):
        yield {"X": x}


class _TooSlow(Exception):
    pass


def _alarm(signum, frame):
    raise _TooSlow


def _timed(fn, repeat, timeout):
    """``(median seconds, items)`` of ``fn`` (which returns its item count), or None if one run
    takes longer than ``timeout`` seconds."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            items = fn()  # (the warm-up run, and the check that a run ends at all)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TooSlow:
        return None
    finally:
        signal.signal(signal.SIGALRM, previous)
    return median_seconds(fn, repeat, warmup=0), items


def consume(recipe):
    n = 0
    for _ in recipe:
        n += 1
    return n


def pool_sizes(n, repeat):
    out = []
    for pool_size, k in [(100, 10), (10_000, 1000)]:
        pool = [pescador.stream(rows, i) for i in range(pool_size)]
        per_stream = max(1, n // pool_size)

        def raw():
            for s in pool:
                for _ in itertools.islice(s, per_stream):
                    pass

        configs = [
            ("mux(k, lam=16)", pescador.mux(k, 16, random_state=0)),
            ("mux(k, lam=16, weights)", pescador.mux(k, 16, weights=np.linspace(1, 2, pool_size), random_state=0)),
            ("mux(k, lam=16, revive)", pescador.mux(k, 16, with_replacement=False, revive=True, random_state=0)),
        ]
        t_raw = median_seconds(raw, repeat) / (per_stream * pool_size)
        out.append([f"{pool_size} streams, k={k}", "raw production", t_raw * 1e6, "-"])
        for name, step in configs:
            recipe = pescador.take(n, step(pool))
            t = median_seconds(lambda: consume(recipe), repeat) / n
            out.append([f"{pool_size} streams, k={k}", name, t * 1e6, (t - t_raw) * 1e6])
    table(f"{n:,} items, median of {repeat} runs", ["pool", "loop", "us/item", "overhead us/item"], out)


def weight_ratios(n, repeat, timeout):
    size, length, k = 200, 50, 10
    pool = [pescador.stream(finite_rows, i, length) for i in range(size)]
    order = np.random.default_rng(0).permutation(size)
    out = []
    for ratio in (1.0, 1e3, 1e6, 1e9):
        weights = np.geomspace(1.0, ratio, size)[order]
        for replace, lam in itertools.product((True, False), (16.0, None)):
            recipe = pescador.mux(k, lam, weights=weights, with_replacement=replace, random_state=0)(pool)
            if replace:
                recipe = pescador.take(n, recipe)
            timed = _timed(lambda recipe=recipe: consume(recipe), repeat, timeout)
            label = f"{'with' if replace else 'without'} replacement, lam={lam}"
            if timed is None:
                out.append([f"{ratio:g}", label, "-", f"> {timeout:g} s for one run", "-"])
                continue
            t, items = timed

            def raw(items=items):
                left = items
                while left > 0:
                    for s in pool:
                        left -= consume(itertools.islice(s, min(left, length)))
                        if left <= 0:
                            break

            t_raw = median_seconds(raw, repeat) / items
            t = t / items
            out.append([f"{ratio:g}", label, f"{items:,}", t * 1e6, (t - t_raw) * 1e6])
    table(
        f"weight ratios: {size} streams of {length} items, k={k}, median of {repeat} runs",
        ["ratio", "mux", "items", "us/item", "overhead us/item"],
        out,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mux")
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds allowed for one run of a weighted mux")
    parser.add_argument("--part", choices=["all", "pool", "weights"], default="all")
    args = parser.parse_args(argv)
    if args.part in ("all", "pool"):
        pool_sizes(args.items, args.repeat)
    if args.part in ("all", "weights"):
        weight_ratios(min(args.items, 50_000), args.repeat, args.timeout)
