"""
Fuzzing every decoder a member runs on what it receives.

Random bytes, and mutations of valid input (real messages built with the
library's own encoders, then bit-flipped, cut, stretched, given wrong
lengths and counts, and wrapped again), go through each decoder alone
(LZW, the keyring, the memberlist, ckit and Serf message decoders, the
stream frame measure) and through a member's L{Receiver}: packets and streams
under every wrapping (label, AES-GCM, CRC, LZW compression, compounds), on
ckit L{Node}s of a simulated network, so that user messages and push/pull
user state reach ckit's delegate.  What must hold:

  - nothing raises out of the protocol: each decoder raises only its own
    error; the receiver and the delegate never raise;
  - what a decoder accepts is a message: it encodes, and decodes back to
    itself (the Serf messages, which also round-trip when well-formed);
  - garbage changes nothing: the member table and ckit's peer list stay as
    they were unless a well-formed message said otherwise, and ckit's peer
    list always names the members memberlist reports alive;
  - every input refused is counted by reason, from a known set, a datagram
    with a part dropped counts as failed, and valid input is never counted
    as dropped.

L{tests.integration.test_flood} sends 100,000 bad packets to a real member
on 127.0.0.1 while it stays in its cluster.

Hypothesis runs under the suite's profile (L{tests}: derandomized, no example
database), with bounded examples: the module is deterministic and quick.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from cluster.ckit.counters import NodeCounters, ReceivedEvents
from cluster.ckit.messages import (
    MessageError,
    StateMessage,
    decode_local_state,
    decode_state,
    encode_local_state,
    encode_state,
)
from cluster.ckit.node import Node
from cluster.gossip import GossipConfig, lzw, wire
from cluster.gossip.codec import pack
from cluster.gossip.counters import DropReason
from cluster.gossip.framing import (
    FrameError,
    Opened,
    PacketCodec,
    StreamCodec,
    add_crc,
    add_label,
    codecs_for,
    compress_message,
    make_compound,
)
from cluster.gossip.keyring import DecryptError, Keyring, encryption_overhead
from cluster.peer import PeerState
from cluster.serf import messages as serf
from cluster.testing import SimulatedNetwork
from tests.helpers import VSN
from tests.unit.test_keyring import K16, K32
from tests.unit.test_serf_messages import (
    FILTERS,
    HAND_BUILT,
    captured,
    query_filters,
    serf_messages,
)

if TYPE_CHECKING:
    from cluster.gossip.config import GossipSettings

_log = Logger()

FUZZ = settings(max_examples=150)
"""
Every property here: a fixed, bounded set of examples on every run.
"""

FRAME_REASONS = frozenset(
    {
        DropReason.LABEL,
        DropReason.DECRYPT,
        DropReason.CRC,
        DropReason.COMPOUND,
        DropReason.COMPRESS,
        DropReason.DECODE,
        DropReason.SIZE,
    }
)
"""
The reasons a L{FrameError} gives (L{cluster.gossip.framing}).
"""

TABLE_REASONS = frozenset({DropReason.VERSION, DropReason.META, DropReason.NAME})
"""
The member table's own refusals of a well-formed alive or push/pull entry
(L{cluster.gossip.state}); it also counts a nameless one as C{decode}.
"""

RECEIVER_REASONS = frozenset(
    {
        DropReason.TYPE,
        DropReason.WRONG_NODE,
        DropReason.STREAM,
        DropReason.PROTOCOL,
        DropReason.HANDLER,
    }
)
"""
The reasons the receiver itself gives (L{Receiver.drop} and its handlers).
"""

KNOWN_REASONS = FRAME_REASONS | TABLE_REASONS | RECEIVER_REASONS
"""
Every reason a member's receiver may count a drop for.
"""

STRANGER = ("127.9.9.9", 7946)
KEY = bytes(range(16))
# Inputs per wrapping in the bulk runs.
BULK = 2000


def fixed_nonces(size: int) -> bytes:
    """
    Nonces for the keyrings here: always the same, so that sealed inputs,
    and the examples built from them, are the same on every run.  Nothing
    here needs secrecy.
    """
    return bytes(size)


def is_ckit_state(payload: bytes) -> bool:
    """
    Whether ckit's delegate reads C{payload} as a state message.
    """
    try:
        decode_state(payload)
    except MessageError:
        return False
    return True


# --- valid input, from the library's encoders ---


def packet_seeds(target: str) -> list[bytes]:
    """
    One of every message a member receives by UDP, well-formed and meant
    for C{target}.
    """
    stranger = wire.ip_to_bytes(STRANGER[0])
    ghost = wire.ip_to_bytes("127.9.9.8")
    state = encode_state(StateMessage("b", PeerState.PARTICIPANT, 7))
    messages: list[wire.Message] = [
        wire.Ping(1, target, source_addr=stranger, source_port=7946, source_node="x"),
        wire.Ping(2, ""),
        wire.IndirectPingReq(
            3, ghost, 7946, "ghost", True, source_addr=stranger, source_port=7946
        ),
        wire.Ack(4),
        wire.Ack(5, b"payload"),
        wire.Nack(6),
        wire.Suspect(1, "ghost", "x"),
        wire.Alive(1, "ghost", ghost, 7946, b"meta", VSN),
        wire.Dead(1, "ghost", "x"),
        wire.User(state),
    ]
    return [wire.encode_message(m) for m in messages]


def stream_seeds(target: str, peer: Node) -> list[bytes]:
    """
    One of every request a member serves on a stream, well-formed, meant
    for C{target}, and for a push/pull, C{peer}'s real state.
    """
    nodes = peer.memberlist.table.push_states()
    messages: list[wire.Message] = [
        wire.Ping(9, target),
        wire.PushPull(False, nodes, peer.states.local_state()),
        wire.PushPull(True, nodes, b""),
        wire.User(encode_state(StateMessage(peer.name, PeerState.PARTICIPANT, 3))),
    ]
    return [wire.encode_stream_message(m) for m in messages]


def ckit_seeds() -> list[bytes]:
    """
    ckit's gossip: a state message and a push/pull user state.
    """
    states = [
        StateMessage("a", PeerState.PARTICIPANT, 4),
        StateMessage("b", PeerState.TERMINATING, 9),
    ]
    return [encode_state(states[0]), encode_local_state(12, states)]


# --- mutations ---

EDIT_KINDS = ("flip", "set", "insert", "delete", "truncate", "extend", "nudge")
WRAPPERS = ("compound", "pair", "compress", "crc")


@attrs.frozen
class Edit:
    """
    One change to a byte string, at C{where} modulo its length.

    @ivar kind: one of L{EDIT_KINDS}; C{nudge} moves a byte by -4 to +4,
        which makes a length or a count slightly wrong when it hits one.
    @ivar value: the bit, byte, count or step, as C{kind} needs.
    """

    kind: str
    where: int
    value: int

    def apply(self, data: bytearray) -> None:
        """
        Make this change to C{data}.
        """
        if self.kind == "insert":
            at = self.where % (len(data) + 1)
            data[at:at] = bytes([self.value % 256])
        elif self.kind == "truncate":
            del data[self.where % (len(data) + 1) :]
        elif self.kind == "extend":
            data += bytes((self.value + 41 * k) % 256 for k in range(self.value % 16))
        elif data:
            at = self.where % len(data)
            if self.kind == "flip":
                data[at] ^= 1 << self.value % 8
            elif self.kind == "set":
                data[at] = self.value % 256
            elif self.kind == "delete":
                del data[at : at + 1 + self.value % 8]
            else:
                data[at] = (data[at] + self.value % 9 - 4) % 256


def edited(data: bytes, edits: Sequence[Edit]) -> bytes:
    """
    C{data} with C{edits} made in turn.
    """
    buffer = bytearray(data)
    for edit in edits:
        edit.apply(buffer)
    return bytes(buffer)


_WRAP: dict[str, Callable[[bytes], bytes]] = {
    "compound": lambda message: make_compound([message]),
    "pair": lambda message: make_compound([message, message]),
    "compress": compress_message,
    "crc": add_crc,
}


def seal_packet(codec: PacketCodec, message: bytes, crc: bool) -> bytes:
    """
    C{message} as C{codec}'s sender would send it; the library refuses to
    compress or checksum nothing, so an empty message is only encrypted
    and labelled.
    """
    if not message:
        return attrs.evolve(codec, compression=False).seal(message, crc=False)
    return codec.seal(message, crc)


def seal_stream(codec: StreamCodec, data: bytes) -> bytes:
    """
    What a dialler configured as C{codec} writes for the message bytes
    C{data}: L{StreamCodec.encode} for bytes that need not be a message.
    """
    if codec.compression:
        # compress_message, which refuses to compress nothing.
        body = pack({"Algo": 0, "Buf": lzw.compress(data)})
        data = bytes([wire.MessageType.COMPRESS]) + body
    if codec.keyring is not None:
        length = len(data) + encryption_overhead(1)
        header = struct.pack(">BI", wire.MessageType.ENCRYPT, length)
        data = header + codec.keyring.encrypt(data, aad=header + codec.label)
    return add_label(codec.label, data)


@attrs.frozen
class Recipe:
    """
    How to make one input from seeds: take some (or garbage), edit them,
    wrap them, seal them as a sender would, and edit the result.  Edits
    before sealing reach the decoders behind encryption and checksums;
    edits after reach those in front.

    @ivar parts: indexes of the seeds to send (several make a compound).
    @ivar garbage: random bytes to send instead of seeds.
    @ivar inner: edits to the message before it is wrapped and sealed.
    @ivar wrappers: L{WRAPPERS} put around the message, innermost first
        (packets only).
    @ivar crc: whether the sender adds a CRC (packets only).
    @ivar outer: edits to what the sender would send.
    """

    parts: tuple[int, ...] = (0,)
    garbage: bytes | None = None
    inner: tuple[Edit, ...] = ()
    wrappers: tuple[str, ...] = ()
    crc: bool = False
    outer: tuple[Edit, ...] = ()

    def message(self, seeds: Sequence[bytes], compound: bool) -> bytes:
        """
        The edited message before wrapping.
        """
        if self.garbage is not None:
            message = self.garbage
        else:
            parts = [seeds[i % len(seeds)] for i in self.parts]
            if compound and len(parts) > 1:
                message = make_compound(parts)
            else:
                message = parts[0]
        return edited(message, self.inner)

    def packet(self, seeds: Sequence[bytes], codec: PacketCodec) -> bytes:
        """
        A datagram for a member whose packets C{codec} opens.
        """
        message = self.message(seeds, compound=True)
        for wrapper in self.wrappers:
            if message:  # the library wraps no empty message
                message = _WRAP[wrapper](message)
        return edited(seal_packet(codec, message, self.crc), self.outer)

    def stream(self, seeds: Sequence[bytes], codec: StreamCodec) -> bytes:
        """
        A request for a member whose streams C{codec} opens.
        """
        message = self.message(seeds, compound=False)
        return edited(seal_stream(codec, message), self.outer)


def _edits() -> st.SearchStrategy[tuple[Edit, ...]]:
    edit = st.builds(
        Edit,
        st.sampled_from(EDIT_KINDS),
        # Mostly near the start, where headers, lengths and counts are.
        st.integers(0, 15) | st.integers(0, 1 << 16),
        st.integers(0, 1 << 16),
    )
    return st.lists(edit, max_size=3).map(tuple)


def recipes(seeds: int, stream: bool = False) -> st.SearchStrategy[Recipe]:
    """
    Recipes over C{seeds} seeds, for packets or (C{stream}) requests.
    """
    parts: st.SearchStrategy[tuple[int, ...]]
    wrappers: st.SearchStrategy[tuple[str, ...]]
    if stream:
        parts = st.integers(0, seeds - 1).map(lambda i: (i,))
        wrappers = st.just(())
    else:
        indexes = st.lists(st.integers(0, seeds - 1), min_size=1, max_size=4)
        parts = indexes.map(tuple)
        wrappers = st.lists(st.sampled_from(WRAPPERS), max_size=3).map(tuple)
    return st.builds(
        Recipe,
        parts=parts,
        garbage=st.none() | st.binary(max_size=300),
        inner=_edits(),
        wrappers=wrappers,
        crc=st.booleans() if not stream else st.just(False),
        # Half untouched after sealing, to reach what is behind the seal.
        outer=st.just(()) | _edits(),
    )


def random_recipe(rng: random.Random, seeds: int, stream: bool = False) -> Recipe:
    """
    A recipe drawn from C{rng} as L{recipes} draws one, for bulk runs.
    """

    def edits() -> tuple[Edit, ...]:
        return tuple(
            Edit(
                rng.choice(EDIT_KINDS),
                rng.randrange(16) if rng.random() < 0.6 else rng.randrange(1 << 16),
                rng.randrange(1 << 16),
            )
            for _ in range(rng.randrange(4))
        )

    garbage = rng.randbytes(rng.randrange(300)) if rng.random() < 0.2 else None
    if stream:
        return Recipe(
            parts=(rng.randrange(seeds),),
            garbage=garbage,
            inner=edits(),
            outer=edits() if rng.random() < 0.5 else (),
        )
    return Recipe(
        parts=tuple(rng.randrange(seeds) for _ in range(rng.randint(1, 4))),
        garbage=garbage,
        inner=edits(),
        wrappers=tuple(rng.choice(WRAPPERS) for _ in range(rng.randrange(3))),
        crc=rng.random() < 0.5,
        outer=edits() if rng.random() < 0.5 else (),
    )


# --- simulated members ---


@attrs.frozen
class Wrapping:
    """
    How a cluster wraps its traffic.
    """

    label: str = ""
    encrypted: bool = False
    compression: bool = True

    def settings(self) -> GossipSettings:
        """
        The gossip settings of every member of such a cluster.
        """
        keyring = Keyring([KEY], random_bytes=fixed_nonces) if self.encrypted else None
        return {
            "label": self.label,
            "keyring": keyring,
            "enable_compression": self.compression,
        }


def every_wrapping() -> list[Wrapping]:
    """
    Each combination of label, encryption and compression.
    """
    return [
        Wrapping(label, encrypted, compression)
        for label in ("", "fuzz")
        for encrypted in (False, True)
        for compression in (False, True)
    ]


wrappings = st.builds(
    Wrapping, st.sampled_from(["", "fuzz"]), st.booleans(), st.booleans()
)


def two_nodes(wrapping: Wrapping) -> tuple[Node, Node]:
    """
    ckit nodes C{a} and C{b}, joined on a simulated network, with every
    member wrapping its traffic as C{wrapping} says.
    """
    network = SimulatedNetwork(seed=11)
    a = network.node("a", **wrapping.settings())
    b = network.node("b", **wrapping.settings())
    a.start()
    b.start([a.memberlist.local_member().full_address()])
    network.run(2)
    if a.memberlist.num_members() != 2 or len(a.peers()) != 2:
        raise AssertionError("the simulated nodes did not join")
    return a, b


class ReceiverChecks(SynchronousTestCase):
    """
    Deliver one input to a simulated ckit node, checking everything that
    must hold whatever the input.
    """

    def assert_consistent(self, node: Node) -> None:
        """
        ckit's peers are the members memberlist reports alive: memberlist
        told its delegate about every change garbage could make.
        """
        self.assertEqual(
            {peer.name for peer in node.peers()},
            {member.name for member in node.memberlist.alive_members()},
        )

    def assert_ckit_users(
        self, node: Node, payloads: list[bytes], events: NodeCounters
    ) -> None:
        """
        ckit's delegate read each user message in C{payloads} once, as a
        state message or as a message that is not ckit's.
        """
        grown = (node.counters - events).received
        unknown = sum(not is_ckit_state(p) for p in payloads)
        self.assertEqual(grown.unknown_message, unknown)
        self.assertEqual(grown.state_change_message, len(payloads) - unknown)

    def receive_packet(self, node: Node, packet: bytes) -> Opened:
        """
        Deliver C{packet} to C{node} from a stranger.

        @return: what the node's codec finds in it.
        """
        memberlist = node.memberlist
        receiver = memberlist.receiver
        # Decoding has no side effect: the receiver's own codec is the oracle.
        opened = receiver.packets.decode(packet)
        members, peers = memberlist.members(), node.peers()
        counted, events = memberlist.counters.snapshot(), node.counters.snapshot()

        receiver.packet_received(packet, STRANGER)

        growth = memberlist.counters - counted
        drops = growth.dropped
        self.assertLessEqual(set(drops), KNOWN_REASONS)
        self.assertEqual(drops[DropReason.HANDLER], 0)
        self.assertEqual(growth.traffic.packets_in, 1)
        failed = growth.traffic.packets_in_failed
        self.assertIn(failed, (0, 1))
        if failed:
            self.assertTrue(drops, "a failed datagram must say why")
        refused = Counter(DropReason(error.reason) for error in opened.errors)
        self.assertEqual(refused - drops, Counter(), "codec errors uncounted")
        # Any drop but the member table's refusals of a well-formed alive
        # (its own rules, counted by the table) fails the datagram.
        nameless = sum(
            isinstance(m, wire.Alive) and not m.node for m in opened.messages
        )
        by_table = sum(drops[r] for r in TABLE_REASONS) + min(
            drops[DropReason.DECODE] - refused[DropReason.DECODE], nameless
        )
        if sum(drops.values()) > by_table:
            self.assertEqual(failed, 1, f"dropped {dict(drops)} uncounted")

        about_members = any(
            isinstance(m, (wire.Alive, wire.Suspect, wire.Dead))
            for m in opened.messages
        )
        if not about_members:
            self.assertEqual(memberlist.members(), members)
        users = [
            m.payload for m in opened.messages if isinstance(m, wire.User) and m.payload
        ]
        self.assert_ckit_users(node, users, events)
        if not about_members and not any(map(is_ckit_state, users)):
            self.assertEqual(node.peers(), peers)
        self.assert_consistent(node)
        return opened

    def receive_stream(self, node: Node, frame: bytes) -> wire.Message | None:
        """
        Serve C{frame} as a request that C{node} accepted from a stranger.

        @return: what the node's codec finds in it.
        """
        memberlist = node.memberlist
        receiver = memberlist.receiver
        streams = receiver.streams
        message: wire.Message | None = None
        refusal: FrameError | None = None
        try:
            message = streams.decode(frame, accepted=True)
        except FrameError as e:
            refusal = e
        members, peers = memberlist.members(), node.peers()
        counted, events = memberlist.counters.snapshot(), node.counters.snapshot()

        result = receiver.stream_received(frame, STRANGER)
        reply = self.successResultOf(result)

        growth = memberlist.counters - counted
        drops = growth.dropped
        self.assertLessEqual(set(drops), KNOWN_REASONS)
        self.assertEqual(drops[DropReason.HANDLER], 0)
        self.assertEqual(growth.traffic.streams_in, 1)
        answer = None if reply is None else streams.decode(reply, accepted=False)
        if refusal is not None:
            # A request we cannot read: counted once, by its reason.
            self.assertEqual(growth.traffic.streams_in_failed, 1)
            self.assertEqual(drops, Counter({DropReason(refusal.reason): 1}))
            if refusal.reason == "decrypt":
                self.assertIsInstance(answer, wire.ErrResp)
            else:
                self.assertIsNone(answer)
        else:
            self.assertEqual(
                growth.traffic.streams_in_failed,
                0,
                f"{message!r} failed: {dict(drops)}",
            )
            self.assert_served(node, message, answer, drops)

        if not isinstance(message, wire.PushPull):
            self.assertEqual(memberlist.members(), members)
        users = [message.payload] if isinstance(message, wire.User) else []
        self.assert_ckit_users(node, [p for p in users if p], events)
        if isinstance(message, wire.PushPull):
            # ckit merges the user state of every push/pull the table took.
            merged = bool(message.user_state) and not drops[DropReason.PROTOCOL]
            grown = (node.counters - events).received
            self.assertEqual(grown.merge_remote_state, int(merged))
        elif not any(map(is_ckit_state, users)):
            self.assertEqual(node.peers(), peers)
        self.assert_consistent(node)
        return message

    def assert_served(
        self,
        node: Node,
        message: wire.Message | None,
        answer: wire.Message | None,
        drops: Counter[DropReason],
    ) -> None:
        """
        A readable request got the answer its kind calls for.
        """
        if isinstance(message, wire.Ping):
            if message.node in ("", node.name):
                self.assertEqual((answer, drops), (wire.Ack(message.seq_no), Counter()))
            else:
                self.assertEqual(
                    (answer, drops), (None, Counter({DropReason.WRONG_NODE: 1}))
                )
        elif isinstance(message, wire.PushPull):
            self.assertIsInstance(answer, wire.PushPull)
            self.assertLessEqual(
                set(drops), TABLE_REASONS | {DropReason.PROTOCOL, DropReason.DECODE}
            )
        elif isinstance(message, wire.User):
            self.assertEqual((answer, drops), (None, Counter()))
        else:
            self.assertEqual((answer, drops), (None, Counter({DropReason.TYPE: 1})))


FuzzTest = Callable[["InputFuzzing", "Wrapping", st.DataObject], None]


class InputFuzzing:
    """
    What every kind of input a member receives goes through: random bytes,
    and mutations of valid input, as Hypothesis examples and in bulk from a
    fixed seed.  A test case mixes it into L{ReceiverChecks} and says what
    its inputs are and how one is delivered.

    @cvar inputs: what the inputs are called (it seeds the bulk runs).
    @cvar stream: whether they are requests on streams, not datagrams.
    @cvar seed_count: how many valid inputs L{seeds} gives.
    @cvar most: the most inputs one example delivers.
    """

    inputs: ClassVar[str]
    stream: ClassVar[bool]
    seed_count: ClassVar[int]
    most: ClassVar[int]

    def seeds(self, a: Node, b: Node) -> list[bytes]:
        """
        One valid input of each kind, for C{a}, with C{b} its peer.
        """
        raise NotImplementedError

    def make(self, recipe: Recipe, seeds: Sequence[bytes], node: Node) -> bytes:
        """
        The input C{recipe} makes from C{seeds} for C{node}.
        """
        raise NotImplementedError

    def deliver(self, node: Node, data: bytes) -> object:
        """
        Hand C{node} one input, checking what must hold.
        """
        raise NotImplementedError

    def random_inputs(self, wrapping: Wrapping, data: st.DataObject) -> None:
        """
        Deliver random bytes.
        """
        a, _ = two_nodes(wrapping)
        inputs = st.lists(st.binary(max_size=600), min_size=1, max_size=self.most)
        for each in data.draw(inputs):
            self.deliver(a, each)

    def mutated_inputs(self, wrapping: Wrapping, data: st.DataObject) -> None:
        """
        Deliver mutations of valid input.
        """
        a, b = two_nodes(wrapping)
        seeds = self.seeds(a, b)
        made = recipes(self.seed_count, self.stream)
        for recipe in data.draw(st.lists(made, min_size=1, max_size=self.most)):
            self.deliver(a, self.make(recipe, seeds, a))

    def test_mutated_inputs_in_bulk(self) -> None:
        """
        Many more mutations than the examples above, from a fixed seed, for
        each wrapping.
        """
        for wrapping in every_wrapping():
            a, b = two_nodes(wrapping)
            seeds = self.seeds(a, b)
            rng = random.Random(f"{self.inputs} {wrapping}")
            for _ in range(BULK):
                recipe = random_recipe(rng, len(seeds), self.stream)
                self.deliver(a, self.make(recipe, seeds, a))


def fuzzing_examples() -> tuple[FuzzTest, FuzzTest]:
    """
    The Hypothesis tests of L{InputFuzzing}, made anew for each test case
    that uses them: Hypothesis keeps state per decorated test, and refuses
    one that two test cases share.
    """

    def examples(body: FuzzTest) -> FuzzTest:
        return FUZZ(given(wrappings, st.data())(body))

    return examples(InputFuzzing.random_inputs), examples(InputFuzzing.mutated_inputs)


class PacketReceiverTests(ReceiverChecks, InputFuzzing):
    """
    Datagrams through L{Receiver.packet_received} under every wrapping.
    """

    inputs = "datagrams"
    stream = False
    seed_count = len(packet_seeds("a"))
    most = 8

    def seeds(self, a: Node, b: Node) -> list[bytes]:
        return packet_seeds(a.name)

    def make(self, recipe: Recipe, seeds: Sequence[bytes], node: Node) -> bytes:
        return recipe.packet(seeds, node.memberlist.receiver.packets)

    def deliver(self, node: Node, data: bytes) -> Opened:
        return self.receive_packet(node, data)

    test_random_inputs, test_mutated_inputs = fuzzing_examples()

    @FUZZ
    @given(
        wrappings,
        st.lists(
            st.lists(
                st.integers(0, len(packet_seeds("a")) - 1), min_size=1, max_size=6
            ),
            min_size=1,
            max_size=4,
        ),
        st.booleans(),
    )
    def test_valid_datagrams_are_not_dropped(
        self, wrapping: Wrapping, packets: list[list[int]], crc: bool
    ) -> None:
        """
        What a sender configured alike sends is read whole, and nothing of
        it is dropped or counted as failed.
        """
        a, _ = two_nodes(wrapping)
        seeds = packet_seeds(a.name)
        codec = a.memberlist.receiver.packets
        counted = a.memberlist.counters.snapshot()
        for parts in packets:
            chosen = [seeds[i] for i in parts]
            for packet in codec.encode(chosen, crc):
                opened = self.receive_packet(a, packet)
                self.assertEqual(opened.errors, [])
                self.assertEqual(
                    opened.messages, [wire.decode_message(p) for p in chosen]
                )
        growth = a.memberlist.counters - counted
        self.assertEqual(growth.dropped, Counter())
        self.assertEqual(growth.traffic.packets_in_failed, 0)

    def test_recipes_make_what_a_sender_sends(self) -> None:
        """
        An unedited recipe seals exactly as the library's sender does, so
        that the edits are all that differ from real traffic.
        """
        for wrapping in every_wrapping():
            a, _ = two_nodes(wrapping)
            seeds = packet_seeds(a.name)
            codec = a.memberlist.receiver.packets
            for crc in (False, True):
                recipe = Recipe(parts=(0, 3, 9), crc=crc)
                parts = [seeds[0], seeds[3], seeds[9]]
                self.assertEqual(
                    recipe.packet(seeds, codec), codec.encode(parts, crc)[0]
                )


class StreamReceiverTests(ReceiverChecks, InputFuzzing):
    """
    Requests through L{Receiver.stream_received} under every wrapping, as
    they come and as the frame measure cuts them.
    """

    inputs = "requests"
    stream = True
    seed_count = 4  # stream_seeds: a ping, two push/pulls, a user message
    most = 6

    def seeds(self, a: Node, b: Node) -> list[bytes]:
        return stream_seeds(a.name, b)

    def make(self, recipe: Recipe, seeds: Sequence[bytes], node: Node) -> bytes:
        return recipe.stream(seeds, node.memberlist.receiver.streams)

    def deliver(self, node: Node, data: bytes) -> None:
        """
        Serve C{data} whole, then, as a transport would, the frame that
        L{StreamCodec.frame_length} finds at its start.
        """
        self.receive_stream(node, data)
        try:
            length = node.memberlist.receiver.streams.frame_length(data, True)
        except FrameError:
            return
        if length is not None:
            self.receive_stream(node, data[:length])

    test_random_inputs, test_mutated_inputs = fuzzing_examples()

    def test_valid_requests_are_served(self) -> None:
        """
        Every kind of request, from a dialler configured alike, is served
        and nothing is dropped.
        """
        for wrapping in every_wrapping():
            a, b = two_nodes(wrapping)
            codec = a.memberlist.receiver.streams
            counted = a.memberlist.counters.snapshot()
            for seed in stream_seeds(a.name, b):
                frame = seal_stream(codec, seed)
                message = wire.decode_stream_message(seed)
                self.assertEqual(frame, codec.encode(message, dialler=True))
                self.assertEqual(self.receive_stream(a, frame), message)
            growth = a.memberlist.counters - counted
            self.assertEqual(growth.dropped, Counter())
            self.assertEqual(growth.traffic.streams_in_failed, 0)


class FrameLengthTests(SynchronousTestCase):
    """
    L{StreamCodec.frame_length} and the incremental L{StreamCodec.measure}
    on random, mutated and valid frames.
    """

    def measure(self, codec: StreamCodec, data: bytes, accepted: bool) -> None:
        """
        Measure C{data}: a length within it (the same for the frame alone),
        C{None}, or a L{FrameError} with a known reason.
        """
        whole = self.outcome(codec, [data], accepted)
        # Fed in pieces, as a socket delivers it, the measure agrees.
        pieces: list[bytes] = []
        start = 0
        while start < len(data):
            size = 1 + (len(pieces) * 7) % 13
            pieces.append(data[start : start + size])
            start += size
        self.assertEqual(self.outcome(codec, pieces, accepted), whole)
        if isinstance(whole, str):
            self.assertIn(DropReason(whole), FRAME_REASONS)
        elif whole is not None:
            self.assertTrue(0 < whole <= len(data), f"{whole} of {len(data)}")
            self.assertEqual(codec.frame_length(data[:whole], accepted), whole)

    def outcome(
        self, codec: StreamCodec, pieces: list[bytes], accepted: bool
    ) -> int | str | None:
        """
        The length a fresh measure answers after C{pieces}, or the reason
        it refused them.
        """
        measure = codec.measure(accepted)
        length = None
        try:
            for piece in pieces:
                length = measure.feed(piece)
        except FrameError as e:
            return e.reason
        return length

    @FUZZ
    @given(wrappings, st.binary(max_size=600), st.booleans())
    def test_random(self, wrapping: Wrapping, data: bytes, accepted: bool) -> None:
        _, codec = codecs_for(GossipConfig.lan(**wrapping.settings()))
        self.measure(codec, data, accepted)

    @FUZZ
    @given(wrappings, recipes(4, stream=True), st.booleans())
    def test_mutated(self, wrapping: Wrapping, recipe: Recipe, accepted: bool) -> None:
        a, b = two_nodes(wrapping)
        codec = a.memberlist.receiver.streams
        self.measure(codec, recipe.stream(stream_seeds(a.name, b), codec), accepted)

    def test_valid(self) -> None:
        """
        A whole frame measures its own length, whatever follows it, and
        every prefix of it asks for more.
        """
        for wrapping in every_wrapping():
            a, b = two_nodes(wrapping)
            codec = a.memberlist.receiver.streams
            for seed in stream_seeds(a.name, b):
                message = wire.decode_stream_message(seed)
                for accepted in (True, False):
                    frame = codec.encode(message, dialler=accepted)
                    after = frame + b"\x00more"
                    self.assertEqual(codec.frame_length(after, accepted), len(frame))
                    for cut in range(len(frame)):
                        self.assertIsNone(codec.frame_length(frame[:cut], accepted))


class DecoderTests(SynchronousTestCase):
    """
    Each decoder alone raises only its own error on any input.
    """

    @FUZZ
    @given(st.binary(max_size=2000), st.integers(0, 5000))
    def test_lzw_random(self, data: bytes, limit: int) -> None:
        try:
            out = lzw.decompress(data, limit)
        except lzw.LZWError:
            return
        self.assertLessEqual(len(out), limit)

    @FUZZ
    @given(st.sampled_from(packet_seeds("a") + ckit_seeds()), _edits(), st.booleans())
    def test_lzw_mutated(
        self, seed: bytes, edits: tuple[Edit, ...], tight: bool
    ) -> None:
        stream = lzw.compress(seed * 20)
        limit = len(seed) * 10 if tight else lzw.DEFAULT_MAX_OUTPUT
        try:
            out = lzw.decompress(edited(stream, edits), limit)
        except lzw.LZWError:
            return
        self.assertLessEqual(len(out), limit)
        if not edits:
            self.assertEqual(out, seed * 20)

    @FUZZ
    @given(st.binary(max_size=300), st.binary(max_size=8))
    def test_keyring_random(self, data: bytes, aad: bytes) -> None:
        keyring = Keyring([KEY, bytes(32)])
        self.assertRaises(DecryptError, keyring.decrypt, data, aad)

    @FUZZ
    @given(st.binary(max_size=300), st.sampled_from([0, 1]), _edits(), st.booleans())
    def test_keyring_mutated(
        self, plain: bytes, version: int, edits: tuple[Edit, ...], relabel: bool
    ) -> None:
        """
        A sealed payload changed anywhere but its version byte, or opened
        with other associated data, is refused.  The version byte is not
        authenticated (as in memberlist): changed alone, it can only turn
        the plaintext into a padded or unpadded form of itself.
        """
        keyring = Keyring([KEY], random_bytes=fixed_nonces)
        sealed = keyring.encrypt(plain, aad=b"fuzz", version=version)
        changed = edited(sealed, edits)
        aad = b"other" if relabel else b"fuzz"
        try:
            opened = keyring.decrypt(changed, aad)
        except DecryptError:
            return
        self.assertFalse(relabel)
        self.assertEqual(changed[1:], sealed[1:])
        self.assertTrue(opened.startswith(plain) or plain.startswith(opened))

    @FUZZ
    @given(st.sampled_from(packet_seeds("a")), _edits())
    def test_packet_messages(self, seed: bytes, edits: tuple[Edit, ...]) -> None:
        try:
            wire.decode_message(edited(seed, edits))
        except wire.WireError:
            pass

    @FUZZ
    @given(st.integers(0, 3), _edits())
    def test_stream_messages(self, index: int, edits: tuple[Edit, ...]) -> None:
        _, b = two_nodes(Wrapping())
        data = edited(stream_seeds("a", b)[index], edits)
        for decoder in (wire.decode_stream_message, wire.stream_message_length):
            try:
                decoder(data)
            except wire.WireError:
                pass

    @FUZZ
    @given(st.sampled_from(ckit_seeds()) | st.binary(max_size=200), _edits())
    def test_ckit_messages(self, seed: bytes, edits: tuple[Edit, ...]) -> None:
        data = edited(seed, edits)
        for decoder in (decode_state, decode_local_state):
            try:
                decoder(data)
            except MessageError:
                pass


class RandomBytesTests(SynchronousTestCase):
    """
    Random bytes, and valid output with a byte flipped, into the codecs
    one at a time: each raises only its own error, or for sealed payloads
    always raises it.
    """

    @settings(max_examples=300)
    @given(st.binary(max_size=200))
    def test_packet_decoder_random(self, data: bytes) -> None:
        try:
            wire.decode_message(data)
        except wire.WireError:
            pass

    @settings(max_examples=300)
    @given(st.binary(max_size=200))
    def test_stream_decoder_random(self, data: bytes) -> None:
        for fn in (wire.decode_stream_message, wire.stream_message_length):
            try:
                fn(data)
            except wire.WireError:
                pass

    @settings(max_examples=300)
    @given(st.binary(max_size=300))
    def test_packet_codec_random(self, data: bytes) -> None:
        codec = PacketCodec(keyring=None)
        try:
            for part in codec.messages(codec.open(data)):
                try:
                    wire.decode_message(part)
                except wire.WireError:
                    pass
        except FrameError:
            pass

    @settings(max_examples=300)
    @given(st.binary(max_size=300))
    def test_stream_codec_random(self, data: bytes) -> None:
        codec = StreamCodec()
        try:
            length = codec.frame_length(data, accepted=True)
            if length is not None:
                codec.decode(data[:length], accepted=True)
        except FrameError:
            pass

    @given(st.binary(max_size=3000))
    @settings(max_examples=300)
    def test_lzw_random_input(self, data: bytes) -> None:
        """Arbitrary bytes decode or raise L{lzw.LZWError}, nothing else."""
        try:
            result = lzw.decompress(data, max_output=1_000_000)
        except lzw.LZWError:
            return
        self.assertIsInstance(result, bytes)

    @given(
        st.binary(min_size=1, max_size=2000),
        st.integers(min_value=0),
        st.integers(min_value=1, max_value=255),
    )
    @settings(max_examples=300)
    def test_lzw_corrupted_stream(self, data: bytes, where: int, flip: int) -> None:
        """A valid stream with one byte altered decodes or raises L{lzw.LZWError}."""
        stream = bytearray(lzw.compress(data))
        stream[where % len(stream)] ^= flip
        try:
            lzw.decompress(bytes(stream))
        except lzw.LZWError:
            pass

    @given(st.binary(max_size=200))
    @settings(max_examples=300)
    def test_keyring_garbage(self, data: bytes) -> None:
        """Arbitrary bytes raise L{DecryptError} and nothing else."""
        self.assertRaises(DecryptError, Keyring([K16, K32]).decrypt, data)

    @given(
        st.binary(max_size=300),
        st.sampled_from([0, 1]),
        st.integers(min_value=0),
        st.integers(min_value=1, max_value=255),
    )
    @settings(max_examples=200)
    def test_keyring_tampered(
        self, msg: bytes, version: int, where: int, flip: int
    ) -> None:
        """Any altered byte after the version byte breaks authentication."""
        keyring = Keyring([K32])
        sealed = bytearray(keyring.encrypt(msg, version=version))
        index = 1 + where % (len(sealed) - 1)
        sealed[index] ^= flip
        self.assertRaises(DecryptError, keyring.decrypt, bytes(sealed))


class NodeDelegateTests(SynchronousTestCase):
    """
    What ckit's delegate does with any user message or push/pull state it
    is handed: count it, and change nothing unless it is ckit's.
    """

    @FUZZ
    @given(
        st.sampled_from(ckit_seeds()) | st.binary(max_size=200), _edits(), st.booleans()
    )
    def test_any_gossip(self, seed: bytes, edits: tuple[Edit, ...], join: bool) -> None:
        a, _ = two_nodes(Wrapping())
        delegate = a.memberlist.config.delegate
        assert delegate is not None
        data = edited(seed, edits)
        peers, events = a.peers(), a.counters.snapshot()
        delegate.notify_msg(data)
        grown = a.counters - events
        if is_ckit_state(data):
            self.assertEqual(grown.received.state_change_message, 1)
        else:
            only_unknown = NodeCounters(received=ReceivedEvents(unknown_message=1))
            self.assertEqual(grown, only_unknown)
            self.assertEqual(a.peers(), peers)

        events = a.counters.snapshot()
        delegate.merge_remote_state(data, join)
        grown = a.counters - events
        self.assertEqual(grown.received.merge_remote_state, 1)
        try:
            decode_local_state(data)
        except MessageError:
            self.assertEqual(grown.states.unknown_state, 1)
            self.assertEqual(a.peers(), peers)


# --- Serf's messages ---


def serf_seeds() -> list[bytes]:
    """
    One of every Serf message, as our encoder writes it, and every one
    real agents sent (C{tests/data/serf-messages.json}).
    """
    return [serf.encode_message(m) for m, _ in HAND_BUILT] + list(captured().values())


def serf_filter_seeds() -> list[bytes]:
    """
    One of every query filter, and those of the captured queries.
    """
    seeds = [serf.encode_filter(f) for f, _ in FILTERS]
    for data in captured().values():
        message = serf.decode_message(data)
        if isinstance(message, serf.Query):
            seeds.extend(message.filters)
    return seeds


def serf_bodies() -> st.SearchStrategy[object]:
    """
    msgpack values shaped like Serf's structs: maps keyed by the Go names
    Serf uses, holding values of any type, at any depth.
    """
    names = [
        "LTime", "Node", "Prune", "StatusLTimes", "LeftMembers", "EventLTime",
        "Events", "QueryLTime", "Name", "Payload", "CC", "ID", "Addr", "Port",
        "SourceNode", "Filters", "Flags", "RelayFactor", "Timeout", "From",
        "Key", "Result", "Message", "Keys", "PrimaryKey", "Tags", "Status",
        "ProtocolMax", "DestAddr", "DestName", "IP", "Zone", "Tag", "Expr",
    ]  # fmt: skip
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(1 << 63), (1 << 64) - 1)
        | st.floats(allow_nan=False)
        | st.binary(max_size=20)
        | st.sampled_from([b"\x7f\x00\x00\x01", b"", b"\xff"])
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(names).map(str.encode), inner, max_size=6)
            | st.dictionaries(st.binary(max_size=4), inner, max_size=2)
        ),
        max_leaves=20,
    )


class SerfDecoderTests(SynchronousTestCase):
    """
    Serf's message and filter decoders raise only L{serf.MessageError}, on
    any input; whatever they accept encodes and decodes back to itself.
    """

    def assert_decodes_or_refuses(self, data: bytes) -> None:
        """
        C{data} is a Serf message, which survives a round trip, or is
        refused with a known reason.
        """
        try:
            message = serf.decode_message(data)
        except serf.MessageError as e:
            self.assertIn(e.reason, (serf.UNKNOWN_TYPE, serf.MALFORMED))
            return
        again = serf.encode_message(message)
        self.assertEqual(serf.decode_message(again), message)
        self.assertEqual(serf.encode_message(serf.decode_message(again)), again)

    def assert_filter_decodes_or_refuses(self, data: bytes) -> None:
        try:
            query_filter = serf.decode_filter(data)
        except serf.MessageError as e:
            self.assertIn(e.reason, (serf.UNKNOWN_TYPE, serf.MALFORMED))
            return
        self.assertEqual(
            serf.decode_filter(serf.encode_filter(query_filter)), query_filter
        )

    @FUZZ
    @given(st.binary(max_size=600))
    def test_random(self, data: bytes) -> None:
        self.assert_decodes_or_refuses(data)
        self.assert_filter_decodes_or_refuses(data)

    @FUZZ
    @given(st.integers(0, 10), st.binary(max_size=300))
    def test_random_bodies(self, kind: int, body: bytes) -> None:
        """
        Random bytes behind every type byte (and one unknown).
        """
        self.assert_decodes_or_refuses(bytes([kind]) + body)
        self.assert_filter_decodes_or_refuses(bytes([kind % 3]) + body)

    @settings(max_examples=400)
    @given(st.integers(0, 10), serf_bodies(), st.binary(max_size=8))
    def test_struct_shaped_bodies(self, kind: int, body: object, tail: bytes) -> None:
        """
        Valid msgpack with the right keys and wrong values reaches every
        field's reader.
        """
        packed = pack(body)  # type: ignore[arg-type]
        self.assert_decodes_or_refuses(bytes([kind]) + packed + tail)
        self.assert_filter_decodes_or_refuses(bytes([kind % 3]) + packed)

    @FUZZ
    @given(st.sampled_from(serf_seeds()), _edits())
    def test_mutated(self, seed: bytes, edits: tuple[Edit, ...]) -> None:
        self.assert_decodes_or_refuses(edited(seed, edits))

    @FUZZ
    @given(serf_messages(), _edits())
    def test_mutated_well_formed(
        self, message: serf.SerfMessage, edits: tuple[Edit, ...]
    ) -> None:
        """
        Mutations of messages with every field drawn over its range.
        """
        data = serf.encode_message(message)
        self.assertEqual(serf.decode_message(data), message)
        self.assert_decodes_or_refuses(edited(data, edits))

    @FUZZ
    @given(
        st.sampled_from(serf_filter_seeds()) | query_filters().map(serf.encode_filter),
        _edits(),
    )
    def test_mutated_filters(self, seed: bytes, edits: tuple[Edit, ...]) -> None:
        self.assert_filter_decodes_or_refuses(edited(seed, edits))

    def test_mutated_in_bulk(self) -> None:
        """
        Many more mutations of every seed than the examples above, from a
        fixed seed.
        """
        rng = random.Random("serf messages")
        seeds = serf_seeds()
        filters = serf_filter_seeds()
        for _ in range(BULK * 3):
            edits = tuple(
                Edit(
                    rng.choice(EDIT_KINDS),
                    rng.randrange(16) if rng.random() < 0.6 else rng.randrange(1 << 16),
                    rng.randrange(1 << 16),
                )
                for _ in range(rng.randint(1, 3))
            )
            self.assert_decodes_or_refuses(edited(rng.choice(seeds), edits))
            self.assert_filter_decodes_or_refuses(edited(rng.choice(filters), edits))


class SerfPacketTests(ReceiverChecks, InputFuzzing):
    """
    Serf's messages as they reach a ckit member: memberlist user messages
    in datagrams under every wrapping.  The member counts them as unknown
    and changes nothing; what it hands its delegate is a Serf message or
    refused by Serf's decoder with its own error.
    """

    inputs = "serf datagrams"
    stream = False
    seed_count = len(serf_seeds())
    most = 8

    def seeds(self, a: Node, b: Node) -> list[bytes]:
        return [wire.encode_message(wire.User(s)) for s in serf_seeds()]

    def make(self, recipe: Recipe, seeds: Sequence[bytes], node: Node) -> bytes:
        return recipe.packet(seeds, node.memberlist.receiver.packets)

    def deliver(self, node: Node, data: bytes) -> Opened:
        opened = self.receive_packet(node, data)
        for message in opened.messages:
            if isinstance(message, wire.User) and message.payload:
                try:
                    serf.decode_message(message.payload)
                except serf.MessageError:
                    pass
        return opened

    test_random_inputs, test_mutated_inputs = fuzzing_examples()

    def test_valid_serf_messages_arrive_whole(self) -> None:
        """
        Every Serf message a sender configured alike sends reaches the
        member's delegate as it was sent, with nothing dropped.
        """
        for wrapping in every_wrapping():
            a, _ = two_nodes(wrapping)
            codec = a.memberlist.receiver.packets
            counted = a.memberlist.counters.snapshot()
            for payload, crc in itertools.product(serf_seeds(), (False, True)):
                message = wire.encode_message(wire.User(payload))
                for packet in codec.encode([message], crc):
                    opened = self.deliver(a, packet)
                    self.assertEqual(opened.messages, [wire.User(payload)])
            growth = a.memberlist.counters - counted
            self.assertEqual(growth.dropped, Counter())


# --- a real member under a flood ---

FLOOD = 100_000
# Bad datagrams in flight at once: kept well under what a default socket
# receive buffer holds (212,992 bytes on Linux, ~1 KiB of it per small
# datagram), so that pacing, not the kernel, decides what arrives.
WINDOW = 64
# A raw ping goes out after this many bad datagrams.
PING_EVERY = 10_000
# Seconds without a datagram read after which those unread count as lost.
STALL = 1.0


def bad_packets(codec: PacketCodec, target: str, count: int, seed: int) -> list[bytes]:
    """
    C{count} datagrams that C{codec} refuses whole, half random bytes and
    half mutated valid traffic, drawn from C{seed}.
    """
    rng = random.Random(seed)
    seeds = packet_seeds(target)
    packets: list[bytes] = []
    while len(packets) < count:
        if rng.random() < 0.5:
            size = rng.choice((rng.randrange(1, 64), rng.randrange(64, 1400)))
            packet = rng.randbytes(size)
        else:
            packet = random_recipe(rng, len(seeds)).packet(seeds, codec)
        opened = codec.decode(packet)
        if opened.errors and not opened.messages:
            packets.append(packet)
    return packets
