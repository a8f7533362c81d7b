"""
How C{twistd clusternode} reads the values of its flags: each function
takes the text given on the command line and returns the value, or raises
C{ValueError} saying what is wrong with it; a L{Parameter} names the flag
in the usage error.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from cluster.gossip import GossipConfig
from cluster.gossip.address import parse_ip, split_host_port

__all__ = [
    "DEFAULT_HTTP",
    "PROFILES",
    "Parameter",
    "count",
    "host_port",
    "interfaces",
    "join_addresses",
    "parse_duration",
    "profile",
    "server_endpoint",
    "server_name",
]

DEFAULT_HTTP = "tcp:12345:interface=127.0.0.1"
PROFILES = {
    "lan": GossipConfig.lan,
    "wan": GossipConfig.wan,
    "local": GossipConfig.local,
    "alloy": GossipConfig.alloy,
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


@attrs.frozen
class Parameter:
    """
    A C{--name VALUE} flag for C{usage.Options.optParameters}: its default
    text, its help, and how its text is read (C{parse}).
    """

    name: str
    default: str | None
    doc: str
    parse: Callable[[str], object] = str

    def coerce(self, text: str) -> object:
        """
        C{parse}, a bad value being a usage error that names the flag.
        """
        try:
            return self.parse(text)
        except ValueError as e:
            raise usage.UsageError(f"--{self.name}: {e}") from None

    def option(self) -> list[object]:
        """
        The flag as a row of C{optParameters}.
        """
        return [self.name, None, self.default, self.doc, self.coerce]


def parse_duration(text: str) -> float:
    """
    Go's C{time.ParseDuration} for non-negative durations: C{"500ms"},
    C{"60s"}, C{"1h30m"}, C{"0"}.

    @return: seconds.
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


def host_port(text: str) -> tuple[str, int]:
    """
    C{"HOST:PORT"} or C{"[v6]:PORT"}, the port 0-65535.
    """
    split = split_host_port(text)
    if split is None or not split[1].isdigit() or int(split[1]) > 65535:
        raise ValueError(f"not HOST:PORT (port 0-65535): {text!r}")
    return split[0], int(split[1])


def count(text: str) -> int:
    """
    A whole number, 0 or more.
    """
    if not text.isdigit():
        raise ValueError(f"not a count (0 or more): {text!r}")
    return int(text)


def _items(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def interfaces(text: str) -> tuple[str, ...]:
    """
    Comma-separated interface names (at least one), or C{"all"}.
    """
    if not _items(text):
        raise ValueError("name at least one interface, or all")
    return _items(text)


def join_addresses(text: str) -> tuple[str, ...]:
    """
    Comma-separated join addresses (none is fine); a port, when given,
    must be a number.
    """
    for address in _items(text):
        split = split_host_port(address)
        if split is not None and not split[1].isdigit():
            raise ValueError(f"bad port in {address!r}")
    return _items(text)


def profile(text: str) -> GossipConfig:
    """
    The gossip timings of a profile in L{PROFILES}.
    """
    if text not in PROFILES:
        raise ValueError(f"must be one of {', '.join(PROFILES)}, got {text!r}")
    return PROFILES[text]()


def server_name(text: str) -> str:
    """
    A host name or an IP address, or nothing.
    """
    if text and not (_HOSTNAME.fullmatch(text) or parse_ip(text)):
        raise ValueError(f"not a host name or IP address: {text!r}")
    return text


def server_endpoint(text: str) -> str:
    """
    A server endpoint description (C{tcp:8080}, C{unix:/run/node.sock}...),
    returned as given once it parses.
    """
    try:
        # Parsed only, for a reactor that never runs: nothing listens.
        serverFromString(MemoryReactor(), text)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not a server endpoint (like {DEFAULT_HTTP}): {e}") from None
    return text
