"""
A local demo cluster: C{python -m cluster.daemon.demo [--nodes 3]}.

It starts that many C{clusternode} processes on 127.0.0.1 with free
ports, joins them through the first, and prints the peer table and the
owners of a dozen sample keys.  Then it watches the cluster: kill a node
(C{kill -9 PID}) or freeze one (C{kill -STOP PID}) and it prints, as they
happen, the survivors marking it suspect, then dead, then forgetting it,
and the sample keys that moved, from whom to whom.  A line on standard
input (Enter) or C{SIGUSR1} starts the nodes that exited again, on their
old ports, and the keys move back.  Ctrl-C stops every node at once
(C{SIGTERM}: each announces I{terminating} and leaves); one still running
L{STOP_GRACE} seconds later is killed.

Every status request has a timeout (L{ANSWER_TIMEOUT}): a node that does
not answer is shown as such, and one that exits as exited; neither ends
nor freezes the demo.

L{LocalNode} is also what the test suite and the benchmarks use to run
real node processes; L{clusternode_command} and L{SpawnedProcess} serve
every other harness that runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorProcess,
    IReactorThreads,
    IReactorTime,
    IReadDescriptor,
)
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.iweb import IResponse
from zope.interface import implementer

from cluster.daemon.flags import PROFILES
from cluster.daemon.ports import free_loopback_port

__all__ = [
    "ANSWER_TIMEOUT",
    "FETCH_TIMEOUT",
    "POLL_INTERVAL",
    "SAMPLE_KEYS",
    "STOP_GRACE",
    "LocalNode",
    "ProcessExit",
    "SpawnedProcess",
    "WatchedProcess",
    "clusternode_command",
    "describe_exit",
    "main",
    "moved_keys",
    "read_body",
    "source_environment",
]

SAMPLE_KEYS = [f"tenant-{i}" for i in range(1, 13)]
# A request to a node's status site that has no answer by then fails.
FETCH_TIMEOUT = 10.0
# The demo's shorter patience: past it, a node is shown as not answering.
ANSWER_TIMEOUT = 2.0
# How often the demo asks each node for its view.
POLL_INTERVAL = 0.5
# After Ctrl-C, how long nodes have to leave before they are killed.
STOP_GRACE = 1.5
# How long the demo waits for the cluster to form before it shows it anyway.
STARTUP_PATIENCE = 60.0
_PROJECT_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


async def read_body(response: IResponse) -> bytes:
    """
    The whole body of C{response}.  Cancelling the wait closes the
    connection.

    @raise Exception: whatever cut the body short (the failure the
        response delivered in place of L{ResponseDone}).
    """
    # twisted.web.client.readBody warns (DeprecationWarning) on the
    # transport Agent's responses give their body protocols.
    body = _Body()
    response.deliverBody(body)
    return await body.done


class _Body(Protocol):
    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred(self._cancel)
        self.data = bytearray()

    def _cancel(self, done: Deferred[bytes]) -> None:
        # A node that stopped answering mid-body must not hold the
        # connection open.
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return  # cancelled
        if reason.check(ResponseDone):
            self.done.callback(bytes(self.data))
        else:
            self.done.errback(reason)


class ProcessExit(ProcessProtocol):
    """
    Collects a child process's output and fires C{ended} with its exit
    status (negative: the signal that ended it).

    @ivar output: stdout and stderr, as they came.
    @ivar errors: stderr alone.
    """

    def __init__(self) -> None:
        self.ended: Deferred[int] = Deferred()
        self.output = bytearray()
        self.errors = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.output += data
        self.errors += data

    def processEnded(self, reason: Failure) -> None:
        code = 0
        value = reason.value
        if isinstance(value, ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else -value.signal
        elif not isinstance(value, ProcessDone):
            code = -1
        self.ended.callback(code)


class WatchedProcess:
    """
    What one process, run under its L{ProcessExit} (C{_protocol}), has
    done so far.
    """

    _protocol: ProcessExit

    @property
    def ended(self) -> Deferred[int]:
        """
        Fires with the exit status (negative: the signal that ended it).
        """
        return self._protocol.ended

    @property
    def output(self) -> str:
        """
        What the process wrote so far, stdout and stderr as they came.
        """
        return self._protocol.output.decode("utf-8", "replace")

    @property
    def errors(self) -> str:
        """
        What the process wrote to stderr so far.
        """
        return self._protocol.errors.decode("utf-8", "replace")


def describe_exit(status: int) -> str:
    """
    An exit status of L{ProcessExit} in words: C{killed by SIGKILL},
    C{exited with status 1}.
    """
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


def clusternode_command(
    name: str,
    bind: str,
    http: str,
    args: Sequence[str] = (),
    log_path: str | None = None,
) -> list[str]:
    """
    The command line of one C{clusternode} (C{python -m cluster.daemon})
    run by this interpreter: named C{name}, gossiping on C{bind}
    (C{host:port}), its status site on the endpoint C{http}, then C{args}.

    @param log_path: its C{--log-file}; by default the log goes to standard
        output.
    """
    return [
        sys.executable,
        "-m",
        "cluster.daemon",
        "--node-name",
        name,
        "--bind",
        bind,
        "--http",
        http,
        *(["--log-file", log_path] if log_path else []),
        *args,
    ]


def source_environment() -> dict[str, str]:
    """
    This process's environment with the checkout that holds this module
    first on C{PYTHONPATH}: a child runs this tree's code, from a source
    tree too.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [_PROJECT_ROOT, *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


class SpawnedProcess(WatchedProcess):
    """
    A process this one spawns from L{command} on C{reactor}, in
    L{source_environment}, and signals by its PID only.
    """

    reactor: IReactorTime
    _pid: int | None

    def command(self) -> list[str]:
        """
        Its command line, the executable first.
        """
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """
        Its process id once started.
        """
        return self._pid

    def start(self) -> None:
        """
        Spawn the process.
        """
        argv = self.command()
        process = IReactorProcess(self.reactor).spawnProcess(
            self._protocol, argv[0], argv, env=source_environment()
        )
        self._pid = process.pid

    def signal(self, name: str) -> None:
        """
        Send C{SIGTERM}, C{SIGKILL}, C{SIGSTOP}... (by C{name}) to this
        process only, while it runs.
        """
        if self._pid is not None and not self.ended.called:
            try:
                os.kill(self._pid, signal.Signals[f"SIG{name}"])
            except ProcessLookupError:
                pass


@attrs.define(eq=False)
class LocalNode(SpawnedProcess):
    """
    One C{clusternode} process (L{clusternode_command}) on 127.0.0.1, on
    free ports.

    @ivar name: its node name.
    @ivar args: extra flags.
    @ivar log_path: its C{--log-file}, if not standard output.
    """

    reactor: IReactorTime
    name: str
    args: Sequence[str] = ()
    gossip_port: int = attrs.field(factory=free_loopback_port)
    http_port: int = attrs.field(factory=free_loopback_port)
    log_path: str | None = None
    _protocol: ProcessExit = attrs.field(factory=ProcessExit, init=False)
    _pid: int | None = attrs.field(default=None, init=False)

    @property
    def gossip_address(self) -> str:
        return f"127.0.0.1:{self.gossip_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return clusternode_command(
            self.name,
            self.gossip_address,
            f"tcp:{self.http_port}:interface=127.0.0.1",
            self.args,
            self.log_path,
        )

    async def stop(self) -> int:
        """
        SIGTERM (a graceful leave), then wait for the exit status.
        """
        self.signal("TERM")
        return await self.ended

    async def fetch(
        self, path: str, timeout: float = FETCH_TIMEOUT
    ) -> tuple[int, bytes]:
        """
        C{GET path} on the node's status site: the status code and body.

        @raise Exception: when it fails, or has no answer within
            C{timeout} seconds (a frozen node never answers).
        """

        async def fetching() -> tuple[int, bytes]:
            agent = Agent(self.reactor)
            url = (self.url + path).encode("ascii")
            response = await agent.request(b"GET", url)
            return response.code, await read_body(response)

        return await Deferred.fromCoroutine(fetching()).addTimeout(
            timeout, self.reactor
        )

    async def get(self, path: str, timeout: float = FETCH_TIMEOUT) -> Any:
        """
        C{GET path} on the node's status site, decoded from JSON.
        """
        _, body = await self.fetch(path, timeout)
        return json.loads(body)


# --- the demo ---


def moved_keys(
    before: Mapping[str, str], after: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """
    The keys whose owner differs between C{before} and C{after} (key to
    owner): C{(key, old owner, new owner)}, in the order of C{after}.
    """
    return [
        (key, before[key], owner)
        for key, owner in after.items()
        if key in before and before[key] != owner
    ]


def _member_event(observer: str, subject: str, old: str | None, new: str | None) -> str:
    """
    One line for a change of C{observer}'s record of C{subject}.
    """
    if new is None:
        return f"{observer} forgets {subject} (gone from its member list)"
    if old is None:
        return f"{observer} sees {subject} join ({new})"
    return f"{observer} marks {subject} {new}"


def _as(state: str) -> str:
    """
    A peer state after "is": I{a viewer}, I{a participant}, I{terminating}.
    """
    return f"a {state}" if state in ("viewer", "participant") else state


@attrs.define(eq=False)
class _Watch:
    """
    What the demo last heard from one node process.

    @ivar members: each member's gossip state (alive, suspect, dead,
        left) as the node sees it, or C{None} before its first answer.
    @ivar view: the node's peers and their states as last seen; the
        owners are looked up once a view has held for two polls.
    @ivar owners: the sample keys' owners as the node answers them for
        C{view}, or C{None} while not known.
    @ivar answering: whether its last poll was answered (C{None} before
        the first).
    @ivar exit_status: once the process ended, how (see L{ProcessExit}).
    """

    node: LocalNode
    state: str = "starting"
    ready: bool = False
    members: dict[str, str] | None = None
    view: tuple[tuple[str, str, str | None], ...] | None = None
    owners: dict[str, str] | None = None
    answering: bool | None = None
    exit_status: int | None = None

    @property
    def live(self) -> bool:
        return self.exit_status is None

    def status(self) -> str:
        """
        Its state column: its own peer state, or why there is none.
        """
        if self.exit_status is not None:
            return describe_exit(self.exit_status)
        if self.answering is False:
            return "no answer"
        return self.state


@implementer(IReadDescriptor)
@attrs.define(eq=False)
class _StandardInputLines:
    """
    Calls C{on_line} for every line typed on standard input (C{fd} 0,
    read only when the reactor says it is readable: it is left blocking,
    as the shell expects of its terminal).
    """

    reactor: IReactorFDSet
    on_line: Callable[[], object]
    _buffer: bytes = b""

    def fileno(self) -> int:
        return 0

    def doRead(self) -> None:
        data = os.read(0, 4096)
        if not data:
            self.reactor.removeReader(self)
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for _ in lines:
            self.on_line()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "stdin"


def _read_standard_input(reactor: IReactorFDSet, on_line: Callable[[], object]) -> bool:
    """
    Call C{on_line} for every line on standard input when someone can type
    there: a terminal this process runs in the foreground of (reading it
    from the background would stop the process), a pipe or a socket; not a
    file nor C{/dev/null}.

    @return: whether it is read.
    """
    try:
        mode = os.fstat(0).st_mode
        if os.isatty(0):
            if os.tcgetpgrp(0) != os.getpgrp():
                return False
        elif not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return False
    except OSError:
        return False  # closed
    try:
        reactor.addReader(_StandardInputLines(reactor, on_line))
    except OSError:
        return False
    return True


@attrs.define(eq=False)
class _Demo:
    """
    The demo's nodes, what it heard from them and what it printed.
    """

    reactor: IReactorTime
    size: int
    profile: str
    watches: list[_Watch] = attrs.field(factory=list, init=False)
    started: float = attrs.field(default=0.0, init=False)
    stopping: bool = attrs.field(default=False, init=False)
    watching: bool = attrs.field(default=False, init=False)
    # How the user restarts the nodes that exited.
    restart_how: str = attrs.field(default="", init=False)
    # What was printed: each process's member states and own state, by
    # watch (a restarted process starts afresh), and the owners.
    _shown_members: dict[_Watch, dict[str, str]] = attrs.field(factory=dict, init=False)
    _shown_state: dict[_Watch, str] = attrs.field(factory=dict, init=False)
    _owners: dict[str, str] | None = attrs.field(default=None, init=False)

    def say(self, text: str, *more: str) -> None:
        """
        Print C{text} stamped with the seconds since the demo started, and
        C{more} lines under it.
        """
        elapsed = self.reactor.seconds() - self.started
        lines = [f"{elapsed:6.1f} s  {text}", *(f"          {m}" for m in more)]
        print("\n".join(lines), flush=True)

    # --- starting and restarting ---

    def flags(self, join: Sequence[str]) -> list[str]:
        joining = ["--join-addresses", ",".join(join)] if join else []
        return ["--profile", self.profile, *joining]

    def launch(self, node: LocalNode, index: int | None = None) -> _Watch:
        """
        Start C{node}, watched from now on (in place of the watch at
        C{index}, when given).
        """
        node.start()
        watch = _Watch(node)
        if index is None:
            self.watches.append(watch)
        else:
            self.watches[index] = watch
        node.ended.addCallback(self._exited, watch)
        Deferred.fromCoroutine(self._poll(watch))
        return watch

    def restart(self) -> None:
        """
        Start again, on its old ports, every node that exited, joining
        those still running.
        """
        if self.stopping:
            return
        gone = [i for i, w in enumerate(self.watches) if not w.live]
        if not gone:
            self.say("no node has exited: nothing to restart")
            return
        for index in gone:
            old = self.watches[index].node
            others = [w.node for w in self.watches if w.live]
            node = attrs.evolve(
                old, args=self.flags([n.gossip_address for n in others])
            )
            self.launch(node, index)
            joining = ", ".join(n.name for n in others) or "nobody (a new cluster)"
            self.say(f"{node.name} restarted (pid {node.pid}), joining {joining}")

    def _exited(self, status: int, watch: _Watch) -> int:
        watch.exit_status = status
        if self.stopping:
            return status
        node = watch.node
        last = node.errors.strip().splitlines()[-1:] if status > 0 else []
        self.say(
            f"{node.name} (pid {node.pid}) {describe_exit(status)}",
            *last,
            f"to start it again: {self.restart_how}",
        )
        self.refresh()
        return status

    # --- listening to the nodes ---

    async def _poll(self, watch: _Watch) -> None:
        """
        Ask C{watch}'s node for its view every L{POLL_INTERVAL} while it
        runs, each request bounded by L{ANSWER_TIMEOUT}.
        """
        node = watch.node
        while not self.stopping and watch.live:
            try:
                cluster = await node.get("/api/v0/web/cluster", ANSWER_TIMEOUT)
                await self._heard(watch, cluster)
            except Exception:
                # An exit shows as a failed request first: give the exit a
                # moment to be reported instead.
                await task.deferLater(self.reactor, POLL_INTERVAL, lambda: None)
                # (Before its first answer, a node is starting.)
                if watch.answering and watch.live and not self.stopping:
                    watch.answering = False
                    if self.watching:
                        self.say(
                            f"{node.name} (pid {node.pid}) does not answer within "
                            f"{ANSWER_TIMEOUT} s",
                            f"frozen? kill -CONT {node.pid} thaws it",
                        )
                continue
            self.refresh()
            await task.deferLater(self.reactor, POLL_INTERVAL, lambda: None)

    async def _heard(self, watch: _Watch, cluster: Any) -> None:
        me = cluster["self"]
        members = cluster["members"]
        if watch.answering is False and self.watching and not self.stopping:
            self.say(f"{watch.node.name} answers again")
        watch.answering = True
        watch.state = me["state"]
        watch.ready = bool(me["ready"])
        watch.members = {m["name"]: m["state"] for m in members}
        view = tuple(sorted((m["name"], m["state"], m["peerState"]) for m in members))
        if view != watch.view:
            # Changed: the sharder may still be taking it in.
            watch.view, watch.owners = view, None
        elif watch.owners is None:
            watch.owners = await self._lookups(watch.node)

    async def _lookups(self, node: LocalNode) -> dict[str, str]:
        answers = await gatherResults(
            [
                Deferred.fromCoroutine(
                    node.get(f"/api/v0/web/lookup?key={quote(key)}", ANSWER_TIMEOUT)
                )
                for key in SAMPLE_KEYS
            ],
            consumeErrors=True,
        )
        return {
            key: found[0]["name"] if isinstance(found, list) and found else "(none)"
            for key, found in zip(SAMPLE_KEYS, answers, strict=True)
        }

    def agreed_owners(self) -> dict[str, str] | None:
        """
        The owners every running, answering node gives, or C{None} while
        they differ or are being looked up.
        """
        answers = [w.owners for w in self.watches if w.live and w.answering]
        if not answers or any(a is None or a != answers[0] for a in answers):
            return None
        return answers[0]

    def formed(self) -> bool:
        """
        Whether every node answers, lists all as alive participants, and
        all agree on the owners.
        """
        names = {w.node.name for w in self.watches}
        return (
            all(
                w.answering
                and w.state == "participant"
                and w.members == dict.fromkeys(names, "alive")
                for w in self.watches
            )
            and self.agreed_owners() is not None
        )

    # --- printing ---

    def refresh(self) -> None:
        """
        Print what changed since the last call: each node's record of the
        others, its own state, and the keys that moved once all agree.
        """
        if not self.watching or self.stopping:
            return
        for watch in self.watches:
            self._changes_seen_by(watch)
        owners = self.agreed_owners()
        if owners is None or owners == self._owners:
            return
        if self._owners is None:  # the cluster had not formed when shown
            self._owners = owners
            return
        moved = moved_keys(self._owners, owners)
        self._owners = owners
        if moved:
            width = max(len(key) for key in SAMPLE_KEYS)
            self.say(
                "keys moved:",
                *(f"  {key:<{width}}  {old} -> {new}" for key, old, new in moved),
            )
            print("\n" + self.table() + "\n", flush=True)

    def _changes_seen_by(self, watch: _Watch) -> None:
        if watch.members is None or not watch.answering:
            return
        name = watch.node.name
        shown = self._shown_members.get(watch)
        if shown is None:
            self.say(f"{name} answers: {_as(watch.state)}")
        else:
            for subject in sorted(shown.keys() | watch.members.keys()):
                old, new = shown.get(subject), watch.members.get(subject)
                if subject != name and old != new:
                    self.say(_member_event(name, subject, old, new))
            if self._shown_state.get(watch) != watch.state:
                self.say(f"{name} is now {_as(watch.state)}")
        self._shown_members[watch] = dict(watch.members)
        self._shown_state[watch] = watch.state

    def baseline(self) -> None:
        """
        What the nodes say now is what the user has seen.
        """
        for watch in self.watches:
            if watch.members is not None and watch.answering:
                self._shown_members[watch] = dict(watch.members)
                self._shown_state[watch] = watch.state
        self._owners = self.agreed_owners()

    def table(self) -> str:
        """
        One row per node: its process, addresses and state.
        """
        rows = [
            f"{'node':<10} {'pid':<8} {'gossip':<18} {'status page':<24} "
            f"{'state':<12} ready"
        ]
        for w in self.watches:
            node = w.node
            ready = ("yes" if w.ready else "no") if w.live and w.answering else ""
            rows.append(
                f"{node.name:<10} {node.pid or '':<8} {node.gossip_address:<18} "
                f"{node.url:<24} {w.status():<12} {ready}".rstrip()
            )
        return "\n".join(rows)

    def owners_table(self) -> str:
        owners = self.agreed_owners() or {}
        lines = ["owners of sample keys:"]
        lines += [f"  {key:<12} {owners.get(key, '?')}" for key in SAMPLE_KEYS]
        return "\n".join(lines)

    # --- running ---

    async def run(self) -> None:
        reactor = self.reactor
        self.started = reactor.seconds()
        first = LocalNode(reactor, "node-1", self.flags([]))
        print(
            f"starting {self.size} clusternode processes on 127.0.0.1 "
            f"(profile {self.profile})...",
            flush=True,
        )
        seed = self.launch(first)
        # The seed first: a node that finds no seed bootstraps alone and only
        # merges at its next rejoin.
        while not (seed.answering or self.stopping or self.impatient()):
            if not seed.live:
                break
            await task.deferLater(reactor, 0.2, lambda: None)
        for i in range(2, self.size + 1):
            self.launch(
                LocalNode(reactor, f"node-{i}", self.flags([first.gossip_address]))
            )
        while not (self.formed() or self.stopping or self.impatient()):
            if not all(w.live for w in self.watches):
                break
            await task.deferLater(reactor, POLL_INTERVAL, lambda: None)
        if self.stopping:
            return
        print(f"\n{self.table()}\n\n{self.owners_table()}\n", flush=True)
        self.baseline()
        self.watching = True
        victim = self.watches[-1].node
        print(
            f"Try: kill -9 {victim.pid} crashes {victim.name}; "
            f"kill -STOP {victim.pid} freezes it (kill -CONT {victim.pid} thaws it).",
            f"To restart the nodes that exited: {self.restart_how}.",
            "Ctrl-C stops every node.\n",
            sep="\n",
            flush=True,
        )
        await Deferred()  # until Ctrl-C

    def impatient(self) -> bool:
        """
        Whether the cluster took longer to form than L{STARTUP_PATIENCE}.
        """
        return self.reactor.seconds() - self.started > STARTUP_PATIENCE

    async def stop(self) -> None:
        """
        Ask every node to leave at once (C{SIGTERM}, and C{SIGCONT} for a
        frozen one); kill those still running after L{STOP_GRACE}.
        """
        self.stopping = True
        running = [w.node for w in self.watches if w.live]
        print("\nstopping: every node leaves the cluster...", flush=True)
        began = self.reactor.seconds()
        for node in running:
            node.signal("TERM")
            node.signal("CONT")
        while any(not n.ended.called for n in running):
            if self.reactor.seconds() - began > STOP_GRACE:
                break
            await task.deferLater(self.reactor, 0.05, lambda: None)
        late = [n for n in running if not n.ended.called]
        for node in late:
            node.signal("KILL")
        await gatherResults([n.ended for n in late])
        took = self.reactor.seconds() - began
        print(
            f"stopped in {took:.1f} s: {len(running) - len(late)} left the cluster, "
            f"{len(late)} killed after {STOP_GRACE} s.",
            flush=True,
        )


def main(reactor: IReactorTime, *argv: str) -> Deferred[None]:
    """
    Run the demo until Ctrl-C.
    """
    parser = argparse.ArgumentParser(
        prog="python -m cluster.daemon.demo",
        description="A local cluster of clusternode processes to watch.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="how many (default 3)")
    parser.add_argument(
        "--profile",
        default="local",
        choices=sorted(PROFILES),
        help="gossip timings (default local)",
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes: at least 1")
    demo = _Demo(reactor, args.nodes, args.profile)

    def restart() -> None:
        demo.restart()

    demo.restart_how = f"kill -USR1 {os.getpid()}"
    if _read_standard_input(IReactorFDSet(reactor), restart):
        demo.restart_how = f"press Enter (or {demo.restart_how})"
    # A shell ignores SIGINT in what a script starts in the background:
    # Ctrl-C (or kill -INT) must stop the demo all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(
        signal.SIGUSR1,
        lambda number, frame: IReactorThreads(reactor).callFromThread(restart),
    )
    # Ctrl-C stops the reactor: stop the nodes first.
    IReactorCore(reactor).addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(demo.stop())
    )
    return Deferred.fromCoroutine(demo.run())


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
