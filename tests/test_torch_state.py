"""Exact mid-epoch checkpoints through torchdata's StatefulDataLoader over pescador.torch.as_dataset.

Needs the optional extras (``pip install '.[torch,torchdata]'``, which
``make test`` installs); without them these tests are skipped, saying why.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import pescador
from pescador import buffer, mux, stream

torch = pytest.importorskip("torch", reason="PyTorch is not installed (make test installs it)")
pytest.importorskip("torchdata.stateful_dataloader", reason="torchdata is not installed (make test installs it)")
import pescador.torch  # noqa: E402
from pescador.torch import as_dataset  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.timeout(120)

#: (num_workers, persistent_workers): every way the loader can run the dataset.
LOADERS = [(0, False), (1, False), (1, True), (2, False), (2, True)]


def noisy(tag, n, random_state=None):
    """A source that draws from its own generator (seeded from its random_state, or the worker's seed)."""
    rng = np.random.default_rng(random_state)
    for i in range(n):
        yield {"x": np.array([[1000 * tag + i, int(rng.integers(1_000_000))]])}


def recipe():
    """A mux without replacement and unseeded (its draws come from the loader's seed) over sources that draw
    too, batched by buffer: every kind of state a run holds."""
    pool = [stream(noisy, tag, 30 + 7 * tag, random_state=tag) for tag in range(5)]
    return buffer(3)(mux(2, 100.0, with_replacement=False)(pool))


def keys(batches) -> list:
    return [b["x"].tolist() for b in batches]


def make(workers, persistent, dataset=None):
    return StatefulDataLoader(as_dataset(recipe()) if dataset is None else dataset, batch_size=None, num_workers=workers,
                              persistent_workers=persistent)


def resume_here(cases: list) -> list:
    """(In the new process) for each saved loader state, the rest of its epoch and the epoch after it."""
    out = []
    for workers, persistent, state in cases:
        loader = make(workers, persistent)
        loader.load_state_dict(state)
        out.append([keys(loader), keys(loader)])
    return out


@pytest.mark.timeout(110)
def test_a_state_saved_mid_epoch_resumes_in_a_new_process_with_exactly_the_rest_of_the_epoch():
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    cases, expected = [], []
    for workers, persistent in LOADERS:
        torch.manual_seed(rng.randrange(2**32))
        loader = make(workers, persistent)
        run = iter(loader)
        cut = rng.randint(0, 40)
        head = keys(next(run) for _ in range(cut))
        state = json.loads(json.dumps(loader.state_dict()))  # (through JSON)
        rest = keys(run)
        assert len(head + rest) > cut + 10  # (a cut mid-epoch)
        cases.append((workers, persistent, state))
        expected.append((rest, keys(loader)))
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_torch_state as t; "
            "print(json.dumps(t.resume_here(json.load(sys.stdin))))")
    proc = subprocess.run([sys.executable, "-c", code, HERE], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=100, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (workers, persistent, _), (rest, after), (got, got_after) in zip(cases, expected, json.loads(proc.stdout)):
        assert got == rest, (workers, persistent, seed)
        if persistent:  # (the workers' seeds go on from the saved epoch; new workers draw the loader's next seed)
            assert got_after == after, (workers, persistent, seed)


PRODUCED = []


def counted(n):
    for i in range(n):
        PRODUCED.append(i)
        yield {"x": np.array([[i]])}


counted.pescador_seek = lambda position, n: (PRODUCED.append(i) or {"x": np.array([[i]])} for i in range(position, n))


def test_a_resumed_loader_draws_no_item_before_the_state_again():
    batches = buffer(2)(stream(counted, 40))
    whole = keys(make(0, False, as_dataset(batches)))
    loader = make(0, False, as_dataset(batches))
    run = iter(loader)
    head = keys(next(run) for _ in range(15))
    state = loader.state_dict()
    PRODUCED.clear()
    again = make(0, False, as_dataset(batches))
    again.load_state_dict(state)
    assert head + keys(again) == whole
    assert PRODUCED == list(range(30, 40))  # (the resumed run began at item 30: nothing drawn again)


def test_a_stateful_loader_gives_the_plain_loaders_batches():
    for workers in (0, 2):
        torch.manual_seed(7)
        plain = keys(torch.utils.data.DataLoader(as_dataset(buffer(3)(mux(2, 9.0, with_replacement=False, random_state=3)(
            [stream(noisy, t, 20, random_state=t) for t in range(4)]))), batch_size=None, num_workers=workers))
        torch.manual_seed(7)
        stateful = keys(make(workers, False, as_dataset(buffer(3)(mux(2, 9.0, with_replacement=False, random_state=3)(
            [stream(noisy, t, 20, random_state=t) for t in range(4)])))))
        assert stateful == plain, workers


def test_loader_stateful_returns_a_stateful_dataloader_that_resumes():
    batches = buffer(4)(stream([{"x": np.array([[i]])} for i in range(40)]))
    loader = pescador.torch.loader(batches, stateful=True)
    assert isinstance(loader, StatefulDataLoader)
    run = iter(loader)
    head = keys(next(run) for _ in range(4))
    again = pescador.torch.loader(batches, stateful=True)
    again.load_state_dict(loader.state_dict())
    assert head + keys(again) == keys(pescador.torch.loader(batches))


def test_a_state_of_another_recipe_is_refused():
    loader = make(0, False)
    run = iter(loader)
    next(run)
    state = loader.state_dict()
    other = make(0, False, as_dataset(buffer(4)(mux(2, 100.0, with_replacement=False)(
        [stream(noisy, tag, 30 + 7 * tag) for tag in range(5)]))))
    other.load_state_dict(state)
    with pytest.raises(pescador.PescadorError, match="another recipe"):
        next(iter(other))


def test_a_recipe_that_cannot_resume_is_refused_by_name_under_a_stateful_loader():
    opaque = pescador.cache(4, prob=0.5, random_state=0)(stream(noisy, 1, 10))
    with pytest.raises(pescador.PescadorError, match="cannot be resumed"):
        next(iter(make(0, False, as_dataset(opaque))))
    assert keys(torch.utils.data.DataLoader(as_dataset(opaque), batch_size=None))  # (plain loaders run it)


def test_a_state_is_refused_of_a_run_begun_without_states():
    run = iter(as_dataset(recipe()))  # (as a plain DataLoader runs it)
    next(run)
    with pytest.raises(pescador.PescadorError, match="StatefulDataLoader"):
        run.state_dict()
    fresh = iter(as_dataset(recipe()))  # (asked before its first item: the run keeps states)
    state = fresh.state_dict()
    first = keys(fresh)
    again = iter(as_dataset(recipe()))
    again.load_state_dict(json.loads(json.dumps(state)))
    assert keys(again) == first
