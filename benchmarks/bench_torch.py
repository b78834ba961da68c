"""PyTorch loaders: what exact checkpoints cost per batch, and resuming deep into an epoch.

Workload: buffer(16) over a mux (k=4, lam=16) of 64 endless generator
sources of (1, 10) float32 rows, as in bench_resume.

- Per batch: ``StatefulDataLoader(as_dataset(recipe))`` (a state after every
  batch: ``snapshot_every_n_steps=1``, its default) against a plain
  ``DataLoader`` over the same dataset, ``num_workers`` 0 and 2, in the same
  run (medians).
- Resume at batch 100, 1,000 and 10,000 (issue 26; goal: at least 100x
  faster than skipping at 10,000, and flat in the batch number): the seconds
  from a new loader given the saved state to its first batch, ours (the
  dataset's runs say where they are) against StatefulDataLoader over a
  dataset without a state, which skips through every batch since the epoch
  began; beside the first batch of a fresh loader (the floor).

``python -m benchmarks torch [--batches N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

import pescador

from ._util import median_seconds, medians_side_by_side, table


def rows(tag):
    x = np.full((1, 10), tag, dtype=np.float32)
    while True:
        yield {"X": x}


def recipe():
    return pescador.buffer(16)(pescador.mux(4, 16.0, random_state=0)([pescador.stream(rows, t) for t in range(64)]))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks torch")
    parser.add_argument("--batches", type=int, default=3000, help="batches per timed epoch (per batch costs)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    import torch
    from torchdata.stateful_dataloader import StatefulDataLoader

    from pescador.torch import as_dataset

    class NoState(torch.utils.data.IterableDataset):
        """The recipe as a dataset that cannot say where it is (StatefulDataLoader then skips)."""

        def __iter__(self):
            return (pescador.torch._tensors(item) for item in recipe())

    n = args.batches
    dataset = as_dataset(pescador.take(n, recipe()))
    out = []
    for workers in (0, 2):
        plain = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
        stateful = StatefulDataLoader(dataset, batch_size=None, num_workers=workers)
        t_plain, t_state = medians_side_by_side([lambda: sum(1 for _ in plain), lambda: sum(1 for _ in stateful)],
                                                args.repeat)
        out.append([f"per batch, num_workers={workers}", f"{t_plain / n * 1e6:.1f} us", f"{t_state / n * 1e6:.1f} us",
                    f"{t_state / t_plain:.2f}x"])
    run = iter(as_dataset(recipe()))
    run.state_dict()  # (asked before the first batch: the run keeps states)
    t_next = median_seconds(lambda: [next(run) for _ in range(1000)], args.repeat) / 1000
    t_state = median_seconds(lambda: [run.state_dict() for _ in range(1000)], args.repeat) / 1000
    out.append(["iter(as_dataset(recipe)): next() and state_dict()", f"{t_next * 1e6:.1f} us",
                f"{t_state * 1e6:.1f} us", f"{t_state / t_next:.2f}x"])
    table(f"per batch over an epoch of {n:,} batches (median of {args.repeat}; includes starting the workers)",
          ["what", "DataLoader", "StatefulDataLoader", "ratio"], out)

    out = []
    for workers in (0, 2):
        fresh = median_seconds(lambda: next(iter(StatefulDataLoader(as_dataset(recipe()), batch_size=None,
                                                                     num_workers=workers))), 3)
        for at in (100, 1000, 10000):
            states = []
            for dataset in (as_dataset(recipe()), NoState()):
                loader = StatefulDataLoader(dataset, batch_size=None, num_workers=workers)
                for _ in itertools.islice(loader, at):
                    pass
                states.append(json.loads(json.dumps(loader.state_dict())) if workers == 0 else loader.state_dict())
                del loader

            def resumed(dataset, state):
                loader = StatefulDataLoader(dataset, batch_size=None, num_workers=workers)
                loader.load_state_dict(state)
                return next(iter(loader))

            t_ours = median_seconds(lambda: resumed(as_dataset(recipe()), states[0]), args.repeat)
            t_skip = median_seconds(lambda: resumed(NoState(), states[1]), max(1, args.repeat // 2), warmup=0)
            out.append([f"num_workers={workers}, at batch {at:,}", f"{t_ours * 1e3:.1f} ms", f"{t_skip * 1e3:.1f} ms",
                        f"{t_skip / t_ours:.1f}x", f"{fresh * 1e3:.1f} ms"])
    table("resume: seconds from a new loader with the saved state to its first batch (medians)",
          ["where", "ours", "skipping", "skipping / ours", "a fresh loader's first batch"], out)
