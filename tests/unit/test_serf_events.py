"""
Serf user events (L{cluster.serf.events}, L{cluster.serf.delegate}) on the
simulated network: delivery exactly once, the event buffer's rules, and
the size limit.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from cluster.gossip import Memberlist
from cluster.gossip.interfaces import IBroadcastWaker, IDelegate
from cluster.serf import SerfDelegate, decode_tags
from cluster.serf.events import (
    EVENT_BUFFER_SIZE,
    USER_EVENT_SIZE_LIMIT,
    Admission,
    EventBuffer,
    EventClock,
    EventCounters,
    IEventObserver,
    ReceivedEvent,
    UserEvents,
)
from cluster.serf.messages import (
    BufferedEvent,
    BufferedEvents,
    PushPull,
    UserEvent,
    decode_message,
    encode_message,
)
from cluster.testing import SimulatedNetwork

# Events spread in a few gossip rounds; far more than enough simulated time.
SPREAD = 10.0


class EventClockTests(TestCase):
    def test_lamport_rules(self) -> None:
        clock = EventClock()
        self.assertEqual(clock.now(), 1)  # Serf starts its clocks at 1
        self.assertEqual(clock.tick(), 2)
        clock.observe(1)  # older: unchanged
        self.assertEqual(clock.now(), 2)
        clock.observe(2)
        self.assertEqual(clock.now(), 3)
        clock.observe(40)
        self.assertEqual(clock.now(), 41)
        clock = EventClock((1 << 64) - 1)
        self.assertEqual(clock.tick(), 0)  # wraps as Go's uint64


class EventBufferTests(TestCase):
    def test_new_then_duplicate(self) -> None:
        buffer = EventBuffer()
        self.assertIs(buffer.admit(5, "deploy", b"v42", 6), Admission.NEW)
        self.assertIs(buffer.admit(5, "deploy", b"v42", 6), Admission.DUPLICATE)
        # Another payload or name at the same time is another event.
        self.assertIs(buffer.admit(5, "deploy", b"v43", 6), Admission.NEW)
        self.assertIs(buffer.admit(5, "flush", b"v42", 6), Admission.NEW)

    def test_nil_payload_equals_empty(self) -> None:
        buffer = EventBuffer()
        self.assertIs(buffer.admit(3, "flush", None, 4), Admission.NEW)
        self.assertIs(buffer.admit(3, "flush", b"", 4), Admission.DUPLICATE)

    def test_late_outside_the_window(self) -> None:
        buffer = EventBuffer(size=4)
        # The clock has not passed the window: nothing is late yet.
        self.assertIs(buffer.admit(0, "a", b"", 4), Admission.NEW)
        self.assertIs(buffer.admit(5, "a", b"", 10), Admission.LATE)
        self.assertIs(buffer.admit(6, "a", b"", 10), Admission.NEW)

    def test_slot_reused_by_later_time(self) -> None:
        buffer = EventBuffer(size=4)
        self.assertIs(buffer.admit(1, "a", b"", 2), Admission.NEW)
        self.assertIs(buffer.admit(5, "a", b"", 6), Admission.NEW)
        # Time 1's slot now holds time 5; 1 is inside the window, so new.
        self.assertIs(buffer.admit(1, "a", b"", 5), Admission.NEW)

    def test_min_time(self) -> None:
        buffer = EventBuffer(min_time=10)
        self.assertIs(buffer.admit(9, "a", b"", 11), Admission.LATE)
        self.assertIs(buffer.admit(10, "a", b"", 11), Admission.NEW)

    def test_size_must_be_positive(self) -> None:
        self.assertRaises(ValueError, EventBuffer, size=0)


class UserEventsTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = UserEvents(self.clock)
        self.got: list[ReceivedEvent] = []
        self.events.observe(self.got.append)

    def test_send_delivers_locally_and_queues(self) -> None:
        self.events.user_event("deploy", b"v42", coalesce=False)
        self.assertEqual(self.got, [])  # on the reactor, not in the call
        self.clock.advance(0)
        self.assertEqual(
            self.got,
            [ReceivedEvent(ltime=1, name="deploy", payload=b"v42", coalesce=False)],
        )
        self.assertEqual(self.events.clock.now(), 2)
        sent = encode_message(
            UserEvent(ltime=1, name="deploy", payload=b"v42", cc=False)
        )
        self.assertEqual(self.events.get_broadcasts(2, 1400), [sent])
        self.assertEqual(self.events.counters, EventCounters(sent=1, delivered=1))

    def test_size_limit(self) -> None:
        name = "big"
        fits = b"x" * (USER_EVENT_SIZE_LIMIT - len(name) - 30)
        self.events.user_event(name, fits)
        with self.assertRaises(ValueError) as raised:
            self.events.user_event(name, b"x" * (USER_EVENT_SIZE_LIMIT - len(name) + 1))
        self.assertIn("over the limit of 512", str(raised.exception))
        self.assertIn("'big'", str(raised.exception))
        # Within the limit before encoding, over it after.
        with self.assertRaises(ValueError) as raised:
            self.events.user_event(name, b"x" * (USER_EVENT_SIZE_LIMIT - len(name)))
        self.assertIn("encoded", str(raised.exception))
        self.assertEqual(self.events.counters.sent, 1)
        self.assertEqual(len(self.events.queue), 1)
        self.assertRaises(ValueError, UserEvents, self.clock, size_limit=9 * 1024 + 1)

    def test_received_witnesses_clock_and_drops(self) -> None:
        event = UserEvent(ltime=700, name="deploy", payload=b"v42", cc=True)
        raw = encode_message(event)
        self.assertTrue(self.events.received(event, raw))
        self.assertEqual(self.events.clock.now(), 701)
        self.assertFalse(self.events.received(event, raw))
        late = UserEvent(
            ltime=701 - EVENT_BUFFER_SIZE - 1, name="x", payload=None, cc=False
        )
        self.assertFalse(self.events.received(late, encode_message(late)))
        self.clock.advance(0)
        self.assertEqual([e.ltime for e in self.got], [700])
        self.assertEqual(
            self.events.counters,
            EventCounters(delivered=1, duplicates=1, late=1, rebroadcast=1),
        )
        # The event goes on as it arrived.
        self.assertEqual(self.events.get_broadcasts(2, 1400), [raw])

    def test_observer_interface_and_failure(self) -> None:
        class Failing:
            def event_received(self, event: ReceivedEvent) -> None:
                raise RuntimeError("boom")

        from zope.interface import implementer

        failing = implementer(IEventObserver)(Failing)()
        verifyObject(IEventObserver, failing)
        registered = self.events.observe(failing)
        self.assertIs(registered, failing)
        self.events.user_event("a")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([e.name for e in self.got], ["a"])
        self.events.stop_observing(registered)
        self.events.user_event("b")
        self.clock.advance(0)
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])


class SerfDelegateTests(TestCase):
    def test_provides(self) -> None:
        delegate = SerfDelegate(UserEvents(Clock()), {"role": "web"})
        verifyObject(IDelegate, delegate)
        verifyObject(IBroadcastWaker, delegate)
        self.assertEqual(decode_tags(delegate.node_meta(512)), {"role": "web"})

    def test_local_state_is_serf_push_pull(self) -> None:
        delegate = SerfDelegate(UserEvents(Clock()))
        fresh = decode_message(delegate.local_state(False))
        assert isinstance(fresh, PushPull)
        # A member clock never witnessed still sends 1: Serf witnesses LTime - 1.
        self.assertEqual((fresh.ltime, fresh.event_ltime, fresh.query_ltime), (1, 1, 1))
        self.assertEqual(fresh.events, (None,) * EVENT_BUFFER_SIZE)
        delegate.member_clock.witness(40)
        delegate.events.user_event("deploy", b"v42")
        delegate.events.user_event("flush")
        state = decode_message(delegate.local_state(True))
        assert isinstance(state, PushPull)
        self.assertEqual((state.ltime, state.event_ltime), (40, 3))
        self.assertEqual(
            [slot for slot in state.events if slot is not None],
            [
                BufferedEvents(
                    ltime=1, events=(BufferedEvent(name="deploy", payload=b"v42"),)
                ),
                BufferedEvents(
                    ltime=2, events=(BufferedEvent(name="flush", payload=b""),)
                ),
            ],
        )
        self.assertEqual((state.status_ltimes, state.left_members), ({}, ()))

    def test_merge_witnesses_clocks_and_delivers_once(self) -> None:
        reactor = Clock()
        delegate = SerfDelegate(UserEvents(reactor))
        got: list[ReceivedEvent] = []
        delegate.events.observe(got.append)
        slots: list[BufferedEvents | None] = [None] * EVENT_BUFFER_SIZE
        slots[7] = BufferedEvents(
            ltime=7,
            events=(
                BufferedEvent(name="deploy", payload=b"v42"),
                BufferedEvent(name="flush", payload=None),
            ),
        )
        state = encode_message(
            PushPull(ltime=50, event_ltime=9, events=tuple(slots), query_ltime=30)
        )
        delegate.merge_remote_state(state, False)
        delegate.merge_remote_state(state, False)
        reactor.advance(0)
        self.assertEqual(
            got,
            [
                ReceivedEvent(ltime=7, name="deploy", payload=b"v42", coalesce=False),
                ReceivedEvent(ltime=7, name="flush", payload=b"", coalesce=False),
            ],
        )
        # Witnessed less one, as Serf does: nothing was sent at them yet.
        self.assertEqual(delegate.member_clock.time, 49)
        self.assertEqual(delegate.events.clock.now(), 9)
        self.assertEqual(delegate.query_clock.now(), 30)
        self.assertEqual(
            delegate.events.counters, EventCounters(delivered=2, caught_up=2)
        )
        self.assertEqual(delegate.counters.states, 2)
        # Caught-up events are not gossiped on: the push/pull spreads them.
        self.assertEqual(len(delegate.events.queue), 0)

    def test_join_ignoring_old_events(self) -> None:
        slots = (
            BufferedEvents(ltime=3, events=(BufferedEvent(name="old", payload=None),)),
        )
        state = encode_message(
            PushPull(ltime=1, event_ltime=5, events=slots, query_ltime=1)
        )
        delegate = SerfDelegate(UserEvents(Clock()), ignore_events_on_join=True)
        delegate.merge_remote_state(state, False)  # not a join: replayed
        self.assertEqual(delegate.events.counters.caught_up, 1)
        delegate = SerfDelegate(UserEvents(Clock()), ignore_events_on_join=True)
        delegate.merge_remote_state(state, True)
        self.assertEqual(delegate.events.counters.caught_up, 0)
        self.assertEqual(delegate.events.buffer.min_time, 5)
        delegate = SerfDelegate(UserEvents(Clock()))  # Serf with -replay
        delegate.merge_remote_state(state, True)
        self.assertEqual(delegate.events.counters.caught_up, 1)

    def test_bad_states_counted_and_ignored(self) -> None:
        delegate = SerfDelegate(UserEvents(Clock()))
        for state in (
            b"",
            b"\x63",
            b"\x02\xc1",
            b"\x02\x81\xa5LTime\xa1x",
            encode_message(UserEvent(ltime=9, name="a", payload=None, cc=False)),
        ):
            delegate.merge_remote_state(state, False)
        self.assertEqual(delegate.counters.bad_states, 5)
        self.assertEqual(delegate.counters.states, 0)
        self.assertEqual(delegate.events.clock.now(), 1)

    def test_bad_messages_counted(self) -> None:
        delegate = SerfDelegate(UserEvents(Clock()))
        delegate.notify_msg(b"")
        delegate.notify_msg(b"\x63")
        delegate.notify_msg(b"\x03\xc1")
        self.assertEqual(delegate.counters.malformed, 3)


class ClusterEventTests(TestCase):
    def cluster(
        self, count: int, seed: int
    ) -> tuple[
        SimulatedNetwork,
        list[Memberlist],
        list[SerfDelegate],
        list[list[ReceivedEvent]],
    ]:
        network = SimulatedNetwork(seed=seed)
        nodes, delegates, received = [], [], []
        for i in range(count):
            delegate = SerfDelegate(UserEvents(network.clock), {"id": str(i)})
            node = network.memberlist(f"node-{i}", delegate=delegate)
            delegate.attach(node.num_members, node.serf_clock)
            self.assertIs(delegate.member_clock, node.serf_clock)
            got: list[ReceivedEvent] = []
            delegate.events.observe(got.append)
            node.start()
            nodes.append(node)
            delegates.append(delegate)
            received.append(got)
        seed_address = nodes[0].local_member().full_address()
        for node in nodes[1:]:
            node.join([seed_address])
        took = network.run_until(
            lambda: all(n.num_members() == count for n in nodes), SPREAD
        )
        self.assertIsNotNone(took, "the cluster converges")
        return network, nodes, delegates, received

    def test_event_reaches_every_observer_once(self) -> None:
        network, nodes, delegates, received = self.cluster(5, seed=20)
        self.assertEqual(decode_tags(nodes[1].member("node-3").meta), {"id": "3"})  # type: ignore[union-attr]
        delegates[2].events.user_event("deploy", b"v42")
        took = network.run_until(lambda: all(received), SPREAD)
        self.assertIsNotNone(took, "every node gets the event")
        # Then every retransmission is spent: still once each.
        network.run(SPREAD)
        for got in received:
            self.assertEqual(
                got,
                [ReceivedEvent(ltime=1, name="deploy", payload=b"v42", coalesce=True)],
            )
        for delegate in delegates:
            self.assertEqual(len(delegate.events.queue), 0)
            self.assertEqual(delegate.events.clock.now(), 2)
        # Five nodes gossiping each event on: the others got copies again.
        self.assertGreater(sum(d.events.counters.duplicates for d in delegates), 0)

    def test_duplicate_and_late_resent_are_dropped(self) -> None:
        network, nodes, delegates, received = self.cluster(3, seed=21)
        delegates[0].events.user_event("deploy", b"v42")
        network.run(SPREAD)
        target = nodes[1]
        receiver = delegates[1]
        before = receiver.events.counters.snapshot()
        raw = encode_message(UserEvent(ltime=1, name="deploy", payload=b"v42", cc=True))
        nodes[0].send_best_effort(target.local_member(), raw)
        network.run(SPREAD)
        self.assertEqual(receiver.events.counters - before, EventCounters(duplicates=1))
        # Move node 1's clock far ahead so an old time is outside the window.
        receiver.events.clock.observe(5000)
        old = encode_message(UserEvent(ltime=10, name="old", payload=None, cc=False))
        nodes[0].send_best_effort(target.local_member(), old)
        network.run(SPREAD)
        self.assertEqual(
            receiver.events.counters - before,
            EventCounters(duplicates=1, late=1),
        )
        self.assertEqual([len(got) for got in received], [1, 1, 1])

    def test_partitioned_node_catches_up_through_push_pull_once(self) -> None:
        network, nodes, delegates, received = self.cluster(3, seed=22)
        hosts = [node.transport.host for node in nodes]
        network.partition(hosts[2:], hosts[:2])
        for n in range(3):
            delegates[0].events.user_event("deploy", b"v%d" % n)
        took = network.run_until(lambda: len(received[1]) == 3, SPREAD)
        self.assertIsNotNone(took, "the events reach the other side")
        # Every retransmission spent: gossip can no longer bring them.
        network.run_until(lambda: len(delegates[1].events.queue) == 0, SPREAD)
        network.run_until(lambda: len(delegates[0].events.queue) == 0, SPREAD)
        self.assertEqual(received[2], [])
        network.heal()
        push_pull = nodes[2].config.push_pull_interval
        took = network.run_until(lambda: len(received[2]) == 3, 3 * push_pull)
        self.assertIsNotNone(took, "a push/pull brings the missed events")
        # Several more push/pulls each way: nothing is delivered again.
        network.run(4 * push_pull)
        self.assertEqual(
            received[2],
            [
                ReceivedEvent(
                    ltime=n + 1, name="deploy", payload=b"v%d" % n, coalesce=False
                )
                for n in range(3)
            ],
        )
        self.assertEqual(delegates[2].events.counters.caught_up, 3)
        self.assertEqual([len(got) for got in received], [3, 3, 3])
        self.assertEqual(delegates[0].events.counters.caught_up, 0)
        self.assertEqual(delegates[1].events.counters.caught_up, 0)
        self.assertEqual(len(delegates[2].events.queue), 0)
