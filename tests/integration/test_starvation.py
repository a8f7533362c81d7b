"""
A starved reactor (Lifeguard): an application that blocks its reactor for
1 s every 5 s (C{bench/starved_node.py}) runs one node of a six-node
cluster of real processes on 127.0.0.1; for twelve blocks no member is
ever declared dead, the starved node included.

The LAN profile, Alloy's (memberlist's C{DefaultLANConfig}): 1 s probe
rounds with a 500 ms probe timeout; with six members a suspicion runs at
least 4 s (C{suspicion_mult} 4) and at most 24 s, shortened towards the
minimum by two independent confirmations.  A 1 s block delays the starved
node's acks by at most a second, about one probe round, so it may be
suspected (and must refute), but no suspicion can run out while it
blocks.  C{bench/starve.py} sweeps the block length to find where deaths
start (see the README).

Outcomes are asserted within the worst case of the configuration; the
suspicions seen and the times taken are logged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import cast

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from bench.starved_node import StarvedNode
from cluster.daemon.demo import LocalNode
from cluster.gossip import GossipConfig
from tests.helpers import now, samples, wait_for
from tests.processes import STARTUP, ProcessTestCase

LAN = GossipConfig.lan()
SIZE = 6
BLOCK, EVERY = 1.0, 5.0
CYCLES = 12
POLL_INTERVAL = 0.5
# A node that joined is listed by everyone by the next push/pull at worst.
SPREAD = LAN.push_pull_interval + LAN.tcp_timeout + 5
# A starved node answers once its block ends.
FETCH_TIMEOUT = BLOCK + 10
# After the last block, the starved node refutes once it hears of the
# suspicion: from gossip at once, at worst from the buddy ping of a
# suspecting member's next probe of it (one member a round, SIZE - 1
# rounds), each round stretched at most by that member's health score.
REFUTED = EVERY + (SIZE - 1) * LAN.probe_interval * LAN.awareness_max_multiplier
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

clock = cast(IReactorTime, reactor)
_log = Logger()


class StarvedReactorTests(ProcessTestCase):
    # Start-up, convergence, CYCLES blocks, the final checks.
    timeout = STARTUP + SPREAD + CYCLES * EVERY + REFUTED + 60

    async def table(self, node: LocalNode) -> dict[str, str] | None:
        """
        C{node}'s member table (name to memberlist state), or C{None} if
        it does not answer in time.
        """
        request = Deferred.fromCoroutine(node.get("/api/v0/web/cluster"))
        request.addTimeout(FETCH_TIMEOUT, clock)
        try:
            cluster = await request
        except Exception:
            return None
        return {m["name"]: m["state"] for m in cluster["members"]}

    async def everyone_alive(self, nodes: list[LocalNode]) -> bool:
        names = {node.name for node in nodes}
        tables = await gatherResults(
            [Deferred.fromCoroutine(self.table(node)) for node in nodes]
        )
        return all(
            table is not None and table == dict.fromkeys(names, "alive")
            for table in tables
        )

    async def counters(self, node: LocalNode) -> Counter[str]:
        """
        C{node}'s member event counters (C{suspected}, C{declared_dead},
        C{refuted}, C{reaped}) and failed probe rounds (C{probes_failed}),
        from C{/metrics}.
        """
        _, body = await node.fetch("/metrics")
        found: Counter[str] = Counter()
        for name, labels, value in samples(body.decode("utf-8")):
            if name == "cluster_node_gossip_member_events_total":
                found[labels["event"]] = int(value)
            elif name == "cluster_node_gossip_probes_failed_total":
                found["probes_failed"] = int(value)
        return found

    async def test_one_second_every_five(self) -> None:
        seed = self.spawn(LocalNode(reactor, "healthy-1", ["--profile", "lan"]))
        # The seed first: a node that finds no seed bootstraps alone.
        await wait_for(lambda: self.table(seed), STARTUP, "the seed answers")
        join = ["--profile", "lan", "--join-addresses", seed.gossip_address]
        healthy = [seed] + [
            self.spawn(LocalNode(reactor, f"healthy-{i}", join)) for i in range(2, SIZE)
        ]
        starved = StarvedNode(reactor, "starved", join, block=BLOCK, every=EVERY)
        self.spawn(starved)
        nodes = [*healthy, starved]
        await wait_for(
            lambda: self.everyone_alive(nodes),
            STARTUP + SPREAD,
            f"{SIZE} processes list each other alive",
        )

        # Every node's table every POLL_INTERVAL, each node on its own (a
        # blocked one answers late without holding up the others).
        dead: list[str] = []
        suspect: Counter[tuple[str, str]] = Counter()
        polls: Counter[str] = Counter()
        end = now() + CYCLES * EVERY

        async def watch(node: LocalNode) -> None:
            while now() < end:
                table = await self.table(node)
                for member, state in (table or {}).items():
                    if state in ("dead", "left"):
                        dead.append(f"{node.name} listed {member} {state}")
                    elif state == "suspect":
                        suspect[node.name, member] += 1
                polls[node.name] += table is not None
                await task.deferLater(clock, POLL_INTERVAL, lambda: None)

        began_blocks = len(starved.blocked())
        await gatherResults([Deferred.fromCoroutine(watch(node)) for node in nodes])
        blocks = starved.blocked()[began_blocks:]
        _log.info(
            "{count} blocks of {shortest:.2f}-{longest:.2f} s; polls answered: "
            "{polls}; polls listing a suspect (observer, member): {suspect}",
            count=len(blocks),
            shortest=min(blocks, default=0),
            longest=max(blocks, default=0),
            polls=dict(polls),
            suspect=dict(suspect),
        )
        self.assertGreaterEqual(len(blocks), CYCLES - 1, starved.output[-3000:])
        self.assertEqual(dead, [])

        # A suspicion of it cannot outlive the gaps between its blocks.
        await wait_for(
            lambda: self.everyone_alive(nodes),
            REFUTED,
            "every member lists every member alive after the last poll",
        )
        # Deaths refuted between two polls still count: no node ever
        # declared one, and the starved node refuted every suspicion.
        counts = {node.name: await self.counters(node) for node in [*healthy, starved]}
        _log.info("member events and failed probes: {counts}", counts=counts)
        self.assertEqual(
            {name: found["declared_dead"] for name, found in counts.items()},
            dict.fromkeys(counts, 0),
        )


class SweepSmokeTests(SynchronousTestCase):
    """
    C{bench/starve.py} in a quick mode (three nodes, one block), so that
    the script cannot rot; nothing is asserted about what it measures.
    """

    def test_quick_run(self) -> None:
        out = os.path.abspath(self.mktemp())
        done = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "bench", "starve.py"),
                *("--blocks", "2", "--cycles", "1", "--nodes", "3"),
                *("--json", out),
            ],
            capture_output=True,
            text=True,
            timeout=STARTUP + SPREAD + 60,
            check=False,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out) as f:
            result = json.load(f)
        self.assertEqual((result["profile"], result["nodes"]), ("lan", 3))
        (row,) = result["rows"]
        self.assertEqual((row["block_s"], row["every_s"], row["blocks"]), (2, 5, 1))
        self.assertGreaterEqual(row["cycles"][0]["blocked"], 2)
        self.assertIn("its failed probes", done.stdout)
