"""
Serf's tags: a member's node meta as Serf writes and reads it (serf.go
C{encodeTags} and C{decodeTags}; C{shared/WIRE.md} section 8).

Serf puts a member's tags in its memberlist node meta: the byte C{0xff},
then a msgpack map of strings in go-msgpack's legacy raw family.  Serf
reads any meta: one that is empty or does not start with C{0xff} is the
role alone (C{{"role": meta}}, so an empty meta shows as C{role=} in
C{serf members}), and a map that stops decoding part way keeps the tags
read before the fault.

Our nodes advertise an empty meta until they are given tags, as before
tags existed (L{tags_meta}): their wire bytes do not change.  A node meta
holds at most C{META_MAX_SIZE} (512) bytes, memberlist's C{MetaMaxSize},
so tags are refused beyond it, naming the largest.
"""

from __future__ import annotations

from collections.abc import Mapping

from cluster.gossip.codec import pack, stream_unpacker
from cluster.gossip.config import META_MAX_SIZE
from cluster.gossip.members import Member

__all__ = [
    "STATUS_SITE_TAG",
    "TAG_BROADCAST_TIMEOUT",
    "TAG_MAGIC",
    "decode_tags",
    "encode_tags",
    "tags_meta",
    "tags_of",
]

TAG_MAGIC = 0xFF
"""
Serf's C{tagMagicByte}: the first byte of a meta that holds tags.
"""

TAG_BROADCAST_TIMEOUT = 5.0
"""
Seconds a change of tags waits at most for its broadcast (Serf's
C{BroadcastTimeout}).
"""

STATUS_SITE_TAG = "http"
"""
The tag under which our nodes advertise their status site: C{"HOST:PORT"},
or C{":PORT"} when the site listens on every interface (it is then at the
member's own address).  The status page links every member that has it.
"""


def encode_tags(tags: Mapping[str, str]) -> bytes:
    """
    The node meta Serf makes of C{tags}: C{0xff}, then the msgpack map, its
    keys in ascending order (Go's order is random, so any order is
    Serf's), every string a legacy raw string (no str8), as go-msgpack
    writes them.  No tags at all are C{ff 80}.
    """
    return bytes([TAG_MAGIC]) + pack(dict(sorted(tags.items())))


def _text(value: object) -> str | None:
    """
    A msgpack string (raw or bin) as Go reads it into a C{string}: C{nil}
    is C{""}; anything else is not a string (C{None}).
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        # A Go string holds any bytes; shown here with replacement characters.
        return value.decode("utf-8", "replace")
    return None


def decode_tags(meta: bytes) -> dict[str, str]:
    """
    The tags Serf reads from a member's node meta, by Serf's rules, never
    raising: an empty meta or one whose first byte is not C{0xff} is the
    role alone, C{{"role": meta}}; otherwise the entries of the msgpack map
    that follows, up to the first that is not a pair of strings (a C{nil}
    key or value is C{""}, a repeated key keeps its last value, bytes after
    the map are ignored).  What does not start with a map (C{nil}, an
    array, nothing) holds no tags.
    """
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": meta.decode("utf-8", "replace")}
    tags: dict[str, str] = {}
    unpacker = stream_unpacker(meta[1:])
    try:
        for _ in range(unpacker.read_map_header()):
            key = _text(unpacker.unpack())
            value = _text(unpacker.unpack())
            if key is None or value is None:
                break
            tags[key] = value
    except Exception:  # msgpack raises many unrelated types: stop where it did
        pass
    return tags


def tags_meta(tags: Mapping[str, str]) -> bytes:
    """
    The node meta a node with C{tags} advertises: nothing when it has none
    (the meta of a node without tags, unchanged), else L{encode_tags}.

    @raise ValueError: when a key or value is not a string, or when the
        encoded tags exceed C{META_MAX_SIZE} bytes (naming the largest
        tag); Serf's C{SetTags} refuses the same.
    """
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"tag {key!r}: keys and values must be strings")
    if not tags:
        return b""
    meta = encode_tags(tags)
    if len(meta) > META_MAX_SIZE:
        sizes = {key: len(f"{key}{value}".encode()) for key, value in tags.items()}
        largest = max(sizes, key=sizes.__getitem__)
        raise ValueError(
            f"the tags take {len(meta)} bytes, over the {META_MAX_SIZE} of a "
            f"node meta; the largest is {largest!r} ({sizes[largest]} bytes)"
        )
    return meta


def tags_of(member: Member) -> dict[str, str]:
    """
    C{member}'s tags, to show: L{decode_tags} of its meta, except that an
    empty meta (a member without tags: any plain memberlist node, ours by
    default) holds none, where Serf shows C{role=}.
    """
    return decode_tags(member.meta) if member.meta else {}
