# A Twisted application embedding the cluster service with one component.
#
#   NODE_NAME=a PORT=7001                     twistd -ny examples/workers.tac
#   NODE_NAME=b PORT=7002 JOIN=127.0.0.1:7001 twistd -ny examples/workers.tac
#
# (run from the repository root; use --pidfile= to run several at once).
# Each node logs how many of the 1,000 work items it owns after every
# cluster change.
import os
import sys

# Find workers.py beside this file, and the cluster package of this checkout.
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.dirname(here)]

from twisted.application import service  # noqa: E402

from cluster import ClusterService, Options, PeerState  # noqa: E402
from cluster.gossip import GossipConfig  # noqa: E402
from workers import WorkItems  # noqa: E402

name = os.environ.get("NODE_NAME", "worker")
join = [peer for peer in os.environ.get("JOIN", "").split(",") if peer]
options = Options(
    enable_clustering=True,
    node_name=name,
    bind_address="127.0.0.1",
    bind_port=int(os.environ.get("PORT", "7946")),
    discover_peers=lambda: join,
    rejoin_interval=10.0,
    gossip=GossipConfig.local(),
)
cluster_service = ClusterService(options)
cluster_service.host.register(WorkItems(cluster_service.data(), name))
# Take work once the node has joined (or bootstrapped a new cluster).
cluster_service.when_joined().addCallback(
    lambda _: cluster_service.change_state(PeerState.PARTICIPANT)
)

application = service.Application("workers")
cluster_service.setServiceParent(application)
