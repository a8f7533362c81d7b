"""
Addresses, for the whole package: Go's C{host:port} splitting, IP text as
Go prints it, and host names resolved through C{twisted.names} so that no
lookup ever blocks the reactor.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TypeVar, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.names import dns, error
from twisted.python.failure import Failure

__all__ = [
    "DNS_TIMEOUT",
    "Address",
    "LookupResult",
    "ResolveError",
    "default_resolver",
    "describe_failure",
    "gather",
    "ip_text",
    "join_host_port",
    "lookup_result",
    "parse_address",
    "parse_ip",
    "record_payloads",
    "resolve_host",
    "split_host_port",
]

Address = tuple[str, int]
"""
A host (an IP literal once resolved) and a port.
"""

LookupResult = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]
"""
What an C{IResolver} lookup fires with: answers, authority, additional.
"""

T = TypeVar("T")
R = TypeVar("R")

DNS_TIMEOUT: tuple[int, ...] = (1, 3, 5)
"""
Retry timeouts (seconds) of each DNS query.  Bounded near Go's resolver
(about 10 s) so that a dead DNS server cannot hold a join or a discovery
for the minute of C{twisted.names}' default schedule.
"""


class ResolveError(Exception):
    """
    A host name has no A or AAAA record (or its lookups failed).

    @ivar answer: why, in words: each distinct answer of the queries.
    """

    def __init__(self, name: str, answer: str) -> None:
        super().__init__(f"no address for {name!r}: {answer}")
        self.answer = answer


def split_host_port(address: str) -> tuple[str, str] | None:
    """
    Go's C{net.SplitHostPort}: C{(host, port)}, or C{None} where Go
    reports an error (then the whole address is a host).  Like Go, the
    port is not checked.
    """
    colon = address.rfind(":")
    if colon < 0:
        return None
    if address.startswith("["):
        end = address.find("]")
        # The bracket must close just before the last colon.
        if end < 0 or end + 1 != colon:
            return None
        host, after_open, after_close = address[1:end], 1, end + 1
    else:
        host, after_open, after_close = address[:colon], 0, 0
        if ":" in host:  # a bare IPv6 address, or garbage
            return None
    if "[" in address[after_open:] or "]" in address[after_close:]:
        return None
    return host, address[colon + 1 :]


def join_host_port(host: str, port: int | str) -> str:
    """
    Go's C{net.JoinHostPort}: brackets around anything with a colon.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, default_port: int) -> Address:
    """
    memberlist's join address: C{"host:port"}, C{"[v6]:port"}, or a bare
    host (a name, an IPv4 or IPv6 address) that takes C{default_port}.

    @raise ValueError: for an empty host or a bad port.
    """
    split = split_host_port(text)
    if split is None:
        host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        port = default_port
    else:
        host, port_text = split
        if not port_text.isdigit():
            raise ValueError(f"bad port in address {text!r}")
        port = int(port_text)
    if not host or not 0 < port <= 65535:
        raise ValueError(f"bad address {text!r}")
    return host, port


def ip_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """
    An IP as Go's C{net.IP.String()} prints it: IPv4-mapped IPv6 addresses
    in their dotted-quad form (what an IPv4 socket can send to).
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_ip(text: str) -> str | None:
    """
    Go's C{net.ParseIP(text).String()}, or C{None} if C{text} is not an IP.
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return None  # Go's ParseIP refuses zones ("fe80::1%eth0")
    return ip_text(ip)


def default_resolver(reactor: IReactorTime | None = None) -> IResolver:
    """
    The system's resolver (hosts file, cache, C{resolv.conf} servers) on
    C{reactor}, or on the global reactor when C{None}.
    """
    from twisted.names import client

    if reactor is None:
        return IResolver(client.createResolver())
    # createResolver always uses the global reactor; build the same chain
    # on the one we were given.
    from twisted.names import cache, hosts, resolve

    chain = resolve.ResolverChain(
        [
            hosts.Resolver(b"/etc/hosts"),
            cache.CacheResolver(reactor=reactor),
            client.Resolver(b"/etc/resolv.conf", reactor=reactor),
        ]
    )
    return IResolver(chain)


def lookup_result(
    lookup: Deferred[tuple[dns.RRHeader, dns.RRHeader, dns.RRHeader]],
) -> Deferred[LookupResult]:
    """
    C{lookup}, an C{IResolver} lookup, typed as what it fires with: three
    lists of records (answers, authority, additional).
    """
    # Twisted annotates every IResolver lookup as firing with a tuple of
    # three single records; twisted.names fires with three lists.
    return cast("Deferred[LookupResult]", lookup)


# What a DNS server's answer means, in words: twisted.names' errors carry
# the whole answer message, whose repr tells a user nothing.
_DNS_ANSWERS: tuple[tuple[type[Exception], str], ...] = (
    (error.DNSNameError, "no such name"),
    (error.DNSServerError, "the DNS server failed"),
    (error.DNSQueryRefusedError, "the DNS server refused the query"),
    (error.DNSFormatError, "the DNS server could not read the query"),
    (error.DNSNotImplementedError, "the DNS server does not support the query"),
    (error.DNSQueryTimeoutError, "no DNS answer in time"),
)


def describe_failure(failure: Failure) -> str:
    """
    A lookup failure in one line, in words (C{"no such name"}); a failure
    that is not a DNS answer is named by its type and message.
    """
    for kind, words in _DNS_ANSWERS:
        if failure.check(kind):
            return words
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}"


def record_payloads(result: LookupResult, kind: type[R]) -> list[R]:
    """
    The payloads of class C{kind} (C{dns.Record_A}, C{dns.Record_SRV}...)
    among a lookup's answers, which may hold CNAMEs too.
    """
    answers, _authority, _additional = result
    return [r.payload for r in answers if isinstance(r.payload, kind)]


async def gather(deferreds: Sequence[Deferred[T]]) -> list[T | Failure]:
    """
    Wait for every Deferred: its result, or its L{Failure}, each in order.
    Cancellation is passed on, not mistaken for "nothing found".
    """
    if not deferreds:
        return []
    results = await DeferredList(deferreds, consumeErrors=True)
    outcomes: list[T | Failure] = []
    for _, result in results:
        if isinstance(result, Failure) and result.check(CancelledError):
            result.raiseException()
        outcomes.append(result)
    return outcomes


async def resolve_host(
    resolver: IResolver, name: str, timeout: Sequence[int] = DNS_TIMEOUT
) -> list[str]:
    """
    Every A and AAAA address of C{name}, queried at once (Go's
    C{net.LookupIP}), IPv4 first.

    @raise ResolveError: naming each query's reason when nothing was found.
    """
    lookups = [
        lookup_result(resolver.lookupAddress(name, tuple(timeout))),
        lookup_result(resolver.lookupIPV6Address(name, tuple(timeout))),
    ]
    results = await gather(lookups)
    found: list[str] = []
    reasons: list[str] = []
    kinds: tuple[type[dns.Record_A | dns.Record_AAAA], ...] = (
        dns.Record_A,
        dns.Record_AAAA,
    )
    for result, kind in zip(results, kinds, strict=True):
        if isinstance(result, Failure):
            reasons.append(describe_failure(result))
            continue
        for record in record_payloads(result, kind):
            # Record_A and Record_AAAA both hold the packed address.
            assert isinstance(record.address, bytes)
            address = ip_text(ipaddress.ip_address(record.address))
            if address not in found:
                found.append(address)
    if not found:
        # A and AAAA usually fail alike ("no such name"): say it once.
        raise ResolveError(name, " / ".join(dict.fromkeys(reasons)) or "no records")
    return found
