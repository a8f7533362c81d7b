"""
Member records: the public L{Member} view and the mutable L{NodeState}
kept in the member table (memberlist's C{Node} and C{nodeState}).
"""

from __future__ import annotations

import enum
import operator

import attrs

__all__ = ["Member", "MemberState", "NodeState"]


class MemberState(enum.IntEnum):
    """
    A member's state, numbered as on the wire (C{NodeStateType}).
    """

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    def __str__(self) -> str:
        return self.name.lower()


@attrs.define(eq=False)
class _MemberRecord:
    """
    What we know of one member, held alike by the public L{Member} and the
    table's L{NodeState}.

    @ivar vsn: the 6 version bytes it advertises
        C{[PMin, PMax, PCur, DMin, DMax, DCur]}.
    """

    name: str
    address: str
    port: int
    meta: bytes
    state: MemberState
    incarnation: int
    vsn: bytes = b""

    @property
    def protocol_max(self) -> int:
        """
        The highest memberlist protocol version it understands (0 if unknown).
        """
        return self.vsn[1] if len(self.vsn) >= 2 else 0

    def full_address(self) -> str:
        """
        C{"host:port"}, with IPv6 hosts in brackets.
        """
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@attrs.frozen
class Member(_MemberRecord):
    """
    A snapshot of one cluster member.
    """


# Every field of a Member, in order, read from a NodeState at once.
_member_fields = operator.attrgetter(
    *(field.name for field in attrs.fields(_MemberRecord))
)


@attrs.define(eq=False)
class NodeState(_MemberRecord):
    """
    Our mutable record of one member: what a L{Member} holds (mutable here:
    the table changes it in place on every message, where a frozen
    L{Member} would cost an allocation each time) and when its state last
    changed.

    @ivar state_change: when C{state} last changed, on our clock.
    """

    state_change: float = attrs.field(kw_only=True)

    def dead_or_left(self) -> bool:
        return self.state in (MemberState.DEAD, MemberState.LEFT)

    def to_member(self) -> Member:
        return Member(*_member_fields(self))
