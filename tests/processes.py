"""
The one fixture for tests of real C{clusternode} processes on 127.0.0.1
(L{cluster.daemon.demo.LocalNode}): start, kill at clean-up, poll the
status site, read C{/metrics}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from cluster.daemon.demo import LocalNode
from cluster.gossip import GossipConfig
from tests.helpers import now, sample_value, wait_for

LOCAL = GossipConfig.local()
STARTUP = 30.0  # a cold interpreter importing Twisted, on a loaded machine
# A push/pull reaches every member once an interval, whatever gossip missed.
SPREAD = LOCAL.push_pull_interval + LOCAL.tcp_timeout + 5

View = tuple[dict[str, str], dict[str, str]]


class ProcessTestCase(TestCase):
    """
    Helpers for clusters of real C{clusternode} processes.
    """

    timeout: float = 300

    def spawn(self, node: LocalNode) -> LocalNode:
        """
        Start C{node} (a L{LocalNode} or a subclass of it), killed when the
        test ends.
        """
        node.start()
        self.addCleanup(self.killed, node)
        return node

    def node(self, name: str, *args: str, like: LocalNode | None = None) -> LocalNode:
        """
        Start a C{--profile local} node, on the ports of C{like} if given
        (the same addresses as a process that ended).
        """
        flags = ["--profile", "local", *args]
        if like is None:
            return self.spawn(LocalNode(reactor, name, flags))
        return self.spawn(
            LocalNode(
                reactor,
                name,
                flags,
                gossip_port=like.gossip_port,
                http_port=like.http_port,
            )
        )

    async def killed(self, node: LocalNode) -> None:
        node.signal("KILL")
        await node.ended

    def check_running(self, node: LocalNode) -> None:
        """
        Fail the test, with its output, if C{node} exited.
        """
        if node.ended.called:
            raise AssertionError(f"{node.name} exited:\n{node.output[-3000:]}")

    async def answering(self, node: LocalNode) -> bool:
        """
        Whether C{node}'s status site answers.
        """
        self.check_running(node)
        try:
            await node.fetch("/-/healthy")
        except Exception:
            return False
        return True

    async def started(self, nodes: list[LocalNode], what: str) -> float:
        """
        Wait until every one of C{nodes} answers HTTP.

        @return: the seconds it took for the last one.
        """
        began = now()

        async def up(node: LocalNode) -> None:
            await wait_for(
                lambda: self.answering(node), STARTUP, f"{what}: {node.name}"
            )

        await gatherResults([Deferred.fromCoroutine(up(n)) for n in nodes])
        return now() - began

    async def peers(self, node: LocalNode) -> dict[str, str]:
        """
        C{node}'s peers (name to ckit state), empty while it does not answer.
        """
        try:
            found = await node.get("/api/v0/web/peers")
        except Exception:
            return {}
        return {peer["name"]: peer["state"] for peer in found}

    async def states(self, node: LocalNode) -> dict[str, str]:
        """
        C{node}'s member states by name (C{alive}, C{dead}, C{left}...).
        """
        return {name: m["state"] for name, m in (await self.members(node)).items()}

    async def members(self, node: LocalNode) -> dict[str, dict[str, Any]]:
        """
        C{node}'s memberlist entries by name (C{addr}, C{port}, C{state},
        C{incarnation}...).
        """
        cluster = await node.get("/api/v0/web/cluster")
        return {m["name"]: m for m in cluster["members"]}

    async def view(self, node: LocalNode) -> View | None:
        """
        C{node}'s member states and its (non-viewer) peer states, or
        C{None} while it does not answer.
        """
        self.check_running(node)
        try:
            members = await self.members(node)
            peers = await node.get("/api/v0/web/peers")
        except Exception:
            return None
        return (
            {name: m["state"] for name, m in members.items()},
            {p["name"]: p["state"] for p in peers},
        )

    async def converged(
        self,
        nodes: list[LocalNode],
        bound: float,
        what: str,
        participants: bool = True,
    ) -> float:
        """
        Wait until every one of C{nodes} lists all of them alive (and
        participant, unless C{participants} is false), and nothing else: no
        suspect, dead or left entry.

        @return: the seconds it took.
        """
        names = [n.name for n in nodes]
        wanted = (dict.fromkeys(names, "alive"), dict.fromkeys(names, "participant"))
        differ: dict[str, View | None] = {}

        def matches(view: View | None) -> bool:
            if view is None:
                return False
            return view == wanted if participants else view[0] == wanted[0]

        async def agreed() -> bool:
            views = await gatherResults(
                [Deferred.fromCoroutine(self.view(n)) for n in nodes]
            )
            differ.clear()
            differ.update(
                (node.name, view)
                for node, view in zip(nodes, views, strict=True)
                if not matches(view)
            )
            return not differ

        try:
            return await wait_for(agreed, bound, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; views that differ: {differ}") from None

    async def metric(self, node: LocalNode, name: str, **labels: str) -> float:
        """
        The value of the sample C{name} with C{labels} on C{node}'s
        C{/metrics}, 0 when absent (a counter never incremented).
        """
        _, body = await node.fetch("/metrics")
        return sample_value(body.decode("utf-8"), name, **labels)

    async def conflicts(self, node: LocalNode) -> float:
        """
        How many conflicts C{node} counted (memberlist's C{NotifyConflict},
        ckit's C{node_conflict} event).
        """
        return await self.metric(
            node, "cluster_node_gossip_received_events_total", event="node_conflict"
        )

    async def formed(self, prefix: str, size: int) -> list[LocalNode]:
        """
        A cluster of C{size} nodes named C{prefix-00}...: the seed first,
        then the others at once, joining it; once all are participants.
        """
        seed = self.node(f"{prefix}-00")
        await wait_for(lambda: self.answering(seed), STARTUP, "the seed answers")
        nodes = [seed] + [
            self.node(f"{prefix}-{i:02}", "--join-addresses", seed.gossip_address)
            for i in range(1, size)
        ]
        await self.converged(nodes, STARTUP + SPREAD, f"{size} nodes formed")
        return nodes
