"""buffer(n) throughput against np.concatenate of the same items.

Two workloads: (1, 128) float32 items into batches of 64, and
(1, 3, 224, 224) float32 items into batches of 32.  The baseline is a loop
that builds the same batches with ``np.concatenate`` over the same items
(consumed the same way), measured in the same run; figures are medians.
Goals: the large workload at least 0.9x np.concatenate; the small one under
2 microseconds of overhead per item (over the raw generator loop).
"""

from __future__ import annotations

import argparse

import numpy as np

import pescador

from ._util import median_seconds, table


def replay(items):
    yield from items


def concatenated(items, n):
    for i in range(0, len(items) - n + 1, n):
        yield {"X": np.concatenate([item["X"] for item in items[i : i + n]])}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks buffer")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    rows = []
    for shape, n, batches in [((1, 128), 64, 2000), ((1, 3, 224, 224), 32, 20)]:
        rng = np.random.default_rng(0)
        items = [{"X": rng.random(shape, dtype=np.float32)} for _ in range(n * batches)]
        count = len(items)
        megabytes = count * items[0]["X"].nbytes / 1e6
        recipe = pescador.buffer(n, pescador.stream(replay, items))

        def raw():
            for _ in replay(items):
                pass

        def concat():
            for _ in concatenated(items, n):
                pass

        def buffered():
            for _ in recipe:
                pass

        t_raw = median_seconds(raw, args.repeat)
        t_cat = median_seconds(concat, args.repeat)
        t_buf = median_seconds(buffered, args.repeat)
        label = f"{shape} -> {n}"
        rows.append([label, "np.concatenate", megabytes / t_cat, t_cat / count * 1e6, 1.0, "-"])
        rows.append(
            [label, "buffer", megabytes / t_buf, t_buf / count * 1e6, t_cat / t_buf, (t_buf - t_raw) / count * 1e6]
        )
    table(
        f"median of {args.repeat} runs (ratio = throughput / np.concatenate's)",
        ["workload", "method", "MB/s", "us/item", "x concat", "overhead us/item"],
        rows,
    )
