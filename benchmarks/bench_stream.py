"""Per-item cost of stream(gen) and Streamer(gen).generate() against a raw loop.

Workload: a generator of small dict items (one int per item).  Each figure
is the median of several runs; the ratio is against the raw Python loop over
the same generator, measured in the same run.  Goal: at most 1.5x.
"""

from __future__ import annotations

import argparse

import pescador

from ._util import median_seconds, table


def small_items(n):
    for i in range(n):
        yield {"i": i}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    n = args.items

    def raw():
        for _ in small_items(n):
            pass

    recipe = pescador.stream(small_items, n)

    def via_stream():
        for _ in recipe:
            pass

    streamer = pescador.Streamer(small_items, n)

    def via_streamer():
        for _ in streamer.generate():
            pass

    base = median_seconds(raw, args.repeat)
    rows = [["raw generator loop", base / n * 1e9, 1.0]]
    for name, fn in [("stream(gen)", via_stream), ("Streamer(gen).generate()", via_streamer)]:
        t = median_seconds(fn, args.repeat)
        rows.append([name, t / n * 1e9, t / base])
    table(f"{n:,} items, median of {args.repeat} runs", ["loop", "ns/item", "x raw"], rows)
