"""
L{NodeMetrics}: the Prometheus collector of one cluster node, as ckit's
C{Node.Metrics()}, and L{METRICS}, the table that declares every metric it
exposes.

A node knows nothing of Prometheus: it counts (L{cluster.ckit.counters},
L{cluster.gossip.counters}), and the collector reads the counters and the
node's state when the registry is scraped.  Nothing is registered anywhere
until the owner of a registry does so, and two nodes in one process each go
to a registry of their own::

    registry = CollectorRegistry()
    registry.register(NodeMetrics(node))

Registering a second collector of the same node (or of another node) on one
registry raises C{prometheus_client.registry.DuplicateTimeseries}, a
C{ValueError} naming the metrics, because L{NodeMetrics.describe} lists
them all.  Reading takes no lock, so scrape on the reactor thread (as
L{cluster.web.site} does), never with C{prometheus_client}'s thread-pooled
Twisted resource or HTTP server.

The names are ckit's and Alloy's, so that Alloy's cluster dashboards and
alerts work, and ours in the same namespace for what memberlist reports
through go-metrics (in seconds, not milliseconds).  Every metric carries
the label C{cluster_name}: the node's gossip label (C{Options.cluster_name}).
Counters are present at 0 before their first event, but for those labelled
by message type or drop reason, which appear once counted.  Where this
differs from ckit is in C{docs/differences.md}; L{metric_reference} renders
the table of C{docs/reference.md}.

C{cluster_ready_for_traffic} and C{cluster_minimum_size} belong to the
cluster service (L{cluster.alloy.service}), registered on the same registry.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from cluster.ckit.counters import NodeCounters
from cluster.ckit.node import Node
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.counters import (
    CounterRecord,
    DropReason,
    DurationHistogram,
    GossipCounters,
)
from cluster.gossip.members import MemberState
from cluster.gossip.wire import MessageType
from cluster.peer import PeerState

__all__ = [
    "CLUSTER_NAME",
    "METRICS",
    "MetricKind",
    "MetricSpec",
    "NodeMetrics",
    "metric_reference",
]

CLUSTER_NAME = "cluster_name"

Reading = float | Iterable[tuple[str, float]] | DurationHistogram
"""
What a metric reads from a node: one value, C{(label value, value)} pairs,
or a histogram.
"""


class MetricKind(enum.Enum):
    """
    A metric family's Prometheus type.
    """

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


COUNTER = MetricKind.COUNTER
GAUGE = MetricKind.GAUGE
HISTOGRAM = MetricKind.HISTOGRAM


@attrs.frozen
class MetricSpec:
    """
    One metric family: its name (as exposed: counters end in C{_total}),
    type, help text and labels, and where its value comes from.

    @ivar label: the label besides C{cluster_name}, if any; C{read} then
        gives C{(label value, value)} pairs.
    @ivar read: reads the value from the node when the registry is
        scraped; C{None} for a metric its owner sets (the service's gauges).
    @ivar created: also expose C{<name>_created}, the time the collector
        was made, as C{prometheus_client}'s own histograms do.
    """

    name: str
    kind: MetricKind
    help: str
    label: str | None = None
    read: Callable[[Node], Reading] | None = attrs.field(default=None, kw_only=True)
    created: bool = attrs.field(default=False, kw_only=True)

    def labels(self) -> tuple[str, ...]:
        """
        Every label of the family's samples, C{cluster_name} first (and
        C{le} of a histogram's buckets left out).
        """
        return (CLUSTER_NAME,) if self.label is None else (CLUSTER_NAME, self.label)

    def family(self, node: Node, cluster_name: str, created: float) -> Metric:
        """
        The family with its samples read from C{node} now.

        @raise TypeError: when C{read} is missing or gives a value of
            another shape than the kind and labels say.
        """
        if self.read is None:
            raise TypeError(f"{self.name} is set by its owner, not read")
        value = self.read(node)
        if isinstance(value, DurationHistogram):
            if self.kind is not HISTOGRAM or self.label is not None:
                raise TypeError(f"{self.name} read a histogram")
            return self._histogram(value, cluster_name, created)
        family: CounterMetricFamily | GaugeMetricFamily
        if self.kind is COUNTER:
            family = CounterMetricFamily(self.name, self.help, labels=self.labels())
        elif self.kind is GAUGE:
            family = GaugeMetricFamily(self.name, self.help, labels=self.labels())
        else:
            raise TypeError(f"{self.name} read no histogram")
        if isinstance(value, (int, float)):
            if self.label is not None:
                raise TypeError(f"{self.name} read one value, not one per label")
            family.add_metric([cluster_name], value)
            return family
        if self.label is None:
            raise TypeError(f"{self.name} read values by label, but has none")
        for value_of_label, sample in value:
            family.add_metric([cluster_name, value_of_label], sample)
        return family

    def _histogram(
        self, histogram: DurationHistogram, cluster_name: str, created: float
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels())
        family.add_metric(
            [cluster_name],
            [
                (floatToGoString(bound), count)
                for bound, count in histogram.cumulative()
            ],
            histogram.total,
        )
        if self.created:
            family.add_sample(
                f"{self.name}_created", {CLUSTER_NAME: cluster_name}, created
            )
        return family


def _gossip(node: Node) -> GossipCounters:
    return node.memberlist.counters


def _ckit(node: Node) -> NodeCounters:
    return node.counters


def _by_field(record: CounterRecord) -> list[tuple[str, float]]:
    """
    Every int field of C{record}, labelled by its name, in declaration
    order.
    """
    kind = type(record)
    assert attrs.has(kind), kind
    values = [(field.name, getattr(record, field.name)) for field in attrs.fields(kind)]
    return [(name, value) for name, value in values if isinstance(value, int)]


def _by_key(counts: Counter[str]) -> list[tuple[str, float]]:
    """
    The keys counted so far, sorted.
    """
    return sorted(counts.items())


def _messages(
    counts: Counter[MessageType], unknown: int = 0
) -> list[tuple[str, float]]:
    labelled = Counter({kind.name.lower(): n for kind, n in counts.items()})
    if unknown:
        labelled["unknown"] = unknown
    return _by_key(labelled)


def _dropped(node: Node) -> list[tuple[str, float]]:
    # Every reason from the start, 0s included: an alert on increase() sees
    # the first drop of a reason too.
    dropped = _gossip(node).dropped
    return [(reason.value, dropped[reason]) for reason in DropReason]


def _by_state(
    found: Iterable[enum.Enum], every: Iterable[enum.Enum]
) -> list[tuple[str, float]]:
    """
    How many of C{found} are in each state of C{every}, 0s included.
    """
    counted = Counter(found)
    return [(str(state), counted[state]) for state in every]


def _by_queue(read: Callable[[BroadcastQueue], int]) -> Callable[[Node], Reading]:
    """
    Reads C{read} of the node's two broadcast queues, labelled: the
    membership changes and the peer states.
    """
    return lambda node: [
        ("membership", read(node.memberlist.broadcasts)),
        ("state", read(node.states.broadcasts)),
    ]


METRICS: tuple[MetricSpec, ...] = (
    # --- ckit's node metrics ---
    MetricSpec(
        "cluster_node_info",
        GAUGE,
        "Info about the local node. Label values will change as the node "
        "changes state.",
        "state",
        read=lambda node: [(str(node.current_state()), 1)],
    ),
    MetricSpec(
        "cluster_node_peers",
        GAUGE,
        "Current number of healthy peers by state",
        "state",
        read=lambda node: _by_state((p.state for p in node.peers()), PeerState),
    ),
    MetricSpec(
        "cluster_node_lamport_time",
        GAUGE,
        "The current lamport time of the node.",
        read=lambda node: node.lamport_time(),
    ),
    MetricSpec(
        "cluster_node_update_observers",
        GAUGE,
        "Number of internal observers waiting for changes to cluster state.",
        read=lambda node: node.observer_count(),
    ),
    MetricSpec(
        "cluster_node_updating",
        GAUGE,
        "1 if the node is currently processing a change to the cluster state.",
        read=lambda node: 1 if node.updating else 0,
    ),
    MetricSpec(
        "cluster_node_update_duration_seconds",
        HISTOGRAM,
        "Histogram of the latency it took to process a change to the cluster state.",
        read=lambda node: _ckit(node).update_durations,
        created=True,
    ),
    MetricSpec(
        "cluster_node_gossip_received_events_total",
        COUNTER,
        "Total number of gossip messages handled by the node.",
        "event",
        read=lambda node: _by_field(_ckit(node).received),
    ),
    MetricSpec(
        "cluster_node_gossip_broadcasts_total",
        COUNTER,
        "Total number of gossip messages broadcasted by the node.",
        "event",
        read=lambda node: [("state_change_message", _ckit(node).state_broadcasts)],
    ),
    MetricSpec(
        "cluster_node_gossip_state_events_total",
        COUNTER,
        "Total number of peer state table outcomes beyond ckit's events "
        "(stale_state, unknown_state, state_reannounced).",
        "event",
        read=lambda node: sorted(_by_field(_ckit(node).states)),
    ),
    # --- ckit's memberlist gauges ---
    MetricSpec(
        "cluster_node_gossip_proto_version",
        GAUGE,
        "Gossip protocol version used by nodes to maintain the cluster",
        read=lambda node: node.memberlist.config.protocol_version,
    ),
    MetricSpec(
        "cluster_node_gossip_health_score",
        GAUGE,
        "Health value of a node; lower values means healthier. 0 is the minimum.",
        read=lambda node: node.memberlist.health_score(),
    ),
    MetricSpec(
        "cluster_node_gossip_alive_peers",
        GAUGE,
        "How many alive gossip peers a node has, including the local node.",
        read=lambda node: node.memberlist.num_members(),
    ),
    # --- ckit's transport metrics, which Alloy's node dashboard plots ---
    MetricSpec(
        "cluster_transport_rx_packets_total",
        COUNTER,
        "Total number of gossip transport packets read",
        read=lambda node: _gossip(node).traffic.packets_in,
    ),
    MetricSpec(
        "cluster_transport_rx_bytes_total",
        COUNTER,
        "Total number of gossip transport bytes read",
        read=lambda node: _gossip(node).traffic.bytes_in,
    ),
    MetricSpec(
        "cluster_transport_rx_packets_failed_total",
        COUNTER,
        "Total number of gossip transport packets read with a part that "
        "was dropped (see cluster_node_gossip_dropped_total)",
        read=lambda node: _gossip(node).traffic.packets_in_failed,
    ),
    MetricSpec(
        "cluster_transport_tx_packets_total",
        COUNTER,
        "Total number of gossip transport packets written (failed or otherwise)",
        read=lambda node: _gossip(node).traffic.packets_out,
    ),
    MetricSpec(
        "cluster_transport_tx_bytes_total",
        COUNTER,
        "Total number of gossip transport bytes written (failed or otherwise)",
        read=lambda node: _gossip(node).traffic.bytes_out,
    ),
    MetricSpec(
        "cluster_transport_tx_packets_failed_total",
        COUNTER,
        "Total number of gossip transport sends that failed before reaching "
        "the socket (compression or encryption)",
        read=lambda node: _gossip(node).traffic.send_failed,
    ),
    MetricSpec(
        "cluster_transport_stream_rx_packets_total",
        COUNTER,
        "Total number of gossip transport stream messages read (requests "
        "accepted and replies to ours)",
        read=lambda node: (
            _gossip(node).traffic.streams_in + _gossip(node).traffic.stream_replies_in
        ),
    ),
    MetricSpec(
        "cluster_transport_stream_rx_bytes_total",
        COUNTER,
        "Total number of gossip transport stream bytes read",
        read=lambda node: _gossip(node).traffic.stream_bytes_in,
    ),
    MetricSpec(
        "cluster_transport_stream_rx_packets_failed_total",
        COUNTER,
        "Total number of gossip transport stream requests that could not be read",
        read=lambda node: _gossip(node).traffic.streams_in_failed,
    ),
    MetricSpec(
        "cluster_transport_stream_tx_packets_total",
        COUNTER,
        "Total number of gossip transport stream messages written (requests "
        "and replies)",
        read=lambda node: (
            _gossip(node).traffic.streams_out + _gossip(node).traffic.stream_replies_out
        ),
    ),
    MetricSpec(
        "cluster_transport_stream_tx_bytes_total",
        COUNTER,
        "Total number of gossip transport stream bytes written",
        read=lambda node: _gossip(node).traffic.stream_bytes_out,
    ),
    MetricSpec(
        "cluster_transport_stream_tx_packets_failed_total",
        COUNTER,
        "Total number of gossip transport stream exchanges we started that "
        "failed (no connection, timeout, or no readable reply)",
        read=lambda node: _gossip(node).traffic.streams_out_failed,
    ),
    MetricSpec(
        "cluster_transport_streams",
        GAUGE,
        "Current number of gossip transport streams we opened that await their reply",
        read=lambda node: _gossip(node).traffic.streams_open,
    ),
    # What the transport holds: 0 on real sockets, which is true (see
    # NetTransport.packet_queue_lengths); on the simulated network, the
    # datagrams that reached a starved host and wait to be handled.
    MetricSpec(
        "cluster_transport_rx_packet_queue_length",
        GAUGE,
        "Current number of unprocessed incoming packets",
        read=lambda node: node.memberlist.transport.packet_queue_lengths()[0],
    ),
    MetricSpec(
        "cluster_transport_tx_packet_queue_length",
        GAUGE,
        "Current number of unprocessed outgoing packets",
        read=lambda node: node.memberlist.transport.packet_queue_lengths()[1],
    ),
    # --- memberlist's (go-metrics name in brackets), in our namespace ---
    MetricSpec(
        # memberlist.probeNode
        "cluster_node_gossip_probe_duration_seconds",
        HISTOGRAM,
        "Histogram of probe rounds, from the ping to the first ack or the "
        "round's deadline.",
        read=lambda node: _gossip(node).probes.rounds,
    ),
    MetricSpec(
        "cluster_node_gossip_probes_total",
        COUNTER,
        "Total number of probe rounds started.",
        read=lambda node: _gossip(node).probes.started,
    ),
    MetricSpec(
        "cluster_node_gossip_probes_failed_total",
        COUNTER,
        "Total number of probe rounds that ended without an ack, so the "
        "member was suspected.",
        read=lambda node: _gossip(node).probes.failed,
    ),
    MetricSpec(
        # memberlist.degraded.probe
        "cluster_node_gossip_probes_degraded_total",
        COUNTER,
        "Total number of probe rounds started with a deadline stretched by "
        "our health score.",
        read=lambda node: _gossip(node).probes.degraded,
    ),
    MetricSpec(
        "cluster_node_gossip_tcp_pings_failed_total",
        COUNTER,
        "Total number of TCP fallback pings that failed.",
        read=lambda node: _gossip(node).probes.tcp_pings_failed,
    ),
    MetricSpec(
        "cluster_node_gossip_push_pulls_failed_total",
        COUNTER,
        "Total number of periodic push/pull exchanges we started that failed.",
        read=lambda node: _gossip(node).push_pulls.failed,
    ),
    MetricSpec(
        "cluster_node_gossip_gossip_messages_total",
        COUNTER,
        "Total number of gossip sends: pending broadcasts packed for one "
        "member at a gossip tick.",
        read=lambda node: _gossip(node).messages.gossip_sends,
    ),
    MetricSpec(
        "cluster_node_gossip_push_pulls_total",
        COUNTER,
        "Total number of push/pull exchanges: served (in) and ours completed (out).",
        "direction",
        read=lambda node: [
            ("in", _gossip(node).push_pulls.served),
            ("out", _gossip(node).push_pulls.completed),
        ],
    ),
    MetricSpec(
        "cluster_node_gossip_member_events_total",
        COUNTER,
        "Total number of membership changes seen by this node (suspected, "
        "declared_dead, refuted, reaped).",
        "event",
        read=lambda node: _by_field(_gossip(node).members),
    ),
    MetricSpec(
        # memberlist.msg.*, memberlist.udp.*, memberlist.tcp.*
        "cluster_node_gossip_messages_received_total",
        COUNTER,
        "Total number of gossip protocol messages received, by type.",
        "type",
        read=lambda node: _messages(_gossip(node).messages.received),
    ),
    MetricSpec(
        "cluster_node_gossip_messages_sent_total",
        COUNTER,
        "Total number of gossip protocol messages sent, by type.",
        "type",
        read=lambda node: _messages(
            _gossip(node).messages.sent, _gossip(node).messages.sent_unknown
        ),
    ),
    MetricSpec(
        "cluster_node_gossip_dropped_total",
        COUNTER,
        "Total number of gossip inputs dropped, by reason.",
        "reason",
        read=_dropped,
    ),
    MetricSpec(
        # memberlist.node.instances
        "cluster_node_gossip_members",
        GAUGE,
        "Current number of members in the gossip member table by state.",
        "state",
        read=lambda node: _by_state(
            (m.state for m in node.memberlist.members()), MemberState
        ),
    ),
    MetricSpec(
        # memberlist.queue.broadcasts, and the node's peer states
        "cluster_node_gossip_queued_broadcasts",
        GAUGE,
        "Current number of broadcasts waiting to be gossiped: membership "
        "changes and peer states.",
        "queue",
        read=_by_queue(len),
    ),
    MetricSpec(
        "cluster_node_gossip_dropped_broadcasts_total",
        COUNTER,
        "Total number of broadcasts dropped because their queue was full.",
        "queue",
        read=_by_queue(lambda queue: queue.dropped),
    ),
)
"""
Every metric a node exposes, in the order it is exposed: the one place a
metric is declared.  The counters each one reads are typed fields of
L{GossipCounters} and L{NodeCounters}; a test fails when one of them feeds
no metric here.
"""


@attrs.define(eq=False)
class NodeMetrics:
    """
    The Prometheus collector of one node: every metric of L{METRICS}, read
    when the registry is scraped.

    @ivar node: the node reported on.
    @ivar cluster_name: the value of every metric's C{cluster_name} label;
        the node's gossip label by default, as ckit labels its metrics.
    @ivar created: when the collector was made (wall-clock seconds), for
        the C{_created} sample of the update duration histogram.
    """

    node: Node = attrs.field(repr=False)
    cluster_name: str = attrs.field(
        default=attrs.Factory(lambda self: self.node.config.label, takes_self=True)
    )
    created: float = attrs.field(factory=time.time, kw_only=True, repr=False)

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
        for spec in METRICS:
            yield spec.family(self.node, self.cluster_name, self.created)


def metric_reference(specs: Sequence[MetricSpec] = METRICS) -> str:
    """
    A Markdown table of C{specs}: every metric's name, type, labels and
    help text.
    """
    lines = ["| name | type | labels | help |", "|---|---|---|---|"]
    for spec in specs:
        labels = ", ".join(f"`{label}`" for label in spec.labels())
        text = spec.help.replace("|", "\\|")
        lines.append(f"| `{spec.name}` | {spec.kind.value} | {labels} | {text} |")
    return "\n".join(lines) + "\n"
