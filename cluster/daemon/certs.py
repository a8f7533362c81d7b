"""
TLS for the cluster's TCP streams: loading (L{load_stream_tls}, see
L{cluster.gossip.tls}) and a small certificate authority for setting a
cluster up or testing it, so that no C{openssl} incantation is needed::

    python -m cluster.daemon.certs ca certs/      # certs/ca.pem, ca-key.pem
    python -m cluster.daemon.certs node certs/ node-a \
        --dns cluster.internal --ip 10.0.0.5

Every node certificate is good for both TLS roles (each member both
accepts and dials streams) and is an EC P-256 key, quick to make and to
use.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.gossip.tls import StreamTLS, load_stream_tls

__all__ = [
    "Issued",
    "StreamTLS",
    "issue_certificate",
    "load_stream_tls",
    "make_authority",
]


@attrs.frozen
class Issued:
    """
    A PEM certificate and its PEM private key.
    """

    certificate: bytes
    key: bytes

    def write(self, directory: str, stem: str) -> tuple[str, str]:
        """
        Write C{stem.pem} and C{stem-key.pem} (readable by the owner only)
        into C{directory}.

        @return: the two paths.
        """
        os.makedirs(directory, exist_ok=True)
        cert_path = os.path.join(directory, f"{stem}.pem")
        key_path = os.path.join(directory, f"{stem}-key.pem")
        with open(cert_path, "wb") as f:
            f.write(self.certificate)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key)
        return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(subject: str, issuer: x509.Name, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def make_authority(common_name: str = "cluster CA", days: int = 3650) -> Issued:
    """
    A self-signed certificate authority for one cluster.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(common_name, _name(common_name), days)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue_certificate(
    authority: Issued,
    common_name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 825,
) -> Issued:
    """
    A node certificate signed by C{authority}, for both TLS roles, naming
    C{dns_names} and C{ip_addresses} (what peers check: the cluster's
    C{tls_server_name}, or the address they dial).

    @raise ValueError: for an IP address that is not one.
    """
    ca_cert = x509.load_pem_x509_certificate(authority.certificate)
    ca_key = serialization.load_pem_private_key(authority.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the authority's key is not an EC key")
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(common_name, ca_cert.subject, days)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _read_authority(directory: str) -> Issued:
    with open(os.path.join(directory, "ca.pem"), "rb") as f:
        certificate = f.read()
    with open(os.path.join(directory, "ca-key.pem"), "rb") as f:
        key = f.read()
    return Issued(certificate, key)


def main(argv: Sequence[str] | None = None) -> int:
    """
    C{python -m cluster.daemon.certs ca DIR} or
    C{python -m cluster.daemon.certs node DIR NAME [--dns NAME]... [--ip ADDRESS]...}.
    """
    parser = argparse.ArgumentParser(
        prog="python -m cluster.daemon.certs",
        description="Make a cluster certificate authority and node certificates.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ca = commands.add_parser("ca", help="make DIR/ca.pem and DIR/ca-key.pem")
    ca.add_argument("directory")
    ca.add_argument("--name", default="cluster CA", help="the CA's common name")
    node = commands.add_parser(
        "node", help="make DIR/NAME.pem and DIR/NAME-key.pem, signed by DIR/ca.pem"
    )
    node.add_argument("directory")
    node.add_argument("name")
    node.add_argument("--dns", action="append", default=[], help="a DNS name (SAN)")
    node.add_argument("--ip", action="append", default=[], help="an IP address (SAN)")
    args = parser.parse_args(argv)
    try:
        if args.command == "ca":
            paths = make_authority(args.name).write(args.directory, "ca")
        else:
            issued = issue_certificate(
                _read_authority(args.directory), args.name, args.dns, args.ip
            )
            paths = issued.write(args.directory, args.name)
    except (OSError, ValueError) as e:
        print(f"python -m cluster.daemon.certs: {e}", file=sys.stderr)
        return 1
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
