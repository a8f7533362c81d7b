"""
The multi-probe sharder (ckit's C{multiprobe.go}).
"""

from __future__ import annotations

from bisect import bisect_left

import xxhash

from cluster.peer import Peer
from cluster.shard._interfaces import ISteppedSharder
from cluster.shard._keys import MAX_KEY
from cluster.shard._sharder import HashSharder, PerKeyTable
from cluster.shard._stepped import RebuildingBuilder

PROBES = 21
"""
The probes per key, as ckit.
"""


def multiprobe() -> ISteppedSharder:
    """
    A multi-probe sharder (U{https://arxiv.org/abs/1505.00062}).

    Every node has a single token, C{XXH64(name)}; a key is probed at 21
    points and the token closest to any probe is the primary owner,
    followed by the next tokens on the ring.
    """
    return HashSharder(RebuildingBuilder(MultiprobeTable))


def _second_key(key: int) -> int:
    # ckit hashes the lowercase hex text of the key (no padding, "0" for 0).
    return xxhash.xxh64_intdigest(b"%x" % key)


class MultiprobeTable(PerKeyTable):
    """
    One token per node, sorted: C{tokens[i]} is held by C{owners[i]}.
    """

    __slots__ = ("owners", "tokens")

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        pairs = sorted((xxhash.xxh64_intdigest(n.encode("utf-8")), n) for n in names)
        self.tokens = [t for t, _ in pairs]
        self.owners = [n for _, n in pairs]

    def _closest(self, key: int) -> int:
        """
        Index of the token nearest to any of the key's probes.
        """
        tokens = self.tokens
        size = len(tokens)
        h1 = _second_key(key)
        h2 = _second_key(h1)
        best, best_dist = 0, MAX_KEY
        for k in range(PROBES):
            h = (h1 + k * h2) & MAX_KEY
            found = bisect_left(tokens, h)
            # Neighbours on both sides; note ckit measures plain (not circular)
            # distance, and prefers the lower neighbour on a tie.
            a = found - 1 if found > 0 else size - 1
            b = found % size
            dist_a = abs(tokens[a] - h)
            dist_b = abs(tokens[b] - h)
            idx, dist = (a, dist_a) if dist_a <= dist_b else (b, dist_b)
            # Strictly closer only: the earliest probe wins ties.
            if dist < best_dist:
                best, best_dist = idx, dist
        return best

    def lookup(self, key: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        first = self._closest(key)
        owners = self.owners
        size = len(owners)
        # One token per node, so the next n tokens are n distinct nodes.
        return [by_name[owners[(first + i) % size]] for i in range(n)]
