# The twistd plugin: only a lazy ServiceMaker, so that listing plugins
# imports nothing of the cluster (see cluster/daemon/tap.py for everything else).
# twistd has no exit status: once its reactor has run it exits 0, even when
# the node could not start (its one line still goes to stderr).  The
# clusternode command (cluster/daemon/main.py) runs the same node and exits
# 1 or 2 on a mistake; docs/running.md says so.
from twisted.application.service import ServiceMaker

clusternode = ServiceMaker(
    "clusternode",
    "cluster.daemon.tap",
    "A node of a gossip cluster (memberlist, ckit sharding, Alloy's service).",
    "clusternode",
)
