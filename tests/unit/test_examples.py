"""
The examples in C{examples/}, in-process on the simulated network: the
worked example's shares are disjoint and always cover all 1,000 work
items; the asyncio example's readiness component waits for every
participant.  (The asyncio example itself installs Twisted's asyncio
reactor, so it runs in its own process: C{tests/integration}.)  The
metrics example serves its own metrics and the node's on one C{/metrics},
and the status site under its own tree.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

from prometheus_client import CollectorRegistry
from treq.testing import RequestTraversalAgent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from cluster import ClusterService, Op, Options
from cluster.alloy.discovery import static
from cluster.shard import string_key
from cluster.testing import SimulatedNetwork
from tests.helpers import (
    address,
    host_of,
    make_participants,
    sample_value,
    samples,
    start_all,
    transport_of,
)
from tests.unit.test_web import fetch, parse

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def load_example(name: str) -> ModuleType:
    """
    @return: C{examples/NAME.py}, loaded as a module (not run).
    """
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(EXAMPLES, f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class WorkItemsTests(SynchronousTestCase):
    def test_shares_cover_every_item_once(self) -> None:
        workers = load_example("workers")
        network = SimulatedNetwork(seed=60)
        services: list[ClusterService] = []
        components: list[Any] = []
        for i in range(3):
            seeds = [f"{transport_of(services[0]).host}:7946"] if services else []
            svc = network.cluster_service(
                Options(
                    enable_clustering=True,
                    node_name=f"w{i}",
                    discover_peers=seeds.copy,
                )
            )
            component = workers.WorkItems(svc.data(), f"w{i}")
            host_of(svc).register(component)
            services.append(svc)
            components.append(component)
        start_all(network, services, 3)
        make_participants(network, services, 5)
        shares = [set(c.owned) for c in components]
        self.assertEqual(sum(len(s) for s in shares), 1000)
        self.assertEqual(len(set.union(*shares)), 1000)
        self.assertTrue(
            all(200 < len(s) < 500 for s in shares), [len(s) for s in shares]
        )
        # One node stops: the other two take over its items.
        services[2].stopService()
        network.run(10)
        self.assertEqual(len(components[0].owned) + len(components[1].owned), 1000)
        for svc in services[:2]:
            svc.stopService()
        network.run(10)


class AsyncioReadinessTests(SynchronousTestCase):
    """
    The C{Readiness} component of C{examples/asyncio_embed.py}.
    """

    def test_fires_once_every_participant_is_known(self) -> None:
        """
        Its waiters fire when the node's view is ready, here once all
        three nodes are participants (viewers own nothing), and a wait
        begun after that fires at once.
        """
        example = load_example("asyncio_embed")
        network = SimulatedNetwork(seed=61)
        services: list[ClusterService] = []
        components: list[Any] = []
        for name in example.NAMES:
            svc = network.cluster_service(
                Options(
                    enable_clustering=True,
                    node_name=name,
                    discover_peers=static([address(s) for s in services[:1]]),
                    minimum_cluster_size=len(example.NAMES),
                )
            )
            readiness = example.Readiness(svc.data())
            host_of(svc).register(readiness)
            services.append(svc)
            components.append(readiness)
        waiters = [c.wait() for c in components]
        start_all(network, services, 5)
        self.assertEqual([w.called for w in waiters], [False] * 3)
        make_participants(network, services[:2], 5)
        self.assertEqual([w.called for w in waiters], [False] * 3)
        make_participants(network, services[2:], 5)
        for waiter in waiters:
            self.assertIsNone(self.successResultOf(waiter))
        self.assertIsNone(self.successResultOf(components[0].wait()))
        owners = {
            svc.data().lookup(string_key("job-1"), 1, Op.READ_WRITE)[0].name
            for svc in services
        }
        self.assertEqual(len(owners), 1, owners)
        for svc in services:
            svc.stopService()
        network.run(10)


class AppMetricsTests(SynchronousTestCase):
    """
    C{examples/app_metrics.py}: the application's tree over two nodes, each
    with the application's one registry.
    """

    def setUp(self) -> None:
        self.example = load_example("app_metrics")
        self.network = SimulatedNetwork(seed=62)
        self.services: list[ClusterService] = []
        self.sites: list[Resource] = []
        for name in ("app-a", "app-b"):
            registry = CollectorRegistry(auto_describe=True)
            svc = self.network.cluster_service(
                Options(
                    enable_clustering=True,
                    node_name=name,
                    discover_peers=static([address(s) for s in self.services]),
                    metrics=registry,
                )
            )
            self.services.append(svc)
            self.sites.append(self.example.application_resource(svc, registry))
        start_all(self.network, self.services, 5)

    def tearDown(self) -> None:
        for svc in self.services:
            svc.stopService()
        self.network.run(10)

    def test_one_metrics_page_for_the_application_and_the_node(self) -> None:
        """
        The application's counter and the node's metrics are on the one
        C{/metrics}: the owner lookup it answered is counted beside the
        node's own state and its two participant peers.
        """
        make_participants(self.network, self.services, 5)
        site = self.sites[0]
        answer = fetch(self, site, "/owner?key=job-42")
        owner = self.services[0].data().lookup(string_key("job-42"), 1, Op.READ_WRITE)
        self.assertEqual((answer.code, answer.text), (200, f"{owner[0].name}\n"))
        text = fetch(self, site, "/metrics").text
        self.assertEqual(sample_value(text, "app_owner_lookups_total"), 1.0)
        self.assertEqual(
            sample_value(text, "cluster_node_info", state="participant"), 1.0
        )
        self.assertEqual(
            sample_value(text, "cluster_node_peers", state="participant"), 2.0
        )
        # The node's other node has its own registry: none of ours there.
        other = fetch(self, self.sites[1], "/metrics").text
        self.assertEqual(sample_value(other, "app_owner_lookups_total"), 0.0)
        self.assertIn("cluster_node_info", {name for name, _, _ in samples(other)})

    def test_status_site_under_the_mount(self) -> None:
        """
        C{/cluster/} is the node's status page, C{/cluster} redirects
        there (its links are relative), and the JSON API and probes answer
        under the mount.
        """
        make_participants(self.network, self.services, 5)
        site = self.sites[0]
        page = fetch(self, site, "/cluster/")
        self.assertEqual(page.code, 200)
        self.assertTrue(page.headers["content-type"].startswith("text/html"))
        self.assertEqual(
            sorted(row["name"] for row in parse(page.text).rows), ["app-a", "app-b"]
        )
        # treq follows redirects: the agent under it does not.
        agent = RequestTraversalAgent(site)
        asked = agent.request(b"GET", b"http://127.0.0.1/cluster")
        agent.flush()
        bare = self.successResultOf(asked)
        self.assertEqual(
            (bare.code, bare.headers.getRawHeaders(b"location")), (302, [b"cluster/"])
        )
        peers = fetch(self, site, "/cluster/api/v0/web/peers").json()
        self.assertEqual(
            [(p["name"], p["state"]) for p in peers],
            [("app-a", "participant"), ("app-b", "participant")],
        )
        self.assertEqual(fetch(self, site, "/cluster/-/ready").code, 200)
        # The status site's own /metrics is the same one registry.
        mounted = fetch(self, site, "/cluster/metrics").text
        self.assertIn("app_owner_lookups_total", mounted)

    def test_owner_before_any_participant_and_without_a_key(self) -> None:
        """
        With no participant yet no node owns a key (503), a request without
        a key is a 400, and neither is counted.
        """
        site = self.sites[0]
        self.assertEqual(fetch(self, site, "/owner?key=job-42").code, 503)
        self.assertEqual(fetch(self, site, "/owner").code, 400)
        text = fetch(self, site, "/metrics").text
        self.assertEqual(sample_value(text, "app_owner_lookups_total"), 0.0)
        self.assertEqual(sample_value(text, "cluster_node_info", state="viewer"), 1.0)

    def test_flags(self) -> None:
        """
        The command line is read as C{clusternode} reads its flags: the
        defaults are values, and a bad one is a usage error naming it.
        """
        options = self.example.AppOptions()
        options.parseOptions(["--join", "127.0.0.1:7001,127.0.0.1:7002"])
        self.assertEqual(options["bind"], ("127.0.0.1", 7946))
        self.assertEqual(options["join"], ("127.0.0.1:7001", "127.0.0.1:7002"))
        error = self.assertRaises(
            usage.UsageError, self.example.AppOptions().parseOptions, ["--bind", "x"]
        )
        self.assertIn("--bind", str(error))
