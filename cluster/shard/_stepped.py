"""
The stepped machinery: hash tables built in steps of bounded work.

A sharder keeps immutable L{Table}s and asks its L{Builder} for new ones.
A build is a generator: it yields between steps of about L{STEP_TOKENS}
tokens of work (about ten milliseconds) and returns the table, so a caller
can run it to its end (L{run_steps}) or one step per reactor turn (as
L{cluster.ckit.node.Node} does with C{twisted.internet.task.cooperate}).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

import attrs

from cluster.peer import Peer

if TYPE_CHECKING:
    import numpy

STEP_TOKENS = 32_768
"""
Tokens handled per step of a stepped build: about ten milliseconds of
CPython on a 2-core machine (C{bench/join_block.py} measures the longest
block).  Read at each build, so a test may patch it.
"""

_T = TypeVar("_T")


class Table(Protocol):
    """
    An immutable consistent hash over a fixed set of node names.

    @ivar names: the nodes hashed.
    @ivar answers_arrays: whether L{lookup_array} answers batches given as
        numpy C{uint64} arrays (the C{fast} extra); a table without it
        answers every batch through L{lookup_many}.
    """

    answers_arrays: ClassVar[bool]

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

    def lookup_array(
        self, keys: numpy.ndarray, n: int, by_name: dict[str, Peer]
    ) -> list[list[Peer]]:
        """
        L{lookup_many} for keys in a C{uint64} array; only called when
        L{answers_arrays}.
        """


class Builder(Protocol):
    """
    Makes the tables of one algorithm.
    """

    def build_steps(
        self, names: frozenset[str], bases: Sequence[Table]
    ) -> Generator[None, None, Table]:
        """
        A table for C{names}, built in steps of bounded work (it yields
        between steps and returns the table); C{bases} may be reused or
        patched.
        """

    def retain(self, names: frozenset[str]) -> None:
        """
        Drop per-node caches for every node not in C{names}.
        """


def run_steps(steps: Generator[None, None, _T]) -> _T:
    """
    Run a stepped computation to its end; its result.
    """
    while True:
        try:
            next(steps)
        except StopIteration as done:
            # A generator's return value rides on StopIteration, which
            # typeshed cannot type: the generator's own annotation does.
            result: _T = done.value
            return result


@attrs.frozen
class RebuildingBuilder:
    """
    Builds a table from scratch for each new set of names (reusing one of
    C{bases} for the same set), in a single step: for sharders with one
    token per node, where there is nothing worth caching between builds.
    """

    table: Callable[[frozenset[str]], Table]

    def build_steps(
        self, names: frozenset[str], bases: Sequence[Table]
    ) -> Generator[None, None, Table]:
        # One step: these tables are a hash or a sort of one token per node.
        for base in bases:
            if base.names == names:
                return base
        return self.table(names)
        yield  # a generator, with nothing to wait for

    def retain(self, names: frozenset[str]) -> None:
        pass
