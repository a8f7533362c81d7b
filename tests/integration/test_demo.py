"""
The demo as a user runs it: C{python -m cluster.daemon.demo --nodes 3
--profile local}, a real process with three real nodes.  One node is
killed and the demo goes on, printing the survivors' suspicion, then the
death, and the keys that moved, from whom to whom; a line on its standard
input restarts the node and the keys move back; C{SIGUSR1} is its other
way to restart; a frozen node is shown as not answering; and Ctrl-C stops
everything within 2 s.

Waits are bounded by the local profile's worst case
(L{worst_case_detection}) plus what the demo adds to see a change: a poll
and its answer's patience, twice (the owners are looked up once a view has
held for two polls).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Sequence

import attrs
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from cluster.daemon.demo import (
    ANSWER_TIMEOUT,
    POLL_INTERVAL,
    STOP_GRACE,
    ProcessExit,
    SpawnedProcess,
)
from cluster.gossip.suspicion import worst_case_detection
from tests.helpers import now, wait_for
from tests.processes import LOCAL, SPREAD, STARTUP

DETECTION = worst_case_detection(LOCAL, 3)
# A change shows in the demo's output once the view holding it was
# answered twice (a poll's wait, plus the answer's patience, each time).
SETTLE = 2 * (POLL_INTERVAL + ANSWER_TIMEOUT)
# Room for a loaded machine: a process's scheduling, the demo's own turn.
MARGIN = 5.0
# Ctrl-C: the nodes get STOP_GRACE to leave before they are killed; what
# remains is the demo's own exit.  The issue asks for under 2 s in all.
STOPPED = 2.0
assert STOP_GRACE < STOPPED

_log = Logger()

_ROW = re.compile(
    r"^(node-\d+)\s+(\d+)\s+127\.0\.0\.1:\d+\s+http://\S+\s+participant\s+yes$",
    re.M,
)
_OWNER = re.compile(r"^  (tenant-\d+)\s+(node-\d+)$", re.M)
_MOVE = re.compile(r"^\s+(tenant-\d+)\s+(node-\d+) -> (node-\d+)$", re.M)
# A node's command line (NUL-separated) holds this; the demo's own does not.
_NODE_COMMAND = b"\0-m\0cluster.daemon\0"


@attrs.define(eq=False)
class Demo(SpawnedProcess):
    """
    The demo as a child process, its standard input a pipe.
    """

    reactor: IReactorTime
    args: Sequence[str]
    _protocol: ProcessExit = attrs.field(factory=ProcessExit, init=False)
    _pid: int | None = attrs.field(default=None, init=False)

    def command(self) -> list[str]:
        return [sys.executable, "-u", "-m", "cluster.daemon.demo", *self.args]

    def type_line(self) -> None:
        """
        Press Enter, as it were.
        """
        transport = self._protocol.transport
        assert transport is not None
        transport.write(b"\n")

    def since(self, mark: int) -> str:
        """
        What it printed from offset C{mark} of its output on.
        """
        return self.output[mark:]


def _children(pid: int) -> list[int]:
    """
    The processes whose parent is C{pid}.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _running_node(pid: int) -> bool:
    """
    Whether C{pid} is still a clusternode process (C{python -m
    cluster.daemon}: not reaped, not reused).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return _NODE_COMMAND in f.read()
    except OSError:
        return False


class DemoTests(TestCase):
    timeout = 300

    async def ended(self, demo: Demo) -> None:
        """
        At clean-up: a demo still running is killed, its nodes first.
        """
        if demo.ended.called or demo.pid is None:
            return
        for pid in _children(demo.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        demo.signal("KILL")
        await demo.ended

    def check_demo(self, demo: Demo) -> None:
        """
        Fail the test, with the demo's output, if the demo ended.
        """
        if demo.ended.called:
            raise AssertionError(f"the demo ended:\n{demo.output[-4000:]}")

    async def printed(self, demo: Demo, mark: int, what: str, bound: float) -> None:
        """
        Wait for C{what} in the demo's output after C{mark}, the demo
        running all along.
        """

        def seen() -> bool:
            self.check_demo(demo)
            return what in demo.since(mark)

        await wait_for(seen, bound, f"the demo prints {what!r}")

    async def moved(
        self, demo: Demo, mark: int, keys: set[str], away: bool, name: str, bound: float
    ) -> list[tuple[str, str, str]]:
        """
        Wait until C{keys} are the keys printed as moved away from (or,
        unless C{away}, to) the node C{name} since C{mark}.

        @return: every move printed since C{mark}: (key, from, to).
        """

        def done() -> bool:
            self.check_demo(demo)
            moves = _MOVE.findall(demo.since(mark))
            return {
                key for key, old, new in moves if (old if away else new) == name
            } == keys

        what = f"keys moved {'away from' if away else 'to'} {name}"
        try:
            await wait_for(done, bound, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{demo.since(mark)[-4000:]}") from None
        return _MOVE.findall(demo.since(mark))

    async def test_kill_restart_freeze_and_ctrl_c(self) -> None:
        demo = Demo(reactor, ["--nodes", "3", "--profile", "local"])
        demo.start()
        assert demo.pid is not None
        self.addCleanup(self.ended, demo)
        await self.printed(demo, 0, "Ctrl-C stops every node.", STARTUP + SPREAD)
        pids = dict(_ROW.findall(demo.output))
        owners = dict(_OWNER.findall(demo.output))
        self.assertEqual(sorted(pids), ["node-1", "node-2", "node-3"], demo.output)
        self.assertEqual(len(owners), 12, demo.output)

        # The node owning most sample keys dies, the others take its keys.
        victim = max(pids, key=lambda n: list(owners.values()).count(n))
        survivors = sorted(set(pids) - {victim})
        its_keys = {key for key, owner in owners.items() if owner == victim}
        self.assertIn(int(pids[victim]), _children(demo.pid))
        mark = len(demo.output)
        os.kill(int(pids[victim]), signal.SIGKILL)
        moves = await self.moved(
            demo, mark, its_keys, True, victim, DETECTION + SETTLE + MARGIN
        )
        told = demo.since(mark)
        self.assertIn(f"{victim} (pid {pids[victim]}) killed by SIGKILL", told)
        self.assertIn("to start it again: press Enter", told)
        self.assertEqual([new for _, old, new in moves if new not in survivors], [])
        dead = [told.index(f"{s} marks {victim} dead") for s in survivors]
        suspect = told.find(f"marks {victim} suspect")
        self.assertTrue(0 <= suspect < min(dead), told)

        # Enter: it comes back on its ports, and its keys come back to it.
        mark = len(demo.output)
        demo.type_line()
        moves = await self.moved(
            demo, mark, its_keys, False, victim, STARTUP + SPREAD + SETTLE
        )
        self.assertIn(f"{victim} restarted (pid ", demo.since(mark))
        self.assertEqual([old for _, old, new in moves if old not in survivors], [])
        pids.update(re.findall(r"(node-\d+) restarted \(pid (\d+)\)", demo.since(mark)))

        # SIGUSR1, the other way to restart, with nothing to restart.
        mark = len(demo.output)
        demo.signal("USR1")
        await self.printed(demo, mark, "nothing to restart", MARGIN)

        # A frozen node is shown as such; the demo goes on.
        frozen = survivors[0]
        mark = len(demo.output)
        os.kill(int(pids[frozen]), signal.SIGSTOP)
        await self.printed(
            demo,
            mark,
            f"{frozen} (pid {pids[frozen]}) does not answer",
            ANSWER_TIMEOUT + 2 * POLL_INTERVAL + MARGIN,
        )
        await self.printed(
            demo, mark, f"marks {frozen} suspect", DETECTION + SETTLE + MARGIN
        )

        # Ctrl-C, the node still frozen: everything stops in time.
        interrupted = now()
        demo.signal("INT")
        status = await demo.ended
        took = now() - interrupted
        _log.info("Ctrl-C to the demo's exit: {took:.2f} s", took=took)
        self.assertEqual(status, 0, demo.output[-3000:])
        self.assertLess(took, STOPPED, demo.output[-3000:])
        self.assertIn("stopped in", demo.output)
        self.assertNotIn("Traceback", demo.output)
        self.assertEqual([p for p in pids.values() if _running_node(int(p))], [])
