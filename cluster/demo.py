"""
A local demo cluster: C{python -m cluster.demo [N]} starts N gossip nodes
on loopback in one process (real UDP and TCP sockets), joins them through
the first, prints the members each node sees, shows one node leaving
gracefully, and exits.
"""

from __future__ import annotations

import sys

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime

from cluster.gossip import GossipConfig, Memberlist, MemberState


def _table(nodes: list[Memberlist]) -> str:
    lines = []
    for node in nodes:
        view = ", ".join(
            f"{m.name}={m.state}" for m in sorted(node.members(), key=lambda m: m.name)
        )
        lines.append(f"  {node.name} (port {node.port}) sees: {view}")
    return "\n".join(lines)


async def _demo(reactor: IReactorTime, size: int) -> None:
    nodes = [
        Memberlist(
            GossipConfig.local(name=f"demo-{i}", bind_address="127.0.0.1", bind_port=0),
            reactor=reactor,
        )
        for i in range(size)
    ]
    await gatherResults([node.start() for node in nodes])
    seed = f"127.0.0.1:{nodes[0].port}"
    for node in nodes[1:]:
        await node.join([seed])
    for _ in range(50):
        if all(n.num_members() == size for n in nodes):
            break
        await task.deferLater(reactor, 0.1, lambda: None)
    print(f"{size} nodes on 127.0.0.1, joined through {seed}:")
    print(_table(nodes))
    leaver = nodes[-1]
    await leaver.leave(2.0)
    await leaver.shutdown()
    await task.deferLater(reactor, 0.5, lambda: None)
    records = [n.member(leaver.name) for n in nodes[:-1]]
    states = sorted({str(m.state) for m in records if m is not None})
    print(f"{leaver.name} left gracefully; the others record: {', '.join(states)}")
    if states != [str(MemberState.LEFT)]:
        raise SystemExit(f"expected every node to record a leave, got {states}")
    await gatherResults([node.shutdown() for node in nodes[:-1]])


def main(reactor: IReactorTime, *argv: str) -> Deferred[None]:
    size = int(argv[0]) if argv else 5
    return Deferred.fromCoroutine(_demo(reactor, size))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
