"""
The cluster's HTTP resources (Alloy's C{/api/v0/web/peers}), over any
L{cluster.interfaces.Cluster}.  The full status site grows here.
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource
from twisted.web.server import Request

from cluster.interfaces import Cluster

__all__ = ["ClusterResource", "DisabledResource", "PeersResource"]


class PeersResource(Resource):
    """
    C{GET} answers C{[{"name", "addr", "isSelf", "state"}, ...]}: every
    non-viewer peer, sorted by name.
    """

    isLeaf = True

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        body = [peer.to_json() for peer in self.cluster.peers()]
        return json.dumps(body).encode("utf-8")


class ClusterResource(Resource):
    """
    The service's handler root, mounted at C{/api/v0/web/}.
    """

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.putChild(b"peers", PeersResource(cluster))


class DisabledResource(Resource):
    """
    Every path answers 404 C{clustering is disabled}, as Alloy's handler.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"clustering is disabled\n"
