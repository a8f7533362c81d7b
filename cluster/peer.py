"""
Peers of the cluster and their gossip states (mirrors ckit's C{peer}
package).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping

import attrs

__all__ = ["Peer", "PeerState", "StateTransitionError", "check_transition"]


class PeerState(enum.IntEnum):
    """
    The role a node announces to the cluster through state gossip.

    The integer values are the ones used on the wire (ckit's C{peer.State}).

    @ivar VIEWER: the default state: a read-only view of the cluster, never
        an owner.
    @ivar PARTICIPANT: may own keys for both read and read-write lookups.
    @ivar TERMINATING: shutting down: still an owner for read lookups only.
    """

    VIEWER = 0
    PARTICIPANT = 1
    TERMINATING = 2

    def __str__(self) -> str:
        """
        The lowercase name, as ckit prints it (C{"viewer"}).
        """
        return self.name.lower()

    def __format__(self, spec: str) -> str:
        # IntEnum formats as the integer on Python 3.10; keep f-strings and
        # str() in agreement on every supported version.
        return format(str(self), spec)

    @classmethod
    def parse(cls, text: str) -> PeerState:
        """
        Parse the lowercase name produced by C{str()}; matching is exact, as
        in ckit.

        @raise ValueError: for anything else, with text like ckit's
            C{unknown state "x"}.
        """
        for state in cls:
            if str(state) == text:
                return state
        raise ValueError(f"unknown state {json.dumps(text)}")


class StateTransitionError(ValueError):
    """
    A node asked for a state change that ckit does not allow.

    @ivar current: the state the node was in.
    @ivar target: the state that was requested.
    """

    def __init__(self, current: PeerState, target: PeerState) -> None:
        super().__init__(f"invalid transition from {current} to {target}")
        self.current = current
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
    """
    Check that a node may move from C{current} to C{target}.

    The legal transitions are viewer -> participant and
    participant -> terminating.

    @raise StateTransitionError: unless C{current -> target} is legal.
    """
    if (current, target) not in _VALID_TRANSITIONS:
        raise StateTransitionError(current, target)


@attrs.frozen
class Peer:
    """
    A node discovered in the cluster (ckit's C{peer.Peer}).

    @ivar name: unique name of the node within the cluster.
    @ivar addr: C{"ip:port"} address of the node.
    @ivar is_self: C{True} when this peer is the local node.
    @ivar state: the last gossiped state of the node.
    """

    name: str
    addr: str
    is_self: bool
    state: PeerState

    def __str__(self) -> str:
        """
        The peer's name, as ckit's C{Peer.String} returns it.
        """
        return self.name

    def to_json(self) -> dict[str, str | bool]:
        """
        The JSON object ckit produces: name, addr, isSelf, state.
        """
        return {
            "name": self.name,
            "addr": self.addr,
            "isSelf": self.is_self,
            "state": str(self.state),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Peer:
        """
        Build a peer from the object produced by L{to_json}.

        Like Go's decoder, missing fields take their zero value.

        @raise ValueError: for an unknown state.
        @raise TypeError: for fields of the wrong type.
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
