"""
The wrappers around memberlist messages: compound, CRC, label, LZW
compression and AES-GCM encryption, in the order memberlist applies them
(C{shared/WIRE.md} section 4.5).

L{PacketCodec} seals and opens UDP packets; L{StreamCodec} frames, seals and
opens the one-message-each-way TCP exchanges.  Both raise L{FrameError}
(a L{WireError}) whose C{reason} names the counter a dropped input goes to.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence

import attrs
import msgpack
from zope.interface import implementer

from cluster.gossip import lzw
from cluster.gossip.codec import DecodeError, pack, stream_unpacker, unpack
from cluster.gossip.config import GossipConfig
from cluster.gossip.interfaces import IFrameMeasure
from cluster.gossip.keyring import (
    DecryptError,
    Keyring,
    encryption_overhead,
    encryption_version,
)
from cluster.gossip.wire import (
    MAX_USER_BYTES,
    LimitError,
    Message,
    MessageType,
    StreamMeasure,
    WireError,
    decode_message,
    decode_stream_message,
    encode_stream_message,
)

__all__ = [
    "MAX_PACKET_DECOMPRESSED",
    "MAX_STREAM_BYTES",
    "FrameError",
    "FrameMeasure",
    "Opened",
    "PacketCodec",
    "StreamCodec",
    "add_crc",
    "add_label",
    "codecs_for",
    "compress_message",
    "decompress_message",
    "gossip_key_words",
    "make_compound",
    "make_compounds",
    "split_compound",
    "strip_crc",
    "strip_label",
]

COMPOUND_HEADER_OVERHEAD = 2
COMPOUND_PART_OVERHEAD = 2
USER_MESSAGE_OVERHEAD = 1
MAX_COMPOUND_PARTS = 255
MAX_ENCRYPTED_STREAM = 20 * 1024 * 1024
MAX_DECOMPRESSED = 40 * 1024 * 1024
# What all the compressed messages of one datagram may expand to together.
# A sender compresses what would otherwise fit a datagram (64 KiB at most);
# without a budget of its own, one 31 KB datagram could expand to the
# stream limit and hold the reactor for a tenth of a second.
MAX_PACKET_DECOMPRESSED = 16 * 64 * 1024
# The longest stream frame we buffer: user state (at most MAX_USER_BYTES)
# plus an equal budget for the node states, memberlist's own bound on
# what it decompresses.
MAX_STREAM_BYTES = 2 * MAX_USER_BYTES
# Compound and compress may nest; senders never do, so a shallow limit is
# plenty and stops a crafted packet from recursing without end.
MAX_NESTING = 4


class FrameError(WireError):
    """
    A packet or stream that cannot be unwrapped.  C{reason} is a short
    word (C{"label"}, C{"decrypt"}, C{"crc"}, C{"compound"}, C{"compress"},
    C{"decode"}, C{"size"}) used to count drops.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# memberlist's texts for a stream it cannot decrypt (it answers it with an
# error reply holding the text), and what each means in words, as read by
# us and as read by the peer; "{sent}" names the stream.
_UNREADABLE = {
    "No installed keys could decrypt the message": (
        "{sent} is encrypted with a gossip key we do not have",
        "{sent} is encrypted with a gossip key it does not have",
    ),
    "Remote state is encrypted and encryption is not configured": (
        "{sent} is encrypted and we have no gossip key",
        "{sent} is encrypted and it has no gossip key",
    ),
    "Encryption is configured but remote state is not encrypted": (
        "{sent} is not encrypted and we require a gossip key",
        "{sent} is not encrypted and it requires a gossip key",
    ),
}


def gossip_key_words(message: str, sent: str, we_read: bool) -> str:
    """
    A stream that could not be decrypted, in words: C{message} is the
    text of a C{decrypt} L{FrameError} (or of the error reply a peer
    answered it with), C{sent} what the stream was (C{"its reply"}), and
    C{we_read} whether we tried to read it (else the peer did).
    """
    for text, (ours, theirs) in _UNREADABLE.items():
        if text in message:
            words = ours if we_read else theirs
            return "gossip key mismatch: " + words.format(sent=sent)
    return f"gossip key mismatch: {message}"


# --- compound (type 7) ---


def make_compound(parts: list[bytes]) -> bytes:
    """
    Pack several messages into one compound message.

    Empty parts are refused: a memberlist 0.2 peer indexes the first byte
    of each part without checking and crashes on them.
    """
    if not 0 < len(parts) <= MAX_COMPOUND_PARTS:
        raise ValueError(f"a compound holds 1..255 parts, not {len(parts)}")
    if not all(parts):
        raise ValueError("a compound part must not be empty")
    header = struct.pack(
        f">BB{len(parts)}H", MessageType.COMPOUND, len(parts), *map(len, parts)
    )
    return header + b"".join(parts)


def make_compounds(parts: list[bytes]) -> list[bytes]:
    """
    Pack any number of messages into as few compounds as the 255-part
    limit allows (memberlist's C{makeCompoundMessages}).
    """
    return [
        make_compound(parts[start : start + MAX_COMPOUND_PARTS])
        for start in range(0, len(parts), MAX_COMPOUND_PARTS)
    ]


def split_compound(body: bytes) -> tuple[list[bytes], int]:
    """
    Split the body of a compound (the bytes after the type byte).

    @return: the complete parts, and how many parts were truncated.
    @raise FrameError: when even the length table is incomplete.
    """
    if not body:
        raise FrameError("compound", "compound missing part count")
    count = body[0]
    table_end = 1 + 2 * count
    if len(body) < table_end:
        raise FrameError("compound", "compound length table truncated")
    lengths = struct.unpack_from(f">{count}H", body, 1)
    parts: list[bytes] = []
    offset = table_end
    for index, length in enumerate(lengths):
        if offset + length > len(body):
            return parts, count - index
        parts.append(body[offset : offset + length])
        offset += length
    return parts, 0


# --- CRC (type 12) ---


def add_crc(message: bytes) -> bytes:
    """
    Prefix C{message} with a CRC-32/IEEE header.
    """
    if not message:
        raise ValueError("refusing a CRC header over an empty message")
    return struct.pack(">BI", MessageType.HAS_CRC, zlib.crc32(message)) + message


def strip_crc(packet: bytes) -> bytes:
    """
    Check and remove a CRC header if the packet has one.
    """
    if len(packet) >= 5 and packet[0] == MessageType.HAS_CRC:
        (expected,) = struct.unpack_from(">I", packet, 1)
        rest = packet[5:]
        if zlib.crc32(rest) != expected:
            raise FrameError("crc", "CRC mismatch")
        return rest
    return packet


# --- label (type 244) ---


def add_label(label: bytes, data: bytes) -> bytes:
    """
    Prefix C{data} with a label header; no label means no header.
    """
    if not label:
        return data
    return bytes([MessageType.HAS_LABEL, len(label)]) + label + data


def strip_label(data: bytes) -> tuple[bytes, bytes]:
    """
    Split a label header off C{data}, if present.

    @return: C{(label, rest)}, with an empty label when there is no header.
    """
    if not data or data[0] != MessageType.HAS_LABEL:
        return b"", data
    if len(data) < 2 or data[1] == 0:
        raise FrameError("label", "label header with no length")
    end = 2 + data[1]
    if len(data) < end:
        raise FrameError("label", "label header truncated")
    return data[2:end], data[end:]


# --- compression (type 9) ---


def compress_message(message: bytes) -> bytes:
    """
    Wrap C{message} as a compress message: C{09 {Algo: 0, Buf: lzw}}.
    """
    if not message:
        raise ValueError("refusing to compress an empty message")
    # Keys in sorted order, as Go writes the compress struct.
    body = pack({"Algo": 0, "Buf": lzw.compress(message)})
    return bytes([MessageType.COMPRESS]) + body


def _decompress_object(body: object, limit: int) -> bytes:
    if not isinstance(body, dict):
        raise FrameError("compress", "compress body must be a map")
    algo = body.get(b"Algo", 0)
    if algo != 0:
        raise FrameError("compress", "Cannot decompress unknown algorithm")
    buf = body.get(b"Buf")
    if not isinstance(buf, bytes):
        raise FrameError("compress", "compress buffer missing")
    try:
        result = lzw.decompress(buf, limit)
    except lzw.LZWError as e:
        raise FrameError("compress", f"bad LZW data: {e}") from None
    if not result:
        raise FrameError("compress", "compressed message is empty")
    return result


def decompress_message(body: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """
    Undo L{compress_message}, given the bytes after the type byte.

    @param limit: the most bytes it may expand to.
    """
    try:
        value = unpack(body)
    except DecodeError as e:
        raise FrameError("compress", f"bad compress body: {e}") from None
    return _decompress_object(value, limit)


# --- packets ---


@attrs.define
class Opened:
    """
    What a received packet held: its messages, and why any part of it was
    dropped.
    """

    messages: list[Message] = attrs.field(factory=list)
    errors: list[FrameError] = attrs.field(factory=list)


@attrs.define(eq=False)
class _Wrapping:
    """
    How one node wraps what it sends, and what it accepts.

    @ivar label: our cluster label; input with another (or none) is dropped.
    @ivar keyring: keys for AES-GCM, or C{None} for a plaintext cluster.
    @ivar verify_incoming: refuse plaintext when we have a keyring (off only
        while a cluster is switching encryption on).
    @ivar verify_outgoing: encrypt what we send when we have a keyring.
    @ivar compression: LZW-compress what we send when it gets smaller.
    @ivar encryption_version: 1, or 0 when our own protocol version is 1.
    """

    label: bytes = b""
    keyring: Keyring | None = None
    verify_incoming: bool = True
    verify_outgoing: bool = True
    compression: bool = True
    encryption_version: int = 1


@attrs.define(eq=False)
class PacketCodec(_Wrapping):
    """
    Seal and open UDP packets for one node.
    """

    def overhead(self) -> int:
        """
        Bytes our wrapping adds that piggybacking must leave room for.
        """
        extra = 2 + len(self.label) if self.label else 0
        if self.keyring is not None and self.verify_outgoing:
            extra += encryption_overhead(self.encryption_version)
        return extra

    def seal(self, message: bytes, crc: bool) -> bytes:
        """
        Wrap one message (or compound) for C{sendto}.
        """
        if self.compression:
            compressed = compress_message(message)
            if len(compressed) < len(message):
                message = compressed
        if crc:
            message = add_crc(message)
        if self.keyring is not None and self.verify_outgoing:
            message = self.keyring.encrypt(
                message, aad=self.label, version=self.encryption_version
            )
        return add_label(self.label, message)

    def open(self, packet: bytes) -> bytes:
        """
        Check the label, decrypt and check the CRC of a received packet.

        @return: the message inside, which may be a compound or compressed.
        """
        label, packet = strip_label(packet)
        if label != self.label:
            raise FrameError("label", f"unacceptable label {label!r}")
        if self.keyring is not None:
            try:
                packet = self.keyring.decrypt(packet, aad=self.label)
            except DecryptError as e:
                if self.verify_incoming:
                    raise FrameError("decrypt", f"decrypt packet failed: {e}") from None
        return strip_crc(packet)

    def decode(self, packet: bytes) -> Opened:
        """
        Open a received packet and decode every message inside it.

        Each part stands alone, as in memberlist: a part that is not a
        valid message is reported in C{errors} and the others still come
        out, as do the complete parts before a truncation.
        """
        opened = Opened()
        try:
            for part in self.messages(self.open(packet)):
                try:
                    opened.messages.append(decode_message(part))
                except WireError as e:
                    opened.errors.append(FrameError("decode", str(e)))
        except FrameError as e:
            opened.errors.append(e)
        return opened

    def encode(self, parts: Sequence[bytes], crc: bool) -> list[bytes]:
        """
        Seal encoded messages for sending: one alone as it is, several in
        as few compounds as the 255-part limit allows.
        """
        if len(parts) == 1:
            return [self.seal(parts[0], crc)]
        return [self.seal(compound, crc) for compound in make_compounds(list(parts))]

    def messages(self, message: bytes) -> Iterator[bytes]:
        """
        Yield every leaf message inside C{message}, recursing through
        compounds and compression.  Truncated compound parts are skipped;
        earlier parts still come out.  All the compressed parts together
        may expand to L{MAX_PACKET_DECOMPRESSED} bytes.
        """
        return self._leaves(message, 0, [MAX_PACKET_DECOMPRESSED])

    def _leaves(self, message: bytes, depth: int, budget: list[int]) -> Iterator[bytes]:
        if not message:
            raise FrameError("decode", "missing message type byte")
        if depth > MAX_NESTING:
            raise FrameError("decode", "messages nested too deeply")
        kind = message[0]
        if kind == MessageType.COMPOUND:
            parts, truncated = split_compound(message[1:])
            for part in parts:
                yield from self._leaves(part, depth + 1, budget)
            if truncated:
                raise FrameError("compound", f"{truncated} compound parts truncated")
        elif kind == MessageType.COMPRESS:
            inner = decompress_message(message[1:], budget[0])
            budget[0] -= len(inner)
            yield from self._leaves(inner, depth + 1, budget)
        else:
            yield message


def codecs_for(config: GossipConfig) -> tuple[PacketCodec, StreamCodec]:
    """
    The packet and stream codecs of a node configured by C{config}.
    """
    wrapping = _Wrapping(
        label=config.label.encode("utf-8"),
        keyring=config.keyring,
        verify_incoming=config.gossip_verify_incoming,
        verify_outgoing=config.gossip_verify_outgoing,
        compression=config.enable_compression,
        encryption_version=encryption_version(config.protocol_version),
    )
    settings = attrs.asdict(wrapping, recurse=False)
    return PacketCodec(**settings), StreamCodec(**settings)


# --- streams ---


@implementer(IFrameMeasure)
@attrs.define(eq=False)
class FrameMeasure:
    """
    Find where the one frame of a stream ends, as its bytes arrive, in
    time linear in them (each chunk is looked at once).

    The first few bytes say how: a label header to skip (on the accepting
    side), then an encrypted frame's own length, or a compressed frame's
    msgpack body, or a plain message measured by L{StreamMeasure}.  A frame
    may be at most L{MAX_STREAM_BYTES} long (L{MAX_ENCRYPTED_STREAM}
    encrypted); a longer one is refused as soon as its header or its
    bytes say so, before it is buffered.
    """

    accepted: bool
    _head: bytes = attrs.field(default=b"", init=False)
    _offset: int | None = attrs.field(default=None, init=False)
    _inner: StreamMeasure | None = attrs.field(default=None, init=False)
    _compressed: msgpack.Unpacker | None = attrs.field(default=None, init=False)
    _received: int = attrs.field(default=0, init=False)
    _length: int | None = attrs.field(default=None, init=False)

    def feed(self, data: bytes) -> int | None:
        """
        Take the next bytes of the stream.

        @return: the frame's length once all of it has arrived, else
            C{None}.
        @raise FrameError: when the bytes cannot be a valid frame, or make
            one over the size limit.
        """
        self._received += len(data)
        if self._length is None:
            self._length = self._measure(data)
            if self._length is None and self._received > MAX_STREAM_BYTES:
                raise FrameError("size", "stream message too large")
            if self._length is not None and self._length > MAX_STREAM_BYTES:
                raise FrameError("size", f"stream message of {self._length} bytes")
        if self._length is not None and self._received >= self._length:
            return self._length
        return None

    def _measure(self, data: bytes) -> int | None:
        if self._offset is None:
            # Collect the label header and the first message bytes (a few
            # hundred at most) until they say what kind of frame this is.
            self._head += data
            data = self._start()
            if self._offset is None:
                return None
        if self._inner is not None:
            try:
                self._inner.feed(data)
            except LimitError as e:
                raise FrameError("size", str(e)) from None
            except WireError as e:
                raise FrameError("decode", str(e)) from None
            length = self._inner.length
            return None if length is None else self._offset + length
        if self._compressed is not None:
            self._compressed.feed(data)
            try:
                self._compressed.skip()
            except msgpack.OutOfData:
                return None
            except Exception as e:
                raise FrameError("compress", f"bad compress body: {e}") from None
            return self._offset + 1 + int(self._compressed.tell())
        return self._length

    def _start(self) -> bytes:
        """
        Read the frame's kind from L{_head} if enough of it is there.

        @return: the bytes after the ones this consumed, for the measure
            of the frame's kind.
        """
        head = self._head
        offset = 0
        if self.accepted and head and head[0] == MessageType.HAS_LABEL:
            if len(head) < 2:
                return b""
            offset = 2 + head[1]
        if len(head) <= offset:
            return b""
        kind = head[offset]
        if kind == MessageType.ENCRYPT:
            if len(head) < offset + 5:
                return b""
            (length,) = struct.unpack_from(">I", head, offset + 1)
            if length > MAX_ENCRYPTED_STREAM:
                raise FrameError("size", f"encrypted stream of {length} bytes")
            self._length = offset + 5 + length
            self._offset, self._head = offset, b""
            return b""
        self._offset, self._head = offset, b""
        if kind == MessageType.COMPRESS:
            self._compressed = stream_unpacker()
            return head[offset + 1 :]
        self._inner = StreamMeasure()
        return head[offset:]


@attrs.define(eq=False)
class StreamCodec(_Wrapping):
    """
    Frame, seal and open the messages of a TCP exchange.

    The dialling side writes our label header first; the accepting side
    expects it and answers without one.  Encrypted frames authenticate the
    5 header bytes plus the label.
    """

    def encode(self, message: Message, dialler: bool) -> bytes:
        """
        Encode C{message} as the complete bytes one side writes.
        """
        data = encode_stream_message(message)
        if self.compression:
            data = compress_message(data)
        if self.keyring is not None and self.verify_outgoing:
            length = len(data) + encryption_overhead(self.encryption_version)
            if self.encryption_version == 0:
                # PKCS7 pads to the next multiple of 16, always adding 1..16.
                length = encryption_overhead(1) + (len(data) // 16 + 1) * 16
            header = struct.pack(">BI", MessageType.ENCRYPT, length)
            sealed = self.keyring.encrypt(
                data, aad=header + self.label, version=self.encryption_version
            )
            data = header + sealed
        if dialler:
            data = add_label(self.label, data)
        return data

    def measure(self, accepted: bool) -> FrameMeasure:
        """
        A fresh L{FrameMeasure} for the frame one stream carries.

        @param accepted: C{True} on the accepting side, where a label
            header comes first.
        """
        return FrameMeasure(accepted)

    def frame_length(self, data: bytes, accepted: bool) -> int | None:
        """
        How many bytes of C{data} make one complete frame, or C{None} while
        more are needed (L{measure} over bytes that are all there).

        @raise FrameError: when the bytes cannot be a valid frame.
        """
        return self.measure(accepted).feed(data)

    def decode(self, frame: bytes, accepted: bool) -> Message:
        """
        Open one complete frame (as measured by L{frame_length}).
        """
        if accepted:
            label, frame = strip_label(frame)
            if label != self.label:
                raise FrameError("label", f"unacceptable label {label!r}")
        if not frame:
            raise FrameError("decode", "empty stream")
        if frame[0] == MessageType.ENCRYPT:
            if self.keyring is None:
                raise FrameError(
                    "decrypt",
                    "Remote state is encrypted and encryption is not configured",
                )
            try:
                frame = self.keyring.decrypt(frame[5:], aad=frame[:5] + self.label)
            except DecryptError:
                raise FrameError(
                    "decrypt", "No installed keys could decrypt the message"
                ) from None
        elif self.keyring is not None and self.verify_incoming:
            raise FrameError(
                "decrypt", "Encryption is configured but remote state is not encrypted"
            )
        if frame and frame[0] == MessageType.COMPRESS:
            frame = decompress_message(frame[1:])
        try:
            return decode_stream_message(frame)
        except FrameError:
            raise
        except WireError as e:
            raise FrameError("decode", str(e)) from None
