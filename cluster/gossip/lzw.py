"""
A pure-Python codec byte-compatible with Go's C{compress/lzw} in the mode
memberlist uses: C{lzw.NewWriter(w, lzw.LSB, 8)} / C{lzw.NewReader(r,
lzw.LSB, 8)} (C{shared/WIRE.md} section 4.4).

GIF-style LZW: codes 0-255 are literal bytes, 256 is CLEAR, 257 is EOF and
dictionary codes start at 258.  Codes are packed least significant bit
first, 9 to 12 bits wide, with no TIFF "early change".  The encoder starts
every stream with CLEAR, emits CLEAR (at width 12) whenever the next code
would be 4095, and always finishes with EOF followed by any remaining bits
as one zero-padded byte.

Both directions work on ints rather than bits: the encoder keys its
dictionary by C{prefix_code << 8 | byte}, the decoder keeps each entry's
expansion as C{bytes}, and bits are gathered in an int accumulator.
"""

from __future__ import annotations

from itertools import chain

__all__ = ["LZWError", "compress", "decompress"]

_CLEAR = 256
_EOF = 257
_MAX_WIDTH = 12
# The encoder resets when its next code would reach this value.
_MAX_CODE = (1 << _MAX_WIDTH) - 1
# What the encoder reads after the last byte: -1 makes every key -1, which
# the table never holds.
_FLUSH = (-1,)

# Decoder dictionary after a CLEAR: literals, then placeholders for CLEAR
# and EOF so that list index == code.
_BASE_TABLE: tuple[bytes, ...] = (*(bytes((i,)) for i in range(256)), b"", b"")

DEFAULT_MAX_OUTPUT = 40 * 1024 * 1024


class LZWError(ValueError):
    """
    The input is not a valid LZW stream (bad code, missing EOF) or expands
    past the caller's output limit.
    """


def compress(data: bytes) -> bytes:
    """
    Compress C{data} exactly as Go's C{lzw.NewWriter(w, lzw.LSB, 8)}
    followed by C{Write(data)} and C{Close()} would.

    @param data: the bytes, possibly none.
    @return: The LZW stream, always starting with CLEAR and ending with EOF.
    """
    out = bytearray()
    # Start with CLEAR (9 bits); Go sends it first on every stream.
    bits = _CLEAR
    nbits = 9
    width = 9
    hi = _EOF
    overflow = 512

    if data:
        table: dict[int, int] = {}
        get = table.get
        # Next value of hi that needs attention: min(overflow, _MAX_CODE).
        limit = overflow
        code = data[0]
        # After the last byte, _FLUSH (in no key of the table) sends the
        # pending string and takes the same hi/widen/reset step as any other
        # code, so the step is written once.
        for c in chain(memoryview(data)[1:], _FLUSH):
            key = code << 8 | c
            found = get(key)
            if found is not None:
                code = found
                continue
            bits |= code << nbits
            nbits += width
            if nbits >= 32:
                # Flush whole 32-bit words so the accumulator stays small.
                out += (bits & 0xFFFFFFFF).to_bytes(4, "little")
                bits >>= 32
                nbits -= 32
            code = c
            hi += 1
            if hi >= limit:
                # Rare path: widen, or run out of codes (Go's incHi).
                if hi == overflow:
                    width += 1
                    overflow <<= 1
                if hi == _MAX_CODE:
                    # CLEAR at the current width (12), reset, and do not
                    # record this pair (errOutOfCodes).
                    bits |= _CLEAR << nbits
                    nbits += width
                    width = 9
                    hi = _EOF
                    overflow = 512
                    table.clear()
                    limit = overflow
                    continue
                limit = overflow if overflow < _MAX_CODE else _MAX_CODE
            table[key] = hi

    bits |= _EOF << nbits
    nbits += width
    # Whole bytes plus one final zero-padded byte for any leftover bits.
    out += bits.to_bytes((nbits + 7) >> 3, "little")
    return bytes(out)


def decompress(data: bytes, max_output: int = DEFAULT_MAX_OUTPUT) -> bytes:
    """
    Decompress a stream produced by Go's LZW writer (LSB, literal width 8).

    Bytes after the EOF code are ignored, as Go's reader does.

    @param data: The LZW stream.
    @param max_output: The largest decompressed size accepted.
    @return: The decompressed bytes.
    @raise LZWError: On an invalid code, a stream without EOF, or output
        longer than C{max_output}.  No other exception escapes for any
        input.
    """
    out = bytearray()
    table = list(_BASE_TABLE)
    # len(table) doubles as memberlist's "hi": once a data code has been
    # seen since the last CLEAR, the next code to be defined is len(table).
    tlen = len(table)
    width = 9
    mask = 511
    overflow = 512
    prev: bytes | None = None

    bits = 0
    nbits = 0
    pos = 0
    end = len(data)

    while True:
        if nbits < width:
            # Refill eight bytes at a time: far fewer steps than one per byte.
            if pos >= end:
                # Go reports io.ErrUnexpectedEOF: the whole stream is lost.
                raise LZWError("LZW stream ended without an EOF code")
            if len(out) > max_output:
                # Checked here, not per code: a code adds at most 4096 bytes
                # and a refill covers at most 7 codes, so the overshoot is
                # bounded and the hot path stays short.
                raise LZWError(f"LZW output exceeds {max_output} bytes")
            chunk = data[pos : pos + 8]
            bits |= int.from_bytes(chunk, "little") << nbits
            nbits += len(chunk) << 3
            pos += 8
            if nbits < width:
                raise LZWError("LZW stream ended without an EOF code")
        code = bits & mask
        bits >>= width
        nbits -= width

        if code < tlen:
            entry = table[code]
            if not entry:
                # Only the CLEAR and EOF placeholders are empty.
                if code == _EOF:
                    if len(out) > max_output:
                        raise LZWError(f"LZW output exceeds {max_output} bytes")
                    return bytes(out)
                table = list(_BASE_TABLE)
                tlen = len(table)
                width = 9
                mask = 511
                overflow = 512
                prev = None
                continue
        elif code == tlen and prev is not None:
            # KwKwK: the code being defined right now, i.e. the previous
            # string followed by its own first byte.
            entry = prev + prev[:1]
        else:
            raise LZWError(f"invalid LZW code {code} (highest is {tlen - 1})")

        out += entry

        if prev is not None:
            # The pending entry is the previous string plus this one's
            # first byte.
            table.append(prev + entry[:1])
            tlen += 1
        prev = entry
        if tlen >= overflow:
            if width < _MAX_WIDTH:
                width += 1
                mask = (mask << 1) | 1
                overflow <<= 1
            else:
                # Table full and no CLEAR: Go freezes the dictionary and
                # stops defining entries (a Go writer never gets here).
                prev = None
