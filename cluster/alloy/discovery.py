"""
Peer discovery for the cluster service (Alloy's
C{internal/service/cluster/discovery}).

A discovery function (L{DiscoverFn}) takes no arguments and returns the
C{"host:port"} strings of peers to join, or a Deferred of them; the service
calls it at start-up and on every rejoin.  L{static} always returns the same
list; L{join_addresses} resolves Alloy's C{--cluster.join-addresses}.

Resolving join addresses
========================

Each address is first split like Go's C{net.SplitHostPort}: C{"host:port"}
or C{"[v6]:port"} gives its own port; anything else (a bare name, a bare
IPv6 address such as C{::1}) is a host that takes the default port (Alloy
uses its HTTP listen port, 12345 unless changed).  A port on a prefixed name
(C{dns+name:7777}) is split off in the same way.  The host then goes through
these resolvers, and the first that finds anything wins:

 1. a scheme prefix, which picks the query explicitly:
     - C{dns+name}: A and AAAA records of C{name};
     - C{dnssrv+name}: SRV records of C{name}, then A and AAAA records of
       each target;
     - C{dnssrvnoa+name}: SRV records of C{name}; the targets are used as
       host names, with no further lookups;
 2. a literal IPv4 or IPv6 address, used as is (normalised);
 3. A and AAAA records of the host;
 4. SRV records of the host, targets used as host names.

As in Alloy, every result is joined with the address's port (its own or
the default): an SRV record's port is I{not} used unless C{srv_ports=True}
is asked for.  Results are de-duplicated, keeping the first occurrence.  A
join address that resolves to nothing is logged as a warning and skipped;
the discovery fails (with L{DiscoveryError}) only when nothing at all
resolved, and succeeds with C{[]} when there are no addresses.

Differences from Alloy's code, all deliberate: entries are stripped of
blanks and empty ones dropped (Alloy splits on commas only); a prefixed
name that fails is not retried as a plain name (C{dns+x} is not a valid
host name, so those lookups can only fail slowly); C{dnssrv+} resolves the
SRV targets' A/AAAA records as Alloy's documentation says (its code returns
the target names, exactly like C{dnssrvnoa+}); a bracketed IPv6 address
without a port (C{[::1]}) is taken as that address (Alloy looks it up in
DNS and fails); entries are looked up concurrently (results stay in input
order).

Every lookup goes through a C{twisted.names} L{IResolver}
(C{lookupAddress}, C{lookupIPV6Address}, C{lookupService}), so nothing
blocks the reactor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure

from cluster.alloy.options import OptionError
from cluster.gossip.address import (
    DNS_TIMEOUT,
    ResolveError,
    default_resolver,
    describe_failure,
    gather,
    join_host_port,
    lookup_result,
    parse_ip,
    record_payloads,
    resolve_host,
    split_host_port,
)

__all__ = [
    "DNS_TIMEOUT",
    "DiscoverFn",
    "DiscoveryError",
    "join_addresses",
    "peer_discovery",
    "static",
    "validate_discovery",
]

DiscoverFn: TypeAlias = Callable[[], "Deferred[list[str]] | list[str]"]
"""
A peer discovery function: no arguments, returns C{"host:port"} strings or
a Deferred of them.
"""


_DNS = "dns+"
_DNSSRV = "dnssrv+"
_DNSSRVNOA = "dnssrvnoa+"

_log = Logger()

# A resolved host, with the port an SRV record gave it (None: the address's).
_Found = list[tuple[str, "int | None"]]


class DiscoveryError(Exception):
    """
    None of the join addresses resolved.

    @ivar reasons: for each join address, why each resolver found nothing.
    """

    def __init__(self, reasons: dict[str, list[str]]) -> None:
        self.reasons = reasons
        detail = "; ".join(
            f"{address}: {_summary(why)}" for address, why in reasons.items()
        )
        super().__init__(f"failed to find any valid join addresses: {detail}")


def _summary(why: list[str]) -> str:
    """
    The reasons of one address (C{"QUERY NAME: ANSWER"} each), the answer
    alone when every query got the same one (a name that does not exist
    has no A, AAAA or SRV record alike).
    """
    answers = {reason.partition(": ")[2] or reason for reason in why}
    if len(answers) == 1:
        return answers.pop()
    return ", ".join(why) or "nothing found"


def static(addresses: Sequence[str]) -> DiscoverFn:
    """
    Discovery that always returns C{addresses} (a copy, so callers may
    change what they get).
    """
    fixed = list(addresses)
    return lambda: list(fixed)


def _split_entries(addresses: Sequence[str] | str) -> list[str]:
    if isinstance(addresses, str):
        addresses = addresses.split(",")
    return [a.strip() for a in addresses if a.strip()]


class _Lookups:
    """
    One discovery run's DNS queries.  Each method returns what it found
    and appends to C{why} the reason when it found nothing.
    """

    def __init__(
        self, resolver: IResolver, timeout: Sequence[int], srv_ports: bool
    ) -> None:
        self.resolver = resolver
        self.timeout = tuple(timeout)
        self.srv_ports = srv_ports

    async def addresses(self, name: str, why: list[str]) -> _Found:
        """
        A and AAAA records of C{name}, queried at once (Go's LookupIP).
        """
        try:
            found = await resolve_host(self.resolver, name, self.timeout)
        except ResolveError as e:
            why.append(f"A/AAAA {name}: {e.answer}")
            return []
        return [(address, None) for address in found]

    async def srv(self, name: str, why: list[str]) -> _Found:
        """
        SRV targets of C{name}, as host names.
        """
        lookup = self.resolver.lookupService(name, self.timeout)
        (result,) = await gather([lookup_result(lookup)])
        if isinstance(result, Failure):
            why.append(f"SRV {name}: {describe_failure(result)}")
            return []
        found: _Found = []
        for record in record_payloads(result, dns.Record_SRV):
            target = str(record.target).rstrip(".")
            if target:  # "." means "no such service here" (RFC 2782)
                port = record.port if self.srv_ports and record.port else None
                found.append((target, port))
        if not found:
            why.append(f"SRV {name}: no records")
        return found

    async def srv_addresses(self, name: str, why: list[str]) -> _Found:
        """
        SRV targets of C{name}, each resolved to its A/AAAA addresses.
        """
        targets = await self.srv(name, why)
        resolved = await gather(
            [
                Deferred.fromCoroutine(self.addresses(target, why))
                for target, _ in targets
            ]
        )
        found: _Found = []
        for (_target, port), addresses in zip(targets, resolved, strict=True):
            if isinstance(addresses, Failure):  # a bug, not a DNS answer
                addresses.raiseException()
            found.extend((address, port) for address, _ in addresses)
        return found

    async def resolve(self, host: str, why: list[str]) -> _Found:
        """
        C{host} through Alloy's resolvers in order; the first that finds
        anything wins.
        """
        for prefix, explicit in (
            (_DNS, self.addresses),
            (_DNSSRV, self.srv_addresses),
            (_DNSSRVNOA, self.srv),
        ):
            if host.startswith(prefix):
                return await explicit(host[len(prefix) :], why)
        # "[::1]" without a port: Alloy would look it up in DNS (and fail).
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        ip = parse_ip(bare)
        if ip is not None:
            return [(ip, None)]
        return await self.addresses(host, why) or await self.srv(host, why)


def join_addresses(
    addresses: Sequence[str] | str,
    default_port: int,
    resolver: IResolver | None = None,
    reactor: IReactorTime | None = None,
    *,
    srv_ports: bool = False,
    timeout: Sequence[int] = DNS_TIMEOUT,
    log: Logger | None = None,
) -> DiscoverFn:
    """
    Discovery from Alloy-style join addresses (see the module docstring).

    @param addresses: the addresses, or one comma-separated string of them.
    @param default_port: the port of addresses that carry none (Alloy: its
        HTTP listen port; here, normally the gossip bind port).
    @param resolver: a C{twisted.names} resolver; by default the system's
        (hosts file and C{resolv.conf}), created on first use.
    @param reactor: the reactor for that default resolver (UDP, TCP and
        time); the global one when C{None}.
    @param srv_ports: use an SRV record's port (when not 0) for addresses
        that carry no port of their own.  Alloy never does: it always uses
        the address's port or the default one.
    @param timeout: retry timeouts of each DNS query.
    @param log: where warnings go.
    @return: a function returning a Deferred of C{"host:port"} strings.
    """
    entries = _split_entries(addresses)
    logger = log if log is not None else _log
    chosen: list[IResolver] = [resolver] if resolver is not None else []

    def discover() -> Deferred[list[str]]:
        if not entries:
            return succeed([])
        if not chosen:
            chosen.append(default_resolver(reactor))
        lookups = _Lookups(chosen[0], timeout, srv_ports)
        return Deferred.fromCoroutine(
            _discover(entries, str(default_port), lookups, logger)
        )

    return discover


async def _discover(
    entries: Sequence[str], default_port: str, lookups: _Lookups, log: Logger
) -> list[str]:
    jobs: list[tuple[str, str, bool, list[str]]] = []
    runs: list[Deferred[_Found]] = []
    for entry in entries:
        split = split_host_port(entry)
        host, port = split if split is not None else (entry, default_port)
        why: list[str] = []
        # An explicit port wins even over SRV ports (with srv_ports=True).
        jobs.append((entry, port, split is not None, why))
        runs.append(Deferred.fromCoroutine(lookups.resolve(host, why)))
    # Every entry is looked up at once; results are taken in input order.
    resolved = await gather(runs)

    result: list[str] = []
    seen: set[str] = set()
    reasons: dict[str, list[str]] = {}
    for (entry, port, explicit, why), found in zip(jobs, resolved, strict=True):
        if isinstance(found, Failure):  # a bug rather than a DNS answer
            found.raiseException()
        if not found:
            # Alloy warns once per address and keeps the details at debug.
            log.warn("failed to resolve provided join address {addr}", addr=entry)
            log.debug("join address {addr}: {why}", addr=entry, why=why)
            reasons[entry] = why
        for host, srv_port in found:
            use_srv = srv_port is not None and not explicit
            joined = join_host_port(host, str(srv_port) if use_srv else port)
            if joined not in seen:
                seen.add(joined)
                result.append(joined)
    if not result:
        raise DiscoveryError(reasons)
    return result


def validate_discovery(
    join_addresses: Sequence[str] | str, discover_peers: object
) -> None:
    """
    Alloy's mutual exclusion: join addresses and another discovery method
    (C{--cluster.discover-peers}; here any non-empty C{discover_peers})
    cannot both be configured.

    @raise OptionError: about C{discover_peers}, naming both fields, when
        both are set.
    """
    if _split_entries(join_addresses) and discover_peers:
        # The other method's configuration is not echoed: go-discover
        # settings can hold credentials (Alloy avoids logging them too).
        raise OptionError(
            "discover_peers",
            "at most one of join_addresses (--cluster.join-addresses) and "
            "discover_peers (--cluster.discover-peers) may be set, got join "
            f"addresses {_split_entries(join_addresses)!r} and discover_peers too",
        )


def peer_discovery(
    join_peers: Sequence[str] | str,
    discover_peers: DiscoverFn | str | None = None,
    *,
    default_port: int,
    resolver: IResolver | None = None,
    reactor: IReactorTime | None = None,
) -> DiscoverFn | None:
    """
    Alloy's C{NewPeerDiscoveryFn}: the discovery function for the service
    from join addresses or another discovery function, which exclude each
    other.

    @param discover_peers: another discovery function.  A string (Alloy's
        go-discover C{provider=...} settings) is refused: cloud provider
        discovery has no counterpart here.
    @return: L{join_addresses} discovery, or C{discover_peers}, or C{None}
        when neither is set (a seed node that others join).
    @raise OptionError: about C{discover_peers}, when both are set or it
        is a string.
    """
    validate_discovery(join_peers, discover_peers)
    if _split_entries(join_peers):
        return join_addresses(join_peers, default_port, resolver, reactor)
    if isinstance(discover_peers, str):
        if discover_peers:
            raise OptionError(
                "discover_peers",
                "cloud provider discovery (go-discover) is not supported; use "
                "join_addresses or a discovery function",
            )
        return None
    return discover_peers
