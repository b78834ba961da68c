"""The pescador 3.x map functions, data-first: ``buffer_stream``, ``tuples``, ``keras_tuples``.

Users of pescador 3.x call these on a live stream (``maps.tuples(stream,
'X', 'Y')``); here each one delegates to the curried combinator of the
functional layer and returns an iterator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import core
from .buffered import buffer
from .exceptions import PescadorError

__all__ = ["buffer_stream", "tuples", "keras_tuples"]


def _with_new_axis(upstream: core.Stream) -> Iterator[dict]:
    for position, item in enumerate(upstream):
        if not isinstance(item, dict):
            raise PescadorError(
                f"buffer_stream: item {position} is of type {type(item).__name__}; expected a dict of arrays"
            )
        yield {key: np.asarray(value)[np.newaxis] for key, value in item.items()}


def _concatenate_groups(upstream: core.Stream, size: int, axis: int, partial: bool) -> Iterator[dict]:
    group: list = []
    for position, item in enumerate(upstream):
        if not isinstance(item, dict):
            raise PescadorError(
                f"buffer_stream: item {position} is of type {type(item).__name__}; expected a dict of arrays"
            )
        if group and item.keys() != group[0].keys():
            raise PescadorError(
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
            raise PescadorError(f"buffer_stream: cannot concatenate key {key!r} along axis {axis}: {exc}") from None
    return out


def buffer_stream(stream: Any, buffer_size: int, partial: bool = False, axis: int | None = None) -> Iterator[dict]:
    """Buffer a stream into batches of ``buffer_size`` items (pescador 3.x).

    Parameters
    ----------
    stream : anything :func:`pescador.stream` accepts
    buffer_size : int > 0
        Items per batch.
    partial : bool
        If True, a final batch of fewer items is yielded too.
    axis : None or int
        None stacks items along a new first axis (an item of shape ``(d,)``
        gives batches of shape ``(buffer_size, d)``), with the speed of
        :func:`pescador.buffer`; an int concatenates the items' arrays along
        that existing axis.

    Examples
    --------
    >>> import numpy as np
    >>> from pescador import maps
    >>> items = [{"x": np.array([i, i])} for i in range(5)]
    >>> [b["x"].shape for b in maps.buffer_stream(items, 2)]
    [(2, 2), (2, 2)]
    >>> [b["x"].shape for b in maps.buffer_stream(items, 2, partial=True, axis=0)]
    [(4,), (4,), (2,)]
    """
    size = core.check_count(buffer_size, "buffer_stream", "buffer_size", minimum=1)
    source = core.stream(stream)
    if axis is None:
        return iter(buffer(size, core.Stream(_with_new_axis, (source,)), strict=not partial))
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise PescadorError(f"buffer_stream: axis must be None or an int; got {axis!r}")
    return _concatenate_groups(source, size, int(axis), bool(partial))


def tuples(stream: Any, *keys: Any) -> Iterator[tuple]:
    """Yield ``(item[key1], item[key2], ...)`` for each item (pescador 3.x).

    Examples
    --------
    >>> from pescador import maps
    >>> list(maps.tuples([{"X": 1, "Y": 2}], "X", "Y"))
    [(1, 2)]
    """
    return iter(core.tuples(*keys)(stream))


def keras_tuples(stream: Any, inputs: Any = None, outputs: Any = None) -> Iterator[tuple]:
    """Yield ``(inputs, outputs)`` tuples shaped for Keras 3 ``model.fit`` (pescador 3.x).

    Examples
    --------
    >>> from pescador import maps
    >>> list(maps.keras_tuples([{"X": 1, "Y": 2}], "X", "Y"))
    [(1, 2)]
    """
    return iter(core.keras_tuples(inputs, outputs)(stream))
