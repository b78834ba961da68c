"""mux per-item overhead over the raw cost of producing the items.

Workloads: 100 streams with k=10, lam=16, and 10,000 streams with k=1000,
lam=16; items are dicts holding a (1, 10) float32 array.  The baseline is a
loop that draws the same number of items from the same generators, one
stream after another, with no mux; the overhead is the difference per item,
measured in the same run (medians).  Goal: at most 2 microseconds per item,
not growing with k or with the pool.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

import pescador

from ._util import median_seconds, table


def rows(seed):
    x = np.full((1, 10), seed, dtype=np.float32)
    while True:
        yield {"X": x}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mux")
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.items
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
        t_raw = median_seconds(raw, args.repeat) / (per_stream * pool_size)
        out.append([f"{pool_size} streams, k={k}", "raw production", t_raw * 1e6, "-"])
        for name, step in configs:
            recipe = pescador.take(n, step(pool))

            def muxed():
                for _ in recipe:
                    pass

            t = median_seconds(muxed, args.repeat) / n
            out.append([f"{pool_size} streams, k={k}", name, t * 1e6, (t - t_raw) * 1e6])
    table(f"{n:,} items, median of {args.repeat} runs", ["pool", "loop", "us/item", "overhead us/item"], out)
