"""
The rendezvous sharder (ckit's C{rendezvous.go}): highest random weight.
"""

from __future__ import annotations

import xxhash

from cluster.peer import Peer
from cluster.shard._interfaces import ISteppedSharder
from cluster.shard._keys import MAX_KEY
from cluster.shard._sharder import HashSharder, PerKeyTable
from cluster.shard._stepped import RebuildingBuilder


def rendezvous() -> ISteppedSharder:
    """
    A rendezvous (highest random weight) sharder.

    The owners are the C{n} nodes with the lowest
    C{(xorshift_mult64(key ^ XXH64(name)), name)}.  Excellent balance, but
    each lookup costs O(N).
    """
    return HashSharder(RebuildingBuilder(RendezvousTable))


def xorshift_mult64(x: int) -> int:
    """
    Vigna's xorshift* mixer on a uint64, as ckit uses it.
    """
    x ^= x >> 12
    x ^= (x << 25) & MAX_KEY
    x ^= x >> 27
    return (x * 2685821657736338717) & MAX_KEY


class RendezvousTable(PerKeyTable):
    """
    Every node's name hash, scored against each key.
    """

    __slots__ = ("hashes",)

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        ordered = sorted(names)
        self.hashes = [(xxhash.xxh64_intdigest(n.encode("utf-8")), n) for n in ordered]

    def _scores(self, key: int) -> list[tuple[int, str]]:
        mix = xorshift_mult64
        return [(mix(key ^ h), name) for h, name in self.hashes]

    def lookup(self, key: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        scores = self._scores(key)
        if n == 1:
            return [by_name[min(scores)[1]]]
        # Lowest (score, name) first; names are unique so ties are impossible.
        scores.sort()
        return [by_name[name] for _, name in scores[:n]]
