"""The wire format of :func:`pescador.zmq_offload`: one multipart message per item.

A message is a msgpack *header* followed by one raw frame per large array::

    [header, frame_0, frame_1, ...]

The header is a msgpack array whose first element is the kind of message:

- ``[ITEM, fields]``: an item.  ``fields`` lists the item's keys in order;
  each field is ``[key, dtype, shape, inline]`` for an array (``inline`` is
  the array's bytes when it is small, else nil and the bytes are the next
  frame) or ``[key, value]`` for any other value, packed with
  msgpack-numpy.
- ``[ITEM_STATE, fields, state]``: an item of a resumable run, with the
  worker's state after it (JSON text; see :mod:`pescador.resume`).
- ``[END]``: the worker's stream ended.
- ``[ERROR, text]``: the worker's stream raised; ``text`` holds the
  traceback.

Arrays larger than ``INLINE_MAX`` bytes are sent without copying, one frame
each, and received without copying: the consumer builds each array over its
frame with ``np.frombuffer``.  The frames belong to the consumer alone, so
these arrays are writeable, and writing to them touches nothing else.
Smaller arrays ride inside the header and arrive as copies.  Every array
arrives aligned for its dtype (numpy's ``flags.aligned``): a frame that
arrives misaligned for its dtype is copied.  (ZeroMQ usually places frames
of more than a few KiB on 8-byte boundaries, so those are not copied;
frames of 1 to 4 KiB often arrive misaligned, and are.)
Object arrays and anything else that would need pickle never travel, and the
decoder never unpickles: every check on a received message happens before
any array is built, and any malformed message raises
:class:`~pescador.PescadorError`.
"""

from __future__ import annotations

from typing import Any

import msgpack
import msgpack_numpy
import numpy as np

from .exceptions import PescadorError

__all__ = ["ITEM", "ITEM_STATE", "END", "ERROR", "encode_item", "encode_end", "encode_error", "decode"]

ITEM, END, ERROR, ITEM_STATE = 0, 1, 2, 3
INLINE_MAX = 1024  # arrays of at most this many bytes ride inside the header
_MAX_DIM = 2**62


# ----------------------------------------------------------------------------
# Encoding (in the worker)
# ----------------------------------------------------------------------------


class _Unsendable(Exception):
    """Raised by the packer's hook for a value that cannot travel."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


def _pack_value(obj: Any) -> Any:
    """msgpack's hook for values it does not know: numpy data through msgpack-numpy."""
    if isinstance(obj, np.ndarray):
        if not _travels(obj.dtype) or obj.dtype.kind == "V":
            raise _Unsendable(obj)
        return msgpack_numpy.encode(np.ascontiguousarray(obj))
    if isinstance(obj, (np.bool_, np.number, complex)):
        return msgpack_numpy.encode(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise _Unsendable(obj)


def _travels(dtype: np.dtype) -> bool:
    """Whether arrays of ``dtype`` may cross the wire: plain data of a nonzero size."""
    return not dtype.hasobject and dtype.fields is None and dtype.subdtype is None and dtype.itemsize > 0


def _kind_name(value: Any) -> str:
    if isinstance(value, _BadKey):
        return f"dict key {value.key!r} of type {type(value.key).__name__}"
    if isinstance(value, np.ndarray):
        return f"numpy array of dtype {value.dtype}"
    if isinstance(value, int):
        return "int outside the 64-bit range"
    return type(value).__name__


def _unsendable(key: Any, value: Any, position: int | None, inside: bool = False) -> PescadorError:
    where = "" if position is None else f"item {position}: "
    verb = "contains" if inside else "is"
    return PescadorError(
        f"{where}the value of key {key!r} {verb} a {_kind_name(value)}, which cannot be sent to another "
        "process; send numpy arrays of numbers, bools or strings, or plain str, int, float, bool, "
        "None, and lists and dicts of them (objects that need pickle never travel)"
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
        cannot travel (naming the key and the type).

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
            dtype = value.dtype
            if not _travels(dtype):
                raise _unsendable(key, value, position)
            if value.nbytes <= INLINE_MAX:
                fields.append([key, dtype.str, list(value.shape), value.tobytes()])
            else:
                if not value.flags.c_contiguous:
                    value = np.ascontiguousarray(value)
                elif copy:
                    value = value.copy()
                fields.append([key, dtype.str, list(value.shape), None])
                frames.append(value.reshape(-1).view(np.uint8).data)  # any dtype, no copy
        else:
            if type(value) is not str and not isinstance(value, (int, float, bool, type(None))):
                bad = _bad_key(value)
                if bad is not None:
                    raise _unsendable(key, bad, position, True)
            fields.append([key, value])
    try:
        header = [ITEM, fields] if state is None else [ITEM_STATE, fields, state]
        frames[0] = msgpack.packb(header, default=_pack_value, use_bin_type=True)
    except _Unsendable as exc:
        key = _key_holding(item, exc.value)
        raise _unsendable(key, exc.value, position, item.get(key) is not exc.value) from None
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. an int beyond 64 bits
        raise PescadorError(f"an item could not be packed for sending: {exc}") from None
    return frames


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


def encode_error(text: str) -> list:
    """The frames that carry a worker's exception (its traceback text)."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates, e.g. in file names
    return [msgpack.packb([ERROR, text], use_bin_type=True)]


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
    """Decode one message: ``(ITEM, item)``, ``(ITEM_STATE, (item, state))``, ``(END, None)`` or ``(ERROR, text)``.

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
            _frame_buffer(frames[0]), raw=False, object_hook=_unpack_hook, strict_map_key=False
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
    if kind == ERROR and len(header) == 2 and isinstance(header[1], str):
        return ERROR, header[1]
    raise _malformed(f"unknown message kind {kind!r}")


def _item(fields: list, frames: list, copy: bool) -> dict:
    item = {}
    frame = 1
    for field in fields:
        if not isinstance(field, list) or len(field) not in (2, 4) or not isinstance(field[0], str):
            raise _malformed("a field is not [key, value] or [key, dtype, shape, data]")
        if len(field) == 2:
            item[field[0]] = field[1]
            continue
        key, code, shape, inline = field
        dtype, shape = _dtype(code), _shape(shape)
        if inline is None:
            if frame >= len(frames):
                raise _malformed(f"the header describes more arrays than the {len(frames) - 1} frames sent")
            buffer = _frame_buffer(frames[frame])
            frame += 1
        elif isinstance(inline, bytes):
            buffer = inline
        else:
            raise _malformed(f"the data of key {key!r} is neither inline bytes nor a frame")
        item[key] = _array(buffer, dtype, shape, copy)
    if frame != len(frames):
        raise _malformed(f"{len(frames) - frame} frames more than the header describes")
    return item

