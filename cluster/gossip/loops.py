"""
The periodic work of one member (memberlist's C{schedule}, C{gossip} and
C{pushPull} in C{state.go}): probe ticks, gossip rounds that spread the
broadcast queues, and push/pull rounds that exchange full state with one
random member; and L{StateSync}, the push/pull exchange itself, which a
join, a push/pull round and a push/pull we serve all go through.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluster.gossip.address import Address
from cluster.gossip.config import GossipConfig
from cluster.gossip.counters import PushPullCounters
from cluster.gossip.effects import Effects
from cluster.gossip.errors import NoReplyError, RemoteError
from cluster.gossip.interfaces import IBroadcastWaker
from cluster.gossip.members import MemberState, NodeState
from cluster.gossip.messenger import Messenger
from cluster.gossip.nodelog import node_logger
from cluster.gossip.serf import SerfClock
from cluster.gossip.state import MemberTable
from cluster.gossip.timers import Lifecycle, Ticker, Timers
from cluster.gossip.wire import ErrResp, Message, PushPull, WireError

__all__ = ["PUSH_PULL_SCALE_THRESHOLD", "Loops", "StateSync", "push_pull_scale"]

PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_scale(interval: float, n: int) -> float:
    """
    Stretch the push/pull interval for clusters above 32 members, so the
    total TCP load grows slowly with cluster size.
    """
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval * multiplier


@attrs.define(eq=False)
class StateSync:
    """
    Push/pull: our full state for a peer's (memberlist's C{pushPullNode},
    C{sendLocalState} and C{mergeRemoteState}).

    @ivar effects: carries out what merging a peer's members changes.
    @ivar counters: counts the exchanges we dialled that completed.
    @ivar serf_clock: when given, witnesses the LTimes in every peer's
        user state (for Serf's leave intents).
    @ivar lifecycle: once the member stopped, no exchange is dialled.
    """

    config: GossipConfig
    table: MemberTable
    messenger: Messenger
    effects: Effects
    counters: PushPullCounters
    lifecycle: Lifecycle
    serf_clock: SerfClock | None = None

    def local_state(self, join: bool) -> PushPull:
        """
        Our state for a peer: every member, and the delegate's user state.
        """
        user_state = b""
        if self.config.delegate is not None:
            user_state = bytes(self.config.delegate.local_state(join))
        return PushPull(join, self.table.push_states(), user_state)

    def merge(self, remote: PushPull) -> None:
        """
        Merge a peer's state: its members into our table, its user state
        into the delegate.

        @raise ProtocolMismatchError: when a member's protocol versions do
            not fit ours (nothing is merged then).
        """
        self.effects.apply(self.table.merge(remote.nodes))
        if self.serf_clock is not None:
            self.serf_clock.witness_state(remote.user_state)
        if remote.user_state and self.config.delegate is not None:
            self.config.delegate.merge_remote_state(remote.user_state, remote.join)

    def exchange(self, address: Address, join: bool) -> Deferred[None]:
        """
        Dial C{address}, send our state and merge the reply.

        @return: a Deferred firing once merged; it fails when the stream
            fails, the peer answers with an error or something else than a
            push/pull, or closes the stream without a reply (a reply we
            cannot open, say encrypted with a key we lack, was counted as
            dropped by the messenger).
        """
        if self.lifecycle.stopped:
            return fail(RuntimeError("memberlist is shut down"))

        def got(reply: Message | None) -> None:
            if reply is None:
                raise NoReplyError("peer closed the stream without a reply")
            if isinstance(reply, ErrResp):
                raise RemoteError(reply.error)
            if not isinstance(reply, PushPull):
                raise WireError(f"expected push/pull, got {type(reply).__name__}")
            self.counters.completed += 1
            self.merge(reply)

        request = self.local_state(join)
        return self.messenger.exchange(address, request).addCallback(got)


@attrs.define(eq=False)
class Loops:
    """
    A member's probe, gossip and push/pull loops, on its L{Timers}.

    @ivar rng: draws each loop's stagger and each push/pull partner.
    @ivar counters: counts the push/pull rounds that failed.
    @ivar gossip_ticker: the gossip loop, once it started; it sleeps while
        every broadcast queue is empty (see L{wake_gossip}).
    """

    config: GossipConfig
    timers: Timers
    rng: random.Random
    table: MemberTable
    messenger: Messenger
    sync: StateSync
    counters: PushPullCounters
    gossip_ticker: Ticker | None = attrs.field(default=None, init=False)
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda loops: node_logger(loops, loops.config.name), takes_self=True
        ),
    )

    def start(self, probe: Callable[[], object]) -> None:
        """
        Start probing (C{probe} is called on each tick) and gossip on fixed
        tickers and push/pull on a timer rescaled with the cluster size.
        Each loop waits a random stagger, under one interval, so that nodes
        started together do not tick in lockstep.  The first probe and
        gossip round come a whole interval later, as memberlist's do; the
        first push/pull comes at once, where memberlist's waits an interval
        more (up to 60 s at its LAN timings): it repairs a join broadcast
        that was lost sooner.
        """
        timers = self.timers
        interval = self.config.probe_interval
        timers.later(self.rng.random() * interval, timers.every, interval, probe, False)
        if self.config.gossip_interval > 0:
            stagger = self.rng.random() * self.config.gossip_interval
            timers.later(stagger, self._start_gossip)
        if self.config.push_pull_interval > 0:
            stagger = self.rng.random() * self.config.push_pull_interval
            timers.later(stagger, self._push_pull_tick)

    def wake_gossip(self) -> None:
        """
        Something was queued: a sleeping gossip ticker ticks again.
        """
        if self.gossip_ticker is not None:
            self.gossip_ticker.wake()

    def gossip(self) -> bool:
        """
        One gossip round (memberlist's C{gossip}).

        @return: C{False} when there was nothing to send to a target: both
            queues are empty and the ticker may sleep.  With no target at
            all the queues were not asked (as in memberlist), so C{True}.
        """
        now = self.timers.clock.seconds()
        me = self.table.name

        def wanted(node: NodeState) -> bool:
            if node.name == me:
                return False
            if node.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return True
            return (
                node.state == MemberState.DEAD
                and now - node.state_change <= self.config.gossip_to_the_dead_time
            )

        targets = self.table.random_nodes(self.config.gossip_nodes, wanted)
        # The recently dead last (memberlist keeps kRandomNodes' order): when
        # a broadcast's last transmission comes up in this round, a live
        # member gets it, and a leave sent twice at three members reaches
        # the live one even when the other crashed.
        targets.sort(key=lambda node: node.state == MemberState.DEAD)
        for node in targets:
            address = (node.address, node.port)
            if not self.messenger.gossip(address, crc=node.protocol_max >= 5):
                return False
        return True

    def _start_gossip(self) -> None:
        # Idle gossip ticks may sleep only when every queue says when it
        # is filled: ours, and the delegate's if it has one.
        delegate = self.config.delegate
        if delegate is None or IBroadcastWaker.providedBy(delegate):
            tick = self.gossip
        else:

            def tick() -> bool:
                self.gossip()
                return True

        self.gossip_ticker = self.timers.ticker(
            self.config.gossip_interval, tick, now=False
        )

    def _push_pull_tick(self) -> None:
        # Not a LoopingCall: memberlist rescales the interval on every tick.
        self.timers.later(
            push_pull_scale(self.config.push_pull_interval, len(self.table)),
            self._push_pull_tick,
        )
        candidates = [
            node
            for node in self.table.in_probe_order()
            if node.name != self.table.name and node.state == MemberState.ALIVE
        ]
        if candidates:
            node = self.rng.choice(candidates)
            self.sync.exchange((node.address, node.port), join=False).addErrback(
                self._push_pull_failed, node.name
            )

    def _push_pull_failed(self, failure: Failure, name: str) -> None:
        self.counters.failed += 1
        self._log.debug(
            "push/pull with {peer} failed: {error}",
            peer=name,
            error=failure.getErrorMessage(),
        )
