"""
The ring sharder's costs: building rings and looking keys up, against a
bare Python C{bisect} loop over the same number of tokens.

    python bench/lookup.py [--keys 1000000] [--json PATH]

For 10, 100 and 1,000 participants with C{ring(512)} (Alloy's ring):

  - full build: the first C{set_peers} (every token hashed and sorted),
    and the longest step of the same build run in steps, as a L{Node}
    runs it (the longest the reactor is held);
  - join: C{set_peers} after one more node joins (median of several
    joins; each node's tokens are cached, so a join splices);
  - first batch: a batch of 16 keys right after a change, which makes the
    ring's numpy arrays (the batch rates below are measured after it);
  - batch: C{lookup_many(keys, n, Op.READ_WRITE)} for n=1 and n=3, with
    numpy when it is installed (the C{fast} extra) and with the
    pure-Python fallback;
  - single: one C{lookup(key, 1, op)} call per key;
  - every rate is the best of three runs;
  - the yardstick, in the same run: C{[owners[bisect_left(tokens, key)]
    for key in keys]} over a sorted list of as many random tokens.

Targets (the README's performance section): batch n=1 at least 3x the
bisect loop at 100 and 1,000 nodes, single at least 0.6x, no build step
over 100 ms.  A missed target is printed, not a failure.
"""

from __future__ import annotations

import math
import os
import random
import re
import statistics
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence, Sized

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _harness as harness
from cluster.peer import Peer, PeerState
from cluster.shard import ISteppedSharder, Op, Sharder, ring
from cluster.shard import _vectors as shard_vectors

NODE_COUNTS = (10, 100, 1000)
NUM_TOKENS = 512
_P = PeerState.PARTICIPANT

BATCH_TARGET = 3.0  # batch n=1 over the bisect loop, at 100 and 1,000 nodes
SINGLE_TARGET = 0.6
STEP_TARGET_MS = 100.0


def _peers(count: int, prefix: str = "node") -> list[Peer]:
    return [
        Peer(f"{prefix}-{i}", f"10.0.{i // 256}.{i % 256}:12345", False, _P)
        for i in range(count)
    ]


def _longest_step(peers: list[Peer]) -> float:
    """
    Seconds of the longest step of a full build run in steps.
    """
    sharder = ring(NUM_TOKENS)
    assert ISteppedSharder.providedBy(sharder)
    steps: Iterator[None] = iter(sharder.set_peers_in_steps(peers))
    longest = 0.0
    while True:
        start = time.perf_counter()
        try:
            next(steps)
        except StopIteration:
            return max(longest, time.perf_counter() - start)
        longest = max(longest, time.perf_counter() - start)


def _time_join(sharder: Sharder, base: list[Peer], repeats: int) -> float:
    """
    Median seconds for set_peers after one fresh node joins C{base}.
    """
    samples = []
    for r in range(repeats):
        newcomer = Peer(f"joiner-{r}", "10.255.0.1:12345", False, _P)
        start = time.perf_counter()
        sharder.set_peers([*base, newcomer])
        samples.append(time.perf_counter() - start)
        sharder.set_peers(base)  # leave again (untimed) so every join is fresh
    return statistics.median(samples)


# Each rate is the best of this many runs (as timeit): the yardstick's own
# rate moved by a third between runs on this machine.
REPEATS = 3


def _best_rate(count: int, run: Callable[[], Sized]) -> float:
    """
    C{count} divided by the shortest of L{REPEATS} timings of C{run}, which
    returns its answers (as many as C{count}; freed after the timing).
    """
    best = math.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        answers = run()
        best = min(best, time.perf_counter() - start)
        assert len(answers) == count
        del answers
    return count / best


def _batch_rate(sharder: Sharder, keys: list[int], n: int) -> float:
    return _best_rate(len(keys), lambda: sharder.lookup_many(keys, n, Op.READ_WRITE))


def _fallback_rate(sharder: Sharder, keys: list[int], n: int) -> float:
    vectorised = shard_vectors.enabled
    shard_vectors.enabled = False
    try:
        return _batch_rate(sharder, keys, n)
    finally:
        shard_vectors.enabled = vectorised


def _single_rate(sharder: Sharder, keys: list[int]) -> float:
    lookup = sharder.lookup

    def run() -> list[None]:
        for key in keys:
            lookup(key, 1, Op.READ_WRITE)
        return [None] * len(keys)

    return _best_rate(len(keys), run)


def _bisect_rate(count: int, keys: list[int], rng: random.Random) -> float:
    """
    The yardstick: a plain loop finding each key's owner by bisection.
    """
    tokens = sorted(rng.getrandbits(64) for _ in range(count * NUM_TOKENS))
    owners = [f"node-{i % count}" for i in range(len(tokens) + 1)]
    return _best_rate(
        len(keys), lambda: [owners[bisect_left(tokens, key)] for key in keys]
    )


def measure(
    count: int, keys: list[int], single_keys: list[int], joins: int
) -> dict[str, float]:
    rng = random.Random(count)
    base = _peers(count)
    sharder = ring(NUM_TOKENS)
    start = time.perf_counter()
    sharder.set_peers(base)
    full = time.perf_counter() - start
    join = _time_join(sharder, base, joins)
    # The first batch after a change makes the ring's numpy arrays.
    start = time.perf_counter()
    sharder.lookup_many(keys[:16], 1, Op.READ_WRITE)
    arrays = time.perf_counter() - start
    row = {
        "nodes": count,
        "full_build_ms": full * 1e3,
        "longest_step_ms": _longest_step(base) * 1e3,
        "join_ms": join * 1e3,
        "first_batch_ms": arrays * 1e3,
        "batch_n1_per_s": _batch_rate(sharder, keys, 1),
        "batch_n3_per_s": _batch_rate(sharder, keys, 3),
        "fallback_n1_per_s": _fallback_rate(sharder, keys, 1),
        "single_per_s": _single_rate(sharder, single_keys),
        "bisect_loop_per_s": _bisect_rate(count, keys, rng),
    }
    row["batch_over_bisect"] = row["batch_n1_per_s"] / row["bisect_loop_per_s"]
    row["single_over_bisect"] = row["single_per_s"] / row["bisect_loop_per_s"]
    return row


def misses(rows: list[dict[str, float]]) -> list[str]:
    missed = []
    for row in rows:
        nodes = int(row["nodes"])
        for name, target in (("batch", BATCH_TARGET), ("single", SINGLE_TARGET)):
            ratio = row[f"{name}_over_bisect"]
            if nodes >= 100 and ratio < target:
                missed.append(
                    f"{nodes} nodes: {name} {ratio:.2f}x the bisect loop "
                    f"(target {target}x)"
                )
        if row["longest_step_ms"] > STEP_TARGET_MS:
            missed.append(
                f"{nodes} nodes: a build step of {row['longest_step_ms']:.0f} ms "
                f"(target {STEP_TARGET_MS:.0f} ms)"
            )
    return missed


# Two tables, the costs and the rates, by the keys of their columns.
TABLES = (
    ("nodes", "full_build_ms", "longest_step_ms", "join_ms", "first_batch_ms"),
    (
        "nodes",
        "batch_n1_per_s",
        "batch_n3_per_s",
        "fallback_n1_per_s",
        "single_per_s",
        "bisect_loop_per_s",
        "batch_over_bisect",
        "single_over_bisect",
    ),
)

# How a key's unit is titled and formatted: (suffix or infix, words, format).
UNITS = (("_ms", " ms", ".1f"), ("_per_s", "/s", ",.0f"), ("_over_", "/", ".2f"))


def column(key: str) -> tuple[str, str]:
    """
    The title and format of the column of C{key}: its words (C{n1} as
    C{n=1}) with its unit, formatted as the unit calls for (a count as a
    whole number).
    """
    title, spec = key, "d"
    for part, words, unit_spec in UNITS:
        if part in key:
            title, spec = key.replace(part, words), unit_spec
    title = re.sub(r"_n(\d)", r" n=\1", title).replace("_", " ")
    return title, spec


def table_lines(rows: list[dict[str, float]], keys: Sequence[str]) -> list[str]:
    """
    C{rows} as a table: one column per key (see L{column}).
    """
    columns = [(key, *column(key)) for key in keys]
    cells = [
        [
            format(int(row[key]) if spec == "d" else row[key], spec)
            for key, _, spec in columns
        ]
        for row in rows
    ]
    titles = [title for _, title, _ in columns]
    return harness.Table.fitting(titles, cells, narrowest=11).lines(cells, rule=True)


def main(argv: Sequence[str] | None = None) -> None:
    options = harness.parser(__file__, __doc__)
    options.add_argument("--keys", type=harness.at_least(1), default=1_000_000)
    options.add_argument("--single-keys", type=harness.at_least(1), default=200_000)
    options.add_argument("--joins", type=harness.at_least(1), default=5)
    args = options.parse_args(argv)

    rng = random.Random(42)
    keys = [rng.getrandbits(64) for _ in range(args.keys)]
    single_keys = keys[: args.single_keys]
    rows = [measure(count, keys, single_keys, args.joins) for count in NODE_COUNTS]

    numpy = "numpy" if shard_vectors.enabled else "no numpy: batch = fallback"
    print(f"ring({NUM_TOKENS}), {len(keys):,} random keys, Op.READ_WRITE ({numpy})")
    print("\n\n".join("\n".join(table_lines(rows, columns)) for columns in TABLES))
    for line in misses(rows):
        print(f"missed: {line}")
    harness.write_json(args.json, {"vectorised": shard_vectors.enabled, "rows": rows})


if __name__ == "__main__":
    main()
