"""mux and its siblings: nothing invented, nothing lost, weights that mean shares."""

import collections
import itertools
import json
import pickle

import numpy as np
import pytest
import toolz
from hypothesis import given, settings
from hypothesis import strategies as st

import pescador
from pescador import PescadorError, stream, take
from pescador.extras import epochs
from pescador.mux import chain_mux, round_robin_mux, shuffled_mux, stochastic_mux
from pescador.workers import WorkerInfo, set_worker_info
from states import edited, places


def constant(value):
    while True:
        yield {"v": value}


def finite(tag, n):
    for i in range(n):
        yield {"v": tag, "i": i}


def nothing():
    return iter(())


def failing():
    raise RuntimeError("broken source")
    yield  # pragma: no cover


def counted_runs(tag, counter):
    """Each run yields (tag, run id) for ever; the run id tells activations apart."""
    run = next(counter)
    while True:
        yield {"v": tag, "run": run}


def shares(items, size):
    counts = collections.Counter(item["v"] for item in items)
    total = sum(counts.values())
    return np.array([counts[i] / total for i in range(size)])


def finite_pool(sizes):
    return [stream(finite, tag, n) for tag, n in enumerate(sizes)]


def pairs(items):
    return [(item["v"], item["i"]) for item in items]


def expected_pairs(sizes):
    return [(tag, i) for tag, n in enumerate(sizes) for i in range(n)]


# -- nothing lost, nothing invented ---------------------------------------------

pool_sizes = st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=8)


@given(pool_sizes, st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=2**16))
def test_without_replacement_every_item_exactly_once(sizes, k, seed):
    out = list(pescador.mux(k, None, with_replacement=False, random_state=seed)(finite_pool(sizes)))
    assert sorted(pairs(out)) == expected_pairs(sizes)
    for tag in range(len(sizes)):  # each stream's items stay in order
        own = [i for v, i in pairs(out) if v == tag]
        assert own == sorted(own)


@given(pool_sizes, st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=2**16))
def test_exhaustive_siblings_deliver_every_item_exactly_once(sizes, k, seed):
    pool = finite_pool(sizes)
    for step in (
        stochastic_mux(k, None, mode="exhaustive", random_state=seed),
        round_robin_mux(),
        chain_mux(),
    ):
        assert sorted(pairs(step(pool))) == expected_pairs(sizes), step


@given(
    pool_sizes,
    st.integers(min_value=1, max_value=6),
    st.one_of(st.none(), st.floats(min_value=0.5, max_value=20)),
    st.sampled_from(["with", "once", "revive", "single", "shuffled", "rr-cycle", "rr-permuted", "chain-random"]),
    st.integers(min_value=0, max_value=2**16),
)
def test_no_mode_invents_items_or_spins(sizes, k, lam, mode, seed):
    steps = {
        "with": pescador.mux(k, lam, random_state=seed),
        "once": pescador.mux(k, lam, with_replacement=False, random_state=seed),
        "revive": pescador.mux(k, lam, with_replacement=False, revive=True, random_state=seed),
        "single": stochastic_mux(k, lam, mode="single_active", random_state=seed),
        "shuffled": shuffled_mux(random_state=seed),
        "rr-cycle": round_robin_mux("cycle"),
        "rr-permuted": round_robin_mux("permuted_cycle", random_state=seed),
        "chain-random": chain_mux("with_replacement", random_state=seed),
    }
    produced = set(expected_pairs(sizes))
    out = pairs(take(300, steps[mode](finite_pool(sizes))))
    assert set(out) <= produced
    if not produced:
        assert out == []  # every stream is empty: the mux ends instead of spinning


@pytest.mark.timeout(20)
@pytest.mark.parametrize("prune", [True, False])
def test_all_empty_pool_ends(prune):
    pool = [stream(nothing) for _ in range(4)]
    assert list(take(10, pescador.mux(2, 4.0, prune_empty=prune, random_state=0)(pool))) == []
    assert list(take(10, pescador.mux(2, None, prune_empty=prune, random_state=0)(pool))) == []
    assert list(pescador.mux(2, 4.0, with_replacement=False, revive=True, prune_empty=prune)(pool)) == []


@pytest.mark.timeout(20)
def test_empty_streams_are_pruned_and_the_rest_keep_going():
    pool = [stream(nothing), stream(constant, 1), stream(nothing)]
    out = list(take(500, pescador.mux(2, 3.0, random_state=0)(pool)))
    assert len(out) == 500 and {x["v"] for x in out} == {1}


def test_a_failing_stream_raises_through_the_mux():
    with pytest.raises(RuntimeError, match="broken source"):
        list(take(10, pescador.mux(1, 4.0, random_state=0)([stream(failing)])))


# -- weights are shares -----------------------------------------------------------

SKEWED = [0.91, 0.045, 0.045]
N_ITEMS = 60_000
TOL = 0.012  # absolute tolerance on each share where every item is an independent draw


def share_tolerance(n_items, lam):
    """Five standard deviations of a share estimated from ``n_items`` items.

    With replacement, each activation is one weighted draw lasting about
    ``lam`` items, so ``n_items`` items hold about ``n_items / lam``
    independent draws; a share then has standard deviation
    sqrt(p (1 - p) lam / n_items), largest at p = 0.91 among SKEWED.
    """
    p = max(SKEWED)
    return 5 * np.sqrt(p * (1 - p) * max(lam, 1.0) / n_items)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
@pytest.mark.parametrize("lam", [1.0, 16.0, 100.0])
def test_weights_are_long_run_shares_with_replacement(k, lam):
    n_items = int(max(N_ITEMS, 2000 * lam))  # at least 2000 activations
    pool = [stream(constant, i) for i in range(3)]
    out = take(n_items, pescador.mux(k, lam, weights=SKEWED, random_state=k)(pool))
    np.testing.assert_allclose(shares(out, 3), SKEWED, atol=share_tolerance(n_items, lam))


@pytest.mark.parametrize("k", [3, 5])
def test_weights_are_shares_with_lam_none_when_every_stream_fits(k):
    pool = [stream(constant, i) for i in range(3)]
    out = take(N_ITEMS, pescador.mux(k, None, weights=SKEWED, random_state=3)(pool))
    np.testing.assert_allclose(shares(out, 3), SKEWED, atol=TOL)


@pytest.mark.parametrize("lam", [4.0, None])
def test_weights_are_shares_with_one_live_copy_when_every_stream_fits(lam):
    pool = [stream(constant, i) for i in range(3)]
    out = take(N_ITEMS, pescador.mux(3, lam, weights=SKEWED, with_replacement=False, revive=True, random_state=5)(pool))
    np.testing.assert_allclose(shares(out, 3), SKEWED, atol=TOL)
    out = take(N_ITEMS, shuffled_mux(weights=SKEWED, random_state=6)(pool))
    np.testing.assert_allclose(shares(out, 3), SKEWED, atol=TOL)


def test_many_streams_uneven_weights():
    weights = np.arange(1, 11, dtype=float)
    pool = [stream(constant, i) for i in range(10)]
    out = take(100_000, pescador.mux(4, 8.0, weights=weights, random_state=11)(pool))
    np.testing.assert_allclose(shares(out, 10), weights / weights.sum(), atol=0.01)


def test_zero_weight_streams_never_appear():
    pool = [stream(constant, i) for i in range(3)]
    out = list(take(5000, pescador.mux(2, 4.0, weights=[1, 0, 1], random_state=0)(pool)))
    assert {x["v"] for x in out} == {0, 2}


def test_uniform_by_default():
    pool = [stream(constant, i) for i in range(4)]
    out = take(N_ITEMS, pescador.mux(2, 8.0, random_state=2)(pool))
    np.testing.assert_allclose(shares(out, 4), [0.25] * 4, atol=TOL)


# -- lam ------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [3.0, 20.0])
def test_activation_lengths_follow_lam(lam):
    import itertools

    counter = itertools.count()
    pool = [stream(counted_runs, i, counter) for i in range(5)]
    out = list(take(60_000, pescador.mux(1, lam, random_state=4)(pool)))
    runs = collections.Counter(x["run"] for x in out)
    lengths = np.array(list(runs.values())[:-1])  # the last run is cut by take
    # zero-length activations start nothing, so the mean is that of Poisson(lam) given >= 1
    expected = lam / (1 - np.exp(-lam))
    assert abs(lengths.mean() - expected) < 0.05 * expected
    assert abs(lengths.var() - lam) < 0.15 * lam + 0.5  # Poisson: variance close to the rate


def test_lam_none_runs_each_stream_to_its_end():
    out = list(pescador.mux(1, None, with_replacement=False, random_state=0)(finite_pool([3, 4, 2])))
    tags = [x["v"] for x in out]
    assert [len(list(g)) for _, g in __import__("itertools").groupby(tags)] in ([3, 4, 2], [3, 2, 4], [4, 3, 2], [4, 2, 3], [2, 3, 4], [2, 4, 3])


@pytest.mark.parametrize("dist", ["constant", "binomial"])
def test_other_length_distributions(dist):
    import itertools

    counter = itertools.count()
    pool = [stream(counted_runs, i, counter) for i in range(3)]
    out = list(take(20_000, pescador.mux(1, 10.0, dist=dist, random_state=1)(pool)))
    lengths = np.array(list(collections.Counter(x["run"] for x in out).values())[:-1])
    assert abs(lengths.mean() - 10) < 0.5
    if dist == "constant":
        assert set(lengths) == {10}


# -- randomness ---------------------------------------------------------------------


def test_int_seed_reproduces_every_run():
    s = pescador.mux(3, 4.0, random_state=42)([stream(constant, i) for i in range(6)])
    first = [x["v"] for x in take(2000, s)]
    assert first == [x["v"] for x in take(2000, s)]
    assert first == [x["v"] for x in take(2000, pickle.loads(pickle.dumps(s)))]
    other = pescador.mux(3, 4.0, random_state=43)([stream(constant, i) for i in range(6)])
    assert first != [x["v"] for x in take(2000, other)]


@pytest.mark.parametrize("rs", [np.random.default_rng(0), np.random.RandomState(0), None])
def test_generators_and_random_states(rs):
    s = pescador.mux(2, 4.0, random_state=rs)([stream(constant, i) for i in range(3)])
    assert len(list(take(300, s))) == 300


@pytest.mark.parametrize("bad", [-1, 1.5, "seed", object(), True])
def test_bad_random_state(bad):
    with pytest.raises(PescadorError, match="random_state"):
        pescador.mux(2, random_state=bad)


# -- construction errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(k=0), ["k", ">= 1"]),
        (dict(k=2.5), ["k"]),
        (dict(k=2, lam=0), ["lam", "positive"]),
        (dict(k=2, lam=-3), ["lam"]),
        (dict(k=2, lam=float("inf")), ["lam"]),
        (dict(k=2, weights=[1, -1]), ["weights", "negative"]),
        (dict(k=2, weights=[0, 0]), ["weights", "zero"]),
        (dict(k=2, weights=[1, float("nan")]), ["weights", "finite"]),
        (dict(k=2, weights=[[1, 2]]), ["weights"]),
        (dict(k=2, with_replacement="no"), ["with_replacement"]),
    ],
)
def test_bad_parameters(kwargs, words):
    with pytest.raises(PescadorError) as info:
        pescador.mux(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_bad_pools():
    with pytest.raises(PescadorError, match="empty"):
        pescador.mux(2)([])
    with pytest.raises(PescadorError, match=r"member 1 \(a int\): stream\(\) cannot make a stream from a int"):
        pescador.mux(2)([stream(constant, 0), 5])
    with pytest.raises(PescadorError, match=r"member 1 \(a generator\).*can be iterated only once"):
        pescador.mux(2)([stream(constant, 0), constant(1)])
    with pytest.raises(PescadorError, match=r"member 0 \(a dict\)"):
        pescador.mux(2)([{"v": 1}])
    with pytest.raises(PescadorError, match="list of streams.*got a int"):
        pescador.mux(2)(5)
    with pytest.raises(PescadorError, match="list of streams.*got a str"):
        pescador.mux(2)("abc")
    for lazy in (stream(constant, 0), pescador.Streamer(constant, 0), constant):
        with pytest.raises(PescadorError, match="produced at run time; only chain_mux and ChainMux"):
            pescador.mux(2)(lazy)
        with pytest.raises(PescadorError, match="produced at run time"):
            chain_mux("with_replacement")(lazy)
    with pytest.raises(PescadorError, match="produced at run time"):
        chain_mux(stats=pescador.MuxStats())(constant)
    with pytest.raises(PescadorError, match="weights has 2 entries for a pool of 3"):
        pescador.mux(2, weights=[1, 1])([stream(constant, i) for i in range(3)])
    with pytest.raises(PescadorError, match="weights"):
        pescador.Mux([stream(constant, 0)], 1, pool_weights=[1, 2])
    with pytest.raises(PescadorError, match="member 0"):
        pescador.Mux([pescador.stream], 1)  # a function whose arguments cannot be empty is fine...
    with pytest.raises(PescadorError, match="mode 'sometimes' does not exist.*'exhaustive'"):
        stochastic_mux(2, 4.0, mode="sometimes")
    with pytest.raises(PescadorError, match="'cycle'"):
        round_robin_mux("forever")
    with pytest.raises(PescadorError, match="'exhaustive', 'cycle', 'with_replacement'"):
        chain_mux("twice")
    with pytest.raises(PescadorError, match="dist 'gamma' does not exist"):
        stochastic_mux(2, 4.0, dist="gamma")
    with pytest.raises(PescadorError, match="dist"):
        pescador.mux(2, dist="gamma")


# -- names, facades, pipes ----------------------------------------------------------


def test_mux_is_module_and_function():
    import pescador.mux as module
    from pescador.mux import Mux

    assert pescador.mux is module
    assert Mux is pescador.Mux is pescador.mux.Mux
    step = pescador.mux(k=3, lam=64)
    assert step == module.mux(k=3, lam=64)
    streams = [stream(constant, i) for i in range(5)]
    s = toolz.pipe(streams, pescador.mux(k=3, lam=64, random_state=0), take(10))
    assert len(list(s)) == 10
    assert repr(s).startswith("pipe(mux(k=3, lam=64.0, random_state=0)([stream(constant, 0), ")
    assert pickle.loads(pickle.dumps(s)) == s


def test_1_0_mux_facade():
    streams = [pescador.Streamer(constant, i) for i in range(4)]
    m = pescador.Mux(streams, k=2, lam=8, pool_weights=[1, 1, 1, 5], prune_empty_seeds=True, random_state=7)
    out = list(m(max_batches=4000))
    assert len(out) == 4000
    assert shares(out, 4)[3] > 0.5
    assert not m.active
    revived = pescador.Mux(finite_pool([2, 2]), 1, lam=None, with_replacement=False, revive=True, random_state=0)
    assert len(list(revived(max_batches=9))) == 9  # streams go back to the pool
    once = pescador.Mux(finite_pool([2, 3]), 2, lam=None, with_replacement=False, random_state=0)
    assert sorted(pairs(once())) == expected_pairs([2, 3])
    assert pescador.Mux(finite_pool([1]), 1).k == 1
    batch = next(pescador.Mux(finite_pool([2]), 1).tuples("v"))
    assert batch == (0,)


def test_3x_facades():
    pool = [pescador.Streamer(finite, t, 2) for t in range(3)]
    assert [x["v"] for x in pescador.RoundRobinMux(pool)()] == [0, 1, 2, 0, 1, 2]
    assert [x["v"] for x in pescador.RoundRobinMux(pool, "cycle")(max_iter=9)] == [0, 1, 2] * 3
    permuted = [x["v"] for x in pescador.RoundRobinMux(pool, "permuted_cycle", random_state=0)(max_iter=60)]
    assert all(sorted(permuted[i : i + 6]) == [0, 0, 1, 1, 2, 2] for i in range(0, 60, 6))
    assert len({tuple(permuted[i : i + 3]) for i in range(0, 60, 6)}) > 1
    assert pairs(pescador.ChainMux(pool)()) == expected_pairs([2, 2, 2])
    chained = pairs(pescador.ChainMux(pool, "with_replacement", random_state=0)(max_iter=40))
    assert len(chained) == 40 and all(chained[i][1] == 0 for i in range(0, 40, 2))
    shuffled = list(pescador.ShuffledMux(pool, random_state=0)(max_iter=300))
    assert len(shuffled) == 300  # streams that end are restarted
    assert sorted(pairs(pescador.StochasticMux(pool, 2, None, mode="exhaustive", random_state=1)())) == expected_pairs([2, 2, 2])
    sm = pescador.StochasticMux([pescador.Streamer(constant, i) for i in range(3)], 2, 4, weights=[1, 1, 2], random_state=0)
    np.testing.assert_allclose(shares(sm(max_iter=40_000), 3), [0.25, 0.25, 0.5], atol=0.015)


def test_round_robin_drops_streams_that_end():
    pool = finite_pool([1, 3, 2])
    assert pairs(round_robin_mux()(pool)) == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (1, 2)]


# -- workers --------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
def test_workers_shard_a_pool_run_without_replacement(count):
    sizes = [3, 1, 4, 1, 5, 9, 2]
    pool = finite_pool(sizes)
    seeds = np.random.SeedSequence(0).spawn(count)
    seen = []
    try:
        for wid in range(count):
            set_worker_info(WorkerInfo(wid, count, seeds[wid]))
            seen += pairs(pescador.mux(2, None, with_replacement=False, random_state=5)(pool))
            seen += pairs(round_robin_mux()(pool))
    finally:
        set_worker_info(None)
    assert sorted(seen) == sorted(expected_pairs(sizes) * 2)


def listed_pool(sizes):
    """A pool produced at run time: its streams are the items of a stream."""
    for tag, n in enumerate(sizes):
        yield stream(finite, tag, n)


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("lazy", [False, True])
def test_workers_shard_a_chain(count, lazy):
    sizes = [3, 1, 4, 1, 5, 9, 2]
    pool = stream(listed_pool, sizes) if lazy else finite_pool(sizes)
    seeds = np.random.SeedSequence(0).spawn(count)
    seen = []
    try:
        for wid in range(count):
            set_worker_info(WorkerInfo(wid, count, seeds[wid]))
            seen += pairs(chain_mux()(pool))
            mine = sum(sizes[wid::count])
            two_passes = pairs(take(2 * mine, chain_mux("cycle")(pool)))
            assert two_passes[:mine] == two_passes[mine:]
            seen += two_passes[:mine]
    finally:
        set_worker_info(None)
    assert sorted(seen) == sorted(expected_pairs(sizes) * 2)


def test_workers_with_an_int_seed_make_different_choices():
    pool = [stream(constant, i) for i in range(5)]
    step = pescador.mux(2, 3.0, random_state=9)
    seeds = np.random.SeedSequence(0).spawn(2)
    runs = []
    try:
        for wid in range(2):
            set_worker_info(WorkerInfo(wid, 2, seeds[wid]))
            runs.append([x["v"] for x in take(200, step(pool))])
            assert runs[-1] == [x["v"] for x in take(200, step(pool))]  # still reproducible
    finally:
        set_worker_info(None)
    assert runs[0] != runs[1]


# -- nothing spins: extreme lam and weights (issue 12) ---------------------------------


DRAW_METHODS = {"random", "poisson", "binomial", "choice", "permutation", "shuffle", "normal", "standard_normal",
                "exponential", "standard_exponential", "integers", "geometric", "uniform", "gumbel"}


class CountingGenerator(np.random.Generator):
    """A numpy Generator that counts the calls that draw numbers (each may draw a block)."""

    def __init__(self, seed):
        super().__init__(np.random.PCG64(seed))
        self.draws = 0

    def __getattribute__(self, name):
        if name in DRAW_METHODS:
            object.__getattribute__(self, "__dict__")["draws"] += 1
        return super().__getattribute__(name)


def started(tag, n, starts):
    """Like ``finite``, noting each start (activation) in ``starts``."""
    starts.append(tag)
    for i in range(n):
        yield {"v": tag, "i": i}


def run_counting_work(recipe, rng, starts, cap):
    """Iterate ``recipe`` for at most ``cap`` items; the largest number of draws and of stream starts
    between two consecutive items (or before the end)."""
    it = iter(recipe)
    worst = 0
    items = []
    while len(items) < cap:
        draws0, starts0 = rng.draws, len(starts)
        try:
            items.append(next(it))
        except StopIteration:
            worst = max(worst, rng.draws - draws0 + len(starts) - starts0)
            return items, worst, True
        worst = max(worst, rng.draws - draws0 + len(starts) - starts0)
    return items, worst, False


@pytest.mark.timeout(20)
@pytest.mark.parametrize("dist", ["poisson", "binomial", "constant"])
@pytest.mark.parametrize("kind", ["with", "revive", "once-endless"])
def test_a_tiny_lam_still_yields(kind, dist):
    pool = [stream(constant, i) for i in range(3)]
    step = {
        "with": pescador.mux(1, 1e-300, dist=dist, random_state=0),
        "revive": pescador.mux(1, 1e-300, with_replacement=False, revive=True, dist=dist, random_state=0),
        "once-endless": pescador.mux(1, 1e-300, with_replacement=False, dist=dist, random_state=0),
    }[kind]
    out = list(take(50, step(pool)))
    if kind == "once-endless":  # each stream activated once, for at least one item
        assert sorted(x["v"] for x in out) == [0, 1, 2]
    else:
        assert len(out) == 50


@pytest.mark.timeout(20)
@pytest.mark.parametrize("dist", ["poisson", "binomial", "constant"])
def test_a_huge_lam_runs(dist):
    pool = [stream(constant, i) for i in range(3)]
    out = list(take(50, pescador.mux(2, 1e300, dist=dist, random_state=0)(pool)))
    assert len(out) == 50
    out = list(take(50, pescador.mux(2, 1e300, weights=[1, 2, 3], with_replacement=False, dist=dist,
                                     random_state=0)(pool)))
    assert len(out) == 50


@pytest.mark.timeout(20)
@pytest.mark.parametrize("light", [1e-7, 1e-9, 1e-300])
def test_a_pool_left_with_only_light_streams_finishes(light):
    pool = [pescador.Streamer(finite, "a", 5), pescador.Streamer(finite, "b", 5)]
    m = pescador.Mux(pool, 2, pool_weights=[1.0, light], with_replacement=False, random_state=0)
    assert sorted(pairs(m())) == [("a", i) for i in range(5)] + [("b", i) for i in range(5)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lam", [None, 16.0])
@pytest.mark.parametrize("replace", [True, False])
def test_file_size_weights_cost_a_bounded_number_of_draws(replace, lam):
    """Weights spanning 1e5..1e7 (file sizes): the work between two items does not depend on the ratio."""
    starts: list = []
    sizes = [3, 7, 2, 9, 4, 6, 1, 8] * 5
    pool = [stream(started, t, n, starts) for t, n in enumerate(sizes)]
    weights = np.geomspace(1e5, 1e7, len(pool))[np.random.default_rng(1).permutation(len(pool))]
    rng = CountingGenerator(0)
    step = pescador.mux(4, lam, weights=weights, with_replacement=replace, random_state=rng)
    items, worst, ended = run_counting_work(step(pool), rng, starts, cap=2000)
    assert worst <= 2 * (len(pool) + 4) + 8
    if not replace and lam is None:
        assert ended and sorted(pairs(items)) == expected_pairs(sizes)


extreme_lams = st.one_of(
    st.none(),
    st.sampled_from([1e-300, 1e-9, 0.3, 1.0, 3.0, 64.0, 1e9, 1e300]),
    st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False, exclude_min=False),
)
extreme_weights = st.one_of(
    st.sampled_from([0.0, 1e-300, 1e-30, 1e-9, 1.0, 1e9, 1e30, 1e300]),
    st.floats(min_value=1e-300, max_value=1e300),
)
mux_kinds = ["with", "once", "revive", "single", "exhaustive", "shuffled", "epochs", "rr-cycle", "chain-random"]


@pytest.mark.timeout(120)
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=6), extreme_weights), min_size=1, max_size=7),
    st.integers(min_value=1, max_value=5),
    extreme_lams,
    st.sampled_from(mux_kinds),
    st.sampled_from(["poisson", "binomial", "constant"]),
    st.booleans(),
    st.integers(min_value=0, max_value=2**16),
)
def test_any_accepted_parameters_make_bounded_work_between_items(members, k, lam, kind, dist, prune, seed):
    sizes = [n for n, _ in members]
    weights = [w for _, w in members]
    if not sum(weights) > 0:
        weights[0] = 1.0
    rng = CountingGenerator(seed)
    try:
        step = {
            "with": lambda: pescador.mux(k, lam, weights=weights, prune_empty=prune, dist=dist, random_state=rng),
            "once": lambda: pescador.mux(k, lam, weights=weights, with_replacement=False, prune_empty=prune,
                                         dist=dist, random_state=rng),
            "revive": lambda: pescador.mux(k, lam, weights=weights, with_replacement=False, revive=True,
                                           prune_empty=prune, dist=dist, random_state=rng),
            "single": lambda: stochastic_mux(k, lam, weights, "single_active", prune, dist, rng),
            "exhaustive": lambda: stochastic_mux(k, lam, weights, "exhaustive", prune, dist, rng),
            "shuffled": lambda: shuffled_mux(weights=weights, random_state=rng),
            "epochs": lambda: pescador.epochs(3, k=k, random_state=rng),
            "rr-cycle": lambda: round_robin_mux("permuted_cycle", random_state=rng),
            "chain-random": lambda: chain_mux("with_replacement", random_state=rng),
        }[kind]()
    except PescadorError:
        return  # refused at construction: fine
    starts: list = []
    pool = [stream(started, t, n, starts) for t, n in enumerate(sizes)]
    items, worst, ended = run_counting_work(step(pool), rng, starts, cap=300)
    assert set(pairs(items)) <= set(expected_pairs(sizes))
    assert worst <= 4 * (len(pool) + k) + 8
    if kind in ("once", "exhaustive") and lam is None:
        live = [n for n, w in zip(sizes, weights) if w > 0]
        assert ended and len(items) == min(300, sum(live))


@pytest.mark.timeout(20)
def test_a_resumable_run_with_a_tiny_lam_yields():
    pool = [stream(constant, i) for i in range(3)]
    run = pescador.resumable(pescador.mux(1, 1e-300, random_state=0)(pool))
    assert len([next(run) for _ in range(30)]) == 30


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scale", [1e-300, 1e300, 5e-324 / min(SKEWED)])
@pytest.mark.parametrize("kind", ["revive", "lam-none", "once-lam-none"])
def test_weights_are_shares_at_any_scale(kind, scale):
    """Weights mean the same at 1e-300 or 1e300 as at 1: the choices use them as exact ratios."""
    weights = [w * scale for w in SKEWED]
    pool = [stream(constant, i) for i in range(3)]
    step = {
        "revive": pescador.mux(3, 4.0, weights=weights, with_replacement=False, revive=True, random_state=5),
        "lam-none": pescador.mux(5, None, weights=weights, random_state=3),
        "once-lam-none": pescador.mux(3, None, weights=weights, with_replacement=False, random_state=3),
    }[kind]
    out = take(N_ITEMS, step(pool))
    np.testing.assert_allclose(shares(out, 3), SKEWED, atol=TOL)


@pytest.mark.timeout(60)
def test_a_light_stream_left_alone_gets_every_item_and_the_order_of_the_light_ones_follows_their_weights():
    # once the heavy stream has ended, the two light ones (1e-300 and 1e-250: a ratio of 1e50) share the
    # slots as their weights say: the heavier of them first
    pool = [stream(finite, t, 20) for t in range(3)]
    for seed in range(20):
        out = [x["v"] for x in pescador.mux(3, None, weights=[1e300, 1e-300, 1e-250], with_replacement=False,
                                            random_state=seed)(pool)]
        assert out == [0] * 20 + [2] * 20 + [1] * 20


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["revive", "lam-none-copies", "once", "single-dry"])
def test_resumable_weighted_runs_resume_exactly(kind):
    import json

    weights = [1e300, 3.0, 1e-300, 2.0]
    pool = [stream(finite, t, n) for t, n in enumerate([30, 7, 12, 0])]
    step = {
        "revive": pescador.mux(2, 3.0, weights=weights, with_replacement=False, revive=True, random_state=1),
        "lam-none-copies": pescador.mux(6, None, weights=weights, random_state=2),
        "once": pescador.mux(2, 5.0, weights=weights, with_replacement=False, random_state=3),
        "single-dry": stochastic_mux(2, 2.0, weights, "single_active", False, random_state=4),
    }[kind]
    recipe = take(120, step(pool))
    whole = pairs(pescador.resumable(recipe))
    for cut in (1, 17, 50):
        run = pescador.resumable(recipe)
        head = pairs(next(run) for _ in range(min(cut, len(whole))))
        state = json.loads(json.dumps(run.state_dict()))
        assert head + pairs(pescador.resumable(recipe, state)) == whole


# -- one engine for plain and resumable runs (issue 14) ---------------------------------------


def listed(tag, n):
    return stream([{"v": tag, "i": i} for i in range(n)])


def mixed_pool(sizes):
    """Generator-function and list sources, alternately (both are resumed, by replay or by position)."""
    return [stream(finite, t, n) if t % 2 else listed(t, n) for t, n in enumerate(sizes)]


WEIGHTS = [1e300, 3.0, 1e-300, 2.0, 1.0]
KINDS = {  # every kind, with int seeds, across its modes and its slot choices
    "with": lambda s: pescador.mux(2, 3.0, random_state=s),
    "with-weights": lambda s: pescador.mux(3, 4.0, weights=WEIGHTS, random_state=s),
    "with-lam-none-weights": lambda s: pescador.mux(6, None, weights=WEIGHTS, random_state=s),
    "with-no-prune": lambda s: pescador.mux(2, 2.0, prune_empty=False, random_state=s),
    "with-binomial": lambda s: pescador.mux(2, 0.7, dist="binomial", random_state=s),
    "with-constant": lambda s: pescador.mux(3, 2.0, dist="constant", random_state=s),
    "tiny-lam": lambda s: pescador.mux(2, 0.3, random_state=s),
    "once": lambda s: pescador.mux(2, 5.0, weights=WEIGHTS, with_replacement=False, random_state=s),
    "once-lam-none": lambda s: pescador.mux(2, None, with_replacement=False, random_state=s),
    "revive": lambda s: pescador.mux(2, 3.0, weights=WEIGHTS, with_replacement=False, revive=True, random_state=s),
    "stochastic-binomial": lambda s: stochastic_mux(3, 4.0, weights=WEIGHTS, random_state=s),
    "stochastic-binomial-even": lambda s: stochastic_mux(3, 6.0, random_state=s),
    "stochastic-poisson-single": lambda s: stochastic_mux(2, 3.0, mode="single_active", dist="poisson", random_state=s),
    "stochastic-single-dry": lambda s: stochastic_mux(2, 2.0, WEIGHTS, "single_active", False, random_state=s),
    "stochastic-exhaustive": lambda s: stochastic_mux(7, 2.5, mode="exhaustive", dist="constant", random_state=s),
    "stochastic-rate-none": lambda s: stochastic_mux(2, None, mode="single_active", random_state=s),
    "shuffled": lambda s: shuffled_mux(random_state=s),
    "shuffled-weights": lambda s: shuffled_mux(weights=WEIGHTS, random_state=s),
    "round-robin": lambda s: round_robin_mux(random_state=s),
    "round-robin-cycle": lambda s: round_robin_mux("cycle"),
    "round-robin-permuted": lambda s: round_robin_mux("permuted_cycle", random_state=s),
    "chain": lambda s: chain_mux(),
    "chain-cycle": lambda s: chain_mux("cycle", random_state=s),
    "chain-random": lambda s: chain_mux("with_replacement", random_state=s),
    "epochs": lambda s: epochs(3, k=2, random_state=s),
    "epochs-all": lambda s: epochs(2, random_state=s),
}
SIZES = [6, 3, 0, 9, 4]


def kind_recipe(kind, seed, sizes=SIZES, n=150):
    return take(n, KINDS[kind](seed)(mixed_pool(sizes)))


def pairs_of(items):
    return [(x["v"], x["i"]) for x in items]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_resumable_run_is_the_plain_run_item_for_item(kind):
    for seed in range(5):
        recipe = kind_recipe(kind, seed)
        plain = pairs_of(recipe)
        assert pairs_of(pescador.resumable(recipe)) == plain
        assert len(plain) > 0


def resumed_at(recipe, cut):
    """The first ``cut`` items of a resumable run, and the state then, through JSON."""
    run = pescador.resumable(recipe)
    head = []
    for _ in range(cut):
        try:
            head.append(next(run))
        except StopIteration:
            break
    return pairs_of(head), json.loads(json.dumps(run.state_dict()))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(KINDS)), st.integers(0, 2**32 - 1), st.lists(st.integers(0, 12), min_size=1, max_size=6),
       st.floats(0, 1), st.floats(0, 1))
def test_head_and_resumed_tail_are_the_uninterrupted_run_for_every_kind(kind, seed, sizes, where, again):
    if kind.endswith("weights") or kind in ("once", "revive", "stochastic-binomial", "stochastic-single-dry"):
        sizes = (sizes * 5)[:5]  # (the weights are for a pool of 5)
    recipe = kind_recipe(kind, seed, sizes, n=80)
    whole = pairs_of(recipe)
    head, state = resumed_at(recipe, int(where * len(whole)))
    assert head + pairs_of(pescador.resumable(recipe, state)) == whole
    # a resumed run checkpoints and resumes in turn
    run = pescador.resumable(recipe, state)
    middle = pairs_of(next(run) for _ in range(int(again * (len(whole) - len(head)))))
    state = json.loads(json.dumps(run.state_dict()))
    assert head + middle + pairs_of(pescador.resumable(recipe, state)) == whole


def test_a_resumable_run_refuses_a_random_state_that_cannot_be_reproduced_at_once():
    pool = mixed_pool([3, 4])
    for rs, words in ((np.random.default_rng(0), "Generator"), (np.random.RandomState(0), "RandomState")):
        for step in (pescador.mux(2, 4.0, random_state=rs), shuffled_mux(random_state=rs),
                     round_robin_mux("permuted_cycle", random_state=rs), chain_mux("with_replacement", random_state=rs),
                     epochs(2, random_state=rs), stochastic_mux(2, 3.0, random_state=rs)):
            with pytest.raises(PescadorError, match=f"{words}.*give an int random_state, or None"):
                pescador.resumable(take(5, step(pool)))
            assert len(list(take(5, step(pool)))) == 5  # a plain run draws as it likes
    for step in (round_robin_mux(), round_robin_mux("cycle"), chain_mux(), chain_mux("cycle")):  # draw nothing
        assert pairs_of(pescador.resumable(take(9, step(pool)))) == pairs_of(take(9, step(pool)))


def test_every_kind_with_random_state_none_resumes_as_its_run_would_have_gone_on():
    """random_state=None: a resumable run draws its seeds from entropy it records in its state, so a
    resume gives what the same run gives after the checkpoint (which no other run repeats)."""
    pool = mixed_pool([3, 4, 5])
    for step in (pescador.mux(2, 4.0), shuffled_mux(), round_robin_mux("permuted_cycle"),
                 chain_mux("with_replacement"), epochs(3, k=2), stochastic_mux(2, 3.0, mode="single_active")):
        recipe = take(40, step(pool))
        for cut in (0, 7, 23):
            run = pescador.resumable(recipe)
            head = pairs_of(next(run) for _ in range(cut))
            state = json.loads(json.dumps(run.state_dict()))
            tail = pairs_of(run)
            assert pairs_of(pescador.resumable(recipe, state)) == tail, (step, cut)
            assert len(head) + len(tail) == len(list(recipe))


# -- every field of a mux state is checked ---------------------------------------------------------


def mutations(value, path):
    """Negative, huge, of a wrong type, a field dropped or added, an entry added.

    Not here: values of the right type and in range (another count that fits, another valid generator
    state, a used-up block as null): a state cannot tell those from the real one, they are other
    positions of the same run.
    """
    wrong_types = ["x", 1.5, True, {"a": 1}]
    if isinstance(value, bool):
        return wrong_types[:2] + [0, None, []]
    if isinstance(value, int):
        out = wrong_types + [None, []]
        in_generator = any(isinstance(step, str) and step in ("rng", "state") for step in path) or (
            len(path) >= 2 and path[-2] == 0 and path[-3:-2] != ("slots",))
        out += [-(2**200), 2**200] if in_generator else [-5, -(10**18), 10**18, 2**200, -value - 2, value + 10**9]
        return out
    if isinstance(value, float):
        return ["x", None, True, -1.0, 1e300, float("nan")]
    if isinstance(value, str):
        return [1, None, "", value + "x"]
    if value is None:
        return [5, "x", [1], {"a": 1}]
    if isinstance(value, list):
        return ["x", 5, {"a": 1}, value + [value[-1] if value else 10**6]]  # (a duplicate, or out of range)
    out = ["x", 5, [1], dict(value, extra=1)]
    out += [{k: v for k, v in value.items() if k != key} for key in value]
    return out


def continuation(recipe, state, limit):
    return pairs_of(itertools.islice(pescador.resumable(recipe, state), limit))


def pool_of_streams(sizes):
    """A pool produced at run time: a generator function whose items are streams (or live iterators)."""
    for t, n in enumerate(sizes):
        yield finite(t, n) if t % 3 == 2 else mixed_pool([0] * t + [n])[t]


LAZY = {
    "lazy-chain": lambda: take(60, chain_mux()(stream(pool_of_streams, SIZES))),
    "lazy-chain-cycle": lambda: take(60, chain_mux("cycle")(stream(pool_of_streams, SIZES))),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", sorted(KINDS) + sorted(LAZY))
def test_every_field_of_a_mux_state_is_checked(kind):
    """Each mutation of each field of a real state gives a PescadorError naming a field, or the same
    continuation as the state it was made from: never other data, another exception or a long run."""
    recipe = LAZY[kind]() if kind in LAZY else kind_recipe(kind, 7, n=60)
    whole = pairs_of(recipe)
    assert pairs_of(pescador.resumable(recipe)) == whole
    checked = 0
    for cut in (len(whole) // 3, 2 * len(whole) // 3):
        head, state = resumed_at(recipe, cut)
        tail = whole[len(head):]
        for path, value in list(places(state["stages"]["up"])):  # (take's state holds the mux's)
            if not path:
                continue
            for bad in mutations(value, path):
                mutated = edited(state, ("up",) + path, bad)
                try:
                    got = continuation(recipe, mutated, len(tail) + 5)
                except PescadorError as exc:
                    assert "resumable" in str(exc) or "state" in str(exc), (path, bad, exc)
                else:
                    assert got == tail, (path, bad)
                checked += 1
    assert checked > 40


def closing(tag, opened, closed):
    opened.append(tag)
    try:
        while True:
            yield {"v": tag, "i": 0}
    finally:
        closed.append(tag)


@pytest.mark.parametrize("kind", ["with", "with-lam-none-weights", "round-robin-cycle", "epochs"])
def test_a_run_dropped_or_closed_early_closes_its_live_streams_at_once(kind):
    import gc

    for how in ("drop", "close"):
        opened, closed = [], []
        it = iter(KINDS[kind](0)([stream(closing, t, opened, closed) for t in range(5)]))
        [next(it) for _ in range(7)]
        gc.disable()  # (at once: by reference counting, not by a later collection of cycles)
        try:
            assert len(closed) < len(opened)  # (some are live)
            if how == "drop":
                del it
            else:
                it.close()
            assert sorted(closed) == sorted(opened)
        finally:
            gc.enable()
