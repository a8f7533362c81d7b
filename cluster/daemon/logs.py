"""
The log of a C{clusternode} process, one readable line per event, each
naming the node::

    2026-12-08T00:07:27+0000 a: b joined (127.0.0.1:7947)
    2026-12-08T00:07:39+0000 a: c failed: no ack for 4.0 s, suspicion confirmed by 0
    2026-12-08T00:07:40+0000 a: warning: minimum cluster size not met, ...

The node is the event's C{node} field (L{cluster.gossip.nodelog}), or the
process's own node for the events of Twisted and twistd.  Debug events are
left out at the default level, and so is what Twisted says of its own
machinery (L{is_chatter}): ports starting and closing, protocols and
factories named by their reprs, and C{twisted.names} reading
C{resolv.conf}.

L{node_log_observer} is the observer.  C{clusternode} gives
L{node_log_factory} to Twisted's application runner; for C{twistd},
L{log_through} sets L{twistd_log_observer} on twistd's application, which
makes twistd log through it, where it would have logged itself.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsText,
    formatTime,
)
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

from cluster.gossip.interfaces import reactor_or_global
from cluster.gossip.nodelog import NODE_FIELD

__all__ = [
    "CHATTER",
    "format_event",
    "is_chatter",
    "log_through",
    "node_file_observer",
    "node_log_factory",
    "node_log_observer",
    "twistd_log_observer",
]

CHATTER: tuple[re.Pattern[str], ...] = (
    # twisted.internet's ports, whatever protocol they serve.
    re.compile(r"\S+ starting on \d+"),
    re.compile(r"\((TCP|UDP|Unix) Port \S+ Closed\)"),
    # Noisy protocols and factories, named by their reprs.
    re.compile(r"(Starting|Stopping) (protocol|factory) <.*>", re.S),
    # twisted.names' resolver, each time it reads resolv.conf.
    re.compile(r".*resolv\.conf'? changed, reparsing"),
    re.compile(r"Resolver added .* to server list"),
)
"""
What Twisted says of its own machinery through its legacy C{log.msg}, with
no level to tell it from what matters: each matches a whole line.
"""

# Twisted's legacy log.msg events land in this namespace.
_LEGACY = "log_legacy"

_LEVEL_WORDS = {
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}


def is_chatter(event: LogEvent) -> bool:
    """
    Whether C{event} is one of Twisted's lines about its own machinery
    (L{CHATTER}); only Twisted's legacy events can be.
    """
    if event.get("log_namespace") != _LEGACY:
        return False
    text = eventAsText(
        event, includeTraceback=False, includeTimestamp=False, includeSystem=False
    )
    return any(pattern.fullmatch(text) for pattern in CHATTER)


def format_event(
    event: LogEvent, node: str, when: Callable[[float | None], str] = formatTime
) -> str | None:
    """
    C{event} as one line: the time, the node (the event's own, else
    C{node}), the level when it is a warning or worse, and the text; a
    traceback follows on lines indented by a tab.

    @return: the line, with its newline, or C{None} for an event with no
        text.
    """
    text = eventAsText(event, includeTimestamp=False, includeSystem=False).rstrip()
    if not text:
        return None
    level = _LEVEL_WORDS.get(event.get("log_level", LogLevel.info))
    said = f"{level}: {text}" if level else text
    stamp = when(event.get("log_time"))
    name = event.get(NODE_FIELD) or node
    return f"{stamp} {name}: {said}".replace("\n", "\n\t") + "\n"


def node_file_observer(node: str, out: TextIO) -> FileLogObserver:
    """
    An observer writing every event to C{out} as L{format_event} says, but
    for L{is_chatter}'s.

    @param node: the process's node, named on the lines of events that do
        not name one.
    """

    def line(event: LogEvent) -> str | None:
        return None if is_chatter(event) else format_event(event, node)

    return FileLogObserver(out, line)


def node_log_observer(
    node: str, out: TextIO, level: LogLevel = LogLevel.info
) -> ILogObserver:
    """
    L{node_file_observer}, for the events of C{level} and above only.
    """
    level_filter = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(node_file_observer(node, out), [level_filter])


def node_log_factory(node: str) -> Callable[[TextIO], FileLogObserver]:
    """
    L{node_file_observer} for C{node} as a file log observer factory, which
    Twisted's application runner takes (it filters levels itself).
    """
    return lambda out: node_file_observer(node, out)


def twistd_log_observer(node: str, twistd: Mapping[str, object]) -> ILogObserver | None:
    """
    L{node_log_observer} writing where C{twistd} would write its own log,
    given twistd's parsed options: standard output with C{--nodaemon} (or
    C{--logfile -}), else the C{--logfile} (C{twistd.log} by default),
    reopened on C{SIGUSR1} as twistd does.

    @return: the observer, or C{None} where twistd's own choice stands:
        C{--logger} and C{--syslog}, and C{--logfile -} in a daemon (which
        twistd refuses); and for options that are not twistd's.
    """
    if "nodaemon" not in twistd or twistd.get("logger") or twistd.get("syslog"):
        return None
    path = str(twistd.get("logfile") or "")
    daemon = not twistd.get("nodaemon")
    if path == "-" and daemon:
        return None
    if path == "-" or (not path and not daemon):
        return node_log_observer(node, sys.stdout)
    log_file = LogFile.fromFullPath(path or "twistd.log")

    def rotate(signum: int, frame: object) -> None:
        IReactorFromThreads(reactor_or_global(None)).callFromThread(log_file.rotate)

    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, rotate)
    return node_log_observer(node, log_file)


def log_through(parent: object, node: str, twistd: Mapping[str, object] | None) -> None:
    """
    Make L{twistd_log_observer} the log observer of C{parent} when it is
    twistd's application and C{twistd} twistd's options: twistd takes its
    observer from the application when that has one (as a C{.tac} file sets
    it), and hands the application to the program's service before it
    starts logging.
    """
    if twistd is None or not isinstance(parent, Componentized):
        return
    observer = twistd_log_observer(node, twistd)
    if observer is not None:
        parent.setComponent(ILogObserver, observer)
