"""PyTorch adapter: any stream as a ``torch.utils.data.IterableDataset``.

Needs PyTorch (``pip install pescador[torch]``); the rest of pescador does
not.  ``as_dataset(stream)`` yields the stream's items with every numpy
array turned into a tensor by ``torch.from_numpy``, which shares the array's
memory (no copy).  Use it with ``DataLoader(dataset, batch_size=None)``:
pescador already makes the batches (``buffer``), so the loader must not
collate them again.

Under ``DataLoader(num_workers=N)``, each loader worker runs its own copy of
the recipe and sets :func:`pescador.worker_info` (its id, N, and a seed
derived from the loader's), so sources shard their data and a mux without
replacement shards its pool: a finite pool is delivered once in total, not
N times.  The seed is new for every epoch, persistent workers included, and
the whole run repeats from one ``torch.manual_seed`` (or the loader's
``generator``); every ``random_state`` in the recipe is combined with it.

For most training loops the simpler path is :func:`pescador.zmq_offload`
in front of a plain loop (see the frameworks page of the docs): it works
with any framework and sends arrays without copying, while the DataLoader
brings pinned memory and torch's own worker management.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .core import Stream, stream
from .exceptions import PescadorError
from .workers import WorkerInfo, set_worker_info

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "pescador.torch needs PyTorch: pip install 'pescador[torch]' (or pip install torch)"
    ) from exc

__all__ = ["as_dataset", "StreamDataset"]


def _tensors(item: Any) -> Any:
    if type(item) is not dict and not isinstance(item, dict):
        return torch.from_numpy(item) if isinstance(item, np.ndarray) else item
    out = {}
    for key, value in item.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            if not value.flags.writeable:  # torch wants writeable memory; never write through it
                value = value.copy()
            out[key] = torch.from_numpy(value)
        else:
            out[key] = value
    return out


class StreamDataset(IterableDataset):
    """An ``IterableDataset`` over a pescador stream (see :func:`as_dataset`).

    Parameters
    ----------
    recipe : Stream
        What each iteration runs.
    """

    def __init__(self, recipe: Stream) -> None:
        super().__init__()
        self.recipe = recipe
        self._epoch: list | None = None  # (in a DataLoader worker) [(base seed, worker id), epochs begun]

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        if info is not None:  # inside a DataLoader worker: tell the sources who they are
            set_worker_info(WorkerInfo(info.id, info.num_workers, self._epoch_seed(info)))
        for item in self.recipe:
            yield _tensors(item)

    def _epoch_seed(self, info: Any) -> np.random.SeedSequence:
        """This worker's seed for this epoch: new for each iteration, reproducible from the loader's seed.

        torch gives worker ``id`` the seed ``base + id``, where ``base`` is
        drawn from the loader's generator each time an iteration of the
        loader starts workers; persistent workers keep theirs for every
        epoch.  Each iteration of this dataset in a worker is an epoch, so
        the seed is ``SeedSequence(base, spawn_key=(id, epoch))``.
        """
        base = (int(info.seed) - info.id) % 2**64
        if self._epoch is None or self._epoch[0] != (base, info.id):
            self._epoch = [(base, info.id), 0]
        epoch = self._epoch[1]
        self._epoch[1] += 1
        return np.random.SeedSequence(base, spawn_key=(info.id, epoch))

    def __repr__(self) -> str:
        return f"StreamDataset({self.recipe!r})"


def as_dataset(source: Any, *args: Any, **kwargs: Any) -> StreamDataset:
    """Wrap a stream as a ``torch.utils.data.IterableDataset`` of dicts of tensors.

    Parameters
    ----------
    source, *args, **kwargs
        Anything :func:`pescador.stream` accepts (a Stream, a Streamer, a
        generator function and its arguments, a list).

    Returns
    -------
    StreamDataset
        Each iteration runs the recipe afresh; numpy arrays of numbers and
        bools become tensors sharing their memory (read-only arrays are
        copied first); other values pass unchanged.

    Examples
    --------
    >>> import numpy as np, pescador, torch
    >>> from pescador.torch import as_dataset
    >>> def rows(n):
    ...     for i in range(n):
    ...         yield {"X": np.full((2, 3), i, dtype=np.float32)}
    >>> loader = torch.utils.data.DataLoader(as_dataset(rows, 2), batch_size=None)
    >>> [batch["X"].shape for batch in loader]
    [torch.Size([2, 3]), torch.Size([2, 3])]
    """
    try:
        recipe = stream(source, *args, **kwargs)
    except PescadorError as exc:
        raise PescadorError(f"as_dataset: {exc}") from None
    return StreamDataset(recipe)
