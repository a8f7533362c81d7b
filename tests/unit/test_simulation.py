"""
Protocol properties of L{cluster.gossip.Memberlist} on the deterministic
simulated network: convergence, failure detection within the suspicion
bounds, no false deaths under loss or slow nodes (Lifeguard), and healing
after a partition.

Compression is switched off in the large simulations only to keep them
quick (pure-Python LZW on every packet); it is covered by the wire tests,
the smaller simulations and the real-socket tests.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from cluster.gossip import GossipConfig, Memberlist, MemberState
from cluster.gossip.loops import push_pull_scale
from cluster.gossip.suspicion import suspicion_timeout, worst_case_detection
from cluster.testing import SimulatedNetwork
from tests.helpers import EventRecorder, known, start_and_join

# Gossip spreads a join in about a second, but with 1% loss a node can
# miss every copy of one alive message (each node hears about 8 of them, so
# a few of the 2,500 pairs in a 50-node build miss now and then, as in
# memberlist): the next push/pull repairs it.  That is the bound.
CONVERGENCE = push_pull_scale(GossipConfig.lan().push_pull_interval, 50) + 5


def build_cluster(
    network: SimulatedNetwork, size: int, **overrides: Any
) -> tuple[list[Memberlist], list[EventRecorder]]:
    """
    Start C{size} nodes, each with its own L{EventRecorder}, and have every
    one join through the first.
    """
    recorders = [EventRecorder() for _ in range(size)]
    names = [f"node-{i:02d}" for i in range(size)]
    each = [{"events": recorder} for recorder in recorders]
    nodes = start_and_join(network, *names, each=each, **overrides)
    return nodes, recorders


def alive_view(node: Memberlist) -> set[str]:
    return {m.name for m in node.members() if m.state == MemberState.ALIVE}


def everyone_sees(nodes: list[Memberlist], names: set[str]) -> bool:
    return all(alive_view(node) == names for node in nodes)


class ConvergenceTests(SynchronousTestCase):
    def test_small_cluster_with_compression(self) -> None:
        network = SimulatedNetwork(seed=1)
        nodes, _ = build_cluster(network, 5)
        names = {n.name for n in nodes}
        took = network.run_until(lambda: everyone_sees(nodes, names), timeout=10)
        self.assertIsNotNone(took)
        self.assertTrue(all(n.num_members() == 5 for n in nodes))
        # Gossip got compressed at least sometimes, and nothing was dropped.
        for node in nodes:
            self.assertFalse(node.counters.dropped)

    def test_fifty_nodes_one_percent_loss(self) -> None:
        """
        50 nodes join through one seed and all list 50 alive within a
        push/pull interval; a
        crashed node is then declared dead by every survivor within the
        suspicion maximum, and nobody else dies.
        """
        network = SimulatedNetwork(seed=2, loss=0.01)
        nodes, recorders = build_cluster(network, 50, enable_compression=False)
        names = {n.name for n in nodes}
        took = network.run_until(
            lambda: everyone_sees(nodes, names), timeout=CONVERGENCE
        )
        self.assertIsNotNone(took, "50 nodes did not converge in a push/pull")
        detection = crash_and_detect(network, nodes, nodes[17])
        minimum = suspicion_timeout(4, 50, 1.0)
        self.assertIsNotNone(detection)
        assert detection is not None
        self.assertLessEqual(detection, 6 * minimum)
        for recorder in recorders:
            self.assertEqual(set(recorder.dead) - {"node-17"}, set())


def crash_and_detect(
    network: SimulatedNetwork, nodes: list[Memberlist], victim: Memberlist
) -> float | None:
    """
    Crash C{victim}; return how long until every survivor has it dead.
    """
    survivors = [n for n in nodes if n is not victim]
    network.crash(victim)

    def all_see_dead() -> bool:
        for node in survivors:
            member = node.member(victim.name)
            if member is not None and member.state != MemberState.DEAD:
                return False
        return True

    bound = worst_case_detection(victim.config, len(nodes))
    return network.run_until(all_see_dead, timeout=bound, step=0.05)


class DetectionTimeTests(SynchronousTestCase):
    def test_median_detection_over_twenty_seeds(self) -> None:
        """
        Median over 20 seeds: every survivor marks a crashed node dead within
        1.5x the suspicion minimum plus two probe intervals; zero false deaths.
        """
        minimum = suspicion_timeout(4, 50, 1.0)
        times = []
        for seed in range(20):
            network = SimulatedNetwork(seed=100 + seed, loss=0.01)
            nodes, recorders = build_cluster(network, 50, enable_compression=False)
            names = {n.name for n in nodes}
            converged = network.run_until(
                lambda: everyone_sees(nodes, names),  # noqa: B023
                timeout=CONVERGENCE,
            )
            self.assertIsNotNone(converged)
            victim = nodes[1 + seed]
            detection = crash_and_detect(network, nodes, victim)
            self.assertIsNotNone(detection, f"seed {seed}: never detected")
            assert detection is not None
            self.assertLessEqual(detection, 6 * minimum, f"seed {seed}")
            times.append(detection)
            for recorder in recorders:
                self.assertEqual(
                    set(recorder.dead) - {victim.name}, set(), f"seed {seed}"
                )
        self.assertLessEqual(statistics.median(times), 1.5 * minimum + 2.0, times)


def starved_run(lifeguard: bool, seconds: float) -> tuple[int, Counter[str], bool]:
    """
    50 nodes, 5 of them handling input 0.5-2.5 s late.

    @return: false suspicions raised over C{seconds}; for each node
        declared dead somewhere, by how many nodes; and whether every node
        lists all 50 alive again within a minute once the starving ends.
    """
    network = SimulatedNetwork(seed=3, loss=0.0)
    overrides: dict[str, Any] = {"enable_compression": False}
    if not lifeguard:
        overrides.update(awareness_max_multiplier=1, suspicion_max_timeout_mult=1)
    nodes, recorders = build_cluster(network, 50, **overrides)
    names = {n.name for n in nodes}
    assert network.run_until(lambda: everyone_sees(nodes, names), CONVERGENCE)
    before = sum(n.counters.members.suspected for n in nodes)
    for node in nodes[-5:]:
        network.starve(node.transport.host, 0.5, 2.5)
    network.run(seconds)
    suspicions = sum(n.counters.members.suspected for n in nodes) - before
    declared = Counter(victim for r in recorders for victim in r.dead)
    for node in nodes[-5:]:
        network.starve(node.transport.host, 0.0, 0.0)
    healed = network.run_until(lambda: everyone_sees(nodes, names), timeout=60)
    return suspicions, declared, healed is not None


class LifeguardTests(SynchronousTestCase):
    def test_starved_nodes_are_not_declared_dead(self) -> None:
        """
        Over 300 simulated seconds with 5 starved nodes, no node is declared
        dead by the cluster.  A refutation that misses one node can still
        leave that one node's view with a false death (memberlist's gossip
        promises no more), healed by the next message about the victim;
        such local deaths stay rare and every view heals.
        """
        _, declared, healed = starved_run(lifeguard=True, seconds=300)
        self.assertEqual([v for v, by in declared.items() if by > 1], [], declared)
        self.assertLessEqual(sum(declared.values()), 2, declared)
        self.assertTrue(healed)

    def test_lifeguard_reduces_false_suspicions(self) -> None:
        """
        The same scenario with awareness, nacks and dynamic suspicion off
        raises clearly more false suspicions (or deaths).
        """
        on_suspicions, on_declared, _ = starved_run(lifeguard=True, seconds=120)
        off_suspicions, off_declared, _ = starved_run(lifeguard=False, seconds=120)
        on = on_suspicions + 10 * sum(on_declared.values())
        off = off_suspicions + 10 * sum(off_declared.values())
        self.assertGreater(off, 1.5 * on, (on, off))


class PartitionTests(SynchronousTestCase):
    def test_partition_and_heal(self) -> None:
        """
        A 60 s two-way partition: each side marks the other dead; after
        healing, a join restores one cluster within one push/pull interval
        plus the suspicion maximum.
        """
        network = SimulatedNetwork(seed=4)
        nodes, _ = build_cluster(network, 10)
        names = {n.name for n in nodes}
        self.assertIsNotNone(network.run_until(lambda: everyone_sees(nodes, names), 10))
        left, right = nodes[:5], nodes[5:]
        network.partition(
            [n.transport.host for n in left], [n.transport.host for n in right]
        )
        network.run(60)
        for side, other in ((left, right), (right, left)):
            for node in side:
                for peer in other:
                    member = node.member(peer.name)
                    self.assertTrue(
                        member is None or member.state == MemberState.DEAD,
                        f"{node.name} sees {peer.name} as {member}",
                    )
        network.heal()
        left[0].join([right[0].local_member().full_address()])
        bound = 30 + 6 * suspicion_timeout(4, 10, 1.0)
        took = network.run_until(lambda: everyone_sees(nodes, names), timeout=bound)
        self.assertIsNotNone(took, "the cluster did not heal")

    def test_one_way_partition_suspects_but_refutes(self) -> None:
        network = SimulatedNetwork(seed=5)
        nodes, recorders = build_cluster(network, 6, enable_compression=False)
        names = {n.name for n in nodes}
        self.assertIsNotNone(network.run_until(lambda: everyone_sees(nodes, names), 10))
        # node-05 can hear everyone but node-00 cannot hear node-05.
        network.partition(
            [nodes[5].transport.host], [nodes[0].transport.host], one_way=True
        )
        network.run(60)
        # Indirect probes through the others keep node-05 alive for node-00.
        self.assertEqual(sum(len(r.dead) for r in recorders), 0)


class LeaveTests(SynchronousTestCase):
    def test_leave_is_recorded_as_left(self) -> None:
        network = SimulatedNetwork(seed=6)
        nodes, recorders = build_cluster(network, 5)
        names = {n.name for n in nodes}
        self.assertIsNotNone(network.run_until(lambda: everyone_sees(nodes, names), 10))
        done = nodes[3].leave(5)
        network.run(2)
        self.assertTrue(self.successResultOf(done))
        self.assertTrue(self.successResultOf(nodes[3].leave(5)))
        nodes[3].shutdown()
        for node, recorder in zip(nodes, recorders, strict=False):
            if node is nodes[3]:
                continue
            self.assertEqual(known(node, "node-03").state, MemberState.LEFT)
            self.assertEqual(recorder.left, ["node-03"])
            self.assertEqual(recorder.dead, [])

    def test_shutdown_cancels_everything(self) -> None:
        network = SimulatedNetwork(seed=7)
        nodes, _ = build_cluster(network, 3)
        network.run(5)
        for node in nodes:
            self.successResultOf(node.shutdown())
            self.successResultOf(node.shutdown())
        network.run(1)  # let packets in flight land on closed hosts
        self.assertEqual(network.clock.getDelayedCalls(), [])

    def test_rejoin_after_restart_with_new_incarnation(self) -> None:
        network = SimulatedNetwork(seed=8)
        nodes, _ = build_cluster(network, 4)
        names = {n.name for n in nodes}
        self.assertIsNotNone(network.run_until(lambda: everyone_sees(nodes, names), 10))
        victim = nodes[2]
        host = victim.transport.host
        network.crash(victim)
        network.run(40)
        self.assertNotIn("node-02", alive_view(nodes[0]))
        network.restore(host)
        reborn = network.memberlist("node-02", host=host)
        reborn.start()
        reborn.join([nodes[0].local_member().full_address()])
        everyone = [*nodes[:2], nodes[3], reborn]
        self.assertIsNotNone(
            network.run_until(lambda: everyone_sees(everyone, names), 40)
        )


class ConfigTests(SynchronousTestCase):
    def test_presets(self) -> None:
        lan, wan, local = GossipConfig.lan(), GossipConfig.wan(), GossipConfig.local()
        self.assertEqual((lan.probe_interval, lan.probe_timeout), (1.0, 0.5))
        self.assertEqual(
            (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult), (5.0, 3.0, 6)
        )
        self.assertEqual(
            (local.probe_timeout, local.gossip_interval, local.indirect_checks),
            (0.2, 0.1, 1),
        )
        self.assertEqual(lan.udp_buffer_size, 1400)
        self.assertEqual(lan.vsn(), bytes([1, 5, 2, 0, 0, 0]))
        self.assertEqual(
            GossipConfig.lan(name="x", probe_interval=2.0).probe_interval, 2.0
        )

    def test_invalid_values_name_the_field(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"probe_interval": 0}, "probe_interval"),
            ({"bind_port": 70000}, "bind_port"),
            ({"bind_address": "localhost"}, "bind_address"),
            ({"protocol_version": 9}, "protocol_version"),
            ({"name": ""}, "name"),
            ({"label": "x" * 300}, "label"),
            ({"gossip_nodes": -1}, "gossip_nodes"),
            ({"probe_timeout": 5.0}, "probe_timeout"),
        ]
        for kwargs, field in cases:
            error = self.assertRaises(ValueError, GossipConfig.lan, **kwargs)
            self.assertIn(field, str(error))
