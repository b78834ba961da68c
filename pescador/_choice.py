"""The random choices of a mux: activation lengths, which stream fills a slot, which slot gives
the next item, and the random draws behind them, in blocks that resume exactly.

Each weighted draw first makes at most a few cheap tries (picks from blocks of
draws over the pool, or rejection against the largest weight), then draws
from a sum tree of the weights as exact integers (O(log n)): given the
misses the tree draws from the same distribution, so the draw is exact and
its cost bounded whatever the ratio of the weights.  See docs/multiplexing.rst.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .exceptions import PescadorError
from .stage import Block, _jsonable, check_fields, check_int, check_list, rng_state, set_rng_state

_BLOCK = 1024  # random numbers are drawn in blocks of this size

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
    the live slots: see :meth:`_Draws.length`.)  The number of generator
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




def _longest(lam: float, dist: str) -> int:
    """The largest activation length a state may hold: exact for the bounded distributions; for the
    others 64 standard deviations above the mean, which no draw reaches (a probability below 1e-300)."""
    if dist == "constant":
        return max(1, int(round(lam)))
    if dist == "3x-constant":
        return max(1, math.ceil(lam))
    if dist == "binomial" and lam < _HUGE_LAM:
        return max(1, int(round(2 * lam)))
    return int(lam + 64 * math.sqrt(lam) + 64)


def _uniform_block(rng: Any) -> list:
    return rng.random(_BLOCK).tolist()


def _length_block(lam: float, dist: str, rng: Any) -> list:
    return _lengths(rng, lam, dist, _BLOCK)


def _binomial_block(trials: int, q: float, rng: Any) -> list:
    return (1 + rng.binomial(trials, q, 64)).tolist()


def _block_state(block: Block) -> Any:
    return _jsonable(block.state())


def _check_rng_state(value: Any, template: Any, where: str, name: str) -> None:
    """A generator state of exactly the shape of ``template`` (the generator's own): the same keys, ints
    where it has ints (within 128 bits), the same strings.  (numpy would take floats, or wrap.)"""
    if isinstance(template, dict):
        ok = isinstance(value, dict) and value.keys() == template.keys()
        if ok:
            for key in template:
                _check_rng_state(value[key], template[key], where, name)
            return
    elif isinstance(template, (int, np.integer)) and not isinstance(template, bool):
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**128
    else:
        ok = value == template
    if not ok:
        raise PescadorError(f"resumable: the state of {where}: field {name!r} is not a state of this mux's "
                            f"generator ({type(template).__name__} expected, got {value!r:.60})")


def _restore_block(block: Block, value: Any, where: str, name: str) -> None:
    """``block.restore``, its generator state checked strictly first."""
    if isinstance(value, list) and len(value) == 2:
        _check_rng_state(value[0], block.rng.bit_generator.state, where, name)
    block.restore(value, where, name)


class _UnsavedBlock(Block):
    """A block drawn from a legacy ``RandomState`` (a plain run: its state is never asked)."""

    __slots__ = ()

    def refill(self) -> list:
        self.items = self.draw(self.rng)
        self.size = len(self.items)
        return self.items


class _Draws:
    """A run's random numbers: its generator, and the blocks drawn from it.

    Uniform numbers and activation lengths are drawn ``_BLOCK`` at a time
    (the ``"3x-binomial"`` lengths in blocks per ``(trials, q)``), each a
    :class:`~pescador.stage.Block`, so the state is the generator's current
    state plus, for each live block, its snapshot and offset.
    """

    def __init__(self, rng: Any, lam: float | None, dist: str) -> None:
        self.rng, self.lam, self.dist = rng, lam, dist
        self.Block = Block if hasattr(rng, "bit_generator") else _UnsavedBlock
        self.uniforms = self.Block(rng, _uniform_block)
        self.lengths = self.Block(rng, functools.partial(_length_block, lam, dist))
        self.shifted = self.Block(rng, functools.partial(_length_block, lam, "3x-poisson"))  # ("3x-binomial"'s limit)
        self.binomials: dict = {}  # ("3x-binomial": a block per (trials, q) seen; empty: seen once)
        self.picks: Block | None = None  # (the weighted picks of the activations, set by _Activations)

    def uniform(self) -> float:
        items = self.uniforms.items
        return (items or self.uniforms.refill()).pop()

    def length(self, p: float = 0.0) -> int:
        """The bound of a new activation, at least 1; -1 for none (it counts down for ever).

        ``p`` (``"3x-binomial"`` only) is the new stream's share of the live
        slots' weights, itself included.
        """
        if self.lam is None:
            return -1
        if self.dist == "3x-binomial":
            return self._binomial_3x(p)
        block = self.lengths
        while not block.items:
            block.refill()
        return block.items.pop()

    def _binomial_3x(self, p: float) -> int:
        """``1 + Binomial(floor((lam - 1) / q), q)`` with ``q = 1 - p``, as pescador 3.x drew it (mean
        about ``lam``, variance about ``(lam - 1) p``); its Poisson limit where ``p > 0.9999``."""
        lam, q = self.lam, 1.0 - p
        if not q >= 1e-4:  # (one stream, in effect; also p undefined)
            while not self.shifted.items:
                self.shifted.refill()
            return self.shifted.items.pop()
        trials = int((lam - 1.0) / q) if lam > 1.0 else 0
        if trials == 0:
            return 1
        if trials >= _HUGE_LAM:  # beyond numpy's binomial: a normal approximation
            return max(1, int(1 + trials * q + math.sqrt(trials * q * p) * self.rng.standard_normal()))
        # blocks per (trials, q) seen before: a constant share (even weights) draws in blocks, while
        # shares that keep changing (uneven weights) draw one number each, not a block each
        key = (trials, q)
        block = self.binomials.get(key)
        if block is None:
            if len(self.binomials) >= 256:
                self.binomials.clear()
            self.binomials[key] = self.Block(self.rng, functools.partial(_binomial_block, trials, q))
            return 1 + int(self.rng.binomial(trials, q))
        return (block.items or block.refill()).pop()

    # -- where the draws are ------------------------------------------------------------------
    FIELDS = ("rng", "uniforms", "lengths", "shifted", "picks", "binomials")

    def state(self) -> dict:
        return {
            "rng": rng_state(self.rng),
            "uniforms": _block_state(self.uniforms),
            "lengths": _block_state(self.lengths),
            "shifted": _block_state(self.shifted),
            "picks": None if self.picks is None else _block_state(self.picks),
            "binomials": [[t, q, _block_state(b)] for (t, q), b in self.binomials.items()],
        }

    def restore(self, state: Any, where: str) -> None:
        """Draw every live block of ``state`` again from its snapshot, then set the generator to its
        saved current state (each field checked)."""
        fields = check_fields(state, self.FIELDS, where)
        _check_rng_state(fields["rng"], self.rng.bit_generator.state, where, "rng")  # (before any block is drawn)
        used = {"lengths": self.lam is not None and self.dist != "3x-binomial",
                "shifted": self.lam is not None and self.dist == "3x-binomial",
                "picks": self.picks is not None}
        for name in ("uniforms", "lengths", "shifted", "picks"):
            if fields[name] is not None and not used.get(name, True):
                raise PescadorError(
                    f"resumable: the state of {where}: field {name!r} must be null (this mux draws no such "
                    f"numbers); got {fields[name]!r:.80}"
                )
        _restore_block(self.uniforms, fields["uniforms"], where, "uniforms")
        _restore_block(self.lengths, fields["lengths"], where, "lengths")
        _restore_block(self.shifted, fields["shifted"], where, "shifted")
        if self.picks is not None:
            _restore_block(self.picks, fields["picks"], where, "picks")
        self._restore_binomials(fields, where)
        set_rng_state(self.rng, fields["rng"], where, "rng")

    def _restore_binomials(self, fields: dict, where: str) -> None:
        entries = check_list(fields, "binomials", where, most=256 if self.dist == "3x-binomial" and self.lam else 0)
        self.binomials = {}
        for entry in entries:
            ok = isinstance(entry, list) and len(entry) == 3
            trials, q = (entry[0], entry[1]) if ok else (None, None)
            ok = ok and isinstance(trials, int) and not isinstance(trials, bool) and isinstance(q, float)
            ok = ok and 1e-4 <= q <= 1.0 and self.lam > 1.0 and trials == int((self.lam - 1.0) / q)
            ok = ok and 0 < trials < _HUGE_LAM and (trials, q) not in self.binomials
            if not ok:
                raise PescadorError(
                    f"resumable: the state of {where}: field 'binomials' must hold distinct [trials, q, block] "
                    f"with q in [1e-4, 1] and trials = floor((rate - 1) / q); got {entry!r:.80}"
                )
            block = Block(self.rng, functools.partial(_binomial_block, trials, q))
            _restore_block(block, entry[2], where, "binomials")
            self.binomials[(trials, q)] = block



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

    ``w`` holds the weights of the streams that may still be activated: a
    worker's share of a pool activated once, less the streams pruned for
    giving nothing (``base`` keeps the weights before pruning).
    """

    def __init__(self, weights: np.ndarray, activation: str, exclusive: bool, prune_empty: bool, draws: _Draws) -> None:
        self.base = weights
        self.w = weights.copy()  # shared across epochs: pruned streams stay pruned
        self.activation = activation
        self.exclusive = exclusive  # prefer (or, for "single", require) streams not live
        self.prune_empty = prune_empty and activation != "once"  # ("once": every stream in every pass)
        self.draws = draws
        self.live = [0] * len(weights)
        self.n_live = 0  # distinct live streams with a positive weight
        self.eligible = int(np.count_nonzero(weights))
        self.dry: set = set()  # streams whose latest run gave nothing (prune_empty=False)
        self.order, self.first = "pool", True
        self.queue = draws.Block(draws.rng, self._draw_order)  # ("once": this pass's streams, in order)
        self.cum: np.ndarray | None = None
        self.W = _integers(weights)
        self.tries = 8  # block picks before the tree (1 after a miss: the tree is then likely needed again)
        if activation != "once":
            draws.picks = draws.Block(draws.rng, self._draw_picks)
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

    def start_epoch(self, order: str, first: bool = False) -> None:
        """For activation "once": queue every weighted stream, in pool or random order
        (``"pool-then-random"``: the ``first`` pass in pool order, the others in random order)."""
        if self.activation != "once":
            return
        self.order, self.first = order, first
        self.queue.refill()

    def _draw_order(self, rng: Any) -> list:
        """The streams of a pass, last first (``pop()`` takes them in order): a block of draws, so
        that the state is where the pass began and how far it is."""
        order = self.order
        if order == "pool-then-random":
            order = "pool" if self.first else "random"
        members = np.flatnonzero(self.w > 0)
        if order == "random" and len(members) > 1:
            w = self.w[members]
            if np.all(w == w[0]):
                members = rng.choice(members, size=len(members), replace=False, p=w / w.sum())
            else:  # exponential clocks of rates w: a draw without replacement by weight, for any ratio
                clocks = np.log(rng.standard_exponential(len(members))) - np.log(w)
                members = members[np.argsort(clocks, kind="stable")]
        return [int(i) for i in members[::-1]]

    def _draw_picks(self, rng: Any) -> list:
        """A block of streams drawn in proportion to the weights of the whole pool."""
        if self.cum is None:
            self.cum = np.cumsum(self.w / self.w.max())
        picks = np.searchsorted(self.cum, rng.random(_BLOCK) * self.cum[-1], side="right")
        return np.minimum(picks, len(self.w) - 1).tolist()

    def _pick(self) -> int:
        """A stream drawn in proportion to the weights of the whole pool (from a block)."""
        block = self.draws.picks
        i = (block.items or block.refill()).pop()
        if self.w[i] <= 0:  # (pruned since the block was drawn)
            self._forget_picks()
            return self._pick()
        return i

    def _forget_picks(self) -> None:
        self.draws.picks.drop()
        self.cum = None

    def next(self) -> int | None:
        """The stream to activate, or None when none can be."""
        if self.activation == "once":
            queue = self.queue.items
            return queue.pop() if queue else None
        if not self.eligible:
            return None
        if not (self.exclusive or self.dry):  # (then every pick is free)
            return self._pick()
        for _ in range(self.tries):
            i = self._pick()
            if self._free(i):
                self.tries = 8
                return i
        self.tries = 1
        free = self.free
        for i in self.stale:  # (bring the tree up to date)
            value = self.W[i] if self._free(i) else 0
            if free[i] != value:
                free[i] = value
        self.stale.clear()
        if free.total():
            return free.draw(self.draws.uniform())
        if self.any is not None and self.any.total():  # every stream is live: a copy
            return self.any.draw(self.draws.uniform())
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
                    self._forget_picks()
            else:
                self.dry.add(i)
            self.stale.add(i)
            if self.any is not None:
                self.any[i] = 0

    def could_fill(self) -> bool:
        """Whether a refill would find a stream now (without drawing).  When empty streams are pruned,
        slots are short only when none could (they are refilled at every release); with dry streams,
        an item since the refill may have made them drawable again, so nothing is known."""
        if self.activation == "once":
            return bool(self.queue.items)
        if self.dry or not self.prune_empty:
            return False
        if not self.exclusive:
            return self.eligible > 0
        return any(self._free(i) for i in range(len(self.w))) or (
            self.any is not None and self.any.total() > 0)

    def wet(self) -> None:
        """An item came: the streams whose latest run gave nothing may be drawn again."""
        for i in self.dry:
            self.stale.add(i)
            if self.any is not None and self.w[i] > 0:
                self.any[i] = self.W[i]
        self.dry.clear()

    # -- where the bookkeeping is ---------------------------------------------------------------
    def state(self) -> dict:
        return {
            "pruned": [int(i) for i in np.flatnonzero((self.base > 0) & (self.w <= 0))],
            "dry": sorted(self.dry),
            "queue": _block_state(self.queue),
            "tries": self.tries,
        }

    def restore(self, state: dict, who: list, epoch: int, order: str, where: str) -> None:
        """Take up the fields of a saved state (``who``: the live slots' streams, checked)."""
        n = len(self.w)
        allowed = self.base > 0
        pruned = _indices(state, "pruned", where, n, allowed, "of a positive weight")
        if pruned and not self.prune_empty:
            raise PescadorError(f"resumable: the state of {where}: field 'pruned' must be empty (this mux "
                                f"prunes nothing); got {pruned!r:.80}")
        self.w[pruned] = 0.0
        dry = _indices(state, "dry", where, n, self.w > 0, "of a positive weight and not pruned")
        if dry and (self.prune_empty or self.activation == "once"):
            raise PescadorError(f"resumable: the state of {where}: field 'dry' must be empty (this mux prunes "
                                f"empty streams); got {dry!r:.80}")
        self.tries = _check_tries(state, "tries", where)
        self.dry.clear()
        self.dry.update(dry)  # (the same set: the engine holds it)
        self.live = [0] * n
        for i in who:
            self.live[i] += 1
        self.n_live = sum(1 for i in set(who) if self.w[i] > 0)
        self.eligible = int(np.count_nonzero(self.w))
        self.cum = None
        self._trees()
        self._restore_queue(state, who, epoch, order, where)

    def _restore_queue(self, state: dict, who: list, epoch: int, order: str, where: str) -> None:
        """The pass's streams not yet activated: the pass's order drawn again from its snapshot."""
        if state["queue"] is not None and (self.activation != "once" or not epoch):
            raise PescadorError(f"resumable: the state of {where}: field 'queue' must be null (no pass of "
                                f"streams is under way); got {state['queue']!r:.80}")
        self.order, self.first = order, epoch == 1
        _restore_block(self.queue, state["queue"], where, "queue")
        if self.activation != "once":
            return
        taken = set(np.flatnonzero(self.w > 0).tolist()) - set(self.queue.items)
        if not set(who) <= taken:
            raise PescadorError(f"resumable: the state of {where}: field 'queue' says streams "
                                f"{sorted(set(who) - taken)} are still to come in this pass, but they are live")


def _check_tries(state: dict, name: str, where: str) -> int:
    """A count of tries of a weighted draw: 8, or 1 after a miss."""
    value = check_int(state, name, where, 1, 8)
    if value not in (1, 8):
        raise PescadorError(f"resumable: the state of {where}: field {name!r} must be 1 or 8; got {value}")
    return value


def _indices(state: dict, name: str, where: str, n: int, allowed: np.ndarray, what: str, ordered: bool = True) -> list:
    """The field ``name``: distinct stream indices (sorted if ``ordered``), each ``allowed``."""
    values = check_list(state, name, where, most=n)
    ok = all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n and allowed[i] for i in values)
    ok = ok and len(set(values)) == len(values) and (not ordered or values == sorted(values))
    if not ok:
        raise PescadorError(
            f"resumable: the state of {where}: field {name!r} must hold distinct{' sorted' if ordered else ''} "
            f"indices of streams {what} (of a pool of {n}); got {values!r:.80}"
        )
    return list(values)


class _SlotChoice:
    """The weighted choice of a slot for each item, each slot weighing its stream's weight
    (divided among its live copies when ``per_copy``).

    First a few tries of rejection against the largest weight of the pool;
    after that many misses, a draw from a sum tree of the slots' weights as
    exact integers (O(log k), whatever the weights).  Given the misses, the
    tree draws from the same distribution, so the choice is exact; the tree
    is brought up to date only when it is used.
    """

    def __init__(self, weights: list, per_copy: bool, acts: _Activations, draws: _Draws) -> None:
        top = max(weights)
        # (in [0, 1]: rejection stays accurate for subnormal weights too; those that underflow to zero are
        # left to the tree, which holds every weight exactly)
        self.shares = [w / top for w in weights]
        self.per_copy, self.acts, self.draws = per_copy, acts, draws
        self.W = _integers(weights)
        self.tree = _SumTree([0] * 4)
        self.stale: set = set()  # slots whose leaf may be out of date
        self.rebuild_all = False  # (copies changed: every slot of their stream)
        self.tries = 8

    def pick(self, slots: list, n: int) -> int:
        """The slot of the next item: ``tries`` rejections, then the tree."""
        shares, live, per_copy, block = self.shares, self.acts.live, self.per_copy, self.draws.uniforms
        for _ in range(self.tries):
            draws = block.items
            if len(draws) < 2:
                draws = block.refill()
            s = int(draws.pop() * n)
            i = slots[s].who
            if draws.pop() < (shares[i] / live[i] if per_copy else shares[i]):
                self.tries = 8
                return s
        return self.from_tree(slots, n)

    def from_tree(self, slots: list, n: int) -> int:
        """After ``tries`` misses: the slot drawn from the tree (brought up to date first)."""
        self.tries = 1  # (the tree is likely needed again: try it sooner)
        if self.rebuild_all or len(self.stale) > n // 4:
            self.rebuild(slots)
        else:
            W, live, per_copy = self.W, self.acts.live, self.per_copy
            for s in self.stale:
                if s >= n:
                    self.tree[s] = 0
                else:
                    i = slots[s].who
                    self.tree[s] = W[i] // live[i] if per_copy else W[i]
            self.stale.clear()
        return self.tree.draw(self.draws.uniform())

    def filled(self, slots: list, s: int) -> None:
        """Slot ``s`` (the last) now holds a run of ``slots[s].who``."""
        self.stale.add(s)
        if self.per_copy and self.acts.live[slots[s].who] > 1:
            self.rebuild_all = True

    def released(self, slots: list, s: int, i: int) -> None:
        """Slot ``s``, a run of ``i``, was released and the last slot moved into it."""
        self.stale.add(s)
        self.stale.add(len(slots))
        if self.per_copy and self.acts.live[i]:
            self.rebuild_all = True

    def rebuild(self, slots: list) -> None:
        """The whole tree again, from the slots' streams (O(k))."""
        W, live = self.W, self.acts.live
        self.tree = _SumTree([W[s.who] // max(1, live[s.who]) for s in slots] if self.per_copy else [W[s.who] for s in slots])
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
