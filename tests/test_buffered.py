"""buffer(n): every row once, in order, in batches of exactly n rows."""

import pickle
import warnings

import numpy as np
import pytest
import toolz
from hypothesis import given
from hypothesis import strategies as st

import pescador
from pescador import PescadorError, buffer, stream, take
from states import DELETE, edited, places


def replay(items):
    yield from items


def reusing_generator(n, rows):
    """Yields the same array object every time, overwritten in place."""
    scratch = np.empty((rows, 2))
    for i in range(n):
        scratch[:] = i
        yield {"X": scratch}


def concat(batches, key):
    return np.concatenate([b[key] for b in batches]) if batches else None


layouts = st.sampled_from(
    [
        ((), np.float32),
        ((3,), np.float64),
        ((2, 2), np.int16),
        ((1,), np.uint8),
        ((4,), np.complex64),
    ]
)


@given(
    st.lists(st.integers(min_value=0, max_value=9), max_size=25),
    st.integers(min_value=1, max_value=12),
    st.booleans(),
    layouts,
)
def test_rows_are_preserved_in_order(row_counts, n, strict, layout):
    trail, dtype = layout
    items, start = [], 0
    for r in row_counts:
        rows = np.arange(start, start + r)
        start += r
        x = np.broadcast_to(rows.reshape((r,) + (1,) * len(trail)), (r, *trail)).astype(dtype)
        items.append({"X": x, "id": rows})
    batches = list(buffer(n, stream(items), strict=strict))
    total = sum(row_counts)
    kept = (total // n) * n if strict else total
    for i, b in enumerate(batches):
        last = i == len(batches) - 1
        assert b["X"].shape[1:] == trail and b["X"].dtype == dtype
        assert len(b["X"]) == len(b["id"])
        if strict or not last:
            assert len(b["X"]) == n
        else:
            assert 0 < len(b["X"]) <= n
    ids = concat(batches, "id")
    expected = np.arange(kept)
    np.testing.assert_array_equal(ids if ids is not None else np.arange(0), expected)
    if batches:
        xs = concat(batches, "X")
        want = np.concatenate([item["X"] for item in items])[:kept]
        np.testing.assert_array_equal(xs, want)


def test_an_item_larger_than_a_batch_is_split_in_order():
    items = [{"X": np.arange(10)}]
    assert [b["X"].tolist() for b in buffer(4, items)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [b["X"].tolist() for b in buffer(4, items, strict=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_batches_own_their_memory():
    batches = list(buffer(3, stream(reusing_generator, 6, 1)))
    assert [b["X"][:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]]
    partial = list(buffer(4, stream(reusing_generator, 5, 1), strict=False))
    assert [b["X"][:, 0].tolist() for b in partial] == [[0, 1, 2, 3], [4]]
    assert all(b["X"].flags.owndata or b["X"].base is not None and b["X"].base.flags.owndata for b in partial)


def test_dtypes_of_the_same_kind_are_cast_into_the_first_items():
    # the 1.0 docs' Keras example mixes float32 items with noisy float64 ones
    items = [{"X": np.full((1, 2), 0.5, np.float32)}, {"X": np.full((1, 2), 1 / 3)}, {"X": np.ones((2, 2), np.int16)}]
    (batch,) = list(buffer(4, items))
    assert batch["X"].dtype == np.float32
    np.testing.assert_array_equal(batch["X"][:, 0], np.array([0.5, 1 / 3, 1, 1], dtype=np.float32))


def test_curried_pipe_repr_and_pickle():
    s = toolz.pipe(stream(reusing_generator, 9, 2), buffer(3), take(2))
    assert repr(s) == "pipe(stream(reusing_generator, 9, 2), buffer(n=3, strict=True), take(n=2))"
    clone = pickle.loads(pickle.dumps(s))
    assert [b["X"].shape for b in clone] == [(3, 2), (3, 2)]
    assert buffer(4) == buffer(4) and buffer(4) != buffer(4, strict=False)


def test_empty_upstream():
    assert list(buffer(3, [])) == []


def test_array_likes_are_accepted():
    out = list(buffer(2, [{"X": [1, 2, 3]}, {"X": [4]}]))
    assert [b["X"].tolist() for b in out] == [[1, 2], [3, 4]]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", None])
def test_bad_n(bad):
    with pytest.raises(PescadorError, match="buffer: n must be"):
        buffer(bad)


def test_bad_strict():
    with pytest.raises(PescadorError, match="strict"):
        buffer(4, strict="yes")


@pytest.mark.parametrize(
    "items, words",
    [
        ([{"X": np.zeros(2)}, {"Y": np.zeros(2)}], ["item 1", "['Y']", "['X']"]),
        ([{"X": np.zeros(2)}, {"X": np.zeros(2), "Y": np.zeros(2)}], ["item 1", "keys"]),
        ([{"X": np.zeros(2), "Y": np.zeros(3)}], ["item 0", "rows", "'X': 2", "'Y': 3"]),
        ([{"X": np.zeros((2, 3))}, {"X": np.zeros((2, 4))}], ["item 1", "'X'", "(2, 4)", "(rows, 3)"]),
        ([{"X": np.zeros(2)}, {"X": np.zeros(2, np.int32)}, {"X": np.zeros(2, np.complex64)}],
         ["item 2", "'X'", "complex64", "float64"]),
        ([{"X": np.zeros(2, np.int64)}, {"X": np.zeros(2, np.float32)}], ["item 1", "'X'", "float32", "int64"]),
        ([{"X": np.zeros(2, np.int8)}, {"X": np.zeros(2, np.int64)}], ["item 1", "'X'", "int64", "int8"]),
        ([{"X": np.zeros(2)}, {"X": np.array(["a", "b"])}], ["item 1", "'X'", "<U1", "float64"]),
        ([{"X": np.float64(3)}], ["item 0", "'X'", "0-d"]),
        ([{"X": np.zeros(1)}, {"X": np.float64(1)}], ["item 1", "'X'", "0-d"]),
        ([None], ["item 0", "NoneType", "dict"]),
        ([{"X": np.zeros(2)}, 5], ["item 1", "int", "dict"]),
        ([{"X": np.zeros(2)}, [np.zeros(2)]], ["item 1", "list", "dict"]),
        ([{}], ["item 0", "empty"]),
        ([{"X": [{}, None]}], ["item 0", "'X'", "expected an array"]),
    ],
)
def test_bad_items_name_key_position_and_expectation(items, words):
    with pytest.raises(PescadorError) as info:
        list(buffer(2, items))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# -- the 1.0 facade -------------------------------------------------------------


def one_row(n):
    for i in range(n):
        yield {"X": np.full((1, 3), i)}


def test_buffered_streamer_counts_batches():
    B = pescador.BufferedStreamer(pescador.Streamer(one_row, 25), 10)
    assert [b["X"].shape for b in B()] == [(10, 3), (10, 3)]
    assert len(list(B(max_batches=1))) == 1
    assert len(list(B(max_batches=5, cycle=True))) == 5
    nonstrict = pescador.BufferedStreamer(pescador.Streamer(one_row, 25), 10, strict_batch_size=False)
    assert [len(b["X"]) for b in nonstrict()] == [10, 10, 5]
    x, = next(nonstrict.tuples("X"))
    assert x.shape == (10, 3)


def test_buffered_streamer_accepts_function_stream_and_streamer():
    from_recipe = pescador.BufferedStreamer(stream(one_row, 4), 2)
    from_streamer = pescador.BufferedStreamer(pescador.Streamer(one_row, 4), 2)
    from_list = pescador.BufferedStreamer([{"X": np.zeros((2, 1))}], 2)
    assert len(list(from_recipe())) == len(list(from_streamer())) == 2
    assert len(list(from_list())) == 1
    assert from_recipe.buffer_size == 2 and from_recipe.strict_batch_size is True


def test_buffered_streamer_refuses_a_function_missing_its_arguments():
    with pytest.raises(PescadorError, match="one_row"):
        pescador.BufferedStreamer(one_row, 10)


# -- values that do not fit the batch's dtype, and batches that cannot be allocated ------------


def first_then(first_dtype, *values):
    """A first item of ``first_dtype`` (the batch's dtype), then one item of the given values."""
    return [{"X": np.zeros(1, first_dtype)}, {"X": np.asarray(values)}]


@pytest.mark.parametrize(
    "items, words",
    [
        (first_then(np.float32, 1.0, 1e300), ["item 1", "'X'", "1e+300", "row 1", "float32", "3.40282e+38"]),
        (first_then(np.float32, -1e39), ["item 1", "'X'", "-1e+39", "row 0", "float32"]),
        (first_then(np.float16, np.float32(7e4)), ["item 1", "'X'", "70000", "float16", "65504"]),
        (first_then(np.float16, 1.0, -1e5), ["item 1", "'X'", "-100000", "float16"]),
        (first_then(np.complex64, 1e300 + 1j), ["item 1", "'X'", "magnitude", "1e+300", "complex64"]),
        (first_then(np.complex64, 1e300), ["item 1", "'X'", "1e+300", "complex64"]),
        (first_then(np.float32, np.nan, 1e300, np.inf), ["item 1", "'X'", "1e+300", "row 1"]),
    ],
)
def test_values_that_overflow_the_batch_dtype_are_refused(items, words, recwarn):
    # they became inf with only numpy's RuntimeWarning
    with pytest.raises(PescadorError) as info:
        list(buffer(3, items, strict=False))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("mode", ["default", "np.seterr raise", "warnings as errors"])
def test_overflow_is_refused_in_an_item_split_across_batches(mode):
    items = [{"X": np.zeros(3, np.float32)}, {"X": np.array([1.0, 2.0, 3.0, 4e38, 5.0])}]
    with warnings.catch_warnings(), np.errstate(over="raise" if mode == "np.seterr raise" else "warn"):
        warnings.simplefilter("error" if mode == "warnings as errors" else "ignore")
        with pytest.raises(PescadorError, match=r"item 1, key 'X'.*row 3"):
            list(buffer(4, items))


@pytest.mark.parametrize("first", [np.float32, np.float16, np.complex64])
def test_nan_inf_and_precision_loss_are_not_overflow(first):
    values = [np.nan, np.inf, -np.inf, 1e-300, 1 / 3, -0.0, 60000.0]
    (batch,) = list(buffer(8, [{"X": np.zeros(1, first)}, {"X": np.array(values)}]))
    np.testing.assert_array_equal(batch["X"][1:], np.array(values).astype(first))  # exactly numpy's cast
    assert batch["X"].dtype == first


def test_large_values_that_fit_are_not_refused():
    big = np.float64(np.finfo(np.float32).max)
    values = np.full(5000, big / 2)  # squares overflow float32: a false alarm, looked at closer, passes
    (batch,) = list(buffer(5001, [{"X": np.zeros(1, np.float32)}, {"X": values}]))
    np.testing.assert_array_equal(batch["X"][1:], values.astype(np.float32))


@pytest.mark.parametrize(
    "first, later",
    [(np.int8, np.int64), (np.int32, np.float32), (np.float32, np.int64), (np.uint8, np.int8), (np.float64, np.complex64)],
)
def test_casts_that_could_change_values_stay_refused(first, later):
    with pytest.raises(PescadorError, match="cannot be stored in"):
        list(buffer(2, [{"X": np.zeros(1, first)}, {"X": np.zeros(1, later)}]))


def test_empty_and_zero_row_items_of_a_narrower_dtype_pass():
    items = [{"X": np.zeros((1, 2), np.float32)}, {"X": np.zeros((0, 2))}, {"X": np.ones((1, 2))}]
    (batch,) = list(buffer(2, items))
    assert batch["X"].dtype == np.float32 and batch["X"].tolist() == [[0, 0], [1, 1]]


@pytest.mark.parametrize("n", [2**62, 10**18, 2**45])
def test_a_batch_that_cannot_be_allocated_names_n_and_the_bytes(n):
    # it was accepted, then failed with a raw numpy error (ValueError or MemoryError)
    items = [{"X": np.zeros((1, 3), np.float32), "y": np.zeros(1)}]
    with pytest.raises(PescadorError) as info:
        list(buffer(n, items))
    assert f"n={n}" in str(info.value) and f"needs {n * 20} bytes" in str(info.value)


@pytest.mark.parametrize("bad", [2**63, 1e300, True, np.True_, float("inf"), float("nan")])
def test_an_absurd_n_is_refused_when_the_step_is_built(bad):
    with pytest.raises(PescadorError, match="buffer: n must be"):
        buffer(bad)


def test_numpy_ints_and_integral_floats_are_accepted_as_n():
    assert buffer(np.int64(4)) == buffer(4) == buffer(4.0)
    assert repr(buffer(np.uint8(3))) == "buffer(n=3, strict=True)"


def test_a_masked_array_is_refused_and_other_subclasses_pass_as_their_data(tmp_path):
    with pytest.raises(PescadorError, match=r"item 1, key 'X': got a masked array"):
        list(buffer(2, [{"X": np.zeros(1)}, {"X": np.ma.array([1.0], mask=[True])}]))
    with pytest.raises(PescadorError, match=r"item 0, key 'X': got a masked array"):
        list(buffer(2, [{"X": np.ma.array([1.0, 2.0])}]))
    mm = np.memmap(tmp_path / "m.dat", dtype=np.float32, mode="w+", shape=(3,))
    mm[:] = [1, 2, 3]
    (batch,) = list(buffer(4, [{"X": mm[:2]}, {"X": mm[2:]}, {"X": np.array([4.0], np.float32)}]))
    assert type(batch["X"]) is np.ndarray and batch["X"].tolist() == [1, 2, 3, 4]


# -- one stage for plain and resumable runs; resume anywhere, exactly -----------------------------

import gc
import json
import weakref

from hypothesis import HealthCheck, settings

from pescador import resumable


def rows_of(counts, start=0, dtypes=(np.float32, np.float32)):
    """Items of the given row counts; row i holds i (and 10 * i in 'y'); the dtypes may differ per item."""
    items = []
    for j, r in enumerate(counts):
        ids = np.arange(start, start + r)
        start += r
        items.append({"x": np.repeat(ids[:, None], 3, axis=1).astype(dtypes[j % len(dtypes)]), "y": 10 * ids})
    return items


def made(counts, dtypes=(np.float32,)):
    yield from rows_of(counts, dtypes=dtypes)


def as_lists(batches):
    return [{k: (v.dtype.str, v.tolist()) for k, v in b.items()} for b in batches]


row_counts = st.lists(st.integers(0, 9), max_size=14)
mixed = st.sampled_from([(np.float32,), (np.float32, np.float64), (np.float64, np.int16, np.float32)])


@settings(max_examples=60, deadline=None)
@given(row_counts, st.integers(1, 7), st.booleans(), mixed, st.booleans())
def test_a_resumable_run_is_the_plain_run(counts, n, strict, dtypes, from_list):
    source = stream(rows_of(counts, dtypes=dtypes)) if from_list else stream(made, counts, dtypes)
    recipe = buffer(n, strict=strict)(source)
    assert as_lists(resumable(recipe)) == as_lists(recipe) == as_lists(list(recipe))


def run_to_end(run):
    out = []
    for batch in run:
        out.append(batch)
    return as_lists(out)


@settings(max_examples=80, deadline=None)
@given(row_counts, st.integers(1, 7), st.booleans(), mixed, st.booleans(), st.floats(0, 1))
def test_a_run_resumed_anywhere_continues_exactly(counts, n, strict, dtypes, from_list, where):
    # mid-split items (rows of an item wider than the room left), strict=False tails, the end itself
    source = stream(rows_of(counts, dtypes=dtypes)) if from_list else stream(made, counts, dtypes)
    recipe = buffer(n, strict=strict)(source)
    full = as_lists(recipe)
    stop = round(where * len(full))
    run = resumable(recipe)
    head = [next(run) for _ in range(stop)]
    state = json.loads(json.dumps(run.state_dict()))
    assert as_lists(head) + run_to_end(resumable(recipe, state)) == full
    assert as_lists(head) + run_to_end(resumable(recipe, state)) == full  # a state serves twice
    assert as_lists(head) + run_to_end(run) == full  # and taking it changed nothing


def test_the_unused_rows_travel_in_the_state_so_the_upstream_is_never_drawn_again():
    # a source whose items differ from run to run (as several zmq workers' order does): the rows of
    # the item being split must come from the state, not from drawing that item again
    def tagged(run_tag, n):
        for i in range(n):
            yield {"x": np.array([[run_tag, i]] * 3)}

    def seek(position, run_tag, n):
        return ({"x": np.array([[run_tag + 1, i]] * 3)} for i in range(position, n))  # another run's data

    tagged.pescador_seek = seek
    recipe = buffer(4)(stream(tagged, 0, 4))
    run = resumable(recipe)
    assert next(run)["x"].tolist() == [[0, 0]] * 3 + [[0, 1]]
    state = run.state_dict()
    assert state["stages"]["up"] == {"pos": 2} and state["stages"]["rest"]["x"]["shape"] == [2, 2]
    resumed = [b["x"].tolist() for b in resumable(recipe, json.loads(json.dumps(state)))]
    assert resumed == [[[0, 1]] * 2 + [[1, 2]] * 2, [[1, 2]] + [[1, 3]] * 3]


def reusing_rows(counts):
    """One scratch array per row count, overwritten in place for every item."""
    scratch = {}
    start = 0
    for r in counts:
        x = scratch.setdefault(r, np.empty((r, 2)))
        x[:] = np.arange(start, start + r)[:, None]
        start += r
        yield {"x": x}


@settings(max_examples=60, deadline=None)
@given(row_counts, st.integers(1, 7), st.booleans(), st.floats(0, 1))
def test_a_source_that_overwrites_its_arrays_still_gives_every_row_once(counts, n, strict, where):
    recipe = buffer(n, strict=strict)(stream(reusing_rows, counts))
    total = sum(counts)
    kept = total if not strict else total - total % n
    got = [b["x"][:, 0].tolist() for b in recipe]
    assert [v for b in got for v in b] == list(range(kept))
    run = resumable(recipe)  # and through a checkpoint taken while an overwritten item is split
    head = [next(run)["x"][:, 0].tolist() for _ in range(round(where * len(got)))]
    tail = [b["x"][:, 0].tolist() for b in resumable(recipe, json.loads(json.dumps(run.state_dict())))]
    assert head + tail == got


# -- every field of a state is checked ------------------------------------------------------------


def mid_split_state(dtypes=(np.float32, np.float64)):
    recipe = buffer(4)(stream(made, [3, 3, 5, 2, 7], dtypes))
    run = resumable(recipe)
    head = [next(run) for _ in range(2)]
    state = json.loads(json.dumps(run.state_dict()))
    assert state["stages"]["rest"] is not None
    return recipe, state, head


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def tweaks(value):
    """Near misses of a value: the likeliest to slip through a check."""
    out = [None, True, -1, 0, 1, 2**63, "", [], {}]
    if isinstance(value, bool):
        out.append(not value)
    elif isinstance(value, int):
        out += [value + 1, value - 1, value * 2, -value, float(value)]
    elif isinstance(value, str):
        out += [value[:-1], value + "A", value[::-1], value.upper(), value.replace("4", "8"), value.replace("<", ">")]
        if len(value) > 4:
            out.append(value[:4] + ("B" if value[4] != "B" else "C") + value[5:])
    elif isinstance(value, list):
        out += [value[:-1], value + value[-1:], list(reversed(value))]
    elif isinstance(value, dict):
        out += [dict(list(value.items())[:-1]), dict(reversed(list(value.items())))]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_changed_field_is_refused_by_name_or_changes_nothing(data):
    recipe, state, head = mid_split_state()
    expected = as_lists(resumable(recipe, state))
    own = [(p, v) for p, v in places(state["stages"]) if p and p[0] != "up"]  # (the buffer's own fields)
    path, value = data.draw(st.sampled_from(own))
    new = data.draw(st.sampled_from(tweaks(value) + [DELETE]) | json_values)
    changed = edited(state, path, new)
    try:
        got = as_lists(resumable(recipe, json.loads(json.dumps(changed))))
    except PescadorError as exc:
        assert "resumable" in str(exc) or "buffer" in str(exc)
        return
    assert got == expected, (path, value, new)


@pytest.mark.parametrize(
    "path, new, words",
    [
        (("pos",), -1, ["'pos'", ">= 0"]),
        (("pos",), True, ["'pos'"]),
        (("done",), 1, ["'done'", "true or false"]),
        (("done",), True, ["'rest'", "ended"]),
        (("layout",), None, ["'layout'", "pos"]),
        (("layout", "x", "dtype"), "<f8", ["'digest'"]),
        (("layout", "x", "dtype"), "not a dtype", ["layout['x'].dtype"]),
        (("layout", "x", "dtype"), "O", ["layout['x'].dtype", "object"]),
        (("layout", "x", "trail"), [3, -1], ["layout['x'].trail"]),
        (("rest", "x", "shape"), [2, 4], ["rest['x'].shape", "(rows, 3)"]),
        (("rest", "x", "shape"), [0, 3], ["rest['x'].shape", "rows >= 1"]),
        (("rest", "x", "shape"), [10**12, 3], ["rest['x'].data", "bytes"]),
        (("rest", "x", "dtype"), "<c16", ["rest['x'].dtype", "cannot store"]),
        (("rest", "x", "data"), "!!!!" * 10, ["rest['x'].data"]),
        (("rest", "x", "data"), 5, ["rest['x'].data"]),
        (("rest", "y"), DELETE, ["'rest'", "keys"]),
        (("rest", "y", "shape"), [1], ["rest['y'].shape", "rows = "]),
        (("digest",), "0" * 16, ["'digest'"]),
        (("extra",), 1, ["unexpected", "extra"]),
    ],
)
def test_bad_fields_are_named(path, new, words):
    recipe, state, _ = mid_split_state()
    changed = edited(state, path, new)
    with pytest.raises(PescadorError) as info:
        list(resumable(recipe, changed))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# -- a batch given out is never written again while anything holds it -------------------------------


def address(array):
    return array.__array_interface__["data"][0]


@pytest.mark.parametrize("trail", [(4,), (), (2, 3)])  # (a batch's rows: arrays, or numbers for 1-d keys)
def test_a_batch_anyone_still_holds_is_never_written_again(trail):
    torch = pytest.importorskip("torch")
    items = [{"x": np.full((1, *trail), i, np.float32)} for i in range(400)]
    size = int(np.prod(trail))
    kept = []
    seen = set()

    def check():
        for holder, expected in kept:
            if isinstance(holder, weakref.ref):
                holder = holder()  # (alive only while something else holds the array)
                if holder is None:
                    continue
            held = holder["x"] if isinstance(holder, dict) else np.asarray(holder)
            assert held.reshape(-1)[-size:].tolist() == expected

    for i, batch in enumerate(buffer(4, items)):
        x = batch["x"]
        assert x.reshape(4, -1)[:, 0].tolist() == list(range(4 * i, 4 * i + 4))
        holder = [None, batch, x, x[1:], memoryview(x), torch.from_numpy(x), weakref.ref(x), x.reshape(-1)][i % 8]
        if holder is not None:
            kept.append((holder, [4.0 * i + 3] * size))
        seen.add(address(x))
        del batch, x, holder
        check()
    gc.collect()
    check()
    assert len(seen) < 100  # (the batches nobody held were filled again: the checks above mean something)


# -- one-row items (the fast path writes target[i]) and sources that keep their arrays -------------


def views_of_one_array(counts, trail=(2,)):
    """Yields views of one array it keeps, and overwrites that array as soon as it runs again."""
    big = np.empty((max(counts, default=1), *trail))
    start = 0
    for r in counts:
        big[:] = -1
        big[:r] = np.arange(start, start + r).reshape((r,) + (1,) * len(trail))
        start += r
        yield {"x": big[:r], "backwards": big[:r][::-1]}  # (a second key: a view with negative strides)


@pytest.mark.parametrize("trail", [(2,), (), (2, 3)])
@pytest.mark.parametrize("counts", [[1] * 10, [1, 1, 3, 1, 0, 1, 2, 1, 1], [2, 1, 1, 5, 1]])
def test_views_of_an_array_the_source_keeps_and_overwrites_are_copied_as_they_come(counts, trail):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (1-d keys: no "array to scalar" deprecation from numpy)
        batches = list(buffer(3, stream(views_of_one_array, counts, trail)))
    total = sum(counts)
    flat = np.concatenate([b["x"] for b in batches]).reshape(total - total % 3, -1)
    assert flat[:, 0].tolist() == list(range(total - total % 3)) and (flat == flat[:, :1]).all()
    backwards, start = [], 0
    for r in counts:
        backwards += list(range(start + r - 1, start - 1, -1))
        start += r
    assert np.concatenate([b["backwards"] for b in batches]).reshape(len(flat), -1)[:, 0].tolist() == backwards[: len(flat)]


def test_a_one_row_item_of_a_row_shape_numpy_would_broadcast_is_refused():
    # target[i] = array broadcasts a (1, 1) row into a row of 3: the shape check must come first
    items = [{"x": np.zeros((1, 3))}, {"x": np.zeros((1, 3))}, {"x": np.ones((1, 1))}]
    with pytest.raises(PescadorError, match=r"item 2, key 'x': shape \(1, 1\) does not match \(rows, 3\)"):
        list(buffer(4, items))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # (numpy's, before the error)
@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize(
    "bad, words",
    [
        ({"x": np.zeros((1, 4))}, ["shape (1, 4)"]),
        ({"x": np.zeros((1, 3), np.int64)}, ["int64", "cannot be stored"]),
        ({"x": np.full((1, 3), 1e300)}, ["overflow float32"]),
        ({"y": np.zeros((1, 3))}, ["keys"]),
        (None, ["NoneType"]),
    ],
)
def test_the_batches_before_a_bad_item_come_first_and_the_error_names_it(rows, bad, words):
    # 7 good items, then the bad one at position 7: every batch completed before it is yielded
    good = [{"x": np.full((rows, 3), i, np.float32)} for i in range(7)]
    run = iter(buffer(2, good + [bad] + good))
    got = []
    with pytest.raises(PescadorError) as info:
        for batch in run:
            got.append(batch["x"][:, 0].tolist())
    assert len(got) == 7 * rows // 2
    assert "item 7" in str(info.value)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_one_row_and_wider_items_resume_exactly_at_every_batch():
    recipe = buffer(3)(stream(views_of_one_array, [1, 1, 3, 1, 1, 2, 1, 1, 1, 4, 1]))
    full = as_lists(recipe)
    for stop in range(len(full) + 1):
        run = resumable(recipe)
        head = as_lists(next(run) for _ in range(stop))
        state = json.loads(json.dumps(run.state_dict()))
        assert head + run_to_end(resumable(recipe, state)) == full


@pytest.mark.parametrize(
    "trail, bad",
    [
        ((3,), (1, 1)),  # (numpy broadcasts it into a row of 3)
        ((3,), (1, 1, 3)),  # (numpy drops the leading 1 and copies it into a row of 3)
        ((3,), (1, 3, 1)),
        ((3,), (3,)),  # (three rows of a 1-d key)
        ((2, 3), (1, 3, 2)),  # (as many elements as a row, another shape)
        ((2, 3), (1, 1, 6)),
        ((2, 3), (1, 1, 3)),
        ((), (1, 1)),
        ((4,), (1, 2, 2)),
    ],
)
@pytest.mark.parametrize("keys", [1, 2])
def test_a_one_row_item_of_another_row_shape_is_refused_whatever_numpy_would_copy(trail, bad, keys):
    # one-row items of the first item's layout fill the batch row by row; the item at position 5 has one row
    # of another shape, which must be named, not copied (nor broadcast) into the batch
    def item(shape):
        return {"x": np.zeros(shape), **({"y": np.zeros((1, 2))} if keys == 2 else {})}

    items = [item((1, *trail)) for _ in range(5)] + [item(bad)] + [item((1, *trail))]
    with pytest.raises(PescadorError, match=rf"item 5, key 'x': shape \({', '.join(map(str, bad))},?\) does not match"):
        list(buffer(4, items))


@pytest.mark.parametrize("keys", [1, 2])
def test_one_row_items_of_another_key_are_refused_by_name(keys):
    good = {"x": np.zeros((1, 3)), **({"y": np.zeros((1, 2))} if keys == 2 else {})}
    other = {"z": np.zeros((1, 3)), **({"y": np.zeros((1, 2))} if keys == 2 else {})}
    with pytest.raises(PescadorError, match=r"item 3 has keys .*'z'.*; expected the keys of the first item"):
        list(buffer(2, [good] * 3 + [other]))


def test_one_row_items_then_wider_items_then_one_row_items_again_keep_every_row_in_order():
    # the one-row path gives way to _take at the first wider item, and takes over again after
    counts = [1] * 5 + [3, 2] + [1] * 6 + [0, 1, 4] + [1] * 3
    items, start = [], 0
    for r in counts:
        items.append({"x": np.arange(start, start + r, dtype=np.int64).reshape(r, 1) * [1, 1], "i": np.arange(start, start + r)})
        start += r
    batches = list(buffer(4, items, strict=False))
    assert np.concatenate([b["x"] for b in batches])[:, 0].tolist() == list(range(start))
    assert np.concatenate([b["i"] for b in batches]).tolist() == list(range(start))
