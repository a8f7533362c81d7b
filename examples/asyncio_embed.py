"""
An asyncio program that embeds the cluster service.

Three nodes in one process, on free ports of 127.0.0.1, run on the
asyncio loop that C{asyncio.run} starts: Twisted's asyncio reactor drives
them, and every Deferred is awaited as an asyncio future.  The program
waits until each node's view of the cluster is ready (all three
participants), asks each node who owns a few keys, and stops them.

    python examples/asyncio_embed.py

Two lines make a Twisted library usable from asyncio:

    - C{asyncioreactor.install(asyncio.get_running_loop())}, first thing in
      the coroutine C{asyncio.run} runs, before anything imports
      C{twisted.internet.reactor};
    - C{await deferred.asFuture(asyncio.get_running_loop())} for any
      Deferred the library returns.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from twisted.internet import asyncioreactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from cluster import (
    ClusterService,
    ICluster,
    IComponent,
    Op,
    Options,
    PeerState,
    SimpleServiceHost,
)
from cluster.gossip import GossipConfig
from cluster.shard import string_key

NAMES = ("a", "b", "c")
KEYS = ("job-1", "job-2", "job-3", "job-4", "job-5")
#: Start-up, readiness and stop each take well under a second on loopback;
#: a program that waits forever for a cluster helps nobody.
PATIENCE = 30.0

T = TypeVar("T")


def future(deferred: Deferred[T]) -> asyncio.Future[T]:
    """
    C{deferred} as a future of the running asyncio loop, to C{await}.
    """
    return deferred.asFuture(asyncio.get_running_loop())


@implementer(IComponent)
class Readiness:
    """
    A component that fires its waiters once its node's view of the cluster
    is ready (L{ICluster.ready}): the service tells it of every change.
    """

    def __init__(self, cluster: ICluster) -> None:
        self.cluster = cluster
        self._waiters: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        """
        A Deferred firing once the view is ready (at once if it is).
        """
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        self.notify_cluster_change()
        return waiter

    def notify_cluster_change(self) -> None:
        if self.cluster.ready():
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)


async def owner(service: ClusterService, readiness: Readiness, key: str) -> str:
    """
    The name of the participant that owns C{key}, once C{service}'s view
    of the cluster is ready.
    """
    await future(readiness.wait())
    return service.data().lookup(string_key(key), 1, Op.READ_WRITE)[0].name


def start(
    reactor: IReactorTime, name: str, seeds: list[str]
) -> tuple[ClusterService, Readiness]:
    """
    Start the service of node C{name}, joining C{seeds}; it is ready once
    it knows all of L{NAMES} as participants.
    """
    host = SimpleServiceHost()  # lists the components the service tells
    service = ClusterService(
        Options(
            enable_clustering=True,
            node_name=name,
            bind_address="127.0.0.1",
            bind_port=0,  # a free port: service.port once started
            gossip=GossipConfig.local(),  # nodes on one host
            discover_peers=seeds.copy,
            minimum_cluster_size=len(NAMES),
        ),
        reactor=reactor,
        host=host,
    )
    readiness = Readiness(service.data())
    host.register(readiness)
    service.startService()
    return service, readiness


async def main() -> None:
    asyncioreactor.install(asyncio.get_running_loop())
    from twisted.internet import reactor  # the one just installed

    nodes: list[tuple[ClusterService, Readiness]] = []
    for name in NAMES:
        seeds = [f"127.0.0.1:{nodes[0][0].port}"] if nodes else []
        nodes.append(start(reactor, name, seeds))
        await asyncio.wait_for(future(nodes[-1][0].when_joined()), PATIENCE)
    print(f"joined: {', '.join(NAMES)}")
    for service, _ in nodes:
        await future(service.change_state(PeerState.PARTICIPANT))

    await asyncio.wait_for(
        asyncio.gather(*(future(readiness.wait()) for _, readiness in nodes)),
        PATIENCE,
    )
    participants = sorted(peer.name for peer in nodes[0][0].data().peers())
    print(f"ready: {len(participants)} participants ({', '.join(participants)})")

    for key in KEYS:
        answers = await asyncio.gather(
            *(owner(service, readiness, key) for service, readiness in nodes)
        )
        said = ", ".join(
            f"{name} says {answer}" for name, answer in zip(NAMES, answers, strict=True)
        )
        print(f"{key}: {said}")

    # Terminating, leave, shut down: one at a time, the seed last.
    for service, _ in reversed(nodes):
        await asyncio.wait_for(future(service.stopService()), PATIENCE)
    print("stopped")


if __name__ == "__main__":
    asyncio.run(main())
