"""
Tests for L{cluster.alloy.service.ClusterService} on the simulated network:
readiness, component notification, split-brain healing, join subsets,
disabled clustering and the peers API.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cluster import (
    SERVICE_NAME,
    Cluster,
    Component,
    ComponentBlock,
    ICluster,
    IComponent,
    IServiceHost,
    Op,
    Options,
    PeerState,
    ServiceHost,
    SimpleServiceHost,
)
from cluster.alloy.discovery import DiscoveryError
from cluster.alloy.options import OptionError
from cluster.gossip import GossipConfig
from cluster.testing import SimulatedNetwork, SimulatedTransport
from cluster.web.site import service_handler
from tests.helpers import (
    address,
    cluster_services,
    host_of,
    make_participants,
    node_of,
    start_all,
    started_services,
    transport_of,
)


@implementer(IComponent)
class RecordingComponent:
    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.calls: list[float] = []

    def notify_cluster_change(self) -> None:
        self.calls.append(self.clock.seconds())


@implementer(IComponent)
class BrokenComponent:
    def notify_cluster_change(self) -> None:
        raise RuntimeError("component bug")


def render(resource: Any, path: list[bytes]) -> tuple[int, bytes]:
    request = DummyRequest(path)
    request.method = b"GET"
    node = resource
    while request.postpath and not getattr(node, "isLeaf", False):
        node = node.getChildWithDefault(request.postpath.pop(0), request)
    body = node.render(request)
    return request.responseCode or 200, body


class ReadinessTests(SynchronousTestCase):
    def test_ready_at_minimum_participants(self) -> None:
        network = SimulatedNetwork(seed=40)
        services = started_services(network, 5, 5, minimum_cluster_size=3)
        # Five viewers: not ready, viewers do not count.
        self.assertEqual([s.data().ready() for s in services], [False] * 5)
        services[0].change_state(PeerState.PARTICIPANT)
        services[1].change_state(PeerState.PARTICIPANT)
        network.run(5)
        self.assertEqual([s.data().ready() for s in services], [False] * 5)
        services[2].change_state(PeerState.PARTICIPANT)
        network.run(5)
        self.assertEqual([s.data().ready() for s in services], [True] * 5)
        self.assertEqual(len(services[4].data().peers()), 3)
        for svc in services:
            svc.stopService()
        network.run(10)

    def test_wait_timeout(self) -> None:
        network = SimulatedNetwork(seed=41)
        registry = CollectorRegistry()
        (svc,) = cluster_services(
            network,
            1,
            minimum_cluster_size=3,
            minimum_size_wait_timeout=10.0,
            metrics=registry,
            cluster_name="c1",
        )
        component = RecordingComponent(network.clock)
        host_of(svc).register(component)
        svc.startService()
        svc.change_state(PeerState.PARTICIPANT)
        network.run(9.9)
        self.assertFalse(svc.data().ready())
        labels = {"cluster_name": "c1"}
        self.assertEqual(
            registry.get_sample_value("cluster_ready_for_traffic", labels), 0
        )
        self.assertEqual(registry.get_sample_value("cluster_minimum_size", labels), 3)
        before = len(component.calls)
        network.run(0.2)
        self.assertTrue(svc.data().ready())
        self.assertEqual(
            registry.get_sample_value("cluster_ready_for_traffic", labels), 1
        )
        network.run(1)
        # The readiness flip told the components.
        self.assertGreater(len(component.calls), before)
        svc.stopService()
        network.run(10)

    def test_minimum_zero_is_always_ready(self) -> None:
        network = SimulatedNetwork(seed=42)
        (svc,) = cluster_services(network, 1)
        self.assertTrue(svc.data().ready())


class NotificationTests(SynchronousTestCase):
    def test_coalesced_at_most_once_a_second(self) -> None:
        network = SimulatedNetwork(seed=43)
        services = cluster_services(network, 6, minimum_cluster_size=4)
        component = RecordingComponent(network.clock)
        host_of(services[0]).register(component)
        host_of(services[0]).register(BrokenComponent())
        host_of(services[0]).register(object())  # not a Component: ignored
        late = RecordingComponent(network.clock)
        host_of(services[0]).register(late)
        start_all(network, services, 3)
        make_participants(network, services, 3)
        stopped = services[5].stopService()
        network.run(10)
        self.successResultOf(stopped)
        last_change = network.clock.seconds() - 10
        network.run(5)
        self.assertTrue(self.flushLoggedErrors(RuntimeError))
        calls = component.calls
        self.assertGreater(len(calls), 2)
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        self.assertTrue(all(gap >= 1.0 - 1e-9 for gap in gaps), gaps)
        # Told after the last change (the leave), and the component after
        # the broken one still heard every notification.
        self.assertGreaterEqual(calls[-1], last_change)
        self.assertEqual(late.calls, calls)
        names = [p.name for p in services[0].data().peers()]
        self.assertEqual(names, ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4"])


class DiscoveryAndJoinTests(SynchronousTestCase):
    def test_split_brain_heals_within_one_rejoin_interval(self) -> None:
        network = SimulatedNetwork(seed=44)
        found: dict[str, list[str]] = {}

        def discover_for(group: str) -> Any:
            def discover() -> Deferred[list[str]]:
                peers = found.get(group)
                if peers is None:
                    return fail(RuntimeError("discovery unavailable"))
                return succeed(peers)

            return discover

        services = []
        for group in ("a", "b"):
            for i in range(3):
                services.append(
                    network.cluster_service(
                        Options(
                            enable_clustering=True,
                            node_name=f"{group}-{i}",
                            discover_peers=discover_for(f"{group}-{i}"),
                            rejoin_interval=10.0,
                        )
                    )
                )
        a0, b0 = services[0], services[3]
        # Each group forms around its first member, which found nobody.
        for i in (1, 2):
            found[f"a-{i}"] = [address(a0)]
            found[f"b-{i}"] = [address(b0)]
        start_all(network, services, 5)
        self.assertEqual({p.name for p in node_of(a0).peers()}, {"a-0", "a-1", "a-2"})
        self.assertEqual({p.name for p in node_of(b0).peers()}, {"b-0", "b-1", "b-2"})
        # Discovery now returns both groups.
        for name in found.keys() | {"a-0", "b-0"}:
            found[name] = [address(a0), address(b0)]
        everyone = {s.options.node_name for s in services}
        took = network.run_until(
            lambda: all(
                {p.name for p in node_of(s).peers()} == everyone for s in services
            ),
            timeout=10.0 + 3.0,
        )
        self.assertIsNotNone(took)
        for svc in services:
            svc.stopService()
        network.run(10)

    def joins_with_limit(self, limit: int) -> int:
        network = SimulatedNetwork(seed=45)
        quiet = GossipConfig.lan(push_pull_interval=0)
        existing = started_services(network, 10, 5, gossip=quiet)
        addresses = [address(s) for s in existing]
        newcomer = network.cluster_service(
            Options(
                enable_clustering=True,
                node_name="new",
                discover_peers=lambda: addresses,
                cluster_max_join_peers=limit,
                gossip=quiet,
            )
        )
        before = network.counters.streams_opened
        newcomer.startService()
        network.run(0.1)
        return network.counters.streams_opened - before

    def test_max_join_peers(self) -> None:
        self.assertEqual(self.joins_with_limit(2), 2)
        self.assertEqual(self.joins_with_limit(0), 10)
        self.assertEqual(self.joins_with_limit(20), 10)

    def test_random_subset(self) -> None:
        network = SimulatedNetwork(seed=46)
        peers = [f"127.0.0.{i}:7946" for i in range(1, 11)]
        svc = network.cluster_service(
            Options(
                enable_clustering=True,
                node_name="x",
                discover_peers=lambda: peers,
                cluster_max_join_peers=3,
            )
        )
        chosen = {
            tuple(self.successResultOf(Deferred.fromCoroutine(svc._random_peers())))
            for _ in range(20)
        }
        self.assertGreater(len(chosen), 1)
        for subset in chosen:
            self.assertEqual(len(set(subset)), 3)
            self.assertTrue(set(subset) <= set(peers))

    def test_join_failure_bootstraps(self) -> None:
        network = SimulatedNetwork(seed=47)
        svc = network.cluster_service(
            Options(
                enable_clustering=True,
                node_name="alone",
                discover_peers=lambda: ["127.0.0.99:7946"],
            )
        )
        svc.startService()
        network.run(15)
        self.assertEqual([p.name for p in node_of(svc).peers()], ["alone"])
        self.successResultOf(svc.change_state(PeerState.PARTICIPANT))
        self.assertEqual(svc.data().lookup(12345, 1, Op.READ_WRITE)[0].name, "alone")
        svc.stopService()
        network.run(6)

    def test_discovery_failure_fails_start_when_asked(self) -> None:
        """
        With C{fail_on_discovery_error}, a discovery that fails at start-up
        fails L{ClusterService.when_joined} with its error instead of
        bootstrapping: the service stops, its node too, and it never
        rejoins.
        """
        network = SimulatedNetwork(seed=50)
        calls: list[int] = []

        def discover() -> Deferred[list[str]]:
            calls.append(1)
            return fail(DiscoveryError({"peers.invalid": ["no such host"]}))

        svc = network.cluster_service(
            Options(
                enable_clustering=True,
                node_name="lost",
                discover_peers=discover,
                fail_on_discovery_error=True,
                rejoin_interval=10.0,
            )
        )
        svc.startService()
        network.run(1)
        failure = self.failureResultOf(svc.when_joined(), DiscoveryError)
        self.assertEqual(failure.value.reasons, {"peers.invalid": ["no such host"]})
        self.assertFalse(svc.running)
        transport = transport_of(svc)
        assert isinstance(transport, SimulatedTransport)
        self.assertIsNone(transport.handler)  # bound, then closed
        self.assertEqual(node_of(svc).peers(), [])
        network.run(60)
        self.assertEqual(calls, [1])


class DisabledTests(SynchronousTestCase):
    def test_single_node_cluster(self) -> None:
        network = SimulatedNetwork(seed=48)
        svc = network.cluster_service(
            Options(enable_clustering=False, node_name="solo")
        )
        svc.startService()
        self.assertIsNone(svc.node)
        self.assertTrue(svc.data().ready())
        for key in (0, 1, 2**63, 2**64 - 1):
            owners = svc.data().lookup(key, 1, Op.READ_WRITE)
            self.assertEqual([(p.name, p.is_self) for p in owners], [("solo", True)])
        self.assertEqual(svc.data().peers()[0].state, PeerState.PARTICIPANT)
        _base, resource = service_handler(svc)
        code, body = render(resource, [b"peers"])
        self.assertEqual((code, body), (404, b"clustering is disabled\n"))
        # No sockets: the simulated host never came up.
        self.assertEqual(network.counters.packets_sent, 0)
        self.successResultOf(svc.stopService())


class ServiceSurfaceTests(SynchronousTestCase):
    def test_definition_update_and_interfaces(self) -> None:
        network = SimulatedNetwork(seed=49)
        (svc,) = cluster_services(network, 1)
        self.assertEqual(SERVICE_NAME, "cluster")
        self.assertEqual(svc.name, "cluster")
        definition = svc.definition()
        self.assertEqual((definition.name, definition.config_type), ("cluster", None))
        self.assertRaises(ValueError, svc.update, {})
        self.assertTrue(verifyObject(ICluster, svc.data()))
        self.assertTrue(verifyObject(IServiceHost, SimpleServiceHost()))
        # The names before the I prefix, kept for one release.
        self.assertEqual(
            (Cluster, Component, ServiceHost), (ICluster, IComponent, IServiceHost)
        )
        self.assertEqual(ComponentBlock().enabled, False)
        self.assertEqual(ComponentBlock(enabled=True).enabled, True)

    def test_peers_api_excludes_viewers(self) -> None:
        network = SimulatedNetwork(seed=50)
        services = started_services(network, 3, 3)
        services[1].change_state(PeerState.PARTICIPANT)
        network.run(3)
        base, resource = service_handler(services[0])
        self.assertEqual(base, "/api/v0/web/")
        code, body = render(resource, [b"peers"])
        self.assertEqual(code, 200)
        self.assertEqual(
            json.loads(body),
            [
                {
                    "name": "svc-1",
                    "addr": address(services[1]),
                    "isSelf": False,
                    "state": "participant",
                }
            ],
        )

    def test_options_validation(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"enable_tls": True}, "tls_ca_path"),
            ({"enable_tls": True, "tls_ca_path": "/nonexistent"}, "tls_ca_path"),
            ({"minimum_cluster_size": -1}, "minimum_cluster_size"),
            ({"cluster_max_join_peers": -2}, "cluster_max_join_peers"),
            ({"rejoin_interval": -1.0}, "rejoin_interval"),
            ({"advertise_address": "not-an-ip"}, "advertise_address"),
            ({"bind_port": 99999}, "bind_port"),
            ({"node_name": ""}, "node_name"),
            ({"cluster_name": "x" * 300}, "cluster_name"),
            ({"bind_address": "localhost"}, "bind_address"),
            ({"advertise_interfaces": ["eth0", ""]}, "advertise_interfaces"),
            ({"discover_peers": ["127.0.0.1:7946"]}, "discover_peers"),
        ]
        for kwargs, field in cases:
            error = self.assertRaises(OptionError, Options, **kwargs)
            self.assertEqual(error.field, field)
            self.assertEqual(str(error), f"{field}: {error.reason}")
        options = Options(advertise_address="127.0.0.5:9000", node_name="n")
        config = options.gossip_config()
        self.assertEqual(
            (config.advertise_address, config.advertise_port), ("127.0.0.5", 9000)
        )
