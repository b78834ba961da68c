"""What sending a recipe by cloudpickle costs at the start of a spawn run, against plain pickle.

Under ``spawn`` and ``forkserver``, ``zmq_offload`` turns the recipe into
bytes once per run (``pescador._pickling.dumps``: cloudpickle, protocol 5,
checking for what cannot travel) where it used to call ``pickle.dumps``.
Side by side in the same run (medians):

- serialising: ``pickle.dumps`` (the baseline) against ``_pickling.dumps``
  for a mux of 100 sources of a module, the same 100 sources defined in
  ``__main__`` (which pickle cannot send: by value), and one source with a
  100 MB array argument; and ``_pickling.check``, the pass ``ray_offload``
  makes before Ray serialises the recipe (it makes no bytes and copies no
  array);
- memory: the peak that tracemalloc sees while each serialises the 100 MB
  recipe (the array must be copied once into the bytes, no more);
- a whole run: seconds for a spawn run with one worker (start, the
  recipe's items, the end), the recipe sent by pickle (the old path,
  patched in) and by ``_pickling.dumps``.

Timings are interleaved (each first in turn), so a load that comes and goes
hits both alike.
"""

from __future__ import annotations

import argparse
import pickle
import tracemalloc
from unittest import mock

import numpy as np

import pescador
from pescador import _pickling

from ._util import medians_side_by_side, table


def rows(start, n, data=None):
    """A source of a module: n items of one row each."""
    for i in range(n):
        yield {"x": np.full(4, start + i, dtype=np.float32)}


_MAIN = """
import numpy as np
def rows(start, n, data=None):
    for i in range(n):
        yield {"x": np.full(4, start + i, dtype=np.float32)}
"""


def _main_rows():
    """The same source, defined in ``__main__`` (as in a notebook): cloudpickle sends it by value."""
    namespace = {"__name__": "__main__"}
    exec(_MAIN, namespace)
    return namespace["rows"]


def recipes() -> dict:
    pool = lambda fn: pescador.mux(k=10, lam=None, with_replacement=False)(  # noqa: E731
        [pescador.stream(fn, i * 10, 10) for i in range(100)])
    big = np.random.default_rng(0).random(100 * 2**20 // 8)  # 100 MB of float64
    return {
        "100 sources (a module's)": pool(rows),
        "100 sources (of __main__)": pool(_main_rows()),
        "1 source, 100 MB array": pescador.stream(rows, 0, 3, data=big),
    }


def _pickle(recipe):
    try:
        return pickle.dumps(recipe, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None


def _peak(fn) -> float:
    """MiB allocated at the peak while ``fn()`` runs (tracemalloc), beyond what was held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return (tracemalloc.get_traced_memory()[1] - before) / 2**20
    finally:
        tracemalloc.stop()


def _run(recipe, dumps) -> None:
    """A whole one-worker spawn run of ``recipe``, made bytes by ``dumps``."""
    with mock.patch.object(_pickling, "dumps", dumps):
        for _ in pescador.zmq_offload(start_method="spawn")(recipe):
            pass


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pickling")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    cases = recipes()
    new = lambda recipe: _pickling.dumps(recipe, "benchmark")  # noqa: E731

    out = []
    for name, recipe in cases.items():
        fns = [lambda: new(recipe), lambda: _pickling.check(recipe, "benchmark")]
        if _pickle(recipe) is not None:
            fns.append(lambda: _pickle(recipe))
        ours, check, *base = medians_side_by_side(fns, args.repeat)
        base = base[0] if base else None
        size = len(new(recipe))
        out.append([name, "cannot" if base is None else f"{base * 1e3:.2f}", f"{ours * 1e3:.2f}",
                    "-" if base is None else f"{ours / base:.2f}", f"{check * 1e3:.2f}", f"{size / 2**10:,.0f}"])
    table("serialising a recipe (ms, medians; check: ray_offload's pass, which makes no bytes)",
          ["recipe", "pickle.dumps", "_pickling.dumps", "ratio", "check", "KiB"], out)

    big = cases["1 source, 100 MB array"]
    base_peak = _peak(lambda: _pickle(big))
    ours_peak = _peak(lambda: new(big))
    table("peak memory while serialising the 100 MB recipe (MiB, tracemalloc)",
          ["pickle.dumps", "_pickling.dumps", "ratio"],
          [[f"{base_peak:.1f}", f"{ours_peak:.1f}", f"{ours_peak / base_peak:.2f}"]])

    old = lambda recipe, sending, otherwise="": pickle.dumps(recipe, protocol=pickle.HIGHEST_PROTOCOL)  # noqa: E731
    out = []
    for name in ("100 sources (a module's)", "1 source, 100 MB array"):
        recipe = cases[name]
        runs = [lambda: _run(recipe, old), lambda: _run(recipe, _pickling.dumps)]
        base, ours = medians_side_by_side(runs, args.repeat)
        out.append([name, f"{base:.3f}", f"{ours:.3f}", f"{ours / base:.2f}"])
    table("a whole run, spawn, 1 worker (s, medians)", ["recipe", "pickle", "_pickling", "ratio"], out)
