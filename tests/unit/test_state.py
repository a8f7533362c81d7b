"""
The member table's rules (L{cluster.gossip.state}), driven directly with
decoded messages and a clock: no transport, no network, no memberlist.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cluster.gossip import GossipConfig, Member, MemberState
from cluster.gossip.counters import DropReason, GossipCounters
from cluster.gossip.members import NodeState
from cluster.gossip.state import (
    Broadcast,
    Changes,
    Event,
    EventKind,
    MemberTable,
    ProtocolMismatchError,
    initial_incarnation,
)
from cluster.gossip.suspicion import suspicion_timeout
from cluster.gossip.wire import Alive, Dead, PushNodeState, Suspect, ip_to_bytes
from tests.helpers import VSN

HERE = ip_to_bytes("10.0.0.1")
THERE = ip_to_bytes("10.0.0.2")
ELSEWHERE = ip_to_bytes("10.0.0.3")


def alive(
    name: str, incarnation: int = 1, addr: bytes = THERE, meta: bytes = b""
) -> Alive:
    return Alive(incarnation, name, addr, 7946, meta, VSN)


def kinds(changes: Changes) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.member.name) for e in changes.events]


def broadcast_types(changes: Changes) -> list[tuple[str, str]]:
    return [(type(b.message).__name__, b.name) for b in changes.broadcasts]


class TableTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.counters = GossipCounters()
        self.timer_changes: list[Changes] = []
        self.table = self.make()
        self.table.bootstrap(HERE, 7946, b"")

    def make(self, reclaim: float = 0.0) -> MemberTable:
        config = GossipConfig.lan(name="me", dead_node_reclaim_time=reclaim)
        return MemberTable(
            "me",
            config,
            self.clock,
            random.Random(1),
            self.counters,
            self.timer_changes.append,
        )

    def state(self, name: str) -> MemberState:
        node = self.table.get(name)
        assert node is not None, name
        return node.state


class AliveTests(TableTestCase):
    def test_bootstrap_enters_ourselves(self) -> None:
        me = self.table.get("me")
        assert me is not None
        self.assertEqual(
            (me.state, me.incarnation, me.address), (MemberState.ALIVE, 1, "10.0.0.1")
        )
        self.assertEqual(self.table.incarnation, 1)

    def test_new_member_joins_and_is_rebroadcast(self) -> None:
        changes = self.table.alive(alive("a"))
        self.assertEqual(kinds(changes), [(EventKind.JOIN, "a")])
        self.assertEqual(broadcast_types(changes), [("Alive", "a")])
        self.assertEqual(self.state("a"), MemberState.ALIVE)

    def test_old_incarnation_is_ignored(self) -> None:
        self.table.alive(alive("a", 5))
        self.assertFalse(self.table.alive(alive("a", 5)))
        self.assertFalse(self.table.alive(alive("a", 4)))

    def test_meta_change_is_an_update(self) -> None:
        self.table.alive(alive("a", 1))
        changes = self.table.alive(alive("a", 2, meta=b"new"))
        self.assertEqual(kinds(changes), [(EventKind.UPDATE, "a")])

    def test_bad_versions_are_dropped(self) -> None:
        bad = Alive(1, "a", THERE, 7946, b"", bytes([0, 5, 2, 0, 0, 0]))
        self.assertFalse(self.table.alive(bad))
        self.assertIsNone(self.table.get("a"))
        self.assertEqual(self.counters.dropped[DropReason.VERSION], 1)

    def test_conflicting_address_is_refused(self) -> None:
        self.table.alive(alive("a"))
        changes = self.table.alive(alive("a", 9, addr=ELSEWHERE))
        (event,) = changes.events
        self.assertEqual(event.kind, EventKind.CONFLICT)
        assert event.other is not None
        self.assertEqual(
            (event.member.address, event.other.address), ("10.0.0.2", "10.0.0.3")
        )
        node = self.table.get("a")
        assert node is not None
        self.assertEqual(node.address, "10.0.0.2")

    def test_left_member_may_come_back_elsewhere(self) -> None:
        self.table.alive(alive("a", 3))
        self.table.dead(Dead(3, "a", "a"))
        changes = self.table.alive(alive("a", 1, addr=ELSEWHERE))
        self.assertEqual(kinds(changes), [(EventKind.JOIN, "a")])
        node = self.table.get("a")
        assert node is not None
        self.assertEqual(node.address, "10.0.0.3")

    def test_dead_member_is_reclaimed_after_the_reclaim_time(self) -> None:
        self.table = self.make(reclaim=10.0)
        self.table.bootstrap(HERE, 7946, b"")
        self.table.alive(alive("a", 3))
        self.table.dead(Dead(3, "a", "b"))
        self.assertEqual(
            kinds(self.table.alive(alive("a", 1, addr=ELSEWHERE)))[0][0],
            EventKind.CONFLICT,
        )
        self.clock.advance(11)
        self.assertEqual(
            kinds(self.table.alive(alive("a", 1, addr=ELSEWHERE))),
            [(EventKind.JOIN, "a")],
        )

    def test_claim_about_us_is_refuted(self) -> None:
        changes = self.table.alive(Alive(7, "me", HERE, 7946, b"other", VSN))
        self.assertTrue(changes.refuted)
        self.assertEqual(self.table.incarnation, 8)
        (broadcast,) = changes.broadcasts
        assert isinstance(broadcast.message, Alive)
        self.assertEqual(
            (broadcast.message.incarnation, broadcast.message.meta), (8, b"")
        )


class SuspectAndDeadTests(TableTestCase):
    def setUp(self) -> None:
        super().setUp()
        for name in ("a", "b", "c", "d"):
            self.table.alive(alive(name))

    def test_suspicion_expires_into_death(self) -> None:
        changes = self.table.suspect(Suspect(1, "a", "b"))
        self.assertEqual(broadcast_types(changes), [("Suspect", "a")])
        self.assertEqual(self.state("a"), MemberState.SUSPECT)
        # Five members, k = 2 expected confirmations: the lone accuser's
        # suspicion runs the maximum, 6 x the minimum.
        minimum = suspicion_timeout(4, 5, 1.0)
        self.clock.advance(6 * minimum - 0.01)
        self.assertEqual(self.timer_changes, [])
        self.clock.advance(0.02)
        (expired,) = self.timer_changes
        self.assertEqual(kinds(expired), [(EventKind.LEAVE, "a")])
        self.assertEqual(broadcast_types(expired), [("Dead", "a")])
        self.assertEqual(self.state("a"), MemberState.DEAD)
        self.assertEqual(self.counters.members.declared_dead, 1)

    def test_confirmations_shorten_the_suspicion(self) -> None:
        self.table.suspect(Suspect(1, "a", "b"))
        confirmed = self.table.suspect(Suspect(1, "a", "c"))
        self.assertEqual(broadcast_types(confirmed), [("Suspect", "a")])
        self.assertFalse(self.table.suspect(Suspect(1, "a", "c")))  # not new
        self.table.suspect(Suspect(1, "a", "d"))
        self.clock.advance(suspicion_timeout(4, 5, 1.0) + 0.01)
        self.assertEqual(len(self.timer_changes), 1)

    def test_newer_suspicion_replaces_a_stale_one(self) -> None:
        # a refuted our suspicion with alive(2), which missed us; 20 s
        # later it is suspected again, at incarnation 2.
        self.table.suspect(Suspect(1, "a", "b"))
        self.clock.advance(20)
        changes = self.table.suspect(Suspect(2, "a", "c"))
        self.assertEqual(broadcast_types(changes), [("Suspect", "a")])
        node = self.table.get("a")
        assert node is not None
        self.assertEqual((node.state, node.incarnation), (MemberState.SUSPECT, 2))
        # Taken as a confirmation (memberlist's way), it would have ended
        # the 20-s-old suspicion at once and declared incarnation 1 dead,
        # which a has refuted and no other member accepts.
        self.clock.advance(suspicion_timeout(4, 5, 1.0))
        self.assertEqual(self.timer_changes, [])
        self.table.alive(alive("a", 3))
        self.clock.advance(60)
        self.assertEqual(self.timer_changes, [])
        self.assertEqual(self.counters.members.suspected, 2)

    def test_alive_cancels_the_suspicion(self) -> None:
        self.table.suspect(Suspect(1, "a", "b"))
        self.assertEqual(kinds(self.table.alive(alive("a", 2))), [])
        self.assertEqual(self.state("a"), MemberState.ALIVE)
        self.clock.advance(60)
        self.assertEqual(self.timer_changes, [])

    def test_dead_from_itself_is_left(self) -> None:
        changes = self.table.dead(Dead(1, "a", "a"))
        self.assertEqual(kinds(changes), [(EventKind.LEAVE, "a")])
        self.assertEqual(self.state("a"), MemberState.LEFT)
        self.assertEqual(self.counters.members.declared_dead, 0)

    def test_stale_dead_is_ignored(self) -> None:
        self.table.alive(alive("a", 4))
        self.assertFalse(self.table.dead(Dead(3, "a", "b")))
        self.assertEqual(self.state("a"), MemberState.ALIVE)

    def test_suspect_and_dead_about_us_are_refuted(self) -> None:
        changes = self.table.suspect(Suspect(1, "me", "a"))
        self.assertTrue(changes.refuted)
        self.assertEqual(self.table.incarnation, 2)
        changes = self.table.dead(Dead(5, "me", "a"))
        self.assertTrue(changes.refuted)
        self.assertEqual(self.table.incarnation, 6)
        self.assertEqual(self.state("me"), MemberState.ALIVE)
        self.assertEqual(self.counters.members.refuted, 2)

    def test_leaving_is_not_refuted(self) -> None:
        finished: list[bool] = []
        changes = self.table.leave(lambda: finished.append(True))
        self.assertEqual(self.state("me"), MemberState.LEFT)
        (broadcast,) = changes.broadcasts
        self.assertEqual(
            broadcast, Broadcast("me", Dead(1, "me", "me"), broadcast.on_finished)
        )
        self.assertFalse(self.table.alive(Alive(9, "me", HERE, 7946, b"", VSN)))


class MergeTests(TableTestCase):
    def entry(self, name: str, state: int, incarnation: int = 1) -> PushNodeState:
        return PushNodeState(name, THERE, 7946, b"", incarnation, state, VSN)

    def test_remote_states_become_messages(self) -> None:
        self.table.alive(alive("suspected"))
        changes = self.table.merge(
            [
                self.entry("new", MemberState.ALIVE),
                self.entry("suspected", MemberState.DEAD),
                self.entry("gone", MemberState.LEFT),
            ]
        )
        self.assertEqual(kinds(changes), [(EventKind.JOIN, "new")])
        self.assertEqual(self.state("new"), MemberState.ALIVE)
        # A remote death is only a suspicion here.
        self.assertEqual(self.state("suspected"), MemberState.SUSPECT)
        self.assertIsNone(self.table.get("gone"))

    def test_incompatible_versions_merge_nothing(self) -> None:
        newer = PushNodeState("new", THERE, 7946, b"", 1, 0, bytes([3, 5, 4, 0, 0, 0]))
        with self.assertRaises(ProtocolMismatchError) as raised:
            self.table.merge([newer])
        self.assertIn(
            "Node 'me' protocol version (2) is incompatible: [3, 5]",
            str(raised.exception),
        )
        self.assertIsNone(self.table.get("new"))

    def test_push_states_round_trip(self) -> None:
        self.table.alive(alive("a", 4, meta=b"m"))
        states = {s.name: s for s in self.table.push_states()}
        self.assertEqual(states["a"], PushNodeState("a", THERE, 7946, b"m", 4, 0, VSN))
        other = self.make()
        other.bootstrap(ELSEWHERE, 7946, b"")
        other.merge(list(states.values()))
        node = other.get("a")
        assert node is not None
        self.assertEqual((node.incarnation, node.meta), (4, b"m"))


class OrderTests(TableTestCase):
    def test_probe_order_skips_us_and_the_dead(self) -> None:
        for name in ("a", "b", "c"):
            self.table.alive(alive(name))
        self.table.dead(Dead(1, "b", "x"))
        probed = [self.table.next_to_probe() for _ in range(6)]
        names = [n.name for n in probed if n is not None]
        self.assertEqual(set(names), {"a", "c"})

    def test_reset_reaps_the_long_dead(self) -> None:
        self.table.alive(alive("a"))
        self.table.dead(Dead(1, "a", "x"))
        self.table.reset()
        self.assertIsNotNone(self.table.get("a"))
        self.clock.advance(self.table.config.gossip_to_the_dead_time + 1)
        self.table.reset()
        self.assertIsNone(self.table.get("a"))
        self.assertEqual(self.counters.members.reaped, 1)

    def test_random_nodes(self) -> None:
        for name in ("a", "b", "c", "d"):
            self.table.alive(alive(name))
        picked = self.table.random_nodes(2, lambda n: n.name != "me")
        self.assertEqual(len({n.name for n in picked}), 2)
        self.assertNotIn("me", {n.name for n in picked})
        everyone = self.table.random_nodes(10, lambda n: True)
        self.assertEqual(len(everyone), 5)

    def test_random_nodes_draws_like_k_random_nodes(self) -> None:
        """
        memberlist's C{kRandomNodes}: about C{k} draws when most members
        qualify (not a pass over the table on every gossip tick), at most
        C{3 n} when few do.
        """
        for i in range(500):
            self.table.alive(alive(f"n{i}"))
        looked_at: list[str] = []

        def wanted(node: NodeState, only: str | None = None) -> bool:
            looked_at.append(node.name)
            return only is None or node.name == only

        picked = self.table.random_nodes(3, wanted)
        self.assertEqual(len({n.name for n in picked}), 3)
        self.assertLess(len(looked_at), 10)
        looked_at.clear()
        self.table.random_nodes(3, lambda n: wanted(n, only="nobody"))
        self.assertEqual(len(looked_at), 3 * 501)


class ChangesTests(SynchronousTestCase):
    def test_extend_and_truth(self) -> None:
        changes = Changes()
        self.assertFalse(changes)
        member = Member("a", "10.0.0.2", 7946, b"", MemberState.ALIVE, 1, VSN)
        changes.extend(Changes(events=[Event(EventKind.JOIN, member)], refuted=True))
        self.assertTrue(changes)
        self.assertTrue(changes.refuted)
        self.assertEqual(changes.events, [Event(EventKind.JOIN, member)])


class InitialIncarnationTests(TableTestCase):
    def test_the_clock_seconds_within_bounds(self) -> None:
        self.assertEqual(initial_incarnation(0.0), 1)
        self.assertEqual(initial_incarnation(1_800_000_000.7), 1_800_000_000)
        # Room for refutations below uint32's end, whatever the clock says.
        self.assertEqual(initial_incarnation(1e12), 1 << 31)

    def test_a_restarted_process_overrides_its_old_record(self) -> None:
        """
        The old process of C{p}, which refuted a few times, is suspect,
        dead or I{left} here; the new one starts at the clock's seconds, a
        higher incarnation, and its first alive takes over without any
        refutation; stale copies of the old record change nothing.
        """
        self.clock.advance(1000)
        for ending in ("suspect", "dead", "left"):
            name = f"p-{ending}"
            old = 5
            self.table.alive(alive(name, incarnation=old))
            if ending == "suspect":
                self.table.suspect(Suspect(old, name, "other"))
            elif ending == "dead":
                self.table.dead(Dead(old, name, "other"))
            else:
                self.table.dead(Dead(old, name, name))
            new = initial_incarnation(self.clock.seconds())
            changes = self.table.alive(alive(name, incarnation=new))
            self.assertEqual(self.state(name), MemberState.ALIVE, ending)
            if ending != "suspect":
                self.assertEqual(kinds(changes), [(EventKind.JOIN, name)])
            self.table.suspect(Suspect(old, name, "other"))
            self.table.dead(Dead(old, name, "other"))
            self.assertEqual(self.state(name), MemberState.ALIVE, ending)
