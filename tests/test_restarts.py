"""
Restarts (the [hardening] issue, item 5): nodes that come back under the
same name, at the same address or at another one.

Real C{twistd clusternode} processes on 127.0.0.1 (L{cluster.daemon.demo.LocalNode},
C{--profile local}):

  - ten of twelve nodes killed (or stopped) together and started again
    with the same names and ports are alive everywhere within 10 s, with
    no suspect, dead or left entry left over, and participants everywhere
    within a push/pull interval.  The two survivors hold the old
    processes' incarnations, as alive, suspect, dead or I{left}; a new
    process starts at the clock's seconds
    (L{cluster.gossip.state.initial_incarnation}), above its old
    incarnation, so its first join push/pull overrides the old record;
  - a node killed and started at once on another gossip port under the
    same name is a conflict (memberlist's C{NotifyConflict}, counted as
    ckit's C{node_conflict} event, and logged) for as long as the old
    entry is alive, suspect or dead, and takes over once the old entry
    was reaped, C{gossip_to_the_dead_time} after its death; a node that
    I{left} may come back elsewhere at once.

The issue asks for the ten to be back everywhere within 10 s.  Alive
everywhere they are, at once: the join push/pulls carry the higher
incarnation to the survivors, and stale copies of the old records are
ignored after that (memberlist, starting every process at 1, relied on a
refutation spread by gossip, and one node in twenty missed every copy and
kept a stale suspicion or I{left} entry for up to a push/pull interval:
over 60 simulated seeds the slowest took 7.0 s killed and 12.6 s stopped;
now 0.05 s).  The new participant state of a restarted node still spreads
by gossip, each node passing it on a few times (4, with C{--profile local}
and twelve members) to members picked at random, some of them processes
not listening yet; now and then one node misses every copy and lists the
node as a viewer until a push/pull brings the news, as in ckit.  So
participants are held to a push/pull interval, and the time is logged
against the 10 s.

C{twistd clusternode} has no flag for memberlist's C{DeadNodeReclaimTime}
(Alloy sets none: 0, never reclaim), so the reclaim path runs on the
simulated network, with the conflict-until-reaped path beside it for
contrast, to the tenth of a second.

Bounds come from the local profile; the times taken are logged.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from cluster import ClusterService, Options, PeerState
from cluster.alloy.discovery import static
from cluster.daemon.demo import LocalNode
from cluster.gossip import (
    GossipConfig,
    IConflictDelegate,
    Member,
    Memberlist,
    MemberState,
)
from cluster.gossip.suspicion import worst_case_detection
from cluster.testing import SimulatedNetwork
from tests.helpers import node_of, now, start_and_join, wait_for

LOCAL = GossipConfig.local()
STARTUP = 30.0  # a cold interpreter importing Twisted, on a loaded machine
# A push/pull reaches every member once an interval, whatever gossip missed.
SPREAD = LOCAL.push_pull_interval + LOCAL.tcp_timeout + 5
SIZE = 12
RESTARTED = 10
TARGET = 10.0  # the issue's wish, from the restarted nodes' first answer
# Where a simulated restart's clock starts, like a real one's.
WALL_CLOCK = 1_800_000_000.0


# A new address under a known name, in a cluster of three: the old entry
# is declared dead, reaped gossip_to_the_dead_time later at the end of a
# probe pass, and then the new process's next push/pull brings it to one
# survivor; the other may have reaped a moment later, and then learns it
# at its own next push/pull, one more interval.
TAKEOVER = (
    worst_case_detection(LOCAL, 3)
    + LOCAL.gossip_to_the_dead_time
    + 3 * LOCAL.probe_interval
    + 2 * LOCAL.push_pull_interval
    + LOCAL.tcp_timeout
    + 5
)

_log = Logger()

View = tuple[dict[str, str], dict[str, str]]


@attrs.frozen
class Premise:
    """
    What the survivors must show before the restart.

    @ivar holds: given the states one survivor lists the ended nodes in
        (C{None} for a node it has forgotten), whether the premise holds.
    @ivar bound: how long it may take.
    """

    holds: Callable[[list[str | None]], bool]
    bound: float
    what: str


class ProcessTestCase(TestCase):
    """
    Helpers for clusters of real C{twistd clusternode} processes.
    """

    timeout = 300

    def node(self, name: str, *args: str, like: LocalNode | None = None) -> LocalNode:
        """
        Start a C{--profile local} node, on the ports of C{like} if given
        (the same addresses as a process that ended).
        """
        flags = ["--profile", "local", *args]
        if like is None:
            node = LocalNode(reactor, name, flags)
        else:
            node = LocalNode(
                reactor,
                name,
                flags,
                gossip_port=like.gossip_port,
                http_port=like.http_port,
            )
        node.start()
        self.addCleanup(self.killed, node)
        return node

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
        for family in text_string_to_metric_families(body.decode("utf-8")):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        return 0.0

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


class TogetherTests(ProcessTestCase):
    """
    Ten of twelve nodes go away together and come back with the same
    names and addresses.

    Each restarted node is given every other node's address and joins them
    all (C{--max-join-peers 0}), so its join reaches the survivors and
    their records of it.  With Alloy's default of five picked at random,
    a restarted node may join only other restarted nodes, fresh ones that
    do not hold its old record; nothing then tells it that the survivors
    list it I{left} or dead (memberlist neither gossips to nor probes such
    a member), and it stays out of their view until its own next
    push/pull: still within L{SPREAD}, but often later than 10 s.
    """

    async def restart(self, signal: str, premise: Premise | None = None) -> None:
        """
        Form a cluster, end all but two of its processes with C{signal},
        wait for C{premise} (if any) to hold at both survivors, then start
        them all again at once; every node must list all twelve alive and
        participant within L{SPREAD} of the last one answering HTTP.
        """
        nodes = await self.formed(signal.lower(), SIZE)
        survivors, gone = nodes[: SIZE - RESTARTED], nodes[SIZE - RESTARTED :]
        for node in gone:
            node.signal(signal)
        await gatherResults([node.ended for node in gone])
        if premise is not None:

            async def holds() -> bool:
                for survivor in survivors:
                    members = await self.members(survivor)
                    states = [members.get(n.name, {}).get("state") for n in gone]
                    if not premise.holds(states):
                        return False
                return True

            await wait_for(holds, premise.bound, premise.what)
        before = await self.members(survivors[0])
        again = [
            self.node(
                old.name,
                "--max-join-peers",
                "0",
                "--join-addresses",
                ",".join(n.gossip_address for n in nodes if n is not old),
                like=old,
            )
            for old in gone
        ]
        booted = await self.started(again, "a restarted node answers")
        _log.info("restarted nodes answer HTTP after {took:.2f} s", took=booted)
        everybody = [*survivors, *again]
        alive = await self.converged(
            everybody,
            TARGET,
            f"{RESTARTED} restarted nodes alive everywhere",
            participants=False,
        )
        took = alive + await self.converged(
            everybody,
            SPREAD,
            f"{RESTARTED} restarted nodes alive and participant everywhere",
        )
        _log.info(
            "restart to all alive everywhere: {alive:.2f} s, and participant: "
            "{took:.2f} s (the issue's target: {target} s)",
            alive=alive,
            took=took,
            target=TARGET,
        )
        refuted = [
            await self.metric(
                node, "cluster_node_gossip_member_events_total", event="refuted"
            )
            for node in again
        ]
        after = await self.members(survivors[0])
        _log.info(
            "refutations by the restarted nodes: {refuted}; their state and "
            "incarnation at {survivor} before, incarnation after: {records}",
            refuted=refuted,
            survivor=survivors[0].name,
            records={
                n.name: (
                    before.get(n.name, {}).get("state"),
                    before.get(n.name, {}).get("incarnation"),
                    after[n.name]["incarnation"],
                )
                for n in gone
            },
        )
        # Each new process started above its old incarnation, and the
        # survivors took the new one.
        for node in gone:
            old = before.get(node.name, {}).get("incarnation")
            if old is not None:
                self.assertGreater(after[node.name]["incarnation"], old, node.name)

    async def test_killed_and_restarted_at_once(self) -> None:
        """
        C{kill -9} and an immediate restart: the survivors may still list
        the killed processes alive (a new process at incarnation 1 then
        needs nothing), or already suspect some.
        """
        await self.restart("KILL")

    async def test_killed_and_restarted_while_suspected(self) -> None:
        """
        C{kill -9}, and the restart once both survivors have begun to
        suspect the killed processes: a suspicion ripens into a death
        unless the new process hears of it and refutes it.
        """
        await self.restart(
            "KILL",
            Premise(
                lambda states: any(s in ("suspect", "dead") for s in states),
                worst_case_detection(LOCAL, SIZE),
                "both survivors suspect a killed node",
            ),
        )

    async def test_stopped_and_restarted(self) -> None:
        """
        SIGTERM: each of the ten leaves, and both survivors list all ten
        as I{left} (not failed) before the restart; each new process must
        override its old I{left} with a higher incarnation.
        """
        await self.restart(
            "TERM",
            Premise(
                lambda states: all(s == "left" for s in states),
                SPREAD,
                "both survivors list the stopped nodes as left",
            ),
        )


class TogetherSimulationTests(SynchronousTestCase):
    """
    The restart of L{TogetherTests} over many seeds on the simulated
    network, as C{twistd clusternode} does it (participant once joined,
    joining every address given): alive everywhere within the issue's
    10 s in every seed (within a gossip round, in fact), participant
    typically within a second and always within a push/pull interval
    (how many seeds exceed 10 s is logged).

    The ten come up one by one over a second, after a random pause of up
    to 3 s (the survivors may still list them alive, or suspect them), or
    after a graceful stop.
    """

    SEEDS = range(12)
    BOOT_SPREAD = 1.0
    BOUND = LOCAL.push_pull_interval + LOCAL.tcp_timeout

    def restart(self, seed: int, graceful: bool) -> tuple[float, float]:
        """
        One restart of ten of twelve, on a clock started at a wall-clock
        time (incarnations start at the clock's seconds).

        @return: the simulated seconds from the last start until every node
            lists all twelve alive, and then until they are participants.
        """
        network = SimulatedNetwork(seed=seed)
        network.clock.advance(WALL_CLOCK)
        rng = random.Random(seed)
        names = [f"s-{i:02}" for i in range(SIZE)]
        hosts = [network.new_host() for _ in names]
        addresses = [f"{host}:7946" for host in hosts]

        def start(i: int, join: list[str]) -> ClusterService:
            service = network.cluster_service(
                Options(
                    enable_clustering=True,
                    node_name=names[i],
                    discover_peers=static(join),
                    gossip=GossipConfig.local(),
                    cluster_max_join_peers=0,
                ),
                host=hosts[i],
            )
            service.startService()
            # As twistd clusternode: a participant once joined.
            service.when_joined().addCallback(
                lambda _: service.change_state(PeerState.PARTICIPANT)
            )
            return service

        def agreed(
            services: list[ClusterService], participants: bool = True
        ) -> Callable[[], bool]:
            alive = dict.fromkeys(names, MemberState.ALIVE)
            participant = dict.fromkeys(names, PeerState.PARTICIPANT)

            def check() -> bool:
                return len(services) == SIZE and all(
                    {m.name: m.state for m in node_of(s).memberlist.members()} == alive
                    and (
                        not participants
                        or {p.name: p.state for p in node_of(s).peers()} == participant
                    )
                    for s in services
                )

            return check

        services = [start(0, [])]
        network.run(1)
        services += [start(i, addresses[:1]) for i in range(1, SIZE)]
        self.assertIsNotNone(network.run_until(agreed(services), 60), seed)
        survivors, gone = services[:2], services[2:]
        if graceful:
            stopped = gatherResults([s.stopService() for s in gone])
            network.run(10)
            self.successResultOf(stopped)
        else:
            for service in gone:
                network.crash(node_of(service))
            network.run(rng.uniform(0, 3))
        for host in hosts[2:]:
            network.restore(host)
        again = list(survivors)
        for i in range(2, SIZE):
            others = addresses[:i] + addresses[i + 1 :]
            network.clock.callLater(
                rng.uniform(0, self.BOOT_SPREAD),
                lambda i=i, others=others: again.append(start(i, others)),
            )
        network.run(self.BOOT_SPREAD)
        alive = network.run_until(agreed(again, False), TARGET, step=0.05)
        self.assertIsNotNone(alive, f"seed {seed}: not alive within {TARGET} s")
        took = network.run_until(agreed(again), self.BOUND, step=0.05)
        self.assertIsNotNone(took, f"seed {seed}: not within {self.BOUND} s")
        assert alive is not None and took is not None
        return alive, alive + took

    def assertAliveAtOnce(self, results: list[tuple[float, float]]) -> None:
        """
        Every restart was alive everywhere within a gossip round or two of
        the last start: the join push/pulls carried the new incarnations.
        (Each was participant everywhere within L{BOUND}, as L{restart}
        checked; how many took over 10 s for that is logged.)
        """
        alive = [a for a, _ in results]
        times = [t for _, t in results]
        _log.info(
            "alive everywhere after the last start: max {alive:.2f} s; "
            "participant: median {median:.2f} s, max {most:.2f} s, {late} of "
            "{n} over {target} s",
            alive=max(alive),
            median=statistics.median(times),
            most=max(times),
            late=sum(t > TARGET for t in times),
            n=len(times),
            target=TARGET,
        )
        self.assertLessEqual(max(alive), 1.0, alive)

    def test_killed(self) -> None:
        """
        Killed, and started again after a pause of up to 3 s.
        """
        self.assertAliveAtOnce([self.restart(s, False) for s in self.SEEDS])

    def test_stopped(self) -> None:
        """
        Stopped gracefully (each leaves), and started again.
        """
        self.assertAliveAtOnce([self.restart(s, True) for s in self.SEEDS])


class SameNameNewPortTests(ProcessTestCase):
    """
    A node comes back at another gossip port under the same name.
    """

    async def three(self, prefix: str) -> tuple[list[LocalNode], LocalNode]:
        """
        A formed cluster of three: the first two, and the third.
        """
        nodes = await self.formed(prefix, 3)
        return nodes[:2], nodes[2]

    def elsewhere(self, old: LocalNode, survivors: list[LocalNode]) -> LocalNode:
        """
        A new process under C{old}'s name on new ports, joining
        C{survivors}.
        """
        return self.node(
            old.name,
            "--join-addresses",
            ",".join(n.gossip_address for n in survivors),
        )

    async def test_conflict_until_the_old_entry_is_reaped(self) -> None:
        """
        memberlist's C{aliveNode}: while the old entry is alive, suspect
        or dead, another address under its name is a conflict, counted and
        logged; the survivors keep the old address until the dead entry is
        reaped, C{gossip_to_the_dead_time} after the death
        (C{DeadNodeReclaimTime} is 0), and only then take the new one.
        """
        survivors, old = await self.three("c")
        old.signal("KILL")
        await old.ended
        killed = now()
        new = self.elsewhere(old, survivors)
        await wait_for(lambda: self.answering(new), STARTUP, "the new process answers")

        # Per survivor: (poll sent, poll answered, (address, state) or None).
        history: dict[str, list[tuple[float, float, tuple[str, str] | None]]] = {
            n.name: [] for n in survivors
        }

        async def taken_over() -> bool:
            for survivor in survivors:
                asked = now()
                entry = (await self.members(survivor)).get(old.name)
                seen = None
                if entry is not None:
                    seen = (f"{entry['addr']}:{entry['port']}", entry["state"])
                history[survivor.name].append((asked, now(), seen))
            wanted = (new.gossip_address, "alive")
            return all(polls[-1][2] == wanted for polls in history.values())

        took = await wait_for(taken_over, TAKEOVER, "the new address on every survivor")
        _log.info("conflict to the new address everywhere: {took:.2f} s", took=took)
        await self.converged(
            [*survivors, new], SPREAD, "the new process is a participant everywhere"
        )

        for name, polls in history.items():
            seen = [where for _, _, where in polls]
            first_new = seen.index((new.gossip_address, "alive"))
            # The old address (or nothing, once reaped) until the new one,
            # and then the new one only.
            self.assertTrue(
                all(s is None or s[0] == old.gossip_address for s in seen[:first_new]),
                seen,
            )
            self.assertTrue(
                all(
                    s is not None and s[0] == new.gossip_address
                    for s in seen[first_new:]
                ),
                seen,
            )
            first_dead = seen.index((old.gossip_address, "dead"))
            self.assertLess(first_dead, first_new, seen)
            # The death came after the last poll that did not show it (or
            # after the kill), the takeover before the poll that showed it
            # answered: at most that far apart, which must still exceed
            # gossip_to_the_dead_time.
            died_after = polls[first_dead - 1][0] if first_dead else killed
            self.assertGreater(
                polls[first_new][1] - died_after, LOCAL.gossip_to_the_dead_time, name
            )

        # The new process's join pushed its address to both survivors while
        # they held the old entry: each says so once.  (The new process
        # itself sees a conflict only when a survivor still lists the old
        # entry alive at its join, a suspect or dead entry about itself
        # being refuted instead; the old address does not answer its pings,
        # so it goes on: see tests/test_conflicts.py.)
        line = (
            f"{old.name} at {new.gossip_address} claims the name of {old.name} "
            f"at {old.gossip_address}; keeping {old.gossip_address}"
        )
        for survivor in survivors:
            self.assertGreaterEqual(await self.conflicts(survivor), 1, survivor.name)
            self.assertEqual(survivor.output.count(line), 1, survivor.name)
        _log.info(
            "conflicts counted by the new process: {n}", n=await self.conflicts(new)
        )

    async def test_left_node_comes_back_elsewhere_at_once(self) -> None:
        """
        A node that left (SIGTERM) and comes back on another port is no
        conflict: a I{left} entry takes the new address at once, at the
        new process's join.
        """
        survivors, old = await self.three("l")
        await old.stop()

        async def left() -> bool:
            for survivor in survivors:
                if (await self.members(survivor))[old.name]["state"] != "left":
                    return False
            return True

        await wait_for(left, SPREAD, "both survivors list the stopped node as left")
        new = self.elsewhere(old, survivors)
        await wait_for(lambda: self.answering(new), STARTUP, "the new process answers")
        took = await self.converged(
            [*survivors, new],
            SPREAD,
            "the new address alive and participant everywhere",
        )
        _log.info("left node back elsewhere: {took:.2f} s", took=took)
        for survivor in survivors:
            entry = (await self.members(survivor))[old.name]
            self.assertEqual(entry["port"], new.gossip_port)
        for node in [*survivors, new]:
            self.assertEqual(await self.conflicts(node), 0, node.name)


@implementer(IConflictDelegate)
@attrs.define
class ConflictTimes:
    """
    Records when each conflict was reported, and the port claimed.
    """

    clock: IReactorTime
    seen: list[tuple[float, int]] = attrs.field(factory=list)

    def notify_conflict(self, existing: Member, other: Member) -> None:
        self.seen.append((self.clock.seconds(), other.port))


class ReclaimTests(SynchronousTestCase):
    """
    memberlist's C{DeadNodeReclaimTime}, on the simulated network to the
    tenth of a second: a dead entry gives its name to another address once
    it has been dead that long, not before; without the setting, only once
    it was reaped.

    A crashed member comes back at once on another port of the same host
    and rejoins every second, as Alloy's rejoin loop would (more often, to
    measure closely); the survivors' tables are read after every step.
    """

    NEW_PORT = 7947
    REJOIN = 1.0
    STEP = 0.1

    def takeover(
        self, seed: int, **settings: Any
    ) -> list[tuple[str, float, float, ConflictTimes]]:
        """
        Run the scenario with C{settings} on the LAN profile.

        @return: for each survivor, its name, when the old entry died, when
            the new address was taken, and the conflicts it reported.
        """
        network = SimulatedNetwork(seed=seed)
        recorders = [ConflictTimes(network.clock) for _ in range(2)]
        nodes = start_and_join(
            network,
            "s-0",
            "s-1",
            "mover",
            each=[{"conflict": recorders[0]}, {"conflict": recorders[1]}, {}],
            settle=5,
            **settings,
        )
        survivors, victim = nodes[:2], nodes[2]
        host = victim.transport.host
        network.crash(victim)
        network.restore(host)  # only the process died
        mover = Memberlist(
            attrs.evolve(victim.config, bind_port=self.NEW_PORT),
            network.clock,
            network.transport(host, self.NEW_PORT),
            random.Random(seed),
        )
        mover.start()
        seeds = [s.local_member().full_address() for s in survivors]
        rejoin = LoopingCall(mover.join, seeds)
        rejoin.clock = network.clock
        rejoin.start(self.REJOIN)
        self.addCleanup(rejoin.stop)

        died: dict[str, float] = {}
        taken: dict[str, float] = {}

        def step() -> bool:
            for survivor in survivors:
                entry = survivor.table.get("mover")
                if entry is None:
                    continue
                if entry.port == self.NEW_PORT:
                    taken.setdefault(survivor.name, network.clock.seconds())
                    self.assertEqual(entry.state, MemberState.ALIVE)
                else:
                    self.assertNotIn(survivor.name, taken, "the old address is back")
                    if entry.state == MemberState.DEAD:
                        died.setdefault(survivor.name, entry.state_change)
            return len(taken) == len(survivors)

        config = survivors[0].config
        bound = (
            worst_case_detection(config, 3)
            + 3 * config.probe_interval  # the reaping pass
            + config.gossip_to_the_dead_time
            + 5
        )
        self.assertIsNotNone(network.run_until(step, bound, self.STEP), (died, taken))
        return [
            (survivor.name, died[survivor.name], taken[survivor.name], recorder)
            for survivor, recorder in zip(survivors, recorders, strict=True)
        ]

    def test_reclaimed_after_the_reclaim_time(self) -> None:
        """
        With C{dead_node_reclaim_time} (5 s, well under the 30 s of
        C{gossip_to_the_dead_time}), the new address is refused while the
        old entry has been dead for less, and taken at the first rejoin
        after: the dead entry is reclaimed, not reaped.
        """
        reclaim = 5.0
        for name, died, taken, recorder in self.takeover(
            1, dead_node_reclaim_time=reclaim
        ):
            self.assertGreater(taken - died, reclaim, name)
            self.assertLessEqual(
                taken - died, reclaim + self.REJOIN + 2 * self.STEP, name
            )
            refused_while_dead = [
                t for t, _ in recorder.seen if died <= t <= died + reclaim
            ]
            self.assertTrue(refused_while_dead, (name, died, recorder.seen))
            self.assertTrue(all(port == self.NEW_PORT for _, port in recorder.seen))

    def test_without_reclaim_the_dead_entry_must_be_reaped(self) -> None:
        """
        Without it (memberlist's default, and Alloy's), the new address is
        a conflict for as long as the dead entry stays, and is taken only
        after it was reaped, C{gossip_to_the_dead_time} after the death,
        at the end of a probe pass.
        """
        lan = GossipConfig.lan()
        for name, died, taken, recorder in self.takeover(2):
            self.assertGreater(taken - died, lan.gossip_to_the_dead_time, name)
            self.assertLessEqual(
                taken - died,
                lan.gossip_to_the_dead_time
                + 3 * lan.probe_interval
                + self.REJOIN
                + 2 * self.STEP,
                name,
            )
            late = [
                t
                for t, _ in recorder.seen
                if t > died + lan.gossip_to_the_dead_time - 1
            ]
            self.assertTrue(late, (name, died, recorder.seen))
