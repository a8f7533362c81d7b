"""
A starved reactor: how long may an application block the reactor its
cluster node runs on before the cluster declares it dead?

    python bench/starve.py [--blocks 0.5,1,2,3,4,5,6,8,10] [--cycles 5]
        [--nodes 6] [--profile lan] [--json PATH]

For each block length B, a fresh cluster of C{--nodes} real processes on
127.0.0.1: C{--nodes - 1} C{clusternode} nodes and one application
(C{bench/starved_node.py}) that runs the same node and blocks its reactor
with C{time.sleep(B)} every C{max(5, 2 B)} seconds.  Once every node
lists every node alive, C{--cycles} blocks are watched: after each one
(once the starved node has written that it woke, and half the gap to the
next block later, so that refutations have spread) every node's
C{/metrics} is read, and the change since the previous block counted:

  - suspected: blocks after which the starved node had been suspected
    (it refuted, or a healthy node's probe round failed); I{failed
    probes}, the healthy nodes' failed probe rounds; I{refutes}, the
    starved node's refutations (each answers a suspicion or a death);
  - dead: blocks after which the starved node had been declared dead (a
    member whose suspicion timer ran out logs C{X failed: no ack for}, so
    no declaration escapes); I{dead listings}, the healthy nodes that
    recorded a death (their C{declared_dead} counters); I{unrefuted},
    healthy nodes that still list the starved node suspect or dead at an
    incarnation it has refuted (its refutation missed them);
  - the starved node's Lifeguard health score after each block (worst);
  - false suspicions and deaths of healthy nodes: the starved node's own
    failed probe rounds (after a block its overdue probe timers might
    run before the acks waiting in its socket are read), the healthy
    nodes' refutations, and the healthy nodes declared dead.

Prints one row per block length and the shortest block that caused a
death.  A failed run exits 1 (the cluster does not form within 60 s, a
block is not seen when due, a node exits); Ctrl-C exits 130.  Only the
processes started here are signalled, by their PID.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _harness as harness
from bench.starved_node import StarvedNode, blocked_times
from cluster.daemon.demo import LocalNode
from cluster.daemon.tap import PROFILES
from cluster.gossip.suspicion import expected_confirmations, suspicion_timeout

BLOCKS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
STARVED = "starved"
CONVERGENCE = 60.0
FETCH_TIMEOUT = 5.0
STOP_GRACE = 15.0
# Logged by the member whose suspicion timer runs out: every death
# declared in the cluster starts with one such line.
MARKED_FAILED = re.compile(r"(\S+) failed: no ack for")

COLUMNS: tuple[tuple[str, str], ...] = (
    ("block s", "block_s"),
    ("every s", "every_s"),
    ("blocks", "blocks"),
    ("suspected", "suspected"),
    ("dead", "dead"),
    ("failed probes", "failed_probes"),
    ("refutes", "refutes"),
    ("dead listings", "dead_listings"),
    ("unrefuted", "unrefuted"),
    ("its health", "health_max"),
    ("its failed probes", "its_failed_probes"),
    ("healthy refutes", "healthy_refutes"),
    ("healthy dead", "healthy_dead"),
)


def period(block: float) -> float:
    """
    The time from one block to the next: at least 5 s, and at least
    twice the block, so the node runs at least half the time.
    """
    return max(5.0, 2 * block)


@attrs.frozen
class Reading:
    """
    One node's counters, from its C{/metrics}: member events
    (C{suspected}, C{declared_dead}, C{refuted}, C{reaped}),
    C{probes_failed} and C{health_score}.
    """

    counts: Counter[str]

    @classmethod
    def of(cls, samples: Sequence[harness.Sample]) -> Reading:
        counts: Counter[str] = Counter()
        for event, value in harness.by_label(
            samples, harness.MEMBER_EVENTS, "event"
        ).items():
            counts[event] = int(value)
        totals = harness.metric_totals(samples)
        for key, name in (
            ("probes_failed", "cluster_node_gossip_probes_failed_total"),
            ("health_score", "cluster_node_gossip_health_score"),
        ):
            if name in totals:
                counts[key] = int(totals[name])
        return cls(counts)


@attrs.frozen
class Snapshot:
    """
    The cluster between two blocks.

    @ivar readings: every node's counters.
    @ivar offsets: how much of every node's log had been written.
    @ivar unrefuted: healthy nodes that list the starved node suspect or
        dead at an older incarnation than its own: they missed its
        refutation.
    """

    readings: dict[str, Reading]
    offsets: dict[str, int]
    unrefuted: int


@attrs.frozen
class Cycle:
    """
    What one block brought about, from the counters read before and after
    it and the C{X failed: no ack for} lines logged in between.
    """

    blocked: float
    refutes: int
    failed_probes: int
    dead_listings: int
    starved_marked: int
    unrefuted: int
    health: int
    its_failed_probes: int
    healthy_refutes: int
    healthy_marked: int

    @property
    def suspected(self) -> bool:
        return self.refutes > 0 or self.failed_probes > 0

    @property
    def dead(self) -> bool:
        return self.starved_marked > 0


@attrs.frozen
class Row:
    """
    One block length: its cycles, summed up.
    """

    profile: str
    block: float
    every: float
    cycles: tuple[Cycle, ...]

    def summary(self) -> dict[str, Any]:
        cycles, n = self.cycles, len(self.cycles)
        return {
            "block_s": self.block,
            "every_s": self.every,
            "blocks": n,
            "blocked_s_mean": sum(c.blocked for c in cycles) / max(n, 1),
            "suspected": sum(c.suspected for c in cycles),
            "dead": sum(c.dead for c in cycles),
            "failed_probes": sum(c.failed_probes for c in cycles),
            "refutes": sum(c.refutes for c in cycles),
            "dead_listings": sum(c.dead_listings for c in cycles),
            "unrefuted": sum(c.unrefuted for c in cycles),
            "health_max": max((c.health for c in cycles), default=0),
            "its_failed_probes": sum(c.its_failed_probes for c in cycles),
            "healthy_refutes": sum(c.healthy_refutes for c in cycles),
            "healthy_dead": sum(c.healthy_marked for c in cycles),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "profile": self.profile,
            "cycles": [attrs.asdict(c) for c in self.cycles],
        }


class Sweep:
    """
    One cluster per block length; L{row} runs one.
    """

    def __init__(self, processes: harness.Processes, args: argparse.Namespace) -> None:
        self.processes = processes
        self.reactor = processes.reactor
        self.sites = harness.StatusSites(self.reactor, timeout=FETCH_TIMEOUT)
        self.size: int = args.nodes
        self.cycles: int = args.cycles
        self.profile: str = args.profile
        self.nodes: list[harness.Child] = []

    async def _members(self, node: harness.Child) -> dict[str, tuple[str, int]] | None:
        """
        C{node}'s member table: name to memberlist state and incarnation.
        """
        status = await self.sites.cluster(node)
        if status is None:
            return None
        return {m["name"]: (m["state"], m["incarnation"]) for m in status["members"]}

    async def _table(self, node: harness.Child) -> dict[str, str] | None:
        members = await self._members(node)
        if members is None:
            return None
        return {name: state for name, (state, _) in members.items()}

    async def _start(self, block: float, every: float) -> harness.Child:
        profile = ["--profile", self.profile]
        seed = self.processes.node(LocalNode(self.reactor, "healthy-1", profile))
        self.nodes = [seed]

        async def answers() -> bool:
            return await self._table(seed) is not None

        await harness.Poller(self.processes, 0.1).until(
            answers,
            harness.STARTUP,
            lambda: f"the seed did not answer within {harness.STARTUP:.0f} s",
        )
        join = [*profile, "--join-addresses", seed.gossip_address]
        for i in range(2, self.size):
            self.nodes.append(
                self.processes.node(LocalNode(self.reactor, f"healthy-{i}", join))
            )
        starved = self.processes.node(
            StarvedNode(self.reactor, STARVED, join, block=block, every=every)
        )
        self.nodes.append(starved)
        names = {node.name for node in self.nodes}

        async def all_alive() -> bool:
            tables = await harness.gather(self._table(node) for node in self.nodes)
            return all(t == dict.fromkeys(names, "alive") for t in tables)

        await harness.Poller(self.processes, 0.5).until(
            all_alive,
            CONVERGENCE,
            lambda: (
                f"{self.size} nodes did not list each other alive within "
                f"{CONVERGENCE:.0f} s"
            ),
        )
        return starved

    async def _snapshot(self) -> Snapshot:
        async def read(
            node: harness.Child,
        ) -> tuple[Reading, dict[str, tuple[str, int]]]:
            samples = await self.sites.metrics(node)
            members = await self._members(node)
            if samples is None or members is None:
                raise harness.RunFailed(
                    f"{node.name} did not answer between two blocks"
                )
            return Reading.of(samples), members

        offsets = {node.name: len(node.output) for node in self.nodes}
        answers = await harness.gather(read(node) for node in self.nodes)
        names = [node.name for node in self.nodes]
        pairs = list(zip(names, answers, strict=True))
        tables = {name: members for name, (_, members) in pairs}
        _, own = tables[STARVED][STARVED]
        unrefuted = sum(
            1
            for name, members in tables.items()
            if name != STARVED
            and members[STARVED][0] != "alive"
            and members[STARVED][1] < own
        )
        readings = {name: reading for name, (reading, _) in pairs}
        return Snapshot(readings, offsets, unrefuted)

    async def _after_block(
        self, starved: harness.Child, number: int, block: float, every: float
    ) -> float:
        """
        Wait until the starved node logged block C{number}, then half the
        gap to the next; how long that block lasted.
        """

        async def logged() -> bool:
            return len(blocked_times(starved.output)) >= number

        await harness.Poller(self.processes, 0.05).until(
            logged,
            every + block + harness.STARTUP,
            lambda: f"block {number} was not logged when due",
        )
        await harness.sleep(self.reactor, (every - block) / 2)
        return blocked_times(starved.output)[number - 1]

    def _cycle(self, blocked: float, before: Snapshot, after: Snapshot) -> Cycle:
        def delta(name: str, key: str) -> int:
            return after.readings[name].counts[key] - before.readings[name].counts[key]

        healthy = [name for name in after.readings if name != STARVED]
        marked = Counter(
            STARVED if target == STARVED else "healthy"
            for node in self.nodes
            for target in MARKED_FAILED.findall(
                node.output[before.offsets[node.name] : after.offsets[node.name]]
            )
        )
        return Cycle(
            blocked=blocked,
            refutes=delta(STARVED, "refuted"),
            failed_probes=sum(delta(name, "probes_failed") for name in healthy),
            dead_listings=sum(delta(name, "declared_dead") for name in healthy),
            starved_marked=marked[STARVED],
            unrefuted=after.unrefuted,
            health=after.readings[STARVED].counts["health_score"],
            its_failed_probes=delta(STARVED, "probes_failed"),
            healthy_refutes=sum(delta(name, "refuted") for name in healthy),
            healthy_marked=marked["healthy"],
        )

    async def row(self, block: float) -> Row:
        every = period(block)
        harness.progress(
            f"block {block:g} s every {every:g} s: starting {self.size} nodes"
        )
        try:
            starved = await self._start(block, every)
            # Counted from the next block on (a block may have come while
            # the cluster formed).
            first = len(blocked_times(starved.output)) + 1
            if first > 1:
                await self._after_block(starved, first - 1, block, every)
            before = await self._snapshot()
            cycles: list[Cycle] = []
            for number in range(first, first + self.cycles):
                blocked = await self._after_block(starved, number, block, every)
                after = await self._snapshot()
                cycle = self._cycle(blocked, before, after)
                cycles.append(cycle)
                harness.progress(
                    f"  block {number} ({blocked:.2f} s): "
                    f"{'suspected' if cycle.suspected else 'not suspected'}"
                    f"{', dead' if cycle.dead else ''}; unrefuted "
                    f"{cycle.unrefuted}; health {cycle.health}; "
                    f"failed probes {cycle.failed_probes}, its own "
                    f"{cycle.its_failed_probes}; healthy refutes "
                    f"{cycle.healthy_refutes}, dead {cycle.healthy_marked}"
                )
                before = after
            return Row(self.profile, block, every, tuple(cycles))
        finally:
            # A fresh cluster for the next block length.
            await self.processes.stop_all(STOP_GRACE)


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    cells = []
    for row in rows:
        line = []
        for _, key in COLUMNS:
            value = row[key]
            if key in ("suspected", "dead"):
                value = f"{value}/{row['blocks']}"
            elif isinstance(value, float):
                value = f"{value:g}"
            line.append(str(value))
        cells.append(line)
    titles = [title for title, _ in COLUMNS]
    return harness.Table.fitting(titles, cells, narrowest=5).lines(cells)


def describe(profile: str, size: int) -> str:
    config = PROFILES[profile]()
    minimum = suspicion_timeout(config.suspicion_mult, size, config.probe_interval)
    k = expected_confirmations(config.suspicion_mult, size)
    return (
        f"profile {profile}, {size} nodes ({size - 1} healthy, 1 starved): probe "
        f"every {config.probe_interval:g} s, timeout {config.probe_timeout:g} s; "
        f"suspicion {minimum:g}-{config.suspicion_max_timeout_mult * minimum:g} s, "
        f"the minimum after {k} confirmations"
    )


def blocks(text: str) -> list[float]:
    """
    An argument type: block lengths in seconds, comma-separated.
    """
    try:
        values = [float(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers of seconds: {text!r}") from None
    if not all(0 < b < 60 for b in values):
        raise argparse.ArgumentTypeError("each between 0 and 60 s")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    options = harness.parser(__file__, __doc__)
    harness.add_options(
        options,
        [
            (
                "--blocks",
                blocks,
                list(BLOCKS),
                "block lengths in seconds, comma-separated",
            ),
            ("--cycles", harness.at_least(1), 5, "blocks per length"),
            (
                "--nodes",
                harness.at_least(3),
                6,
                "default 6; at least 3 (two healthy nodes and the starved one)",
            ),
        ],
    )
    options.add_argument("--profile", default="lan", choices=sorted(PROFILES))
    return options.parse_args(argv)


async def sweep(reactor: IReactorTime, args: argparse.Namespace) -> None:
    processes = harness.Processes(reactor)
    sweeper = Sweep(processes, args)

    async def rows() -> list[Row]:
        return [await sweeper.row(block) for block in args.blocks]

    try:
        done = await harness.supervised(processes, rows(), STOP_GRACE)
    except harness.Interrupted:
        harness.exit_failed("interrupted", 130)
    except harness.RunFailed as e:
        harness.exit_failed(str(e))
    print(describe(args.profile, args.nodes))
    summaries = [row.summary() for row in done]
    print("\n".join(table_lines(summaries)))
    deaths = [s["block_s"] for s in summaries if s["dead"]]
    print(
        f"the starved node first declared dead at blocks of {deaths[0]:g} s"
        if deaths
        else "the starved node was never declared dead"
    )
    others = sum(s["healthy_dead"] for s in summaries)
    print(f"healthy nodes declared dead: {others}")
    harness.write_json(
        args.json,
        {
            "profile": args.profile,
            "nodes": args.nodes,
            "rows": [row.to_json() for row in done],
        },
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    harness.react(lambda reactor: sweep(reactor, args))


if __name__ == "__main__":
    main()
