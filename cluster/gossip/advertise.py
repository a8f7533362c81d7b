"""
The address a node advertises when it is bound to every interface
(memberlist's C{refreshAdvertise} with go-sockaddr's C{GetPrivateIP}, and
Alloy's C{--cluster.advertise-interfaces} with ckit's C{FirstAddress}).

Interfaces are read with C{psutil} (C{getifaddrs}): no name lookup, so
nothing here can block the reactor for long.  Loopback is never picked:
a node that advertises 127.0.0.1 to a cluster on other hosts is
unreachable, so when nothing fits the choice fails, naming the setting
that fixes it.

The rules, in order:

 1. With C{interfaces} given, the best address of those interfaces, in
    the order given: a private IPv4 address first, then any other IPv4,
    then a routable IPv6 (not link-local), then an IPv4 link-local one
    (ckit's C{FirstAddress} ranks the same way, private first added).
    Interfaces that are missing or down are skipped.
 2. Otherwise (no interfaces given, or none of them had an address):
    memberlist's rule, a private IPv4 address of any up interface.
 3. Otherwise an L{AdvertiseError}.

Where Alloy falls back to 127.0.0.1 with a warning when its interfaces
have no address, we fall back to memberlist's rule, then fail.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence

import attrs

__all__ = [
    "DEFAULT_INTERFACES",
    "AdvertiseError",
    "Choice",
    "InterfaceTable",
    "choose_advertise_address",
    "system_interfaces",
]

DEFAULT_INTERFACES: tuple[str, ...] = ("eth0", "en0")
"""
Alloy's default C{--cluster.advertise-interfaces}.
"""

InterfaceTable = Mapping[str, tuple[bool, Sequence[str]]]
"""
Interface name to C{(is_up, [IP address, ...])}, in the system's order.
"""


class AdvertiseError(ValueError):
    """
    No address fit to advertise was found; the message names the setting.
    """


@attrs.frozen
class Choice:
    """
    The address to advertise, and why it was picked (for the log).
    """

    address: str
    reason: str


def system_interfaces() -> InterfaceTable:
    """
    This host's interfaces and their IP addresses, from C{psutil}.
    """
    import psutil

    stats = psutil.net_if_stats()
    table: dict[str, tuple[bool, list[str]]] = {}
    for name, addresses in psutil.net_if_addrs().items():
        ips = [
            a.address.split("%", 1)[0]  # drop an IPv6 zone ("fe80::1%eth0")
            for a in addresses
            if a.family in (socket.AF_INET, socket.AF_INET6)
        ]
        up = name in stats and bool(stats[name].isup)
        table[name] = (up, ips)
    return table


def _rank(text: str) -> int | None:
    """
    Lower is better; C{None} for an address never to advertise.
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return None
    if ip.version == 4:
        if ip.is_link_local:
            return 3
        return 0 if ip.is_private else 1
    if ip.is_link_local:
        return None  # unusable without its interface's zone
    return 2


def _best(table: InterfaceTable, names: Sequence[str]) -> tuple[str, str] | None:
    best: tuple[int, int, str, str] | None = None
    for order, name in enumerate(names):
        up, addresses = table.get(name, (False, ()))
        if not up:
            continue
        for address in addresses:
            rank = _rank(address)
            if rank is not None and (best is None or (rank, order) < best[:2]):
                best = (rank, order, address, name)
    return None if best is None else (best[2], best[3])


def _private_ipv4(table: InterfaceTable) -> tuple[str, str] | None:
    for name, (up, addresses) in table.items():
        if not up:
            continue
        for address in addresses:
            if _rank(address) == 0:
                return address, name
    return None


def choose_advertise_address(
    interfaces: Sequence[str] | None = None,
    table: InterfaceTable | Callable[[], InterfaceTable] = system_interfaces,
) -> Choice:
    """
    Pick the address to advertise (see the module docstring).

    @param interfaces: interface names to prefer, in order; C{None} or
        C{["all"]} means every interface, ranked the same way.
    @param table: the interfaces, or a function listing them (the system's
        by default; tests pass their own).
    @raise AdvertiseError: when no interface has a usable address.
    """
    found = table() if callable(table) else table
    if interfaces is not None and list(interfaces) == ["all"]:
        interfaces = list(found)
    if interfaces:
        picked = _best(found, interfaces)
        if picked is not None:
            address, name = picked
            return Choice(
                address, f"best address of interface {name} (advertise_interfaces)"
            )
    picked = _private_ipv4(found)
    if picked is not None:
        address, name = picked
        listed = (
            f"none of advertise_interfaces {', '.join(interfaces)} has an address; "
            if interfaces
            else ""
        )
        return Choice(address, f"{listed}first private IPv4 address, on {name}")
    where = f" on interfaces {', '.join(interfaces)} or" if interfaces else " on"
    raise AdvertiseError(
        f"no private IP address found{where} any up interface, and explicit "
        "IP not provided: set advertise_address"
    )
