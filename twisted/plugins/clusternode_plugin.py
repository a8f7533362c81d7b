# The twistd plugin: only a lazy ServiceMaker, so that listing plugins
# imports nothing of the cluster (see cluster/daemon/tap.py for everything else).
from twisted.application.service import ServiceMaker

clusternode = ServiceMaker(
    "clusternode",
    "cluster.daemon.tap",
    "A node of a gossip cluster (memberlist, ckit sharding, Alloy's service).",
    "clusternode",
)
