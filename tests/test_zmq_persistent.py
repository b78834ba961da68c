"""zmq_offload(persistent_workers=True): the next run of a recipe reuses its workers; each run is a fresh run
of the recipe in them; the workers end with the recipe, its process, or the interpreter."""

import collections
import copy
import gc
import json
import os
import pickle
import signal
import sys
import tempfile
import time

import numpy as np
import pytest

import pescador
from pescador import PescadorError, stream, take, zmq_offload
from test_faults import run_consumer
from test_zmq import _cmdline, alive, children  # noqa: F401 (_cmdline: the scripts' t._cmdline)

pytestmark = pytest.mark.timeout(60)

TESTS = os.path.dirname(os.path.abspath(__file__))


# -- sources (module level: spawn and forkserver import them) ----------------------------


def numbered(name, n):
    """``n`` items named ``name``, each saying which process made it."""
    for i in range(n):
        yield {"name": name, "i": i, "pid": os.getpid()}


def drawing(n):
    """Random draws from the worker's own seed and from numpy's legacy global generator."""
    rng = np.random.default_rng(pescador.worker_info().seed)
    for i in range(n):
        yield {"own": float(rng.random()), "legacy": float(np.random.random()), "pid": os.getpid()}


def cleaned_up(marker, n=10**9):
    """Items until closed; its ``finally`` leaves a line in ``marker``."""
    try:
        for i in range(n):
            time.sleep(0.001)
            yield {"i": i, "pid": os.getpid()}
    finally:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")


def pool(names=("a", "b", "c", "d", "e"), n=3):
    """An exhaustive pool: each stream once an epoch, in random turns."""
    return pescador.mux(k=2, lam=None, with_replacement=False)([stream(numbered, name, n) for name in names])


def pids(items):
    return {item["pid"] for item in items}


def wait_gone(pids_, seconds=5.0):
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids_) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(alive(p) for p in pids_)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


# -- reuse, under every start method, and cleanup -----------------------------------------

REUSE = """
import json, os, sys, tempfile
import pescador, test_zmq_persistent as t
from test_zmq import children
if __name__ == "__main__":
    recipe = pescador.zmq_offload(workers=2, persistent_workers=True, start_method=sys.argv[1])(t.pool())
    epochs = [sorted((x["name"], x["i"], x["pid"]) for x in recipe) for _ in range(3)]
    live = children()
    recipe.close()
    left = [p for p in live if t.alive(p) and "forkserver" not in t._cmdline(p) and "resource_tracker" not in t._cmdline(p)]
    left = [p for p in left if not t.wait_gone([p])]
    dirs = [d for d in os.listdir(tempfile.gettempdir()) if d.startswith("pescador-")]
    print(json.dumps({"epochs": epochs, "left": left, "dirs": dirs}))
"""


def _script(code, *args, tmp):
    return run_consumer(f"sys.argv[1:] = {list(args)!r}\n" + code, timeout=40, env={"TMPDIR": str(tmp)})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_the_next_run_reuses_the_workers_and_close_ends_them(method, short_tmp):
    finished, out = _script(REUSE, method, tmp=short_tmp)
    assert finished, out
    result = json.loads(out.strip().splitlines()[-1])
    epochs = result["epochs"]
    workers = [{pid for _, _, pid in epoch} for epoch in epochs]
    assert len(workers[0]) == 2 and workers[0] == workers[1] == workers[2]  # the same two processes each epoch
    for epoch in epochs:  # each epoch a fresh run: every item of the pool once (the workers share the pool)
        assert sorted((name, i) for name, i, _ in epoch) == [(name, i) for name in "abcde" for i in range(3)]
    assert result["left"] == [] and result["dirs"] == []


# -- each run is a fresh run -----------------------------------------------------------------


def _by_worker(items, key):
    """Each worker's items, in its order (the workers' interleaving depends on timing)."""
    out = collections.defaultdict(list)
    for item in items:
        out[item["pid"]].append(item[key])
    return sorted(out.values())


def test_each_run_draws_what_a_new_run_draws():
    seeded = zmq_offload(workers=2, persistent_workers=True, random_state=7, start_method="fork")(stream(drawing, 20))
    fresh = zmq_offload(workers=2, random_state=7, start_method="fork")(stream(drawing, 20))
    unseeded = zmq_offload(workers=2, persistent_workers=True, start_method="fork")(stream(drawing, 20))
    try:
        expected = {key: _by_worker(list(fresh), key) for key in ("own", "legacy")}
        runs = [list(seeded) for _ in range(3)]
        assert len({frozenset(pids(run)) for run in runs}) == 1  # (the same workers)
        for run in runs:  # an int random_state: every run starts its workers with the same seeds
            assert {key: _by_worker(run, key) for key in ("own", "legacy")} == expected
        first, second = list(unseeded), list(unseeded)
        assert pids(first) == pids(second)
        for key in ("own", "legacy"):  # None: new seeds each run, as a new run draws them
            assert _by_worker(first, key) != _by_worker(second, key)
    finally:
        seeded.close()
        unseeded.close()


def test_an_exhaustive_pool_gives_each_item_once_every_epoch():
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork")(pool(n=4))
    try:
        orders = []
        for _ in range(4):
            epoch = [(x["name"], x["i"]) for x in recipe]
            assert sorted(epoch) == [(name, i) for name in "abcde" for i in range(4)]
            orders.append(epoch)
        assert len(set(map(tuple, orders))) > 1  # (new random turns each epoch)
    finally:
        recipe.close()


def test_an_early_stop_stops_the_source_not_the_workers(tmp_path):
    marker = tmp_path / "closed"
    recipe = zmq_offload(workers=2, persistent_workers=True, start_method="fork")(
        stream(cleaned_up, str(marker), 300))
    try:
        workers = pids(list(recipe))
        marker.unlink()
        first = []
        for item in recipe:
            first.append(item)
            if len(first) == 5:
                break
        deadline = time.monotonic() + 5
        while len(marker.read_text().split() if marker.exists() else []) < len(pids(first)) and time.monotonic() < deadline:
            time.sleep(0.02)
        closed = set(map(int, marker.read_text().split()))
        assert pids(first) <= closed <= workers  # each source that gave an item was closed (its finally ran)
        second = list(recipe)  # complete, and nothing of the first run in it
        assert sorted(x["i"] for x in second) == sorted(list(range(300)) * 2)
        assert pids(second) == workers and all(alive(p) for p in workers)
    finally:
        recipe.close()
    assert wait_gone(workers)


def test_runs_stopped_in_turn_never_see_each_others_items():
    recipe = zmq_offload(workers=2, persistent_workers=True, start_method="fork", hwm=2)(
        stream(numbered, "x", 5000))
    try:
        for stop in (1, 7, 50, 300):
            assert [x["i"] for x in take(stop, recipe)][:1] == [0]
        whole = list(recipe)
        assert sorted(x["i"] for x in whole) == sorted(list(range(5000)) * 2)
    finally:
        recipe.close()


# -- the end of the workers ---------------------------------------------------------------


def test_collection_ends_the_workers():
    recipe = zmq_offload(workers=2, persistent_workers=True, start_method="fork")(stream(numbered, "x", 3))
    workers = pids(list(recipe))
    assert all(alive(p) for p in workers)
    del recipe
    gc.collect()
    assert wait_gone(workers)


def test_close_during_a_run_is_refused_and_the_run_goes_on():
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork")(stream(numbered, "x", 10))
    try:
        run = iter(recipe)
        next(run)
        with pytest.raises(PescadorError, match="while a run of it is live.*run.close"):
            recipe.close()
        assert len(list(run)) == 9
    finally:
        recipe.close()


def test_close_reaches_the_workers_inside_a_pipeline_and_a_later_run_starts_new_ones():
    inner = zmq_offload(workers=1, persistent_workers=True, start_method="fork")(stream(numbered, "x", 10))
    outer = take(4, inner)
    first = pids(list(outer))
    outer.close()
    assert wait_gone(first)
    try:
        second = list(outer)
        assert len(second) == 4 and not pids(second) & first
    finally:
        outer.close()


def test_a_second_live_run_gets_workers_of_its_own():
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork")(stream(numbered, "x", 50))
    try:
        one = iter(recipe)
        a = [next(one)]
        b = list(recipe)  # while `one` is live
        a += list(one)
        assert [x["i"] for x in a] == [x["i"] for x in b] == list(range(50))
        assert not pids(a) & pids(b)
        assert pids(list(recipe)) == pids(a)  # (and the next run has the recipe's workers again)
    finally:
        recipe.close()


def test_a_pickled_or_deep_copied_recipe_starts_its_own_workers():
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork")(stream(numbered, "x", 5))
    copies = [pickle.loads(pickle.dumps(recipe)), copy.deepcopy(recipe)]
    try:
        assert all(c == recipe for c in copies) and repr(copies[0]) == repr(recipe)
        mine = pids(list(recipe))
        theirs = [pids(list(c)) for c in copies]
        assert not mine & theirs[0] and not mine & theirs[1] and not theirs[0] & theirs[1]
        assert [pids(list(c)) for c in copies] == theirs and pids(list(recipe)) == mine  # (each keeps its own)
    finally:
        for r in [recipe] + copies:
            r.close()


def test_a_worker_that_died_between_runs_is_replaced():
    recipe = zmq_offload(workers=2, persistent_workers=True, start_method="fork")(stream(numbered, "x", 20))
    try:
        first = pids(list(recipe))
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert wait_gone([victim])
        second = list(recipe)
        assert sorted(x["i"] for x in second) == sorted(list(range(20)) * 2)
        assert victim not in pids(second) and len(pids(second) & first) == 1
    finally:
        recipe.close()


def stubborn_when_stopped(n, then):
    """Endless items until the file ``then`` exists, ``n`` items in a run begun after; an endless run's
    cleanup takes half a minute (however it is stopped: a stop may come at a yield or between two)."""
    endless = not os.path.exists(then)
    try:
        i = 0
        while endless or i < n:
            yield {"i": i, "pid": os.getpid()}
            i += 1
    finally:
        if endless:
            time.sleep(30)


def test_a_worker_that_does_not_stop_its_run_in_time_is_replaced_in_the_next(tmp_path):
    then = tmp_path / "second"
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork", timeout=0.5, hwm=1)(
        stream(stubborn_when_stopped, 500, str(then)))
    try:
        stuck = pids(take(3, recipe))  # (an endless run, stopped: its worker takes 30 s to stop)
        then.touch()
        second = list(recipe)
        assert [x["i"] for x in second] == list(range(500))
        assert not pids(second) & stuck and wait_gone(stuck, 1.0)
    finally:
        recipe.close()


def test_a_resumable_run_over_persistent_workers_is_exact():
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork")(pool(n=4))
    try:
        run = pescador.resumable(recipe)
        head = [next(run) for _ in range(7)]
        state = json.loads(json.dumps(run.state_dict()))
        rest = list(run)
        resumed = list(pescador.resumable(recipe, state))
        assert [(x["name"], x["i"]) for x in resumed] == [(x["name"], x["i"]) for x in rest]
        assert pids(head) == pids(rest) == pids(resumed)  # (the same worker for all three)
    finally:
        recipe.close()


def test_the_option_is_checked_and_shown():
    with pytest.raises(PescadorError, match="persistent_workers must be True or False; got 1"):
        zmq_offload(persistent_workers=1)
    assert repr(zmq_offload(persistent_workers=True)) == "zmq_offload(persistent_workers=True)"
    assert repr(zmq_offload(persistent_workers=False)) == "zmq_offload()"


# -- the consumer's end -------------------------------------------------------------------

KILLED = """
import os, sys, time
import pescador, test_zmq_persistent as t
if __name__ == "__main__":
    recipe = pescador.zmq_offload(workers=2, persistent_workers=True, start_method=sys.argv[1])(
        pescador.stream(t.numbered, "x", 5))
    print(*sorted(t.pids(list(recipe))), flush=True)
    time.sleep(60)   # (between epochs: killed here)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_consumer_killed_between_runs_leaves_no_worker_and_no_directory(method, short_tmp):
    import subprocess

    script = f"import sys\nsys.path.insert(0, {TESTS!r})\nsys.argv[1:] = [{method!r}]\n" + KILLED
    consumer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                start_new_session=True, env=dict(os.environ, TMPDIR=str(short_tmp)))
    try:
        line = consumer.stdout.readline()
        workers = [int(p) for p in line.split()]
        assert len(workers) == 2 and all(alive(p) for p in workers), line
        assert [d for d in os.listdir(short_tmp) if d.startswith("pescador-")]  # (the pool's ipc directory)
        consumer.kill()
        consumer.wait()
        assert wait_gone(workers, 5.0)
        deadline = time.monotonic() + 5  # (the guardian removes both, the forkserver's pymp-* too)
        while [d for d in os.listdir(short_tmp) if d.startswith(("pescador-", "pymp-"))] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [d for d in os.listdir(short_tmp) if d.startswith(("pescador-", "pymp-"))]
    finally:
        try:
            os.killpg(consumer.pid, signal.SIGKILL)
        except OSError:
            pass
        consumer.wait()


INTERRUPTED = """
import json, os, signal, sys, tempfile
import pescador, test_zmq_persistent as t
if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)   # (a background job inherits SIGINT ignored)
    recipe = pescador.zmq_offload(workers=2, persistent_workers=True, start_method=sys.argv[1])(
        pescador.stream(t.numbered, "x", 2000))
    first = t.pids(list(recipe))
    try:
        for n, item in enumerate(recipe):
            if n == 100:
                os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C in epoch 2
    except KeyboardInterrupt:
        interrupted = True
    third = list(recipe)
    print(json.dumps({"first": sorted(first), "third": sorted(t.pids(third)), "interrupted": interrupted,
                      "complete": sorted(x["i"] for x in third) == sorted(list(range(2000)) * 2)}), flush=True)
    # (then the interpreter exits with the workers alive: they end with it)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ctrl_c_in_the_second_epoch_then_a_third_and_the_exit_leaves_nothing(method, tmp_path):
    finished, out = _script(INTERRUPTED, method, tmp=tmp_path)
    assert finished, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] and result["complete"] and result["first"] == result["third"]
    assert wait_gone(result["first"])
    assert not [d for d in os.listdir(tmp_path) if d.startswith("pescador-")]


# -- observers, and TCP -------------------------------------------------------------------


def tagged(tag, n):
    for _ in range(n):
        yield {"tag": np.array([tag]), "pid": os.getpid()}


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_observers_count_each_run_afresh_on_the_same_workers(transport):
    stats, meter = pescador.MuxStats(), pescador.Meter()
    recipe = zmq_offload(workers=2, persistent_workers=True, start_method="fork", transport=transport)(
        pescador.measure(meter)(pescador.mux(2, None, with_replacement=False, random_state=0, stats=stats)(
            [stream(tagged, t, 10 + t) for t in range(3)])))
    try:
        seen = set()
        for _ in range(3):
            out = list(recipe)
            seen |= pids(out)
            assert len(out) == 33
            np.testing.assert_array_equal(stats.items, [10, 11, 12])
            assert meter.items == 33
        assert len(seen) == 2
    finally:
        recipe.close()


# -- found by a review: the start of a run, a stop that is swallowed, observers, threads ----------


def test_a_worker_killed_as_the_next_run_starts_is_replaced_and_the_run_complete():
    """SIGKILL to a worker, then at once the next run: the worker had said READY; the run goes to another
    in its place (the dead one never began it), not to the dead one (whose death was then reported)."""
    recipe = zmq_offload(workers=2, persistent_workers=True, start_method="fork")(stream(numbered, "x", 100))
    try:
        outcomes = []
        for trial in range(10):
            workers = sorted(pids(list(recipe)))
            os.kill(workers[trial % 2], signal.SIGKILL)
            items = list(recipe)  # (no wait: the worker may not even be dead yet)
            outcomes.append(sorted(x["i"] for x in items) == sorted(list(range(100)) * 2))
        assert all(outcomes), outcomes
    finally:
        recipe.close()


def swallows_the_stop(n, then):
    """Endless until the file ``then`` exists (then ``n`` items); a catch-all around each item's load, as
    "robust" loaders have, swallows the stop."""
    endless = not os.path.exists(then)
    i = 0
    while endless or i < n:
        try:  # (the load takes nearly all the time, so that a stop lands in it: one landing between two
            time.sleep(0.05 if endless else 0.002)  # loads, at the yield, ends the run at once, as it should)
        except BaseException:
            pass
        yield {"i": i, "pid": os.getpid()}
        i += 1


@pytest.mark.timeout(60)
def test_a_worker_that_swallows_the_stop_is_replaced_in_the_next_run(tmp_path):
    """The stopped run's items keep coming from a worker that swallowed the stop: they do not count as the
    worker answering, so ``timeout`` into the next run it is replaced (the next run hung for ever)."""
    then = tmp_path / "second"
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork", timeout=0.5)(
        stream(swallows_the_stop, 50, str(then)))
    try:
        first = pids(take(20, recipe))
        then.touch()
        second = list(recipe)
        assert [x["i"] for x in second] == list(range(50)) and not pids(second) & first
    finally:
        recipe.close()


def counts_reporters():
    """Endless items; the first says how many reporter threads its worker has."""
    import threading

    reporters = sum(t.name == "pescador-reporter" for t in threading.enumerate())
    i = 0
    while True:
        yield {"i": i, "pid": os.getpid(), "reporters": reporters if i == 0 else -1}
        i += 1


@pytest.mark.timeout(120)
def test_early_stops_with_an_observer_leave_one_reporter_thread_per_worker():
    recipe = zmq_offload(workers=2, persistent_workers=True, start_method="fork")(
        pescador.measure(pescador.Meter())(stream(counts_reporters)))
    try:
        seen = []
        for _ in range(60):
            seen += [x["reporters"] for x in take(20, recipe) if x["reporters"] >= 0]
        assert seen and set(seen) == {1}, collections.Counter(seen)  # (piled up: 6 to 24 after 100 runs)
        workers = pids(take(20, recipe))
    finally:
        recipe.close()
    assert wait_gone(workers, 5.0)


def test_two_threads_starting_the_first_run_at_once_make_one_pool(monkeypatch):
    import threading

    real = pescador.zmq_stream._Pool.__init__

    def slow_init(self, *args, **kwargs):  # (widens the window between looking for the pool and keeping it)
        real(self, *args, **kwargs)
        time.sleep(0.05)

    monkeypatch.setattr(pescador.zmq_stream._Pool, "__init__", slow_init)
    recipe = zmq_offload(workers=1, persistent_workers=True, start_method="fork")(stream(numbered, "x", 20))
    barrier, seen = threading.Barrier(2), []

    def runs():
        barrier.wait()
        for _ in range(3):
            seen.append(pids(list(recipe)))

    threads = [threading.Thread(target=runs) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    recipe.close()
    assert len(seen) == 6
    assert wait_gone(list(set().union(*seen)), 5.0)
