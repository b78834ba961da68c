"""The 3.x extras: @streamable, cache, epochs, epoch_length."""

import collections
import json
import pickle

import numpy as np
import pytest

import pescador
from pescador import PescadorError, cache, epoch_length, epochs, stream, streamable, take, zmq_offload


@streamable
def numbered(n, tag=0):
    for i in range(n):
        yield {"tag": np.array([tag]), "i": np.array([i])}


def keys(items):
    return [(int(x["tag"][0]), int(x["i"][0])) for x in items]


# -- @streamable ---------------------------------------------------------------------------


def test_streamable_returns_a_restartable_recipe():
    s = numbered(3)
    assert isinstance(s, pescador.Stream)
    assert keys(s) == keys(s) == [(0, 0), (0, 1), (0, 2)]
    assert repr(s) == "stream(numbered, 3)"
    assert s == numbered(3) and s != numbered(4)


def test_streamable_recipes_pickle_and_cross_processes():
    s = numbered(4, tag=2)
    assert keys(pickle.loads(pickle.dumps(s))) == keys(s)
    assert pickle.loads(pickle.dumps(numbered)) is numbered


@pytest.mark.timeout(60)
def test_streamable_recipes_run_in_spawned_workers():
    assert keys(zmq_offload(start_method="spawn")(numbered(5))) == keys(numbered(5))


def plain(n):
    for i in range(n):
        yield {"tag": np.array([9]), "i": np.array([i])}


aliased = streamable(plain)  # not as a decorator: the plain function keeps its name


def test_streamable_as_a_function_leaves_the_plain_function_picklable():
    s = aliased(3)
    assert pickle.loads(pickle.dumps(s)) == s and keys(pickle.loads(pickle.dumps(s))) == keys(s)
    plain_recipe = stream(plain, 2)
    assert keys(pickle.loads(pickle.dumps(plain_recipe))) == [(9, 0), (9, 1)]


def test_streamable_checks_arguments_and_input():
    with pytest.raises(PescadorError, match="arguments do not fit"):
        numbered(1, 2, 3)
    with pytest.raises(PescadorError, match="expected a generator function"):
        streamable(5)


# -- cache ---------------------------------------------------------------------------------


def test_cache_with_prob_one_passes_items_through():
    s = numbered(50)
    assert keys(cache(4, prob=1.0)(s)) == keys(s)
    assert keys(cache(80, prob=0.5)(s)) == keys(s)  # upstream ends while the cache fills


@pytest.mark.parametrize("prob", [0.2, 0.5, 0.8])
def test_cache_prob_is_the_probability_of_a_new_item_as_in_3x(prob):
    n, n_cache = 20_000, 16
    out = keys(cache(16, prob=prob, random_state=3)(numbered(n)))
    assert out[:n_cache] == keys(numbered(n_cache))  # the first n_cache pass through, in order
    seen = set()
    firsts = []
    for key in out:
        if key not in seen:
            firsts.append(key)
            seen.add(key)
    # every item, in order, the first time it appears: so a repeat is always of an item seen before
    assert firsts == keys(numbered(n))
    # after the first n_cache, each step draws a new item with probability prob, and the run ends at
    # the step that finds upstream empty: repeats are the failures before the (n - n_cache + 1)-th
    # success, a negative binomial of mean r (1 - p) / p and variance r (1 - p) / p^2
    r = n - n_cache + 1
    repeats = len(out) - n
    expected = r * (1 - prob) / prob
    assert abs(repeats - expected) < 6 * np.sqrt(r * (1 - prob)) / prob


def test_cache_in_both_3x_styles():
    items = [{"i": i} for i in range(30)]
    s = pescador.Streamer(items)
    by_data = [x["i"] for x in cache(s, 4, 0.5, 7)]  # cache(stream, n_cache, prob, random_state), as in 3.x
    assert by_data == [x["i"] for x in cache(4, prob=0.5, random_state=7)(items)]
    assert [x["i"] for x in pescador.maps.cache(iter(items), 4, prob=0.5, random_state=7)] == by_data
    assert [x["i"] for x in cache(items, n_cache=4, prob=0.5, random_state=7)] == by_data
    assert pescador.maps.cache is cache
    assert list(cache(iter("abcde"), 2, prob=0.5, random_state=0))[:2] == ["a", "b"]  # any items, as 3.x
    with pytest.raises(PescadorError, match="give prob and random_state by name"):
        cache(4, 0.5)


def test_cache_reproduces_with_a_seed():
    recipe = cache(3, prob=0.6, random_state=7)(numbered(200))
    out = keys(recipe)
    assert keys(recipe) == out
    assert keys(cache(3, prob=0.6, random_state=8)(numbered(200))) != out


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_cache=0), "n_cache"),
    (dict(n_cache=4, prob=0.0), "prob (the probability of drawing a new item, as in pescador 3.x) must be a number in (0, 1]"),
    (dict(n_cache=4, prob=1.5), "(0, 1]"),
    (dict(n_cache=4, prob=-0.1), "prob"),
    (dict(n_cache=4, prob=True), "prob"),
    (dict(n_cache=4, random_state="x"), "random_state"),
])
def test_cache_bad_parameters(kwargs, words):
    with pytest.raises(PescadorError) as info:
        cache(**kwargs)
    assert words in str(info.value)


# -- epochs and epoch_length ------------------------------------------------------------------


SIZES = [4, 0, 7, 2, 5]


def pool():
    return [numbered(n, tag=t) for t, n in enumerate(SIZES)]


@pytest.mark.parametrize("k", [None, 1, 2])
def test_each_epoch_yields_every_item_exactly_once(k):
    out = keys(epochs(3, k=k, random_state=0)(pool()))
    total = sum(SIZES)
    assert len(out) == 3 * total
    expected = collections.Counter(keys(pescador.mux.chain_mux()(pool())))
    for e in range(3):
        assert collections.Counter(out[e * total : (e + 1) * total]) == expected


def test_epochs_differ_in_order_and_a_seed_reproduces_them():
    recipe = epochs(2, k=2, random_state=1)(pool())
    out = keys(recipe)
    assert out == keys(recipe)
    assert out[: sum(SIZES)] != out[sum(SIZES) :]


@pytest.mark.timeout(10)
def test_epochs_forever_and_an_empty_pool_ends():
    assert len(keys(take(100, epochs()(pool())))) == 100
    assert list(epochs()([numbered(0), numbered(0)])) == []


@pytest.mark.timeout(60)
def test_epochs_are_sharded_across_workers():
    out = keys(zmq_offload(workers=2)(epochs(2)(pool())))
    assert collections.Counter(out) == collections.Counter(keys(epochs(2)(pool())))


def cached(n):
    yield from cache(4, prob=0.5, random_state=3)(numbered(n, tag=pescador.worker_info().id))


@pytest.mark.timeout(60)
def test_cache_draws_differ_across_workers_even_with_an_int_seed():
    out = keys(zmq_offload(workers=2)(stream(cached, 300)))
    per_worker = [[i for tag, i in out if tag == w] for w in (0, 1)]
    assert per_worker[0] != per_worker[1]


def test_epoch_length():
    listed = [stream([{"x": 1}] * n) for n in (3, 5)]
    assert epoch_length(epochs(4)(listed)) == 8
    assert epoch_length(pescador.mux(2, None, with_replacement=False)(listed)) == 8
    assert epoch_length(pescador.mux.round_robin_mux()(listed)) == 8
    assert epoch_length(pescador.take(6, pescador.mux.chain_mux()(listed))) == 6
    assert epoch_length(pescador.tuples("x")(listed[0])) == 3
    assert epoch_length(zmq_offload()(listed[1])) == 5
    assert epoch_length(pescador.mux(2, 8.0)(listed)) is None  # with replacement: endless
    assert epoch_length(epochs()(pool())) is None  # generator functions: unknown
    assert epoch_length(zmq_offload(workers=2)(listed[1])) == 10  # (each worker runs it whole)
    assert epoch_length(zmq_offload(workers=2)(epochs()(listed))) == 8  # (the workers share the pool out)
    # an epoch is an epoch, while a run of anything built on epochs counts all of its items
    assert epoch_length(pescador.take(100, epochs()(listed))) == 100
    assert epoch_length(pescador.mux(2, None, with_replacement=False)([epochs(2)(listed)] * 2)) == 32
    assert epoch_length(pescador.tuples("x")(epochs(3)(listed))) == 8


# -- epochs and epoch_length: issue 12 --------------------------------------------------------


def empty_on_first_run(runs, n):
    """Yields nothing on its first run (say, everything was filtered out), ``n`` items on later runs."""
    run = next(runs)
    if run == 0:
        return
    for i in range(n):
        yield {"tag": np.array([7]), "i": np.array([i])}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("k", [None, 1])
def test_a_stream_empty_in_one_epoch_runs_again_in_the_next(k):
    import itertools

    recipe = epochs(3, k=k, random_state=0)([stream(empty_on_first_run, itertools.count(), 2), numbered(3)])
    out = keys(recipe)
    assert collections.Counter(out) == collections.Counter(keys(numbered(3)) * 3 + [(7, 0), (7, 1)] * 2)


@pytest.mark.timeout(20)
def test_round_robin_cycles_run_a_stream_again_after_an_empty_pass():
    import itertools

    pool = [stream(empty_on_first_run, itertools.count(), 1), numbered(1)]
    out = keys(take(6, pescador.mux.round_robin_mux("cycle")(pool)))
    assert out == [(0, 0), (7, 0), (0, 0), (7, 0), (0, 0), (7, 0)]


def test_epoch_length_leaves_out_members_of_weight_zero():
    listed = [stream([{"x": 1}] * n) for n in (3, 5, 2)]
    for recipe in (
        pescador.mux(2, None, with_replacement=False, weights=[1, 0, 1])(listed),
        pescador.mux.stochastic_mux(2, None, weights=[1, 0, 1], mode="exhaustive")(listed),
        pescador.Mux(listed, 2, None, pool_weights=[1, 0, 1], with_replacement=False),
    ):
        assert epoch_length(recipe) == 5 == len(list(recipe))
    two = [stream([{"x": 1}] * n) for n in (3, 5)]
    assert epoch_length(pescador.mux(2, None, with_replacement=False, weights=[1, 0])(two)) == 3


def epochs_through_two_workers():
    """Run in a child process: epochs(10) over a 1-item and a 99-item source, through two workers."""
    small = stream([{"tag": np.array([0]), "i": np.array([0])}])
    large = numbered(99, tag=1)
    out = keys(zmq_offload(workers=2)(epochs(10, random_state=0)([small, large])))
    one_pass = zmq_offload(workers=2)(pescador.mux(2, None, with_replacement=False, random_state=0)([small, large]))
    apart = keys(epochs(3, random_state=0)([one_pass]))  # the docs' way to keep epochs apart
    print(json.dumps([out, apart]))


def run_isolated(function_name, timeout):
    """Run a function of this module in a fresh Python process in its own session; kill the whole
    session if it takes longer than ``timeout`` seconds.  Returns its stdout."""
    import os
    import signal
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path[:0] = {[here] + sys.path!r}; import test_extras; test_extras.{function_name}()"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True, env=env)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise AssertionError(f"{function_name} did not end within {timeout} s")
    assert child.returncode == 0, err
    return out


@pytest.mark.timeout(120)
def test_epochs_under_two_workers_keep_each_workers_epochs_in_order():
    """What the docs promise under workers: every item once per epoch in total, and each worker's share
    (here: each source) epoch by epoch; the shares do not wait for each other."""
    out, apart = json.loads(run_isolated("epochs_through_two_workers", 100).strip().splitlines()[-1])
    out = [tuple(x) for x in out]
    assert collections.Counter(out) == collections.Counter([(0, 0)] * 10 + [(1, i) for i in range(99)] * 10)
    assert [i for tag, i in out if tag == 1] == list(range(99)) * 10  # the large source: epoch after epoch
    epoch = sorted([(0, 0)] + [(1, i) for i in range(99)])
    assert [sorted(map(tuple, apart[e * 100 : (e + 1) * 100])) for e in range(3)] == [epoch] * 3
