"""Checkpoint and resume: ``resumable(recipe)`` runs a recipe so that it can stop and go on.

A *resumable run* yields the same kind of items as ``iter(recipe)`` and
can say, between any two items, where it is: ``run.state_dict()`` is a
small JSON-serialisable dict (counters, the random generators' states, the
positions of the streams a mux holds active, the rows a buffer has begun).
``resumable(recipe, state)`` is a new run that yields exactly the items the
first would have yielded next, so a preempted training job resumes without
replaying or skipping data.

How each stage resumes
----------------------
- A stream over a list or tuple jumps to its position.
- A generator function is *replayed*: its run starts again and the items
  before the position are drawn and dropped.  That costs what producing
  them costs; inside a mux only the live activations are replayed, so it is
  at most a few activations' worth of items.  A source can offer a cheaper
  way: a function attribute ``pescador_seek(position, *args, **kwargs)``
  returning an iterator that starts at ``position``.
- ``take``, ``cycle``, ``tuples``, ``keras_tuples`` and ``measure`` keep
  counters; ``buffer`` keeps where its current batch began (the upstream's
  state before the item it is splitting, and the rows of it already used);
  every mux kind and ``epochs`` keep their random generator's state, their
  slots and the state of each live activation.

Resumable runs draw their random numbers one at a time (so the generator's
state can be saved between any two items), not in blocks as plain runs do:
a resumable run of a recipe is reproducible (with int seeds) and resumes
exactly, but it is not the same sequence as ``iter(recipe)``.  Every
``random_state`` in the recipe must be an int (or None, which is refused
when a state is asked for): the state of a run that draws from entropy
could not be reproduced.

Through ``zmq_offload`` each worker runs its part of the recipe resumably
and sends its state with every item; the state of the run holds, for each
worker, its state after the last of its items that was delivered, so items
in flight when the checkpoint is taken are produced again after a resume,
not lost.  With one worker the resumed run continues exactly; with several,
each worker's items continue exactly, and they interleave as they arrive,
as in any run of several workers.  Sources must own their randomness (a
seeded generator made from their arguments): the legacy global
``np.random`` is not part of the state.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import Any

import numpy as np

from . import core
from .core import Stream, stream
from .exceptions import PescadorError

__all__ = ["resumable", "Resumable", "STATE_VERSION"]

STATE_VERSION = 1


# ----------------------------------------------------------------------------
# The public run
# ----------------------------------------------------------------------------


def _stages(s: Stream) -> list:
    """A readable outline of a recipe: stage names, outermost first."""
    out = []
    while s.step is not None:
        if s.step.name not in _MUXES:
            out.append(s.step.name)
        else:  # (a chain's pool may be produced at run time: a stream of streams)
            out.append(f"{s.step.name}[{'lazy' if isinstance(s.args[0], Stream) else len(s.args[0])}]")
        if s.step.name in _MUXES:
            break
        s = s.args[0]
    if s.step is None:
        out.append("list" if s.fn is core._from_collection else f"stream({core._name(s.fn)})")
    return out


def _describe(value: Any, out: list) -> None:
    """A canonical description of a recipe for its fingerprint (observers left out: they change)."""
    from .observe import Meter, MuxStats

    if isinstance(value, Stream):
        out.append("S(")
        _describe(value.fn, out)
        if value.step is not None:
            out.append(value.step.name)
            _describe(value.step.params, out)
        _describe(list(value.args), out)
        _describe(value.kwargs, out)
        out.append(")")
    elif isinstance(value, (Meter, MuxStats)):
        out.append(type(value).__name__)
    elif isinstance(value, np.ndarray) and value.dtype.hasobject:
        out.append(f"O{value.shape}")
        _describe(value.ravel().tolist(), out)
    elif isinstance(value, np.ndarray):
        out.append(f"A{value.dtype.str}{value.shape}" + hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    elif isinstance(value, dict):
        out.append("{")
        for k in sorted(value, key=repr):
            out.append(repr(k))
            _describe(value[k], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for v in value:
            _describe(v, out)
        out.append("]")
    elif isinstance(value, (set, frozenset)):
        out.append("set")
        _describe(sorted(value, key=repr), out)
    elif isinstance(value, functools.partial):
        out.append("partial")
        _describe([value.func, list(value.args), value.keywords], out)
    elif callable(value) and hasattr(value, "__code__"):  # a function: where it lives, and its code
        code = value.__code__
        out.append(f"F{getattr(value, '__module__', '')}.{core._name(value)}")
        out.append(hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest())
    elif callable(value):
        out.append(f"C{getattr(value, '__module__', '')}.{core._name(value)}")
    elif type(value).__repr__ is object.__repr__ and hasattr(value, "__dict__"):  # (its repr holds an address)
        out.append(type(value).__qualname__)
        _describe(vars(value), out)
    else:
        out.append(repr(value))


def _fingerprint(s: Stream) -> str:
    parts: list = []
    _describe(s, parts)
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


class Resumable:
    """A run of a recipe that can report its state and be resumed (see :func:`resumable`)."""

    def __init__(self, recipe: Any, state: dict | None = None) -> None:
        self.recipe = stream(recipe)
        self.outline = _stages(self.recipe)
        self.fingerprint = _fingerprint(self.recipe)
        inner = None
        if state is not None:  # (a copy: the run changes its state as it goes, and a state may serve twice)
            inner = copy.deepcopy(_check_state(state, self.outline, self.fingerprint))
        self.node = _runner(self.recipe, inner)

    def __iter__(self) -> "Resumable":
        return self

    def __next__(self) -> Any:
        return self.node.next()

    def state_dict(self) -> dict:
        """Where the run is: a small JSON-serialisable dict, versioned."""
        stages = self.node.state()
        unseeded = _find(stages, "unseeded")
        if unseeded:
            raise PescadorError(
                f"resumable: {unseeded} draws from entropy (random_state=None); give it an int random_state "
                "so that its run can be resumed"
            )
        return {
            "pescador_state": STATE_VERSION,
            "recipe": self.fingerprint,
            "outline": self.outline,
            "stages": stages,
        }


def _find(state: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a nested state, or None."""
    if isinstance(state, dict):
        if key in state:
            return state[key]
        values = state.values()
    elif isinstance(state, list):
        values = state
    else:
        return None
    for value in values:
        found = _find(value, key)
        if found is not None:
            return found
    return None


def _check_state(state: Any, outline: list, fingerprint: str) -> dict:
    if not isinstance(state, dict) or "pescador_state" not in state:
        raise PescadorError(f"resumable: expected a state made by state_dict(); got a {type(state).__name__}")
    if state["pescador_state"] != STATE_VERSION:
        raise PescadorError(
            f"resumable: the state is of version {state['pescador_state']!r}; this pescador reads version "
            f"{STATE_VERSION}"
        )
    if state.get("outline") != outline:
        raise PescadorError(
            f"resumable: the state is of another pipeline: it was made by {state.get('outline')}, and this "
            f"recipe is {outline}"
        )
    if state.get("recipe") != fingerprint:
        raise PescadorError(
            f"resumable: the state is of a pipeline of the same stages, {outline}, with other arguments "
            "(sources, parameters or seeds differ)"
        )
    return state["stages"]


def resumable(recipe: Any, state: dict | None = None) -> Resumable:
    """Run ``recipe`` so that it can be checkpointed (``state_dict()``) and resumed.

    Parameters
    ----------
    recipe
        Anything :func:`pescador.stream` accepts, built from deterministic
        parts (int ``random_state`` seeds, sources that give the same items
        every run).
    state : dict, optional
        A ``state_dict()`` of an earlier run of the same recipe: the new run
        yields exactly the items that run would have yielded next.

    Raises
    ------
    PescadorError
        For a state of another recipe or version (saying what differs), and
        for stages that cannot resume (``cache``, ``remote``) or random
        states that cannot be reproduced.

    Examples
    --------
    >>> import json, numpy as np, pescador
    >>> pool = [pescador.stream([{"x": np.array([[100 * v + i]])} for i in range(50)]) for v in range(3)]
    >>> recipe = pescador.buffer(4)(pescador.mux(2, 5.0, random_state=0)(pool))
    >>> run = pescador.resumable(recipe)
    >>> first = [next(run) for _ in range(10)]
    >>> saved = json.dumps(run.state_dict())          # small, and JSON
    >>> rest = [next(run)["x"].ravel().tolist() for _ in range(10)]
    >>> again = pescador.resumable(recipe, json.loads(saved))
    >>> [next(again)["x"].ravel().tolist() for _ in range(10)] == rest
    True
    """
    return Resumable(recipe, state)


# ----------------------------------------------------------------------------
# Runners: one per stage, each with next() and state()
# ----------------------------------------------------------------------------

_MUXES = ("mux", "stochastic_mux", "shuffled_mux", "round_robin_mux", "chain_mux", "epochs")
_MAPS = core.ONE_TO_ONE


def _runner(s: Stream, state: Any) -> Any:
    if s.step is None:
        if s.fn is core._from_collection:
            return _Collection(s.args[0], state)
        return _Source(s, state)
    name = s.step.name
    if name == "take":
        return _Take(s, state)
    if name == "cycle":
        return _Cycle(s, state)
    if name in _MAPS:
        return _Map(s, state)
    if name == "buffer":
        return _Buffer(s, state)
    if name in _MUXES:
        return _LazyChain(s, state) if isinstance(s.args[0], Stream) else _Mux(s, state)
    if name == "zmq_offload":
        return _Offload(s, state)
    raise PescadorError(f"resumable: a {name} stage cannot be resumed (yet); the stages that can: "
                        f"take, cycle, {', '.join(_MAPS)}, buffer, {', '.join(_MUXES)}, zmq_offload, and sources")


class _Offload:
    """zmq_offload: each worker runs its part resumably and sends its state with each item."""

    def __init__(self, s: Stream, state: Any) -> None:
        from .zmq_stream import _offload

        self.workers = s.step.params["workers"]
        self.start = [None] * self.workers if state is None else list(state["workers"])
        if len(self.start) != self.workers:
            raise PescadorError(f"resumable: the state is of {len(self.start)} workers; this zmq_offload has {self.workers}")
        self.received: dict = {}
        self.gen = _offload(s.args[0], **s.step.params, resume=self.start, states=self.received)

    def next(self) -> Any:
        return next(self.gen)

    def state(self) -> dict:
        return {
            "workers": [
                json.loads(self.received[w]) if w in self.received else self.start[w] for w in range(self.workers)
            ]
        }


class _Collection:
    def __init__(self, items: Any, state: Any) -> None:
        self.items = items
        self.pos = 0 if state is None else int(state["pos"])

    def next(self) -> Any:
        if self.pos >= len(self.items):
            raise StopIteration
        item = self.items[self.pos]
        self.pos += 1
        return item

    def state(self) -> dict:
        return {"pos": self.pos}


class _Replay:
    """A live iterator resumed by replay: the items already delivered are drawn and dropped.

    ``what`` names the iterator in the error raised when it ends too early.
    """

    def __init__(self, it: Any, state: Any, what: str = "a stream of a chain's pool") -> None:
        self.it, self.pos = it, 0
        target = 0 if state is None else int(state["pos"])
        for _ in range(target):
            try:
                next(self.it)
            except StopIteration:
                raise PescadorError(
                    f"resumable: {what} ended after {self.pos} items on replay, but the state says "
                    f"{target} had been drawn: it is not deterministic"
                ) from None
            self.pos += 1

    def next(self) -> Any:
        item = next(self.it)
        self.pos += 1
        return item

    def state(self) -> dict:
        return {"pos": self.pos}


class _Source(_Replay):
    """A generator function's run: resumed by ``pescador_seek`` or by replay."""

    def __init__(self, s: Stream, state: Any) -> None:
        self.s = s
        seek = getattr(s.fn, "pescador_seek", None)
        if state is not None and seek is not None:
            self.pos = int(state["pos"])
            self.it = iter(seek(self.pos, *s.args, **s.kwargs))
            return
        super().__init__(iter(s), state, repr(s))


class _LazyChain:
    """chain_mux over a pool produced at run time (a stream of streams): the pool's run and the
    run of its current stream.  The state holds the pool's state *before* the current stream was
    drawn, so a resume draws that stream again and continues it (as pescador.mux._lazy_chain)."""

    def __init__(self, s: Stream, state: Any) -> None:
        from .workers import worker_info

        self.pool, self.mode, self.worker = s.args[0], s.step.params.get("mode", "exhaustive"), worker_info()
        if state is None:
            state = {"index": -1, "pool": None, "member": None, "produced": False, "finished": False}
        self.index, self.produced, self.finished = int(state["index"]), bool(state["produced"]), bool(state["finished"])
        self.before = state["pool"]
        self.up = _runner(self.pool, self.before)
        self.member = None
        if state["member"] is not None:
            self.member = self._start(self.up.next(), state["member"])

    def _start(self, member: Any, state: Any) -> Any:
        import collections.abc

        if isinstance(member, collections.abc.Iterator):
            return _Replay(member, state)
        try:
            source = stream(member)
        except PescadorError as exc:
            raise PescadorError(f"chain_mux: stream {self.index} of the pool (a {type(member).__name__}): {exc}") from None
        return _runner(source, state)

    def next(self) -> Any:
        while not self.finished:
            if self.member is not None:
                try:
                    item = self.member.next()
                except StopIteration:
                    self.member = None
                    continue
                self.produced = True
                return item
            before = self.up.state()
            try:
                member = self.up.next()
            except StopIteration:
                if self.mode == "exhaustive" or not self.produced:
                    self.finished = True
                    break
                self.up, self.before, self.index, self.produced = _runner(self.pool, None), None, -1, False
                continue
            self.index += 1
            if self.index % self.worker.count == self.worker.id:
                self.before = before
                self.member = self._start(member, None)
        raise StopIteration

    def state(self) -> dict:
        if self.member is None:  # (between streams: the pool as it is now)
            return {"index": self.index, "pool": self.up.state(), "member": None, "produced": self.produced,
                    "finished": self.finished}
        return {"index": self.index, "pool": self.before, "member": self.member.state(), "produced": self.produced,
                "finished": self.finished}


class _Take:
    def __init__(self, s: Stream, state: Any) -> None:
        self.n = s.step.params["n"]
        self.count = 0 if state is None else int(state["count"])
        self.up = _runner(s.args[0], None if state is None else state["up"])

    def next(self) -> Any:
        if self.count >= self.n:
            raise StopIteration
        item = self.up.next()
        self.count += 1
        return item

    def state(self) -> dict:
        return {"count": self.count, "up": self.up.state()}


class _Cycle:
    def __init__(self, s: Stream, state: Any) -> None:
        self.upstream = s.args[0]
        self.limit = s.step.params["max_iter"]
        self.count = 0 if state is None else int(state["count"])
        self.in_pass = 0 if state is None else int(state["in_pass"])
        self.up = _runner(self.upstream, None if state is None else state["up"])

    def next(self) -> Any:
        if self.limit is not None and self.count >= self.limit:
            raise StopIteration
        try:
            item = self.up.next()
        except StopIteration:
            if self.in_pass == 0:
                raise PescadorError(
                    f"cycle: a run of {self.upstream!r} yielded no items; restarting it would spin forever"
                ) from None
            self.up, self.in_pass = _runner(self.upstream, None), 0
            return self.next()
        self.count += 1
        self.in_pass += 1
        return item

    def state(self) -> dict:
        return {"count": self.count, "in_pass": self.in_pass, "up": self.up.state()}


class _Pull:
    """An iterator over a runner, for the one-to-one stages' own generators."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def __iter__(self) -> "_Pull":
        return self

    def __next__(self) -> Any:
        return self.runner.next()


class _Map:
    """tuples, keras_tuples, measure: one item out per item in, no lookahead."""

    def __init__(self, s: Stream, state: Any) -> None:
        self.up = _runner(s.args[0], None if state is None else state["up"])
        self.gen = s.fn(_Pull(self.up), **s.step.params)

    def next(self) -> Any:
        return next(self.gen)

    def state(self) -> dict:
        return {"up": self.up.state()}


class _Buffer:
    """Batches of ``n`` rows, resumable in the middle of an item being split.

    At the start of each batch that draws from upstream, the upstream's
    state is noted (once per batch, not per item), with the number of items
    drawn since.  A state taken while an item is being split says: restore
    the upstream to the note, draw that many items again (the last is the
    one being split), and skip the rows already used.  Over an upstream
    whose order is not reproducible (``zmq_offload`` with several workers)
    the unused rows themselves go into the state instead.
    """

    def __init__(self, s: Stream, state: Any) -> None:
        from .buffered import _arrays, _rows, _signature

        self._arrays, self._rows, self._signature = _arrays, _rows, _signature
        self.upstream = s.args[0]
        self.n, self.strict = s.step.params["n"], s.step.params["strict"]
        self.cur = None  # the item being split, as arrays
        self.cur_rows = self.offset = 0
        self.mark = None  # the upstream's state at a note ...
        self.drawn = 0  # ... and the items drawn since
        self.pos = 0  # items drawn so far
        self.done = False
        self.layout = None
        if state is None:
            self.up = _runner(self.upstream, None)
            self.unordered = _unordered(self.up)
            return
        self.pos, self.done = int(state["pos"]), bool(state["done"])
        if state["layout"] is not None:
            self.layout = {k: (tuple(trail), np.dtype(code)) for k, (code, trail) in state["layout"].items()}
        self.up = _runner(self.upstream, state["up"])
        self.unordered = _unordered(self.up)
        if state.get("rows") is not None:  # the unused rows, kept in the state
            arrays = {k: np.array(v, dtype=self.layout[k][1]).reshape((-1, *self.layout[k][0]))
                      for k, v in state["rows"].items()}
            self.cur, self.cur_rows, self.offset = arrays, len(next(iter(arrays.values()))), 0
        elif state["redraw"]:  # draw again up to the item that was being split, and skip its rows used
            self.mark, self.drawn = copy.deepcopy(state["up"]), int(state["redraw"])
            for i in range(self.drawn):
                self._take(self.up.next(), self.pos - self.drawn + i)
            self.offset = int(state["offset"])

    def _take(self, item: Any, position: int) -> None:
        if self.layout is None:
            self.layout, arrays = self._signature(item, position)
        else:
            arrays = self._arrays(item, position) if isinstance(item, dict) else item
        self.cur_rows = self._rows(arrays, self.layout, position)
        self.cur, self.offset = arrays, 0

    def next(self) -> Any:
        if self.done:
            raise StopIteration
        parts, need = [], self.n
        noted = False
        while need:
            if self.cur is None or self.offset >= self.cur_rows:
                if not noted and not self.unordered:
                    self.mark, self.drawn, noted = self.up.state(), 0, True
                try:
                    item = self.up.next()
                except StopIteration:
                    self.done = True
                    self.cur = None
                    if parts and not self.strict:
                        return self._join(parts)
                    raise
                self.pos += 1
                self.drawn += 1
                self._take(item, self.pos - 1)
            take = min(need, self.cur_rows - self.offset)
            if take:
                parts.append({k: v[self.offset : self.offset + take] for k, v in self.cur.items()})
            self.offset += take
            need -= take
        return self._join(parts)

    def _join(self, parts: list) -> dict:
        return {
            k: np.concatenate([p[k] for p in parts]).astype(dtype, copy=False)
            for k, (_, dtype) in self.layout.items()
        }

    def state(self) -> dict:
        splitting = self.cur is not None and self.offset < self.cur_rows
        layout = None
        if self.layout is not None:
            layout = {k: [dtype.str, list(trail)] for k, (trail, dtype) in self.layout.items()}
        out = {"pos": self.pos, "done": self.done, "layout": layout, "rows": None, "redraw": 0, "offset": 0}
        if splitting and self.unordered:
            out["up"] = self.up.state()
            out["rows"] = {k: v[self.offset :].tolist() for k, v in self.cur.items()}
        elif splitting:
            out.update(up=copy.deepcopy(self.mark), redraw=self.drawn, offset=self.offset)
        else:
            out["up"] = self.up.state()
        return out


def _unordered(runner: Any) -> bool:
    """Whether the items of ``runner`` come in an order that a resume does not reproduce."""
    while isinstance(runner, _Map):
        runner = runner.up
    return isinstance(runner, _Offload) and runner.workers > 1


# ----------------------------------------------------------------------------
# The mux, as a state machine (the same rules as pescador.mux._engine)
# ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


class _Mux:
    """A mux run as a state machine: the engine's rules, with the engine's own activation
    bookkeeping (``_Activations``, ``_Random``) drawing one number at a time, so that the
    generator's state and a few counters say where the run is."""

    def __init__(self, s: Stream, state: Any) -> None:
        from .mux import _activations, _engine_args, _Random, _rng, _Share3x, _slot_choice
        from .workers import worker_info

        self.pool = s.args[0]
        self.name = s.step.name
        self.__dict__.update(_engine_args(self.name, self.pool, s.step.params))
        if isinstance(self.random_state, (np.random.Generator, np.random.RandomState)):
            raise PescadorError(
                f"resumable: {self.name} has a random_state object; give an int so that the run can be resumed"
            )
        # round-robin and chain muxes in pool order draw nothing that changes their items
        self.needs_no_seed = self.activation == "once" and self.order == "pool"
        seed = 0 if self.random_state is None and self.needs_no_seed else self.random_state
        self.rng = _rng(seed, worker_info())
        self.rand = _Random(self.rng, self.lam, self.dist, block=1)
        self.acts, self.item_weight = _activations(
            len(self.pool), self.weights, self.activation, self.lam, self.prune_empty, self.rand, worker_info()
        )
        self.choose = None if self.choice != "weighted" else _slot_choice(self.item_weight, self.activation, self.acts)
        self.share = _Share3x(self.acts.W) if self.dist == "3x-binomial" and self.lam is not None else None
        self.slots: list = []  # [who, left, bound, runner]
        self.epoch, self.produced, self.rotation, self.refill = 0, False, -1, True
        self.between_epochs, self.finished, self.position = True, False, 0
        if state is None:
            return
        if "unseeded" in state:
            raise PescadorError(f"resumable: {self.name} draws from entropy (random_state=None)")
        self.rng.bit_generator.state = state["rng"]
        acts = self.acts
        acts.restore(state["w"], state["live"], state["queue"], state["dry"], state["n_live"], state["eligible"])
        for key in ("epoch", "produced", "rotation", "refill", "between_epochs", "finished", "position"):
            setattr(self, key, state[key])
        self.slots = [[who, left, bound, _runner(self.pool[who], up)] for who, left, bound, up in state["slots"]]
        if self.choose is not None:
            self.choose.live = acts.live
            self.choose.rebuild([slot[0] for slot in self.slots])

    def next(self) -> Any:
        acts = self.acts
        while True:
            if self.finished:
                raise StopIteration
            if self.between_epochs:
                if self.epochs is not None and self.epoch >= self.epochs:
                    self.finished = True
                    raise StopIteration
                self.epoch += 1
                self.produced, self.rotation, self.refill, self.between_epochs = False, -1, True, False
                acts.start_epoch(self.order, self.epoch == 1)
            if self.refill:
                self.refill = False
                ahead = self.k - len(self.slots)
                while len(self.slots) < self.k:
                    i = acts.next()
                    if i is None:
                        break
                    ahead -= 1
                    if self.share is None:
                        length = self.rand.length()  # (at least 1)
                    else:  # (as the engine: the share of the live slots' weights)
                        self.share.live = sum(self.share.W[slot[0]] for slot in self.slots)
                        length = self.rand.length(self.share.p(i, ahead))
                    acts.started(i)
                    self.slots.append([i, length, length, _runner(self.pool[i], None)])
                    if self.choose is not None:
                        self.choose.filled([slot[0] for slot in self.slots], len(self.slots) - 1)
                if not self.slots:
                    if not self.produced or self.activation != "once":
                        self.finished = True  # nothing more can be activated, or a pass gave nothing
                        raise StopIteration
                    self.between_epochs = True
                    continue
            n_slots = len(self.slots)
            if self.choice == "uniform":
                s = int(self.rand.uniform() * n_slots)
            elif self.choice == "rotate":
                self.rotation = s = (self.rotation + 1) % n_slots
            else:  # weighted (as the engine)
                s = self.choose.pick([slot[0] for slot in self.slots])
            slot = self.slots[s]
            try:
                item = slot[3].next()
            except StopIteration:
                self._release(s, True)
                continue
            self.position += 1
            self.produced = True
            if acts.dry:
                acts.wet()
            slot[1] -= 1
            if not slot[1]:
                self._release(s, False)
            return item

    def _release(self, s: int, ended: bool) -> None:
        who, left, bound, _ = self.slots[s]
        self.acts.stopped(who, ended and bound == left)
        if self.choice == "rotate":
            del self.slots[s]
            self.rotation = s - 1
        else:
            self.slots[s] = self.slots[-1]
            del self.slots[-1]
            if self.choose is not None:
                self.choose.released([slot[0] for slot in self.slots], s, who)
        self.refill = True

    def state(self) -> dict:
        if self.random_state is None and not self.needs_no_seed:
            return {"unseeded": self.name}  # (refused by state_dict, not here: a buffer asks for states too)
        acts = self.acts
        return _jsonable({
            "rng": self.rng.bit_generator.state,
            "w": acts.w.tolist(), "live": list(acts.live), "n_live": acts.n_live, "eligible": acts.eligible,
            "dry": sorted(acts.dry), "queue": list(acts.queue), "epoch": self.epoch, "produced": self.produced,
            "rotation": self.rotation, "refill": self.refill, "between_epochs": self.between_epochs,
            "finished": self.finished, "position": self.position,
            "slots": [[who, left, bound, runner.state()] for who, left, bound, runner in self.slots],
        })
