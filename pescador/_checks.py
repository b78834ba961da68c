"""Checks of the parameters the combinators share (mux and its kinds, epochs, cache, ...): each
returns the value as the stage keeps it, or raises a PescadorError saying what was expected: a
ParameterTypeError (also a TypeError) for a value of the wrong type, a ParameterError (also a
ValueError) for a value of the right type that is out of range.  And :func:`_spelled`: a call
whose arguments do not fit (a missing argument, a parameter of another release) says how it reads."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from .exceptions import ParameterError, ParameterTypeError

def _check_weights(weights: Any, size: int | None, where: str, name: str = "weights") -> tuple | None:
    if weights is None:
        return None
    try:
        values = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise ParameterTypeError(f"{where}: {name} must be a sequence of numbers; got {weights!r}") from None
    if values.ndim != 1:
        raise (ParameterTypeError if values.ndim == 0 else ParameterError)(f"{where}: {name} must be one number per stream; got shape {values.shape}")
    if size is not None and len(values) != size:
        raise ParameterError(f"{where}: {name} has {len(values)} entries for a pool of {size} streams")
    if not np.all(np.isfinite(values)):
        raise ParameterError(f"{where}: {name} must be finite numbers; got {values.tolist()}")
    if np.any(values < 0):
        raise ParameterError(f"{where}: {name} must not be negative; got {values.tolist()}")
    if not np.any(values > 0):
        raise ParameterError(f"{where}: {name} are all zero; at least one stream needs a positive weight")
    return tuple(float(v) for v in values)


def _check_k(k: Any, where: str, name: str = "k") -> int:
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        kind = ParameterError if isinstance(k, numbers.Integral) and not isinstance(k, bool) else ParameterTypeError
        raise kind(f"{where}: {name} (streams active at once) must be an integer >= 1; got {k!r}")
    return int(k)


def _check_lam(lam: Any, where: str, name: str = "lam") -> float | None:
    if lam is None:
        return None
    if not isinstance(lam, numbers.Real) or isinstance(lam, bool):
        raise ParameterTypeError(f"{where}: {name} must be a positive number or None; got {lam!r}")
    if not 0 < float(lam) < math.inf:
        raise ParameterError(f"{where}: {name} must be a positive number or None; got {lam!r}")
    return float(lam)


def _check_choice(value: Any, valid: Sequence[str], where: str, name: str = "mode") -> str:
    if value not in valid:
        raise (ParameterError if isinstance(value, str) else ParameterTypeError)(f"{where}: {name} {value!r} does not exist; valid: {', '.join(map(repr, valid))}")
    return value


def _check_bool(value: Any, where: str, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{where}: {name} must be True or False; got {value!r}")
    return bool(value)


def check_count(value: Any, where: str, name: str, *, minimum: int = 0, allow_none: bool = False) -> int | None:
    """Return ``value`` as an int >= ``minimum``, or raise a clear PescadorError.

    Integral floats (``1e3``) are accepted, as pescador 1.0 accepted them.  A
    value that is not a number (or is a bool) raises a ParameterTypeError; a
    number that is not integral, or is below ``minimum``, a ParameterError.
    """
    if value is None and allow_none:
        return None
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = number and (isinstance(value, numbers.Integral) or float(value).is_integer())
    if not ok or int(value) < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise (ParameterError if number else ParameterTypeError)(f"{where}: {name} must be {expected}; got {value!r}")
    return int(value)


MOST_HELD = 2**31 - 1  # the most items (or rows) a stage may be asked to hold at once


def check_size(value: Any, where: str, name: str, *, minimum: int = 1, maximum: int = MOST_HELD) -> int:
    """Return ``value``, an integer (a Python or numpy int, not a bool or a float) from ``minimum`` to
    ``maximum``, as an int; else raise a ParameterTypeError (not an integer) or a ParameterError (out of
    range) saying what was expected.  For the parameters of stages that have no 1.0 form to stay
    compatible with (a float such as ``2.0`` is refused, not read as 2)."""
    integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integer or not minimum <= value <= maximum:
        raise (ParameterError if integer else ParameterTypeError)(
            f"{where}: {name} must be an integer from {minimum} to {maximum:,}; got {value!r}")
    return int(value)


_OBJECTS = (np.random.Generator, np.random.RandomState)


def _check_random_state(random_state: Any, where: str) -> Any:
    ok = random_state is None or isinstance(random_state, _OBJECTS)
    ok = ok or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool) and random_state >= 0)
    if not ok:
        negative = isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)
        raise (ParameterError if negative else ParameterTypeError)(
            f"{where}: random_state must be None, a non-negative int, a numpy Generator or a "
            f"RandomState; got {random_state!r}"
        )
    return int(random_state) if isinstance(random_state, numbers.Integral) else random_state


# One parameter as pescador's releases and styles spell it: each name, and a call that takes it.
_SPELLINGS = (
    {"k": "Mux(seed_pool, k, ...) and pescador.mux(k, ...)", "n_active": "StochasticMux(streamers, n_active, ...)"},
    {"lam": "Mux(seed_pool, k, lam, ...) and pescador.mux(k, lam, ...)",
     "rate": "StochasticMux(streamers, n_active, rate, ...)"},
    {"pool_weights": "Mux(..., pool_weights=...)", "weights": "StochasticMux, ShuffledMux and pescador.mux"},
    {"prune_empty_seeds": "Mux(..., prune_empty_seeds=...)", "prune_empty_streams": "StochasticMux",
     "prune_empty": "pescador.mux"},
    {"seed_pool": "Mux(seed_pool, ...)", "streamers": "the 3.x classes (StochasticMux(streamers, ...), ...)"},
)
_MEANINGS = {"k": "the number of streams active at once", "n_active": "the number of streams active at once",
             "rate": "the mean number of items of an activation, or None"}


def _misspelled(where: str, signature: inspect.Signature, args: tuple, kwargs: dict, example: str) -> Exception:
    """The error for ``where(*args, **kwargs)``, whose arguments do not fit ``signature``."""
    params = signature.parameters
    plain = signature.replace(parameters=[p.replace(annotation=p.empty) for p in params.values()],
                              return_annotation=signature.empty)
    what = ""
    for name in kwargs:
        if name not in params or params[name].kind is inspect.Parameter.POSITIONAL_ONLY:
            spellings = next((group for group in _SPELLINGS if name in group), {})
            here = next((other for other in spellings if other in params), None)
            what = f"no parameter {name!r}"
            if here is not None:
                what += f" (as in {spellings[name]}); {where} calls it {here}: write {here}=... instead"
            break
    if not what:
        try:
            bound = signature.bind_partial(*args, **kwargs).arguments
        except TypeError as exc:
            what = str(exc)
        else:
            missing = next((p.name for p in params.values() if p.name not in bound and p.default is p.empty
                            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)), None)
            meaning = f" ({_MEANINGS[missing]})" if missing in _MEANINGS else ""
            what = f"missing the argument {missing!r}{meaning}"
    example = f"; for example {example}" if example else ""
    return ParameterTypeError(f"{where}: {what}. Call it as {where}{plain}{example}")


_F = TypeVar("_F", bound=Callable[..., Any])


def _spelled(fn: _F, where: str | None = None, example: str = "") -> _F:
    """``fn``, whose calls with arguments that do not fit its signature raise a ParameterTypeError
    naming ``where`` (by default, for a method such as ``__init__``: its instance's class), the
    signature and, for a parameter of another release (``rate`` given to the 1.0 ``Mux``), this
    one's name for it.  Other errors, and ``fn``'s own TypeErrors, pass unchanged; a call that fits
    costs nothing more."""
    signature = inspect.signature(fn)
    method = next(iter(signature.parameters), None) == "self"
    shown = signature.replace(parameters=list(signature.parameters.values())[1:]) if method else signature

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TypeError as exc:
            if isinstance(exc, ParameterTypeError):
                raise
            try:
                signature.bind(*args, **kwargs)
            except TypeError:
                name = where or type(args[0]).__name__
                raise _misspelled(name, shown, args[1:] if method else args, kwargs, example) from None
            raise

    return call  # type: ignore[return-value]
