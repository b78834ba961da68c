"""How a recipe travels to another process, and what is refused, by name, before it leaves.

The one place that turns a recipe into bytes for another process and back:
:func:`dumps` and :func:`loads`, for ``zmq_offload``'s workers started by
``spawn`` or ``forkserver`` and for PyTorch ``DataLoader`` workers (which
pickle the dataset).  Under ``fork`` nothing is pickled: the worker is a
copy of the consumer.  ``ray_offload`` hands the recipe to Ray, whose
serialiser is cloudpickle too, after :func:`check`.

By value where it must be: the bytes are made by cloudpickle (pickle
protocol 5), as Ray, loky and joblib do.  Functions, classes, lambdas and
closures defined in ``__main__`` (a notebook, ``python -c``, a script) or
inside another function travel by value, with the globals their code names;
functions and classes that the worker can import by name (those of real
modules, pescador's own stages among them) travel by reference, as pickle
sends them.  A worker needs only pescador and what the recipe's modules
import.

What cannot travel is refused before any worker starts, with a
:class:`~pescador.PescadorError` that names the object, where it sits in
the recipe (the stage, the argument, the closure variable or global) and
the fix: a live generator, an open file (cloudpickle would send a text
file's contents instead), a socket, a lock, and anything else that does not
pickle.  In-memory buffers (``io.BytesIO``, ``io.StringIO``) travel as
copies of their contents, and ``sys.stdout`` and ``sys.stderr`` as the
worker's own.
"""

from __future__ import annotations

import _thread
import copyreg
import functools
import io
import pickle
import socket
import sys
import types
from collections.abc import Iterator
from typing import Any

import cloudpickle
import zmq

from .core import Stream, Transform, _name, short_repr
from .exceptions import PescadorError
from .stage import _from_collection, _from_iterable

__all__ = ["dumps", "loads", "check", "refusal"]

_PROTOCOL = 5  # (out-of-band buffers: a check pass never copies an array)
_MAX_DEPTH = 200  # how deep the search for what does not travel goes

# What cannot travel at all, whatever a pickler makes of it: (types, what it is, the fix).
_UNTRAVELLABLE = (
    (
        (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType),
        "a live generator",
        "pass the generator function and its arguments, pescador.stream(fn, *args), so that each worker "
        "starts a run of its own",
    ),
    (
        (io.IOBase,),
        "an open file",
        "pass its path, and open the file inside the generator function (each worker opens its own)",
    ),
    (
        (socket.socket, zmq.Socket, zmq.Context),
        "a socket",
        "pass its address, and connect inside the generator function",
    ),
    (
        (_thread.LockType, _thread.RLock),
        "a lock",
        "create it inside the generator function (a lock cannot be shared with another process by pickling)",
    ),
)
_IN_MEMORY = (io.BytesIO, io.StringIO)  # (buffers of data: they travel as copies)
_ANY_UNTRAVELLABLE = tuple(t for types_, _, _ in _UNTRAVELLABLE for t in types_)
_GENERIC_FIX = (
    "pass plain data (arrays, numbers, strings, paths) and create this object inside the generator function"
)


def _kind(value: Any) -> tuple | None:
    """``(what it is, the fix)`` for an object that cannot travel at all, else None."""
    if not isinstance(value, _ANY_UNTRAVELLABLE) or isinstance(value, _IN_MEMORY) or _standard(value):
        return None
    return next((what, fix) for types_, what, fix in _UNTRAVELLABLE if isinstance(value, types_))


def _standard(value: Any) -> str | None:
    """``"stdout"`` or ``"stderr"`` for this process's standard output or error (they travel as the worker's own)."""
    for name in ("stdout", "stderr"):
        if value is getattr(sys, name, None) or value is getattr(sys, f"__{name}__", None):
            return name
    return None


class _CannotTravel(pickle.PicklingError):
    """Raised by the pickler at the first object of a kind that cannot travel."""

    def __init__(self, value: Any) -> None:
        super().__init__(f"{type(value).__qualname__} object cannot travel")
        self.value = value


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, refusing what cannot travel before any reducer (cloudpickle's own too) sees it."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _ANY_UNTRAVELLABLE):
            standard = _standard(obj)
            if standard is not None:
                return getattr, (sys, standard)
            if _kind(obj) is not None:
                raise _CannotTravel(obj)
        return super().reducer_override(obj)


class _Sink:
    """A file that keeps nothing: for a pass that only checks."""

    @staticmethod
    def write(data: Any) -> int:
        return len(data)


def _no_buffer(buffer: pickle.PickleBuffer) -> bool:
    return False  # (out of band: the pass does not copy the buffer)


def _fails(value: Any) -> Exception | None:
    """The exception pickling ``value`` raises, or None; copies no array."""
    try:
        _Pickler(_Sink(), protocol=_PROTOCOL, buffer_callback=_no_buffer).dump(value)
    except Exception as exc:
        return exc
    return None


def dumps(recipe: Any, sending: str, otherwise: str = "") -> bytes:
    """The recipe as bytes for another process; what cannot travel is refused by name.

    Parameters
    ----------
    recipe : Any
        Usually a :class:`~pescador.Stream`.
    sending : str
        Starts the refusal's message: who sends, and to what
        (``"zmq_offload: the recipe cannot be sent to workers started with 'spawn'"``).
    otherwise : str
        Ends the refusal's message: the way round that needs no pickling
        (``"or use start_method='fork'"``), or nothing.

    Returns
    -------
    bytes
        For :func:`loads` in the other process.

    Raises
    ------
    PescadorError
        If something in the recipe cannot travel: names it, where it sits
        and the fix.

    Examples
    --------
    >>> import threading, pescador
    >>> from pescador._pickling import dumps, loads
    >>> offset = 10
    >>> recipe = pescador.stream(lambda n: ({"i": i + offset} for i in range(n)), 2)
    >>> list(loads(dumps(recipe, "example")))   # (a lambda, and the global it reads, by value)
    [{'i': 10}, {'i': 11}]
    >>> def guarded(lock):
    ...     yield {"i": 0}
    >>> dumps(pescador.take(5)(pescador.stream(guarded, threading.Lock())), "example")
    Traceback (most recent call last):
      ...
    pescador.exceptions.PescadorError: example: take -> stream(guarded) argument 1 is a lock (<unlocked _thread.lock object at 0x...>), which cannot travel to another process; create it inside the generator function ...
    """
    out = io.BytesIO()
    try:
        _Pickler(out, protocol=_PROTOCOL).dump(recipe)
    except Exception as exc:
        raise _refusal(recipe, exc, sending, otherwise) from None
    return out.getvalue()


def loads(data: bytes) -> Any:
    """The recipe :func:`dumps` made (in the process that runs it)."""
    return pickle.loads(data)


def check(recipe: Any, sending: str, otherwise: str = "") -> None:
    """Refuse, as :func:`dumps` does, what cannot travel at all; make no bytes and copy no array.

    For a transport that pickles the recipe by itself (Ray): only the kinds
    that cannot travel at all (a live generator, an open file, a socket, a
    lock) are refused here; whatever else the transport's serialiser cannot
    send is named by :func:`refusal` when it fails.
    """
    exc = _fails(recipe)
    if isinstance(exc, _CannotTravel):
        raise _refusal(recipe, exc, sending, otherwise) from None


def refusal(recipe: Any, error: Exception, sending: str, otherwise: str = "") -> PescadorError:
    """The error for a recipe that a serialiser could not send: what, where, and the fix."""
    return _refusal(recipe, error, sending, otherwise)


def _refusal(recipe: Any, error: Exception, sending: str, otherwise: str) -> PescadorError:
    value, place, error = _culprit(recipe, error)
    kind = _kind(value)
    if kind is not None:
        what, fix = f"{kind[0]} ({_short(value)})", kind[1]
    else:
        what, fix = f"{_short(value)}, a {_type_name(value)} ({type(error).__name__}: {error})", _GENERIC_FIX
    where = " -> ".join(place) if place else "the recipe itself"
    return PescadorError(
        f"{sending}: {where} is {what}, which cannot travel to another process; {fix}"
        f"{'; ' + otherwise if otherwise else ''}"
    )


def _culprit(value: Any, error: Exception) -> tuple:
    """The innermost part of ``value`` that does not pickle: ``(part, its place, its error)``.

    ``value`` itself does not (``error``); its parts are tried in turn, and
    the search goes on in the first that fails.  Made only on failure, so a
    recipe that travels pays nothing for it.
    """
    place: tuple = ()
    seen = set()
    while len(place) < _MAX_DEPTH and not (isinstance(error, _CannotTravel) and error.value is value):
        seen.add(id(value))
        for label, part in _parts(value):
            part_error = None if id(part) in seen else _fails(part)
            if part_error is not None:
                value, place, error = part, place + (label,), part_error
                break
        else:  # (no part fails alone: it is this one)
            break
    return value, place, error


def _parts(value: Any) -> Iterator[tuple[str, Any]]:
    """The parts a pickle of ``value`` holds, each with its label in a refusal."""
    if isinstance(value, Stream):
        data = value.fn in (_from_collection, _from_iterable)  # (stream([...]): its items are its argument)
        name = value.step.name if value.step is not None else "stream([...])" if data else f"stream({_name(value.fn)})"
        for i, arg in enumerate(value.args):
            yield (name if (value.step is not None or data) and i == 0 else f"{name} argument {i + 1}"), arg
        for key, arg in value.kwargs.items():
            yield f"{name} {'parameter' if value.step is not None else 'keyword argument'} {key}", arg
        yield f"{name} function", value.fn
        if value.step is not None:
            yield name, value.step
    elif isinstance(value, Transform):
        yield from ((f"{value.name} parameter {key}", arg) for key, arg in value.params.items())
        yield f"{value.name} function", value.fn
        yield f"{value.name} coerce", value.coerce
    elif type(value) in (list, tuple):
        yield from ((f"item [{i}]", item) for i, item in enumerate(value))
    elif type(value) is dict:
        yield from ((f"key {short_repr(key, 40)}", item) for key, item in value.items())
    elif type(value) in (set, frozenset):
        yield from (("a member", item) for item in value)
    elif isinstance(value, types.FunctionType):
        yield from _function_parts(value)
    elif isinstance(value, types.MethodType):
        yield f"the instance of bound method {value.__qualname__}", value.__self__
        yield f"the function of bound method {value.__qualname__}", value.__func__
    elif isinstance(value, functools.partial):
        yield from ((f"partial argument {i + 1}", arg) for i, arg in enumerate(value.args))
        yield from ((f"partial keyword argument {key}", arg) for key, arg in value.keywords.items())
        yield "partial function", value.func
    elif isinstance(value, type):
        yield from ((f"attribute {key!r} of class {value.__qualname__}", item) for key, item in vars(value).items())
    else:
        yield from _object_parts(value)


def _function_parts(fn: types.FunctionType) -> Iterator[tuple[str, Any]]:
    """What a function pickled by value holds: its closure, defaults, the globals its code names, attributes."""
    name = fn.__qualname__
    for variable, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            yield f"closure of {name} (variable {variable!r})", cell.cell_contents
        except ValueError:  # (a variable not yet bound)
            pass
    yield from ((f"default of {name}", arg) for arg in fn.__defaults__ or ())
    yield from ((f"default of {name} ({key})", arg) for key, arg in (fn.__kwdefaults__ or {}).items())
    for variable in sorted(_names(fn.__code__)):
        if variable in fn.__globals__:
            yield f"global {variable!r} of {name}", fn.__globals__[variable]
    yield from ((f"attribute {key!r} of {name}", item) for key, item in vars(fn).items())


def _names(code: types.CodeType) -> set:
    """The global names a code object (and the code nested in it) may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _object_parts(value: Any) -> Iterator[tuple[str, Any]]:
    """What a pickle of another object holds: the arguments and state its reduction gives."""
    where = _type_name(value)
    try:
        reducer = copyreg.dispatch_table.get(type(value))
        reduced = reducer(value) if reducer is not None else value.__reduce_ex__(_PROTOCOL)
    except Exception:  # (it is the part that does not pickle)
        return
    if not isinstance(reduced, tuple):
        return
    args, state = (tuple(reduced) + (None, None))[1:3]
    if type(args) is tuple:
        yield from ((f"argument {i + 1} of {where}", arg) for i, arg in enumerate(args))
    states = state if type(state) is tuple and len(state) == 2 else (state,)  # ((__dict__, __slots__ values))
    for part in states:
        if type(part) is dict:
            yield from ((f"attribute {key!r} of {where}", item) for key, item in part.items())
        elif part is not None:
            yield f"the state of {where}", part
    for extra in reduced[3:5]:
        if isinstance(extra, Iterator):
            yield from ((f"an item of {where}", item) for item in extra)


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _short(value: Any) -> str:
    try:
        return short_repr(value, 60)
    except Exception:  # (a repr that fails)
        return f"<{_type_name(value)}>"
