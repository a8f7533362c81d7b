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
from twisted.internet import error as error_types
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
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
    JoinRefused,
    Op,
    Options,
    PeerState,
    ServiceHost,
    SimpleServiceHost,
)
from cluster.alloy.discovery import DiscoveryError
from cluster.alloy.options import OptionError
from cluster.alloy.service import ClusterService
from cluster.daemon.program import describe
from cluster.gossip import GossipConfig, Keyring
from cluster.gossip.counters import DropReason
from cluster.gossip.errors import NoReplyError, RemoteError
from cluster.gossip.framing import FrameError
from cluster.gossip.interfaces import StreamTimeout
from cluster.gossip.join import refusal
from cluster.gossip.state import ProtocolMismatchError
from cluster.gossip.tls import TLSCause, TLSRefusal, TLSRefused
from cluster.shard import NotEnoughPeersError
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

KEY = Keyring([bytes(range(16))])
OTHER_KEY = Keyring([bytes(range(100, 116))])


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


class LogRecorder:
    """
    The lines logged while a test runs, as an operator reads them.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.lines: list[str] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        case.addCleanup(globalLogPublisher.removeObserver, observe)

    def matching(self, start: str) -> list[str]:
        return [line for line in self.lines if line.startswith(start)]


class RefusalClassificationTests(SynchronousTestCase):
    """
    L{cluster.gossip.join.refusal}: how a failed join push/pull reads,
    nobody answering (C{None}) or a refusal in words.
    """

    def test_nobody_answered(self) -> None:
        for error in [
            ConnectionRefusedError("127.0.0.1"),
            error_types.ConnectionRefusedError(),
            error_types.TCPTimedOutError(),
            error_types.DNSLookupError("peer.invalid"),
            error_types.NoRouteError(),
            StreamTimeout("stream to 127.0.0.1:7946 timed out"),
            TimeoutError(),
            ConnectionResetError(),
        ]:
            self.assertIsNone(
                refusal("127.0.0.1:7946", Failure(error), "blue", False), error
            )

    def test_refusals_in_words(self) -> None:
        tls = TLSRefusal(
            TLSCause.UNKNOWN_CA,
            'certificate from an unknown CA (ours is issued by "other CA")',
            False,
        )
        cases: list[tuple[Exception, str, bool, str]] = [
            (
                TLSRefused("a:1", tls),
                "blue",
                True,
                "a:1 refused us: certificate from an unknown CA (ours is issued by "
                '"other CA")',
            ),
            (
                NoReplyError("peer closed the stream without a reply"),
                "blue",
                True,
                "a:1 refused us: it closed the connection without answering our "
                'push/pull (a different cluster name? ours is "blue")',
            ),
            (
                NoReplyError("peer closed the stream without a reply"),
                "",
                False,
                "a:1 refused us: it closed the connection without answering our "
                "push/pull (a different cluster name? we have none; or TLS on its "
                "side only?)",
            ),
            (
                FrameError("decrypt", "No installed keys could decrypt the message"),
                "",
                False,
                "a:1 refused us: gossip key mismatch: its reply is encrypted with a "
                "gossip key we do not have",
            ),
            (
                FrameError(
                    "decrypt",
                    "Remote state is encrypted and encryption is not configured",
                ),
                "",
                False,
                "a:1 refused us: gossip key mismatch: its reply is encrypted and we "
                "have no gossip key",
            ),
            (
                FrameError(
                    "decrypt",
                    "Encryption is configured but remote state is not encrypted",
                ),
                "",
                False,
                "a:1 refused us: gossip key mismatch: its reply is not encrypted and "
                "we require a gossip key",
            ),
            (
                RemoteError("No installed keys could decrypt the message"),
                "",
                False,
                "a:1 refused us: gossip key mismatch: our push/pull is encrypted with "
                "a gossip key it does not have",
            ),
            (
                RemoteError(
                    "Encryption is configured but remote state is not encrypted"
                ),
                "",
                False,
                "a:1 refused us: gossip key mismatch: our push/pull is not encrypted "
                "and it requires a gossip key",
            ),
            (
                ProtocolMismatchError(
                    "Node 'b' protocol version (9) is incompatible: [1, 5]"
                ),
                "",
                False,
                "a:1 refused us: protocol version: Node 'b' protocol version (9) is "
                "incompatible: [1, 5]",
            ),
            (
                FrameError("decode", "unknown message type 72"),
                "",
                False,
                "a:1 answered with no push/pull we can read: unknown message type 72",
            ),
        ]
        for error, label, tls_on, words in cases:
            self.assertEqual(refusal("a:1", Failure(error), label, tls_on), words)

    def test_the_program_says_it_in_one_line(self) -> None:
        """
        C{clusternode} names the flag, then every refusal.
        """
        refused = JoinRefused(
            {"127.0.0.1:7946": Failure(NoReplyError())},
            {"127.0.0.1:7946": "127.0.0.1:7946 refused us: a cause"},
        )
        self.assertEqual(
            describe(Failure(refused)),
            "--join-addresses: 127.0.0.1:7946 refused us: a cause",
        )


def lonely(network: SimulatedNetwork, name: str, **options: Any) -> ClusterService:
    """
    A service discovering nobody (the first node of its cluster), started.
    """
    svc = network.cluster_service(
        Options(enable_clustering=True, node_name=name, **options)
    )
    svc.startService()
    return svc


class RefusedJoinTests(SynchronousTestCase):
    """
    Peers that answer and refuse our join (another cluster name, another
    gossip key) are not nobody answering: the service does not bootstrap a
    cluster of its own, fails L{ClusterService.when_joined} with
    L{JoinRefused}, stays not ready and a viewer, and tries again every
    rejoin interval, joining once the cause is fixed.
    """

    def newcomer(
        self, network: SimulatedNetwork, peers: list[str], **options: Any
    ) -> ClusterService:
        return network.cluster_service(
            Options(
                enable_clustering=True,
                node_name="newcomer",
                discover_peers=lambda: list(peers),
                rejoin_interval=10.0,
                metrics=CollectorRegistry(),
                **options,
            )
        )

    def assertOut(self, newcomer: ClusterService, seed: ClusterService) -> None:
        """
        C{newcomer} is running, not ready, a viewer owning nothing, and
        neither side lists the other.
        """
        self.assertTrue(newcomer.running)
        self.assertFalse(newcomer.data().ready())
        registry = newcomer.options.metrics
        assert registry is not None
        self.assertEqual(
            registry.get_sample_value(
                "cluster_ready_for_traffic",
                {"cluster_name": newcomer.options.cluster_name},
            ),
            0.0,
        )
        self.assertEqual(
            [(p.name, p.state) for p in node_of(newcomer).peers()],
            [("newcomer", PeerState.VIEWER)],
        )
        self.assertRaises(
            NotEnoughPeersError, newcomer.data().lookup, 1, 1, Op.READ_WRITE
        )
        self.assertIsNone(node_of(seed).memberlist.member("newcomer"))

    def refused(
        self, seed_options: dict[str, Any], newcomer_options: dict[str, Any], seed: int
    ) -> tuple[SimulatedNetwork, ClusterService, ClusterService, LogRecorder]:
        logs = LogRecorder(self)
        network = SimulatedNetwork(seed=seed)
        first = lonely(network, "seed", **seed_options)
        network.run(1)
        newcomer = self.newcomer(network, [address(first)], **newcomer_options)
        newcomer.startService()
        # Asked at once, as a program does: it waits for the join.
        self.participant = newcomer.change_state(PeerState.PARTICIPANT)
        network.run(1)
        self.assertNoResult(self.participant)
        self.assertOut(newcomer, first)
        return network, first, newcomer, logs

    def test_another_cluster_name(self) -> None:
        _, seed, newcomer, logs = self.refused(
            {"cluster_name": "blue"}, {"cluster_name": "green"}, seed=60
        )
        failure = self.failureResultOf(newcomer.when_joined(), JoinRefused)
        seed_address = address(seed)
        self.assertEqual(
            str(failure.value),
            f"{seed_address} refused us: it closed the connection without answering "
            'our push/pull (a different cluster name? ours is "green"; or TLS on its '
            "side only?)",
        )
        self.assertEqual(
            logs.matching("join refused"),
            [
                "join refused, not bootstrapping a cluster of our own: "
                f"{failure.value}; not ready, trying again every 10 s"
            ],
        )
        newcomer_host = transport_of(newcomer).host
        self.assertEqual(
            logs.matching("refused a stream"),
            [
                f"refused a stream from {newcomer_host}: cluster name mismatch: it is "
                '"green", ours is "blue"'
            ],
        )
        self.assertEqual(node_of(seed).memberlist.counters.dropped[DropReason.LABEL], 1)

    def test_another_gossip_key(self) -> None:
        _, seed, newcomer, logs = self.refused(
            {"keyring": KEY}, {"keyring": OTHER_KEY}, seed=61
        )
        failure = self.failureResultOf(newcomer.when_joined(), JoinRefused)
        self.assertEqual(
            str(failure.value),
            f"{address(seed)} refused us: gossip key mismatch: its reply is "
            "encrypted with a gossip key we do not have",
        )
        newcomer_host = transport_of(newcomer).host
        self.assertEqual(
            logs.matching("refused a stream"),
            [
                f"refused a stream from {newcomer_host}: gossip key mismatch: the "
                "stream is encrypted with a gossip key we do not have"
            ],
        )
        dropped = node_of(newcomer).memberlist.counters.dropped
        self.assertEqual(dropped[DropReason.DECRYPT], 1)
        self.assertEqual(
            node_of(seed).memberlist.counters.dropped[DropReason.DECRYPT], 1
        )

    def test_keeps_trying_and_joins_once_the_peer_is_fixed(self) -> None:
        """
        The refused newcomer tries again every rejoin interval, refused
        each time, and stays out; the seed restarts with the right cluster
        name at the same address, and at the next try the newcomer joins:
        ready, its held change to participant done, and a call of
        L{ClusterService.when_joined} made then fires.
        """
        network, seed, newcomer, logs = self.refused(
            {"cluster_name": "blue"}, {"cluster_name": "green"}, seed=62
        )
        network.run(25)  # two more tries
        self.assertEqual(len(logs.matching("join refused")), 3)
        self.assertOut(newcomer, seed)
        host = transport_of(seed).host
        self.successResultOf(seed.stopService())
        fixed = network.cluster_service(
            Options(enable_clustering=True, node_name="seed", cluster_name="green"),
            host=host,
        )
        fixed.startService()
        took = network.run_until(lambda: newcomer.data().ready(), 10.0 + 1.0)
        self.assertIsNotNone(took, "the newcomer joins at its next try")
        self.successResultOf(newcomer.when_joined())
        network.run(2)
        self.successResultOf(self.participant)
        self.assertEqual(
            [(p.name, p.state) for p in node_of(fixed).peers()],
            [("newcomer", PeerState.PARTICIPANT), ("seed", PeerState.VIEWER)],
        )
        self.assertEqual(
            logs.matching("joined 1 peer(s) after being refused"),
            ["joined 1 peer(s) after being refused"],
        )
        for svc in (newcomer, fixed):
            svc.stopService()
        network.run(10)

    def test_a_refusal_among_silent_peers_is_a_refusal(self) -> None:
        """
        One peer refuses and the others do not answer: still refused.
        One peer lets us in and another refuses: joined.
        """
        network = SimulatedNetwork(seed=63)
        blue = lonely(network, "blue", cluster_name="blue")
        green = lonely(network, "green", cluster_name="green")
        network.run(1)
        silent = f"{network.new_host()}:7946"
        refused = self.newcomer(network, [silent, address(blue)], cluster_name="green")
        refused.startService()
        network.run(12)
        failure = self.failureResultOf(refused.when_joined(), JoinRefused)
        self.assertEqual(list(failure.value.refusals), [address(blue)])
        self.assertEqual(set(failure.value.errors), {silent, address(blue)})
        joined = network.cluster_service(
            Options(
                enable_clustering=True,
                node_name="joined",
                cluster_name="green",
                discover_peers=lambda: [address(blue), address(green)],
            )
        )
        joined.startService()
        network.run(2)
        self.successResultOf(joined.when_joined())
        self.assertEqual({p.name for p in node_of(joined).peers()}, {"green", "joined"})


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
