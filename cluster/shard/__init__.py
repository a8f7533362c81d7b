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

Every sharder made here provides L{ISteppedSharder}: a large update can run
in steps of bounded work.  The modules behind this package, one concern
each: C{_keys} (keys and ops), C{_interfaces}, C{_sharder} (the two hashes
and the lookup checks), C{_stepped} (tables built in steps), C{_ring},
C{_rendezvous}, C{_multiprobe}, and C{_vectors} (numpy batches on the
ring).  Import from C{cluster.shard}.
"""

from cluster.shard._interfaces import ISharder, ISteppedSharder, Sharder, SteppedSharder
from cluster.shard._keys import (
    MAX_KEY,
    Key,
    KeyBuilder,
    NotEnoughPeersError,
    Op,
    string_key,
)
from cluster.shard._multiprobe import multiprobe
from cluster.shard._rendezvous import rendezvous
from cluster.shard._ring import ring

__all__ = [
    "MAX_KEY",
    "ISharder",
    "ISteppedSharder",
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
