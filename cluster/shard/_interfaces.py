"""
What a sharder provides: the plug point a L{cluster.ckit.node.Node} feeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from zope.interface import Interface

from cluster.peer import Peer
from cluster.shard._keys import Key, Op


class ISharder(Interface):
    """
    Finds the peers owning a key (ckit's C{shard.Sharder}).

    Implementations are built for the reactor thread; the peer set is
    swapped atomically, so lookups never see a half-applied L{set_peers}.
    """

    def set_peers(peers: Iterable[Peer]) -> None:
        """
        Replace the peer set.  Viewers are ignored.

        If a name appears more than once, its last non-viewer entry wins.
        """

    def peers() -> list[Peer]:
        """
        The peers used for sharding (no viewers), sorted by name.
        """

    def lookup(key: Key, n: int, op: Op) -> list[Peer]:
        """
        The C{n} owners of C{key} among the peers eligible for C{op}.

        @return: the owners, the primary owner first; C{[]} when C{n == 0}.
        @raise NotEnoughPeersError: when fewer than C{n} peers are eligible.
        @raise ValueError: for a negative C{n} or a key outside
            C{0..MAX_KEY}.
        """

    def lookup_many(keys: Sequence[Key], n: int, op: Op) -> list[list[Peer]]:
        """
        Batch form of L{lookup}: element C{i} is C{lookup(keys[i], n, op)}.

        Faster than calling L{lookup} in a loop: the keys are range-checked
        in two C-level passes (C{min} and C{max}) and C{n} once for the
        whole batch, the garbage collector is paused while the answer's
        lists are made, and the ring sharder finds every key's token with
        numpy's C{searchsorted} (the C{fast} extra) or C-level bisection
        (C{map} over C{bisect_left}).  The rendezvous and multi-probe
        sharders still score each key on its own, so for them the batch
        only saves the per-call checks.

        @return: one list of owners per key, in the order of C{keys}.
        @raise NotEnoughPeersError: for the whole batch when fewer than C{n}
            peers are eligible, even if C{keys} is empty.
        @raise ValueError: for the whole batch when any key is outside
            C{0..MAX_KEY}, or for a negative C{n}.
        """


class ISteppedSharder(ISharder):
    """
    An L{ISharder} whose updates can be cut into steps, so that a large one
    (a node joining a 1,000-node cluster builds a ring of 512,000 tokens)
    never holds the reactor for long.  Every sharder made by
    L{cluster.shard} is one.
    """

    def set_peers_in_steps(peers: Iterable[Peer]) -> Iterator[None]:
        """
        L{set_peers}, one bounded piece of work (about ten milliseconds)
        per C{next()}.  The new peer set takes effect when the iterator is
        exhausted; lookups answer from the previous one until then.  A
        later L{set_peers} or C{set_peers_in_steps} supersedes an
        unfinished update, which then ends without effect.
        """


Sharder = ISharder
"""
The former name of L{ISharder}, kept for one release: use L{ISharder}.
It is the interface itself, so C{ISharder.providedBy}, not C{isinstance},
tells whether an object is one.
"""

SteppedSharder = ISteppedSharder
"""
The former name of L{ISteppedSharder}, kept for one release: use
L{ISteppedSharder}.  It is the interface itself, so
C{ISteppedSharder.providedBy}, not C{isinstance}, tells whether an object
is one.
"""
