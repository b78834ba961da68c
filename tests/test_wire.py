"""The wire format: round trips, and malformed messages refused without building anything."""

import collections
import functools
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pescador
from pescador import PescadorError
from pescador.wire import (
    ARGS_MAX,
    END,
    ERROR,
    INLINE_MAX,
    ITEM,
    ITEM_STATE,
    MEMORY_BASE,
    MEMORY_FACTOR,
    NAME_MAX,
    PICKLE_MAX,
    TEXT_MAX,
    ErrorReport,
    decode,
    encode_end,
    encode_error,
    encode_item,
    error_from,
)

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


@st.composite
def masked_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    data = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40)))
    mask = draw(st.one_of(st.just(np.ma.nomask), hnp.arrays(np.bool_, data.shape)))
    fill = draw(st.one_of(st.none(), hnp.arrays(dtype, ()).map(lambda a: a[()])))
    return np.ma.MaskedArray(data, mask=mask, fill_value=fill, hard_mask=draw(st.booleans()), shrink=False)


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(masked_arrays(), st.text()), max_size=4))
def test_masked_arrays_round_trip(values):
    assert same(round_trip(values), values)


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
    assert decode(encode_error("Traceback ...")) == (ERROR, ErrorReport("Traceback ..."))


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
    "error: text not a str": [header(ERROR, b"Traceback")],
    "error: text too long": [header(ERROR, "x" * (TEXT_MAX + 1))],
    "error: type not a list": [header(ERROR, "tb", "builtins.ValueError")],
    "error: type of three elements": [header(ERROR, "tb", ["builtins", "ValueError", ["x"]])],
    "error: module not a str": [header(ERROR, "tb", [1, "ValueError", ["x"], None])],
    "error: qualname too long": [header(ERROR, "tb", ["builtins", "V" * (NAME_MAX + 1), ["x"], None])],
    "error: args not a list": [header(ERROR, "tb", ["builtins", "ValueError", "x", None])],
    "error: an argument that is a list": [header(ERROR, "tb", ["builtins", "ValueError", [[1]], None])],
    "error: an argument that is a map": [header(ERROR, "tb", ["builtins", "ValueError", [{"a": 1}], None])],
    "error: too many arguments": [header(ERROR, "tb", ["builtins", "ValueError", [1] * (ARGS_MAX + 1), None])],
    "error: pickled not bytes": [header(ERROR, "tb", ["builtins", "ValueError", None, "pickle"])],
    "error: pickled too big": [header(ERROR, "tb", ["builtins", "ValueError", None, b"x" * (PICKLE_MAX + 1)])],
    "error: extra element": [header(ERROR, "tb", ["builtins", "ValueError", None, None], 5)],
    "error with frames": [header(ERROR, "tb", ["builtins", "ValueError", None, None]), b"\x00"],
    "masked: not a list": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, 5]])],
    "masked: two elements": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, [False, None]]])],
    "masked: hard mask not a bool": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, [False, None, 1]]])],
    "masked: mask of the wrong size": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, [b"\x00" * 3, None, False]]])],
    "masked: mask neither bytes nor frame": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, ["m", None, False]]])],
    "masked: mask frame missing": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, [None, None, False]]])],
    "masked: fill value not a scalar": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, [False, [1], False]]])],
    "masked: fill value of the wrong type": [header(ITEM, [["x", "<f8", [1], b"\x00" * 8, [False, "abc", False]]])],
    "masked: enormous mask": [
        header(ITEM, [["x", "|u1", [2**31, 2**31], None, [None, None, False]]]),
        b"\x00" * 8,
        b"\x00" * 8,
    ],
    "masked: data frame but no mask frame": [header(ITEM, [["x", "<f8", [200], None, [None, None, False]]]), b"\x00" * 1600],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_raise(name):
    with pytest.raises(PescadorError, match="malformed message"):
        decode(MALFORMED[name])


# Near misses of a small inline array's field, each malformed; decoded after a good message of the same
# layout, whose layout the decoder then knows (and builds the next such array at once).
NEAR_MISSES = {
    "a float dimension": ["x", "<f4", [1.0, 2], b"\x00" * 8],
    "a bool dimension": ["x", "<f4", [True, 2], b"\x00" * 8],
    "a shape that is a map": ["x", "<f4", {1: 0, 2: 0}, b"\x00" * 8],
    "a shape that is a string": ["x", "<f4", "\x01\x02", b"\x00" * 8],
    "too few bytes": ["x", "<f4", [1, 2], b"\x00" * 7],
    "too many bytes": ["x", "<f4", [1, 2], b"\x00" * 9],
    "a key that is not str": [1, "<f4", [1, 2], b"\x00" * 8],
    "a dtype code that is bytes": ["x", b"<f4", [1, 2], b"\x00" * 8],
    "a dtype code that is a list": ["x", ["<f4"], [1, 2], b"\x00" * 8],
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_a_known_layout_does_not_let_a_near_miss_through(name):
    good = encode_item({"x": np.ones((1, 2), np.float32)})
    assert decode(good)[1]["x"].tolist() == [[1.0, 1.0]]  # (now a known layout)
    with pytest.raises(PescadorError, match="malformed message"):
        decode([header(ITEM, [NEAR_MISSES[name]])])


def test_small_arrays_of_one_message_decoded_twice_are_independent_and_writeable():
    frames = encode_item({"x": np.arange(4, dtype=np.int16).reshape(2, 2)})
    first, second = decode(frames)[1]["x"], decode(frames)[1]["x"]
    first[0, 0] = 99
    assert second.tolist() == [[0, 1], [2, 3]] and first.flags.writeable and first.flags.aligned
    assert decode(frames)[1]["x"].tolist() == [[0, 1], [2, 3]]


fills = st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=3), st.binary(max_size=9))
masks = st.one_of(st.just(False), st.none(), st.binary(max_size=40), st.integers(-5, 5), st.text(max_size=2))
masked_fields = st.tuples(
    st.text(max_size=2),
    st.sampled_from(["<f8", "|u1", "<U2", "|S3", "?", "<M8[s]", "<f2", "|O", "f4,i4"]),
    st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**62)), max_size=3),
    st.one_of(st.none(), st.binary(max_size=80)),
    st.one_of(st.tuples(masks, fills, st.one_of(st.booleans(), st.none())).map(list), st.integers(-5, 5)),
).map(list)


def decode_bounded(raw, copy=False):
    """``decode(raw)``, or None where it raises PescadorError; either way it allocates at most what
    the docs promise: MEMORY_FACTOR times the message's bytes, plus MEMORY_BASE."""
    size = sum(len(f) for f in raw)
    tracemalloc.start()
    try:
        decoded = decode(raw, copy)
    except PescadorError:
        decoded = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= MEMORY_FACTOR * size + MEMORY_BASE, (peak, size)
    return decoded


@settings(max_examples=300)
@given(st.lists(masked_fields, max_size=3), st.lists(st.binary(max_size=96), max_size=4))
def test_malformed_masked_fields_raise_and_allocate_nothing_big(fields, frames):
    raw = [header(ITEM, fields), *frames]
    size = sum(len(f) for f in raw)
    decoded = decode_bounded(raw)
    if decoded is not None:
        for value in decoded[1].values():
            assert value.nbytes <= size and not value.dtype.hasobject


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


# -- what travels as what (the table in docs/parallel.rst, "What travels") -------------------------


def masked(data, mask, **kwargs):
    return np.ma.MaskedArray(data, mask=mask, **kwargs)


class Other(np.ndarray):
    """A subclass the wire knows nothing about."""


def memmapped(path):
    array = np.memmap(path, dtype=np.float32, mode="w+", shape=(300,))
    array[:] = np.arange(300)
    return array


# (name, value sent, type received, value received); every row is a row of the docs' table.
TRAVELS = [
    ("array", np.arange(6, dtype=">i2").reshape(2, 3), np.ndarray, np.arange(6, dtype=">i2").reshape(2, 3)),
    ("large array", np.linspace(0, 1, 500), np.ndarray, np.linspace(0, 1, 500)),
    ("0-d array", np.array(2.5, np.float32), np.ndarray, np.array(2.5, np.float32)),
    ("empty array", np.zeros((0, 4), np.int8), np.ndarray, np.zeros((0, 4), np.int8)),
    ("datetime array", np.array(["2020-01-01"], "M8[D]"), np.ndarray, np.array(["2020-01-01"], "M8[D]")),
    ("np.float32", np.float32(1.5), np.float32, np.float32(1.5)),
    ("np.int64", np.int64(-7), np.int64, np.int64(-7)),
    ("np.uint8", np.uint8(200), np.uint8, np.uint8(200)),
    ("np.bool_", np.bool_(True), np.bool_, np.bool_(True)),
    ("np.complex64", np.complex64(1 + 2j), np.complex64, np.complex64(1 + 2j)),
    ("np.complex128", np.complex128(1 + 2j), np.complex128, np.complex128(1 + 2j)),
    ("np.datetime64", np.datetime64("2020-01-02T03:04"), np.datetime64, np.datetime64("2020-01-02T03:04")),
    ("np.timedelta64", np.timedelta64(3, "s"), np.timedelta64, np.timedelta64(3, "s")),
    ("np.float64", np.float64(0.1), float, 0.1),  # a float subclass: arrives as float
    ("np.str_", np.str_("abc"), str, "abc"),
    ("np.bytes_", np.bytes_(b"ab"), bytes, b"ab"),
    ("int", -(2**63), int, -(2**63)),
    ("float nan", float("nan"), float, float("nan")),
    ("bool", False, bool, False),
    ("None", None, type(None), None),
    ("complex", 1 - 1j, complex, 1 - 1j),
    ("str", "clip-7", str, "clip-7"),
    ("bytes", b"\x00\xff", bytes, b"\x00\xff"),
    ("bytearray", bytearray(b"ab"), bytes, b"ab"),
    ("tuple", (1, (2, "a")), list, [1, [2, "a"]]),
    ("set", {3}, list, [3]),
    ("frozenset", frozenset({"a"}), list, ["a"]),
    ("nested dict", {"a": {1: [None, 2.5]}, 2: (True,)}, dict, {"a": {1: [None, 2.5]}, 2: [True]}),
    ("dict subclass", collections.OrderedDict(b=1, a=2), dict, {"b": 1, "a": 2}),
    ("array in a list", [np.arange(3)], list, [np.arange(3)]),
    ("0-d array in a dict", {"scale": np.array(2.5)}, dict, {"scale": np.array(2.5)}),
    ("0-d array in a list", [np.array(3, ">i2"), np.array("ab")], list, [np.array(3, ">i2"), np.array("ab")]),
    ("datetime arrays in a list", [np.array(["2020-01-01"], "M8[D]"), np.array(7, "m8[s]")], list,
     [np.array(["2020-01-01"], "M8[D]"), np.array(7, "m8[s]")]),
    ("strided array in a dict", {"x": np.arange(12.0).reshape(3, 4)[:, ::2]}, dict,
     {"x": np.arange(12.0).reshape(3, 4)[:, ::2].copy()}),
    ("lone surrogate", "file-\udcff.wav", str, "file-\udcff.wav"),
    ("lone surrogate, nested", {"names": ["\ud800", {"\udfff": "x"}]}, dict, {"names": ["\ud800", {"\udfff": "x"}]}),
    ("masked array", masked([1.0, 2.0, 3.0], [0, 1, 0]), np.ma.MaskedArray, masked([1.0, 2.0, 3.0], [0, 1, 0])),
    (
        "large masked array",
        masked(np.arange(1000.0), np.arange(1000) % 3 == 0, fill_value=-1.0, hard_mask=True),
        np.ma.MaskedArray,
        masked(np.arange(1000.0), np.arange(1000) % 3 == 0, fill_value=-1.0, hard_mask=True),
    ),
    ("masked array without a mask", np.ma.array([1, 2]), np.ma.MaskedArray, np.ma.array([1, 2])),
    ("np.ma.masked", np.ma.masked, np.ma.MaskedArray, masked(0.0, True)),
]

REFUSED = [
    ("matrix", np.array([[1, 2]]).view(np.matrix), ["item 4", "key 'x'", "numpy.matrix", "np.asarray"]),
    ("recarray", np.zeros(2).view(np.recarray), ["item 4", "key 'x'", "recarray"]),
    ("structured recarray", np.rec.array([(1, 2.0)], dtype="i4,f8"), ["item 4", "key 'x'", "dtype"]),
    ("structured array", np.zeros(2, dtype="f4,i4"), ["item 4", "key 'x'", "dtype"]),
    ("object array", np.array([{}], dtype=object), ["item 4", "key 'x'", "dtype object"]),
    ("unknown subclass", np.zeros(3).view(Other), ["item 4", "key 'x'", "Other", "ndarray subclass"]),
    ("masked array in a list", [np.ma.array([1.0])], ["item 4", "key 'x' contains", "MaskedArray"]),
    ("structured scalar", np.zeros(1, dtype="f4,i4")[0], ["item 4", "key 'x'", "void"]),
    ("an object", object(), ["item 4", "key 'x'", "object"]),
    ("nesting too deep", functools.reduce(lambda inner, _: [inner], range(2000), 0), ["item 4", "key 'x'", "packed"]),
]


def same(received, expected):
    """Equal in type and value (NaN equal to NaN), recursively."""
    if type(received) is not type(expected):
        return False
    if isinstance(expected, np.ma.MaskedArray):
        return (
            same(np.ma.getdata(received), np.ma.getdata(expected))
            and (np.ma.getmask(received) is np.ma.nomask) == (np.ma.getmask(expected) is np.ma.nomask)
            and np.array_equal(np.ma.getmaskarray(received), np.ma.getmaskarray(expected))
            and received.hardmask == expected.hardmask
            and same_fill(received._fill_value, expected._fill_value)
        )
    if isinstance(expected, np.ndarray):
        return (
            received.dtype == expected.dtype
            and received.shape == expected.shape
            and received.flags.aligned
            and received.tobytes() == expected.tobytes()  # exactly: NaN, NaT and -0.0 included
        )
    if isinstance(expected, dict):
        return list(received) == list(expected) and all(same(received[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return len(received) == len(expected) and all(map(same, received, expected))
    if isinstance(expected, float) and expected != expected:
        return received != received
    return bool(received == expected)


def same_fill(received, expected):
    """Fill values as numpy keeps them (None for its default; reading .fill_value would set it)."""
    if expected is None or received is None:
        return received is expected
    return received.dtype == expected.dtype and received.tobytes() == expected.tobytes()


def round_trip(item):
    kind, received = decode(frames_as_bytes(encode_item(item)))
    assert kind == ITEM
    return received


@pytest.mark.parametrize("name, value, kind, expected", TRAVELS, ids=[row[0] for row in TRAVELS])
def test_what_travels_as_what(name, value, kind, expected):
    received = round_trip({"x": value, name: value})
    assert type(received["x"]) is kind
    assert same(received["x"], expected) and same(received[name], expected)


def test_a_memmap_arrives_as_its_data(tmp_path):
    array = memmapped(tmp_path / "a.dat")
    received = round_trip({"x": array, "small": array[:3]})
    assert type(received["x"]) is np.ndarray and type(received["small"]) is np.ndarray
    np.testing.assert_array_equal(received["x"], np.arange(300, dtype=np.float32))


def test_a_masked_array_arrives_with_its_mask_not_its_fill_values():
    # the issue: a mean off by 1e19, because masked slots arrived holding the fill value
    sent = np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False])
    assert round_trip({"x": sent})["x"].mean() == 2.0
    large = np.ma.array(np.ones(1000), mask=np.arange(1000) % 2 == 1)
    large.data[1::2] = 1e20
    assert round_trip({"x": large})["x"].mean() == 1.0  # a 1000-element one crashed the encoder


def test_masked_arrays_travel_as_two_frames_in_order():
    sent = np.ma.array(np.arange(2000.0), mask=np.arange(2000) % 2 == 0)
    frames = encode_item({"a": sent, "b": np.arange(300.0)})
    assert len(frames) == 4  # data, mask, then the next array
    received = decode(frames)[1]
    assert same(received["a"], sent) and same(received["b"], np.arange(300.0))
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.float64), np.ma.getdata(sent))  # not copied


@pytest.mark.parametrize("name, value, words", REFUSED, ids=[row[0] for row in REFUSED])
def test_what_does_not_travel_is_refused_by_name(name, value, words):
    with pytest.raises(PescadorError) as info:
        encode_item({"ok": np.zeros(2), "x": value}, position=4)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


SURROGATE = "name-\udc80\ud800"  # e.g. a file name that os.fsdecode made of undecodable bytes

SURROGATES = {  # where: (item sent, item expected)
    "key": ({SURROGATE: 1.5}, {SURROGATE: 1.5}),
    "value": ({"x": SURROGATE}, {"x": SURROGATE}),
    "nested key": ({"x": {"a": [{SURROGATE: 1}]}}, {"x": {"a": [{SURROGATE: 1}]}}),
    "nested value": ({"x": [(1, SURROGATE)]}, {"x": [[1, SURROGATE]]}),
    "array of str": ({"x": np.array([SURROGATE, "b"])}, {"x": np.array([SURROGATE, "b"])}),
}


@pytest.mark.parametrize("where", sorted(SURROGATES))
def test_lone_surrogates_arrive_exactly(where):
    # they were refused without naming the key or the item's position; now they are carried as they are
    sent, expected = SURROGATES[where]
    assert same(round_trip(sent), expected)


def every_row(directory):
    """One item holding every row of TRAVELS (and a memmap), for the end-to-end test."""
    item = {name: value for name, value, _, _ in TRAVELS}
    item["memmap"] = memmapped(os.path.join(directory, "m.dat"))
    yield item


END_TO_END = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np, pescador, test_wire
    (item,) = list(pescador.zmq_offload(workers=1)(pescador.stream(test_wire.every_row, {directory!r})))
    wrong = [name for name, _, kind, expected in test_wire.TRAVELS
             if type(item[name]) is not kind or not test_wire.same(item[name], expected)]
    memmap = type(item["memmap"]) is np.ndarray and np.array_equal(item["memmap"], np.arange(300))
    print("wrong:", wrong, "memmap:", memmap)
    """
)


@pytest.mark.timeout(90)
def test_every_row_of_the_table_crosses_zmq_offload(tmp_path):
    code = END_TO_END.format(tests=os.path.dirname(__file__), directory=str(tmp_path))
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)  # the consumer and its workers
            child.wait()
    assert out.strip() == "wrong: [] memmap: True", err


# -- a worker's exception: its type, its arguments, and its traceback text -------------------------

plain_args = st.one_of(
    st.text(max_size=8), st.binary(max_size=8), st.integers(-(2**63), 2**64 - 1), st.floats(), st.booleans(), st.none()
)
any_args = st.one_of(plain_args, st.lists(plain_args, max_size=2), st.dictionaries(st.text(max_size=2), plain_args, max_size=2))
type_names = st.one_of(
    st.sampled_from(["builtins", "pescador.exceptions", "os", "__main__", ""]), st.text(max_size=12), st.integers(-(2**63), 2**64 - 1), st.none()
)
qualnames = st.one_of(
    st.sampled_from(["ValueError", "KeyError", "OSError", "SystemExit", "StopIteration", "open", "print", "object",
                     "PescadorError", "ExceptionGroup", "BaseException", "system"]),
    st.text(max_size=12),
    st.integers(-(2**63), 2**64 - 1),
)
error_infos = st.one_of(
    st.tuples(type_names, qualnames, st.one_of(st.none(), st.lists(any_args, max_size=6), st.text(max_size=3)),
              st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=3))).map(list),
    st.lists(plain_args, max_size=5),
    plain_args,
)


class _NoPickle:
    """Stands for the pickle module in pescador.wire: records any attempt to unpickle."""

    def __init__(self):
        self.attempts = 0

    def loads(self, *args, **kwargs):
        self.attempts += 1
        raise pickle.UnpicklingError("an untrusted error may not be unpickled")

    Unpickler = loads


@settings(max_examples=400)
@given(st.one_of(st.text(max_size=20), st.binary(max_size=8), st.integers(-(2**63), 2**64 - 1)), error_infos)
def test_malformed_errors_raise_and_error_reports_are_never_unpickled_by_decoding(text, info):
    import pescador.wire as wire

    stand_in = _NoPickle()
    wire.pickle = stand_in  # (restored below: hypothesis runs many examples in one test)
    try:
        decoded = decode_bounded([header(ERROR, text, info)])
    finally:
        wire.pickle = pickle
    assert stand_in.attempts == 0
    if decoded is None:
        return
    kind, report = decoded
    assert kind == ERROR and report.text == text
    if report.pickled is not None:
        return
    error = error_from(report, "worker 0")
    assert isinstance(error, Exception)
    if not isinstance(error, pescador.WorkerError):  # rebuilt: a built-in Exception, from the plain arguments
        assert type(error).__module__ == "builtins" and type(error).__name__ == report.qualname
        assert isinstance(error.__cause__, pescador.WorkerError) and error.__cause__.traceback_text == text


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), KeyError("k"), FileNotFoundError(2, "No such file", "/nope"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
     ValueError("caf" + "\udce9"), OSError(), ZeroDivisionError("division by zero", 2, None, 1.5, True, b"x")],
    ids=repr,
)
def test_built_in_errors_are_rebuilt_from_their_arguments_without_pickle(error):
    kind, report = decode(encode_error("Traceback ...", error))  # (no pickle sent)
    assert report.pickled is None
    rebuilt = error_from(report, "worker 0")
    assert type(rebuilt) is type(error) and rebuilt.args == error.args and repr(rebuilt) == repr(error)
    if isinstance(error, OSError):
        assert (rebuilt.errno, rebuilt.strerror, rebuilt.filename) == (error.errno, error.strerror, error.filename)
    assert rebuilt.__cause__.traceback_text == "Traceback ..."


def test_a_long_traceback_keeps_its_start_and_end_within_the_bound():
    text = "Traceback (most recent call last):\n" + "x" * (3 * TEXT_MAX) + "\nValueError: the end"
    kind, report = decode(encode_error(text, ValueError("the end")))
    assert len(report.text) <= TEXT_MAX
    assert report.text.startswith("Traceback (most recent call last):") and report.text.endswith("ValueError: the end")
    assert "characters left out" in report.text


def test_big_or_unusual_arguments_travel_as_text_only():
    long = ValueError("y" * (TEXT_MAX + 1))  # too long to travel as an argument, small enough to pickle
    report = decode(encode_error("tb", long, pickled=True))[1]
    assert report.args is None and error_from(report, "w").args == long.args
    huge = ValueError(np.zeros(PICKLE_MAX // 8 + 1))  # too big to pickle onto the wire
    report = decode(encode_error("tb", huge, pickled=True))[1]
    assert report.pickled is None and report.args is None
    error = error_from(report, "worker 3", when=" after sending 2 items")
    assert type(error) is pescador.WorkerError and isinstance(error, PescadorError)
    assert error.type_name == "builtins.ValueError"
    assert str(error) == "worker 3 raised ValueError after sending 2 items; its traceback:\ntb"


class _HostileType(type):
    def __getattribute__(cls, name):
        if name in ("__module__", "__qualname__") and type.__getattribute__(cls, "__dict__").get("armed"):
            raise RuntimeError(f"no {name}")
        return super().__getattribute__(name)


class Hostile(Exception, metaclass=_HostileType):
    """An exception whose type and hooks fail: it still cannot stop the report from being sent."""

    def __reduce__(self):
        raise RuntimeError("no")


def test_an_exception_that_refuses_every_question_still_sends_its_text():
    Hostile.armed = True  # (until the end of the test, asking the class its names raises)
    try:
        kind, report = decode(encode_error("Traceback ...", Hostile("x"), pickled=True))
    finally:
        del Hostile.armed
    assert report.text == "Traceback ..." and report.pickled is None and report.args is None
    assert isinstance(error_from(report, "worker 0"), pescador.WorkerError)


# ----------------------------------------------------------------------------
# Several items in one message (BATCH)
# ----------------------------------------------------------------------------

from pescador.wire import BATCH, BATCH_BYTES, BATCH_MAX, Outbox, encode_batch, shared_layout  # noqa: E402

batch_layouts = st.lists(
    st.tuples(
        st.sampled_from(DTYPES).map(np.dtype),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
    ),
    min_size=0,
    max_size=3,
)


@settings(max_examples=100)
@given(batch_layouts, st.integers(1, 20), st.booleans(), st.booleans(), st.data())
def test_batches_round_trip_item_by_item_in_order(layout, count, with_values, copy, data):
    items = []
    label = data.draw(st.sampled_from([np.int64, np.float32, np.bool_, np.uint8, np.float64, int]))  # (one layout)
    for i in range(count):
        item = {f"a{k}": data.draw(hnp.arrays(dtype, shape)) for k, (dtype, shape) in enumerate(layout)}
        if with_values:
            item["i"] = i
            item["name"] = data.draw(st.text(max_size=4))
            item["label"] = label(i % 2)
        items.append(item)
    if not items[0]:
        items = [{"i": i} for i in range(count)]
    items = items[: BATCH_BYTES // max(1, *(shared_layout(item)[1] for item in items))]  # (what a message holds)
    count = len(items)
    states = [f'{{"n": {i}}}' for i in range(count)] if count % 2 else None
    frames = [bytearray(f) for f in encode_batch(items, states=states)]  # (writeable, as zmq frames are)
    kind, (got, got_states) = decode_bounded(frames, copy)
    assert kind == BATCH and got_states == states and len(got) == count
    for sent, received in zip(items, got):
        assert list(received) == list(sent)
        for key, value in sent.items():
            if isinstance(value, np.ndarray):
                assert received[key].dtype == value.dtype and received[key].shape == value.shape
                np.testing.assert_array_equal(received[key], value)
                assert received[key].flags.writeable and received[key].flags.aligned
                if copy:
                    assert received[key].flags.owndata
            else:  # (np.float64 is a float, and arrives as one, as when it travels alone)
                assert received[key] == value
                assert type(received[key]) is (float if type(value) is np.float64 else type(value))


def test_a_row_written_to_touches_no_other_item():
    items = [{"x": np.full((2, 3), i, dtype="<f8")} for i in range(4)]
    _, (got, _) = decode(encode_batch(items))
    got[1]["x"][...] = -1
    assert [float(item["x"].sum()) for item in got] == [0.0, -6.0, 12.0, 18.0]


@pytest.mark.parametrize(
    "item",
    [
        {"x": np.zeros(())},  # no dimension
        {"x": np.ma.masked_array([1.0])},
        {"x": np.zeros(2, dtype=object)},
        {"x": np.zeros(1 << 15, dtype="|u1")},  # too big: alone, zero-copy
        {1: np.zeros(2)},
        {"x": {b"nd": True}},
        [np.zeros(2)],
        {},
        {"x": np.zeros(2), "meta": [1, 2]},  # a mutable value: packed at once, alone
        {"x": np.zeros(2), "n": 2**64},
    ],
    ids=["0-d", "masked", "object", "big", "int key", "bytes key", "not a dict", "empty", "list", "huge int"],
)
def test_items_that_cannot_share_travel_alone(item):
    assert shared_layout(item) is None


def batch(count, fields, values=None, states=None):
    return header(BATCH, count, fields, values, states)


MALFORMED.update({
    "batch: short header": [header(BATCH, 2, [])],
    "batch: count zero": [batch(0, [["x"]], [])],
    "batch: count not an int": [batch(2.0, [["x"]], [1, 2])],
    "batch: count above the bound": [batch(BATCH_MAX + 1, [["x", "|u1", [1], b"\x00" * (BATCH_MAX + 1)]])],
    "batch: fields not a list": [batch(2, 5)],
    "batch: no fields": [batch(2, [])],
    "batch: a field of bad length": [batch(2, [["x", "<f8", [1]]])],
    "batch: a key that is not str": [batch(2, [[1]], [1, 2])],
    "batch: block of the wrong size": [batch(2, [["x", "<f8", [1], b"\x00" * 8]])],
    "batch: block frame of the wrong size": [batch(3, [["x", "<f8", [200], None]]), b"\x00" * 3200],
    "batch: block frame missing": [batch(2, [["x", "<f8", [200], None]])],
    "batch: a frame too many": [batch(2, [["x", "|u1", [1], b"\x00\x00"]]), b"\x00"],
    "batch: numpy scalars of the wrong size": [batch(2, [["x", "<f8", [], b"\x00" * 12]])],
    "batch: object dtype": [batch(2, [["x", "|O", [1], b"\x00" * 16]])],
    "batch: enormous shape": [batch(2, [["x", "|u1", [2**62 - 1, 2**62 - 1], None]]), b"\x00" * 4],
    "batch: values missing": [batch(2, [["x"]])],
    "batch: too few values": [batch(2, [["x"]], [1])],
    "batch: values of another count": [batch(2, [["x"], ["y"]], [1, 2, 3])],
    "batch: values as rows": [batch(2, [["x"], ["y"]], [[1, 2], [3, 4]])],
    "batch: values with arrays only": [batch(1, [["x", "|u1", [1], b"\x00"]], [1])],
    "batch: states not a list": [batch(2, [["x"]], [1, 2], "s")],
    "batch: too few states": [batch(2, [["x"]], [1, 2], ["s"])],
    "batch: a state not str": [batch(2, [["x"]], [1, 2], ["s", 5])],
    "batch: more values than a message holds": [batch(BATCH_MAX, [[f"k{i}", "<f8", [0], b""] for i in range(65)])],
    "batch: 64 dimensions": [batch(1, [["x", "|u1", [1] * 64, b"\x00"]])],
})


def test_a_small_batch_header_cannot_make_the_decoder_build_much():
    """Zero-size arrays cost nothing on the wire: a 29 KB header naming 2,000 of them for each of 1,024
    items would have the decoder build two million rows; it is refused before any row is built, and a
    bad state after many fields is refused before the rows are built."""
    for raw in (
        [batch(BATCH_MAX, [[f"k{i}", "<f8", [0], b""] for i in range(2000)])],
        [batch(BATCH_MAX, [[f"k{i}", "<f8", [0], b""] for i in range(64)], None, ["bad"])],
    ):
        tracemalloc.start()
        try:
            with pytest.raises(PescadorError, match="malformed message"):
                decode(raw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 50 * len(raw[0]) + (1 << 20), peak


# -- what a message may make the decoder allocate: at most MEMORY_FACTOR times its bytes, plus MEMORY_BASE --

HOSTILE = {  # each made the decoder allocate 10 to 10 million times its size
    "a million empty lists (1 MB, 65 MB)": lambda: [header(ITEM, [[]] * 1_000_000)],
    "1,024 items of 64 zero-size arrays (832 bytes, 9.6 MB)": lambda: [
        batch(BATCH_MAX, [[f"k{i}", "<f8", [0], b""] for i in range(64)])
    ],
    "1,024 items of 64 one-byte arrays (66 KB, 9.6 MB)": lambda: [
        batch(BATCH_MAX, [[f"k{i}", "|u1", [1], None] for i in range(64)]),
        *[bytes(BATCH_MAX)] * 64,
    ],
    "nested lists that claim more elements than follow (5 KB, 40 MB)": lambda: [
        (b"\xdd" + (4999).to_bytes(4, "big")) * 1000
    ],
    "a masked array's fill value of a vast dtype (41 bytes, 800 MB)": lambda: [
        header(ITEM, [["x", "|S400000000", [0], b"", [False, "abc", False]]])
    ],
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_message_that_would_cost_more_than_its_bound_is_refused_within_it(name):
    assert decode_bounded(HOSTILE[name]()) is None


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=6), st.binary(max_size=6)
)
numpy_forms = st.fixed_dictionaries(  # msgpack-numpy's form of an array (of up to 64 dimensions) or a scalar
    {b"nd": st.booleans(), b"type": st.sampled_from(["<f8", "|u1", "<U2", "|S0"])},
    optional={b"kind": st.just(b""), b"shape": st.lists(st.integers(0, 2), max_size=64), b"data": st.binary(max_size=16)},
)
trees = st.recursive(
    st.one_of(leaves, numpy_forms),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.integers(-300, 300), st.text(max_size=2), st.binary(max_size=3)), children, max_size=3),
    ),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(trees, st.integers(1, 3000), st.sampled_from(["a value", "the header", "a batch's values"]), st.integers(0, 9))
def test_any_header_is_decoded_or_refused_within_the_bound(tree, repeat, where, cut):
    """Headers of every size and shape (a value repeated up to 3,000 times, so that long ones are counted
    token by token), whole or cut short."""
    if where == "a value":
        head = header(ITEM, [["k", [tree] * repeat]])
    elif where == "the header":
        head = msgpack.packb([tree] * repeat, use_bin_type=True)
    else:
        count = min(repeat, BATCH_MAX)
        head = batch(count, [["k"]], [tree] * count)
    decode_bounded([head[: len(head) - cut]])


COSTLY = {  # items whose values cost the decoder more than their bytes
    "100,000 small ints": {"ids": list(range(100)) * 1000},
    "20,000 short strings": {"words": ["ab", "cd"] * 10_000},
    "3,000 small arrays": {f"k{i}": np.full(1, i % 256, np.uint8) for i in range(3000)},
    "a long string that is not ASCII": {"text": "\U0001F600" + "a" * 1_000_000},
    "2,000 nested 0-d arrays": {"scales": [np.array(i, np.int32) for i in range(2000)]},
    "2,000 numpy scalars": {"labels": [np.int64(i) for i in range(2000)]},
    "300 masked arrays": {f"m{i}": np.ma.array([1.0, 2.0], mask=[True, False]) for i in range(300)},
    "nested dicts": {"meta": [{"a": i, "b": [None, True]} for i in range(5000)]},
}


@pytest.mark.parametrize("name", list(COSTLY))
def test_an_item_that_costs_more_than_its_bytes_arrives_padded_within_the_bound(name):
    item = COSTLY[name]
    decoded = decode_bounded(frames_as_bytes(encode_item(item)))
    assert decoded is not None and same(decoded[1], item)


def test_a_long_traceback_that_is_not_ascii_arrives_within_the_bound():
    text = "\U0001F600" * TEXT_MAX
    decoded = decode_bounded(encode_error(text, ValueError("x")))
    assert decoded is not None and decoded[1].text == text


plain_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=8),
        st.binary(max_size=8), st.sampled_from([np.int64(-3), np.float32(0.5), np.bool_(True), np.uint8(7)]),
        hnp.arrays(st.sampled_from(DTYPES).map(np.dtype), hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)),
    ),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=2), children, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(max_size=3), st.tuples(plain_values, st.integers(1, 300)), min_size=1, max_size=4))
def test_every_item_the_encoder_sends_is_decoded_within_the_bound(values):
    item = {key: [value] * repeat for key, (value, repeat) in values.items()}
    decoded = decode_bounded(frames_as_bytes(encode_item(item)))
    assert decoded is not None and same(decoded[1], item)


@settings(max_examples=300)
@given(
    st.one_of(st.integers(-2, 5), st.just(BATCH_MAX + 1), st.floats(0, 3)),
    st.lists(st.one_of(masked_fields.map(lambda f: f[:4]), st.lists(st.text(max_size=2), max_size=2)), max_size=3),
    st.one_of(st.none(), st.lists(st.lists(st.integers(0, 3), max_size=3), max_size=4), st.integers(-9, 9)),
    st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=3), st.integers(-9, 9)), max_size=4)),
    st.lists(st.binary(max_size=96), max_size=3),
)
def test_malformed_batches_raise_and_allocate_nothing_big(count, fields, values, states, frames):
    raw = [batch(count, fields, values, states), *frames]
    size = sum(len(f) for f in raw)
    decoded = decode_bounded(raw)
    if decoded is not None:
        items, got_states = decoded[1]
        assert len(items) == count and (got_states is None or len(got_states) == count)
        for item in items:
            for value in item.values():
                if isinstance(value, np.ndarray):
                    assert value.nbytes <= size and not value.dtype.hasobject


class FakeWire:
    """The outbox's view of a socket: room when the test says so; what was sent, in order."""

    def __init__(self):
        self.room = True
        self.messages = []
        self.sent = threading.Event()

    def send(self, frames):
        decoded = decode_bounded(frames_as_bytes(frames))
        assert decoded is not None
        self.messages.append(decoded)
        self.sent.set()

    def writable(self):
        return self.room

    def items(self):
        out = []
        for kind, payload in self.messages:
            out += payload[0] if kind == BATCH else [payload]
        return out


def test_the_outbox_keeps_order_and_shares_messages_when_the_source_is_fast():
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=60.0)  # (held until full or finished)
    for i in range(3000):
        outbox.put({"i": np.array([i])})
    outbox.put({"big": np.zeros(1 << 15, dtype="|u1")})  # a layout change, and an item that travels alone
    outbox.put({"i": np.array([3000])})
    outbox.finish()
    got = fake.items()
    assert [int(item["i"][0]) for item in got if "i" in item] == list(range(3001))
    assert list(got[3000]) == ["big"]
    assert len(fake.messages) < 10
    assert all(len(payload[0]) <= BATCH_MAX for kind, payload in fake.messages if kind == BATCH)


def _make_arrays(i):
    return {"i": np.array([i % 256], dtype=np.uint8)}


@pytest.mark.parametrize("make", [_make_arrays, lambda i: {"i": i % 100, "n": None}], ids=["arrays", "values"])
def test_items_with_a_state_now_and_then_share_messages_within_the_bound(make):
    """A resumable zmq_offload run's worker sends its state with some items only: the others' places in a
    batch's list of states (nil) count against the bound too (FakeWire decodes each message within it)."""
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=60.0)
    states = ['{"n": %d}' % i if i % 997 == 0 else None for i in range(5000)]
    for i, state in enumerate(states):
        outbox.put(make(i), state)
    outbox.finish()
    got = []
    for kind, payload in fake.messages:
        if kind == BATCH:
            got += zip(payload[0], payload[1] or [None] * len(payload[0]))
        else:
            got.append(payload if kind == ITEM_STATE else (payload, None))
    assert [int(item["i"]) if type(item["i"]) is int else int(item["i"][0]) for item, _ in got] == [
        int(make(i)["i"][0]) if make is _make_arrays else make(i)["i"] for i in range(5000)]
    assert [state for _, state in got] == states and len(fake.messages) < 20


def test_the_outbox_sends_an_item_held_while_the_source_blocks():
    """A source that gives its next item only once the previous one has arrived still progresses."""
    fake = FakeWire()
    fake.room = False  # the queue is full: the item is held
    outbox = Outbox(fake.send, fake.writable, wait=0.001)
    outbox.put({"i": np.array([0])})
    outbox.put({"i": np.array([1])})  # (fast: held with the first)
    fake.room = True  # the receiver drains the queue while the source waits for item 1 to arrive
    assert fake.sent.wait(60), "the held items never left"
    outbox.finish()
    assert [int(item["i"][0]) for item in fake.items()] == [0, 1]


def test_the_outbox_with_wait_zero_sends_one_message_per_item():
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=0)
    for i in range(50):
        outbox.put({"i": np.array([i])})
    outbox.finish()
    assert [kind for kind, _ in fake.messages] == [ITEM] * 50


def test_an_item_that_cannot_travel_is_named_after_the_items_before_it():
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=60.0)
    for i in range(5):
        outbox.put({"i": np.array([i]), "v": i})
    with pytest.raises(PescadorError, match="item 5: the value of key 'v'"):
        outbox.put({"i": np.array([5]), "v": {1, object()}})  # shares, but cannot be packed
        outbox.finish()
    assert [int(item["i"][0]) for item in fake.items()] == [0, 1, 2, 3, 4]


def test_a_source_may_change_what_it_yielded_once_the_outbox_has_it():
    """Items held to share a message are captured when put: a source that reuses its dict and arrays
    (as ``copy=True`` allows, and as small arrays always allowed) sends what it yielded."""
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=60.0)
    item = {"X": np.zeros((1, 4), dtype=np.float32), "i": 0}
    for i in range(100):
        item["X"][...] = i
        item["i"] = i
        outbox.put(item)
    outbox.finish()
    got = fake.items()
    assert [x["i"] for x in got] == list(range(100))
    assert [float(x["X"].sum()) for x in got] == [4.0 * i for i in range(100)]


def test_items_that_differ_from_the_held_layout_in_a_later_key_arrive_as_they_were():
    """The outbox checks and copies an item of the held items' layout in one pass: an item that matches
    in its first key and not in a later one (dtype, shape, key, a value that is not an array, a key more)
    travels as itself, and the rows written for its first key are not taken for an item."""
    variants = [
        {"a": np.full((1, 2), 1, np.float32), "b": np.arange(3.0)},
        {"a": np.full((1, 2), 2, np.float32), "b": np.arange(3)},  # another dtype
        {"a": np.full((1, 2), 3, np.float32), "b": np.arange(4.0)},  # another shape
        {"a": np.full((1, 2), 4, np.float32), "c": np.arange(3.0)},  # another key
        {"a": np.full((1, 2), 5, np.float32), "b": 7},  # not an array
        {"a": np.full((1, 2), 6, np.float32), "b": np.arange(3.0), "d": np.zeros(1)},  # a key more
        {"a": np.full((1, 2), 7, np.float32), "b": np.arange(3.0).astype(">f8")},  # another byte order
    ]
    sent = [variants[0], *variants[1:], variants[0], *reversed(variants)]
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=60.0)
    for item in sent:
        outbox.put(item)
    outbox.finish()
    got = fake.items()
    assert len(got) == len(sent)
    for received, item in zip(got, sent):
        assert list(received) == list(item)
        for key, value in item.items():
            if isinstance(value, np.ndarray):
                assert received[key].dtype == value.dtype and received[key].tolist() == value.tolist()
            else:
                assert received[key] == value


def test_arrays_of_each_byte_order_arrive_in_their_own():
    for code in ("<f4", ">f4", "<f4", "=i2", ">i2"):
        value = np.arange(3, dtype=code)
        received = decode(encode_item({"x": value}))[1]["x"]
        assert received.dtype == value.dtype and received.tolist() == [0, 1, 2]


def test_closing_the_outbox_ends_its_thread_without_waiting_out_batch_wait():
    """The thread waits for held items to fall due or, once they are due, for room in a full queue; close
    ends those waits at once: finishing a run never waits out batch_wait (here 10 s)."""
    fake = FakeWire()
    fake.room = False  # a full queue: the items stay held
    looked = threading.Event()
    fake.writable = lambda: looked.set() or fake.room
    outbox = Outbox(fake.send, fake.writable, wait=10.0)
    outbox.put({"i": np.array([0])})
    outbox.put({"i": np.array([1])})
    with outbox.lock:
        outbox.since -= 20  # (the held items are due: the thread looks for room, finds none, and waits)
        looked.clear()
    assert looked.wait(60), "the outbox thread never looked for room"
    closer = threading.Thread(target=outbox.close)
    closer.start()
    closer.join(5.0)  # (half of batch_wait: a close that waited out the thread's wait would still be here)
    assert not closer.is_alive() and not outbox.thread.is_alive()


def test_strings_and_bytes_count_toward_what_a_message_holds():
    """An item's strings and bytes count as its arrays do: encoded images with a label do not make a
    message of a thousand of them."""
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=60.0)
    for i in range(40):
        outbox.put({"jpeg": b"x" * 10_000, "label": i, "name": "\u00e9" * 100})
    outbox.finish()
    assert [item["label"] for item in fake.items()] == list(range(40))
    for kind, payload in fake.messages:
        items = payload[0] if kind == BATCH else [payload]
        assert sum(len(item["jpeg"]) for item in items) <= 1 << 16
    grown = FakeWire()  # (the first item's bytes are short: the later, longer ones still count)
    outbox = Outbox(grown.send, grown.writable, wait=60.0)
    for i in range(40):
        outbox.put({"jpeg": b"x" * (10 if i < 2 else 10_000), "label": i})  # (item 0 goes alone, 1 starts a batch)
    outbox.finish()
    assert [item["label"] for item in grown.items()] == list(range(40))
    for kind, payload in grown.messages:
        items = payload[0] if kind == BATCH else [payload]
        assert sum(len(item["jpeg"]) for item in items) <= 1 << 16
    assert shared_layout({"jpeg": b"x" * 20_000}) is None  # (beyond what one item may hold to share)
    assert shared_layout({"x": np.zeros((1,) * 64)}) is None  # (its block would need 65 dimensions)


def test_an_item_kept_from_a_shared_message_holds_only_its_own_bytes():
    frames = encode_batch([{"x": np.full(16, i, np.float32)} for i in range(500)])
    kept = decode(frames_as_bytes(frames))[1][0][5]["x"]
    assert kept.tolist() == [5.0] * 16 and kept.base is None and kept.flags.owndata and kept.flags.writeable


def test_a_later_item_with_a_key_that_is_not_a_plain_str_travels_alone():
    fake = FakeWire()
    outbox = Outbox(fake.send, fake.writable, wait=60.0)
    outbox.put({"x": np.zeros(2)})
    outbox.put({"x": np.zeros(2)})  # (fast: held, and the next item is checked against it)
    with pytest.raises(PescadorError, match="keys must be str"):
        outbox.put({np.str_("x"): np.ones(2)})  # (as when it comes alone: refused, not passed as "x")
        outbox.finish()


def test_a_large_header_does_not_keep_its_memory_in_the_threads_packer():
    import pescador.wire as wire

    encode_item({"x": np.zeros(1)})
    first = wire._PACKERS.packer
    encode_item({"blob": b"x" * (2 << 20)})
    assert getattr(wire._PACKERS, "packer", None) is not first  # (dropped: its buffer had grown to 2 MiB)
    assert decode(encode_item({"x": np.ones(1)}))[1]["x"].tolist() == [1.0]
