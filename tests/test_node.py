"""
Tests for L{cluster.node.Node} and L{cluster.messages}: ckit's peer states
over the simulated network.
"""

from __future__ import annotations

import random

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from cluster.gossip import Member, MemberState
from cluster.messages import (
    LocalState,
    MessageError,
    StateMessage,
    decode_local_state,
    decode_state,
    encode_local_state,
    encode_state,
)
from cluster.node import (
    FuncObserver,
    Node,
    NodeStoppedError,
    ParticipantObserver,
    StateTransitionError,
)
from cluster.peer import Peer, PeerState
from cluster.shard import Op, ring
from cluster.testing import SimulatedNetwork


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


def record(into: list[list[Peer]], peers: list[Peer], stay: bool) -> bool:
    into.append(peers)
    return stay


def cluster_of(
    network: SimulatedNetwork, size: int, prefix: str = "node"
) -> list[Node]:
    nodes = [network.node(f"{prefix}-{i:02d}", sharder=ring(512)) for i in range(size)]
    seed = None
    for node in nodes:
        node.start([seed] if seed else [])
        if seed is None:
            network.run(0.01)
            seed = node.memberlist.local_member().full_address()
    return nodes


def converged(nodes: list[Node], state: PeerState) -> bool:
    names = {n.name for n in nodes}
    return all(
        {p.name for p in n.peers()} == names
        and all(p.state == state for p in n.peers())
        for n in nodes
    )


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
                tuple(p[0].name for p in n.sharder.lookup_many(keys, 1, Op.READ_WRITE))  # type: ignore[union-attr]
                for n in nodes
            }
            return len(answers) == 1

        took = network.run_until(agree, timeout=3.0, step=0.05)
        self.assertIsNotNone(took, "sharders did not agree within 3 s")
        network.run(5)
        for change in changes:
            self.assertIsNone(self.successResultOf(change))
        owners = {p[0].name for p in nodes[0].sharder.lookup_many(keys, 1, Op.READ)}  # type: ignore[union-attr]
        self.assertEqual(len(owners), 20)

    def test_stale_message_is_ignored(self) -> None:
        network = SimulatedNetwork(seed=22)
        a, b = cluster_of(network, 2)
        network.run(3)
        b.change_state(PeerState.PARTICIPANT)
        network.run(3)
        stored = a._peer_states["node-01"]
        stale = StateMessage("node-01", PeerState.VIEWER, stored.time - 1)
        before = a.events["stale_state"]
        a.memberlist.config.delegate.notify_msg(encode_state(stale))
        self.assertEqual(
            [p.state for p in a.peers() if p.name == "node-01"],
            [PeerState.PARTICIPANT],
        )
        self.assertEqual(a.events["stale_state"], before + 1)

    def test_refutes_equal_time_different_state_about_itself(self) -> None:
        network = SimulatedNetwork(seed=23)
        a, b = cluster_of(network, 2)
        network.run(3)
        a.change_state(PeerState.PARTICIPANT)
        network.run(3)
        mine = a._peer_states["node-00"]
        lie = StateMessage("node-00", PeerState.VIEWER, mine.time)
        before = a.lamport_time()
        a.memberlist.config.delegate.notify_msg(encode_state(lie))
        self.assertEqual(a.current_state(), PeerState.PARTICIPANT)
        self.assertGreater(a._peer_states["node-00"].time, before)
        self.assertEqual(a._peer_states["node-00"].new_state, PeerState.PARTICIPANT)
        # b hears the lie, then the refutation wins.
        b.memberlist.config.delegate.notify_msg(encode_state(lie))
        network.run(3)
        self.assertEqual(
            [p.state for p in b.peers() if p.name == "node-00"],
            [PeerState.PARTICIPANT],
        )

    def test_returning_node_is_a_viewer_again(self) -> None:
        network = SimulatedNetwork(seed=24)
        nodes = cluster_of(network, 4)
        network.run(3)
        for node in nodes:
            node.change_state(PeerState.PARTICIPANT)
        self.assertIsNotNone(
            network.run_until(lambda: converged(nodes, PeerState.PARTICIPANT), 10)
        )
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
            nodes[0].sharder.lookup(1, 1, Op.READ)[0].name != "node-03",  # type: ignore[union-attr]
            True,
        )

    def test_unknown_messages_are_counted(self) -> None:
        network = SimulatedNetwork(seed=25)
        (a,) = cluster_of(network, 1)
        a.memberlist.config.delegate.notify_msg(b"\x03serf user event")
        a.memberlist.config.delegate.merge_remote_state(b"\x02serf state", True)
        self.assertEqual(a.events["unknown_message"], 1)
        self.assertEqual(a.events["unknown_state"], 1)


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
    def test_coalesced_ordered_unregistering_and_failing(self) -> None:
        network = SimulatedNetwork(seed=30)
        (a,) = cluster_of(network, 1)
        network.run(1)
        seen: list[list[Peer]] = []
        once: list[list[Peer]] = []
        a.observe(FuncObserver(lambda peers: 1 / 0 > 0))  # raises
        a.observe(FuncObserver(lambda peers: record(seen, peers, True)))
        a.observe(FuncObserver(lambda peers: record(once, peers, False)))
        delegate = a.memberlist.config.events
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
        self.assertEqual(calls, [[viewer], [participant]])

    def test_sharder_is_fed_before_observers(self) -> None:
        network = SimulatedNetwork(seed=31)
        (a,) = cluster_of(network, 1)
        seen: list[list[Peer]] = []

        def check(peers: list[Peer]) -> bool:
            seen.append(a.sharder.peers())  # type: ignore[union-attr]
            return True

        a.observe(FuncObserver(check))
        a.change_state(PeerState.PARTICIPANT)
        network.run(1)
        self.assertEqual([p.state for p in seen[-1]], [PeerState.PARTICIPANT])
