"""
What the scripts under C{bench/} share: the processes a run starts (and
stops, by their PID and no other), polling on the reactor, reading our
nodes' status sites, the printed tables and the JSON, progress lines,
L{RunFailed} and argument parsing.

A script run as C{python bench/NAME.py} has C{bench/} on its path, not
the checkout's root; it puts the root first and imports this module as
C{bench._harness}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import attrs
import psutil
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    FirstError,
    gatherResults,
)
from twisted.internet.interfaces import IReactorCore, IReactorProcess, IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool

from cluster.daemon.demo import (
    LocalNode,
    ProcessExit,
    WatchedProcess,
    read_body,
    source_environment,
)

T = TypeVar("T")

MIB = 1024 * 1024
STARTUP = 30.0  # a cold interpreter importing Twisted, on a loaded machine


class RunFailed(Exception):
    """
    The run could not measure what it is for (not a missed target): the
    message says what went wrong.
    """


class Interrupted(Exception):
    """
    Ctrl-C (or SIGTERM) stopped the run.
    """


def exit_failed(reason: str, status: int = 1) -> NoReturn:
    """
    Say on standard error why the run failed, then exit with C{status}.
    """
    print(f"run failed: {reason}", file=sys.stderr)
    raise SystemExit(status)


def progress(message: str) -> None:
    """
    A progress line, on standard error (the results go to standard output).
    """
    print(message, file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------


@attrs.define(eq=False)
class Child(WatchedProcess):
    """
    One process a run started, its output collected in memory.

    @ivar node: for one of our cluster nodes (or a program taking the flags
        of C{clusternode}), its name, ports and command line.
    @ivar pid: its process id once started; it is signalled by this only.
    """

    name: str
    command: Sequence[str]
    node: LocalNode | None = None
    pid: int | None = attrs.field(default=None, init=False)
    _protocol: ProcessExit = attrs.field(factory=ProcessExit, init=False)

    @classmethod
    def of(cls, node: LocalNode) -> Child:
        """
        The process that runs C{node}'s command line.
        """
        return cls(node.name, node.command(), node)

    @property
    def gossip_address(self) -> str:
        """
        C{127.0.0.1:port} our node gossips on.
        """
        assert self.node is not None, f"{self.name} is not a node"
        return self.node.gossip_address

    def running(self) -> bool:
        return self.pid is not None and not self.ended.called

    def start(self, reactor: IReactorTime) -> None:
        """
        Spawn it in L{source_environment} (so that a node runs this tree's
        code, as L{LocalNode} does).
        """
        process = IReactorProcess(reactor).spawnProcess(
            self._protocol,
            self.command[0],
            list(self.command),
            env=source_environment(),
        )
        self.pid = process.pid

    def signal(self, name: str) -> None:
        """
        Send C{SIGTERM}, C{SIGKILL}... (by C{name}) to this process only.
        """
        if self.running():
            assert self.pid is not None
            try:
                os.kill(self.pid, signal.Signals[f"SIG{name}"])
            except ProcessLookupError:
                pass

    def tail(self, lines: int = 15) -> str:
        """
        The last C{lines} lines it wrote, and of its log file if it has one.
        """
        text = self.output
        if self.node is not None and self.node.log_path:
            try:
                with open(self.node.log_path, encoding="utf-8", errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return "\n".join(text.splitlines()[-lines:])


@attrs.frozen
class Stopped:
    """
    How L{Processes.stop_all} went.

    @ivar seconds: from the first signal until every process had exited.
    @ivar killed: how many were still running after the grace, and got
        C{SIGKILL}.
    """

    seconds: float
    killed: int


@attrs.define(eq=False)
class Processes:
    """
    Every process a run starts.  A process that exits before it was asked
    to (L{expect_exit}) or before L{stop_all} fails the run at the next
    L{check}.

    @ivar now: the run's time in seconds, for timeouts and measurements.
    """

    reactor: IReactorTime
    now: Callable[[], float] = time.monotonic
    children: list[Child] = attrs.field(factory=list)
    interrupted: bool = False
    last_stop: Stopped | None = None
    _expected: set[Child] = attrs.field(factory=set)
    _unexpected: list[str] = attrs.field(factory=list)
    _stopping: list[Deferred[Stopped]] | None = None

    def start(self, child: Child) -> Child:
        child.start(self.reactor)
        self.children.append(child)
        child.ended.addCallback(self._ended, child)
        return child

    def node(self, node: LocalNode) -> Child:
        """
        Start one of our nodes (or a program taking its flags).
        """
        return self.start(Child.of(node))

    def command(self, name: str, *command: str) -> Child:
        return self.start(Child(name, command))

    def expect_exit(self, child: Child) -> None:
        """
        C{child} is about to be killed or stopped on purpose.
        """
        self._expected.add(child)

    def _ended(self, code: int, child: Child) -> int:
        if self._stopping is None and child not in self._expected:
            self._unexpected.append(
                f"{child.name} exited unexpectedly with status {code}:\n{child.tail()}"
            )
        return code  # others may wait on it too

    def check(self) -> None:
        """
        @raise Interrupted: on Ctrl-C.
        @raise RunFailed: when a process exited unexpectedly.
        """
        if self.interrupted:
            raise Interrupted()
        if self._unexpected:
            raise RunFailed("; ".join(self._unexpected))

    def running(self) -> list[Child]:
        return [child for child in self.children if child.running()]

    async def wait_exit(self, child: Child, timeout: float) -> bool:
        """
        Wait for C{child} to exit; C{SIGKILL} it when it takes longer.

        @return: whether it exited by itself.
        """
        exited = await wait_until(
            self.reactor, lambda: child.ended.called, timeout, 0.05, self.now
        )
        if not exited:
            child.signal("KILL")
            await child.ended
        return exited

    async def stop_all(self, grace: float) -> Stopped:
        """
        C{SIGTERM} every process still running (a node leaves gracefully),
        then C{SIGKILL} those still running after C{grace} seconds (at once
        when C{grace} is 0).  A call while one runs waits for that one.
        """
        if self._stopping is not None:
            waiter: Deferred[Stopped] = Deferred()
            self._stopping.append(waiter)
            return await waiter
        self._stopping = []
        running = self.running()
        began = self.now()
        if grace > 0:
            for child in running:
                child.signal("TERM")
            await wait_until(
                self.reactor,
                lambda: all(child.ended.called for child in running),
                grace,
                0.1,
                self.now,
            )
        stubborn = [child for child in running if child.running()]
        for child in stubborn:
            child.signal("KILL")
        await gatherResults([child.ended for child in stubborn])
        stopped = Stopped(self.now() - began, len(stubborn))
        if running:
            self.last_stop = stopped
        waiters, self._stopping = self._stopping, None
        for waiter in waiters:
            waiter.callback(stopped)
        return stopped


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} so far.
    """
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def rss_mib(pid: int) -> float:
    """
    Resident memory of process C{pid}, in MiB.
    """
    return float(psutil.Process(pid).memory_info().rss) / MIB


# --- running on the reactor ----------------------------------------------


async def sleep(clock: IReactorTime, seconds: float) -> None:
    await task.deferLater(clock, max(0.0, seconds), lambda: None)


async def wait_until(
    clock: IReactorTime,
    done: Callable[[], bool],
    timeout: float,
    interval: float,
    now: Callable[[], float] = time.monotonic,
) -> bool:
    """
    Check C{done} every C{interval} seconds, without blocking the reactor.

    @param now: the time in seconds.
    @return: whether it held within C{timeout} seconds.
    """
    deadline = now() + timeout
    while not done():
        if now() >= deadline:
            return False
        await sleep(clock, min(interval, deadline - now()))
    return True


@attrs.define
class Poller:
    """
    Polls until something is seen, every C{interval} seconds, checking the
    processes between two polls.
    """

    processes: Processes
    interval: float

    async def until(
        self,
        seen: Callable[[], Coroutine[Deferred[Any], Any, bool]],
        bound: float,
        failure: Callable[[], str],
        started: float | None = None,
    ) -> float:
        """
        Poll C{seen} until it answers C{True}.

        @param started: when the wait began (L{Processes.now}); now if
            C{None}.
        @return: the seconds from C{started} to the answer.
        @raise RunFailed: with C{failure()} when that takes more than
            C{bound} seconds.
        """
        now = self.processes.now
        began = now() if started is None else started
        while True:
            self.processes.check()
            if await seen():
                return now() - began
            if now() - began > bound:
                raise RunFailed(failure())
            await sleep(self.processes.reactor, self.interval)

    async def each(
        self,
        watchers: Sequence[T],
        seen: Callable[[Sequence[T]], Coroutine[Deferred[Any], Any, dict[T, float]]],
        bound: float,
        failure: Callable[[Sequence[T]], str],
        started: float | None = None,
    ) -> dict[T, float]:
        """
        Poll the C{watchers} not seen yet until none is left.

        @param seen: of the watchers it is given, those that are seen, each
            with when it answered (L{Processes.now}).
        @return: every watcher, with when it was first seen.
        @raise RunFailed: with C{failure(late)} after C{bound} seconds.
        """
        first: dict[T, float] = {}

        async def all_seen() -> bool:
            late = [w for w in watchers if w not in first]
            first.update(await seen(late))
            return len(first) == len(watchers)

        await self.until(
            all_seen,
            bound,
            lambda: failure([w for w in watchers if w not in first]),
            started,
        )
        return first


async def gather(coroutines: Iterable[Coroutine[Deferred[Any], Any, T]]) -> list[T]:
    """
    Run C{coroutines} concurrently; the first to fail fails the lot with
    its own exception (not wrapped in a L{FirstError}).
    """
    running = [Deferred.fromCoroutine(coroutine) for coroutine in coroutines]
    try:
        return await gatherResults(running, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
        raise  # not reached


async def supervised(
    processes: Processes,
    work: Coroutine[Deferred[Any], Any, T],
    grace: float,
) -> T:
    """
    Run C{work}, then stop every process it started (L{Processes.stop_all}
    with C{grace}), whether it succeeded or not.  When Ctrl-C or SIGTERM
    stops the reactor, the processes are stopped first, and C{work} is
    cancelled where it waits.

    @raise Interrupted: when it was stopped so.
    """
    running = Deferred.fromCoroutine(work)
    core = IReactorCore(processes.reactor)
    finished = False

    def interrupted() -> Deferred[None] | None:
        if finished:
            return None
        processes.interrupted = True
        stopping = Deferred.fromCoroutine(processes.stop_all(grace))
        return stopping.addBoth(lambda _: None if running.called else running.cancel())

    trigger = core.addSystemEventTrigger("before", "shutdown", interrupted)
    try:
        return await running
    except Exception:
        if processes.interrupted:
            # Whatever the stopped processes made it fail with.
            raise Interrupted() from None
        raise
    finally:
        await processes.stop_all(grace)
        finished = True
        if not processes.interrupted:
            core.removeSystemEventTrigger(trigger)


def react(main: Callable[[IReactorTime], Coroutine[Deferred[Any], Any, None]]) -> None:
    """
    Run C{main} on the global reactor, then exit (with C{SystemExit}'s
    status when it raises one).
    """
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))


# --- our nodes' status sites ---------------------------------------------


@attrs.define(eq=False)
class StatusSites:
    """
    C{GET}s on our nodes' status sites.

    @ivar persistent: keep one connection open to each node.
    @ivar concurrency: at most this many requests in flight (all if
        C{None}).
    """

    reactor: IReactorTime
    timeout: float = 5.0
    persistent: bool = False
    concurrency: int | None = None
    _pool: HTTPConnectionPool = attrs.field(init=False)
    _agent: Agent = attrs.field(init=False)
    _in_flight: DeferredSemaphore | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._pool = HTTPConnectionPool(self.reactor, persistent=self.persistent)
        self._pool.maxPersistentPerHost = 1
        self._agent = Agent(self.reactor, pool=self._pool)
        self._in_flight = (
            None if self.concurrency is None else DeferredSemaphore(self.concurrency)
        )

    async def get(self, child: Child, path: str) -> bytes | None:
        """
        C{GET path} on C{child}'s status site: the body of a 200 answer, or
        C{None} for any other answer or none in time (a node not answering
        yet, or any more: the callers poll again).
        """
        if self._in_flight is None:
            return await self._get(child, path)
        async with self._in_flight:
            return await self._get(child, path)

    async def _get(self, child: Child, path: str) -> bytes | None:
        assert child.node is not None, f"{child.name} is not a node"
        url = f"{child.node.url}{path}".encode("ascii")

        async def fetch() -> tuple[int, bytes]:
            response = await self._agent.request(b"GET", url)
            return response.code, await read_body(response)

        request = Deferred.fromCoroutine(fetch())
        request.addTimeout(self.timeout, self.reactor)
        try:
            code, body = await request
        except CancelledError:
            raise  # the run is being stopped (a timeout is a TimeoutError)
        except Exception:
            return None
        return body if code == 200 else None

    async def cluster(self, child: Child) -> Any:
        """
        C{child}'s C{/api/v0/web/cluster}, decoded, or C{None}.
        """
        body = await self.get(child, "/api/v0/web/cluster")
        return None if body is None else json.loads(body)

    async def metrics(self, child: Child) -> list[Sample] | None:
        """
        C{child}'s C{/metrics}, parsed, or C{None}.
        """
        body = await self.get(child, "/metrics")
        return None if body is None else metric_samples(body.decode("utf-8"))

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


@attrs.frozen
class Sample:
    """
    One sample of a Prometheus text page.
    """

    name: str
    labels: Mapping[str, str]
    value: float


def metric_samples(text: str) -> list[Sample]:
    """
    Every sample of a Prometheus text page.
    """
    return [
        Sample(sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def metric_totals(samples: Iterable[Sample]) -> dict[str, float]:
    """
    Each sample name to the sum of its samples.
    """
    totals: dict[str, float] = {}
    for sample in samples:
        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def by_label(samples: Iterable[Sample], name: str, label: str) -> dict[str, float]:
    """
    The samples named C{name}, by their value of C{label}.
    """
    return {s.labels[label]: s.value for s in samples if s.name == name}


MEMBER_EVENTS = "cluster_node_gossip_member_events_total"


# --- tables and JSON -------------------------------------------------------


@attrs.frozen
class Column:
    """
    A table column: C{align} is C{<} or C{>}.
    """

    title: str
    width: int
    align: str = ">"


@attrs.frozen
class Table:
    """
    Columns of text, a line at a time: fixed widths, joined by
    C{separator}, no trailing space.
    """

    columns: Sequence[Column]
    separator: str = " | "

    @classmethod
    def fitting(
        cls,
        titles: Sequence[str],
        rows: Sequence[Sequence[str]] = (),
        narrowest: int = 0,
        aligns: str = "",
        separator: str = " | ",
    ) -> Table:
        """
        Columns as wide as their title, their widest cell and C{narrowest};
        right-aligned unless C{aligns} says otherwise, column by column.
        """
        widths = [
            max([len(title), narrowest, *(len(row[i]) for row in rows if i < len(row))])
            for i, title in enumerate(titles)
        ]
        return cls(
            [
                Column(title, width, aligns[i] if i < len(aligns) else ">")
                for i, (title, width) in enumerate(zip(titles, widths, strict=True))
            ],
            separator,
        )

    def line(self, cells: Sequence[object]) -> str:
        """
        One line of C{cells} (fewer cells than columns fill the first ones).
        """
        return self.separator.join(
            f"{cell!s:{column.align}{column.width}}"
            for column, cell in zip(self.columns, cells, strict=False)
        ).rstrip()

    def header(self) -> str:
        return self.line([column.title for column in self.columns])

    def rule(self) -> str:
        return "-" * len(self.header())

    def lines(self, rows: Iterable[Sequence[object]], rule: bool = False) -> list[str]:
        """
        The header, a rule under it if asked, and a line per row.
        """
        head = [self.header(), *([self.rule()] if rule else [])]
        return head + [self.line(row) for row in rows]


def print_fields(result: Mapping[str, object]) -> None:
    """
    One C{key  value} line per field, the values aligned.
    """
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


def write_json(path: str | None, data: object) -> None:
    """
    Write C{data} to C{path} (nothing when C{None}).
    """
    if path is not None:
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


# --- the command line ----------------------------------------------------


def parser(script: str, doc: str | None) -> argparse.ArgumentParser:
    """
    The argument parser of C{bench/script}, its module docstring as the
    help, with C{--json PATH}.
    """
    parser = argparse.ArgumentParser(
        prog=f"bench/{os.path.basename(script)}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json", metavar="PATH", type=output_path, help="also write the results here"
    )
    return parser


def add_options(
    parser: argparse.ArgumentParser,
    options: Iterable[tuple[str, Callable[[str], Any], object, str]],
) -> None:
    """
    Add each C{(flag, type, default, help)} of C{options} to C{parser}.
    """
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default, help=text)


def at_least(minimum: int) -> Callable[[str], int]:
    """
    An argument type: a whole number of at least C{minimum}.
    """

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"at least {minimum}")
        return value

    return whole


def seconds(text: str) -> float:
    """
    An argument type: a positive, finite number of seconds.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("a positive number of seconds")
    return value


def output_path(text: str) -> str:
    """
    An argument type: a file to write, in a directory that exists.
    """
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"no such directory: {folder}")
    return text
