"""The stage protocol: one implementation per stage, for plain and for resumable runs.

A run of a recipe is a chain of small iterator objects, one per stage: each
has ``__next__`` (the next item), ``state()`` (where it is: a small
JSON-serialisable dict) and is built from its upstream recipe, its
parameters and, to resume, such a state.  ``iter(recipe)`` builds the chain
and nobody asks for a state; :func:`pescador.resumable` builds the same
chain and asks.  So a resumable run of a seeded recipe yields exactly the
items of a plain run, at nearly the same cost.

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

import json
import numbers
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import numpy as np

from .exceptions import PescadorError
from .workers import over_workers, worker_info

__all__ = ["Stage", "start", "stage_of", "check_fields", "check_int", "check_bool", "check_list", "check_choice",
           "tracking", "NO_EPOCHS", "pool_length", "start_from"]


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
      (:func:`check_fields`, :func:`check_int` help).

    Attributes
    ----------
    one_to_one : bool
        True when the stage yields exactly one item per upstream item, in
        order (like ``tuples``): :func:`pescador.epoch_length` then looks
        through it.
    resumes : bool
        False for a stage whose runs cannot be resumed (a resumable run then
        refuses it by name at once).

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

    def __iter__(self) -> "Stage":
        return self

    def __next__(self) -> Any:
        raise NotImplementedError

    def state(self) -> dict:
        """Where the run is: a JSON-serialisable dict (the upstream's state inside it)."""
        raise PescadorError(
            f"{type(self).__qualname__} does not say where its run is: define state() (see 'Writing a stage')"
        )

    def start_upstream(self, upstream: Any, state: dict | None, key: str = "up") -> Any:
        """Start the run of ``upstream``, from ``state[key]`` when resuming (checked to be there)."""
        if state is None:
            return start(upstream)
        if not isinstance(state, dict) or key not in state:
            raise PescadorError(
                f"resumable: the state of {type(self).__qualname__} lacks the field {key!r} (the upstream's "
                f"state); got {_short(state)}"
            )
        return start_from(upstream, state, key, type(self).__qualname__)

    # -- facts, read from the class without running it ------------------------------------------
    @classmethod
    def is_one_to_one(cls, params: dict) -> bool:
        """Whether a stage with these parameters yields one item per upstream item, in order."""
        return cls.one_to_one

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

    Stages that must prepare for that (``zmq_offload``'s workers then send
    their states with their items) read it when they start.
    """
    return getattr(_TRACK, "on", False)


class _Tracked:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.before = tracking()
        _TRACK.on = self.on

    def __exit__(self, *exc: Any) -> None:
        _TRACK.on = self.before


def tracked(on: bool = True) -> _Tracked:
    """A context in which stages start as parts of a resumable run (or not)."""
    return _Tracked(on)


def starter() -> Callable[..., Any]:
    """:func:`start` as it is now: a stage that starts upstream runs later (a mux starting its
    streams) keeps this at its own start, so that those runs belong to the same kind of run."""
    if not tracking():
        return start
    return _start_tracked


def _start_tracked(recipe: Any, state: Any = None) -> Any:
    with tracked(True):
        return start(recipe, state)


def start(recipe: Any, state: Any = None) -> Any:
    """Start a run of ``recipe``, from ``state`` (a stage's ``state()``) or from the beginning.

    Returns an iterator with ``state()``: a :class:`Stage`, or for a source a
    small wrapper that counts its items.
    """
    if isinstance(recipe, Iterator):  # (a live iterator, as the 3.x data-first calls pass: no state)
        if state is not None:
            raise PescadorError("resumable: a live iterator cannot be resumed; give a recipe (pescador.stream)")
        return _Live(recipe)
    step = getattr(recipe, "step", None)
    if step is None:
        if recipe.fn is _from_collection:
            return _Items(recipe, state)
        return _Source(recipe, state)
    cls = stage_of(recipe)
    if cls is not None:
        return cls(*recipe.args, **recipe.kwargs, state=state)
    if state is not None:
        raise not_resumable(recipe)
    return _Opaque(recipe)


def start_from(upstream: Any, state: dict, key: str, where: str) -> Any:
    """Resume the run of ``upstream`` from ``state[key]``, which must be a run's state (a dict: a
    missing or null one would silently start the upstream again)."""
    value = state[key]
    if not isinstance(value, dict):
        raise PescadorError(
            f"resumable: the state of {where}: field {key!r} must be the upstream's state (a dict); "
            f"got {_short(value)}"
        )
    return start(upstream, value)


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

    def __init__(self, recipe: Any, state: Any = None) -> None:
        self.items = recipe.args[0]
        self.pos = 0
        if state is not None:
            fields = check_fields(state, ("pos",), "a stream over a list")
            self.pos = check_int(fields, "pos", "a stream over a list", 0, len(self.items))

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

    def __init__(self, recipe: Any, state: Any = None) -> None:
        self.recipe, self.pos = recipe, 0
        if state is None:
            self.it = iter(recipe)
            return
        fn = recipe.fn
        where = repr(recipe)
        if getattr(fn, "pescador_resumes", True) is False:
            raise PescadorError(f"resumable: {where} cannot be resumed: {getattr(fn, 'pescador_why_not', '')}")
        target = check_int(check_fields(state, ("pos",), where), "pos", where, 0)
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
    shares send their state with their items, and ``state()`` is, for each
    share, its state after the last of its items that was delivered (so
    items in flight are produced again after a resume, not lost), or the
    state it started from.  A plain run's shares send no state.

    A subclass sets ``name`` (the stage's name in messages), ``unit`` (what
    runs a share: "worker", "actor"), ``Config`` (its frozen options, with
    ``workers``), and ``launch``, which starts the run.  Nothing starts
    until the first item is asked for; everything is released when the run
    ends, is closed, or is collected.
    """

    name = unit = ""
    Config: Any = None

    def __init__(self, upstream: Any, state: dict | None = None, **options: Any) -> None:
        self.config = self.Config(**options)
        self.tracked = tracking() or state is not None
        self.starts = [None] * self.config.workers if state is None else self._check_state(state)
        self.delivered: dict = {}  # share -> its state (JSON text) after its last delivered item
        self.run = self.launch(upstream)

    def launch(self, upstream: Any) -> Iterator:
        """The run's items, from ``self.starts`` (states to start each share from, or None), recording in
        ``self.delivered`` each share's state after its delivered items when ``self.tracked``."""
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
        return {
            "workers": [
                json.loads(self.delivered[w]) if w in self.delivered else _copy_of(self.starts[w])
                for w in range(self.config.workers)
            ]
        }

    def _check_state(self, state: Any) -> list:
        """The shares' states from a state of this stage: a list of ``workers`` entries, each null or a dict
        (what is inside each is checked by the share's own stages, where it runs)."""
        where = f"{self.name}(workers={self.config.workers})"
        entries = check_list(check_fields(state, ("workers",), where), "workers", where, length=self.config.workers)
        for wid, entry in enumerate(entries):
            if entry is not None and not isinstance(entry, dict):
                raise PescadorError(
                    f"resumable: the state of {where}: field 'workers' entry {wid} ({self.unit} {wid}'s state) "
                    f"must be null or a dict; got {repr(entry)[:80]}"
                )
        return list(entries)

    @classmethod
    def is_one_to_one(cls, params: dict) -> bool:
        return cls.Config(**params).workers == 1  # (several shares each run the recipe, and interleave)

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


def _copy_of(value: Any) -> Any:
    """A copy of a JSON-able value (so that a state handed out is not the run's own)."""
    return None if value is None else json.loads(json.dumps(value))


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
