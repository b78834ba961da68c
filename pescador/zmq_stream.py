"""``zmq_offload``: run a stream in worker processes, receive its items over ZeroMQ.

A run of an offloaded stream starts ``workers`` processes.  Each iterates
the upstream recipe and sends its items, one multipart message per item,
or several small items to a message when they come fast (see
``batch_wait`` and :mod:`pescador.wire`), to the consumer, which yields
them one at a time.  The consumer binds one ROUTER socket per worker on
a private endpoint (``ipc://`` paths in a new directory of mode 0700, or
loopback TCP, where a peer must also show the run's secret during the
handshake); each worker connects a DEALER socket with a secret identity
to its own, and messages from any other peer are dropped.

Interleaving: each worker's items arrive in the order it yields them.
Reading each worker's queue separately, the consumer goes round the
workers in turn and takes one item from each that has one ready (ZeroMQ
alone would fair-queue whole messages, and only as often as it processes
its commands), so whatever the consumer's speed, the workers with items
ready take turns item by item, and the small items that share a message
are handed out one per round, not as a block.

Lifecycle
---------
- End of stream is acknowledged: a worker sends END and exits only after
  the consumer's acknowledgement, so no item is lost at the end of a run.
- A worker's exception travels back (pickled, with its traceback text) and
  is raised in the consumer as its own type where it can be rebuilt there,
  with a :class:`~pescador.WorkerError` holding the worker's traceback as
  its ``__cause__``, and as that :class:`~pescador.WorkerError` (a
  :class:`~pescador.PescadorError`) otherwise; after the items the worker
  sent before it.
- A worker that dies (a signal, a segfault, ``os._exit``) is noticed within
  about a second and reported as :class:`~pescador.PescadorError`, which
  counts the items the consumer received from it; items the worker had
  produced but not yet handed to the wire die with it.
- When the consumer stops early (``break``, garbage collection,
  ``KeyboardInterrupt``, an exception), it sends SIGTERM to the workers
  that have not ended.  In a worker, SIGTERM raises an exception in the
  main thread wherever it is (a blocking call such as ``time.sleep`` is
  interrupted), and the source is closed (``GeneratorExit``), so its
  ``finally`` blocks and context managers run; a worker still starting just
  ends.  What runs after ``timeout`` seconds (one when None) is killed.
  Sockets, the context and the ipc directory are removed.
- A worker whose consumer has died exits by itself within about a second,
  whatever its main thread is doing (except running C code that holds the
  GIL and never returns): a watcher thread, started before any
  setup or user code, waits on the consumer's pidfd, removes the ipc
  directory the consumer could not, lets the main thread unwind for up to
  a second, then ends the process.
- Under fork, a worker inherits every lock as it was at the fork, possibly
  held by another thread of the consumer.  A worker's own setup takes none
  of them: numpy's legacy global generator is re-initialised in place (a
  new generator with a new lock) rather than seeded under its lock.
- Flow control: at most about ``hwm`` messages wait in the worker's queue
  and ``hwm`` in the consumer's, per worker, so a fast producer never fills
  the consumer's memory.  A message holds one item, or up to 1,024 small
  items (64 KiB of data at most), so that is at most ``hwm`` large items
  or ``hwm`` times 64 KiB of small ones per queue (plus what the operating
  system buffers on the connection, what the worker holds, at most
  64 KiB, for at most about ``batch_wait`` seconds beyond flow control,
  and the one message per worker that the consumer is handing out).

Resumable runs
--------------
One stage, :class:`_Offload`, runs plain and resumable runs alike.  In a
resumable run (:func:`pescador.resumable`) each worker starts its share
with :func:`pescador.stage.start` and sends its state with an item now and
then (``STATE_EVERY``), not with each: the stage's state is, for each
worker, the latest state delivered and the items it delivered since, which
a resumed worker draws again and drops, so that it continues after its
last delivered item.  A plain run's workers send no state.  This module runs stages through
:mod:`pescador.stage` alone: it does not import :mod:`pescador.resume`.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import functools
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import numbers
import os
import pickle
import random
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import zmq

from . import _pickling, _report, wire
from .core import ItemTransform, OneStream, Transform
from .exceptions import ParameterError, ParameterTypeError, PescadorError
from .stage import Offloaded, delivered, replay, start_share
from .workers import WorkerInfo, set_worker_info, worker_info

__all__ = ["zmq_offload"]

_GRACE = 1.0  # seconds a stopping worker gets when timeout is None
_POLL_MS = 100  # how long the consumer waits for a message before it checks on its workers
_CHECK_EVERY = 0.25  # seconds between checks on the workers while items flow
_ACK = b"ack"
_DEFAULT_TRANSPORT = "ipc" if zmq.has("ipc") else "tcp"
_NOBLOCK, _RCVMORE, _EVENTS, _POLLOUT = int(zmq.NOBLOCK), int(zmq.RCVMORE), int(zmq.EVENTS), int(zmq.POLLOUT)


# ----------------------------------------------------------------------------
# The combinator
# ----------------------------------------------------------------------------


def _check_int(value: Any, where: str, name: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise (ParameterError if isinstance(value, numbers.Integral) and not isinstance(value, bool) else ParameterTypeError)(f"{where}: {name} must be an integer {bound}; got {value!r}")
    return int(value)


def zmq_offload(
    *,
    workers: int = 1,
    copy: bool = False,
    timeout: float | None = None,
    hwm: int = 32,
    transport: str | None = None,
    min_port: int = 49152,
    max_port: int = 65535,
    max_tries: int = 100,
    start_method: str | None = None,
    random_state: int | None = None,
    batch_wait: float = 0.001,
    persistent_workers: bool = False,
) -> ItemTransform:
    """Produce a stream's items in other processes and receive them over ZeroMQ.

    Curried and data-last: ``zmq_offload(workers=2)`` is a
    :class:`~pescador.Transform`; apply it to a stream (or pipe a stream
    into it).  Nothing starts until the result is iterated; every run
    starts fresh worker processes and stops them when it ends.

    Parameters
    ----------
    workers : int >= 1
        Number of worker processes.  Each runs the whole recipe, with its
        own :func:`pescador.worker_info` (id, count and an independent
        ``np.random.SeedSequence`` spawned for it; the legacy global
        ``np.random`` and :mod:`random` are seeded from it), so sources can
        shard their data.  A mux without replacement shards its pool across
        workers by itself.  Each worker's items arrive in order; with
        several workers, those with items ready take turns, item by item.
    copy : bool
        If False (the default), large arrays are sent and received without
        copying: a generator must not modify an array after yielding it
        (yield a new array each time), and the received arrays are views of
        the message frames, which belong to the consumer alone (they are
        writeable).  If True, arrays are copied before sending and after
        receiving, so a generator may reuse its arrays, and every received
        array owns its memory.  Arrays of at most 1 KiB are always copied.
    timeout : None or float >= 0
        When the run ends early, each worker is asked to stop (SIGTERM,
        which unwinds its source, so that its ``finally`` blocks run) and
        is killed if it still runs ``timeout`` seconds later; None means
        one second.
    hwm : int >= 1
        High-water mark: how many messages may wait in each queue (the
        worker's and the consumer's, per worker) before the worker blocks.
        A message holds one item, or up to 1,024 small items of one layout
        (64 KiB of data at most; see ``batch_wait``), so a queue holds at
        most ``hwm`` large items, or ``hwm`` times 64 KiB of small ones
        (and the consumer holds the one message of each worker that it is
        handing out).  A run that nobody reads makes, per worker, what its
        two queues hold, the message in its hands and what the operating
        system buffers on the connection, then waits.
    transport : None, "ipc" or "tcp"
        ``"ipc"``: a socket file per worker in a new private directory
        (mode 0700); ``"tcp"``: loopback TCP (127.0.0.1) on a port per
        worker between ``min_port`` and ``max_port``, which any process on
        this host can reach: each worker shows the run's secret during
        ZeroMQ's handshake (PLAIN, checked by a ZAP handler in the
        consumer), and any other peer is cut off before anything it sends
        is kept.  (ZeroMQ's limit on a message's size would not do: it
        bounds each frame, not how many frames a message has, and a run's
        own items, a 1 GB batch too, must travel.)  None chooses ipc where
        ZeroMQ supports it.
    min_port, max_port : int
        The range of TCP ports to try (both included).
    max_tries : int >= 1
        How many random ports to try (for each worker) before giving up.
    start_method : None, "fork", "forkserver" or "spawn"
        How to start workers (see :mod:`multiprocessing`); None uses the
        platform's default.  Under "fork" the workers are copies of this
        process and nothing is pickled.  Under "forkserver" and "spawn" the
        recipe is sent by cloudpickle, once per run: functions, lambdas,
        closures and classes defined in a notebook, ``python -c``, the
        script being run or inside another function go by value, those of
        importable modules by name.  What cannot travel (a live generator,
        an open file, a socket, a lock, anything else that does not pickle)
        is refused before any worker starts, with a
        :class:`~pescador.PescadorError` naming it and where it sits in the
        recipe.
    random_state : None or int
        The entropy from which the workers' seeds are spawned; an int makes
        every run start its workers with the same seeds.
    batch_wait : float >= 0
        Small items (at most 16 KiB of arrays, strings and bytes each, of
        one layout: the same keys, dtypes and shapes) share messages when the source is fast or
        the consumer slow: an item that comes ``batch_wait`` seconds or
        more after the one before goes at once, alone, when the worker's
        queue has room; faster ones are held, and leave together once the
        oldest has waited ``batch_wait`` seconds (the default, 1 ms) or a
        message is full, then wait for room as any message does.  Order,
        flow control, the end of stream and errors (after every item before
        them) hold as with one item per message.  0: every item travels in
        a message of its own.
    persistent_workers : bool
        If True, the workers outlive a run and serve the next run of the
        same recipe object (the next epoch), as a ``DataLoader``'s
        ``persistent_workers`` do: each run is still a fresh run of the
        recipe in them, with the seeds a new run draws, but no process
        starts.  A run stopped early stops the recipe in the workers, not the
        workers.  They end when the recipe is closed (``recipe.close()``),
        collected, or the interpreter exits, or when this process dies.  A
        pickled or deep-copied recipe starts workers of its own; a second
        run started while one is live gets workers of its own for that run.
        See "Persistent workers" in the parallel documentation.

    Examples
    --------
    >>> import numpy as np, pescador
    >>> def squares(n):
    ...     for i in range(n):
    ...         yield {"x": np.array([i * i])}
    >>> offloaded = pescador.zmq_offload()(pescador.stream(squares, 4))
    >>> [int(item["x"][0]) for item in offloaded]
    [0, 1, 4, 9]
    """
    where = "zmq_offload"
    if not isinstance(copy, (bool, np.bool_)):
        raise PescadorError(f"{where}: copy must be True or False; got {copy!r}")
    if timeout is not None and (
        not isinstance(timeout, numbers.Real) or isinstance(timeout, bool) or not 0 <= timeout < float("inf")
    ):
        raise PescadorError(f"{where}: timeout must be None or a number of seconds >= 0; got {timeout!r}")
    if transport is None:
        transport = _DEFAULT_TRANSPORT
    if transport not in ("ipc", "tcp"):
        raise PescadorError(f"{where}: transport must be 'ipc' or 'tcp'; got {transport!r}")
    if transport == "ipc" and not zmq.has("ipc"):
        raise PescadorError(f"{where}: this ZeroMQ does not support ipc; use transport='tcp'")
    methods = multiprocessing.get_all_start_methods()
    if start_method is not None and start_method not in methods:
        raise PescadorError(f"{where}: start_method {start_method!r} does not exist here; valid: {', '.join(methods)}")
    min_port = _check_int(min_port, where, "min_port", 1, 65535)
    max_port = _check_int(max_port, where, "max_port", 1, 65535)
    if max_port < min_port:
        raise PescadorError(f"{where}: max_port ({max_port}) is below min_port ({min_port})")
    if random_state is not None:
        random_state = _check_int(random_state, where, "random_state", 0)
    if not isinstance(batch_wait, numbers.Real) or isinstance(batch_wait, bool) or not 0 <= batch_wait <= 10:
        raise PescadorError(f"{where}: batch_wait must be a number of seconds from 0 to 10; got {batch_wait!r}")
    config = _Config(
        workers=_check_int(workers, where, "workers", 1, 1024),
        copy=bool(copy),
        timeout=None if timeout is None else float(timeout),
        hwm=_check_int(hwm, where, "hwm", 1),
        transport=transport,
        min_port=min_port,
        max_port=max_port,
        max_tries=_check_int(max_tries, where, "max_tries", 1),
        start_method=start_method,
        random_state=random_state,
        batch_wait=float(batch_wait),
        persistent_workers=_check_bool(persistent_workers, where, "persistent_workers"),
    )
    if config.persistent_workers:
        return _PersistentTransform("zmq_offload", _Offload, config.params(), coerce=OneStream("zmq_offload"))
    return Transform("zmq_offload", _Offload, config.params(), coerce=OneStream("zmq_offload"))


def _check_bool(value: Any, where: str, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{where}: {name} must be True or False; got {value!r}")
    return bool(value)


@dataclasses.dataclass(frozen=True)
class _Config:
    """The options of a :func:`zmq_offload`, validated once (by :func:`zmq_offload`).

    The recipe holds those that differ from the defaults (``params()``, so
    its repr shows what was chosen); each run rebuilds this from them.
    """

    workers: int = 1
    copy: bool = False
    timeout: float | None = None
    hwm: int = 32
    transport: str = _DEFAULT_TRANSPORT
    min_port: int = 49152
    max_port: int = 65535
    max_tries: int = 100
    start_method: str | None = None
    random_state: int | None = None
    batch_wait: float = 0.001
    persistent_workers: Any = False  # True in the Transform; in a recipe, its handle (_Workers)

    def params(self) -> dict:
        """The options that differ from the defaults."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default
        }


@dataclasses.dataclass(frozen=True)
class _Job:
    """What one worker is handed: the run's options, where to send, and its own share."""

    config: _Config
    pickled: bool  # ``recipe`` is its bytes (spawn, forkserver: _pickling.dumps), else the recipe itself (fork)
    recipe: Any
    endpoint: str
    consumer: int  # the consumer's pid
    tracked: bool  # a resumable run: send this worker's state with its items (now and then: _send_items)
    wid: int = 0
    identity: bytes = b""
    seed: Any = None  # its np.random.SeedSequence
    state: Any = None  # where its share resumes (a tracked run), or None: from the start
    most: Any = None  # the most items its share can have given before ``state`` (None: unbounded)
    skip: int = 0  # items it then draws and drops (delivered after that state, before the checkpoint)
    report: Any = None  # where its observers report, and the run's secret (pescador._report), or None
    password: bytes = b""  # over TCP, what the worker shows the consumer to be let in (see _gate)
    cancel: Any = None  # persistent workers: shared memory, the run below which runs are stopped (_Pool)
    go: Any = None  # the read end of a pipe: the worker begins once the guardian watches it (_start_worker)


# ----------------------------------------------------------------------------
# The consumer
# ----------------------------------------------------------------------------


def _payload(upstream: Any, method: str) -> tuple:
    """What a worker receives: the recipe itself under fork, else its bytes (:mod:`pescador._pickling`)."""
    if method == "fork":
        return False, upstream
    sending = f"zmq_offload: the recipe cannot be sent to workers started with {method!r}"
    return True, _pickling.dumps(upstream, sending, "or use start_method='fork', where the platform has it")


def _bind(socks: list, directory: str | None, min_port: int, max_port: int, max_tries: int) -> list:
    """Bind each socket (one per worker) privately: in ``directory`` (ipc), else on loopback; return the endpoints."""
    if directory is not None:
        endpoints = ["ipc://" + os.path.join(directory, f"s{wid}") for wid in range(len(socks))]
        for sock, endpoint in zip(socks, endpoints):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                shutil.rmtree(directory, ignore_errors=True)
                raise PescadorError(f"zmq_offload: cannot bind {endpoint}: {exc}; try transport='tcp'") from None
        return endpoints
    return [_bind_tcp(sock, min_port, max_port, max_tries) for sock in socks]


def _bind_tcp(sock: zmq.Socket, min_port: int, max_port: int, max_tries: int) -> str:
    ports = range(min_port, max_port + 1)
    for port in random.Random().sample(ports, min(max_tries, len(ports))):  # (not the user's random)
        try:
            sock.bind(f"tcp://127.0.0.1:{port}")
        except zmq.ZMQError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise PescadorError(f"zmq_offload: cannot bind tcp://127.0.0.1:{port}: {exc}") from None
        return f"tcp://127.0.0.1:{port}"
    raise PescadorError(
        f"zmq_offload: no free TCP port on 127.0.0.1 between {min_port} and {max_port} after "
        f"{min(max_tries, len(ports))} tries (a run binds one port per worker); widen the range or raise max_tries"
    )


def _gate(context: zmq.Context, socks: list) -> tuple:
    """``(gate, password)``: let only the run's workers into ``socks`` (before they bind TCP ports).

    Any process on this host can connect to a loopback port, and ZeroMQ
    holds what a peer sends until a whole message has come (with no bound
    on its frames), so a stranger could pile bytes up in the consumer.  A
    worker shows the run's secret (PLAIN), which a ZAP handler in the
    consumer checks during the handshake, before ZeroMQ accepts any
    message: a peer without it is cut off having sent nothing that is kept.
    The handler's thread starts before the workers (it answers their first
    handshakes); forked while it waits in poll, they inherit no lock of it
    that they take (logging's locks are made anew in a forked child).
    """
    from zmq.auth.thread import ThreadAuthenticator  # (only TCP runs need it)

    password = secrets.token_hex(16)
    gate = ThreadAuthenticator(context)
    gate.start()
    gate.configure_plain(domain="pescador", passwords={"worker": password})
    for sock in socks:  # (every worker's socket: a stranger may connect to any of their ports)
        _guard(sock)
    return gate, password.encode()


def _guard(sock: Any) -> None:
    """Make ``sock`` (before it binds) let in only peers that show the run's password (see :func:`_gate`)."""
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # (no handler, no entry)
    sock.setsockopt(zmq.ZAP_DOMAIN, b"pescador")
    sock.setsockopt(zmq.PLAIN_SERVER, 1)


def _death(process: Any, wid: int, received: int) -> PescadorError:
    """The error for a worker that died: how, and how many of its items the consumer received."""
    code = process.exitcode
    if code is not None and code < 0:
        try:
            how = f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return PescadorError(
        f"zmq_offload: worker {wid} (pid {process.pid}) {how} before its stream ended; the consumer "
        f"received {received} items from it (items it produced but had not yet sent are lost)"
    )


class _Offload(Offloaded):
    """zmq_offload, the consumer's side of a run: its worker processes' items, as they arrive
    (:class:`pescador.stage.Offloaded`).  Each worker runs its share with
    :func:`pescador.stage.start`."""

    name, unit, Config = "zmq_offload", "worker", _Config
    starts_processes = True

    def launch(self, upstream: Any) -> Iterator:
        starts = self.starts if self.tracked else None
        if isinstance(self.config.persistent_workers, _Workers):
            return _pooled(self.config.persistent_workers, upstream, self.config, starts, self.skips,
                           self.delivered, self.seeds(), self.most)
        return _run(upstream, self.config, starts, self.skips, self.delivered, self.seeds(), self.most)

    def skip_bound(self) -> int:
        return STATE_ITEMS - 1  # (a worker sends its state at least every STATE_ITEMS items)


def _check_not_daemonic() -> None:
    if multiprocessing.current_process().daemon:
        raise PescadorError(
            f"zmq_offload: this process ({multiprocessing.current_process().name}) is daemonic, and a daemonic "
            "process may not start processes of its own, so zmq_offload cannot start its workers here.  A "
            "DataLoader worker, a multiprocessing.Pool worker, a Process(daemon=True) and a zmq_offload worker "
            "are daemonic: run zmq_offload in your main process, or take it out of the recipe run here"
        )


def _run(upstream: Any, config: _Config, starts: list | None, skips: list, delivered: dict, seeds: list,
         most: int | None = None) -> Iterator:
    """A run: start the workers (worker ``w`` with ``seeds[w]``), yield their items, and always clean up.

    With ``starts`` (one state or None per worker, each bounded by ``most``
    items, each then dropping as many items as ``skips`` says) a tracked
    run, whose workers send their state with some of their items: where
    each worker is, is kept in ``delivered`` (see
    :func:`pescador.stage.delivered`) as its items are
    yielded.
    """
    _check_not_daemonic()
    mp = multiprocessing.get_context(config.start_method)
    pickled, payload = _payload(upstream, mp.get_start_method())
    context = zmq.Context()
    directory = guardian = relay = gate = None
    socks: list = []  # one per worker: the consumer reads from each worker's queue separately
    procs: list = []
    identities: list = []
    live: set = set()  # the workers that have not ended (END or ERROR) yet
    try:
        if config.workers + 16 > context.get(zmq.MAX_SOCKETS):
            context.set(zmq.MAX_SOCKETS, config.workers + 16)
        for _ in range(config.workers):
            sock = context.socket(zmq.ROUTER)
            socks.append(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, config.hwm)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        guardian, directory = _start_guardian(config.transport == "ipc")  # first: it removes what the run leaves
        gate, password = _gate(context, socks) if config.transport == "tcp" else (None, b"")
        endpoints = _bind(socks, directory, config.min_port, config.max_port, config.max_tries)
        relay = _report.Relay(upstream, context, endpoints[0], config)  # the workers' observers report to it
        shared = _Job(config, pickled, payload, endpoints[0], os.getpid(), tracked=starts is not None,
                      report=relay.address, password=password)
        _guard_forkserver_directory(guardian, mp.get_start_method())
        for wid in range(config.workers):
            identity = b"pescador-%d-%s" % (wid, secrets.token_hex(16).encode())
            identities.append(identity)
            job = dataclasses.replace(shared, wid=wid, identity=identity, seed=seeds[wid], endpoint=endpoints[wid],
                                      state=None if starts is None else starts[wid], most=most, skip=skips[wid])
            process = _start_worker(mp, _worker, job, guardian, procs)
            live.add(wid)
        relay.listen()
        inboxes = [_Inbox(wid, socks[wid], identities[wid], procs[wid]) for wid in range(config.workers)]
        yield from _receive(inboxes, live, config.copy, None if starts is None else delivered)
        relay.finish()  # the observers hold the workers' final totals
    finally:
        try:
            try:
                _shutdown(socks, procs, live, config.timeout)
            finally:  # (after the workers: a run stopped early takes their last reports)
                _report.close(relay)
        finally:  # (each step happens even if a second Ctrl-C interrupts the one before)
            try:
                if gate is not None:
                    gate.stop()  # (its thread's sockets close: the context can end)
                context.term()
            finally:
                try:
                    if directory is not None:
                        shutil.rmtree(directory, ignore_errors=True)
                finally:
                    _stop_guardian(guardian)


_QUIET = 0.1  # seconds: a dead worker's socket, empty this long after its death and its last message, holds no more
_STRANGERS = 64  # a stranger's messages dropped at most at one look at a worker's socket (then the others' turn)
_ENDED = "ended"
_LOOK_EVERY = 50e-6  # seconds between looks at the socket of a worker found empty, while others' items are handed out


class _Inbox:
    """The consumer's end of one worker's queue: its own socket, what came from it, whether it died."""

    __slots__ = ("wid", "sock", "identity", "process", "sent", "heard", "dead", "look", "items", "states", "pos")

    def __init__(self, wid: int, sock: zmq.Socket, identity: bytes, process: Any) -> None:
        self.wid, self.sock, self.identity, self.process = wid, sock, identity, process
        self.sent = 0  # items handed out from it
        self.heard = 0.0  # when its latest message was read (time.monotonic)
        self.dead: float | None = None  # when its death was noticed
        self.look = 0.0  # when to look at its socket again (it was found empty)
        self.items: list = []  # the message it is handing out: its items, the worker's state after each
        self.states: list | None = None  # (in a tracked run), and the position of the next item
        self.pos = 0

    def take(self, copy: bool, live: set) -> Any:
        """The worker's next message as :func:`pescador.wire.decode` gives it (ITEM, ITEM_STATE or BATCH),
        ``_ENDED`` (its END), or None when none waits now.

        Messages from any other peer are dropped.  END and ERROR are acknowledged, and the worker leaves
        ``live`` (it exits by itself); its ERROR is raised.
        """
        recv, more = self.sock.recv, self.sock.getsockopt
        strangers = 0
        while True:
            try:
                identity = recv(_NOBLOCK)
            except zmq.Again:
                return None
            frames = [recv()]  # the header: small, so a copy is cheaper than a zmq.Frame
            while more(_RCVMORE):
                frames.append(recv(copy=False))
            if identity == self.identity:
                break
            strangers += 1
            if strangers == _STRANGERS:
                return None
        self.heard = time.monotonic()
        message = wire.decode(frames, copy)
        kind = message[0]
        if kind == wire.ITEM or kind == wire.BATCH or kind == wire.ITEM_STATE:
            return message
        _send(self.sock, self.identity, _ACK)
        live.discard(self.wid)
        if kind == wire.END:
            return _ENDED
        when = f" after sending {self.sent} items"  # (our own worker process: its pickle is trusted)
        raise wire.error_from(message[1], f"zmq_offload: worker {self.wid}", when=when)

    def drained(self, now: float) -> bool:
        """Whether this dead worker's socket has had time to receive all it sent (the socket is empty now)."""
        return now - max(self.dead, self.heard) >= _QUIET

    def death(self) -> PescadorError:
        return _death(self.process, self.wid, self.sent)


def _items(message: tuple) -> tuple:
    """The items of an ITEM, ITEM_STATE or BATCH message, and the worker's state after each (or None)."""
    kind, payload = message
    if kind == wire.BATCH:
        return payload
    if kind == wire.ITEM:
        return [payload], None
    return [payload[0]], [payload[1]]


def _notice_deaths(inboxes: list, live: set, now: float) -> float:
    """Note when each live worker that has exited was first seen so; return when to look again."""
    for inbox in inboxes:
        if inbox.dead is None and inbox.wid in live and inbox.process.exitcode is not None:
            inbox.dead = now
    return now + _CHECK_EVERY


def _receive(inboxes: list, live: set, copy: bool, states: dict | None = None) -> Iterator:
    """Yield the workers' items, interleaved item by item, until every worker has ended; raise on a
    worker's error or death.

    Each worker sends on a socket of its own, so the consumer chooses whose
    message it reads.  It holds at most one message per worker (the one it
    is handing out), and goes round the live workers in turn, taking one
    item from each that has one: held, or in a message waiting on its
    socket.  A worker found without one is looked at again on the next
    round (at most every ``_LOOK_EVERY`` seconds).  So whatever the
    consumer's speed, the workers with items ready take turns, item by item,
    and a message of up to 1,024 small items is handed out one item per
    round, not as a block.  While every live worker holds items, the rounds
    they all hold are handed out at once (no socket can change them); with
    one worker, each message's items are.

    ``live`` holds the workers that have not ended; a worker leaves it when
    its END or ERROR arrives; its ERROR is raised after every item it sent
    before.  A dead worker is reported once everything it sent has been
    received (its socket has stayed empty for ``_QUIET`` seconds after its
    death was noticed and after its last message), counting the items the
    consumer received (and yielded) from it.  In a tracked run (``states``
    given), each worker's state after its item is kept there as the item is
    yielded.
    """
    if len(inboxes) == 1:
        yield from _receive_one(inboxes[0], live, copy, states)
        return
    ring = list(inboxes)  # the live workers, in turn
    poller = zmq.Poller()  # (their sockets: waited on when none has an item)
    for inbox in inboxes:
        poller.register(inbox.sock, zmq.POLLIN)
    next_check = time.monotonic() + _CHECK_EVERY
    while live:
        rounds = wire.BATCH_MAX
        for inbox in ring:
            if len(inbox.items) - inbox.pos < rounds:
                rounds = len(inbox.items) - inbox.pos
        if rounds > 1 and states is None:  # every live worker holds items: the rounds they all hold, at once
            parts = []  # (no socket can change them)
            for inbox in ring:
                parts.append(inbox.items[inbox.pos : inbox.pos + rounds])
                inbox.pos += rounds
                inbox.sent += rounds
            for row in zip(*parts):
                yield from row
            continue
        now = time.monotonic()
        if now >= next_check:  # check on the workers now and then
            next_check = _notice_deaths(inboxes, live, now)
        handed = False
        for inbox in ring:  # a round: an item from each worker that has one
            if inbox.pos >= len(inbox.items):  # (it holds none: is a message of its waiting?)
                if now < inbox.look:
                    continue
                message = inbox.take(copy, live)
                if message is None:
                    if inbox.dead is not None and inbox.drained(now):
                        raise inbox.death()
                    inbox.look = now + _LOOK_EVERY
                    continue
                if message is _ENDED:
                    poller.unregister(inbox.sock)
                    continue
                if message[0] == wire.ITEM:  # (one item: handed out at once)
                    inbox.sent += 1
                    handed = True
                    if states is not None:  # (where the worker is once this item is delivered)
                        delivered(states, inbox.wid, None)
                    yield message[1]
                    continue
                inbox.items, inbox.states = _items(message)
                inbox.pos = 0
                if not inbox.items:
                    continue
            pos = inbox.pos
            inbox.pos = pos + 1
            inbox.sent += 1
            if states is not None:  # (where the worker is once this item is delivered)
                delivered(states, inbox.wid, None if inbox.states is None else inbox.states[pos])
            handed = True
            yield inbox.items[pos]
        if len(ring) > len(live):
            ring = [inbox for inbox in ring if inbox.wid in live]
        if not handed and live:  # nothing to hand out: wait for a message (and check on the workers when quiet)
            if not poller.poll(_POLL_MS):
                next_check = _notice_deaths(inboxes, live, time.monotonic())
            for inbox in ring:
                inbox.look = 0.0  # (look at each again at once)


def _receive_one(inbox: _Inbox, live: set, copy: bool, states: dict | None) -> Iterator:
    """:func:`_receive` for one worker: its items as they come, each message's at once."""
    take, poller, next_check = inbox.take, zmq.Poller(), 0.0
    poller.register(inbox.sock, zmq.POLLIN)
    while live:
        message = take(copy, live)
        if message is None:  # nothing waits: check on the worker (its death matters only now), and wait
            now = time.monotonic()
            if now >= next_check:
                next_check = _notice_deaths([inbox], live, now)
            if inbox.dead is not None and inbox.drained(now):
                raise inbox.death()
            poller.poll(_POLL_MS)
        elif message is _ENDED:
            return
        elif message[0] == wire.ITEM:
            inbox.sent += 1
            if states is not None:  # (where the worker is once this item is delivered)
                delivered(states, inbox.wid, None)
            yield message[1]
        else:
            items, item_states = _items(message)
            inbox.sent += len(items)
            if states is None:
                yield from items
            else:
                for n, item in enumerate(items):  # (where the worker is once each item is delivered)
                    delivered(states, inbox.wid, None if item_states is None else item_states[n])
                    yield item


def _send(sock: zmq.Socket, identity: bytes, message: bytes) -> bool:
    """Send a control message to one worker; False if it cannot take it now."""
    try:
        sock.send_multipart([identity, message], _NOBLOCK)
        return True
    except zmq.ZMQError:  # not connected (yet, or any more), or its queue is full
        return False


_GUARD_GRACE = 1.5  # seconds after the consumer's death before the guardian kills the workers left

# The guardian of a run: a tiny Python process (no site, no pescador, no numpy) that the consumer starts
# with subprocess (safe beside threads under every start method), in a session of its own, first thing in
# the run.  It makes the run's ipc directory itself, so no moment exists where the directory is there and
# nobody would remove it, and it is handed, over a Unix socket, a pidfd of each worker as it starts (and
# the temporary directory of a forkserver that the run starts).  When the consumer dies, it gives the
# workers _GUARD_GRACE seconds (their watcher threads end them sooner), kills those left, and removes the
# directories.  The consumer kills it at the end of every run, after its own cleanup, and reaps it.
_GUARD = """
import os, select, shutil, signal, socket, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
consumer, grace, link = int(sys.argv[1]), float(sys.argv[2]), socket.socket(fileno=int(sys.argv[3]))
paths = []
link.setblocking(False)
workers = []
def read():
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(link, 65536, 64)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not message:
            return False
        workers.extend(fds)
        paths.extend(filter(None, message[1:].decode().split("\\0")))
listening = True
while consumer not in select.select([consumer] + [link] * listening, [], [])[0]:
    listening = read()
read()
deadline = time.monotonic() + grace
while workers and time.monotonic() < deadline:
    ready = select.select(workers, [], [], max(0.0, deadline - time.monotonic()))[0]
    workers = [fd for fd in workers if fd not in ready]
for fd in workers:
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
for path in paths:
    shutil.rmtree(path, ignore_errors=True)
"""


class _Guardian:
    """The consumer's handle on its run's guardian (see ``_GUARD``): the process and the socket to it."""

    def __init__(self, process: subprocess.Popen, link: socket.socket) -> None:
        self.process, self.link = process, link

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.link.close()


def _start_guardian(ipc: bool) -> tuple:
    """Start the run's guardian (see ``_GUARD``) and make the run's ipc directory (mode 0700), if ``ipc``.

    Returns the guardian (None where the system has no pidfds) and the
    directory (None over tcp).  The guardian is told the directory's name
    before the directory is made, so that whenever it exists, someone
    outside the consumer's process group will remove it; the consumer does
    not wait for the guardian to start (a Python interpreter's start, tens
    of milliseconds, would delay every run's first item).

    Why a process: a worker's watcher thread needs the GIL, which a main
    thread stuck in C code may never let go, and the consumer's ipc
    directory outlives workers that have already ended.  Why a session of
    its own: a signal to the consumer's whole process group (what a Jupyter
    kernel restart sends, or Ctrl-C in a terminal) does not reach it, so it
    outlives a consumer killed with its workers and removes the directory.
    Why the consumer opens the pidfds: its workers are its children, not yet
    reaped, so their pids cannot have been reused.
    """
    try:
        consumer = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):  # no pidfds here: the consumer makes the directory, its workers watch it
        return None, tempfile.mkdtemp(prefix="pescador-") if ipc else None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        args = [sys.executable, "-I", "-S", "-c", _GUARD, str(consumer), str(_GUARD_GRACE), str(theirs.fileno())]
        with _STARTING:
            process = subprocess.Popen(args, pass_fds=[consumer, theirs.fileno()], stdin=subprocess.DEVNULL,
                                       start_new_session=True)
    except BaseException:
        ours.close()
        raise
    finally:
        os.close(consumer)
        theirs.close()
    guardian = _Guardian(process, ours)
    try:
        return guardian, _private_directory(guardian) if ipc else None
    except BaseException:
        guardian.stop()
        raise


def _private_directory(guardian: _Guardian, prefix: str = "pescador-", base: str | None = None,
                       random_bytes: int = 8) -> str:
    """Make the run's ipc directory (mode 0700, a name no one can guess), told to the guardian first."""
    base = tempfile.gettempdir() if base is None else base
    while True:
        path = os.path.join(base, prefix + secrets.token_hex(random_bytes))
        try:
            guardian.link.send(b"+\0" + os.fsencode(path))
        except OSError:
            raise PescadorError(f"zmq_offload: the run's guardian ({sys.executable}) exited at its start with code "
                                f"{guardian.process.wait()}; its error is above") from None
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:  # (the random name taken: another one)
            continue


# Runs in several threads start processes one at a time: a worker forked while another thread starts a
# guardian would hold the pipe through which that thread's subprocess learns that its child began (its
# exec), and that thread would wait until the worker ends (a persistent worker: until the pool closes).
_STARTING = threading.Lock()


def _start_worker(mp: Any, target: Any, job: _Job, guardian: _Guardian | None, procs: list | None = None) -> Any:
    """Start a worker process (appended to ``procs`` as soon as it exists) and hand its pidfd to the
    guardian; the worker waits for a byte on ``job.go`` before it runs anything of the user's, so that
    no worker can reach code that holds the GIL for ever (where only the guardian can end it) before
    the guardian knows it, even if the consumer is killed between the start and the handing over."""
    wid = job.wid
    reader, writer = mp.Pipe(duplex=False)
    try:
        process = mp.Process(target=target, args=(dataclasses.replace(job, go=reader),),
                             name=f"pescador-worker-{wid}", daemon=True)
        with _STARTING:
            process.start()
        if procs is not None:
            procs.append(process)
        reader.close()
        _watch_worker(guardian, process.pid)
        writer.send_bytes(b"go")
    finally:
        reader.close()
        writer.close()
    return process


def _wait_to_begin(job: _Job) -> None:
    """In a worker, after its watcher has started: wait until the guardian watches this process
    (:func:`_start_worker`).  A consumer that died first never says so: the watcher ends the worker."""
    if job.go is not None:
        try:
            job.go.recv_bytes()
        except EOFError:  # (the consumer is gone; the watcher ends this process)
            threading.Event().wait()
        finally:
            job.go.close()


def _watch_worker(guardian: _Guardian | None, pid: int) -> None:
    """Hand the guardian a pidfd of worker ``pid`` (the consumer's child, not yet reaped; under forkserver
    the forkserver's, which may have reaped it already: then there is nothing left to guard)."""
    if guardian is not None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            socket.send_fds(guardian.link, [b"+"], [fd])
        finally:
            os.close(fd)


_FORKSERVER_DIRECTORY: dict = {}  # pid -> the temporary directory a forkserver started by a run of it made


def _guard_forkserver_directory(guardian: _Guardian | None, method: str) -> None:
    """Under forkserver, have the guardian also remove multiprocessing's ``pymp-*`` directory, which holds
    the forkserver's socket, where a run of this process made it: a consumer that is killed never
    removes it.  The run makes that directory itself, as multiprocessing would (``get_temp_dir``), but
    tells the guardian its name before it exists, so that no moment leaves it unguarded.  (A directory
    that was there before, made by the user's own multiprocessing or inherited from a parent, is not
    pescador's to remove.)"""
    if guardian is None or method != "forkserver":
        return
    made = _FORKSERVER_DIRECTORY.get(os.getpid())
    if made is not None:
        guardian.link.send(b"+\0" + made.encode())
    elif multiprocessing.process.current_process()._config.get("tempdir") is None:
        shorter = getattr(multiprocessing.util, "_get_base_temp_dir", None)  # (3.12.?+: a base short enough for sockets)
        # (8 random characters, as multiprocessing's own: its socket's path must fit in 107 bytes)
        made = _private_directory(guardian, "pymp-", None if shorter is None else shorter(tempfile), 4)
        multiprocessing.util.Finalize(None, _remove_multiprocessing_directory, args=(shutil.rmtree, made),
                                      exitpriority=-100)
        multiprocessing.process.current_process()._config["tempdir"] = _FORKSERVER_DIRECTORY[os.getpid()] = made


def _remove_multiprocessing_directory(rmtree: Any, path: str) -> None:
    """What multiprocessing does with its own ``pymp-*`` directory at exit (``util._remove_temp_dir``)."""
    rmtree(path, ignore_errors=True)
    if multiprocessing.process.current_process()._config.get("tempdir") == path:
        multiprocessing.process.current_process()._config["tempdir"] = None


def _stop_guardian(guardian: _Guardian | None) -> None:
    if guardian is not None:
        guardian.stop()


def _wait_all(procs: list, seconds: float | None) -> None:
    """Wait until every process has exited, or ``seconds`` have passed (None: no limit)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        running = [p.sentinel for p in procs if p.exitcode is None]
        if not running:
            return
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        multiprocessing.connection.wait(running, left)


def _shutdown(socks: list, procs: list, live: set, timeout: float | None) -> None:
    """Stop the workers and release everything.

    Workers that ended (their END or ERROR was acknowledged) exit by
    themselves.  The others are stopped at once with SIGTERM, which makes
    a worker unwind its source (its ``finally`` blocks run) and kills one
    that has not yet started its source (so a worker still starting costs
    nothing to stop).  Whatever still runs after ``timeout`` seconds (one
    when None) is killed.  The sockets stay open meanwhile, so that
    acknowledgements get out.
    """
    interrupted = None
    try:
        for wid in live:
            if procs[wid].exitcode is None:
                procs[wid].terminate()
        _wait_all(procs, _GRACE if timeout is None else timeout)
    except KeyboardInterrupt as exc:  # a second Ctrl-C while stopping: stop waiting, kill now
        interrupted = exc
    try:
        for process in procs:
            if process.exitcode is None:
                process.kill()
        _wait_all(procs, None)  # (quick after SIGKILL)
        for process in procs:
            process.close()
    finally:
        for sock in socks:
            sock.close(linger=0)
    if interrupted is not None:
        raise interrupted


# ----------------------------------------------------------------------------
# The worker
# ----------------------------------------------------------------------------


class _Stopped(BaseException):
    """The consumer asked this worker to stop (SIGTERM), or is gone.

    A BaseException, like ``GeneratorExit``, so that a source's
    ``except Exception`` does not swallow it.
    """


class _StopSignal:
    """Makes SIGTERM unwind the worker's main thread once: ``_Stopped`` is raised wherever it is.

    A blocking call (``time.sleep``, a read, a lock) is interrupted, so a
    source's ``finally`` blocks and context managers run.  Once the worker
    is finishing (``finishing()``), SIGTERM does nothing more, so the
    worker's own cleanup is never cut short; the consumer kills a worker
    that does not exit within ``timeout``.
    """

    def __init__(self) -> None:
        self.raised = False
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the consumer's to handle
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.raised:
            self.raised = True
            raise _Stopped

    def finishing(self) -> None:
        self.raised = True


class _Consumer:
    """Watches the consumer process from a worker, whatever started the worker.

    Uses a pidfd where the system has them (it becomes readable when the
    process exits, even before it is reaped); otherwise asks whether the
    pid still exists.  Opened first thing in the worker, so a consumer that
    died while the worker started is noticed too.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = None
        self.dead = False
        try:
            self.fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.dead = True
        except (AttributeError, OSError):  # no pidfds here: fall back on the pid
            pass

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the consumer to die; True if it is gone."""
        if self.dead:
            return True
        if self.fd is not None:
            ready, _, _ = select.select([self.fd], [], [], seconds)
            self.dead = bool(ready)
        else:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.dead = True
            except PermissionError:
                pass
            if not self.dead:
                time.sleep(seconds)
        return self.dead


_WATCH_EVERY = 0.25  # seconds between a watcher's looks when it has no pidfd
_ORPHAN_GRACE = 1.0  # seconds an orphaned worker's main thread gets to unwind before the watcher exits


def _watch(consumer: _Consumer, directory: str | None, done: threading.Event, main: int) -> None:
    """A worker's watcher thread: when the consumer dies, end this process, whatever its main thread does.

    Started first thing in the worker, before any setup or user code that
    could block.  It takes no lock that a fork may have left held (only
    system calls and the GIL): it removes the consumer's ipc directory
    (nobody else will), asks the main thread to unwind (SIGTERM directed
    at it, so a source's ``finally`` runs), and after ``_ORPHAN_GRACE``
    seconds ends the process with ``os._exit``.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the consumer's SIGTERM is the main thread's
    while not consumer.wait(None if consumer.fd is not None else _WATCH_EVERY):
        pass
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
    try:
        signal.pthread_kill(main, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    done.wait(_ORPHAN_GRACE)
    os._exit(1)


def _ipc_directory(endpoint: str) -> str | None:
    return os.path.dirname(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None


def _start_watcher(consumer: _Consumer, endpoint: str, done: threading.Event) -> None:
    """Start the watcher thread; the main thread sets ``done`` when it has finished."""
    watcher = threading.Thread(
        target=_watch, args=(consumer, _ipc_directory(endpoint), done, threading.main_thread().ident),
        name="pescador-watcher", daemon=True,
    )
    watcher.start()


class _Link:
    """The worker's end of the wire: reads acknowledgements while it sends."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock

    def _check(self, wait_ms: int) -> bool:
        """Read control messages for up to ``wait_ms``; True if an acknowledgement arrived."""
        acked = False
        events = self.sock.poll(wait_ms, zmq.POLLIN)
        while events:
            acked = self.sock.recv(zmq.NOBLOCK) == _ACK or acked
            events = self.sock.poll(0, zmq.POLLIN)
        return acked

    def writable(self) -> bool:
        """Whether the queue can take a message now."""
        return bool(self.sock.getsockopt(_EVENTS) & _POLLOUT)

    def send(self, frames: list) -> None:
        while True:
            try:
                wire.send(self.sock, frames, _NOBLOCK)
                return
            except zmq.Again:  # the queue is full: wait for room (a stop comes as SIGTERM)
                self.sock.poll(_POLL_MS, zmq.POLLOUT)

    def wait_for_ack(self) -> None:
        while not self._check(_POLL_MS):
            pass


def _seed_globals(seed: np.random.SeedSequence) -> None:
    """Seed numpy's legacy global generator and :mod:`random` from ``seed``, taking no lock.

    ``np.random.seed`` takes the global RandomState's lock.  Under fork,
    another thread of the consumer may have held that lock at the moment
    of the fork, and in the worker it then stays held for ever.  So the
    global RandomState is re-initialised in place with a new MT19937, which
    brings a new lock: every ``np.random.*`` function (and any alias of
    one, such as ``from numpy.random import randint``) uses it from then
    on.  :mod:`random`'s generator is C code under the GIL, with no lock.
    """
    state = seed.generate_state(8)
    legacy = getattr(np.random.mtrand, "_rand", None)
    if isinstance(legacy, np.random.RandomState):
        legacy.__init__(np.random.MT19937(np.random.SeedSequence(state)))
    else:  # (not the numpy this was written for: seed it the documented way)
        np.random.seed(state[:1])
    random.seed(int.from_bytes(state.tobytes(), "little"))


def _close(iterator: Any) -> None:
    """Close a source's iterator, so that its ``finally`` blocks and context managers run."""
    close = getattr(iterator, "close", None)
    if close is not None:
        try:
            close()
        except BaseException:  # (a source that misbehaves while closing: nothing more to do)
            pass


def _connect(sock: zmq.Socket, job: _Job) -> None:
    """Set up a worker's DEALER socket (its identity, flow control) and connect it to its consumer."""
    sock.setsockopt(zmq.IDENTITY, job.identity)
    sock.setsockopt(zmq.SNDHWM, job.config.hwm)
    sock.setsockopt(zmq.LINGER, 0)
    if job.password:  # (over TCP: the consumer lets in only the run's workers, see _gate)
        sock.setsockopt(zmq.PLAIN_USERNAME, b"worker")
        sock.setsockopt(zmq.PLAIN_PASSWORD, job.password)
    sock.connect(job.endpoint)


def _worker(job: _Job) -> None:
    """A worker process: run the recipe and send its items, then END (or ERROR).

    The order matters: first SIGTERM is made to unwind the main thread and
    a watcher thread is started (so whatever happens next, the worker
    stops when told or when its consumer dies), and only then does the
    worker touch state a fork may have left locked (the global random
    generators, ZeroMQ) or run the user's code.
    """
    stop = context = sock = iterator = reporter = outbox = None
    done = threading.Event()
    try:
        stop = _StopSignal()
        _start_watcher(_Consumer(job.consumer), job.endpoint, done)
        _wait_to_begin(job)
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)  # (held before it is set up: the finally below closes it)
        _connect(sock, job)
        link = _Link(sock)
        outbox = wire.Outbox(link.send, link.writable, job.config.batch_wait, job.config.copy)
        try:
            recipe = _pickling.loads(job.recipe) if job.pickled else job.recipe
            set_worker_info(WorkerInfo(job.wid, job.config.workers, job.seed))
            _seed_globals(job.seed)
            reporter = _report.worker_start(recipe, job.report, job.wid, context)
            if job.tracked:  # a resumable run: the worker's stages start (or resume) as parts of one
                iterator = _start_share(recipe, job)
            else:
                iterator = iter(recipe)
            _send_items(iterator, job, outbox)
            outbox.finish()
            last = wire.encode_end()
        except _Stopped:
            raise
        except BaseException as exc:
            last = _error_after(outbox, exc)
        iterator = None
        _report.worker_final(reporter)  # (before END: the consumer waits for it once END has come)
        link.send(last)
        link.wait_for_ack()
    except _Stopped:
        _close(iterator)  # the source's cleanup runs (GeneratorExit), unless it already unwound
    finally:
        if stop is not None:
            stop.finishing()
        if outbox is not None:
            outbox.close()  # (its thread stops before the socket closes)
        iterator = None  # (nested generators are closed as they are released)
        _report.worker_close(reporter)
        if sock is not None:
            sock.close(linger=0)
        if context is not None:
            context.term()
        done.set()


def _start_share(recipe: Any, job: _Job) -> Any:
    """Start this worker's share of a resumable run, from its state (checked by its own stages), and drop
    the items it had delivered after that state."""
    try:
        run = start_share(recipe, worker_info().seed, job.state, job.most)
        replay(run, job.skip, f"zmq_offload: worker {job.wid}'s share (entry {job.wid} of the field 'skip')")
        return run
    except PescadorError as exc:
        if job.state is None and not job.skip:
            raise
        raise PescadorError(
            f"zmq_offload: worker {job.wid} cannot start from its state (entry {job.wid} of the fields "
            f"'workers' and 'skip'): {exc}"
        ) from None


def _error_after(outbox: wire.Outbox, exc: BaseException) -> list:
    """The ERROR message for ``exc``, once the items made before it have left.

    If one of those items cannot travel, that comes first: the error names
    it (after the items before it).
    """
    text = traceback.format_exc()
    try:
        outbox.finish()
    except _Stopped:
        raise
    except BaseException as earlier:
        return wire.encode_error(traceback.format_exc(), earlier, pickled=True)
    return wire.encode_error(text, exc, pickled=True)


# In a resumable run a worker sends its state (after an item, as JSON) with its first item and then with
# the first item after each STATE_EVERY seconds (more seldom where computing a state takes long: states take
# at most 1/_STATE_SHARE of the worker's time), and at least with every STATE_ITEMS-th item.  A resume draws
# again, and drops, the items the worker delivered after its last state: at most about STATE_EVERY seconds
# of its work, and fewer than STATE_ITEMS items (so a state's 'skip' is bounded: see _Offload.skip_bound).
STATE_EVERY = 0.01
STATE_ITEMS = 4096
_STATE_SHARE = 10


def _send_items(iterator: Iterator, job: _Job, outbox: wire.Outbox) -> None:
    """Put every item of the worker's run in the outbox; in a tracked run, some with the worker's state after
    them (see STATE_EVERY): the consumer counts the items delivered after the last state it got."""
    put = outbox.put
    if not job.tracked:
        for item in iterator:
            put(item)
        return
    state, clock, dumps = iterator.state, time.monotonic, json.dumps
    due = clock()  # (the first item carries one)
    left = STATE_ITEMS
    for item in iterator:
        left -= 1
        now = clock()
        if now < due and left:
            put(item)
            continue
        after = dumps(state())
        due, left = now + max(STATE_EVERY, _STATE_SHARE * (clock() - now)), STATE_ITEMS
        put(item, after)


# ----------------------------------------------------------------------------
# Persistent workers (persistent_workers=True)
# ----------------------------------------------------------------------------
#
# The workers of a persistent recipe belong to a pool that outlives its runs.  The recipe holds a
# handle (_Workers) in place of persistent_workers=True: each application of the transform makes a new
# one, a pickle or a deep copy of the recipe makes a new one (so its runs start workers of their own),
# and the pool is found in _POOLS by the handle's id, never held in the recipe's value.  The pool ends
# when the handle is collected (with every recipe and run holding it: weakref.finalize, which also runs
# at the interpreter's exit), when the recipe is closed, or, through the guardian and the workers'
# watchers, when this process dies.
#
# A pool's worker waits for a command; each run is a command (the run's number, the worker's seed,
# its start in a resumable run, where its observers report).  The worker's messages carry the run's
# number as a first frame, and between runs it says READY; the consumer sends a worker its command
# when its READY arrives and drops every message of an earlier run.  A run stopped early raises the
# pool's shared count (``cancel``) above its number and sends SIGTERM to the workers: the run in a
# worker unwinds (its source's finally runs), and the worker says READY again.  The shared count makes
# a late SIGTERM harmless: it stops only a run whose number is below the count.

_READY = b"ready"
_START = b"start"
_REPLACEMENTS = 3  # a worker's place taken at most so many times in one run (see _PoolInbox._check_stopping)
_BEGUN = b"\x00begun"  # (a worker's first message of a run, before any of the user's code runs: no header is it)
_CLOSING = 2**63 - 1  # ``cancel`` while the pool closes: every worker ends


class _Workers:
    """The handle of a persistent recipe's workers: it is not data (equal to any other, fingerprinted as
    ``True``), and a copy of it by pickle is a new handle."""

    __slots__ = ("__weakref__",)

    def __reduce__(self) -> tuple:
        return (_Workers, ())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Workers) or NotImplemented

    def __hash__(self) -> int:
        return hash(_Workers)

    def __repr__(self) -> str:
        return "True"

    def __pescador_fingerprint__(self) -> bool:
        return True

    def __pescador_close__(self) -> None:
        pool = _POOLS.get(id(self))
        if pool is not None:
            pool.close(forced=False)


class _PersistentTransform(Transform):
    """``zmq_offload(persistent_workers=True)``: each recipe it makes holds a new handle (:class:`_Workers`)."""

    __slots__ = ()

    def __call__(self, upstream: Any) -> Any:
        recipe = super().__call__(upstream)
        return type(recipe)(recipe.fn, recipe.args, dict(recipe.kwargs, persistent_workers=_Workers()), self)

    def __reduce__(self):
        return (_PersistentTransform, (self.name, self.fn, self.params, self.coerce))


_POOLS: dict = {}  # id(handle) -> its _Pool
_POOLS_LOCK = threading.Lock()


def _pooled(handle: _Workers, upstream: Any, config: _Config, starts: list | None, skips: list,
            delivered: dict, seeds: list, most: int | None) -> Iterator:
    """A run on the handle's pool (started at the first run), or, when a run of it is live, on workers of
    its own."""
    with _POOLS_LOCK:  # (two threads starting the first run at once make one pool, not two)
        pool = _POOLS.get(id(handle))
        if pool is None or pool.pid != os.getpid() or pool.closed:
            pool = _POOLS[id(handle)] = _Pool(upstream, config)
            weakref.finalize(handle, _close_pool, id(handle), pool)
    if not pool.acquire():
        yield from _run(upstream, config, starts, skips, delivered, seeds, most)
        return
    try:
        yield from pool.run(starts, skips, delivered, seeds, most)
    finally:
        pool.release()  # (the run held ``handle``, so the pool lived while it did)


def _close_pool(key: int, pool: "_Pool") -> None:
    """The handle was collected, or the interpreter exits: end its pool."""
    with _POOLS_LOCK:
        if _POOLS.get(key) is pool:
            del _POOLS[key]
    pool.close(forced=True)


class _Pool:
    """The persistent workers of one recipe object, and what they need: sockets, guardian, directory."""

    def __init__(self, upstream: Any, config: _Config) -> None:
        self.upstream = upstream
        self.config = dataclasses.replace(config, persistent_workers=True)  # (not the handle: it would never go)
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.busy = self.closed = self.started = False
        self.runs = 0
        self.context: Any = None
        self.socks: list = []
        self.procs: list = []
        self.identities: list = []
        self.stopping: dict = {}  # worker -> when its run was stopped (it has not said READY since)
        self.directory = self.guardian = self.gate = self.cancel = None

    def acquire(self) -> bool:
        with self.lock:
            if self.busy or self.closed:
                return False
            self.busy = True
            return True

    def release(self) -> None:
        with self.lock:
            self.busy = False

    def _start(self) -> None:
        """Start the workers (the first run), as :func:`_run` does; on failure, release what was made (the
        next run of the recipe makes a new pool)."""
        _check_not_daemonic()
        self.mp = mp = multiprocessing.get_context(self.config.start_method)
        pickled, payload = _payload(self.upstream, mp.get_start_method())
        self.started = True  # (from here on, close() releases what exists)
        try:
            self._make(pickled, payload)
        except BaseException:
            self.close(forced=True)
            raise

    def _make(self, pickled: bool, payload: Any) -> None:
        config, mp = self.config, self.mp
        self.context = context = zmq.Context()
        if config.workers + 16 > context.get(zmq.MAX_SOCKETS):
            context.set(zmq.MAX_SOCKETS, config.workers + 16)
        for _ in range(config.workers):
            sock = context.socket(zmq.ROUTER)
            self.socks.append(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, config.hwm)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.guardian, self.directory = _start_guardian(config.transport == "ipc")
        self.gate, password = _gate(context, self.socks) if config.transport == "tcp" else (None, b"")
        self.endpoints = _bind(self.socks, self.directory, config.min_port, config.max_port, config.max_tries)
        self.cancel = mp.RawValue("q", 0)
        self.job = _Job(config, pickled, payload, self.endpoints[0], os.getpid(), tracked=False,
                        password=password, cancel=self.cancel)
        _guard_forkserver_directory(self.guardian, mp.get_start_method())
        for wid in range(config.workers):
            self.procs.append(None)
            self.identities.append(b"")
            self._spawn(wid)

    def _spawn(self, wid: int) -> None:
        """Start worker ``wid`` (again: a new identity, so that what its predecessor sent is dropped)."""
        identity = b"pescador-%d-%s" % (wid, secrets.token_hex(16).encode())
        job = dataclasses.replace(self.job, wid=wid, identity=identity, endpoint=self.endpoints[wid])
        process = _start_worker(self.mp, _pool_worker, job, self.guardian)
        self.procs[wid], self.identities[wid] = process, identity
        self.stopping.pop(wid, None)

    def replace(self, wid: int) -> None:
        """Kill worker ``wid`` (dead, or not stopping in time) and start another in its place."""
        process = self.procs[wid]
        if process.exitcode is None:
            process.kill()
        process.join()
        process.close()
        self._spawn(wid)

    def run(self, starts: list | None, skips: list, delivered: dict, seeds: list, most: int | None) -> Iterator:
        """One run on the pool's workers (see above); a run stopped early stops the recipe in them."""
        if not self.started:
            self._start()
        config = self.config
        for wid, process in enumerate(self.procs):  # (a worker that died between runs: another in its place)
            if _exited(process):
                self.replace(wid)
        self.runs += 1
        number = self.runs
        tag = number.to_bytes(8, "little")
        live = set(range(config.workers))
        relay = _report.Relay(self.upstream, self.context, self.endpoints[0], config)
        try:
            relay.listen()
            inboxes = []
            for wid in range(config.workers):
                command = pickle.dumps((number, seeds[wid], starts is not None, None if starts is None else starts[wid],
                                        most, skips[wid], relay.address))
                inboxes.append(_PoolInbox(wid, self, tag, command))
            yield from _receive(inboxes, live, config.copy, None if starts is None else delivered)
            relay.finish()
        finally:
            try:
                if live and not self.closed:  # (stopped early, or failed: stop the run in the workers)
                    self.cancel.value = number + 1
                    now = time.monotonic()
                    for wid in live:
                        self.stopping.setdefault(wid, now)
                        if self.procs[wid].exitcode is None:
                            self.procs[wid].terminate()
            finally:
                _report.close(relay)

    def close(self, forced: bool) -> None:
        """End the workers and release everything (in the process that started them; elsewhere, forget them).

        Not while a run is live, unless ``forced`` (the handle was collected, or the interpreter exits)."""
        with self.lock:
            if self.closed:
                return
            if self.busy and not forced:
                raise PescadorError(
                    "zmq_offload: cannot close this recipe's persistent workers while a run of it is live; "
                    "finish that run or close it first (run.close(), or leave its for loop), then recipe.close()"
                )
            self.closed = True
        if not self.started or self.pid != os.getpid():
            return
        try:
            try:
                if self.cancel is not None:
                    self.cancel.value = _CLOSING
                procs = [p for p in self.procs if p is not None]
                _shutdown(self.socks, procs, set(range(len(procs))), self.config.timeout)
            finally:
                if self.gate is not None:
                    self.gate.stop()
                if self.context is not None:
                    self.context.term()
        finally:
            try:
                if self.directory is not None:
                    shutil.rmtree(self.directory, ignore_errors=True)
            finally:
                _stop_guardian(self.guardian)


def _exited(process: Any) -> bool:
    """Whether a worker process has died, as soon as it shows: a worker killed with SIGKILL becomes a
    zombie at once, but its exit code (``waitpid``) shows only once all its threads have ended, which a
    run starting at that moment must not take for a live worker (it would send the run to the dead one)."""
    if process.exitcode is not None:
        return True
    try:
        with open(f"/proc/{process.pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):  # (no /proc here: the exit code alone)
        return False


class _PoolInbox(_Inbox):
    """The consumer's end of a pool worker's queue for one run: it sends the worker the run's command when
    the worker says READY, drops what an earlier run sent, and replaces a worker that has not stopped its
    earlier run in time (``timeout``, one second when None)."""

    __slots__ = ("pool", "tag", "command", "begun", "acked", "opened", "replaced")

    def __init__(self, wid: int, pool: _Pool, tag: bytes, command: bytes) -> None:
        super().__init__(wid, pool.socks[wid], pool.identities[wid], pool.procs[wid])
        self.pool, self.tag, self.command = pool, tag, command
        self.begun = False  # whether the worker was sent this run's command
        self.acked = False  # whether it said BEGUN: a worker that dies before is replaced, and the run sent again
        self.replaced = 0  # how many times in this run
        self.opened = time.monotonic()  # (a worker still stopping an earlier run gets ``timeout`` from here on)

    def take(self, copy: bool, live: set) -> Any:
        recv, more = self.sock.recv, self.sock.getsockopt
        while True:
            try:
                identity = recv(_NOBLOCK)
            except zmq.Again:
                if not self.acked:  # (the run has not begun in it: a dead or stuck one is replaced)
                    self._check_stopping()
                return None
            except zmq.ZMQError as exc:
                raise PescadorError(f"zmq_offload: the recipe's persistent workers were closed during its run ({exc})") from None
            tag = recv()
            frames = []
            if more(_RCVMORE):
                frames.append(recv())  # the header: small, so a copy is cheaper than a zmq.Frame
                while more(_RCVMORE):
                    frames.append(recv(copy=False))
            if identity != self.identity:
                continue  # (a stranger, or a worker replaced since)
            if not frames:
                if tag == _READY and not self.begun:
                    if _exited(self.process) or not self._start_run():
                        self._replace()  # (it said READY, then died: the run was never begun in it)
                        continue
                    self.heard = time.monotonic()
                    self.pool.stopping.pop(self.wid, None)
                    self.begun = True
                continue
            if tag != self.tag:
                continue  # (an earlier run's: it does not count as hearing from the worker in this run)
            self.heard = time.monotonic()
            if len(frames) == 1 and frames[0] == _BEGUN:
                self.acked = True
                continue
            break
        message = wire.decode(frames, copy)
        kind = message[0]
        if kind == wire.ITEM or kind == wire.BATCH or kind == wire.ITEM_STATE:
            return message
        live.discard(self.wid)
        if kind == wire.END:
            return _ENDED
        when = f" after sending {self.sent} items"
        raise wire.error_from(message[1], f"zmq_offload: worker {self.wid}", when=when)

    def _check_stopping(self) -> None:
        """Replace the worker if it has died before it began this run (said BEGUN), or was told to stop an
        earlier run and has not, ``timeout`` seconds on.  A worker whose place was taken _REPLACEMENTS times
        in one run is not replaced again: its death is reported (one that dies as it starts would be
        replaced for ever)."""
        since = self.pool.stopping.get(self.wid)
        timeout = _GRACE if self.pool.config.timeout is None else self.pool.config.timeout
        if self.replaced < _REPLACEMENTS and (_exited(self.process) or (
            since is not None and time.monotonic() - max(since, self.opened, self.heard) > timeout
        )):
            self.replaced += 1
            self._replace()

    def _start_run(self) -> bool:
        """Send the worker this run's command; False if it is gone (ZeroMQ no longer knows its identity)."""
        try:
            self.sock.send_multipart([self.identity, _START, self.command])
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise

    def _replace(self) -> None:
        """Another worker in this one's place, sent this run's command once it says READY (nothing of the
        run came from this one: it had not begun it)."""
        self.pool.replace(self.wid)
        self.identity, self.process = self.pool.identities[self.wid], self.pool.procs[self.wid]
        self.dead = None
        self.begun = self.acked = False


class _RunSignal:
    """SIGTERM in a pool's worker: it unwinds the main thread when the run it is in was stopped (the shared
    ``cancel`` is above its number), when the pool closes, or when the consumer is gone; otherwise (a late
    signal of an earlier run) it does nothing.  While the main thread sends a message, it waits for the end
    of the message (a message cut in two would corrupt the next one)."""

    def __init__(self, cancel: Any, consumer: _Consumer) -> None:
        self.cancel, self.consumer = cancel, consumer
        self.run: int | None = None
        self.shielded = True  # (set up, or finishing a run: no raise until idle() or enter())
        self.critical = self.pending = False
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the consumer's to handle
        signal.signal(signal.SIGTERM, self._handle)

    def ending(self) -> bool:
        return self.cancel.value == _CLOSING or self.consumer.dead

    def stopped(self, run: int) -> bool:
        return self.cancel.value > run

    def _due(self) -> bool:
        return not self.shielded and (self.ending() or (self.run is not None and self.stopped(self.run)))

    def _handle(self, signum: int, frame: Any) -> None:
        if self.critical:
            self.pending = True
        elif self._due():
            self.shielded = True
            raise _Stopped

    def sent(self) -> None:
        """A message has gone: a signal that came meanwhile takes effect now."""
        self.critical = False
        if self.pending:
            self.pending = False
            self._handle(signal.SIGTERM, None)

    def enter(self, run: int) -> None:
        self.run, self.shielded = run, False
        self._handle(signal.SIGTERM, None)  # (stopped before it began)

    def shield(self) -> None:
        self.run, self.shielded = None, True

    def idle(self) -> None:
        self.run, self.shielded = None, False


class _PoolLink(_Link):
    """A pool worker's end of the wire: messages tagged with their run, commands between runs."""

    def __init__(self, sock: zmq.Socket, signals: _RunSignal) -> None:
        super().__init__(sock)
        self.signals, self.main = signals, threading.get_ident()

    def send_run(self, run: int, tag: bytes, frames: list) -> None:
        """Send a message of run ``run``, waiting for room; dropped once that run was stopped."""
        signals, sock = self.signals, self.sock
        main = threading.get_ident() == self.main
        while True:
            if main:
                signals.critical = True
            try:
                sock.send(tag, _NOBLOCK | zmq.SNDMORE)  # (the rest of a message never waits: zmq takes it)
                wire.send(sock, frames, _NOBLOCK)
                return
            except zmq.Again:
                pass
            finally:
                if main:
                    signals.sent()
            if signals.stopped(run):
                return
            sock.poll(_POLL_MS, zmq.POLLOUT)

    def ready(self) -> None:
        """Say READY (between runs): wait for room, unless the pool closes."""
        signals, sock = self.signals, self.sock
        while not signals.ending():
            signals.critical = True
            try:
                sock.send(_READY, _NOBLOCK)
                return
            except zmq.Again:
                pass
            finally:
                signals.sent()
            sock.poll(_POLL_MS, zmq.POLLOUT)

    def command(self) -> tuple | None:
        """The next run's command; None once the pool closes or the consumer is gone."""
        sock = self.sock
        while not self.signals.ending():
            if sock.poll(_POLL_MS, zmq.POLLIN):
                frames = sock.recv_multipart()
                if len(frames) == 2 and frames[0] == _START:
                    return pickle.loads(frames[1])  # (from our own consumer, over our private connection)
        return None


def _pool_worker(job: _Job) -> None:
    """A pool's worker process: say READY, run the recipe as each command says, and again, until the pool
    closes or the consumer is gone.  Set up in the order :func:`_worker` is."""
    consumer = _Consumer(job.consumer)
    signals = _RunSignal(job.cancel, consumer)
    context = sock = None
    done = threading.Event()
    try:
        _start_watcher(consumer, job.endpoint, done)
        _wait_to_begin(job)
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        _connect(sock, job)
        link = _PoolLink(sock, signals)
        recipe: list = []  # (the recipe, once unpickled: at the first run)
        while True:
            signals.idle()
            link.ready()
            command = link.command()
            if command is None:
                return
            _pool_run(job, recipe, command, link, signals, context)
    except _Stopped:
        pass
    finally:
        signals.shield()
        if sock is not None:
            sock.close(linger=0)
        if context is not None:
            context.term()
        done.set()


def _pool_run(job: _Job, recipe: list, command: tuple, link: _PoolLink, signals: _RunSignal,
              context: zmq.Context) -> None:
    """One run in a pool's worker: its items, then END (or ERROR), each message tagged with the run; a stop
    (SIGTERM) unwinds the source and ends the run here."""
    number, seed, tracked, state, most, skip, report = command
    tag = number.to_bytes(8, "little")
    run_job = dataclasses.replace(job, seed=seed, tracked=tracked, state=state, most=most, skip=skip)
    iterator = reporter = outbox = None
    try:
        signals.enter(number)
        link.send_run(number, tag, [_BEGUN])  # (before the user's code: a death before this restarts the share)
        outbox = wire.Outbox(functools.partial(link.send_run, number, tag), link.writable, job.config.batch_wait,
                             job.config.copy)
        try:
            if not recipe:
                recipe.append(_pickling.loads(job.recipe) if job.pickled else job.recipe)
            set_worker_info(WorkerInfo(job.wid, job.config.workers, seed))
            _seed_globals(seed)
            signals.critical = True  # (a stop waits until the reporter is ours to stop: else its thread is left)
            try:
                reporter = _report.worker_start(recipe[0], report, job.wid, context)
            finally:
                signals.sent()
            iterator = _start_share(recipe[0], run_job) if tracked else iter(recipe[0])
            _send_items(iterator, run_job, outbox)
            outbox.finish()
            last = wire.encode_end()
        except _Stopped:
            raise
        except BaseException as exc:
            last = _error_after(outbox, exc)
        iterator = None
        _report.worker_final(reporter)
        link.send_run(number, tag, last)
    except _Stopped:
        _close(iterator)
    finally:
        signals.shield()
        if outbox is not None:
            outbox.close()
        iterator = None
        _report.worker_close(reporter)
