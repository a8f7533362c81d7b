"""
The sending side of a member (memberlist's C{sendMsg}, C{rawSendMsgPacket}
and the stream dialling in C{net.go}): protocol messages go out with as
many pending broadcasts piggybacked as fit the UDP budget, gossip packs
broadcasts alone, and request/reply exchanges run over streams.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from cluster.gossip.address import Address
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.config import GossipConfig
from cluster.gossip.framing import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_PART_OVERHEAD,
    USER_MESSAGE_OVERHEAD,
    FrameError,
    PacketCodec,
    StreamCodec,
)
from cluster.gossip.interfaces import IDelegate, ITransport
from cluster.gossip.wire import Message, User, encode_message

__all__ = ["Messenger"]


@attrs.define(eq=False)
class Messenger:
    """
    Everything one member sends.

    @ivar stats: the member's counters (C{packets.out}, C{bytes.out},
        C{send.failed}, and C{dropped.<reason>} for replies we cannot open).
    """

    config: GossipConfig
    transport: ITransport
    packets: PacketCodec
    streams: StreamCodec
    broadcasts: BroadcastQueue
    stats: Counter[str]
    delegate: IDelegate | None = None
    stopped: bool = False
    _log = Logger()

    def raw(self, address: Address, *parts: bytes, crc: bool = False) -> None:
        """
        Send encoded messages in as few datagrams as they need (compounds,
        then label, CRC, compression and encryption).  Never raises: a
        failure is logged and counted.
        """
        if self.stopped:
            return
        try:
            packets = self.packets.encode(parts, crc)
        except Exception:
            self._log.failure("could not seal a packet")
            self.stats["send.failed"] += 1
            return
        for packet in packets:
            self.stats["packets.out"] += 1
            self.stats["bytes.out"] += len(packet)
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
            used = sum(len(m) + overhead for m in messages)
            extra = self.delegate.get_broadcasts(
                overhead + USER_MESSAGE_OVERHEAD, limit - used
            )
            messages.extend(encode_message(User(bytes(item))) for item in extra if item)
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
        d = self.transport.exchange(
            address,
            self.streams.encode(message, dialler=True),
            lambda buffer: self.streams.frame_length(buffer, accepted=False),
            self.config.tcp_timeout if timeout is None else timeout,
        )

        def opened(reply: bytes | None) -> Message | None:
            if reply is None:
                return None
            try:
                return self.streams.decode(reply, accepted=False)
            except FrameError as e:
                self.stats[f"dropped.{e.reason}"] += 1
                self._log.debug(
                    "dropped a reply from {source}: {detail}",
                    source=address,
                    detail=str(e),
                )
                raise

        return d.addCallback(opened)
