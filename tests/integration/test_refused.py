"""
Refused joins across real processes: a node whose join the peers answer
and refuse (a certificate from a foreign CA, a certificate for another
name, no client certificate, another cluster name, another gossip key)
never becomes a cluster of its own.  C{clusternode} exits 1 with one line
naming C{--join-addresses} and the cause in words; an embedded
L{ClusterService} reports L{JoinRefused} and is not ready.  The node it
dialled logs the cause in words too and counts it under its own reason in
C{/metrics}, and lists nobody new.  A node that finds nobody still
bootstraps a cluster of its own.
"""

from __future__ import annotations

import base64
import os
import sys

import attrs
from twisted.internet import reactor

from cluster.daemon.certs import Issued, issue_certificate, make_authority
from cluster.daemon.demo import LocalNode
from cluster.daemon.ports import free_loopback_port
from tests.helpers import wait_for
from tests.processes import LOCAL, STARTUP, ProcessTestCase
from tests.unit.test_tls import CLUSTER_NAME, KEY

# A newcomer starts (a cold interpreter), joins (one push/pull, within the
# TCP timeout to connect and twice it to answer) and stops.
REFUSED = STARTUP + 3 * LOCAL.tcp_timeout
ENCRYPT_KEY = base64.b64encode(KEY.primary_key()).decode("ascii")
OTHER_KEY = base64.b64encode(bytes(range(100, 116))).decode("ascii")
PREFIX = "clusternode: --join-addresses: "


@attrs.define(eq=False)
class EmbeddedNode(LocalNode):
    """
    A program embedding the cluster service (L{tests.integration.embedded}),
    joining C{seed} with the certificates in C{certs}.
    """

    seed: str = ""
    certs: str = ""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.integration.embedded",
            self.name,
            str(self.gossip_port),
            self.seed,
            self.certs,
            *self.args,
        ]


class RefusedJoinTests(ProcessTestCase):
    """
    A seed, then a newcomer the seed's cluster refuses.
    """

    def setUp(self) -> None:
        self.certs = self.mktemp()
        make_authority().write(self.certs, "ca")

    def tls(self, name: str, directory: str | None = None, *dns: str) -> list[str]:
        """
        The flags of a TLS node C{name} with the certificate of
        C{directory} (the cluster's by default) for C{dns} (the cluster's
        name and 127.0.0.1 by default).
        """
        directory = directory or self.certs
        if not os.path.exists(os.path.join(directory, f"{name}.pem")):
            with open(os.path.join(directory, "ca.pem"), "rb") as f:
                ca = f.read()
            with open(os.path.join(directory, "ca-key.pem"), "rb") as f:
                authority = Issued(ca, f.read())
            names, ips = (list(dns), []) if dns else ([CLUSTER_NAME], ["127.0.0.1"])
            issue_certificate(authority, name, names, ips).write(directory, name)
        return [
            "--enable-tls",
            "--tls-ca-path",
            os.path.join(directory, "ca.pem"),
            "--tls-cert-path",
            os.path.join(directory, f"{name}.pem"),
            "--tls-key-path",
            os.path.join(directory, f"{name}-key.pem"),
            "--tls-server-name",
            CLUSTER_NAME,
            "--encrypt-key",
            ENCRYPT_KEY,
        ]

    async def seed(self, *args: str) -> LocalNode:
        seed = self.spawn(LocalNode(reactor, "seed", ["--profile", "local", *args]))
        await self.started([seed], "the seed answers")
        return seed

    async def refused(
        self, seed: LocalNode, args: list[str], line: str, seed_says: str, reason: str
    ) -> None:
        """
        A C{clusternode} newcomer with C{args} joins C{seed} and exits 1,
        its only line on stderr C{line} (after the program's name and the
        flag), the reason also in its log; C{seed} logs C{seed_says},
        counts the refusal under C{reason} and lists nobody new.
        C{{address}} in the texts is the seed's gossip address.
        """
        newcomer = self.spawn(
            LocalNode(
                reactor,
                "newcomer",
                [
                    "--profile",
                    "local",
                    "--join-addresses",
                    seed.gossip_address,
                    *args,
                ],
            )
        )
        await wait_for(lambda: newcomer.ended.called, REFUSED, "the newcomer exits")
        status = await newcomer.ended
        expected = PREFIX + line.format(address=seed.gossip_address)
        self.assertEqual(
            (status, newcomer.errors), (1, expected + "\n"), newcomer.output
        )
        self.assertIn(
            "join refused, not bootstrapping a cluster of our own: "
            + line.format(address=seed.gossip_address),
            newcomer.output,
        )
        self.assertNotIn("bootstrapping a new cluster", newcomer.output)
        await wait_for(
            lambda: seed_says.format(address=seed.gossip_address) in seed.output,
            LOCAL.tcp_timeout,
            "the seed says why in its log",
        )
        dropped = await self.metric(
            seed, "cluster_node_gossip_dropped_total", reason=reason
        )
        self.assertEqual(dropped, 1.0)
        self.assertEqual(set(await self.members(seed)), {"seed"})
        self.check_running(seed)

    async def test_certificate_from_a_foreign_ca(self) -> None:
        """
        A node set up with a CA of its own (made by the same helper, so of
        the same name) refuses the seed's certificate; the seed learns it
        from the TLS alert.
        """
        seed = await self.seed(*self.tls("seed"))
        foreign = self.mktemp()
        make_authority().write(foreign, "ca")
        await self.refused(
            seed,
            self.tls("newcomer", foreign),
            line="we refused {address}: certificate from an unknown CA (issued by "
            'another CA named "cluster CA", like ours)',
            seed_says="TLS: a node dialling from 127.0.0.1 refused us: certificate "
            'from an unknown CA (ours is issued by "cluster CA")',
            reason="tls_unknown_ca",
        )

    async def test_certificate_for_another_name(self) -> None:
        seed = await self.seed(*self.tls("seed"))
        await self.refused(
            seed,
            self.tls("newcomer", None, "newcomer.test"),
            line="{address} refused us: name mismatch (expected cluster.test, "
            "presented newcomer.test)",
            seed_says="TLS: we refused a node dialling from 127.0.0.1 (certificate "
            '"newcomer"): name mismatch (expected cluster.test, presented '
            "newcomer.test)",
            reason="tls_name_mismatch",
        )

    async def test_another_cluster_name(self) -> None:
        seed = await self.seed("--cluster-name", "blue")
        await self.refused(
            seed,
            ["--cluster-name", "green"],
            line="{address} refused us: it closed the connection without answering "
            'our push/pull (a different cluster name? ours is "green"; or TLS on '
            "its side only?)",
            seed_says="refused a stream from 127.0.0.1: cluster name mismatch: it is "
            '"green", ours is "blue"',
            reason="label",
        )

    async def test_another_gossip_key(self) -> None:
        seed = await self.seed("--encrypt-key", ENCRYPT_KEY)
        await self.refused(
            seed,
            ["--encrypt-key", OTHER_KEY],
            line="{address} refused us: gossip key mismatch: its reply is encrypted "
            "with a gossip key we do not have",
            seed_says="refused a stream from 127.0.0.1: gossip key mismatch: the "
            "stream is encrypted with a gossip key we do not have",
            reason="decrypt",
        )

    async def test_no_client_certificate_embedded(self) -> None:
        """
        A program embedding the service dials with no client certificate
        (the command line always presents one): C{when_joined} fails with
        L{JoinRefused} in words and the service is not ready.
        """
        seed = await self.seed(*self.tls("seed"))
        self.tls("newcomer")  # its certificate, which it will not present
        newcomer = self.spawn(
            EmbeddedNode(
                reactor,
                "newcomer",
                ["--no-client-certificate"],
                seed=seed.gossip_address,
                certs=self.certs,
            )
        )
        await wait_for(lambda: newcomer.ended.called, REFUSED, "the program ends")
        self.assertEqual(await newcomer.ended, 1, newcomer.output)
        address = seed.gossip_address
        lines = newcomer.output.splitlines()
        joined = f"JoinRefused: {address} refused us: no client certificate (it got "
        joined += "none from us)"
        self.assertEqual(lines.count(joined), 1, newcomer.output)
        self.assertEqual(lines.count("ready: False"), 1, newcomer.output)
        self.assertIn(
            f'TLS: {address} (certificate "seed") refused us: no client '
            "certificate (it got none from us)",
            newcomer.output,
        )
        await wait_for(
            lambda: (
                "TLS: we refused a node dialling from 127.0.0.1: no client "
                "certificate" in seed.output
            ),
            LOCAL.tcp_timeout,
            "the seed says why in its log",
        )
        dropped = await self.metric(
            seed, "cluster_node_gossip_dropped_total", reason="tls_no_certificate"
        )
        self.assertEqual(dropped, 1.0)
        self.assertEqual(set(await self.members(seed)), {"seed"})

    async def test_nobody_answering_still_bootstraps(self) -> None:
        """
        Join addresses where nothing listens: the first node of a new
        cluster.  It bootstraps alone, ready and a participant.
        """
        nobody = f"127.0.0.1:{free_loopback_port()}"
        node = self.spawn(
            LocalNode(
                reactor, "first", ["--profile", "local", "--join-addresses", nobody]
            )
        )
        await wait_for(
            lambda: self.peers(node),
            STARTUP + LOCAL.tcp_timeout,
            "the node bootstraps and takes part",
        )
        self.assertEqual(await self.peers(node), {"first": "participant"})
        code, _ = await node.fetch("/-/ready")
        self.assertEqual(code, 200)
        self.assertIn("bootstrapping a new cluster", node.output)
        self.check_running(node)
