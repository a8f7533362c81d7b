"""
The worked example in C{examples/}: its component's shares are disjoint
and always cover all 1,000 work items.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from cluster import ClusterService, Options
from cluster.testing import SimulatedNetwork
from tests.helpers import host_of, make_participants, start_all, transport_of

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def load_workers() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "workers", os.path.join(EXAMPLES, "workers.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class WorkItemsTests(SynchronousTestCase):
    def test_shares_cover_every_item_once(self) -> None:
        workers = load_workers()
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
