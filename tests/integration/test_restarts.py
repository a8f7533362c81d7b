"""
Restarts (the [hardening] issue, item 5): nodes that come back under the
same name, at the same address or at another one.

Real C{clusternode} processes on 127.0.0.1 (L{cluster.daemon.demo.LocalNode},
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

C{clusternode} has no flag for memberlist's C{DeadNodeReclaimTime}
(Alloy sets none: 0, never reclaim), so the reclaim path runs on the
simulated network, with the conflict-until-reaped path beside it for
contrast, to the tenth of a second.

Bounds come from the local profile; the times taken are logged.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import gatherResults
from twisted.logger import Logger

from cluster.daemon.demo import LocalNode
from cluster.gossip.suspicion import worst_case_detection
from tests.helpers import now, wait_for
from tests.processes import LOCAL, SPREAD, STARTUP, ProcessTestCase
from tests.unit.test_restarts import RESTARTED, SIZE, TARGET

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
