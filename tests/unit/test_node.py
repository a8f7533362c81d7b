"""
Tests for L{cluster.ckit.node.Node} and L{cluster.ckit.messages}: ckit's peer states
over the simulated network.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cluster.ckit.messages import (
    LocalState,
    MessageError,
    StateMessage,
    UnknownStateError,
    decode_local_state,
    decode_state,
    encode_local_state,
    encode_state,
)
from cluster.ckit.node import (
    FuncObserver,
    IObserver,
    Node,
    NodeStoppedError,
    ParticipantObserver,
    StateTransitionError,
)
from cluster.gossip import IDelegate, IEventDelegate, Member, MemberState
from cluster.peer import Peer, PeerState
from cluster.shard import ISharder, ISteppedSharder, Op, ring
from cluster.testing import SimulatedNetwork
from tests.helpers import start_through_first


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


class MessageTests(SynchronousTestCase):
    def test_state_message_bytes(self) -> None:
        """
        Magic, type 1, then the Go struct as a map with sorted keys.
        """
        message = StateMessage("a", PeerState.PARTICIPANT, 5)
        expected = unhex(
            "12 01 01 83 a8 4e6577537461746501 a8 4e6f64654e616d65 a1 61 a4 54696d65 05"
        )
        self.assertEqual(encode_state(message), expected)
        self.assertEqual(decode_state(expected), message)

    def test_local_state_round_trip(self) -> None:
        states = [
            StateMessage("a", PeerState.VIEWER, 0),
            StateMessage("b", PeerState.TERMINATING, 2**64 - 1),
        ]
        data = encode_local_state(7, states)
        self.assertEqual(data[:14], unhex("82 ab 43757272656e7454696d65 07"))
        self.assertEqual(decode_local_state(data), LocalState(7, states))

    def test_foreign_messages_are_rejected(self) -> None:
        for raw in [
            b"",
            b"\x12\x01",
            b"\x01\x84\xa4Node",  # a serf join intent
            b"\x12\x01\x02\x80",  # unknown ckit type
            b"\x12\x01\x01\x93\x01\x02\x03",  # not a map
            b"\x12\x01\x01\x81\xa8NewState\x09",  # unknown state
            b"\x12\x01\x01\xc1",  # bad msgpack
        ]:
            self.assertRaises(MessageError, decode_state, raw)
        self.assertRaises(MessageError, decode_local_state, b"\x02\x86")

    def test_fields_as_go_reads_them(self) -> None:
        """
        A missing or nil field is its zero value; Time is a uint64.
        """
        header = b"\x12\x01\x01"
        zero = StateMessage("", PeerState.VIEWER, 0)
        self.assertEqual(decode_state(header + b"\x80"), zero)
        nil = b"\x83\xa8NewState\xc0\xa8NodeName\xc0\xa4Time\xc0"
        self.assertEqual(decode_state(header + nil), zero)
        late = StateMessage("a", PeerState.TERMINATING, 2**64 - 1)
        self.assertEqual(decode_state(encode_state(late)), late)
        # Any integer form will do: this is a signed int64.
        signed = b"\x81\xa4Time\xd3" + (2**63 - 1).to_bytes(8, "big")
        self.assertEqual(decode_state(header + signed).time, 2**63 - 1)
        error = self.assertRaises(
            MessageError, decode_state, header + b"\x81\xa4Time\xff"
        )
        self.assertIn("Time", str(error))

    def test_unknown_state_only_when_otherwise_valid(self) -> None:
        header = b"\x12\x01\x01"
        self.assertRaises(
            UnknownStateError, decode_state, header + b"\x81\xa8NewState\x09"
        )
        bad_time = b"\x82\xa8NewState\x09\xa4Time\xa1x"
        error = self.assertRaises(MessageError, decode_state, header + bad_time)
        self.assertNotIsInstance(error, UnknownStateError)

    def test_local_state_skips_unknown_states(self) -> None:
        good = StateMessage("a", PeerState.PARTICIPANT, 5)
        data = encode_local_state(9, [good, good])
        future = data.replace(b"NewState\x01", b"NewState\x05", 1)
        self.assertEqual(decode_local_state(future), LocalState(9, [good], 1))
        self.assertEqual(decode_local_state(b"\x80"), LocalState(0, []))
        for bad in [
            b"\x81\xaaNodeStates\x91\x05",  # an entry that is not a map
            b"\x81\xabCurrentTime\xa1x",
        ]:
            self.assertRaises(MessageError, decode_local_state, bad)


def delegate_of(node: Node) -> IDelegate:
    """
    The delegate C{node} installed in its memberlist.
    """
    delegate = node.memberlist.config.delegate
    assert delegate is not None
    return delegate


def events_of(node: Node) -> IEventDelegate:
    """
    The event delegate C{node} installed in its memberlist.
    """
    events = node.memberlist.config.events
    assert events is not None
    return events


def sharder_of(node: Node) -> ISharder:
    assert node.sharder is not None
    return node.sharder


def known_state(node: Node, name: str) -> StateMessage:
    """
    The state message C{node} stores for C{name}, failing when none.
    """
    state = node.states.state_of(name)
    assert state is not None, f"{node.name} stores no state for {name}"
    return state


def record(into: list[list[Peer]], peers: list[Peer], stay: bool) -> bool:
    into.append(peers)
    return stay


def cluster_of(
    network: SimulatedNetwork, size: int, prefix: str = "node"
) -> list[Node]:
    nodes = [network.node(f"{prefix}-{i:02d}", sharder=ring(512)) for i in range(size)]
    start_through_first(network, nodes)
    return nodes


def pair_with_participant(
    seed: int, participant: int
) -> tuple[SimulatedNetwork, Node, Node]:
    """
    Two joined nodes on a network seeded with C{seed}, the one at index
    C{participant} made a participant and its state spread.
    """
    network = SimulatedNetwork(seed=seed)
    pair = cluster_of(network, 2)
    network.run(3)
    pair[participant].change_state(PeerState.PARTICIPANT)
    network.run(3)
    return network, pair[0], pair[1]


def converged(nodes: list[Node], state: PeerState) -> bool:
    names = {n.name for n in nodes}
    return all(
        {p.name for p in n.peers()} == names
        and all(p.state == state for p in n.peers())
        for n in nodes
    )


def all_participants(network: SimulatedNetwork, nodes: list[Node]) -> float | None:
    """
    Make every node a participant and run until all of them list all as
    participants: the seconds that took, or C{None} after 10 s.
    """
    for node in nodes:
        node.change_state(PeerState.PARTICIPANT)
    return network.run_until(lambda: converged(nodes, PeerState.PARTICIPANT), 10)


class ClusterTests(SynchronousTestCase):
    def test_twenty_nodes_agree_on_owners(self) -> None:
        network = SimulatedNetwork(seed=21, loss=0.01)
        nodes = cluster_of(network, 20)
        self.assertIsNotNone(
            network.run_until(lambda: converged(nodes, PeerState.VIEWER), 20)
        )
        self.assertTrue(all(n.current_state() == PeerState.VIEWER for n in nodes))
        changes = [n.change_state(PeerState.PARTICIPANT) for n in nodes]
        rng = random.Random(1)
        keys = [rng.getrandbits(64) for _ in range(10_000)]

        def agree() -> bool:
            if not converged(nodes, PeerState.PARTICIPANT):
                return False
            answers = {
                tuple(
                    p[0].name for p in sharder_of(n).lookup_many(keys, 1, Op.READ_WRITE)
                )
                for n in nodes
            }
            return len(answers) == 1

        took = network.run_until(agree, timeout=3.0, step=0.05)
        self.assertIsNotNone(took, "sharders did not agree within 3 s")
        network.run(5)
        for change in changes:
            self.assertIsNone(self.successResultOf(change))
        owners = {p[0].name for p in sharder_of(nodes[0]).lookup_many(keys, 1, Op.READ)}
        self.assertEqual(len(owners), 20)

    def test_stale_message_is_ignored(self) -> None:
        _, a, _ = pair_with_participant(22, 1)
        stored = known_state(a, "node-01")
        stale = StateMessage("node-01", PeerState.VIEWER, stored.time - 1)
        before = a.counters.states.stale_state
        delegate_of(a).notify_msg(encode_state(stale))
        self.assertEqual(
            [p.state for p in a.peers() if p.name == "node-01"],
            [PeerState.PARTICIPANT],
        )
        self.assertEqual(a.counters.states.stale_state, before + 1)

    def test_refutes_equal_time_different_state_about_itself(self) -> None:
        network, a, b = pair_with_participant(23, 0)
        mine = known_state(a, "node-00")
        lie = StateMessage("node-00", PeerState.VIEWER, mine.time)
        before = a.lamport_time()
        delegate_of(a).notify_msg(encode_state(lie))
        self.assertEqual(a.current_state(), PeerState.PARTICIPANT)
        self.assertGreater(known_state(a, "node-00").time, before)
        self.assertEqual(known_state(a, "node-00").new_state, PeerState.PARTICIPANT)
        # b hears the lie, then the refutation wins.
        delegate_of(b).notify_msg(encode_state(lie))
        network.run(3)
        self.assertEqual(
            [p.state for p in b.peers() if p.name == "node-00"],
            [PeerState.PARTICIPANT],
        )

    def test_returning_node_is_a_viewer_again(self) -> None:
        network = SimulatedNetwork(seed=24)
        nodes = cluster_of(network, 4)
        network.run(3)
        self.assertIsNotNone(all_participants(network, nodes))
        leaver = nodes[3]
        host = leaver.memberlist.transport.host
        stopped = leaver.stop()
        network.run(6)
        self.successResultOf(stopped)
        for node in nodes[:3]:
            self.assertNotIn("node-03", {p.name for p in node.peers()})
        back = network.node("node-03", sharder=ring(512), host=host)
        back.start([nodes[0].memberlist.local_member().full_address()])
        network.run(5)
        for node in [*nodes[:3], back]:
            states = {p.name: p.state for p in node.peers()}
            self.assertEqual(states["node-03"], PeerState.VIEWER)
            self.assertEqual(states["node-00"], PeerState.PARTICIPANT)
        self.assertEqual(
            sharder_of(nodes[0]).lookup(1, 1, Op.READ)[0].name != "node-03",
            True,
        )

    def test_no_state_for_a_node_after_its_own_leave(self) -> None:
        """
        After its own leave, a node that keeps running is no longer among
        its own peers and its push/pulls list it nowhere: it must not
        announce a state for itself again, or every node would store
        I{terminating} for a departed name (ckit's C{MergeRemoteState}
        skips names that are not peers, our own included).
        """
        network = SimulatedNetwork(seed=35)
        nodes = [
            network.node(f"n{i}", sharder=ring(512), push_pull_interval=2.0)
            for i in range(3)
        ]
        start_through_first(network, nodes)
        network.run(3)
        self.assertIsNotNone(all_participants(network, nodes))
        leaver = nodes[2]
        terminating = leaver.change_state(PeerState.TERMINATING)
        network.run(5)
        self.successResultOf(terminating)
        reannounced = leaver.counters.states.state_reannounced
        pushed = leaver.memberlist.counters.push_pulls.completed
        left = leaver.memberlist.leave(5.0)
        # The leaver keeps running (as between a leave and its shutdown) and
        # goes on pushing and pulling with the others.
        for _ in range(12):
            network.run(1)
            for node in nodes:
                self.assertNotIn("n2", {p.name for p in node.peers()}, node.name)
                self.assertIsNone(node.states.state_of("n2"), node.name)
        self.assertTrue(self.successResultOf(left))
        self.assertGreaterEqual(
            leaver.memberlist.counters.push_pulls.completed - pushed, 4
        )
        self.assertEqual(leaver.counters.states.state_reannounced, reannounced)

    def test_a_late_copy_of_its_own_state_after_its_leave_is_dropped(self) -> None:
        """
        A copy of what a node said about itself before its leave may still
        reach it afterwards: it is neither refuted (a fresh state would be
        gossiped under a departed name) nor stored nor passed on.
        """
        network, a, b = pair_with_participant(37, 1)
        said = known_state(b, "node-01")
        left = b.memberlist.leave(5.0)
        network.run(1)
        self.assertTrue(self.successResultOf(left))
        self.assertIsNone(b.states.state_of("node-01"))
        stale = b.counters.states.stale_state
        delegate_of(b).notify_msg(encode_state(said))
        self.assertIsNone(b.states.state_of("node-01"))
        self.assertNotIn("node-01", b.states.broadcasts)
        self.assertEqual(b.counters.states.stale_state, stale + 1)
        network.run(3)
        self.assertIsNone(a.states.state_of("node-01"))

    def test_unknown_messages_are_counted(self) -> None:
        network = SimulatedNetwork(seed=25)
        (a,) = cluster_of(network, 1)
        delegate_of(a).notify_msg(b"\x03serf user event")
        delegate_of(a).merge_remote_state(b"\x02serf state", True)
        self.assertEqual(a.counters.received.unknown_message, 1)
        self.assertEqual(a.counters.states.unknown_state, 1)


class StateChangeTests(SynchronousTestCase):
    def test_alone_fires_at_once(self) -> None:
        network = SimulatedNetwork(seed=26)
        (a,) = cluster_of(network, 1)
        network.run(1)
        self.assertIsNone(self.successResultOf(a.change_state(PeerState.PARTICIPANT)))
        self.assertEqual(a.peers()[0].state, PeerState.PARTICIPANT)
        self.assertTrue(a.peers()[0].is_self)

    def test_invalid_transitions(self) -> None:
        network = SimulatedNetwork(seed=27)
        (a,) = cluster_of(network, 1)
        failure = self.failureResultOf(a.change_state(PeerState.TERMINATING))
        failure.trap(StateTransitionError)
        self.assertEqual(
            str(failure.value), "invalid transition from viewer to terminating"
        )
        self.failureResultOf(a.change_state(PeerState.VIEWER), StateTransitionError)

    def test_cancel_stops_the_wait_not_the_change(self) -> None:
        network = SimulatedNetwork(seed=28)
        a, b = cluster_of(network, 2)
        network.run(2)
        d = a.change_state(PeerState.PARTICIPANT)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        network.run(3)
        self.assertEqual(
            {p.state for p in b.peers() if p.name == "node-00"}, {PeerState.PARTICIPANT}
        )

    def test_stopped_node_cannot_start(self) -> None:
        network = SimulatedNetwork(seed=29)
        (a,) = cluster_of(network, 1)
        self.successResultOf(a.stop())
        self.successResultOf(a.stop())
        self.failureResultOf(a.start([]), NodeStoppedError)


class ObserverTests(SynchronousTestCase):
    def test_observers_provide_the_interface(self) -> None:
        self.assertTrue(verifyObject(IObserver, FuncObserver(lambda peers: True)))
        inner = FuncObserver(lambda peers: True)
        self.assertTrue(verifyObject(IObserver, ParticipantObserver(inner)))

    def test_coalesced_ordered_unregistering_and_failing(self) -> None:
        network = SimulatedNetwork(seed=30)
        (a,) = cluster_of(network, 1)
        network.run(1)
        seen: list[list[Peer]] = []
        once: list[list[Peer]] = []
        a.observe(FuncObserver(lambda peers: 1 / 0 > 0))  # raises
        a.observe(FuncObserver(lambda peers: record(seen, peers, True)))
        a.observe(FuncObserver(lambda peers: record(once, peers, False)))
        delegate = events_of(a)
        # Three joins in one reactor turn: observers see one sorted list.
        for name in ("zed", "bob", "kim"):
            delegate.notify_join(
                Member(name, "127.0.0.9", 1, b"", MemberState.ALIVE, 1)
            )
        self.assertEqual(seen, [])
        network.run(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(seen), 1)
        self.assertEqual([p.name for p in seen[0]], ["bob", "kim", "node-00", "zed"])
        self.assertEqual(len(once), 1)
        # An unchanged list is not delivered again; a changed one is, in
        # order, to the observers that stayed registered.
        delegate.notify_update(Member("bob", "127.0.0.9", 1, b"", MemberState.ALIVE, 1))
        network.run(0)
        self.assertEqual(len(seen), 1)
        a.change_state(PeerState.PARTICIPANT)
        delegate.notify_leave(Member("zed", "127.0.0.9", 1, b"", MemberState.DEAD, 1))
        network.run(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(seen), 2)
        self.assertEqual(len(once), 1)
        self.assertEqual(seen[-1], a.peers())
        self.assertEqual([p.name for p in seen[-1]], ["bob", "kim", "node-00"])

    def test_participant_observer(self) -> None:
        calls: list[list[Peer]] = []
        observer = ParticipantObserver(FuncObserver(lambda p: record(calls, p, True)))
        viewer = Peer("a", "127.0.0.1:1", True, PeerState.VIEWER)
        participant = Peer("a", "127.0.0.1:1", True, PeerState.PARTICIPANT)
        self.assertTrue(observer.notify_peers_changed([viewer]))
        self.assertTrue(observer.notify_peers_changed([viewer]))
        self.assertTrue(observer.notify_peers_changed([participant]))
        self.assertTrue(observer.notify_peers_changed([participant]))
        self.assertTrue(observer.notify_peers_changed([viewer]))
        self.assertEqual(calls, [[participant], [viewer]])

    def test_participant_observer_is_silent_on_a_first_list_without_any(
        self,
    ) -> None:
        """
        As ckit's, it starts from no participants: a first list with none
        (empty, or viewers only) is no change, and C{next} is not called.
        """
        calls: list[list[Peer]] = []
        observer = ParticipantObserver(FuncObserver(lambda p: record(calls, p, False)))
        viewer = Peer("a", "127.0.0.1:1", True, PeerState.VIEWER)
        terminating = Peer("b", "127.0.0.1:2", False, PeerState.TERMINATING)
        stays = [
            observer.notify_peers_changed([]),
            observer.notify_peers_changed([viewer, terminating]),
        ]
        self.assertEqual(calls, [])
        self.assertEqual(stays, [True, True])
        # The first participant is a change: passed on, with every peer, and
        # C{next}'s wish to unregister is passed back.
        participant = Peer("c", "127.0.0.1:3", False, PeerState.PARTICIPANT)
        self.assertFalse(observer.notify_peers_changed([viewer, participant]))
        self.assertEqual(calls, [[viewer, participant]])

    def test_participant_observer_on_a_node(self) -> None:
        """
        Registered on a node that only has viewers, it stays silent until a
        participant appears.
        """
        network = SimulatedNetwork(seed=36)
        (a,) = cluster_of(network, 1)
        calls: list[list[Peer]] = []
        a.observe(ParticipantObserver(FuncObserver(lambda p: record(calls, p, True))))
        events_of(a).notify_join(
            Member("bob", "127.0.0.9", 1, b"", MemberState.ALIVE, 1)
        )
        network.run(1)
        self.assertEqual(calls, [])
        a.change_state(PeerState.PARTICIPANT)
        network.run(1)
        self.assertEqual(len(calls), 1)
        self.assertEqual(
            [(p.name, p.state) for p in calls[0]],
            [("bob", PeerState.VIEWER), ("node-00", PeerState.PARTICIPANT)],
        )

    def test_sharder_is_fed_before_observers(self) -> None:
        network = SimulatedNetwork(seed=31)
        (a,) = cluster_of(network, 1)
        seen: list[list[Peer]] = []

        def check(peers: list[Peer]) -> bool:
            seen.append(sharder_of(a).peers())
            return True

        a.observe(FuncObserver(check))
        a.change_state(PeerState.PARTICIPANT)
        network.run(1)
        self.assertEqual([p.state for p in seen[-1]], [PeerState.PARTICIPANT])


@implementer(ISteppedSharder)
class StepLog:
    """
    A ring sharder that logs each step of its stepped updates.
    """

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.inner = ring(512)

    def set_peers(self, peers: Iterable[Peer]) -> None:
        self.inner.set_peers(peers)

    def set_peers_in_steps(self, peers: Iterable[Peer]) -> Iterator[None]:
        for _ in self.inner.set_peers_in_steps(peers):
            self.log.append("step")
            yield
        self.log.append("done")

    def peers(self) -> list[Peer]:
        return self.inner.peers()

    def lookup(self, key: int, n: int, op: Op) -> list[Peer]:
        return self.inner.lookup(key, n, op)

    def lookup_many(self, keys: Sequence[int], n: int, op: Op) -> list[list[Peer]]:
        return self.inner.lookup_many(keys, n, op)


class SteppedUpdateTests(SynchronousTestCase):
    """
    A push/pull from a big cluster changes hundreds of peers at once; the
    node applies them to its sharder in steps, one per reactor turn, and
    tells observers after the last.
    """

    def _stepping_node(self, seed: int) -> tuple[SimulatedNetwork, Node, list[str]]:
        """
        A started node whose sharder logs its steps (the log starts empty).
        """
        network = SimulatedNetwork(seed=seed)
        log: list[str] = []
        sharder = StepLog(log)
        self.assertTrue(verifyObject(ISteppedSharder, sharder))
        node = network.node("node-00", sharder=sharder)
        node.start()
        network.run(1)
        log.clear()
        return network, node, log

    def _big_cluster_arrives(self, node: Node, count: int) -> list[str]:
        names = [f"member-{i:03d}" for i in range(count)]
        events = events_of(node)
        for i, name in enumerate(names):
            events.notify_join(
                Member(name, "127.0.0.9", 1000 + i, b"", MemberState.ALIVE, 1)
            )
        states = [StateMessage(n, PeerState.PARTICIPANT, 1) for n in names]
        delegate_of(node).merge_remote_state(encode_local_state(1, states), False)
        return names

    def test_other_work_runs_between_steps(self) -> None:
        network, node, log = self._stepping_node(seed=32)
        told: list[tuple[int, int]] = []

        def observer(peers: list[Peer]) -> bool:
            log.append("observer")
            told.append((len(peers), len(sharder_of(node).peers())))
            return True

        node.observe(FuncObserver(observer))
        self._big_cluster_arrives(node, 300)
        # The node's own view is current at once; the sharder's is not yet.
        self.assertEqual(len(node.peers()), 301)
        self.assertEqual(sharder_of(node).peers(), [])
        network.clock.callLater(0, log.append, "other")
        network.run(0)
        # 153,600 tokens: many steps, and other timers run in between.
        self.assertGreater(log.count("step"), 5)
        self.assertLess(log.index("other"), log.index("done"))
        self.assertLess(log.index("done"), log.index("observer"))
        self.assertEqual(told, [(301, 300)])

    def test_a_change_during_the_steps_is_applied_after_them(self) -> None:
        network, node, log = self._stepping_node(seed=33)
        told: list[list[Peer]] = []
        node.observe(FuncObserver(lambda peers: record(told, peers, True)))
        names = self._big_cluster_arrives(node, 300)
        gone = Member(names[0], "127.0.0.9", 1000, b"", MemberState.DEAD, 1)
        network.clock.callLater(0, events_of(node).notify_leave, gone)
        network.run(0)
        self.assertEqual(log.count("done"), 2)
        self.assertEqual(len(sharder_of(node).peers()), 299)
        self.assertNotIn(names[0], {p.name for p in told[-1]})
        self.assertEqual(told[-1], node.peers())
        key = random.Random(3).getrandbits(64)
        owners = {p.name for p in sharder_of(node).lookup(key, 299, Op.READ)}
        self.assertEqual(owners, set(names[1:]))

    def test_stopping_during_the_steps(self) -> None:
        network, node, log = self._stepping_node(seed=34)
        self._big_cluster_arrives(node, 300)
        self.successResultOf(node.stop())
        network.run(1)
        self.assertNotIn("done", log)
        self.assertEqual(sharder_of(node).peers(), [])
