"""Benchmark the ring sharder: rebuild time after a join and lookup throughput.

Run from the repository root (``python bench/lookup.py``). For 10, 100 and
1,000 participants with ``ring(512)`` it prints one table:

* full build: the first ``set_peers`` (every token hashed and sorted);
* join: ``set_peers`` after one new node joins (median of several joins);
* lookups/s through the batch API ``lookup_many(keys, n, Op.READ_WRITE)`` for
  n=1 and n=3 over 1,000,000 random keys, and through single ``lookup`` calls
  for n=1 (measured on a subset of the keys).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cluster.peer import Peer, PeerState
from cluster.shard import Op, Sharder, ring

NODE_COUNTS = (10, 100, 1000)
NUM_TOKENS = 512
_P = PeerState.PARTICIPANT


def _peers(count: int, prefix: str = "node") -> list[Peer]:
    return [
        Peer(f"{prefix}-{i}", f"10.0.{i // 256}.{i % 256}:12345", False, _P)
        for i in range(count)
    ]


def _time_join(sharder: Sharder, base: list[Peer], repeats: int) -> float:
    """Median seconds for set_peers after one fresh node joins ``base``."""
    samples = []
    for r in range(repeats):
        newcomer = Peer(f"joiner-{r}", "10.255.0.1:12345", False, _P)
        start = time.perf_counter()
        sharder.set_peers([*base, newcomer])
        samples.append(time.perf_counter() - start)
        sharder.set_peers(base)  # leave again (untimed) so every join is fresh
    return statistics.median(samples)


def _rate(sharder: Sharder, keys: list[int], n: int) -> float:
    """Lookups per second through lookup_many."""
    start = time.perf_counter()
    result = sharder.lookup_many(keys, n, Op.READ_WRITE)
    elapsed = time.perf_counter() - start
    assert len(result) == len(keys)
    return len(keys) / elapsed


def _single_rate(sharder: Sharder, keys: list[int]) -> float:
    """n=1 lookups per second through one lookup() call per key."""
    lookup = sharder.lookup
    start = time.perf_counter()
    for key in keys:
        lookup(key, 1, Op.READ_WRITE)
    return len(keys) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description="Benchmark ring(512) lookups.")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--single-keys", type=int, default=200_000)
    parser.add_argument("--joins", type=int, default=5)
    args = parser.parse_args(argv)

    rng = random.Random(42)
    keys = [rng.getrandbits(64) for _ in range(args.keys)]
    single_keys = keys[: args.single_keys]

    header = (
        f"{'nodes':>6} | {'full build ms':>13} | {'join ms':>8} | "
        f"{'n=1 batch/s':>12} | {'n=3 batch/s':>12} | {'n=1 single/s':>12}"
    )
    print(f"ring({NUM_TOKENS}), {len(keys):,} random keys, Op.READ_WRITE")
    print("batch = lookup_many(keys, n, op); single = lookup(key, 1, op) per key")
    print(header)
    print("-" * len(header))
    for count in NODE_COUNTS:
        base = _peers(count)
        sharder = ring(NUM_TOKENS)
        start = time.perf_counter()
        sharder.set_peers(base)
        full = time.perf_counter() - start
        join = _time_join(sharder, base, args.joins)
        n1 = _rate(sharder, keys, 1)
        n3 = _rate(sharder, keys, 3)
        single = _single_rate(sharder, single_keys)
        print(
            f"{count:>6} | {full * 1e3:>13.1f} | {join * 1e3:>8.1f} | "
            f"{n1:>12,.0f} | {n3:>12,.0f} | {single:>12,.0f}"
        )


if __name__ == "__main__":
    main()
