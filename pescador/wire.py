"""The wire format of :func:`pescador.zmq_offload`: one multipart message per item.

A message is a msgpack *header* followed by one raw frame per large array::

    [header, frame_0, frame_1, ...]

The header is a msgpack array whose first element is the kind of message:

- ``[ITEM, fields]``: an item.  ``fields`` lists the item's keys in order;
  each field is ``[key, dtype, shape, inline]`` for an array (``inline`` is
  the array's bytes when it is small, else nil and the bytes are the next
  frame) or ``[key, value]`` for any other value, packed with
  msgpack-numpy.  A masked array's field has a fifth element,
  ``[mask, fill_value, hard_mask]``: ``mask`` is False (no mask, numpy's
  ``nomask``), the mask's bytes (a bool array of the field's shape) when
  they are small, or nil when the mask is the next frame after the data.
- ``[ITEM_STATE, fields, state]``: an item of a resumable run, with the
  worker's state after it (JSON text; see :mod:`pescador.resume`).
- ``[END]``: the worker's stream ended.
- ``[ERROR, text, [module, qualname, args, pickled]]``: the worker's
  stream raised.  ``text`` holds the traceback (at most ``TEXT_MAX``
  characters: a longer one keeps its start and its end);  ``module`` and
  ``qualname`` name the exception's type; ``args`` is nil or the
  arguments that rebuild it (``type(exc).__reduce__``'s, when every one is
  a str, bytes, int, float, bool or None; at most ``ARGS_MAX``);
  ``pickled`` is nil or the exception pickled (at most ``PICKLE_MAX``
  bytes), sent only by :func:`pescador.zmq_offload`'s workers.  ``[ERROR,
  text]`` (no type) is accepted too.  :func:`decode` returns an
  :class:`ErrorReport` and never unpickles: :func:`error_from` does, and
  only when told that the sender is trusted (one of the consumer's own
  worker processes).

Arrays larger than ``INLINE_MAX`` bytes are sent without copying, one frame
each, and received without copying: the consumer builds each array over its
frame with ``np.frombuffer``.  The frames belong to the consumer alone, so
these arrays are writeable, and writing to them touches nothing else.
Smaller arrays ride inside the header and arrive as copies.  Every array
arrives aligned for its dtype (numpy's ``flags.aligned``): a frame that
arrives misaligned for its dtype is copied.  (ZeroMQ usually places frames
of more than a few KiB on 8-byte boundaries, so those are not copied;
frames of 1 to 4 KiB often arrive misaligned, and are.)
Strings are UTF-8 that may hold lone surrogates (``'surrogatepass'``), so
a file name that Python decoded with ``surrogateescape`` arrives unchanged.
Object arrays and anything else that would need pickle never travel, and the
decoder never unpickles: every check on a received message happens before
any array is built, and any malformed message raises
:class:`~pescador.PescadorError`.
"""

from __future__ import annotations

import builtins
import dataclasses
import pickle
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np

from .exceptions import PescadorError, WorkerError

__all__ = [
    "ITEM", "ITEM_STATE", "END", "ERROR", "ErrorReport", "encode_item", "encode_end", "encode_error", "decode",
    "error_from",
]

ITEM, END, ERROR, ITEM_STATE = 0, 1, 2, 3
INLINE_MAX = 1024  # arrays of at most this many bytes ride inside the header
_MAX_DIM = 2**62
TEXT_MAX = 100_000  # characters of a traceback's text
NAME_MAX = 512  # characters of an exception type's module, and of its qualname
ARGS_MAX = 32  # arguments of an exception rebuilt without pickle
PICKLE_MAX = 1 << 20  # bytes of a pickled exception


# ----------------------------------------------------------------------------
# Encoding (in the worker)
# ----------------------------------------------------------------------------


class _Unsendable(Exception):
    """Raised by the packer's hook for a value that cannot travel."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


_SCALAR = (np.bool_, np.number, np.datetime64)  # numpy scalars that travel as themselves


def _pack_value(obj: Any) -> Any:
    """msgpack's hook for values it does not know: numpy data, complex, tuples and sets."""
    if isinstance(obj, np.ndarray):
        if not _plain(obj) or not _travels(obj.dtype) or obj.dtype.kind == "V":  # msgpack-numpy's V is structured
            raise _Unsendable(obj)
        return msgpack_numpy.encode(np.ascontiguousarray(obj))
    if isinstance(obj, _SCALAR):
        return {b"nd": False, b"type": obj.dtype.str, b"kind": b"", b"data": obj.tobytes()}
    if isinstance(obj, complex):
        return msgpack_numpy.encode(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise _Unsendable(obj)


def _travels(dtype: np.dtype) -> bool:
    """Whether arrays of ``dtype`` may cross the wire: plain data of a nonzero size."""
    return not dtype.hasobject and dtype.fields is None and dtype.subdtype is None and dtype.itemsize > 0


def _plain(array: np.ndarray) -> bool:
    """Whether ``array`` travels as a plain ndarray: an ndarray, or a memmap (its file stays behind)."""
    return type(array) is np.ndarray or type(array) is np.memmap


# Why an ndarray subclass does not travel (the encoder's decision is exhaustive:
# plain arrays and memmaps travel as ndarray, masked arrays as masked arrays
# but only as an item's own values, and every other subclass is refused).
_SUBCLASS_REASONS = {
    np.matrix: "numpy no longer recommends np.matrix, and it would arrive as a plain array; "
    "send np.asarray(value)",
    np.recarray: "it would arrive as a plain array (and structured dtypes do not travel); send the fields "
    "as keys of their own, or np.asarray(value) for a plain dtype",
}


def _subclass_reason(value: np.ndarray, inside: bool) -> str:
    if inside and isinstance(value, np.ma.MaskedArray):
        return "masked arrays travel as values of the item itself, not inside a list or dict"
    for kind, reason in _SUBCLASS_REASONS.items():
        if isinstance(value, kind):
            return reason
    return (
        "only np.ndarray, np.memmap (arriving as an ndarray) and np.ma.MaskedArray travel, and this "
        "subclass would lose what makes it one; send np.asarray(value) if its data is all it holds"
    )


def _kind_name(value: Any) -> str:
    if isinstance(value, _BadKey):
        return f"dict key {value.key!r} of type {type(value.key).__name__}"
    if isinstance(value, np.ndarray):
        if not _travels(value.dtype) or type(value) is np.ndarray:
            return f"numpy array of dtype {value.dtype}"
        return f"{type(value).__module__}.{type(value).__qualname__} (an ndarray subclass) of dtype {value.dtype}"
    if isinstance(value, int):
        return "int outside the 64-bit range"
    return type(value).__name__


def _where(position: int | None) -> str:
    return "" if position is None else f"item {position}: "


def _unsendable(key: Any, value: Any, position: int | None, inside: bool = False) -> PescadorError:
    verb = "contains" if inside else "is"
    if isinstance(value, np.ndarray) and not _plain(value) and _travels(value.dtype):  # a subclass
        why = _subclass_reason(value, inside)
    else:
        why = (
            "send numpy arrays of numbers, bools or strings, or plain str, int, float, bool, None, and lists "
            "and dicts of them (objects that need pickle never travel)"
        )
    return PescadorError(
        f"{_where(position)}the value of key {key!r} {verb} a {_kind_name(value)}, which cannot be sent to "
        f"another process; {why}"
    )


def encode_item(item: Any, copy: bool = False, position: int | None = None, state: str | None = None) -> list:
    """The frames of one item: a header, then one buffer per large array.

    Parameters
    ----------
    item : dict
        A dict with string keys.
    copy : bool
        If True, large arrays are copied into the message; otherwise the
        frames are views of the arrays, which must not change afterwards.
    position : int, optional
        The item's position in its stream, for error messages.
    state : str, optional
        The sender's resumable state after this item, as JSON text.

    Raises
    ------
    PescadorError
        If the item is not a dict with string keys, or holds a value that
        cannot travel (naming the item's position, the key and the type).

    Examples
    --------
    >>> import numpy as np
    >>> frames = encode_item({"X": np.zeros((2, 3)), "name": "a"})
    >>> decode(frames)[1]["X"].shape
    (2, 3)
    """
    if type(item) is not dict:
        if not isinstance(item, dict):
            where = "an item" if position is None else f"item {position}"
            raise PescadorError(f"{where} is a {type(item).__name__}; expected a dict of arrays with string keys")
    fields = []
    frames: list = [None]
    for key, value in item.items():
        if type(key) is not str:
            where = "an item" if position is None else f"item {position}"
            raise PescadorError(f"{where} has the key {key!r} of type {type(key).__name__}; keys must be str")
        if type(value) is np.ndarray or isinstance(value, np.ndarray):
            if not _travels(value.dtype):
                raise _unsendable(key, value, position)
            if type(value) is np.memmap:
                value = np.asarray(value)
            if type(value) is np.ndarray:
                inline = value.tobytes() if value.nbytes <= INLINE_MAX else _frame(value, copy, frames)
                fields.append([key, value.dtype.str, list(value.shape), inline])
            elif type(value) is np.ma.MaskedArray or type(value) is np.ma.core.MaskedConstant:
                fields.append(_masked_field(key, value, copy, frames))
            else:
                raise _unsendable(key, value, position)
        else:
            if type(value) is not str and not isinstance(value, (int, float, bool, type(None))):
                bad = _bad_key(value)
                if bad is not None:
                    raise _unsendable(key, bad, position, True)
            fields.append([key, value])
    header = [ITEM, fields] if state is None else [ITEM_STATE, fields, state]
    frames[0] = _pack_header(header, item, position)
    return frames


def _data(value: np.ndarray, copy: bool, frames: list) -> bytes | None:
    """The array's bytes if small, else None after appending them to ``frames`` as one frame."""
    return value.tobytes() if value.nbytes <= INLINE_MAX else _frame(value, copy, frames)


def _frame(value: np.ndarray, copy: bool, frames: list) -> None:
    """Append the array's bytes to ``frames`` as one frame (None: the field's data is that frame)."""
    if not value.flags.c_contiguous:
        value = np.ascontiguousarray(value)
    elif copy:
        value = value.copy()
    frames.append(value.reshape(-1).view(np.uint8).data)  # any dtype, no copy
    return None


def _masked_field(key: str, value: np.ma.MaskedArray, copy: bool, frames: list) -> list:
    """``[key, dtype, shape, data, [mask, fill_value, hard_mask]]``: the data's frame, then the mask's."""
    data = np.ma.getdata(value)
    field = [key, data.dtype.str, list(data.shape), _data(data, copy, frames)]
    mask = np.ma.getmask(value)
    mask_data = False if mask is np.ma.nomask else _data(np.asarray(mask, dtype=np.bool_), copy, frames)
    fill = None if getattr(value, "_fill_value", None) is None else value.fill_value  # None: numpy's default
    field.append([mask_data, fill, bool(value.hardmask)])
    return field


def _pack_header(header: list, item: dict, position: int | None) -> bytes:
    try:
        return msgpack.packb(header, default=_pack_value, use_bin_type=True)
    except _Unsendable as exc:
        key = _key_holding(item, exc.value)
        raise _unsendable(key, exc.value, position, item.get(key) is not exc.value) from None
    except UnicodeEncodeError:  # a lone surrogate, e.g. from os.fsdecode: carried exactly
        try:
            return msgpack.packb(header, default=_pack_value, use_bin_type=True, unicode_errors="surrogatepass")
        except _Unsendable as exc:
            key = _key_holding(item, exc.value)
            raise _unsendable(key, exc.value, position, item.get(key) is not exc.value) from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unpackable(item, position, exc) from None
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. nesting too deep
        raise _unpackable(item, position, exc) from None


def _unpackable(item: dict, position: int | None, exc: Exception) -> PescadorError:
    """Name the first key whose value alone cannot be packed."""
    key: Any = "?"
    for candidate, value in item.items():
        if isinstance(value, np.ndarray):
            continue
        try:
            msgpack.packb(value, default=_pack_value, use_bin_type=True, unicode_errors="surrogatepass")
        except Exception:
            key = candidate
            break
    return PescadorError(
        f"{_where(position)}the value of key {key!r} could not be packed for sending "
        f"({type(exc).__name__}: {exc})"
    )


class _BadKey:
    """Stands for a nested dict key that cannot travel, in error messages."""

    def __init__(self, key: Any) -> None:
        self.key = key


def _bad_key(value: Any, depth: int = 0) -> Any:
    """A nested dict key that cannot travel (only str, int, float, bool and None can), or None."""
    if depth > 32:
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                return _BadKey(k)
            found = _bad_key(v, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for v in value:
            found = _bad_key(v, depth + 1)
            if found is not None:
                return found
    return None


def _key_holding(item: dict, value: Any) -> Any:
    """The key of ``item`` whose value is, or contains, ``value``."""
    for key, candidate in item.items():
        if candidate is value or _contains(candidate, value):
            return key
    return "?"


def _contains(container: Any, value: Any) -> bool:
    if isinstance(container, dict):
        return any(v is value or _contains(v, value) for v in container.values())
    if isinstance(container, (list, tuple, set, frozenset)):
        return any(v is value or _contains(v, value) for v in container)
    return False


def encode_end() -> list:
    """The frames that tell the consumer that a worker's stream ended."""
    return [msgpack.packb([END])]


def encode_error(text: str, error: BaseException | None = None, pickled: bool = False) -> list:
    """The frames that carry a worker's exception: its traceback text, and its type and arguments.

    Parameters
    ----------
    text : str
        The traceback, as :func:`traceback.format_exc` gives it.
    error : BaseException, optional
        The exception itself: its type's name, and its arguments where they
        are plain values, travel with the text.
    pickled : bool
        If True, the exception also travels pickled (where it pickles, and
        unpickles again here, in at most ``PICKLE_MAX`` bytes), for a
        consumer that trusts this process (:func:`pescador.zmq_offload`'s).

    Examples
    --------
    >>> report = decode(encode_error("Traceback ...", KeyError("k")))[1]
    >>> report.type_name, report.args
    ('builtins.KeyError', ('k',))
    >>> repr(error_from(report, "worker 0", trusted=False))
    "KeyError('k')"
    """
    text = _bounded_text(str(text).encode("utf-8", "backslashreplace").decode("utf-8"))  # lone surrogates
    if error is None:
        return [msgpack.packb([ERROR, text], use_bin_type=True)]
    try:  # (the type's names and the arguments were checked, but the exception is the user's: never fail here)
        info = [*_type_names(type(error)), _plain_args(error), _pickled(error) if pickled else None]
        header = msgpack.packb([ERROR, text, info], use_bin_type=True, unicode_errors="surrogatepass")
    except Exception:
        header = msgpack.packb([ERROR, text], use_bin_type=True)
    return [header]


def _bounded_text(text: str) -> str:
    """``text``, or its start and its end (where a traceback says most) when it is longer than TEXT_MAX."""
    if len(text) <= TEXT_MAX:
        return text
    marker = f"\n[... {len(text) - TEXT_MAX + 100} characters left out ...]\n"
    head = TEXT_MAX // 4
    return text[:head] + marker + text[len(text) - (TEXT_MAX - head - len(marker)):]


def _type_names(kind: type) -> list:
    module, qualname = getattr(kind, "__module__", ""), getattr(kind, "__qualname__", "")
    if not isinstance(module, str) or not isinstance(qualname, str):
        return ["", getattr(kind, "__name__", "?")[:NAME_MAX]]
    return [module[:NAME_MAX], qualname[:NAME_MAX]]


_PLAIN = (str, bytes, int, float, bool, type(None))


def _plain_value(value: Any) -> bool:
    """Whether an exception's argument travels without pickle (and is rebuilt without it)."""
    if type(value) is int:
        return -(2**63) <= value < 2**64
    if type(value) in (str, bytes):
        return len(value) <= TEXT_MAX
    return type(value) in _PLAIN


def _plain_args(error: BaseException) -> list | None:
    """The arguments that rebuild ``error`` (as pickle would), if there are few and all are plain values."""
    try:
        reduced = error.__reduce__()
    except Exception:
        return None
    if not isinstance(reduced, tuple) or len(reduced) < 2 or reduced[0] is not type(error):
        return None
    args = reduced[1]
    if type(args) is not tuple or len(args) > ARGS_MAX or not all(map(_plain_value, args)):
        return None
    return list(args)


def _pickled(error: BaseException) -> bytes | None:
    """``error`` pickled, if it is an Exception that pickles, unpickles to its own type and is not too big."""
    if not isinstance(error, Exception):
        return None
    try:
        data = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > PICKLE_MAX or type(pickle.loads(data)) is not type(error):
            return None
    except Exception:  # arguments that do not pickle, or that do not fit the constructor
        return None
    return data


# ----------------------------------------------------------------------------
# Decoding (in the consumer): every check before any array is built
# ----------------------------------------------------------------------------


def _malformed(why: str) -> PescadorError:
    return PescadorError(f"malformed message from a worker: {why}")


_DTYPES: dict = {}  # dtype strings already checked


def _dtype(code: Any) -> np.dtype:
    dtype = _DTYPES.get(code) if type(code) is str else None
    if dtype is not None:
        return dtype
    if not isinstance(code, str) or len(code) > 32:
        raise _malformed(f"dtype {code!r} is not a dtype string")
    try:
        dtype = np.dtype(code)
    except Exception:
        raise _malformed(f"unknown dtype {code!r}") from None
    if not _travels(dtype):
        raise _malformed(f"dtype {code!r} is not allowed on the wire")
    if len(_DTYPES) < 256:
        _DTYPES[code] = dtype
    return dtype


def _shape(shape: Any) -> tuple:
    if not isinstance(shape, list) or len(shape) > 64:
        raise _malformed(f"shape {shape!r} is not a list of at most 64 dimensions")
    for dim in shape:
        if type(dim) is not int or not 0 <= dim < _MAX_DIM:
            raise _malformed(f"shape {shape!r} has a dimension that is not a non-negative int")
    return tuple(shape)


def _array(buffer: Any, dtype: np.dtype, shape: tuple, copy: bool) -> np.ndarray:
    """An array over ``buffer`` (a frame) or, for inline bytes, a copy of them."""
    count = 1
    for dim in shape:
        count *= dim
    size = len(buffer) if type(buffer) is bytes else buffer.nbytes
    if count * dtype.itemsize != size:
        raise _malformed(
            f"an array of dtype {dtype.str} and shape {shape} needs {count * dtype.itemsize} bytes; "
            f"its frame holds {size}"
        )
    try:
        array = np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a 0 among enormous dimensions
        raise _malformed(f"an array of dtype {dtype.str} and shape {shape}: {exc}") from None
    if copy or type(buffer) is bytes or not array.flags.aligned:
        array = array.copy()
    return array


def _unpack_hook(obj: dict) -> Any:
    """msgpack-numpy's decoder, after checks that keep pickle and bad sizes out."""
    if b"nd" not in obj and b"complex" not in obj:
        return obj
    if b"complex" in obj:
        data = obj.get(b"data")
        if not isinstance(data, (str, bytes)) or len(data) > 128:
            raise _malformed("a complex number is not encoded as text")
        try:
            return complex(data.decode() if isinstance(data, bytes) else data)
        except ValueError:
            raise _malformed(f"{data!r} is not a complex number") from None
    kind = obj.get(b"kind", b"")
    if kind != b"" or not isinstance(obj.get(b"type"), str) or not isinstance(obj.get(b"data"), bytes):
        raise _malformed("a numpy value of a kind that does not travel (object, structured or unknown)")
    dtype = _dtype(obj[b"type"])
    if obj[b"nd"] is True:
        return _array(obj[b"data"], dtype, _shape(obj.get(b"shape")), True)
    if obj[b"nd"] is False:
        if len(obj[b"data"]) != dtype.itemsize:
            raise _malformed("a numpy scalar whose bytes do not match its dtype")
        return np.frombuffer(obj[b"data"], dtype=dtype)[0]
    raise _malformed("a numpy value with a bad marker")


def _frame_buffer(frame: Any) -> Any:
    buffer = getattr(frame, "buffer", None)
    return buffer if buffer is not None else memoryview(frame)


def decode(frames: list, copy: bool = False) -> tuple:
    """Decode one message: ``(ITEM, item)``, ``(ITEM_STATE, (item, state))``, ``(END, None)`` or ``(ERROR, report)``.

    An error's ``report`` is an :class:`ErrorReport`; nothing is unpickled.

    Parameters
    ----------
    frames : list of bytes or zmq.Frame
        The message, as received (without the sender's identity frame).
    copy : bool
        If True, arrays are copied out of the frames (and so are writeable).

    Raises
    ------
    PescadorError
        If the message is malformed in any way.
    """
    if not frames:
        raise _malformed("an empty message")
    try:
        header = msgpack.unpackb(
            _frame_buffer(frames[0]),
            raw=False,
            object_hook=_unpack_hook,
            strict_map_key=False,
            unicode_errors="surrogatepass",
        )
    except PescadorError:
        raise
    except Exception as exc:
        raise _malformed(f"the header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, list) or not header or not isinstance(header[0], int):
        raise _malformed("the header is not a list starting with a message kind")
    kind = header[0]
    if kind == ITEM:
        if len(header) != 2 or not isinstance(header[1], list):
            raise _malformed("an item header without a list of fields")
        return ITEM, _item(header[1], frames, copy)
    if kind == ITEM_STATE:
        if len(header) != 3 or not isinstance(header[1], list) or not isinstance(header[2], str):
            raise _malformed("an item header without a list of fields and a state")
        return ITEM_STATE, (_item(header[1], frames, copy), header[2])
    if len(frames) != 1:
        raise _malformed(f"a control message of kind {kind} with {len(frames) - 1} extra frames")
    if kind == END and len(header) == 1:
        return END, None
    if kind == ERROR and len(header) in (2, 3) and isinstance(header[1], str):
        return ERROR, _error_report(header)
    raise _malformed(f"unknown message kind {kind!r}")


@dataclasses.dataclass(frozen=True)
class ErrorReport:
    """A worker's exception as it arrived: its traceback text, and its type and arguments where known.

    ``args`` is None unless the exception can be rebuilt from plain values;
    ``pickled`` is None unless the sender pickled it (and is never unpickled
    by :func:`decode`).
    """

    text: str
    module: str = ""
    qualname: str = ""
    args: tuple | None = None
    pickled: bytes | None = dataclasses.field(default=None, repr=False)

    @property
    def type_name(self) -> str:
        """``module.qualname``, or ``""`` when the sender did not say."""
        return f"{self.module}.{self.qualname}" if self.module else self.qualname


def _error_report(header: list) -> ErrorReport:
    text = header[1]
    if len(text) > TEXT_MAX:
        raise _malformed(f"an error's text of {len(text)} characters (at most {TEXT_MAX})")
    if len(header) == 2:
        return ErrorReport(text)
    info = header[2]
    if not isinstance(info, list) or len(info) != 4:
        raise _malformed("an error's type is not [module, qualname, args, pickled]")
    module, qualname, args, pickled = info
    for name in (module, qualname):
        if not isinstance(name, str) or len(name) > NAME_MAX:
            raise _malformed(f"an error's type names a module or class that is not a str of at most {NAME_MAX}")
    if args is not None and (not isinstance(args, list) or len(args) > ARGS_MAX or not all(map(_plain_value, args))):
        raise _malformed(f"an error's arguments are not a list of at most {ARGS_MAX} plain values")
    if pickled is not None and (not isinstance(pickled, bytes) or len(pickled) > PICKLE_MAX):
        raise _malformed(f"an error's pickled form is not bytes of at most {PICKLE_MAX}")
    return ErrorReport(text, module, qualname, None if args is None else tuple(args), pickled)


# ----------------------------------------------------------------------------
# Rebuilding a worker's exception (in the consumer)
# ----------------------------------------------------------------------------


def error_from(report: ErrorReport, where: str, trusted: bool, when: str = "") -> Exception:
    """The exception to raise for a worker's error: its own type where it can be rebuilt, else a WorkerError.

    The rebuilt exception has the worker's arguments, a
    :class:`~pescador.WorkerError` holding the worker's traceback as its
    ``__cause__`` (so a printed traceback shows the worker's frames), and
    a note (PEP 678) saying where it was raised.

    Parameters
    ----------
    report : ErrorReport
        The error, as :func:`decode` returned it.
    where : str
        Who raised it, for the messages (``"zmq_offload: worker 0"``).
    when : str
        When, for the messages (``" after sending 7 items"``).
    trusted : bool
        True only for a message from one of the consumer's own worker
        processes (same user, same machine): its pickled exception is
        unpickled.  Otherwise nothing is unpickled, and only built-in
        exception types are rebuilt, from their plain arguments.
    """
    kind = report.type_name
    shown = (report.qualname if report.module == "builtins" else kind) or "an exception"
    message = f"{where} raised {shown}{when}; its traceback:\n{report.text.rstrip()}"
    cause = WorkerError(message, report.text, kind)
    error = _unpickled(report.pickled) if trusted and report.pickled is not None else None
    if error is None:
        error = _builtin(report)
    if error is None:
        return cause
    error.__cause__ = cause
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(f"({where} raised this{when}; its traceback is above)")
    return error


def _rebuildable(kind: Any) -> bool:
    """Exceptions only (not SystemExit, KeyboardInterrupt...), and not those a generator may not raise."""
    return isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, _NOT_REBUILT)


_NOT_REBUILT = (StopIteration, StopAsyncIteration)


def _unpickled(data: bytes) -> Exception | None:
    """A trusted worker's pickled exception.  (A spawned worker's ``__main__`` classes pickle as
    ``__mp_main__``, which multiprocessing makes an alias of the consumer's ``__main__``.)"""
    try:
        error = pickle.loads(data)
    except Exception:  # a class not importable here, or a constructor that refuses the arguments
        return None
    return error if _rebuildable(type(error)) else None


def _builtin(report: ErrorReport) -> Exception | None:
    """A built-in exception from its plain arguments (no pickle, no user code), or None."""
    if report.module != "builtins" or report.args is None or not report.qualname.isidentifier():
        return None
    kind = getattr(builtins, report.qualname, None)
    if not _rebuildable(kind):
        return None
    try:
        return kind(*report.args)
    except Exception:
        return None


def _item(fields: list, frames: list, copy: bool) -> dict:
    item = {}
    frame = 1
    for field in fields:
        if not isinstance(field, list) or len(field) not in (2, 4, 5) or not isinstance(field[0], str):
            raise _malformed("a field is not [key, value], [key, dtype, shape, data] or a masked array's")
        if len(field) == 2:
            item[field[0]] = field[1]
            continue
        key, code, shape, inline = field[:4]
        dtype, shape = _dtype(code), _shape(shape)
        buffer, frame = _field_buffer(key, inline, frames, frame)
        if len(field) == 5:
            masked = field[4]
            if not isinstance(masked, list) or len(masked) != 3 or type(masked[2]) is not bool:
                raise _malformed(f"the mask of key {key!r} is not [mask, fill_value, hard_mask]")
            mask_buffer = None
            if masked[0] is not False:
                mask_buffer, frame = _field_buffer(key, masked[0], frames, frame)
            _fill(key, masked[1])
            data = _array(buffer, dtype, shape, copy)
            mask = np.ma.nomask if mask_buffer is None else _array(mask_buffer, _BOOL, shape, copy)
            item[key] = _masked(key, data, mask, masked[1], masked[2])
        else:
            item[key] = _array(buffer, dtype, shape, copy)
    if frame != len(frames):
        raise _malformed(f"{len(frames) - frame} frames more than the header describes")
    return item


_BOOL = np.dtype(np.bool_)


def _field_buffer(key: str, inline: Any, frames: list, frame: int) -> tuple:
    """The bytes of an array: ``inline`` itself, or the next frame (nil); and the next frame's index."""
    if inline is None:
        if frame >= len(frames):
            raise _malformed(f"the header describes more arrays than the {len(frames) - 1} frames sent")
        return _frame_buffer(frames[frame]), frame + 1
    if isinstance(inline, bytes):
        return inline, frame
    raise _malformed(f"the data of key {key!r} is neither inline bytes nor a frame")


def _fill(key: str, fill: Any) -> None:
    """A masked array's fill value is a scalar (or nil for numpy's default)."""
    if fill is not None and not isinstance(fill, (bool, int, float, complex, str, bytes, np.generic)):
        raise _malformed(f"the fill value of key {key!r} is a {type(fill).__name__}, not a scalar")


def _masked(key: str, data: np.ndarray, mask: Any, fill: Any, hard: bool) -> np.ma.MaskedArray:
    try:
        return np.ma.MaskedArray(data, mask=mask, fill_value=fill, hard_mask=hard, copy=False, shrink=False)
    except (TypeError, ValueError, OverflowError) as exc:  # a fill value that does not fit the dtype
        raise _malformed(f"the masked array of key {key!r}: {exc}") from None
