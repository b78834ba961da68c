"""``buffer(n)``: re-batch a stream of dicts of arrays into ``n``-row batches.

Items of any row count mix freely: rows are copied, once, into a
preallocated batch, and an item larger than the room left is split across
batches in order.  Every output batch owns its memory, so a generator may
reuse and overwrite its arrays after yielding them.
"""

from __future__ import annotations

import cmath
from collections.abc import Iterator
from typing import Any

import numpy as np

from .core import _MISSING, Stream, Transform, check_count, is_item, not_a_dict
from .exceptions import PescadorError

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


def _buffer(upstream: Stream, n: int, strict: bool) -> Iterator[dict]:
    run = iter(upstream)
    for first in run:
        break
    else:
        return
    layout, first = _signature(first, 0)
    keys = tuple(layout)
    batch = _empty_batch(layout, n)
    targets = [batch[k] for k in keys]
    filled = 0
    position = 0
    item = first
    while True:
        try:
            rows = _rows(item, layout, position)
            narrow = ()
        except _Slow as slow:
            item, rows, narrow = _slow_rows(item, layout, position, slow)
        sources = [item[k] for k in keys]
        if filled + rows < n:  # the common case: the whole item fits, batch not full
            end = filled + rows
            if narrow:
                _copy_narrowing(targets, sources, narrow, (filled, end, 0, rows), keys, position)
            else:
                for target, source in zip(targets, sources):
                    target[filled:end] = source
            filled = end
            position += 1
            for item in run:
                break
            else:
                break
            continue
        start = 0
        while start < rows:
            count = min(n - filled, rows - start)
            stop = start + count
            end = filled + count
            if narrow:
                _copy_narrowing(targets, sources, narrow, (filled, end, start, stop), keys, position)
            else:
                for target, source in zip(targets, sources):
                    target[filled:end] = source[start:stop]
            filled = end
            start = stop
            if filled == n:
                yield batch
                batch = _empty_batch(layout, n)
                targets = [batch[k] for k in keys]
                filled = 0
        position += 1
        for item in run:
            break
        else:
            break
    if filled and not strict:
        yield {k: v[:filled].copy() for k, v in batch.items()}


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
        raise PescadorError(
            f"buffer: n must be an integer between 1 and {_MAX_ROWS} (an array's length); got {given!r}"
        )
    if not isinstance(strict, (bool, np.bool_)):
        raise PescadorError(f"buffer: strict must be True or False; got {strict!r}")
    step = Transform("buffer", _buffer, {"n": n, "strict": bool(strict)})
    return step if source is _MISSING else step(source)
