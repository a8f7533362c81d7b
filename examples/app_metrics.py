"""
An application that embeds a cluster node and serves, on its one HTTP port:

    GET /owner?key=K   the node that owns the key K (the application's work)
    GET /metrics       the application's metrics and the node's, one registry
    GET /cluster/      the node's status site: page, JSON API, /-/ready...

Run one per node, from the repository root:

    python examples/app_metrics.py --node-name a --bind 127.0.0.1:7001 \\
        --http tcp:8081:interface=127.0.0.1
    python examples/app_metrics.py --node-name b --bind 127.0.0.1:7002 \\
        --http tcp:8082:interface=127.0.0.1 --join 127.0.0.1:7001

Ctrl-C (or SIGTERM) leaves the cluster and stops.  Point Prometheus at
C{/metrics}: the cluster's dashboards and rules (C{deploy/}) work on it as
on a C{clusternode}'s.
"""

from __future__ import annotations

import os
import sys

from prometheus_client import CollectorRegistry, Counter
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.util import redirectTo

# The cluster package of this checkout, when run from a source tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cluster import ClusterService, ICluster, Op, Options, PeerState
from cluster.alloy.discovery import static
from cluster.daemon.flags import (
    Parameter,
    host_port,
    join_addresses,
    server_endpoint,
)
from cluster.gossip import BindError, GossipConfig
from cluster.shard import NotEnoughPeersError, string_key
from cluster.web.site import MetricsResource, status_site

# Where the node's status site lives in the application's tree.
CLUSTER_PATH = b"cluster"


class OwnerResource(Resource):
    """
    C{GET ?key=K} answers the name of the node that owns C{K}, or 503 while
    the cluster has no participant to own it; each answer is counted.
    """

    isLeaf = True

    def __init__(self, cluster: ICluster, answered: Counter) -> None:
        super().__init__()
        self.cluster = cluster
        self.answered = answered

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        key = (request.args or {}).get(b"key", [b""])[0].decode("utf-8", "replace")
        if not key:
            request.setResponseCode(400)
            return b"missing query parameter: key\n"
        try:
            owner = self.cluster.lookup(string_key(key), 1, Op.READ_WRITE)[0]
        except NotEnoughPeersError:
            request.setResponseCode(503)
            return b"no owner yet\n"
        self.answered.inc()
        return f"{owner.name}\n".encode()


class Mounted(Resource):
    """
    A site served under a path of the application (C{/cluster/}): its
    children are the site's, and the bare path redirects to the path with
    a slash, against which the status page's relative links resolve.
    """

    def __init__(self, site: Resource) -> None:
        super().__init__()
        self.site = site

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        child: Resource = self.site.getChildWithDefault(path, request)
        return child

    def render_GET(self, request: Request) -> bytes:
        # Relative, so it holds behind a proxy that adds a prefix too.
        here: bytes = (request.prepath or [b""])[-1]
        page: bytes = redirectTo(here + b"/", request)
        return page


def application_resource(
    service: ClusterService, registry: CollectorRegistry
) -> Resource:
    """
    The application's whole HTTP tree.

    @param service: the embedded node, built with C{Options(metrics=registry)}
        so that its metrics are on C{registry} too.
    @param registry: the application's one registry; its own counter is
        registered there.
    """
    answered = Counter(
        "app_owner_lookups",
        "Owner lookups answered by /owner.",
        registry=registry,
    )
    root = Resource()
    root.putChild(b"owner", OwnerResource(service.data(), answered))
    # One scrape for everything: what the application and the node export.
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(CLUSTER_PATH, Mounted(status_site(service, registry)))
    return root


PARAMETERS = (
    Parameter("node-name", "app", "This node's name in the cluster."),
    Parameter("bind", "127.0.0.1:7946", "Gossip address (host:port).", host_port),
    Parameter(
        "http",
        "tcp:8080:interface=127.0.0.1",
        "The application's HTTP.",
        server_endpoint,
    ),
    Parameter("join", "", "host:port of nodes to join, by commas.", join_addresses),
)


class AppOptions(usage.Options):
    """
    The example's command line, read as C{clusternode} reads its flags.
    """

    synopsis = "python examples/app_metrics.py [options]"
    longdesc = "An application embedding a node: /owner, /metrics, /cluster/."
    optParameters = [parameter.option() for parameter in PARAMETERS]

    def __init__(self) -> None:
        super().__init__()
        for parameter in PARAMETERS:  # usage coerces given values only
            self[parameter.name] = parameter.coerce(str(parameter.default))


def node_service(
    options: AppOptions, reactor: IReactorTime, registry: CollectorRegistry
) -> ClusterService:
    """
    The embedded node of C{options}, its metrics on C{registry}.
    """
    host, port = options["bind"]
    return ClusterService(
        Options(
            enable_clustering=True,
            node_name=options["node-name"],
            bind_address=host,
            bind_port=port,
            discover_peers=static(options["join"]),
            gossip=GossipConfig.local(),
            metrics=registry,  # the node's metrics on the application's registry
        ),
        reactor=reactor,
    )


async def main(reactor: IReactorTime, *argv: str) -> None:
    """
    Run the application until the reactor stops (Ctrl-C, SIGTERM), then
    leave the cluster.  A flag, or an address that cannot be bound, ends
    it with one line naming the flag.
    """
    options = AppOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise SystemExit(f"app_metrics: {e}") from None
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    registry = CollectorRegistry(auto_describe=True)
    node = node_service(options, reactor, registry)
    try:
        node.startService()
    except BindError as e:
        raise SystemExit(f"app_metrics: --bind: {e}") from None
    site = Site(application_resource(node, registry))
    try:
        port = await serverFromString(reactor, options["http"]).listen(site)
    except CannotListenError as e:
        await node.stopService()
        raise SystemExit(f"app_metrics: --http: {e}") from None

    def stop() -> Deferred[list[object]]:
        return gatherResults([port.stopListening(), node.stopService()])

    IReactorCore(reactor).addSystemEventTrigger("before", "shutdown", stop)
    await node.when_joined()  # joined, or bootstrapped a new cluster
    await node.change_state(PeerState.PARTICIPANT)  # takes a share of the keys
    await Deferred()  # never fires: the application runs until stopped


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
