"""
What a second review against memberlist found, each pinned by a test: an
accusation at the top of the incarnation range, when the loops first run,
when the delegate is asked for broadcasts, which version vectors are kept,
and how long a dialled stream may take.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from cluster.gossip import GossipConfig, IDelegate, Memberlist, MemberState
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.counters import DropReason, GossipCounters
from cluster.gossip.framing import (
    USER_MESSAGE_OVERHEAD,
    PacketCodec,
    StreamCodec,
)
from cluster.gossip.interfaces import StreamTimeout
from cluster.gossip.messenger import Messenger
from cluster.gossip.state import INCARNATION_CEILING
from cluster.gossip.transport import NetTransport
from cluster.gossip.wire import Alive, Dead, Message, Suspect, encode_message
from cluster.testing import SimulatedNetwork
from tests.helpers import known, start_and_join

UINT32_MAX = 0xFFFFFFFF


def deliver(node: Memberlist, message: Message) -> None:
    """
    Hand C{node} one datagram holding C{message}, from a stranger.
    """
    node.receiver.packet_received(encode_message(message), ("127.9.9.9", 7946))


class IncarnationCeilingTests(SynchronousTestCase):
    """
    No message pushes a member to an incarnation it cannot refute within
    the uint32 wire field; honest incarnations are far below the ceiling.
    """

    def test_accusations_at_the_top_of_the_range_change_nothing(self) -> None:
        for top in (UINT32_MAX, UINT32_MAX - 1, INCARNATION_CEILING):
            network = SimulatedNetwork(seed=171)
            a, b, c = start_and_join(network, "a", "b", "c", settle=5)
            before = b.local_member().incarnation
            where = b.local_member()
            forged: list[Message] = [
                Suspect(top, "b", "mallory"),
                Dead(top, "b", "mallory"),
                Alive(top, "b", bytes(4), 1, b"", bytes([1, 5, 2, 0, 0, 0])),
                Alive(
                    top,
                    "b",
                    bytes(map(int, where.address.split("."))),
                    where.port,
                    b"forged",
                    bytes([1, 5, 2, 0, 0, 0]),
                ),
            ]
            for node in (a, b, c):
                for message in forged:
                    deliver(node, message)
                self.assertEqual(node.counters.dropped[DropReason.INCARNATION], 4, top)
            failed = [n.counters.push_pulls.failed for n in (a, b, c)]
            pulled = b.counters.push_pulls.completed
            network.run(70)  # two push/pull intervals of the local profile
            self.assertGreater(b.counters.push_pulls.completed, pulled)
            self.assertEqual([n.counters.push_pulls.failed for n in (a, b, c)], failed)
            self.assertEqual(b.local_member().incarnation, before)
            for node in (a, c):
                member = known(node, "b")
                self.assertEqual(member.state, MemberState.ALIVE, top)
                self.assertEqual(member.incarnation, before)
                self.assertEqual(member.meta, b"")
            b.leave(5)
            network.run(5)
            for node in (a, c):
                self.assertEqual(known(node, "b").state, MemberState.LEFT, top)

    def test_refutation_of_a_high_honest_accusation_fits_the_wire(self) -> None:
        """
        An accusation above our incarnation (an earlier process under our
        name refuted more) is refuted at one more, just under the ceiling.
        """
        network = SimulatedNetwork(seed=172)
        a, b = start_and_join(network, "a", "b", settle=5)
        accused = INCARNATION_CEILING - 2
        deliver(b, Suspect(accused, "b", "a"))
        self.assertEqual(b.local_member().incarnation, accused + 1)
        self.assertEqual(b.counters.dropped[DropReason.INCARNATION], 0)
        network.run(5)
        self.assertEqual(known(a, "b").incarnation, accused + 1)
        self.assertEqual(known(a, "b").state, MemberState.ALIVE)
        b.leave(5)
        network.run(5)
        self.assertEqual(known(a, "b").state, MemberState.LEFT)


class LoopStartTests(SynchronousTestCase):
    """
    The first probe and gossip round come one interval after a stagger of
    under one interval (memberlist's tickers first fire an interval in).
    """

    def test_first_probe_and_gossip_wait_an_interval(self) -> None:
        config = GossipConfig.local()
        for seed in range(6):
            network = SimulatedNetwork(seed=180 + seed)
            a, _ = start_and_join(network, "a", "b")
            first: dict[str, float] = {}
            while len(first) < 2 and network.clock.seconds() < 5:
                network.run(0.01)
                now = network.clock.seconds()
                if a.counters.probes.started and "probe" not in first:
                    first["probe"] = now
                if a.counters.messages.gossip_sends and "gossip" not in first:
                    first["gossip"] = now
            self.assertGreaterEqual(first["probe"], config.probe_interval)
            self.assertLess(first["probe"], 2 * config.probe_interval + 0.01)
            # A round sends only when something is queued: no upper bound.
            self.assertGreaterEqual(first["gossip"], config.gossip_interval)


@implementer(IDelegate)
class RecordingDelegate:
    """
    Records every room it is offered for user broadcasts.
    """

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, message: bytes) -> None:
        pass

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        self.asked.append((overhead, limit))
        return []

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        pass


class DelegateBroadcastRoomTests(SynchronousTestCase):
    """
    memberlist's C{getBroadcasts}: the delegate is asked only when more than
    the framing of one user message is left.
    """

    def messenger(self, delegate: IDelegate) -> tuple[Messenger, BroadcastQueue]:
        config = GossipConfig.local()
        queue = BroadcastQueue(lambda: 3, config.retransmit_mult)
        transport = NetTransport(MemoryReactorClock(), "127.0.0.1", 0)
        messenger = Messenger(
            config,
            transport,
            PacketCodec(),
            StreamCodec(),
            queue,
            GossipCounters(),
            delegate,
        )
        return messenger, queue

    def test_no_room_no_question(self) -> None:
        delegate = RecordingDelegate()
        messenger, queue = self.messenger(delegate)
        overhead, limit = 2, 100
        room_left = overhead + USER_MESSAGE_OVERHEAD
        queue.queue(b"x" * (limit - overhead - room_left), "full")
        messenger.pending(overhead, limit)
        self.assertEqual(delegate.asked, [])

    def test_room_is_offered(self) -> None:
        delegate = RecordingDelegate()
        messenger, queue = self.messenger(delegate)
        overhead, limit = 2, 100
        room_left = overhead + USER_MESSAGE_OVERHEAD + 1
        queue.queue(b"x" * (limit - overhead - room_left), "nearly")
        messenger.pending(overhead, limit)
        self.assertEqual(
            delegate.asked, [(overhead + USER_MESSAGE_OVERHEAD, room_left)]
        )


class VersionVectorTests(SynchronousTestCase):
    """
    memberlist copies a version vector only when it has all six bytes.
    """

    def test_short_vectors_are_not_kept(self) -> None:
        network = SimulatedNetwork(seed=190)
        (a,) = start_and_join(network, "a", settle=1)
        address = bytes([127, 9, 9, 9])
        full = bytes([1, 5, 4, 2, 5, 4])
        deliver(a, Alive(1, "short", address, 7946, b"", bytes([1, 5, 2])))
        self.assertEqual(known(a, "short").vsn, b"")
        deliver(a, Alive(1, "full", address, 7947, b"", full))
        deliver(a, Alive(2, "full", address, 7947, b"", bytes([1, 5, 2])))
        member = known(a, "full")
        self.assertEqual(member.incarnation, 2)
        self.assertEqual(member.vsn, full)


class DialDeadlineTests(SynchronousTestCase):
    """
    A dialled stream may take C{timeout} to connect, then as long again to
    send and as long again to read the reply (memberlist's push/pull sets a
    fresh deadline for each).
    """

    def exchange(self) -> tuple[MemoryReactorClock, list[object]]:
        clock = MemoryReactorClock()
        transport = NetTransport(clock, "127.0.0.1", 0, stream_timeout=2.0)
        outcome: list[object] = []
        d = transport.exchange(
            ("127.0.0.1", 7946),
            b"request",
            StreamCodec().measure(accepted=False),
            2.0,
        )
        d.addBoth(outcome.append)
        return clock, outcome

    def test_connecting_is_bounded_by_the_timeout(self) -> None:
        clock, outcome = self.exchange()
        clock.advance(1.9)
        self.assertEqual(outcome, [])
        clock.advance(0.2)
        self.assertEqual(len(outcome), 1)
        failure = outcome[0]
        self.assertTrue(getattr(failure, "check", lambda _: False)(StreamTimeout))

    def test_a_slow_connect_leaves_the_full_time_to_send_and_read(self) -> None:
        clock, outcome = self.exchange()
        clock.advance(1.5)
        _, _, factory, _, _ = clock.tcpClients[0]
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        wire = StringTransport()
        protocol.makeConnection(wire)
        self.assertEqual(wire.value(), b"request")
        clock.advance(3.9)  # 5.4 s in: past one timeout after connecting
        self.assertEqual(outcome, [])
        clock.advance(0.2)
        self.assertEqual(len(outcome), 1)
