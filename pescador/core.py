"""Stream recipes and the helpers that finish a pipeline.

A :class:`Stream` is an immutable, picklable recipe for an iterator: a
function plus its arguments.  ``iter(s)`` starts a fresh, independent run
every time, so a stream can be restarted, copied, pickled and sent to
another process.  Combinators (:func:`take`, :func:`cycle`, :func:`tuples`,
:func:`keras_tuples`, and ``buffer``, ``mux`` and ``zmq_offload`` in their
own modules) are curried and data-last: called with their parameters they
return a :class:`Transform`, which turns an upstream recipe into a new one,
so they compose with :func:`toolz.pipe`.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from itertools import chain, islice
from types import GeneratorType
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, Union, overload

import numpy as np

from ._checks import check_count
from .exceptions import DataError, MissingKeyError, ParameterError, ParameterTypeError, PescadorError
from .stage import (Stage, _from_collection, _from_iterable, check_fields, check_int, most_given, plain_stage, stage_of,
                    start, start_from, start_plain, starter)

__all__ = [
    "Stream",
    "Transform",
    "ItemTransform",
    "PoolTransform",
    "stream",
    "take",
    "cycle",
    "tuples",
    "keras_tuples",
]

# Type variables of the public signatures (for type checkers: at run time a Stream is one class)
_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)  # a Stream's item type (a recipe is immutable: covariant)
_In = TypeVar("_In", contravariant=True)  # a Transform's upstream item type
_Out = TypeVar("_Out", covariant=True)  # a Transform's output item type
_P = ParamSpec("_P")

#: What a combinator accepts as its upstream, for type checkers: a Stream of T, a collection
#: of T, or a generator function taking no arguments and yielding T (stream() takes more).
Source = Union["Stream[_T]", Iterable[_T], Callable[[], Iterable[_T]]]


class _Missing:
    """The default of a combinator's ``source``: given none, the combinator
    returns a step (a :class:`Transform`) to apply later.  Its repr is what
    ``help()`` and the API reference show: ``take(n, source=<no source>)``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no source>"

    def __reduce__(self) -> str:
        return "_MISSING"  # (pickles and copies as the one instance)


_MISSING = _Missing()


# ----------------------------------------------------------------------------
# Readable reprs and value comparison for recipe arguments
# ----------------------------------------------------------------------------


def _name(fn: Any) -> str:
    """A callable's name for reprs and outlines: never an address-bearing repr.

    A function or bound method by its qualified name (``gen``,
    ``Reader.gen``), a ``@streamable`` recipe by the function it runs, a
    ``functools.partial`` as ``partial(f)``, and any other callable object
    by its type's qualified name (``Reader``), the same in every process.
    """
    for attribute in ("pescador_name", "__qualname__", "__name__"):  # (pescador_name: a @streamable recipe)
        name = getattr(fn, attribute, None)
        if isinstance(name, str) and name:
            return name
    if isinstance(fn, functools.partial):
        return f"partial({_name(fn.func)})"
    return type(fn).__qualname__


_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)


def short_repr(value: Any, limit: int = 80) -> str:
    """Return a short, readable repr of a recipe argument.

    Arrays show their shape and dtype, functions their name, long sequences
    their first items and length, and anything else is cut at ``limit``
    characters.
    """
    if isinstance(value, np.ndarray):
        return f"<array shape={value.shape} dtype={value.dtype}>"
    if isinstance(value, _FUNCTIONS):  # (a function a stage applies, as map's: by name, never by address)
        return _name(value)
    if isinstance(value, (list, tuple)) and len(value) > 4:
        head = ", ".join(short_repr(v, 40) for v in value[:3])
        return f"[{head}, ... ({len(value)} items)]"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(short_repr(v, limit) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, Stream) and value.step is None and value.fn not in (_from_collection, _from_iterable):
        return f"stream({_name(value.fn)}, ...)"  # a long recipe: its function says what it is
    return text[: limit - 3] + "..."


def _same(a: Any, b: Any) -> bool:
    """Compare two recipe arguments without tripping over numpy arrays."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # an argument whose == is not a truth value
        return False


class _Frozen:
    """Base for immutable objects built with ``__slots__``."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new one instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _init(self, **fields: Any) -> None:
        for key, value in fields.items():
            object.__setattr__(self, key, value)


# ----------------------------------------------------------------------------
# Stream and Transform
# ----------------------------------------------------------------------------


class Stream(_Frozen, Generic[_T_co]):
    """An immutable, picklable recipe for an iterator.

    A stream holds a function and the arguments to call it with.  Every
    ``iter(s)`` calls the function again, so every run is fresh and
    independent of the others.  Build streams with :func:`stream` and the
    combinators rather than with this constructor.

    Parameters
    ----------
    fn : callable
        Called as ``fn(*args, **kwargs)`` at the start of each run; it must
        return an iterable (a generator function is the usual choice).
    args : tuple
        Positional arguments for ``fn``.
    kwargs : dict
        Keyword arguments for ``fn``.
    step : Transform or None
        The combinator that made this stream from ``args[0]``, if any; it
        is used for the stream's repr and equality.

    Examples
    --------
    >>> import pescador
    >>> def count(n):
    ...     for i in range(n):
    ...         yield {"i": i}
    >>> s = pescador.stream(count, 3)
    >>> [item["i"] for item in s]
    [0, 1, 2]
    >>> [item["i"] for item in s]   # a second, independent run
    [0, 1, 2]
    >>> s
    stream(count, 3)

    For type checkers a stream is generic in its item type: ``stream(count,
    3)`` is a ``Stream[dict[str, int]]`` when ``count`` is annotated ``->
    Iterator[dict[str, int]]``, and the combinators carry the type along.
    """

    __slots__ = ("fn", "args", "kwargs", "step")

    fn: Callable[..., Iterable]
    args: tuple
    kwargs: dict
    step: "Transform | None"

    def __init__(
        self,
        fn: Callable[..., Iterable],
        args: tuple = (),
        kwargs: dict | None = None,
        step: "Transform | None" = None,
    ) -> None:
        self._init(fn=fn, args=tuple(args), kwargs=dict(kwargs or {}), step=step)

    def __iter__(self) -> Iterator[_T_co]:
        cls = stage_of(self)
        if cls is not None:  # the stage's plain run, as a generator (as 3.x gave: Keras wants one)
            return as_generator(plain_stage(cls, self.args, self.kwargs))
        result = self.fn(*self.args, **self.kwargs)
        if isinstance(result, Stage):
            return _drain(result)
        try:
            return iter(result)
        except TypeError:
            raise PescadorError(
                f"{_name(self.fn)}(...) returned a {type(result).__name__}, which is "
                "not iterable; a stream's function must return an iterable "
                "(for example, be a generator function)"
            ) from None

    # -- the Streamer methods 3.x code calls on a recipe (what @streamable returned there)
    def iterate(self, max_iter: int | None = None) -> Iterator[_T_co]:
        """Start a fresh run of at most ``max_iter`` items (all of them with None)."""
        limit = check_count(max_iter, "iterate", "max_iter", allow_none=True)
        return iter(self) if limit is None else as_generator(_Take.plain(self, limit))

    def cycle(self, max_iter: int | None = None) -> Iterator[_T_co]:
        """Run again each time a run ends, for ever or for ``max_iter`` items in all."""
        return as_generator(_Cycle.plain(self, check_count(max_iter, "cycle", "max_iter", allow_none=True)))

    def __call__(self, max_iter: int | None = None, cycle: bool = False) -> Iterator[_T_co]:
        """``s(max_iter, cycle)``: ``s.cycle(max_iter)`` if ``cycle``, else ``s.iterate(max_iter)``."""
        return self.cycle(max_iter) if cycle else self.iterate(max_iter)

    def close(self) -> None:
        """Release what this recipe keeps between its runs: the workers of each
        ``zmq_offload(persistent_workers=True)`` stage in it end now (a later run
        starts new ones).  A recipe that keeps nothing has nothing to release.

        A stage parameter that holds something between runs says so with a
        ``__pescador_close__`` method, which this calls.

        Examples
        --------
        >>> import pescador
        >>> s = pescador.take(2, pescador.stream([{"x": 1}, {"x": 2}, {"x": 3}]))
        >>> s.close()   # (nothing kept here: it does nothing)
        >>> [item["x"] for item in s]
        [1, 2]
        """
        stack: list = [self]
        seen: set = set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, Stream):
                stack.extend(node.args)
                stack.extend(node.kwargs.values())
            elif type(node) in (list, tuple):
                stack.extend(node)
            elif type(node) is dict:
                stack.extend(node.values())
            else:
                release = getattr(type(node), "__pescador_close__", None)
                if release is not None:
                    release(node)

    # pickling: rebuild through the constructor (instances are immutable)
    def __reduce__(self):
        return (Stream, (self.fn, self.args, self.kwargs, self.step))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stream):
            return NotImplemented
        return (
            self.fn == other.fn
            and self.step == other.step
            and _same(self.args, other.args)
            and _same(self.kwargs, other.kwargs)
        )

    def __hash__(self) -> int:
        return hash((self.fn, self.step, len(self.args), tuple(sorted(self.kwargs, key=str))))

    def __repr__(self) -> str:
        stages = []
        node: Stream = self
        while node.step is not None and node.args and isinstance(node.args[0], Stream):
            stages.append(repr(node.step))
            node = node.args[0]
        if node.step is not None:
            head = f"{node.step!r}({short_repr(list(node.args[0]) if node.args else [])})"
        elif node.fn is _from_collection or node.fn is _from_iterable:
            head = f"stream({short_repr(node.args[0])})"
        else:
            parts = [_name(node.fn)]
            parts += [short_repr(a) for a in node.args]
            parts += [f"{k}={short_repr(v)}" for k, v in node.kwargs.items()]
            head = f"stream({', '.join(parts)})"
        if not stages:
            return head
        return f"pipe({head}, {', '.join(reversed(stages))})"


class Transform(_Frozen, Generic[_In, _Out]):
    """A configured combinator: call it on an upstream to get a new stream.

    Combinators such as ``take(5)`` or ``buffer(16)`` validate their
    parameters at once and return a ``Transform``; applying it to a stream
    (directly or through :func:`toolz.pipe`) returns a new :class:`Stream`
    whose runs call ``fn(upstream, **params)``.

    Parameters
    ----------
    name : str
        The combinator's public name, used in reprs.
    fn : callable
        A module-level function ``fn(upstream, **params) -> iterable``.
    params : dict
        The validated parameters.
    coerce : callable, optional
        Turns what the transform is applied to into its upstream; by
        default :func:`stream` (so a generator function, a list, a
        ``Streamer`` or a ``Stream`` are all accepted).

    Examples
    --------
    >>> import pescador
    >>> first_two = pescador.take(2)
    >>> first_two
    take(n=2)
    >>> list(first_two([{"x": 1}, {"x": 2}, {"x": 3}]))
    [{'x': 1}, {'x': 2}]

    For type checkers a ``Transform[In, Out]`` turns a source of ``In`` into
    a ``Stream[Out]`` (``tuples("X", "Y")`` is a ``Transform[dict[str, Any],
    tuple[Any, Any]]``).  The combinators that keep the item type (``take``,
    ``cycle``, ``zmq_offload``, ``measure``) are typed as
    :data:`ItemTransform`, and those that merge a pool of streams (``mux`` and
    its kinds, ``epochs``) as :data:`PoolTransform`: at run time both are
    this class.
    """

    __slots__ = ("name", "fn", "params", "coerce")

    name: str
    fn: Callable[..., Iterable]
    params: dict
    coerce: Callable[[Any], Any] | None

    def __init__(
        self,
        name: str,
        fn: Callable[..., Iterable],
        params: dict,
        coerce: Callable[[Any], Any] | None = None,
    ) -> None:
        self._init(name=name, fn=fn, params=dict(params), coerce=coerce)

    def __call__(self, upstream: Source[_In]) -> Stream[_Out]:
        upstream = stream(upstream) if self.coerce is None else self.coerce(upstream)
        return Stream(self.fn, (upstream,), self.params, self)

    def __reduce__(self):
        return (Transform, (self.name, self.fn, self.params, self.coerce))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return self.name == other.name and self.fn == other.fn and _same(self.params, other.params)

    def __hash__(self) -> int:
        return hash((self.name, self.fn))

    def __repr__(self) -> str:
        defaults = _defaults(self.fn)  # parameters left at their defaults are not shown
        params = ", ".join(
            f"{k}={short_repr(v)}" for k, v in self.params.items() if not (k in defaults and _same(defaults[k], v))
        )
        return f"{self.name}({params})"


if TYPE_CHECKING:

    class ItemTransform(Transform[Any, Any]):
        """A Transform that keeps the item type: a source of T in, a ``Stream[T]`` out."""

        def __call__(self, upstream: Source[_T]) -> Stream[_T]: ...  # type: ignore[override]

    class PoolTransform(Transform[Any, Any]):
        """A Transform that merges a pool of ``Stream[T]`` (a list, or a stream of streams) into a ``Stream[T]``."""

        def __call__(self, pool: Iterable[Stream[_T]] | Callable[[], Iterable[Stream[_T]]]) -> Stream[_T]: ...  # type: ignore[override]

else:  # at run time both are the one Transform class
    ItemTransform = PoolTransform = Transform


def _defaults(fn: Callable) -> dict:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


# ----------------------------------------------------------------------------
# stream(): the one way in
# ----------------------------------------------------------------------------


def _check_call(fn: Callable, args: tuple, kwargs: dict) -> None:
    """Refuse, at construction, arguments that ``fn`` could never accept."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C callables: nothing to check
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ParameterTypeError(
            f"stream({_name(fn)}, ...): the arguments do not fit {_name(fn)}{signature}: {exc}. "
            "Pass the function's arguments after it: stream(fn, *args, **kwargs)"
        ) from None


@overload
def stream(source: Stream[_T]) -> Stream[_T]: ...
@overload
def stream(source: Callable[_P, Iterable[_T]], *args: _P.args, **kwargs: _P.kwargs) -> Stream[_T]: ...
@overload
def stream(source: Iterable[_T]) -> Stream[_T]: ...
def stream(source: Any, *args: Any, **kwargs: Any) -> Stream:
    """Make a stream recipe from a data source.

    Parameters
    ----------
    source : callable, Stream, Streamer, or a re-iterable collection
        - a generator function, or any callable that returns an iterable:
          each run calls ``source(*args, **kwargs)``;
        - a :class:`Stream` (returned as it is) or a ``Streamer`` (its
          recipe);
        - a re-iterable collection (a list, tuple, range, numpy array, set,
          or any object whose ``__iter__`` starts afresh each time): each run
          iterates over it from the start.  A string is a collection of its
          characters, as pescador 3.x iterated it (``stream("abc")`` yields
          ``"a"``, ``"b"``, ``"c"``).  A dict is refused: it is one item, so
          wrap it in a list.
    *args, **kwargs
        Arguments for ``source`` when it is callable.

    Returns
    -------
    Stream

    Raises
    ------
    ParameterTypeError
        (a PescadorError and a TypeError) If ``source`` is anything else (a generator object or another
        iterator, which can run only once, is refused with a hint), or if
        ``args`` and ``kwargs`` do not fit the signature of ``source``.

    Examples
    --------
    >>> import numpy as np, pescador
    >>> def noisy(x, sigma=1.0):
    ...     rng = np.random.default_rng(0)
    ...     while True:
    ...         yield {"X": x + sigma * rng.standard_normal(x.shape)}
    >>> s = pescador.stream(noisy, np.zeros((1, 3)), sigma=0.5)
    >>> s
    stream(noisy, <array shape=(1, 3) dtype=float64>, sigma=0.5)
    >>> len(list(pescador.take(4, s)))
    4
    """
    if isinstance(source, Stream):
        if args or kwargs:
            raise ParameterTypeError(
                "stream(s, ...) got arguments for a stream that is already a recipe; "
                "arguments go with a generator function: stream(fn, *args, **kwargs)"
            )
        return source
    recipe = getattr(source, "__pescador_stream__", None)
    if recipe is not None and not isinstance(source, type):
        if args or kwargs:
            raise ParameterTypeError(
                f"stream() got arguments for a {type(source).__name__}, which already "
                "holds its own; arguments go with a generator function"
            )
        return recipe()
    if isinstance(source, Iterator):
        raise ParameterTypeError(
            f"stream() got a {type(source).__name__} object, which can be iterated only "
            "once and so cannot be restarted; pass the generator function and its "
            "arguments instead: stream(fn, *args, **kwargs)"
        )
    if callable(source):
        _check_call(source, args, kwargs)
        return Stream(source, args, kwargs)
    if isinstance(source, dict):
        raise ParameterTypeError(
            "stream() got a dict, which is one item, not a source of items; wrap it in a "
            "list (stream([item])) or pass a generator function that yields it"
        )
    if isinstance(source, Iterable):
        if args or kwargs:
            raise ParameterTypeError(
                f"stream() got arguments for a {type(source).__name__}; arguments go with "
                "a generator function: stream(fn, *args, **kwargs)"
            )
        # sequences (str too, as 3.x iterated it) can be resumed by position; other iterables are replayed
        sequence = isinstance(source, (Sequence, np.ndarray))
        return Stream(_from_collection if sequence else _from_iterable, (source,))
    raise ParameterTypeError(
        f"stream() cannot make a stream from a {type(source).__name__}; expected a "
        "generator function (or any callable returning an iterable), a Stream, a "
        "Streamer, or a list or tuple of items"
    )


# ----------------------------------------------------------------------------
# Argument checks shared by the combinators
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# The two calling styles of the map functions
# ----------------------------------------------------------------------------


def is_data(first: Any) -> bool:
    """Whether a map function's first argument is its data (the 3.x data-first call).

    The map functions (``tuples``, ``keras_tuples``, ``buffer_stream``,
    ``cache``) take two styles under one name: called with a stream first, as
    pescador 3.x called them, they return an iterator over that stream; called
    with parameters only, they return a curried :class:`Transform` for a pipe.
    The first argument is data when it is a :class:`Stream`, a ``Streamer``
    (anything with ``__pescador_stream__``), an iterator (a live generator), or
    any other iterable except a string, bytes, a dict, or a list or tuple of
    strings (which name keys: ``keras_tuples(["a", "b"], "y")``).

    Examples
    --------
    >>> from pescador.core import is_data
    >>> is_data([{"x": 1}]), is_data(iter([])), is_data("x"), is_data(["a", "b"]), is_data(16)
    (True, True, False, False, False)
    """
    if isinstance(first, (Stream, Iterator)):
        return True
    if getattr(first, "__pescador_stream__", None) is not None and not isinstance(first, type):
        return True
    if isinstance(first, (str, bytes, bytearray, dict)) or not isinstance(first, Iterable):
        return False
    if isinstance(first, (list, tuple)) and first and all(isinstance(key, str) for key in first):
        return False
    return True


def run_data_first(fn: Callable[..., Iterator], data: Any, **params: Any) -> Iterator:
    """Run ``fn(upstream, **params)`` over ``data`` as a 3.x map function did: an iterator.

    A live iterator is consumed as it is; anything else becomes a stream first.  The result is a
    generator, as in 3.x (Keras, for one, accepts generators and not other iterators).
    """
    upstream = data if isinstance(data, Iterator) else stream(data)
    if isinstance(fn, type) and issubclass(fn, Stage):
        return as_generator(plain_stage(fn, (upstream,), params))
    return _drain(fn(upstream, **params))


def as_generator(run: Iterator) -> Iterator:
    """``run`` as a generator: itself when it is one, else one generator over it (one frame per item), so
    that the run is over once an exception has escaped it, and Keras takes it."""
    return run if type(run) is GeneratorType else _drain(run)


def _drain(run: Iterator | None, recipe: Any = None) -> Iterator:
    """A stage's run as a generator, which closes the run however it ends: at its end, by ``close()``, or by
    an exception, even one raised in the stage between two items (Ctrl-C may land there: the traceback then
    holds these frames, and without the close it would hold the run, and a zmq_offload's workers).  With
    ``recipe`` (and ``run`` None), the recipe's plain run, started at the first item asked for."""
    if run is None:
        run = start_plain(recipe)
    try:
        yield from run
    finally:
        close = getattr(run, "close", None)
        if close is not None:
            close()


# ----------------------------------------------------------------------------
# take, cycle
# ----------------------------------------------------------------------------


class _Take(Stage):
    """take: at most ``n`` items.  State: the items given so far, and the upstream's state."""

    def __init__(self, upstream: Stream, n: int, state: dict | None = None) -> None:
        self.n, self.count = n, 0
        if state is None:
            self.up = start(upstream)
            return
        where, most = f"take(n={n})", most_given()
        check_fields(state, ("count", "up"), where)
        self.count = check_int(state, "count", where, 0, n if most is None else min(n, most))
        self.up = start_from(upstream, state, "up", where, self.count)  # (one upstream item per item given)

    def __next__(self) -> Any:
        count = self.count
        if count >= self.n:
            raise StopIteration
        item = next(self.up)
        self.count = count + 1
        return item

    def state(self) -> dict:
        return {"count": self.count, "up": self.up.state()}

    @classmethod
    def plain(cls, upstream: Stream, n: int) -> Iterator:
        return islice(start_plain(upstream), n)

    @classmethod
    def run_length(cls, upstream: Stream, params: dict, length: Callable) -> float | None:
        inner = length(upstream)
        return None if inner is None else min(inner, params["n"])


@overload
def take(n: int) -> ItemTransform: ...
@overload
def take(n: int, source: Source[_T]) -> Stream[_T]: ...
def take(n: int, source: Any = _MISSING) -> Transform | Stream:
    """Keep the first ``n`` items of a stream.

    Curried and data-last: ``take(n)`` is a :class:`Transform`, and
    ``take(n, source)`` is the stream itself.

    Parameters
    ----------
    n : int >= 0
        How many items each run yields at most.
    source : optional
        Anything :func:`stream` accepts.

    Examples
    --------
    >>> import itertools, pescador
    >>> def naturals():
    ...     yield from ({"i": i} for i in itertools.count())
    >>> [x["i"] for x in pescador.take(3, naturals)]
    [0, 1, 2]
    """
    step = ItemTransform("take", _Take, {"n": check_count(n, "take", "n")})
    return step if source is _MISSING else step(source)


class _Cycle(Stage):
    """cycle: restart the upstream each time its run ends, for ever or for ``max_iter`` items.

    State: the items given so far, those of the current pass, and the
    current pass's state.
    """

    def __init__(self, upstream: Stream, max_iter: int | None, state: dict | None = None) -> None:
        self.upstream, self.limit = upstream, max_iter
        self.count = self.in_pass = 0
        self.restart = starter()
        if state is None:
            self.up = start(upstream)
            return
        where, most = f"cycle(max_iter={max_iter})", most_given()
        check_fields(state, ("count", "in_pass", "up"), where)
        high = max_iter if most is None or (max_iter is not None and max_iter < most) else most
        self.count = check_int(state, "count", where, 0, high)
        self.in_pass = check_int(state, "in_pass", where, 0, self.count)
        self.up = start_from(upstream, state, "up", where, self.in_pass)  # (this pass gave in_pass items)

    def __next__(self) -> Any:
        if self.limit is not None and self.count >= self.limit:
            raise StopIteration
        try:
            item = next(self.up)
        except StopIteration:
            if not self.in_pass:
                raise _spins(self.upstream) from None
            self.up, self.in_pass = self.restart(self.upstream), 0
            return self.__next__()
        self.count += 1
        self.in_pass += 1
        return item

    def state(self) -> dict:
        return {"count": self.count, "in_pass": self.in_pass, "up": self.up.state()}

    @classmethod
    def plain(cls, upstream: Stream, max_iter: int | None) -> Iterator:
        run = chain.from_iterable(_passes(upstream, start_plain(upstream)))
        return run if max_iter is None else islice(run, max_iter)

    @classmethod
    def run_length(cls, upstream: Stream, params: dict, length: Callable) -> float | None:
        inner = length(upstream)
        limit = params["max_iter"]
        if inner == 0:
            return None  # (a run raises: it would spin)
        if limit is not None and inner is not None:
            return limit
        return None if inner is None else math.inf


def _passes(upstream: Stream, run: Iterator) -> Iterator[Iterator]:
    """cycle's plain run, as the runs of ``upstream`` one after the other (``run`` the first), each as its
    first item and its rest; a run that yields nothing raises, as the stage does."""
    while True:
        for first in run:
            break
        else:
            raise _spins(upstream)
        yield (first,)
        yield run
        run = start_plain(upstream)


def _spins(upstream: Stream) -> PescadorError:
    return PescadorError(f"cycle: a run of {upstream!r} yielded no items; restarting it would spin forever")


@overload
def cycle(max_iter: int | None = None) -> ItemTransform: ...
@overload
def cycle(max_iter: int | None, source: Source[_T]) -> Stream[_T]: ...
def cycle(max_iter: int | None = None, source: Any = _MISSING) -> Transform | Stream:
    """Restart a finite stream each time it ends, for ever or for ``max_iter`` items.

    Parameters
    ----------
    max_iter : int >= 0 or None
        Total number of items to yield across restarts; None for no limit.
    source : optional
        Anything :func:`stream` accepts.

    Raises
    ------
    PescadorError
        When a run of the upstream yields nothing, instead of spinning.

    Examples
    --------
    >>> import pescador
    >>> [x["i"] for x in pescador.cycle(5, [{"i": 0}, {"i": 1}])]
    [0, 1, 0, 1, 0]
    """
    step = ItemTransform(
        "cycle", _Cycle, {"max_iter": check_count(max_iter, "cycle", "max_iter", allow_none=True)}
    )
    return step if source is _MISSING else step(source)


# ----------------------------------------------------------------------------
# tuples, keras_tuples
# ----------------------------------------------------------------------------


def is_recipe(value: Any) -> bool:
    """Whether ``value`` is a stream: a :class:`Stream`, or a ``Streamer`` (anything with ``__pescador_stream__``)."""
    return isinstance(value, Stream) or (getattr(value, "__pescador_stream__", None) is not None
                                         and not isinstance(value, type))


_MUX_FIRST = "combine streams with a mux first: pipe(streams, pescador.mux(k=...), ...)"


class OneStream:
    """What a stage that takes one stream (``buffer``, ``zmq_offload``) is applied to, made its upstream
    as :func:`stream` makes it; a list of streams, which only a mux takes, is refused naming the stage."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, upstream: Any) -> Stream:
        if isinstance(upstream, (list, tuple)) and upstream and is_recipe(upstream[0]):
            raise ParameterTypeError(
                f"{self.where}: got a list of {len(upstream)} streams where one stream belongs; {_MUX_FIRST} "
                f"(or pescador.mux.chain_mux() to run them one after another)"
            )
        return stream(upstream)


def not_a_dict(item: Any, where: str, position: int, source: str = "") -> PescadorError:
    """The error for an item that is not a dict with string keys."""
    origin = f" from {source}" if source else ""
    if is_recipe(item):
        return DataError(f"{where}: item {position}{origin} is a stream ({short_repr(item, 60)}), not a dict of "
                         f"arrays: the stream's items are streams; {_MUX_FIRST}")
    if isinstance(item, dict):
        bad = next(k for k in item if type(k) is not str)
        what = f"a dict with the key {bad!r} of type {type(bad).__name__}"
    else:
        what = f"a {type(item).__name__} ({short_repr(item, 60)})"
    return DataError(f"{where}: item {position}{origin} is {what}; expected a dict of arrays with string keys")


def is_item(item: Any) -> bool:
    """Whether ``item`` is a dict whose keys are all strings (what every stage expects)."""
    if type(item) is not dict and not isinstance(item, dict):
        return False
    for key in item:
        if type(key) is not str:
            return False
    return True


def _key_error(item: Any, key: Any, where: str, position: int) -> PescadorError:
    if not is_item(item):
        return not_a_dict(item, where, position)
    return MissingKeyError(f"{where}: item {position} has no key {key!r}; its keys are {list(item)!r}")


def _missing(item: Any, keys: Sequence, where: str, position: int) -> PescadorError:
    if isinstance(item, dict):
        for key in keys:
            if key not in item:
                return _key_error(item, key, where, position)
    return _key_error(item, keys[0], where, position)


class _Map(Stage):
    """A one-to-one stage: one item out per item in, in order.  State: the position (for the
    messages) and the upstream's state."""

    one_to_one = True
    name = ""

    def _begin(self, upstream: Any, state: dict | None) -> None:
        self.position = 0
        if state is None:
            self.up = start(upstream)
            return
        where = f"{self.name} stage"
        check_fields(state, ("pos", "up"), where)
        self.position = check_int(state, "pos", where, 0, most_given())
        self.up = start_from(upstream, state, "up", where, self.position)  # (one upstream item per item)

    def state(self) -> dict:
        return {"pos": self.position, "up": self.up.state()}


class _Tuples(_Map):
    name = "tuples"

    def __init__(self, upstream: Any, keys: tuple, state: dict | None = None) -> None:
        self.keys, self.get, self.single, self.exact = keys, itemgetter(*keys), len(keys) == 1, len(set(keys))
        self._begin(upstream, state)

    def __next__(self) -> tuple:
        item = next(self.up)
        position = self.position
        self.position = position + 1
        if (item.__class__ is not dict or len(item) != self.exact) and not is_item(item):  # (see _tuples)
            raise not_a_dict(item, "tuples", position)
        try:
            return (self.get(item),) if self.single else self.get(item)
        except KeyError:
            raise _missing(item, self.keys, "tuples", position) from None

    @classmethod
    def plain(cls, upstream: Any, keys: tuple) -> Iterator:
        return _tuples(start_plain(upstream), keys)


CHUNK = range(256)  # (positions counted in chunks of small ints, which Python does not allocate)


def _tuples(run: Iterator, keys: tuple) -> Iterator[tuple]:
    """tuples' plain run: the loop of ``_Tuples.__next__``, fused, the position counted in chunks of 256
    (cheaper than enumerate's new int per item).

    A dict (not a subclass) with as many keys as are asked for, every one of them found, holds those keys
    and no other, so its keys are strings: such an item needs no look at its keys (and a try costs nothing
    where nothing is raised, from Python 3.11).  Any other item is checked key by key (:func:`is_item`).
    """
    get, single, exact, key = itemgetter(*keys), len(keys) == 1, len(set(keys)), keys[0]
    base = 0
    while True:
        i = -1
        for i, item in zip(CHUNK, run):  # (the range first: a full chunk ends without drawing an item)
            if (item.__class__ is not dict or len(item) != exact) and not is_item(item):
                raise not_a_dict(item, "tuples", base + i)
            try:
                out = (item[key],) if single else get(item)  # (one key: a subscript, cheaper than a call)
            except KeyError:
                raise _missing(item, keys, "tuples", base + i) from None
            yield out
        if i < 255:
            return
        base += 256


def _check_keys(keys: Any, where: str, name: str) -> None:
    """Keys must be strings: items are dicts with string keys, so any other key could never match."""
    for key in keys:
        if not isinstance(key, str):
            hint = ""
            if callable(key):
                hint = f"; to run {where} on a source, give a stream first: {where}(pescador.stream(fn), ...)"
            raise ParameterTypeError(f"{where}: {name} must be strings (the keys of the items); got {key!r}{hint}")


_Item = dict[str, Any]  # what tuples, keras_tuples and buffer take: a dict with string keys
_Keys = Union[str, Sequence[str], None]


@overload
def tuples(key: str, /) -> Transform[_Item, tuple[Any]]: ...
@overload
def tuples(key1: str, key2: str, /) -> Transform[_Item, tuple[Any, Any]]: ...
@overload
def tuples(key1: str, key2: str, key3: str, /, *keys: str) -> Transform[_Item, tuple[Any, ...]]: ...
@overload
def tuples(source: Stream[Any] | Iterator[Any] | Iterable[_Item], /, *keys: str) -> Iterator[tuple[Any, ...]]: ...
def tuples(*keys: Any) -> Transform | Iterator[tuple]:
    """Turn each dict item into a tuple of its values at ``keys``, in order.

    Two styles under one name (see :func:`is_data`): ``tuples("X", "Y")`` is
    a curried :class:`Transform` for a pipe; ``tuples(stream, "X", "Y")``, the
    pescador 3.x call, returns an iterator over that stream.

    Parameters
    ----------
    *keys
        One or more keys; each item becomes ``(item[k1], item[k2], ...)``.

    Raises
    ------
    ParameterTypeError
        (a PescadorError and a TypeError) With no keys, or a key that is not a string.
    DataError
        (at iteration) When an item is not a dict or lacks a key; the
        message names the key and the keys present.

    Examples
    --------
    >>> import pescador
    >>> s = pescador.stream([{"X": 1, "Y": 2}])
    >>> list(pescador.tuples("X", "Y")(s))
    [(1, 2)]
    >>> list(pescador.tuples(s, "Y"))
    [(2,)]
    """
    if keys and is_data(keys[0]):
        return run_data_first(_Tuples, keys[0], keys=_tuple_keys(keys[1:]))
    return Transform("tuples", _Tuples, {"keys": _tuple_keys(keys)})


def _tuple_keys(keys: tuple) -> tuple:
    if not keys:
        raise ParameterTypeError("tuples: name at least one key, e.g. tuples('X', 'Y')")
    _check_keys(keys, "tuples", "keys")
    return tuple(keys)


def _pick(item: Any, keys: str | tuple | None, position: int) -> Any:
    if keys is None:
        return None
    try:
        if isinstance(keys, tuple):
            return [item[k] for k in keys]
        return item[keys]
    except KeyError:
        raise _missing(item, keys if isinstance(keys, tuple) else (keys,), "keras_tuples", position) from None


class _KerasTuples(_Map):
    name = "keras_tuples"

    def __init__(self, upstream: Any, inputs: str | tuple, outputs: str | tuple | None,
                 state: dict | None = None) -> None:
        self.inputs, self.outputs = inputs, outputs
        self._begin(upstream, state)

    def __next__(self) -> tuple:
        item = next(self.up)
        position = self.position
        self.position = position + 1
        if not is_item(item):
            raise not_a_dict(item, "keras_tuples", position)
        return (_pick(item, self.inputs, position), _pick(item, self.outputs, position))


def _keras_keys(keys: Any, name: str) -> Any:
    if keys is None:
        return None
    if isinstance(keys, (list, tuple)):
        if not keys:
            raise ParameterError(f"keras_tuples: {name} must name at least one key")
        _check_keys(keys, "keras_tuples", name)
        return tuple(keys)
    _check_keys((keys,), "keras_tuples", name)
    return keys


@overload
def keras_tuples(inputs: _Keys, outputs: _Keys = None, /) -> Transform[_Item, tuple[Any, Any]]: ...
@overload
def keras_tuples(inputs: _Keys, /, *, outputs: _Keys) -> Transform[_Item, tuple[Any, Any]]: ...
@overload
def keras_tuples(*, inputs: _Keys = None, outputs: _Keys = None) -> Transform[_Item, tuple[Any, Any]]: ...
@overload
def keras_tuples(
    stream: Stream[Any] | Iterator[Any] | Iterable[_Item], inputs: _Keys = None, outputs: _Keys = None
) -> Iterator[tuple[Any, Any]]: ...
def keras_tuples(*args: Any, inputs: Any = None, outputs: Any = None, stream: Any = _MISSING) -> Transform | Iterator[tuple]:
    """Shape dict items as ``(x, y)`` tuples for Keras 3 ``model.fit``.

    Two calls under one name (see :func:`is_data`):

    - ``keras_tuples(inputs, outputs)`` (or ``keras_tuples(inputs=...,
      outputs=...)``): a curried :class:`Transform` for a pipe;
    - ``keras_tuples(stream, inputs, outputs)``, the pescador 3.x call:
      an iterator over that stream.

    Parameters
    ----------
    *args
        The keys by position, ``inputs`` then ``outputs``; in the 3.x call,
        the stream first.
    inputs : key, list of keys, or None
        A single key gives ``x = item[key]``; a list gives a list of arrays
        (a model with several inputs); None gives ``x = None``.
    outputs : key, list of keys, or None
        Likewise for ``y``.  At least one of ``inputs`` and ``outputs`` is
        given.
    stream : optional
        The stream, for 3.x code that names it (``stream=s``).

    Examples
    --------
    >>> import pescador
    >>> s = pescador.stream([{"a": 1, "b": 2, "y": 3}])
    >>> list(pescador.keras_tuples(["a", "b"], "y")(s))
    [([1, 2], 3)]
    >>> list(pescador.keras_tuples(s, outputs="y")), list(pescador.keras_tuples(inputs="a")(s))
    ([(None, 3)], [(1, None)])
    """
    if stream is _MISSING:  # the 3.x call has the stream first; the curried call, keys only
        stream = args[0] if args and is_data(args[0]) else None
        args = args[1:] if stream is not None else args
    if len(args) > 2:
        raise ParameterTypeError(
            "keras_tuples: got three sets of keys; call keras_tuples(inputs, outputs) "
            "in a pipe, or keras_tuples(stream, inputs, outputs) on a stream"
        )
    named = {"inputs": inputs, "outputs": outputs}
    for name, keys in zip(named, args):
        if named[name] is not None:
            raise ParameterTypeError(f"keras_tuples: got {name} twice, by position and by name; give it once")
        named[name] = keys
    inputs, outputs = _keras_keys(named["inputs"], "inputs"), _keras_keys(named["outputs"], "outputs")
    if inputs is None and outputs is None:
        raise ParameterTypeError("keras_tuples: name the keys of inputs, outputs or both, e.g. keras_tuples('X', 'Y')")
    if stream is not None:
        return run_data_first(_KerasTuples, stream, inputs=inputs, outputs=outputs)
    return Transform("keras_tuples", _KerasTuples, {"inputs": inputs, "outputs": outputs})
