"""
C{clusternode} and C{twistd clusternode} in-process: the command line
(L{cluster.daemon.tap.ClusterNodeOptions}; every flag with a good and a bad
value, a bad one being a one-line usage error naming the flag, raised
before anything binds; L{cluster.daemon.main.main} printing that line
alone with status 2), the plugin and L{cluster.daemon.tap.makeService},
and the program (L{cluster.daemon.program.ClusterNode}) starting, joining
and failing on the simulated network and a memory reactor.
"""

from __future__ import annotations

import base64
import datetime
import errno
import io
import json
import os
import sys
from typing import Any, cast

from cryptography import x509
from twisted.application import strports
from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore, IReactorTCP
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from cluster.alloy.discovery import DiscoveryError, join_addresses, static
from cluster.alloy.options import Options
from cluster.alloy.service import ClusterService
from cluster.daemon.certs import issue_certificate, make_authority
from cluster.daemon.flags import check_tls_files, parse_duration
from cluster.daemon.main import ProgramOptions, main
from cluster.daemon.program import ClusterNode, QuietSite, describe
from cluster.daemon.tap import ClusterNodeOptions, makeService
from cluster.gossip import BindError, Keyring
from cluster.gossip.advertise import AdvertiseError
from cluster.gossip.interfaces import IPacketHandler
from cluster.peer import PeerState
from cluster.testing import SimulatedNetwork, SimulatedTransport
from tests.helpers import (
    FakeResolver,
    address,
    known,
    node_of,
    tls_flags,
    transport_of,
)

KEY16 = base64.b64encode(bytes(range(16))).decode()
KEY32 = base64.b64encode(bytes(range(32))).decode()
# A 32-byte key with one character lost: no longer base64.
MISTYPED_KEY = "z8jpRNqKf0SDuWKyOmBvT7g+Wc9hZlnR5YQ3mXLe2Lg"


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
        self.assertEqual(
            self.assertBad("--encrypt-key", "--encrypt-key", "abc"),
            "--encrypt-key: not a base64 key (16, 24 or 32 bytes in standard "
            "base64, as serf keygen prints)",
        )
        # The second of two keys is named by its place.
        self.assertEqual(
            self.assertBad(
                "--encrypt-key", "--encrypt-key", KEY16, "--encrypt-key", "YWJj"
            ),
            "--encrypt-key (key 2): the key is 3 bytes long; it must be 16, 24 or 32",
        )

    def test_bad_key_is_never_echoed(self) -> None:
        """
        A mistyped key is refused without a word of it: not the key, nor
        any run of it.
        """
        for typo in (MISTYPED_KEY, KEY16[:-2], KEY32 + "A"):
            message = self.assertBad("--encrypt-key", "--encrypt-key", typo)
            self.assertNoPartOf(typo, message)

    def assertNoPartOf(self, secret: str, message: str) -> None:
        """
        No run of 6 characters of C{secret} is in C{message}.
        """
        for start in range(len(secret) - 5):
            self.assertNotIn(secret[start : start + 6], message)

    def test_keyring_file(self) -> None:
        path = os.path.join(self.directory, "keyring.json")
        with open(path, "w") as f:
            json.dump([KEY16], f)
        keyring = settings("--keyring-file", path).keyring
        self.assertIsInstance(keyring, Keyring)
        self.assertEqual(
            self.assertBad("--keyring-file", "--keyring-file", path + ".missing"),
            f"--keyring-file: {path}.missing does not exist",
        )
        self.assertBad("--keyring-file", "--keyring-file", path, "--encrypt-key", KEY16)
        bad = os.path.join(self.directory, "bad.json")
        with open(bad, "w") as f:
            json.dump([KEY16, MISTYPED_KEY], f)
        message = self.assertBad("--keyring-file", "--keyring-file", bad)
        self.assertEqual(
            message,
            f"--keyring-file: {bad}, key 2: not a base64 key (16, 24 or 32 bytes "
            "in standard base64, as serf keygen prints)",
        )
        self.assertNoPartOf(MISTYPED_KEY, message)
        with open(bad, "w") as f:
            f.write(KEY16)  # a bare key, not a JSON list of keys
        message = self.assertBad("--keyring-file", "--keyring-file", bad)
        self.assertTrue(message.startswith(f"--keyring-file: {bad} is not JSON ("))
        self.assertNoPartOf(KEY16, message)

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
        self.assertEqual(
            message,
            f"--tls-key-path: {files[3]} holds a certificate, not a private key",
        )
        unreadable = list(files)
        unreadable[3] = files[5]  # the key where the certificate goes
        self.assertEqual(
            self.assertBad("--tls-cert-path", "--tls-cert-path", files[5]),
            f"--tls-cert-path: {files[5]} holds a private key, not a certificate",
        )
        self.assertEqual(
            self.assertBad("--tls-ca-path", "--tls-ca-path", self.directory),
            f"--tls-ca-path: {self.directory} is a directory, not a file",
        )
        empty = os.path.join(self.directory, "empty.pem")
        open(empty, "w").close()
        self.assertEqual(
            self.assertBad("--tls-ca-path", "--tls-ca-path", empty),
            f"--tls-ca-path: {empty} is not a PEM certificate",
        )
        self.assertEqual(
            self.assertBad("--tls-key-path", "--tls-key-path", empty),
            f"--tls-key-path: {empty} is not a PEM private key",
        )

    def test_tls_files_that_do_not_go_together(self) -> None:
        """
        Files that read but would fail every handshake: a key that is not
        the certificate's, a certificate that another authority signed.
        """
        files = self.tls_files()
        ca, cert, key = files[1], files[3], files[5]
        other_ca, _ = make_authority("other CA").write(self.directory, "other-ca")
        other_cert, other_key = issue_certificate(
            make_authority("other CA"), "m", ["n.test"]
        ).write(self.directory, "m")
        tls = ["--enable-tls", "--encrypt-key", KEY16]

        def given(ca: str, cert: str, key: str) -> list[str]:
            return [*tls, *tls_flags(ca, cert, key)]

        self.assertEqual(
            self.assertBad("--tls-key-path", *given(ca, cert, other_key)),
            f"--tls-key-path: {other_key} is not the key of {cert}",
        )
        self.assertEqual(
            self.assertBad("--tls-cert-path", *given(ca, other_cert, other_key)),
            f"--tls-cert-path: {other_cert} is not signed by the authority in {ca}",
        )
        self.assertEqual(
            self.assertBad("--tls-cert-path", *given(other_ca, cert, key)),
            f"--tls-cert-path: {cert} is not signed by the authority in {other_ca}",
        )

    def test_tls_files_out_of_date(self) -> None:
        """
        A certificate (ours or the authority's) outside its validity, at a
        given time.
        """
        files = self.tls_files()
        ca, cert, key = files[1], files[3], files[5]
        check_tls_files(ca, cert, key)  # now: valid
        ours, authority = (self.certificate(path) for path in (cert, ca))
        second = datetime.timedelta(seconds=1)
        # Ours (825 days) expires first.
        self.assertCheckFails(
            ca,
            cert,
            key,
            ours.not_valid_after_utc + second,
            f"--tls-cert-path: {cert} expired on "
            f"{ours.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
        )
        # Before either: the authority is named first.
        first = min(ours.not_valid_before_utc, authority.not_valid_before_utc)
        self.assertCheckFails(
            ca,
            cert,
            key,
            first - second,
            f"--tls-ca-path: {ca} is not valid before "
            f"{authority.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
        )
        short = make_authority(days=1)
        short_ca, _ = short.write(self.directory, "short-ca")
        cert, key = issue_certificate(short, "n", ["n.test"], days=30).write(
            self.directory, "long"
        )
        expiry = self.certificate(short_ca).not_valid_after_utc
        self.assertCheckFails(
            short_ca,
            cert,
            key,
            expiry + second,
            f"--tls-ca-path: {short_ca} expired on {expiry:%Y-%m-%d %H:%M:%S} UTC",
        )

    def certificate(self, path: str) -> x509.Certificate:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())

    def assertCheckFails(
        self, ca: str, cert: str, key: str, now: datetime.datetime, line: str
    ) -> None:
        with self.assertRaises(UsageError) as raised:
            check_tls_files(ca, cert, key, now=now)
        self.assertEqual(str(raised.exception), line)

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


class MainTests(SynchronousTestCase):
    """
    C{clusternode}'s command line in-process (L{main}): a mistake is one
    line on stderr and status 2, before any reactor runs; the usage text
    only with C{--help}.
    """

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        """
        L{main} with C{argv}: its status, its stdout and its stderr.
        """
        stderr = io.StringIO()
        stdout = self.patch_stdout()
        status = main(list(argv), stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    def patch_stdout(self) -> io.StringIO:
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        return stdout

    def test_usage_errors(self) -> None:
        cases = {
            ("--bind", "nope"): "--bind: not HOST:PORT (port 0-65535): 'nope'",
            ("--frobnicate",): "option --frobnicate not recognized",
            ("--http",): "option --http requires argument",
            ("--viewer", "--no-clustering"): (
                "--viewer makes no sense with --no-clustering (a one-node "
                "cluster that owns every key)"
            ),
            ("--log-file", os.path.join(self.mktemp(), "node.log")): None,
        }
        for argv, line in cases.items():
            status, stdout, stderr = self.run_main(*argv)
            if line is None:  # a directory that does not exist
                line = f"--log-file: cannot open {argv[1]}: no such file or directory"
            self.assertEqual(
                (status, stdout, stderr), (2, "", f"clusternode: {line}\n")
            )

    def test_key_is_never_echoed(self) -> None:
        status, stdout, stderr = self.run_main("--encrypt-key", MISTYPED_KEY)
        self.assertEqual(
            (status, stdout, stderr),
            (
                2,
                "",
                "clusternode: --encrypt-key: not a base64 key (16, 24 or 32 bytes "
                "in standard base64, as serf keygen prints)\n",
            ),
        )

    def test_help(self) -> None:
        """
        C{--help} prints the usage text, the program's flags among the
        node's, on stdout and exits 0.
        """
        stdout = self.patch_stdout()
        with self.assertRaises(SystemExit) as raised:
            main(["--help"], stderr=io.StringIO())
        self.assertEqual(raised.exception.code, 0)
        usage_text = stdout.getvalue()
        self.assertTrue(usage_text.startswith("Usage: clusternode [options]\n"))
        for flag in ("--bind=", "--join-addresses=", "--log-file=", "--pid-file="):
            self.assertIn(flag, usage_text)

    def test_version(self) -> None:
        stdout = self.patch_stdout()
        with self.assertRaises(SystemExit) as raised:
            main(["--version"], stderr=io.StringIO())
        self.assertEqual(raised.exception.code, 0)
        self.assertRegex(stdout.getvalue(), r"^clusternode \S+ \(Twisted \S+\)\n$")

    def test_program_flags(self) -> None:
        options = ProgramOptions()
        options.parseOptions([])
        self.assertIs(options.log_file, sys.stdout)
        self.assertEqual(options["pid-file"], "")
        path = os.path.abspath(self.mktemp())
        options = ProgramOptions()
        options.parseOptions(["--log-file", path, "--pid-file", path + ".pid"])
        self.addCleanup(options.log_file.close)
        self.assertEqual(options.log_file.name, path)
        self.assertEqual(options["pid-file"], path + ".pid")
        # The node's flags, read as for twistd.
        self.assertEqual(options.cluster_options.bind_port, 7946)


class DescribeTests(SynchronousTestCase):
    """
    The line for each way the status site cannot listen on C{--http}.
    """

    def line(self, interface: str | None, port: object, error: OSError) -> str:
        return describe(Failure(CannotListenError(interface, port, error)))

    def test_causes_in_words(self) -> None:
        cases = [
            (
                "127.0.0.1",
                80,
                errno.EACCES,
                "--http: no permission to listen on 127.0.0.1:80",
            ),
            ("::1", 8080, errno.EADDRINUSE, "--http: [::1]:8080 is in use"),
            ("", 8080, errno.EADDRINUSE, "--http: port 8080 is in use"),
            (
                "10.9.9.9",
                8080,
                errno.EADDRNOTAVAIL,
                "--http: 10.9.9.9:8080 is not an address of this host",
            ),
            (
                None,
                "/run/node/http.sock",
                errno.ENOENT,
                "--http: cannot listen on /run/node/http.sock: no such file or "
                "directory",
            ),
        ]
        for interface, port, number, line in cases:
            error = OSError(number, os.strerror(number))
            self.assertEqual(self.line(interface, port, error), line)

    def test_flag_of_each_start_failure(self) -> None:
        """
        A failure of the cluster service names the flag to change.
        """
        cases = [
            (BindError("10.0.0.1:7946 is in use (UDP or TCP)"), "--bind"),
            (AdvertiseError("no private IP address found"), "--advertise-address"),
            (DiscoveryError({"x.invalid": ["no such name"]}), "--join-addresses"),
        ]
        for error, flag in cases:
            self.assertEqual(describe(Failure(error)), f"{flag}: {error}")
        # A cause of no flag of its own is said as it is.
        self.assertEqual(describe(Failure(ValueError("odd"))), "odd")


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
        in_use = OSError(errno.EADDRINUSE, "Address already in use")
        return fail(CannotListenError(self.host, self.port, in_use))


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
        )

    def assertFailed(self, node: ClusterNode, line: str) -> None:
        """
        C{node} wrote C{line}, alone, to stderr, ends with status 1, and
        stopped the reactor.
        """
        self.assertEqual(self.stderr.getvalue(), f"clusternode: {line}\n")
        self.assertEqual(node.exit_status, 1)
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
        self.assertEqual((self.stderr.getvalue(), node.exit_status), ("", 0))
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
        why = "failed to find any valid join addresses: nowhere.invalid: no such name"
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
            f"--node-name: node name b is already used by {address(holder)}; this node "
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
            "clusternode: --bind: 127.1.0.9:7946 is in use (UDP or TCP)\n",
        )
        self.assertEqual(node.exit_status, 1)
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
        in_use = OSError(errno.EADDRINUSE, "Address already in use")
        error = CannotListenError("127.0.0.1", 8123, in_use)
        node = self.program(
            self.service("h"), site_reactor=RaisingMemoryReactor(listenException=error)
        )
        node.privilegedStartService()
        node.startService()
        line = "--http: 127.0.0.1:8123 is in use"
        self.assertEqual(self.stderr.getvalue(), f"clusternode: {line}\n")
        self.assertEqual(self.logged, [line])
        self.assertEqual(node.exit_status, 1)
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
