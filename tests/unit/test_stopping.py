"""
Stopping: a node's own I{terminating} state and its leave go to the front
of their queues (L{BroadcastQueue.expedite}), and a node stops waiting for
them once nobody else is left to hear them.  Many services stopping at
once (Ctrl-C on a demo, a rolling shutdown) then each stop in a few gossip
intervals instead of waiting out the 5 s timeouts.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from cluster import PeerState
from cluster.alloy.service import TERMINATING_TIMEOUT
from cluster.ckit.node import LEAVE_TIMEOUT
from cluster.gossip import GossipConfig
from cluster.gossip.broadcast import BroadcastQueue, retransmit_limit
from cluster.gossip.suspicion import worst_case_detection
from cluster.testing import SimulatedNetwork
from tests.helpers import cluster_services, make_participants, start_all


class ExpediteTests(SynchronousTestCase):
    def test_first_whatever_its_age_length_and_transmissions(self) -> None:
        finished: list[str] = []
        queue = BroadcastQueue(lambda: 5, 2)  # 2 transmissions each
        queue.queue(b"mine", "me", lambda: finished.append("me"))
        queue.get(2, 100)  # sent once: behind everything never sent
        for name in "abc":
            queue.queue(b"a longer and newer message " + name.encode(), name)
        queue.expedite("me")
        # Room for one message only: ours.
        self.assertEqual(queue.get(2, 30), [b"mine"])
        self.assertEqual(finished, ["me"])
        self.assertNotIn("me", queue)
        self.assertEqual(len(queue), 3)

    def test_sent_its_full_number_of_times(self) -> None:
        queue = BroadcastQueue(lambda: 5, 3)
        queue.queue(b"other", "other")
        queue.queue(b"mine", "me")
        queue.expedite("me")
        for _ in range(3):
            self.assertEqual(queue.get(2, 7), [b"mine"])
        self.assertEqual(queue.get(2, 7), [b"other"])

    def test_what_does_not_fit_waits_without_blocking_others(self) -> None:
        queue = BroadcastQueue(lambda: 5, 1)
        queue.queue(b"a message too long for the room", "me")
        queue.queue(b"short", "other")
        queue.expedite("me")
        self.assertEqual(queue.get(2, 10), [b"short"])
        self.assertEqual(queue.get(2, 100), [b"a message too long for the room"])

    def test_superseded_cleared_and_never_pruned(self) -> None:
        finished: list[str] = []
        queue = BroadcastQueue(lambda: 1, 4, min_depth=2)
        queue.queue(b"old", "me", lambda: finished.append("old"))
        queue.expedite("me")
        queue.queue(b"new", "me", lambda: finished.append("new"))
        self.assertEqual(finished, ["old"])
        queue.expedite("me")
        queue.expedite("nobody")  # nothing queued under that name: no-op
        for i in range(3):
            queue.queue(b"user %d" % i)
        # Over the depth of 2: user broadcasts are dropped, ours is not.
        self.assertEqual(len(queue), 2)
        self.assertIn("me", queue)
        self.assertEqual(queue.dropped, 2)
        queue.clear()
        self.assertEqual(finished, ["old", "new"])
        self.assertEqual(len(queue), 0)
        self.assertEqual(queue.get(2, 100), [])


class StoppingTogetherTests(SynchronousTestCase):
    """
    Participants stopping at the same moment, on the simulator.
    """

    def stop_together(self, seed: int, size: int, gossip: GossipConfig) -> list[float]:
        """
        Form a cluster of C{size} participants, stop them all at once.

        @return: the seconds each took to stop, sorted.
        """
        network = SimulatedNetwork(seed=seed)
        services = cluster_services(network, size, gossip=gossip)
        start_all(network, services, 20)
        make_participants(network, services, 20)
        warnings: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event["log_level"] >= LogLevel.warn:
                warnings.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        began = network.clock.seconds()
        took: list[float] = []
        for svc in services:
            svc.stopService().addCallback(
                lambda _: took.append(network.clock.seconds() - began)
            )
        network.run(2 * (TERMINATING_TIMEOUT + LEAVE_TIMEOUT))
        self.assertEqual(len(took), size)
        # Neither the terminating state nor the leave waited out its timeout.
        self.assertEqual(warnings, [])
        return sorted(took)

    def test_three_local_nodes(self) -> None:
        """
        The last of three no longer waits 5 s for a leave nobody is left to
        hear: each stops once its terminating state and its leave were each
        sent their number of times, a gossip tick or two apiece.
        """
        local = GossipConfig.local()
        ticks = retransmit_limit(local.retransmit_mult, 3)
        # Two announcements, each within twice its ticks (the tick's phase).
        bound = 2 * 2 * ticks * local.gossip_interval
        for seed in range(1, 7):
            took = self.stop_together(seed, 3, local)
            self.assertLess(took[-1], bound, f"seed {seed}: {took}")

    def test_forty_lan_nodes(self) -> None:
        """
        Forty at once: with the terminating states and leaves of 39 others
        queued beside its own, a node still sends its own first.  (Behind
        them, some waited out the 5 s leave timeout.)
        """
        took = self.stop_together(5, 40, GossipConfig.lan())
        self.assertLess(took[-1], LEAVE_TIMEOUT / 2, took)

    def test_alone_the_terminating_state_needs_no_audience(self) -> None:
        """
        Once every other peer is gone, the wait for our terminating state
        ends: nobody is left to hear it.
        """
        network = SimulatedNetwork(seed=9)
        # Gossip off: the state is never sent, so only being alone ends it.
        quiet = GossipConfig.local(gossip_interval=0)
        a, b = cluster_services(network, 2, gossip=quiet)
        start_all(network, [a, b], 5)
        make_participants(network, [a, b], 5)
        assert a.node is not None and b.node is not None
        announced = a.node.change_state(PeerState.TERMINATING)
        network.run(1)
        self.assertNoResult(announced)
        network.crash(b.node)
        network.run(worst_case_detection(quiet, 2) + 1)
        self.successResultOf(announced)
        stopped = a.stopService()
        network.run(0.1)
        self.successResultOf(stopped)
