"""
Serf's user events (serf.go C{UserEvent} and C{handleUserEvent}): an event
clock, an event buffer that drops late and duplicate events, local
delivery to observers, and the broadcast queue that spreads events.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.counters import CounterRecord
from cluster.serf.messages import (
    BufferedEvent,
    BufferedEvents,
    UserEvent,
    encode_message,
)

__all__ = [
    "EVENT_BUFFER_SIZE",
    "USER_EVENT_SANE_LIMIT",
    "USER_EVENT_SIZE_LIMIT",
    "Admission",
    "EventBuffer",
    "EventClock",
    "EventCounters",
    "IEventObserver",
    "ReceivedEvent",
    "UserEvents",
]

EVENT_BUFFER_SIZE = 512
"""
Serf's default C{EventBuffer}: how many event-clock times are remembered;
an event older than that many ticks behind the clock is late.
"""

USER_EVENT_SIZE_LIMIT = 512
"""
Serf's default C{UserEventSizeLimit} (configurable): the most bytes of
name and payload, and of the encoded message, an event may take.
"""

USER_EVENT_SANE_LIMIT = 9 * 1024
"""
Serf's hard ceiling on the configurable limit (its C{UserEventSizeLimit}
constant).
"""

_log = Logger()

_MAX_TIME = (1 << 64) - 1


@attrs.define
class EventClock:
    """
    Serf's event clock: a Lamport clock (serf's C{LamportClock}) over
    uint64 times, which start at 1 as Serf starts its clocks.  It lives in
    this layer because L{cluster.ckit.lamport}'s, the same rules, sits in a
    layer above.
    """

    time: int = 1

    def now(self) -> int:
        """
        The current time, left unchanged.
        """
        return self.time

    def tick(self) -> int:
        """
        Advance by one (wrapping as Go's uint64) and return the new time.
        """
        self.time = (self.time + 1) & _MAX_TIME
        return self.time

    def observe(self, ltime: int) -> None:
        """
        Witness a time received: the clock moves to C{ltime + 1} unless it
        is already past C{ltime}.
        """
        if ltime >= self.time:
            self.time = (ltime + 1) & _MAX_TIME


@attrs.frozen(kw_only=True)
class ReceivedEvent:
    """
    A user event as an observer is given it.

    @ivar ltime: the event-clock time it was sent at.
    @ivar payload: never C{None}: Serf holds a nil payload equal to an
        empty one.
    @ivar coalesce: whether the sender allowed delivering only the last of
        a burst of same-named events (we deliver every event).
    """

    ltime: int
    name: str
    payload: bytes
    coalesce: bool


class IEventObserver(Interface):
    """
    Told about every new user event, once, on the reactor.
    """

    def event_received(event: ReceivedEvent) -> None:
        """
        C{event} is new here: sent by this node or received from another.
        """


@implementer(IEventObserver)
@attrs.frozen
class _CallableObserver:
    function: Callable[[ReceivedEvent], object]

    def event_received(self, event: ReceivedEvent) -> None:
        self.function(event)


class Admission(enum.Enum):
    """
    What the event buffer made of an event.
    """

    NEW = "new"
    DUPLICATE = "duplicate"
    LATE = "late"


@attrs.define
class EventCounters(CounterRecord):
    """
    What the user-event layer did.

    @ivar sent: events this node sent.
    @ivar delivered: new events handed to observers (sent or received).
    @ivar duplicates: received events already in the buffer, dropped.
    @ivar late: received events older than the buffer's window, dropped.
    @ivar rebroadcast: received events queued to be gossiped on.
    @ivar caught_up: new events that came in a peer's push/pull state
        (also counted in C{delivered}).
    """

    sent: int = 0
    delivered: int = 0
    duplicates: int = 0
    late: int = 0
    rebroadcast: int = 0
    caught_up: int = 0


@attrs.define(eq=False)
class _Slot:
    ltime: int
    events: list[tuple[str, bytes]]


@attrs.define(eq=False)
class EventBuffer:
    """
    The last C{size} event-clock times and the events seen at each (Serf's
    C{eventBuffer}): one slot per time modulo C{size}, reused when a later
    time lands on it.
    """

    size: int = attrs.field(default=EVENT_BUFFER_SIZE)
    _slots: list[_Slot | None] = attrs.field(init=False)
    min_time: int = 0
    """Events before this time are dropped as late (Serf's C{eventMinTime})."""

    @size.validator
    def _positive(self, attribute: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"event buffer size must be positive, got {value}")

    def __attrs_post_init__(self) -> None:
        self._slots = [None] * self.size

    def admit(
        self, ltime: int, name: str, payload: bytes | None, now: int
    ) -> Admission:
        """
        Record an event sent at C{ltime}, the event clock now at C{now}.

        An event is late before L{min_time}, or when the clock has passed
        C{size} and it is more than C{size} ticks behind; a duplicate when
        an event of the same time, name and payload (C{None} equal to
        empty) was already admitted; else new, and remembered.
        """
        if ltime < self.min_time:
            return Admission.LATE
        if now > self.size and ltime < now - self.size:
            return Admission.LATE
        index = ltime % self.size
        event = (name, payload or b"")
        slot = self._slots[index]
        if slot is not None and slot.ltime == ltime:
            if event in slot.events:
                return Admission.DUPLICATE
        else:
            slot = self._slots[index] = _Slot(ltime, [])
        slot.events.append(event)
        return Admission.NEW

    def slots(self) -> tuple[BufferedEvents | None, ...]:
        """
        The buffer as Serf sends it in a push/pull: C{size} slots, each the
        events of one time or C{None} where none was admitted.
        """
        return tuple(
            None
            if slot is None
            else BufferedEvents(
                ltime=slot.ltime,
                events=tuple(
                    BufferedEvent(name=name, payload=payload)
                    for name, payload in slot.events
                ),
            )
            for slot in self._slots
        )


@attrs.define(eq=False)
class UserEvents:
    """
    Sending, receiving and delivering user events as a Serf agent does.

    Sent events are delivered here too and queued for gossip; received
    ones advance the event clock, are dropped (and counted) when late or
    already seen, else delivered and queued to be gossiped on.  Observers
    are called on the reactor (C{callLater(0)}), one failing does not stop
    the others.

    @ivar num_nodes: the cluster's size, for the retransmit limit (set it
        to the membership's C{num_members} once that exists).
    """

    reactor: IReactorTime
    num_nodes: Callable[[], int] = lambda: 1
    retransmit_mult: int = 4
    size_limit: int = attrs.field(default=USER_EVENT_SIZE_LIMIT, kw_only=True)
    buffer: EventBuffer = attrs.field(factory=EventBuffer, kw_only=True)
    clock: EventClock = attrs.field(factory=EventClock, kw_only=True)
    counters: EventCounters = attrs.field(factory=EventCounters, init=False)
    queue: BroadcastQueue = attrs.field(init=False)
    _observers: list[IEventObserver] = attrs.field(factory=list, init=False)

    @size_limit.validator
    def _sane(self, attribute: object, value: int) -> None:
        if not 0 < value <= USER_EVENT_SANE_LIMIT:
            raise ValueError(
                f"user event size limit must be 1 to {USER_EVENT_SANE_LIMIT} "
                f"bytes, got {value}"
            )

    def __attrs_post_init__(self) -> None:
        self.queue = BroadcastQueue(lambda: self.num_nodes(), self.retransmit_mult)

    def observe(
        self, observer: IEventObserver | Callable[[ReceivedEvent], object]
    ) -> IEventObserver:
        """
        Deliver every new event to C{observer} from now on.

        @return: the observer registered (a callable is wrapped), to give
            to L{stop_observing}.
        """
        if not IEventObserver.providedBy(observer):
            assert callable(observer)
            observer = _CallableObserver(observer)
        self._observers.append(observer)
        return observer

    def stop_observing(self, observer: IEventObserver) -> None:
        """
        Stop delivering to C{observer} (as returned by L{observe}).
        """
        self._observers.remove(observer)

    def user_event(
        self, name: str, payload: bytes = b"", coalesce: bool = True
    ) -> None:
        """
        Send an event to every member (and to this node's observers).

        @raise ValueError: when the name and payload, or the encoded
            message, take more than L{size_limit} bytes (nothing is sent).
        """
        raw_size = len(name.encode()) + len(payload)
        if raw_size > self.size_limit:
            raise ValueError(
                f"user event {name!r} takes {raw_size} bytes of name and "
                f"payload, over the limit of {self.size_limit}"
            )
        message = UserEvent(
            ltime=self.clock.now(), name=name, payload=payload, cc=coalesce
        )
        raw = encode_message(message)
        if len(raw) > self.size_limit:
            raise ValueError(
                f"user event {name!r} takes {len(raw)} bytes encoded, over "
                f"the limit of {self.size_limit}"
            )
        self.clock.tick()
        self.counters.sent += 1
        self._admit(message)
        self.queue.queue(raw)

    def received(self, message: UserEvent, raw: bytes) -> bool:
        """
        An event (C{raw} its bytes) arrived from another node.

        @return: whether it was new (delivered and queued to go on).
        """
        if not self._admit(message):
            return False
        # Gossiped on as it arrived, as Serf does.
        self.queue.queue(raw)
        self.counters.rebroadcast += 1
        return True

    def catch_up(
        self,
        event_ltime: int,
        slots: Sequence[BufferedEvents | None],
        ignore_older: bool = False,
    ) -> int:
        """
        Merge a peer's push/pull event state as Serf does (delegate.go
        C{MergeRemoteState}): witness its event clock C{event_ltime} (less
        one: no event was sent at it yet), then take every event of its
        buffer C{slots} as received, by the same rules as L{received}, but
        without gossiping it on (the peer's push/pull spreads it), and
        without counting the events dropped (most of every push/pull's
        events were seen already).

        @param ignore_older: drop, as late, every event before
            C{event_ltime} from now on (Serf's C{eventJoinIgnore}, set while
            a node joins without replaying old events).
        @return: how many events were new (delivered).
        """
        if event_ltime > 0:
            self.clock.observe(event_ltime - 1)
        if ignore_older:
            self.buffer.min_time = max(self.buffer.min_time, event_ltime)
        new = 0
        for slot in slots:
            if slot is None:
                continue
            for event in slot.events:
                message = UserEvent(
                    ltime=slot.ltime, name=event.name, payload=event.payload, cc=False
                )
                if self._admit(message, count_drops=False):
                    new += 1
        self.counters.caught_up += new
        return new

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """
        Queued events that fit in C{limit} bytes (see L{BroadcastQueue.get}).
        """
        return self.queue.get(overhead, limit)

    def _admit(self, message: UserEvent, count_drops: bool = True) -> bool:
        self.clock.observe(message.ltime)
        admission = self.buffer.admit(
            message.ltime, message.name, message.payload, self.clock.now()
        )
        if admission is not Admission.NEW:
            if count_drops and admission is Admission.LATE:
                self.counters.late += 1
            elif count_drops:
                self.counters.duplicates += 1
            return False
        self.counters.delivered += 1
        event = ReceivedEvent(
            ltime=message.ltime,
            name=message.name,
            payload=message.payload or b"",
            coalesce=message.cc,
        )
        self.reactor.callLater(0, self._deliver, event)
        return True

    def _deliver(self, event: ReceivedEvent) -> None:
        for observer in list(self._observers):
            try:
                observer.event_received(event)
            except Exception:
                _log.failure(
                    "user event observer {observer!r} failed on {name!r}",
                    observer=observer,
                    name=event.name,
                )
