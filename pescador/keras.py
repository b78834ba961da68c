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
import json
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

__all__ = ["dataset", "StreamPyDataset", "Checkpoint"]

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


def _building(frame: Any) -> bool:
    """Whether ``frame`` runs inside Keras's ``_symbolic_build``, which takes the first batch of a call on a
    model not yet built (or compiled afresh) to build it, and does not train on it."""
    while frame is not None:
        if frame.f_code.co_name == "_symbolic_build" and (frame.f_globals.get("__name__") or "").startswith("keras"):
            return True
        frame = frame.f_back
    return False


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
        self._keeps_states = False  # runs are resumable runs (a Checkpoint asked): state_dict() says where
        self._first = True  # the next batch is the first of a Keras epoch (Keras may only look at it)
        self._held: Any = None  # a batch Keras looked at without training on it, given again next
        self._start_state: dict | None = None  # where the next run starts (load_state_dict), or None: afresh

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> Any:
        lock = self._lock
        lock.acquire()  # (not a with statement: this is paid per batch)
        try:
            if self._held is not None:  # (the batch Keras looked at to build the model: now it trains on it)
                batch, self._held = self._held, None
                return batch
            if self._run is not None:
                try:
                    batch = next(self._run)
                except StopIteration:
                    batch = self._start(sys._getframe(1))
            else:
                batch = self._start(sys._getframe(1))
            if self._first:
                self._first = False
                if _building(sys._getframe(1)):
                    self._held = batch
            return batch
        finally:
            lock.release()

    def _start(self, caller: Any) -> Any:
        """Start a run (the lock held) that belongs to the Keras call above ``caller``, if any; its first batch."""
        if self._keeps_states:
            from .resume import resumable  # (only a checkpointed dataset needs it)

            self._run, self._start_state = resumable(self.recipe, self._start_state), None
        else:
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
            self._first = True
            if self._run is None or (self._call is not None and _on_stack(self._call, sys._getframe())):
                return
            run, self._run, self._call, self._held = self._run, None, None, None
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
                self._run = self._call = self._held = None
            _watched.discard(self)  # (under the lock: a run started next by a Keras call is watched again)
        finally:
            self._lock.release()
        try:
            _close(run)  # (outside the lock: stopping workers may take up to zmq_offload's timeout)
        except Exception as exc:  # (the watcher goes on with the other runs)
            warnings.warn(f"{self!r}: its run raised while it was closed: {exc!r}", RuntimeWarning, stacklevel=1)

    def keep_states(self) -> None:
        """Run the recipe as resumable runs from now on (:func:`pescador.resumable`), so that
        :meth:`state_dict` can say where the data is; a :class:`Checkpoint` calls it."""
        with self._lock:
            self._keeps_states = True
            if self._run is not None and not hasattr(self._run, "state_dict"):  # (a plain run: the next is not)
                run, self._run, self._call, self._held = self._run, None, None, None
            else:
                run = None
        _close(run)

    def state_dict(self) -> dict:
        """Where the data is: after the last batch this dataset gave (a small JSON-able dict).

        Raises
        ------
        PescadorError
            If the dataset's runs keep no state (call :meth:`keep_states`
            first, or use a :class:`Checkpoint`).
        """
        with self._lock:
            if not self._keeps_states:
                raise PescadorError(
                    f"{self!r}: its runs keep no state; call keep_states() before the first batch (a "
                    "pescador.keras.Checkpoint does) to checkpoint the data"
                )
            return {"run": self._start_state if self._run is None else self._run.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Make the next run start where ``state`` (from :meth:`state_dict`, through JSON) says: the batch
        after the last one given then.  Ends the current run, if any."""
        if not isinstance(state, dict) or set(state) != {"run"}:
            raise PescadorError(f"{self!r}: load_state_dict takes what state_dict() returned, a dict with the "
                                f"one key 'run'; got {str(state)[:80]}")
        with self._lock:
            self._keeps_states = True
            run, self._run, self._call, self._start_state = self._run, None, None, state["run"]
            self._held = None
        _close(run)

    def __repr__(self) -> str:
        return f"pescador.keras.dataset({self.recipe!r}, steps={self.steps})"


class Checkpoint(keras.callbacks.Callback):
    """Save the data's state beside the model's weights every ``every`` batches, and resume from them.

    A Keras callback in the manner of ``keras.callbacks.BackupAndRestore``,
    for the data too: ``model.fit(data, callbacks=[Checkpoint(directory,
    data, every=100)])``.  Every ``every`` batches it writes, in
    ``directory``, the model's weights (``model.weights.h5``, by
    ``model.save_weights``, the optimizer's variables included) and
    ``data.json``: the dataset's state after the last batch trained on, the
    epoch, and the batches trained in all (each file written whole, then
    renamed into place).  When ``fit`` begins and ``directory`` holds a
    checkpoint (a job restarted after preemption, in a new process), it
    loads the weights, makes the dataset's next run start after the last
    batch trained on (:meth:`StreamPyDataset.load_state_dict`) and
    ``fit`` start at the checkpoint's epoch.  The resumed ``fit`` trains on
    exactly the batches the uninterrupted one would have, in the same order,
    and stops after the same number of batches in all; Keras counts whole
    epochs, so after a checkpoint in the middle of an epoch, the epochs of
    the resumed ``fit`` end that many batches later than they would have
    (epoch-end callbacks and metrics move with them).  When ``fit``
    completes, the checkpoint is removed (a later ``fit`` starts afresh), as
    ``BackupAndRestore`` does.

    The dataset's runs become resumable runs (:func:`pescador.resumable`):
    the recipe must be one that it accepts.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the checkpoint lives (made if missing).
    data : StreamPyDataset
        The dataset given to ``fit`` (:func:`dataset`).
    every : int >= 1
        Batches between checkpoints.

    Examples
    --------
    >>> import os, tempfile; _ = os.environ.setdefault("KERAS_BACKEND", "torch")
    >>> import numpy as np, keras, pescador, pescador.keras
    >>> rows = [{"X": np.full((4, 3), i, "float32"), "Y": np.ones((4, 1), "float32")} for i in range(6)]
    >>> data = pescador.keras.dataset(pescador.keras_tuples("X", "Y")(rows))
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> saved = tempfile.mkdtemp()
    >>> _ = model.fit(data, epochs=2, verbose=0, callbacks=[pescador.keras.Checkpoint(saved, data, every=4)])
    >>> os.listdir(saved)  # (fit completed: its checkpoint is gone)
    []
    """

    def __init__(self, directory: Any, data: StreamPyDataset, every: int) -> None:
        super().__init__()
        if not isinstance(data, StreamPyDataset):
            raise PescadorError(
                f"pescador.keras.Checkpoint: data must be the dataset given to fit, a pescador.keras.dataset(...); "
                f"got {type(data).__name__}"
            )
        self.directory = os.fspath(directory)
        self.data = data
        self.every = check_count(every, "pescador.keras.Checkpoint", "every", minimum=1)
        self.batches = 0  # batches trained in all (the resumed ones counted from the checkpoint's)
        self.epoch = 0
        self.goal: int | None = None
        data.keep_states()

    @property
    def _meta(self) -> str:
        return os.path.join(self.directory, "data.json")

    def on_train_begin(self, logs: Any = None) -> None:
        self.batches, self.epoch = 0, 0
        if os.path.exists(self._meta):
            with open(self._meta) as f:
                saved = json.load(f)
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)  # (its variables are in the file)
            self.model.load_weights(os.path.join(self.directory, saved["weights"]))
            self.data.load_state_dict(saved["data"])
            self.batches, self.epoch = saved["batches"], saved["epoch"]
            self.model._initial_epoch = self.epoch  # (as keras.callbacks.BackupAndRestore does)
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        self.goal = epochs * steps if epochs and steps else None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.batches += 1
        if self.batches % self.every == 0:
            self.save()
        if self.goal is not None and self.batches >= self.goal:
            self.model.stop_training = True  # (a resumed fit: as many batches in all as the uninterrupted one)

    def on_train_end(self, logs: Any = None) -> None:
        self._remove(keep=None)

    def save(self) -> None:
        """Write the checkpoint now: the weights to a file of their own, then ``data.json``, which names
        it, renamed into place (so a job killed at any moment leaves the previous checkpoint or this one
        whole), then remove the weights of the previous one."""
        os.makedirs(self.directory, exist_ok=True)
        weights = f"model-{self.batches}.weights.h5"
        self.model.save_weights(os.path.join(self.directory, weights), overwrite=True)
        meta = {"weights": weights, "data": self.data.state_dict(), "epoch": self.epoch, "batches": self.batches}
        with open(self._meta + ".part", "w") as f:
            json.dump(meta, f)
        os.replace(self._meta + ".part", self._meta)
        self._remove(keep=weights)

    def _remove(self, keep: str | None) -> None:
        """Remove the checkpoint's files but the weights ``keep`` (None: all of them, data.json too)."""
        if keep is None and os.path.exists(self._meta):
            os.remove(self._meta)
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.startswith("model-") and name.endswith(".weights.h5") and name != keep:
                    os.remove(os.path.join(self.directory, name))


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
