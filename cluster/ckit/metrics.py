"""
L{NodeMetrics}: the Prometheus metrics of one cluster node.

Every L{cluster.ckit.node.Node} carries one, C{node.metrics}, as ckit's node
carries the collector its C{Metrics()} returns.  It is a custom collector:
nothing is registered anywhere until the owner of a registry does so, and
two nodes in one process each go to a registry of their own::

    registry = CollectorRegistry()
    registry.register(node.metrics)

Registering it twice on one registry (or two nodes on one registry) raises
C{prometheus_client.registry.DuplicateTimeseries}, a C{ValueError} naming
the metrics, because L{NodeMetrics.describe} lists them all.

Nearly everything is read from the node and its memberlist when the
registry is scraped: the peer list, the Lamport clock, the health score,
and the counters memberlist keeps as it works (C{Memberlist.stats}, a
C{Counter} the hot paths increment; see L{cluster.gossip.net} and
L{cluster.gossip.messenger}).  Only the time observers take to hear of a
change is recorded as it happens, in a histogram here.  Reading takes no
lock, so scrape on the reactor thread (as L{cluster.web.site} does), never with
C{prometheus_client}'s thread-pooled Twisted resource or HTTP server.

Every metric carries the label C{cluster_name}: the node's gossip label
(C{Options.cluster_name}), as ckit uses it.

The names
=========

ckit's and Alloy's, so that Alloy's cluster dashboards and alerts work:

  - C{cluster_node_info{state}}: 1, with our peer state as C{state}
    (C{viewer}, C{participant}, C{terminating}).
  - C{cluster_node_peers{state}}: peers by state, ourselves included,
    every state always present (as ckit counts them).
  - C{cluster_node_lamport_time}: our Lamport clock.
  - C{cluster_node_update_observers}: observers registered.
  - C{cluster_node_updating}: 1 while observers are being told of a change.
  - C{cluster_node_update_duration_seconds}: histogram of the time
    observers took to be told of a change (Go's default buckets).
  - C{cluster_node_gossip_received_events_total{event}}: ckit's events,
    every one always present: C{state_change_message},
    C{unknown_message}, C{get_local_state}, C{merge_remote_state},
    C{node_join}, C{node_leave}, C{node_update}, C{node_conflict}.
  - C{cluster_node_gossip_broadcasts_total{event}}: state messages we
    passed on (C{state_change_message}), counted where ckit counts them.
  - C{cluster_node_gossip_health_score}, C{cluster_node_gossip_proto_version},
    C{cluster_node_gossip_alive_peers} (alive and suspect members,
    ourselves included: memberlist's C{NumMembers}).
  - ckit's transport metrics, which Alloy's node dashboard plots, fed from
    our UDP/TCP transport: C{cluster_transport_rx_packets_total},
    C{cluster_transport_rx_bytes_total},
    C{cluster_transport_rx_packets_failed_total},
    C{cluster_transport_tx_packets_total},
    C{cluster_transport_tx_bytes_total},
    C{cluster_transport_tx_packets_failed_total},
    C{cluster_transport_streams} (streams we opened that await their
    reply), C{cluster_transport_stream_rx_packets_total},
    C{cluster_transport_stream_rx_bytes_total},
    C{cluster_transport_stream_rx_packets_failed_total},
    C{cluster_transport_stream_tx_packets_total},
    C{cluster_transport_stream_tx_bytes_total},
    C{cluster_transport_stream_tx_packets_failed_total}.
  - ckit's packet queue gauges, which Alloy's node dashboard plots as
    "Pending packet queue": C{cluster_transport_rx_packet_queue_length}
    (datagrams the transport holds received but not yet handled) and
    C{cluster_transport_tx_packet_queue_length} (given to it but not yet
    sent), read from the transport's C{packet_queue_lengths()}.  Our
    socket transport holds none, so both are truly 0 on real sockets
    (L{cluster.gossip.transport.NetTransport.packet_queue_lengths} says
    why); on the simulated network the rx queue holds what reached a
    starved host and waits to be handled.

Where we differ from ckit: C{cluster_node_info},
C{cluster_node_lamport_time} and the C{cluster_transport_*} metrics carry
C{cluster_name} too (ckit's transport metrics have no labels, and it drops
C{cluster_name} from the other two, yet Alloy's alerts join
C{cluster_node_info} on C{cluster_name}); C{cluster_node_info} shows
C{viewer} from the start (ckit shows an empty state until the first
change); and the counters are present at 0 before their first event.

Ours, in the same namespace, for what memberlist reports through
go-metrics (its name in brackets); seconds, not milliseconds:

  - C{cluster_node_gossip_probe_duration_seconds}: histogram of probe
    rounds, from the ping to the first ack or the round's deadline
    (C{memberlist.probeNode}).
  - C{cluster_node_gossip_probes_total}, C{..._probes_failed_total} (no
    ack: the member is suspected), C{..._probes_degraded_total} (rounds
    stretched by our health score: C{memberlist.degraded.probe}),
    C{..._tcp_pings_failed_total}.
  - C{cluster_node_gossip_push_pulls_total{direction}} (C{in}: served,
    C{out}: ours completed), C{..._push_pulls_failed_total} (periodic ones
    of ours that failed).
  - C{cluster_node_gossip_gossip_messages_total}: broadcasts packed and
    sent to one member at a gossip tick.
  - C{cluster_node_gossip_messages_received_total{type}},
    C{cluster_node_gossip_messages_sent_total{type}}: protocol messages by
    type (C{ping}, C{ack}, C{alive}, C{suspect}, C{dead}, C{push_pull},
    C{user}, ...), in datagrams and on streams, piggybacked broadcasts
    included (C{memberlist.msg.*}, C{memberlist.udp.*}, C{memberlist.tcp.*}).
  - C{cluster_node_gossip_dropped_total{reason}}: input dropped: in the
    wrappers (C{label}, C{decrypt}, C{crc}, C{compound}, C{compress}),
    undecodable (C{decode}, C{type}, C{version}), over a limit (C{size},
    C{meta}, C{name}), refused streams (C{stream_timeout},
    C{too_many_streams}, C{tls}), and C{wrong_node}, C{protocol},
    C{handler} (see L{cluster.gossip.net} and L{cluster.gossip.transport}).
  - C{cluster_node_gossip_members{state}}: members in our table by state,
    C{alive}, C{suspect}, C{dead}, C{left} (C{memberlist.node.instances}).
  - C{cluster_node_gossip_member_events_total{event}}: C{suspected},
    C{declared_dead}, C{refuted}, C{reaped}.
  - C{cluster_node_gossip_queued_broadcasts{queue}}: broadcasts waiting,
    memberlist's own (C{membership}, C{memberlist.queue.broadcasts}) and
    the node's peer states (C{state}).
  - C{cluster_node_gossip_dropped_broadcasts_total{queue}}: broadcasts
    dropped from a full queue (see L{cluster.gossip.broadcast}).
  - C{cluster_node_gossip_state_events_total{event}}: what the peer state
    table counts beyond ckit: C{stale_state} (a state message no newer than
    the one stored), C{unknown_state} (push/pull entries in a state we do
    not know), C{state_reannounced} (our state gossiped again because a
    peer lacked it; see L{cluster.ckit.node}).

C{cluster_ready_for_traffic} and C{cluster_minimum_size} belong to the
cluster service (L{cluster.alloy.service}), registered on the same registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import attrs
from prometheus_client import Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from cluster.gossip.members import MemberState
from cluster.gossip.probe import round_histogram
from cluster.peer import PeerState

if TYPE_CHECKING:
    from cluster.ckit.node import Node

_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily)

__all__ = ["RECEIVED_EVENTS", "UPDATE_BUCKETS", "NodeMetrics"]

CLUSTER_NAME = "cluster_name"

RECEIVED_EVENTS = (
    "state_change_message",
    "unknown_message",
    "get_local_state",
    "merge_remote_state",
    "node_join",
    "node_leave",
    "node_update",
    "node_conflict",
)
"""
ckit's values of the C{event} label of
C{cluster_node_gossip_received_events_total}, the keys of
C{Node.gossip_events} that it reports.
"""

UPDATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""
The buckets of C{cluster_node_update_duration_seconds}: Go's
C{prometheus.DefBuckets}, as ckit's.
"""

# (name, doc, the stats keys it adds up): ckit's transport metrics.
_TRANSPORT_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "cluster_transport_rx_packets_total",
        "Total number of gossip transport packets read",
        ("packets.in",),
    ),
    (
        "cluster_transport_rx_bytes_total",
        "Total number of gossip transport bytes read",
        ("bytes.in",),
    ),
    (
        "cluster_transport_rx_packets_failed_total",
        "Total number of gossip transport packets read with a part that "
        "was dropped (see cluster_node_gossip_dropped_total)",
        ("packets.in.failed",),
    ),
    (
        "cluster_transport_tx_packets_total",
        "Total number of gossip transport packets written (failed or otherwise)",
        ("packets.out",),
    ),
    (
        "cluster_transport_tx_bytes_total",
        "Total number of gossip transport bytes written (failed or otherwise)",
        ("bytes.out",),
    ),
    (
        "cluster_transport_tx_packets_failed_total",
        "Total number of gossip transport sends that failed before reaching "
        "the socket (compression or encryption)",
        ("send.failed",),
    ),
    (
        "cluster_transport_stream_rx_packets_total",
        "Total number of gossip transport stream messages read (requests "
        "accepted and replies to ours)",
        ("streams.in", "streams.replies.in"),
    ),
    (
        "cluster_transport_stream_rx_bytes_total",
        "Total number of gossip transport stream bytes read",
        ("stream_bytes.in",),
    ),
    (
        "cluster_transport_stream_rx_packets_failed_total",
        "Total number of gossip transport stream requests that could not be read",
        ("streams.in.failed",),
    ),
    (
        "cluster_transport_stream_tx_packets_total",
        "Total number of gossip transport stream messages written (requests "
        "and replies)",
        ("streams.out", "streams.replies.out"),
    ),
    (
        "cluster_transport_stream_tx_bytes_total",
        "Total number of gossip transport stream bytes written",
        ("stream_bytes.out",),
    ),
    (
        "cluster_transport_stream_tx_packets_failed_total",
        "Total number of gossip transport stream exchanges we started that "
        "failed (no connection, timeout, or no readable reply)",
        ("streams.out.failed",),
    ),
)

# (name, doc, stats key): memberlist's counters without labels.
_GOSSIP_COUNTERS: tuple[tuple[str, str, str], ...] = (
    (
        "cluster_node_gossip_probes_total",
        "Total number of probe rounds started.",
        "probes",
    ),
    (
        "cluster_node_gossip_probes_failed_total",
        "Total number of probe rounds that ended without an ack, so the "
        "member was suspected.",
        "probes.failed",
    ),
    (
        "cluster_node_gossip_probes_degraded_total",
        "Total number of probe rounds started with a deadline stretched by "
        "our health score.",
        "probes.degraded",
    ),
    (
        "cluster_node_gossip_tcp_pings_failed_total",
        "Total number of TCP fallback pings that failed.",
        "tcp_ping.failed",
    ),
    (
        "cluster_node_gossip_push_pulls_failed_total",
        "Total number of periodic push/pull exchanges we started that failed.",
        "push_pull.failed",
    ),
    (
        "cluster_node_gossip_gossip_messages_total",
        "Total number of gossip sends: pending broadcasts packed for one "
        "member at a gossip tick.",
        "gossip.out",
    ),
)

_MEMBER_EVENTS = ("suspected", "declared_dead", "refuted", "reaped")

# Stats keys grouped under one labelled family: (prefix, name, doc, label).
_STATS_BY_PREFIX: tuple[tuple[str, str, str, str], ...] = (
    (
        "messages.in.",
        "cluster_node_gossip_messages_received_total",
        "Total number of gossip protocol messages received, by type.",
        "type",
    ),
    (
        "messages.out.",
        "cluster_node_gossip_messages_sent_total",
        "Total number of gossip protocol messages sent, by type.",
        "type",
    ),
    (
        "dropped.",
        "cluster_node_gossip_dropped_total",
        "Total number of gossip inputs dropped, by reason.",
        "reason",
    ),
)


@attrs.define(eq=False)
class NodeMetrics:
    """
    The Prometheus collector of one node (see the module docstring for
    every metric); register it with C{registry.register(node.metrics)}.

    @ivar node: the node reported on, read when the registry is scraped.
    @ivar cluster_name: the value of every metric's C{cluster_name} label.
    """

    node: Node = attrs.field(repr=False)
    cluster_name: str
    _update_duration: Histogram = attrs.field(init=False, repr=False)
    _update_child: Histogram = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Unregistered: it reaches a registry only through collect().
        self._update_duration = Histogram(
            "cluster_node_update_duration_seconds",
            "Histogram of the latency it took to process a change to the "
            "cluster state.",
            labelnames=(CLUSTER_NAME,),
            buckets=UPDATE_BUCKETS,
            registry=None,
        )
        # Made now so that the histogram shows zeros before the first change.
        self._update_child = self._update_duration.labels(self.cluster_name)

    def observe_update(self, seconds: float) -> None:
        """
        Record how long observers took to be told of one change (a negative
        value, a clock stepped back, counts as 0).
        """
        self._update_child.observe(max(0.0, seconds))

    def describe(self) -> list[Metric]:
        """
        Every metric family this collector yields, which the registry checks
        against those already registered.
        """
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        """
        The current value of every metric.
        """
        yield from self._node()
        yield from self._memberlist()
        stats = self.node.memberlist.stats
        yield from self._transport(stats)
        yield from self._gossip(stats)

    # --- building families ---

    def _family(
        self,
        kind: type[_Family],
        name: str,
        doc: str,
        label: str,
        values: Iterable[tuple[str, float]],
    ) -> _Family:
        """
        A family labelled C{cluster_name} and C{label}, one sample per
        C{(value of label, value)}.
        """
        family = kind(name, doc, labels=[CLUSTER_NAME, label])
        for value_of_label, value in values:
            family.add_metric([self.cluster_name, value_of_label], value)
        return family

    def _single(
        self, kind: type[_Family], name: str, doc: str, value: float
    ) -> _Family:
        """
        A family labelled C{cluster_name} only, with one sample.
        """
        family = kind(name, doc, labels=[CLUSTER_NAME])
        family.add_metric([self.cluster_name], value)
        return family

    def _histogram(
        self,
        name: str,
        doc: str,
        buckets: Sequence[tuple[float, int]],
        total: float,
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=[CLUSTER_NAME])
        family.add_metric(
            [self.cluster_name],
            [(floatToGoString(bound), count) for bound, count in buckets],
            total,
        )
        return family

    # --- ckit's ---

    def _node(self) -> Iterator[Metric]:
        node = self.node
        current = node.current_state()
        yield self._family(
            GaugeMetricFamily,
            "cluster_node_info",
            "Info about the local node. Label values will change as the node "
            "changes state.",
            "state",
            [(str(current), 1)],
        )
        by_state = Counter(peer.state for peer in node.peers())
        yield self._family(
            GaugeMetricFamily,
            "cluster_node_peers",
            "Current number of healthy peers by state",
            "state",
            [(str(state), by_state[state]) for state in PeerState],
        )
        yield self._single(
            GaugeMetricFamily,
            "cluster_node_lamport_time",
            "The current lamport time of the node.",
            node.lamport_time(),
        )
        yield self._single(
            GaugeMetricFamily,
            "cluster_node_update_observers",
            "Number of internal observers waiting for changes to cluster state.",
            node.observer_count(),
        )
        yield self._single(
            GaugeMetricFamily,
            "cluster_node_updating",
            "1 if the node is currently processing a change to the cluster state.",
            1 if node.updating else 0,
        )
        yield from self._update_duration.collect()
        events = node.gossip_events
        yield self._family(
            CounterMetricFamily,
            "cluster_node_gossip_received_events_total",
            "Total number of gossip messages handled by the node.",
            "event",
            [(event, events[event]) for event in RECEIVED_EVENTS],
        )
        yield self._family(
            CounterMetricFamily,
            "cluster_node_gossip_broadcasts_total",
            "Total number of gossip messages broadcasted by the node.",
            "event",
            [("state_change_message", node.gossip_broadcasts["state_change_message"])],
        )
        ours = {"stale_state": 0, "unknown_state": 0, "state_reannounced": 0}
        ours.update((k, v) for k, v in events.items() if k not in RECEIVED_EVENTS)
        yield self._family(
            CounterMetricFamily,
            "cluster_node_gossip_state_events_total",
            "Total number of peer state table outcomes beyond ckit's events "
            "(stale_state, unknown_state, state_reannounced).",
            "event",
            sorted(ours.items()),
        )

    def _memberlist(self) -> Iterator[Metric]:
        memberlist = self.node.memberlist
        yield self._single(
            GaugeMetricFamily,
            "cluster_node_gossip_proto_version",
            "Gossip protocol version used by nodes to maintain the cluster",
            memberlist.config.protocol_version,
        )
        yield self._single(
            GaugeMetricFamily,
            "cluster_node_gossip_health_score",
            "Health value of a node; lower values means healthier. 0 is the minimum.",
            memberlist.health_score(),
        )
        yield self._single(
            GaugeMetricFamily,
            "cluster_node_gossip_alive_peers",
            "How many alive gossip peers a node has, including the local node.",
            memberlist.num_members(),
        )

    # --- ckit's transport names, from memberlist's counters ---

    def _transport(self, stats: Counter[str]) -> Iterator[Metric]:
        for name, doc, keys in _TRANSPORT_COUNTERS:
            yield self._single(
                CounterMetricFamily, name, doc, sum(stats[key] for key in keys)
            )
        yield self._single(
            GaugeMetricFamily,
            "cluster_transport_streams",
            "Current number of gossip transport streams we opened that await "
            "their reply",
            stats["streams.open"],
        )
        rx_queue, tx_queue = self.node.memberlist.transport.packet_queue_lengths()
        yield self._single(
            GaugeMetricFamily,
            "cluster_transport_rx_packet_queue_length",
            "Current number of unprocessed incoming packets",
            rx_queue,
        )
        yield self._single(
            GaugeMetricFamily,
            "cluster_transport_tx_packet_queue_length",
            "Current number of unprocessed outgoing packets",
            tx_queue,
        )

    # --- memberlist's, in our namespace ---

    def _gossip(self, stats: Counter[str]) -> Iterator[Metric]:
        memberlist = self.node.memberlist
        buckets, total = round_histogram(stats)
        yield self._histogram(
            "cluster_node_gossip_probe_duration_seconds",
            "Histogram of probe rounds, from the ping to the first ack or the "
            "round's deadline.",
            buckets,
            total,
        )
        for name, doc, key in _GOSSIP_COUNTERS:
            yield self._single(CounterMetricFamily, name, doc, stats[key])
        yield self._family(
            CounterMetricFamily,
            "cluster_node_gossip_push_pulls_total",
            "Total number of push/pull exchanges: served (in) and ours "
            "completed (out).",
            "direction",
            [("in", stats["push_pull.in"]), ("out", stats["push_pull.out"])],
        )
        yield self._family(
            CounterMetricFamily,
            "cluster_node_gossip_member_events_total",
            "Total number of membership changes seen by this node (suspected, "
            "declared_dead, refuted, reaped).",
            "event",
            [(event, stats[event]) for event in _MEMBER_EVENTS],
        )
        grouped: dict[str, list[tuple[str, float]]] = {
            prefix: [] for prefix, *_ in _STATS_BY_PREFIX
        }
        for key, value in stats.items():
            for prefix in grouped:
                if key.startswith(prefix):
                    grouped[prefix].append((key[len(prefix) :], value))
        for prefix, name, doc, label in _STATS_BY_PREFIX:
            yield self._family(
                CounterMetricFamily, name, doc, label, sorted(grouped[prefix])
            )
        by_state = Counter(member.state for member in memberlist.members())
        yield self._family(
            GaugeMetricFamily,
            "cluster_node_gossip_members",
            "Current number of members in the gossip member table by state.",
            "state",
            [(str(state), by_state[state]) for state in MemberState],
        )
        yield self._family(
            GaugeMetricFamily,
            "cluster_node_gossip_queued_broadcasts",
            "Current number of broadcasts waiting to be gossiped: membership "
            "changes and peer states.",
            "queue",
            [
                ("membership", len(memberlist.broadcasts)),
                ("state", len(self.node.states.broadcasts)),
            ],
        )
        yield self._family(
            CounterMetricFamily,
            "cluster_node_gossip_dropped_broadcasts_total",
            "Total number of broadcasts dropped because their queue was full.",
            "queue",
            [
                ("membership", memberlist.broadcasts.dropped),
                ("state", self.node.states.broadcasts.dropped),
            ],
        )
