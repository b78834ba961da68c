"""The 3.x extras users rely on: ``@streamable``, ``cache``, ``epochs`` and ``epoch_length``.

(The rate distributions of the 3.x mux are the ``dist`` argument of
:func:`pescador.mux` and :func:`pescador.mux.stochastic_mux`.)
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import core
from .core import Stream, Transform, check_count, stream
from .exceptions import PescadorError

__all__ = ["streamable", "cache", "epochs", "epoch_length"]


# ----------------------------------------------------------------------------
# @streamable
# ----------------------------------------------------------------------------


class _Streamable:
    """A generator function that, called, returns a :class:`~pescador.Stream`."""

    def __init__(self, fn: Callable) -> None:
        functools.update_wrapper(self, fn)
        # The module attribute now names this wrapper; give the function a
        # qualified name that pickle can still find: ``name.__wrapped__``.
        fn.__qualname__ = f"{fn.__qualname__}.__wrapped__"

    def __call__(self, *args: Any, **kwargs: Any) -> Stream:
        return stream(self.__wrapped__, *args, **kwargs)

    def __reduce__(self) -> str:
        return self.__qualname__

    def __repr__(self) -> str:
        return f"<streamable {self.__qualname__}>"


def streamable(fn: Callable) -> Callable[..., Stream]:
    """Decorate a generator function so that calling it returns a stream.

    ``@streamable`` on ``def gen(...)`` makes ``gen(*args)`` the same as
    ``pescador.stream(gen, *args)``: a restartable, picklable recipe.

    Examples
    --------
    >>> import pescador
    >>> @pescador.streamable
    ... def count(n):
    ...     for i in range(n):
    ...         yield {"i": i}
    >>> s = count(3)
    >>> [x["i"] for x in s], [x["i"] for x in s]
    ([0, 1, 2], [0, 1, 2])
    >>> s
    stream(count, 3)
    """
    if not callable(fn) or isinstance(fn, (Stream, type)):
        raise PescadorError(f"streamable: expected a generator function; got a {type(fn).__name__}")
    return _Streamable(fn)


# ----------------------------------------------------------------------------
# cache
# ----------------------------------------------------------------------------


def _generator(random_state: Any) -> Any:
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    return np.random.default_rng(random_state)


def _cache(upstream: Stream, n_cache: int, prob: float, random_state: Any) -> Iterator:
    rng = _generator(random_state)
    draws: list = []
    kept: list = []
    for item in upstream:
        if len(kept) < n_cache:
            kept.append(item)
        else:
            if not draws:
                draws = rng.random(1024).tolist()
            kept[int(draws.pop() * n_cache)] = item  # evict a random entry
        yield item
        while True:  # then, with probability prob each time, a cached item again
            if not draws:
                draws = rng.random(1024).tolist()
            if draws.pop() >= prob:
                break
            if not draws:
                draws = rng.random(1024).tolist()
            yield kept[int(draws.pop() * len(kept))]


def cache(n_cache: int, prob: float = 0.5, random_state: Any = None) -> Transform:
    """Stochastically re-use recent items: a cheap way to stretch a slow stream.

    Each item from upstream enters a cache of the ``n_cache`` most recent
    items (a full cache evicts an entry at random) and is yielded; then,
    with probability ``prob`` each time, an item drawn uniformly from the
    cache is yielded again.  On average each upstream item is followed by
    ``prob / (1 - prob)`` cached ones.

    Parameters
    ----------
    n_cache : int >= 1
        Size of the cache.
    prob : float in [0, 1)
        Probability of yielding a cached item before the next fresh one.
    random_state : None, int, np.random.Generator or np.random.RandomState

    Examples
    --------
    >>> import pescador
    >>> items = [{"i": i} for i in range(100)]
    >>> out = list(pescador.cache(8, prob=0.5, random_state=0)(items))
    >>> len(out) > 100, sorted({x["i"] for x in out}) == list(range(100))
    (True, True)
    """
    where = "cache"
    n_cache = check_count(n_cache, where, "n_cache", minimum=1)
    if not isinstance(prob, numbers.Real) or isinstance(prob, bool) or not 0 <= prob < 1:
        raise PescadorError(f"{where}: prob must be a number in [0, 1); got {prob!r}")
    from .mux import _check_random_state

    params = dict(n_cache=n_cache, prob=float(prob), random_state=_check_random_state(random_state, where))
    return Transform("cache", _cache, params)


# ----------------------------------------------------------------------------
# epochs
# ----------------------------------------------------------------------------


def _epochs(pool: tuple, n_epochs: int | None, k: int | None, random_state: Any) -> Iterator:
    from .mux import _engine

    return _engine(pool, k or len(pool), None, None, "once", "random", "uniform", n_epochs, True,
                   random_state, name="epochs")


def epochs(n_epochs: int | None = None, *, k: int | None = None, random_state: Any = None) -> Transform:
    """Run a pool of finite streams exhaustively, once per epoch.

    Applied to a pool (a list of streams), gives a stream that, in each
    epoch, runs every stream of the pool to its end exactly once, ``k`` at a
    time (all at once by default), interleaving their items at random; then
    starts the next epoch, ``n_epochs`` times (None: for ever).  It ends
    early if a whole epoch gives nothing.  Inside :func:`pescador.zmq_offload`
    workers the pool is sharded, so an epoch is delivered once in total.
    :func:`epoch_length` tells how many items an epoch holds, where that
    can be known.

    Parameters
    ----------
    n_epochs : int >= 1 or None
    k : int >= 1, optional
        Streams active at once (default: the whole pool).
    random_state : None, int, np.random.Generator or np.random.RandomState

    Examples
    --------
    >>> import pescador
    >>> pool = [pescador.stream([{"v": 1}, {"v": 2}]), pescador.stream([{"v": 3}])]
    >>> sorted(x["v"] for x in pescador.epochs(2, random_state=0)(pool))
    [1, 1, 2, 2, 3, 3]
    >>> pescador.epoch_length(pescador.epochs(2)(pool))
    3
    """
    from .mux import _PoolOf, _check_k, _check_random_state

    where = "epochs"
    params = dict(
        n_epochs=None if n_epochs is None else check_count(n_epochs, where, "n_epochs", minimum=1),
        k=None if k is None else _check_k(k, where),
        random_state=_check_random_state(random_state, where),
    )
    return Transform("epochs", _epochs, params, coerce=_PoolOf(where))


# ----------------------------------------------------------------------------
# epoch_length
# ----------------------------------------------------------------------------

_EXHAUSTIVE = {
    "epochs": lambda p: True,
    "mux": lambda p: p.get("lam", 256.0) is None and p.get("with_replacement") is False and not p.get("revive"),
    "stochastic_mux": lambda p: p.get("rate", 256.0) is None and p.get("mode") == "exhaustive",
    "round_robin_mux": lambda p: p.get("mode", "exhaustive") == "exhaustive",
    "chain_mux": lambda p: p.get("mode", "exhaustive") == "exhaustive",
}


def epoch_length(recipe: Any) -> int | None:
    """The number of items one run (one epoch) of ``recipe`` yields, when it is known.

    Known for streams over collections, and through the stages that keep
    or bound a count: :func:`epochs` (items per epoch), muxes that run every
    stream once to its end (``with_replacement=False, lam=None``, exhaustive
    modes), :func:`~pescador.take`, :func:`~pescador.tuples`,
    :func:`~pescador.keras_tuples`, :func:`~pescador.measure` and
    :func:`~pescador.zmq_offload` with one worker.  None otherwise (a
    generator function's length cannot be known without running it).

    Examples
    --------
    >>> import pescador
    >>> s = pescador.stream([{"i": i} for i in range(10)])
    >>> pescador.epoch_length(s), pescador.epoch_length(pescador.take(4, s))
    (10, 4)
    >>> def gen():
    ...     yield {"i": 0}
    >>> print(pescador.epoch_length(pescador.stream(gen)))
    None
    """
    s = stream(recipe)
    if s.step is None:
        return len(s.args[0]) if s.fn is core._from_collection else None
    name, params = s.step.name, s.step.params
    upstream = s.args[0]
    if name in _EXHAUSTIVE:
        if not _EXHAUSTIVE[name](params):
            return None
        lengths = [epoch_length(member) for member in upstream]
        return None if None in lengths else sum(lengths)
    if name == "take":
        inner = epoch_length(upstream)
        return None if inner is None else min(inner, params["n"])
    if name in ("tuples", "keras_tuples", "measure") or (name == "zmq_offload" and params.get("workers", 1) == 1):
        return epoch_length(upstream)
    return None
