"""
What a plain memberlist node needs to say to Serf agents sharing its
cluster (C{shared/WIRE.md} section 8).

Serf reports a member as I{left} only when its own leave intent arrived
for it; a memberlist-only leave shows as I{failed}.  With
C{GossipConfig.serf_leave_intent} our leave first sends that intent to every
live member and gossips it.

An agent ignores a leave intent whose LTime is not above the member's
status LTime (serf.go C{handleNodeLeaveIntent}).  That value is the LTime
of the name's last intent; a rejoin under the name does not reset it, and
while the member is I{left} every push/pull merge between agents raises it
by one (so by about agents / push/pull interval a second), until the
tombstone is reaped 24 h later.  So the LTime of our leave intent
(L{SerfClock.next}) is the larger of:

  - one more than the highest Serf member-clock value we witnessed, Serf's
    own rule (C{lamport.go}): the LTime of every join or leave intent that
    reaches us as a user message, and the C{LTime} of every Serf push/pull
    user state we merge (the agent's member clock, which it keeps above
    every status LTime it holds), our join's push/pull with a Serf seed
    first of all; and the LTimes we sent ourselves;
  - the wall clock in milliseconds.  A process restarted under the same
    name has lost what its predecessor witnessed and sent, and still sends
    more than it did, unless the clock went back in between (then the
    join's push/pull with a Serf agent is what covers it).  At the LAN
    push/pull interval of 30 s, milliseconds outrun the agents' increments
    below some 30,000 agents; seconds would not above 30.

Serf accepts any uint64 LTime, however far ahead: it witnesses it (its
member clock jumps there, which is harmless, LTimes being only compared)
and compares.  We never send more than L{MAX_LTIME}, because witnessing
sets Serf's clock to LTime + 1, which must not wrap.  Only with
C{GossipConfig.serf_leave_intent} does a member witness anything; what
is not a well-formed Serf intent or push/pull state is ignored, silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import attrs

from cluster.gossip.codec import DecodeError, Kind, decode, encode, go, unpack
from cluster.gossip.wire import MessageType

__all__ = [
    "MAX_LTIME",
    "SERF_JOIN",
    "SERF_LEAVE",
    "SERF_PUSH_PULL",
    "JoinIntent",
    "LeaveIntent",
    "SerfClock",
    "serf_leave_intent",
]

SERF_LEAVE = 0  # serf's messageLeaveType
SERF_JOIN = 1  # messageJoinType
SERF_PUSH_PULL = 2  # messagePushPullType, the prefix of its push/pull user state
MAX_LTIME = (1 << 64) - 2


@attrs.frozen
class LeaveIntent:
    """
    Serf's C{messageLeave} (type L{SERF_LEAVE}): C{node} leaves, as of
    Lamport time C{ltime}; C{prune} asks every member to forget it at once.
    The Serf layer (L{cluster.serf.messages}) uses this declaration too.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    node: str = attrs.field(metadata=go("Node", Kind.STR))
    prune: bool = attrs.field(metadata=go("Prune", Kind.BOOL))


@attrs.frozen
class JoinIntent:
    """
    Serf's C{messageJoin} (type L{SERF_JOIN}): C{node} joined, as of
    Lamport time C{ltime}.  The Serf layer uses this declaration too.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))
    node: str = attrs.field(metadata=go("Node", Kind.STR))


@attrs.frozen
class _PushPullClock:
    """
    The part of Serf's C{messagePushPull} we read: the sender's member clock.
    """

    ltime: int = attrs.field(metadata=go("LTime", Kind.UINT64))


_Clocked: TypeAlias = LeaveIntent | JoinIntent | _PushPullClock
_INTENTS: Mapping[int, type[_Clocked]] = {
    SERF_LEAVE: LeaveIntent,
    SERF_JOIN: JoinIntent,
}
_STATE: Mapping[int, type[_Clocked]] = {SERF_PUSH_PULL: _PushPullClock}


def _ltime(data: bytes, kinds: Mapping[int, type[_Clocked]]) -> int | None:
    """
    The LTime of C{data}, a Serf type byte and its msgpack body, when the
    type is one of C{kinds} and the body decodes; C{None} otherwise.
    """
    cls = kinds.get(data[0]) if data else None
    if cls is None:
        return None
    try:
        return decode(cls, unpack(data[1:])).ltime
    except DecodeError:
        return None


@attrs.define(eq=False)
class SerfClock:
    """
    Serf's member clock (a Lamport clock) as far as we have seen it, which
    gives the LTime of our next leave intent.

    @ivar time: the highest LTime witnessed or sent so far.
    """

    time: int = 0

    def witness(self, ltime: int) -> None:
        """
        Record an LTime seen (capped at L{MAX_LTIME}).
        """
        self.time = max(self.time, min(ltime, MAX_LTIME))

    def witness_message(self, payload: bytes) -> None:
        """
        Witness a user message's LTime if it is a Serf join or leave intent;
        anything else (another protocol's message, undecodable bytes) is
        ignored.
        """
        ltime = _ltime(payload, _INTENTS)
        if ltime is not None:
            self.witness(ltime)

    def witness_state(self, user_state: bytes) -> None:
        """
        Witness the member clock in a push/pull's user state if it is
        Serf's; anything else is ignored.
        """
        ltime = _ltime(user_state, _STATE)
        if ltime is not None:
            self.witness(ltime)

    def next(self, now: float) -> int:
        """
        The LTime for a leave intent we send now, which counts as witnessed.

        @param now: the wall clock, in seconds since the epoch.
        @return: above every LTime witnessed, at least C{now} in whole
            milliseconds, and at most L{MAX_LTIME}.
        """
        floor = int(max(0.0, now) * 1000)
        self.time = min(max(self.time + 1, floor), MAX_LTIME)
        return self.time


def serf_leave_intent(node: str, ltime: int = 1) -> bytes:
    """
    The user message C{08 00 {LTime, Node, Prune}} announcing that C{node}
    leaves.  C{ltime} must exceed any Lamport time Serf has for the node
    (L{SerfClock.next} gives one): 1 suffices for a node that never sent a
    Serf intent.
    """
    body = encode(LeaveIntent(ltime, node, prune=False))
    return bytes([MessageType.USER, SERF_LEAVE]) + body
