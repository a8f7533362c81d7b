"""
A soak test of real node processes on this machine:

    python bench/soak.py --nodes 100 --minutes 5 [--kills 3] [--json PATH]

It starts C{--nodes} C{clusternode} processes
(L{cluster.daemon.demo.LocalNode}) on 127.0.0.1 only, with the LAN timing profile
(memberlist's C{DefaultLANConfig}: 1 s probes, suspicion multiplier 4,
suspicion maximum 6 times the minimum).  The first C{--seeds} nodes are the
seeds; every other node joins through all of them.  Nodes start in batches
of C{--batch}: the next batch is spawned once every node of this one
answers, so a 2-core machine is never asked to start a hundred
interpreters at once.

What it measures, then prints as one table (metric, value, target,
ok/miss; C{--json PATH} writes the same rows as JSON, with the samples):

  - convergence after start.  A node has I{started} when its status site
    answers C{GET /-/ready} with 200 (the HTTP port and the gossip sockets
    are up and its join has begun).  The cluster has I{converged} when
    every node's C{/api/v0/web/cluster} lists all C{--nodes} members,
    itself included, in memberlist state I{alive}.  The time from the
    last node's start to the last node seen converged is the convergence
    time (target: 10 s).  Nodes are polled every 0.5 s, so it is accurate
    to about that.  (C{/api/v0/web/peers} lists ckit peers with their ckit
    state, I{participant} or I{viewer}, and no suspect or dead member: the
    member table is what tells.)
  - false deaths, during the whole run (target: 0): members that any node
    lists as I{dead} (or I{left}) without having been killed, from every
    poll of the member tables; and, because a death refuted between two
    polls would be missed, each node's C{declared_dead} counter (in
    C{/metrics}) beyond the kills it has seen.  False suspicions (members
    listed I{suspect} without having been killed, and each node's
    C{refuted} counter) are reported too, without a target.
  - the machine, every 10 s over the soak (C{--minutes}): whole-machine
    CPU (C{psutil.cpu_percent}) and memory in use, the summed RSS, PSS and CPU
    of our node processes, this script's own CPU (its polling is part of
    the load), and the worst Lifeguard health score any node reports.
  - kill detection: C{--kills} nodes (never a seed), evenly spread over the
    soak, are SIGKILLed one at a time; the time until every surviving node
    lists the victim I{dead} (or no longer lists it), each, p50 and max.

The run I{fails} (exit status 1) when it cannot measure: a node's status
site never answers, the nodes do not converge within 120 s, a kill is not
detected within the worst case of the LAN configuration
(L{cluster.gossip.suspicion.worst_case_detection}), or a node process exits
that was not killed.  A
missed target is printed as I{miss} and does not change the exit status.
Ctrl-C stops the run (exit status 130).  Bad flags exit with status 2.

Every process this script starts is stopped by its PID when it ends, also
on failure or Ctrl-C: SIGTERM (a graceful leave), then SIGKILL for any
still running after 20 s.  The nodes' logs go to a temporary directory,
removed after a successful run unless C{--keep-logs}, and kept (its path
printed) otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import attrs
import psutil
from twisted.internet.interfaces import IReactorTime

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _harness as harness
from cluster.daemon.demo import LocalNode
from cluster.gossip import GossipConfig
from cluster.gossip.suspicion import worst_case_detection

PROFILE = "lan"
CONVERGENCE_TARGET = 10.0  # seconds after the last start
CONVERGENCE_TIMEOUT = 120.0  # no convergence by then: the run failed
START_TIMEOUT = 60.0  # for one node's status site to answer
POLL_INTERVAL = 0.5  # convergence and kill-detection polls
SAMPLE_INTERVAL = 10.0  # machine and false-death samples during the soak
FETCH_TIMEOUT = 5.0
# Requests in flight at once: enough to poll 100 nodes in a few rounds, few
# enough not to queue a burst of work on every node of a 2-core machine.
FETCH_CONCURRENCY = 20
# After SIGTERM, before SIGKILL.  A node bounds its own stop (5 s to
# announce "terminating", 5 s to leave); 100 of them stopping at once on 2
# cores need most of that (11.8 s measured).
STOP_GRACE = 20.0
DEAD_STATES = frozenset({"dead", "left"})


@attrs.frozen
class View:
    """
    A node's answer to C{/api/v0/web/cluster}.

    @ivar answered: when it arrived (C{time.monotonic}).
    @ivar members: member name -> memberlist state (C{"alive"}, C{"suspect"},
        C{"dead"}, C{"left"}), itself included.
    @ivar health_score: its Lifeguard health score (0 is healthy).
    """

    answered: float
    members: dict[str, str]
    health_score: int


@attrs.define
class Row:
    """
    One line of the result table.

    @ivar verdict: C{"ok"}, C{"miss"}, or C{""} for a figure with no target.
    """

    metric: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    verdict: str = ""

    def shown_value(self) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, float):
            return f"{self.value:.2f} {self.unit}".rstrip()
        return f"{self.value} {self.unit}".rstrip()

    def to_json(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "verdict": self.verdict,
        }


def judged(
    metric: str, value: float | int | None, unit: str, target: str, ok: bool
) -> Row:
    return Row(metric, value, unit, target, "ok" if ok else "miss")


def at_most(value: float | int | None, limit: float) -> bool:
    """
    Whether C{value} was measured and is at most C{limit}.
    """
    return value is not None and value <= limit


@attrs.frozen
class Usage:
    """
    What our processes used between two readings of a L{ProcessMeter}.

    @ivar nodes_rss: the node processes' resident memory, summed (shared
        pages, such as the interpreter's, counted once per process).
    @ivar nodes_pss: their proportional set size, summed: shared pages
        divided among the processes that share them, so this sum is the
        memory they really take together.
    @ivar nodes_cpu_percent: their CPU time over the period, percent of one
        core; C{bench_cpu_percent} the same for this script.
    """

    nodes_running: int
    nodes_rss: int
    nodes_pss: int
    nodes_cpu_percent: float
    bench_cpu_percent: float


@attrs.define
class Sample:
    """
    The machine and our processes, at C{elapsed} seconds into the soak.

    CPU figures cover the time since the previous sample; the machine's is
    percent of all its cores (as C{psutil.cpu_percent}), our processes'
    (in C{usage}) percent of one core.
    """

    elapsed: float
    machine_cpu_percent: float
    machine_memory_used: int
    usage: Usage
    worst_health_score: int | None

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.define
class Kill:
    """
    One SIGKILLed node and when every survivor listed it dead.

    @ivar detected_after: seconds from the SIGKILL until the last survivor
        was seen listing it dead or gone (C{None} until then).
    @ivar first_detected_after: the same for the first survivor.
    """

    victim: str
    killed_at: float
    detected_after: float | None = None
    first_detected_after: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "victim": self.victim,
            "detected_after_s": self.detected_after,
            "first_detected_after_s": self.first_detected_after,
        }


@attrs.define
class MemberEvents:
    """
    A node's C{cluster_node_gossip_member_events_total} counters, and how
    many kills had begun when they were read: each kill is at most one
    legitimate C{declared_dead} per node.  (Exact once every kill was
    detected: each survivor then declared each victim dead once.)
    """

    counts: dict[str, float]
    kills_begun: int

    @property
    def false_declarations(self) -> int:
        return max(0, int(self.counts.get("declared_dead", 0)) - self.kills_begun)


class ProcessMeter:
    """
    CPU and memory of this script's child processes (the nodes) and of
    this script, between two readings.
    """

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._cpu_seconds: dict[int, float] = {}
        self._my_cpu_seconds = 0.0
        self._read_at = time.monotonic()
        self.read()  # the baseline: later readings cover only what follows

    @staticmethod
    def _cpu_of(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def read(self) -> Usage:
        now = time.monotonic()
        period = max(now - self._read_at, 1e-6)
        rss = pss = 0
        nodes_cpu = 0.0
        seconds: dict[int, float] = {}
        for child in self._me.children():
            try:
                used = self._cpu_of(child)
                memory = child.memory_full_info()  # reads smaps: ~1 ms a node
            except psutil.NoSuchProcess:
                continue  # just killed
            rss += memory.rss
            pss += memory.pss
            seconds[child.pid] = used
            nodes_cpu += used - self._cpu_seconds.get(child.pid, 0.0)
        mine = self._cpu_of(self._me)
        bench_cpu = mine - self._my_cpu_seconds
        self._cpu_seconds, self._my_cpu_seconds, self._read_at = seconds, mine, now
        return Usage(
            len(seconds), rss, pss, 100 * nodes_cpu / period, 100 * bench_cpu / period
        )


def batches(numbers: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """
    The first node alone (every other joins through it), then groups of
    C{size}.
    """
    yield numbers[:1]
    for start in range(1, len(numbers), size):
        yield numbers[start : start + size]


class Soak:
    """
    One soak run; L{run} does it all, L{rows} tells what was measured (so
    far, when the run failed).
    """

    def __init__(self, processes: harness.Processes, args: argparse.Namespace) -> None:
        self.processes = processes
        self.reactor = processes.reactor
        self.sites = harness.StatusSites(
            self.reactor, timeout=FETCH_TIMEOUT, concurrency=FETCH_CONCURRENCY
        )
        self.size: int = args.nodes
        self.duration: float = args.minutes * 60
        self.batch: int = args.batch
        self.config = GossipConfig.lan()
        self.bound = worst_case_detection(self.config, self.size)
        self.log_dir = tempfile.mkdtemp(prefix="soak-")
        self.seeds: int = args.seeds
        self.kill_count: int = args.kills
        self.nodes: list[harness.Child] = []  # in the order they were spawned
        self.started_at: dict[str, float] = {}
        self.killed: set[str] = set()
        self.kills: list[Kill] = []
        self.samples: list[Sample] = []
        # Never-killed members some node listed dead (name -> the first
        # node seen listing it), and those listed suspect.
        self.falsely_dead: dict[str, str] = {}
        self.falsely_suspect: set[str] = set()
        self.member_events: dict[str, MemberEvents] = {}
        self.worst_health_score = 0
        self.memory_before = psutil.virtual_memory().used
        self.start_began: float | None = None
        self.start_seconds: float | None = None
        self.start_cpu_percent: float | None = None
        self.convergence: float | None = None
        self.soak_began: float | None = None
        self.soak_seconds: float | None = None
        self._next_sample = math.inf
        self._meter: ProcessMeter | None = None

    # --- plumbing ---

    def _spawn(self, number: int) -> harness.Child:
        """
        Start node C{number}: the seeds join the seeds spawned before them,
        every other node all the seeds.  Ports are picked now, not ahead,
        so that nothing else takes them in between.
        """
        seeds = [node.gossip_address for node in self.nodes[: self.seeds]]
        join = ["--join-addresses", ",".join(seeds)] if seeds else []
        name = f"node-{number:03d}"
        node = LocalNode(
            self.reactor,
            name,
            ["--profile", PROFILE, *join],
            log_path=os.path.join(self.log_dir, f"{name}.log"),
        )
        child = self.processes.node(node)
        self.nodes.append(child)
        return child

    async def _view(self, node: harness.Child) -> View | None:
        status = await self.sites.cluster(node)
        if status is None:
            return None
        members = {member["name"]: member["state"] for member in status["members"]}
        return View(time.monotonic(), members, status["self"]["healthScore"])

    async def _views(self, nodes: Sequence[harness.Child]) -> dict[harness.Child, View]:
        """
        The member tables of C{nodes} (those that answered), fetched
        concurrently; every table is checked for false deaths.
        """
        results = await harness.gather(self._view(node) for node in nodes)
        views = {
            node: view
            for node, view in zip(nodes, results, strict=True)
            if view is not None
        }
        for viewer, view in views.items():
            self.worst_health_score = max(self.worst_health_score, view.health_score)
            for member, state in view.members.items():
                if member in self.killed:
                    continue
                if state in DEAD_STATES:
                    self.falsely_dead.setdefault(member, viewer.name)
                elif state == "suspect":
                    self.falsely_suspect.add(member)
        return views

    async def _read_member_events(self, nodes: Sequence[harness.Child]) -> None:
        kills_begun = len(self.kills)

        async def read(node: harness.Child) -> None:
            samples = await self.sites.metrics(node)
            if samples is not None:
                counts = harness.by_label(samples, harness.MEMBER_EVENTS, "event")
                self.member_events[node.name] = MemberEvents(counts, kills_begun)

        await harness.gather(read(node) for node in nodes)

    def _alive_nodes(self) -> list[harness.Child]:
        return [node for node in self.nodes if node.name not in self.killed]

    # --- the run ---

    async def run(self) -> None:
        await self._start()
        await self._converge()
        await self._soak()

    async def _start(self) -> None:
        harness.progress(
            f"starting {self.size} nodes on 127.0.0.1 in batches of {self.batch} "
            f"(logs in {self.log_dir})"
        )
        psutil.cpu_percent(None)  # from now on
        self.start_began = time.monotonic()
        report_at = 20
        for batch in batches(range(1, self.size + 1), self.batch):
            spawned = [self._spawn(number) for number in batch]
            await harness.gather(self._wait_started(node) for node in spawned)
            if len(self.started_at) >= report_at:
                elapsed = time.monotonic() - self.start_began
                harness.progress(
                    f"  {len(self.started_at)} answering after {elapsed:.1f} s"
                )
                report_at += 20
        self.start_seconds = max(self.started_at.values()) - self.start_began
        self.start_cpu_percent = psutil.cpu_percent(None)

    async def _wait_started(self, node: harness.Child) -> None:
        async def ready() -> bool:
            return await self.sites.get(node, "/-/ready") is not None

        await harness.Poller(self.processes, 0.1).until(
            ready,
            START_TIMEOUT,
            lambda: (
                f"{node.name}'s status site did not answer within "
                f"{START_TIMEOUT:.0f} s of its start"
            ),
        )
        self.started_at[node.name] = time.monotonic()

    async def _converge(self) -> None:
        """
        Poll the nodes not yet seen converged until none is left.
        """
        last_start = max(self.started_at.values())
        everyone = [node.name for node in self.nodes]

        async def converged(
            nodes: Sequence[harness.Child],
        ) -> dict[harness.Child, float]:
            return {
                node: view.answered
                for node, view in (await self._views(nodes)).items()
                if all(view.members.get(member) == "alive" for member in everyone)
            }

        converged_at = await harness.Poller(self.processes, POLL_INTERVAL).each(
            self.nodes,
            converged,
            CONVERGENCE_TIMEOUT,
            lambda late: (
                f"{len(late)} of {self.size} nodes did not list all "
                f"{self.size} alive within {CONVERGENCE_TIMEOUT:.0f} s of "
                f"the last start, e.g. {late[0].name}"
            ),
            started=last_start,
        )
        self.convergence = max(converged_at.values()) - last_start
        harness.progress(
            f"every node lists {self.size} alive {self.convergence:.2f} s after "
            "the last start"
        )

    async def _soak(self) -> None:
        # Victims evenly spread over the non-seed nodes.
        candidates = self.nodes[self.seeds :]
        victims = [
            candidates[(i + 1) * len(candidates) // (self.kill_count + 1)]
            for i in range(self.kill_count)
        ]
        began = self.soak_began = time.monotonic()
        spacing = self.duration / (self.kill_count + 1)
        planned = ", ".join(f"{spacing * i:.0f} s" for i in range(1, len(victims) + 1))
        harness.progress(
            f"soak: {self.duration:.0f} s"
            + (f", kills at {planned}" if planned else "")
        )
        psutil.cpu_percent(None)
        self._meter = ProcessMeter()
        self._next_sample = began + SAMPLE_INTERVAL
        for number, victim in enumerate(victims, 1):
            await self._idle_until(began + spacing * number)
            await self._kill(victim)
        await self._idle_until(began + self.duration)
        # The last word on false deaths: every kill is detected by now, so
        # each node's declared_dead counter must equal the kills.
        alive = self._alive_nodes()
        await self._views(alive)
        await self._read_member_events(alive)
        self.soak_seconds = time.monotonic() - began

    async def _idle_until(self, moment: float) -> None:
        while (now := time.monotonic()) < moment:
            self.processes.check()
            await harness.sleep(self.reactor, min(moment, self._next_sample) - now)
            await self._sample_when_due()

    async def _sample_when_due(self) -> None:
        if time.monotonic() >= self._next_sample:
            await self._sample()
            # On the 10 s grid, unless a slow sample overran it.
            self._next_sample = max(
                self._next_sample + SAMPLE_INTERVAL, time.monotonic() + 1.0
            )

    async def _sample(self) -> None:
        assert self._meter is not None and self.soak_began is not None
        elapsed = time.monotonic() - self.soak_began
        cpu = psutil.cpu_percent(None)
        memory = psutil.virtual_memory().used
        usage = self._meter.read()
        alive = self._alive_nodes()
        views = await self._views(alive)
        await self._read_member_events(alive)
        health = max((view.health_score for view in views.values()), default=None)
        sample = Sample(elapsed, cpu, memory, usage, health)
        self.samples.append(sample)
        false_declarations = sum(
            events.false_declarations for events in self.member_events.values()
        )
        harness.progress(
            f"  {elapsed:5.0f} s: machine CPU {cpu:5.1f} %, memory used "
            f"{memory / harness.MIB:7.0f} MiB; {usage.nodes_running} nodes: PSS "
            f"{usage.nodes_pss / harness.MIB:6.0f} MiB, "
            f"CPU {usage.nodes_cpu_percent:5.1f} % "
            f"of a core; bench CPU {usage.bench_cpu_percent:4.1f} %; "
            f"health score <= {health}; false deaths "
            f"{len(self.falsely_dead)} (declarations {false_declarations})"
        )

    async def _kill(self, victim: harness.Child) -> None:
        """
        SIGKILL C{victim}, then poll the survivors that still list it alive
        or suspect until none does.
        """
        await self._read_member_events([victim])  # its last word
        self.killed.add(victim.name)  # first: its death is no false one
        kill = Kill(victim.name, time.monotonic())
        self.kills.append(kill)
        self.processes.expect_exit(victim)
        victim.signal("KILL")
        harness.progress(f"kill {len(self.kills)}: SIGKILL {victim.name}")

        async def dead_to(nodes: Sequence[harness.Child]) -> dict[harness.Child, float]:
            views = await self._views(nodes)
            await self._sample_when_due()
            return {
                node: view.answered
                for node, view in views.items()
                if view.members.get(victim.name) in (None, *DEAD_STATES)
            }

        seen_at = await harness.Poller(self.processes, POLL_INTERVAL).each(
            self._alive_nodes(),
            dead_to,
            self.bound,
            lambda late: (
                f"{len(late)} survivors still listed {victim.name} alive "
                f"or suspect {self.bound:.1f} s after its SIGKILL (the worst-case "
                f"bound), e.g. {late[0].name}"
            ),
            started=kill.killed_at,
        )
        kill.detected_after = max(seen_at.values()) - kill.killed_at
        kill.first_detected_after = min(seen_at.values()) - kill.killed_at
        harness.progress(
            f"kill {len(self.kills)}: every survivor lists {victim.name} dead after "
            f"{kill.detected_after:.2f} s (the first after "
            f"{kill.first_detected_after:.2f} s)"
        )

    # --- the results ---

    def rows(self) -> list[Row]:
        size, started = self.size, len(self.started_at)
        false_declarations = sum(
            events.false_declarations for events in self.member_events.values()
        )
        refuted = sum(
            events.counts.get("refuted", 0) for events in self.member_events.values()
        )
        rows = [
            judged(
                "nodes started (status site answering)",
                started,
                "",
                f"{size}",
                started == size,
            ),
            Row(
                "start-up: first spawn to last node answering", self.start_seconds, "s"
            ),
            Row(
                f"machine CPU during start-up (100 % = {psutil.cpu_count()} cores)",
                self.start_cpu_percent,
                "%",
            ),
            judged(
                "convergence: last start to all list all alive",
                self.convergence,
                "s",
                f"<= {CONVERGENCE_TARGET:.0f} s",
                at_most(self.convergence, CONVERGENCE_TARGET),
            ),
            judged(
                "soak duration",
                self.soak_seconds,
                "s",
                f">= {self.duration:.0f} s",
                self.soak_seconds is not None and self.soak_seconds >= self.duration,
            ),
            judged(
                "false deaths: never-killed members listed dead",
                len(self.falsely_dead),
                "",
                "0",
                not self.falsely_dead,
            ),
            judged(
                "false deaths: surplus declared_dead (all nodes)",
                false_declarations,
                "",
                "0",
                false_declarations == 0,
            ),
            Row("false suspicions: members listed suspect", len(self.falsely_suspect)),
            Row("false suspicions: refuted (all nodes)", int(refuted)),
        ]
        bound = f"<= {self.bound:.1f} s"
        for number, kill in enumerate(self.kills, 1):
            rows.append(
                judged(
                    f"kill {number} ({kill.victim}): all survivors list it dead",
                    kill.detected_after,
                    "s",
                    bound,
                    at_most(kill.detected_after, self.bound),
                )
            )
        if self.kill_count:
            detected = [
                kill.detected_after
                for kill in self.kills
                if kill.detected_after is not None
            ]
            # Undetected or not yet done kills leave no figure: a miss.
            complete = len(detected) == self.kill_count
            p50 = statistics.median(detected) if complete else None
            worst = max(detected) if complete else None
            for metric, value in [("p50", p50), ("max", worst)]:
                rows.append(
                    judged(
                        f"kill detection {metric}",
                        value,
                        "s",
                        bound,
                        at_most(value, self.bound),
                    )
                )
        rows.extend(self._machine_rows())
        stopped = self.processes.last_stop
        killed = None if stopped is None else stopped.killed
        rows.append(
            Row(
                "graceful stop: SIGTERM to all exited",
                None if stopped is None else stopped.seconds,
                "s",
            )
        )
        rows.append(
            judged("nodes SIGKILLed after the stop grace", killed, "", "0", killed == 0)
        )
        return rows

    def _machine_rows(self) -> list[Row]:
        if not self.samples:
            return [Row("machine samples during the soak", 0)]
        usages = [sample.usage for sample in self.samples]
        cpu = [sample.machine_cpu_percent for sample in self.samples]
        memory = max(sample.machine_memory_used for sample in self.samples)

        def per_node(total: float, usage: Usage) -> float:
            return total / max(usage.nodes_running, 1)

        cores = f"100 % = {psutil.cpu_count()} cores"
        return [
            Row(f"machine CPU, soak mean ({cores})", statistics.mean(cpu), "%"),
            Row(f"machine CPU, soak max of 10 s samples ({cores})", max(cpu), "%"),
            Row(
                "machine memory used before start",
                self.memory_before // harness.MIB,
                "MiB",
            ),
            Row("machine memory used, soak max", memory // harness.MIB, "MiB"),
            Row(
                "nodes' RSS summed, soak max",
                max(u.nodes_rss for u in usages) // harness.MIB,
                "MiB",
            ),
            Row(
                "nodes' PSS summed, soak max",
                max(u.nodes_pss for u in usages) // harness.MIB,
                "MiB",
            ),
            Row(
                "nodes' RSS per node, soak mean",
                statistics.mean(per_node(u.nodes_rss, u) for u in usages) / harness.MIB,
                "MiB",
            ),
            Row(
                "nodes' PSS per node, soak mean",
                statistics.mean(per_node(u.nodes_pss, u) for u in usages) / harness.MIB,
                "MiB",
            ),
            Row(
                "nodes' CPU summed, soak mean (% of a core)",
                statistics.mean(u.nodes_cpu_percent for u in usages),
                "%",
            ),
            Row(
                "nodes' CPU per node, soak mean (% of a core)",
                statistics.mean(per_node(u.nodes_cpu_percent, u) for u in usages),
                "%",
            ),
            Row(
                "bench's own CPU, soak mean (% of a core)",
                statistics.mean(u.bench_cpu_percent for u in usages),
                "%",
            ),
            Row("worst Lifeguard health score, any poll", self.worst_health_score),
        ]

    def to_json(self, rows: Sequence[Row], failure: str | None) -> dict[str, object]:
        return {
            "nodes": self.size,
            "profile": PROFILE,
            "failure": failure,
            "rows": [row.to_json() for row in rows],
            "kills": [kill.to_json() for kill in self.kills],
            "falsely_dead": self.falsely_dead,
            "samples": [sample.to_json() for sample in self.samples],
        }


def table_lines(rows: Sequence[Row]) -> list[str]:
    cells = [[row.metric, row.shown_value(), row.target, row.verdict] for row in rows]
    table = harness.Table.fitting(
        ["metric", "value", "target", ""], cells, aligns="<><<", separator="  "
    )
    return table.lines(cells)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    options = harness.parser(__file__, __doc__)
    harness.add_options(
        options,
        [
            ("--nodes", harness.at_least(2), 100, "default 100"),
            ("--minutes", minutes, 5.0, "default 5"),
            ("--kills", harness.at_least(0), 3, "nodes SIGKILLed during the soak"),
            (
                "--seeds",
                harness.at_least(1),
                None,
                "how many of the first nodes the others join through (default 3)",
            ),
            ("--batch", harness.at_least(1), 4, "nodes started together (default 4)"),
        ],
    )
    options.add_argument(
        "--keep-logs", action="store_true", help="keep the nodes' logs after success"
    )
    args = options.parse_args(argv)
    if args.seeds is None:
        args.seeds = min(3, args.nodes)
    elif args.seeds > args.nodes:
        options.error(f"--seeds: 1 to --nodes ({args.nodes})")
    if args.kills > args.nodes - args.seeds:
        options.error(
            f"--kills: 0 to {args.nodes - args.seeds} (seeds are never killed)"
        )
    return args


def minutes(text: str) -> float:
    """
    An argument type: a positive number of minutes.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


async def soak_main(reactor: IReactorTime, args: argparse.Namespace) -> None:
    processes = harness.Processes(reactor)
    soak = Soak(processes, args)
    failure: str | None = None
    try:
        await harness.supervised(processes, soak.run(), STOP_GRACE)
    except harness.Interrupted:
        failure = "interrupted"
    except harness.RunFailed as e:
        failure = str(e)
    rows = soak.rows()
    print("\n".join(table_lines(rows)))
    harness.write_json(args.json, soak.to_json(rows, failure))
    if failure is None:
        if args.keep_logs:
            harness.progress(f"node logs kept in {soak.log_dir}")
        else:
            shutil.rmtree(soak.log_dir, ignore_errors=True)
        return
    harness.exit_failed(
        f"{failure} (node logs kept in {soak.log_dir})",
        130 if processes.interrupted else 1,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    harness.react(lambda reactor: soak_main(reactor, args))


if __name__ == "__main__":
    main()
