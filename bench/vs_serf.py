"""
Our cluster node against Debian's C{serf} agent (Go memberlist), measured
in the same run on this machine.

    python bench/vs_serf.py [--nodes 20] [--kills 5] [--idle-seconds 30]
        [--observers 5] [--load] [--json out.json] [--plot out.png]

It starts N C{clusternode --profile lan} processes (ours) and N
C{serf agent} processes (serf, whose default profile is LAN: the same
memberlist timings) as two separate clusters on 127.0.0.1, each joined
through its first node, and measures them in turns, so that both see the
same machine:

  - join convergence: from starting the last node (the Nth, then each
    replacement of a killed node) until every sampled observer lists it
    alive; and, to tell interpreter start-up apart, until the new node
    itself first answers its status API (start-up);
  - failure detection: SIGKILL a node, then the time until every sampled
    observer lists it dead (ours) or failed (serf); C{--kills} times;
  - graceful leave: the time until every sampled observer lists the node
    I{left}.  Ours gets SIGTERM (clusternode stops the service: the node
    announces I{terminating}, leaves, exits); serf gets SIGINT, the
    agent's graceful path (it leaves, then exits; on SIGTERM it would
    just exit, as C{leave_on_terminate} is off by default);
  - idle CPU per node (percent of one core, over C{--idle-seconds} with
    no polling, both clusters over the same window) and RSS per node,
    beside the RSS of a bare Python process that imported Twisted's
    reactor (the baseline);
  - gossip bytes sent and received per node per second over the idle
    window: ours from each node's C{/metrics}
    (C{cluster_transport_*_bytes_total}, datagrams and streams); serf's
    from memberlist's counters in the agent's in-memory metrics, which it
    writes to its log on SIGUSR1 in whole 10 s intervals (so only with
    C{--idle-seconds} of 20 or more; memberlist counts no stream bytes
    received, taken as equal to those sent across the cluster);
  - false deaths: members declared dead or failed that were never killed,
    from the observers' listings and from every node's log (the member
    whose suspicion timer runs out logs C{X failed: no ack for} in ours,
    C{Marking X as failed} in memberlist, so no declaration escapes).

The sampled observers are the first C{--observers} nodes (never killed):
polling every node would load the machine more than the gossip does.
Ours are read over HTTP (C{/api/v0/web/cluster}, one kept-alive
connection each), serf's over its msgpack RPC (C{members}, one connection
each; running C{serf members} per poll would cost a Go process start).

Prints one table (metric, ours, serf, ours/serf) and the targets, met or
missed: detection p50 ratio <= 1.0, join p50 ratio <= 1.0, leave ratio
<= 1.0, idle CPU ratio <= 0.7, our RSS within 8 MiB of the reactor
baseline, no false deaths of ours.  A missed target is not a failure; a
failed run exits 1: a node exits unexpectedly, the clusters never form,
or a join, kill or leave is not seen within the worst case computed from
the LAN configuration.  C{--load} keeps one core busy (a C{while 1: pass}
child) for the whole run.  C{--plot} needs matplotlib.  Needs C{serf} on
PATH; only loopback is used, and only the processes started here are
signalled (by PID), all of them killed on the way out.
"""

from __future__ import annotations

import abc
import argparse
import importlib.util
import os
import re
import shutil
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import msgpack
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _harness as harness
from cluster.alloy.service import TERMINATING_TIMEOUT
from cluster.ckit.node import LEAVE_TIMEOUT
from cluster.daemon.demo import LocalNode
from cluster.gossip import GossipConfig
from cluster.gossip.loops import push_pull_scale
from cluster.gossip.suspicion import worst_case_detection
from cluster.testing import free_loopback_port

LAN = GossipConfig.lan()
POLL_INTERVAL = 0.1  # seconds between polls of the observers
BUILD_POLL_INTERVAL = 0.5  # polls of every node while the clusters form
START_CPU = 1.0  # CPU seconds one of our nodes takes to start, roughly
SETTLE = 5.0  # after the joins, before the idle window: broadcasts drain
EXIT_WAIT = 15.0  # a leaving process gets this long to exit
RPC_TIMEOUT = 5.0
RSS_MARGIN_MIB = 8.0
# Logged by the member whose suspicion timer runs out, in our memberlist
# ("x failed: no ack for 4.0 s, ...") and Go's ("Marking x as failed"):
# every death declared in a cluster starts with one such line.
MARKED_FAILED = re.compile(r"(?<=Marking )\S+(?= as failed)|\S+(?= failed: no ack for)")
ALIVE, LEFT = "alive", "left"
# serf's agent keeps go-metrics in memory, in 10 s intervals aligned on the
# clock, and writes the finished ones to its log on SIGUSR1, a line per
# metric and interval.  memberlist counts the bytes of each datagram sent
# and received, and of each stream message sent.
SERF_INTERVAL = 10.0
SERF_METRIC = re.compile(
    r"^\[(?P<start>[\d-]+ [\d:]+ [+-]\d{4})[^\]]*\]\[[A-Z]\] "
    r"(?:'serf-agent\.memberlist\.(?P<counter>udp\.sent|udp\.received|tcp\.sent)'"
    r": .*? Sum: (?P<sum>[\d.]+))?",
    re.MULTILINE,
)


# --- the members ---------------------------------------------------------


class Member(abc.ABC):
    """
    One member process of either cluster.

    @ivar name: its node name.
    @ivar child: its process, once started.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.child: harness.Child | None = None

    @property
    @abc.abstractmethod
    def gossip_address(self) -> str:
        """
        C{127.0.0.1:port} it gossips on.
        """

    @abc.abstractmethod
    def process(self, seed: Member | None) -> harness.Child:
        """
        The process that runs it, joining C{seed} if given.
        """

    @abc.abstractmethod
    async def members(self) -> dict[str, str] | None:
        """
        Member name to state, as this member lists them; C{None} when it
        does not answer.
        """

    @abc.abstractmethod
    def leave(self) -> None:
        """
        Ask the process to leave the cluster gracefully, then exit.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """
        Close any connection kept open to it.
        """

    def start(self, processes: harness.Processes, seed: Member | None) -> None:
        self.child = processes.start(self.process(seed))

    @property
    def started(self) -> harness.Child:
        assert self.child is not None, f"{self.name} was never started"
        return self.child

    @property
    def pid(self) -> int:
        assert self.started.pid is not None
        return self.started.pid

    def log(self) -> str:
        return self.started.output


class OurNode(Member):
    """
    A C{clusternode --profile lan} process (the command line of
    L{cluster.daemon.demo.LocalNode}), read over its HTTP status API.
    """

    def __init__(
        self, reactor: IReactorTime, name: str, sites: harness.StatusSites
    ) -> None:
        super().__init__(name)
        self.local = LocalNode(reactor, name)
        self.sites = sites

    @property
    def gossip_address(self) -> str:
        return self.local.gossip_address

    def process(self, seed: Member | None) -> harness.Child:
        self.local.args = ["--profile", "lan"]
        if seed is not None:
            self.local.args += ["--join-addresses", seed.gossip_address]
        return harness.Child.of(self.local)

    async def members(self) -> dict[str, str] | None:
        status = await self.sites.cluster(self.started)
        if status is None:
            return None
        return {m["name"]: m["state"] for m in status["members"]}

    def leave(self) -> None:
        self.started.signal("TERM")

    def close(self) -> None:
        pass  # its connection is in the pool of L{StatusSites}, closed at the end

    async def gossip_bytes(self) -> tuple[float, float] | None:
        """
        Gossip bytes (datagrams and streams) sent and received so far.
        """
        samples = await self.sites.metrics(self.started)
        if samples is None:
            return None
        totals = harness.metric_totals(samples)
        sent = totals.get("cluster_transport_tx_bytes_total", 0.0) + totals.get(
            "cluster_transport_stream_tx_bytes_total", 0.0
        )
        received = totals.get("cluster_transport_rx_bytes_total", 0.0) + totals.get(
            "cluster_transport_stream_rx_bytes_total", 0.0
        )
        return sent, received


class _MsgpackStream(Protocol):
    """
    A connection that carries msgpack objects, both ways.
    """

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="replace")
        self._received: deque[Any] = deque()
        self._waiting: deque[Deferred[Any]] = deque()
        self._lost = False

    def dataReceived(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for item in self._unpacker:
            self._received.append(item)
        while self._received and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.called:  # not given up on
                waiter.callback(self._received.popleft())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.called:
                waiter.errback(ConnectionError("serf closed the RPC connection"))

    def send(self, *items: object) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(msgpack.packb(item) for item in items))

    def receive(self) -> Deferred[Any]:
        """
        The next object that arrives.
        """
        if self._received:
            return succeed(self._received.popleft())
        if self._lost:
            return fail(ConnectionError("serf closed the RPC connection"))
        waiter: Deferred[Any] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


@attrs.define(eq=False)
class SerfRPC:
    """
    A client of one serf agent's msgpack RPC, on one kept-open connection.
    """

    reactor: IReactorTime
    address: tuple[str, int]
    _stream: _MsgpackStream | None = None
    _seq: int = 0

    async def _receive(self, stream: _MsgpackStream) -> Any:
        return await stream.receive().addTimeout(RPC_TIMEOUT, self.reactor)

    async def _call(
        self, stream: _MsgpackStream, command: str, body: object = None
    ) -> None:
        """
        Send C{command} and read the header of its answer.
        """
        self._seq += 1
        header = {"Command": command, "Seq": self._seq}
        stream.send(header, *([] if body is None else [body]))
        answer = await self._receive(stream)
        if answer.get("Seq") != self._seq or answer.get("Error"):
            raise ConnectionError(f"serf RPC answered {answer!r}")

    async def members(self) -> dict[str, str] | None:
        """
        Member name to serf status (alive, leaving, left, failed), or
        C{None} when the agent does not answer.
        """
        try:
            if self._stream is None:
                host, port = self.address
                endpoint = TCP4ClientEndpoint(self.reactor, host, port, RPC_TIMEOUT)
                self._stream = await connectProtocol(endpoint, _MsgpackStream())
                await self._call(self._stream, "handshake", {"Version": 1})
            await self._call(self._stream, "members")
            body = await self._receive(self._stream)
            return {m["Name"]: m["Status"] for m in body["Members"]}
        except CancelledError:
            raise  # the run is being stopped (a timeout is a TimeoutError)
        except Exception:
            self.close()
            return None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class SerfAgent(Member):
    """
    A C{serf agent} process (LAN profile, the default), read over its RPC.
    """

    def __init__(self, reactor: IReactorTime, name: str, serf: str) -> None:
        super().__init__(name)
        self.reactor = reactor
        self.serf = serf
        self.port = free_loopback_port()
        self.rpc = SerfRPC(reactor, ("127.0.0.1", free_loopback_port()))

    @property
    def gossip_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def process(self, seed: Member | None) -> harness.Child:
        host, port = self.rpc.address
        return harness.Child(
            self.name,
            [
                self.serf,
                "agent",
                f"-node={self.name}",
                f"-bind={self.gossip_address}",
                f"-rpc-addr={host}:{port}",
                *([f"-join={seed.gossip_address}"] if seed is not None else []),
            ],
        )

    async def members(self) -> dict[str, str] | None:
        return await self.rpc.members()

    def leave(self) -> None:
        self.started.signal("INT")

    def close(self) -> None:
        self.rpc.close()

    def dump_metrics(self) -> int:
        """
        Ask the agent to write its in-memory metrics to its log (SIGUSR1).

        @return: the length of the log before, where the dump will start.
        """
        offset = len(self.log())
        self.started.signal("USR1")
        return offset

    async def read_metrics(
        self, offset: int, timeout: float = 5.0
    ) -> dict[float, dict[str, float]] | None:
        """
        The memberlist byte counters in the dump written after C{offset}:
        the start of each whole interval (Unix time) to counter name
        (C{udp.sent}, C{udp.received}, C{tcp.sent}) to bytes; C{None} when
        no dump came within C{timeout} seconds.
        """
        # Every interval has runtime gauges, and the dump is one write.
        if not await harness.wait_until(
            self.reactor, lambda: "][G] " in self.log()[offset:], timeout, 0.05
        ):
            return None
        intervals: dict[float, dict[str, float]] = {}
        for match in SERF_METRIC.finditer(self.log()[offset:]):
            start = datetime.strptime(match["start"], "%Y-%m-%d %H:%M:%S %z")
            counters = intervals.setdefault(start.timestamp(), {})
            if match["counter"] is not None:
                counters[match["counter"]] = float(match["sum"])
        return intervals


# --- one cluster ---------------------------------------------------------


@attrs.define
class Samples:
    """
    What was measured on one side.
    """

    join: list[float] = attrs.field(factory=list)
    startup: list[float] = attrs.field(factory=list)
    detection: list[float] = attrs.field(factory=list)
    leave: list[float] = attrs.field(factory=list)
    idle_cpu_percent: float | None = None
    rss_mib: float | None = None
    bytes_sent_per_node_per_s: float | None = None
    bytes_received_per_node_per_s: float | None = None
    false_deaths: set[str] = attrs.field(factory=set)


@attrs.define
class Cluster:
    """
    One side: its member processes and what is known of them.

    @ivar label: C{ours} or C{serf}.
    @ivar new_member: makes the member process with this name (unstarted).
    @ivar dead_state: how a member lists a dead one (dead, failed).
    @ivar observer_count: how many of the first members are polled.
    """

    label: str
    new_member: Callable[[str], Member]
    dead_state: str
    observer_count: int
    processes: harness.Processes
    members: list[Member] = attrs.field(factory=list)
    killed: set[str] = attrs.field(factory=set)
    stopped: set[str] = attrs.field(factory=set)
    samples: Samples = attrs.field(factory=Samples)

    def add(self) -> Member:
        """
        Start one more member, joining the first.
        """
        member = self.new_member(f"{self.label}-{len(self.members):02d}")
        member.start(self.processes, self.members[0] if self.members else None)
        self.members.append(member)
        return member

    def survivors(self) -> list[Member]:
        return [m for m in self.members if m.name not in self.stopped]

    def observers(self) -> list[Member]:
        # The first members: never chosen to die (see next_victim).
        return self.members[: self.observer_count]

    def next_victim(self) -> Member:
        """
        The longest-running survivor that is not an observer.
        """
        observers = {m.name for m in self.observers()}
        for member in self.survivors():
            if member.name not in observers:
                return member
        raise harness.RunFailed(f"{self.label}: no member left to stop")

    def stop(self, member: Member) -> None:
        """
        C{member} is about to be killed or to leave: its exit is no failure.
        """
        self.stopped.add(member.name)
        self.processes.expect_exit(member.started)

    async def listing(self, member: Member) -> dict[str, str] | None:
        """
        C{member}'s list of members, noting any it calls dead that was
        never killed.
        """
        listed = await member.members()
        for name, state in (listed or {}).items():
            if state == self.dead_state and name not in self.killed:
                self.false_death(name, f"{member.name} lists it {state}")
        return listed

    def false_death(self, name: str, evidence: str) -> None:
        if name not in self.samples.false_deaths:
            self.samples.false_deaths.add(name)
            harness.progress(f"{self.label}: false death of {name}: {evidence}")

    async def poll_until(
        self,
        watchers: Sequence[Member],
        done: Callable[[Mapping[str, str]], bool],
        started: float,
        bound: float,
        what: str,
    ) -> dict[str, float]:
        """
        Poll each of C{watchers} until its listing is C{done}.

        @return: each watcher's name to the seconds from C{started} at
            which its listing was first seen done.
        @raise RunFailed: when that takes more than C{bound} seconds.
        """

        async def seen(pending: Sequence[Member]) -> dict[Member, float]:
            listings = await harness.gather(
                self.listing(watcher) for watcher in pending
            )
            now = time.monotonic()
            return {
                watcher: now
                for watcher, listed in zip(pending, listings, strict=True)
                if listed is not None and done(listed)
            }

        first = await harness.Poller(self.processes, POLL_INTERVAL).each(
            watchers,
            seen,
            bound,
            lambda late: (
                f"{self.label}: {what}: not seen by "
                f"{', '.join(w.name for w in late)} within {bound:.0f} s"
            ),
            started,
        )
        return {watcher.name: at - started for watcher, at in first.items()}

    async def start(self, size: int, bound: float) -> None:
        """
        Start C{size} members, the first alone and the rest joining it, and
        wait until every one lists every other alive.
        """
        started = time.monotonic()
        seed = self.add()
        # The seed answering first: a node that finds no seed to join
        # bootstraps alone (ours) or exits (serf's -join).
        await self.poll_until([seed], lambda _: True, started, bound, "the seed starts")
        for _ in range(size - 1):
            self.add()
        names = {m.name for m in self.members}

        async def everyone_alive() -> bool:
            # Every member, not only the observers: the clusters start whole.
            listings = await harness.gather(self.listing(m) for m in self.members)
            return all(
                all((listed or {}).get(name) == ALIVE for name in names)
                for listed in listings
            )

        await harness.Poller(self.processes, BUILD_POLL_INTERVAL).until(
            everyone_alive,
            bound,
            lambda: (
                f"{self.label}: the first {size} members did not all list "
                f"each other alive within {bound:.0f} s"
            ),
            started,
        )
        harness.progress(f"{self.label}: {size} members formed a cluster")

    async def measure_join(self, bound: float) -> None:
        """
        Start one more member: how long until it answers (start-up) and
        until every observer lists it alive.
        """
        started = time.monotonic()
        joiner = self.add()
        seen = await self.poll_until(
            [*self.observers(), joiner],
            lambda listed: listed.get(joiner.name) == ALIVE,
            started,
            bound,
            f"{joiner.name} joining",
        )
        startup = seen.pop(joiner.name)
        self.samples.startup.append(startup)
        self.samples.join.append(max(seen.values()))
        harness.progress(
            f"{self.label}: {joiner.name} answered after {startup:.2f} s, "
            f"alive at every observer after {max(seen.values()):.2f} s"
        )

    async def measure_kill(self, bound: float) -> None:
        """
        SIGKILL a member: how long until every observer lists it dead.
        """
        victim = self.next_victim()
        self.killed.add(victim.name)
        self.stop(victim)
        started = time.monotonic()
        victim.started.signal("KILL")
        seen = await self.poll_until(
            self.observers(),
            lambda listed: listed.get(victim.name) == self.dead_state,
            started,
            bound,
            f"{victim.name} killed",
        )
        self.samples.detection.append(max(seen.values()))
        await self.processes.wait_exit(victim.started, EXIT_WAIT)
        harness.progress(
            f"{self.label}: {victim.name} killed, {self.dead_state} at every "
            f"observer after {max(seen.values()):.2f} s"
        )

    async def measure_leave(self, bound: float) -> None:
        """
        Ask a member to leave: how long until every observer lists it left.
        """
        leaver = self.next_victim()
        # Every member must know it first: one that hears of it only after
        # its leave takes stale gossip of it for news, then finds it gone
        # and declares it failed (likely when it joined seconds ago).
        await self.poll_until(
            self.survivors(),
            lambda listed: listed.get(leaver.name) == ALIVE,
            time.monotonic(),
            bound,
            f"{leaver.name} known to every member before it leaves",
        )
        self.stop(leaver)
        started = time.monotonic()
        leaver.leave()
        seen = await self.poll_until(
            self.observers(),
            lambda listed: listed.get(leaver.name) == LEFT,
            started,
            bound,
            f"{leaver.name} leaving",
        )
        self.samples.leave.append(max(seen.values()))
        exited = await self.processes.wait_exit(leaver.started, EXIT_WAIT)
        harness.progress(
            f"{self.label}: {leaver.name} left, listed left at every observer "
            f"after {max(seen.values()):.2f} s"
            + ("" if exited else f" (it did not exit within {EXIT_WAIT:.0f} s)")
        )

    def count_false_deaths(self) -> None:
        """
        Add every member any log says was marked failed and was never
        killed (a false death that was refuted shows only there).
        """
        for member in self.members:
            for name in MARKED_FAILED.findall(member.log()):
                if name not in self.killed:
                    self.false_death(name, f"{member.name} marked it failed")

    def close(self) -> None:
        for member in self.members:
            member.close()


# --- the run -------------------------------------------------------------


@attrs.frozen
class Bounds:
    """
    Worst cases, in seconds, from the LAN configuration: past one, the run
    fails.

    @ivar build: the first N members start and list each other alive.
    @ivar join: a new member starts and every observer lists it alive.
    @ivar detection: a killed member is listed dead by every observer.
    @ivar leave: a leaving member is listed left by every observer.
    """

    build: float
    join: float
    detection: float
    leave: float

    @classmethod
    def for_run(cls, nodes: int, kills: int) -> Bounds:
        # Killed members stay listed until reaped, and count in the
        # suspicion timeout's log10 scaling: up to nodes + kills of them.
        members = nodes + kills
        # A change that gossip missed arrives with the next push/pull.
        spread = push_pull_scale(LAN.push_pull_interval, members) + LAN.tcp_timeout
        return cls(
            # Cold starts share the cores: about START_CPU each.
            build=harness.STARTUP + nodes * START_CPU + spread,
            join=harness.STARTUP + spread,
            detection=worst_case_detection(LAN, members) + spread,
            # Ours announces terminating, then leaves, each bounded.
            leave=TERMINATING_TIMEOUT + LEAVE_TIMEOUT + spread,
        )

    def whole_run(self, kills: int, idle_seconds: float) -> float:
        """
        The longest a run can take before it fails: every step at its
        bound, on both sides.
        """
        per_side = (
            self.build
            + (kills + 1) * self.join
            + kills * (self.detection + EXIT_WAIT)
            + self.leave
            + EXIT_WAIT
        )
        return 2 * per_side + SETTLE + idle_seconds


async def measure_idle(
    reactor: IReactorTime, clusters: Sequence[Cluster], seconds: float, baseline: int
) -> float:
    """
    CPU and RSS per member of each cluster over the same quiet window
    (nothing polls them), and gossip bytes per member over it.

    @return: the RSS of the C{baseline} process, in MiB.
    """
    await harness.sleep(reactor, SETTLE)
    members = [m for c in clusters for m in c.survivors()]
    ours = [m for m in members if isinstance(m, OurNode)]
    agents = [m for m in members if isinstance(m, SerfAgent)]
    # Scraping costs CPU: before and after the CPU window, not in it.
    ours_before = dict(
        zip(ours, await harness.gather(m.gossip_bytes() for m in ours), strict=True)
    )
    ours_started = time.monotonic()
    window_start = time.time()
    cpu_before = {m.name: harness.cpu_seconds(m.pid) for m in members}
    await harness.sleep(reactor, seconds)
    cpu_after = {m.name: harness.cpu_seconds(m.pid) for m in members}
    window_end = time.time()
    rss = {m.name: harness.rss_mib(m.pid) for m in members}
    baseline_rss = harness.rss_mib(baseline)
    ours_after = dict(
        zip(ours, await harness.gather(m.gossip_bytes() for m in ours), strict=True)
    )
    ours_seconds = time.monotonic() - ours_started
    # Member name to (sent, received) gossip bytes per second.
    rates: dict[str, tuple[float, float]] = {}
    for member, before in ours_before.items():
        after = ours_after[member]
        if before is not None and after is not None:
            rates[member.name] = (
                (after[0] - before[0]) / ours_seconds,
                (after[1] - before[1]) / ours_seconds,
            )
    rates.update(await serf_byte_rates(agents, window_start, window_end))
    for cluster in clusters:
        names = [m.name for m in cluster.survivors()]
        used = sum(cpu_after[name] - cpu_before[name] for name in names)
        cluster.samples.idle_cpu_percent = 100 * used / len(names) / seconds
        cluster.samples.rss_mib = sum(rss[name] for name in names) / len(names)
        counted = [rates[name] for name in names if name in rates]
        if counted:
            cluster.samples.bytes_sent_per_node_per_s = sum(
                sent for sent, _ in counted
            ) / len(counted)
            cluster.samples.bytes_received_per_node_per_s = sum(
                received for _, received in counted
            ) / len(counted)
    harness.progress(f"idle window of {seconds:g} s measured")
    return baseline_rss


async def serf_byte_rates(
    agents: Sequence[SerfAgent], window_start: float, window_end: float
) -> dict[str, tuple[float, float]]:
    """
    Each agent's gossip bytes (sent, received) per second over the whole
    metrics intervals that lie inside the window (Unix times); none when
    the window holds no whole interval (it needs 2 * SERF_INTERVAL).
    """
    offsets = [agent.dump_metrics() for agent in agents]
    dumps = await harness.gather(
        agent.read_metrics(offset)
        for agent, offset in zip(agents, offsets, strict=True)
    )
    rates = {}
    for agent, intervals in zip(agents, dumps, strict=True):
        inside = [
            counters
            for start, counters in (intervals or {}).items()
            if start >= window_start and start + SERF_INTERVAL <= window_end
        ]
        if not inside:
            continue
        seconds = len(inside) * SERF_INTERVAL
        tcp_sent = sum(c.get("tcp.sent", 0.0) for c in inside)
        udp_sent = sum(c.get("udp.sent", 0.0) for c in inside)
        udp_received = sum(c.get("udp.received", 0.0) for c in inside)
        # memberlist counts no stream bytes received; but every stream
        # runs between two members of the cluster, so across it as many
        # stream bytes are received as sent, and the mean per member is
        # right.
        rates[agent.name] = (
            (udp_sent + tcp_sent) / seconds,
            (udp_received + tcp_sent) / seconds,
        )
    return rates


async def start_baseline(processes: harness.Processes) -> harness.Child:
    """
    A bare interpreter that imported Twisted's reactor, and sleeps.
    """
    baseline = processes.command(
        "baseline",
        sys.executable,
        "-c",
        "import sys, time, twisted.internet.reactor\n"
        "print('ready', flush=True)\n"
        "time.sleep(86400)",
    )
    if not await harness.wait_until(
        processes.reactor, lambda: "ready" in baseline.output, harness.STARTUP, 0.05
    ):
        raise harness.RunFailed(
            f"the baseline interpreter did not start within {harness.STARTUP:.0f} s"
        )
    return baseline


def in_turns(clusters: Sequence[Cluster], turn: int) -> list[Cluster]:
    """
    The clusters, the first going first on even turns, last on odd ones.
    """
    return list(clusters) if turn % 2 == 0 else list(reversed(clusters))


async def run(
    reactor: IReactorTime, args: argparse.Namespace, serf: str
) -> dict[str, Any]:
    bounds = Bounds.for_run(args.nodes, args.kills)
    observers = min(args.observers, args.nodes - 1)
    processes = harness.Processes(reactor)
    sites = harness.StatusSites(reactor, persistent=True)
    clusters = [
        Cluster(
            "ours",
            lambda name: OurNode(reactor, name, sites),
            "dead",
            observers,
            processes,
        ),
        Cluster(
            "serf",
            lambda name: SerfAgent(reactor, name, serf),
            "failed",
            observers,
            processes,
        ),
    ]

    async def measure() -> dict[str, Any]:
        if args.load:
            processes.command("load", sys.executable, "-c", "while 1: pass")
        baseline = await start_baseline(processes)
        for cluster in clusters:
            await cluster.start(args.nodes - 1, bounds.build)
        # The Nth member is the first join measured.
        for cluster in clusters:
            await cluster.measure_join(bounds.join)
        assert baseline.pid is not None
        baseline_rss = await measure_idle(
            reactor, clusters, args.idle_seconds, baseline.pid
        )
        for kill in range(args.kills):
            for cluster in in_turns(clusters, kill):
                await cluster.measure_kill(bounds.detection)
            # Each victim's replacement is one more join measured, and
            # keeps the clusters at N members for the next kill.
            for cluster in in_turns(clusters, kill):
                await cluster.measure_join(bounds.join)
        for cluster in in_turns(clusters, args.kills):
            await cluster.measure_leave(bounds.leave)
        for cluster in clusters:
            cluster.count_false_deaths()
        return result(args, observers, bounds, clusters, baseline_rss)

    try:
        # Every process is killed on the way out.
        return await harness.supervised(processes, measure(), grace=0)
    finally:
        for cluster in clusters:
            cluster.close()
        await sites.close()


# --- the report ----------------------------------------------------------

# (key, label): every metric, in table order.
METRICS = (
    ("join_p50_s", "join convergence p50, s"),
    ("join_max_s", "join convergence max, s"),
    ("startup_p50_s", "start-up to first answer p50, s"),
    ("detection_p50_s", "failure detection p50, s"),
    ("detection_max_s", "failure detection max, s"),
    ("leave_s", "graceful leave, s"),
    ("idle_cpu_percent", "idle CPU per node, % of a core"),
    ("rss_mib", "RSS per node, MiB"),
    ("bytes_sent_per_node_per_s", "gossip bytes sent per node per s"),
    ("bytes_received_per_node_per_s", "gossip bytes received per node per s"),
    ("false_deaths", "false deaths"),
)


def side_metrics(samples: Samples) -> dict[str, float | None]:
    return {
        "join_p50_s": statistics.median(samples.join),
        "join_max_s": max(samples.join),
        "startup_p50_s": statistics.median(samples.startup),
        "detection_p50_s": statistics.median(samples.detection),
        "detection_max_s": max(samples.detection),
        "leave_s": statistics.median(samples.leave),
        "idle_cpu_percent": samples.idle_cpu_percent,
        "rss_mib": samples.rss_mib,
        "bytes_sent_per_node_per_s": samples.bytes_sent_per_node_per_s,
        "bytes_received_per_node_per_s": samples.bytes_received_per_node_per_s,
        "false_deaths": len(samples.false_deaths),
    }


def rounded(value: float | None) -> float | None:
    # Polls are 0.1 s apart and CPU ticks 10 ms: more digits are noise.
    return None if value is None else round(value, 4)


def ratio(ours: float | None, serf: float | None) -> float | None:
    if ours is None or serf is None or serf == 0:
        return None
    return ours / serf


def targets(
    metrics: Mapping[str, Mapping[str, float | None]], baseline_rss: float
) -> list[dict[str, Any]]:
    """
    The issue's targets, each with the value it was judged on and whether
    it was met (C{None}: the ratio does not exist).
    """

    def at_most(key: str, limit: float, text: str) -> dict[str, Any]:
        value = metrics[key]["ratio"]
        met = None if value is None else value <= limit
        return {"target": text, "value": value, "met": met}

    rss = metrics["rss_mib"]["ours"]
    assert rss is not None
    false_deaths = metrics["false_deaths"]["ours"]
    return [
        at_most("detection_p50_s", 1.0, "failure detection p50 ratio <= 1.0"),
        at_most("join_p50_s", 1.0, "join convergence p50 ratio <= 1.0"),
        at_most("leave_s", 1.0, "graceful leave ratio <= 1.0"),
        at_most("idle_cpu_percent", 0.7, "idle CPU ratio <= 0.7"),
        {
            "target": f"our RSS within {RSS_MARGIN_MIB:.0f} MiB of the reactor "
            "baseline",
            "value": rss - baseline_rss,
            "met": rss - baseline_rss <= RSS_MARGIN_MIB,
        },
        {
            "target": "no false deaths of ours",
            "value": false_deaths,
            "met": not false_deaths,
        },
    ]


def result(
    args: argparse.Namespace,
    observers: int,
    bounds: Bounds,
    clusters: Sequence[Cluster],
    baseline_rss: float,
) -> dict[str, Any]:
    ours, serf = (c.samples for c in clusters)
    sides = side_metrics(ours), side_metrics(serf)
    metrics: dict[str, dict[str, Any]] = {}
    for key, label in METRICS:
        o, s = (side[key] for side in sides)
        metrics[key] = {
            "label": label,
            "ours": rounded(o),
            "serf": rounded(s),
            "ratio": rounded(ratio(o, s)),
        }
    return {
        "nodes": args.nodes,
        "kills": args.kills,
        "observers": observers,
        "idle_seconds": args.idle_seconds,
        "load": args.load,
        "profile": "lan",
        "bounds_s": attrs.asdict(bounds),
        "metrics": metrics,
        "reactor_baseline_rss_mib": rounded(baseline_rss),
        "samples_s": {
            kind: {
                c.label: [rounded(t) for t in getattr(c.samples, kind)]
                for c in clusters
            }
            for kind in ("join", "startup", "detection", "leave")
        },
        "false_death_names": {
            c.label: sorted(c.samples.false_deaths) for c in clusters
        },
        "targets": targets(metrics, baseline_rss),
    }


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or value >= 1000:
        return f"{value:.0f}"
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


TABLE = harness.Table(
    [
        harness.Column("metric", 38, "<"),
        harness.Column("ours", 10),
        harness.Column("serf", 10),
        harness.Column("ours/serf", 10),
    ],
    separator=" ",
)


def table(result: Mapping[str, Any]) -> str:
    host = "loaded (one core kept busy)" if result["load"] else "idle"
    lines = [
        f"{result['nodes']} nodes per side on 127.0.0.1, LAN profile; "
        f"kills: {result['kills']}, observers: {result['observers']}, "
        f"idle window: {result['idle_seconds']:g} s, host: {host}",
        TABLE.header(),
    ]
    for key, label in METRICS:
        row = result["metrics"][key]
        lines.append(
            TABLE.line(
                [label, *(number(row[side]) for side in ("ours", "serf", "ratio"))]
            )
        )
    lines.append(
        TABLE.line(
            [
                "RSS of a bare Python + reactor, MiB",
                number(result["reactor_baseline_rss_mib"]),
            ]
        )
    )
    if result["metrics"]["bytes_sent_per_node_per_s"]["serf"] is None:
        lines.append(
            "(serf's bytes need an idle window holding a whole 10 s metrics "
            "interval: --idle-seconds 20 or more)"
        )
    for side, names in result["false_death_names"].items():
        if names:
            lines.append(f"false deaths ({side}): {', '.join(names)}")
    lines.append("targets:")
    for target in result["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        lines.append(f"  {verdict:<6} {target['target']} ({number(target['value'])})")
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: str) -> None:
    """
    Detection and join convergence times of both sides, side by side.
    """
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot  # type: ignore[import-not-found, unused-ignore]

    samples = result["samples_s"]
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4), sharey=False)
    for axis, kind, title in zip(
        axes,
        ("detection", "join"),
        ("failure detection (SIGKILL)", "join convergence"),
        strict=True,
    ):
        sides = ["ours", "serf"]
        data = [samples[kind][side] for side in sides]
        axis.boxplot(data)
        axis.set_xticks([1, 2], sides)
        for position, values in enumerate(data, start=1):
            axis.plot([position] * len(values), values, "o", alpha=0.6)
        axis.set_title(title)
        axis.set_ylabel("seconds until every observer agrees")
    figure.suptitle(f"{result['nodes']} nodes each on 127.0.0.1, LAN profile")
    figure.tight_layout()
    figure.savefig(path)


# --- the command line ----------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    options = harness.parser(__file__, __doc__)
    harness.add_options(
        options,
        [
            ("--nodes", harness.at_least(3), 20, "per side (default 20)"),
            ("--kills", harness.at_least(1), 5, "per side (default 5)"),
            (
                "--idle-seconds",
                harness.seconds,
                30.0,
                "the idle CPU window (default 30)",
            ),
            (
                "--observers",
                harness.at_least(1),
                5,
                "members polled per side, the first ones (default 5)",
            ),
        ],
    )
    options.add_argument(
        "--load", action="store_true", help="keep one core busy during the run"
    )
    options.add_argument(
        "--plot",
        metavar="PATH",
        type=harness.output_path,
        help="draw the distributions (needs matplotlib)",
    )
    args = options.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        options.error("--plot: needs matplotlib (pip install matplotlib)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    serf = shutil.which("serf")
    if serf is None:
        harness.exit_failed("serf is not on PATH (Debian: apt install serf)")

    async def measured(reactor: IReactorTime) -> None:
        try:
            outcome = await run(reactor, args, serf)
        except harness.Interrupted:
            harness.exit_failed("interrupted", 130)
        except harness.RunFailed as e:
            harness.exit_failed(str(e))
        print(table(outcome))
        harness.write_json(args.json, outcome)
        if args.plot:
            plot(outcome, args.plot)

    harness.react(measured)


if __name__ == "__main__":
    main()
