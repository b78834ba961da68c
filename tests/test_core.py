"""Behaviour of stream recipes and the pipeline-finishing helpers."""

import itertools
import pickle

import numpy as np
import pytest
import toolz
from hypothesis import given
from hypothesis import strategies as st

import pescador
from pescador import PescadorError, cycle, keras_tuples, stream, take, tuples
from pescador.core import Stream, Transform


def count_up(n, key="i"):
    for i in range(n):
        yield {key: i}


def numbers_forever():
    for i in itertools.count():
        yield {"i": i}


def random_rows(seed, n):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {"X": rng.standard_normal((1, 3))}


def empty():
    return iter(())


def returns_number():
    return 5


class Range:
    """A callable class instance: any callable returning an iterable is a source."""

    def __init__(self, n):
        self.n = n

    def __call__(self):
        return ({"i": i} for i in range(self.n))

    def __eq__(self, other):
        return isinstance(other, Range) and other.n == self.n

    def __hash__(self):
        return hash(self.n)


def values(items, key="i"):
    return [item[key] for item in items]


# -- stream() accepts -------------------------------------------------------


def test_generator_function_with_args_and_kwargs():
    s = stream(count_up, 3, key="j")
    assert values(s, "j") == [0, 1, 2]


def test_every_run_is_fresh_and_independent():
    s = stream(count_up, 4)
    a, b = iter(s), iter(s)
    assert next(a) == {"i": 0}
    assert next(a) == {"i": 1}
    assert next(b) == {"i": 0}  # b did not see a's progress
    assert values(s) == [0, 1, 2, 3]


def test_callable_object_source():
    assert values(stream(Range(3))) == [0, 1, 2]


def test_stream_of_stream_is_the_same_recipe():
    s = stream(count_up, 3)
    assert stream(s) is s


def test_streamer_is_accepted():
    s = stream(pescador.Streamer(count_up, 2))
    assert isinstance(s, Stream)
    assert values(s) == [0, 1]


@pytest.mark.parametrize("collection", [[{"i": 0}, {"i": 1}], ({"i": 0}, {"i": 1})])
def test_collections_rerun(collection):
    s = stream(collection)
    assert values(s) == [0, 1]
    assert values(s) == [0, 1]


@pytest.mark.parametrize(
    "bad, name",
    [(42, "int"), ({"i": 1}, "dict"), (None, "NoneType"), (iter([1]), "list_iterator")],
)
def test_unsupported_source_names_its_type(bad, name):
    with pytest.raises(PescadorError, match=name):
        stream(bad)


class Letters:
    """A re-iterable object that is not a sequence (3.x code passes such objects)."""

    def __init__(self, text):
        self.text = text

    def __iter__(self):
        return iter(self.text)


def test_strings_sets_and_iterable_objects_are_collections_as_in_3x():
    assert list(stream("abc")) == ["a", "b", "c"] and list(stream("abc")) == ["a", "b", "c"]
    assert list(pescador.Streamer("abc")) == ["a", "b", "c"] and list(pescador.Streamer("abc")()) == ["a", "b", "c"]
    assert sorted(stream({3, 1, 2})) == [1, 2, 3]
    s = stream(Letters("xy"))
    assert list(s) == ["x", "y"] and list(s) == ["x", "y"]  # restartable
    assert repr(stream("abc")) == "stream('abc')"
    assert list(take(2, cycle(None, "ab"))) == ["a", "b"]
    with pytest.raises(PescadorError, match="one item.*wrap it in a list"):
        stream({"X": 1})


def test_generator_object_is_refused_with_a_hint():
    with pytest.raises(PescadorError, match="generator.*only\\s+once|only once"):
        stream(count_up(3))


def test_arguments_that_do_not_fit_are_refused_at_construction():
    with pytest.raises(PescadorError, match="count_up"):
        stream(count_up)  # n is missing
    with pytest.raises(PescadorError, match="count_up"):
        stream(count_up, 1, 2, 3)


def test_arguments_with_a_recipe_or_collection_are_refused():
    with pytest.raises(PescadorError):
        stream(stream(count_up, 1), 3)
    with pytest.raises(PescadorError):
        stream([{"i": 0}], 3)


def test_function_returning_a_non_iterable_fails_clearly():
    s = stream(returns_number)
    with pytest.raises(PescadorError, match="returns_number.*int"):
        iter(s)


# -- recipes are values -----------------------------------------------------


def test_recipes_are_immutable():
    s = stream(count_up, 3)
    with pytest.raises(AttributeError):
        s.args = (4,)
    with pytest.raises(AttributeError):
        take(3).params = {}


def test_recipes_compare_by_structure():
    x = np.arange(6).reshape(2, 3)
    assert stream(random_rows, 1, 5) == stream(random_rows, 1, 5)
    assert stream(random_rows, 1, 5) != stream(random_rows, 2, 5)
    assert stream(count_up, x) == stream(count_up, x.copy())  # arrays compare by value
    assert take(3, stream(count_up, 9)) == take(3, stream(count_up, 9))
    assert take(3, stream(count_up, 9)) != take(4, stream(count_up, 9))
    assert len({stream(count_up, 1), stream(count_up, 1)}) == 1


def test_repr_shows_the_pipeline_structure():
    s = toolz.pipe(stream(count_up, 10, key="k"), cycle(), take(5), tuples("k"))
    assert repr(s) == "pipe(stream(count_up, 10, key='k'), cycle(max_iter=None), take(n=5), tuples(keys=('k',)))"
    big = stream(random_rows, np.zeros((150, 4)), 3)
    assert "shape=(150, 4)" in repr(big) and "float64" in repr(big)
    assert repr(stream([{"i": 0}])) == "stream([{'i': 0}])"


def test_transforms_pickle_and_repr():
    t = take(3)
    assert pickle.loads(pickle.dumps(t)) == t
    assert repr(t) == "take(n=3)"
    assert isinstance(t, Transform)


@given(st.lists(st.integers(), max_size=30))
def test_stream_over_a_collection_yields_exactly_its_items_every_run(items):
    s = stream([{"i": i} for i in items])
    assert values(s) == items
    assert values(s) == items


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=1000))
def test_pickled_recipe_yields_the_same_items(n, seed):
    s = take(n, stream(random_rows, seed, n + 5))
    clone = pickle.loads(pickle.dumps(s))
    assert clone == s
    original = [x["X"] for x in s]
    copied = [x["X"] for x in clone]
    assert len(original) == len(copied) == n
    for a, b in zip(original, copied):
        np.testing.assert_array_equal(a, b)


# -- take ---------------------------------------------------------------------


def test_take_curried_and_direct():
    assert values(take(3, numbers_forever)) == [0, 1, 2]
    assert values(take(3)(numbers_forever)) == [0, 1, 2]
    assert values(toolz.pipe(numbers_forever, take(2))) == [0, 1]
    assert values(take(0, numbers_forever)) == []
    assert values(take(10, stream(count_up, 3))) == [0, 1, 2]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None, True])
def test_take_rejects_bad_counts(bad):
    with pytest.raises(PescadorError, match="take: n must be"):
        take(bad)


def test_take_accepts_integral_floats():
    assert values(take(2.0, numbers_forever)) == [0, 1]


# -- cycle --------------------------------------------------------------------


def test_cycle_restarts_a_finite_stream():
    assert values(cycle(7, stream(count_up, 3))) == [0, 1, 2, 0, 1, 2, 0]
    assert values(take(5, cycle()(stream(count_up, 2)))) == [0, 1, 0, 1, 0]


@pytest.mark.timeout(10)
def test_cycle_over_an_empty_stream_raises_instead_of_spinning():
    with pytest.raises(PescadorError, match="no items"):
        list(take(3, cycle()(empty)))


@pytest.mark.timeout(10)
def test_cycle_raises_when_a_later_run_is_empty():
    once = stream(_once_then_empty, [0])
    with pytest.raises(PescadorError, match="no items"):
        list(cycle(None, once))


def _once_then_empty(calls):
    calls[0] += 1
    if calls[0] == 1:
        yield {"i": 1}


def test_cycle_rejects_bad_max_iter():
    with pytest.raises(PescadorError, match="max_iter"):
        cycle(-2)


# -- tuples, keras_tuples -------------------------------------------------------


def test_tuples_orders_values_by_key():
    s = stream([{"X": 1, "Y": 2, "Z": 3}])
    assert list(tuples("Z", "X")(s)) == [(3, 1)]
    assert list(tuples("Y")(s)) == [(2,)]


def test_tuples_missing_key_names_key_and_keys_present():
    s = stream([{"X": 1, "Y": 2}])
    with pytest.raises(PescadorError) as info:
        list(tuples("X", "W")(s))
    assert "'W'" in str(info.value) and "['X', 'Y']" in str(info.value)


def test_tuples_non_dict_item():
    with pytest.raises(PescadorError, match="item 0 is a list.*expected a dict"):
        list(tuples("X")(stream([[1, 2]])))


class Record(dict):
    pass


@pytest.mark.parametrize(
    "keys, bad, error",
    [
        (("x",), {"x": 1, 2: 3}, "key 2 of type int"),  # the key asked for, and a key that is not a string
        (("x",), {2: 3}, "key 2 of type int"),  # as many keys as asked for, none of them a string
        (("x",), {"y": 1}, "has no key 'x'"),
        (("x", "y"), {"x": 1, "z": 2}, "has no key 'y'"),  # as many keys as asked for, one missing
        (("x", "x"), {"x": 1, 0: 2}, "key 0 of type int"),  # a key asked for twice counts once
        (("x",), Record({"x": 1, 0: 2}), "key 0 of type int"),  # a dict subclass is checked key by key
        (("x",), None, "item 300 is a NoneType"),
    ],
)
def test_tuples_names_a_bad_item_at_its_position_in_plain_and_resumable_runs(keys, bad, error):
    """Every item but the bad one passes (subclasses of dict, keys asked for twice, past many chunks of
    positions); the bad one raises the same error, naming it, in a plain run and in a resumable one."""
    good = [{"x": i, "y": -i} for i in range(150)] + [Record(x=i, y=-i) for i in range(150)]
    recipe = tuples(*keys)(stream(good + [bad, {"x": 0, "y": 0}]))
    runs = {"plain": iter(recipe), "resumable": pescador.resumable(recipe)}
    for name, run in runs.items():
        expected = [tuple(item[k] for k in keys) for item in good]
        assert [next(run) for _ in good] == expected, name
        with pytest.raises(PescadorError) as info:
            next(run)
        assert "tuples: item 300" in str(info.value) and error in str(info.value), (name, str(info.value))
    messages = set()
    for run in (iter(recipe), pescador.resumable(recipe)):
        with pytest.raises(PescadorError) as info:
            list(run)
        messages.add(str(info.value))
    assert len(messages) == 1, messages


def test_tuples_needs_keys():
    with pytest.raises(PescadorError, match="at least one key"):
        tuples()
    with pytest.raises(PescadorError):
        tuples(["X"])  # unhashable key


def test_keras_tuples_shapes():
    s = stream([{"a": 1, "b": 2, "y": 3, "w": 4}])
    assert list(keras_tuples("a", "y")(s)) == [(1, 3)]
    assert list(keras_tuples(["a", "b"], ["y", "w"])(s)) == [([1, 2], [3, 4])]
    # as pescador 3.x: inputs only gives (x, None), outputs only gives (None, y)
    assert list(keras_tuples("a")(s)) == [(1, None)]
    assert list(keras_tuples(outputs="y")(s)) == [(None, 3)]
    assert list(keras_tuples("a", outputs=["y"])(s)) == [(1, [3])]


def test_the_map_functions_take_both_styles_under_one_name():
    """A first argument that is data is the 3.x data-first call; parameters alone are curried."""
    items = [{"a": 1, "y": 3}, {"a": 2, "y": 4}]
    facade = pescador.Streamer(items)
    kinds = (lambda: items, lambda: stream(items), lambda: facade, lambda: iter(items), lambda: (x for x in items))
    for data in kinds:
        assert list(tuples(data(), "y", "a")) == [(3, 1), (4, 2)]
        assert list(keras_tuples(data(), "a", "y")) == [(1, 3), (2, 4)]
        assert list(keras_tuples(data(), outputs="y")) == [(None, 3), (None, 4)]
    assert list(keras_tuples(facade, inputs=["a"], outputs="y")) == [([1], 3), ([2], 4)]
    # the curried call, by position and by name
    assert list(tuples("y")(items)) == [(3,), (4,)]
    assert list(keras_tuples(inputs="a", outputs="y")(items)) == [(1, 3), (2, 4)]
    assert list(keras_tuples(["a"], "y")(items)) == [([1], 3), ([2], 4)]
    assert isinstance(tuples("y"), pescador.Transform) and not isinstance(tuples(items, "y"), pescador.Stream)
    with pytest.raises(PescadorError, match="three sets of keys"):
        keras_tuples("a", "y", "w")
    with pytest.raises(PescadorError, match="at least one key"):
        tuples(items)
    with pytest.raises(pescador.DataError, match="item 1 is a str"):
        list(tuples(["a", {"a": 1}][::-1] + ["x"], "a"))


def test_data_errors_are_pescador_errors_raised_for_bad_items():
    from pescador.exceptions import DataError

    assert DataError is pescador.DataError and issubclass(DataError, PescadorError)
    with pytest.raises(DataError, match="item 0 is a int"):
        list(tuples([3], "a"))
    with pytest.raises(DataError, match="no key 'b'"):
        list(keras_tuples([{"a": 1}], "a", "b"))


def test_keras_tuples_errors():
    with pytest.raises(PescadorError, match="inputs"):
        keras_tuples(None)
    with pytest.raises(PescadorError, match="inputs"):
        keras_tuples([])
    with pytest.raises(PescadorError) as info:
        list(keras_tuples("a", "nope")(stream([{"a": 1}])))
    assert "'nope'" in str(info.value) and "['a']" in str(info.value)


def test_pescador_error_import_paths():
    from pescador.exceptions import PescadorError as FromModule

    assert FromModule is pescador.PescadorError
    assert issubclass(PescadorError, Exception)
