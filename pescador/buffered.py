"""``buffer(n)``: re-batch a stream of dicts of arrays into ``n``-row batches.

Items of any row count mix freely: rows are copied, once, into a
preallocated batch, and an item larger than the room left is split across
batches in order.  Every output batch owns its memory, so a generator may
reuse and overwrite its arrays after yielding them.
"""

from __future__ import annotations

import base64
import binascii
import cmath
import hashlib
import json
import math
import os
from sys import getrefcount as _getrefcount
from typing import Any
from weakref import getweakrefcount as _getweakrefcount

import numpy as np

from .core import _MISSING, OneStream, Stream, Transform, check_count, is_item, not_a_dict, short_repr
from .exceptions import ParameterError, ParameterTypeError, PescadorError
from .stage import Stage, check_bool, check_fields, check_int, start, start_from

__all__ = ["buffer"]

_ndarray = np.ndarray
_MAX_ROWS = int(np.iinfo(np.intp).max)


def _rows_shape(trail: tuple) -> str:
    return "(" + ", ".join(["rows", *map(str, trail)]) + ")"


def _kind(value: Any) -> str:
    return f"of type {type(value).__name__}"


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a value {_kind(value)}"


def _as_array(value: Any, key: Any, position: int) -> np.ndarray:
    """Accept array-likes (lists, numbers) and ndarray subclasses as plain arrays.

    Refuse what numpy makes objects of, and masked arrays: a batch is a
    plain array, so their masked slots would arrive holding whatever data
    lies under the mask.
    """
    if isinstance(value, np.ma.MaskedArray):
        raise PescadorError(
            f"buffer: item {position}, key {key!r}: got a masked array; a batch is a plain array, so its "
            "masked slots would hold whatever data lies under the mask. Send the data filled "
            "(value.filled(...)) and the mask as a key of its own (np.ma.getmaskarray(value))"
        )
    array = np.asarray(value)
    if array.dtype == object:
        raise PescadorError(
            f"buffer: item {position}, key {key!r}: expected an array (rows along the first "
            f"axis); got {_describe(value)}"
        )
    return array


def _signature(item: Any, position: int) -> tuple[dict, dict]:
    """The layout every item must share (key -> (trailing shape, dtype)), and the item as arrays."""
    if not is_item(item):
        raise not_a_dict(item, "buffer", position)
    if not item:
        raise PescadorError(f"buffer: item {position} is an empty dict; expected a dict of arrays")
    layout = {}
    item = _arrays(item, position)
    for key, array in item.items():
        if array.ndim == 0:
            raise PescadorError(
                f"buffer: item {position}, key {key!r}: got a 0-d value {array!r}; buffer "
                "needs arrays with rows along a first axis (shape (rows, ...))"
            )
        layout[key] = (array.shape[1:], array.dtype)
    _rows(item, layout, position)  # the row counts must agree as well
    return layout, item


def _mismatch(item: Any, layout: dict, position: int) -> PescadorError:
    """Explain how ``item`` differs from ``layout`` (the slow, precise path)."""
    if not is_item(item):
        return not_a_dict(item, "buffer", position)
    if item.keys() != layout.keys():
        return PescadorError(
            f"buffer: item {position} has keys {sorted(item)}; expected the keys of "
            f"the first item, {sorted(layout)}"
        )
    rows = {}
    for key, (trail, dtype) in layout.items():
        array = _as_array(item[key], key, position)
        if array.ndim == 0:
            return PescadorError(
                f"buffer: item {position}, key {key!r}: got a 0-d value; expected shape {_rows_shape(trail)}"
            )
        if array.shape[1:] != trail:
            return PescadorError(
                f"buffer: item {position}, key {key!r}: shape {array.shape} does not match "
                f"{_rows_shape(trail)}, the layout of the first item"
            )
        if array.dtype != dtype and not _fits(array.dtype, dtype):
            return PescadorError(
                f"buffer: item {position}, key {key!r}: dtype {array.dtype} cannot be stored in "
                f"{dtype}, the dtype of the first item (batches take the first item's dtypes; "
                "later items are cast into them only safely, or from float64 to float32)"
            )
        rows[key] = array.shape[0]
    return PescadorError(
        f"buffer: item {position}: its arrays disagree on the number of rows ({rows}); "
        "every key of an item needs the same first dimension"
    )


_REFUSED, _SAFE, _NARROWING = 0, 1, 2
_CASTS: dict = {}  # (item dtype, batch dtype) -> _REFUSED, _SAFE or _NARROWING


def _cast(source: np.dtype, target: np.dtype) -> int:
    """How items of dtype ``source`` go into a batch of dtype ``target``.

    ``_SAFE``: a safe cast in numpy's sense (int16 into float32, float32
    into float64; int64 into float64, which rounds integers beyond 2**53).
    ``_NARROWING``: floating point into a narrower floating point (float64
    into float32), which loses precision only, unless a value overflows
    (checked as rows are copied).  ``_REFUSED``: anything that
    could wrap an integer or drop a fraction.
    """
    cast = _CASTS.get((source, target))
    if cast is None:
        if np.can_cast(source, target, "safe"):
            cast = _SAFE
        elif source.kind in "fc" and target.kind in "fc" and np.can_cast(source, target, "same_kind"):
            cast = _NARROWING
        else:
            cast = _REFUSED
        if len(_CASTS) < 1024:
            _CASTS[source, target] = cast
    return cast


def _fits(source: np.dtype, target: np.dtype) -> bool:
    """Whether items of dtype ``source`` may be cast into a batch of dtype ``target``."""
    return _cast(source, target) != _REFUSED


class _Slow(Exception):
    """An item needs the slow path (see :func:`_slow_rows`)."""


class _NotArrays(_Slow):
    """An item holds values that are not plain arrays (lists, numbers, subclasses)."""


class _Narrowing(_Slow):
    """An item (of ``rows`` rows, otherwise fine) has ``keys`` whose cast into the batch could overflow."""

    def __init__(self, rows: int, keys: list) -> None:
        super().__init__(rows, keys)
        self.rows = rows
        self.keys = keys


def _rows(item: Any, layout: dict, position: int) -> int:
    """Return the item's row count, or raise the precise error, or ``_Slow``."""
    rows = -1
    narrowing = None
    try:
        for key, (trail, dtype) in layout.items():
            array = item[key]
            if type(array) is not _ndarray:
                raise _NotArrays
            shape = array.shape
            if shape[1:] != trail or not shape:
                raise _mismatch(item, layout, position)
            if array.dtype != dtype:
                cast = _cast(array.dtype, dtype)
                if cast == _REFUSED:
                    raise _mismatch(item, layout, position)
                if cast == _NARROWING:
                    narrowing = [key] if narrowing is None else [*narrowing, key]
            if rows != shape[0]:
                if rows >= 0:
                    raise _mismatch(item, layout, position)
                rows = shape[0]
    except (KeyError, TypeError):
        raise _mismatch(item, layout, position) from None
    if len(item) != len(layout):
        raise _mismatch(item, layout, position)
    if narrowing is not None:
        raise _Narrowing(rows, narrowing)
    return rows


def _arrays(item: dict, position: int) -> dict:
    """The item's values as plain arrays (array-likes such as lists, and subclasses, converted)."""
    return {k: v if type(v) is _ndarray else _as_array(v, k, position) for k, v in item.items()}


def _slow_rows(item: Any, layout: dict, position: int, slow: _Slow) -> tuple[dict, int, list]:
    """The item as plain arrays, its row count, and the keys whose cast could overflow."""
    if isinstance(slow, _NotArrays):
        if not is_item(item):
            raise not_a_dict(item, "buffer", position)
        item = _arrays(item, position)
        try:
            return item, _rows(item, layout, position), []
        except _Narrowing as narrowing:
            slow = narrowing
    return item, slow.rows, slow.keys


def _copy_narrowing(targets: list, sources: list, narrow: list, span: tuple, keys: tuple, position: int) -> None:
    """Copy rows ``start:stop`` of ``sources`` into rows ``filled:end`` of ``targets``, refusing overflow.

    A finite value that becomes infinite in its narrower batch dtype raises;
    NaN and infinities that were already there pass unchanged, and values
    that only lose precision (or underflow to zero) pass too.
    """
    filled, end, start, stop = span
    try:
        for target, source in zip(targets, sources):
            target[filled:end] = source[start:stop]
    except (FloatingPointError, RuntimeWarning):  # numpy's overflow, under np.seterr or -W error
        pass
    for key in narrow:
        i = keys.index(key)
        if not _finite(targets[i][filled:end]):
            source = sources[i][start:stop]
            with np.errstate(over="ignore", invalid="ignore"):
                overflow = ~np.isfinite(source.astype(targets[i].dtype)) & np.isfinite(source)
            if overflow.any():
                raise _overflow(source, overflow, targets[i].dtype, key, position, start)
            with np.errstate(over="ignore"):  # copy again: an exception above may have cut the copy short
                for target, source in zip(targets, sources):
                    target[filled:end] = source[start:stop]


_BLAS = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))


def _finite(written: np.ndarray) -> bool:
    """Whether every value of ``written`` (contiguous rows of a batch) is finite, or may not be.

    For BLAS dtypes, one pass without allocating: the sum of squared
    magnitudes is finite when every value is (it may also overflow for
    values beyond about 1e19 in float32: then the caller looks closer).
    """
    if written.dtype in _BLAS:
        return cmath.isfinite(complex(np.vdot(written, written)))
    return bool(np.isfinite(written).all())


def _overflow(
    array: np.ndarray, overflow: np.ndarray, dtype: np.dtype, key: Any, position: int, start: int
) -> PescadorError:
    finite = array[np.isfinite(array)]
    if array.dtype.kind == "c":
        span = f"values of magnitude up to {np.abs(finite).max():.6g}"
    else:
        span = f"values from {finite.min():.6g} to {finite.max():.6g}"
    row = start + int(np.argwhere(overflow)[0][0])
    return PescadorError(
        f"buffer: item {position}, key {key!r}: {span} (the first in row {row}) overflow {dtype}, the "
        f"dtype of the first item, whose largest value is {np.finfo(dtype).max:.6g}; they would become "
        f"infinite. Scale them, or make the first item's {key!r} a wider dtype"
    )


def _empty_batch(layout: dict, n: int) -> dict:
    try:
        return {key: np.empty((n, *trail), dtype=dtype) for key, (trail, dtype) in layout.items()}
    except (MemoryError, ValueError, OverflowError) as exc:
        need = n * sum(int(np.prod(trail, dtype=object)) * dtype.itemsize for trail, dtype in layout.values())
        raise PescadorError(
            f"buffer: a batch of n={n} rows of this stream's items needs {need} bytes ({need / 2**30:.3g} GiB), "
            f"which cannot be allocated ({type(exc).__name__}: {exc}); choose a smaller n"
        ) from None


# ----------------------------------------------------------------------------
# Batches nobody holds any more are filled again (fresh memory costs page faults)
# ----------------------------------------------------------------------------


def _most_refs(arrays: list) -> int:
    """The largest reference count among ``arrays`` (as seen from here: see ``_UNHELD``)."""
    most = 0
    for array in arrays:
        count = _getrefcount(array)
        if count > most:
            most = count
    return most


def _held(arrays: list, views: int = 0) -> bool:
    """Whether anything but the list ``arrays`` (and ``views`` views of the first, kept with it) refers to
    one of them (a dict, a view, a tensor, a memoryview, a weak reference): then that batch must never be
    written again."""
    if _most_refs(arrays) > _UNHELD + views:
        return True
    for array in arrays:
        if _getweakrefcount(array):
            return True
    return False


# The count of an array referred to by one list only, measured through the same code: a batch is
# reused only when each of its arrays has exactly that count (the test
# test_a_batch_anyone_still_holds_is_never_written_again keeps this honest on every Python).
_UNHELD = _most_refs([np.empty(0)])
_SPARES = 2  # batches kept for reuse: the consumer's loop variable holds the one before
_MOST_VIEWS = 1 << 14  # one-row items go through row views in batches of at most so many rows (a view: ~150 bytes)


def _row_views(target: np.ndarray) -> list:
    """Views of the rows of ``target`` (a batch's array), each referring to it: of the trailing shape, or of
    shape (1,) for a 1-d key (whose rows would be numbers, copies that refer to nothing)."""
    return list(target if target.ndim > 1 else target.reshape(len(target), 1))


# ----------------------------------------------------------------------------
# The state of a run: layout and the unused rows of an item being split, exactly
# ----------------------------------------------------------------------------


def _descr(dtype: np.dtype) -> Any:
    """A dtype as JSON-able data (``'<f4'``, or a structured dtype's field list)."""
    return np.lib.format.dtype_to_descr(dtype)


def _read_dtype(value: Any, where: str, name: str) -> np.dtype:
    try:
        dtype = np.lib.format.descr_to_dtype(value)
    except Exception as exc:  # (any malformed description: numpy raises many kinds)
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} is not a numpy dtype ({type(exc).__name__}); "
            f"got {short_repr(value)}"
        ) from None
    if dtype.hasobject:
        raise PescadorError(f"resumable: the state of {where}: field {name!r} must not be an object dtype")
    return dtype


def _read_dims(value: Any, where: str, name: str) -> tuple:
    """A shape: a list of at most 32 integers from 0 to the largest array length."""
    if not isinstance(value, list) or len(value) > 32:
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} must be a list of at most 32 dimensions; "
            f"got {short_repr(value)}"
        )
    return tuple(check_int({name: v}, name, where, 0, _MAX_ROWS) for v in value)


def _read_layout(value: Any, where: str) -> dict | None:
    """The ``layout`` field: key -> {"dtype", "trail"}, as key -> (trailing shape, dtype)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise PescadorError(
            f"resumable: the state of {where}: field 'layout' must be null or a non-empty dict of "
            f"key -> {{dtype, trail}}; got {short_repr(value)}"
        )
    layout = {}
    for key, entry in value.items():
        if not isinstance(key, str):
            raise PescadorError(f"resumable: the state of {where}: field 'layout' has a key {key!r} that is not a string")
        name = f"layout[{key!r}]"
        check_fields(entry, ("dtype", "trail"), f"{where}, {name}")
        layout[key] = (_read_dims(entry["trail"], where, f"{name}.trail"), _read_dtype(entry["dtype"], where, f"{name}.dtype"))
    return layout


_MAX_ELEMENT = 1 << 27  # bytes of one element of a layout read from a state (numpy's casts fail from about 150 MB)


def _memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_layout_size(layout: dict, n: int, where: str) -> None:
    """A layout read from a state must be one this machine can fill: elements of at most 128 MiB (numpy's
    casts fail from about 150 MB), and batches of ``n`` rows that fit in its memory."""
    for key, (trail, dtype) in layout.items():
        if dtype.itemsize > _MAX_ELEMENT:
            raise PescadorError(
                f"resumable: the state of {where}: field 'layout[{key!r}].dtype' is {dtype.str}, elements of "
                f"{dtype.itemsize} bytes; a state's layout may hold elements of at most {_MAX_ELEMENT} bytes"
            )
    need = n * sum(math.prod(trail) * dtype.itemsize for trail, dtype in layout.values())
    memory = _memory()
    if memory is not None and need > memory:
        raise PescadorError(
            f"resumable: the state of {where}: field 'layout' describes batches of {need} bytes "
            f"({need / 2**30:.3g} GiB), more than this machine's memory ({memory / 2**30:.3g} GiB)"
        )


def _read_rest(value: Any, layout: dict | None, where: str) -> tuple[list, int] | None:
    """The ``rest`` field (the unused rows of the item being split) as arrays in key order, and their rows."""
    if value is None:
        return None
    if layout is None:
        raise PescadorError(f"resumable: the state of {where}: field 'rest' must be null while 'layout' is null")
    if not isinstance(value, dict) or value.keys() != layout.keys():
        raise PescadorError(
            f"resumable: the state of {where}: field 'rest' must be null or a dict with the keys of the "
            f"layout, {sorted(layout)}; got {short_repr(value)}"
        )
    arrays, rows = [], None
    for key, (trail, dtype) in layout.items():
        name = f"rest[{key!r}]"
        entry = check_fields(value[key], ("dtype", "shape", "data"), f"{where}, {name}")
        got = _read_dtype(entry["dtype"], where, f"{name}.dtype")
        if got != dtype and not _fits(got, dtype):
            raise PescadorError(
                f"resumable: the state of {where}: field {name + '.dtype'!r} is {got}, which buffer cannot store "
                f"in the layout's {dtype}"
            )
        shape = _read_dims(entry["shape"], where, f"{name}.shape")
        if len(shape) != 1 + len(trail) or shape[1:] != trail or shape[0] < 1 or shape[0] != (rows or shape[0]):
            raise PescadorError(
                f"resumable: the state of {where}: field {name + '.shape'!r} must be {_rows_shape(trail)} with "
                f"rows >= 1" + ("" if rows is None else f" and rows = {rows} (as the other keys)") + f"; got {list(shape)}"
            )
        rows = shape[0]
        arrays.append(_decode(entry["data"], got, shape, where, f"{name}.data"))
    return arrays, rows


def _decode(data: Any, dtype: np.dtype, shape: tuple, where: str, name: str) -> np.ndarray:
    nbytes = dtype.itemsize
    for dim in shape:
        nbytes *= dim
    if not isinstance(data, str) or len(data) != 4 * -(-nbytes // 3):
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} must be the {nbytes} bytes of rows of shape "
            f"{shape} and dtype {dtype} as base64 ({4 * -(-nbytes // 3)} characters); got "
            + (f"{len(data)} characters" if isinstance(data, str) else short_repr(data))
        )
    if not nbytes:
        return np.zeros(shape, dtype)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise PescadorError(f"resumable: the state of {where}: field {name!r} is not valid base64") from None
    if len(raw) != nbytes:
        raise PescadorError(f"resumable: the state of {where}: field {name!r} holds {len(raw)} bytes; expected {nbytes}")
    return np.frombuffer(raw, dtype).reshape(shape)


def _encode(array: np.ndarray) -> dict:
    data = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")
    return {"dtype": _descr(array.dtype), "shape": list(array.shape), "data": data}


def _digest(n: int, strict: bool, own: dict) -> str:
    """A checksum of the buffer's own fields (and parameters): a changed field cannot pass as data."""
    text = json.dumps([n, strict, own], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------


class _Buffer(Stage):
    """buffer's run: batches of ``n`` rows, one copy per row, resumable between any two batches.

    Each item's rows are copied into the batch as soon as the item is drawn
    (a source may overwrite its arrays once it runs again), with one numpy
    call per key (``view[...] = row`` into a view of the batch's row, made
    once per batch, for one-row items: cheaper than ``target[i] = row`` or
    a slice); only the item that straddles a batch's end is kept, and its
    unused rows go into the next batch.  A batch is filled again later only
    when nothing holds any of its arrays (see :func:`_held`).

    Holding items nobody else refers to (by reference count) and writing
    them with one ``np.concatenate(..., out=...)`` per batch was measured
    (issue 15) and does not pay: numpy's concatenate costs about as much per
    input array as ``view[...] = row`` does per row, and the checks that
    an item is held by nobody else come on top.  For one-row items of a
    few hundred bytes, what is left above a loop that copies each item at
    once without a look at it is the check of each item (its keys, type,
    dtype, dimensions and elements: about 100 ns on the 2-core machine),
    and a loop written by hand with the same check runs no faster
    (``python -m benchmarks buffer``).

    State: the upstream's state, the items drawn (``pos``, for the
    messages), the ``layout`` (keys, dtypes and trailing shapes, once
    known), whether the run ended (``done``), the ``rest`` (the unused rows
    of the item being split, as dtype, shape and base64 bytes per key, in
    the item's own dtype, so that a resume needs no re-draw, even over an
    upstream whose order is not reproducible), and a ``digest`` of these.
    """

    def __init__(self, upstream: Stream, n: int, strict: bool, state: dict | None = None) -> None:
        self.n, self.strict = n, strict
        self.where = f"buffer(n={n}, strict={strict})"
        self.position, self.done = 0, False
        self.layout: dict | None = None
        self.keys: tuple = ()
        self.shapes: list = []  # per key, the whole shape of the last item that took the fast path (_fast)
        self.rows = -1  # ... and its rows
        self.one = False  # whether that item had one row: then the next ones take _one_rows
        self.row_spec: list = []  # per key (key, dtype, ndim, size): a one-row item as _one_rows takes it
        self.row_views = False  # whether one-row items may take _one_rows (rows of the layout hold elements)
        self.targets: list | None = None  # per key, the batch being filled
        self.views: list | None = None  # per key, the views of its rows (_one_rows), made once per batch
        self.rest: list | None = None  # [sources, start, rows, narrow, position] of the item being split
        self.spares: list = []  # [arrays, views] of batches given out, to fill again once nobody holds them
        if state is None:
            self.up = start(upstream)
        else:
            self._restore(upstream, state)

    # -- the state ------------------------------------------------------------------------------
    def _restore(self, upstream: Stream, state: Any) -> None:
        where = self.where
        check_fields(state, ("up", "pos", "done", "layout", "rest", "digest"), where)
        position = check_int(state, "pos", where, 0)
        done = check_bool(state, "done", where)
        layout = _read_layout(state["layout"], where)
        if layout is not None:
            _check_layout_size(layout, self.n, where)
        if (layout is None) != (position == 0):
            raise PescadorError(
                f"resumable: the state of {where}: field 'layout' must be null exactly when no item was drawn "
                f"(pos = 0); got pos = {position} and " + ("no layout" if layout is None else "a layout")
            )
        if done and state["rest"] is not None:
            raise PescadorError(f"resumable: the state of {where}: field 'rest' must be null in a run that ended")
        rest = _read_rest(state["rest"], layout, where)
        try:
            digest = _digest(self.n, self.strict, {k: state[k] for k in ("pos", "done", "layout", "rest")})
        except (TypeError, ValueError, RecursionError):  # (a state that did not come through JSON, holding other objects)
            digest = None
        if state["digest"] != digest:
            raise PescadorError(
                f"resumable: the state of {where}: field 'digest' does not match the other fields: the state "
                "was changed, or is of another buffer"
            )
        self.position, self.done = position, done
        if layout is not None:
            self._set_layout(layout)
        if rest is not None:
            sources, rows = rest
            narrow = [k for k, s in zip(self.keys, sources) if _cast(s.dtype, layout[k][1]) == _NARROWING]
            self.rest = [sources, 0, rows, narrow, position - 1]
        self.up = start_from(upstream, state, "up", where, position)  # (it drew pos items)

    def state(self) -> dict:
        layout = None
        if self.layout is not None:
            layout = {k: {"dtype": _descr(dtype), "trail": list(trail)} for k, (trail, dtype) in self.layout.items()}
        rest = None
        if self.rest is not None:
            sources, begin, rows = self.rest[:3]
            rest = {k: _encode(source[begin:rows]) for k, source in zip(self.keys, sources)}
        own = {"pos": self.position, "done": self.done, "layout": layout, "rest": rest}
        return {"up": self.up.state(), **own, "digest": _digest(self.n, self.strict, own)}

    # -- the run --------------------------------------------------------------------------------
    def _set_layout(self, layout: dict) -> None:
        self.layout, self.keys = layout, tuple(layout)
        self.shapes, self.rows, self.one = [None] * len(layout), -1, False
        # one-row items, checked against these (see _one_rows): per key, its dtype, dimensions and elements
        self.row_spec = [(key, dtype, 1 + len(trail), math.prod(trail)) for key, (trail, dtype) in layout.items()]
        # (_one_rows needs rows that hold elements: a row of none would take an item of shape (1, 0, ...) too)
        self.row_views = all(size for _, _, _, size in self.row_spec)

    def _new_batch(self) -> None:
        """Take a batch given out earlier that nobody holds any more, or allocate one."""
        n = self.n
        for i, (arrays, views) in enumerate(self.spares):
            if not _held(arrays, n if views is not None else 0):
                del self.spares[i]
                self.targets, self.views = arrays, views
                return
        self.targets, self.views = list(_empty_batch(self.layout, n).values()), None

    def _give(self) -> dict:
        """The full batch, handed out (and remembered, to be filled again once nobody holds it)."""
        targets, spares = self.targets, self.spares
        spares.append([targets, self.views])
        self.targets = self.views = None
        if len(spares) > _SPARES:
            del spares[0]
        return dict(zip(self.keys, targets))

    def __next__(self) -> dict:
        if self.done:
            raise StopIteration
        n, filled = self.n, 0
        if self.layout is not None:
            self._new_batch()
            if self.rest is not None:
                filled = self._copy(*self.rest, 0)
                if filled == n:
                    return self._give()
        up = self.up
        while True:
            # The fast paths (items of the batch's layout, dtypes and, but for the rows, shapes: one-row items as
            # the last one, or items shaped as the last one) copy what they can; whatever else comes goes
            # through _take, which sets the fast path up again.
            got = self._one_rows(up, filled) if self.one else self._fast(up, filled)
            if got.__class__ is int:  # (the batch's rows: it is full, or the upstream ended)
                return self._give() if got == n else self._end(got)
            item, filled = got
            position = self.position
            self.position = position + 1
            filled = self._take(item, position, filled)
            if filled == n:
                return self._give()

    def _one_rows(self, up: Any, filled: int) -> Any:
        """Copy one-row items of the batch's layout and dtypes into the batch, each row into its row's view
        (``row[...] = array``: the cheapest numpy copy of a row, made before the next item is drawn).  Return
        the rows the batch then holds when it is full or the upstream ended, else ``(item, rows held)`` for the
        first item that needs :meth:`_take`.

        An item passes with the least check that refuses all that :meth:`_take` refuses: a dict of as many
        keys as the layout, each a plain array of the batch's dtype, of ``1 + len(trail)`` dimensions and
        ``prod(trail)`` elements (a layout whose rows hold elements: see ``_set_layout``), which numpy copies
        into the row only if its shape is ``(1, *trail)`` (a shape that broadcasts into the row, such as
        ``(1, 1)`` or ``(1, 1, *trail)``, has other counts; any other shape makes numpy raise ValueError)."""
        n, views = self.n, self.views
        if views is None:
            self.views = views = [_row_views(target) for target in self.targets]
        position, i = self.position - filled, filled - 1  # (items drawn = position + rows held)
        try:
            if len(views) == 1:  # (one key: the commonest, unrolled)
                (rows,), ((key, dtype, ndim, size),) = views, self.row_spec
                for i, item in zip(range(filled, n), up):  # (the range first: a full batch draws no more)
                    if item.__class__ is dict and len(item) == 1:
                        try:
                            array = item[key]
                        except KeyError:  # (the item's one key is another)
                            break
                        if array.__class__ is _ndarray and array.dtype is dtype and array.ndim == ndim \
                                and array.size == size:
                            try:
                                rows[i][...] = array
                            except ValueError:  # (of another shape: _take names it)
                                break
                            continue
                    break
                else:
                    return i + 1
            else:
                keys, spec = len(views), list(zip(views, self.row_spec))
                for i, item in zip(range(filled, n), up):
                    if item.__class__ is dict and len(item) == keys:
                        for rows, (key, dtype, ndim, size) in spec:
                            array = item.get(key)
                            if array.__class__ is not _ndarray or array.dtype is not dtype or array.ndim != ndim \
                                    or array.size != size:
                                break
                            try:
                                rows[i][...] = array
                            except ValueError:
                                break
                        else:
                            continue
                    break
                else:
                    return i + 1
            i -= 1  # (the item that broke off is not in the batch)
            return item, i + 1
        finally:
            self.position = position + i + 1

    def _fast(self, up: Any, filled: int) -> Any:
        """Copy items shaped as the last one that took this path (and of the batch's dtypes) into the batch:
        the rows it then holds when it is full or the upstream ended, else ``(item, rows held)`` for the first
        item that needs :meth:`_take`."""
        n, rows = self.n, self.rows
        position = self.position
        if rows < 0:  # (no item has set this path up yet: every item goes to _take)
            spec, keys = (), -1
        else:
            dtypes = [dtype for _, dtype in self.layout.values()]
            spec, keys = list(zip(self.keys, dtypes, self.shapes, self.targets)), len(self.keys)
        try:
            for item in up:
                position += 1
                if item.__class__ is dict and len(item) == keys:
                    end = filled + rows
                    if end <= n:
                        for key, dtype, shape, target in spec:
                            array = item.get(key)
                            if array.__class__ is not _ndarray or array.dtype is not dtype or array.shape != shape:
                                break
                            target[filled:end] = array
                        else:
                            filled = end
                            if filled == n:
                                return filled
                            continue
                position -= 1  # (_take counts this one)
                return item, filled
            return filled
        finally:
            self.position = position

    def _take(self, item: Any, position: int, filled: int) -> int:
        """Check the item, copy what fits into the batch; return the rows the batch now holds."""
        if self.layout is None:
            layout, item = _signature(item, position)
            self._set_layout(layout)
        layout = self.layout
        try:
            rows = _rows(item, layout, position)
            narrow: Any = ()
        except _Slow as slow:
            item, rows, narrow = _slow_rows(item, layout, position, slow)
        sources = [item[k] for k in self.keys]
        if not narrow and all(type(s) is _ndarray and s.dtype is layout[k][1] for k, s in zip(self.keys, sources)):
            # the next such item takes a fast path: one-row items the row views, others slices
            self.shapes, self.rows = [s.shape for s in sources], rows
            self.one = rows == 1 and self.row_views and self.n <= _MOST_VIEWS
        if self.targets is None:
            self._new_batch()
        return self._copy(sources, 0, rows, narrow, position, filled)

    def _copy(self, sources: list, begin: int, rows: int, narrow: Any, position: int, filled: int) -> int:
        """Copy rows ``begin:`` of ``sources`` into the batch from row ``filled``, as many as fit; keep the
        rest for the next batch.  Return the rows the batch now holds."""
        count = min(self.n - filled, rows - begin)
        stop, end = begin + count, filled + count
        if narrow:
            _copy_narrowing(self.targets, sources, narrow, (filled, end, begin, stop), self.keys, position)
        elif begin == 0 and stop == rows:
            for target, source in zip(self.targets, sources):
                target[filled:end] = source
        else:
            for target, source in zip(self.targets, sources):
                target[filled:end] = source[begin:stop]
        self.rest = [sources, stop, rows, narrow, position] if stop < rows else None
        return end

    def _end(self, filled: int) -> dict:
        """The upstream ended: the last, partial batch (strict=False), or the end."""
        self.done = True
        targets, self.targets, self.views, self.spares = self.targets, None, None, []
        if filled and not self.strict:
            return {k: t[:filled].copy() for k, t in zip(self.keys, targets)}
        raise StopIteration


def buffer(n: int, source: Any = _MISSING, *, strict: bool = True) -> Transform | Stream:
    """Re-batch a stream of dicts of arrays into batches of exactly ``n`` rows.

    Each item's arrays share a first (row) axis; rows are concatenated
    across items, in order, and an item with more rows than the room left in
    the current batch is split across batches.  Every batch owns its
    memory.  All items must share the first item's keys, and each key its
    trailing shape.  A batch takes the first item's dtypes; a later item of
    another dtype is cast into it when no value can change but by floating
    point rounding: safe casts in numpy's sense (int8 into int64, int16 into
    float32; int64 into float64 rounds integers beyond 2**53) and
    float64 into float32, as the 1.0 docs' examples that mix noisy float64
    with float32 items expect.  Anything else (float into int, int64 into
    int8, str into float) raises, and so does a finite value that would
    overflow to infinity in the narrower dtype (1e300 into float32); NaN and
    infinities already there pass unchanged.  Masked arrays are refused (a
    batch would drop their mask); other ndarray subclasses (``np.memmap``)
    are copied as their data.

    Curried and data-last: ``buffer(n)`` is a :class:`~pescador.Transform`
    for :func:`toolz.pipe`, and ``buffer(n, source)`` is the stream.

    Parameters
    ----------
    n : int > 0
        Rows per batch.
    source : optional
        Anything :func:`pescador.stream` accepts.
    strict : bool
        If True (the default) a final partial batch is dropped; if False it
        is yielded.

    Raises
    ------
    PescadorError
        For a bad ``n`` (not an integer from 1 to the largest array
        length), and (while iterating) for a batch that cannot be allocated
        (naming ``n`` and the bytes needed), and for an item that is not a
        dict, whose keys differ from the first item's, whose arrays disagree
        on their row count, whose trailing shape changes or whose dtype
        cannot be cast safely, that holds a value that overflows the
        batch's dtype, a masked array or a 0-d value; the message names
        the key and the item's position.

    Examples
    --------
    >>> import numpy as np, pescador
    >>> items = [{"X": np.arange(3 * i, 3 * i + 3).reshape(3, 1)} for i in range(3)]
    >>> [b["X"].ravel().tolist() for b in pescador.buffer(4, items)]
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    >>> [b["X"].ravel().tolist() for b in pescador.buffer(4, items, strict=False)]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    >>> pescador.buffer(16)
    buffer(n=16, strict=True)
    """
    given = n
    n = check_count(n, "buffer", "n", minimum=1)
    if n > _MAX_ROWS:
        raise ParameterError(
            f"buffer: n must be an integer between 1 and {_MAX_ROWS} (an array's length); got {given!r}"
        )
    if not isinstance(strict, (bool, np.bool_)):
        raise ParameterTypeError(f"buffer: strict must be True or False; got {strict!r}")
    step = Transform("buffer", _Buffer, {"n": n, "strict": bool(strict)}, coerce=OneStream("buffer"))
    return step if source is _MISSING else step(source)
