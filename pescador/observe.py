"""Observers: what a mux is doing (:class:`MuxStats`) and how fast items flow (:class:`Meter`).

An observer is an ordinary object you create and hand to a recipe; the runs
of that recipe update it, and you read it whenever you like, during or after
a run.  Each run starts its observer afresh.  Counts live in the process
that runs the observed stage: a stage inside :func:`pescador.zmq_offload`
runs in the workers, and its observer there is a copy, so put observers on
the consumer's side of an offload.

Neither costs more than a microsecond per item when it is not looked at:
:class:`MuxStats` is updated once per activation, not per item, and
:func:`measure` adds two counters and a sum of ``nbytes`` per item.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import numpy as np

from .core import ItemTransform, Stream, Transform
from .exceptions import PescadorError
from .stage import Stage, start

__all__ = ["MuxStats", "Meter", "measure"]


class _Run:
    """The token of a run counting into a :class:`MuxStats` (held by the run while it lives)."""

    __slots__ = ("where", "__weakref__")

    def __init__(self, where: str) -> None:
        self.where = where


class MuxStats:
    """Per-stream statistics of a mux run: items, activations, observed shares.

    Pass one to any mux (``pescador.mux(..., stats=stats)``, and the
    ``stats`` argument of every sibling); each run resets it and keeps it
    current.  Reading it during a run includes the items of the activations
    still live.  One observer counts one run at a time: a run that starts
    while another run counting into the same observer has not ended (say, a
    validation mux given the training mux's observer) raises
    :class:`~pescador.PescadorError`.  Runs one after the other are fine.

    Attributes
    ----------
    items : np.ndarray of int
        Items each stream of the pool has given in the current (or last) run.
    activations : np.ndarray of int
        Times each stream was activated.
    shares : np.ndarray of float
        Observed proportion of items from each stream (zeros before any).
    expected : np.ndarray of float
        The weights, normalised (uniform when the mux has none).

    Examples
    --------
    >>> import pescador
    >>> def constant(v):
    ...     while True:
    ...         yield {"v": v}
    >>> stats = pescador.MuxStats()
    >>> pool = [pescador.stream(constant, v) for v in range(3)]
    >>> mixed = pescador.mux(2, 8.0, weights=[2, 1, 1], random_state=0, stats=stats)(pool)
    >>> _ = list(pescador.take(40_000, mixed))
    >>> int(stats.items.sum())
    40000
    >>> stats.expected
    array([0.5 , 0.25, 0.25])
    >>> bool(abs(stats.shares - stats.expected).max() < 0.05)  # observed against expected
    True
    """

    def __init__(self) -> None:
        self._owner: Any = None  # a weak reference to the token of the run counting into this observer
        self._reset(0, None, [])

    def _reset(self, n: int, weights: Any, slots: list) -> None:
        self._items = np.zeros(n, dtype=np.int64)
        self._activations = np.zeros(n, dtype=np.int64)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        w = w / w.max() if n else w  # (first: a sum of very large weights would overflow)
        self._expected = w / w.sum() if n else w
        self._slots = slots  # (the run's live slots: each has .who and .given())

    def _start(self, n: int, weights: Any, slots: list, where: str = "mux") -> Any:
        """Called by the mux engine when a run starts; keeps a view of its live slots.

        Returns the run's token, which the run holds until it ends (then
        :meth:`_stop`); a second run starting while the first still holds
        its token is refused.
        """
        holder = None if self._owner is None else self._owner()
        if holder is not None:
            raise PescadorError(
                f"{where}: this MuxStats is already counting a run of {holder.where} that has not ended; one "
                "observer cannot count two runs at once (their counts would mix, and pool sizes may differ). "
                "Give each mux its own MuxStats, or end (close) the first run before starting the next"
            )
        token = _Run(where)
        self._owner = weakref.ref(token)
        self._reset(n, weights, slots)
        return token

    def _stop(self, token: Any) -> None:
        """Called by the mux engine when its run ends: the observer may count another run."""
        if self._owner is not None and self._owner() is token:
            self._owner = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_owner"] = None  # (a copy, say in a worker process, counts its own runs)
        return state

    @property
    def items(self) -> np.ndarray:
        out = self._items.copy()
        for slot in list(self._slots):  # (a copy: slots may be released while we look)
            out[slot.who] += slot.given()
        return out

    @property
    def activations(self) -> np.ndarray:
        return self._activations.copy()

    @property
    def shares(self) -> np.ndarray:
        items = self.items
        total = items.sum()
        return items / total if total else np.zeros(len(items))

    @property
    def expected(self) -> np.ndarray:
        return self._expected.copy()

    def __str__(self) -> str:
        items, shares = self.items, self.shares
        lines = ["stream      items  activations  share  expected"]
        for i in range(len(items)):
            lines.append(
                f"{i:6d}  {items[i]:9,d}  {self._activations[i]:11,d}  {shares[i]:5.3f}  {self._expected[i]:8.3f}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<MuxStats of {len(self._items)} streams, {int(self.items.sum()):,} items>"


class Meter:
    """Throughput of the items passing a :func:`measure` stage.

    Attributes
    ----------
    items : int
        Items seen in the current (or last) run.
    bytes : int
        Their arrays' total ``nbytes``.
    seconds : float
        Time since the run asked for its first item (until it ended).
    items_per_second, megabytes_per_second : float
        ``items / seconds`` and ``bytes / seconds / 1e6``.

    ``str(meter)`` is a one-line progress text for a training loop.

    Examples
    --------
    >>> import numpy as np, pescador
    >>> meter = pescador.Meter()
    >>> batches = pescador.measure(meter)([{"X": np.zeros((8, 4))}] * 10)
    >>> _ = list(batches)
    >>> meter.items, meter.bytes
    (10, 2560)
    >>> "items/s" in str(meter)
    True
    """

    def __init__(self) -> None:
        self.items = 0
        self.bytes = 0
        self._t0: float | None = None
        self._t1: float | None = None

    def _start(self) -> None:
        self.items = self.bytes = 0
        self._t0, self._t1 = time.perf_counter(), None

    def _stop(self) -> None:
        self._t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t1 if self._t1 is not None else time.perf_counter()) - self._t0

    @property
    def items_per_second(self) -> float:
        seconds = self.seconds
        return self.items / seconds if seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        seconds = self.seconds
        return self.bytes / seconds / 1e6 if seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.items:,} items, {self.bytes / 1e6:,.1f} MB in {self.seconds:.1f} s: "
            f"{self.items_per_second:,.0f} items/s, {self.megabytes_per_second:,.1f} MB/s"
        )

    def __repr__(self) -> str:
        return f"<Meter {self}>"


class _Measure(Stage):
    """measure: items pass unchanged, counted into the meter.  State: the upstream's.

    The meter starts when the first item is asked for and stops when the
    run ends (its upstream ends or raises), is closed, or is collected.
    """

    one_to_one = True

    def __init__(self, upstream: Stream, meter: Meter, state: Any = None) -> None:
        self.meter = meter
        self.up = start(upstream, state)
        self.phase = 0  # 0: no item asked yet; 1: counting; 2: ended

    def __next__(self) -> Any:
        if self.phase != 1:
            if self.phase == 2:
                raise StopIteration
            self.phase = 1
            self.meter._start()
        try:
            item = next(self.up)
        except BaseException:
            self._end()
            raise
        size = 0
        if type(item) is dict:
            for value in item.values():
                if type(value) is np.ndarray:
                    size += value.nbytes
        meter = self.meter
        meter.items += 1
        meter.bytes += size
        return item

    def state(self) -> Any:
        return self.up.state()

    def _end(self) -> None:
        if self.phase == 1:
            self.meter._stop()
        self.phase = 2

    def close(self) -> None:
        """End the run now: the meter's clock stops, and the upstream run is closed."""
        self._end()
        close = getattr(self.up, "close", None)
        if close is not None:
            close()

    def __del__(self) -> None:
        if getattr(self, "phase", 0) == 1:
            self.meter._stop()


def measure(meter: Meter) -> ItemTransform:
    """Count the items (and their bytes) passing this point of a pipeline into ``meter``.

    Curried and data-last; items pass unchanged.  See :class:`Meter`.

    Examples
    --------
    >>> import pescador
    >>> meter = pescador.Meter()
    >>> pescador.measure(meter)
    measure(meter=<Meter 0 items, 0.0 MB in 0.0 s: 0 items/s, 0.0 MB/s>)
    """
    if not isinstance(meter, Meter):
        raise PescadorError(f"measure: expected a pescador.Meter; got a {type(meter).__name__}")
    return Transform("measure", _Measure, {"meter": meter})
