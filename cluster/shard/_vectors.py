"""
Vectorised batch lookups on the ring with numpy (the C{fast} extra).

numpy is imported at the first large batch, not with this module: it costs
every node about 14 MiB of memory, and most nodes never ask a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.util import find_spec
from types import ModuleType
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import numpy

enabled = find_spec("numpy") is not None
"""
Whether large batches on a ring take the numpy path: numpy is installed.
Read at each batch, so tests and C{bench/lookup.py} may turn it off to
measure the pure-Python path, which gives the same answers.
"""

VECTOR_BATCH = 16
"""
Below this many keys a batch is cheaper without numpy's fixed costs.
"""

# The slot table of a ring has about this many slots per token, at most
# 2**MAX_SLOT_BITS (4 MiB of int32).
SLOTS_PER_TOKEN = 8
MAX_SLOT_BITS = 20


def load_numpy() -> ModuleType:
    """
    numpy, imported at its first use.
    """
    import numpy

    return numpy


def uint64_array(keys: Sequence[int]) -> numpy.ndarray:
    """
    C{keys} as a numpy C{uint64} array: the conversion is the range check.

    @raise ValueError: when any key is outside C{0..MAX_KEY} or no int.
    """
    np = load_numpy()
    try:
        array: numpy.ndarray = np.fromiter(keys, dtype=np.uint64, count=len(keys))
    except (OverflowError, TypeError, ValueError):
        raise ValueError("keys must be uint64 values (0..MAX_KEY)") from None
    return array


@attrs.frozen
class RingVectors:
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

    tokens: numpy.ndarray
    ranks: numpy.ndarray
    names: list[str]
    slots: numpy.ndarray
    shift: numpy.uint64

    @classmethod
    def of(
        cls, names: frozenset[str], tokens: list[int], owners: list[str]
    ) -> RingVectors:
        """
        The vectors of a ring over C{names} whose sorted C{tokens} are held
        by C{owners} (one more entry than C{tokens}: the wrap-around).
        """
        np = load_numpy()
        ordered = sorted(names)
        rank = {name: i for i, name in enumerate(ordered)}
        token_array = np.array(tokens, dtype=np.uint64)
        bits = min(MAX_SLOT_BITS, (len(token_array) * SLOTS_PER_TOKEN).bit_length())
        shift = np.uint64(64 - bits)
        first_keys = np.arange(1 << bits, dtype=np.uint64) << shift
        last_keys = first_keys | ((np.uint64(1) << shift) - np.uint64(1))
        first = np.searchsorted(token_array, first_keys, side="left")
        last = np.searchsorted(token_array, last_keys, side="left")
        return cls(
            token_array,
            np.fromiter(
                map(rank.__getitem__, owners), dtype=np.int32, count=len(owners)
            ),
            ordered,
            np.where(first == last, first, -1).astype(np.int32),
            shift,
        )

    def positions(self, keys: numpy.ndarray) -> numpy.ndarray:
        """
        C{bisect_left(tokens, key)} for each of C{keys}.
        """
        np = load_numpy()
        found: numpy.ndarray = self.slots[keys >> self.shift]
        unsure = np.flatnonzero(found < 0)
        if len(unsure):
            found[unsure] = np.searchsorted(self.tokens, keys[unsure], side="left")
        return found
