"""
memberlist message bodies: Python values to and from bytes.

Every message starts with a one-byte L{MessageType}, followed by a msgpack
body encoded as hashicorp/memberlist does it (see C{shared/WIRE.md} sections
2 and 3).  Each body is a Go struct declared once below, field by field,
for L{cluster.gossip.codec} to encode and decode.

Framing that wraps whole messages (compound, CRC, label, compression,
encryption) lives in L{cluster.gossip.framing}.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import socket
from typing import TypeAlias, TypeVar

import attrs
import msgpack

from cluster.gossip.address import ip_text
from cluster.gossip.codec import (
    DecodeError,
    Kind,
    OutOfRangeError,
    decode,
    decode_as,
    encode,
    go,
    stream_unpacker,
    unpack,
)

__all__ = [
    "MAX_PUSH_NODES",
    "MAX_USER_BYTES",
    "Ack",
    "Alive",
    "Dead",
    "ErrResp",
    "IndirectPingReq",
    "LimitError",
    "Message",
    "MessageType",
    "Nack",
    "Ping",
    "PushNodeState",
    "PushPull",
    "StreamMeasure",
    "Suspect",
    "User",
    "WireError",
    "decode_message",
    "decode_stream_message",
    "encode_message",
    "encode_stream_message",
    "ip_from_bytes",
    "ip_to_bytes",
    "stream_message_length",
]


class WireError(ValueError):
    """
    Bytes that do not form a valid memberlist message.
    """


class LimitError(WireError):
    """
    A stream message that says it is longer than we accept (more node
    states or user state bytes than the limits).
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


# Largest node count / user-state size accepted in a push/pull
# (memberlist 0.6 limits); anything bigger is an attack or garbage.
MAX_PUSH_NODES = 1 << 20
MAX_USER_BYTES = 20 * 1024 * 1024
# A node state number: memberlist knows 0 to 3; bigger ones are left for
# the state rules to refuse, absurd ones are garbage.
_MAX_NODE_STATE = 255


def ip_to_bytes(ip: str) -> bytes:
    """
    Pack an IP literal as memberlist's raw C{Addr} (4 or 16 bytes).

    @raise WireError: when C{ip} is not an IP literal.
    """
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, ip)
    except OSError:
        raise WireError(f"not an IP address: {ip!r}") from None


@functools.lru_cache(maxsize=4096)  # one entry per member address
def ip_from_bytes(raw: bytes) -> str:
    """
    Turn a raw C{Addr} back into an IP literal, as Go prints it.

    An IPv4-mapped IPv6 address (what Go sends when it picked the address
    itself after binding 0.0.0.0) becomes its dotted-quad form, because a
    UDP write on an IPv4 socket needs that.

    @raise WireError: when C{raw} is not 4 or 16 bytes long.
    """
    # Every gossip message carries an address: the IPv4 forms, by far the
    # most common, go through inet_ntop (C) rather than ipaddress.
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) != 16:
        raise WireError(f"address must be 4 or 16 bytes, got {len(raw)}")
    if raw.startswith(_V4_MAPPED):
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return ip_text(ipaddress.ip_address(raw))


_V4_MAPPED = bytes(10) + b"\xff\xff"


# --- message bodies (net.go) ---
#
# One declaration per memberlist struct, field for field: runs of lines
# alike in shape below are different fields of different structs, not
# repeated logic.


@attrs.frozen
class _Sourced:
    """
    The fields a prober adds (memberlist 0.3 and later) so that the answer
    comes back to its advertised address whatever the packet's source:
    keyword-only, and left out of the wire when empty.
    """

    source_addr: bytes | None = attrs.field(
        default=None,
        kw_only=True,
        metadata=go("SourceAddr", Kind.OPTIONAL_BYTES, omitempty=True),
    )
    source_port: int = attrs.field(
        default=0,
        kw_only=True,
        metadata=go("SourcePort", Kind.UINT16, omitempty=True),
    )
    source_node: str = attrs.field(
        default="",
        kw_only=True,
        metadata=go("SourceNode", Kind.STR, omitempty=True),
    )


@attrs.frozen
class Ping(_Sourced):
    """
    A probe (type 0, memberlist's C{ping}).  The ack echoes C{seq_no}; it
    goes to C{source_addr}:C{source_port} when both are set.
    """

    seq_no: int = attrs.field(metadata=go("SeqNo", Kind.UINT32))
    node: str = attrs.field(metadata=go("Node", Kind.STR))

    TYPE = MessageType.PING


@attrs.frozen
class IndirectPingReq(_Sourced):
    """
    A request to ping C{node} at C{target}:C{port} on our behalf (type 1,
    C{indirectPingReq}).
    """

    seq_no: int = attrs.field(metadata=go("SeqNo", Kind.UINT32))
    target: bytes = attrs.field(metadata=go("Target", Kind.BYTES))
    port: int = attrs.field(metadata=go("Port", Kind.UINT16))
    node: str = attrs.field(metadata=go("Node", Kind.STR))
    nack: bool = attrs.field(metadata=go("Nack", Kind.BOOL))

    TYPE = MessageType.INDIRECT_PING


@attrs.frozen
class Ack:
    """
    The answer to a ping (type 2, C{ackResp}).  C{payload} is nil unless a
    ping delegate supplies one; we always send nil (a serf peer would try
    to read anything else as a network coordinate).
    """

    seq_no: int = attrs.field(metadata=go("SeqNo", Kind.UINT32))
    payload: bytes | None = attrs.field(
        default=None, metadata=go("Payload", Kind.OPTIONAL_BYTES)
    )

    TYPE = MessageType.ACK


@attrs.frozen
class Nack:
    """
    An intermediary could not reach the target of an indirect ping (type
    11, C{nackResp}).
    """

    seq_no: int = attrs.field(metadata=go("SeqNo", Kind.UINT32))

    TYPE = MessageType.NACK


@attrs.frozen
class ErrResp:
    """
    The reply on a stream the receiver could not read (type 13, C{errResp}).
    """

    error: str = attrs.field(metadata=go("Error", Kind.STR))

    TYPE = MessageType.ERR


@attrs.frozen
class _Accusation:
    """
    The shape C{suspect} and C{dead} share: C{from_} says C{node} at
    C{incarnation} is in trouble.
    """

    incarnation: int = attrs.field(metadata=go("Incarnation", Kind.UINT32))
    node: str = attrs.field(metadata=go("Node", Kind.STR))
    from_: str = attrs.field(metadata=go("From", Kind.STR))


@attrs.frozen
class Suspect(_Accusation):
    """
    C{from_} suspects C{node} at C{incarnation} (type 3).
    """

    TYPE = MessageType.SUSPECT


@attrs.frozen
class Dead(_Accusation):
    """
    C{from_} declares C{node} dead (type 5); C{from_ == node} is a leave.
    """

    TYPE = MessageType.DEAD


@attrs.frozen
class Alive:
    """
    C{node} is alive at C{addr}:C{port} with C{incarnation} (type 4).

    C{vsn} is always the 6 bytes C{[PMin, PMax, PCur, DMin, DMax, DCur]}:
    fewer crash a memberlist 0.2 peer.
    """

    incarnation: int = attrs.field(metadata=go("Incarnation", Kind.UINT32))
    node: str = attrs.field(metadata=go("Node", Kind.STR))
    addr: bytes = attrs.field(metadata=go("Addr", Kind.BYTES))
    port: int = attrs.field(metadata=go("Port", Kind.UINT16))
    meta: bytes = attrs.field(metadata=go("Meta", Kind.BYTES))
    vsn: bytes = attrs.field(metadata=go("Vsn", Kind.BYTES))

    TYPE = MessageType.ALIVE


@attrs.frozen
class PushNodeState:
    """
    One member's entry in a push/pull exchange (C{pushNodeState}).
    C{state} uses the wire numbers: 0 alive, 1 suspect, 2 dead, 3 left.
    """

    name: str = attrs.field(metadata=go("Name", Kind.STR))
    addr: bytes = attrs.field(metadata=go("Addr", Kind.BYTES))
    port: int = attrs.field(metadata=go("Port", Kind.UINT16))
    meta: bytes = attrs.field(metadata=go("Meta", Kind.BYTES))
    incarnation: int = attrs.field(metadata=go("Incarnation", Kind.UINT32))
    state: int = attrs.field(metadata=go("State", Kind.INT, maximum=_MAX_NODE_STATE))
    vsn: bytes = attrs.field(metadata=go("Vsn", Kind.BYTES))


@attrs.frozen
class _PushPullLengths:
    """
    The part of C{pushPullHeader} that says where a push/pull ends: all
    that L{stream_message_length} reads (the other keys are ignored).
    """

    nodes: int = attrs.field(metadata=go("Nodes", Kind.INT, maximum=MAX_PUSH_NODES))
    user_state_len: int = attrs.field(
        metadata=go("UserStateLen", Kind.INT, maximum=MAX_USER_BYTES)
    )


@attrs.frozen
class _PushPullHeader(_PushPullLengths):
    """
    C{pushPullHeader}: what precedes the node states and user state.
    """

    join: bool = attrs.field(metadata=go("Join", Kind.BOOL))


@attrs.frozen
class _UserMsgHeader:
    """
    C{userMsgHeader}: the length of a user message on a stream.
    """

    user_msg_len: int = attrs.field(
        metadata=go("UserMsgLen", Kind.INT, maximum=MAX_USER_BYTES)
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

_PacketBody: TypeAlias = (
    Ping | IndirectPingReq | Ack | Nack | ErrResp | Suspect | Alive | Dead
)
_BODY_TYPES: dict[int, type[_PacketBody]] = {
    cls.TYPE: cls
    for cls in (Ping, IndirectPingReq, Ack, Nack, ErrResp, Suspect, Alive, Dead)
}
_Body = TypeVar("_Body", bound=attrs.AttrsInstance)
_STREAM_TYPES = frozenset(
    (
        MessageType.PING,
        MessageType.ACK,
        MessageType.ERR,
        MessageType.PUSH_PULL,
        MessageType.USER,
    )
)


def _decode(cls: type[_Body], body: object) -> _Body:
    # The codec's errors, as this module's callers know them.
    return decode_as(cls, body, [(DecodeError, WireError)])


def encode_message(message: Message) -> bytes:
    """
    Encode one message as it travels in a UDP packet (or compound part).

    @raise ValueError: for a push/pull, which only travels on streams.
    """
    if isinstance(message, User):
        return bytes([MessageType.USER]) + message.payload
    if isinstance(message, PushPull):
        raise ValueError("push/pull messages only travel on streams")
    return bytes([message.TYPE]) + encode(message)


def encode_stream_message(message: Message) -> bytes:
    """
    Encode one message as it travels on a TCP stream.

    Push/pull and user messages carry explicit lengths on streams, so the
    reader never waits for EOF.
    """
    if isinstance(message, PushPull):
        header = _PushPullHeader(
            nodes=len(message.nodes),
            user_state_len=len(message.user_state),
            join=message.join,
        )
        parts = [bytes([MessageType.PUSH_PULL]), encode(header)]
        parts.extend(encode(node) for node in message.nodes)
        parts.append(message.user_state)
        return b"".join(parts)
    if isinstance(message, User):
        header_bytes = encode(_UserMsgHeader(len(message.payload)))
        return bytes([MessageType.USER]) + header_bytes + message.payload
    return encode_message(message)


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
    if kind in _GOSSIPED:
        return _decode_gossiped(data)
    return _decode_body(data)


def _decode_body(data: bytes) -> Message:
    kind = data[0]
    cls = _BODY_TYPES.get(kind)
    if cls is None:
        raise WireError(f"message type {kind} not supported on packets")
    try:
        return decode(cls, unpack(data[1:]))
    except DecodeError as e:
        raise WireError(str(e)) from None


# A gossiped message reaches every member several times, from different
# senders, as the same bytes (retransmit_limit times each, 16 at 1,000
# members): decode each once.  The values are frozen, so sharing them is
# safe, and a message that fails to decode is not remembered.
_GOSSIPED = frozenset({MessageType.ALIVE, MessageType.SUSPECT, MessageType.DEAD})
_decode_gossiped = functools.lru_cache(maxsize=2048)(_decode_body)


def _next_object(unpacker: msgpack.Unpacker) -> object:
    try:
        return unpacker.unpack()
    except msgpack.OutOfData:
        raise WireError("stream message truncated") from None
    except Exception as e:  # msgpack raises many unrelated types
        raise WireError(f"bad msgpack in stream: {e}") from None


def _raw_tail(data: bytes, unpacker: msgpack.Unpacker, length: int, what: str) -> bytes:
    # The raw bytes after the msgpack values read so far (data[0] is the
    # type byte, which the unpacker never saw).
    start = 1 + unpacker.tell()
    tail = data[start : start + length]
    if len(tail) != length:
        raise WireError(f"{what} truncated")
    return tail


def _node_state(body: object) -> PushNodeState:
    # The member table reads each entry's address as an IP while it merges
    # them: one that cannot be must fail the whole push/pull here, before
    # anything is merged, rather than halfway through the merge.
    state = _decode(PushNodeState, body)
    if len(state.addr) not in (4, 16):
        raise WireError(
            f"node state {state.name!r}: address must be 4 or 16 bytes, "
            f"got {len(state.addr)}"
        )
    return state


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
        unpacker = stream_unpacker(data[1:])
        header = _decode(_PushPullHeader, _next_object(unpacker))
        nodes = tuple(_node_state(_next_object(unpacker)) for _ in range(header.nodes))
        user_state = _raw_tail(
            data, unpacker, header.user_state_len, "push/pull user state"
        )
        return PushPull(header.join, nodes, user_state)
    if kind == MessageType.USER:
        unpacker = stream_unpacker(data[1:])
        user = _decode(_UserMsgHeader, _next_object(unpacker))
        return User(_raw_tail(data, unpacker, user.user_msg_len, "user message"))
    if kind in (MessageType.PING, MessageType.ACK, MessageType.ERR):
        return decode_message(data)
    raise WireError(f"message type {kind} not supported on streams")


@attrs.define(eq=False)
class StreamMeasure:
    """
    Find where one plain (unencrypted, uncompressed) stream message ends,
    as its bytes arrive.

    Each chunk is fed once to one msgpack unpacker, which resumes a value
    cut short where it stopped: measuring costs time linear in the bytes
    received, however they are cut.  A push/pull's length is only known by
    walking every node state, so re-reading the whole buffer per chunk
    would be quadratic in a large state.
    """

    _unpacker: msgpack.Unpacker = attrs.field(factory=stream_unpacker, init=False)
    _kind: int | None = attrs.field(default=None, init=False)
    _body_read: bool = attrs.field(default=False, init=False)
    _nodes_left: int = attrs.field(default=0, init=False)
    _tail: int = attrs.field(default=0, init=False)
    _received: int = attrs.field(default=0, init=False)
    _length: int | None = attrs.field(default=None, init=False)

    @property
    def length(self) -> int | None:
        """
        The message's whole length, as soon as the bytes so far tell it
        (possibly before the raw tail of a push/pull or user message is in).
        """
        return self._length

    def feed(self, data: bytes) -> int | None:
        """
        Take the next bytes of the stream.

        @return: the message's length once all of it has arrived (later
            bytes belong to no message), else C{None}.
        @raise WireError: when the bytes cannot be a valid stream message.
        """
        self._received += len(data)
        if self._length is None and data:
            if self._kind is None:
                self._kind = data[0]
                if self._kind not in _STREAM_TYPES:
                    raise WireError(
                        f"message type {self._kind} not supported on streams"
                    )
                data = data[1:]
            self._unpacker.feed(data)
            self._length = self._advance()
        if self._length is not None and self._received >= self._length:
            return self._length
        return None

    def _advance(self) -> int | None:
        try:
            if not self._body_read:
                body = self._unpacker.unpack()
                self._body_read = True
                if self._kind == MessageType.PUSH_PULL:
                    lengths = _decode_lengths(_PushPullLengths, body)
                    self._nodes_left = lengths.nodes
                    self._tail = lengths.user_state_len
                elif self._kind == MessageType.USER:
                    self._tail = _decode_lengths(_UserMsgHeader, body).user_msg_len
            while self._nodes_left:
                self._unpacker.skip()
                self._nodes_left -= 1
        except msgpack.OutOfData:
            return None
        except WireError:
            raise
        except Exception as e:  # msgpack raises many unrelated types
            raise WireError(f"bad msgpack in stream: {e}") from None
        return 1 + int(self._unpacker.tell()) + self._tail


def _decode_lengths(cls: type[_Body], body: object) -> _Body:
    return decode_as(
        cls, body, [(OutOfRangeError, LimitError), (DecodeError, WireError)]
    )


def stream_message_length(data: bytes, offset: int = 0) -> int | None:
    """
    How many bytes from C{offset} make up one plain (unencrypted,
    uncompressed) stream message, or C{None} when more bytes are needed
    (L{StreamMeasure} over bytes that are all there).

    @raise WireError: when the bytes cannot start a valid stream message.
    """
    return StreamMeasure().feed(data[offset:])
