"""
Interoperability with a real memberlist implementation: Debian's C{serf}
agent (memberlist 0.2.2), started on 127.0.0.1 by these tests.

Skipped when C{serf} is not on PATH (C{.ci/run} installs it when it runs
as root).  Every agent binds to loopback on free ports and is killed by
its PID in the test's cleanup.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from cluster import ClusterService, Options
from cluster.alloy.discovery import static
from cluster.gossip import (
    GossipConfig,
    JoinRefused,
    Keyring,
    Memberlist,
    MemberState,
)
from cluster.gossip.counters import DropReason
from cluster.gossip.suspicion import worst_case_detection
from cluster.gossip.transport import NetTransport
from cluster.testing import RecordingDelegate, free_loopback_port
from tests.helpers import wait_for

SERF = shutil.which("serf")
KEY_OLD = bytes(range(1, 17))
KEY_NEW = bytes(range(101, 133))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class _Exit(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class SerfAgent:
    """
    One C{serf agent} process on loopback.
    """

    def __init__(self, test: TestCase, name: str, *extra: str) -> None:
        assert SERF is not None
        self.name = name
        self.port = free_loopback_port()
        self.rpc = f"127.0.0.1:{free_loopback_port()}"
        self.log_path = os.path.abspath(test.mktemp())
        log = open(self.log_path, "wb")
        self.protocol = _Exit()
        args = [
            SERF,
            "agent",
            f"-node={name}",
            f"-bind=127.0.0.1:{self.port}",
            f"-rpc-addr={self.rpc}",
            "-log-level=debug",
            *extra,
        ]
        self.process = cast(IReactorProcess, reactor).spawnProcess(
            self.protocol,
            SERF,
            args,
            env=dict(os.environ),
            childFDs={0: "w", 1: log.fileno(), 2: log.fileno()},
        )
        log.close()
        self.running = True
        test.addCleanup(self.kill)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def kill(self) -> None:
        """
        SIGKILL the agent (only ours, by PID) and wait for it to exit.
        """
        if self.running:
            self.running = False
            try:
                self.process.signalProcess("KILL")
            except Exception:
                pass
            await self.protocol.ended

    async def command(self, *args: str) -> tuple[int, str]:
        assert SERF is not None
        out, err, code = await getProcessOutputAndValue(
            SERF, [args[0], f"-rpc-addr={self.rpc}", *args[1:]], env=dict(os.environ)
        )
        return code, (out + err).decode("utf-8", "replace")

    async def members(self) -> dict[str, str]:
        """
        Member name to serf status (C{alive}, C{failed}, C{left}).
        """
        code, text = await self.command("members", "-format=json")
        if code != 0:
            return {}
        return {m["name"]: m["status"] for m in json.loads(text)["members"]}

    async def ready(self) -> None:
        await wait_for(lambda: self.members(), 10, f"{self.name} answers RPC")

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def python_node(name: str, bind_port: int = 0, **overrides: Any) -> Memberlist:
    config = GossipConfig.lan(
        name=name,
        bind_address="127.0.0.1",
        bind_port=bind_port,
        # A serf cluster's delegate versions (WIRE.md 6.8).
        delegate_protocol_min=2,
        delegate_protocol_max=5,
        delegate_protocol_version=5,
        **overrides,
    )
    return Memberlist(config, reactor=reactor)


def states(node: Memberlist) -> dict[str, MemberState]:
    return {m.name: m.state for m in node.members()}


class SerfTestCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if SERF is None:
            raise SkipTest("serf is not installed (apt-get install serf)")

    async def serf_cluster(self, count: int, *extra: str) -> list[SerfAgent]:
        agents = [SerfAgent(self, f"serf-{i}", *extra) for i in range(count)]
        await gatherResults([Deferred.fromCoroutine(a.ready()) for a in agents])
        for agent in agents[1:]:
            code, text = await agent.command("join", agents[0].address)
            self.assertEqual(code, 0, text)
        return agents

    async def start(self, node: Memberlist) -> Memberlist:
        await node.start()
        self.addCleanup(node.shutdown)
        return node

    async def joined_alive(
        self, agents: list[SerfAgent], node: Memberlist
    ) -> Memberlist:
        """
        C{node} started, joined through the first agent, and listed alive
        by every agent within L{SPREAD}.
        """
        await self.start(node)
        await node.join([agents[0].address])
        await wait_for(
            lambda: serf_sees(agents, node.name, "alive"), SPREAD, "serf lists us alive"
        )
        return node

    def assertNoSerfErrors(self, agents: list[SerfAgent]) -> None:
        for agent in agents:
            log = agent.log()
            self.assertNotIn("panic", log)
            for marker in ("Failed to decode", "Failed push/pull merge", "Decrypt"):
                self.assertNotIn(marker, log, f"{agent.name}: {marker}")


LAN = GossipConfig.lan()
# Serf runs memberlist's LAN profile too, so one worst case
# (worst_case_detection(LAN, n)) serves both: gossip can miss a node, a
# push/pull then repairs it.
SPREAD = LAN.push_pull_interval + LAN.tcp_timeout


async def serf_sees(agents: list[SerfAgent], name: str, status: str) -> bool:
    """
    Whether every running agent lists C{name} with C{status}.
    """
    return all([(await a.members()).get(name) == status for a in agents if a.running])


class JoinTests(SerfTestCase):
    async def test_we_join_a_serf_cluster(self) -> None:
        agents = await self.serf_cluster(3)
        ours = await self.start(python_node("py-0"))
        self.assertEqual(await ours.join([agents[0].address]), 1)
        await wait_for(
            lambda: serf_sees(agents, "py-0", "alive"), SPREAD, "serf lists us alive"
        )
        # The seed's push/pull reply listed every agent.
        for agent in agents:
            self.assertEqual(states(ours).get(agent.name), MemberState.ALIVE)
        # Serf compresses by default and we decoded it all; our push/pulls
        # are compressed (on by default) and serf logged no decode error.
        self.assertEqual(ours.counters.dropped[DropReason.COMPRESS], 0)
        self.assertEqual(ours.counters.dropped[DropReason.DECODE], 0)
        self.assertNoSerfErrors(agents)

    async def test_a_serf_agent_joins_us(self) -> None:
        agents = await self.serf_cluster(2)
        ours = await self.start(python_node("py-0"))
        await ours.join([agents[0].address])
        joiner = SerfAgent(
            self, "serf-joiner", f"-join={ours.local_member().full_address()}"
        )
        await wait_for(
            lambda: states(ours).get("serf-joiner") == MemberState.ALIVE,
            SPREAD,
            "we list the agent that joined us",
        )
        await wait_for(
            lambda: serf_sees([*agents, joiner], "serf-joiner", "alive"),
            SPREAD,
            "every agent lists the agent that joined through us",
        )
        self.assertNoSerfErrors([*agents, joiner])


class EventTests(SerfTestCase):
    async def test_user_events_and_state_reach_our_delegate(self) -> None:
        agents = await self.serf_cluster(2)
        recorder = RecordingDelegate()
        ours = await self.start(python_node("py-0", delegate=recorder))
        await ours.join([agents[0].address])
        # Serf's push/pull user state reached merge_remote_state as bytes.
        self.assertTrue(recorder.states)
        self.assertEqual(recorder.states[0][:1], b"\x02")  # serf's pushPull type
        await wait_for(
            lambda: serf_sees(agents, "py-0", "alive"), SPREAD, "serf lists us alive"
        )
        code, text = await agents[1].command("event", "deploy", "payload-123")
        self.assertEqual(code, 0, text)
        # Serf gossips events and carries recent ones in its push/pulls.
        await wait_for(
            lambda: any(b"payload-123" in m for m in recorder.messages),
            SPREAD,
            "a serf user event reaches our delegate",
        )
        self.assertNoSerfErrors(agents)


class FailureTests(SerfTestCase):
    async def test_killed_agent_is_dead_in_ours(self) -> None:
        agents = await self.serf_cluster(3)
        ours = await self.start(python_node("py-0"))
        await ours.join([agents[0].address])
        await agents[2].kill()
        await wait_for(
            lambda: states(ours).get("serf-2") == MemberState.DEAD,
            worst_case_detection(LAN, len(ours.members())),
            "a SIGKILLed agent is dead in ours",
        )

    async def test_our_abrupt_stop_is_failed_in_serf(self) -> None:
        agents = await self.serf_cluster(2)
        ours = await self.joined_alive(agents, python_node("py-0"))
        await ours.shutdown()
        await wait_for(
            lambda: serf_sees(agents, "py-0", "failed"),
            worst_case_detection(LAN, 3) + SPREAD,
            "serf says our stopped node failed",
        )


class LeaveTests(SerfTestCase):
    async def test_serf_leave_is_left_in_ours(self) -> None:
        agents = await self.serf_cluster(3)
        ours = await self.start(python_node("py-0"))
        await ours.join([agents[0].address])
        code, text = await agents[2].command("leave")
        self.assertEqual(code, 0, text)
        await wait_for(
            lambda: states(ours).get("serf-2") == MemberState.LEFT,
            SPREAD,
            "`serf leave` shows as left in ours",
        )
        await agents[2].protocol.ended
        agents[2].running = False

    async def test_our_leave_takes_us_out_of_serf(self) -> None:
        agents = await self.serf_cluster(2)
        leaver = await self.joined_alive(agents, python_node("py-leaver"))
        self.assertTrue(await leaver.leave(SPREAD))
        await leaver.shutdown()

        async def gone_from_alive() -> bool:
            return all(
                [(await a.members()).get("py-leaver") != "alive" for a in agents]
            )

        # An agent that missed the leave notices the silence instead.
        await wait_for(
            gone_from_alive,
            SPREAD + worst_case_detection(LAN, 3),
            "our leave takes us out of serf's alive list",
        )

    async def test_leave_intent_makes_serf_say_left(self) -> None:
        agents = await self.serf_cluster(2)
        polite = await self.joined_alive(
            agents, python_node("py-polite", serf_leave_intent=True)
        )
        self.assertTrue(await polite.leave(SPREAD))
        await polite.shutdown()
        await wait_for(
            lambda: serf_sees(agents, "py-polite", "left"),
            SPREAD,
            "with serf_leave_intent, serf records our leave as left",
        )
        self.assertNoSerfErrors(agents)

    async def test_every_leave_under_one_name_is_left(self) -> None:
        """
        Serf ignores a leave intent whose LTime is not above the one it
        holds for the name, and a rejoin keeps that LTime: three processes
        in turn under one name and port each leave as I{left}, not
        I{failed}.
        """
        agents = await self.serf_cluster(1)
        port = free_loopback_port()
        name = "py-again"

        async def status() -> str | None:
            return (await agents[0].members()).get(name)

        async def settled() -> bool:
            return await status() in ("left", "failed")

        statuses: list[str | None] = []
        lines: list[str] = []
        for life in range(3):
            node = await self.start(
                python_node(name, bind_port=port, serf_leave_intent=True)
            )
            await node.join([agents[0].address])
            await wait_for(
                lambda: serf_sees(agents, name, "alive"),
                SPREAD,
                f"life {life}: serf lists us alive",
            )
            self.assertTrue(await node.leave(SPREAD))
            await node.shutdown()
            # Our dead message settles it at once: left after an intent
            # serf accepted, failed after one it ignored (or detection,
            # if the message is lost).
            await wait_for(
                settled,
                SPREAD + worst_case_detection(LAN, 2),
                f"life {life}: serf records our leave",
            )
            statuses.append(await status())
            lines.append((await agents[0].command("members", f"-name={name}"))[1])
        self.assertEqual(statuses, ["left"] * 3, "".join(lines))
        self.assertNoSerfErrors(agents)


class EncryptionTests(SerfTestCase):
    async def test_same_key_wrong_key_and_rotation(self) -> None:
        agents = await self.serf_cluster(2, f"-encrypt={b64(KEY_OLD)}")
        # Same key: we join and everyone sees everyone.
        same = await self.start(python_node("py-same", keyring=Keyring([KEY_OLD])))
        await same.join([agents[0].address])
        await wait_for(lambda: same.num_members() == 3, SPREAD, "we list both agents")
        await wait_for(
            lambda: _alive_in(agents, "py-same"), SPREAD, "serf lists the keyed node"
        )

        # Wrong key: the agent answers and we cannot read it, a refusal in
        # words; nobody lists the other, drops counted.
        wrong = await self.start(python_node("py-wrong", keyring=Keyring([KEY_NEW])))
        try:
            await wrong.join([agents[0].address])
        except JoinRefused as e:
            self.assertIn("refused us: gossip key mismatch", str(e))
        else:
            self.fail("joined with the wrong key")
        # Our own node with the right key gets undecryptable packets too.
        wrong.send_best_effort(same.local_member(), b"x")
        await wait_for(
            lambda: same.counters.dropped[DropReason.DECRYPT] >= 1,
            SPREAD,
            "our keyed node drops the wrong key's packet",
        )
        self.assertEqual(wrong.num_members(), 1)
        self.assertNotIn("py-wrong", await agents[0].members())
        self.assertGreaterEqual(same.counters.dropped[DropReason.DECRYPT], 1)

        # Rotation: serf agents with a keyring file [old primary, new];
        # we hold [new primary, old] and still talk to them.
        keyring_file = os.path.abspath(self.mktemp())
        with open(keyring_file, "w") as f:
            json.dump([b64(KEY_OLD), b64(KEY_NEW)], f)
        rotating = await self.serf_cluster(2, f"-keyring-file={keyring_file}")
        rotated = await self.start(
            python_node("py-rotated", keyring=Keyring([KEY_NEW, KEY_OLD]))
        )
        await rotated.join([rotating[0].address])
        await wait_for(
            lambda: rotated.num_members() == 3, SPREAD, "we list the rotating agents"
        )
        await wait_for(
            lambda: _alive_in(rotating, "py-rotated"),
            SPREAD,
            "the rotating agents list us",
        )
        self.assertNoSerfErrors(rotating)


async def _alive_in(agents: list[SerfAgent], name: str) -> bool:
    return all([(await a.members()).get(name) == "alive" for a in agents])


class MixedClusterTests(SerfTestCase):
    async def test_three_and_three(self) -> None:
        agents = await self.serf_cluster(3)
        ours = [await self.start(python_node(f"py-{i}")) for i in range(3)]
        for i, node in enumerate(ours):
            await node.join([agents[i].address])
        names = {a.name for a in agents} | {n.name for n in ours}

        def ours_see(expect: set[str]) -> bool:
            return all(
                {m.name for m in n.members() if m.state == MemberState.ALIVE} == expect
                for n in ours
                if cast(NetTransport, n.transport).handler is not None
            )

        async def serf_see(expect: set[str]) -> bool:
            for agent in agents:
                if not agent.running:
                    continue
                alive = {k for k, v in (await agent.members()).items() if v == "alive"}
                if alive != expect:
                    return False
            return True

        await wait_for(lambda: ours_see(names), SPREAD, "ours list all six")
        await wait_for(lambda: serf_see(names), SPREAD, "serf lists all six")

        # Kill one of each kind: every survivor of both kinds notices.
        await agents[2].kill()
        await ours[2].shutdown()
        survivors = names - {"serf-2", "py-2"}
        bound = worst_case_detection(LAN, len(names))
        await wait_for(lambda: ours_see(survivors), bound, "ours drop the killed")
        await wait_for(lambda: serf_see(survivors), bound, "serf drops the killed")
        await wait_for(
            lambda: all(
                states(node).get("serf-2") == MemberState.DEAD
                and states(node).get("py-2") == MemberState.DEAD
                for node in ours[:2]
            ),
            bound,
            "ours mark both killed nodes dead",
        )
        self.assertNoSerfErrors(agents[:2])


async def serf_tags(agent: SerfAgent, *filters: str) -> dict[str, dict[str, str]]:
    """
    Each member's tags as C{agent} lists them (C{serf members -format=json}
    with C{filters}, such as C{-tag role=x}).
    """
    code, text = await agent.command("members", "-format=json", *filters)
    if code != 0:
        return {}
    # No member matched: "members": null.
    return {m["name"]: m["tags"] for m in json.loads(text)["members"] or []}


class TagTests(SerfTestCase):
    """
    Our tags as Serf agents see them: listed by every agent, changed at run
    time, and filtered by C{serf members -tag}.
    """

    async def tagged_service(
        self, agents: list[SerfAgent], tags: dict[str, str]
    ) -> ClusterService:
        """
        A cluster service with C{tags}, speaking Serf's delegate versions,
        joined through the first agent and listed alive by every agent.
        """
        service = ClusterService(
            Options(
                enable_clustering=True,
                node_name="py-tagged",
                bind_address="127.0.0.1",
                bind_port=0,
                gossip=GossipConfig.lan(
                    delegate_protocol_min=2,
                    delegate_protocol_max=5,
                    delegate_protocol_version=5,
                ),
                discover_peers=static([agents[0].address]),
                tags=tags,
            ),
            reactor=reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        await service.when_joined()
        await wait_for(
            lambda: serf_sees(agents, "py-tagged", "alive"), SPREAD, "serf lists us"
        )
        return service

    async def assertListed(
        self, agents: list[SerfAgent], filters: tuple[str, ...], names: set[str]
    ) -> None:
        for agent in agents:
            listed = set(await serf_tags(agent, *filters))
            self.assertEqual(listed, names, f"{agent.name}: serf members {filters}")

    async def test_tags_at_start_at_run_time_and_filtered(self) -> None:
        agents = await self.serf_cluster(3, "-tag", "role=serf")
        everyone = {agent.name for agent in agents}
        tags = {"role": "x", "zone": "eu-1"}
        service = await self.tagged_service(agents, tags)
        for agent in agents:
            self.assertEqual((await serf_tags(agent))["py-tagged"], tags, agent.name)
        await self.assertListed(agents, ("-tag", "role=x"), {"py-tagged"})
        await self.assertListed(agents, ("-tag", "role=serf"), everyone)
        await self.assertListed(agents, ("-tag", "zone=eu-.*"), {"py-tagged"})

        # A change at run time: an alive message with our next incarnation,
        # gossiped, and carried by every push/pull after it.
        changed = {"role": "y", "zone": "eu-1", "version": "42"}
        spread = service.set_tags(changed)

        async def everyone_sees_it() -> bool:
            return all(
                [(await serf_tags(a)).get("py-tagged") == changed for a in agents]
            )

        await wait_for(everyone_sees_it, SPREAD, "every agent lists the new tags")
        self.assertTrue(await spread)
        await self.assertListed(agents, ("-tag", "role=x"), set())
        await self.assertListed(agents, ("-tag", "role=y"), {"py-tagged"})
        await self.assertListed(
            agents, ("-tag", "role=y", "-tag", "version=42"), {"py-tagged"}
        )
        self.assertNoSerfErrors(agents)
