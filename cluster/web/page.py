"""
The HTML status page of a cluster node: L{StatusPage}, a
L{twisted.web.template} element that renders a L{ClusterStatus} as one
self-contained document (inline CSS, no script, no external asset).

The page reloads itself with C{<meta http-equiv="refresh">}, which works
with JavaScript off.  Each member's share of the keys is a bar whose
width is set in CSS; its lookup form asks the page itself, which shows
the owners of the key in place (the JSON API answers the same query).
Each member's Serf tags are listed, and its name links to its own status
page when a tag says where that is (L{cluster.web.status.status_site_url}).

Every value that comes from the cluster (node names above all: any peer
picks its own) enters the document as a slot, a tag's child or an
attribute value, which the flattener escapes; the CSS classes
of the badges come from fixed tables, never from the data.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from urllib.parse import urlencode

from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, XMLString, renderer, tags

from cluster.gossip.members import MemberState
from cluster.peer import Peer, PeerState
from cluster.shard import Op, string_key
from cluster.web.status import (
    DISTRIBUTION,
    LOOKUP_OPS,
    SHARE_SAMPLE,
    ClusterStatus,
    LocalStatus,
    LookupAnswer,
    MemberStatus,
)

__all__ = ["StatusPage", "duration"]

# Badge colours (CSS classes below) for each state; the text is the
# state's name, so colour is never the only signal.
_GOSSIP_TONE = {
    MemberState.ALIVE: "good",
    MemberState.SUSPECT: "warn",
    MemberState.DEAD: "bad",
    MemberState.LEFT: "muted",
}
_PEER_TONE = {
    PeerState.PARTICIPANT: "info",
    PeerState.VIEWER: "muted",
    PeerState.TERMINATING: "warn",
}
_PEER_ORDER = (PeerState.PARTICIPANT, PeerState.VIEWER, PeerState.TERMINATING)

# The flattener escapes the text of <style> too, and browsers read it raw:
# the stylesheet must hold no "<", ">" or "&".
_TEMPLATE = """\
<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1"
  lang="en" t:render="page">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<meta t:render="auto_refresh" http-equiv="refresh" />
<title><t:slot name="name" /> - cluster status</title>
<style>
:root {
  --bg: #f6f7f9; --fg: #1d2330; --card: #ffffff; --line: #dde1e8;
  --dim: #5d6675; --self: #eef4ff; --accent: #3b6fd8;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171c; --fg: #e3e6eb; --card: #1c2027; --line: #2d333d;
    --dim: #9aa3b1; --self: #1d2a40; --accent: #7ea6ff;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; padding: 24px 32px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
header { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; }
h1 { margin: 0; font-size: 22px; overflow-wrap: anywhere; }
h2 { margin: 24px 0 8px; font-size: 16px; }
.sub { color: var(--dim); margin: 4px 0 16px; }
code { font: 13px ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
.cards {
  display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
}
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px;
}
.card dt { color: var(--dim); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card dd { margin: 4px 0 0; font-size: 16px; font-weight: 600; }
table {
  width: 100%; border-collapse: separate; border-spacing: 0;
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  overflow: hidden;
}
th, td { text-align: left; padding: 8px 12px; border-bottom: 1px solid var(--line); }
th { color: var(--dim); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; font-weight: 600; }
tr:last-child td { border-bottom: none; }
td.name { font-weight: 600; overflow-wrap: anywhere; }
tr.self td { background: var(--self); }
tr.self td:first-child { box-shadow: inset 4px 0 0 var(--accent); }
.you {
  margin-left: 6px; font-size: 11px; font-weight: 600; color: var(--accent);
  text-transform: uppercase; letter-spacing: .04em;
}
.num { font-variant-numeric: tabular-nums; }
.badge {
  display: inline-block; padding: 1px 9px; border-radius: 999px;
  font-size: 12px; font-weight: 600; border: 1px solid transparent;
}
.badge.good { background: #dcf5e3; color: #146c2e; border-color: #a8e0b8; }
.badge.warn { background: #fff1d6; color: #8a5300; border-color: #f3cf86; }
.badge.bad { background: #fde0df; color: #a1201b; border-color: #f2aeab; }
.badge.info { background: #dfe9ff; color: #2452b8; border-color: #b3c9f7; }
.badge.muted { background: #eceef2; color: #4d5563; border-color: #d3d7de; }
.badge.unknown { background: transparent; color: var(--dim);
  border: 1px dashed var(--line); }
form { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }
input, select, button {
  font: inherit; padding: 5px 8px; border: 1px solid var(--line);
  border-radius: 6px; background: var(--card); color: var(--fg);
}
input[type=number] { width: 80px; }
button { cursor: pointer; }
.since { white-space: nowrap; }
td.tags code { display: inline-block; margin-bottom: 2px; overflow-wrap: anywhere; }
.dim { color: var(--dim); }
.share { white-space: nowrap; }
.bar {
  display: inline-block; width: 120px; height: 10px; vertical-align: middle;
  background: var(--line); border-radius: 5px; overflow: hidden;
}
.bar .fill { height: 100%; background: var(--accent); }
.note { color: var(--dim); font-size: 13px; margin: 8px 0 0; }
label { color: var(--dim); font-size: 13px; }
#lookup-answer { margin-top: 12px; }
#owners { margin: 6px 0 0; padding-left: 24px; }
#owners li { margin: 4px 0; }
.error { color: #a1201b; font-weight: 600; }
footer { margin-top: 24px; color: var(--dim); font-size: 13px; }
a { color: var(--accent); }
</style>
</head>
<body>
<header>
<h1 id="node-name"><t:slot name="name" /></h1>
<t:slot name="state" /> <t:slot name="ready" />
</header>
<p class="sub"><t:slot name="where" /></p>
<dl class="cards" id="node"><t:slot name="cards" /></dl>
<h2>Members</h2>
<p class="sub" id="summary"><t:slot name="summary" /></p>
<table id="members">
<thead><tr><th>Name</th><th>Address</th><th>Tags</th><th>Gossip</th>
<th>Since (UTC)</th><th>Peer state</th><th>Share of keys</th>
<th>Incarnation</th></tr></thead>
<tbody><t:slot name="members" /></tbody>
</table>
<p class="note" id="share-note"><t:slot name="share_note" /></p>
<h2>Key lookup</h2>
<t:slot name="lookup_form" />
<t:slot name="lookup_answer" />
<footer>
<span id="version"><t:slot name="version" /></span> &#183;
<t:slot name="again" />
JSON: <a href="api/v0/web/peers">peers</a>,
<a href="api/v0/web/cluster">cluster</a> &#183;
<a href="metrics">metrics</a> &#183;
<a href="-/ready">ready</a> &#183; <a href="-/healthy">healthy</a>
</footer>
</body>
</html>
"""


def _badge(text: str, tone: str) -> Tag:
    return tags.span(text, class_=f"badge {tone}")


def _peer_badge(state: PeerState | None, time: int | None = None) -> Tag:
    if state is None:
        return _badge("unknown", "unknown")
    badge = _badge(str(state), _PEER_TONE[state])
    if time is not None:
        badge(title=f"announced at Lamport time {time}")
    return badge


def _ready_badge(ready: bool) -> Tag:
    return _badge("ready", "good") if ready else _badge("not ready", "bad")


def _health_badge(score: int) -> Tag:
    if score == 0:
        return _badge("healthy (0)", "good")
    return _badge(f"degraded ({score})", "warn")


def _cards(local: LocalStatus) -> list[Tag]:
    protocol = "n/a" if local.protocol_version is None else local.protocol_version
    cards: list[tuple[str, str, Flattenable]] = [
        ("state", "State", _peer_badge(local.state)),
        ("ready", "Readiness", _ready_badge(local.ready)),
        ("health", "Health score", _health_badge(local.health_score)),
        ("cluster", "Cluster name", local.cluster_name or "(none)"),
        ("addr", "Address", tags.code(local.addr or "-")),
        ("lamport", "Lamport time", str(local.lamport_time)),
        ("protocol", "Protocol", str(protocol)),
    ]
    return [
        tags.div(tags.dt(label), tags.dd(value), class_="card", **{"data-field": key})
        for key, label, value in cards
    ]


def duration(seconds: float) -> str:
    """
    C{seconds} as a person says it, to the largest two units: C{"42 s"},
    C{"2 min"}, C{"3 h 5 min"}, C{"4 d 1 h"} (negative counts as 0).
    """
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _since(at: float | None, now: float) -> Flattenable:
    """
    C{12:03:41 (2 min)}: the UTC time of C{at} (with its date when that
    is not today's) and how long ago it was.
    """
    if at is None:
        return tags.span("-", class_="dim")
    moment = datetime.fromtimestamp(at, timezone.utc)
    today = moment.date() == datetime.fromtimestamp(now, timezone.utc).date()
    return [
        tags.time(
            moment.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S"),
            datetime=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            title=moment.strftime("%Y-%m-%d %H:%M:%S UTC"),
        ),
        " ",
        tags.span(f"({duration(now - at)})", class_="dim"),
    ]


def _share(share: float | None) -> Flattenable:
    """
    A bar as wide as C{share} of its track, and the percentage.
    """
    if share is None:
        return tags.span("-", class_="dim")
    percent = f"{share * 100:.1f}%"
    return [
        tags.div(
            tags.div(class_="fill", style=f"width: {percent}"),
            class_="bar",
            role="img",
            **{"aria-label": f"{percent} of the keys"},
        ),
        " ",
        tags.span(percent, class_="percent num"),
    ]


def _tag_list(values: dict[str, str]) -> Flattenable:
    """
    Each tag as C{key=value}, in key order.
    """
    if not values:
        return tags.span("-", class_="dim")
    shown: list[Flattenable] = []
    for key, value in sorted(values.items()):
        if shown:
            shown.append(" ")
        shown.append(tags.code(f"{key}={value}"))
    return shown


def _row(entry: MemberStatus, now: float) -> Tag:
    member = entry.member
    site = entry.site
    row = tags.tr(
        tags.td(
            tags.a(member.name, href=site) if site else member.name,
            tags.span("this node", class_="you") if entry.is_self else "",
            class_="name",
        ),
        tags.td(tags.code(member.full_address()), class_="addr"),
        tags.td(_tag_list(entry.tags), class_="tags"),
        tags.td(_badge(str(member.state), _GOSSIP_TONE[member.state]), class_="gossip"),
        tags.td(_since(entry.since, now), class_="since"),
        tags.td(_peer_badge(entry.peer_state, entry.peer_time), class_="peer-state"),
        tags.td(_share(entry.share), class_="share"),
        tags.td(str(member.incarnation), class_="incarnation num"),
        class_="member self" if entry.is_self else "member",
        **{"data-name": member.name},
    )
    if entry.is_self:
        row(**{"aria-current": "true"})
    return row


def _where(status: ClusterStatus) -> str:
    if not status.clustering:
        where = "clustering disabled: a one-node cluster"
    elif status.local.cluster_name:
        where = f"cluster {status.local.cluster_name}"
    else:
        where = "unnamed cluster"
    if not status.running:
        where += " (service not running)"
    return where


def _plural(state: PeerState, count: int) -> str:
    # "2 terminating": that state is an adjective.
    return "s" if count != 1 and state != PeerState.TERMINATING else ""


def _summary(status: ClusterStatus) -> str:
    """
    C{"3 members · 2 alive, 1 dead · 1 participant, 1 viewer"}.
    """
    gossip = Counter(entry.member.state for entry in status.members)
    peers = Counter(entry.peer_state for entry in status.members)
    gossiped = ", ".join(f"{gossip[s]} {s}" for s in MemberState if gossip[s])
    states = ", ".join(
        f"{peers[s]} {s}{_plural(s, peers[s])}" for s in _PEER_ORDER if peers[s]
    )
    count = len(status.members)
    total = f"{count} member{'' if count == 1 else 's'}"
    return " \u00b7 ".join(part for part in (total, gossiped, states) if part)


_OP_NAMES = {op: name for name, op in LOOKUP_OPS.items()}


def _lookup_form(answer: LookupAnswer | None) -> Tag:
    """
    The lookup form, holding the query of C{answer} if any.  It has no
    C{action}: it asks the page itself, which shows the answer.
    """
    asked = answer or LookupAnswer("")
    options = []
    for name, op in LOOKUP_OPS.items():
        option = tags.option(name, value=name)
        if op is asked.op:
            option(selected="selected")
        options.append(option)
    return tags.form(
        tags.label("Key", for_="lookup-key"),
        tags.input(
            id="lookup-key",
            name="key",
            value=asked.key,
            required="",
            placeholder="e.g. user/42",
        ),
        tags.label("Owners", for_="lookup-n"),
        tags.input(id="lookup-n", name="n", type="number", min="1", value=str(asked.n)),
        tags.label("Operation", for_="lookup-op"),
        tags.select(*options, id="lookup-op", name="op"),
        tags.button("Find owners", type="submit"),
        method="get",
        id="lookup",
    )


def _owner(peer: Peer) -> Tag:
    return tags.li(
        tags.strong(peer.name),
        " ",
        tags.code(peer.addr),
        " ",
        _peer_badge(peer.state),
        tags.span("this node", class_="you") if peer.is_self else "",
        **{"data-name": peer.name},
    )


def _lookup_answer(answer: LookupAnswer | None) -> Flattenable:
    """
    The owners of the key asked about, primary first, or why there are
    none; nothing when nothing was asked.
    """
    if answer is None:
        return ""
    op = _OP_NAMES[answer.op]
    json_link = tags.a(
        "as JSON",
        href="api/v0/web/lookup?"
        + urlencode({"key": answer.key, "n": answer.n, "op": op}),
    )
    key = tags.code(answer.key) if answer.key else tags.em("the empty key")
    if answer.error:
        body: Flattenable = tags.p(answer.error, class_="error", id="lookup-error")
        heading = tags.p("No owners of ", key, " for ", op, ":")
    else:
        body = tags.ol(*(_owner(peer) for peer in answer.owners), id="owners")
        heading = tags.p(
            "Owners of ",
            key,
            " for ",
            op,
            ", primary first ",
            tags.span(f"(key {string_key(answer.key):#018x}) \u00b7 ", class_="dim"),
            json_link,
        )
    return tags.section(heading, body, id="lookup-answer", **{"aria-live": "polite"})


def _share_note(status: ClusterStatus) -> str:
    if all(entry.share is None for entry in status.members):
        return ""
    return (
        f"Share of keys: the fraction of {SHARE_SAMPLE:,} keys, spread evenly "
        "over the key space, that each member owns first for "
        f"{_OP_NAMES[Op.READ_WRITE]} (participants only)."
    )


class StatusPage(Element):
    """
    The status page for one L{ClusterStatus}: render it with
    L{twisted.web.template.renderElement}, which writes the HTML5 doctype.

    @ivar status: the snapshot shown.
    @ivar refresh: seconds between automatic reloads (0 turns them off).
    @ivar lookup: the key lookup the page was asked, shown below its form,
        or C{None}.
    """

    loader = XMLString(_TEMPLATE)

    def __init__(
        self,
        status: ClusterStatus,
        refresh: int = 5,
        lookup: LookupAnswer | None = None,
    ) -> None:
        super().__init__()
        self.status = status
        self.refresh = refresh
        self.lookup = lookup

    @renderer
    def page(self, request: IRequest | None, tag: Tag) -> Tag:
        """
        The document, its slots filled from L{status}.
        """
        local = self.status.local
        now = self.status.taken_at
        rows = [_row(entry, now) for entry in self.status.members]
        return tag.fillSlots(
            name=local.name,
            state=_peer_badge(local.state),
            ready=_ready_badge(local.ready),
            where=_where(self.status),
            cards=_cards(local),
            summary=_summary(self.status),
            members=rows or tags.tr(tags.td("no members yet", colspan="8")),
            share_note=_share_note(self.status),
            lookup_form=_lookup_form(self.lookup),
            lookup_answer=_lookup_answer(self.lookup),
            version=f"{DISTRIBUTION} {local.version}",
            again=f"Refreshes every {self.refresh} s." if self.refresh > 0 else "",
        )

    @renderer
    def auto_refresh(self, request: IRequest | None, tag: Tag) -> Flattenable:
        """
        The C{refresh} meta tag, or nothing when reloads are off.
        """
        return tag(content=str(self.refresh)) if self.refresh > 0 else ""
