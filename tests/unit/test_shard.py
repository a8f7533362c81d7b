"""Tests for cluster.shard, cluster.peer and cluster.ckit.lamport.

The conformance tests replay ``ckit-shard-vectors.json``: outputs of ckit's own
Go code (string keys, key builders and lookups for every sharder and op).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cluster import shard
from cluster.ckit.lamport import MAX_TIME, LamportClock
from cluster.peer import Peer, PeerState, StateTransitionError, check_transition
from cluster.shard import (
    MAX_KEY,
    ISharder,
    ISteppedSharder,
    KeyBuilder,
    NotEnoughPeersError,
    Op,
    _ring,
    _sharder,
    _stepped,
    string_key,
)
from cluster.shard import _vectors as numpy_batches

# Facts generated from ckit's own code, kept in the repository: a missing
# file is a failure, never a skip.
VECTORS = os.path.join(
    os.path.dirname(__file__), "..", "data", "ckit-shard-vectors.json"
)

_SHARDERS: dict[str, Callable[[], ISteppedSharder]] = {
    "ring512": lambda: shard.ring(512),
    "ring256": lambda: shard.ring(256),
    "rendezvous": shard.rendezvous,
    "multiprobe": shard.multiprobe,
}

_OPS = {"Read": Op.READ, "ReadWrite": Op.READ_WRITE}

P = PeerState.PARTICIPANT
T = PeerState.TERMINATING
V = PeerState.VIEWER


@functools.cache
def _vectors() -> dict[str, Any]:
    with open(VECTORS, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@functools.cache
def _random_keys(count: int) -> list[int]:
    # Seeded so that the distribution assertions are deterministic.
    rng = random.Random(20240601)
    return [rng.getrandbits(64) for _ in range(count)]


def _peers(names: Iterable[str], state: PeerState = P) -> list[Peer]:
    return [
        Peer(name, f"10.0.0.1:{7946 + i}", False, state) for i, name in enumerate(names)
    ]


def _names(peers: Iterable[Peer]) -> list[str]:
    return [p.name for p in peers]


class ConformanceTests(SynchronousTestCase):
    """Every entry of ckit's vectors is reproduced exactly."""

    def test_string_keys(self) -> None:
        entries = _vectors()["string_keys"]
        self.assertTrue(entries)
        for entry in entries:
            self.assertEqual(string_key(entry["s"]), int(entry["key"]), entry["s"])

    def test_key_builder(self) -> None:
        entries = _vectors()["key_builder"]
        self.assertTrue(entries)
        kb = KeyBuilder()
        for entry in entries:
            kb.reset()
            for chunk in entry["writes_hex"]:
                data = bytes.fromhex(chunk)
                self.assertEqual(kb.write(data), len(data))
            self.assertEqual(kb.key(), int(entry["key"]), entry["writes_hex"])

    def _check_sharder(self, sharder_name: str) -> None:
        cases = [c for c in _vectors()["lookups"] if c["sharder"] == sharder_name]
        self.assertTrue(cases, f"no vectors for {sharder_name}")
        failures: list[str] = []
        checked = 0
        for case in cases:
            sharder = _SHARDERS[sharder_name]()
            sharder.set_peers(
                Peer(p["name"], p["addr"], False, PeerState.parse(p["state"]))
                for p in case["peers"]
            )
            for entry in case["lookups"]:
                checked += 1
                key, n, op = int(entry["hash"]), entry["n"], _OPS[entry["op"]]
                # An empty "key" marks a raw random hash in the vectors.
                if entry["key"]:
                    self.assertEqual(string_key(entry["key"]), key)
                expected = entry.get("owners", entry.get("error"))
                try:
                    got: object = _names(sharder.lookup(key, n, op))
                    batch: object = _names(sharder.lookup_many([key], n, op)[0])
                except NotEnoughPeersError as e:
                    got = str(e)
                    try:
                        sharder.lookup_many([key], n, op)
                    except NotEnoughPeersError as e2:
                        batch = str(e2)
                if got != expected or batch != expected:
                    failures.append(
                        f"{len(case['peers'])} peers {entry}: "
                        f"got {got!r}, batch {batch!r}"
                    )
        self.assertEqual(failures[:5], [], f"{len(failures)} of {checked} differ")
        self.assertEqual(checked, len(cases) * len(cases[0]["lookups"]))

    def test_ring512(self) -> None:
        self._check_sharder("ring512")

    def test_ring256(self) -> None:
        self._check_sharder("ring256")

    def test_rendezvous(self) -> None:
        self._check_sharder("rendezvous")

    def test_multiprobe(self) -> None:
        self._check_sharder("multiprobe")

    def test_vectors_live_in_the_repository(self) -> None:
        """
        The vectors are read from C{tests/data}, so a clean clone runs every
        conformance test: 2,880 lookups over the four sharders.
        """
        self.assertTrue(os.path.isfile(VECTORS), VECTORS)
        lookups = sum(len(case["lookups"]) for case in _vectors()["lookups"])
        self.assertEqual(lookups, 2880)

    def test_all_sharders_covered(self) -> None:
        seen = {c["sharder"] for c in _vectors()["lookups"]}
        self.assertEqual(seen, set(_SHARDERS))


def _batch_paths(test: SynchronousTestCase) -> Iterator[str]:
    """
    Run the body once per batch path: numpy's (when installed, as with the
    test extras) and the pure-Python fallback.
    """
    if numpy_batches.enabled:
        yield "numpy"
    test.patch(numpy_batches, "enabled", False)
    yield "pure Python"


class BatchPathTests(SynchronousTestCase):
    """
    Every shortcut of C{lookup_many} answers exactly as C{lookup}: ckit's
    vectors asked in batches, and random peer sets with keys on and next to
    the ring's tokens.
    """

    def test_numpy_is_installed_with_the_test_extras(self) -> None:
        self.assertTrue(numpy_batches.enabled)

    def test_numpy_is_imported_only_by_a_batch(self) -> None:
        # It costs every process about 14 MiB; most nodes never ask a batch.
        script = (
            "import sys, cluster, cluster.daemon.tap\n"
            "assert 'numpy' not in sys.modules\n"
            "from cluster.shard import Op, ring\n"
            "from cluster.peer import Peer, PeerState\n"
            "s = ring(8)\n"
            "s.set_peers([Peer('a', 'x:1', False, PeerState.PARTICIPANT)])\n"
            "s.lookup_many(list(range(100)), 1, Op.READ)\n"
            "assert 'numpy' in sys.modules\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=False
        )
        self.assertEqual(done.returncode, 0, done.stderr)

    def test_conformance_vectors_in_batches(self) -> None:
        for path in _batch_paths(self):
            checked = 0
            for case in _vectors()["lookups"]:
                sharder = _SHARDERS[case["sharder"]]()
                sharder.set_peers(
                    Peer(p["name"], p["addr"], False, PeerState.parse(p["state"]))
                    for p in case["peers"]
                )
                groups: dict[tuple[int, Op], list[tuple[int, list[str]]]] = {}
                for entry in case["lookups"]:
                    if "owners" in entry:
                        key = (entry["n"], _OPS[entry["op"]])
                        groups.setdefault(key, []).append(
                            (int(entry["hash"]), entry["owners"])
                        )
                for (n, op), entries in groups.items():
                    # Repeated past the vector threshold, whatever the group.
                    repeats = 1 + 2 * numpy_batches.VECTOR_BATCH // len(entries)
                    entries = entries * repeats
                    got = sharder.lookup_many([k for k, _ in entries], n, op)
                    self.assertEqual(
                        [_names(r) for r in got],
                        [owners for _, owners in entries],
                        f"{path}: {case['sharder']} n={n} {op}",
                    )
                    checked += len(entries)
            self.assertGreater(checked, 2000, path)

    def test_random_peer_sets(self) -> None:
        rng = random.Random(7)
        states = [P, P, P, T, V]
        for path in _batch_paths(self):
            for trial in range(40):
                count = rng.randint(1, 40)
                peers = [
                    Peer(f"p{trial}-{i}", f"10.0.0.1:{i}", False, rng.choice(states))
                    for i in range(count)
                ]
                sharder = shard.ring(rng.choice([1, 8, 512]))
                sharder.set_peers(peers)
                tokens = [t for p in peers[:3] for t in _ring.ring_tokens(p.name, 8)]
                keys = [0, MAX_KEY, *_random_keys(200)]
                keys += [k for t in tokens for k in (t - 1, t, t + 1) if 0 <= k]
                keys = [k for k in keys if k <= MAX_KEY]
                for op in Op:
                    eligible = len(sharder.lookup_many([], 0, op)) or sum(
                        p.state in ((P,) if op is Op.READ_WRITE else (P, T))
                        for p in peers
                    )
                    for n in range(1, min(eligible, 4) + 1):
                        self.assertEqual(
                            sharder.lookup_many(keys, n, op),
                            [sharder.lookup(k, n, op) for k in keys],
                            f"{path}: trial {trial}, {op}, n={n}",
                        )

    def test_tokens_on_slot_boundaries(self) -> None:
        """
        The numpy path answers most keys from a table of equal slots of the
        key space; tokens placed on, just before and just after slot
        boundaries, and keys all around them, still answer as C{lookup}.
        """
        bits = (8 * numpy_batches.SLOTS_PER_TOKEN).bit_length()  # 8 tokens: 128 slots
        width = 1 << (64 - bits)
        layout = {
            "a": [5 * width, 9 * width - 1],
            "b": [9 * width, 20 * width + 1],
            "c": [20 * width, 63 * width],
            "d": [63 * width + 7, 1],
        }
        self.patch(_ring, "ring_tokens", lambda name, num_tokens: layout[name])
        sharder = shard.ring(2)
        sharder.set_peers(_peers(sorted(layout)))
        every = [t for tokens in layout.values() for t in tokens]
        edges = [s * width for s in (0, 1, 5, 6, 9, 10, 20, 21, 63)]
        keys = [k for t in every + edges for k in (t - 1, t, t + 1)]
        keys = [k for k in keys if 0 <= k <= MAX_KEY] + [MAX_KEY]
        for path in _batch_paths(self):
            for n in (1, 2, 4):
                self.assertEqual(
                    sharder.lookup_many(keys, n, Op.READ),
                    [sharder.lookup(k, n, Op.READ) for k in keys],
                    f"{path}, n={n}",
                )
        table = sharder._state.tables[Op.READ]  # type: ignore[attr-defined]
        self.assertEqual(len(table._vectors.slots), 1 << bits)

    def test_bad_keys_in_a_large_batch(self) -> None:
        sharder = shard.ring(8)
        sharder.set_peers(_peers(["a", "b"]))
        for path in _batch_paths(self):
            for bad in (-1, MAX_KEY + 1):
                keys = [*_random_keys(40), bad]
                with self.assertRaises(ValueError, msg=path):
                    sharder.lookup_many(keys, 1, Op.READ)

    def test_the_collector_is_restored(self) -> None:
        sharder = shard.ring(8)
        sharder.set_peers(_peers(["a", "b"]))
        keys = _random_keys(100)
        self.addCleanup(gc.enable)
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            sharder.lookup_many(keys, 1, Op.READ)
            self.assertEqual(gc.isenabled(), enabled)
            self.assertRaises(
                NotEnoughPeersError, sharder.lookup_many, keys, 3, Op.READ
            )
            self.assertEqual(gc.isenabled(), enabled)


class KeyTests(SynchronousTestCase):
    def test_string_key_is_xxh64_of_utf8(self) -> None:
        self.assertEqual(string_key(""), 0xEF46DB3751D8E999)
        kb = KeyBuilder()
        kb.write("héllo ".encode())
        kb.write(bytearray(b"w"))
        kb.write(memoryview("örld".encode()))
        self.assertEqual(kb.key(), string_key("héllo wörld"))
        # key() does not consume the state; reset() starts over.
        self.assertEqual(kb.key(), string_key("héllo wörld"))
        kb.reset()
        self.assertEqual(kb.key(), string_key(""))


def _all_sharders() -> dict[str, ISteppedSharder]:
    return {name: make() for name, make in _SHARDERS.items()}


class LookupSemanticsTests(SynchronousTestCase):
    def test_interface(self) -> None:
        for sharder in _all_sharders().values():
            self.assertTrue(verifyObject(ISharder, sharder))

    def test_former_names(self) -> None:
        """
        Every name C{cluster.shard} exported before it became a package
        still imports from it; the former protocol names are the interfaces.
        """
        former = [
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
        self.assertEqual(sorted(set(former) - set(shard.__all__)), [])
        for name in former:
            self.assertTrue(hasattr(shard, name), name)
        self.assertIs(shard.Sharder, ISharder)
        self.assertIs(shard.SteppedSharder, ISteppedSharder)
        self.assertTrue(ISteppedSharder.extends(ISharder))

    def test_op_str(self) -> None:
        self.assertEqual(str(Op.READ), "Read")
        self.assertEqual(str(Op.READ_WRITE), "ReadWrite")

    def test_zero_owners(self) -> None:
        for name, sharder in _all_sharders().items():
            # Even with no peers at all, n == 0 is an empty answer, not an error.
            for op in Op:
                self.assertEqual(sharder.lookup(1, 0, op), [], name)
                self.assertEqual(sharder.lookup_many([1, 2], 0, op), [[], []])
            sharder.set_peers(_peers(["a", "b"]))
            self.assertEqual(sharder.lookup(MAX_KEY, 0, Op.READ), [], name)

    def test_not_enough_peers(self) -> None:
        peers = [*_peers(["a", "b"]), *_peers(["c"], T), *_peers(["d", "e"], V)]
        for name, sharder in _all_sharders().items():
            sharder.set_peers(peers)
            # "have" counts the peers eligible for the op, not all peers.
            e = self.assertRaises(NotEnoughPeersError, sharder.lookup, 7, 4, Op.READ)
            self.assertEqual(str(e), "not enough nodes: need at least 4, have 3")
            self.assertEqual((e.need, e.have), (4, 3))
            e = self.assertRaises(
                NotEnoughPeersError, sharder.lookup_many, [], 3, Op.READ_WRITE
            )
            self.assertEqual(str(e), "not enough nodes: need at least 3, have 2")
            self.assertEqual(len(sharder.lookup(7, 3, Op.READ)), 3, name)
            empty = _SHARDERS[name]()
            e = self.assertRaises(NotEnoughPeersError, empty.lookup, 7, 1, Op.READ)
            self.assertEqual(str(e), "not enough nodes: need at least 1, have 0")

    def test_invalid_arguments(self) -> None:
        for sharder in _all_sharders().values():
            sharder.set_peers(_peers(["a", "b"]))
            self.assertRaises(ValueError, sharder.lookup, 1, -1, Op.READ)
            self.assertRaises(ValueError, sharder.lookup, -1, 1, Op.READ)
            self.assertRaises(ValueError, sharder.lookup, MAX_KEY + 1, 1, Op.READ)
            self.assertRaises(ValueError, sharder.lookup_many, [0, -5], 1, Op.READ)
            self.assertRaises(ValueError, sharder.lookup, 1, 1, "Read")
        self.assertRaises(ValueError, shard.ring, 0)

    def test_viewers_never_own(self) -> None:
        viewers = _peers([f"viewer-{i}" for i in range(5)], V)
        owners = _peers([f"node-{i}" for i in range(4)])
        for name, sharder in _all_sharders().items():
            sharder.set_peers(viewers + owners)
            self.assertEqual(_names(sharder.peers()), _names(owners), name)
            seen: set[str] = set()
            for op in Op:
                for result in sharder.lookup_many(_random_keys(2000), 4, op):
                    seen.update(_names(result))
            self.assertEqual(seen, set(_names(owners)), name)

    def test_read_vs_read_write(self) -> None:
        participants = _peers([f"node-{i}" for i in range(6)])
        leaving = Peer("node-3", "10.0.0.9:7946", False, T)
        mixed = [p for p in participants if p.name != "node-3"] + [leaving]
        keys = _random_keys(3000)
        for name, make in _SHARDERS.items():
            sharder = make()
            sharder.set_peers(mixed)
            # READ treats the terminating peer exactly like a participant...
            as_participant = make()
            as_participant.set_peers(participants)
            read = sharder.lookup_many(keys, 2, Op.READ)
            expected = as_participant.lookup_many(keys, 2, Op.READ)
            self.assertEqual([_names(r) for r in read], [_names(r) for r in expected])
            self.assertIn(leaving, [p for r in read for p in r], name)
            # ...and it is the peer object with the terminating state.
            self.assertNotIn(participants[3], [p for r in read for p in r], name)
            # ...while READ_WRITE hashes as if the peer had already left.
            without = make()
            without.set_peers(participants[:3] + participants[4:])
            rw = sharder.lookup_many(keys, 2, Op.READ_WRITE)
            expected = without.lookup_many(keys, 2, Op.READ_WRITE)
            self.assertEqual([_names(r) for r in rw], [_names(r) for r in expected])
            self.assertNotIn("node-3", {p.name for r in rw for p in r}, name)
            self.assertEqual(sharder.peers(), sorted(mixed, key=lambda p: p.name))

    def test_lookup_many_matches_lookup(self) -> None:
        names = [f"alloy-{i}" for i in range(9)]
        keys = [0, 1, MAX_KEY, MAX_KEY - 1, *_random_keys(300)]
        for name, sharder in _all_sharders().items():
            sharder.set_peers(_peers(names[:5]) + _peers(names[5:], T))
            for op in Op:
                for n in range(1, 6):
                    batch = sharder.lookup_many(keys, n, op)
                    single = [sharder.lookup(k, n, op) for k in keys]
                    self.assertEqual(batch, single, f"{name} {op} n={n}")
                    for owners in batch:
                        self.assertEqual(len(set(_names(owners))), n)
            # Big batches take the vectorised path on the ring; same answers.
            big = _random_keys(5000)
            self.assertEqual(
                sharder.lookup_many(big, 2, Op.READ)[:50],
                [sharder.lookup(k, 2, Op.READ) for k in big[:50]],
            )

    def test_duplicate_names_last_wins(self) -> None:
        for sharder in _all_sharders().values():
            first = Peer("a", "10.0.0.1:1", False, P)
            last = Peer("a", "10.0.0.2:1", False, T)
            sharder.set_peers([first, *_peers(["b"]), last, Peer("b", "x:1", False, V)])
            self.assertEqual(
                [p.addr for p in sharder.peers()], ["10.0.0.2:1", "10.0.0.1:7946"]
            )
            # One entry per name: asking for 2 owners terminates with distinct peers.
            self.assertEqual(sorted(_names(sharder.lookup(5, 2, Op.READ))), ["a", "b"])
            self.assertRaises(NotEnoughPeersError, sharder.lookup, 5, 2, Op.READ_WRITE)

    def test_peer_updates_are_visible(self) -> None:
        for name, sharder in _all_sharders().items():
            sharder.set_peers(_peers(["a"]))
            sharder.set_peers([Peer("a", "10.9.9.9:1", True, T)])
            self.assertEqual(sharder.lookup(3, 1, Op.READ)[0].addr, "10.9.9.9:1", name)
            self.assertEqual(sharder.peers()[0].state, T)
            self.assertRaises(NotEnoughPeersError, sharder.lookup, 3, 1, Op.READ_WRITE)
            copy = sharder.peers()
            copy.clear()
            self.assertEqual(len(sharder.peers()), 1)


def _ring_internals(sharder: ISharder, op: Op) -> tuple[list[int], list[str]]:
    assert isinstance(sharder, _sharder.HashSharder)
    table = sharder._state.tables[op]
    assert isinstance(table, _ring.RingTable)
    return table.tokens, table.owners


class RingBuildTests(SynchronousTestCase):
    """The incremental ring rebuild gives exactly what a full build gives."""

    def _assert_same_as_fresh(self, sharder: ISharder, peers: list[Peer]) -> None:
        fresh = shard.ring(64)
        fresh.set_peers(peers)
        for op in Op:
            self.assertEqual(_ring_internals(sharder, op), _ring_internals(fresh, op))

    def test_patched_rebuild_matches_full(self) -> None:
        rng = random.Random(7)
        pool = [f"n{i}" for i in range(60)]
        current = {name: P for name in pool[:40]}
        sharder = shard.ring(64)
        for _ in range(40):
            name = rng.choice(pool)
            if name not in current:
                current[name] = P
            elif current[name] is P and rng.random() < 0.5:
                current[name] = T
            else:
                del current[name]
            peers = [Peer(n, "x:1", False, s) for n, s in current.items()]
            sharder.set_peers(peers)
            self._assert_same_as_fresh(sharder, peers)

    def test_equal_tokens_order_by_name(self) -> None:
        # Force every node onto the same tokens: ties must go to the smaller
        # name, on the full build and on the patched one alike.
        def fake_tokens(name: str, num_tokens: int) -> list[int]:
            return [1000 * (t // 2) for t in range(num_tokens)]

        self.patch(_ring, "ring_tokens", fake_tokens)
        names = [f"n{i:02d}" for i in range(20)]
        sharder = shard.ring(64)
        sharder.set_peers(_peers(names[1:7] + names[8:]))
        self.assertEqual(_names(sharder.lookup(1, 3, Op.READ)), ["n01", "n02", "n03"])
        # Patched in between existing names with the same tokens, then first.
        sharder.set_peers(_peers(names[1:]))
        self._assert_same_as_fresh(sharder, _peers(names[1:]))
        sharder.set_peers(_peers(names))
        self._assert_same_as_fresh(sharder, _peers(names))
        self.assertEqual(_names(sharder.lookup(1, 3, Op.READ)), ["n00", "n01", "n02"])
        sharder.set_peers(_peers(names[:5] + names[6:]))
        self._assert_same_as_fresh(sharder, _peers(names[:5] + names[6:]))


class SteppedUpdateTests(SynchronousTestCase):
    """
    A large ring is built in steps (so a node joining a big cluster never
    holds its reactor for long) and gives what one plain sort gives.
    """

    def test_every_sharder_is_stepped(self) -> None:
        for make in _SHARDERS.values():
            self.assertTrue(verifyObject(ISteppedSharder, make()))

    def test_full_build_in_steps_matches_a_plain_sort(self) -> None:
        names = [f"node-{i:03d}" for i in range(300)]
        sharder = shard.ring(512)
        steps = sum(1 for _ in sharder.set_peers_in_steps(_peers(names)))
        # 153,600 tokens at 32,768 per step: hashing and sorting take more
        # than one step each.
        self.assertGreaterEqual(steps, 8)
        pairs = sorted(
            (token, name) for name in names for token in _ring.ring_tokens(name, 512)
        )
        tokens, owners = _ring_internals(sharder, Op.READ)
        self.assertEqual(tokens, [t for t, _ in pairs])
        self.assertEqual(owners, [n for _, n in pairs] + [pairs[0][1]])

    def test_the_step_size_is_read_at_each_build(self) -> None:
        """
        C{STEP_TOKENS} sizes the steps of the next build: tests (and
        C{tests/test_ownership.py}) shrink it to step small rings.
        """
        names = [f"node-{i:03d}" for i in range(4)]
        self.assertEqual(
            sum(1 for _ in shard.ring(512).set_peers_in_steps(_peers(names))), 0
        )
        self.patch(_stepped, "STEP_TOKENS", 128)
        sharder = shard.ring(512)
        # 2,048 tokens, 512 per node: a step after each node's tokens.
        steps = sum(1 for _ in sharder.set_peers_in_steps(_peers(names)))
        self.assertGreaterEqual(steps, len(names))
        fresh = shard.ring(512)
        self.patch(_stepped, "STEP_TOKENS", 1 << 30)
        fresh.set_peers(_peers(names))
        self.assertEqual(
            _ring_internals(sharder, Op.READ), _ring_internals(fresh, Op.READ)
        )

    def test_lookups_answer_from_the_old_peers_until_the_last_step(self) -> None:
        sharder = shard.ring(512)
        old = _peers(["a", "b"])
        sharder.set_peers(old)
        key = _random_keys(1)[0]
        before = sharder.lookup(key, 2, Op.READ)
        steps = iter(sharder.set_peers_in_steps(_peers(f"n{i}" for i in range(200))))
        next(steps)
        next(steps)
        self.assertEqual(sharder.peers(), old)
        self.assertEqual(sharder.lookup(key, 2, Op.READ), before)
        for _ in steps:
            pass
        self.assertEqual(len(sharder.peers()), 200)
        self.assertNotIn(sharder.lookup(key, 1, Op.READ)[0].name, {"a", "b"})

    def test_a_later_update_supersedes_an_unfinished_one(self) -> None:
        sharder = shard.ring(512)
        steps = iter(sharder.set_peers_in_steps(_peers(f"n{i}" for i in range(200))))
        next(steps)
        latest = _peers(["x", "y", "z"])
        sharder.set_peers(latest)
        for _ in steps:
            pass
        self.assertEqual(sharder.peers(), latest)
        fresh = shard.ring(512)
        fresh.set_peers(latest)
        self.assertEqual(
            _ring_internals(sharder, Op.READ), _ring_internals(fresh, Op.READ)
        )


class DistributionTests(SynchronousTestCase):
    def _shares(self, num_nodes: int) -> list[float]:
        sharder = shard.ring(512)
        sharder.set_peers(_peers([f"node-{i}" for i in range(num_nodes)]))
        keys = _random_keys(1_000_000)
        counts = Counter(o[0].name for o in sharder.lookup_many(keys, 1, Op.READ))
        self.assertEqual(len(counts), num_nodes)
        fair = len(keys) / num_nodes
        return [c / fair for c in counts.values()]

    # With 512 tokens a node's share has a spread of about 1/sqrt(512) = 4.4%,
    # so 0.90..1.10 is roughly a 2-sigma band at 100 nodes. It holds for these
    # names; other name sets can land a node just outside it.
    def test_ring_balance_10(self) -> None:
        shares = self._shares(10)
        self.assertTrue(0.90 <= min(shares) and max(shares) <= 1.10, shares)

    def test_ring_balance_100(self) -> None:
        shares = self._shares(100)
        self.assertTrue(0.90 <= min(shares) and max(shares) <= 1.10, shares)

    def _check_growth(self, num_nodes: int) -> None:
        keys = _random_keys(1_000_000)[:200_000]
        names = [f"node-{i}" for i in range(num_nodes + 1)]
        sharder = shard.ring(512)
        sharder.set_peers(_peers(names[:-1]))
        before = [o[0].name for o in sharder.lookup_many(keys, 1, Op.READ_WRITE)]
        sharder.set_peers(_peers(names))
        after = [o[0].name for o in sharder.lookup_many(keys, 1, Op.READ_WRITE)]
        moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        # Keys only ever move to the newcomer, never between survivors.
        self.assertEqual({b for _, b in moved}, {names[-1]})
        fraction = len(moved) / len(keys)
        ideal = 1 / (num_nodes + 1)
        self.assertTrue(0.8 * ideal <= fraction <= 1.2 * ideal, (fraction, ideal))

    def test_ring_growth_10(self) -> None:
        self._check_growth(10)

    def test_ring_growth_100(self) -> None:
        self._check_growth(100)


class PeerTests(SynchronousTestCase):
    def test_state_strings(self) -> None:
        self.assertEqual(
            [str(s) for s in PeerState], ["viewer", "participant", "terminating"]
        )
        self.assertEqual([int(s) for s in PeerState], [0, 1, 2])
        self.assertEqual(f"{PeerState.TERMINATING}", "terminating")
        for state in PeerState:
            self.assertIs(PeerState.parse(str(state)), state)
        e = self.assertRaises(ValueError, PeerState.parse, "Viewer")
        self.assertEqual(str(e), 'unknown state "Viewer"')

    def test_json(self) -> None:
        peer = Peer("alloy-0", "10.0.0.1:12345", True, T)
        obj = peer.to_json()
        self.assertEqual(
            obj,
            {
                "name": "alloy-0",
                "addr": "10.0.0.1:12345",
                "isSelf": True,
                "state": "terminating",
            },
        )
        self.assertEqual(Peer.from_json(json.loads(json.dumps(obj))), peer)
        self.assertEqual(str(peer), "alloy-0")
        self.assertRaises(ValueError, Peer.from_json, {**obj, "state": "gone"})
        self.assertRaises(TypeError, Peer.from_json, {**obj, "isSelf": "yes"})

    def test_transitions(self) -> None:
        legal = {(V, P), (P, T)}
        for current in PeerState:
            for target in PeerState:
                if (current, target) in legal:
                    check_transition(current, target)
                    continue
                e = self.assertRaises(
                    StateTransitionError, check_transition, current, target
                )
                self.assertIsInstance(e, ValueError)
                self.assertEqual(
                    str(e), f"invalid transition from {current} to {target}"
                )
                self.assertEqual((e.current, e.target), (current, target))
        e = self.assertRaises(StateTransitionError, check_transition, V, T)
        self.assertEqual(str(e), "invalid transition from viewer to terminating")


class LamportTests(SynchronousTestCase):
    def test_tick_and_observe(self) -> None:
        clock = LamportClock()
        self.assertEqual(clock.now(), 0)
        self.assertEqual(clock.tick(), 1)
        self.assertEqual(clock.tick(), 2)
        clock.observe(5)  # ahead of us: move past it
        self.assertEqual(clock.now(), 6)
        clock.observe(3)  # behind us: no change
        self.assertEqual(clock.now(), 6)
        clock.observe(6)  # equal counts as not behind
        self.assertEqual(clock.now(), 7)
        self.assertEqual(clock.now(), 7)  # now() never advances

    def test_uint64(self) -> None:
        clock = LamportClock(MAX_TIME)
        self.assertEqual(clock.tick(), 0)
        clock.observe(MAX_TIME)
        self.assertEqual(clock.now(), 0)
        self.assertRaises(ValueError, clock.observe, -1)
        self.assertRaises(ValueError, clock.observe, MAX_TIME + 1)
        self.assertRaises(ValueError, LamportClock, -1)
