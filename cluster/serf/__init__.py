"""
Serf's layer on top of the membership layer (L{cluster.gossip}): what a
member needs to take part in a Serf cluster as a Serf agent does.  Opt-in:
a node that does not use it behaves as a plain memberlist node.

The package exports what a program uses.  L{cluster.serf.messages}:
Serf's messages, declared once each, and their codec;
L{cluster.serf.tags}: tags, Serf's node meta; L{cluster.serf.events}: user
events; L{cluster.serf.delegate}: the memberlist delegate that carries
them.
"""

from cluster.serf.delegate import SerfDelegate
from cluster.serf.events import IEventObserver, ReceivedEvent, UserEvents
from cluster.serf.tags import STATUS_SITE_TAG, decode_tags, encode_tags, tags_of

__all__ = [
    "STATUS_SITE_TAG",
    "IEventObserver",
    "ReceivedEvent",
    "SerfDelegate",
    "UserEvents",
    "decode_tags",
    "encode_tags",
    "tags_of",
]
