"""
The memberlist delegate of a Serf member (serf's C{delegate.go}): tags as
the node meta, and user events as user messages and broadcasts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
from zope.interface import implementer

from cluster.gossip.counters import CounterRecord
from cluster.gossip.interfaces import IBroadcastWaker, IDelegate
from cluster.serf.events import UserEvents
from cluster.serf.messages import MessageError, UserEvent, decode_message
from cluster.serf.tags import tags_meta

__all__ = ["MessageCounters", "SerfDelegate"]


@attrs.define
class MessageCounters(CounterRecord):
    """
    The user messages a L{SerfDelegate} was given.

    @ivar events: user events (see L{UserEvents.counters} for what became
        of them).
    @ivar malformed: messages that are not valid Serf messages, dropped.
    @ivar unhandled: valid Serf messages of a kind not handled yet, dropped.
    """

    events: int = 0
    malformed: int = 0
    unhandled: int = 0


@implementer(IDelegate, IBroadcastWaker)
@attrs.define(eq=False)
class SerfDelegate:
    """
    An L{IDelegate} for a L{cluster.gossip.Memberlist} in a Serf cluster:
    it advertises C{tags} as Serf encodes them, and sends and receives
    user events through C{events}.

    The push/pull user state is left empty for now (C{local_state} sends
    nothing, C{merge_remote_state} ignores the agents' state), so a node
    catches up with missed events only by gossip, not by push/pull.
    Messages other than user events are counted and dropped.
    """

    events: UserEvents
    tags: Mapping[str, str] = attrs.field(factory=dict)
    counters: MessageCounters = attrs.field(factory=MessageCounters, init=False)

    def __attrs_post_init__(self) -> None:
        tags_meta(self.tags)  # refuse bad tags now, not at the first alive

    def attach(self, num_members: Callable[[], int]) -> None:
        """
        Size the event retransmissions by C{num_members} (the membership's
        own method, once it exists).
        """
        self.events.num_nodes = num_members

    def node_meta(self, limit: int) -> bytes:
        return tags_meta(self.tags)[:limit]

    def notify_msg(self, message: bytes) -> None:
        try:
            decoded = decode_message(message)
        except MessageError:
            self.counters.malformed += 1
            return
        if isinstance(decoded, UserEvent):
            self.counters.events += 1
            self.events.received(decoded, message)
        else:
            self.counters.unhandled += 1

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return self.events.get_broadcasts(overhead, limit)

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        pass

    def watch_broadcasts(self, wake: Callable[[], object]) -> None:
        self.events.queue.on_queued = wake
