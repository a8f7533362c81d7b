"""
Name conflicts (issue 17, item 6) on the simulated network: a second node
started under the name of a live one.

memberlist keeps the address it knew first and refuses the other's claims
(C{aliveNode}'s conflict, ckit's C{node_conflict}); the newcomer, whose
first join finds its name held by a node that answers pings under it,
gives way: it is never ready, L{ClusterService.when_joined} fails with
L{NameConflictError}, and it stops without a leave.  Both sides say so
in words, once.  A holder that does not answer (a crashed earlier process
of the newcomer) does not block it.  The real processes are in
C{tests/test_processes.py}.
"""

from __future__ import annotations

from typing import Any, cast

import attrs
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from cluster import Options, PeerState
from cluster.alloy.discovery import DiscoveryError, static
from cluster.alloy.service import ClusterService
from cluster.ckit.node import (
    NAME_CHECK_PINGS,
    REPORTED_CONFLICTS_MAX,
    NameConflictError,
)
from cluster.gossip import GossipConfig, NoPingResponseError
from cluster.gossip.interfaces import IConflictDelegate
from cluster.gossip.suspicion import worst_case_detection
from cluster.testing import SimulatedNetwork
from cluster.web.site import ReadyResource
from tests.helpers import address, known, node_of, start_and_join

LAN = GossipConfig.lan()
# A join (one push/pull) and the pings of the name check, at worst.
VERDICT = LAN.tcp_timeout + NAME_CHECK_PINGS * LAN.probe_timeout


class LogLines:
    """
    The warnings and errors logged while a test runs, by source.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        case.addCleanup(globalLogPublisher.removeObserver, observer)

    def of(self, source: object) -> list[str]:
        """
        What C{source} (a node) warned about or reported as an error.
        """
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_source") is source and event["log_level"] >= LogLevel.warn
        ]

    def containing(self, text: str) -> list[str]:
        """
        Every line, of any level and source, that contains C{text}.
        """
        lines = [formatEvent(event) for event in self.events]
        return [line for line in lines if text in line]


def ready_page(svc: ClusterService) -> tuple[int, bytes]:
    """
    C{GET /-/ready} on C{svc}'s status site: the status code and body.
    """
    request = DummyRequest([b""])
    request.method = b"GET"
    body = ReadyResource(svc.data()).render(request)
    return request.responseCode or 200, body


def service(
    network: SimulatedNetwork, name: str, seeds: list[ClusterService], **options: Any
) -> ClusterService:
    """
    A cluster service named C{name} on C{network}, discovering C{seeds}
    (unless C{options} say otherwise).
    """
    options.setdefault("discover_peers", static([address(s) for s in seeds]))
    return network.cluster_service(
        Options(enable_clustering=True, node_name=name, **options)
    )


class PingTests(SynchronousTestCase):
    """
    L{Memberlist.ping}, memberlist's C{Ping}: a ping under a name, to an
    address, member or not.
    """

    def test_acked_by_a_process_of_that_name(self) -> None:
        network = SimulatedNetwork(seed=1)
        a, _ = start_and_join(network, "a", "b", settle=1)
        target = known(a, "b")
        answered = a.ping("b", (target.address, target.port))
        network.run(LAN.probe_timeout)
        rtt: float = self.successResultOf(answered)
        self.assertGreaterEqual(rtt, 0)

    def test_no_ack_under_another_name_or_from_nobody(self) -> None:
        network = SimulatedNetwork(seed=2)
        a, _ = start_and_join(network, "a", "b", settle=1)
        target = known(a, "b")
        wrong_name = a.ping("c", (target.address, target.port))
        nobody = a.ping("b", (network.new_host(), 7946))
        network.run(LAN.probe_timeout - 0.01)
        self.assertNoResult(wrong_name)
        self.assertNoResult(nobody)
        network.run(0.01)
        failure = self.failureResultOf(wrong_name, NoPingResponseError)
        self.assertEqual(
            failure.getErrorMessage(),
            f"no ping response from c at {target.address}:7946",
        )
        self.failureResultOf(nobody, NoPingResponseError)

    def test_not_running(self) -> None:
        network = SimulatedNetwork(seed=3)
        self.failureResultOf(
            network.memberlist("a").ping("b", ("127.0.0.1", 7946)), RuntimeError
        )


class NameConflictTests(SynchronousTestCase):
    """
    A second node under the name of a live one: the cluster keeps the
    first, the second is never ready, and each side says so once.
    """

    def setUp(self) -> None:
        self.logs = LogLines(self)
        self.network = SimulatedNetwork(seed=17)
        self.registry = CollectorRegistry()
        self.a = service(self.network, "a", [])
        self.holder = service(self.network, "b", [self.a])
        for svc in (self.a, self.holder):
            svc.startService()
            self.network.run(1)
            svc.change_state(PeerState.PARTICIPANT)
        self.network.run(5)

    def newcomer(self, **options: Any) -> ClusterService:
        # Minimum size 0: ready at once, but for the conflict.
        return service(
            self.network,
            "b",
            [self.a, self.holder],
            metrics=self.registry,
            **options,
        )

    def test_newcomer_is_never_ready(self) -> None:
        newcomer = self.newcomer()
        self.assertTrue(newcomer.data().ready())
        newcomer.startService()
        joined = newcomer.when_joined()
        took = self.network.run_until(lambda: joined.called, VERDICT)
        self.assertIsNotNone(took)
        failure = self.failureResultOf(joined, NameConflictError)
        in_use = (
            f"node name b is already used by {address(self.holder)}; "
            f"this node ({address(newcomer)}) will not become ready"
        )
        self.assertEqual(failure.getErrorMessage(), in_use)
        self.assertFalse(newcomer.data().ready())
        self.assertEqual(ready_page(newcomer), (503, b"not ready\n"))
        self.assertEqual(
            self.registry.get_sample_value(
                "cluster_ready_for_traffic", {"cluster_name": ""}
            ),
            0,
        )
        # Said once, by the node; the service adds nothing.
        node = node_of(newcomer)
        self.assertEqual(self.logs.of(node), [in_use])
        self.assertEqual(self.logs.containing("failed to start"), [])
        # It stopped without a leave, which would have announced the
        # holder's name as left: the others still hold the holder, alive.
        self.assertIsNotNone(node.name_conflict)
        self.failureResultOf(node.start([address(self.a)]), NameConflictError)
        self.network.run(60)
        for svc in (self.a, self.holder):
            member = known(node_of(svc).memberlist, "b")
            self.assertEqual(member.full_address(), address(self.holder))
            self.assertEqual(member.state.name, "ALIVE")
        self.assertFalse(newcomer.data().ready())
        newcomer.stopService()
        self.assertEqual(self.logs.of(node), [in_use])

    def test_others_keep_the_holder_and_say_so_once(self) -> None:
        newcomer = self.newcomer()
        newcomer.startService()
        self.network.run(60)
        keeping = (
            f"b at {address(newcomer)} claims the name of b at "
            f"{address(self.holder)}; keeping {address(self.holder)}"
        )
        for svc in (self.a, self.holder):
            node = node_of(svc)
            self.assertGreaterEqual(node.counters.received.node_conflict, 1)
            self.assertEqual(self.logs.of(node), [keeping])
            peers = {p.name: (p.addr, p.state) for p in svc.data().peers()}
            self.assertEqual(peers["b"], (address(self.holder), PeerState.PARTICIPANT))

    def test_holder_is_never_shown_as_a_viewer(self) -> None:
        """
        The newcomer's first join would announce its own (viewer) state
        under the holder's name, demoting the holder to a viewer everywhere
        until it refuted: nothing is announced before the verdict.
        """
        stored = node_of(self.a).states.state_of("b")
        newcomer = self.newcomer()
        newcomer.startService()
        seen: set[PeerState] = set()
        for _ in range(int(2 * VERDICT / 0.01)):
            self.network.run(0.01)
            for svc in (self.a, self.holder):
                seen.update(p.state for p in node_of(svc).peers() if p.name == "b")
        self.assertEqual(seen, {PeerState.PARTICIPANT})
        self.assertEqual(node_of(self.a).states.state_of("b"), stored)

    def test_crashed_holder_does_not_block_its_successor(self) -> None:
        """
        The holder is an earlier process of the newcomer that crashed, not
        yet declared dead: it does not answer, so the newcomer goes on,
        and takes over once the dead entry is forgotten.
        """
        self.network.crash(node_of(self.holder))
        newcomer = self.newcomer()
        newcomer.startService()
        joined = newcomer.when_joined()
        self.assertIsNotNone(self.network.run_until(lambda: joined.called, VERDICT))
        self.successResultOf(joined)
        self.assertTrue(newcomer.data().ready())
        node = node_of(newcomer)
        self.assertEqual(
            self.logs.of(node),
            [
                f"node name b is still listed at {address(self.holder)}, which "
                f"does not answer: the cluster takes this node ({address(newcomer)}) "
                "once it has declared that entry dead and forgotten it"
            ],
        )
        newcomer.change_state(PeerState.PARTICIPANT)
        takeover = (
            worst_case_detection(LAN, 3)
            + LAN.gossip_to_the_dead_time
            + LAN.push_pull_interval
        )

        def taken() -> bool:
            member = node_of(self.a).memberlist.member("b")
            return member is not None and member.full_address() == address(newcomer)

        self.assertIsNotNone(self.network.run_until(taken, takeover))
        self.network.run(5)
        peers = {p.name: (p.addr, p.state) for p in self.a.data().peers()}
        self.assertEqual(peers["b"], (address(newcomer), PeerState.PARTICIPANT))
        # Nothing more said by the newcomer: the old entry was reported.
        self.assertEqual(len(self.logs.of(node)), 1)

    def test_found_at_a_later_rejoin(self) -> None:
        """
        A newcomer that could not discover anyone at start-up bootstraps
        alone; the rejoin that first reaches the cluster finds the name in
        use, and the service is never ready from then on.
        """
        calls: list[int] = []

        def discover() -> Deferred[list[str]]:
            calls.append(1)
            if len(calls) == 1:
                return fail(DiscoveryError({"peers.invalid": ["no such host"]}))
            return succeed([address(self.a)])

        newcomer = self.newcomer(discover_peers=discover, rejoin_interval=10.0)
        newcomer.startService()
        self.network.run(1)
        self.successResultOf(newcomer.when_joined())
        self.assertTrue(newcomer.data().ready())
        self.network.run(9 + VERDICT)
        self.assertFalse(newcomer.data().ready())
        self.assertEqual(ready_page(newcomer), (503, b"not ready\n"))
        self.assertIsNotNone(node_of(newcomer).name_conflict)
        self.network.run(30)
        # No rejoin after that.
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.logs.of(node_of(newcomer))), 1)
        newcomer.stopService()

    def test_logged_once_per_claimant(self) -> None:
        """
        A claimant that never gives way (a bare memberlist, with no node to
        check its name) is refused, and counted, every time it claims; it
        is logged once.
        """
        stubborn = self.network.memberlist("b")
        stubborn.start()
        stubborn.join([address(self.a)])
        self.network.run(3 * LAN.push_pull_interval)
        node = node_of(self.a)
        self.assertGreater(node.counters.received.node_conflict, 2)
        claimant = stubborn.local_member().full_address()
        self.assertEqual(
            self.logs.of(node),
            [
                f"b at {claimant} claims the name of b at {address(self.holder)}; "
                f"keeping {address(self.holder)}"
            ],
        )

    def test_a_flood_of_claimants_is_remembered_within_a_bound(self) -> None:
        """
        Claims from ever new addresses are each logged once, and the
        memory of what was logged keeps the newest only.
        """
        node = node_of(self.a)
        holder = known(node.memberlist, "b")
        conflict = node.memberlist.config.conflict
        assert IConflictDelegate.providedBy(conflict)
        claimants = [
            attrs.evolve(holder, address="127.9.0.1", port=port)
            for port in range(1, REPORTED_CONFLICTS_MAX + 2)
        ]
        for claimant in claimants:
            conflict.notify_conflict(holder, claimant)
        self.assertEqual(len(self.logs.of(node)), len(claimants))
        conflict.notify_conflict(holder, claimants[-1])
        self.assertEqual(len(self.logs.of(node)), len(claimants))
        # The oldest was forgotten to make room: logged again.
        conflict.notify_conflict(holder, claimants[0])
        self.assertEqual(len(self.logs.of(node)), len(claimants) + 1)
