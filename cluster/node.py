"""
L{Node}: ckit's node over our memberlist (ckit C{node.go} and
C{observer.go}).

A node is a gossip member with a I{peer state}: it starts as a viewer,
becomes a participant when it is ready to own work, and terminating when it
is about to leave.  States spread as Lamport-clocked user messages and in
push/pull state, so every node converges on the same peer list, and so on
the same sharder answer.

Departures and returns
======================

As in ckit, a peer that memberlist reports dead or left loses its stored
state, so that a restarted process (same name) comes back as a viewer.
Two dangers meet here, and this module answers both with one rule that
ckit does not have:

  - I{A live peer's state must come back.}  A peer declared dead by
    mistake (a partition, a pause, one-way loss) keeps its state and its
    Lamport time; nothing makes it send that state again.  A guard that
    rejected "old" messages about departed peers (an earlier version of
    this module kept such tombstones) would reject that real state
    forever, and the two sides would each own every key.  So nothing
    about a departed peer is remembered: its real state is accepted from
    any push/pull, as in ckit.
  - I{A restarted peer must not take its old state back.}  Copies of the
    previous process's state messages may still be in flight; stored
    anywhere, they would make the new process a participant it is not.

  The rule: B{when a push/pull shows that the other side lacks our
  current state} (it does not list us, or lists an older state), B{we
  broadcast our state again}; when we have never stated one (a fresh
  process), with a fresh Lamport tick.  A returning peer therefore
  re-announces itself at the first push/pull after it is reachable (a
  periodic one, or the join of the rejoin loop), and its state is back
  everywhere within one push/pull interval; a restarted process announces
  itself as a viewer at its first join, after its clock has observed the
  cluster's time, so its announcement is newer than any copy of its old
  state and wins everywhere, and a late copy that still reaches the new
  process is refuted by ckit's own rule (a message about ourselves is
  replaced by our real state with a fresh tick).  The cost is one
  broadcast per start and per return; in a settled cluster every
  push/pull lists everyone's current state and nothing is re-sent.
  C{tests/test_ownership.py} proves both under partitions, one-way loss,
  false deaths and restarts.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from cluster.gossip import GossipConfig, Member, Memberlist
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.interfaces import IConflictDelegate, IDelegate, IEventDelegate
from cluster.lamport import LamportClock
from cluster.messages import (
    MessageError,
    StateMessage,
    decode_local_state,
    decode_state,
    encode_local_state,
    encode_state,
)
from cluster.peer import Peer, PeerState, StateTransitionError, check_transition
from cluster.shard import Sharder

__all__ = [
    "FuncObserver",
    "Node",
    "NodeStoppedError",
    "Observer",
    "ParticipantObserver",
    "StateTransitionError",
]

LEAVE_TIMEOUT = 5.0


class NodeStoppedError(Exception):
    """
    The node was stopped and cannot be started again.
    """


class Observer(Protocol):
    """
    Told about peer list changes.
    """

    def notify_peers_changed(self, peers: list[Peer]) -> bool:
        """
        C{peers} is the new list, sorted by name.

        @return: whether to stay registered.
        """


@attrs.frozen
class FuncObserver:
    """
    An L{Observer} from a plain function.
    """

    func: Callable[[list[Peer]], bool]

    def notify_peers_changed(self, peers: list[Peer]) -> bool:
        return self.func(peers)


@attrs.define(eq=False)
class ParticipantObserver:
    """
    Pass changes on to C{next} only when the set of participants changed.
    """

    next: Observer
    _last: list[Peer] | None = attrs.field(default=None, init=False)

    def notify_peers_changed(self, peers: list[Peer]) -> bool:
        participants = sorted(
            (p for p in peers if p.state == PeerState.PARTICIPANT),
            key=lambda p: p.name,
        )
        if participants == self._last:
            return True
        self._last = participants
        return self.next.notify_peers_changed(peers)


@attrs.define(eq=False)
class Node:
    """
    A cluster node: a L{Memberlist} plus ckit's peer states.

    @param config: gossip settings; the node installs itself as the
        memberlist's delegate, event and conflict delegate.
    @param sharder: fed every peer change before observers run.
    @ivar events: counters of gossip events, named as ckit's
        C{cluster_node_gossip_received_events_total} labels.
    """

    config: GossipConfig
    sharder: Sharder | None = None
    reactor: Any = None
    transport: Any = None
    rng: random.Random | None = None

    memberlist: Memberlist = attrs.field(init=False)
    events: Counter[str] = attrs.field(factory=Counter, init=False)
    clock: LamportClock = attrs.field(factory=LamportClock, init=False)
    broadcasts: BroadcastQueue = attrs.field(init=False)
    _local_state: PeerState = attrs.field(default=PeerState.VIEWER, init=False)
    _peer_states: dict[str, StateMessage] = attrs.field(factory=dict, init=False)
    _peers: dict[str, Peer] = attrs.field(factory=dict, init=False)
    _peer_cache: list[Peer] = attrs.field(factory=list, init=False)
    _observers: list[Observer] = attrs.field(factory=list, init=False)
    _pending: list[Peer] | None = attrs.field(default=None, init=False)
    _pending_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _last_notified: list[Peer] | None = attrs.field(default=None, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        delegate = _NodeDelegate(self)
        config = attrs.evolve(
            self.config, delegate=delegate, events=delegate, conflict=delegate
        )
        self.memberlist = Memberlist(
            config,
            reactor=self.reactor,
            transport=self.transport,
            rng=self.rng or random.Random(),
        )
        self.reactor = self.memberlist.reactor
        self.broadcasts = BroadcastQueue(
            lambda: len(self._peers), self.config.retransmit_mult
        )

    @property
    def name(self) -> str:
        return self.config.name

    # --- lifecycle ---

    def start(self, peers: Sequence[str] = ()) -> Deferred[int]:
        """
        Start gossiping (once) and join C{peers}.  May be called again at
        any time to rejoin; local state is never reset.

        @return: a Deferred firing with how many peers were contacted; it
            fails only when C{peers} is not empty and none answered.
        """
        if self._stopped:
            return fail(NodeStoppedError("node stopped"))
        started = self.memberlist.start()
        if not peers:
            return started.addCallback(lambda _: 0)
        return started.addCallback(lambda _: self.memberlist.join(list(peers)))

    def stop(self) -> Deferred[None]:
        """
        Leave the cluster (bounded by 5 s) and shut down.  Idempotent.
        """
        if self._stopped:
            return succeed(None)
        self._stopped = True
        if self._pending_call is not None and self._pending_call.active():
            self._pending_call.cancel()
        self._pending_call = None
        d = self.memberlist.leave(LEAVE_TIMEOUT)
        d.addErrback(lambda f: self._log.failure("leave failed", f))
        return d.addBoth(lambda _: self.memberlist.shutdown())

    # --- states ---

    def current_state(self) -> PeerState:
        """
        Our own peer state.
        """
        return self._local_state

    def lamport_time(self) -> int:
        """
        Our Lamport clock.
        """
        return self.clock.now()

    def change_state(self, target: PeerState) -> Deferred[None]:
        """
        Move to C{target} (viewer to participant, participant to
        terminating) and gossip it.

        @return: a Deferred firing once the broadcast has been sent its full
            number of times (at once with at most one peer), or failing with
            L{StateTransitionError}.  Cancelling it stops the wait, not the
            change.
        """
        try:
            check_transition(self._local_state, target)
        except StateTransitionError:
            return fail()
        waiter: Deferred[None] = Deferred(lambda d: None)

        def finished() -> None:
            if not waiter.called:
                waiter.callback(None)

        self._local_state = target
        message = StateMessage(self.name, target, self.clock.tick())
        self._store_peer_state(message)
        self.broadcasts.queue(encode_state(message), self.name, finished)
        if len(self._peers) <= 1:
            finished()
        return waiter

    def peers(self) -> list[Peer]:
        """
        Every peer we know, viewers included, sorted by name.
        """
        return list(self._peer_cache)

    def observe(self, observer: Observer) -> None:
        """
        Register C{observer}; it runs after the sharder on every change.
        """
        self._observers.append(observer)

    # --- state bookkeeping (ckit node.go) ---

    def _store_peer_state(self, message: StateMessage) -> None:
        self._peer_states[message.node_name] = message
        known = self._peers.get(message.node_name)
        if known is not None:
            self._peers[message.node_name] = attrs.evolve(
                known, state=message.new_state
            )
            self._peers_changed()

    def _should_refute(self, cached: StateMessage, received: StateMessage) -> bool:
        return (
            received.node_name == self.name
            and received.time == cached.time
            and received.new_state != cached.new_state
        )

    def _accept(self, message: StateMessage) -> StateMessage | None:
        """
        Apply ckit's rules to a received state: C{None} if it is stale,
        else the message to store and re-broadcast (our real state, freshly
        ticked, when it was about us).
        """
        current = self._peer_states.get(message.node_name)
        if (
            current is not None
            and message.time <= current.time
            and not self._should_refute(current, message)
        ):
            return None
        if message.node_name == self.name:
            return StateMessage(self.name, self._local_state, self.clock.tick())
        return message

    def _handle_state(self, message: StateMessage) -> None:
        self.clock.observe(message.time)
        accepted = self._accept(message)
        if accepted is None:
            self.events["stale_state"] += 1
            return
        self._store_peer_state(accepted)
        self.broadcasts.queue(encode_state(accepted), accepted.node_name)

    def _peers_changed(self) -> None:
        peers = sorted(self._peers.values(), key=lambda p: p.name)
        if self.sharder is not None:
            self.sharder.set_peers(peers)
        self._peer_cache = peers
        # Coalesce: observers only ever see the latest list.
        self._pending = peers
        if self._pending_call is None and not self._stopped:
            self._pending_call = self.reactor.callLater(0, self._notify_observers)

    def _notify_observers(self) -> None:
        self._pending_call = None
        peers, self._pending = self._pending, None
        if peers is None or peers == self._last_notified:
            return
        self._last_notified = peers
        keep = []
        for observer in self._observers:
            try:
                stays = observer.notify_peers_changed(list(peers))
            except Exception:
                self._log.failure("observer {observer!r} failed", observer=observer)
                stays = True
            if stays:
                keep.append(observer)
        self._observers = keep

    def _update_peer(self, member: Member) -> None:
        state = self._peer_states.get(member.name)
        self._peers[member.name] = Peer(
            name=member.name,
            addr=member.full_address(),
            is_self=member.name == self.name,
            state=state.new_state if state is not None else PeerState.VIEWER,
        )
        self._peers_changed()

    def _remove_peer(self, name: str) -> None:
        self._peers.pop(name, None)
        # Forget its state, so that a restarted node starts as a viewer (see
        # the module docstring for what brings a live peer's state back).
        self._peer_states.pop(name, None)
        self._peers_changed()

    def _local_state_bytes(self) -> bytes:
        states = [
            self._peer_states.get(name) or StateMessage(name, PeerState.VIEWER, 0)
            for name in sorted(self._peers)
        ]
        return encode_local_state(self.clock.now(), states)

    def _merge_remote(self, data: bytes) -> None:
        remote = decode_local_state(data)
        self.clock.observe(remote.current_time)
        if remote.unknown:
            self.events["unknown_state"] += remote.unknown
        changed = []
        for message in remote.states:
            if message.node_name not in self._peers:
                continue
            accepted = self._accept(message)
            if accepted is None:
                continue
            self._peer_states[accepted.node_name] = accepted
            peer = self._peers[accepted.node_name]
            self._peers[accepted.node_name] = attrs.evolve(
                peer, state=accepted.new_state
            )
            changed.append(accepted)
        if changed:
            self._peers_changed()
        for accepted in changed:
            self.broadcasts.queue(encode_state(accepted), accepted.node_name)
        theirs = next((m for m in remote.states if m.node_name == self.name), None)
        mine = self._peer_states.get(self.name)
        if theirs is None or (mine is not None and theirs.time < mine.time):
            self._reannounce(mine)

    def _reannounce(self, mine: StateMessage | None) -> None:
        """
        Broadcast our state again: a peer lacks it (we were away, or we are
        new).  Never stated yet, it is stated now with a fresh tick.
        """
        if self.name in self.broadcasts:
            return  # already on its way
        if mine is None:
            mine = StateMessage(self.name, self._local_state, self.clock.tick())
            self._store_peer_state(mine)
        self.events["state_reannounced"] += 1
        self.broadcasts.queue(encode_state(mine), self.name)


@implementer(IDelegate, IEventDelegate, IConflictDelegate)
@attrs.define(eq=False)
class _NodeDelegate:
    """
    What the memberlist calls back into (ckit's C{nodeDelegate}).
    """

    node: Node

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, message: bytes) -> None:
        try:
            state = decode_state(message)
        except MessageError as e:
            # Not ckit's (a serf event in a mixed cluster, say): count it.
            self.node.events["unknown_message"] += 1
            self.node._log.debug("ignoring gossip message: {error}", error=e)
            return
        self.node.events["state_change"] += 1
        self.node._handle_state(state)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return self.node.broadcasts.get(overhead, limit)

    def local_state(self, join: bool) -> bytes:
        self.node.events["get_local_state"] += 1
        return self.node._local_state_bytes()

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        self.node.events["merge_remote_state"] += 1
        try:
            self.node._merge_remote(state)
        except MessageError as e:
            self.node.events["unknown_state"] += 1
            self.node._log.debug("ignoring remote state: {error}", error=e)

    def notify_join(self, member: Member) -> None:
        self.node.events["node_join"] += 1
        self.node._update_peer(member)

    def notify_leave(self, member: Member) -> None:
        self.node.events["node_leave"] += 1
        self.node._remove_peer(member.name)

    def notify_update(self, member: Member) -> None:
        self.node.events["node_update"] += 1
        self.node._update_peer(member)

    def notify_conflict(self, existing: Member, other: Member) -> None:
        self.node.events["node_conflict"] += 1
