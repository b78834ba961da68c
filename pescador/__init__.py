"""pescador: stream numerical data (dicts of numpy arrays) into learning loops.

Two ways to write the same pipeline:

- the pipe style: curried, data-last combinators over picklable recipes
  (:func:`stream`, :func:`take`, :func:`cycle`, :func:`tuples`,
  :func:`keras_tuples`, ``buffer``, ``mux``, ``zmq_offload``), composed with
  :func:`toolz.pipe`;
- the 1.0 class style: :class:`Streamer`, :class:`BufferedStreamer`,
  :class:`Mux`, :class:`ZMQStreamer`, thin facades over the same recipes.
"""

# The one place the version is written (pyproject.toml reads it from here,
# see [tool.hatch.version]); docs/changes.rst says why it is 4.0.0.
__version__ = "4.0.0"

from .core import Stream, Transform, cycle, keras_tuples, stream, take, tuples
from .exceptions import DataError, ParameterError, ParameterTypeError, PescadorError, WorkerError
from . import stage
from .stage import Stage
from .streamer import BufferedStreamer, ChainMux, Mux, RoundRobinMux, ShuffledMux, StochasticMux, Streamer, ZMQStreamer
from .workers import WorkerInfo, worker_info

from . import maps
from .maps import buffer_stream
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # their typed forms: an overloaded buffer, and mux as a callable module (see _typing.pyi)
    from ._typing import buffer as buffer, mux as mux
else:
    from .buffered import buffer
    from . import mux  # the module, callable as the pipe-style mux(k=..., lam=...)
del TYPE_CHECKING
from .zmq_stream import zmq_offload
from .combinators import filter, map, shuffle, unbatch  # (map and filter: public, but not in __all__; see below)
from .padded import bucket, padded_batch
from .prefetched import prefetch
from .ray_stream import FailoverWarning, ray_offload  # (imports Ray only when a run starts)
from .observe import Meter, MuxStats, measure
from ._progress import progress
from .extras import cache, epoch_length, epochs, streamable
from .resume import ResumeWarning, resumable

__all__ = [
    "PescadorError",
    "ParameterError",
    "ParameterTypeError",
    "DataError",
    "WorkerError",
    "Stream",
    "Transform",
    "Stage",
    "stage",
    "stream",
    "take",
    "cycle",
    "tuples",
    "keras_tuples",
    "shuffle",
    "unbatch",
    "Streamer",
    "BufferedStreamer",
    "Mux",
    "ZMQStreamer",
    "WorkerInfo",
    "buffer",
    "padded_batch",
    "bucket",
    "maps",
    "buffer_stream",
    "mux",
    "StochasticMux",
    "ShuffledMux",
    "RoundRobinMux",
    "ChainMux",
    "zmq_offload",
    "prefetch",
    "ray_offload",
    "FailoverWarning",
    "ResumeWarning",
    "MuxStats",
    "Meter",
    "measure",
    "progress",
    "streamable",
    "cache",
    "epochs",
    "epoch_length",
    "resumable",
    "worker_info",
]


#: Public names left out of ``__all__``: ``from pescador import *`` must not replace the builtins of the
#: same names in a user's module (where ``map(f, xs)`` would then make a recipe, silently).
_BESIDE_ALL = ("map", "filter")


def __getattr__(name: str) -> object:
    """``pescador.torch`` (or ``keras``, ``demo``) before it is imported: an AttributeError saying to
    import it.  ``import pescador`` does not load these submodules (they need a framework, or are
    programs); ``import pescador.torch`` does, and then ``pescador.torch`` is there."""
    import importlib.util
    import sys

    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"pescador.{name} is a submodule that import pescador does not load; "
                             f"import it first: import pescador.{name}", name=name, obj=sys.modules[__name__])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}", name=name, obj=sys.modules[__name__])


def __dir__() -> list[str]:
    """The public names (``__all__`` and ``_BESIDE_ALL``) and the module's own dunders: the
    submodules that ``import pescador`` loads on the way (``core``, ``wire``, ...) stay importable by
    their full names but are not listed."""
    dunders = {name for name in globals() if name.startswith("__") and name.endswith("__")}
    return sorted(set(__all__) | set(_BESIDE_ALL) | dunders)
