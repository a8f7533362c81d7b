"""
A local demo cluster: C{python -m cluster.daemon.demo [--nodes 3]}.

It starts that many C{twistd clusternode} processes on 127.0.0.1 with free
ports, joins them through the first, and prints the peer table and the
owners of a dozen sample keys, again whenever either changes.  Ctrl-C
stops them all gracefully (SIGTERM: each announces I{terminating} and
leaves).

L{LocalNode} is also what the test suite and the benchmarks use to run
real node processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorCore, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.iweb import IResponse

from cluster.daemon.ports import free_loopback_port

__all__ = ["LocalNode", "ProcessExit", "WatchedProcess", "main", "read_body"]

SAMPLE_KEYS = [f"tenant-{i}" for i in range(1, 13)]
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def read_body(response: IResponse) -> bytes:
    """
    The whole body of C{response}.

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
        self.done: Deferred[bytes] = Deferred()
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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


@attrs.define(eq=False)
class LocalNode(WatchedProcess):
    """
    One C{twistd -n clusternode} process on 127.0.0.1, on free ports.

    @ivar name: its node name.
    @ivar args: extra flags.
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
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            *(["--logfile", self.log_path] if self.log_path else []),
            "clusternode",
            "--node-name",
            self.name,
            "--bind",
            self.gossip_address,
            "--http",
            f"tcp:{self.http_port}:interface=127.0.0.1",
            *self.args,
        ]

    def start(self) -> None:
        """
        Spawn the process (the checkout it comes from on its path, so that
        the demo runs from a source tree too).
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PROJECT_ROOT, *filter(None, [env.get("PYTHONPATH")])]
        )
        process = IReactorProcess(self.reactor).spawnProcess(
            self._protocol, sys.executable, self.command(), env=env
        )
        self._pid = process.pid

    def signal(self, name: str) -> None:
        """
        Send C{SIGTERM}, C{SIGKILL}... to this process only (by its PID).
        """
        if self._pid is not None and not self.ended.called:
            try:
                os.kill(self._pid, getattr(signal, f"SIG{name}"))
            except ProcessLookupError:
                pass

    async def stop(self) -> int:
        """
        SIGTERM (a graceful leave), then wait for the exit status.
        """
        self.signal("TERM")
        return await self.ended

    async def fetch(self, path: str) -> tuple[int, bytes]:
        """
        C{GET path} on the node's status site: the status code and body.
        """
        agent = Agent(self.reactor)
        response = await agent.request(b"GET", (self.url + path).encode("ascii"))
        return response.code, await read_body(response)

    async def get(self, path: str) -> Any:
        """
        C{GET path} on the node's status site, decoded from JSON.
        """
        _, body = await self.fetch(path)
        return json.loads(body)


async def _snapshot(nodes: list[LocalNode]) -> str:
    lines = [f"{'node':<10} {'gossip':<18} {'http':<24} {'state':<12} ready"]
    owners: list[str] = []
    for node in nodes:
        try:
            cluster = await node.get("/api/v0/web/cluster")
        except Exception:
            lines.append(f"{node.name:<10} (not answering)")
            continue
        me = cluster["self"]
        ready = "yes" if me["ready"] else "no"
        row = [f"{me['name']:<10}", f"{me['addr']:<18}", f"{node.url:<24}"]
        lines.append(" ".join([*row, f"{me['state']:<12}", ready]))
    for key in SAMPLE_KEYS:
        answer = "?"
        for node in nodes:
            try:
                found = await node.get(f"/api/v0/web/lookup?key={quote(key)}")
            except Exception:
                continue
            if isinstance(found, list):
                answer = ", ".join(peer["name"] for peer in found)
            else:
                answer = found.get("error", "?")
            break
        owners.append(f"  {key:<12} {answer}")
    return "\n".join([*lines, "", "owners of sample keys:", *owners])


async def _demo(reactor: IReactorTime, size: int, profile: str) -> None:
    first = LocalNode(reactor, "node-1", ["--profile", profile])
    nodes = [first] + [
        LocalNode(
            reactor,
            f"node-{i}",
            ["--profile", profile, "--join-addresses", first.gossip_address],
        )
        for i in range(2, size + 1)
    ]
    first.start()
    # The seed first: a node that finds no seed bootstraps alone and only
    # merges at its next rejoin.
    while not first.ended.called:
        try:
            await first.fetch("/-/healthy")
            break
        except Exception:
            await task.deferLater(reactor, 0.2, lambda: None)
    for node in nodes[1:]:
        node.start()

    stopping: list[bool] = []

    async def stop_all() -> None:
        stopping.append(True)
        print("\nstopping: each node leaves the cluster...", flush=True)
        await gatherResults([Deferred.fromCoroutine(node.stop()) for node in nodes])
        print("stopped.", flush=True)

    # Ctrl-C stops the reactor: stop the nodes gracefully first.
    IReactorCore(reactor).addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(stop_all())
    )
    print(f"{size} twistd clusternode processes on 127.0.0.1; Ctrl-C stops them.")
    shown = ""
    while not any(node.ended.called for node in nodes):
        await task.deferLater(reactor, 1.0, lambda: None)
        try:
            await gatherResults(
                [Deferred.fromCoroutine(n.fetch("/-/healthy")) for n in nodes],
                consumeErrors=True,
            )
        except Exception:
            continue  # still starting
        snapshot = await _snapshot(nodes)
        if snapshot != shown:
            print(f"\n{snapshot}", flush=True)
            shown = snapshot
    for node in nodes:
        if node.ended.called and not stopping:
            print(f"{node.name} exited:\n{node.output[-2000:]}", file=sys.stderr)


def main(reactor: IReactorTime, *argv: str) -> Deferred[None]:
    """
    Run the demo until Ctrl-C.
    """
    parser = argparse.ArgumentParser(prog="python -m cluster.daemon.demo")
    parser.add_argument("--nodes", type=int, default=3, help="how many (default 3)")
    parser.add_argument("--profile", default="local", choices=["lan", "wan", "local"])
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes: at least 1")
    return Deferred.fromCoroutine(_demo(reactor, args.nodes, args.profile))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
