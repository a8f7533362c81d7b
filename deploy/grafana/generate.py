"""
Write the two Grafana dashboards of C{deploy/grafana/} and the panel table
of C{docs/observing.md} from the description below:
C{python deploy/grafana/generate.py}.

Each dashboard is a list of L{Panel}s, each with its PromQL L{Query}s and a
sentence saying what it shows; L{dashboard} lays them out and renders
Grafana's JSON, L{panel_table} the Markdown table.
C{tests/unit/test_dashboards.py} fails when a checked-in file differs from
what this script makes, and checks every query's metric names against the
metrics a node exports.

Every query selects its series with L{SELECTOR}: the template variables
C{$cluster}, C{$job} and C{$instance}, each in a regular-expression matcher,
filled from C{cluster_node_info}, which every node exports.  The script
needs nothing but C{attrs}, and imports nothing of C{cluster}.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent.parent / "docs" / "observing.md"
COMMAND = "python deploy/grafana/generate.py"
SECTION = re.compile(
    r"(<!-- BEGIN GENERATED DASHBOARDS[^\n]*-->\n)"
    r"(.*?)"
    r"(<!-- END GENERATED DASHBOARDS -->)",
    re.DOTALL,
)

#: The label matchers of every query: the pickers of the dashboard.  Each
#: variable sits in a regular-expression matcher, so that its "All" value
#: (C{.*}) also matches the series of a cluster without a name, whose
#: C{cluster_name} label is empty.
SELECTOR = 'cluster_name=~"$cluster", job=~"$job", instance=~"$instance"'
#: The window of every C{rate}: Grafana's, at least four scrape intervals.
WINDOW = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "twisted-cluster"
#: Grafana's grid is 24 columns wide.
GRID_WIDTH = 24


# --- the description's vocabulary ---


@attrs.frozen
class Query:
    """
    One PromQL query of a panel and the name of each series it draws.

    @ivar legend: Grafana's C{legendFormat}: C{{{label}}} is the value of
        that label.
    @ivar table: an instant query whose series become the rows of a table.
    """

    expr: str
    legend: str = ""
    table: bool = False


@attrs.frozen
class Panel:
    """
    One panel: a title, what it shows (the tooltip in Grafana and the last
    column of the docs' table), its queries and how it draws them.

    @ivar kind: C{timeseries}, C{stat} or C{table}.
    @ivar unit: Grafana's unit of the values (C{short}, C{s}, C{Bps}, ...).
    @ivar mappings: value -> text shown instead (for a stat of 0 or 1).
    @ivar text_mode: a stat's C{textMode}; C{name} shows the legend, not
        the value.
    """

    title: str
    shows: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    mappings: tuple[tuple[int, str, str], ...] = ()
    text_mode: str = "auto"


@attrs.frozen
class Picker:
    """
    A template variable whose values are those of C{label} on
    C{cluster_node_info}, narrowed by the pickers before it.
    """

    name: str
    title: str
    label: str
    matchers: str = ""
    multi: bool = True


@attrs.frozen
class Dashboard:
    """
    One dashboard: written to C{deploy/grafana/<file>}.
    """

    file: str
    uid: str
    title: str
    summary: str
    pickers: tuple[Picker, ...]
    panels: tuple[Panel, ...] = attrs.field(repr=False)


def series(metric: str, matchers: str = "") -> str:
    """
    C{metric} with the dashboard's L{SELECTOR} and C{matchers}.
    """
    extra = f", {matchers}" if matchers else ""
    return f"{metric}{{{SELECTOR}{extra}}}"


def rate(metric: str, by: str = "", matchers: str = "") -> str:
    """
    The per-second rate of the counter C{metric}, summed by the labels
    C{by} (all summed when empty).
    """
    return f"sum{_by(by)}(rate({series(metric, matchers)}[{WINDOW}]))"


def total(metric: str, by: str = "", how: str = "sum", matchers: str = "") -> str:
    """
    The gauge C{metric} aggregated with C{how} by the labels C{by}.
    """
    return f"{how}{_by(by)}({series(metric, matchers)})"


def quantile(q: float, histogram: str) -> Query:
    """
    The C{q}-quantile of the histogram C{histogram} over the window.
    """
    buckets = rate(f"{histogram}_bucket", "le")
    return Query(f"histogram_quantile({q}, {buckets})", f"p{round(q * 100)}")


def mean(histogram: str) -> Query:
    """
    The mean of the histogram C{histogram}'s observations over the window.
    """
    return Query(f"{rate(f'{histogram}_sum')} / {rate(f'{histogram}_count')}", "mean")


def _by(labels: str) -> str:
    return f" by ({labels}) " if labels else ""


def zero_when_none(expr: str, label: str) -> str:
    """
    C{expr}, or one series at 0 whose C{label} is C{none} when C{expr} has
    no series: for counters labelled by a value that appears once counted,
    so that a quiet cluster draws 0 rather than "No data".
    """
    return f'{expr} or on() label_replace(vector(0), "{label}", "none", "", "")'


READY = ((0, "not ready", "red"), (1, "ready", "green"))


# --- the overview: the cluster ---

OVERVIEW = Dashboard(
    file="overview.json",
    uid="twisted-cluster-overview",
    title="Twisted cluster / Overview",
    summary="The cluster as a whole: one series per node, or summed over the nodes.",
    pickers=(
        Picker("cluster", "Cluster", "cluster_name"),
        Picker("job", "Job", "job", 'cluster_name=~"$cluster"'),
        Picker(
            "instance", "Instance", "instance", 'cluster_name=~"$cluster", job=~"$job"'
        ),
    ),
    panels=(
        Panel(
            "Nodes",
            "How many nodes Prometheus scrapes in the selection.",
            (Query(f"count({series('cluster_node_info')})", "nodes"),),
            kind="stat",
            width=4,
            height=6,
        ),
        Panel(
            "Peer count spread",
            "The largest peer count of a node minus the smallest: 0 when every "
            "node sees the same number of peers (converged).",
            (
                Query(
                    f"max({total('cluster_node_peers', 'instance')}) "
                    f"- min({total('cluster_node_peers', 'instance')})",
                    "spread",
                ),
            ),
            kind="stat",
            width=4,
            height=6,
        ),
        Panel(
            "Ready for traffic",
            "Per node: whether its cluster service admits traffic (the minimum "
            "cluster size is reached, or its wait timed out).",
            (
                Query(
                    total("cluster_ready_for_traffic", "instance", "min"),
                    "{{instance}}",
                ),
            ),
            kind="stat",
            width=8,
            height=6,
            mappings=READY,
        ),
        Panel(
            "Node states",
            "Each node and the state it reports for itself (viewer, participant "
            "or terminating).",
            (
                Query(
                    total("cluster_node_info", "instance, state", "max"),
                    table=True,
                ),
            ),
            kind="table",
            width=8,
            height=6,
        ),
        Panel(
            "Peers by state, per node",
            "How many peers each node knows in each ckit state, itself included.",
            (
                Query(
                    total("cluster_node_peers", "instance, state"),
                    "{{instance}} {{state}}",
                ),
            ),
        ),
        Panel(
            "Convergence: peers seen by each node",
            "Each node's peer count: the lines lie on one another when the "
            "cluster has converged.",
            (Query(total("cluster_node_peers", "instance"), "{{instance}}"),),
        ),
        Panel(
            "Gossip members by state, per node",
            "The gossip layer's member table of each node: alive, suspect, dead "
            "and left members.",
            (
                Query(
                    total("cluster_node_gossip_members", "instance, state"),
                    "{{instance}} {{state}}",
                ),
            ),
        ),
        Panel(
            "Health score",
            "Each node's health score: 0 is healthy; it rises when the node "
            "misses acks and refutes suspicions, and stretches its probes.",
            (
                Query(
                    total("cluster_node_gossip_health_score", "instance", "max"),
                    "{{instance}}",
                ),
            ),
        ),
        Panel(
            "Gossip sends",
            "Per node: gossip messages sent per second, each carrying pending "
            "broadcasts to one member.",
            (
                Query(
                    rate("cluster_node_gossip_gossip_messages_total", "instance"),
                    "{{instance}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Push/pull exchanges",
            "Per node: full state exchanges per second, served (in) and "
            "completed (out), and those it started that failed.",
            (
                Query(
                    rate("cluster_node_gossip_push_pulls_total", "instance, direction"),
                    "{{instance}} {{direction}}",
                ),
                Query(
                    rate("cluster_node_gossip_push_pulls_failed_total", "instance"),
                    "{{instance}} failed",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Dropped gossip inputs by reason",
            "Gossip inputs the cluster refused per second, by reason: packets "
            "(label, decrypt, crc, decode, size, ...), streams and TLS "
            'handshakes; one series "none" at 0 when nothing was ever dropped.',
            (
                Query(
                    zero_when_none(
                        rate("cluster_node_gossip_dropped_total", "reason"), "reason"
                    ),
                    "{{reason}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Broadcasts queued",
            "Per node: broadcasts waiting to be gossiped, membership changes and "
            "peer states.",
            (
                Query(
                    total("cluster_node_gossip_queued_broadcasts", "instance, queue"),
                    "{{instance}} {{queue}}",
                ),
            ),
        ),
        Panel(
            "Transport packets",
            "Per node: gossip packets read (in) and written (out) per second.",
            (
                Query(
                    rate("cluster_transport_rx_packets_total", "instance"),
                    "{{instance}} in",
                ),
                Query(
                    rate("cluster_transport_tx_packets_total", "instance"),
                    "{{instance}} out",
                ),
            ),
            unit="pps",
        ),
        Panel(
            "Transport bytes",
            "Per node: gossip bytes read (in) and written (out) per second, "
            "packets and streams.",
            (
                Query(
                    f"{rate('cluster_transport_rx_bytes_total', 'instance')} + "
                    f"{rate('cluster_transport_stream_rx_bytes_total', 'instance')}",
                    "{{instance}} in",
                ),
                Query(
                    f"{rate('cluster_transport_tx_bytes_total', 'instance')} + "
                    f"{rate('cluster_transport_stream_tx_bytes_total', 'instance')}",
                    "{{instance}} out",
                ),
            ),
            unit="Bps",
        ),
        Panel(
            "Member events",
            "Membership changes seen across the cluster, per second: suspected, "
            "declared dead, refuted and reaped. Suspicions with refutations "
            "and no deaths mean flapping.",
            (
                Query(
                    rate("cluster_node_gossip_member_events_total", "event"),
                    "{{event}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Failed probes",
            "Per node: probe rounds per second that ended without an ack, so the "
            "member was suspected.",
            (
                Query(
                    rate("cluster_node_gossip_probes_failed_total", "instance"),
                    "{{instance}}",
                ),
            ),
            unit="ops",
        ),
    ),
)


# --- the node dashboard: one instance ---

PROBE_DURATION = "cluster_node_gossip_probe_duration_seconds"
UPDATE_DURATION = "cluster_node_update_duration_seconds"

NODE = Dashboard(
    file="node.json",
    uid="twisted-cluster-node",
    title="Twisted cluster / Node",
    summary="One node, picked by its instance.",
    pickers=(
        Picker("cluster", "Cluster", "cluster_name"),
        Picker("job", "Job", "job", 'cluster_name=~"$cluster"'),
        Picker(
            "instance",
            "Instance",
            "instance",
            'cluster_name=~"$cluster", job=~"$job"',
            multi=False,
        ),
    ),
    panels=(
        Panel(
            "State",
            "The state the node reports for itself: viewer, participant or "
            "terminating.",
            (Query(total("cluster_node_info", "state", "max"), "{{state}}"),),
            kind="stat",
            width=6,
            height=4,
            text_mode="name",
        ),
        Panel(
            "Ready for traffic",
            "Whether the node's cluster service admits traffic.",
            (Query(total("cluster_ready_for_traffic", how="min"), "ready"),),
            kind="stat",
            width=6,
            height=4,
            mappings=READY,
        ),
        Panel(
            "Minimum cluster size",
            "The cluster size the service waits for before it admits traffic "
            "(0: none).",
            (Query(total("cluster_minimum_size", how="max"), "minimum"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Health score",
            "0 is healthy; it rises when the node misses acks or refutes "
            "suspicions of itself, and stretches its probe timeouts.",
            (Query(total("cluster_node_gossip_health_score", how="max"), "score"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Peers by state",
            "The peers the node knows in each ckit state, itself included.",
            (Query(total("cluster_node_peers", "state"), "{{state}}"),),
            width=8,
        ),
        Panel(
            "Gossip members by state",
            "The gossip layer's member table: alive, suspect, dead and left "
            "members, and the alive count the node reports.",
            (
                Query(total("cluster_node_gossip_members", "state"), "{{state}}"),
                Query(
                    total("cluster_node_gossip_alive_peers", how="max"), "alive peers"
                ),
            ),
            width=8,
        ),
        Panel(
            "Lookup ring: eligible owners",
            "The peers the node's sharder hashes keys onto: writes (Op.READ_WRITE) "
            "among participants, reads (Op.READ) among participants and "
            "terminating peers. No metric counts a ring's tokens: Alloy's ring "
            "holds 512 per peer.",
            (
                Query(
                    total("cluster_node_peers", matchers='state="participant"'),
                    "read-write",
                ),
                Query(
                    total(
                        "cluster_node_peers",
                        matchers='state=~"participant|terminating"',
                    ),
                    "read",
                ),
            ),
            width=8,
        ),
        Panel(
            "Probe duration",
            "From the ping to the first ack or the round's deadline: median, "
            "90th and 99th percentile and mean over the window (NaN when no "
            "probe ended in it).",
            (
                quantile(0.5, PROBE_DURATION),
                quantile(0.9, PROBE_DURATION),
                quantile(0.99, PROBE_DURATION),
                mean(PROBE_DURATION),
            ),
            unit="s",
        ),
        Panel(
            "Probes",
            "Probe rounds per second: started, failed (the member was "
            "suspected), degraded (deadline stretched by the health score), "
            "and failed TCP fallback pings.",
            (
                Query(rate("cluster_node_gossip_probes_total"), "started"),
                Query(rate("cluster_node_gossip_probes_failed_total"), "failed"),
                Query(rate("cluster_node_gossip_probes_degraded_total"), "degraded"),
                Query(
                    rate("cluster_node_gossip_tcp_pings_failed_total"),
                    "TCP ping failed",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Messages sent by type",
            "Gossip protocol messages sent per second, by message type.",
            (
                Query(
                    rate("cluster_node_gossip_messages_sent_total", "type"), "{{type}}"
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Messages received by type",
            "Gossip protocol messages received per second, by message type.",
            (
                Query(
                    rate("cluster_node_gossip_messages_received_total", "type"),
                    "{{type}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Gossip sends and push/pulls",
            "Gossip messages sent per second; push/pull exchanges served (in), "
            "completed (out) and failed.",
            (
                Query(
                    rate("cluster_node_gossip_gossip_messages_total"), "gossip sends"
                ),
                Query(
                    rate("cluster_node_gossip_push_pulls_total", "direction"),
                    "push/pull {{direction}}",
                ),
                Query(
                    rate("cluster_node_gossip_push_pulls_failed_total"),
                    "push/pull failed",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Peer state gossip",
            "ckit's events per second: gossip messages handled, by event; peer "
            "states broadcast; and peer state outcomes (stale, unknown, "
            "re-announced).",
            (
                Query(
                    rate("cluster_node_gossip_received_events_total", "event"),
                    "{{event}}",
                ),
                Query(
                    rate("cluster_node_gossip_broadcasts_total", "event"), "broadcast"
                ),
                Query(
                    rate("cluster_node_gossip_state_events_total", "event"), "{{event}}"
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Dropped gossip inputs by reason",
            "Gossip inputs the node refused per second (packets, streams and "
            'TLS handshakes), by reason; one series "none" at 0 when nothing '
            "was ever dropped.",
            (
                Query(
                    zero_when_none(
                        rate("cluster_node_gossip_dropped_total", "reason"), "reason"
                    ),
                    "{{reason}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Member events",
            "Membership changes the node saw, per second: suspected, declared "
            "dead, refuted and reaped.",
            (
                Query(
                    rate("cluster_node_gossip_member_events_total", "event"),
                    "{{event}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Packets in/out",
            "Gossip packets read and written per second, and those that failed "
            "(a dropped part on the way in; compression or encryption on the "
            "way out).",
            (
                Query(rate("cluster_transport_rx_packets_total"), "in"),
                Query(rate("cluster_transport_tx_packets_total"), "out"),
                Query(rate("cluster_transport_rx_packets_failed_total"), "in failed"),
                Query(rate("cluster_transport_tx_packets_failed_total"), "out failed"),
            ),
            unit="pps",
        ),
        Panel(
            "Bytes in/out",
            "Gossip bytes read and written per second, packets and streams apart.",
            (
                Query(rate("cluster_transport_rx_bytes_total"), "packets in"),
                Query(rate("cluster_transport_tx_bytes_total"), "packets out"),
                Query(rate("cluster_transport_stream_rx_bytes_total"), "streams in"),
                Query(rate("cluster_transport_stream_tx_bytes_total"), "streams out"),
            ),
            unit="Bps",
        ),
        Panel(
            "Stream messages",
            "Stream (TCP) messages read and written per second, and the "
            "exchanges that failed either way.",
            (
                Query(rate("cluster_transport_stream_rx_packets_total"), "in"),
                Query(rate("cluster_transport_stream_tx_packets_total"), "out"),
                Query(
                    rate("cluster_transport_stream_rx_packets_failed_total"),
                    "in failed",
                ),
                Query(
                    rate("cluster_transport_stream_tx_packets_failed_total"),
                    "out failed",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Open streams and packet queues",
            "Streams the node opened that await their reply, and the "
            "transport's packet queue lengths (0 on real sockets: see the "
            "reference's notes).",
            (
                Query(total("cluster_transport_streams", how="max"), "open streams"),
                Query(
                    total("cluster_transport_rx_packet_queue_length", how="max"),
                    "rx queue",
                ),
                Query(
                    total("cluster_transport_tx_packet_queue_length", how="max"),
                    "tx queue",
                ),
            ),
        ),
        Panel(
            "Broadcasts queued",
            "Broadcasts waiting to be gossiped, membership changes and peer states.",
            (
                Query(
                    total("cluster_node_gossip_queued_broadcasts", "queue"), "{{queue}}"
                ),
            ),
        ),
        Panel(
            "Broadcasts dropped",
            "Broadcasts dropped per second because their queue was full.",
            (
                Query(
                    rate("cluster_node_gossip_dropped_broadcasts_total", "queue"),
                    "{{queue}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Lamport time",
            "The node's Lamport clock of peer states: it rises with every state "
            "change the cluster gossips.",
            (Query(total("cluster_node_lamport_time", how="max"), "lamport time"),),
        ),
        Panel(
            "Update duration",
            "How long the node took to apply a change of peers (sharder and "
            "observers): median, 99th percentile and mean over the window "
            "(NaN when nothing changed in it).",
            (
                quantile(0.5, UPDATE_DURATION),
                quantile(0.99, UPDATE_DURATION),
                mean(UPDATE_DURATION),
            ),
            unit="s",
        ),
        Panel(
            "Updating and observers",
            "1 while the node applies a change of peers; the observers waiting "
            "for changes.",
            (
                Query(total("cluster_node_updating", how="max"), "updating"),
                Query(total("cluster_node_update_observers", how="max"), "observers"),
            ),
        ),
    ),
)

DASHBOARDS = (OVERVIEW, NODE)


# --- rendering ---


def _layout(panels: Sequence[Panel]) -> Iterator[tuple[Panel, dict[str, int]]]:
    """
    Each panel with its place on Grafana's grid, left to right and then
    down a row as high as its highest panel.
    """
    x = y = row_height = 0
    for panel in panels:
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        yield panel, {"h": panel.height, "w": panel.width, "x": x, "y": y}
        x += panel.width
        row_height = max(row_height, panel.height)


def _target(query: Query, ref: str) -> dict[str, object]:
    target: dict[str, object] = {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend,
        "refId": ref,
    }
    if query.table:
        target.update(format="table", instant=True, range=False)
    else:
        target.update(instant=False, range=True)
    return target


def _options(panel: Panel) -> dict[str, object]:
    if panel.kind == "stat":
        return {
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": panel.text_mode,
        }
    if panel.kind == "table":
        return {"showHeader": True}
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _field_config(panel: Panel) -> dict[str, object]:
    defaults: dict[str, object] = {"unit": panel.unit}
    if panel.mappings:
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    str(value): {"color": color, "index": index, "text": text}
                    for index, (value, text, color) in enumerate(panel.mappings)
                },
            }
        ]
    return {"defaults": defaults, "overrides": []}


def _panel(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, object]:
    rendered: dict[str, object] = {
        "datasource": DATASOURCE,
        "description": panel.shows,
        "fieldConfig": _field_config(panel),
        "gridPos": grid,
        "id": panel_id,
        "options": _options(panel),
        "targets": [
            _target(query, chr(ord("A") + index))
            for index, query in enumerate(panel.queries)
        ],
        "title": panel.title,
        "type": panel.kind,
    }
    if panel.kind == "table":
        # An instant query's table: the labels are the columns.
        rendered["transformations"] = [
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True, "Value": True}},
            }
        ]
    return rendered


def _picker(picker: Picker) -> dict[str, object]:
    metric = (
        f"cluster_node_info{{{picker.matchers}}}"
        if picker.matchers
        else ("cluster_node_info")
    )
    query = f"label_values({metric}, {picker.label})"
    variable: dict[str, object] = {
        "current": {},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": picker.multi,
        "label": picker.title,
        "multi": picker.multi,
        "name": picker.name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }
    if picker.multi:
        # ".*" rather than Grafana's list of every value: it also matches an
        # empty cluster_name, which label_values cannot list.
        variable["allValue"] = ".*"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


def dashboard(board: Dashboard) -> dict[str, object]:
    """
    @return: Grafana's JSON model of C{board}: a data source picker, then
        its pickers, and its panels numbered from 1.
    """
    source = {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }
    return {
        "description": f"{board.summary} Generated by {COMMAND}.",
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "tags": [TAG],
                "title": "Cluster dashboards",
                "type": "dashboards",
            }
        ],
        "panels": [
            _panel(panel, panel_id, grid)
            for panel_id, (panel, grid) in enumerate(_layout(board.panels), start=1)
        ],
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": [TAG],
        "templating": {"list": [source, *(_picker(p) for p in board.pickers)]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": board.title,
        "uid": board.uid,
        "version": 1,
    }


def rendered(board: Dashboard) -> str:
    """
    @return: the text of C{board}'s file.
    """
    return json.dumps(dashboard(board), indent=2) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


#: What the docs' table shows in place of L{SELECTOR}.
SHORT_SELECTOR = "…"


def panel_table(board: Dashboard) -> str:
    """
    @return: a Markdown table of C{board}'s panels: title, queries (each
        with its legend, L{SELECTOR} shortened to L{SHORT_SELECTOR}) and
        what it shows.
    """
    lines = ["| panel | query | shows |", "|---|---|---|"]
    for panel in board.panels:
        queries = "<br>".join(
            f"`{_cell(q.expr.replace(SELECTOR, SHORT_SELECTOR))}`"
            + (f" ({_cell(q.legend)})" if q.legend else "")
            for q in panel.queries
        )
        lines.append(f"| {_cell(panel.title)} | {queries} | {_cell(panel.shows)} |")
    return "\n".join(lines)


def section() -> str:
    """
    @return: the text between the markers of C{docs/observing.md}: one
        table per dashboard, a blank line either side.
    """
    parts = [
        f"In the queries, `{{{SHORT_SELECTOR}}}` stands for the pickers' "
        f"matchers, `{{{SELECTOR}}}`.\n"
    ]
    for board in DASHBOARDS:
        parts.append(
            f"### {board.title} (`deploy/grafana/{board.file}`)\n\n"
            f"{board.summary} {len(board.panels)} panels.\n\n"
            f"{panel_table(board)}\n"
        )
    return "\n" + "\n".join(parts) + "\n"


def rewritten(page: str) -> str:
    """
    @return: C{page} with the section between its markers replaced by
        L{section}; C{page} itself when it is up to date.
    @raise ValueError: when C{page} has no markers.
    """
    if SECTION.search(page) is None:
        raise ValueError(
            f"{PAGE.name} has no GENERATED DASHBOARDS markers in its Dashboards section"
        )
    table = section()
    return SECTION.sub(lambda m: m.group(1) + table + m.group(3), page, count=1)


def main() -> None:
    """
    Write every dashboard's file and the table of C{docs/observing.md}.
    """
    try:
        page = rewritten(PAGE.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"{COMMAND}: {error}")
    for board in DASHBOARDS:
        (HERE / board.file).write_text(rendered(board))
    PAGE.write_text(page)


if __name__ == "__main__":
    main()
