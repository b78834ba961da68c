"""Figures for the multiplexing page, drawn from real runs of ``pescador.mux``.

``conf.py`` calls :func:`make_all` when Sphinx starts a build; running this
file (``python docs/plots.py``) does the same.  The PNG files go to
``docs/_static/generated/``, which is created when missing.
"""

from __future__ import annotations

import os

import numpy as np
from toolz import pipe

import pescador

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "_static", "generated")
# Drawn at 100 CSS pixels per inch of figure, saved at twice that, so the
# figures are sharp on high-density (2x) screens; conf.py shows each at half
# its pixel width, the size it had at 100 dpi.
CSS_DPI = 100
DPI = 2 * CSS_DPI


def constant(index):
    """An endless stream whose items say which stream they came from."""
    item = {"stream": np.array([index])}
    while True:
        yield item


def observed_run(n_streams, k, lam, n_items, weights=None, random_state=0):
    """Run ``mux`` for ``n_items`` items with a ``MuxStats``; return the observer.

    The figures are the observer's own pictures (``MuxStats.plot``), as a
    reader would draw them from a run of theirs.
    """
    stats = pescador.MuxStats(history=n_items)
    pool = [pescador.stream(constant, i) for i in range(n_streams)]
    mixed = pipe(
        pool,
        pescador.mux(k=k, lam=lam, weights=weights, random_state=random_state, stats=stats),
        pescador.take(n_items),
    )
    for _ in mixed:
        pass
    return stats


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_raster(path, n_streams=5, k=2, lam=32, n_items=2000):
    """Which stream gave items when: one bar per activation (``stats.plot("sources")``)."""
    plt = _pyplot()
    stats = observed_run(n_streams, k, lam, n_items)
    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=CSS_DPI)
    stats.plot("sources", ax=ax)
    ax.set_xlim(0, n_items)
    ax.set_title(f"mux(k={k}, lam={lam}) over {n_streams} endless streams: the activations")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_shares(path, weights=(0.5, 0.2, 0.15, 0.1, 0.05), k=2, lam=16, n_items=100_000):
    """Observed share of items per stream, beside the weights (``stats.plot("shares")``)."""
    plt = _pyplot()
    stats = observed_run(len(weights), k, lam, n_items, weights=list(weights))
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=CSS_DPI)
    stats.plot("shares", ax=ax)
    ax.set_title(f"mux(k={k}, lam={lam}, weights=...): {n_items:,} items")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def make_all(out=OUT):
    """Draw every figure into ``out``; return the paths written."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "mux_sources.png"), os.path.join(out, "mux_shares.png")]
    plot_raster(paths[0])
    plot_shares(paths[1])
    return paths


if __name__ == "__main__":
    for written in make_all():
        print(written)
