"""Randomness across workers and epochs: nothing duplicated, every epoch drawn anew, runs reproducible.

Every kind of ``random_state`` (None, int, ``Generator``, ``RandomState``) is
run through ``zmq_offload(workers=2)`` (forked and spawned workers) and
``DataLoader(num_workers=2)``.
A pool run without replacement is sharded, so each item arrives exactly once;
a mux with replacement samples in every worker, and the workers' choices
must differ (a copied generator would make both deliver the same items).
Through persistent ``DataLoader`` workers every epoch draws anew, and a
whole run repeats from one ``torch.manual_seed``.

The cases that start processes run in a subprocess of their own session,
killed if they do not finish in time (a hang fails fast).
"""

import collections
import itertools
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import pescador
from pescador import stream, take
from pescador.mux import shuffled_mux
from pescador.workers import WorkerInfo, set_worker_info

TESTS = os.path.dirname(os.path.abspath(__file__))
KINDS = ["none", "int", "generator", "randomstate"]
SIZES = [7, 0, 12, 5, 9, 3, 4]


def random_state(kind):
    makers = {"none": lambda: None, "int": lambda: 5, "generator": lambda: np.random.default_rng(5),
              "randomstate": lambda: np.random.RandomState(5)}
    return makers[kind]()


# -- sources (module-level: they pickle) -----------------------------------------------------


def source(tag, n):
    """Items ``{w: the worker, k: 100000 * tag + position}``."""
    w = pescador.worker_info().id
    for i in range(n):
        yield {"w": np.array([w]), "k": np.array([tag * 100_000 + i])}


def seeded_source(n):
    """Draws from a generator made of ``worker_info().seed``."""
    info = pescador.worker_info()
    rng = np.random.default_rng(info.seed)
    for _ in range(n):
        yield {"w": np.array([info.id]), "k": rng.integers(0, 10**9, size=1)}


def global_source(n):
    """Draws from numpy's legacy global generator (seeded by torch in its workers)."""
    w = pescador.worker_info().id
    for _ in range(n):
        yield {"w": np.array([w]), "k": np.array([np.random.randint(0, 10**9)])}


def endless_pool():
    return [stream(source, tag, 10**9) for tag in range(6)]


def finite_pool(sizes=SIZES):
    return [stream(source, tag, n) for tag, n in enumerate(sizes)]


def pairs(items):
    return [(int(x["w"][0]), int(x["k"][0])) for x in items]


def per_worker(delivered):
    return {str(w): [k for v, k in delivered if v == w] for w in (0, 1)}


# -- the cases run in a subprocess -----------------------------------------------------------


def run(runner, recipe, base):
    """The items of one run through two workers, whose seeds come from ``base``."""
    if runner.startswith("zmq"):  # "zmq": the platform's start method; "zmq-spawn": the recipe is pickled
        start_method = "spawn" if runner == "zmq-spawn" else None
        return pairs(pescador.zmq_offload(workers=2, random_state=base, start_method=start_method)(recipe))
    import torch

    from pescador.torch import as_dataset

    torch.manual_seed(base)
    return pairs(torch.utils.data.DataLoader(as_dataset(recipe), batch_size=None, num_workers=2))


def workers_case(runner):
    """For each kind of random_state: an exhaustive pool's items, and three runs of a mux with replacement."""
    out = {}
    for kind in KINDS:
        rs = random_state(kind)  # (only copies of it run: the workers are other processes)
        once = run(runner, pescador.mux(2, None, with_replacement=False, random_state=rs)(finite_pool()), 0)
        sampled = take(300)(pescador.mux(3, 2.0, random_state=rs)(endless_pool()))
        runs = [per_worker(run(runner, sampled, base)) for base in (7, 7, 8)]
        out[kind] = {"once": [k for _, k in once], "runs": runs}
    return out


def epoch_recipe(name):
    if name.startswith("mux-"):
        return take(200)(pescador.mux(3, 2.0, random_state=random_state(name[4:]))(endless_pool()))
    if name == "shuffled_mux":
        return take(200)(shuffled_mux()(endless_pool()))
    if name == "cache":
        return pescador.cache(4, prob=0.5)(stream(source, 0, 100))
    if name == "epochs":
        return pescador.epochs(1, k=2)(finite_pool([10] * 8))
    if name == "seed-source":
        return stream(seeded_source, 50)
    if name == "global-source":
        return stream(global_source, 50)
    raise ValueError(name)


def epochs_case(configurations):
    """For each (recipe, persistent, steps): two whole runs of 3 epochs each (of ``steps`` items, or all),
    both from ``torch.manual_seed(3)``."""
    import torch

    from pescador.torch import as_dataset

    out = {}
    for name, persistent, steps in configurations:
        whole_runs = []
        for _ in range(2):
            torch.manual_seed(3)
            loader = torch.utils.data.DataLoader(
                as_dataset(epoch_recipe(name)), batch_size=None, num_workers=2, persistent_workers=persistent
            )
            whole_runs.append([pairs(itertools.islice(loader, steps)) for _ in range(3)])
            del loader
        out[f"{name}/{persistent}/{steps}"] = whole_runs
    return out


def isolated(case, *args, timeout=240):
    """``case(*args)`` in a new Python process of its own session, killed after ``timeout`` seconds."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_randomness as t; "
        "print(json.dumps(getattr(t, sys.argv[2])(*json.loads(sys.argv[3]))))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, TESTS, case, json.dumps(args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{case}{args} did not finish within {timeout} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # (whatever it left behind)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


# One subprocess per runner, and one for all the epoch cases, shared by the tests that read them
# (importing torch can take a minute on a loaded machine); a failure or a hang is kept too, so that
# it fails the other tests at once instead of being waited for again.
_observed: dict = {}


def observed(case, *args):
    if (case, *args) not in _observed:
        try:
            _observed[(case, *args)] = (isolated(case, *args), None)
        except BaseException as exc:  # (pytest's fail and skip are BaseExceptions)
            _observed[(case, *args)] = (None, exc)
    result, exc = _observed[(case, *args)]
    if exc is not None:
        raise exc
    return result


def observed_workers(runner):
    if runner == "torch":
        pytest.importorskip("torch", reason="PyTorch is not installed (make test-frameworks installs it)")
    return observed("workers_case", runner)


def observed_epochs():
    pytest.importorskip("torch", reason="PyTorch is not installed (make test-frameworks installs it)")
    return observed("epochs_case", tuple(EPOCH_CASES))


# -- through two workers: zmq_offload and DataLoader -----------------------------------------

RUNNERS = ["zmq", "zmq-spawn", "torch"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("runner", RUNNERS)
def test_a_pool_without_replacement_delivers_each_item_exactly_once(runner, kind):
    once = observed_workers(runner)[kind]["once"]
    expected = [tag * 100_000 + i for tag, n in enumerate(SIZES) for i in range(n)]
    assert sorted(once) == expected


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("runner", RUNNERS)
def test_workers_of_a_mux_with_replacement_make_different_choices(runner, kind):
    first = observed_workers(runner)[kind]["runs"][0]
    assert len(first["0"]) == len(first["1"]) == 300
    assert first["0"] != first["1"]  # (identical copies of one generator would deliver every item twice)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("runner", RUNNERS)
def test_the_same_base_seed_repeats_a_run_and_another_one_does_not(runner, kind):
    same, again, other = observed_workers(runner)[kind]["runs"]
    assert same == again
    if kind == "int":  # an int seed repeats every run, whatever the workers' seeds
        assert same == other
    else:
        assert same != other


# -- epochs through DataLoader workers -------------------------------------------------------

EPOCH_RECIPES = ["mux-none", "mux-int", "mux-generator", "mux-randomstate", "shuffled_mux", "cache", "epochs",
                 "seed-source", "global-source"]


EPOCH_CASES = (
    [(name, True, None) for name in EPOCH_RECIPES]
    + [(name, False, None) for name in ("mux-none", "mux-int", "mux-generator")]
    + [("mux-int", True, 30), ("global-source", True, 30)]  # epochs cut short, as a training loop may
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, persistent, steps", EPOCH_CASES)
def test_every_dataloader_epoch_draws_anew_and_a_whole_run_repeats_from_one_torch_seed(name, persistent, steps):
    first, second = observed_epochs()[f"{name}/{persistent}/{steps}"]
    assert first == second  # the whole run, from torch.manual_seed(3)
    for a in range(3):
        assert len(first[a]) > 0
        for b in range(a):
            if name == "mux-int":  # an int seed's promise: every run (epoch) repeats, in workers too
                assert first[a] == first[b], f"epochs {b} and {a} differ under an int seed"
            else:
                assert first[a] != first[b], f"epochs {b} and {a} are the same"
    if name == "epochs" and steps is None:  # each epoch still delivers every item once
        expected = collections.Counter(k for tag in range(8) for k in range(tag * 100_000, tag * 100_000 + 10))
        assert all(collections.Counter(k for _, k in epoch) == expected for epoch in first)


# -- the derivation itself, in this process (no workers started) -----------------------------


def choices(step, pool, n=200):
    return [x["k"][0] for x in take(n, step(pool))]


def test_outside_workers_a_generator_is_used_as_it_is_and_an_int_repeats():
    pool = endless_pool()
    g = np.random.default_rng(1)
    first = choices(pescador.mux(3, 2.0, random_state=g), pool)
    assert first == choices(pescador.mux(3, 2.0, random_state=np.random.default_rng(1)), pool)
    assert choices(pescador.mux(3, 2.0, random_state=g), pool) != first  # g advanced, as numpy users expect
    assert choices(pescador.mux(3, 2.0, random_state=4), pool) == choices(pescador.mux(3, 2.0, random_state=4), pool)


def in_worker(info, step, pool):
    try:
        set_worker_info(info)
        return choices(step, pool)
    finally:
        set_worker_info(None)


@pytest.mark.parametrize("kind", KINDS)
def test_in_workers_every_kind_combines_with_the_workers_seed(kind):
    pool = endless_pool()
    step = pescador.mux(3, 2.0, random_state=random_state(kind))
    if kind in ("generator", "randomstate"):  # a worker has a copy of the generator: give each run its own copy
        def runs(seed_entropy):
            out = []
            for wid, seed in enumerate(np.random.SeedSequence(seed_entropy).spawn(2)):
                own = pescador.mux(3, 2.0, random_state=random_state(kind))
                out.append(in_worker(WorkerInfo(wid, 2, seed), own, pool))
            return out
    else:
        def runs(seed_entropy):
            return [in_worker(WorkerInfo(wid, 2, seed), step, pool)
                    for wid, seed in enumerate(np.random.SeedSequence(seed_entropy).spawn(2))]
    a = runs(11)
    assert a[0] != a[1]  # workers differ
    assert runs(11) == a  # the same worker seeds repeat them
    if kind == "int":
        assert runs(12) == a  # an int alone decides (with the worker's index)
    else:
        assert runs(12) != a  # other worker seeds change them


def test_an_int_in_one_worker_gives_the_main_process_sequence():
    pool = endless_pool()
    step = pescador.mux(3, 2.0, random_state=4)
    main = choices(step, pool)
    assert in_worker(WorkerInfo(0, 1, np.random.SeedSequence(99)), step, pool) == main


def test_a_generator_in_one_worker_is_combined_with_the_seed():
    pool = endless_pool()
    outs = [in_worker(WorkerInfo(0, 1, np.random.SeedSequence(s)),
                      pescador.mux(3, 2.0, random_state=np.random.default_rng(5)), pool) for s in (1, 1, 2)]
    assert outs[0] == outs[1] != outs[2]


def test_a_worker_info_set_by_hand_without_a_seed_still_tells_workers_apart():
    pool = endless_pool()
    for kind in ("int", "generator"):
        outs = [in_worker(WorkerInfo(wid, 2, None), pescador.mux(3, 2.0, random_state=random_state(kind)), pool)
                for wid in (0, 1)]
        assert outs[0] != outs[1]
