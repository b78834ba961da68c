"""The random generator of a run, from a ``random_state`` and the worker running it.

Outside any worker (:func:`pescador.worker_info` reports ``seed=None``) a
``random_state`` means what numpy users expect: a ``Generator`` or
``RandomState`` is used as it is (and advances), an int seeds a new
generator (every run repeats), None draws fresh entropy.

Inside a worker (``zmq_offload`` or ``DataLoader`` workers) the recipe is a
copy, so a generator object in it is the same copy in every worker and in
every run: used as it is, every worker would make the same choices.  So in
a worker, every kind of ``random_state`` is combined with the worker's seed
(a :class:`numpy.random.SeedSequence`, new for each run of ``zmq_offload``
and for each ``DataLoader`` epoch):

- None: a child spawned from the worker's seed (each run in the worker draws
  anew);
- an int keeps its promise, every run repeats, in workers too: with several
  workers, worker ``i`` uses ``SeedSequence(int, spawn_key=(i,))`` (what
  ``SeedSequence(int).spawn`` gives its ``i``-th child, never ``int + i``),
  so workers differ from each other and every run (every ``zmq_offload``
  run, every ``DataLoader`` epoch) repeats, whatever the workers' own seeds;
  with one worker the int alone decides, so a seeded recipe gives the same
  items in one worker as in the main process.  For epochs that differ but a
  whole run that repeats, leave ``random_state`` None and seed the runner
  (``zmq_offload(random_state=...)``, ``torch.manual_seed``);
- a ``Generator`` or ``RandomState``: entropy drawn from the worker's copy
  of it (deterministic: the copy's state), combined with the worker's seed
  in the same way.

In a resumable run (and in every share of a ``ray_offload`` run, which must
be able to resume after a failover) a ``random_state`` of None takes child
``n`` of the run's seeds (:class:`pescador.stage.Seeds`) instead, ``n``
counting the stages of the run that did so before it: the run records the
entropy and the count in its state, so that a resumed run draws exactly what
the uninterrupted one drew.
In a share the run's seeds are the worker's seed, and child ``n`` is what
``worker.seed.spawn(1)`` gives the ``n``-th time, so a plain run and a
resumable run of a share draw the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np


_OBJECTS = (np.random.Generator, np.random.RandomState)


def _entropy(random_state: Any) -> list:
    """128 bits drawn from a Generator or RandomState (advancing it)."""
    if isinstance(random_state, np.random.Generator):
        words = random_state.integers(0, 2**32, size=4, dtype=np.int64)
    else:
        words = random_state.randint(0, 2**32, size=4, dtype=np.int64)
    return [int(w) for w in words]


def _combined(entropy: Any, seed: np.random.SeedSequence) -> np.random.Generator:
    """A generator from the user's entropy and a worker's seed (a hash of both)."""
    words = tuple(int(w) for w in seed.generate_state(4))  # (generate_state leaves the seed as it is)
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=words))


def _rng(random_state: Any, worker: Any, seeds: Any = None) -> Any:
    """The generator of a run of a stage with this ``random_state``, in this worker, in a run whose
    ``seeds`` are given when it is resumable (see the module)."""
    if random_state is None and seeds is not None:
        return np.random.default_rng(seeds.child())
    if worker.seed is None and worker.count == 1:  # outside any worker: as numpy users expect
        return random_state if isinstance(random_state, _OBJECTS) else np.random.default_rng(random_state)
    if random_state is None:
        return np.random.default_rng(None if worker.seed is None else worker.seed.spawn(1)[0])
    if not isinstance(random_state, _OBJECTS):  # an int: every run repeats; workers differ by their index
        if worker.count == 1:
            return np.random.default_rng(random_state)
        return np.random.default_rng(np.random.SeedSequence(random_state, spawn_key=(worker.id,)))
    # (a WorkerInfo set by hand without a seed: the worker's id at least tells the workers apart)
    seed = worker.seed if worker.seed is not None else np.random.SeedSequence(worker.id)
    return _combined(_entropy(random_state), seed)
