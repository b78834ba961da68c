"""Variable-length items into batches: ``padded_batch`` and ``bucket``.

Speech and music items are ``(time, features)`` arrays whose time varies.
``padded_batch(n)`` stacks ``n`` items along a new first axis, padding each
variable-length key along its first axis to the longest item of the batch
(or to a fixed ``length``), and adds each item's length as an extra key.
``bucket(boundaries, n)`` first sorts items into buckets by length, so that
a batch holds items of similar length and little of it is padding (the
model: ``tf.data``'s ``bucket_by_sequence_length``).

Why not ``buffer(n, pad=...)``: ``buffer`` concatenates rows along the
items' own first axis and splits an item across batches (``n`` counts
rows); a padded batch stacks whole items along a new axis (``n`` counts
items, and an item is never split).  One stage with a flag would give ``n``
two meanings.  Both stages here share one assembler (:class:`_Padder`).
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from ._checks import check_size
from .buffered import _descr, _read_dims, _read_dtype
from .combinators import _GONE, _Snapshots
from .core import _MISSING, Source, Stream, Transform, _name, is_item, not_a_dict, short_repr
from .exceptions import DataError, ParameterError, ParameterTypeError, PescadorError
from .stage import (NO_EPOCHS, Stage, check_bool, check_fields, check_int, check_list, most_given, start_from,
                    start_plain)

__all__ = ["padded_batch", "bucket"]

_NUMERIC = frozenset("biufcmM")  # the dtype kinds a batch holds (not strings, bytes, objects)


# ----------------------------------------------------------------------------
# The assembler: a layout from the first item, checks per item, and the batch
# ----------------------------------------------------------------------------


class _Padder:
    """Checks items against the layout of the first and makes padded batches of them.

    The layout: per key, whether it is padded (along its first axis), its
    dtype and its shape (the trailing shape of a padded key, the whole shape
    of a stacked one).  ``pad`` is the parameter (key -> padding value, or
    None: every key of at least one dimension, padded with 0).
    """

    __slots__ = ("where", "pad", "length", "lengths", "layout", "values")

    def __init__(self, where: str, pad: dict | None, length: int | None, lengths: str | None) -> None:
        self.where, self.pad, self.length, self.lengths = where, pad, length, lengths
        self.layout: list | None = None  # [(key, padded, dtype, shape)]
        self.values: dict = {}  # padded key -> padding value

    # -- the layout ------------------------------------------------------------------------------
    def learn(self, item: Any, position: int) -> None:
        """Take the layout of the first item."""
        where = self.where
        if not is_item(item):
            raise not_a_dict(item, where, position)
        if not item:
            raise DataError(f"{where}: item {position} is an empty dict; expected a dict of arrays")
        layout = []
        for key, value in item.items():
            array = _array(value, key, position, where)
            padded = array.ndim > 0 if self.pad is None else key in self.pad
            if padded and array.ndim == 0:
                raise DataError(f"{where}: item {position}, key {key!r}: a 0-d value cannot be padded; pad the keys "
                                "whose first axis varies (pad=...), and leave out this one")
            layout.append((key, padded, array.dtype, array.shape[1:] if padded else array.shape))
        missing = [key for key in self.pad or () if key not in item]
        if missing:
            raise DataError(f"{where}: item {position} has no key {missing[0]!r} to pad; its keys are {list(item)}")
        self.set_layout(layout, position)

    def set_layout(self, layout: list, position: int) -> None:
        keys = [key for key, *_ in layout]
        padded = [key for key, p, *_ in layout if p]
        if self.lengths is not None:
            named = [self.lengths.replace("{key}", key) for key in padded]
            clash = [name for name in named if name in keys] or [name for name in named if named.count(name) > 1]
            if clash:
                raise DataError(f"{self.where}: the lengths key {clash[0]!r} (lengths={self.lengths!r}) is a key of "
                                f"item {position} or the lengths key of two padded keys ({padded}); choose other "
                                "names, e.g. lengths='{key}_lengths'")
        values = {key: 0 if self.pad is None else self.pad[key] for key in padded}
        for key, _, dtype, _ in layout:
            if key in values and not _fits(values[key], dtype):
                raise DataError(f"{self.where}: the padding value {values[key]!r} of key {key!r} does not fit its "
                                f"dtype {dtype} (the first item's, item {position}); give a padding value of that "
                                "dtype (pad={...})")
        self.layout, self.values = layout, values

    def state(self) -> dict | None:
        if self.layout is None:
            return None
        return {key: {"pad": padded, "dtype": _descr(dtype), "shape": list(shape)}
                for key, padded, dtype, shape in self.layout}

    def restore(self, value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, dict) or not value:
            raise PescadorError(f"resumable: the state of {where}: field 'layout' must be null or a non-empty dict of "
                                f"key -> {{pad, dtype, shape}}; got {short_repr(value)}")
        layout = []
        for key, entry in value.items():
            name = f"layout[{key!r}]"
            check_fields(entry, ("pad", "dtype", "shape"), f"{where}, {name}")
            padded = check_bool(entry, "pad", f"{where}, {name}")
            dtype = _read_dtype(entry["dtype"], where, f"{name}.dtype")
            if dtype.kind not in _NUMERIC:
                raise PescadorError(f"resumable: the state of {where}: field {name}.dtype must be a numeric dtype")
            shape = _read_dims(entry["shape"], where, f"{name}.shape")
            # (pad=None pads every key of one dimension or more: a key not padded is then 0-d)
            if padded != (key in self.pad) if self.pad is not None else not padded and shape:
                raise PescadorError(f"resumable: the state of {where}: field {name} says pad={padded} for a key of "
                                    f"shape {shape}, which the parameter pad={self.pad!r} does not")
            layout.append((key, padded, dtype, shape))
        if self.pad is not None and not set(self.pad) <= {key for key, *_ in layout}:
            raise PescadorError(f"resumable: the state of {where}: field 'layout' lacks a key of pad={self.pad!r}")
        try:
            self.set_layout(layout, 0)
        except DataError as exc:
            raise PescadorError(f"resumable: the state of {where}: field 'layout': {exc}") from None

    # -- items and batches ------------------------------------------------------------------------
    def check(self, item: Any, position: int) -> int:
        """Check an item against the layout (learnt from it if it is the first); return its length: the
        longest first axis among its padded keys (0 for none)."""
        if self.layout is None:
            self.learn(item, position)
        where, longest = self.where, 0
        if type(item) is not dict and not is_item(item):
            raise not_a_dict(item, where, position)
        if len(item) != len(self.layout):
            raise DataError(f"{where}: item {position} has keys {sorted(item)}; expected the keys of the first item, "
                            f"{sorted(key for key, *_ in self.layout)}")
        for key, padded, dtype, shape in self.layout:
            try:
                array = item[key]
            except KeyError:
                raise DataError(f"{where}: item {position} has no key {key!r}; expected the keys of the first item, "
                                f"{sorted(k for k, *_ in self.layout)}") from None
            if type(array) is not np.ndarray:
                array = _array(array, key, position, where)
            if array.dtype is not dtype and not np.can_cast(array.dtype, dtype, "safe"):
                raise DataError(f"{where}: item {position}, key {key!r}: dtype {array.dtype} cannot be stored safely "
                                f"in {dtype}, the dtype of the first item; make the source yield one dtype (or cast "
                                "it in a pescador.map before)")
            if padded:
                if array.shape[1:] != shape or not array.ndim:
                    raise DataError(f"{where}: item {position}, key {key!r}: shape {array.shape} does not match "
                                    f"{_rows_shape(shape)}, the layout of the first item (only the first axis may vary)")
                rows = array.shape[0]
                if self.length is not None and rows > self.length:
                    raise DataError(f"{where}: item {position}, key {key!r}: {rows} long, longer than length="
                                    f"{self.length}; raise length, or cut long items before (pescador.map)")
                if rows > longest:
                    longest = rows
            elif array.shape != shape:
                raise DataError(f"{where}: item {position}, key {key!r}: shape {array.shape} differs from the first "
                                f"item's {shape}; a key that is not padded must keep its shape (pad it: pad=...)")
        return longest

    def batch(self, items: list) -> dict:
        """The padded batch of ``items`` (checked): stacked along a new first axis, padded keys padded to
        the longest (or to ``length``), with the lengths."""
        out = {}
        m = len(items)
        for key, padded, dtype, shape in self.layout:
            arrays = [item[key] for item in items]
            if not padded:
                out[key] = np.array(arrays, dtype=dtype) if shape else np.fromiter(arrays, dtype, m)
                continue
            sizes = [len(array) for array in arrays]
            longest = self.length if self.length is not None else max(sizes)
            value = self.values[key]
            target = (np.zeros if value == 0 else np.empty)((m, longest, *shape), dtype)
            if value != 0:
                target.fill(value)
            for row, (array, size) in enumerate(zip(arrays, sizes)):
                target[row, :size] = array
            out[key] = target
            if self.lengths is not None:
                out[self.lengths.replace("{key}", key)] = np.array(sizes, dtype=np.int64)
        return out


def _fits(value: Any, dtype: np.dtype) -> bool:
    """Whether a padding value is stored as it is in ``dtype`` (not wrapped, cut or rounded)."""
    try:
        with np.errstate(all="ignore"):
            stored = np.array(value, dtype=dtype)
    except (OverflowError, ValueError, TypeError):
        return False
    return bool(stored == value) or bool(stored != stored and value != value)  # (NaN is NaN)


def _rows_shape(trail: tuple) -> str:
    return "(" + ", ".join(["length", *map(str, trail)]) + ")"


def _array(value: Any, key: str, position: int, where: str) -> np.ndarray:
    """An item's value as an array of numbers (array-likes converted), or a DataError naming it."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind not in _NUMERIC or isinstance(value, np.ma.MaskedArray):
        raise DataError(f"{where}: item {position}, key {key!r}: got {short_repr(value, 40)} (a "
                        f"{type(value).__name__}); a batch holds arrays of numbers: drop this key before "
                        "(pescador.map), or make it numbers")
    return array


# ----------------------------------------------------------------------------
# padded_batch
# ----------------------------------------------------------------------------


class _PaddedBatch(Stage):
    """padded_batch's run: ``n`` items at a time, checked as they come and padded into one batch.

    Between two batches it holds no item, so its state is small: the items drawn (``pos``), whether the
    run ended (``done``), the ``layout`` (from the run's first item: a resumed run keeps its dtypes),
    and the upstream's state.
    """

    def __init__(self, upstream: Any, n: int, pad: dict | None = None, length: int | None = None,
                 lengths: str | None = "{key}_lengths", strict: bool = True, state: dict | None = None) -> None:
        self.n, self.strict = n, strict
        self.padder = _Padder("padded_batch", pad, length, lengths)
        self.position, self.done = 0, False
        if state is None:
            self.up = self.start_upstream(upstream, None)
            return
        where, most = f"padded_batch(n={n})", most_given()
        check_fields(state, ("pos", "done", "layout", "up"), where)
        self.position = check_int(state, "pos", where, 0, None if most is None else most * n)  # (n items a batch)
        self.done = check_bool(state, "done", where)
        self.padder.restore(state["layout"], where)
        if (self.padder.layout is None) != (self.position == 0):
            raise PescadorError(f"resumable: the state of {where}: field 'layout' must be null exactly when no item "
                                f"was drawn (pos = 0); got pos = {self.position}")
        self.up = start_from(upstream, state, "up", where, self.position)

    def __next__(self) -> dict:
        if self.done:
            raise StopIteration
        items, n, check, pull = [], self.n, self.padder.check, self.up.__next__
        try:
            while len(items) < n:
                item = pull()
                check(item, self.position)
                self.position += 1
                items.append(item)
        except StopIteration:
            self.done = True
            if not items or self.strict:
                raise
        return self.padder.batch(items)

    def state(self) -> dict:
        return {"pos": self.position, "done": self.done, "layout": self.padder.state(), "up": self.up.state()}

    @classmethod
    def plain(cls, upstream: Any, n: int, pad: dict | None = None, length: int | None = None,
              lengths: str | None = "{key}_lengths", strict: bool = True) -> Iterator:
        return _padded(start_plain(upstream), n, _Padder("padded_batch", pad, length, lengths), strict)

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable) -> float | None:
        inner = length(upstream)
        if inner is None or inner == math.inf:
            return inner
        n = params["n"]
        return inner // n if params.get("strict", True) else -(-inner // n)

    @classmethod
    def epoch_length(cls, upstream: Any, params: dict, epoch: Callable) -> Any:
        return NO_EPOCHS if epoch(upstream) is NO_EPOCHS else None  # (a batch may straddle two epochs)


def _padded(run: Iterator, n: int, padder: _Padder, strict: bool) -> Iterator[dict]:
    """padded_batch's plain run: the loop of ``_PaddedBatch.__next__``, fused."""
    check, batch, items, position = padder.check, padder.batch, [], 0
    for item in run:
        check(item, position)
        position += 1
        items.append(item)
        if len(items) == n:
            yield batch(items)
            items = []
    if items and not strict:
        yield batch(items)


def _check_pad(pad: Any, where: str) -> dict | None:
    """``pad`` as key -> padding value (None: every key of at least one dimension, with 0)."""
    if pad is None:
        return None
    if isinstance(pad, str):
        return {pad: 0}
    if isinstance(pad, dict):
        for key, value in pad.items():
            if not isinstance(key, str):
                raise ParameterTypeError(f"{where}: pad's keys must be strings (the keys of the items); got {key!r}")
            if not isinstance(value, numbers.Number):
                raise ParameterTypeError(f"{where}: pad[{key!r}] must be a number (the padding value); got {value!r}")
        if not pad:
            raise ParameterError(f"{where}: pad is empty; name the keys to pad, or give None to pad every array")
        return dict(pad)
    if isinstance(pad, (list, tuple)) and pad and all(isinstance(key, str) for key in pad):
        return {key: 0 for key in pad}
    raise ParameterTypeError(f"{where}: pad must be None, a key, a list of keys or a dict of key -> padding value; "
                             f"got {short_repr(pad, 60)}")


def _check_lengths(lengths: Any, pad: dict | None, where: str) -> str | None:
    if lengths is None:
        return None
    if not isinstance(lengths, str) or not lengths:
        raise ParameterTypeError(f"{where}: lengths must be None or the name of the key of the lengths (with "
                                 f"'{{key}}' for the padded key's name, e.g. '{{key}}_lengths'); got {lengths!r}")
    if "{key}" not in lengths and (pad is None or len(pad) > 1):
        raise ParameterError(f"{where}: lengths={lengths!r} names one key, but "
                             + ("every array key is padded (pad=None)" if pad is None else f"{len(pad)} keys are padded")
                             + "; put '{key}' in it (e.g. '{key}_lengths'), or pad one key")
    return lengths


def _padding(where: str, pad: Any, lengths: Any, strict: Any) -> dict:
    pad = _check_pad(pad, where)
    if not isinstance(strict, (bool, np.bool_)):
        raise ParameterTypeError(f"{where}: strict must be True or False; got {strict!r}")
    return {"pad": pad, "lengths": _check_lengths(lengths, pad, where), "strict": bool(strict)}


@overload
def padded_batch(n: int, *, pad: Any = None, length: int | None = None, lengths: str | None = "{key}_lengths",
                 strict: bool = True) -> Transform[dict[str, Any], dict[str, np.ndarray]]: ...
@overload
def padded_batch(n: int, source: Source[dict[str, Any]], *, pad: Any = None, length: int | None = None,
                 lengths: str | None = "{key}_lengths", strict: bool = True) -> Stream[dict[str, np.ndarray]]: ...
def padded_batch(n: int, source: Any = _MISSING, *, pad: Any = None, length: int | None = None,
                 lengths: str | None = "{key}_lengths", strict: bool = True) -> Transform | Stream:
    """Stack ``n`` items of varying length into one batch, padding them to the longest.

    Each batch holds ``n`` whole items, stacked along a new first axis: a
    padded key (of shape ``(length, ...)`` per item, the length varying)
    becomes ``(n, longest, ...)``, each item's array at the start of its
    row and the padding value after it; a key that is not padded (a label,
    a fixed-size vector) becomes ``(n, ...)`` and must keep its shape.  For
    each padded key ``k`` the batch also holds ``k + "_lengths"``: each
    item's length (int64, shape ``(n,)``); a mask is then
    ``np.arange(longest) < lengths[:, None]``.

    The first item fixes the layout: the keys, which are padded, each
    key's dtype and its shape beyond the first axis.  A later item may have
    another dtype only if it casts safely into the first's.  A batch is made
    once its ``n`` items are in, so the stage holds up to ``n`` items: a
    source must yield a new array each time, not overwrite one it yielded.
    Unlike :func:`pescador.buffer`, which concatenates rows and splits
    items across batches, ``n`` counts items and an item is never split.
    To waste less on padding, batch items of similar lengths:
    :func:`pescador.bucket`.

    Parameters
    ----------
    n : int, 1 to 2**31 - 1
        Items per batch.
    source : optional
        Anything :func:`pescador.stream` accepts.
    pad : None, str, list of str, or dict of str -> number
        The keys to pad along their first axis, with 0 or with the value
        given per key (``{"x": 0.0, "labels": -100}``).  None: every key
        whose value in the first item has at least one dimension, with 0.
    length : int, 1 to 2**31 - 1, optional
        Pad every padded key to this length, whatever the batch's longest
        item (a fixed shape, as compiled models want); a longer item raises.
    lengths : str or None
        The key of each padded key's lengths, with ``{key}`` standing for
        the padded key's name; None: no lengths key.
    strict : bool
        If True (the default), a last batch of fewer than ``n`` items is
        dropped; if False, it is yielded.

    Raises
    ------
    ParameterError, ParameterTypeError
        For bad parameters, when the step is built.
    DataError
        (at run time) For an item that is not a dict of arrays of numbers,
        lacks a key to pad, differs from the first item's layout beyond the
        first axis of a padded key, has a dtype that does not cast safely,
        or is longer than ``length``; the message names the item's position
        and the key.

    Examples
    --------
    >>> import numpy as np, pescador
    >>> clips = [{"audio": np.ones((t, 2)), "label": t % 2} for t in (3, 1, 2, 4)]
    >>> batches = list(pescador.padded_batch(2, clips))
    >>> [b["audio"].shape for b in batches], batches[0]["audio_lengths"].tolist()
    ([(2, 3, 2), (2, 4, 2)], [3, 1])
    >>> batches[0]["audio"][1, :, 0].tolist(), batches[0]["label"].tolist()
    ([1.0, 0.0, 0.0], [1, 1])
    >>> pescador.padded_batch(16, pad={"audio": 0.0})
    padded_batch(n=16, pad={'audio': 0.0})
    """
    where = "padded_batch"
    params = {"n": check_size(n, where, "n"), **_padding(where, pad, lengths, strict)}
    params["length"] = None if length is None else check_size(length, where, "length")
    step = Transform("padded_batch", _PaddedBatch, params)
    return step if source is _MISSING else step(source)


# ----------------------------------------------------------------------------
# bucket
# ----------------------------------------------------------------------------


class _Lengths:
    """Which bucket an item goes to: by its length (the padder's, the first axis of ``by``, or ``by(item)``)."""

    __slots__ = ("boundaries", "by", "padder")

    def __init__(self, boundaries: tuple, by: Any, padder: _Padder) -> None:
        self.boundaries, self.by, self.padder = boundaries, by, padder

    def __call__(self, item: Any, position: int) -> int:
        longest = self.padder.check(item, position)
        by = self.by
        if by is None:
            length = longest
        elif isinstance(by, str):
            if by not in item:
                raise DataError(f"bucket: item {position} has no key {by!r} (by={by!r}); its keys are {list(item)}")
            if not np.ndim(item[by]):
                raise DataError(f"bucket: item {position}, key {by!r} (by={by!r}): a 0-d value has no length")
            length = np.shape(item[by])[0]
        else:
            length = by(item)
            if not isinstance(length, numbers.Integral) or isinstance(length, bool) or length < 0:
                raise DataError(f"bucket: item {position}: by={_name(by)} returned {short_repr(length, 40)}; "
                                "expected a length (an integer >= 0)")
        return bisect.bisect_right(self.boundaries, length)


_BUCKET_FIELDS = ("at", "up", "held", "layout", "drawn", "ended", "flushed")


class _Bucket(Stage):
    """bucket's run: each item into its bucket; a bucket that holds its batch size gives its batch.

    State (no item in it): a snapshot of the upstream taken before upstream item ``at`` was drawn, at
    or before the oldest item in a bucket, with the number of items each bucket held then (``held``);
    the items drawn since the run began (``drawn``); whether the upstream ended (``ended``) and how many
    partial buckets were given since (``flushed``); and the ``layout``.  A resume draws the upstream
    again from the snapshot and sorts the items into the buckets as before.
    """

    replays = True  # (over an upstream that replays exactly: resumable() checks it)

    def __init__(self, upstream: Any, boundaries: tuple, n: tuple, by: Any = None, pad: dict | None = None,
                 lengths: str | None = "{key}_lengths", strict: bool = True, state: dict | None = None) -> None:
        self.n, self.strict = n, strict
        self.where = where = f"bucket(boundaries={list(boundaries)})"
        self.padder = _Padder("bucket", pad, None, lengths)
        self.bucket_of = _Lengths(boundaries, by, self.padder)
        self.buckets: list = [[] for _ in n]
        self.first: list = [-1] * len(n)  # (the upstream position of each bucket's first item)
        self.drawn, self.ended, self.flushed = 0, False, 0
        self.snaps = _Snapshots(max(sum(n), 16))
        if state is None:
            self.up = self.start_upstream(upstream, None)
            self._snap()
        else:
            self._restore(upstream, state)

    def _snap(self) -> None:
        held = [len(b) for b in self.buckets]
        self.snaps.take(self.drawn, [f for f in self.first if f >= 0],
                        {"up": self.up.state(), "held": held, "layout": self.padder.state()})

    def __next__(self) -> dict:
        buckets, n = self.buckets, self.n
        while not self.ended:
            if self.drawn and not self.drawn % self.snaps.every:
                self._snap()
            try:
                item = next(self.up)
            except StopIteration:
                self.ended = True
                break
            b = self.bucket_of(item, self.drawn)
            if not buckets[b]:
                self.first[b] = self.drawn
            self.drawn += 1
            buckets[b].append(item)
            if len(buckets[b]) == n[b]:
                return self._give(b)
        if not self.strict:
            for b, items in enumerate(buckets):
                if items:
                    self.flushed += 1
                    return self._give(b)
        raise StopIteration

    def _give(self, b: int) -> dict:
        items, self.buckets[b], self.first[b] = self.buckets[b], [], -1
        return self.padder.batch(items) if _GONE not in items else {}

    def state(self) -> dict:
        snapshot = self.snaps.state(min((f for f in self.first if f >= 0), default=self.drawn))
        return {**snapshot, "drawn": self.drawn, "ended": self.ended, "flushed": self.flushed}

    def _restore(self, upstream: Any, state: dict) -> None:
        """Replay from the snapshot to where the state says the run was (see the class)."""
        where, n, most = self.where, self.n, most_given()
        high = None if most is None else most * max(n) + sum(n)  # (batches given, and items held: fewer than n)
        at = check_int(check_fields(state, _BUCKET_FIELDS, where), "at", where, 0, high)
        drawn = check_int(state, "drawn", where, at, high)
        ended = check_bool(state, "ended", where)
        flushed = check_int(state, "flushed", where, 0, 0 if self.strict or not ended else len(n))
        held = check_list(state, "held", where, length=len(n))
        for b, count in enumerate(held):
            check_int({"held": count}, "held", f"{where} (bucket {b})", 0, n[b] - 1)
        self.padder.restore(state["layout"], where)
        if (self.padder.layout is None) != (at == 0) or (at == 0 and any(held)):
            raise PescadorError(f"resumable: the state of {where}: fields 'layout' and 'held' must be null and zeros "
                                f"exactly when no item had been drawn (at = 0); got at = {at}")
        self.up = start_from(upstream, state, "up", where, at)  # (the snapshot's: taken when `at` had been drawn)
        self.snaps.restored(at, {k: state[k] for k in ("up", "held", "layout")})
        self.drawn = at
        self.buckets = [[_GONE] * count for count in held]
        self.first = [at - 1 if count else -1 for count in held]  # (before the snapshot: replaced as they go)
        try:
            while self.drawn < drawn:
                self._replay_one()
        except StopIteration:
            raise PescadorError(f"resumable: the state of {where}: the upstream ended on replay after {self.drawn} "
                                f"items, but the state says {drawn} were drawn: the state is of another run, or the "
                                "upstream is not deterministic") from None
        if ended:
            try:
                next(self.up)
            except StopIteration:
                self.ended = True
            else:
                raise PescadorError(f"resumable: the state of {where}: it says the upstream had ended after {drawn} "
                                    "items, but it goes on on replay: the state is of another run")
            for _ in range(flushed):
                self.__next__()
        if any(_GONE in items for items in self.buckets):
            raise PescadorError(f"resumable: the state of {where}: on replay a bucket still holds an item drawn "
                                "before the snapshot: the state is of another run, or the upstream is not deterministic")
        self.flushed = flushed

    def _replay_one(self) -> None:
        """Draw one item again, as ``__next__`` would, and give the batch it completes to nobody."""
        if self.drawn and not self.drawn % self.snaps.every:
            self._snap()
        item = next(self.up)
        b = self.bucket_of(item, self.drawn)
        if not self.buckets[b]:
            self.first[b] = self.drawn
        self.drawn += 1
        self.buckets[b].append(item)
        if len(self.buckets[b]) == self.n[b]:
            self._give(b)

    @classmethod
    def plain(cls, upstream: Any, boundaries: tuple, n: tuple, by: Any = None, pad: dict | None = None,
              lengths: str | None = "{key}_lengths", strict: bool = True) -> Iterator:
        padder = _Padder("bucket", pad, None, lengths)
        return _bucketed(start_plain(upstream), n, _Lengths(boundaries, by, padder), padder, strict)

    @classmethod
    def epoch_length(cls, upstream: Any, params: dict, epoch: Callable) -> Any:
        return NO_EPOCHS if epoch(upstream) is NO_EPOCHS else None


def _bucketed(run: Iterator, n: tuple, bucket_of: _Lengths, padder: _Padder, strict: bool) -> Iterator[dict]:
    """bucket's plain run."""
    buckets: list = [[] for _ in n]
    batch = padder.batch
    for position, item in enumerate(run):
        b = bucket_of(item, position)
        held = buckets[b]
        held.append(item)
        if len(held) == n[b]:
            buckets[b] = []
            yield batch(held)
    if not strict:
        for held in buckets:
            if held:
                yield batch(held)


def bucket(boundaries: Sequence[int], n: int | Sequence[int], source: Any = _MISSING, *, by: Any = None,
           pad: Any = None, lengths: str | None = "{key}_lengths", strict: bool = True) -> Transform | Stream:
    """Padded batches of items of similar length: each item goes into a bucket by its length, and a
    bucket gives a batch (as :func:`pescador.padded_batch` makes it) when it holds its batch size.

    ``boundaries`` ``[b1, b2, ...]`` make the buckets: lengths below
    ``b1``, from ``b1`` to below ``b2``, ..., and ``b_last`` or more.  Items
    of one batch then differ in length by less than their bucket's width,
    so little of the batch is padding (``tf.data``'s
    ``bucket_by_sequence_length``).  The batches come in the order their
    buckets fill, so a batch's items keep their order but batches of long
    and short items interleave: put a ``shuffle`` before ``bucket`` to mix
    lengths, after it to mix batches.

    Parameters
    ----------
    boundaries : list of int
        Increasing lengths (integers from 1 to 2**31 - 1), one fewer than the
        buckets.
    n : int or list of int
        The batch size, of every bucket or of each (one more than
        ``boundaries``: larger batches of short items keep the batches'
        sizes in memory alike).
    source : optional
        Anything :func:`pescador.stream` accepts.
    by : None, str or callable
        An item's length: None, the longest first axis among its padded
        keys; a key, that key's first axis; a function of the item
        returning an integer.
    pad, lengths, strict
        As for :func:`pescador.padded_batch` (each bucket pads to its
        batch's longest item); with ``strict=False`` the partial batches
        left when the upstream ends come last, in bucket order.

    Raises
    ------
    ParameterError, ParameterTypeError
        For bad parameters, when the step is built.
    DataError
        (at run time) As :func:`pescador.padded_batch`, and for a ``by``
        that gives no length.

    Notes
    -----
    The stage holds up to the batch sizes' sum of items, which a source
    must not overwrite.  A resumable run's state holds no item: it resumes
    by drawing the upstream again from before the oldest item held, so a
    bucket that fills rarely (a few very long items) makes a resume replay
    many items (see the Checkpoint and resume page).

    Examples
    --------
    >>> import numpy as np, pescador
    >>> clips = [{"audio": np.ones((t, 2))} for t in (3, 30, 4, 33, 2, 5, 31)]
    >>> batches = pescador.bucket([10], 2, clips, strict=False)
    >>> [b["audio_lengths"].tolist() for b in batches]
    [[3, 4], [30, 33], [2, 5], [31]]
    >>> pescador.bucket([100, 200], [32, 16, 8])
    bucket(boundaries=(100, 200), n=(32, 16, 8))
    """
    where = "bucket"
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence) or not boundaries:
        raise ParameterTypeError(f"{where}: boundaries must be a non-empty list of increasing lengths; got "
                                 f"{short_repr(boundaries, 60)}")
    bounds = tuple(check_size(b, where, "each boundary") for b in boundaries)
    if any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ParameterError(f"{where}: boundaries must increase; got {list(boundaries)}")
    if isinstance(n, Sequence) and not isinstance(n, (str, bytes)):
        sizes = tuple(check_size(size, where, "each batch size in n") for size in n)
        if len(sizes) != len(bounds) + 1:
            raise ParameterError(f"{where}: n has {len(sizes)} batch sizes for {len(bounds) + 1} buckets "
                                 f"({len(bounds)} boundaries); give one per bucket, or one int for all")
    else:
        sizes = (check_size(n, where, "n"),) * (len(bounds) + 1)
    if by is not None and not isinstance(by, str) and not callable(by):
        raise ParameterTypeError(f"{where}: by must be None, a key or a function of the item; got {short_repr(by, 60)}")
    params = {"boundaries": bounds, "n": sizes, "by": by, **_padding(where, pad, lengths, strict)}
    step = Transform("bucket", _Bucket, params)
    return step if source is _MISSING else step(source)
