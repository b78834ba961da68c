# What type checkers read for two public names whose run-time form they cannot see through
# (never imported at run time; pescador/__init__.py imports it under TYPE_CHECKING only):
#
# - ``pescador.buffer``: overloaded here (curried form and data form), since its module keeps
#   one run-time signature;
# - ``pescador.mux``: a module that is also callable as the function mux (pescador.mux sets
#   the module's class at run time), described here as a Protocol: callable like
#   ``pescador.mux.mux``, with the kinds and the class facades as attributes.
#
# Keep these in step with pescador/buffered.py and pescador/mux.py (tests/test_typing.py checks that
# each restated parameter has the run-time name, kind and default, and
# checks a typed pipeline through them with mypy).

from collections.abc import Callable
from typing import Any, Protocol, overload

import numpy as np

from . import streamer
from .core import PoolTransform, Source, Stream, Transform

@overload
def buffer(n: int, *, strict: bool = True) -> Transform[dict[str, Any], dict[str, np.ndarray]]: ...
@overload
def buffer(n: int, source: Source[dict[str, Any]], *, strict: bool = True) -> Stream[dict[str, np.ndarray]]: ...

class MuxModule(Protocol):
    """``pescador.mux``: the module, called as :func:`pescador.mux.mux`."""

    def __call__(
        self,
        k: int,
        lam: float | None = 256.0,
        *,
        weights: Any = None,
        with_replacement: bool = True,
        prune_empty: bool = True,
        revive: bool = False,
        random_state: Any = None,
        dist: str = "poisson",
        stats: Any = None,
    ) -> PoolTransform: ...
    @property
    def mux(self) -> Callable[..., PoolTransform]: ...
    @property
    def stochastic_mux(self) -> Callable[..., PoolTransform]: ...
    @property
    def shuffled_mux(self) -> Callable[..., PoolTransform]: ...
    @property
    def round_robin_mux(self) -> Callable[..., PoolTransform]: ...
    @property
    def chain_mux(self) -> Callable[..., PoolTransform]: ...
    @property
    def Mux(self) -> type[streamer.Mux]: ...
    @property
    def StochasticMux(self) -> type[streamer.StochasticMux]: ...
    @property
    def ShuffledMux(self) -> type[streamer.ShuffledMux]: ...
    @property
    def RoundRobinMux(self) -> type[streamer.RoundRobinMux]: ...
    @property
    def ChainMux(self) -> type[streamer.ChainMux]: ...

mux: MuxModule
