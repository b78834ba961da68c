"""worker_info outside and inside a (simulated) worker."""

import numpy as np

import pescador
from pescador.workers import WorkerInfo, set_worker_info


def shard(files):
    info = pescador.worker_info()
    for path in files[info.id :: info.count]:
        yield {"path": path}


def test_outside_a_worker():
    assert pescador.worker_info() == WorkerInfo(0, 1, None)


def test_sources_can_shard_by_worker():
    files = list("abcdefg")
    seen = []
    seeds = np.random.SeedSequence(7).spawn(3)
    try:
        for i in range(3):
            set_worker_info(WorkerInfo(i, 3, seeds[i]))
            seen += [x["path"] for x in pescador.stream(shard, files)]
    finally:
        set_worker_info(None)
    assert sorted(seen) == files
    assert pescador.worker_info().count == 1
