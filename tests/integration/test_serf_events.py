"""
Serf user events between Debian's C{serf} agents and one of our plain
memberlist nodes carrying a L{SerfDelegate}: an agent's event reaches our
observer once, ours runs every agent's handler once, a duplicate sent
again within the event buffer's window is dropped on both sides, and
events sent before our node joined reach it once through push/pull.

Skipped when C{serf} is not on PATH.  Agents bind loopback ports and are
killed by PID in cleanup.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import SkipTest, TestCase

from cluster.gossip import Memberlist
from cluster.serf import ReceivedEvent, SerfDelegate, UserEvents
from cluster.serf.messages import UserEvent, encode_message
from cluster.testing import RecordingDelegate
from tests.helpers import wait_for
from tests.integration.test_serf import SERF, SPREAD, SerfAgent, python_node


def read(path: str) -> bytes:
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as f:
        return f.read()


class SerfEventTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        if SERF is None:
            raise SkipTest("serf is not installed (apt-get install serf)")

    def send(self, sender: Memberlist, name: str, payload: bytes) -> None:
        member = sender.member(name)
        assert member is not None, f"{sender.name} does not know {name}"
        sender.send_best_effort(member, payload)

    async def test_events_both_ways_once(self) -> None:
        agents: list[SerfAgent] = []
        handled: dict[str, str] = {}
        markers: dict[str, str] = {}
        for i in range(2):
            name = f"serf-{i}"
            handled[name] = os.path.abspath(self.mktemp())
            markers[name] = os.path.abspath(self.mktemp())
            join = [f"-join={agents[0].address}"] if agents else []
            agent = SerfAgent(
                self,
                name,
                *join,
                f"-event-handler=user:py-event=cat >> {handled[name]}",
                f"-event-handler=user:py-marker=cat >> {markers[name]}",
            )
            await agent.ready()
            agents.append(agent)

        events = UserEvents(IReactorTime(reactor))
        delegate = SerfDelegate(events, {"role": "py"})
        ours = python_node("py-0", delegate=delegate)
        delegate.attach(ours.num_members)
        got: list[ReceivedEvent] = []
        events.observe(got.append)
        await ours.start()
        self.addCleanup(ours.shutdown)
        # A second node of ours, to send raw duplicates to py-0.
        sender = python_node("py-sender", delegate=RecordingDelegate())
        await sender.start()
        self.addCleanup(sender.shutdown)
        await ours.join([agents[0].address])
        await sender.join([agents[0].address])
        await wait_for(
            lambda: ours.num_members() == sender.num_members() == 4,
            SPREAD,
            "the four members know each other",
        )

        # An agent's event reaches our observer once.
        code, text = await agents[1].command("event", "deploy", "v42")
        self.assertEqual(code, 0, text)
        await wait_for(
            lambda: any(e.name == "deploy" for e in got), SPREAD, "deploy reaches us"
        )
        (deploy,) = [e for e in got if e.name == "deploy"]
        self.assertEqual((deploy.payload, deploy.coalesce), (b"v42", True))

        # Our event runs every agent's handler once.  Not coalescible: the
        # agents' coalescer would hide a second delivery.
        events.user_event("py-event", b"from python", coalesce=False)

        def handled_everywhere() -> bool:
            return all(read(path) for path in handled.values())

        await wait_for(handled_everywhere, SPREAD, "every agent handles our event")

        # The same events again, within the window: dropped on both sides.
        before = events.counters.snapshot()
        again = UserEvent(
            ltime=deploy.ltime, name="deploy", payload=b"v42", cc=deploy.coalesce
        )
        self.send(sender, "py-0", encode_message(again))
        (mine,) = [e for e in got if e.name == "py-event"]
        ours_again = UserEvent(
            ltime=mine.ltime, name="py-event", payload=b"from python", cc=False
        )
        for agent in agents:
            self.send(ours, agent.name, encode_message(ours_again))
        # Then a fresh event each, sent after the duplicates: once it is
        # handled, the duplicates before it have been read.
        marker = UserEvent(
            ltime=events.clock.now(), name="py-marker", payload=b"m", cc=False
        )
        self.send(sender, "py-0", encode_message(marker))
        for agent in agents:
            self.send(ours, agent.name, encode_message(marker))
        await wait_for(
            lambda: (
                any(e.name == "py-marker" for e in got)
                and all(read(path) for path in markers.values())
            ),
            SPREAD,
            "the markers after the duplicates arrive",
        )
        self.assertEqual([e.name for e in got].count("deploy"), 1)
        self.assertGreaterEqual((events.counters - before).duplicates, 1)
        for name, path in handled.items():
            # Serf ends the payload with a newline on the handler's stdin.
            self.assertEqual(read(path), b"from python\n", name)
        self.assertEqual([e.name for e in got].count("py-event"), 1)
        self.assertEqual(delegate.counters.malformed, 0)
        for agent in agents:
            self.assertNotIn("Error decoding", agent.log(), agent.name)

    async def test_join_catches_up_through_push_pull(self) -> None:
        """
        Acceptance 6: events sent before our node joins reach it through
        the join's push/pull, once although both agents' states carry
        them; an event ours sent before joining reaches every agent's
        handler once, and no agent fails to decode our state.
        """
        agents: list[SerfAgent] = []
        handled: dict[str, str] = {}
        seen: dict[str, str] = {}
        for i in range(2):
            name = f"serf-{i}"
            handled[name] = os.path.abspath(self.mktemp())
            seen[name] = os.path.abspath(self.mktemp())
            join = [f"-join={agents[0].address}"] if agents else []
            agent = SerfAgent(
                self,
                name,
                *join,
                f"-event-handler=user:py-early=cat >> {handled[name]}",
                f"-event-handler=user:before-b=cat >> {seen[name]}",
            )
            await agent.ready()
            agents.append(agent)
        for name, payload in (("before-a", "1"), ("before-b", "2")):
            code, text = await agents[1].command("event", name, payload)
            self.assertEqual(code, 0, text)
        await wait_for(
            lambda: all(read(path) for path in seen.values()),
            SPREAD,
            "both agents hold the events",
        )

        events = UserEvents(IReactorTime(reactor))
        # Replaying, as `serf join -replay`: Serf's eventJoinIgnore off.
        delegate = SerfDelegate(events, {"role": "py"})
        ours = python_node("py-0", delegate=delegate)
        delegate.attach(ours.num_members, ours.serf_clock)
        got: list[ReceivedEvent] = []
        events.observe(got.append)
        events.user_event("py-early", b"before join", coalesce=False)
        await ours.start()
        self.addCleanup(ours.shutdown)
        await ours.join([agent.address for agent in agents])
        await wait_for(
            lambda: len([e for e in got if e.name.startswith("before-")]) == 2,
            SPREAD,
            "the events sent before we joined reach us",
        )
        await wait_for(
            lambda: all(read(path) for path in handled.values()),
            SPREAD,
            "every agent handles our event sent before we joined",
        )
        # A periodic push/pull after the join's two, still once each.
        await wait_for(
            lambda: delegate.counters.states >= 3, 2 * SPREAD, "a push/pull merged"
        )
        names = sorted(e.name for e in got if e.name != "py-early")
        self.assertEqual(names, ["before-a", "before-b"])
        self.assertEqual(events.counters.caught_up, 2)
        self.assertEqual(delegate.counters.bad_states, 0)
        # The agents' member clock, witnessed from their push/pull state.
        self.assertGreater(ours.serf_clock.time, 0)
        for name, path in handled.items():
            self.assertEqual(read(path), b"before join\n", name)
        for agent in agents:
            log = agent.log()
            for error in ("decode remote state", "Remote state", "Error decoding"):
                self.assertNotIn(error, log, agent.name)
