"""
L{Memberlist}: one node of a memberlist cluster.

This module holds the protocol state machine (memberlist's state.go,
net.go and memberlist.go): the member table and its alive / suspect / dead
rules, the probe, gossip and push/pull loops, join and leave.  The bytes
are made in L{cluster.gossip.wire} and L{cluster.gossip.framing}; timers
come from the injected reactor and traffic goes through an
L{ITransport}, so the whole thing runs on a L{twisted.internet.task.Clock}
and L{cluster.testing.SimulatedNetwork} in tests.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import (
    Deferred,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IResolver
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

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
from cluster.gossip.framing import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_PART_OVERHEAD,
    USER_MESSAGE_OVERHEAD,
    FrameError,
    PacketCodec,
    StreamCodec,
    make_compound,
    make_compounds,
)
from cluster.gossip.interfaces import IPacketHandler
from cluster.gossip.keyring import encryption_version
from cluster.gossip.members import Member, MemberState, NodeState
from cluster.gossip.serf import serf_leave_intent
from cluster.gossip.suspicion import Suspicion, suspicion_timeout
from cluster.gossip.wire import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPingReq,
    Message,
    MessageType,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
    WireError,
    decode_message,
    encode_message,
    ip_from_bytes,
    ip_to_bytes,
)

__all__ = ["BindError", "JoinError", "Memberlist", "RemoteError"]

WILDCARD_HOSTS = ("0.0.0.0", "::", "")

PUSH_PULL_SCALE_THRESHOLD = 32


class JoinError(Exception):
    """
    No seed could be contacted.  C{errors} maps each address to its failure.
    """

    def __init__(self, errors: dict[str, Failure]) -> None:
        detail = "; ".join(
            f"{address}: {failure.getErrorMessage()}"
            for address, failure in errors.items()
        )
        super().__init__(f"failed to join any seed: {detail}")
        self.errors = errors


class RemoteError(Exception):
    """
    The peer answered a stream with an error message.
    """


class BindError(Exception):
    """
    The transport could not bind its address.  The message names the
    address and the cause.
    """


class ProtocolMismatchError(Exception):
    """
    A push/pull carried a member whose protocol versions do not fit ours.
    """


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
class _AckHandler:
    on_ack: Callable[[bytes | None], object]
    on_nack: Callable[[], object] | None
    timer: IDelayedCall


@attrs.define(eq=False)
class _Probe:
    """
    One probe round of one member (direct, then indirect and TCP).
    """

    node: NodeState
    incarnation: int
    expected_nacks: int = 0
    nacks: int = 0
    tcp_ok: bool = False
    done: bool = False


@implementer(IPacketHandler)
@attrs.define(eq=False)
class Memberlist:
    """
    A gossip member: finds peers, detects failures, spreads changes.

    Create it with a L{GossipConfig}, then L{start} it and L{join} seeds.
    C{reactor} (default: the global reactor) provides time; C{transport}
    (default: a L{cluster.gossip.transport.NetTransport} on that reactor)
    moves bytes; C{rng} makes every random choice, so a seeded one gives a
    reproducible run.

    @ivar stats: counters of traffic and of every dropped input, keyed
        C{"dropped.<reason>"}, C{"packets.in"} and so on.
    """

    config: GossipConfig
    reactor: Any = None
    transport: Any = None
    rng: random.Random = attrs.field(factory=random.Random)
    resolver: IResolver | None = None
    interfaces: Callable[[], InterfaceTable] = system_interfaces

    stats: Counter[str] = attrs.field(factory=Counter, init=False)
    awareness: Awareness = attrs.field(init=False)
    broadcasts: BroadcastQueue = attrs.field(init=False)
    _packets: PacketCodec = attrs.field(init=False)
    _streams: StreamCodec = attrs.field(init=False)
    _nodes: dict[str, NodeState] = attrs.field(factory=dict, init=False)
    _node_list: list[NodeState] = attrs.field(factory=list, init=False)
    _probe_index: int = attrs.field(default=0, init=False)
    _probing: _Probe | None = attrs.field(default=None, init=False)
    _tick_waiting: bool = attrs.field(default=False, init=False)
    _probe_loop: LoopingCall | None = attrs.field(default=None, init=False)
    _seq_no: int = attrs.field(default=0, init=False)
    _incarnation: int = attrs.field(default=0, init=False)
    _ack_handlers: dict[int, _AckHandler] = attrs.field(factory=dict, init=False)
    _suspicions: dict[str, Suspicion] = attrs.field(factory=dict, init=False)
    _timers: set[IDelayedCall] = attrs.field(factory=set, init=False)
    _address: str = attrs.field(default="", init=False)
    _address_bytes: bytes = attrs.field(default=b"", init=False)
    _port: int = attrs.field(default=0, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _leaving: bool = attrs.field(default=False, init=False)
    _shutdown: bool = attrs.field(default=False, init=False)
    _leave_waiters: list[Deferred[bool]] = attrs.field(factory=list, init=False)
    _leave_spread: bool = attrs.field(default=False, init=False)

    _log = Logger()

    def __attrs_post_init__(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        if self.transport is None:
            from cluster.gossip.transport import NetTransport

            self.transport = NetTransport(
                self.reactor,
                self.config.bind_address,
                self.config.bind_port,
                stream_timeout=self.config.tcp_timeout,
            )
        self.awareness = Awareness(self.config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(
            lambda: len(self._nodes), self.config.retransmit_mult
        )
        codec_settings: dict[str, Any] = {
            "label": self.config.label.encode("utf-8"),
            "keyring": self.config.keyring,
            "verify_incoming": self.config.gossip_verify_incoming,
            "verify_outgoing": self.config.gossip_verify_outgoing,
            "compression": self.config.enable_compression,
            "encryption_version": encryption_version(self.config.protocol_version),
        }
        self._packets = PacketCodec(**codec_settings)
        self._streams = StreamCodec(**codec_settings)

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
        d: Deferred[None] = maybeDeferred(self.transport.start, self)
        d.addCallbacks(
            lambda _: self._bound(address, meta),
            self._bind_failed,
        )
        return d

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
        self._address = address
        self._address_bytes = ip_to_bytes(address)
        self._port = self.config.advertise_port or self.transport.port
        self._incarnation = 1
        self._alive_node(
            Alive(1, self.name, self._address_bytes, self._port, meta, self._vsn()),
            bootstrap=True,
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

    async def _join(self, seeds: list[str]) -> int:
        errors: dict[str, Failure] = {}
        attempts: list[tuple[str, Deferred[None]]] = []
        resolved = await gather(
            [Deferred.fromCoroutine(self._resolve_seed(seed)) for seed in seeds]
        )
        for seed, (ok, result) in zip(seeds, resolved, strict=True):
            if not ok:
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
        for (label, _), (ok, result) in zip(attempts, outcomes, strict=True):
            if ok:
                contacted += 1
                continue
            errors[label] = result
            self._log.debug(
                "failed to join {seed}: {error}",
                seed=label,
                error=result.getErrorMessage(),
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

    def members(self) -> list[Member]:
        """
        Every member in our table, ourselves included, in any state (dead
        and left members stay until reaped after C{gossip_to_the_dead_time}).
        """
        return [node.to_member() for node in self._nodes.values()]

    def alive_members(self) -> list[Member]:
        """
        Members that are alive or suspect (memberlist's C{Members()}).
        """
        return [n.to_member() for n in self._nodes.values() if not n.dead_or_left()]

    def member(self, name: str) -> Member | None:
        """
        Our record of C{name}, if any.
        """
        node = self._nodes.get(name)
        return None if node is None else node.to_member()

    def local_member(self) -> Member:
        """
        Our own record.
        """
        return self._nodes[self.name].to_member()

    def num_members(self) -> int:
        """
        How many members are alive or suspect, ourselves included.
        """
        return sum(1 for node in self._nodes.values() if not node.dead_or_left())

    def health_score(self) -> int:
        """
        Our Lifeguard health score: 0 is healthy, higher means our own
        probes fail, so we probe less often.
        """
        return self.awareness.score

    def send_best_effort(self, member: Member, payload: bytes) -> None:
        """
        Send a user message to C{member} in one UDP packet.
        """
        if not payload:
            raise ValueError("refusing an empty user message")
        message = bytes([MessageType.USER]) + payload
        self._raw_send((member.address, member.port), message, crc=False)

    def send_reliable(self, member: Member, payload: bytes) -> Deferred[None]:
        """
        Send a user message to C{member} over TCP.
        """
        data = self._streams.encode(User(payload), dialler=True)
        d: Deferred[bytes | None] = self.transport.exchange(
            (member.address, member.port),
            data,
            lambda buffer: self._streams.frame_length(buffer, accepted=False),
            self.config.tcp_timeout,
        )
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
        if not self._leaving:
            self._leaving = True
            me = self._nodes.get(self.name)
            if self.config.serf_leave_intent:
                self._announce_serf_leave()
            if me is not None:
                self._dead_node(
                    Dead(me.incarnation, self.name, self.name),
                    on_finished=self._leave_finished,
                )
        if self._leave_spread or not any(
            not node.dead_or_left() and node.name != self.name
            for node in self._nodes.values()
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
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for handler in self._ack_handlers.values():
            if handler.timer.active():
                handler.timer.cancel()
        self._ack_handlers.clear()
        for suspicion in self._suspicions.values():
            suspicion.cancel()
        self._suspicions.clear()
        if self._probe_loop is not None and self._probe_loop.running:
            self._probe_loop.stop()
        # A leave still waiting for its broadcast never saw it spread.
        waiters, self._leave_waiters = self._leave_waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(False)
        stopped: Deferred[None] = self.transport.stop()
        return stopped

    # --- timers ---

    def _guarded(self, f: Callable[..., object]) -> Callable[..., None]:
        """
        C{f} as a timer callback that logs its errors instead of raising
        them into the reactor: a faulty delegate must not stop a loop.
        """

        def run(*args: Any) -> None:
            try:
                f(*args)
            except Exception:
                self._log.failure(
                    "unhandled error in {name}", name=getattr(f, "__name__", f)
                )

        return run

    def _call_later(
        self, delay: float, f: Callable[..., object], *args: Any
    ) -> IDelayedCall:
        call: IDelayedCall
        guarded = self._guarded(f)

        def run() -> None:
            self._timers.discard(call)
            guarded(*args)

        call = self.reactor.callLater(delay, run)
        self._timers.add(call)
        return call

    def _schedule_loops(self) -> None:
        # Random stagger so nodes started together do not tick in lockstep.
        self._call_later(
            self.rng.random() * self.config.probe_interval, self._start_probing
        )
        if self.config.gossip_interval > 0:
            self._call_later(
                self.rng.random() * self.config.gossip_interval, self._gossip_tick
            )
        if self.config.push_pull_interval > 0:
            self._call_later(
                self.rng.random() * self.config.push_pull_interval, self._push_pull_tick
            )

    def _start_probing(self) -> None:
        """
        Probe on a fixed C{probe_interval} ticker, as memberlist does.

        A round ends at the first ack, so a healthy round takes one tick
        whatever our health score; only a failed round runs until its
        score-scaled deadline.  Of the ticks a round overlaps, one waits
        and starts the next round as soon as it ends (a Go ticker's
        one-slot channel); the others are dropped.
        """
        loop = LoopingCall(self._guarded(self._probe_tick))
        loop.clock = self.reactor
        self._probe_loop = loop
        loop.start(self.config.probe_interval, now=True)

    def _probe_tick(self) -> None:
        if self._probing is not None and not self._probing.done:
            self._tick_waiting = True
            return
        self._probe()

    def _gossip_tick(self) -> None:
        try:
            self._gossip()
        finally:
            if not self._shutdown:
                self._call_later(self.config.gossip_interval, self._gossip_tick)

    def _push_pull_tick(self) -> None:
        try:
            candidates = [
                node
                for node in self._node_list
                if node.name != self.name and node.state == MemberState.ALIVE
            ]
            if candidates:
                node = self.rng.choice(candidates)
                self._push_pull((node.address, node.port), join=False).addErrback(
                    self._log_push_pull_failure, node.name
                )
        finally:
            if not self._shutdown:
                interval = push_pull_scale(
                    self.config.push_pull_interval, len(self._nodes)
                )
                self._call_later(interval, self._push_pull_tick)

    def _log_push_pull_failure(self, failure: Failure, name: str) -> None:
        self.stats["push_pull.failed"] += 1
        self._log.debug(
            "push/pull with {peer} failed: {error}",
            peer=name,
            error=failure.getErrorMessage(),
        )

    # --- sending ---

    def _vsn(self) -> bytes:
        return self.config.vsn()

    def _local_meta(self) -> bytes:
        delegate = self.config.delegate
        if delegate is None:
            return b""
        meta = bytes(delegate.node_meta(META_MAX_SIZE))
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node meta is {len(meta)} bytes, over {META_MAX_SIZE}")
        return meta

    def _next_seq(self) -> int:
        self._seq_no = (self._seq_no + 1) & 0xFFFFFFFF
        return self._seq_no

    def _raw_send(self, address: Address, message: bytes, crc: bool) -> None:
        if self._shutdown:
            return
        try:
            packet = self._packets.seal(message, crc)
        except Exception:
            self._log.failure("could not seal a packet")
            self.stats["send.failed"] += 1
            return
        self.stats["packets.out"] += 1
        self.stats["bytes.out"] += len(packet)
        self.transport.send_packet(packet, address)

    def _get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        messages = self.broadcasts.get(overhead, limit)
        delegate = self.config.delegate
        if delegate is not None:
            used = sum(len(m) + overhead for m in messages)
            extra = delegate.get_broadcasts(
                overhead + USER_MESSAGE_OVERHEAD, limit - used
            )
            messages.extend(
                bytes([MessageType.USER]) + bytes(item) for item in extra if item
            )
        return messages

    def _send_message(self, address: Address, message: Message) -> None:
        """
        Send a protocol message with whatever broadcasts fit alongside it.
        """
        data = encode_message(message)
        available = (
            self.config.udp_buffer_size
            - len(data)
            - COMPOUND_HEADER_OVERHEAD
            - self._packets.overhead()
        )
        extra = self._get_broadcasts(COMPOUND_PART_OVERHEAD, available)
        # memberlist only adds a CRC when it finds the destination by IP
        # string, which in practice never happens for protocol messages.
        if not extra:
            self._raw_send(address, data, crc=False)
            return
        for packet in make_compounds([data, *extra]):
            self._raw_send(address, packet, crc=False)

    def _encode_broadcast(
        self,
        name: str,
        message: Message,
        on_finished: Callable[[], object] | None = None,
    ) -> None:
        self.broadcasts.queue(encode_message(message), name, on_finished)

    def _source_fields(self) -> dict[str, Any]:
        return {
            "source_addr": self._address_bytes,
            "source_port": self._port,
            "source_node": self.name,
        }

    # --- probing ---

    def _probe(self) -> None:
        checked = 0
        while True:
            if checked >= len(self._node_list):
                return
            if self._probe_index >= len(self._node_list):
                self._reset_nodes()
                self._probe_index = 0
                checked += 1
                continue
            node = self._node_list[self._probe_index]
            self._probe_index += 1
            if node.name == self.name or node.dead_or_left():
                checked += 1
                continue
            self._probe_node(node)
            return

    def _reset_nodes(self) -> None:
        """
        Forget members dead or left for longer than C{gossip_to_the_dead_time},
        and reshuffle the probe order.
        """
        now = self.reactor.seconds()
        keep = []
        for node in self._node_list:
            if (
                node.dead_or_left()
                and node.name != self.name
                and now - node.state_change > self.config.gossip_to_the_dead_time
            ):
                del self._nodes[node.name]
                self.stats["reaped"] += 1
            else:
                keep.append(node)
        self.rng.shuffle(keep)
        self._node_list = keep

    def _set_ack_handler(
        self,
        seq: int,
        on_ack: Callable[[bytes | None], object],
        on_nack: Callable[[], object] | None,
        timeout: float,
        on_timeout: Callable[[], object],
    ) -> None:
        def expired() -> None:
            if self._ack_handlers.get(seq) is handler:
                del self._ack_handlers[seq]
                on_timeout()

        timer = self._call_later(timeout, expired)
        handler = _AckHandler(on_ack, on_nack, timer)
        self._ack_handlers[seq] = handler

    def _probe_node(self, node: NodeState) -> None:
        seq = self._next_seq()
        probe = _Probe(node, node.incarnation)
        self._probing = probe
        deadline = self.awareness.scale(self.config.probe_interval)
        started = self.reactor.seconds()
        self._set_ack_handler(
            seq,
            lambda payload: self._probe_finished(probe, True),
            lambda: setattr(probe, "nacks", probe.nacks + 1),
            deadline,
            lambda: self._probe_finished(probe, probe.tcp_ok),
        )
        ping = Ping(seq, node.name, **self._source_fields())
        address = (node.address, node.port)
        if node.state == MemberState.ALIVE:
            self._send_message(address, ping)
        else:
            # Buddy system: tell a suspect it is suspected, so it can refute.
            suspect = Suspect(node.incarnation, node.name, self.name)
            self._raw_send(
                address,
                make_compound([encode_message(ping), encode_message(suspect)]),
                crc=node.protocol_max >= 5,
            )
        self.stats["probes"] += 1
        self._call_later(
            self.config.probe_timeout,
            self._probe_indirect,
            probe,
            seq,
            deadline - (self.reactor.seconds() - started),
        )

    def _probe_indirect(self, probe: _Probe, seq: int, remaining: float) -> None:
        if probe.done or self._shutdown:
            return
        node = probe.node
        helpers = self._random_nodes(
            self.config.indirect_checks,
            lambda n: (
                n.name not in (self.name, node.name) and n.state == MemberState.ALIVE
            ),
        )
        for helper in helpers:
            wants_nack = helper.protocol_max >= 4
            probe.expected_nacks += wants_nack
            request = IndirectPingReq(
                seq_no=seq,
                target=ip_to_bytes(node.address),
                port=node.port,
                node=node.name,
                nack=wants_nack,
                **self._source_fields(),
            )
            self._send_message((helper.address, helper.port), request)
        if not self.config.disable_tcp_pings and node.protocol_max >= 3:
            self._tcp_ping(probe, seq, remaining - self.config.probe_timeout)

    def _tcp_ping(self, probe: _Probe, seq: int, timeout: float) -> None:
        if timeout <= 0:
            return
        ping = Ping(seq, probe.node.name, **self._source_fields())
        d = self.transport.exchange(
            (probe.node.address, probe.node.port),
            self._streams.encode(ping, dialler=True),
            lambda buffer: self._streams.frame_length(buffer, accepted=False),
            timeout,
        )

        def got(reply: bytes | None) -> None:
            if reply is None:
                return
            message = self._streams.decode(reply, accepted=False)
            if isinstance(message, Ack) and message.seq_no == seq:
                probe.tcp_ok = True

        d.addCallback(got).addErrback(lambda f: self.stats.update(["tcp_ping.failed"]))

    def _probe_finished(self, probe: _Probe, ok: bool) -> None:
        if probe.done or self._shutdown:
            return
        probe.done = True
        if self._tick_waiting:
            self._tick_waiting = False
            self._call_later(0, self._probe_tick)
        if ok:
            self.awareness.apply_delta(-1)
            return
        self.stats["probes.failed"] += 1
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
        else:
            self.awareness.apply_delta(1)
        self._suspect_node(Suspect(probe.incarnation, probe.node.name, self.name))

    def _random_nodes(
        self, k: int, wanted: Callable[[NodeState], bool]
    ) -> list[NodeState]:
        candidates = [node for node in self._node_list if wanted(node)]
        if len(candidates) <= k:
            self.rng.shuffle(candidates)
            return candidates
        return self.rng.sample(candidates, k)

    # --- gossip ---

    def _gossip(self) -> None:
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

        budget = (
            self.config.udp_buffer_size
            - COMPOUND_HEADER_OVERHEAD
            - self._packets.overhead()
        )
        for node in self._random_nodes(self.config.gossip_nodes, wanted):
            messages = self._get_broadcasts(COMPOUND_PART_OVERHEAD, budget)
            if not messages:
                return
            packets = messages if len(messages) == 1 else make_compounds(messages)
            for packet in packets:
                self._raw_send(
                    (node.address, node.port), packet, crc=node.protocol_max >= 5
                )

    # --- push/pull ---

    def _local_state(self, join: bool) -> PushPull:
        nodes = tuple(
            PushNodeState(
                name=node.name,
                addr=ip_to_bytes(node.address),
                port=node.port,
                meta=node.meta,
                incarnation=node.incarnation,
                state=int(node.state),
                vsn=node.vsn,
            )
            for node in self._nodes.values()
        )
        user_state = b""
        if self.config.delegate is not None:
            user_state = bytes(self.config.delegate.local_state(join))
        return PushPull(join, nodes, user_state)

    def _push_pull(self, address: Address, join: bool) -> Deferred[None]:
        if self._shutdown:
            return fail(RuntimeError("memberlist is shut down"))
        request = self._streams.encode(self._local_state(join), dialler=True)
        d: Deferred[bytes | None] = self.transport.exchange(
            address,
            request,
            lambda buffer: self._streams.frame_length(buffer, accepted=False),
            self.config.tcp_timeout,
        )

        def got(reply: bytes | None) -> None:
            if reply is None:
                raise ConnectionError("peer closed the stream without a reply")
            try:
                message = self._streams.decode(reply, accepted=False)
            except FrameError as e:
                # A reply we cannot open (say, encrypted with a key we lack)
                # is dropped input like any other: count it, then fail.
                self._drop(e.reason, str(e), address)
                raise
            if isinstance(message, ErrResp):
                raise RemoteError(message.error)
            if not isinstance(message, PushPull):
                raise WireError(f"expected push/pull, got {type(message).__name__}")
            self.stats["push_pull.out"] += 1
            self._merge_remote_state(message)

        return d.addCallback(got)

    def _merge_remote_state(self, remote: PushPull) -> None:
        self._verify_protocol(remote.nodes)
        for entry in remote.nodes:
            if entry.state == MemberState.ALIVE:
                port = entry.port
                if port == 0 or self.config.protocol_version < 2:
                    # Protocol 1 sent no port: it is the bind port.
                    port = self.config.bind_port
                self._alive_node(
                    Alive(
                        entry.incarnation,
                        entry.name,
                        entry.addr,
                        port,
                        entry.meta,
                        entry.vsn,
                    )
                )
            elif entry.state == MemberState.LEFT:
                self._dead_node(Dead(entry.incarnation, entry.name, entry.name))
            elif entry.state in (MemberState.DEAD, MemberState.SUSPECT):
                # A remote "dead" is only a suspicion to us: we check ourselves.
                self._suspect_node(Suspect(entry.incarnation, entry.name, self.name))
            # A state we do not know (a newer peer's) is ignored, as in Go.
        if remote.user_state and self.config.delegate is not None:
            self.config.delegate.merge_remote_state(remote.user_state, remote.join)

    def _verify_protocol(self, remote: Iterable[PushNodeState]) -> None:
        """
        memberlist's C{verifyProtocol}: the version ranges of every alive
        member, remote (with a full version vector) and local, must admit
        the current versions of every member, remote and local, in any state.
        """
        remote = list(remote)
        versions = [
            entry.vsn
            for entry in remote
            if entry.state == MemberState.ALIVE and len(entry.vsn) >= 5
        ] + [
            node.vsn.ljust(6, b"\0")
            for node in self._nodes.values()
            if node.state == MemberState.ALIVE
        ]
        if not versions:
            return
        max_pmin = max(v[0] for v in versions)
        min_pmax = min(v[1] for v in versions)
        max_dmin = max(v[3] for v in versions)
        min_dmax = min(v[4] for v in versions)
        # A vector too short to hold the current versions reads as zeros.
        checked = [
            (entry.name, entry.vsn if len(entry.vsn) >= 6 else bytes(6))
            for entry in remote
        ] + [(node.name, node.vsn.ljust(6, b"\0")) for node in self._nodes.values()]
        for name, vsn in checked:
            if not max_pmin <= vsn[2] <= min_pmax:
                raise ProtocolMismatchError(
                    f"Node '{name}' protocol version ({vsn[2]}) is incompatible: "
                    f"[{max_pmin}, {min_pmax}]"
                )
            if not max_dmin <= vsn[5] <= min_dmax:
                raise ProtocolMismatchError(
                    f"Node '{name}' delegate protocol version ({vsn[5]}) is "
                    f"incompatible: [{max_dmin}, {min_dmax}]"
                )

    # --- receiving: IPacketHandler ---

    def packet_received(self, data: bytes, source: tuple[str, int]) -> None:
        """
        Handle one datagram: open it, then dispatch every message inside.
        """
        if self._shutdown:
            return
        self.stats["packets.in"] += 1
        self.stats["bytes.in"] += len(data)
        try:
            for part in self._packets.messages(self._packets.open(data)):
                self._handle_part(part, source)
        except FrameError as e:
            self._drop(e.reason, str(e), source)

    def _drop(self, reason: str, detail: str, source: object) -> None:
        self.stats[f"dropped.{reason}"] += 1
        self._log.debug(
            "dropped input from {source}: {detail}", source=source, detail=detail
        )

    def _handle_part(self, part: bytes, source: Address) -> None:
        try:
            message = decode_message(part)
        except WireError as e:
            self._drop("decode", str(e), source)
            return
        try:
            self._dispatch(message, source)
        except WireError as e:
            self._drop("decode", str(e), source)
        except Exception:
            self.stats["dropped.handler"] += 1
            self._log.failure("error handling {kind}", kind=type(message).__name__)

    def _dispatch(self, message: Message, source: Address) -> None:
        if isinstance(message, Ping):
            self._handle_ping(message, source)
        elif isinstance(message, IndirectPingReq):
            self._handle_indirect_ping(message, source)
        elif isinstance(message, Ack):
            handler = self._ack_handlers.pop(message.seq_no, None)
            if handler is not None:
                if handler.timer.active():
                    handler.timer.cancel()
                    self._timers.discard(handler.timer)
                handler.on_ack(message.payload)
        elif isinstance(message, Nack):
            handler = self._ack_handlers.get(message.seq_no)
            if handler is not None and handler.on_nack is not None:
                handler.on_nack()
        elif isinstance(message, Suspect):
            self._suspect_node(message)
        elif isinstance(message, Alive):
            if message.port == 0 or self.config.protocol_version < 2:
                message = attrs.evolve(message, port=self.config.bind_port)
            self._alive_node(message)
        elif isinstance(message, Dead):
            self._dead_node(message)
        elif isinstance(message, User):
            if self.config.delegate is not None and message.payload:
                self.config.delegate.notify_msg(message.payload)
        else:
            self._drop("type", f"unexpected {type(message).__name__}", source)

    def _handle_ping(self, ping: Ping, source: Address) -> None:
        if ping.node and ping.node != self.name:
            self._drop("wrong_node", f"ping for {ping.node!r}", source)
            return
        self._send_message(self._reply_address(ping, source), Ack(ping.seq_no))

    def _reply_address(
        self, message: Ping | IndirectPingReq, source: Address
    ) -> Address:
        if message.source_addr and message.source_port:
            return ip_from_bytes(message.source_addr), message.source_port
        return source

    def _handle_indirect_ping(self, request: IndirectPingReq, source: Address) -> None:
        reply_to = self._reply_address(request, source)
        target = (
            ip_from_bytes(request.target),
            request.port or self.config.bind_port or self.port,
        )
        seq = self._next_seq()

        def acked(payload: bytes | None) -> None:
            self._send_message(reply_to, Ack(request.seq_no))

        def timed_out() -> None:
            if request.nack:
                self._send_message(reply_to, Nack(request.seq_no))

        self._set_ack_handler(seq, acked, None, self.config.probe_timeout, timed_out)
        self._send_message(target, Ping(seq, request.node, **self._source_fields()))

    def stream_frame_length(self, data: bytes) -> int | None:
        """
        Measure one request on a stream we accepted.
        """
        return self._streams.frame_length(data, accepted=True)

    def stream_received(
        self, data: bytes, source: tuple[str, int]
    ) -> Deferred[bytes | None]:
        """
        Serve one request on a stream we accepted: ping, push/pull or user.
        """
        self.stats["streams.in"] += 1
        try:
            message = self._streams.decode(data, accepted=True)
        except FrameError as e:
            self._drop(e.reason, str(e), source)
            if e.reason == "decrypt":
                # memberlist answers unreadable encrypted streams with an error.
                return succeed(self._streams.encode(ErrResp(str(e)), dialler=False))
            return succeed(None)
        try:
            return succeed(self._serve_stream(message, source))
        except (WireError, ProtocolMismatchError) as e:
            self._drop("stream", str(e), source)
        except Exception:
            self.stats["dropped.handler"] += 1
            self._log.failure("error serving a stream from {source}", source=source)
        return succeed(None)

    def _serve_stream(self, message: Message, source: Address) -> bytes | None:
        if isinstance(message, Ping):
            if message.node and message.node != self.name:
                self._drop("wrong_node", f"stream ping for {message.node!r}", source)
                return None
            return self._streams.encode(Ack(message.seq_no), dialler=False)
        if isinstance(message, PushPull):
            self.stats["push_pull.in"] += 1
            # Reply with our state first, then merge, as memberlist does.
            reply = self._streams.encode(self._local_state(message.join), dialler=False)
            try:
                self._merge_remote_state(message)
            except ProtocolMismatchError as e:
                self._drop("protocol", str(e), source)
            return reply
        if isinstance(message, User):
            if self.config.delegate is not None and message.payload:
                self.config.delegate.notify_msg(message.payload)
            return None
        self._drop("type", f"unexpected {type(message).__name__} on a stream", source)
        return None

    # --- the member table (state.go) ---

    def _insert_node(self, node: NodeState) -> None:
        self._nodes[node.name] = node
        # A random position keeps probe order fair for newcomers.
        self._node_list.append(node)
        last = len(self._node_list) - 1
        offset = self.rng.randint(0, last)
        self._node_list[offset], self._node_list[last] = (
            self._node_list[last],
            self._node_list[offset],
        )

    def _cancel_suspicion(self, name: str) -> None:
        suspicion = self._suspicions.pop(name, None)
        if suspicion is not None:
            suspicion.cancel()

    def _events(self) -> Any:
        return self.config.events

    def _alive_node(
        self,
        alive: Alive,
        bootstrap: bool = False,
        on_finished: Callable[[], object] | None = None,
    ) -> None:
        if self._leaving and alive.node == self.name:
            return
        vsn = alive.vsn
        if len(vsn) >= 3 and (vsn[0] == 0 or vsn[1] == 0 or vsn[0] > vsn[1]):
            self.stats["dropped.version"] += 1
            return
        if not alive.node:
            self.stats["dropped.decode"] += 1
            return
        address = ip_from_bytes(alive.addr)
        now = self.reactor.seconds()
        state = self._nodes.get(alive.node)
        updates_address = False
        if state is None:
            state = NodeState(
                name=alive.node,
                address=address,
                port=alive.port,
                meta=alive.meta,
                incarnation=0,
                state=MemberState.DEAD,
                state_change=now,
                vsn=vsn,
            )
            self._insert_node(state)
        elif state.address != address or state.port != alive.port:
            reclaimable = (
                self.config.dead_node_reclaim_time > 0
                and now - state.state_change > self.config.dead_node_reclaim_time
            )
            if state.state == MemberState.LEFT or (
                state.state == MemberState.DEAD and reclaimable
            ):
                updates_address = True
            else:
                self.stats["conflicts"] += 1
                self._log.warn(
                    "conflicting address for {node}: {old} vs {new}",
                    node=alive.node,
                    old=f"{state.address}:{state.port}",
                    new=f"{address}:{alive.port}",
                )
                conflict = self.config.conflict
                if conflict is not None:
                    other = attrs.evolve(
                        state.to_member(),
                        address=address,
                        port=alive.port,
                        meta=alive.meta,
                    )
                    conflict.notify_conflict(state.to_member(), other)
                return
        is_local = alive.node == self.name
        if (
            alive.incarnation <= state.incarnation
            and not is_local
            and not updates_address
        ):
            return
        if alive.incarnation < state.incarnation and is_local:
            return
        self._cancel_suspicion(alive.node)
        old_state, old_meta = state.state, state.meta
        if not bootstrap and is_local:
            if (
                alive.incarnation == state.incarnation
                and alive.meta == state.meta
                and alive.vsn == self._vsn()
            ):
                return
            self._refute(state, alive.incarnation)
            return
        self._encode_broadcast(alive.node, alive, on_finished)
        if vsn:
            state.vsn = vsn
        state.incarnation = alive.incarnation
        state.meta = alive.meta
        state.address = address
        state.port = alive.port
        if state.state != MemberState.ALIVE:
            state.state = MemberState.ALIVE
            state.state_change = now
        events = self._events()
        if events is not None:
            if old_state in (MemberState.DEAD, MemberState.LEFT):
                events.notify_join(state.to_member())
            elif old_meta != state.meta:
                events.notify_update(state.to_member())

    def _suspect_node(self, suspect: Suspect) -> None:
        state = self._nodes.get(suspect.node)
        if state is None or suspect.incarnation < state.incarnation:
            return
        suspicion = self._suspicions.get(suspect.node)
        if suspicion is not None:
            if suspicion.confirm(suspect.from_):
                self._encode_broadcast(suspect.node, suspect)
            return
        if state.state != MemberState.ALIVE:
            return
        if state.name == self.name:
            self._refute(state, suspect.incarnation)
            self._log.warn(
                "refuting a suspect message from {accuser}", accuser=suspect.from_
            )
            return
        self._encode_broadcast(suspect.node, suspect)
        self.stats["suspected"] += 1
        state.incarnation = suspect.incarnation
        state.state = MemberState.SUSPECT
        changed_at = state.state_change = self.reactor.seconds()
        n = len(self._nodes)
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        minimum = suspicion_timeout(
            self.config.suspicion_mult, n, self.config.probe_interval
        )
        maximum = self.config.suspicion_max_timeout_mult * minimum

        def expired(confirmations: int) -> None:
            self._suspicions.pop(suspect.node, None)
            current = self._nodes.get(suspect.node)
            if (
                current is not None
                and current.state == MemberState.SUSPECT
                and current.state_change == changed_at
            ):
                self._log.info(
                    "marking {node} as failed, suspect timeout reached "
                    "({confirmations} peer confirmations)",
                    node=suspect.node,
                    confirmations=confirmations,
                )
                self._dead_node(Dead(current.incarnation, suspect.node, self.name))

        self._suspicions[suspect.node] = Suspicion(
            self.reactor, suspect.from_, k, minimum, maximum, self._guarded(expired)
        )

    def _dead_node(
        self, dead: Dead, on_finished: Callable[[], object] | None = None
    ) -> None:
        state = self._nodes.get(dead.node)
        if state is None or dead.incarnation < state.incarnation:
            return
        self._cancel_suspicion(dead.node)
        if state.dead_or_left():
            return
        if state.name == self.name:
            if not self._leaving:
                self._refute(state, dead.incarnation)
                self._log.warn(
                    "refuting a dead message from {accuser}", accuser=dead.from_
                )
                return
        self._encode_broadcast(dead.node, dead, on_finished)
        state.incarnation = dead.incarnation
        state.state = MemberState.LEFT if dead.node == dead.from_ else MemberState.DEAD
        state.state_change = self.reactor.seconds()
        if state.state == MemberState.DEAD:
            self.stats["declared_dead"] += 1
        events = self._events()
        if events is not None:
            events.notify_leave(state.to_member())

    def _refute(self, me: NodeState, accused_incarnation: int) -> None:
        incarnation = self._incarnation + 1
        if accused_incarnation >= incarnation:
            incarnation = accused_incarnation + 1
        self._incarnation = incarnation
        me.incarnation = incarnation
        self.awareness.apply_delta(1)
        self.stats["refuted"] += 1
        self._encode_broadcast(
            self.name,
            Alive(
                incarnation,
                self.name,
                self._address_bytes,
                self._port,
                me.meta,
                self._vsn(),
            ),
        )

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
        intent = serf_leave_intent(self.name)
        for node in self._nodes.values():
            if node.name != self.name and not node.dead_or_left():
                self._raw_send((node.address, node.port), intent, crc=False)
        self.broadcasts.queue(intent, "serf-leave-intent")

    def _leave_finished(self) -> None:
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
