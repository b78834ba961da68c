"""pescador: stream numerical data (dicts of numpy arrays) into learning loops.

Two ways to write the same pipeline:

- the pipe style: curried, data-last combinators over picklable recipes
  (:func:`stream`, :func:`take`, :func:`cycle`, :func:`tuples`,
  :func:`keras_tuples`, ``buffer``, ``mux``, ``zmq_offload``), composed with
  :func:`toolz.pipe`;
- the 1.0 class style: :class:`Streamer`, :class:`BufferedStreamer`,
  :class:`Mux`, :class:`ZMQStreamer`, thin facades over the same recipes.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .core import Stream, Transform, cycle, keras_tuples, stream, take, tuples
from .exceptions import DataError, PescadorError, WorkerError
from . import stage
from .stage import Stage
from .streamer import BufferedStreamer, ChainMux, Mux, RoundRobinMux, ShuffledMux, StochasticMux, Streamer, ZMQStreamer
from .workers import WorkerInfo, worker_info

from . import maps
from .maps import buffer_stream
from .buffered import buffer
from . import mux  # the module, callable as the pipe-style mux(k=..., lam=...)
from .zmq_stream import zmq_offload
from .observe import Meter, MuxStats, measure
from .extras import cache, epoch_length, epochs, streamable
from .resume import resumable

try:
    __version__ = _version("pescador")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "PescadorError",
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
    "Streamer",
    "BufferedStreamer",
    "Mux",
    "ZMQStreamer",
    "WorkerInfo",
    "buffer",
    "maps",
    "buffer_stream",
    "mux",
    "StochasticMux",
    "ShuffledMux",
    "RoundRobinMux",
    "ChainMux",
    "zmq_offload",
    "MuxStats",
    "Meter",
    "measure",
    "streamable",
    "cache",
    "epochs",
    "epoch_length",
    "resumable",
    "worker_info",
]
