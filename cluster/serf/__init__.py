"""
Serf's layer on top of the membership layer (L{cluster.gossip}): what a
member needs to take part in a Serf cluster as a Serf agent does.  Opt-in:
a node that does not use it behaves as a plain memberlist node.

L{cluster.serf.tags}: tags, Serf's node meta.
"""

from cluster.serf.tags import (
    STATUS_SITE_TAG,
    TAG_BROADCAST_TIMEOUT,
    decode_tags,
    encode_tags,
    tags_meta,
    tags_of,
)

__all__ = [
    "STATUS_SITE_TAG",
    "TAG_BROADCAST_TIMEOUT",
    "decode_tags",
    "encode_tags",
    "tags_meta",
    "tags_of",
]
