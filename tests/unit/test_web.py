"""
Tests for L{cluster.web.site.status_site}: every route, rendered in memory
(treq's client over C{treq.testing.RequestTraversalAgent}, as
C{StubTreq}) for services on the simulated network.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import attrs
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
)
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from cluster import ClusterService, Op, Options, PeerState
from cluster.alloy.discovery import static
from cluster.shard import string_key
from cluster.testing import SimulatedNetwork
from cluster.web.site import service_handler, status_site
from cluster.web.status import cluster_status
from tests.helpers import (
    address,
    cluster_services,
    make_participants,
    node_of,
    start_all,
    started_services,
)

HOSTILE = "<script>alert('x')</script>&\"evil\""


@attrs.frozen
class Reply:
    """
    One answer from the site.
    """

    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def fetch(
    case: SynchronousTestCase,
    site: Resource,
    path: str,
    method: str = "GET",
) -> Reply:
    """
    C{method path} against C{site}, in memory.
    """
    # StubTreq's parts, typed: an in-memory agent under treq's client.
    agent = RequestTraversalAgent(site)
    d = HTTPClient(agent).request(method, "http://127.0.0.1" + path)
    agent.flush()
    response = case.successResultOf(d)
    content = response.content()
    agent.flush()
    body = case.successResultOf(content)
    headers = {
        name.decode("ascii").lower(): values[-1].decode("latin-1")
        for name, values in response.headers.getAllRawHeaders()
    }
    return Reply(response.code, headers, body)


class Rows(HTMLParser):
    """
    The member rows of the status page: C{data-name}, CSS class and the
    text of the badges in each row.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.meta: list[dict[str, str | None]] = []
        self.tags: set[str] = set()
        self._badge: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        found = dict(attrs)
        if tag == "meta":
            self.meta.append(found)
        if tag == "tr" and "member" in (found.get("class") or "").split():
            self.rows.append(
                {"name": found["data-name"], "class": found["class"], "badges": []}
            )
        if tag == "span" and "badge" in (found.get("class") or "").split():
            self._badge = []

    def handle_data(self, data: str) -> None:
        if self._badge is not None:
            self._badge.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._badge is not None:
            if self.rows:
                self.rows[-1]["badges"].append("".join(self._badge))
            self._badge = None


def parse(page: str) -> Rows:
    parser = Rows()
    parser.feed(page)
    parser.close()
    return parser


@attrs.define
class Cluster3:
    """
    Three services, started and settled: svc-0 a viewer, svc-1 and svc-2
    participants, each with its own metrics registry.
    """

    network: SimulatedNetwork
    services: list[ClusterService]
    registries: list[CollectorRegistry]

    @classmethod
    def build(cls, seed: int, **options: Any) -> Cluster3:
        network = SimulatedNetwork(seed=seed)
        registries = [CollectorRegistry() for _ in range(3)]
        services: list[ClusterService] = []
        for i, registry in enumerate(registries):
            seeds = [address(s) for s in services[:1]]
            services.append(
                network.cluster_service(
                    Options(
                        enable_clustering=True,
                        node_name=f"svc-{i}",
                        discover_peers=static(seeds),
                        metrics=registry,
                        **options,
                    )
                )
            )
        start_all(network, services, 3)
        services[1].change_state(PeerState.PARTICIPANT)
        services[2].change_state(PeerState.PARTICIPANT)
        network.run(3)
        return cls(network, services, registries)

    def site(self, index: int = 0) -> Resource:
        return status_site(self.services[index], self.registries[index])

    def stop(self) -> None:
        for svc in self.services:
            if svc.running:
                svc.stopService()
        self.network.run(10)


def peer_json(svc: ClusterService, state: str) -> dict[str, object]:
    return {
        "name": svc.options.node_name,
        "addr": address(svc),
        "isSelf": False,
        "state": state,
    }


class PeersTests(SynchronousTestCase):
    def test_peers_exclude_viewers(self) -> None:
        c = Cluster3.build(seed=700)
        self.addCleanup(c.stop)
        reply = fetch(self, c.site(), "/api/v0/web/peers")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.headers["content-type"], "application/json")
        self.assertEqual(reply.headers["cache-control"], "no-store")
        self.assertEqual(
            reply.json(),
            [
                peer_json(c.services[1], "participant"),
                peer_json(c.services[2], "participant"),
            ],
        )

    def test_service_handler_still_alloys(self) -> None:
        """
        The service's own handler keeps answering C{peers} alone.
        """
        c = Cluster3.build(seed=701)
        self.addCleanup(c.stop)
        base, handler = service_handler(c.services[0])
        self.assertEqual(base, "/api/v0/web/")
        reply = fetch(self, handler, "/peers")
        self.assertEqual(len(reply.json()), 2)
        self.assertEqual(fetch(self, handler, "/lookup?key=a").code, 404)


class ClusterTests(SynchronousTestCase):
    def test_self_and_members(self) -> None:
        c = Cluster3.build(seed=702, cluster_name="prod")
        self.addCleanup(c.stop)
        svc = c.services[1]
        node = node_of(svc)
        reply = fetch(self, c.site(1), "/api/v0/web/cluster")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.headers["content-type"], "application/json")
        body = reply.json()
        self.assertEqual(body["clustering"], True)
        self.assertEqual(
            body["self"],
            {
                "name": "svc-1",
                "addr": address(svc),
                "state": "participant",
                "lamportTime": node.lamport_time(),
                "healthScore": 0,
                "ready": True,
                "clusterName": "prod",
                "protocolVersion": node.memberlist.config.protocol_version,
            },
        )
        members = body["members"]
        self.assertEqual([m["name"] for m in members], ["svc-0", "svc-1", "svc-2"])
        self.assertEqual(
            [(m["state"], m["peerState"], m["isSelf"]) for m in members],
            [
                ("alive", "viewer", False),
                ("alive", "participant", True),
                ("alive", "participant", False),
            ],
        )
        for member, service in zip(members, c.services, strict=True):
            self.assertEqual(f"{member['addr']}:{member['port']}", address(service))
            self.assertIsInstance(member["incarnation"], int)
        self.assertEqual(
            sorted(members[0]),
            ["addr", "incarnation", "isSelf", "name", "peerState", "port", "state"],
        )

    def test_departed_members(self) -> None:
        """
        Memberlist's states show through: a crashed member turns suspect,
        then dead, and its ckit state is then unknown; a member that left
        shows as left.
        """
        network = SimulatedNetwork(seed=703)
        services = started_services(network, 4, 3)
        make_participants(network, services, 3)
        site = status_site(services[0], CollectorRegistry())

        def states() -> dict[str, tuple[str, str | None]]:
            body = fetch(self, site, "/api/v0/web/cluster").json()
            return {m["name"]: (m["state"], m["peerState"]) for m in body["members"]}

        network.crash(node_of(services[3]))
        services[2].stopService()
        suspect = network.run_until(lambda: states()["svc-3"][0] == "suspect", 30)
        self.assertIsNotNone(suspect)
        network.run_until(lambda: states()["svc-3"][0] == "dead", 60)
        self.assertEqual(states()["svc-3"], ("dead", None))
        self.assertEqual(states()["svc-2"], ("left", None))
        self.assertEqual(states()["svc-1"], ("alive", "participant"))
        for svc in services[:2]:
            svc.stopService()
        network.run(10)

    def test_before_start(self) -> None:
        network = SimulatedNetwork(seed=704)
        (svc,) = cluster_services(network, 1)
        body = fetch(self, status_site(svc, CollectorRegistry()), "/api/v0/web/cluster")
        self.assertEqual(body.json()["members"], [])
        self.assertEqual(body.json()["self"]["addr"], "")
        self.assertEqual(body.json()["self"]["state"], "viewer")


class LookupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.c = Cluster3.build(seed=705)
        self.addCleanup(self.c.stop)
        self.site = self.c.site()

    def lookup(self, query: str) -> Reply:
        return fetch(self, self.site, "/api/v0/web/lookup" + query)

    def test_owners(self) -> None:
        cluster = self.c.services[0].data()
        for key in ("a", "user/42", "ü", ""):
            for n, op, query_op in [
                (1, Op.READ_WRITE, ""),
                (2, Op.READ_WRITE, "&op=readwrite"),
                (2, Op.READ, "&op=read"),
            ]:
                reply = self.lookup(f"?key={key}&n={n}{query_op}")
                self.assertEqual(reply.code, 200, reply.body)
                expected = cluster.lookup(string_key(key), n, op)
                self.assertEqual(reply.json(), [p.to_json() for p in expected])
        reply = self.lookup("?key=%3Cx%3E")
        self.assertEqual(
            reply.json(),
            [p.to_json() for p in cluster.lookup(string_key("<x>"), 1, Op.READ_WRITE)],
        )

    def test_default_n(self) -> None:
        self.assertEqual(len(self.lookup("?key=k").json()), 1)

    def test_bad_queries(self) -> None:
        for query, message in [
            ("", "missing query parameter: key"),
            ("?n=1", "missing query parameter: key"),
            ("?key=k&n=0", "n must be a positive integer, got '0'"),
            ("?key=k&n=-1", "n must be a positive integer, got '-1'"),
            ("?key=k&n=%2B1", "n must be a positive integer, got '+1'"),
            ("?key=k&n=1_0", "n must be a positive integer, got '1_0'"),
            ("?key=k&n=two", "n must be a positive integer, got 'two'"),
            ("?key=k&n=" + "9" * 5000, "n must be a positive integer, got '99"),
            ("?key=k&op=write", "op must be read or readwrite, got 'write'"),
            ("?key=k&op=Read", "op must be read or readwrite, got 'Read'"),
            ("?key=%FF", "key must be UTF-8"),
        ]:
            reply = self.lookup(query)
            self.assertEqual(reply.code, 400, query)
            self.assertEqual(reply.headers["content-type"], "application/json")
            self.assertTrue(reply.json()["error"].startswith(message), reply.body)

    def test_not_enough_peers(self) -> None:
        reply = self.lookup("?key=k&n=3")
        self.assertEqual(reply.code, 503)
        self.assertEqual(
            reply.json(),
            {
                "error": "not enough nodes: need at least 3, have 2",
                "need": 3,
                "have": 2,
            },
        )

    def test_terminating_owns_reads_only(self) -> None:
        self.c.services[2].change_state(PeerState.TERMINATING)
        self.c.network.run(3)
        self.assertEqual(self.lookup("?key=k&n=2&op=readwrite").code, 503)
        reply = self.lookup("?key=k&n=2&op=read")
        self.assertEqual(
            sorted(p["state"] for p in reply.json()), ["participant", "terminating"]
        )


class HealthTests(SynchronousTestCase):
    def test_ready(self) -> None:
        network = SimulatedNetwork(seed=706)
        services = started_services(network, 2, 3, minimum_cluster_size=2)
        site = status_site(services[0], CollectorRegistry())
        reply = fetch(self, site, "/-/ready")
        self.assertEqual((reply.code, reply.body), (503, b"not ready\n"))
        make_participants(network, services, 3)
        reply = fetch(self, site, "/-/ready")
        self.assertEqual((reply.code, reply.body), (200, b"ready\n"))
        self.assertEqual(reply.headers["content-type"], "text/plain; charset=utf-8")
        for svc in services:
            svc.stopService()
        network.run(10)

    def test_healthy_while_running(self) -> None:
        network = SimulatedNetwork(seed=707)
        (svc,) = cluster_services(network, 1)
        site = status_site(svc, CollectorRegistry())
        reply = fetch(self, site, "/-/healthy")
        self.assertEqual((reply.code, reply.body), (503, b"not running\n"))
        svc.startService()
        reply = fetch(self, site, "/-/healthy")
        self.assertEqual((reply.code, reply.body), (200, b"healthy\n"))
        svc.stopService()
        network.run(10)
        self.assertEqual(fetch(self, site, "/-/healthy").code, 503)


class MetricsTests(SynchronousTestCase):
    def test_renders_the_given_registry(self) -> None:
        c = Cluster3.build(seed=708, cluster_name="c1")
        self.addCleanup(c.stop)
        Counter("web_test_things", "Things.", registry=c.registries[0]).inc(3)
        reply = fetch(self, c.site(), "/metrics")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.headers["content-type"], CONTENT_TYPE_LATEST)
        self.assertIn("web_test_things_total 3.0\n", reply.text)
        self.assertIn('cluster_ready_for_traffic{cluster_name="c1"} 1.0', reply.text)
        # Not the global registry: its process and platform collectors
        # would show up.
        self.assertIsNot(c.registries[0], REGISTRY)
        self.assertNotIn("python_info", reply.text)

    def test_two_nodes_two_registries(self) -> None:
        network = SimulatedNetwork(seed=709)
        first, second = CollectorRegistry(), CollectorRegistry()
        Counter("only_first", "First.", registry=first).inc()
        services = cluster_services(network, 1)
        a = fetch(self, status_site(services[0], first), "/metrics").text
        b = fetch(self, status_site(services[0], second), "/metrics").text
        self.assertIn("only_first_total 1.0", a)
        self.assertEqual(b, "")


class PageTests(SynchronousTestCase):
    def test_page(self) -> None:
        c = Cluster3.build(seed=710, cluster_name="prod")
        self.addCleanup(c.stop)
        reply = fetch(self, c.site(1), "/")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.headers["content-type"], "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", reply.headers["content-security-policy"])
        self.assertTrue(reply.text.startswith('<!DOCTYPE html>\n<html lang="en">'))
        page = parse(reply.text)
        self.assertIn(
            {"http-equiv": "refresh", "content": "5"},
            page.meta,
        )
        self.assertEqual(
            page.rows,
            [
                {"name": "svc-0", "class": "member", "badges": ["alive", "viewer"]},
                {
                    "name": "svc-1",
                    "class": "member self",
                    "badges": ["alive", "participant"],
                },
                {
                    "name": "svc-2",
                    "class": "member",
                    "badges": ["alive", "participant"],
                },
            ],
        )
        self.assertIn("cluster prod", reply.text)
        self.assertIn(">ready</span>", reply.text)
        self.assertIn(">healthy (0)</span>", reply.text)
        # Self-contained: no script, nothing loaded from elsewhere.
        self.assertNotIn("script", page.tags)
        self.assertNotIn("link", page.tags)
        self.assertNotIn("http", reply.text.replace("http-equiv", ""))

    def test_stylesheet_is_sent_as_written(self) -> None:
        """
        The flattener escapes the text of C{<style>}, which browsers read
        raw: the stylesheet holds nothing it would escape.
        """
        network = SimulatedNetwork(seed=715)
        (svc,) = cluster_services(network, 1)
        text = fetch(self, status_site(svc, CollectorRegistry()), "/").text
        style = text[text.index("<style>") : text.index("</style>")]
        self.assertIn(".badge.good", style)
        self.assertNotIn("&", style)

    def test_refresh_setting(self) -> None:
        network = SimulatedNetwork(seed=711)
        (svc,) = cluster_services(network, 1)
        registry = CollectorRegistry()
        page = parse(fetch(self, status_site(svc, registry, refresh=30), "/").text)
        self.assertIn({"http-equiv": "refresh", "content": "30"}, page.meta)
        page = parse(fetch(self, status_site(svc, registry, refresh=0), "/").text)
        self.assertEqual([m for m in page.meta if "http-equiv" in m], [])

    def test_hostile_node_name_is_escaped(self) -> None:
        """
        A peer picks its own name: the page shows it as text.
        """
        network = SimulatedNetwork(seed=712)
        honest = network.cluster_service(
            Options(enable_clustering=True, node_name="honest", cluster_name="<b>c</b>")
        )
        evil = network.cluster_service(
            Options(
                enable_clustering=True,
                node_name=HOSTILE,
                discover_peers=lambda: [address(honest)],
                cluster_name="<b>c</b>",
            )
        )
        for svc in (honest, evil):
            svc.startService()
        network.run(3)
        evil.change_state(PeerState.PARTICIPANT)
        network.run(3)
        for svc in (honest, evil):
            text = fetch(self, status_site(svc, CollectorRegistry()), "/").text
            self.assertNotIn("<script", text)
            self.assertNotIn("<b>", text)
            # Escaped as a cell's text, and (quotes too) as the row's data-name.
            as_text = "&lt;script&gt;alert('x')&lt;/script&gt;&amp;\"evil\""
            as_attribute = as_text.replace('"', "&quot;")
            self.assertIn(f'<td class="name">{as_text}', text)
            self.assertIn(f'data-name="{as_attribute}"', text)
            page = parse(text)
            # The parser unescapes attribute values: the name is intact.
            self.assertEqual(
                sorted(row["name"] for row in page.rows), sorted(["honest", HOSTILE])
            )
            self.assertNotIn("script", page.tags)
            # And the JSON API carries it verbatim.
            peers = fetch(
                self, status_site(svc, CollectorRegistry()), "/api/v0/web/peers"
            ).json()
            self.assertEqual([p["name"] for p in peers], [HOSTILE])
        for svc in (honest, evil):
            svc.stopService()
        network.run(10)


class DisabledTests(SynchronousTestCase):
    def setUp(self) -> None:
        network = SimulatedNetwork(seed=713)
        self.svc = network.cluster_service(
            Options(enable_clustering=False, node_name="solo", cluster_name="one")
        )
        self.svc.startService()
        self.addCleanup(self.svc.stopService)
        self.site = status_site(self.svc, CollectorRegistry())
        self.addr = self.svc.data().peers()[0].addr

    def test_peers_lists_the_local_participant(self) -> None:
        reply = fetch(self, self.site, "/api/v0/web/peers")
        self.assertEqual(
            reply.json(),
            [
                {
                    "name": "solo",
                    "addr": self.addr,
                    "isSelf": True,
                    "state": "participant",
                }
            ],
        )
        # While the service's own handler stays Alloy's 404.
        _base, handler = service_handler(self.svc)
        reply = fetch(self, handler, "/peers")
        self.assertEqual((reply.code, reply.body), (404, b"clustering is disabled\n"))

    def test_cluster(self) -> None:
        body = fetch(self, self.site, "/api/v0/web/cluster").json()
        host, _, port = self.addr.rpartition(":")
        self.assertEqual(
            body,
            {
                "clustering": False,
                "self": {
                    "name": "solo",
                    "addr": self.addr,
                    "state": "participant",
                    "lamportTime": 0,
                    "healthScore": 0,
                    "ready": True,
                    "clusterName": "one",
                    "protocolVersion": None,
                },
                "members": [
                    {
                        "name": "solo",
                        "addr": host,
                        "port": int(port),
                        "state": "alive",
                        "incarnation": 0,
                        "peerState": "participant",
                        "isSelf": True,
                    }
                ],
            },
        )

    def test_lookup_ready_healthy_page(self) -> None:
        reply = fetch(self, self.site, "/api/v0/web/lookup?key=x&op=read")
        self.assertEqual([p["name"] for p in reply.json()], ["solo"])
        self.assertEqual(
            fetch(self, self.site, "/api/v0/web/lookup?key=x&n=2").code, 503
        )
        self.assertEqual(fetch(self, self.site, "/-/ready").code, 200)
        self.assertEqual(fetch(self, self.site, "/-/healthy").code, 200)
        text = fetch(self, self.site, "/").text
        self.assertIn("clustering disabled", text)
        self.assertEqual(
            parse(text).rows,
            [
                {
                    "name": "solo",
                    "class": "member self",
                    "badges": ["alive", "participant"],
                }
            ],
        )


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        network = SimulatedNetwork(seed=714)
        (self.svc,) = cluster_services(network, 1)
        self.site = status_site(self.svc, CollectorRegistry())

    def test_not_found(self) -> None:
        for path in ("/nope", "/api", "/api/v0/web/", "/api/v0/web/nope", "/-/"):
            self.assertEqual(fetch(self, self.site, path).code, 404, path)

    def test_methods(self) -> None:
        self.assertEqual(fetch(self, self.site, "/api/v0/web/peers", "POST").code, 405)
        head = fetch(self, self.site, "/-/healthy", "HEAD")
        self.assertEqual((head.code, head.body), (503, b""))

    def test_dummy_request(self) -> None:
        """
        The resources also render straight from a C{DummyRequest}.
        """
        request = DummyRequest([b"api", b"v0", b"web", b"lookup"])
        request.args = {b"key": [b"k"]}
        node: Resource = self.site
        while request.postpath:
            node = node.getChildWithDefault(request.postpath.pop(0), request)
        body = node.render(request)
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(json.loads(body)["have"], 0)

    def test_snapshot_matches_json(self) -> None:
        body = fetch(self, self.site, "/api/v0/web/cluster").json()
        self.assertEqual(body, cluster_status(self.svc).to_json())
