"""The per-item combinators: ``map``, ``filter``, ``shuffle`` and ``unbatch``.

Each is a :class:`~pescador.stage.Stage` with a plain form (see
:mod:`pescador.stage`): a plain run (``iter(recipe)``) runs a fused
generator that costs what the loop written by hand costs, and a resumable
run runs the stage object, which yields the same items and raises the same
errors at the same items.

``pescador.map`` and ``pescador.filter`` are public names, but not in
``pescador.__all__``: ``from pescador import *`` must not replace the
builtins ``map`` and ``filter`` in a user's module, where ``map(f, xs)``
would then silently make a recipe instead of an iterator.

``shuffle`` and ``unbatch`` resume by replaying their upstream from an
earlier state, not by keeping items in their state (see :class:`_Snapshots`
and docs/resume.rst): a state stays small and JSON, whatever the items.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, TypeVar, overload

import numpy as np

from ._checks import _check_random_state, check_size
from ._choice import _check_rng_state, _restore_block
from ._random import _rng
from .core import (_MISSING, CHUNK, ItemTransform, Source, Stream, Transform, _Map, _name, is_item, not_a_dict,
                   short_repr)
from .exceptions import DataError, ParameterTypeError, PescadorError
from .mux import _unseeded
from .stage import (NO_EPOCHS, Block, Stage, check_fields, check_int, most_given, rng_state, run_seeds,
                    set_rng_state, start_from, start_plain)
from .workers import worker_info

__all__ = ["map", "filter", "shuffle", "unbatch"]

_T = TypeVar("_T")
_U = TypeVar("_U")

_BLOCK = 1024  # shuffle draws its random numbers in blocks of this size (as the muxes do)


# ----------------------------------------------------------------------------
# map and filter: a user's function per item, its exceptions named with the item
# ----------------------------------------------------------------------------


def _note(exc: Exception, where: str, fn: Callable, position: int) -> None:
    """Note on ``exc``, raised by the user's ``fn`` on the item at ``position``, where it was raised (its
    type unchanged, so that the user's ``except`` clauses still catch it; the caller re-raises it).  A
    StopIteration is raised as a RuntimeError instead, as a generator does (PEP 479): it would otherwise
    end the run silently."""
    if isinstance(exc, StopIteration):
        raise RuntimeError(f"{where}: {_name(fn)} raised StopIteration on item {position}; a function given to a "
                           "stage must return a value, not end the run") from exc
    note = f"({where}: {_name(fn)} raised this on item {position} of the stage's upstream)"
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(note)
    else:  # (3.10 shows no notes, but keeps them where code can read them)
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def _check_fn(fn: Any, where: str, name: str, source: Any) -> None:
    # (a Stream and a Streamer are callable too: given first, they are the data, in the wrong place)
    if callable(fn) and not isinstance(fn, Stream) and getattr(fn, "__pescador_stream__", None) is None:
        return
    hint = ""
    if source is not _MISSING and callable(source):
        hint = f"; the function comes first: {where}(fn, source)"
    raise ParameterTypeError(f"{where}: {name} must be a function of one item; got {short_repr(fn, 60)}{hint}")


class _Apply(_Map):
    """map: ``fn(item)`` for each item.  State: the position and the upstream's state."""

    name = "map"

    def __init__(self, upstream: Any, fn: Callable, state: dict | None = None) -> None:
        self.fn = fn
        self._begin(upstream, state)

    def __next__(self) -> Any:
        item = next(self.up)
        position = self.position
        self.position = position + 1
        try:
            return self.fn(item)
        except Exception as exc:
            _note(exc, "map", self.fn, position)
            raise

    @classmethod
    def plain(cls, upstream: Any, fn: Callable) -> Iterator:
        return _mapped(start_plain(upstream), fn)


def _mapped(run: Iterator, fn: Callable) -> Iterator:
    """map's plain run.  A try costs nothing where no exception is raised (from Python 3.11); the item's
    position, for the note, is counted in chunks of 256 (cheaper than enumerate's new int per item)."""
    base = 0
    while True:
        i = -1
        for i, item in zip(CHUNK, run):  # (the range first: a full chunk ends without drawing an item)
            try:
                out = fn(item)
            except Exception as exc:
                _note(exc, "map", fn, base + i)
                raise
            yield out
        if i < 255:
            return
        base += 256


@overload
def map(fn: Callable[[_T], _U]) -> Transform[_T, _U]: ...
@overload
def map(fn: Callable[[_T], _U], source: Source[_T]) -> Stream[_U]: ...
def map(fn: Callable[[Any], Any], source: Any = _MISSING) -> Transform | Stream:
    """Apply ``fn`` to every item of a stream: one item out per item in, in order.

    Curried and data-last: ``map(fn)`` is a :class:`~pescador.Transform`,
    ``map(fn, source)`` the stream.  Unlike the builtin ``map`` (or
    ``toolz.curried.map``), the result is a recipe: it restarts, pickles
    (``fn`` too: a lambda or a notebook's function travels by value), runs in
    ``zmq_offload`` and ``ray_offload`` workers and resumes exactly.
    :func:`pescador.epoch_length` looks through it.

    ``pescador.map`` is not in ``pescador.__all__``, so that ``from pescador
    import *`` leaves the builtin ``map`` alone; call it as ``pescador.map``.

    Parameters
    ----------
    fn : callable
        Called with each item; what it returns is the item passed on.  An
        exception it raises reaches the consumer as it is (the same type),
        with a note naming the stage, ``fn`` and the item's position; a
        StopIteration becomes a RuntimeError, as in a generator.
    source : optional
        Anything :func:`pescador.stream` accepts.

    Raises
    ------
    ParameterTypeError
        When ``fn`` is not callable.

    Examples
    --------
    >>> import numpy as np, pescador
    >>> def scaled(item):
    ...     return {"x": item["x"] * 10}
    >>> s = pescador.map(scaled, [{"x": np.array([1])}, {"x": np.array([2])}])
    >>> [int(item["x"][0]) for item in s]
    [10, 20]
    >>> pescador.map(scaled)
    map(fn=scaled)
    """
    _check_fn(fn, "map", "fn", source)
    step = Transform("map", _Apply, {"fn": fn})
    return step if source is _MISSING else step(source)


class _Keep(Stage):
    """filter: the items for which ``pred(item)`` is true.  State: the upstream items seen (the positions
    of the messages) and the upstream's state."""

    def __init__(self, upstream: Any, pred: Callable, state: dict | None = None) -> None:
        self.pred, self.position = pred, 0
        if state is None:
            self.up = self.start_upstream(upstream, None)
            return
        where = "filter stage"
        self.position = check_int(check_fields(state, ("pos", "up"), where), "pos", where, 0)
        self.up = start_from(upstream, state, "up", where)

    def __next__(self) -> Any:
        pull, pred = self.up.__next__, self.pred
        while True:
            item = pull()
            position = self.position
            self.position = position + 1
            try:
                drop = not pred(item)
            except Exception as exc:
                _note(exc, "filter", pred, position)
                raise
            if not drop:
                return item

    def state(self) -> dict:
        return {"pos": self.position, "up": self.up.state()}

    @classmethod
    def plain(cls, upstream: Any, pred: Callable) -> Iterator:
        return _kept(start_plain(upstream), pred)


def _kept(run: Iterator, pred: Callable) -> Iterator:
    """filter's plain run (positions counted as in ``_mapped``)."""
    base = 0
    while True:
        i = -1
        for i, item in zip(CHUNK, run):
            try:
                drop = not pred(item)
            except Exception as exc:
                _note(exc, "filter", pred, base + i)
                raise
            if not drop:
                yield item
        if i < 255:
            return
        base += 256


@overload
def filter(pred: Callable[[_T], Any]) -> ItemTransform: ...
@overload
def filter(pred: Callable[[_T], Any], source: Source[_T]) -> Stream[_T]: ...
def filter(pred: Callable[[Any], Any], source: Any = _MISSING) -> Transform | Stream:
    """Keep the items of a stream for which ``pred(item)`` is true, in order.

    Curried and data-last, like :func:`pescador.map`, and like it not in
    ``pescador.__all__`` (``from pescador import *`` leaves the builtin
    ``filter`` alone): call it as ``pescador.filter``.

    Parameters
    ----------
    pred : callable
        Called with each item; the item is kept when the result is true.
        Its exceptions reach the consumer as :func:`pescador.map`'s do.
    source : optional
        Anything :func:`pescador.stream` accepts.

    Raises
    ------
    ParameterTypeError
        When ``pred`` is not callable.

    Examples
    --------
    >>> import pescador
    >>> def even(item):
    ...     return item["i"] % 2 == 0
    >>> [x["i"] for x in pescador.filter(even, [{"i": i} for i in range(6)])]
    [0, 2, 4]
    """
    _check_fn(pred, "filter", "pred", source)
    step = ItemTransform("filter", _Keep, {"pred": pred})
    return step if source is _MISSING else step(source)


# ----------------------------------------------------------------------------
# Replaying the upstream from an earlier state
# ----------------------------------------------------------------------------


class _Snapshots:
    """The states of a stage's upstream, taken every ``every`` upstream items, kept as long as a resume may
    start there.  A stage that holds items (a shuffle buffer, buckets) resumes from the last snapshot
    before its oldest held item, replaying what came after, so that its own state holds no item.

    A snapshot is ``(at, text)``: the number of upstream items drawn before it, and the JSON text (a
    frozen copy) of the fields the stage gave: the upstream's state under ``"up"``, and what the stage
    needs to replay from there.
    """

    __slots__ = ("every", "taken")

    def __init__(self, every: int) -> None:
        self.every = every
        self.taken: list = []

    def take(self, at: int, held: Any, fields: dict) -> None:
        """Take a snapshot before upstream item ``at`` is drawn, and forget those no item still held needs:
        ``held`` are the upstream positions of the items held (an item needs the last snapshot at or before
        its position; a position before the first snapshot needs the first)."""
        taken = self.taken
        taken.append((at, json.dumps(fields)))
        starts = [start for start, _ in taken]
        needed = {len(taken) - 1} | {max(0, bisect_right(starts, position) - 1) for position in held}
        self.taken = [taken[k] for k in sorted(needed)]

    def restored(self, at: int, fields: dict) -> None:
        self.taken = [(at, json.dumps(fields))]

    def state(self, oldest: int) -> dict:
        """The fields of the last snapshot taken at or before upstream item ``oldest`` (else the first), with
        ``at``."""
        at, text = self.taken[0]
        for later, later_text in self.taken[1:]:
            if later > oldest:
                break
            at, text = later, later_text
        return {"at": at, **json.loads(text)}


def _restore_rng(block: Block, state: dict, where: str) -> None:
    """Set a stage's generator and its block of draws from a snapshot's fields (each checked)."""
    _check_rng_state(state["rng"], block.rng.bit_generator.state, where, "rng")
    _restore_block(block, state["block"], where, "block")
    set_rng_state(block.rng, state["rng"], where, "rng")


# ----------------------------------------------------------------------------
# shuffle
# ----------------------------------------------------------------------------


def _uniforms(rng: Any) -> list:
    return rng.random(_BLOCK).tolist()


class _Held:
    """Where a replayed item stands that had left the buffer before the checkpoint (see _Shuffle)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<an item given before the checkpoint>"


_GONE = _Held()


_SHUFFLE_FIELDS = ("at", "up", "rng", "block", "drawn", "given")


class _Shuffle(Stage):
    """shuffle's run: a buffer of ``size`` items; each item out is a uniformly chosen item of the
    buffer, whose place the next upstream item takes; once the upstream ends, the rest in random order.

    State (no item in it): a snapshot of the upstream (and of the generator) taken before upstream item
    ``at`` was drawn, at or before the oldest item in the buffer; the items drawn (``drawn``) and given
    (``given``).  A resume draws the upstream again from the snapshot, makes the same choices, and keeps
    the items the buffer held.  It costs the upstream items drawn since the snapshot: about ``size *
    (ln(size) + 1)`` (the buffer's oldest item waits about ``size * ln(size)`` draws, and snapshots
    are ``size`` draws apart).
    """

    replays = True  # (over an upstream that replays exactly: resumable() checks it)

    def __init__(self, upstream: Any, size: int, random_state: Any = None, state: dict | None = None) -> None:
        self.size = size
        self.where = where = f"shuffle(size={size}, random_state={random_state!r})"
        seeds = run_seeds()  # (a resumable run's: random_state=None takes the next of them, which it records)
        if not (isinstance(random_state, int) or (random_state is None and seeds is not None)):
            raise _unseeded(where, random_state)  # (the object runs only in a resumable run)
        self.block = Block(_rng(random_state, worker_info(), seeds), _uniforms)
        self.buf: list = []
        self.index: list = []  # the upstream position of each item in the buffer
        self.drawn = self.given = 0
        self.ended = False
        self.snaps = _Snapshots(max(size, 16))
        if state is None:
            self.up = self.start_upstream(upstream, None)
            self._snap()
        else:
            self._restore(upstream, state)

    def _snap(self) -> None:
        block = self.block
        self.snaps.take(self.drawn, self.index, {"up": self.up.state(), "rng": rng_state(block.rng),
                                                 "block": block.state()})

    def _pull(self) -> Any:
        drawn = self.drawn
        if drawn and not drawn % self.snaps.every:
            self._snap()
        item = next(self.up)
        self.drawn = drawn + 1
        return item

    def __next__(self) -> Any:
        buf, index = self.buf, self.index
        if not self.ended:
            try:
                while len(buf) < self.size:
                    item = self._pull()
                    buf.append(item)
                    index.append(self.drawn - 1)
                item = self._pull()
            except StopIteration:
                self.ended = True
            else:
                block = self.block
                j = int((block.items or block.refill()).pop() * self.size)
                out, buf[j], index[j] = buf[j], item, self.drawn - 1
                self.given += 1
                return out
        if not buf:
            raise StopIteration
        block = self.block
        j = int((block.items or block.refill()).pop() * len(buf))
        last, at = buf.pop(), index.pop()  # (the last item takes the place of the one given)
        if j < len(buf):
            last, buf[j], index[j] = buf[j], last, at
        self.given += 1
        return last

    def state(self) -> dict:
        return {**self.snaps.state(min(self.index, default=self.drawn)), "drawn": self.drawn, "given": self.given}

    def _restore(self, upstream: Any, state: dict) -> None:
        """Replay from the snapshot to where the state says the run was (see the class)."""
        where, size, most = self.where, self.size, most_given()
        high = None if most is None else most + size  # (the items given, and those in the buffer)
        at = check_int(check_fields(state, _SHUFFLE_FIELDS, where), "at", where, 0, high)
        drawn = check_int(state, "drawn", where, at, high)
        given = check_int(state, "given", where, max(0, at - size), drawn if most is None else min(drawn, most))
        if drawn - given > size:
            raise PescadorError(f"resumable: the state of {where}: it says {drawn} items were drawn and {given} "
                                f"given, which leaves more than the buffer's {size} in it")
        self.up = start_from(upstream, state, "up", where, at)  # (the snapshot's: taken when `at` had been drawn)
        _restore_rng(self.block, state, where)
        self.snaps.restored(at, {k: state[k] for k in ("up", "rng", "block")})
        self.drawn, self.given = at, max(0, at - size)
        self.buf, self.index = [_GONE] * min(at, size), [-1] * min(at, size)
        try:
            while self.given < given:
                self.__next__()
        except StopIteration:
            raise PescadorError(f"resumable: the state of {where}: the run ended on replay after {self.given} "
                                f"items, but the state says {given} were given: the state is of another run, or "
                                "the upstream is not deterministic") from None
        if self.drawn != drawn or _GONE in self.buf:
            raise PescadorError(f"resumable: the state of {where}: on replay, the buffer drew {self.drawn} items "
                                f"where the state says {drawn}, or holds an item given before the checkpoint: the "
                                "state is of another run, or the upstream is not deterministic")

    @classmethod
    def plain(cls, upstream: Any, size: int, random_state: Any = None) -> Iterator:
        return _shuffled(start_plain(upstream), size, _rng(random_state, worker_info()))

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable) -> float | None:
        return length(upstream)

    @classmethod
    def epoch_length(cls, upstream: Any, params: dict, epoch: Callable) -> Any:
        return epoch(upstream)


def _shuffled(run: Iterator, size: int, rng: Any) -> Iterator:
    """shuffle's plain run: the loop of ``_Shuffle.__next__``, fused (the same draws, from blocks)."""
    buf = list(islice(run, size))
    uniforms: list = []
    for item in run if len(buf) == size else ():
        if not uniforms:
            uniforms = rng.random(_BLOCK).tolist()
        j = int(uniforms.pop() * size)
        out = buf[j]
        buf[j] = item
        yield out
    while buf:
        if not uniforms:
            uniforms = rng.random(_BLOCK).tolist()
        j = int(uniforms.pop() * len(buf))
        last = buf.pop()
        if j < len(buf):
            last, buf[j] = buf[j], last
        yield last


def shuffle(size: int, source: Any = _MISSING, *, random_state: Any = None) -> Transform | Stream:
    """Shuffle a stream through a buffer of ``size`` items, as ``tf.data``'s ``shuffle`` does.

    The first ``size`` items fill the buffer; then each item out is one of
    the buffer's, chosen uniformly at random, and the next upstream item
    takes its place; when the upstream ends, the buffer empties in random
    order.  Every item comes out exactly once.  An item can come out at most
    ``size`` places before its place in the upstream (and any number
    after): a buffer as large as the stream shuffles it uniformly; a smaller
    one mixes items that are near each other, so put it after a ``mux`` or a
    shuffled list of files, and give it a few thousand items.  ``size=1``
    keeps the order.

    Curried and data-last: ``shuffle(1000)`` is a
    :class:`~pescador.Transform`, ``shuffle(1000, source)`` the stream.
    :func:`pescador.epoch_length` looks through it (it keeps the number of
    items).

    Parameters
    ----------
    size : int, 1 to 2**31 - 1
        How many items the buffer holds.
    source : optional
        Anything :func:`pescador.stream` accepts.
    random_state : None, int, np.random.Generator or np.random.RandomState
        As for :func:`pescador.mux`: an int makes every run the same
        shuffle; None draws fresh entropy for each run (a resumable run
        records the seed it drew, so it resumes exactly); a ``Generator`` or
        ``RandomState`` is refused by a resumable run (its draws are not
        part of the state).

    Raises
    ------
    ParameterError, ParameterTypeError
        For a bad ``size`` or ``random_state``.

    Notes
    -----
    A resumable run's state holds no item: it resumes by drawing the
    upstream again from a state taken before the oldest item in the buffer,
    which costs about ``size * (ln(size) + 1)`` upstream items (see the
    Checkpoint and resume page).

    Examples
    --------
    >>> import pescador
    >>> s = pescador.shuffle(4, [{"i": i} for i in range(8)], random_state=0)
    >>> sorted(x["i"] for x in s) == list(range(8))
    True
    >>> [x["i"] for x in s] == [x["i"] for x in s]   # a seeded shuffle repeats
    True
    >>> pescador.shuffle(1000, random_state=0)
    shuffle(size=1000, random_state=0)
    """
    if isinstance(size, list) and source is _MISSING:  # (random.shuffle(x) after `from pescador import *`)
        raise ParameterTypeError("shuffle: size must be an integer from 1 to 2,147,483,647; got a list. pescador.shuffle(size) makes a "
                                 "shuffle buffer for a stream; to shuffle a list in place, use random.shuffle")
    params = {"size": check_size(size, "shuffle", "size"),
              "random_state": _check_random_state(random_state, "shuffle")}
    step = ItemTransform("shuffle", _Shuffle, params)
    return step if source is _MISSING else step(source)


# ----------------------------------------------------------------------------
# unbatch
# ----------------------------------------------------------------------------


def _columns(item: Any, position: int) -> tuple[tuple, list, int]:
    """The keys of a batch, each key's rows (an array of shape ``(rows, 1, ...)``: iterating it gives the
    one-row views), and the row count; a DataError naming what does not fit."""
    if not is_item(item):
        raise not_a_dict(item, "unbatch", position)
    if not item:
        raise DataError(f"unbatch: item {position} is an empty dict; expected a dict of arrays with rows along "
                        "their first axis")
    columns, rows = [], -1
    for key, value in item.items():
        if type(value) is not np.ndarray:
            value = _as_rows(value, key, position)
        if value.ndim == 0:
            raise DataError(f"unbatch: item {position}, key {key!r}: got a 0-d value {short_repr(value, 40)}; "
                            "expected an array with rows along its first axis (shape (rows, ...))")
        if rows != value.shape[0]:
            if rows >= 0:
                counts = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in item.items()}
                raise DataError(f"unbatch: item {position}: its arrays disagree on the number of rows ({counts}); "
                                "every key of a batch needs the same first dimension")
            rows = value.shape[0]
        columns.append(value[:, None])
    return tuple(item), columns, rows


def _as_rows(value: Any, key: str, position: int) -> np.ndarray:
    """A value that is not a plain ndarray: a subclass (a memmap) is split as it is; an array-like (a
    list of numbers) becomes an array; anything numpy would make objects of is refused."""
    if isinstance(value, np.ndarray):
        return value
    array = np.asarray(value)
    if array.dtype == object:
        raise DataError(f"unbatch: item {position}, key {key!r}: got {short_repr(value, 40)} (a "
                        f"{type(value).__name__}); expected an array with rows along its first axis")
    return array


class _Unbatch(Stage):
    """unbatch's run: the rows of each upstream item, one at a time, as views.

    State: the upstream's state from before the batch being split was drawn, and the rows of it given
    (``row``); a resume draws that batch again and skips them (so no row is in the state).  ``pos``
    counts the batches drawn (for the messages).
    """

    replays = True  # (over an upstream that replays exactly: resumable() checks it)

    def __init__(self, upstream: Any, state: dict | None = None) -> None:
        self.position, self.row, self.rows = 0, 0, 0
        self.keys: tuple = ()
        self.columns: list = []
        self.before: str | None = None  # (the upstream's state before the current batch, as JSON text)
        if state is None:
            self.up = self.start_upstream(upstream, None)
            return
        where = "unbatch stage"
        check_fields(state, ("pos", "row", "up"), where)
        position = check_int(state, "pos", where, 0)
        row = check_int(state, "row", where, 0)
        self.up = start_from(upstream, state, "up", where)
        self.position = position
        if row:
            self.before = json.dumps(state["up"])
            try:
                self._draw()
            except StopIteration:
                raise PescadorError(f"resumable: the state of {where}: the upstream ended on replay, where the state "
                                    f"says {row} rows of a batch were given") from None
            if row >= self.rows:
                raise PescadorError(f"resumable: the state of {where}: field 'row' says {row} rows of a batch of "
                                    f"{self.rows} were given; expected fewer (the state is of another run)")
            self.row = row

    def _draw(self) -> None:
        item = next(self.up)
        position = self.position
        self.position = position + 1
        self.keys, self.columns, self.rows = _columns(item, position)
        self.row = 0

    def __next__(self) -> dict:
        while self.row >= self.rows:
            self.before = json.dumps(self.up.state())
            self._draw()
        row = self.row
        self.row = row + 1
        return {key: column[row] for key, column in zip(self.keys, self.columns)}

    def state(self) -> dict:
        if self.row < self.rows:
            return {"pos": self.position - 1, "row": self.row, "up": json.loads(self.before)}
        return {"pos": self.position, "row": 0, "up": self.up.state()}

    @classmethod
    def plain(cls, upstream: Any) -> Iterator:
        return _unbatched(start_plain(upstream))

    @classmethod
    def epoch_length(cls, upstream: Any, params: dict, epoch: Callable) -> Any:
        return NO_EPOCHS if epoch(upstream) is NO_EPOCHS else None


def _unbatched(run: Iterator) -> Iterator[dict]:
    """unbatch's plain run."""
    for position, item in enumerate(run):
        keys, columns, _ = _columns(item, position)
        if len(keys) == 1:
            key = keys[0]
            for row in columns[0]:
                yield {key: row}
        else:
            for row in zip(*columns):
                yield dict(zip(keys, row))


@overload
def unbatch() -> Transform[dict[str, Any], dict[str, np.ndarray]]: ...
@overload
def unbatch(source: Source[dict[str, Any]]) -> Stream[dict[str, np.ndarray]]: ...
def unbatch(source: Any = _MISSING) -> Transform | Stream:
    """Split each item (a dict of arrays with a common first axis) into one-row items, in order.

    The inverse of :func:`pescador.buffer`: an item whose arrays have ``r``
    rows gives ``r`` items, row ``i`` of each key as an array of shape
    ``(1, ...)`` (its first axis kept, as ``buffer`` takes rows), so
    ``buffer(n)`` after ``unbatch()`` gives the same rows in the same order
    in batches of another size.  An item of zero rows gives nothing.

    The rows are views of the item's arrays, not copies: a row shares the
    batch's memory for as long as it is held.  That is safe wherever the
    batch itself was: a source that overwrites its arrays after yielding
    them would overwrite the rows already given too, once unbatch draws its
    next batch (``buffer`` copies each row as it comes, so ``unbatch()``
    then ``buffer(n)`` is safe over any source).  An array-like value (a
    list of numbers) is made an array first.

    Raises
    ------
    DataError
        (at run time) For an item that is not a dict of arrays, a 0-d value
        (a number), a value that is not an array, or arrays that disagree
        on their number of rows; the message names the item's position and
        the key.

    Examples
    --------
    >>> import numpy as np, pescador
    >>> batch = {"x": np.arange(6).reshape(3, 2), "y": np.array([0, 1, 0])}
    >>> rows = list(pescador.unbatch([batch]))
    >>> len(rows), rows[1]["x"].tolist(), rows[1]["y"].tolist()
    (3, [[2, 3]], [1])
    >>> np.shares_memory(rows[1]["x"], batch["x"])
    True
    >>> pescador.unbatch()
    unbatch()
    """
    step = Transform("unbatch", _Unbatch, {})
    return step if source is _MISSING else step(source)


