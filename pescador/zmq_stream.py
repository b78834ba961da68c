"""``zmq_offload``: run a stream in worker processes, receive its items over ZeroMQ.

A run of an offloaded stream starts ``workers`` processes.  Each iterates
the upstream recipe and sends its items, one multipart message per item,
or several small items to a message when they come fast (see
``batch_wait`` and :mod:`pescador.wire`), to the consumer, which yields
them one at a time, in order, as they arrive.  The consumer binds one
ROUTER socket on a private endpoint (an ``ipc://`` path in a new
directory of mode 0700, or loopback TCP, where a peer must also show the
run's secret during the handshake); each worker connects a DEALER socket
with a secret identity, and messages from any other peer are dropped.

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
  system buffers on the connection, and what the worker holds, at most
  64 KiB, for at most about ``batch_wait`` seconds beyond flow control).

Resumable runs
--------------
One stage, :class:`_Offload`, runs plain and resumable runs alike.  In a
resumable run (:func:`pescador.resumable`) each worker starts its share
with :func:`pescador.stage.start` and sends its state with each item; the
stage's state is each worker's state after its last delivered item.  A
plain run's workers send no state.  This module runs stages through
:mod:`pescador.stage` alone: it does not import :mod:`pescador.resume`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import multiprocessing
import multiprocessing.connection
import numbers
import os
import pickle
import random
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
import zmq

from . import _report, wire
from .core import ItemTransform, Transform
from .exceptions import ParameterError, ParameterTypeError, PescadorError
from .stage import Offloaded, start, tracked
from .workers import WorkerInfo, set_worker_info

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
        workers by itself.  With several workers, items interleave as they
        arrive; with one, they arrive in order.
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
        most ``hwm`` large items, or ``hwm`` times 64 KiB of small ones.
    transport : None, "ipc" or "tcp"
        ``"ipc"``: a socket file in a new private directory (mode 0700);
        ``"tcp"``: loopback TCP (127.0.0.1) on a port between ``min_port``
        and ``max_port``, which any process on this host can reach: the
        workers show the run's secret during ZeroMQ's handshake (PLAIN,
        checked by a ZAP handler in the consumer), and any other peer is
        cut off before anything it sends is kept.  (ZeroMQ's limit on a
        message's size would not do: it bounds each frame, not how many
        frames a message has, and a run's own items, a 1 GB batch too,
        must travel.)  None chooses ipc where ZeroMQ supports it.
    min_port, max_port : int
        The range of TCP ports to try (both included).
    max_tries : int >= 1
        How many random ports to try before giving up.
    start_method : None, "fork", "forkserver" or "spawn"
        How to start workers (see :mod:`multiprocessing`); None uses the
        platform's default.  With "forkserver" and "spawn", the recipe is
        pickled: it must be made of module-level functions.
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
    )
    return Transform("zmq_offload", _Offload, config.params())


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

    def params(self) -> dict:
        """The options that differ from the defaults."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default
        }


@dataclasses.dataclass(frozen=True)
class _Job:
    """What one worker is handed: the run's options, where to send, and its own share."""

    config: _Config
    pickled: bool  # ``recipe`` is the recipe's pickle (spawn, forkserver), else the recipe itself (fork)
    recipe: Any
    endpoint: str
    consumer: int  # the consumer's pid
    tracked: bool  # a resumable run: send this worker's state with each item
    wid: int = 0
    identity: bytes = b""
    seed: Any = None  # its np.random.SeedSequence
    state: Any = None  # where its share resumes (a tracked run), or None: from the start
    report: Any = None  # where its observers report, and the run's secret (pescador._report), or None
    password: bytes = b""  # over TCP, what the worker shows the consumer to be let in (see _gate)


# ----------------------------------------------------------------------------
# The consumer
# ----------------------------------------------------------------------------


def _payload(upstream: Any, method: str) -> tuple:
    """What a worker receives: the recipe itself under fork, else its pickle."""
    if method == "fork":
        return False, upstream
    try:
        return True, pickle.dumps(upstream, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise PescadorError(
            f"zmq_offload: the recipe cannot be sent to workers started with {method!r}, because it "
            f"cannot be pickled: {type(exc).__name__}: {exc}. Build recipes from module-level functions "
            "and picklable arguments (no lambdas, closures, open files or sockets), or use "
            "start_method='fork'"
        ) from None


def _bind(sock: zmq.Socket, transport: str, min_port: int, max_port: int, max_tries: int) -> tuple:
    """Bind ``sock`` privately; return its endpoint and the directory to remove (if any)."""
    if transport == "ipc":
        directory = tempfile.mkdtemp(prefix="pescador-")  # mode 0700: only this user may connect
        endpoint = "ipc://" + os.path.join(directory, "s")
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise PescadorError(f"zmq_offload: cannot bind {endpoint}: {exc}; try transport='tcp'") from None
        return endpoint, directory
    ports = range(min_port, max_port + 1)
    for port in random.Random().sample(ports, min(max_tries, len(ports))):  # (not the user's random)
        try:
            sock.bind(f"tcp://127.0.0.1:{port}")
        except zmq.ZMQError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise PescadorError(f"zmq_offload: cannot bind tcp://127.0.0.1:{port}: {exc}") from None
        return f"tcp://127.0.0.1:{port}", None
    raise PescadorError(
        f"zmq_offload: no free TCP port on 127.0.0.1 between {min_port} and {max_port} after "
        f"{min(max_tries, len(ports))} tries; widen the range or raise max_tries"
    )


def _gate(context: zmq.Context, sock: zmq.Socket) -> tuple:
    """``(gate, password)``: let only the run's workers into ``sock`` (before it binds a TCP port).

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
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # (no handler, no entry)
    sock.setsockopt(zmq.ZAP_DOMAIN, b"pescador")
    sock.setsockopt(zmq.PLAIN_SERVER, 1)
    return gate, password.encode()


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

    def launch(self, upstream: Any) -> Iterator:
        return _run(upstream, self.config, self.starts if self.tracked else None, self.delivered)


def _run(upstream: Any, config: _Config, starts: list | None, delivered: dict) -> Iterator:
    """A run: start the workers, yield their items, and always clean up.

    With ``starts`` (one state or None per worker) a tracked run, whose
    workers send their state with each item: kept in ``delivered`` (worker
    id -> JSON text) as their items are yielded.
    """
    mp = multiprocessing.get_context(config.start_method)
    pickled, payload = _payload(upstream, mp.get_start_method())
    seeds = np.random.SeedSequence(config.random_state).spawn(config.workers)
    context = zmq.Context()
    sock = directory = guardian = relay = gate = None
    procs: list = []
    identities: dict = {}
    live: set = set()  # the workers that have not ended (END or ERROR) yet
    try:
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, config.hwm)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        gate, password = _gate(context, sock) if config.transport == "tcp" else (None, b"")
        endpoint, directory = _bind(sock, config.transport, config.min_port, config.max_port, config.max_tries)
        relay = _report.Relay(upstream, context, endpoint, config)  # the workers' observers report to it
        shared = _Job(config, pickled, payload, endpoint, os.getpid(), tracked=starts is not None,
                      report=relay.address, password=password)
        for wid in range(config.workers):
            identity = b"pescador-%d-%s" % (wid, secrets.token_hex(16).encode())
            identities[identity] = wid
            job = dataclasses.replace(shared, wid=wid, identity=identity, seed=seeds[wid],
                                      state=None if starts is None else starts[wid])
            process = mp.Process(target=_worker, args=(job,), name=f"pescador-worker-{wid}", daemon=True)
            process.start()
            procs.append(process)
            live.add(wid)
        guardian = _start_guardian(procs, directory)
        relay.listen()
        yield from _receive(sock, procs, identities, live, config.copy, None if starts is None else delivered)
        relay.finish()  # the observers hold the workers' final totals
    finally:
        try:
            try:
                _shutdown(sock, procs, live, config.timeout)
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


def _receive(sock: zmq.Socket, procs: list, identities: dict, live: set, copy: bool,
             states: dict | None = None) -> Iterator:
    """Yield items until every worker has ended; raise on a worker's error or death.

    ``live`` holds the workers that have not ended; a worker leaves it when
    its END or ERROR arrives.  A death is reported with the number of the
    worker's items the consumer received (and yielded).

    A dead worker is reported once everything it sent has been received:
    at once when the socket is quiet, and otherwise once the other peers'
    messages show that its queue is empty.  ZeroMQ serves the queues that
    hold messages in turn, so a queue that still held some would have given
    one among the next few; while a death is pending, the socket is made to
    process its commands at every message, so that a queue that filled up
    meanwhile takes its turn at once (ZeroMQ otherwise looks only every 100
    messages).
    """
    sent = [0] * len(procs)  # items received from each worker
    received = 0  # messages so far (from any peer: ZeroMQ serves them all in turn)
    last = [0] * len(procs)  # ``received`` when each worker's latest message came
    drained_after = 2 * len(procs) + 2  # others' messages that prove a queue empty
    pending: dict = {}  # dead worker -> (``received``, time) when its death was noticed
    next_check = time.monotonic() + _CHECK_EVERY
    recv, more = sock.recv, sock.getsockopt
    while live:
        try:
            identity = recv(_NOBLOCK)
        except zmq.Again:
            if not sock.poll(_POLL_MS):  # quiet: whatever a dead worker sent has arrived
                for wid in live:
                    if procs[wid].exitcode is not None:
                        raise _death(procs[wid], wid, sent[wid]) from None
                next_check = time.monotonic() + _CHECK_EVERY
            continue
        frames = [recv()]  # the header: small, so a copy is cheaper than a zmq.Frame
        while more(_RCVMORE):
            frames.append(recv(copy=False))
        now = time.monotonic()
        if now >= next_check:  # messages are flowing: check on the workers now and then
            next_check = now + _CHECK_EVERY
            for wid in live:
                if wid not in pending and procs[wid].exitcode is not None:
                    pending[wid] = (received, now)
        if pending:
            more(_EVENTS)  # (processes the socket's commands: queues that filled up are served)
            for wid, (noticed, when) in pending.items():
                if received - max(noticed, last[wid]) >= drained_after and now - when >= 0.05:
                    raise _death(procs[wid], wid, sent[wid])
        received += 1
        wid = identities.get(identity)
        if wid is None:
            continue  # not one of our workers: dropped
        last[wid] = received
        kind, payload = wire.decode(frames, copy)
        if kind == wire.ITEM:
            sent[wid] += 1
            yield payload
        elif kind == wire.BATCH:  # several items, handed out one at a time
            items, item_states = payload
            for n, item in enumerate(items):
                sent[wid] += 1
                if states is not None and item_states is not None:
                    states[wid] = item_states[n]  # the worker's state once this item is delivered
                yield item
        elif kind == wire.ITEM_STATE and states is not None:  # (a tracked run's workers send these)
            sent[wid] += 1
            states[wid] = payload[1]  # the worker's state once this item is delivered
            yield payload[0]
        elif kind == wire.END:
            live.discard(wid)
            pending.pop(wid, None)  # it ended before it died: nothing was lost
            _send(sock, identity, _ACK)
        else:
            live.discard(wid)
            _send(sock, identity, _ACK)
            when = f" after sending {sent[wid]} items"  # (our own worker process: its pickle is trusted)
            raise wire.error_from(payload, f"zmq_offload: worker {wid}", trusted=True, when=when)


def _send(sock: zmq.Socket, identity: bytes, message: bytes) -> bool:
    """Send a control message to one worker; False if it cannot take it now."""
    try:
        sock.send_multipart([identity, message], _NOBLOCK)
        return True
    except zmq.ZMQError:  # not connected (yet, or any more), or its queue is full
        return False


_GUARD_GRACE = 1.5  # seconds after the consumer's death before the guardian kills the workers left

# The guardian of a run: a tiny Python process (no site, no pescador, no numpy) that the consumer starts
# with subprocess (safe beside threads under every start method) and hands pidfds of itself and of its
# workers.  When the consumer dies, it gives the workers _GUARD_GRACE seconds (their watcher threads end
# them sooner), kills those left, and removes the run's ipc directory.  The consumer kills it at the end
# of every run, after its own cleanup, and reaps it.
_GUARD = """
import os, select, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
consumer, grace, directory = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
workers = [int(fd) for fd in sys.argv[4:]]
select.select([consumer], [], [])
deadline = time.monotonic() + grace
while workers and time.monotonic() < deadline:
    ready = select.select(workers, [], [], max(0.0, deadline - time.monotonic()))[0]
    workers = [fd for fd in workers if fd not in ready]
for fd in workers:
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
if directory:
    shutil.rmtree(directory, ignore_errors=True)
"""


def _start_guardian(procs: list, directory: str | None) -> subprocess.Popen | None:
    """Start the run's guardian (see ``_GUARD``); None where the system has no pidfds.

    Why a process: a worker's watcher thread needs the GIL, which a main
    thread stuck in C code may never let go, and the consumer's ipc
    directory outlives workers that have already ended.  Why the consumer
    opens the pidfds: its workers are its children, not yet reaped, so their
    pids cannot have been reused.
    """
    fds: list = []
    try:
        fds.append(os.pidfd_open(os.getpid()))
        fds += [os.pidfd_open(p.pid) for p in procs]
        args = [sys.executable, "-I", "-S", "-c", _GUARD, str(fds[0]), str(_GUARD_GRACE), directory or ""]
        return subprocess.Popen(args + [str(fd) for fd in fds[1:]], pass_fds=fds, stdin=subprocess.DEVNULL)
    except (AttributeError, OSError):
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _stop_guardian(guardian: subprocess.Popen | None) -> None:
    if guardian is not None:
        guardian.kill()
        guardian.wait()


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


def _shutdown(sock: Any, procs: list, live: set, timeout: float | None) -> None:
    """Stop the workers and release everything.

    Workers that ended (their END or ERROR was acknowledged) exit by
    themselves.  The others are stopped at once with SIGTERM, which makes
    a worker unwind its source (its ``finally`` blocks run) and kills one
    that has not yet started its source (so a worker still starting costs
    nothing to stop).  Whatever still runs after ``timeout`` seconds (one
    when None) is killed.  The socket stays open meanwhile, so that
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
        if sock is not None:
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
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, job.identity)
        sock.setsockopt(zmq.SNDHWM, job.config.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        if job.password:  # (over TCP: the consumer lets in only the run's workers, see _gate)
            sock.setsockopt(zmq.PLAIN_USERNAME, b"worker")
            sock.setsockopt(zmq.PLAIN_PASSWORD, job.password)
        sock.connect(job.endpoint)
        link = _Link(sock)
        outbox = wire.Outbox(link.send, link.writable, job.config.batch_wait, job.config.copy)
        try:
            recipe = pickle.loads(job.recipe) if job.pickled else job.recipe
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
    """Start this worker's share of a resumable run, from its state (checked by its own stages)."""
    with tracked(True):
        try:
            return start(recipe, job.state)
        except PescadorError as exc:
            if job.state is None:
                raise
            raise PescadorError(
                f"zmq_offload: worker {job.wid} cannot start from its state (entry {job.wid} of the field "
                f"'workers'): {exc}"
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


def _send_items(iterator: Iterator, job: _Job, outbox: wire.Outbox) -> None:
    """Put every item of the worker's run in the outbox; in a tracked run, each with the worker's state after it."""
    put = outbox.put
    if not job.tracked:
        for item in iterator:
            put(item)
        return
    state = iterator.state
    for item in iterator:
        put(item, json.dumps(state()))
