"""Keras 3 adapter: a stream as a ``keras.utils.PyDataset`` that ``model.fit`` takes.

Needs Keras 3 (``pip install pescador[keras]``); the rest of pescador does
not, and ``import pescador`` does not import keras.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .core import Stream, check_count, stream
from .exceptions import PescadorError
from .extras import check_even, epoch_length

try:
    import keras
except ImportError as exc:  # pragma: no cover - exercised only without keras
    raise ImportError(
        "pescador.keras needs Keras 3: pip install 'pescador[keras]' (or pip install keras)"
    ) from exc

__all__ = ["dataset", "StreamPyDataset"]


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
    one Keras epoch to the next; when the run ends, the next batch starts a
    new run (a new epoch of the recipe, with new random draws unless its
    ``random_state`` is an int).  So the index Keras asks for is not used:
    ``fit(shuffle=True)`` (its default) permutes indices, which changes
    nothing here; shuffling is the recipe's (a mux).  Keras reads the
    dataset from one thread (``workers=1``): to produce in parallel, put
    :func:`pescador.zmq_offload` in the recipe.
    """

    def __init__(self, recipe: Stream, steps: int) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.recipe = recipe
        self.steps = steps
        self._run: Iterator | None = None

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> Any:
        if self._run is not None:
            try:
                return next(self._run)
            except StopIteration:
                pass
        self._run = iter(self.recipe)
        try:
            return next(self._run)
        except StopIteration:
            self._run = None
            raise PescadorError(f"pescador.keras.dataset: a run of {self.recipe!r} yielded no batch") from None

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
        the recipe; when a run ends, the next batch starts a new one.

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
