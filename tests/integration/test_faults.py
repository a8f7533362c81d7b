"""
Faults under real processes: ten C{clusternode} processes, each in
a network namespace of its own on a private bridge (L{tests.netns}), with
packets lost and links cut by nftables inside those namespaces, and nodes
frozen with C{SIGSTOP}.

One cluster goes through four phases, in this order:

  - (c) a node frozen for 3 s, less than the suspicion minimum, refutes
    the suspicion once resumed and is never declared dead;
  - (a) every node drops 10% of the packets it receives, at random, for
    two minutes: every directed link loses 10% (a round trip 19%), UDP and
    TCP alike, and no node is declared dead;
  - (b) the cluster is cut in two halves of five for 60 s: each half
    declares the other dead and carries on; within one rejoin interval of
    the link's return every node lists the same ten participants and the
    same owners of sample keys;
  - (d) a node frozen for longer than the suspicion maximum is declared
    dead by all the others, and once resumed it refutes its death with a
    new incarnation: every node lists it as a participant again and the
    owners agree again.

A watcher polls every node's member list throughout, and each node's
C{cluster_node_gossip_member_events_total} counters are read at the edges
of each phase: a node declared dead that nobody froze past the suspicion
maximum nor cut off is a false death, and fails the phase where it
happened.  Bounds come from the LAN profile the nodes run (with ten
members the suspicion minimum is 4 s and its maximum 24 s) and the rejoin
interval; the times taken are logged.

It is skipped, naming what is missing, without root, C{ip}, C{nft}, or a
kernel that gives namespaces and nftables in them.  Nothing is sent
outside loopback and its own namespaces: they have no route anywhere
else, and the test reaches the nodes' status sites through UNIX sockets.
The run takes under four minutes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import cast
from urllib.parse import quote

import attrs
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from cluster.daemon.demo import SAMPLE_KEYS
from cluster.gossip import GossipConfig
from cluster.gossip.suspicion import suspicion_timeout, worst_case_detection
from tests.helpers import now, samples, wait_for
from tests.netns import Host, NodeProcess, Unsupported, VirtualLan, missing
from tests.processes import STARTUP

SIZE = 10
LAN = GossipConfig.lan()
REJOIN = 20.0  # longer than a push/pull's TCP timeout: no tick is skipped
SUSPICION_MIN = suspicion_timeout(LAN.suspicion_mult, SIZE, LAN.probe_interval)
SUSPICION_MAX = LAN.suspicion_max_timeout_mult * SUSPICION_MIN
DETECTION = worst_case_detection(LAN, SIZE)
SETTLE = 5.0  # gossip reaching every node, on a loaded machine

LOSS = 10  # percent, on every directed link
LOSS_TIME = 120.0
CUT_TIME = 60.0
SHORT_FREEZE = 3.0
LONG_FREEZE = DETECTION  # longer than the suspicion maximum

clock = cast(IReactorTime, reactor)
_log = Logger()


async def sleep(seconds: float) -> None:
    await task.deferLater(clock, seconds, lambda: None)


@attrs.frozen
class Sighting:
    """
    A node's member list showing a member suspect or dead.
    """

    at: float
    phase: str
    observer: str
    member: str
    state: str

    def __str__(self) -> str:
        return (
            f"{self.observer} listed {self.member} {self.state} at {self.at:.1f} s "
            f"({self.phase})"
        )


@attrs.define(eq=False)
class Watch:
    """
    Polls every running node's C{/api/v0/web/cluster} twice a second and
    notes each member it shows suspect or dead.

    @ivar frozen: names of nodes not to ask (they would not answer).
    @ivar allowed: by phase, the C{(observer, member)} pairs that may be
        declared dead in it: anything else is a false death.
    """

    nodes: Sequence[NodeProcess]
    started: float = attrs.field(factory=now)
    phase: str = "start-up"
    frozen: set[str] = attrs.field(factory=set)
    allowed: dict[str, set[tuple[str, str]]] = attrs.field(factory=dict)
    sightings: list[Sighting] = attrs.field(factory=list)
    unanswered: Counter[str] = attrs.field(factory=Counter)
    _last: dict[tuple[str, str], str] = attrs.field(factory=dict)
    _loop: task.LoopingCall | None = None
    _polling: Deferred[list[None]] | None = None

    def start(self) -> None:
        self._loop = task.LoopingCall(self._poll)
        self._loop.clock = clock
        self._loop.start(0.5)

    async def stop(self) -> None:
        """
        Stop polling, once the poll under way (if any) is done.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._polling is not None:
            await self._polling

    def _poll(self) -> Deferred[list[None]]:
        asked = [n for n in self.nodes if n.name not in self.frozen]
        polling: Deferred[list[None]] = gatherResults(
            [Deferred.fromCoroutine(self._ask(n)) for n in asked], consumeErrors=True
        )
        self._polling = polling

        def done(result: list[None] | Failure) -> list[None] | Failure:
            self._polling = None
            return result

        return polling.addBoth(done)

    async def _ask(self, node: NodeProcess) -> None:
        try:
            status = await node.get("/api/v0/web/cluster", timeout=5.0)
        except Exception:
            self.unanswered[self.phase] += 1
            return
        for member in status["members"]:
            key = (node.name, member["name"])
            state = member["state"]
            if self._last.get(key) == state:
                continue
            self._last[key] = state
            if state in ("suspect", "dead"):
                sighting = Sighting(
                    now() - self.started, self.phase, node.name, member["name"], state
                )
                self.sightings.append(sighting)
                _log.info("{sighting}", sighting=str(sighting))

    def deaths(self) -> list[Sighting]:
        return [s for s in self.sightings if s.state == "dead"]

    def false_deaths(self) -> list[Sighting]:
        return [
            s
            for s in self.deaths()
            if (s.observer, s.member) not in self.allowed.get(s.phase, set())
        ]


class FaultTests(TestCase):
    timeout = 900
    lan: VirtualLan
    nodes: list[NodeProcess]
    watch: Watch
    outcomes: list[str]

    async def test_loss_partition_and_freezes(self) -> None:
        started = now()
        self.outcomes = []
        await self.start_cluster()
        await self.short_freeze()
        await self.loss()
        await self.partition()
        await self.long_freeze()
        _log.info(
            "four phases in {took:.0f} s:\n{outcomes}\n(watch: {n} sightings, "
            "polls unanswered: {unanswered})",
            took=now() - started,
            outcomes="\n".join(self.outcomes),
            n=len(self.watch.sightings),
            unanswered=dict(self.watch.unanswered) or "none",
        )

    def outcome(self, line: str) -> None:
        _log.info("{line}", line=line)
        self.outcomes.append(line)

    # --- the cluster ---

    async def start_cluster(self) -> None:
        reason = missing()
        if reason is not None:
            raise SkipTest(reason)
        lan = self.lan = VirtualLan(clock, f"tcf-{os.getpid()}-")
        # Registered first, so it runs last: after the nodes are gone.
        self.addCleanup(lan.destroy)
        try:
            hosts = await lan.create(SIZE)
        except Unsupported as e:
            raise SkipTest(f"no network namespace with nftables here: {e}") from None
        # Relative (trial runs in its temporary directory): a UNIX socket's
        # path must be short.
        directory = self.mktemp()
        os.makedirs(directory)
        self.nodes = [self.node(host, hosts, directory) for host in hosts]
        seed, *others = self.nodes
        began = now()
        seed.start()
        # The seed first: a node that finds nobody to join bootstraps alone
        # and only merges at its next rejoin.
        await wait_for(lambda: self.answers(seed), STARTUP, "the seed answers")
        for node in others:
            node.start()
        for node in others:
            await wait_for(partial(self.answers, node), STARTUP, f"{node.name} answers")
        self.watch = Watch(self.nodes)
        self.watch.start()
        self.addCleanup(self.watch.stop)
        await self.one_cluster(STARTUP + REJOIN + SETTLE, "one cluster")
        self.outcome(
            f"start-up: ten nodes in one cluster {now() - began:.1f} s after the "
            "seed started"
        )

    def node(self, host: Host, hosts: Sequence[Host], directory: str) -> NodeProcess:
        name = f"node-{hosts.index(host) + 1}"
        # Every node may join through every other (as through a DNS name
        # listing them all), and joins them all.
        others = [f"{h.address}:7946" for h in hosts if h is not host]
        node = NodeProcess(
            clock,
            name,
            host,
            os.path.join(directory, f"{name}.sock"),
            [
                *f"--profile lan --rejoin-interval {REJOIN:g}s".split(),
                *("--join-addresses", ",".join(others), "--max-join-peers", "0"),
            ],
        )
        self.addCleanup(self.kill, node, os.path.join(directory, f"{name}.log"))
        return node

    async def kill(self, node: NodeProcess, log: str) -> None:
        await node.kill()
        # What it wrote, for a post-mortem.
        with open(log, "w") as f:
            f.write(node.output)

    async def answers(self, node: NodeProcess) -> bool:
        try:
            code, _ = await node.fetch("/-/healthy", timeout=5.0)
        except Exception:
            return False
        return code == 200

    # --- what the nodes say ---

    async def members(self, node: NodeProcess) -> dict[str, tuple[str, int]]:
        """
        C{node}'s member list: name to state and incarnation (empty when
        it does not answer).
        """
        try:
            status = await node.get("/api/v0/web/cluster", timeout=5.0)
        except Exception:
            return {}
        return {m["name"]: (m["state"], m["incarnation"]) for m in status["members"]}

    async def incarnation(self, node: NodeProcess) -> int | None:
        """
        C{node}'s own incarnation, if it answers.
        """
        mine = (await self.members(node)).get(node.name)
        return None if mine is None else mine[1]

    async def alive_everywhere(self, node: NodeProcess, newer_than: int = 0) -> bool:
        """
        Every node lists C{node} alive at its own incarnation, which is
        above C{newer_than}.
        """
        mine = await self.incarnation(node)
        if mine is None or mine <= newer_than:
            return False
        views = [await self.members(n) for n in self.nodes]
        return all(view.get(node.name) == ("alive", mine) for view in views)

    async def events(self) -> dict[str, Counter[str]]:
        """
        Every node's member events (suspected, declared_dead, refuted,
        reaped) since it started, from its C{/metrics}.
        """
        found: dict[str, Counter[str]] = {}
        for node in self.nodes:
            _, text = await node.fetch("/metrics")
            counts: Counter[str] = Counter()
            for name, labels, value in samples(text.decode("utf-8")):
                if name == "cluster_node_gossip_member_events_total":
                    counts[labels["event"]] = int(value)
            found[node.name] = counts
        return found

    async def disagreement(self) -> str:
        """
        How the nodes disagree: not every one listing all ten as
        participants, or different owners of a sample key; empty when
        they agree.
        """
        expected = {n.name: "participant" for n in self.nodes}
        for node in self.nodes:
            try:
                peers = await node.get("/api/v0/web/peers", timeout=5.0)
            except Exception as e:
                return f"{node.name} does not answer: {e!r}"
            listed = {p["name"]: p["state"] for p in peers}
            if listed != expected:
                return f"{node.name} lists {listed}"
        for key in SAMPLE_KEYS:
            path = f"/api/v0/web/lookup?key={quote(key)}"
            answers = await gatherResults(
                [Deferred.fromCoroutine(n.get(path, timeout=5.0)) for n in self.nodes],
                consumeErrors=True,
            )
            owners: dict[str, tuple[str, ...]] = {}
            for node, answer in zip(self.nodes, answers, strict=True):
                if not isinstance(answer, list):
                    return f"{node.name} cannot look {key} up: {answer}"
                owners[node.name] = tuple(peer["name"] for peer in answer)
            if len(set(owners.values())) != 1:
                return f"owners of {key} differ: {owners}"
        return ""

    async def one_cluster(self, bound: float, what: str) -> float:
        """
        Wait until every node lists the same ten participants and names
        the same owner of every sample key.

        @return: the seconds it took.
        """
        last = ["never asked"]

        async def agreed() -> bool:
            try:
                last[0] = await self.disagreement()
            except Exception as e:
                last[0] = repr(e)
            return not last[0]

        try:
            return await wait_for(agreed, bound, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; last: {last[0]}") from None

    # --- what counts as a false death ---

    def check_deaths(self, phase: str) -> None:
        false = self.watch.false_deaths()
        if false:
            self.fail(f"{phase}: false deaths: {'; '.join(map(str, false))}")

    def check_dead_counts(
        self,
        phase: str,
        before: dict[str, Counter[str]],
        after: dict[str, Counter[str]],
        expected: dict[str, int],
    ) -> str:
        """
        Each node declared dead exactly C{expected[name]} members (none
        when unnamed) during C{phase}: the counters see a death too brief
        for the watch to catch.

        @return: the phase's member events over all nodes, in words.
        """
        changes = {name: after[name] - before[name] for name in after}
        counted = {name: c["declared_dead"] for name, c in changes.items()}
        wanted = {name: expected.get(name, 0) for name in counted}
        self.assertEqual(
            counted,
            wanted,
            f"{phase}: members declared dead, node by node (expected {wanted}); "
            f"the watch saw: {'; '.join(map(str, self.watch.deaths())) or 'none'}",
        )
        total: Counter[str] = sum(changes.values(), Counter())
        return (
            f"suspected {total['suspected']}, refuted {total['refuted']}, declared "
            f"dead {total['declared_dead']}, reaped {total['reaped']} (all nodes)"
        )

    # --- the phases ---

    async def short_freeze(self) -> None:
        """
        (c) A node frozen for less than the suspicion minimum refutes the
        suspicion and is never declared dead.  Nobody may have probed it
        in those 3 s (a probe sent in the last second is answered in
        time; about one freeze in ten): then it is frozen again, up to
        five times.

        Once every node lists it alive at its new incarnation, no
        suspicion of it runs anywhere; a later death would still be seen
        by the watch, in the next phase.
        """
        phase = self.watch.phase = f"(c) {SHORT_FREEZE:g} s freeze"
        self.assertGreater(SUSPICION_MIN, SHORT_FREEZE)
        target = self.nodes[2]
        before = after = await self.events()
        for attempt in range(1, 6):
            refuted = after[target.name]["refuted"]
            incarnation = await self.incarnation(target)
            assert incarnation is not None
            self.watch.frozen.add(target.name)
            target.signal("STOP")
            await sleep(SHORT_FREEZE)
            target.signal("CONT")
            self.watch.frozen.discard(target.name)
            took = await wait_for(
                partial(self.alive_everywhere, target, incarnation - 1),
                SETTLE,
                f"{phase}: every node lists {target.name} alive",
            )
            after = await self.events()
            self.check_deaths(phase)
            if after[target.name]["refuted"] > refuted:
                break
            _log.info(
                "{phase}: nobody suspected {name} in freeze {attempt}",
                phase=phase,
                name=target.name,
                attempt=attempt,
            )
        else:
            self.fail(f"{phase}: {target.name} never suspected in five freezes")
        self.assertTrue(
            await self.alive_everywhere(target, incarnation),
            f"{phase}: alive everywhere at a new incarnation",
        )
        events = self.check_dead_counts(phase, before, after, {})
        await self.one_cluster(SETTLE, f"{phase}: one cluster")
        self.outcome(
            f"{phase}: {target.name} refuted (incarnation {incarnation} -> "
            f"{await self.incarnation(target)}) and was alive everywhere {took:.2f} s "
            f"after SIGCONT, attempt {attempt}; no false death; {events}"
        )

    async def loss(self) -> None:
        """
        (a) 10% loss on every link for two minutes: no false death.
        """
        phase = self.watch.phase = f"(a) {LOSS}% loss"
        before = await self.events()
        await self.lan.lose(LOSS)
        try:
            await sleep(LOSS_TIME)
            received, dropped = await self.lan.losses()
        finally:
            await self.lan.restore()
        after = await self.events()
        self.check_deaths(phase)
        events = self.check_dead_counts(phase, before, after, {})
        await self.one_cluster(SETTLE, f"{phase}: one cluster after the loss")
        self.outcome(
            f"{phase}: {LOSS_TIME:.0f} s, {dropped} of {received} packets dropped "
            f"({dropped / max(1, received):.1%}); no false death; {events}"
        )

    async def partition(self) -> None:
        """
        (b) Two halves cut apart for 60 s declare each other dead (and
        forget each other: 60 s is longer than detection and
        C{gossip_to_the_dead_time} together).  Only a join brings them
        back: every node rejoins every other once per rejoin interval (a
        rejoin lasts at most a TCP timeout, shorter than the interval, so
        no tick is skipped), which is the bound, plus time to gossip.
        """
        phase = self.watch.phase = "(b) partition"
        self.assertGreater(REJOIN, LAN.tcp_timeout)
        halves = self.nodes[: SIZE // 2], self.nodes[SIZE // 2 :]
        self.watch.allowed[phase] = {
            (a.name, b.name)
            for side, other in (halves, halves[::-1])
            for a in side
            for b in other
        }
        before = await self.events()
        await self.lan.cut([n.host for n in halves[0]], [n.host for n in halves[1]])
        cut = now()

        async def split() -> bool:
            for side, other in (halves, halves[::-1]):
                for node in side:
                    view = await self.members(node)
                    if any(view.get(n.name, ("",))[0] != "alive" for n in side):
                        return False
                    # Dead, or already forgotten.
                    if any(view.get(n.name, ("dead",))[0] != "dead" for n in other):
                        return False
            return True

        detected = await wait_for(
            split, DETECTION + SETTLE, f"{phase}: each half lists the other dead"
        )
        await sleep(max(0.0, CUT_TIME - (now() - cut)))
        await self.lan.heal()
        healed = await self.one_cluster(
            REJOIN + SETTLE, f"{phase}: one cluster once the link returns"
        )
        after = await self.events()
        self.check_deaths(phase)
        half = SIZE // 2
        events = self.check_dead_counts(
            phase, before, after, {n.name: half for n in self.nodes}
        )
        self.outcome(
            f"{phase}: each half listed the other dead {detected:.1f} s after the "
            f"cut; one cluster again (same participants, same owners) "
            f"{healed:.1f} s after the link returned at {CUT_TIME:.0f} s; no false "
            f"death; {events}"
        )

    async def long_freeze(self) -> None:
        """
        (d) A node frozen for longer than the suspicion maximum is dead to
        all; resumed, it refutes its death with a new incarnation (its
        overdue rejoin, or push/pull, tells it at once), becomes a
        participant everywhere again, and the owners agree again.
        """
        phase = self.watch.phase = "(d) long freeze"
        self.assertGreater(LONG_FREEZE, SUSPICION_MAX)
        target = self.nodes[6]
        others = [n for n in self.nodes if n is not target]
        self.watch.allowed[phase] = {(n.name, target.name) for n in others}
        before = await self.events()
        incarnation = await self.incarnation(target)
        assert incarnation is not None
        self.watch.frozen.add(target.name)
        target.signal("STOP")
        frozen = now()
        try:

            async def dead_to_all() -> bool:
                views = [await self.members(n) for n in others]
                return all(v.get(target.name, ("",))[0] == "dead" for v in views)

            detected = await wait_for(
                dead_to_all, DETECTION + SETTLE, f"{phase}: every other lists it dead"
            )
            await sleep(max(0.0, LONG_FREEZE - (now() - frozen)))
        finally:
            target.signal("CONT")
            self.watch.frozen.discard(target.name)
        held = now() - frozen
        returned = await wait_for(
            lambda: self.alive_everywhere(target, incarnation),
            REJOIN + SETTLE,
            f"{phase}: alive everywhere, a new incarnation",
        )
        agreed = await self.one_cluster(SETTLE, f"{phase}: one cluster again")
        after = await self.events()
        self.check_deaths(phase)
        events = self.check_dead_counts(
            phase, before, after, {n.name: 1 for n in others}
        )
        self.outcome(
            f"{phase}: {target.name} dead to all {detected:.1f} s into a "
            f"{held:.1f} s freeze; after SIGCONT alive everywhere at incarnation "
            f"{await self.incarnation(target)} (was {incarnation}) in "
            f"{returned:.2f} s, participants and owners agreed {agreed:.2f} s "
            f"later; no false death; {events}"
        )
