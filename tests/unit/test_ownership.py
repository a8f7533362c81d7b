"""
The promise of the whole project, under faults: after a partition, a
one-way loss, a false death or a restart, every node agrees again on who
is in the cluster and on the owners of every key.

Four participants run as L{ClusterService}s on the simulated network with
memberlist's LAN timings and Alloy's 60 s rejoin interval.  After the
fault ends, every node must list the same peers in the same states and
name the same owner for each of 10,000 keys within one push/pull interval
plus one rejoin interval.  Each case runs over five seeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from cluster import ClusterService, Op, PeerState
from cluster.ckit.messages import StateMessage, encode_state
from cluster.gossip.framing import PacketCodec
from cluster.gossip.wire import MessageType
from cluster.shard import _stepped
from cluster.testing import SimulatedNetwork
from tests.helpers import cluster_services, node_of, transport_of

SEEDS = (1, 2, 3, 4, 5)
PUSH_PULL_INTERVAL = 30.0
REJOIN_INTERVAL = 60.0
BOUND = PUSH_PULL_INTERVAL + REJOIN_INTERVAL
KEYS = [random.Random(8).getrandbits(64) for _ in range(10_000)]


def cluster(network: SimulatedNetwork, size: int = 4) -> list[ClusterService]:
    """
    C{size} services that discover each other through the first two, all
    participants once joined.
    """
    services = cluster_services(
        network,
        size,
        "node",
        seeds=2,
        stagger=0.5,
        rejoin_interval=REJOIN_INTERVAL,
    )
    for svc in services:
        svc.change_state(PeerState.PARTICIPANT)
    return services


def views(services: list[ClusterService]) -> list[list[tuple[str, str, PeerState]]]:
    return [
        [(p.name, p.addr, p.state) for p in node_of(svc).peers()] for svc in services
    ]


def agreed(
    services: list[ClusterService], expected: dict[str, PeerState]
) -> Callable[[], bool]:
    """
    Whether every service lists exactly C{expected} and names the same
    owner for every key.
    """

    def check() -> bool:
        seen = views(services)
        if any({name: state for name, _, state in v} != expected for v in seen):
            return False
        if any(v != seen[0] for v in seen):
            return False
        owners = {
            tuple(p[0].name for p in svc.sharder.lookup_many(KEYS, 1, Op.READ_WRITE))
            for svc in services
        }
        return len(owners) == 1

    return check


def everyone(state: PeerState, services: list[ClusterService]) -> dict[str, PeerState]:
    return {svc.options.node_name: state for svc in services}


class OwnershipAfterFaultTests(SynchronousTestCase):
    #: Where every network's clock starts (members start at its seconds'
    #: incarnation, see L{cluster.gossip.state.initial_incarnation}).
    start_time = 0.0

    def network(self, seed: int) -> SimulatedNetwork:
        network = SimulatedNetwork(seed=seed)
        network.clock.advance(self.start_time)
        return network

    def settle(self, network: SimulatedNetwork, services: list[ClusterService]) -> None:
        took = network.run_until(
            agreed(services, everyone(PeerState.PARTICIPANT, services)), 30
        )
        self.assertIsNotNone(took, "the cluster never agreed before the fault")

    def assertAgreeWithin(
        self,
        network: SimulatedNetwork,
        services: list[ClusterService],
        expected: dict[str, PeerState],
        seed: int,
        case: str,
    ) -> float:
        took = network.run_until(agreed(services, expected), BOUND, step=0.5)
        self.assertIsNotNone(
            took,
            f"{case}, seed {seed}: no agreement {BOUND} s after the fault ended: "
            f"{views(services)}",
        )
        assert took is not None
        return took

    def isolate_then_agree(
        self, seconds: float, case: str, *, one_way: bool = False
    ) -> list[ClusterService]:
        """
        For each seed: settle four nodes, cut the last one off from the
        rest for C{seconds} (only what it sends is lost when C{one_way}),
        check the rest no longer list it, heal, and require agreement
        within L{BOUND}.

        @return: the isolated service of each seed, for checks of its own.
        """
        isolated = []
        for seed in SEEDS:
            network = self.network(seed)
            services = cluster(network)
            self.settle(network, services)
            lone, rest = services[-1], services[:-1]
            network.partition(
                [transport_of(lone).host],
                [transport_of(s).host for s in rest],
                one_way=one_way,
            )
            network.run(seconds)
            self.assertNotIn(
                lone.options.node_name, [p.name for p in rest[0].data().peers()]
            )
            network.heal()
            self.assertAgreeWithin(
                network,
                services,
                everyone(PeerState.PARTICIPANT, services),
                seed,
                case,
            )
            isolated.append(lone)
        return isolated

    def test_two_way_partition_long_enough_for_a_death(self) -> None:
        """
        One node is cut off for 60 s: both sides declare the other dead and
        forget it; the rejoin loop brings them together, and the returning
        node's participant state is accepted again.
        """
        self.isolate_then_agree(60, "partition")

    def test_one_way_loss_that_gets_a_node_declared_dead(self) -> None:
        """
        Everything the node sends is lost for 40 s while it hears everyone:
        the others declare it dead; it refutes once its packets get
        through again.
        """
        self.isolate_then_agree(40, "one-way loss", one_way=True)

    def test_declared_dead_refutes_and_comes_back(self) -> None:
        """
        A node unreachable for 12 s (a long pause) is declared dead by the
        others (three accusers: about 5 s) but does not yet declare them
        dead (its lone suspicions run 24 s).  Back, it learns that it is
        dead and refutes, or, when the others forgot it first, joins
        again as a new member; either way its state is agreed again.
        """
        refuted = []
        for paused in self.isolate_then_agree(12, "false death"):
            assert paused.node is not None
            refuted.append(paused.node.memberlist.counters.members.refuted)
        # The refutation path was taken.
        self.assertTrue(any(refuted), refuted)

    def test_restarted_node_comes_back_as_a_viewer(self) -> None:
        """
        A participant crashes and a new process with the same name and
        address starts while copies of its old participant state keep
        arriving at the survivors: it is a viewer on every node within
        seconds, and stays one.
        """
        for seed in SEEDS:
            network = self.network(seed)
            services = cluster(network)
            self.settle(network, services)
            victim, rest = services[-1], services[:-1]
            assert victim.node is not None
            old = StateMessage(
                victim.options.node_name,
                PeerState.PARTICIPANT,
                victim.node.lamport_time(),
            )
            replay = StaleReplay(network, old, rest)
            network.crash(victim.node)
            network.run(10)  # declared dead, not yet forgotten
            replay.start()
            network.run(5)
            network.restore(transport_of(victim).host)
            reborn = network.cluster_service(
                victim.options, host=transport_of(victim).host
            )
            reborn.startService()
            everybody = [*rest, reborn]
            expected = everyone(PeerState.PARTICIPANT, rest)
            expected[victim.options.node_name] = PeerState.VIEWER
            # The new process states itself a viewer at its first join,
            # newer than any copy of the old state: agreed within a few
            # gossip rounds, not a push/pull interval later.
            took = network.run_until(agreed(everybody, expected), 5, step=0.1)
            self.assertIsNotNone(took, f"restart, seed {seed}: {views(everybody)}")
            # Old copies keep coming: nothing changes.
            network.run(20)
            self.assertTrue(agreed(everybody, expected)(), views(everybody))
            self.assertGreater(replay.sent, 40)
            for svc in rest:
                assert svc.node is not None
                self.assertGreater(svc.node.counters.states.stale_state, 20)
            replay.stop()


class OwnershipWithSteppedUpdatesTests(OwnershipAfterFaultTests):
    """
    The same faults, with every ring update cut into steps of 128 tokens
    (a 4-node ring of 512 tokens per node takes about twenty reactor
    turns), as a node in a very large cluster applies its updates:
    lookups answer from the previous peers between steps, and changes that
    arrive during the steps are applied after them (L{cluster.ckit.node}).
    """

    def setUp(self) -> None:
        self.patch(_stepped, "STEP_TOKENS", 128)


class OwnershipAtWallClockTimeTests(OwnershipAfterFaultTests):
    """
    The same faults on clocks started at a wall-clock time: members start
    at incarnations near 1.8e9 (the clock's seconds), and a restarted
    process starts above its old incarnation, overriding its old record
    rather than refuting it.  A false death is still refuted (the paused
    node is no new process), and the promises hold either way.
    """

    start_time = 1_800_000_000.0


class StaleReplay:
    """
    Sends a stale state message to C{targets} twice a second, from a
    stranger's address, as a late retransmission would arrive.
    """

    def __init__(
        self,
        network: SimulatedNetwork,
        message: StateMessage,
        targets: list[ClusterService],
    ) -> None:
        self.network = network
        self.packet = PacketCodec().seal(
            bytes([MessageType.USER]) + encode_state(message), crc=False
        )
        self.targets = list(targets)
        self.transport = network.transport()
        self.sent = 0
        self.running = False

    def start(self) -> None:
        self.running = True
        self.network.clock.callLater(0, self.tick)

    def stop(self) -> None:
        self.running = False

    def tick(self) -> None:
        if not self.running:
            return
        for svc in self.targets:
            self.transport.send_packet(
                self.packet, (transport_of(svc).host, transport_of(svc).port)
            )
            self.sent += 1
        self.network.clock.callLater(0.5, self.tick)
