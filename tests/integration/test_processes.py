"""
Real C{clusternode} processes on 127.0.0.1 (L{cluster.daemon.demo.LocalNode}):
a three-node cluster, a crash, a graceful stop, a failed start that leaves
no pid file behind, and a second process under a live node's name; and
one node run through the Twisted plugin (C{twistd -n clusternode}), which
joins and leaves as well, and whose failed start says the same line but
exits 0 (twistd has no exit status, as C{docs/running.md} says).

Outcomes are asserted within the worst case of the profile they run
(C{--profile local}: push/pull every 15 s, suspicion at most 18 s with
three members); the times seen are logged.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import cast

import attrs
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cluster.ckit.node import NAME_CHECK_PINGS
from cluster.daemon.demo import LocalNode
from cluster.gossip.suspicion import worst_case_detection
from tests.helpers import wait_for
from tests.processes import LOCAL, SPREAD, STARTUP, ProcessTestCase

DETECTION = worst_case_detection(LOCAL, 3)
# A join (a push/pull per seed, at once) and the name check's pings.
NAME_CHECK = LOCAL.tcp_timeout + NAME_CHECK_PINGS * LOCAL.probe_timeout
# The last lines of a node's log once its reactor has stopped: the
# clusternode command's (Twisted's application runner) and twistd's.
RUNNER_STOPPED = "Main loop terminated."
TWISTD_STOPPED = "Server Shut Down."

clock = cast(IReactorTime, reactor)
_log = Logger()


class ThreeNodeTests(ProcessTestCase):
    async def test_join_crash_and_graceful_leave(self) -> None:
        first = self.node("p-1")
        # The seed first, as an operator would: a node that finds no seed
        # bootstraps alone and only merges at its next rejoin (60 s).
        await wait_for(lambda: self.peers(first), STARTUP, "the seed answers")
        others = [
            self.node(f"p-{i}", "--join-addresses", first.gossip_address)
            for i in (2, 3)
        ]
        nodes = [first, *others]
        everyone = {n.name: "participant" for n in nodes}

        async def all_see(expected: dict[str, str], among: list[LocalNode]) -> bool:
            return all([await self.peers(n) == expected for n in among])

        await wait_for(
            lambda: all_see(everyone, nodes),
            STARTUP + SPREAD,
            "three processes list each other as participants",
        )

        # SIGKILL: the others notice the silence and drop it.
        crashed = nodes[2]
        crashed.signal("KILL")
        await crashed.ended
        survivors = nodes[:2]
        expected = {n.name: "participant" for n in survivors}
        await wait_for(
            lambda: all_see(expected, survivors),
            DETECTION + 5,
            "a SIGKILLed node is gone from every survivor",
        )
        self.assertEqual((await self.states(first))[crashed.name], "dead")

        # SIGTERM: a graceful leave, recorded as left, not failed.
        leaver = nodes[1]
        asked = clock.seconds()
        status = await leaver.stop()
        _log.info("SIGTERM to exit: {took:.2f} s", took=clock.seconds() - asked)
        # Ended by the signal, once shut down, as twist and twistd end.
        self.assertEqual(status, -15, leaver.output[-2000:])
        self.assertEqual(leaver.errors, "")
        self.assertIn(RUNNER_STOPPED, leaver.output)
        # Polled over HTTP throughout, and it pushed/pulled over TCP: neither
        # an access log line nor a factory's start/stop in its log.
        self.assertNotIn('"GET /', leaver.output)
        self.assertNotIn("Starting factory", leaver.output)

        # Read from the seed's log, not its member list: a left member is
        # reaped from the list after the gossip-to-the-dead time, which a
        # starved poll can miss.
        said_left = f"{first.name}: {leaver.name} left"
        try:
            await wait_for(
                lambda: said_left in first.output,
                SPREAD,
                "the SIGTERMed node is left, not failed",
            )
        except AssertionError as e:
            raise AssertionError(
                f"{e}; the seed's log ends: {first.output[-1500:]}"
            ) from e
        self.assertNotIn(f"{first.name}: {leaver.name} failed", first.output)


class StartupFailureTests(ProcessTestCase):
    """
    A start that fails once the reactor runs: status 1, one line on
    stderr, the runner's clean-up done.  What the line says for each cause
    is tested in-process (C{tests/unit/test_tap.py}) and, each with a real
    process, in C{tests/integration/test_errors.py}.
    """

    async def test_unresolvable_join_address(self) -> None:
        """
        The node stops, the runner shuts down and removes the pid file (it
        took over one a killed node left), and the process ends with
        status 1.
        """
        pid_file = os.path.abspath(self.mktemp())
        # Left by a killed node: no process can have this id.
        with open("/proc/sys/kernel/pid_max") as f:
            stale = int(f.read()) + 1
        with open(pid_file, "w") as f:
            f.write(f"{stale}\n")
        # .invalid never resolves (RFC 6761); the hosts file answers first.
        node = self.node(
            "lost",
            "--join-addresses",
            "nowhere.invalid",
            "--pid-file",
            pid_file,
        )
        self.assertEqual(await node.ended, 1, node.output[-3000:])
        self.assertEqual(node.errors.count("\n"), 1, node.output[-3000:])
        self.assertTrue(
            node.errors.startswith(
                "clusternode: --join-addresses: failed to find any valid join "
                "addresses: "
            ),
            node.errors,
        )
        self.assertNotIn("Traceback", node.output)
        self.assertIn("Replacing stale PID file", node.output)
        self.assertIn(RUNNER_STOPPED, node.output)
        self.assertFalse(os.path.exists(pid_file))
        # It never made a cluster of its own.
        self.assertNotIn("will create a new cluster", node.output)
        self.assertNotIn("starting cluster node", node.output)


@attrs.define(eq=False)
class TwistdNode(LocalNode):
    """
    A node run through the Twisted plugin, C{twistd -n --pidfile=
    clusternode}, by this interpreter, with the name, ports and C{args}
    L{LocalNode} gives it.
    """

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "clusternode",
            "--node-name",
            self.name,
            "--bind",
            self.gossip_address,
            "--http",
            f"tcp:{self.http_port}:interface=127.0.0.1",
            *self.args,
        ]


class TwistdPluginTests(ProcessTestCase):
    """
    C{twistd clusternode} runs the same node as C{clusternode}, without
    an exit status of its own.
    """

    async def test_joins_and_leaves(self) -> None:
        """
        A twistd node joins a C{clusternode} seed; on SIGTERM it leaves, is
        recorded as left, and twistd ends by the signal.
        """
        seed = self.node("t-1")
        await wait_for(lambda: self.peers(seed), STARTUP, "the seed answers")
        plugin = self.spawn(
            TwistdNode(
                reactor,
                "t-2",
                ["--profile", "local", "--join-addresses", seed.gossip_address],
            )
        )
        await self.converged([seed, plugin], STARTUP + SPREAD, "the twistd node joined")
        status = await plugin.stop()
        self.assertEqual(status, -15, plugin.output[-2000:])  # twistd re-raises it
        self.assertEqual(plugin.errors, "")
        self.assertIn(TWISTD_STOPPED, plugin.output)

        async def left() -> bool:
            return (await self.states(seed)).get(plugin.name) == "left"

        await wait_for(left, SPREAD, "the twistd node is left, not failed")

    async def test_failed_start_exits_0(self) -> None:
        """
        The gossip port in use: twistd prints the node's one line, shuts
        down, and exits 0, as C{docs/running.md} says it does.
        """
        node = TwistdNode(reactor, "taken", ["--profile", "local"])
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", node.gossip_port))
        tcp.listen()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", node.gossip_port))
        self.addCleanup(tcp.close)
        self.addCleanup(udp.close)
        self.spawn(node)
        self.assertEqual(await node.ended, 0, node.output[-3000:])
        self.assertEqual(
            node.errors,
            f"twistd clusternode: --bind: {node.gossip_address} is in use "
            "(UDP or TCP)\n",
        )
        self.assertNotIn("Traceback", node.output)
        self.assertIn(TWISTD_STOPPED, node.output)


class NameConflictTests(ProcessTestCase):
    async def test_second_process_under_a_live_name_exits(self) -> None:
        """
        A process started under the name of a live node exits with status
        1 and one line on stderr naming the conflict; the others keep the
        first node, count the conflict and say so once.
        """
        seed = self.node("k-1")
        await wait_for(lambda: self.peers(seed), STARTUP, "the seed answers")
        holder = self.node("k-2", "--join-addresses", seed.gossip_address)
        both = {"k-1": "participant", "k-2": "participant"}

        async def formed() -> bool:
            return all([await self.peers(n) == both for n in (seed, holder)])

        await wait_for(formed, STARTUP + SPREAD, "the seed and the holder")

        newcomer = self.node(
            "k-2",
            "--join-addresses",
            f"{seed.gossip_address},{holder.gossip_address}",
        )
        await wait_for(
            lambda: newcomer.ended.called, STARTUP + NAME_CHECK, "the newcomer exits"
        )
        self.assertEqual(await newcomer.ended, 1, newcomer.output[-3000:])
        in_use = (
            f"node name k-2 is already used by {holder.gossip_address}; "
            f"this node ({newcomer.gossip_address}) will not become ready"
        )
        self.assertEqual(newcomer.errors, f"clusternode: --node-name: {in_use}\n")
        # Its log says it once too (stdout), and nothing else went wrong.
        self.assertEqual(newcomer.output.count(in_use), 2, newcomer.output[-3000:])
        self.assertNotIn("Traceback", newcomer.output)
        self.assertNotIn("failed to start", newcomer.output)

        keeping = (
            f"k-2 at {newcomer.gossip_address} claims the name of k-2 at "
            f"{holder.gossip_address}; keeping {holder.gossip_address}"
        )
        for node in (seed, holder):
            # Logged before they answered the newcomer's join, so before it
            # exited: only the pipe to this test remains.
            await wait_for(
                lambda node=node: keeping in node.output,  # type: ignore[misc]
                LOCAL.probe_interval,
                f"{node.name} says it keeps the holder",
            )
            self.assertEqual(node.output.count(keeping), 1, node.output[-3000:])
            self.assertGreaterEqual(await self.conflicts(node), 1, node.name)
            peers = await node.get("/api/v0/web/peers")
            self.assertEqual(
                {p["name"]: (p["addr"], p["state"]) for p in peers},
                {
                    "k-1": (seed.gossip_address, "participant"),
                    "k-2": (holder.gossip_address, "participant"),
                },
            )
