"""ray_offload on this machine: ``python docs/ray_example.py`` (needs ``pip install 'pescador[ray]'``).

With no Ray cluster connected, the first run starts a local Ray instance (and
says so in a log line); on a cluster, call ``ray.init(address=...)`` first.
The test suite runs ``main()`` on its two-node test cluster.
"""

import logging

import numpy as np
from toolz import pipe

import pescador


def read_files(files, rows):
    """A source that shards its files: each worker (and training rank) reads its own."""
    info = pescador.worker_info()
    for name in files[info.id :: info.count]:
        for row in range(rows):
            yield {"X": np.full((1, 4), row, dtype=np.float32), "file": np.array([name])}


def main(workers=2):
    batches = pipe(
        pescador.stream(read_files, list(range(10)), 8),
        pescador.buffer(8),  # batches are made on the actors: fewer, larger Ray objects
        pescador.ray_offload(workers=workers, resources={"num_cpus": 1}, max_restarts=3),
    )
    files = set()
    for batch in batches:
        files.update(batch["file"].tolist())
    print(f"read {len(files)} files on {workers} Ray actors")
    return files


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
