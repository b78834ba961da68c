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


# -- rows, history, series (issue 17) --------------------------------------------------------


def test_meter_counts_rows_the_first_dimension_of_each_items_first_array():
    meter = Meter()
    items = [{"X": np.zeros((8, 4)), "y": np.zeros(8)}, {"s": np.float32(1), "X": np.zeros((3, 2))},
             {"v": np.array(2.0)}, {"name": "no arrays"}, {"X": np.zeros((0, 5))}]
    assert list(measure(meter)(items)) == items
    assert meter.items == 5 and meter.rows == 8 + 3 + 1 + 1 + 0 == 13  # (no array with a dimension: one row)
    assert meter.rows_per_second > 0
    assert "5 items (13 rows)" in str(meter) and "rows/s" in str(meter)


def test_meter_series_is_bounded_and_ends_with_the_totals():
    meter = Meter(interval=1e-9, samples=4)  # (sample at every look at the clock: the bound must hold)
    list(measure(meter)([{"X": np.zeros((2, 1))}] * 5000))
    series = meter.series
    assert series.shape[1] == 4 and 2 <= len(series) <= 5
    assert series[-1, 1:].tolist() == [5000, 10000, 5000 * 16]
    assert np.all(np.diff(series[:, 0]) >= 0) and np.all(np.diff(series[:, 1]) >= 0)
    with pytest.raises(PescadorError, match="interval must be a number of seconds > 0"):
        Meter(interval=0)
    with pytest.raises(PescadorError, match="samples must be an integer >= 2"):
        Meter(samples=1)


def test_mux_stats_history_records_each_ended_activation_within_its_bound():
    full, short = MuxStats(history=100_000), MuxStats(history=3)
    pool = [stream(finite, t, 50) for t in range(6)]
    for stats in (full, short):
        out = list(pescador.mux(2, 8.0, with_replacement=False, random_state=3, stats=stats)(pool))
        assert len(out) == 6 * 8 or len(out) <= 300
    history = full.history
    assert len(history) == full.activations.sum()
    per_stream = np.zeros(6, dtype=int)
    for a in history:
        per_stream[a.stream] += a.items
        assert 0 <= a.start <= a.stop and a.items <= a.stop - a.start and a.worker == 0
    np.testing.assert_array_equal(per_stream, full.items)
    assert short.history == history[-3:]
    with pytest.raises(PescadorError, match="history must be an integer >= 0"):
        MuxStats(history=-1)


def test_mux_stats_live_lists_the_streams_of_the_live_activations():
    stats = MuxStats()
    it = iter(pescador.mux(3, 1000.0, random_state=0, stats=stats)([stream(constant, v) for v in range(5)]))
    given = [next(it) for _ in range(20)]
    assert len(stats.live) == 3 and set(stats.live.tolist()) <= set(range(5))
    it.close()  # the live activations end with the run: they join the history, their items stay counted
    assert len(stats.live) == 0 and len(stats.history) == 3
    np.testing.assert_array_equal(stats.items, counts(given, 5))
    assert sum(a.items for a in stats.history) == 20 and all(a.stop == 20 for a in stats.history)


# -- progress --------------------------------------------------------------------------------


def test_progress_text_fallback_without_tqdm(monkeypatch):
    import io
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # (import tqdm.auto fails as if it were not installed)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    stats, out = MuxStats(), io.StringIO()
    recipe = take(300)(pescador.mux(2, 8.0, random_state=0, stats=stats)([stream(constant, v) for v in range(4)]))
    got = list(pescador.progress(recipe, 300, stats, file=out, interval=1e-9))
    assert len(got) == 300
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2  # (updates, then the final line)
    last = lines[-1]
    assert last.startswith("300/300 items (100%), ") and "items/s" in last
    live = len(stats.live)  # (the run has ended: no live activation)
    assert f"live {live}/4, top: " in last
    with pytest.raises(PescadorError, match="use_tqdm=True, but tqdm cannot be imported"):
        next(pescador.progress(recipe, use_tqdm=True))


def test_progress_shows_rows_for_batches_and_finds_no_total_for_an_endless_recipe(monkeypatch):
    import io

    out = io.StringIO()
    known = stream([{"v": np.array([i])} for i in range(7)])  # (a list: its length is known)
    list(pescador.progress(take(5, known), file=out, use_tqdm=False))
    assert out.getvalue().startswith("5/5 items (100%), ")
    out = io.StringIO()
    list(pescador.progress(take(7)(stream(constant, 1)), file=out, use_tqdm=False))  # (a generator: unknown)
    assert out.getvalue().startswith("7 items, ")
    out = io.StringIO()
    rows = [{"X": np.zeros((4, 2))}] * 3
    list(pescador.progress(rows, file=out, use_tqdm=False))
    assert out.getvalue().startswith("3 items, ") and "rows/s" in out.getvalue()
    with pytest.raises(PescadorError, match="total must be None or an integer"):
        pescador.progress(rows, total=-1)


class FakeTqdm:
    """Stands in for tqdm.auto.tqdm: records what progress asks of it."""

    made = []

    def __init__(self, **kwargs):
        self.kwargs, self.n, self.postfix, self.closed = kwargs, 0, None, False
        FakeTqdm.made.append(self)

    def update(self, n):
        self.n += n

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        self.closed = True


def test_progress_uses_tqdm_auto_where_installed(monkeypatch):
    import sys
    import types

    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    stats = MuxStats()
    recipe = pescador.mux(2, None, with_replacement=False, random_state=0, stats=stats)(
        [stream([{"v": np.array([t])}] * 10) for t in range(3)])
    got = list(pescador.progress(recipe, stats=stats, desc="train"))
    bar = FakeTqdm.made[-1]
    assert len(got) == 30 and bar.n == 30 and bar.closed
    assert bar.kwargs["total"] == 30 and bar.kwargs["desc"] == "train"  # (the total from the recipe)
    assert bar.postfix.startswith("live 0/3, top: ")


def test_import_pescador_imports_neither_tqdm_nor_matplotlib():
    import subprocess
    import sys

    code = "import sys, pescador; print(sorted(m for m in ('tqdm', 'matplotlib') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# -- plots -----------------------------------------------------------------------------------


def test_plots_draw_from_a_real_run_and_return_the_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats, meter = MuxStats(), Meter(interval=1e-4)
    recipe = measure(meter)(take(3000)(pescador.mux(2, 16.0, weights=[3, 2, 1], random_state=0, stats=stats)(
        [stream(constant, v) for v in range(3)])))
    list(recipe)
    fig = stats.plot()
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    sources, shares = fig.axes
    bars = sum(len(c.get_paths()) for c in sources.collections)
    assert bars == len(stats.history) > 0  # (one bar per activation)
    assert [round(bar.get_height(), 6) for bar in shares.containers[0]] == [round(s, 6) for s in stats.shares]
    fig2, ax = plt.subplots()
    assert stats.plot("shares", ax=ax) is fig2
    assert isinstance(meter.plot(), matplotlib.figure.Figure)
    assert isinstance(meter.plot("rows"), matplotlib.figure.Figure)
    assert Meter().plot().axes[0].get_xlabel() == "seconds since the run started"  # (nothing measured yet)
    with pytest.raises(PescadorError, match="kind must be 'both', 'sources' or 'shares'"):
        stats.plot("pie")
    with pytest.raises(PescadorError, match="what must be 'items', 'rows' or 'megabytes'"):
        meter.plot("pies")
    plt.close("all")


def test_the_table_of_a_large_pool_shows_the_top_and_a_summary():
    stats = MuxStats()
    pool = [stream(finite, t, 1 + t % 7) for t in range(40)]
    out = list(pescador.mux.chain_mux(stats=stats)(pool))
    full = stats.table(top=None).splitlines()
    assert len(full) == 41 and [int(line.split()[0]) for line in full[1:]] == list(range(40))  # pool order
    top = stats.table(top=3).splitlines()
    assert [int(line.split()[1].replace(",", "")) for line in top[1:4]] == [7, 7, 7]  # most items first
    assert f"37 more streams: {len(out) - 21:,} items" in top[4]
    assert top[5].startswith(f"40 streams, {len(out):,} items in 40 activations")
    assert str(stats) == stats.table(top=10)  # (more than 20 streams)
    small = MuxStats()
    list(pescador.mux.chain_mux(stats=small)(pool[:20]))
    assert str(small) == small.table(top=None)
    for bad in (-1, 2.5, "3"):
        with pytest.raises(PescadorError, match="MuxStats.table: top must be an integer >= 0"):
            stats.table(top=bad)


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(PescadorError, match="MuxStats.plot: plotting needs matplotlib.*pip install matplotlib"):
        MuxStats().plot()
    with pytest.raises(PescadorError, match="Meter.plot: plotting needs matplotlib"):
        Meter().plot()
