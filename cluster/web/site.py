"""
The HTTP resources of a cluster node, mounted two ways:

  - L{service_handler} builds Alloy's handler for C{/api/v0/web/}:
    L{ClusterResource} (C{peers}), or L{DisabledResource} (404
    C{clustering is disabled}) when clustering is off;
  - L{status_site} builds a whole site for a node's HTTP endpoint: the
    JSON API (C{peers}, C{cluster}, C{lookup}), C{/-/ready},
    C{/-/healthy}, C{/metrics} over the node's own registry, and the HTML
    status page at C{/}.  It answers with clustering off too, as a
    one-node cluster (as Alloy's web API does).

Every resource renders synchronously on the reactor thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request
from twisted.web.template import renderElement

from cluster.alloy.interfaces import Cluster
from cluster.alloy.service import ClusterService
from cluster.shard import NotEnoughPeersError, Op, string_key
from cluster.web.page import StatusPage
from cluster.web.status import LOOKUP_OPS, KeyShares, LookupAnswer, cluster_status

__all__ = [
    "HANDLER_BASE",
    "ClusterResource",
    "ClusterStatusResource",
    "DisabledResource",
    "HealthyResource",
    "LookupResource",
    "MetricsResource",
    "PeersResource",
    "ReadyResource",
    "StatusPageResource",
    "parse_lookup",
    "service_handler",
    "status_site",
]

# Where Alloy mounts the cluster service's handler.
HANDLER_BASE = "/api/v0/web/"


def _no_store(request: Request) -> None:
    # Status answers are stale as soon as they are sent.
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")


def _json(request: Request, body: object, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    _no_store(request)
    return json.dumps(body).encode("utf-8")


def _text(request: Request, body: str, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    _no_store(request)
    return f"{body}\n".encode()


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
        return _json(request, [peer.to_json() for peer in self.cluster.peers()])


class ClusterResource(Resource):
    """
    Alloy's handler of the cluster service, mounted at L{HANDLER_BASE}:
    C{peers} alone (see L{service_handler}).
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


class ClusterStatusResource(Resource):
    """
    C{GET} answers the node and every memberlist member (see
    L{cluster.web.status.ClusterStatus.to_json})::

        {"clustering": true,
         "self": {"name", "addr", "state", "lamportTime", "healthScore",
                  "ready", "clusterName", "protocolVersion"},
         "members": [{"name", "addr", "port", "state", "incarnation",
                      "peerState", "isSelf"}, ...]}
    """

    isLeaf = True

    def __init__(self, service: ClusterService) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        return _json(request, cluster_status(self.service).to_json())


def parse_lookup(args: dict[bytes, list[bytes]]) -> tuple[str, int, Op]:
    """
    The key, C{n} (default 1) and L{Op} (default C{readwrite}) of a lookup
    query C{?key=K&n=N&op=read|readwrite}.

    @raise ValueError: with the message for the client.
    """

    def arg(name: str) -> str | None:
        values = args.get(name.encode("ascii"))
        if not values:
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{name} must be UTF-8") from None

    key = arg("key")
    if key is None:
        raise ValueError("missing query parameter: key")
    n_text = arg("n") or "1"
    # Plain digits only: int() would also take "+1", " 1" or "1_0".
    plain = n_text.isascii() and n_text.isdigit() and len(n_text) <= 9
    if not plain or int(n_text) < 1:
        raise ValueError(f"n must be a positive integer, got {n_text[:20]!r}")
    n = int(n_text)
    op_text = arg("op") or "readwrite"
    op = LOOKUP_OPS.get(op_text)
    if op is None:
        raise ValueError(f"op must be read or readwrite, got {op_text!r}")
    return key, n, op


class LookupResource(Resource):
    """
    C{GET ?key=K&n=N&op=read|readwrite} answers the C{N} (default 1)
    owners of the string key C{K} (L{string_key}) for C{op} (default
    C{readwrite}), primary first, as L{PeersResource} lists peers.

    A missing key, or a bad C{n} or C{op}, is a 400 C{{"error": ...}}; too
    few eligible peers is a 503 C{{"error": ..., "need": N, "have": M}}
    with ckit's text: the cluster cannot serve that lookup for now.
    """

    isLeaf = True

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster

    def render_GET(self, request: Request) -> bytes:
        try:
            key, n, op = parse_lookup(request.args or {})
        except ValueError as e:
            return _json(request, {"error": str(e)}, 400)
        try:
            owners = self.cluster.lookup(string_key(key), n, op)
        except NotEnoughPeersError as e:
            body = {"error": str(e), "need": e.need, "have": e.have}
            return _json(request, body, 503)
        return _json(request, [peer.to_json() for peer in owners])


class _Probe(Resource):
    """
    C{GET} answers 200 C{yes} while C{check()} is true, else 503 C{no}.
    """

    isLeaf = True

    def __init__(self, check: Callable[[], object], yes: str, no: str) -> None:
        super().__init__()
        self._check = check
        self._answers = (yes, no)

    def render_GET(self, request: Request) -> bytes:
        yes, no = self._answers
        return _text(request, yes) if self._check() else _text(request, no, 503)


class ReadyResource(_Probe):
    """
    C{GET} answers 200 C{ready} when the cluster admits traffic
    (L{ICluster.ready<cluster.alloy.interfaces.ICluster.ready>}), else 503
    C{not ready}.
    """

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster.ready, "ready", "not ready")
        self.cluster = cluster


class HealthyResource(_Probe):
    """
    C{GET} answers 200 C{healthy} while the service runs, else 503
    C{not running}.
    """

    def __init__(self, service: ClusterService) -> None:
        super().__init__(lambda: service.running, "healthy", "not running")
        self.service = service


class MetricsResource(Resource):
    """
    C{GET} answers C{registry} in Prometheus' text format, rendered on the
    reactor thread.  (Unlike C{prometheus_client.twisted.MetricsResource},
    which renders the global registry on a thread pool of the global
    reactor: two nodes in one process must not share metrics.)
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        body: bytes = generate_latest(self.registry)
        return body


class StatusPageResource(Resource):
    """
    C{GET} answers the HTML status page (L{StatusPage}), which reloads
    itself every C{refresh} seconds.

    With a lookup query (C{?key=K&n=N&op=...}, as L{LookupResource} takes
    it, sent by the page's own form) the page also shows the owners of
    C{K}, or why there are none; it is still the status page, so it is
    still a 200.
    """

    isLeaf = True

    # Inline CSS only: no script, nothing fetched from anywhere.
    _POLICY = (
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"base-uri 'none'; frame-ancestors 'none'"
    )

    def __init__(self, service: ClusterService, refresh: int = 5) -> None:
        super().__init__()
        self.service = service
        self.refresh = refresh
        self.shares = KeyShares()

    def render_GET(self, request: Request) -> object:
        status = cluster_status(self.service, self.shares)
        page = StatusPage(status, self.refresh, self._lookup(request.args or {}))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", self._POLICY)
        _no_store(request)
        return renderElement(request, page)

    def _lookup(self, args: dict[bytes, list[bytes]]) -> LookupAnswer | None:
        """
        The answer to the lookup in C{args}, or C{None} when they ask none.
        """
        if b"key" not in args:
            return None
        try:
            key, n, op = parse_lookup(args)
        except ValueError as e:
            asked = (args[b"key"] or [b""])[0]
            return LookupAnswer(asked.decode("utf-8", "replace"), error=str(e))
        try:
            owners = self.service.data().lookup(string_key(key), n, op)
        except NotEnoughPeersError as e:
            return LookupAnswer(key, n, op, error=str(e))
        return LookupAnswer(key, n, op, tuple(owners))


class _Branch(Resource):
    """
    A path that only holds children: itself it is not found (a bare
    L{Resource} would answer 405).
    """

    def render(self, request: Request) -> bytes:
        body: bytes = NoResource().render(request)
        return body


def _branch(parent: Resource, *path: bytes) -> Resource:
    for segment in path:
        child = parent.children.get(segment)
        if child is None:
            child = _Branch()
            parent.putChild(segment, child)
        parent = child
    return parent


def service_handler(
    service: ClusterService, host: object = None
) -> tuple[str, Resource]:
    """
    Alloy's C{ServiceHandler} for C{service}: the base path
    C{/api/v0/web/} and the resource to mount there, which answers C{GET
    peers} with Alloy's JSON, or 404 C{clustering is disabled} on every
    path when clustering is off.

    @param host: Alloy's service host, taken for the signature's sake; the
        handler does not use it.
    """
    if not service.options.enable_clustering:
        return HANDLER_BASE, DisabledResource()
    return HANDLER_BASE, ClusterResource(service.data())


def status_site(
    service: ClusterService, registry: CollectorRegistry, refresh: int = 5
) -> Resource:
    """
    The root resource of a node's HTTP endpoint::

        GET /                    the HTML status page (text/html);
                                 with ?key=, it also shows the owners
        GET /api/v0/web/peers    Alloy's peer list (JSON)
        GET /api/v0/web/cluster  the node and its members (JSON)
        GET /api/v0/web/lookup   owners of ?key= (JSON; 400, 503)
        GET /-/ready             200 ready / 503 not ready
        GET /-/healthy           200 healthy / 503 not running
        GET /metrics             C{registry}, Prometheus text format

    Serve it with C{twisted.web.server.Site(status_site(...))}.  Unlike
    L{service_handler}, the API answers with clustering off, as a one-node
    cluster whose only peer is the local participant.

    @param service: the node to show.
    @param registry: the node's own metrics registry (never the global
        one), usually the one in C{service.options.metrics}.
    @param refresh: seconds between reloads of the status page (0: never).
    """
    cluster = service.data()
    root = Resource()
    root.putChild(b"", StatusPageResource(service, refresh))
    api = _branch(root, b"api", b"v0", b"web")
    api.putChild(b"peers", PeersResource(cluster))
    api.putChild(b"cluster", ClusterStatusResource(service))
    api.putChild(b"lookup", LookupResource(cluster))
    health = _branch(root, b"-")
    health.putChild(b"ready", ReadyResource(cluster))
    health.putChild(b"healthy", HealthyResource(service))
    root.putChild(b"metrics", MetricsResource(registry))
    return root
