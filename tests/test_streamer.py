"""The 1.0 Streamer facade, as the spec documents it, plus the 2.x/3.x names."""

import os
import pickle
import traceback

import numpy as np
import pytest

import pescador
from pescador import PescadorError, Streamer


def my_generator(n):
    for i in range(n):
        yield {"X": np.full((1, 3), i, dtype=float)}


def noisy_samples(X, Y, batch_size=16, sigma=1.0):
    """The spec's basic-usage generator."""
    n, d = X.shape
    while True:
        i = np.random.randint(0, n, size=batch_size)
        noise = sigma * np.random.randn(batch_size, d)
        yield dict(X=X[i] + noise, Y=Y[i])


def firsts(items):
    return [int(item["X"][0, 0]) for item in items]


def test_generate_restarts_and_bounds():
    GS = Streamer(my_generator, 5)
    assert firsts(GS.generate()) == [0, 1, 2, 3, 4]
    assert firsts(GS.generate()) == [0, 1, 2, 3, 4]
    assert firsts(GS.generate(max_batches=3)) == [0, 1, 2]
    assert firsts(GS.generate(max_batches=1e1)) == [0, 1, 2, 3, 4]


def test_call_forms_from_the_spec():
    GS = Streamer(my_generator, 5)
    assert firsts(GS()) == [0, 1, 2, 3, 4]
    assert firsts(GS(max_items=3)) == [0, 1, 2]  # the spec's docstring spelling
    assert firsts(GS(max_batches=2)) == [0, 1]
    assert firsts(GS(cycle=True, max_batches=7)) == [0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(PescadorError, match="not several"):
        GS(max_batches=1, max_items=1)


def test_cycle_and_3x_names():
    GS = Streamer(my_generator, 2)
    it = GS.cycle()
    assert firsts(next(it) for _ in range(5)) == [0, 1, 0, 1, 0]
    assert firsts(GS.cycle(max_iter=3)) == [0, 1, 0]
    assert firsts(GS.iterate(max_iter=1)) == [0]
    assert firsts(GS) == [0, 1]


def test_bad_max_batches():
    GS = Streamer(my_generator, 2)
    for bad in (-1, 2.5, "3"):
        with pytest.raises(PescadorError, match="max_batches"):
            list(GS(max_batches=bad))


def test_tuples():
    GS = Streamer(lambda_free_xy, 3)
    assert [(int(x), int(y)) for x, y in GS.tuples("X", "Y")] == [(0, 0), (1, -1), (2, -2)]
    assert len(list(GS.tuples("Y", cycle=True, max_batches=7))) == 7
    assert len(list(GS.tuples("Y", max_batches=2))) == 2
    with pytest.raises(PescadorError, match="at least one key"):
        GS.tuples()
    with pytest.raises(PescadorError, match="'Z'"):
        list(GS.tuples("Z"))


def lambda_free_xy(n):
    for i in range(n):
        yield {"X": i, "Y": -i}


def test_active_only_while_a_run_is_in_progress():
    GS = Streamer(my_generator, 3)
    assert not GS.active
    run = GS.generate()
    assert not GS.active  # nothing started yet
    next(run)
    assert GS.active
    list(run)
    assert not GS.active
    run = GS()
    next(run)
    run.close()  # stopping early ends the run too
    assert not GS.active
    GS.activate()
    assert GS.active
    GS.deactivate()
    assert not GS.active


def _frames(error):
    return [(frame.filename, frame.name) for frame in traceback.extract_tb(error.__traceback__)]


@pytest.mark.parametrize("run", ["generate", "iterate", "iter", "call"])
def test_a_streamers_run_of_a_generator_function_has_no_frame_of_pescador_per_item(run):
    """Streamer(gen)'s runs are the generator itself: an error in the source reaches the loop through no
    frame of pescador's (each such frame costs every item its time), and the run still counts as active."""

    def failing():
        yield {"X": 0}
        raise KeyError("in the source")

    s = Streamer(failing)
    started = {"generate": s.generate, "iterate": s.iterate, "iter": lambda: iter(s), "call": s}[run]()
    next(started)
    assert s.active == 1
    with pytest.raises(KeyError, match="in the source") as caught:
        next(started)
    assert not s.active
    frames = _frames(caught.value)
    assert frames[-1][1] == "failing" and not [f for f in frames if "pescador" + os.sep in f[0]], frames


def test_a_streamers_run_starts_nothing_before_its_first_item():
    """Whatever the recipe (a function that is not a generator function, a stage over it), generate() and
    cycle() call nothing before the first item is asked for, as 1.0's generator methods did."""
    calls = []

    def listing():
        calls.append(1)
        return [{"X": np.zeros((1, 2))}] * 4

    for s in (Streamer(listing), pescador.BufferedStreamer(listing, 2), Streamer(pescador.take(3, listing))):
        runs = [s.generate(), s.iterate(2), s.cycle(5), s(cycle=True), iter(s)]
        assert not calls and not s.active
        assert next(runs[2]) is not None and calls and s.active == 1
        for r in runs:
            r.close()
        assert not s.active
        calls.clear()


def test_streamer_pickles_with_no_run_in_progress():
    GS = Streamer(my_generator, 3)
    run = GS.generate()
    next(run)
    clone = pickle.loads(pickle.dumps(GS))
    assert not clone.active
    assert firsts(clone()) == [0, 1, 2]
    run.close()


def test_streamer_of_streamer_and_of_stream_and_of_list():
    inner = Streamer(my_generator, 2)
    assert firsts(Streamer(inner)()) == [0, 1]
    assert firsts(Streamer(pescador.stream(my_generator, 2))()) == [0, 1]
    items = [{"X": np.zeros((1, 3))}]
    assert len(list(Streamer(items)())) == 1


def test_arguments_given_with_a_collection_are_ignored_with_a_deprecation_warning():
    """pescador 1.x stored arguments given with a non-callable source and ignored them."""
    items = [{"X": np.zeros((1, 3))}, {"X": np.ones((1, 3))}]
    with pytest.warns(DeprecationWarning, match="ignores the arguments given with a list"):
        s = Streamer(items, 10, cycle=True)
    assert len(list(s())) == 2 and s.args == () and s.kwargs == {}
    with pytest.warns(DeprecationWarning, match="ndarray"):
        assert len(list(Streamer(np.zeros((3, 2)), 5)())) == 3
    with pytest.raises(PescadorError, match="arguments"):  # the functional API still refuses them
        pescador.stream(items, 10)


def test_attributes_and_repr():
    GS = Streamer(my_generator, 5)
    assert GS.streamer is my_generator and GS.generator is my_generator
    assert GS.args == (5,) and GS.kwargs == {}
    assert repr(GS) == "Streamer(stream(my_generator, 5))"
    assert GS.stream == pescador.stream(my_generator, 5)


def test_bad_source():
    with pytest.raises(PescadorError, match="int"):
        Streamer(3)


def test_spec_basic_usage():
    """The spec's "Basic usage" story on synthetic data."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    Y = (X[:, 0] > 0).astype(int)
    train = np.arange(120)
    streamer = pescador.Streamer(noisy_samples, X[train], Y[train])
    batch_stream2 = streamer.generate()
    batch = next(batch_stream2)
    assert batch["X"].shape == (16, 4) and batch["Y"].shape == (16,)
    batch_stream3 = streamer()
    assert next(batch_stream3)["X"].shape == (16, 4)
    assert len(list(streamer.generate(max_batches=10))) == 10
    batch_stream2.close()
    batch_stream3.close()
