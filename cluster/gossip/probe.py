"""
Failure detection (memberlist's C{probe} and C{probeNode} in C{state.go}):
one member at a time is pinged; without an ack in C{probe_timeout}, random
helpers ping it for us (and nack when they cannot reach it either) while a
TCP ping tries another path; without any ack by the round's deadline the
member is suspected.

Rounds start on a fixed C{probe_interval} ticker.  A round ends at the
first ack, so a healthy round takes one tick whatever our health score;
only a failed round runs until its deadline, C{probe_interval} scaled by
the Lifeguard health score, which the outcome of each round moves.  Of the
ticks a round overlaps, one waits and starts the next round as soon as it
ends (a Go ticker's one-slot channel); the others are dropped.

L{Prober.ping} is memberlist's C{Ping}: one ping, outside the rounds.

Counted in the member's L{ProbeCounters}: rounds started, degraded and
failed, TCP pings that failed, and the duration of every round that ended.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from cluster.gossip.acks import AckTable
from cluster.gossip.address import Address, join_host_port
from cluster.gossip.awareness import Awareness
from cluster.gossip.config import GossipConfig
from cluster.gossip.counters import ProbeCounters
from cluster.gossip.effects import Effects
from cluster.gossip.errors import NoPingResponseError
from cluster.gossip.members import MemberState, NodeState
from cluster.gossip.messenger import Messenger
from cluster.gossip.origin import Origin
from cluster.gossip.state import MemberTable
from cluster.gossip.timers import Lifecycle, Timers
from cluster.gossip.wire import (
    Ack,
    IndirectPingReq,
    Message,
    Ping,
    Suspect,
    ip_to_bytes,
)

__all__ = ["Prober"]


@attrs.define(eq=False)
class _Round:
    node: NodeState
    incarnation: int
    started: float
    expected_nacks: int = 0
    nacks: int = 0
    tcp_ok: bool = False
    done: bool = False
    indirect: IDelayedCall | None = None


@attrs.define(eq=False)
class Prober:
    """
    The probe rounds of one member, and its one-off pings.

    @ivar origin: stamps our source fields on every ping.
    @ivar effects: carries out the table's changes (a suspicion).
    @ivar counters: where rounds are counted (the member's C{probes}).
    @ivar timers: the member's clock and guarded timers.
    @ivar lifecycle: once the member stopped, no round ends.
    """

    config: GossipConfig
    timers: Timers
    table: MemberTable
    awareness: Awareness
    acks: AckTable
    messenger: Messenger
    counters: ProbeCounters
    origin: Origin
    effects: Effects
    lifecycle: Lifecycle
    _current: _Round | None = attrs.field(default=None, init=False)
    _tick_waiting: bool = attrs.field(default=False, init=False)

    def ping(self, name: str, address: Address) -> Deferred[float]:
        """
        Ping C{name} at C{address} once over UDP, member or not
        (memberlist's C{Ping}): only a process of that name acks.

        @return: a Deferred firing with the round trip in seconds, or
            failing with L{NoPingResponseError} when no ack came within
            C{probe_timeout} (as in memberlist, a late ack is still taken
            until C{probe_interval}, and then ignored).
        """
        seq = self.acks.next_seq()
        sent = self.timers.clock.seconds()
        answered: Deferred[float] = Deferred()

        def acked(payload: bytes | None) -> None:
            if not answered.called:
                answered.callback(self.timers.clock.seconds() - sent)

        def timed_out(result: object, timeout: float) -> Failure:
            return Failure(NoPingResponseError(name, join_host_port(*address)))

        self.acks.expect(seq, acked, None, self.config.probe_interval, lambda: None)
        self.messenger.send(address, self.origin.ping(seq, name))
        return answered.addTimeout(
            self.config.probe_timeout, self.timers.clock, onTimeoutCancel=timed_out
        )

    def tick(self) -> None:
        """
        The ticker fired: probe the next member, unless a round still runs.
        """
        if self._current is not None and not self._current.done:
            self._tick_waiting = True
            return
        node = self.table.next_to_probe()
        if node is not None:
            self._probe(node)

    def _probe(self, node: NodeState) -> None:
        seq = self.acks.next_seq()
        started = self.timers.clock.seconds()
        probe = self._current = _Round(node, node.incarnation, started)
        deadline = self.awareness.scale(self.config.probe_interval)
        self.acks.expect(
            seq,
            lambda payload: self._finished(probe, True),
            lambda: setattr(probe, "nacks", probe.nacks + 1),
            deadline,
            lambda: self._finished(probe, probe.tcp_ok),
        )
        ping = self.origin.ping(seq, node.name)
        address = (node.address, node.port)
        if node.state == MemberState.ALIVE:
            self.messenger.send(address, ping)
        else:
            # Buddy system: tell a suspect it is suspected, so it can refute.
            suspect = Suspect(node.incarnation, node.name, self.table.name)
            self.messenger.send_together(
                address, [ping, suspect], crc=node.protocol_max >= 5
            )
        self.counters.started += 1
        if deadline > self.config.probe_interval:
            self.counters.degraded += 1
        probe.indirect = self.timers.later(
            self.config.probe_timeout,
            self._indirect,
            probe,
            seq,
            deadline - (self.timers.clock.seconds() - started),
        )

    def _indirect(self, probe: _Round, seq: int, remaining: float) -> None:
        if probe.done or self.lifecycle.stopped:
            return
        node = probe.node
        me = self.table.name
        helpers = self.table.random_nodes(
            self.config.indirect_checks,
            lambda n: n.name not in (me, node.name) and n.state == MemberState.ALIVE,
        )
        ping = self.origin.ping(seq, node.name)
        for helper in helpers:
            wants_nack = helper.protocol_max >= 4
            probe.expected_nacks += wants_nack
            request = IndirectPingReq(
                seq_no=seq,
                target=ip_to_bytes(node.address),
                port=node.port,
                node=node.name,
                nack=wants_nack,
                source_addr=ping.source_addr,
                source_port=ping.source_port,
                source_node=ping.source_node,
            )
            self.messenger.send((helper.address, helper.port), request)
        if not self.config.disable_tcp_pings and node.protocol_max >= 3:
            self._tcp_ping(probe, ping, remaining - self.config.probe_timeout)

    def _tcp_ping(self, probe: _Round, ping: Ping, timeout: float) -> None:
        if timeout <= 0:
            return
        address = (probe.node.address, probe.node.port)

        def got(reply: Message | None) -> None:
            if isinstance(reply, Ack) and reply.seq_no == ping.seq_no:
                probe.tcp_ok = True

        d = self.messenger.exchange(address, ping, timeout)
        d.addCallback(got).addErrback(self._tcp_ping_failed)

    def _tcp_ping_failed(self, failure: Failure) -> None:
        self.counters.tcp_pings_failed += 1

    def _finished(self, probe: _Round, ok: bool) -> None:
        if probe.done or self.lifecycle.stopped:
            return
        probe.done = True
        if probe.indirect is not None and probe.indirect.active():
            # Acked in time: no need to wake the reactor for nothing.
            probe.indirect.cancel()
        self.counters.rounds.observe(self.timers.clock.seconds() - probe.started)
        if self._tick_waiting:
            self._tick_waiting = False
            self.timers.later(0, self.tick)
        if ok:
            self.awareness.apply_delta(-1)
            return
        self.counters.failed += 1
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
        else:
            self.awareness.apply_delta(1)
        self.effects.apply(
            self.table.suspect(
                Suspect(probe.incarnation, probe.node.name, self.table.name)
            )
        )
