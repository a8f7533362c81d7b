"""
C{twistd clusternode} in-process: its command line
(L{cluster.daemon.tap.ClusterNodeOptions}; every flag with a good and a bad
value, a bad one being a one-line usage error naming the flag, raised
before anything binds), the plugin and L{cluster.daemon.tap.makeService},
and the program (L{cluster.daemon.program.ClusterNode}) starting, joining
and failing on the simulated network and a memory reactor.
"""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any, cast

from twisted.application import strports
from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore, IReactorTCP
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from cluster.alloy.discovery import join_addresses, static
from cluster.alloy.options import Options
from cluster.alloy.service import ClusterService
from cluster.daemon.certs import issue_certificate, make_authority
from cluster.daemon.flags import parse_duration
from cluster.daemon.program import ClusterNode, QuietSite
from cluster.daemon.tap import ClusterNodeOptions, makeService
from cluster.gossip import Keyring
from cluster.gossip.interfaces import IPacketHandler
from cluster.peer import PeerState
from cluster.testing import SimulatedNetwork, SimulatedTransport
from tests.helpers import FakeResolver, address, known, node_of, transport_of

KEY16 = base64.b64encode(bytes(range(16))).decode()
KEY32 = base64.b64encode(bytes(range(32))).decode()


def parse(*argv: str) -> ClusterNodeOptions:
    options = ClusterNodeOptions()
    options.parseOptions(list(argv))
    return options


def settings(*argv: str) -> Options:
    """
    The cluster service's options that C{argv} give.
    """
    return parse(*argv).cluster_options


class DurationTests(SynchronousTestCase):
    def test_go_forms(self) -> None:
        cases = {"0": 0.0, "500ms": 0.5, "60s": 60.0, "5m": 300.0, "1h30m": 5400.0}
        for text, seconds in cases.items():
            self.assertAlmostEqual(parse_duration(text), seconds)
        for bad in ("", "30", "-1s", "5 m", "1x", "s"):
            self.assertRaises(ValueError, parse_duration, bad)


class PluginTests(SynchronousTestCase):
    def test_plugin_is_found(self) -> None:
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("clusternode", makers)
        self.assertIs(makers["clusternode"].options, ClusterNodeOptions)

    def test_make_service(self) -> None:
        """
        L{makeService} puts the flags together on the reactor it is given:
        the cluster service with its options and discovery, the status site
        on C{--http}.
        """
        reactor = MemoryReactorClock()
        options = parse(
            "--node-name",
            "n",
            "--bind",
            "127.0.0.1:7001",
            "--join-addresses",
            "127.0.0.2",
            "--http",
            "tcp:8123:interface=127.0.0.1",
            "--viewer",
        )
        node = makeService(options, reactor)
        self.assertIsInstance(node, ClusterNode)
        # The cluster service and the status site.
        self.assertEqual(list(node), [node.cluster, node.site])
        self.assertIs(node.reactor, reactor)
        self.assertIs(node.cluster.reactor, reactor)
        self.assertFalse(node.participate)
        self.assertEqual(node.cluster.options.node_name, "n")
        self.assertTrue(node.cluster.options.fail_on_discovery_error)
        self.assertIsNotNone(node.cluster.options.metrics)
        # Join addresses without a port take the bind port.
        discover = node.cluster.options.discover_peers
        assert discover is not None
        found = discover()
        assert isinstance(found, Deferred)
        self.assertEqual(self.successResultOf(found), ["127.0.0.2:7001"])
        # twistd listens first, before it drops privileges.
        node.privilegedStartService()
        ((port, factory, _, interface),) = reactor.tcpServers
        self.assertEqual((port, interface), (8123, "127.0.0.1"))
        self.assertIsInstance(factory, QuietSite)


class FlagTests(SynchronousTestCase):
    """
    Each flag: a good value reaches the service's options, a bad one is a
    usage error naming the flag.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def assertBad(self, flag: str, *argv: str) -> str:
        with self.assertRaises(UsageError) as raised:
            parse(*argv)
        message = str(raised.exception)
        self.assertIn(flag, message)
        self.assertNotIn("\n", message)
        return message

    def test_defaults(self) -> None:
        options = settings()
        self.assertEqual((options.bind_address, options.bind_port), ("0.0.0.0", 7946))
        self.assertEqual(options.rejoin_interval, 60.0)
        self.assertEqual(options.cluster_max_join_peers, 5)
        self.assertEqual(options.advertise_interfaces, ("eth0", "en0"))
        self.assertTrue(options.enable_clustering)
        self.assertTrue(options.node_name)
        self.assertEqual(parse()["http"], "tcp:12345:interface=127.0.0.1")

    def test_node_name(self) -> None:
        self.assertEqual(settings("--node-name", "n1").node_name, "n1")
        self.assertEqual(
            self.assertBad("--node-name", "--node-name", ""),
            "--node-name: must not be empty",
        )

    def test_bind(self) -> None:
        options = settings("--bind", "127.0.0.1:7000")
        self.assertEqual((options.bind_address, options.bind_port), ("127.0.0.1", 7000))
        self.assertBad("--bind", "--bind", "127.0.0.1:99999")
        self.assertEqual(
            self.assertBad("--bind", "--bind", "not-an-ip:7946"),
            "--bind: must be an IP address, got 'not-an-ip'",
        )

    def test_advertise_address(self) -> None:
        options = settings("--advertise-address", "10.0.0.1:7000")
        self.assertEqual(options.gossip_config().advertise_port, 7000)
        self.assertBad("--advertise-address", "--advertise-address", "nope")

    def test_advertise_interfaces(self) -> None:
        options = settings("--advertise-interfaces", "all")
        self.assertEqual(options.advertise_interfaces, ("all",))
        self.assertEqual(
            settings("--advertise-interfaces", "eth1, ens3").advertise_interfaces,
            ("eth1", "ens3"),
        )
        self.assertBad("--advertise-interfaces", "--advertise-interfaces", ",")

    def test_join_addresses(self) -> None:
        options = parse("--join-addresses", "127.0.0.1:7001, dns+peers.invalid")
        self.assertEqual(
            options["join-addresses"], ("127.0.0.1:7001", "dns+peers.invalid")
        )
        self.assertBad("--join-addresses", "--join-addresses", "peer.invalid:http")

    def test_rejoin_interval(self) -> None:
        self.assertEqual(settings("--rejoin-interval", "30s").rejoin_interval, 30)
        self.assertBad("--rejoin-interval", "--rejoin-interval", "30")

    def test_max_join_peers(self) -> None:
        self.assertEqual(settings("--max-join-peers", "3").cluster_max_join_peers, 3)
        self.assertBad("--max-join-peers", "--max-join-peers", "-1")
        self.assertBad("--max-join-peers", "--max-join-peers", "many")

    def test_cluster_name(self) -> None:
        options = settings("--cluster-name", "prod")
        self.assertEqual(options.gossip_config().label, "prod")
        self.assertEqual(
            self.assertBad("--cluster-name", "--cluster-name", "x" * 300),
            "--cluster-name: must be at most 255 bytes",
        )

    def test_profile(self) -> None:
        config = settings("--profile", "wan").gossip_config()
        self.assertEqual(config.probe_interval, 5.0)
        self.assertBad("--profile", "--profile", "fast")

    def test_encrypt_key(self) -> None:
        options = settings("--encrypt-key", KEY32, "--encrypt-key", KEY16)
        keyring = options.gossip_config().keyring
        assert keyring is not None
        self.assertEqual(len(keyring.keys()), 2)
        self.assertBad("--encrypt-key", "--encrypt-key", "abc")

    def test_keyring_file(self) -> None:
        path = os.path.join(self.directory, "keyring.json")
        with open(path, "w") as f:
            json.dump([KEY16], f)
        keyring = settings("--keyring-file", path).keyring
        self.assertIsInstance(keyring, Keyring)
        self.assertBad("--keyring-file", "--keyring-file", path + ".missing")
        self.assertBad("--keyring-file", "--keyring-file", path, "--encrypt-key", KEY16)

    def tls_files(self) -> list[str]:
        authority = make_authority()
        ca, _ = authority.write(self.directory, "ca")
        cert, key = issue_certificate(authority, "n", ["n.test"]).write(
            self.directory, "n"
        )
        return ["--tls-ca-path", ca, "--tls-cert-path", cert, "--tls-key-path", key]

    def test_enable_tls(self) -> None:
        files = self.tls_files()
        options = settings("--enable-tls", "--encrypt-key", KEY16, *files)
        self.assertIsNotNone(options.gossip_config().tls)
        self.assertBad("--tls-ca-path", "--enable-tls", "--encrypt-key", KEY16)
        # TLS cannot cover UDP: without a gossip key it is refused.
        self.assertBad("--enable-tls", "--enable-tls", *files)

    def test_tls_paths(self) -> None:
        files = self.tls_files()
        for index, flag in (
            (1, "--tls-ca-path"),
            (3, "--tls-cert-path"),
            (5, "--tls-key-path"),
        ):
            broken = list(files)
            broken[index] = os.path.join(self.directory, "missing.pem")
            message = self.assertBad(
                flag, "--enable-tls", "--encrypt-key", KEY16, *broken
            )
            self.assertEqual(message, f"{flag}: {broken[index]} does not exist")
        unreadable = list(files)
        unreadable[5] = files[3]  # a certificate where the key goes
        message = self.assertBad(
            "--tls-key-path", "--enable-tls", "--encrypt-key", KEY16, *unreadable
        )
        self.assertTrue(
            message.startswith("--tls-key-path: not a PEM private key"), message
        )

    def test_tls_server_name(self) -> None:
        files = self.tls_files()
        options = settings(
            "--enable-tls",
            "--encrypt-key",
            KEY16,
            "--tls-server-name",
            "n.test",
            *files,
        )
        tls = options.gossip_config().tls
        assert tls is not None
        self.assertEqual(tls.server_name, "n.test")
        self.assertBad("--tls-server-name", "--tls-server-name", "bad name!")

    def test_allow_plaintext_udp(self) -> None:
        files = self.tls_files()
        options = settings("--enable-tls", "--allow-plaintext-udp", *files)
        self.assertIsNone(options.gossip_config().keyring)
        self.assertBad("--allow-plaintext-udp", "--allow-plaintext-udp")

    def test_wait_for_size(self) -> None:
        self.assertEqual(settings("--wait-for-size", "3").minimum_cluster_size, 3)
        self.assertBad("--wait-for-size", "--wait-for-size", "-3")

    def test_wait_timeout(self) -> None:
        self.assertEqual(
            settings("--wait-timeout", "5m").minimum_size_wait_timeout, 300
        )
        self.assertBad("--wait-timeout", "--wait-timeout", "5 minutes")

    def test_http(self) -> None:
        self.assertEqual(
            parse("--http", "tcp:0:interface=127.0.0.1")["http"],
            "tcp:0:interface=127.0.0.1",
        )
        self.assertBad("--http", "--http", "nonsense:foo")

    def test_viewer(self) -> None:
        self.assertTrue(parse("--viewer")["viewer"])
        self.assertBad("--viewer", "--viewer", "--no-clustering")

    def test_no_clustering(self) -> None:
        self.assertFalse(settings("--no-clustering").enable_clustering)
        self.assertBad(
            "--join-addresses", "--no-clustering", "--join-addresses", "127.0.0.1:1"
        )

    def test_unknown_flag(self) -> None:
        self.assertBad("--frobnicate", "--frobnicate")


def bound(service: ClusterService) -> bool:
    """
    Whether C{service}'s simulated host is on the network.
    """
    transport = transport_of(service)
    assert isinstance(transport, SimulatedTransport)
    return transport.handler is not None


class _PortInUse(SimulatedTransport):
    """
    A simulated host whose gossip port another process holds.
    """

    def start(self, handler: IPacketHandler) -> Deferred[None]:
        return fail(CannotListenError(self.host, self.port, OSError("in use")))


class ClusterNodeTests(SynchronousTestCase):
    """
    The program in-process: its cluster service on the simulated network,
    its site and the reactor it stops on a memory reactor that twistd is
    running.
    """

    def setUp(self) -> None:
        self.network = SimulatedNetwork(seed=18)
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.stderr = io.StringIO()
        self.statuses: list[int] = []
        self.logged: list[str] = []

        def observe(event: LogEvent) -> None:
            self.logged.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def service(self, name: str, **options: Any) -> ClusterService:
        return self.network.cluster_service(
            Options(enable_clustering=True, node_name=name, **options)
        )

    def program(
        self,
        cluster: ClusterService,
        participate: bool = True,
        site_reactor: IReactorTCP | None = None,
    ) -> ClusterNode:
        """
        The program around C{cluster}, its site on port 8123 of
        C{site_reactor} (the memory reactor by default).
        """
        # strports asks for a reactor core, and only listens on it.
        listening = cast(IReactorCore, site_reactor or self.reactor)
        return ClusterNode(
            cluster,
            strports.service("tcp:8123", QuietSite(Resource()), reactor=listening),
            self.reactor,
            participate,
            stderr=self.stderr,
            end_process=self.statuses.append,
        )

    def assertFailed(self, node: ClusterNode, line: str) -> None:
        """
        C{node} wrote C{line}, alone, to stderr, ends with status 1, and
        stopped the reactor.
        """
        self.assertEqual(self.stderr.getvalue(), f"twistd clusternode: {line}\n")
        self.assertEqual(self.statuses, [1])
        self.assertTrue(self.reactor.hasStopped)
        self.assertFalse(node.cluster.running)

    def test_joins_and_takes_work(self) -> None:
        seed = self.service("seed")
        seed.startService()
        node = self.program(self.service("n", discover_peers=static([address(seed)])))
        node.startService()
        self.network.run(1)
        self.assertEqual(node_of(node.cluster).current_state(), PeerState.PARTICIPANT)
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.assertIsNone(node.failure)
        self.assertEqual((self.stderr.getvalue(), self.statuses), ("", []))
        self.assertFalse(self.reactor.hasStopped)
        stopped = node.stopService()
        self.network.run(5)
        self.successResultOf(stopped)
        self.assertEqual(known(node_of(seed).memberlist, "n").state.name, "LEFT")

    def test_viewer_stays_a_viewer(self) -> None:
        node = self.program(self.service("v"), participate=False)
        node.startService()
        self.network.run(5)
        self.assertEqual(node_of(node.cluster).current_state(), PeerState.VIEWER)
        self.assertIsNone(node.failure)

    def test_join_addresses_none_resolve(self) -> None:
        """
        Join addresses of which none resolves: the node never bootstraps a
        cluster of its own, and says so in one line naming the flag.
        """
        discover = join_addresses("nowhere.invalid", 7946, FakeResolver())
        node = self.program(
            self.service("lost", discover_peers=discover, fail_on_discovery_error=True)
        )
        node.startService()
        self.network.run(1)
        why = (
            "failed to find any valid join addresses: 'nowhere.invalid': not an "
            "IP address, A/AAAA no address for 'nowhere.invalid': no such name / "
            "no such name, SRV nowhere.invalid: no such name"
        )
        self.assertFailed(node, f"--join-addresses: {why}")
        # Said once in the log, and nothing of a cluster of its own.
        self.assertEqual(
            [line for line in self.logged if why in line],
            [f"cluster node failed to start: {why}"],
        )
        for bootstrap in ("will create a new cluster", "starting cluster node"):
            self.assertEqual([line for line in self.logged if bootstrap in line], [])
        self.assertFalse(bound(node.cluster))  # bound, then closed

    def test_name_in_use(self) -> None:
        holder = self.service("b")
        holder.startService()
        self.network.run(1)
        newcomer = self.service("b", discover_peers=static([address(holder)]))
        node = self.program(newcomer)
        node.startService()
        self.network.run(5)
        self.assertFailed(
            node,
            f"node name b is already used by {address(holder)}; this node "
            f"({address(newcomer)}) will not become ready",
        )
        self.assertFalse(newcomer.data().ready())

    def test_gossip_port_in_use(self) -> None:
        """
        A port in use fails at start: the reactor stops as soon as twistd
        runs it.
        """
        self.reactor.running = False
        options = Options(
            enable_clustering=True, node_name="p", bind_address="127.1.0.9"
        )
        cluster = ClusterService(
            options,
            reactor=self.network.clock,
            transport=_PortInUse(self.network, "127.1.0.9"),
        )
        node = self.program(cluster)
        node.startService()
        self.assertEqual(
            self.stderr.getvalue(),
            "twistd clusternode: cannot bind 127.1.0.9:7946 (UDP and TCP): in use\n",
        )
        self.assertEqual(self.statuses, [1])
        self.assertEqual(self.reactor.whenRunningHooks, [(self.reactor.stop, (), {})])
        self.assertFalse(cluster.running)
        # twistd stops what runs: the site, not the failed cluster service.
        self.assertTrue(node.site.running)
        self.successResultOf(node.stopService())
        self.assertFalse(node.site.running)

    def test_http_port_in_use(self) -> None:
        """
        twistd listens on C{--http} first: when that fails, the line names
        the flag, and the cluster service never starts.
        """
        self.reactor.running = False
        error = CannotListenError("127.0.0.1", 8123, OSError("in use"))
        node = self.program(
            self.service("h"), site_reactor=RaisingMemoryReactor(listenException=error)
        )
        node.privilegedStartService()
        node.startService()
        line = "--http: Couldn't listen on 127.0.0.1:8123: in use."
        self.assertEqual(self.stderr.getvalue(), f"twistd clusternode: {line}\n")
        self.assertEqual(self.logged, [line])
        self.assertEqual(self.statuses, [1])
        self.assertEqual(self.reactor.whenRunningHooks, [(self.reactor.stop, (), {})])
        self.assertFalse(node.cluster.running)
        self.assertFalse(bound(node.cluster))
        self.successResultOf(node.stopService())


class QuietSiteTests(SynchronousTestCase):
    def test_no_request_log_and_no_timer_for_it(self) -> None:
        clock = MemoryReactorClock()
        site = QuietSite(Resource(), reactor=clock)
        site.startFactory()
        # Twisted's Site refreshes its log timestamp every second: an idle
        # node would wake the reactor for nothing else.
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(site.noisy)
        site.stopFactory()
