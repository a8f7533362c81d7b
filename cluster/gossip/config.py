"""
L{GossipConfig}: every knob of the membership layer, with memberlist's
DefaultLANConfig, DefaultWANConfig and DefaultLocalConfig as presets, and
the LAN settings Grafana Alloy runs (through ckit).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack

import attrs

from cluster.gossip.interfaces import IConflictDelegate, IDelegate, IEventDelegate
from cluster.gossip.keyring import Keyring
from cluster.gossip.tls import StreamTLS

__all__ = [
    "META_MAX_SIZE",
    "NAME_MAX_SIZE",
    "PROTOCOL_VERSION_MAX",
    "PROTOCOL_VERSION_MIN",
    "GossipConfig",
]

PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_MAX = 5
META_MAX_SIZE = 512
# memberlist sets no bound on names; ours keeps every member entry small
# (a host name is at most 253 bytes, a Kubernetes pod name too).  Longer
# names in what peers send are dropped, counted as dropped.name.
NAME_MAX_SIZE = 256


class _Named(Protocol):
    name: str


def _positive(instance: object, attribute: _Named, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def not_negative(instance: object, attribute: _Named, value: float) -> None:
    """
    An attrs validator: the field must be zero or more.
    """
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def port_number(instance: object, attribute: _Named, value: int | None) -> None:
    """
    An attrs validator: the field must be a port number (or None).
    """
    if value is not None and not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be 0..65535, got {value!r}")


def _ip_literal(instance: object, attribute: _Named, value: str | None) -> None:
    if value is None:
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{attribute.name} must be an IP address, got {value!r}"
        ) from None


def _byte(instance: object, attribute: _Named, value: int) -> None:
    if not 0 <= value <= 255:
        raise ValueError(f"{attribute.name} must be 0..255, got {value!r}")


def _label(instance: object, attribute: _Named, value: str) -> None:
    if len(value.encode("utf-8")) > 255:
        raise ValueError("label must be at most 255 bytes")


def _interfaces(
    instance: object, attribute: _Named, value: tuple[str, ...] | None
) -> None:
    if value is not None and not all(isinstance(n, str) and n for n in value):
        raise ValueError(f"{attribute.name} must be interface names, got {value!r}")


def _interface_names(names: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


def _name(instance: object, attribute: _Named, value: str) -> None:
    if not value:
        raise ValueError("name must not be empty")
    if len(value.encode("utf-8")) > NAME_MAX_SIZE:
        raise ValueError(f"name must be at most {NAME_MAX_SIZE} bytes")


class GossipSettings(TypedDict, total=False):
    """
    The fields of L{GossipConfig}, as keyword overrides of its presets.
    """

    name: str
    bind_address: str
    bind_port: int
    advertise_address: str | None
    advertise_port: int | None
    advertise_interfaces: Sequence[str] | None
    protocol_version: int
    delegate_protocol_min: int
    delegate_protocol_max: int
    delegate_protocol_version: int
    tcp_timeout: float
    indirect_checks: int
    retransmit_mult: int
    suspicion_mult: int
    suspicion_max_timeout_mult: int
    push_pull_interval: float
    probe_interval: float
    probe_timeout: float
    disable_tcp_pings: bool
    awareness_max_multiplier: int
    gossip_nodes: int
    gossip_interval: float
    gossip_to_the_dead_time: float
    dead_node_reclaim_time: float
    enable_compression: bool
    udp_buffer_size: int
    serf_leave_intent: bool
    label: str
    keyring: Keyring | None
    tls: StreamTLS | None
    gossip_verify_incoming: bool
    gossip_verify_outgoing: bool
    delegate: IDelegate | None
    events: IEventDelegate | None
    conflict: IConflictDelegate | None


@attrs.frozen
class GossipConfig:
    """
    Configuration of one L{cluster.gossip.Memberlist}.

    Field defaults are memberlist's C{DefaultLANConfig}; use L{lan}, L{wan},
    L{local} or L{alloy} for the presets, each taking overrides as
    keywords.  Times are in seconds; C{n} below is the number of members.
    Invalid values raise C{ValueError} naming the field, before any socket
    is opened.

    Lifeguard can be switched off for comparison: C{awareness_max_multiplier=1}
    disables local health scaling (and with it the use of nacks), and
    C{suspicion_max_timeout_mult=1} makes suspicion timeouts static.
    """

    name: str = attrs.field(factory=socket.gethostname, validator=_name)
    """
    This member's name, unique in the cluster (the host name by default).
    """
    bind_address: str = attrs.field(default="0.0.0.0", validator=_ip_literal)
    """The IP address the UDP port and the TCP listener bind."""
    bind_port: int = attrs.field(default=7946, validator=port_number)
    """Their port, one number for both; 0 picks a free one."""
    advertise_address: str | None = attrs.field(default=None, validator=_ip_literal)
    """
    The address peers reach us at; unset, it is the bind address, or, when
    bound to every interface, picked from the network interfaces by
    L{cluster.gossip.advertise} (C{advertise_interfaces} first, else
    memberlist's first private IPv4; never loopback).
    """
    advertise_port: int | None = attrs.field(default=None, validator=port_number)
    """The port peers reach us at; unset, the bound port."""
    advertise_interfaces: tuple[str, ...] | None = attrs.field(
        default=None, converter=_interface_names, validator=_interfaces
    )
    """The interfaces to take the advertised address from, best first."""

    protocol_version: int = attrs.field(default=2)
    """
    The memberlist protocol version we speak, within
    L{PROTOCOL_VERSION_MIN}..L{PROTOCOL_VERSION_MAX}.
    """
    delegate_protocol_min: int = attrs.field(default=0, validator=_byte)
    """
    The oldest version of the application's own protocol (the delegate's)
    that we understand; advertised to peers, and checked by Serf agents.
    """
    delegate_protocol_max: int = attrs.field(default=0, validator=_byte)
    """The newest delegate protocol version we understand."""
    delegate_protocol_version: int = attrs.field(default=0, validator=_byte)
    """The delegate protocol version we speak."""

    tcp_timeout: float = attrs.field(default=10.0, validator=_positive)
    """
    How long a TCP stream may take: ours from dial to reply (a push/pull, a
    join), or a peer's to deliver its message.
    """
    indirect_checks: int = attrs.field(default=3, validator=not_negative)
    """
    How many other members are asked to ping a member that missed our
    direct probe, before we suspect it.
    """
    retransmit_mult: int = attrs.field(default=4, validator=_positive)
    """
    Each broadcast is sent C{retransmit_mult * ceil(log10(n + 1))} times
    (L{cluster.gossip.broadcast.retransmit_limit}).
    """
    suspicion_mult: int = attrs.field(default=4, validator=_positive)
    """
    The shortest suspicion lasts C{suspicion_mult * max(1, log10(n))} probe
    intervals (L{cluster.gossip.suspicion.suspicion_timeout}).
    """
    suspicion_max_timeout_mult: int = attrs.field(default=6, validator=_positive)
    """
    The longest suspicion, as a multiple of the shortest: an unconfirmed
    suspicion runs that long, and each independent confirmation shortens
    it (Lifeguard).
    """
    push_pull_interval: float = attrs.field(default=30.0, validator=not_negative)
    """How often a full state exchange with a random member runs; 0: never."""
    probe_interval: float = attrs.field(default=1.0, validator=_positive)
    """One failure-detection round: a probe of the next member in turn."""
    probe_timeout: float = attrs.field(default=0.5, validator=_positive)
    """
    How long a direct ping waits for its ack before indirect pings and a
    TCP ping join it; all of them wait until the round ends.
    """
    disable_tcp_pings: bool = False
    """Leave out the TCP ping that tells a lost datagram from a dead member."""
    awareness_max_multiplier: int = attrs.field(default=8, validator=_positive)
    """
    Lifeguard's local health: while we seem unhealthy ourselves (our probes
    unanswered, suspicions of us to refute), each of our probe rounds waits
    longer for its answers, up to this many probe intervals.
    """
    gossip_nodes: int = attrs.field(default=3, validator=not_negative)
    """To how many random members each gossip round sends."""
    gossip_interval: float = attrs.field(default=0.2, validator=not_negative)
    """The time between gossip rounds; 0: no gossip."""
    gossip_to_the_dead_time: float = attrs.field(default=30.0, validator=not_negative)
    """
    How long a dead member is still gossiped to (so that it can hear of its
    death and refute it) and listed, before it is reaped.
    """
    dead_node_reclaim_time: float = attrs.field(default=0.0, validator=not_negative)
    """
    After how long another address may take a dead member's name; 0: never
    (the name stays bound to its address until reaped).
    """
    enable_compression: bool = True
    """Compress what we send (LZW, as memberlist)."""
    udp_buffer_size: int = attrs.field(default=1400, validator=_positive)
    """The largest datagram we send, in bytes; at least 576."""

    serf_leave_intent: bool = False
    """
    Make L{Memberlist.leave} announce a Serf leave intent first (sent
    directly to every live member, and gossiped), so Serf agents in the
    cluster report us as I{left} rather than I{failed}.
    """
    label: str = attrs.field(default="", validator=_label)
    """
    The cluster's label, on every packet and stream (at most 255 bytes):
    members with another label are not heard.
    """
    keyring: Keyring | None = attrs.field(default=None, eq=False)
    """The keys that encrypt gossip (AES-GCM), the first one encrypting."""
    tls: StreamTLS | None = attrs.field(default=None, eq=False)
    """
    Mutual TLS on every TCP stream (L{cluster.gossip.tls}); UDP gossip is
    protected by C{keyring} alone.
    """
    gossip_verify_incoming: bool = True
    """With a keyring: refuse what arrives unencrypted (off for a rolling switch)."""
    gossip_verify_outgoing: bool = True
    """With a keyring: encrypt what we send (off for a rolling switch)."""

    delegate: IDelegate | None = attrs.field(default=None, eq=False)
    """The application's metadata, messages and state, as memberlist's."""
    events: IEventDelegate | None = attrs.field(default=None, eq=False)
    """Told of every join, leave and update."""
    conflict: IConflictDelegate | None = attrs.field(default=None, eq=False)
    """Told when another address claims a member's name."""

    def __attrs_post_init__(self) -> None:
        if not PROTOCOL_VERSION_MIN <= self.protocol_version <= PROTOCOL_VERSION_MAX:
            raise ValueError(
                f"protocol_version must be {PROTOCOL_VERSION_MIN}.."
                f"{PROTOCOL_VERSION_MAX}, got {self.protocol_version!r}"
            )
        if self.probe_timeout > self.probe_interval:
            raise ValueError("probe_timeout must not exceed probe_interval")
        if self.delegate_protocol_min > self.delegate_protocol_max:
            raise ValueError(
                "delegate_protocol_min must not exceed delegate_protocol_max"
            )
        if self.delegate_protocol_max and not (
            self.delegate_protocol_min
            <= self.delegate_protocol_version
            <= self.delegate_protocol_max
        ):
            raise ValueError(
                "delegate_protocol_version must lie within "
                "delegate_protocol_min..delegate_protocol_max"
            )
        if self.udp_buffer_size < 576:
            raise ValueError("udp_buffer_size must be at least 576")

    @classmethod
    def lan(cls, **overrides: Unpack[GossipSettings]) -> GossipConfig:
        """
        memberlist's C{DefaultLANConfig}: 1 s probes, 500 ms timeout.
        """
        return cls(**overrides)

    @classmethod
    def wan(cls, **overrides: Unpack[GossipSettings]) -> GossipConfig:
        """
        memberlist's C{DefaultWANConfig}: 5 s probes, 3 s timeout.
        """
        settings: GossipSettings = {
            "tcp_timeout": 30.0,
            "suspicion_mult": 6,
            "push_pull_interval": 60.0,
            "probe_timeout": 3.0,
            "probe_interval": 5.0,
            "gossip_nodes": 4,
            "gossip_interval": 0.5,
            "gossip_to_the_dead_time": 60.0,
        }
        return cls(**(settings | overrides))

    @classmethod
    def alloy(cls, **overrides: Unpack[GossipSettings]) -> GossipConfig:
        """
        The timings Grafana Alloy's nodes run: ckit's C{NewNode} takes
        memberlist's C{DefaultLANConfig} and sets 5 s probes, a 2 s probe
        timeout and a 2 s TCP timeout.

        ckit also turns TCP pings off and raises the packet size to 10 MiB,
        because its transport is HTTP/2: every packet already travels over
        TCP.  Ours sends packets as UDP datagrams, so this profile keeps TCP
        pings (they tell a lost datagram from a dead member) and the
        1,400-byte datagram.  Alloy's cluster name is ckit's label: give it
        as C{label} (the service's C{cluster_name}).
        """
        ckit = GossipSettings(probe_interval=5.0, probe_timeout=2.0, tcp_timeout=2.0)
        return cls(**(ckit | overrides))

    @classmethod
    def local(cls, **overrides: Unpack[GossipSettings]) -> GossipConfig:
        """
        memberlist's C{DefaultLocalConfig}: for nodes on one host.
        """
        settings: GossipSettings = {
            "tcp_timeout": 1.0,
            "indirect_checks": 1,
            "retransmit_mult": 2,
            "suspicion_mult": 3,
            "push_pull_interval": 15.0,
            "probe_timeout": 0.2,
            "probe_interval": 1.0,
            "gossip_interval": 0.1,
            "gossip_to_the_dead_time": 15.0,
        }
        return cls(**(settings | overrides))

    def vsn(self) -> bytes:
        """
        The 6 version bytes we advertise: C{[PMin, PMax, PCur, DMin, DMax, DCur]}.
        """
        return bytes(
            [
                PROTOCOL_VERSION_MIN,
                PROTOCOL_VERSION_MAX,
                self.protocol_version,
                self.delegate_protocol_min,
                self.delegate_protocol_max,
                self.delegate_protocol_version,
            ]
        )
