"""
L{NetTransport}: memberlist's stock transport on real sockets, one
unconnected UDP port for every peer plus a TCP listener on the same port
number.

Each TCP connection carries one request and at most one reply; both sides
measure messages by their own lengths, never by waiting for EOF, and the
whole exchange runs under a deadline (L{TimeoutMixin}, never reset by
incoming bytes: a peer that trickles one byte a second is cut off too).

What a peer can make us hold is bounded: a datagram is read whole up to
64 KiB (memberlist's UDP buffer), a stream's message is measured as it
arrives and refused once it says it is over
L{cluster.gossip.framing.MAX_STREAM_BYTES}, and at most
C{max_inbound_streams} accepted streams (128, memberlist's
C{maxPushPullRequests}) are open at once.  memberlist counts only
push/pulls against that limit; we count every accepted stream, since we
only learn a stream's kind from its bytes, and pings and user messages
on streams are short.  What is refused is counted as dropped, by its
L{DropReason}, and logged.

A TLS handshake that fails is explained in words on whichever side we are
(L{StreamTLS.diagnose}), logged once naming the peer (the address we
dialled, or the dialler's IP address and certificate name: its port is
ephemeral), and counted under the reason of its cause; a stream we dialled
then fails with L{TLSRefused}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import protocol
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IListeningPort,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    IUDPTransport,
)
from twisted.internet.interfaces import ITransport as IProtocolTransport
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cluster.gossip.address import join_host_port
from cluster.gossip.counters import DropReason, GossipCounters
from cluster.gossip.interfaces import (
    IFrameMeasure,
    IPacketHandler,
    ITransport,
    StreamTimeout,
)
from cluster.gossip.tls import StreamTLS, TLSCause, TLSRefusal, TLSRefused

__all__ = ["NetTransport"]

UDP_READ_BUFFER = 65536
MAX_INBOUND_STREAMS = 128
# Twisted's default backlog is 50; Go listens with the system's maximum.  A
# burst of push/pulls (nodes starting together) beyond the backlog waits
# for the kernel's SYN-ACK retries, a second or more each.
LISTEN_BACKLOG = 1024
# Refusals under a flood are counted each, logged at most this often.
_REFUSAL_LOG_INTERVAL = 10.0
_BIND_ATTEMPTS = 10
_TLS_DROP_REASON = {
    TLSCause.UNKNOWN_CA: DropReason.TLS_UNKNOWN_CA,
    TLSCause.NAME_MISMATCH: DropReason.TLS_NAME_MISMATCH,
    TLSCause.VALIDITY: DropReason.TLS_EXPIRED,
    TLSCause.NO_CERTIFICATE: DropReason.TLS_NO_CERTIFICATE,
    TLSCause.PROTOCOL_VERSION: DropReason.TLS_VERSION,
    TLSCause.OTHER: DropReason.TLS,
}


def _peer_text(peer: object) -> str:
    return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


@runtime_checkable
class _Abortable(Protocol):
    """
    A transport that can be cut at once.  Twisted's TCP and TLS transports
    (and its test L{StringTransport<twisted.internet.testing.StringTransport>})
    have C{abortConnection}, though the TLS one does not declare
    C{ITCPTransport}.
    """

    def abortConnection(self) -> None: ...


def _abort(transport: object) -> None:
    if isinstance(transport, _Abortable):
        transport.abortConnection()


class _Datagrams(protocol.DatagramProtocol):
    # Not "Starting protocol <..._Datagrams object at 0x...>" in the log.
    noisy = False

    def __init__(self, owner: NetTransport) -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        handler = self.owner.handler
        if handler is not None:
            handler.packet_received(data, (addr[0], addr[1]))


class _FramedStream(protocol.Protocol, TimeoutMixin):
    """
    Buffer bytes until one complete message is there, as its measure
    says, within a deadline on the owner's clock.

    Chunks are kept as they come and joined once: buffering and measuring
    cost time linear in the bytes received.
    """

    measure: IFrameMeasure
    deadline: float
    clock: IReactorTime
    _done: bool = False
    # Our IP address and the peer's, noted on connection: a closed socket
    # no longer tells them.
    local_host: str = ""
    peer_host: str = ""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def makeConnection(self, transport: IProtocolTransport) -> None:
        self.local_host = str(getattr(transport.getHost(), "host", ""))
        self.peer_host = str(getattr(transport.getPeer(), "host", ""))
        super().makeConnection(transport)

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        # TimeoutMixin would use the global reactor.
        return self.clock.callLater(period, func)

    def start_deadline(self) -> None:
        self.setTimeout(self.deadline)

    def stop_deadline(self) -> None:
        self.setTimeout(None)

    def timeoutConnection(self) -> None:
        if not self._done:
            self._done = True
            self.failed(Failure(StreamTimeout("stream timed out")))
        if self.transport is not None:
            _abort(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._chunks.append(data)
        try:
            length = self.measure.feed(data)
        except ValueError as e:
            self._done = True
            self._chunks = []
            self.stop_deadline()
            self.failed(Failure(e))
            if self.transport is not None:
                _abort(self.transport)
            return
        if length is not None:
            self._done = True
            message = b"".join(self._chunks)[:length]
            self._chunks = []
            self.message_complete(message)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.stop_deadline()
        if not self._done:
            self._done = True
            self.closed_early(reason)

    def failed(self, reason: Failure) -> None:
        raise NotImplementedError

    def message_complete(self, message: bytes) -> None:
        raise NotImplementedError

    def closed_early(self, reason: Failure) -> None:
        raise NotImplementedError


def _tls_failure(reason: Failure) -> bool:
    # A certificate the handshake refuses is an SSL.Error (our own checks
    # run inside the handshake); Twisted's name check, which options not
    # made by StreamTLS may use, fails with service_identity's error.
    return reason.check(SSL.Error, VerificationError) is not None


def _handshake_unfinished(transport: object) -> bool:
    """
    Whether the TLS stream C{transport} ended before the peer showed a
    certificate: a peer that closes then (one that does not speak TLS,
    say) refused the handshake without an alert.
    """
    peer_certificate = getattr(transport, "getPeerCertificate", None)
    return peer_certificate is not None and peer_certificate() is None


class _ServerStream(_FramedStream):
    def __init__(self, owner: NetTransport) -> None:
        super().__init__()
        self.owner = owner
        self.deadline = owner.stream_timeout
        self.clock = owner.reactor

    def connectionMade(self) -> None:
        assert self.transport is not None
        handler = self.owner.handler
        if handler is None:
            self._done = True
            _abort(self.transport)
            return
        if len(self.owner._servers) >= self.owner.max_inbound_streams:
            self._done = True
            self.owner.refuse_stream(self.transport.getPeer())
            _abort(self.transport)
            return
        self.owner._servers.add(self)
        self.start_deadline()
        self.measure = handler.stream_measure()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.owner._servers.discard(self)
        super().connectionLost(reason)

    def _peer(self) -> IAddress | None:
        return self.transport.getPeer() if self.transport is not None else None

    def timeoutConnection(self) -> None:
        if not self._done:
            self.owner.stream_dropped(
                DropReason.STREAM_TIMEOUT, self._peer(), "timed out"
            )
        super().timeoutConnection()

    def failed(self, reason: Failure) -> None:
        if reason.check(StreamTimeout):
            return  # counted in timeoutConnection
        cause = reason.value
        self.owner.stream_dropped(
            DropReason(getattr(cause, "reason", DropReason.STREAM.value)),
            self._peer(),
            str(cause),
        )

    def closed_early(self, reason: Failure) -> None:
        if _tls_failure(reason) and self.transport is not None:
            self.owner.tls_refused(self, reason, dialled=None)

    def message_complete(self, message: bytes) -> None:
        handler = self.owner.handler
        if handler is None:
            return
        peer = self._peer()
        source = (getattr(peer, "host", ""), getattr(peer, "port", 0))
        d = handler.stream_received(message, source)

        def reply(data: bytes | None) -> None:
            self.stop_deadline()
            if self.transport is None:
                return
            if data:
                self.transport.write(data)
            self.transport.loseConnection()

        def oops(failure: Failure) -> None:
            self.owner.log.failure("stream handler failed", failure)
            self.stop_deadline()
            if self.transport is not None:
                _abort(self.transport)

        d.addCallbacks(reply, oops)


class _ServerFactory(protocol.ServerFactory):
    noisy = False

    def __init__(self, owner: NetTransport) -> None:
        self.owner = owner

    def buildProtocol(self, addr: IAddress | None) -> _ServerStream:
        return _ServerStream(self.owner)


class _ClientStream(_FramedStream):
    def __init__(
        self,
        owner: NetTransport,
        address: str,
        request: bytes,
        measure: IFrameMeasure,
        deadline: float,
        result: Deferred[bytes | None],
    ) -> None:
        super().__init__()
        self.owner = owner
        self.address = address
        self.clock = owner.reactor
        self.request = request
        self.measure = measure
        self.deadline = deadline
        self.result = result

    def connectionMade(self) -> None:
        assert self.transport is not None
        # memberlist dials within the timeout, then sends under a fresh one
        # and reads the reply under another.  Twisted does not say when the
        # kernel took the last byte, so sending and reading share one
        # deadline of both: never shorter than memberlist's.  (A TCP ping
        # answers within its probe round or not at all: a late ack is
        # ignored.)
        self.setTimeout(2 * self.deadline)
        self.transport.write(self.request)

    def failed(self, reason: Failure) -> None:
        if not self.result.called:
            self.result.errback(reason)

    def closed_early(self, reason: Failure) -> None:
        if self.result.called:
            return
        transport = self.transport
        if (
            self.owner.tls is not None
            and transport is not None
            and (_tls_failure(reason) or _handshake_unfinished(transport))
        ):
            refusal = self.owner.tls_refused(self, reason, dialled=self.address)
            self.result.errback(TLSRefused(self.address, refusal))
            return
        # A peer that closes without a reply (after a user message, or
        # after refusing our request) gives None, not an error.
        self.result.callback(None)

    def message_complete(self, message: bytes) -> None:
        self.stop_deadline()
        if not self.result.called:
            self.result.callback(message)
        if self.transport is not None:
            self.transport.loseConnection()


class _TLSServerFactory(TLSMemoryBIOFactory, protocol.ServerFactory):
    """
    TLS around our server factory.  C{TLSMemoryBIOFactory} is a
    C{ClientFactory}; this one is also the C{ServerFactory} that
    C{listenTCP} is annotated to take.  It adds no behaviour, and logs
    nothing as it starts and stops.
    """

    noisy = False


class _ClientFactory(protocol.ClientFactory):
    # One per push/pull: "Starting factory" twice a minute is noise.
    noisy = False

    def __init__(self, stream: _ClientStream) -> None:
        self.stream = stream

    def buildProtocol(self, addr: IAddress | None) -> _ClientStream:
        return self.stream

    def startedConnecting(self, connector: IConnector) -> None:
        # Connecting has a deadline of its own, as memberlist's dial.
        self.stream.start_deadline()

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.stream.stop_deadline()
        self.stream.failed(reason)


@implementer(ITransport)
@attrs.define(eq=False)
class NetTransport:
    """
    UDP and TCP on one port number of C{bind_address}.

    @ivar reactor: time and sockets: it must also provide C{IReactorTCP}
        and C{IReactorUDP}.
    @ivar bind_port: 0 picks a free port (the same number for both).
    @ivar stream_timeout: how long an accepted stream may take to deliver
        its request (memberlist's TCPTimeout).
    @ivar tls: mutual TLS for every stream, both ways (see
        L{cluster.gossip.tls}); plain TCP when C{None}.
    @ivar counters: where failures are counted (the member's counters):
        datagrams the socket refused, accepted streams cut before their
        request was read (and why), failed TLS handshakes (by cause).
    @ivar max_inbound_streams: accepted streams open at once; more are
        cut at once (dropped as C{too_many_streams}).
    """

    reactor: IReactorTime
    bind_address: str = "0.0.0.0"
    bind_port: int = 0
    stream_timeout: float = 10.0
    tls: StreamTLS | None = None
    counters: GossipCounters = attrs.field(factory=GossipCounters)
    max_inbound_streams: int = MAX_INBOUND_STREAMS
    handler: IPacketHandler | None = attrs.field(default=None, init=False)
    _udp: IUDPTransport | None = attrs.field(default=None, init=False)
    _tcp: IListeningPort | None = attrs.field(default=None, init=False)
    _clients: set[_ClientStream] = attrs.field(factory=set, init=False)
    _servers: set[_ServerStream] = attrs.field(factory=set, init=False)
    _last_refusal_log: float | None = attrs.field(default=None, init=False)
    log = Logger()

    @property
    def host(self) -> str:
        return self.bind_address

    @property
    def port(self) -> int:
        if self._udp is None:
            return self.bind_port
        return int(getattr(self._udp.getHost(), "port", 0))

    def start(self, handler: IPacketHandler) -> Deferred[None]:
        tcp_reactor = IReactorTCP(self.reactor)
        udp_reactor = IReactorUDP(self.reactor)
        last_error: Exception | None = None
        server: protocol.ServerFactory = _ServerFactory(self)
        if self.tls is not None:
            server = _TLSServerFactory(self.tls.server_options(), False, server)
        for _ in range(_BIND_ATTEMPTS if self.bind_port == 0 else 1):
            tcp = tcp_reactor.listenTCP(
                self.bind_port,
                server,
                backlog=LISTEN_BACKLOG,
                interface=self.bind_address,
            )
            port = int(getattr(tcp.getHost(), "port", 0))
            try:
                udp = udp_reactor.listenUDP(
                    port,
                    _Datagrams(self),
                    interface=self.bind_address,
                    maxPacketSize=UDP_READ_BUFFER,
                )
            except CannotListenError as e:
                # The TCP port was free but its UDP twin is taken: try again.
                last_error = e
                tcp.stopListening()
                continue
            self._tcp, self._udp = tcp, IUDPTransport(udp)
            self.handler = handler
            return succeed(None)
        assert last_error is not None
        raise last_error

    def tls_refused(
        self, stream: _FramedStream, reason: Failure, dialled: str | None
    ) -> TLSRefusal:
        """
        The TLS handshake of C{stream} failed, on whichever side we are:
        explain it, count it under the reason of its cause and log it once,
        naming the peer by the address we C{dialled} or, on a stream we
        accepted, by the dialler's IP address and the name on its
        certificate.

        @return: the explanation.
        """
        assert self.tls is not None
        refusal = self.tls.diagnose(
            getattr(stream.transport, "getHandle", lambda: None)(),
            reason,
            own_address=stream.local_host,
            dialled=dialled is not None,
        )
        self.counters.dropped[_TLS_DROP_REASON[refusal.cause]] += 1
        if dialled is not None:
            peer = dialled
        else:
            peer = f"a node dialling from {stream.peer_host}"
        if refusal.certificate:
            peer += f' (certificate "{refusal.certificate}")'
        self.log.warn(
            "TLS: {sentence}",
            sentence=refusal.sentence(peer),
            peer=peer,
            cause=refusal.cause.name,
            by_us=refusal.by_us,
        )
        return refusal

    def stream_dropped(
        self, reason: DropReason, peer: IAddress | None, detail: str
    ) -> None:
        """
        An accepted stream is cut before its request was read: count it
        and say why at debug level.
        """
        self.counters.traffic.streams_in_failed += 1
        self.counters.dropped[reason] += 1
        self.log.debug(
            "dropped a stream from {peer}: {detail}",
            peer=_peer_text(peer),
            detail=detail,
        )

    def refuse_stream(self, peer: IAddress) -> None:
        """
        Too many accepted streams are open: count the one cut, and warn
        (at most every few seconds, however many come).
        """
        self.counters.dropped[DropReason.TOO_MANY_STREAMS] += 1
        now = self.reactor.seconds()
        last = self._last_refusal_log
        if last is None or now - last >= _REFUSAL_LOG_INTERVAL:
            self._last_refusal_log = now
            self.log.warn(
                "too many inbound streams ({limit} open): refusing {peer} "
                "({count} refused so far)",
                limit=self.max_inbound_streams,
                peer=_peer_text(peer),
                count=self.counters.dropped[DropReason.TOO_MANY_STREAMS],
            )

    def send_packet(self, data: bytes, address: tuple[str, int]) -> None:
        if self._udp is None:
            return
        try:
            self._udp.write(data, address)
        except Exception as e:
            self.counters.traffic.send_failed += 1
            self.log.debug("send to {address} failed: {e}", address=address, e=e)

    def packet_queue_lengths(self) -> tuple[int, int]:
        """
        C{(0, 0)}, always and truly: this transport never holds a datagram.

        Twisted's UDP port hands each datagram it reads to
        C{datagramReceived}, which hands it to the handler before the next
        is read, and nothing else (a scrape included) runs on the reactor
        in between.  C{send_packet} hands each datagram to C{sendto} at
        once; Twisted keeps no write buffer for UDP, so one the socket
        cannot take (C{EAGAIN}) raises and is counted in C{send.failed},
        never kept.  A backlog can wait in the kernel's socket buffers,
        but the kernel tells their size in bytes of its own accounting,
        not in datagrams (see docs/reference.md, on the queue-length gauges).
        """
        return (0, 0)

    def exchange(
        self,
        address: tuple[str, int],
        request: bytes,
        reply_measure: IFrameMeasure,
        timeout: float,
    ) -> Deferred[bytes | None]:
        result: Deferred[bytes | None] = Deferred()
        host, port = address
        stream = _ClientStream(
            self, join_host_port(host, port), request, reply_measure, timeout, result
        )
        self._clients.add(stream)
        client = _ClientFactory(stream)
        tcp = IReactorTCP(self.reactor)
        if self.tls is None:
            tcp.connectTCP(host, port, client, timeout=timeout)
        else:
            options = self.tls.client_options(host)
            tls = TLSMemoryBIOFactory(options, True, client)
            tcp.connectTCP(host, port, tls, timeout=timeout)

        def forget(value: object) -> object:
            self._clients.discard(stream)
            return value

        return result.addBoth(forget)

    def stop(self) -> Deferred[None]:
        streams: list[_FramedStream] = [*self._clients, *self._servers]
        for stream in streams:
            stream.stop_deadline()
            if stream.transport is not None:
                _abort(stream.transport)
        ports = [p for p in (self._udp, self._tcp) if p is not None]
        self._udp = self._tcp = None
        self.handler = None
        stopped = gatherResults([maybeDeferred(p.stopListening) for p in ports])
        return stopped.addCallback(lambda _: None)
