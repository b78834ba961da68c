"""The stage contract, applied to every public stage: one implementation for plain and resumable runs.

For each stage: building the recipe runs nothing (lazy); two runs are equal
(restartable); a pickled copy runs the same items; the repr is readable (no
memory address); a resumable run yields exactly the items of a plain run;
a run stopped at any point and resumed from its state (through JSON) yields
the rest of an uninterrupted run.  Then: states whose fields do not fit are
refused with a PescadorError naming the field, never another exception,
other data or a long run; and a user's own stage written to the protocol
resumes like a built-in.
"""

from __future__ import annotations

import copy
import json
import pickle
import types
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pescador
from pescador import PescadorError, resumable, stream
from pescador.mux import chain_mux, round_robin_mux, shuffled_mux, stochastic_mux
from pescador.stage import Stage, check_fields, check_int
from states import DELETE, edited, places

CALLS = []  # the generator sources started, by tag
ENDED = []  # ... and those whose run ended (its finally ran)


def counted(tag, n, rows=1):
    CALLS.append(tag)
    try:
        for i in range(n):
            yield {"x": np.full((rows, 2), tag * 1000 + i, dtype=np.int64)}
    finally:
        ENDED.append(tag)


def listed(tag, n, rows=1):
    return stream([{"x": np.full((rows, 2), tag * 1000 + i, dtype=np.int64)} for i in range(n)])


def files(n):
    for t in range(n):
        yield stream(counted, 50 + t, 3 + t)


def key(item):
    if isinstance(item, tuple):
        return tuple(None if v is None else tuple(np.asarray(v).ravel().tolist()) for v in item)
    return tuple((k, np.shape(item[k]), tuple(np.asarray(item[k]).ravel().tolist())) for k in sorted(item))


def varying(tag, n):
    """Items of varying length (the first axis of "x"), for the padding stages."""
    CALLS.append(tag)
    try:
        for i in range(n):
            yield {"x": np.full((1 + (i * 7 + tag) % 6, 2), tag * 1000 + i, dtype=np.int64), "i": i}
    finally:
        ENDED.append(tag)


def doubled_x(item):
    return {"x": item["x"] * 2}


def odd_x(item):
    return bool(item["x"][0, 0] % 2)


def pool(n=4, length=12, rows=1):
    return [stream(counted, t, length, rows) if t % 2 else listed(t, length, rows) for t in range(n)]


class Shift(Stage):
    """A user's stage written to the protocol (module level: it pickles)."""

    one_to_one = True

    def __init__(self, upstream, by, state=None):
        self.by, self.seen = by, 0
        if state is not None:
            check_fields(state, ("seen", "up"), "shift")
            self.seen = check_int(state, "seen", "shift", 0)
        self.up = self.start_upstream(upstream, state)

    def __next__(self):
        item = next(self.up)
        self.seen += 1
        return {"x": item["x"] + self.by}

    def state(self):
        return {"seen": self.seen, "up": self.up.state()}


def shift(by):
    return pescador.Transform("shift", Shift, {"by": by})


# Every public stage, as a small seeded recipe with a finite run.
STAGES = {
    "list": lambda: listed(1, 9),
    "generator": lambda: stream(counted, 2, 9),
    "take": lambda: pescador.take(7, stream(counted, 3, 20)),
    "cycle": lambda: pescador.cycle(23, listed(1, 5)),
    "tuples": lambda: pescador.tuples("x")(listed(1, 6)),
    "keras_tuples": lambda: pescador.keras_tuples("x", None)(listed(1, 6)),
    "buffer": lambda: pescador.buffer(4)(stream(counted, 1, 10, 3)),
    "buffer-loose": lambda: pescador.buffer(4, strict=False)(stream(counted, 1, 10, 3)),
    "mux": lambda: pescador.take(60, pescador.mux(2, 3.0, random_state=1)(pool())),
    "mux-weighted": lambda: pescador.take(60, pescador.mux(2, 3.0, weights=[1, 2, 3, 4], random_state=2)(pool())),
    "mux-once": lambda: pescador.mux(2, None, with_replacement=False, random_state=3)(pool()),
    "mux-revive": lambda: pescador.take(60, pescador.mux(2, 4.0, with_replacement=False, revive=True,
                                                         random_state=4)(pool())),
    "mux-lam-none": lambda: pescador.take(60, pescador.mux(3, None, weights=[1, 0, 2, 5], random_state=5)(pool())),
    "stochastic": lambda: pescador.take(60, stochastic_mux(2, 4.0, weights=[3, 1, 1, 2], random_state=6)(pool())),
    "stochastic-single": lambda: pescador.take(60, stochastic_mux(2, 4.0, mode="single_active",
                                                                  random_state=7)(pool())),
    "stochastic-exhaustive": lambda: stochastic_mux(3, 2.0, mode="exhaustive", random_state=8)(pool()),
    "shuffled": lambda: pescador.take(60, shuffled_mux(weights=[1, 2, 3, 4], random_state=9)(pool())),
    "round_robin": lambda: round_robin_mux()(pool()),
    "round_robin-permuted": lambda: pescador.take(70, round_robin_mux("permuted_cycle", random_state=10)(pool())),
    "chain": lambda: chain_mux()(pool()),
    "chain-random": lambda: pescador.take(40, chain_mux("with_replacement", random_state=11)(pool())),
    "chain-lazy": lambda: pescador.take(30, chain_mux("cycle")(stream(files, 3))),
    "epochs": lambda: pescador.epochs(2, k=2, random_state=12)(pool(3, 5)),
    "measure": lambda: pescador.measure(pescador.Meter())(listed(1, 6)),
    "user-stage": lambda: pescador.take(40, shift(100)(pescador.mux(2, 2.0, random_state=13)(pool(3, 6)))),
    "deep": lambda: pescador.tuples("x")(pescador.take(25, pescador.buffer(3)(
        pescador.mux(3, 2.0, random_state=14)(pool(5, 9, 2))))),
    "map": lambda: pescador.map(doubled_x)(pescador.take(30, pescador.mux(2, 3.0, random_state=15)(pool(3, 8)))),
    "filter": lambda: pescador.filter(odd_x)(pescador.take(30, pescador.mux(2, 3.0, random_state=16)(pool(3, 8)))),
    "shuffle": lambda: pescador.shuffle(5, random_state=17)(pescador.take(30, pescador.mux(2, 3.0, random_state=18)(
        pool(3, 9)))),
    "shuffle-large": lambda: pescador.shuffle(40, random_state=19)(stream(counted, 4, 70)),
    "unbatch": lambda: pescador.unbatch()(pescador.buffer(4)(stream(counted, 5, 9, 3))),
    "padded_batch": lambda: pescador.padded_batch(3)(stream(varying, 6, 14)),
    "padded_batch-loose": lambda: pescador.padded_batch(4, pad={"x": -1}, strict=False)(stream(varying, 7, 14)),
    "bucket": lambda: pescador.bucket([3, 5], [2, 3, 2], strict=False)(pescador.mux(2, None, with_replacement=False,
                                                                                      random_state=20)(
        [stream(varying, t, 12) for t in (8, 9)])),
    "prefetch": lambda: pescador.prefetch(3)(pescador.take(30, pescador.mux(2, 3.0, random_state=21)(pool(3, 8)))),
}


def items(run):
    return [key(item) for item in run]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_contract(name):
    recipe = STAGES[name]()
    # lazy: building (above) ran no source; restartable: two runs are equal
    del CALLS[:]
    built = STAGES[name]()
    assert CALLS == []
    plain = items(built)
    assert plain and items(built) == plain
    # picklable, with a readable repr
    assert items(pickle.loads(pickle.dumps(recipe))) == plain
    assert "0x" not in repr(recipe)
    # one implementation: a resumable run is the plain run
    assert items(resumable(recipe)) == plain
    # stopped anywhere and resumed through JSON: the rest of the run
    for cut in sorted({0, 1, len(plain) // 3, len(plain) // 2, len(plain) - 1, len(plain)}):
        run = resumable(recipe)
        head = [key(next(run)) for _ in range(cut)]
        state = json.loads(json.dumps(run.state_dict()))
        assert head + items(resumable(recipe, state)) == plain, cut
        assert head + items(resumable(recipe, copy.deepcopy(state))) == plain  # a state serves twice


# the stages whose recipe above runs a generator source
GENERATED = sorted(set(STAGES) - {"list", "cycle", "tuples", "keras_tuples", "measure"})


@pytest.mark.parametrize("name", GENERATED)
def test_closing_a_plain_run_closes_its_sources(name):
    """A run stopped early and closed runs its sources' finally blocks at once (no garbage collection
    needed: no reference cycle keeps them)."""
    run = iter(STAGES[name]())
    del CALLS[:], ENDED[:]
    while len(CALLS) == len(ENDED):  # (until a generator source is under way)
        next(run)
    run.close()
    assert sorted(ENDED) == sorted(CALLS)


@pytest.mark.parametrize("name", sorted(set(STAGES) - {"list"}))
def test_a_plain_run_is_a_generator(name):
    """Keras takes generators and no other iterator; so does 3.x code that calls a recipe's iterate()."""
    recipe = STAGES[name]()
    assert all(isinstance(run, types.GeneratorType) for run in (iter(recipe), recipe.iterate(), recipe.iterate(3),
                                                                 recipe.cycle(3)))


def failing(n, bad):
    for i in range(n):
        if i == bad:
            raise KeyError(f"bad record {i}")
        yield {"x": np.full((1, 2), i, dtype=np.int64)}


FAILING = {  # a plain run of each, whose source raises at its fourth item
    "take": lambda s: pescador.take(50, s),
    "cycle": lambda s: pescador.cycle(None, s),
    "tuples": lambda s: pescador.tuples("x")(s),
    "buffer": lambda s: pescador.buffer(2)(s),
    "mux": lambda s: pescador.mux(2, 3.0, random_state=0)([s, listed(1, 30)]),
    "take of cycle": lambda s: pescador.take(50, pescador.cycle(None, s)),
    "map": lambda s: pescador.map(doubled_x)(s),
    "filter": lambda s: pescador.filter(odd_x)(s),
    "shuffle": lambda s: pescador.shuffle(2, random_state=0)(s),
    "unbatch": lambda s: pescador.unbatch()(s),
    "padded_batch": lambda s: pescador.padded_batch(1)(s),
    "bucket": lambda s: pescador.bucket([2], 1)(s),
    "prefetch": lambda s: pescador.prefetch(2)(s),
}


@pytest.mark.parametrize("name", sorted(FAILING))
def test_a_plain_run_is_over_once_an_exception_has_escaped_it(name):
    run = iter(FAILING[name](stream(failing, 10, 3)))
    with pytest.raises(KeyError, match="bad record 3"):
        for _ in range(60):
            next(run)
    assert list(run) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(STAGES)), st.floats(0, 1), st.floats(0, 1))
def test_a_resumed_run_checkpoints_and_resumes_in_turn(name, first, second):
    recipe = STAGES[name]()
    plain = items(recipe)
    a = int(first * len(plain))
    run = resumable(recipe)
    head = [key(next(run)) for _ in range(a)]
    run = resumable(recipe, json.loads(json.dumps(run.state_dict())))
    middle = [key(next(run)) for _ in range(int(second * (len(plain) - a)))]
    rest = items(resumable(recipe, json.loads(json.dumps(run.state_dict()))))
    assert head + middle + rest == plain


# -- states that do not fit ------------------------------------------------------------------------


def _mutations(value):
    """Changes that make a field wrong: out of range, of another type, or gone.  (Below -1: -1 is a valid
    value of some fields, a round-robin's rotation before its first slot.  Not null: it is a valid
    value of some fields, a block of draws not under way; changes to valid values are the envelope's
    check's to refuse: test_a_changed_state_that_was_not_re_signed_is_refused.)"""
    out = ["drop", ("set", "seven"), ("set", [value]), ("set", {"x": value})]
    if isinstance(value, bool):
        out += [("set", 1), ("set", "true")]
    elif isinstance(value, int):
        huge = value + 10**12 if abs(value) < 2**62 else 10**40  # (a generator's 128-bit words: beyond them)
        out += [("set", -2 - abs(value)), ("set", huge), ("set", float(value) + 0.5), ("set", True)]
    elif isinstance(value, list):
        out += [("set", [["not", "an", "entry"]] * max(1, len(value)))]
    elif isinstance(value, dict):
        out += [("extra", "surprise")]
    return out


def _apply(saved, path, mutation):
    """``saved`` with the field at ``path`` changed by ``mutation``, signed again."""
    if mutation == "drop":
        return edited(saved, path, DELETE)
    kind, value = mutation
    if kind == "extra":
        value = dict(dict(places(saved["stages"]))[path], surprise=1)
    return edited(saved, path, value)


MUTATED = ["take", "cycle", "buffer", "buffer-loose", "mux", "mux-weighted", "mux-once", "mux-lam-none",
           "stochastic", "shuffled", "round_robin-permuted", "chain-lazy", "epochs", "deep", "user-stage", "list",
           "generator", "tuples", "map", "filter", "shuffle", "shuffle-large", "unbatch", "padded_batch",
           "padded_batch-loose", "bucket", "prefetch"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MUTATED), st.floats(0, 1), st.data())
@pytest.mark.timeout(240)
def test_a_changed_field_is_refused_or_changes_nothing(name, where, data):
    """A state re-signed after one field is changed (as a deliberate edit would be): a PescadorError,
    or the same continuation.  Bounded: the run is cut at the plain run's length plus one."""
    recipe = STAGES[name]()
    plain = items(recipe)
    cut = int(where * len(plain))
    run = resumable(recipe)
    for _ in range(cut):
        next(run)
    saved = json.loads(json.dumps(run.state_dict()))
    fields = list(places(saved["stages"]))
    path, value = data.draw(st.sampled_from(fields))
    mutations = _mutations(value)
    if path and isinstance(path[-1], int):  # (an entry of a list of varying length may go: a field may not)
        mutations.remove("drop")
    mutation = data.draw(st.sampled_from(mutations))
    state = _apply(saved, path, mutation)
    try:
        resumed = resumable(recipe, state)
        rest = []
        for item in resumed:
            rest.append(key(item))
            if len(rest) > len(plain):
                break
    except PescadorError:
        return
    assert rest == plain[cut:], (path, mutation)


def test_a_changed_state_that_was_not_re_signed_is_refused():
    recipe = STAGES["take"]()
    run = resumable(recipe)
    next(run)
    state = run.state_dict()
    state["stages"]["count"] = 2  # a valid count: only the check can tell
    with pytest.raises(PescadorError, match="changed after it was saved"):
        resumable(recipe, state)


def test_field_errors_name_the_field():
    recipe = STAGES["take"]()
    run = resumable(recipe)
    next(run)
    state = edited(run.state_dict(), ("count",), -3)
    with pytest.raises(PescadorError, match=r"take\(n=7\): field 'count' must be an integer from 0 to 7; got -3"):
        resumable(recipe, state)


# -- a run is over once an exception has escaped it ------------------------------------------------


def bad_record(tag, n, bad):
    """A source that raises on its record ``bad`` (the consumer may catch that and go on)."""
    for i in range(n):
        if i == bad:
            raise ValueError(f"bad record {tag}:{i}")
        yield {"x": np.full((1, 2), tag * 1000 + i, dtype=np.int64)}


# Recipes whose source raises once, in the middle of the run.
RAISING = {
    "source": lambda: stream(bad_record, 1, 20, 6),
    "take": lambda: pescador.take(15, stream(bad_record, 1, 20, 6)),
    "cycle": lambda: pescador.cycle(40, stream(bad_record, 1, 20, 6)),
    "tuples": lambda: pescador.tuples("x")(stream(bad_record, 1, 20, 6)),
    "buffer": lambda: pescador.buffer(3)(stream(bad_record, 1, 20, 7)),
    "mux": lambda: pescador.mux(2, 3.0, random_state=1)([stream(bad_record, 1, 20, 6), listed(2, 30)]),
    "chain": lambda: chain_mux()([listed(2, 4), stream(bad_record, 1, 20, 6), listed(3, 4)]),
    "user-stage": lambda: shift(100)(stream(bad_record, 1, 20, 6)),
}


def caught(run):
    """The items of a run whose consumer catches each ValueError (a bad record) and goes on."""
    out = []
    while len(out) < 500:  # (a run that would not end)
        try:
            item = next(run)
        except StopIteration:
            break
        except ValueError as exc:
            out.append(("error", str(exc)))
        else:
            out.append(key(item))
    return out


@pytest.mark.parametrize("name", sorted(RAISING))
def test_a_run_is_over_once_an_exception_escaped_it(name):
    """As for a generator: after an exception escaped next(), next() raises StopIteration, in a plain run
    and in a resumable run alike; a state taken after it resumes to nothing, as the run gave nothing more;
    a state taken before it resumes to the rest, the exception included."""
    recipe = RAISING[name]()
    plain = caught(iter(recipe))
    assert plain[-1][0] == "error" and len(plain) > 1
    run = resumable(recipe)
    assert caught(run) == plain
    with pytest.warns(pescador.ResumeWarning, match=r"this run is over \(a ValueError escaped next\(\)\)"):
        ended = json.loads(json.dumps(run.state_dict()))  # (said when the state is taken, and when it is used)
    with pytest.warns(pescador.ResumeWarning, match="taken after a ValueError escaped the run"):
        after = resumable(recipe, ended)
    assert caught(after) == []
    for cut in (0, len(plain) - 2):
        run = resumable(recipe)
        head = [key(next(run)) for _ in range(cut)]
        assert head + caught(resumable(recipe, json.loads(json.dumps(run.state_dict())))) == plain


# -- a user's stage --------------------------------------------------------------------------------


class Forgetful(Shift):
    """Leaves its upstream's state out of its own."""

    def state(self):
        return {"seen": self.seen}


class Numpyish(Shift):
    """Returns a numpy integer, which JSON cannot hold."""

    def state(self):
        return {"seen": np.int64(self.seen), "up": self.up.state()}


@pytest.mark.parametrize("cls, message", [
    (Forgetful, r"Forgetful.state\(\) must hold its upstream's state under 'up' .* and lacks it"),
    (Numpyish, r"Numpyish.state\(\) holds a numpy.int64 \(np.int64\(1\)\) at \['seen'\], which JSON cannot hold"),
])
def test_a_users_stage_state_is_checked_when_it_is_taken(cls, message):
    """A user's stage whose state() would make a state that cannot resume is named when the state is taken,
    not when a resume fails (or with a JSON TypeError naming nothing)."""
    recipe = pescador.take(5)(pescador.Transform("mine", cls, {"by": 1})(listed(1, 9)))
    run = resumable(recipe)
    next(run)
    with pytest.raises(PescadorError, match=message):
        run.state_dict()
    assert len(list(recipe)) == 5  # (a plain run asks for no state)


def doubled(upstream):
    for item in upstream:
        yield item
        yield item


def test_a_users_generator_stage_named_like_a_built_in_is_not_taken_for_it():
    twice = pescador.Transform("tuples", doubled, {})(listed(1, 3))
    assert len(list(twice)) == 6
    assert pescador.epoch_length(twice) is None  # unknown, not 3
    with pytest.raises(PescadorError, match="runs doubled, a plain function"):
        resumable(twice)


def test_a_users_stage_tells_epoch_length_it_is_one_to_one():
    recipe = shift(1)(pescador.mux(2, None, with_replacement=False, random_state=0)([listed(t, 5) for t in range(3)]))
    assert pescador.epoch_length(recipe) == 15 == len(list(recipe))


@pytest.mark.timeout(90)
def test_a_users_stage_in_a_worker_resumes_through_zmq_offload():
    pytest.importorskip("zmq")
    recipe = pescador.zmq_offload(timeout=30)(shift(7)(listed(1, 20)))
    plain = items(recipe)
    run = resumable(recipe)
    head = [key(next(run)) for _ in range(8)]
    state = json.loads(json.dumps(run.state_dict()))
    del run
    assert head + items(resumable(recipe, state)) == plain



def interrupted(n, at):
    for i in range(n):
        if i == at:
            raise KeyboardInterrupt  # (where a Ctrl-C lands while the run waits for an item)
        yield {"tag": np.array([1]), "i": np.array([i])}


def test_a_state_taken_after_a_ctrl_c_inside_next_says_it_resumes_to_nothing():
    """The usual checkpoint-on-Ctrl-C loop: when the interrupt lands inside next(run), the run is over (as a
    generator's is), and the state saved in the except clause would resume to nothing: said when it is taken,
    not only when it is used; the state taken after the last item still resumes to the rest."""
    recipe = pescador.mux(2, 2.0, random_state=0)([stream(interrupted, 10, 5), listed(2, 30)])
    run, keys, last = resumable(recipe), [], None
    with pytest.raises(KeyboardInterrupt):
        for item in run:
            keys.append(key(item))
            last = run.state_dict()
    with pytest.warns(pescador.ResumeWarning, match=r"a KeyboardInterrupt escaped next\(\).*yields nothing"):
        run.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rest = resumable(recipe, json.loads(json.dumps(last)))
    assert len(keys) > 1
    with pytest.raises(KeyboardInterrupt):  # (a live run again: it goes on to where the interrupt came, not over)
        next(rest)
