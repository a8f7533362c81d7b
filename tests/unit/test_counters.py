"""
Tests for the typed counters (L{cluster.gossip.counters},
L{cluster.ckit.counters}) and the table that exports them
(L{cluster.ckit.metrics.METRICS}): nothing is counted that no metric
exports, and no counting metric is exported that nothing counts.
"""

from __future__ import annotations

import ast
import inspect
import typing
from collections import Counter
from collections.abc import Iterator

import attrs
from twisted.trial.unittest import SynchronousTestCase

from cluster.alloy.service import SERVICE_METRICS
from cluster.ckit.counters import NodeCounters, ReceivedEvents
from cluster.ckit.metrics import METRICS, MetricKind, metric_reference
from cluster.ckit.node import Node
from cluster.gossip import framing
from cluster.gossip.counters import (
    CounterRecord,
    DropReason,
    DurationHistogram,
    GossipCounters,
)
from cluster.gossip.wire import (
    Alive,
    MessageType,
    PushPull,
    User,
    encode_message,
    ip_to_bytes,
)
from cluster.peer import PeerState
from cluster.testing import SimulatedNetwork
from tests.helpers import start_through_first

CLUSTER = "prod"

# Where a node's counters live, from the node.
ROOTS = ("memberlist.counters", "counters")
# Counters kept outside the records: broadcasts dropped from a full queue.
QUEUE_DROPS = ("memberlist.broadcasts.dropped", "states.broadcasts.dropped")


@attrs.frozen
class Leaf:
    """
    One counter of a node: an attribute path from the node, and the key
    for a counter keyed by an enum.
    """

    path: str
    key: object = None

    def __str__(self) -> str:
        return self.path if self.key is None else f"{self.path}[{self.key}]"

    def owner_and_name(self, node: Node) -> tuple[object, str]:
        *parents, name = self.path.split(".")
        owner: object = node
        for part in parents:
            owner = getattr(owner, part)
        return owner, name

    def value(self, node: Node) -> int:
        owner, name = self.owner_and_name(node)
        value = getattr(owner, name)
        if isinstance(value, DurationHistogram):
            return value.count
        if isinstance(value, Counter):
            return int(value[self.key])
        assert isinstance(value, int), self
        return value

    def bump(self, node: Node) -> None:
        """
        Count one event on this counter of C{node}.
        """
        owner, name = self.owner_and_name(node)
        value = getattr(owner, name)
        if isinstance(value, DurationHistogram):
            value.observe(1.0)
        elif isinstance(value, Counter):
            value[self.key] += 1
        else:
            setattr(owner, name, value + 1)


def leaves_of(record: CounterRecord, path: str) -> Iterator[Leaf]:
    """
    Every counter in C{record} (found at C{path} from the node), one per
    key of an enum-keyed counter.
    """
    kind = type(record)
    assert attrs.has(kind)
    hints = typing.get_type_hints(kind)
    for field in attrs.fields(kind):
        value = getattr(record, field.name)
        where = f"{path}.{field.name}"
        if isinstance(value, CounterRecord) and not isinstance(
            value, DurationHistogram
        ):
            yield from leaves_of(value, where)
        elif isinstance(value, Counter):
            (keys,) = typing.get_args(hints[field.name])
            yield from (Leaf(where, key) for key in keys)
        else:
            yield Leaf(where)


def every_leaf(node: Node) -> list[Leaf]:
    found = [Leaf(path) for path in QUEUE_DROPS]
    for root in ROOTS:
        owner, name = Leaf(root).owner_and_name(node)
        record = getattr(owner, name)
        assert isinstance(record, CounterRecord)
        found.extend(leaves_of(record, root))
    return found


def lonely_node() -> Node:
    return SimulatedNetwork(seed=1).node("lonely", label=CLUSTER)


Samples = dict[tuple[str, str, tuple[tuple[str, str], ...]], float]


def samples(node: Node) -> Samples:
    """
    Every sample the node's collector gives, keyed by the declared metric
    it belongs to, its name and its labels.
    """
    return {
        (spec.name, sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for spec in METRICS
        for sample in spec.family(node, CLUSTER, 0.0).samples
    }


def moved_by(leaf: Leaf) -> set[str]:
    """
    The metrics whose samples change when C{leaf} counts one event on a
    fresh node.
    """
    node = lonely_node()
    before = samples(node)
    leaf.bump(node)
    after = samples(node)
    return {
        key[0]
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    }


class ExportTests(SynchronousTestCase):
    """
    Every counter feeds a metric of the table, and every counting metric
    of the table reads a counter.
    """

    def test_every_counter_is_exported(self) -> None:
        """
        Counting one event on any counter changes an exported sample.
        """
        leaves = every_leaf(lonely_node())
        # All of them: the records' ints, every drop reason and message
        # type, the histograms and the queues' drops.
        self.assertGreater(len(leaves), 2 * len(MessageType) + len(DropReason))
        unexported = [str(leaf) for leaf in leaves if not moved_by(leaf)]
        self.assertEqual(unexported, [], "counted but not exported")

    def test_every_counting_metric_reads_a_counter(self) -> None:
        """
        Every counter and histogram of the table moves with some counter.
        """
        moved: set[str] = set()
        for leaf in every_leaf(lonely_node()):
            moved |= moved_by(leaf)
        counting = {
            spec.name
            for spec in METRICS
            if spec.kind in (MetricKind.COUNTER, MetricKind.HISTOGRAM)
        }
        self.assertEqual(sorted(counting - moved), [], "exported but never counted")

    def test_one_declaration_per_metric(self) -> None:
        names = [spec.name for spec in (*METRICS, *SERVICE_METRICS)]
        self.assertEqual(len(names), len(set(names)))
        for spec in METRICS:
            self.assertIsNotNone(spec.read, spec.name)
            if spec.kind is MetricKind.COUNTER:
                self.assertTrue(spec.name.endswith("_total"), spec.name)

    def test_labels_of_keyed_counters(self) -> None:
        """
        Drops are labelled by their reason's value, messages by their type's
        name in lower case (or C{unknown}), and only once counted.
        """
        node = lonely_node()
        counters = node.memberlist.counters
        counters.dropped[DropReason.TOO_MANY_STREAMS] += 2
        counters.messages.received[MessageType.INDIRECT_PING] += 3
        counters.messages.sent_unknown += 1
        counters.messages.sent[MessageType.PUSH_PULL] += 4
        keyed = {
            "cluster_node_gossip_dropped_total",
            "cluster_node_gossip_messages_received_total",
            "cluster_node_gossip_messages_sent_total",
        }
        labelled: dict[tuple[str, str, str], float] = {}
        unseen: set[str] = set()
        for (_, name, labels), value in samples(node).items():
            if name in keyed:
                cluster, (label, label_value) = labels
                self.assertEqual(cluster, ("cluster_name", CLUSTER))
                if value or name != "cluster_node_gossip_dropped_total":
                    labelled[name, label, label_value] = value
                else:
                    unseen.add(label_value)
        # Every reason is exported, 0s included.
        self.assertEqual(
            unseen | {DropReason.TOO_MANY_STREAMS.value},
            {reason.value for reason in DropReason},
        )
        self.assertEqual(
            labelled,
            {
                ("cluster_node_gossip_dropped_total", "reason", "too_many_streams"): 2,
                (
                    "cluster_node_gossip_messages_received_total",
                    "type",
                    "indirect_ping",
                ): 3,
                ("cluster_node_gossip_messages_sent_total", "type", "push_pull"): 4,
                ("cluster_node_gossip_messages_sent_total", "type", "unknown"): 1,
            },
        )


def frame_error_reasons() -> set[str]:
    """
    The reason of every C{FrameError} that L{cluster.gossip.framing} raises.
    """
    tree = ast.parse(inspect.getsource(framing))
    reasons: set[str] = set()
    for call in ast.walk(tree):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "FrameError"
        ):
            first = call.args[0]
            assert isinstance(first, ast.Constant), ast.dump(first)
            assert isinstance(first.value, str), ast.dump(first)
            reasons.add(first.value)
    return reasons


class DropReasonTests(SynchronousTestCase):
    def test_frame_errors_give_drop_reasons(self) -> None:
        """
        The receiver counts a L{framing.FrameError} under C{DropReason(reason)}:
        every reason the codec gives is one.
        """
        reasons = frame_error_reasons()
        self.assertGreaterEqual(len(reasons), 7)
        for reason in reasons:
            self.assertIsInstance(DropReason(reason), DropReason)


class RecordTests(SynchronousTestCase):
    def test_snapshot_and_growth(self) -> None:
        counters = GossipCounters()
        counters.traffic.packets_in = 5
        counters.dropped[DropReason.LABEL] = 2
        counters.probes.rounds.observe(0.002)
        before = counters.snapshot()
        counters.traffic.packets_in += 3
        counters.dropped[DropReason.CRC] += 1
        counters.probes.rounds.observe(3.0)
        self.assertEqual(before.traffic.packets_in, 5)
        grown = counters - before
        self.assertEqual(grown.traffic.packets_in, 3)
        self.assertEqual(grown.dropped, Counter({DropReason.CRC: 1}))
        self.assertEqual(grown.probes.rounds.count, 1)
        self.assertEqual(grown.probes.rounds.total, 3.0)
        self.assertEqual(grown.traffic.bytes_in, 0)

    def test_equality(self) -> None:
        counters = NodeCounters()
        counters.received.unknown_message += 1
        self.assertEqual(
            counters, NodeCounters(received=ReceivedEvents(unknown_message=1))
        )
        self.assertNotEqual(counters, NodeCounters())

    def test_histogram_buckets(self) -> None:
        """
        A duration lands in the first bucket whose bound it does not
        exceed, as in a Prometheus histogram; a negative one counts as 0.
        """
        histogram = DurationHistogram((0.1, 1.0))
        for seconds in (-1.0, 0.1, 0.5, 1.0, 7.0):
            histogram.observe(seconds)
        self.assertEqual(histogram.counts, [2, 2, 1])
        self.assertEqual(
            histogram.cumulative(), [(0.1, 2), (1.0, 4), (float("inf"), 5)]
        )
        self.assertEqual(histogram.total, 8.6)


def busy_run(seed: int) -> list[Node]:
    """
    Five nodes through a busy life on the simulated network: joins, state
    changes, lossy links, garbage from a stranger, a failed join, a second
    process under a live node's name, a starved node, a crash, a partition
    and a leave.
    """
    network = SimulatedNetwork(seed=seed, loss=0.02)
    nodes = [network.node(f"n{i}", label=CLUSTER) for i in range(5)]
    seed_address = start_through_first(network, nodes)
    network.run(5)
    nodes[0].change_state(PeerState.PARTICIPANT)
    nodes[1].change_state(PeerState.PARTICIPANT)
    network.run(3)
    receiver = nodes[0].memberlist.receiver
    stranger = ("127.9.9.9", 7946)
    for junk in (b"", b"\x07", b"\x07\x05", b"\x09\x00", b"\x04\x01", b"\x63"):
        receiver.packet_received(b"\xf4\x04prod" + junk, stranger)
    receiver.packet_received(b"\xff", stranger)
    for packet in receiver.packets.encode([encode_message(User(b"not ckit"))], True):
        receiver.packet_received(packet, stranger)
    receiver.stream_received(b"\xff\xff", stranger)
    request = PushPull(False, (), b"not ckit")
    receiver.stream_received(receiver.streams.encode(request, dialler=True), stranger)
    # A claim that a member's meta changed, which it refutes.
    other = nodes[3].memberlist.local_member()
    claim = Alive(
        other.incarnation + 1,
        other.name,
        ip_to_bytes(other.address),
        other.port,
        b"claimed",
        nodes[3].memberlist.config.vsn(),
    )
    for packet in receiver.packets.encode([encode_message(claim)], False):
        receiver.packet_received(packet, stranger)
    nodes[0].memberlist.join(["127.9.9.9:7946"]).addErrback(lambda _: None)
    network.run(2)
    twin = network.node("n2", label=CLUSTER)
    twin.start([seed_address]).addErrback(lambda _: None)
    network.run(10)
    network.starve(nodes[3].memberlist.transport.host, low=0.5, high=2.0)
    network.run(20)
    network.crash(nodes[4])
    network.run(60)
    hosts = [node.memberlist.transport.host for node in nodes]
    network.partition(hosts[:1], hosts[1:4])
    network.run(35)  # a push/pull interval: one of the cut node's fails
    network.heal()
    network.run(30)
    nodes[1].stop()
    network.run(10)
    return [*nodes, twin]


# What a busy run on the simulated network cannot move, and why.
NOT_ON_THE_SIMULATED_NETWORK: dict[str, str] = {
    "memberlist.counters.traffic.send_failed": (
        "sealing fails only with a broken keyring, and the socket refusing a "
        "datagram only on real sockets (tests.unit.test_metrics.RealSocketQueueTests)"
    ),
    "memberlist.counters.traffic.streams_open": "a level, back to 0 at rest",
    "memberlist.counters.messages.sent_unknown": (
        "every part we send is an encoded message; a malformed one would be "
        "counted, not raised"
    ),
    "memberlist.broadcasts.dropped": "a queue overflows only past thousands",
    "states.broadcasts.dropped": "a queue overflows only past thousands",
}


class BusyRunTests(SynchronousTestCase):
    def test_busy_run_moves_every_counter(self) -> None:
        """
        After a busy run, every counter that can move on the simulated
        network moved on some node: none is exported that nothing counts.
        Keyed counters need only have counted something.
        """
        nodes = busy_run(seed=5)
        still = []
        keyed: Counter[str] = Counter()
        for leaf in every_leaf(nodes[0]):
            total = sum(leaf.value(node) for node in nodes)
            if leaf.key is not None:
                keyed[leaf.path] += total
            elif not total and leaf.path not in NOT_ON_THE_SIMULATED_NETWORK:
                still.append(str(leaf))
        still.extend(path for path, total in keyed.items() if not total)
        self.assertEqual(still, [])

    def test_exempt_counters_exist(self) -> None:
        """
        The exemptions above name counters that exist.
        """
        paths = {leaf.path for leaf in every_leaf(SimulatedNetwork().node("n"))}
        self.assertLessEqual(set(NOT_ON_THE_SIMULATED_NETWORK), paths)


class ReferenceTests(SynchronousTestCase):
    def test_every_metric_in_the_reference(self) -> None:
        specs = (*METRICS, *SERVICE_METRICS)
        table = metric_reference(specs)
        rows = table.splitlines()
        self.assertEqual(rows[0], "| name | type | labels | help |")
        self.assertEqual(len(rows), 2 + len(specs))
        for spec, row in zip(specs, rows[2:], strict=True):
            self.assertTrue(row.startswith(f"| `{spec.name}` | {spec.kind.value} |"))
            self.assertIn(spec.help, row)
        self.assertIn(
            "| `cluster_node_gossip_dropped_total` | counter | "
            "`cluster_name`, `reason` |",
            table,
        )
