"""
L{GossipConfig}: every knob of the membership layer, with memberlist's
DefaultLANConfig, DefaultWANConfig and DefaultLocalConfig as presets.
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

    Field defaults are memberlist's C{DefaultLANConfig}; use L{lan}, L{wan}
    or L{local} for the presets, each taking overrides as keywords.  Times
    are in seconds.  Invalid values raise C{ValueError} naming the field,
    before any socket is opened.

    C{advertise_address} is the address peers reach us at; unset, it is
    the bind address, or, when bound to every interface, picked from the
    network interfaces by L{cluster.gossip.advertise} (C{advertise_interfaces}
    first, else memberlist's first private IPv4; never loopback).

    C{tls} makes every TCP stream mutual TLS (L{cluster.gossip.tls}); UDP
    gossip is protected by C{keyring} alone.

    C{serf_leave_intent} makes L{Memberlist.leave} announce a Serf leave
    intent first (sent directly to every live member, and gossiped), so Serf
    agents in the cluster report us as I{left} rather than I{failed}.

    Lifeguard can be switched off for comparison: C{awareness_max_multiplier=1}
    disables local health scaling (and with it the use of nacks), and
    C{suspicion_max_timeout_mult=1} makes suspicion timeouts static.
    """

    name: str = attrs.field(factory=socket.gethostname, validator=_name)
    bind_address: str = attrs.field(default="0.0.0.0", validator=_ip_literal)
    bind_port: int = attrs.field(default=7946, validator=port_number)
    advertise_address: str | None = attrs.field(default=None, validator=_ip_literal)
    advertise_port: int | None = attrs.field(default=None, validator=port_number)
    advertise_interfaces: tuple[str, ...] | None = attrs.field(
        default=None, converter=_interface_names, validator=_interfaces
    )

    # One line per memberlist Config field (config.go): lines alike in shape
    # are different settings with their own defaults and checks.
    protocol_version: int = attrs.field(default=2)
    delegate_protocol_min: int = attrs.field(default=0, validator=_byte)
    delegate_protocol_max: int = attrs.field(default=0, validator=_byte)
    delegate_protocol_version: int = attrs.field(default=0, validator=_byte)

    tcp_timeout: float = attrs.field(default=10.0, validator=_positive)
    indirect_checks: int = attrs.field(default=3, validator=not_negative)
    retransmit_mult: int = attrs.field(default=4, validator=_positive)
    suspicion_mult: int = attrs.field(default=4, validator=_positive)
    suspicion_max_timeout_mult: int = attrs.field(default=6, validator=_positive)
    push_pull_interval: float = attrs.field(default=30.0, validator=not_negative)
    probe_interval: float = attrs.field(default=1.0, validator=_positive)
    probe_timeout: float = attrs.field(default=0.5, validator=_positive)
    disable_tcp_pings: bool = False
    awareness_max_multiplier: int = attrs.field(default=8, validator=_positive)
    gossip_nodes: int = attrs.field(default=3, validator=not_negative)
    gossip_interval: float = attrs.field(default=0.2, validator=not_negative)
    gossip_to_the_dead_time: float = attrs.field(default=30.0, validator=not_negative)
    dead_node_reclaim_time: float = attrs.field(default=0.0, validator=not_negative)
    enable_compression: bool = True
    udp_buffer_size: int = attrs.field(default=1400, validator=_positive)

    serf_leave_intent: bool = False
    label: str = attrs.field(default="", validator=_label)
    keyring: Keyring | None = attrs.field(default=None, eq=False)
    tls: StreamTLS | None = attrs.field(default=None, eq=False)
    gossip_verify_incoming: bool = True
    gossip_verify_outgoing: bool = True

    delegate: IDelegate | None = attrs.field(default=None, eq=False)
    events: IEventDelegate | None = attrs.field(default=None, eq=False)
    conflict: IConflictDelegate | None = attrs.field(default=None, eq=False)

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
