"""
Tests for L{cluster.serf.messages}: Serf's messages byte for byte.

Three kinds of evidence:

  - bytes written here by hand from the msgpack spec and Serf's Go structs
    (field names from C{serf/messages.go}, C{serf.go}, C{keymanager.go} and
    C{internal_query.go}; keys in ascending order, strings and []byte as
    legacy raw strings, C{nil} for a nil slice or pointer: C{shared/WIRE.md}
    sections 2 and 8), compared with what we encode and decoded back;
  - bytes real Serf agents sent, captured by
    L{tests.integration.test_serf_messages} into
    C{tests/data/serf-messages.json}: each decodes to what the agent meant
    and encodes back to the agent's bytes;
  - round trips of every well-formed message (L{serf_messages}), and the
    decoder's leniency and refusals, which follow Go's decoder.

L{tests.unit.test_fuzz} feeds the decoders random and mutated input.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from cluster.gossip.codec import pack, unpack
from cluster.gossip.serf import SERF_JOIN, SERF_LEAVE, SERF_PUSH_PULL
from cluster.serf.messages import (
    MALFORMED,
    UNKNOWN_TYPE,
    BufferedEvent,
    BufferedEvents,
    ConflictResponse,
    FilterType,
    JoinIntent,
    KeyRequest,
    KeyResponse,
    LeaveIntent,
    MemberStatus,
    MessageError,
    MessageType,
    NodeFilter,
    PushPull,
    Query,
    QueryFilter,
    QueryFlag,
    QueryResponse,
    Relay,
    SerfMember,
    SerfMessage,
    TagFilter,
    UDPAddress,
    UserEvent,
    decode_filter,
    decode_message,
    decode_typed,
    encode_filter,
    encode_message,
)

FIXTURES = Path(__file__).parent.parent / "data" / "serf-messages.json"
LOCALHOST = bytes([127, 0, 0, 1])


def spec(text: str) -> bytes:
    """
    Bytes written by hand: hex digits, and C{'text'} for the ASCII bytes of
    a string's content (its length byte stays written in hex); spaces,
    line breaks and C{# comments} are ignored.
    """
    out = bytearray()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for hex_digits, ascii_text in re.findall(r"([0-9a-fA-F]+)|'([^']*)'", line):
            out += bytes.fromhex(hex_digits) if hex_digits else ascii_text.encode()
    return bytes(out)


def captured() -> dict[str, bytes]:
    """
    The messages real agents sent, by what made them send it.
    """
    with FIXTURES.open() as f:
        fixtures = json.load(f)
    return {label: bytes.fromhex(text) for label, text in fixtures["messages"].items()}


def canonical(data: bytes) -> bytes:
    """
    A Serf message's bytes with every map in ascending key order: Go
    writes the entries of a map (not a struct) in random order.
    """

    def sort(value: object) -> object:
        if isinstance(value, dict):
            return {k: sort(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return [sort(v) for v in value]
        return value

    return data[:1] + pack(sort(unpack(data[1:])))  # type: ignore[arg-type]


# --- well-formed messages of every kind, for round trips and fuzzing ---

_u8 = st.integers(0, 0xFF)
_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)
_u64 = st.integers(0, (1 << 64) - 1)
_texts = st.text(max_size=12)
_blobs = st.binary(max_size=24)
_optional_blobs = st.none() | _blobs
_ips = st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16)


def query_filters() -> st.SearchStrategy[QueryFilter]:
    """
    Every kind of query filter.
    """
    nodes = st.lists(_texts, max_size=3).map(tuple)
    return st.builds(NodeFilter, nodes) | st.builds(TagFilter, tag=_texts, expr=_texts)


def serf_messages() -> st.SearchStrategy[SerfMessage]:
    """
    Every kind of Serf message, with every field over its whole range.
    """
    buffered = st.builds(BufferedEvent, name=_texts, payload=_optional_blobs)
    slot = st.builds(
        BufferedEvents, ltime=_u64, events=st.lists(buffered, max_size=3).map(tuple)
    )
    member = st.builds(
        SerfMember,
        name=_texts,
        addr=_blobs,
        port=_u16,
        tags=st.dictionaries(_texts, _texts, max_size=3),
        status=st.sampled_from(MemberStatus),
        protocol_min=_u8,
        protocol_max=_u8,
        protocol_cur=_u8,
        delegate_min=_u8,
        delegate_max=_u8,
        delegate_cur=_u8,
    )
    # A filter nobody can read is still part of a well-formed query.
    filters = query_filters().map(encode_filter) | _blobs
    return st.one_of(
        st.builds(LeaveIntent, _u64, _texts, st.booleans()),
        st.builds(JoinIntent, _u64, _texts),
        st.builds(
            PushPull,
            ltime=_u64,
            status_ltimes=st.dictionaries(_texts, _u64, max_size=4),
            left_members=st.lists(_texts, max_size=3).map(tuple),
            event_ltime=_u64,
            events=st.lists(st.none() | slot, max_size=5).map(tuple),
            query_ltime=_u64,
        ),
        st.builds(
            UserEvent,
            ltime=_u64,
            name=_texts,
            payload=_optional_blobs,
            cc=st.booleans(),
        ),
        st.builds(
            Query,
            ltime=_u64,
            id=_u32,
            addr=_ips,
            port=_u16,
            source_node=_texts,
            filters=st.lists(filters, max_size=3).map(tuple),
            flags=_u32,
            relay_factor=_u8,
            timeout=st.integers(-(1 << 63), (1 << 63) - 1),
            name=_texts,
            payload=_optional_blobs,
        ),
        st.builds(
            QueryResponse,
            ltime=_u64,
            id=_u32,
            from_=_texts,
            flags=_u32,
            payload=_optional_blobs,
        ),
        st.builds(ConflictResponse, st.none() | member),
        st.builds(KeyRequest, _blobs),
        st.builds(
            KeyResponse,
            result=st.booleans(),
            message=_texts,
            keys=st.lists(_texts, max_size=3).map(tuple),
            primary_key=_texts,
        ),
        st.builds(
            Relay,
            dest_addr=st.builds(UDPAddress, ip=_ips, port=_u16, zone=_texts),
            dest_name=_texts,
            message=st.binary(min_size=1, max_size=40),
        ),
    )


# --- hand-built bytes ---

ACK = QueryResponse(ltime=1, id=2, from_="serf-0", flags=QueryFlag.ACK, payload=None)
ACK_BYTES = spec(
    """
    05                          # messageQueryResponseType
    85                          # fixmap, 5 fields in ascending order
    a5 'Flags'  01              # uint32 queryFlagAck
    a4 'From'  a6 'serf-0'
    a2 'ID'  02
    a5 'LTime'  01
    a7 'Payload'  c0            # nil []byte: an ack carries none
    """
)
SERF_1 = SerfMember(
    name="serf-1",
    addr=LOCALHOST,
    port=26386,
    tags={"role": "web"},
    status=MemberStatus.ALIVE,
    protocol_min=1,
    protocol_max=5,
    protocol_cur=2,
    delegate_min=2,
    delegate_max=5,
    delegate_cur=5,
)
KEY_REFUSED = "key size must be 16, 24 or 32 bytes"

# What we encode, and the bytes Serf sends for it, for every message.
HAND_BUILT: list[tuple[SerfMessage, bytes]] = [
    (
        LeaveIntent(2, "serf-1", False),
        spec(
            """
            00                              # messageLeaveType
            83                              # fixmap, 3 fields
            a5 'LTime'  02                  # LamportTime (uint64)
            a4 'Node'  a6 'serf-1'
            a5 'Prune'  c2                  # false
            """
        ),
    ),
    (
        JoinIntent(1, "serf-1"),
        spec("01  82  a5 'LTime' 01  a4 'Node' a6 'serf-1'"),
    ),
    (
        UserEvent(ltime=1, name="deploy", payload=b"v42", cc=True),
        spec(
            """
            03                              # messageUserEventType
            84
            a2 'CC'  c3                     # "can coalesce": true
            a5 'LTime'  01
            a4 'Name'  a6 'deploy'
            a7 'Payload'  a3 'v42'          # []byte as a raw string
            """
        ),
    ),
    (
        PushPull(
            ltime=5,
            status_ltimes={"a": 3},
            left_members=("x",),
            event_ltime=2,
            events=(
                None,
                BufferedEvents(
                    ltime=1, events=(BufferedEvent(name="d", payload=b"v"),)
                ),
            ),
            query_ltime=300,
        ),
        spec(
            """
            02                              # messagePushPullType
            86
            aa 'EventLTime'  02
            a6 'Events'  92                 # []*userEvents, 2 slots
                c0                          #   a nil slot
                82  a6 'Events'  91         #   userEvents: []userEvent
                        82  a4 'Name' a1 'd'  a7 'Payload' a1 'v'
                    a5 'LTime'  01
            a5 'LTime'  05
            ab 'LeftMembers'  91  a1 'x'
            aa 'QueryLTime'  cd 012c        # uint16 300
            ac 'StatusLTimes'  81  a1 'a' 03
            """
        ),
    ),
    (
        Query(
            ltime=7,
            id=70000,
            addr=LOCALHOST,
            port=7946,
            source_node="py",
            filters=(
                encode_filter(NodeFilter(("a",))),
                encode_filter(TagFilter(tag="role", expr="^web$")),
            ),
            flags=QueryFlag.ACK | QueryFlag.NO_BROADCAST,
            relay_factor=2,
            timeout=15_000_000_000,
            name="greet",
            payload=None,
        ),
        spec(
            """
            04                              # messageQueryType
            8b                              # 11 fields
            a4 'Addr'  a4 7f000001          # []byte: 127.0.0.1
            a7 'Filters'  92                # [][]byte
                a4  00 91 a1 'a'            #   filterNodeType, ["a"]
                b6  01 82 a4 'Expr' a5 '^web$' a3 'Tag' a4 'role'
            a5 'Flags'  03                  # ack | noBroadcast
            a2 'ID'  ce 00011170            # uint32 70000
            a5 'LTime'  07
            a4 'Name'  a5 'greet'
            a7 'Payload'  c0                # nil
            a4 'Port'  cd 1f0a              # uint16 7946
            ab 'RelayFactor'  02            # uint8
            aa 'SourceNode'  a2 'py'
            a7 'Timeout'  cf 000000037e11d600  # time.Duration, 15 s in ns
            """
        ),
    ),
    (ACK, ACK_BYTES),
    (
        ConflictResponse(SERF_1),
        spec(
            """
            06                              # messageConflictResponseType
            8b                              # serf.go Member, 11 fields
            a4 'Addr'  a4 7f000001          # net.IP
            ab 'DelegateCur'  05
            ab 'DelegateMax'  05
            ab 'DelegateMin'  02
            a4 'Name'  a6 'serf-1'
            a4 'Port'  cd 6712
            ab 'ProtocolCur'  02
            ab 'ProtocolMax'  05
            ab 'ProtocolMin'  01
            a6 'Status'  01                 # StatusAlive
            a4 'Tags'  81  a4 'role' a3 'web'
            """
        ),
    ),
    (ConflictResponse(None), spec("06 c0")),  # a nil *Member: unknown name
    (KeyRequest(b""), spec("07  81  a3 'Key' a0")),  # empty, not nil: list keys
    (
        KeyRequest(bytes(range(1, 17))),
        spec("07  81  a3 'Key'  b0 0102030405060708090a0b0c0d0e0f10"),
    ),
    (
        KeyResponse(result=False, message=KEY_REFUSED, keys=(), primary_key=""),
        spec(
            """
            08                              # messageKeyResponseType
            84                              # nodeKeyResponse
            a4 'Keys'  c0                   # nil []string
            a7 'Message'  da 0023 'key size must be 16, 24 or 32 bytes'
                                            # 35 bytes: str16, never str8
            aa 'PrimaryKey'  a0
            a6 'Result'  c2
            """
        ),
    ),
    (
        KeyResponse(
            result=True,
            message="",
            keys=("AQIDBAUGBwgJCgsMDQ4PEA==",),
            primary_key="AQIDBAUGBwgJCgsMDQ4PEA==",
        ),
        spec(
            """
            08  84
            a4 'Keys'  91  b8 'AQIDBAUGBwgJCgsMDQ4PEA=='
            a7 'Message'  a0
            aa 'PrimaryKey'  b8 'AQIDBAUGBwgJCgsMDQ4PEA=='
            a6 'Result'  c3
            """
        ),
    ),
    (
        Relay(
            dest_addr=UDPAddress(ip=LOCALHOST, port=7946),
            dest_name="py-0",
            message=ACK_BYTES,
        ),
        spec(
            """
            09                              # messageRelayType
            82                              # relayHeader
            a8 'DestAddr'  83               # net.UDPAddr
                a2 'IP'  a4 7f000001
                a4 'Port'  cd 1f0a          # a Go int
                a4 'Zone'  a0
            a8 'DestName'  a4 'py-0'
            """
        )
        + ACK_BYTES,  # the relayed message, as it is
    ),
]

FILTERS: list[tuple[QueryFilter, bytes]] = [
    (NodeFilter(("a", "b")), spec("00  92 a1 'a' a1 'b'")),  # filterNode []string
    (NodeFilter(()), spec("00 90")),
    (
        TagFilter(tag="role", expr="^web$"),
        spec("01  82  a4 'Expr' a5 '^web$'  a3 'Tag' a4 'role'"),
    ),
]


class TypeTests(SynchronousTestCase):
    def test_numbers_follow_serf(self) -> None:
        """
        The type bytes are Go's C{iota} order in messages.go, and the
        membership layer's constants agree.
        """
        self.assertEqual(
            [t.name for t in MessageType],
            [
                "LEAVE",
                "JOIN",
                "PUSH_PULL",
                "USER_EVENT",
                "QUERY",
                "QUERY_RESPONSE",
                "CONFLICT_RESPONSE",
                "KEY_REQUEST",
                "KEY_RESPONSE",
                "RELAY",
            ],
        )
        self.assertEqual(list(MessageType), list(range(10)))
        self.assertEqual(
            (MessageType.LEAVE, MessageType.JOIN, MessageType.PUSH_PULL),
            (SERF_LEAVE, SERF_JOIN, SERF_PUSH_PULL),
        )
        self.assertEqual((QueryFlag.ACK, QueryFlag.NO_BROADCAST), (1, 2))
        self.assertEqual((FilterType.NODE, FilterType.TAG), (0, 1))
        self.assertEqual(
            [s.name for s in MemberStatus],
            ["NONE", "ALIVE", "LEAVING", "LEFT", "FAILED"],
        )

    def test_every_type_has_an_example(self) -> None:
        """
        The hand-built examples cover every message type.
        """
        types = {message[0] for _, message in HAND_BUILT}
        self.assertEqual(types, set(MessageType))


class HandBuiltTests(SynchronousTestCase):
    def test_encode(self) -> None:
        for message, expected in HAND_BUILT:
            self.assertEqual(encode_message(message), expected, message)

    def test_decode(self) -> None:
        for message, data in HAND_BUILT:
            self.assertEqual(decode_message(data), message)

    def test_filters(self) -> None:
        for query_filter, data in FILTERS:
            self.assertEqual(encode_filter(query_filter), data)
            self.assertEqual(decode_filter(data), query_filter)

    def test_flags(self) -> None:
        query = decode_typed(
            Query, next(data for m, data in HAND_BUILT if isinstance(m, Query))
        )
        self.assertEqual((query.ack, query.no_broadcast), (True, True))
        self.assertEqual(
            [decode_filter(f) for f in query.filters],
            [NodeFilter(("a",)), TagFilter(tag="role", expr="^web$")],
        )
        self.assertTrue(ACK.ack)
        answer = QueryResponse(ltime=1, id=2, from_="a", flags=0, payload=b"x")
        self.assertFalse(answer.ack)

    def test_empty_slices_go_out_as_go_sends_them(self) -> None:
        """
        Serf leaves a query's filters and a key response's keys nil when
        it has none, but always makes the push/pull's left members and
        status times: C{nil} for the former, empty containers for the
        latter.
        """
        empty = PushPull(ltime=0, event_ltime=0, query_ltime=0)
        self.assertEqual(
            unpack(encode_message(empty)[1:]),
            {
                b"EventLTime": 0,
                b"Events": [],
                b"LTime": 0,
                b"LeftMembers": [],
                b"QueryLTime": 0,
                b"StatusLTimes": {},
            },
        )
        query = Query(
            ltime=0,
            id=0,
            addr=LOCALHOST,
            port=0,
            source_node="",
            flags=0,
            relay_factor=0,
            name="",
            payload=None,
        )
        body = unpack(encode_message(query)[1:])
        assert isinstance(body, dict)
        self.assertIsNone(body[b"Filters"])


class CapturedTests(SynchronousTestCase):
    """
    Bytes real agents sent (C{tests/data/serf-messages.json}).
    """

    def test_every_capture_round_trips(self) -> None:
        """
        Every captured message decodes, and encodes back to the agent's
        bytes: exactly, but for the order of a Go map's entries.
        """
        fixtures = captured()
        self.assertEqual(len(fixtures), 20)
        kinds = set()
        for label, data in fixtures.items():
            message = decode_message(data)
            kinds.add(data[0])
            again = encode_message(message)
            self.assertEqual(canonical(again), canonical(data), label)
            if not isinstance(message, PushPull):  # the only multi-entry maps
                self.assertEqual(again, data, label)
        # The other three travel inside queries and their answers.
        inside = {
            MessageType.CONFLICT_RESPONSE,
            MessageType.KEY_REQUEST,
            MessageType.KEY_RESPONSE,
        }
        self.assertEqual(kinds, set(MessageType) - inside)

    def test_intents(self) -> None:
        fixtures = captured()
        self.assertEqual(
            decode_message(fixtures["join intent: serf-1 joins"]),
            JoinIntent(1, "serf-1"),
        )
        self.assertEqual(
            decode_message(fixtures["leave intent: serf leave on serf-1"]),
            LeaveIntent(2, "serf-1", False),
        )
        self.assertEqual(
            decode_message(fixtures["leave intent: serf force-leave -prune serf-2"]),
            LeaveIntent(3, "serf-2", True),
        )

    def test_events(self) -> None:
        fixtures = captured()
        self.assertEqual(
            decode_message(fixtures["user event: serf event deploy v42"]),
            UserEvent(ltime=1, name="deploy", payload=b"v42", cc=True),
        )
        # No payload on the command line: a nil one on the wire.
        self.assertEqual(
            decode_message(fixtures["user event: serf event -coalesce=false flush"]),
            UserEvent(ltime=2, name="flush", payload=None, cc=False),
        )

    def test_cli_queries(self) -> None:
        fixtures = captured()
        greet = decode_typed(
            Query,
            fixtures[
                "query: serf query -timeout=1s -node=py-0 -tag=role=^web$ greet hi"
            ],
        )
        self.assertEqual(
            (greet.ltime, greet.addr, greet.source_node, greet.name, greet.payload),
            (1, LOCALHOST, "serf-0", "greet", b"hi"),
        )
        self.assertEqual(
            [decode_filter(f) for f in greet.filters],
            [NodeFilter(("py-0",)), TagFilter(tag="role", expr="^web$")],
        )
        self.assertEqual((greet.flags, greet.relay_factor), (QueryFlag.ACK, 0))
        self.assertEqual(greet.timeout, 1_000_000_000)

        quiet = decode_typed(
            Query,
            fixtures["query: serf query -timeout=1s -no-ack -relay-factor=1 quiet"],
        )
        self.assertEqual(
            (quiet.filters, quiet.flags, quiet.relay_factor, quiet.payload),
            ((), 0, 1, None),
        )

        ping = decode_typed(Query, fixtures["query: serf reachability"])
        self.assertEqual(
            (ping.name, ping.ack, ping.payload), ("_serf_ping", True, None)
        )

        listing = decode_typed(Query, fixtures["query: serf keys -list"])
        self.assertEqual(listing.name, "_serf_list-keys")
        self.assertEqual(
            decode_typed(KeyRequest, listing.payload or b""), KeyRequest(b"")
        )
        install = decode_typed(
            Query, fixtures["query: serf keys -install (32-byte key 0x21..0x40)"]
        )
        self.assertEqual(install.name, "_serf_install-key")
        self.assertEqual(
            decode_typed(KeyRequest, install.payload or b""),
            KeyRequest(bytes(range(0x21, 0x41))),
        )

    def test_answers(self) -> None:
        fixtures = captured()
        ack = decode_message(fixtures["query response: serf-0 acknowledges"])
        self.assertEqual(
            ack,
            QueryResponse(
                ltime=1, id=1, from_="serf-0", flags=QueryFlag.ACK, payload=None
            ),
        )
        answer = decode_message(
            fixtures["query response: serf-0's handler answers greet"]
        )
        self.assertEqual(
            answer,
            QueryResponse(ltime=1, id=1, from_="serf-0", flags=0, payload=b"hello\n"),
        )

        def payload(label: str) -> bytes:
            return decode_typed(QueryResponse, fixtures[label]).payload or b""

        member = decode_typed(
            ConflictResponse,
            payload("query response: serf-0 answers _serf_conflict about serf-1"),
        ).member
        assert member is not None
        self.assertEqual(
            (member.name, member.addr, member.tags, member.status),
            ("serf-1", LOCALHOST, {}, MemberStatus.ALIVE),
        )
        self.assertEqual(
            (member.protocol_min, member.protocol_max, member.protocol_cur),
            (1, 5, 2),
        )
        self.assertEqual(
            (member.delegate_min, member.delegate_max, member.delegate_cur),
            (2, 5, 5),
        )
        nobody = payload(
            "query response: serf-0 answers _serf_conflict about an unknown name"
        )
        self.assertEqual(decode_typed(ConflictResponse, nobody), ConflictResponse(None))

        key = base64.b64encode(bytes(range(1, 17))).decode()
        extra = base64.b64encode(bytes(range(0x21, 0x41))).decode()
        listed = decode_typed(
            KeyResponse, payload("query response: serf-0 answers _serf_list-keys")
        )
        self.assertEqual(
            listed,
            KeyResponse(result=True, message="", keys=(key, extra), primary_key=key),
        )
        refused = decode_typed(
            KeyResponse,
            payload("query response: serf-0 refuses _serf_install-key of a 5-byte key"),
        )
        self.assertEqual(
            refused,
            KeyResponse(result=False, message=KEY_REFUSED, keys=(), primary_key=""),
        )

    def test_relays(self) -> None:
        fixtures = captured()
        answer = decode_typed(
            Relay, fixtures["relay: serf-0 relays its answer to py-0 through py-0"]
        )
        self.assertEqual(answer.dest_addr.ip, LOCALHOST)
        self.assertEqual((answer.dest_addr.zone, answer.dest_name), ("", "py-0"))
        self.assertEqual(
            decode_message(answer.message),
            QueryResponse(ltime=1, id=3, from_="serf-0", flags=0, payload=b"hello\n"),
        )
        ack = decode_typed(
            Relay, fixtures["relay: serf-1 relays its acknowledgement through py-0"]
        )
        self.assertEqual(
            decode_message(ack.message),
            QueryResponse(ltime=1, id=3, from_="serf-1", flags=1, payload=None),
        )

    def test_push_pull_states(self) -> None:
        fixtures = captured()
        first = decode_typed(
            PushPull, fixtures["push/pull state: serf-0's, when py-0 joins"]
        )
        self.assertEqual(
            first,
            PushPull(
                ltime=1,
                status_ltimes={"serf-0": 0},
                left_members=(),
                event_ltime=1,
                events=(None,) * 512,
                query_ltime=1,
            ),
        )
        later = decode_typed(
            PushPull,
            fixtures["push/pull state: serf-0's, with events, one member left"],
        )
        self.assertEqual(later.left_members, ("serf-1",))
        self.assertEqual(later.status_ltimes["serf-1"], 2)
        self.assertEqual((later.ltime, later.event_ltime), (4, 3))
        self.assertEqual(len(later.events), 512)
        slots = {slot.ltime: slot.events for slot in later.events if slot is not None}
        self.assertEqual(
            slots,
            {
                1: (
                    BufferedEvent(name="deploy", payload=b"v42"),
                    BufferedEvent(name="py-event", payload=b"from python"),
                ),
                2: (BufferedEvent(name="flush", payload=None),),
            },
        )
        # Each slot sits at its LTime modulo the buffer's size.
        self.assertEqual([i for i, slot in enumerate(later.events) if slot], [1, 2])


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(serf_messages())
    def test_messages(self, message: SerfMessage) -> None:
        data = encode_message(message)
        self.assertEqual(decode_message(data), message)
        self.assertEqual(encode_message(decode_message(data)), data)

    @settings(max_examples=100)
    @given(query_filters())
    def test_filters(self, query_filter: QueryFilter) -> None:
        data = encode_filter(query_filter)
        self.assertEqual(decode_filter(data), query_filter)
        self.assertEqual(encode_filter(decode_filter(data)), data)


class LenientTests(SynchronousTestCase):
    """
    What Go's decoder accepts, we accept the same way.
    """

    def test_unknown_keys_are_ignored(self) -> None:
        data = spec("01  83  a5 'Extra' 91 c0  a5 'LTime' 01  a4 'Node' a1 'x'")
        self.assertEqual(decode_message(data), JoinIntent(1, "x"))

    def test_missing_keys_and_nil_are_zero(self) -> None:
        self.assertEqual(
            decode_message(spec("01 81 a4 'Node' a1 'x'")), JoinIntent(0, "x")
        )
        self.assertEqual(
            decode_message(spec("03 82 a4 'Name' c0 a2 'CC' c0")),
            UserEvent(ltime=0, name="", payload=None, cc=False),
        )
        self.assertEqual(
            decode_message(
                spec("02 83 a6 'Events' c0 ab 'LeftMembers' c0 a5 'LTime' c0")
            ),
            PushPull(ltime=0, event_ltime=0, query_ltime=0),
        )
        self.assertEqual(
            decode_message(spec("08 80")),
            KeyResponse(result=False, message="", keys=(), primary_key=""),
        )

    def test_nil_entries_are_zero(self) -> None:
        """
        A nil in a []string or [][]byte is the zero value; in a []*T it
        stays nil, in a []T it is T's zero value; in a map, the value's.
        """
        pushed = decode_typed(
            PushPull,
            spec(
                """
                02 83
                a6 'Events'  92 c0  81 a6 'Events' 91 c0
                ab 'LeftMembers'  91 c0
                ac 'StatusLTimes'  81 a1 'a' c0
                """
            ),
        )
        self.assertEqual(
            pushed.events,
            (
                None,
                BufferedEvents(ltime=0, events=(BufferedEvent(name="", payload=None),)),
            ),
        )
        self.assertEqual(pushed.left_members, ("",))
        self.assertEqual(pushed.status_ltimes, {"a": 0})
        query = decode_typed(
            Query, spec("04 82 a4 'Addr' a4 7f000001 a7 'Filters' 91 c0")
        )
        self.assertEqual(query.filters, (b"",))
        self.assertEqual(decode_filter(spec("00 c0")), NodeFilter(()))

    def test_any_integer_form(self) -> None:
        """
        go-msgpack v2 writes a signed Go integer over 127 in a signed form
        (C{d1}, C{d3}), and any form of any width is read if it fits.
        """
        relayed = decode_typed(
            Relay,
            spec(
                """
                09 82
                a8 'DestAddr' 82 a2 'IP' a4 7f000001  a4 'Port' d1 1f0a
                a8 'DestName' a1 'p'
                05 80
                """
            ),
        )
        self.assertEqual(relayed.dest_addr, UDPAddress(ip=LOCALHOST, port=7946))
        self.assertEqual(relayed.message, spec("05 80"))
        query = decode_typed(
            Query,
            spec(
                """
                04 84 a4 'Addr' a4 7f000001
                a7 'Timeout' d3 000000037e11d600
                a5 'LTime' cf 0000000000000001
                a2 'ID' cd 0001
                """
            ),
        )
        self.assertEqual((query.timeout, query.ltime, query.id), (15_000_000_000, 1, 1))

    def test_negative_timeout(self) -> None:
        """
        A Go C{time.Duration} is signed: a negative timeout is a query that
        has expired already, not malformed.
        """
        query = decode_typed(Query, spec("04 82 a4 'Addr' a4 7f000001 a7 'Timeout' ff"))
        self.assertEqual(query.timeout, -1)
        self.assertEqual(decode_message(encode_message(query)), query)

    def test_other_string_forms(self) -> None:
        """
        str8 and bin, which Go never sends, and an array of small integers
        for a []byte: go-msgpack reads them all.
        """
        event = decode_message(
            spec("03 83 a4 'Name' d9 03 'abc'  a7 'Payload' c4 02 'hi'  a2 'CC' c3")
        )
        self.assertEqual(event, UserEvent(ltime=0, name="abc", payload=b"hi", cc=True))
        self.assertEqual(
            decode_message(spec("07 81 a3 'Key' 93 01 02 03")),
            KeyRequest(b"\x01\x02\x03"),
        )

    def test_bytes_after_the_body_are_ignored(self) -> None:
        self.assertEqual(
            decode_message(spec("01 82 a5 'LTime' 01 a4 'Node' a1 'x'  c0 ff")),
            JoinIntent(1, "x"),
        )

    def test_tags_of_a_member(self) -> None:
        member = decode_typed(
            ConflictResponse, spec("06 81 a4 'Tags' 82 a1 'b' a1 '2' a1 'a' a1 '1'")
        ).member
        assert member is not None
        self.assertEqual(member.tags, {"a": "1", "b": "2"})
        self.assertEqual(member.status, MemberStatus.NONE)
        # Sorted on the way out: Go's order is random, so any order is Go's.
        sorted_tags = spec("a4 'Tags' 82 a1 'a' a1 '1' a1 'b' a1 '2'")
        self.assertTrue(encode_message(ConflictResponse(member)).endswith(sorted_tags))


class RefusalTests(SynchronousTestCase):
    """
    What is not a message raises L{MessageError}, with a reason.
    """

    def refused(self, data: bytes, reason: str = MALFORMED) -> str:
        with self.assertRaises(MessageError) as raised:
            decode_message(data)
        self.assertEqual(raised.exception.reason, reason, str(raised.exception))
        return str(raised.exception)

    def test_unknown_types(self) -> None:
        for kind in (10, 63, 99, 255):
            message = self.refused(bytes([kind]) + spec("80"), UNKNOWN_TYPE)
            self.assertIn(str(kind), message)

    def test_nothing(self) -> None:
        self.refused(b"")
        for kind in MessageType:
            self.refused(bytes([kind]))

    def test_not_a_map(self) -> None:
        for kind in set(MessageType) - {MessageType.CONFLICT_RESPONSE}:
            for body in ("c0", "90", "01", "a1 'x'"):
                self.refused(bytes([kind]) + spec(body))
        self.refused(spec("06 91 c0"))

    def test_wrong_types(self) -> None:
        self.assertIn("Node", self.refused(spec("01 81 a4 'Node' 05")))
        self.assertIn("LTime", self.refused(spec("00 81 a5 'LTime' a1 'x'")))
        self.assertIn("Prune", self.refused(spec("00 81 a5 'Prune' 01")))
        self.assertIn("Payload", self.refused(spec("03 81 a7 'Payload' 05")))
        self.assertIn("Events", self.refused(spec("02 81 a6 'Events' 81 c0 c0")))
        self.assertIn("Events", self.refused(spec("02 81 a6 'Events' 91 05")))
        self.assertIn("LeftMembers", self.refused(spec("02 81 ab 'LeftMembers' 91 05")))
        self.assertIn(
            "StatusLTimes", self.refused(spec("02 81 ac 'StatusLTimes' 91 01"))
        )
        self.assertIn(
            "StatusLTimes", self.refused(spec("02 81 ac 'StatusLTimes' 81 01 01"))
        )
        self.assertIn(
            "StatusLTimes", self.refused(spec("02 81 ac 'StatusLTimes' 81 a1 'a' c3"))
        )
        self.assertIn("Filters", self.refused(spec("04 81 a7 'Filters' 91 05")))
        self.assertIn("Timeout", self.refused(spec("04 81 a7 'Timeout' a1 'x'")))
        self.assertIn("Timeout", self.refused(spec("04 81 a7 'Timeout' c3")))
        self.assertIn("Keys", self.refused(spec("08 81 a4 'Keys' 91 c2")))
        self.assertIn("Tags", self.refused(spec("06 81 a4 'Tags' 81 a1 'a' 01")))
        self.assertIn("Status", self.refused(spec("06 81 a6 'Status' 05")))  # unknown
        self.assertIn("DestAddr", self.refused(spec("09 81 a8 'DestAddr' a1 'x' 00")))
        self.assertIn(
            "Timeout", self.refused(spec("04 81 a7 'Timeout' cb 3ff0000000000000"))
        )

    def test_out_of_range(self) -> None:
        self.assertIn("LTime", self.refused(spec("01 81 a5 'LTime' ff")))
        self.assertIn("ID", self.refused(spec("05 81 a2 'ID' cf 0000000100000000")))
        self.assertIn(
            "RelayFactor", self.refused(spec("04 81 ab 'RelayFactor' cd 0100"))
        )
        self.assertIn("Port", self.refused(spec("04 81 a4 'Port' ce 00010000")))
        self.assertIn(
            "ProtocolMax", self.refused(spec("06 81 ab 'ProtocolMax' cd 0100"))
        )
        self.assertIn(
            "StatusLTimes", self.refused(spec("02 81 ac 'StatusLTimes' 81 a1 'a' ff"))
        )
        self.assertIn(
            "Port",
            self.refused(
                spec("09 81 a8 'DestAddr' 82 a2 'IP' a4 7f000001 a4 'Port' ff 05 80")
            ),
        )

    def test_not_utf8(self) -> None:
        self.assertIn("Node", self.refused(spec("01 81 a4 'Node' a1 ff")))
        self.assertIn(
            "LeftMembers", self.refused(spec("02 81 ab 'LeftMembers' 91 a1 ff"))
        )
        self.assertIn(
            "StatusLTimes", self.refused(spec("02 81 ac 'StatusLTimes' 81 a1 ff 01"))
        )

    def test_unusable_addresses(self) -> None:
        """
        A query whose reply address, or a relay whose destination, is no IP
        could never be answered or forwarded.
        """
        for addr in ("a0", "c0", "a3 010203", "a5 0102030405"):
            self.assertIn("Addr", self.refused(spec(f"04 81 a4 'Addr' {addr}")))
            relay = spec(
                f"09 82 a8 'DestAddr' 81 a2 'IP' {addr}  a8 'DestName' a1 'p'  05 80"
            )
            self.assertIn("DestAddr", self.refused(relay))

    def test_relay_without_a_message(self) -> None:
        header = spec("09 81 a8 'DestAddr' 82 a2 'IP' a4 7f000001 a4 'Port' 01")
        self.assertIn("no message", self.refused(header))
        self.refused(header[:-3])  # the header cut short
        self.refused(spec("09 c1"))  # not msgpack

    def test_bad_msgpack(self) -> None:
        self.refused(spec("03 c1"))  # a reserved byte
        self.refused(spec("03 84 a2 'CC'"))  # truncated
        self.refused(spec("03 dd ffffffff"))  # an array far longer than the data

    def test_filters(self) -> None:
        def refused(data: bytes, reason: str = MALFORMED) -> None:
            with self.assertRaises(MessageError) as raised:
                decode_filter(data)
            self.assertEqual(raised.exception.reason, reason)

        # Serf itself indexes an empty filter's type byte and panics.
        refused(b"")
        refused(spec("02 90"), UNKNOWN_TYPE)
        refused(spec("00"))
        refused(spec("00 81 a1 'a' a1 'b'"))
        refused(spec("00 91 01"))
        refused(spec("01 90"))
        refused(spec("01 81 a3 'Tag' 01"))

    def test_expected_type(self) -> None:
        with self.assertRaises(MessageError) as raised:
            decode_typed(KeyRequest, ACK_BYTES)
        self.assertEqual(raised.exception.reason, UNKNOWN_TYPE)
        self.assertIn("expected a Serf key request", str(raised.exception))
        self.assertRaises(MessageError, decode_typed, KeyRequest, spec("07 c1"))
        self.assertEqual(decode_typed(QueryResponse, ACK_BYTES), ACK)
