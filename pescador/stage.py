"""The stage protocol: one implementation per stage, for plain and for resumable runs.

A run of a recipe is a chain of small iterator objects, one per stage: each
has ``__next__`` (the next item), ``state()`` (where it is: a small
JSON-serialisable dict) and is built from its upstream recipe, its
parameters and, to resume, such a state.  :func:`pescador.resumable`
builds that chain (with :func:`tracking` on) and asks it for its state.

A plain run (``iter(recipe)``, and :func:`start` outside a resumable run)
is one whose state nobody will ask for, and it pays nothing for one:

- a stage may offer a *plain form*, the classmethod :meth:`Stage.plain`:
  an iterator over the same items, cheaper than the object
  (``itertools.islice`` for ``take``, ``chain`` for ``cycle``, a loop
  fused into one generator for ``tuples``); a stage without one runs as
  its object, with its upstream run plain;
- a source runs bare: its function's generator itself, not a wrapper
  that counts its items.

:func:`start_plain` gives that fastest iterator for any recipe.  A plain
form yields exactly what the object yields, items and errors at the same
items (the contract tests compare the plain and the resumable run of every
stage), so a resumable run of a seeded recipe is the plain run.  Three
rules hold for every plain run, whatever its forms:

- ``iter(recipe)`` is a generator (Keras takes generators, and no other
  iterator), except a bare source's: a collection's own iterator
  (``stream([...])``), or what a source function returns; a plain form
  that is not a generator runs inside one
  (:func:`pescador.core.as_generator`: one frame per item);
- so, as any generator, a run is over once an exception has escaped it:
  the next ``next()`` raises StopIteration, even where the forms inside
  it (a ``chain`` of passes, a mux) would go on;
- closing a run (or dropping it) closes its sources at once: their
  ``finally`` blocks run.  A plain form holds no reference cycle.

A stage of your own is a subclass of :class:`Stage` used as the function
of a :class:`~pescador.Transform` (see the "Writing a stage" page of the
documentation)::

    class Scale(Stage):
        one_to_one = True                      # one item out per item in

        def __init__(self, upstream, factor, state=None):
            self.factor = factor
            self.up = self.start_upstream(upstream, state)

        def __next__(self):
            item = next(self.up)
            return {k: v * self.factor for k, v in item.items()}

        def state(self):
            return {"up": self.up.state()}

    scale = Transform("scale", Scale, {"factor": 2.0})

and, where a cheaper iterator does the same, its plain form (the default
``Stage.plain`` returns None: the object runs)::

        @classmethod
        def plain(cls, upstream, factor):
            return ({k: v * factor for k, v in item.items()} for item in start_plain(upstream))

Facts about a stage travel with its class: :attr:`Stage.one_to_one`,
:meth:`Stage.run_length` and :meth:`Stage.epoch_length` (what
:func:`pescador.epoch_length` reads), and :attr:`Stage.resumes`.  A stage
that is a plain generator function still runs, but cannot be resumed: a
resumable run refuses it by name.

Sources (``stream(fn, ...)`` and ``stream(collection)``) are stages too:
:func:`start` runs a collection by position and a generator function by
counting its items, and resumes it by ``fn.pescador_seek(position, *args,
**kwargs)`` when the function offers that, else by replaying its run.
"""

from __future__ import annotations

import functools
import json
import numbers
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import numpy as np

from .exceptions import PescadorError
from .workers import over_workers, worker_info

__all__ = ["Stage", "start", "start_plain", "starter", "stage_of", "check_fields", "check_int", "check_bool", "check_list",
           "check_choice", "tracking", "NO_EPOCHS", "pool_length", "start_from", "most_given", "run_seeds"]


# ----------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------


class Stage:
    """A run of one stage of a recipe: an iterator that can say where it is.

    Subclass it, and use the subclass as the function of a
    :class:`~pescador.Transform`: each run calls
    ``YourStage(upstream, **params, state=None)``, where

    - ``upstream`` is the upstream recipe (a :class:`~pescador.Stream`, or a
      tuple of them for a stage over a pool): start its run with
      :meth:`start_upstream` (or :func:`start`), passing on the part of
      ``state`` that is the upstream's;
    - ``**params`` are the transform's parameters;
    - ``state`` is None for a fresh run, else what :meth:`state` returned in
      an earlier run of the same recipe (after a round trip through JSON):
      the run starts there.  Check every field you read and raise
      :class:`~pescador.PescadorError` naming it when it does not fit
      (:func:`check_fields`, :func:`check_int` help).  A count of items
      may be bounded by what the stages around yours allow:
      :func:`most_given` says how many items your stage can have given.

    In a resumable run, what your :meth:`state` returns is checked when it
    is asked for: a dict of JSON values (no numpy scalars), holding the
    upstream's state under each key you started an upstream with
    (:meth:`start_upstream`); else a :class:`~pescador.PescadorError` names
    your stage and the field.

    Attributes
    ----------
    one_to_one : bool
        True when the stage yields exactly one item per upstream item, in
        order (like ``tuples``): :func:`pescador.epoch_length` then looks
        through it.
    resumes : bool
        False for a stage whose runs cannot be resumed (a resumable run then
        refuses it by name at once).
    starts_processes : bool
        True for a stage whose runs start processes of their own (as
        ``zmq_offload`` does): such a run cannot start inside a daemonic
        process, a ``DataLoader`` worker for one.
    replays : bool
        True for a stage that resumes by drawing its upstream again from an
        earlier state (as ``shuffle`` does): a resumable run refuses it at
        once over an upstream that does not give the same items again in
        the same order (see :meth:`replays_exactly`).

    Examples
    --------
    >>> import pescador
    >>> from pescador.stage import Stage
    >>> class Count(Stage):
    ...     one_to_one = True
    ...     def __init__(self, upstream, state=None):
    ...         self.up = self.start_upstream(upstream, state)
    ...         self.n = 0 if state is None else pescador.stage.check_int(state, "n", "count", 0)
    ...     def __next__(self):
    ...         item = next(self.up)
    ...         self.n += 1
    ...         return dict(item, n=self.n)
    ...     def state(self):
    ...         return {"up": self.up.state(), "n": self.n}
    >>> counted = pescador.Transform("count", Count, {})
    >>> [x["n"] for x in counted([{"v": 1}, {"v": 2}])]
    [1, 2]
    """

    one_to_one: bool = False
    resumes: bool = True
    starts_processes: bool = False
    replays: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("state")
        if callable(own) and not cls.__module__.startswith("pescador."):  # a stage of a user's: checked
            cls.state = _checked_state(own)

    def __iter__(self) -> "Stage":
        return self

    def __next__(self) -> Any:
        raise NotImplementedError

    def state(self) -> dict:
        """Where the run is: a JSON-serialisable dict (the upstream's state inside it)."""
        raise PescadorError(
            f"{type(self).__qualname__} does not say where its run is: define state() (see 'Writing a stage')"
        )

    @classmethod
    def plain(cls, upstream: Any, **params: Any) -> Iterator | None:
        """The stage's plain form: an iterator over the items a fresh run yields, for a run whose state
        nobody will ask for (``iter(recipe)``); or None (the default) to run the stage object.

        Offer one where a cheaper iterator does exactly what the object does
        (``itertools.islice`` for ``take``, a builtin ``map``, a generator
        with the loop fused): the same items, the same errors at the same
        items.  Start the upstream with :func:`start_plain`.  It is called
        as the stage's constructor is, without ``state``.
        """
        return None

    def start_upstream(self, upstream: Any, state: dict | None, key: str = "up") -> Any:
        """Start the run of ``upstream``, from ``state[key]`` when resuming (checked to be there); in a plain
        run (see :func:`start`), its plain run.

        The state this stage's :meth:`state` returns must then hold the
        upstream's state under ``key`` (a resumable run checks it).  For a
        one-to-one stage, the upstream can have given no more items than
        this stage has (:func:`most_given`).
        """
        keys = self.__dict__.setdefault("_pescador_upstreams", [])
        if key not in keys:
            keys.append(key)
        if state is None:
            return start(upstream)
        if not isinstance(state, dict) or key not in state:
            raise PescadorError(
                f"resumable: the state of {type(self).__qualname__} lacks the field {key!r} (the upstream's "
                f"state); got {_short(state)}"
            )
        most = most_given() if type(self).one_to_one else None
        return start_from(upstream, state, key, type(self).__qualname__, most)

    # -- facts, read from the class without running it ------------------------------------------
    @classmethod
    def is_one_to_one(cls, params: dict) -> bool:
        """Whether a stage with these parameters yields one item per upstream item, in order."""
        return cls.one_to_one

    @classmethod
    def replays_exactly(cls, params: dict) -> bool:
        """Whether a run of the stage with these parameters, started again from a state, gives the same
        items in the same order as the run that state was taken from did (given an upstream that does)."""
        return True

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable[[Any], float | None]) -> float | None:
        """Items one run yields (``math.inf``: endless), or None if unknown without running.

        ``length(recipe)`` gives the same for another recipe (the upstream).
        """
        return length(upstream) if cls.is_one_to_one(params) else None

    @classmethod
    def epoch_length(cls, upstream: Any, params: dict, epoch: Callable[[Any], Any]) -> Any:
        """Items of one epoch where the stage runs epochs; else what ``epoch(upstream)`` says of a
        stage it looks through, or :data:`NO_EPOCHS`."""
        return epoch(upstream) if cls.is_one_to_one(params) else NO_EPOCHS


def _checked_state(own: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A user's ``state()``, checked when a resumable run asks for it (see :class:`Stage`)."""

    @functools.wraps(own)
    def state(self: Any) -> Any:
        return check_own_state(self, own(self))

    return state


def check_own_state(stage: Any, state: Any) -> dict:
    """``state``, what ``stage.state()`` returned, checked: a dict of JSON values holding each upstream's
    state under its key; else a PescadorError naming the stage and the field."""
    where = f"resumable: {type(stage).__qualname__}.state()"
    if not isinstance(state, dict):
        raise PescadorError(f"{where} returned a {type(state).__name__}; a stage's state is a dict of JSON values")
    upstreams = stage.__dict__.get("_pescador_upstreams", ())
    for key in upstreams:
        if not isinstance(state.get(key), dict):
            got = "lacks it" if key not in state else f"holds {_short(state[key])} there"
            raise PescadorError(
                f"{where} must hold its upstream's state under {key!r} (the key it started its upstream "
                f"with) and {got}; return {{{key!r}: self.{key}.state(), ...}} (see 'Writing a stage')"
            )
    bad = not_json({k: v for k, v in state.items() if k not in upstreams})
    if bad is not None:
        path, value = bad
        raise PescadorError(
            f"{where} holds a {type(value).__module__}.{type(value).__qualname__} ({_short(value)}) at "
            f"{path}, which JSON cannot hold; return plain Python values (int(...), float(...), lists, dicts "
            "with string keys)"
        )
    return state


_JSON_SCALARS = (str, int, float, bool, type(None))


def not_json(value: Any, most_depth: int | None = None) -> tuple | None:
    """The first place in ``value`` that JSON cannot hold, as ``(path, value)``, or None; walked without
    recursion.  With ``most_depth``, a value nested deeper is such a place too (a list or dict at that
    depth, shown by its path)."""
    stack = [("", value, 0)]
    while stack:
        path, v, depth = stack.pop()
        if isinstance(v, _JSON_SCALARS) and not isinstance(v, (np.generic, np.ndarray)):
            continue
        if isinstance(v, (dict, list, tuple)):
            if most_depth is not None and depth >= most_depth:
                return path or "the top", v
            if isinstance(v, dict):
                for k, item in v.items():
                    if not isinstance(k, str):
                        return f"{path}[{k!r}] (a key that is not a string)", k
                    stack.append((f"{path}[{k!r}]", item, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(v))
            continue
        return path or "the top", v
    return None


class _NoEpochs:
    def __repr__(self) -> str:
        return "NO_EPOCHS"


NO_EPOCHS = _NoEpochs()  # (epoch_length: no epochs stage here; an epoch is a run)


def pool_length(pool: Sequence, weights: Any, length: Callable[[Any], Any]) -> float | None:
    """Items of one run of every member of ``pool`` (those of a positive weight, given weights) that the
    worker being counted runs: a stage that runs each member once shards the pool across workers (worker
    ``id`` of ``count`` takes members ``id``, ``id + count``, ...), as its run would."""
    info = worker_info()
    mine = range(info.id, len(pool), info.count)
    if weights is not None:
        mine = [i for i in mine if weights[i] > 0]
    lengths = [length(pool[i]) for i in mine]
    return None if None in lengths else sum(lengths)


def stage_of(recipe: Any) -> type | None:
    """The :class:`Stage` class that runs the last step of ``recipe``, or None (a source, or a stage
    that is a plain generator function)."""
    step = getattr(recipe, "step", None)
    if step is None:
        return None
    fn = step.fn
    return fn if isinstance(fn, type) and issubclass(fn, Stage) else None


# ----------------------------------------------------------------------------
# Sources, and names
# ----------------------------------------------------------------------------


def _from_collection(collection: Sequence) -> Iterator:
    """A source over a sequence (``stream([...])``): resumed by position."""
    return iter(collection)


def _from_iterable(collection: Any) -> Iterator:
    """A source over any other re-iterable collection (a set, ...): resumed by replay."""
    return iter(collection)


# ----------------------------------------------------------------------------
# Starting a run
# ----------------------------------------------------------------------------

_TRACK = threading.local()


def tracking() -> bool:
    """Whether the stages being started belong to a resumable run (whose states will be asked).

    :func:`pescador.resumable` starts its run with this on; then :func:`start`
    builds every stage's object, and sources count their items.  Off, a run
    is plain (:func:`start_plain`).  Stages that must prepare for a
    resumable run (``zmq_offload``'s workers then send their states) read
    it when they start; a stage that starts upstream runs later (a mux
    starting its streams) keeps :func:`starter` at its own start.
    """
    return getattr(_TRACK, "on", False)


def run_seeds() -> Seeds | None:
    """The seeds of the resumable run whose stages are being started, or None outside one.

    A stage that draws random numbers and has no seed of its own
    (``random_state=None``) takes its generator from the next of them: the
    run records how many were taken, so a resumed run draws the same ones.
    """
    return getattr(_TRACK, "seeds", None) if tracking() else None


def most_given() -> int | None:
    """The most items the stage being started from a state can have given before that state was taken,
    or None when nothing around it bounds that.

    A stage checks its own counters against it, and tells its upstream the
    most items *that* can have given (``start(upstream, state, most)``):
    ``take(10)`` allows its upstream 10 at most, a mux allows each live
    stream what its slot says it gave.  So a state cannot make a stage
    replay more items than its run can have drawn.

    Examples
    --------
    >>> from pescador.stage import most_given
    >>> most_given() is None  # (no stage is being resumed here)
    True
    """
    return getattr(_TRACK, "most", None)


class Seeds:
    """The seeds of a run's stages that have no seed of their own: child ``spawned`` of ``root`` is the
    next one (as ``root.spawn(1)`` would give it), and ``spawned`` is part of the run's state."""

    __slots__ = ("root", "spawned")

    def __init__(self, root: np.random.SeedSequence, spawned: int = 0) -> None:
        self.root, self.spawned = root, spawned

    def child(self) -> np.random.SeedSequence:
        n, root = self.spawned, self.root
        self.spawned = n + 1
        return np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (n,), pool_size=root.pool_size)


class _Tracked:
    def __init__(self, on: bool, seeds: Seeds | None) -> None:
        self.on, self.seeds = on, seeds

    def __enter__(self) -> None:
        self.before = tracking(), getattr(_TRACK, "seeds", None)
        _TRACK.on, _TRACK.seeds = self.on, self.seeds

    def __exit__(self, *exc: Any) -> None:
        _TRACK.on, _TRACK.seeds = self.before


def tracked(on: bool = True, seeds: Seeds | None = None) -> _Tracked:
    """A context in which stages start as parts of a resumable run whose ``seeds`` are given (or not)."""
    return _Tracked(on, seeds)


def starter() -> Callable[..., Any]:
    """:func:`start` as it is now: a stage that starts upstream runs later (a mux starting its
    streams) keeps this at its own start, so that those runs belong to the same kind of run (plain
    in a plain run, with states in a resumable one)."""
    if not tracking():
        return start
    return functools.partial(_start_tracked, getattr(_TRACK, "seeds", None))


def _start_tracked(seeds: Seeds | None, recipe: Any, state: Any = None, most: int | None = None) -> Any:
    with tracked(True, seeds):
        return start(recipe, state, most)


def start(recipe: Any, state: Any = None, most: int | None = None) -> Any:
    """Start a run of ``recipe``, from ``state`` (a stage's ``state()``) or from the beginning.

    ``most`` bounds the items the run can have given before ``state`` was
    taken (None: unbounded; see :func:`most_given`).  In a resumable run
    (:func:`tracking`), or from a state (which makes a resumable run),
    returns an iterator with ``state()``: a :class:`Stage`, or for a source
    a small wrapper that counts its items.  Otherwise the run is plain, and
    this is :func:`start_plain`: nobody will ask for its state.
    """
    if not tracking():
        if state is None:
            return start_plain(recipe)
        with tracked(True):  # (a run resumed from a state is a resumable run, every stage of it)
            return start(recipe, state, most)
    if isinstance(recipe, Iterator):  # (a live iterator, as the 3.x data-first calls pass: no state)
        if state is not None:
            raise PescadorError("resumable: a live iterator cannot be resumed; give a recipe (pescador.stream)")
        return _Live(recipe)
    step = getattr(recipe, "step", None)
    if step is None:
        if recipe.fn is _from_collection:
            return _Items(recipe, state, most)
        return _Source(recipe, state, most)
    cls = stage_of(recipe)
    if cls is not None:
        if state is None:
            return cls(*recipe.args, **recipe.kwargs, state=None)
        before = getattr(_TRACK, "most", None)
        _TRACK.most = most  # (what most_given() says while this stage is being built)
        try:
            return cls(*recipe.args, **recipe.kwargs, state=state)
        finally:
            _TRACK.most = before
    if state is not None:
        raise not_resumable(recipe)
    return _Opaque(recipe)


def start_plain(recipe: Any) -> Iterator:
    """The fastest iterator over a fresh run of ``recipe``, for a run whose state nobody will ask for.

    A source runs bare (its function's iterator itself); a stage runs its
    plain form (:meth:`Stage.plain`) where it offers one, else its object,
    whose upstream runs plain in turn; a live iterator runs as it is.
    ``iter(recipe)`` is this, as a generator.

    Examples
    --------
    >>> import itertools, pescador
    >>> from pescador.stage import start_plain
    >>> def naturals():
    ...     yield from itertools.count()
    >>> run = start_plain(pescador.take(3, naturals))
    >>> type(run).__name__, list(run)
    ('islice', [0, 1, 2])
    """
    if isinstance(recipe, Iterator):
        return recipe
    cls = stage_of(recipe)
    if cls is None:  # a source, or a stage written as a plain generator function
        return iter(recipe)
    return plain_stage(cls, recipe.args, recipe.kwargs)


def plain_stage(cls: type, args: tuple, kwargs: dict) -> Iterator:
    """A plain run of the stage ``cls`` over ``args`` (its upstream) and ``kwargs`` (its parameters)."""
    run = cls.plain(*args, **kwargs)
    return cls(*args, **kwargs) if run is None else run


def start_from(upstream: Any, state: dict, key: str, where: str, most: int | None = None) -> Any:
    """Resume the run of ``upstream`` from ``state[key]``, which must be a run's state (a dict: a
    missing or null one would silently start the upstream again), bounded by ``most`` items."""
    value = state[key]
    if not isinstance(value, dict):
        raise PescadorError(
            f"resumable: the state of {where}: field {key!r} must be the upstream's state (a dict); "
            f"got {_short(value)}"
        )
    return start(upstream, value, most)


class _Share(Stage):
    """One share of an offloaded run (in a worker process or a Ray actor) whose states are asked: its
    stages, and the seeds taken by those of them that have no seed of their own (child ``n`` of the
    worker's seed, as in a plain run; the count is in the share's state, so that a share resumed, or
    restarted after a failover, draws the same numbers).

    State: ``{"spawned": seeds taken, "up": the stages' state}``.
    """

    def __init__(self, recipe: Any, seed: Any, state: Any = None, most: int | None = None) -> None:
        self.seeds = Seeds(seed)
        with tracked(True, self.seeds):
            if state is None:
                self.up = start(recipe)
                return
            where = "a share"
            check_share(state, where)
            self.up = start_from(recipe, state, "up", where, most)
        self.seeds.spawned = state["spawned"]  # (the resumed stages took theirs from their states)

    def __iter__(self) -> Any:
        return self.up  # (a worker's loop draws from the stages directly; it asks this for the states)

    def __next__(self) -> Any:
        return next(self.up)

    def state(self) -> dict:
        return {"spawned": self.seeds.spawned, "up": self.up.state()}

    def close(self) -> None:
        close = getattr(self.up, "close", None)
        if close is not None:
            close()


def check_share(state: Any, where: str) -> dict:
    """A share's state (see :class:`_Share`), its own fields checked (its stages check the rest)."""
    fields = check_fields(state, ("spawned", "up"), where)
    check_int(fields, "spawned", where, 0, 2**63 - 1)
    if not isinstance(fields["up"], dict):
        raise PescadorError(f"resumable: the state of {where}: field 'up' must be the stages' state (a dict); "
                            f"got {_short(fields['up'])}")
    return fields


def start_share(recipe: Any, seed: np.random.SeedSequence, state: Any = None, most: int | None = None) -> Stage:
    """Start a share of an offloaded run whose states will be asked (a resumable run, or a Ray actor's
    share, which fails over), from its ``state`` or from the start, with the worker's ``seed``."""
    return _Share(recipe, seed, state, most)


def not_resumable(recipe: Any) -> PescadorError:
    """The refusal of a stage that cannot be resumed, by name."""
    step = recipe.step
    cls = stage_of(recipe)
    if cls is not None:
        why = getattr(cls, "why_not", "it does not keep a state")
        return PescadorError(f"resumable: a {step.name} stage cannot be resumed: {why}")
    return PescadorError(
        f"resumable: the stage {step!r} runs {getattr(step.fn, '__qualname__', type(step.fn).__qualname__)}, a plain function, which cannot say where its "
        "run is; write it as a pescador.stage.Stage subclass with state() (see 'Writing a stage')"
    )


class _Live(Stage):
    """A live iterator (the 3.x data-first calls): it runs, without a state."""

    resumes = False

    def __init__(self, it: Iterator) -> None:
        self.it = it

    def __next__(self) -> Any:
        return next(self.it)

    def state(self) -> dict:
        raise PescadorError("resumable: a live iterator cannot say where it is; give a recipe (pescador.stream)")


class _Opaque(Stage):
    """A stage written as a plain generator function: it runs, but has no state."""

    resumes = False

    def __init__(self, recipe: Any) -> None:
        self.recipe = recipe
        self.it = iter(recipe)

    def __next__(self) -> Any:
        return next(self.it)

    def state(self) -> dict:
        raise not_resumable(self.recipe)


class _Items(Stage):
    """A run over a sequence (``stream(list)``): resumed by position."""

    __slots__ = ("items", "pos")

    def __init__(self, recipe: Any, state: Any = None, most: int | None = None) -> None:
        self.items = recipe.args[0]
        self.pos = 0
        if state is not None:
            fields = check_fields(state, ("pos",), "a stream over a list")
            high = len(self.items) if most is None else min(most, len(self.items))
            self.pos = check_int(fields, "pos", "a stream over a list", 0, high)

    def __next__(self) -> Any:
        pos = self.pos
        if pos >= len(self.items):
            raise StopIteration
        self.pos = pos + 1
        return self.items[pos]

    def state(self) -> dict:
        return {"pos": self.pos}


def replay(it: Iterator, target: int, where: str) -> int:
    """Draw and drop the first ``target`` items of ``it`` (the items a run had already delivered) and
    return ``target``; a PescadorError when ``it`` ends before."""
    for drawn in range(target):
        try:
            next(it)
        except StopIteration:
            raise PescadorError(
                f"resumable: {where} ended after {drawn} items on replay, but the state says {target} "
                "had been drawn: the state is of another run, or the source is not deterministic"
            ) from None
    return target


class _Source(Stage):
    """A generator function's run, counting its items: resumed by ``pescador_seek`` or by replay."""

    __slots__ = ("recipe", "it", "pos")

    def __init__(self, recipe: Any, state: Any = None, most: int | None = None) -> None:
        self.recipe, self.pos = recipe, 0
        if state is None:
            self.it = iter(recipe)
            return
        fn = recipe.fn
        where = repr(recipe)
        if getattr(fn, "pescador_resumes", True) is False:
            raise PescadorError(f"resumable: {where} cannot be resumed: {getattr(fn, 'pescador_why_not', '')}")
        target = check_int(check_fields(state, ("pos",), where), "pos", where, 0, most)
        seek = getattr(fn, "pescador_seek", None)
        if seek is not None:
            self.it, self.pos = iter(seek(target, *recipe.args, **recipe.kwargs)), target
            return
        self.it = iter(recipe)
        self.pos = replay(self.it, target, where)

    def __next__(self) -> Any:
        item = next(self.it)
        self.pos += 1
        return item

    def state(self) -> dict:
        if getattr(self.recipe.fn, "pescador_resumes", True) is False:
            raise PescadorError(
                f"resumable: {self.recipe!r} cannot be resumed: {getattr(self.recipe.fn, 'pescador_why_not', '')}"
            )
        return {"pos": self.pos}


# ----------------------------------------------------------------------------
# Checking the fields of a state
# ----------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_fields(state: Any, names: Sequence[str], where: str) -> dict:
    """``state`` as a dict with exactly the fields ``names``, or a PescadorError naming what differs."""
    if not isinstance(state, dict):
        raise PescadorError(f"resumable: the state of {where} must be a dict; got {_short(state)}")
    missing = [n for n in names if n not in state]
    extra = [n for n in state if n not in names]
    if missing or extra:
        raise PescadorError(
            f"resumable: the state of {where} must have the fields {list(names)}; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )
    return state


def check_int(state: dict, name: str, where: str, low: int | None = None, high: int | None = None) -> int:
    """The field ``name`` of ``state`` as an int in ``[low, high]``, or a PescadorError naming it."""
    value = state[name]
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok and ((low is not None and value < low) or (high is not None and value > high)):
        ok = False
    if not ok:
        span = "an integer" + (
            f" from {low} to {high}" if low is not None and high is not None
            else f" >= {low}" if low is not None else f" <= {high}" if high is not None else ""
        )
        raise PescadorError(f"resumable: the state of {where}: field {name!r} must be {span}; got {_short(value)}")
    return int(value)


def check_bool(state: dict, name: str, where: str) -> bool:
    """The field ``name`` of ``state`` as a bool, or a PescadorError naming it."""
    value = state[name]
    if not isinstance(value, bool):
        raise PescadorError(f"resumable: the state of {where}: field {name!r} must be true or false; got {_short(value)}")
    return value


def check_list(state: dict, name: str, where: str, length: int | None = None, most: int | None = None) -> list:
    """The field ``name`` of ``state`` as a list (of ``length`` entries, or at most ``most``)."""
    value = state[name]
    if not isinstance(value, list):
        raise PescadorError(f"resumable: the state of {where}: field {name!r} must be a list; got {_short(value)}")
    if length is not None and len(value) != length:
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} must have {length} entries; got {len(value)}"
        )
    if most is not None and len(value) > most:
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} must have at most {most} entries; got {len(value)}"
        )
    return value


def check_choice(state: dict, name: str, where: str, valid: Sequence) -> Any:
    """The field ``name`` of ``state``, one of ``valid``."""
    value = state[name]
    if value not in valid or isinstance(value, bool) != any(isinstance(v, bool) for v in valid if v == value):
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} must be one of {list(valid)}; got {_short(value)}"
        )
    return value


# ----------------------------------------------------------------------------
# Random numbers in blocks, resumable: the generator's state at the block's start and the offset
# ----------------------------------------------------------------------------


class Block:
    """Random draws made ``draw(rng)`` a block at a time, resumable at any draw.

    ``items`` is the block (consumed from its end with ``pop()``, the fast
    path); ``at`` the generator's state before the block was drawn, and
    ``size`` its length, so ``state()`` is ``[at, used]`` and a run resumes by
    drawing the same block again from ``at`` and dropping what was used.
    ``draw`` must be a pure function of the generator's state (and of what
    does not change while a block lasts).
    """

    __slots__ = ("rng", "draw", "items", "at", "size")

    def __init__(self, rng: Any, draw: Callable[[Any], list]) -> None:
        self.rng, self.draw = rng, draw
        self.items: list = []
        self.at: Any = None
        self.size = 0

    def refill(self) -> list:
        """Draw the next block (call when ``items`` is empty)."""
        self.at = self.rng.bit_generator.state
        self.items = self.draw(self.rng)
        self.size = len(self.items)
        return self.items

    def drop(self) -> None:
        """Forget the rest of the block (what it was drawn from changed)."""
        self.items, self.at, self.size = [], None, 0

    def state(self) -> list | None:
        return None if self.at is None or not self.items else [self.at, self.size - len(self.items)]

    def restore(self, state: Any, where: str, name: str) -> None:
        """Draw the block of ``state`` again and drop what was used (the generator is then left where
        that block left it: restore the generator's own state after every block)."""
        if state is None:
            self.drop()
            return
        if not (isinstance(state, list) and len(state) == 2 and isinstance(state[1], int)
                and not isinstance(state[1], bool)):
            raise PescadorError(
                f"resumable: the state of {where}: field {name!r} must be null or [generator state, used]; "
                f"got {_short(state)}"
            )
        set_rng_state(self.rng, state[0], where, name)
        self.refill()
        used = state[1]
        if not 0 <= used < self.size:
            raise PescadorError(
                f"resumable: the state of {where}: field {name!r} says {used} draws of a block of {self.size} "
                "were used; expected a number from 0 to " + str(self.size - 1)
            )
        del self.items[self.size - used :]


class Offloaded(Stage):
    """The consumer's side of a stage that runs its upstream elsewhere, in shares (zmq_offload's worker
    processes, ray_offload's actors): their items, as they arrive.

    Started inside a resumable run (:func:`tracking`) or from a state, the
    shares send their state with some of their items (how often is the
    share's business: a state costs what ``state()`` and JSON cost), and
    ``state()`` says, for each share, where it is after the last of its items
    that was delivered (so items in flight are produced again after a
    resume, not lost): the latest state delivered with one of its items (or
    the state it started from) in ``"workers"``, and in ``"skip"`` how many
    items it delivered after that one, which a resumed share draws again
    and drops.  A plain run's shares send no state.

    The shares' seeds (:func:`pescador.worker_info`'s ``seed``) are spawned
    from the run's ``entropy``: the ``Config``'s ``random_state``, or where
    that is None 128 bits the consumer draws; a resumable run records it in
    its state, so that resumed shares get the same seeds.

    A subclass sets ``name`` (the stage's name in messages), ``unit`` (what
    runs a share: "worker", "actor"), ``Config`` (its frozen options, with
    ``workers`` and ``random_state``), and ``launch``, which starts the run.
    Nothing starts until the first item is asked for; everything is
    released when the run ends, is closed, or is collected.
    """

    name = unit = ""
    Config: Any = None
    replays = True  # (a resumed share draws again the items it delivered after its last state)

    def __init__(self, upstream: Any, state: dict | None = None, **options: Any) -> None:
        self.config = self.Config(**options)
        self.tracked = tracking() or state is not None
        self.most = most_given() if state is not None else None  # (each share gave at most what the run gave)
        workers = self.config.workers
        if state is None:
            self.starts: list = [None] * workers
            self.skips: list = [0] * workers
            self.entropy = self.config.random_state
            if self.entropy is None:
                self.entropy = int(np.random.SeedSequence().entropy)
        else:
            self.starts, self.skips, self.entropy = self._check_state(state)
        # share -> [its latest state delivered (JSON text, None: its start from nothing), items delivered since]
        self.delivered: dict = {
            w: [None if start is None else json.dumps(start), skip]
            for w, (start, skip) in enumerate(zip(self.starts, self.skips))
        }
        self.run = self.launch(upstream)

    def seeds(self) -> list:
        """The shares' seeds, spawned from the run's entropy."""
        return np.random.SeedSequence(self.entropy).spawn(self.config.workers)

    def launch(self, upstream: Any) -> Iterator:
        """The run's items, from ``self.starts`` (states to start each share from, or None, each share
        bounded by ``self.most`` items), ``self.skips`` (items each then draws and drops) and
        ``self.seeds()``; when ``self.tracked``, recording in ``self.delivered`` where each share is after its
        delivered items (:func:`delivered`)."""
        raise NotImplementedError

    def __next__(self) -> Any:
        return next(self.run)

    def close(self) -> None:
        """End the run now: stop what runs the shares and release everything."""
        self.run.close()

    def state(self) -> dict:
        if not self.tracked:
            raise PescadorError(
                f"{self.name}: this run's {self.unit}s send no state with their items, because it was not "
                "started as a resumable run; run the recipe with pescador.resumable(recipe) to checkpoint it"
            )
        shares = [self.delivered[w] for w in range(self.config.workers)]
        return {
            "workers": [None if text is None else json.loads(text) for text, _ in shares],
            "skip": [skip for _, skip in shares],
            "entropy": self.entropy,
        }

    def skip_bound(self) -> int | None:
        """The most items a share can deliver after the last state it sent (None: no bound known): a
        subclass whose shares send a state at least every so many items says how many."""
        return None

    def _check_state(self, state: Any) -> tuple:
        """The shares' states, skips and the run's entropy from a state of this stage: a list of
        ``workers`` entries, each null or a share's state (whose stages are checked where they run), as
        many counts of items to draw again and drop (bounded by :meth:`skip_bound` and by what the run
        can have given), and the entropy (``random_state`` where that is set)."""
        where = f"{self.name}(workers={self.config.workers})"
        fields = check_fields(state, ("workers", "skip", "entropy"), where)
        entries = check_list(fields, "workers", where, length=self.config.workers)
        for wid, entry in enumerate(entries):
            if entry is not None and not isinstance(entry, dict):
                raise PescadorError(
                    f"resumable: the state of {where}: field 'workers' entry {wid} ({self.unit} {wid}'s state) "
                    f"must be null or a dict; got {repr(entry)[:80]}"
                )
            if entry is not None:
                check_share(entry, f"{where}, field 'workers' entry {wid} ({self.unit} {wid}'s state)")
        bounds = [b for b in (self.skip_bound(), self.most) if b is not None]
        most_skip = min(bounds) if bounds else None
        skips = check_list(fields, "skip", where, length=self.config.workers)
        skips = [check_int({"skip": skip}, "skip", where + f" ({self.unit} {wid})", 0, most_skip)
                 for wid, skip in enumerate(skips)]
        fixed = self.config.random_state
        entropy = check_int(fields, "entropy", where, *((0, 2**128 - 1) if fixed is None else (fixed, fixed)))
        return list(entries), skips, entropy

    @classmethod
    def is_one_to_one(cls, params: dict) -> bool:
        return cls.Config(**params).workers == 1  # (several shares each run the recipe, and interleave)

    @classmethod
    def replays_exactly(cls, params: dict) -> bool:
        return cls.Config(**params).workers == 1  # (several shares interleave as their timing says)

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable[[Any], Any]) -> float | None:
        """The items of every share's run, each counted as that share (worker ``w`` of ``workers`` on the
        rank counted): shares that shard their data count their part, shares that do not count it all."""
        lengths = over_workers(lambda: length(upstream), cls.Config(**params).workers)
        return None if None in lengths else sum(lengths)

    @classmethod
    def epoch_length(cls, upstream: Any, params: dict, epoch: Callable[[Any], Any]) -> Any:
        """The items of an epoch of every share, where the shares run epochs (counted as :meth:`run_length`)."""
        lengths = over_workers(lambda: epoch(upstream), cls.Config(**params).workers)
        if any(length is NO_EPOCHS for length in lengths):
            return NO_EPOCHS
        return None if None in lengths else sum(lengths)


def delivered(shares: dict, share: int, state: str | None) -> None:
    """Record in ``shares`` (``Offloaded.delivered``) that an item of ``share`` was delivered, with the
    share's state after it (JSON text), or None where none came with it."""
    if state is None:
        shares[share][1] += 1
    else:
        shares[share] = [state, 0]


def set_rng_state(rng: Any, value: Any, where: str, name: str) -> None:
    """Set a numpy Generator's state from a state dict, or raise a PescadorError naming the field."""
    bitgen = rng.bit_generator
    if not isinstance(value, dict) or value.get("bit_generator") != type(bitgen).__name__:
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} must be the state of a "
            f"{type(bitgen).__name__} generator; got {_short(value)}"
        )
    try:
        bitgen.state = value
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} is not a valid {type(bitgen).__name__} state ({exc})"
        ) from None


def rng_state(rng: Any) -> dict:
    """A generator's state as JSON-able values."""
    return _jsonable(rng.bit_generator.state)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def is_iterator(value: Any) -> bool:
    return isinstance(value, Iterator)
