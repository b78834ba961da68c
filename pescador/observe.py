"""Observers: what a mux is doing (:class:`MuxStats`) and how fast items flow (:class:`Meter`).

An observer is an ordinary object you create and hand to a recipe; the runs
of that recipe update it, and you read it whenever you like, during or after
a run.  Each run starts its observer afresh.  Counts live in the process
that runs the observed stage.  A stage inside :func:`pescador.zmq_offload`
runs in the workers, where its observer is a copy; the workers report their
copies' counts to the observer in your process (:mod:`pescador._report`),
summed over the workers, about ten times a second and exactly at the end of
the run.

Neither costs more than a microsecond per item when it is not looked at:
:class:`MuxStats` is updated once per activation, not per item, and
:func:`measure` adds three counters and a sum of ``nbytes`` per item (the
clock is read a few times per sampling interval, not per item).
"""

from __future__ import annotations

import collections
import numbers
import time
import weakref
from typing import Any, NamedTuple

import numpy as np

from .core import ItemTransform, Stream, Transform
from .exceptions import PescadorError
from .stage import Stage, most_given, start
from .workers import worker_info

__all__ = ["MuxStats", "Meter", "measure", "Activation"]


_REPORTED_HISTORY = 10_000  # the most activations a worker's report carries (MuxStats.history)


class _Run:
    """The token of a run counting into a :class:`MuxStats` (held by the run while it lives)."""

    __slots__ = ("where", "__weakref__")

    def __init__(self, where: str) -> None:
        self.where = where


class Activation(NamedTuple):
    """One activation of a mux run, as :attr:`MuxStats.history` keeps it.

    ``start`` and ``stop`` count the items the mux had given (in the process
    that ran it) when the activation began and when it ended; ``items`` is
    how many of them came from this activation's ``stream``; ``worker`` is
    the :func:`pescador.worker_info` id of the process that ran the mux (0
    in your own process).
    """

    stream: int
    start: int
    stop: int
    items: int
    worker: int


def _check_count(value: Any, where: str, name: str, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise PescadorError(f"{where}: {name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _figures(where: str) -> Any:
    """:mod:`pescador._figure` (and so matplotlib), imported on demand: an optional dependency."""
    try:
        import matplotlib.pyplot  # noqa: F401  (first: the error names matplotlib)

        from . import _figure
    except ImportError as exc:
        raise PescadorError(
            f"{where}: plotting needs matplotlib, which cannot be imported here ({exc}); "
            "install it (pip install matplotlib, or the docs extra: pip install 'pescador[docs]')"
        ) from None
    return _figure


def _integer_ticks(axis: Any) -> None:
    """Ticks at whole stream numbers, as many as fit (200 streams do not get 200 labels)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


class MuxStats:
    """Per-stream statistics of a mux run: items, activations, observed shares, recent activations.

    Pass one to any mux (``pescador.mux(..., stats=stats)``, and the
    ``stats`` argument of every sibling); each run resets it and keeps it
    current.  Reading it during a run includes the items of the activations
    still live.  One observer counts one run at a time: a run that starts
    while another run counting into the same observer has not ended (say, a
    validation mux given the training mux's observer) raises
    :class:`~pescador.PescadorError`.  Runs one after the other are fine.

    A mux inside :func:`pescador.zmq_offload` runs in the workers: they
    report to this observer in your process, summed over the workers, about
    ten times a second during the run and exactly at its end (see
    :doc:`observability`).

    Parameters
    ----------
    history : int >= 0
        How many of the most recent activations :attr:`history` keeps (per
        worker, for a mux inside ``zmq_offload``, whose reports carry at most
        the last 10,000).  Recorded once per activation, not per item.

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
    live : np.ndarray of int
        The streams of the activations live now (a stream may appear more
        than once: a mux with replacement may run it in several slots).
    history : list of Activation
        The last ``history`` activations, oldest first; those still live
        come last, with the items they have given so far.

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
    >>> len(stats.live), stats.history[-1].stop <= 40_000
    (2, True)
    """

    def __init__(self, history: int = 1000) -> None:
        self._keep = _check_count(history, "MuxStats", "history", 0)
        self._owner: Any = None  # a weak reference to the token of the run counting into this observer
        self._reset(0, None, [])

    def _reset(self, n: int, weights: Any, slots: list) -> None:
        self._items = np.zeros(n, dtype=np.int64)
        self._activations = np.zeros(n, dtype=np.int64)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        w = w / w.max() if n else w  # (first: a sum of very large weights would overflow)
        self._expected = w / w.sum() if n else w
        self._slots = slots  # (the run's live slots: each has .who and .given())
        self._total = 0  # items of the activations that ended
        self._born: dict = {}  # id(slot) -> items the mux had given when the slot's activation began
        self._history: Any = collections.deque(maxlen=self._keep)
        self._live: list = []  # (the workers' live streams, for a mux inside zmq_offload)
        self._worker = worker_info().id

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
                "Give each mux its own MuxStats, or end the first run before starting the next: close its "
                "iterator (it.close()) or drop it (del it).  An iterator kept after a peek (it = iter(batches); "
                "next(it)) keeps its run alive, and the workers of a zmq_offload in it, until then"
            )
        token = _Run(where)
        self._owner = weakref.ref(token)
        self._reset(n, weights, slots)
        return token

    def _stop(self, token: Any) -> None:
        """Called by the mux engine when its run ends: the observer may count another run.

        The activations still live end with the run: they join the history
        and their items the counts.
        """
        if self._owner is not None and self._owner() is token:
            self._owner = None
            slots, stop = list(self._slots), self._given()
            self._slots = []
            for slot in slots:
                given = slot.given()
                if self._keep:
                    start = self._born.pop(id(slot), stop - given)
                    self._history.append((slot.who, start, stop, given, self._worker))
                self._items[slot.who] += given
            self._total = stop

    # -- called by the mux engine once per activation ---------------------------------------------
    def _given(self) -> int:
        given = self._total
        for slot in self._slots:
            given += slot.bound - slot.left
        return given

    def _activated(self, slot: Any, slots: list) -> None:
        """``slot`` (the last of ``slots``) starts an activation."""
        self._activations[slot.who] += 1
        if self._keep:
            self._born[id(slot)] = self._given()

    def _released(self, slot: Any) -> None:
        """``slot``'s activation ends (it is still among the live slots)."""
        given = slot.given()
        if self._keep:
            stop = self._given()
            start = self._born.pop(id(slot), stop - given)  # (a slot restored by a resume: no record)
            self._history.append((slot.who, start, stop, given, self._worker))
        self._items[slot.who] += given
        self._total += given

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_owner"] = None  # (a copy, say in a worker process, counts its own runs)
        state["_slots"], state["_born"] = [], {}
        return state

    # -- across processes (pescador._report) ------------------------------------------------------
    def _snapshot(self) -> list:
        """What a worker reports: plain ints and floats (its counts include the live activations)."""
        for _ in range(3):  # (read by a reporting thread while the mux runs: retry a torn read)
            try:
                return [self.items.tolist(), self._activations.tolist(), self._expected.tolist(),
                        [list(entry) for entry in list(self._history)[-_REPORTED_HISTORY:]],
                        [int(s.who) for s in list(self._slots)]]
            except (RuntimeError, IndexError, ValueError):
                continue
        return []

    def _apply(self, snapshots: list) -> None:
        """Show the sum of the workers' latest snapshots (in the consumer)."""
        snapshots = [s for s in snapshots if s]
        if not snapshots:
            return
        n = max(len(s[0]) for s in snapshots)
        items, activations = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        history: list = []
        live: list = []
        for s in snapshots:
            items[: len(s[0])] += np.asarray(s[0], dtype=np.int64)
            activations[: len(s[1])] += np.asarray(s[1], dtype=np.int64)
            history += s[3]
            live += s[4]
        expected = next((s[2] for s in snapshots if len(s[2]) == n), None)
        # (items last: a reader in another thread that sees the new items sees the other arrays' new sizes)
        self._expected = np.asarray(expected if expected is not None else np.full(n, 1 / n if n else 0.0))
        self._activations, self._history, self._live = activations, history, live
        self._items = items

    # -- reading ----------------------------------------------------------------------------------
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

    @property
    def live(self) -> np.ndarray:
        return np.array([slot.who for slot in list(self._slots)] + list(self._live), dtype=np.int64)

    @property
    def history(self) -> list:
        out = [Activation(*entry) for entry in list(self._history)]
        slots = list(self._slots)
        if slots and self._keep:  # (the live activations, so far)
            now = self._given()
            born = self._born
            out += [Activation(s.who, born.get(id(s), now - s.given()), now, s.given(), self._worker) for s in slots]
        return out[-self._keep :] if self._keep else []

    _ALL_UP_TO = 20  # str() shows every stream of a pool this small

    def __str__(self) -> str:
        return self.table(None if len(self._items) <= self._ALL_UP_TO else 10)

    def table(self, top: int | None = 10) -> str:
        """The per-stream table: items, activations, observed share and expected share of each stream.

        ``str(stats)`` (``print(stats)``) is ``table()`` for a pool of more
        than 20 streams, and every stream's row for a smaller one.

        Parameters
        ----------
        top : int >= 0 or None
            Show the ``top`` streams that gave most items (most first), then
            a line for the others and one for the whole pool; None shows
            every stream, in pool order.

        Returns
        -------
        str

        Examples
        --------
        >>> import pescador
        >>> stats = pescador.MuxStats()
        >>> pool = [pescador.stream([{"v": v}] * (v + 1)) for v in range(30)]
        >>> _ = list(pescador.mux.chain_mux(stats=stats)(pool))
        >>> print(stats.table(top=2))
        stream      items  activations  share  expected
            29         30            1  0.065     0.033
            28         29            1  0.062     0.033
          (28 more streams: 406 items, shares 0.002 to 0.060)
        30 streams, 465 items in 30 activations; largest gap between share and expected: 0.031 (stream 0).
        table(top=None) shows every stream.
        >>> len(stats.table(top=None).splitlines())
        31
        """
        if top is not None:
            top = _check_count(top, "MuxStats.table", "top", 0)
        # (each array read once: a report, or the next run, may replace them while we look)
        activations, expected, items = self._activations, self._expected, self.items
        n = min(len(items), len(activations), len(expected))
        items, activations, expected = items[:n], activations[:n], expected[:n]
        total = int(items.sum())
        shares = items / total if total else np.zeros(n)
        shown = np.arange(n) if top is None else np.argsort(-items, kind="stable")[:top]
        lines = ["stream      items  activations  share  expected"]
        for i in shown:
            lines.append(f"{i:6d}  {items[i]:9,d}  {activations[i]:11,d}  {shares[i]:5.3f}  {expected[i]:8.3f}")
        if len(shown) < n:
            rest = np.setdiff1d(np.arange(n), shown)
            lines.append(f"  ({len(rest):,} more streams: {int(items[rest].sum()):,} items, "
                         f"shares {shares[rest].min():.3f} to {shares[rest].max():.3f})")
            gap = np.abs(shares - expected) if total else np.zeros(n)
            worst = int(np.argmax(gap))
            lines.append(f"{n:,} streams, {total:,} items in {int(activations.sum()):,} activations; largest gap "
                         f"between share and expected: {gap[worst]:.3f} (stream {worst}).")
            lines.append("table(top=None) shows every stream.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<MuxStats of {len(self._items)} streams, {int(self.items.sum()):,} items>"

    # -- pictures ---------------------------------------------------------------------------------
    def plot(self, kind: str = "both", ax: Any = None) -> Any:
        """Draw the run: which stream gave items when, and observed shares against the weights.

        Needs matplotlib (imported here, not by ``import pescador``).

        Parameters
        ----------
        kind : "both", "sources" or "shares"
            ``"sources"``: one bar per activation in :attr:`history`, at its
            stream, from the mux's item count when it began to the count
            when it ended (several workers: one colour each, each counting
            its own items); ``"shares"``: :attr:`shares` beside
            :attr:`expected`; ``"both"``: the two, side by side.
        ax : matplotlib Axes, optional
            Where to draw (``"sources"`` or ``"shares"`` only); a new
            figure when None.

        Returns
        -------
        matplotlib.figure.Figure
        """
        where = "MuxStats.plot"
        if kind not in ("both", "sources", "shares"):
            raise PescadorError(f"{where}: kind must be 'both', 'sources' or 'shares'; got {kind!r}")
        if kind == "both" and ax is not None:
            raise PescadorError(f"{where}: kind='both' draws two panels in a new figure; give ax only with "
                                "kind='sources' or kind='shares'")
        figures = _figures(where)
        if ax is None:
            fig, axes = figures.subplots(1, 2, figsize=(11, 3.2)) if kind == "both" else figures.subplots(figsize=(7, 3.2))
            axes = list(axes) if kind == "both" else [axes]
        else:
            fig, axes = ax.figure, [ax]
        if kind in ("both", "sources"):
            self._plot_sources(axes[0])
        if kind in ("both", "shares"):
            self._plot_shares(axes[-1])
        fig.tight_layout()
        return fig

    def _plot_sources(self, ax: Any) -> None:
        history = self.history
        n = max(len(self._items), 1 + max((a.stream for a in history), default=-1))
        workers = sorted({a.worker for a in history})
        height = 0.8 / max(1, len(workers))
        edge = 0.5 if n <= 50 else 0  # (white gaps between bars, where bars are tall enough to show them)
        for rank, worker in enumerate(workers):
            offset = (rank - (len(workers) - 1) / 2) * height
            label = f"worker {worker}" if len(workers) > 1 else None
            for stream in range(n):
                spans = [(a.start, a.stop - a.start) for a in history if a.worker == worker and a.stream == stream]
                if spans:
                    ax.broken_barh(spans, (stream + offset - 0.35 * height, 0.7 * height), color=f"C{rank % 10}",
                                   edgecolor="white", linewidth=edge, label=label)
                    label = None  # (one legend entry per worker)
        _integer_ticks(ax.yaxis)
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_ylabel("stream")
        ax.set_xlabel("items given by the mux" + (" (in each worker)" if len(workers) > 1 else ""))
        ax.set_title(f"the last {len(history):,} activations: which stream gave items when")
        if len(workers) > 1:
            ax.legend(loc="upper right", fontsize="small")

    def _plot_shares(self, ax: Any) -> None:
        shares, expected = self.shares, self._expected
        n = min(len(shares), len(expected))
        shares, expected = shares[:n], expected[:n]
        x = np.arange(n)
        ax.bar(x, shares, width=0.8, label="observed share", color="tab:blue")
        ax.stairs(expected, np.arange(n + 1) - 0.5, baseline=None, label="weight", color="black", linewidth=1.5)
        _integer_ticks(ax.xaxis)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_xlabel("stream")
        ax.set_ylabel("proportion of items")
        ax.set_title(f"{int(self.items.sum()):,} items: observed shares and weights")
        ax.legend()


class Meter:
    """Throughput of the items passing a :func:`measure` stage.

    Items are what the pipeline yields at that point (after ``buffer``,
    batches); rows are the first dimension of an item's arrays (the rows
    of a batch: the length of the first array that has a dimension; an
    item without one counts as one row).

    Parameters
    ----------
    interval : float > 0
        Seconds between the samples of :attr:`series` (a bound on how often
        the clock is read: about four times per interval, not per item).
    samples : int >= 2
        At most this many samples are kept: when full, every other one is
        dropped and the interval doubles, so the series covers the whole run.

    Attributes
    ----------
    items : int
        Items seen in the current (or last) run.
    rows : int
        Their rows.
    bytes : int
        Their arrays' total ``nbytes``.
    seconds : float
        Time since the run asked for its first item (until it ended).
    items_per_second, rows_per_second, megabytes_per_second : float
        ``items / seconds``, ``rows / seconds`` and ``bytes / seconds / 1e6``.
    series : np.ndarray
        Samples of ``(seconds, items, rows, bytes)`` during the run, one row each.

    ``str(meter)`` is a one-line progress text for a training loop.  A
    ``measure`` stage inside :func:`pescador.zmq_offload` runs in the
    workers: they report to this meter in your process (items, rows and
    bytes summed over the workers; the time is your run's).

    Examples
    --------
    >>> import numpy as np, pescador
    >>> meter = pescador.Meter()
    >>> batches = pescador.measure(meter)([{"X": np.zeros((8, 4))}] * 10)
    >>> _ = list(batches)
    >>> meter.items, meter.rows, meter.bytes
    (10, 80, 2560)
    >>> "items/s" in str(meter) and "rows/s" in str(meter)
    True
    """

    def __init__(self, interval: float = 0.5, samples: int = 1000) -> None:
        if not isinstance(interval, numbers.Real) or isinstance(interval, bool) or not 0 < interval < float("inf"):
            raise PescadorError(f"Meter: interval must be a number of seconds > 0; got {interval!r}")
        self._every = float(interval)
        self._samples = _check_count(samples, "Meter", "samples", 2)
        self.items = self.rows = self.bytes = 0
        self._t0: float | None = None
        self._t1: float | None = None
        self._series: list = []
        self._countdown = 1
        self._interval = self._every
        self._at = self._at_items = 0.0

    def _start(self, now: float | None = None) -> None:
        self.items = self.rows = self.bytes = 0
        self._t0, self._t1 = (time.perf_counter() if now is None else now), None
        self._series = [(0.0, 0, 0, 0)]
        self._countdown, self._interval = 1, self._every
        self._at, self._at_items = self._t0, 0

    def _stop(self) -> None:
        self._t1 = time.perf_counter()
        if self._t0 is not None:
            self._sample(self._t1)

    def _tick(self) -> None:
        """Called every ``_countdown`` items: sample if an interval has passed; set the next countdown."""
        now = time.perf_counter()
        since = now - self._at
        rate = (self.items - self._at_items) / since if since > 0 else 0.0
        if since >= self._interval:
            self._sample(now)
        self._countdown = max(1, min(int(rate * self._interval * 0.25), 1 << 16))

    def _sample(self, now: float) -> None:
        self._series.append((now - self._t0, self.items, self.rows, self.bytes))
        self._at, self._at_items = now, self.items
        if len(self._series) > self._samples:
            self._series = self._series[:1] + self._series[2::2]  # (keeps the first and, here, the latest)
            self._interval *= 2

    # -- across processes (pescador._report) ------------------------------------------------------
    def _snapshot(self) -> list:
        return [self.items, self.rows, self.bytes]

    def _apply(self, snapshots: list) -> None:
        """Show the sum of the workers' latest snapshots (in the consumer); sample the series."""
        snapshots = [s for s in snapshots if s]
        self.items = sum(s[0] for s in snapshots)
        self.rows = sum(s[1] for s in snapshots)
        self.bytes = sum(s[2] for s in snapshots)
        if self._t0 is not None and self._t1 is None:
            now = time.perf_counter()
            if now - self._at >= self._interval:
                self._sample(now)

    # -- reading ----------------------------------------------------------------------------------
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
    def rows_per_second(self) -> float:
        seconds = self.seconds
        return self.rows / seconds if seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        seconds = self.seconds
        return self.bytes / seconds / 1e6 if seconds > 0 else 0.0

    @property
    def series(self) -> np.ndarray:
        return np.array(self._series, dtype=float).reshape(-1, 4)

    def __str__(self) -> str:
        return (
            f"{self.items:,} items ({self.rows:,} rows), {self.bytes / 1e6:,.1f} MB in {self.seconds:.1f} s: "
            f"{self.items_per_second:,.0f} items/s, {self.rows_per_second:,.0f} rows/s, "
            f"{self.megabytes_per_second:,.1f} MB/s"
        )

    def __repr__(self) -> str:
        return f"<Meter {self}>"

    def plot(self, what: str = "items", ax: Any = None) -> Any:
        """Draw the throughput over the run, from :attr:`series`.

        Needs matplotlib (imported here, not by ``import pescador``).

        Parameters
        ----------
        what : "items", "rows" or "megabytes"
            What is counted per second.
        ax : matplotlib Axes, optional
            Where to draw; a new figure when None.

        Returns
        -------
        matplotlib.figure.Figure
        """
        where = "Meter.plot"
        column = {"items": 1, "rows": 2, "megabytes": 3}.get(what)
        if column is None:
            raise PescadorError(f"{where}: what must be 'items', 'rows' or 'megabytes'; got {what!r}")
        figures = _figures(where)
        fig, ax = figures.subplots(figsize=(7, 3)) if ax is None else (ax.figure, ax)
        series = self.series
        t, counts = series[:, 0], series[:, column] / (1e6 if what == "megabytes" else 1)
        later = np.diff(t, prepend=-np.inf) > 0  # (samples taken at the same instant: the first counts)
        t, counts = t[later], counts[later]
        top = 1.0
        if len(t) > 1:  # a rate over each interval between samples, drawn across the interval
            rates = np.diff(counts) / np.diff(t)
            ax.stairs(rates, t, baseline=None, color="tab:blue", linewidth=1.5)
            top = max(float(rates.max()) * 1.1, 1e-9)  # (room above the highest rate: on the frame it is hidden)
        ax.set_xlim(0, max(float(t[-1]) if len(t) else 0.0, 1e-9))
        ax.set_ylim(0, top)
        ax.set_xlabel("seconds since the run started")
        ax.set_ylabel(f"{what}/s")
        ax.set_title(f"{self.items:,} items, {self.rows:,} rows in {self.seconds:.1f} s")
        fig.tight_layout()
        return fig


class _Measure(Stage):
    """measure: items pass unchanged, counted into the meter.  State: the upstream's.

    The meter starts when the first item is asked for and stops when the
    run ends (its upstream ends or raises), is closed, or is collected.
    """

    one_to_one = True

    def __init__(self, upstream: Stream, meter: Meter, state: Any = None) -> None:
        self.meter = meter
        self.up = start(upstream, state, most_given())  # (its state is its upstream's, item for item)
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
        size, rows = 0, None
        if type(item) is dict:
            for value in item.values():
                if type(value) is np.ndarray:
                    size += value.nbytes
                    if rows is None and value.ndim:
                        rows = value.shape[0]
        meter = self.meter
        meter.items += 1
        meter.rows += 1 if rows is None else rows
        meter.bytes += size
        meter._countdown -= 1
        if not meter._countdown:
            meter._tick()
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
    measure(meter=<Meter 0 items (0 rows), 0.0 MB in 0.0 s: 0 items/s, 0 rows/s, 0.0 MB/s>)
    """
    if not isinstance(meter, Meter):
        raise PescadorError(f"measure: expected a pescador.Meter; got a {type(meter).__name__}")
    return Transform("measure", _Measure, {"meter": meter})
