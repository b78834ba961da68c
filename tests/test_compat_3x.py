"""Typical pescador 3.x user code, written from the 3.x documentation, run unchanged.

Each test is code as a 3.x user wrote it; where our behaviour differs on
purpose, docs/migration.rst says so and the test shows the new behaviour.
"""

import numpy as np
import pytest

import pescador


@pescador.streamable
def data_gen(n):
    for i in range(n):
        yield {"X": np.full((1, 2), i, dtype=np.float32), "Y": np.array([i])}


def test_streamable_returns_an_object_with_the_streamer_methods():
    s = data_gen(4)
    assert [int(x["Y"][0]) for x in s.iterate()] == [0, 1, 2, 3]
    assert [int(x["Y"][0]) for x in s.iterate(max_iter=2)] == [0, 1]
    assert [int(x["Y"][0]) for x in s(max_iter=3)] == [0, 1, 2]
    assert [int(x["Y"][0]) for x in s(max_iter=6, cycle=True)] == [0, 1, 2, 3, 0, 1]
    assert [int(x["Y"][0]) for x in s.cycle(max_iter=5)] == [0, 1, 2, 3, 0]
    assert len(list(s())) == 4  # every call is a fresh run
    with pytest.raises(pescador.PescadorError, match="max_iter"):
        s.iterate(max_iter=-1)


def test_map_functions_on_a_streamer_as_3x_wrote_them():
    streamer = pescador.Streamer(data_gen, 6)
    batches = pescador.buffer_stream(streamer, 3)
    for x, y in pescador.tuples(batches, "X", "Y"):
        assert x.shape == (3, 1, 2) and y.shape == (3, 1)
    pairs = list(pescador.maps.keras_tuples(pescador.maps.buffer_stream(streamer.iterate(), 2), inputs="X", outputs="Y"))
    assert len(pairs) == 3 and pairs[0][0].shape == (2, 1, 2)
    only_x = next(pescador.maps.keras_tuples(streamer.iterate(), inputs="X"))
    assert only_x[1] is None and only_x[0].shape == (1, 2)
    with pytest.raises(pescador.DataError):
        list(pescador.maps.tuples(iter([1, 2]), "X"))


def test_a_string_streamer_yields_its_characters():
    assert list(pescador.Streamer("abc").iterate()) == ["a", "b", "c"]
