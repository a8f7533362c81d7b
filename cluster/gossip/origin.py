"""
Who we are on the wire (memberlist's C{setAlive} and C{getAdvertise}): the
address we advertise, chosen when we start, our node meta, and the source
fields every ping we send carries, so that its ack comes back there.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.logger import Logger

from cluster.gossip.advertise import InterfaceTable, choose_advertise_address
from cluster.gossip.config import META_MAX_SIZE, GossipConfig
from cluster.gossip.nodelog import tagged
from cluster.gossip.wire import Ping

__all__ = ["WILDCARD_HOSTS", "Origin", "advertise_host", "node_meta"]

WILDCARD_HOSTS = ("0.0.0.0", "::", "")

_log = Logger()


@attrs.define(eq=False)
class Origin:
    """
    Our name and the address we advertise (known once bound).
    """

    name: str
    address: bytes = b""
    port: int = 0

    def ping(self, seq: int, target: str) -> Ping:
        """
        A ping for C{target} under sequence number C{seq}, from us.
        """
        return Ping(
            seq,
            target,
            source_addr=self.address,
            source_port=self.port,
            source_node=self.name,
        )


def advertise_host(
    config: GossipConfig, bound_host: str, interfaces: Callable[[], InterfaceTable]
) -> str:
    """
    The address to advertise: the configured one, else the one we are
    bound to, else (bound to every interface) one chosen among
    C{interfaces()} (see L{choose_advertise_address}).

    @raise AdvertiseError: when bound to every interface and none fits.
    """
    if config.advertise_address:
        return config.advertise_address
    if bound_host not in WILDCARD_HOSTS:
        return bound_host
    choice = choose_advertise_address(config.advertise_interfaces, interfaces)
    tagged(_log, config.name).info(
        "advertising {address} ({reason})",
        address=choice.address,
        reason=choice.reason,
    )
    return choice.address


def node_meta(config: GossipConfig) -> bytes:
    """
    The delegate's node meta (none without a delegate).

    @raise ValueError: when it is over L{META_MAX_SIZE} bytes.
    """
    delegate = config.delegate
    if delegate is None:
        return b""
    meta = bytes(delegate.node_meta(META_MAX_SIZE))
    if len(meta) > META_MAX_SIZE:
        raise ValueError(f"node meta is {len(meta)} bytes, over {META_MAX_SIZE}")
    return meta
