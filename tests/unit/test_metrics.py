"""
Tests for L{cluster.ckit.metrics}: every node's Prometheus metrics, scraped from
a registry of its own as Prometheus would, on the simulated network (and,
for what the packet queue gauges say of real sockets, on loopback).
"""

from __future__ import annotations

import array
import errno
import fcntl
import random
import socket
import struct
import sys
import termios
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import DuplicateTimeseries
from twisted.internet import reactor, udp
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from cluster.alloy.discovery import static
from cluster.alloy.options import Options
from cluster.alloy.service import ClusterService
from cluster.ckit.metrics import NodeMetrics
from cluster.ckit.node import FuncObserver, Node
from cluster.gossip import GossipConfig, JoinError
from cluster.gossip.counters import DropReason
from cluster.gossip.interfaces import IFrameMeasure, IPacketHandler
from cluster.gossip.transport import NetTransport
from cluster.peer import Peer, PeerState
from cluster.testing import SimulatedNetwork, SimulatedTransport
from tests.helpers import (
    address,
    make_participants,
    node_of,
    start_through_first,
    wait_for,
)

CLUSTER = "prod"

# DESIGN.md section 6: the node's names, with the labels each carries
# besides cluster_name (samples as exposed: counters end in _total).
NODE_NAMES: Mapping[str, frozenset[str]] = {
    "cluster_node_info": frozenset({"state"}),
    "cluster_node_peers": frozenset({"state"}),
    "cluster_node_lamport_time": frozenset(),
    "cluster_node_gossip_health_score": frozenset(),
    "cluster_node_gossip_proto_version": frozenset(),
    "cluster_node_gossip_alive_peers": frozenset(),
    "cluster_node_gossip_received_events_total": frozenset({"event"}),
    "cluster_node_gossip_broadcasts_total": frozenset({"event"}),
    "cluster_node_update_observers": frozenset(),
    "cluster_node_updating": frozenset(),
    "cluster_node_update_duration_seconds_count": frozenset(),
    "cluster_node_update_duration_seconds_bucket": frozenset({"le"}),
}

# ckit's transport names, which Alloy's node dashboard plots.
TRANSPORT_NAMES = (
    "cluster_transport_rx_packets_total",
    "cluster_transport_rx_bytes_total",
    "cluster_transport_rx_packets_failed_total",
    "cluster_transport_tx_packets_total",
    "cluster_transport_tx_bytes_total",
    "cluster_transport_tx_packets_failed_total",
    "cluster_transport_streams",
    "cluster_transport_stream_rx_packets_total",
    "cluster_transport_stream_rx_bytes_total",
    "cluster_transport_stream_rx_packets_failed_total",
    "cluster_transport_stream_tx_packets_total",
    "cluster_transport_stream_tx_bytes_total",
    "cluster_transport_stream_tx_packets_failed_total",
    "cluster_transport_rx_packet_queue_length",
    "cluster_transport_tx_packet_queue_length",
)


@attrs.frozen
class Scrape:
    """
    One scrape of a registry, parsed back from the text format.

    @ivar samples: C{(sample name, labels, value)} for every sample.
    """

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Scrape:
        text = generate_latest(registry).decode()
        return cls(
            [
                (sample.name, dict(sample.labels), sample.value)
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            ]
        )

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}

    def labelled(self, name: str) -> list[dict[str, str]]:
        """
        The label sets of every sample named C{name}.
        """
        return [labels for n, labels, _ in self.samples if n == name]

    def value(self, name: str, **labels: str) -> float:
        """
        The one sample named C{name} with C{labels} (and C{cluster_name}
        C{prod} unless given), failing the test when there is not exactly
        one.
        """
        wanted = {"cluster_name": CLUSTER, **labels}
        found = [
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == w for k, w in wanted.items())
        ]
        if len(found) != 1:
            raise AssertionError(f"{len(found)} samples {name}{wanted}")
        return found[0]

    def by(self, name: str, label: str) -> dict[str, float]:
        """
        The samples named C{name}, keyed by the value of C{label}.
        """
        return {labels[label]: v for n, labels, v in self.samples if n == name}


def registry_for(node: Node) -> CollectorRegistry:
    """
    A registry of C{node}'s own, with its metrics registered.
    """
    registry = CollectorRegistry()
    registry.register(NodeMetrics(node))
    return registry


def three_nodes(seed: int) -> tuple[SimulatedNetwork, list[Node]]:
    """
    Three nodes labelled C{prod}, joined through the first and settled.
    """
    network = SimulatedNetwork(seed=seed)
    nodes = [network.node(f"node-{i}", label=CLUSTER) for i in range(3)]
    start_through_first(network, nodes)
    network.run(5)
    return network, nodes


class NodeMetricsTests(SynchronousTestCase):
    def test_design_names_and_values(self) -> None:
        """
        Every name of DESIGN.md section 6 is there with ckit's labels, each
        sample labelled with the cluster name, and the values are the
        node's.
        """
        network, nodes = three_nodes(seed=70)
        nodes[0].change_state(PeerState.PARTICIPANT)
        network.run(3)
        for node in nodes:
            scrape = Scrape.of(registry_for(node))
            for name, extra in NODE_NAMES.items():
                found = scrape.labelled(name)
                self.assertTrue(found, f"{name} missing")
                for have in found:
                    self.assertEqual(set(have), {"cluster_name", *extra}, name)
            for name in TRANSPORT_NAMES:
                self.assertEqual(scrape.labelled(name), [{"cluster_name": CLUSTER}])
            for name, have_labels, _ in scrape.samples:
                self.assertEqual(have_labels.get("cluster_name"), CLUSTER, name)

            state = str(node.current_state())
            self.assertEqual(scrape.by("cluster_node_info", "state"), {state: 1})
            by_state = Counter(str(p.state) for p in node.peers())
            self.assertEqual(
                scrape.by("cluster_node_peers", "state"),
                {str(s): by_state[str(s)] for s in PeerState},
            )
            self.assertEqual(sum(by_state.values()), 3)
            self.assertEqual(
                scrape.value("cluster_node_lamport_time"), node.lamport_time()
            )
            self.assertEqual(
                scrape.value("cluster_node_gossip_health_score"),
                node.memberlist.health_score(),
            )
            self.assertEqual(
                scrape.value("cluster_node_gossip_proto_version"),
                node.memberlist.config.protocol_version,
            )
            self.assertEqual(scrape.value("cluster_node_gossip_alive_peers"), 3)
            events = scrape.by("cluster_node_gossip_received_events_total", "event")
            self.assertEqual(events, attrs.asdict(node.counters.received))
            # Memberlist told the node of all three, itself included.
            self.assertEqual(events["node_join"], 3)
            self.assertGreater(events["get_local_state"], 0)
            self.assertGreater(events["merge_remote_state"], 0)
            traffic = node.memberlist.counters.traffic
            self.assertEqual(
                scrape.value("cluster_transport_rx_packets_total"),
                traffic.packets_in,
            )
            self.assertEqual(
                scrape.value("cluster_transport_tx_bytes_total"), traffic.bytes_out
            )
            self.assertEqual(scrape.value("cluster_transport_streams"), 0)
            self.assertGreater(
                scrape.value("cluster_transport_stream_tx_packets_total"), 0
            )

        # node-0's participant state reached the others by gossip: they
        # counted it as ckit does, and passed it on.
        for node in nodes[1:]:
            scrape = Scrape.of(registry_for(node))
            self.assertEqual(
                scrape.by("cluster_node_peers", "state"),
                {"viewer": 2, "participant": 1, "terminating": 0},
            )
            self.assertGreater(
                scrape.value(
                    "cluster_node_gossip_received_events_total",
                    event="state_change_message",
                ),
                0,
            )
            self.assertEqual(
                scrape.value(
                    "cluster_node_gossip_broadcasts_total",
                    event="state_change_message",
                ),
                node.counters.state_broadcasts,
            )
            self.assertGreater(node.counters.state_broadcasts, 0)

    def test_info_follows_the_state(self) -> None:
        network, (a, b, _) = three_nodes(seed=71)
        registry = registry_for(a)
        self.assertEqual(
            Scrape.of(registry).by("cluster_node_info", "state"), {"viewer": 1}
        )
        a.change_state(PeerState.PARTICIPANT)
        network.run(2)
        self.assertEqual(
            Scrape.of(registry).by("cluster_node_info", "state"), {"participant": 1}
        )
        a.change_state(PeerState.TERMINATING)
        network.run(2)
        self.assertEqual(
            Scrape.of(registry).by("cluster_node_info", "state"), {"terminating": 1}
        )
        scrape = Scrape.of(registry_for(b))
        self.assertEqual(scrape.value("cluster_node_peers", state="terminating"), 1)

    def test_observers_and_update_duration(self) -> None:
        """
        The observers gauge counts registrations, the duration histogram
        one observation per change told to observers, and C{updating} is
        1 only while they are being told.
        """
        network, (a, b, _) = three_nodes(seed=72)
        registry = registry_for(a)
        seen_updating: list[float] = []

        def watch(peers: list[Peer]) -> bool:
            seen_updating.append(Scrape.of(registry).value("cluster_node_updating"))
            return True

        a.observe(FuncObserver(watch))
        a.observe(FuncObserver(lambda peers: False))  # leaves after one change
        scrape = Scrape.of(registry)
        self.assertEqual(scrape.value("cluster_node_update_observers"), 2)
        before = scrape.value("cluster_node_update_duration_seconds_count")
        b.change_state(PeerState.PARTICIPANT)
        network.run(2)
        scrape = Scrape.of(registry)
        self.assertEqual(seen_updating, [1])
        self.assertEqual(scrape.value("cluster_node_updating"), 0)
        self.assertEqual(scrape.value("cluster_node_update_observers"), 1)
        self.assertEqual(
            scrape.value("cluster_node_update_duration_seconds_count"), before + 1
        )
        # The simulated clock does not move while observers run.
        self.assertEqual(
            scrape.value("cluster_node_update_duration_seconds_bucket", le="0.005"),
            before + 1,
        )

    def test_probe_rounds(self) -> None:
        """
        Probe rounds are timed: healthy ones take a round trip, and once a
        member is gone they run to their deadline and fail.
        """
        network, (a, _, c) = three_nodes(seed=73)
        network.run(10)
        scrape = Scrape.of(registry_for(a))
        rounds = scrape.value("cluster_node_gossip_probe_duration_seconds_count")
        self.assertGreater(rounds, 5)
        self.assertLessEqual(rounds, scrape.value("cluster_node_gossip_probes_total"))
        buckets = scrape.by("cluster_node_gossip_probe_duration_seconds_bucket", "le")
        self.assertEqual(buckets["+Inf"], rounds)
        # The simulated latency is at most 5 ms each way.
        self.assertEqual(buckets["0.01"], rounds)
        self.assertEqual(scrape.value("cluster_node_gossip_probes_failed_total"), 0)
        self.assertGreater(
            scrape.value("cluster_node_gossip_probe_duration_seconds_sum"), 0
        )

        network.crash(c)
        network.run(10)
        scrape = Scrape.of(registry_for(a))
        failed = scrape.value("cluster_node_gossip_probes_failed_total")
        self.assertGreater(failed, 0)
        buckets = scrape.by("cluster_node_gossip_probe_duration_seconds_bucket", "le")
        # A failed round lasts its deadline, a probe interval (1 s) or more.
        self.assertGreaterEqual(buckets["+Inf"] - buckets["0.5"], failed)
        events = scrape.by("cluster_node_gossip_member_events_total", "event")
        self.assertGreater(events["suspected"], 0)
        self.assertEqual(scrape.value("cluster_node_gossip_alive_peers"), 2)
        self.assertEqual(scrape.by("cluster_node_gossip_members", "state")["dead"], 1)

    def test_memberlist_counters(self) -> None:
        """
        Messages by type, push/pulls, dropped input and failed streams.
        """
        network, (a, _, _) = three_nodes(seed=74)
        scrape = Scrape.of(registry_for(a))
        received = scrape.by("cluster_node_gossip_messages_received_total", "type")
        sent = scrape.by("cluster_node_gossip_messages_sent_total", "type")
        for kind in ("ping", "ack", "alive", "push_pull"):
            self.assertGreater(received.get(kind, 0), 0, kind)
            self.assertGreater(sent.get(kind, 0), 0, kind)
        pushes = scrape.by("cluster_node_gossip_push_pulls_total", "direction")
        # node-0 is the seed: both others pushed/pulled with it to join.
        self.assertGreaterEqual(pushes["in"], 2)
        dropped = scrape.by("cluster_node_gossip_dropped_total", "reason")
        # Every reason is there from the start, at 0.
        self.assertEqual(dropped, {reason.value: 0 for reason in DropReason})

        a.memberlist.receiver.packet_received(b"\xff", ("127.0.0.1", 1))
        failed = a.memberlist.join(["127.9.9.9:7946"])
        network.run(1)
        self.failureResultOf(failed, JoinError)
        scrape = Scrape.of(registry_for(a))
        self.assertEqual(scrape.value("cluster_transport_rx_packets_failed_total"), 1)
        dropped = scrape.by("cluster_node_gossip_dropped_total", "reason")
        # A packet without our cluster label.
        self.assertEqual({r: n for r, n in dropped.items() if n}, {"label": 1})
        self.assertEqual(
            scrape.value("cluster_transport_stream_tx_packets_failed_total"), 1
        )
        self.assertEqual(scrape.value("cluster_transport_streams"), 0)


class RegistryTests(SynchronousTestCase):
    def test_nodes_in_one_process(self) -> None:
        """
        Two nodes report to registries of their own; one node cannot be
        registered twice on a registry, nor two nodes on one.
        """
        network, (a, b, _) = three_nodes(seed=75)
        b.change_state(PeerState.PARTICIPANT)
        network.run(2)
        mine, theirs = registry_for(a), registry_for(b)
        self.assertEqual(
            Scrape.of(mine).by("cluster_node_info", "state"), {"viewer": 1}
        )
        self.assertEqual(
            Scrape.of(theirs).by("cluster_node_info", "state"), {"participant": 1}
        )
        self.assertEqual(
            Scrape.of(mine).value("cluster_node_lamport_time"), a.lamport_time()
        )
        error = self.assertRaises(DuplicateTimeseries, mine.register, NodeMetrics(a))
        self.assertIn("cluster_node_info", str(error))
        self.assertRaises(ValueError, mine.register, NodeMetrics(b))
        # The refusals left the registry as it was.
        self.assertEqual(
            Scrape.of(mine).by("cluster_node_info", "state"), {"viewer": 1}
        )

    def test_before_start_and_after_stop(self) -> None:
        """
        A registry may be scraped at any time in the node's life.
        """
        network = SimulatedNetwork(seed=77)
        node = network.node("lonely", label=CLUSTER)
        registry = registry_for(node)
        scrape = Scrape.of(registry)
        self.assertEqual(scrape.by("cluster_node_info", "state"), {"viewer": 1})
        self.assertEqual(
            scrape.by("cluster_node_peers", "state"),
            {"viewer": 0, "participant": 0, "terminating": 0},
        )
        self.assertEqual(scrape.value("cluster_node_gossip_alive_peers"), 0)
        self.assertEqual(
            scrape.value("cluster_node_gossip_probe_duration_seconds_count"), 0
        )
        node.start()
        network.run(3)
        self.assertEqual(
            Scrape.of(registry).value("cluster_node_gossip_alive_peers"), 1
        )
        node.stop()
        network.run(6)
        self.assertIn("cluster_node_info", Scrape.of(registry).names())

    def test_beside_the_service_gauges(self) -> None:
        """
        A service's node metrics share its registry with
        C{cluster_ready_for_traffic} and C{cluster_minimum_size}.
        """
        network = SimulatedNetwork(seed=76)
        services: list[ClusterService] = []
        registries = [CollectorRegistry() for _ in range(2)]
        for i, registry in enumerate(registries):
            svc = network.cluster_service(
                Options(
                    enable_clustering=True,
                    node_name=f"svc-{i}",
                    cluster_name=CLUSTER,
                    minimum_cluster_size=2,
                    metrics=registry,
                    discover_peers=static([address(s) for s in services]),
                )
            )
            services.append(svc)
            svc.startService()
            network.run(1)
        make_participants(network, services, 5)
        for svc, registry in zip(services, registries, strict=True):
            register_service_node(svc, registry)
            scrape = Scrape.of(registry)
            self.assertEqual(scrape.value("cluster_ready_for_traffic"), 1)
            self.assertEqual(scrape.value("cluster_minimum_size"), 2)
            self.assertEqual(
                scrape.by("cluster_node_peers", "state"),
                {"viewer": 0, "participant": 2, "terminating": 0},
            )
            self.assertEqual(
                scrape.value("cluster_node_lamport_time"),
                node_of(svc).lamport_time(),
            )
            self.assertEqual(scrape.value("cluster_node_gossip_alive_peers"), 2)
        for svc in services:
            svc.stopService()
        network.run(10)


def register_service_node(svc: ClusterService, registry: CollectorRegistry) -> None:
    """
    Register C{svc}'s node metrics on C{registry}, unless the service did.
    """
    registered = {family.name for family in registry.collect()}
    if "cluster_node_info" not in registered:
        registry.register(NodeMetrics(node_of(svc)))


# ckit's help texts (gossiphttp.NewTransport's GaugeFuncs).
QUEUE_GAUGES = {
    "cluster_transport_rx_packet_queue_length": (
        "Current number of unprocessed incoming packets"
    ),
    "cluster_transport_tx_packet_queue_length": (
        "Current number of unprocessed outgoing packets"
    ),
}


@implementer(IPacketHandler)
class PacketRecorder:
    """
    A handler that records each datagram, and what C{probe} says as it
    arrives.
    """

    def __init__(self, probe: Callable[[], object] = lambda: None) -> None:
        self.probe = probe
        self.packets: list[bytes] = []
        self.probed: list[object] = []

    def packet_received(self, data: bytes, source: tuple[str, int]) -> None:
        self.packets.append(data)
        self.probed.append(self.probe())

    def stream_measure(self) -> IFrameMeasure:
        raise NotImplementedError("no streams here")

    def stream_received(
        self, data: bytes, source: tuple[str, int]
    ) -> Deferred[bytes | None]:
        raise NotImplementedError("no streams here")


class HeldTransport(SimulatedTransport):
    """
    A simulated transport that says it holds datagrams both ways.
    """

    def packet_queue_lengths(self) -> tuple[int, int]:
        return (2, 5)


class PacketQueueTests(SynchronousTestCase):
    """
    ckit's C{cluster_transport_{rx,tx}_packet_queue_length}, read from the
    transport's C{packet_queue_lengths()}.
    """

    def test_gauges_with_ckit_names_and_help(self) -> None:
        _, nodes = three_nodes(seed=78)
        text = generate_latest(registry_for(nodes[0])).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, help_text in QUEUE_GAUGES.items():
            family = families[name]
            self.assertEqual(family.type, "gauge", name)
            self.assertEqual(family.documentation, help_text, name)
            self.assertEqual(
                [(s.labels, s.value) for s in family.samples],
                [({"cluster_name": CLUSTER}, 0)],
            )

    def test_gauges_read_the_transport(self) -> None:
        """
        The gauges show what the transport says it holds, not a constant.
        """
        network = SimulatedNetwork(seed=79)
        transport = HeldTransport(network, network.new_host())
        config = GossipConfig.lan(
            name="held",
            label=CLUSTER,
            bind_address=transport.host,
            bind_port=transport.port,
        )
        node = Node(config, None, network.clock, transport, random.Random(79))
        scrape = Scrape.of(registry_for(node))
        self.assertEqual(scrape.value("cluster_transport_rx_packet_queue_length"), 2)
        self.assertEqual(scrape.value("cluster_transport_tx_packet_queue_length"), 5)

    def test_starved_host_holds_what_arrived(self) -> None:
        """
        On the simulated network a datagram is in a starved host's rx queue
        from when it arrives (not while it is on the wire) until it is
        handled; nothing ever waits to be sent.
        """
        network = SimulatedNetwork(seed=80)
        sender, receiver = network.transport(), network.transport()
        recorder = PacketRecorder(receiver.packet_queue_lengths)
        sender.start(PacketRecorder())
        receiver.start(recorder)
        network.set_link(sender.host, receiver.host, latency=0.01)
        network.starve(receiver.host, low=1.0, high=1.0)
        for i in range(3):
            sender.send_packet(b"%d" % i, (receiver.host, receiver.port))
        self.assertEqual(sender.packet_queue_lengths(), (0, 0))
        self.assertEqual(receiver.packet_queue_lengths(), (0, 0))  # on the wire
        network.run(0.02)
        self.assertEqual(receiver.packet_queue_lengths(), (3, 0))
        self.assertEqual(recorder.packets, [])
        network.run(1.0)
        self.assertEqual(sorted(recorder.packets), [b"0", b"1", b"2"])
        # Each was out of the queue as it was handled.
        self.assertEqual(sorted(recorder.probed), [(0, 0), (1, 0), (2, 0)])
        self.assertEqual(receiver.packet_queue_lengths(), (0, 0))

    def test_starved_node_reports_its_rx_queue(self) -> None:
        """
        A starved node's rx gauge counts datagrams waiting to be handled:
        each is handled within the starvation delay (1 s).
        """
        network, (first, node, last) = three_nodes(seed=81)
        network.starve(node.memberlist.transport.host, low=1.0, high=1.0)
        registry = registry_for(node)
        seen: list[float] = []
        for _ in range(20):
            network.run(0.1)
            scrape = Scrape.of(registry)
            waiting = scrape.value("cluster_transport_rx_packet_queue_length")
            self.assertEqual(
                waiting, node.memberlist.transport.packet_queue_lengths()[0]
            )
            self.assertEqual(
                scrape.value("cluster_transport_tx_packet_queue_length"), 0
            )
            handled = node.memberlist.counters.traffic.packets_in
            network.run(1.01)
            self.assertGreaterEqual(
                node.memberlist.counters.traffic.packets_in - handled, waiting
            )
            seen.append(waiting)
        self.assertGreater(max(seen), 0)
        # The others are not starved: they hold nothing.
        for other in (first, last):
            self.assertEqual(other.memberlist.transport.packet_queue_lengths(), (0, 0))


class _RefusingSocket:
    """
    A UDP socket whose C{sendto} fails as a full send buffer does.
    """

    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _next_datagram_size(port: udp.Port) -> int:
    """
    What Linux's C{FIONREAD} says of a UDP socket: the size of the next
    datagram waiting in the kernel (not of all of them), 0 when none does.
    """
    size = array.array("i", [0])
    fcntl.ioctl(port.fileno(), termios.FIONREAD, size)
    return size[0]


_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)


def _kernel_bytes(port: udp.Port) -> int:
    """
    The kernel memory the datagrams waiting on C{port} take (Linux's
    C{SO_MEMINFO}, C{SK_MEMINFO_RMEM_ALLOC}): bytes, overhead included.
    """
    info = port.socket.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 9 * 4)
    return int(struct.unpack("9I", info)[0])


class RealSocketQueueTests(TestCase):
    """
    L{NetTransport} holds no datagram, either way: the gauges' 0 is what
    real sockets do.
    """

    timeout = 30

    async def started(self, handler: IPacketHandler) -> NetTransport:
        transport = NetTransport(reactor, bind_address="127.0.0.1")
        await transport.start(handler)
        self.addCleanup(transport.stop)
        return transport

    async def test_datagrams_wait_in_the_kernel_not_here(self) -> None:
        """
        A burst waits in the kernel's buffer, which counts it in bytes of
        its own; Twisted reads each datagram only as the one before it has
        been handled, so none is ever read ahead into a queue of ours.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("FIONREAD and SO_MEMINFO of UDP sockets as on Linux")
        burst = 50
        waiting: list[tuple[int, tuple[int, int]]] = []
        recorder = PacketRecorder(lambda: waiting.append(probe()))
        transport = await self.started(recorder)
        port = cast(udp.Port, transport._udp)

        def probe() -> tuple[int, tuple[int, int]]:
            return _next_datagram_size(port), transport.packet_queue_lengths()

        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        destination = ("127.0.0.1", transport.port)
        # Hold reading until the whole burst has reached the kernel.
        port.stopReading()
        sender.sendto(b"000", destination)
        await wait_for(lambda: _kernel_bytes(port) > 0, 10, "first datagram queued")
        one = _kernel_bytes(port)
        self.assertGreater(one, 3)  # bytes of kernel memory, not of payload
        for i in range(1, burst):
            sender.sendto(b"%03d" % i, destination)
        await wait_for(lambda: _kernel_bytes(port) == burst * one, 10, "burst queued")
        self.assertEqual(_next_datagram_size(port), 3)  # one datagram's, not all
        self.assertEqual(transport.packet_queue_lengths(), (0, 0))
        port.startReading()
        await wait_for(lambda: len(recorder.packets) == burst, 10, "burst handled")
        self.assertEqual(recorder.packets, [b"%03d" % i for i in range(burst)])
        # While each was handled the next still waited in the kernel.
        self.assertEqual(waiting, [(3, (0, 0))] * (burst - 1) + [(0, (0, 0))])

    async def test_refused_datagram_is_dropped_not_queued(self) -> None:
        """
        A datagram the socket cannot take is counted as failed (the tx
        failed metric) and never sent later.
        """
        transport = await self.started(PacketRecorder())
        port = cast(udp.Port, transport._udp)
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        destination = receiver.getsockname()

        real = port.socket
        port.socket = cast(socket.socket, _RefusingSocket(real))
        try:
            transport.send_packet(b"refused", destination)
            self.assertEqual(transport.counters.traffic.send_failed, 1)
            self.assertEqual(transport.packet_queue_lengths(), (0, 0))
        finally:
            port.socket = real
        await deferLater(reactor, 0, lambda: None)
        transport.send_packet(b"sent", destination)
        self.assertEqual(receiver.recv(100), b"sent")
        self.assertRaises(BlockingIOError, receiver.recv, 100)
        self.assertEqual(transport.counters.traffic.send_failed, 1)
