"""
What a node logs, and how a C{clusternode} process writes it.

On the simulated network: a join, a leave, a failure and a refutation are
each logged once by every member that sees them, at info level, in words,
and every event names the member that logged it (the C{node} field).  Then
the daemon's observer (L{cluster.daemon.logs}): one line per event naming
the node, no debug and none of Twisted's chatter about its own machinery,
and twistd made to log through it.
"""

from __future__ import annotations

import io
import signal
import sys
from typing import cast

from twisted.application import service
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogPublisher,
    capturedLogs,
    formatEvent,
    globalLogPublisher,
)
from twisted.python import log as legacy
from twisted.python.failure import Failure
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from cluster.alloy.options import Options
from cluster.daemon.logs import (
    format_event,
    is_chatter,
    log_through,
    node_file_observer,
    node_log_factory,
    node_log_observer,
    twistd_log_observer,
)
from cluster.daemon.tap import makeService
from cluster.gossip import Memberlist
from cluster.gossip.nodelog import NODE_FIELD, node_logger, tagged
from cluster.gossip.suspicion import worst_case_detection
from cluster.testing import SimulatedNetwork


def record(case: SynchronousTestCase) -> list[LogEvent]:
    """
    Every event logged while C{case} runs.
    """
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def said(events: list[LogEvent]) -> list[str]:
    """
    The events of info level and above, as C{"node: text"}, sorted (members
    on one clock log in an order of no interest here).
    """
    return sorted(
        f"{event.get(NODE_FIELD, '?')}: {formatEvent(event)}"
        for event in events
        if event["log_level"] >= LogLevel.info
    )


def cluster(network: SimulatedNetwork, names: str) -> list[Memberlist]:
    """
    Members named by the letters of C{names}, started, each joined to the
    first, and settled.
    """
    members = [network.memberlist(name) for name in names]
    for member in members:
        member.start()
    seed = members[0].local_member().full_address()
    for member in members[1:]:
        member.join([seed])
    network.run(5)
    return members


class MembershipLogTests(SynchronousTestCase):
    """
    Each member says, once, who joined, left or failed, and what it refuted.
    """

    def test_join(self) -> None:
        events = record(self)
        cluster(SimulatedNetwork(seed=1), "ab")
        self.assertEqual(
            said(events),
            ["a: b joined (127.1.0.2:7946)", "b: a joined (127.1.0.1:7946)"],
        )

    def test_leave(self) -> None:
        network = SimulatedNetwork(seed=1)
        _, b, _ = cluster(network, "abc")
        events = record(self)
        leaving = b.leave(5)
        network.run(10)
        self.assertTrue(self.successResultOf(leaving))
        self.assertEqual(
            said(events), ["a: b left", "b: leaving the cluster", "c: b left"]
        )

    def test_failure(self) -> None:
        """
        Every survivor says once that the crashed member failed: after its
        own suspicion ran out, with how long it waited and how many peers
        confirmed it, or when told by the member whose suspicion did.
        """
        network = SimulatedNetwork(seed=1)
        *_, e = cluster(network, "abcde")
        events = record(self)
        network.crash(e)
        network.run(worst_case_detection(e.config, 5) + 10)
        self.assertEqual(
            said(events),
            [
                "a: e failed: no ack for 4.0 s, suspicion confirmed by 2",
                "b: e failed: no ack for 4.0 s, suspicion confirmed by 2",
                "c: e failed: declared dead by d",
                "d: e failed: no ack for 4.0 s, suspicion confirmed by 2",
            ],
        )

    def test_refutation(self) -> None:
        """
        A member cut off for a moment suspects the others, who refute it
        once each, and refutes their suspicion of it.
        """
        network = SimulatedNetwork(seed=3)
        a, b, c = cluster(network, "abc")
        events = record(self)
        network.partition([b.transport.host], [a.transport.host, c.transport.host])
        network.run(2.5)
        network.heal()
        network.run(5)
        self.assertEqual(
            said(events),
            [
                "a: refuted a suspicion from b (incarnation 1 -> 2)",
                "b: refuted a suspicion from c (incarnation 1 -> 2)",
                "c: refuted a suspicion from b (incarnation 1 -> 2)",
            ],
        )

    def test_services_name_their_node(self) -> None:
        """
        The cluster service tags the events of the logger it is given, and
        its node and member tag their own.
        """
        network = SimulatedNetwork(seed=1)
        given: list[LogEvent] = []
        options = Options(
            enable_clustering=True,
            node_name="s",
            log=Logger(observer=cast(ILogObserver, given.append)),
        )
        events = record(self)
        running = network.cluster_service(options)
        running.startService()
        network.run(1)
        running.stopService()
        network.run(10)
        self.assertEqual(
            [formatEvent(event) for event in given],
            ["starting cluster node s with 0 peers"],
        )
        self.assertEqual([event[NODE_FIELD] for event in given], ["s"])
        self.assertEqual(said(events), ["s: leaving the cluster"])


class NodeLoggerTests(SynchronousTestCase):
    def test_node_logger(self) -> None:
        """
        L{node_logger} is the logger a class attribute would be, with the
        node on every event, whatever the call gives.
        """

        class Owner:
            pass

        owner = Owner()
        log = node_logger(owner, "a")
        self.assertEqual(log.namespace, f"{__name__}.Owner")
        self.assertIs(log.source, owner)
        with capturedLogs() as events:
            log.info("said {what}", what="this", node="b")
            log.failure("it broke", Failure(ZeroDivisionError()))
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual([event[NODE_FIELD] for event in events], ["a", "a"])

    def test_tagged(self) -> None:
        publisher = LogPublisher()
        events: list[LogEvent] = []
        publisher.addObserver(cast(ILogObserver, events.append))
        log = tagged(Logger(namespace="x", observer=publisher), "a")
        log.warn("careful")
        self.assertEqual(log.namespace, "x")
        ((event,),) = [events]
        self.assertEqual((event[NODE_FIELD], formatEvent(event)), ("a", "careful"))


# What Twisted says through its legacy log.msg as a node runs.
CHATTER = [
    "QuietSite starting on 8001",
    "_ServerFactory starting on 7946",
    "_Datagrams starting on 7946",
    "Starting protocol <cluster.gossip.transport._Datagrams object at 0x7f82826bdc10>",
    "Stopping protocol <twisted.names.dns.DNSDatagramProtocol object at 0x7f0>",
    "Starting factory <twisted.web.client._HTTP11ClientFactory object at 0x7f0>",
    "(UDP Port 7946 Closed)",
    "(TCP Port 8001 Closed)",
    "b'/etc/resolv.conf' changed, reparsing",
    "Resolver added ('10.255.255.53', 53) to server list",
]


def legacy_events(*texts: str) -> list[LogEvent]:
    """
    The events Twisted's legacy C{log.msg} publishes for C{texts}.
    """
    with capturedLogs() as events:
        for text in texts:
            legacy.msg(text)
    return list(events)


def stamp(when: float | None) -> str:
    return "T"


class DaemonObserverTests(SynchronousTestCase):
    """
    L{cluster.daemon.logs}: one readable line per event, naming the node.
    """

    def event(self, level: LogLevel, text: str, **fields: object) -> LogEvent:
        # On a publisher of its own: trial fails a test whose failures reach
        # the global one.
        events: list[LogEvent] = []
        publisher = LogPublisher(cast(ILogObserver, events.append))
        Logger(namespace="test", observer=publisher).emit(level, text, **fields)
        (event,) = events
        return event

    def test_format(self) -> None:
        """
        The node the event names, else the process's; the level from
        warnings on; the text.
        """
        cases = [
            (self.event(LogLevel.info, "c left", node="b"), "T b: c left\n"),
            (
                self.event(LogLevel.info, "Main loop terminated."),
                "T a: Main loop terminated.\n",
            ),
            (self.event(LogLevel.warn, "slow", node="b"), "T b: warning: slow\n"),
            (self.event(LogLevel.error, "{x} broke", x=1), "T a: error: 1 broke\n"),
        ]
        for event, line in cases:
            self.assertEqual(format_event(event, "a", stamp), line)
        self.assertIsNone(format_event({"log_level": LogLevel.info}, "a", stamp))

    def test_traceback(self) -> None:
        """
        A failure's traceback follows its line, indented by a tab.
        """
        try:
            raise ZeroDivisionError("nothing to share")
        except ZeroDivisionError:
            failure = Failure()
        event = self.event(LogLevel.critical, "it broke", log_failure=failure)
        line = format_event(event, "a", stamp)
        assert line is not None
        first, *rest = line.removesuffix("\n").split("\n")
        self.assertEqual(first, "T a: critical: it broke")
        self.assertTrue(rest)
        self.assertTrue(all(line.startswith("\t") for line in rest))
        self.assertEqual(rest[-1], "\tbuiltins.ZeroDivisionError: nothing to share")

    def test_chatter(self) -> None:
        """
        Twisted's lines about its ports, protocols, factories and resolver
        are chatter; its other lines and ours are not, even alike.
        """
        for event in legacy_events(*CHATTER):
            self.assertTrue(is_chatter(event), event["log_text"])
        for event in legacy_events("Received SIGTERM, shutting down."):
            self.assertFalse(is_chatter(event))
        self.assertFalse(is_chatter(self.event(LogLevel.info, "b starting on 5")))

    def test_observer(self) -> None:
        """
        The observer writes the lines of info and above, with no chatter.
        """
        out = io.StringIO()
        observer = node_log_observer("a", out)
        for event in [
            *legacy_events(*CHATTER),
            self.event(LogLevel.debug, "dropped input"),
            self.event(LogLevel.info, "b joined (127.0.0.1:7947)", node="a"),
            *legacy_events("Main loop terminated."),
        ]:
            observer(event)
        lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
        self.assertEqual(
            lines, ["a: b joined (127.0.0.1:7947)", "a: Main loop terminated."]
        )
        verbose = io.StringIO()
        node_log_observer("a", verbose, LogLevel.debug)(
            self.event(LogLevel.debug, "dropped input")
        )
        self.assertTrue(verbose.getvalue().endswith(" a: dropped input\n"))

    def test_file_observer(self) -> None:
        """
        The runner's factory leaves out chatter (the runner filters levels).
        """
        out = io.StringIO()
        observer = node_log_factory("a")(out)
        for event in legacy_events(*CHATTER, "kept"):
            observer(event)
        self.assertTrue(out.getvalue().endswith(" a: kept\n"))
        self.assertEqual(out.getvalue().count("\n"), 1)
        self.assertIsInstance(node_file_observer("a", out), type(observer))


class TwistdLogTests(SynchronousTestCase):
    """
    twistd writes the node's lines where it would have written its own.
    """

    def twistd(self, *argv: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(
            [*argv, "clusternode", "--node-name", "a", "--http", "tcp:0"]
        )
        return options

    def test_stdout(self) -> None:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        for argv in (["--nodaemon"], ["--nodaemon", "--logfile", "-"]):
            observer = twistd_log_observer("a", self.twistd(*argv))
            assert observer is not None
            observer(self.event("b left"))
        self.assertEqual(out.getvalue().count(" a: b left\n"), 2)

    def test_log_file(self) -> None:
        path = self.mktemp()
        before = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, before)
        observer = twistd_log_observer("a", self.twistd("--logfile", path))
        assert observer is not None
        observer(self.event("b left"))
        with open(path) as written:
            self.assertTrue(written.read().endswith(" a: b left\n"))
        # twistd reopens its log file on SIGUSR1; so does ours.
        self.assertNotEqual(signal.getsignal(signal.SIGUSR1), before)

    def test_twistd_choice_stands(self) -> None:
        """
        With C{--logger} or C{--syslog}, or C{--logfile -} in a daemon, and
        for options that are not twistd's, twistd's own observer stands.
        """
        for argv in (
            ["--logger", "twisted.logger.textFileLogObserver"],
            ["--syslog"],
            ["--logfile", "-"],
        ):
            self.assertIsNone(twistd_log_observer("a", self.twistd(*argv)), argv)
        self.assertIsNone(twistd_log_observer("a", {"logFile": sys.stdout}))

    def test_twistd_logs_through_the_node(self) -> None:
        """
        twistd hands its application to the node's program before it
        starts logging, and takes the observer the program sets on it.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        options = self.twistd("--nodaemon")
        node = makeService(options.subOptions, MemoryReactorClock())
        application = service.Application("clusternode")
        node.setServiceParent(application)
        self.assertIs(node.parent, service.IServiceCollection(application))
        observer = application.getComponent(ILogObserver)
        assert observer is not None
        observer(self.event("b left"))
        self.assertTrue(out.getvalue().endswith(" a: b left\n"))
        # Not twistd's application: nothing to set.
        log_through(service.MultiService(), "a", options)

    def event(self, text: str) -> LogEvent:
        with capturedLogs() as events:
            Logger(namespace="test").info(text)
        return events[0]
