"""
Tests for L{cluster.metrics}: every node's Prometheus metrics, scraped from
a registry of its own as Prometheus would, on the simulated network.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import DuplicateTimeseries
from twisted.trial.unittest import SynchronousTestCase

from cluster.discovery import static
from cluster.gossip import JoinError
from cluster.metrics import RECEIVED_EVENTS
from cluster.node import FuncObserver, Node
from cluster.options import Options
from cluster.peer import Peer, PeerState
from cluster.service import ClusterService
from cluster.testing import SimulatedNetwork
from tests.helpers import address, node_of

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
    registry.register(node.metrics)
    return registry


def three_nodes(seed: int) -> tuple[SimulatedNetwork, list[Node]]:
    """
    Three nodes labelled C{prod}, joined through the first and settled.
    """
    network = SimulatedNetwork(seed=seed)
    nodes = [network.node(f"node-{i}", label=CLUSTER) for i in range(3)]
    nodes[0].start()
    network.run(0.01)
    seed_address = nodes[0].memberlist.local_member().full_address()
    for node in nodes[1:]:
        node.start([seed_address])
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
            self.assertEqual(
                events, {e: node.gossip_events[e] for e in RECEIVED_EVENTS}
            )
            # Memberlist told the node of all three, itself included.
            self.assertEqual(events["node_join"], 3)
            self.assertGreater(events["get_local_state"], 0)
            self.assertGreater(events["merge_remote_state"], 0)
            stats = node.memberlist.stats
            self.assertEqual(
                scrape.value("cluster_transport_rx_packets_total"),
                stats["packets.in"],
            )
            self.assertEqual(
                scrape.value("cluster_transport_tx_bytes_total"), stats["bytes.out"]
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
                node.gossip_broadcasts["state_change_message"],
            )
            self.assertGreater(node.gossip_broadcasts["state_change_message"], 0)

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
        self.assertEqual(scrape.by("cluster_node_gossip_dropped_total", "reason"), {})

        a.memberlist.receiver.packet_received(b"\xff", ("127.0.0.1", 1))
        failed = a.memberlist.join(["127.9.9.9:7946"])
        network.run(1)
        self.failureResultOf(failed, JoinError)
        scrape = Scrape.of(registry_for(a))
        self.assertEqual(scrape.value("cluster_transport_rx_packets_failed_total"), 1)
        self.assertEqual(
            # A packet without our cluster label.
            scrape.by("cluster_node_gossip_dropped_total", "reason"),
            {"label": 1},
        )
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
        error = self.assertRaises(DuplicateTimeseries, mine.register, a.metrics)
        self.assertIn("cluster_node_info", str(error))
        self.assertRaises(ValueError, mine.register, b.metrics)
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
        for svc in services:
            svc.change_state(PeerState.PARTICIPANT)
        network.run(5)
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
        registry.register(node_of(svc).metrics)
