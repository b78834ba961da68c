"""Which worker process is running a recipe: :func:`worker_info`.

``zmq_offload``, ``ray_offload`` and the framework adapters set this in each
worker before it starts a run, so that sources can shard their data and draw
independent random numbers.  Outside a worker it reports a single worker
with id 0.

Training ranks
--------------
When a recipe runs on each rank of a distributed training job, every rank
must read its own share.  :func:`worker_info` knows the rank and the world
size (from :mod:`torch.distributed` when its default process group is
initialised, else from the ``RANK`` and ``WORLD_SIZE`` environment variables
that ``torchrun`` and most launchers set), and its ``id`` and ``count``
number the shards across rank x worker: worker ``w`` of ``n`` on rank ``r``
is shard ``r * n + w`` of ``world_size * n``.  So a source that shards by
``id``/``count`` and the exhaustive muxes (which shard their pool the same
way) split the data across every worker of every rank, each item read once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from .exceptions import PescadorError

__all__ = ["WorkerInfo", "worker_info", "rank_info"]


class WorkerInfo(NamedTuple):
    """Identity of the process running a recipe.

    Attributes
    ----------
    id : int
        This process's shard, from 0 to ``count - 1``: its index among all
        the processes that run the same recipe at once, on every training
        rank (``rank * workers_per_rank + worker``).
    count : int
        How many processes run the same recipe at once (workers per rank
        times ``world_size``).
    seed : np.random.SeedSequence or None
        This worker's independent seed (spawned from one parent with
        ``SeedSequence.spawn``; on rank ``r`` of several, extended with
        ``r`` so that ranks draw independently); None outside a worker.  New
        for each run of ``zmq_offload`` and for each epoch of a
        ``DataLoader`` worker (also a persistent one), and reproducible from
        the run's base seed (``zmq_offload(random_state=...)``,
        ``torch.manual_seed``).
    rank : int
        The training rank of this process (0 without distributed training).
    world_size : int
        How many training ranks there are (1 without distributed training).
    """

    id: int
    count: int
    seed: np.random.SeedSequence | None
    rank: int = 0
    world_size: int = 1

    def __repr__(self) -> str:
        ranks = f", rank={self.rank}, world_size={self.world_size}" if self.world_size != 1 else ""
        return f"WorkerInfo(id={self.id}, count={self.count}, seed={self.seed!r}{ranks})"


_MAIN = WorkerInfo(0, 1, None)
_current: WorkerInfo = _MAIN
_counted = threading.local()  # (this thread, while a length is counted) the worker whose run is counted
_composed: tuple = (None, None, None)  # (the info set, (rank, world_size), what worker_info() made of them)


def rank_info() -> tuple[int, int]:
    """The training rank of this process and the world size: ``(rank, world_size)``.

    From :mod:`torch.distributed` when it has been imported and its default
    process group is initialised; else from the ``RANK`` and ``WORLD_SIZE``
    environment variables when both are set; else ``(0, 1)``.  This never
    imports torch.

    Raises
    ------
    PescadorError
        If ``RANK``/``WORLD_SIZE`` are set but are not integers with
        ``0 <= RANK < WORLD_SIZE``.

    Examples
    --------
    >>> import pescador.workers
    >>> pescador.workers.rank_info()  # (no distributed training here)
    (0, 1)
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return 0, 1
    try:
        rank_n, world_n = int(rank), int(world)
    except ValueError:
        rank_n = world_n = -1
    if not 0 <= rank_n < world_n:
        raise PescadorError(
            f"worker_info: the environment says RANK={rank!r} and WORLD_SIZE={world!r}; expected integers "
            "with 0 <= RANK < WORLD_SIZE (as torchrun sets them), or neither variable"
        )
    return rank_n, world_n


def compose(local: WorkerInfo, rank: int, world_size: int) -> WorkerInfo:
    """The identity of worker ``local.id`` of ``local.count`` on ``rank`` of ``world_size`` ranks.

    Shard ``rank * local.count + local.id`` of ``world_size * local.count``;
    the seed is extended with the rank (so that ranks draw independently).
    A single rank leaves ``local`` as it is.
    """
    if world_size == 1:
        return local
    seed = local.seed
    if seed is not None:
        seed = np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + (rank,),
                                      pool_size=seed.pool_size)
    return WorkerInfo(rank * local.count + local.id, world_size * local.count, seed, rank, world_size)


def worker_info() -> WorkerInfo:
    """Return the :class:`WorkerInfo` of the current process.

    Examples
    --------
    >>> import pescador
    >>> pescador.worker_info()
    WorkerInfo(id=0, count=1, seed=None)

    A source can shard its files across workers (and training ranks):

    >>> def shard(files):
    ...     info = pescador.worker_info()
    ...     for path in files[info.id::info.count]:
    ...         yield {"path": path}
    >>> [x["path"] for x in pescador.stream(shard, ["a", "b", "c"])]
    ['a', 'b', 'c']
    """
    global _composed
    counted = getattr(_counted, "info", None)
    if counted is not None:
        return counted
    local = _current
    if local.world_size != 1:  # (set with its ranks already: see set_worker_info)
        return local
    ranks = rank_info()
    if ranks == (0, 1):
        return local
    if _composed[0] is not local or _composed[1] != ranks:  # (made once, so that its seed is one object)
        _composed = (local, ranks, compose(local, *ranks))
    return _composed[2]


def set_worker_info(info: WorkerInfo | None) -> None:
    """Set (or, with None, reset) the worker identity of this process.

    Called by pescador's own worker processes; users rarely need it.
    ``info.id`` and ``info.count`` number this worker among its rank's
    workers, and :func:`worker_info` combines them with the rank it finds
    (see :func:`rank_info`); an ``info`` whose ``world_size`` is above 1
    already numbers the shards across ranks (as :func:`worker_info` returns
    them) and is used as it is.
    """
    global _current
    _current = _MAIN if info is None else info


@contextlib.contextmanager
def counted_as(info: WorkerInfo) -> Iterator[None]:
    """Within, in this thread, :func:`worker_info` says ``info``: a length is counted for that worker's run.

    :func:`pescador.epoch_length` and the stages' ``run_length`` count the
    items of one run; a stage that shards (a mux that runs each stream
    once, ``epochs``) counts the members of the shard that
    :func:`worker_info` names, as its run would take them.
    """
    before = getattr(_counted, "info", None)
    _counted.info = info
    try:
        yield
    finally:
        _counted.info = before


def over_workers(count: Callable[[], Any], workers: int) -> list:
    """``count()`` for each of ``workers`` worker processes of the rank being counted (worker ``w`` of
    ``workers`` on it, as an offload or a DataLoader numbers them)."""
    here = worker_info()
    results = []
    for wid in range(workers):
        with counted_as(compose(WorkerInfo(wid, workers, None), here.rank, here.world_size)):
            results.append(count())
    return results
