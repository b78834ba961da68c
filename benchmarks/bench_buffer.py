"""buffer(n) throughput against the loops it replaces, measured in the same run (medians).

Two workloads, the items made beforehand and replayed by a generator:

- (1, 128) float32 items into batches of 64.  Goal: at least 0.9x "a loop
  + np.concatenate" (issue 24), which slices the list of items.  That loop
  holds every item until its batch is full, which ``buffer`` must not do (a
  source may overwrite its arrays once it runs again), so a second baseline
  does what ``buffer`` does: it copies each item at once into a new batch.
  A third, "generator + np.concatenate", is what a user writes instead of
  ``buffer``: the same loop, drawing the items from the same generator.
- (1, 3, 224, 224) float32 items into batches of 32 (20 batches of items,
  replayed 5 times: 100 batches per run).  Goal: at least 0.95x
  "memcpy into two batches in turn" (issue 24; ``np.concatenate(...,
  out=batch)`` into two batches allocated once, in turn).  "memcpy into new batches" allocates each batch,
  as ``buffer`` must when the consumer keeps its batches; the gap between
  the two is the kernel's page faults (and zeroing) of fresh memory.
  ``buffer`` fills a batch again once nothing holds it; a consumer holds
  the last batch while the next one fills, so "memcpy into two batches in
  turn" is the floor for batches that are never overwritten while held
  (one reused batch of 19 MB also stays in a 32 MB L3 cache; two do not).

Two more rows put ``buffer`` in context: "draw only" runs the same
recipe's items through pescador's stream without batching them (the floor
for any re-batching stage: what the items cost to draw), and, with
``--against PATH``, "buffer (PATH)" runs another ``buffered.py`` (say the
code before a change: ``git show stage14:pescador/buffered.py >
/tmp/buffered_old.py``) in the same run, for an A/B.

Figures are medians of the CPU time per batch (``time.process_time``: on
a shared machine, time spent waiting for a core does not count; each batch
timed on its own, so that another process preempting a few batches does
not move them).  The ratio column is the baseline's time over
``buffer``'s (above 1: buffer is faster).  The goals table gives, beside
buffer's ratio, the ratio of two floors written by hand: "copied at once,
no checks" (the least the promise to copy each item at once costs) and
"copied at once, buffer's checks" (the same with the least check that
refuses what buffer refuses): buffer cannot beat the second.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

import numpy as np

import pescador

from pescador.core import Transform
from pescador.stage import start

from ._util import table


def replay(items, passes=1):
    for _ in range(passes):
        yield from items


def concatenated(items, n, passes):
    """The loop of issue 15: slices of the item list, concatenated per batch."""
    for _ in range(passes):
        for i in range(0, len(items) - n + 1, n):
            yield {"X": np.concatenate([item["X"] for item in items[i : i + n]])}


def concatenated_from_the_generator(items, n, passes):
    """What a user writes instead of buffer: the same generator's items drawn one by one, held, and
    concatenated per batch (holding them is safe here only because this source never reuses its arrays)."""
    held = []
    for item in replay(items, passes):
        held.append(item["X"])
        if len(held) == n:
            yield {"X": np.concatenate(held)}
            held = []


def copied_at_once(items, n, shape, passes):
    """What buffer does, written by hand for one key of fixed rows: each item copied as it comes."""
    batch, filled = np.empty((n, *shape[1:]), np.float32), 0
    for item in replay(items, passes):
        x = item["X"]
        batch[filled : filled + len(x)] = x
        filled += len(x)
        if filled == n:
            yield {"X": batch}
            batch, filled = np.empty((n, *shape[1:]), np.float32), 0


def copied_at_once_unchecked(items, n, pair, passes):
    """The floor of buffer's promise by hand: each item copied at once (before the next one is drawn: a source
    may overwrite its arrays), with the cheapest numpy copy of a row (``row[...] = x`` into a view of the
    batch's row, made once), into two batches in turn, and no check of any item (buffer checks each item's
    keys, type, dtype and shape, and names a bad one)."""
    rows = [list(batch) for batch in pair]
    run, k = replay(items, passes), 0
    while True:
        k += 1
        into, i = rows[k % 2], -1
        for i, item in zip(range(n), run):
            into[i][...] = item["X"]
        if i < n - 1:
            return
        yield pair[k % 2]


def copied_at_once_checked(items, n, pair, passes):
    """The floor of buffer's promise and its refusals by hand: each item copied at once into a view of its
    batch's row (as "copied at once, no checks"), after the least check that refuses what buffer refuses (a
    dict of the one key, a plain array of the batch's dtype, of as many dimensions and elements as (1, *trail):
    numpy refuses any other shape of these counts, and would broadcast a (1, 1) row without a word); buffer
    adds its bookkeeping (batches filled again only once nobody holds them, positions for its messages, the
    end of the run) and names a bad item instead of raising a bare error."""
    rows = [list(batch) for batch in pair]
    dtype, ndim, size, key, ndarray = pair[0].dtype, pair[0].ndim, pair[0][0].size, "X", np.ndarray
    run, k = replay(items, passes), 0
    while True:
        k += 1
        into, i = rows[k % 2], -1
        for i, item in zip(range(n), run):
            if item.__class__ is dict and len(item) == 1:
                try:
                    x = item[key]
                except KeyError:
                    x = None
                if x.__class__ is ndarray and x.dtype is dtype and x.ndim == ndim and x.size == size:
                    into[i][...] = x  # (numpy raises ValueError for any other shape of as many elements)
                    continue
            raise ValueError(f"item {i}: not a (1, ...) row of the batch's dtype")
        if i < n - 1:
            return
        yield pair[k % 2]


def into_one_batch(items, n, batch, passes):
    """memcpy into a reused batch: the same batch filled again and again."""
    for _ in range(passes):
        for i in range(0, len(items) - n + 1, n):
            np.concatenate([item["X"] for item in items[i : i + n]], out=batch)
            yield batch


def into_two_batches(items, n, pair, passes):
    """memcpy into two batches in turn: the least a consumer that holds one batch while the next
    fills allows (what buffer reaches when its consumer lets go of each batch)."""
    k = 0
    for _ in range(passes):
        for i in range(0, len(items) - n + 1, n):
            k += 1
            np.concatenate([item["X"] for item in items[i : i + n]], out=pair[k % 2])
            yield pair[k % 2]


def into_new_batches(items, n, shape, passes):
    """memcpy into a new batch each time (fresh memory)."""
    for _ in range(passes):
        for i in range(0, len(items) - n + 1, n):
            batch = np.empty((n, *shape[1:]), np.float32)
            np.concatenate([item["X"] for item in items[i : i + n]], out=batch)
            yield batch


def drawn(recipe, n):
    """The recipe's items drawn through pescador (as buffer draws them), n at a time, not batched."""
    pull, count = start(recipe).__next__, 0
    while True:
        try:
            pull()
        except StopIteration:
            return
        count += 1
        if count == n:
            count = 0
            yield None


def load_buffer(path: str) -> type:
    """The buffer stage class of another ``buffered.py`` (imported inside the pescador package)."""
    spec = importlib.util.spec_from_file_location("pescador._buffered_against", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._Buffer


def batch_seconds(make, repeat: int) -> float:
    """The median CPU time per batch over ``repeat`` runs of ``make()`` (each batch timed on its own: a
    batch that another process preempted does not move the median)."""
    times = []
    for _ in range(repeat):
        clock = time.process_time
        then = clock()
        for _ in make():
            now = clock()
            times.append(now - then)
            then = now
    return statistics.median(times)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks buffer")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--against", metavar="PATH", help="another buffered.py to time in the same run")
    args = parser.parse_args(argv)
    against = load_buffer(args.against) if args.against else None
    rows, goals = [], []
    # (the large items are replayed 5 times: 100 batches a run, as a training run is long)
    workloads = [
        ((1, 128), 64, 2000, 1, "loop + np.concatenate", 0.9),
        ((1, 3, 224, 224), 32, 20, 5, "memcpy into two batches in turn", 0.95),
    ]
    for shape, n, made, passes, goal_baseline, goal in workloads:
        rng = np.random.default_rng(0)
        items = [{"X": rng.random(shape, dtype=np.float32)} for _ in range(n * made)]
        batches = made * passes
        megabytes = passes * len(items) * items[0]["X"].nbytes / 1e6
        source = pescador.stream(replay, items, passes)
        recipe = pescador.buffer(n, source)
        reused = np.empty((n, *shape[1:]), np.float32)
        pair = [reused, np.empty_like(reused)]
        methods = {
            "loop + np.concatenate": lambda: concatenated(items, n, passes),
            "generator + np.concatenate": lambda: concatenated_from_the_generator(items, n, passes),
            "loop, copied at once": lambda: copied_at_once(items, n, shape, passes),
            "copied at once, no checks": lambda: copied_at_once_unchecked(items, n, pair, passes),
            "copied at once, buffer's checks": lambda: copied_at_once_checked(items, n, pair, passes),
            "memcpy into a reused batch": lambda: into_one_batch(items, n, reused, passes),
            "memcpy into two batches in turn": lambda: into_two_batches(items, n, pair, passes),
            "memcpy into new batches": lambda: into_new_batches(items, n, shape, passes),
            "draw only": lambda: drawn(source, n),
            "buffer": lambda: iter(recipe),
        }
        if against is not None:
            other = Transform("buffer", against, {"n": n, "strict": True})(source)
            methods[f"buffer ({args.against})"] = lambda: iter(other)
        times: dict = {}
        for _ in range(3):  # interleaved rounds: a load that comes and goes hits every method alike
            for name, make in methods.items():
                times.setdefault(name, []).append(batch_seconds(make, args.repeat))
        t = {name: statistics.median(values) for name, values in times.items()}
        label = f"{shape} -> {n}"
        for name, seconds in t.items():
            rows.append([label, name, megabytes / batches / seconds, seconds * 1e6, t[name] / t["buffer"]])
        floors = [t["copied at once, no checks"], t["copied at once, buffer's checks"]]
        base = t[goal_baseline]
        goals.append([label, goal_baseline, base / t["buffer"], *(base / f for f in floors), f">= {goal}"])
        if goal_baseline == "loop + np.concatenate":  # (the same loop, drawing from the generator)
            base = t["generator + np.concatenate"]
            goals.append([label, "generator + np.concatenate", base / t["buffer"], *(base / f for f in floors), "-"])
    table(
        f"median CPU time per batch ({args.repeat} runs in each of 3 interleaved rounds); ratio = method's time / "
        f"buffer's; load average {os.getloadavg()[0]:.1f}",
        ["workload", "method", "MB/s", "us/batch", "ratio"],
        rows,
    )
    table("goals (issue 24; pescador 3.0 on these workloads, beside ours: python -m benchmarks peers); the floors "
          "by hand: each item copied at once, without checks and with the least check that refuses what buffer does",
          ["workload", "baseline", "buffer's ratio", "no checks' ratio", "buffer's checks' ratio", "goal"], goals)
