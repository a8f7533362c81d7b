"""
Strangers (the [hardening] issue, item 3): a node of another cluster is
never admitted, in either direction, and no member of one cluster ever
appears in another's table.

On the simulated network, seeded:

  - clusters with different labels (C{--cluster-name}), and one without,
    whose nodes keep trying to join each other's nodes while gossip and
    push/pull run for several push/pull intervals; every table is checked
    after every gossip interval, and every drop is counted under
    C{dropped.label}, exactly once per attempt, by the node that refused;
  - the same with keys: a plaintext node and a node with another key
    against an encrypted cluster, every pair in both directions, counted
    under C{dropped.decrypt} by both ends of each attempt;
  - a member restarted at its address into another cluster (another
    label, another key): its old cluster keeps probing it over UDP and
    pushing/pulling with it until it declares it dead, and every one of
    those packets and streams is dropped by the moved node, which joins
    its new cluster without bringing the old one along.

Mutual TLS on real sockets: C{tests/test_tls.py} (C{MutualTLSTests})
refuses a stranger that dials a member with a certificate from another
authority, with none, or with a name other than the cluster's.  Here: an
expired certificate, and the other direction, a member dialling a
stranger whose certificate is from another authority, expired, or names
another server.

And real C{twistd clusternode} processes with different C{--cluster-name}s,
each cluster given the other's address to join.
"""

from __future__ import annotations

import datetime
from collections import Counter

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor, task
from twisted.logger import Logger

from cluster.daemon.certs import Issued
from cluster.daemon.demo import LocalNode
from cluster.gossip import (
    GossipConfig,
    Keyring,
    Memberlist,
)
from tests.helpers import now
from tests.processes import LOCAL, SPREAD, STARTUP, ProcessTestCase

LAN = GossipConfig.lan()
KEY = Keyring([bytes(range(16))])
OTHER_KEY = Keyring([bytes(range(100, 116))])
INTERVALS = 4  # push/pull intervals each simulation runs for

_log = Logger()

Clusters = dict[str, list[Memberlist]]


def received(attempts: Counter[tuple[str, str]]) -> Counter[str]:
    """
    How many attempts each node was the target of.
    """
    counts: Counter[str] = Counter()
    for (_, target), n in attempts.items():
        counts[target] += n
    return counts


def made(attempts: Counter[tuple[str, str]]) -> Counter[str]:
    """
    How many attempts each node made.
    """
    counts: Counter[str] = Counter()
    for (dialler, _), n in attempts.items():
        counts[dialler] += n
    return counts


def expired(authority: Issued, issued: Issued) -> Issued:
    """
    C{issued}, signed again by C{authority} with a validity that ended
    yesterday.
    """
    certificate = x509.load_pem_x509_certificate(issued.certificate)
    key = serialization.load_pem_private_key(authority.key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    today = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(certificate.issuer)
        .public_key(certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(today - datetime.timedelta(days=30))
        .not_valid_after(today - datetime.timedelta(days=1))
    )
    for extension in certificate.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    signed = builder.sign(key, hashes.SHA256())
    return Issued(signed.public_bytes(serialization.Encoding.PEM), issued.key)


class ClusterNameTests(ProcessTestCase):
    """
    Two real two-node clusters, C{--cluster-name alpha} and C{beta}, each
    told to join the other's seed as well as its own.
    """

    async def dropped(self, node: LocalNode, reason: str) -> float:
        """
        How many inputs C{node} dropped for C{reason}.
        """
        return await self.metric(
            node, "cluster_node_gossip_dropped_total", reason=reason
        )

    async def test_two_clusters_with_different_names_stay_apart(self) -> None:
        """
        The second node of each cluster joins both seeds at start-up and
        again every 5 s (its rejoin loop): it joins its own cluster, the
        other seed refuses it, and for a push/pull interval after both
        clusters formed neither lists a node of the other.  Each seed's
        count of inputs dropped for their label rose.
        """
        seeds = {
            name: self.node(f"{name}-0", "--cluster-name", name)
            for name in ("alpha", "beta")
        }
        await self.started(list(seeds.values()), "a seed answers")
        before = {n: await self.dropped(s, "label") for n, s in seeds.items()}
        clusters = {
            name: [
                seed,
                self.node(
                    f"{name}-1",
                    "--cluster-name",
                    name,
                    "--rejoin-interval",
                    "5s",
                    "--join-addresses",
                    ",".join(
                        [seed.gossip_address]
                        + [s.gossip_address for s in seeds.values() if s is not seed]
                    ),
                ),
            ]
            for name, seed in seeds.items()
        }
        for name, nodes in clusters.items():
            await self.converged(nodes, STARTUP + SPREAD, f"{name} formed")

        checks = 0

        async def apart() -> None:
            nonlocal checks
            for name, nodes in clusters.items():
                own = {n.name for n in nodes}
                for node in nodes:
                    listed = set(await self.members(node))
                    self.assertEqual(listed - own, set(), f"{node.name} ({name})")
            checks += 1

        held = now() + LOCAL.push_pull_interval + LOCAL.tcp_timeout
        while now() < held:
            await apart()
            await task.deferLater(reactor, 0.1, lambda: None)
        _log.info("{checks} checks of the four tables", checks=checks)
        for name, seed in seeds.items():
            after = await self.dropped(seed, "label")
            _log.info(
                "{seed}: {before} -> {after} inputs dropped for their label",
                seed=seed.name,
                before=before[name],
                after=after,
            )
            self.assertGreater(after, before[name], seed.name)
            other = clusters["beta" if name == "alpha" else "alpha"][1]
            self.assertIn(f"failed to join {seed.gossip_address}", other.output)
