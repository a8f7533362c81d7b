"""
The membership layer: a Python re-creation of hashicorp/memberlist that
speaks its native UDP/TCP wire format.

Layers, bottom up: L{wire} (message bodies), L{lzw}, L{keyring} and
L{framing} (packet and stream wrapping), L{transport} (sockets),
then the protocol mechanisms L{members}, L{awareness}, L{suspicion},
L{broadcast}, and the state machine in L{memberlist}.
"""

from cluster.gossip.config import GossipConfig
from cluster.gossip.interfaces import (
    IConflictDelegate,
    IDelegate,
    IEventDelegate,
    IPacketHandler,
    ITransport,
)
from cluster.gossip.keyring import Keyring
from cluster.gossip.memberlist import JoinError, Memberlist, RemoteError
from cluster.gossip.members import Member, MemberState

__all__ = [
    "GossipConfig",
    "IConflictDelegate",
    "IDelegate",
    "IEventDelegate",
    "IPacketHandler",
    "ITransport",
    "JoinError",
    "Keyring",
    "Member",
    "MemberState",
    "Memberlist",
    "RemoteError",
]
