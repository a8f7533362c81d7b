"""
A snapshot of what a L{cluster.alloy.service.ClusterService} knows about itself
and its cluster, for the status site (L{cluster.web.site}): taken once per
request, then rendered as JSON (C{/api/v0/web/cluster}) or as the HTML
status page (L{cluster.web.page}), so both always agree.

Beside the snapshot: L{key_shares} (each peer's share of the keys, sampled
from the sharder), L{KeyShares} (the same, remembered until the peer set
changes) and L{LookupAnswer} (a key lookup asked from the page).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import PackageNotFoundError, version

import attrs

from cluster.alloy.service import ClusterService
from cluster.ckit.node import Node
from cluster.gossip.address import join_host_port, parse_ip, split_host_port
from cluster.gossip.members import Member, MemberState, NodeState
from cluster.peer import Peer, PeerState
from cluster.serf.tags import STATUS_SITE_TAG, tags_meta, tags_of
from cluster.shard import MAX_KEY, ISharder, NotEnoughPeersError, Op

__all__ = [
    "DISTRIBUTION",
    "LOOKUP_OPS",
    "SHARE_SAMPLE",
    "ClusterStatus",
    "KeyShares",
    "LocalStatus",
    "LookupAnswer",
    "MemberStatus",
    "cluster_status",
    "key_shares",
    "package_version",
    "status_site_url",
]

DISTRIBUTION = "twisted-cluster"
"""
The distribution whose version the status page shows.
"""

LOOKUP_OPS = {"readwrite": Op.READ_WRITE, "read": Op.READ}
"""
The names of L{Op} in a lookup query (the JSON API's and the page's form).
"""

SHARE_SAMPLE = 4096
"""
How many keys L{key_shares} looks up: each share is then within about a
percentage point of the exact fraction (string keys hash uniformly over
the key space, and the sample covers it evenly).
"""


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def status_site_url(member: Member, tags: dict[str, str]) -> str | None:
    """
    Where C{member}'s status site is, from its L{STATUS_SITE_TAG} (its
    C{tags}): C{http://HOST:PORT/}, at the member's own address when the
    tag names no host.  C{None} without the tag, or when it is not
    C{HOST:PORT} with an IP address or host name and a port: any member
    picks its tags, and a link must go nowhere else.
    """
    split = split_host_port(tags.get(STATUS_SITE_TAG, ""))
    if split is None:
        return None
    host, port = split[0] or member.address, split[1]
    if not (port.isdigit() and 0 < int(port) <= 65535):
        return None
    if parse_ip(host) is None and not _HOST_NAME.fullmatch(host):
        return None
    return f"http://{join_host_port(host, int(port))}/"


@cache
def package_version() -> str:
    """
    The installed version of L{DISTRIBUTION}, or C{"unknown"} when this
    code runs from a checkout that was never installed.
    """
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def key_shares(
    sharder: ISharder, op: Op = Op.READ_WRITE, sample: int = SHARE_SAMPLE
) -> dict[str, float]:
    """
    Each peer's share of the keys: the fraction of C{sample} keys, evenly
    spaced over C{0..MAX_KEY}, of which it is the primary owner for C{op}.

    @return: peer name to a fraction in C{0..1}, for the peers that own at
        least one sampled key (the fractions sum to 1); empty when no peer
        is eligible for C{op}.
    """
    step = (MAX_KEY + 1) // sample
    keys = [i * step + step // 2 for i in range(sample)]
    try:
        owners = sharder.lookup_many(keys, 1, op)
    except NotEnoughPeersError:
        return {}
    counts: dict[str, int] = {}
    for (owner,) in owners:
        counts[owner.name] = counts.get(owner.name, 0) + 1
    return {name: count / sample for name, count in counts.items()}


@attrs.define(eq=False)
class KeyShares:
    """
    L{key_shares} of a sharder, recomputed only when its peer set changes
    (the shares depend on nothing else): a page that reloads every few
    seconds costs one lookup of C{sample} keys per change, not per load.
    """

    op: Op = Op.READ_WRITE
    sample: int = SHARE_SAMPLE
    _sharder: ISharder | None = attrs.field(default=None, init=False)
    _peers: list[Peer] = attrs.field(factory=list, init=False)
    _shares: dict[str, float] = attrs.field(factory=dict, init=False)

    def of(self, sharder: ISharder) -> dict[str, float]:
        """
        C{key_shares(sharder, op, sample)}, from memory when neither the
        sharder nor its peers changed since the last call.
        """
        peers = sharder.peers()
        if sharder is not self._sharder or peers != self._peers:
            self._shares = key_shares(sharder, self.op, self.sample)
            self._sharder, self._peers = sharder, peers
        return self._shares


@attrs.frozen
class LookupAnswer:
    """
    A key lookup asked from the status page, and its answer.

    @ivar key: the string key asked about (C{""} when the query named none).
    @ivar n: how many owners were asked for.
    @ivar op: the operation they must be eligible for.
    @ivar owners: the owners, primary first (empty on error).
    @ivar error: why there is no answer (a bad query, too few eligible
        peers), or C{""}.
    """

    key: str
    n: int = 1
    op: Op = Op.READ_WRITE
    owners: tuple[Peer, ...] = ()
    error: str = ""


@attrs.frozen
class LocalStatus:
    """
    The local node, as it sees itself.

    @ivar name: the node name.
    @ivar addr: C{"host:port"} it gossips on (C{""} before it is started).
    @ivar state: its ckit peer state.
    @ivar lamport_time: its Lamport clock (0 when clustering is off).
    @ivar health_score: its Lifeguard health score; 0 is healthy (and the
        value when clustering is off).
    @ivar ready: whether the cluster admits traffic
        (L{ICluster.ready<cluster.alloy.interfaces.ICluster.ready>}).
    @ivar cluster_name: the configured cluster name (may be C{""}).
    @ivar protocol_version: the memberlist protocol version it speaks, or
        C{None} when clustering is off (no gossip at all).
    @ivar version: the version of this software (L{package_version}).
    """

    name: str
    addr: str
    state: PeerState
    lamport_time: int
    health_score: int
    ready: bool
    cluster_name: str
    protocol_version: int | None
    version: str = attrs.field(factory=package_version)

    def to_json(self) -> dict[str, object]:
        """
        The C{"self"} object of C{/api/v0/web/cluster}.
        """
        return {
            "name": self.name,
            "addr": self.addr,
            "state": str(self.state),
            "lamportTime": self.lamport_time,
            "healthScore": self.health_score,
            "ready": self.ready,
            "clusterName": self.cluster_name,
            "protocolVersion": self.protocol_version,
        }


@attrs.frozen
class MemberStatus:
    """
    One memberlist member, with its ckit peer state when known.

    @ivar member: memberlist's record: name, address, gossip state
        (alive, suspect, dead or left) and incarnation.
    @ivar peer_state: the ckit state it last announced, or C{None} when
        unknown (dead and left members are forgotten by ckit).
    @ivar is_self: whether it is the local node.
    @ivar since: when its gossip state last changed, in seconds on the
        node's clock (memberlist's C{nodeState.StateChange}), or C{None}
        when unknown (clustering off).
    @ivar peer_time: the Lamport time of the ckit state it last announced
        (ckit records no other time), or C{None}.
    @ivar share: its fraction of the keys (L{key_shares}), or C{None} when
        not computed.
    """

    member: Member
    peer_state: PeerState | None
    is_self: bool
    since: float | None = None
    peer_time: int | None = None
    share: float | None = None

    @property
    def name(self) -> str:
        """
        The member's name.
        """
        return self.member.name

    @property
    def tags(self) -> dict[str, str]:
        """
        The member's Serf tags, read from its node meta (L{tags_of}).
        """
        return tags_of(self.member)

    @property
    def site(self) -> str | None:
        """
        Where the member's status site is (L{status_site_url}), or C{None}.
        """
        return status_site_url(self.member, self.tags)

    def to_json(self) -> dict[str, object]:
        """
        One element of C{"members"} in C{/api/v0/web/cluster}.
        """
        member = self.member
        return {
            "name": member.name,
            "addr": member.address,
            "port": member.port,
            "state": str(member.state),
            "incarnation": member.incarnation,
            "peerState": None if self.peer_state is None else str(self.peer_state),
            "isSelf": self.is_self,
            "tags": self.tags,
        }


@attrs.frozen
class ClusterStatus:
    """
    Everything the status site shows, at one instant.

    @ivar clustering: whether clustering is enabled.
    @ivar running: whether the service is running.
    @ivar local: the local node.
    @ivar members: every member, sorted by name.
    @ivar taken_at: when the snapshot was taken, on the node's clock (the
        clock of L{MemberStatus.since}).
    """

    clustering: bool
    running: bool
    local: LocalStatus
    members: tuple[MemberStatus, ...]
    taken_at: float = 0.0

    def to_json(self) -> dict[str, object]:
        """
        The body of C{/api/v0/web/cluster}.
        """
        return {
            "clustering": self.clustering,
            "self": self.local.to_json(),
            "members": [member.to_json() for member in self.members],
        }


def _split(addr: str) -> tuple[str, int]:
    """
    C{"host:port"} or C{"[v6]:port"} into host and port.
    """
    host, _, port = addr.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _member(
    record: NodeState,
    node: Node,
    states: dict[str, PeerState],
    shares: dict[str, float] | None,
) -> MemberStatus:
    announced = node.states.state_of(record.name)
    return MemberStatus(
        member=record.to_member(),
        peer_state=states.get(record.name),
        is_self=record.name == node.name,
        since=record.state_change,
        peer_time=None if announced is None else announced.time,
        share=None if shares is None else shares.get(record.name, 0.0),
    )


def _lone(
    peer: Peer, shares: dict[str, float] | None, tags: dict[str, str]
) -> MemberStatus:
    host, port = _split(peer.addr)
    meta = tags_meta(tags)
    return MemberStatus(
        member=Member(peer.name, host, port, meta, MemberState.ALIVE, 0),
        peer_state=peer.state,
        is_self=True,
        share=None if shares is None else shares.get(peer.name, 0.0),
    )


def cluster_status(
    service: ClusterService, shares: KeyShares | None = None
) -> ClusterStatus:
    """
    Take a snapshot of C{service}.

    With clustering off the service is a one-node cluster: the local node
    is its only member, alive and a participant, at Lamport time 0 and
    health score 0, with no protocol version.

    @param shares: where to take each member's share of the keys from;
        with C{None} the shares are left out (C{MemberStatus.share} is
        C{None}), which spares the lookups when only the JSON is wanted.
    """
    options = service.options
    cluster = service.data()
    node = service.node
    taken_at = service.reactor.seconds()
    owned = None if shares is None else shares.of(service.sharder)
    if node is None:
        members = tuple(
            _lone(peer, owned, service.tags) for peer in cluster.peers() if peer.is_self
        )
        addr = members[0].member.full_address() if members else ""
        local = LocalStatus(
            name=options.node_name,
            addr=addr,
            state=PeerState.PARTICIPANT,
            lamport_time=0,
            health_score=0,
            ready=cluster.ready(),
            cluster_name=options.cluster_name,
            protocol_version=None,
        )
        return ClusterStatus(False, bool(service.running), local, members, taken_at)
    memberlist = node.memberlist
    states = {peer.name: peer.state for peer in node.peers()}
    members = tuple(
        sorted(
            (_member(record, node, states, owned) for record in memberlist.table),
            key=lambda m: m.name,
        )
    )
    addr = next((m.member.full_address() for m in members if m.is_self), "")
    local = LocalStatus(
        name=node.name,
        addr=addr,
        state=node.current_state(),
        lamport_time=node.lamport_time(),
        health_score=memberlist.health_score(),
        ready=cluster.ready(),
        cluster_name=options.cluster_name,
        protocol_version=memberlist.config.protocol_version,
    )
    return ClusterStatus(True, bool(service.running), local, members, taken_at)
