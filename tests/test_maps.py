"""The 3.x data-first names in pescador.maps."""

import numpy as np
import pytest

from pescador import PescadorError, maps


def vectors(n, d=3):
    for i in range(n):
        yield {"x": np.full(d, i), "y": np.array([i])}


def test_buffer_stream_stacks_along_a_new_axis():
    batches = list(maps.buffer_stream(maps_source(7), 3))
    assert [b["x"].shape for b in batches] == [(3, 3), (3, 3)]
    assert batches[1]["x"][:, 0].tolist() == [3, 4, 5]
    partial = list(maps.buffer_stream(maps_source(7), 3, partial=True))
    assert [len(b["x"]) for b in partial] == [3, 3, 1]


def test_buffer_stream_concatenates_along_an_axis():
    batches = list(maps.buffer_stream(maps_source(4), 2, axis=0))
    assert [b["x"].shape for b in batches] == [(6,), (6,)]
    two_d = [{"m": np.full((2, 2), i)} for i in range(4)]
    side = list(maps.buffer_stream(two_d, 2, axis=1))
    assert [b["m"].shape for b in side] == [(2, 4), (2, 4)]
    assert side[0]["m"][0].tolist() == [0, 0, 1, 1]


def test_buffer_stream_errors():
    with pytest.raises(PescadorError, match="buffer_size"):
        maps.buffer_stream(maps_source(3), 0)
    with pytest.raises(PescadorError, match="axis"):
        maps.buffer_stream(maps_source(3), 2, axis="rows")
    with pytest.raises(PescadorError, match="axis 5"):
        list(maps.buffer_stream(maps_source(3), 2, axis=5))
    with pytest.raises(PescadorError, match="item 1.*int"):
        list(maps.buffer_stream([{"x": np.zeros(1)}, 3], 2))


def test_tuples_and_keras_tuples():
    items = [{"x": 1, "y": 2, "z": 3}]
    assert list(maps.tuples(items, "z", "x")) == [(3, 1)]
    assert list(maps.keras_tuples(items, ["x", "y"], "z")) == [([1, 2], 3)]
    with pytest.raises(PescadorError, match="'w'"):
        list(maps.tuples(items, "w"))


def test_buffer_stream_takes_both_styles_and_is_at_the_top_level():
    import pescador

    assert pescador.buffer_stream is maps.buffer_stream
    assert pescador.tuples is maps.tuples and pescador.keras_tuples is maps.keras_tuples
    data_first = [b["x"].tolist() for b in pescador.buffer_stream(maps_source(5), 2, partial=True)]
    curried = pescador.buffer_stream(2, partial=True)
    assert isinstance(curried, pescador.Transform)
    assert [b["x"].tolist() for b in curried(maps_source(5))] == data_first
    assert [b["x"].tolist() for b in pescador.buffer_stream(buffer_size=2, partial=True)(maps_source(5))] == data_first
    live = iter(maps_source(4))  # a live iterator, as 3.x code passes streamer.iterate()
    assert [b["x"].shape for b in maps.buffer_stream(live, 2, axis=0)] == [(6,), (6,)]
    assert [b["x"].shape for b in maps.buffer_stream(pescador.Streamer(vectors, 4), 4)] == [(4, 3)]
    with pytest.raises(PescadorError, match="by name"):
        pescador.buffer_stream(2, True)
    with pytest.raises(PescadorError, match="give a stream first"):
        pescador.buffer_stream(vectors, 2)  # a generator function, not a stream
    with pytest.raises(pescador.DataError, match="item 1"):
        list(maps.buffer_stream([{"x": np.zeros(1)}, 3], 2))


def maps_source(n):
    from pescador import stream

    return stream(vectors, n)
