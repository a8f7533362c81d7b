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

Counted in the member's C{stats}: C{probes} (rounds started),
C{probes.degraded} (started while our health score stretched the round,
memberlist's C{degraded.probe}), C{probes.failed} (rounds that ended
without an ack), C{tcp_ping.failed}, and the duration of every round that
ended (memberlist's C{probeNode} timing) as a histogram read back with
L{round_histogram}.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from cluster.gossip.acks import AckTable
from cluster.gossip.awareness import Awareness
from cluster.gossip.config import GossipConfig
from cluster.gossip.members import MemberState, NodeState
from cluster.gossip.messenger import Messenger
from cluster.gossip.state import Changes, MemberTable
from cluster.gossip.wire import (
    Ack,
    IndirectPingReq,
    Message,
    Ping,
    Suspect,
    ip_to_bytes,
)

__all__ = ["ROUND_BUCKETS", "Prober", "round_histogram"]

ROUND_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
)
"""
Upper bounds, in seconds, of the probe round histogram: a healthy round
lasts one round trip, a failed one its whole deadline (up to
C{probe_interval} times C{awareness_max_multiplier}: 8 s on a LAN, 40 s on
a WAN).
"""

# The histogram lives in the member's stats Counter: recording a round is
# two Counter increments, and the gossip package needs no metrics library.
# The keys are built once, here.
_BUCKET_KEYS = (
    *(f"probe_rounds.le.{bound}" for bound in ROUND_BUCKETS),
    "probe_rounds.le.inf",
)
_SUM_KEY = "probe_rounds.microseconds"


def round_histogram(stats: Counter[str]) -> tuple[list[tuple[float, int]], float]:
    """
    The probe round durations recorded in C{stats}.

    @return: cumulative C{(upper bound, count)} pairs, one per
        L{ROUND_BUCKETS} entry and a last one for C{inf} (the number of
        rounds), and the sum of the durations in seconds.
    """
    buckets = []
    total = 0
    for bound, key in zip((*ROUND_BUCKETS, float("inf")), _BUCKET_KEYS, strict=True):
        total += stats[key]
        buckets.append((bound, total))
    return buckets, stats[_SUM_KEY] / 1e6


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
    The probe rounds of one member.

    @ivar ping: makes a ping with our source fields, from a sequence number
        and the target's name.
    @ivar apply: carries out the table's changes (a suspicion).
    @ivar call_later: schedules a guarded timer.
    """

    config: GossipConfig
    clock: IReactorTime
    table: MemberTable
    awareness: Awareness
    acks: AckTable
    messenger: Messenger
    stats: Counter[str]
    ping: Callable[[int, str], Ping]
    apply: Callable[[Changes], object]
    call_later: Callable[..., IDelayedCall]
    _current: _Round | None = attrs.field(default=None, init=False)
    _tick_waiting: bool = attrs.field(default=False, init=False)
    stopped: bool = attrs.field(default=False, init=False)

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
        started = self.clock.seconds()
        probe = self._current = _Round(node, node.incarnation, started)
        deadline = self.awareness.scale(self.config.probe_interval)
        self.acks.expect(
            seq,
            lambda payload: self._finished(probe, True),
            lambda: setattr(probe, "nacks", probe.nacks + 1),
            deadline,
            lambda: self._finished(probe, probe.tcp_ok),
        )
        ping = self.ping(seq, node.name)
        address = (node.address, node.port)
        if node.state == MemberState.ALIVE:
            self.messenger.send(address, ping)
        else:
            # Buddy system: tell a suspect it is suspected, so it can refute.
            suspect = Suspect(node.incarnation, node.name, self.table.name)
            self.messenger.send_together(
                address, [ping, suspect], crc=node.protocol_max >= 5
            )
        self.stats["probes"] += 1
        if deadline > self.config.probe_interval:
            self.stats["probes.degraded"] += 1
        probe.indirect = self.call_later(
            self.config.probe_timeout,
            self._indirect,
            probe,
            seq,
            deadline - (self.clock.seconds() - started),
        )

    def _indirect(self, probe: _Round, seq: int, remaining: float) -> None:
        if probe.done or self.stopped:
            return
        node = probe.node
        me = self.table.name
        helpers = self.table.random_nodes(
            self.config.indirect_checks,
            lambda n: n.name not in (me, node.name) and n.state == MemberState.ALIVE,
        )
        ping = self.ping(seq, node.name)
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
        d.addCallback(got).addErrback(lambda f: self.stats.update(["tcp_ping.failed"]))

    def _finished(self, probe: _Round, ok: bool) -> None:
        if probe.done or self.stopped:
            return
        probe.done = True
        if probe.indirect is not None and probe.indirect.active():
            # Acked in time: no need to wake the reactor for nothing.
            probe.indirect.cancel()
        took = max(0.0, self.clock.seconds() - probe.started)
        self.stats[_BUCKET_KEYS[bisect_left(ROUND_BUCKETS, took)]] += 1
        self.stats[_SUM_KEY] += round(took * 1e6)
        if self._tick_waiting:
            self._tick_waiting = False
            self.call_later(0, self.tick)
        if ok:
            self.awareness.apply_delta(-1)
            return
        self.stats["probes.failed"] += 1
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
        else:
            self.awareness.apply_delta(1)
        self.apply(
            self.table.suspect(
                Suspect(probe.incarnation, probe.node.name, self.table.name)
            )
        )
