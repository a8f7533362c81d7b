"""
A Twisted gossip cluster: memberlist-compatible membership
(L{cluster.gossip}), ckit-style peer states and sharding (L{cluster.ckit.node},
L{cluster.shard}), and Alloy's cluster service (L{ClusterService}).
"""

from cluster.alloy.interfaces import (
    Cluster,
    Component,
    ICluster,
    IComponent,
    IServiceHost,
    ServiceHost,
)
from cluster.alloy.options import Options
from cluster.alloy.service import (
    SERVICE_NAME,
    ClusterService,
    ComponentBlock,
    Definition,
    JoinRefused,
    SimpleServiceHost,
)
from cluster.peer import Peer, PeerState
from cluster.shard import Op

__all__ = [
    "SERVICE_NAME",
    "Cluster",
    "ClusterService",
    "Component",
    "ComponentBlock",
    "Definition",
    "ICluster",
    "IComponent",
    "IServiceHost",
    "JoinRefused",
    "Op",
    "Options",
    "Peer",
    "PeerState",
    "ServiceHost",
    "SimpleServiceHost",
]
