"""
C{--profile alloy} in real C{clusternode} processes on 127.0.0.1:
three nodes form a cluster, one is SIGKILLed, and every survivor declares
it dead within the profile's worst case.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.logger import Logger

from cluster.daemon.demo import LocalNode
from cluster.gossip import GossipConfig
from cluster.gossip.suspicion import suspicion_timeout, worst_case_detection
from tests.helpers import now, wait_for
from tests.processes import STARTUP, ProcessTestCase

ALLOY = GossipConfig.alloy()
SIZE = 3
# Probing, the suspicion (its 20 s minimum: three members expect no
# confirmation) and the death's retransmissions: 40.8 s.
DETECTION = worst_case_detection(ALLOY, SIZE)
# worst_case_detection assumes healthy survivors.  On a loaded machine a
# survivor's round may come late, and Lifeguard stretches a round by whole
# probe intervals: allow one, which also covers the 50 ms polls over HTTP.
MARGIN = ALLOY.probe_interval
# The joiners' push/pull with the seed, or, failing that, the next one.
FORMED = STARTUP + ALLOY.push_pull_interval + ALLOY.tcp_timeout + 5

_log = Logger()


class AlloyProfileTests(ProcessTestCase):
    timeout = STARTUP + FORMED + DETECTION + MARGIN + 60

    def alloy_node(self, name: str, *args: str) -> LocalNode:
        return self.spawn(LocalNode(reactor, name, ["--profile", "alloy", *args]))

    async def state_on(self, node: LocalNode, name: str) -> str | None:
        """
        C{name}'s memberlist state on C{node}, C{None} while it does not
        answer or lists no such member.
        """
        self.check_running(node)
        try:
            return (await self.states(node)).get(name)
        except Exception:
            return None

    async def test_kill_is_detected_within_the_worst_case(self) -> None:
        seed = self.alloy_node("alloy-1")
        await wait_for(lambda: self.answering(seed), STARTUP, "the seed answers")
        nodes = [seed] + [
            self.alloy_node(f"alloy-{i}", "--join-addresses", seed.gossip_address)
            for i in range(2, SIZE + 1)
        ]
        await self.converged(nodes, FORMED, f"{SIZE} alloy nodes formed")

        crashed, survivors = nodes[-1], nodes[:-1]
        killed_at = now()
        crashed.signal("KILL")  # its PID only
        await crashed.ended
        seen: dict[str, dict[str, float]] = {n.name: {} for n in survivors}

        async def dead_everywhere() -> bool:
            for survivor in survivors:
                state = await self.state_on(survivor, crashed.name)
                if state in ("suspect", "dead"):
                    seen[survivor.name].setdefault(state, now() - killed_at)
            return all("dead" in times for times in seen.values())

        took = await wait_for(
            dead_everywhere,
            DETECTION + MARGIN,
            f"every survivor declares the SIGKILLed node dead "
            f"(worst case {DETECTION:.1f} s + {MARGIN:g} s)",
        )
        _log.info(
            "alloy profile, {size} nodes: dead everywhere {took:.1f} s after "
            "SIGKILL; {each}",
            size=SIZE,
            took=took,
            each="; ".join(
                f"{name}: "
                + ", ".join(f"{state} at {t:.1f} s" for state, t in times.items())
                for name, times in seen.items()
            ),
        )
        # Alloy's timings, not LAN's: no suspicion ends before its 20 s
        # minimum (LAN's is 4 s), and every one began after the kill.
        shortest = suspicion_timeout(ALLOY.suspicion_mult, SIZE, ALLOY.probe_interval)
        self.assertEqual(shortest, 20.0)
        for name, times in seen.items():
            self.assertGreaterEqual(times["dead"], shortest, name)
        # Dead, not left: a crash, not a leave.
        for survivor in survivors:
            self.assertEqual(await self.state_on(survivor, crashed.name), "dead")
            peers = await self.peers(survivor)
            self.assertEqual(
                peers, {n.name: "participant" for n in survivors}, survivor.name
            )
