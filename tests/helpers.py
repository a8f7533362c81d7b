"""
Scaffolding shared by the tests.
"""

from __future__ import annotations

from cluster.gossip import Member, Memberlist


def known(node: Memberlist, name: str) -> Member:
    """
    C{node}'s record of C{name}, failing the test when it has none.
    """
    member = node.member(name)
    if member is None:
        raise AssertionError(f"{node.name} has no record of {name}")
    return member
