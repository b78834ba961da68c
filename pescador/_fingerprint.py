"""A recipe's fingerprint: a short hash of what the recipe computes, by value.

A resumable run's state carries the fingerprint of its recipe, so that a state
taken from one recipe is refused by another.  Two recipes built the same way
(in this process or in another one, under any ``PYTHONHASHSEED``) have the
same fingerprint; recipes that would yield other data have different ones.

What is described, and how
--------------------------
- A :class:`~pescador.Stream`: its function, arguments, keyword arguments and
  the name and parameters of the stage that made it; a ``Transform``: its
  name, function, parameters and coercion.
- Plain values: ``None``, bools, numbers, strings and bytes by ``repr``;
  lists and tuples in order; dicts sorted by their keys' descriptions; sets
  and frozensets sorted (never in hash order); numpy arrays by dtype, shape
  and a sha256 of their bytes in C order (object arrays element by element).
  Lists, tuples and dicts (of string keys) that hold only such values,
  however nested, are described in one pass: their records are serialised
  together and hashed once (a container that holds containers is hashed on
  its own, so that shared parts are described once), each array's bytes
  with one call.  A list of a million samples costs about a microsecond a
  sample.
- A function: its module, qualified name and code (bytecode, constants,
  nested code, names), *and* its data: the contents of its closure cells,
  its ``__defaults__``, ``__kwdefaults__`` and attributes.  A bound method:
  its function and the instance it is bound to.  A ``functools.partial``:
  its function, arguments and keywords.
- The code of your own modules (any module outside the standard library,
  the installed packages and pescador) is followed as cloudpickle follows
  code it sends by value: the module-level names a function's code reads
  (``LOAD_GLOBAL``) are described too, functions and classes by value,
  constants (numbers, strings, bytes, tuples and frozensets of them, enum
  members, frozen dataclasses) by value, and modules by name; a mutable
  module-level object (a list, dict, set, array or other object) by its type
  only, because it may be a cache or a counter that changes as runs go.
  Classes of your own modules (of an instance, a bound method, a callable
  object) are described by value: their bases and the functions and
  constants of their ``__dict__``.  Other functions and classes are
  described by reference (module and qualified name).
- Modules, and the callables a pickle names (``copyreg.__newobj__``), by
  reference.
- Any other object (a callable object, a config object): its type (module and
  qualified name) and the state a pickle would save (``__reduce_ex__``:
  ``vars()``, ``__slots__`` values, ``__getstate__()``), recursively.  Never
  its ``repr`` or memory address.
- A class can say what it is with ``__pescador_fingerprint__(self)``, which
  returns a description by value (any of the above); it is used instead.
- The observers of :mod:`pescador.observe` (``Meter``, ``MuxStats``) by their
  type only: they change as runs go.

An object that is not data (an open file, a lock, a socket, a generator, any
iterator, anything that does not pickle) is refused with a
:class:`~pescador.PescadorError` that says where in the recipe it sits.

What the fingerprint cannot see: the contents of files (and of anything
else a source reads at run time), module-level mutable objects (above), code
of installed packages and of the standard library (by reference only), and
the order in which a set of strings or objects iterates (it changes with
``PYTHONHASHSEED``).  :func:`examine` reports the places where a recipe
holds, or its code builds or iterates, such a set.

The description is a Merkle tree: each container or object is hashed from the
descriptions of its parts, so an object shared by several parts of a recipe is
described once, and the fingerprint does not depend on whether two equal
values are one object or two.  An object that refers back to an object being
described (a cycle) is described by how far up it refers.  Nesting deeper than
:data:`MAX_DEPTH` is refused.
"""

from __future__ import annotations

import copyreg
import dataclasses
import dis
import enum
import functools
import hashlib
import io
import operator
import os
import pickle
import site
import sys
import sysconfig
import types
from typing import Any

import numpy as np

from . import core
from .exceptions import PescadorError

__all__ = ["fingerprint", "examine", "MAX_DEPTH"]

#: How deeply objects may nest in a recipe (each stage of a pipeline is one level).
MAX_DEPTH = 150

#: How many times objects inside cycles may be described again before the walk gives up.
_REVISITS = 100_000

#: Bumped whenever the description changes, so that old fingerprints do not match new ones.
_SCHEME = "pescador-fingerprint-3"

#: Arrays of at most this many bytes are hashed with the container that holds them; larger ones alone.
_INLINE = 1 << 16

_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})

_OBSERVERS = frozenset({("pescador.observe", "Meter"), ("pescador.observe", "MuxStats")})

_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,  # (builtin methods too: [].append)
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)

_FIX = (
    "pass the data instead of the live object (for instance a file's path, not the open file), "
    "or give its class a __pescador_fingerprint__(self) method that returns a description of it "
    "by value (numbers, strings, arrays, lists and dicts of them)"
)


def fingerprint(recipe: Any) -> str:
    """Return the fingerprint of a recipe: 16 hex digits of a sha256 of its description.

    Parameters
    ----------
    recipe : Stream or any value
        Usually a :class:`~pescador.Stream`; any value that can be described
        (see the module's docstring) is accepted.

    Returns
    -------
    str
        16 lowercase hex digits.  Equal for recipes built the same way, in
        any process and under any ``PYTHONHASHSEED``; different when a
        function's code or data (closure, defaults, bound instance), an
        argument, or a stage's parameter differs.

    Raises
    ------
    PescadorError
        If the recipe holds an object that cannot be described by value (an
        open file, a lock, a socket, a generator or another iterator, an
        object that does not pickle), naming the object, where it sits in
        the recipe, and the fix; or if it nests deeper than
        :data:`MAX_DEPTH`.

    Examples
    --------
    >>> import pescador
    >>> from pescador._fingerprint import fingerprint
    >>> def make(data):
    ...     def gen():
    ...         yield from data
    ...     return gen
    >>> a, b = pescador.stream(make([1, 2])), pescador.stream(make([3, 4]))
    >>> fingerprint(a) == fingerprint(b), fingerprint(a) == fingerprint(pescador.stream(make([1, 2])))
    (False, True)
    """
    return examine(recipe)[0]


def examine(recipe: Any) -> tuple[str, list]:
    """The fingerprint of a recipe (see :func:`fingerprint`), and the places where it holds a set whose
    order depends on the hash seed (of strings, bytes or objects), or where the code of one of its
    functions builds or iterates a set (the order a source sees then changes with ``PYTHONHASHSEED``).

    Examples
    --------
    >>> import pescador
    >>> from pescador._fingerprint import examine
    >>> def tagged(tags):
    ...     for tag in tags:
    ...         yield {"tag": tag}
    >>> examine(pescador.stream(tagged, {"b", "a"}))[1]
    ['stream(tagged) argument 1: a set of str']
    >>> examine(pescador.stream(tagged, ("b", "a")))[1]
    []
    """
    walker = _Walker()
    try:
        token = walker.describe(recipe, None)
    except RecursionError:
        raise PescadorError(
            "cannot fingerprint the recipe: it nests too deeply for Python's recursion limit; "
            f"keep recipes shallower than {MAX_DEPTH} levels"
        ) from None
    digest = hashlib.sha256(f"{_SCHEME}\x00{token}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return digest, list(dict.fromkeys(walker.hash_ordered))


# ----------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if type(value) is int:  # (hex: repr refuses ints of more than 4300 digits)
        return f"int:{value:x}"
    return f"{type(value).__name__}:{value!r}"


def _ref(obj: Any) -> str:
    """A class's, function's or module's name: where it lives, never its address."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    if module is None:  # (builtin descriptors: the class they belong to)
        module = _ref(getattr(obj, "__objclass__", type(obj)))
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def _library_roots() -> tuple:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    try:
        roots.add(site.getusersitepackages())
    except Exception:  # (a site module without it)
        pass
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots)


_LIBRARY_ROOTS = _library_roots()


@functools.lru_cache(maxsize=None)
def _user_module(name: Any) -> bool:
    """Whether the module ``name`` is the user's own code (described by value), not the standard library,
    an installed package, or pescador."""
    if not isinstance(name, str) or name == "pescador" or name.startswith("pescador.") or name == "builtins":
        return False
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):  # (__main__ of a notebook, code made at run time)
        return name not in sys.builtin_module_names
    return not os.path.realpath(path).startswith(_LIBRARY_ROOTS)


def _immutable(value: Any, depth: int = 0) -> bool:
    """Whether a module-level value is a constant (described by value) rather than an object that may
    change as runs go (described by its type)."""
    t = type(value)
    if t in _SCALARS or t is range or isinstance(value, (np.generic, enum.Enum)) or value is Ellipsis:
        return True
    if isinstance(value, (tuple, frozenset)):
        return depth < 8 and all(_immutable(v, depth + 1) for v in value)
    params = getattr(t, "__dataclass_params__", None)
    return params is not None and dataclasses.is_dataclass(value) and params.frozen


_STABLE_ORDER = frozenset({type(None), bool, int, float, complex})


def _hash_ordered(items: Any) -> str:
    """What makes a set's order depend on the hash seed or on addresses ('' when nothing does): members
    other than numbers (and tuples of numbers)."""
    kinds = sorted({type(v).__qualname__ for v in items if not _stable(v)})
    return ", ".join(kinds)


def _stable(value: Any) -> bool:
    if type(value) in _STABLE_ORDER:
        return True
    return type(value) is tuple and all(_stable(v) for v in value)


@functools.lru_cache(maxsize=4096)
def _scan(code: types.CodeType) -> tuple[tuple, tuple, bool]:
    """The global names ``code`` (and code nested in it) reads, the attribute paths it reads through
    them (``("mymod", ("f",))`` for ``mymod.f``), and whether it builds or iterates a set (a
    ``set``/``frozenset`` call, a set display or comprehension, a constant set not only tested for
    membership)."""
    names: list = []
    paths: list = []
    sets = False
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            names.append(ins.argval)
            sets = sets or ins.argval in ("set", "frozenset")
            attributes = []
            for after in instructions[i + 1 :]:
                if after.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
                    break
                attributes.append(after.argval)
            if attributes:
                paths.append((ins.argval, tuple(attributes)))
        elif ins.opname in ("SET_ADD", "SET_UPDATE"):
            sets = True
        elif ins.opname == "BUILD_SET" or (
            ins.opname == "LOAD_CONST" and isinstance(ins.argval, frozenset) and _hash_ordered(ins.argval)
        ):
            after = instructions[i + 1].opname if i + 1 < len(instructions) else ""
            sets = sets or after != "CONTAINS_OP"  # (a set only tested for membership: its order never shows)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner, inner_paths, inner_sets = _scan(const)
            names += inner
            paths += inner_paths
            sets = sets or inner_sets
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(paths)), sets


_DTYPE, _SHAPE, _NBYTES = operator.attrgetter("dtype"), operator.attrgetter("shape"), operator.attrgetter("nbytes")


def _array_digest(a: np.ndarray) -> bytes:
    """A sha256 of an array's bytes in C order, with one call (no copy of a C-contiguous array)."""
    flat = np.ascontiguousarray(a).reshape(-1)
    return hashlib.sha256(flat.view(np.uint8) if flat.dtype.itemsize else b"").digest()


def _is_observer(t: type) -> bool:
    return any((getattr(c, "__module__", None), c.__qualname__) in _OBSERVERS for c in t.__mro__)


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = core.short_repr(value, limit)
    except Exception:  # (a repr that fails)
        text = f"<{type(value).__qualname__}>"
    return text


def _where(where: Any) -> str:
    """Render a place in the recipe, a chain ``(parent, label)``, outermost first."""
    labels = []
    while where is not None:
        where, label = where
        if isinstance(label, tuple):  # (formatted lazily: most places are never shown)
            kind, key = label
            label = f"item [{key}]" if kind == "item" else f"{kind} {_short(key, 40)}"
        labels.append(label)
    return " -> ".join(reversed(labels)) if labels else "the recipe itself"


def _live(t: type) -> str:
    """What the instances of a live type are, for the refusal (or '' when they are not obviously live)."""
    if issubclass(t, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
        return "a generator object (it changes as it runs)"
    if issubclass(t, io.IOBase):
        return "an open file or stream (its contents can change)"
    if hasattr(t, "__next__"):
        return "an iterator (it changes as it is consumed)"
    return ""


def _refuse(value: Any, where: Any, why: str) -> PescadorError:
    return PescadorError(
        f"cannot fingerprint {_short(value)} (a {_ref(type(value))}) at {_where(where)}: {why}, "
        f"so a resumed run could not tell whether it is the same. To resume this recipe, {_FIX}"
    )


# ----------------------------------------------------------------------------
# The walk
# ----------------------------------------------------------------------------


class _Walker:
    """Describes one recipe: a token per value, a sha256 per container or object."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}  # id -> depth, for the objects being described (the path)
        self.low: list[int] = []  # per depth: the highest ancestor (lowest depth) its parts refer to
        self.done: dict[int, tuple[Any, str]] = {}  # id -> (the object, kept alive; its token)
        self.seen: dict[int, Any] = {}  # objects described at least once (kept alive: ids stay unique)
        self.revisits = 0
        self.plans: dict[type, tuple] = {}  # type -> (kind, parts): how to describe its instances
        self.plain: dict[int, tuple] = {}  # id -> (the container, kept alive; its token, or None: not plain)
        self.hash_ordered: list[str] = []  # places whose order depends on the hash seed (see examine)
        self.orders: dict[tuple, tuple] = {}  # a dict's keys -> in sorted order
        self.codes: dict[int, str] = {}  # id of a dtype -> its description
        self.kept: list = []  # (the dtypes of ``codes``, kept alive: ids stay unique)

    def describe(self, value: Any, where: Any) -> str:
        """The token of ``value``: a scalar's repr, or ``#`` (``=`` for plain data) and a sha256."""
        t = type(value)
        if t in _SCALARS:
            return _scalar(value)
        if t is list or t is dict or t is tuple:
            token = self._plain(value, len(self.low))
            if token is not None:
                return token
        plan = self.plans.get(t)
        if plan is None:
            plan = self.plans[t] = self._plan(t)
        kind, parts = plan
        if parts is None:  # (a constant: an observer's type)
            return kind
        if kind is None:  # (a token made without hashing parts)
            return parts(value, where)
        return self.compound(value, where, kind, parts)

    def _plan(self, t: type) -> tuple:
        """How to describe the instances of ``t``: ``(kind, parts)``."""
        if issubclass(t, type):
            return None, self._class
        if issubclass(t, types.ModuleType):
            return None, self._module
        if _is_observer(t):
            return f"observer:{_ref(t)}", None
        if getattr(t, "__pescador_fingerprint__", None) is not None:
            return f"hook:{_ref(t)}", self._hooked
        if t in _HANDLERS:
            return _HANDLERS[t][0], _HANDLERS[t][1].__get__(self)
        for base, kind, parts in (
            (core.Stream, "Stream", self._stream),
            (core.Transform, "Transform", self._transform),
            (np.ndarray, "ndarray", self._array),
            ((set, frozenset), "set", self._subclassed_set),  # (a subclass: never in hash order)
            (functools.partial, "partial", self._partial),
        ):
            if issubclass(t, base):
                return f"{kind}:{_ref(t)}", parts
        if issubclass(t, _BUILTIN_CALLABLES):
            return None, self._builtin_token
        if _live(t):
            return None, self._live_object
        return f"object:{_ref(t)}", self._object

    def compound(self, value: Any, where: Any, kind: str, parts: Any) -> str:
        """Hash ``kind`` and the tokens ``parts(value, where)`` returns; cycle-safe, cached by id."""
        key = id(value)
        hit = self.done.get(key)
        if hit is not None:
            return hit[1]
        low = self.low
        up = self.index.get(key)
        if up is not None:  # a cycle: say how far up it refers
            if up < low[-1]:
                low[-1] = up
            return f"^{len(low) - up}"
        level = len(low)
        if level >= MAX_DEPTH:
            raise PescadorError(
                f"cannot fingerprint the recipe: it nests deeper than {MAX_DEPTH} levels at "
                f"{_where(where)}; keep the data a recipe holds shallower (or give its class a "
                "__pescador_fingerprint__(self) method that returns a flat description)"
            )
        if key in self.seen:
            self.revisits += 1
            if self.revisits > _REVISITS:
                raise PescadorError(
                    f"cannot fingerprint the recipe: its objects refer to each other in too many "
                    f"cycles (at {_where(where)}); give their class a __pescador_fingerprint__(self) "
                    "method that returns a description by value"
                )
        self.seen[key] = value
        self.index[key] = level
        low.append(level)
        try:
            tokens = parts(value, where)
        finally:
            del self.index[key]
            reach = low.pop()
        # (the repr of a list of strings is unambiguous, and escapes what could not be encoded)
        token = "#" + hashlib.sha256(repr((kind, tokens)).encode()).hexdigest()
        if reach >= level:  # (refers to nothing above itself: the same wherever it is met)
            self.done[key] = (value, token)
        elif reach < low[-1]:
            low[-1] = reach
        return token

    # -- plain data: lists, tuples and dicts of scalars and arrays, in one pass ------------------

    def _plain(self, value: Any, depth: int) -> str | None:
        """The token of a list, tuple or dict of plain data, however nested; None if it holds anything else
        (then the general walk describes it).  Its records are serialised and hashed once; a container it
        holds is written into them when that holds no container itself, and by its own token otherwise
        (so that shared parts are described once).  Cached by identity; a cycle is not plain."""
        key = id(value)
        hit = self.plain.get(key)
        if hit is not None:
            return hit[1]
        if depth >= MAX_DEPTH:
            return None
        self.plain[key] = (value, None)  # (while it is being described: a cycle finds None)
        meta: list = []
        data: list = []
        token = None
        if self._records(value, meta, data, depth, True):
            stream = io.BytesIO()
            pickler = pickle.Pickler(stream, 5)
            pickler.fast = True  # (no memo: equal values give equal bytes, whether one object or two)
            pickler.dump(meta)
            digest = hashlib.sha256(stream.getvalue())
            try:
                digest.update(b"".join(data))
            except (BufferError, TypeError, ValueError):  # (an array that is not C-contiguous, or datetimes)
                digest.update(b"".join(d if type(d) is bytes else np.ascontiguousarray(d).tobytes() for d in data))
            token = "=" + digest.hexdigest()
        self.plain[key] = (value, token)
        return token

    def _records(self, c: Any, meta: list, data: list, depth: int, nest: bool) -> bool | None:
        """Write the records of the container ``c`` into ``meta`` (structure and scalars; pickled) and
        ``data`` (arrays' bytes).  False when ``c`` holds something that is not plain data; None when
        ``nest`` is False and it holds a container (the caller then uses that container's own token).

        (A list of dicts of scalars and arrays, the usual collection of samples, is the hot case: each
        dict is written in the loop over the list.)"""
        app = meta.append
        if type(c) is dict:
            keys = self._keys(c)
            if keys is None:
                return False
            app(("D", keys))
            values = [c[k] for k in keys]
        else:
            if nest and len(c) > 1 and type(c[0]) is dict:  # (a collection of samples: column by column)
                marks = len(meta), len(data)
                if self._columns(c, meta, data):
                    return True
                del meta[marks[0]:], data[marks[1]:]
            app(("L" if type(c) is list else "T", len(c)))
            values = c
        put, scalars, ndarray, codes = data.append, _SCALARS, np.ndarray, self.codes
        for v in values:
            tv = type(v)
            if tv in scalars:
                app(v)
            elif tv is ndarray:
                if not self._array_record(v, app, put):
                    return False
            elif tv is dict and nest:  # (a sample: written here, unless it holds containers)
                marks = len(meta), len(data)
                keys = self._keys(v)
                if keys is None:
                    return False
                app(("D", keys))
                for k in keys:
                    x = v[k]
                    tx = type(x)
                    if tx in scalars:
                        app(x)
                    elif tx is ndarray:
                        dtype = x.dtype
                        code = codes.get(id(dtype))
                        if code is None or x.nbytes > _INLINE:
                            if not self._array_record(x, app, put):
                                return False
                        else:
                            app(("A", code, x.shape))
                            put(x)
                    elif tx is list or tx is dict or tx is tuple:
                        del meta[marks[0]:], data[marks[1]:]
                        if not self._nested(v, app, depth):
                            return False
                        break
                    else:
                        return False
            elif tv is list or tv is dict or tv is tuple:
                if not nest:
                    return None
                marks = len(meta), len(data)
                inline = self._records(v, meta, data, depth + 1, False)
                if inline is False:
                    return False
                if inline is None:  # (it holds containers: by its own token)
                    del meta[marks[0]:], data[marks[1]:]
                    if not self._nested(v, app, depth):
                        return False
            else:
                return False
        return True

    def _columns(self, rows: Any, meta: list, data: list) -> bool:
        """Write a list or tuple of dicts with the same string keys, each value a scalar or an array of one
        dtype per key, column by column (a few C-level passes per key); False when it is not one."""
        keys = self._keys(rows[0])
        if keys is None or set(map(type, rows)) != {dict} or set(map(len, rows)) != {len(keys)}:
            return False
        meta.append(("C", keys, len(rows)))
        for k in keys:
            try:  # (every row has as many keys, and each of these: the same keys)
                column = list(map(operator.itemgetter(k), rows))
            except KeyError:
                return False
            kinds = set(map(type, column))
            if kinds <= _SCALARS:
                meta.append(column)
                continue
            if kinds != {np.ndarray}:
                return False
            dtypes = set(map(_DTYPE, column))
            if len(dtypes) != 1:
                return False
            (dtype,) = dtypes
            if dtype.hasobject:
                return False
            code = str(dtype.descr) if dtype.fields is not None else dtype.str
            shapes = list(map(_SHAPE, column))
            if shapes.count(shapes[0]) == len(shapes):  # (one shape for the column: written once)
                meta.append(("A1", code, shapes[0]))
            else:
                meta.append(("A*", code, shapes))
            if max(map(_NBYTES, column)) <= _INLINE:
                data.extend(column)
            else:
                data.extend(a if a.nbytes <= _INLINE else _array_digest(a) for a in column)
        return True

    def _nested(self, v: Any, app: Any, depth: int) -> bool:
        """Write a container that holds containers by its own token; False if it is not plain."""
        token = self._plain(v, depth + 1)
        if token is None:
            return False
        app(("=", token))
        return True

    def _keys(self, d: dict) -> tuple | None:
        """A dict's keys in sorted order (cached by the tuple of its keys), or None when not all are strings."""
        names = tuple(d)
        keys = self.orders.get(names)
        if keys is None:
            if not all(type(k) is str for k in names):
                return None
            keys = self.orders[names] = sorted(names)
        return keys

    def _array_record(self, v: np.ndarray, app: Any, put: Any) -> bool:
        """Write an array: its dtype and shape, and its bytes (those of a large one as their sha256)."""
        dtype = v.dtype
        code = self.codes.get(id(dtype))
        if code is None:  # (once per dtype object: its text is costly)
            if dtype.hasobject:
                return False
            code = str(dtype.descr) if dtype.fields is not None else dtype.str
            self.codes[id(dtype)] = code
            self.kept.append(dtype)
        if v.nbytes <= _INLINE:
            app(("A", code, v.shape))
            put(v)
        else:
            app(("H", code, v.shape))
            put(_array_digest(v))
        return True

    def _class(self, value: type, where: Any) -> str:
        if not _user_module(getattr(value, "__module__", None)):
            return f"class:{_ref(value)}"
        return self.compound(value, where, f"class:{_ref(value)}", self._class_parts)

    def _class_parts(self, cls: type, where: Any) -> list:
        """A class of the user's own code, by value: its bases, and its attributes (functions and constants
        by value, other objects by their type, descriptors of C types not at all)."""
        here = (where, f"class {cls.__qualname__}")
        out = [self.describe(base, here) for base in cls.__bases__]
        attributes = vars(cls)
        for name in sorted(attributes):
            if name in ("__dict__", "__weakref__", "__module__", "__doc__"):
                continue
            value = attributes[name]
            if isinstance(value, (types.GetSetDescriptorType, types.MemberDescriptorType)):
                continue
            if isinstance(value, property):
                value = (value.fget, value.fset, value.fdel)
            elif isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            out += [name, self._named(value, (here, f"attribute {name!r}"))]
        return out

    def _named(self, value: Any, where: Any) -> str:
        """The token of a value a module or a class names: functions, classes and constants by value (those
        of library code by reference), modules by name, mutable objects by their type."""
        if isinstance(value, types.ModuleType):
            return f"module:{value.__name__}"
        if isinstance(value, (types.FunctionType, type)):
            if isinstance(value, type) or _user_module(value.__module__):
                return self.describe(value, where)
            return f"function:{_ref(value)}"
        if isinstance(value, tuple) and all(v is None or isinstance(v, types.FunctionType) for v in value):
            return self.describe(value, where)  # (a property's functions)
        if _immutable(value) or getattr(type(value), "__pescador_fingerprint__", None) is not None:
            try:
                return self.describe(value, where)
            except PescadorError:  # (a constant holding a live object: seen by its type, as a mutable one)
                return f"unseen:{_ref(type(value))}"
        if isinstance(value, _BUILTIN_CALLABLES):
            return f"builtin:{_ref(value)}"
        return f"mutable:{_ref(type(value))}"

    def _module(self, value: types.ModuleType, where: Any) -> str:
        return f"module:{value.__name__}"

    def _live_object(self, value: Any, where: Any) -> str:
        raise _refuse(value, where, f"it is {_live(type(value))}")

    # -- recipes ---------------------------------------------------------

    def _stream(self, s: core.Stream, where: Any) -> list:
        name = s.step.name if s.step is not None else f"stream({core._name(s.fn)})"
        out = [self.describe(s.fn, (where, f"{name} function"))]
        if s.step is not None:
            out += ["step", s.step.name, self.mapping(s.step.params, where, f"{name} parameter")]
        out.append(f"args:{len(s.args)}")
        for i, arg in enumerate(s.args):
            if s.step is not None and i == 0:
                label = name  # (the upstream: the stage's name leads to it)
            else:
                label = f"{name} argument {i + 1}"
            out.append(self.describe(arg, (where, label)))
        out.append(self.mapping(s.kwargs, where, f"{name} keyword argument"))
        return out

    def _transform(self, step: core.Transform, where: Any) -> list:
        here = (where, step.name)
        return [
            step.name,
            self.describe(step.fn, (here, "function")),
            self.mapping(step.params, here, "parameter"),
            self.describe(step.coerce, (here, "coerce")),
        ]

    def _hooked(self, value: Any, where: Any) -> list:
        described = type(value).__pescador_fingerprint__(value)
        return [self.describe(described, (where, f"{type(value).__qualname__}.__pescador_fingerprint__()"))]

    # -- containers ------------------------------------------------------

    def mapping(self, d: dict, where: Any, label: str) -> str:
        """The token of a dict whose values are labelled ``label key`` in errors."""
        return self.compound(d, where, "dict", functools.partial(self._items, label=label))

    def _items(self, d: dict, where: Any, label: str = "value at key") -> list:
        pairs = sorted(
            (self.describe(k, (where, ("key", k))), self.describe(v, (where, (label, k)))) for k, v in d.items()
        )
        return [token for pair in pairs for token in pair]

    def _sequence(self, seq: Any, where: Any) -> list:
        scalars = _SCALARS
        return [_scalar(v) if type(v) in scalars else self.describe(v, (where, ("item", i))) for i, v in enumerate(seq)]

    def _set(self, items: Any, where: Any) -> list:
        kinds = _hash_ordered(items)
        if kinds:
            self.hash_ordered.append(f"{_where(where)}: a {type(items).__name__} of {kinds}")
        return sorted(_scalar(v) if type(v) in _SCALARS else self.describe(v, (where, ("member", v))) for v in items)

    def _subclassed_set(self, items: Any, where: Any) -> list:
        return self._set(items, where) + self._attributes(items, where)

    def _attributes(self, value: Any, where: Any) -> list:
        attributes = getattr(value, "__dict__", None)
        if not attributes:
            return []
        return [self.compound(attributes, where, "dict", self._attribute_items)]

    def _attribute_items(self, d: dict, where: Any) -> list:
        return self._items(d, where, "attribute")

    def _array(self, a: np.ndarray, where: Any) -> list:
        dtype = a.dtype
        out = [str(dtype.descr) if dtype.fields is not None else dtype.str, repr(a.shape)]
        if dtype.hasobject:
            out += self._sequence(a.ravel().tolist(), where)
        else:
            out.append(_array_digest(a).hex())
        return out + self._attributes(a, where)

    # -- functions -------------------------------------------------------

    def _function(self, fn: types.FunctionType, where: Any) -> list:
        name = fn.__qualname__
        out = [_ref(fn), self.compound(fn.__code__, (where, f"code of {name}"), "code", self._code)]
        out.append(self.describe(fn.__defaults__, (where, f"defaults of {name}")))
        out.append(self.describe(fn.__kwdefaults__, (where, f"keyword defaults of {name}")))
        cells = fn.__closure__ or ()
        out.append(f"closure:{len(cells)}")
        for variable, cell in zip(fn.__code__.co_freevars, cells):
            try:
                contents = cell.cell_contents
            except ValueError:  # (a variable not yet bound)
                out.append("empty")
                continue
            out.append(self.describe(contents, (where, f"closure of {name} (variable {variable!r})")))
        if fn.__dict__:
            out.append(self.compound(fn.__dict__, where, "dict", self._attribute_items))
        if _user_module(fn.__module__):  # (the user's own code: what it reads from its module, as cloudpickle)
            names, paths, sets = _scan(fn.__code__)
            if sets:
                self.hash_ordered.append(f"{_where(where)}: the code of {name} builds or iterates a set")
            space = fn.__globals__
            for variable in names:
                if variable in space:
                    out += [variable, self._named(space[variable], (where, f"global {variable!r} of {name}"))]
            for variable, attributes in paths:
                out += self._through_modules(space.get(variable), variable, attributes, where, name)
        return out

    def _through_modules(self, value: Any, path: str, attributes: tuple, where: Any, name: str) -> list:
        """What code reads through a module of the user's own code (``mymod.f``, ``pkg.sub.SCALE``): each
        attribute reached, as if the code named it directly (see :meth:`_named`).  A module of library
        code is not followed, and a module's ``__getattr__`` is not called."""
        out = []
        for attribute in attributes:
            if not (isinstance(value, types.ModuleType) and _user_module(value.__name__)):
                break
            path = f"{path}.{attribute}"
            if attribute not in vars(value):
                out += [path, "unbound"]
                break
            value = vars(value)[attribute]
            out += [path, self._named(value, (where, f"global {path!r} of {name}"))]
        return out

    def _code(self, code: types.CodeType, where: Any) -> list:
        out = [
            code.co_name,
            f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},{code.co_flags}",
            code.co_code.hex(),
            repr(code.co_names),
            repr(code.co_varnames),
            repr(code.co_freevars),
            repr(code.co_cellvars),
        ]
        mark = len(self.hash_ordered)
        out += [self.describe(const, where) for const in code.co_consts]  # (nested code, frozensets)
        del self.hash_ordered[mark:]  # (a constant set matters where the code iterates it: see _scan)
        return out

    def _method(self, m: types.MethodType, where: Any) -> list:
        name = getattr(m, "__qualname__", "method")
        return [
            self.describe(m.__func__, where),
            self.describe(m.__self__, (where, f"the instance of bound method {name}")),
        ]

    def _builtin_token(self, fn: Any, where: Any) -> str:
        return self.compound(fn, where, f"builtin:{_ref(fn)}", self._builtin)

    def _builtin(self, fn: Any, where: Any) -> list:
        bound = getattr(fn, "__self__", None)
        if bound is None or isinstance(bound, types.ModuleType):
            return []
        return [self.describe(bound, (where, f"the instance of {getattr(fn, '__qualname__', 'method')}"))]

    def _partial(self, p: functools.partial, where: Any) -> list:
        here = (where, "partial")
        return [
            self.describe(p.func, (here, "function")),
            self.compound(p.args, here, "tuple", self._arguments),
            self.mapping(p.keywords, here, "keyword argument"),
        ] + self._attributes(p, where)

    def _arguments(self, args: tuple, where: Any) -> list:
        return [self.describe(arg, (where, f"argument {i + 1}")) for i, arg in enumerate(args)]

    # -- other objects: their type and what a pickle would save ------------

    def _object(self, value: Any, where: Any) -> list:
        t = type(value)
        try:
            reducer = copyreg.dispatch_table.get(t)
            reduced = reducer(value) if reducer is not None else value.__reduce_ex__(4)
        except Exception as exc:  # (TypeError "cannot pickle '_thread.lock' object", ...)
            raise _refuse(value, where, f"it does not pickle ({type(exc).__name__}: {exc})") from None
        if isinstance(reduced, str):  # (pickled by name; a decorated function: the function it wraps too)
            wrapped = getattr(value, "__wrapped__", None)
            name = f"global:{getattr(value, '__module__', None) or t.__module__}.{reduced}"
            return [name, self.describe(wrapped, (where, f"the function {reduced} wraps"))]
        if not isinstance(reduced, tuple) or not 2 <= len(reduced) <= 6:
            raise _refuse(value, where, f"its __reduce_ex__ returned {_short(reduced)}, which pickle would refuse")
        call, args, state, listitems, dictitems = (tuple(reduced) + (None,) * 3)[:5]
        here = (where, t.__qualname__)
        out = [self.describe(call, (here, "the callable its pickle calls"))]
        if type(args) is tuple:
            out.append(self.compound(args, here, "tuple", self._arguments))
        else:
            out.append(self.describe(args, (here, "the arguments its pickle passes")))
        out.append(self._state(state, value, where))
        if listitems is not None:
            out.append(self.compound(list(listitems), here, "list", self._sequence))
        if dictitems is not None:
            out.append(self.compound(list(dictitems), here, "list", self._sequence))
        return out

    def _state(self, state: Any, value: Any, where: Any) -> str:
        here = (where, type(value).__qualname__)
        if type(state) is dict:
            return self.compound(state, here, "dict", self._attribute_items)
        if type(state) is tuple and len(state) == 2 and all(s is None or type(s) is dict for s in state):
            return "slots:" + ",".join(  # ((__dict__ or None), {slot: value})
                "None" if s is None else self.compound(s, here, "dict", self._attribute_items) for s in state
            )
        return self.describe(state, (where, f"the state of {type(value).__qualname__}"))


# exact types -> (kind, unbound handler)
_HANDLERS = {
    dict: ("dict", _Walker._items),
    list: ("list", _Walker._sequence),
    tuple: ("tuple", _Walker._sequence),
    set: ("set", _Walker._set),
    frozenset: ("set", _Walker._set),
    types.FunctionType: ("function", _Walker._function),
    types.MethodType: ("method", _Walker._method),
    types.CodeType: ("code", _Walker._code),
}
