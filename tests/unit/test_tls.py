"""
Mutual TLS on the TCP streams (L{cluster.gossip.tls}), over real sockets
on 127.0.0.1 with certificates made at test time by L{cluster.daemon.certs}.
"""

from __future__ import annotations

import io
import os
import sys

import attrs
from twisted.internet import reactor, ssl
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from cluster.alloy.options import Options
from cluster.daemon.certs import (
    Issued,
    StreamTLS,
    issue_certificate,
    load_stream_tls,
    main,
    make_authority,
)
from cluster.gossip import GossipConfig, JoinError, Keyring, Memberlist, MemberState
from cluster.gossip.counters import DropReason
from tests.helpers import wait_for

KEY = Keyring([bytes(range(16))])
CLUSTER_NAME = "cluster.test"


@attrs.frozen(eq=False)
class NoClientCertificate(StreamTLS):
    """
    Dials without presenting a certificate.
    """

    def client_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(
            self.server_name or host, trustRoot=self.authority
        )


def stream_tls(authority: Issued, node: Issued, name: str = CLUSTER_NAME) -> StreamTLS:
    return StreamTLS(
        ssl.Certificate.loadPEM(authority.certificate),
        ssl.PrivateCertificate.loadPEM(node.certificate + node.key),
        name,
    )


def tls_node(name: str, tls: StreamTLS) -> Memberlist:
    config = GossipConfig.local(
        name=name, bind_address="127.0.0.1", bind_port=0, keyring=KEY, tls=tls
    )
    return Memberlist(config, reactor=reactor)


class MutualTLSTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.authority = make_authority()
        self.good = [
            issue_certificate(self.authority, f"tls-{i}", [CLUSTER_NAME], ["127.0.0.1"])
            for i in range(3)
        ]

    async def started(self, *nodes: Memberlist) -> None:
        await gatherResults([node.start() for node in nodes])
        for node in nodes:
            self.addCleanup(node.shutdown)

    async def cluster(self) -> list[Memberlist]:
        nodes = [
            tls_node(f"tls-{i}", stream_tls(self.authority, cert))
            for i, cert in enumerate(self.good)
        ]
        await self.started(*nodes)
        seed = nodes[0].local_member().full_address()
        for node in nodes[1:]:
            self.assertEqual(await node.join([seed]), 1)
        config = nodes[0].config
        await wait_for(
            lambda: all(n.num_members() == 3 for n in nodes),
            config.push_pull_interval + config.tcp_timeout,
            "three TLS nodes list each other",
        )
        return nodes

    async def test_three_nodes_form_a_cluster(self) -> None:
        nodes = await self.cluster()
        self.assertTrue(all(n.counters.dropped[DropReason.TLS] == 0 for n in nodes))
        self.assertTrue(all(n.counters.push_pulls.served >= 1 for n in nodes[:1]))

    async def test_restarted_node_rejoins(self) -> None:
        """
        The accepting side's name check (our addition to Go's TLS) does not
        keep a node out when it comes back: a node that left and restarts
        on another port, with the same certificate, is alive at its new
        address everywhere, reached over mutual TLS both ways.
        """
        nodes = await self.cluster()
        leaver = nodes[2]
        self.assertTrue(await leaver.leave(5.0))
        await leaver.shutdown()
        await wait_for(
            lambda: all(
                (m := n.member(leaver.name)) is not None and m.state == MemberState.LEFT
                for n in nodes[:2]
            ),
            nodes[0].config.gossip_interval * 10,
            "the leave spreads",
        )
        restarted = tls_node(leaver.name, stream_tls(self.authority, self.good[2]))
        await self.started(restarted)
        contact = nodes[1].local_member().full_address()
        accepted = nodes[1].counters.push_pulls.served
        self.assertEqual(await restarted.join([contact]), 1)

        def alive_again() -> bool:
            for node in nodes[:2]:
                seen = node.member(leaver.name)
                if seen is None or seen.state != MemberState.ALIVE:
                    return False
                if seen.port != restarted.local_member().port:
                    return False
            return restarted.num_members() == 3

        config = nodes[0].config
        await wait_for(
            alive_again,
            config.push_pull_interval + config.tcp_timeout,
            "the restarted node is alive at its new address everywhere",
        )
        self.assertTrue(all(n.counters.dropped[DropReason.TLS] == 0 for n in nodes))
        # The restarted node's join was a push/pull over TLS to nodes[1].
        self.assertGreater(nodes[1].counters.push_pulls.served, accepted)

    async def assertRefused(self, intruder: Memberlist) -> None:
        logged: list[LogEvent] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            if event.get("log_format", "").startswith("TLS refused"):
                logged.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        nodes = await self.cluster()
        await self.started(intruder)
        with self.assertRaises(JoinError):
            await intruder.join([nodes[0].local_member().full_address()])
        # The refusal is logged (and counted) on both sides.
        await wait_for(
            lambda: nodes[0].counters.dropped[DropReason.TLS] >= 1,
            nodes[0].config.tcp_timeout,
            "the accepting node counts the refusal",
        )
        self.assertGreaterEqual(intruder.counters.dropped[DropReason.TLS], 1)
        sources = {id(event.get("log_source")) for event in logged}
        self.assertIn(id(intruder.transport), sources)
        self.assertIn(id(nodes[0].transport), sources)
        for node in nodes:
            self.assertIsNone(node.member(intruder.name))
        self.assertEqual(intruder.num_members(), 1)

    async def test_certificate_from_another_authority_is_refused(self) -> None:
        other = make_authority("another CA")
        foreign = issue_certificate(other, "intruder", [CLUSTER_NAME], ["127.0.0.1"])
        tls = StreamTLS(
            ssl.Certificate.loadPEM(self.authority.certificate),
            ssl.PrivateCertificate.loadPEM(foreign.certificate + foreign.key),
            CLUSTER_NAME,
        )
        await self.assertRefused(tls_node("intruder", tls))

    async def test_no_client_certificate_is_refused(self) -> None:
        cert = issue_certificate(self.authority, "intruder", [CLUSTER_NAME])
        base = stream_tls(self.authority, cert)
        tls = NoClientCertificate(base.authority, base.identity, base.server_name)
        await self.assertRefused(tls_node("intruder", tls))

    async def test_name_not_matching_the_server_name_is_refused(self) -> None:
        cert = issue_certificate(self.authority, "intruder", ["intruder.test"])
        await self.assertRefused(tls_node("intruder", stream_tls(self.authority, cert)))


class LoadingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        authority = make_authority()
        self.ca, _ = authority.write(self.directory, "ca")
        node = issue_certificate(authority, "n", ["n.test"])
        self.cert, self.key = node.write(self.directory, "n")
        self.other_key = issue_certificate(authority, "m").write(self.directory, "m")[1]

    def test_loads_and_names_the_bad_field(self) -> None:
        tls = load_stream_tls(self.ca, self.cert, self.key, "n.test")
        self.assertEqual(tls.server_name, "n.test")
        missing = os.path.join(self.directory, "missing.pem")
        cases = [
            ((missing, self.cert, self.key), "tls_ca_path: cannot read"),
            ((self.ca, self.key, self.key), "tls_cert_path: not a PEM certificate"),
            ((self.ca, self.cert, self.cert), "tls_key_path: not a PEM private key"),
            ((self.ca, self.cert, self.other_key), "tls_key_path:"),
        ]
        for paths, message in cases:
            with self.assertRaises(ValueError) as raised:
                load_stream_tls(*paths)
            self.assertIn(message, str(raised.exception))

    def test_options_need_a_gossip_key_or_explicit_plaintext(self) -> None:
        def options(keyring: Keyring | None = None, plain: bool = False) -> Options:
            return Options(
                enable_tls=True,
                tls_ca_path=self.ca,
                tls_cert_path=self.cert,
                tls_key_path=self.key,
                keyring=keyring,
                allow_plaintext_udp=plain,
            )

        with self.assertRaises(ValueError) as raised:
            options()
        self.assertIn("UDP would stay in plaintext", str(raised.exception))
        self.assertIsNotNone(options(keyring=KEY).gossip_config().tls)
        self.assertIsNotNone(options(plain=True).gossip_config().tls)

    def test_command_line_helper(self) -> None:
        directory = self.mktemp()
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        self.assertEqual(main(["ca", directory]), 0)
        self.assertEqual(
            main(["node", directory, "a", "--dns", "a.test", "--ip", "127.0.0.1"]), 0
        )
        self.assertIn(os.path.join(directory, "a-key.pem"), out.getvalue())
        tls = load_stream_tls(
            os.path.join(directory, "ca.pem"),
            os.path.join(directory, "a.pem"),
            os.path.join(directory, "a-key.pem"),
        )
        self.assertIn("a", str(tls.identity.getSubject()))
        self.assertEqual(
            os.stat(os.path.join(directory, "a-key.pem")).st_mode & 0o777, 0o600
        )
        self.assertEqual(main(["node", directory, "b", "--ip", "not-an-ip"]), 1)
        self.assertIn("not-an-ip", err.getvalue())
        self.assertEqual(err.getvalue().count("\n"), 1)
