"""The class facade: Streamer, BufferedStreamer, Mux, ZMQStreamer (1.0) and
StochasticMux, ShuffledMux, RoundRobinMux, ChainMux (3.x).

Each class builds a recipe with the functional layer (:mod:`pescador.core`
and the combinator modules) and delegates to it; it adds only the old method
names, the ``active`` count and 3.x's ``with streamer as live:``.  The
combinators recognise these objects through ``__pescador_stream__``; they
never import this module.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import core
from ._checks import _spelled
from .exceptions import ParameterTypeError
from .stage import stage_of, start_plain

__all__ = [
    "Streamer",
    "BufferedStreamer",
    "Mux",
    "ZMQStreamer",
    "StochasticMux",
    "ShuffledMux",
    "RoundRobinMux",
    "ChainMux",
]


_IN_PROGRESS = (inspect.GEN_RUNNING, inspect.GEN_SUSPENDED)
_LAZY_STAGES = (core._Take, core._Cycle, core._Tuples)


def _starts_lazily(recipe: Any) -> bool:
    """Whether starting the plain run of ``recipe`` runs none of its code: a source that is a generator
    function (calling it runs nothing) under any number of take, cycle and tuples, whose plain forms
    are iterators made without drawing an item."""
    while stage_of(recipe) in _LAZY_STAGES:
        recipe = recipe.args[0]
    return stage_of(recipe) is None and isinstance(recipe, core.Stream) and inspect.isgeneratorfunction(recipe.fn)


def _limit(where: str, **limits: Any) -> int | None:
    """The one limit given among aliases (max_batches, max_items, max_iter), checked."""
    given = {name: value for name, value in limits.items() if value is not None}
    if len(given) > 1:
        raise ParameterTypeError(f"{where}: give one of {', '.join(given)}, not several")
    for name, value in given.items():
        return core.check_count(value, where, name)
    return None


class Streamer:
    """A reusable, picklable wrapper around a generator (the 1.0 interface).

    ``Streamer(fn, *args, **kwargs)`` holds ``fn`` and its arguments without
    calling it; every run (``generate()``, ``streamer()``, ``iter(streamer)``)
    calls it afresh.  It is a thin facade over :func:`pescador.stream`: the
    recipe is available as ``streamer.stream``.

    Parameters
    ----------
    streamer : generator function, iterable collection, Streamer or Stream
        What to draw items from.
    *args, **kwargs
        Arguments for ``streamer`` when it is a function.

    Attributes
    ----------
    stream : pescador.Stream
        The recipe this facade runs.
    streamer, args, kwargs
        What the Streamer was built from (``generator`` is an alias of
        ``streamer``).

    Examples
    --------
    >>> import numpy as np, pescador
    >>> def my_generator(n):
    ...     for i in range(n):
    ...         yield {'X': np.full((1, 3), i)}
    >>> GS = pescador.Streamer(my_generator, 5)
    >>> len(list(GS()))
    5
    >>> len(list(GS(max_batches=3)))
    3
    >>> len(list(GS(cycle=True, max_batches=12)))
    12
    """

    @_spelled  # (a call whose arguments do not fit says how it reads; each subclass's too: __init_subclass__)
    def __init__(self, streamer: Any, *args: Any, **kwargs: Any) -> None:
        if (args or kwargs) and not callable(streamer) and not isinstance(streamer, core.Stream):
            # pescador 1.x stored the arguments and ignored them for a source that is
            # not a function (a list, an array); keep such code running, and say so.
            warnings.warn(
                f"Streamer() ignores the arguments given with a {type(streamer).__name__} "
                "(only a generator function takes arguments); pescador 1.x ignored them "
                "too, and a later release will refuse them",
                DeprecationWarning,
                stacklevel=2,
            )
            args, kwargs = (), {}
        self._facade(core.stream(streamer, *args, **kwargs), streamer, args, kwargs)

    _live: Any = None  # a live copy's run (``with streamer as live``); None in the streamer itself
    _runs: Any = None  # the generators of the runs started here (a WeakSet, made at the first run)
    _entered: tuple = ()  # the live copies of the ``with`` blocks open on this streamer, innermost last

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _spelled(cls.__init__)  # type: ignore[method-assign]

    def _facade(self, recipe: core.Stream, streamer: Any, args: tuple = (), kwargs: dict | None = None) -> None:
        self.stream = recipe
        self.streamer = streamer
        self.args = args
        self.kwargs = dict(kwargs or {})
        self._active = 0

    # -- what pescador.stream() reads to accept a Streamer -------------------
    def __pescador_stream__(self) -> core.Stream:
        return self.stream

    @property
    def generator(self) -> Any:
        """What this Streamer draws from (1.0 name of ``streamer``)."""
        return self.streamer

    # -- activity ------------------------------------------------------------
    @property
    def active(self) -> int:
        """How many runs of this Streamer are in progress (0 when none: false, as 1.0's flag was)."""
        runs = self._runs
        if runs is None:
            return self._active
        return self._active + sum(1 for run in list(runs) if inspect.getgeneratorstate(run) in _IN_PROGRESS)

    def activate(self) -> None:
        """Count one more run in progress (``with`` blocks do; runs are counted by themselves)."""
        self._active += 1

    def deactivate(self) -> None:
        """Count one run fewer in progress, of those :meth:`activate` counted."""
        self._active = max(0, self._active - 1)

    def _run(self, recipe: Any) -> Iterator:
        """The recipe's plain run as a generator that starts nothing before its first item, counted in
        :attr:`active` from its first item until it ends (by its end, ``close()`` or an exception): the
        generator's own state says which, so a run costs nothing per item for counting.  Where starting the
        plain run runs none of the recipe's code (see :func:`_starts_lazily`) the generator is
        ``iter(recipe)`` itself; else one generator starts it at the first item."""
        run = core.as_generator(start_plain(recipe)) if _starts_lazily(recipe) else core._drain(None, recipe)
        if self._runs is None:
            self._runs = weakref.WeakSet()
        self._runs.add(run)
        return run

    # -- 3.x: ``with streamer as live`` ---------------------------------------
    def __enter__(self) -> Any:
        """A live copy of this streamer, holding one run in progress (3.x's "activated copy").

        The streamer counts it in :attr:`active` until the block ends, which
        ends the run.  Iterating the copy (``live.iterate(n)``, ``iter(live)``,
        ``live(max_iter=n)``) continues that run; a live copy enters a ``with``
        block as itself.

        Examples
        --------
        >>> import pescador
        >>> s = pescador.Streamer("abcd")
        >>> with s as live:
        ...     s.active, list(live.iterate(2)), list(live.iterate())
        (1, ['a', 'b'], ['c', 'd'])
        >>> s.active
        0
        """
        if self._live is not None:
            return self
        live = copy.copy(self)
        live._live = iter(self.stream)
        self._entered = (*self._entered, live)
        self.activate()
        return live

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None or not self._entered:
            return
        live = self._entered[-1]
        self._entered = self._entered[:-1]
        self.deactivate()
        close = getattr(live._live, "close", None)
        if close is not None:
            close()

    # -- iteration -----------------------------------------------------------
    def generate(self, max_batches: int | None = None) -> Iterator:
        """Start a fresh run, yielding at most ``max_batches`` items.

        Parameters
        ----------
        max_batches : None or int >= 0
            Maximum number of items to yield; None exhausts the stream.

        Yields
        ------
        batch : dict
            Items from the stream.
        """
        limit = _limit("generate", max_batches=max_batches)
        if self._live is not None:  # a live copy: its run goes on
            return itertools.islice(self._live, limit)
        return self._run(self.stream if limit is None else core.take(limit, self.stream))

    def iterate(self, max_iter: int | None = None) -> Iterator:
        """Start a fresh run, yielding at most ``max_iter`` items (2.x/3.x name)."""
        return self.generate(max_iter)

    def __iter__(self) -> Iterator:
        return self.generate()

    def cycle(self, max_iter: int | None = None) -> Iterator:
        """Yield items for ever, restarting the stream whenever it ends.

        Parameters
        ----------
        max_iter : None or int >= 0
            Total number of items to yield; None for no limit.

        Raises
        ------
        PescadorError
            If a run of the stream yields nothing (it would spin).
        """
        return self._run(core.cycle(max_iter, self.stream))

    def __call__(
        self,
        max_batches: int | None = None,
        cycle: bool = False,
        *,
        max_items: int | None = None,
        max_iter: int | None = None,
    ) -> Iterator:
        """Iterate: ``generate(max_batches)``, or ``cycle(max_batches)`` if ``cycle``.

        Parameters
        ----------
        max_batches : None or int >= 0
            Maximum number of items to yield (``max_items``, as the 1.0
            docstring spells it, and ``max_iter``, the 3.x name, are aliases).
        cycle : bool
            If True, restart the stream whenever it ends.
        """
        limit = _limit("Streamer()", max_batches=max_batches, max_items=max_items, max_iter=max_iter)
        return self.cycle(limit) if cycle else self.generate(limit)

    def tuples(self, *items: Any, cycle: bool = False, max_batches: int | None = None) -> Iterator[tuple]:
        """Yield ``(batch[item1], batch[item2], ...)`` tuples instead of dicts.

        Parameters
        ----------
        *items
            One or more keys.
        cycle : bool
            If True, restart the stream whenever it ends.
        max_batches : None or int >= 0
            Maximum number of tuples to yield.
        """
        if not items:
            raise ParameterTypeError("Streamer.tuples: name at least one key, e.g. tuples('X', 'Y')")
        limit = _limit("Streamer.tuples", max_batches=max_batches)
        if cycle:
            base = core.cycle(limit, self.stream)
        else:
            base = self.stream if limit is None else core.take(limit, self.stream)
        return self._run(core.tuples(*items)(base))

    # -- pickling and display -------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_active"] = 0  # a copy starts with no run in progress
        state.pop("_runs", None)
        state.pop("_live", None)
        state.pop("_entered", None)
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stream!r})"


class BufferedStreamer(Streamer):
    """Re-batch a stream into batches of ``buffer_size`` rows (the 1.0 interface).

    A facade over :func:`pescador.buffer`; ``max_batches`` counts buffered
    batches.

    Parameters
    ----------
    streamer : generator function, Streamer or Stream
        The stream of dict items to re-batch along their first axis.
    buffer_size : int > 0
        Rows per batch.
    strict_batch_size : bool
        If True, a final partial batch is dropped; if False it is yielded.
    """

    def __init__(self, streamer: Any, buffer_size: int, strict_batch_size: bool = True) -> None:
        from .buffered import buffer

        recipe = buffer(buffer_size, strict=strict_batch_size)(streamer)
        self._facade(recipe, streamer)
        self.buffer_size = buffer_size
        self.strict_batch_size = strict_batch_size


class Mux(Streamer):
    """Stochastic multiplexer over a pool of streams (the 1.0 interface).

    A facade over :func:`pescador.mux.mux`; see there for the semantics.

    Parameters
    ----------
    seed_pool : list of Streamer, Stream or generator function
    k : int > 0
        Number of streams active at once.
    lam : float > 0 or None
        Rate of the Poisson distribution of each activation's length;
        None runs each active stream until it ends.
    pool_weights : array-like or None
        Long-run share of items from each stream.
    with_replacement : bool
    prune_empty_seeds : bool
    revive : bool
    random_state : None, int, np.random.Generator or np.random.RandomState
    """

    def __init__(
        self,
        seed_pool: Any,
        k: int,
        lam: float | None = 256.0,
        pool_weights: Any = None,
        with_replacement: bool = True,
        prune_empty_seeds: bool = True,
        revive: bool = False,
        random_state: Any = None,
    ) -> None:
        from .mux import mux

        recipe = mux(
            k,
            lam,
            weights=pool_weights,
            with_replacement=with_replacement,
            prune_empty=prune_empty_seeds,
            revive=revive,
            random_state=random_state,
        )(seed_pool)
        self._facade(recipe, seed_pool)
        self.k = k
        self.lam = lam
        self.pool_weights = pool_weights
        self.with_replacement = with_replacement
        self.prune_empty_seeds = prune_empty_seeds
        self.revive = revive
        self.random_state = random_state


class ZMQStreamer(Streamer):
    """Run a stream in another process and receive its items over ZeroMQ (1.0 interface).

    A facade over :func:`pescador.zmq_offload` with one worker.

    Parameters
    ----------
    streamer : Streamer, Stream or generator function
    min_port, max_port : int
        Range of loopback TCP ports to try.
    max_tries : int
        How many ports to try before giving up.
    copy : bool
        If True, arrays are copied out of the received frames.
    timeout : None or float
        Seconds to wait for the worker to stop when the run ends.
    """

    def __init__(
        self,
        streamer: Any,
        min_port: int = 49152,
        max_port: int = 65535,
        max_tries: int = 100,
        copy: bool = False,
        timeout: float | None = None,
    ) -> None:
        from .zmq_stream import zmq_offload

        recipe = zmq_offload(
            workers=1,
            copy=copy,
            timeout=timeout,
            min_port=min_port,
            max_port=max_port,
            max_tries=max_tries,
        )(streamer)
        self._facade(recipe, streamer)
        self.min_port = min_port
        self.max_port = max_port
        self.max_tries = max_tries
        self.copy = copy
        self.timeout = timeout


# ----------------------------------------------------------------------------
# The 3.x multiplexers
# ----------------------------------------------------------------------------


def _normalised(recipe: core.Stream) -> np.ndarray:
    """A mux recipe's weights as 3.x kept them (its ``weights`` attribute): one per stream, summing to 1."""
    weights = recipe.kwargs["weights"]
    n = len(recipe.args[0])
    return np.full(n, 1 / n) if weights is None else np.asarray(weights) / sum(weights)


class StochasticMux(Streamer):
    """The 3.x ``StochasticMux``: a facade over :func:`pescador.mux.stochastic_mux`.

    Parameters
    ----------
    streamers : list of Streamers, streams, generator functions or collections
    n_active : int > 0
        Streams active at once (may exceed the size of the pool).
    rate : float > 0 or None
        Mean number of items of an activation; None runs each to its end.
    weights : array-like or None
    mode : "with_replacement", "single_active" or "exhaustive"
    prune_empty_streams : bool
    dist : "binomial", "poisson" or "constant"
        The distribution of activation lengths, as in 3.x (see
        :func:`pescador.mux.stochastic_mux`).
    random_state : None, int, np.random.Generator or np.random.RandomState

    Examples
    --------
    >>> import pescador
    >>> m = pescador.StochasticMux([pescador.Streamer("abc"), pescador.Streamer("def")], 2, 4, random_state=0)
    >>> sorted(m(max_iter=6)) == sorted(m(max_iter=6))
    True
    >>> set(m(max_iter=100)) <= set("abcdef")
    True
    """

    def __init__(self, streamers: Any, n_active: int, rate: float | None, weights: Any = None,
                 mode: str = "with_replacement", prune_empty_streams: bool = True, dist: str = "binomial",
                 random_state: Any = None) -> None:
        from .mux import stochastic_mux

        step = stochastic_mux(n_active, rate, weights, mode, prune_empty_streams, dist, random_state)
        self._facade(step(streamers), streamers)
        self.streamers = streamers
        self.n_active, self.rate, self.weights, self.mode = n_active, rate, _normalised(self.stream), mode
        self.prune_empty_streams, self.dist, self.random_state = prune_empty_streams, dist, random_state


class ShuffledMux(Streamer):
    """The 3.x ``ShuffledMux``: a facade over :func:`pescador.mux.shuffled_mux`.

    Examples
    --------
    >>> import pescador
    >>> m = pescador.ShuffledMux([pescador.Streamer("a"), pescador.Streamer("b")], weights=[0.5, 0.5], random_state=0)
    >>> len(list(m(max_iter=5)))
    5
    """

    def __init__(self, streamers: Any, weights: Any = None, random_state: Any = None) -> None:
        from .mux import shuffled_mux

        self._facade(shuffled_mux(weights, random_state)(streamers), streamers)
        self.streamers, self.weights, self.random_state = streamers, _normalised(self.stream), random_state


class RoundRobinMux(Streamer):
    """The 3.x ``RoundRobinMux``: a facade over :func:`pescador.mux.round_robin_mux`.

    Examples
    --------
    >>> import pescador
    >>> a, b, c = pescador.Streamer("a"), pescador.Streamer("b"), pescador.Streamer("c")
    >>> "".join(pescador.RoundRobinMux([a, b, c])(max_iter=9))
    'abc'
    >>> "".join(pescador.RoundRobinMux([a, b, c], mode="cycle")(max_iter=9))
    'abcabcabc'
    """

    def __init__(self, streamers: Any, mode: str = "exhaustive", random_state: Any = None) -> None:
        from .mux import round_robin_mux

        self._facade(round_robin_mux(mode, random_state)(streamers), streamers)
        self.streamers, self.mode, self.random_state = streamers, mode, random_state


class ChainMux(Streamer):
    """The 3.x ``ChainMux``: a facade over :func:`pescador.mux.chain_mux`.

    ``streamers`` is a list (an empty one gives an empty stream) or, with
    ``mode="exhaustive"`` or ``"cycle"``, a ``Streamer`` or a generator
    function whose items are the streams, produced at run time.

    Examples
    --------
    >>> import pescador
    >>> "".join(pescador.ChainMux([pescador.Streamer("abc"), pescador.Streamer("def")]))
    'abcdef'
    >>> "".join(pescador.ChainMux([pescador.Streamer("abc"), pescador.Streamer("def")], mode="cycle")(max_iter=12))
    'abcdefabcdef'
    >>> def gen_streamers(n_streamers, n_copies):
    ...     for i in range(n_streamers):
    ...         yield pescador.Streamer("abc"[i] * n_copies)
    >>> "".join(pescador.ChainMux(gen_streamers(3, 5)))
    'aaaaabbbbbccccc'
    >>> "".join(pescador.ChainMux(pescador.Streamer(gen_streamers, 2, 3)))
    'aaabbb'
    """

    def __init__(self, streamers: Any, mode: str = "exhaustive", random_state: Any = None) -> None:
        from .mux import chain_mux

        self._facade(chain_mux(mode, random_state)(streamers), streamers)
        self.streamers, self.mode, self.random_state = streamers, mode, random_state


def _into_3x_modules() -> None:
    """Where 3.x code finds the classes: ``pescador.mux.Mux``, ``from pescador.mux import StochasticMux``
    and ``pescador.core.Streamer``.  They are put into those modules, which do not import this one."""
    from . import mux

    for facade in (Mux, StochasticMux, ShuffledMux, RoundRobinMux, ChainMux):
        setattr(mux, facade.__name__, facade)
    core.Streamer = Streamer  # type: ignore[attr-defined]


_into_3x_modules()
