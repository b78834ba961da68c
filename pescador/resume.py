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
  counters; ``buffer`` keeps the unused rows of the item it is splitting
  (their bytes, exactly: no item is drawn again on resume);
  every mux kind and ``epochs`` keep their random generator's state, their
  slots and the state of each live activation.

A resumable run is the same chain of stages as ``iter(recipe)``: random
numbers are drawn in blocks in both, and a state holds, for each block under
way, the generator's state at the block's start and the offset into it, so
a resumable run of a seeded recipe yields exactly the items of a plain run.
A ``random_state`` of None takes a seed from the run's entropy, drawn when
the run starts and recorded in its state with the count of seeds taken
(:class:`pescador.stage.Seeds`), so a resumed run draws what the run would
have drawn; a ``Generator`` or a ``RandomState`` is refused when the
resumable run starts (its draws are not part of the state).

Through ``zmq_offload`` each worker runs its part of the recipe resumably
and sends its state with an item now and then (at most about every 10 ms
of its work, and at least every 4,096 items); the state of the run holds,
for each worker, the latest such state delivered and the count of its items
delivered since, so a resumed worker starts there and draws those items
again and drops them: it goes on after the last of its items that was
delivered, and items in flight when the checkpoint is taken are produced
again after a resume, not lost.  The state also holds the entropy the
workers' seeds come from.  With one worker the resumed run continues
exactly; with several, each worker's items continue exactly, and they
interleave as they arrive, as in any run of several workers.  Sources must
own their randomness (a seeded generator made from their arguments or from
``worker_info().seed``): the legacy global
``np.random`` is not part of the state.

The envelope: ``pescador_state`` (the version), ``recipe`` (the
fingerprint), ``outline``, ``seeds`` (``entropy`` and ``spawned``), ``over``
(null, or the exception that ended the run), ``hash_seed`` (the saving
process's, when the recipe holds a set whose order depends on it), ``stages``
and ``check`` (an unkeyed hash of the rest, against accidents).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from typing import Any, Generic, TypeVar, overload

import numpy as np

from . import core
from ._fingerprint import MAX_DEPTH, examine
from .core import Stream, stream
from .exceptions import ParameterTypeError, PescadorError
from .stage import Seeds, _from_collection, not_json, not_resumable, stage_of, start, tracked

__all__ = ["resumable", "Resumable", "ResumeWarning", "STATE_VERSION"]

STATE_VERSION = 3

#: How deeply a state may nest (a stage adds one to three levels; a recipe nests at most MAX_DEPTH).
MAX_STATE_DEPTH = 2 * MAX_DEPTH + 20

_FIELDS = ("pescador_state", "recipe", "outline", "seeds", "over", "hash_seed", "stages", "check")


class ResumeWarning(UserWarning):
    """A resumed run may not yield what the uninterrupted run would have (the message says why).

    Warned by :func:`pescador.resumable` for a state taken after an
    exception ended the run, and for a resume under another hash seed of a
    recipe that holds or iterates a set whose order depends on it.

    Examples
    --------
    >>> import warnings, pescador
    >>> warnings.simplefilter("error", pescador.ResumeWarning)  # (to refuse such resumes)
    >>> warnings.resetwarnings()
    """


# ----------------------------------------------------------------------------
# The public run
# ----------------------------------------------------------------------------


def _outline(s: Stream) -> list:
    """A readable outline of a recipe: its stages' names, outermost first (a pool as its size)."""
    out = []
    while s.step is not None:
        upstream = s.args[0] if s.args else None
        if isinstance(upstream, tuple):  # a stage over a pool
            out.append(f"{s.step.name}[{len(upstream)}]")
            return out
        out.append(s.step.name)
        if not isinstance(upstream, Stream):
            return out
        s = upstream
    out.append("list" if s.fn is _from_collection else f"stream({core._name(s.fn)})")
    return out


def _check_resumes(s: Any) -> None:
    """Refuse, by name and at once, a recipe with a stage or a source that cannot be resumed."""
    if isinstance(s, tuple):
        for member in s:
            _check_resumes(member)
        return
    if not isinstance(s, Stream):
        return
    if s.step is None:
        if getattr(s.fn, "pescador_resumes", True) is False:
            raise PescadorError(f"resumable: {s!r} cannot be resumed: {getattr(s.fn, 'pescador_why_not', '')}")
        return
    cls = stage_of(s)
    if cls is None or not cls.resumes:
        raise not_resumable(s)
    if cls.replays and s.args:
        inexact = _inexact(s.args[0])
        if inexact is not None:
            raise PescadorError(
                f"resumable: {s.step!r} resumes by drawing its upstream again from an earlier state, but its "
                f"upstream holds {inexact!r}, whose items come in another order in each run (its workers take "
                f"turns as their timing says): a resume would lose and repeat items.  Put {s.step.name} before "
                f"{inexact.name} (it then runs in each worker), or give {inexact.name} one worker"
            )
    if s.args:
        _check_resumes(s.args[0])


def _inexact(s: Any) -> Any:
    """The first step in recipe ``s`` (or a pool of them) whose runs do not replay exactly, or None."""
    for member in s if isinstance(s, tuple) else (s,):
        while isinstance(member, Stream) and member.step is not None:
            cls = stage_of(member)
            if cls is not None and not cls.replays_exactly(member.step.params):
                return member.step
            if not member.args:
                break
            if isinstance(member.args[0], tuple):
                found = _inexact(member.args[0])
                if found is not None:
                    return found
                break
            member = member.args[0]
    return None


def _hash_seed() -> str:
    """This process's hash seed, as a short digest (str and bytes hash, and sets of them iterate, by it)."""
    return hashlib.sha256(repr(hash("pescador: the order of sets")).encode()).hexdigest()[:16]


def _ended() -> Any:
    raise StopIteration


_T = TypeVar("_T")


class Resumable(Generic[_T]):
    """A run of a recipe that can report its state and be resumed (see :func:`resumable`).

    It is the same chain of stages as ``iter(recipe)``.  As for a
    generator, once an exception has escaped ``next()`` the run is over:
    every later ``next()`` raises ``StopIteration``, and so does a run
    resumed from a state taken after that.
    """

    def __init__(self, recipe: Any, state: dict | None = None) -> None:
        self.recipe = stream(recipe)
        _check_resumes(self.recipe)
        self.outline = _outline(self.recipe)
        self.fingerprint, hash_ordered = examine(self.recipe)
        self.hash_seed = _hash_seed() if hash_ordered else None
        self.over: str | None = None
        self.node: Any = None
        self.pull: Any = _ended
        inner, spawned = None, None
        if state is None:
            self.seeds = Seeds(np.random.SeedSequence())
        else:  # (a copy: a state may serve twice, and a stage may keep parts of it)
            checked = _check_state(state, self.outline, self.fingerprint, bool(hash_ordered))
            self.seeds = Seeds(np.random.SeedSequence(checked["seeds"]["entropy"]))
            inner, spawned, self.over = checked["stages"], checked["seeds"]["spawned"], checked["over"]
            _warn_when_resumed(checked, self.hash_seed, hash_ordered)
            if self.over is not None:
                return
        try:
            with tracked(True, self.seeds):
                self.node = start(self.recipe, inner)
        except RecursionError:
            raise PescadorError(
                "resumable: the recipe nests too deeply for Python's recursion limit to start its stages; keep "
                "pipelines shallower"
            ) from None
        if spawned is not None:
            self.seeds.spawned = spawned  # (the resumed stages took their generators from their states)
        self.pull = self.node.__next__

    def __iter__(self) -> Iterator[_T]:
        return self

    def __next__(self) -> _T:
        try:
            return self.pull()
        except StopIteration:
            raise
        except BaseException as exc:
            if self.node is not None:  # the run is over, as a generator's is
                self.over, self.node, self.pull = type(exc).__qualname__, None, _ended
            raise

    def state_dict(self) -> dict:
        """Where the run is: a small JSON-serialisable dict, versioned.

        Raises
        ------
        PescadorError
            If a stage's state cannot be taken, or holds a value JSON cannot
            hold (naming the place).
        """
        if self.over is not None:
            stages: Any = {}  # (an ended run: nothing to resume)
            warnings.warn(
                f"resumable: this run is over (a {self.over} escaped next()), so a run resumed from this state "
                "yields nothing. To go on later (after a Ctrl-C, say), save the state you took after the last "
                "item you used, before the exception", ResumeWarning, stacklevel=2,
            )
        else:
            try:
                stages = self.node.state()
            except RecursionError:
                raise PescadorError("resumable: the stages' state nests too deeply for Python's recursion limit") from None
        state = {
            "pescador_state": STATE_VERSION,
            "recipe": self.fingerprint,
            "outline": self.outline,
            "seeds": {"entropy": int(self.seeds.root.entropy), "spawned": self.seeds.spawned},
            "over": self.over,
            "hash_seed": self.hash_seed,
            "stages": stages,
        }
        try:
            state["check"] = _sign(state)
        except (TypeError, ValueError):
            path, value = not_json(state["stages"]) or ("", None)
            raise PescadorError(
                f"resumable: the stages' state holds a {type(value).__module__}.{type(value).__qualname__} at "
                f"{path}, which JSON cannot hold (a stage's state() must return JSON values)"
            ) from None
        return state


def _sign(state: dict) -> str:
    """A check of a state's contents (all but the check itself): a state changed by accident after it was
    saved (on disk, in transit) is refused as a whole.  An unkeyed hash, which anyone can compute again: it
    does not tell a deliberate edit; each stage checks the fields it reads against the recipe."""
    body = {k: v for k, v in state.items() if k != "check"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_state(state: Any, outline: list, fingerprint: str, hash_ordered: bool) -> dict:
    """The state, checked as a whole and its envelope's fields one by one: a copy of it."""
    if not isinstance(state, dict) or "pescador_state" not in state:
        raise ParameterTypeError(f"resumable: expected a state made by state_dict(); got a {type(state).__name__}")
    bad = not_json(state, MAX_STATE_DEPTH)  # (first: what follows may recurse into the state)
    if bad is not None:
        path, value = bad
        if isinstance(value, (dict, list, tuple)):
            raise PescadorError(f"resumable: the state nests deeper than {MAX_STATE_DEPTH} levels (at {path[:200]}); "
                                "no state of a recipe does")
        raise PescadorError(f"resumable: the state holds a {type(value).__qualname__} at {path[:200]}, which is not "
                            "JSON; resume from a state as state_dict() made it (through JSON)")
    if state["pescador_state"] != STATE_VERSION:
        raise PescadorError(
            f"resumable: the state is of version {str(state['pescador_state'])[:20]}; this pescador reads version "
            f"{STATE_VERSION}"
        )
    missing = [k for k in _FIELDS if k not in state]
    extra = [k for k in state if k not in _FIELDS]
    if missing or extra:
        raise PescadorError(f"resumable: the state must have the fields {list(_FIELDS)}; "
                            + "; ".join(f"{what} {keys}" for what, keys in (("missing", missing), ("unexpected", extra))
                                        if keys))
    if state["outline"] != outline:
        raise PescadorError(
            f"resumable: the state is of another pipeline: it was made by {str(state['outline'])[:300]}, and this "
            f"recipe is {outline}"
        )
    if state["recipe"] != fingerprint:
        raise PescadorError(
            f"resumable: the state is of a pipeline of the same stages, {outline}, with other arguments "
            "(sources, parameters or seeds differ)"
        )
    if state["check"] != _sign(state):
        raise PescadorError(
            "resumable: the state was changed after it was saved (its check does not match its contents); "
            "resume from a state as state_dict() made it"
        )
    state = json.loads(json.dumps(state))
    _check_envelope(state, hash_ordered)
    return state


def _check_envelope(state: dict, hash_ordered: bool) -> None:
    """The fields of the envelope that the stages do not check: the seeds, the end, the hash seed."""
    seeds = state["seeds"]
    ok = isinstance(seeds, dict) and sorted(seeds) == ["entropy", "spawned"]
    ok = ok and all(type(seeds[k]) is int for k in ("entropy", "spawned"))
    if not (ok and 0 <= seeds["entropy"] < 2**128 and 0 <= seeds["spawned"] < 2**63):
        raise PescadorError("resumable: the state's field 'seeds' must be {'entropy': an integer from 0 to 2**128 - 1, "
                            f"'spawned': an integer >= 0}}; got {str(seeds)[:80]}")
    over = state["over"]
    if over is not None and not (isinstance(over, str) and 0 < len(over) <= 200):
        raise PescadorError(f"resumable: the state's field 'over' must be null or the name of the exception that "
                            f"ended the run; got {str(over)[:80]}")
    if not isinstance(state["stages"], dict) or (over is not None and state["stages"]):
        raise PescadorError("resumable: the state's field 'stages' must be the stages' state (a dict), empty in a "
                            f"run that is over; got {str(state['stages'])[:80]}")
    seed = state["hash_seed"]
    if hash_ordered != (seed is not None) or not (seed is None or isinstance(seed, str) and len(seed) == 16):
        raise PescadorError("resumable: the state's field 'hash_seed' must be " + (
            "the saving process's hash seed (16 hex digits): this recipe holds sets" if hash_ordered else
            "null: this recipe holds no set") + f"; got {str(seed)[:40]}")


def _warn_when_resumed(state: dict, hash_seed: str | None, hash_ordered: list) -> None:
    """Warn about what a resumed run may do otherwise than the uninterrupted run would have."""
    if state["over"] is not None:
        warnings.warn(
            f"resumable: this state was taken after a {state['over']} escaped the run, which ended it (as a "
            "generator ends); the resumed run yields nothing. Resume from a state taken before that",
            ResumeWarning, stacklevel=4,
        )
    if hash_seed is not None and state["hash_seed"] != hash_seed:
        places = "; ".join(hash_ordered[:3]) + ("; ..." if len(hash_ordered) > 3 else "")
        warnings.warn(
            "resumable: this process's hash seed (PYTHONHASHSEED) differs from the one of the process that saved "
            "the state, and the recipe holds sets, which iterate in an order that depends on it (of strings, "
            f"bytes or objects): {places}. Where a source iterates such a set, the resumed run may skip or "
            "repeat items: iterate sorted(...) instead, or run both processes under one fixed PYTHONHASHSEED",
            ResumeWarning, stacklevel=4,
        )


@overload
def resumable(recipe: Stream[_T], state: dict | None = None) -> Resumable[_T]: ...
@overload
def resumable(recipe: Any, state: dict | None = None) -> Resumable[Any]: ...
def resumable(recipe: Any, state: dict | None = None) -> Resumable:
    """Run ``recipe`` so that it can be checkpointed (``state_dict()``) and resumed.

    Parameters
    ----------
    recipe
        Anything :func:`pescador.stream` accepts, built from deterministic
        parts: sources that give the same items every run, and an int or
        None as each ``random_state`` (with None, the run records the seed
        it draws).
    state : dict, optional
        A ``state_dict()`` of an earlier run of the same recipe: the new run
        yields exactly the items that run would have yielded next.

    Raises
    ------
    PescadorError
        For a state of another recipe or version (saying what differs), a
        state whose fields do not fit (naming the field), and for stages
        that cannot resume (``cache``) or random states that
        cannot be reproduced (a ``Generator`` or ``RandomState``).

    Warns
    -----
    ResumeWarning
        When ``state`` was taken after an exception ended the run (the run
        resumed from it yields nothing), or in a process whose hash seed
        differs from the saving process's while the recipe holds or
        iterates a set whose order depends on it.

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


