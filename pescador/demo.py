"""The pescador demo: ``python -m pescador demo`` (or ``make demo``).

The spec's "Basic usage" story, end to end, on data made here: a synthetic
labelled data set, a pool of noisy streams over it (one per noise level),
multiplexed with a bounded active set, re-batched into minibatches, produced
in worker processes, and a softmax classifier trained with numpy on the
minibatches.  It prints a progress line (items/s) while it trains and the
held-out accuracy at the end.  The words follow :class:`pescador.Meter`:
*items* are what the pipeline yields (here minibatches), *rows* their rows.
A :class:`pescador.MuxStats` on the mux, which runs in the workers, shows at
the end how many items each noise level gave.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from toolz import pipe

import pescador
from pescador import buffer, mux, stream, take, zmq_offload


def make_dataset(n: int = 3000, d: int = 8, classes: int = 4, seed: int = 0, spread: float = 1.3):
    """Gaussian blobs: ``n`` points in ``d`` dimensions around ``classes`` centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(classes, d))
    Y = rng.integers(0, classes, size=n)
    X = centres[Y] + rng.normal(size=(n, d))
    return X.astype(np.float32), Y


def noisy_samples(X, Y, batch_size=16, sigma=1.0):
    """Generate an infinite stream of noisy samples from a labelled data set.

    This is the spec's generator: each item is a dict with ``X`` of shape
    ``(batch_size, d)`` and ``Y`` of shape ``(batch_size,)``.
    """
    n, d = X.shape
    while True:
        i = np.random.randint(0, n, size=batch_size)
        noise = sigma * np.random.randn(batch_size, d)
        yield dict(X=(X[i] + noise).astype(np.float32), Y=Y[i])


class SoftmaxRegression:
    """A linear classifier trained by minibatch gradient descent, in numpy."""

    def __init__(self, d: int, classes: int, lr: float = 0.05):
        self.W = np.zeros((d, classes), dtype=np.float32)
        self.b = np.zeros(classes, dtype=np.float32)
        self.lr = lr

    def _probabilities(self, X):
        z = X @ self.W + self.b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def partial_fit(self, X, Y):
        p = self._probabilities(X)
        p[np.arange(len(Y)), Y] -= 1.0
        self.W -= self.lr * (X.T @ p) / len(Y)
        self.b -= self.lr * p.mean(axis=0)

    def predict(self, X):
        return np.argmax(X @ self.W + self.b, axis=1)


def build_pipeline(X, Y, batches: int, minibatch: int, workers: int, stats=None, meter=None):
    """The training pipeline, in the pipe style (observed by ``stats`` and ``meter`` when given)."""
    sigmas = [0.0, 0.5, 1.0, 2.0, 4.0]
    return pipe(
        [stream(noisy_samples, X, Y, sigma=s) for s in sigmas],
        mux(k=3, lam=64, stats=stats),  # 3 noise levels active at once, ~64 items each
        buffer(minibatch),  # re-batch 16-row items into minibatches
        zmq_offload(workers=workers),  # produce in other processes (the workers report to stats)
        take(batches),
        pescador.measure(meter if meter is not None else pescador.Meter()),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, for ``python -m pescador demo`` and ``python -m pescador.demo``."""
    parser.add_argument("--batches", metavar="N", type=int, default=3000, help="minibatches to train on (default: 3000)")
    parser.add_argument("--minibatch", metavar="ROWS", type=int, default=128, help="rows per minibatch (default: 128)")
    parser.add_argument("--workers", metavar="N", type=int, default=2, help="producer processes (default: 2)")


def main(argv: list[str] | None = None) -> int:
    """``python -m pescador.demo [--batches N] [--minibatch ROWS] [--workers N]``."""
    parser = argparse.ArgumentParser(prog="python -m pescador.demo", description="The pescador demo (also: python -m pescador demo).")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Train on the demo pipeline with the options in ``args``; print progress and the held-out accuracy."""
    X, Y = make_dataset()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(X))
    train, test = order[: int(0.9 * len(X))], order[int(0.9 * len(X)) :]
    classes = int(Y.max()) + 1

    stats, meter = pescador.MuxStats(), pescador.Meter()
    pipeline = build_pipeline(X[train], Y[train], args.batches, args.minibatch, args.workers, stats, meter)
    print(f"pescador {pescador.__version__} demo: {len(train)} training points, {len(test)} held out")
    print(f"pipeline: {pipeline!r}")

    model = SoftmaxRegression(X.shape[1], classes)
    last = time.perf_counter()
    for i, batch in enumerate(pipeline, 1):
        model.partial_fit(batch["X"], batch["Y"])
        now = time.perf_counter()
        if now - last >= 0.5 or i == args.batches:
            last = now
            accuracy = float(np.mean(model.predict(X[test]) == Y[test]))
            line = (f"batch {i:5d}/{args.batches}  {meter.items_per_second:8,.0f} items/s "
                    f"({meter.rows_per_second:10,.0f} rows/s)  held-out accuracy {accuracy:.3f}")
            sys.stdout.write(f"\r{line}" if sys.stdout.isatty() else f"{line}\n")
            sys.stdout.flush()
    accuracy = float(np.mean(model.predict(X[test]) == Y[test]))
    if sys.stdout.isatty():
        print()
    print(f"trained on {meter}")
    print(f"items of the mux (in the workers, some still in flight when the run stopped) per noise level:\n{stats}")
    print(f"held-out accuracy: {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
