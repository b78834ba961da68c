"""The pescador 3.x map functions: ``buffer_stream``, ``tuples``, ``keras_tuples``, ``cache``.

Each takes two styles under one name (the rule is :func:`pescador.core.is_data`):
called on a stream first, as pescador 3.x code calls them
(``maps.tuples(stream, 'X', 'Y')``), it returns an iterator over that stream;
called with parameters only (``maps.buffer_stream(16)``), it is a curried
stage for a pipe.  The same functions are at the top level
(``pescador.tuples``, ``pescador.buffer_stream``, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import core
from .buffered import buffer
from .core import keras_tuples, tuples
from .extras import cache
from .exceptions import DataError, ParameterTypeError, PescadorError  # (PescadorError: 3.x code catches maps.PescadorError)

__all__ = ["buffer_stream", "tuples", "keras_tuples", "cache"]


def _with_new_axis(upstream: core.Stream) -> Iterator[dict]:
    for position, item in enumerate(upstream):
        if not isinstance(item, dict):
            raise DataError(
                f"buffer_stream: item {position} is of type {type(item).__name__}; expected a dict of arrays"
            )
        yield {key: np.asarray(value)[np.newaxis] for key, value in item.items()}


def _concatenate_groups(upstream: core.Stream, size: int, axis: int, partial: bool) -> Iterator[dict]:
    group: list = []
    for position, item in enumerate(upstream):
        if not isinstance(item, dict):
            raise DataError(
                f"buffer_stream: item {position} is of type {type(item).__name__}; expected a dict of arrays"
            )
        if group and item.keys() != group[0].keys():
            raise DataError(
                f"buffer_stream: item {position} has keys {sorted(map(str, item))}; expected "
                f"{sorted(map(str, group[0]))}, the keys of the first item of its batch"
            )
        group.append(item)
        if len(group) == size:
            yield _concatenate(group, axis)
            group = []
    if group and partial:
        yield _concatenate(group, axis)


def _concatenate(group: list, axis: int) -> dict:
    out = {}
    for key in group[0]:
        try:
            out[key] = np.concatenate([np.asarray(item[key]) for item in group], axis=axis)
        except (ValueError, np.exceptions.AxisError) as exc:
            raise DataError(f"buffer_stream: cannot concatenate key {key!r} along axis {axis}: {exc}") from None
    return out


def _buffer_stream(upstream: Any, buffer_size: int, partial: bool, axis: int | None) -> Iterator[dict]:
    if axis is None:
        return iter(buffer(buffer_size, core.Stream(_with_new_axis, (upstream,)), strict=not partial))
    return _concatenate_groups(upstream, buffer_size, axis, partial)


def buffer_stream(
    stream: Any = None, buffer_size: Any = None, partial: bool = False, axis: int | None = None
) -> Iterator[dict] | core.Transform:
    """Buffer a stream into batches of ``buffer_size`` items (pescador 3.x).

    ``buffer_stream(stream, 16)`` (the 3.x call) returns an iterator of
    batches; ``buffer_stream(16)`` is the same stage, curried for a pipe.

    Parameters
    ----------
    stream : optional
        The data, in the 3.x call: anything :func:`pescador.stream` accepts,
        or a live iterator.
    buffer_size : int > 0
        Items per batch.
    partial : bool
        If True, a final batch of fewer items is yielded too.
    axis : None or int
        None stacks items along a new first axis (an item of shape ``(d,)``
        gives batches of shape ``(buffer_size, d)``), with the speed of
        :func:`pescador.buffer`; an int concatenates the items' arrays along
        that existing axis.

    Raises
    ------
    PescadorError
        For a bad ``buffer_size`` or ``axis``.
    DataError
        (at iteration) For an item that is not a dict of arrays, or items
        whose keys or shapes do not fit together.

    Examples
    --------
    >>> import numpy as np
    >>> from pescador import maps
    >>> items = [{"x": np.array([i, i])} for i in range(5)]
    >>> [b["x"].shape for b in maps.buffer_stream(items, 2)]
    [(2, 2), (2, 2)]
    >>> [b["x"].shape for b in maps.buffer_stream(items, 2, partial=True, axis=0)]
    [(4,), (4,), (2,)]
    >>> [b["x"].shape for b in maps.buffer_stream(2, partial=True)(items)]
    [(2, 2), (2, 2), (1, 2)]
    """
    curried = stream is None or not core.is_data(stream)
    if curried and stream is not None:  # buffer_stream(16, partial=...)
        if callable(stream):
            raise ParameterTypeError(
                f"buffer_stream: got the function {getattr(stream, '__name__', stream)!r} where a stream or "
                "buffer_size belongs; give a stream first: buffer_stream(pescador.stream(fn), 16)"
            )
        if buffer_size is not None:
            raise ParameterTypeError(
                "buffer_stream: in a pipe, give partial and axis by name: buffer_stream(16, partial=True)"
            )
        stream, buffer_size = None, stream
    size = core.check_count(buffer_size, "buffer_stream", "buffer_size", minimum=1)
    if axis is not None and (not isinstance(axis, (int, np.integer)) or isinstance(axis, bool)):
        raise ParameterTypeError(f"buffer_stream: axis must be None or an int; got {axis!r}")
    params = dict(buffer_size=size, partial=bool(partial), axis=None if axis is None else int(axis))
    if curried:
        return core.Transform("buffer_stream", _buffer_stream, params)
    return core.run_data_first(_buffer_stream, stream, **params)
