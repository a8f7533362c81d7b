"""
Strangers, in-process: a node of another cluster (another label, key or
certificate authority) is never admitted, in either direction, on the
simulated network and on loopback TLS sockets.  Two real processes under
different cluster names: L{tests.integration.test_strangers}.
"""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from cluster.daemon.certs import Issued, issue_certificate, make_authority
from cluster.gossip import (
    GossipConfig,
    JoinError,
    Keyring,
    Memberlist,
    MemberState,
)
from cluster.gossip.counters import DropReason
from cluster.testing import SimulatedNetwork
from tests.helpers import start_and_join, wait_for
from tests.processes import LOCAL
from tests.unit.test_tls import (
    CLUSTER_NAME,
    reissued,
    stream_tls,
    tls_node,
    tls_refusals,
)

LAN = GossipConfig.lan()
KEY = Keyring([bytes(range(16))])
OTHER_KEY = Keyring([bytes(range(100, 116))])
INTERVALS = 4  # push/pull intervals each simulation runs for

_log = Logger()

Clusters = dict[str, list[Memberlist]]


class ApartTestCase(SynchronousTestCase):
    """
    Clusters on one simulated network that must stay apart.
    """

    def build(
        self,
        network: SimulatedNetwork,
        sizes: dict[str, int],
        settings: dict[str, dict[str, Any]],
    ) -> Clusters:
        """
        One cluster per key of C{sizes}, of that many nodes named after the
        key, each joined through its first node and with the settings
        C{settings[key]}; once every cluster lists all its members.
        """
        clusters = {
            key: start_and_join(
                network,
                *(f"{key}-{i}" for i in range(size)),
                **settings[key],
            )
            for key, size in sizes.items()
        }
        took = network.run_until(
            lambda: all(
                n.num_members() == len(nodes)
                for nodes in clusters.values()
                for n in nodes
            ),
            LAN.push_pull_interval,
        )
        self.assertIsNotNone(took, "a cluster did not form")
        return clusters

    def assertApart(
        self, clusters: Clusters, allowed: dict[str, set[str]] | None = None
    ) -> None:
        """
        No node lists, in any state, a member outside its own cluster
        (and C{allowed[key]}).
        """
        for key, nodes in clusters.items():
            own = {n.name for n in nodes} | (allowed or {}).get(key, set())
            for node in nodes:
                strangers = {m.name for m in node.members()} - own
                self.assertFalse(strangers, f"{node.name} lists {strangers}")

    def run_apart(
        self,
        network: SimulatedNetwork,
        clusters: Clusters,
        cross_joins: bool = True,
        allowed: dict[str, set[str]] | None = None,
    ) -> Counter[tuple[str, str]]:
        """
        Run C{INTERVALS} push/pull intervals, checking L{assertApart} after
        every gossip interval.  With C{cross_joins}, at the start of each
        push/pull interval every node tries to join one node of every other
        cluster; every attempt must fail.

        @return: how many times each C{(dialler, target)} name pair tried.
        """
        attempts: Counter[tuple[str, str]] = Counter()
        outcomes: list[Deferred[int]] = []

        def try_all() -> None:
            for key, nodes in clusters.items():
                for other, targets in clusters.items():
                    if other == key:
                        continue
                    for i, node in enumerate(nodes):
                        target = targets[i % len(targets)]
                        attempts[node.name, target.name] += 1
                        address = target.local_member().full_address()
                        outcomes.append(node.join([address]))

        steps = round(LAN.push_pull_interval / LAN.gossip_interval)
        for _ in range(INTERVALS):
            if cross_joins:
                try_all()
            for _ in range(steps):
                network.run(LAN.gossip_interval)
                self.assertApart(clusters, allowed)
        for outcome in outcomes:
            self.failureResultOf(outcome, JoinError)
        for nodes in clusters.values():
            for node in nodes:
                # Each still lists its whole cluster, and kept pushing and
                # pulling with it all along.
                self.assertEqual(node.num_members(), len(nodes), node.name)
                if len(nodes) > 1:
                    self.assertGreaterEqual(
                        node.counters.push_pulls.completed, INTERVALS - 1, node.name
                    )
        return attempts

    def assertMovedApart(
        self,
        before: dict[str, Any],
        after: dict[str, Any],
        reason: DropReason,
        seed: int,
    ) -> None:
        """
        The last member of a cluster with C{before} settings restarts at
        its address with the C{after} settings of another cluster, which it
        joins.  Running L{INTERVALS} push/pull intervals, no old member
        reaches the new cluster through it, nor a new member the old one;
        the old cluster declares it dead, and what it kept sending was
        dropped by the moved node for C{reason}.  (Its new
        cluster drops nothing; its old one may drop the moved node's error
        replies to its own streams, which it cannot read either.)
        """
        network = SimulatedNetwork(seed=seed)
        clusters = self.build(
            network, {"old": 4, "new": 3}, {"old": before, "new": after}
        )
        mover = clusters["old"][-1]
        host = mover.transport.host
        network.crash(mover)
        network.restore(host)  # only the process ended
        moved = network.memberlist(mover.name, host=host, **after)
        moved.start()
        moved.join([clusters["new"][0].local_member().full_address()])
        old, new = clusters["old"][:-1], [*clusters["new"], moved]
        self.run_apart(
            network,
            {"old": old, "new": new},
            cross_joins=False,
            allowed={"old": {mover.name}},
        )
        # The old cluster declared it dead (and may have forgotten it).
        for node in old:
            member = node.member(mover.name)
            self.assertTrue(member is None or member.state == MemberState.DEAD)
        self.assertGreaterEqual(moved.counters.dropped[reason], 1)
        for node in clusters["new"]:
            self.assertEqual(node.counters.dropped[reason], 0, node.name)


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


class LabelTests(ApartTestCase):
    """
    Clusters with different labels (C{--cluster-name}).
    """

    def test_clusters_with_other_labels_never_merge(self) -> None:
        """
        Blue, green and an unlabelled cluster of four: every node tries to
        join a node of each other cluster once a push/pull interval, for
        four intervals.  Nobody is admitted anywhere, and each refusal is
        counted under C{dropped.label} by the node that refused it, once
        per attempt: no other traffic crossed.
        """
        network = SimulatedNetwork(seed=31)
        labels = {"blue": "blue", "green": "green", "plain": ""}
        clusters = self.build(
            network,
            dict.fromkeys(labels, 4),
            {key: {"label": label} for key, label in labels.items()},
        )
        attempts = self.run_apart(network, clusters)
        refused = received(attempts)
        for nodes in clusters.values():
            for node in nodes:
                self.assertEqual(
                    node.counters.dropped[DropReason.LABEL], refused[node.name]
                )
                self.assertEqual(node.counters.dropped[DropReason.DECRYPT], 0)
        self.assertEqual(sum(refused.values()), 3 * 2 * 4 * INTERVALS)

    def test_member_moved_to_another_label(self) -> None:
        """
        A blue member restarts at its address with the label green and
        joins the green cluster.  Blue keeps probing it and pushing and
        pulling with it until it declares it dead: all of that is dropped
        by the moved node (for its C{label}), and no blue member
        reaches green through it, nor green blue.
        """
        self.assertMovedApart(
            {"label": "blue"}, {"label": "green"}, DropReason.LABEL, seed=32
        )


class KeyringTests(ApartTestCase):
    """
    An encrypted cluster, a plaintext node and a node with another key.
    """

    def test_plaintext_and_wrong_key_are_never_admitted(self) -> None:
        """
        Every node (four encrypted, one plaintext, one with another key)
        tries to join a node of each other cluster once a push/pull
        interval, for four intervals; nobody is admitted.  The
        refusing side cannot read the request (no key, the wrong key, or
        plaintext where a key is required) and answers with an error the
        dialler cannot read either: each attempt is counted under
        C{dropped.decrypt} at both ends.
        """
        network = SimulatedNetwork(seed=33)
        clusters = self.build(
            network,
            {"encrypted": 4, "plaintext": 1, "other-key": 1},
            {
                "encrypted": {"keyring": KEY},
                "plaintext": {},
                "other-key": {"keyring": OTHER_KEY},
            },
        )
        attempts = self.run_apart(network, clusters)
        refused, dialled = received(attempts), made(attempts)
        for nodes in clusters.values():
            for node in nodes:
                self.assertEqual(
                    node.counters.dropped[DropReason.DECRYPT],
                    refused[node.name] + dialled[node.name],
                    node.name,
                )
                self.assertEqual(node.counters.dropped[DropReason.LABEL], 0)

    def test_member_restarted_with_another_key(self) -> None:
        """
        A member of the encrypted cluster restarts at its address with
        another key and joins the cluster using that key: everything its
        old cluster sends it is dropped under C{dropped.decrypt}.
        """
        self.assertMovedApart(
            {"keyring": KEY}, {"keyring": OTHER_KEY}, DropReason.DECRYPT, seed=34
        )


def expired(authority: Issued, issued: Issued) -> Issued:
    """
    C{issued}, signed again by C{authority} with a validity that ended
    yesterday.
    """
    today = datetime.datetime.now(datetime.timezone.utc)
    return reissued(
        authority,
        issued,
        today - datetime.timedelta(days=30),
        today - datetime.timedelta(days=1),
    )


class StrangerTLSTests(TestCase):
    """
    Mutual TLS against certificates C{tests/test_tls.py} does not try, and
    from the other side: a member dialling the stranger.
    """

    timeout = 60

    def setUp(self) -> None:
        self.authority = make_authority()

    async def members(self) -> list[Memberlist]:
        """
        Two members with good certificates, joined.
        """
        nodes = [
            tls_node(
                f"tls-{i}",
                stream_tls(
                    self.authority,
                    issue_certificate(
                        self.authority, f"tls-{i}", [CLUSTER_NAME], ["127.0.0.1"]
                    ),
                ),
            )
            for i in range(2)
        ]
        await self.started(*nodes)
        self.assertEqual(await nodes[1].join([self.address(nodes[0])]), 1)
        await wait_for(
            lambda: all(n.num_members() == 2 for n in nodes),
            LOCAL.push_pull_interval + LOCAL.tcp_timeout,
            "two TLS members list each other",
        )
        return nodes

    async def started(self, *nodes: Memberlist) -> None:
        await gatherResults([node.start() for node in nodes])
        for node in nodes:
            self.addCleanup(node.shutdown)

    def address(self, node: Memberlist) -> str:
        return node.local_member().full_address()

    def stranger(self, certificate: Issued) -> Memberlist:
        """
        A node that trusts the cluster's authority, with C{certificate}.
        """
        return tls_node("stranger", stream_tls(self.authority, certificate))

    async def assertRefused(
        self, dialler: Memberlist, target: Memberlist, members: list[Memberlist]
    ) -> None:
        """
        C{dialler}'s join of C{target} fails, the member counts the
        refusal (a member accepting the stranger refuses it within the
        handshake; a member dialling it refuses its certificate, or its
        name once the handshake is done), and nobody lists the stranger,
        nor the stranger anybody.
        """
        with self.assertRaises(JoinError):
            await dialler.join([self.address(target)])
        member, stranger = (target, dialler) if target in members else (dialler, target)
        await wait_for(
            lambda: tls_refusals(member) >= 1,
            LOCAL.tcp_timeout,
            "the member counts the refusal",
        )
        for node in members:
            self.assertIsNone(node.member(stranger.name))
        self.assertEqual(stranger.num_members(), 1)

    async def test_expired_certificate_dialling_in(self) -> None:
        """
        A certificate of the cluster's authority, with the cluster's name,
        that expired yesterday: the member refuses it in the handshake.
        """
        members = await self.members()
        good = issue_certificate(
            self.authority, "stranger", [CLUSTER_NAME], ["127.0.0.1"]
        )
        stranger = self.stranger(expired(self.authority, good))
        await self.started(stranger)
        await self.assertRefused(stranger, members[0], members)

    async def test_member_dialling_a_stranger_from_another_authority(self) -> None:
        """
        The stranger trusts the cluster's authority, but its own
        certificate is another's: a member dialling it refuses it.
        """
        members = await self.members()
        other = make_authority("another CA")
        stranger = self.stranger(
            issue_certificate(other, "stranger", [CLUSTER_NAME], ["127.0.0.1"])
        )
        await self.started(stranger)
        await self.assertRefused(members[1], stranger, members)

    async def test_member_dialling_a_stranger_with_an_expired_certificate(
        self,
    ) -> None:
        """
        A member dialling a stranger whose certificate expired refuses it.
        """
        members = await self.members()
        good = issue_certificate(
            self.authority, "stranger", [CLUSTER_NAME], ["127.0.0.1"]
        )
        stranger = self.stranger(expired(self.authority, good))
        await self.started(stranger)
        await self.assertRefused(members[1], stranger, members)

    async def test_member_dialling_a_stranger_named_otherwise(self) -> None:
        """
        The stranger's certificate is the cluster's authority's, for
        another name: a member dialling it refuses it, and counts and logs
        the refusal like the others.
        """
        members = await self.members()
        stranger = self.stranger(
            issue_certificate(self.authority, "stranger", ["stranger.test"])
        )
        await self.started(stranger)
        await self.assertRefused(members[1], stranger, members)
