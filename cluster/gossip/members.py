"""
Member records: the public L{Member} view and the mutable L{NodeState}
kept in the member table (memberlist's C{Node} and C{nodeState}).
"""

from __future__ import annotations

import enum

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


@attrs.frozen
class Member:
    """
    A snapshot of one cluster member.

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


@attrs.define(eq=False)
class NodeState:
    """
    Our mutable record of one member: the fields of L{Member} (declared
    again on purpose: the table changes them in place on every message,
    where a frozen L{Member} would cost an allocation each time) and when
    its state last changed.

    @ivar state_change: when C{state} last changed, on our clock.
    """

    name: str
    address: str
    port: int
    meta: bytes
    incarnation: int
    state: MemberState
    state_change: float
    vsn: bytes = b""

    @property
    def protocol_max(self) -> int:
        return self.vsn[1] if len(self.vsn) >= 2 else 0

    def dead_or_left(self) -> bool:
        return self.state in (MemberState.DEAD, MemberState.LEFT)

    def to_member(self) -> Member:
        return Member(
            name=self.name,
            address=self.address,
            port=self.port,
            meta=self.meta,
            state=self.state,
            incarnation=self.incarnation,
            vsn=self.vsn,
        )
