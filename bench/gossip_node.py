"""
One gossip node in its own process, for benchmarks:
C{python bench/gossip_node.py NAME PORT EXPECTED GO_FILE [SEED_PORT]}.

Starts, prints C{ready}, waits for GO_FILE to exist (so interpreter
start-up is not timed), joins SEED_PORT, prints C{converged <unix time>}
once it lists EXPECTED alive members, and runs until killed.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred

from cluster.gossip import GossipConfig, Memberlist


async def run(
    name: str, port: int, expected: int, go_file: str, seed: int | None
) -> None:
    node = Memberlist(
        GossipConfig.lan(name=name, bind_address="127.0.0.1", bind_port=port),
        reactor=reactor,
    )
    await node.start()
    print("ready", flush=True)
    while not os.path.exists(go_file):
        await task.deferLater(reactor, 0.002, lambda: None)  # type: ignore[arg-type]
    if seed is not None:
        await node.join([f"127.0.0.1:{seed}"])
    while node.num_members() < expected:
        await task.deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
    print(f"converged {time.time():.6f}", flush=True)
    await Deferred()  # run until killed


def main() -> None:
    name, port, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    go_file = sys.argv[4]
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else None
    ensureDeferred(run(name, port, expected, go_file, seed))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
