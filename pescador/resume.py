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
Every ``random_state`` that draws must be an int: a mux kind or ``epochs``
with None, a ``Generator`` or a ``RandomState`` is refused when the
resumable run starts (the state of a run that draws from entropy could not
be reproduced).

Through ``zmq_offload`` each worker runs its part of the recipe resumably
and sends its state with an item now and then (at most about every 10 ms
of its work); the state of the run holds, for each worker, the latest such
state delivered and the count of its items delivered since, so a resumed
worker starts there and draws those items again and drops them: it goes on
after the last of its items that was delivered, and items in flight when
the checkpoint is taken are produced again after a resume, not lost.  With one worker the resumed run continues exactly; with several,
each worker's items continue exactly, and they interleave as they arrive,
as in any run of several workers.  Sources must own their randomness (a
seeded generator made from their arguments): the legacy global
``np.random`` is not part of the state.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from typing import Any, Generic, TypeVar, overload


from . import core
from .core import Stream, stream
from .exceptions import ParameterTypeError, PescadorError
from ._fingerprint import fingerprint as _fingerprint
from .stage import _from_collection, not_resumable, stage_of, start, tracked

__all__ = ["resumable", "Resumable", "STATE_VERSION"]

STATE_VERSION = 2


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
    if s.args:
        _check_resumes(s.args[0])


_T = TypeVar("_T")


class Resumable(Generic[_T]):
    """A run of a recipe that can report its state and be resumed (see :func:`resumable`).

    It is the same chain of stages as ``iter(recipe)``; iterating it
    iterates that chain directly.
    """

    def __init__(self, recipe: Any, state: dict | None = None) -> None:
        self.recipe = stream(recipe)
        _check_resumes(self.recipe)
        self.outline = _outline(self.recipe)
        self.fingerprint = _fingerprint(self.recipe)
        inner = None
        if state is not None:  # (a copy: a state may serve twice, and a stage may keep parts of it)
            inner = copy.deepcopy(_check_state(state, self.outline, self.fingerprint))
        with tracked(True):
            self.node = start(self.recipe, inner)

    def __iter__(self) -> Iterator[_T]:
        return self.node

    def __next__(self) -> _T:
        return next(self.node)

    def state_dict(self) -> dict:
        """Where the run is: a small JSON-serialisable dict, versioned."""
        state = {
            "pescador_state": STATE_VERSION,
            "recipe": self.fingerprint,
            "outline": self.outline,
            "stages": self.node.state(),
        }
        state["check"] = _sign(state)
        return state


def _sign(state: dict) -> str:
    """A check of a state's contents (all but the check itself): a state changed after it was saved,
    on disk or by hand, is refused as a whole, even where each changed field would still fit."""
    body = {k: v for k, v in state.items() if k != "check"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_state(state: Any, outline: list, fingerprint: str) -> dict:
    if not isinstance(state, dict) or "pescador_state" not in state:
        raise ParameterTypeError(f"resumable: expected a state made by state_dict(); got a {type(state).__name__}")
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
    if not isinstance(state.get("stages"), dict):
        raise PescadorError(
            f"resumable: the state's field 'stages' must be the stages' state (a dict); got {type(state.get('stages')).__name__}"
        )
    try:
        check = _sign(state)
    except (TypeError, ValueError) as exc:
        raise PescadorError(f"resumable: the state holds values that JSON cannot hold ({exc})") from None
    if state.get("check") != check:
        raise PescadorError(
            "resumable: the state was changed after it was saved (its check does not match its contents); "
            "resume from a state as state_dict() made it"
        )
    return state["stages"]


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


