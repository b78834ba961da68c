"""ray_offload on a real Ray cluster: two nodes on this machine, started once for the module.

Not collected by itself (the name has no ``test_`` prefix): ``tests/test_ray.py``
runs it with pytest in a subprocess of its own session, bounded in time, and
kills whatever Ray left behind afterwards.  Run it by hand with
``python -m pytest tests/ray_cases.py``.
"""

from __future__ import annotations

import collections
import gc
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import pescador
from pescador.exceptions import PescadorError
from pescador.ray_stream import FailoverWarning

ray = pytest.importorskip("ray")

# Fast failure detection for the test cluster (Ray's defaults take ~15 s to call a node dead).
_SYSTEM = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # The actors import this module's recipes by name: the nodes (started now) inherit this path.
    here = os.path.dirname(os.path.abspath(__file__))
    docs = os.path.join(os.path.dirname(here), "docs")  # (docs/ray_example.py)
    os.environ["PYTHONPATH"] = os.pathsep.join([here, docs] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    sys.path.insert(0, docs)
    # ("slot": one actor asking for it per node; test_placement_timeout_after_failover adds the second.  The
    # dashboard, which the state API asks about actors, on a free port: another Ray may hold Ray's default.)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dashboard = probe.getsockname()[1]
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"slot": 1}, "_system_config": _SYSTEM,
                                                      "dashboard_port": dashboard})
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _alive_actors() -> list:
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # (this cluster: other Ray clusters may run on the machine)
    return [a for a in list_actors(address=address, filters=[("state", "!=", "DEAD")], raise_on_missing_output=False)
            if a.class_name == "_Share"]


def _no_actor_left(seconds: float = 60.0) -> list:
    """Wait until no actor of ours is left (Ray's state API); return those still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        left = _alive_actors()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# Recipes (module-level: actors import them)
# ---------------------------------------------------------------------------


def sharded(n):
    """Items 0..n-1, each worker (and rank) taking its share: {"x": [[i, i*i]]}."""
    info = pescador.worker_info()
    for i in range(info.id, n, info.count):
        yield {"x": np.array([[i, i * i]], dtype=np.int64)}


def exits_once(n, marker, at):
    """Like ``sharded``, but the process of worker 0 exits abruptly once (the first run to reach item ``at``)."""
    info = pescador.worker_info()
    for k, i in enumerate(range(info.id, n, info.count)):
        if info.id == 0 and k == at and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        yield {"x": np.array([[i, i * i]], dtype=np.int64)}


def counted(start, n, marker=None, at=-1):
    """Rows start..start+n-1, all of them (no sharding of its own); exits abruptly once at ``at`` with a marker."""
    for i in range(n):
        if i == at and marker is not None and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        yield {"x": np.array([[start + i, (start + i) ** 2]], dtype=np.int64)}


def always_exits(n, at):
    for i in range(n):
        if i == at:
            os._exit(4)
        yield {"x": np.array([[i, 0]])}


def raises(n, at):
    for i in range(n):
        if i == at:
            raise KeyError(f"bad row {i}")
        yield {"x": np.array([[i, 0]])}


class Unpicklable(Exception):
    def __init__(self, lock):
        super().__init__("cannot travel")
        self.lock = lock


def raises_unpicklable():
    yield {"x": np.array([[0, 0]])}
    raise Unpicklable(threading.Lock())


def endless():
    i = 0
    while True:
        yield {"x": np.array([[i, 0]])}
        i += 1


def one_then_waits():
    yield {"x": np.array([[0, 0]])}
    time.sleep(600)


def in_process(recipe, workers):
    """The items of every share of ``recipe`` run here, one after the other (what the actors should give)."""
    from pescador.workers import WorkerInfo, set_worker_info

    items = []
    try:
        for w in range(workers):
            set_worker_info(WorkerInfo(w, workers, np.random.SeedSequence(w)))
            items += list(recipe)
    finally:
        set_worker_info(None)
    return items


def rows(items):
    """The multiset of rows of a run's items."""
    return collections.Counter(tuple(r) for item in items for r in np.asarray(item["x"]).reshape(-1, 2).tolist())


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def test_items_and_sharding(cluster):
    recipe = pescador.buffer(4)(pescador.stream(sharded, 300))
    got = list(pescador.ray_offload(workers=3, chunk=8)(recipe))
    assert rows(got) == rows(in_process(recipe, 3)) == rows(pescador.stream(sharded, 300))
    assert all(item["x"].flags.writeable for item in got)  # (small items travel stacked: rebuilt as copies)
    large = list(pescador.ray_offload()(pescador.stream([{"x": np.zeros(1 << 14)}] * 2)))  # (128 KiB: as it is)
    assert all(not item["x"].flags.writeable for item in large)  # (views of the object store)
    copied = list(pescador.ray_offload(workers=1, copy=True)(pescador.stream(sharded, 10)))
    assert all(item["x"].flags.writeable for item in copied)


def test_a_recipe_of_main_runs_on_the_actors(cluster):
    """Functions, closures and lambdas of ``__main__`` (a notebook's cells) travel by value (Ray's cloudpickle)."""
    main = {"__name__": "__main__", "np": np}  # (what it defines cannot be imported by name, as in a notebook)
    exec(
        "k = 10\n"
        "def src(n):\n"
        "    for i in range(n):\n"
        "        yield {'x': np.array([[i * k, 0]])}\n"
        "def scaled(factor):\n"
        "    return lambda n: ({'x': np.array([[i * factor, 1]])} for i in range(n))\n",
        main,
    )
    recipe = pescador.mux(k=2, lam=None, with_replacement=False, random_state=0)(
        [pescador.stream(main["src"], 3), pescador.stream(main["scaled"](7), 3)])
    assert rows(pescador.ray_offload(workers=2)(recipe)) == rows(recipe)


def test_node_removed_mid_run(cluster):
    """The node running the actors dies mid-run: their shares restart elsewhere, nothing lost or doubled."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    prefer = NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=True)  # there first, elsewhere after it died
    recipe = pescador.buffer(3)(pescador.stream(sharded, 400))  # (the shares' last rows stay in their buffers)
    offloaded = pescador.ray_offload(workers=2, chunk=4, hwm=2, resources={"scheduling_strategy": prefer})(recipe)
    got = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for item in offloaded:
            got.append(item)
            if len(got) == 20:  # (backpressure: the actors are at most hwm chunks ahead, far from their end)
                cluster.remove_node(node, allow_graceful=False)
                _wait_until_dead(node.node_id)
    assert rows(got) == rows(in_process(recipe, 2))
    restarts = [w for w in caught if issubclass(w.category, FailoverWarning)]
    assert restarts, "no share restarted"
    assert all("restarts on a new actor" in str(w.message) for w in restarts)


def _wait_until_dead(node_id, seconds=60.0):
    deadline = time.monotonic() + seconds
    while any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
        assert time.monotonic() < deadline, "Ray did not notice the node's death"
        time.sleep(0.1)


def test_worker_exits_once(cluster, tmp_path):
    recipe = pescador.buffer(2)(pescador.stream(exits_once, 200, str(tmp_path / "exited"), 30))
    with pytest.warns(FailoverWarning, match=r"share 0 of 2 restarts on a new actor .*ActorDiedError"):
        got = list(pescador.ray_offload(workers=2, chunk=4)(recipe))
    assert (tmp_path / "exited").exists()
    assert rows(got) == rows(in_process(pescador.buffer(2)(pescador.stream(sharded, 200)), 2))


def plain_stage(upstream):
    """A stage written as a plain generator function: it cannot say where its run is."""
    for item in upstream:
        yield {"x": item["x"] * 1}


def test_stage_without_state_fails_over_by_replay(cluster, tmp_path):
    """Without a state, the new actor replays the share from its start and drops what was delivered."""
    plain = pescador.Transform("plain", plain_stage, {})
    recipe = plain(pescador.stream(exits_once, 120, str(tmp_path / "exited"), 25))
    with pytest.warns(FailoverWarning, match=r"share 0 of 2 restarts .* from its start, dropping the \d+ items"):
        got = list(pescador.ray_offload(workers=2, chunk=4)(recipe))
    assert rows(got) == rows(in_process(plain(pescador.stream(sharded, 120)), 2))


def test_max_restarts(cluster):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PescadorError, match=r"share 0 of 1 failed 2 times, more than max_restarts=1"):
            list(pescador.ray_offload(max_restarts=1, chunk=2)(pescador.stream(always_exits, 20, 5)))
    assert sum(issubclass(w.category, FailoverWarning) for w in caught) == 1
    assert _no_actor_left() == []


def test_raising_worker(cluster):
    got = []
    with pytest.raises(KeyError, match="bad row 7") as info:
        for item in pescador.ray_offload(workers=1, chunk=5)(pescador.stream(raises, 20, 7)):
            got.append(item)
    assert [int(x["x"][0, 0]) for x in got] == list(range(7))  # (every item before the exception)
    assert isinstance(info.value.__cause__, pescador.WorkerError)
    assert "raise KeyError" in info.value.__cause__.traceback_text  # (the worker's traceback)
    assert _no_actor_left() == []


def test_an_exception_that_cannot_travel_comes_as_worker_error(cluster):
    with pytest.raises(pescador.WorkerError, match=r"share 0 raised .*Unpicklable after sending 1 items") as info:
        list(pescador.ray_offload()(pescador.stream(raises_unpicklable)))
    assert "raise Unpicklable" in info.value.traceback_text


def test_early_stop_leaves_no_actor(cluster):
    got = list(pescador.take(50, pescador.ray_offload(workers=2)(pescador.stream(endless))))
    assert len(got) == 50
    assert _no_actor_left() == []
    run = iter(pescador.ray_offload(workers=2)(pescador.stream(endless)))  # (collected mid-run)
    next(run)
    del run
    gc.collect()
    assert _no_actor_left() == []


def test_keyboard_interrupt_leaves_no_actor(cluster):
    run = iter(pescador.ray_offload(workers=1)(pescador.stream(one_then_waits)))
    next(run)  # the actor now sleeps; the consumer will wait in Ray for the next chunk
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job may ignore SIGINT)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(run)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, before)
    del run
    assert _no_actor_left() == []


def test_placement_timeout(cluster):
    unplaceable = pescador.ray_offload(resources={"resources": {"no-such-thing": 1}}, placement_timeout=1)
    with pytest.raises(PescadorError, match="did not start within placement_timeout=1.0"):
        list(unplaceable(pescador.stream(sharded, 3)))
    assert _no_actor_left() == []


def test_resumable_checkpoint(cluster):
    recipe = pescador.ray_offload(workers=2, chunk=4, random_state=1)(pescador.buffer(2)(pescador.stream(sharded, 60)))
    run = pescador.resumable(recipe)
    first = [next(run) for _ in range(7)]
    saved = run.state_dict()
    del run
    rest = list(pescador.resumable(recipe, saved))
    assert rows(first + rest) == rows(pescador.stream(sharded, 60))


def by_worker(tag, n):
    """Rows that say which share gave them: worker * 10000 + tag * 100 + i."""
    info = pescador.worker_info()
    for i in range(n):
        yield {"x": np.array([[info.id * 10000 + tag * 100 + i, 0]], dtype=np.int64)}


def test_an_unseeded_mux_runs_and_fails_over_exactly(cluster, tmp_path):
    """A plain recipe with random_state=None runs under ray_offload as under zmq_offload (the shares draw
    from their seeds), and a share restarted on a new actor draws on what it drew (its state holds how many
    seeds its stages took): nothing lost, nothing doubled, nothing else."""
    def recipe(marker, at):
        return pescador.take(120, pescador.mux(2, 4.0)([pescador.stream(counted, 100 * v, 30, marker, at)
                                                         for v in range(4)]))

    with pytest.warns(FailoverWarning, match="restarts on a new actor"):
        got = list(pescador.ray_offload(workers=2, chunk=4, random_state=5)(recipe(str(tmp_path / "exited"), 2)))
    assert (tmp_path / "exited").exists()
    expected = list(pescador.zmq_offload(workers=2, random_state=5)(recipe(None, -1)))
    assert len(got) == 240 and rows(got) == rows(expected)


def test_an_unseeded_run_resumes_as_it_would_have_gone_on(cluster):
    """random_state=None everywhere: the checkpoint holds the entropy the shares' seeds came from, so each
    share of a resumed run gives what that share gave after the checkpoint."""
    recipe = pescador.ray_offload(workers=2, chunk=4)(
        pescador.take(60, pescador.mux(2, 3.0)([pescador.stream(by_worker, t, 20) for t in range(3)])))
    run = pescador.resumable(recipe)
    head = [next(run) for _ in range(15)]
    saved = run.state_dict()
    tail = list(run)
    resumed = list(pescador.resumable(recipe, saved))

    def shares(items):
        values = [int(x["x"][0, 0]) for x in items]
        return {w: [v for v in values if v // 10000 == w] for w in range(2)}

    assert shares(head + resumed) == shares(head + tail)
    assert len(head + tail) == 120


def doubled(item):
    return {"x": item["x"] * 2}


def not_threes(item):
    return bool(item["x"][0, 0] % 3)


def ragged(item):
    return {"x": np.repeat(item["x"], 1 + int(item["x"][0, 0]) % 3, axis=0)}


def combinators(n):
    """map, filter, shuffle, unbatch, bucket (padded batches) and prefetch, in one recipe."""
    rows = pescador.unbatch(pescador.buffer(4, pescador.stream(counted, 0, n)))
    kept = pescador.shuffle(5, pescador.filter(not_threes, pescador.map(doubled, rows)), random_state=2)
    return pescador.prefetch(2, pescador.bucket([2], 2, pescador.map(ragged, kept), pad="x", lengths=None,
                                                strict=False))


def test_the_combinators_run_in_an_actor_and_resume(cluster):
    recipe = combinators(60)
    expected = [item["x"].tolist() for item in recipe]
    offloaded = pescador.ray_offload(workers=1, chunk=4)(recipe)
    assert [item["x"].tolist() for item in offloaded] == expected
    run = pescador.resumable(offloaded)
    head = [next(run)["x"].tolist() for _ in range(len(expected) // 2)]
    saved = run.state_dict()
    del run
    assert head + [item["x"].tolist() for item in pescador.resumable(offloaded, saved)] == expected


def test_ranks_shard_ray_workers(cluster, monkeypatch):
    seen, everything = [], rows(pescador.stream(sharded, 101))
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append(rows(pescador.ray_offload(workers=2)(pescador.stream(sharded, 101))))
    assert not set(seen[0]) & set(seen[1])
    assert seen[0] + seen[1] == everything


def test_exhaustive_mux_fails_over(cluster, tmp_path):
    """An exhaustive mux shards its pool across the actors and resumes after a death (needs the mux stages)."""
    marker = str(tmp_path / "exited")
    pool = [pescador.stream(counted, 100 * v, 40 + v, marker, 5) for v in range(4)]
    recipe = pescador.mux(2, None, with_replacement=False, random_state=3)(pool)
    with pytest.warns(FailoverWarning):
        got = list(pescador.ray_offload(workers=2, chunk=2)(recipe))
    expected = pescador.mux(2, None, with_replacement=False, random_state=3)(
        [pescador.stream(counted, 100 * v, 40 + v) for v in range(4)]
    )
    assert rows(got) == rows(expected) == rows(item for v in range(4) for item in counted(100 * v, 40 + v))


def test_the_docs_example_runs(cluster, capsys):
    import ray_example  # (docs/ray_example.py, shown in docs/beyond.rst)

    assert ray_example.main(workers=2) == set(range(10))
    assert "read 10 files on 2 Ray actors" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# Shares take turns (issue 23): the checks of tests/test_fairness.py, on actors
# ---------------------------------------------------------------------------

# Actors run tests/test_fairness.py's sources; chunks of 64 items, 8 of them in flight, so each share can
# run AHEAD (400) items ahead of a paused consumer (at most (hwm + 2) chunks are in flight: 640).
FAIR = dict(chunk=64, hwm=8, resources={"num_cpus": 0.5})


@pytest.mark.parametrize("workers", [2, 4])
def test_shares_take_turns_item_by_item_with_a_slow_consumer(cluster, tmp_path, workers):
    import test_fairness

    seen = test_fairness.turns(pescador.ray_offload(workers=workers, **FAIR), workers, tmp_path)
    assert test_fairness.worst_window(seen, workers) <= 1, collections.Counter(seen)


def test_under_epochs_every_file_is_read_about_as_often(cluster, tmp_path):
    import test_fairness

    counts = test_fairness.files_read(pescador.ray_offload(workers=4, **FAIR), 4, tmp_path)
    assert sorted(counts) == list(range(8))
    assert max(counts.values()) - min(counts.values()) <= test_fairness.ROWS, counts


# ---------------------------------------------------------------------------
# placement_timeout whatever the other shares deliver (issue 23)
# ---------------------------------------------------------------------------


def _deliver_until_error(run, seconds):
    """Take items from ``run`` until it raises (returned), or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    try:
        for _ in run:
            assert time.monotonic() < deadline, f"no error within {seconds} s while the other shares delivered"
    except PescadorError as exc:
        return exc
    pytest.fail("the run ended without an error")


def by_share():
    """Endless items that say which share made them."""
    wid = pescador.worker_info().id
    for i in itertools.count():
        yield {"w": np.array([wid]), "i": np.array([i])}


def test_placement_timeout_while_another_share_delivers(cluster):
    """Two actors of 2 CPUs on a head of 3: one is placed and delivers, the other never starts.  (The
    timeout leaves the placed actor time to start on a loaded machine.)"""
    offload = pescador.ray_offload(workers=2, resources={"num_cpus": 2}, placement_timeout=8)
    delivered = collections.Counter()
    deadline = time.monotonic() + 60
    with pytest.raises(PescadorError, match=r"share (\d)'s actor did not start within placement_timeout=8.0") as info:
        for item in offload(pescador.stream(by_share)):
            delivered[int(item["w"][0])] += 1
            assert time.monotonic() < deadline, f"no error while share(s) {sorted(delivered)} delivered"
    unplaced = int(re.search(r"share (\d)", str(info.value)).group(1))
    assert delivered[1 - unplaced] > 0 and delivered[unplaced] == 0, delivered
    assert _no_actor_left() == []


def test_placement_timeout_after_failover(cluster):
    """Share on a node that dies: its new actor cannot be placed (the one other "slot" is taken by the share
    that goes on delivering), and the run ends with the error instead of going on with one share."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = cluster.add_node(num_cpus=1, resources={"slot": 1})
    cluster.wait_for_nodes()
    offload = pescador.ray_offload(workers=2, resources={"num_cpus": 0, "resources": {"slot": 1}},
                                   placement_timeout=8, chunk=4)
    run = iter(offload(pescador.stream(by_share)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = set()
        while len(started) < 2:  # (both actors placed and delivering)
            started.add(int(next(run)["w"][0]))
        cluster.remove_node(node, allow_graceful=False)
        _wait_until_dead(node.node_id)
        error = _deliver_until_error(run, 60)
    assert "new actor (restart 1, after a failure) did not start within placement_timeout=8.0 seconds" in str(error)
    assert any(issubclass(w.category, FailoverWarning) for w in caught)
    assert _no_actor_left() == []


# ---------------------------------------------------------------------------
# Bytes of every item kind count against chunk_bytes; copy=True for every kind (issue 23)
# ---------------------------------------------------------------------------

QUARTER = 1 << 18  # bytes of one item: 4 items fill a chunk of chunk_bytes=1 MiB


def counted_items(path, kind):
    """Endless items of QUARTER bytes (a tuple of arrays, a dict holding bytes, a dict of arrays); one byte
    appended to ``path`` per item made."""
    with open(path, "ab", buffering=0) as made:
        for i in itertools.count():
            made.write(b".")
            if kind == "tuple":
                yield (np.full(QUARTER // 8, i, dtype=np.int64),)
            elif kind == "bytes":
                yield {"blob": bytes(QUARTER), "i": i}
            else:
                yield {"x": np.full(QUARTER // 8, i, dtype=np.int64)}


def _made_while_paused(paths, seconds=30.0):
    """Items made by each source, once no count has moved for a second (the actors are held back)."""
    deadline, last, since = time.monotonic() + seconds, None, time.monotonic()
    while time.monotonic() < deadline:
        made = [os.path.getsize(path) if os.path.exists(path) else 0 for path in paths]
        if made != last:
            last, since = made, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            break
        time.sleep(0.05)
    return dict(zip(KINDS, last))


KINDS = ("tuple", "bytes", "dict")


def test_a_paused_consumer_holds_the_actor_back_by_chunk_bytes_for_every_item_kind(cluster, tmp_path):
    """hwm=2 and 4 items to a chunk: at most hwm + 2 chunks are in flight (hwm waiting in Ray, one filling
    in the actor, one in the consumer's hands) and the item the source made next: 17 items, 4 MiB, for
    tuples, dicts holding bytes and dicts of arrays alike (three runs at once)."""
    paths = [str(tmp_path / kind) for kind in KINDS]
    hwm, per_chunk = 2, 4
    offload = pescador.ray_offload(hwm=hwm, chunk=64, chunk_bytes=1 << 20)
    runs = [iter(offload(pescador.stream(counted_items, path, kind))) for path, kind in zip(paths, KINDS)]
    try:
        for run in runs:
            next(run)
        made = _made_while_paused(paths)
        assert all(count <= (hwm + 2) * per_chunk + 1 for count in made.values()), made
    finally:
        for run in runs:
            run.close()


def test_copy_gives_writeable_arrays_for_every_item_kind(cluster):
    pairs = pescador.keras_tuples("x", "y")(pescador.stream([{"x": np.zeros((2, 3)), "y": np.ones((2, 1))}] * 3))
    for item in pescador.ray_offload(copy=True)(pairs):
        assert isinstance(item, tuple) and all(a.flags.writeable and a.flags.owndata for a in item)
    for item in pescador.ray_offload()(pairs):
        assert not any(a.flags.writeable for a in item)  # (views of the object store, as documented)


# ---------------------------------------------------------------------------
# Connecting (issue 23): joining a `ray start` cluster says so
# ---------------------------------------------------------------------------

JOINS = """
import logging, sys
import ray, ray._private.utils
from pescador import ray_stream
ray._private.utils.read_ray_address = lambda temp_dir=None: sys.argv[1]  # (as `ray start` left it)
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
ray_stream._ray()  # (what a run does first: connect)
print("connected to", ray.get_runtime_context().gcs_address)
"""


def test_a_process_that_joins_the_running_cluster_says_so(cluster):
    """A process that never called ray.init, on a machine where `ray start` runs a cluster, joins it.

    `ray start` leaves the cluster's address in /tmp/ray/ray_current_cluster, where ray.init() finds it;
    the process here reads this cluster's address there instead (other Ray clusters may run on the
    machine, and the file is theirs too).  (Only the connection: actors of a driver that joined a
    cluster made by ray.cluster_utils this way die at once, with ray_offload or without it.)"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", JOINS, cluster.address], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "joined the Ray cluster running on this machine at " + cluster.address in done.stdout, done.stdout
    assert "started a local Ray instance" not in done.stdout
    assert done.stdout.strip().endswith("connected to " + cluster.address)
