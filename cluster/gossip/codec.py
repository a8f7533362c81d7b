"""
Go structs as msgpack maps, declared once (memberlist's C{util.go}
C{encode}/C{decode}, for every struct we exchange with Go peers).

A struct is an C{@attrs.frozen} class whose fields say, in their
metadata, which Go field they are and how it travels::

    @attrs.frozen
    class Nack:
        seq_no: int = attrs.field(metadata=go("SeqNo", Kind.UINT32))

L{encode} writes the map the way go-msgpack does (C{shared/WIRE.md}
section 2): keys are the Go names in ascending byte order, C{string} and
C{[]byte} both in the legacy raw family, C{omitempty} fields left out when
zero.  L{decode} reads one back the way Go does: unknown keys are ignored,
a missing key or nil leaves the Go zero value, and a value of the wrong
type or out of range raises L{DecodeError} naming the Go field.

The msgpack helpers every module shares live here too: L{pack},
L{unpack} and L{stream_unpacker}.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from enum import Enum, IntEnum
from typing import TypeAlias, TypeVar

import attrs
import msgpack
from attrs.exceptions import NotAnAttrsClassError

__all__ = [
    "DecodeError",
    "GoField",
    "Kind",
    "OutOfRangeError",
    "UnknownValueError",
    "WireValue",
    "decode",
    "decode_as",
    "encode",
    "go",
    "pack",
    "stream_unpacker",
    "text_of",
    "to_map",
    "unpack",
]

WireValue: TypeAlias = (
    "str | bytes | int | bool | list[WireValue] | dict[str, WireValue] | None"
)
"""
What L{pack} takes: plain values, lists and maps with C{str} keys.
"""

_Struct = TypeVar("_Struct", bound=attrs.AttrsInstance)

# One packer for the whole package: msgpack's Packer is reusable and much
# cheaper than building one per call.  use_bin_type=False gives the legacy
# raw family with no str8, which is exactly what go-msgpack 0.5 emits.
_packer = msgpack.Packer(use_bin_type=False)

# msgpack derives its container limits from the buffer size: a fixed floor
# keeps a valid header from looking oversized while the rest is unread.
_STREAM_BUFFER = 64 * 1024 * 1024


class DecodeError(ValueError):
    """
    A msgpack value that is not the struct it should be.  Each protocol
    module turns it into its own error (C{WireError}, C{MessageError}).
    """


class OutOfRangeError(DecodeError):
    """
    An integer over its field's maximum (or negative).
    """


class UnknownValueError(DecodeError):
    """
    A well-formed struct whose enum field holds a number the enum does not
    know (a state from a newer peer, say).
    """


class Kind(Enum):
    """
    The Go type of a field, as far as the wire is concerned.
    """

    STR = "string"
    BYTES = "[]byte"
    # A []byte whose nil we keep as None, because it is re-sent as nil.
    OPTIONAL_BYTES = "[]byte (nil kept)"
    BOOL = "bool"
    UINT16 = "uint16"
    UINT32 = "uint32"
    UINT64 = "uint64"
    # A Go int: never negative in practice, bounded by the field's maximum.
    INT = "int"
    # A slice.  Items are encoded as given (structs become maps) and
    # decoded as plain msgpack values for the owner to decode one by one.
    ARRAY = "slice"


_UINT_MAXIMUM = {
    Kind.UINT16: 0xFFFF,
    Kind.UINT32: 0xFFFFFFFF,
    Kind.UINT64: (1 << 64) - 1,
}
_INTEGERS = frozenset((*_UINT_MAXIMUM, Kind.INT))
_ZERO: dict[Kind, object] = {
    Kind.STR: "",
    Kind.BYTES: b"",
    Kind.OPTIONAL_BYTES: None,
    Kind.BOOL: False,
    Kind.UINT16: 0,
    Kind.UINT32: 0,
    Kind.UINT64: 0,
    Kind.INT: 0,
    Kind.ARRAY: (),
}
_METADATA_KEY = "go"


@attrs.frozen
class GoField:
    """
    How one attribute travels: what L{go} puts in C{attrs.field(metadata=...)}.

    @ivar name: the Go field name, which is the map key.
    @ivar kind: the Go type.
    @ivar omitempty: C{codec:",omitempty"}: left out when zero.
    @ivar maximum: the largest integer accepted (integer kinds only).
    @ivar enum: for an integer field, the Python enum its numbers map to.
    """

    name: str
    kind: Kind
    omitempty: bool = False
    maximum: int = 0
    enum: type[IntEnum] | None = None


def go(
    name: str,
    kind: Kind,
    *,
    omitempty: bool = False,
    maximum: int | None = None,
    enum: type[IntEnum] | None = None,
) -> Mapping[str, GoField]:
    """
    The C{attrs.field} metadata declaring a struct field.

    @param name: the Go field name.
    @param kind: the Go type.
    @param omitempty: leave the field out of the map when it is zero.
    @param maximum: the largest value accepted; required for L{Kind.INT},
        and defaults to the type's range for the unsigned kinds.
    @param enum: decode the number as this enum (integer kinds only); a
        number it does not know raises L{UnknownValueError}.
    @raise ValueError: for a declaration that makes no sense.
    """
    if kind in _INTEGERS:
        limit = _UINT_MAXIMUM.get(kind) if maximum is None else maximum
        if limit is None:
            raise ValueError(f"{name}: a Go int needs a maximum")
    elif maximum is not None or enum is not None:
        raise ValueError(f"{name}: only integer fields take a maximum or an enum")
    else:
        limit = 0
    return {_METADATA_KEY: GoField(name, kind, omitempty, limit, enum)}


# --- decoding one field (raw=True: str and bin values are both bytes) ---


def text_of(name: str, value: object) -> str:
    """
    A Go string read raw (C{raw=True}: bytes), as text.

    @raise DecodeError: naming C{name}, when C{value} is no UTF-8 string.
    """
    if not isinstance(value, bytes):
        raise DecodeError(f"{name} must be a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{name} is not UTF-8") from None


def _read_str(field: GoField, value: object) -> str:
    return text_of(field.name, value)


def _read_bytes(field: GoField, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    # go-msgpack also accepts an array of small ints for a []byte.
    if isinstance(value, list) and all(
        isinstance(item, int) and 0 <= item <= 255 for item in value
    ):
        return bytes(value)
    raise DecodeError(f"{field.name} must be bytes")


def _read_bool(field: GoField, value: object) -> bool:
    if not isinstance(value, bool):
        raise DecodeError(f"{field.name} must be a boolean")
    return value


def _read_int(field: GoField, value: object) -> int:
    # Every msgpack integer form serves every integer field, if the value fits.
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{field.name} must be an integer")
    if not 0 <= value <= field.maximum:
        raise OutOfRangeError(f"{field.name} out of range: {value}")
    return value


def _read_array(field: GoField, value: object) -> tuple[object, ...]:
    if not isinstance(value, list):
        raise DecodeError(f"{field.name} must be an array")
    return tuple(value)


_READERS: dict[Kind, Callable[[GoField, object], object]] = {
    Kind.STR: _read_str,
    Kind.BYTES: _read_bytes,
    Kind.OPTIONAL_BYTES: _read_bytes,
    Kind.BOOL: _read_bool,
    Kind.UINT16: _read_int,
    Kind.UINT32: _read_int,
    Kind.UINT64: _read_int,
    Kind.INT: _read_int,
    Kind.ARRAY: _read_array,
}


# --- encoding one field ---


def _wire_value(value: object) -> WireValue:
    if isinstance(value, IntEnum):
        return int(value)
    if value is None or isinstance(value, (str, bytes, int)):  # bool is an int
        return value
    struct = type(value)
    if not attrs.has(struct):
        raise NotAnAttrsClassError(f"{struct!r} is not an attrs-decorated class.")
    return _map_of(value, struct)  # a nested struct


def _wire_array(value: object) -> WireValue:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"a slice must be a list or tuple, not {value!r}")
    return [_wire_value(item) for item in value]


@attrs.frozen
class _Slot:
    """
    One field of one struct, with what reads and writes it worked out once.
    """

    attribute: str
    key: bytes  # the Go name as a decoded map key
    field: GoField
    zero: object  # what a missing key or nil decodes to
    read: Callable[[GoField, object], object]
    # What turns the value into a packable one, when it is not already.
    write: Callable[[object], WireValue] | None


def _slot(attribute: str, field: GoField) -> _Slot:
    if field.kind is Kind.ARRAY:
        write: Callable[[object], WireValue] | None = _wire_array
    elif field.enum is not None:
        write = _wire_value
    else:
        write = None
    return _Slot(
        attribute,
        field.name.encode(),
        field,
        _ZERO[field.kind],
        _READERS[field.kind],
        write,
    )


@functools.cache
def _slots(cls: type[attrs.AttrsInstance]) -> tuple[_Slot, ...]:
    # Sorted by Go name, the order go-msgpack writes; attributes without
    # a GoField (local bookkeeping) do not travel.
    slots = [
        _slot(a.name, spec)
        for a in attrs.fields(cls)
        if isinstance(spec := a.metadata.get(_METADATA_KEY), GoField)
    ]
    if not slots:
        raise TypeError(f"{cls.__name__} declares no Go fields")
    return tuple(sorted(slots, key=lambda slot: slot.key))


@functools.cache
def _enum_slots(cls: type[attrs.AttrsInstance]) -> tuple[_Slot, ...]:
    return tuple(slot for slot in _slots(cls) if slot.field.enum is not None)


# --- whole structs ---


def to_map(struct: attrs.AttrsInstance) -> dict[str, WireValue]:
    """
    The map go-msgpack makes of C{struct}: Go names in sorted order, zero
    C{omitempty} fields left out, nested structs as maps.
    """
    return _map_of(struct, type(struct))


def _map_of(struct: object, cls: type[attrs.AttrsInstance]) -> dict[str, WireValue]:
    fields: dict[str, WireValue] = {}
    for slot in _slots(cls):
        value = getattr(struct, slot.attribute)
        if slot.field.omitempty and not value:
            continue
        fields[slot.field.name] = value if slot.write is None else slot.write(value)
    return fields


def encode(struct: attrs.AttrsInstance) -> bytes:
    """
    The msgpack bytes of C{struct}, identical to what a Go peer sends.
    """
    return pack(to_map(struct))


def decode(cls: type[_Struct], body: object) -> _Struct:
    """
    Build a C{cls} from a body decoded with L{unpack} (or one item of a
    L{Kind.ARRAY}), checking every field as Go would.

    @raise DecodeError: when C{body} is not a map, or a field has the wrong
        type or is out of range.
    @raise UnknownValueError: when the struct is otherwise valid but an
        enum field holds an unknown number.
    """
    if not isinstance(body, dict):
        raise DecodeError(f"{cls.__name__} must be a map")
    slots = _slots(cls)
    values: dict[str, object] = {}
    for slot in slots:
        value = body.get(slot.key)
        # A missing key and nil both leave the Go zero value.
        values[slot.attribute] = (
            slot.zero if value is None else slot.read(slot.field, value)
        )
    # Only once every field is valid, so that a bad message is never
    # mistaken for a good one from a newer peer.
    for slot in _enum_slots(cls):
        number = values[slot.attribute]
        # Always true (an enum slot is an integer field): it tells mypy so.
        if slot.field.enum is not None and isinstance(number, int):
            try:
                values[slot.attribute] = slot.field.enum(number)
            except ValueError:
                raise UnknownValueError(
                    f"{slot.field.name}: unknown value {number}"
                ) from None
    return cls(**values)


def decode_as(
    cls: type[_Struct],
    body: object,
    errors: Sequence[tuple[type[DecodeError], Callable[[str], Exception]]],
) -> _Struct:
    """
    L{decode}, with its errors raised as the caller's own: the first pair
    of C{errors} whose codec error class matches gives the exception
    raised, with the same message (and no chained cause).

    @raise DecodeError: one no pair matches.
    """
    try:
        return decode(cls, body)
    except DecodeError as e:
        for codec_error, raise_as in errors:
            if isinstance(e, codec_error):
                raise raise_as(str(e)) from None
        raise


def pack(value: WireValue) -> bytes:
    """
    Pack C{value} in the legacy raw string family (no bin, no str8).
    Maps keep their insertion order: sort them if Go would.
    """
    packed: bytes = _packer.pack(value)
    return packed


def unpack(data: bytes) -> object:
    """
    Decode one msgpack value as Go does: strings stay C{bytes} (they may be
    a C{[]byte}), and anything after the first value is ignored.

    @raise DecodeError: when C{data} does not start with a msgpack value.
    """
    try:
        return msgpack.unpackb(data, raw=True, strict_map_key=False)
    except msgpack.ExtraData as extra:
        return extra.unpacked
    except Exception as e:  # msgpack raises many unrelated types
        raise DecodeError(f"bad msgpack: {e}") from None


def stream_unpacker(data: bytes = b"") -> msgpack.Unpacker:
    """
    An unpacker over C{data} for reading several values in turn, with
    C{tell()} giving the offset reached (a push/pull is values followed by
    raw bytes).  It raises C{msgpack.OutOfData} when C{data} stops short;
    more bytes can be C{feed()}-ed and reading resumes where it stopped.
    """
    unpacker = msgpack.Unpacker(
        raw=True,
        strict_map_key=False,
        max_buffer_size=max(_STREAM_BUFFER, len(data)),
    )
    unpacker.feed(data)
    return unpacker
