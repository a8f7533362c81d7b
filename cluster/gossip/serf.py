"""
What a plain memberlist node needs to say to Serf agents sharing its
cluster (C{shared/WIRE.md} section 8).

Serf reports a member as I{left} only when its own leave intent arrived
for it; a memberlist-only leave shows as I{failed}.  With
C{GossipConfig.serf_leave_intent} our leave first sends that intent to every
live member and gossips it.
"""

from __future__ import annotations

import attrs

from cluster.gossip.codec import Kind, encode, go
from cluster.gossip.wire import MessageType

__all__ = ["SERF_LEAVE", "serf_leave_intent"]

SERF_LEAVE = 0  # serf's messageLeaveType


@attrs.frozen
class _LeaveIntent:
    """
    Serf's C{messageLeave}: C{node} leaves, as of Lamport time C{ltime}.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    node: str = attrs.field(metadata=go("Node", Kind.STR))
    prune: bool = attrs.field(metadata=go("Prune", Kind.BOOL))


def serf_leave_intent(node: str, ltime: int = 1) -> bytes:
    """
    The user message C{08 00 {LTime, Node, Prune}} announcing that C{node}
    leaves.  C{ltime} must exceed any Lamport time Serf has for the node:
    1 suffices for a node that never sent a Serf join intent.
    """
    body = encode(_LeaveIntent(ltime, node, prune=False))
    return bytes([MessageType.USER, SERF_LEAVE]) + body
