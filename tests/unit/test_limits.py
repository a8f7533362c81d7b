"""
What a peer can make a node hold, and for how long: stream frames are
measured as they arrive (each byte once) and refused as soon as they say
they are over a limit, accepted streams are capped in number and in time,
a datagram is read whole, broadcast queues are bounded, and member entries
with oversized meta or names are dropped.  Every refusal is counted.
"""

from __future__ import annotations

import random
import socket
import struct
from functools import partial
from typing import cast

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cluster.gossip import GossipConfig
from cluster.gossip.broadcast import MIN_QUEUE_DEPTH, BroadcastQueue
from cluster.gossip.codec import pack
from cluster.gossip.config import META_MAX_SIZE, NAME_MAX_SIZE
from cluster.gossip.counters import DropReason, GossipCounters
from cluster.gossip.framing import (
    MAX_ENCRYPTED_STREAM,
    MAX_PACKET_DECOMPRESSED,
    MAX_STREAM_BYTES,
    FrameError,
    FrameMeasure,
    PacketCodec,
    StreamCodec,
    compress_message,
    decompress_message,
    make_compound,
)
from cluster.gossip.interfaces import IFrameMeasure, IPacketHandler
from cluster.gossip.keyring import Keyring
from cluster.gossip.net import DROP_REPORT_INTERVAL
from cluster.gossip.state import MemberTable
from cluster.gossip.transport import MAX_INBOUND_STREAMS, NetTransport
from cluster.gossip.wire import (
    MAX_PUSH_NODES,
    MAX_USER_BYTES,
    Ack,
    Alive,
    Message,
    MessageType,
    Ping,
    PushNodeState,
    PushPull,
    User,
    encode_message,
    ip_to_bytes,
)
from cluster.testing import SimulatedNetwork
from tests.helpers import VSN, wait_for
from tests.unit.test_loopback import local_node, send_stream
from tests.unit.test_protocol import AppDelegate

LOCALHOST = ip_to_bytes("127.0.0.1")


def push_pull(nodes: int, user_state: bytes = b"state") -> PushPull:
    states = tuple(
        PushNodeState(f"node-{i}", LOCALHOST, 7946 + i, b"m" * (i % 40), i, i % 4, VSN)
        for i in range(nodes)
    )
    return PushPull(False, states, user_state)


def header(nodes: int, user_state_len: int) -> bytes:
    """
    The start of a plain push/pull claiming these lengths.
    """
    return bytes([MessageType.PUSH_PULL]) + pack(
        {"Join": False, "Nodes": nodes, "UserStateLen": user_state_len}
    )


def pieces(data: bytes, rng: random.Random, most: int) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(most, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


class FrameMeasureTests(SynchronousTestCase):
    """
    L{FrameMeasure} finds the end of a frame however its bytes are cut.
    """

    def frames(self) -> list[tuple[StreamCodec, bytes]]:
        keyring = Keyring([bytes(range(32))])
        big = push_pull(300, b"u" * 5000)
        frames = []
        for codec in [
            StreamCodec(compression=False),
            StreamCodec(),
            StreamCodec(label=b"cluster-a", compression=False),
            StreamCodec(label=b"cluster-a"),
            StreamCodec(keyring=keyring, label=b"k"),
        ]:
            messages: list[Message] = [
                big,
                push_pull(0, b""),
                User(b"payload" * 50),
                Ping(1, "a"),
            ]
            for message in messages:
                frames.append((codec, codec.encode(message, dialler=True)))
        return frames

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IFrameMeasure, FrameMeasure(accepted=True)))

    def test_every_cut(self) -> None:
        """
        Fed in any pieces, the measure answers the frame's length exactly
        when its last byte arrives, and not before; bytes after it (none
        are sent, but a peer could) change nothing.
        """
        rng = random.Random(7)
        for codec, frame in self.frames():
            for most in (1, 3, 40, len(frame)):
                measure = codec.measure(accepted=True)
                answers = [measure.feed(piece) for piece in pieces(frame, rng, most)]
                self.assertEqual(answers[-1], len(frame))
                self.assertEqual(set(answers[:-1]), {None} if answers[:-1] else set())
                self.assertEqual(measure.feed(b"trailing"), len(frame))

    def test_byte_by_byte(self) -> None:
        for codec, frame in self.frames():
            if len(frame) > 3000:
                continue
            measure = codec.measure(accepted=True)
            answers = [measure.feed(frame[i : i + 1]) for i in range(len(frame))]
            self.assertEqual(answers.count(None), len(frame) - 1)
            self.assertEqual(answers[-1], len(frame))

    def test_oversized_claims_refused_at_the_header(self) -> None:
        """
        A header saying the frame is over a limit is refused before the
        rest is waited for or buffered (memberlist's limits: 20 MiB of user
        state, 2^20 node states, 20 MiB encrypted).
        """
        cases = [
            header(0, MAX_USER_BYTES + 1),
            header(MAX_PUSH_NODES + 1, 0),
            bytes([MessageType.USER]) + pack({"UserMsgLen": MAX_USER_BYTES + 1}),
            struct.pack(">BI", MessageType.ENCRYPT, MAX_ENCRYPTED_STREAM + 1),
        ]
        for data in cases:
            error = self.assertRaises(FrameError, FrameMeasure(True).feed, data)
            self.assertEqual(error.reason, "size", data)
        # At the limits themselves the measure waits for the rest.
        self.assertIsNone(FrameMeasure(True).feed(header(0, MAX_USER_BYTES)))
        self.assertIsNone(FrameMeasure(True).feed(header(MAX_PUSH_NODES, 0)))

    def test_endless_frame_refused_past_the_cap(self) -> None:
        """
        A frame that never says where it ends (here a header holding one
        enormous string) is refused once it passes L{MAX_STREAM_BYTES}.
        """
        measure = FrameMeasure(True)
        start = bytes([MessageType.PUSH_PULL, 0xDB]) + struct.pack(">I", 1 << 31)
        self.assertIsNone(measure.feed(start))
        chunk = b"x" * (1 << 20)
        fed = len(start)
        with self.assertRaises(FrameError) as caught:
            while fed <= MAX_STREAM_BYTES + len(chunk):
                measure.feed(chunk)
                fed += len(chunk)
        self.assertEqual(caught.exception.reason, "size")
        self.assertGreater(fed, MAX_STREAM_BYTES - len(chunk))

    def test_garbage_kind(self) -> None:
        error = self.assertRaises(FrameError, FrameMeasure(True).feed, b"\x03\x80")
        self.assertEqual(error.reason, "decode")


@implementer(IPacketHandler)
@attrs.define(eq=False)
class RecordingHandler:
    """
    A packet handler that records what the transport measures and hands
    over.
    """

    fed: list[int] = attrs.field(factory=list)
    requests: list[bytes] = attrs.field(factory=list)

    def packet_received(self, data: bytes, source: tuple[str, int]) -> None:
        pass

    def stream_measure(self) -> IFrameMeasure:
        real = StreamCodec().measure(accepted=True)
        fed = self.fed

        @implementer(IFrameMeasure)
        class Counting:
            def feed(self, data: bytes) -> int | None:
                fed.append(len(data))
                return real.feed(data)

        return Counting()

    def stream_received(
        self, data: bytes, source: tuple[str, int]
    ) -> Deferred[bytes | None]:
        self.requests.append(data)
        return succeed(None)


class StreamBufferingTests(SynchronousTestCase):
    """
    The transport hands each received byte to the measure once and joins
    the chunks once: buffering stays linear in a large push/pull.
    """

    def test_each_byte_measured_once(self) -> None:
        clock = Clock()
        transport = NetTransport(clock, "127.0.0.1", 0, stream_timeout=10)
        handler = RecordingHandler()
        transport.handler = handler
        frame = StreamCodec().encode(push_pull(2000, b"s" * 100_000), dialler=True)
        stream = transport_server(transport)
        for start in range(0, len(frame), 1024):
            stream.dataReceived(frame[start : start + 1024])
        self.assertEqual(handler.requests, [frame])
        self.assertEqual(sum(handler.fed), len(frame))
        self.assertEqual(len(handler.fed), -(-len(frame) // 1024))

    def test_refused_frame_is_counted_by_reason(self) -> None:
        clock = Clock()
        transport = NetTransport(clock, "127.0.0.1", 0)
        transport.handler = RecordingHandler()
        stream = transport_server(transport)
        stream.dataReceived(header(0, MAX_USER_BYTES + 1))
        self.assertEqual(transport.counters.dropped[DropReason.SIZE], 1)
        self.assertEqual(transport.counters.traffic.streams_in_failed, 1)
        self.assertTrue(cast(StringTransport, stream.transport).disconnecting)

    def test_slow_stream_is_cut_at_the_deadline(self) -> None:
        """
        The deadline is not reset by arriving bytes: a peer trickling a
        byte a second is cut at the stream timeout all the same.
        """
        clock = Clock()
        transport = NetTransport(clock, "127.0.0.1", 0, stream_timeout=10)
        counters = transport.counters
        handler = RecordingHandler()
        transport.handler = handler
        stream = transport_server(transport)
        frame = StreamCodec().encode(push_pull(10), dialler=True)
        for byte in range(9):
            stream.dataReceived(frame[byte : byte + 1])
            clock.advance(1)
        self.assertEqual(counters.dropped[DropReason.STREAM_TIMEOUT], 0)
        stream.dataReceived(frame[9:10])
        clock.advance(1)
        self.assertEqual(counters.dropped[DropReason.STREAM_TIMEOUT], 1)
        self.assertEqual(counters.traffic.streams_in_failed, 1)
        stream.dataReceived(frame[10:])
        self.assertEqual(handler.requests, [])


def transport_server(transport: NetTransport) -> Protocol:
    """
    A stream as the transport accepts it, on a L{StringTransport}.
    """
    from cluster.gossip.transport import _ServerFactory

    stream = _ServerFactory(transport).buildProtocol(None)
    stream.makeConnection(StringTransport())
    return stream


class BroadcastQueueBoundTests(SynchronousTestCase):
    def test_oldest_most_sent_dropped_and_counted(self) -> None:
        members = 10
        queue = BroadcastQueue(lambda: members, retransmit_mult=4)
        finished: list[int] = []
        for i in range(100):
            queue.queue(b"early-%03d" % i, on_finished=partial(finished.append, i))
        # Sent once each: now they are the most-sent, so dropped first.
        queue.get(overhead=2, limit=10_000)
        for i in range(MIN_QUEUE_DEPTH):
            queue.queue(b"late-%05d" % i)
        self.assertEqual(len(queue), MIN_QUEUE_DEPTH)
        self.assertEqual(queue.dropped, 100)
        self.assertEqual(sorted(finished), list(range(100)))
        taken = queue.get(overhead=2, limit=1_000_000)
        self.assertFalse(any(m.startswith(b"early") for m in taken))

    def test_bound_grows_with_the_cluster(self) -> None:
        members = 3000
        queue = BroadcastQueue(lambda: members, retransmit_mult=4)
        for i in range(7000):
            queue.queue(b"m%d" % i)
        self.assertEqual(len(queue), 6000)
        self.assertEqual(queue.dropped, 1000)


class EntryLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.counters = GossipCounters()
        self.table = MemberTable(
            "me",
            GossipConfig.lan(name="me"),
            Clock(),
            random.Random(1),
            self.counters,
            lambda changes: None,
        )
        self.table.bootstrap(ip_to_bytes("10.0.0.1"), 7946, b"")

    def alive(self, name: str, meta: bytes = b"") -> Alive:
        return Alive(1, name, ip_to_bytes("10.0.0.2"), 7946, meta, VSN)

    def test_oversized_meta_dropped(self) -> None:
        self.table.alive(self.alive("big", b"m" * (META_MAX_SIZE + 1)))
        self.assertIsNone(self.table.get("big"))
        self.assertEqual(self.counters.dropped[DropReason.META], 1)
        self.table.alive(self.alive("fits", b"m" * META_MAX_SIZE))
        self.assertIsNotNone(self.table.get("fits"))

    def test_oversized_name_dropped(self) -> None:
        self.table.alive(self.alive("n" * (NAME_MAX_SIZE + 1)))
        self.assertEqual(len(self.table), 1)
        self.assertEqual(self.counters.dropped[DropReason.NAME], 1)
        self.table.alive(self.alive("é" * (NAME_MAX_SIZE // 2)))
        self.assertEqual(len(self.table), 2)

    def test_own_name_limit_names_the_field(self) -> None:
        error = self.assertRaises(
            ValueError, GossipConfig.lan, name="n" * (NAME_MAX_SIZE + 1)
        )
        self.assertIn("name", str(error))


class Idle(Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


class RealSocketLimitTests(TestCase):
    timeout = 60

    async def test_inbound_streams_capped(self) -> None:
        """
        With 128 accepted streams open, the next is cut at once and
        counted (and warned about); once they go, streams are served again.
        """
        node = local_node("capped", tcp_timeout=30.0)
        await node.start()
        warnings: list[LogEvent] = []

        def observe(event: LogEvent) -> None:
            if "too many inbound streams" in event.get("log_format", ""):
                warnings.append(event)

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        idle = [Idle() for _ in range(MAX_INBOUND_STREAMS)]
        try:
            for protocol in idle:
                factory: ClientFactory = ClientFactory()
                factory.protocol = lambda p=protocol: p  # type: ignore[misc]
                cast(IReactorTCP, reactor).connectTCP("127.0.0.1", node.port, factory)
            await wait_for(
                lambda: len(node.transport._servers) == MAX_INBOUND_STREAMS,  # type: ignore[attr-defined]
                20,
                "128 streams accepted",
            )
            self.assertEqual(
                await send_stream(
                    node.port, StreamCodec().encode(Ping(5, "capped"), True)
                ),
                b"",
            )
            self.assertEqual(node.counters.dropped[DropReason.TOO_MANY_STREAMS], 1)
            self.assertEqual(len(warnings), 1)
            for protocol in idle:
                assert protocol.transport is not None
                protocol.transport.loseConnection()
            await wait_for(
                lambda: not node.transport._servers,  # type: ignore[attr-defined]
                20,
                "the idle streams closed",
            )
            reply = await send_stream(
                node.port, StreamCodec().encode(Ping(6, "capped"), dialler=True)
            )
            self.assertEqual(StreamCodec().decode(reply, accepted=False), Ack(6))
        finally:
            for protocol in idle:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()  # type: ignore[attr-defined]
            await node.shutdown()

    async def test_large_datagram_read_whole(self) -> None:
        """
        A 60,000-byte user message in one datagram reaches the delegate
        whole (a default 8 KiB read would cut it).
        """
        delegate = AppDelegate()
        node = local_node("wide", delegate=delegate)
        await node.start()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            payload = bytes(random.Random(3).randbytes(60_000))
            sender.sendto(encode_message(User(payload)), ("127.0.0.1", node.port))
            await wait_for(lambda: delegate.messages, 10, "the message arrives")
            self.assertEqual(delegate.messages, [payload])
        finally:
            sender.close()
            await node.shutdown()

    async def test_oversized_push_pull_refused_on_a_socket(self) -> None:
        node = local_node("bounded")
        await node.start()
        try:
            self.assertEqual(
                await send_stream(node.port, header(1, MAX_USER_BYTES + 1)), b""
            )
            self.assertEqual(node.counters.dropped[DropReason.SIZE], 1)
            self.assertEqual(len(node.members()), 1)
        finally:
            await node.shutdown()


class DropReportTests(SynchronousTestCase):
    def test_drops_summed_up_in_a_paced_warning(self) -> None:
        """
        Every drop is counted; the log gets one warning at the first, then
        at most one per L{DROP_REPORT_INTERVAL} summing up the reasons.
        """
        network = SimulatedNetwork(seed=3)
        node = network.memberlist("watched", label="ours")
        node.start()
        warnings: list[str] = []

        def observe(event: LogEvent) -> None:
            if event.get("log_level") == LogLevel.warn and "dropped" in (
                event.get("log_format") or ""
            ):
                warnings.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        stranger = PacketCodec(label=b"theirs").seal(
            encode_message(Ping(1, "watched")), crc=False
        )
        # Ours, but a compound whose length table is cut short.
        truncated = b"\xf4\x04ours\x07\x05"
        for _ in range(5):
            node.receiver.packet_received(stranger, ("127.0.0.9", 7946))
            node.receiver.packet_received(truncated, ("127.0.0.9", 7946))
        self.assertEqual(len(warnings), 1)
        self.assertIn("label=1", warnings[0])
        network.run(DROP_REPORT_INTERVAL)
        node.receiver.packet_received(truncated, ("127.0.0.9", 7946))
        self.assertEqual(len(warnings), 2)
        self.assertIn("10 input(s)", warnings[1])
        self.assertIn("(compound=6, label=4)", warnings[1])
        self.assertEqual(node.counters.dropped[DropReason.LABEL], 5)
        self.assertEqual(node.counters.dropped[DropReason.COMPOUND], 6)


class DecompressionBudgetTests(SynchronousTestCase):
    def test_a_datagram_expands_to_a_megabyte_at_most(self) -> None:
        """
        All the compressed parts of one datagram share one budget: a small
        datagram cannot make the reactor expand it to the stream limit.
        """
        codec = PacketCodec()
        big = encode_message(User(b"a" * (2 * MAX_PACKET_DECOMPRESSED)))
        bomb = compress_message(big)
        self.assertLess(len(bomb), 30_000)
        opened = codec.decode(bomb)
        self.assertEqual(opened.messages, [])
        self.assertEqual([e.reason for e in opened.errors], ["compress"])
        # Two parts within the budget each, not together: the first comes
        # out, the second is refused.
        half_size = MAX_PACKET_DECOMPRESSED // 2 + 10
        half = compress_message(encode_message(User(b"b" * half_size)))
        opened = codec.decode(make_compound([half, half]))
        self.assertEqual(len(opened.messages), 1)
        self.assertEqual([e.reason for e in opened.errors], ["compress"])
        # Streams keep their own, larger limit.
        self.assertEqual(decompress_message(bomb[1:]), big)
