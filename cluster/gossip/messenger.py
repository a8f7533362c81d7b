"""
The sending side of a member (memberlist's C{sendMsg}, C{rawSendMsgPacket}
and the stream dialling in C{net.go}): protocol messages go out with as
many pending broadcasts piggybacked as fit the UDP budget, gossip packs
broadcasts alone, and request/reply exchanges run over streams.

Everything sent is counted in the member's L{GossipCounters} as it goes:
datagrams and their bytes, every message by its type (its first byte, so
piggybacked broadcasts count too), gossip sends, and the exchanges on
streams we dial.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluster.gossip.address import Address
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.config import GossipConfig
from cluster.gossip.counters import DropReason, GossipCounters
from cluster.gossip.framing import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_PART_OVERHEAD,
    USER_MESSAGE_OVERHEAD,
    FrameError,
    PacketCodec,
    StreamCodec,
)
from cluster.gossip.interfaces import IDelegate, ITransport
from cluster.gossip.nodelog import node_logger
from cluster.gossip.timers import Lifecycle
from cluster.gossip.wire import Message, MessageType, User, encode_message

__all__ = ["Messenger"]

# Message types by their byte, built once: the hot path only looks one up.
_TYPES = {int(kind): kind for kind in MessageType}


@attrs.define(eq=False)
class Messenger:
    """
    Everything one member sends.

    @ivar counters: the member's counters (those in the module docstring,
        datagrams we could not seal, and replies we cannot open as dropped).
    @ivar lifecycle: once the member stopped, nothing is sent.
    """

    config: GossipConfig
    transport: ITransport
    packets: PacketCodec
    streams: StreamCodec
    broadcasts: BroadcastQueue
    counters: GossipCounters
    delegate: IDelegate | None = None
    lifecycle: Lifecycle = attrs.field(factory=Lifecycle)
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda messenger: node_logger(messenger, messenger.config.name),
            takes_self=True,
        ),
    )

    def raw(self, address: Address, *parts: bytes, crc: bool = False) -> None:
        """
        Send encoded messages in as few datagrams as they need (compounds,
        then label, CRC, compression and encryption).  Never raises: a
        failure is logged and counted.
        """
        if self.lifecycle.stopped:
            return
        messages, traffic = self.counters.messages, self.counters.traffic
        for part in parts:
            kind = _TYPES.get(part[0]) if part else None
            if kind is None:
                messages.sent_unknown += 1
            else:
                messages.sent[kind] += 1
        try:
            packets = self.packets.encode(parts, crc)
        except Exception:
            self._log.failure("could not seal a packet")
            traffic.send_failed += 1
            return
        for packet in packets:
            traffic.packets_out += 1
            traffic.bytes_out += len(packet)
            self.transport.send_packet(packet, address)

    def send(self, address: Address, message: Message) -> None:
        """
        Send a protocol message with whatever broadcasts fit beside it (in
        several compounds if more than 255 do).
        """
        data = encode_message(message)
        available = (
            self.config.udp_buffer_size
            - len(data)
            - COMPOUND_HEADER_OVERHEAD
            - self.packets.overhead()
        )
        extra = self.pending(COMPOUND_PART_OVERHEAD, available)
        # memberlist only adds a CRC when it finds the destination by IP
        # string, which in practice never happens for protocol messages.
        self.raw(address, data, *extra)

    def send_together(
        self, address: Address, messages: Sequence[Message], crc: bool
    ) -> None:
        """
        Send C{messages} in one compound and nothing else (the buddy
        system's ping with its suspicion).
        """
        self.raw(address, *[encode_message(m) for m in messages], crc=crc)

    def pending(self, overhead: int, limit: int) -> list[bytes]:
        """
        Broadcasts that fit C{limit} bytes at C{overhead} each: ours first,
        then the delegate's user broadcasts.
        """
        messages = self.broadcasts.get(overhead, limit)
        if self.delegate is not None:
            room = limit - sum(len(m) + overhead for m in messages)
            # memberlist asks the delegate only when more than the framing
            # of one user message is left.
            if room > overhead + USER_MESSAGE_OVERHEAD:
                extra = self.delegate.get_broadcasts(
                    overhead + USER_MESSAGE_OVERHEAD, room
                )
                messages.extend(
                    encode_message(User(bytes(item))) for item in extra if item
                )
        return messages

    def gossip(self, address: Address, crc: bool) -> bool:
        """
        Send pending broadcasts to C{address} (memberlist's C{gossip} for
        one target).

        @return: whether there was anything to send.
        """
        budget = (
            self.config.udp_buffer_size
            - COMPOUND_HEADER_OVERHEAD
            - self.packets.overhead()
        )
        messages = self.pending(COMPOUND_PART_OVERHEAD, budget)
        if not messages:
            return False
        self.counters.messages.gossip_sends += 1
        self.raw(address, *messages, crc=crc)
        return True

    def exchange(
        self, address: Address, message: Message, timeout: float | None = None
    ) -> Deferred[Message | None]:
        """
        Dial C{address}, send C{message} and read one reply.

        @return: a Deferred firing with the reply, or C{None} when the peer
            closed the stream without one; it fails on connection errors,
            on timeout (C{tcp_timeout} by default), or with L{FrameError}
            for a reply we cannot open (counted as dropped).
        """
        request = self.seal_stream(message, dialler=True)
        traffic = self.counters.traffic
        traffic.streams_out += 1
        traffic.streams_open += 1
        d = self.transport.exchange(
            address,
            request,
            self.streams.measure(accepted=False),
            self.config.tcp_timeout if timeout is None else timeout,
        )

        def lost(failure: Failure) -> Failure:
            traffic.streams_open -= 1
            traffic.streams_out_failed += 1
            return failure

        def opened(reply: bytes | None) -> Message | None:
            traffic.streams_open -= 1
            if reply is None:
                return None
            traffic.stream_replies_in += 1
            try:
                return self.open_stream(reply, accepted=False)
            except FrameError as e:
                traffic.streams_out_failed += 1
                self.counters.dropped[DropReason(e.reason)] += 1
                self._log.debug(
                    "dropped a reply from {source}: {detail}",
                    source=address,
                    detail=str(e),
                )
                raise

        return d.addCallbacks(opened, lost)

    def seal_stream(self, message: Message, *, dialler: bool) -> bytes:
        """
        Encode C{message} for a stream, as the C{dialler} or the side that
        accepted it, counting its type and bytes (the caller counts the
        request or reply).
        """
        data = self.streams.encode(message, dialler=dialler)
        self.counters.messages.sent[message.TYPE] += 1
        self.counters.traffic.stream_bytes_out += len(data)
        return data

    def open_stream(self, data: bytes, *, accepted: bool) -> Message:
        """
        Decode what was read on a stream we C{accepted} or dialled, counting
        its bytes and, once decoded, its type (the caller counts the request
        or reply, and the failure).

        @raise FrameError: when it cannot be opened.
        """
        self.counters.traffic.stream_bytes_in += len(data)
        message = self.streams.decode(data, accepted=accepted)
        self.counters.messages.received[message.TYPE] += 1
        return message
