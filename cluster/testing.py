"""
Deterministic simulation of many cluster nodes in one process.

Like C{treq.testing}, this is public API: use it to test code that embeds
the cluster without sockets or real time.  A L{SimulatedNetwork} carries
the real encoded packets and streams of any number of
L{cluster.gossip.Memberlist} instances on one L{SimulatedClock}, with
per-link latency and loss, one-way and two-way partitions, crashed hosts
and "starved" hosts whose input is handled late.  Every random choice,
the network's and each node's, comes from the network's seed, so a failing
seed reproduces exactly::

    network = SimulatedNetwork(seed=7)
    nodes = [network.memberlist(f"node-{i}") for i in range(5)]
    for node in nodes:
        node.start()
    for node in nodes[1:]:
        node.join([nodes[0].local_member().full_address()])
    network.run(10)
    assert all(n.num_members() == 5 for n in nodes)

Simulated hosts use addresses in 127.0.0.0/8: the simulation never
touches a socket, and if an address leaked it would stay on loopback.

For tests that start real processes on 127.0.0.1, L{free_loopback_port}
picks the port numbers they listen on.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import (
    AlreadyCalled,
    AlreadyCancelled,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from zope.interface import implementer

from cluster.alloy.interfaces import ServiceHost
from cluster.alloy.options import Options
from cluster.alloy.service import ClusterService, SimpleServiceHost
from cluster.ckit.node import Node
from cluster.daemon.ports import ephemeral_port_floor, free_loopback_port
from cluster.gossip.config import GossipConfig, GossipSettings
from cluster.gossip.counters import CounterRecord
from cluster.gossip.interfaces import (
    IDelegate,
    IFrameMeasure,
    IPacketHandler,
    ITransport,
    StreamTimeout,
)
from cluster.gossip.memberlist import Memberlist
from cluster.shard import Sharder

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "NetworkCounters",
    "RecordingDelegate",
    "SimulatedClock",
    "SimulatedNetwork",
    "SimulatedTransport",
    "ephemeral_port_floor",
    "free_loopback_port",
]

Address = tuple[str, int]
DEFAULT_PORT = 7946


@implementer(IDelayedCall)
class _Timer:
    """
    One call scheduled on a L{SimulatedClock}.
    """

    def __init__(
        self,
        clock: SimulatedClock,
        when: float,
        func: Callable[..., object],
        args: tuple[object, ...],
        kw: dict[str, object],
    ) -> None:
        self.clock = clock
        self.time = when
        self.func, self.args, self.kw = func, args, kw
        self.cancelled = self.called = False

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        if self.cancelled:
            raise AlreadyCancelled()
        if self.called:
            raise AlreadyCalled()
        self.cancelled = True

    def reset(self, secondsFromNow: float) -> None:
        self._move(self.clock.seconds() + secondsFromNow)

    def delay(self, secondsLater: float) -> None:
        self._move(self.time + secondsLater)

    def _move(self, when: float) -> None:
        if not self.active():
            raise AlreadyCancelled() if self.cancelled else AlreadyCalled()
        self.time = when
        # The old heap entry no longer matches our time and is skipped.
        self.clock.schedule(self)


class SimulatedClock(Clock):
    """
    A L{Clock} for many timers.

    L{Clock} keeps its calls in a sorted list, re-sorted on every
    C{callLater}: fine for a test with a few timers, slow for a simulation
    of hundreds of nodes with several timers each.  This clock keeps its
    own timers in a heap instead, and runs each at its own scheduled time
    while L{advance} walks forward, so a single C{advance(30)} is as exact
    as thirty thousand small steps.
    """

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._serial = itertools.count()

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall:
        timer = _Timer(self, self.seconds() + delay, callable, args, kw)
        self.schedule(timer)
        return timer

    def schedule(self, timer: _Timer) -> None:
        """
        Put C{timer} in the heap at its time.
        """
        heapq.heappush(self._heap, (timer.time, next(self._serial), timer))

    def getDelayedCalls(self) -> list[IDelayedCall]:
        seen: dict[int, IDelayedCall] = {}
        for when, _, timer in self._heap:
            if timer.active() and timer.time == when:
                seen[id(timer)] = timer
        return list(seen.values())

    def advance(self, amount: float) -> None:
        target = self.rightNow + amount
        heap = self._heap
        while heap and heap[0][0] <= target:
            when, _, timer = heapq.heappop(heap)
            if not timer.active() or timer.time != when:
                continue  # cancelled, or moved by reset() or delay()
            self.rightNow = max(self.rightNow, when)
            timer.called = True
            timer.func(*timer.args, **timer.kw)
        self.rightNow = target


@attrs.define(eq=False)
class _Arrival:
    """
    A datagram that reached a starved host at C{time} and waits there to
    be handled.
    """

    time: float


@implementer(ITransport)
@attrs.define(eq=False)
class SimulatedTransport:
    """
    One host's endpoint on a L{SimulatedNetwork}.
    """

    network: SimulatedNetwork
    host: str
    port: int = DEFAULT_PORT
    handler: IPacketHandler | None = None

    def start(self, handler: IPacketHandler) -> Deferred[None]:
        self.handler = handler
        self.network._attach(self)
        return succeed(None)

    def send_packet(self, data: bytes, address: Address) -> None:
        self.network._send_packet((self.host, self.port), address, data)

    def packet_queue_lengths(self) -> tuple[int, int]:
        """
        The datagrams that reached this host while it was starved and
        wait to be handled (see L{SimulatedNetwork.starve}); none waits to
        be sent, since a datagram leaves as it is sent (its latency is the
        link's, not ours).
        """
        return (self.network._arrived_unhandled((self.host, self.port)), 0)

    def exchange(
        self,
        address: Address,
        request: bytes,
        reply_measure: IFrameMeasure,
        timeout: float,
    ) -> Deferred[bytes | None]:
        return self.network._exchange(
            (self.host, self.port), address, request, reply_measure, timeout
        )

    def stop(self) -> Deferred[None]:
        self.network._detach(self)
        self.handler = None
        return succeed(None)


@attrs.define
class NetworkCounters(CounterRecord):
    """
    What a L{SimulatedNetwork} did with what it was given.

    @ivar packets_sent: datagrams handed to the network.
    @ivar packets_blocked: of those, datagrams cut by a partition.
    @ivar packets_lost: datagrams lost on a lossy link.
    @ivar packets_undeliverable: datagrams that reached no listening host.
    @ivar packets_delivered: datagrams handed to a host's handler.
    @ivar streams_opened: exchanges dialled.
    @ivar streams_failed: exchanges that failed (refused or timed out).
    """

    packets_sent: int = 0
    packets_blocked: int = 0
    packets_lost: int = 0
    packets_undeliverable: int = 0
    packets_delivered: int = 0
    streams_opened: int = 0
    streams_failed: int = 0


@implementer(IDelegate)
@attrs.define(eq=False)
class RecordingDelegate:
    """
    An L{IDelegate} for tests: it advertises no metadata and no state,
    keeps every user message and remote state it is given, and hands out
    the broadcasts queued in C{outgoing} as many at a time as fit.

    @ivar messages: the user messages received, in order.
    @ivar states: the push/pull states merged, in order.
    @ivar outgoing: user broadcasts waiting to be gossiped.
    """

    messages: list[bytes] = attrs.field(factory=list)
    states: list[bytes] = attrs.field(factory=list)
    outgoing: list[bytes] = attrs.field(factory=list)

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, message: bytes) -> None:
        self.messages.append(message)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        chosen: list[bytes] = []
        used = 0
        while self.outgoing and used + overhead + len(self.outgoing[0]) <= limit:
            item = self.outgoing.pop(0)
            used += overhead + len(item)
            chosen.append(item)
        return chosen

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        self.states.append(state)


@attrs.define(eq=False)
class SimulatedNetwork:
    """
    A deterministic network between simulated hosts.

    @ivar latency: default one-way delay range in seconds, drawn uniformly
        for each packet.
    @ivar loss: default probability that a datagram is lost.  Streams
        (TCP) are reliable, but fail across partitions and to crashed hosts.
    @ivar counters: what happened to the datagrams and streams sent.
    """

    seed: int = 0
    latency: tuple[float, float] = (0.001, 0.005)
    loss: float = 0.0
    clock: SimulatedClock = attrs.field(factory=SimulatedClock)
    rng: random.Random = attrs.field(init=False)
    counters: NetworkCounters = attrs.field(factory=NetworkCounters, init=False)
    _hosts: dict[Address, SimulatedTransport] = attrs.field(factory=dict, init=False)
    _link_latency: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)
    _link_loss: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)
    _blocked: set[tuple[str, str]] = attrs.field(factory=set, init=False)
    _starved: dict[str, tuple[float, float]] = attrs.field(factory=dict, init=False)
    _waiting: dict[Address, set[_Arrival]] = attrs.field(factory=dict, init=False)
    _down: set[str] = attrs.field(factory=set, init=False)
    _next_host: int = attrs.field(default=0, init=False)
    _node_seeds: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # --- building ---

    def new_host(self) -> str:
        """
        A fresh loopback address for a simulated host.
        """
        index = self._next_host
        self._next_host += 1
        return f"127.1.{index // 250}.{index % 250 + 1}"

    def transport(
        self, host: str | None = None, port: int = DEFAULT_PORT
    ) -> SimulatedTransport:
        """
        An unstarted transport for C{host} (a fresh address by default).
        """
        return SimulatedTransport(self, host or self.new_host(), port)

    def _place(self, host: str | None) -> tuple[SimulatedTransport, random.Random]:
        """
        An unstarted transport for a new simulated host (at C{host}, or a
        fresh address), and a random source for what runs there, derived
        from the network's seed.
        """
        transport = self.transport(host)
        self._node_seeds += 1
        return transport, random.Random(f"{self.seed}/{self._node_seeds}")

    def _prepare(
        self,
        name: str,
        config: GossipConfig | None,
        host: str | None,
        overrides: GossipSettings,
    ) -> tuple[GossipConfig, SimulatedTransport, random.Random]:
        """
        What L{_place} gives for a member called C{name}, and its
        configuration: the given C{config} (LAN defaults by default) at the
        new address, then C{overrides}.
        """
        transport, rng = self._place(host)
        base = config or GossipConfig.lan(name=name)
        placed = attrs.evolve(
            base, name=name, bind_address=transport.host, bind_port=transport.port
        )
        return attrs.evolve(placed, **overrides), transport, rng

    def memberlist(
        self,
        name: str,
        /,
        config: GossipConfig | None = None,
        host: str | None = None,
        **overrides: Unpack[GossipSettings],
    ) -> Memberlist:
        """
        A L{Memberlist} on a new simulated host, not yet started.

        @param config: the base configuration (LAN defaults if omitted);
            C{name}, the address and any C{overrides} are applied to it.
        """
        config, transport, rng = self._prepare(name, config, host, overrides)
        return Memberlist(config, self.clock, transport, rng)

    # The factories below take the same arguments on purpose (a user moves
    # from one to another by changing the name); _prepare holds their logic.
    def node(
        self,
        name: str,
        /,
        sharder: Sharder | None = None,
        config: GossipConfig | None = None,
        host: str | None = None,
        **overrides: Unpack[GossipSettings],
    ) -> Node:
        """
        A ckit-style L{Node} on a new simulated host, not yet started (the
        same arguments as L{memberlist}, and the sharder to feed).
        """
        config, transport, rng = self._prepare(name, config, host, overrides)
        return Node(config, sharder, self.clock, transport, rng)

    def cluster_service(
        self,
        options: Options,
        host: str | None = None,
        service_host: ServiceHost | None = None,
    ) -> ClusterService:
        """
        A L{ClusterService} on a new simulated host, not yet started; the
        options' bind address and port are replaced by the host's.
        """
        transport, rng = self._place(host)
        return ClusterService(
            attrs.evolve(
                options, bind_address=transport.host, bind_port=transport.port
            ),
            reactor=self.clock,
            host=service_host or SimpleServiceHost(),
            transport=transport,
            rng=rng,
        )

    # --- running ---

    def run(self, seconds: float) -> None:
        """
        Advance simulated time by C{seconds}.
        """
        self.clock.advance(seconds)

    def run_until(
        self, predicate: Callable[[], bool], timeout: float, step: float = 0.1
    ) -> float | None:
        """
        Advance in C{step}s until C{predicate()} holds.

        @return: the simulated seconds it took, or C{None} if C{timeout}
            passed first.
        """
        start = self.clock.seconds()
        while self.clock.seconds() - start < timeout:
            if predicate():
                return self.clock.seconds() - start
            self.clock.advance(step)
        return self.clock.seconds() - start if predicate() else None

    # --- faults ---

    def set_link(
        self,
        source: str,
        destination: str,
        latency: float | None = None,
        loss: float | None = None,
    ) -> None:
        """
        Fix the one-way latency and/or loss from C{source} to C{destination}.
        """
        if latency is not None:
            self._link_latency[source, destination] = latency
        if loss is not None:
            self._link_loss[source, destination] = loss

    def partition(
        self, side_a: Iterable[str], side_b: Iterable[str], one_way: bool = False
    ) -> None:
        """
        Cut traffic from every host in C{side_a} to every host in
        C{side_b}, and back unless C{one_way}.
        """
        side_b = list(side_b)
        for a in side_a:
            for b in side_b:
                self._blocked.add((a, b))
                if not one_way:
                    self._blocked.add((b, a))

    def heal(self) -> None:
        """
        Remove every partition.
        """
        self._blocked.clear()

    def starve(self, host: str, low: float = 0.5, high: float = 2.5) -> None:
        """
        Make C{host} handle its input late, by C{low}..C{high} seconds:
        a node whose CPU or event loop is overloaded.  Datagrams that have
        arrived and wait show in its transport's
        L{SimulatedTransport.packet_queue_lengths}.
        """
        self._starved[host] = (low, high)

    def crash(self, node: Memberlist | Node) -> None:
        """
        Kill C{node} abruptly: it stops, says nothing, and its host drops
        all traffic.
        """
        memberlist = node.memberlist if isinstance(node, Node) else node
        self._down.add(memberlist.transport.host)
        memberlist.shutdown()

    def restore(self, host: str) -> None:
        """
        Let traffic reach C{host} again (after L{crash}).
        """
        self._down.discard(host)

    # --- transport plumbing ---

    def _attach(self, transport: SimulatedTransport) -> None:
        self._hosts[transport.host, transport.port] = transport

    def _detach(self, transport: SimulatedTransport) -> None:
        if self._hosts.get((transport.host, transport.port)) is transport:
            del self._hosts[transport.host, transport.port]

    def _reachable(self, source: str, destination: str) -> bool:
        return (
            source not in self._down
            and destination not in self._down
            and (source, destination) not in self._blocked
        )

    def _delays(self, source: str, destination: str) -> tuple[float, float]:
        """
        The link's latency, and how much later a starved C{destination}
        handles what arrives (0 when it is not starved).
        """
        link = self._link_latency.get((source, destination))
        if link is None:
            link = self.rng.uniform(*self.latency)
        starved = self._starved.get(destination)
        late = 0.0 if starved is None else self.rng.uniform(*starved)
        return link, late

    def _delay(self, source: str, destination: str) -> float:
        link, late = self._delays(source, destination)
        return link + late

    def _arrived_unhandled(self, address: Address) -> int:
        """
        The datagrams that reached C{address} and wait to be handled.
        """
        now = self.clock.seconds()
        return sum(1 for a in self._waiting.get(address, ()) if a.time <= now)

    def _send_packet(self, source: Address, destination: Address, data: bytes) -> None:
        self.counters.packets_sent += 1
        if not self._reachable(source[0], destination[0]):
            self.counters.packets_blocked += 1
            return
        loss = self._link_loss.get((source[0], destination[0]), self.loss)
        if loss and self.rng.random() < loss:
            self.counters.packets_lost += 1
            return
        link, late = self._delays(source[0], destination[0])
        arrival = None
        if late:
            # It waits at the host, not on the wire: the host's rx queue.
            arrival = _Arrival(self.clock.seconds() + link)
            self._waiting.setdefault(destination, set()).add(arrival)
        self.clock.callLater(
            link + late, self._deliver_packet, source, destination, data, arrival
        )

    def _deliver_packet(
        self,
        source: Address,
        destination: Address,
        data: bytes,
        arrival: _Arrival | None = None,
    ) -> None:
        if arrival is not None:
            waiting = self._waiting[destination]
            waiting.discard(arrival)
            if not waiting:
                del self._waiting[destination]
        target = self._hosts.get(destination)
        if target is None or target.handler is None or destination[0] in self._down:
            self.counters.packets_undeliverable += 1
            return
        self.counters.packets_delivered += 1
        target.handler.packet_received(data, source)

    def _exchange(
        self,
        source: Address,
        destination: Address,
        request: bytes,
        reply_measure: IFrameMeasure,
        timeout: float,
    ) -> Deferred[bytes | None]:
        result: Deferred[bytes | None] = Deferred()
        self.counters.streams_opened += 1

        def settle(outcome: bytes | Exception | None) -> None:
            if result.called:
                return
            if timer.active():
                timer.cancel()
            if isinstance(outcome, Exception):
                self.counters.streams_failed += 1
                result.errback(outcome)
            else:
                result.callback(outcome)

        timer = self.clock.callLater(
            timeout, settle, StreamTimeout(f"stream to {destination} timed out")
        )

        def arrive() -> None:
            target = self._hosts.get(destination)
            if target is None or target.handler is None:
                settle(ConnectionRefusedError(destination[0]))
                return
            if not self._reachable(source[0], destination[0]):
                return  # lost in a partition: the dialler times out
            handler = target.handler
            try:
                complete = handler.stream_measure().feed(request) == len(request)
            except ValueError:
                complete = False
            if not complete:
                # The real acceptor would wait for more, then time out.
                return
            handler.stream_received(request, source).addCallback(respond)

        def respond(reply: bytes | None) -> None:
            if not self._reachable(destination[0], source[0]):
                return
            if reply is not None:
                try:
                    if reply_measure.feed(reply) != len(reply):
                        reply = None
                except ValueError:
                    reply = None
            self.clock.callLater(self._delay(destination[0], source[0]), settle, reply)

        if not self._reachable(source[0], destination[0]):
            if destination[0] in self._down or destination not in self._hosts:
                # Nothing listens there: refused after one round trip.
                self.clock.callLater(
                    2 * self._delay(source[0], destination[0]),
                    settle,
                    ConnectionRefusedError(destination[0]),
                )
            return result
        self.clock.callLater(self._delay(source[0], destination[0]), arrive)
        return result
