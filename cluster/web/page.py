"""
The HTML status page of a cluster node: one self-contained document (inline
CSS, no script, no external asset) rendered from a L{ClusterStatus}.

It refreshes itself with C{<meta http-equiv="refresh">}, which works with
JavaScript off.  Every value that comes from the cluster (node names above
all: any peer picks its own) goes through L{html.escape}; the CSS classes
of the badges come from fixed tables, never from the data.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from cluster.gossip.members import MemberState
from cluster.peer import PeerState
from cluster.web.status import ClusterStatus, MemberStatus

__all__ = ["render_status_page"]

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

_STYLE = """
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
footer { margin-top: 24px; color: var(--dim); font-size: 13px; }
a { color: var(--accent); }
"""


_PEER_ORDER = (PeerState.PARTICIPANT, PeerState.VIEWER, PeerState.TERMINATING)


def _plural(state: PeerState, count: int) -> str:
    return "s" if count != 1 and state != PeerState.TERMINATING else ""


def _badge(text: str, tone: str) -> str:
    return f'<span class="badge {tone}">{escape(text)}</span>'


def _peer_badge(state: PeerState | None) -> str:
    if state is None:
        return _badge("unknown", "unknown")
    return _badge(str(state), _PEER_TONE[state])


def _ready_badge(ready: bool) -> str:
    return _badge("ready", "good") if ready else _badge("not ready", "bad")


def _health_badge(score: int) -> str:
    if score == 0:
        return _badge("healthy (0)", "good")
    return _badge(f"degraded ({score})", "warn")


def _card(label: str, value: str, key: str) -> str:
    return (
        f'<div class="card" data-field="{key}"><dt>{escape(label)}</dt>'
        f"<dd>{value}</dd></div>"
    )


def _row(member: MemberStatus) -> str:
    name = escape(member.name)
    you = '<span class="you">this node</span>' if member.is_self else ""
    css = "member self" if member.is_self else "member"
    current = ' aria-current="true"' if member.is_self else ""
    return (
        f'<tr class="{css}" data-name="{name}"{current}>'
        f'<td class="name">{name}{you}</td>'
        f'<td class="addr"><code>{escape(member.full_address)}</code></td>'
        f'<td class="gossip">'
        f"{_badge(str(member.state), _GOSSIP_TONE[member.state])}</td>"
        f'<td class="peer-state">{_peer_badge(member.peer_state)}</td>'
        f'<td class="incarnation num">{member.incarnation}</td>'
        "</tr>"
    )


def _summary(status: ClusterStatus) -> str:
    gossip = Counter(member.state for member in status.members)
    peers = Counter(member.peer_state for member in status.members)
    gossiped = ", ".join(f"{gossip[s]} {s}" for s in MemberState if gossip[s])
    states = ", ".join(
        f"{peers[s]} {s}{_plural(s, peers[s])}" for s in _PEER_ORDER if peers[s]
    )
    count = len(status.members)
    total = f"{count} member{'' if count == 1 else 's'}"
    return escape(" \u00b7 ".join(part for part in (total, gossiped, states) if part))


def render_status_page(status: ClusterStatus, refresh: int = 5) -> str:
    """
    The status page for C{status}.

    @param refresh: seconds between automatic reloads (0 turns them off).
    @return: a complete HTML document.
    """
    local = status.local
    if not status.clustering:
        where = "clustering disabled: a one-node cluster"
    elif local.cluster_name:
        where = f"cluster {local.cluster_name}"
    else:
        where = "unnamed cluster"
    if not status.running:
        where += " (service not running)"
    protocol = "n/a" if local.protocol_version is None else local.protocol_version
    cards = "".join(
        [
            _card("State", _peer_badge(local.state), "state"),
            _card("Readiness", _ready_badge(local.ready), "ready"),
            _card("Health score", _health_badge(local.health_score), "health"),
            _card("Cluster name", escape(local.cluster_name or "(none)"), "cluster"),
            _card("Address", f"<code>{escape(local.addr or '-')}</code>", "addr"),
            _card("Lamport time", f"{local.lamport_time}", "lamport"),
            _card("Protocol", escape(str(protocol)), "protocol"),
        ]
    )
    rows = "".join(_row(member) for member in status.members)
    if not rows:
        rows = '<tr><td colspan="5">no members yet</td></tr>'
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    again = f"Refreshes every {refresh} s." if refresh > 0 else ""
    name = escape(local.name)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{meta}
<title>{name} - cluster status</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1 id="node-name">{name}</h1>
{_peer_badge(local.state)} {_ready_badge(local.ready)}
</header>
<p class="sub">{escape(where)}</p>
<dl class="cards" id="node">{cards}</dl>
<h2>Members</h2>
<p class="sub" id="summary">{_summary(status)}</p>
<table id="members">
<thead><tr><th>Name</th><th>Address</th><th>Gossip</th><th>Peer state</th>
<th>Incarnation</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<h2>Key lookup</h2>
<form method="get" action="api/v0/web/lookup">
<input name="key" placeholder="key" required aria-label="key">
<input name="n" type="number" min="1" value="1" aria-label="owners">
<select name="op" aria-label="operation">
<option value="readwrite">readwrite</option><option value="read">read</option>
</select>
<button type="submit">Find owners</button>
</form>
<footer>
{again}
JSON: <a href="api/v0/web/peers">peers</a>,
<a href="api/v0/web/cluster">cluster</a> &middot;
<a href="metrics">metrics</a> &middot;
<a href="-/ready">ready</a> &middot; <a href="-/healthy">healthy</a>
</footer>
</body>
</html>
"""
