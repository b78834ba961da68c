"""Keras 3 adapter: a stream as a ``keras.utils.PyDataset`` that ``model.fit`` takes.

Needs Keras 3 (``pip install pescador[keras]``) and its backend: set
``KERAS_BACKEND=torch`` (or ``jax``) before Keras is first imported, or
Keras looks for TensorFlow.  The rest of pescador does not need Keras, and
``import pescador`` does not import keras.

Why an adapter: Keras 3 chooses how to read ``x`` by its type (arrays, a
``tf.data.Dataset``, a ``PyDataset``, a torch ``DataLoader``, a grain
dataset, a Python generator) and raises "Unrecognized data type" for
anything else, a pescador stream included; there is no protocol a stream
could offer without pescador importing keras.  ``iter(stream)`` is a
generator and is accepted, but Keras then needs ``steps_per_epoch``, cannot
restart it for a second epoch, and warns on every ``fit`` that ``shuffle``
is ignored.  :func:`dataset` gives ``fit`` what it expects of a finite
``PyDataset``: a length (the batches of an epoch), so no ``steps_per_epoch``
and no warning.

    model.fit(pescador.keras.dataset(batches), epochs=3)

A run belongs to the Keras call (``fit``, ``evaluate``, ``predict``) that
asked for its first batch.  Keras says nothing to a dataset when a call
ends, least of all when it is interrupted (Ctrl-C raises in the training
step, and the traceback a notebook keeps holds the call's frame, hence the
dataset and its run), so a watcher thread, alive while such runs are, looks
every 0.2 seconds whether each call's frame is still on its
thread's stack and ends the run of a call that is over; a new call ends an
earlier call's run at its first epoch (``on_epoch_begin``).  Per batch, this
costs one uncontended lock.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

from .core import Stream, check_count, stream
from .exceptions import PescadorError
from .extras import check_even, epoch_length

_BACKENDS = ("tensorflow", "jax", "torch", "openvino")  # the modules Keras 3 may import as its backend


def _why_not(exc: ImportError) -> str:
    """What to do when ``import keras`` failed with ``exc``: install Keras 3, or give it a backend."""
    if importlib.util.find_spec("keras") is None:
        return "pescador.keras needs Keras 3: pip install 'pescador[keras]' (or pip install keras)"
    chosen = os.environ.get("KERAS_BACKEND")
    if (getattr(exc, "name", None) or "").split(".")[0] not in _BACKENDS:
        return f"pescador.keras: Keras is installed but cannot be imported ({type(exc).__name__}: {exc})"
    if chosen:
        return (
            f"pescador.keras: Keras is installed, but its backend KERAS_BACKEND={chosen!r} cannot be imported "
            f"({exc}); install it, or set KERAS_BACKEND to a backend that is installed (torch or jax) before "
            "Keras is first imported"
        )
    return (
        f"pescador.keras: Keras is installed, but its backend cannot be imported ({exc}): without "
        "KERAS_BACKEND, Keras uses the backend named in its keras.json (in ~/.keras), TensorFlow by default.  "
        "Set KERAS_BACKEND=torch (or jax) before Keras is first imported (os.environ['KERAS_BACKEND'] = "
        "'torch' at the top of a notebook; a kernel that has tried to import Keras must be restarted), or "
        "install tensorflow"
    )


try:
    import keras
except ImportError as exc:
    raise ImportError(_why_not(exc)) from exc
if not hasattr(keras.utils, "PyDataset"):  # pragma: no cover - Keras 2
    raise ImportError(
        f"pescador.keras needs Keras 3 (found Keras {keras.__version__}): pip install 'pescador[keras]'"
    )

__all__ = ["dataset", "StreamPyDataset"]

_WATCH_EVERY = 0.2  # seconds between the watcher's looks at the Keras calls that runs belong to


def _keras_call(frame: Any) -> Any:
    """The frame of the outermost Keras call (``fit``, ``evaluate``, ``predict``) on the stack from
    ``frame`` up, or None.  A generator's frame is never it: it leaves the stack between items."""
    call = None
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        if (module == "keras" or module.startswith("keras.")) and not frame.f_code.co_flags & inspect.CO_GENERATOR:
            call = frame
        frame = frame.f_back
    return call


def _on_stack(frame: Any, top: Any) -> bool:
    """Whether ``frame`` is ``top`` or one of its callers."""
    while top is not None:
        if top is frame:
            return True
        top = top.f_back
    return False


_watched: Any = weakref.WeakSet()  # the datasets whose runs belong to a Keras call
_watcher: threading.Thread | None = None
_watch_lock = threading.Lock()


def _watch(dataset: "StreamPyDataset") -> None:
    """Have the watcher end ``dataset``'s run once the Keras call it belongs to is over."""
    global _watcher
    with _watch_lock:
        _watched.add(dataset)
        if _watcher is None:
            _watcher = threading.Thread(target=_watch_calls, name="pescador-keras-watcher", daemon=True)
            _watcher.start()


def _watch_calls() -> None:
    """The watcher thread: every ``_WATCH_EVERY`` seconds, end the runs whose Keras call is over, however
    it ended (returned, or raised: Ctrl-C, an error, whoever keeps the traceback); exit when none is left."""
    global _watcher
    while True:
        time.sleep(_WATCH_EVERY)
        with _watch_lock:  # (a set must not change while it is copied)
            datasets = list(_watched)
        frames = sys._current_frames()
        for dataset in datasets:
            dataset._end_if_over(frames)
        datasets = []
        frames = None
        with _watch_lock:
            if not _watched:
                _watcher = None
                return


def _close(run: Any) -> None:
    """Close a run, so that its stages release what they hold (a zmq_offload's workers stop)."""
    close = getattr(run, "close", None)
    if close is not None:
        close()


class StreamPyDataset(keras.utils.PyDataset):
    """A ``keras.utils.PyDataset`` over a pescador stream (see :func:`dataset`).

    Parameters
    ----------
    recipe : Stream
        The stream of batches, as ``(x, y)`` tuples (end it with
        :func:`pescador.keras_tuples`) or dicts keyed by the model's input
        names.
    steps : int
        Batches in one Keras epoch: ``len(self)``.

    Notes
    -----
    The batches come in the stream's order, from one run that goes on from
    one Keras epoch to the next within a call of ``fit`` (or ``evaluate``,
    ``predict``); when the run ends, the next batch starts a new run (a new
    epoch of the recipe, with new random draws unless its ``random_state``
    is an int).  The run belongs to the Keras call that started it: it ends
    when the call ends, however it ends (returned, or interrupted by Ctrl-C
    or an error, whoever keeps the traceback), within a fraction of a
    second, so the workers of a :func:`pescador.zmq_offload` in the recipe
    stop then; the next call starts a new run.  So the index Keras asks for
    is not used: ``fit(shuffle=True)`` (its default) permutes indices,
    which changes nothing here; shuffling is the recipe's (a mux).  Keras
    reads the dataset from one thread (``workers=1``): to produce in
    parallel, put :func:`pescador.zmq_offload` in the recipe.  Read by hand
    (``dataset[i]``, outside Keras), the run lasts until it ends or the
    dataset is dropped.
    """

    def __init__(self, recipe: Stream, steps: int) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.recipe = recipe
        self.steps = steps
        self._run: Iterator | None = None
        self._call: Any = None  # the frame of the Keras call the run belongs to (None: read by hand)
        self._thread: int | None = None  # the thread of that call
        self._lock = threading.Lock()  # held while a batch is read, and while the run is swapped

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> Any:
        lock = self._lock
        lock.acquire()  # (not a with statement: this is paid per batch)
        try:
            if self._run is not None:
                try:
                    return next(self._run)
                except StopIteration:
                    pass
            return self._start(sys._getframe(1))
        finally:
            lock.release()

    def _start(self, caller: Any) -> Any:
        """Start a run (the lock held) that belongs to the Keras call above ``caller``, if any; its first batch."""
        self._run = iter(self.recipe)
        self._call, self._thread = _keras_call(caller), threading.get_ident()
        if self._call is not None:
            _watch(self)
        try:
            return next(self._run)
        except StopIteration:
            self._run = None
            raise PescadorError(f"pescador.keras.dataset: a run of {self.recipe!r} yielded no batch") from None

    def on_epoch_begin(self) -> None:
        """Keras begins an epoch: a run that belongs to no call, or to another one (an earlier ``fit``
        that the watcher has not ended yet), ends now, and this call starts its own."""
        with self._lock:
            if self._run is None or (self._call is not None and _on_stack(self._call, sys._getframe())):
                return
            run, self._run, self._call = self._run, None, None
        _close(run)

    def _end_if_over(self, frames: dict) -> None:
        """End the run if the Keras call it belongs to is over (``frames``: each thread's current frame);
        never while a batch is being read (that call goes on)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._call is not None and _on_stack(self._call, frames.get(self._thread)):
                return
            run = self._run if self._call is not None else None  # (a run read by hand is its reader's)
            if run is not None:
                self._run = self._call = None
            _watched.discard(self)  # (under the lock: a run started next by a Keras call is watched again)
        finally:
            self._lock.release()
        try:
            _close(run)  # (outside the lock: stopping workers may take up to zmq_offload's timeout)
        except Exception as exc:  # (the watcher goes on with the other runs)
            warnings.warn(f"{self!r}: its run raised while it was closed: {exc!r}", RuntimeWarning, stacklevel=1)

    def __repr__(self) -> str:
        return f"pescador.keras.dataset({self.recipe!r}, steps={self.steps})"


def dataset(recipe: Any, steps: int | None = None, even: str | None = "drop") -> StreamPyDataset:
    """A stream as a ``keras.utils.PyDataset``: ``model.fit(pescador.keras.dataset(batches))``.

    Parameters
    ----------
    recipe : Stream
        The stream of batches (anything :func:`pescador.stream` accepts
        alone): ``(x, y)`` or ``(x, y, sample_weight)`` tuples, as
        :func:`pescador.keras_tuples` makes, or dicts keyed by the model's
        input names.  Also for ``validation_data=``.
    steps : int or None
        Batches in one Keras epoch.  None: :func:`pescador.epoch_length` of
        the recipe on this rank (an epoch of an :func:`pescador.epochs`
        stream, else a run), which must then be known; give ``steps`` for an
        endless stream or a generator function's.
    even : "drop", "pad" or None
        Under distributed training, where ``steps`` is None: every rank
        takes the same number of steps (the ranks stay in step), the
        smallest rank's count ("drop", the default) or the largest's
        ("pad"); the batches a Keras epoch leaves come first in the next,
        and a rank that needs more starts the next run of the recipe.
        None: each rank its own count.  With one rank, nothing changes.

    Returns
    -------
    StreamPyDataset
        With ``len()`` of ``steps``: ``fit`` needs no ``steps_per_epoch``
        and, the dataset being finite, does not warn that ``shuffle`` is
        ignored.  Keras epochs take ``steps`` batches each from one run of
        the recipe; when a run ends, the next batch starts a new one.  A run
        lasts one call of ``fit`` (``evaluate``, ``predict``) at most: it
        ends with the call, even one interrupted by Ctrl-C, so no worker
        outlives it; the next call starts a new run.

    Raises
    ------
    PescadorError
        If ``steps`` is None and the epoch's length is unknown, or
        ``steps`` is not a positive int.

    Examples
    --------
    >>> import os; os.environ.setdefault("KERAS_BACKEND", "torch")
    'torch'
    >>> import numpy as np, keras, pescador, pescador.keras
    >>> rows = [{"X": np.ones((4, 3), "float32") * i, "Y": np.ones((4, 1), "float32")} for i in range(5)]
    >>> data = pescador.keras.dataset(pescador.keras_tuples("X", "Y")(rows))
    >>> len(data)
    5
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> len(model.fit(data, epochs=2, verbose=0).history["loss"])
    2
    """
    try:
        s = stream(recipe)
    except PescadorError as exc:
        raise PescadorError(f"pescador.keras.dataset: {exc}") from None
    if steps is None:
        steps = epoch_length(s, even=check_even(even, "pescador.keras.dataset"))
        if steps is None:
            raise PescadorError(
                f"pescador.keras.dataset: how many batches make an epoch of {s!r} cannot be known without "
                "running it (an endless stream, or a generator function's); say it: "
                "pescador.keras.dataset(stream, steps=N)"
            )
        if steps == 0:
            raise PescadorError(f"pescador.keras.dataset: an epoch of {s!r} holds no batch")
    else:
        steps = check_count(steps, "pescador.keras.dataset", "steps", minimum=1)
    return StreamPyDataset(s, steps)
