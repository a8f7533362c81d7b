"""
Real sockets on 127.0.0.1: the wiring of L{NetTransport} and
L{Memberlist} on the global reactor.  Waits poll for an outcome within the
configuration's worst case (L{tests.helpers.wait_for}); elapsed real time
is logged, never asserted.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from cluster.gossip import GossipConfig, ITransport, Memberlist, MemberState
from cluster.gossip.config import GossipSettings
from cluster.gossip.framing import PacketCodec
from cluster.gossip.interfaces import IPacketHandler
from cluster.gossip.transport import NetTransport
from cluster.gossip.wire import Ack, Ping, decode_message, encode_message
from cluster.testing import ephemeral_port_floor, free_loopback_port
from tests.helpers import known, wait_for

if TYPE_CHECKING:
    from typing_extensions import Unpack


def local_node(name: str, /, **overrides: Unpack[GossipSettings]) -> Memberlist:
    settings: GossipSettings = {"bind_address": "127.0.0.1", "bind_port": 0}
    settings.update(overrides)
    settings["name"] = name
    return Memberlist(GossipConfig.local(**settings), reactor=reactor)


class LoopbackClusterTests(TestCase):
    timeout = 60

    def test_interfaces(self) -> None:
        node = local_node("iface")
        self.assertTrue(verifyObject(IPacketHandler, node.receiver))
        self.assertTrue(verifyObject(ITransport, node.transport))

    async def test_five_nodes_converge_and_leave(self) -> None:
        nodes = [local_node(f"real-{i}") for i in range(5)]
        config = nodes[0].config
        await gatherResults([node.start() for node in nodes])
        try:
            self.assertTrue(all(node.port > 0 for node in nodes))
            seed = f"127.0.0.1:{nodes[0].port}"
            contacted = await gatherResults([node.join([seed]) for node in nodes[1:]])
            self.assertEqual(contacted, [1, 1, 1, 1])
            # Each joiner knows the seed's list at once; one that missed the
            # others' alive gossip learns them at its next push/pull.
            await wait_for(
                lambda: all(n.num_members() == 5 for n in nodes),
                config.push_pull_interval + config.tcp_timeout,
                "5 nodes list 5 members",
            )

            leaver = nodes[4]
            left = await leaver.leave(config.push_pull_interval)
            self.assertTrue(left)

            def recorded_left() -> bool:
                return all(
                    known(n, "real-4").state == MemberState.LEFT for n in nodes[:4]
                )

            # Gossip spreads the leave in well under a second; a node that
            # missed it hears it at its next push/pull.
            await wait_for(
                recorded_left,
                config.push_pull_interval + config.tcp_timeout,
                "every other node records real-4 as left",
            )
        finally:
            await gatherResults([node.shutdown() for node in nodes])
        # trial fails the test if any timer or port was left behind.

    async def test_join_failure(self) -> None:
        node = local_node("lonely", tcp_timeout=1.0)
        await node.start()
        try:
            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            closed.close()
            error = None
            try:
                await node.join([f"127.0.0.1:{port}", "not an address:x"])
            except Exception as e:
                error = e
            self.assertIn("failed to join any seed", str(error))
        finally:
            await node.shutdown()


class ClientProtocol(Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


async def send_stream(port: int, data: bytes) -> bytes:
    """
    Connect to C{port}, write C{data}, and return what arrives until the
    node closes the connection.
    """
    client = ClientProtocol()
    factory: ClientFactory[ClientProtocol] = ClientFactory()
    factory.protocol = lambda: client
    cast(IReactorTCP, reactor).connectTCP("127.0.0.1", port, factory)
    await wait_for(lambda: client.transport is not None, 5, "connected")
    assert client.transport is not None
    client.transport.write(data)
    await client.closed
    return client.received


class BadInputTests(TestCase):
    timeout = 30

    async def test_garbage_packets_are_counted_and_node_still_answers(self) -> None:
        node = local_node("sturdy")
        await node.start()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        try:
            address = ("127.0.0.1", node.port)
            for junk in [
                b"",
                b"\x00",
                b"\x07\x05",
                b"\x0c\x00\x00\x00\x00\x00",
                b"\xf4",
            ]:
                sender.sendto(junk, address)
            sender.sendto(encode_message(Ping(77, "sturdy")), address)

            def answered() -> bool:
                try:
                    data = sender.recv(65536)
                except BlockingIOError:
                    return False
                leaves = list(PacketCodec().messages(PacketCodec().open(data)))
                return decode_message(leaves[0]) == Ack(77)

            await wait_for(answered, 5, "the ping is answered")
            dropped = sum(node.counters.dropped.values())
            self.assertGreaterEqual(dropped, 4)
        finally:
            sender.close()
            await node.shutdown()

    async def test_silent_stream_is_timed_out(self) -> None:
        transport = NetTransport(reactor, "127.0.0.1", 0, stream_timeout=0.3)
        node = Memberlist(
            GossipConfig.local(name="patient", bind_address="127.0.0.1", bind_port=0),
            reactor=reactor,
            transport=transport,
        )
        await node.start()
        try:
            # Half a push/pull header, then silence: the node hangs up.
            self.assertEqual(await send_stream(node.port, b"\x06\x83\xa4Join"), b"")
        finally:
            await node.shutdown()

    async def test_bad_stream_is_closed_without_reply(self) -> None:
        node = local_node("strict")
        await node.start()
        try:
            # A suspect message is not a stream message.
            self.assertEqual(await send_stream(node.port, b"\x03\x80"), b"")
        finally:
            await node.shutdown()


class FreePortTests(SynchronousTestCase):
    def test_distinct_bindable_and_never_ephemeral(self) -> None:
        """
        Processes started on these ports must not race the kernel's
        outgoing connections (ephemeral ports) or each other.
        """
        ports = [free_loopback_port() for _ in range(300)]
        self.assertEqual(len(set(ports)), len(ports))
        self.assertTrue(all(p < ephemeral_port_floor() for p in ports))
        for port in ports[:20]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            with socket.socket() as tcp:
                tcp.bind(("127.0.0.1", port))
