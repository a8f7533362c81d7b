"""
L{PeerStates}: ckit's table of peer states (the bookkeeping of ckit's
C{node.go}): who is in the cluster according to memberlist, what state
each one last announced, and the Lamport-clocked rules that decide which
announcement wins.

The table sends nothing itself: what it wants gossiped goes into its
L{BroadcastQueue}, which the node hands to memberlist as its delegate's
broadcasts, and every change of the peer list is reported to C{on_change}.
See L{cluster.ckit.node} for why a peer's state is forgotten when it departs
and what brings it back.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from cluster.ckit.counters import StateEvents
from cluster.ckit.lamport import LamportClock
from cluster.ckit.messages import (
    StateMessage,
    decode_local_state,
    encode_local_state,
    encode_state,
)
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.members import Member
from cluster.peer import Peer, PeerState, check_transition

__all__ = ["PeerStates"]


@attrs.define(eq=False)
class PeerStates:
    """
    Peers and their announced states.

    @ivar counters: where the table counts what it makes of states it is
        given (the node's C{states} counters).
    @ivar on_change: called after every change of the peer list (read it
        with L{peers}); a push/pull can change a thousand peers one after
        the other, so sorting the list is left to whoever needs it.
    """

    name: str
    retransmit_mult: int
    counters: StateEvents
    on_change: Callable[[], object]
    clock: LamportClock = attrs.field(factory=LamportClock, init=False)
    broadcasts: BroadcastQueue = attrs.field(init=False)
    local: PeerState = attrs.field(default=PeerState.VIEWER, init=False)
    _states: dict[str, StateMessage] = attrs.field(factory=dict, init=False)
    _peers: dict[str, Peer] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.broadcasts = BroadcastQueue(lambda: len(self._peers), self.retransmit_mult)

    def __len__(self) -> int:
        return len(self._peers)

    def peers(self) -> list[Peer]:
        """
        Every peer memberlist reports alive, with its last known state,
        sorted by name.
        """
        return sorted(self._peers.values(), key=lambda p: p.name)

    def state_of(self, name: str) -> StateMessage | None:
        """
        The last state message stored for C{name}, if any.
        """
        return self._states.get(name)

    # --- our own state ---

    def change(
        self, target: PeerState, on_finished: Callable[[], object] | None
    ) -> None:
        """
        Move to C{target} and gossip it with a fresh tick.

        @raise StateTransitionError: unless the move is legal in ckit.
        """
        check_transition(self.local, target)
        self.local = target
        message = StateMessage(self.name, target, self.clock.tick())
        self._store(message)
        self.broadcasts.queue(encode_state(message), self.name, on_finished)

    # --- memberlist's view ---

    def joined(self, member: Member) -> None:
        """
        Memberlist reports C{member} alive (or changed): it is a peer, in
        its stored state, a viewer when none is stored.
        """
        state = self._states.get(member.name)
        self._peers[member.name] = Peer(
            name=member.name,
            addr=member.full_address(),
            is_self=member.name == self.name,
            state=state.new_state if state is not None else PeerState.VIEWER,
        )
        self.on_change()

    def left(self, name: str) -> None:
        """
        Memberlist reports C{name} dead or left: forget it and its state, so
        that a restarted process starts as a viewer.
        """
        self._peers.pop(name, None)
        self._states.pop(name, None)
        self.on_change()

    # --- gossip ---

    def receive(self, message: StateMessage) -> None:
        """
        A state message arrived by gossip: store it if it is news, and
        gossip it on.
        """
        self.clock.observe(message.time)
        accepted = self._accept(message)
        if accepted is None:
            self.counters.stale_state += 1
            return
        self._store(accepted)
        self.broadcasts.queue(encode_state(accepted), accepted.node_name)

    def local_state(self) -> bytes:
        """
        Our push/pull user state: the clock and one entry per peer
        (C{Viewer, 0} where none is stored), as ckit's C{LocalState}.
        """
        states = [
            self._states.get(name) or StateMessage(name, PeerState.VIEWER, 0)
            for name in sorted(self._peers)
        ]
        return encode_local_state(self.clock.now(), states)

    def merge(self, data: bytes) -> None:
        """
        A peer's push/pull user state: take every newer state of a peer we
        know, gossip what was news, and announce our own state again when
        the peer lacks it (see L{cluster.ckit.node}), unless we have left.

        @raise MessageError: when C{data} is not ckit's state.
        """
        remote = decode_local_state(data)
        self.clock.observe(remote.current_time)
        if remote.unknown:
            self.counters.unknown_state += remote.unknown
        changed = []
        for message in remote.states:
            peer = self._peers.get(message.node_name)
            if peer is None:
                continue
            accepted = self._accept(message)
            if accepted is None:
                continue
            self._states[accepted.node_name] = accepted
            self._peers[accepted.node_name] = attrs.evolve(
                peer, state=accepted.new_state
            )
            changed.append(accepted)
        if changed:
            self.on_change()
        for accepted in changed:
            self.broadcasts.queue(encode_state(accepted), accepted.node_name)
        if not self._present():
            # We left: the peer rightly lacks us, and a state announced now
            # would be stored everywhere under a departed name.
            return
        theirs = next((m for m in remote.states if m.node_name == self.name), None)
        mine = self._states.get(self.name)
        if theirs is None or (mine is not None and theirs.time < mine.time):
            self._reannounce(mine)

    # --- ckit's rules ---

    def _store(self, message: StateMessage) -> None:
        self._states[message.node_name] = message
        known = self._peers.get(message.node_name)
        if known is not None:
            self._peers[message.node_name] = attrs.evolve(
                known, state=message.new_state
            )
            self.on_change()

    def _accept(self, message: StateMessage) -> StateMessage | None:
        """
        ckit's rules for a received state: C{None} if it is stale (or about
        us after our leave), else the message to store and gossip on (our
        real state, freshly ticked, when it was about us).
        """
        current = self._states.get(message.node_name)
        if current is not None and message.time <= current.time:
            # Equal times about ourselves with another state: two instances
            # of us collided, and ours must win (ckit's shouldRefute).
            collided = (
                message.node_name == self.name
                and message.time == current.time
                and message.new_state != current.new_state
            )
            if not collided:
                return None
        if message.node_name == self.name:
            if not self._present():
                # A late copy of what we said before our leave: nothing
                # to refute, and nothing to gossip on about a departed name.
                return None
            return StateMessage(self.name, self.local, self.clock.tick())
        return message

    def _present(self) -> bool:
        """
        Whether we are among our own peers: from memberlist's start until
        our own leave (memberlist reports our leave to us as to anyone).
        Absent, we speak for ourselves no more: ckit's C{MergeRemoteState}
        skips names that are not peers, ours included.
        """
        return self.name in self._peers

    def _reannounce(self, mine: StateMessage | None) -> None:
        """
        Broadcast our state again: a peer lacks it (we were away, or we are
        new).  Never stated yet, it is stated now with a fresh tick.
        """
        if self.name in self.broadcasts:
            return  # already on its way
        if mine is None:
            mine = StateMessage(self.name, self.local, self.clock.tick())
            self._store(mine)
        self.counters.state_reannounced += 1
        self.broadcasts.queue(encode_state(mine), self.name)
