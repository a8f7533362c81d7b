"""
C{twistd clusternode} (and C{twist clusternode}): one cluster node as a
program, with Alloy's C{--cluster.*} settings as flags, a status site and
Prometheus metrics on C{--http}.

Every flag is checked while the command line is parsed: a bad value or an
unreadable file is a one-line usage error naming the flag, before anything
binds.  Durations take Go's forms (C{500ms}, C{60s}, C{5m}, C{1h30m}).
The node moves itself to I{participant} once it has joined (Alloy's
behaviour for a component that is ready), unless C{--viewer}.

Start-up failures end the process with status 1 and one line naming the
cause: an address in use (or no address to advertise), join addresses of
which none resolves while there is nothing else to join, and a node name
that another live node of the cluster uses (the others keep that node;
see L{cluster.ckit.node}).  SIGTERM and
Ctrl-C stop the node gracefully: it announces I{terminating}, leaves (its
peers record I{left}), and closes its sockets.
"""

from __future__ import annotations

import os
import re
import socket
import sys

import attrs
from prometheus_client import CollectorRegistry
from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.server import Site

from cluster.alloy.discovery import DiscoverFn, DiscoveryError, peer_discovery
from cluster.alloy.options import Options as ClusterOptions
from cluster.alloy.service import ClusterService
from cluster.gossip import GossipConfig, Keyring
from cluster.gossip.address import parse_ip, split_host_port
from cluster.gossip.interfaces import reactor_or_global
from cluster.peer import PeerState

__all__ = ["ClusterNode", "Options", "makeService", "parse_duration"]

PROG = "twistd clusternode"
DEFAULT_BIND = "0.0.0.0:7946"
DEFAULT_HTTP = "tcp:12345:interface=127.0.0.1"
PROFILES = {
    "lan": GossipConfig.lan,
    "wan": GossipConfig.wan,
    "local": GossipConfig.local,
}

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """
    Go's C{time.ParseDuration} for non-negative durations: C{"500ms"},
    C{"60s"}, C{"1h30m"}, C{"0"}.

    @return: seconds.
    @raise ValueError: for anything else.
    """
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"not a duration (like 500ms, 60s or 5m): {text!r}")
    return total


def _bind_address(text: str) -> tuple[str, int]:
    split = split_host_port(text)
    if split is None or not split[1].isdigit() or int(split[1]) > 65535:
        raise usage.UsageError(f"--bind: not HOST:PORT (port 0-65535): {text!r}")
    return split[0], int(split[1])


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must not be negative: {text}")
    return value


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class Options(usage.Options):
    """
    The flags of C{twistd clusternode}, mirroring Alloy's C{--cluster.*}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run one node of a gossip cluster (memberlist's protocol, ckit's peer "
        "states and sharding, Alloy's cluster service) with a status site and "
        "Prometheus metrics on --http."
    )
    optFlags = [
        ["enable-tls", None, "Mutual TLS on every TCP stream between nodes."],
        [
            "allow-plaintext-udp",
            None,
            "With --enable-tls and no gossip key: accept UDP gossip in plaintext.",
        ],
        ["viewer", None, "Stay a viewer: never own keys."],
        ["no-clustering", None, "Run alone, a one-node cluster owning every key."],
    ]
    optParameters = [
        ["node-name", None, None, "This node's name [default: the host name]."],
        ["bind", None, DEFAULT_BIND, "HOST:PORT to bind gossip (UDP and TCP) on."],
        ["advertise-address", None, None, "HOST[:PORT] peers reach us at."],
        [
            "advertise-interfaces",
            None,
            "eth0,en0",
            "Interfaces to take the advertised address from, or 'all'.",
        ],
        ["join-addresses", None, "", "Comma-separated peers to join (dns+, dnssrv+)."],
        ["rejoin-interval", None, "60s", "How often to rejoin (0 disables)."],
        ["max-join-peers", None, "5", "Join at most this many of the peers found."],
        ["cluster-name", None, "", "Only nodes with the same name can join."],
        ["profile", None, "lan", "Gossip timings: lan, wan or local."],
        ["keyring-file", None, None, "A serf keyring file (JSON list of keys)."],
        ["tls-ca-path", None, "", "The cluster's certificate authority (PEM)."],
        ["tls-cert-path", None, "", "This node's certificate (PEM)."],
        ["tls-key-path", None, "", "This node's private key (PEM)."],
        ["tls-server-name", None, "", "The name every node's certificate carries."],
        ["wait-for-size", None, "0", "Peers needed before the cluster is ready."],
        ["wait-timeout", None, "0", "Ready anyway after this long (0: never)."],
        ["http", None, DEFAULT_HTTP, "Endpoint of the status site and /metrics."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["encrypt-key"] = []

    def opt_encrypt_key(self, key: str) -> None:
        """
        Base64 gossip key (serf's -encrypt); repeat to rotate: first encrypts.
        """
        self["encrypt-key"].append(key)

    def _parse(self, flag: str, parse: object) -> None:
        try:
            self[flag] = parse(self[flag])  # type: ignore[operator]
        except (ValueError, TypeError) as e:
            raise usage.UsageError(f"--{flag}: {e}") from None

    def postOptions(self) -> None:
        if self["node-name"] is None:
            self["node-name"] = socket.gethostname()
        elif not self["node-name"]:
            raise usage.UsageError("--node-name: must not be empty")
        self["bind"] = _bind_address(self["bind"])
        self._parse("rejoin-interval", parse_duration)
        self._parse("wait-timeout", parse_duration)
        self._parse("max-join-peers", _count)
        self._parse("wait-for-size", _count)
        if self["profile"] not in PROFILES:
            raise usage.UsageError(
                f"--profile: must be one of {', '.join(PROFILES)}, "
                f"got {self['profile']!r}"
            )
        self["advertise-interfaces"] = _names(self["advertise-interfaces"])
        if not self["advertise-interfaces"]:
            raise usage.UsageError(
                "--advertise-interfaces: name at least one interface, or all"
            )
        self["join-addresses"] = _names(self["join-addresses"])
        for address in self["join-addresses"]:
            split = split_host_port(address)
            if split is not None and not split[1].isdigit():
                raise usage.UsageError(f"--join-addresses: bad port in {address!r}")
        self._check_combinations()
        self._check_http()
        self["keyring"] = self._keyring()
        # Everything else is checked by the service's own options, which
        # name their field: map it back to the flag.
        self["options"] = self._cluster_options()

    def _check_combinations(self) -> None:
        if self["no-clustering"]:
            for flag in ("viewer", "join-addresses", "enable-tls"):
                if self[flag]:
                    raise usage.UsageError(
                        f"--{flag} makes no sense with --no-clustering (a one-node "
                        "cluster that owns every key)"
                    )
        if self["enable-tls"]:
            for flag in ("tls-ca-path", "tls-cert-path", "tls-key-path"):
                if not self[flag]:
                    raise usage.UsageError(f"--{flag} is required with --enable-tls")
        elif self["allow-plaintext-udp"]:
            raise usage.UsageError("--allow-plaintext-udp goes with --enable-tls")
        name = self["tls-server-name"]
        if name and not (_HOSTNAME.fullmatch(name) or parse_ip(name)):
            raise usage.UsageError(
                f"--tls-server-name: not a host name or IP address: {name!r}"
            )

    def _check_http(self) -> None:
        from twisted.internet import reactor

        try:
            serverFromString(reactor, self["http"])
        except (ValueError, TypeError, KeyError) as e:
            raise usage.UsageError(
                f"--http: not a server endpoint (like {DEFAULT_HTTP}): {e}"
            ) from None

    def _keyring(self) -> Keyring | None:
        keys: list[str] = self["encrypt-key"]
        path: str | None = self["keyring-file"]
        if keys and path:
            raise usage.UsageError(
                "--encrypt-key and --keyring-file exclude each other"
            )
        try:
            if path:
                return Keyring.from_file(path)
            if keys:
                return Keyring.from_base64(*keys)
        except (OSError, ValueError) as e:
            flag = "--keyring-file" if path else "--encrypt-key"
            raise usage.UsageError(f"{flag}: {e}") from None
        return None

    def _cluster_options(self) -> ClusterOptions:
        host, port = self["bind"]
        try:
            discover = peer_discovery(self["join-addresses"], default_port=port)
            return ClusterOptions(
                enable_clustering=not self["no-clustering"],
                node_name=self["node-name"],
                advertise_address=self["advertise-address"],
                advertise_interfaces=self["advertise-interfaces"],
                enable_tls=bool(self["enable-tls"]),
                tls_ca_path=self["tls-ca-path"],
                tls_cert_path=self["tls-cert-path"],
                tls_key_path=self["tls-key-path"],
                tls_server_name=self["tls-server-name"],
                allow_plaintext_udp=bool(self["allow-plaintext-udp"]),
                rejoin_interval=self["rejoin-interval"],
                cluster_max_join_peers=self["max-join-peers"],
                cluster_name=self["cluster-name"],
                minimum_cluster_size=self["wait-for-size"],
                minimum_size_wait_timeout=self["wait-timeout"],
                discover_peers=discover,
                bind_address=host,
                bind_port=port,
                gossip=PROFILES[self["profile"]](),
                keyring=self["keyring"],
                metrics=CollectorRegistry(auto_describe=True),
            )
        except ValueError as e:
            raise usage.UsageError(_flag_of(str(e))) from None


_FIELDS = {
    "node_name": "--node-name",
    "advertise_address": "--advertise-address",
    "advertise_interfaces": "--advertise-interfaces",
    "tls_ca_path": "--tls-ca-path",
    "tls_cert_path": "--tls-cert-path",
    "tls_key_path": "--tls-key-path",
    "allow_plaintext_udp": "--allow-plaintext-udp",
    "enable_tls": "--enable-tls",
    "bind_address": "--bind",
    "bind_port": "--bind",
    "label": "--cluster-name",
    "keyring": "--encrypt-key",
    "join_addresses": "--join-addresses",
    "discover_peers": "--join-addresses",
}


def _flag_of(message: str) -> str:
    """
    The service names the field of a bad value first; users typed flags.
    """
    named = [(message.find(field), field) for field in _FIELDS if field in message]
    if not named:
        return message
    _, first = min(named)
    for field in sorted(_FIELDS, key=len, reverse=True):
        message = message.replace(field, _FIELDS[field])
    flag = _FIELDS[first]
    return message if message.startswith(flag) else f"{flag}: {message}"


@attrs.define(eq=False, slots=False)
class ClusterNode(service.MultiService):
    """
    The node program: the cluster service, its status site, and what a
    program does around them (taking work once joined, giving up with one
    line when it cannot start).

    @param options: parsed L{Options}.
    """

    options: Options
    reactor: IReactorTime = attrs.field(default=None, converter=reactor_or_global)
    cluster: ClusterService = attrs.field(init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        service.MultiService.__init__(self)
        cluster_options: ClusterOptions = self.options["options"]
        self._discovery_failed: list[Failure] = []
        discover = cluster_options.discover_peers
        if discover is not None:
            cluster_options = attrs.evolve(
                cluster_options, discover_peers=self._watching(discover)
            )
        self.cluster = ClusterService(cluster_options, reactor=self.reactor)
        self.cluster.setServiceParent(self)
        registry = cluster_options.metrics
        assert registry is not None
        from cluster.web.site import status_site

        site = _QuietSite(status_site(self.cluster, registry))
        strports.service(self.options["http"], site).setServiceParent(self)

    def _watching(self, discover: DiscoverFn) -> DiscoverFn:
        """
        C{discover}, noting when it found nothing at all.
        """

        async def discovering() -> list[str]:
            try:
                found = discover()
                return await found if isinstance(found, Deferred) else found
            except DiscoveryError:
                self._discovery_failed.append(Failure())
                raise

        def noting() -> Deferred[list[str]]:
            return Deferred.fromCoroutine(discovering())

        return noting

    def startService(self) -> None:
        try:
            super().startService()
        except Exception as e:
            # An address in use, nothing to advertise: one line, status 1.
            self._log.error("{error}", error=e)
            raise SystemExit(f"{PROG}: {e}") from None
        joined = self.cluster.when_joined()
        joined.addCallbacks(self._joined, self._failed)

    def _joined(self, _: object) -> None:
        if self._discovery_failed and self.options["join-addresses"]:
            # Alloy would bootstrap alone; a node given only addresses that
            # do not resolve is misconfigured, and a split brain waiting.
            error = self._discovery_failed[0].getErrorMessage()
            message = f"--join-addresses: {error}"
            self._log.error("{message}", message=message)
            self._fatal(message)
            return
        if not self.options["viewer"] and self.cluster.node is not None:
            self.cluster.change_state(PeerState.PARTICIPANT)

    def _failed(self, failure: Failure) -> None:
        # A bind or advertise error, or our name in use by a live node: the
        # service or the node logged it already.
        self._fatal(failure.getErrorMessage())

    def _fatal(self, message: str) -> None:
        """
        Stop with status 1 and one line on stderr naming the cause (which
        the log holds already).
        """
        # twistd sends sys.stderr to the log: the line goes to the process's
        # own stderr, where whoever started it looks.
        stderr = sys.__stderr__ or sys.stderr
        print(f"{PROG}: {message}", file=stderr, flush=True)
        core = self.reactor
        assert IReactorCore.providedBy(core)
        # twistd has no exit status of its own: end with 1 once shut down.
        core.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        core.stop()


def makeService(options: Options) -> service.IService:
    """
    The C{twistd clusternode} service (see L{ClusterNode}).
    """
    return ClusterNode(options)


class _QuietSite(Site):
    """
    The status site without an access log: Prometheus scrapes and status
    pages refresh every few seconds, as in Alloy, which logs no requests.
    """

    noisy = False

    def startFactory(self) -> None:
        # No request log: no need for the base class's once-a-second timer
        # that keeps the log's timestamp current (an idle node would wake
        # for nothing else).
        pass

    def log(self, request: Request) -> None:
        pass
