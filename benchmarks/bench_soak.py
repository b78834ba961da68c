"""Soak: a million small items through mux, buffer and zmq_offload(workers=2), all checked.

Each item carries its source, its sequence number and a payload derived from
both.  The pool is multiplexed without replacement (so the workers shard it
and every item is delivered exactly once), re-batched into 64-row batches and
produced by two worker processes.  The consumer checks that every
(source, seq) arrives exactly once, in order per source, with an intact
payload, and samples its own resident memory as the run goes: it must stay
flat.  The same pipeline run in-process (no workers) is the baseline.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import numpy as np

import pescador

from ._util import table

SOURCES = 40


def sequenced(source, n):
    for i in range(n):
        yield {
            "source": np.array([source], dtype=np.int32),
            "seq": np.array([i], dtype=np.int64),
            "payload": np.full((1, 3), source * 1_000_003 + i, dtype=np.int64),
        }


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(recipe, sizes):
    """Consume and check; return (seconds, items, resident MiB sampled over the run)."""
    next_seq = collections.Counter()
    samples = []
    items = 0
    t0 = time.perf_counter()
    for b, batch in enumerate(recipe):
        source, seq = batch["source"].astype(np.int64), batch["seq"]
        if not np.all(batch["payload"] == (source * 1_000_003 + seq)[:, None]):
            raise SystemExit("corrupted payload")
        for s, q in zip(source.tolist(), seq.tolist()):
            if q != next_seq[s]:
                raise SystemExit(f"source {s}: expected seq {next_seq[s]}, got {q} (lost or duplicated)")
            next_seq[s] = q + 1
        items += len(seq)
        if b % 500 == 0:
            samples.append(rss_mib())
    elapsed = time.perf_counter() - t0
    samples.append(rss_mib())
    for s, n in enumerate(sizes):
        if next_seq[s] != n:
            raise SystemExit(f"source {s}: {next_seq[s]} of {n} items arrived")
    return elapsed, items, samples


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks soak")
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    base = args.items // SOURCES
    sizes = [base + (s < args.items % SOURCES) for s in range(SOURCES)]
    pool = [pescador.stream(sequenced, s, n) for s, n in enumerate(sizes)]
    muxed = pescador.mux(8, None, with_replacement=False, random_state=0)(pool)
    batched = pescador.buffer(64, strict=False)(muxed)
    rows = []
    for name, recipe in [("in-process", batched), ("zmq_offload(workers=2)", pescador.zmq_offload(workers=2)(batched))]:
        elapsed, items, samples = run(recipe, sizes)
        early = samples[min(len(samples) - 1, max(1, len(samples) // 5))]
        rows.append([name, items, items / elapsed, samples[0], early, max(samples), samples[-1] - early])
    table(
        f"{args.items:,} items from {SOURCES} sources, every one checked (all arrived once, in order, intact)",
        ["pipeline", "items", "items/s", "RSS start MiB", "RSS at 20% MiB", "RSS peak MiB", "growth after 20% MiB"],
        rows,
    )
    print(f"\n  zmq_offload / in-process throughput: {rows[1][2] / rows[0][2]:.2f}x")
