"""
L{Memberlist}: one node of a memberlist cluster (memberlist's
C{memberlist.go}): the public API, wiring the mechanisms together.

Each mechanism has its own module, as in memberlist: the member table's
rules (L{cluster.gossip.state}) and what their changes do
(L{cluster.gossip.effects}), failure detection (L{cluster.gossip.probe}),
the gossip and push/pull loops and push/pull itself
(L{cluster.gossip.loops}), joining (L{cluster.gossip.join}), leaving
(L{cluster.gossip.leave}), what we advertise (L{cluster.gossip.origin}) and
advertising it anew (L{cluster.gossip.update}),
sending (L{cluster.gossip.messenger}) and receiving (L{cluster.gossip.net}).
Timers come from the injected reactor and traffic goes through an
L{ITransport}, so the whole thing runs on a L{twisted.internet.task.Clock}
and L{cluster.testing.SimulatedNetwork} in tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluster.gossip.acks import AckTable
from cluster.gossip.address import Address, default_resolver, join_host_port
from cluster.gossip.advertise import InterfaceTable, system_interfaces
from cluster.gossip.awareness import Awareness
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.config import GossipConfig
from cluster.gossip.counters import GossipCounters
from cluster.gossip.effects import Effects
from cluster.gossip.errors import (
    BindError,
    JoinError,
    JoinRefused,
    RemoteError,
    cannot_listen,
)
from cluster.gossip.framing import codecs_for
from cluster.gossip.interfaces import IBroadcastWaker, ITransport, reactor_or_global
from cluster.gossip.join import join
from cluster.gossip.leave import Departure
from cluster.gossip.loops import Loops, StateSync
from cluster.gossip.members import Member
from cluster.gossip.messenger import Messenger
from cluster.gossip.net import Receiver
from cluster.gossip.nodelog import node_logger
from cluster.gossip.origin import Origin, advertise_host, node_meta
from cluster.gossip.probe import Prober
from cluster.gossip.serf import SerfClock
from cluster.gossip.state import MemberTable, initial_incarnation
from cluster.gossip.timers import Lifecycle, Phase, Timers
from cluster.gossip.update import NodeUpdate
from cluster.gossip.wire import User, encode_message, ip_to_bytes

__all__ = ["BindError", "JoinError", "JoinRefused", "Memberlist", "RemoteError"]

_Part = TypeVar("_Part", bound=attrs.AttrsInstance)


def _assemble(
    kind: type[_Part], parts: Mapping[str, object], own: Mapping[str, object]
) -> _Part:
    """
    Make a C{kind}, an attrs class, from the arguments C{own} given for it
    and, for each other argument it takes, the part named alike in C{parts}.

    @raise TypeError: when an argument it needs is in neither.
    """
    taken = {field.alias for field in attrs.fields(kind) if field.init}
    shared = {name: part for name, part in parts.items() if name in taken}
    return kind(**{**shared, **own})


@attrs.define(eq=False)
class Memberlist:
    """
    A gossip member: finds peers, detects failures, spreads changes.

    Create it with a L{GossipConfig}, then L{start} it and L{join} seeds.
    The other arguments, all optional, are the attributes of the same names.

    @ivar reactor: time (and, for the default transport, sockets and name
        resolution); the global reactor when C{None} is given.
    @ivar transport: moves bytes: the one given, or a
        L{cluster.gossip.transport.NetTransport} on C{reactor}.
    @ivar rng: makes every random choice, so a seeded one gives a
        reproducible run.
    @ivar resolver: resolves seed host names (the system's, through
        C{twisted.names}, when C{None}).
    @ivar interfaces: lists the network interfaces, to pick the address
        to advertise when bound to every interface.
    @ivar counters: what the member counts as it works (traffic, dropped
        input by reason, probes, member events...), read by the metrics.
    @ivar serf_clock: gives our Serf leave intents their LTime.
    @ivar lifecycle: new, running once bound, stopped for good by
        L{shutdown}; every part reads it.
    @ivar table: every member we know and memberlist's rules over them.
    @ivar effects: carries out the table's changes.
    @ivar broadcasts: our broadcasts waiting to be piggybacked or gossiped.
    @ivar awareness: our Lifeguard health score.
    @ivar messenger: sends everything.
    @ivar receiver: handles everything the transport delivers.
    @ivar prober: the failure-detection rounds.
    @ivar sync: the push/pull exchange.
    @ivar loops: the probe, gossip and push/pull loops.
    """

    config: GossipConfig
    reactor: IReactorTime = attrs.field(default=None, converter=reactor_or_global)
    _given_transport: ITransport | None = attrs.field(default=None, alias="transport")
    rng: random.Random = attrs.field(factory=random.Random)
    resolver: IResolver | None = None
    interfaces: Callable[[], InterfaceTable] = system_interfaces

    transport: ITransport = attrs.field(init=False)
    counters: GossipCounters = attrs.field(factory=GossipCounters, init=False)
    serf_clock: SerfClock = attrs.field(factory=SerfClock, init=False)
    lifecycle: Lifecycle = attrs.field(factory=Lifecycle, init=False)
    awareness: Awareness = attrs.field(init=False)
    broadcasts: BroadcastQueue = attrs.field(init=False)
    effects: Effects = attrs.field(init=False)
    table: MemberTable = attrs.field(init=False)
    messenger: Messenger = attrs.field(init=False)
    sync: StateSync = attrs.field(init=False)
    loops: Loops = attrs.field(init=False)
    prober: Prober = attrs.field(init=False)
    receiver: Receiver = attrs.field(init=False)
    _timers: Timers = attrs.field(init=False)
    _acks: AckTable = attrs.field(init=False)
    _origin: Origin = attrs.field(init=False)
    _departure: Departure = attrs.field(init=False)
    _update: NodeUpdate = attrs.field(init=False)

    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda node: node_logger(node, node.config.name), takes_self=True
        ),
    )

    def __attrs_post_init__(self) -> None:
        config, clock = self.config, self.reactor
        serf = self.serf_clock if config.serf_leave_intent else None
        if self._given_transport is not None:
            self.transport = self._given_transport
        else:
            from cluster.gossip.transport import NetTransport

            self.transport = NetTransport(
                clock,
                config.bind_address,
                config.bind_port,
                stream_timeout=config.tcp_timeout,
                tls=config.tls,
                counters=self.counters,
            )
        self._timers = timers = Timers(clock, self._log)
        packets, streams = codecs_for(config)
        # Every mechanism takes the parts it shares by the same names; one
        # builder hands them over, so each line below says only what is
        # particular to one mechanism (see _assemble).
        parts: dict[str, object] = {
            "config": config,
            "clock": clock,
            "rng": self.rng,
            "lifecycle": self.lifecycle,
            "serf_clock": serf,
            "timers": timers,
            "transport": self.transport,
            "packets": packets,
            "streams": streams,
        }

        def part(key: str, kind: type[_Part], /, **own: object) -> _Part:
            made = parts[key] = _assemble(kind, parts, own)
            return made

        self.awareness = part(
            "awareness", Awareness, max_multiplier=config.awareness_max_multiplier
        )
        self.broadcasts = part(
            "broadcasts",
            BroadcastQueue,
            num_nodes=lambda: len(self.table),
            retransmit_mult=config.retransmit_mult,
        )
        self.effects = part("effects", Effects)
        self.table = part(
            "table",
            MemberTable,
            name=self.name,
            counters=self.counters,
            on_timer=timers.guard(self.effects.apply),
        )
        self._acks = part("acks", AckTable, guard=timers.guard)
        self.messenger = part(
            "messenger", Messenger, counters=self.counters, delegate=config.delegate
        )
        self.sync = part("sync", StateSync, counters=self.counters.push_pulls)
        self.loops = part("loops", Loops, counters=self.counters.push_pulls)
        # The gossip ticker sleeps while every queue is empty: each wakes it.
        self.broadcasts.on_queued = self.loops.wake_gossip
        if IBroadcastWaker.providedBy(config.delegate):
            config.delegate.watch_broadcasts(self.loops.wake_gossip)
        self._departure = part("departure", Departure)
        self._origin = part("origin", Origin, name=self.name)
        self._update = part("update", NodeUpdate)
        self.prober = part("prober", Prober, counters=self.counters.probes)
        self.receiver = part(
            "receiver",
            Receiver,
            counters=self.counters,
            witness=None if serf is None else serf.witness_message,
        )

    @property
    def name(self) -> str:
        """
        Our node name.
        """
        return self.config.name

    @property
    def port(self) -> int:
        """
        The bound port (UDP and TCP), once started.
        """
        return int(self.transport.port)

    def start(self) -> Deferred[None]:
        """
        Bind the transport, announce ourselves and start the loops.

        Every call on a node that is not running tries again, so each one
        fails while the address stays unusable.

        @return: a Deferred firing once bound; it fails with L{BindError}
            (naming the address and the cause) when binding fails, or with
            L{AdvertiseError} (before any socket is opened) when bound to
            every interface with no address to advertise.
        """
        if self.lifecycle.stopped:
            return fail(RuntimeError("memberlist is shut down"))
        if self.lifecycle.running:
            return succeed(None)
        try:
            meta = node_meta(self.config)
            host = str(self.transport.host)
            address = advertise_host(self.config, host, self.interfaces)
        except ValueError:
            return fail()
        d: Deferred[None] = maybeDeferred(self.transport.start, self.receiver)
        d.addCallbacks(lambda _: self._bound(address, meta), self._bind_failed)
        return d

    def join(self, addresses: Sequence[str]) -> Deferred[int]:
        """
        Push/pull with C{Join=true} against every address of each seed, as
        memberlist's C{Join} (a seed is as L{resolve_seed} reads it; a bare
        host takes our bind port).

        @return: a Deferred firing with how many addresses answered; it
            fails with L{JoinError} only when none did: L{JoinRefused}
            (naming each cause in words) when one answered and refused us.
        """
        port = self.config.bind_port or self.port
        return Deferred.fromCoroutine(
            join(list(addresses), self.sync, port, self._resolver, self._log)
        )

    def members(self) -> list[Member]:
        """
        Every member in our table, ourselves included, in any state (dead
        and left members stay until reaped after C{gossip_to_the_dead_time}).
        """
        return [node.to_member() for node in self.table]

    def alive_members(self) -> list[Member]:
        """
        Members that are alive or suspect (memberlist's C{Members()}).
        """
        return [node.to_member() for node in self.table.live()]

    def member(self, name: str) -> Member | None:
        """
        Our record of C{name}, if any.
        """
        node = self.table.get(name)
        return None if node is None else node.to_member()

    def local_member(self) -> Member:
        """
        Our own record.

        @raise KeyError: before L{start}.
        """
        node = self.table.get(self.name)
        if node is None:
            raise KeyError(f"{self.name} is not started")
        return node.to_member()

    def num_members(self) -> int:
        """
        How many members are alive or suspect, ourselves included.
        """
        return len(self.table.live())

    def health_score(self) -> int:
        """
        Our Lifeguard health score: 0 is healthy, higher means our own
        probes fail, so a failed probe round waits longer.
        """
        return self.awareness.score

    def ping(self, name: str, address: Address) -> Deferred[float]:
        """
        Ping C{name} at C{address} once over UDP, member or not
        (memberlist's C{Ping}): only a process of that name acks.

        @return: a Deferred firing with the round trip in seconds, or
            failing with L{NoPingResponseError} (see L{Prober.ping}).
        """
        if not self.lifecycle.running:
            return fail(RuntimeError("memberlist is not running"))
        return self.prober.ping(name, address)

    def send_best_effort(self, member: Member, payload: bytes) -> None:
        """
        Send a user message to C{member} in one UDP packet.
        """
        if not payload:
            raise ValueError("refusing an empty user message")
        self.messenger.raw((member.address, member.port), encode_message(User(payload)))

    def send_reliable(self, member: Member, payload: bytes) -> Deferred[None]:
        """
        Send a user message to C{member} over TCP.
        """
        d = self.messenger.exchange((member.address, member.port), User(payload))
        return d.addCallback(lambda _: None)

    def leave(self, timeout: float) -> Deferred[bool]:
        """
        Announce that we are leaving (a dead message about ourselves from
        ourselves, which peers record as I{left}) and wait for it to spread.

        @param timeout: seconds to wait at most; 0 (or less) waits without a
            bound, as memberlist's C{Leave(0)}.
        @return: a Deferred firing with C{True} once the broadcast was sent
            its full number of times, or C{False} if C{timeout} passed or
            L{shutdown} was called first.
        """
        if self.lifecycle.stopped:
            return fail(RuntimeError("memberlist is shut down"))
        return self._departure.leave(timeout)

    def update_node(self, timeout: float) -> Deferred[bool]:
        """
        Advertise the delegate's node meta anew (memberlist's C{UpdateNode}):
        see L{NodeUpdate.update}.
        """
        return self._update.update(timeout)

    def shutdown(self) -> Deferred[None]:
        """
        Stop every loop and timer and close the transport, without telling
        anyone (use L{leave} first for a graceful exit).  Idempotent.
        """
        if not self.lifecycle.stop():
            return succeed(None)
        self._timers.stop()
        self._acks.clear()
        self.table.shutdown()
        self._departure.abandon()
        self._update.abandon()
        return self.transport.stop()

    def _bound(self, address: str, meta: bytes) -> None:
        if self.lifecycle.stopped:
            # shutdown() came while the transport was binding.
            self.transport.stop()
            raise RuntimeError("memberlist is shut down")
        self.lifecycle.phase = Phase.RUNNING
        origin = self._origin
        origin.address = ip_to_bytes(address)
        origin.port = self.config.advertise_port or self.transport.port
        incarnation = initial_incarnation(self.reactor.seconds())
        self.effects.apply(
            self.table.bootstrap(origin.address, origin.port, meta, incarnation)
        )
        self.loops.start(self.prober.tick)

    def _bind_failed(self, failure: Failure) -> Failure:
        error = failure.value
        cause = (
            error.socketError
            if isinstance(error, CannotListenError)
            else failure.getErrorMessage()
        )
        where = join_host_port(str(self.transport.host), self.config.bind_port)
        return Failure(BindError(f"{cannot_listen(where, cause)} (UDP or TCP)"))

    def _resolver(self) -> IResolver:
        if self.resolver is None:
            self.resolver = default_resolver(self.reactor)
        return self.resolver
