"""
A large cluster on the deterministic simulator (L{cluster.testing}): one
clock, real encoded packets, per-packet latency and loss.

    python bench/simulate.py --nodes 1000 --loss 0.01 --seconds 120

It builds the cluster (joins staggered through one seed, as a rollout
would), then, on the simulated clock:

  - one more node joins: the simulated time until every node lists it
    alive;
  - C{--kills} nodes crash, one after the other: the time until every
    survivor lists each one dead (p50, p99);
  - false deaths: members declared dead (by anyone) that were never
    crashed;
  - bytes sent per node per second, and wall seconds per simulated
    second, over the steady state (C{--seconds}, the kills included).

Gossip compression is off by default (C{--compression} turns it on):
pure-Python LZW is the costliest step per packet, and it changes sizes,
not the protocol.  The script raises the garbage collector's first
threshold to C{--gc-threshold} allocations (Python's default is 700): a
1,000-node simulation holds millions of long-lived objects and, with the
default, spends a third of its wall time collecting (C{--gc-threshold 700}
shows it).

Exits 1 when the simulation itself fails (the cluster never forms, a kill
is never detected); a missed target is printed, not a failure.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from zope.interface import implementer

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _harness as harness
from cluster.gossip import GossipConfig, Member, Memberlist, MemberState
from cluster.gossip.interfaces import IEventDelegate
from cluster.gossip.loops import push_pull_scale
from cluster.gossip.suspicion import worst_case_detection
from cluster.testing import SimulatedNetwork

JOIN_BATCH = 10  # nodes joining together, every JOIN_SPACING simulated seconds
JOIN_SPACING = 0.05


@implementer(IEventDelegate)
class DeathRecorder:
    """
    An event delegate that remembers who was declared dead, by anyone.
    """

    def __init__(self, deaths: set[str]) -> None:
        self.deaths = deaths

    def notify_join(self, member: Member) -> None:
        pass

    def notify_leave(self, member: Member) -> None:
        if member.state == MemberState.DEAD:
            self.deaths.add(member.name)

    def notify_update(self, member: Member) -> None:
        pass


class Simulation:
    def __init__(self, nodes: int, loss: float, seed: int, compression: bool) -> None:
        self.network = SimulatedNetwork(seed=seed, loss=loss)
        self.config = GossipConfig.lan(enable_compression=compression)
        self.deaths: set[str] = set()
        self.nodes: list[Memberlist] = []
        self.crashed: set[str] = set()
        self.size = nodes

    def add(self, name: str) -> Memberlist:
        node = self.network.memberlist(
            name, config=self.config, events=DeathRecorder(self.deaths)
        )
        node.start()
        self.nodes.append(node)
        return node

    def live(self) -> list[Memberlist]:
        return [n for n in self.nodes if n.name not in self.crashed]

    def all_see(self, name: str, state: MemberState) -> Callable[[], bool]:
        def check() -> bool:
            for node in self.live():
                member = node.member(name)
                if member is None or member.state != state:
                    return False
            return True

        return check

    def build(self) -> float | None:
        """
        Start every node, joining through the first in staggered batches;
        the simulated seconds until every node lists every other alive.
        """
        seed = self.add("node-0000").local_member().full_address()
        for index in range(1, self.size):
            self.add(f"node-{index:04d}").join([seed])
            if index % JOIN_BATCH == 0:
                self.network.run(JOIN_SPACING)
        bound = push_pull_scale(self.config.push_pull_interval, self.size) * 2 + 30
        took = self.network.run_until(
            lambda: all(n.num_members() == self.size for n in self.nodes),
            bound,
            step=0.5,
        )
        return took

    def bytes_sent(self) -> int:
        return sum(
            n.counters.traffic.bytes_out + n.counters.traffic.stream_bytes_out
            for n in self.nodes
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, object]:
    gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    sim = Simulation(args.nodes, args.loss, args.seed, args.compression)
    network = sim.network
    wall = time.perf_counter()
    built = sim.build()
    build_wall = time.perf_counter() - wall
    if built is None:
        raise harness.RunFailed(f"the {args.nodes} nodes never all listed each other")
    network.run(args.settle)

    steady_start, wall = network.clock.seconds(), time.perf_counter()
    sent_before = sim.bytes_sent()
    joiner = sim.add("joiner")
    joiner.join([sim.nodes[0].local_member().full_address()])
    join_spread = network.run_until(
        sim.all_see("joiner", MemberState.ALIVE), args.seconds, step=0.05
    )
    if join_spread is None:
        raise harness.RunFailed("the last join never reached every node")

    members = len(sim.nodes)
    # With loss, a node that missed every retransmission of a death hears
    # of it at its next push/pull.
    worst = worst_case_detection(sim.config, members) + push_pull_scale(
        sim.config.push_pull_interval, members
    )
    detections = []
    for k in range(args.kills):
        victim = sim.nodes[1 + k * (members - 2) // max(args.kills, 1)]
        sim.crashed.add(victim.name)
        network.crash(victim)
        took = network.run_until(
            sim.all_see(victim.name, MemberState.DEAD), worst, step=0.05
        )
        if took is None:
            raise harness.RunFailed(f"{victim.name} was never detected by everyone")
        detections.append(took)
    remaining = args.seconds - (network.clock.seconds() - steady_start)
    if remaining > 0:
        network.run(remaining)
    simulated = network.clock.seconds() - steady_start
    steady_wall = time.perf_counter() - wall
    sent = sim.bytes_sent() - sent_before
    return {
        "nodes": args.nodes,
        "loss": args.loss,
        "seed": args.seed,
        "compression": args.compression,
        "gc_threshold": args.gc_threshold,
        "build_wall_s": round(build_wall, 1),
        "build_simulated_s": round(built, 1),
        "join_reaches_everyone_s": round(join_spread, 2),
        "detection_p50_s": round(statistics.median(detections), 2)
        if detections
        else None,
        "detection_p99_s": round(percentile(detections, 0.99), 2)
        if detections
        else None,
        "kills": args.kills,
        "false_deaths": len(sim.deaths - sim.crashed),
        "bytes_per_node_per_s": round(sent / members / simulated),
        "steady_simulated_s": round(simulated, 1),
        "wall_per_simulated_s": round(steady_wall / simulated, 3),
    }


def check_targets(result: dict[str, object]) -> list[str]:
    """
    The issue's targets for a 1,000-node run that this result misses.
    """
    missed = []
    if float(str(result["join_reaches_everyone_s"])) > 3.0:
        missed.append("a join reaches every node within 3 simulated seconds")
    if result["false_deaths"] != 0:
        missed.append("no false deaths")
    if result["nodes"] == 1000:
        if float(str(result["build_wall_s"])) > 120:
            missed.append("the cluster builds in under 120 wall seconds")
        if float(str(result["wall_per_simulated_s"])) > 1.0:
            missed.append("60 simulated seconds take at most 60 wall seconds")
    return missed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    options = harness.parser(__file__, __doc__)
    options.add_argument("--nodes", type=harness.at_least(3), default=1000)
    options.add_argument("--loss", type=probability, default=0.01)
    options.add_argument("--seconds", type=float, default=120.0)
    options.add_argument("--kills", type=harness.at_least(0), default=10)
    options.add_argument("--seed", type=int, default=1)
    options.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="simulated seconds between the build and the measurements",
    )
    options.add_argument("--compression", action="store_true")
    options.add_argument("--gc-threshold", type=harness.at_least(1), default=50_000)
    args = options.parse_args(argv)
    if args.kills > args.nodes - 2:
        options.error("--kills: between 0 and nodes - 2")
    return args


def probability(text: str) -> float:
    """
    An argument type: a probability below 1.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("a probability below 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except harness.RunFailed as e:
        harness.exit_failed(str(e))
    harness.print_fields(result)
    for target in check_targets(result):
        print(f"missed target: {target}")
    harness.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
