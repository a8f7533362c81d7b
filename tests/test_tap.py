"""
C{twistd clusternode}'s command line (L{cluster.daemon.tap.Options}) and plugin:
every flag with a good and a bad value; a bad one is a one-line usage
error naming the flag, raised before anything binds.
"""

from __future__ import annotations

import base64
import json
import os

from twisted.application.service import IServiceMaker
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from cluster.daemon.certs import issue_certificate, make_authority
from cluster.daemon.tap import (
    ClusterNode,
    Options,
    _QuietSite,
    makeService,
    parse_duration,
)
from cluster.gossip import Keyring

KEY16 = base64.b64encode(bytes(range(16))).decode()
KEY32 = base64.b64encode(bytes(range(32))).decode()


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


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
        self.assertEqual(makers["clusternode"].options, Options)

    def test_make_service(self) -> None:
        options = parse("--node-name", "n", "--bind", "127.0.0.1:0")
        node = makeService(options)
        assert isinstance(node, ClusterNode)
        self.assertEqual(node.cluster.options.node_name, "n")
        # The cluster service and the status site.
        self.assertEqual(len(list(node)), 2)


class FlagTests(SynchronousTestCase):
    """
    Each flag: a good value reaches the service's options, a bad one is a
    usage error naming the flag.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def assertBad(self, flag: str, *argv: str) -> None:
        with self.assertRaises(UsageError) as raised:
            parse(*argv)
        message = str(raised.exception)
        self.assertIn(flag, message)
        self.assertNotIn("\n", message)

    def test_defaults(self) -> None:
        options = parse()["options"]
        self.assertEqual((options.bind_address, options.bind_port), ("0.0.0.0", 7946))
        self.assertEqual(options.rejoin_interval, 60.0)
        self.assertEqual(options.cluster_max_join_peers, 5)
        self.assertEqual(options.advertise_interfaces, ("eth0", "en0"))
        self.assertTrue(options.enable_clustering)
        self.assertTrue(options.node_name)
        self.assertEqual(parse()["http"], "tcp:12345:interface=127.0.0.1")

    def test_node_name(self) -> None:
        self.assertEqual(parse("--node-name", "n1")["options"].node_name, "n1")
        self.assertBad("--node-name", "--node-name", "")

    def test_bind(self) -> None:
        options = parse("--bind", "127.0.0.1:7000")["options"]
        self.assertEqual((options.bind_address, options.bind_port), ("127.0.0.1", 7000))
        self.assertBad("--bind", "--bind", "127.0.0.1:99999")
        self.assertBad("--bind", "--bind", "not-an-ip:7946")

    def test_advertise_address(self) -> None:
        options = parse("--advertise-address", "10.0.0.1:7000")["options"]
        self.assertEqual(options.gossip_config().advertise_port, 7000)
        self.assertBad("--advertise-address", "--advertise-address", "nope")

    def test_advertise_interfaces(self) -> None:
        options = parse("--advertise-interfaces", "all")["options"]
        self.assertEqual(options.advertise_interfaces, ("all",))
        self.assertEqual(
            parse("--advertise-interfaces", "eth1, ens3")[
                "options"
            ].advertise_interfaces,
            ("eth1", "ens3"),
        )
        self.assertBad("--advertise-interfaces", "--advertise-interfaces", ",")

    def test_join_addresses(self) -> None:
        options = parse("--join-addresses", "127.0.0.1:7001, dns+peers.invalid")
        self.assertEqual(
            options["join-addresses"], ["127.0.0.1:7001", "dns+peers.invalid"]
        )
        self.assertIsNotNone(options["options"].discover_peers)
        self.assertBad("--join-addresses", "--join-addresses", "peer.invalid:http")

    def test_rejoin_interval(self) -> None:
        self.assertEqual(
            parse("--rejoin-interval", "30s")["options"].rejoin_interval, 30
        )
        self.assertBad("--rejoin-interval", "--rejoin-interval", "30")

    def test_max_join_peers(self) -> None:
        self.assertEqual(
            parse("--max-join-peers", "3")["options"].cluster_max_join_peers, 3
        )
        self.assertBad("--max-join-peers", "--max-join-peers", "-1")
        self.assertBad("--max-join-peers", "--max-join-peers", "many")

    def test_cluster_name(self) -> None:
        options = parse("--cluster-name", "prod")["options"]
        self.assertEqual(options.gossip_config().label, "prod")
        self.assertBad("--cluster-name", "--cluster-name", "x" * 300)

    def test_profile(self) -> None:
        config = parse("--profile", "wan")["options"].gossip_config()
        self.assertEqual(config.probe_interval, 5.0)
        self.assertBad("--profile", "--profile", "fast")

    def test_encrypt_key(self) -> None:
        options = parse("--encrypt-key", KEY32, "--encrypt-key", KEY16)
        keyring = options["options"].gossip_config().keyring
        assert keyring is not None
        self.assertEqual(len(keyring.keys()), 2)
        self.assertBad("--encrypt-key", "--encrypt-key", "abc")

    def test_keyring_file(self) -> None:
        path = os.path.join(self.directory, "keyring.json")
        with open(path, "w") as f:
            json.dump([KEY16], f)
        keyring = parse("--keyring-file", path)["keyring"]
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
        options = parse("--enable-tls", "--encrypt-key", KEY16, *files)["options"]
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
            self.assertBad(flag, "--enable-tls", "--encrypt-key", KEY16, *broken)
        unreadable = list(files)
        unreadable[5] = files[3]  # a certificate where the key goes
        self.assertBad(
            "--tls-key-path", "--enable-tls", "--encrypt-key", KEY16, *unreadable
        )

    def test_tls_server_name(self) -> None:
        files = self.tls_files()
        options = parse(
            "--enable-tls",
            "--encrypt-key",
            KEY16,
            "--tls-server-name",
            "n.test",
            *files,
        )["options"]
        tls = options.gossip_config().tls
        assert tls is not None
        self.assertEqual(tls.server_name, "n.test")
        self.assertBad("--tls-server-name", "--tls-server-name", "bad name!")

    def test_allow_plaintext_udp(self) -> None:
        files = self.tls_files()
        options = parse("--enable-tls", "--allow-plaintext-udp", *files)["options"]
        self.assertIsNone(options.gossip_config().keyring)
        self.assertBad("--allow-plaintext-udp", "--allow-plaintext-udp")

    def test_wait_for_size(self) -> None:
        self.assertEqual(
            parse("--wait-for-size", "3")["options"].minimum_cluster_size, 3
        )
        self.assertBad("--wait-for-size", "--wait-for-size", "-3")

    def test_wait_timeout(self) -> None:
        options = parse("--wait-timeout", "5m")["options"]
        self.assertEqual(options.minimum_size_wait_timeout, 300.0)
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
        self.assertFalse(parse("--no-clustering")["options"].enable_clustering)
        self.assertBad(
            "--join-addresses", "--no-clustering", "--join-addresses", "127.0.0.1:1"
        )

    def test_unknown_flag(self) -> None:
        self.assertBad("--frobnicate", "--frobnicate")


class QuietSiteTests(SynchronousTestCase):
    def test_no_request_log_and_no_timer_for_it(self) -> None:
        clock = Clock()
        site = _QuietSite(Resource(), reactor=clock)
        site.startFactory()
        # Twisted's Site refreshes its log timestamp every second: an idle
        # node would wake the reactor for nothing else.
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(site.noisy)
        site.stopFactory()
