"""
Serf's messages, byte for byte (hashicorp/serf C{serf/messages.go}, with
the structs C{query.go}, C{internal_query.go}, C{keymanager.go} and
C{serf.go} put inside them; C{shared/WIRE.md} section 8).

Each message is one L{MessageType} byte and the msgpack of one Go struct,
sent as a memberlist user message; the push/pull user state is such a
message too (L{PushPull}).  Serf encodes with the same go-msgpack handle as
memberlist (C{encodeMessage}: a zero C{MsgpackHandle}, so C{string} and
C{[]byte} are both legacy raw strings, struct fields are map keys in
ascending order, C{nil} slices and pointers are C{nil}), and every struct
below is declared once, field by field, as L{cluster.gossip.codec} declares
memberlist's.  Two messages are not a single struct:

  - a relay (L{Relay}) is the type byte, a msgpack header naming where to
    forward, then another whole message as raw bytes;
  - a conflict response (L{ConflictResponse}) is Serf's C{Member} or nil.

Three of them travel inside a query or a query response rather than on
their own: L{KeyRequest} is the payload of a key query, L{KeyResponse}
the payload of the answer to one, L{ConflictResponse} the payload of the
answer to C{_serf_conflict}.  A query's filters are raw bytes too, each a
L{FilterType} byte and msgpack (L{encode_filter}, L{decode_filter}).

Decoding reads what Go's decoder reads: unknown keys are ignored, a
missing key or nil is the Go zero value, bytes after the body are ignored.
Anything else raises L{MessageError}, and nothing else, whatever the bytes.
Two checks go beyond Go's decoder, because nothing could be done with the
message: a query's reply address and a relay's destination must be an IP
(4 or 16 bytes), and a relay must carry a message.

The leave and join intents are declared in L{cluster.gossip.serf}, which a
plain memberlist node uses to leave a Serf cluster cleanly; they are the
same classes here.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar, cast

import attrs
import msgpack

from cluster.gossip.codec import (
    DecodeError,
    Kind,
    WireValue,
    decode,
    go,
    pack,
    text_of,
    to_map,
    unpack,
)
from cluster.gossip.serf import JoinIntent, LeaveIntent

__all__ = [
    "MALFORMED",
    "UNKNOWN_TYPE",
    "BufferedEvent",
    "BufferedEvents",
    "ConflictResponse",
    "FilterType",
    "JoinIntent",
    "KeyRequest",
    "KeyResponse",
    "LeaveIntent",
    "MemberStatus",
    "MessageError",
    "MessageType",
    "NodeFilter",
    "PushPull",
    "Query",
    "QueryFilter",
    "QueryFlag",
    "QueryResponse",
    "Relay",
    "SerfMember",
    "SerfMessage",
    "TagFilter",
    "UDPAddress",
    "UserEvent",
    "decode_filter",
    "decode_message",
    "decode_typed",
    "encode_filter",
    "encode_message",
]


class MessageType(enum.IntEnum):
    """
    The first byte of every Serf message (messages.go C{messageType}).
    """

    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


class QueryFlag(enum.IntFlag):
    """
    The bits of a query's and a query response's C{Flags}.
    """

    # Every node that passes the filters acknowledges; on a response: this
    # is that acknowledgement.
    ACK = 1
    # The receiver must not gossip the query on (it was sent to it alone).
    NO_BROADCAST = 2


class FilterType(enum.IntEnum):
    """
    The first byte of a query filter (messages.go C{filterType}).
    """

    NODE = 0
    TAG = 1


class MemberStatus(enum.IntEnum):
    """
    Serf's C{MemberStatus}, as a conflict response carries it.
    """

    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4


UNKNOWN_TYPE = "type"
"""
L{MessageError.reason} for a type byte Serf does not define (a message or a
filter), or a message of another type than the one expected.
"""

MALFORMED = "decode"
"""
L{MessageError.reason} for anything else that is not a valid message.
"""


class MessageError(ValueError):
    """
    Bytes that are not a valid Serf message (or query filter).  C{reason}
    is L{UNKNOWN_TYPE} or L{MALFORMED}, the words
    L{cluster.gossip.counters.DropReason} counts drops by.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- fields the codec has no kind for ---
#
# cluster.gossip.codec declares scalar fields (strings, bytes, integers,
# booleans).  Serf's structs also hold maps, typed slices, nested structs
# and a signed time.Duration: each such field carries a _Shape instead of a
# GoField, and _to_map/_from_map below add them to what the codec does.

_SHAPE = "serf"
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT8_MAX = 0xFF
_UINT64_MAX = (1 << 64) - 1
_IP_LENGTHS = (4, 16)

_Reader: TypeAlias = Callable[[str, object], Any]
_Struct = TypeVar("_Struct", bound=attrs.AttrsInstance)


@attrs.frozen
class _Shape:
    """
    How a field the codec cannot declare travels.

    @ivar name: the Go field name.
    @ivar read: turns the decoded msgpack value (never nil: nil is the
        attribute's default, Go's zero) into the attribute's value, or
        raises L{DecodeError} naming the field.
    @ivar write: turns the attribute's value into a packable one.
    @ivar nil_when_empty: an empty value goes out as nil, as Go sends a nil
        slice (one that Serf leaves unset when it has nothing to put in it).
    """

    name: str
    read: _Reader
    write: Callable[[Any], WireValue]
    nil_when_empty: bool = False


def _shape(
    name: str,
    read: _Reader,
    write: Callable[[Any], WireValue],
    *,
    nil_when_empty: bool = False,
) -> Mapping[str, _Shape]:
    """
    The C{attrs.field} metadata declaring a field the codec cannot
    declare; the field's default must be Go's zero value.
    """
    return {_SHAPE: _Shape(name, read, write, nil_when_empty)}


@functools.cache
def _shapes(cls: type[attrs.AttrsInstance]) -> tuple[tuple[str, bytes, _Shape], ...]:
    return tuple(
        (a.name, shape.name.encode(), shape)
        for a in attrs.fields(cls)
        if isinstance(shape := a.metadata.get(_SHAPE), _Shape)
    )


def _to_map(struct: attrs.AttrsInstance) -> dict[str, WireValue]:
    """
    The map go-msgpack makes of C{struct}: every field under its Go name,
    in ascending order of the names.
    """
    fields = to_map(struct)
    for attribute, _, shape in _shapes(type(struct)):
        value = getattr(struct, attribute)
        empty = shape.nil_when_empty and not value
        fields[shape.name] = None if empty else shape.write(value)
    return dict(sorted(fields.items()))


def _from_map(cls: type[_Struct], body: object) -> _Struct:
    """
    Read a C{cls} from its decoded msgpack map, as Go does.

    @raise DecodeError: for anything but a map of valid fields.
    """
    if not isinstance(body, dict):
        raise DecodeError(f"{cls.__name__} must be a map")
    struct = decode(cls, body)
    changes = {}
    for attribute, key, shape in _shapes(cls):
        value = body.get(key)
        if value is not None:
            changes[attribute] = shape.read(shape.name, value)
    return cast(_Struct, attrs.evolve(cast(Any, struct), **changes))


# --- reading the values inside shaped fields ---


def _text(name: str, value: object) -> str:
    return "" if value is None else text_of(name, value)


def _octets(name: str, value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    # go-msgpack also reads an array of small integers as a []byte.
    if isinstance(value, list) and all(
        type(item) is int and 0 <= item <= 0xFF for item in value
    ):
        return bytes(value)
    raise DecodeError(f"{name} must hold bytes")


def _integer(name: str, value: object, least: int, most: int) -> int:
    if type(value) is not int:  # a bool is not an integer to Go
        raise DecodeError(f"{name} must hold integers")
    if not least <= value <= most:
        raise DecodeError(f"{name} out of range: {value}")
    return value


def _array(name: str, value: object) -> list[object]:
    if not isinstance(value, list):
        raise DecodeError(f"{name} must be an array")
    return value


def _map(name: str, value: object) -> dict[object, object]:
    if not isinstance(value, dict):
        raise DecodeError(f"{name} must be a map")
    return value


def _read_strings(name: str, value: object) -> tuple[str, ...]:
    return tuple(_text(name, item) for item in _array(name, value))


def _read_byte_strings(name: str, value: object) -> tuple[bytes, ...]:
    return tuple(_octets(name, item) for item in _array(name, value))


def _read_ltimes(name: str, value: object) -> dict[str, int]:
    return {
        _text(name, key): _integer(name, 0 if ltime is None else ltime, 0, _UINT64_MAX)
        for key, ltime in _map(name, value).items()
    }


def _read_texts(name: str, value: object) -> dict[str, str]:
    return {
        _text(name, key): _text(name, text) for key, text in _map(name, value).items()
    }


def _read_duration(name: str, value: object) -> int:
    return _integer(name, value, _INT64_MIN, _INT64_MAX)


def _read_structs(cls: type[_Struct]) -> Callable[[str, object], tuple[_Struct, ...]]:
    # A nil entry of a []T is T's zero value.
    def read(name: str, value: object) -> tuple[_Struct, ...]:
        return tuple(
            _from_map(cls, {} if v is None else _map(f"{name} entry", v))
            for v in _array(name, value)
        )

    return read


def _read_optional_structs(
    cls: type[_Struct],
) -> Callable[[str, object], tuple[_Struct | None, ...]]:
    # A nil entry of a []*T stays nil.
    def read(name: str, value: object) -> tuple[_Struct | None, ...]:
        return tuple(
            None if v is None else _from_map(cls, _map(f"{name} entry", v))
            for v in _array(name, value)
        )

    return read


def _read_struct(cls: type[_Struct]) -> Callable[[str, object], _Struct]:
    return lambda name, value: _from_map(cls, _map(name, value))


# --- and writing them ---


def _write_sequence(values: Sequence[str | bytes]) -> WireValue:
    return list(values)


def _write_map(values: Mapping[str, Any]) -> WireValue:
    return dict(sorted(values.items()))


def _write_scalar(value: int) -> WireValue:
    return value


def _write_structs(values: Sequence[attrs.AttrsInstance | None]) -> WireValue:
    return [None if value is None else _to_map(value) for value in values]


def _write_struct(value: attrs.AttrsInstance) -> WireValue:
    return _to_map(value)


def _check_ip(name: str, ip: bytes) -> None:
    if len(ip) not in _IP_LENGTHS:
        raise DecodeError(
            f"{name} must be an IP address (4 or 16 bytes), not {len(ip)}"
        )


# --- the structs (one declaration per Go struct, field for field) ---


@attrs.frozen(kw_only=True)
class UserEvent:
    """
    A user event (type 3, C{messageUserEvent}): C{name} with C{payload},
    at event-clock time C{ltime}.  C{cc} ("can coalesce") lets a receiver
    deliver only the last of a burst of same-named events.  C{payload} is
    C{None} when Go's is nil (Serf sends an event without a payload so),
    which Serf holds equal to an empty one.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    name: str = attrs.field(metadata=go("Name", Kind.STR))
    payload: bytes | None = attrs.field(metadata=go("Payload", Kind.OPTIONAL_BYTES))
    cc: bool = attrs.field(metadata=go("CC", Kind.BOOL))


@attrs.frozen(kw_only=True)
class BufferedEvent:
    """
    One event of an event-buffer slot (serf.go C{userEvent}).
    """

    name: str = attrs.field(metadata=go("Name", Kind.STR))
    payload: bytes | None = attrs.field(metadata=go("Payload", Kind.OPTIONAL_BYTES))


@attrs.frozen(kw_only=True)
class BufferedEvents:
    """
    The events of one event-clock time, as Serf keeps them in its event
    buffer and sends them in a push/pull (serf.go C{userEvents}).
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    events: tuple[BufferedEvent, ...] = attrs.field(
        factory=tuple,
        metadata=_shape("Events", _read_structs(BufferedEvent), _write_structs),
    )


@attrs.frozen(kw_only=True)
class PushPull:
    """
    Serf's push/pull user state (type 2, C{messagePushPull}).

    @ivar ltime: the sender's member clock.
    @ivar status_ltimes: each member's status time: the LTime of the
        last join or leave intent the sender accepted for it.
    @ivar left_members: the members that left; a receiver takes each as
        a leave intent at its status time plus one.
    @ivar event_ltime: the sender's event clock.
    @ivar events: the sender's event buffer, one slot per event-clock time
        modulo its size (512 by default), C{None} where it holds nothing.
    @ivar query_ltime: the sender's query clock.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    status_ltimes: Mapping[str, int] = attrs.field(
        factory=dict, metadata=_shape("StatusLTimes", _read_ltimes, _write_map)
    )
    left_members: tuple[str, ...] = attrs.field(
        factory=tuple, metadata=_shape("LeftMembers", _read_strings, _write_sequence)
    )
    event_ltime: int = attrs.field(metadata=go("EventLTime", Kind.UINT64))
    events: tuple[BufferedEvents | None, ...] = attrs.field(
        factory=tuple,
        metadata=_shape(
            "Events", _read_optional_structs(BufferedEvents), _write_structs
        ),
    )
    query_ltime: int = attrs.field(metadata=go("QueryLTime", Kind.UINT64))


@attrs.frozen(kw_only=True)
class Query:
    """
    A query (type 4, C{messageQuery}): C{name} with C{payload}, asked at
    query-clock time C{ltime}.

    @ivar id: random, with C{ltime} it tells queries apart.
    @ivar addr: the IP (4 or 16 bytes) answers and acks go to.
    @ivar port: the UDP port answers and acks go to.
    @ivar source_node: the asker's name.
    @ivar filters: who should answer: encoded filters (L{encode_filter},
        L{decode_filter}); all must match.  Kept as bytes, as Serf keeps
        them: a filter nobody can read stops the query from being
        answered, not from being gossiped.
    @ivar flags: L{QueryFlag} bits.
    @ivar relay_factor: how many other members should relay a copy of
        each answer (0: none).
    @ivar timeout: nanoseconds (Go's C{time.Duration}) the asker waits.
    @ivar payload: C{None} when Go's is nil, which Serf holds equal to an
        empty payload.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    id: int = attrs.field(metadata=go("ID", Kind.UINT32))
    addr: bytes = attrs.field(metadata=go("Addr", Kind.BYTES))
    port: int = attrs.field(metadata=go("Port", Kind.UINT16))
    source_node: str = attrs.field(metadata=go("SourceNode", Kind.STR))
    filters: tuple[bytes, ...] = attrs.field(
        factory=tuple,
        metadata=_shape(
            "Filters", _read_byte_strings, _write_sequence, nil_when_empty=True
        ),
    )
    flags: int = attrs.field(metadata=go("Flags", Kind.UINT32))
    relay_factor: int = attrs.field(
        metadata=go("RelayFactor", Kind.UINT16, maximum=_UINT8_MAX)
    )
    timeout: int = attrs.field(
        default=0, metadata=_shape("Timeout", _read_duration, _write_scalar)
    )
    name: str = attrs.field(metadata=go("Name", Kind.STR))
    payload: bytes | None = attrs.field(metadata=go("Payload", Kind.OPTIONAL_BYTES))

    @property
    def ack(self) -> bool:
        """
        Whether the asker wants an acknowledgement from every member that
        passes the filters.
        """
        return bool(self.flags & QueryFlag.ACK)

    @property
    def no_broadcast(self) -> bool:
        """
        Whether the receiver must keep the query to itself.
        """
        return bool(self.flags & QueryFlag.NO_BROADCAST)


@attrs.frozen(kw_only=True)
class QueryResponse:
    """
    An answer to a query, or an acknowledgement of one (type 5,
    C{messageQueryResponse}); C{ltime} and C{id} are the query's.  An
    acknowledgement has the L{QueryFlag.ACK} flag and a nil payload.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    id: int = attrs.field(metadata=go("ID", Kind.UINT32))
    from_: str = attrs.field(metadata=go("From", Kind.STR))
    flags: int = attrs.field(metadata=go("Flags", Kind.UINT32))
    payload: bytes | None = attrs.field(metadata=go("Payload", Kind.OPTIONAL_BYTES))

    @property
    def ack(self) -> bool:
        """
        Whether this is an acknowledgement rather than an answer.
        """
        return bool(self.flags & QueryFlag.ACK)


@attrs.frozen(kw_only=True)
class SerfMember:
    """
    Serf's view of a member (serf.go C{Member}), as a conflict response
    carries it.  C{addr} is Go's C{net.IP}: 4 or 16 bytes from a Serf
    agent, not checked.
    """

    name: str = attrs.field(metadata=go("Name", Kind.STR))
    addr: bytes = attrs.field(metadata=go("Addr", Kind.BYTES))
    port: int = attrs.field(metadata=go("Port", Kind.UINT16))
    tags: Mapping[str, str] = attrs.field(
        factory=dict, metadata=_shape("Tags", _read_texts, _write_map)
    )
    status: MemberStatus = attrs.field(
        metadata=go("Status", Kind.INT, maximum=_INT64_MAX, enum=MemberStatus)
    )
    protocol_min: int = attrs.field(
        metadata=go("ProtocolMin", Kind.UINT16, maximum=_UINT8_MAX)
    )
    protocol_max: int = attrs.field(
        metadata=go("ProtocolMax", Kind.UINT16, maximum=_UINT8_MAX)
    )
    protocol_cur: int = attrs.field(
        metadata=go("ProtocolCur", Kind.UINT16, maximum=_UINT8_MAX)
    )
    delegate_min: int = attrs.field(
        metadata=go("DelegateMin", Kind.UINT16, maximum=_UINT8_MAX)
    )
    delegate_max: int = attrs.field(
        metadata=go("DelegateMax", Kind.UINT16, maximum=_UINT8_MAX)
    )
    delegate_cur: int = attrs.field(
        metadata=go("DelegateCur", Kind.UINT16, maximum=_UINT8_MAX)
    )


@attrs.frozen
class ConflictResponse:
    """
    The payload of an answer to C{_serf_conflict} (type 6): what the
    answering member knows of the name asked about, or C{None} (Go's nil
    C{*Member}) when it knows no such member.
    """

    member: SerfMember | None


@attrs.frozen
class KeyRequest:
    """
    The payload of a key query (type 7, keymanager.go C{keyRequest}): the
    raw key to install, use or remove; empty to list keys.
    """

    key: bytes = attrs.field(metadata=go("Key", Kind.BYTES))


@attrs.frozen(kw_only=True)
class KeyResponse:
    """
    The payload of an answer to a key query (type 8, internal_query.go
    C{nodeKeyResponse}).

    @ivar result: whether the operation succeeded.
    @ivar message: an error, or a warning (a truncated key list).
    @ivar keys: for a listing, the installed keys in base64.
    @ivar primary_key: for a listing, the primary key in base64.
    """

    result: bool = attrs.field(metadata=go("Result", Kind.BOOL))
    message: str = attrs.field(metadata=go("Message", Kind.STR))
    keys: tuple[str, ...] = attrs.field(
        factory=tuple,
        metadata=_shape("Keys", _read_strings, _write_sequence, nil_when_empty=True),
    )
    primary_key: str = attrs.field(metadata=go("PrimaryKey", Kind.STR))


@attrs.frozen(kw_only=True)
class UDPAddress:
    """
    Go's C{net.UDPAddr}, a relay's destination: C{ip} is 4 or 16 bytes.
    """

    ip: bytes = attrs.field(metadata=go("IP", Kind.BYTES))
    port: int = attrs.field(metadata=go("Port", Kind.INT, maximum=0xFFFF))
    zone: str = attrs.field(default="", metadata=go("Zone", Kind.STR))


@attrs.frozen(kw_only=True)
class _RelayHeader:
    """
    messages.go C{relayHeader}: where a relayed message goes.
    """

    dest_addr: UDPAddress = attrs.field(
        factory=lambda: UDPAddress(ip=b"", port=0),
        metadata=_shape("DestAddr", _read_struct(UDPAddress), _write_struct),
    )
    dest_name: str = attrs.field(metadata=go("DestName", Kind.STR))


@attrs.frozen(kw_only=True)
class Relay:
    """
    A message to forward (type 9): the receiver sends C{message}, as it
    is, to C{dest_name} at C{dest_addr} as a user message.  Serf relays
    query responses this way (C{relayResponse}, when a query asks for a
    relay factor).

    @ivar message: a whole Serf message, type byte included.  The relay
        does not read it; its recipient does.
    """

    dest_addr: UDPAddress
    dest_name: str
    message: bytes


@attrs.frozen
class NodeFilter:
    """
    A query filter (type 0, C{filterNode}): only the members named answer.
    """

    nodes: tuple[str, ...]


@attrs.frozen(kw_only=True)
class TagFilter:
    """
    A query filter (type 1, C{filterTag}): only members whose tag C{tag}
    matches the regular expression C{expr} (Go's C{regexp} syntax,
    unanchored; a missing tag is C{""}) answer.
    """

    tag: str = attrs.field(metadata=go("Tag", Kind.STR))
    expr: str = attrs.field(metadata=go("Expr", Kind.STR))


QueryFilter: TypeAlias = NodeFilter | TagFilter

SerfMessage: TypeAlias = (
    LeaveIntent
    | JoinIntent
    | PushPull
    | UserEvent
    | Query
    | QueryResponse
    | ConflictResponse
    | KeyRequest
    | KeyResponse
    | Relay
)
"""
Any Serf message L{decode_message} returns.
"""

# The messages that are one struct each.
_STRUCTS: dict[MessageType, type[attrs.AttrsInstance]] = {
    MessageType.LEAVE: LeaveIntent,
    MessageType.JOIN: JoinIntent,
    MessageType.PUSH_PULL: PushPull,
    MessageType.USER_EVENT: UserEvent,
    MessageType.QUERY: Query,
    MessageType.QUERY_RESPONSE: QueryResponse,
    MessageType.KEY_REQUEST: KeyRequest,
    MessageType.KEY_RESPONSE: KeyResponse,
}
_TYPE_OF: dict[type, MessageType] = {
    **{cls: kind for kind, cls in _STRUCTS.items()},
    ConflictResponse: MessageType.CONFLICT_RESPONSE,
    Relay: MessageType.RELAY,
}


# --- messages ---


def _words(kind: MessageType) -> str:
    return kind.name.lower().replace("_", " ")


def encode_message(message: SerfMessage) -> bytes:
    """
    The bytes Serf sends for C{message}: its type byte, then the msgpack
    of its struct as go-msgpack writes it (map keys, Go's random map
    order aside, in the same order; for a relay, the header and then the
    relayed message).
    """
    kind = bytes([_TYPE_OF[type(message)]])
    if isinstance(message, Relay):
        header = _RelayHeader(dest_addr=message.dest_addr, dest_name=message.dest_name)
        return kind + pack(_to_map(header)) + message.message
    if isinstance(message, ConflictResponse):
        member = message.member
        return kind + pack(None if member is None else _to_map(member))
    return kind + pack(_to_map(message))


def decode_message(data: bytes) -> SerfMessage:
    """
    Read one Serf message (a user message's payload, or a push/pull's user
    state), as Serf reads it.

    @raise MessageError: for anything that is not a valid Serf message,
        with the reason L{UNKNOWN_TYPE} when the type byte is none of
        L{MessageType}'s, else L{MALFORMED}.
    """
    if not data:
        raise MessageError(MALFORMED, "empty Serf message")
    try:
        kind = MessageType(data[0])
    except ValueError:
        raise MessageError(
            UNKNOWN_TYPE, f"unknown Serf message type {data[0]}"
        ) from None
    try:
        if kind is MessageType.RELAY:
            return _decode_relay(data)
        body = unpack(data[1:])
        if kind is MessageType.CONFLICT_RESPONSE:
            member = None if body is None else _from_map(SerfMember, body)
            return ConflictResponse(member)
        message = cast(SerfMessage, _from_map(_STRUCTS[kind], body))
        if isinstance(message, Query):
            _check_ip("Addr", message.addr)
        return message
    except DecodeError as e:
        raise MessageError(MALFORMED, f"Serf {_words(kind)}: {e}") from None


def _decode_relay(data: bytes) -> Relay:
    # The header, then the relayed message as it is.
    try:
        body = msgpack.unpackb(data[1:], raw=True, strict_map_key=False)
        message = b""
    except msgpack.ExtraData as extra:
        body, message = extra.unpacked, extra.extra
    except Exception as e:  # msgpack raises many unrelated types
        raise DecodeError(f"bad msgpack in header: {e}") from None
    header = _from_map(_RelayHeader, _map("relay header", body))
    _check_ip("DestAddr", header.dest_addr.ip)
    if not message:
        raise DecodeError("no message to relay")
    return Relay(
        dest_addr=header.dest_addr, dest_name=header.dest_name, message=message
    )


_Message = TypeVar(
    "_Message",
    LeaveIntent,
    JoinIntent,
    PushPull,
    UserEvent,
    Query,
    QueryResponse,
    ConflictResponse,
    KeyRequest,
    KeyResponse,
    Relay,
)


def decode_typed(cls: type[_Message], data: bytes) -> _Message:
    """
    L{decode_message}, for bytes that must be a C{cls} (a key query's
    payload must be a L{KeyRequest}, say).

    @raise MessageError: as L{decode_message} does, and with the reason
        L{UNKNOWN_TYPE} for a valid message of another type.
    """
    message = decode_message(data)
    if not isinstance(message, cls):
        raise MessageError(
            UNKNOWN_TYPE,
            f"expected a Serf {_words(_TYPE_OF[cls])}, "
            f"got a {_words(_TYPE_OF[type(message)])}",
        )
    return message


# --- query filters ---


def encode_filter(query_filter: QueryFilter) -> bytes:
    """
    The bytes of one query filter, as C{encodeFilter} writes them.
    """
    if isinstance(query_filter, NodeFilter):
        return bytes([FilterType.NODE]) + pack(list(query_filter.nodes))
    return bytes([FilterType.TAG]) + pack(_to_map(query_filter))


def decode_filter(data: bytes) -> QueryFilter:
    """
    Read one of a query's filters.

    @raise MessageError: for anything that is not a valid filter, with
        the reason L{UNKNOWN_TYPE} for a type byte that is neither of
        L{FilterType}'s (Serf then does not answer the query).
    """
    if not data:
        raise MessageError(MALFORMED, "empty query filter")
    try:
        kind = FilterType(data[0])
    except ValueError:
        raise MessageError(
            UNKNOWN_TYPE, f"unknown query filter type {data[0]}"
        ) from None
    try:
        body = unpack(data[1:])
        if kind is FilterType.NODE:
            nodes = () if body is None else _read_strings("filterNode", body)
            return NodeFilter(nodes)
        return _from_map(TagFilter, body)
    except DecodeError as e:
        raise MessageError(MALFORMED, f"query filter: {e}") from None
