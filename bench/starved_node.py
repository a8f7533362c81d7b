"""
A busy application embedding a cluster node, for C{bench/starve.py} and
the starvation tests:

    python bench/starved_node.py --block 1 --every 5 [clusternode flags]

It runs the node C{clusternode} runs (L{cluster.daemon.tap.makeService}:
the cluster service, its status site and C{/metrics} on C{--http}) inside
an application of its own, whose other service blocks the reactor with
C{time.sleep(block)} every C{every} seconds, as an application doing
blocking or CPU-bound work on the reactor thread would.  Every other flag
is one of the node's flags of C{clusternode} (the log and the pid file
flags are not: the log goes to standard output).  Each block is logged
when it ends (C{blocked the reactor for 1.001 s}), with the node's own log.
SIGTERM or Ctrl-C stop it gracefully, as C{clusternode}: the node leaves.

L{StarvedNode} runs the program as a L{cluster.daemon.demo.LocalNode} does a
C{clusternode} process; L{blocked_times} reads its blocks from its
output.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from typing import cast

if __name__ == "__main__":
    # Run as a script: bench/ is on the path, not the checkout's root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import attrs
from twisted.application import service
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage

from cluster.daemon import tap
from cluster.daemon.demo import LocalNode
from cluster.gossip.interfaces import reactor_or_global

__all__ = ["StarvedNode", "StarvedOptions", "Starver", "blocked_times", "main"]

SCRIPT = os.path.abspath(__file__)
BLOCKED = re.compile(r"blocked the reactor for (\d+\.\d+) s")


def blocked_times(output: str) -> list[float]:
    """
    How long each block lasted, in seconds, from the program's output.
    """
    return [float(took) for took in BLOCKED.findall(output)]


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(f"not a number of seconds: {text!r}")
    return value


class StarvedOptions(tap.Options):
    """
    The node's flags (L{tap.ClusterNodeOptions}, those of C{clusternode}
    but C{--log-file} and C{--pid-file}), and how the application starves
    the reactor.
    """

    synopsis = "--block SECONDS --every SECONDS [clusternode options]"
    optParameters = [
        ["block", None, "1", "Seconds the reactor is blocked each time."],
        ["every", None, "5", "Seconds from one block to the next."],
    ]

    def postOptions(self) -> None:
        for flag in ("block", "every"):
            try:
                self[flag] = _seconds(self[flag])
            except ValueError as e:
                raise usage.UsageError(f"--{flag}: {e}") from None
        if not self["block"] < self["every"]:
            raise usage.UsageError(
                "--block must be shorter than --every (else the reactor never runs)"
            )
        super().postOptions()


@attrs.define(eq=False, slots=False)
class Starver(service.Service):
    """
    The busy part of the application: every C{every} seconds (the first
    C{every} seconds after it starts), it blocks the reactor for C{block}
    seconds.

    @ivar blocks: how many times it has blocked the reactor.
    """

    block: float
    every: float
    reactor: IReactorTime = attrs.field(default=None, converter=reactor_or_global)
    blocks: int = attrs.field(default=0, init=False)
    _loop: LoopingCall | None = attrs.field(default=None, init=False)
    _log = Logger()

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._starve)
        self._loop.clock = self.reactor
        self._loop.start(self.every, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _starve(self) -> None:
        began = time.monotonic()
        time.sleep(self.block)
        self.blocks += 1
        self._log.info(
            "blocked the reactor for {took:.3f} s (block {count})",
            took=time.monotonic() - began,
            count=self.blocks,
        )


def application(options: StarvedOptions) -> service.MultiService:
    """
    The application's services: the C{clusternode} node and the
    L{Starver}, on the global reactor.
    """
    top = service.MultiService()
    tap.makeService(options).setServiceParent(top)
    Starver(options["block"], options["every"]).setServiceParent(top)
    return top


def main(argv: Sequence[str]) -> None:
    """
    Parse C{argv} and run the application until SIGTERM or Ctrl-C.
    """
    options = StarvedOptions()
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        print(f"{options}\n{sys.argv[0]}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stdout),
                [LogLevelFilterPredicate(LogLevel.info)],
            )
        ]
    )
    from twisted.internet import reactor

    top = application(options)
    # As clusternode does: start now (a port in use ends the program here), and
    # stop gracefully, the node leaving, before the reactor stops.
    top.startService()
    core = cast(IReactorCore, reactor)
    core.addSystemEventTrigger("before", "shutdown", top.stopService)
    core.run()


@attrs.define(eq=False)
class StarvedNode(LocalNode):
    """
    This program as a process on 127.0.0.1, on free ports (see
    L{LocalNode}; C{args} are C{clusternode} flags).

    @ivar block: seconds the reactor is blocked each time.
    @ivar every: seconds from one block to the next.
    """

    block: float = 1.0
    every: float = 5.0

    def command(self) -> list[str]:
        return [
            sys.executable,
            SCRIPT,
            *("--block", repr(self.block), "--every", repr(self.every)),
            *("--node-name", self.name, "--bind", self.gossip_address),
            *("--http", f"tcp:{self.http_port}:interface=127.0.0.1"),
            *self.args,
        ]

    def blocked(self) -> list[float]:
        """
        How long each block so far lasted, in seconds, from the log.
        """
        return blocked_times(self.output)


if __name__ == "__main__":
    main(sys.argv[1:])
