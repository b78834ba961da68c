"""``buffer(n)``: re-batch a stream of dicts of arrays into ``n``-row batches.

Items of any row count mix freely: rows are copied, once, into a
preallocated batch, and an item larger than the room left is split across
batches in order.  Every output batch owns its memory, so a generator may
reuse and overwrite its arrays after yielding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .core import _MISSING, Stream, Transform, check_count, is_item, not_a_dict
from .exceptions import PescadorError

__all__ = ["buffer"]

_ndarray = np.ndarray


def _rows_shape(trail: tuple) -> str:
    return "(" + ", ".join(["rows", *map(str, trail)]) + ")"


def _kind(value: Any) -> str:
    return f"of type {type(value).__name__}"


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a value {_kind(value)}"


def _as_array(value: Any, key: Any, position: int) -> np.ndarray:
    """Accept array-likes (lists, numbers) as arrays; refuse what numpy makes objects of."""
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
        value = item[key]
        array = value if isinstance(value, np.ndarray) else _as_array(value, key, position)
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


def _fits(source: np.dtype, target: np.dtype) -> bool:
    """Whether items of dtype ``source`` may be cast into a batch of dtype ``target``.

    Safe casts (int16 into float32, float32 into float64), and floating
    point into a narrower floating point (float64 into float32: precision
    only); never a cast that could wrap an integer or drop a fraction.
    """
    if np.can_cast(source, target, "safe"):
        return True
    return source.kind in "fc" and target.kind in "fc" and np.can_cast(source, target, "same_kind")


class _NotArrays(Exception):
    """An item holds array-likes that need converting (the slow path)."""


def _rows(item: Any, layout: dict, position: int) -> int:
    """Return the item's row count, or raise the precise error."""
    rows = -1
    try:
        for key, (trail, dtype) in layout.items():
            array = item[key]
            if type(array) is not _ndarray and not isinstance(array, np.ndarray):
                raise _NotArrays
            shape = array.shape
            if shape[1:] != trail or not shape or (array.dtype != dtype and not _fits(array.dtype, dtype)):
                raise _mismatch(item, layout, position)
            if rows != shape[0]:
                if rows >= 0:
                    raise _mismatch(item, layout, position)
                rows = shape[0]
    except (KeyError, TypeError):
        raise _mismatch(item, layout, position) from None
    if len(item) != len(layout):
        raise _mismatch(item, layout, position)
    return rows


def _arrays(item: dict, position: int) -> dict:
    """The item's values as arrays (array-likes such as lists converted)."""
    return {k: v if isinstance(v, np.ndarray) else _as_array(v, k, position) for k, v in item.items()}


def _empty_batch(layout: dict, n: int) -> dict:
    return {key: np.empty((n, *trail), dtype=dtype) for key, (trail, dtype) in layout.items()}


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
        except _NotArrays:
            item = _arrays(item, position)
            rows = _rows(item, layout, position)
        sources = [item[k] for k in keys]
        if filled + rows < n:  # the common case: the whole item fits, batch not full
            end = filled + rows
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
    another dtype is cast into it when no value can change but for floating
    point precision: safe casts (int8 into int64, int16 into float32) and
    float64 into float32, as the 1.0 docs' examples that mix noisy float64
    with float32 items expect.  Anything else (float into int, int64 into
    int8, str into float) raises.

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
        For a bad ``n``, and (while iterating) for an item that is not a
        dict, whose keys differ from the first item's, whose arrays disagree
        on their row count, whose trailing shape changes or whose dtype cannot be cast safely, or that
        holds a 0-d value; the message names the key and the item's
        position.

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
    n = check_count(n, "buffer", "n", minimum=1)
    if not isinstance(strict, (bool, np.bool_)):
        raise PescadorError(f"buffer: strict must be True or False; got {strict!r}")
    step = Transform("buffer", _buffer, {"n": n, "strict": bool(strict)})
    return step if source is _MISSING else step(source)
