"""The wire format of :func:`pescador.zmq_offload`: one multipart message per item, or per batch of small items.

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
- ``[BATCH, count, fields, values, states]``: ``count`` items of one
  layout (the same keys in the same order, each array of the same dtype and
  shape), which share one message.  ``fields`` lists the keys in order: an
  array's field is ``[key, dtype, shape, inline]`` as above, where
  ``shape`` is one item's and the data is the ``count`` arrays stacked (a
  C-contiguous block of shape ``(count, *shape)``, inline when it is small;
  ``shape`` ``[]``: the values are numpy scalars of that dtype, a row each);
  any other value's field is ``[key]``.  ``values`` is nil when every
  field is an array, else one list of the items' other values: the first
  item's, in field order, then the second's, and so on.  ``states`` is
  nil, or one entry per item: the sender's state after that item (JSON
  text), or nil where it did not send one.  The consumer views each block
  once and hands out its rows, one item at a time, in order.
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
  :class:`ErrorReport` and never unpickles: :func:`error_from` does (the
  report is from one of the consumer's own workers).

A kind plus ``0x40`` marks a *padded* message: its last frame is zeros,
which pay for what the rest makes the receiver build (see below).

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
decoder never unpickles; any malformed message raises
:class:`~pescador.PescadorError`.

Decoding a message of B bytes (all its frames) allocates at most
``MEMORY_FACTOR * B + MEMORY_BASE`` bytes (4 B + 256 KiB), whatever the
message holds: what unpacking its header and building its items would
allocate is counted from the message alone, before it is allocated, and a
message that would cost more is refused.  The encoder keeps every message
it makes within that bound: a batch holds only as many items as its bytes
pay for (up to 1,024 items and 64 KiB of data; a few hundred items of a
few bytes each), and an item whose values cost more than its bytes (long
lists of small values, thousands of small arrays or of numpy scalars, long
non-ASCII strings) travels padded.
"""

from __future__ import annotations

import builtins
import dataclasses
import pickle
import signal
import threading
import time
from typing import Any

import cloudpickle
import msgpack
import msgpack_numpy
import numpy as np

from .exceptions import PescadorError, WorkerError

__all__ = [
    "ITEM", "ITEM_STATE", "BATCH", "END", "ERROR", "ErrorReport", "encode_item", "encode_batch", "encode_end",
    "encode_error", "decode", "error_from", "Outbox",
]

ITEM, END, ERROR, ITEM_STATE, BATCH = 0, 1, 2, 3, 4
INLINE_MAX = 1024  # arrays of at most this many bytes ride inside the header
_MAX_DIM = 2**62
TEXT_MAX = 100_000  # characters of a traceback's text
NAME_MAX = 512  # characters of an exception type's module, and of its qualname
ARGS_MAX = 32  # arguments of an exception rebuilt without pickle
PICKLE_MAX = 1 << 20  # bytes of a pickled exception
BATCH_MAX = 1024  # items in one message
BATCH_BYTES = 1 << 16  # bytes of data in one message (arrays, strings and bytes; an item with more travels alone)
BATCH_CELLS = 1 << 16  # values (items times keys) in one message: what a decoder builds is bounded by it


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
        # msgpack-numpy's form, with its shape as it is (0-d too) and its bytes (any dtype: datetimes too)
        return {b"nd": True, b"type": obj.dtype.str, b"kind": b"", b"shape": list(obj.shape), b"data": obj.tobytes()}
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
    codes = _CODES
    masked = False
    for key, value in item.items():
        if type(key) is not str:
            where = "an item" if position is None else f"item {position}"
            raise PescadorError(f"{where} has the key {key!r} of type {type(key).__name__}; keys must be str")
        if type(value) is np.ndarray:  # the common case: a plain array of a dtype already seen
            code = codes.get(value.dtype)
            if code is not None:
                inline = value.tobytes() if value.nbytes <= INLINE_MAX else _frame(value, copy, frames)
                fields.append([key, code, list(value.shape), inline])
                continue
        if type(value) is np.ndarray or isinstance(value, np.ndarray):
            if not _travels(value.dtype):
                raise _unsendable(key, value, position)
            if type(value) is np.memmap:
                value = np.asarray(value)
            if type(value) is np.ndarray:
                if len(codes) < 256:
                    codes[value.dtype] = value.dtype.str
                inline = value.tobytes() if value.nbytes <= INLINE_MAX else _frame(value, copy, frames)
                fields.append([key, value.dtype.str, list(value.shape), inline])
            elif type(value) is np.ma.MaskedArray or type(value) is np.ma.core.MaskedConstant:
                fields.append(_masked_field(key, value, copy, frames))
                masked = True
            else:
                raise _unsendable(key, value, position)
        else:
            if type(value) is not str and not isinstance(value, (int, float, bool, type(None))):
                bad = _bad_key(value)
                if bad is not None:
                    raise _unsendable(key, bad, position, True)
            fields.append([key, value])
    header = [ITEM, fields] if state is None else [ITEM_STATE, fields, state]
    frames[0] = head = _pack_header(header, item, position)
    if masked or len(head) + _FIELD_BYTES * len(fields) > _SMALL_ITEM:  # (else what it costs fits at once)
        inline = sum(len(field[3]) for field in fields if len(field) > 3 and type(field[3]) is bytes)
        bound = _QUICK * (len(head) - inline) + inline  # (an inline array's bytes cost one a byte)
        if masked or bound + _dict_cost(len(fields)) + len(fields) * _FIELD_MAX > _COUNTED_BASE:
            frames = _paid(frames, _item_objects(fields), bound)
    return frames


def _item_objects(fields: list) -> int:
    """What the decoder builds for an item's fields, beyond what unpacking its header builds."""
    cost = _dict_cost(len(fields))
    for field in fields:
        if len(field) > 2:
            cost += _field_cost(field[2], len(field) == 5)
            if len(field) == 5:
                cost += _fill_cost(np.dtype(field[1]), field[4][1])
    return cost


def _paid(frames: list, objects: int, bound: int) -> list:
    """``frames``, or where what decoding them builds (unpacking the header, then ``objects``) costs
    more than their bytes pay for, ``frames`` padded: the kind marked, and a last frame of zeros.

    ``bound``: a bound of what unpacking the header costs (at least what _unpack_cost counts), which
    spares counting its tokens when it leaves room enough.  (An inline array's bytes cost one a byte;
    every other byte of a header that encode_item packs, less than _QUICK.)
    """
    head = frames[0]
    room = _COUNTED_BASE + (MEMORY_FACTOR - 2) * sum(map(len, frames)) - objects  # (as decode counts)
    if bound <= room:
        return frames
    need = _unpack_cost(head) - room
    if need <= 0:
        return frames
    marked = bytes((head[0], head[1] + _PADDED)) + head[2:]  # (a fixarray of the kind and the rest)
    return [marked, *frames[1:], bytes(-(-need // MEMORY_FACTOR))]  # (padding is not data: it pays in full)


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


_CODES: dict = {}  # dtype -> its code on the wire, for the dtypes of plain arrays that travel
_PACKER_KEEP = 1 << 20  # a thread's Packer that packed a header larger than this is dropped
_PACKERS = threading.local()  # a msgpack Packer per thread (creating one per message costs more than packing)


def _packer() -> msgpack.Packer:
    try:
        return _PACKERS.packer
    except AttributeError:
        packer = _PACKERS.packer = msgpack.Packer(default=_pack_value, use_bin_type=True)
        return packer


def _pack_header(header: list, item: dict, position: int | None) -> bytes:
    try:
        packed = _packer().pack(header)
        if len(packed) > _PACKER_KEEP:  # (its buffer grew to this size and would stay so: let it go)
            del _PACKERS.packer
        return packed
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


# ----------------------------------------------------------------------------
# Several items in one message
# ----------------------------------------------------------------------------

SHARE_MAX = BATCH_BYTES // 4  # bytes of arrays in an item that may share a message
SHARE_COST = 1 << 16  # what unpacking the values of an item that may share a message costs, at most


def shared_layout(item: Any) -> tuple | None:
    """``(layout, nbytes, cost)`` of an item that may share a message with others of its layout, else None.

    An item may share when it is a dict with str keys whose arrays are plain
    ndarrays of 1 to 63 dimensions, of a dtype that travels, and whose other
    values are immutable scalars (str, bytes, int of 64 bits, float, bool,
    None, numpy numbers), holding at most ``SHARE_MAX`` bytes in all (its
    arrays' bytes, its strings' and bytes' lengths, ``_VALUE_COST`` bytes for
    each other value).  ``nbytes`` is that count; ``cost``, what unpacking its
    values from a message's header costs the receiver, at most (_unpack_cost's
    count).  A numpy scalar (but ``np.float64``, a float that travels as one)
    is in the layout as an array of no dimension: its key's values travel as
    a block of their dtype, as arrays do.
    Such an item is captured whole when it is put in a message (its arrays
    copied, its other values immutable), so a source may change or reuse
    what it yielded.  Any other item travels alone (where
    :func:`encode_item` sends it at once, or names what cannot travel).
    """
    if type(item) is not dict:
        return None
    parts = []
    nbytes = cost = 0
    for key, value in item.items():
        if type(key) is not str:
            return None
        kind = type(value)
        if kind is np.ndarray or (kind not in _PLAIN_KINDS and isinstance(value, _SCALAR)):
            dtype, shape = value.dtype, value.shape  # (a numpy scalar's shape is (): a row of a 1-d block)
            shares = _SHARES.get(dtype)
            if shares is None:
                shares = _travels(dtype)
                if len(_SHARES) < 256:
                    _SHARES[dtype] = shares
            if not shares or len(shape) >= 64 or not (shape or kind is not np.ndarray):  # (a block adds a dimension;
                return None  # numpy allows 64.  A 0-d array travels alone)
            nbytes += value.nbytes
            parts.append((key, dtype, shape))
        elif kind is str:
            nbytes += 4 * len(value) + _VALUE_COST  # (UTF-8: at most 4 bytes a character)
            cost += _SLOT + _str_cost(value)  # (and its place in the list)
            parts.append(key)
        elif kind is int:
            if not -(2**63) <= value < 2**64:
                return None
            nbytes += _VALUE_COST
            cost += _SLOT + _INT
            parts.append(key)
        elif kind in _PLAIN_KINDS:  # (float, bool, None, np.float64; bytes)
            nbytes += (len(value) if kind is bytes else 0) + _VALUE_COST
            cost += _SLOT + (_BIN + len(value) if kind is bytes else _INT)
            parts.append(key)
        else:
            return None
    if nbytes > SHARE_MAX or cost > SHARE_COST or not parts:
        return None
    return tuple(parts), nbytes, cost


_SHARES: dict = {}  # dtype -> whether its arrays travel
_VALUE_COST = 16  # bytes counted for a value that is not an array, beyond a string's or bytes' own
_PLAIN_KINDS = frozenset({str, int, bytes, float, bool, type(None), np.float64})  # (np.float64: a float, packed as one)


def _str_cost(text: str) -> int:
    """What _unpack_cost counts for ``text`` (at most: its UTF-8 bytes are counted as 4 a character
    unless it is ASCII)."""
    if text.isascii():
        return _STR + (5 * len(text) if len(text) < 32 else len(text))
    return _STR + 20 * len(text)


def _batch_header_cost(layout: tuple) -> int:
    """What _unpack_cost counts for a batch's header of this layout, at most, beyond its items' values
    and states: the header's lists, its count, and each key's field (with an inline block)."""
    cost = 4 * _LIST + _SLOT * (5 + len(layout)) + _INT
    for part in layout:
        if type(part) is tuple:
            key, dtype, shape = part
            cost += 2 * _LIST + 4 * _SLOT + _str_cost(key) + _str_cost(dtype.str) + len(shape) * (_SLOT + _INT)
            cost += _BIN + INLINE_MAX
        else:
            cost += _LIST + _SLOT + _str_cost(part)
    return cost


class _Batch:
    """Items of one layout captured for one message: each array key's arrays copied into one block."""

    def __init__(self, layout: tuple, nbytes: int, cost: int = 0) -> None:
        self.layout, self.item_bytes = layout, nbytes
        arrays = [part for part in layout if type(part) is tuple]
        dims = [len(shape) for _, _, shape in arrays]
        # What decoding the message costs the receiver (see decode), kept within what the message's data
        # pays for (_COUNTED_BASE beyond it): unpacking the header (its fixed part, and each item's values and
        # state: ``extra``), and the objects built (fixed, and ``each`` an item, less what its arrays pay).
        self.fixed = _batch_cost(0, len(layout), dims)
        self.base = _batch_header_cost(layout) + self.fixed
        paid = (MEMORY_FACTOR - 2) * sum(dtype.itemsize * int(np.prod(shape)) for _, dtype, shape in arrays)
        self.each = _batch_cost(1, len(layout), dims) - self.fixed - paid + _SLOT  # (and its state's place: nil or not)
        self.extra = 0
        self.capacity = max(1, min(BATCH_MAX, BATCH_BYTES // max(nbytes, 1), BATCH_CELLS // len(layout),
                                   (_COUNTED_BASE - self.base) // max(1, self.each + cost)))
        self.used = 0  # bytes of data held (items of one layout may differ in their strings' and bytes' lengths)
        self.blocks = {part[0]: np.empty((self.capacity, *part[2]), part[1]) for part in layout if type(part) is tuple}
        self.value_keys = [part for part in layout if type(part) is str]
        self.values: list = []
        self.states: list = []
        self.count = 0
        # (key, dtype, shape, block) per key, for ``take``; None when some values are not arrays
        self.arrays = None if self.value_keys or 0 in dims else [(p[0], p[1], p[2], self.blocks[p[0]]) for p in layout]

    def take(self, item: Any, state: str | None) -> bool:
        """Add ``item`` when it is a dict of plain arrays of exactly this batch's layout (checked and copied
        in one pass: the common case); else return False, having added nothing."""
        arrays = self.arrays
        if arrays is None or type(item) is not dict or len(item) != len(arrays):
            return False
        if state is not None and not self.fits(0, _str_cost(state)):
            return False
        n = self.count
        for (key, value), (want, dtype, shape, block) in zip(item.items(), arrays):
            if (key != want or key.__class__ is not str or value.__class__ is not np.ndarray or value.shape != shape
                    or (value.dtype is not dtype and value.dtype != dtype)):
                return False  # (rows written for earlier keys are overwritten by the next item)
            block[n] = value
        self.states.append(state)
        self.count = n + 1
        self.used += self.item_bytes  # (arrays only: every item of the layout holds as many bytes)
        if state is not None:
            self.extra += _str_cost(state)
        return True

    def fits(self, nbytes: int, cost: int) -> bool:
        """Whether an item of this layout holding ``nbytes`` bytes of data fits in the message, its values
        (and state) costing ``cost`` to unpack."""
        return (
            self.count < self.capacity and self.used + nbytes <= BATCH_BYTES
            and self.base + (self.count + 1) * self.each + self.extra + cost <= _COUNTED_BASE
        )

    def add(self, item: dict, state: str | None, nbytes: int, cost: int) -> None:
        """Add ``item``, which fits (its values and state costing ``cost``)."""
        n = self.count
        for key, block in self.blocks.items():
            block[n] = item[key]
        if self.value_keys:
            self.values += [item[key] for key in self.value_keys]
        self.states.append(state)
        self.count = n + 1
        self.used += nbytes
        self.extra += cost

    def full(self) -> bool:
        return self.count >= self.capacity

    def frames(self, position: int | None = None) -> list:
        fields: list = []
        frames: list = [None]
        for part in self.layout:
            if type(part) is tuple:
                key, _, shape = part
                block = self.blocks[key][: self.count]  # (this batch's own memory: sent without copying)
                fields.append([key, block.dtype.str, list(shape), _data(block, False, frames)])
            else:
                fields.append([part])
        states = self.states if any(state is not None for state in self.states) else None
        header = [BATCH, self.count, fields, self.values or None, states]
        try:
            frames[0] = msgpack.packb(header, default=_pack_value, use_bin_type=True, unicode_errors="surrogatepass")
        except (_Unsendable, TypeError, ValueError, OverflowError) as exc:  # (not expected: values are checked)
            raise PescadorError(
                f"{_where(position)}a message of {self.count} items could not be packed ({exc!r})"
            ) from None
        # (``fits`` kept what decoding costs within what the data pays for: never padded)
        objects = _batch_cost(self.count, len(self.layout), [len(part[2]) for part in self.layout if type(part) is tuple])
        bound = self.base - self.fixed + self.extra + (0 if states is None else _SLOT * self.count)
        return _paid(frames, objects, bound)  # (a bound of the header's cost)


def encode_batch(items: list, copy: bool = False, position: int | None = None, states: list | None = None,
                 shared: list | None = None) -> list:
    """The frames of one message holding several items of one layout (see :func:`shared_layout`).

    Each array key's arrays travel stacked, as one block; the other values
    travel in the header, one list per item.

    Parameters
    ----------
    items : list of dict
        At most ``BATCH_MAX`` items of one layout, ``BATCH_BYTES`` of data in all.
    copy : bool
        Unused: the blocks are copies already (for symmetry with :func:`encode_item`).
    position : int, optional
        The first item's position in its stream, for error messages.
    states : list of str, optional
        The sender's state after each item.
    shared : list, optional
        :func:`shared_layout` of each item, where the caller has it already.

    Raises
    ------
    PescadorError
        If the items cannot share a message.

    Examples
    --------
    >>> import numpy as np
    >>> frames = encode_batch([{"x": np.array([i]), "name": str(i)} for i in range(3)])
    >>> [(int(item["x"][0]), item["name"]) for item in decode(frames)[1][0]]
    [(0, '0'), (1, '1'), (2, '2')]
    """
    if shared is None:
        shared = [shared_layout(item) for item in items]
    if not items or shared[0] is None or any(s is None or s[0] != shared[0][0] for s in shared):
        raise PescadorError(f"{_where(position)}these items cannot share a message (see shared_layout)")
    batch = _Batch(shared[0][0], max(s[1] for s in shared), max(s[2] for s in shared))
    for n, item in enumerate(items):
        state = None if states is None else states[n]
        cost = shared[n][2] + (0 if state is None else _str_cost(state))
        if not batch.fits(shared[n][1], cost):
            raise PescadorError(f"{_where(position)}{len(items)} items do not fit in one message")
        batch.add(item, state, shared[n][1], cost)
    return batch.frames(position)


def encode_run(items: list, shared: list, start: int = 0) -> tuple:
    """``(frames, end)``: one message holding ``items[start:end]``, as many items from ``start`` on as
    share its layout and fit (at least one), where ``shared`` holds :func:`shared_layout` of each item
    (``shared[start]`` not None).

    Examples
    --------
    >>> import numpy as np
    >>> items = [{"x": np.array([i])} for i in range(2000)]
    >>> frames, end = encode_run(items, [shared_layout(item) for item in items])
    >>> end == len(decode(frames)[1][0]) < len(items)
    True
    """
    first = shared[start]
    batch = _Batch(*first)
    batch.add(items[start], None, first[1], first[2])  # (the first item, whatever it costs: padded if need be)
    end = start + 1
    while end < len(items):
        here = shared[end]
        if here is None or here[0] != first[0] or not batch.fits(here[1], here[2]):
            break
        batch.add(items[end], None, here[1], here[2])
        end += 1
    return batch.frames(), end


_FULL_POLL = 0.005  # seconds between the outbox thread's looks at a full queue while items are due


class Outbox:
    """A sender's policy: a slow source's items go at once, a fast source's share messages.

    An item that comes ``wait`` seconds or more after the one before goes at
    once, alone, when the queue has room.  Otherwise (the source is faster
    than that, or the queue is full because the receiver is slower) items of
    one layout (:func:`shared_layout`) are held and leave together, as one
    message, once the oldest has waited ``wait`` seconds (then the sender
    blocks until the queue takes them: flow control, as with one item per
    message), or sooner when they fill a message.  A thread sends items held
    while the source is slow to give the next one (blocked: at once after
    ``wait``; computing in Python without releasing the GIL: up to Python's
    switch interval later, 5 ms by default).  Items leave in the order they
    were put; at most ``BATCH_MAX`` items and ``BATCH_BYTES`` bytes of
    arrays share a message.

    Parameters
    ----------
    send : callable
        ``send(frames)``: sends a message, blocking until the queue takes it.
    writable : callable
        ``writable()``: whether the queue can take a message now.
    wait : float
        How long an item may be held, in seconds; 0: every item travels
        alone, in a message of its own.
    copy : bool
        As in :func:`encode_item` (for items that travel alone).

    Not thread-safe: one thread puts; ``send`` and ``writable`` are called
    with the outbox's lock held, from that thread or the outbox's own.
    """

    def __init__(self, send: Any, writable: Any, wait: float = 0.001, copy: bool = False) -> None:
        self._send, self._writable, self.wait, self.copy = send, writable, wait, copy
        self.position = 0  # the position of the next item to leave
        self.batch: _Batch | None = None  # the items held
        self.since = 0.0  # when the oldest held item was put
        self.last = -float("inf")  # when the latest item was put
        self.failed: BaseException | None = None  # an error of the outbox's thread, raised at the next put
        self.closed = False
        self.lock = threading.Lock()
        self.due = threading.Event()  # set while items are held
        self.closing = threading.Event()  # set by close: the thread's waits end at once
        self.thread: threading.Thread | None = None

    def put(self, item: Any, state: str | None = None) -> None:
        """Send ``item`` (with the sender's state after it, in a resumable run), or hold a copy a while."""
        if self.wait <= 0:  # (no item is ever held, and no thread runs)
            self._send(encode_item(item, self.copy, self.position, state))
            self.position += 1
            return
        with self.lock:
            if self.failed is not None:
                raise self.failed
            now = time.monotonic()
            batch = self.batch
            if batch is not None and batch.take(item, state):  # (another item of the held items' layout)
                self.last = now
                if batch.count >= batch.capacity or now - self.since >= self.wait:
                    self._flush()
                return
            shared = shared_layout(item)
            cost = 0 if shared is None else shared[2] + (0 if state is None else _str_cost(state))
            if self.batch is not None and (shared is None or shared[0] != self.batch.layout
                                           or not self.batch.fits(shared[1], cost)):
                self._flush()
            slow, self.last = now - self.last >= self.wait, now
            if shared is None or (self.batch is None and slow and self._writable()):  # alone, at once
                self._send(encode_item(item, self.copy, self.position, state))
                self.position += 1
                return
            if self.batch is None:
                self.batch, self.since = _Batch(*shared), now
                self._start_thread()
                self.due.set()
            self.batch.add(item, state, shared[1], cost)
            if self.batch.full() or now - self.since >= self.wait:
                self._flush()  # (blocks until there is room: flow control)

    def finish(self) -> None:
        """Send every item held (blocking until the queue takes them), and stop the outbox's thread."""
        try:
            with self.lock:
                if self.failed is not None:
                    raise self.failed
                if self.batch is not None:
                    self._flush()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the outbox's thread (items still held stay held: ``finish`` sends them)."""
        with self.lock:
            self.closed = True
            self.due.set()
            self.closing.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()

    def _flush(self) -> None:
        """Send the items held, as one message."""
        batch, self.batch = self.batch, None
        self.due.clear()
        self._send(batch.frames(self.position))
        self.position += batch.count

    def _start_thread(self) -> None:
        if self.thread is None:
            thread = threading.Thread(target=self._watch, name="pescador-outbox", daemon=True)
            thread.start()
            self.thread = thread  # (only once started: close joins it)

    def _watch(self) -> None:
        """The outbox's thread: sends items held ``wait`` seconds, once there is room."""
        if hasattr(signal, "pthread_sigmask"):  # (signals are the main thread's)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while True:
            self.due.wait()
            with self.lock:
                if self.closed:
                    return
                if self.batch is None:
                    self.due.clear()
                    continue
                left = self.since + self.wait - time.monotonic()
                try:
                    if left <= 0 and self._writable():
                        self._flush()
                        continue
                except BaseException as exc:  # (raised in the sending thread at its next put, or by finish)
                    self.failed = exc
                    return
            # until the oldest held item is due; past that, while the queue is full, look again soon
            self.closing.wait(left if left > 0 else min(self.wait, _FULL_POLL))


def send(sock: Any, frames: list, flags: int = 0) -> None:
    """Send one message's frames on a ZeroMQ socket: a header alone in one call (copied: the cheapest
    for small messages), else every frame without copying."""
    if len(frames) == 1:
        sock.send(frames[0], flags)
    else:
        sock.send_multipart(frames, flags, copy=False)


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
    >>> repr(error_from(report, "worker 0"))
    "KeyError('k')"
    """
    text = _bounded_text(str(text).encode("utf-8", "backslashreplace").decode("utf-8"))  # lone surrogates
    header = None
    if error is not None:
        try:  # (the type's names and the arguments were checked, but the exception is the user's: never fail here)
            info = [*_type_names(type(error)), _plain_args(error), _pickled(error) if pickled else None]
            header = msgpack.packb([ERROR, text, info], use_bin_type=True, unicode_errors="surrogatepass")
        except Exception:
            pass
    header = header or msgpack.packb([ERROR, text], use_bin_type=True)
    return _paid([header], _ERROR, _QUICK * len(header))


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
    """``error`` pickled, if it is an Exception that pickles, unpickles to its own type and is not too big.

    Its class goes by reference where the consumer has it under its name
    (its module, or ``__main__`` in a forked worker), else by value, as the
    recipe came (:mod:`pescador._pickling`): a class of ``__main__`` that the
    recipe brought by value (a notebook's, a script's) goes back by value,
    and cloudpickle makes it the consumer's own class again, so ``except
    BadRecord`` catches it there.
    """
    if not isinstance(error, Exception):
        return None
    try:
        try:
            data = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # (a class this process has by value only)
            data = cloudpickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > PICKLE_MAX or type(pickle.loads(data)) is not type(error):
            return None
    except Exception:  # arguments that do not pickle, or that do not fit the constructor
        return None
    return data


# ----------------------------------------------------------------------------
# What decoding a message may allocate: counted before it is allocated
# ----------------------------------------------------------------------------
#
# A message of B bytes (all its frames) makes the decoder allocate at most
# MEMORY_FACTOR * B + MEMORY_BASE bytes.  Of that, 2 * B (less any padding)
# is kept for copies of the message's data (an inline array's bytes, a
# misaligned frame, a batch's block and its rows); the rest pays for the
# Python objects: what msgpack builds from the header, then the arrays,
# dicts and lists of the items.  Each is counted, from the message alone,
# before it is built: the header by a bound of what msgpack may allocate
# for it (_QUICK per byte while its lists have at most _QUICK_LIST elements,
# else what _unpack_cost counts token by token), then each array and item
# (_field_cost, _batch_cost).  A sender whose items cost more than their
# bytes pay for (long lists of small values, many small arrays, long
# non-ASCII strings) pads its message with a last frame of zeros.

MEMORY_FACTOR = 4  # a message of B bytes makes the decoder allocate at most MEMORY_FACTOR * B + MEMORY_BASE bytes
MEMORY_BASE = 1 << 18
_COUNTED_BASE = MEMORY_BASE - (16 << 10)  # (what is counted; the rest: the decoder's own frames, a refusal's error)
_PADDED = 0x40  # added to a message's kind: its last frame is padding, which pays for what the header builds

# What unpacking a msgpack token may allocate, at most, in bytes (CPython 3.9 to 3.13, 64-bit), beyond
# its payload's bytes (a str's counted at 5 per byte unless ASCII: a str of UTF-8 bytes may become a
# UCS-4 str, decoded through a buffer of that size; a bin's at 1).  A list's element adds _SLOT (its
# pointer); a map's entry adds _ENTRY (a dict's table grows by doubling; its first, of five entries,
# adds _TABLE more), and a map whose first key is a bin, msgpack-numpy's form of a numpy value or
# complex number (see _unpack_hook), adds what the value is: _HOOK_ARRAY where the map has the five
# entries of an array (of at most 64 dimensions) or more, else _HOOK_VALUE.  (Measured with
# tracemalloc; the tests check decoding against the bound, with headers of every shape.)
_INT, _FLOAT, _STR, _BIN, _EXT, _LIST, _SLOT, _MAP, _ENTRY, _TABLE = 36, 24, 80, 40, 160, 56, 8, 96, 96, 64
_HOOK_VALUE, _HOOK_ARRAY = 256, 640 + 24 * 64
_QUICK = 192  # bytes msgpack may allocate per byte of a header whose lists have at most _QUICK_LIST elements
_QUICK_LIST = 64  # (3 bytes that claim a list of 64 elements allocate 568 bytes: the most a byte can cost)

# What building the items may allocate: an array (its object, its views, shape and strides, a
# bytearray's header, an entry in the decoder's caches of layouts and dtypes) plus _PER_DIM a
# dimension; a masked array's extra objects; a batch's row (viewed, then copied), plus _PER_DIM a
# dimension; an item's dict (_dict_cost).
_ARRAY, _PER_DIM, _MASKED, _ROW, _ERROR = 640, 32, 2048, 128, 4096
_FIELD_MAX = _ARRAY + _PER_DIM * 64  # an array field that is not masked


def _dict_cost(keys: int) -> int:
    """What a dict of this many keys, built one key at a time, allocates at most (its first table holds
    five keys; then it doubles)."""
    return 224 if keys <= 5 else 192 + 64 * keys


_DICT_COSTS = tuple(map(_dict_cost, range(64)))  # (a lookup costs less than a call: _item's)


# An item whose header's bytes, plus _FIELD_BYTES a field, are at most _SMALL_ITEM fits (encode_item counts no
# further)
_FIELD_BYTES = -(-(_FIELD_MAX + _dict_cost(1) - _dict_cost(0)) // _QUICK)
_SMALL_ITEM = (_COUNTED_BASE - _dict_cost(0)) // _QUICK


def _token_table() -> tuple:
    """Per first byte of a msgpack token whose size that byte tells: ``(bytes, cost, elements)``; else None."""
    table: list = [None] * 256
    for byte in (*range(0x80), 0xC0, 0xC2, 0xC3):  # positive fixint, nil, false, true (cached objects)
        table[byte] = (1, 0, 0)
    for byte in range(0xE0, 0x100):  # negative fixint
        table[byte] = (1, _INT, 0)
    for n in range(16):  # fixarray
        table[0x90 + n] = (1, _LIST + _SLOT * n, n)
    for n in range(32):  # fixstr
        table[0xA0 + n] = (1 + n, _STR + 5 * n, 0)
    table[0xCC] = (2, 0, 0)  # uint 8 (cached objects)
    for byte, width in ((0xCD, 2), (0xCE, 4), (0xCF, 8), (0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
        table[byte] = (1 + width, _INT, 0)
    table[0xCA], table[0xCB] = (5, _FLOAT, 0), (9, _FLOAT, 0)
    for byte, n in ((0xD4, 1), (0xD5, 2), (0xD6, 4), (0xD7, 8), (0xD8, 16)):  # fixext
        table[byte] = (2 + n, _EXT + n, 0)
    return tuple(table)


_FIXED = _token_table()
# The same, one tuple per column, for _unpack_cost's loop: a token's bytes (0: its length follows its first
# byte, see _SIZED), its cost, and the elements it opens less itself
_SIZES = tuple(0 if token is None else token[0] for token in _FIXED)
_COSTS = tuple(0 if token is None else token[1] for token in _FIXED)
_OPENS = tuple(0 if token is None else token[2] - 1 for token in _FIXED)
# first byte -> (bytes of its length, kind) for the tokens whose length follows their first byte
_SIZED = {0xD9: (1, "str"), 0xDA: (2, "str"), 0xDB: (4, "str"), 0xC4: (1, "bin"), 0xC5: (2, "bin"), 0xC6: (4, "bin"),
          0xC7: (1, "ext"), 0xC8: (2, "ext"), 0xC9: (4, "ext"), 0xDC: (2, "list"), 0xDD: (4, "list"),
          0xDE: (2, "map"), 0xDF: (4, "map"), **{0x80 + n: (0, "map") for n in range(16)}}
_BINS = (0xC4, 0xC5, 0xC6)


def _unpack_cost(data: Any, limit: float = float("inf")) -> int:
    """What unpacking ``data`` (one msgpack object) may allocate, at most, counted without unpacking it;
    the count stops once it passes ``limit``.

    Raises PescadorError where ``data`` is not one msgpack object (it ends inside one, or goes on
    after it, or holds the unused byte 0xc1).  Every list's and map's elements are tokens that
    follow: a length that the data does not back is found here, before msgpack allocates for it.
    """
    end = len(data)
    i = cost = 0
    pending = 1  # tokens still to read
    sizes, costs, opens = _SIZES, _COSTS, _OPENS
    try:
        while pending and cost <= limit:
            byte = data[i]  # (past the end: IndexError)
            size = sizes[byte]
            if size:
                i += size
                cost += costs[byte]
                pending += opens[byte]
                continue
            pending -= 1
            sized = _SIZED.get(byte)
            if sized is None:
                raise _malformed("the header is not valid msgpack (it holds the byte 0xc1)")
            width, kind = sized
            n = int.from_bytes(data[i + 1:i + 1 + width], "big") if width else byte & 0x0F
            i += 1 + width + (kind == "ext")  # (an extension's type follows its length)
            if kind == "str":
                cost += _STR + (n if bytes(data[i:i + n]).isascii() else 5 * n)
                i += n
            elif kind == "bin" or kind == "ext":
                cost += (_BIN if kind == "bin" else _EXT) + n
                i += n
            elif kind == "list":
                cost += _LIST + _SLOT * n
                pending += n
            else:
                cost += _MAP + _ENTRY * n + (_TABLE if n else 0)
                if n > 1 and i < end and data[i] in _BINS:  # (only those may become numpy values or complex numbers)
                    cost += _HOOK_ARRAY if n >= 5 else _HOOK_VALUE
                pending += 2 * n
    except IndexError:
        raise _malformed("the header is not valid msgpack (it ends inside an object)") from None
    if i != end and cost <= limit:
        raise _malformed(f"the header is not valid msgpack ({end - i} bytes after its end)")
    return cost


class _OverBudget(Exception):
    """What a message would have the decoder build costs more than the message pays for."""


# ----------------------------------------------------------------------------
# Decoding (in the consumer): every check before what it guards is allocated
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
        if type(buffer) is bytes and not copy:  # inline: one copy, into a private bytearray (aligned by malloc)
            array = np.ndarray(shape, dtype, bytearray(buffer))
            if array.flags.aligned:
                return array
        array = np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a 0 among enormous dimensions
        raise _malformed(f"an array of dtype {dtype.str} and shape {shape}: {exc}") from None
    if copy or type(buffer) is bytes or not array.flags.aligned:
        array = array.copy()
    return array


def _unpack_hook(obj: dict) -> Any:
    """msgpack-numpy's forms (a map whose first key is ``b"nd"``: a numpy value; ``b"complex"``: a complex
    number), after checks that keep pickle and bad sizes out; any other map as it is."""
    for first in obj:
        break
    else:
        return obj
    if first == b"complex":
        data = obj.get(b"data")
        if not isinstance(data, (str, bytes)) or len(data) > 128:
            raise _malformed("a complex number is not encoded as text")
        try:
            return complex(data.decode() if isinstance(data, bytes) else data)
        except ValueError:
            raise _malformed(f"{data!r} is not a complex number") from None
    if first != b"nd":
        return obj
    kind = obj.get(b"kind", b"")
    if kind != b"" or not isinstance(obj.get(b"type"), str) or not isinstance(obj.get(b"data"), bytes):
        raise _malformed("a numpy value of a kind that does not travel (object, structured or unknown)")
    dtype = _dtype(obj[b"type"])
    if obj[b"nd"] is True and len(obj) == 5:  # (nd, type, kind, shape, data)
        return _array(obj[b"data"], dtype, _shape(obj.get(b"shape")), False)  # (over a copy of its own)
    if obj[b"nd"] is False:
        if len(obj[b"data"]) != dtype.itemsize:
            raise _malformed("a numpy scalar whose bytes do not match its dtype")
        return np.frombuffer(obj[b"data"], dtype=dtype)[0]
    raise _malformed("a numpy value with a bad marker")


# How a header is unpacked (decode's first try spells these out: keywords cost less than a dict there)
_UNPACK = {"raw": False, "object_hook": _unpack_hook, "strict_map_key": False, "unicode_errors": "surrogatepass"}


def _frame_buffer(frame: Any) -> Any:
    buffer = getattr(frame, "buffer", None)
    return buffer if buffer is not None else memoryview(frame)


def decode(frames: list, copy: bool = False) -> tuple:
    """Decode one message: ``(ITEM, item)``, ``(ITEM_STATE, (item, state))``, ``(BATCH, (items, states))``,
    ``(END, None)`` or ``(ERROR, report)``.

    A batch's ``states`` is None or one state per item.
    An error's ``report`` is an :class:`ErrorReport`; nothing is unpickled.
    Decoding a message of B bytes (all its frames) allocates at most
    ``MEMORY_FACTOR * B + MEMORY_BASE`` bytes: what the message would
    have built is counted, from the message alone, before it is built.

    Parameters
    ----------
    frames : list of bytes or zmq.Frame
        The message, as received (without the sender's identity frame).
    copy : bool
        If True, arrays are copied out of the frames (and so are writeable).

    Raises
    ------
    PescadorError
        If the message is malformed in any way, or would cost more to
        decode than that bound.
    """
    if not frames:
        raise _malformed("an empty message")
    first = frames[0]
    count = len(frames)  # (the bytes of all frames: zmq.Frame and a bytes view say theirs)
    size = len(first) if count == 1 else len(first) + len(frames[1]) if count == 2 else sum(map(len, frames))
    budget = _COUNTED_BASE + MEMORY_FACTOR * size
    head = first if type(first) is bytes else _frame_buffer(first)
    spent, header = _QUICK * len(head), None
    if spent <= budget:  # (the common case: a small header, unpacked at once)
        try:
            if len(head) <= _QUICK_LIST:  # (msgpack's own limit on a list's length: the header's bytes)
                header = msgpack.unpackb(head, raw=False, object_hook=_unpack_hook, strict_map_key=False,
                                         unicode_errors="surrogatepass")
            else:
                header = msgpack.unpackb(head, raw=False, object_hook=_unpack_hook, strict_map_key=False,
                                         unicode_errors="surrogatepass", max_array_len=_QUICK_LIST)
        except PescadorError:
            raise
        except Exception:  # (a longer list, or not msgpack: the count of its tokens says which)
            pass
    exact = header is None
    if exact:
        header, spent = _unpack_counted(head, budget)
    if not isinstance(header, list) or not header or not isinstance(header[0], int):
        raise _malformed("the header is not a list starting with a message kind")
    kind, data = header[0], size  # (data: bytes that may be copied)
    if kind >= _PADDED:  # (its last frame pays for what the header builds; it is not data)
        if len(frames) < 2:
            raise _malformed("a padded message without its padding")
        kind -= _PADDED
        data -= len(frames[-1])
        frames = frames[:-1]
    while True:
        try:
            if kind == ITEM and len(header) == 2 and type(header[1]) is list:  # (the common case, at once)
                return ITEM, _item(header[1], frames, copy, budget - 2 * data - spent)
            return _message(kind, header, frames, copy, budget - 2 * data - spent)
        except _OverBudget as over:
            if exact:
                raise _malformed(f"{over} (at most {budget} bytes for a message of {size} bytes)") from None
        spent, exact = _unpack_cost(head), True  # (the quick bound of the header's cost was loose)


def _unpack_counted(head: Any, budget: int) -> tuple:
    """``(header, spent)``: the header unpacked once the count of its tokens says that unpacking it
    allocates ``spent`` bytes, at most ``budget``."""
    spent = _unpack_cost(head, budget)
    if spent > budget:
        raise _malformed(
            f"a header of {len(head)} bytes that would take more than {budget} bytes to unpack (at most "
            f"{budget} bytes for a message of {(budget - _COUNTED_BASE) // MEMORY_FACTOR} bytes)"
        )
    try:
        return msgpack.unpackb(head, **_UNPACK), spent
    except PescadorError:
        raise
    except Exception as exc:
        raise _malformed(f"the header is not valid msgpack ({type(exc).__name__}: {exc})") from None


def _message(kind: int, header: list, frames: list, copy: bool, room: int) -> tuple:
    """The decoded message of a header already unpacked; what it builds costs at most ``room``."""
    if kind == ITEM:
        if len(header) != 2 or not isinstance(header[1], list):
            raise _malformed("an item header without a list of fields")
        return ITEM, _item(header[1], frames, copy, room)
    if kind == ITEM_STATE:
        if len(header) != 3 or not isinstance(header[1], list) or not isinstance(header[2], str):
            raise _malformed("an item header without a list of fields and a state")
        return ITEM_STATE, (_item(header[1], frames, copy, room), header[2])
    if kind == BATCH:
        return BATCH, _batch(header, frames, room)
    if len(frames) != 1:
        raise _malformed(f"a control message of kind {kind} with {len(frames) - 1} extra frames")
    if kind == END and len(header) == 1:
        return END, None
    if kind == ERROR and len(header) in (2, 3) and isinstance(header[1], str):
        if room < _ERROR:
            raise _OverBudget("an error report")
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


def error_from(report: ErrorReport, where: str, when: str = "") -> Exception:
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

    The report comes from one of the consumer's own workers (a
    :func:`pescador.zmq_offload` process or a :func:`pescador.ray_offload`
    actor: the consumer lets no other peer in), so its pickled exception is
    unpickled; without one, only built-in exception types are rebuilt, from
    their plain arguments.
    """
    kind = report.type_name
    shown = (report.qualname if report.module == "builtins" else kind) or "an exception"
    message = f"{where} raised {shown}{when}; its traceback:\n{report.text.rstrip()}"
    cause = WorkerError(message, report.text, kind)
    error = _unpickled(report.pickled) if report.pickled is not None else None
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
    """A worker's pickled exception (see :func:`_pickled`)."""
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


def _item(fields: list, frames: list, copy: bool, room: int) -> dict:
    """The item of an ITEM message's fields; what it builds costs at most ``room`` (else _OverBudget)."""
    keys = len(fields)
    room -= _DICT_COSTS[keys] if keys < 64 else _dict_cost(keys)
    if room < 0:
        raise _OverBudget(f"an item of {keys} keys")
    item = {}
    frame = 1
    small = _SMALL
    for field in fields:
        if type(field) is list and len(field) == 4 and type(field[3]) is bytes and type(field[2]) is list:
            known = None  # a small array, inline: of a layout seen before?
            for dim in field[2]:
                if type(dim) is not int:
                    break
            else:
                try:
                    known = small.get((field[1], *field[2]))
                except TypeError:  # (a code that is not hashable: the checks below say what is wrong)
                    pass
            if known is not None and type(field[0]) is str and len(field[3]) == known[2]:
                room -= known[3]
                if room < 0:
                    raise _OverBudget(f"the arrays of an item of {len(fields)} keys")
                item[field[0]] = np.ndarray(known[1], known[0], bytearray(field[3]))  # (its own, aligned memory)
                continue
        if not isinstance(field, list) or len(field) not in (2, 4, 5) or not isinstance(field[0], str):
            raise _malformed("a field is not [key, value], [key, dtype, shape, data] or a masked array's")
        if len(field) == 2:
            item[field[0]] = field[1]
            continue
        key, code, shape, inline = field[:4]
        room -= _field_cost(shape, len(field) == 5)
        if room < 0:
            raise _OverBudget(f"the arrays of an item of {len(fields)} keys")
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
            room -= _fill_cost(dtype, masked[1])
            if room < 0:
                raise _OverBudget(f"the fill value of key {key!r}, of dtype {dtype.str}")
            data = _array(buffer, dtype, shape, copy)
            mask = np.ma.nomask if mask_buffer is None else _array(mask_buffer, _BOOL, shape, copy)
            item[key] = _masked(key, data, mask, masked[1], masked[2])
        else:
            item[key] = array = _array(buffer, dtype, shape, copy)
            if type(buffer) is bytes and dtype.alignment <= _BYTEARRAY_ALIGNMENT and len(small) < 1024:
                small[(code, *shape)] = (dtype, shape, array.nbytes, _field_cost(field[2], False))
    if frame != len(frames):
        raise _malformed(f"{len(frames) - frame} frames more than the header describes")
    return item


def _field_cost(shape: Any, masked: bool) -> int:
    """What building an item's array of this shape (as sent) allocates beyond its data, at most."""
    array = _ARRAY + _PER_DIM * (len(shape) if type(shape) is list else 0)
    return 2 * array + _MASKED if masked else array  # (a masked array's data, mask and the masked array)


def _fill_cost(dtype: np.dtype, fill: Any) -> int:
    """A masked array's fill value becomes a value of its dtype (whose items may be far larger than the
    message: an empty array of dtype S1000000000)."""
    return 0 if fill is None else 2 * dtype.itemsize


# The inline arrays' layouts already checked, by (dtype code, *shape): (dtype, shape, bytes, cost).
# The next array of such a layout is built at once over a copy of its bytes; a bytearray's memory
# comes from malloc, aligned for any dtype of at most this alignment.
_SMALL: dict = {}
_BYTEARRAY_ALIGNMENT = 8


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


def _batch(header: list, frames: list, room: int) -> tuple:
    """``(items, states)`` of a BATCH message: each array key's block viewed once, its rows copied out.

    Every field, value and state is checked, and what the items will cost
    counted against ``room``, before any row is built (each block is viewed
    once what its rows cost is counted).  Each row
    is a copy of its own: an item a consumer keeps holds its own few bytes,
    not the whole message's block.
    """
    if len(header) != 5:
        raise _malformed("a batch header is not [kind, count, fields, values, states]")
    count, fields, values, states = header[1:]
    if type(count) is not int or not 1 <= count <= BATCH_MAX:
        raise _malformed(f"a batch of {count!r} items (expected an int from 1 to {BATCH_MAX})")
    if not isinstance(fields, list) or not fields:
        raise _malformed("a batch header without a list of fields")
    if count * len(fields) > BATCH_CELLS:
        raise _malformed(f"a batch of {count} items of {len(fields)} keys (at most {BATCH_CELLS} values in all)")
    room -= _batch_cost(count, len(fields), ())
    keys, columns, frame, others = [], [], 1, 0
    for field in fields:
        if not isinstance(field, list) or len(field) not in (1, 4) or not isinstance(field[0], str):
            raise _malformed("a batch's field is not [key] or [key, dtype, shape, data]")
        keys.append(field[0])
        if len(field) == 1:
            columns.append(others)
            others += 1
            continue
        key, code, shape, inline = field
        room -= _column_cost(count, len(shape) if type(shape) is list else 0)
        if room < 0:
            break
        dtype, shape = _dtype(code), _shape(shape)
        if len(shape) >= 64:  # (none: numpy scalars, the rows of a 1-d block)
            raise _malformed(f"the arrays of key {key!r} in a batch have {len(shape)} dimensions (at most 63)")
        buffer, frame = _field_buffer(key, inline, frames, frame)
        columns.append(_array(buffer, dtype, (count, *shape), False))  # (a view of its frame, or of a copy)
    if room < 0:
        raise _OverBudget(f"a batch of {count} items of {len(fields)} keys")
    if frame != len(frames):
        raise _malformed(f"{len(frames) - frame} frames more than the header describes")
    if others:
        if not isinstance(values, list) or len(values) != count * others:
            raise _malformed(f"a batch's values are not a list of {count * others} values ({others} an item)")
    elif values is not None:
        raise _malformed("a batch of arrays only, with values")
    if states is not None and (
        not isinstance(states, list) or len(states) != count
        or not all(state is None or type(state) is str for state in states)
    ):
        raise _malformed(f"a batch's states are not {count} strings or nils")
    columns = [
        values[c::others] if type(c) is int else [row.copy() for row in c]
        for c in columns
    ]
    return [dict(zip(keys, row)) for row in zip(*columns)], states


def _batch_cost(count: int, keys: int, dims: Any) -> int:
    """What decoding a batch builds beyond its data, at most: ``count`` items of ``keys`` keys, one array
    key per number of dimensions in ``dims`` (a row's)."""
    items = count * (_dict_cost(keys) + 8 * (keys + 1)) + (keys + 1) * _LIST  # (the dicts; a list per key, of items)
    return items + sum(_column_cost(count, ndim) for ndim in dims)


def _column_cost(count: int, ndim: int) -> int:
    """An array key's block, viewed once, and its ``count`` rows, each viewed and copied."""
    return _ARRAY + _PER_DIM * (ndim + 1) + count * (_ROW + _PER_DIM * ndim)
