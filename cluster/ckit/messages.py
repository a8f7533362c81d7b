"""
ckit's gossip messages, byte for byte (ckit C{internal/messages} and the
push/pull state in C{node.go}).

A state message travels as a memberlist user message: the magic
C{0x12 0x01}, the type byte C{0x01}, then a msgpack map
C{{NewState, NodeName, Time}} (Go field names, sorted, legacy raw
strings).  The push/pull user state is C{{CurrentTime, NodeStates: [...]}}.
Both are Go structs declared once below for L{cluster.gossip.codec}.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from cluster.gossip.codec import (
    DecodeError,
    Kind,
    UnknownValueError,
    decode,
    decode_as,
    encode,
    go,
    unpack,
)
from cluster.peer import PeerState

__all__ = [
    "LocalState",
    "MessageError",
    "StateMessage",
    "UnknownStateError",
    "decode_local_state",
    "decode_state",
    "encode_local_state",
    "encode_state",
]

MAGIC = b"\x12\x01"
TYPE_STATE = 1


class MessageError(ValueError):
    """
    Bytes that are not a ckit message (for example a serf message in a
    mixed cluster).
    """


class UnknownStateError(MessageError):
    """
    A well-formed state message with a C{NewState} we do not know (from a
    newer ckit, say).
    """


@attrs.frozen
class StateMessage:
    """
    C{node_name} moved to C{new_state} at Lamport time C{time} (ckit's
    C{messages.State}; C{peer.State} and C{lamport.Time} are 64-bit
    unsigned in Go).
    """

    node_name: str = attrs.field(metadata=go("NodeName", Kind.STR))
    new_state: PeerState = attrs.field(
        metadata=go("NewState", Kind.UINT64, enum=PeerState)
    )
    time: int = attrs.field(metadata=go("Time", Kind.UINT64))


@attrs.frozen
class _LocalNodeState:
    """
    ckit's C{localNodeState}, the push/pull user state as it travels.
    C{node_states} holds L{StateMessage}s to encode, or the undecoded
    entries after decoding: L{decode_local_state} decodes them one by one
    so that an unknown state costs only its own entry.
    """

    current_time: int = attrs.field(metadata=go("CurrentTime", Kind.UINT64))
    node_states: Sequence[object] = attrs.field(metadata=go("NodeStates", Kind.ARRAY))


def encode_state(message: StateMessage) -> bytes:
    """
    The user-message bytes of a state broadcast.
    """
    return MAGIC + bytes([TYPE_STATE]) + encode(message)


def _decode_state_body(body: object) -> StateMessage:
    return decode_as(
        StateMessage,
        body,
        [(UnknownValueError, UnknownStateError), (DecodeError, MessageError)],
    )


def decode_state(raw: bytes) -> StateMessage:
    """
    Parse a user message as a ckit state message.

    @raise UnknownStateError: when it is one, with a state we do not know.
    @raise MessageError: when it is not one.
    """
    if len(raw) < 3:
        raise MessageError("payload too small for message")
    if raw[:2] != MAGIC:
        raise MessageError(f"invalid magic header {raw[:2].hex()}")
    if raw[2] != TYPE_STATE:
        raise MessageError(f"invalid message type {raw[2]}")
    try:
        body = unpack(raw[3:])
    except DecodeError as e:
        raise MessageError(str(e)) from None
    return _decode_state_body(body)


def encode_local_state(current_time: int, states: Sequence[StateMessage]) -> bytes:
    """
    The push/pull user state: our clock and every peer's last state.
    """
    return encode(_LocalNodeState(current_time, states))


@attrs.frozen
class LocalState:
    """
    A peer's push/pull user state.

    @ivar unknown: how many entries were skipped because their state is
        one we do not know.
    """

    current_time: int
    states: list[StateMessage]
    unknown: int = 0


def decode_local_state(raw: bytes) -> LocalState:
    """
    Parse a peer's push/pull user state.  An entry with a state we do not
    know is skipped (and counted); the others still count.

    @raise MessageError: when it is not ckit's.
    """
    try:
        local = decode(_LocalNodeState, unpack(raw))
    except DecodeError as e:
        raise MessageError(str(e)) from None
    states = []
    unknown = 0
    for entry in local.node_states:
        try:
            states.append(_decode_state_body(entry))
        except UnknownStateError:
            unknown += 1
    return LocalState(local.current_time, states, unknown)
