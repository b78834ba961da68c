"""What checkpoint and resume cost: per item, per checkpoint, and to resume deep into a run.

Workloads: 100 endless generator sources of (1, 10) float32 items, a mux
with k=10 and lam=16 (goal: a resumable run at most 1.2x a plain run per
item); prefetch(64) over that mux (goal: at most 1.3x); and buffer(16) over a mux of 64 such sources with k=4 (goal: at most
1.3x).  Per item: a resumable run against a plain run of the same recipe, in
the same run (medians); both are the same chain of stages, so the difference
is the resumable run's own wrapper.  Per checkpoint: ``state_dict()`` and
its JSON size.  Resume: building a resumed run at item 100,000 and drawing
its first item, against replaying 100,000 items of the plain run (what a
resume by replay of the whole pipeline would cost).

Start and resume costs (issue 24; goal: at most 1 s for a million samples,
at most 3 s for 2 GiB of arrays): ``resumable(stream(samples))`` over a list
of dicts of a (1, 16) float32 array and an int, against making that list;
and a recipe holding 2 GiB of arrays (16 of 128 MiB), against one sha256 of
their bytes (the floor: the fingerprint reads every byte).  Both mostly
cost the recipe's fingerprint.

Through ``zmq_offload(workers=1)`` (issue 24; goal: a resumable run at most
1.3x the plain run's cost per item): a bare source of those items, a mux of
50 of them (k=10, lam=16), and buffer(32) over that mux, each run in the
worker; the consumer reads ``--offloaded`` items (or their batches).
"""

from __future__ import annotations

import argparse
import hashlib
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


def samples(n):
    return [{"X": np.full((1, 16), i % 251, np.float32), "y": i % 10} for i in range(n)]


def arrays_of(arrays):
    for a in arrays:
        yield {"a": a[:4]}


def start_and_resume(recipe, repeat: int) -> tuple:
    """Seconds to start a resumable run of ``recipe``, and to resume it from a state (and draw an item)."""
    run = pescador.resumable(recipe)
    next(run)
    state = json.loads(json.dumps(run.state_dict()))
    t_start = median_seconds(lambda: pescador.resumable(recipe), repeat, warmup=0)
    t_resume = median_seconds(lambda: next(pescador.resumable(recipe, state)), repeat, warmup=0)
    return t_start, t_resume


def costs(args) -> None:
    """The start and resume costs, next to their goals."""
    n = args.samples
    t_make = median_seconds(lambda: samples(n), 3, warmup=0)
    items = samples(n)
    t_start, t_resume = start_and_resume(pescador.stream(items), 3)
    del items
    per = 2 ** 27  # 128 MiB
    arrays = [np.full(per // 8, k, np.float64) for k in range(args.gib * 8)]
    t_floor = median_seconds(lambda: [hashlib.sha256(a).digest() for a in arrays], 3, warmup=0)
    b_start, b_resume = start_and_resume(pescador.stream(arrays_of, arrays), 3)
    gib = f"{args.gib} GiB"
    table(
        "start and resume a resumable run (median of 3; goals from issue 24)",
        ["what", "seconds", "goal", "against"],
        [
            [f"start, stream over {n:,} samples", f"{t_start:.2f}", "<= 1 s for 1e6",
             f"making the list: {t_make:.2f} s ({t_start / t_make:.2f}x)"],
            [f"resume, stream over {n:,} samples", f"{t_resume:.2f}", "<= 1 s for 1e6", "-"],
            [f"start, {gib} of arrays", f"{b_start:.2f}", "<= 3 s for 2 GiB",
             f"one sha256 of the bytes: {t_floor:.2f} s ({b_start / t_floor:.2f}x)"],
            [f"resume, {gib} of arrays", f"{b_resume:.2f}", "<= 3 s for 2 GiB", "-"],
        ],
    )


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
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples for the start cost")
    parser.add_argument("--gib", type=int, default=2, help="GiB of arrays for the start cost")
    parser.add_argument("--only-costs", action="store_true", help="only the start and resume costs")
    parser.add_argument("--offloaded", type=int, default=100_000, help="items through zmq_offload (0: skip those)")
    args = parser.parse_args(argv)
    costs(args)
    if args.only_costs:
        return
    n = args.items
    recipe = pescador.mux(10, 16.0, random_state=0)([pescador.stream(rows, t) for t in range(100)])
    t_plain = median_seconds(lambda: consume(recipe, n), args.repeat) / n
    t_resumable = median_seconds(lambda: consume(pescador.resumable(recipe), n), args.repeat) / n
    batched = pescador.buffer(16)(pescador.mux(4, 64.0, random_state=0)([pescador.stream(rows, t) for t in range(64)]))
    nb = n // 16
    b_plain = median_seconds(lambda: consume(batched, nb), args.repeat) / nb
    b_resumable = median_seconds(lambda: consume(pescador.resumable(batched), nb), args.repeat) / nb
    fetched = pescador.prefetch(64)(recipe)
    p_plain = median_seconds(lambda: consume(fetched, n), args.repeat) / n
    p_resumable = median_seconds(lambda: consume(pescador.resumable(fetched), n), args.repeat) / n
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
            ["prefetch(64) over the mux: per item, plain", f"{p_plain * 1e6:.2f} us", "-"],
            ["prefetch(64) over the mux: per item, resumable", f"{p_resumable * 1e6:.2f} us",
             f"{p_resumable / p_plain:.2f}x plain (goal <= 1.3x)"],
            ["state_dict()", f"{t_state * 1e3:.3f} ms, {len(json.dumps(state)):,} bytes of JSON", "-"],
            [f"resume at item {n:,}", f"{t_resume * 1e3:.2f} ms",
             f"replaying {n:,} plain items: {t_plain * n * 1e3:.0f} ms ({t_plain * n / t_resume:.0f}x longer)"],
        ] + (offloaded(args.offloaded, args.repeat) if args.offloaded else []),
    )
