"""
The interfaces of the cluster service (Alloy's C{cluster.Cluster},
C{cluster.Component} and the part of C{service.Host} it uses).

C{Cluster}, C{Component} and C{ServiceHost} are deprecated aliases of
L{ICluster}, L{IComponent} and L{IServiceHost}, kept for one release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface

if TYPE_CHECKING:
    from cluster.peer import Peer
    from cluster.shard import Op

__all__ = [
    "Cluster",
    "Component",
    "ICluster",
    "IComponent",
    "IServiceHost",
    "ServiceHost",
]


class ICluster(Interface):
    """
    The read-only view of the cluster that components use.
    """

    def lookup(key: int, replication_factor: int, op: Op) -> list[Peer]:
        """
        The C{replication_factor} owners of C{key} for C{op}.

        @raise cluster.shard.NotEnoughPeersError: when fewer peers qualify.
        """

    def peers() -> list[Peer]:
        """
        Every participant and terminating peer, sorted by name (viewers
        own nothing and are left out).
        """

    def ready() -> bool:
        """
        Whether the cluster is big enough (or waited long enough) to admit
        traffic.
        """


class IComponent(Interface):
    """
    A component that wants to hear about cluster changes.
    """

    def notify_cluster_change() -> None:
        """
        Peers or readiness changed; look up your keys again.  Called at
        most once a second, coalesced.
        """


class IServiceHost(Interface):
    """
    What the service needs from the program embedding it.
    """

    def list_components() -> list[object]:
        """
        Every running component; those providing L{IComponent} are told
        about cluster changes.
        """


Cluster = ICluster
"""
Deprecated alias of L{ICluster}, kept for one release.
"""

Component = IComponent
"""
Deprecated alias of L{IComponent}, kept for one release.
"""

ServiceHost = IServiceHost
"""
Deprecated alias of L{IServiceHost}, kept for one release.
"""
