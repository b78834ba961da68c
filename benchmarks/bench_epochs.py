"""Epochs: the first batch of the next epoch with persistent workers, against a first epoch and a DataLoader.

Workload: an epoch of 200 batches of buffer(16) over a mux (k=4, lam=16)
of 64 endless generator sources of (1, 10) float32 rows (bench_torch's
recipe), in two worker processes.

For each start method (fork, forkserver, spawn), the seconds from asking
for a run to its first batch (medians, all in one run):

- ``zmq_offload(workers=2, persistent_workers=True)``, epoch 2 and later
  (after a complete epoch: the workers wait for the next run); issue 26's
  goal: at most 5 ms;
- the same recipe's epoch 1 (no workers yet: they start), and a run of
  ``zmq_offload(workers=2)`` without persistent workers (every epoch pays
  that);
- ``DataLoader(as_dataset(recipe), num_workers=2, persistent_workers=True)``,
  epoch 2 and later, on the same recipe.

``python -m benchmarks epochs [--repeat R] [--methods fork,spawn]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import pescador

from ._util import table
from .bench_torch import recipe

EPOCH = 200  # batches
GOAL = 5e-3  # seconds to the first batch of a persistent epoch (issue 26)


def _first_batches(start_epoch, finish_epoch, repeat: int) -> list:
    """Seconds to the first batch of each of ``repeat`` epochs, each epoch then finished (untimed)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run = start_epoch()
        times.append(time.perf_counter() - t0)
        finish_epoch(run)
    return times


def _zmq(method: str, persistent: bool, repeat: int) -> tuple:
    """(first epoch's first batch, median of the next epochs' first batches), in seconds."""
    offloaded = pescador.zmq_offload(workers=2, start_method=method, persistent_workers=persistent)(
        pescador.take(EPOCH, recipe()))

    def start():
        run = iter(offloaded)
        next(run)
        return run

    def finish(run):
        assert sum(1 for _ in run) == 2 * EPOCH - 1  # (each worker runs the recipe: two epochs' worth)

    try:
        first = _first_batches(start, finish, 1)[0]
        later = _first_batches(start, finish, repeat)
    finally:
        offloaded.close()
    return first, statistics.median(later)


def _dataloader(method: str, repeat: int) -> tuple:
    import torch

    from pescador.torch import as_dataset

    loader = torch.utils.data.DataLoader(as_dataset(pescador.take(EPOCH, recipe())), batch_size=None, num_workers=2,
                                         persistent_workers=True, multiprocessing_context=method)

    def start():
        run = iter(loader)
        next(run)
        return run

    def finish(run):
        for _ in run:
            pass

    first = _first_batches(start, finish, 1)[0]
    later = _first_batches(start, finish, repeat)
    del loader
    return first, statistics.median(later)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks epochs")
    parser.add_argument("--repeat", type=int, default=7, help="epochs timed after the first")
    parser.add_argument("--methods", default="fork,forkserver,spawn")
    args = parser.parse_args(argv)
    out = []
    for method in args.methods.split(","):
        first, later = _zmq(method, True, args.repeat)
        fresh, fresh_later = _zmq(method, False, args.repeat)
        dl_first, dl_later = _dataloader(method, args.repeat)
        out.append([method, f"{later * 1e3:.2f} ms", "yes" if later <= GOAL else "NO", f"{first * 1e3:.0f} ms",
                    f"{fresh_later * 1e3:.0f} ms", f"{fresh_later / later:.0f}x", f"{dl_later * 1e3:.2f} ms",
                    f"{dl_later / later:.2f}x", f"{dl_first * 1e3:.0f} ms"])
    table(f"seconds to an epoch's first batch, 2 workers (epoch of {EPOCH} batches; medians of {args.repeat} epochs)",
          ["start method", "persistent, epoch 2+", f"<= {GOAL * 1e3:.0f} ms (goal)", "persistent, epoch 1",
           "not persistent, each epoch", "not persistent / persistent", "DataLoader persistent, epoch 2+",
           "DataLoader / ours", "DataLoader, epoch 1"], out)
