"""
How long a node joining a large cluster blocks its reactor.

    python bench/join_block.py --members 1000

One process, the real reactor, real sockets on loopback.  A seed L{Node}
is given the state of a C{--members}-node cluster, as if it had just
merged a push/pull from one of them: every member alive at an address in
127.0.0.0/8 where nothing listens, every member a participant.  A fresh
node (a 512-token ring sharder, as Alloy) then joins the seed: one
push/pull brings it every member and every peer state, and it builds its
ring.  A timer firing every millisecond measures how late the reactor
runs it; the longest delay is the longest block, the seed's answer
included.  The joiner is done when its sharder owns keys on every member.

Target: no block longer than 100 ms.  Exits 1 when the join fails.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from collections.abc import Sequence

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _harness as harness
from cluster.ckit.messages import StateMessage, encode_local_state
from cluster.ckit.node import Node
from cluster.gossip import GossipConfig
from cluster.gossip.wire import PushNodeState, PushPull
from cluster.peer import PeerState
from cluster.shard import ring

TARGET_BLOCK_MS = 100.0
# Synthetic members live where nothing answers: loopback, not our own address.
SYNTHETIC_NETWORK = ipaddress.IPv4Network("127.77.0.0/16")


class BlockMonitor:
    """
    Fires every C{interval} seconds and keeps the longest lateness.
    """

    def __init__(self, clock: IReactorTime, interval: float = 0.001) -> None:
        self.interval = interval
        self.longest = 0.0
        self._last = time.perf_counter()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock

    def start(self) -> None:
        self._last = time.perf_counter()
        self._loop.start(self.interval, now=False)

    def reset(self) -> None:
        self.longest = 0.0

    def stop(self) -> None:
        self._loop.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last - self.interval)
        self._last = now


def synthetic_cluster(seed: Node, members: int) -> PushPull:
    """
    A push/pull as one member of a C{members}-node cluster would send it.
    """
    vsn = seed.memberlist.table.push_states()[0].vsn
    hosts = SYNTHETIC_NETWORK.hosts()
    nodes = []
    states = []
    for index in range(members - 1):
        name = f"member-{index:04d}"
        address = next(hosts).packed
        nodes.append(PushNodeState(name, address, 7946, b"", 1, 0, vsn))
        states.append(StateMessage(name, PeerState.PARTICIPANT, index + 1))
    return PushPull(False, tuple(nodes), encode_local_state(members, states))


def config(name: str) -> GossipConfig:
    return GossipConfig.lan(name=name, bind_address="127.0.0.1", bind_port=0)


async def measure(reactor: IReactorTime, members: int) -> dict[str, object]:
    seed = Node(config("seed"), sharder=ring(512), reactor=reactor)
    await seed.start()
    await seed.change_state(PeerState.PARTICIPANT)
    # The seed merges the cluster's state as from a push/pull it received.
    seed.memberlist.sync.merge(synthetic_cluster(seed, members))
    if len(seed.peers()) != members:
        harness.exit_failed(f"the seed knows {len(seed.peers())} peers, not {members}")

    joiner = Node(config("joiner"), sharder=ring(512), reactor=reactor)
    await joiner.start()
    monitor = BlockMonitor(reactor)
    monitor.start()
    await harness.sleep(reactor, 0.2)
    idle_block = monitor.longest
    monitor.reset()
    started = time.perf_counter()
    await joiner.start([seed.memberlist.local_member().full_address()])
    sharder = joiner.sharder
    assert sharder is not None
    while len(sharder.peers()) < members:
        await harness.sleep(reactor, 0.001)
    ready = time.perf_counter() - started
    # A little longer: anything the join scheduled for later.
    await harness.sleep(reactor, 0.5)
    monitor.stop()
    await joiner.stop()
    await seed.stop()
    return {
        "members": members,
        "longest_block_ms": round(monitor.longest * 1000, 1),
        "idle_block_ms": round(idle_block * 1000, 1),
        "ring_ready_s": round(ready, 3),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    options = harness.parser(__file__, __doc__)
    options.add_argument("--members", type=harness.at_least(2), default=1000)
    args = options.parse_args(argv)
    if args.members > SYNTHETIC_NETWORK.num_addresses - 2:
        options.error(f"--members: at most {SYNTHETIC_NETWORK.num_addresses - 2}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    async def run(reactor: IReactorTime) -> None:
        try:
            result = await measure(reactor, args.members)
        except Exception as e:
            harness.exit_failed(f"the join did not complete: {e}")
        harness.print_fields(result)
        if float(str(result["longest_block_ms"])) > TARGET_BLOCK_MS:
            print(f"missed: a block longer than {TARGET_BLOCK_MS:.0f} ms")
        harness.write_json(args.json, result)

    harness.react(run)


if __name__ == "__main__":
    main()
