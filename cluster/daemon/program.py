"""
L{ClusterNode}: the node program that C{clusternode} and C{twistd
clusternode} run (see L{cluster.daemon.tap}): the cluster service and its
status site, taking work once joined, and, when the node cannot start, one
line naming the flag and the cause (L{describe}) and a stopped reactor.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
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
from cluster.ckit.node import NameConflictError
from cluster.daemon.logs import log_through
from cluster.gossip.address import join_host_port
from cluster.gossip.advertise import AdvertiseError
from cluster.gossip.errors import BindError, JoinRefused, cannot_listen
from cluster.peer import PeerState

__all__ = ["ClusterNode", "QuietSite", "describe"]

# The flag behind each way a node fails to start.
_FLAG_OF_ERROR = (
    (DiscoveryError, "--join-addresses"),
    # Peers answered and refused us: "address refused us: cause".
    (JoinRefused, "--join-addresses"),
    (BindError, "--bind"),
    (AdvertiseError, "--advertise-address"),
    (NameConflictError, "--node-name"),
)


def describe(failure: Failure) -> str:
    """
    Why the node could not start, in one line naming the flag at fault
    (and the address or file), the cause in words.
    """
    if isinstance(failure.value, CannotListenError):  # only the site listens
        return f"--http: {_cannot_listen(failure.value)}"
    for error, flag in _FLAG_OF_ERROR:
        if failure.check(error):
            return f"{flag}: {failure.getErrorMessage()}"
    return failure.getErrorMessage()


def _cannot_listen(error: CannotListenError) -> str:
    if error.interface is None:  # a UNIX socket: the port is its path
        where = str(error.port)
    elif error.interface in ("", "0.0.0.0", "::"):
        where = f"port {error.port}"
    else:
        where = join_host_port(error.interface, error.port)
    return cannot_listen(where, error.socketError)


@attrs.define(eq=False, slots=False)
class ClusterNode(service.MultiService):
    """
    The node program: the cluster service and its status site, taking work
    once joined.

    When it cannot start (the site cannot listen, the cluster service fails
    to start or L{ClusterService.when_joined} fails), it writes one line,
    C{program}, then the flag and the cause (L{describe}), on C{stderr}, and
    stops the reactor, so that whatever runs it shuts everything down as
    usual; L{exit_status} is then 1.  C{clusternode} exits with that status
    (L{cluster.daemon.main}).  twistd has no exit status: once its reactor
    has run it exits 0, and C{twistd clusternode} with it.

    @ivar cluster: the cluster service.
    @ivar site: the service that serves the status site.
    @ivar reactor: the reactor to stop.
    @ivar participate: become a participant once joined, else stay a viewer.
    @ivar program: the command that runs the node, to start the line with.
    @ivar stderr: where the line goes (the process's own standard error).
    @ivar failure: why the node could not start, once it could not.
    @ivar twistd_options: twistd's own options, when twistd runs the node: it
        then logs as L{cluster.daemon.logs} says (see
        L{cluster.daemon.logs.log_through}).
    """

    cluster: ClusterService
    site: service.IService
    reactor: IReactorCore
    participate: bool = True
    program: str = "clusternode"
    stderr: TextIO = attrs.field(factory=lambda: sys.__stderr__ or sys.stderr)
    twistd_options: Mapping[str, object] | None = None
    failure: Failure | None = attrs.field(default=None, init=False)
    _log = Logger()

    def setServiceParent(self, parent: service.IServiceCollection) -> None:
        log_through(parent, self.cluster.options.node_name, self.twistd_options)
        super().setServiceParent(parent)

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

    @property
    def exit_status(self) -> int:
        """
        The status for the process to exit with: 1 once the node could not
        start, else 0.
        """
        return 0 if self.failure is None else 1

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
        # The log takes over sys.stderr: the line goes to the stderr of the
        # process, where whoever started it looks.
        print(f"{self.program}: {line}", file=self.stderr, flush=True)
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
