"""What checkpoint and resume cost: per item, per checkpoint, and to resume deep into a run.

Workloads: 100 endless generator sources of (1, 10) float32 items, a mux
with k=10 and lam=16 (goal: a resumable run at most 1.2x a plain run per
item); and buffer(16) over a mux of 64 such sources with k=4 (goal: at most
1.3x).  Per item: a resumable run against a plain run of the same recipe, in
the same run (medians).  Per checkpoint: ``state_dict()`` and its JSON
size.  Resume: building a resumed run at item 100,000 and drawing its first
item, against replaying 100,000 items of the plain run (what a resume by
replay of the whole pipeline would cost).

Through ``zmq_offload(workers=1)`` (issue 24; goal: a resumable run at most
1.3x the plain run's cost per item): a bare source of those items, a mux of
50 of them (k=10, lam=16), and buffer(32) over that mux, each run in the
worker; the consumer reads ``--offloaded`` items (or their batches).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import pescador

from ._util import median_seconds, table


def rows(tag):
    x = np.full((1, 10), tag, dtype=np.float32)
    while True:
        yield {"X": x}


def consume(recipe, n):
    for _ in zip(range(n), recipe):
        pass


def drain(run):
    for _ in run:
        pass


def offloaded(n: int, repeat: int) -> list:
    """Rows: plain and resumable runs through one worker, per item (or batch), and their ratio."""
    offload = pescador.zmq_offload(workers=1, start_method="fork")
    pool = [pescador.stream(rows, t) for t in range(50)]
    mixed = pescador.mux(10, 16.0, random_state=0)(pool)
    workloads = [
        ("a bare source", "item", offload(pescador.take(n, pescador.stream(rows, 0))), n),
        ("mux of 50 sources", "item", offload(pescador.take(n)(mixed)), n),
        ("buffer(32) over that mux", "batch", offload(pescador.take(n // 32)(pescador.buffer(32)(mixed))), n // 32),
    ]
    out = []
    for label, unit, recipe, count in workloads:
        plain = median_seconds(lambda: drain(recipe), repeat) / count
        tracked = median_seconds(lambda: drain(pescador.resumable(recipe)), repeat) / count
        out.append([f"zmq_offload(workers=1): {label}: per {unit}, plain", f"{plain * 1e6:.2f} us", "-"])
        out.append([f"zmq_offload(workers=1): {label}: per {unit}, resumable", f"{tracked * 1e6:.2f} us",
                    f"{tracked / plain:.2f}x plain (goal <= 1.3x)"])
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks resume")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--offloaded", type=int, default=100_000, help="items through zmq_offload (0: skip those)")
    args = parser.parse_args(argv)
    n = args.items
    recipe = pescador.mux(10, 16.0, random_state=0)([pescador.stream(rows, t) for t in range(100)])
    t_plain = median_seconds(lambda: consume(recipe, n), args.repeat) / n
    t_resumable = median_seconds(lambda: consume(pescador.resumable(recipe), n), args.repeat) / n
    batched = pescador.buffer(16)(pescador.mux(4, 64.0, random_state=0)([pescador.stream(rows, t) for t in range(64)]))
    nb = n // 16
    b_plain = median_seconds(lambda: consume(batched, nb), args.repeat) / nb
    b_resumable = median_seconds(lambda: consume(pescador.resumable(batched), nb), args.repeat) / nb
    run = pescador.resumable(recipe)
    consume(run, n)
    t_state = median_seconds(run.state_dict, args.repeat)
    state = json.loads(json.dumps(run.state_dict()))

    def resume():
        next(pescador.resumable(recipe, state))

    t_resume = median_seconds(resume, args.repeat)
    table(
        f"mux of 100 generator sources, k=10, lam=16; median of {args.repeat} runs",
        ["what", "cost", "against"],
        [
            ["per item, plain run", f"{t_plain * 1e6:.2f} us", "-"],
            ["per item, resumable run", f"{t_resumable * 1e6:.2f} us", f"{t_resumable / t_plain:.2f}x plain (goal <= 1.2x)"],
            ["buffer(16) over mux(4, 64): per batch, plain", f"{b_plain * 1e6:.2f} us", "-"],
            ["buffer(16) over mux(4, 64): per batch, resumable", f"{b_resumable * 1e6:.2f} us",
             f"{b_resumable / b_plain:.2f}x plain (goal <= 1.3x)"],
            ["state_dict()", f"{t_state * 1e3:.3f} ms, {len(json.dumps(state)):,} bytes of JSON", "-"],
            [f"resume at item {n:,}", f"{t_resume * 1e3:.2f} ms",
             f"replaying {n:,} plain items: {t_plain * n * 1e3:.0f} ms ({t_plain * n / t_resume:.0f}x longer)"],
        ] + (offloaded(args.offloaded, args.repeat) if args.offloaded else []),
    )
