"""Entry point: ``python -m benchmarks NAME [args]`` or ``python -m benchmarks all``.

Each workload lives in ``benchmarks/bench_NAME.py`` and exposes
``main(argv)``; it prints its figures and the ratio to a baseline measured
in the same run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("available:", ", ".join(names + ["all"]))
        return 0 if argv else 2
    chosen = names if argv[0] == "all" else [argv[0]]
    for name in chosen:
        if name not in names:
            print(f"unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
            return 2
        module = importlib.import_module(f"benchmarks.bench_{name}")
        if argv[1:2] != ["produce"]:  # (a benchmark's own helper process prints nothing)
            print(f"=== {name}: {(module.__doc__ or '').strip().splitlines()[0]}", flush=True)
        module.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
