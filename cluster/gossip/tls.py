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

Both checks run inside the handshake, so the refusing side sends a TLS
alert and the refused side learns it.  A failed handshake is explained in
words by L{StreamTLS.diagnose} on either side (a L{TLSRefusal}): what we
saw of the peer's certificate when we refused it, or which alert the peer
sent when it refused ours, read against our own certificate.

UDP cannot carry TLS: gossip packets stay protected by the gossip keyring
(C{GossipConfig.keyring}) alone.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
from collections.abc import Callable
from typing import TypeVar
from weakref import WeakKeyDictionary

import attrs
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM, X509, PKey
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "StreamTLS",
    "TLSCause",
    "TLSRefusal",
    "TLSRefused",
    "load_stream_tls",
]

_CODES = SSL.X509VerificationCodes
# What OpenSSL says when the issuer of a certificate is not our authority:
# not found at all, or found by name but its signature does not verify (a
# CA of the same name, as two made by the same tool).
_UNKNOWN_ISSUER = frozenset(
    {
        _CODES.ERR_UNABLE_TO_GET_ISSUER_CERT,
        _CODES.ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        _CODES.ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
        _CODES.ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
        _CODES.ERR_SELF_SIGNED_CERT_IN_CHAIN,
        _CODES.ERR_CERT_SIGNATURE_FAILURE,
    }
)
_CODE_NAMES = {
    value: name.removeprefix("ERR_").replace("_", " ").lower()
    for name, value in vars(_CODES).items()
    if name.startswith("ERR_")
}
# OpenSSL's reasons for a peer that speaks TLS, but no version we take.
_NO_COMMON_VERSION = frozenset({"unsupported protocol", "no protocols available"})
# OpenSSL's reasons for bytes that are no TLS records at all.
_NOT_TLS = frozenset(
    {
        "wrong version number",
        "http request",
        "https proxy request",
        "packet length too long",
        "unknown protocol",
        "record layer failure",
    }
)
_NO_COMMON_VERSION_WORDS = "protocol version (no TLS version that both sides accept)"
_DAY = "%Y-%m-%d %H:%M UTC"


class TLSCause(enum.Enum):
    """
    Why a TLS handshake failed, as an operator fixes it.
    """

    UNKNOWN_CA = "certificate from an unknown CA"
    NAME_MISMATCH = "name mismatch"
    VALIDITY = "certificate expired or not yet valid"
    NO_CERTIFICATE = "no client certificate"
    PROTOCOL_VERSION = "protocol version"
    OTHER = "TLS handshake failed"


@attrs.frozen
class TLSRefusal:
    """
    One failed handshake, explained.

    @ivar cause: what went wrong.
    @ivar words: the cause in words with what we know of it (the names
        expected and presented, the issuer, the validity), with no
        OpenSSL error codes.
    @ivar by_us: C{True} when we refused the peer's certificate or bytes,
        C{False} when the peer refused ours (it sent an alert, or closed).
    @ivar certificate: the name on the certificate the peer presented
        (its common name, else its first subject alternative name), or
        C{""} when we saw none.
    """

    cause: TLSCause
    words: str
    by_us: bool
    certificate: str = ""

    def sentence(self, peer: str) -> str:
        """
        The refusal in one sentence about C{peer} (an address, or a
        description of the dialler).
        """
        if self.by_us:
            return f"we refused {peer}: {self.words}"
        return f"{peer} refused us: {self.words}"


class TLSRefused(Exception):
    """
    The TLS handshake of a stream we dialled failed: C{str()} says who
    refused whom, and why in words.

    @ivar address: the C{host:port} we dialled.
    @ivar refusal: the explanation.
    """

    def __init__(self, address: str, refusal: TLSRefusal) -> None:
        super().__init__(refusal.sentence(address))
        self.address = address
        self.refusal = refusal


@attrs.define
class _Seen:
    """
    What our verification of one handshake saw: the peer's leaf
    certificate, the first error OpenSSL found in its chain and the
    certificate it was about, and the name we expected when the leaf did
    not carry it.
    """

    certificate: x509.Certificate | None = None
    failed: x509.Certificate | None = None
    error: int = 0
    expected_name: str = ""


_Diagnoses = WeakKeyDictionary[SSL.Connection, _Seen]


def _carries(certificate: x509.Certificate, name: str) -> bool:
    """
    Whether C{certificate} is valid for C{name}, a DNS name or an IP
    address, by the rules of C{service_identity} (Twisted's own check).
    """
    check: Callable[[x509.Certificate, str], None] = verify_certificate_hostname
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        check = verify_certificate_ip_address
    try:
        check(certificate, name)
    except (CertificateError, VerificationError):
        return False
    return True


def _verifier(
    expected: str, seen: _Diagnoses
) -> Callable[[SSL.Connection, X509, int, int, int], bool]:
    """
    A verify callback that accepts what OpenSSL accepted and whose leaf
    carries C{expected} (any name when empty), noting what it saw in
    C{seen} under the connection.
    """

    def verify(
        connection: SSL.Connection, certificate: X509, error: int, depth: int, ok: int
    ) -> bool:
        record = seen.setdefault(connection, _Seen())
        if depth == 0:
            record.certificate = certificate.to_cryptography()
        if not ok:
            if not record.error:
                record.error = error
                record.failed = certificate.to_cryptography()
            return False
        if depth > 0 or not expected:
            return True  # the chain; the leaf's name is checked below
        if record.certificate is not None and _carries(record.certificate, expected):
            return True
        record.expected_name = expected
        return False

    return verify


class _AcceptOptions(ssl.CertificateOptions):
    """
    Twisted's server options, with our verification: the client's
    certificate required, checked against the authority and, when
    C{required_name} is set, its name, all inside the handshake, so that a
    refused dialler is told by a TLS alert (and logs it) rather than seeing
    its connection dropped afterwards.
    """

    def __init__(
        self,
        required_name: str,
        private_key: PKey,
        certificate: X509,
        authority: ssl.Certificate,
        seen: _Diagnoses,
    ) -> None:
        super().__init__(
            privateKey=private_key,
            certificate=certificate,
            # A trust root makes the client's certificate required.
            trustRoot=authority,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
        self._verify = _verifier(required_name, seen)
        self._verifying = False

    def getContext(self) -> SSL.Context:
        context: SSL.Context = super().getContext()
        # The context is made once and cannot change after its first use.
        if not self._verifying:
            flags = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            context.set_verify(flags, self._verify)
            self._verifying = True
        return context


@implementer(IOpenSSLClientConnectionCreator)
@attrs.frozen
class _DialOptions:
    """
    Twisted's client options (SNI, the authority, our certificate) with
    our verification in place of Twisted's name check, which refuses the
    peer's name after the handshake by cutting the connection: ours
    refuses it inside the handshake, with an alert the peer can log.
    """

    twisted: IOpenSSLClientConnectionCreator
    verify: Callable[[SSL.Connection, X509, int, int, int], bool]

    def clientConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        connection: SSL.Connection = self.twisted.clientConnectionForTLS(tlsProtocol)
        flags = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        connection.set_verify(flags, self.verify)
        return connection


def _common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()


def _names(certificate: x509.Certificate) -> list[str]:
    """
    The DNS names and IP addresses C{certificate} is valid for.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return []
    found: list[str] = extension.value.get_values_for_type(x509.DNSName)
    found += [str(a) for a in extension.value.get_values_for_type(x509.IPAddress)]
    return found


def _presented(certificate: x509.Certificate) -> str:
    names = _names(certificate)
    if names:
        return ", ".join(names)
    return f"no names (CN {_common_name(certificate.subject)})"


def certificate_name(certificate: x509.Certificate | None) -> str:
    """
    What to call the holder of C{certificate}: its common name, else its
    first name, else C{""} (also for no certificate).
    """
    if certificate is None:
        return ""
    if certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        return _common_name(certificate.subject)
    names = _names(certificate)
    return names[0] if names else ""


def _ssl_reasons(failure: Failure) -> list[str]:
    """
    The reason strings of an OpenSSL error (C{"certificate verify
    failed"}, C{"tlsv1 alert unknown ca"}...), without library names.
    """
    error = failure.value
    if not isinstance(error, SSL.Error) or not error.args:
        return []
    reasons = []
    for entry in error.args[0]:
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return reasons


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
    # What our verification saw, per connection, until diagnosed.
    _seen: _Diagnoses = attrs.field(factory=WeakKeyDictionary, init=False)

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
            seen=self._seen,
        )

    def client_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        """
        How we dial C{host}: our certificate presented, the peer's checked
        against the authority and named C{server_name} (else C{host}).
        """
        expected = self.server_name or host
        return _DialOptions(
            ssl.optionsForClientTLS(
                expected,
                trustRoot=self.authority,
                clientCertificate=self.identity,
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            ),
            _verifier(expected, self._seen),
        )

    def diagnose(
        self, connection: object, reason: Failure, own_address: str, dialled: bool
    ) -> TLSRefusal:
        """
        Explain the failed handshake of C{connection}.

        @param connection: the stream's C{SSL.Connection} (C{getHandle()}
            of its TLS transport).
        @param reason: why the stream ended.
        @param own_address: the IP address we are reached at on this
            stream (what a dialler without a server name checks).
        @param dialled: C{True} when we dialled the stream.
        """
        seen = None
        if isinstance(connection, SSL.Connection):
            seen = self._seen.pop(connection, None)
        if seen is None:
            seen = _Seen()
        if seen.certificate is None and isinstance(connection, SSL.Connection):
            # Refused above the leaf (a chain ending in another root): the
            # chain the peer sent starts with its own certificate.
            chain = connection.get_peer_cert_chain(as_cryptography=True)
            seen.certificate = chain[0] if chain else None
        name = certificate_name(seen.certificate or seen.failed)
        if seen.error or seen.expected_name:
            return attrs.evolve(self._we_refused(seen), certificate=name)
        reasons = _ssl_reasons(reason)
        for text in reasons:
            if "alert " in text:
                alert = text.rpartition("alert ")[2]
                refusal = self._they_refused(alert, own_address, dialled)
                return attrs.evolve(refusal, certificate=name)
        if "peer did not return a certificate" in reasons:
            return TLSRefusal(
                TLSCause.NO_CERTIFICATE, TLSCause.NO_CERTIFICATE.value, True
            )
        if _NO_COMMON_VERSION.intersection(reasons):
            words = _NO_COMMON_VERSION_WORDS
            return TLSRefusal(TLSCause.PROTOCOL_VERSION, words, True, name)
        if _NOT_TLS.intersection(reasons):
            words = "protocol version (it does not speak TLS)"
            return TLSRefusal(TLSCause.PROTOCOL_VERSION, words, True, name)
        if reason.check(VerificationError):
            # Twisted's own name check (options not made here).
            return TLSRefusal(TLSCause.NAME_MISMATCH, "name mismatch", True, name)
        if reasons:
            words = f"TLS handshake failed ({'; '.join(reasons)})"
            return TLSRefusal(TLSCause.OTHER, words, True, name)
        # It closed before showing a certificate: no TLS node would.
        words = (
            "protocol version (it closed the connection during the handshake: "
            "it does not seem to speak TLS)"
        )
        return TLSRefusal(TLSCause.PROTOCOL_VERSION, words, False, name)

    def _we_refused(self, seen: _Seen) -> TLSRefusal:
        certificate = seen.certificate or seen.failed
        assert certificate is not None  # verification saw one to refuse
        if seen.expected_name:
            words = (
                f"name mismatch (expected {seen.expected_name}, presented "
                f"{_presented(certificate)})"
            )
            return TLSRefusal(TLSCause.NAME_MISMATCH, words, True)
        if seen.error in _UNKNOWN_ISSUER:
            issuer = (seen.failed or certificate).issuer
            ours = self.authority.original.to_cryptography().subject
            if issuer == ours:
                detail = (
                    f'issued by another CA named "{_common_name(issuer)}", like ours'
                )
            else:
                detail = f'issued by "{_common_name(issuer)}"'
            return TLSRefusal(
                TLSCause.UNKNOWN_CA, f"{TLSCause.UNKNOWN_CA.value} ({detail})", True
            )
        if seen.error == _CODES.ERR_CERT_HAS_EXPIRED:
            until = certificate.not_valid_after_utc.strftime(_DAY)
            return TLSRefusal(
                TLSCause.VALIDITY, f"certificate expired (valid until {until})", True
            )
        if seen.error == _CODES.ERR_CERT_NOT_YET_VALID:
            since = certificate.not_valid_before_utc.strftime(_DAY)
            return TLSRefusal(
                TLSCause.VALIDITY,
                f"certificate not yet valid (valid from {since})",
                True,
            )
        problem = _CODE_NAMES.get(seen.error, f"verify error {seen.error}")
        return TLSRefusal(
            TLSCause.OTHER,
            f"TLS handshake failed (certificate refused: {problem})",
            True,
        )

    def _they_refused(self, alert: str, own_address: str, dialled: bool) -> TLSRefusal:
        ours = self.identity.original.to_cryptography()
        if alert in ("unknown ca", "decrypt error"):
            issuer = _common_name(ours.issuer)
            words = f'{TLSCause.UNKNOWN_CA.value} (ours is issued by "{issuer}")'
            return TLSRefusal(TLSCause.UNKNOWN_CA, words, False)
        if alert == "certificate expired":
            return TLSRefusal(TLSCause.VALIDITY, _our_validity(ours), False)
        if alert == "certificate required":
            words = f"{TLSCause.NO_CERTIFICATE.value} (it got none from us)"
            return TLSRefusal(TLSCause.NO_CERTIFICATE, words, False)
        if alert == "protocol version":
            words = _NO_COMMON_VERSION_WORDS
            return TLSRefusal(TLSCause.PROTOCOL_VERSION, words, False)
        if alert == "bad certificate" and not _valid_now(ours):
            # OpenSSL's alert for a certificate not yet valid.
            return TLSRefusal(TLSCause.VALIDITY, _our_validity(ours), False)
        if alert in ("internal error", "bad certificate"):
            # Our peers refuse a name with "internal error" (the verify
            # callback fails with no OpenSSL error); Go's with "bad
            # certificate".  Only a name our certificate lacks is a mismatch.
            expected = self.server_name or ("" if dialled else own_address)
            presented = _presented(ours)
            if not expected:
                words = (
                    f"name mismatch (presented {presented}; it expects another name)"
                )
                return TLSRefusal(TLSCause.NAME_MISMATCH, words, False)
            if not _carries(ours, expected):
                words = f"name mismatch (expected {expected}, presented {presented})"
                return TLSRefusal(TLSCause.NAME_MISMATCH, words, False)
        words = f'TLS handshake failed (it sent the alert "{alert}")'
        return TLSRefusal(TLSCause.OTHER, words, False)


def _now() -> datetime.datetime:
    # OpenSSL checks validity against the system's clock, not a reactor's:
    # so do these, to say which of the two the peer saw.
    return datetime.datetime.now(datetime.timezone.utc)


def _valid_now(certificate: x509.Certificate) -> bool:
    return certificate.not_valid_before_utc <= _now() <= certificate.not_valid_after_utc


def _our_validity(certificate: x509.Certificate) -> str:
    """
    Why a peer would find our certificate expired or not yet valid.
    """
    since = certificate.not_valid_before_utc
    until = certificate.not_valid_after_utc
    now = _now()
    if now > until:
        return f"certificate expired (ours was valid until {until.strftime(_DAY)})"
    if now < since:
        return f"certificate not yet valid (ours is valid from {since.strftime(_DAY)})"
    return (
        f"{TLSCause.VALIDITY.value} (ours is valid from {since.strftime(_DAY)} "
        f"until {until.strftime(_DAY)}: is the peer's clock right?)"
    )


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
