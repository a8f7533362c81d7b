"""
The membership layer: a Python re-creation of hashicorp/memberlist that
speaks its native UDP/TCP wire format.

Layers, bottom up: L{codec} and L{wire} (message structs to and from
bytes), L{lzw}, L{keyring} and L{framing} (packet and stream wrapping),
L{address} and L{advertise} (addresses), L{transport} (sockets); then one
module per mechanism, as in memberlist: L{members}, L{awareness},
L{suspicion}, L{broadcast}, L{acks}, L{timers}, L{state} (the member
table's rules), L{messenger} (sending), L{probe} (failure detection),
L{net} (receiving), and L{memberlist}, the API that wires them.
"""

from cluster.gossip.config import GossipConfig
from cluster.gossip.errors import (
    BindError,
    JoinError,
    JoinRefused,
    NoPingResponseError,
    RemoteError,
)
from cluster.gossip.interfaces import (
    IBroadcastWaker,
    IConflictDelegate,
    IDelegate,
    IEventDelegate,
    IPacketHandler,
    ITransport,
)
from cluster.gossip.keyring import Keyring
from cluster.gossip.memberlist import Memberlist
from cluster.gossip.members import Member, MemberState

__all__ = [
    "BindError",
    "GossipConfig",
    "IBroadcastWaker",
    "IConflictDelegate",
    "IDelegate",
    "IEventDelegate",
    "IPacketHandler",
    "ITransport",
    "JoinError",
    "JoinRefused",
    "Keyring",
    "Member",
    "MemberState",
    "Memberlist",
    "NoPingResponseError",
    "RemoteError",
]
