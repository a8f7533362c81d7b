"""
L{Memberlist}: one node of a memberlist cluster (memberlist's
C{memberlist.go}).

This module holds the public API and the gossip and push/pull loops, and
wires the mechanisms together, each in its own module as in memberlist:
the member table's rules (L{cluster.gossip.state}, whose L{Changes} are
carried out here), failure detection (L{cluster.gossip.probe}), sending
(L{cluster.gossip.messenger}) and receiving (L{cluster.gossip.net}).
Timers come from the injected reactor and traffic goes through an
L{ITransport}, so the whole thing runs on a L{twisted.internet.task.Clock}
and L{cluster.testing.SimulatedNetwork} in tests.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluster.gossip.acks import AckTable
from cluster.gossip.address import (
    Address,
    default_resolver,
    gather,
    join_host_port,
    parse_address,
    parse_ip,
    resolve_host,
)
from cluster.gossip.advertise import (
    InterfaceTable,
    choose_advertise_address,
    system_interfaces,
)
from cluster.gossip.awareness import Awareness
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.config import META_MAX_SIZE, GossipConfig
from cluster.gossip.errors import (
    BindError,
    JoinError,
    NoPingResponseError,
    RemoteError,
)
from cluster.gossip.framing import PacketCodec, StreamCodec, codecs_for
from cluster.gossip.interfaces import IBroadcastWaker, ITransport, reactor_or_global
from cluster.gossip.members import Member, MemberState, NodeState
from cluster.gossip.messenger import Messenger
from cluster.gossip.net import Receiver
from cluster.gossip.probe import Prober
from cluster.gossip.serf import SerfClock, serf_leave_intent
from cluster.gossip.state import (
    Changes,
    EventKind,
    MemberTable,
    initial_incarnation,
)
from cluster.gossip.timers import Ticker, Timers
from cluster.gossip.wire import (
    ErrResp,
    Message,
    Ping,
    PushPull,
    User,
    WireError,
    encode_message,
    ip_to_bytes,
)

__all__ = ["BindError", "JoinError", "Memberlist", "RemoteError"]

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_scale(interval: float, n: int) -> float:
    """
    Stretch the push/pull interval for clusters above 32 members, so the
    total TCP load grows slowly with cluster size.
    """
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval * multiplier


@attrs.define(eq=False)
class Memberlist:
    """
    A gossip member: finds peers, detects failures, spreads changes.

    Create it with a L{GossipConfig}, then L{start} it and L{join} seeds.

    @param reactor: time (and, for the default transport, sockets); the
        global reactor when C{None}.
    @param transport: moves bytes; a L{cluster.gossip.transport.NetTransport}
        on C{reactor} when C{None}.
    @param rng: makes every random choice, so a seeded one gives a
        reproducible run.
    @param resolver: resolves seed host names (the system's, through
        C{twisted.names}, when C{None}).
    @param interfaces: lists the network interfaces, to pick the address
        to advertise when bound to every interface.
    @ivar stats: counters of traffic and of every dropped input, keyed
        C{"dropped.<reason>"}, C{"packets.in"} and so on.
    @ivar serf_clock: gives our Serf leave intents their LTime.
    """

    config: GossipConfig
    reactor: IReactorTime = attrs.field(default=None, converter=reactor_or_global)
    _given_transport: ITransport | None = attrs.field(default=None, alias="transport")
    rng: random.Random = attrs.field(factory=random.Random)
    resolver: IResolver | None = None
    interfaces: Callable[[], InterfaceTable] = system_interfaces

    transport: ITransport = attrs.field(init=False)
    stats: Counter[str] = attrs.field(factory=Counter, init=False)
    awareness: Awareness = attrs.field(init=False)
    broadcasts: BroadcastQueue = attrs.field(init=False)
    table: MemberTable = attrs.field(init=False)
    _acks: AckTable = attrs.field(init=False)
    _packets: PacketCodec = attrs.field(init=False)
    _streams: StreamCodec = attrs.field(init=False)
    _send: Messenger = attrs.field(init=False)
    _prober: Prober = attrs.field(init=False)
    receiver: Receiver = attrs.field(init=False)
    _timers: Timers = attrs.field(init=False)
    _address_bytes: bytes = attrs.field(default=b"", init=False)
    _port: int = attrs.field(default=0, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _shutdown: bool = attrs.field(default=False, init=False)
    _leave_waiters: list[Deferred[bool]] = attrs.field(factory=list, init=False)
    serf_clock: SerfClock = attrs.field(factory=SerfClock, init=False)
    _leave_spread: bool = attrs.field(default=False, init=False)
    _gossip_ticker: Ticker | None = attrs.field(default=None, init=False)

    _log = Logger()

    def __attrs_post_init__(self) -> None:
        if self._given_transport is not None:
            self.transport = self._given_transport
        else:
            from cluster.gossip.transport import NetTransport

            self.transport = NetTransport(
                self.reactor,
                self.config.bind_address,
                self.config.bind_port,
                stream_timeout=self.config.tcp_timeout,
                tls=self.config.tls,
                stats=self.stats,
            )
        self._timers = Timers(self.reactor, self._log)
        self.awareness = Awareness(self.config.awareness_max_multiplier)
        self.table = MemberTable(
            self.name,
            self.config,
            self.reactor,
            self.rng,
            self.stats,
            self._timers.guard(self._apply),
        )
        self.broadcasts = BroadcastQueue(
            lambda: len(self.table),
            self.config.retransmit_mult,
            on_queued=self._wake_gossip,
        )
        delegate = self.config.delegate
        if IBroadcastWaker.providedBy(delegate):
            delegate.watch_broadcasts(self._wake_gossip)
        self._acks = AckTable(self.reactor, self._timers.guard)
        self._packets, self._streams = codecs_for(self.config)
        self._send = Messenger(
            self.config,
            self.transport,
            self._packets,
            self._streams,
            self.broadcasts,
            self.stats,
            self.config.delegate,
        )
        self._prober = Prober(
            self.config,
            self.reactor,
            self.table,
            self.awareness,
            self._acks,
            self._send,
            self.stats,
            self._ping,
            self._apply,
            self._timers.later,
        )
        self.receiver = Receiver(
            self.config,
            self.stats,
            self._packets,
            self._streams,
            self.table,
            self._acks,
            self._send,
            self._apply,
            self._ping,
            self._local_state,
            self._merge_remote,
            clock=self.reactor,
            witness=(
                self.serf_clock.witness_message
                if self.config.serf_leave_intent
                else None
            ),
        )

    # --- public API ---

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
        if self._shutdown:
            return fail(RuntimeError("memberlist is shut down"))
        if self._started:
            return succeed(None)
        try:
            meta = self._local_meta()
            address = self._advertise_host()
        except ValueError:
            return fail()
        d: Deferred[None] = maybeDeferred(self.transport.start, self.receiver)
        d.addCallbacks(lambda _: self._bound(address, meta), self._bind_failed)
        return d

    def join(self, addresses: Sequence[str]) -> Deferred[int]:
        """
        Push/pull with C{Join=true} against each seed, as memberlist's
        C{Join}: a seed is C{"host:port"}, C{"[v6]:port"} or a bare host
        (taking our bind port), optionally prefixed C{"name/"}; a host name
        is resolved (A and AAAA, through C{twisted.names}, never blocking)
        and every address it resolves to is pushed/pulled.

        @return: a Deferred firing with how many addresses answered; it
            fails with L{JoinError} only when none did.
        """
        return Deferred.fromCoroutine(self._join(list(addresses)))

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
            failing with L{NoPingResponseError} when no ack came within
            C{probe_timeout} (as in memberlist, a late ack is still taken
            until C{probe_interval}, and then ignored).
        """
        if self._shutdown or not self._started:
            return fail(RuntimeError("memberlist is not running"))
        seq = self._acks.next_seq()
        sent = self.reactor.seconds()
        answered: Deferred[float] = Deferred()

        def acked(payload: bytes | None) -> None:
            if not answered.called:
                answered.callback(self.reactor.seconds() - sent)

        def timed_out(result: object, timeout: float) -> Failure:
            return Failure(NoPingResponseError(name, join_host_port(*address)))

        self._acks.expect(seq, acked, None, self.config.probe_interval, lambda: None)
        self._send.send(address, self._ping(seq, name))
        return answered.addTimeout(
            self.config.probe_timeout, self.reactor, onTimeoutCancel=timed_out
        )

    def send_best_effort(self, member: Member, payload: bytes) -> None:
        """
        Send a user message to C{member} in one UDP packet.
        """
        if not payload:
            raise ValueError("refusing an empty user message")
        self._send.raw((member.address, member.port), encode_message(User(payload)))

    def send_reliable(self, member: Member, payload: bytes) -> Deferred[None]:
        """
        Send a user message to C{member} over TCP.
        """
        d = self._send.exchange((member.address, member.port), User(payload))
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
        if self._shutdown:
            return fail(RuntimeError("memberlist is shut down"))
        if not self.table.leaving:
            if self.config.serf_leave_intent:
                self._announce_serf_leave()
            self._apply(self.table.leave(self._leave_finished))
        if self._leave_spread or not any(
            node.name != self.name for node in self.table.live()
        ):
            return succeed(True)
        waiter: Deferred[bool] = Deferred()
        self._leave_waiters.append(waiter)
        if timeout > 0:
            waiter.addTimeout(timeout, self.reactor, self._leave_timed_out)
        return waiter

    def shutdown(self) -> Deferred[None]:
        """
        Stop every loop and timer and close the transport, without telling
        anyone (use L{leave} first for a graceful exit).  Idempotent.
        """
        if self._shutdown or not self._started:
            self._shutdown = True
            return succeed(None)
        self._shutdown = True
        self._send.stopped = self._prober.stopped = self.receiver.stopped = True
        self._timers.stop()
        self._acks.clear()
        self.table.shutdown()
        # A leave still waiting for its broadcast never saw it spread.
        waiters, self._leave_waiters = self._leave_waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(False)
        stopped: Deferred[None] = self.transport.stop()
        return stopped

    # --- starting ---

    def _advertise_host(self) -> str:
        if self.config.advertise_address:
            return self.config.advertise_address
        host = str(self.transport.host)
        if host not in WILDCARD_HOSTS:
            return host
        choice = choose_advertise_address(
            self.config.advertise_interfaces, self.interfaces
        )
        self._log.info(
            "advertising {address} ({reason})",
            address=choice.address,
            reason=choice.reason,
        )
        return choice.address

    def _bound(self, address: str, meta: bytes) -> None:
        if self._shutdown:
            # shutdown() came while the transport was binding.
            self.transport.stop()
            raise RuntimeError("memberlist is shut down")
        self._started = True
        self._address_bytes = ip_to_bytes(address)
        self._port = self.config.advertise_port or self.transport.port
        incarnation = initial_incarnation(self.reactor.seconds())
        self._apply(
            self.table.bootstrap(self._address_bytes, self._port, meta, incarnation)
        )
        self._schedule_loops()

    def _bind_failed(self, failure: Failure) -> Failure:
        error = failure.value
        cause = (
            str(error.socketError)
            if isinstance(error, CannotListenError)
            else failure.getErrorMessage()
        )
        where = join_host_port(str(self.transport.host), self.config.bind_port)
        return Failure(BindError(f"cannot bind {where} (UDP and TCP): {cause}"))

    def _local_meta(self) -> bytes:
        delegate = self.config.delegate
        if delegate is None:
            return b""
        meta = bytes(delegate.node_meta(META_MAX_SIZE))
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node meta is {len(meta)} bytes, over {META_MAX_SIZE}")
        return meta

    async def _join(self, seeds: list[str]) -> int:
        errors: dict[str, Failure] = {}
        attempts: list[tuple[str, Deferred[None]]] = []
        resolved = await gather(
            [Deferred.fromCoroutine(self._resolve_seed(seed)) for seed in seeds]
        )
        for seed, result in zip(seeds, resolved, strict=True):
            if isinstance(result, Failure):
                errors[seed] = result
                self._log.warn(
                    "failed to resolve {seed}: {error}",
                    seed=seed,
                    error=result.getErrorMessage(),
                )
                continue
            for address in result:
                label = join_host_port(*address)
                attempts.append((label, self._push_pull(address, join=True)))
        outcomes = await gather([d for _, d in attempts])
        contacted = 0
        for (label, _), outcome in zip(attempts, outcomes, strict=True):
            if not isinstance(outcome, Failure):
                contacted += 1
                continue
            errors[label] = outcome
            self._log.debug(
                "failed to join {seed}: {error}",
                seed=label,
                error=outcome.getErrorMessage(),
            )
        if seeds and contacted == 0:
            raise JoinError(errors)
        return contacted

    async def _resolve_seed(self, seed: str) -> list[Address]:
        # memberlist accepts "name/host:port"; the name only matters to
        # transports that check it, and ours do not.
        _, _, text = seed.rpartition("/")
        host, port = parse_address(text, self.config.bind_port or self.port)
        ip = parse_ip(host)
        if ip is not None:
            return [(ip, port)]
        if self.resolver is None:
            self.resolver = default_resolver(self.reactor)
        return [(address, port) for address in await resolve_host(self.resolver, host)]

    # --- carrying out the table's changes ---

    def _apply(self, changes: Changes) -> None:
        """
        Queue the broadcasts, then tell the delegates, in order.
        """
        for broadcast in changes.broadcasts:
            self.broadcasts.queue(
                encode_message(broadcast.message), broadcast.name, broadcast.on_finished
            )
        if changes.refuted:
            self.awareness.apply_delta(1)
        events, conflict = self.config.events, self.config.conflict
        for event in changes.events:
            if event.kind == EventKind.CONFLICT:
                if conflict is not None and event.other is not None:
                    conflict.notify_conflict(event.member, event.other)
            elif events is not None:
                if event.kind == EventKind.JOIN:
                    events.notify_join(event.member)
                elif event.kind == EventKind.LEAVE:
                    events.notify_leave(event.member)
                else:
                    events.notify_update(event.member)

    # --- timers and loops ---

    def _schedule_loops(self) -> None:
        """
        Start probing (see L{cluster.gossip.probe}) and gossip on fixed
        tickers and push/pull on a timer rescaled with the cluster size.
        Each loop waits a random stagger, under one interval, so that nodes
        started together do not tick in lockstep.  The first probe and
        gossip round come a whole interval later, as memberlist's do; the
        first push/pull comes at once, where memberlist's waits an interval
        more (up to 60 s at its LAN timings): it repairs a join broadcast
        that was lost sooner.
        """
        interval = self.config.probe_interval
        self._timers.later(
            self.rng.random() * interval,
            self._timers.every,
            interval,
            self._prober.tick,
            False,
        )
        if self.config.gossip_interval > 0:
            stagger = self.rng.random() * self.config.gossip_interval
            self._timers.later(stagger, self._start_gossip)
        if self.config.push_pull_interval > 0:
            stagger = self.rng.random() * self.config.push_pull_interval
            self._timers.later(stagger, self._push_pull_tick)

    def _push_pull_tick(self) -> None:
        # Not a LoopingCall: memberlist rescales the interval on every tick.
        self._timers.later(
            push_pull_scale(self.config.push_pull_interval, len(self.table)),
            self._push_pull_tick,
        )
        candidates = [
            node
            for node in self.table.in_probe_order()
            if node.name != self.name and node.state == MemberState.ALIVE
        ]
        if candidates:
            node = self.rng.choice(candidates)
            self._push_pull((node.address, node.port), join=False).addErrback(
                self._push_pull_failed, node.name
            )

    def _start_gossip(self) -> None:
        # Idle gossip ticks may sleep only when every queue says when it
        # is filled: ours, and the delegate's if it has one.
        delegate = self.config.delegate
        if delegate is None or IBroadcastWaker.providedBy(delegate):
            tick = self._gossip
        else:

            def tick() -> bool:
                self._gossip()
                return True

        self._gossip_ticker = self._timers.ticker(
            self.config.gossip_interval, tick, now=False
        )

    def _wake_gossip(self) -> None:
        if self._gossip_ticker is not None:
            self._gossip_ticker.wake()

    def _gossip(self) -> bool:
        """
        One gossip round (memberlist's C{gossip}).

        @return: C{False} when there was nothing to send to a target: both
            queues are empty and the ticker may sleep.  With no target at
            all the queues were not asked (as in memberlist), so C{True}.
        """
        now = self.reactor.seconds()

        def wanted(node: NodeState) -> bool:
            if node.name == self.name:
                return False
            if node.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return True
            return (
                node.state == MemberState.DEAD
                and now - node.state_change <= self.config.gossip_to_the_dead_time
            )

        targets = self.table.random_nodes(self.config.gossip_nodes, wanted)
        # The recently dead last (memberlist keeps kRandomNodes' order): when
        # a broadcast's last transmission comes up in this round, a live
        # member gets it.  A leave with two transmissions at three members
        # otherwise went to a crashed member now and then, and the others
        # recorded the leaver as failed.
        targets.sort(key=lambda node: node.state == MemberState.DEAD)
        for node in targets:
            address = (node.address, node.port)
            if not self._send.gossip(address, crc=node.protocol_max >= 5):
                return False
        return True

    def _ping(self, seq: int, node: str) -> Ping:
        return Ping(
            seq,
            node,
            source_addr=self._address_bytes,
            source_port=self._port,
            source_node=self.name,
        )

    def _push_pull_failed(self, failure: Failure, name: str) -> None:
        self.stats["push_pull.failed"] += 1
        self._log.debug(
            "push/pull with {peer} failed: {error}",
            peer=name,
            error=failure.getErrorMessage(),
        )

    # --- push/pull ---

    def _local_state(self, join: bool) -> PushPull:
        user_state = b""
        if self.config.delegate is not None:
            user_state = bytes(self.config.delegate.local_state(join))
        return PushPull(join, self.table.push_states(), user_state)

    def _push_pull(self, address: Address, join: bool) -> Deferred[None]:
        if self._shutdown:
            return fail(RuntimeError("memberlist is shut down"))

        def got(reply: Message | None) -> None:
            # A reply we cannot open (say, encrypted with a key we lack) was
            # counted as dropped by the messenger, and fails this exchange.
            if reply is None:
                raise ConnectionError("peer closed the stream without a reply")
            if isinstance(reply, ErrResp):
                raise RemoteError(reply.error)
            if not isinstance(reply, PushPull):
                raise WireError(f"expected push/pull, got {type(reply).__name__}")
            self.stats["push_pull.out"] += 1
            self._merge_remote(reply)

        return self._send.exchange(address, self._local_state(join)).addCallback(got)

    def _merge_remote(self, remote: PushPull) -> None:
        self._apply(self.table.merge(remote.nodes))
        if self.config.serf_leave_intent:
            self.serf_clock.witness_state(remote.user_state)
        if remote.user_state and self.config.delegate is not None:
            self.config.delegate.merge_remote_state(remote.user_state, remote.join)

    # --- leaving ---

    def _announce_serf_leave(self) -> None:
        """
        Tell every live member, directly and then by gossip, that we leave
        (Serf's leave intent), before our dead message goes out.

        Gossip alone sends a broadcast only a few times (4 in a cluster of
        under 10) to random members, some of them possibly dead, so a Serf
        agent can miss the intent and report us I{failed}; Serf's own
        anti-entropy repairs that only after a push/pull, 30 s or more
        later.  One direct packet per live member, once, makes I{left}
        dependable; the gossiped copy covers lost packets.
        """
        intent = serf_leave_intent(
            self.name, self.serf_clock.next(self.reactor.seconds())
        )
        for node in self.table.live():
            if node.name != self.name:
                self._send.raw((node.address, node.port), intent)
        self.broadcasts.queue(intent, "serf-leave-intent")

    def _leave_finished(self) -> None:
        # The queue says so while the packet with the last transmission is
        # still being built: tell the waiters after it has been sent, or a
        # caller that shuts down at once would drop it.
        self._timers.later(0, self._leave_sent)

    def _leave_sent(self) -> None:
        self._leave_spread = True
        waiters, self._leave_waiters = self._leave_waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(True)

    def _leave_timed_out(self, result: object, timeout: float) -> bool:
        self._log.warn(
            "timed out after {timeout} s waiting for the leave broadcast",
            timeout=timeout,
        )
        return False
