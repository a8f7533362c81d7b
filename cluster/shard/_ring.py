"""
The ring sharder (ckit's C{ring.go}): tokens per node on a hash ring,
patched in place when few nodes change and built in steps otherwise.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Generator, Sequence
from itertools import repeat
from operator import and_, lshift, or_, rshift
from typing import TYPE_CHECKING, ClassVar

import xxhash

from cluster.peer import Peer
from cluster.shard import _stepped, _vectors
from cluster.shard._interfaces import ISteppedSharder
from cluster.shard._sharder import HashSharder
from cluster.shard._stepped import Table

if TYPE_CHECKING:
    import numpy


def ring(num_tokens: int = 512) -> ISteppedSharder:
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
    return HashSharder(RingBuilder(num_tokens))


# One-byte suffixes, allocated once: token generation appends one per token.
_TOKEN_SUFFIX = [bytes((i,)) for i in range(256)]


def ring_tokens(name: str, num_tokens: int) -> list[int]:
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


class RingTable:
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

    answers_arrays: ClassVar[bool] = True

    def __init__(self, names: frozenset[str], tokens: list[int], owners: list[str]):
        self.names = names
        self.tokens = tokens
        self.owners = owners
        self._vectors: _vectors.RingVectors | None = None

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
        self, keys: numpy.ndarray, n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        """
        L{lookup_many} for keys in a C{uint64} array (numpy installed).
        """
        vectors = self._vectors
        if vectors is None:
            vectors = self._vectors = _vectors.RingVectors.of(
                self.names, self.tokens, self.owners
            )
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


class RingBuilder:
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
            tokens = self._cache[name] = ring_tokens(name, self._num_tokens)
        return tokens

    def retain(self, names: frozenset[str]) -> None:
        # Bounded memory under churn: only current nodes stay cached; a node
        # that comes back costs one cheap recomputation.
        for name in [name for name in self._cache if name not in names]:
            del self._cache[name]

    def build_steps(
        self, names: frozenset[str], bases: Sequence[Table]
    ) -> Generator[None, None, Table]:
        best: RingTable | None = None
        best_changes = 0
        for base in bases:
            assert isinstance(base, RingTable)
            if base.names == names:
                return base
            changes = len(base.names ^ names)
            if best is None or changes < best_changes:
                best, best_changes = base, changes
        if (
            best is None
            or best_changes > len(names) // self._PATCH_FRACTION
            or best_changes * self._num_tokens > _stepped.STEP_TOKENS
        ):
            return (yield from self._build_full(names))
        return self._patch(best, names)

    def _build_full(self, names: frozenset[str]) -> Generator[None, None, RingTable]:
        """
        Sort every token of C{names}, about C{STEP_TOKENS} at a time.

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
            return RingTable(names, [], [])
        step_tokens = _stepped.STEP_TOKENS
        bits = len(ordered).bit_length()
        # About 4,096 tokens per bucket; hash outputs spread evenly, and an
        # uneven spread would only make some steps longer, never wrong.
        bucket_bits = (len(ordered) * self._num_tokens // 4096).bit_length()
        bucket_shift = 64 - bucket_bits + bits
        bounds = [(b + 1) << bucket_shift for b in range(1 << bucket_bits)]
        buckets: list[list[int]] = [[] for _ in bounds]
        per_step = max(1, step_tokens // self._num_tokens)
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
            if work >= step_tokens:
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
            if work >= step_tokens:
                work = 0
                yield
        owners.append(owners[0])
        return RingTable(names, tokens, owners)

    def _patch(self, base: RingTable, names: frozenset[str]) -> RingTable:
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
        return RingTable(names, tokens, owners)
