"""``prefetch(n)``: a thread that keeps up to ``n`` items of a stream ready.

For sources that wait on I/O (files, object stores, a database), where
worker processes (``zmq_offload``) are not worth their start-up and their
copies: the thread draws the next items while the consumer works.  Threads
overlap only where the source waits without the GIL (reading files and
sockets, sleeping, numpy and most decoders in C); a source that computes in
Python holds the GIL, and wants ``zmq_offload``.

The promises are ``zmq_offload``'s:

- order: the items come in the upstream's order; an exception raised by the
  upstream arrives after every item it yielded before, as itself;
- an early stop (``break`` and ``close()``, the run dropped, Ctrl-C in the
  consumer, an exception, the interpreter exiting) stops the thread: it
  closes the upstream's run (its ``finally`` blocks run) as soon as the item
  it is drawing is done, or at once if it waits for room in the queue; the
  consumer waits for that at most a second (``_WAIT``); a thread still
  drawing half-way through is interrupted (an exception raised in it), so an
  upstream that waits in Python, as ``zmq_offload`` and ``ray_offload``
  wait for their workers, ends its run then (its workers stop as without
  prefetch), and a source blocked in a call into C (a read that never
  returns) is not waited on for ever: its thread ends when the call does;
- no thread is left behind a run that ended, was closed or was collected;
- a resumable run resumes exactly: now and then an item travels with the
  upstream's state after it (with the first item, then about every 10 ms of
  the thread's work and at least every 4,096 items, as ``zmq_offload``'s
  workers send theirs), and the stage's state is the last such state the
  consumer was given and the count of items given since (``skip``); a
  resume starts the upstream from that state and draws those items again,
  dropping them.  Items drawn ahead but not given are drawn again on resume,
  not kept in the state.  Where the upstream does not give the same items
  again from a state (an offload of several workers, whose workers take
  turns as their timing says), every item travels with its state, so that
  nothing is dropped on resume.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import json
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from ._checks import check_size
from .core import _MISSING, ItemTransform, Source, Stream, Transform
from .stage import Stage, check_fields, check_int, most_given, start_plain
from .zmq_stream import _STATE_SHARE, STATE_EVERY, STATE_ITEMS

__all__ = ["prefetch"]

_T = TypeVar("_T")

_WAIT = 1.0  # seconds an early stop waits for the thread to close its upstream


class _End:
    """The upstream ended (the thread's last entry)."""

    __slots__ = ()


_END = _End()


class _Failed:
    """The upstream raised ``error`` (the thread's last entry)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _fill(pump: "_Pump", run: Iterator, state_of: Callable | None, every_item: bool, drop: int) -> None:
    """The thread: put the items of ``run`` into the pump's queue (given ``state_of``, each as a pair with the
    upstream's state after it, now and then, or None: see the module; ``every_item``: with each), then the
    end or the error; close ``run`` when it ends or the consumer stops.  The first ``drop`` items are drawn
    and dropped (a resume).  While it draws, ``pump.drawing`` says so (under ``pump.lock``): a stop may then
    interrupt the draw."""
    put, draw, lock, stopping = pump.entries.put, run.__next__, pump.lock, pump.stopping
    clock = time.monotonic
    due, left = clock(), STATE_ITEMS  # (the first item carries a state)
    try:
        while True:
            with lock:
                if stopping.is_set():
                    return
                pump.drawing = True
            try:
                item = draw()
            except StopIteration:
                put(_END)
                return
            finally:
                with lock:
                    pump.drawing = False
            if drop:
                drop -= 1
                continue
            if state_of is None:
                put(item)
                continue
            left -= 1
            now = clock()
            if now < due and left and not every_item:
                put((item, None))
                continue
            after = state_of()
            due, left = now + max(STATE_EVERY, _STATE_SHARE * (clock() - now)), STATE_ITEMS
            put((item, after))
    except _Interrupted:
        pass  # (the consumer stopped while the upstream was blocked: nobody reads the queue)
    except BaseException as error:  # (whatever it is, the consumer raises it, after the items before it)
        if not stopping.is_set():
            put(_Failed(error))
    finally:
        close = getattr(run, "close", None)
        if close is not None:
            close()


class _Interrupted(BaseException):
    """Raised in a prefetch thread that still draws from its upstream when its consumer has stopped (a draw
    blocked in an offload's receive, say): the upstream's run ends by it, its ``finally`` blocks run."""


def _interrupt(thread: threading.Thread) -> None:
    """Raise :class:`_Interrupted` in ``thread`` at its next Python instruction (a thread blocked in a call
    into C gets it when the call returns)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Interrupted))


class _Pump:
    """A prefetch thread and its queue.  Stopped by its run's end, by ``stop`` (an early stop), or at the
    interpreter's exit (while daemon threads still run: so the upstream's ``finally`` blocks run)."""

    __slots__ = ("entries", "stopping", "lock", "drawing", "thread", "__weakref__")

    def __init__(self, run: Iterator, n: int, state_of: Callable | None, every_item: bool, drop: int) -> None:
        self.entries: queue.Queue = queue.Queue(n)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.drawing = False
        self.thread = threading.Thread(target=_fill, args=(self, run, state_of, every_item, drop),
                                       name="pescador prefetch",
                                       daemon=True)
        with _LOCK:
            _LIVE.add(self)
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to stop, make room for the item it may be putting, and wait (a bounded time) for
        it to close its upstream; a thread still drawing from its upstream half-way through that wait is
        interrupted (an upstream blocked in Python, such as an offload waiting for its workers, then ends
        its run; one blocked in a call into C ends it when the call returns)."""
        self.stopping.set()
        try:
            while True:
                self.entries.get_nowait()
        except queue.Empty:
            pass
        if self.thread is not threading.current_thread():
            self.thread.join(_WAIT / 2)
            with self.lock:
                if self.drawing:
                    _interrupt(self.thread)
                    self.drawing = False  # (once)
            self.thread.join(_WAIT / 2)
        with _LOCK:
            _LIVE.discard(self)


_LIVE: weakref.WeakSet = weakref.WeakSet()  # the pumps of runs under way (in any thread)
_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """At exit, stop the runs nobody closed (a run held by a traceback after Ctrl-C, say)."""
    with _LOCK:
        pumps = list(_LIVE)
    for pump in pumps:
        pump.stop()


def _prefetched(run: Iterator, n: int, state_of: Callable | None = None, every_item: bool = False,
                drop: int = 0) -> Iterator:
    """The consumer's side: the thread's entries, as they come (its thread starts at the first ``next``)."""
    pump = _Pump(run, n, state_of, every_item, drop)
    get = pump.entries.get
    try:
        while True:
            entry = get()
            if entry.__class__ is _Failed:
                raise entry.error
            if entry is _END:
                return
            yield entry
    finally:
        pump.stop()


def _state_text(up: Any) -> str:
    return json.dumps(up.state())


class _Prefetch(Stage):
    """prefetch's run.  State: the last upstream state given with an item, and the items given since (see
    the module)."""

    one_to_one = True

    def __init__(self, upstream: Any, n: int, state: dict | None = None) -> None:
        from .resume import _inexact  # (resume imports the stages' modules)

        every_item = _inexact(upstream) is not None  # (a replay would not draw the same items again)
        self.skip = 0
        if state is not None:
            where = f"prefetch(n={n})"
            check_fields(state, ("up", "skip"), where)
            most = most_given()
            bound = 0 if every_item else STATE_ITEMS - 1
            self.skip = check_int(state, "skip", where, 0, bound if most is None else min(bound, most))
        self.up = self.start_upstream(upstream, state)
        self.given = _state_text(self.up)
        self.run = _prefetched(self.up, n, functools.partial(_state_text, self.up), every_item, self.skip)

    def __next__(self) -> Any:
        item, given = next(self.run)
        if given is None:
            self.skip += 1
        else:
            self.given, self.skip = given, 0
        return item

    def state(self) -> dict:
        return {"up": json.loads(self.given), "skip": self.skip}

    def close(self) -> None:
        """End the run now: stop the thread (its upstream is closed)."""
        self.run.close()

    @classmethod
    def plain(cls, upstream: Any, n: int) -> Iterator:
        return _prefetched(start_plain(upstream), n)


@overload
def prefetch(n: int) -> ItemTransform: ...
@overload
def prefetch(n: int, source: Source[_T]) -> Stream[_T]: ...
def prefetch(n: int, source: Any = _MISSING) -> Transform | Stream:
    """Draw up to ``n`` items ahead in a thread, so that a source that waits on I/O waits while the
    consumer works.

    Items come in order; an exception of the upstream arrives after the
    items before it; an early stop (``break`` and ``close()``, the run
    dropped, Ctrl-C, an exception, the end of the program) stops the thread,
    which closes the upstream's run (its ``finally`` blocks run) as soon as
    the item it is drawing is done; the consumer waits for that at most a
    second, and interrupts a draw that has not finished half-way through
    (an offload's workers then stop, as without prefetch).  No thread
    outlives its run, but for one blocked in a read that has not returned
    yet.  A resumable run resumes exactly: the items drawn
    ahead but not given are drawn again on resume.

    The thread draws while the consumer works only where the source waits
    without the GIL (file and network reads, ``time.sleep``, most decoding
    in C); for a source that computes in Python, use
    :func:`pescador.zmq_offload` (processes).  Curried and data-last, and
    one-to-one: :func:`pescador.epoch_length` looks through it.

    Parameters
    ----------
    n : int, 1 to 2**31 - 1
        How many items wait ready at most (the thread draws one more while
        the queue is full).
    source : optional
        Anything :func:`pescador.stream` accepts.

    Examples
    --------
    >>> import time, pescador
    >>> def slow_reads(n):
    ...     for i in range(n):
    ...         time.sleep(0.01)          # a read that waits on the disk
    ...         yield {"i": i}
    >>> [x["i"] for x in pescador.prefetch(4, pescador.stream(slow_reads, 5))]
    [0, 1, 2, 3, 4]
    >>> pescador.prefetch(8)
    prefetch(n=8)
    """
    step = ItemTransform("prefetch", _Prefetch, {"n": check_size(n, "prefetch", "n")})
    return step if source is _MISSING else step(source)
