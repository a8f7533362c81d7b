"""
Tests for L{cluster.web.site.status_site}: every route, rendered in memory
(treq's client over C{treq.testing.RequestTraversalAgent}, as
C{StubTreq}) for services on the simulated network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html.parser import HTMLParser
from importlib.metadata import PackageNotFoundError, version
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
from twisted.web.template import flattenString
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cluster import ClusterService, Op, Options, Peer, PeerState
from cluster.alloy.service import TOKENS_PER_NODE
from cluster.gossip import Member, MemberState
from cluster.shard import MAX_KEY, ISharder, Key, ring, string_key
from cluster.shard._ring import ring_tokens
from cluster.testing import SimulatedNetwork
from cluster.web.page import StatusPage, duration
from cluster.web.site import service_handler, status_site
from cluster.web.status import (
    DISTRIBUTION,
    ClusterStatus,
    KeyShares,
    LocalStatus,
    LookupAnswer,
    MemberStatus,
    cluster_status,
    key_shares,
    package_version,
)
from tests.helpers import (
    address,
    cluster_services,
    make_participants,
    node_of,
    services_joining_first,
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


# Elements with no end tag: never left open on the parser's stack.
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"}


class Rows(HTMLParser):
    """
    What the status page shows, read back from its HTML (ours or the DOM
    Chromium built): the member rows (C{data-name}, CSS class and the text
    of the badges in each), each row's cells by class, the width of each
    share bar and the C{datetime} of each state change, the text of every
    element with an C{id}, the labels, the form controls and the owners a
    lookup answered, and the link in each row.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.meta: list[dict[str, str | None]] = []
        self.tags: set[str] = set()
        self.cells: dict[str, dict[str, str]] = {}
        self.bars: dict[str, str | None] = {}
        self.links: dict[str, str | None] = {}
        self.times: dict[str, str | None] = {}
        self.by_id: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.controls: dict[str, dict[str, str | None]] = {}
        self.selected: list[str | None] = []
        self.owners: list[str | None] = []
        self._badge: list[str] | None = None
        self._open: list[tuple[str, dict[str, str | None], list[str]]] = []

    def _row_name(self) -> str | None:
        """
        The C{data-name} of the member row being read, if any.
        """
        for tag, found, _ in reversed(self._open):
            if tag == "tr" and "member" in (found.get("class") or "").split():
                return found["data-name"]
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "meta":
            self.meta.append(found)
        if tag == "tr" and "member" in classes:
            self.rows.append(
                {"name": found["data-name"], "class": found["class"], "badges": []}
            )
        if tag == "span" and "badge" in classes:
            self._badge = []
        row = self._row_name()
        if tag == "div" and "fill" in classes and row is not None:
            self.bars[row] = found.get("style")
        if tag == "time" and row is not None:
            self.times[row] = found.get("datetime")
        if tag == "a" and row is not None:
            self.links[row] = found.get("href")
        if tag in ("form", "input", "select") and found.get("id"):
            self.controls[str(found["id"])] = found
        if tag == "option" and "selected" in found:
            self.selected.append(found.get("value"))
        if tag == "li" and any(f.get("id") == "owners" for _, f, _ in self._open):
            self.owners.append(found.get("data-name"))
        if tag not in _VOID:
            self._open.append((tag, found, []))

    def handle_data(self, data: str) -> None:
        if self._badge is not None:
            self._badge.append(data)
        for _, _, text in self._open:
            text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._badge is not None:
            if self.rows and self._row_name() is not None:
                self.rows[-1]["badges"].append("".join(self._badge))
            self._badge = None
        if all(open_tag != tag for open_tag, _, _ in self._open):
            return
        while True:
            open_tag, found, text = self._open.pop()
            self._closed(open_tag, found, " ".join("".join(text).split()))
            if open_tag == tag:
                return

    def _closed(self, tag: str, found: dict[str, str | None], text: str) -> None:
        if found.get("id"):
            self.by_id[str(found["id"])] = text
        if tag == "label":
            self.labels[str(found.get("for"))] = text
        row = self._row_name()
        if tag == "td" and row is not None:
            cell = ((found.get("class") or "") + " -").split()[0]
            self.cells.setdefault(row, {})[cell] = text


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
        services = services_joining_first(
            network, [{"metrics": r, **options} for r in registries], 3
        )
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
            [
                "addr",
                "incarnation",
                "isSelf",
                "name",
                "peerState",
                "port",
                "state",
                "tags",
            ],
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
            # The page, asked the same, says the same (when a key is named).
            page = fetch(self, self.site, "/" + query)
            self.assertEqual(page.code, 200)
            shown = parse(page.text).by_id.get("lookup-error", "")
            if "key=" in query:
                self.assertTrue(shown.startswith(message), (query, shown))
            else:
                self.assertEqual(shown, "")

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
                        "tags": {},
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
        page = parse(text)
        self.assertEqual(page.cells["solo"]["share"], "100.0%")
        self.assertEqual(page.cells["solo"]["since"], "-")
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


def exact_ring_shares(names: Iterable[str]) -> dict[str, float]:
    """
    Each node's exact share of the key space on a ring of
    C{TOKENS_PER_NODE} tokens each: the lengths of the arcs that end at
    its tokens (a key belongs to the first token at or above it).
    """
    tokens = sorted(
        (token, name) for name in names for token in ring_tokens(name, TOKENS_PER_NODE)
    )
    owned = dict.fromkeys((name for _, name in tokens), 0)
    previous = tokens[-1][0] - (MAX_KEY + 1)
    for token, name in tokens:
        owned[name] += token - previous
        previous = token
    return {name: length / (MAX_KEY + 1) for name, length in owned.items()}


def participants(*names: str) -> list[Peer]:
    return [
        Peer(name, f"127.0.0.1:{7946 + i}", False, PeerState.PARTICIPANT)
        for i, name in enumerate(names)
    ]


@implementer(ISharder)
@attrs.define(eq=False)
class CountingSharder:
    """
    A ring sharder that counts its batch lookups.
    """

    inner: ISharder = attrs.field(factory=lambda: ring(TOKENS_PER_NODE))
    batches: int = 0

    def set_peers(self, peers: Iterable[Peer]) -> None:
        self.inner.set_peers(peers)

    def peers(self) -> list[Peer]:
        return self.inner.peers()

    def lookup(self, key: Key, n: int, op: Op) -> list[Peer]:
        return self.inner.lookup(key, n, op)

    def lookup_many(self, keys: Sequence[Key], n: int, op: Op) -> list[list[Peer]]:
        self.batches += 1
        return self.inner.lookup_many(keys, n, op)


class KeySharesTests(SynchronousTestCase):
    """
    L{key_shares} and L{KeyShares}: each peer's share of the keys.
    """

    def test_close_to_the_exact_ring(self) -> None:
        """
        On Alloy's ring the sampled shares are within a percentage point of
        the exact lengths of each node's arcs, and they sum to 1.
        """
        names = ["alpha", "bravo", "charlie"]
        sharder = ring(TOKENS_PER_NODE)
        sharder.set_peers(participants(*names))
        shares = key_shares(sharder)
        self.assertEqual(sorted(shares), names)
        self.assertAlmostEqual(sum(shares.values()), 1.0, places=9)
        for name, exact in exact_ring_shares(names).items():
            self.assertLess(abs(shares[name] - exact), 0.01, name)

    def test_op_decides_who_owns(self) -> None:
        """
        A terminating peer owns keys for reads only; viewers never; with no
        peer eligible there are no shares.
        """
        sharder = ring(TOKENS_PER_NODE)
        peers = participants("a", "b")
        terminating = Peer("c", "127.0.0.1:9", False, PeerState.TERMINATING)
        viewer = Peer("d", "127.0.0.1:8", False, PeerState.VIEWER)
        sharder.set_peers([*peers, terminating, viewer])
        self.assertEqual(sorted(key_shares(sharder, Op.READ_WRITE)), ["a", "b"])
        self.assertEqual(sorted(key_shares(sharder, Op.READ)), ["a", "b", "c"])
        sharder.set_peers([terminating, viewer])
        self.assertEqual(key_shares(sharder, Op.READ_WRITE), {})
        self.assertEqual(key_shares(sharder, Op.READ), {"c": 1.0})

    def test_remembered_until_the_peers_change(self) -> None:
        sharder = CountingSharder()
        verifyObject(ISharder, sharder)
        sharder.set_peers(participants("a", "b"))
        memo = KeyShares(sample=64)
        first = memo.of(sharder)
        self.assertEqual(memo.of(sharder), first)
        self.assertEqual(sharder.batches, 1)
        sharder.set_peers(participants("a", "b", "c"))
        self.assertEqual(sorted(memo.of(sharder)), ["a", "b", "c"])
        self.assertEqual(sharder.batches, 2)
        other = CountingSharder()
        other.set_peers(participants("a", "b", "c"))
        memo.of(other)
        self.assertEqual(other.batches, 1)


def member(
    name: str,
    state: MemberState = MemberState.ALIVE,
    since: float | None = None,
    share: float | None = None,
    peer_state: PeerState | None = PeerState.PARTICIPANT,
    is_self: bool = False,
) -> MemberStatus:
    return MemberStatus(
        Member(name, "127.0.0.1", 7946, b"", state, 1796672339),
        peer_state,
        is_self,
        since=since,
        peer_time=4,
        share=share,
    )


# 1970-01-04 12:30:00 UTC.
TAKEN_AT = 3 * 86400 + 45_000.0


def snapshot(*members: MemberStatus, version: str = "9.9.9") -> ClusterStatus:
    local = LocalStatus(
        "alpha", "127.0.0.1:7946", PeerState.PARTICIPANT, 7, 0, True, "c", 2, version
    )
    return ClusterStatus(True, True, local, members, TAKEN_AT)


class RenderingTests(SynchronousTestCase):
    """
    L{StatusPage} renders a snapshot built by hand.
    """

    def render(self, status: ClusterStatus, lookup: LookupAnswer | None = None) -> str:
        page = StatusPage(status, 5, lookup)
        return self.successResultOf(flattenString(None, page)).decode("utf-8")

    def test_duration(self) -> None:
        for seconds, spoken in [
            (-5, "0 s"),
            (0, "0 s"),
            (59.9, "59 s"),
            (60, "1 min"),
            (3599, "59 min"),
            (3600, "1 h"),
            (3660, "1 h 1 min"),
            (86399, "23 h 59 min"),
            (86400, "1 d"),
            (90000, "1 d 1 h"),
        ]:
            self.assertEqual(duration(seconds), spoken, seconds)

    def test_since(self) -> None:
        """
        The UTC time of the last state change and how long ago it was, with
        the date when it was another day; a dash when unknown.
        """
        page = parse(
            self.render(
                snapshot(
                    member("today", since=TAKEN_AT - 120),
                    member("before", since=TAKEN_AT - 2 * 86400 - 3600),
                    member("unknown"),
                )
            )
        )
        self.assertEqual(page.cells["today"]["since"], "12:28:00 (2 min)")
        self.assertEqual(page.cells["before"]["since"], "1970-01-02 11:30:00 (2 d 1 h)")
        self.assertEqual(page.cells["unknown"]["since"], "-")
        self.assertEqual(
            page.times,
            {"today": "1970-01-04T12:28:00Z", "before": "1970-01-02T11:30:00Z"},
        )

    def test_share_bars(self) -> None:
        """
        A bar as wide as the share, and the percentage beside it; a dash
        when shares were not computed.
        """
        page = parse(
            self.render(
                snapshot(
                    member("most", share=0.6667),
                    member("none", share=0.0),
                    member("unknown"),
                )
            )
        )
        self.assertEqual(page.bars, {"most": "width: 66.7%", "none": "width: 0.0%"})
        self.assertEqual(page.cells["most"]["share"], "66.7%")
        self.assertEqual(page.cells["none"]["share"], "0.0%")
        self.assertEqual(page.cells["unknown"]["share"], "-")
        self.assertIn("fraction of 4,096 keys", page.by_id["share-note"])
        self.assertEqual(
            parse(self.render(snapshot(member("x")))).by_id["share-note"], ""
        )

    def test_version(self) -> None:
        page = parse(self.render(snapshot(version="1.2.3")))
        self.assertEqual(page.by_id["version"], f"{DISTRIBUTION} 1.2.3")

    def test_incarnation_and_peer_time(self) -> None:
        text = self.render(snapshot(member("a")))
        self.assertEqual(parse(text).cells["a"]["incarnation"], "1796672339")
        self.assertIn('title="announced at Lamport time 4"', text)

    def test_labelled_form_asks_the_page(self) -> None:
        """
        Every control has a label; the form has no action, so it asks the
        page itself; it holds the defaults.
        """
        page = parse(self.render(snapshot()))
        self.assertEqual(
            page.labels,
            {"lookup-key": "Key", "lookup-n": "Owners", "lookup-op": "Operation"},
        )
        for control in ("lookup-key", "lookup-n", "lookup-op"):
            self.assertIn(control, page.controls)
        form = page.controls["lookup"]
        self.assertEqual(form.get("method"), "get")
        self.assertNotIn("action", form)
        self.assertEqual(
            [
                page.controls[c].get("name")
                for c in ("lookup-key", "lookup-n", "lookup-op")
            ],
            ["key", "n", "op"],
        )
        self.assertEqual(page.controls["lookup-key"].get("value"), "")
        self.assertEqual(page.controls["lookup-n"].get("value"), "1")
        self.assertEqual(page.selected, ["readwrite"])
        self.assertNotIn("lookup-answer", page.by_id)

    def test_answer(self) -> None:
        owners = tuple(participants("bravo", "alpha"))
        answer = LookupAnswer("user/42", 2, Op.READ, owners)
        page = parse(self.render(snapshot(), answer))
        self.assertEqual(page.owners, ["bravo", "alpha"])
        self.assertIn("Owners of user/42 for read", page.by_id["lookup-answer"])
        self.assertIn(f"{string_key('user/42'):#018x}", page.by_id["lookup-answer"])
        self.assertEqual(page.controls["lookup-key"].get("value"), "user/42")
        self.assertEqual(page.controls["lookup-n"].get("value"), "2")
        self.assertEqual(page.selected, ["read"])
        self.assertNotIn("lookup-error", page.by_id)

    def test_error(self) -> None:
        answer = LookupAnswer("k", 3, error="not enough nodes: need at least 3, have 2")
        page = parse(self.render(snapshot(), answer))
        self.assertEqual(
            page.by_id["lookup-error"], "not enough nodes: need at least 3, have 2"
        )
        self.assertEqual(page.owners, [])

    def test_hostile_key_stays_text(self) -> None:
        text = self.render(snapshot(), LookupAnswer(HOSTILE, error=HOSTILE))
        self.assertNotIn("<script", text)
        page = parse(text)
        self.assertNotIn("script", page.tags)
        self.assertEqual(page.controls["lookup-key"].get("value"), HOSTILE)
        self.assertEqual(page.by_id["lookup-error"], HOSTILE)


class LivePageTests(SynchronousTestCase):
    """
    The page of services on the simulated network: shares from the
    sharder, times from the member table, lookups answered in place.
    """

    def setUp(self) -> None:
        self.c = Cluster3.build(seed=716)
        self.addCleanup(self.c.stop)

    def page(self, query: str = "", index: int = 0) -> Rows:
        reply = fetch(self, self.c.site(index), "/" + query)
        self.assertEqual(reply.code, 200)
        return parse(reply.text)

    def test_shares(self) -> None:
        """
        The viewer owns nothing; the participants' shares are the sharder's
        and close to their exact arcs of the ring.
        """
        page = self.page()
        shares = key_shares(self.c.services[0].sharder)
        exact = exact_ring_shares(["svc-1", "svc-2"])
        self.assertEqual(page.cells["svc-0"]["share"], "0.0%")
        for name in ("svc-1", "svc-2"):
            self.assertEqual(page.cells[name]["share"], f"{shares[name] * 100:.1f}%")
            self.assertLess(abs(shares[name] - exact[name]), 0.01, name)
            self.assertEqual(page.bars[name], f"width: {shares[name] * 100:.1f}%")

    def test_terminating_hands_its_share_over(self) -> None:
        self.c.services[2].change_state(PeerState.TERMINATING)
        self.c.network.run(3)
        page = self.page()
        self.assertEqual(page.cells["svc-2"]["share"], "0.0%")
        self.assertEqual(page.cells["svc-1"]["share"], "100.0%")

    def test_since_the_last_state_change(self) -> None:
        """
        A member's time is when our table last changed its state: a crashed
        one shows when it turned suspect, then dead.
        """
        network = self.c.network
        table = node_of(self.c.services[0]).memberlist.table
        network.run(600)
        # A crashed service is not stopped at clean-up.
        crashed = self.c.services.pop(2)
        network.crash(node_of(crashed))

        def turned(state: MemberState) -> float:
            def now_in_state() -> bool:
                record = table.get("svc-2")
                return record is not None and record.state == state

            self.assertIsNotNone(network.run_until(now_in_state, 120), state)
            record = table.get("svc-2")
            assert record is not None
            return record.state_change

        # Suspicion lasts at least 4 s; the dead are forgotten after 30 s.
        for state, wait in [(MemberState.SUSPECT, 3), (MemberState.DEAD, 20)]:
            at = turned(state)
            network.run(wait)
            cells = self.page().cells
            self.assertEqual(cells["svc-2"]["gossip"], str(state))
            self.assertEqual(cells["svc-2"]["since"], f"{time_of_day(at)} ({wait} s)")
        alive = table.get("svc-1")
        assert alive is not None
        since = self.page().cells["svc-1"]["since"]
        self.assertTrue(since.startswith(time_of_day(alive.state_change)), since)
        self.assertTrue(since.endswith(" min)"), since)

    def test_version(self) -> None:
        page = self.page()
        self.assertEqual(page.by_id["version"], f"{DISTRIBUTION} {package_version()}")
        try:
            installed = version(DISTRIBUTION)
        except PackageNotFoundError:
            installed = "unknown"
        self.assertEqual(package_version(), installed)

    def test_lookup_on_the_page(self) -> None:
        """
        The form's query, sent to the page, is answered on the page as the
        JSON API answers it.
        """
        cluster = self.c.services[0].data()
        for query, n, op in [
            ("?key=user/42", 1, Op.READ_WRITE),
            ("?key=user/42&n=2&op=read", 2, Op.READ),
            ("?key=&n=2&op=readwrite", 2, Op.READ_WRITE),
        ]:
            page = self.page(query)
            key = query.split("&")[0].removeprefix("?key=")
            expected = cluster.lookup(string_key(key), n, op)
            self.assertEqual(page.owners, [p.name for p in expected], query)
            api = fetch(self, self.c.site(), "/api/v0/web/lookup" + query).json()
            self.assertEqual([p["name"] for p in api], page.owners)

    def test_lookup_errors_on_the_page(self) -> None:
        """
        Too few owners is said on the page (which is still a 200); so are
        bad queries (L{LookupTests.test_bad_queries}); a query naming no
        key asks nothing.
        """
        page = self.page("?key=k&n=3")
        self.assertEqual(
            page.by_id["lookup-error"], "not enough nodes: need at least 3, have 2"
        )
        self.assertEqual(page.owners, [])
        page = self.page("?key=%FF")
        self.assertEqual(page.controls["lookup-key"]["value"], "\ufffd")
        self.assertNotIn("lookup-answer", self.page("?n=2&op=read").by_id)

    def test_json_spares_the_shares(self) -> None:
        """
        The JSON snapshot computes no shares; the page's memory of them
        serves every load until the peers change.
        """
        status = cluster_status(self.c.services[0])
        self.assertEqual({m.share for m in status.members}, {None})
        memo = KeyShares()
        shared = cluster_status(self.c.services[0], memo)
        self.assertEqual(
            {m.name: m.share for m in shared.members},
            {"svc-0": 0.0, **key_shares(self.c.services[0].sharder)},
        )


def time_of_day(at: float) -> str:
    """
    C{at} (seconds since the epoch) as C{HH:MM:SS} in UTC.
    """
    whole = int(at)
    return f"{whole // 3600 % 24:02}:{whole // 60 % 60:02}:{whole % 60:02}"


class TagTests(SynchronousTestCase):
    """
    Every member's Serf tags, in C{/api/v0/web/cluster} and on the page,
    whose member names link to the status sites the tags name.
    """

    def build(self, *tagged: dict[str, str]) -> list[ClusterService]:
        network = self.network = SimulatedNetwork(seed=720)
        services = services_joining_first(network, [{"tags": t} for t in tagged], 3)

        def stop() -> None:
            for svc in services:
                svc.stopService()
            network.run(10)

        self.addCleanup(stop)
        return services

    def test_tags_and_links(self) -> None:
        services = self.build(
            {"http": "127.0.0.1:12345", "role": "web"},
            {"http": ":8081", "zone": "eu"},
            {"http": "javascript:alert(1)", "note": HOSTILE},
            {},
        )
        site = status_site(services[3], CollectorRegistry())
        members = fetch(self, site, "/api/v0/web/cluster").json()["members"]
        self.assertEqual(
            {m["name"]: m["tags"] for m in members},
            {
                "svc-0": {"http": "127.0.0.1:12345", "role": "web"},
                "svc-1": {"http": ":8081", "zone": "eu"},
                "svc-2": {"http": "javascript:alert(1)", "note": HOSTILE},
                # No tags: an empty meta, shown as none (serf says role=).
                "svc-3": {},
            },
        )
        text = fetch(self, site, "/").text
        page = parse(text)
        self.assertEqual(
            {name: cells["tags"] for name, cells in page.cells.items()},
            {
                "svc-0": "http=127.0.0.1:12345 role=web",
                "svc-1": "http=:8081 zone=eu",
                "svc-2": f"http=javascript:alert(1) note={HOSTILE}",
                "svc-3": "-",
            },
        )
        # A tag with no host: the status site is at the member's address.
        host = address(services[1]).rpartition(":")[0]
        self.assertEqual(
            page.links,
            {"svc-0": "http://127.0.0.1:12345/", "svc-1": f"http://{host}:8081/"},
        )
        self.assertNotIn("<script", text)
        self.assertNotIn("javascript:alert(1)/", text)

    def test_a_change_shows_everywhere(self) -> None:
        """
        Tags set at run time reach the other members' pages and JSON once
        the alive message that carries them spread.
        """
        services = self.build({"role": "a"}, {}, {})
        changed = services[0].set_tags({"role": "b", "http": "127.0.0.1:9000"})
        self.network.run(2)
        self.assertTrue(self.successResultOf(changed))
        for svc in services:
            site = status_site(svc, CollectorRegistry())
            members = fetch(self, site, "/api/v0/web/cluster").json()["members"]
            self.assertEqual(
                members[0]["tags"], {"role": "b", "http": "127.0.0.1:9000"}
            )
            page = parse(fetch(self, site, "/").text)
            self.assertEqual(page.links, {"svc-0": "http://127.0.0.1:9000/"})

    def test_clustering_disabled(self) -> None:
        network = SimulatedNetwork(seed=721)
        svc = network.cluster_service(
            Options(enable_clustering=False, node_name="solo", tags={"role": "a"})
        )
        svc.startService()
        self.addCleanup(svc.stopService)
        site = status_site(svc, CollectorRegistry())
        self.successResultOf(svc.set_tags({"role": "b", "http": "127.0.0.1:9000"}))
        (member,) = fetch(self, site, "/api/v0/web/cluster").json()["members"]
        self.assertEqual(member["tags"], {"role": "b", "http": "127.0.0.1:9000"})
        page = parse(fetch(self, site, "/").text)
        self.assertEqual(page.links, {"solo": "http://127.0.0.1:9000/"})
