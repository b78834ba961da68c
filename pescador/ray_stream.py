"""``ray_offload``: run a stream's shares on Ray actors, with exactly-once failover.

A run of an offloaded stream starts ``workers`` Ray actors, placed by Ray
(``resources`` chooses CPUs, custom resources, node labels).  Actor ``w``
runs share ``w`` of the recipe: it sets :func:`pescador.worker_info` to
worker ``w`` of ``workers`` (on the consumer's training rank), so sources
and exhaustive muxes shard exactly as under ``zmq_offload``.  Each actor
sends its items in chunks through a Ray streaming generator; the consumer
holds the chunk of each share that it is handing out and takes one item in
turn from each share that has one ready, so the shares take turns item by
item whatever the consumer's speed, as ``zmq_offload``'s workers do.

Importing this module does not import Ray (which takes seconds): the first
run does, and connects to the Ray cluster this process is connected to
(``ray.init(address=...)``), or to the one ``RAY_ADDRESS`` names, or to the
one ``ray start`` runs on this machine, or starts a local one, saying which
in a log line (logger ``"pescador"``).  Ray Client (``ray://`` addresses)
is refused with a :class:`~pescador.PescadorError`: the chunks stream from
the actors to the consumer, which Ray Client does not carry; so is a run in
a PyTorch DataLoader worker, where Ray cannot run.

How items travel (and why)
--------------------------
A Ray object costs a few hundred microseconds, whatever its size, so items
travel in chunks.  In each actor a thread runs the share into a bounded
buffer (at most ``chunk`` items and about ``chunk_bytes`` bytes of arrays),
and the actor ships what it holds as one chunk when the chunk is full, or
``linger`` seconds after its first item, even while the source is busy with
the next one.  Chunks go through a Ray streaming generator (one actor task
for the whole share).  ``python -m benchmarks ray`` measures it against one
actor method call per chunk (four in flight) and against chunks the actor
``ray.put``s into the object store: on a loaded 2-core machine the three were
within the run-to-run noise of each other for chunks of small items (80,000
to 130,000 items/s) and for 4 MiB items (210 to 290 items/s), and one item
per object gave about 2,000 objects/s; the streaming generator was kept for
its built-in backpressure and its single task per share.  In a chunk, runs
of small items of one layout (those that share a message under
``zmq_offload``: at most 16 KiB of data each) travel stacked, one array per
key, in ``zmq_offload``'s message format (:mod:`pescador.wire`), so that Ray
carries a few buffers instead of pickling every item (pickling a small
dict cost Ray's serialiser about 18 microseconds; stacked, about 2), and
the consumer rebuilds them as ``zmq_offload``'s consumer does: each item's
arrays are copies of its own (writeable).  Other items are serialised by
Ray once, into its object store; the consumer receives their arrays as
read-only views of the store (``copy=True``: writeable copies).

Backpressure: at most ``hwm`` chunks of each actor wait unconsumed (Ray's
generator backpressure); an actor that gets ahead blocks.  So at most
``hwm + 2`` chunks of a share are in flight (``hwm`` waiting in Ray, one
filling in the actor, one in the consumer's hands), and the item its source
made next: ``(hwm + 2) * chunk + 1`` items, about ``(hwm + 2) *
chunk_bytes`` bytes (a chunk ships once it holds ``chunk_bytes``, so it
may pass that by its last item).  Every item counts its bytes: arrays,
numpy scalars, bytes and strings, inside dicts, tuples and lists.

Failover (exactly once)
-----------------------
With its items an actor sends, now and then, its share's state after one of
them (:mod:`pescador.stage`): after the item that fills a chunk, and after
the first item of a chunk shipped by ``linger``.  When an actor, its process
or its node dies, the consumer yields every item it has received, starts a
new actor for the share from the latest state it received, which drops the
items delivered after that state (at most one chunk's), and warns
(:class:`FailoverWarning`) naming the share and the cause: nothing is lost
and nothing is produced twice, provided the share produces the same items
again from a state, as resumable runs require: its seed is the same on the
new actor, and its stages that have no seed of their own (a mux with
``random_state=None``) take theirs from it, the how-many-th recorded in the
share's state (:func:`pescador.stage.start_share`), so plain recipes run
here as under ``zmq_offload``.  A share whose stages cannot say where they are (a stage
written as a plain generator function) restarts from its start and drops
every item it delivered.  A share that fails ``max_restarts + 1`` times ends
the run with :class:`~pescador.PescadorError`.

A worker's exception ends the run: it is raised in the consumer, after the
items the worker yielded before it, as ``zmq_offload`` raises it: of the
original type where it can be rebuilt, with a :class:`~pescador.WorkerError`
holding the worker's traceback as its ``__cause__``, else as that
``WorkerError``.

Early stop (``break``, garbage collection, ``KeyboardInterrupt``, an
exception) kills every actor of the run at once (``ray.kill``): a source's
``finally`` blocks do not run in the actors.  When the consumer's process
dies, Ray ends the actors it owned.  An actor that Ray cannot place within
``placement_timeout`` seconds, at the start or after a failover, ends the
run with a :class:`~pescador.PescadorError` naming the resources asked and
available, whatever the other shares deliver meanwhile.

Resumable runs
--------------
In a resumable run (:func:`pescador.resumable`) each actor also sends its
state after each item, and the stage's state is, for each share, its state
after the last item delivered (the same form as ``zmq_offload``'s:
``{"workers": [...]}``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _pickling, wire
from .core import ItemTransform, Transform
from .exceptions import ParameterError, ParameterTypeError, PescadorError
from .stage import Offloaded, start_share
from .stage import delivered as _delivered  # (ray's _receive has a parameter of that name)
from .workers import WorkerInfo, compose, rank_info, set_worker_info, worker_info

__all__ = ["ray_offload", "FailoverWarning"]

log = logging.getLogger("pescador")

# Options of an actor that the run sets itself (a user's value would break failover or leak actors).
_RESERVED = ("max_restarts", "max_task_retries", "lifetime", "name", "namespace", "get_if_exists",
             "max_concurrency", "concurrency_groups", "num_returns")
_POLL = 0.5  # seconds between the consumer's checks for actors that were never placed
_LOOK_EVERY = 0.001  # seconds between looks at the shares that hold no item, while others' items are handed out

# The messages an actor sends (the first field of each)
_STARTED, _ITEMS, _END, _ERROR = 0, 1, 2, 3


class FailoverWarning(RuntimeWarning):
    """A share of a ``ray_offload`` run restarted on a new actor (the message says which, and why)."""


# ----------------------------------------------------------------------------
# The combinator
# ----------------------------------------------------------------------------


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    integral = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if not integral or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        kind = ParameterError if integral else ParameterTypeError
        raise kind(f"ray_offload: {name} must be an integer {bound}; got {value!r}")
    return int(value)


def _check_seconds(value: Any, name: str, none: bool) -> float | None:
    if value is None and none:
        return None
    real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not real or not 0 <= value < float("inf"):
        also = "None or " if none else ""
        kind = ParameterError if real else ParameterTypeError
        raise kind(f"ray_offload: {name} must be {also}a (finite) number of seconds >= 0; got {value!r}")
    return float(value)


def _check_resources(resources: Any) -> dict | None:
    if resources is None:
        return None
    if not isinstance(resources, dict) or not all(isinstance(k, str) for k in resources):
        raise ParameterTypeError(
            "ray_offload: resources must be None or a dict of Ray actor options, such as "
            f"{{'num_cpus': 1, 'resources': {{'decoder': 1}}}}; got {resources!r}"
        )
    reserved = sorted(set(resources) & set(_RESERVED))
    if reserved:
        raise ParameterError(
            f"ray_offload: resources may not set {reserved}: the run sets them itself (failover is "
            "max_restarts=..., and actors live as long as the run)"
        )
    return dict(resources)


def ray_offload(
    *,
    workers: int = 1,
    resources: dict | None = None,
    max_restarts: int = 3,
    hwm: int = 4,
    chunk: int = 256,
    chunk_bytes: int = 1 << 20,
    linger: float = 0.05,
    copy: bool = False,
    random_state: int | None = None,
    placement_timeout: float | None = 300.0,
) -> ItemTransform:
    """Produce a stream's items on Ray actors, with exactly-once failover.

    Curried and data-last, like :func:`pescador.zmq_offload`:
    ``ray_offload(workers=8)`` is a :class:`~pescador.Transform`.  Nothing
    starts (and Ray is not imported) until the result is iterated; each run
    starts fresh actors and kills them when it ends.  Needs the ``ray``
    extra (``pip install 'pescador[ray]'``).

    Parameters
    ----------
    workers : int >= 1
        Number of actors; actor ``w`` runs share ``w`` of the recipe, with
        its own :func:`pescador.worker_info` (sources and exhaustive muxes
        shard by it, across training ranks too).  Each share's items arrive
        in order; the shares with items ready take turns, item by item.
    resources : None or dict
        Ray actor options, passed to ``.options(...)`` of each actor:
        ``{"num_cpus": 2}``, ``{"resources": {"decoder": 1}}``,
        ``{"label_selector": {...}}``, ``{"scheduling_strategy": ...}``,
        ``{"runtime_env": {...}}``.  None: Ray's defaults (one CPU each).
    max_restarts : int >= 0
        How many times one share may restart on a new actor after its
        actor (or node) died; one more death raises
        :class:`~pescador.PescadorError`.
    hwm : int >= 1
        How many chunks of each actor may wait unconsumed before it blocks
        (so at most ``hwm + 2`` chunks of a share are in flight: one is
        filling in the actor, one is being handed out).
    chunk : int >= 1
        The most items in one chunk (one Ray object).
    chunk_bytes : int >= 1
        A chunk is shipped once its items hold this many bytes (arrays,
        bytes and strings, inside dicts, tuples and lists too).
    linger : float >= 0
        Seconds a chunk's first item may wait for more before the chunk is
        shipped (checked before each item is asked from the source).
    copy : bool
        False: the arrays of large items arrive as read-only views of Ray's
        object store (those of small items, which travel stacked, as
        copies of their own); True: every array as a writeable array that
        owns its memory (inside dicts, tuples and lists too).
    random_state : None or int
        The entropy from which the shares' seeds are spawned; an int makes
        every run start its shares with the same seeds.
    placement_timeout : None or float
        Seconds to wait for an actor to start (Ray places it where the
        resources are), at the start and after a failover, before raising
        :class:`~pescador.PescadorError`, whatever the other shares deliver
        meanwhile; None waits for ever (an autoscaling cluster).

    Examples
    --------
    >>> import pescador
    >>> pescador.ray_offload(workers=4, resources={"num_cpus": 1})
    ray_offload(workers=4, resources={'num_cpus': 1})
    """
    config = _Config(
        workers=_check_int(workers, "workers", 1, 1024),
        resources=_check_resources(resources),
        max_restarts=_check_int(max_restarts, "max_restarts", 0),
        hwm=_check_int(hwm, "hwm", 1),
        chunk=_check_int(chunk, "chunk", 1),
        chunk_bytes=_check_int(chunk_bytes, "chunk_bytes", 1),
        linger=_check_seconds(linger, "linger", none=False),
        copy=_check_bool(copy, "copy"),
        random_state=None if random_state is None else _check_int(random_state, "random_state", 0),
        placement_timeout=_check_seconds(placement_timeout, "placement_timeout", none=True),
    )
    return Transform("ray_offload", _RayOffload, config.params())


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"ray_offload: {name} must be True or False; got {value!r}")
    return bool(value)


@dataclasses.dataclass(frozen=True)
class _Config:
    """The options of a :func:`ray_offload` (validated there); the recipe holds those not at their defaults."""

    workers: int = 1
    resources: dict | None = None
    max_restarts: int = 3
    hwm: int = 4
    chunk: int = 256
    chunk_bytes: int = 1 << 20
    linger: float = 0.05
    copy: bool = False
    random_state: int | None = None
    placement_timeout: float | None = 300.0

    def params(self) -> dict:
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default
        }


# ----------------------------------------------------------------------------
# Ray, on first use
# ----------------------------------------------------------------------------

_CONNECT = threading.Lock()


def _ray() -> Any:
    """Ray, connected: the cluster this process connected to, else ``RAY_ADDRESS``'s, else the one ``ray
    start`` runs on this machine, else a new local one (a log line says which)."""
    try:
        import ray
    except ImportError:
        raise PescadorError(
            "ray_offload needs Ray, which is not installed: pip install 'pescador[ray]'"
        ) from None
    with _CONNECT:
        if _client(ray):
            raise PescadorError(_NO_CLIENT.format(how="this process is connected to Ray through Ray Client"))
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            if address is not None and address.startswith("ray://"):
                raise PescadorError(_NO_CLIENT.format(how=f"RAY_ADDRESS={address} is a Ray Client address"))
            joins = _running_cluster(address)
            ray.init()
            if address is not None:
                log.info("ray_offload: connected to the Ray cluster at RAY_ADDRESS=%s", address)
            elif joins is not None:
                log.info(
                    "ray_offload: this process was not connected to Ray, so it joined the Ray cluster running on "
                    "this machine at %s (started by `ray start`); to use another, call ray.init(address=...) "
                    "first or set RAY_ADDRESS", joins,
                )
            else:
                log.info(
                    "ray_offload: this process was not connected to Ray, so it started a local Ray instance "
                    "(to use a cluster, call ray.init(address=...) first or set RAY_ADDRESS)"
                )
    return ray


_NO_CLIENT = (
    "ray_offload: {how} (a ray:// address), which ray_offload does not support: it streams each share's "
    "chunks from actors to the consumer, which Ray Client does not carry.  Run the training script on the "
    "cluster itself (on a node, or with `ray job submit`), connected with ray.init(address='auto') or "
    "RAY_ADDRESS=HOST:6379"
)


def _client(ray: Any) -> bool:
    """Whether this process talks to Ray through Ray Client (``ray.init("ray://...")``)."""
    try:
        from ray.util.client import ray as client
    except ImportError:  # (a Ray without the client)
        return False
    return bool(client.is_connected())


def _running_cluster(address: str | None) -> str | None:
    """The address of the cluster ``ray.init()`` will join on this machine (one that ``ray start`` runs),
    or None where it will start a new local instance (or that cannot be told)."""
    if address is not None:
        return None
    try:  # (how ray.init finds it; a private helper of Ray: where it moved, the log line says "started")
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(None)
    except Exception:
        return None


def _in_a_dataloader_worker() -> bool:
    """Whether this process is a PyTorch DataLoader worker (torch imported, and it says so)."""
    data = sys.modules.get("torch.utils.data")
    get = getattr(data, "get_worker_info", None)
    return get is not None and get() is not None


_ACTOR: list = []  # the Ray actor class, made once


def _actor_class(ray: Any) -> Any:
    if not _ACTOR:
        _ACTOR.append(ray.remote(_Share))
    return _ACTOR[0]


def _failures(ray: Any) -> tuple:
    """The exceptions that mean an actor, its process or its node (or its chunk) is gone: failover."""
    ex = ray.exceptions
    names = ("RayActorError", "ObjectLostError", "NodeDiedError", "WorkerCrashedError", "OwnerDiedError",
             "ActorUnavailableError", "ObjectFetchTimedOutError", "ReferenceCountingAssertionError")
    return tuple(getattr(ex, n) for n in names if isinstance(getattr(ex, n, None), type))


# ----------------------------------------------------------------------------
# The actor's side
# ----------------------------------------------------------------------------


class _Share:
    """A Ray actor running one share of a recipe (made a Ray actor class at run time)."""

    def __init__(self, info: WorkerInfo, seed: Any) -> None:
        from .zmq_stream import _seed_globals

        set_worker_info(info)
        _seed_globals(seed)

    def run(self, recipe: Any, state: str | None, skip: int, per_item: bool, chunk: int, chunk_bytes: int,
            linger: float, most: int | None = None) -> Iterator:
        """The share's messages: STARTED, then chunks of items, then END (or ERROR).

        A thread runs the share (from ``state``, which can have given at most
        ``most`` items, dropping its first ``skip`` items) into a bounded
        buffer; this generator ships what the buffer holds as chunks, so an
        item waits at most ``linger`` seconds for the chunk to fill, even
        while the source is slow to give the next.
        """
        yield (_STARTED,)
        pending = _Pending(chunk, chunk_bytes)
        producer = threading.Thread(
            target=_produce, args=(recipe, state, skip, per_item, pending, most), name="pescador-share", daemon=True
        )
        producer.start()
        try:
            while True:
                items, states, last = pending.take(linger)
                if items:
                    yield (_ITEMS, _stacked(items), states)
                if last is not None:
                    yield last
                    return
        finally:
            pending.close()  # (the producer stops at its next item, if this generator was closed early)


class _Pending:
    """The items a share's thread produced and the actor has not shipped yet (bounded in items and bytes).

    ``states`` holds ``(index, state)`` pairs: the share's state (JSON text)
    after item ``index``, for the items whose state was asked for (``ask``:
    the producer then computes it after its next item; every item in a
    resumable run).
    """

    def __init__(self, chunk: int, chunk_bytes: int) -> None:
        self.chunk, self.chunk_bytes = chunk, chunk_bytes
        self.cond = threading.Condition(threading.Lock())  # (a plain lock: taken once per item)
        self.items: list = []
        self.states: list = []
        self.size = 0
        self.last: tuple | None = None  # END or ERROR, once the producer has finished
        self.ask = True  # the next item should carry the state after it
        self.closed = False

    def put(self, item: Any, state: str | None, nbytes: int) -> bool:
        """Add an item of ``nbytes`` bytes (waits while the buffer is full); False if the actor stopped shipping."""
        with self.cond:
            while self.items and (len(self.items) >= self.chunk or self.size >= self.chunk_bytes) and not self.closed:
                self.cond.wait()
            if self.closed:
                return False
            if state is not None:
                self.states.append((len(self.items), state))
            self.items.append(item)
            self.size += nbytes
            if len(self.items) == 1 or len(self.items) >= self.chunk or self.size >= self.chunk_bytes:
                self.cond.notify_all()  # (the shipper waits for a first item, or for a full chunk)
            return True

    def fills(self, nbytes: int) -> bool:
        """Whether an item of ``nbytes`` bytes will fill the chunk (so its state is the chunk's last: failover
        drops nothing)."""
        return len(self.items) + 1 >= self.chunk or self.size + nbytes >= self.chunk_bytes

    def finish(self, last: tuple) -> None:
        with self.cond:
            self.last = last
            self.cond.notify_all()

    def take(self, linger: float) -> tuple:
        """The next chunk: waits for a first item, then until the chunk is full or ``linger`` has passed."""
        with self.cond:
            while not self.items and self.last is None:
                self.cond.wait()
            deadline = time.monotonic() + linger
            while self.last is None and len(self.items) < self.chunk and self.size < self.chunk_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            items, states = self.items, self.states
            self.items, self.states, self.size, self.ask = [], [], 0, True
            self.cond.notify_all()
            return items, states, self.last

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def _produce(recipe: Any, state: str | None, skip: int, per_item: bool, pending: _Pending,
             most: int | None = None) -> None:
    """The share's thread: run it and put its items (with states, when asked) into ``pending``.

    The share runs as a resumable run's would (:func:`pescador.stage.start_share`), whether or not the
    run is resumable: its states are what failover resumes from, and its unseeded randomness derives from
    the actor's seed, so a restarted share draws the same numbers.
    """
    sent = 0
    try:
        iterator = start_share(recipe, worker_info().seed, None if state is None else json.loads(state), most)
        _skip(iterator, skip)
        stateful = True  # (False once a stage said it cannot say where it is)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                break
            after, nbytes = None, _nbytes(item)
            if per_item or (stateful and (pending.ask or pending.fills(nbytes))):
                pending.ask = False
                try:
                    after = json.dumps(iterator.state())
                except Exception:  # (a stage without a state, or one that is not JSON)
                    if per_item:
                        raise
                    stateful = False  # (a plain run goes on; failover then replays the share from its start)
            if not pending.put(item, after, nbytes):
                return
            sent += 1
    except Exception as exc:
        pending.finish((_ERROR, wire.encode_error(traceback.format_exc(), exc, pickled=True), sent))
        return
    pending.finish((_END,))


def _stacked(items: list) -> list:
    """A chunk's items as they travel: a list of parts, each a tuple of :mod:`pescador.wire` frames (a run of
    small items of one layout, stacked one array per key, as zmq_offload sends them: Ray then carries a few
    buffers rather than pickling every item) or a list of items as they are (the others)."""
    layouts = [wire.shared_layout(item) for item in items]
    parts: list = []
    start, n = 0, len(items)
    while start < n:
        end = start + 1
        first = layouts[start]
        if first is None:
            while end < n and layouts[end] is None:
                end += 1
            parts.append(items[start:end])
            start = end
            continue
        try:
            frames, end = wire.encode_run(items, layouts, start)  # (what one message holds)
            parts.append(tuple(frames))
        except PescadorError:  # (not expected: the items travel as they are)
            parts.append(items[start:end])
        start = end
    return parts


def _unstacked(parts: list, copy: bool) -> list:
    """The items of a chunk's parts (see :func:`_stacked`): stacked items are rebuilt as zmq_offload's are
    (each a copy of its own, writeable); the others arrive as Ray gives them (arrays: read-only views of
    its object store), copied where ``copy``."""
    items: list = []
    for part in parts:
        if type(part) is tuple:
            items += wire.decode(list(part))[1][0]
        else:
            items += [_copied(item) for item in part] if copy else part
    return items


def _skip(iterator: Any, skip: int) -> None:
    """Drop the first ``skip`` items of a share restarted on a new actor (those delivered already)."""
    for dropped in range(skip):
        try:
            next(iterator)
        except StopIteration:
            raise PescadorError(
                f"ray_offload: a share restarted after a failure ended after {dropped} items of the {skip} "
                "it had delivered since its last state: its source does not give the same items again "
                "(failover needs shares that do, as resumable runs do)"
            ) from None


_BYTES_LIKE = (bytes, bytearray, str)


def _nbytes(item: Any, depth: int = 0) -> int:
    """The bytes an item holds, counted against ``chunk_bytes``: its arrays' and numpy scalars' ``nbytes``,
    its bytes' and strings' lengths, inside dicts, tuples and lists (``tuples``, ``keras_tuples``) too."""
    kind = type(item)
    if kind is np.ndarray:
        return item.nbytes
    if kind is dict:
        values: Any = item.values()
    elif kind is tuple or kind is list:
        values = item
    elif isinstance(item, _BYTES_LIKE):
        return len(item)
    elif isinstance(item, (np.ndarray, np.generic, memoryview)):
        return item.nbytes
    elif isinstance(item, dict):
        values = item.values()
    elif isinstance(item, (tuple, list)):
        values = item
    else:
        return 0
    if depth >= 16:  # (a deeper nesting is not data worth counting)
        return 0
    total = 0
    for value in values:
        total += value.nbytes if type(value) is np.ndarray else _nbytes(value, depth + 1)
    return total


# ----------------------------------------------------------------------------
# The consumer's side
# ----------------------------------------------------------------------------


class _RayOffload(Offloaded):
    """ray_offload, the consumer's side of a run: its actors' items, in turn
    (:class:`pescador.stage.Offloaded`); a share whose actor dies goes on on a new actor."""

    name, unit, Config = "ray_offload", "actor", _Config

    def launch(self, upstream: Any) -> Iterator:
        return _run(upstream, self.config, self.starts, self.skips, self.tracked, self.delivered, self.seeds(),
                    self.most)

    def skip_bound(self) -> int:
        return self.config.chunk  # (a resumable run's actors send their state with every item of a chunk)


@dataclasses.dataclass
class _Slot:
    """One share of the run, on its current actor."""

    wid: int
    resume: str | None  # JSON text: the share's latest state received (None: its start)
    first: str | None = None  # the state the run started it from (then bounded by the run's ``most`` items)
    skip: int = 0  # items received after that state: a new actor starts from it and drops these
    actor: Any = None
    gen: Any = None
    launched: float = 0.0
    started: bool = False  # its STARTED message arrived
    received: int = 0  # items received from this share, over all its actors
    restarts: int = 0
    items: list = dataclasses.field(default_factory=list)  # the chunk being handed out,
    states: list | None = None  # the share's state after each of its items (a resumable run),
    pos: int = 0  # and the position of the next item
    done: bool = False  # its END came


class _Run:
    """What a run holds: Ray, the actor class, the recipe in the object store, the shares' identities."""

    def __init__(self, ray: Any, upstream: Any, config: _Config, per_item: bool, seeds: list,
                 most: int | None = None) -> None:
        self.ray, self.config, self.per_item, self.most = ray, config, per_item, most
        self.actor = _actor_class(ray)
        try:
            self.recipe = ray.put(upstream)
        except Exception as exc:
            raise _pickling.refusal(upstream, exc, _SENDING) from None
        rank, world = rank_info()
        self.infos = [compose(WorkerInfo(w, config.workers, seeds[w]), rank, world) for w in range(config.workers)]
        self.options = dict(config.resources or {}, max_restarts=0, max_task_retries=0)

    def launch(self, slot: _Slot) -> None:
        """Start a new actor for ``slot``'s share, from ``slot.resume`` (dropping ``slot.skip`` items)."""
        info = self.infos[slot.wid]
        try:
            actor = self.actor.options(**self.options).remote(info, info.seed)
        except (ValueError, TypeError) as exc:
            raise PescadorError(f"ray_offload: Ray refused the actor options {self.config.resources!r}: {exc}") from None
        c = self.config
        slot.actor = actor
        most = self.most if slot.resume is slot.first else None  # (a later state is the share's own)
        slot.gen = actor.run.options(num_returns="streaming", _generator_backpressure_num_objects=c.hwm).remote(
            self.recipe, slot.resume, slot.skip, self.per_item, c.chunk, c.chunk_bytes, c.linger, most
        )
        slot.launched, slot.started = time.monotonic(), False

    def release(self, slot: _Slot) -> None:
        """Kill ``slot``'s actor (if any) and forget it."""
        actor, slot.actor, slot.gen = slot.actor, None, None
        if actor is not None:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # (already gone, or Ray is shutting down)
                pass


_SENDING = "ray_offload: the recipe cannot be sent to Ray actors"


def _run(upstream: Any, config: _Config, starts: list, skips: list, per_item: bool, delivered: dict, seeds: list,
         most: int | None = None) -> Iterator:
    """A run: start the actors (share ``w`` with ``seeds[w]``, from ``starts[w]`` and dropping ``skips[w]``
    items, bounded by ``most`` items), yield their items, fail over, and always kill the actors."""
    if _in_a_dataloader_worker():
        raise PescadorError(
            "ray_offload: this run is in a PyTorch DataLoader worker process, where Ray cannot run (a worker "
            "forked from a process connected to Ray crashes); its actors already run the shares in parallel, "
            "so give the DataLoader num_workers=0 (pescador.torch.loader(recipe)), or use zmq_offload"
        )
    _pickling.check(upstream, _SENDING)  # (before Ray starts: Ray would send a text file's contents)
    ray = _ray()
    run = _Run(ray, upstream, config, per_item, seeds, most)
    slots = []
    for w in range(config.workers):
        text = None if starts[w] is None else json.dumps(starts[w])
        slots.append(_Slot(w, text, first=text, skip=skips[w]))
    try:
        for slot in slots:
            run.launch(slot)
        yield from _receive(run, slots, delivered)
    finally:
        for slot in slots:
            run.release(slot)


def _receive(run: _Run, slots: list, delivered: dict) -> Iterator:
    """Yield the shares' items, one in turn from each share that has one, until every share has ended.

    The consumer holds at most one chunk per share (the one it is handing
    out), and goes round the live shares taking one item from each that has
    one: held, or in a chunk ready in its generator.  A share found without
    one is looked at again on the next round (at most every
    ``_LOOK_EVERY`` seconds: a look asks Ray about every such share at
    once).  So whatever the consumer's speed, the shares with items ready
    take turns item by item, and a chunk is handed out one item per round,
    not as a block.  While every live share holds items, the rounds they
    all hold are handed out at once.  Every ``_POLL`` seconds, whatever the
    others deliver, a share whose actor has not started within
    ``placement_timeout`` ends the run.
    """
    ray, failures = run.ray, _failures(run.ray)
    ring = list(slots)  # the live shares, in turn
    next_check = time.monotonic() + _POLL
    look = 0.0  # when to ask Ray again about the shares that hold no item
    while ring:
        rounds = run.config.chunk
        for slot in ring:
            if len(slot.items) - slot.pos < rounds:
                rounds = len(slot.items) - slot.pos
        if rounds > 1 and not run.per_item:  # every live share holds items: the rounds they all hold, at once
            parts = []
            for slot in ring:
                parts.append(slot.items[slot.pos : slot.pos + rounds])
                slot.pos += rounds
            for row in zip(*parts):
                yield from row
            continue
        now = time.monotonic()
        if now >= next_check:
            next_check = now + _POLL
            _check_placement(run, ring)
        idle = [slot.gen for slot in ring if slot.pos >= len(slot.items)]
        ready: list = []
        if len(idle) == len(ring):  # nobody holds items: wait for a chunk (or the next check)
            ready = _wait(ray, idle, 1, _POLL)
        elif idle and now >= look:  # (a look at all of them at once, without waiting)
            ready = _wait(ray, idle, len(idle), 0)
            look = now + _LOOK_EVERY
        for slot in ring:  # a round: an item from each share that has one
            if slot.pos >= len(slot.items):
                if not any(gen is slot.gen for gen in ready):
                    continue
                _take(run, slot, failures)
                if slot.pos >= len(slot.items):
                    continue
            pos = slot.pos
            slot.pos = pos + 1
            if slot.states is not None:  # (the share's state once this item is delivered)
                _delivered(delivered, slot.wid, slot.states[pos])
            yield slot.items[pos]
        if any(slot.done for slot in ring):
            ring = [slot for slot in ring if not slot.done]


def _take(run: _Run, slot: _Slot, failures: tuple) -> None:
    """Read ``slot``'s next message (ready in its generator): hold its chunk, note its start, its end, or
    fail it over; raise its error."""
    ray = run.ray
    try:
        message = ray.get(next(slot.gen))
    except StopIteration:  # (the task ended without END: its actor was killed from outside)
        _failover(run, slot, "its actor's task ended without finishing the share")
        return
    except failures as exc:
        _failover(run, slot, _cause(exc))
        return
    except ray.exceptions.RayTaskError as exc:  # (the task itself failed, outside the share's own code)
        raise PescadorError(f"ray_offload: share {slot.wid}'s actor task failed: {exc}") from None
    kind = message[0]
    if kind == _ITEMS:
        items, states = _unstacked(message[1], run.config.copy), message[2]
        slot.received += len(items)
        if states:  # (failover resumes from the latest state and drops the items after it)
            slot.resume, slot.skip = states[-1][1], len(items) - 1 - states[-1][0]
        else:
            slot.skip += len(items)
        slot.items, slot.pos = items, 0
        slot.states = [state for _, state in states] if run.per_item else None  # (a resumable run: one per item)
    elif kind == _STARTED:  # (its first chunk may be there too: take it now, not a round later)
        slot.started = True
        if _wait(ray, [slot.gen], 1, 0):
            _take(run, slot, failures)
    elif kind == _END:
        slot.done = True
        run.release(slot)
    else:
        slot.done = True
        run.release(slot)
        _raise_remote(slot.wid, message[1], message[2])


def _wait(ray: Any, gens: list, count: int, seconds: float) -> list:
    """The generators (at most ``count``) with a message ready within ``seconds``.

    A Ctrl-C while Ray waits comes out of Ray as a SystemError around the
    KeyboardInterrupt: it is raised as the KeyboardInterrupt it is.
    """
    try:
        return ray.wait(gens, num_returns=count, timeout=seconds)[0]
    except SystemError as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise


def _copied(item: Any, depth: int = 0) -> Any:
    """``item`` with each array (inside dicts, tuples and lists too) a writeable copy of its own."""
    if isinstance(item, np.ndarray):
        return np.array(item)
    if depth >= 16:
        return item
    if isinstance(item, dict):
        return {k: _copied(v, depth + 1) for k, v in item.items()}
    if isinstance(item, list):
        return [_copied(v, depth + 1) for v in item]
    if isinstance(item, tuple):
        copied = [_copied(v, depth + 1) for v in item]
        return item._make(copied) if hasattr(item, "_make") else tuple(copied)  # (a named tuple stays one)
    return item


def _cause(exc: BaseException) -> str:
    """A short reason from Ray's error for an actor or node death."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    head = lines[0] if lines else ""
    detail = next((line for line in lines[1:] if line.startswith("The actor is dead because")), "")
    text = f"{type(exc).__name__}: {head}" + (f" {detail}" if detail else "")
    return text if len(text) <= 600 else text[:597] + "..."


def _failover(run: _Run, slot: _Slot, reason: str) -> None:
    """Restart ``slot``'s share on a new actor from the state after its last item received, or raise."""
    run.release(slot)
    config, w, n = run.config, slot.wid, run.config.workers
    if slot.restarts >= config.max_restarts:
        raise PescadorError(
            f"ray_offload: share {w} of {n} failed {slot.restarts + 1} times, more than max_restarts="
            f"{config.max_restarts}; the last time: {reason}"
        )
    slot.restarts += 1
    if slot.skip:
        start_at = "start" if slot.resume is None else "latest state"
        where = f"from its {start_at}, dropping the {slot.skip} items delivered since"
    else:
        where = "from its start" if slot.resume is None else "from its state after the last item delivered"
    warnings.warn(
        f"ray_offload: share {w} of {n} restarts on a new actor (restart {slot.restarts} of at most "
        f"{config.max_restarts}), {where}, because its actor failed: {reason}",
        FailoverWarning,
        stacklevel=2,
    )
    run.launch(slot)


def _check_placement(run: _Run, slots: Any) -> None:
    """Raise if an actor has not started within ``placement_timeout`` (Ray could not place it)."""
    timeout = run.config.placement_timeout
    if timeout is None:
        return
    now = time.monotonic()
    for slot in slots:
        if not slot.started and now - slot.launched > timeout:
            try:
                available = run.ray.available_resources()
            except Exception:
                available = "unknown"
            again = f"new actor (restart {slot.restarts}, after a failure)" if slot.restarts else "actor"
            raise PescadorError(
                f"ray_offload: share {slot.wid}'s {again} did not start within placement_timeout={timeout} "
                f"seconds; it asks for {run.config.resources or 'Ray defaults (one CPU)'}, and the cluster "
                f"has {available} available; lower workers or the resources, add nodes, or raise "
                "placement_timeout"
            )


def _raise_remote(wid: int, frames: list, sent: int) -> None:
    """Raise a share's exception here, as zmq_offload does: the original type where it can be rebuilt (its
    ``__cause__`` a :class:`~pescador.WorkerError` with the worker's traceback), else that WorkerError."""
    kind, report = wire.decode(frames, False)
    if kind != wire.ERROR:
        raise PescadorError(f"ray_offload: share {wid} sent a malformed error message")
    raise wire.error_from(report, f"ray_offload: share {wid}", when=f" after sending {sent} items")
