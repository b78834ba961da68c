"""The figures of :meth:`pescador.MuxStats.plot` and :meth:`pescador.Meter.plot` (imported by them: matplotlib
is optional, and ``import pescador`` never imports it).

A figure made with pyplot is shown by Jupyter's inline backend when the cell
ends; returned as the cell's value, it was shown a second time.  This
figure, when IPython displays it, leaves pyplot first (in the inline
backend), so that it is shown once: as the cell's value, or when the cell
ends (``fig = stats.plot()``, or ``plt.show()``), not both.  Elsewhere it is
matplotlib's Figure: ``plt.show()`` in a script, ``savefig``, a GUI window.
"""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.figure
import matplotlib.pyplot as plt


class Figure(matplotlib.figure.Figure):
    """A pyplot figure that a notebook shows once."""

    def _ipython_display_(self) -> None:
        from IPython import get_ipython
        from IPython.display import display

        if "inline" in matplotlib.get_backend():
            plt.close(self)  # (shown now: not again when the cell ends)
        hook = get_ipython().display_formatter.ipython_display_formatter
        hook.enabled = False  # (this very figure, shown as any figure is)
        try:
            display(self)
        finally:
            hook.enabled = True


def subplots(*args: Any, **kwargs: Any) -> tuple:
    """``plt.subplots``, making a :class:`Figure`."""
    return plt.subplots(*args, FigureClass=Figure, **kwargs)
