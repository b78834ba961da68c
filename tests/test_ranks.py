"""Training ranks: worker_info() knows the rank, and sources and exhaustive muxes shard across rank x worker.

Two processes form a torch.distributed group (gloo, on CPU, through a file
store; no RANK/WORLD_SIZE in their environment, so the rank comes from
torch.distributed).  Each runs the same recipes through DataLoader workers,
zmq_offload workers and in-process; the ranks' items must be disjoint and
together complete.  Run as a script, this file is one rank.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import pescador
from pescador.workers import WorkerInfo, compose, rank_info

N = 101


def sharded(n):
    info = pescador.worker_info()
    for i in range(info.id, n, info.count):
        yield {"i": np.array([i])}


def numbers(items):
    return sorted(int(np.asarray(item["i"]).ravel()[0]) for item in items)


def _rank_main(rank: int, store: str) -> None:
    """One rank: join the group, run the recipes, print what each gave (JSON)."""
    import torch
    import torch.distributed as dist

    from pescador.torch import as_dataset

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        loader = torch.utils.data.DataLoader(as_dataset(pescador.stream(sharded, N)), batch_size=None, num_workers=2)
        pool = [pescador.stream([{"i": np.array([100 * v + k])} for k in range(5)]) for v in range(6)]
        out = {
            "info": [pescador.worker_info().rank, pescador.worker_info().world_size],
            "dataloader": numbers({"i": batch["i"].numpy()} for batch in loader),
            "zmq": numbers(pescador.zmq_offload(workers=2, start_method="fork")(pescador.stream(sharded, N))),
            "mux": numbers(pescador.mux(2, None, with_replacement=False, random_state=0)(pool)),
        }
    finally:
        dist.destroy_process_group()
    print(json.dumps(out))


@pytest.mark.timeout(300)
def test_two_gloo_ranks_read_disjoint_complete_shares(tmp_path):
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
                                        + [p for p in [os.environ.get("PYTHONPATH")] if p])
    ranks = [
        subprocess.Popen([sys.executable, os.path.abspath(__file__), str(r), str(tmp_path / "store")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for r in range(2)
    ]
    results = []
    try:
        for process in ranks:
            out, err = process.communicate(timeout=240)
            assert process.returncode == 0, err[-5000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in ranks:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert [r["info"] for r in results] == [[0, 2], [1, 2]]
    for kind, everything in [("dataloader", list(range(N))), ("zmq", list(range(N))),
                             ("mux", sorted(100 * v + k for v in range(6) for k in range(5)))]:
        a, b = results[0][kind], results[1][kind]
        assert a and b, kind
        assert not set(a) & set(b), f"{kind}: the ranks read the same items"
        assert sorted(a + b) == everything, f"{kind}: the ranks together missed items"


def test_rank_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert rank_info() == (1, 3)
    info = pescador.worker_info()
    assert (info.id, info.count, info.rank, info.world_size) == (1, 3, 1, 3)
    assert numbers(pescador.stream(sharded, 10)) == [1, 4, 7]


@pytest.mark.parametrize("rank, world", [("2", "2"), ("-1", "2"), ("a", "2"), ("0", "0")])
def test_bad_rank_environment_is_named(monkeypatch, rank, world):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(pescador.PescadorError, match="RANK=.* and WORLD_SIZE=.*expected integers"):
        pescador.worker_info()


def test_rank_times_worker_shards_and_seeds():
    seeds = np.random.SeedSequence(5).spawn(2)
    infos = [compose(WorkerInfo(w, 2, seeds[w]), r, 3) for r in range(3) for w in range(2)]
    assert [i.id for i in infos] == list(range(6)) and {i.count for i in infos} == {6}
    draws = {tuple(np.random.default_rng(i.seed).integers(0, 2**32, 4)) for i in infos}
    assert len(draws) == 6  # (every rank x worker draws its own numbers)
    assert compose(WorkerInfo(1, 2, seeds[1]), 0, 1) == WorkerInfo(1, 2, seeds[1])  # (one rank: as it was)


if __name__ == "__main__":
    _rank_main(int(sys.argv[1]), sys.argv[2])
