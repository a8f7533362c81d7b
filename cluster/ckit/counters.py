"""
What a cluster node counts beside its memberlist's
L{cluster.gossip.counters.GossipCounters}: L{NodeCounters}, read when its
metrics are scraped (L{cluster.ckit.metrics}, whose table declares the
family each counter feeds).
"""

from __future__ import annotations

import attrs

from cluster.gossip.counters import CounterRecord, DurationHistogram

__all__ = ["UPDATE_BUCKETS", "NodeCounters", "ReceivedEvents", "StateEvents"]

UPDATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""
The buckets of C{cluster_node_update_duration_seconds}: Go's
C{prometheus.DefBuckets}, as ckit's.
"""


@attrs.define
class ReceivedEvents(CounterRecord):
    """
    The memberlist callbacks ckit counts, one field per C{event} label of
    its C{cluster_node_gossip_received_events_total}.

    @ivar state_change_message: gossiped peer states received.
    @ivar unknown_message: gossiped user messages that are not ckit's.
    @ivar get_local_state: our push/pull state asked for.
    @ivar merge_remote_state: a peer's push/pull state handed to us.
    @ivar node_join: members reported alive.
    @ivar node_leave: members reported dead or left.
    @ivar node_update: members reported changed.
    @ivar node_conflict: another address claiming a member's name.
    """

    state_change_message: int = 0
    unknown_message: int = 0
    get_local_state: int = 0
    merge_remote_state: int = 0
    node_join: int = 0
    node_leave: int = 0
    node_update: int = 0
    node_conflict: int = 0


@attrs.define
class StateEvents(CounterRecord):
    """
    What the peer state table (L{cluster.ckit.states}) counts beyond ckit's
    events, one field per C{event} label of
    C{cluster_node_gossip_state_events_total}.

    @ivar stale_state: state messages no newer than the one stored.
    @ivar state_reannounced: our state gossiped again because a peer
        lacked it.
    @ivar unknown_state: push/pull entries in a state we do not know, and
        push/pull user states that are not ckit's.
    """

    stale_state: int = 0
    state_reannounced: int = 0
    unknown_state: int = 0


@attrs.define
class NodeCounters(CounterRecord):
    """
    Everything a node counts.

    @ivar state_broadcasts: received peer states we passed on (ckit's
        C{cluster_node_gossip_broadcasts_total{event="state_change_message"}}).
    @ivar update_durations: how long observers took to be told of each
        change.
    """

    received: ReceivedEvents = attrs.field(factory=ReceivedEvents)
    states: StateEvents = attrs.field(factory=StateEvents)
    state_broadcasts: int = 0
    update_durations: DurationHistogram = attrs.field(
        factory=lambda: DurationHistogram(UPDATE_BUCKETS)
    )
