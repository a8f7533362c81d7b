"""
L{Receiver}: what a member does with the traffic that reaches it
(memberlist's C{net.go} handlers): pings are answered, indirect pings
relayed, acks and nacks matched to the probes waiting for them, state
messages handed to the member table, user messages to the delegate, and
stream requests (ping, push/pull, user) served.

Nothing raises out of here: input that cannot be opened or decoded, or
that a handler chokes on, is dropped and counted in C{stats} under
C{dropped.<reason>}.  Each drop is logged at debug level; a warning sums
them up at most once every L{DROP_REPORT_INTERVAL} seconds, so that a
peer with the wrong cluster name or key shows in the log, and a flood of
garbage does not fill it.

What arrives is counted in C{stats} too, a Counter increment or two per
message (metrics read them when scraped, see L{cluster.ckit.metrics}):
C{packets.in} and C{bytes.in} per datagram, C{packets.in.failed} per
datagram with a part we dropped, C{messages.in.<type>} per message
decoded (L{RECEIVED_KEYS}), and for streams we accept C{streams.in},
C{streams.in.failed} (requests we could not read), C{stream_bytes.in},
and for our replies C{streams.replies.out}, C{stream_bytes.out} and
C{messages.out.<type>}.
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
from cluster.gossip.framing import FrameError, FrameMeasure, PacketCodec, StreamCodec
from cluster.gossip.interfaces import IPacketHandler
from cluster.gossip.messenger import RECEIVED_KEYS, SENT_KEYS, Messenger
from cluster.gossip.state import Changes, MemberTable, ProtocolMismatchError
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


@implementer(IPacketHandler)
@attrs.define(eq=False)
class Receiver:
    """
    The handler a member's transport delivers its traffic to.

    @ivar apply: carries out the member table's changes.
    @ivar ping: makes a ping with our source fields.
    @ivar local_state: our push/pull state, for a C{join} or not.
    @ivar merge: merges a peer's push/pull state (raising
        L{ProtocolMismatchError} when its versions do not fit).
    @ivar stopped: set once the member shut down: packets are ignored.
    @ivar clock: paces the drop warnings (none without it).
    @ivar witness: shown every user message's payload before the delegate
        (the Serf clock reads Serf's intents from them).
    """

    config: GossipConfig
    stats: Counter[str]
    packets: PacketCodec
    streams: StreamCodec
    table: MemberTable
    acks: AckTable
    messenger: Messenger
    apply: Callable[[Changes], object]
    ping: Callable[[int, str], Ping]
    local_state: Callable[[bool], PushPull]
    merge: Callable[[PushPull], object]
    stopped: bool = False
    clock: IReactorTime | None = attrs.field(default=None, kw_only=True)
    witness: Callable[[bytes], object] | None = attrs.field(default=None, kw_only=True)
    _unreported: Counter[str] = attrs.field(factory=Counter, init=False)
    _last_report: float | None = attrs.field(default=None, init=False)
    _log = Logger()

    def drop(self, reason: str, detail: str, source: object) -> None:
        """
        Count an input we drop, and say why at debug level.
        """
        self.stats[f"dropped.{reason}"] += 1
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
            reasons=", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
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
        if self.stopped:
            return
        self.stats["packets.in"] += 1
        self.stats["bytes.in"] += len(data)
        opened = self.packets.decode(data)
        for error in opened.errors:
            self.drop(error.reason, str(error), source)
        failed = bool(opened.errors)
        for message in opened.messages:
            self.stats[RECEIVED_KEYS[message.TYPE]] += 1
            try:
                handled = self._dispatch(message, source)
            except WireError as e:
                self.drop("decode", str(e), source)
                handled = False
            except Exception:
                self.stats["dropped.handler"] += 1
                self._log.failure("error handling {kind}", kind=type(message).__name__)
                handled = False
            failed = failed or not handled
        if failed:
            self.stats["packets.in.failed"] += 1

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
            self.apply(self.table.suspect(message))
        elif isinstance(message, Alive):
            if message.port == 0 or self.config.protocol_version < 2:
                message = attrs.evolve(message, port=self.config.bind_port)
            self.apply(self.table.alive(message))
        elif isinstance(message, Dead):
            self.apply(self.table.dead(message))
        elif isinstance(message, User):
            self.deliver(message)
        else:
            self.drop("type", f"unexpected {type(message).__name__}", source)
            return False
        return True

    def _handle_ping(self, ping: Ping, source: Address) -> bool:
        if ping.node and ping.node != self.config.name:
            self.drop("wrong_node", f"ping for {ping.node!r}", source)
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
        self.messenger.send(target, self.ping(seq, request.node))

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
        self.stats["streams.in"] += 1
        self.stats["stream_bytes.in"] += len(data)
        try:
            message = self.streams.decode(data, accepted=True)
        except FrameError as e:
            self.stats["streams.in.failed"] += 1
            self.drop(e.reason, str(e), source)
            if e.reason == "decrypt":
                # memberlist answers unreadable encrypted streams with an error.
                return succeed(self._reply(ErrResp(str(e))))
            return succeed(None)
        self.stats[RECEIVED_KEYS[message.TYPE]] += 1
        try:
            return succeed(self._serve(message, source))
        except WireError as e:
            self.stats["streams.in.failed"] += 1
            self.drop("stream", str(e), source)
        except Exception:
            self.stats["dropped.handler"] += 1
            self._log.failure("error serving a stream from {source}", source=source)
        return succeed(None)

    def _reply(self, message: Message) -> bytes:
        """
        Encode a reply on a stream we accepted, counting it.
        """
        data = self.streams.encode(message, dialler=False)
        self.stats["streams.replies.out"] += 1
        self.stats[SENT_KEYS[message.TYPE]] += 1
        self.stats["stream_bytes.out"] += len(data)
        return data

    def _serve(self, message: Message, source: Address) -> bytes | None:
        if isinstance(message, Ping):
            if message.node and message.node != self.config.name:
                self.drop("wrong_node", f"stream ping for {message.node!r}", source)
                return None
            return self._reply(Ack(message.seq_no))
        if isinstance(message, PushPull):
            self.stats["push_pull.in"] += 1
            # Reply with our state first, then merge, as memberlist does.
            reply = self._reply(self.local_state(message.join))
            try:
                self.merge(message)
            except ProtocolMismatchError as e:
                self.drop("protocol", str(e), source)
            return reply
        if isinstance(message, User):
            self.deliver(message)
            return None
        self.drop("type", f"unexpected {type(message).__name__} on a stream", source)
        return None
