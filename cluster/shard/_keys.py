"""
Keys, operations and the lookup error shared by every sharder.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import xxhash

Key: TypeAlias = int
"""
A shard key: an unsigned 64-bit integer (ckit's C{shard.Key}).
"""

MAX_KEY = (1 << 64) - 1
"""
The largest valid C{Key}.
"""


def string_key(s: str) -> Key:
    """
    The key of a string: XXH64 (seed 0) of its UTF-8 bytes.
    """
    return xxhash.xxh64_intdigest(s.encode("utf-8"))


class KeyBuilder:
    """
    Builds a C{Key} from bytes written in several pieces.

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
