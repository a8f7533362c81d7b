"""
A starved reactor: how long may an application block the reactor its
cluster node runs on before the cluster declares it dead?

    python bench/starve.py [--blocks 0.5,1,2,3,4,5,6,8,10] [--cycles 5]
        [--nodes 6] [--profile lan] [--json PATH]

For each block length B, a fresh cluster of C{--nodes} real processes on
127.0.0.1: C{--nodes - 1} C{twistd clusternode} nodes and one application
(C{tests/starved_node.py}) that runs the same node and blocks its reactor
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
    member whose suspicion timer ran out logs C{marking X as failed}, so
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
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import attrs
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IReactorCore, IReactorTime

# Running the script directly puts bench/ (not the repo root) on sys.path.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cluster.daemon.demo import LocalNode  # noqa: E402
from cluster.daemon.tap import PROFILES  # noqa: E402
from cluster.gossip.suspicion import suspicion_timeout  # noqa: E402
from tests.starved_node import StarvedNode  # noqa: E402

PROG = "bench/starve.py"
BLOCKS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
STARVED = "starved"
STARTUP = 30.0  # a cold interpreter importing Twisted, on a loaded machine
CONVERGENCE = 60.0
FETCH_TIMEOUT = 5.0
STOP_GRACE = 15.0
# Logged by the member whose suspicion timer runs out: every death
# declared in the cluster starts with one such line.
MARKED_FAILED = re.compile(r"marking (\S+) as failed")
MEMBER_EVENT = re.compile(
    r'^cluster_node_gossip_member_events_total\{[^}]*event="(\w+)"[^}]*\} (\S+)$',
    re.MULTILINE,
)
SINGLE = re.compile(r"^(cluster_node_gossip_\w+)\{[^}]*\} (\S+)$", re.MULTILINE)

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


class RunFailed(Exception):
    """
    The run could not measure what it is for.
    """


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@attrs.frozen
class Reading:
    """
    One node's counters, from its C{/metrics}: member events
    (C{suspected}, C{declared_dead}, C{refuted}, C{reaped}),
    C{probes_failed} and C{health_score}.
    """

    counts: Counter[str]

    @classmethod
    def parse(cls, text: str) -> Reading:
        counts: Counter[str] = Counter()
        for event, value in MEMBER_EVENT.findall(text):
            counts[event] = int(float(value))
        for name, value in SINGLE.findall(text):
            if name == "cluster_node_gossip_probes_failed_total":
                counts["probes_failed"] = int(float(value))
            elif name == "cluster_node_gossip_health_score":
                counts["health_score"] = int(float(value))
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
    it and the C{marking X as failed} lines logged in between.
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

    def __init__(self, reactor: IReactorTime, args: argparse.Namespace) -> None:
        self.reactor = reactor
        self.size: int = args.nodes
        self.cycles: int = args.cycles
        self.profile: str = args.profile
        self.nodes: list[LocalNode] = []
        self._stopping = False
        self._exits: list[str] = []

    async def _sleep(self, seconds: float) -> None:
        await task.deferLater(self.reactor, max(0.0, seconds), lambda: None)

    def _check(self) -> None:
        if self._exits:
            raise RunFailed("; ".join(self._exits))

    def _exited(self, code: int, node: LocalNode) -> int:
        if not self._stopping:
            self._exits.append(
                f"{node.name} exited with status {code}:\n{node.output[-2000:]}"
            )
        return code

    def _spawn(self, node: LocalNode) -> LocalNode:
        node.start()
        node.ended.addCallback(self._exited, node)
        self.nodes.append(node)
        return node

    async def _get(self, node: LocalNode, path: str) -> bytes | None:
        request = Deferred.fromCoroutine(node.fetch(path))
        request.addTimeout(FETCH_TIMEOUT, self.reactor)
        try:
            code, body = await request
        except CancelledError:
            raise
        except Exception:
            return None
        return body if code == 200 else None

    async def _members(self, node: LocalNode) -> dict[str, tuple[str, int]] | None:
        """
        C{node}'s member table: name to memberlist state and incarnation.
        """
        body = await self._get(node, "/api/v0/web/cluster")
        if body is None:
            return None
        members = json.loads(body)["members"]
        return {m["name"]: (m["state"], m["incarnation"]) for m in members}

    async def _table(self, node: LocalNode) -> dict[str, str] | None:
        members = await self._members(node)
        if members is None:
            return None
        return {name: state for name, (state, _) in members.items()}

    async def _start(self, block: float, every: float) -> StarvedNode:
        profile = ["--profile", self.profile]
        seed = self._spawn(LocalNode(self.reactor, "healthy-1", profile))
        began = time.monotonic()
        while await self._table(seed) is None:
            self._check()
            if time.monotonic() - began > STARTUP:
                raise RunFailed(f"the seed did not answer within {STARTUP:.0f} s")
            await self._sleep(0.1)
        join = [*profile, "--join-addresses", seed.gossip_address]
        for i in range(2, self.size):
            self._spawn(LocalNode(self.reactor, f"healthy-{i}", join))
        starved = StarvedNode(self.reactor, STARVED, join, block=block, every=every)
        self._spawn(starved)
        names = {node.name for node in self.nodes}
        began = time.monotonic()
        while True:
            self._check()
            tables = await gatherResults(
                [Deferred.fromCoroutine(self._table(node)) for node in self.nodes]
            )
            if all(t == dict.fromkeys(names, "alive") for t in tables):
                return starved
            if time.monotonic() - began > CONVERGENCE:
                raise RunFailed(
                    f"{self.size} nodes did not list each other alive within "
                    f"{CONVERGENCE:.0f} s"
                )
            await self._sleep(0.5)

    async def _snapshot(self) -> Snapshot:
        async def read(
            node: LocalNode,
        ) -> tuple[Reading, dict[str, tuple[str, int]]]:
            body = await self._get(node, "/metrics")
            members = await self._members(node)
            if body is None or members is None:
                raise RunFailed(f"{node.name} did not answer between two blocks")
            return Reading.parse(body.decode("utf-8")), members

        offsets = {node.name: len(node.output) for node in self.nodes}
        answers = await gatherResults(
            [Deferred.fromCoroutine(read(node)) for node in self.nodes]
        )
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

    async def _after_block(self, starved: StarvedNode, number: int) -> float:
        """
        Wait until the starved node logged block C{number}, then half the
        gap to the next; how long that block lasted.
        """
        deadline = time.monotonic() + starved.every + starved.block + STARTUP
        while len(starved.blocked()) < number:
            self._check()
            if time.monotonic() > deadline:
                raise RunFailed(f"block {number} was not logged when due")
            await self._sleep(0.05)
        await self._sleep((starved.every - starved.block) / 2)
        return starved.blocked()[number - 1]

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
        progress(f"block {block:g} s every {every:g} s: starting {self.size} nodes")
        self._stopping = False
        try:
            starved = await self._start(block, every)
            # Counted from the next block on (a block may have come while
            # the cluster formed).
            first = len(starved.blocked()) + 1
            if first > 1:
                await self._after_block(starved, first - 1)
            before = await self._snapshot()
            cycles: list[Cycle] = []
            for number in range(first, first + self.cycles):
                blocked = await self._after_block(starved, number)
                after = await self._snapshot()
                cycle = self._cycle(blocked, before, after)
                cycles.append(cycle)
                progress(
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
            await self.stop_all()

    async def stop_all(self) -> None:
        """
        SIGTERM every node still running, SIGKILL those still running
        after L{STOP_GRACE}; each by its PID.
        """
        self._stopping = True
        running = [node for node in self.nodes if not node.ended.called]
        for node in running:
            node.signal("TERM")
        began = time.monotonic()
        while not all(node.ended.called for node in running):
            if time.monotonic() - began > STOP_GRACE:
                for node in running:
                    node.signal("KILL")
            await self._sleep(0.1)
        self.nodes.clear()


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    widths = [max(len(title), 5) for title, _ in COLUMNS]
    print(" | ".join(f"{t:>{w}}" for (t, _), w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        cells = []
        for (_, key), width in zip(COLUMNS, widths, strict=True):
            value = row[key]
            if key in ("suspected", "dead"):
                value = f"{value}/{row['blocks']}"
            elif isinstance(value, float):
                value = f"{value:g}"
            cells.append(f"{value:>{width}}")
        print(" | ".join(cells))


def describe(profile: str, size: int) -> str:
    config = PROFILES[profile]()
    minimum = suspicion_timeout(config.suspicion_mult, size, config.probe_interval)
    k = config.suspicion_mult - 2 if size - 2 >= config.suspicion_mult - 2 else 0
    return (
        f"profile {profile}, {size} nodes ({size - 1} healthy, 1 starved): probe "
        f"every {config.probe_interval:g} s, timeout {config.probe_timeout:g} s; "
        f"suspicion {minimum:g}-{config.suspicion_max_timeout_mult * minimum:g} s, "
        f"the minimum after {k} confirmations"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python {PROG}",
        description="How long a block of the reactor the cluster tolerates.",
    )
    parser.add_argument(
        "--blocks",
        default=",".join(f"{b:g}" for b in BLOCKS),
        help="block lengths in seconds, comma-separated",
    )
    parser.add_argument("--cycles", type=int, default=5, help="blocks per length")
    parser.add_argument("--nodes", type=int, default=6, help="default 6")
    parser.add_argument("--profile", default="lan", choices=sorted(PROFILES))
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        args.blocks = [float(b) for b in args.blocks.split(",")]
    except ValueError:
        parser.error(f"--blocks: not numbers of seconds: {args.blocks!r}")
    if not all(0 < b < 60 for b in args.blocks):
        parser.error("--blocks: each between 0 and 60 s")
    if args.cycles < 1:
        parser.error("--cycles: at least 1")
    if args.nodes < 3:
        parser.error("--nodes: at least 3 (two healthy nodes and the starved one)")
    return args


async def sweep_main(reactor: IReactorCore, args: argparse.Namespace) -> None:
    sweep = Sweep(cast(IReactorTime, reactor), args)
    running: Deferred[list[Row]] | None = None

    async def rows() -> list[Row]:
        return [await sweep.row(block) for block in args.blocks]

    def interrupted() -> Deferred[None] | None:
        # Ctrl-C stops the reactor: stop the nodes first.
        if running is None or running.called:
            return None
        running.cancel()
        return Deferred.fromCoroutine(sweep.stop_all())

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    running = Deferred.fromCoroutine(rows())
    try:
        done = await running
    except CancelledError:
        raise SystemExit(130) from None
    except RunFailed as e:
        print(f"run failed: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(describe(args.profile, args.nodes))
    summaries = [row.summary() for row in done]
    print_table(summaries)
    deaths = [s["block_s"] for s in summaries if s["dead"]]
    print(
        f"the starved node first declared dead at blocks of {deaths[0]:g} s"
        if deaths
        else "the starved node was never declared dead"
    )
    others = sum(s["healthy_dead"] for s in summaries)
    print(f"healthy nodes declared dead: {others}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "profile": args.profile,
                    "nodes": args.nodes,
                    "rows": [row.to_json() for row in done],
                },
                f,
                indent=2,
            )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    task.react(sweep_main, [args])


if __name__ == "__main__":
    main()
