"""
Deviations from memberlist, ckit and Alloy found by review, each pinned by
a test of the behaviour the original has: leave and shutdown, a send path
that never raises, push/pull edge cases, probe timing.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from cluster.alloy.options import Options
from cluster.alloy.service import ClusterService
from cluster.ckit.messages import (
    StateMessage,
    decode_local_state,
    encode_local_state,
    encode_state,
)
from cluster.gossip import (
    GossipConfig,
    IEventDelegate,
    ITransport,
    JoinError,
    Member,
    Memberlist,
    MemberState,
)
from cluster.gossip.advertise import (
    DEFAULT_INTERFACES,
    AdvertiseError,
    choose_advertise_address,
    system_interfaces,
)
from cluster.gossip.counters import DropReason
from cluster.gossip.errors import BindError
from cluster.gossip.framing import StreamCodec
from cluster.gossip.state import ProtocolMismatchError
from cluster.gossip.transport import NetTransport
from cluster.gossip.wire import PushNodeState, PushPull, ip_to_bytes
from cluster.peer import PeerState
from cluster.testing import RecordingDelegate, SimulatedNetwork, free_loopback_port
from tests.helpers import VSN, FakeResolver, cluster_services, known, start_and_join


def push(node: Memberlist, *entries: PushNodeState, user_state: bytes = b"") -> None:
    """
    Hand C{node} a push/pull request carrying C{entries}, as a peer would.
    """
    request = StreamCodec().encode(PushPull(False, entries, user_state), dialler=True)
    node.receiver.stream_received(request, ("127.9.9.9", 7946))


def entry(
    name: str, state: int = 0, port: int = 7946, vsn: bytes = VSN
) -> PushNodeState:
    return PushNodeState(name, ip_to_bytes("127.9.9.9"), port, b"", 1, state, vsn)


@implementer(IEventDelegate)
class FaultyEvents:
    """
    An event delegate that raises on every leave.
    """

    def notify_join(self, member: Member) -> None:
        pass

    def notify_leave(self, member: Member) -> None:
        raise RuntimeError(f"delegate bug on {member.name}")

    def notify_update(self, member: Member) -> None:
        pass


class LeaveAndShutdownTests(SynchronousTestCase):
    """
    Item 6: C{leave(0)} waits without a bound; C{shutdown()} ends a
    pending leave with C{False}.
    """

    def test_leave_zero_waits_without_timeout(self) -> None:
        network = SimulatedNetwork(seed=61)
        # Gossip off: the leave broadcast only rides on probes, once a
        # second, so it needs several seconds to be sent its full count.
        a, b, _ = start_and_join(network, "a", "b", "c", settle=2, gossip_interval=0)
        left = a.leave(0)
        network.run(0.5)
        self.assertNoResult(left)
        network.run(30)
        self.assertIs(self.successResultOf(left), True)
        self.assertEqual(known(b, "a").state, MemberState.LEFT)

    def test_shutdown_fires_pending_leave_with_false(self) -> None:
        network = SimulatedNetwork(seed=62)
        a, _, _ = start_and_join(network, "a", "b", "c", settle=2, gossip_interval=0)
        left = a.leave(0)
        bounded = a.leave(60)
        network.run(0.5)
        self.assertNoResult(left)
        a.shutdown()
        self.assertIs(self.successResultOf(left), False)
        self.assertIs(self.successResultOf(bounded), False)

    def test_shutting_down_as_soon_as_the_leave_spread_loses_nothing(self) -> None:
        """
        The leave counts as spread once the packet with its last
        transmission was sent, not while it is being built: a caller that
        shuts down at once must not drop it (with a dead member among the
        gossip targets, it was often the only other copy).
        """
        for seed in range(8):
            network = SimulatedNetwork(seed=640 + seed)
            # Two transmissions in all (the local profile's multiplier): one
            # gossip tick, one copy to the dead member, one to the living.
            a, b, c = start_and_join(
                network, "a", "b", "c", settle=2, retransmit_mult=2
            )
            network.crash(c)
            leaver = b
            network.run_until(
                lambda: known(leaver, "c").state == MemberState.DEAD,  # noqa: B023
                30,
            )
            leaver.leave(5).addCallback(lambda _: leaver.shutdown())  # noqa: B023
            network.run(5)
            self.assertEqual(known(a, "b").state, MemberState.LEFT, f"seed {seed}")

    def test_the_last_transmission_goes_to_the_living(self) -> None:
        """
        Gossip targets may include members dead for less than
        C{gossip_to_the_dead_time}; when a broadcast's last transmission
        comes up in a round, a live target gets it first.  With one
        transmission and a crashed member beside the one living, the leave
        reaches the living every time (in kRandomNodes' own order, about
        every other time).
        """
        for seed in range(8):
            network = SimulatedNetwork(seed=660 + seed)
            a, b, c = start_and_join(network, "a", "b", "c", retransmit_mult=1)
            # One transmission each: a push/pull may have to complete the views.
            network.run_until(lambda: b.num_members() == a.num_members() == 3, 90)  # noqa: B023
            network.crash(c)
            network.run_until(
                lambda: all(known(n, "c").state == MemberState.DEAD for n in (a, b)),  # noqa: B023
                30,
            )
            b.leave(5).addCallback(lambda _: b.shutdown())  # noqa: B023
            network.run(5)
            self.assertEqual(known(a, "b").state, MemberState.LEFT, f"seed {seed}")

    def test_timeout_fires_false(self) -> None:
        network = SimulatedNetwork(seed=63)
        a, _, _ = start_and_join(network, "a", "b", "c", settle=2, gossip_interval=0)
        left = a.leave(0.5)
        network.run(0.6)
        self.assertIs(self.successResultOf(left), False)


class SendPathTests(SynchronousTestCase):
    """
    Item 7: sending never raises.
    """

    def test_more_than_255_broadcasts_are_split_into_compounds(self) -> None:
        network = SimulatedNetwork(seed=71)
        chatty, listener = RecordingDelegate(), RecordingDelegate()
        a, b = start_and_join(
            network,
            "a",
            "b",
            each=[{"delegate": chatty}, {"delegate": listener}],
            gossip_interval=0,
            settle=2,
        )
        # One byte each (4 with the type byte and the part length): about
        # 330 fit beside a ping in 1,400 bytes, more than one compound holds.
        sent = sorted(bytes([i % 256]) for i in range(600))
        chatty.outgoing = list(sent)
        network.run(3)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertEqual(sorted(listener.messages), sent)
        self.assertEqual(a.counters.members.suspected, 0)
        self.assertEqual(known(b, "a").state, MemberState.ALIVE)
        self.assertEqual(known(a, "b").state, MemberState.ALIVE)

    def test_raising_event_delegate_on_suspicion_timeout_is_logged(self) -> None:
        network = SimulatedNetwork(seed=72)
        a, _, c = start_and_join(
            network, "a", "b", "c", settle=2, events=FaultyEvents()
        )
        network.crash(c)
        # Must not raise out of the clock: the timer is guarded.
        network.run(15)
        self.assertEqual(known(a, "c").state, MemberState.DEAD)
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertGreaterEqual(len(errors), 1)


class PushPullEdgeTests(SynchronousTestCase):
    """
    Item 8: push/pull merges as memberlist and ckit do.
    """

    def test_short_version_vectors_are_skipped_not_padded(self) -> None:
        """
        A vector of fewer than 5 bytes takes no part in the cluster's
        version range, and its current version reads as 0 (Go's
        C{verifyProtocol}): the error names that node, not a healthy one
        whose range a zero-padded vector would have emptied.
        """
        network = SimulatedNetwork(seed=81)
        (a,) = start_and_join(network, "a", settle=2)
        for short in (b"\x00", bytes([1, 5, 2, 0])):
            with self.assertRaises(ProtocolMismatchError) as caught:
                a.table.verify_protocol([entry("short", vsn=short), entry("full")])
            self.assertEqual(
                str(caught.exception),
                "Node 'short' protocol version (0) is incompatible: [1, 5]",
            )
        before = a.counters.dropped[DropReason.PROTOCOL]
        push(a, entry("short", vsn=bytes([1, 5, 2, 0])), entry("full"))
        self.assertEqual(a.counters.dropped[DropReason.PROTOCOL], before + 1)
        self.assertIsNone(a.member("full"))

    def test_every_local_member_is_verified(self) -> None:
        network = SimulatedNetwork(seed=82)
        (a,) = start_and_join(network, "a", settle=2)
        # A member that left while speaking protocol 5 still counts in Go:
        # a newcomer understanding only up to 4 is refused because of it.
        push(a, entry("old", vsn=bytes([1, 5, 5, 0, 0, 0])))
        push(a, PushNodeState("old", ip_to_bytes("127.9.9.9"), 7946, b"", 2, 3, VSN))
        self.assertEqual(known(a, "old").state, MemberState.LEFT)
        before = a.counters.dropped[DropReason.PROTOCOL]
        push(a, entry("new", vsn=bytes([1, 4, 2, 0, 0, 0])))
        self.assertEqual(a.counters.dropped[DropReason.PROTOCOL], before + 1)
        self.assertIsNone(a.member("new"))

    def test_port_zero_takes_the_bind_port(self) -> None:
        network = SimulatedNetwork(seed=83)
        (a,) = start_and_join(network, "a", settle=2)
        push(a, entry("zero", port=0))
        self.assertEqual(known(a, "zero").port, a.config.bind_port)

    def test_unknown_member_states_are_ignored(self) -> None:
        network = SimulatedNetwork(seed=84)
        a, _ = start_and_join(network, "a", "b", settle=2)
        incarnation = known(a, "b").incarnation
        push(
            a,
            PushNodeState(
                "b", ip_to_bytes("127.9.9.9"), 7946, b"", incarnation, 7, VSN
            ),
        )
        self.assertEqual(known(a, "b").state, MemberState.ALIVE)
        self.assertEqual(a.counters.members.suspected, 0)

    def test_unknown_ckit_state_drops_only_that_entry(self) -> None:
        good = StateMessage("a", PeerState.PARTICIPANT, 5)
        raw = encode_local_state(9, [good, StateMessage("b", PeerState.VIEWER, 6)])
        # Rewrite b's NewState (0) as 7, a state from some future ckit.
        marker = encode_state(StateMessage("b", PeerState.VIEWER, 6))[3:]
        future = marker.replace(b"NewState\x00", b"NewState\x07")
        self.assertNotEqual(future, marker)
        remote = decode_local_state(raw.replace(marker, future))
        self.assertEqual(remote.current_time, 9)
        self.assertEqual(remote.states, [good])
        self.assertEqual(remote.unknown, 1)


class ProbeTimingTests(SynchronousTestCase):
    """
    Item 4: probes tick on a fixed interval; only a failed round waits out
    the health-scaled deadline (memberlist's C{probeNode}).
    """

    def test_degraded_node_with_good_probes_recovers_in_seven_rounds(self) -> None:
        network = SimulatedNetwork(seed=41)
        a, _, _ = start_and_join(network, "a", "b", "c", settle=2)
        a.awareness.apply_delta(7)
        self.assertEqual(a.health_score(), 7)
        took = network.run_until(lambda: a.health_score() == 0, 60, step=0.01)
        # Every acked probe takes 1 off; one probe per 1 s interval, the
        # first within one interval: 6 s < took <= 7 s plus an ack's round
        # trip (and one more interval should the probe order wrap onto
        # ourselves, as memberlist's may).  Stretching every probe by the
        # score would take 8 + 7 + ... + 2 = 35 s.
        self.assertIsNotNone(took)
        assert took is not None
        self.assertGreater(took, 6.0)
        self.assertLess(took, 8.1)
        self.assertEqual(a.counters.probes.failed, 0)

    def test_healthy_probe_rate_is_one_per_interval_at_any_score(self) -> None:
        network = SimulatedNetwork(seed=42)
        a, _, _ = start_and_join(network, "a", "b", "c", settle=2)
        before = a.counters.probes.started
        a.awareness.apply_delta(7)
        network.run(5.0)
        # Scored 7 and falling: still a probe per second (one tick may find
        # only ourselves when the probe order wraps, as in memberlist).
        self.assertGreaterEqual(a.counters.probes.started - before, 4)

    def test_failed_round_waits_for_the_scaled_deadline(self) -> None:
        network = SimulatedNetwork(seed=43)
        a, b = start_and_join(
            network, "a", "b", settle=2, indirect_checks=0, disable_tcp_pings=True
        )
        network.partition([a.transport.host], [b.transport.host])
        a.awareness.apply_delta(3)  # deadline: 4 x 1 s
        probes = a.counters.probes.started
        network.run(8.0)
        # Failed rounds of 4 s (the score rises, so later ones are longer):
        # two probes at most in 8 s, against eight for a healthy node.
        self.assertLessEqual(a.counters.probes.started - probes, 2)
        self.assertGreaterEqual(a.counters.probes.failed, 1)


def occupy_loopback_port() -> tuple[int, list[socket.socket]]:
    """
    A loopback port held by this process over UDP and TCP, as another
    program's would be.
    """
    port = free_loopback_port()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", port))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    return port, [tcp, udp]


class StartupFailureTests(TestCase):
    """
    Item 2: a node that cannot bind says so, every time, and a service
    whose node cannot bind does not run.
    """

    def occupied(self) -> int:
        port, sockets = occupy_loopback_port()
        for s in sockets:
            self.addCleanup(s.close)
        return port

    def test_memberlist_start_fails_on_every_call(self) -> None:
        port = self.occupied()
        config = GossipConfig.lan(name="x", bind_address="127.0.0.1", bind_port=port)
        node = Memberlist(config, reactor=reactor)
        for _ in range(2):
            failure = self.failureResultOf(node.start(), BindError)
            message = str(failure.value)
            self.assertIn(f"127.0.0.1:{port}", message)
            self.assertIn("in use", message)
        self.assertEqual(node.members(), [])
        assert isinstance(node.transport, NetTransport)
        self.assertEqual(node.transport.handler, None)

    def test_service_start_fails_and_runs_nothing(self) -> None:
        port = self.occupied()
        options = Options(
            enable_clustering=True,
            node_name="x",
            bind_address="127.0.0.1",
            bind_port=port,
            rejoin_interval=1.0,
            minimum_cluster_size=2,
            minimum_size_wait_timeout=5.0,
        )
        clock = Clock()
        svc = ClusterService(
            options,
            reactor=clock,
            transport=NetTransport(reactor, "127.0.0.1", port),
        )
        with self.assertRaises(BindError) as raised:
            svc.startService()
        self.assertIn(f"127.0.0.1:{port}", str(raised.exception))
        self.assertFalse(svc.running)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.failureResultOf(svc.when_joined(), BindError)
        self.flushLoggedErrors(BindError)


INTERFACES = {
    "lo": (True, ["127.0.0.1", "::1"]),
    "eth0": (True, ["10.0.0.5", "fe80::1"]),
    "en0": (True, ["192.168.1.7"]),
}


@implementer(ITransport)
class WildcardTransport:
    """
    A transport bound to every interface, recording whether it started.
    """

    host = "0.0.0.0"
    port = 7946

    def __init__(self) -> None:
        self.started = False

    def start(self, handler: object) -> Deferred[None]:
        self.started = True
        return succeed(None)

    def send_packet(self, data: bytes, address: tuple[str, int]) -> None:
        pass

    def packet_queue_lengths(self) -> tuple[int, int]:
        return (0, 0)

    def exchange(self, *args: object) -> Deferred[bytes | None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)


class AdvertiseTests(SynchronousTestCase):
    """
    Item 3: the advertised address comes from the interfaces, never from a
    blocking host name lookup, and never silently from loopback.
    """

    def choose(
        self, table: dict[str, tuple[bool, list[str]]], interfaces: Any = None
    ) -> str:
        return choose_advertise_address(interfaces, table).address

    def test_listed_interfaces_first_in_order(self) -> None:
        self.assertEqual(self.choose(INTERFACES, DEFAULT_INTERFACES), "10.0.0.5")
        self.assertEqual(self.choose(INTERFACES, ["en0", "eth0"]), "192.168.1.7")

    def test_private_ipv4_preferred(self) -> None:
        table = {"eth0": (True, ["2001:db8::5", "8.8.4.4", "fe80::2", "10.1.1.1"])}
        self.assertEqual(self.choose(table, ["eth0"]), "10.1.1.1")
        table = {"eth0": (True, ["2001:db8::5", "fe80::2", "8.8.4.4"])}
        self.assertEqual(self.choose(table, ["eth0"]), "8.8.4.4")
        table = {"eth0": (True, ["fe80::2", "169.254.3.3", "fd00::7"])}
        self.assertEqual(self.choose(table, ["eth0"]), "fd00::7")

    def test_all_and_down_interfaces(self) -> None:
        table = {
            "lo": (True, ["127.0.0.1"]),
            "wg0": (False, ["10.9.9.9"]),
            "ens3": (True, ["192.168.5.5"]),
        }
        self.assertEqual(self.choose(table, ["all"]), "192.168.5.5")
        self.assertEqual(self.choose(table, ["wg0", "ens3"]), "192.168.5.5")

    def test_missing_interfaces_fall_back_to_a_private_ipv4(self) -> None:
        # A host whose interface is ens3: Alloy's eth0,en0 find nothing.
        table = {"lo": (True, ["127.0.0.1"]), "ens3": (True, ["10.2.3.4"])}
        choice = choose_advertise_address(DEFAULT_INTERFACES, table)
        self.assertEqual(choice.address, "10.2.3.4")
        self.assertIn("none of advertise_interfaces eth0, en0", choice.reason)

    def test_loopback_is_never_chosen(self) -> None:
        # A Debian host whose name resolves to 127.0.1.1 and has no network.
        table = {"lo": (True, ["127.0.0.1", "127.0.1.1", "::1"])}
        for interfaces in (None, DEFAULT_INTERFACES, ["lo"], ["all"]):
            with self.assertRaises(AdvertiseError) as raised:
                choose_advertise_address(interfaces, table)
            message = str(raised.exception)
            self.assertIn("no private IP address found", message)
            self.assertIn("set advertise_address", message)

    def test_memberlist_rule_wants_a_private_address(self) -> None:
        table = {"eth0": (True, ["8.8.4.4"])}
        self.assertRaises(AdvertiseError, choose_advertise_address, None, table)

    def test_system_interfaces(self) -> None:
        table = system_interfaces()
        self.assertTrue(all(isinstance(up, bool) for up, _ in table.values()))
        addresses = [a for _, found in table.values() for a in found]
        self.assertIn("127.0.0.1", addresses)
        self.assertFalse(any("%" in a for a in addresses))

    def memberlist(self, table: dict[str, tuple[bool, list[str]]]) -> Memberlist:
        def no_lookup(*args: object) -> object:
            raise AssertionError("a blocking host name lookup")

        self.patch(socket, "gethostbyname_ex", no_lookup)
        self.patch(socket, "gethostbyname", no_lookup)
        self.patch(socket, "getaddrinfo", no_lookup)
        config = GossipConfig.lan(
            name="wild", bind_address="0.0.0.0", advertise_interfaces=("eth0",)
        )
        return Memberlist(
            config,
            reactor=Clock(),
            transport=WildcardTransport(),
            interfaces=lambda: table,
        )

    def test_memberlist_advertises_an_interface_address(self) -> None:
        node = self.memberlist(INTERFACES)
        self.successResultOf(node.start())
        self.assertEqual(node.local_member().address, "10.0.0.5")
        node.shutdown()

    def test_memberlist_without_address_fails_before_binding(self) -> None:
        node = self.memberlist({"lo": (True, ["127.0.0.1"])})
        failure = self.failureResultOf(node.start(), AdvertiseError)
        self.assertIn("set advertise_address", str(failure.value))
        assert isinstance(node.transport, WildcardTransport)
        self.assertFalse(node.transport.started)
        self.assertEqual(node.members(), [])

    def test_options_carry_advertise_interfaces(self) -> None:
        self.assertEqual(
            Options().gossip_config().advertise_interfaces, DEFAULT_INTERFACES
        )
        options = Options(advertise_interfaces=["all"])
        self.assertEqual(options.gossip_config().advertise_interfaces, ("all",))
        with self.assertRaises(ValueError) as raised:
            Options(advertise_interfaces=[""])
        self.assertIn("advertise_interfaces", str(raised.exception))


class JoinResolutionTests(SynchronousTestCase):
    """
    Item 9: a seed name is resolved through twisted.names and every
    address it has is pushed/pulled.
    """

    def test_every_address_of_a_name_is_joined(self) -> None:
        network = SimulatedNetwork(seed=91)
        a, b = start_and_join(network, "a", "b", settle=2)
        c = network.memberlist("c")
        c.start()
        resolver = FakeResolver(
            a={"seeds.example.invalid": [a.transport.host, b.transport.host]}
        )
        joiner = network.memberlist("joiner")
        joiner.resolver = resolver
        joiner.start()
        before = a.counters.push_pulls.served, b.counters.push_pulls.served
        joined = joiner.join(
            ["seeds.example.invalid", f"c/{c.local_member().full_address()}"]
        )
        network.run(1)
        self.assertEqual(self.successResultOf(joined), 3)
        self.assertEqual(
            sorted(resolver.queries),
            [("A", "seeds.example.invalid"), ("AAAA", "seeds.example.invalid")],
        )
        self.assertEqual(
            {m.name for m in joiner.alive_members()}, {"a", "b", "c", "joiner"}
        )
        # Both addresses were pushed/pulled, not only the first.
        after = a.counters.push_pulls.served, b.counters.push_pulls.served
        self.assertEqual((after[0] - before[0], after[1] - before[1]), (1, 1))

    def test_unresolvable_seed_names_the_name(self) -> None:
        network = SimulatedNetwork(seed=92)
        joiner = network.memberlist("joiner")
        joiner.resolver = FakeResolver()
        joiner.start()
        failure = self.failureResultOf(
            joiner.join(["gone.example.invalid:7946"]), JoinError
        )
        self.assertIn("gone.example.invalid", str(failure.value))
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class ReadinessOrderTests(SynchronousTestCase):
    """
    Item 5: Alloy's order: readiness before the notification limiter, the
    deadline from creation, a slow terminating step is a warning.
    """

    def test_readiness_is_updated_before_the_coalescing(self) -> None:
        network = SimulatedNetwork(seed=51)
        a, b = cluster_services(network, 2, minimum_cluster_size=2)
        a.startService()
        b.startService()
        network.run(3)
        a.change_state(PeerState.PARTICIPANT)
        network.run(3)
        self.assertFalse(a.data().ready())
        b.change_state(PeerState.PARTICIPANT)
        # The moment a sees b as a participant, it is ready, although the
        # components are only told within the next second.
        took = network.run_until(lambda: len(a.data().peers()) == 2, 2, step=0.001)
        self.assertIsNotNone(took)
        self.assertTrue(a.data().ready())
        for svc in (a, b):
            svc.stopService()
        network.run(10)

    def test_deadline_counts_from_creation(self) -> None:
        network = SimulatedNetwork(seed=52)
        (svc,) = cluster_services(
            network, 1, minimum_cluster_size=3, minimum_size_wait_timeout=10.0
        )
        network.run(6)
        svc.startService()
        network.run(4.1)
        self.assertTrue(svc.data().ready())
        svc.stopService()
        network.run(10)

    def test_slow_terminating_is_a_warning(self) -> None:
        network = SimulatedNetwork(seed=53)
        # Gossip off and 10 x retransmits: the terminating state needs far
        # more than the 5 s the service waits for it.
        slow = GossipConfig.lan(gossip_interval=0, retransmit_mult=10)
        a, b = cluster_services(network, 2, gossip=slow)
        events: list[dict[str, Any]] = []
        a._log = Logger(observer=cast(ILogObserver, events.append))
        a.startService()
        b.startService()
        network.run(3)
        a.change_state(PeerState.PARTICIPANT)
        network.run(3)
        stopped = a.stopService()
        network.run(15)
        self.successResultOf(stopped)
        self.assertEqual(self.flushLoggedErrors(), [])
        texts = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("timed out after 5.0 s announcing the terminating state", texts)
        self.assertFalse(any(e.get("log_failure") for e in events))
        b.stopService()
        network.run(10)
