"""
L{Node}: ckit's node over our memberlist (ckit C{node.go} and
C{observer.go}).

A node is a gossip member with a I{peer state}: a viewer from the start, a
participant once it owns work (L{Node.change_state}), terminating when it is
about to leave.  States spread as Lamport-clocked user messages and in
push/pull state, so every node converges on the same peer list, and so on
the same sharder answer.

A peer that memberlist reports dead or left loses its stored state, so a
restarted process (same name) comes back as a viewer, and nothing about a
departed peer is kept, so a live peer declared dead by mistake has its real
state accepted again.  Where ckit waits for push/pull to repair that, a
node broadcasts its state again whenever a push/pull shows the other side
lacks it, and a process that never stated one announces itself a viewer
with a fresh Lamport tick after its first join.

The peer changes of one reactor turn are applied together at the next
turn: the sharder first (in steps of about ten milliseconds, one per turn,
when it is an L{cluster.shard.ISteppedSharder}; lookups answer from the
previous peers until the last step), then the observers, each with one
sorted peer list.  L{Node.peers} is always current, and our own state
change is applied at once.

A node whose first join finds its name held by a live process at another
address (it acks a ping under the name) never takes part: it stops without
a leave and L{Node.start} fails with L{NameConflictError}.  Until that
verdict its peer state is not gossiped.  A previous process of ours that
crashed does not ack, and the node goes on.

A node counts (L{Node.counters}) and knows nothing of Prometheus: its
collector is a L{cluster.ckit.metrics.NodeMetrics}, registered by whoever
owns the registry.

The reasons and numbers behind these rules are in C{docs/sharding.md},
C{docs/differences.md} (ckit) and C{docs/reliability.md} (restarts).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import CooperativeTask, Cooperator, TaskStopped
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from cluster.ckit.counters import NodeCounters
from cluster.ckit.messages import MessageError, decode_state
from cluster.ckit.states import PeerStates
from cluster.gossip import GossipConfig, Member, Memberlist, NoPingResponseError
from cluster.gossip.interfaces import (
    IBroadcastWaker,
    IConflictDelegate,
    IDelegate,
    IEventDelegate,
    ITransport,
    reactor_or_global,
)
from cluster.gossip.nodelog import node_logger
from cluster.peer import Peer, PeerState, StateTransitionError
from cluster.serf.tags import TAG_BROADCAST_TIMEOUT, tags_meta
from cluster.shard import ISharder, ISteppedSharder

__all__ = [
    "FuncObserver",
    "IObserver",
    "NameConflictError",
    "Node",
    "NodeStoppedError",
    "Observer",
    "ParticipantObserver",
    "StateTransitionError",
]

LEAVE_TIMEOUT = 5.0
# Pings of a conflicting address before it counts as gone: a lost packet
# must not let a second process take a live node's name.
NAME_CHECK_PINGS = 3
# Conflicts remembered as logged; a flood of claims from ever new
# addresses must not grow the set without bound.
REPORTED_CONFLICTS_MAX = 1024

_IN_USE = (
    "node name {name} is already used by {holder}; this node ({me}) will not "
    "become ready"
)


class NodeStoppedError(Exception):
    """
    The node was stopped and cannot be started again.
    """


class NameConflictError(Exception):
    """
    Another live process uses our node name, and the cluster keeps its
    address: this node does not take part.  The message names both
    addresses.
    """


class IObserver(Interface):
    """
    Told about peer list changes (ckit's C{Observer}); register one with
    L{Node.observe}.
    """

    def notify_peers_changed(peers: list[Peer]) -> bool:
        """
        C{peers} is the new list, sorted by name.

        @return: whether to stay registered.
        """


Observer = IObserver
"""
The former name of L{IObserver}, kept for one release: use L{IObserver}.
It is the interface itself, so C{IObserver.providedBy}, not
C{isinstance}, tells whether an object is one.
"""


@implementer(IObserver)
@attrs.frozen
class FuncObserver:
    """
    An L{IObserver} from a plain function.
    """

    func: Callable[[list[Peer]], bool]

    def notify_peers_changed(self, peers: list[Peer]) -> bool:
        return self.func(peers)


@implementer(IObserver)
@attrs.define(eq=False)
class ParticipantObserver:
    """
    Pass changes on to C{next} only when the set of participants changed.
    As ckit's, it starts from no participants, so a first list without any
    is no change and is not passed on.
    """

    next: IObserver
    _last: list[Peer] = attrs.field(factory=list, init=False)

    def notify_peers_changed(self, peers: list[Peer]) -> bool:
        participants = sorted(
            (p for p in peers if p.state == PeerState.PARTICIPANT),
            key=lambda p: p.name,
        )
        if participants == self._last:
            return True
        self._last = participants
        return self.next.notify_peers_changed(peers)


def _stepping(clock: IReactorTime) -> Cooperator:
    """
    A L{Cooperator} on C{clock} that runs one step of its task per turn:
    a sharder cuts its update into steps of about ten milliseconds, so no
    turn holds the reactor longer than one step.
    """
    return Cooperator(
        # Checked after each step: the turn always ends there.
        terminationPredicateFactory=lambda: lambda: True,
        scheduler=lambda tick: clock.callLater(0, tick),
    )


def _copy(tags: Mapping[str, str]) -> dict[str, str]:
    return dict(tags)


@attrs.define(eq=False)
class Node:
    """
    A cluster node: a L{Memberlist} plus ckit's peer states.

    @ivar config: gossip settings; the node installs its own delegate as
        the memberlist's delegate, event and conflict delegate.
    @ivar sharder: fed the peer list after every change (at the next
        reactor turn, in steps when it is an L{ISteppedSharder}), before
        observers run.
    @ivar reactor: time and sockets (the global reactor when C{None}).
    @ivar transport: the gossip transport (a real one when C{None}).
    @ivar counters: what the node counts: ckit's gossip events, the peer
        states passed on, what the peer state table makes of states, and
        how long observers took to be told of each change.
    @ivar updating: C{True} while observers are being told of a change.
    @ivar name_conflict: set when our name turned out to be used by another
        live process (see the module's docstring); the node is then
        stopped for good.
    @ivar tags: our Serf tags, advertised in our node meta (none: an empty
        meta); L{set_tags} changes them.
    """

    config: GossipConfig
    sharder: ISharder | None = None
    reactor: IReactorTime = attrs.field(default=None, converter=reactor_or_global)
    transport: ITransport | None = None
    rng: random.Random | None = None
    tags: dict[str, str] = attrs.field(factory=dict, kw_only=True, converter=_copy)

    memberlist: Memberlist = attrs.field(init=False)
    counters: NodeCounters = attrs.field(factory=NodeCounters, init=False)
    updating: bool = attrs.field(default=False, init=False)
    states: PeerStates = attrs.field(init=False)
    name_conflict: NameConflictError | None = attrs.field(default=None, init=False)
    _delegate: _NodeDelegate = attrs.field(init=False)
    # Whether a join succeeded yet; while the first one and the check of
    # its outcome run, claims of our name from other addresses are kept
    # (by address) to be checked.
    _joined_once: bool = attrs.field(default=False, init=False)
    _checking: bool = attrs.field(default=False, init=False)
    _claims: dict[str, Member] = attrs.field(factory=dict, init=False)
    # (name, holder, claimant) of the conflicts logged, oldest first.
    _reported: dict[tuple[str, str, str], None] = attrs.field(factory=dict, init=False)
    _peer_cache: list[Peer] = attrs.field(factory=list, init=False)
    _peers_stale: bool = attrs.field(default=False, init=False)
    _observers: list[IObserver] = attrs.field(factory=list, init=False)
    # Peer changes counted, and the count the sharder was last updated for.
    _changes: int = attrs.field(default=0, init=False)
    _applied_changes: int = attrs.field(default=0, init=False)
    _update_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _notify_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _to_notify: list[Peer] | None = attrs.field(default=None, init=False)
    # The sharder update running in steps, one per turn of our clock.
    _steps: CooperativeTask[Iterator[None]] | None = attrs.field(
        default=None, init=False
    )
    _cooperator: Cooperator = attrs.field(
        init=False,
        default=attrs.Factory(lambda node: _stepping(node.reactor), takes_self=True),
    )
    _applying: list[Peer] = attrs.field(factory=list, init=False)
    _last_applied: list[Peer] | None = attrs.field(default=None, init=False)
    _last_notified: list[Peer] | None = attrs.field(default=None, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    # Tells the waiter of our last state change that it has spread, and
    # fires when our leave has: both end early once nobody else is left.
    _announcing: Callable[[], None] | None = attrs.field(default=None, init=False)
    _leaving: Deferred[None] | None = attrs.field(default=None, init=False)
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda node: node_logger(node, node.name), takes_self=True
        ),
    )

    def __attrs_post_init__(self) -> None:
        self.states = PeerStates(
            self.config.name,
            self.config.retransmit_mult,
            self.counters.states,
            self._peers_changed,
        )
        delegate = self._delegate = _NodeDelegate(
            self.states, self.counters, self._conflict, meta=tags_meta(self.tags)
        )
        config = attrs.evolve(
            self.config, delegate=delegate, events=delegate, conflict=delegate
        )
        self.memberlist = Memberlist(
            config,
            reactor=self.reactor,
            transport=self.transport,
            rng=self.rng or random.Random(),
        )

    @property
    def name(self) -> str:
        """
        Our node name.
        """
        return self.config.name

    def set_tags(self, tags: Mapping[str, str]) -> Deferred[bool]:
        """
        Advertise C{tags} in place of ours (Serf's C{SetTags}): an alive
        message with our next incarnation spreads them
        (L{Memberlist.update_node}).

        @return: a Deferred firing with C{True} once the change was gossiped
            (at once before the node starts, which advertises them), or
            C{False} after Serf's C{BroadcastTimeout}.
        @raise ValueError: naming the tag, when they do not fit in a node
            meta (see L{tags_meta}); ours stay as they were.
        """
        if self._stopped:
            return fail(self.name_conflict or NodeStoppedError("node stopped"))
        self._delegate.meta = tags_meta(tags)
        self.tags = dict(tags)
        if not self.memberlist.lifecycle.running:
            return succeed(True)
        return self.memberlist.update_node(TAG_BROADCAST_TIMEOUT)

    # --- lifecycle ---

    def start(self, peers: Sequence[str] = ()) -> Deferred[int]:
        """
        Start gossiping (once) and join C{peers}.  May be called again at
        any time to rejoin; local state is never reset.

        @return: a Deferred firing with how many peers were contacted; it
            fails when C{peers} is not empty and none answered, and with
            L{NameConflictError} when, at our first join, another live
            process turned out to hold our name (the node is then stopped).
        """
        if self._stopped:
            return fail(self.name_conflict or NodeStoppedError("node stopped"))
        started = self.memberlist.start()
        if not peers:
            return started.addCallback(lambda _: 0)
        if self._joined_once:
            return started.addCallback(lambda _: self.memberlist.join(list(peers)))
        return started.addCallback(
            lambda _: Deferred.fromCoroutine(self._first_join(list(peers)))
        )

    def stop(self) -> Deferred[None]:
        """
        Leave the cluster (bounded by 5 s, and no longer than until every
        other peer is gone) and shut down.  Idempotent.
        """
        if self._stopped:
            return succeed(None)
        self._halt_updates()
        leave = self.memberlist.leave(LEAVE_TIMEOUT)
        leave.addErrback(lambda f: self._log.failure("leave failed", f))
        leaving = self._leaving = Deferred()
        leave.addBoth(lambda _: self._nobody_to_tell())
        return leaving.addCallback(lambda _: self.memberlist.shutdown())

    def _nobody_to_tell(self) -> None:
        """
        Our state change and our leave have spread, or nobody but us is
        left to hear them (the peers stopping with us left first: they
        would wait out their timeouts for nobody).
        """
        announced, self._announcing = self._announcing, None
        if announced is not None:
            announced()
        if self._leaving is not None and not self._leaving.called:
            self._leaving.callback(None)

    def _alone(self) -> bool:
        """
        Whether no peer but ourselves is alive (we are not one of our peers
        any more once our leave went out).
        """
        return len(self.states) <= 1 and all(p.is_self for p in self.states.peers())

    def _halt_updates(self) -> None:
        self._stopped = True
        for call in (self._update_call, self._notify_call):
            if call is not None and call.active():
                call.cancel()
        self._update_call = self._notify_call = None
        if self._steps is not None:
            self._steps.stop()

    # --- name conflicts ---

    async def _first_join(self, peers: list[str]) -> int:
        """
        Join as L{Memberlist.join}, keeping the claims of our name that the
        replies bring, then check them.
        """
        self._checking = True
        try:
            contacted = await self.memberlist.join(peers)
            self._joined_once = True
            await self._check_claims()
        finally:
            self._checking = False
            self._claims.clear()
            if self.name_conflict is None and self._delegate.muted:
                self._delegate.unmute()
        return contacted

    async def _check_claims(self) -> None:
        """
        Ping each address that holds our name (more may come meanwhile):
        one that acks is another live process of our name, and we give way
        (see I{Name conflicts}).
        """
        me = self.memberlist.local_member().full_address()
        gone: dict[str, Member] = {}
        while self._claims and not self._stopped:
            address, holder = self._claims.popitem()
            if address in gone:
                continue
            if not await self._answers(holder):
                gone[address] = holder
                continue
            fields = {"name": self.name, "holder": holder.full_address(), "me": me}
            self._log.error(_IN_USE, **fields)
            self.name_conflict = NameConflictError(_IN_USE.format(**fields))
            self._halt_updates()
            # No leave: it would announce the holder's name as left.
            await self.memberlist.shutdown()
            raise self.name_conflict
        for address in gone:
            self._reported_once((self.name, me, address))
            self._log.warn(
                "node name {name} is still listed at {holder}, which does not "
                "answer: the cluster takes this node ({me}) once it has "
                "declared that entry dead and forgotten it",
                name=self.name,
                holder=address,
                me=me,
            )

    async def _answers(self, holder: Member) -> bool:
        for _ in range(NAME_CHECK_PINGS):
            try:
                await self.memberlist.ping(self.name, (holder.address, holder.port))
            except NoPingResponseError:
                continue
            return True
        return False

    def _conflict(self, existing: Member, other: Member) -> None:
        """
        memberlist refused C{other}'s claim of the name of C{existing}, the
        member it holds under that name.
        """
        if self._stopped:
            return
        if existing.name == self.name and self._checking:
            # The cluster holds our name elsewhere: checked after the join;
            # say nothing as ourselves until then.
            self._claims.setdefault(other.full_address(), other)
            self._delegate.muted = True
            return
        holder, claimant = existing.full_address(), other.full_address()
        if self._reported_once((existing.name, holder, claimant)):
            self._log.warn(
                "{name} at {claimant} claims the name of {name} at {holder}; "
                "keeping {holder}",
                name=existing.name,
                claimant=claimant,
                holder=holder,
            )

    def _reported_once(self, key: tuple[str, str, str]) -> bool:
        """
        Note C{key} as reported: C{True} the first time.
        """
        if key in self._reported:
            return False
        if len(self._reported) >= REPORTED_CONFLICTS_MAX:
            del self._reported[next(iter(self._reported))]
        self._reported[key] = None
        return True

    # --- states ---

    def current_state(self) -> PeerState:
        """
        Our own peer state.
        """
        return self.states.local

    def lamport_time(self) -> int:
        """
        Our Lamport clock.
        """
        return self.states.clock.now()

    def change_state(self, target: PeerState) -> Deferred[None]:
        """
        Move to C{target} (viewer to participant, participant to
        terminating) and gossip it.

        @return: a Deferred firing once the broadcast has been sent its full
            number of times (at once with at most one peer), or failing with
            L{StateTransitionError}.  Cancelling it stops the wait, not the
            change.
        """
        waiter: Deferred[None] = Deferred(lambda d: None)

        def finished() -> None:
            if self._announcing is finished:
                self._announcing = None
            if not waiter.called:
                waiter.callback(None)

        try:
            self.states.change(target, finished)
        except StateTransitionError:
            return fail()
        if target == PeerState.TERMINATING:
            # We are about to leave: the peers must hear it first, not after
            # the states of everyone stopping with us.
            self.states.broadcasts.expedite(self.name)
        # As in ckit, our own lookups see our new state at once.
        self._update_now()
        self._announcing = finished
        if len(self.states) <= 1:
            finished()
        return waiter

    def peers(self) -> list[Peer]:
        """
        Every peer we know, viewers included, sorted by name.
        """
        if self._peers_stale:
            self._peer_cache = self.states.peers()
            self._peers_stale = False
        return list(self._peer_cache)

    def observe(self, observer: IObserver) -> None:
        """
        Register C{observer}; it runs after the sharder on every change.
        """
        self._observers.append(observer)

    def observer_count(self) -> int:
        """
        How many observers are registered.
        """
        return len(self._observers)

    # --- telling the sharder and the observers ---

    def _peers_changed(self) -> None:
        self._peers_stale = True
        self._changes += 1
        if (self._announcing or self._leaving) and self._alone():
            # At the next turn: memberlist is in the middle of a change.
            self.reactor.callLater(0, self._nobody_to_tell)
        # One update per reactor turn, and none while one is in steps (it
        # looks again when it ends).
        if self._update_call is None and self._steps is None and not self._stopped:
            self._update_call = self.reactor.callLater(0, self._update)

    def _update_now(self) -> None:
        """
        Apply pending changes now rather than at the next turn (unless an
        update is in steps: it looks again when it ends).
        """
        if self._steps is None and self._update_call is not None:
            self._update_call.cancel()
            self._update()

    def _update(self) -> None:
        self._update_call = None
        self._applied_changes = self._changes
        peers = self.peers()
        if peers == self._last_applied:
            self._notify_observers(peers)
            return
        self._last_applied = self._applying = peers
        stepped = ISteppedSharder(self.sharder, None)
        if stepped is not None:
            steps = iter(stepped.set_peers_in_steps(peers))
            # The first step at once: an update of one step (any small one)
            # takes effect now, as our own state change must.
            try:
                next(steps)
            except StopIteration:
                self._updated()
                return
            self._steps = self._cooperator.cooperate(steps)
            self._steps.whenDone().addCallbacks(
                lambda _: self._updated(), self._update_failed
            )
            return
        if self.sharder is not None:
            self.sharder.set_peers(peers)
        self._notify_observers(peers)

    def _updated(self) -> None:
        """
        The sharder holds the peers being applied: tell the observers, and
        apply the changes that came in the meantime.
        """
        self._steps = None
        self._notify_observers(self._applying)
        if self._changes != self._applied_changes and not self._stopped:
            self._update_call = self.reactor.callLater(0, self._update)

    def _update_failed(self, failure: Failure) -> None:
        """
        The update in steps was stopped with the node, or the sharder
        failed; the latter is logged, and the next change tries again.
        """
        self._steps = None
        if not failure.check(TaskStopped):
            self._log.failure("sharder update failed", failure)

    def _notify_observers(self, peers: list[Peer]) -> None:
        # At the next turn, as ckit queues its notifications; observers
        # only ever see the latest list.
        self._to_notify = peers
        if self._notify_call is None and not self._stopped:
            self._notify_call = self.reactor.callLater(0, self._notify_now)

    def _notify_now(self) -> None:
        self._notify_call = None
        # Changes still waiting for their turn go in first, so observers see
        # the latest list; an update in steps tells them when it ends.
        self._update_now()
        if self._steps is not None:
            return
        peers, self._to_notify = self._to_notify, None
        if peers is None or peers == self._last_notified:
            return
        self._last_notified = peers
        # Timed on our clock, as everything else here: with a real reactor
        # that is the wall time the observers took, as ckit measures it.
        started = self.reactor.seconds()
        self.updating = True
        keep = []
        try:
            for observer in self._observers:
                try:
                    stays = observer.notify_peers_changed(list(peers))
                except Exception:
                    self._log.failure("observer {observer!r} failed", observer=observer)
                    stays = True
                if stays:
                    keep.append(observer)
        finally:
            self.updating = False
            self.counters.update_durations.observe(self.reactor.seconds() - started)
        self._observers = keep


@implementer(IDelegate, IBroadcastWaker, IEventDelegate, IConflictDelegate)
@attrs.define(eq=False)
class _NodeDelegate:
    """
    What the memberlist calls back into (ckit's C{nodeDelegate}): gossip
    goes to the peer state table, each call counted as ckit counts it.
    """

    states: PeerStates
    counters: NodeCounters
    on_conflict: Callable[[Member, Member], object]
    # While set, our peer states are not gossiped (see Node._conflict).
    muted: bool = False
    # Our node meta: our Serf tags (see Node.set_tags).
    meta: bytes = b""
    _wake: Callable[[], object] | None = None
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda delegate: node_logger(delegate, delegate.states.name),
            takes_self=True,
        ),
    )

    def unmute(self) -> None:
        """
        Gossip our peer states again, at once if any are queued.
        """
        self.muted = False
        if self._wake is not None:
            self._wake()

    def node_meta(self, limit: int) -> bytes:
        return self.meta

    def notify_msg(self, message: bytes) -> None:
        try:
            state = decode_state(message)
        except MessageError as e:
            # Not ckit's (a serf event in a mixed cluster, say): count it.
            self.counters.received.unknown_message += 1
            self._log.debug("ignoring gossip message: {error}", error=e)
            return
        self.counters.received.state_change_message += 1
        stale = self.counters.states.stale_state
        self.states.receive(state)
        if self.counters.states.stale_state == stale:
            # Not stale, so it was queued to be gossiped on: the broadcast
            # ckit counts.
            self.counters.state_broadcasts += 1

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        if self.muted:
            return []
        return self.states.broadcasts.get(overhead, limit)

    def watch_broadcasts(self, wake: Callable[[], object]) -> None:
        self.states.broadcasts.on_queued = self._wake = wake

    def local_state(self, join: bool) -> bytes:
        self.counters.received.get_local_state += 1
        return self.states.local_state()

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        self.counters.received.merge_remote_state += 1
        try:
            self.states.merge(state)
        except MessageError as e:
            self.counters.states.unknown_state += 1
            self._log.debug("ignoring remote state: {error}", error=e)

    def notify_join(self, member: Member) -> None:
        self.counters.received.node_join += 1
        self.states.joined(member)

    def notify_leave(self, member: Member) -> None:
        self.counters.received.node_leave += 1
        self.states.left(member.name)

    def notify_update(self, member: Member) -> None:
        self.counters.received.node_update += 1
        self.states.joined(member)

    def notify_conflict(self, existing: Member, other: Member) -> None:
        self.counters.received.node_conflict += 1
        self.on_conflict(existing, other)
