"""
What a member counts as it works: L{GossipCounters}, one typed record per
member, shared by the mechanisms that count (the member table, failure
detection, sending, receiving and the transport) and read when metrics are
scraped.

Each counter is a field the type checker knows, so a misspelt counter does
not type-check.  Which Prometheus family each one feeds is declared once,
in the table of L{cluster.ckit.metrics} (C{METRICS}); a test fails when a
counter here feeds no family there.  Counting costs an attribute increment:
the hot paths never format a key or look one up.

Two counts are keyed rather than named: drops, by L{DropReason}, and
protocol messages, by L{MessageType}; a key is present once counted.
"""

from __future__ import annotations

import copy
import enum
from bisect import bisect_left
from collections import Counter
from typing import Self

import attrs

from cluster.gossip.wire import MessageType

__all__ = [
    "ROUND_BUCKETS",
    "TLS_DROP_REASONS",
    "CounterRecord",
    "DropReason",
    "DurationHistogram",
    "GossipCounters",
    "MemberEvents",
    "MessageCounters",
    "ProbeCounters",
    "PushPullCounters",
    "TrafficCounters",
]

ROUND_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
)
"""
Upper bounds, in seconds, of the probe round histogram: a healthy round
lasts one round trip, a failed one its whole deadline (up to
C{probe_interval} times C{awareness_max_multiplier}: 8 s on a LAN, 40 s on
a WAN).
"""


class DropReason(enum.Enum):
    """
    Why an input was dropped; the value is the C{reason} label of
    C{cluster_node_gossip_dropped_total}.  L{cluster.gossip.framing.FrameError}
    carries one of these values as its C{reason}.
    """

    # In the wrappers, before any message is read.
    LABEL = "label"
    DECRYPT = "decrypt"
    CRC = "crc"
    COMPOUND = "compound"
    COMPRESS = "compress"
    # Undecodable.
    DECODE = "decode"
    TYPE = "type"
    VERSION = "version"
    # Over a limit.
    SIZE = "size"
    META = "meta"
    NAME = "name"
    INCARNATION = "incarnation"
    # Streams refused or cut before their request was served.
    STREAM = "stream"
    STREAM_TIMEOUT = "stream_timeout"
    TOO_MANY_STREAMS = "too_many_streams"
    # TLS handshakes that failed, by cause (both sides count each).
    TLS_UNKNOWN_CA = "tls_unknown_ca"
    TLS_NAME_MISMATCH = "tls_name_mismatch"
    TLS_EXPIRED = "tls_expired"
    TLS_NO_CERTIFICATE = "tls_no_certificate"
    TLS_VERSION = "tls_version"
    TLS = "tls"  # for any other cause
    # Refused by the handlers.
    WRONG_NODE = "wrong_node"
    PROTOCOL = "protocol"
    HANDLER = "handler"


TLS_DROP_REASONS = frozenset(
    {
        DropReason.TLS_UNKNOWN_CA,
        DropReason.TLS_NAME_MISMATCH,
        DropReason.TLS_EXPIRED,
        DropReason.TLS_NO_CERTIFICATE,
        DropReason.TLS_VERSION,
        DropReason.TLS,
    }
)
"""
The reasons a failed TLS handshake is counted under, one per cause
(L{cluster.gossip.tls.TLSCause}): an unknown CA, a name mismatch, a
certificate expired or not yet valid, no client certificate, a protocol
version, or another cause.
"""


class CounterRecord:
    """
    A record of counters (an attrs class of ints, C{Counter}s and nested
    records): it can be copied, and subtracted from to give what was
    counted in between, as a C{collections.Counter} is.
    """

    def snapshot(self) -> Self:
        """
        A copy that stays as it is while this record goes on counting.
        """
        return copy.deepcopy(self)

    def __sub__(self, earlier: Self) -> Self:
        """
        What was counted since C{earlier} (a L{snapshot} of this record):
        each field's difference.
        """
        record = type(self)
        assert attrs.has(record), record  # every subclass is an attrs class
        fields = attrs.fields(record)
        return type(self)(
            **{
                field.alias: _minus(
                    getattr(self, field.name), getattr(earlier, field.name)
                )
                for field in fields
            }
        )


def _minus(now: object, before: object) -> object:
    """
    C{now - before} for one field of a counter record: an int, a
    C{Counter} (which keeps what grew) or a nested record.
    """
    if isinstance(now, int) and isinstance(before, int):
        return now - before
    if isinstance(now, Counter) and isinstance(before, Counter):
        return now - before
    if isinstance(now, CounterRecord) and isinstance(before, type(now)):
        return now - before
    raise TypeError(f"not a counter: {now!r}")


@attrs.define
class DurationHistogram(CounterRecord):
    """
    Durations recorded into buckets, as a Prometheus histogram holds them.

    @ivar bounds: the buckets' upper bounds in seconds, ascending; one more
        bucket, without bound, takes the rest.
    @ivar counts: how many durations fell in each bucket (not cumulative).
    @ivar total: the sum of the durations, in seconds.
    """

    bounds: tuple[float, ...]
    counts: list[int] = attrs.field(init=False)
    total: float = attrs.field(default=0.0, init=False)

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        """
        Record one duration (a negative one, a clock stepped back, as 0).
        """
        seconds = max(0.0, seconds)
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        """
        How many durations were recorded.
        """
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """
        C{(upper bound, durations at most that long)} per bucket, the last
        one's bound C{inf}: the samples of a Prometheus histogram.
        """
        pairs = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs

    def __sub__(self, earlier: Self) -> Self:
        grown = type(self)(self.bounds)
        grown.counts = [a - b for a, b in zip(self.counts, earlier.counts, strict=True)]
        grown.total = self.total - earlier.total
        return grown


@attrs.define
class TrafficCounters(CounterRecord):
    """
    What went through the transport (ckit's transport metrics).

    @ivar packets_in: datagrams received.
    @ivar bytes_in: their bytes.
    @ivar packets_in_failed: datagrams with a part that was dropped.
    @ivar packets_out: datagrams sent.
    @ivar bytes_out: their bytes.
    @ivar send_failed: datagrams that could not be sent (sealing failed, or
        the socket refused them).
    @ivar streams_in: requests read on streams we accepted.
    @ivar streams_in_failed: accepted streams whose request could not be
        read or served.
    @ivar stream_replies_out: replies we wrote on accepted streams.
    @ivar streams_out: requests we sent on streams we dialled.
    @ivar streams_out_failed: our exchanges that failed (no connection,
        timeout, or no readable reply).
    @ivar stream_replies_in: replies read on streams we dialled.
    @ivar stream_bytes_in: bytes of requests and replies read on streams.
    @ivar stream_bytes_out: bytes of requests and replies written on streams.
    @ivar streams_open: our exchanges waiting for their reply (it goes
        down again).
    """

    packets_in: int = 0
    bytes_in: int = 0
    packets_in_failed: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    send_failed: int = 0
    streams_in: int = 0
    streams_in_failed: int = 0
    stream_replies_out: int = 0
    streams_out: int = 0
    streams_out_failed: int = 0
    stream_replies_in: int = 0
    stream_bytes_in: int = 0
    stream_bytes_out: int = 0
    streams_open: int = 0


@attrs.define
class MessageCounters(CounterRecord):
    """
    Protocol messages, in datagrams and on streams, piggybacked broadcasts
    included (memberlist's C{memberlist.msg.*}).

    @ivar received: messages decoded, by type.
    @ivar sent: messages sent, by type (their first byte).
    @ivar sent_unknown: parts sent whose first byte is no message type.
    @ivar gossip_sends: pending broadcasts packed and sent to one member at
        a gossip tick.
    """

    received: Counter[MessageType] = attrs.field(factory=Counter)
    sent: Counter[MessageType] = attrs.field(factory=Counter)
    sent_unknown: int = 0
    gossip_sends: int = 0


@attrs.define
class ProbeCounters(CounterRecord):
    """
    Failure detection (L{cluster.gossip.probe}).

    @ivar started: rounds started.
    @ivar degraded: rounds started while our health score stretched their
        deadline (memberlist's C{degraded.probe}).
    @ivar failed: rounds that ended without an ack (the member is suspected).
    @ivar tcp_pings_failed: TCP fallback pings that failed.
    @ivar rounds: the duration of every round that ended, from the ping to
        the first ack or the deadline (memberlist's C{probeNode} timing).
    """

    started: int = 0
    degraded: int = 0
    failed: int = 0
    tcp_pings_failed: int = 0
    rounds: DurationHistogram = attrs.field(
        factory=lambda: DurationHistogram(ROUND_BUCKETS)
    )


@attrs.define
class PushPullCounters(CounterRecord):
    """
    Full state exchanges.

    @ivar served: push/pulls a peer started and we answered.
    @ivar completed: push/pulls we started that completed.
    @ivar failed: periodic push/pulls we started that failed.
    """

    served: int = 0
    completed: int = 0
    failed: int = 0


@attrs.define
class MemberEvents(CounterRecord):
    """
    Changes the member table made (L{cluster.gossip.state}); the field names
    are the C{event} labels of C{cluster_node_gossip_member_events_total}.

    @ivar suspected: members we started to suspect.
    @ivar declared_dead: members we recorded dead (not those that left).
    @ivar refuted: claims about ourselves we refuted.
    @ivar reaped: members forgotten after they were dead or left long enough.
    """

    suspected: int = 0
    declared_dead: int = 0
    refuted: int = 0
    reaped: int = 0


@attrs.define
class GossipCounters(CounterRecord):
    """
    Everything one member counts.

    @ivar dropped: inputs dropped, by reason (see L{DropReason}).
    """

    traffic: TrafficCounters = attrs.field(factory=TrafficCounters)
    messages: MessageCounters = attrs.field(factory=MessageCounters)
    dropped: Counter[DropReason] = attrs.field(factory=Counter)
    probes: ProbeCounters = attrs.field(factory=ProbeCounters)
    push_pulls: PushPullCounters = attrs.field(factory=PushPullCounters)
    members: MemberEvents = attrs.field(factory=MemberEvents)
