"""The 3.x extras: @streamable, cache, epochs, epoch_length."""

import collections
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


def test_cache_with_prob_zero_passes_items_through():
    s = numbered(50)
    assert keys(cache(4, prob=0.0)(s)) == keys(s)


@pytest.mark.parametrize("prob", [0.25, 0.5, 0.8])
def test_cache_reuses_items_already_seen_at_the_expected_rate(prob):
    n = 20_000
    out = keys(cache(16, prob=prob, random_state=3)(numbered(n)))
    seen = set()
    firsts = []
    for key in out:
        if key not in seen:
            firsts.append(key)
            seen.add(key)
    # every item, in order, the first time it appears: so a repeat is always of an item seen before
    assert firsts == keys(numbered(n))
    reuses = len(out) - n
    expected = n * prob / (1 - prob)
    # geometric counts: variance n p / (1-p)^2; six standard deviations
    assert abs(reuses - expected) < 6 * np.sqrt(n * prob) / (1 - prob)


def test_cache_reproduces_with_a_seed():
    recipe = cache(3, prob=0.6, random_state=7)(numbered(200))
    out = keys(recipe)
    assert keys(recipe) == out
    assert keys(cache(3, prob=0.6, random_state=8)(numbered(200))) != out


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_cache=0), "n_cache"),
    (dict(n_cache=4, prob=1.0), "prob must be a number in [0, 1)"),
    (dict(n_cache=4, prob=-0.1), "prob"),
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
    assert epoch_length(zmq_offload(workers=2)(listed[1])) is None
    # an epoch is an epoch, while a run of anything built on epochs counts all of its items
    assert epoch_length(pescador.take(100, epochs()(listed))) == 100
    assert epoch_length(pescador.mux(2, None, with_replacement=False)([epochs(2)(listed)] * 2)) == 32
    assert epoch_length(pescador.tuples("x")(epochs(3)(listed))) == 8
