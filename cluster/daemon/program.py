"""
L{ClusterNode}: the node program that C{twistd clusternode} runs (see
L{cluster.daemon.tap}): the cluster service and its status site, taking
work once joined, and ending the process with status 1 and one line naming
the cause when the node cannot start.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import TextIO

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.server import Site

from cluster.alloy.discovery import DiscoveryError
from cluster.alloy.service import ClusterService
from cluster.peer import PeerState

__all__ = ["PROG", "ClusterNode", "QuietSite", "describe", "exit_when_done"]

PROG = "twistd clusternode"


def exit_when_done(status: int) -> None:
    """
    End the process with C{status} once twistd (or C{twist}) is done.

    Neither has an exit status of its own: once the reactor stops they stop
    the services, remove the pid file and close the log, then return, and
    the interpreter exits with 0.  An exception in an C{atexit} hook cannot
    change that status; ending the process from the hook can, after all of
    that clean-up.
    """

    def end() -> None:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        os._exit(status)

    atexit.register(end)


def describe(failure: Failure) -> str:
    """
    Why the node could not start, in one line naming the flag at fault.
    """
    if failure.check(DiscoveryError):
        return f"--join-addresses: {failure.getErrorMessage()}"
    if failure.check(CannotListenError):
        return f"--http: {failure.getErrorMessage()}"
    return failure.getErrorMessage()


@attrs.define(eq=False, slots=False)
class ClusterNode(service.MultiService):
    """
    The node program: the cluster service and its status site, taking work
    once joined.

    When it cannot start (the site cannot listen, the cluster service fails
    to start or L{ClusterService.when_joined} fails), it writes one line
    naming the cause (L{describe}) on C{stderr}, gives C{end_process} the
    status 1 and stops the reactor, so that twistd shuts everything down as
    usual.

    @ivar cluster: the cluster service.
    @ivar site: the service that serves the status site.
    @ivar reactor: the reactor to stop.
    @ivar participate: become a participant once joined, else stay a viewer.
    @ivar stderr: where the line goes (the process's own standard error).
    @ivar end_process: given the exit status when the node cannot start
        (L{exit_when_done}; tests record it instead).
    @ivar failure: why the node could not start, once it could not.
    """

    cluster: ClusterService
    site: service.IService
    reactor: IReactorCore
    participate: bool = True
    stderr: TextIO = attrs.field(factory=lambda: sys.__stderr__ or sys.stderr)
    end_process: Callable[[int], object] = exit_when_done
    failure: Failure | None = attrs.field(default=None, init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        service.MultiService.__init__(self)
        self.cluster.setServiceParent(self)
        self.site.setServiceParent(self)

    def privilegedStartService(self) -> None:
        # twistd's first step, before it drops privileges: listen on --http.
        try:
            self.site.privilegedStartService()
        except Exception:
            self._fail(Failure(), log=True)

    def startService(self) -> None:
        service.Service.startService(self)
        for child in (self.site, self.cluster):
            if self.failure is None:
                try:
                    child.startService()
                except Exception:
                    # The cluster service logs why it failed; the site does not.
                    self._fail(Failure(), log=child is self.site)
        if self.failure is None:
            self.cluster.when_joined().addCallbacks(self._joined, self._fail)

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        # A child that failed to start has stopped already.
        running = [child for child in (self.cluster, self.site) if child.running]
        stopped = gatherResults([maybeDeferred(child.stopService) for child in running])
        return stopped.addCallback(lambda _: None)

    def _joined(self, _: object) -> None:
        if self.participate:
            self.cluster.change_state(PeerState.PARTICIPANT)

    def _fail(self, failure: Failure, log: bool = False) -> None:
        if self.failure is not None:
            return
        self.failure = failure
        line = describe(failure)
        if log:
            self._log.error("{line}", line=line)
        # twistd sends sys.stderr to the log: the line goes to the stderr
        # of the process, where whoever started it looks.
        print(f"{PROG}: {line}", file=self.stderr, flush=True)
        self.end_process(1)
        if self.reactor.running:
            self.reactor.stop()
        else:  # twistd has yet to run it
            self.reactor.callWhenRunning(self.reactor.stop)


class QuietSite(Site):
    """
    The status site without an access log: Prometheus scrapes and status
    pages refresh every few seconds, as in Alloy, which logs no requests.
    """

    noisy = False

    def startFactory(self) -> None:
        # No request log: no need for the base class's once-a-second timer
        # that keeps the log's timestamp current (an idle node would wake
        # for nothing else).
        pass

    def log(self, request: Request) -> None:
        pass
