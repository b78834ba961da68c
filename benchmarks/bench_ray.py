"""ray_offload against zmq_offload and Ray Data, and Ray's three ways to move chunks.

Needs Ray (``pip install 'pescador[ray]'``); starts a local Ray instance.
The transports: one timed run per cell (after one warm-up run of each kind);
the workloads: the median of ``--repeat`` runs per cell, each run's kinds
one after the other, so that a load that comes and goes hits them alike.
Start-up (actors, processes) is included everywhere, and the time to the
first item is shown on its own.  Ray Data's column needs ``ray[data]`` (and
pandas); without it, it is left out.

1. transports (one actor, no pescador): chunks of ``(1, 10)`` float32 items
   and single 4 MiB items moved by a streaming generator (``num_returns=
   "streaming"``, what ``ray_offload`` uses), by pipelined actor method calls
   (4 in flight, one chunk each), and through the object store (the actor
   ``ray.put``s each chunk and returns the references, 16 per call).
2. workloads, each with ``ray_offload``, ``zmq_offload`` and Ray Data
   (``ray.data.range(workers).flat_map(...)`` over the same generator, read with
   ``iter_batches``): 4 MiB arrays; ``(1, 10)`` items, one by one and as rows
   of 256-row batches made in the workers (``buffer(256)`` before the offload,
   as Ray Data makes its batches); a CPU-bound decode (about 1 ms of Python
   per item) with 2 workers.
   Goals: large items at >= 0.5x zmq_offload; small items >= Ray Data.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pescador

from ._util import table

MIB4 = (1024, 1024)  # float32: 4 MiB


# ----------------------------------------------------------------------------
# Sources (module level: actors and workers import them)
# ----------------------------------------------------------------------------


def arrays(n, shape):
    """``n`` items of a fresh float32 array each (a share of them in a worker)."""
    info = pescador.worker_info()
    for _ in range(info.id, n, info.count):
        yield {"X": np.ones(shape, dtype=np.float32)}


def decoded(n, work):
    """``n`` items that each cost ``work`` iterations of pure Python (a decode)."""
    info = pescador.worker_info()
    for i in range(info.id, n, info.count):
        total = 0
        for j in range(work):
            total += j * j
        yield {"X": np.array([[total, i]], dtype=np.int64)}


def _share_rows(row, fn, count, args):
    """Ray Data's flat_map: the items of share ``row["id"]`` of ``fn(*args)``."""
    from pescador.workers import WorkerInfo, set_worker_info

    set_worker_info(WorkerInfo(int(row["id"]), count, None))
    try:
        yield from fn(*args)
    finally:
        set_worker_info(None)


# ----------------------------------------------------------------------------
# 1. transports
# ----------------------------------------------------------------------------


class Mover:
    def __init__(self, shape, per_chunk):
        self.chunk = [{"X": np.ones(shape, dtype=np.float32)} for _ in range(per_chunk)]

    def stream(self, chunks):
        for _ in range(chunks):
            yield [{"X": item["X"].copy()} for item in self.chunk]

    def call(self):
        return [{"X": item["X"].copy()} for item in self.chunk]

    def put(self, count):
        import ray

        return [ray.put([{"X": item["X"].copy()} for item in self.chunk]) for _ in range(count)]


def transports(ray, small_items, large_items):
    actor_class = ray.remote(Mover)
    rows = []
    for label, shape, per_chunk, items in [("(1,10) x256/chunk", (1, 10), 256, small_items),
                                           ("(1,10) x1/object", (1, 10), 1, small_items // 20),
                                           ("4 MiB x1/object", MIB4, 1, large_items)]:
        chunks = max(1, items // per_chunk)
        nbytes = chunks * per_chunk * int(np.prod(shape)) * 4
        cells = [label]
        for kind in ("stream", "call", "put"):
            actor = actor_class.remote(shape, per_chunk)
            ray.get(actor.__ray_ready__.remote())
            t0 = time.perf_counter()
            if kind == "stream":
                for ref in actor.stream.options(num_returns="streaming", _generator_backpressure_num_objects=4).remote(chunks):
                    ray.get(ref)
            elif kind == "call":
                inflight = [actor.call.remote() for _ in range(min(4, chunks))]
                for k in range(chunks):
                    ray.get(inflight.pop(0))
                    if k + len(inflight) + 1 < chunks:
                        inflight.append(actor.call.remote())
            else:
                left, batch = chunks, 16
                pending = actor.put.remote(min(batch, left))
                while left > 0:
                    refs = ray.get(pending)
                    left -= len(refs)
                    if left > 0:
                        pending = actor.put.remote(min(batch, left))
                    for ref in refs:
                        ray.get(ref)
            seconds = time.perf_counter() - t0
            ray.kill(actor)
            cells.append(f"{chunks * per_chunk / seconds:,.0f}/s {nbytes / seconds / 1e6:,.0f}MB/s")
        rows.append(cells)
    table("1. transports (one actor): items/s and MB/s", ["payload", "streaming generator",
                                                          "method calls (4 in flight)", "object store (ray.put)"], rows)


# ----------------------------------------------------------------------------
# 2. workloads
# ----------------------------------------------------------------------------


def _timed(iterable, size):
    """(items, seconds to the first item, seconds in all) of a run; ``size(x)`` counts the items in x."""
    t0 = time.perf_counter()
    it = iter(iterable)
    n = size(next(it))
    first = time.perf_counter() - t0
    for x in it:
        n += size(x)
    return n, first, time.perf_counter() - t0


def _one(_):
    return 1


def _rows(batch):
    return len(batch["X"])


def _ray_data(ray, fn, args, workers, batch):
    ds = ray.data.range(workers, override_num_blocks=workers).flat_map(
        _share_rows, fn_args=(fn, workers, args)
    )
    return ds.iter_batches(batch_size=batch, batch_format="numpy")


def _has_ray_data() -> bool:
    try:
        import ray.data  # noqa: F401  (needs pandas)
    except ImportError:
        return False
    return True


def workloads(ray, args):
    cases = [
        ("4 MiB arrays", arrays, (args.large, MIB4), 1, 4 * 2**20, 1, False),
        ("(1,10) items", arrays, (args.small, (1, 10)), 1, 40, 256, False),
        ("(1,10) rows, batches of 256", arrays, (args.small, (1, 10)), 1, 40, 256, True),
        ("decode ~1ms, 2 workers", decoded, (args.cpu, 20000), 2, 16, 64, False),
    ]
    data = _has_ray_data()
    rows = []
    for label, fn, fargs, workers, nbytes, batch, batched in cases:
        recipe = pescador.stream(fn, *fargs)
        size = _one
        if batched:  # (pescador's batches are made in the workers, as Ray Data's are: rows/s)
            recipe, size = pescador.buffer(batch)(recipe), _rows
        runs = {
            "ray_offload": lambda: (pescador.ray_offload(workers=workers)(recipe), size),
            "zmq_offload": lambda: (pescador.zmq_offload(workers=workers)(recipe), size),
        }
        if data:
            runs["Ray Data"] = lambda: (_ray_data(ray, fn, fargs, workers, batch), _rows)
        timed: dict = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, make in runs.items():
                timed[name].append(_timed(*make()))
        rates, steady, firsts = {}, {}, {}
        cells = [label]
        for name, results in timed.items():
            n = results[0][0]
            firsts[name] = statistics.median(first for _, first, _ in results)
            rates[name] = n / statistics.median(seconds for _, _, seconds in results)
            steady[name] = statistics.median((n - (1 if size is _one else batch)) / max(seconds - first, 1e-9)
                                             for _, first, seconds in results)
            cells.append(f"{rates[name]:,.0f}/s {rates[name] * nbytes / 1e6:,.0f}MB/s "
                         f"(1st {firsts[name]:.2f}s; then {steady[name]:,.0f}/s)")
        cells.append(f"{rates['ray_offload'] / rates['zmq_offload']:.2f} ({steady['ray_offload'] / steady['zmq_offload']:.2f})")
        cells.append(f"{firsts['ray_offload'] / firsts['zmq_offload']:.0f}x")
        if data:
            cells.append(f"{rates['ray_offload'] / rates['Ray Data']:.2f} ({steady['ray_offload'] / steady['Ray Data']:.2f})")
        rows.append(cells)
    header = ["workload", "ray_offload", "zmq_offload"] + (["Ray Data iter_batches"] if data else [])
    header += ["ray/zmq (after 1st)", "1st item: ray/zmq"] + (["ray/Ray Data (after 1st)"] if data else [])
    table(f"2. workloads: items/s and MB/s in all, the first item's wait, and items/s after it (median of "
          f"{args.repeat} runs{'' if data else '; Ray Data left out: pip install ray[data]'})", header, rows)
    print("\ngoals: 4 MiB arrays ray/zmq >= 0.5; (1,10) items ray/Ray Data >= 1 (Ray Data gives batches of 256 rows:"
          "\n the batches row compares like with like)")


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks ray")
    parser.add_argument("--small", type=int, default=200_000, help="(1,10) items")
    parser.add_argument("--large", type=int, default=500, help="4 MiB items")
    parser.add_argument("--cpu", type=int, default=2_000, help="decoded items")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload cell (the median is shown)")
    parser.add_argument("--no-transports", action="store_true", help="leave out part 1")
    args = parser.parse_args(argv)
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    # warm-up: one short run of each kind, so that imports and worker pools are not in the first cell
    list(pescador.ray_offload()(pescador.stream(arrays, 10, (1, 10))))
    list(pescador.zmq_offload()(pescador.stream(arrays, 10, (1, 10))))
    if _has_ray_data():
        list(_ray_data(ray, arrays, (10, (1, 10)), 1, 4))
    if not args.no_transports:
        transports(ray, args.small, args.large)
    workloads(ray, args)
