"""
The memberlist delegate of a Serf member (serf's C{delegate.go}): tags as
the node meta, user events as user messages and broadcasts, and Serf's
push/pull user state, through which a node catches up with missed events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
from zope.interface import implementer

from cluster.gossip.counters import CounterRecord
from cluster.gossip.interfaces import IBroadcastWaker, IDelegate
from cluster.gossip.serf import SerfClock
from cluster.serf.events import EventClock, UserEvents
from cluster.serf.messages import (
    MessageError,
    PushPull,
    UserEvent,
    decode_message,
    encode_message,
)
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
    @ivar states: push/pull user states merged.
    @ivar bad_states: push/pull user states that are not Serf's
        C{messagePushPull} (empty, another type, malformed), ignored.
    """

    events: int = 0
    malformed: int = 0
    unhandled: int = 0
    states: int = 0
    bad_states: int = 0


@implementer(IDelegate, IBroadcastWaker)
@attrs.define(eq=False)
class SerfDelegate:
    """
    An L{IDelegate} for a L{cluster.gossip.Memberlist} in a Serf cluster:
    it advertises C{tags} as Serf encodes them, and sends and receives
    user events through C{events}.

    Every push/pull carries Serf's user state (C{messagePushPull}): the
    member clock C{member_clock} (give it the membership's C{serf_clock}),
    the event clock and the event buffer, and the query clock
    C{query_clock}.  Merging a peer's witnesses its three clocks and takes
    each event of its buffer as received: new ones are delivered once,
    so a node that missed events (partitioned, or rejoining) catches up
    with the last 512 event-clock times, as a Serf agent does.

    Not tracked yet: the status times and left members of other members
    (sent empty, and ignored when merged), and our own status time, which
    we leave out because we send no join intent: a status time of ours
    that overtook our leave intent would make the agents ignore it.
    Messages other than user events are counted and dropped.

    @ivar ignore_events_on_join: Serf's C{eventJoinIgnore}: while true, a
        join push/pull drops every event older than the peer's event
        clock.  A Serf agent sets it only for the length of its own join,
        and by default (C{serf join} or C{-join} without C{-replay}) does:
        set it around this node's C{join} to match; leave it false to
        replay.
    """

    events: UserEvents
    tags: Mapping[str, str] = attrs.field(factory=dict)
    member_clock: SerfClock = attrs.field(factory=SerfClock, kw_only=True)
    query_clock: EventClock = attrs.field(factory=EventClock, kw_only=True)
    ignore_events_on_join: bool = attrs.field(default=False, kw_only=True)
    counters: MessageCounters = attrs.field(factory=MessageCounters, init=False)

    def __attrs_post_init__(self) -> None:
        tags_meta(self.tags)  # refuse bad tags now, not at the first alive

    def attach(
        self, num_members: Callable[[], int], member_clock: SerfClock | None = None
    ) -> None:
        """
        Size the event retransmissions by C{num_members} (the membership's
        own method, once it exists) and, when given, share the
        membership's C{serf_clock} as C{member_clock}, so our push/pull
        state and our leave intents keep one member clock.
        """
        self.events.num_nodes = num_members
        if member_clock is not None:
            member_clock.witness(self.member_clock.time)
            self.member_clock = member_clock

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
        state = PushPull(
            # At least 1: an agent witnesses LTime - 1, which must not wrap.
            ltime=max(1, self.member_clock.time),
            event_ltime=self.events.clock.now(),
            events=self.events.buffer.slots(),
            query_ltime=self.query_clock.now(),
        )
        return encode_message(state)

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        try:
            decoded = decode_message(state)
        except MessageError:
            self.counters.bad_states += 1
            return
        if not isinstance(decoded, PushPull):
            self.counters.bad_states += 1
            return
        self.counters.states += 1
        # Less one, as Serf witnesses them: nothing was sent at them yet.
        if decoded.ltime > 0:
            self.member_clock.witness(decoded.ltime - 1)
        if decoded.query_ltime > 0:
            self.query_clock.observe(decoded.query_ltime - 1)
        self.events.catch_up(
            decoded.event_ltime,
            decoded.events,
            ignore_older=join and self.ignore_events_on_join,
        )

    def watch_broadcasts(self, wake: Callable[[], object]) -> None:
        self.events.queue.on_queued = wake
