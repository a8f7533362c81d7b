"""
C{clusternode}, also C{python -m cluster.daemon}: one cluster node in the
foreground, with an exit status.

It reads the node's flags (L{ProgramOptions}: those of
L{cluster.daemon.tap.ClusterNodeOptions}, plus where the log and the pid
file go), starts the node (L{cluster.daemon.tap.makeService}) and runs the
reactor with Twisted's application runner, as C{twist} does.  The log goes
to standard output (or C{--log-file}); standard error carries at most one
line, C{clusternode: --flag: cause}, and the exit status says how it went:

  - 2: the command line is wrong (a flag's value, or a file a flag names);
    the usage text comes only with C{--help};
  - 1: the node could not start (a port in use, join addresses of which
    none resolves, a name another node holds, the pid file);
  - 0: the node ran and stopped.

Stopped by SIGTERM or SIGINT (a graceful leave), the process ends by that
signal once everything is shut down, as C{twist} and C{twistd} do.

C{twistd clusternode} runs the same program through the plugin, but twistd
has no exit status: once its reactor has run, it exits 0, whatever stopped
it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import ExitStack
from importlib.metadata import PackageNotFoundError, version
from typing import TextIO

from twisted.application.app import _exitWithSignal
from twisted.application.runner._pidfile import (
    AlreadyRunningError,
    InvalidPIDFileError,
    PIDFile,
)
from twisted.application.runner._runner import Runner
from twisted.copyright import version as twisted_version
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorTime,
    _ISupportsExitSignalCapturing,
)
from twisted.python import usage
from twisted.python.filepath import FilePath

from cluster.daemon.logs import node_log_factory
from cluster.daemon.tap import ClusterNodeOptions, makeService

__all__ = ["PROG", "ProgramOptions", "main", "run"]

PROG = "clusternode"


class ProgramOptions(ClusterNodeOptions):
    """
    The flags of C{clusternode}: the node's, plus where the log and the pid
    file go (twistd has flags of its own for those).

    @ivar log_file: where the log goes, once parsed.
    """

    synopsis = f"Usage: {PROG} [options]"
    optParameters = [
        ["log-file", None, "-", "Where the log goes (-: standard output)."],
        ["pid-file", None, "", "Hold the process id in this file while running."],
    ]
    log_file: TextIO

    def opt_version(self) -> None:
        """
        Print the versions of this program and Twisted, and exit.
        """
        try:
            ours = version("twisted-cluster")
        except PackageNotFoundError:  # run from a source tree
            ours = "(not installed)"
        print(f"{PROG} {ours} (Twisted {twisted_version})")
        sys.exit(0)

    def postOptions(self) -> None:
        super().postOptions()
        path = self["log-file"]
        if path == "-":
            self.log_file = sys.stdout
            return
        try:
            self.log_file = open(path, "a", encoding="utf-8")
        except OSError as e:
            words = (e.strerror or str(e)).lower()
            raise usage.UsageError(f"--log-file: cannot open {path}: {words}") from None


def main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    """
    Run C{clusternode} with the flags C{argv} (the process's by default).

    @param stderr: where the one line goes (the process's by default).
    @return: the exit status (see the module docstring); C{--help} and
        C{--version} exit 0 through C{SystemExit}.
    """
    err = stderr if stderr is not None else sys.stderr
    options = ProgramOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"{PROG}: {e}", file=err, flush=True)
        return 2
    from twisted.internet import reactor  # the global one, at the edge

    return _run(options, IReactorCore(reactor), err)


def _run(options: ProgramOptions, reactor: IReactorCore, stderr: TextIO) -> int:
    node = makeService(options, IReactorTime(reactor), program=PROG)
    node.stderr = stderr
    with ExitStack() as held:
        if options["pid-file"]:
            problem = _hold_pid_file(held, options["pid-file"])
            if problem is not None:
                print(f"{PROG}: --pid-file: {problem}", file=stderr, flush=True)
                return 1
        # As twist: start, stop before the reactor shuts down, run.  twistd
        # listens first, before it drops privileges; so does the node.
        node.privilegedStartService()
        node.startService()
        reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
        Runner(
            reactor=reactor,
            logFile=options.log_file,
            fileLogObserverFactory=node_log_factory(options.cluster_options.node_name),
        ).run()
    options.log_file.flush()
    if _ISupportsExitSignalCapturing.providedBy(reactor):
        stopped_by = reactor._exitSignal
        if stopped_by is not None:
            _exitWithSignal(stopped_by)
    return node.exit_status


def _hold_pid_file(held: ExitStack, path: str) -> str | None:
    """
    Write our process id to C{path} until C{held} closes.

    @return: why not, or C{None} once written.
    """
    pid_file = PIDFile(FilePath(path))
    try:
        held.enter_context(pid_file)
    except AlreadyRunningError:
        return f"{path} names process {pid_file.read()}, which is running"
    except InvalidPIDFileError:
        return f"{path} does not hold a process id"
    except OSError as e:
        return f"cannot write {path}: {(e.strerror or str(e)).lower()}"
    return None


def run() -> None:
    """
    The C{clusternode} console script: L{main}, then exit with its status.
    """
    sys.exit(main())
