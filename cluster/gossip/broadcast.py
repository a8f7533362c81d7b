"""
The infection-style broadcast queue (memberlist's queue.go and
broadcast.go): each message is piggybacked a bounded number of times,
least-sent first, and a newer message about a member replaces the older.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import attrs

__all__ = ["BroadcastQueue", "retransmit_limit"]


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

    def finish(self) -> None:
        if self.on_finished is not None:
            callback, self.on_finished = self.on_finished, None
            callback()


@attrs.define(eq=False)
class BroadcastQueue:
    """
    Pending broadcasts, handed out within a byte budget.

    @ivar num_nodes: estimate of the cluster size, for the retransmit limit.
    """

    num_nodes: Callable[[], int]
    retransmit_mult: int
    _items: dict[int, _Broadcast] = attrs.field(factory=dict, init=False)
    _by_name: dict[str, _Broadcast] = attrs.field(factory=dict, init=False)
    _serials: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    def __len__(self) -> int:
        return len(self._items)

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
            old = self._by_name.pop(name, None)
            if old is not None:
                del self._items[old.serial]
                old.finish()
        item = _Broadcast(name, message, on_finished, next(self._serials))
        self._items[item.serial] = item
        if name is not None:
            self._by_name[name] = item

    def get(self, overhead: int, limit: int) -> list[bytes]:
        """
        Take broadcasts that fit in C{limit} bytes, each costing
        C{overhead} plus its length: fewest transmissions first, then the
        longest, then the newest.
        """
        if not self._items:
            return []
        transmit_limit = retransmit_limit(self.retransmit_mult, self.num_nodes())
        chosen: list[bytes] = []
        used = 0
        ordered = sorted(
            self._items.values(),
            key=lambda b: (b.transmits, -len(b.message), -b.serial),
        )
        for item in ordered:
            cost = overhead + len(item.message)
            if used + cost > limit:
                continue
            used += cost
            chosen.append(item.message)
            item.transmits += 1
            if item.transmits >= transmit_limit:
                self._remove(item)
                item.finish()
            if limit - used <= overhead:
                break
        return chosen

    def _remove(self, item: _Broadcast) -> None:
        del self._items[item.serial]
        if item.name is not None and self._by_name.get(item.name) is item:
            del self._by_name[item.name]

    def clear(self) -> None:
        """
        Drop everything, telling each waiter it is finished.
        """
        items = list(self._items.values())
        self._items.clear()
        self._by_name.clear()
        for item in items:
            item.finish()
