"""Multiplexing: ``mux`` and its siblings (``stochastic_mux``, ``shuffled_mux``,
``round_robin_mux``, ``chain_mux``), all on one engine.

``pescador.mux`` is this module and, called, the function :func:`mux`.  How a
mux works, what the weights mean, why it never spins, and muxes in worker
processes: the Multiplexing page of the documentation (docs/multiplexing.rst).

Every kind is a small subclass of one engine, ``_Mux``, a
:class:`~pescador.stage.Stage`: ``iter(recipe)`` and
:func:`pescador.resumable` run the same object, so a resumable run of a
seeded recipe yields exactly the items of a plain run.  Its state holds each
slot (its stream, the items it may still give, its bound, its run's state),
the activation bookkeeping, and the random draws: the generator's current
state and, for each block of draws under way, the generator's state at its
start and the offset into it (:class:`~pescador.stage.Block`).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .core import PoolTransform, Stream, _defaults, stream
from ._checks import _check_bool, _check_choice, _check_k, _check_lam, _check_random_state, _check_weights
from ._checks import _spelled
from ._choice import _Activations, _Draws, _Share3x, _SlotChoice, _check_tries, _longest
from ._random import _rng
from .exceptions import ParameterError, ParameterTypeError, PescadorError
from .observe import MuxStats
from .stage import (Stage, check_bool, check_fields, check_int, check_list, most_given, pool_length, replay,
                    run_seeds, starter, tracking)
from .workers import worker_info

__all__ = [
    "mux",
    "stochastic_mux",
    "shuffled_mux",
    "round_robin_mux",
    "chain_mux",
]  # (and the 3.x facades Mux, StochasticMux, ... which pescador.streamer puts here)

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
        raise ParameterTypeError(
            f"{where}: the pool is a {type(pool).__name__}, whose streams are produced at run time; only "
            "chain_mux and ChainMux take such a pool (see docs/multiplexing.rst). Give a list of streams, "
            "for example list(streamer.iterate())"
        )
    if isinstance(pool, (str, bytes, dict)) or not isinstance(pool, Iterable):
        raise ParameterTypeError(
            f"{where}: expected a list of streams (Streams, Streamers, generator functions or collections); "
            f"got a {type(pool).__name__}"
        )
    members = []
    for position, member in enumerate(pool):
        try:
            members.append(stream(member))
        except PescadorError as exc:
            raise (ParameterTypeError if isinstance(exc, TypeError) else PescadorError)(f"{where}: pool member {position} (a {type(member).__name__}): {exc}") from None
    if not members and not allow_empty:
        raise ParameterError(f"{where}: the pool of streams is empty; give at least one stream")
    return tuple(members)


def _check_stats(stats: Any, where: str) -> Any:
    if not isinstance(stats, MuxStats):
        raise ParameterTypeError(f"{where}: stats must be a pescador.MuxStats; got a {type(stats).__name__}")
    return stats


class _Slot:
    """A live activation: the run of stream ``who``, which may give ``left`` more items of ``bound``
    (``bound == -1``: unbounded, ``left`` counts down below zero for ever)."""

    __slots__ = ("run", "left", "bound", "who")

    def __init__(self, run: Any, left: int, bound: int, who: int) -> None:
        self.run, self.left, self.bound, self.who = run, left, bound, who

    def given(self) -> int:
        """Items this activation has given."""
        return self.bound - self.left


class _Mux(Stage):
    """The engine of every mux kind: a run over a pool of streams, ``k`` of them live at once.

    Each kind is a small subclass: its constructor takes the kind's own
    parameters (as its Transform holds them) and :meth:`settings` maps them
    to the engine's:

    k : int  (slots)
    lam : float or None, dist : str  (activation lengths: see ``_lengths``)
    weights : tuple or None
    activation : "with" | "single" | "once"  (see the module docstring)
    order : "random" | "pool" | "pool-then-random"  (the order of "once" activations)
    choice : "uniform" | "weighted" | "rotate"  (the slot of each item)
    epochs : None or int  (how many times a "once" pool is run through)
    prune_empty : bool, random_state

    The state of a run: the epoch, whether it has given an item, the
    rotation, each slot (its stream, ``left``, ``bound`` and its run's
    state), the activation bookkeeping (pruned and dry streams, the queue of
    a pass, the tries of the weighted draws) and the random draws
    (:class:`_Draws`).  Whatever is derived (live counts, sum trees) is
    rebuilt on resume.
    """

    name = "mux"
    FIELDS = ("epoch", "produced", "rotation", "slots", "acts", "choice_tries", "draws")

    @classmethod
    def settings(cls, pool: tuple, params: dict) -> dict:  # pragma: no cover - each kind defines it
        raise NotImplementedError

    @classmethod
    def _params(cls, params: dict) -> dict:
        """The kind's parameters, defaults filled in (a Transform holds only those given)."""
        return {**_defaults(cls), **params}

    def _begin(self, pool: tuple, params: dict, stats: Any, state: Any) -> None:
        where = self.name
        _weights_fit(pool, params.get("weights"), where)
        s = self.settings(pool, self._params(params))
        self.pool, self.k, self.epochs, self.order = pool, s["k"], s["epochs"], s["order"]
        self.activation, self.lam, self.dist = s["activation"], s["lam"], s["dist"]
        self.random_state = random_state = s["random_state"]
        draws_matter = not (self.activation == "once" and self.order == "pool")
        seeds = run_seeds()  # (a resumable run's: random_state=None takes the next of them, which it records)
        self.seeded = isinstance(random_state, int) or not draws_matter or (random_state is None and seeds is not None)
        if tracking() and not self.seeded:
            raise _unseeded(where, random_state)
        self.start = starter()  # (members started later belong to the same kind of run)
        # members that are sources run as they are: the slot counts their items (their state is that count)
        self.counted = [getattr(member, "step", 0) is None for member in pool]
        worker = worker_info()
        # (round-robin and chain in pool order never draw: a fixed generator keeps their state small)
        rng = _rng(random_state, worker, seeds) if draws_matter else np.random.default_rng(0)
        self.draws = _Draws(rng, self.lam, self.dist)
        n = len(pool)
        base = np.ones(n) if s["weights"] is None else np.asarray(s["weights"], dtype=float)
        w = base.copy()
        if self.activation == "once" and worker.count > 1:  # shard the pool across workers
            mine = np.zeros(n, dtype=bool)
            mine[worker.id :: worker.count] = True
            w[~mine] = 0.0
        exclusive = self.activation == "single" or self.lam is None
        self.acts = _Activations(w, self.activation, exclusive, s["prune_empty"], self.draws)
        self.dry = self.acts.dry  # (the same set throughout)
        self.slots: list = []
        self.epoch, self.produced, self.rotation = 0, False, -1
        self.most = most_given() if state is not None else None  # (the most items this run can have given)
        self.share = _Share3x(self.acts.W) if self.dist == "3x-binomial" and self.lam is not None else None
        self.weighted = None
        if s["choice"] == "weighted":
            self.weighted = _SlotChoice(base.tolist(), self.activation == "with", self.acts, self.draws)
        # (the function, not a bound method: no reference cycle, so a dropped run frees its stats at once)
        self.choose = {"uniform": _Mux._uniform, "rotate": _Mux._rotating, "weighted": _Mux._weighted}[s["choice"]]
        self.uniforms = self.draws.uniforms if s["choice"] == "uniform" else None
        self.stats, self.token = stats, None
        if not n:
            self.epochs = 0  # (an empty pool: an empty run)
        if state is not None:
            self._restore(state)
        if stats is not None:
            self.token = stats._start(n, s["weights"], self.slots, where)

    # -- the three slot choices -------------------------------------------------------------------
    def _uniform(self, n: int) -> int:
        block = self.draws.uniforms
        return int((block.items or block.refill()).pop() * n)

    def _rotating(self, n: int) -> int:
        self.rotation = s = (self.rotation + 1) % n
        return s

    def _weighted(self, n: int) -> int:
        return self.weighted.pick(self.slots, n)

    # -- the run ----------------------------------------------------------------------------------
    def __next__(self) -> Any:
        slots, uniforms = self.slots, self.uniforms
        while True:
            n = len(slots)
            if not n:  # the end of a pass (or the start of the run)
                self._next_epoch()
                continue
            if uniforms is not None:  # (the uniform choice, inlined: the most common)
                s = int((uniforms.items or uniforms.refill()).pop() * n)
            else:
                s = self.choose(self, n)
            slot = slots[s]
            try:
                item = next(slot.run)
            except StopIteration:
                self._release(s, slot, slot.bound == slot.left)
                continue
            self.produced = True
            if self.dry:
                self.acts.wet()
            slot.left -= 1
            if not slot.left:
                self._release(s, slot, False)
            return item

    def _next_epoch(self) -> None:
        """Start the next pass, or raise StopIteration: nothing more can be activated, or a pass gave
        nothing, or the passes are done."""
        if self.epoch and (not self.produced or self.activation != "once") or (
            self.epochs is not None and self.epoch >= self.epochs
        ):
            self._finish()
            raise StopIteration
        # (an endless run counts to 2 only: all that matters then is whether this is the first pass)
        self.epoch = self.epoch + 1 if self.epochs is not None else min(self.epoch + 1, 2)
        self.produced, self.rotation = False, -1
        self.acts.start_epoch(self.order, self.epoch == 1)
        self._refill()

    def _refill(self) -> None:
        """Fill the free slots with new activations (as many as can be activated)."""
        slots, acts, draws, share, pool, start = self.slots, self.acts, self.draws, self.share, self.pool, self.start
        counted = self.counted
        ahead = self.k - len(slots)
        while ahead:
            i = acts.next()
            if i is None:
                break
            ahead -= 1
            if share is None:
                length = draws.length()  # (at least 1)
            else:
                length = draws.length(share.p(i, ahead))
                share.live += share.W[i]
            member = pool[i]
            slots.append(_Slot(iter(member) if counted[i] else start(member), length, length, i))
            acts.started(i)
            if self.weighted is not None:
                self.weighted.filled(slots, len(slots) - 1)
            if self.stats is not None:
                self.stats._activated(slots[-1], slots)

    def _release(self, s: int, slot: _Slot, gave_nothing: bool) -> None:
        """Slot ``s`` is done (its run ended, or it reached its bound): free it and refill."""
        i = slot.who
        self.acts.stopped(i, gave_nothing)
        if self.share is not None:
            self.share.live -= self.share.W[i]
        if self.stats is not None:
            self.stats._released(slot)
        slots = self.slots
        if self.choose is _Mux._rotating:
            del slots[s]
            self.rotation = s - 1
        else:
            last = slots.pop()
            if s < len(slots):
                slots[s] = last
            if self.weighted is not None:
                self.weighted.released(slots, s, i)
        self._refill()

    def _finish(self) -> None:
        if self.token is not None:
            self.stats._stop(self.token)
            self.token = None

    def close(self) -> None:
        """End the run early: close the live runs (their ``finally`` runs) and free the stats."""
        for slot in self.slots:
            close = getattr(slot.run, "close", None)
            if close is not None:
                close()
        self._finish()

    # -- where the run is -------------------------------------------------------------------------
    def state(self) -> dict:
        if not self.seeded:
            raise _unseeded(self.name, self.random_state)
        return {
            "epoch": self.epoch,
            "produced": self.produced,
            "rotation": self.rotation,
            "slots": [[slot.who, slot.left, slot.bound, self._member_state(slot)] for slot in self.slots],
            "acts": self.acts.state(),
            "choice_tries": 8 if self.weighted is None else self.weighted.tries,
            "draws": self.draws.state(),
        }

    def _member_state(self, slot: _Slot) -> Any:
        """The state of a slot's run: a source's is the count of items it gave (the slot's count)."""
        if not self.counted[slot.who]:
            return slot.run.state()
        fn = self.pool[slot.who].fn
        if getattr(fn, "pescador_resumes", True) is False:
            raise PescadorError(f"resumable: {self.pool[slot.who]!r} cannot be resumed: {getattr(fn, 'pescador_why_not', '')}")
        return {"pos": slot.given()}

    def _restore(self, state: Any) -> None:
        """Take up a saved state, every field checked against the recipe."""
        where = self.name
        fields = check_fields(state, self.FIELDS, where)
        self.epoch = check_int(fields, "epoch", where, 0, 2 if self.epochs is None else self.epochs)
        self.produced = check_bool(fields, "produced", where)
        entries = check_list(fields, "slots", where, most=self.k if self.epoch else 0)
        specs = [self._slot_spec(entry, where) for entry in entries]
        who = [spec[0] for spec in specs]
        if self.activation != "with" and len(set(who)) != len(who):
            raise PescadorError(f"resumable: the state of {where}: field 'slots' holds two live runs of one "
                                f"stream ({who}); this mux keeps at most one")
        high = max(-1, len(specs) - 1) if self.choose is _Mux._rotating else -1  # (-1: before the first slot)
        self.rotation = check_int(fields, "rotation", where, -1, high)
        self.acts.restore(check_fields(fields["acts"], ("pruned", "dry", "queue", "tries"), where + " (acts)"), who,
                          self.epoch, self.order, where)
        pruned = self.acts.w <= 0
        if self.activation != "with" and any(pruned[i] for i in who):
            raise PescadorError(f"resumable: the state of {where}: field 'slots' holds a pruned stream")
        if self.epoch == 0 and self.produced:
            raise PescadorError(f"resumable: the state of {where}: a run at epoch 0 has given nothing yet; "
                                "expected produced false")
        tries = _check_tries(fields, "choice_tries", where)
        if self.weighted is not None:
            self.weighted.tries = tries
        elif tries != 8:
            raise PescadorError(f"resumable: the state of {where}: field 'choice_tries' must be 8 (this mux "
                                f"picks no slot by weight); got {tries}")
        if any(bound - left > 0 for _, left, bound, _ in specs) and not self.produced:
            raise PescadorError(f"resumable: the state of {where}: field 'produced' must be true: a live slot has "
                                "given items in this pass")
        if self.epoch and len(specs) < self.k and self.acts.could_fill():
            raise PescadorError(f"resumable: the state of {where}: field 'slots' holds {len(specs)} of {self.k} "
                                "slots while a stream could fill another (a refill would have taken it)")
        self.draws.restore(fields["draws"], where + " (draws)")
        for i, left, bound, member in specs:
            run = self.start(self.pool[i], member, bound - left)  # (its run has given what the slot says)
            self.slots.append(_Slot(run, left, bound, i))
        if self.share is not None:
            self.share.live = sum(self.share.W[i] for i in who)
        if self.weighted is not None:
            self.weighted.rebuild(self.slots)

    def _slot_spec(self, entry: Any, where: str) -> tuple:
        """A slot of a state, ``[who, left, bound, state of its run]``, checked."""
        if not (isinstance(entry, list) and len(entry) == 4):
            raise PescadorError(f"resumable: the state of {where}: each entry of field 'slots' must be "
                                f"[stream, left, bound, state]; got {entry!r:.80}")
        named = dict(zip(("who", "left", "bound", "run"), entry))
        i = check_int(named, "who", where + " (slot)", 0, len(self.pool) - 1)
        if self.acts.base[i] <= 0:
            raise PescadorError(f"resumable: the state of {where}: a slot holds stream {i}, which this mux "
                                "never activates (its weight is zero, or it is another worker's)")
        if self.lam is None:  # (left counts down from -1: the run has given -1 - left items, at most self.most)
            bound = check_int(named, "bound", where + " (slot)", -1, -1)
            left = check_int(named, "left", where + " (slot)", None if self.most is None else -1 - self.most, -1)
        else:
            bound = check_int(named, "bound", where + " (slot)", 1, _longest(self.lam, self.dist))
            left = check_int(named, "left", where + " (slot)", 1 if self.most is None else max(1, bound - self.most),
                             bound)
        member = self.pool[i]
        given = bound - left
        if getattr(member, "step", 0) is None:  # (a source counts its items)
            if named["run"] != {"pos": given}:
                raise PescadorError(f"resumable: the state of {where}: the run of stream {i} has given {given} "
                                    f"items (bound - left); its state must be {{'pos': {given}}}; got {named['run']!r:.80}")
        elif not isinstance(named["run"], dict):  # (null would start the stage's run again, silently)
            raise PescadorError(f"resumable: the state of {where}: the run of stream {i} is a stage's run; its "
                                f"state (the slot's last entry) must be that stage's state (a dict); got "
                                f"{named['run']!r:.80}")
        return i, left, bound, named["run"]


def _unseeded(where: str, random_state: Any) -> PescadorError:
    if random_state is None:
        return PescadorError(
            f"resumable: {where} has random_state=None and this run was not started as a resumable run, so the "
            "seed it drew is not recorded; run the recipe with pescador.resumable(recipe) to checkpoint it"
        )
    return PescadorError(
        f"resumable: {where} has a random_state {type(random_state).__name__}, whose draws are not part of the "
        "state: its run could not be reproduced on resume; give an int random_state, or None (a resumable run "
        "then records the seed it draws)"
    )


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
        raise ParameterError(f"{where}: weights has {len(weights)} entries for a pool of {len(pool)} streams")




# ----------------------------------------------------------------------------
# The kinds: each a small subclass of the engine, with its own facts
# ----------------------------------------------------------------------------


def _drawn(k: int, lam: float | None, weights: tuple | None, activation: str, prune_empty: bool, random_state: Any,
           dist: str) -> dict:
    """The settings of the kinds that draw each activation (mux, stochastic_mux)."""
    uniform = activation == "with" and lam is not None or weights is None
    return dict(k=k, lam=lam, weights=weights, activation=activation, order="random",
                choice="uniform" if uniform else "weighted", epochs=1, prune_empty=prune_empty,
                random_state=random_state, dist=dist)


def _passes(k: int, order: str, choice: str, epochs: int | None, random_state: Any) -> dict:
    """The settings of the kinds that run each stream once per pass (round-robin, chain, epochs)."""
    return dict(k=k, lam=None, weights=None, activation="once", order=order, choice=choice, epochs=epochs,
                prune_empty=True, random_state=random_state, dist="poisson")


class _PlainMux(_Mux):
    """A run of :func:`mux`."""

    name = "mux"

    def __init__(self, pool: tuple, k: int, lam: float | None = 256.0, weights: tuple | None = None,
                 with_replacement: bool = True, prune_empty: bool = True, revive: bool = False,
                 random_state: Any = None, dist: str = "poisson", stats: Any = None, state: Any = None) -> None:
        params = dict(k=k, lam=lam, weights=weights, with_replacement=with_replacement, prune_empty=prune_empty,
                      revive=revive, random_state=random_state, dist=dist)
        self._begin(pool, params, stats, state)

    @classmethod
    def settings(cls, pool: tuple, p: dict) -> dict:
        activation = "with" if p["with_replacement"] else ("single" if p["revive"] else "once")
        return _drawn(p["k"], p["lam"], p["weights"], activation, p["prune_empty"], p["random_state"], p["dist"])

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable) -> float | None:
        p = cls._params(params)
        once = p["lam"] is None and not p["with_replacement"] and not p["revive"]
        return pool_length(upstream, p["weights"], length) if once else None


_STOCHASTIC_ACTIVATIONS = {"with_replacement": "with", "single_active": "single", "exhaustive": "once"}


class _StochasticMux(_Mux):
    """A run of :func:`stochastic_mux` (the lengths as pescador 3.x drew them)."""

    name = "stochastic_mux"

    def __init__(self, pool: tuple, n_active: int, rate: float | None = 256.0, weights: tuple | None = None,
                 mode: str = "with_replacement", prune_empty_streams: bool = True, dist: str = "binomial",
                 random_state: Any = None, stats: Any = None, state: Any = None) -> None:
        params = dict(n_active=n_active, rate=rate, weights=weights, mode=mode,
                      prune_empty_streams=prune_empty_streams, dist=dist, random_state=random_state)
        self._begin(pool, params, stats, state)

    @classmethod
    def settings(cls, pool: tuple, p: dict) -> dict:
        return _drawn(p["n_active"], p["rate"], p["weights"], _STOCHASTIC_ACTIVATIONS[p["mode"]],
                      p["prune_empty_streams"], p["random_state"], "3x-" + p["dist"])

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable) -> float | None:
        p = cls._params(params)
        once = p["rate"] is None and p["mode"] == "exhaustive"
        return pool_length(upstream, p["weights"], length) if once else None


class _ShuffledMux(_Mux):
    """A run of :func:`shuffled_mux`: every stream live, each item from a stream drawn by weight."""

    name = "shuffled_mux"

    def __init__(self, pool: tuple, weights: tuple | None = None, random_state: Any = None, stats: Any = None,
                 state: Any = None) -> None:
        self._begin(pool, dict(weights=weights, random_state=random_state), stats, state)

    @classmethod
    def settings(cls, pool: tuple, p: dict) -> dict:
        return dict(k=len(pool), lam=None, weights=p["weights"], activation="single", order="random",
                    choice="uniform" if p["weights"] is None else "weighted", epochs=1, prune_empty=True,
                    random_state=p["random_state"], dist="poisson")


class _RoundRobinMux(_Mux):
    """A run of :func:`round_robin_mux`: one item from each stream in turn."""

    name = "round_robin_mux"

    def __init__(self, pool: tuple, mode: str = "exhaustive", random_state: Any = None, stats: Any = None,
                 state: Any = None) -> None:
        self._begin(pool, dict(mode=mode, random_state=random_state), stats, state)

    @classmethod
    def settings(cls, pool: tuple, p: dict) -> dict:
        order = "pool-then-random" if p["mode"] == "permuted_cycle" else "pool"  # (3.x: the first pass in order)
        return _passes(max(1, len(pool)), order, "rotate", 1 if p["mode"] == "exhaustive" else None,
                       p["random_state"])

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable) -> float | None:
        once = cls._params(params)["mode"] == "exhaustive"
        return pool_length(upstream, None, length) if once else None


class _ChainMux(_Mux):
    """A run of :func:`chain_mux` over a list of streams (over a pool produced at run time: a
    :class:`_LazyChain`)."""

    name = "chain_mux"

    def __new__(cls, pool: Any, mode: str = "exhaustive", random_state: Any = None, stats: Any = None,
                state: Any = None) -> Any:
        if isinstance(pool, Stream):  # (a pool produced at run time: its own stage)
            return _LazyChain(pool, mode, random_state, stats, state)
        return super().__new__(cls)

    def __init__(self, pool: tuple, mode: str = "exhaustive", random_state: Any = None, stats: Any = None,
                 state: Any = None) -> None:
        self._begin(pool, dict(mode=mode, random_state=random_state), stats, state)

    @classmethod
    def settings(cls, pool: tuple, p: dict) -> dict:
        if p["mode"] == "with_replacement":
            return dict(k=1, lam=None, weights=None, activation="with", order="random", choice="uniform", epochs=1,
                        prune_empty=True, random_state=p["random_state"], dist="poisson")
        return _passes(1, "pool", "rotate", 1 if p["mode"] == "exhaustive" else None, p["random_state"])

    @classmethod
    def run_length(cls, upstream: Any, params: dict, length: Callable) -> float | None:
        if isinstance(upstream, Stream):  # (a pool produced at run time)
            return None
        once = cls._params(params)["mode"] == "exhaustive"
        return pool_length(upstream, None, length) if once else None


class _Replayed(Stage):
    """A live iterator that a run of a pool makes afresh: resumed by drawing and dropping the items
    it had given."""

    def __init__(self, it: Iterator, state: Any, where: str, most: int | None = None) -> None:
        self.it, self.pos = it, 0
        if state is None:
            return
        self.pos = replay(it, check_int(check_fields(state, ("pos",), where), "pos", where, 0, most), where)

    def __next__(self) -> Any:
        item = next(self.it)
        self.pos += 1
        return item

    def state(self) -> dict:
        return {"pos": self.pos}


class _LazyChain(Stage):
    """chain_mux over a pool produced at run time: each stream the pool yields, to its end, in turn.

    ``"cycle"`` runs the pool again when it ends (for ever; a pass that gives
    nothing ends the run).  In a worker, stream ``i`` of each pass is this
    worker's when ``i % count == id``, as a listed pool is sharded.  The
    state holds the pool's state *before* the current stream was drawn, so
    a resume draws that stream again and continues it.
    """

    FIELDS = ("index", "pool", "member", "produced", "finished")
    where = "chain_mux (over a pool produced at run time)"

    def __init__(self, pool: Stream, mode: str = "exhaustive", random_state: Any = None, stats: Any = None,
                 state: Any = None) -> None:
        self.source, self.mode, self.worker = pool, mode, worker_info()
        self.start = starter()
        self.tracked = tracking() or state is not None  # (a plain run's pool has no state to keep)
        self.index, self.produced, self.finished = -1, False, False
        self.member: Any = None
        self.before: Any = None  # (the pool's state before its current stream was drawn)
        if state is None:
            self.up = self.start(pool)
            return
        where, most = self.where, most_given()
        fields = check_fields(state, self.FIELDS, where)
        self.index = check_int(fields, "index", where, -1)
        self.produced = check_bool(fields, "produced", where)
        self.finished = check_bool(fields, "finished", where)
        live = fields["member"] is not None
        if getattr(pool, "step", 0) is None and fields["pool"] != {"pos": self.index + (not live)}:
            raise PescadorError(f"resumable: the state of {where}: the pool's state must be "
                                f"{{'pos': {self.index + (not live)}}} at stream {self.index}; got {fields['pool']!r:.80}")
        self.up = self.start(pool, fields["pool"], self.index + (not live))  # (the streams drawn this pass)
        if not live:
            return
        if self.finished or self.index < 0 or self.index % self.worker.count != self.worker.id:
            raise PescadorError(f"resumable: the state of {where}: a live stream at index {self.index} does not "
                                "fit (the run is finished, or the stream is not this worker's)")
        self.before = fields["pool"]
        try:
            member = next(self.up)
        except StopIteration:
            raise PescadorError(f"resumable: the state of {where}: the pool ended before stream {self.index}") from None
        self.member = self._member(member, fields["member"], most)

    def _member(self, member: Any, state: Any, most: int | None = None) -> Any:
        if isinstance(member, Iterator):
            return _Replayed(member, state, f"chain_mux: stream {self.index} of the pool (a live iterator)", most)
        try:
            source = stream(member)
        except PescadorError as exc:
            raise PescadorError(f"chain_mux: stream {self.index} of the pool (a {type(member).__name__}): {exc}") from None
        return self.start(source, state, most)

    def __next__(self) -> Any:
        while not self.finished:
            if self.member is not None:
                try:
                    item = next(self.member)
                except StopIteration:
                    self.member = None
                    continue
                self.produced = True
                return item
            before = None
            if self.tracked:
                try:
                    before = self.up.state()
                except PescadorError as exc:  # (a pool that cannot say where it is: so cannot this chain)
                    before = exc
            try:
                member = next(self.up)
            except StopIteration:
                if self.mode == "exhaustive" or not self.produced:
                    self.finished = True
                    break
                self.up, self.index, self.produced = self.start(self.source), -1, False
                continue
            self.index += 1
            if self.index % self.worker.count == self.worker.id:
                self.before = before
                self.member = self._member(member, None)
        raise StopIteration

    def state(self) -> dict:
        if self.member is None:  # (between streams: the pool as it is now)
            pool = self.up.state()
        elif isinstance(self.before, PescadorError):
            raise self.before
        else:
            pool = self.before
        return {"index": self.index, "pool": pool, "member": None if self.member is None else self.member.state(),
                "produced": self.produced, "finished": self.finished}


# ----------------------------------------------------------------------------
# The public combinators
# ----------------------------------------------------------------------------


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
) -> PoolTransform:
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
    return PoolTransform("mux", _PlainMux, params, coerce=_PoolOf(where, params["weights"]))


_STOCHASTIC_MODES = ("with_replacement", "single_active", "exhaustive")


def stochastic_mux(
    n_active: int,
    rate: float | None = 256.0,
    weights: Any = None,
    mode: str = "with_replacement",
    prune_empty_streams: bool = True,
    dist: str = "binomial",
    random_state: Any = None,
    stats: Any = None,
) -> PoolTransform:
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
    return PoolTransform("stochastic_mux", _StochasticMux, params, coerce=_PoolOf(where, params["weights"]))


def shuffled_mux(weights: Any = None, random_state: Any = None, stats: Any = None) -> PoolTransform:
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
    return PoolTransform("shuffled_mux", _ShuffledMux, params, coerce=_PoolOf(where, params["weights"]))


_ROUND_ROBIN_MODES = ("exhaustive", "cycle", "permuted_cycle")


def round_robin_mux(mode: str = "exhaustive", random_state: Any = None, stats: Any = None) -> PoolTransform:
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
    return PoolTransform("round_robin_mux", _RoundRobinMux, params, coerce=_PoolOf(where))


_CHAIN_MODES = ("exhaustive", "cycle", "with_replacement")


def chain_mux(mode: str = "exhaustive", random_state: Any = None, stats: Any = None) -> PoolTransform:
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
    return PoolTransform("chain_mux", _ChainMux, params, coerce=_PoolOf(where, lazy=lazy, allow_empty=True))


# ----------------------------------------------------------------------------
# pescador.mux is both this module and the pipe-style function
# ----------------------------------------------------------------------------

# (``pescador.mux.Mux`` and the other class facades live in :mod:`pescador.streamer`, which puts them
# here when it is imported: this module does not import the facade, not even lazily)


def _call(self: Any, k: int, lam: float | None = 256.0, *, weights: Any = None, with_replacement: bool = True,
          prune_empty: bool = True, revive: bool = False, random_state: Any = None, dist: str = "poisson",
          stats: Any = None) -> PoolTransform:
    return mux(k, lam, weights=weights, with_replacement=with_replacement, prune_empty=prune_empty, revive=revive,
               random_state=random_state, dist=dist, stats=stats)


_call.__doc__ = mux.__doc__


class _CallableModule(types.ModuleType):
    """Lets ``pescador.mux(k=3, lam=64)`` call :func:`mux` while
    ``pescador.mux.Mux`` and ``from pescador.mux import ...`` keep working.

    ``help(pescador.mux)`` begins with mux's documentation, completion
    (``dir``) lists the public names, and a call that does not fit mux's
    signature says how it reads, naming ``mux``.
    """

    @property
    def __signature__(self) -> Any:  # what inspect.signature(pescador.mux) and IDEs show
        import inspect

        return inspect.signature(mux)

    __call__ = _spelled(_call, "mux", "pescador.mux(k=3, lam=64)")

    def __dir__(self) -> list[str]:
        """The public names (and the 3.x classes the facade puts here), not what the module imports."""
        names = vars(self)
        facades = {name for name, value in names.items() if getattr(value, "__module__", "") == "pescador.streamer"}
        return sorted(set(__all__) | facades | {name for name in names if name.startswith("__")})


def _module_doc(doc: str | None) -> str | None:
    """``help(pescador.mux)`` begins with mux's signature and documentation, then this module's docstring."""
    import inspect

    if not doc or not mux.__doc__:  # (python -OO)
        return doc
    sig = inspect.signature(mux)
    plain = sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                        return_annotation=sig.empty)
    returns = f" -> {sig.return_annotation}" if isinstance(sig.return_annotation, str) else ""
    return f"mux{plain}{returns}\n\n{inspect.cleandoc(mux.__doc__)}\n\n{_MODULE_MARK}\n\n{doc}"


_MODULE_MARK = "The module pescador.mux:"  # (where the module's own text begins: docs/conf.py shows only that)
__doc__ = _module_doc(__doc__)
sys.modules[__name__].__class__ = _CallableModule
