"""Side by side: our pipeline, PyTorch's DataLoader and pescador 3.0, on the same workloads in one run.

Workloads (each item made in worker processes, received by one consumer):

- fft: a CPU-bound decode per item (the magnitude of an FFT of 4,096
  samples), 2 workers;
- small dicts: small dict items (an int64 array of one element and a (1, 10)
  float32 array: pescador 3.0 sends arrays only), 2 workers;
- 4 MiB arrays: one (1024, 1024) float32 array per item, 2 workers;
- mux of 100 sources: 100 sources of small items, drawn at random, 2 workers.

Paths:

- ours: ``zmq_offload(workers=2)`` over ``stream(...)`` (a ``mux`` for the last);
- DataLoader: ``torch.utils.data.DataLoader`` over an ``IterableDataset``
  with ``num_workers=2, batch_size=None`` (what a PyTorch user writes; each
  worker makes its share, as ours do);
- pescador 3.0: ``ZMQStreamer`` (one worker process: 3.0 has no more), over a
  ``Streamer`` (a ``StochasticMux`` for the last), run with the python of
  ``build/peers-venv`` where ``make bench-peers`` installed pescador 3.0.0
  (our package and 3.0 never share a venv), else left out.

A second table runs in one process, through each library's 1.0 / 3.x
calls, next to the hand-written loop that does the same (the *limit*,
timed in the same process, in turn with the path: the ratio is the
limit's time over the path's, so 1.0 is the limit):

- ``Streamer(gen) iterated``: 200,000 small dict items (``{"i": i}``) from
  ``for item in Streamer(gen)``; the limit is the raw generator loop;
  DataLoader with ``batch_size=None, num_workers=0``;
- ``buffer (1, 128) -> 64``: (1, 128) float32 rows into batches of 64 (ours:
  ``buffer(64)``, as ``BufferedStreamer``; 3.0: ``buffer_stream(streamer,
  64, axis=0)``; DataLoader: ``batch_size=64``, stacking into a tensor);
  the limit is a loop slicing the list of rows and ``np.concatenate``;
- ``buffer (1, 3, 224, 224) -> 32``: image-sized rows into batches of 32;
  the limit is memcpy into two batches in turn (``np.concatenate(...,
  out=)``: the consumer holds the last batch while the next one fills).

Times are medians of per-batch CPU times (``time.process_time``; per
10,000 items for the first), so that another process preempting a few
does not move them.

Each (path, workload) runs in a fresh process, which prints its figures as
JSON: items/s and MB/s (from the first ``next`` to the last item), the
consumer's CPU per item (``time.process_time``), peak RSS of the consumer
(``VmHWM``) and of its largest worker (``ru_maxrss`` of its reaped
children: a forked worker counts the pages it shares with the consumer),
and the time to the first item (the recipe's ``iter`` and first ``next``,
worker start included).  Figures are the median of ``--repeat``
runs.  Goal: at least DataLoader's and 3.0's items/s everywhere, with lower
consumer CPU per item than DataLoader.

This file also runs as a script (``python bench_peers.py one PATH WORKLOAD``)
under 3.0's venv, where only numpy, pyzmq and pescador 3.0 are installed.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / "build" / "peers-venv" / "bin" / "python"
WORKERS = 2
SOURCES = 100

# workload -> (items, bytes per item)
WORKLOADS = {
    "fft": (4000, 2049 * 4),
    "small dicts": (20_000, 48),
    "4 MiB arrays": (200, 4 << 20),
    "mux of 100 sources": (20_000, 48),
}


# -- the items: module-level generators (each worker makes its share) ---------------


def fft_items(n, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal(4096)
    for i in range(n):
        signal[0] = i
        yield {"X": np.abs(np.fft.rfft(signal)).astype(np.float32)}


def small_dicts(n, seed=0):
    x = np.zeros((1, 10), dtype=np.float32)
    for i in range(n):
        yield {"i": np.array([i]), "X": x + i}


def big_arrays(n, seed=0):
    for i in range(n):
        yield {"X": np.full((1024, 1024), i, dtype=np.float32)}


def one_source(n, source):
    x = np.full((1, 10), source, dtype=np.float32)
    tag = np.array([source])
    for i in range(n):
        yield {"X": x, "source": tag}


GENERATORS = {"fft": fft_items, "small dicts": small_dicts, "4 MiB arrays": big_arrays}


def interleaved(n, seed):
    """What a PyTorch user writes for a mux: ``SOURCES`` generators, drawn at random."""
    rng = random.Random(seed)
    sources = [one_source(n, s) for s in range(SOURCES)]
    for _ in range(n):
        try:
            yield next(rng.choice(sources))
        except StopIteration:
            return


# -- the paths ------------------------------------------------------------------------


def ours(workload, n):
    import pescador

    share = n // WORKERS
    offload = pescador.zmq_offload(workers=WORKERS, start_method="fork")
    if workload == "mux of 100 sources":
        pool = [pescador.stream(one_source, share, s) for s in range(SOURCES)]
        return offload(pescador.take(share)(pescador.mux(SOURCES, None, random_state=0)(pool)))
    return offload(pescador.stream(GENERATORS[workload], share))


def dataloader(workload, n):
    import torch.utils.data

    class Items(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            share = n // (info.num_workers if info else 1)
            if workload == "mux of 100 sources":
                return interleaved(share, info.id if info else 0)
            return GENERATORS[workload](share, info.id if info else 0)

    return torch.utils.data.DataLoader(Items(), batch_size=None, num_workers=WORKERS)


def pescador3(workload, n):
    import pescador

    if workload == "mux of 100 sources":
        pool = [pescador.Streamer(one_source, n, s) for s in range(SOURCES)]
        source = pescador.StochasticMux(pool, n_active=SOURCES, rate=None, mode="with_replacement")
        source = pescador.Streamer(_take, source, n)
    else:
        source = pescador.Streamer(GENERATORS[workload], n)
    return pescador.ZMQStreamer(source)


def _take(source, n):
    for i, item in enumerate(source):
        if i >= n:
            return
        yield item


PATHS = {"ours": ours, "DataLoader": dataloader, "pescador 3.0": pescador3}


# -- in one process, through the 1.0 / 3.x calls, next to the hand-written limit ----------------

IN_PROCESS = {  # workload -> (items a run, rows per batch: 0 for items one by one, row shape)
    "Streamer(gen) iterated": (200_000, 0, None),
    "buffer (1, 128) -> 64": (64 * 1000, 64, (1, 128)),
    "buffer (1, 3, 224, 224) -> 32": (32 * 20, 32, (1, 3, 224, 224)),
}
GOALS = {  # workload -> our goal (issue 24), printed beside our ratio to the limit
    "Streamer(gen) iterated": ">= 0.9",
    "buffer (1, 128) -> 64": ">= 0.9, and above 3.0's",
    "buffer (1, 3, 224, 224) -> 32": ">= 0.95, and above 3.0's",
}
CHUNK = 10_000  # items timed together in the first workload


def small_items(n):
    for i in range(n):
        yield {"i": i}


def replay(items):
    yield from items


def in_process(path, workload):
    """``(run, limit)``: two functions, each starting one run of the workload (an iterator) by ``path`` and by
    the hand-written loop."""
    n, rows, shape = IN_PROCESS[workload]
    if rows:
        rng = np.random.default_rng(0)
        items = [{"X": rng.random(shape, dtype=np.float32)} for _ in range(n)]
    if path == "DataLoader":
        import torch.utils.data

        class Items(torch.utils.data.IterableDataset):
            def __iter__(self):
                return small_items(n) if not rows else replay(items)

        loader = torch.utils.data.DataLoader(Items(), batch_size=rows or None, num_workers=0)
        run = lambda: iter(loader)  # noqa: E731
    else:
        import pescador

        if not rows:
            run = lambda: iter(pescador.Streamer(small_items, n))  # noqa: E731
        elif path == "ours":
            run = lambda: iter(pescador.BufferedStreamer(pescador.Streamer(replay, items), rows))  # noqa: E731
        else:  # (3.0 has no BufferedStreamer: its buffering is buffer_stream)
            run = lambda: pescador.buffer_stream(pescador.Streamer(replay, items), rows, axis=0)  # noqa: E731
    if not rows:
        return run, lambda: small_items(n)
    if shape == (1, 128):
        def concatenated():
            for i in range(0, n, rows):
                yield {"X": np.concatenate([item["X"] for item in items[i : i + rows]])}
        return run, concatenated
    pair = [np.empty((rows, *shape[1:]), np.float32) for _ in range(2)]

    def two_batches():
        for k, i in enumerate(range(0, n, rows)):
            yield np.concatenate([item["X"] for item in items[i : i + rows]], out=pair[k % 2])
    return run, two_batches


def _unit_times(make, chunk):
    """The CPU time of each ``chunk`` items (or batches) of a run of ``make()`` (this process's: on a shared
    machine, time spent waiting for a core does not count)."""
    clock, times, count = time.process_time, [], 0
    then = clock()
    for _ in make():
        count += 1
        if count == chunk:
            now = clock()
            times.append(now - then)
            then, count = now, 0
    return times


def measure_in_process(path, workload, rounds=5):
    """One path and its limit in this process, in turn: the median time per item (or batch) of each."""
    rows = IN_PROCESS[workload][1]
    chunk = rows and 1 or CHUNK
    run, limit = in_process(path, workload)
    times = {"run": [], "limit": []}
    for _ in range(rounds):
        for key, make in (("run", run), ("limit", limit)):
            times[key] += _unit_times(make, chunk)
    scale = 1e6 if rows else 1e9 / CHUNK
    return {"time": statistics.median(times["run"]) * scale, "limit": statistics.median(times["limit"]) * scale}


def measure(path, workload):
    """One run in this process: the figures as a dict."""
    n, nbytes = WORKLOADS[workload]
    recipe = PATHS[path](workload, n)
    cpu0, t0 = time.process_time(), time.perf_counter()
    iterator = iter(recipe)
    next(iterator)
    first = time.perf_counter() - t0
    count = 1
    for _ in iterator:
        count += 1
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    del iterator, recipe
    import gc

    gc.collect()  # (the workers are reaped, so that their peak RSS counts)
    return {
        "items": count,
        "items/s": count / elapsed,
        "MB/s": count * nbytes / elapsed / 1e6,
        "consumer CPU us/item": cpu / count * 1e6,
        "consumer RSS MB": _peak_rss_kib() / 1024,
        "workers RSS MB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "first item ms": first * 1e3,
    }


def _peak_rss_kib():
    """This process's peak RSS since its exec (VmHWM; ``ru_maxrss`` would carry the parent's over exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_one(path, workload, python, mode="one"):
    env = dict(os.environ)
    if path == "pescador 3.0":
        env.pop("PYTHONPATH", None)  # (3.0 from its venv, never ours)
    else:
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [str(python), str(pathlib.Path(__file__).resolve()), mode, path, workload],
        capture_output=True, text=True, env=env, cwd="/tmp", timeout=900,
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
    if argv[:1] == ["one"]:
        print(json.dumps(measure(argv[1], argv[2])))
        return
    if argv[:1] == ["in-process"]:
        print(json.dumps(measure_in_process(argv[1], argv[2])))
        return
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks peers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS) + list(IN_PROCESS))
    args = parser.parse_args(argv)
    pythons = {"ours": sys.executable}
    import importlib.util

    if importlib.util.find_spec("torch") is not None:  # (not imported here: it would swell what children inherit)
        pythons["DataLoader"] = sys.executable
    else:
        print("DataLoader: left out (torch is not installed here)")
    if PEERS_PYTHON.exists():
        pythons["pescador 3.0"] = PEERS_PYTHON
    else:
        print(f"pescador 3.0: left out ({PEERS_PYTHON} is missing: run `make bench-peers`)")
    header = ["workload", "path", "items/s", "MB/s", "consumer CPU us/item", "consumer RSS MB",
              "workers RSS MB", "first item ms", "items/s vs DataLoader"]
    rows = []
    for workload in [w for w in args.workloads if w in WORKLOADS]:
        figures = {}
        for path, python in pythons.items():
            runs = [run_one(path, workload, python) for _ in range(args.repeat)]
            good = [r for r in runs if "error" in r or r["items"] == WORKLOADS[workload][0]]
            if any("error" in r for r in runs) or not good:
                figures[path] = {"error": next((r["error"] for r in runs if "error" in r), "wrong item count")}
                continue
            figures[path] = {key: statistics.median(r[key] for r in runs) for key in header[2:-1]}
        base = figures.get("DataLoader", {}).get("items/s")
        for path, f in figures.items():
            if "error" in f:
                rows.append([workload, path, "failed: " + f["error"][:60]] + [""] * (len(header) - 3))
                continue
            ratio = f"{f['items/s'] / base:.2f}" if base else "-"
            rows.append([workload, path] + [f[key] for key in header[2:-1]] + [ratio])
    if rows:
        _table(f"median of {args.repeat} runs, each in a fresh process; {os.cpu_count()} cores", header, rows)
    rows = []
    for workload in [w for w in args.workloads if w in IN_PROCESS]:
        unit = "batch" if IN_PROCESS[workload][1] else "item"
        for path, python in pythons.items():
            runs = [run_one(path, workload, python, "in-process") for _ in range(args.repeat)]
            failed = next((r["error"] for r in runs if "error" in r), None)
            if failed:
                rows.append([workload, path, "failed: " + failed[:60], "", "", ""])
                continue
            took = statistics.median(r["time"] for r in runs)
            limit = statistics.median(r["limit"] for r in runs)
            scale = "us" if unit == "batch" else "ns"
            rows.append([workload, path, f"{_cell(took)} {scale}/{unit}", f"{_cell(limit)} {scale}/{unit}",
                         f"{limit / took:.2f}", GOALS[workload] if path == "ours" else ""])
    if rows:
        _table(f"in one process, through the 1.0 / 3.x calls; medians of {args.repeat} processes; load average "
               f"{os.getloadavg()[0]:.1f}",
               ["workload", "path", "time", "limit (hand-written, same process)", "ratio to the limit", "goal"], rows)


def _cell(value):
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _table(title, header, rows):
    """A Markdown table (it goes into README.md as it is)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(c) for c in row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
