"""
Focused tests of the membership rules (memberlist state.go semantics) and
of the mechanisms behind them: broadcast queue, suspicion timer, awareness.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cluster.gossip import (
    GossipConfig,
    IConflictDelegate,
    IDelegate,
    JoinRefused,
    Keyring,
    Member,
    Memberlist,
    MemberState,
)
from cluster.gossip.awareness import Awareness
from cluster.gossip.broadcast import BroadcastQueue, retransmit_limit
from cluster.gossip.codec import pack
from cluster.gossip.counters import DropReason
from cluster.gossip.framing import (
    PacketCodec,
    decompress_message,
    make_compound,
    split_compound,
)
from cluster.gossip.serf import SERF_JOIN, serf_leave_intent
from cluster.gossip.suspicion import (
    Suspicion,
    expected_confirmations,
    remaining_suspicion_time,
    suspicion_timeout,
    worst_case_detection,
)
from cluster.gossip.timers import Ticker, Timers
from cluster.gossip.wire import (
    Ack,
    Alive,
    Dead,
    Suspect,
    User,
    decode_message,
    encode_message,
    ip_to_bytes,
)
from cluster.testing import SimulatedNetwork
from tests.helpers import VSN, known, serf_state, start_and_join


@implementer(IDelegate)
class AppDelegate:
    def __init__(self, meta: bytes = b"") -> None:
        self.meta = meta
        self.messages: list[bytes] = []
        self.remote_states: list[tuple[bytes, bool]] = []
        self.outgoing: list[bytes] = []

    def node_meta(self, limit: int) -> bytes:
        return self.meta

    def notify_msg(self, message: bytes) -> None:
        self.messages.append(message)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        out, self.outgoing = self.outgoing, []
        return out

    def local_state(self, join: bool) -> bytes:
        return b"state-of-" + self.meta

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        self.remote_states.append((state, join))


class SerfStateDelegate(AppDelegate):
    """
    An application delegate whose push/pull state looks like Serf's, with
    member clock C{ltime}.
    """

    def __init__(self, ltime: int) -> None:
        super().__init__()
        self.ltime = ltime

    def local_state(self, join: bool) -> bytes:
        return serf_state(self.ltime)


@implementer(IConflictDelegate)
class ConflictRecorder:
    def __init__(self) -> None:
        self.conflicts: list[tuple[Member, Member]] = []

    def notify_conflict(self, existing: Member, other: Member) -> None:
        self.conflicts.append((existing, other))


def inject(network: SimulatedNetwork, node: Memberlist, *messages: Any) -> None:
    """
    Deliver C{messages} to C{node} as one UDP packet from a stranger.
    """
    parts = [encode_message(m) for m in messages]
    data = parts[0] if len(parts) == 1 else make_compound(parts)
    node.receiver.packet_received(
        PacketCodec().seal(data, crc=True), ("127.9.9.9", 7946)
    )


class MembershipRuleTests(SynchronousTestCase):
    def test_delegate_interfaces(self) -> None:
        self.assertTrue(verifyObject(IDelegate, AppDelegate()))
        self.assertTrue(verifyObject(IConflictDelegate, ConflictRecorder()))

    def test_incarnation_starts_at_one(self) -> None:
        network = SimulatedNetwork()
        a, _ = start_and_join(network, "a", "b", settle=2)
        self.assertEqual(a.local_member().incarnation, 1)
        self.assertEqual(a.local_member().vsn, VSN)

    def test_refutes_suspicion_about_itself(self) -> None:
        network = SimulatedNetwork(seed=1)
        a, b = start_and_join(network, "a", "b", settle=2)
        inject(network, a, Suspect(1, "a", "b"))
        self.assertEqual(a.local_member().incarnation, 2)
        self.assertEqual(a.health_score(), 1)
        network.run(1)
        self.assertEqual(known(b, "a").incarnation, 2)
        self.assertEqual(known(b, "a").state, MemberState.ALIVE)

    def test_refutes_dead_with_higher_incarnation(self) -> None:
        network = SimulatedNetwork(seed=2)
        a, _ = start_and_join(network, "a", "b", settle=2)
        inject(network, a, Dead(9, "a", "b"))
        self.assertEqual(a.local_member().incarnation, 10)
        self.assertEqual(a.local_member().state, MemberState.ALIVE)

    def test_stale_messages_are_ignored(self) -> None:
        network = SimulatedNetwork(seed=3)
        a, b = start_and_join(network, "a", "b", settle=2)
        inject(
            network, a, Alive(5, "b", ip_to_bytes(b.transport.host), 7946, b"x", VSN)
        )
        self.assertEqual(known(a, "b").incarnation, 5)
        inject(network, a, Suspect(4, "b", "c"))
        self.assertEqual(known(a, "b").state, MemberState.ALIVE)
        inject(
            network, a, Alive(5, "b", ip_to_bytes(b.transport.host), 7946, b"y", VSN)
        )
        self.assertEqual(known(a, "b").meta, b"x")

    def test_suspect_then_dead_on_timeout(self) -> None:
        network = SimulatedNetwork(seed=4)
        a, b = start_and_join(network, "a", "b", settle=2)
        network.crash(b)
        inject(network, a, Suspect(1, "b", "zz"))
        self.assertEqual(known(a, "b").state, MemberState.SUSPECT)
        # Two members: k = 0, so the minimum timeout applies at once.
        network.run(suspicion_timeout(4, 2, 1.0) - 0.01)
        self.assertEqual(known(a, "b").state, MemberState.SUSPECT)
        network.run(0.02)
        self.assertEqual(known(a, "b").state, MemberState.DEAD)

    def test_dead_from_self_is_left(self) -> None:
        network = SimulatedNetwork(seed=5)
        a, _ = start_and_join(network, "a", "b", settle=2)
        inject(network, a, Dead(1, "b", "b"))
        self.assertEqual(known(a, "b").state, MemberState.LEFT)

    def test_serf_leave_intent_goes_to_every_live_member_first(self) -> None:
        """
        With C{serf_leave_intent}, leave() sends Serf's leave intent at once
        to every live member (gossip alone may miss one), before any dead
        message; everyone gets it, and still records us as left.
        """
        network = RecordingNetwork(seed=18)
        delegates = [AppDelegate() for _ in range(5)]
        nodes = start_and_join(
            network,
            *[f"s{i}" for i in range(5)],
            each=[
                {"delegate": d, "serf_leave_intent": i == 0}
                for i, d in enumerate(delegates)
            ],
            settle=3,
        )
        network.crash(nodes[4])
        network.run(10)
        self.assertEqual(known(nodes[0], "s4").state, MemberState.DEAD)
        before = len(network.sent)
        # Nothing of Serf's witnessed: the LTime is the clock in milliseconds.
        intent = serf_leave_intent("s0", int(network.clock.seconds() * 1000))
        nodes[0].leave(1)
        codec = PacketCodec()
        direct = [list(codec.messages(codec.open(p))) for p in network.sent[before:]]
        self.assertEqual(direct, [[intent]] * 3)
        network.run(2)
        for node, delegate in zip(nodes[1:4], delegates[1:4], strict=True):
            self.assertIn(intent[1:], delegate.messages)
            self.assertEqual(known(node, "s0").state, MemberState.LEFT)

    def test_serf_leave_intent_ltime_is_above_what_serf_said(self) -> None:
        """
        The LTime of our Serf leave intent is above every Serf LTime the
        member witnessed (join and leave intents among its user messages,
        by UDP or TCP, which still reach its delegate; the member clock in
        a Serf push/pull state) and at least the clock in milliseconds.
        """
        network = RecordingNetwork(seed=19)
        delegates = [AppDelegate(), SerfStateDelegate(ltime=5_000_000)]
        a, b = start_and_join(
            network,
            "a",
            "b",
            each=[{"delegate": d, "serf_leave_intent": True} for d in delegates],
            settle=2,
        )
        # b's join push/pull carried "its" Serf state; a's is not Serf's.
        self.assertEqual((a.serf_clock.time, b.serf_clock.time), (5_000_000, 0))
        join = bytes([SERF_JOIN]) + pack({"LTime": 1000, "Node": "serf-1"})
        leave = serf_leave_intent("serf-2", 7_000_000)[1:]
        inject(network, b, User(join))
        reliable = b.send_reliable(a.local_member(), leave)
        network.run(1)
        self.successResultOf(reliable)
        self.assertIn(join, delegates[1].messages)
        self.assertIn(leave, delegates[0].messages)
        self.assertEqual((a.serf_clock.time, b.serf_clock.time), (7_000_000, 1000))
        before = len(network.sent)
        now = network.clock.seconds()
        self.assertGreater(int(now * 1000), 1001)
        a.leave(1)
        b.leave(1)
        codec = PacketCodec()
        sent = {m for p in network.sent[before:] for m in codec.messages(codec.open(p))}
        self.assertIn(serf_leave_intent("a", 7_000_001), sent)
        self.assertIn(serf_leave_intent("b", int(now * 1000)), sent)
        # Malformed Serf bytes are ignored, and still reach the delegate.
        bad = [b"\x00\xc1", b"\x01" + pack({"LTime": -1})]
        inject(network, a, *[User(m) for m in bad])
        self.assertEqual(a.serf_clock.time, 7_000_001)
        self.assertEqual(a.counters.dropped[DropReason.HANDLER], 0)
        self.assertEqual(delegates[0].messages[-2:], bad)

    def test_buddy_system(self) -> None:
        """
        A ping to a suspect carries the suspicion, so it refutes at once.
        """
        network = SimulatedNetwork(seed=6)
        nodes = start_and_join(network, "n0", "n1", "n2", settle=3)
        # n1 cannot hear gossip from n2, so only n0's probe can tell it.
        network.partition([nodes[2].transport.host], [nodes[1].transport.host], True)
        inject(network, nodes[0], Suspect(1, "n1", "n2"))
        network.run(5)
        self.assertGreaterEqual(nodes[1].counters.members.refuted, 1)
        self.assertEqual(known(nodes[0], "n1").state, MemberState.ALIVE)

    def test_conflicting_address_is_refused(self) -> None:
        network = SimulatedNetwork(seed=7)
        recorder = ConflictRecorder()
        a, b = start_and_join(network, "a", "b", settle=2, conflict=recorder)
        inject(network, a, Alive(9, "b", ip_to_bytes("127.3.3.3"), 7946, b"", VSN))
        self.assertEqual(known(a, "b").address, b.transport.host)
        self.assertEqual(len(recorder.conflicts), 1)
        self.assertEqual(recorder.conflicts[0][1].address, "127.3.3.3")

    def test_left_node_may_come_back_elsewhere(self) -> None:
        network = SimulatedNetwork(seed=8)
        a, _ = start_and_join(network, "a", "b", settle=2)
        inject(network, a, Dead(1, "b", "b"))
        inject(network, a, Alive(1, "b", ip_to_bytes("127.3.3.3"), 7946, b"", VSN))
        self.assertEqual(known(a, "b").address, "127.3.3.3")
        self.assertEqual(known(a, "b").state, MemberState.ALIVE)

    def test_bad_versions_are_ignored(self) -> None:
        network = SimulatedNetwork(seed=9)
        a, _ = start_and_join(network, "a", "b", settle=2)
        inject(
            network,
            a,
            Alive(
                1, "c", ip_to_bytes("127.3.3.3"), 7946, b"", bytes([0, 5, 2, 0, 0, 0])
            ),
        )
        self.assertIsNone(a.member("c"))

    def test_dead_members_are_reaped(self) -> None:
        network = SimulatedNetwork(seed=10)
        a, b = start_and_join(network, "a", "b", settle=2, gossip_to_the_dead_time=5.0)
        network.crash(b)
        network.run(30)
        self.assertIsNone(a.member("b"))
        self.assertEqual(a.num_members(), 1)

    def test_user_messages_and_state(self) -> None:
        network = SimulatedNetwork(seed=11)
        da, db = AppDelegate(b"A"), AppDelegate(b"B")
        a, b = start_and_join(
            network, "a", "b", each=[{"delegate": da}, {"delegate": db}], settle=1
        )
        self.assertEqual(da.remote_states, [(b"state-of-B", True)])
        self.assertEqual(db.remote_states, [(b"state-of-A", True)])
        self.assertEqual(known(b, "a").meta, b"A")
        a.send_best_effort(known(b, "b"), b"udp hello")
        sent = a.send_reliable(known(b, "b"), b"tcp hello")
        da.outgoing = [b"piggyback"]
        network.run(2)
        self.assertIsNone(self.successResultOf(sent))
        self.assertIn(b"udp hello", db.messages)
        self.assertIn(b"tcp hello", db.messages)
        self.assertIn(b"piggyback", db.messages)

    def test_label_mismatch_is_counted(self) -> None:
        network = SimulatedNetwork(seed=12)
        a = network.memberlist("a", label="blue")
        b = network.memberlist("b", label="green")
        a.start()
        b.start()
        failure = self.failureResultOf(
            _later(network, b.join([a.local_member().full_address()])), JoinRefused
        )
        self.assertIn("closed the connection without answering", str(failure.value))
        b.send_best_effort(a.local_member(), b"x")
        network.run(1)
        self.assertGreaterEqual(a.counters.dropped[DropReason.LABEL], 2)

    def test_encrypted_cluster(self) -> None:
        network = SimulatedNetwork(seed=13)
        key = Keyring([bytes(range(16))])
        nodes = [network.memberlist(f"e{i}", keyring=key) for i in range(3)]
        outsider = network.memberlist("plain")
        for node in [*nodes, outsider]:
            node.start()
        for node in nodes[1:]:
            node.join([nodes[0].local_member().full_address()])
        network.run(5)
        self.assertTrue(all(n.num_members() == 3 for n in nodes))
        joined = outsider.join([nodes[0].local_member().full_address()])
        outsider.send_best_effort(nodes[0].local_member(), b"hi")
        network.run(2)
        failure = self.failureResultOf(joined, JoinRefused)
        self.assertIn("encrypted and we have no gossip key", str(failure.value))
        self.assertEqual(outsider.num_members(), 1)
        self.assertGreaterEqual(nodes[0].counters.dropped[DropReason.DECRYPT], 1)

    def test_undecryptable_push_pull_reply_is_counted(self) -> None:
        """
        A joiner with the wrong key gets an error reply it cannot decrypt
        (as from serf): the join fails and the reply counts as dropped.
        """
        network = SimulatedNetwork(seed=17)
        seed = network.memberlist("seed", keyring=Keyring([bytes(range(16))]))
        joiner = network.memberlist("joiner", keyring=Keyring([bytes(range(1, 17))]))
        seed.start()
        joiner.start()
        joined = joiner.join([seed.local_member().full_address()])
        network.run(2)
        failure = self.failureResultOf(joined, JoinRefused)
        self.assertIn("encrypted with a gossip key we do not have", str(failure.value))
        self.assertEqual(seed.counters.dropped[DropReason.DECRYPT], 1)
        self.assertEqual(joiner.counters.dropped[DropReason.DECRYPT], 1)
        self.assertEqual(joiner.num_members(), 1)

    def test_protocol_mismatch_refuses_merge(self) -> None:
        network = SimulatedNetwork(seed=14)
        a = network.memberlist(
            "a",
            delegate_protocol_min=2,
            delegate_protocol_max=5,
            delegate_protocol_version=5,
        )
        b = network.memberlist("b")
        a.start()
        b.start()
        d = b.join([a.local_member().full_address()])
        network.run(1)
        # a replied with its state first, then refused to merge b's.
        self.assertIsNone(a.member("b"))
        self.assertGreaterEqual(a.counters.dropped[DropReason.PROTOCOL], 1)
        self.failureResultOf(d)

    @settings(max_examples=200)
    @given(st.binary(max_size=300))
    def test_fuzzed_packets_never_raise(self, data: bytes) -> None:
        network = SimulatedNetwork(seed=15)
        node = network.memberlist("fuzz")
        node.start()
        node.receiver.packet_received(data, ("127.9.9.9", 1))
        node.receiver.packet_received(b"\x07\x01\x00\x03" + data[:3], ("127.9.9.9", 1))
        self.successResultOf(node.receiver.stream_received(data, ("127.9.9.9", 1)))
        node.shutdown()


class RecordingNetwork(SimulatedNetwork):
    """
    A simulated network that keeps every datagram sent.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.sent: list[bytes] = []

    def _send_packet(self, source: Any, destination: Any, data: bytes) -> None:
        self.sent.append(data)
        super()._send_packet(source, destination, data)


class NeverCrashOldPeersTests(SynchronousTestCase):
    def test_no_empty_parts_crc_or_compressed_bodies(self) -> None:
        """
        Every packet a busy cluster sends is free of what crashes a
        memberlist 0.2 peer: empty compound parts, CRC headers over nothing,
        empty compressed bodies; and acks carry no payload.
        """
        network = RecordingNetwork(seed=16, loss=0.05)
        delegate = AppDelegate(b"meta")
        nodes = start_and_join(
            network, *[f"n{i}" for i in range(6)], delegate=delegate, settle=5
        )
        network.crash(nodes[5])
        nodes[4].leave(1)
        network.run(20)
        codec = PacketCodec()
        checked = 0
        for packet in network.sent:
            self.assertGreaterEqual(len(packet), 1)
            inner = codec.open(packet)
            self.assertNotEqual(packet[:5], b"\x0c\x00\x00\x00\x00")
            for part in _parts(inner):
                self.assertTrue(part, "empty part")
                message = decode_message(part)
                if isinstance(message, Ack):
                    self.assertIsNone(message.payload)
                checked += 1
        self.assertGreater(checked, 500)


@implementer(IDelegate)
class QueueDelegate(AppDelegate):
    """
    An application that queues user broadcasts (some of them empty) and
    hands them out within the limit memberlist gives.
    """

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        out: list[bytes] = []
        for item in list(self.outgoing):
            if len(item) + overhead > limit:
                break
            limit -= len(item) + overhead
            out.append(item)
            self.outgoing.remove(item)
        return out


class NeverCrashOldPeersPropertyTests(SynchronousTestCase):
    @settings(max_examples=100)
    @given(
        seed=st.integers(0, 2**32),
        size=st.integers(2, 5),
        loss=st.sampled_from([0.0, 0.1, 0.3]),
        encrypted=st.booleans(),
        label=st.sampled_from(["", "lbl"]),
        compression=st.booleans(),
        serf_leave_intent=st.booleans(),
        broadcasts=st.lists(st.binary(max_size=700), max_size=12),
    )
    def test_every_sent_packet_is_safe(
        self,
        seed: int,
        size: int,
        loss: float,
        encrypted: bool,
        label: str,
        compression: bool,
        serf_leave_intent: bool,
        broadcasts: list[bytes],
    ) -> None:
        """
        Whatever the settings and the application broadcasts (empty ones
        included), every datagram a cluster sends through joins, gossip, a
        crash and a leave opens to messages with no empty compound part, no
        bare CRC header and no empty compressed body; acks carry no
        payload; and no packet is longer than memberlist itself would send
        (the UDP buffer plus an uncounted CRC header).
        """
        network = RecordingNetwork(seed=seed % 1000, loss=loss)
        keyring = Keyring([bytes(range(16))]) if encrypted else None
        options: dict[str, Any] = {
            "keyring": keyring,
            "label": label,
            "enable_compression": compression,
            "serf_leave_intent": serf_leave_intent,
        }
        delegates = [QueueDelegate(b"m" * i) for i in range(size)]
        nodes = start_and_join(
            network,
            *[f"n{i}" for i in range(size)],
            each=[{"delegate": d} for d in delegates],
            **options,
        )
        for i, payload in enumerate(broadcasts):
            delegates[i % size].outgoing.append(payload)
        network.run(3)
        network.crash(nodes[-1])
        nodes[0].leave(1)
        network.run(8)

        codec = PacketCodec(label=label.encode(), keyring=keyring)
        limit = nodes[0].config.udp_buffer_size + 5
        for packet in network.sent:
            self.assertLessEqual(len(packet), limit)
            inner = codec.open(packet)
            self.assertTrue(inner, "bare CRC header or empty packet")
            for part in _parts(inner):
                self.assertTrue(part, "empty part")
                message = decode_message(part)
                if isinstance(message, Ack):
                    self.assertIsNone(message.payload)
        self.assertTrue(network.sent)


def _parts(message: bytes) -> list[bytes]:
    """
    Leaf messages of C{message}, failing on an empty compound part or an
    empty decompressed body (which the codec would also refuse).
    """
    if message[:1] == b"\x07":
        parts, truncated = split_compound(message[1:])
        assert truncated == 0
        return [leaf for part in parts for leaf in _parts(part)]
    if message[:1] == b"\x09":
        body = decompress_message(message[1:])
        assert body, "empty compressed body"
        return _parts(body)
    return [message]


def _later(network: SimulatedNetwork, d: Any) -> Any:
    network.run(20)
    return d


class BroadcastQueueTests(SynchronousTestCase):
    def test_retransmit_limit(self) -> None:
        self.assertEqual(retransmit_limit(4, 1), 4)
        self.assertEqual(retransmit_limit(4, 9), 4)
        self.assertEqual(retransmit_limit(4, 10), 8)
        self.assertEqual(retransmit_limit(4, 99), 8)
        self.assertEqual(retransmit_limit(4, 100), 12)

    def test_order_budget_and_limit(self) -> None:
        finished: list[str] = []
        queue = BroadcastQueue(lambda: 5, 1)  # limit 1 transmission
        queue.queue(b"short", "a", lambda: finished.append("a"))
        queue.queue(b"much longer message", "b", lambda: finished.append("b"))
        # Longest first; each costs overhead 2 + length.
        self.assertEqual(queue.get(2, 22), [b"much longer message"])
        self.assertEqual(finished, ["b"])
        self.assertEqual(queue.get(2, 100), [b"short"])
        self.assertEqual(queue.get(2, 100), [])
        self.assertEqual(finished, ["b", "a"])

    def test_newer_broadcast_about_a_node_replaces_older(self) -> None:
        finished: list[str] = []
        queue = BroadcastQueue(lambda: 5, 4)
        queue.queue(b"old", "n", lambda: finished.append("old"))
        queue.queue(b"new", "n")
        self.assertEqual(finished, ["old"])
        self.assertEqual(queue.get(2, 100), [b"new"])
        self.assertEqual(len(queue), 1)

    def test_fewest_transmissions_first(self) -> None:
        queue = BroadcastQueue(lambda: 5, 4)
        queue.queue(b"first", "x")
        queue.get(2, 100)
        queue.queue(b"second", "y")
        self.assertEqual(queue.get(2, 9), [b"second"])


class _SortedQueueModel:
    """
    The broadcast queue spelled as one sort per call (memberlist's order:
    fewest transmissions, then longest, then newest): the reference the
    tiered queue must match.
    """

    def __init__(self, num_nodes: int, mult: int) -> None:
        self.limit = retransmit_limit(mult, num_nodes)
        self.items: list[list[Any]] = []  # [transmits, message, serial, name]
        self.finished: list[str] = []
        self.serial = 0

    def queue(self, message: bytes, name: str | None) -> None:
        for item in self.items:
            if name is not None and item[3] == name:
                self.items.remove(item)
                self.finished.append(f"{name}:{item[2]}")
                break
        self.items.append([0, message, self.serial, name])
        self.serial += 1

    def get(self, overhead: int, limit: int) -> list[bytes]:
        chosen, used, done = [], 0, []
        for item in sorted(self.items, key=lambda i: (i[0], -len(i[1]), -i[2])):
            if limit - used <= overhead:
                break
            if used + overhead + len(item[1]) > limit:
                continue
            used += overhead + len(item[1])
            chosen.append(item[1])
            item[0] += 1
            if item[0] >= self.limit:
                self.items.remove(item)
                done.append(f"{item[3]}:{item[2]}")
        self.finished += done
        return chosen


_queue_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("queue"),
            st.binary(min_size=1, max_size=40),
            st.one_of(st.none(), st.sampled_from("abcdef")),
        ),
        st.tuples(st.just("get"), st.integers(0, 4), st.integers(0, 120)),
    ),
    max_size=60,
)


class BroadcastQueueModelTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(st.integers(1, 200), st.integers(1, 4), _queue_operations)
    def test_same_as_one_sort_per_call(
        self, nodes: int, mult: int, operations: list[tuple[Any, ...]]
    ) -> None:
        model = _SortedQueueModel(nodes, mult)
        queue = BroadcastQueue(lambda: nodes, mult)
        finished: list[str] = []
        serial = 0
        for operation in operations:
            if operation[0] == "queue":
                _, message, name = operation
                label = f"{name}:{serial}"
                queue.queue(message, name, functools.partial(finished.append, label))
                model.queue(message, name)
                serial += 1
            else:
                _, overhead, limit = operation
                self.assertEqual(queue.get(overhead, limit), model.get(overhead, limit))
            self.assertEqual(len(queue), len(model.items))
            self.assertEqual(finished, model.finished)
        queue.clear()
        self.assertEqual(len(queue), 0)
        self.assertEqual(queue.get(0, 1000), [])


class SuspicionTests(SynchronousTestCase):
    def test_timeout_formula(self) -> None:
        self.assertEqual(suspicion_timeout(4, 1, 1.0), 4.0)
        self.assertEqual(suspicion_timeout(4, 10, 1.0), 4.0)
        self.assertAlmostEqual(suspicion_timeout(4, 50, 1.0), 6.792)
        self.assertAlmostEqual(suspicion_timeout(4, 100, 1.0), 8.0)

    def test_confirmations_shrink_the_timeout(self) -> None:
        clock = Clock()
        fired: list[int] = []
        s = Suspicion(clock, "a", 2, 4.0, 24.0, fired.append)
        self.assertFalse(s.confirm("a"))
        clock.advance(1)
        self.assertTrue(s.confirm("b"))
        self.assertFalse(s.confirm("b"))
        expected = remaining_suspicion_time(1, 2, 1.0, 4.0, 24.0) + 1.0
        self.assertAlmostEqual(expected, 24 - 20 * 0.6309, places=2)
        self.assertTrue(s.confirm("c"))
        self.assertFalse(s.confirm("d"))  # k reached
        clock.advance(2.99)
        self.assertEqual(fired, [])
        clock.advance(0.02)
        self.assertEqual(fired, [2])

    def test_no_confirmations_expected_uses_minimum(self) -> None:
        clock = Clock()
        fired: list[int] = []
        Suspicion(clock, "a", 0, 4.0, 24.0, fired.append)
        clock.advance(4)
        self.assertEqual(fired, [0])

    def test_expected_confirmations(self) -> None:
        self.assertEqual(expected_confirmations(4, 3), 0)  # one other survivor
        self.assertEqual(expected_confirmations(4, 4), 2)
        self.assertEqual(expected_confirmations(3, 3), 1)
        self.assertEqual(expected_confirmations(6, 100), 4)

    def test_worst_case_detection_terms(self) -> None:
        """
        Probing (two passes, or eleven rounds when fewer), the unconfirmed
        suspicion, the death's retransmissions.
        """
        lan, local = GossipConfig.lan(), GossipConfig.local()
        # 11 rounds of 1 s, 6 x 8 s, 4 x 3 retransmits 0.2 s apart.
        self.assertAlmostEqual(worst_case_detection(lan, 100), 11 + 48 + 2.4)
        # Two passes of 5 rounds, 6 x 4 s, 4 x 1 retransmits.
        self.assertAlmostEqual(worst_case_detection(lan, 6), 10 + 24 + 0.8)
        # No confirmation is expected among three: the 4 s minimum runs.
        self.assertAlmostEqual(worst_case_detection(lan, 3), 4 + 4 + 0.8)
        # The local profile expects one: 6 x 3 s, 2 x 1 retransmits 0.1 s apart.
        self.assertAlmostEqual(worst_case_detection(local, 3), 4 + 18 + 0.2)

    def test_simulated_crashes_are_detected_within_the_worst_case(self) -> None:
        """
        On the simulated network, with and without expected confirmations,
        every survivor lists a crashed member dead within the bound.
        """
        for size in (3, 5, 12):
            for seed in range(4):
                network = SimulatedNetwork(seed=seed)
                names = [f"n{i}" for i in range(size)]
                nodes = start_and_join(network, *names, settle=10)
                victim, survivors = nodes[-1], nodes[:-1]
                network.crash(victim)
                bound = worst_case_detection(victim.config, size)
                took = network.run_until(
                    functools.partial(all_list_dead, survivors, victim.name),
                    bound + 0.01,
                    step=0.05,
                )
                self.assertIsNotNone(took, (size, seed, bound))


def all_list_dead(nodes: list[Memberlist], name: str) -> bool:
    """
    Whether every one of C{nodes} lists C{name} dead.
    """
    return all(
        (member := node.member(name)) is not None and member.state == MemberState.DEAD
        for node in nodes
    )


class AwarenessTests(SynchronousTestCase):
    def test_bounds_and_scale(self) -> None:
        awareness = Awareness(8)
        awareness.apply_delta(-1)
        self.assertEqual(awareness.score, 0)
        awareness.apply_delta(20)
        self.assertEqual(awareness.score, 7)
        self.assertEqual(awareness.scale(1.0), 8.0)
        off = Awareness(1)
        off.apply_delta(5)
        self.assertEqual(off.scale(1.0), 1.0)


class TickerTests(SynchronousTestCase):
    """
    L{Ticker}: a fixed ticker that sleeps while its function has nothing
    to do and, woken, resumes on the same grid.  (Times are binary
    fractions, so the expected ones are exact.)
    """

    def ticker(self, answers: list[bool]) -> tuple[Clock, Ticker, list[float]]:
        clock = Clock()
        clock.advance(0.125)  # the grid starts at 0.125, not at 0
        ran: list[float] = []

        def f() -> bool:
            ran.append(clock.seconds())
            return answers.pop(0) if answers else True

        return clock, Timers(clock).ticker(0.25, f), ran

    def test_sleeps_and_wakes_on_the_same_grid(self) -> None:
        clock, ticker, ran = self.ticker([True, False])
        clock.pump([0.0625] * 16)  # one second
        self.assertEqual(ran, [0.125, 0.375])
        self.assertTrue(ticker.asleep)
        self.assertEqual(clock.getDelayedCalls(), [])
        ticker.wake()
        ticker.wake()  # once is enough
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.pump([0.0625] * 8)
        # Woken at 1.125, a point of the grid: the next one is 1.375.
        self.assertEqual(ran, [0.125, 0.375, 1.375, 1.625])
        self.assertFalse(ticker.asleep)

    def test_waking_an_awake_ticker_changes_nothing(self) -> None:
        clock, ticker, ran = self.ticker([])
        ticker.wake()
        clock.pump([0.25] * 3)
        self.assertEqual(ran, [0.125, 0.375, 0.625, 0.875])
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_a_late_tick_skips_what_it_missed(self) -> None:
        clock, _, ran = self.ticker([])
        clock.advance(0.75)  # the tick due at 0.375 runs late, at 0.875
        clock.advance(0.125)  # the next point after 0.875 is 1.125
        self.assertEqual(ran, [0.125, 0.875])
        clock.advance(0.125)
        self.assertEqual(ran, [0.125, 0.875, 1.125])

    def test_errors_are_logged_and_it_goes_on(self) -> None:
        clock = Clock()
        calls: list[float] = []

        def broken() -> bool:
            calls.append(clock.seconds())
            raise ZeroDivisionError()

        Timers(clock).ticker(1.0, broken)
        clock.pump([1.0, 1.0])
        self.assertEqual(calls, [0.0, 1.0, 2.0])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)

    def test_stopped_with_the_timers(self) -> None:
        clock = Clock()
        timers = Timers(clock)
        ticker = timers.ticker(1.0, lambda: False)
        timers.stop()
        ticker.wake()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_rounding_never_ticks_twice_at_one_time(self) -> None:
        clock = Clock()
        clock.advance(1.3)
        ran: list[float] = []

        def f() -> bool:
            ran.append(clock.seconds())
            return len(ran) < 3 or len(ran) % 2 == 1

        ticker = Timers(clock).ticker(0.1, f)
        for _ in range(200):
            clock.advance(0.1)
            ticker.wake()
        self.assertEqual(len(ran), len(set(ran)))


class TimersTests(SynchronousTestCase):
    def test_cancelled_calls_do_not_pile_up(self) -> None:
        clock = Clock()
        timers = Timers(clock)
        for _ in range(10_000):
            timers.later(1.0, lambda: None).cancel()
        live = timers.later(1.0, lambda: None)
        self.assertLess(len(timers._calls), 200)
        timers.stop()
        self.assertFalse(live.active())

    def test_an_acked_probe_leaves_no_timer_behind(self) -> None:
        network = SimulatedNetwork(seed=14)
        a, _ = start_and_join(network, "a", "b", settle=5)
        rounds = []
        for _ in range(20):
            network.run(0.25)
            current = a.prober._current
            if current is not None and current.done:
                rounds.append(current)
                assert current.indirect is not None
                self.assertFalse(current.indirect.active())
        self.assertGreater(len(rounds), 5)


class IdleGossipTests(SynchronousTestCase):
    """
    Memberlist gossips on a ticker even with nothing queued; ours lets the
    ticker sleep while both queues are empty and wakes it at the next tick
    when something is queued.
    """

    def test_an_idle_member_stops_waking_to_gossip(self) -> None:
        network = SimulatedNetwork(seed=11)
        a, b, c = start_and_join(network, "a", "b", "c", settle=30)
        tickers = [n.loops.gossip_ticker for n in (a, b, c)]
        self.assertTrue(all(t is not None and t.asleep for t in tickers))
        # Something to say: the ticker wakes on its grid and it spreads.
        a.shutdown()
        network.crash(a)
        network.run(30)
        self.assertEqual(known(b, "a").state, MemberState.DEAD)
        self.assertEqual(known(c, "a").state, MemberState.DEAD)
        self.assertTrue(all(n.loops.gossip_ticker.asleep for n in (b, c)))  # type: ignore[union-attr]

    def test_wakes_on_the_grid_of_its_start(self) -> None:
        network = SimulatedNetwork(seed=12)
        a, _ = start_and_join(network, "a", "b", settle=20)
        ticker = a.loops.gossip_ticker
        assert ticker is not None and ticker.asleep
        network.run(0.033)
        a.broadcasts.queue(b"x", "x")
        self.assertFalse(ticker.asleep)
        (call,) = [c for c in network.clock.getDelayedCalls() if c is ticker._call]
        now = network.clock.seconds()
        steps = (call.getTime() - ticker._origin) / ticker.interval
        self.assertAlmostEqual(steps, round(steps))
        self.assertGreater(call.getTime(), now)
        self.assertLessEqual(call.getTime(), now + ticker.interval)

    def test_a_delegate_that_cannot_say_keeps_the_ticker_running(self) -> None:
        network = SimulatedNetwork(seed=13)
        delegate = AppDelegate()
        received = AppDelegate()
        a, _ = start_and_join(
            network, "a", "b", each=[{"delegate": delegate}, {"delegate": received}]
        )
        network.run(20)
        ticker = a.loops.gossip_ticker
        assert ticker is not None
        self.assertFalse(ticker.asleep)
        delegate.outgoing = [b"hello"]
        network.run(1)
        self.assertIn(b"hello", received.messages)
