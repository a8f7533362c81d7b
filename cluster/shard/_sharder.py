"""
The sharder every algorithm shares: two hashes (read and read-write) over
the eligible peers, swapped whole when an update ends, and the checks and
batch paths of its lookups.
"""

from __future__ import annotations

import gc
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import ClassVar

from zope.interface import implementer

from cluster.peer import Peer, PeerState
from cluster.shard import _vectors
from cluster.shard._interfaces import ISteppedSharder
from cluster.shard._keys import MAX_KEY, Key, NotEnoughPeersError, Op
from cluster.shard._stepped import Builder, Table, run_steps

# Only these states make a peer an owner, and only for these ops.
_READ_STATES = frozenset({PeerState.PARTICIPANT, PeerState.TERMINATING})
_WRITE_STATES = frozenset({PeerState.PARTICIPANT})


class State:
    """
    Everything a lookup needs, replaced as a whole by
    L{HashSharder.set_peers}.
    """

    __slots__ = ("by_name", "peers", "tables")

    def __init__(
        self,
        peers: tuple[Peer, ...],
        by_name: dict[str, Peer],
        read: Table,
        rw: Table,
    ) -> None:
        self.peers = peers
        self.by_name = by_name
        self.tables = {Op.READ: read, Op.READ_WRITE: rw}


@implementer(ISteppedSharder)
class HashSharder:
    """
    An L{ISteppedSharder} over two hashes (read and read-write), like ckit's
    chasher, with the tables made by one L{Builder}.
    """

    def __init__(self, builder: Builder) -> None:
        self._builder = builder
        empty = run_steps(builder.build_steps(frozenset(), ()))
        self._state = State((), {}, empty, empty)
        # Bumped by every update; an unfinished stepped update that is no
        # longer the latest ends without effect.
        self._generation = 0

    def set_peers(self, peers: Iterable[Peer]) -> None:
        run_steps(self.set_peers_in_steps(peers))

    def set_peers_in_steps(self, peers: Iterable[Peer]) -> Generator[None, None, None]:
        self._generation += 1
        generation = self._generation
        by_name: dict[str, Peer] = {}
        for p in peers:
            if p.state in _READ_STATES:
                by_name[p.name] = p
        read_names = frozenset(by_name)
        rw_names = frozenset(
            name for name, p in by_name.items() if p.state in _WRITE_STATES
        )
        old = self._state.tables
        builder = self._builder
        read = yield from builder.build_steps(
            read_names, (old[Op.READ], old[Op.READ_WRITE])
        )
        # The fresh read table is usually the closest base: with no
        # terminating peers it is the very same table.
        rw = yield from builder.build_steps(
            rw_names, (read, old[Op.READ_WRITE], old[Op.READ])
        )
        if generation != self._generation:
            return
        builder.retain(read_names)
        ordered = tuple(sorted(by_name.values(), key=attrgetter("name")))
        self._state = State(ordered, by_name, read, rw)

    def peers(self) -> list[Peer]:
        return list(self._state.peers)

    def lookup(self, key: Key, n: int, op: Op) -> list[Peer]:
        # The checks are inlined for the usual case: a lookup is a hot call.
        state = self._state
        table = _table_for(state, op)
        if not 0 <= key <= MAX_KEY:
            _check_key(key)
        if n.__class__ is not int or not 0 < n <= len(table.names):
            if _check_n(n, len(table.names)):
                return []
        return table.lookup(key, n, state.by_name)

    def lookup_many(self, keys: Sequence[Key], n: int, op: Op) -> list[list[Peer]]:
        state = self._state
        table = _table_for(state, op)
        if (
            _vectors.enabled
            and len(keys) >= _vectors.VECTOR_BATCH
            and table.answers_arrays
        ):
            # Converting to uint64 is the range check.
            wanted = _vectors.uint64_array(keys)
            if _check_n(n, len(table.names)):
                return [[] for _ in keys]
            with collector_paused():
                return table.lookup_array(wanted, n, state.by_name)
        # Two C-speed passes instead of a Python check per key.
        if len(keys) and (min(keys) < 0 or max(keys) > MAX_KEY):
            raise ValueError("keys must be uint64 values (0..MAX_KEY)")
        if _check_n(n, len(table.names)):
            return [[] for _ in keys]
        with collector_paused():
            return table.lookup_many(keys, n, state.by_name)


class PerKeyTable:
    """
    A table that answers a batch one key at a time (no shared work to
    save across keys).
    """

    __slots__ = ("names",)

    answers_arrays: ClassVar[bool] = False

    def lookup(self, key: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        raise NotImplementedError

    def lookup_many(
        self, keys: Sequence[int], n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        lookup = self.lookup
        return [lookup(key, n, by_name) for key in keys]

    def lookup_array(
        self, keys: object, n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        raise NotImplementedError


@contextmanager
def collector_paused() -> Iterator[None]:
    """
    Pause the cyclic garbage collector while a batch builds its answer.

    A batch of a million keys makes a million small lists; each few hundred
    new objects would start a collection, and the older generations get
    walked again and again: more than half of a large batch's time.  The
    answer holds no cycles, so nothing is missed; when the collector comes
    back it looks at the new lists once.  A collector the application
    disabled stays disabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _table_for(state: State, op: Op) -> Table:
    try:
        return state.tables[op]
    except (KeyError, TypeError):  # not an Op (TypeError: unhashable)
        raise ValueError(f"unknown op {op!r}") from None


def _check_key(key: int) -> None:
    if not 0 <= key <= MAX_KEY:
        raise ValueError(f"key must be a uint64 (0..MAX_KEY), got {key!r}")


def _check_n(n: int, have: int) -> bool:
    """
    Validate C{n}.

    @return: C{True} when the answer is the empty list.
    @raise TypeError: when C{n} is not an C{int}.
    @raise ValueError: when C{n} is negative.
    @raise NotEnoughPeersError: when C{n} is more than C{have}.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {n!r}")
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    # Same order as ckit: too many owners is an error even though n == 0 never is.
    if n > have:
        raise NotEnoughPeersError(n, have)
    return n == 0
