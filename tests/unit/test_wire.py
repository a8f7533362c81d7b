"""
Tests for L{cluster.gossip.wire} and L{cluster.gossip.framing}: message
bodies and wrappers, byte for byte against memberlist (vectors from
C{shared/WIRE.md} section 9, captured from a real serf agent).
"""

from __future__ import annotations

import enum
import ipaddress
import zlib
from collections.abc import Sequence

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from cluster.gossip import wire
from cluster.gossip.address import ip_text
from cluster.gossip.codec import (
    DecodeError,
    Kind,
    UnknownValueError,
    decode,
    encode,
    go,
    pack,
    to_map,
    unpack,
)
from cluster.gossip.framing import (
    FrameError,
    PacketCodec,
    StreamCodec,
    add_crc,
    add_label,
    compress_message,
    decompress_message,
    make_compound,
    split_compound,
    strip_crc,
    strip_label,
)
from cluster.gossip.keyring import Keyring
from cluster.gossip.serf import (
    MAX_LTIME,
    SERF_JOIN,
    SerfClock,
    serf_leave_intent,
)
from tests.helpers import serf_state

LOCALHOST = bytes([127, 0, 0, 1])
VSN = bytes([1, 5, 2, 2, 5, 5])


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


_MAPPED = bytes(10) + b"\xff\xff"


class VectorTests(SynchronousTestCase):
    """
    Our encoder produces the exact bytes memberlist put on the wire.
    """

    def test_ping(self) -> None:
        expected = unhex(
            "00 85 a4 4e6f6465 a5 67616d6d61 a5 5365714e6f 02"
            " aa 536f7572636541646472 a4 7f000001"
            " aa 536f757263654e6f6465 a5 616c706861"
            " aa 536f75726365506f7274 cd 6d2a"
        )
        ping = wire.Ping(
            2, "gamma", source_addr=LOCALHOST, source_port=27946, source_node="alpha"
        )
        self.assertEqual(wire.encode_message(ping), expected)
        self.assertEqual(len(expected), 67)
        self.assertEqual(wire.decode_message(expected), ping)

    def test_ping_omits_empty_source_fields(self) -> None:
        self.assertEqual(
            wire.encode_message(wire.Ping(2, "gamma")),
            unhex("00 82 a4 4e6f6465 a5 67616d6d61 a5 5365714e6f 02"),
        )

    def test_suspect_with_crc(self) -> None:
        expected = unhex(
            "0c 6cc5effe 03 83 a4 46726f6d a5 616c706861"
            " ab 496e6361726e6174696f6e 01 a4 4e6f6465 a5 67616d6d61"
        )
        suspect = wire.Suspect(1, "gamma", "alpha")
        self.assertEqual(add_crc(wire.encode_message(suspect)), expected)
        self.assertEqual(wire.decode_message(strip_crc(expected)), suspect)

    def test_nack(self) -> None:
        self.assertEqual(
            wire.encode_message(wire.Nack(8)), unhex("0b 81 a5 5365714e6f 08")
        )

    def test_ack_nil_payload(self) -> None:
        self.assertEqual(
            wire.encode_message(wire.Ack(8)),
            unhex("02 82 a7 5061796c6f6164 c0 a5 5365714e6f 08"),
        )

    def test_push_pull_join(self) -> None:
        expected = unhex(
            "06 83 a4 4a6f696e c3 a5 4e6f646573 01 ac 5573657253746174654c656e 00"
            " 87 a4 41646472 a4 7f000001 ab 496e6361726e6174696f6e 01"
            " a4 4d657461 a0 a4 4e616d65 a3 707931 a4 506f7274 cd 6d2d"
            " a5 5374617465 00 a3 56736e a6 010502020505"
        )
        message = wire.PushPull(
            join=True,
            nodes=(wire.PushNodeState("py1", LOCALHOST, 27949, b"", 1, 0, VSN),),
        )
        self.assertEqual(wire.encode_stream_message(message), expected)
        self.assertEqual(len(expected), 94)
        self.assertEqual(wire.decode_stream_message(expected), message)
        self.assertEqual(wire.stream_message_length(expected + b"junk"), 94)
        self.assertIsNone(wire.stream_message_length(expected[:-1]))

    def test_alive_key_order(self) -> None:
        encoded = wire.encode_message(wire.Alive(1, "a", LOCALHOST, 7946, b"", VSN))
        # Addr, Incarnation, Meta, Node, Port, Vsn: sorted Go field names.
        order = [
            encoded.find(key)
            for key in (b"Addr", b"Incarn", b"Meta", b"Node", b"Port", b"Vsn")
        ]
        self.assertEqual(order, sorted(order))
        self.assertEqual(encoded[:2], b"\x04\x86")

    def test_raw_strings_use_str16_not_str8(self) -> None:
        meta = b"m" * 98
        encoded = wire.encode_message(wire.Alive(1, "a", LOCALHOST, 7946, meta, VSN))
        self.assertIn(b"\xda\x00\x62" + meta, encoded)
        self.assertNotIn(b"\xd9", encoded)

    def test_compress_body_key_order(self) -> None:
        compressed = compress_message(b"\x02" + b"x" * 50)
        self.assertEqual(compressed[:12], unhex("09 82 a4 416c676f 00 a3 427566"))
        self.assertEqual(decompress_message(compressed[1:]), b"\x02" + b"x" * 50)

    def test_serf_encrypted_nack(self) -> None:
        keyring = Keyring.from_base64("AQIDBAUGBwgJCgsMDQ4PEA==")
        packet = unhex(
            "01 3eb8ca52505b07c22fa21736 379536c9ceb7b5b005"
            " c0760b83733d2536a08118fdd33590d6"
        )
        codec = PacketCodec(keyring=keyring)
        self.assertEqual(wire.decode_message(codec.open(packet)), wire.Nack(8))


MESSAGES: list[wire.Message] = [
    wire.Ping(1, "n"),
    wire.Ping(
        0xFFFFFFFF, "ü", source_addr=LOCALHOST, source_port=65535, source_node="src"
    ),
    wire.IndirectPingReq(
        5,
        LOCALHOST,
        7946,
        "target",
        True,
        source_addr=LOCALHOST,
        source_port=1,
        source_node="me",
    ),
    wire.IndirectPingReq(5, bytes(16), 0, "target", False),
    wire.Ack(3),
    wire.Ack(3, b"payload"),
    wire.Nack(9),
    wire.ErrResp("boom"),
    wire.Suspect(4, "x", "y"),
    wire.Alive(7, "x", LOCALHOST, 1234, b"\xff\x80", VSN),
    wire.Dead(2, "x", "x"),
    wire.User(b"\x00hello"),
]


class RoundTripTests(SynchronousTestCase):
    def test_every_packet_message(self) -> None:
        for message in MESSAGES:
            self.assertEqual(wire.decode_message(wire.encode_message(message)), message)

    def test_every_stream_message(self) -> None:
        stream_messages: list[wire.Message] = [
            wire.Ping(1, "n"),
            wire.Ack(2),
            wire.ErrResp("no"),
            wire.User(b"abc"),
            wire.PushPull(False, (), b"state"),
            wire.PushPull(
                True,
                tuple(
                    wire.PushNodeState(f"n{i}", LOCALHOST, i, b"m", i, i % 4, VSN)
                    for i in range(40)
                ),
                b"\x02user",
            ),
        ]
        for message in stream_messages:
            data = wire.encode_stream_message(message)
            self.assertEqual(wire.stream_message_length(data), len(data))
            self.assertEqual(wire.decode_stream_message(data), message)

    def test_push_pull_refused_on_packets(self) -> None:
        self.assertRaises(ValueError, wire.encode_message, wire.PushPull(False, ()))

    def test_ip_addresses(self) -> None:
        self.assertEqual(wire.ip_from_bytes(wire.ip_to_bytes("10.1.2.3")), "10.1.2.3")
        self.assertEqual(wire.ip_from_bytes(wire.ip_to_bytes("::1")), "::1")
        mapped = bytes(10) + b"\xff\xff" + LOCALHOST
        self.assertEqual(wire.ip_from_bytes(mapped), "127.0.0.1")
        # Only the mapped form is dotted, as Go's net.IP.String() prints it.
        self.assertEqual(wire.ip_from_bytes(bytes(12) + LOCALHOST), "::7f00:1")
        self.assertRaises(wire.WireError, wire.ip_from_bytes, b"\x01\x02")
        self.assertRaises(wire.WireError, wire.ip_to_bytes, "not-an-ip")

    @given(
        st.one_of(
            st.binary(min_size=4, max_size=4),
            st.binary(min_size=16, max_size=16),
            st.binary(min_size=4, max_size=4).map(lambda v4: _MAPPED + v4),
        )
    )
    def test_ip_fast_path_matches_ipaddress(self, raw: bytes) -> None:
        """
        The inet_ntop fast paths print what Go's C{net.IP.String()} does,
        as the ipaddress-based reference.
        """
        self.assertEqual(wire.ip_from_bytes(raw), ip_text(ipaddress.ip_address(raw)))

    def test_go_accepts_int_array_for_bytes(self) -> None:
        import msgpack

        body = msgpack.packb(
            {
                "Addr": [127, 0, 0, 1],
                "Incarnation": 1,
                "Node": "a",
                "Port": 1,
                "Vsn": list(VSN),
            },
            use_bin_type=True,
        )
        alive = wire.decode_message(b"\x04" + body)
        assert isinstance(alive, wire.Alive)
        self.assertEqual(alive.addr, LOCALHOST)
        self.assertEqual(alive.vsn, VSN)
        self.assertEqual(alive.meta, b"")


class Colour(enum.IntEnum):
    RED = 0
    BLUE = 1


@attrs.frozen
class Paint:
    """
    A struct of our own, to exercise what no memberlist struct has.
    """

    colour: Colour = attrs.field(metadata=go("Colour", Kind.UINT64, enum=Colour))
    coats: int = attrs.field(metadata=go("Coats", Kind.UINT16))
    layers: Sequence[object] = attrs.field(
        default=(), metadata=go("Layers", Kind.ARRAY)
    )
    note: str = "not on the wire"


def decoded(struct: attrs.AttrsInstance) -> object:
    """
    C{struct} encoded, then decoded back as C{decode} sees it.
    """
    return unpack(encode(struct))


# Every msgpack struct: the packet messages (a user message is raw bytes),
# plus an empty ack payload and a push/pull node entry.
STRUCTS: list[attrs.AttrsInstance] = [
    *(m for m in MESSAGES if not isinstance(m, wire.User)),
    wire.Ack(3, b""),
    wire.PushNodeState("py1", LOCALHOST, 27949, b"", 1, 3, VSN),
]


class CodecTests(SynchronousTestCase):
    """
    L{cluster.gossip.codec}: one declaration per struct, read as Go reads.
    """

    def test_every_struct_round_trips(self) -> None:
        for struct in STRUCTS:
            self.assertEqual(decode(type(struct), decoded(struct)), struct)

    @settings(max_examples=200)
    @given(
        st.builds(
            wire.Alive,
            st.integers(0, 0xFFFFFFFF),
            st.text(),
            st.binary(max_size=16),
            st.integers(0, 0xFFFF),
            st.binary(max_size=600),
            st.binary(max_size=6),
        )
        | st.builds(
            wire.Ping,
            st.integers(0, 0xFFFFFFFF),
            st.text(),
            # An empty SourceAddr is omitted, so it comes back as nil.
            source_addr=st.none() | st.binary(min_size=1, max_size=16),
            source_port=st.integers(0, 0xFFFF),
            source_node=st.text(),
        )
    )
    def test_round_trip_property(self, message: wire.Alive | wire.Ping) -> None:
        self.assertEqual(wire.decode_message(wire.encode_message(message)), message)

    def test_keys_are_sorted_go_names(self) -> None:
        fields = to_map(wire.PushNodeState("a", LOCALHOST, 1, b"", 1, 0, VSN))
        self.assertEqual(
            list(fields),
            ["Addr", "Incarnation", "Meta", "Name", "Port", "State", "Vsn"],
        )

    def test_missing_or_nil_is_the_zero_value(self) -> None:
        self.assertEqual(decode(wire.Alive, {}), wire.Alive(0, "", b"", 0, b"", b""))
        self.assertEqual(
            wire.decode_message(b"\x04\x80"), wire.Alive(0, "", b"", 0, b"", b"")
        )
        nil = {b"SeqNo": None, b"Node": None, b"SourceAddr": None}
        self.assertEqual(decode(wire.Ping, nil), wire.Ping(0, ""))
        # A nil []byte stays nil where it is re-sent as nil.
        self.assertIsNone(decode(wire.Ack, {b"SeqNo": 1}).payload)
        self.assertEqual(decode(wire.Ack, {b"Payload": b""}).payload, b"")
        self.assertEqual(decode(Paint, {}), Paint(Colour.RED, 0))

    def test_unknown_keys_are_ignored(self) -> None:
        body = {b"SeqNo": 1, b"seqno": 2, b"Extra": b"x", 7: 8}
        self.assertEqual(decode(wire.Nack, body), wire.Nack(1))

    def test_wrong_type_names_the_go_field(self) -> None:
        cases: list[tuple[type[attrs.AttrsInstance], bytes, object]] = [
            (wire.Ping, b"SeqNo", b"1"),
            (wire.Ping, b"SeqNo", True),
            (wire.Ping, b"Node", 5),
            (wire.Ping, b"SourceAddr", "not bytes"),
            (wire.Alive, b"Vsn", [1, 256]),
            (wire.IndirectPingReq, b"Nack", 1),
            (wire.Alive, b"Node", b"\xff\xfe"),  # not UTF-8
            (Paint, b"Layers", b"not a list"),
        ]
        for cls, key, value in cases:
            error = self.assertRaises(DecodeError, decode, cls, {key: value})
            self.assertIn(key.decode(), str(error))
        error = self.assertRaises(
            wire.WireError, wire.decode_message, b"\x00\x81\xa5SeqNo\xa1x"
        )
        self.assertIn("SeqNo", str(error))
        self.assertRaises(DecodeError, decode, wire.Nack, [1])

    def test_integers_are_range_checked(self) -> None:
        self.assertEqual(decode(wire.Alive, {b"Port": 0xFFFF}).port, 0xFFFF)
        self.assertEqual(
            decode(wire.Nack, {b"SeqNo": 0xFFFFFFFF}), wire.Nack(0xFFFFFFFF)
        )
        for cls, key, value in [
            (wire.Alive, b"Port", 0x10000),
            (wire.Nack, b"SeqNo", 1 << 32),
            (wire.Nack, b"SeqNo", -1),
            (wire.PushNodeState, b"State", 256),
            (Paint, b"Colour", 1 << 64),
        ]:
            error = self.assertRaises(DecodeError, decode, cls, {key: value})
            self.assertIn("out of range", str(error))
        self.assertEqual(decode(Paint, {b"Colour": 1}).colour, Colour.BLUE)

    def test_omitempty(self) -> None:
        self.assertEqual(
            set(
                to_map(
                    wire.Ping(1, "n", source_addr=b"", source_port=0, source_node="")
                )
            ),
            {"Node", "SeqNo"},
        )
        self.assertEqual(
            set(to_map(wire.IndirectPingReq(1, b"", 0, "", False))),
            {"Nack", "Node", "Port", "SeqNo", "Target"},
        )
        self.assertEqual(
            set(
                to_map(
                    wire.Ping(
                        1, "n", source_addr=LOCALHOST, source_port=0, source_node="me"
                    )
                )
            ),
            {"Node", "SeqNo", "SourceAddr", "SourceNode"},
        )

    def test_enum_and_array(self) -> None:
        paint = Paint(Colour.BLUE, 2, (wire.Nack(1), b"raw"), note="local")
        self.assertEqual(
            to_map(paint),
            {"Coats": 2, "Colour": 1, "Layers": [{"SeqNo": 1}, b"raw"]},
        )
        # Slice items come back undecoded, for the owner to decode.
        self.assertEqual(
            decode(Paint, decoded(paint)),
            Paint(Colour.BLUE, 2, ({b"SeqNo": 1}, b"raw")),
        )

    def test_unknown_enum_value_only_in_a_valid_struct(self) -> None:
        self.assertRaises(UnknownValueError, decode, Paint, {b"Colour": 7})
        error = self.assertRaises(
            DecodeError, decode, Paint, {b"Colour": 7, b"Coats": b"x"}
        )
        self.assertNotIsInstance(error, UnknownValueError)

    def test_declarations_are_checked(self) -> None:
        self.assertRaises(ValueError, go, "Nodes", Kind.INT)
        self.assertRaises(ValueError, go, "Node", Kind.STR, maximum=5)
        self.assertRaises(ValueError, go, "Node", Kind.BYTES, enum=Colour)


class BadInputTests(SynchronousTestCase):
    def test_errors(self) -> None:
        for data in [
            b"",
            b"\x00",
            b"\x00\x91\x01",  # array instead of map
            b"\x00\x81\xa5SeqNo\xa1x",  # string where an int belongs
            b"\x00\x81\xa5SeqNo\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # > uint32
            b"\x04\x81\xa4Node\xc4\x02\xff\xfe",  # bin, not UTF-8
            b"\x06\x80",  # push/pull on a packet
            b"\x3f\x80",  # unknown type
        ]:
            self.assertRaises(wire.WireError, wire.decode_message, data)


class FramingTests(SynchronousTestCase):
    def test_compound(self) -> None:
        parts = [
            wire.encode_message(wire.Ping(1, "a")),
            wire.encode_message(wire.Nack(2)),
        ]
        compound = make_compound(parts)
        self.assertEqual(
            compound[:6], bytes([7, 2, 0, len(parts[0]), 0, len(parts[1])])
        )
        self.assertEqual(split_compound(compound[1:]), (parts, 0))

    def test_compound_truncated(self) -> None:
        parts = [b"\x0babc", b"\x0bdef", b"\x0bghi"]
        compound = make_compound(parts)
        self.assertEqual(split_compound(compound[1:-2]), (parts[:2], 1))
        self.assertRaises(FrameError, split_compound, b"\x03\x00")
        self.assertRaises(FrameError, split_compound, b"")

    def test_never_empty_parts(self) -> None:
        # Empty parts, bare CRC headers and empty compressed bodies crash
        # memberlist 0.2 peers: our encoders refuse to make them.
        self.assertRaises(ValueError, make_compound, [b"\x0b", b""])
        self.assertRaises(ValueError, make_compound, [])
        self.assertRaises(ValueError, make_compound, [b"\x0b"] * 256)
        self.assertRaises(ValueError, add_crc, b"")
        self.assertRaises(ValueError, compress_message, b"")

    def test_crc(self) -> None:
        message = wire.encode_message(wire.Nack(1))
        packet = add_crc(message)
        self.assertEqual(int.from_bytes(packet[1:5], "big"), zlib.crc32(message))
        self.assertEqual(strip_crc(packet), message)
        corrupt = packet[:-1] + bytes([packet[-1] ^ 1])
        error = self.assertRaises(FrameError, strip_crc, corrupt)
        self.assertEqual(error.reason, "crc")
        self.assertEqual(strip_crc(message), message)

    def test_label(self) -> None:
        self.assertEqual(add_label(b"lbl", b"\x00x"), unhex("f4 03 6c626c 00") + b"x")
        self.assertEqual(add_label(b"", b"\x00x"), b"\x00x")
        self.assertEqual(strip_label(unhex("f4 03 6c626c 00")), (b"lbl", b"\x00"))
        self.assertRaises(FrameError, strip_label, b"\xf4\x00")
        self.assertRaises(FrameError, strip_label, b"\xf4\x05ab")

    def test_packet_codec_round_trip(self) -> None:
        keyring = Keyring([bytes(range(16))])
        message = make_compound(
            [wire.encode_message(wire.Ping(1, "a"))]
            + [wire.encode_message(wire.Suspect(1, "node" * 20, "x"))] * 5
        )
        for codec in [
            PacketCodec(),
            PacketCodec(label=b"prod"),
            PacketCodec(keyring=keyring),
            PacketCodec(keyring=keyring, label=b"prod", encryption_version=0),
            PacketCodec(compression=False),
        ]:
            for crc in (False, True):
                sealed = codec.seal(message, crc)
                inner = codec.open(sealed)
                leaves = list(codec.messages(inner))
                self.assertEqual(len(leaves), 6)
                self.assertEqual(wire.decode_message(leaves[0]), wire.Ping(1, "a"))

    def test_packet_compressed_only_when_smaller(self) -> None:
        codec = PacketCodec()
        small = wire.encode_message(wire.Nack(1))
        self.assertEqual(codec.seal(small, crc=False), small)
        big = make_compound(
            [wire.encode_message(wire.Suspect(1, "node" * 20, "x"))] * 5
        )
        self.assertEqual(codec.seal(big, crc=False)[0], 9)

    def test_label_mismatch_dropped(self) -> None:
        sealed = PacketCodec(label=b"a").seal(
            wire.encode_message(wire.Nack(1)), crc=False
        )
        for codec in (PacketCodec(label=b"b"), PacketCodec()):
            error = self.assertRaises(FrameError, codec.open, sealed)
            self.assertEqual(error.reason, "label")
        unlabelled = PacketCodec().seal(wire.encode_message(wire.Nack(1)), crc=False)
        self.assertRaises(FrameError, PacketCodec(label=b"a").open, unlabelled)

    def test_wrong_key_dropped_unless_not_verifying(self) -> None:
        sealed = PacketCodec(keyring=Keyring([b"k" * 16])).seal(
            b"\x0b\x81\xa5SeqNo\x01", crc=False
        )
        error = self.assertRaises(
            FrameError, PacketCodec(keyring=Keyring([b"j" * 16])).open, sealed
        )
        self.assertEqual(error.reason, "decrypt")
        plain = PacketCodec().seal(wire.encode_message(wire.Nack(1)), crc=False)
        strict = PacketCodec(keyring=Keyring([b"j" * 16]))
        error = self.assertRaises(FrameError, strict.open, plain)
        self.assertEqual(error.reason, "decrypt")
        lenient = PacketCodec(keyring=Keyring([b"j" * 16]), verify_incoming=False)
        self.assertEqual(wire.decode_message(lenient.open(plain)), wire.Nack(1))

    def test_nesting_limit(self) -> None:
        message = wire.encode_message(wire.Nack(1))
        for _ in range(10):
            message = make_compound([message])
        self.assertRaises(FrameError, list, PacketCodec().messages(message))

    def test_stream_codec(self) -> None:
        keyring = Keyring([bytes(range(32))])
        message = wire.PushPull(
            True, (wire.PushNodeState("a", LOCALHOST, 1, b"", 1, 0, VSN),), b"xyz"
        )
        for dialler_codec, acceptor_codec in [
            (StreamCodec(), StreamCodec()),
            (StreamCodec(compression=False), StreamCodec()),
            (StreamCodec(label=b"lbl"), StreamCodec(label=b"lbl")),
            (
                StreamCodec(keyring=keyring, label=b"l"),
                StreamCodec(keyring=keyring, label=b"l"),
            ),
            (
                StreamCodec(keyring=keyring, encryption_version=0),
                StreamCodec(keyring=keyring),
            ),
        ]:
            request = dialler_codec.encode(message, dialler=True)
            for cut in range(len(request)):
                self.assertIsNone(
                    acceptor_codec.frame_length(request[:cut], accepted=True)
                )
            self.assertEqual(
                acceptor_codec.frame_length(request + b"zz", accepted=True),
                len(request),
            )
            self.assertEqual(acceptor_codec.decode(request, accepted=True), message)
            reply = acceptor_codec.encode(wire.Ack(3), dialler=False)
            self.assertEqual(
                dialler_codec.frame_length(reply, accepted=False), len(reply)
            )
            self.assertEqual(dialler_codec.decode(reply, accepted=False), wire.Ack(3))

    def test_stream_label_and_encryption_errors(self) -> None:
        keyring = Keyring([bytes(16)])
        request = StreamCodec().encode(wire.Ping(1, "a"), dialler=True)
        cases = [
            (StreamCodec(label=b"x"), "label"),
            (StreamCodec(keyring=keyring), "decrypt"),
        ]
        for codec, reason in cases:
            error = self.assertRaises(FrameError, codec.decode, request, accepted=True)
            self.assertEqual(error.reason, reason)
        encrypted = StreamCodec(keyring=keyring).encode(wire.Ping(1, "a"), dialler=True)
        error = self.assertRaises(
            FrameError, StreamCodec().decode, encrypted, accepted=True
        )
        self.assertIn("encryption is not configured", str(error))

    def test_stream_frame_errors(self) -> None:
        codec = StreamCodec()
        self.assertRaises(FrameError, codec.frame_length, b"\x03\x80", accepted=True)
        self.assertRaises(
            FrameError, codec.frame_length, b"\x0a\x7f\xff\xff\xff", accepted=True
        )


class SerfTests(SynchronousTestCase):
    def test_leave_intent_bytes(self) -> None:
        self.assertEqual(
            serf_leave_intent("py1"),
            unhex("08 00 83 a5 4c54696d65 01 a4 4e6f6465 a3 707931 a5 5072756e65 c2"),
        )
        self.assertEqual(
            serf_leave_intent("py1", 1_700_000_000_123),
            unhex(
                "08 00 83 a5 4c54696d65 cf 0000018bcfe5687b"
                " a4 4e6f6465 a3 707931 a5 5072756e65 c2"
            ),
        )

    def test_clock_is_above_what_it_witnessed_and_the_time(self) -> None:
        """
        L{SerfClock.next} is one above the highest LTime of Serf's join and
        leave intents, of the push/pull states and of what it sent before,
        and at least the time in milliseconds.
        """
        clock = SerfClock()
        clock.witness_message(serf_leave_intent("a", 40)[1:])
        clock.witness_message(bytes([SERF_JOIN]) + pack({"LTime": 70, "Node": "b"}))
        clock.witness_state(serf_state(50))
        self.assertEqual(clock.time, 70)
        clock.witness_state(serf_state(90))
        self.assertEqual(clock.time, 90)
        self.assertEqual([clock.next(0.0), clock.next(0.05)], [91, 92])
        self.assertEqual([clock.next(1.5), clock.next(1.5)], [1500, 1501])
        clock.witness_message(serf_leave_intent("a", 10)[1:])
        self.assertEqual(clock.next(1.0), 1502)

    def test_clock_ignores_what_is_not_serf_clock(self) -> None:
        """
        Other messages, other Serf messages, malformed intents and states
        change nothing and raise nothing.
        """
        clock = SerfClock()
        for payload in [
            b"",
            b"\x00",
            b"\x01\xc1",
            b"\x00" + pack([1, 2]),
            b"\x00" + pack({"LTime": 5, "Node": "a", "Prune": 1}),
            b"\x01" + pack({"LTime": b"5", "Node": "a"}),
            b"\x01" + pack({"LTime": -5, "Node": "a"}),
            # A user event (its own clock), a push/pull as a message.
            b"\x03" + pack({"CC": False, "LTime": 9, "Name": "e", "Payload": b""}),
            serf_state(9),
            # ckit's state message.
            b"\x12\x01\x01" + pack({"NewState": 1, "NodeName": "n", "Time": 9}),
        ]:
            clock.witness_message(payload)
        for state in [
            b"",
            b"\x02",
            b"\x02\xc1",
            b"\x02" + pack({"LTime": "nine"}),
            b"state-of-meta",
            serf_leave_intent("a", 9)[1:],
        ]:
            clock.witness_state(state)
        self.assertEqual(clock.time, 0)

    @settings(max_examples=300)
    @given(
        st.sampled_from([b"", b"\x00", b"\x01", b"\x02"]),
        st.one_of(
            st.binary(max_size=60),
            st.builds(
                lambda ltime, node: pack({"LTime": ltime, "Node": node}),
                st.integers(-(2**63), 2**64 - 1),
                st.one_of(st.none(), st.text(), st.binary(), st.integers(0, 9)),
            ),
        ),
    )
    def test_clock_never_raises(self, prefix: bytes, body: bytes) -> None:
        """
        Whatever a user message or push/pull state holds, witnessing it
        raises nothing and keeps the clock in Serf's range.
        """
        clock = SerfClock()
        clock.witness_message(prefix + body)
        clock.witness_state(prefix + body)
        self.assertLessEqual(clock.next(0), MAX_LTIME)

    def test_clock_stays_below_serf_wrapping(self) -> None:
        """
        Serf's witness sets its clock to LTime + 1 in a uint64: we never
        send more than 2**64 - 2, even after witnessing the maximum.
        """
        clock = SerfClock()
        clock.witness_message(b"\x01" + pack({"LTime": 2**64 - 1, "Node": "x"}))
        self.assertEqual([clock.next(0), clock.next(1e30)], [MAX_LTIME] * 2)
        self.assertEqual(MAX_LTIME, 2**64 - 2)
