"""
A snapshot of what a L{cluster.alloy.service.ClusterService} knows about itself
and its cluster, for the status site (L{cluster.web.site}): taken once per
request, then rendered as JSON (C{/api/v0/web/cluster}) or as the HTML
status page (L{cluster.web.page}), so both always agree.
"""

from __future__ import annotations

import attrs

from cluster.alloy.service import ClusterService
from cluster.gossip.members import Member, MemberState
from cluster.peer import Peer, PeerState

__all__ = ["ClusterStatus", "LocalStatus", "MemberStatus", "cluster_status"]


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
    """

    name: str
    addr: str
    state: PeerState
    lamport_time: int
    health_score: int
    ready: bool
    cluster_name: str
    protocol_version: int | None

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

    @ivar addr: the member's host (an IP address), without the port.
    @ivar state: memberlist's view: alive, suspect, dead or left.
    @ivar peer_state: the ckit state it last announced, or C{None} when
        unknown (dead and left members are forgotten by ckit).
    @ivar is_self: whether it is the local node.
    """

    name: str
    addr: str
    port: int
    state: MemberState
    incarnation: int
    peer_state: PeerState | None
    is_self: bool

    @property
    def full_address(self) -> str:
        """
        C{"host:port"}, with an IPv6 host in brackets.
        """
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{host}:{self.port}"

    def to_json(self) -> dict[str, object]:
        """
        One element of C{"members"} in C{/api/v0/web/cluster}.
        """
        return {
            "name": self.name,
            "addr": self.addr,
            "port": self.port,
            "state": str(self.state),
            "incarnation": self.incarnation,
            "peerState": None if self.peer_state is None else str(self.peer_state),
            "isSelf": self.is_self,
        }


@attrs.frozen
class ClusterStatus:
    """
    Everything the status site shows, at one instant.

    @ivar clustering: whether clustering is enabled.
    @ivar running: whether the service is running.
    @ivar local: the local node.
    @ivar members: every member, sorted by name.
    """

    clustering: bool
    running: bool
    local: LocalStatus
    members: tuple[MemberStatus, ...]

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


def _member(member: Member, states: dict[str, PeerState], me: str) -> MemberStatus:
    return MemberStatus(
        name=member.name,
        addr=member.address,
        port=member.port,
        state=member.state,
        incarnation=member.incarnation,
        peer_state=states.get(member.name),
        is_self=member.name == me,
    )


def _lone(peer: Peer) -> MemberStatus:
    host, port = _split(peer.addr)
    return MemberStatus(
        name=peer.name,
        addr=host,
        port=port,
        state=MemberState.ALIVE,
        incarnation=0,
        peer_state=peer.state,
        is_self=True,
    )


def cluster_status(service: ClusterService) -> ClusterStatus:
    """
    Take a snapshot of C{service}.

    With clustering off the service is a one-node cluster: the local node
    is its only member, alive and a participant, at Lamport time 0 and
    health score 0, with no protocol version.
    """
    options = service.options
    cluster = service.data()
    node = service.node
    if node is None:
        members = tuple(_lone(peer) for peer in cluster.peers() if peer.is_self)
        addr = members[0].full_address if members else ""
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
        return ClusterStatus(False, bool(service.running), local, members)
    memberlist = node.memberlist
    states = {peer.name: peer.state for peer in node.peers()}
    members = tuple(
        sorted(
            (_member(m, states, node.name) for m in memberlist.members()),
            key=lambda m: m.name,
        )
    )
    addr = next((m.full_address for m in members if m.is_self), "")
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
    return ClusterStatus(True, bool(service.running), local, members)
