"""
How C{clusternode} reads the values of its flags: each function takes the
text given on the command line and returns the value, or raises
C{ValueError} saying what is wrong with it in words; a L{Parameter} names
the flag in the usage error.  Files named by flags are read here too, so
that a file that cannot serve is a usage error naming the flag and the
file.  No message repeats a key, or any part of one.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Callable, Iterable

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from cluster.gossip import GossipConfig, Keyring
from cluster.gossip.address import join_host_port, parse_ip, split_host_port
from cluster.gossip.keyring import KeyringError, validate_key
from cluster.gossip.origin import WILDCARD_HOSTS
from cluster.serf.tags import STATUS_SITE_TAG

__all__ = [
    "DEFAULT_HTTP",
    "PROFILES",
    "Parameter",
    "check_tls_files",
    "count",
    "gossip_key",
    "host_port",
    "interfaces",
    "join_addresses",
    "keyring_file",
    "node_tags",
    "parse_duration",
    "pem_certificate",
    "pem_private_key",
    "profile",
    "repeatable",
    "server_endpoint",
    "server_name",
    "status_site_tag",
    "tag",
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


def repeatable(
    name: str, parse: Callable[[str], object], doc: str
) -> Callable[[usage.Options, str], None]:
    """
    An C{opt_*} method for C{usage.Options}: C{--name VALUE}, given any
    number of times, appends each value C{parse} reads (a bad one is a
    usage error naming the flag) to the list C{options[name]}; C{doc} is
    its help.
    """

    def collect(options: usage.Options, text: str) -> None:
        try:
            value = parse(text)
        except ValueError as e:
            raise usage.UsageError(f"--{name}: {e}") from None
        options.setdefault(name, []).append(value)

    collect.__doc__ = doc
    return collect


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


def tag(text: str) -> tuple[str, str]:
    """
    A Serf tag, C{KEY=VALUE}, as C{serf agent -tag} takes it (the value
    may be empty).
    """
    key, equals, value = text.partition("=")
    if not (key and equals):
        raise ValueError(f"not KEY=VALUE: {text!r}")
    return key, value


def status_site_tag(endpoint: str) -> str | None:
    """
    Where peers find a status site served on C{endpoint} (a server
    endpoint that L{server_endpoint} accepted), as the value of
    L{STATUS_SITE_TAG}: C{"HOST:PORT"}, or C{":PORT"} for every interface
    (then at the member's own address).  C{None} when it is not plain HTTP
    on a known port: TLS, a UNIX socket, port 0.
    """
    memory = MemoryReactor()
    # Listening on a reactor that never runs reads the endpoint's address.
    serverFromString(memory, endpoint).listen(Factory())
    for port, _, _, interface in memory.tcpServers:
        host = "" if interface in WILDCARD_HOSTS else interface
        return join_host_port(host, port) if port else None
    return None


def node_tags(given: Iterable[tuple[str, str]], http: str) -> dict[str, str]:
    """
    A node's tags: where its status site is (L{status_site_tag} of
    C{http}), then the C{--tag}s C{given}, in order, a later value of a
    key replacing the earlier.
    """
    site = status_site_tag(http)
    return {**({STATUS_SITE_TAG: site} if site else {}), **dict(given)}


def gossip_key(text: str) -> bytes:
    """
    A gossip key in serf's C{-encrypt} form: 16, 24 or 32 bytes in standard
    base64 with padding.  The message of a bad key never repeats it.
    """
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "not a base64 key (16, 24 or 32 bytes in standard base64, as "
            "serf keygen prints)"
        ) from None
    try:
        validate_key(key)
    except KeyringError:
        raise ValueError(
            f"the key is {len(key)} bytes long; it must be 16, 24 or 32"
        ) from None
    return key


def keyring_file(path: str) -> Keyring:
    """
    A serf keyring file: a JSON list of base64 keys, the primary first.
    Like L{gossip_key}, no message repeats a key.
    """
    text = _read(path).decode("utf-8", "replace")
    try:
        loaded = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path} is not JSON ({e})") from None
    if not (isinstance(loaded, list) and all(isinstance(k, str) for k in loaded)):
        raise ValueError(f"{path} must hold a JSON list of base64 keys")
    if not loaded:
        raise ValueError(f"{path} holds no key")
    keys = []
    for number, key in enumerate(loaded, 1):
        try:
            keys.append(gossip_key(key))
        except ValueError as e:
            raise ValueError(f"{path}, key {number}: {e}") from None
    return Keyring(keys)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a file") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {_words(e)}") from None


def _words(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


def _certificate(path: str) -> x509.Certificate:
    data = _read(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        if b"PRIVATE KEY-----" in data:
            raise ValueError(f"{path} holds a private key, not a certificate") from None
        raise ValueError(f"{path} is not a PEM certificate") from None


def _private_key(path: str) -> PrivateKeyTypes:
    data = _read(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's word for "it needs a password"
        raise ValueError(
            f"{path} is encrypted; the node needs its key unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY-----" not in data and b"CERTIFICATE-----" in data:
            raise ValueError(f"{path} holds a certificate, not a private key") from None
        raise ValueError(f"{path} is not a PEM private key") from None


def pem_certificate(text: str) -> str:
    """
    The path of a PEM certificate (the first in the file is the one used),
    returned as given once it reads; empty for none.
    """
    if text:
        _certificate(text)
    return text


def pem_private_key(text: str) -> str:
    """
    The path of an unencrypted PEM private key, returned as given once it
    reads; empty for none.
    """
    if text:
        _private_key(text)
    return text


def _der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_tls_files(
    ca_path: str,
    cert_path: str,
    key_path: str,
    now: datetime.datetime | None = None,
) -> None:
    """
    Whether the authority, our certificate and our key (each already read
    by L{pem_certificate} or L{pem_private_key}) can serve together at
    C{now} (by default, now): the key is the certificate's, the authority
    signed the certificate, and both certificates are valid.  Peers would
    refuse any other combination at every handshake.

    @raise usage.UsageError: naming the flag and the file at fault.
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    authority = _certificate(ca_path)
    certificate = _certificate(cert_path)
    if _der(_private_key(key_path).public_key()) != _der(certificate.public_key()):
        raise usage.UsageError(
            f"--tls-key-path: {key_path} is not the key of {cert_path}"
        )
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        raise usage.UsageError(
            f"--tls-cert-path: {cert_path} is not signed by the authority in {ca_path}"
        ) from None
    for flag, path, checked in (
        ("--tls-ca-path", ca_path, authority),
        ("--tls-cert-path", cert_path, certificate),
    ):
        if now > checked.not_valid_after_utc:
            raise usage.UsageError(
                f"{flag}: {path} expired on {_when(checked.not_valid_after_utc)}"
            )
        if now < checked.not_valid_before_utc:
            raise usage.UsageError(
                f"{flag}: {path} is not valid before "
                f"{_when(checked.not_valid_before_utc)}"
            )


def _when(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
