"""
Mutual TLS on the TCP streams (L{cluster.gossip.tls}), over real sockets
on 127.0.0.1 with certificates made at test time by L{cluster.daemon.certs}.
"""

from __future__ import annotations

import datetime
import io
import os
import sys
from collections import Counter

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor, ssl
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
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
from cluster.gossip import (
    GossipConfig,
    JoinRefused,
    Keyring,
    Memberlist,
    MemberState,
)
from cluster.gossip.counters import TLS_DROP_REASONS, DropReason
from tests.helpers import wait_for
from tests.processes import LOCAL

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


def tls_refusals(node: Memberlist) -> int:
    """
    How many TLS handshakes C{node} counted as failed, whatever the cause.
    """
    return sum(node.counters.dropped[reason] for reason in TLS_DROP_REASONS)


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
        self.assertEqual([tls_refusals(n) for n in nodes], [0] * len(nodes))
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
        self.assertEqual([tls_refusals(n) for n in nodes], [0] * len(nodes))
        # The restarted node's join was a push/pull over TLS to nodes[1].
        self.assertGreater(nodes[1].counters.push_pulls.served, accepted)


def reissued(
    authority: Issued,
    issued: Issued,
    valid_from: datetime.datetime,
    valid_until: datetime.datetime,
) -> Issued:
    """
    C{issued}, signed again by C{authority} for another validity.
    """
    certificate = x509.load_pem_x509_certificate(issued.certificate)
    key = serialization.load_pem_private_key(authority.key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(certificate.issuer)
        .public_key(certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
    )
    for extension in certificate.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    signed = builder.sign(key, hashes.SHA256())
    return Issued(signed.public_bytes(serialization.Encoding.PEM), issued.key)


@attrs.frozen(eq=False)
class TLS12Only(StreamTLS):
    """
    Dials with TLS 1.2 at most.
    """

    def client_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(
            self.server_name or host,
            trustRoot=self.authority,
            clientCertificate=self.identity,
            extraCertificateOptions={"lowerMaximumSecurityTo": ssl.TLSVersion.TLSv1_2},
        )


@attrs.frozen(eq=False)
class TLS13Only(StreamTLS):
    """
    Accepts TLS 1.3 only.
    """

    def server_options(self) -> IOpenSSLServerConnectionCreator:
        return ssl.CertificateOptions(
            privateKey=self.identity.privateKey.original,
            certificate=self.identity.original,
            trustRoot=self.authority,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_3,
        )


def plain_node(name: str) -> Memberlist:
    config = GossipConfig.local(
        name=name, bind_address="127.0.0.1", bind_port=0, keyring=KEY
    )
    return Memberlist(config, reactor=reactor)


def day(moment: datetime.datetime) -> str:
    """
    A validity bound as the refusals say it.
    """
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class RefusalTests(TestCase):
    """
    Every way a TLS handshake is refused is said in words on both sides,
    naming the peer (the address dialled; the dialler's IP address and the
    name on its certificate), counted under its own reason on both sides,
    and makes the join fail with L{JoinRefused}, saying the same.
    """

    timeout = 60

    def setUp(self) -> None:
        self.authority = make_authority()
        self.logged: list[LogEvent] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            if event.get("log_format", "").startswith("TLS: "):
                self.logged.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def certificate(self, name: str, *names: str) -> Issued:
        """
        A certificate of the cluster's authority for C{names} (the
        cluster's name and 127.0.0.1 by default).
        """
        if not names:
            return issue_certificate(
                self.authority, name, [CLUSTER_NAME], ["127.0.0.1"]
            )
        return issue_certificate(self.authority, name, list(names))

    def node(self, name: str, certificate: Issued | None = None) -> Memberlist:
        """
        A node trusting the cluster's authority, with C{certificate} (a
        good one by default).
        """
        issued = certificate or self.certificate(name)
        return tls_node(name, stream_tls(self.authority, issued))

    def said(self, node: Memberlist) -> list[str]:
        """
        The TLS lines C{node}'s transport logged, as an operator reads them.
        """
        return [
            formatEvent(event)
            for event in self.logged
            if event.get("log_source") is node.transport
        ]

    async def assertRefused(
        self,
        dialler: Memberlist,
        target: Memberlist,
        reason: DropReason,
        join: str,
        dialler_says: str | None,
        target_says: str | None,
    ) -> None:
        """
        C{dialler}'s join of C{target} fails with L{JoinRefused} saying
        C{join}; each side logs its line (none where C{None}, a node without
        TLS) and counts one refusal, under C{reason} (the side that logs
        none counts none); nobody lists the other.  C{{address}} in the
        texts is the target's address.
        """
        await gatherResults([dialler.start(), target.start()])
        self.addCleanup(dialler.shutdown)
        self.addCleanup(target.shutdown)
        address = target.local_member().full_address()
        with self.assertRaises(JoinRefused) as raised:
            await dialler.join([address])
        self.assertEqual(str(raised.exception), join.format(address=address))
        sides = [(dialler, dialler_says), (target, target_says)]
        await wait_for(
            lambda: all(len(self.said(n)) == (says is not None) for n, says in sides),
            LOCAL.tcp_timeout,
            "both sides log the refusal",
        )
        for node, says in sides:
            expected = [] if says is None else ["TLS: " + says.format(address=address)]
            self.assertEqual(self.said(node), expected, node.name)
            tls = Counter(
                {
                    r: n
                    for r, n in node.counters.dropped.items()
                    if r in TLS_DROP_REASONS
                }
            )
            self.assertEqual(
                tls, Counter({reason: 1}) if says else Counter(), node.name
            )
        self.assertIsNone(target.member(dialler.name))
        self.assertIsNone(dialler.member(target.name))

    async def assertForeignCARefused(self, name: str, issuer: str) -> None:
        """
        The intruder's certificate is from another CA named C{name}: the
        member refuses it, saying C{issuer} of it; the intruder learns from
        the alert and names its own CA.
        """
        other = make_authority(name)
        intruder = self.node(
            "intruder",
            issue_certificate(other, "intruder", [CLUSTER_NAME], ["127.0.0.1"]),
        )
        ours = f'certificate from an unknown CA (ours is issued by "{name}")'
        await self.assertRefused(
            intruder,
            self.node("member"),
            DropReason.TLS_UNKNOWN_CA,
            join=f"{{address}} refused us: {ours}",
            dialler_says=f'{{address}} (certificate "member") refused us: {ours}',
            target_says="we refused a node dialling from 127.0.0.1 (certificate "
            f'"intruder"): certificate from an unknown CA (issued by {issuer})',
        )

    async def test_foreign_ca_dialling_in(self) -> None:
        """
        A certificate from another CA, of another name: the accepting node
        refuses it and names that CA; the dialler learns from the alert.
        """
        await self.assertForeignCARefused("another CA", issuer='"another CA"')

    async def test_foreign_ca_of_the_same_name(self) -> None:
        """
        Two CAs made by the same tool share a name: OpenSSL finds the
        issuer by name and its signature fails.  Still an unknown CA.
        """
        await self.assertForeignCARefused(
            "cluster CA", issuer='another CA named "cluster CA", like ours'
        )

    async def test_node_of_another_cluster_ca(self) -> None:
        """
        A node of another cluster (its own CA, trusting only that) dials a
        member: it refuses the member's certificate first.
        """
        other = make_authority("another CA")
        issued = issue_certificate(other, "intruder", [CLUSTER_NAME], ["127.0.0.1"])
        intruder = tls_node("intruder", stream_tls(other, issued))
        await self.assertRefused(
            intruder,
            self.node("member"),
            DropReason.TLS_UNKNOWN_CA,
            join="we refused {address}: certificate from an unknown CA (issued by "
            '"cluster CA")',
            dialler_says='we refused {address} (certificate "member"): certificate '
            'from an unknown CA (issued by "cluster CA")',
            target_says="a node dialling from 127.0.0.1 refused us: certificate "
            'from an unknown CA (ours is issued by "cluster CA")',
        )

    async def test_no_client_certificate(self) -> None:
        base = stream_tls(self.authority, self.certificate("intruder"))
        intruder = tls_node(
            "intruder",
            NoClientCertificate(base.authority, base.identity, base.server_name),
        )
        await self.assertRefused(
            intruder,
            self.node("member"),
            DropReason.TLS_NO_CERTIFICATE,
            join="{address} refused us: no client certificate (it got none from us)",
            dialler_says='{address} (certificate "member") refused us: no client '
            "certificate (it got none from us)",
            target_says="we refused a node dialling from 127.0.0.1: no client "
            "certificate",
        )

    async def test_name_mismatch_dialling_in(self) -> None:
        """
        With a server name, the accepting node checks the dialler's
        certificate carries it; the dialler reads its own names against the
        cluster's server name to say why it was refused.
        """
        intruder = self.node("intruder", self.certificate("intruder", "intruder.test"))
        await self.assertRefused(
            intruder,
            self.node("member"),
            DropReason.TLS_NAME_MISMATCH,
            join="{address} refused us: name mismatch (expected cluster.test, "
            "presented intruder.test)",
            dialler_says='{address} (certificate "member") refused us: name '
            "mismatch (expected cluster.test, presented intruder.test)",
            target_says="we refused a node dialling from 127.0.0.1 (certificate "
            '"intruder"): name mismatch (expected cluster.test, presented '
            "intruder.test)",
        )

    async def test_name_mismatch_dialled(self) -> None:
        """
        A member dials a node whose certificate carries another name.
        """
        stranger = self.node("stranger", self.certificate("stranger", "stranger.test"))
        await self.assertRefused(
            self.node("member"),
            stranger,
            DropReason.TLS_NAME_MISMATCH,
            join="we refused {address}: name mismatch (expected cluster.test, "
            "presented stranger.test)",
            dialler_says='we refused {address} (certificate "stranger"): name '
            "mismatch (expected cluster.test, presented stranger.test)",
            target_says="a node dialling from 127.0.0.1 refused us: name mismatch "
            "(expected cluster.test, presented stranger.test)",
        )

    async def test_address_mismatch_without_a_server_name(self) -> None:
        """
        Without a server name, the dialler checks the address it dialled.
        """
        issued = self.certificate("stranger", CLUSTER_NAME)
        stranger = tls_node("stranger", stream_tls(self.authority, issued, ""))
        member = tls_node(
            "member", stream_tls(self.authority, self.certificate("member"), "")
        )
        await self.assertRefused(
            member,
            stranger,
            DropReason.TLS_NAME_MISMATCH,
            join="we refused {address}: name mismatch (expected 127.0.0.1, "
            "presented cluster.test)",
            dialler_says='we refused {address} (certificate "stranger"): name '
            "mismatch (expected 127.0.0.1, presented cluster.test)",
            target_says="a node dialling from 127.0.0.1 refused us: name mismatch "
            "(expected 127.0.0.1, presented cluster.test)",
        )

    async def assertOutOfDate(
        self,
        valid_from: datetime.datetime,
        valid_until: datetime.datetime,
        ours: str,
        theirs: str,
    ) -> None:
        """
        The intruder's certificate, valid from C{valid_from} until
        C{valid_until}, is refused by the member, which says C{theirs}; the
        intruder says C{ours} of its own certificate.
        """
        issued = reissued(
            self.authority, self.certificate("intruder"), valid_from, valid_until
        )
        await self.assertRefused(
            self.node("intruder", issued),
            self.node("member"),
            DropReason.TLS_EXPIRED,
            join=f"{{address}} refused us: {ours}",
            dialler_says=f'{{address}} (certificate "member") refused us: {ours}',
            target_says="we refused a node dialling from 127.0.0.1 (certificate "
            f'"intruder"): {theirs}',
        )

    async def test_expired_certificate(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        until = now - datetime.timedelta(days=1)
        await self.assertOutOfDate(
            now - datetime.timedelta(days=30),
            until,
            ours=f"certificate expired (ours was valid until {day(until)})",
            theirs=f"certificate expired (valid until {day(until)})",
        )

    async def test_certificate_not_yet_valid(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        since = now + datetime.timedelta(days=1)
        await self.assertOutOfDate(
            since,
            now + datetime.timedelta(days=30),
            ours=f"certificate not yet valid (ours is valid from {day(since)})",
            theirs=f"certificate not yet valid (valid from {day(since)})",
        )

    async def test_no_common_tls_version(self) -> None:
        base = stream_tls(self.authority, self.certificate("intruder"))
        intruder = tls_node(
            "intruder", TLS12Only(base.authority, base.identity, base.server_name)
        )
        member = stream_tls(self.authority, self.certificate("member"))
        await self.assertRefused(
            intruder,
            tls_node(
                "member", TLS13Only(member.authority, member.identity, CLUSTER_NAME)
            ),
            DropReason.TLS_VERSION,
            join="{address} refused us: protocol version (no TLS version that both "
            "sides accept)",
            dialler_says="{address} refused us: protocol version (no TLS version "
            "that both sides accept)",
            target_says="we refused a node dialling from 127.0.0.1: protocol "
            "version (no TLS version that both sides accept)",
        )

    async def test_plaintext_dialling_in(self) -> None:
        """
        A node without TLS dials a TLS node: the TLS node says it does not
        speak TLS; the plain node sees its stream closed unanswered.
        """
        await self.assertRefused(
            plain_node("intruder"),
            self.node("member"),
            DropReason.TLS_VERSION,
            join="{address} refused us: it closed the connection without "
            "answering our push/pull (a different cluster name? we have none; or "
            "TLS on its side only?)",
            dialler_says=None,
            target_says="we refused a node dialling from 127.0.0.1: protocol "
            "version (it does not speak TLS)",
        )

    async def test_dialling_a_plaintext_node(self) -> None:
        await self.assertRefused(
            self.node("member"),
            plain_node("stranger"),
            DropReason.TLS_VERSION,
            join="{address} refused us: protocol version (it closed the connection "
            "during the handshake: it does not seem to speak TLS)",
            dialler_says="{address} refused us: protocol version (it closed the "
            "connection during the handshake: it does not seem to speak TLS)",
            target_says=None,
        )


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
