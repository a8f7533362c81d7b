"""
Serf's messages as real agents send and read them: Debian's C{serf} agents
on 127.0.0.1 and one of our plain memberlist nodes that records every user
message and push/pull state it is given (L{RecordingDelegate}).

The agents send us every kind of Serf message in turn (a join intent,
events from C{serf event}, queries from C{serf query}, C{serf
reachability} and C{serf keys}, a leave and a pruning leave), and answer
the queries our node sends (acknowledgements, answers, relayed answers,
conflict and key responses).  Every one must decode with
L{cluster.serf.messages} to what was sent and encode back to the agent's
own bytes; every message of ours must be read by the agents as we meant it.

L{tests.unit.test_serf_messages} holds bytes captured by this scenario
(C{tests/data/serf-messages.json}), so that the unit tests stand alone.

Skipped when C{serf} is not on PATH.  Agents bind loopback ports and are
killed by PID in cleanup.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import TypeVar

import attrs
from twisted.trial.unittest import SkipTest, TestCase

from cluster.gossip import GossipConfig, Keyring, Memberlist
from cluster.gossip.suspicion import worst_case_detection
from cluster.serf.messages import (
    ConflictResponse,
    JoinIntent,
    KeyRequest,
    KeyResponse,
    LeaveIntent,
    MemberStatus,
    MessageError,
    NodeFilter,
    PushPull,
    Query,
    QueryFlag,
    QueryResponse,
    Relay,
    SerfMessage,
    TagFilter,
    UserEvent,
    decode_filter,
    decode_message,
    decode_typed,
    encode_filter,
    encode_message,
)
from cluster.testing import RecordingDelegate
from tests.helpers import wait_for
from tests.integration.test_serf import SERF, SPREAD, SerfAgent, python_node
from tests.unit.test_serf_messages import canonical

_Message = TypeVar("_Message")

KEY = bytes(range(1, 17))
EXTRA_KEY = bytes(range(33, 65))
LAN = GossipConfig.lan()
# A query's life on our side: long enough for an agent to run its handler
# on a loaded machine, short enough for the scenario.
QUERY_TIMEOUT = 10.0
# What a CLI query waits for the answers we never send.
CLI_TIMEOUT = "1s"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@attrs.define
class Traffic:
    """
    What our node was given, by step of the scenario.

    @ivar messages: step name to the user messages that arrived during it.
    @ivar states: the Serf push/pull states merged, in order.
    """

    messages: dict[str, list[bytes]] = attrs.field(factory=dict)
    states: list[bytes] = attrs.field(factory=list)

    def decoded(self, step: str) -> list[SerfMessage]:
        return [decode_message(m) for m in self.messages.get(step, [])]

    def of(self, step: str, cls: type[_Message]) -> list[_Message]:
        return [m for m in self.decoded(step) if isinstance(m, cls)]


class SerfMessageTests(TestCase):
    """
    One scenario: it takes a minute, most of it waiting for CLI queries
    that we do not answer to time out.
    """

    timeout = 300

    def setUp(self) -> None:
        if SERF is None:
            raise SkipTest("serf is not installed (apt-get install serf)")
        self.traffic = Traffic()
        self.recorder = RecordingDelegate()
        self.step = "start"
        self.seen = 0

    def collect(self) -> None:
        """
        File what arrived since the last call under the current step.
        """
        new = self.recorder.messages[self.seen :]
        self.seen = len(self.recorder.messages)
        self.traffic.messages.setdefault(self.step, []).extend(new)

    async def until(
        self, step: str, done: Callable[[list[SerfMessage]], bool], what: str
    ) -> None:
        """
        Wait until the messages of C{step} so far satisfy C{done}.
        """

        def check() -> bool:
            self.collect()
            return done(self.traffic.decoded(step))

        await wait_for(check, SPREAD, what)

    def begin(self, step: str) -> None:
        self.collect()
        self.step = step

    async def test_every_message_both_ways(self) -> None:
        traffic = await self.scenario()
        self.check_received(traffic)

    async def scenario(self) -> Traffic:
        handled = os.path.abspath(self.mktemp())
        first = SerfAgent(
            self,
            "serf-0",
            f"-encrypt={b64(KEY)}",
            "-tag=role=web",
            "-tag=dc=x",
            "-event-handler=query:greet=echo hello",
            f"-event-handler=user:py-event=cat >> {handled}",
        )
        await first.ready()
        ours = python_node("py-0", keyring=Keyring([KEY]), delegate=self.recorder)
        await ours.start()
        self.addCleanup(ours.shutdown)
        self.begin("join")
        await ours.join([first.address])
        second = SerfAgent(
            self, "serf-1", f"-encrypt={b64(KEY)}", f"-join={first.address}"
        )
        await self.until(
            "join",
            lambda got: any(
                isinstance(m, JoinIntent) and m.node == "serf-1" for m in got
            ),
            "serf-1's join intent reaches us",
        )

        self.begin("events")
        for args in (["deploy", "v42"], ["-coalesce=false", "flush"]):
            code, text = await first.command("event", *args)
            self.assertEqual(code, 0, text)
        await self.until(
            "events",
            lambda got: (
                {m.name for m in got if isinstance(m, UserEvent)} >= {"deploy", "flush"}
            ),
            "both events reach us",
        )

        self.begin("cli queries")
        await first.command(
            "query",
            f"-timeout={CLI_TIMEOUT}",
            "-node=py-0",
            "-tag=role=^web$",
            "greet",
            "hi",
        )
        await first.command(
            "query", f"-timeout={CLI_TIMEOUT}", "-no-ack", "-relay-factor=1", "quiet"
        )
        await first.command("reachability")
        await first.command("keys", "-list")
        await first.command("keys", "-install", b64(EXTRA_KEY))
        await self.until(
            "cli queries",
            lambda got: (
                {m.name for m in got if isinstance(m, Query)}
                >= {
                    "greet",
                    "quiet",
                    "_serf_ping",
                    "_serf_list-keys",
                    "_serf_install-key",
                }
            ),
            "every CLI query reaches us",
        )

        self.begin("our queries")
        await self.ask(ours, first)

        self.begin("our event")
        event = UserEvent(ltime=1, name="py-event", payload=b"from python", cc=False)
        self.send(ours, "serf-0", encode_message(event))

        async def handled_once() -> bool:
            if not os.path.exists(handled):
                return False
            with open(handled, "rb") as f:
                # Serf ends the payload with a newline on the handler's stdin.
                return f.read() == b"from python\n"

        await wait_for(handled_once, SPREAD, "serf-0 runs its handler for our event")

        self.begin("leave")
        code, text = await second.command("leave")
        self.assertEqual(code, 0, text)
        await self.until(
            "leave",
            lambda got: any(isinstance(m, LeaveIntent) for m in got),
            "serf-1's leave intent reaches us",
        )

        self.begin("prune")
        doomed = SerfAgent(
            self, "serf-2", f"-encrypt={b64(KEY)}", f"-join={first.address}"
        )
        await wait_for(
            lambda: ours.member("serf-2") is not None, SPREAD, "serf-2 joins"
        )
        await doomed.kill()

        async def failed() -> bool:
            return (await first.members()).get("serf-2") == "failed"

        await wait_for(
            failed, worst_case_detection(LAN, 3) + SPREAD, "serf-0 says serf-2 failed"
        )
        code, text = await first.command("force-leave", "-prune", "serf-2")
        self.assertEqual(code, 0, text)
        await self.until(
            "prune",
            lambda got: any(isinstance(m, LeaveIntent) and m.prune for m in got),
            "the pruning leave reaches us",
        )

        # A push/pull now carries the events in serf-0's buffer.
        self.begin("rejoin")
        await ours.join([first.address])
        self.collect()
        self.traffic.states = list(self.recorder.states)
        for agent in (first, second):
            log = agent.log()
            self.assertNotIn("Error decoding", log, agent.name)
            self.assertNotIn("unknown type", log, agent.name)
        return self.traffic

    def send(self, ours: Memberlist, name: str, payload: bytes) -> None:
        member = ours.member(name)
        assert member is not None, f"we do not know {name}"
        ours.send_best_effort(member, payload)

    async def ask(self, ours: Memberlist, agent: SerfAgent) -> None:
        """
        Send serf-0 the queries whose answers we want, and wait for them.
        """
        me = ours.local_member()

        def query(query_id: int, name: str, payload: bytes, **fields: object) -> bytes:
            values: dict[str, object] = {
                "ltime": 1,
                "id": query_id,
                "addr": bytes(map(int, me.address.split("."))),
                "port": me.port,
                "source_node": me.name,
                "flags": QueryFlag.ACK,
                "relay_factor": 0,
                "timeout": int(QUERY_TIMEOUT * 1e9),
                "name": name,
                "payload": payload,
                **fields,
            }
            return encode_message(Query(**values))  # type: ignore[arg-type]

        filters = (
            encode_filter(NodeFilter(("serf-0", "serf-9"))),
            encode_filter(TagFilter(tag="role", expr="^w.b$")),
        )
        asked = [
            query(1, "greet", b"hi"),
            query(2, "greet", b"filtered", filters=filters),
            query(3, "greet", b"relayed", relay_factor=2),
            query(4, "_serf_conflict", b"serf-1"),
            query(5, "_serf_conflict", b"nobody"),
            query(6, "_serf_list-keys", encode_message(KeyRequest(b""))),
            query(7, "_serf_install-key", encode_message(KeyRequest(b"short"))),
        ]
        for payload in asked:
            self.send(ours, agent.name, payload)

        def answered(got: list[SerfMessage]) -> bool:
            replies = {
                (m.id, m.from_, m.ack) for m in got if isinstance(m, QueryResponse)
            }
            relayed = any(isinstance(m, Relay) for m in got)
            wanted = {
                (1, "serf-0", True),
                (1, "serf-0", False),
                (1, "serf-1", True),
                (2, "serf-0", True),
                (2, "serf-0", False),
                (4, "serf-0", False),
                (5, "serf-1", False),
                (6, "serf-1", False),
                (7, "serf-0", False),
            }
            return relayed and wanted <= replies

        await self.until("our queries", answered, "serf answers our queries")

    def check_received(self, traffic: Traffic) -> None:
        """
        Everything the agents sent decodes to what they meant and encodes
        back to their bytes.
        """
        every = [m for got in traffic.messages.values() for m in got]
        for raw in every + traffic.states:
            message = decode_message(raw)
            again = encode_message(message)
            if isinstance(message, Relay):
                self.assertEqual(again, raw)
                decode_message(message.message)
            else:
                self.assertEqual(canonical(again), canonical(raw), raw.hex())
            self.assertEqual(decode_message(again), message)

        join = traffic.of("join", JoinIntent)
        self.assertIn("serf-1", [m.node for m in join])

        events = {m.name: m for m in traffic.of("events", UserEvent)}
        self.assertEqual(
            (events["deploy"].payload, events["deploy"].cc), (b"v42", True)
        )
        self.assertFalse(events["flush"].cc)
        self.assertFalse(events["flush"].payload)

        queries = {m.name: m for m in traffic.of("cli queries", Query)}
        greet = queries["greet"]
        self.assertEqual(
            [decode_filter(f) for f in greet.filters],
            [NodeFilter(("py-0",)), TagFilter(tag="role", expr="^web$")],
        )
        self.assertTrue(greet.ack)
        self.assertEqual(greet.timeout, 1_000_000_000)
        self.assertFalse(queries["quiet"].ack)
        self.assertEqual(queries["quiet"].relay_factor, 1)
        self.assertTrue(queries["_serf_ping"].ack)
        listing = decode_typed(KeyRequest, queries["_serf_list-keys"].payload or b"")
        self.assertEqual(listing, KeyRequest(b""))
        install = decode_typed(KeyRequest, queries["_serf_install-key"].payload or b"")
        self.assertEqual(install, KeyRequest(EXTRA_KEY))

        ours = traffic.decoded("our queries")
        replies = [m for m in ours if isinstance(m, QueryResponse)]
        by = {(m.id, m.from_, m.ack): m for m in replies}
        self.assertEqual(by[1, "serf-0", False].payload, b"hello\n")
        self.assertIsNone(by[1, "serf-0", True].payload)
        # Only serf-0 passes both filters of query 2.
        self.assertNotIn((2, "serf-1", True), by)
        conflict = decode_typed(ConflictResponse, by[4, "serf-0", False].payload or b"")
        assert conflict.member is not None
        self.assertEqual(
            (conflict.member.name, conflict.member.status),
            ("serf-1", MemberStatus.ALIVE),
        )
        unknown = decode_typed(ConflictResponse, by[5, "serf-1", False].payload or b"")
        self.assertIsNone(unknown.member)
        listed = decode_typed(KeyResponse, by[6, "serf-1", False].payload or b"")
        self.assertTrue(listed.result)
        self.assertEqual(set(listed.keys), {b64(KEY), b64(EXTRA_KEY)})
        self.assertEqual(listed.primary_key, b64(KEY))
        refused = decode_typed(KeyResponse, by[7, "serf-0", False].payload or b"")
        self.assertFalse(refused.result)
        self.assertTrue(refused.message)
        for relay in (m for m in ours if isinstance(m, Relay)):
            self.assertEqual(relay.dest_name, "py-0")
            self.assertIsInstance(decode_message(relay.message), QueryResponse)

        leaves = traffic.of("leave", LeaveIntent) + traffic.of("prune", LeaveIntent)
        self.assertIn(LeaveIntent(leaves[0].ltime, "serf-1", False), leaves)
        self.assertTrue(any(m.prune and m.node == "serf-2" for m in leaves))

        last = decode_typed(PushPull, traffic.states[-1])
        names = {
            event.name
            for slot in last.events
            if slot is not None
            for event in slot.events
        }
        self.assertGreaterEqual(names, {"deploy", "flush", "py-event"})
        self.assertIn("serf-1", last.left_members)
        self.assertRaises(MessageError, decode_message, b"\x63")
