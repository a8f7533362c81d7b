"""
One cluster node as a program, with Alloy's C{--cluster.*} settings as
flags, a status site and Prometheus metrics on C{--http}: the flags
(L{ClusterNodeOptions}) and the assembly (L{makeService}, a
L{cluster.daemon.program.ClusterNode}) that C{clusternode}
(L{cluster.daemon.main}) and the C{twistd clusternode} plugin share.

Every flag, and every file a flag names, is checked while the command line
is parsed (L{cluster.daemon.flags} reads them): a bad one is a one-line
usage error naming the flag, before anything binds.
"""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry
from twisted.application import strports
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.python import usage

from cluster.alloy.discovery import peer_discovery
from cluster.alloy.options import OptionError
from cluster.alloy.options import Options as ServiceOptions
from cluster.alloy.service import ClusterService
from cluster.daemon import flags
from cluster.daemon.flags import PROFILES, Parameter
from cluster.daemon.program import ClusterNode, QuietSite
from cluster.gossip import Keyring
from cluster.gossip.interfaces import reactor_or_global
from cluster.web.site import status_site

__all__ = ["PROFILES", "ClusterNodeOptions", "Options", "makeService"]


_PARAMETERS = [
    Parameter("node-name", None, "This node's name [default: the host name]."),
    Parameter("bind", "0.0.0.0:7946", "HOST:PORT to bind gossip on.", flags.host_port),
    Parameter("advertise-address", None, "HOST[:PORT] peers reach us at."),
    Parameter(
        "advertise-interfaces",
        "eth0,en0",
        "Interfaces to take the advertised address from, or 'all'.",
        flags.interfaces,
    ),
    Parameter(
        "join-addresses",
        "",
        "Comma-separated peers to join (dns+, dnssrv+).",
        flags.join_addresses,
    ),
    Parameter(
        "rejoin-interval",
        "60s",
        "How often to rejoin (0: never).",
        flags.parse_duration,
    ),
    Parameter(
        "max-join-peers", "5", "Join at most this many of the peers found.", flags.count
    ),
    Parameter("cluster-name", "", "Only nodes with the same name can join."),
    Parameter(
        "profile", "lan", f"Gossip timings: {', '.join(PROFILES)}.", flags.profile
    ),
    Parameter(
        "keyring-file",
        None,
        "A serf keyring file (JSON list of keys).",
        flags.keyring_file,
    ),
    Parameter("tls-ca-path", "", "The cluster's CA (PEM).", flags.pem_certificate),
    Parameter("tls-cert-path", "", "This node's certificate.", flags.pem_certificate),
    Parameter("tls-key-path", "", "This node's private key.", flags.pem_private_key),
    Parameter(
        "tls-server-name",
        "",
        "The name every node's certificate carries.",
        flags.server_name,
    ),
    Parameter(
        "wait-for-size", "0", "Peers needed before the cluster is ready.", flags.count
    ),
    Parameter(
        "wait-timeout",
        "0",
        "Ready anyway after this long (0: never).",
        flags.parse_duration,
    ),
    Parameter(
        "http",
        flags.DEFAULT_HTTP,
        "Endpoint of the status site and /metrics.",
        flags.server_endpoint,
    ),
]

# The fields of the service's options that flags set as they are.
_FIELDS = {
    "node_name": "node-name",
    "advertise_address": "advertise-address",
    "advertise_interfaces": "advertise-interfaces",
    "rejoin_interval": "rejoin-interval",
    "cluster_max_join_peers": "max-join-peers",
    "cluster_name": "cluster-name",
    "gossip": "profile",
    "tls_ca_path": "tls-ca-path",
    "tls_cert_path": "tls-cert-path",
    "tls_key_path": "tls-key-path",
    "tls_server_name": "tls-server-name",
    "minimum_cluster_size": "wait-for-size",
    "minimum_size_wait_timeout": "wait-timeout",
}
# The flag behind each field, to name it in the options' errors.
_FLAG_OF_FIELD = _FIELDS | {
    "bind_address": "bind",
    "bind_port": "bind",
    "enable_tls": "enable-tls",
    "allow_plaintext_udp": "allow-plaintext-udp",
    "keyring": "encrypt-key",
    "tags": "tag",
}


class ClusterNodeOptions(usage.Options):
    """
    The node's flags (C{clusternode}, C{twistd clusternode}), mirroring
    Alloy's C{--cluster.*}.

    @ivar cluster_options: the cluster service's options, once parsed.
    """

    synopsis = "[options]"
    longdesc = (
        "Run one node of a gossip cluster (memberlist's protocol, ckit's peer "
        "states and sharding, Alloy's cluster service) with a status site and "
        "Prometheus metrics on --http."
    )
    optFlags = [
        ["enable-tls", None, "Mutual TLS on every TCP stream between nodes."],
        ["allow-plaintext-udp", None, "With --enable-tls, no gossip key: plain UDP."],
        ["viewer", None, "Stay a viewer: never own keys."],
        ["no-clustering", None, "Run alone, a one-node cluster owning every key."],
    ]
    optParameters = [parameter.option() for parameter in _PARAMETERS]
    cluster_options: ServiceOptions
    opt_tag = flags.repeatable("tag", flags.tag, "K=V: a Serf tag; repeat for more.")

    def __init__(self) -> None:
        super().__init__()
        self["encrypt-key"], self["tag"] = [], []
        for parameter in _PARAMETERS:
            if parameter.default is not None:  # usage coerces given values only
                self[parameter.name] = parameter.coerce(parameter.default)

    def opt_encrypt_key(self, key: str) -> None:
        """
        Base64 gossip key (serf's -encrypt); repeat to rotate: first encrypts.
        """
        try:
            self["encrypt-key"].append(flags.gossip_key(key))
        except ValueError as e:
            number = len(self["encrypt-key"]) + 1
            which = f" (key {number})" if number > 1 else ""
            raise usage.UsageError(f"--encrypt-key{which}: {e}") from None

    def postOptions(self) -> None:
        self._check_combinations()
        given = {field: self[flag] for field, flag in _FIELDS.items()}
        host, port = self["bind"]
        try:
            self.cluster_options = ServiceOptions(
                enable_clustering=not self["no-clustering"],
                enable_tls=bool(self["enable-tls"]),
                allow_plaintext_udp=bool(self["allow-plaintext-udp"]),
                bind_address=host,
                bind_port=port,
                keyring=self._keyring(),
                tags=flags.node_tags(self["tag"], self["http"]),
                # Told where its cluster is, a node that finds none of it
                # stops: alone, it would be a split brain waiting.
                fail_on_discovery_error=True,
                **{field: value for field, value in given.items() if value is not None},
            )
        except OptionError as e:
            raise usage.UsageError(f"--{_FLAG_OF_FIELD[e.field]}: {e.reason}") from None

    def _check_combinations(self) -> None:
        if self["no-clustering"]:
            for flag in ("viewer", "join-addresses", "enable-tls"):
                if self[flag]:
                    raise usage.UsageError(
                        f"--{flag} makes no sense with --no-clustering (a one-node "
                        "cluster that owns every key)"
                    )
        if self["encrypt-key"] and self["keyring-file"]:
            raise usage.UsageError(
                "--encrypt-key and --keyring-file exclude each other"
            )
        if not self["enable-tls"]:
            if self["allow-plaintext-udp"]:
                raise usage.UsageError("--allow-plaintext-udp goes with --enable-tls")
            return
        for flag in ("tls-ca-path", "tls-cert-path", "tls-key-path"):
            if not self[flag]:
                raise usage.UsageError(f"--{flag} is required with --enable-tls")
        if not (
            self["encrypt-key"] or self["keyring-file"] or self["allow-plaintext-udp"]
        ):
            raise usage.UsageError(
                "--enable-tls: TLS protects the TCP streams only, and gossip over "
                "UDP would stay in plaintext; give --encrypt-key or "
                "--keyring-file, or --allow-plaintext-udp"
            )
        flags.check_tls_files(
            self["tls-ca-path"], self["tls-cert-path"], self["tls-key-path"]
        )

    def _keyring(self) -> Keyring | None:
        if not self["encrypt-key"]:
            keyring: Keyring | None = self["keyring-file"]
            return keyring
        return Keyring(self["encrypt-key"])  # each key checked as given


# twistd's ServiceMaker takes the plugin module's Options.
Options = ClusterNodeOptions


def makeService(
    options: ClusterNodeOptions,
    reactor: IReactorTime | None = None,
    program: str = "twistd clusternode",
) -> ClusterNode:
    """
    The node program on C{reactor} (the global one by default, as twistd
    calls it): the cluster service, its status site on C{--http}, and
    discovery of the C{--join-addresses}; C{program} starts its error line.
    """
    clock = reactor_or_global(reactor)
    registry = CollectorRegistry(auto_describe=True)
    discover = peer_discovery(
        options["join-addresses"], default_port=options["bind"][1], reactor=clock
    )
    settings = attrs.evolve(
        options.cluster_options, metrics=registry, discover_peers=discover
    )
    cluster = ClusterService(settings, reactor=clock)
    site = QuietSite(status_site(cluster, registry))
    core = IReactorCore(clock)
    return ClusterNode(
        cluster,
        strports.service(options["http"], site, reactor=core),
        core,
        participate=not options["viewer"],
        program=program,
        twistd_options=options.parent,  # twistd's, when twistd runs us
    )
