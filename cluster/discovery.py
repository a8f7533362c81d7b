"""
Peer discovery for the cluster service (Alloy's
C{internal/service/cluster/discovery}).

L{join_addresses} turns Alloy's C{--cluster.join-addresses} into a
discovery function.  Each address is split into host and port (the
default port when none is given), then the host goes through these
resolvers in order, and the first that finds anything wins:

 1. a scheme prefix: C{dns+name} (A and AAAA records), C{dnssrv+name} and
    C{dnssrvnoa+name} (the targets of SRV records, as host names);
 2. a literal IPv4 or IPv6 address, used as is;
 3. A and AAAA records of the host;
 4. SRV records of the host (their targets).

Every result is joined with the address's port: as in Alloy, an SRV
record's own port is not used.  Results are de-duplicated in order; a name
that resolves to nothing is logged as a warning and skipped; discovery
fails only when nothing at all resolved.  Lookups go through a
C{twisted.names} resolver, never a blocking call.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IResolver
from twisted.logger import Logger
from twisted.names import dns

__all__ = [
    "DiscoverFn",
    "DiscoveryError",
    "join_addresses",
    "peer_discovery",
    "static",
]

DiscoverFn = Callable[[], "list[str] | Deferred[list[str]]"]

_log = Logger()
# twisted.names' usual retry schedule, in seconds.
_TIMEOUTS = (1, 3, 11, 45)


class DiscoveryError(Exception):
    """
    No join address could be resolved.
    """


def static(addresses: Sequence[str]) -> DiscoverFn:
    """
    Discovery that always returns C{addresses}.
    """
    fixed = list(addresses)
    return lambda: list(fixed)


def _split(address: str, default_port: int) -> tuple[str, str]:
    # Go's net.SplitHostPort: "host:port" or "[v6]:port"; anything else is a
    # bare host that takes the default port.
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            return host, rest[1:]
    elif address.count(":") == 1:
        host, port = address.split(":")
        if port.isdigit():
            return host, port
    return address, str(default_port)


def _join(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip(record: Any) -> str:
    if isinstance(record, dns.Record_AAAA):
        return socket.inet_ntop(socket.AF_INET6, record.address)
    return str(record.dottedQuad())


def _answers(result: Any, record_type: int) -> list[Any]:
    answers, _authority, _additional = result
    return [r.payload for r in answers if r.type == record_type]


class _Resolvers:
    """
    The four resolvers, each C{host -> Deferred[list[str]]} (empty when
    nothing was found; failures are logged at debug level).
    """

    def __init__(self, resolver: IResolver) -> None:
        self.resolver = resolver

    async def addresses(self, name: str) -> list[str]:
        found: list[str] = []
        for lookup, record_type in (
            (self.resolver.lookupAddress, dns.A),
            (self.resolver.lookupIPV6Address, dns.AAAA),
        ):
            try:
                result = await lookup(name, _TIMEOUTS)
            except Exception as e:
                _log.debug(
                    "no {kind} records for {name}: {e}",
                    kind=record_type,
                    name=name,
                    e=e,
                )
                continue
            found.extend(_ip(record) for record in _answers(result, record_type))
        return found

    async def srv_targets(self, name: str) -> list[str]:
        try:
            result = await self.resolver.lookupService(name, _TIMEOUTS)
        except Exception as e:
            _log.debug("no SRV records for {name}: {e}", name=name, e=e)
            return []
        return [str(record.target) for record in _answers(result, dns.SRV)]

    async def scheme(self, host: str) -> list[str]:
        if host.startswith("dns+"):
            return await self.addresses(host[len("dns+") :])
        if host.startswith("dnssrv+"):
            return await self.srv_targets(host[len("dnssrv+") :])
        if host.startswith("dnssrvnoa+"):
            return await self.srv_targets(host[len("dnssrvnoa+") :])
        return []

    async def literal(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return []

    async def resolve(self, host: str) -> list[str]:
        for resolver in (self.scheme, self.literal, self.addresses, self.srv_targets):
            found = await resolver(host)
            if found:
                return found
        return []


def join_addresses(
    addresses: Sequence[str] | str,
    default_port: int,
    resolver: IResolver | None = None,
) -> DiscoverFn:
    """
    Discovery from Alloy-style join addresses (see the module docstring).

    @param addresses: the addresses, or one comma-separated string of them.
    @param resolver: a C{twisted.names} resolver (default: the system's,
        created on first use).
    @return: a function returning a Deferred of C{"host:port"} strings.
    """
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    entries = list(addresses)
    chosen: list[IResolver] = [resolver] if resolver is not None else []

    def discover() -> Deferred[list[str]]:
        if not entries:
            return succeed([])
        if not chosen:
            from twisted.names import client

            chosen.append(client.createResolver())
        return Deferred.fromCoroutine(_discover(entries, default_port, chosen[0]))

    return discover


async def _discover(
    entries: Sequence[str], default_port: int, resolver: IResolver
) -> list[str]:
    resolvers = _Resolvers(resolver)
    result: list[str] = []
    for entry in entries:
        host, port = _split(entry, default_port)
        found = await resolvers.resolve(host)
        if not found:
            _log.warn("failed to resolve provided join address {addr}", addr=entry)
        for address in found:
            joined = _join(address, port)
            if joined not in result:
                result.append(joined)
    if not result:
        raise DiscoveryError(
            "failed to find any valid join addresses in " + ", ".join(entries)
        )
    return result


def peer_discovery(
    join_peers: Sequence[str],
    discover_peers: str = "",
    default_port: int = 7946,
    resolver: IResolver | None = None,
) -> DiscoverFn | None:
    """
    Build the discovery function from Alloy's two flags, which exclude each
    other.  Cloud provider discovery (C{discover_peers}, go-discover in
    Alloy) has no Python counterpart here and is refused.

    @return: C{None} when neither is set.
    @raise ValueError: naming the flags, when both are set or
        C{discover_peers} is used.
    """
    if join_peers and discover_peers:
        raise ValueError(
            "at most one of join peers and discover peers may be set, got join "
            f"peers {list(join_peers)!r} and discover peers {discover_peers!r}"
        )
    if discover_peers:
        raise ValueError(
            f"discover_peers: cloud provider discovery is not supported, "
            f"got {discover_peers!r}; use join addresses"
        )
    if join_peers:
        return join_addresses(join_peers, default_port, resolver)
    return None
