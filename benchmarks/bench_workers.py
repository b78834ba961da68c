"""zmq_offload worker lifecycle: start, early stop, and forking beside a thread that draws from np.random.

Three measurements, each per start method and side by side with fork (the
baseline of the same run; medians of several runs):

- start: seconds from ``iter()`` to the first item with 8 workers (process
  start, imports, unpickling the recipe, connecting).
- early stop: seconds from ``break`` (closing the run) to the end of the run,
  with 8 workers, right after the first item (so some workers are still
  starting): ``take(1)`` of an endless stream.
- fork beside a drawing thread: ``--hang-runs`` consumers (one process each,
  so that a hung one can be counted and killed), each with a thread calling
  ``np.random.random(200_000)`` in a loop while ``take(3)`` of a 4-worker
  ``zmq_offload`` runs under fork; a run that gives no result within 20 s is
  counted as hung.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

import pescador

from ._util import table


def endless():
    i = 0
    while True:
        yield {"i": np.array([i])}
        i += 1


def drawing():
    while True:
        yield {"x": np.random.random(3)}


def start_and_stop(method: str, workers: int) -> tuple:
    """One run: (seconds to the first item, seconds to stop the run after it)."""
    recipe = pescador.zmq_offload(workers=workers, start_method=method)(pescador.stream(endless))
    t0 = time.perf_counter()
    it = iter(recipe)
    next(it)
    t1 = time.perf_counter()
    it.close()
    return t1 - t0, time.perf_counter() - t1


ONE_RUN = """
import threading, numpy as np, pescador
from benchmarks.bench_workers import drawing
stop = False
def churn():
    while not stop:
        np.random.random(200_000)
threading.Thread(target=churn, daemon=True).start()
assert len(list(pescador.take(3)(pescador.zmq_offload(workers=4, start_method="fork")(pescador.stream(drawing))))) == 3
stop = True
print("ok")
"""


def fork_beside_a_thread(runs: int, limit: float = 20.0) -> tuple:
    """(hung runs, median seconds of the runs that finished)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    hung, seconds = 0, []
    for _ in range(runs):
        t0 = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", ONE_RUN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   start_new_session=True, env=env, text=True)
        try:
            out, _ = process.communicate(timeout=limit)
            if "ok" in out:
                seconds.append(time.perf_counter() - t0)
            else:
                hung += 1
        except subprocess.TimeoutExpired:
            hung += 1
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the consumer's session: its workers too
            except ProcessLookupError:
                pass
            process.wait()
    return hung, statistics.median(seconds) if seconds else float("nan")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks workers")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--hang-runs", type=int, default=100)
    parser.add_argument("--methods", default="fork,forkserver,spawn")
    args = parser.parse_args(argv)
    rows = []
    base = None
    for method in args.methods.split(","):
        start_and_stop(method, args.workers)  # warm up (forkserver: starts the server)
        times = [start_and_stop(method, args.workers) for _ in range(args.repeat)]
        start = statistics.median(t[0] for t in times)
        stop = statistics.median(t[1] for t in times)
        base = base or (start, stop)
        rows.append([method, start * 1e3, start / base[0], stop * 1e3, stop / base[1]])
    table(
        f"{args.workers} workers, median of {args.repeat} runs; ratio: against the first row",
        ["start method", "start to first item (ms)", "ratio", "early stop (ms)", "ratio"],
        rows,
    )
    if args.hang_runs:
        hung, seconds = fork_beside_a_thread(args.hang_runs)
        table(
            "fork while a consumer thread draws from np.random (take(3), 4 workers, one consumer process per run)",
            ["runs", "hung (no result in 20 s)", "median seconds of the others (process start included)"],
            [[args.hang_runs, hung, seconds]],
        )
