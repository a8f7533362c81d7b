"""
The infection-style broadcast queue (memberlist's queue.go and
broadcast.go): each message is piggybacked a bounded number of times,
least-sent first, and a newer message about a member replaces the older.
"""

from __future__ import annotations

import bisect
import itertools
import math
import sys
from collections.abc import Callable

import attrs

__all__ = ["MIN_QUEUE_DEPTH", "BroadcastQueue", "retransmit_limit"]

# Serf's MinQueueDepth: a queue holds at most max(this, 2 * members).
MIN_QUEUE_DEPTH = 4096


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """
    How many times a broadcast is sent in a cluster of C{n} members:
    C{mult * ceil(log10(n + 1))}.
    """
    return retransmit_mult * math.ceil(math.log10(n + 1))


@attrs.define(eq=False)
class _Broadcast:
    name: str | None
    message: bytes
    on_finished: Callable[[], object] | None
    serial: int
    transmits: int = 0
    # Handed out before every other broadcast (see BroadcastQueue.expedite).
    first: bool = False

    def finish(self) -> None:
        if self.on_finished is not None:
            callback, self.on_finished = self.on_finished, None
            callback()


_Entry = tuple[int, int, _Broadcast]
# Sorts before every serial: (-free, _NEWEST) is the first entry of length
# free or shorter.
_NEWEST = -sys.maxsize - 1


@attrs.define(eq=False)
class BroadcastQueue:
    """
    Pending broadcasts, handed out within a byte budget.

    As memberlist's btree, the queue is kept in order: one tier per
    transmit count, each sorted longest then newest first, so that taking
    a few messages costs about as much as the messages taken, not a sort
    of the whole queue (which, while a thousand joins are being spread,
    holds a thousand messages and is asked on every gossip tick).

    It is bounded as Serf bounds its queues (C{MinQueueDepth}): past
    C{max(min_depth, 2 * num_nodes())} broadcasts, the most-sent are
    dropped (then the shortest, then the oldest: the end of memberlist's
    btree, what its C{Prune} drops), each told it is finished and counted
    in C{dropped}.  Named broadcasts replace each other, so only unnamed
    ones (user broadcasts) can pile up that far.

    A broadcast can be put at the front (L{expedite}): it is then handed
    out before any other, at every turn, until sent its full number of
    times.

    @ivar num_nodes: estimate of the cluster size, for the retransmit limit.
    @ivar dropped: broadcasts dropped because the queue was full.
    """

    num_nodes: Callable[[], int]
    retransmit_mult: int
    # Told after every queue(): the gossip ticker sleeps until then.
    on_queued: Callable[[], object] | None = attrs.field(default=None, kw_only=True)
    min_depth: int = attrs.field(default=MIN_QUEUE_DEPTH, kw_only=True)
    dropped: int = attrs.field(default=0, init=False)
    # Each tier holds (-length, -serial, broadcast): sorted, it is longest
    # first, then newest, and bisect finds the longest that fits.
    _tiers: dict[int, list[_Entry]] = attrs.field(factory=dict, init=False)
    _by_name: dict[str, _Broadcast] = attrs.field(factory=dict, init=False)
    # Expedited broadcasts, oldest first.
    _front: list[_Broadcast] = attrs.field(factory=list, init=False)
    _count: int = attrs.field(default=0, init=False)
    _serials: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, name: object) -> bool:
        """
        Whether a broadcast named C{name} is queued.
        """
        return name in self._by_name

    def queue(
        self,
        message: bytes,
        name: str | None = None,
        on_finished: Callable[[], object] | None = None,
    ) -> None:
        """
        Add C{message}.  With a C{name}, any queued broadcast with the same
        name is dropped first and its C{on_finished} called.

        @param on_finished: called once the message has been sent its full
            number of times or was superseded.
        """
        if name is not None:
            old = self._by_name.get(name)
            if old is not None:
                self._remove(old)
                old.finish()
        item = _Broadcast(name, message, on_finished, next(self._serials))
        self._insert(item)
        if name is not None:
            self._by_name[name] = item
        if self._count > self.min_depth:
            self._prune(max(self.min_depth, 2 * self.num_nodes()))
        if self.on_queued is not None:
            self.on_queued()

    def expedite(self, name: str) -> None:
        """
        Put the broadcast named C{name}, if queued, at the front: from now
        on it is handed out before any other (before those expedited
        after it too), whatever its transmissions, length or age, until
        sent its full number of times or superseded.  A node's own
        I{terminating} state must not wait behind the states of a hundred
        peers stopping with it.
        """
        item = self._by_name.get(name)
        if item is None or item.first:
            return
        self._remove(item)
        item.first = True
        self._insert(item)
        self._by_name[name] = item
        if self.on_queued is not None:
            self.on_queued()

    def get(self, overhead: int, limit: int) -> list[bytes]:
        """
        Take broadcasts that fit in C{limit} bytes, each costing
        C{overhead} plus its length: fewest transmissions first, then the
        longest, then the newest (memberlist's C{GetBroadcasts}).
        """
        if not self._count:
            return []
        transmit_limit = retransmit_limit(self.retransmit_mult, self.num_nodes())
        chosen: list[bytes] = []
        sent: list[_Broadcast] = []
        used = 0
        for item in list(self._front):
            if limit - used - overhead < len(item.message):
                continue
            self._front.remove(item)
            used += overhead + len(item.message)
            chosen.append(item.message)
            sent.append(item)
        for transmits in sorted(self._tiers):
            tier = self._tiers[transmits]
            while tier and limit - used > overhead:
                free = limit - used - overhead
                index = bisect.bisect_left(tier, (-free, _NEWEST))
                if index == len(tier):
                    break  # nothing in this tier fits
                item = tier.pop(index)[2]
                used += overhead + len(item.message)
                chosen.append(item.message)
                sent.append(item)
            if not tier:
                del self._tiers[transmits]
            if limit - used <= overhead:
                break
        # As memberlist: moved to their next tier only after the walk, and
        # told they are finished once nothing else is being changed.
        finished = []
        self._count -= len(sent)
        for item in sent:
            item.transmits += 1
            if item.transmits < transmit_limit:
                self._insert(item)
                continue
            if item.name is not None and self._by_name.get(item.name) is item:
                del self._by_name[item.name]
            finished.append(item)
        for item in finished:
            item.finish()
        return chosen

    def _prune(self, depth: int) -> None:
        # Expedited broadcasts are few (a node's own states) and never pruned.
        while self._count > depth and self._tiers:
            tier = self._tiers[max(self._tiers)]
            item = tier[-1][2]
            self._remove(item)
            self.dropped += 1
            item.finish()

    def _insert(self, item: _Broadcast) -> None:
        if item.first:
            self._front.append(item)
            self._count += 1
            return
        tier = self._tiers.setdefault(item.transmits, [])
        bisect.insort(tier, (-len(item.message), -item.serial, item))
        self._count += 1

    def _remove(self, item: _Broadcast) -> None:
        if item.first:
            self._front.remove(item)
        else:
            tier = self._tiers[item.transmits]
            del tier[bisect.bisect_left(tier, (-len(item.message), -item.serial))]
            if not tier:
                del self._tiers[item.transmits]
        self._count -= 1
        if item.name is not None and self._by_name.get(item.name) is item:
            del self._by_name[item.name]

    def clear(self) -> None:
        """
        Drop everything, telling each waiter it is finished.
        """
        items = [entry[2] for tier in self._tiers.values() for entry in tier]
        items += self._front
        self._front = []
        self._tiers.clear()
        self._by_name.clear()
        self._count = 0
        for item in items:
            item.finish()
