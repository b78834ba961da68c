"""The pescador 1.0 class facade: Streamer, BufferedStreamer, Mux, ZMQStreamer.

Each class builds a recipe with the functional layer (:mod:`pescador.core`
and the combinator modules) and delegates to it; it adds only the 1.0 method
names and the ``active`` flag.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from . import core
from .exceptions import PescadorError

__all__ = ["Streamer", "BufferedStreamer", "Mux", "ZMQStreamer"]


def _limit(where: str, **limits: Any) -> int | None:
    """The one limit given among aliases (max_batches, max_items, max_iter), checked."""
    given = {name: value for name, value in limits.items() if value is not None}
    if len(given) > 1:
        raise PescadorError(f"{where}: give one of {', '.join(given)}, not several")
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
    def active(self) -> bool:
        """True while a run of this Streamer is in progress."""
        return self._active > 0

    def activate(self) -> None:
        """Mark the streamer active (runs do this themselves)."""
        self._active += 1

    def deactivate(self) -> None:
        """Mark a run of the streamer as finished (runs do this themselves)."""
        self._active = max(0, self._active - 1)

    def _run(self, recipe: Any) -> Iterator:
        self.activate()
        try:
            yield from recipe
        finally:
            self.deactivate()

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
            raise PescadorError("Streamer.tuples: name at least one key, e.g. tuples('X', 'Y')")
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
