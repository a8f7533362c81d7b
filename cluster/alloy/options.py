"""
L{Options}: the settings of the cluster service, field for field Alloy's
C{cluster.Options}, plus what a Twisted program embedding it needs.

An invalid value raises L{OptionError}, which names the field it is about
in C{field}, so that a program with its own names for the settings (a
command line's flags) can name them in its turn.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import attrs
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from cluster.gossip import GossipConfig, Keyring
from cluster.gossip.advertise import DEFAULT_INTERFACES
from cluster.gossip.config import NAME_MAX_SIZE, GossipSettings
from cluster.gossip.tls import StreamTLS, load_stream_tls
from cluster.serf.tags import tags_meta

__all__ = ["DiscoverPeers", "OptionError", "Options"]

DiscoverPeers = Callable[[], "list[str] | Deferred[list[str]]"]

LABEL_MAX_SIZE = 255
_TLS_PATHS = ("tls_ca_path", "tls_cert_path", "tls_key_path")


class OptionError(ValueError):
    """
    An invalid value of one field of L{Options}: C{str()} gives
    C{"field: reason"}.

    @ivar field: the field's name, as L{Options} spells it.
    @ivar reason: what is wrong with it, in words, without the field's name.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def split_advertise_address(text: str) -> tuple[str, int | None]:
    """
    Split C{"ip"}, C{"ip:port"} or C{"[v6]:port"}.

    @raise OptionError: about C{advertise_address}, when malformed.
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
        raise OptionError(
            "advertise_address",
            f"must be an IP address with an optional port, got {text!r}",
        ) from None
    if number is not None and not 0 < number <= 65535:
        raise OptionError("advertise_address", f"has a bad port: {text!r}")
    return host, number


class _Named(Protocol):
    name: str


def _not_negative(instance: object, attribute: _Named, value: float) -> None:
    if value < 0:
        raise OptionError(attribute.name, f"must not be negative, got {value!r}")


def _port(instance: object, attribute: _Named, value: int) -> None:
    if not 0 <= value <= 65535:
        raise OptionError(attribute.name, f"must be 0..65535, got {value!r}")


def _ip_address(instance: object, attribute: _Named, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise OptionError(
            attribute.name, f"must be an IP address, got {value!r}"
        ) from None


def _node_name(instance: object, attribute: _Named, value: str) -> None:
    if not value:
        raise OptionError(attribute.name, "must not be empty")
    if len(value.encode("utf-8")) > NAME_MAX_SIZE:
        raise OptionError(attribute.name, f"must be at most {NAME_MAX_SIZE} bytes")


def _label(instance: object, attribute: _Named, value: str) -> None:
    if len(value.encode("utf-8")) > LABEL_MAX_SIZE:
        raise OptionError(attribute.name, f"must be at most {LABEL_MAX_SIZE} bytes")


def _advertise_address(instance: object, attribute: _Named, value: str | None) -> None:
    if value:
        split_advertise_address(value)


def _interfaces(instance: object, attribute: _Named, value: tuple[str, ...]) -> None:
    if not all(isinstance(name, str) and name for name in value):
        raise OptionError(attribute.name, f"must be interface names, got {value!r}")


def _callable(instance: object, attribute: _Named, value: DiscoverPeers | None) -> None:
    if value is not None and not callable(value):
        raise OptionError(attribute.name, "must be callable")


def _tags(instance: object, attribute: _Named, value: Mapping[str, str]) -> None:
    try:
        tags_meta(value)
    except ValueError as e:
        raise OptionError(attribute.name, str(e)) from None


def _tag_map(tags: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(tags, Mapping):
        raise OptionError("tags", f"must map tag names to values, got {tags!r}")
    return dict(tags)


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
    (a L{GossipConfig} preset, LAN by default), C{keyring} for gossip
    encryption, C{tags} (Serf's tags at start, advertised in the node
    meta, see L{cluster.serf.tags}; the service's C{set_tags} changes them),
    and C{fail_on_discovery_error}: Alloy bootstraps a new
    cluster when discovery fails at start-up; with this set, start-up
    fails instead (L{ClusterService.when_joined} fails with the
    discovery's error), for a program told where its cluster is.

    As in Alloy's Go struct, C{enable_clustering} defaults to false: a
    disabled service is a one-node cluster that owns every key.

    @raise OptionError: naming the field, for an invalid value or
        combination.
    """

    log: Logger | None = None
    metrics: CollectorRegistry | None = None
    tracer: object = None
    enable_clustering: bool = False
    node_name: str = attrs.field(factory=socket.gethostname, validator=_node_name)
    advertise_address: str | None = attrs.field(
        default=None, validator=_advertise_address
    )
    advertise_interfaces: tuple[str, ...] = attrs.field(
        default=DEFAULT_INTERFACES, converter=_interface_names, validator=_interfaces
    )
    enable_tls: bool = False
    tls_ca_path: str = ""
    tls_cert_path: str = ""
    tls_key_path: str = ""
    tls_server_name: str = ""
    allow_plaintext_udp: bool = False
    rejoin_interval: float = attrs.field(default=60.0, validator=_not_negative)
    cluster_max_join_peers: int = attrs.field(default=5, validator=_not_negative)
    cluster_name: str = attrs.field(default="", validator=_label)
    minimum_cluster_size: int = attrs.field(default=0, validator=_not_negative)
    minimum_size_wait_timeout: float = attrs.field(default=0.0, validator=_not_negative)
    discover_peers: DiscoverPeers | None = attrs.field(
        default=None, validator=_callable
    )
    fail_on_discovery_error: bool = False
    bind_address: str = attrs.field(default="0.0.0.0", validator=_ip_address)
    bind_port: int = attrs.field(default=7946, validator=_port)
    gossip: GossipConfig | None = None
    keyring: Keyring | None = attrs.field(default=None, eq=False)
    tags: Mapping[str, str] = attrs.field(
        factory=dict, converter=_tag_map, validator=_tags, hash=False
    )
    _tls: StreamTLS | None = attrs.field(default=None, init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.enable_tls:
            object.__setattr__(self, "_tls", self._load_tls())
        # Every field of ours is valid: what the gossip configuration
        # still refuses is in the preset.
        try:
            self.gossip_config()
        except ValueError as e:
            raise OptionError("gossip", str(e)) from None

    def _load_tls(self) -> StreamTLS:
        for field in _TLS_PATHS:
            path = getattr(self, field)
            if not path:
                raise OptionError(field, "is required when enable_tls is set")
            if not os.path.exists(path):
                raise OptionError(field, f"{path} does not exist")
        keyed = self.keyring is not None or (
            self.gossip is not None and self.gossip.keyring is not None
        )
        if not keyed and not self.allow_plaintext_udp:
            raise OptionError(
                "enable_tls",
                "TLS protects the TCP streams only, and gossip over UDP would "
                "stay in plaintext; set a gossip key (keyring) or "
                "allow_plaintext_udp",
            )
        try:
            return load_stream_tls(
                self.tls_ca_path,
                self.tls_cert_path,
                self.tls_key_path,
                self.tls_server_name,
            )
        except ValueError as e:
            # load_stream_tls starts its message with the field it names.
            field, _, reason = str(e).partition(": ")
            if field not in _TLS_PATHS:
                field, reason = "enable_tls", str(e)
            raise OptionError(field, reason) from None

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
        return attrs.evolve(base, **settings)
