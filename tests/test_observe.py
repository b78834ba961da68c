"""Observers: MuxStats counts what each stream gave; Meter counts what passed."""

import gc
import itertools
import json
import pickle
import time

import numpy as np
import pytest

import pescador
from pescador import Meter, MuxStats, PescadorError, measure, stream, take
from pescador.mux import chain_mux, round_robin_mux, shuffled_mux, stochastic_mux


def constant(v):
    while True:
        yield {"v": np.array([v])}


def finite(tag, n):
    for i in range(n):
        yield {"v": np.array([tag]), "i": np.array([i])}


def raising(n):
    for i in range(n):
        yield {"v": np.array([i])}
    raise ValueError("broken")


def counts(items, size):
    return np.bincount([int(x["v"][0]) for x in items], minlength=size)


def test_mux_stats_count_every_item_and_activation():
    stats = MuxStats()
    pool = [stream(constant, v) for v in range(4)]
    out = list(take(20_000, pescador.mux(2, 16.0, weights=[4, 3, 2, 1], random_state=1, stats=stats)(pool)))
    np.testing.assert_array_equal(stats.items, counts(out, 4))
    assert stats.activations.sum() >= 20_000 / 16 / 2  # about 1250 activations of ~16 items
    np.testing.assert_allclose(stats.expected, [0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(stats.shares, stats.items / 20_000)
    assert "share" in str(stats) and "expected" in str(stats)


def test_mux_stats_are_current_during_a_run_and_reset_by_the_next():
    stats = MuxStats()
    recipe = pescador.mux(3, 8.0, random_state=0, stats=stats)([stream(constant, v) for v in range(3)])
    it = iter(recipe)
    seen = [next(it) for _ in range(1234)]
    np.testing.assert_array_equal(stats.items, counts(seen, 3))  # live activations included
    it.close()
    list(take(10, recipe))
    assert stats.items.sum() == 10


@pytest.mark.parametrize(
    "make",
    [
        lambda s: pescador.mux(2, None, with_replacement=False, random_state=0, stats=s),
        lambda s: stochastic_mux(2, None, mode="exhaustive", random_state=0, stats=s),
        lambda s: shuffled_mux(random_state=0, stats=s),
        lambda s: round_robin_mux(stats=s),
        lambda s: chain_mux(stats=s),
    ],
    ids=["mux", "stochastic", "shuffled", "round-robin", "chain"],
)
def test_every_mux_kind_reports_items_per_stream(make):
    stats = MuxStats()
    sizes = [5, 0, 9, 3]
    out = list(take(17, make(stats)([stream(finite, t, n) for t, n in enumerate(sizes)])))
    np.testing.assert_array_equal(stats.items, counts(out, 4))
    assert stats.items.sum() == 17


def test_stats_and_meters_are_checked_and_recipes_with_them_still_pickle():
    with pytest.raises(PescadorError, match="stats must be a pescador.MuxStats; got a dict"):
        pescador.mux(2, stats={})
    with pytest.raises(PescadorError, match="expected a pescador.Meter"):
        measure(MuxStats())
    recipe = measure(Meter())(pescador.mux(2, 4.0, random_state=0, stats=MuxStats())([stream(constant, 1)]))
    copy = pickle.loads(pickle.dumps(recipe))
    assert len(list(take(5, copy))) == 5


def test_meter_counts_items_and_bytes():
    meter = Meter()
    items = [{"X": np.zeros((8, 4), np.float32), "y": np.zeros(8, np.int64), "name": "a"}] * 100
    assert list(measure(meter)(items)) == items
    assert meter.items == 100 and meter.bytes == 100 * (128 + 64)
    assert meter.seconds > 0 and meter.items_per_second > 0
    line = str(meter)
    assert "100 items" in line and "items/s" in line and "MB/s" in line


def test_meter_is_readable_during_a_run_and_stops_its_clock_at_the_end():
    meter = Meter()
    it = iter(measure(meter)(stream(constant, 0)))
    for _ in range(50):
        next(it)
    assert meter.items == 50
    it.close()
    frozen = meter.seconds
    time.sleep(0.01)
    assert meter.seconds == frozen


# -- one MuxStats, two runs (issue 12) -------------------------------------------------------


def test_one_mux_stats_for_two_live_runs_is_refused_with_a_reason():
    stats = MuxStats()
    training = pescador.mux(2, 8.0, random_state=0, stats=stats)([stream(constant, v) for v in range(4)])
    validation = pescador.mux(1, 4.0, random_state=1, stats=stats)([stream(constant, 9)])
    train_it = iter(training)
    first = [next(train_it) for _ in range(100)]
    with pytest.raises(PescadorError, match="MuxStats.*already counting.*run.*own MuxStats"):
        next(iter(validation))
    more = [next(train_it) for _ in range(500)]  # the first run goes on, its counts intact
    np.testing.assert_array_equal(stats.items, counts(first + more, 4))
    train_it.close()
    assert len(list(take(7, validation))) == 7  # once the first run has ended, the observer is free
    assert stats.items.tolist() == [7]


def test_one_mux_stats_for_two_runs_of_the_same_recipe_at_once_is_refused():
    stats = MuxStats()
    recipe = pescador.mux(2, 8.0, random_state=0, stats=stats)([stream(constant, v) for v in range(3)])
    a = iter(recipe)
    next(a)
    with pytest.raises(PescadorError, match="already counting"):
        next(iter(recipe))
    del a
    assert len(list(take(3, recipe))) == 3


def test_one_mux_stats_used_by_runs_one_after_the_other_counts_each():
    stats = MuxStats()
    training = pescador.mux(2, 8.0, random_state=0, stats=stats)([stream(constant, v) for v in range(4)])
    validation = pescador.mux.round_robin_mux(stats=stats)([stream(finite, t, 3) for t in range(2)])
    for _ in range(3):
        assert len(list(take(50, training))) == 50
        assert stats.items.sum() == 50 and len(stats.items) == 4
        assert len(list(validation)) == 6
        assert stats.items.tolist() == [3, 3]


# -- measure is a stage: it resumes, and epoch_length looks through it ------------------------


def listed_items(n):
    return [{"X": np.full((2, 3), i, np.float32)} for i in range(n)]


@pytest.mark.parametrize("stop", [0, 1, 7, 20])
def test_measure_resumes_where_its_upstream_was_and_counts_the_resumed_run(stop):
    meter = Meter()
    recipe = take(15)(measure(meter)(stream(listed_items(20))))
    full = [int(x["X"][0, 0]) for x in recipe]
    assert full == [int(x["X"][0, 0]) for x in pescador.resumable(recipe)] == list(range(15))
    first = pescador.resumable(recipe)
    head = [int(x["X"][0, 0]) for x in itertools.islice(first, stop)]
    state = json.loads(json.dumps(first.state_dict()))
    if head:  # (a meter starts counting when its run asks for a first item)
        assert meter.items == len(head) and meter.bytes == 24 * len(head)
    rest = [int(x["X"][0, 0]) for x in pescador.resumable(recipe, state)]
    assert head + rest == full
    if rest:  # (each run starts its meter afresh)
        assert meter.items == len(rest) and meter.bytes == 24 * len(rest)


def test_epoch_length_looks_through_measure():
    assert pescador.epoch_length(measure(Meter())(stream(listed_items(9)))) == 9


def test_a_collected_run_stops_its_meters_clock():
    meter = Meter()
    it = iter(measure(meter)(stream(constant, 0)))
    next(it)
    del it
    gc.collect()
    frozen = meter.seconds
    time.sleep(0.01)
    assert meter.seconds == frozen and meter.items == 1


def test_a_meter_starts_at_the_first_item_asked_and_a_failing_upstream_stops_it():
    meter = Meter()
    it = iter(measure(meter)(stream(raising, 3)))
    assert meter.seconds == 0.0  # (not started: no item asked yet)
    assert len([next(it) for _ in range(3)]) == 3
    with pytest.raises(ValueError):
        next(it)
    frozen = meter.seconds
    time.sleep(0.01)
    assert meter.seconds == frozen and meter.items == 3
    with pytest.raises(StopIteration):  # (an ended run stays ended, as a generator does)
        next(it)
