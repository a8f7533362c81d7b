"""
The member table and its rules (memberlist's C{state.go}): what an alive,
suspect or dead message does to our view of a member, refutation of claims
about ourselves, the merge of a peer's full state, protocol verification,
probe order and reaping.

L{MemberTable} takes decoded messages and a clock and answers with the
L{Changes} they cause: what to broadcast, and which events to tell the
delegates.  It sends nothing itself, so it is tested with no network at
all; L{cluster.gossip.effects.Effects} carries the changes out.
Suspicion timers are the one thing that changes the table on their own:
their changes go to the C{on_timer} callable.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Iterator

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cluster.gossip.config import META_MAX_SIZE, NAME_MAX_SIZE, GossipConfig
from cluster.gossip.counters import DropReason, GossipCounters
from cluster.gossip.members import Member, MemberState, NodeState
from cluster.gossip.nodelog import node_logger
from cluster.gossip.suspicion import Suspicion, suspicion_timeout
from cluster.gossip.wire import (
    Alive,
    Dead,
    PushNodeState,
    Suspect,
    ip_from_bytes,
    ip_to_bytes,
)

__all__ = [
    "Broadcast",
    "Changes",
    "Event",
    "EventKind",
    "MemberTable",
    "ProtocolMismatchError",
    "initial_incarnation",
]


class ProtocolMismatchError(Exception):
    """
    A push/pull carried a member whose protocol versions do not fit ours.
    """


class EventKind(enum.Enum):
    """
    What an L{Event} tells the delegates.
    """

    JOIN = "join"
    LEAVE = "leave"
    UPDATE = "update"
    CONFLICT = "conflict"


@attrs.frozen
class Event:
    """
    A membership event for the event (or conflict) delegate.

    @ivar other: for a conflict, the member claiming C{member}'s name from
        another address.
    """

    kind: EventKind
    member: Member
    other: Member | None = None


@attrs.frozen
class Broadcast:
    """
    A message about member C{name} to gossip; a newer broadcast about the
    same member replaces it in the queue.

    @ivar on_finished: called once it has been sent its full number of
        times (or was replaced).
    """

    name: str
    message: Alive | Suspect | Dead
    on_finished: Callable[[], object] | None = None


@attrs.define
class Changes:
    """
    The effects of one rule, in order: broadcasts first, then events.

    @ivar refuted: we had to refute a claim about ourselves (Lifeguard
        counts that against our health).
    """

    broadcasts: list[Broadcast] = attrs.field(factory=list)
    events: list[Event] = attrs.field(factory=list)
    refuted: bool = False

    def extend(self, other: Changes) -> None:
        """
        Append C{other}'s effects to ours.
        """
        self.broadcasts.extend(other.broadcasts)
        self.events.extend(other.events)
        self.refuted = self.refuted or other.refuted

    def __bool__(self) -> bool:
        return bool(self.broadcasts or self.events or self.refuted)


# Room left above a start-up incarnation for the refutations of a lifetime.
_MAX_INITIAL_INCARNATION = 1 << 31

INCARNATION_CEILING = 3 << 30
"""
The lowest incarnation no honest member reaches: memberlist starts at 1 and
we at most at 2^31 (L{initial_incarnation}), and a member refutes far
fewer than 2^30 times in a lifetime.  A message at or above it is dropped
and counted (L{DropReason.INCARNATION}), whoever it is about, so no member is
ever pushed to where it cannot refute within the uint32 wire field.
"""


def initial_incarnation(now: float) -> int:
    """
    The incarnation a member starts at: the clock's whole seconds (at
    least 1), where memberlist starts every process at 1.

    A deliberate difference from memberlist.  A process restarted under
    the same name then starts above every incarnation its previous process
    reached (unless that one refuted more times than it lived seconds, or
    the clock went back), so its first join push/pull overrides its old
    record (alive, suspect, dead or I{left}) wherever that is held, and
    stale copies of the old record are ignored from then on.  Starting at
    1, it had to hear its old record first and refute it by gossip, and a
    member that missed every copy kept a stale suspicion or I{left} entry
    until a push/pull, up to a push/pull interval later: restarting ten
    nodes of twelve together left such an entry for over 10 s in one
    simulated run in twenty.  Incarnations are uint32 on the wire, so the
    seconds are capped at 2^31, leaving room for refutations (see
    L{INCARNATION_CEILING}).
    """
    return max(1, min(int(now), _MAX_INITIAL_INCARNATION))


@attrs.define(eq=False)
class MemberTable:
    """
    Every member we know, ourselves included, and memberlist's rules over
    them.

    @ivar leaving: set once we announced our own leave: claims that we are
        alive are then ignored and a claim that we are dead is not refuted.
    @ivar incarnation: our own incarnation number.
    @ivar counters: the member's counters; the table counts its changes
        (C{members}) and the messages its rules refuse (C{dropped}).
    """

    name: str
    config: GossipConfig
    clock: IReactorTime
    rng: random.Random
    counters: GossipCounters
    on_timer: Callable[[Changes], object]
    leaving: bool = attrs.field(default=False, init=False)
    incarnation: int = attrs.field(default=0, init=False)
    _nodes: dict[str, NodeState] = attrs.field(factory=dict, init=False)
    _order: list[NodeState] = attrs.field(factory=list, init=False)
    _probe_index: int = attrs.field(default=0, init=False)
    _suspicions: dict[str, Suspicion] = attrs.field(factory=dict, init=False)
    _address: bytes = attrs.field(default=b"", init=False)
    _port: int = attrs.field(default=0, init=False)
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda table: node_logger(table, table.name), takes_self=True
        ),
    )

    # --- reading ---

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self._nodes.values())

    def get(self, name: str) -> NodeState | None:
        """
        Our record of C{name}, if any.
        """
        return self._nodes.get(name)

    def in_probe_order(self) -> list[NodeState]:
        """
        Every member, in our (shuffled) probe order.
        """
        return list(self._order)

    def live(self) -> list[NodeState]:
        """
        Members alive or suspect, ourselves included.
        """
        return [node for node in self._nodes.values() if not node.dead_or_left()]

    def push_states(self) -> tuple[PushNodeState, ...]:
        """
        Every member as a push/pull entry.
        """
        return tuple(
            PushNodeState(
                name=node.name,
                addr=ip_to_bytes(node.address),
                port=node.port,
                meta=node.meta,
                incarnation=node.incarnation,
                state=int(node.state),
                vsn=node.vsn,
            )
            for node in self._nodes.values()
        )

    # --- ourselves ---

    def bootstrap(
        self, address: bytes, port: int, meta: bytes, incarnation: int = 1
    ) -> Changes:
        """
        Enter ourselves, alive at C{incarnation} (see L{initial_incarnation}),
        at the address we advertise.
        """
        self._address, self._port = address, port
        self.incarnation = incarnation
        return self.alive(
            Alive(incarnation, self.name, address, port, meta, self.config.vsn()),
            bootstrap=True,
        )

    def leave(self, on_finished: Callable[[], object]) -> Changes:
        """
        Mark ourselves as leaving and declare ourselves dead; peers record a
        dead message about its own sender as I{left}.
        """
        self.leaving = True
        me = self._nodes.get(self.name)
        if me is None:
            return Changes()
        return self.dead(Dead(me.incarnation, self.name, self.name), on_finished)

    def _plausible(self, incarnation: int) -> bool:
        if incarnation < INCARNATION_CEILING:
            return True
        self.counters.dropped[DropReason.INCARNATION] += 1
        return False

    def _refute(self, me: NodeState, accused_incarnation: int, claim: str) -> Changes:
        """
        Claim ourselves alive above C{accused_incarnation}, and say so once,
        at info level: what we refuted (C{claim}, in words) and the move of
        our incarnation.
        """
        # Below the ceiling on both counts, so this fits the wire's uint32.
        incarnation = max(self.incarnation + 1, accused_incarnation + 1)
        self._log.info(
            "refuted {claim} (incarnation {old} -> {new})",
            claim=claim,
            old=self.incarnation,
            new=incarnation,
        )
        self.incarnation = me.incarnation = incarnation
        self.counters.members.refuted += 1
        alive = Alive(
            incarnation,
            self.name,
            self._address,
            self._port,
            me.meta,
            self.config.vsn(),
        )
        return Changes([Broadcast(self.name, alive)], refuted=True)

    # --- the rules ---

    def _insert(self, node: NodeState) -> None:
        self._nodes[node.name] = node
        # A random position keeps probe order fair for newcomers.
        self._order.append(node)
        last = len(self._order) - 1
        offset = self.rng.randint(0, last)
        self._order[offset], self._order[last] = self._order[last], self._order[offset]

    def _cancel_suspicion(self, name: str) -> None:
        suspicion = self._suspicions.pop(name, None)
        if suspicion is not None:
            suspicion.cancel()

    def alive(
        self,
        alive: Alive,
        bootstrap: bool = False,
        on_finished: Callable[[], object] | None = None,
    ) -> Changes:
        """
        memberlist's C{aliveNode}: a newer incarnation makes a member alive
        (a join when it was dead, left or unknown); a claim about ourselves
        that is not our own view is refuted; another address under a known
        name is a conflict unless the old one left or may be reclaimed.
        """
        changes = Changes()
        if self.leaving and alive.node == self.name:
            return changes
        vsn = alive.vsn
        if len(vsn) >= 3 and (vsn[0] == 0 or vsn[1] == 0 or vsn[0] > vsn[1]):
            self.counters.dropped[DropReason.VERSION] += 1
            return changes
        if not alive.node:
            self.counters.dropped[DropReason.DECODE] += 1
            return changes
        # memberlist peers never send more (they refuse it at home); more
        # is garbage or an attempt to grow our table.
        if len(alive.meta) > META_MAX_SIZE:
            self.counters.dropped[DropReason.META] += 1
            return changes
        if len(alive.node.encode("utf-8")) > NAME_MAX_SIZE:
            self.counters.dropped[DropReason.NAME] += 1
            return changes
        if not self._plausible(alive.incarnation):
            return changes
        address = ip_from_bytes(alive.addr)
        now = self.clock.seconds()
        state = self._nodes.get(alive.node)
        updates_address = False
        if state is None:
            state = NodeState(
                name=alive.node,
                address=address,
                port=alive.port,
                meta=alive.meta,
                incarnation=0,
                state=MemberState.DEAD,
                state_change=now,
                vsn=vsn if len(vsn) >= 6 else b"",
            )
            self._insert(state)
        elif state.address != address or state.port != alive.port:
            reclaimable = (
                self.config.dead_node_reclaim_time > 0
                and now - state.state_change > self.config.dead_node_reclaim_time
            )
            if state.state == MemberState.LEFT or (
                state.state == MemberState.DEAD and reclaimable
            ):
                updates_address = True
            else:
                # The conflict delegate hears of every claim (ckit's node
                # counts them as node_conflict) and says so once per
                # claimant, in words (memberlist logs every claim).
                other = attrs.evolve(
                    state.to_member(), address=address, port=alive.port, meta=alive.meta
                )
                changes.events.append(
                    Event(EventKind.CONFLICT, state.to_member(), other)
                )
                return changes
        is_local = alive.node == self.name
        if alive.incarnation <= state.incarnation and not (is_local or updates_address):
            return changes
        if alive.incarnation < state.incarnation and is_local:
            return changes
        self._cancel_suspicion(alive.node)
        old_state, old_meta = state.state, state.meta
        if is_local and not bootstrap:
            if (
                alive.incarnation == state.incarnation
                and alive.meta == state.meta
                and alive.vsn == self.config.vsn()
            ):
                return changes
            return self._refute(
                state, alive.incarnation, "an alive message about us that is not ours"
            )
        changes.broadcasts.append(Broadcast(alive.node, alive, on_finished))
        if len(vsn) >= 6:
            state.vsn = vsn
        state.incarnation = alive.incarnation
        state.meta = alive.meta
        state.address = address
        state.port = alive.port
        if state.state != MemberState.ALIVE:
            state.state = MemberState.ALIVE
            state.state_change = now
        if old_state in (MemberState.DEAD, MemberState.LEFT):
            changes.events.append(Event(EventKind.JOIN, state.to_member()))
            if not is_local:
                self._log.info(
                    "{member} joined ({address})",
                    member=state.name,
                    address=state.full_address(),
                )
        elif old_meta != state.meta:
            changes.events.append(Event(EventKind.UPDATE, state.to_member()))
        return changes

    def suspect(self, suspect: Suspect) -> Changes:
        """
        memberlist's C{suspectNode}: an alive member becomes suspect and a
        Lifeguard suspicion timer starts (or an independent accuser
        confirms the running one, which shortens it); a suspicion about
        ourselves is refuted.  Unlike memberlist, a suspicion of a newer
        incarnation than the one we suspect starts afresh instead of
        confirming ours.
        """
        state = self._nodes.get(suspect.node)
        if state is None or suspect.incarnation < state.incarnation:
            return Changes()
        if not self._plausible(suspect.incarnation):
            return Changes()
        suspicion = self._suspicions.get(suspect.node)
        if suspicion is not None and suspect.incarnation == state.incarnation:
            if suspicion.confirm(suspect.from_):
                return Changes([Broadcast(suspect.node, suspect)])
            return Changes()
        if suspicion is not None:
            # A newer incarnation is suspected: the member refuted the
            # suspicion we hold and its alive message missed us.  Ours is
            # void; confirming it would declare dead an incarnation the
            # member already refuted (memberlist does), which no other
            # member accepts.  Suspect the new incarnation afresh.
            self._cancel_suspicion(suspect.node)
        elif state.state != MemberState.ALIVE:
            return Changes()
        if state.name == self.name:
            return self._refute(
                state, suspect.incarnation, self._suspicion_from(suspect)
            )
        self.counters.members.suspected += 1
        state.incarnation = suspect.incarnation
        state.state = MemberState.SUSPECT
        changed_at = state.state_change = self.clock.seconds()
        n = len(self._nodes)
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        minimum = suspicion_timeout(
            self.config.suspicion_mult, n, self.config.probe_interval
        )
        maximum = self.config.suspicion_max_timeout_mult * minimum

        def expired(confirmations: int) -> None:
            self._suspicions.pop(suspect.node, None)
            current = self._nodes.get(suspect.node)
            if (
                current is None
                or current.state != MemberState.SUSPECT
                or current.state_change != changed_at
            ):
                return
            waited = self.clock.seconds() - changed_at
            cause = f"no ack for {waited:.1f} s, suspicion confirmed by {confirmations}"
            dead = Dead(current.incarnation, suspect.node, self.name)
            self.on_timer(self._dead(dead, None, cause))

        self._suspicions[suspect.node] = Suspicion(
            self.clock, suspect.from_, k, minimum, maximum, expired
        )
        return Changes([Broadcast(suspect.node, suspect)])

    def dead(
        self, dead: Dead, on_finished: Callable[[], object] | None = None
    ) -> Changes:
        """
        memberlist's C{deadNode}: a member is dead, or I{left} when the
        message comes from the member itself; a claim that we are dead is
        refuted unless we are leaving.
        """
        return self._dead(dead, on_finished)

    def _suspicion_from(self, suspect: Suspect) -> str:
        # A push/pull's suspect or dead entry reaches us as our own
        # suspicion (see merge): the peer that held it is not known here.
        if suspect.from_ == self.name:
            return "a suspicion held by a peer"
        return f"a suspicion from {suspect.from_}"

    def _dead(
        self,
        dead: Dead,
        on_finished: Callable[[], object] | None,
        cause: str | None = None,
    ) -> Changes:
        """
        L{dead}, saying once, at info level, that another member left, or
        failed and why: C{cause}, in words, or by default who declared it.
        """
        state = self._nodes.get(dead.node)
        if state is None or dead.incarnation < state.incarnation:
            return Changes()
        if not self._plausible(dead.incarnation):
            return Changes()
        self._cancel_suspicion(dead.node)
        if state.dead_or_left():
            return Changes()
        if state.name == self.name and not self.leaving:
            return self._refute(
                state, dead.incarnation, f"being declared dead by {dead.from_}"
            )
        state.incarnation = dead.incarnation
        state.state = MemberState.LEFT if dead.node == dead.from_ else MemberState.DEAD
        state.state_change = self.clock.seconds()
        if state.state == MemberState.DEAD:
            self.counters.members.declared_dead += 1
            self._log.info(
                "{member} failed: {cause}",
                member=dead.node,
                cause=cause or f"declared dead by {dead.from_}",
            )
        elif dead.node != self.name:
            self._log.info("{member} left", member=dead.node)
        return Changes(
            [Broadcast(dead.node, dead, on_finished)],
            [Event(EventKind.LEAVE, state.to_member())],
        )

    # --- push/pull ---

    def merge(self, remote: Iterable[PushNodeState]) -> Changes:
        """
        memberlist's C{mergeState}, after C{verifyProtocol}: each remote
        entry as the message it stands for.  A remote I{dead} is only a
        suspicion to us (we check for ourselves); a state we do not know
        (a newer peer's) is ignored.

        @raise ProtocolMismatchError: and nothing is merged, when the
            versions do not fit (see L{verify_protocol}).
        """
        remote = list(remote)
        self.verify_protocol(remote)
        changes = Changes()
        for entry in remote:
            if entry.state == MemberState.ALIVE:
                port = entry.port
                if port == 0 or self.config.protocol_version < 2:
                    # Protocol 1 sent no port: it is the bind port.
                    port = self.config.bind_port
                alive = Alive(
                    entry.incarnation,
                    entry.name,
                    entry.addr,
                    port,
                    entry.meta,
                    entry.vsn,
                )
                changes.extend(self.alive(alive))
            elif entry.state == MemberState.LEFT:
                changes.extend(
                    self.dead(Dead(entry.incarnation, entry.name, entry.name))
                )
            elif entry.state in (MemberState.DEAD, MemberState.SUSPECT):
                changes.extend(
                    self.suspect(Suspect(entry.incarnation, entry.name, self.name))
                )
        return changes

    def verify_protocol(self, remote: Iterable[PushNodeState]) -> None:
        """
        memberlist's C{verifyProtocol}: the version ranges of every alive
        member, remote (with a full version vector) and local, must admit
        the current versions of every member, remote and local, in any state.

        @raise ProtocolMismatchError: naming the first member that does not fit.
        """
        remote = list(remote)
        versions = [
            entry.vsn
            for entry in remote
            if entry.state == MemberState.ALIVE and len(entry.vsn) >= 5
        ] + [
            node.vsn.ljust(6, b"\0")
            for node in self._nodes.values()
            if node.state == MemberState.ALIVE
        ]
        if not versions:
            return
        max_pmin = max(v[0] for v in versions)
        min_pmax = min(v[1] for v in versions)
        max_dmin = max(v[3] for v in versions)
        min_dmax = min(v[4] for v in versions)
        # A vector too short to hold the current versions reads as zeros.
        checked = [
            (entry.name, entry.vsn if len(entry.vsn) >= 6 else bytes(6))
            for entry in remote
        ] + [(node.name, node.vsn.ljust(6, b"\0")) for node in self._nodes.values()]
        for name, vsn in checked:
            if not max_pmin <= vsn[2] <= min_pmax:
                raise ProtocolMismatchError(
                    f"Node '{name}' protocol version ({vsn[2]}) is incompatible: "
                    f"[{max_pmin}, {min_pmax}]"
                )
            if not max_dmin <= vsn[5] <= min_dmax:
                raise ProtocolMismatchError(
                    f"Node '{name}' delegate protocol version ({vsn[5]}) is "
                    f"incompatible: [{max_dmin}, {min_dmax}]"
                )

    # --- probe order, reaping, random members ---

    def next_to_probe(self) -> NodeState | None:
        """
        The next member to probe in our shuffled order (memberlist's
        C{probe}): ourselves and the dead or left are skipped, and each
        pass over the list ends with L{reset}.  C{None} when nobody is
        found within one pass (as in memberlist, a pass counts the wrap).
        """
        checked = 0
        while checked < len(self._order):
            if self._probe_index >= len(self._order):
                self.reset()
                self._probe_index = 0
                checked += 1
                continue
            node = self._order[self._probe_index]
            self._probe_index += 1
            if node.name == self.name or node.dead_or_left():
                checked += 1
                continue
            return node
        return None

    def reset(self) -> None:
        """
        Forget members dead or left for longer than
        C{gossip_to_the_dead_time}, and reshuffle the probe order
        (memberlist's C{resetNodes}).
        """
        now = self.clock.seconds()
        keep = []
        for node in self._order:
            if (
                node.dead_or_left()
                and node.name != self.name
                and now - node.state_change > self.config.gossip_to_the_dead_time
            ):
                del self._nodes[node.name]
                self.counters.members.reaped += 1
            else:
                keep.append(node)
        self.rng.shuffle(keep)
        self._order = keep

    def random_nodes(
        self, k: int, wanted: Callable[[NodeState], bool]
    ) -> list[NodeState]:
        """
        Up to C{k} distinct members for which C{wanted} holds, at random:
        memberlist's C{kRandomNodes}, which draws random members and stops
        after C{k} hits or C{3 n} draws.  Its cost is O(k), not O(n), on
        every gossip tick and probe; with few members the 3 n draws make
        the search all but exhaustive, and a member it misses is found at
        the next tick, as in memberlist.
        """
        order = self._order
        count = len(order)
        found: list[NodeState] = []
        randrange = self.rng.randrange
        for _ in range(3 * count):
            if len(found) >= k:
                break
            node = order[randrange(count)]
            if wanted(node) and node not in found:
                found.append(node)
        return found

    def shutdown(self) -> None:
        """
        Stop every suspicion timer.
        """
        for suspicion in self._suspicions.values():
            suspicion.cancel()
        self._suspicions.clear()
