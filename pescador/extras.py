"""The 3.x extras users rely on: ``@streamable``, ``cache``, ``epochs`` and ``epoch_length``.

(The rate distributions of the 3.x mux are the ``dist`` argument of
:func:`pescador.mux` and :func:`pescador.mux.stochastic_mux`.)
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload


from . import core
from .core import ItemTransform, PoolTransform, Source, Stream, Transform, check_count, stream
from ._checks import _check_k
from .mux import _Mux, _PoolOf, _passes
from .stage import NO_EPOCHS, Stage, _from_collection, pool_length, stage_of, start
from .exceptions import ParameterError, ParameterTypeError, PescadorError

__all__ = ["streamable", "cache", "epochs", "epoch_length"]


# ----------------------------------------------------------------------------
# @streamable
# ----------------------------------------------------------------------------


class _Streamable:
    """A generator function that, called, returns a :class:`~pescador.Stream`."""

    def __init__(self, fn: Callable) -> None:
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Stream:
        core._check_call(self.__wrapped__, args, kwargs)
        return Stream(_Call(self), args, kwargs)

    def __reduce__(self) -> Any:
        # As a decorator, the module's name for the function is this wrapper:
        # pickle it by that name.  Otherwise (``s = streamable(fn)``, or in
        # ``__main__``, which a worker cannot import: a notebook, python -c),
        # wrap the function again on the other side (cloudpickle sends a
        # function of ``__main__`` by value: pescador._pickling).
        module = sys.modules.get(self.__module__)
        if self.__module__ != "__main__" and module is not None and getattr(module, self.__qualname__, None) is self:
            return self.__qualname__
        return (streamable, (self.__wrapped__,))

    def __repr__(self) -> str:
        return f"<streamable {self.__qualname__}>"


class _Call:
    """What a streamable recipe runs: the wrapped function (pickled through its wrapper)."""

    __slots__ = ("wrapper",)

    def __init__(self, wrapper: _Streamable) -> None:
        self.wrapper = wrapper

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapper.__wrapped__(*args, **kwargs)

    @property
    def pescador_name(self) -> str:  # (for reprs: stream(count, 3))
        return self.wrapper.__qualname__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Call) and other.wrapper.__wrapped__ is self.wrapper.__wrapped__

    def __hash__(self) -> int:
        return hash(self.wrapper.__wrapped__)

    def __reduce__(self) -> Any:
        return (_Call, (self.wrapper,))


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

    As in pescador 3.x, the result has the ``Streamer`` methods
    (``iterate``, ``cycle``, calling it):

    >>> [x["i"] for x in s.iterate(max_iter=2)], [x["i"] for x in s(max_iter=4, cycle=True)]
    ([0, 1], [0, 1, 2, 0])
    """
    if not callable(fn) or isinstance(fn, (Stream, type)):
        raise ParameterTypeError(f"streamable: expected a generator function; got a {type(fn).__name__}")
    return _Streamable(fn)


# ----------------------------------------------------------------------------
# cache
# ----------------------------------------------------------------------------


def _generator(random_state: Any) -> Any:
    from ._random import _rng  # ints reproduce; in a worker, combined with the worker's seed
    from .stage import run_seeds
    from .workers import worker_info

    return _rng(random_state, worker_info(), run_seeds())


class _Cache(Stage):
    """As pescador 3.x: the first ``n_cache`` items pass through, in order, filling the cache; then at
    each step an entry is picked at random, replaced with a new item from upstream with probability
    ``prob``, and yielded.  The run ends when it asks upstream for an item and there is none."""

    resumes = False
    why_not = ("its state would be the items it holds (up to n_cache dicts of arrays), which a small state "
               "cannot carry; put cache after a checkpointed part, or leave it out of a resumable run")

    def __init__(self, upstream: Any, n_cache: int, prob: float, random_state: Any, state: Any = None) -> None:
        if state is not None:
            raise PescadorError(f"resumable: a cache stage cannot be resumed: {self.why_not}")
        self.run = _cache(start(upstream), n_cache, prob, _generator(random_state))

    def __next__(self) -> Any:
        return next(self.run)

    def state(self) -> dict:
        raise PescadorError(f"resumable: a cache stage cannot be resumed: {self.why_not}")


def _cache(upstream: Any, n_cache: int, prob: float, rng: Any) -> Iterator:
    """As pescador 3.x: the first ``n_cache`` items pass through, in order, filling the cache; then at
    each step an entry is picked at random, replaced with a new item from upstream with probability
    ``prob``, and yielded.  The run ends when it asks upstream for an item and there is none."""
    it = iter(upstream)
    kept: list = []
    for item in it:
        kept.append(item)
        yield item
        if len(kept) == n_cache:
            break
    else:
        return  # (upstream ended while the cache was filling)
    draws: list = []
    while True:
        if len(draws) < 2:
            draws = rng.random(2048).tolist()
        slot = int(draws.pop() * n_cache)
        if draws.pop() < prob:
            try:
                kept[slot] = next(it)
            except StopIteration:
                return
        yield kept[slot]


_T = TypeVar("_T")


@overload
def cache(n_cache: int, /, *, prob: float = 0.5, random_state: Any = None) -> ItemTransform: ...
@overload
def cache(stream: Source[_T], n_cache: int, prob: float = 0.5, random_state: Any = None) -> Iterator[_T]: ...
def cache(stream: Any = None, n_cache: Any = None, prob: float = 0.5, random_state: Any = None) -> Any:
    """Stochastically re-use recent items (pescador 3.x ``cache``): a cheap way to stretch a slow stream.

    The first ``n_cache`` items pass through in order and fill a cache.
    Then, at each step, an entry of the cache is picked at random; with
    probability ``prob`` it is replaced with a *new* item from upstream,
    and it is yielded.  So ``prob`` is the share of new items in the output
    (after the first ``n_cache``): each upstream item is yielded ``1 / prob``
    times on average, and ``prob=1`` passes every item through once.  The
    run ends when it asks upstream for a new item and there is none.

    Two styles under one name (see :func:`pescador.core.is_data`):
    ``cache(stream, n_cache, prob=0.5, random_state=None)``, the 3.x call,
    returns an iterator over that stream; ``cache(n_cache, prob=...,
    random_state=...)`` is a curried stage for a pipe.

    Parameters
    ----------
    stream : optional
        The data, in the 3.x call: anything :func:`pescador.stream` accepts,
        or a live iterator.
    n_cache : int >= 1
        Size of the cache.
    prob : float in (0, 1]
        Probability of drawing a new item from upstream at each step.
    random_state : None, int, np.random.Generator or np.random.RandomState

    Examples
    --------
    >>> import pescador
    >>> items = [{"i": i} for i in range(100)]
    >>> out = list(pescador.cache(8, prob=0.5, random_state=0)(items))
    >>> len(out) > 100, [x["i"] for x in out[:8]], sorted({x["i"] for x in out}) == list(range(100))
    (True, [0, 1, 2, 3, 4, 5, 6, 7], True)
    >>> len(list(pescador.cache(items, 8, prob=1.0)))  # the 3.x call; every item once
    100
    """
    where = "cache"
    curried = stream is None or not core.is_data(stream)
    if curried and stream is not None:  # cache(8, prob=...)
        if n_cache is not None:
            raise ParameterTypeError(f"{where}: in a pipe, give prob and random_state by name: cache(8, prob=0.5)")
        stream, n_cache = None, stream
    n_cache = check_count(n_cache, where, "n_cache", minimum=1)
    if not isinstance(prob, numbers.Real) or isinstance(prob, bool) or not 0 < prob <= 1:
        raise (ParameterError if isinstance(prob, numbers.Real) and not isinstance(prob, bool) else ParameterTypeError)(
            f"{where}: prob (the probability of drawing a new item, as in pescador 3.x) must be a number in "
            f"(0, 1]; got {prob!r}"
        )
    from ._checks import _check_random_state

    params = dict(n_cache=n_cache, prob=float(prob), random_state=_check_random_state(random_state, where))
    if curried:
        return Transform("cache", _Cache, params)
    return core.run_data_first(_Cache, stream, **params)


# ----------------------------------------------------------------------------
# epochs
# ----------------------------------------------------------------------------


class _Epochs(_Mux):
    """A run of :func:`epochs`: every stream of the pool once per epoch, ``k`` at a time."""

    name = "epochs"

    def __init__(self, pool: tuple, n_epochs: int | None = None, k: int | None = None, random_state: Any = None,
                 state: Any = None) -> None:
        self._begin(pool, dict(n_epochs=n_epochs, k=k, random_state=random_state), None, state)

    @classmethod
    def settings(cls, pool: tuple, p: dict) -> dict:
        return _passes(p["k"] or max(1, len(pool)), "random", "uniform", p["n_epochs"], p["random_state"])

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable) -> float | None:
        per_epoch = pool_length(upstream, None, length)
        if not per_epoch:  # (unknown, or nothing: the run ends after an empty epoch)
            return per_epoch
        n_epochs = cls._params(params)["n_epochs"]
        return math.inf if n_epochs is None else n_epochs * per_epoch

    @classmethod
    def epoch_length(cls, upstream: Any, params: dict, epoch: Callable) -> Any:
        return pool_length(upstream, None, _run_length)


def epochs(n_epochs: int | None = None, *, k: int | None = None, random_state: Any = None) -> PoolTransform:
    """Run a pool of finite streams exhaustively, once per epoch.

    Applied to a pool (a list of streams), gives a stream that, in each
    epoch, runs every stream of the pool to its end exactly once, ``k`` at a
    time (all at once by default), interleaving their items at random; then
    starts the next epoch, ``n_epochs`` times (None: for ever).  Every
    stream runs in every epoch, also one whose run gave nothing in an
    earlier epoch.  It ends early if a whole epoch gives nothing.

    Inside :func:`pescador.zmq_offload` workers the pool is sharded (worker
    ``i`` of ``n`` runs members ``i::n``), so over the run every item comes
    once per epoch in total, and each worker's items come epoch by epoch.
    The workers do not wait for each other: one with a small share runs
    ahead, so the output may mix items of epochs far apart.  To keep epochs
    apart, offload one pass (``mux(k, None, with_replacement=False)``) and
    put ``epochs`` after the offload.
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
    from ._checks import _check_random_state

    where = "epochs"
    params = dict(
        n_epochs=None if n_epochs is None else check_count(n_epochs, where, "n_epochs", minimum=1),
        k=None if k is None else _check_k(k, where),
        random_state=_check_random_state(random_state, where),
    )
    return PoolTransform("epochs", _Epochs, params, coerce=_PoolOf(where))


# ----------------------------------------------------------------------------
# epoch_length
# ----------------------------------------------------------------------------

def _run_length(s: Any) -> float | None:
    """Items one run of ``s`` yields: a number, ``math.inf`` (known endless), or None (unknown)."""
    if not isinstance(s, Stream):
        return None
    if s.step is None:
        return len(s.args[0]) if s.fn is _from_collection else None
    cls = stage_of(s)
    return None if cls is None else cls.run_length(s.args[0], s.step.params, _run_length)


def _epoch(s: Any) -> Any:
    """Items of one epoch where ``s`` ends in an epochs stage (through the stages that look through),
    None if unknown, or NO_EPOCHS."""
    cls = stage_of(s)
    return NO_EPOCHS if cls is None else cls.epoch_length(s.args[0], s.step.params, _epoch)


def _finite(length: Any) -> int | None:
    return None if length is None or length is NO_EPOCHS or length == math.inf else int(length)


def _items(s: Stream, run: bool) -> int | None:
    """Items of an epoch (``run``: of a run) of ``s`` for the worker being counted; None if unknown or endless."""
    if run:
        return _finite(_run_length(s))
    length = _epoch(s)
    return _finite(_run_length(s) if length is NO_EPOCHS else length)


_EVEN = ("drop", "pad")


def check_even(even: Any, where: str) -> str | None:
    """``even`` if it is None, "drop" or "pad", else a ParameterError naming ``where``."""
    if even is not None and even not in _EVEN:
        raise ParameterError(
            f"{where}: even must be None (each rank its own count), 'drop' (every rank the smallest rank's "
            f"count) or 'pad' (every rank the largest rank's); got {even!r}"
        )
    return even


def rank_counts(s: Stream, workers: int, run: bool = False) -> list:
    """For each training rank, the items of an epoch (``run``: a run) of ``s`` in each of its ``workers``
    processes (0: the rank's own process), each counted as that process's run would go: a list (one per
    rank) of lists (one per process), None where unknown."""
    from .workers import WorkerInfo, counted_as, over_workers, rank_info

    _, world = rank_info()
    counts = []
    for rank in range(world):
        with counted_as(WorkerInfo(rank, world, None, rank, world)):  # (the rank's own process)
            counts.append(over_workers(lambda: _items(s, run), workers) if workers else [_items(s, run)])
    return counts


def even_count(counts: list, even: str | None, rank: int) -> int | None:
    """Items of ``rank``'s epoch: its own (``even`` None), or the smallest ("drop") or the largest ("pad")
    over the ranks; None if a count is unknown."""
    totals = [None if None in per_rank else sum(per_rank) for per_rank in counts]
    if even is None:
        return totals[rank]
    if None in totals:
        return None
    return min(totals) if even == "drop" else max(totals)


def epoch_length(recipe: Any, even: str | None = None) -> int | None:
    """How many items an epoch of ``recipe`` holds on this training rank, when that can be known without
    running it.

    For an :func:`epochs` stream (possibly followed by
    :func:`~pescador.tuples`, :func:`~pescador.keras_tuples`,
    :func:`~pescador.measure` or an offload), the items of one epoch; for
    any other recipe, the items of one run.  Known for streams over
    collections and through the stages that keep or bound a count: muxes
    that run every stream once to its end (``with_replacement=False,
    lam=None``, exhaustive modes), ``epochs``, ``take``, the offloads (the
    items of all their workers) and the stages above.  None otherwise: a
    generator function's length cannot be known without running it, and an
    endless run has no length.

    Under distributed training (see :func:`pescador.worker_info`), the muxes
    and ``epochs`` shard their pool across ranks (and workers), and this is
    the count of this rank's share.  Ranks' shares may differ; ranks that
    must take the same number of steps (DDP) need one count for all.

    Parameters
    ----------
    recipe
        Anything :func:`pescador.stream` accepts alone.
    even : None, "drop" or "pad"
        None: this rank's count.  "drop": the smallest rank's count, the
        same on every rank (the larger ranks leave out their last items,
        as ``DistributedSampler(drop_last=True)`` does); "pad": the largest
        rank's (the smaller ranks go on into a new run, as
        ``DistributedSampler`` pads).  Give a plain loop that count with
        ``take(n)`` ("drop") or ``cycle(n)`` ("pad");
        :func:`pescador.torch.loader` and :func:`pescador.keras.dataset` do
        it for you.

    Examples
    --------
    >>> import pescador
    >>> s = pescador.stream([{"i": i} for i in range(10)])
    >>> pescador.epoch_length(s), pescador.epoch_length(pescador.take(4, s))
    (10, 4)
    >>> pool = [s, pescador.take(5, s)]
    >>> pescador.epoch_length(pescador.epochs(3)(pool)), pescador.epoch_length(pescador.take(40, pescador.epochs()(pool)))
    (15, 40)
    >>> def gen():
    ...     yield {"i": 0}
    >>> print(pescador.epoch_length(pescador.stream(gen)))
    None

    On two ranks (here by the variables torchrun sets), each counts its share:

    >>> import os
    >>> os.environ.update(RANK="1", WORLD_SIZE="2")
    >>> once = pescador.mux(2, None, with_replacement=False)(pool)
    >>> pescador.epoch_length(once), pescador.epoch_length(once, even="drop"), pescador.epoch_length(once, even="pad")
    (5, 5, 10)
    >>> del os.environ["RANK"], os.environ["WORLD_SIZE"]
    """
    s = stream(recipe)
    if check_even(even, "epoch_length") is None:
        return _items(s, run=False)
    from .workers import worker_info

    return even_count(rank_counts(s, 0), even, worker_info().rank)
