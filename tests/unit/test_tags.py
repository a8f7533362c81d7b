"""
Serf's tags (L{cluster.serf.tags}): the node meta byte for byte as Serf
writes it, read by Serf's rules; memberlist's C{UpdateNode}
(L{Memberlist.update_node}) spreading a new meta on the simulated network;
tags at start and at run time through ckit's node and the cluster service;
and C{clusternode --tag}.
"""

from __future__ import annotations

import random

import attrs
import msgpack
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from cluster import ClusterService, Options
from cluster.ckit.node import Node, NodeStoppedError
from cluster.daemon.tap import ClusterNodeOptions
from cluster.gossip import Member, Memberlist, MemberState
from cluster.gossip.broadcast import retransmit_limit
from cluster.gossip.config import META_MAX_SIZE, GossipConfig
from cluster.serf.tags import (
    STATUS_SITE_TAG,
    decode_tags,
    encode_tags,
    tags_meta,
    tags_of,
)
from cluster.testing import RecordingDelegate, SimulatedNetwork
from tests.helpers import (
    EventRecorder,
    known,
    node_of,
    services_joining_first,
    start_and_join,
)

LAN = GossipConfig.lan()


def gossip_bound(config: GossipConfig, n: int) -> float:
    """
    How long a broadcast takes to be sent its full number of times in a
    cluster of C{n}: one transmission per gossip tick at worst, twice that
    for the tick's phase and for the members that hear it second-hand.
    """
    return 2 * retransmit_limit(config.retransmit_mult, n) * config.gossip_interval


class EncodeTests(SynchronousTestCase):
    def test_as_serf_writes_them(self) -> None:
        """
        C{0xff}, then the map; WIRE.md's example, whose agent showed
        C{role=py,lang=python}.
        """
        self.assertEqual(encode_tags({}), bytes.fromhex("ff80"))
        tags = {"role": "py", "lang": "python"}
        self.assertEqual(
            encode_tags(tags),
            bytes.fromhex("ff 82 a4 6c616e67 a6 707974686f6e a4 726f6c65 a2 7079"),
        )
        self.assertEqual(
            encode_tags(tags),
            b"\xff" + msgpack.packb(dict(sorted(tags.items())), use_bin_type=False),
        )

    def test_legacy_raw_strings(self) -> None:
        """
        go-msgpack writes no str8: 32 to 65535 bytes are str16.
        """
        self.assertEqual(encode_tags({"k": "v" * 31})[4:5], b"\xbf")
        self.assertEqual(encode_tags({"k": "v" * 32})[4:7], b"\xda\x00\x20")
        self.assertEqual(encode_tags({"k": "é" * 20})[4:7], b"\xda\x00\x28")

    def test_keys_in_order_and_map16(self) -> None:
        tags = {f"k{i:02}": "" for i in reversed(range(16))}
        meta = encode_tags(tags)
        self.assertEqual(meta[:4], b"\xff\xde\x00\x10")
        self.assertEqual(list(decode_tags(meta)), sorted(tags))


class DecodeTests(SynchronousTestCase):
    def test_the_role_alone(self) -> None:
        """
        Empty, or not starting with C{0xff}: the role (serf shows C{role=}
        for an empty meta).
        """
        self.assertEqual(decode_tags(b""), {"role": ""})
        self.assertEqual(decode_tags(b"web"), {"role": "web"})
        self.assertEqual(decode_tags(b"\x80\xa1a"), {"role": "\ufffd\ufffda"})

    def test_round_trip(self) -> None:
        tags = {"role": "web", "zone": "", "ünï": "cödé", "http": ":8080"}
        self.assertEqual(decode_tags(encode_tags(tags)), tags)

    def test_bin_strings_nil_repeats_and_trailing_bytes(self) -> None:
        self.assertEqual(
            decode_tags(b"\xff" + msgpack.packb({b"a": b"b"}, use_bin_type=True)),
            {"a": "b"},
        )
        # nil is Go's zero string; a repeated key keeps its last value;
        # what follows the map is not read.
        meta = b"\xff\x83\xc0\xa1x\xa1k\xc0\xa1k\xa1y" + b"\xc1junk"
        self.assertEqual(decode_tags(meta), {"": "x", "k": "y"})

    def test_what_decoded_before_a_fault(self) -> None:
        """
        Serf logs C{Failed to decode tags} and keeps what it read.
        """
        self.assertEqual(decode_tags(b"\xff\x82\xa1a\xa1b\xa1c\x01"), {"a": "b"})
        self.assertEqual(decode_tags(b"\xff\x82\xa1a\xa1b\x01\xa1d"), {"a": "b"})
        self.assertEqual(decode_tags(b"\xff\x83\xa1a\xa1b\xa1c"), {"a": "b"})
        self.assertEqual(decode_tags(b"\xff\x81\xa1a\x91\xa1b"), {})

    def test_no_map_no_tags(self) -> None:
        for meta in (b"\xff", b"\xff\xc0", b"\xff\x91\x01", b"\xff\x01", b"\xff\xc1"):
            self.assertEqual(decode_tags(meta), {}, meta)

    def test_never_raises(self) -> None:
        rng = random.Random(4)
        valid = encode_tags({"role": "web", "dc": "x" * 40})
        for _ in range(3000):
            size = rng.randrange(0, 64)
            if rng.random() < 0.5:
                meta = bytes(rng.randrange(256) for _ in range(size))
            else:  # a real one, damaged
                damaged = bytearray(valid)
                for _ in range(rng.randrange(1, 4)):
                    damaged[rng.randrange(1, len(damaged))] = rng.randrange(256)
                meta = bytes(damaged[: rng.randrange(1, len(damaged) + 1)])
            tags = decode_tags(b"\xff" + meta)
            self.assertTrue(all(isinstance(x, str) for kv in tags.items() for x in kv))


class TagsMetaTests(SynchronousTestCase):
    def test_no_tags_is_no_meta(self) -> None:
        """
        A node without tags keeps the empty meta it always sent.
        """
        self.assertEqual(tags_meta({}), b"")
        self.assertEqual(tags_meta({"a": "b"}), encode_tags({"a": "b"}))

    def test_memberlist_limit(self) -> None:
        """
        Serf's C{SetTags} refuses tags over memberlist's C{MetaMaxSize}:
        C{ff 81 a1 61 da 01 f9} and the value take 512 bytes exactly.
        """
        self.assertEqual(len(tags_meta({"a": "x" * 505})), META_MAX_SIZE)
        with self.assertRaises(ValueError) as raised:
            tags_meta({"small": "y", "a": "x" * 500})
        self.assertEqual(
            str(raised.exception),
            "the tags take 515 bytes, over the 512 of a node meta; the largest "
            "is 'a' (501 bytes)",
        )

    def test_strings_only(self) -> None:
        with self.assertRaises(ValueError) as raised:
            tags_meta({"a": 1})  # type: ignore[dict-item]
        self.assertIn("tag 'a'", str(raised.exception))

    def test_tags_of_a_member(self) -> None:
        def member(meta: bytes) -> Member:
            return Member("m", "127.0.0.1", 7946, meta, MemberState.ALIVE, 1)

        self.assertEqual(tags_of(member(b"")), {})
        self.assertEqual(tags_of(member(b"web")), {"role": "web"})
        self.assertEqual(tags_of(member(encode_tags({"a": "b"}))), {"a": "b"})


@attrs.define(eq=False)
class MetaDelegate(RecordingDelegate):
    """
    A recording delegate whose node meta the test sets.
    """

    meta: bytes = b""

    def node_meta(self, limit: int) -> bytes:
        return self.meta


class UpdateNodeTests(SynchronousTestCase):
    """
    L{Memberlist.update_node}: memberlist's C{UpdateNode}.
    """

    def cluster(
        self, seed: int, size: int = 5, **overrides: object
    ) -> tuple[SimulatedNetwork, list[Memberlist], list[MetaDelegate]]:
        network = SimulatedNetwork(seed=seed)
        delegates = [MetaDelegate() for _ in range(size)]
        self.recorders = [EventRecorder() for _ in range(size)]
        nodes = start_and_join(
            network,
            *(f"n{i}" for i in range(size)),
            each=[
                {"delegate": d, "events": r}
                for d, r in zip(delegates, self.recorders, strict=True)
            ],
            settle=5,
            **overrides,
        )
        self.addCleanup(lambda: [node.shutdown() for node in nodes])
        return network, nodes, delegates

    def test_the_new_meta_reaches_every_member(self) -> None:
        """
        Our next incarnation carries the new meta to every member's table
        within the gossip bound, and the Deferred fires once the broadcast
        was sent its full number of times; each member's event delegate
        hears of the update once.
        """
        for seed in range(1, 9):
            self.check_spread(seed)

    def check_spread(self, seed: int) -> None:
        network, nodes, delegates = self.cluster(seed)
        before = nodes[0].local_member().incarnation
        self.assertEqual({known(n, "n0").incarnation for n in nodes}, {before})
        delegates[0].meta = encode_tags({"role": "x"})
        updated = nodes[0].update_node(5)
        self.assertEqual(nodes[0].local_member().incarnation, before + 1)

        def everywhere() -> bool:
            return all(
                known(n, "n0").meta == delegates[0].meta
                and known(n, "n0").incarnation == before + 1
                for n in nodes
            )

        took = network.run_until(
            lambda: everywhere() and updated.called, gossip_bound(LAN, 5)
        )
        self.assertIsNotNone(took, f"seed {seed}")
        self.assertIs(self.successResultOf(updated), True)
        for recorder in self.recorders:
            self.assertEqual(recorder.updated, ["n0"], f"seed {seed}")

    def test_over_the_limit(self) -> None:
        """
        memberlist panics on a meta over C{MetaMaxSize}; we refuse it and
        change nothing.
        """
        network, nodes, delegates = self.cluster(11, size=2)
        before = nodes[0].local_member()
        delegates[0].meta = b"x" * (META_MAX_SIZE + 1)
        self.failureResultOf(nodes[0].update_node(5), ValueError)
        self.assertEqual(nodes[0].local_member(), before)
        network.run(gossip_bound(LAN, 2))
        self.assertEqual(known(nodes[1], "n0"), before)

    def test_alone(self) -> None:
        """
        With nobody to tell, it fires at once.
        """
        network = SimulatedNetwork(seed=12)
        delegate = MetaDelegate(meta=b"a")
        node = network.memberlist("solo", delegate=delegate)
        node.start()
        self.addCleanup(node.shutdown)
        delegate.meta = b"b"
        self.assertIs(self.successResultOf(node.update_node(1)), True)
        self.assertEqual(node.local_member().meta, b"b")
        self.assertEqual(node.local_member().incarnation, 2)

    def test_timeout_and_shutdown(self) -> None:
        """
        With gossip off and no probe due (probes carry broadcasts too), the
        broadcast never goes: C{False} at the timeout, or when the member
        shuts down while waiting without one.
        """
        network, nodes, delegates = self.cluster(
            13, size=3, gossip_interval=0, probe_interval=3600
        )
        delegates[0].meta = b"new"
        bounded = nodes[0].update_node(2)
        network.run(1.9)
        self.assertNoResult(bounded)
        network.run(0.2)
        self.assertIs(self.successResultOf(bounded), False)
        unbounded = nodes[0].update_node(0)
        network.run(60)
        self.assertNoResult(unbounded)
        nodes[0].shutdown()
        self.assertIs(self.successResultOf(unbounded), False)

    def test_superseded(self) -> None:
        """
        A second update replaces the first in the queue: the first is
        done, and every member ends on the second, two incarnations up.
        """
        network, nodes, delegates = self.cluster(14, size=3)
        before = nodes[0].local_member().incarnation
        delegates[0].meta = b"one"
        first = nodes[0].update_node(5)
        delegates[0].meta = b"two"
        second = nodes[0].update_node(5)
        network.run(0)
        self.assertIs(self.successResultOf(first), True)
        network.run(gossip_bound(LAN, 3))
        self.assertIs(self.successResultOf(second), True)
        for node in nodes:
            self.assertEqual(
                (known(node, "n0").meta, known(node, "n0").incarnation),
                (b"two", before + 2),
            )

    def test_not_running_or_left(self) -> None:
        network, nodes, _ = self.cluster(15, size=2)
        fresh = network.memberlist("fresh")
        self.failureResultOf(fresh.update_node(1), RuntimeError)
        nodes[1].leave(1)
        self.failureResultOf(nodes[1].update_node(1), RuntimeError)
        nodes[1].shutdown()
        self.failureResultOf(nodes[1].update_node(1), RuntimeError)


def services_with_tags(
    seed: int, *tagged: dict[str, str]
) -> tuple[SimulatedNetwork, list[ClusterService]]:
    """
    A service named C{svc-I} with each of C{tagged}, each joining the
    first, started and settled.
    """
    network = SimulatedNetwork(seed=seed)
    services = services_joining_first(network, [{"tags": t} for t in tagged], 5)
    return network, services


class ServiceTagsTests(SynchronousTestCase):
    """
    Tags at start (C{Options.tags}) and at run time
    (L{ClusterService.set_tags}), through ckit's node.
    """

    def setUp(self) -> None:
        self.network, self.services = services_with_tags(
            21, {"role": "web", "dc": "x"}, {}, {"role": "db"}
        )

        def stop() -> None:
            for svc in self.services:
                svc.stopService()
            self.network.run(10)

        self.addCleanup(stop)

    def tags_everywhere(self, name: str) -> list[dict[str, str]]:
        return [tags_of(known(node_of(svc).memberlist, name)) for svc in self.services]

    def test_at_start(self) -> None:
        self.assertEqual(
            self.tags_everywhere("svc-0"), [{"role": "web", "dc": "x"}] * 3
        )
        self.assertEqual(self.tags_everywhere("svc-2"), [{"role": "db"}] * 3)
        # A node without tags sends the empty meta it always sent.
        self.assertEqual(
            {known(node_of(svc).memberlist, "svc-1").meta for svc in self.services},
            {b""},
        )

    def test_at_run_time(self) -> None:
        svc = self.services[2]
        node = node_of(svc).memberlist
        before = node.local_member().incarnation
        changed = svc.set_tags({"role": "cache"})
        self.assertEqual(svc.tags, {"role": "cache"})
        took = self.network.run_until(
            lambda: self.tags_everywhere("svc-2") == [{"role": "cache"}] * 3,
            gossip_bound(LAN, 3),
        )
        self.assertIsNotNone(took)
        self.network.run(gossip_bound(LAN, 3))
        self.assertIs(self.successResultOf(changed), True)
        self.assertEqual(
            {known(node_of(s).memberlist, "svc-2").incarnation for s in self.services},
            {before + 1},
        )
        # Back to none: the empty meta again.
        cleared = svc.set_tags({})
        self.network.run(2 * gossip_bound(LAN, 3))
        self.assertIs(self.successResultOf(cleared), True)
        self.assertEqual(self.tags_everywhere("svc-2"), [{}] * 3)

    def test_refused_tags_change_nothing(self) -> None:
        svc = self.services[0]
        meta = node_of(svc).memberlist.local_member().meta
        with self.assertRaises(ValueError) as raised:
            svc.set_tags({"big": "x" * META_MAX_SIZE})
        self.assertIn("'big'", str(raised.exception))
        self.assertEqual(svc.tags, {"role": "web", "dc": "x"})
        self.assertEqual(node_of(svc).memberlist.local_member().meta, meta)

    def test_options_refuse_what_does_not_fit(self) -> None:
        with self.assertRaises(ValueError) as raised:
            Options(tags={"big": "x" * META_MAX_SIZE})
        self.assertTrue(str(raised.exception).startswith("tags: the tags take"))


class NodeTagsTests(SynchronousTestCase):
    def test_set_before_start_and_after_stop(self) -> None:
        network = SimulatedNetwork(seed=31)
        config = GossipConfig.lan(name="n", bind_address="127.0.0.1")
        node = Node(config, None, network.clock, network.transport(), tags={"a": "1"})
        self.assertIs(self.successResultOf(node.set_tags({"a": "2"})), True)
        node.start()
        network.run(1)
        self.assertEqual(tags_of(node.memberlist.local_member()), {"a": "2"})
        self.assertEqual(node.memberlist.local_member().incarnation, 1)
        node.stop()
        network.run(10)
        self.failureResultOf(node.set_tags({"a": "3"}), NodeStoppedError)
        self.assertEqual(node.tags, {"a": "2"})


def parse(*argv: str) -> ClusterNodeOptions:
    options = ClusterNodeOptions()
    options.parseOptions(list(argv))
    return options


class TagFlagTests(SynchronousTestCase):
    """
    C{clusternode --tag K=V}, repeatable, and the status site's tag.
    """

    def test_repeated_and_the_status_site(self) -> None:
        options = parse("--tag", "role=web", "--tag", "dc=", "--tag", "role=db")
        self.assertEqual(
            options.cluster_options.tags,
            {STATUS_SITE_TAG: "127.0.0.1:12345", "role": "db", "dc": ""},
        )
        # A --tag of its own name replaces the status site's.
        options = parse("--tag", "http=example.org:80")
        self.assertEqual(options.cluster_options.tags, {"http": "example.org:80"})

    def test_where_the_status_site_is(self) -> None:
        for endpoint, where in [
            ("tcp:8080", ":8080"),
            ("tcp:8080:interface=0.0.0.0", ":8080"),
            ("tcp6:8080:interface=\\:\\:1", "[::1]:8080"),
            ("tcp:port=9:interface=10.1.2.3", "10.1.2.3:9"),
            ("tcp:0:interface=127.0.0.1", None),
            ("unix:/run/node/http.sock", None),
        ]:
            tags = parse("--http", endpoint).cluster_options.tags
            self.assertEqual(tags.get(STATUS_SITE_TAG), where, endpoint)

    def test_bad_tags(self) -> None:
        for argv, line in [
            (["--tag", "role"], "--tag: not KEY=VALUE: 'role'"),
            (["--tag", "=web"], "--tag: not KEY=VALUE: '=web'"),
            (
                ["--tag", "big=" + "x" * 500],
                "--tag: the tags take 530 bytes, over the 512 of a node meta; "
                "the largest is 'big' (503 bytes)",
            ),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                parse(*argv)
            self.assertEqual(str(raised.exception), line)
