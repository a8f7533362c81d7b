"""
L{Effects}: what the member table's L{Changes} do outside the table.

L{MemberTable} decides and sends nothing; every part that hands it a
message (the receiver, the prober, a push/pull, the table's own suspicion
timers) gives the L{Changes} it answers to one L{Effects}, which queues the
broadcasts, moves the health score on a refutation and tells the event and
conflict delegates, in that order.
"""

from __future__ import annotations

import attrs

from cluster.gossip.awareness import Awareness
from cluster.gossip.broadcast import BroadcastQueue
from cluster.gossip.config import GossipConfig
from cluster.gossip.state import Changes, EventKind
from cluster.gossip.wire import encode_message

__all__ = ["Effects"]


@attrs.define(eq=False)
class Effects:
    """
    Carries out a member's table changes.

    @ivar config: names the event and conflict delegates (either may be
        C{None}).
    @ivar broadcasts: where the changes' broadcasts are queued.
    @ivar awareness: our health score, worse by one for each refutation
        (as memberlist's C{refute}).
    """

    config: GossipConfig
    broadcasts: BroadcastQueue
    awareness: Awareness

    def apply(self, changes: Changes) -> None:
        """
        Queue the broadcasts, then tell the delegates, in order.
        """
        for broadcast in changes.broadcasts:
            self.broadcasts.queue(
                encode_message(broadcast.message), broadcast.name, broadcast.on_finished
            )
        if changes.refuted:
            self.awareness.apply_delta(1)
        events, conflict = self.config.events, self.config.conflict
        for event in changes.events:
            if event.kind == EventKind.CONFLICT:
                if conflict is not None and event.other is not None:
                    conflict.notify_conflict(event.member, event.other)
            elif events is not None:
                if event.kind == EventKind.JOIN:
                    events.notify_join(event.member)
                elif event.kind == EventKind.LEAVE:
                    events.notify_leave(event.member)
                else:
                    events.notify_update(event.member)
