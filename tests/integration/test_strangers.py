"""
Strangers across real processes: two C{clusternode} clusters with
different C{--cluster-name}s, each given the other's address to join,
never admit each other.  The simulated-network and TLS cases (labels,
keys, restarts into another cluster, certificates) run in-process in
L{tests.unit.test_strangers}.
"""

from __future__ import annotations

from twisted.internet import reactor, task
from twisted.logger import Logger

from cluster.daemon.demo import LocalNode
from tests.helpers import now
from tests.processes import LOCAL, SPREAD, STARTUP, ProcessTestCase

_log = Logger()


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
