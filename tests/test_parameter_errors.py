"""Bad parameters raise errors that are both a PescadorError and the built-in a Python user
would catch: a wrong type a ParameterTypeError (a TypeError), a wrong value a ParameterError
(a ValueError).  Data errors at iteration stay DataError (neither)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import pescador
from pescador import ParameterError, ParameterTypeError, PescadorError
from pescador.mux import chain_mux, round_robin_mux, shuffled_mux, stochastic_mux


def gen(n):
    yield from ({"x": np.zeros((1, 2))} for _ in range(n))


S = pescador.stream(gen, 3)


def _generator_object():
    return pescador.stream(gen(3))


# (name, call, expected built-in kind)
BAD_CALLS = [
    # take / cycle / iterate: counts
    ("take str", lambda: pescador.take("3"), TypeError),
    ("take bool", lambda: pescador.take(True), TypeError),
    ("take None", lambda: pescador.take(None), TypeError),
    ("take -1", lambda: pescador.take(-1), ValueError),
    ("take 1.5", lambda: pescador.take(1.5), ValueError),
    ("take nan", lambda: pescador.take(float("nan")), ValueError),
    ("cycle -2", lambda: pescador.cycle(-2), ValueError),
    ("cycle list", lambda: pescador.cycle([1]), TypeError),
    ("iterate -1", lambda: S.iterate(-1), ValueError),
    # stream()
    ("stream int", lambda: pescador.stream(42), TypeError),
    ("stream dict", lambda: pescador.stream({"x": 1}), TypeError),
    ("stream generator object", _generator_object, TypeError),
    ("stream bad args", lambda: pescador.stream(gen, 1, 2), TypeError),
    ("stream bad kwarg", lambda: pescador.stream(gen, m=1), TypeError),
    ("stream args for a Stream", lambda: pescador.stream(S, 1), TypeError),
    ("stream args for a list", lambda: pescador.stream([1], 1), TypeError),
    # tuples / keras_tuples
    ("tuples no keys", lambda: pescador.tuples(), TypeError),
    ("tuples int key", lambda: pescador.tuples("X", 3), TypeError),
    ("keras_tuples no keys", lambda: pescador.keras_tuples(), TypeError),
    ("keras_tuples empty list", lambda: pescador.keras_tuples(inputs=[], outputs="y"), ValueError),
    ("keras_tuples three", lambda: pescador.keras_tuples("a", "b", "c"), TypeError),
    # buffer
    ("buffer 0", lambda: pescador.buffer(0), ValueError),
    ("buffer huge", lambda: pescador.buffer(2**70), ValueError),
    ("buffer str", lambda: pescador.buffer("16"), TypeError),
    ("buffer strict str", lambda: pescador.buffer(16, strict="yes"), TypeError),
    # mux and its kinds
    ("mux k=0", lambda: pescador.mux(k=0), ValueError),
    ("mux k=2.5", lambda: pescador.mux(k=2.5), TypeError),
    ("mux k=True", lambda: pescador.mux(k=True), TypeError),
    ("mux lam=0", lambda: pescador.mux(k=1, lam=0), ValueError),
    ("mux lam=inf", lambda: pescador.mux(k=1, lam=float("inf")), ValueError),
    ("mux lam str", lambda: pescador.mux(k=1, lam="64"), TypeError),
    ("mux weights negative", lambda: pescador.mux(k=1, weights=[1, -1]), ValueError),
    ("mux weights zero", lambda: pescador.mux(k=1, weights=[0, 0]), ValueError),
    ("mux weights nan", lambda: pescador.mux(k=1, weights=[1, float("nan")]), ValueError),
    ("mux weights 2-d", lambda: pescador.mux(k=1, weights=[[1, 2]]), ValueError),
    ("mux weights scalar", lambda: pescador.mux(k=1, weights=3), TypeError),
    ("mux weights strings", lambda: pescador.mux(k=1, weights=["a", "b"]), TypeError),
    ("mux weights count", lambda: pescador.mux(k=1, weights=[1, 2])([S]), ValueError),
    ("mux dist", lambda: pescador.mux(k=1, dist="gauss"), ValueError),
    ("mux dist int", lambda: pescador.mux(k=1, dist=3), TypeError),
    ("mux with_replacement", lambda: pescador.mux(k=1, with_replacement="no"), TypeError),
    ("mux random_state -1", lambda: pescador.mux(k=1, random_state=-1), ValueError),
    ("mux random_state str", lambda: pescador.mux(k=1, random_state="0"), TypeError),
    ("mux stats", lambda: pescador.mux(k=1, stats={}), TypeError),
    ("mux empty pool", lambda: pescador.mux(k=1)([]), ValueError),
    ("mux pool not a list", lambda: pescador.mux(k=1)(3), TypeError),
    ("mux pool member", lambda: pescador.mux(k=1)([S, 42]), TypeError),
    ("mux lazy pool", lambda: pescador.mux(k=1)(S), TypeError),
    ("stochastic_mux mode", lambda: stochastic_mux(1, mode="nope"), ValueError),
    ("stochastic_mux n_active", lambda: stochastic_mux(0), ValueError),
    ("shuffled_mux weights", lambda: shuffled_mux(weights=[-1]), ValueError),
    ("round_robin_mux mode", lambda: round_robin_mux("nope"), ValueError),
    ("chain_mux mode", lambda: chain_mux("nope"), ValueError),
    ("chain_mux random_state", lambda: chain_mux(random_state=1.5), TypeError),
    # zmq_offload (its integer checks)
    ("zmq_offload workers=0", lambda: pescador.zmq_offload(workers=0), ValueError),
    ("zmq_offload workers=2000", lambda: pescador.zmq_offload(workers=2000), ValueError),
    ("zmq_offload workers str", lambda: pescador.zmq_offload(workers="2"), TypeError),
    ("zmq_offload hwm=0", lambda: pescador.zmq_offload(hwm=0), ValueError),
    ("zmq_offload random_state -1", lambda: pescador.zmq_offload(random_state=-1), ValueError),
    # extras
    ("epochs -1", lambda: pescador.epochs(-1), ValueError),
    ("cache n_cache 0", lambda: pescador.cache(0), ValueError),
    ("cache prob 2", lambda: pescador.cache(4, prob=2.0), ValueError),
    ("cache prob str", lambda: pescador.cache(4, prob="0.5"), TypeError),
    ("streamable", lambda: pescador.streamable(42), TypeError),
    ("resumable state", lambda: pescador.resumable(S, state=42), TypeError),
    # the 3.x names and the facade
    ("buffer_stream axis", lambda: pescador.buffer_stream(4, axis="0"), TypeError),
    ("Streamer two limits", lambda: list(pescador.Streamer(gen, 3)(max_items=3, max_batches=2)), TypeError),
]


@pytest.mark.parametrize("name, call, kind", BAD_CALLS, ids=[row[0] for row in BAD_CALLS])
def test_bad_parameter_is_both_kinds(name, call, kind):
    with pytest.raises(PescadorError) as info:
        call()
    error = info.value
    assert isinstance(error, kind), (name, type(error).__mro__)
    other = ValueError if kind is TypeError else TypeError
    assert not isinstance(error, other), (name, type(error).__mro__)
    expected = ParameterTypeError if kind is TypeError else ParameterError
    assert isinstance(error, expected)
    assert str(error)  # (the message still says what was wrong)


def test_the_classes():
    assert issubclass(ParameterError, PescadorError) and issubclass(ParameterError, ValueError)
    assert issubclass(ParameterTypeError, PescadorError) and issubclass(ParameterTypeError, TypeError)
    assert pescador.ParameterError is pescador.exceptions.ParameterError
    assert {"ParameterError", "ParameterTypeError"} <= set(pescador.__all__) & set(dir(pescador))
    error = pickle.loads(pickle.dumps(ParameterError("take: n must be ...")))
    assert type(error) is ParameterError and str(error) == "take: n must be ..."


def test_built_in_handlers_catch_them():
    with pytest.raises(ValueError, match="take: n"):
        pescador.take(-1)
    with pytest.raises(TypeError, match="stream"):
        pescador.stream(42)
    try:
        pescador.buffer(0)
    except PescadorError:  # what caught it before still does
        pass


def test_data_errors_stay_data_errors():
    """An item that is not what a stage needs is a DataError at iteration, not a parameter error."""
    with pytest.raises(pescador.DataError) as info:
        list(pescador.tuples([{"x": 1}], "y"))
    assert not isinstance(info.value, (ValueError, TypeError))
    with pytest.raises(PescadorError) as info:
        list(pescador.cycle(3, []))  # a run failure (it would spin)
    assert not isinstance(info.value, (ValueError, TypeError))


# -- the usual mistakes of a newcomer, and of code from older releases -------------------------


def message(call):
    with pytest.raises(PescadorError) as info:
        call()
    return str(info.value)


def test_mux_without_k_says_what_k_is():
    for call in (lambda: pescador.mux(), lambda: pescador.mux(lam=64), lambda: pescador.mux(weights=[1, 2])):
        text = message(call)
        assert text.startswith("mux: ") and "_CallableModule" not in text, text
        assert "missing the argument 'k' (the number of streams active at once)" in text, text
        assert "pescador.mux(k=3, lam=64)" in text, text
    with pytest.raises(TypeError):  # (still a TypeError, as before)
        pescador.mux()
    assert "mux: too many positional arguments" in message(lambda: pescador.mux(1, 2, 3))


@pytest.mark.parametrize("call, says", [
    # the 2.x Mux spelled lam, pool_weights, ... as 3.x does
    (lambda pool: pescador.Mux(pool, 2, rate=4), ["Mux: no parameter 'rate'", "lam=", "StochasticMux(streamers"]),
    (lambda pool: pescador.Mux(pool, n_active=2), ["Mux: no parameter 'n_active'", "k=", "StochasticMux"]),
    (lambda pool: pescador.Mux(pool, 2, weights=[1, 1]), ["'weights'", "pool_weights="]),
    (lambda pool: pescador.Mux(pool, 2, prune_empty_streams=False), ["prune_empty_seeds="]),
    (lambda pool: pescador.Mux(streamers=pool, k=2), ["'streamers'", "seed_pool="]),
    # the 1.0 names given to the 3.x classes
    (lambda pool: pescador.StochasticMux(pool, 2, lam=4), ["StochasticMux: no parameter 'lam'", "rate=", "Mux(seed_pool"]),
    (lambda pool: pescador.StochasticMux(pool, k=2, rate=4), ["'k'", "n_active="]),
    (lambda pool: pescador.ShuffledMux(pool, pool_weights=[1, 1]), ["ShuffledMux: no parameter 'pool_weights'", "weights="]),
    (lambda pool: pescador.StochasticMux(pool, 2), ["StochasticMux: missing the argument 'rate'",
                                                     "StochasticMux(streamers, n_active, rate"]),
    # the pipe style's mux, given the 3.x names
    (lambda pool: pescador.mux(2, rate=4), ["mux: no parameter 'rate'", "lam="]),
    (lambda pool: pescador.mux(n_active=2), ["mux: no parameter 'n_active'", "k="]),
], ids=["Mux rate", "Mux n_active", "Mux weights", "Mux prune_empty_streams", "Mux streamers", "StochasticMux lam",
        "StochasticMux k", "ShuffledMux pool_weights", "StochasticMux no rate", "mux rate", "mux n_active"])
def test_old_spellings_name_the_ones_to_use(call, says):
    pool = [pescador.Streamer("ab"), pescador.Streamer("cd")]
    with pytest.raises(ParameterTypeError) as info:
        call(pool)
    for words in says:
        assert words in str(info.value), str(info.value)


def streams_of_streams():
    yield pescador.stream(gen, 2)


@pytest.mark.parametrize("stage", [lambda: pescador.buffer(4), lambda: pescador.zmq_offload(workers=1)],
                         ids=["buffer", "zmq_offload"])
def test_a_list_of_streams_where_one_stream_belongs_says_mux_them_first(stage):
    from toolz import pipe

    name = repr(stage()).split("(")[0]
    pool = [pescador.stream(gen, 2), pescador.Streamer(gen, 2)]
    with pytest.raises(ParameterTypeError) as info:
        pipe(pool, stage())  # when the recipe is built: nothing runs, no worker starts
    text = str(info.value)
    assert text.startswith(f"{name}: got a list of 2 streams") and "pescador.mux(" in text, text
    with pytest.raises(PescadorError) as info:  # streams produced at run time: the item says so
        list(pipe(pescador.stream(streams_of_streams), pescador.buffer(4)))
    assert "buffer: item 0" in str(info.value) and "pescador.mux(" in str(info.value)
