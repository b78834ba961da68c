"""Workers take turns: with a slow consumer, every worker (or Ray share) with items ready supplies its share.

The promise (docs/parallel.rst, "Several workers"): the consumer takes one
item in turn from each worker that has one ready, whatever its speed, and
the small items that share a message are handed out in turn with the other
workers' items, not as a block.

How the bounds follow.  Each test first lets every worker run ``AHEAD``
items ahead of the consumer (a source leaves a mark once it has made that
many; the consumer waits for every mark), more than the test will take from
any worker, so from then on every worker has items ready at every turn.
Strict turns then make the sequence of workers periodic: in every window of
consecutive items, two workers' counts differ by at most one.  Under
``epochs`` over files sharded across workers, each worker reads its files
epoch after epoch, so while the workers' deliveries stay within two items of
each other (the first item, taken before the wait, is one of them), every
file's count stays within one file's length (``ROWS``) of every other's.

ray_offload runs the same checks on a real Ray cluster (tests/ray_cases.py).
"""

from __future__ import annotations

import collections
import itertools
import os
import time

import numpy as np
import pytest

import pescador
from pescador import stream, zmq_offload

AHEAD = 400  # items each worker makes before the consumer goes on (more than a test takes from one worker)
TAKEN = 400  # items the window test takes after the wait
ROWS = 20  # items in each of the 8 files of the epochs test
EPOCHS = 4  # epochs' worth of items the epochs test takes

_made: collections.Counter = collections.Counter()  # (in each worker process) items made, per marks directory


def _made_one(marks: str) -> None:
    """Count an item made in this process; leave this worker's mark once it has made ``AHEAD``."""
    _made[marks] += 1
    if _made[marks] == AHEAD:
        open(os.path.join(marks, f"worker-{pescador.worker_info().id}"), "w").close()


def tagged(marks):
    """Endless items that say which worker made them."""
    wid = pescador.worker_info().id
    for i in itertools.count():
        _made_one(marks)
        yield {"w": np.array([wid]), "i": np.array([i])}


def file_rows(name, rows, marks):
    """The rows of one file (a pool member: exhaustive muxes and epochs shard the pool across workers)."""
    for row in range(rows):
        _made_one(marks)
        yield {"file": np.array([name]), "row": np.array([row])}


def wait_for_marks(marks, workers, seconds=60.0):
    """Wait until every worker has made ``AHEAD`` items (it left its mark)."""
    deadline = time.monotonic() + seconds
    while len(os.listdir(marks)) < workers:
        assert time.monotonic() < deadline, f"only {sorted(os.listdir(marks))} of {workers} workers ran ahead"
        time.sleep(0.01)
    time.sleep(0.2)  # (what a worker held for its next message has left it)


def slowly(run, n, key):
    """``key`` of the next ``n`` items of ``run``, taking a millisecond over each (a training step)."""
    out = []
    for item in itertools.islice(run, n):
        out.append(int(np.asarray(item[key]).ravel()[0]))
        time.sleep(0.001)
    return out


def worst_window(workers_seen, workers):
    """The largest difference between two workers' counts, over every window of consecutive items."""
    onehot = np.eye(workers, dtype=np.int64)[np.asarray(workers_seen)]
    cumulative = np.vstack([np.zeros((1, workers), np.int64), np.cumsum(onehot, axis=0)])
    worst = 0
    for length in range(1, len(workers_seen) + 1):
        counts = cumulative[length:] - cumulative[:-length]
        worst = max(worst, int((counts.max(axis=1) - counts.min(axis=1)).max()))
    return worst


def turns(offload, workers, marks):
    """The workers of ``TAKEN`` items taken slowly once every worker has run ahead."""
    run = iter(offload(stream(tagged, str(marks))))
    try:
        next(run)
        wait_for_marks(marks, workers)
        return slowly(run, TAKEN, "w")
    finally:
        run.close()


def files_read(offload, workers, marks):
    """How often each of 8 files was read in ``EPOCHS`` epochs' worth of items (after every worker ran ahead)."""
    pool = [stream(file_rows, name, ROWS, str(marks)) for name in range(8)]
    run = iter(offload(pescador.epochs(random_state=0)(pool)))
    try:
        first = int(next(run)["file"][0])
        wait_for_marks(marks, workers)
        return collections.Counter([first] + slowly(run, EPOCHS * 8 * ROWS, "file"))
    finally:
        run.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_take_turns_item_by_item_with_a_slow_consumer(workers, tmp_path):
    seen = turns(zmq_offload(workers=workers), workers, tmp_path)
    assert worst_window(seen, workers) <= 1, collections.Counter(seen)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [2, 4])
def test_under_epochs_every_file_is_read_about_as_often(workers, tmp_path):
    counts = files_read(zmq_offload(workers=workers), workers, tmp_path)
    assert sorted(counts) == list(range(8))
    assert max(counts.values()) - min(counts.values()) <= ROWS, counts


def test_the_window_check_sees_a_block():
    """(The check itself: one worker's block of items in a row is caught, strict turns pass.)"""
    assert worst_window([0, 1] * 10, 2) == 1
    assert worst_window([0, 1, 2, 3] * 5, 4) == 1
    assert worst_window([0, 1, 0, 0, 1], 2) == 2
