"""
Mutual TLS for the TCP streams of a member (push/pull, stream pings and
reliable user messages); Alloy's C{--cluster.enable-tls}.

Both sides present a certificate signed by the cluster's authority and
check the other's against it (TLS 1.2 at least).  The dialling side
checks the accepting side's name: C{server_name} when set, else the
address it dialled (an IP SAN).  With a C{server_name}, the accepting side
checks the dialler's certificate against it too, so a certificate for
another name, even from the same authority, cannot join from either side
(Go's servers check no client name; Alloy's peers would still refuse to
dial such a node, so it could only half join).

UDP cannot carry TLS: gossip packets stay protected by the gossip keyring
(C{GossipConfig.keyring}) alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import attrs
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM, X509, PKey
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)

__all__ = ["StreamTLS", "load_stream_tls"]


class _AcceptOptions(ssl.CertificateOptions):
    """
    Twisted's server options, with the client's name checked inside the
    handshake, so that a refused dialler is told by a TLS alert (and logs
    it) rather than seeing its connection dropped afterwards.
    """

    def __init__(
        self,
        required_name: str,
        private_key: PKey,
        certificate: X509,
        authority: ssl.Certificate,
    ) -> None:
        super().__init__(
            privateKey=private_key,
            certificate=certificate,
            # A trust root makes the client's certificate required.
            trustRoot=authority,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
        self.required_name = required_name
        self._named = False

    def getContext(self) -> SSL.Context:
        context: SSL.Context = super().getContext()
        # The context is made once and cannot change after its first use.
        if self.required_name and not self._named:
            flags = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            context.set_verify(flags, self._verify)
            self._named = True
        return context

    def _verify(
        self,
        connection: SSL.Connection,
        certificate: X509,
        error: int,
        depth: int,
        ok: int,
    ) -> bool:
        if not ok:
            return False
        if depth > 0:
            return True  # the chain; the leaf is checked below
        try:
            verify_certificate_hostname(
                certificate.to_cryptography(), self.required_name
            )
        except (CertificateError, VerificationError):
            return False
        return True


def _read(field: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{field}: cannot read {path}: {e.strerror}") from None


_Loaded = TypeVar("_Loaded")


def _parse(field: str, what: str, load: Callable[[], _Loaded]) -> _Loaded:
    # pyOpenSSL raises several unrelated types for bad PEM: name the field.
    try:
        return load()
    except Exception as e:
        raise ValueError(f"{field}: {what} ({e})") from None


@attrs.frozen(eq=False)
class StreamTLS:
    """
    The certificates of one member and the authority of its cluster.

    @ivar server_name: the name every member's certificate carries; empty
        to check the dialled address instead.
    """

    authority: ssl.Certificate
    identity: ssl.PrivateCertificate
    server_name: str = ""

    def server_options(self) -> IOpenSSLServerConnectionCreator:
        """
        How we accept: our certificate, a client certificate required and
        checked against the authority (and named C{server_name}, when set),
        TLS 1.2 at least.
        """
        return _AcceptOptions(
            required_name=self.server_name,
            private_key=self.identity.privateKey.original,
            certificate=self.identity.original,
            authority=self.authority,
        )

    def client_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        """
        How we dial C{host}: our certificate presented, the peer's checked
        against the authority and named C{server_name} (else C{host}).
        """
        return ssl.optionsForClientTLS(
            self.server_name or host,
            trustRoot=self.authority,
            clientCertificate=self.identity,
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
        )


def load_stream_tls(
    ca_path: str, cert_path: str, key_path: str, server_name: str = ""
) -> StreamTLS:
    """
    Read the authority, our certificate and its key (PEM files).

    @raise ValueError: naming the field (C{tls_ca_path}, C{tls_cert_path}
        or C{tls_key_path}) of a file that cannot be read or parsed, or a
        key that does not match the certificate.
    """
    ca = _read("tls_ca_path", ca_path)
    cert = _read("tls_cert_path", cert_path)
    key = _read("tls_key_path", key_path)
    authority = _parse(
        "tls_ca_path",
        f"not a PEM certificate: {ca_path}",
        lambda: ssl.Certificate.loadPEM(ca),
    )
    certificate = _parse(
        "tls_cert_path",
        f"not a PEM certificate: {cert_path}",
        lambda: ssl.Certificate.loadPEM(cert),
    )
    private_key = _parse(
        "tls_key_path",
        f"not a PEM private key: {key_path}",
        lambda: ssl.KeyPair.load(key, FILETYPE_PEM),
    )
    identity = _parse(
        "tls_key_path",
        f"{key_path} is not the key of {cert_path}",
        lambda: ssl.PrivateCertificate.fromCertificateAndKeyPair(
            certificate, private_key
        ),
    )
    return StreamTLS(authority, identity, server_name)
