"""Multiplexing: ``mux`` and its siblings (``stochastic_mux``, ``shuffled_mux``,
``round_robin_mux``, ``chain_mux``), all on one engine.

``pescador.mux`` is this module and, called, the function :func:`mux`.  How a
mux works, what the weights mean, why it never spins, and muxes in worker
processes: the Multiplexing page of the documentation (docs/multiplexing.rst).
"""

from __future__ import annotations

import math
import numbers
import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .core import Stream, Transform, stream
from ._random import _check_random_state, _rng
from .exceptions import PescadorError
from .workers import worker_info

__all__ = [
    "mux",
    "stochastic_mux",
    "shuffled_mux",
    "round_robin_mux",
    "chain_mux",
    "Mux",
    "StochasticMux",
    "ShuffledMux",
    "RoundRobinMux",
    "ChainMux",
]

_BLOCK = 1024  # random numbers are drawn in blocks of this size
_DISTRIBUTIONS = ("poisson", "binomial", "constant")


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def _is_lazy(pool: Any) -> bool:
    """Whether ``pool`` is produced at run time: a Stream, a Streamer (anything with
    ``__pescador_stream__``) or a generator function, whose items are the streams."""
    if isinstance(pool, Stream):
        return True
    if getattr(pool, "__pescador_stream__", None) is not None and not isinstance(pool, type):
        return True
    return callable(pool)


def _pool(pool: Any, where: str, allow_empty: bool = False) -> tuple:
    """Coerce a pool of sources into a tuple of Streams, naming bad members.

    The pool is any iterable of sources other than a string or a dict (a
    list, a tuple, a generator of Streamers, which is read here, once); each
    member is anything :func:`pescador.stream` accepts (a Stream, a Streamer,
    a generator function, a list, a string, any re-iterable object).
    """
    if _is_lazy(pool):
        raise PescadorError(
            f"{where}: the pool is a {type(pool).__name__}, whose streams are produced at run time; only "
            "chain_mux and ChainMux take such a pool (see docs/multiplexing.rst). Give a list of streams, "
            "for example list(streamer.iterate())"
        )
    if isinstance(pool, (str, bytes, dict)) or not isinstance(pool, Iterable):
        raise PescadorError(
            f"{where}: expected a list of streams (Streams, Streamers, generator functions or collections); "
            f"got a {type(pool).__name__}"
        )
    members = []
    for position, member in enumerate(pool):
        try:
            members.append(stream(member))
        except PescadorError as exc:
            raise PescadorError(f"{where}: pool member {position} (a {type(member).__name__}): {exc}") from None
    if not members and not allow_empty:
        raise PescadorError(f"{where}: the pool of streams is empty; give at least one stream")
    return tuple(members)


def _check_weights(weights: Any, size: int | None, where: str, name: str = "weights") -> tuple | None:
    if weights is None:
        return None
    try:
        values = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise PescadorError(f"{where}: {name} must be a sequence of numbers; got {weights!r}") from None
    if values.ndim != 1:
        raise PescadorError(f"{where}: {name} must be one number per stream; got shape {values.shape}")
    if size is not None and len(values) != size:
        raise PescadorError(f"{where}: {name} has {len(values)} entries for a pool of {size} streams")
    if not np.all(np.isfinite(values)):
        raise PescadorError(f"{where}: {name} must be finite numbers; got {values.tolist()}")
    if np.any(values < 0):
        raise PescadorError(f"{where}: {name} must not be negative; got {values.tolist()}")
    if not np.any(values > 0):
        raise PescadorError(f"{where}: {name} are all zero; at least one stream needs a positive weight")
    return tuple(float(v) for v in values)


def _check_k(k: Any, where: str, name: str = "k") -> int:
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise PescadorError(f"{where}: {name} (streams active at once) must be an integer >= 1; got {k!r}")
    return int(k)


def _check_lam(lam: Any, where: str, name: str = "lam") -> float | None:
    if lam is None:
        return None
    if not isinstance(lam, numbers.Real) or isinstance(lam, bool) or not (0 < float(lam) < math.inf):
        raise PescadorError(f"{where}: {name} must be a positive number or None; got {lam!r}")
    return float(lam)


def _check_choice(value: Any, valid: Sequence[str], where: str, name: str = "mode") -> str:
    if value not in valid:
        raise PescadorError(f"{where}: {name} {value!r} does not exist; valid: {', '.join(map(repr, valid))}")
    return value


def _check_stats(stats: Any, where: str) -> Any:
    from .observe import MuxStats

    if not isinstance(stats, MuxStats):
        raise PescadorError(f"{where}: stats must be a pescador.MuxStats; got a {type(stats).__name__}")
    return stats


def _check_bool(value: Any, where: str, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise PescadorError(f"{where}: {name} must be True or False; got {value!r}")
    return bool(value)


# ----------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------


_HUGE_LAM = 2.0**53  # numpy's Poisson and binomial cannot draw beyond about this


def _lengths(rng: Any, lam: float, dist: str, size: int) -> list:
    """Up to ``size`` activation lengths, each at least 1.

    ``"poisson"``, ``"binomial"``, ``"constant"`` (``mux``): ``dist`` of mean
    ``lam`` conditioned on being at least one (a draw of zero is drawn
    again).  ``"3x-poisson"``, ``"3x-constant"`` (``StochasticMux``, as
    pescador 3.x drew them): ``1 + Poisson(lam - 1)`` and ``ceil(lam)``, of
    mean ``lam`` for ``lam >= 1`` and 1 below.  (``"3x-binomial"`` depends on
    the live slots: see :meth:`_Random.length`.)  The number of generator
    calls does not depend on ``lam``.
    """
    if dist == "3x-constant":
        return [max(1, math.ceil(lam))] * size
    if dist == "3x-poisson":
        if lam <= 1.0:
            return [1] * size
        if lam >= _HUGE_LAM:
            return [max(1, int(lam + math.sqrt(lam) * z)) for z in rng.standard_normal(size).tolist()]
        return (1 + rng.poisson(lam - 1.0, size)).tolist()
    if dist == "constant":
        return [max(1, int(round(lam)))] * size
    if lam >= _HUGE_LAM:  # the spread is below 1e-8 of the mean: a normal approximation, as Python ints
        sd = math.sqrt(lam if dist == "poisson" else lam / 2)
        return [max(1, int(lam + sd * z)) for z in rng.standard_normal(size).tolist()]
    if dist == "poisson" and lam < 1.0:
        # a Poisson process on [0, 1) given at least one event: its first event at a time t drawn from
        # the exponential truncated to [0, 1), then a Poisson count over the rest of the interval
        t = -np.log1p(rng.random(size) * np.expm1(-lam)) / lam
        return (1 + rng.poisson(lam * np.clip(1.0 - t, 0.0, 1.0))).tolist()
    if dist == "poisson":
        draws = rng.poisson(lam, size)  # (lam >= 1: at least 63% are positive)
    else:
        trials = max(1, int(round(2 * lam)))
        if trials == 1:  # one trial: given at least one success, exactly one
            return [1] * size
        draws = rng.binomial(trials, min(1.0, lam / trials), size)  # (at least 61% are positive)
    return draws[draws > 0].tolist()


class _Random:
    """Uniform numbers and activation lengths, drawn in blocks.

    With ``block=1`` nothing is drawn ahead, so the generator's state alone
    says where the draws are (what a resumable run saves).
    """

    def __init__(self, rng: Any, lam: float | None, dist: str, block: int = _BLOCK) -> None:
        self.rng, self.lam, self.dist, self.block = rng, lam, dist, block
        self.uniforms: list = []
        self.lengths: list = []
        self.shifted: list = []  # ("3x-binomial": its Poisson limit)
        self.binomials: dict = {}  # ("3x-binomial": blocks by (trials, q))

    def uniform(self) -> float:
        if self.block == 1:  # (a scalar draw: no array to make and unpack)
            return self.rng.random()
        if not self.uniforms:
            self.uniforms = self.rng.random(self.block).tolist()
        return self.uniforms.pop()

    def length(self, p: float = 0.0) -> int:
        """The bound of a new activation, at least 1; -1 for none (it counts down for ever).

        ``p`` (``"3x-binomial"`` only) is the new stream's share of the live
        slots' weights, itself included.
        """
        if self.lam is None:
            return -1
        if self.dist == "3x-binomial":
            return self._binomial_3x(p)
        while not self.lengths:
            self.lengths = _lengths(self.rng, self.lam, self.dist, self.block)
        return self.lengths.pop()

    def _binomial_3x(self, p: float) -> int:
        """``1 + Binomial(floor((lam - 1) / q), q)`` with ``q = 1 - p``, as pescador 3.x drew it (mean
        about ``lam``, variance about ``(lam - 1) p``); its Poisson limit where ``p > 0.9999``."""
        lam, q = self.lam, 1.0 - p
        if not q >= 1e-4:  # (one stream, in effect; also p undefined)
            while not self.shifted:
                self.shifted = _lengths(self.rng, lam, "3x-poisson", self.block)
            return self.shifted.pop()
        trials = int((lam - 1.0) / q) if lam > 1.0 else 0
        if trials == 0:
            return 1
        if trials >= _HUGE_LAM:  # beyond numpy's binomial: a normal approximation
            return max(1, int(1 + trials * q + math.sqrt(trials * q * p) * self.rng.standard_normal()))
        if self.block == 1:
            return 1 + int(self.rng.binomial(trials, q))
        # blocks per (trials, q) seen before: a constant share (even weights) draws in blocks, while
        # shares that keep changing (uneven weights) draw one number each, not a block each
        key = (trials, q)
        block = self.binomials.get(key)
        if block:
            return block.pop()
        if block is None:
            if len(self.binomials) >= 256:
                self.binomials.clear()
            self.binomials[key] = []
            return 1 + int(self.rng.binomial(trials, q))
        block += (1 + self.rng.binomial(trials, q, 64)).tolist()
        return block.pop()


def _integers(weights: Any) -> list:
    """Non-negative float weights as exact integers of the same ratios (no overflow, no underflow)."""
    parts = [math.frexp(float(w)) for w in weights]
    low = min((e for m, e in parts if m > 0), default=0)
    return [int(m * 2.0**53) << (e - low) if m > 0 else 0 for m, e in parts]


class _SumTree:
    """Draws an index in proportion to integer weights: O(log n) to draw and to change a weight,
    whatever the ratio of the weights (exact integers: no rounding, no overflow)."""

    __slots__ = ("cap", "tree")

    def __init__(self, weights: Sequence = ()) -> None:
        self.cap = 1
        while self.cap < len(weights):
            self.cap *= 2
        self.tree = [0] * self.cap + list(weights) + [0] * (self.cap - len(weights))
        for p in range(self.cap - 1, 0, -1):
            self.tree[p] = self.tree[2 * p] + self.tree[2 * p + 1]

    def total(self) -> int:
        return self.tree[1]

    def __getitem__(self, i: int) -> int:
        return self.tree[self.cap + i] if i < self.cap else 0

    def __setitem__(self, i: int, value: int) -> None:
        while i >= self.cap:  # grow: twice the leaves
            leaves = self.tree[self.cap :]
            self.__init__(leaves + [0] * len(leaves))
        tree = self.tree
        p = self.cap + i
        tree[p] = value
        p >>= 1
        while p:
            tree[p] = tree[2 * p] + tree[2 * p + 1]
            p >>= 1

    def draw(self, u: float) -> int:
        """The index below ``u`` (uniform in [0, 1)) of the cumulated weights; only a positive weight."""
        tree, cap = self.tree, self.cap
        x = (int(u * 9007199254740992.0) * self.total()) >> 53  # (u has 53 random bits)
        p = 1
        while p < cap:
            p += p
            left = tree[p]
            if x >= left:
                x -= left
                p += 1
        return p - cap


class _Activations:
    """Which stream fills the next slot, and the bookkeeping of live streams.

    A stream is drawn in proportion to its weight among those that may be
    drawn now (``_free``): first by a few picks from blocks of draws over the
    pool, kept if they hit such a stream; after that many misses, from a sum
    tree of exactly those streams (O(log n), whatever the weights).  Either
    way the draw has the right distribution: given a miss, the tree draws
    from what is left.  The tree is brought up to date only when it is used.
    """

    def __init__(self, weights: np.ndarray, activation: str, exclusive: bool, prune_empty: bool, rand: _Random) -> None:
        self.w = weights  # shared across epochs: pruned streams stay pruned
        self.activation = activation
        self.exclusive = exclusive  # prefer (or, for "single", require) streams not live
        self.prune_empty = prune_empty and activation != "once"  # ("once": every stream in every pass)
        self.rand = rand
        self.live = [0] * len(weights)
        self.n_live = 0  # distinct live streams with a positive weight
        self.eligible = int(np.count_nonzero(weights))
        self.dry: set = set()  # streams whose latest run gave nothing (prune_empty=False)
        self.queue: list = []
        self.block: list = []
        self.cum: np.ndarray | None = None
        self.W = _integers(weights)
        self.tries = 8  # block picks before the tree (1 after a miss: the tree is then likely needed again)
        self.adaptive = rand.block > 1  # (a resumable run keeps 8: its state need not say)
        self._trees()

    def _trees(self) -> None:
        """The sum trees of the streams that may be drawn: ``free`` (see ``_free``) and, with copies
        allowed, ``any`` (not dry)."""
        self.stale: set = set()  # streams whose leaf in ``free`` may be out of date
        if self.activation == "once":
            self.free = self.any = None
            return
        self.free = _SumTree([W if self._free(i) else 0 for i, W in enumerate(self.W)])
        self.any = None
        if self.activation == "with" and self.exclusive:
            self.any = _SumTree([0 if i in self.dry or self.w[i] <= 0 else W for i, W in enumerate(self.W)])

    def _free(self, i: int) -> bool:
        """Whether stream ``i`` may be drawn now: weighted, not dry, and (if exclusive) not live."""
        return self.w[i] > 0 and i not in self.dry and not (self.exclusive and self.live[i])

    def restore(self, w: Any, live: list, queue: list, dry: Any, n_live: int, eligible: int) -> None:
        """Take up a saved state (a resumable run)."""
        self.w = np.array(w, dtype=float)
        self.live, self.queue, self.dry = list(live), list(queue), set(dry)
        self.n_live, self.eligible = n_live, eligible
        self.block, self.cum = [], None
        self._trees()

    def start_epoch(self, order: str, first: bool = False) -> None:
        """For activation "once": queue every weighted stream, in pool or random order
        (``"pool-then-random"``: the ``first`` pass in pool order, the others in random order)."""
        if self.activation != "once":
            return
        if order == "pool-then-random":
            order = "pool" if first else "random"
        members = np.flatnonzero(self.w > 0)
        if order == "random" and len(members) > 1:
            w = self.w[members]
            if np.all(w == w[0]):
                members = self.rand.rng.choice(members, size=len(members), replace=False, p=w / w.sum())
            else:  # exponential clocks of rates w: a draw without replacement by weight, for any ratio
                clocks = np.log(self.rand.rng.standard_exponential(len(members))) - np.log(w)
                members = members[np.argsort(clocks, kind="stable")]
        self.queue = [int(i) for i in members[::-1]]  # pop() takes them in order

    def _pick(self) -> int:
        """A stream drawn in proportion to the weights of the whole pool (from a block)."""
        if not self.block:
            if self.cum is None:
                self.cum = np.cumsum(self.w / self.w.max())
            u = self.rand.rng.random(self.rand.block) * self.cum[-1]
            picks = np.searchsorted(self.cum, u, side="right")
            self.block = np.minimum(picks, len(self.w) - 1).tolist()
        i = self.block.pop()
        if self.w[i] <= 0:  # pruned since the block was drawn
            self.block = []
            self.cum = None
            return self._pick()
        return i

    def next(self) -> int | None:
        """The stream to activate, or None when none can be."""
        if self.activation == "once":
            return self.queue.pop() if self.queue else None
        if not self.eligible:
            return None
        if not (self.exclusive or self.dry):  # (then every pick is free)
            return self._pick()
        for _ in range(self.tries):
            i = self._pick()
            if self._free(i):
                self.tries = 8
                return i
        self.tries = 1 if self.adaptive else 8
        free = self.free
        for i in self.stale:  # (bring the tree up to date)
            value = self.W[i] if self._free(i) else 0
            if free[i] != value:
                free[i] = value
        self.stale.clear()
        if free.total():
            return free.draw(self.rand.uniform())
        if self.any is not None and self.any.total():  # every stream is live: a copy
            return self.any.draw(self.rand.uniform())
        return None

    def started(self, i: int) -> None:
        if not self.live[i] and self.w[i] > 0:
            self.n_live += 1
        self.live[i] += 1
        if self.exclusive:
            self.stale.add(i)

    def stopped(self, i: int, gave_nothing: bool) -> None:
        self.live[i] -= 1
        if not self.live[i] and self.w[i] > 0:
            self.n_live -= 1
        if self.free is None:  # ("once")
            return
        if self.exclusive:
            self.stale.add(i)
        if gave_nothing:
            if self.prune_empty:
                if self.w[i] > 0:
                    if self.live[i]:
                        self.n_live -= 1
                    self.w[i] = 0.0
                    self.eligible -= 1
                    self.cum = None
                    self.block = []
            else:
                self.dry.add(i)
            self.stale.add(i)
            if self.any is not None:
                self.any[i] = 0

    def wet(self) -> None:
        """An item came: the streams whose latest run gave nothing may be drawn again."""
        for i in self.dry:
            self.stale.add(i)
            if self.any is not None and self.w[i] > 0:
                self.any[i] = self.W[i]
        self.dry.clear()


class _SlotChoice:
    """The weighted choice of a slot for each item, each slot weighing its stream's weight
    (divided among its live copies when ``per_copy``).

    First a few tries of rejection against the largest weight of the pool;
    after that many misses, a draw from a sum tree of the slots' weights as
    exact integers (O(log k), whatever the weights).  Given the misses, the
    tree draws from the same distribution, so the choice is exact; the tree
    is brought up to date only when it is used.
    """

    def __init__(self, weights: list, per_copy: bool, live: list, rand: _Random) -> None:
        top = max(weights)
        # (in [0, 1]: rejection stays accurate for subnormal weights too; those that underflow to zero are
        # left to the tree, which holds every weight exactly)
        self.weights = [w / top for w in weights]
        self.per_copy, self.live, self.rand = per_copy, live, rand
        self.W = _integers(weights)
        self.adaptive = rand.block > 1  # (a resumable run keeps 8 tries: its state need not say)
        self.tree = _SumTree([0] * 4)
        self.stale: set = set()  # slots whose leaf may be out of date
        self.rebuild_all = False  # (copies changed: every slot of their stream)
        self.tries = 8

    def pick(self, who: list) -> int:
        """The slot of the next item (the engine inlines this)."""
        uniform, weights, live = self.rand.uniform, self.weights, self.live
        n = len(who)
        for _ in range(self.tries):
            s = int(uniform() * n)
            share = weights[who[s]] / live[who[s]] if self.per_copy else weights[who[s]]
            if uniform() < share:
                self.tries = 8
                return s
        return self.from_tree(who)

    def from_tree(self, who: list) -> int:
        """After ``tries`` misses: the slot drawn from the tree (brought up to date first)."""
        uniform = self.rand.uniform
        n = len(who)
        self.tries = 1 if self.adaptive else 8
        if self.rebuild_all or len(self.stale) > n // 4:
            self.rebuild(who)
        else:
            W, live, per_copy = self.W, self.live, self.per_copy
            for s in self.stale:
                self.tree[s] = 0 if s >= n else W[who[s]] // live[who[s]] if per_copy else W[who[s]]
            self.stale.clear()
        return self.tree.draw(uniform())

    def filled(self, who: list, s: int) -> None:
        """Slot ``s`` (the last) now holds a run of ``who[s]``."""
        self.stale.add(s)
        if self.per_copy and self.live[who[s]] > 1:
            self.rebuild_all = True

    def released(self, who: list, s: int, i: int) -> None:
        """Slot ``s``, a run of ``i``, was released and the last slot moved into it (``who`` updated)."""
        self.stale.add(s)
        self.stale.add(len(who))
        if self.per_copy and self.live[i]:
            self.rebuild_all = True

    def rebuild(self, who: list) -> None:
        """The whole tree again, from the slots' streams (O(k))."""
        W, live = self.W, self.live
        self.tree = _SumTree([W[i] // max(1, live[i]) for i in who] if self.per_copy else [W[i] for i in who])
        self.stale.clear()
        self.rebuild_all = False


class _Share3x:
    """For ``"3x-binomial"`` lengths: a new stream's share of the live slots' weights, as pescador 3.x
    computed it (slots that this refill has yet to fill count as an average weight, as 3.x's
    placeholders did).  Exact integer weights: no drift, no overflow."""

    def __init__(self, W: list) -> None:
        self.W = W
        total = sum(W)
        self.mean = sum(w * w for w in W) // total if total else 0  # (the mean weight of a draw by weight)
        self.live = 0  # the sum of the live slots' weights

    def p(self, i: int, ahead: int) -> float:
        w = self.W[i]
        return w / (w + self.live + ahead * self.mean) if w else 0.0


def _activations(n: int, weights: Any, activation: str, lam: float | None, prune_empty: bool, rand: _Random,
                 worker: Any) -> tuple:
    """The activation bookkeeping of a run over a pool of ``n``, and each stream's per-item weight.

    A pool activated once per stream is sharded across workers (members
    ``id::count``).
    """
    base = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    w = base.copy()
    if activation == "once" and worker.count > 1:  # shard the pool across workers
        mine = np.zeros(n, dtype=bool)
        mine[worker.id :: worker.count] = True
        w[~mine] = 0.0
    return _Activations(w, activation, activation == "single" or lam is None, prune_empty, rand), base.tolist()


def _slot_choice(item_weight: list, activation: str, acts: _Activations) -> _SlotChoice:
    """The weighted choice of slots for a run (weights divided among copies when copies may be live)."""
    return _SlotChoice(item_weight, activation == "with", acts.live, acts.rand)


def _engine(
    pool: tuple,
    k: int,
    lam: float | None,
    weights: tuple | None,
    activation: str,
    order: str,
    choice: str,
    epochs: int | None,
    prune_empty: bool,
    random_state: Any,
    dist: str = "poisson",
    name: str = "mux",
    stats: Any = None,
) -> Iterator:
    """Run a mux over ``pool``; the kinds below differ only in these parameters.

    activation : "with" | "single" | "once"  (see the module docstring)
    order : "random" | "pool"  (the order of "once" activations)
    choice : "uniform" | "weighted" | "rotate"  (the slot of each item)
    epochs : None or int  (how many times a "once" pool is run through)
    """
    worker = worker_info()
    rng = _rng(random_state, worker)
    rand = _Random(rng, lam, dist)
    n = len(pool)
    acts, item_weight = _activations(n, weights, activation, lam, prune_empty, rand, worker)
    ordered = choice == "rotate"
    uniform = choice == "uniform"
    slots = None if uniform or ordered else _slot_choice(item_weight, activation, acts)
    live, per_copy, tries = acts.live, activation == "with", 8
    shares = None if slots is None else slots.weights  # (the weights over the largest: in [0, 1])
    share = _Share3x(acts.W) if dist == "3x-binomial" and lam is not None else None
    dry = acts.dry  # (streams whose latest run gave nothing; the same set throughout)
    its: list = []  # live runs, one per slot
    left: list = []  # items each slot may still give (below zero: unbounded)
    bound: list = []  # each slot's bound when it started
    who: list = []  # each slot's stream
    slot_draws: list = []
    epoch = 0
    run = None if stats is None else stats._start(n, weights, who, bound, left, name)
    try:
        while epochs is None or epoch < epochs:
            epoch += 1
            acts.start_epoch(order, epoch == 1)
            produced = False
            rotation = -1
            refill = True
            while True:
                if refill:
                    refill = False
                    ahead = k - len(its)
                    while len(its) < k:
                        i = acts.next()
                        if i is None:
                            break
                        its.append(iter(pool[i]))
                        ahead -= 1
                        if share is None:
                            length = rand.length()  # (at least 1)
                        else:
                            length = rand.length(share.p(i, ahead))
                            share.live += share.W[i]
                        left.append(length)
                        bound.append(length)
                        who.append(i)
                        acts.started(i)
                        if slots is not None:
                            slots.filled(who, len(who) - 1)
                        if stats is not None:
                            stats._activations[i] += 1
                    if not its:
                        break
                if uniform:
                    if not slot_draws:
                        slot_draws = rng.random(_BLOCK).tolist()
                    s = int(slot_draws.pop() * len(its))
                elif ordered:
                    rotation = s = (rotation + 1) % len(its)
                else:  # weighted: a few tries of rejection, then the tree (exact; bounded work whatever the weights)
                    missed = 0
                    while True:
                        if len(slot_draws) < 2:
                            slot_draws = rng.random(_BLOCK).tolist()
                        s = int(slot_draws.pop() * len(its))
                        i = who[s]
                        if slot_draws.pop() < (shares[i] / live[i] if per_copy else shares[i]):
                            tries = 8
                            break
                        missed += 1
                        if missed >= tries:
                            s = slots.from_tree(who)
                            tries = 1  # (the tree is likely needed again: try it sooner)
                            break
                try:
                    item = next(its[s])
                except StopIteration:
                    ended = True
                else:
                    produced = True
                    if dry:
                        acts.wet()
                    left[s] -= 1  # (counted before the yield, so a reader sees it)
                    yield item
                    if left[s]:
                        continue
                    ended = False
                # slot s is done: release it and refill
                i = who[s]
                acts.stopped(i, ended and bound[s] == left[s])
                if share is not None:
                    share.live -= share.W[i]
                if stats is not None:
                    stats._items[i] += bound[s] - left[s]
                if ordered:
                    del its[s], left[s], bound[s], who[s]
                    rotation = s - 1
                else:
                    last = len(its) - 1
                    its[s], left[s], bound[s], who[s] = its[last], left[last], bound[last], who[last]
                    del its[last], left[last], bound[last], who[last]
                    if slots is not None:
                        slots.released(who, s, i)
                refill = True
            if not produced or activation != "once":
                return  # nothing more can be activated (or a whole pass gave nothing)
    finally:
        if run is not None:
            stats._stop(run)


# ----------------------------------------------------------------------------
# The kinds: a few lines each
# ----------------------------------------------------------------------------


def _engine_args(name: str, pool: tuple, p: dict) -> dict:
    """The engine's parameters for each kind of mux, from the kind's own (shared with resumable runs)."""
    if name in ("mux", "stochastic_mux"):
        if name == "mux":
            activation = "with" if p.get("with_replacement", True) else ("single" if p.get("revive") else "once")
            k, lam, prune = p["k"], p.get("lam", 256.0), p.get("prune_empty", True)
            dist = p.get("dist", "poisson")
        else:
            activation = {"with_replacement": "with", "single_active": "single", "exhaustive": "once"}[
                p.get("mode", "with_replacement")]
            k, lam, prune = p["n_active"], p.get("rate", 256.0), p.get("prune_empty_streams", True)
            dist = "3x-" + p.get("dist", "binomial")  # (the lengths as pescador 3.x drew them)
        uniform = activation == "with" and lam is not None or p.get("weights") is None
        return dict(k=k, lam=lam, weights=p.get("weights"), activation=activation, order="random",
                    choice="uniform" if uniform else "weighted", epochs=1, prune_empty=prune,
                    random_state=p.get("random_state"), dist=dist)
    common = dict(lam=None, weights=None, prune_empty=True, random_state=p.get("random_state"), dist="poisson")
    if name == "shuffled_mux":
        return dict(common, k=len(pool), weights=p.get("weights"), activation="single", order="random",
                    choice="uniform" if p.get("weights") is None else "weighted", epochs=1)
    if name == "round_robin_mux":
        mode = p.get("mode", "exhaustive")
        order = "pool-then-random" if mode == "permuted_cycle" else "pool"  # (3.x: the first pass in order)
        return dict(common, k=max(1, len(pool)), activation="once", order=order, choice="rotate",
                    epochs=1 if mode == "exhaustive" else None)
    if name == "chain_mux":
        mode = p.get("mode", "exhaustive")
        if mode == "with_replacement":
            return dict(common, k=1, activation="with", order="random", choice="uniform", epochs=1)
        return dict(common, k=1, activation="once", order="pool", choice="uniform",
                    epochs=1 if mode == "exhaustive" else None)
    if name == "epochs":
        return dict(common, k=p.get("k") or len(pool), activation="once", order="random", choice="uniform",
                    epochs=p.get("n_epochs"))
    raise ValueError(name)


def _run(name: str, pool: tuple, params: dict) -> Iterator:
    """A plain run of a mux kind: its engine parameters, then the engine."""
    return _engine(pool, **_engine_args(name, pool, params), name=name, stats=params.get("stats"))


class _PoolOf:
    """Coerces what a mux is applied to into its pool (picklable, names the mux).

    With ``lazy``, a pool produced at run time (a Streamer, a Stream or a
    generator function whose items are the streams) is kept as a Stream.
    """

    def __init__(self, name: str, weights: tuple | None = None, lazy: bool = False, allow_empty: bool = False) -> None:
        self.name, self.weights, self.lazy, self.allow_empty = name, weights, lazy, allow_empty

    def __call__(self, pool: Any) -> tuple | Stream:
        if self.lazy and _is_lazy(pool):
            return stream(pool)
        members = _pool(pool, self.name, self.allow_empty)
        _weights_fit(members, self.weights, self.name)
        return members

    def _key(self) -> tuple:
        return (self.name, self.weights, self.lazy, self.allow_empty)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PoolOf) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self.name)


def _weights_fit(pool: tuple, weights: tuple | None, where: str) -> None:
    if weights is not None and len(weights) != len(pool):
        raise PescadorError(f"{where}: weights has {len(weights)} entries for a pool of {len(pool)} streams")


def _run_mux(pool, k, lam=256.0, weights=None, with_replacement=True, prune_empty=True, revive=False,
             random_state=None, dist="poisson", stats=None):
    params = dict(locals())  # (first: the parameters, as given)
    _weights_fit(pool, weights, "mux")
    return _run("mux", pool, params)


def mux(
    k: int,
    lam: float | None = 256.0,
    *,
    weights: Any = None,
    with_replacement: bool = True,
    prune_empty: bool = True,
    revive: bool = False,
    random_state: Any = None,
    dist: str = "poisson",
    stats: Any = None,
) -> Transform:
    """Stochastically multiplex a pool of streams, ``k`` of them active at once.

    Curried and data-last: ``mux(k=3, lam=64)`` is a
    :class:`~pescador.Transform`; apply it to a list of streams (or pipe the
    list into it) to get a stream.

    Parameters
    ----------
    k : int >= 1
        Number of streams active at once.
    lam : float > 0 or None
        Each activation yields at most a number of items drawn from a
        Poisson distribution of rate ``lam`` (see ``dist``), conditioned on
        being at least 1 (a zero is drawn again); then its slot is refilled.
        None runs each activation until its stream ends.
    weights : sequence of float >= 0, optional
        The long-run share of items from each stream (see "Weights" in
        docs/multiplexing.rst for exactly when shares equal weights).
    with_replacement : bool
        If True, any stream may be activated any number of times, several
        at once.  If False, each stream is activated at most once, and the
        mux ends when all are used.
    prune_empty : bool
        If True, a stream whose run gave no items is not activated again.
        If False it may be, once another stream has given an item; the mux
        ends, rather than spinning, once every remaining stream's latest run
        gave nothing.  (Runs without replacement activate every stream of
        the pool anyway.)
    revive : bool
        With ``with_replacement=False``: a stream that ends or reaches its
        bound goes back to the pool, with at most one live copy at a time.
    random_state : None, int, np.random.Generator or np.random.RandomState
        With an int, every run reproduces the same sequence (in workers too,
        each worker its own; see docs/parallel.rst).
    dist : "poisson", "binomial" or "constant"
        The distribution of activation lengths, of mean ``lam`` before the
        zeros are drawn again (``"constant"``: ``max(1, round(lam))``).  Beyond
        ``lam = 2**53`` a normal approximation stands in for the first two.
    stats : pescador.MuxStats, optional
        Filled in by each run: items and activations per stream, observed
        shares against the weights (see :class:`pescador.MuxStats`).

    Examples
    --------
    >>> import pescador
    >>> from toolz import pipe
    >>> def constant(value):
    ...     while True:
    ...         yield {"v": value}
    >>> streams = [pescador.stream(constant, v) for v in "abc"]
    >>> mixed = pipe(streams, pescador.mux(k=2, lam=4, random_state=0), pescador.take(1000))
    >>> sorted({item["v"] for item in mixed})
    ['a', 'b', 'c']
    """
    where = "mux"
    params = dict(
        k=_check_k(k, where),
        lam=_check_lam(lam, where),
        weights=_check_weights(weights, None, where),
        with_replacement=_check_bool(with_replacement, where, "with_replacement"),
        prune_empty=_check_bool(prune_empty, where, "prune_empty"),
        revive=_check_bool(revive, where, "revive"),
        random_state=_check_random_state(random_state, where),
    )
    if dist != "poisson":
        params["dist"] = _check_choice(dist, _DISTRIBUTIONS, where, "dist")
    if stats is not None:
        params["stats"] = _check_stats(stats, where)
    return Transform("mux", _run_mux, params, coerce=_PoolOf(where, params["weights"]))


_STOCHASTIC_MODES = ("with_replacement", "single_active", "exhaustive")


def _run_stochastic(pool, n_active, rate=256.0, weights=None, mode="with_replacement", prune_empty_streams=True,
                    dist="binomial", random_state=None, stats=None):
    params = dict(locals())
    _weights_fit(pool, weights, "stochastic_mux")
    return _run("stochastic_mux", pool, params)


def stochastic_mux(
    n_active: int,
    rate: float | None = 256.0,
    weights: Any = None,
    mode: str = "with_replacement",
    prune_empty_streams: bool = True,
    dist: str = "binomial",
    random_state: Any = None,
    stats: Any = None,
) -> Transform:
    """The 3.x ``StochasticMux`` as a curried combinator (its parameters, in its order).

    ``mode`` is ``"with_replacement"`` (like ``mux``), ``"single_active"``
    (at most one live copy of each stream; ended streams return to the
    pool) or ``"exhaustive"`` (each stream activated once).  ``n_active`` may
    exceed the size of the pool.

    ``dist`` draws the number of items of each activation as pescador 3.x
    did, each at least 1 and of mean ``rate`` (for ``rate >= 1``; below 1,
    every activation gives one item):

    - ``"binomial"`` (the default): ``1 + Binomial(floor((rate - 1) / q), q)``
      where ``q = 1 - p`` and ``p`` is the new stream's share of the weights
      of the live slots: variance about ``(rate - 1) p``, so the lengths vary
      less the more streams are active; with one stream in effect
      (``p > 0.9999``) its Poisson limit;
    - ``"poisson"``: ``1 + Poisson(rate - 1)``;
    - ``"constant"``: ``ceil(rate)``.

    Examples
    --------
    >>> import pescador
    >>> pool = [pescador.stream([{"v": 1}, {"v": 2}]), pescador.stream([{"v": 3}])]
    >>> s = pescador.mux.stochastic_mux(2, None, mode="exhaustive", random_state=1)(pool)
    >>> sorted(item["v"] for item in s)
    [1, 2, 3]
    """
    where = "stochastic_mux"
    params = dict(
        n_active=_check_k(n_active, where, "n_active"),
        rate=_check_lam(rate, where, "rate"),
        weights=_check_weights(weights, None, where),
        mode=_check_choice(mode, _STOCHASTIC_MODES, where),
        prune_empty_streams=_check_bool(prune_empty_streams, where, "prune_empty_streams"),
        dist=_check_choice(dist, _DISTRIBUTIONS, where, "dist"),
        random_state=_check_random_state(random_state, where),
    )
    if stats is not None:
        params["stats"] = _check_stats(stats, where)
    return Transform("stochastic_mux", _run_stochastic, params, coerce=_PoolOf(where, params["weights"]))


def _run_shuffled(pool, weights=None, random_state=None, stats=None):
    params = dict(locals())
    _weights_fit(pool, weights, "shuffled_mux")
    return _run("shuffled_mux", pool, params)


def shuffled_mux(weights: Any = None, random_state: Any = None, stats: Any = None) -> Transform:
    """All streams active at once; each item from a stream drawn by weight (3.x ``ShuffledMux``).

    A stream that ends is restarted; a stream whose run gives nothing is
    dropped, and the mux ends when none is left.

    Examples
    --------
    >>> import pescador
    >>> pool = [pescador.stream([{"v": 1}]), pescador.stream([{"v": 2}])]
    >>> s = pescador.take(6, pescador.mux.shuffled_mux(random_state=0)(pool))
    >>> sorted({item["v"] for item in s})
    [1, 2]
    """
    where = "shuffled_mux"
    params = dict(weights=_check_weights(weights, None, where), random_state=_check_random_state(random_state, where))
    if stats is not None:
        params["stats"] = _check_stats(stats, where)
    return Transform("shuffled_mux", _run_shuffled, params, coerce=_PoolOf(where, params["weights"]))


_ROUND_ROBIN_MODES = ("exhaustive", "cycle", "permuted_cycle")


def _run_round_robin(pool, mode="exhaustive", random_state=None, stats=None):
    return _run("round_robin_mux", pool, dict(locals()))


def round_robin_mux(mode: str = "exhaustive", random_state: Any = None, stats: Any = None) -> Transform:
    """One item from each stream in turn (3.x ``RoundRobinMux``).

    ``mode``: ``"exhaustive"`` runs each stream once, dropping those that
    end; ``"cycle"`` then starts again in the same order, for ever;
    ``"permuted_cycle"`` starts again in a new random order each time (the
    first pass in pool order, as in 3.x).  A pass that gives nothing ends
    the run.

    Examples
    --------
    >>> import pescador
    >>> pool = [pescador.stream(items) for items in ([{"v": 1}, {"v": 2}], [{"v": 10}], [{"v": 20}, {"v": 30}])]
    >>> [x["v"] for x in pescador.mux.round_robin_mux()(pool)]
    [1, 10, 20, 2, 30]
    """
    where = "round_robin_mux"
    params = dict(mode=_check_choice(mode, _ROUND_ROBIN_MODES, where), random_state=_check_random_state(random_state, where))
    if stats is not None:
        params["stats"] = _check_stats(stats, where)
    return Transform("round_robin_mux", _run_round_robin, params, coerce=_PoolOf(where))


_CHAIN_MODES = ("exhaustive", "cycle", "with_replacement")


def _chain_member(member: Any, position: int) -> Iterator:
    """A run of the ``position``-th stream of a pool produced at run time (each run of the pool makes
    its members afresh, so a member may also be a live iterator)."""
    if isinstance(member, Iterator):
        return member
    try:
        return iter(stream(member))
    except PescadorError as exc:
        raise PescadorError(f"chain_mux: stream {position} of the pool (a {type(member).__name__}): {exc}") from None


def _lazy_chain(pool: Stream, mode: str) -> Iterator:
    """A chain over a pool produced at run time: each stream the pool yields, to its end, in turn.

    ``"cycle"`` runs the pool again when it ends (for ever; a pass that gives
    nothing ends the run).  In a worker, stream ``i`` of each pass is this
    worker's when ``i % count == id``, as a listed pool is sharded.
    """
    worker = worker_info()
    while True:
        produced = False
        for position, member in enumerate(pool):
            if position % worker.count != worker.id:
                continue
            for item in _chain_member(member, position):
                produced = True
                yield item
        if mode == "exhaustive" or not produced:
            return


def _run_chain(pool, mode="exhaustive", random_state=None, stats=None):
    if isinstance(pool, Stream):
        return _lazy_chain(pool, mode)
    if not pool:
        return iter(())
    return _run("chain_mux", pool, dict(locals()))


def chain_mux(mode: str = "exhaustive", random_state: Any = None, stats: Any = None) -> Transform:
    """One stream at a time, to its end (3.x ``ChainMux``, as ``itertools.chain``).

    ``mode``: ``"exhaustive"`` runs the streams once each, in pool order;
    ``"cycle"`` then starts again from the first, for ever (a pass that
    gives nothing ends the run); ``"with_replacement"`` keeps picking a
    stream at random, for ever.

    The pool may be a list of streams (an empty one gives an empty stream)
    or, with ``"exhaustive"`` and ``"cycle"``, a pool produced at run time:
    a ``Streamer``, a stream or a generator function whose items are the
    streams (one per file found at run time, say).  Each run of the chain
    runs the pool again.

    Examples
    --------
    >>> import pescador
    >>> pool = [pescador.stream([{"v": 1}, {"v": 2}]), pescador.stream([{"v": 3}])]
    >>> [x["v"] for x in pescador.mux.chain_mux()(pool)]
    [1, 2, 3]
    >>> def files(n):
    ...     for i in range(n):
    ...         yield pescador.stream([{"v": i}] * 2)
    >>> [x["v"] for x in pescador.mux.chain_mux("cycle")(pescador.stream(files, 2)).iterate(6)]
    [0, 0, 1, 1, 0, 0]
    """
    where = "chain_mux"
    params = dict(mode=_check_choice(mode, _CHAIN_MODES, where), random_state=_check_random_state(random_state, where))
    if stats is not None:
        params["stats"] = _check_stats(stats, where)
    lazy = params["mode"] != "with_replacement" and stats is None
    return Transform("chain_mux", _run_chain, params, coerce=_PoolOf(where, lazy=lazy, allow_empty=True))


# ----------------------------------------------------------------------------
# pescador.mux is both this module and the pipe-style function
# ----------------------------------------------------------------------------

_FACADES = ("Mux", "StochasticMux", "ShuffledMux", "RoundRobinMux", "ChainMux")


def __getattr__(name: str) -> Any:
    """``pescador.mux.StochasticMux`` and the other class facades, which live in
    :mod:`pescador.streamer` (this module does not import the facade)."""
    if name in _FACADES:
        from . import streamer

        return getattr(streamer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """Lets ``pescador.mux(k=3, lam=64)`` call :func:`mux` while
    ``pescador.mux.Mux`` and ``from pescador.mux import ...`` keep working."""

    @property
    def __signature__(self) -> Any:  # what inspect.signature(pescador.mux) and IDEs show
        import inspect

        return inspect.signature(mux)

    def __call__(self, k: int, lam: float | None = 256.0, *, weights: Any = None, with_replacement: bool = True,
                 prune_empty: bool = True, revive: bool = False, random_state: Any = None, dist: str = "poisson",
                 stats: Any = None) -> Transform:
        return mux(k, lam, weights=weights, with_replacement=with_replacement, prune_empty=prune_empty, revive=revive,
                   random_state=random_state, dist=dist, stats=stats)


def _module_doc(doc: str | None) -> str | None:
    """``help(pescador.mux)`` begins with mux's signature and summary, then this module's docstring."""
    import inspect

    if not doc or not mux.__doc__:  # (python -OO)
        return doc
    sig = inspect.signature(mux)
    plain = sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                        return_annotation=sig.empty)
    returns = f" -> {sig.return_annotation}" if isinstance(sig.return_annotation, str) else ""
    summary = "\n\n".join(inspect.cleandoc(mux.__doc__).split("\n\n")[:2])
    return f"``mux{plain}{returns}``\n\n{summary}\n\n{doc}"  # (literal: the bare * would be reST markup)


__doc__ = _module_doc(__doc__)
sys.modules[__name__].__class__ = _CallableModule
