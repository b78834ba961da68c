"""Checkpoint and resume: after a resume, the items equal the tail of an uninterrupted run."""

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pescador
from pescador import PescadorError, buffer, cycle, measure, resumable, stream, take, tuples
from pescador.mux import chain_mux, round_robin_mux, shuffled_mux, stochastic_mux
from pescador.resume import _sign
from states import edited


def counted(tag, n, rows=1):
    for i in range(n):
        yield {"x": np.full((rows, 2), tag * 1000 + i, dtype=np.int64)}


def listed(tag, n, rows=1):
    return stream([{"x": np.full((rows, 2), tag * 1000 + i, dtype=np.int64)} for i in range(n)])


def key(item):
    if isinstance(item, tuple):
        return tuple(tuple(np.asarray(v).ravel().tolist()) for v in item)
    return tuple(item["x"].ravel().tolist())


# -- random pipelines ----------------------------------------------------------------------

sources = st.builds(
    lambda kind, tag, n, rows: stream(counted, tag, n, rows) if kind else listed(tag, n, rows),
    st.booleans(), st.integers(0, 9), st.integers(0, 30), st.integers(1, 3),
)
seeds = st.integers(0, 2**32 - 1)
muxes = st.one_of(
    st.builds(lambda k, lam, seed, w: pescador.mux(k, lam, with_replacement=w, random_state=seed),
              st.integers(1, 3), st.one_of(st.none(), st.floats(1, 8)), seeds, st.booleans()),
    st.builds(lambda k, lam, seed: pescador.mux(k, lam, with_replacement=False, revive=True, random_state=seed),
              st.integers(1, 3), st.one_of(st.none(), st.floats(1, 8)), seeds),
    st.builds(lambda k, seed, mode: stochastic_mux(k, 4.0, mode=mode, random_state=seed),
              st.integers(1, 3), seeds, st.sampled_from(["with_replacement", "single_active", "exhaustive"])),
    st.builds(lambda seed: shuffled_mux(weights=None, random_state=seed), seeds),
    st.builds(lambda mode, seed: round_robin_mux(mode, random_state=seed),
              st.sampled_from(["exhaustive", "cycle", "permuted_cycle"]), seeds),
    st.builds(lambda mode, seed: chain_mux(mode, random_state=seed),
              st.sampled_from(["exhaustive", "cycle", "with_replacement"]), seeds),
    st.builds(lambda k, rate, dist, mode, seed: stochastic_mux(k, rate, mode=mode, dist=dist, random_state=seed),
              st.integers(1, 5), st.floats(0.5, 8), st.sampled_from(["binomial", "poisson", "constant"]),
              st.sampled_from(["with_replacement", "single_active", "exhaustive"]), seeds),
    st.builds(lambda n, k, seed: pescador.epochs(n, k=k, random_state=seed), st.integers(1, 3), st.integers(1, 3), seeds),
)


@st.composite
def pipelines(draw):
    pool = draw(st.lists(sources, min_size=1, max_size=4))
    recipe = draw(muxes)(pool)
    if draw(st.booleans()):
        recipe = buffer(draw(st.integers(1, 5)), strict=draw(st.booleans()))(recipe)
    if draw(st.booleans()):
        recipe = cycle(draw(st.integers(0, 150)))(take(draw(st.integers(1, 40)), recipe))
    recipe = take(draw(st.integers(0, 150)))(recipe)
    if draw(st.booleans()):
        recipe = measure(pescador.Meter())(recipe)
    if draw(st.booleans()):
        recipe = tuples("x")(recipe)
    return recipe


def run_keys(run):
    out = []
    try:
        for item in run:
            out.append(key(item))
    except PescadorError as exc:  # e.g. cycle over a run that yields nothing: part of the run too
        out.append(("error", str(exc)[:40]))
    return out


def advance(run, count, out):
    for _ in range(count):
        try:
            out.append(key(next(run)))
        except StopIteration:
            return
        except PescadorError as exc:  # (it ends the run: a state taken after it resumes to nothing)
            out.append(("error", str(exc)[:40]))
            return


@settings(max_examples=150, deadline=None)
@given(pipelines(), st.floats(0, 1), st.floats(0, 1))
def test_a_resumed_run_yields_the_tail_of_an_uninterrupted_one(recipe, where, again):
    full = run_keys(resumable(recipe))
    stop = int(where * len(full))
    first = resumable(recipe)
    head = []
    advance(first, stop, head)
    state = json.loads(json.dumps(first.state_dict()))  # a checkpoint on disk
    assert head + run_keys(resumable(recipe, state)) == full
    assert head + run_keys(resumable(recipe, state)) == full  # the same state serves twice
    # a resumed run checkpoints and resumes in turn
    second = resumable(recipe, state)
    middle = []
    advance(second, int(again * (len(full) - stop)), middle)
    state = json.loads(json.dumps(second.state_dict()))
    assert head + middle + run_keys(resumable(recipe, state)) == full


def test_a_buffer_resumes_in_the_middle_of_an_item_it_is_splitting():
    recipe = buffer(4)(stream(counted, 1, 10, 3))  # items of 3 rows into batches of 4
    run = resumable(recipe)
    first = next(run)  # rows 0,0,0,1: item 1 is half used
    state = run.state_dict()
    rest = state["stages"]["rest"]["x"]  # the two unused rows of item 1 travel in the state, exactly
    assert rest["shape"] == [2, 2] and rest["dtype"] == "<i8" and state["stages"]["up"] == {"pos": 2}
    resumed = [b["x"][:, 0].tolist() for b in resumable(recipe, state)]
    assert first["x"][:, 0].tolist() == [1000, 1000, 1000, 1001]
    assert resumed[0] == [1001, 1001, 1002, 1002]


def test_the_state_is_small_and_names_its_version():
    pool = [stream(counted, t, 10**6) for t in range(200)]
    run = resumable(buffer(64)(pescador.mux(8, 32.0, random_state=1)(pool)))
    for _ in range(1000):
        next(run)
    state = run.state_dict()
    assert state["pescador_state"] == pescador.resume.STATE_VERSION
    assert len(json.dumps(state)) < 8000  # eight live activations, the generator, the counters


def seekable(tag, n):
    for i in range(n):
        yield {"x": np.array([[tag, i]])}


def _seek(position, tag, n):
    _seek.calls.append(position)
    return ({"x": np.array([[tag, i]])} for i in range(position, n))


_seek.calls = []
seekable.pescador_seek = _seek


def test_a_source_may_seek_instead_of_replaying():
    recipe = stream(seekable, 3, 100)
    run = resumable(recipe)
    for _ in range(40):
        next(run)
    rest = [key(x) for x in resumable(recipe, run.state_dict())]
    assert _seek.calls == [40]
    assert rest == [(3, i) for i in range(40, 100)]


def test_states_that_do_not_match_are_refused_saying_what_differs():
    a = pescador.mux(2, 4.0, random_state=0)([listed(0, 5), listed(1, 5)])
    b = pescador.mux(2, 4.0, random_state=1)([listed(0, 5), listed(1, 5)])
    state = resumable(a).state_dict()
    with pytest.raises(PescadorError, match="same stages.*other arguments"):
        resumable(b, state)
    with pytest.raises(PescadorError, match="another pipeline.*\\['take', 'mux\\[2\\]'\\]"):
        resumable(take(3)(a), state)
    with pytest.raises(PescadorError, match="version 99"):
        resumable(a, dict(state, pescador_state=99))
    with pytest.raises(PescadorError, match="made by state_dict"):
        resumable(a, {"x": 1})


def test_what_cannot_resume_says_so():
    with pytest.raises(PescadorError, match="random_state Generator"):
        resumable(pescador.mux(2, 4.0, random_state=np.random.default_rng(0))([listed(0, 5)]))
    with pytest.raises(PescadorError, match="cache stage cannot be resumed"):
        resumable(pescador.cache(4, random_state=0)(listed(0, 5)))


def test_a_replayed_source_that_changed_is_detected():
    recipe = stream(counted, 0, 5)
    run = resumable(recipe)
    for _ in range(5):
        next(run)
    state = edited(run.state_dict(), ("pos",), 9)  # (past the source's end)
    with pytest.raises(PescadorError, match="not deterministic"):
        resumable(recipe, state)


# -- through zmq_offload ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_one_worker_resumes_exactly():
    pool = [stream(counted, t, 40, 2) for t in range(4)]
    recipe = take(60)(pescador.zmq_offload()(buffer(3)(pescador.mux(2, 5.0, random_state=4)(pool))))
    full = [key(x) for x in resumable(recipe)]
    first = resumable(recipe)
    head = [key(next(first)) for _ in range(25)]
    state = json.loads(json.dumps(first.state_dict()))
    del first  # (stops its worker)
    rest = [key(x) for x in resumable(recipe, state)]
    assert head + rest == full and len(full) == 60


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", [0, 17, 90])
def test_several_workers_each_continue_exactly(stop):
    pool = [stream(counted, t, 25) for t in range(6)]
    recipe = pescador.zmq_offload(workers=2)(pescador.epochs(2, k=2, random_state=8)(pool))
    by_source = lambda keys: {t: [k for k in keys if k[0] // 1000 == t] for t in range(6)}  # noqa: E731
    full = by_source([key(x) for x in resumable(recipe)])
    first = resumable(recipe)
    head = [key(next(first)) for _ in range(stop)]
    state = json.loads(json.dumps(first.state_dict()))
    del first
    rest = [key(x) for x in resumable(recipe, state)]
    assert {t: h + r for (t, h), r in zip(by_source(head).items(), by_source(rest).values())} == full
    assert sum(len(v) for v in full.values()) == 2 * 6 * 25


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", [1, 3, 7])
def test_a_buffer_after_several_workers_keeps_its_unused_rows_in_the_state(stop):
    pool = [stream(counted, t, 12, 3) for t in range(4)]  # items of 3 rows, batches of 4: most are split
    recipe = buffer(4)(pescador.zmq_offload(workers=2)(pescador.mux(2, None, with_replacement=False, random_state=2)(pool)))
    rows = lambda batches: [int(v) for b in batches for v in b["x"][:, 0]]  # noqa: E731
    per_source = lambda values: {t: [v for v in values if v // 1000 == t] for t in range(4)}  # noqa: E731
    first = resumable(recipe)
    head = [next(first) for _ in range(stop)]
    state = json.loads(json.dumps(first.state_dict()))
    del first
    rest = list(resumable(recipe, state))
    assert per_source(rows(head) + rows(rest)) == {t: [1000 * t + i for i in range(12) for _ in range(3)] for t in range(4)}


def test_unseeded_muxes_resume_as_the_run_would_have_gone_on():
    """random_state=None: the resumable run records the entropy it drew and how many seeds its stages took
    (muxes inside a mux are started again and again), so a resume draws exactly what the run drew on."""
    inner = [pescador.mux(2, 2.0)([listed(10 * j + t, 6) for t in range(3)]) for j in range(3)]
    recipe = take(150)(pescador.mux(2, 3.0)(inner))
    for cut in (0, 1, 40, 149, 150):
        run = resumable(recipe)
        head = [key(next(run)) for _ in range(cut)]
        state = json.loads(json.dumps(run.state_dict()))
        tail = [key(x) for x in run]
        assert len(head + tail) == 150
        assert [key(x) for x in resumable(recipe, state)] == tail, cut
        again = resumable(recipe, state)  # (a resumed run checkpoints in turn)
        middle = [key(next(again)) for _ in range(min(9, len(tail)))]
        assert middle + [key(x) for x in resumable(recipe, json.loads(json.dumps(again.state_dict())))] == tail
    assert len(list(recipe)) == 150  # (a plain run draws from entropy, as asked)


def by_worker(tag):
    """Endless items drawn from the worker's own seed, as docs/parallel.rst shows: worker, tag, a draw."""
    info = pescador.worker_info()
    rng = np.random.default_rng(info.seed)
    while True:
        yield {"x": np.array([[info.id, tag, int(rng.integers(1 << 40))]])}


def per_worker(keys):
    return {w: [k for k in keys if k[0] == w] for w in {k[0] for k in keys}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_sources_seeded_by_their_worker_resume_as_the_run_would_have_gone_on(workers):
    """zmq_offload with random_state=None: the consumer records the entropy its workers' seeds come from,
    so a resumed run's workers draw what they drew on (a source seeded by worker_info().seed, and a mux
    with random_state=None in the worker)."""
    for inner in (stream(by_worker, 7), pescador.mux(2, 3.0)([stream(by_worker, t) for t in range(3)])):
        recipe = pescador.zmq_offload(workers=workers, timeout=10)(take(150)(inner))  # (150 items a worker)
        run = resumable(recipe)
        head = [key(next(run)) for _ in range(25)]
        state = json.loads(json.dumps(run.state_dict()))
        tail = [key(x) for x in run]
        resumed = [key(x) for x in resumable(recipe, state)]
        if workers == 1:
            assert resumed == tail
        else:  # (the workers' items interleave as they arrive: each worker's continue exactly)
            assert per_worker(head + resumed) == per_worker(head + tail)
        assert len(head + tail) == 150 * workers


# -- what a state may not make a run do --------------------------------------------------------


def endless(tag=0):
    i = 0
    while True:
        yield {"x": np.full((1, 2), tag * 1000 + i, dtype=np.int64)}
        i += 1


@pytest.mark.timeout(60)
def test_a_replay_is_bounded_by_what_the_stages_around_it_allow():
    """A count re-signed far beyond what the run can have drawn is refused at once, naming the field,
    not replayed (an endless source would replay for ever)."""
    cases = [
        (take(10)(stream(endless)), 3, ("up", "pos"), "field 'pos' must be an integer from 0 to 3"),
        (take(10)(tuples("x")(stream(endless))), 3, ("up", "up", "pos"), "field 'pos' must be an integer from 0 to 3"),
        (take(10)(tuples("x")(stream(endless))), 3, ("up", "pos"), "field 'pos' must be an integer from 0 to 3"),
        (cycle(50)(take(4)(stream(endless))), 6, ("up", "up", "pos"), "field 'pos' must be an integer from 0 to 2"),
        (take(10)(measure(pescador.Meter())(stream(endless))), 3, ("up", "pos"), "from 0 to 3"),
    ]
    for recipe, cut, path, message in cases:
        run = resumable(recipe)
        for _ in range(cut):
            next(run)
        with pytest.raises(PescadorError, match=message):
            resumable(recipe, edited(run.state_dict(), path, 10**12))
    # a live stream of a mux can have given what its slot says, and a run of lam=None what the mux gave
    for lam in (4.0, None):
        recipe = take(30)(pescador.mux(2, lam, random_state=1)([take(10**9)(stream(endless, t)) for t in range(3)]))
        run = resumable(recipe)
        for _ in range(5):
            next(run)
        saved = run.state_dict()
        slot = saved["stages"]["up"]["slots"][0]
        with pytest.raises(PescadorError, match="field 'count' must be an integer from 0 to"):
            resumable(recipe, edited(saved, ("up", "slots", 0, 3, "count"), 10**12))
        if lam is None:
            with pytest.raises(PescadorError, match="field 'left' must be an integer from -6"):
                resumable(recipe, edited(saved, ("up", "slots", 0, 1), -10**12))
        assert slot[3]["count"] <= 5


def test_a_null_state_for_a_stage_in_a_mux_is_refused():
    """A null state would start that stage's run again, silently (as start_from refuses a null upstream)."""
    recipe = pescador.mux(2, 3.0, random_state=1)([take(50)(stream(endless)), take(50)(stream(endless, 1))])
    run = resumable(recipe)
    for _ in range(4):
        next(run)
    saved = run.state_dict()
    for i in range(len(saved["stages"]["slots"])):
        with pytest.raises(PescadorError, match=f"the run of stream {saved['stages']['slots'][i][0]} is a stage's run"):
            resumable(recipe, edited(saved, ("slots", i, 3), None))


@pytest.mark.parametrize("field, value, message", [
    ("dtype", "|S200000000", r"field 'layout\['x'\].dtype' is \|S200000000, elements of 200000000 bytes"),
    ("trail", [2**40], "field 'layout' describes batches of .* more than this machine's memory"),
])
def test_a_buffer_layout_that_no_batch_could_hold_is_refused(field, value, message):
    from pescador.buffered import _digest

    recipe = take(10)(buffer(4)(stream(endless)))
    run = resumable(recipe)
    next(run)
    saved = run.state_dict()
    own = saved["stages"]["up"]
    own["layout"]["x"][field] = value
    own["digest"] = _digest(4, True, {k: own[k] for k in ("pos", "done", "layout", "rest")})  # (re-signed too)
    with pytest.raises(PescadorError, match=message):
        next(resumable(recipe, edited(saved, ("up",), own)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("depth", [300, 500, 990, 5000])
def test_a_state_nested_at_any_depth_is_a_pescador_error(depth):
    recipe = take(10)(stream(endless))
    run = resumable(recipe)
    next(run)
    saved = run.state_dict()
    deep: list = []
    for _ in range(depth):
        deep = [deep]
    state = copy.deepcopy(saved)
    state["stages"]["up"]["pos"] = deep
    try:
        state["check"] = _sign(state)  # (re-signed where signing can: deliberately)
    except RecursionError:
        pass
    with pytest.raises(PescadorError, match="nests deeper than|field 'pos' must be an integer"):
        resumable(recipe, state)


def test_muxes_that_draw_nothing_need_no_seed():
    pool = [listed(0, 4), listed(1, 6)]
    for recipe in (chain_mux()(pool), round_robin_mux()(pool), round_robin_mux("cycle")(pool)):
        run = resumable(take(7)(recipe))
        head = [key(next(run)) for _ in range(3)]
        rest = [key(x) for x in resumable(take(7)(recipe), run.state_dict())]
        assert head + rest == [key(x) for x in take(7)(recipe)]


def strings(word, n):
    for i in range(n):
        yield f"{word}{i}"


def pool_of_streams(n):
    for t in range(n):
        yield stream(strings, "abcd"[t], t + 2)


def pool_of_iterators(n):
    for t in range(n):
        yield strings("wxyz"[t], 3)


@pytest.mark.parametrize("kind", ["mux", "stochastic", "lazy-chain", "lazy-chain-cycle", "lazy-chain-iterators"])
def test_a_resumable_mux_carries_any_items_and_resumes_exactly(kind):
    pool = ["abc", [1, (2, 3), None], stream(strings, "s", 5)]
    recipe = take(30, {
        "mux": pescador.mux(2, 2.0, random_state=0)(pool),
        "stochastic": stochastic_mux(2, 3.0, weights=[1, 2, 3], mode="single_active", random_state=1)(pool),
        "lazy-chain": chain_mux()(stream(pool_of_streams, 3)),
        "lazy-chain-cycle": chain_mux("cycle")(stream(pool_of_streams, 2)),
        "lazy-chain-iterators": chain_mux("cycle")(stream(pool_of_iterators, 3)),
    }[kind])
    whole = list(resumable(recipe))
    assert len(whole) == (9 if kind == "lazy-chain" else 30)
    if kind.startswith("lazy"):
        assert whole == list(recipe)  # (a chain draws nothing: the plain run is the same)
    for cut in range(len(whole)):
        run = resumable(recipe)
        head = [next(run) for _ in range(cut)]
        state = json.loads(json.dumps(run.state_dict()))
        assert head + list(resumable(recipe, state)) == whole


FINGERPRINT = """
import functools, sys
sys.path.insert(0, {tests!r})
import pescador, test_resume
from pescador._fingerprint import fingerprint as _fingerprint
class Config:
    def __init__(self):
        self.size = 3
recipe = pescador.mux(2, 4.0, random_state=1)([
    pescador.stream(test_resume.tagged_by, {{"b", "a", "c"}}, Config()),
    pescador.stream(functools.partial(test_resume.counted, 5), 3),
])
print(_fingerprint(recipe))
"""


def tagged_by(tags, config):
    for tag in sorted(tags):
        yield {"x": np.full((1, 2), config.size)}


def test_fingerprints_are_the_same_in_another_process():
    import subprocess
    import sys

    code = FINGERPRINT.format(tests=str(__import__("pathlib").Path(__file__).parent))
    prints = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=dict(__import__("os").environ, PYTHONHASHSEED=str(seed))).stdout
              for seed in (1, 2, 3)}
    assert len(prints) == 1
