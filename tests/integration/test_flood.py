"""
A real member on 127.0.0.1, in a cluster of two, under 100,000 bad
datagrams (made as L{tests.unit.test_fuzz} makes them): it stays in its
cluster, answers pings and counts every one dropped.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, cast

import attrs
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from cluster.gossip import GossipConfig, Memberlist, MemberState
from cluster.gossip.wire import (
    Ack,
    Ping,
    decode_message,
    encode_message,
)
from tests.helpers import known, wait_for
from tests.unit.test_fuzz import FRAME_REASONS, bad_packets

if TYPE_CHECKING:
    pass

_log = Logger()


FLOOD = 100_000
# Bad datagrams in flight at once: kept well under what a default socket
# receive buffer holds (212,992 bytes on Linux, ~1 KiB of it per small
# datagram), so that pacing, not the kernel, decides what arrives.
WINDOW = 64
# A raw ping goes out after this many bad datagrams.
PING_EVERY = 10_000
# Seconds without a datagram read after which those unread count as lost.
STALL = 1.0


@attrs.define(eq=False)
class Flood:
    """
    Bad datagrams from a plain UDP socket to a real member, paced so that
    at most L{WINDOW} are unread at once, with a raw ping every
    L{PING_EVERY}.

    @ivar packets: the bad datagrams, sent in turn (again from the first
        if more are needed).
    @ivar pings: the sequence numbers of the raw pings sent.
    @ivar acked: those answered so far.
    @ivar lost: datagrams the kernel dropped, as far as pacing could tell.
    """

    target: Memberlist
    packets: list[bytes]
    clock: IReactorTime
    pings: set[int] = attrs.field(factory=set)
    acked: set[int] = attrs.field(factory=set)
    sent: int = 0
    lost: int = 0
    _socket: socket.socket = attrs.field(init=False)
    _failed_before: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.setblocking(False)
        self._failed_before = self.target.counters.traffic.packets_in_failed

    def close(self) -> None:
        """
        Close our socket.
        """
        self._socket.close()

    def handled(self) -> int:
        """
        How many of our bad datagrams the member has refused so far.
        """
        return self.target.counters.traffic.packets_in_failed - self._failed_before

    def ping(self) -> None:
        """
        Send the member a raw ping with the next sequence number.
        """
        seq = len(self.pings)
        self.pings.add(seq)
        codec = self.target.receiver.packets
        packet = codec.seal(encode_message(Ping(seq, self.target.name)), crc=False)
        self._socket.sendto(packet, ("127.0.0.1", self.target.port))

    def all_acked(self) -> bool:
        """
        Read what the member sent us: whether every ping has been acked.
        """
        codec = self.target.receiver.packets
        while True:
            try:
                data = self._socket.recv(65536)
            except BlockingIOError:
                return self.pings <= self.acked
            for part in codec.messages(codec.open(data)):
                message = decode_message(part)
                if isinstance(message, Ack):
                    self.acked.add(message.seq_no)

    async def run(self, count: int) -> None:
        """
        Send until the member has refused C{count} of our datagrams, with
        a raw ping before each L{PING_EVERY} of them.
        """
        address = ("127.0.0.1", self.target.port)
        progress, last_progress, stalls = 0, self.clock.seconds(), 0
        while self.handled() < count:
            while self.sent - self.lost - self.handled() < WINDOW:
                if self.sent % PING_EVERY == 0 and self.sent < count:
                    self.ping()
                packet = self.packets[self.sent % len(self.packets)]
                try:
                    self._socket.sendto(packet, address)
                except BlockingIOError:
                    break
                self.sent += 1
            # One reactor turn: the member reads and handles what is there.
            await deferLater(self.clock, 0, lambda: None)
            self.all_acked()
            if self.handled() > progress:
                progress = self.handled()
                last_progress, stalls = self.clock.seconds(), 0
            elif self.clock.seconds() - last_progress > STALL:
                # Nothing read for a while: what is unread was lost.
                self.lost = self.sent - self.handled()
                last_progress = self.clock.seconds()
                stalls += 1
                if stalls == 10:
                    raise AssertionError(
                        f"the member read nothing for {10 * STALL} s, "
                        f"after {self.handled()} bad datagrams"
                    )


class FloodTests(TestCase):
    """
    A real member on 127.0.0.1, in a cluster of two, under 100,000 bad
    datagrams.
    """

    timeout = 120

    async def test_bad_packets_change_nothing(self) -> None:
        """
        Every bad datagram is counted and dropped; meanwhile and afterwards
        the member answers pings, its peer never suspects it, and its member
        list stays as it was.  The rate handled is logged.
        """
        clock = cast(IReactorTime, reactor)
        nodes = [
            Memberlist(
                GossipConfig.lan(name=name, bind_address="127.0.0.1", bind_port=0),
                reactor=reactor,
            )
            for name in ("target", "peer")
        ]
        target, peer = nodes
        config = target.config
        await gatherResults([node.start() for node in nodes])
        flood = None
        try:
            await peer.join([f"127.0.0.1:{target.port}"])
            await wait_for(
                lambda: target.num_members() == 2,
                config.push_pull_interval,
                "the target lists its peer",
            )
            packets = bad_packets(target.receiver.packets, target.name, FLOOD, 2026)
            flood = Flood(target, packets, clock)
            members, incarnation = target.members(), known(peer, "target").incarnation
            counted, peer_counted = target.counters.snapshot(), peer.counters.snapshot()

            started, cpu = clock.seconds(), time.process_time()
            await flood.run(FLOOD)
            took, cpu = clock.seconds() - started, time.process_time() - cpu
            # Each raw ping had thousands of bad datagrams behind it.
            self.assertTrue(flood.all_acked(), "a ping went unanswered")
            probes = peer.counters.probes.started
            _log.info(
                "flood: {count} bad datagrams handled in {took:.1f} s, {rate:.0f}/s "
                "({cpu_rate:.0f} per CPU second, sender included), {lost} lost "
                "in the kernel; {pings} raw pings answered, {probes} probes "
                "from the peer meanwhile",
                count=flood.handled(),
                took=took,
                rate=flood.handled() / took,
                cpu_rate=flood.handled() / cpu,
                lost=flood.lost,
                pings=len(flood.acked),
                probes=probes - peer_counted.probes.started,
            )

            flood.ping()
            # A probe's own deadline, with room for a busy machine.
            await wait_for(flood.all_acked, 5 * config.probe_timeout, "ping acked")
            # Two more probe rounds from the peer, the second one begun
            # after the flood; at worst each is stretched by the peer's
            # health score (Lifeguard), and a loaded machine needs that room.
            await wait_for(
                lambda: peer.counters.probes.started >= probes + 2,
                2 * config.probe_interval * config.awareness_max_multiplier
                + config.probe_timeout,
                "the peer probes the target twice more",
            )
            growth = target.counters - counted
            drops = growth.dropped
            self.assertGreaterEqual(growth.traffic.packets_in, FLOOD)
            self.assertGreaterEqual(growth.traffic.packets_in_failed, FLOOD)
            self.assertGreaterEqual(
                sum(drops.values()), growth.traffic.packets_in_failed
            )
            self.assertLessEqual(set(drops), FRAME_REASONS)
            _log.info(
                "flood: dropped by reason {drops}",
                drops={reason.value: count for reason, count in drops.items()},
            )
            self.assertEqual(target.members(), members)
            self.assertEqual(peer.counters.probes.failed, peer_counted.probes.failed)
            self.assertEqual(
                peer.counters.members.suspected, peer_counted.members.suspected
            )
            self.assertEqual(known(peer, "target").state, MemberState.ALIVE)
            self.assertEqual(known(peer, "target").incarnation, incarnation)
        finally:
            if flood is not None:
                flood.close()
            await gatherResults([node.shutdown() for node in nodes])
