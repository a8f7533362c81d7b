"""
ckit's gossip messages, byte for byte (ckit C{internal/messages} and the
push/pull state in C{node.go}).

A state message travels as a memberlist user message: the magic
C{0x12 0x01}, the type byte C{0x01}, then a msgpack map
C{{NewState, NodeName, Time}} (Go field names, sorted, legacy raw
strings).  The push/pull user state is C{{CurrentTime, NodeStates: [...]}}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import msgpack

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
_UINT64 = (1 << 64) - 1

_packer = msgpack.Packer(use_bin_type=False)


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
    C{node_name} moved to C{new_state} at Lamport time C{time}.
    """

    node_name: str
    new_state: PeerState
    time: int

    def fields(self) -> dict[str, Any]:
        return {
            "NewState": int(self.new_state),
            "NodeName": self.node_name,
            "Time": self.time,
        }

    @classmethod
    def from_body(cls, body: object) -> StateMessage:
        if not isinstance(body, dict):
            raise MessageError("state message must be a map")
        name = body.get(b"NodeName", b"")
        state = body.get(b"NewState", 0)
        time = body.get(b"Time", 0)
        if not isinstance(name, bytes):
            raise MessageError("NodeName must be a string")
        for label, value in (("NewState", state), ("Time", time)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise MessageError(f"{label} must be an integer")
            if not 0 <= value <= _UINT64:
                raise MessageError(f"{label} out of range: {value}")
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError("NodeName is not UTF-8") from None
        if state not in PeerState._value2member_map_:
            raise UnknownStateError(f"unknown state {state} for {text!r}")
        return cls(text, PeerState(state), time)


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=True, strict_map_key=False)
    except msgpack.ExtraData as extra:
        return extra.unpacked
    except Exception as e:
        raise MessageError(f"bad msgpack: {e}") from None


def encode_state(message: StateMessage) -> bytes:
    """
    The user-message bytes of a state broadcast.
    """
    body = message.fields()
    packed: bytes = _packer.pack({key: body[key] for key in sorted(body)})
    return MAGIC + bytes([TYPE_STATE]) + packed


def decode_state(raw: bytes) -> StateMessage:
    """
    Parse a user message as a ckit state message.

    @raise MessageError: when it is not one.
    """
    if len(raw) < 3:
        raise MessageError("payload too small for message")
    if raw[:2] != MAGIC:
        raise MessageError(f"invalid magic header {raw[:2].hex()}")
    if raw[2] != TYPE_STATE:
        raise MessageError(f"invalid message type {raw[2]}")
    return StateMessage.from_body(_unpack(raw[3:]))


def encode_local_state(current_time: int, states: Sequence[StateMessage]) -> bytes:
    """
    The push/pull user state: our clock and every peer's last state.
    """
    packed: bytes = _packer.pack(
        {
            "CurrentTime": current_time,
            "NodeStates": [
                {key: s.fields()[key] for key in sorted(s.fields())} for s in states
            ],
        }
    )
    return packed


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
    body = _unpack(raw)
    if not isinstance(body, dict):
        raise MessageError("local state must be a map")
    current = body.get(b"CurrentTime", 0)
    if isinstance(current, bool) or not isinstance(current, int):
        raise MessageError("CurrentTime must be an integer")
    if not 0 <= current <= _UINT64:
        raise MessageError("CurrentTime out of range")
    entries = body.get(b"NodeStates") or []
    if not isinstance(entries, list):
        raise MessageError("NodeStates must be a list")
    states = []
    unknown = 0
    for item in entries:
        try:
            states.append(StateMessage.from_body(item))
        except UnknownStateError:
            unknown += 1
    return LocalState(current, states, unknown)
