"""
Consistent hashing of keys onto cluster peers (mirrors ckit's C{shard}
package).

Three algorithms are available, all bit-compatible with ckit so that a
Python node and a Go node agree on who owns a key:

  - L{ring}: a token ring (Alloy uses 512 tokens per node): O(log N)
    lookups;
  - L{rendezvous}: highest-random-weight hashing: O(N) lookups;
  - L{multiprobe}: multi-probe consistent hashing with 21 probes.

Like ckit, every sharder keeps two independent hashes: one over the peers
eligible for L{Op.READ} (participants and terminating peers) and one over
the peers eligible for L{Op.READ_WRITE} (participants only).  Viewers are
never owners.  Because they are separate hashes, a terminating peer does
not just get skipped by read-write lookups: its key ranges are
redistributed exactly as if it had left, so C{lookup(k, 1, Op.READ_WRITE)}
is not always the first non-terminating owner of C{lookup(k, n, Op.READ)}.
"""

from __future__ import annotations

import enum
import gc
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from itertools import repeat
from operator import and_, attrgetter, lshift, or_, rshift
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar, runtime_checkable

import attrs
import xxhash

from cluster.peer import Peer, PeerState

if TYPE_CHECKING:
    import numpy as _numpy

# The "fast" extra: vectorised batch lookups on the ring.  numpy is imported
# at the first large batch, not here: it costs every node about 14 MiB of
# memory, and most nodes never ask a batch.
_vectorised = find_spec("numpy") is not None

__all__ = [
    "MAX_KEY",
    "Key",
    "KeyBuilder",
    "NotEnoughPeersError",
    "Op",
    "Sharder",
    "SteppedSharder",
    "multiprobe",
    "rendezvous",
    "ring",
    "string_key",
]

Key: TypeAlias = int
"""
A shard key: an unsigned 64-bit integer (ckit's C{shard.Key}).
"""

MAX_KEY = (1 << 64) - 1
"""
The largest valid L{Key}.
"""

_MASK64 = MAX_KEY

_T = TypeVar("_T")


def string_key(s: str) -> Key:
    """
    The key of a string: XXH64 (seed 0) of its UTF-8 bytes.
    """
    return xxhash.xxh64_intdigest(s.encode("utf-8"))


class KeyBuilder:
    """
    Builds a L{Key} from bytes written in several pieces.

    Writing C{b"ab"} then C{b"c"} gives the same key as
    C{string_key("abc")}: all writes stream into a single XXH64 digest.
    Reusable after L{reset}.
    """

    def __init__(self) -> None:
        """
        Create a builder with nothing written yet.
        """
        self._digest = xxhash.xxh64()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """
        Append C{data} to the key's input.

        @return: the length of C{data} in bytes.
        """
        self._digest.update(data)
        return memoryview(data).nbytes

    def reset(self) -> None:
        """
        Forget everything written so far.
        """
        self._digest.reset()

    def key(self) -> Key:
        """
        The key for everything written since creation or L{reset}.
        """
        return self._digest.intdigest()


class Op(enum.Enum):
    """
    What a lookup is for; it decides which peers may own the key.

    @ivar READ: read-only access: participant and terminating peers are
        eligible.
    @ivar READ_WRITE: read or write access: only participant peers are
        eligible.
    """

    READ = 0
    READ_WRITE = 1

    def __str__(self) -> str:
        """
        ckit's spelling: C{"Read"} or C{"ReadWrite"}.
        """
        return "Read" if self is Op.READ else "ReadWrite"


class NotEnoughPeersError(Exception):
    """
    A lookup asked for more owners than there are eligible peers.

    The text is ckit's, word for word.

    @ivar need: the number of owners requested.
    @ivar have: the number of peers eligible for the lookup's L{Op}, not
        all peers.
    """

    def __init__(self, need: int, have: int) -> None:
        super().__init__(f"not enough nodes: need at least {need}, have {have}")
        self.need = need
        self.have = have


@runtime_checkable
class Sharder(Protocol):
    """
    Finds the peers owning a key (ckit's C{shard.Sharder}).

    Implementations are built for the reactor thread; the peer set is
    swapped atomically, so lookups never see a half-applied L{set_peers}.
    """

    def set_peers(self, peers: Iterable[Peer]) -> None:
        """
        Replace the peer set.  Viewers are ignored.

        If a name appears more than once, its last non-viewer entry wins.
        """

    def peers(self) -> list[Peer]:
        """
        The peers used for sharding (no viewers), sorted by name.
        """

    def lookup(self, key: Key, n: int, op: Op) -> list[Peer]:
        """
        The C{n} owners of C{key} among the peers eligible for C{op}.

        @return: the owners, the primary owner first; C{[]} when C{n == 0}.
        @raise NotEnoughPeersError: when fewer than C{n} peers are eligible.
        @raise ValueError: for a negative C{n} or a key outside
            C{0..MAX_KEY}.
        """

    def lookup_many(self, keys: Sequence[Key], n: int, op: Op) -> list[list[Peer]]:
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


@runtime_checkable
class SteppedSharder(Sharder, Protocol):
    """
    A L{Sharder} whose updates can be cut into steps, so that a large one
    (a node joining a 1,000-node cluster builds a ring of 512,000 tokens)
    never holds the reactor for long.  Every sharder made here is one.
    """

    def set_peers_in_steps(self, peers: Iterable[Peer]) -> Iterator[None]:
        """
        L{set_peers}, one bounded piece of work (about ten milliseconds)
        per C{next()}.  The new peer set takes effect when the iterator is
        exhausted; lookups answer from the previous one until then.  A
        later L{set_peers} or C{set_peers_in_steps} supersedes an
        unfinished update, which then ends without effect.
        """


def ring(num_tokens: int = 512) -> SteppedSharder:
    """
    A ring sharder with C{num_tokens} tokens per node.

    Each node's tokens are successive XXH64 digests of its name followed by
    one more byte C{t & 0xff} per token (the digest is never reset); a key
    belongs to the node holding the first token C{>= key}, wrapping around,
    and replicas are the next distinct nodes clockwise.  Ties between equal
    tokens go to the lexicographically smaller name.  256 or 512 tokens give
    a good distribution; Alloy uses 512.

    @raise TypeError: when C{num_tokens} is not an C{int}.
    @raise ValueError: when C{num_tokens} is less than 1.
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
        raise TypeError("num_tokens must be an int")
    if num_tokens < 1:
        # ckit would build an empty ring and crash on the first lookup.
        raise ValueError(f"num_tokens must be at least 1, got {num_tokens}")
    return _HashSharder(_RingBuilder(num_tokens))


def rendezvous() -> SteppedSharder:
    """
    A rendezvous (highest random weight) sharder.

    The owners are the C{n} nodes with the lowest
    C{(xorshift_mult64(key ^ XXH64(name)), name)}.  Excellent balance, but
    each lookup costs O(N).
    """
    return _HashSharder(_RebuildingBuilder(_RendezvousTable))


def multiprobe() -> SteppedSharder:
    """
    A multi-probe sharder (U{https://arxiv.org/abs/1505.00062}).

    Every node has a single token, C{XXH64(name)}; a key is probed at 21
    points and the token closest to any probe is the primary owner,
    followed by the next tokens on the ring.
    """
    return _HashSharder(_RebuildingBuilder(_MultiprobeTable))


# --- shared sharder logic ---------------------------------------------------


class _Table(Protocol):
    """
    An immutable consistent hash over a fixed set of node names.
    """

    @property
    def names(self) -> frozenset[str]: ...

    def lookup(self, key: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        """
        Owners of C{key}; the caller guarantees C{1 <= n <= len(names)}.
        """

    def lookup_many(
        self, keys: Sequence[int], n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        """
        Owners of each key, same preconditions as L{lookup}.
        """


class _Builder(Protocol):
    def build_steps(
        self, names: frozenset[str], bases: Sequence[_Table]
    ) -> Generator[None, None, _Table]:
        """
        A table for C{names}, built in steps of bounded work (it yields
        between steps and returns the table); C{bases} may be reused or
        patched.
        """

    def retain(self, names: frozenset[str]) -> None:
        """
        Drop per-node caches for every node not in C{names}.
        """


# Only these states make a peer an owner, and only for these ops.
_READ_STATES = frozenset({PeerState.PARTICIPANT, PeerState.TERMINATING})
_WRITE_STATES = frozenset({PeerState.PARTICIPANT})


class _State:
    """
    Everything a lookup needs, replaced as a whole by L{_HashSharder.set_peers}.
    """

    __slots__ = ("by_name", "peers", "tables")

    def __init__(
        self,
        peers: tuple[Peer, ...],
        by_name: dict[str, Peer],
        read: _Table,
        rw: _Table,
    ) -> None:
        self.peers = peers
        self.by_name = by_name
        self.tables = {Op.READ: read, Op.READ_WRITE: rw}


class _HashSharder:
    """
    A L{SteppedSharder} over two hashes (read and read-write), like ckit's
    chasher.
    """

    def __init__(self, builder: _Builder) -> None:
        self._builder = builder
        empty = _run_steps(builder.build_steps(frozenset(), ()))
        self._state = _State((), {}, empty, empty)
        # Bumped by every update; an unfinished stepped update that is no
        # longer the latest ends without effect.
        self._generation = 0

    def set_peers(self, peers: Iterable[Peer]) -> None:
        _run_steps(self.set_peers_in_steps(peers))

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
        self._state = _State(ordered, by_name, read, rw)

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
        if _vectorised and len(keys) >= _VECTOR_BATCH and isinstance(table, _RingTable):
            # Converting to uint64 is the range check.
            np = _load_numpy()
            try:
                wanted = np.fromiter(keys, dtype=np.uint64, count=len(keys))
            except (OverflowError, TypeError, ValueError):
                raise ValueError("keys must be uint64 values (0..MAX_KEY)") from None
            if _check_n(n, len(table.names)):
                return [[] for _ in keys]
            with _collector_paused():
                return table.lookup_array(wanted, n, state.by_name)
        # Two C-speed passes instead of a Python check per key.
        if len(keys) and (min(keys) < 0 or max(keys) > MAX_KEY):
            raise ValueError("keys must be uint64 values (0..MAX_KEY)")
        if _check_n(n, len(table.names)):
            return [[] for _ in keys]
        with _collector_paused():
            return table.lookup_many(keys, n, state.by_name)


@contextmanager
def _collector_paused() -> Iterator[None]:
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


def _load_numpy() -> ModuleType:
    import numpy

    return numpy


def _run_steps(steps: Generator[None, None, _T]) -> _T:
    """
    Run a stepped computation to its end; its result.
    """
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _table_for(state: _State, op: Op) -> _Table:
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
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {n!r}")
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    # Same order as ckit: too many owners is an error even though n == 0 never is.
    if n > have:
        raise NotEnoughPeersError(n, have)
    return n == 0


# --- ring -------------------------------------------------------------------

# One-byte suffixes, allocated once: token generation appends one per token.
_TOKEN_SUFFIX = [bytes((i,)) for i in range(256)]


def _ring_tokens(name: str, num_tokens: int) -> list[int]:
    """
    ckit's tokens for one node, in generation order.
    """
    digest = xxhash.xxh64(name.encode("utf-8"))
    tokens = []
    for t in range(num_tokens):
        # Cumulative: each token hashes the name plus all suffixes so far.
        digest.update(_TOKEN_SUFFIX[t & 0xFF])
        tokens.append(digest.intdigest())
    return tokens


# Below this many keys a batch is cheaper without numpy's fixed costs.
_VECTOR_BATCH = 16


class _RingTable:
    """
    A sorted ring: C{tokens[i]} is held by C{owners[i]}.

    C{owners} has one extra entry, a copy of C{owners[0]}, so that the index
    C{bisect_left(tokens, key)} (which is C{len(tokens)} past the last
    token) wraps to the first token without a modulo in the batch fast path.

    With numpy installed (the C{fast} extra), batches search a C{uint64}
    copy of the tokens with C{searchsorted}, which finds the same index as
    C{bisect_left}; the copy is made at the first batch, not at build time,
    so a node that only calls L{lookup} never pays for it.
    """

    __slots__ = ("_vectors", "names", "owners", "tokens")

    def __init__(self, names: frozenset[str], tokens: list[int], owners: list[str]):
        self.names = names
        self.tokens = tokens
        self.owners = owners
        self._vectors: _RingVectors | None = None

    def lookup(self, key: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        i = bisect_left(self.tokens, key)
        if n == 1:
            return [by_name[self.owners[i]]]
        return self._walk(i, n, by_name)

    def lookup_many(
        self, keys: Sequence[int], n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        # map() over C callables keeps the per-key search out of the
        # interpreter loop; only wrapping each answer in a list is Python code.
        positions = map(bisect_left, repeat(self.tokens), keys)
        if n == 1:
            return [[by_name[o]] for o in map(self.owners.__getitem__, positions)]
        walk = self._walk
        return [walk(i, n, by_name) for i in positions]

    def lookup_array(
        self, keys: _numpy.ndarray, n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        """
        L{lookup_many} for keys in a C{uint64} array (numpy installed).
        """
        vectors = self._vectors
        if vectors is None:
            vectors = self._vectors = _RingVectors.of(self)
        positions = vectors.positions(keys)
        if n == 1:
            # One Peer per owner, then one small list per key: the only
            # per-key Python work left.
            peers = [by_name[name] for name in vectors.names]
            return [[peers[r]] for r in vectors.ranks[positions].tolist()]
        # Keys that land on the same token share a walk (a copy each).
        walks: dict[int, list[Peer]] = {}
        walk = self._walk
        found = []
        for i in positions.tolist():
            owners = walks.get(i)
            if owners is None:
                owners = walks[i] = walk(i, n, by_name)
            found.append(owners.copy())
        return found

    def _walk(self, i: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        """
        Collect C{n} distinct owners clockwise from token index C{i}.
        """
        owners = self.owners
        size = len(self.tokens)
        if i == size:
            i = 0
        name = owners[i]
        # A list beats a set for the usual handful of replicas.
        seen: list[str] | set[str] = [name] if n <= 8 else {name}
        found = [by_name[name]]
        while len(found) < n:
            i += 1
            if i == size:
                i = 0
            name = owners[i]
            if name not in seen:
                if isinstance(seen, list):
                    seen.append(name)
                else:
                    seen.add(name)
                found.append(by_name[name])
        return found


# The slot table of a ring has about this many slots per token, at most
# 2**_MAX_SLOT_BITS (4 MiB of int32).
_SLOTS_PER_TOKEN = 8
_MAX_SLOT_BITS = 20


@attrs.frozen
class _RingVectors:
    """
    A ring as numpy arrays: its tokens; for each token (plus the
    wrap-around entry) the rank of its owner among C{names}; and a slot
    table that answers most keys without a search.

    The key space is cut into C{2**bits} equal slots (by the key's top
    bits).  Where no token falls inside a slot, every key in it has the
    same C{bisect_left} index, stored in C{slots}; elsewhere C{slots}
    holds -1 and the key is searched with C{searchsorted}.  With eight
    slots per token about nine keys in ten need no search.
    """

    tokens: _numpy.ndarray
    ranks: _numpy.ndarray
    names: list[str]
    slots: _numpy.ndarray
    shift: _numpy.uint64

    @classmethod
    def of(cls, table: _RingTable) -> _RingVectors:
        np = _load_numpy()
        names = sorted(table.names)
        rank = {name: i for i, name in enumerate(names)}
        tokens = np.array(table.tokens, dtype=np.uint64)
        bits = min(_MAX_SLOT_BITS, (len(tokens) * _SLOTS_PER_TOKEN).bit_length())
        shift = np.uint64(64 - bits)
        first_keys = np.arange(1 << bits, dtype=np.uint64) << shift
        last_keys = first_keys | ((np.uint64(1) << shift) - np.uint64(1))
        first = np.searchsorted(tokens, first_keys, side="left")
        last = np.searchsorted(tokens, last_keys, side="left")
        return cls(
            tokens,
            np.fromiter(
                map(rank.__getitem__, table.owners),
                dtype=np.int32,
                count=len(table.owners),
            ),
            names,
            np.where(first == last, first, -1).astype(np.int32),
            shift,
        )

    def positions(self, keys: _numpy.ndarray) -> _numpy.ndarray:
        """
        C{bisect_left(tokens, key)} for each of C{keys}.
        """
        np = _load_numpy()
        found: _numpy.ndarray = self.slots[keys >> self.shift]
        unsure = np.flatnonzero(found < 0)
        if len(unsure):
            found[unsure] = np.searchsorted(self.tokens, keys[unsure], side="left")
        return found


# Tokens handled per step of a stepped ring build: about ten milliseconds of
# CPython on a 2-core machine (bench/join_block.py measures the longest).
_STEP_TOKENS = 32_768


class _RingBuilder:
    """
    Builds ring tables, patching the previous ring when few nodes changed.

    Tokens are cached per node name, so a join costs 512 digests plus
    splicing the new tokens into the existing sorted arrays (C-speed list
    slicing) instead of rehashing and re-sorting every node.
    """

    # Patch the old ring while at most this fraction of nodes changed, and
    # while the patch stays within one step; beyond that a full build (in
    # steps) is cheaper than many Python-level splices.
    _PATCH_FRACTION = 8

    def __init__(self, num_tokens: int) -> None:
        self._num_tokens = num_tokens
        self._cache: dict[str, list[int]] = {}

    def _tokens_of(self, name: str) -> list[int]:
        tokens = self._cache.get(name)
        if tokens is None:
            tokens = self._cache[name] = _ring_tokens(name, self._num_tokens)
        return tokens

    def retain(self, names: frozenset[str]) -> None:
        # Bounded memory under churn: only current nodes stay cached; a node
        # that comes back costs one cheap recomputation.
        for name in [name for name in self._cache if name not in names]:
            del self._cache[name]

    def build_steps(
        self, names: frozenset[str], bases: Sequence[_Table]
    ) -> Generator[None, None, _Table]:
        best: _RingTable | None = None
        best_changes = 0
        for base in bases:
            assert isinstance(base, _RingTable)
            if base.names == names:
                return base
            changes = len(base.names ^ names)
            if best is None or changes < best_changes:
                best, best_changes = base, changes
        if (
            best is None
            or best_changes > len(names) // self._PATCH_FRACTION
            or best_changes * self._num_tokens > _STEP_TOKENS
        ):
            return (yield from self._build_full(names))
        return self._patch(best, names)

    def _build_full(self, names: frozenset[str]) -> Generator[None, None, _RingTable]:
        """
        Sort every token of C{names}, about L{_STEP_TOKENS} at a time.

        Tokens are sorted as single ints C{token << bits | name_rank}: plain
        int sorting is far faster than sorting tuples, and equal tokens still
        order by name because ranks follow name order.  Each step sorts the
        tokens of a few nodes and deals them into buckets by their top bits
        (bisecting the sorted run at the bucket bounds, C-speed slices); the
        later steps sort the buckets (each a merge of short sorted runs) one
        after the other and decode them.  Concatenated in order, the sorted
        buckets are the sorted ring.
        """
        ordered = sorted(names)
        if not ordered:
            return _RingTable(names, [], [])
        bits = len(ordered).bit_length()
        # About 4,096 tokens per bucket; hash outputs spread evenly, and an
        # uneven spread would only make some steps longer, never wrong.
        bucket_bits = (len(ordered) * self._num_tokens // 4096).bit_length()
        bucket_shift = 64 - bucket_bits + bits
        bounds = [(b + 1) << bucket_shift for b in range(1 << bucket_bits)]
        buckets: list[list[int]] = [[] for _ in bounds]
        per_step = max(1, _STEP_TOKENS // self._num_tokens)
        work = 0  # tokens handled since the last step ended
        for first in range(0, len(ordered), per_step):
            run: list[int] = []
            for rank in range(first, min(first + per_step, len(ordered))):
                shifted = map(lshift, self._tokens_of(ordered[rank]), repeat(bits))
                run += map(or_, shifted, repeat(rank))
            run.sort()
            start = 0
            for bucket, bound in zip(buckets, bounds, strict=True):
                end = bisect_left(run, bound, start)
                bucket += run[start:end]
                start = end
            work += len(run)
            if work >= _STEP_TOKENS:
                work = 0
                yield

        tokens: list[int] = []
        owners: list[str] = []
        rank_mask = (1 << bits) - 1
        for bucket in buckets:
            bucket.sort()
            tokens += map(rshift, bucket, repeat(bits))
            owners += map(ordered.__getitem__, map(and_, bucket, repeat(rank_mask)))
            work += len(bucket)
            if work >= _STEP_TOKENS:
                work = 0
                yield
        owners.append(owners[0])
        return _RingTable(names, tokens, owners)

    def _patch(self, base: _RingTable, names: frozenset[str]) -> _RingTable:
        old_tokens, old_owners = base.tokens, base.owners
        size = len(old_tokens)
        # Edits against the old arrays: (index, kind, token, name), where kind 0
        # inserts before index and kind 1 deletes index. Sorting them puts
        # inserts before a delete at the same index and orders inserts at one
        # index by (token, name), which keeps the result sorted.
        edits: list[tuple[int, int, int, str]] = []
        deleted: set[int] = set()
        for name in base.names - names:
            for token in self._tokens_of(name):
                i = bisect_left(old_tokens, token)
                # Equal tokens are ordered by name; find this node's own entry.
                while old_owners[i] != name or i in deleted:
                    i += 1
                deleted.add(i)
                edits.append((i, 1, token, name))
        for name in names - base.names:
            for token in self._tokens_of(name):
                i = bisect_left(old_tokens, token)
                while i < size and old_tokens[i] == token and old_owners[i] < name:
                    i += 1
                edits.append((i, 0, token, name))
        edits.sort()

        tokens: list[int] = []
        owners: list[str] = []
        start = 0  # first old index not yet copied or skipped
        for i, kind, token, name in edits:
            if i > start:
                tokens += old_tokens[start:i]
                owners += old_owners[start:i]
                start = i
            if kind:
                start = i + 1
            else:
                tokens.append(token)
                owners.append(name)
        tokens += old_tokens[start:size]
        owners += old_owners[start:size]
        if owners:
            owners.append(owners[0])
        return _RingTable(names, tokens, owners)


# --- rendezvous -------------------------------------------------------------


def _xorshift_mult64(x: int) -> int:
    """
    Vigna's xorshift* mixer on a uint64, as ckit uses it.
    """
    x ^= x >> 12
    x ^= (x << 25) & _MASK64
    x ^= x >> 27
    return (x * 2685821657736338717) & _MASK64


class _PerKeyTable:
    """
    A table that answers a batch one key at a time (no shared work to
    save across keys).
    """

    __slots__ = ("names",)

    def lookup(self, key: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        raise NotImplementedError

    def lookup_many(
        self, keys: Sequence[int], n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        lookup = self.lookup
        return [lookup(key, n, by_name) for key in keys]


@attrs.frozen
class _RebuildingBuilder:
    """
    Builds a table from scratch for each new set of names (reusing one of
    C{bases} for the same set): for sharders with one token per node,
    where there is nothing worth caching between builds.
    """

    table: Callable[[frozenset[str]], _Table]

    def build_steps(
        self, names: frozenset[str], bases: Sequence[_Table]
    ) -> Generator[None, None, _Table]:
        # One step: these tables are a hash or a sort of one token per node.
        for base in bases:
            if base.names == names:
                return base
        return self.table(names)
        yield  # a generator, with nothing to wait for

    def retain(self, names: frozenset[str]) -> None:
        pass


class _RendezvousTable(_PerKeyTable):
    __slots__ = ("hashes",)

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        ordered = sorted(names)
        self.hashes = [(xxhash.xxh64_intdigest(n.encode("utf-8")), n) for n in ordered]

    def _scores(self, key: int) -> list[tuple[int, str]]:
        mix = _xorshift_mult64
        return [(mix(key ^ h), name) for h, name in self.hashes]

    def lookup(self, key: int, n: int, by_name: dict[str, Peer]) -> list[Peer]:
        scores = self._scores(key)
        if n == 1:
            return [by_name[min(scores)[1]]]
        # Lowest (score, name) first; names are unique so ties are impossible.
        scores.sort()
        return [by_name[name] for _, name in scores[:n]]


# --- multiprobe -------------------------------------------------------------

_PROBES = 21


def _second_key(key: int) -> int:
    # ckit hashes the lowercase hex text of the key (no padding, "0" for 0).
    return xxhash.xxh64_intdigest(b"%x" % key)


class _MultiprobeTable(_PerKeyTable):
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
        best, best_dist = 0, _MASK64
        for k in range(_PROBES):
            h = (h1 + k * h2) & _MASK64
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
