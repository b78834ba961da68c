"""Multiplexing: ``mux`` and its siblings (shuffled, round-robin, chain).

All of them run on one engine.  A mux keeps up to ``k`` *slots*, each
holding a live run of one stream of the pool; at every step it picks a slot,
yields that run's next item, and refills a slot whose run has ended or
reached its bound.  The kinds differ only in

- how a slot is refilled (``activation``): an independent weighted draw
  from the whole pool (``"with"``: the same stream may fill several slots);
  a weighted draw among the streams not already live (``"single"``: at most
  one live copy of each stream; a stream that ends goes back to the pool);
  or each stream once (``"once"``), in random or pool order;
- how a slot is picked for each item (``choice``): uniformly, in proportion
  to weights, or in rotation;
- how long an activation lasts: a bound drawn from a Poisson (or binomial, or
  constant) distribution of rate ``lam``, or until the stream ends.

What weights mean
-----------------
With ``with_replacement=True`` (the default) and streams that do not end,
the long-run share of items from stream ``i`` equals ``weights[i]`` (after
normalising), for any ``k`` and any ``lam``: every activation is an
independent draw with probability ``weights[i]`` and lasts a number of items
that does not depend on which stream it drew, so by the renewal-reward
theorem the share of items is the share of activations.  With ``lam=None``
activations never end, so the mux instead picks, for each item, a slot with
probability proportional to its stream's weight (divided among copies), and
fills slots with streams not yet live first: the shares then equal the
weights when ``k`` is at least the number of streams with a nonzero weight.
With at most one live copy per stream (``revive=True``, or
``StochasticMux(mode='single_active')``) each item comes from a live stream
in proportion to its weight, and the shares equal the weights when ``k`` is
at least the number of weighted streams; with fewer slots a stream can
deliver at most what one slot can, and the shares are those of the weights
restricted to the live streams, averaged over time.
Streams that end before their bound (finite streams) deliver fewer items
than their weight asks: weights are then the probabilities of activation,
not shares of items.

Parallel workers
----------------
Inside a ``zmq_offload`` worker (see :func:`pescador.worker_info`), a mux
that activates each stream at most once (``with_replacement=False`` without
``revive``, ``mode='exhaustive'``, round-robin and chain muxes) takes only
its share of the pool, members ``id::count``, so a finite pool is delivered
exactly once in total.  Every mux in a worker draws from a generator made
of its ``random_state`` (None, an int, a ``Generator`` or a ``RandomState``:
the worker holds a copy of it) combined with the worker's seed, so workers
make independent choices.  With None, a ``Generator`` or a ``RandomState``,
a ``DataLoader`` worker draws anew each epoch and a run repeats when its
workers' seeds do (``zmq_offload(random_state=...)``, ``torch.manual_seed``);
an int makes every run repeat, in workers too (worker ``i`` uses the int's
``i``-th child; with one worker the int alone decides, as in the main
process).  See ``pescador._random``.
"""

from __future__ import annotations

import math
import numbers
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .core import Stream, Transform, is_item, not_a_dict, short_repr, stream
from ._random import _check_random_state, _rng
from .exceptions import PescadorError
from .streamer import Streamer
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


def _pool(pool: Any, where: str) -> tuple:
    """Coerce a pool of sources into a tuple of Streams, naming bad members."""
    if isinstance(pool, (Stream, Streamer)) or callable(pool) or not isinstance(pool, (Sequence, np.ndarray)):
        raise PescadorError(
            f"{where}: expected a list of streams (Streams, Streamers or generator functions); "
            f"got a {type(pool).__name__}"
        )
    if len(pool) == 0:
        raise PescadorError(f"{where}: the pool of streams is empty; give at least one stream")
    members = []
    for position, member in enumerate(pool):
        if not (isinstance(member, (Stream, Streamer)) or callable(member)):
            raise PescadorError(
                f"{where}: pool member {position} is a {type(member).__name__}; expected a "
                "Stream, a Streamer or a generator function"
            )
        try:
            members.append(stream(member))
        except PescadorError as exc:
            raise PescadorError(f"{where}: pool member {position}: {exc}") from None
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
    if not values.sum() > 0:
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


class _Random:
    """Uniform numbers and activation lengths, drawn in blocks.

    With ``block=1`` nothing is drawn ahead, so the generator's state alone
    says where the draws are (what a resumable run saves).
    """

    def __init__(self, rng: Any, lam: float | None, dist: str, block: int = _BLOCK) -> None:
        self.rng, self.lam, self.dist, self.block = rng, lam, dist, block
        self.uniforms: list = []
        self.lengths: list = []

    def uniform(self) -> float:
        if self.block == 1:  # (a scalar draw: no array to make and unpack)
            return self.rng.random()
        if not self.uniforms:
            self.uniforms = self.rng.random(self.block).tolist()
        return self.uniforms.pop()

    def length(self) -> int:
        """The bound of a new activation; -1 for none (it counts down for ever)."""
        if self.lam is None:
            return -1
        if not self.lengths:
            if self.dist == "poisson":
                draws = self.rng.poisson(self.lam, self.block)
            elif self.dist == "binomial":
                trials = max(1, int(round(2 * self.lam)))
                draws = self.rng.binomial(trials, min(1.0, self.lam / trials), self.block)
            else:
                draws = np.full(self.block, max(1, int(round(self.lam))))
            self.lengths = draws.tolist()
        return self.lengths.pop()


class _Activations:
    """Which stream fills the next slot, and the bookkeeping of live streams."""

    def __init__(self, weights: np.ndarray, activation: str, exclusive: bool, prune_empty: bool, rand: _Random) -> None:
        self.w = weights  # shared across epochs: pruned streams stay pruned
        self.activation = activation
        self.exclusive = exclusive  # prefer (or, for "single", require) streams not live
        self.prune_empty = prune_empty
        self.rand = rand
        self.live = [0] * len(weights)
        self.n_live = 0  # distinct live streams with a positive weight
        self.eligible = int(np.count_nonzero(weights))
        self.dry: set = set()  # streams whose latest run gave nothing (prune_empty=False)
        self.queue: list = []
        self.block: list = []
        self.cum: np.ndarray | None = None

    def start_epoch(self, order: str) -> None:
        """For activation "once": queue every weighted stream, in pool or random order."""
        if self.activation != "once":
            return
        members = np.flatnonzero(self.w > 0)
        if order == "random" and len(members):
            p = self.w[members] / self.w[members].sum()
            members = self.rand.rng.choice(members, size=len(members), replace=False, p=p)
        self.queue = [int(i) for i in members[::-1]]  # pop() takes them in order

    def _draw(self) -> int:
        """A stream drawn in proportion to the weights (from a block)."""
        if not self.block:
            if self.cum is None:
                self.cum = np.cumsum(self.w)
            u = self.rand.rng.random(self.rand.block) * self.cum[-1]
            picks = np.searchsorted(self.cum, u, side="right")
            self.block = np.minimum(picks, len(self.w) - 1).tolist()
        i = self.block.pop()
        while self.w[i] <= 0:  # pruned since the block was drawn
            if not self.eligible:
                raise LookupError
            self.block = []
            self.cum = None
            i = self._draw()
        return i

    def next(self) -> int | None:
        """The stream to activate, or None when none can be."""
        if self.activation == "once":
            return self.queue.pop() if self.queue else None
        if not self.eligible or (self.dry and len(self.dry) >= self.eligible):
            return None
        try:
            if not self.exclusive:
                return self._draw()
            if self.n_live >= self.eligible:
                return None if self.activation == "single" else self._draw()
            for _ in range(64):
                i = self._draw()
                if not self.live[i]:
                    return i
        except LookupError:
            return None
        free = np.flatnonzero((self.w > 0) & (np.asarray(self.live) == 0))
        cum = np.cumsum(self.w[free])
        pick = int(np.searchsorted(cum, self.rand.uniform() * cum[-1], side="right"))
        return int(free[min(pick, len(free) - 1)])

    def started(self, i: int) -> None:
        if not self.live[i] and self.w[i] > 0:
            self.n_live += 1
        self.live[i] += 1

    def stopped(self, i: int, gave_nothing: bool) -> None:
        self.live[i] -= 1
        if not self.live[i] and self.w[i] > 0:
            self.n_live -= 1
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
    w_max = max(item_weight)  # (item_weight: the per-item preference; not changed by pruning)
    ordered = choice == "rotate"
    uniform = choice == "uniform"
    dry = acts.dry  # (streams whose latest run gave nothing; the same set throughout)
    per_copy = activation == "with"
    its: list = []  # live runs, one per slot
    left: list = []  # items each slot may still give (below zero: unbounded)
    bound: list = []  # each slot's bound when it started
    who: list = []  # each slot's stream
    slot_draws: list = []
    position = 0  # items yielded so far
    epoch = 0
    if stats is not None:
        stats._start(n, weights, who, bound, left)
    while epochs is None or epoch < epochs:
        epoch += 1
        acts.start_epoch(order)
        produced = False
        rotation = -1
        refill = True
        while True:
            if refill:
                refill = False
                while len(its) < k:
                    i = acts.next()
                    if i is None:
                        break
                    length = rand.length()
                    if length == 0:
                        continue  # an activation of no items: nothing to start
                    its.append(iter(pool[i]))
                    left.append(length)
                    bound.append(length)
                    who.append(i)
                    acts.started(i)
                    if stats is not None:
                        stats._activations[i] += 1
                if not its:
                    break
            n_slots = len(its)
            if uniform:
                if not slot_draws:
                    slot_draws = rng.random(_BLOCK).tolist()
                s = int(slot_draws.pop() * n_slots)
            elif ordered:
                rotation = s = (rotation + 1) % n_slots
            else:  # weighted, by rejection: valid whatever the slots hold
                while True:
                    if not slot_draws:
                        slot_draws = rng.random(_BLOCK).tolist()
                    s = int(slot_draws.pop() * n_slots)
                    i = who[s]
                    share = item_weight[i] / acts.live[i] if per_copy else item_weight[i]
                    if rand.uniform() * w_max < share:
                        break
            try:
                item = next(its[s])
            except StopIteration:
                ended = True
            else:
                if type(item) is dict:  # (inlined is_item: this runs for every item)
                    for key in item:
                        if type(key) is not str:
                            raise not_a_dict(item, name, position, f"pool member {who[s]} ({short_repr(pool[who[s]], 60)})")
                elif not is_item(item):
                    raise not_a_dict(item, name, position, f"pool member {who[s]} ({short_repr(pool[who[s]], 60)})")
                position += 1
                produced = True
                if dry:
                    dry.clear()
                left[s] -= 1  # (counted before the yield, so a reader sees it)
                yield item
                if left[s]:
                    continue
                ended = False
            # slot s is done: release it and refill
            acts.stopped(who[s], ended and bound[s] == left[s])
            if stats is not None:
                stats._items[who[s]] += bound[s] - left[s]
            if ordered:
                del its[s], left[s], bound[s], who[s]
                rotation = s - 1
            else:
                last = len(its) - 1
                its[s], left[s], bound[s], who[s] = its[last], left[last], bound[last], who[last]
                del its[last], left[last], bound[last], who[last]
            refill = True
        if not produced or activation != "once":
            return  # nothing more can be activated (or a whole pass gave nothing)


# ----------------------------------------------------------------------------
# The kinds: a few lines each
# ----------------------------------------------------------------------------


def _engine_args(name: str, pool: tuple, p: dict) -> dict:
    """The engine's parameters for each kind of mux, from the kind's own (shared with resumable runs)."""
    if name in ("mux", "stochastic_mux"):
        if name == "mux":
            activation = "with" if p.get("with_replacement", True) else ("single" if p.get("revive") else "once")
            k, lam, prune = p["k"], p.get("lam", 256.0), p.get("prune_empty", True)
        else:
            activation = {"with_replacement": "with", "single_active": "single", "exhaustive": "once"}[
                p.get("mode", "with_replacement")]
            k, lam, prune = p["n_active"], p.get("rate", 256.0), p.get("prune_empty_streams", True)
        uniform = activation == "with" and lam is not None or p.get("weights") is None
        return dict(k=k, lam=lam, weights=p.get("weights"), activation=activation, order="random",
                    choice="uniform" if uniform else "weighted", epochs=1, prune_empty=prune,
                    random_state=p.get("random_state"), dist=p.get("dist", "poisson"))
    common = dict(lam=None, weights=None, prune_empty=True, random_state=p.get("random_state"), dist="poisson")
    if name == "shuffled_mux":
        return dict(common, k=len(pool), weights=p.get("weights"), activation="single", order="random",
                    choice="uniform" if p.get("weights") is None else "weighted", epochs=1)
    if name == "round_robin_mux":
        mode = p.get("mode", "exhaustive")
        return dict(common, k=len(pool), activation="once", order="random" if mode == "permuted_cycle" else "pool",
                    choice="rotate", epochs=1 if mode == "exhaustive" else None)
    if name == "chain_mux":
        once = p.get("mode", "exhaustive") == "exhaustive"
        return dict(common, k=1, activation="once" if once else "with", order="pool" if once else "random",
                    choice="uniform", epochs=1)
    if name == "epochs":
        return dict(common, k=p.get("k") or len(pool), activation="once", order="random", choice="uniform",
                    epochs=p.get("n_epochs"))
    raise ValueError(name)


def _run(name: str, pool: tuple, params: dict) -> Iterator:
    """A plain run of a mux kind: its engine parameters, then the engine."""
    return _engine(pool, **_engine_args(name, pool, params), name=name, stats=params.get("stats"))


class _PoolOf:
    """Coerces what a mux is applied to into its pool (picklable, names the mux)."""

    def __init__(self, name: str, weights: tuple | None = None) -> None:
        self.name, self.weights = name, weights

    def __call__(self, pool: Any) -> tuple:
        members = _pool(pool, self.name)
        _weights_fit(members, self.weights, self.name)
        return members

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PoolOf) and (other.name, other.weights) == (self.name, self.weights)

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
        Poisson distribution of rate ``lam`` (see ``dist``); then its slot
        is refilled.  None runs each activation until its stream ends.
    weights : sequence of float >= 0, optional
        The long-run share of items from each stream (see the module
        documentation for exactly when shares equal weights).
    with_replacement : bool
        If True, any stream may be activated any number of times, several
        at once.  If False, each stream is activated at most once, and the
        mux ends when all are used.
    prune_empty : bool
        If True, a stream whose run gave no items is not activated again.
        If False it may be; the mux still ends, rather than spinning, once
        every remaining stream's latest run gave nothing.
    revive : bool
        With ``with_replacement=False``: a stream that ends or reaches its
        bound goes back to the pool, with at most one live copy at a time.
    random_state : None, int, np.random.Generator or np.random.RandomState
        With an int, every run reproduces the same sequence (in workers too,
        each worker its own; see "Parallel workers" above).
    dist : "poisson", "binomial" or "constant"
        The distribution of activation lengths, of mean ``lam``.
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
                    random_state=None, dist="poisson", stats=None):
    params = dict(locals())
    _weights_fit(pool, weights, "stochastic_mux")
    return _run("stochastic_mux", pool, params)


def stochastic_mux(
    n_active: int,
    rate: float | None = 256.0,
    weights: Any = None,
    mode: str = "with_replacement",
    prune_empty_streams: bool = True,
    random_state: Any = None,
    dist: str = "poisson",
    stats: Any = None,
) -> Transform:
    """The 3.x ``StochasticMux`` as a curried combinator.

    ``mode`` is ``"with_replacement"`` (like ``mux``), ``"single_active"``
    (at most one live copy of each stream; ended streams return to the
    pool) or ``"exhaustive"`` (each stream activated once).

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
        random_state=_check_random_state(random_state, where),
    )
    if dist != "poisson":
        params["dist"] = _check_choice(dist, _DISTRIBUTIONS, where, "dist")
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
    ``"permuted_cycle"`` starts again in a new random order.

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


_CHAIN_MODES = ("exhaustive", "with_replacement")


def _run_chain(pool, mode="exhaustive", random_state=None, stats=None):
    return _run("chain_mux", pool, dict(locals()))


def chain_mux(mode: str = "exhaustive", random_state: Any = None, stats: Any = None) -> Transform:
    """One stream at a time, to its end (3.x ``ChainMux``).

    ``mode``: ``"exhaustive"`` runs the streams once each, in pool order;
    ``"with_replacement"`` then keeps picking a stream at random, for ever.

    Examples
    --------
    >>> import pescador
    >>> pool = [pescador.stream([{"v": 1}, {"v": 2}]), pescador.stream([{"v": 3}])]
    >>> [x["v"] for x in pescador.mux.chain_mux()(pool)]
    [1, 2, 3]
    """
    where = "chain_mux"
    params = dict(mode=_check_choice(mode, _CHAIN_MODES, where), random_state=_check_random_state(random_state, where))
    if stats is not None:
        params["stats"] = _check_stats(stats, where)
    return Transform("chain_mux", _run_chain, params, coerce=_PoolOf(where))


# ----------------------------------------------------------------------------
# The class facades (1.0 Mux lives in pescador.streamer; the 3.x ones here)
# ----------------------------------------------------------------------------

from .streamer import Mux  # noqa: E402  (re-exported: pescador.mux.Mux)


class StochasticMux(Streamer):
    """The 3.x ``StochasticMux``: a facade over :func:`stochastic_mux`.

    Examples
    --------
    >>> import pescador
    >>> def constant(value):
    ...     while True:
    ...         yield {"v": value}
    >>> m = pescador.StochasticMux([pescador.Streamer(constant, v) for v in "ab"], 2, 8, random_state=0)
    >>> len(list(m.iterate(max_iter=10)))
    10
    """

    def __init__(self, streamers, n_active, rate, weights=None, mode="with_replacement",
                 prune_empty_streams=True, random_state=None, dist="poisson"):
        step = stochastic_mux(n_active, rate, weights, mode, prune_empty_streams, random_state, dist)
        self._facade(step(streamers), streamers)
        self.n_active, self.rate, self.weights, self.mode = n_active, rate, weights, mode


class ShuffledMux(Streamer):
    """The 3.x ``ShuffledMux``: a facade over :func:`shuffled_mux`.

    Examples
    --------
    >>> import pescador
    >>> m = pescador.ShuffledMux([pescador.Streamer([{"v": 1}]), pescador.Streamer([{"v": 2}])], random_state=0)
    >>> len(list(m(max_iter=5)))
    5
    """

    def __init__(self, streamers, weights=None, random_state=None):
        self._facade(shuffled_mux(weights, random_state)(streamers), streamers)
        self.weights = weights


class RoundRobinMux(Streamer):
    """The 3.x ``RoundRobinMux``: a facade over :func:`round_robin_mux`.

    Examples
    --------
    >>> import pescador
    >>> pool = [pescador.Streamer([{"v": 1}, {"v": 2}]), pescador.Streamer([{"v": 3}])]
    >>> [x["v"] for x in pescador.RoundRobinMux(pool)]
    [1, 3, 2]
    """

    def __init__(self, streamers, mode="exhaustive", random_state=None):
        self._facade(round_robin_mux(mode, random_state)(streamers), streamers)
        self.mode = mode


class ChainMux(Streamer):
    """The 3.x ``ChainMux``: a facade over :func:`chain_mux`.

    Examples
    --------
    >>> import pescador
    >>> [x["v"] for x in pescador.ChainMux([pescador.Streamer([{"v": 1}]), pescador.Streamer([{"v": 2}])])]
    [1, 2]
    """

    def __init__(self, streamers, mode="exhaustive", random_state=None):
        self._facade(chain_mux(mode, random_state)(streamers), streamers)
        self.mode = mode


# ----------------------------------------------------------------------------
# pescador.mux is both this module and the pipe-style function
# ----------------------------------------------------------------------------


class _CallableModule(types.ModuleType):
    """Lets ``pescador.mux(k=3, lam=64)`` call :func:`mux` while
    ``pescador.mux.Mux`` and ``from pescador.mux import ...`` keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Transform:
        return mux(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
