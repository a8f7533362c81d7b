"""
A Twisted gossip cluster: memberlist-compatible membership
(L{cluster.gossip}), ckit-style peer states and sharding (L{cluster.node},
L{cluster.shard}), and Alloy's cluster service (L{ClusterService}).
"""

from cluster.interfaces import Cluster, Component, ServiceHost
from cluster.options import Options
from cluster.peer import Peer, PeerState
from cluster.service import (
    SERVICE_NAME,
    ClusterService,
    ComponentBlock,
    Definition,
    SimpleServiceHost,
)
from cluster.shard import Op

__all__ = [
    "SERVICE_NAME",
    "Cluster",
    "ClusterService",
    "Component",
    "ComponentBlock",
    "Definition",
    "Op",
    "Options",
    "Peer",
    "PeerState",
    "ServiceHost",
    "SimpleServiceHost",
]
