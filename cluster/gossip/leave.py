"""
Leaving (memberlist's C{Leave}): a dead message about ourselves from
ourselves, which peers record as I{left}, and the callers waiting for it to
spread.  A member that speaks Serf first says it leaves in Serf's words.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.effects import Effects
from cluster.gossip.messenger import Messenger
from cluster.gossip.nodelog import node_logger
from cluster.gossip.serf import SerfClock, serf_leave_intent
from cluster.gossip.state import MemberTable
from cluster.gossip.timers import Timers

__all__ = ["Departure"]


@attrs.define(eq=False)
class Departure:
    """
    Our own leave.

    @ivar serf_clock: when given, Serf's leave intent goes out before the
        dead message (see L{_announce_serf_leave}).
    """

    table: MemberTable
    effects: Effects
    messenger: Messenger
    broadcasts: BroadcastQueue
    timers: Timers
    serf_clock: SerfClock | None = None
    _waiters: list[Deferred[bool]] = attrs.field(factory=list, init=False)
    _spread: bool = attrs.field(default=False, init=False)
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda departure: node_logger(departure, departure.table.name),
            takes_self=True,
        ),
    )

    def leave(self, timeout: float) -> Deferred[bool]:
        """
        Announce our leave, once, and wait for it to spread.  The
        announcement goes to the front of the broadcast queue
        (L{BroadcastQueue.expedite}).

        @param timeout: seconds to wait at most; 0 (or less) waits without a
            bound, as memberlist's C{Leave(0)}.
        @return: a Deferred firing with C{True} once the broadcast was sent
            its full number of times (at once when no other member is
            live), or C{False} if C{timeout} passed or L{abandon} was
            called first.
        """
        if not self.table.leaving:
            self._log.info("leaving the cluster")
            if self.serf_clock is not None:
                self._announce_serf_leave(self.serf_clock)
            self.effects.apply(self.table.leave(self._finished))
            # Our dead message goes before every other broadcast until sent
            # in full: the others must hear it before we stop waiting.
            self.broadcasts.expedite(self.table.name)
        me = self.table.name
        if self._spread or not any(node.name != me for node in self.table.live()):
            return succeed(True)
        waiter: Deferred[bool] = Deferred()
        self._waiters.append(waiter)
        if timeout > 0:
            waiter.addTimeout(timeout, self.timers.clock, self._timed_out)
        return waiter

    def abandon(self) -> None:
        """
        The member stops: a leave still waiting for its broadcast never saw
        it spread.
        """
        self._tell(False)

    def _announce_serf_leave(self, serf_clock: SerfClock) -> None:
        """
        Tell every live member, directly and then by gossip, that we leave
        (Serf's leave intent), before our dead message goes out.

        Gossip alone sends a broadcast only a few times (4 in a cluster of
        under 10) to random members, some of them possibly dead, so a Serf
        agent can miss the intent and report us I{failed}; Serf's own
        anti-entropy repairs that only after a push/pull, 30 s or more
        later.  One direct packet per live member, once, makes I{left}
        dependable; the gossiped copy covers lost packets.
        """
        me = self.table.name
        intent = serf_leave_intent(me, serf_clock.next(self.timers.clock.seconds()))
        for node in self.table.live():
            if node.name != me:
                self.messenger.raw((node.address, node.port), intent)
        self.broadcasts.queue(intent, "serf-leave-intent")

    def _finished(self) -> None:
        # The queue says so while the packet with the last transmission is
        # still being built: tell the waiters after it has been sent, or a
        # caller that shuts down at once would drop it.
        self.timers.later(0, self._sent)

    def _sent(self) -> None:
        self._spread = True
        self._tell(True)

    def _tell(self, spread: bool) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(spread)

    def _timed_out(self, result: object, timeout: float) -> bool:
        self._log.warn(
            "timed out after {timeout} s waiting for the leave broadcast",
            timeout=timeout,
        )
        return False
