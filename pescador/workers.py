"""Which worker process is running a recipe: :func:`worker_info`.

``zmq_offload`` (and the framework adapters) set this in each worker before
it starts a run, so that sources can shard their data and draw independent
random numbers.  Outside a worker it reports a single worker with id 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["WorkerInfo", "worker_info"]


class WorkerInfo(NamedTuple):
    """Identity of the process running a recipe.

    Attributes
    ----------
    id : int
        This worker's index, from 0 to ``count - 1``.
    count : int
        How many workers run the same recipe at once.
    seed : np.random.SeedSequence or None
        This worker's independent seed (spawned from one parent with
        ``SeedSequence.spawn``); None outside a worker.  New for each run of
        ``zmq_offload`` and for each epoch of a ``DataLoader`` worker (also
        a persistent one), and reproducible from the run's base seed
        (``zmq_offload(random_state=...)``, ``torch.manual_seed``).
    """

    id: int
    count: int
    seed: np.random.SeedSequence | None


_MAIN = WorkerInfo(0, 1, None)
_current: WorkerInfo = _MAIN


def worker_info() -> WorkerInfo:
    """Return the :class:`WorkerInfo` of the current process.

    Examples
    --------
    >>> import pescador
    >>> pescador.worker_info()
    WorkerInfo(id=0, count=1, seed=None)

    A source can shard its files across workers:

    >>> def shard(files):
    ...     info = pescador.worker_info()
    ...     for path in files[info.id::info.count]:
    ...         yield {"path": path}
    >>> [x["path"] for x in pescador.stream(shard, ["a", "b", "c"])]
    ['a', 'b', 'c']
    """
    return _current


def set_worker_info(info: WorkerInfo | None) -> None:
    """Set (or, with None, reset) the worker identity of this process.

    Called by pescador's own worker processes; users rarely need it.
    """
    global _current
    _current = _MAIN if info is None else info
