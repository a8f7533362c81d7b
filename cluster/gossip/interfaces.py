"""
The interfaces of the membership layer: what an application plugs into a
L{cluster.gossip.Memberlist} (memberlist's Delegate, EventDelegate and
ConflictDelegate), and what a transport must offer so the simulated network
in L{cluster.testing} can stand in for real sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from cluster.gossip.members import Member

__all__ = [
    "IBroadcastWaker",
    "IConflictDelegate",
    "IDelegate",
    "IEventDelegate",
    "IFrameMeasure",
    "IPacketHandler",
    "ITransport",
    "StreamTimeout",
    "reactor_or_global",
]


class StreamTimeout(Exception):
    """
    A stream exchange did not complete in time.
    """


def reactor_or_global(reactor: IReactorTime | None) -> IReactorTime:
    """
    C{reactor}, or the global reactor when it is C{None}: library code
    takes a reactor and looks up the global one only at this edge.
    """
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as global_reactor

    return IReactorTime(global_reactor)


class IDelegate(Interface):
    """
    Application hooks into gossip (memberlist's C{Delegate}).
    """

    def node_meta(limit: int) -> bytes:
        """
        Metadata about this node, at most C{limit} bytes, sent in alive
        messages.
        """

    def notify_msg(message: bytes) -> None:
        """
        A user message arrived (piggybacked, direct UDP or TCP).  The bytes
        are opaque: in a mixed cluster they may come from serf.
        """

    def get_broadcasts(overhead: int, limit: int) -> list[bytes]:
        """
        User broadcasts to piggyback on gossip: each costs C{overhead} plus
        its length, and all must fit in C{limit} bytes.
        """

    def local_state(join: bool) -> bytes:
        """
        Our application state for a push/pull exchange.
        """

    def merge_remote_state(state: bytes, join: bool) -> None:
        """
        The peer's application state from a push/pull exchange (only called
        when it is not empty).
        """


class IBroadcastWaker(Interface):
    """
    Optional, for an L{IDelegate}: it says when it queues a broadcast.

    Memberlist gossips on a 200 ms ticker even when nothing is queued; a
    member whose delegate provides this (or has no delegate) lets its
    ticker sleep while neither queue holds anything, and wakes it at the
    next tick when something is queued: the same gossip, fewer wake-ups.
    """

    def watch_broadcasts(wake: Callable[[], object]) -> None:
        """
        Call C{wake} whenever a broadcast is queued from now on (calling
        it when nothing was queued is harmless).
        """


class IEventDelegate(Interface):
    """
    Told about membership changes (memberlist's C{EventDelegate}).
    """

    def notify_join(member: Member) -> None:
        """
        C{member} became alive (joined, or came back from dead or left).
        """

    def notify_leave(member: Member) -> None:
        """
        C{member} is dead or has left.
        """

    def notify_update(member: Member) -> None:
        """
        C{member}'s metadata changed.
        """


class IConflictDelegate(Interface):
    """
    Told when another node claims a name we know at another address.
    """

    def notify_conflict(existing: Member, other: Member) -> None:
        """
        C{other} claims C{existing}'s name from a different address.
        """


class IFrameMeasure(Interface):
    """
    Finds where the one message of a stream ends, as its bytes arrive.
    """

    def feed(data: bytes) -> int | None:
        """
        Take the next bytes of the stream; return the message's length
        (counted from the stream's first byte) once all of it has arrived,
        else C{None}.  Raises C{ValueError} for a malformed or oversized
        stream.
        """


class IPacketHandler(Interface):
    """
    What a transport delivers incoming traffic to (the membership layer).
    """

    def packet_received(data: bytes, source: tuple[str, int]) -> None:
        """
        A UDP datagram arrived from C{source}.
        """

    def stream_measure() -> IFrameMeasure:
        """
        A fresh measure for the request on a stream just accepted.
        """

    def stream_received(data: bytes, source: tuple[str, int]) -> Deferred[bytes | None]:
        """
        One complete request arrived on an accepted stream; fires with the
        reply to write (or C{None} for none) before the stream is closed.
        """


class ITransport(Interface):
    """
    Packets and request/reply streams between nodes (memberlist's
    C{Transport}).  L{cluster.gossip.transport.NetTransport} uses real
    sockets; L{cluster.testing.SimulatedNetwork} simulates them.
    """

    host = Attribute("The bound IP address (str), valid once started.")
    port = Attribute("The bound port (int), valid once started.")

    def start(handler: IPacketHandler) -> Deferred[None]:
        """
        Bind and start delivering traffic to C{handler}.
        """

    def send_packet(data: bytes, address: tuple[str, int]) -> None:
        """
        Send one datagram; failures are counted, never raised.
        """

    def packet_queue_lengths() -> tuple[int, int]:
        """
        The datagrams this transport holds now: those received but not
        yet handed to the handler, and those given to L{send_packet} but
        not yet handed to the network (ckit's in and out packet queues,
        exported as C{cluster_transport_rx_packet_queue_length} and
        C{cluster_transport_tx_packet_queue_length}).  A transport that
        never holds a datagram returns C{(0, 0)}; none may estimate.
        """

    def exchange(
        address: tuple[str, int],
        request: bytes,
        reply_measure: IFrameMeasure,
        timeout: float,
    ) -> Deferred[bytes | None]:
        """
        Open a stream to C{address}, write C{request}, and read one reply
        whose extent C{reply_measure} finds.
        Fires with the reply, or C{None} when the peer closed without one;
        fails on connection errors or after C{timeout} seconds.
        """

    def stop() -> Deferred[None]:
        """
        Close every port and connection.
        """
