"""The wire format: round trips, and malformed messages refused without building anything."""

import pickle

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pescador import PescadorError
from pescador.wire import END, ERROR, INLINE_MAX, ITEM, decode, encode_end, encode_error, encode_item

DTYPES = ["<f4", ">f8", "<i2", "|u1", "|b1", "<c8", "<M8[s]", "<U3", "|S2"]


def frames_as_bytes(frames):
    return [bytes(f) for f in frames]


@given(
    arrays=st.dictionaries(
        st.text(min_size=1, max_size=5),
        hnp.arrays(
            st.sampled_from(DTYPES).map(np.dtype),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40),
        ),
        max_size=4,
    )
)
def test_arrays_round_trip(arrays):
    kind, item = decode(frames_as_bytes(encode_item(arrays)))
    assert kind == ITEM and list(item) == list(arrays)
    for key, value in arrays.items():
        assert item[key].dtype == value.dtype and item[key].shape == value.shape
        np.testing.assert_array_equal(item[key], value)
        assert item[key].flags.aligned


def test_large_arrays_travel_as_frames_and_small_ones_inline():
    small = np.zeros(INLINE_MAX // 8)
    large = np.zeros(INLINE_MAX // 8 + 1)
    assert len(encode_item({"a": small})) == 1
    frames = encode_item({"a": large, "b": large})
    assert len(frames) == 3
    assert np.shares_memory(np.frombuffer(frames[1], dtype=large.dtype), large)  # not copied
    assert not np.shares_memory(np.frombuffer(encode_item({"a": large}, copy=True)[1], dtype=large.dtype), large)


def test_nested_values_round_trip():
    value = {"labels": {1: "cat", 2: "dog"}, "list": [1, 2.5, None, "x", [True]], "scalar": np.float32(2.5)}
    kind, item = decode(frames_as_bytes(encode_item(value)))
    assert item == value and isinstance(item["scalar"], np.float32)


def test_control_messages():
    assert decode(encode_end()) == (END, None)
    assert decode(encode_error("Traceback ...")) == (ERROR, "Traceback ...")


def header(*parts):
    return msgpack.packb(list(parts), use_bin_type=True)


MALFORMED = {
    "empty message": [],
    "not msgpack": [b"\xc1\xc1\xc1"],
    "truncated header": [header(ITEM, [["x", "<f8", [2], None]])[:-3]],
    "header not a list": [msgpack.packb({"a": 1})],
    "unknown kind": [header(7)],
    "fields not a list": [header(ITEM, 5)],
    "a field of bad length": [header(ITEM, [["x", 1, 2]])],
    "a key that is not str": [header(ITEM, [[1, 2]])],
    "more arrays than frames": [header(ITEM, [["x", "<f8", [2], None]])],
    "more frames than arrays": [header(ITEM, []), b"\x00" * 8],
    "size does not match shape": [header(ITEM, [["x", "<f8", [3], None]]), b"\x00" * 16],
    "size does not match dtype": [header(ITEM, [["x", "<f4", [2], b"\x00" * 7]])],
    "negative dimension": [header(ITEM, [["x", "<f8", [-1], None]]), b""],
    "enormous shape": [header(ITEM, [["x", "<f8", [2**40, 2**40], None]]), b"\x00" * 8],
    "a float dimension": [header(ITEM, [["x", "<f8", [2.0], None]]), b"\x00" * 16],
    "object dtype": [header(ITEM, [["x", "|O", [1], None]]), b"\x00" * 8],
    "structured dtype": [header(ITEM, [["x", "f4,i4", [1], b"\x00" * 8]])],
    "unknown dtype": [header(ITEM, [["x", "<q9", [1], b"\x00" * 8]])],
    "dtype not a string": [header(ITEM, [["x", 5, [1], b"\x00" * 8]])],
    "inline data not bytes": [header(ITEM, [["x", "<f8", [1], "abcdefgh"]])],
    "control message with frames": [header(END), b"\x00"],
    "zero itemsize": [header(ITEM, [["x", "|S0", [3], b""]])],
    "a zero among enormous dimensions": [header(ITEM, [["x", "<f8", [0, 2**62 - 1, 2**62 - 1], b""]])],
    "enormous dimensions with a frame": [header(ITEM, [["x", "|u1", [2**62 - 1, 2**62 - 1], None]]), b"\x00" * 4],
    "error without text": [header(ERROR)],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_raise(name):
    with pytest.raises(PescadorError, match="malformed message"):
        decode(MALFORMED[name])


def test_the_decoder_never_unpickles():
    payload = pickle.dumps(np.array([1, None], dtype=object))
    # msgpack-numpy's own form for an object array: kind b"O" with pickled data
    value = {b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [2], b"data": payload}
    with pytest.raises(PescadorError, match="does not travel"):
        decode([header(ITEM, [["x", value]])])
    scalar = {b"nd": False, b"type": "|O", b"kind": b"", b"data": payload}
    with pytest.raises(PescadorError, match="malformed"):
        decode([header(ITEM, [["x", scalar]])])


@given(st.binary(max_size=200), st.lists(st.binary(max_size=64), max_size=3))
def test_random_bytes_never_escape_as_anything_but_pescador_errors(head, rest):
    try:
        decode([head, *rest])
    except PescadorError:
        pass


@pytest.mark.parametrize(
    "item, words",
    [
        ({"x": object()}, ["key 'x'", "object"]),
        ({"x": [1, object()]}, ["key 'x' contains a object"]),
        ({"x": np.array([{}], dtype=object)}, ["key 'x'", "dtype object"]),
        ({"x": np.zeros(2, dtype="f4,i4")}, ["key 'x'"]),
        ({1: np.zeros(2)}, ["key 1", "keys must be str"]),
        ([np.zeros(2)], ["is a list", "expected a dict"]),
        ({"x": 2**70}, ["key 'x'", "int outside the 64-bit range"]),
        ({"x": np.zeros(3, dtype="V0")}, ["key 'x'", "V0"]),
        ({"x": {b"nd": True}}, ["key 'x' contains a dict key b'nd' of type bytes"]),
        ({"x": [np.zeros(2, dtype="V8")]}, ["key 'x' contains a numpy array of dtype |V8"]),
    ],
)
def test_values_that_cannot_travel_are_named(item, words):
    with pytest.raises(PescadorError) as info:
        encode_item(item)
    for word in words:
        assert word in str(info.value)
