"""Observers across processes: the workers of a :func:`pescador.zmq_offload` run report to the consumer.

A recipe pickled to a worker carries copies of its observers
(:class:`~pescador.MuxStats`, :class:`~pescador.Meter`); the stages in the
worker count into those copies.  This module makes the observers in the
consumer show what the copies counted, summed over the workers:

- *Matching.*  :func:`observers` walks a recipe (streams, their arguments,
  lists, tuples and dicts, depth first, in order) and lists the distinct
  observers it holds.  A recipe's pickle keeps shared objects shared and
  containers in order, so the walk of the worker's copy lists the copies of
  the same observers in the same order: the position is the match.  An
  observer that appears twice is listed once, on both sides.  (Observers
  hidden inside other objects, say an attribute of a class instance, are
  not found, and stay worker-local.)
- *Transport.*  The consumer binds a ZeroMQ PULL socket next to the run's
  item socket (``ipc://`` in the run's private directory, or loopback TCP);
  each worker connects a PUSH socket on which at most one report waits
  (``ZMQ_SNDHWM`` 1; a report that finds it full is dropped, and the next
  one, which says the same and more, is sent once there is room), so a slow
  consumer only ever costs the worker its latest reports, never a stall.
  (Not ``ZMQ_CONFLATE``: a conflating socket lost whole reports sent soon
  after it connected, seen with persistent workers, whose runs start at once.)  Reports are msgpack
  (plain ints and floats) carrying the run's secret; anything else is
  dropped.  The item wire (:mod:`pescador.wire`) is not involved.
- *Rate.*  A thread in each worker takes a snapshot of its observers every
  ``_EVERY`` seconds and sends it when it changed: the worker's item loop
  does no extra work.  A thread in the consumer sleeps until reports
  arrive and updates the observers at once, whether or not the consumer is
  iterating; the run wakes it through a pipe to stop it.
- *The end.*  A worker sends its final snapshot before its END on the item
  wire, with a linger so that it is delivered; a run that ends normally
  waits (up to ``_FINAL_WAIT`` seconds) for every worker's final snapshot,
  so that after the last item the observers hold the exact totals.  A
  worker stopped early (the consumer stopped: SIGTERM) sends its last
  counts as it ends, and the consumer takes the reports that arrived while
  its workers stopped: they count what the workers had produced, which may
  be more than the consumer took.
- *Runs.*  The consumer's observers start afresh when the run starts; a
  :class:`~pescador.MuxStats` is held by the run (its one-live-run rule: a
  second live run counting into it is refused) until the run ends.
"""

from __future__ import annotations

import hmac
import os
import secrets
import signal
import threading
import time
import warnings
from typing import Any

import msgpack
import zmq

from .core import Stream
from .exceptions import PescadorError
from .observe import Meter, MuxStats

_EVERY = 0.1  # seconds between a worker's snapshots of its observers
_FINAL_WAIT = 5.0  # seconds a run that ended waits for the workers' final snapshots
_LINGER_MS = 2000  # how long a finished worker's context may take to deliver its final snapshot
_STOP_LINGER_MS = 1000  # ... and that of a worker stopped early (its consumer takes its last report)
_STOP_GAP_MS = 100  # a consumer stopped early takes reports until none came for this long (at most 1 s)
_MAX_MESSAGE = 1 << 24  # bytes: a larger report is dropped


def observers(recipe: Any) -> list:
    """The distinct observers a recipe holds, in the order of a depth-first walk of its structure."""
    found: list = []
    seen: set = set()
    stack = [recipe]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is MuxStats or kind is Meter or isinstance(node, (MuxStats, Meter)):
            if id(node) not in seen:
                seen.add(id(node))
                found.append(node)
            continue
        if isinstance(node, Stream):
            children: Any = list(node.args) + list(node.kwargs.values())
        elif kind is list or kind is tuple:
            children = node
        elif kind is dict:
            children = list(node.values())
        else:
            continue
        if id(node) in seen:  # (a container met before: shared, or a cycle)
            continue
        seen.add(id(node))
        stack.extend(reversed([c for c in children if isinstance(c, (Stream, list, tuple, dict, MuxStats, Meter))]))
    return found


def _quiet_signals() -> None:
    """A helper thread leaves SIGINT and SIGTERM to the main thread (so they interrupt its blocking calls)."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (AttributeError, OSError, ValueError):
        pass


# ----------------------------------------------------------------------------
# The consumer's side
# ----------------------------------------------------------------------------


def _bind(sock: zmq.Socket, items: str, config: Any) -> str:
    """Bind the report socket beside the run's item endpoint ``items``; return its endpoint."""
    if items.startswith("ipc://"):  # (the run's private directory)
        endpoint = "ipc://" + os.path.join(os.path.dirname(items[len("ipc://") :]), "r")
        sock.bind(endpoint)
        return endpoint
    try:
        port = sock.bind_to_random_port("tcp://127.0.0.1", config.min_port, config.max_port + 1, config.max_tries)
    except zmq.ZMQBaseError as exc:  # (ZMQBindError when every try failed)
        raise PescadorError(
            f"zmq_offload: no free TCP port on 127.0.0.1 between {config.min_port} and {config.max_port} for the "
            f"observers' reports ({exc}); widen the range or raise max_tries"
        ) from None
    return f"tcp://127.0.0.1:{port}"


class Relay:
    """The consumer's side of a run's reports: a PULL socket and a thread that applies what arrives.

    Created when the run starts (before its workers: the observers are
    reset and a MuxStats is taken for the run, so a clash is an error before
    any process starts); :meth:`listen` after the workers have started (no
    thread exists in the consumer while it forks them); :meth:`finish` when
    the run has ended normally; :meth:`close` always.
    """

    def __init__(self, recipe: Any, context: zmq.Context, endpoint: str, config: Any) -> None:
        self.observers = observers(recipe)
        self.workers = config.workers
        self.endpoint: str | None = None
        self.secret = secrets.token_bytes(16)
        self.sock: Any = None
        self.thread: threading.Thread | None = None
        self.wake: tuple | None = None  # a pipe: a byte written to it stops the thread at once
        self.complete = threading.Event()  # every worker's final snapshot has arrived
        self.latest: dict = {}  # worker id -> its latest snapshots (one per observer)
        self.finals: set = set()
        self.tokens: list = []
        if not self.observers:
            return
        now = time.perf_counter()
        for observer in self.observers:
            if isinstance(observer, MuxStats):
                self.tokens.append((observer, observer._start(0, None, [], "zmq_offload (a mux in its workers)")))
            else:
                observer._start(now)
        sock = context.socket(zmq.PULL)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, _MAX_MESSAGE)
            self.endpoint = _bind(sock, endpoint, config)
        except BaseException:
            sock.close(linger=0)  # (an open socket would keep the run's context.term() waiting)
            self._release()
            raise
        self.sock = sock

    @property
    def address(self) -> tuple | None:
        """What each worker is handed: where to report, and the run's secret (None: nothing to report)."""
        return None if self.endpoint is None else (self.endpoint, self.secret)

    def listen(self) -> None:
        if self.sock is not None:
            self.wake = os.pipe()
            self.thread = threading.Thread(target=self._loop, name="pescador-reports", daemon=True)
            self.thread.start()

    def _loop(self) -> None:
        _quiet_signals()
        sock = self.sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.wake[0], zmq.POLLIN)
        while True:
            ready = dict(poller.poll())  # (sleeps until a report arrives, or the run stops it)
            if self.wake[0] in ready:
                return
            changed = False
            while True:  # (all that waits, then one update: reports coalesce)
                try:
                    changed = self._take(sock.recv(zmq.NOBLOCK)) or changed
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    return
            if changed:
                self._apply()
            if len(self.finals) >= self.workers:
                self.complete.set()

    def _take(self, message: bytes) -> bool:
        """Keep a worker's report (its latest snapshots); False if it is not one of this run's."""
        try:
            secret, wid, final, snapshots = msgpack.unpackb(message, raw=False, strict_map_key=True)
        except Exception:
            return False
        if not (isinstance(secret, bytes) and hmac.compare_digest(secret, self.secret)):
            return False
        if not (isinstance(wid, int) and 0 <= wid < self.workers and isinstance(snapshots, list)
                and len(snapshots) == len(self.observers)):
            return False
        self.latest[wid] = snapshots
        if final:
            self.finals.add(wid)
        return True

    def _apply(self) -> None:
        latest = list(self.latest.values())
        for position, observer in enumerate(self.observers):
            try:
                observer._apply([snapshots[position] for snapshots in latest])
            except Exception:  # (a malformed report from our own worker: keep what we had)
                pass

    def finish(self) -> None:
        """The run ended normally: wait for every worker's final snapshot, then show the totals."""
        if self.thread is None:
            return
        if not self.complete.wait(_FINAL_WAIT):
            missing = sorted(set(range(self.workers)) - self.finals)
            warnings.warn(
                f"zmq_offload: the final observer reports of worker(s) {missing} did not arrive within "
                f"{_FINAL_WAIT} s; the observers show their last reports",
                RuntimeWarning,
                stacklevel=2,
            )
        self._stop_thread()
        self._apply()
        self._release()

    def _drain(self) -> bool:
        """Take every report waiting now (the thread has stopped); True if one was this run's."""
        changed = False
        while True:
            try:
                changed = self._take(self.sock.recv(zmq.NOBLOCK)) or changed
            except zmq.ZMQError:
                return changed

    def _drain_late(self) -> bool:
        """Take the reports that wait, and those still arriving (the workers have exited: what they sent
        is on its way), until none came for a short gap, within a second."""
        changed = self._drain()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and self.sock.poll(_STOP_GAP_MS):
            changed = self._drain() or changed
        return changed

    def _stop_thread(self) -> None:
        if self.thread is not None:
            os.write(self.wake[1], b"x")
            self.thread.join()
            self.thread = None
        if self.wake is not None:
            for fd in self.wake:
                os.close(fd)
            self.wake = None

    def _release(self) -> None:
        for observer in self.observers:
            if isinstance(observer, Meter) and observer._t1 is None:
                observer._stop()
        for observer, token in self.tokens:
            observer._stop(token)
        self.tokens = []

    def close(self) -> None:
        """Take the reports that wait, stop listening, release the socket and the observers."""
        try:
            self._stop_thread()
            if self.sock is not None and self._drain_late():
                self._apply()
            self._release()
        finally:
            if self.sock is not None:
                self.sock.close(linger=0)
                self.sock = None


def close(relay: Relay | None) -> None:
    if relay is not None:
        relay.close()


# ----------------------------------------------------------------------------
# The worker's side
# ----------------------------------------------------------------------------


class Reporter:
    """A worker's side: a thread that sends snapshots of the worker's observers while the run goes on."""

    def __init__(self, recipe: Any, address: tuple, wid: int, context: zmq.Context) -> None:
        self.observers = observers(recipe)
        for observer in self.observers:
            if isinstance(observer, MuxStats):
                observer._owner = None  # (under fork: a copy of the consumer's, which its run holds)
        endpoint, self.secret = address
        self.wid = wid
        self.sock = context.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, 1)  # (a report waits at most: a newer one is sent once it has left)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.last: Any = None
        self.finished = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="pescador-reporter", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        _quiet_signals()
        while not self.stopping.wait(_EVERY):
            self._send(False)

    def _send(self, final: bool, wait_ms: int = 0) -> None:
        """Send a snapshot if it changed (always with ``wait_ms``: the last one, which may wait that long
        for the connection to the consumer, not yet made in a run shorter than its making)."""
        snapshots = [observer._snapshot() for observer in self.observers]
        if snapshots == self.last and not final and not wait_ms:
            return
        message = msgpack.packb([self.secret, self.wid, final, snapshots])
        try:
            if wait_ms:
                self.sock.setsockopt(zmq.SNDTIMEO, wait_ms)
                self.sock.send(message)
            else:
                self.sock.send(message, zmq.NOBLOCK)
            self.last = snapshots
        except zmq.ZMQError:  # (nobody to take it now: the next report says the same and more)
            pass

    def stop(self) -> None:
        if self.thread is not None:
            self.stopping.set()
            self.thread.join()
            self.thread = None

    def final(self) -> None:
        """The run has ended: send the exact totals (after the last item), to be delivered before exit."""
        self.stop()
        self._send(True, _LINGER_MS)
        self.finished = True
        self.sock.setsockopt(zmq.LINGER, _LINGER_MS)

    def close(self) -> None:
        """The worker ends; one stopped early (SIGTERM) sends its last counts, which its consumer takes."""
        self.stop()
        if not self.finished:
            self._send(False, _STOP_LINGER_MS)
            self.sock.setsockopt(zmq.LINGER, _STOP_LINGER_MS)
        self.sock.close()


def worker_start(recipe: Any, address: tuple | None, wid: int, context: zmq.Context) -> Reporter | None:
    """Start reporting this worker's observers (None when the run has none)."""
    if address is None:
        return None
    return Reporter(recipe, address, wid, context)


def worker_final(reporter: Reporter | None) -> None:
    if reporter is not None:
        reporter.final()


def worker_close(reporter: Reporter | None) -> None:
    if reporter is not None:
        reporter.close()

