"""map, filter, unbatch, shuffle and padded batches in a plain run, per item, against the loops they replace.

Each row times a plain run (``iter(recipe)``) of one combinator over a
generator that replays items made beforehand, and the hand-written Python
doing the same over the same generator, in the same run: rounds interleave
the two (each first in turn), and the figure is the median CPU time of the
process per item out (CPU time: on a shared machine, the time other
processes hold the CPU does not count).  The ratio is the
hand-written loop's time over the combinator's (1.0: as fast; the goals of
issue 25 are below it).

- map, filter: a generator expression (``(fn(x) for x in gen)``,
  ``(x for x in gen if pred(x))``); goal >= 0.8.  Twice each: with a
  function that does next to nothing (the stages' whole overhead shows:
  the count of items that an error's note names, about 15 ns an item),
  and with one that does a little numpy work, as a transform does.
- unbatch of (64, 128) float32 batches: a loop yielding
  ``{k: v[i:i + 1] for k, v in batch.items()}`` per row; goal >= 0.9.
- shuffle(1000): a hand-written shuffle buffer drawing numpy's uniform
  numbers in blocks of 1024; goal >= 0.8.
- padded_batch(32) of (time, 128) float32 items, time from 50 to 200: a
  hand-written loop that holds 32 items and copies them into a batch
  allocated for their longest (``np.zeros``), with their lengths; goal >= 0.9.

Two more tables: what a resume of ``shuffle(size)`` replays (the upstream
items drawn again, at checkpoints taken at random places of a run, and the
state's size in JSON: no item is in it), and what ``prefetch`` overlaps (a
source that waits 1 ms per item on I/O under a consumer that works 1 ms per
item).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import pescador

from ._util import table


def replay(items, passes):
    for _ in range(passes):
        yield from items


def touch(item):
    return item


def scaled(item):
    return {"i": item["i"], "x": item["x"] * 2.0}


def even(item):
    return item["i"] & 1 == 0


def small_x(item):
    return item["x"].sum() < 1.0


def by_hand_unbatch(gen):
    for batch in gen:
        rows = len(next(iter(batch.values())))
        for i in range(rows):
            yield {k: v[i : i + 1] for k, v in batch.items()}


def by_hand_shuffle(gen, size, rng):
    buf = []
    for item in gen:
        buf.append(item)
        if len(buf) == size:
            break
    uniforms: list = []
    for item in gen:
        if not uniforms:
            uniforms = rng.random(1024).tolist()
        j = int(uniforms.pop() * size)
        out = buf[j]
        buf[j] = item
        yield out
    while buf:
        if not uniforms:
            uniforms = rng.random(1024).tolist()
        j = int(uniforms.pop() * len(buf))
        last = buf.pop()
        if j < len(buf):
            last, buf[j] = buf[j], last
        yield last


def by_hand_padded(gen, n):
    held = []
    for item in gen:
        held.append(item["x"])
        if len(held) == n:
            lengths = [len(x) for x in held]
            batch = np.zeros((n, max(lengths), held[0].shape[1]), held[0].dtype)
            for i, x in enumerate(held):
                batch[i, : len(x)] = x
            yield {"x": batch, "x_lengths": np.array(lengths, dtype=np.int64)}
            held = []


def per_item(make, count: int) -> float:
    """CPU seconds per item out of one run of ``make()`` (the process's CPU time, not the wall clock: on a
    shared machine, the time other processes take the CPU away does not count)."""
    t0 = time.process_time()
    for _ in make():
        pass
    return (time.process_time() - t0) / count


def speed(args) -> None:
    rng = np.random.default_rng(0)
    small = [{"i": i, "x": np.zeros(4)} for i in range(1000)]
    batches = [{"x": rng.random((64, 128), dtype=np.float32)} for _ in range(50)]
    clips = [{"x": rng.random((int(t), 128), dtype=np.float32)} for t in rng.integers(50, 201, 320)]
    passes = args.passes
    half = [dict(item, x=np.full(4, item["i"] & 1, dtype=float)) for item in small]
    workloads = [  # name, hand-written, pescador, items out per run, goal
        ("map, fn returns its item", "generator expression",
         lambda: (touch(x) for x in replay(small, 200 * passes)),
         pescador.map(touch, pescador.stream(replay, small, 200 * passes)), 200_000 * passes, 0.8),
        ("map, fn scales an array", "generator expression",
         lambda: (scaled(x) for x in replay(small, 50 * passes)),
         pescador.map(scaled, pescador.stream(replay, small, 50 * passes)), 50_000 * passes, 0.8),
        ("filter, pred tests an int", "generator expression",
         lambda: (x for x in replay(small, 200 * passes) if even(x)),
         pescador.filter(even, pescador.stream(replay, small, 200 * passes)), 100_000 * passes, 0.8),
        ("filter, pred sums an array", "generator expression",
         lambda: (x for x in replay(half, 50 * passes) if small_x(x)),
         pescador.filter(small_x, pescador.stream(replay, half, 50 * passes)), 25_000 * passes, 0.8),
        ("unbatch (64, 128)", "loop of {k: v[i:i+1]}",
         lambda: by_hand_unbatch(replay(batches, 40 * passes)),
         pescador.unbatch(pescador.stream(replay, batches, 40 * passes)), 128_000 * passes, 0.9),
        ("shuffle(1000)", "shuffle loop, blocks of draws",
         lambda: by_hand_shuffle(replay(small, 200 * passes), 1000, np.random.default_rng(1)),
         pescador.shuffle(1000, pescador.stream(replay, small, 200 * passes), random_state=1), 200_000 * passes, 0.8),
        ("padded_batch(32) (T, 128)", "loop into np.zeros",
         lambda: by_hand_padded(replay(clips, 5 * passes), 32),
         pescador.padded_batch(32, pescador.stream(replay, clips, 5 * passes), pad="x"), 1600 * passes // 32, 0.9),
    ]
    rows, goals = [], []
    for name, baseline, by_hand, recipe, count, goal in workloads:
        times: dict = {"hand": [], "pescador": []}
        runs = [("hand", by_hand), ("pescador", lambda: iter(recipe))]
        for r in range(args.repeat):  # interleaved, in turn first: a load that comes and goes hits both alike
            for who, make in runs[:: 1 if r % 2 else -1]:
                times[who].append(per_item(make, count))
        hand, ours = statistics.median(times["hand"]), statistics.median(times["pescador"])
        rows.append([name, baseline, hand * 1e9, ours * 1e9, hand / ours])
        goals.append([name, f"{hand / ours:.2f}", f">= {goal}", "met" if hand / ours >= goal else "NOT MET"])
    table(f"plain run, median CPU ns per item out ({args.repeat} interleaved runs); ratio = hand-written / pescador",
          ["combinator", "hand-written", "hand ns", "pescador ns", "ratio"], rows)
    table("goals (issue 25)", ["combinator", "ratio", "goal", ""], goals)


_DRAWN = [0]  # the upstream items a run draws (a resume's replay shows as the draws before its first item);
# a list, which the fingerprint does not take as a constant (a class attribute it would, and the count would change it)


def counting(n):
    for i in range(n):
        _DRAWN[0] += 1
        yield {"i": i, "x": np.zeros(256)}


def counting_from(position, n):  # (so that only shuffle's replay is counted, not the source's own)
    for i in range(position, n):
        _DRAWN[0] += 1
        yield {"i": i, "x": np.zeros(256)}


counting.pescador_seek = counting_from


def resume_cost(args) -> None:
    rows = []
    rng = np.random.default_rng(2)
    for size in (10, 100, 1000, 10_000):
        n = 20 * size + 1000
        recipe = pescador.shuffle(size, pescador.stream(counting, n), random_state=3)
        replayed, seconds, sizes = [], [], []
        for cut in sorted(rng.integers(size + 1, n - size, args.cuts)):
            run = pescador.resumable(recipe)
            for _ in range(cut):
                next(run)
            text = json.dumps(run.state_dict())
            sizes.append(len(text))
            del run
            _DRAWN[0] = 0
            t0 = time.perf_counter()
            resumed = pescador.resumable(recipe, json.loads(text))
            next(resumed)
            seconds.append(time.perf_counter() - t0)
            replayed.append(_DRAWN[0] - 1)  # (the first item after the resume draws one more)
        rows.append([size, statistics.median(replayed), max(replayed), statistics.median(replayed) / size,
                     size * (np.log(size) + 1), statistics.median(seconds) * 1e3, statistics.median(sizes)])
    table(f"shuffle(size): a resume replays the upstream from before the buffer's oldest item ({args.cuts} "
          "checkpoints at random places; a source that seeks, so only shuffle's replay is counted)",
          ["size", "replayed (median)", "replayed (max)", "median / size", "size (ln size + 1)",
           "resume ms (median)", "state bytes"], rows)


def waits(n, seconds):
    for i in range(n):
        time.sleep(seconds)  # (a read that waits on the disk or the network, without the GIL)
        yield {"i": i}


def overlap(args) -> None:
    n, wait = 200, 0.001
    rows = []
    for name, recipe in [("no prefetch", pescador.stream(waits, n, wait)),
                         ("prefetch(8)", pescador.prefetch(8, pescador.stream(waits, n, wait)))]:
        t0 = time.perf_counter()
        for _ in recipe:
            time.sleep(wait)  # (the consumer's work)
        rows.append([name, (time.perf_counter() - t0) / n * 1e3])
    rows = [row + [rows[0][1] / row[1]] for row in rows]
    table("a source waiting 1 ms per item, a consumer working 1 ms per item: ms per item",
          ["run", "ms per item", "speed-up"], rows)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks combinators")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--passes", type=int, default=1, help="scale the runs' lengths")
    parser.add_argument("--cuts", type=int, default=9, help="checkpoints per shuffle size")
    args = parser.parse_args(argv)
    speed(args)
    resume_cost(args)
    overlap(args)
