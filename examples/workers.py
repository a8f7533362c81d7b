"""
A worked example: a component that owns a share of 1,000 work items.

Every node runs the same L{WorkItems} component; each item goes to the one
participant the cluster's hash ring picks, so the shares never overlap and
always add up to 1,000.  See C{workers.tac} for the application around it.
"""

from __future__ import annotations

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from cluster import ICluster, IComponent, Op
from cluster.shard import NotEnoughPeersError, string_key

ITEMS = [f"work-item-{i}" for i in range(1000)]
KEYS = [string_key(item) for item in ITEMS]


@implementer(IComponent)
@attrs.define(eq=False)
class WorkItems:
    """
    Recomputes which work items are ours on every cluster change.
    """

    cluster: ICluster
    node_name: str
    owned: list[str] = attrs.field(factory=list)
    _log = Logger()

    def notify_cluster_change(self) -> None:
        try:
            owners = [
                self.cluster.lookup(key, 1, Op.READ_WRITE)[0].name for key in KEYS
            ]
        except NotEnoughPeersError:
            owners = []
        self.owned = [
            item
            for item, owner in zip(ITEMS, owners, strict=False)
            if owner == self.node_name
        ]
        self._log.info(
            "{node} owns {count} of {total} work items "
            "({peers} participants, ready={ready})",
            node=self.node_name,
            count=len(self.owned),
            total=len(ITEMS),
            peers=len(self.cluster.peers()),
            ready=self.cluster.ready(),
        )
