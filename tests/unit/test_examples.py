"""
The examples in C{examples/}, in-process on the simulated network: the
worked example's shares are disjoint and always cover all 1,000 work
items; the asyncio example's readiness component waits for every
participant.  (The asyncio example itself installs Twisted's asyncio
reactor, so it runs in its own process: C{tests/integration}.)
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from cluster import ClusterService, Op, Options
from cluster.alloy.discovery import static
from cluster.shard import string_key
from cluster.testing import SimulatedNetwork
from tests.helpers import (
    address,
    host_of,
    make_participants,
    start_all,
    transport_of,
)

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
