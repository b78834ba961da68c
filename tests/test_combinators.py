"""map, filter, shuffle, unbatch, padded_batch, bucket and prefetch: what each promises.

The contract every stage keeps (plain = resumable, resumes at any cut, fields
checked, closing closes the sources) is in tests/test_stages.py; here: each
stage's behaviour (hypothesis properties where one exists), its errors,
pickling into zmq_offload workers (ray_offload: tests/ray_cases.py), the
class facades, and exact resumes in a new process.
"""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import toolz
from hypothesis import given, settings
from hypothesis import strategies as st

import pescador
from pescador import DataError, ParameterError, ParameterTypeError, PescadorError, resumable, stream
from states import edited

HERE = os.path.dirname(os.path.abspath(__file__))


def key(item):
    return [[k, list(np.shape(item[k])), np.asarray(item[k]).ravel().tolist()] for k in sorted(item)]


def keys(run):
    return [key(item) for item in run]


def numbered(n, rows=1):
    for i in range(n):
        yield {"x": np.full((rows, 2), i, dtype=np.int64), "i": np.array([i] * rows)}


def clips(lengths, features=2):
    for i, t in enumerate(lengths):
        yield {"audio": np.full((t, features), i + 1, dtype=np.float32), "label": i}


def numbered_from(position, n, rows=1):  # (numbered's seek: a resume that draws only what it replays)
    for i in range(position, n):
        yield {"x": np.full((rows, 2), i, dtype=np.int64), "i": np.array([i] * rows)}


def twice(item):
    return {"x": item["x"] * 2, "i": item["i"]}


def odd(item):
    return bool(item["i"][0] % 2)


def fails_at(bad):
    def fn(item):
        if int(item["i"][0]) == bad:
            raise KeyError(f"no label for {bad}")
        return item
    return fn


# ----------------------------------------------------------------------------
# map and filter
# ----------------------------------------------------------------------------


def test_map_applies_fn_to_each_item_in_order_and_epoch_length_looks_through_it():
    items = [{"v": v} for v in range(5)]
    recipe = pescador.map(lambda item: {"v": item["v"] * 10}, items)
    assert [x["v"] for x in recipe] == [0, 10, 20, 30, 40] == [x["v"] for x in resumable(recipe)]
    assert pescador.epoch_length(recipe) == 5
    assert list(pescador.map(dict, items)) == items  # (a class is a function of the item too)
    assert pescador.epoch_length(pescador.filter(lambda item: True, items)) is None  # (unknown without running)


@settings(max_examples=30)
@given(st.lists(st.integers(-50, 50), max_size=40))
def test_filter_keeps_exactly_the_items_pred_accepts_in_order(values):
    items = [{"v": v} for v in values]
    recipe = pescador.filter(lambda item: item["v"] % 3 == 0, items)
    assert [x["v"] for x in recipe] == [v for v in values if v % 3 == 0] == [x["v"] for x in resumable(recipe)]


@pytest.mark.parametrize("where, make", [("map", lambda fn: pescador.map(fn)),
                                         ("filter", lambda fn: pescador.filter(lambda item: fn(item) is item))])
@pytest.mark.parametrize("run", [iter, resumable])
@pytest.mark.parametrize("bad", [0, 3, 255, 256, 600])
def test_a_functions_exception_keeps_its_type_and_names_the_item_and_the_stage(where, make, run, bad):
    recipe = make(fails_at(bad))(stream(numbered, 700))
    got = []
    it = run(recipe)
    with pytest.raises(KeyError, match=f"no label for {bad}") as raised:
        for item in it:
            got.append(int(item["i"][0]))
    assert got == list(range(bad))
    notes = getattr(raised.value, "__notes__", [])
    assert any(f"{where}: " in note and f"on item {bad} " in note for note in notes), notes
    if run is iter:  # a plain run is over once an exception has escaped it
        assert list(it) == []


@pytest.mark.parametrize("run", [iter, resumable])
def test_stop_iteration_from_fn_is_an_error_not_the_end_of_the_run(run):
    def ends(item):
        raise StopIteration

    with pytest.raises(RuntimeError, match=r"map: \S*ends raised StopIteration on item 0; a function given to a stage must return a value"):
        list(run(pescador.map(ends, stream(numbered, 3))))


def test_a_functions_exception_reaches_the_consumer_through_a_worker():
    pytest.importorskip("zmq")
    recipe = pescador.zmq_offload(timeout=30)(pescador.map(fails_at(2))(stream(numbered, 6)))
    with pytest.raises(KeyError) as raised:
        list(recipe)
    assert any("on item 2" in note for note in getattr(raised.value, "__notes__", []))


# ----------------------------------------------------------------------------
# shuffle
# ----------------------------------------------------------------------------


@settings(max_examples=60)
@given(st.integers(0, 120), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_shuffle_is_a_permutation_within_the_buffers_reach(n, size, seed):
    out = [x["v"] for x in pescador.shuffle(size, [{"v": v} for v in range(n)], random_state=seed)]
    assert sorted(out) == list(range(n))
    assert all(v <= place + size for place, v in enumerate(out))  # (no item comes from beyond the buffer)


def test_a_buffer_of_one_keeps_the_order_and_a_seed_repeats():
    items = [{"v": v} for v in range(20)]
    assert [x["v"] for x in pescador.shuffle(1, items, random_state=3)] == list(range(20))
    seeded = pescador.shuffle(8, items, random_state=4)
    assert [x["v"] for x in seeded] == [x["v"] for x in seeded] != list(range(20))
    unseeded = pescador.shuffle(20, items)
    assert [x["v"] for x in unseeded] != [x["v"] for x in unseeded]  # (fresh entropy each run: 1 in 20! alike)


def test_a_buffer_as_large_as_the_stream_gives_every_order_alike():
    items = [{"v": v} for v in range(3)]
    counts: dict = {}
    for seed in range(1200):
        order = tuple(x["v"] for x in pescador.shuffle(3, items, random_state=seed))
        counts[order] = counts.get(order, 0) + 1
    assert len(counts) == 6 and all(140 <= c <= 260 for c in counts.values()), counts


def test_an_unseeded_shuffle_resumes_from_the_seed_its_run_recorded():
    recipe = pescador.shuffle(4, [{"v": i} for i in range(40)])
    run = resumable(recipe)
    head = [next(run)["v"] for _ in range(15)]
    saved = json.loads(json.dumps(run.state_dict()))
    tail = [x["v"] for x in run]
    assert sorted(head + tail) == list(range(40))
    assert [x["v"] for x in resumable(recipe, saved)] == tail


def test_a_shuffle_with_a_generator_is_refused_by_a_resumable_run_saying_why():
    with pytest.raises(PescadorError, match=r"shuffle\(size=4, random_state=Generator.*int random_state"):
        resumable(pescador.shuffle(4, [{"v": 1}], random_state=np.random.default_rng(0)))


REPLAYING = {"shuffle": lambda: pescador.shuffle(8, random_state=0), "bucket": lambda: pescador.bucket([2], 3),
             "unbatch": pescador.unbatch}


@pytest.mark.parametrize("offload", [pescador.zmq_offload, pescador.ray_offload])
@pytest.mark.parametrize("name", sorted(REPLAYING))
def test_a_stage_that_resumes_by_replay_is_refused_over_several_workers_saying_why(name, offload):
    # Several workers' items interleave as their timing says: a replay from an earlier state would draw
    # other items (the reviewer's runs lost and repeated them), so resumable() refuses it at once.
    several = toolz.pipe(stream(numbered, 40), offload(workers=2), pescador.map(dict), REPLAYING[name]())
    with pytest.raises(PescadorError, match=rf"resumable: {name}\(.*its upstream holds {offload.__name__}\(workers=2\)"
                                            rf".* lose and repeat items.*Put {name} before {offload.__name__}"):
        resumable(several)
    # ... but not before the offload (it runs in each worker), over one worker, or a stage that does not replay
    for fine in (toolz.pipe(stream(numbered, 40), REPLAYING[name](), offload(workers=2)),
                 toolz.pipe(stream(numbered, 40), offload(workers=1), REPLAYING[name]()),
                 toolz.pipe(stream(numbered, 40), offload(workers=2), pescador.prefetch(2), pescador.padded_batch(2))):
        resumable(fine)  # (nothing starts before the first item)


def test_a_shuffles_state_holds_no_item_and_a_resume_replays_only_since_the_buffers_oldest_item():
    def big(n):
        for i in range(n):
            yield {"x": np.full(100_000, i, dtype=np.float64)}  # (800 kB an item)

    recipe = pescador.shuffle(20, stream(big, 300), random_state=5)
    run = resumable(recipe)
    head = [int(next(run)["x"][0]) for _ in range(150)]
    saved = json.dumps(run.state_dict())
    assert len(saved) < 4000
    tail = [int(x["x"][0]) for x in resumable(recipe, json.loads(saved))]
    assert sorted(head + tail) == list(range(300))


def test_shuffle_random_state_none_in_plain_runs_of_two_workers_gives_every_item_once():
    pytest.importorskip("zmq")

    recipe = pescador.zmq_offload(workers=2, timeout=30)(pescador.shuffle(5)(stream(sharded_numbers, 40)))
    assert sorted(int(x["i"][0]) for x in recipe) == list(range(40))


def sharded_numbers(n):
    info = pescador.worker_info()
    for i in range(info.id, n, info.count):
        yield {"i": np.array([i])}


# ----------------------------------------------------------------------------
# unbatch
# ----------------------------------------------------------------------------


@settings(max_examples=40)
@given(st.lists(st.integers(0, 9), max_size=12), st.integers(1, 7))
def test_unbatch_then_buffer_gives_the_same_rows_in_order(row_counts, n):
    batches, start = [], 0
    for r in row_counts:
        batches.append({"x": np.arange(start, start + r).reshape(r, 1) * np.ones((1, 3), int),
                        "y": np.arange(start, start + r)})
        start += r
    rows = list(pescador.unbatch(batches))
    assert len(rows) == start and all(row["x"].shape == (1, 3) and row["y"].shape == (1,) for row in rows)
    again = list(pescador.buffer(n, pescador.unbatch(batches), strict=False))
    assert np.concatenate([b["y"] for b in again]).tolist() == list(range(start)) if start else again == []
    assert all((b["x"] == b["y"][:, None]).all() for b in again)


def test_rows_are_views_of_the_batch():
    batch = {"x": np.arange(12).reshape(4, 3), "y": [1, 2, 3, 4]}  # (a list becomes an array first)
    rows = list(pescador.unbatch([batch]))
    assert all(np.shares_memory(row["x"], batch["x"]) for row in rows)
    assert [row["y"].tolist() for row in rows] == [[1], [2], [3], [4]]


@pytest.mark.parametrize("bad, message", [
    ([{"x": np.zeros((2, 1))}, 7], r"DataError: unbatch: item 1 is a int \(7\); expected a dict"),
    ([{"x": np.zeros((2, 1))}, {"x": 3.0}], r"unbatch: item 1, key 'x': got a 0-d value"),
    ([{"x": np.zeros((2, 1)), "y": np.zeros(3)}], r"unbatch: item 0: its arrays disagree on the number of rows "
                                                  r"\(\{'x': 2, 'y': 3\}\)"),
    ([{"x": np.zeros((2, 1))}, {}], r"unbatch: item 1 is an empty dict"),
    ([{"x": [object(), object()]}], r"unbatch: item 0, key 'x': got .* \(a list\); expected an array"),
])
@pytest.mark.parametrize("run", [iter, resumable])
def test_unbatch_names_a_bad_item_and_its_position(bad, message, run):
    with pytest.raises(DataError, match=message.replace("DataError: ", "")):
        list(run(pescador.unbatch(stream(bad))))


# ----------------------------------------------------------------------------
# padded_batch and bucket
# ----------------------------------------------------------------------------


def _check_padded(batch, items, pad_value=0):
    """Every item of ``batch`` (in order) is ``items``' data, then the padding value; the lengths are right."""
    lengths = batch["audio_lengths"].tolist()
    assert lengths == [len(item["audio"]) for item in items]
    assert batch["audio"].shape == (len(items), max(lengths), 2)
    for row, item in zip(batch["audio"], items):
        assert (row[: len(item["audio"])] == item["audio"]).all()
        assert (row[len(item["audio"]):] == pad_value).all()
    assert batch["label"].tolist() == [item["label"] for item in items]


@settings(max_examples=40)
@given(st.lists(st.integers(0, 9), max_size=25), st.integers(1, 6), st.booleans())
def test_padding_keeps_every_row_and_the_lengths_are_right(lengths, n, strict):
    items = list(clips(lengths))
    batches = list(pescador.padded_batch(n, items, pad={"audio": -1.5}, strict=strict))
    whole = len(items) // n if strict else -(-len(items) // n)
    assert len(batches) == whole
    for b, batch in enumerate(batches):
        _check_padded(batch, items[b * n : (b + 1) * n], -1.5)


def test_a_fixed_length_pads_every_batch_to_it_and_refuses_a_longer_item():
    batches = list(pescador.padded_batch(2, list(clips([3, 1, 4, 2])), length=6))
    assert [b["audio"].shape for b in batches] == [(2, 6, 2), (2, 6, 2)]
    with pytest.raises(DataError, match=r"padded_batch: item 2, key 'audio': 7 long, longer than length=6; raise "
                                        r"length, or cut long items before \(pescador.map\)"):
        list(pescador.padded_batch(2, list(clips([3, 1, 7])), length=6))


def test_padded_batch_takes_safe_casts_and_names_the_lengths_key_as_asked():
    items = [{"x": np.ones((2, 3), np.int32)}, {"x": np.ones((1, 3), np.int16)}]
    (batch,) = pescador.padded_batch(2, items, pad="x", lengths="n_frames")
    assert batch["x"].dtype == np.int32 and batch["n_frames"].tolist() == [2, 1]
    (batch,) = pescador.padded_batch(2, items, lengths=None)
    assert list(batch) == ["x"]


@pytest.mark.parametrize("items, params, message", [
    ([{"x": np.ones((2, 3))}, {"x": np.ones((2, 4))}], {}, r"item 1, key 'x': shape \(2, 4\) does not match "
                                                          r"\(length, 3\), the layout of the first item"),
    ([{"x": np.ones((2, 3))}, {"x": np.ones((2, 3), np.complex64)}], {}, r"item 1, key 'x': dtype complex64 "
                                                                        r"cannot be stored safely in float64"),
    ([{"x": np.ones((2, 3))}], {"pad": "y"}, r"item 0 has no key 'y' to pad"),
    ([{"x": np.ones((2, 3)), "x_lengths": np.ones(2)}], {"pad": "x"}, r"the lengths key 'x_lengths'"),
    ([{"x": np.ones((2, 3), np.uint8)}], {"pad": {"x": -100}}, r"the padding value -100 of key 'x' does not fit "
                                                               r"its dtype uint8"),
    ([{"x": np.ones((2, 3)), "path": "a.wav"}], {"pad": "x"}, r"item 0, key 'path': got 'a.wav' \(a str\); a "
                                                              r"batch holds arrays of numbers"),
    ([{"x": np.ones((2, 3)), "y": np.ones(2)}, {"x": np.ones((2, 3)), "y": np.ones(3)}], {"pad": "x"},
     r"item 1, key 'y': shape \(3,\) differs from the first item's \(2,\); a key that is not padded must keep "
     r"its shape"),
    ([{"x": np.ones((2, 3))}, [1]], {}, r"item 1 is a list"),
])
def test_padded_batch_names_a_bad_item_its_key_and_the_fix(items, params, message):
    for run in (iter, resumable):
        with pytest.raises(DataError, match="padded_batch: " + message):
            list(run(pescador.padded_batch(2, stream(items), strict=False, **params)))


def test_epoch_length_of_padded_batches():
    items = [{"x": np.ones(1)}] * 10
    assert pescador.epoch_length(pescador.padded_batch(3, items)) == 3
    assert pescador.epoch_length(pescador.padded_batch(3, items, strict=False)) == 4


@settings(max_examples=40)
@given(st.lists(st.integers(0, 30), max_size=40), st.lists(st.integers(1, 30), min_size=1, max_size=3, unique=True),
       st.integers(1, 4), st.booleans())
def test_bucket_batches_items_of_one_bucket_each_item_once_in_order(lengths, bounds, n, strict):
    bounds = sorted(bounds)
    items = list(clips(lengths))
    batches = list(pescador.bucket(bounds, n, items, strict=strict))
    seen = []
    for batch in batches:
        labels = batch["label"].tolist()
        group = {int(np.searchsorted(bounds, lengths[i], side="right")) for i in labels}
        assert len(group) == 1  # (one bucket per batch)
        assert labels == sorted(labels)  # (a bucket keeps the order of its items)
        _check_padded(batch, [items[i] for i in labels])
        seen += labels
    assert len(seen) == len(set(seen))
    per_bucket = [sum(1 for t in lengths if int(np.searchsorted(bounds, t, side="right")) == b)
                  for b in range(len(bounds) + 1)]
    assert len(seen) == (sum(c - c % n for c in per_bucket) if strict else len(items))


def test_bucket_by_a_key_or_a_function_and_batch_sizes_per_bucket():
    items = [{"a": np.ones((t, 1)), "b": np.ones((10 - t, 1))} for t in (1, 2, 8, 9, 1, 3)]
    by_b = [batch["b_lengths"].tolist() for batch in pescador.bucket([5], [2, 3], items, by="b", strict=False)]
    assert by_b == [[2, 1], [9, 8, 9], [7]]
    by_fn = [batch["a_lengths"].tolist() for batch in pescador.bucket([5], 2, items, by=lambda x: len(x["a"]))]
    assert by_fn == [[1, 2], [8, 9], [1, 3]]
    with pytest.raises(DataError, match=r"bucket: item 0: by=\S*<lambda> returned 'long'; expected a length"):
        list(pescador.bucket([5], 2, items, by=lambda x: "long"))


# ----------------------------------------------------------------------------
# Bad parameters: refused when the step is built, saying what and the fix
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("build, kind, message", [
    (lambda: pescador.map(3), ParameterTypeError, r"map: fn must be a function of one item; got 3"),
    (lambda: pescador.map([{"x": 1}], twice), ParameterTypeError, r"map: fn .* the function comes first: map\(fn, "
                                                                  r"source\)"),
    (lambda: pescador.filter("x"), ParameterTypeError, r"filter: pred must be a function of one item; got 'x'"),
    (lambda: pescador.map(stream(numbered, 3), twice), ParameterTypeError, r"map: fn must be a function of one "
                                                                          r"item; got stream\(numbered, 3\); the "
                                                                          r"function comes first"),
    (lambda: pescador.shuffle(0), ParameterError, r"shuffle: size must be an integer from 1 to 2,147,483,647; got 0"),
    (lambda: pescador.shuffle(10**30), ParameterError, r"shuffle: size must be an integer from 1 to 2,147,483,647; got 1"),
    (lambda: pescador.shuffle(2.0), ParameterTypeError, r"shuffle: size must be an integer .*; got 2.0"),
    (lambda: pescador.shuffle(2.5), ParameterTypeError, r"shuffle: size must be an integer .*; got 2.5"),
    (lambda: pescador.shuffle([3, 1, 2]), ParameterTypeError, r"shuffle: size .* to shuffle a list in place, use "
                                                              "random.shuffle"),
    (lambda: pescador.shuffle(10, random_state="x"), ParameterTypeError, r"shuffle: random_state must be None"),
    (lambda: pescador.padded_batch(0), ParameterError, r"padded_batch: n must be an integer from 1 to .*; got 0"),
    (lambda: pescador.padded_batch(10**30), ParameterError, r"padded_batch: n must be an integer from 1 to 2,147,4"),
    (lambda: pescador.padded_batch(4.0), ParameterTypeError, r"padded_batch: n must be an integer .*; got 4.0"),
    (lambda: pescador.padded_batch(4, pad=3), ParameterTypeError, r"padded_batch: pad must be None, a key, a list"),
    (lambda: pescador.padded_batch(4, pad={"x": "zero"}), ParameterTypeError, r"pad\['x'\] must be a number"),
    (lambda: pescador.padded_batch(4, pad={}), ParameterError, r"padded_batch: pad is empty"),
    (lambda: pescador.padded_batch(4, length=0), ParameterError, r"padded_batch: length must be an integer from 1 "),
    (lambda: pescador.padded_batch(4, length=2**40), ParameterError, r"padded_batch: length must be an integer from 1 "),
    (lambda: pescador.padded_batch(4, lengths="n"), ParameterError, r"padded_batch: lengths='n' names one key, but "
                                                                    r"every array key is padded .*put '\{key\}' in it"),
    (lambda: pescador.padded_batch(4, strict=None), ParameterTypeError, r"padded_batch: strict must be True or False"),
    (lambda: pescador.bucket([], 4), ParameterTypeError, r"bucket: boundaries must be a non-empty list"),
    (lambda: pescador.bucket([5, 5], 4), ParameterError, r"bucket: boundaries must increase; got \[5, 5\]"),
    (lambda: pescador.bucket([5, 9], [4, 2]), ParameterError, r"bucket: n has 2 batch sizes for 3 buckets"),
    (lambda: pescador.bucket([2.5], 4), ParameterTypeError, r"bucket: each boundary must be an integer .*; got 2.5"),
    (lambda: pescador.bucket([5], [4, 10**30]), ParameterError, r"bucket: each batch size in n must be an integer "
                                                                r"from 1 to 2,147,483,647"),
    (lambda: pescador.bucket([5], 4.0), ParameterTypeError, r"bucket: n must be an integer .*; got 4.0"),
    (lambda: pescador.bucket([5], 4, by=3), ParameterTypeError, r"bucket: by must be None, a key or a function"),
    (lambda: pescador.prefetch(0), ParameterError, r"prefetch: n must be an integer from 1 to .*; got 0"),
    (lambda: pescador.prefetch(10**30), ParameterError, r"prefetch: n must be an integer from 1 to 2,147,483,647"),
    (lambda: pescador.prefetch(np.int64(3)), None, "prefetch(n=3)"),
    (lambda: pescador.shuffle(np.int64(3)), None, "shuffle(size=3)"),
])
def test_bad_parameters_are_refused_when_the_step_is_built(build, kind, message):
    if kind is None:  # (a numpy integer is an integer)
        assert repr(build()) == message
        return
    with pytest.raises(kind, match=message):
        build()


def test_configured_steps_print_their_parameters():
    assert [repr(step) for step in (pescador.map(twice), pescador.filter(odd), pescador.shuffle(100, random_state=1),
                                    pescador.unbatch(), pescador.padded_batch(8, pad="x", length=50),
                                    pescador.bucket([10, 20], 4), pescador.prefetch(2))] == [
        "map(fn=twice)", "filter(pred=odd)", "shuffle(size=100, random_state=1)", "unbatch()",
        "padded_batch(n=8, pad={'x': 0}, length=50)", "bucket(boundaries=(10, 20), n=(4, 4, 4))", "prefetch(n=2)"]
    assert "0x" not in repr(pescador.map(lambda item: item))


def endless_rows():
    i = 0
    while True:
        yield {"x": np.full((1, 2), i)}
        i += 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stage, edits, message", [
    (pescador.shuffle(4, random_state=0), {"drawn": 10**5 + 4, "given": 10**5},
     r"shuffle\(size=4, random_state=0\): field 'drawn' must be an integer from \d+ to 9;"),
    (pescador.shuffle(4, random_state=0), {"at": 10**5, ("up", "pos"): 10**5, "drawn": 10**5 + 4, "given": 10**5},
     r"shuffle\(size=4, random_state=0\): field 'at' must be an integer from 0 to 9;"),
    (pescador.shuffle(4, random_state=0), {("up", "pos"): 10**5}, r"field 'pos' must be an integer from 0 to \d;"),
    (pescador.padded_batch(3), {"pos": 10**5, ("up", "pos"): 10**5},
     r"padded_batch\(n=3\): field 'pos' must be an integer from 0 to 15;"),
    (pescador.padded_batch(3), {("up", "pos"): 10**5}, r"field 'pos' must be an integer from 0 to 15;"),
    (pescador.bucket([5], 2), {"at": 10**5, ("up", "pos"): 10**5, "drawn": 10**5 + 1},
     r"bucket\(boundaries=\[5\]\): field 'at' must be an integer from 0 to 14;"),
    (pescador.bucket([5], 2), {"drawn": 10**5}, r"bucket\(boundaries=\[5\]\): field 'drawn' must be an integer from \d+ to 14;"),
])
def test_a_count_edited_beyond_what_the_run_can_have_drawn_is_refused_not_replayed(stage, edits, message):
    # Under take(10), cut after 5 items: the stage can have given 5, and drawn what they and what it holds
    # took; an edited, re-signed state that says more is refused by the field's name (not replayed from an
    # endless source), and the stage passes its upstream the most it can have drawn.
    recipe = pescador.take(10, stage(stream(endless_rows)))
    run = resumable(recipe)
    for _ in range(5):
        next(run)
    state = run.state_dict()
    for path, value in edits.items():
        state = edited(state, ("up",) + (path if isinstance(path, tuple) else (path,)), value)
    with pytest.raises(PescadorError, match=message):
        next(resumable(recipe, state))


# ----------------------------------------------------------------------------
# prefetch
# ----------------------------------------------------------------------------

OPENED: list = []
CLOSED: list = []


def watched(n, wait=0.0, release=None):
    OPENED.append(1)
    try:
        for i in range(n):
            if release is not None and i == 1:
                release.wait(30)  # (a read that does not return)
            time.sleep(wait)
            yield {"i": np.array([i])}
    finally:
        CLOSED.append(1)


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "pescador prefetch"]


def test_a_resumable_prefetch_takes_its_upstreams_state_now_and_then_and_resumes_exactly():
    """Over a source that replays exactly, the state travels with some items only: the stage's state is the
    last one given and the count of items since, and a resume drops those items again."""
    recipe = pescador.prefetch(8)(stream(numbered, 20_000))
    run = resumable(recipe)
    head, skips = [], []
    for n in range(1, 12_346):
        head.append(int(next(run)["i"][0]))
        if n % 1_000 == 0:
            skips.append(run.state_dict()["stages"]["skip"])
    state = json.loads(json.dumps(run.state_dict()))
    del run  # (its thread ends with it)
    assert max(skips) > 0  # (a state at least every 4,096 items, about every 10 ms: not one per item)
    assert all(0 <= skip < 4_096 for skip in skips + [state["stages"]["skip"]])
    tail = [int(x["i"][0]) for x in resumable(recipe, state)]
    assert head + tail == list(range(20_000))


@pytest.mark.timeout(60)
def test_a_prefetch_over_an_offload_of_several_workers_keeps_each_items_state():
    """An offload of two workers does not give the same items again from a state (its workers take turns
    as their timing says): there every item carries its state, and a resume drops nothing."""
    recipe = pescador.prefetch(4)(pescador.zmq_offload(workers=2, random_state=3)(stream(numbered, 3_000)))
    run = resumable(recipe)
    head = [int(next(run)["i"][0]) for _ in range(1_000)]
    state = json.loads(json.dumps(run.state_dict()))
    del run  # (its thread ends with it)
    assert state["stages"]["skip"] == 0
    tail = [int(x["i"][0]) for x in resumable(recipe, state)]
    assert sorted(head + tail) == sorted(list(range(3_000)) * 2)


def test_prefetch_keeps_the_order_and_an_error_comes_after_the_items_before_it():
    assert [int(x["i"][0]) for x in pescador.prefetch(3, stream(numbered, 50))] == list(range(50))
    got = []
    with pytest.raises(KeyError, match="no label for 7"):
        for x in pescador.prefetch(2, pescador.map(fails_at(7), stream(numbered, 20))):
            got.append(int(x["i"][0]))
    assert got == list(range(7))
    assert prefetch_threads() == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", ["close", "drop"])
def test_an_early_stop_closes_the_source_and_leaves_no_thread(stop):
    del OPENED[:], CLOSED[:]
    run = iter(pescador.prefetch(2, stream(watched, 1000)))
    next(run)
    time.sleep(0.05)  # (the thread fills the queue, and waits for room; the test holds without that too)
    if stop == "close":
        run.close()
    else:
        del run
        gc.collect()
    assert CLOSED == [1] and prefetch_threads() == []


@pytest.mark.timeout(40)
def test_a_source_blocked_in_io_is_not_waited_on_for_ever():
    del OPENED[:], CLOSED[:]
    release = threading.Event()
    run = iter(pescador.prefetch(2, stream(watched, 5, 0.0, release)))
    next(run)
    t0 = time.monotonic()
    run.close()
    assert time.monotonic() - t0 < 15  # (it waits about a second; generous for a loaded machine)
    assert CLOSED == []  # (the read has not returned: the thread still waits in it)
    release.set()
    for _ in range(300):
        if CLOSED and not prefetch_threads():
            break
        time.sleep(0.05)
    assert CLOSED == [1] and prefetch_threads() == []  # (once it returns, the thread closes the source and ends)


_CTRL_C = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np, pescador
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job inherits SIGINT ignored)

    def source():
        try:
            for i in range(10_000):
                yield {"i": np.array([i])}
        finally:
            print("source closed", flush=True)

    run = iter(pescador.prefetch(4, pescador.stream(source)))
    next(run)
    time.sleep(0.3)  # (the thread has filled the queue and waits for room)
    print("interrupting", flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the run is held, never closed
    time.sleep(10)
""")


@pytest.mark.timeout(60)
def test_ctrl_c_in_the_consumer_while_the_thread_waits_for_room_closes_the_source():
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the process did not end after Ctrl-C")
    assert "KeyboardInterrupt" in err
    assert out.splitlines() == ["interrupting", "source closed"], (out, err)


_STALLED_OFFLOAD = textwrap.dedent("""
    import gc, multiprocessing, os, signal, sys, threading, time
    import numpy as np, pescador
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job inherits SIGINT ignored)

    def source():
        for i in range(3):
            yield {"i": np.array([i])}
        time.sleep(40)  # a read that stalls, in the workers
        yield {"i": np.array([99])}

    def gone_after(stop):
        run = iter(pescador.prefetch(2, pescador.zmq_offload(workers=2, timeout=1)(pescador.stream(source))))
        for _ in range(6):
            next(run)
        if stop == "ctrl-c":
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                next(run)
            except KeyboardInterrupt:
                pass
        elif stop == "close":
            run.close()
        else:
            del run
            gc.collect()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20 and (multiprocessing.active_children() or
                                              any(t.name == "pescador prefetch" for t in threading.enumerate())):
            time.sleep(0.05)
        return "%s: %s workers, %s threads" % (stop, len(multiprocessing.active_children()),
                                                 sum(t.name == "pescador prefetch" for t in threading.enumerate()))

    print(gone_after(sys.argv[1]), flush=True)
    os._exit(0)  # (without the fix, a thread stays blocked)
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", ["ctrl-c", "close", "drop"])
def test_stopping_a_prefetch_over_a_stalled_offload_ends_its_workers(stop):
    # The thread waits in zmq_offload's receive while the workers' source stalls: a stop interrupts that
    # wait, so the offload's run ends (its workers stop within its timeout), as it does without prefetch.
    proc = subprocess.Popen([sys.executable, "-c", _STALLED_OFFLOAD, stop], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=50)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the process did not end")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # (any worker left behind)
        except ProcessLookupError:
            pass
    assert out.splitlines() == [f"{stop}: 0 workers, 0 threads"], (out, err)


def test_runs_in_consumer_threads_each_get_every_item():
    recipe = pescador.prefetch(3, stream(numbered, 200))
    results: dict = {}

    def consume(name):
        results[name] = [int(x["i"][0]) for x in recipe]

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {k: list(range(200)) for k in range(4)}
    run = iter(recipe)  # a run started in one thread and read in another
    head = [int(next(run)["i"][0])]
    other = threading.Thread(target=lambda: head.extend(int(x["i"][0]) for x in run))
    other.start()
    other.join(60)
    assert head == list(range(200))


# ----------------------------------------------------------------------------
# Workers, facades, and resuming in a new process
# ----------------------------------------------------------------------------


def all_of_them():
    """Every new stage in one pipeline."""
    rows = pescador.unbatch(pescador.buffer(3, stream(numbered, 40, 2)))
    mixed = pescador.shuffle(7, pescador.filter(odd, pescador.map(twice, rows)), random_state=0)
    ragged = pescador.map(ragged_x, mixed)
    branches = [pescador.bucket([2], [3, 2], ragged, pad="x", strict=False), pescador.padded_batch(2, ragged, pad="x")]
    return pescador.prefetch(2, pescador.mux.chain_mux()(branches))


def ragged_x(item):
    return {"x": np.ones((1 + int(item["i"][0]) % 4, 2)), "i": item["i"]}


@pytest.mark.timeout(90)
def test_the_stages_travel_into_a_worker_and_resume_through_it():
    pytest.importorskip("zmq")
    plain = keys(all_of_them())
    offloaded = pescador.zmq_offload(timeout=30)(all_of_them())
    assert keys(offloaded) == plain
    run = resumable(offloaded)
    head = keys([next(run) for _ in range(len(plain) // 2)])
    state = json.loads(json.dumps(run.state_dict()))
    del run
    assert head + keys(resumable(offloaded, state)) == plain


def test_the_class_facades_run_the_new_stages_and_feed_them():
    recipe = pescador.shuffle(4, random_state=1)(pescador.Streamer(numbered, 12))
    assert keys(pescador.Streamer(recipe).iterate()) == keys(recipe)
    assert keys(pescador.Streamer(recipe)(max_batches=5)) == keys(recipe)[:5]
    muxed = pescador.map(twice)(pescador.Mux([pescador.Streamer(numbered, 5), pescador.Streamer(numbered, 5)], 2,
                                             None, with_replacement=False, random_state=2))
    assert sorted(int(x["x"][0, 0]) for x in muxed) == sorted(2 * v for v in list(range(5)) * 2)


RESUMED = {
    "map": lambda: pescador.map(twice, stream(numbered, 30)),
    "filter": lambda: pescador.filter(odd, stream(numbered, 30)),
    "shuffle": lambda: pescador.shuffle(6, stream(numbered, 40), random_state=7),
    "unbatch": lambda: pescador.unbatch(pescador.buffer(4, stream(numbered, 30, 3))),
    "padded_batch": lambda: pescador.padded_batch(3, stream(clips, [4, 1, 3, 0, 6, 2, 5, 5, 1, 2, 7]),
                                                  strict=False),
    "bucket": lambda: pescador.bucket([2, 4], 2, stream(clips, [4, 1, 3, 0, 6, 2, 5, 5, 1, 2, 7, 1, 3]),
                                      strict=False),
    "prefetch": lambda: pescador.prefetch(3, stream(numbered, 30)),
    "all": all_of_them,
}


def resume_here(states: dict) -> dict:
    """(In the new process) the rest of each run, from its saved state."""
    return {name: keys(resumable(RESUMED[name](), state)) for name, state in states.items()}


@pytest.mark.timeout(90)
def test_head_and_a_tail_resumed_in_a_new_process_are_the_uninterrupted_run():
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    plains, heads, states = {}, {}, {}
    for name, make in RESUMED.items():
        plains[name] = keys(make())
        cut = rng.randint(0, len(plains[name]))
        run = resumable(make())
        heads[name] = [key(next(run)) for _ in range(cut)]
        states[name] = run.state_dict()
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_combinators as t; "
            "print(json.dumps(t.resume_here(json.load(sys.stdin))))")
    proc = subprocess.run([sys.executable, "-c", code, HERE], input=json.dumps(states), capture_output=True, text=True,
                          timeout=80, start_new_session=True)
    assert proc.returncode == 0, proc.stderr
    tails = json.loads(proc.stdout)
    for name in RESUMED:
        assert heads[name] + tails[name] == plains[name], (name, len(heads[name]), seed)
