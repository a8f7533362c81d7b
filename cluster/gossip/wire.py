"""
memberlist message bodies: Python values to and from bytes.

Every message starts with a one-byte L{MessageType}, followed by a msgpack
body encoded as hashicorp/memberlist does it (see C{shared/WIRE.md} sections
2 and 3): struct fields become a map whose keys are the Go field names in
sorted order, and C{string} and C{[]byte} values both use the legacy raw
string family (C{use_bin_type=False}).  Decoding uses C{raw=True} and turns
the Go C{string} fields back into C{str} here.

Framing that wraps whole messages (compound, CRC, label, compression,
encryption) lives in L{cluster.gossip.framing}.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs
import msgpack

__all__ = [
    "Ack",
    "Alive",
    "Dead",
    "ErrResp",
    "IndirectPingReq",
    "Message",
    "MessageType",
    "Nack",
    "Ping",
    "PushNodeState",
    "PushPull",
    "Suspect",
    "User",
    "WireError",
    "decode_message",
    "decode_stream_message",
    "encode_message",
    "encode_stream_message",
    "ip_from_bytes",
    "ip_to_bytes",
]


class WireError(ValueError):
    """
    Bytes that do not form a valid memberlist message.
    """


class MessageType(enum.IntEnum):
    """
    The first byte of every memberlist message (net.go C{messageType}).
    """

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13
    HAS_LABEL = 244


# One packer for the whole module: msgpack's Packer is reusable and much
# cheaper than building one per call.  use_bin_type=False gives the legacy
# raw family with no str8, which is exactly what go-msgpack 0.5 emits.
_packer = msgpack.Packer(use_bin_type=False)
_UINT32 = 0xFFFFFFFF
_UINT16 = 0xFFFF


def _pack(fields: Mapping[str, Any]) -> bytes:
    # Go's codec writes struct fields in ascending byte order of their names.
    packed: bytes = _packer.pack({key: fields[key] for key in sorted(fields)})
    return packed


def ip_to_bytes(ip: str) -> bytes:
    """
    Pack an IP literal as memberlist's raw C{Addr} (4 or 16 bytes).
    """
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, ip)
    except OSError:
        raise WireError(f"not an IP address: {ip!r}") from None


def ip_from_bytes(raw: bytes) -> str:
    """
    Turn a raw C{Addr} back into an IP literal.

    An IPv4-mapped IPv6 address (what Go sends when it picked the address
    itself after binding 0.0.0.0) becomes its dotted-quad form, because a
    UDP write on an IPv4 socket needs that.
    """
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        if raw[:12] == b"\x00" * 10 + b"\xff\xff":
            return socket.inet_ntop(socket.AF_INET, raw[12:])
        return socket.inet_ntop(socket.AF_INET6, raw)
    raise WireError(f"address must be 4 or 16 bytes, got {len(raw)}")


# --- field readers: a decoded body is a dict with bytes keys (raw=True) ---


def _get_str(body: Mapping[bytes, Any], key: bytes) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, bytes):
        raise WireError(f"{key.decode()} must be a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"{key.decode()} is not UTF-8") from None


def _get_bytes(body: Mapping[bytes, Any], key: bytes) -> bytes:
    value = body.get(key)
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    # go-msgpack also accepts an array of small ints for a []byte field.
    if isinstance(value, list) and all(
        isinstance(item, int) and 0 <= item <= 255 for item in value
    ):
        return bytes(value)
    raise WireError(f"{key.decode()} must be bytes")


def _get_optional_bytes(body: Mapping[bytes, Any], key: bytes) -> bytes | None:
    if body.get(key) is None:
        return None
    return _get_bytes(body, key)


def _get_uint(body: Mapping[bytes, Any], key: bytes, maximum: int = _UINT32) -> int:
    value = body.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{key.decode()} must be an integer")
    if not 0 <= value <= maximum:
        raise WireError(f"{key.decode()} out of range: {value}")
    return value


def _get_bool(body: Mapping[bytes, Any], key: bytes) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise WireError(f"{key.decode()} must be a boolean")
    return value


def _source_fields(
    source_addr: bytes | None, source_port: int, source_node: str
) -> dict[str, Any]:
    # The Source* fields are codec:",omitempty": left out when zero.
    fields: dict[str, Any] = {}
    if source_addr:
        fields["SourceAddr"] = source_addr
    if source_node:
        fields["SourceNode"] = source_node
    if source_port:
        fields["SourcePort"] = source_port
    return fields


# --- messages ---


@attrs.frozen
class Ping:
    """
    A probe (type 0).  The ack echoes C{seq_no}; it goes to
    C{source_addr}:C{source_port} when both are set.
    """

    seq_no: int
    node: str
    source_addr: bytes | None = None
    source_port: int = 0
    source_node: str = ""

    TYPE = MessageType.PING

    def fields(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "SeqNo": self.seq_no,
            **_source_fields(self.source_addr, self.source_port, self.source_node),
        }

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> Ping:
        return cls(
            seq_no=_get_uint(body, b"SeqNo"),
            node=_get_str(body, b"Node"),
            source_addr=_get_optional_bytes(body, b"SourceAddr"),
            source_port=_get_uint(body, b"SourcePort", _UINT16),
            source_node=_get_str(body, b"SourceNode"),
        )


@attrs.frozen
class IndirectPingReq:
    """
    A request to ping C{node} at C{target}:C{port} on our behalf (type 1).
    """

    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool
    source_addr: bytes | None = None
    source_port: int = 0
    source_node: str = ""

    TYPE = MessageType.INDIRECT_PING

    def fields(self) -> dict[str, Any]:
        return {
            "Nack": self.nack,
            "Node": self.node,
            "Port": self.port,
            "SeqNo": self.seq_no,
            "Target": self.target,
            **_source_fields(self.source_addr, self.source_port, self.source_node),
        }

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> IndirectPingReq:
        return cls(
            seq_no=_get_uint(body, b"SeqNo"),
            target=_get_bytes(body, b"Target"),
            port=_get_uint(body, b"Port", _UINT16),
            node=_get_str(body, b"Node"),
            nack=_get_bool(body, b"Nack"),
            source_addr=_get_optional_bytes(body, b"SourceAddr"),
            source_port=_get_uint(body, b"SourcePort", _UINT16),
            source_node=_get_str(body, b"SourceNode"),
        )


@attrs.frozen
class Ack:
    """
    The answer to a ping (type 2).  C{payload} is nil unless a ping
    delegate supplies one; we always send nil (a serf peer would try to
    read anything else as a network coordinate).
    """

    seq_no: int
    payload: bytes | None = None

    TYPE = MessageType.ACK

    def fields(self) -> dict[str, Any]:
        return {"Payload": self.payload, "SeqNo": self.seq_no}

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> Ack:
        return cls(
            seq_no=_get_uint(body, b"SeqNo"),
            payload=_get_optional_bytes(body, b"Payload"),
        )


@attrs.frozen
class Nack:
    """
    An intermediary could not reach the target of an indirect ping (type 11).
    """

    seq_no: int

    TYPE = MessageType.NACK

    def fields(self) -> dict[str, Any]:
        return {"SeqNo": self.seq_no}

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> Nack:
        return cls(seq_no=_get_uint(body, b"SeqNo"))


@attrs.frozen
class ErrResp:
    """
    The reply on a stream the receiver could not read (type 13).
    """

    error: str

    TYPE = MessageType.ERR

    def fields(self) -> dict[str, Any]:
        return {"Error": self.error}

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> ErrResp:
        return cls(error=_get_str(body, b"Error"))


@attrs.frozen
class Suspect:
    """
    C{from_} suspects C{node} at C{incarnation} (type 3).
    """

    incarnation: int
    node: str
    from_: str

    TYPE = MessageType.SUSPECT

    def fields(self) -> dict[str, Any]:
        return {"From": self.from_, "Incarnation": self.incarnation, "Node": self.node}

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> Suspect:
        return cls(
            incarnation=_get_uint(body, b"Incarnation"),
            node=_get_str(body, b"Node"),
            from_=_get_str(body, b"From"),
        )


@attrs.frozen
class Dead:
    """
    C{from_} declares C{node} dead (type 5); C{from_ == node} is a leave.
    """

    incarnation: int
    node: str
    from_: str

    TYPE = MessageType.DEAD

    def fields(self) -> dict[str, Any]:
        return {"From": self.from_, "Incarnation": self.incarnation, "Node": self.node}

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> Dead:
        return cls(
            incarnation=_get_uint(body, b"Incarnation"),
            node=_get_str(body, b"Node"),
            from_=_get_str(body, b"From"),
        )


@attrs.frozen
class Alive:
    """
    C{node} is alive at C{addr}:C{port} with C{incarnation} (type 4).

    C{vsn} is always the 6 bytes C{[PMin, PMax, PCur, DMin, DMax, DCur]}:
    fewer crash a memberlist 0.2 peer.
    """

    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes
    vsn: bytes

    TYPE = MessageType.ALIVE

    def fields(self) -> dict[str, Any]:
        return {
            "Addr": self.addr,
            "Incarnation": self.incarnation,
            "Meta": self.meta,
            "Node": self.node,
            "Port": self.port,
            "Vsn": self.vsn,
        }

    @classmethod
    def from_body(cls, body: Mapping[bytes, Any]) -> Alive:
        return cls(
            incarnation=_get_uint(body, b"Incarnation"),
            node=_get_str(body, b"Node"),
            addr=_get_bytes(body, b"Addr"),
            port=_get_uint(body, b"Port", _UINT16),
            meta=_get_bytes(body, b"Meta"),
            vsn=_get_bytes(body, b"Vsn"),
        )


@attrs.frozen
class PushNodeState:
    """
    One member's entry in a push/pull exchange.  C{state} uses the wire
    numbers: 0 alive, 1 suspect, 2 dead, 3 left.
    """

    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: int
    vsn: bytes

    def fields(self) -> dict[str, Any]:
        return {
            "Addr": self.addr,
            "Incarnation": self.incarnation,
            "Meta": self.meta,
            "Name": self.name,
            "Port": self.port,
            "State": self.state,
            "Vsn": self.vsn,
        }

    @classmethod
    def from_body(cls, body: Any) -> PushNodeState:
        if not isinstance(body, dict):
            raise WireError("push/pull node state must be a map")
        return cls(
            name=_get_str(body, b"Name"),
            addr=_get_bytes(body, b"Addr"),
            port=_get_uint(body, b"Port", _UINT16),
            meta=_get_bytes(body, b"Meta"),
            incarnation=_get_uint(body, b"Incarnation"),
            state=_get_uint(body, b"State", 255),
            vsn=_get_bytes(body, b"Vsn"),
        )


@attrs.frozen
class PushPull:
    """
    A full-state exchange (type 6, TCP only): a header, one
    L{PushNodeState} per known member, then the delegate's raw user state.
    """

    join: bool
    nodes: tuple[PushNodeState, ...]
    user_state: bytes = b""

    TYPE = MessageType.PUSH_PULL


@attrs.frozen
class User:
    """
    An opaque delegate message (type 8).
    """

    payload: bytes

    TYPE = MessageType.USER


Message: TypeAlias = (
    Ping
    | IndirectPingReq
    | Ack
    | Nack
    | ErrResp
    | Suspect
    | Alive
    | Dead
    | PushPull
    | User
)

_BODY_TYPES: dict[int, Any] = {
    cls.TYPE: cls
    for cls in (Ping, IndirectPingReq, Ack, Nack, ErrResp, Suspect, Alive, Dead)
}

# Largest node count / user-state size accepted in a push/pull
# (memberlist 0.6 limits); anything bigger is an attack or garbage.
MAX_PUSH_NODES = 1 << 20
MAX_USER_BYTES = 20 * 1024 * 1024
_MAX_STREAM_BUFFER = 64 * 1024 * 1024


def encode_message(message: Message) -> bytes:
    """
    Encode one message as it travels in a UDP packet (or compound part).
    """
    if isinstance(message, User):
        return bytes([MessageType.USER]) + message.payload
    if isinstance(message, PushPull):
        raise ValueError("push/pull messages only travel on streams")
    return bytes([message.TYPE]) + _pack(message.fields())


def encode_stream_message(message: Message) -> bytes:
    """
    Encode one message as it travels on a TCP stream.

    Push/pull and user messages carry explicit lengths on streams, so the
    reader never waits for EOF.
    """
    if isinstance(message, PushPull):
        parts = [
            bytes([MessageType.PUSH_PULL]),
            _pack(
                {
                    "Join": message.join,
                    "Nodes": len(message.nodes),
                    "UserStateLen": len(message.user_state),
                }
            ),
        ]
        parts.extend(_pack(node.fields()) for node in message.nodes)
        parts.append(message.user_state)
        return b"".join(parts)
    if isinstance(message, User):
        return (
            bytes([MessageType.USER])
            + _pack({"UserMsgLen": len(message.payload)})
            + message.payload
        )
    return encode_message(message)


def _unpack_body(body: bytes) -> dict[bytes, Any]:
    try:
        value = msgpack.unpackb(body, raw=True, strict_map_key=False)
    except msgpack.ExtraData as extra:
        # Go decodes one value from the reader and ignores what follows.
        value = extra.unpacked
    except Exception as e:  # msgpack raises many unrelated types
        raise WireError(f"bad msgpack body: {e}") from None
    if not isinstance(value, dict):
        raise WireError("message body must be a map")
    return value


def decode_message(data: bytes) -> Message:
    """
    Decode one UDP message (not compound, compressed or CRC-wrapped: see
    L{cluster.gossip.framing} for those).

    @raise WireError: for anything that is not a valid message.
    """
    if not data:
        raise WireError("missing message type byte")
    kind = data[0]
    if kind == MessageType.USER:
        return User(data[1:])
    cls = _BODY_TYPES.get(kind)
    if cls is None:
        raise WireError(f"message type {kind} not supported on packets")
    message: Message = cls.from_body(_unpack_body(data[1:]))
    return message


def _stream_unpacker(data: bytes, offset: int) -> msgpack.Unpacker:
    # A fixed cap: msgpack derives its container limits from it, and a
    # partial buffer must not make a valid header look oversized.
    unpacker = msgpack.Unpacker(
        raw=True, strict_map_key=False, max_buffer_size=_MAX_STREAM_BUFFER
    )
    unpacker.feed(data[offset:])
    return unpacker


def _next_object(unpacker: msgpack.Unpacker) -> Any:
    try:
        return unpacker.unpack()
    except msgpack.OutOfData:
        raise WireError("stream message truncated") from None
    except Exception as e:
        raise WireError(f"bad msgpack in stream: {e}") from None


def decode_stream_message(data: bytes) -> Message:
    """
    Decode one stream message, already stripped of label, encryption and
    compression (see L{cluster.gossip.framing.StreamCodec}).

    @raise WireError: for anything that is not a valid stream message.
    """
    if not data:
        raise WireError("missing message type byte")
    kind = data[0]
    if kind == MessageType.PUSH_PULL:
        unpacker = _stream_unpacker(data, 1)
        header = _next_object(unpacker)
        if not isinstance(header, dict):
            raise WireError("push/pull header must be a map")
        count = _get_uint(header, b"Nodes", MAX_PUSH_NODES)
        user_len = _get_uint(header, b"UserStateLen", MAX_USER_BYTES)
        nodes = tuple(
            PushNodeState.from_body(_next_object(unpacker)) for _ in range(count)
        )
        start = 1 + unpacker.tell()
        user_state = data[start : start + user_len]
        if len(user_state) != user_len:
            raise WireError("push/pull user state truncated")
        return PushPull(_get_bool(header, b"Join"), nodes, user_state)
    if kind == MessageType.USER:
        unpacker = _stream_unpacker(data, 1)
        header = _next_object(unpacker)
        if not isinstance(header, dict):
            raise WireError("user message header must be a map")
        length = _get_uint(header, b"UserMsgLen", MAX_USER_BYTES)
        start = 1 + unpacker.tell()
        payload = data[start : start + length]
        if len(payload) != length:
            raise WireError("user message truncated")
        return User(payload)
    if kind in (MessageType.PING, MessageType.ACK, MessageType.ERR):
        return decode_message(data)
    raise WireError(f"message type {kind} not supported on streams")


def stream_message_length(data: bytes, offset: int = 0) -> int | None:
    """
    How many bytes from C{offset} make up one plain (unencrypted,
    uncompressed) stream message, or C{None} when more bytes are needed.

    @raise WireError: when the bytes cannot start a valid stream message.
    """
    if len(data) <= offset:
        return None
    kind = data[offset]
    if kind not in (
        MessageType.PING,
        MessageType.ACK,
        MessageType.ERR,
        MessageType.PUSH_PULL,
        MessageType.USER,
    ):
        raise WireError(f"message type {kind} not supported on streams")
    unpacker = _stream_unpacker(data, offset + 1)
    try:
        header = unpacker.unpack()
        extra = 0
        if kind == MessageType.PUSH_PULL:
            if not isinstance(header, dict):
                raise WireError("push/pull header must be a map")
            for _ in range(_get_uint(header, b"Nodes", MAX_PUSH_NODES)):
                unpacker.skip()
            extra = _get_uint(header, b"UserStateLen", MAX_USER_BYTES)
        elif kind == MessageType.USER:
            if not isinstance(header, dict):
                raise WireError("user message header must be a map")
            extra = _get_uint(header, b"UserMsgLen", MAX_USER_BYTES)
    except msgpack.OutOfData:
        return None
    except WireError:
        raise
    except Exception as e:
        raise WireError(f"bad msgpack in stream: {e}") from None
    length = 1 + int(unpacker.tell()) + extra
    if offset + length > len(data):
        return None
    return length
