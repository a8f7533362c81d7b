"""
Log events that say which node wrote them: every event of a L{node_logger}
carries a C{node} field, the local node's name, so that a program running
several nodes (or a test on L{cluster.testing}) can tell their lines apart
and an observer can filter or prefix by it.
"""

from __future__ import annotations

import attrs
from twisted.logger import ILogObserver, LogEvent, Logger, globalLogPublisher
from zope.interface import implementer

__all__ = ["NODE_FIELD", "NodeTag", "node_logger", "tagged"]

NODE_FIELD = "node"
"""
The field of a log event that names the node that emitted it.
"""


@implementer(ILogObserver)
@attrs.frozen
class NodeTag:
    """
    An observer that sets L{NODE_FIELD} to C{node} on every event, then
    hands it on to C{observer}.
    """

    node: str
    observer: ILogObserver = globalLogPublisher

    def __call__(self, event: LogEvent) -> None:
        event[NODE_FIELD] = self.node
        self.observer(event)


def tagged(log: Logger, node: str) -> Logger:
    """
    C{log} (its namespace, source and observer), with C{node} on every event.
    """
    return Logger(
        namespace=log.namespace, source=log.source, observer=NodeTag(node, log.observer)
    )


def node_logger(owner: object, node: str) -> Logger:
    """
    The logger C{owner} gets from a C{Logger()} class attribute (namespace
    C{module.Class}, source C{owner}), with C{node} on every event.
    """
    kind = type(owner)
    namespace = f"{kind.__module__}.{kind.__name__}"
    return tagged(Logger(namespace=namespace, source=owner), node)
