"""PyTorch adapter: any stream as a ``DataLoader`` or an ``IterableDataset``.

Needs PyTorch (``pip install pescador[torch]``); the rest of pescador does
not, and ``import pescador`` does not import torch.  ``loader(stream)``
returns a configured ``torch.utils.data.DataLoader`` in one call;
``as_dataset(stream)`` the ``IterableDataset`` under it.  Both yield the
stream's items with every numpy array turned into a tensor by
``torch.from_numpy``, which shares the array's memory (no copy).

pescador already makes the batches (``buffer``), so the loader must not
collate them again: ``loader`` passes ``batch_size=None``, and a dataset
run by a ``DataLoader`` that batches (its default ``batch_size=1``
included) raises a :class:`~pescador.PescadorError` at the start of the
iteration instead of silently adding a dimension.  Where
:func:`pescador.epoch_length` knows an epoch's length, the dataset and the
loader have a ``len()`` (so ``tqdm`` shows a total); elsewhere ``len()``
raises ``TypeError``, as for any unsized iterable.

Under ``DataLoader(num_workers=N)``, each loader worker runs its own copy of
the recipe and sets :func:`pescador.worker_info` (its id, N, and a seed
derived from the loader's), so sources shard their data and a mux without
replacement shards its pool: a finite pool is delivered once in total, not
N times.  The seed is new for every epoch, persistent workers included, and
the whole run repeats from one ``torch.manual_seed`` (or the loader's
``generator``); every ``random_state`` in the recipe is combined with it.

Exact checkpoints in the middle of an epoch: under torchdata's
``StatefulDataLoader`` (``loader(recipe, stateful=True)``), each iteration
of the dataset says where it is after every batch, in the process that
runs it, and a new loader given ``state_dict()`` resumes every worker's run
there, without drawing the earlier items again (see :class:`StreamDataset`).

For most training loops the simpler path is :func:`pescador.zmq_offload`
in front of a plain loop (see the frameworks page of the docs): it works
with any framework and sends arrays without copying, while the DataLoader
brings pinned memory and torch's own worker management.  Not both at once:
DataLoader workers are daemonic and may not start processes, so a loader
with workers over a recipe that holds ``zmq_offload`` is refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _pickling
from ._fingerprint import examine
from .core import Stream, cycle, stream, take
from .exceptions import PescadorError
from .extras import check_even, even_count, rank_counts
from .stage import check_fields, check_int, stage_of, start_share
from .workers import WorkerInfo, rank_info, set_worker_info, worker_info
from .resume import _check_resumes

try:
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "pescador.torch needs PyTorch: pip install 'pescador[torch]' (or pip install torch)"
    ) from exc

try:  # (where a DataLoader keeps whether it batches: see StreamDataset._refuse_collation)
    from torch.utils.data._utils.fetch import _BaseDatasetFetcher
except ImportError:  # pragma: no cover - a torch that moved it: the check is then skipped
    _BaseDatasetFetcher = None

__all__ = ["loader", "as_dataset", "StreamDataset"]


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


_DOUBLE_BATCHING = (
    "{where}: this DataLoader batches the dataset's items ({batch_size}), but pescador items are "
    "batches already (made by buffer): collating them again would add a dimension in front.  Use pescador.torch.loader(stream, ...) or "
    "DataLoader(dataset, batch_size=None, ...).  If the items are single samples that the "
    "DataLoader should batch, say so: StreamDataset(stream, collate=True)."
)


_BOTH = (
    "{where}: the recipe runs {step!r}, which starts worker processes of its own, and num_workers={n} runs the "
    "recipe inside each DataLoader worker: a daemonic process, which may not start processes.  Keep one of the "
    "two: num_workers=0 (zmq_offload's workers produce in parallel, and the loader reads their items here), "
    "or the recipe without zmq_offload (the DataLoader's workers produce in parallel)"
)


def _starting_processes(recipe: Any) -> Any:
    """The first step of ``recipe`` whose runs start processes of their own (zmq_offload), or None."""
    stack, seen = [recipe], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, Stream):
            if getattr(stage_of(node), "starts_processes", False):
                return node.step
            stack.extend(node.args)
            stack.extend(node.kwargs.values())
    return None


class StreamDataset(IterableDataset):
    """An ``IterableDataset`` over a pescador stream (see :func:`as_dataset` and :func:`loader`).

    Parameters
    ----------
    recipe : Stream
        What each iteration runs.
    collate : bool
        False (the default): the items are batches already, and a
        ``DataLoader`` that batches them again (any ``batch_size`` but
        None) is refused with a :class:`~pescador.PescadorError` when its
        iteration starts.  True: the items are single samples, and the
        ``DataLoader`` may batch them.
    even : "drop", "pad" or None
        Under distributed training, every rank's epoch holds the same
        number of batches, so that the ranks stay in step: "drop" (the
        default) the smallest rank's count (the larger ranks leave out
        their last batches of each run), "pad" the largest rank's (the
        smaller ranks go on into a new run of the recipe for the rest);
        None: each rank its own count.  Where the counts cannot be known
        (see :func:`pescador.epoch_length`), the runs are left as they are.
        With one rank, nothing changes.

    Notes
    -----
    ``len(dataset)`` is the number of items an epoch of the recipe yields
    on this rank, over the ``DataLoader``'s workers (each counted as it runs
    the recipe: a mux that runs each stream once and ``epochs`` share the
    pool out between workers and ranks, a stream over a list is run whole by
    each worker), made even across ranks as ``even`` says; where
    :func:`pescador.epoch_length` cannot know it, ``len()`` raises
    ``TypeError``.

    Under torchdata's ``StatefulDataLoader``, each iteration (the iterator
    ``iter(dataset)`` returns) keeps a state: ``state_dict()`` after any
    item is a small JSON dict (the recipe's fingerprint, the epoch's seed,
    the run's state), and ``load_state_dict(state)`` before the first item
    makes the iteration yield what that one would have yielded next.  The
    dataset's own ``state_dict()`` counts the epochs a loader worker has
    begun.  Elsewhere (a plain ``DataLoader``) the recipe runs plainly and
    pays nothing for states; an iteration asked for its state before its
    first item keeps one too:

    >>> import json, numpy as np, pescador
    >>> from pescador.torch import as_dataset
    >>> dataset = as_dataset(pescador.stream([{"x": np.array([i])} for i in range(6)]))
    >>> run = iter(dataset)
    >>> _ = run.state_dict()                      # (asked before the first item: the run keeps states)
    >>> [int(next(run)["x"]) for _ in range(2)]
    [0, 1]
    >>> again = iter(dataset)
    >>> again.load_state_dict(json.loads(json.dumps(run.state_dict())))
    >>> [int(item["x"]) for item in again]
    [2, 3, 4, 5]
    """

    def __init__(self, recipe: Stream, *, collate: bool = False, even: str | None = "drop") -> None:
        super().__init__()
        self.recipe = recipe
        self.collate = bool(collate)
        self.even = check_even(even, "StreamDataset")
        self.loader_workers: int | None = None  # (set by loader(); else read from the DataLoader asking len())
        self._epoch: list | None = None  # (in a DataLoader worker) [(base seed, worker id), epochs begun]
        self._fingerprint_of_recipe: str | None = None  # (for the states of its runs: see _Run)

    def __iter__(self) -> Iterator:
        caller = sys._getframe(1)
        if not self.collate:
            self._refuse_collation(caller)
        return _Run(self, _under_torchdata(caller))

    def state_dict(self) -> dict:
        """The dataset's part of a ``StatefulDataLoader``'s state: how many epochs this worker has begun.

        The position in an epoch is the state of the iterator (``iter(dataset)``): see :class:`StreamDataset`.
        """
        epoch = self._epoch
        return {"epochs": None if epoch is None else [epoch[0][0], epoch[0][1], epoch[1]]}

    def load_state_dict(self, state: dict) -> None:
        """Go on from a :meth:`state_dict` (in a ``StatefulDataLoader`` worker started again)."""
        where = "StreamDataset (the epochs a loader worker has begun)"
        epochs = check_fields(state, ("epochs",), where)["epochs"]
        if epochs is None:
            self._epoch = None
            return
        if not (isinstance(epochs, list) and len(epochs) == 3):
            raise PescadorError(f"resumable: the state of {where}: field 'epochs' must be null or [base seed, worker "
                                f"id, epochs begun]; got {str(epochs)[:80]}")
        fields = dict(zip(("base", "worker", "begun"), epochs))
        base, wid, begun = (check_int(fields, k, where, 0, 2**64 - 1) for k in ("base", "worker", "begun"))
        self._epoch = [(base, wid), begun]

    def __len__(self) -> int:
        workers = self.loader_workers
        if workers is None:
            workers = _num_workers(sys._getframe(1), self)
        length = even_count(rank_counts(self.recipe, workers), self.even, worker_info().rank)
        if length is None:
            raise TypeError(
                f"{self!r} has no len(): pescador.epoch_length cannot tell how many items an epoch "
                "of this recipe holds without running it (a generator function, or an endless run)"
            )
        return length

    def _begin(self, info: Any, seed: np.random.SeedSequence | None) -> Stream:
        """Set up this process's run: the recipe it runs (bounded for even ranks); in a loader worker, the
        worker's :func:`pescador.worker_info` with ``seed`` (this epoch's)."""
        if info is not None:  # inside a DataLoader worker: tell the sources who they are
            step = _starting_processes(self.recipe)
            if step is not None:
                where = f"as_dataset (in DataLoader worker {info.id})"
                raise PescadorError(_BOTH.format(where=where, step=step, n=info.num_workers))
            set_worker_info(WorkerInfo(info.id, info.num_workers, seed))
        recipe, limit = self.recipe, self._limit(info)
        if limit is not None:
            recipe = cycle(limit)(recipe) if self.even == "pad" else take(limit, recipe)
        return recipe

    def _limit(self, info: Any) -> int | None:
        """How many items this process's run yields so that every rank's run holds as many, or None (one
        rank, ``even=None``, or counts that cannot be known: the run as it is)."""
        rank, world = rank_info()
        if self.even is None or world == 1:
            return None
        counts = rank_counts(self.recipe, 0 if info is None else info.num_workers, run=True)
        target = even_count(counts, self.even, rank)
        if target is None:
            return None
        mine = counts[rank]
        wid = 0 if info is None else info.id
        if self.even == "drop":  # (the first workers keep theirs, the last leave out what is too many)
            return max(0, min(mine[wid], target - sum(mine[:wid])))
        extra = target - sum(mine)  # (spread over the workers that have items)
        given = [w for w, count in enumerate(mine) if count]
        if extra and not given:
            raise PescadorError(
                f"StreamDataset(even='pad'): rank {rank} has no items in a run of {self.recipe!r}, so it has "
                "nothing to pad with; use even='drop', or give every rank data"
            )
        if wid not in given:
            return 0
        return mine[wid] + extra // len(given) + (given.index(wid) < extra % len(given))

    def _refuse_collation(self, frame: Any) -> None:
        """Raise if the DataLoader that starts this iteration batches its items.

        A DataLoader (in its main process or in a worker) starts each
        iteration from a fetcher that knows whether it batches
        (``auto_collation``: ``batch_size`` is not None); the fetcher is the
        caller of ``iter(dataset)``.  A few frames up are searched, for a
        fetcher that holds this very dataset.
        """
        for _ in range(4):
            if frame is None or _BaseDatasetFetcher is None:
                return
            fetcher = frame.f_locals.get("self")
            if isinstance(fetcher, _BaseDatasetFetcher) and fetcher.dataset is self:
                if fetcher.auto_collation:
                    info = get_worker_info()
                    where = "as_dataset" if info is None else f"as_dataset (in DataLoader worker {info.id})"
                    batch_size = _batch_size(frame)
                    raise PescadorError(_DOUBLE_BATCHING.format(where=where, batch_size=batch_size))
                return
            frame = frame.f_back

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

    def _fingerprint(self, recipe: Stream) -> str:
        """The fingerprint of ``recipe`` (this dataset's, computed once; or it bounded for even ranks)."""
        if recipe is not self.recipe:
            return examine(recipe)[0]
        if self._fingerprint_of_recipe is None:
            self._fingerprint_of_recipe = examine(recipe)[0]
        return self._fingerprint_of_recipe

    def __reduce__(self) -> tuple:
        """Pickled (for ``DataLoader`` workers not started by ``fork``) as :mod:`pescador._pickling` sends a recipe.

        So a recipe defined in a notebook or ``__main__`` travels by value, and
        what cannot travel is refused by name when the ``DataLoader`` starts
        its workers, before any of them runs.
        """
        sending = "pescador.torch: the dataset's recipe cannot be sent to DataLoader workers not started by 'fork'"
        fix = "or give the DataLoader multiprocessing_context='fork', where the platform has it"
        return _unpickled, (_pickling.dumps(self.recipe, sending, fix), self.collate, self.even)

    def __repr__(self) -> str:
        return f"StreamDataset({self.recipe!r}{', collate=True' if self.collate else ''})"


_STATE_FIELDS = ("pescador_torch", "recipe", "seed", "run")


class _Run:
    """One iteration of a :class:`StreamDataset` (an epoch in one process): its items, as tensors.

    Under torchdata's ``StatefulDataLoader`` (which asks ``state_dict()`` of
    the iterator after every batch, in the process that runs it), or when
    ``state_dict()`` or ``load_state_dict()`` is called before the first
    item, the recipe runs as a resumable share (the run a ``zmq_offload``
    worker makes: it draws exactly what the plain run would, from the same
    seed) and the state is ``{"pescador_torch": 1, "recipe": fingerprint,
    "seed": [entropy, spawn key] of the epoch's seed, "run": [the share's
    state]}`` (JSON; "run" is null before the first item, "recipe" too
    where no item was drawn).  The share's state is in a list because
    torchdata sends a state's nested dicts field by field (what changed)
    and may reorder their keys; a list it sends whole.  Elsewhere the recipe
    runs plainly, and asks for a state are refused.
    """

    __slots__ = ("dataset", "stateful", "loaded", "recipe", "run", "share", "seed", "fingerprint")

    def __init__(self, dataset: StreamDataset, stateful: bool) -> None:
        self.dataset, self.stateful = dataset, stateful
        self.loaded: dict | None = None
        self.recipe: Any = None
        self.run: Any = None  # (what the items come from: the plain run, or the share's stages)
        self.share: Any = None
        self.seed: np.random.SeedSequence | None = None
        self.fingerprint: str | None = None

    def __iter__(self) -> _Run:
        return self

    def __next__(self) -> Any:
        if self.run is None:
            self._start()
        return _tensors(next(self.run))

    def _choose_seed(self, info: Any) -> None:
        """This iteration's seed, chosen once (at its first item, or at the first state asked before it)."""
        loaded = self.loaded
        if loaded is not None and loaded["seed"] is not None:
            entropy, key = loaded["seed"]
            self.seed = np.random.SeedSequence(entropy, spawn_key=tuple(key))
            if info is not None:  # (this worker goes on counting epochs from the saved one)
                self.dataset._epoch = [(entropy, info.id), key[1] + 1]
        elif info is not None:
            self.seed = self.dataset._epoch_seed(info)
        elif self.stateful:
            self.seed = np.random.SeedSequence()

    def _start(self) -> None:
        info, loaded = get_worker_info(), self.loaded
        if self.seed is None:
            self._choose_seed(info)
        self.recipe = recipe = self.dataset._begin(info, self.seed)
        if not self.stateful:
            self.run = iter(recipe)
            return
        _check_resumes(recipe)
        self.fingerprint = self.dataset._fingerprint(recipe)
        if loaded is not None:
            self._check_recipe(loaded)
        state = None if loaded is None or loaded["run"] is None else loaded["run"][0]
        self.share = start_share(recipe, self.seed, state)
        self.run = iter(self.share)
        self.loaded = None

    def _refusal(self, what: str) -> PescadorError:
        return PescadorError(
            f"as_dataset: {what} of a run already begun without states (by a plain DataLoader, or iter() of the "
            "dataset): use torchdata's StatefulDataLoader (pescador.torch.loader(recipe, stateful=True)), or ask "
            "state_dict() of iter(dataset) before its first item"
        )

    def state_dict(self) -> dict:
        """Where this iteration is: a small JSON-serialisable dict (see :class:`_Run`)."""
        if self.run is None:
            self.stateful = True
            if self.seed is None:
                self._choose_seed(get_worker_info())
            recipe, run = None if self.loaded is None else self.loaded["recipe"], None
        elif not self.stateful:
            raise self._refusal("a state was asked")
        else:
            recipe, run = self.fingerprint, [self.share.state()]  # (a list: see _Run)
        seed = self.seed
        return {
            "pescador_torch": 1,
            "recipe": recipe,
            "seed": [int(seed.entropy), list(seed.spawn_key)],
            "run": run,
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from a :meth:`state_dict` (before the first item): the run yields what that run would have
        yielded next."""
        if self.run is not None:
            raise self._refusal("load_state_dict() was called after the first item")
        where = "as_dataset's run"
        fields = check_fields(state, _STATE_FIELDS, where)
        if fields["pescador_torch"] != 1:
            raise PescadorError(f"resumable: the state of {where} is of version {str(fields['pescador_torch'])[:20]}; "
                                "this pescador reads version 1")
        seed, run = fields["seed"], fields["run"]
        if run is not None and not (isinstance(run, list) and len(run) == 1 and seed is not None):
            raise PescadorError(f"resumable: the state of {where}: field 'run' must be null or [the run's state] "
                                f"(with a seed); got {str(run)[:80]}")
        if seed is not None:
            ok = isinstance(seed, list) and len(seed) == 2 and isinstance(seed[1], list)
            ok = ok and all(type(v) is int and v >= 0 for v in [seed[0], *seed[1]])
            info = get_worker_info()
            if not ok or (info is not None and (len(seed[1]) != 2 or seed[1][0] != info.id)):
                raise PescadorError(
                    f"resumable: the state of {where}: field 'seed' must be [entropy, spawn key] of "
                    + ("this loader worker's seed ([base, [worker id, epoch]])" if info is not None else "the run's seed")
                    + f"; got {str(seed)[:80]} (a state of another loader worker, or of a loader with another num_workers?)"
                )
        self.stateful, self.loaded = True, json.loads(json.dumps(fields))  # (a copy: a state may serve twice)

    def _check_recipe(self, state: dict) -> None:
        if state["recipe"] is not None and state["recipe"] != self.fingerprint:
            raise PescadorError(
                f"resumable: the state of as_dataset's run is of another recipe than {self.dataset.recipe!r} (sources, "
                "parameters, seeds or the number of DataLoader workers or ranks differ)"
            )


def _under_torchdata(frame: Any) -> bool:
    """Whether torchdata's ``StatefulDataLoader`` (its single-process iterator or its worker loop) starts
    this iteration: the caller of ``iter(dataset)``, a few frames up."""
    for _ in range(5):
        if frame is None:
            return False
        if frame.f_globals.get("__name__", "").startswith("torchdata."):
            return True
        frame = frame.f_back
    return False


def _unpickled(recipe: bytes, collate: bool, even: str | None) -> StreamDataset:
    """A :class:`StreamDataset` from its pickle (in a DataLoader worker)."""
    return StreamDataset(_pickling.loads(recipe), collate=collate, even=even)


def _num_workers(frame: Any, dataset: StreamDataset) -> int:
    """``num_workers`` of the DataLoader over ``dataset`` that asks its length (a few frames up), else 0."""
    for _ in range(4):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, DataLoader) and owner.dataset is dataset:
            return owner.num_workers
        frame = frame.f_back
    return 0


def _batch_size(frame: Any) -> Any:
    """``batch_size=N`` of the DataLoader above ``frame`` where it can be seen, else a phrase."""
    while frame is not None:
        owner = frame.f_locals.get("loader", frame.f_locals.get("self"))
        if isinstance(owner, DataLoader):
            return f"batch_size={owner.batch_size}"
        frame = frame.f_back
    return "its batch_size is not None"


def _recipe(source: Any, args: tuple, kwargs: dict, where: str) -> Stream:
    try:
        return stream(source, *args, **kwargs)
    except PescadorError as exc:
        raise PescadorError(f"{where}: {exc}") from None


def as_dataset(source: Any, *args: Any, **kwargs: Any) -> StreamDataset:
    """Wrap a stream as a ``torch.utils.data.IterableDataset`` of dicts of tensors.

    Most users want :func:`loader`, which also configures the
    ``DataLoader``.  Give this dataset to a ``DataLoader`` with
    ``batch_size=None``: pescador makes the batches, and a ``DataLoader``
    that batches them again is refused (see :class:`StreamDataset`).

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
        copied first); other values pass unchanged.  Its ``len()`` is
        :func:`pescador.epoch_length` where known.

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
    >>> list(torch.utils.data.DataLoader(as_dataset(rows, 2)))     # batch_size=1: batches again
    Traceback (most recent call last):
      ...
    pescador.exceptions.PescadorError: as_dataset: this DataLoader batches the dataset's items (batch_size=1), ...
    """
    return StreamDataset(_recipe(source, args, kwargs, "as_dataset"))


def loader(
    recipe: Any,
    num_workers: int = 0,
    pin_memory: bool = False,
    even: str | None = "drop",
    stateful: bool = False,
    **dataloader_kwargs: Any,
) -> DataLoader:
    """A ``torch.utils.data.DataLoader`` over a stream, configured for pescador's batches.

    Parameters
    ----------
    recipe : Stream
        The stream (or anything :func:`pescador.stream` accepts alone: a
        Streamer, a list, a generator function without arguments).  Its
        items are usually batches made by :func:`pescador.buffer`.
    num_workers : int
        Loader worker processes; 0 runs the recipe in this process.  Each
        worker runs the recipe with its own :func:`pescador.worker_info`
        (id, count, a seed new for every epoch): see :func:`as_dataset`.
    pin_memory : bool
        Copy each batch into page-locked memory (for faster transfers to a GPU).
    even : "drop", "pad" or None
        Under distributed training, every rank's epoch holds the same number
        of batches (the ranks stay in step): "drop" (the default) the
        smallest rank's count, "pad" the largest rank's, None each rank its
        own (see :class:`StreamDataset`).  With one rank, nothing changes.
    stateful : bool
        True: a ``torchdata.stateful_dataloader.StatefulDataLoader`` (needs
        ``pip install 'pescador[torchdata]'``), whose ``state_dict()``, saved
        mid-epoch (through JSON too) and given to ``load_state_dict()`` of a
        new loader over the same recipe, resumes the epoch with exactly the
        batches the uninterrupted loader would have given, without drawing
        the earlier ones again: each loader worker's run reports where it
        is after every batch.  The recipe must be resumable (see
        :func:`pescador.resumable`).
    **dataloader_kwargs
        Passed on to ``DataLoader``: ``persistent_workers``,
        ``prefetch_factor``, ``generator``, ``worker_init_fn``,
        ``multiprocessing_context``, ``timeout``, ``collate_fn`` (applied
        to each batch), ...  ``batch_size`` may only be None: pescador makes
        the batches.

    Returns
    -------
    torch.utils.data.DataLoader
        With ``batch_size=None`` over :func:`as_dataset` of the recipe.  Its
        ``len()`` is the number of batches in an epoch on this rank, over
        its workers, where :func:`pescador.epoch_length` can know it (see
        :class:`StreamDataset`); elsewhere ``len()`` raises ``TypeError``.

    Examples
    --------
    >>> import numpy as np, pescador, pescador.torch
    >>> batches = pescador.stream([{"X": np.full((4, 3), i, dtype=np.float32)} for i in range(3)])
    >>> loader = pescador.torch.loader(batches)
    >>> len(loader), [batch["X"].shape for batch in loader]
    (3, [torch.Size([4, 3]), torch.Size([4, 3]), torch.Size([4, 3])])
    """
    if dataloader_kwargs.get("batch_size") is not None:
        raise PescadorError(
            f"pescador.torch.loader: got batch_size={dataloader_kwargs['batch_size']!r}, but pescador makes the "
            "batches (pescador.buffer) and the DataLoader must not batch them again; leave batch_size out "
            "(or None), and set the batch size with buffer(n)"
        )
    dataloader_kwargs.pop("batch_size", None)
    dataset = StreamDataset(_recipe(recipe, (), {}, "pescador.torch.loader"), even=check_even(even, "pescador.torch.loader"))
    dataset.loader_workers = num_workers
    step = _starting_processes(dataset.recipe) if num_workers else None
    if step is not None:
        raise PescadorError(_BOTH.format(where="pescador.torch.loader", step=step, n=num_workers))
    cls = DataLoader
    if stateful:
        try:
            from torchdata.stateful_dataloader import StatefulDataLoader as cls
        except ImportError:
            raise ImportError(
                "pescador.torch.loader(stateful=True) needs torchdata's StatefulDataLoader: pip install "
                "'pescador[torchdata]' (or pip install torchdata)"
            ) from None
    return cls(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **dataloader_kwargs)
