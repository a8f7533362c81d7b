"""
L{Options}: the settings of the cluster service, field for field Alloy's
C{cluster.Options}, plus what a Twisted program embedding it needs.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable

import attrs
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from cluster.gossip import GossipConfig, Keyring
from cluster.gossip.advertise import DEFAULT_INTERFACES
from cluster.gossip.config import (
    NAME_MAX_SIZE,
    GossipSettings,
    not_negative,
    port_number,
)
from cluster.gossip.tls import StreamTLS, load_stream_tls

__all__ = ["DiscoverPeers", "Options"]

DiscoverPeers = Callable[[], "list[str] | Deferred[list[str]]"]


def split_advertise_address(text: str) -> tuple[str, int | None]:
    """
    Split C{"ip"}, C{"ip:port"} or C{"[v6]:port"}.

    @raise ValueError: naming C{advertise_address} when malformed.
    """
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        number = None if port is None else int(port)
    except ValueError:
        raise ValueError(
            f"advertise_address must be an IP address with an optional port, "
            f"got {text!r}"
        ) from None
    if number is not None and not 0 < number <= 65535:
        raise ValueError(f"advertise_address has a bad port: {text!r}")
    return host, number


def _interface_names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen
class Options:
    """
    How to run a L{cluster.alloy.service.ClusterService}.  Fixed for the life of
    the service.

    Alloy's fields: C{log}, C{metrics} (a per-node
    C{prometheus_client.CollectorRegistry}), C{tracer} (optional, unused
    unless given), C{enable_clustering}, C{node_name} (default: the host
    name), C{advertise_address} (C{"ip"} or C{"ip:port"}; default: the
    bind address, or when bound to every interface an address of
    C{advertise_interfaces}, Alloy's C{eth0, en0} by default, C{["all"]}
    for any; see L{cluster.gossip.advertise}), C{enable_tls} and the C{tls_*}
    paths (mutual TLS on every TCP stream, see L{cluster.gossip.tls}; the
    files are read here, so a missing or bad one raises at once),
    C{rejoin_interval} (seconds, 0 disables), C{cluster_max_join_peers}
    (0 joins every discovered peer), C{cluster_name} (the gossip label:
    nodes with another name cannot join), C{minimum_cluster_size},
    C{minimum_size_wait_timeout} (seconds, 0 waits forever) and
    C{discover_peers} (a callable returning C{"host:port"} strings or a
    Deferred of them).

    Ours: C{bind_address} / C{bind_port} (0 picks a free port), C{gossip}
    (a L{GossipConfig} preset, LAN by default) and C{keyring} for gossip
    encryption.

    As in Alloy's Go struct, C{enable_clustering} defaults to false: a
    disabled service is a one-node cluster that owns every key.

    @raise ValueError: naming the field, for an invalid value or combination.
    """

    log: Logger | None = None
    metrics: CollectorRegistry | None = None
    tracer: object = None
    enable_clustering: bool = False
    node_name: str = attrs.field(factory=socket.gethostname)
    advertise_address: str | None = None
    advertise_interfaces: tuple[str, ...] = attrs.field(
        default=DEFAULT_INTERFACES, converter=_interface_names
    )
    enable_tls: bool = False
    tls_ca_path: str = ""
    tls_cert_path: str = ""
    tls_key_path: str = ""
    tls_server_name: str = ""
    allow_plaintext_udp: bool = False
    rejoin_interval: float = attrs.field(default=60.0, validator=not_negative)
    cluster_max_join_peers: int = attrs.field(default=5, validator=not_negative)
    cluster_name: str = ""
    minimum_cluster_size: int = attrs.field(default=0, validator=not_negative)
    minimum_size_wait_timeout: float = attrs.field(default=0.0, validator=not_negative)
    discover_peers: DiscoverPeers | None = None
    bind_address: str = "0.0.0.0"
    bind_port: int = attrs.field(default=7946, validator=port_number)
    gossip: GossipConfig | None = None
    keyring: Keyring | None = attrs.field(default=None, eq=False)
    _tls: StreamTLS | None = attrs.field(default=None, init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.node_name:
            raise ValueError("node_name must not be empty")
        if len(self.node_name.encode("utf-8")) > NAME_MAX_SIZE:
            raise ValueError(f"node_name must be at most {NAME_MAX_SIZE} bytes")
        if self.advertise_address:
            split_advertise_address(self.advertise_address)
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise ValueError(
                f"bind_address must be an IP address, got {self.bind_address!r}"
            ) from None
        if self.enable_tls:
            for field in ("tls_ca_path", "tls_cert_path", "tls_key_path"):
                path = getattr(self, field)
                if not path:
                    raise ValueError(f"{field} is required when enable_tls is set")
                if not os.path.exists(path):
                    raise ValueError(f"{field} does not exist: {path}")
            keyed = self.keyring is not None or (
                self.gossip is not None and self.gossip.keyring is not None
            )
            if not keyed and not self.allow_plaintext_udp:
                raise ValueError(
                    "enable_tls: TLS protects the TCP streams only, and gossip "
                    "over UDP would stay in plaintext; set a gossip key "
                    "(keyring) or allow_plaintext_udp"
                )
            tls = load_stream_tls(
                self.tls_ca_path,
                self.tls_cert_path,
                self.tls_key_path,
                self.tls_server_name,
            )
            object.__setattr__(self, "_tls", tls)
        if self.discover_peers is not None and not callable(self.discover_peers):
            raise ValueError("discover_peers must be callable")
        # Building the gossip configuration validates the rest.
        self.gossip_config()

    def gossip_config(self) -> GossipConfig:
        """
        The L{GossipConfig} these options give the node.
        """
        base = self.gossip or GossipConfig.lan()
        settings: GossipSettings = {
            "name": self.node_name,
            "bind_address": self.bind_address,
            "bind_port": self.bind_port,
            "label": self.cluster_name,
            "advertise_interfaces": self.advertise_interfaces,
        }
        if self.advertise_address:
            host, port = split_advertise_address(self.advertise_address)
            settings["advertise_address"] = host
            if port is not None:
                settings["advertise_port"] = port
        if self.keyring is not None:
            settings["keyring"] = self.keyring
        if self._tls is not None:
            settings["tls"] = self._tls
        try:
            return attrs.evolve(base, **settings)
        except ValueError as e:
            # The gossip config names its own field; say where it came from.
            raise ValueError(f"gossip: {e}") from None
