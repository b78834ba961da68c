"""What observers cost per item when nobody reads them.

``measure(meter)`` against the same stream without it, and
``mux(..., stats=MuxStats())`` against the same mux without stats, in the
same run (medians).  Goal: under one microsecond per item each.  And the
same mux in two ``zmq_offload`` workers, with a ``MuxStats`` and a ``measure``
reporting to this process, against the same without (the reports cost the
workers' item loops nothing; their threads wake ten times a second).
"""

from __future__ import annotations

import argparse

import numpy as np

import pescador

from ._util import median_seconds, table


def rows(seed):
    x = np.full((1, 10), seed, dtype=np.float32)
    y = np.array([seed])
    while True:
        yield {"X": x, "Y": y}


def consume(recipe):
    for _ in recipe:
        pass


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks observe")
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    n = args.items
    source = pescador.stream(rows, 0)
    pool = [pescador.stream(rows, i) for i in range(100)]
    pairs = [
        ("stream", pescador.take(n, source), "+ measure(meter)", pescador.take(n, pescador.measure(pescador.Meter())(source))),
        (
            "mux(10, lam=16)",
            pescador.take(n, pescador.mux(10, 16, random_state=0)(pool)),
            "+ stats=MuxStats()",
            pescador.take(n, pescador.mux(10, 16, random_state=0, stats=pescador.MuxStats())(pool)),
        ),
    ]
    # the same mux in two workers, with and without a MuxStats and a Meter reporting to this process
    m = max(1, n // 3)
    offload = pescador.zmq_offload(workers=2, start_method="fork")
    stats, meter = pescador.MuxStats(), pescador.Meter()
    pairs.append((
        "zmq_offload(mux)",
        offload(pescador.take(m, pescador.mux(10, 16, random_state=0)(pool))),
        "+ stats, meter (reported)",
        offload(pescador.take(m, pescador.measure(meter)(pescador.mux(10, 16, random_state=0, stats=stats)(pool)))),
    ))
    out = []
    for base_name, base, name, observed in pairs:
        n = 2 * m if base_name.startswith("zmq") else args.items  # (items per run: each worker takes m)
        t_base = median_seconds(lambda: consume(base), args.repeat) / n
        t_obs = median_seconds(lambda: consume(observed), args.repeat) / n
        out.append([base_name, name, t_base * 1e6, t_obs * 1e6, (t_obs - t_base) * 1e6])
    table(
        f"{args.items:,} items ({2 * m:,} through zmq_offload), median of {args.repeat} runs",
        ["baseline", "observer", "baseline us/item", "observed us/item", "cost us/item"],
        out,
    )
