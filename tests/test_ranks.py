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

    from pescador.torch import as_dataset, loader as torch_loader

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
        uneven = pescador.mux(2, None, with_replacement=False)(uneven_pool())  # 5 batches on rank 0, 4 on rank 1
        even = torch_loader(uneven)  # (even="drop" by default)
        out["even"] = [pescador.epoch_length(uneven), len(even), len(list(even))]
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
    assert [r["even"] for r in results] == [[5, 4, 4], [4, 4, 4]]  # each rank's share; the same count on both
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


# -- lengths per rank, and the same number of batches on every rank --------------------------------

FILES = (3, 2, 2, 2)  # batches in each file: rank 0 of 2 reads files 0 and 2 (5), rank 1 files 1 and 3 (4)


def uneven_pool():
    return [pescador.stream([{"i": np.array([10 * f + b])} for b in range(n)]) for f, n in enumerate(FILES)]


def on_rank(monkeypatch, rank, world=2):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


@pytest.mark.parametrize("make", [
    lambda: pescador.mux(2, None, with_replacement=False)(uneven_pool()),
    lambda: pescador.epochs(1)(uneven_pool()),
    lambda: pescador.zmq_offload(workers=2)(pescador.mux(2, None, with_replacement=False)(uneven_pool())),
])
def test_epoch_length_counts_this_ranks_share(monkeypatch, make):
    recipe = make()
    for rank in range(2):
        on_rank(monkeypatch, rank)
        assert pescador.epoch_length(recipe) == len(list(recipe)), rank
        assert pescador.epoch_length(recipe, even="drop") == 4
        assert pescador.epoch_length(recipe, even="pad") == 5


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("even, expected", [("drop", 4), ("pad", 5), (None, None)])
def test_every_rank_gets_the_same_number_of_batches_from_the_loader(monkeypatch, workers, even, expected):
    pytest.importorskip("torch")
    import pescador.torch

    epoch = pescador.mux(2, None, with_replacement=False)(uneven_pool())
    for rank in range(2):
        on_rank(monkeypatch, rank)
        loader = pescador.torch.loader(epoch, num_workers=workers, even=even)
        got = [int(batch["i"][0]) for batch in loader]
        assert len(loader) == len(got) == (expected or (5, 4)[rank]), (rank, got)
        assert len(set(got)) == min(len(got), (5, 4)[rank])  # (dropped or padded, not duplicated otherwise)


def test_keras_steps_are_the_same_on_every_rank(monkeypatch):
    pytest.importorskip("keras")
    import pescador.keras

    epoch = pescador.keras_tuples("i")(pescador.mux(2, None, with_replacement=False)(uneven_pool()))
    for rank in range(2):
        on_rank(monkeypatch, rank)
        assert len(pescador.keras.dataset(epoch)) == 4
        assert len(pescador.keras.dataset(epoch, even="pad")) == 5
        assert len(pescador.keras.dataset(epoch, even=None)) == (5, 4)[rank]


def test_a_bad_even_is_refused_by_name():
    with pytest.raises(pescador.PescadorError, match=r"epoch_length: even must be None .*'drop'.*'pad'.*got 'trim'"):
        pescador.epoch_length(pescador.stream([1]), even="trim")


if __name__ == "__main__":
    _rank_main(int(sys.argv[1]), sys.argv[2])
