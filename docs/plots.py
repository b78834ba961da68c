"""Figures drawn at build time: the multiplexing page's, from real runs of ``pescador.mux``, and the
parallel page's picture of which stages run in which process.

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
# The figures are at most 5.2 inches (520 CSS pixels) wide, with 11-point
# text: on a 390 px phone they shrink to about 0.7 of that, and the text
# stays about 10 px high (an 8-inch figure's would be 5 px).
WIDTH = 5.2
FONT = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "xtick.labelsize": 10,
        "ytick.labelsize": 10, "legend.fontsize": 10}


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

    plt.rcParams.update(FONT)
    return plt


def plot_raster(path, n_streams=5, k=2, lam=32, n_items=2000):
    """Which stream gave items when: one bar per activation (``stats.plot("sources")``)."""
    plt = _pyplot()
    stats = observed_run(n_streams, k, lam, n_items)
    fig, ax = plt.subplots(figsize=(WIDTH, 3.0), dpi=CSS_DPI)
    stats.plot("sources", ax=ax)
    ax.set_xlim(0, n_items)
    ax.set_title(f"mux(k={k}, lam={lam}) over {n_streams} endless streams:\nthe activations")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_shares(path, weights=(0.5, 0.2, 0.15, 0.1, 0.05), k=2, lam=16, n_items=100_000):
    """Observed share of items per stream, beside the weights (``stats.plot("shares")``)."""
    plt = _pyplot()
    stats = observed_run(len(weights), k, lam, n_items, weights=list(weights))
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4), dpi=CSS_DPI)
    stats.plot("shares", ax=ax)
    ax.set_title(f"mux(k={k}, lam={lam}, weights=...):\n{n_items:,} items")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_processes(path, workers=2):
    """Which stages of ``pipe(pool, mux, buffer, zmq_offload(workers=2))`` run in which process.

    Stacked from top to bottom (the workers side by side above your process), so that the figure
    stays narrow enough to read on a phone.
    """
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(WIDTH, 5.6), dpi=CSS_DPI)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 11)
    ax.axis("off")

    def box(x, y, w, h, text, face, edge="#444444", weight="normal", size=11):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.08", facecolor=face, edgecolor=edge))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight)

    def arrow(x0, y0, x1, y1, label=None):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, color="#333333",
                                     zorder=3))
        if label:
            ax.text((x0 + x1) / 2 + 0.15, (y0 + y1) / 2, label, fontsize=10, va="center", color="#333333")

    width = 4.2
    for w in range(workers):
        x = 0.3 + w * (width + 0.9)
        ax.add_patch(FancyBboxPatch((x, 4.9), width, 5.9, boxstyle="round,pad=0.1", facecolor="#eef4fb",
                                    edgecolor="#4a78a8"))
        ax.text(x + width / 2, 10.45, f"worker process {w}", ha="center", fontsize=11, weight="bold")
        box(x + 0.3, 8.8, width - 0.6, 1.0, "sources: its share\nof the files", "white")
        box(x + 0.3, 7.35, width - 0.6, 0.8, "mux", "white")
        box(x + 0.3, 5.9, width - 0.6, 0.8, "buffer (batches)", "white")
        arrow(x + width / 2, 8.75, x + width / 2, 8.2)
        arrow(x + width / 2, 7.3, x + width / 2, 6.75)
        arrow(x + width / 2, 5.85, 5.0 + (w - 0.5) * 1.6, 4.2)
    ax.text(5.0, 5.2, "ZeroMQ", ha="center", fontsize=10, color="#333333")
    ax.add_patch(FancyBboxPatch((0.2, 0.2), 9.6, 3.9, boxstyle="round,pad=0.1", facecolor="#fbf3e6",
                                edgecolor="#b07a2a"))
    ax.text(5.0, 3.7, "your process", ha="center", fontsize=11, weight="bold")
    box(1.0, 2.2, 8.0, 1.0, "zmq_offload: arrays built over the\nmessages, workers taken in turn", "white")
    box(1.0, 0.55, 8.0, 0.9, "your training loop", "white")
    arrow(5.0, 2.15, 5.0, 1.5)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def make_all(out=OUT):
    """Draw every figure into ``out``; return the paths written."""
    os.makedirs(out, exist_ok=True)
    names = ["mux_sources.png", "mux_shares.png", "processes.png"]
    paths = [os.path.join(out, name) for name in names]
    plot_raster(paths[0])
    plot_shares(paths[1])
    plot_processes(paths[2])
    return paths


if __name__ == "__main__":
    for written in make_all():
        print(written)
