"""buffer(n): every row once, in order, in batches of exactly n rows."""

import pickle

import numpy as np
import pytest
import toolz
from hypothesis import given
from hypothesis import strategies as st

import pescador
from pescador import PescadorError, buffer, stream, take


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
