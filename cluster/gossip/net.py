"""
L{Receiver}: what a member does with the traffic that reaches it
(memberlist's C{net.go} handlers): pings are answered, indirect pings
relayed, acks and nacks matched to the probes waiting for them, state
messages handed to the member table, user messages to the delegate, and
stream requests (ping, push/pull, user) served.

Nothing raises out of here: input that cannot be opened or decoded, or
that a handler chokes on, is dropped and counted by its L{DropReason}.
Each drop is logged at debug level; a warning sums them up at most once
every L{DROP_REPORT_INTERVAL} seconds, so that a peer with the wrong
cluster name or key shows in the log, and a flood of garbage does not
fill it.  A stream refused for its cluster name (label) or gossip key, a
node of another cluster trying to join, is said in words at once, naming
the dialler's IP address (at most once per address and cause every
L{DROP_REPORT_INTERVAL} seconds).

What arrives is counted in the member's L{GossipCounters} too: datagrams
and their bytes (and those with a part we dropped), every message decoded
by its type, the requests on streams we accept (and those we could not
read), our replies, and the push/pulls we serve.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from cluster.gossip.acks import AckTable
from cluster.gossip.address import Address
from cluster.gossip.config import GossipConfig
from cluster.gossip.counters import DropReason, GossipCounters
from cluster.gossip.effects import Effects
from cluster.gossip.framing import (
    FrameError,
    FrameMeasure,
    PacketCodec,
    StreamCodec,
    gossip_key_words,
    strip_label,
)
from cluster.gossip.interfaces import IPacketHandler
from cluster.gossip.loops import StateSync
from cluster.gossip.messenger import Messenger
from cluster.gossip.nodelog import node_logger
from cluster.gossip.origin import Origin
from cluster.gossip.state import MemberTable, ProtocolMismatchError
from cluster.gossip.timers import Lifecycle
from cluster.gossip.wire import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPingReq,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    User,
    WireError,
    ip_from_bytes,
)

__all__ = ["DROP_REPORT_INTERVAL", "Receiver"]

DROP_REPORT_INTERVAL = 60.0
# Dialler addresses remembered as told about; more are forgotten at once.
_REFUSALS_REMEMBERED = 1024


@implementer(IPacketHandler)
@attrs.define(eq=False)
class Receiver:
    """
    The handler a member's transport delivers its traffic to.

    @ivar effects: carries out the member table's changes.
    @ivar origin: stamps our source fields on the pings we relay.
    @ivar sync: answers and merges the push/pulls we serve.
    @ivar lifecycle: once the member stopped, packets are ignored.
    @ivar clock: paces the drop warnings (none without it).
    @ivar witness: shown every user message's payload before the delegate
        (the Serf clock reads Serf's intents from them).
    """

    config: GossipConfig
    counters: GossipCounters
    packets: PacketCodec
    streams: StreamCodec
    table: MemberTable
    acks: AckTable
    messenger: Messenger
    effects: Effects
    origin: Origin
    sync: StateSync
    lifecycle: Lifecycle
    clock: IReactorTime | None = attrs.field(default=None, kw_only=True)
    witness: Callable[[bytes], object] | None = attrs.field(default=None, kw_only=True)
    _unreported: Counter[DropReason] = attrs.field(factory=Counter, init=False)
    _last_report: float | None = attrs.field(default=None, init=False)
    # When each (dialler address, reason) of a refused stream was logged.
    _refusals_told: dict[tuple[str, DropReason], float] = attrs.field(
        factory=dict, init=False
    )
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda receiver: node_logger(receiver, receiver.table.name),
            takes_self=True,
        ),
    )

    def drop(self, reason: DropReason, detail: str, source: object) -> None:
        """
        Count an input we drop, and say why at debug level.
        """
        self.counters.dropped[reason] += 1
        self._log.debug(
            "dropped input from {source}: {detail}", source=source, detail=detail
        )
        if self.clock is None:
            return
        self._unreported[reason] += 1
        now = self.clock.seconds()
        last = self._last_report
        if last is not None and now - last < DROP_REPORT_INTERVAL:
            return
        self._last_report = now
        counts, self._unreported = self._unreported, Counter()
        self._log.warn(
            "dropped {count} input(s) since the last report ({reasons}); the "
            "latest from {source}: {detail}",
            count=sum(counts.values()),
            reasons=", ".join(
                f"{reason}={count}"
                for reason, count in sorted((k.value, v) for k, v in counts.items())
            ),
            source=source,
            detail=detail,
        )

    def deliver(self, message: User) -> None:
        """
        Hand a user message to the witness, then to the delegate.
        """
        if self.witness is not None:
            self.witness(message.payload)
        if self.config.delegate is not None and message.payload:
            self.config.delegate.notify_msg(message.payload)

    # --- packets ---

    def packet_received(self, data: bytes, source: tuple[str, int]) -> None:
        """
        Handle one datagram: open it, then dispatch every message inside.
        """
        if self.lifecycle.stopped:
            return
        traffic = self.counters.traffic
        traffic.packets_in += 1
        traffic.bytes_in += len(data)
        opened = self.packets.decode(data)
        for error in opened.errors:
            self.drop(DropReason(error.reason), str(error), source)
        failed = bool(opened.errors)
        for message in opened.messages:
            self.counters.messages.received[message.TYPE] += 1
            try:
                handled = self._dispatch(message, source)
            except WireError as e:
                self.drop(DropReason.DECODE, str(e), source)
                handled = False
            except Exception:
                self.counters.dropped[DropReason.HANDLER] += 1
                self._log.failure("error handling {kind}", kind=type(message).__name__)
                handled = False
            failed = failed or not handled
        if failed:
            traffic.packets_in_failed += 1

    def _dispatch(self, message: Message, source: Address) -> bool:
        """
        Act on one message of a datagram.

        @return: C{False} when we dropped it.
        """
        if isinstance(message, Ping):
            return self._handle_ping(message, source)
        if isinstance(message, IndirectPingReq):
            self._handle_indirect_ping(message, source)
        elif isinstance(message, Ack):
            self.acks.ack(message.seq_no, message.payload)
        elif isinstance(message, Nack):
            self.acks.nack(message.seq_no)
        elif isinstance(message, Suspect):
            self.effects.apply(self.table.suspect(message))
        elif isinstance(message, Alive):
            if message.port == 0 or self.config.protocol_version < 2:
                message = attrs.evolve(message, port=self.config.bind_port)
            self.effects.apply(self.table.alive(message))
        elif isinstance(message, Dead):
            self.effects.apply(self.table.dead(message))
        elif isinstance(message, User):
            self.deliver(message)
        else:
            self.drop(DropReason.TYPE, f"unexpected {type(message).__name__}", source)
            return False
        return True

    def _handle_ping(self, ping: Ping, source: Address) -> bool:
        if ping.node and ping.node != self.config.name:
            self.drop(DropReason.WRONG_NODE, f"ping for {ping.node!r}", source)
            return False
        self.messenger.send(self._reply_address(ping, source), Ack(ping.seq_no))
        return True

    def _reply_address(
        self, message: Ping | IndirectPingReq, source: Address
    ) -> Address:
        if message.source_addr and message.source_port:
            return ip_from_bytes(message.source_addr), message.source_port
        return source

    def _handle_indirect_ping(self, request: IndirectPingReq, source: Address) -> None:
        reply_to = self._reply_address(request, source)
        port = request.port or self.config.bind_port or self.messenger.transport.port
        target = (ip_from_bytes(request.target), port)
        seq = self.acks.next_seq()

        def acked(payload: bytes | None) -> None:
            self.messenger.send(reply_to, Ack(request.seq_no))

        def timed_out() -> None:
            if request.nack:
                self.messenger.send(reply_to, Nack(request.seq_no))

        self.acks.expect(seq, acked, None, self.config.probe_timeout, timed_out)
        self.messenger.send(target, self.origin.ping(seq, request.node))

    # --- streams ---

    def stream_measure(self) -> FrameMeasure:
        """
        Measure the request on a stream we accepted.
        """
        return self.streams.measure(accepted=True)

    def stream_received(
        self, data: bytes, source: tuple[str, int]
    ) -> Deferred[bytes | None]:
        """
        Serve one request on a stream we accepted: ping, push/pull or user.
        """
        traffic = self.counters.traffic
        traffic.streams_in += 1
        try:
            message = self.messenger.open_stream(data, accepted=True)
        except FrameError as e:
            traffic.streams_in_failed += 1
            reason = DropReason(e.reason)
            if reason in (DropReason.LABEL, DropReason.DECRYPT):
                self._refuse_stream(reason, data, str(e), source)
            else:
                self.drop(reason, str(e), source)
            if reason is DropReason.DECRYPT:
                # memberlist answers unreadable encrypted streams with an error.
                return succeed(self._reply(ErrResp(str(e))))
            return succeed(None)
        try:
            return succeed(self._serve(message, source))
        except WireError as e:
            traffic.streams_in_failed += 1
            self.drop(DropReason.STREAM, str(e), source)
        except Exception:
            self.counters.dropped[DropReason.HANDLER] += 1
            self._log.failure("error serving a stream from {source}", source=source)
        return succeed(None)

    def _refuse_stream(
        self, reason: DropReason, data: bytes, detail: str, source: Address
    ) -> None:
        """
        Count a stream of another cluster (its C{reason} is its label or
        its encryption) and say so in words, naming the dialler by its IP
        address (its port is ephemeral).
        """
        self.counters.dropped[reason] += 1
        self._log.debug(
            "dropped input from {source}: {detail}", source=source, detail=detail
        )
        host = source[0]
        now = self.clock.seconds() if self.clock is not None else None
        told = self._refusals_told.get((host, reason))
        if now is not None and told is not None and now - told < DROP_REPORT_INTERVAL:
            return
        if len(self._refusals_told) >= _REFUSALS_REMEMBERED:
            self._refusals_told.clear()
        if now is not None:
            self._refusals_told[host, reason] = now
        if reason is DropReason.LABEL:
            words = self._label_words(data)
        else:
            words = gossip_key_words(detail, "the stream", we_read=True)
        self._log.warn(
            "refused a stream from {host}: {words}",
            host=host,
            words=words,
            reason=reason.value,
        )

    def _label_words(self, data: bytes) -> str:
        """
        How the cluster name (label) of the stream C{data} differs from
        ours, in words.
        """
        ours = self.config.label
        try:
            label = strip_label(data)[0].decode("utf-8", "replace")
        except FrameError:
            return "cluster name mismatch: its label header is malformed"
        theirs = f'it is "{label}"' if label else "it has none"
        mine = f'ours is "{ours}"' if ours else "we have none"
        return f"cluster name mismatch: {theirs}, {mine}"

    def _reply(self, message: Message) -> bytes:
        """
        Encode a reply on a stream we accepted, counting it.
        """
        self.counters.traffic.stream_replies_out += 1
        return self.messenger.seal_stream(message, dialler=False)

    def _serve(self, message: Message, source: Address) -> bytes | None:
        if isinstance(message, Ping):
            if message.node and message.node != self.config.name:
                self.drop(
                    DropReason.WRONG_NODE, f"stream ping for {message.node!r}", source
                )
                return None
            return self._reply(Ack(message.seq_no))
        if isinstance(message, PushPull):
            self.counters.push_pulls.served += 1
            # Reply with our state first, then merge, as memberlist does.
            reply = self._reply(self.sync.local_state(message.join))
            try:
                self.sync.merge(message)
            except ProtocolMismatchError as e:
                self.drop(DropReason.PROTOCOL, str(e), source)
            return reply
        if isinstance(message, User):
            self.deliver(message)
            return None
        self.drop(
            DropReason.TYPE, f"unexpected {type(message).__name__} on a stream", source
        )
        return None
