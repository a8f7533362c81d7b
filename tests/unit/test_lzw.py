"""
Tests for L{cluster.gossip.lzw}: byte-exact against Go's C{compress/lzw}
(vectors from C{shared/WIRE.md} section 4.4 and Go's own C{reader_test.go}),
round trips, and rejection of malformed input with L{LZWError} only.
"""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from cluster.gossip.lzw import LZWError, compress, decompress

CLEAR = 256
EOF = 257


def pack(codes: list[tuple[int, int]]) -> bytes:
    """
    Pack C{(code, width)} pairs LSB-first, flushing a final partial byte,
    the way Go's writer does.
    """
    acc = 0
    nbits = 0
    for code, width in codes:
        acc |= code << nbits
        nbits += width
    return acc.to_bytes((nbits + 7) // 8, "little")


def read_codes(stream: bytes) -> tuple[list[int], int]:
    """
    Walk an LZW stream with the decoder's width rule, without expanding it.

    @return: The codes up to and including EOF, and the number of bits they
        occupy.
    """
    acc = 0
    nbits = 0
    pos = 0
    used = 0
    width = 9
    hi = EOF
    codes = []
    while True:
        while nbits < width:
            if pos == len(stream):
                raise AssertionError("no EOF code in stream")
            acc |= stream[pos] << nbits
            pos += 1
            nbits += 8
        code = acc & ((1 << width) - 1)
        acc >>= width
        nbits -= width
        used += width
        codes.append(code)
        if code == EOF:
            return codes, used
        if code == CLEAR:
            width, hi = 9, EOF
            continue
        hi += 1
        if hi >= 1 << width:
            if width < 12:
                width += 1
            else:
                hi = 4095


def distinct_pairs(n: int) -> bytes:
    """
    The first C{n} bytes of a de Bruijn sequence B(256, 2): no two adjacent
    byte pairs repeat, so the encoder never finds a match and emits exactly
    one code per input byte.
    """
    seq: list[int] = []
    a = [0] * 3

    def db(t: int, p: int) -> None:
        if t > 2:
            if 2 % p == 0:
                seq.extend(a[1 : p + 1])
        else:
            a[t] = a[t - p]
            db(t + 1, p)
            for j in range(a[t - p] + 1, 256):
                a[t] = j
                db(t + 1, t)

    db(1, 1)
    return bytes(seq[:n])


def reference_compress(data: bytes) -> bytes:
    """
    A deliberately plain, step-by-step implementation of the encoder
    described in C{shared/WIRE.md} section 4.4, keeping a list of emitted
    codes and widths.  Used to check the optimised encoder bit for bit.
    """
    codes: list[tuple[int, int]] = []
    table: dict[tuple[int, int], int] = {}
    state = {"width": 9, "hi": EOF, "overflow": 512}

    def inc_hi() -> bool:
        state["hi"] += 1
        if state["hi"] == state["overflow"]:
            state["width"] += 1
            state["overflow"] *= 2
        if state["hi"] == 4095:
            codes.append((CLEAR, state["width"]))
            state.update(width=9, hi=EOF, overflow=512)
            table.clear()
            return False
        return True

    codes.append((CLEAR, 9))
    if data:
        code = data[0]
        for c in data[1:]:
            if (code, c) in table:
                code = table[(code, c)]
                continue
            codes.append((code, state["width"]))
            old = code
            code = c
            if inc_hi():
                table[(old, c)] = state["hi"]
        codes.append((code, state["width"]))
        inc_hi()
    codes.append((EOF, state["width"]))
    return pack(codes)


def _rng_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _low_entropy(seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.choice(b"abcd") for _ in range(n))


def _inputs() -> list[bytes]:
    """A spread of inputs: sizes, entropy levels, repetition."""
    text = b"memberlist gossip alive suspect dead push pull " * 3000
    return [
        b"",
        b"a",
        b"ab",
        bytes(range(256)),
        _rng_bytes(1, 255),
        _rng_bytes(2, 1400),
        _rng_bytes(3, 4096),
        _rng_bytes(4, 50_000),
        _rng_bytes(5, 200_000),
        _low_entropy(6, 1400),
        _low_entropy(7, 60_000),
        b"\x00" * 1,
        b"\x00" * 1400,
        b"\xff" * 200_000,
        text,
    ]


class VectorTests(SynchronousTestCase):
    """Byte-exact agreement with Go."""

    VECTORS = [
        (b"", "00 03 02"),
        (b"a", "00 c3 04 04"),
        (
            b"TOBEORNOTTOBEORTOBEORNOT",
            "00 a9 3c 11 52 e4 89 14 27 4f a8 08 24 68 70 61 c1 83 09 03 02",
        ),
    ]

    def test_wire_vectors_compress(self) -> None:
        """The WIRE.md 4.4 vectors compress to exactly Go's bytes."""
        for raw, hexed in self.VECTORS:
            self.assertEqual(compress(raw).hex(" "), hexed, raw)

    def test_wire_vectors_decompress(self) -> None:
        """The WIRE.md 4.4 vectors decompress to their input."""
        for raw, hexed in self.VECTORS:
            self.assertEqual(decompress(bytes.fromhex(hexed)), raw)

    def test_go_reader_vectors(self) -> None:
        """
        Go's C{reader_test.go} LSB/8 vectors, two of which do not start
        with CLEAR (Go's reader accepts that).
        """
        self.assertEqual(decompress(b"\x01\x01"), b"")
        self.assertEqual(
            decompress(bytes.fromhex("549e0829f2448a932754041234b8b0e0c1840101")),
            b"TOBEORNOTTOBEORTOBEORNOT",
        )
        self.assertEqual(
            decompress(bytes.fromhex("0051fc1b2870a0c1830101")),
            bytes.fromhex("28ffffff28ffffffffffffffffffff"),
        )

    def test_go_reader_truncated_vector(self) -> None:
        """Go's "tobe-truncated" vector (ErrUnexpectedEOF there) is rejected."""
        self.assertRaises(LZWError, decompress, bytes.fromhex("549e0829f2448a93275404"))

    def test_matches_reference_encoder(self) -> None:
        """
        The optimised encoder matches the plain step-by-step encoder
        on every input, including ones that need several CLEAR resets.
        """
        for data in _inputs():
            self.assertEqual(compress(data), reference_compress(data), len(data))


class StreamShapeTests(SynchronousTestCase):
    """The code stream the encoder produces."""

    def test_starts_with_clear_ends_with_eof(self) -> None:
        """
        Every stream starts with CLEAR and ends with EOF, and the EOF code
        is in the last byte (only zero padding follows it).
        """
        for data in _inputs():
            stream = compress(data)
            codes, bits = read_codes(stream)
            self.assertEqual(codes[0], CLEAR)
            self.assertEqual(codes[-1], EOF)
            self.assertEqual((bits + 7) // 8, len(stream))
            self.assertEqual(int.from_bytes(stream, "little") >> bits, 0)

    def test_multiple_clear_resets(self) -> None:
        """
        200 KB of random data runs out of codes many times; each reset is
        a CLEAR and the result still round-trips.
        """
        data = _rng_bytes(11, 200_000)
        stream = compress(data)
        codes, _ = read_codes(stream)
        self.assertGreater(codes.count(CLEAR), 40)
        self.assertEqual(decompress(stream), data)

    def test_clear_then_eof_at_reset(self) -> None:
        """
        When the final pending code exhausts the table, Close emits CLEAR
        at width 12 and then EOF at width 9.
        """
        # One code per byte: 3838 codes take hi from 257 to 4095 exactly
        # on the final incHi.
        data = distinct_pairs(3838)
        pairs = list(itertools.pairwise(data))
        self.assertEqual(len(set(pairs)), len(pairs))
        stream = compress(data)
        codes, bits = read_codes(stream)
        self.assertEqual(codes[-2:], [CLEAR, EOF])
        self.assertEqual(codes.count(CLEAR), 2)
        self.assertEqual(len(codes), 3838 + 3)
        # 256 codes at 9 bits (the first CLEAR and 255 literals), 512 at
        # 10, 1024 at 11, 2048 at 12 (incl. the final CLEAR), EOF at 9.
        self.assertEqual(bits, 256 * 9 + 512 * 10 + 1024 * 11 + 2048 * 12 + 9)
        self.assertEqual(stream, reference_compress(data))
        self.assertEqual(decompress(stream), data)
        # One byte more: the reset happens inside the loop instead.
        longer = distinct_pairs(3839)
        self.assertEqual(decompress(compress(longer)), longer)
        self.assertEqual(compress(longer), reference_compress(longer))


class RoundTripTests(SynchronousTestCase):
    """compress then decompress gives back the input."""

    def test_round_trips(self) -> None:
        """Random, low-entropy, repetitive and same-byte inputs."""
        for data in _inputs():
            self.assertEqual(decompress(compress(data)), data, len(data))

    def test_every_byte_value(self) -> None:
        """Each single byte and each pair of a byte with itself."""
        for b in range(256):
            one = bytes((b,))
            self.assertEqual(decompress(compress(one)), one)
            self.assertEqual(decompress(compress(one * 3)), one * 3)

    @given(st.binary(max_size=6000))
    @settings(max_examples=200)
    def test_round_trip_property(self, data: bytes) -> None:
        """Any bytes round-trip and match the reference encoder."""
        stream = compress(data)
        self.assertEqual(decompress(stream), data)
        self.assertEqual(stream, reference_compress(data))

    @given(st.lists(st.sampled_from([b"a", b"b", b"ab", b"\x00"]), max_size=3000))
    @settings(max_examples=100)
    def test_low_entropy_property(self, parts: list[bytes]) -> None:
        """Highly repetitive input (long dictionary chains) round-trips."""
        data = b"".join(parts)
        self.assertEqual(decompress(compress(data)), data)


class MalformedInputTests(SynchronousTestCase):
    """Decoding errors are always L{LZWError}."""

    def test_empty_input(self) -> None:
        """No bytes at all: no EOF."""
        self.assertRaises(LZWError, decompress, b"")

    def test_missing_eof(self) -> None:
        """A stream that stops without EOF is rejected, as Go does."""
        self.assertRaises(LZWError, decompress, pack([(CLEAR, 9), (97, 9)]))
        self.assertRaises(LZWError, decompress, bytes.fromhex("00c304"))

    def test_code_above_hi(self) -> None:
        """A code beyond the next one to be defined is invalid."""
        stream = pack([(CLEAR, 9), (97, 9), (259, 9), (EOF, 9)])
        self.assertRaises(LZWError, decompress, stream)

    def test_kwkwk_without_previous(self) -> None:
        """Right after CLEAR there is no previous string for code 258."""
        stream = pack([(CLEAR, 9), (258, 9), (EOF, 9)])
        self.assertRaises(LZWError, decompress, stream)

    def test_kwkwk(self) -> None:
        """Code == hi expands to the previous string plus its first byte."""
        stream = pack([(CLEAR, 9), (97, 9), (258, 9), (EOF, 9)])
        self.assertEqual(decompress(stream), b"aaa")

    def test_trailing_bytes_ignored(self) -> None:
        """Bytes after EOF are ignored, as Go's reader does."""
        self.assertEqual(decompress(compress(b"abc") + b"\xff\xff"), b"abc")

    def test_full_table_without_clear(self) -> None:
        """
        A (non-Go) stream that keeps going after the table is full: like
        Go, the decoder freezes the dictionary at width 12 instead of
        failing, and entry 4095 stays usable.
        """
        codes = [(CLEAR, 9)]
        width, hi = 9, EOF
        for _ in range(4095 - EOF + 5):
            codes.append((97, width))
            hi = min(hi + 1, 4096)
            if hi == 1 << width and width < 12:
                width += 1
        codes += [(4095, 12), (EOF, 12)]
        literals = len(codes) - 3
        # Every defined entry is "a" + "a".
        self.assertEqual(decompress(pack(codes)), b"a" * literals + b"aa")

    def test_every_prefix_truncated(self) -> None:
        """Each strict prefix of a valid stream lacks EOF."""
        stream = compress(_low_entropy(21, 3000))
        for n in range(len(stream)):
            self.assertRaises(LZWError, decompress, stream[:n])

    def test_max_output(self) -> None:
        """Output longer than C{max_output} is refused; equal is fine."""
        data = b"x" * 1000
        stream = compress(data)
        self.assertEqual(decompress(stream, max_output=1000), data)
        self.assertRaises(LZWError, decompress, stream, max_output=999)
        self.assertRaises(LZWError, decompress, compress(b""), max_output=-1)

    def test_max_output_bomb(self) -> None:
        """A highly compressible stream is stopped near the limit."""
        stream = compress(b"\x00" * 5_000_000)
        self.assertLess(len(stream), 20_000)
        self.assertRaises(LZWError, decompress, stream, max_output=100_000)

    @given(st.binary(max_size=2000), st.data())
    @settings(max_examples=200)
    def test_truncated_stream(self, data: bytes, draw: st.DataObject) -> None:
        """Any strict prefix of a valid stream raises L{LZWError}."""
        stream = compress(data)
        n = draw.draw(st.integers(min_value=0, max_value=len(stream) - 1))
        self.assertRaises(LZWError, decompress, stream[:n])
