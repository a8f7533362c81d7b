"""Peers of the cluster and their gossip states (mirrors ckit's ``peer`` package)."""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs

__all__ = ["Peer", "PeerState", "StateTransitionError", "check_transition"]


class PeerState(enum.IntEnum):
    """The role a node announces to the cluster through state gossip.

    The integer values are the ones used on the wire (ckit's ``peer.State``).
    """

    #: Default state: a read-only view of the cluster, never an owner.
    VIEWER = 0
    #: May own keys for both read and read-write lookups.
    PARTICIPANT = 1
    #: Shutting down: still an owner for read lookups only.
    TERMINATING = 2

    def __str__(self) -> str:
        """Return the lowercase name, as ckit prints it (``"viewer"``)."""
        return self.name.lower()

    def __format__(self, spec: str) -> str:
        # IntEnum formats as the integer on Python 3.10; keep f-strings and
        # str() in agreement on every supported version.
        return format(str(self), spec)

    @classmethod
    def parse(cls, text: str) -> PeerState:
        """Parse the lowercase name produced by ``str()``.

        Raises ``ValueError`` (text like ckit's ``unknown state "x"``) for
        anything else; matching is exact, as in ckit.
        """
        for state in cls:
            if str(state) == text:
                return state
        raise ValueError(f"unknown state {json.dumps(text)}")


class StateTransitionError(ValueError):
    """A node asked for a state change that ckit does not allow."""

    def __init__(self, current: PeerState, target: PeerState) -> None:
        super().__init__(f"invalid transition from {current} to {target}")
        #: The state the node was in.
        self.current = current
        #: The state that was requested.
        self.target = target


# Only these two moves exist: a node joins the ring, then leaves it. Everything
# else (including "stay where you are" and going back) is rejected.
_VALID_TRANSITIONS = frozenset(
    {
        (PeerState.VIEWER, PeerState.PARTICIPANT),
        (PeerState.PARTICIPANT, PeerState.TERMINATING),
    }
)


def check_transition(current: PeerState, target: PeerState) -> None:
    """Raise `StateTransitionError` unless ``current -> target`` is legal.

    The legal transitions are viewer -> participant and
    participant -> terminating.
    """
    if (current, target) not in _VALID_TRANSITIONS:
        raise StateTransitionError(current, target)


@attrs.frozen
class Peer:
    """A node discovered in the cluster (ckit's ``peer.Peer``)."""

    #: Unique name of the node within the cluster.
    name: str
    #: ``"ip:port"`` address of the node.
    addr: str
    #: True when this peer is the local node.
    is_self: bool
    #: The last gossiped state of the node.
    state: PeerState

    def __str__(self) -> str:
        """Return the peer's name, as ckit's ``Peer.String`` does."""
        return self.name

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object ckit produces: name, addr, isSelf, state."""
        return {
            "name": self.name,
            "addr": self.addr,
            "isSelf": self.is_self,
            "state": str(self.state),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Peer:
        """Build a peer from the object produced by `to_json`.

        Like Go's decoder, missing fields take their zero value; an unknown
        state raises ``ValueError``, wrong types raise ``TypeError``.
        """
        name = obj.get("name", "")
        addr = obj.get("addr", "")
        is_self = obj.get("isSelf", False)
        state = obj.get("state", "")
        if not isinstance(name, str) or not isinstance(addr, str):
            raise TypeError("peer name and addr must be strings")
        if not isinstance(is_self, bool):
            raise TypeError("peer isSelf must be a boolean")
        if not isinstance(state, str):
            raise TypeError("peer state must be a string")
        return cls(name=name, addr=addr, is_self=is_self, state=PeerState.parse(state))
