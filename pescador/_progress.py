"""A progress display for long runs: :func:`progress` (tqdm where installed, one line of text otherwise)."""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from .core import Stream
from .exceptions import PescadorError
from .observe import MuxStats

__all__ = ["progress"]

T = TypeVar("T")


def _rows(item: Any) -> int:
    """The rows of an item: the first dimension of its first array that has one (else one row)."""
    if type(item) is dict:
        for value in item.values():
            if type(value) is np.ndarray and value.ndim:
                return value.shape[0]
    return 1


def _total(source: Any) -> int | None:
    """The items of one run of a recipe, where known without running it (else None)."""
    if not (isinstance(source, Stream) or getattr(source, "__pescador_stream__", None) is not None):
        return None
    from .core import stream
    from .extras import _run_length

    try:
        length = _run_length(stream(source))
    except PescadorError:
        return None
    return None if length is None or length == math.inf else int(length)


def _sources(stats: MuxStats | None, top: int = 3) -> str:
    """``live 2/5, top: 0 41% 3 30% 1 12%``: the live activations and the streams that gave most."""
    if stats is None:
        return ""
    shares, live = stats.shares, stats.live
    if not len(shares):
        return "live 0"
    order = np.argsort(-shares, kind="stable")[:top]
    best = " ".join(f"{int(i)} {shares[i]:.0%}" for i in order if shares[i] > 0)
    return f"live {len(live)}/{len(shares)}" + (f", top: {best}" if best else "")


def _line(desc: str | None, total: int | None, items: int, rows: int, seconds: float, sources: str) -> str:
    """``desc: 40/100 items (40%), 81.0 items/s, 648 rows/s, 0.5 s | live 2/5, top: ...``"""
    head = f"{desc}: " if desc else ""
    count = f"{items:,}/{total:,} items ({items / total:.0%})" if total else f"{items:,} items"
    line = f"{head}{count}, {items / seconds if seconds > 0 else 0.0:,.1f} items/s"
    if rows != items:
        line += f", {rows / seconds if seconds > 0 else 0.0:,.0f} rows/s"
    line += f", {seconds:.1f} s"
    return line + (f" | {sources}" if sources else "")


class _Text:
    """The fallback display: one line of text, rewritten in place on a terminal, appended otherwise."""

    def __init__(self, total: int | None, desc: str | None, file: Any) -> None:
        self.total, self.desc = total, desc
        self.file = sys.stderr if file is None else file
        isatty = getattr(self.file, "isatty", None)
        self.tty = bool(isatty()) if isatty is not None else False
        self.width = 0

    def show(self, items: int, rows: int, seconds: float, sources: str, final: bool = False) -> None:
        line = _line(self.desc, self.total, items, rows, seconds, sources)
        if self.tty:
            pad = " " * max(0, self.width - len(line))
            self.width = len(line)
            self.file.write(f"\r{line}{pad}" + ("\n" if final else ""))
        else:
            self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        pass


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython is imported only where it already is)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class _Notebook:
    """The fallback display in a notebook: one line of output, updated in place (standard error would
    be a red box, a line appended at each update)."""

    def __init__(self, total: int | None, desc: str | None) -> None:
        from IPython.display import display

        self.total, self.desc = total, desc
        self.handle = display({"text/plain": _line(desc, total, 0, 0, 0.0, "")}, raw=True, display_id=True)

    def show(self, items: int, rows: int, seconds: float, sources: str, final: bool = False) -> None:
        self.handle.update({"text/plain": _line(self.desc, self.total, items, rows, seconds, sources)}, raw=True)

    def close(self) -> None:
        pass


class _Tqdm:
    """The tqdm display (tqdm.auto: a widget in notebooks, a bar in terminals)."""

    def __init__(self, tqdm: Any, total: int | None, desc: str | None, file: Any) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="item", file=file, dynamic_ncols=True)
        self.shown = 0

    def show(self, items: int, rows: int, seconds: float, sources: str, final: bool = False) -> None:
        extra = []
        if rows != items:
            extra.append(f"{rows / seconds if seconds > 0 else 0.0:,.0f} rows/s")
        if sources:
            extra.append(sources)
        if extra:
            self.bar.set_postfix_str(", ".join(extra), refresh=False)
        self.bar.update(items - self.shown)
        self.shown = items

    def close(self) -> None:
        self.bar.close()


def _display(use_tqdm: bool | None, total: int | None, desc: str | None, file: Any) -> Any:
    if use_tqdm is not False:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if use_tqdm:
                raise PescadorError("progress: use_tqdm=True, but tqdm cannot be imported; pip install tqdm, "
                                    "or leave use_tqdm=None for the text display") from None
        else:
            return _Tqdm(tqdm, total, desc, file)
    if file is None and _in_notebook():
        return _Notebook(total, desc)
    return _Text(total, desc, file)


def progress(
    source: Iterable[T],
    total: int | None = None,
    stats: MuxStats | None = None,
    *,
    desc: str | None = None,
    interval: float | None = None,
    file: Any = None,
    use_tqdm: bool | None = None,
) -> Iterator[T]:
    """Iterate over ``source`` and show how it goes: items, items/s, rows/s and a mux's live sources.

    Uses ``tqdm.auto`` where tqdm is installed (a widget in notebooks, a
    bar in terminals; it is imported here, never by ``import pescador``),
    and one line of text otherwise: rewritten in place on a terminal and
    in a Jupyter notebook (there a line of the cell's output, not of
    standard error), appended at a slower pace in a log file.  Items pass
    unchanged.

    Parameters
    ----------
    source : iterable
        A recipe (a :class:`~pescador.Stream`), or any iterable.
    total : int, optional
        The items expected; by default the items of one run of the recipe
        where that is known without running it (as
        :func:`pescador.epoch_length` knows lengths), else none.
    stats : pescador.MuxStats, optional
        A mux's observer (also one inside :func:`pescador.zmq_offload`): the
        display shows its live activations over the pool's streams and the
        streams that gave most items so far.
    desc : str, optional
        A label in front of the display.
    interval : float > 0, optional
        Seconds between updates; by default 0.5 (10 for the text display
        when its file is not a terminal).
    file : file-like, optional
        Where to write (default: standard error; in a Jupyter notebook,
        the cell's output).
    use_tqdm : None, True or False
        None: tqdm when it can be imported; True: tqdm or an error; False:
        the text display.

    Yields
    ------
    The items of ``source``.

    Examples
    --------
    >>> import io, numpy as np, pescador
    >>> out = io.StringIO()
    >>> batches = pescador.stream([{"X": np.zeros((8, 2))}] * 5)
    >>> for batch in pescador.progress(batches, file=out, use_tqdm=False):
    ...     pass
    >>> out.getvalue().splitlines()[-1].split(",")[0]
    '5/5 items (100%)'
    """
    if total is not None and (not isinstance(total, numbers.Integral) or isinstance(total, bool) or total < 0):
        raise PescadorError(f"progress: total must be None or an integer >= 0; got {total!r}")
    if stats is not None and not isinstance(stats, MuxStats):
        raise PescadorError(f"progress: stats must be a pescador.MuxStats; got a {type(stats).__name__}")
    if interval is not None and (not isinstance(interval, numbers.Real) or isinstance(interval, bool)
                                 or not 0 < interval < math.inf):
        raise PescadorError(f"progress: interval must be None or a number of seconds > 0; got {interval!r}")
    if use_tqdm not in (None, True, False):
        raise PescadorError(f"progress: use_tqdm must be None, True or False; got {use_tqdm!r}")
    return _progress(source, _total(source) if total is None else int(total), stats, desc, interval, file, use_tqdm)


def _progress(source: Any, total: int | None, stats: MuxStats | None, desc: str | None, interval: float | None,
              file: Any, use_tqdm: bool | None) -> Iterator:
    display = _display(use_tqdm, total, desc, file)
    if interval is None:
        interval = 10.0 if isinstance(display, _Text) and not display.tty else 0.5
    items = rows = 0
    t0 = time.perf_counter()
    next_at = t0 + interval
    it = iter(source)
    try:
        for item in it:
            items += 1
            rows += _rows(item)
            yield item
            now = time.perf_counter()
            if now >= next_at:
                next_at = now + interval
                display.show(items, rows, now - t0, _sources(stats))
        display.show(items, rows, time.perf_counter() - t0, _sources(stats), final=True)
    finally:
        display.close()
        close = getattr(it, "close", None)
        if close is not None:
            close()
