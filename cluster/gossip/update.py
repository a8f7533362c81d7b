"""
Re-advertising ourselves (memberlist's C{UpdateNode}): an alive message
about us with our next incarnation and the delegate's node meta as it is
now, so that a change of meta (Serf's tags) reaches every member, and the
callers waiting for it to spread.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from cluster.gossip.config import GossipConfig
from cluster.gossip.effects import Effects
from cluster.gossip.origin import Origin, node_meta
from cluster.gossip.state import MemberTable
from cluster.gossip.timers import Lifecycle, Timers
from cluster.gossip.wire import Alive

__all__ = ["NodeUpdate"]


@attrs.define(eq=False)
class NodeUpdate:
    """
    Our updates: each one an alive message with the next incarnation.
    """

    config: GossipConfig
    table: MemberTable
    effects: Effects
    origin: Origin
    timers: Timers
    lifecycle: Lifecycle
    _waiters: set[Deferred[bool]] = attrs.field(factory=set, init=False)

    def update(self, timeout: float) -> Deferred[bool]:
        """
        Read our node meta again (the delegate's C{node_meta}), and
        broadcast it in an alive message about us, one incarnation above
        ours.  Our own record takes it at once, and the delegates hear of
        the change as of any other member's.

        @param timeout: seconds to wait at most for the broadcast; 0 (or
            less) waits without a bound, as memberlist's C{UpdateNode(0)}.
        @return: a Deferred firing with C{True} once the broadcast was sent
            its full number of times or superseded (at once when no other
            member is live), or C{False} when C{timeout} passed or
            L{abandon} was called first.  It fails with C{ValueError} when
            the meta is over C{META_MAX_SIZE} bytes (nothing is sent), and
            with C{RuntimeError} when the member is not running or left.
        """
        if not self.lifecycle.running:
            return fail(RuntimeError("memberlist is not running"))
        try:
            meta = node_meta(self.config)
        except ValueError:
            return fail()
        table, me = self.table, self.table.get(self.table.name)
        if table.leaving or me is None:
            return fail(RuntimeError(f"{table.name} has left the cluster"))
        waiter: Deferred[bool] = Deferred()
        origin = self.origin
        incarnation = table.incarnation + 1
        alive = Alive(
            incarnation,
            table.name,
            origin.address,
            origin.port,
            meta,
            self.config.vsn(),
        )
        table.incarnation = incarnation
        # As memberlist: our own alive message, entered as at start-up, so
        # that it is not refuted as somebody else's claim about us.
        changes = table.alive(
            alive, bootstrap=True, on_finished=lambda: self._finished(waiter)
        )
        self.effects.apply(changes)
        if not any(node.name != table.name for node in table.live()):
            return succeed(True)
        self._waiters.add(waiter)
        if timeout > 0:
            waiter.addTimeout(timeout, self.timers.clock, lambda _, __: False)
        return waiter.addBoth(self._forget, waiter)

    def abandon(self) -> None:
        """
        The member stops: an update still waiting for its broadcast never
        saw it spread.
        """
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(False)

    def _finished(self, waiter: Deferred[bool]) -> None:
        # Told while the packet with the last transmission is being built:
        # tell the waiter once it has been sent (as our leave does).
        self.timers.later(0, self._sent, waiter)

    def _sent(self, waiter: Deferred[bool]) -> None:
        if not waiter.called:
            waiter.callback(True)

    def _forget(self, result: object, waiter: Deferred[bool]) -> object:
        self._waiters.discard(waiter)
        return result
