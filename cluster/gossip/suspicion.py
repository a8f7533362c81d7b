"""
Lifeguard dynamic suspicion timeouts (memberlist's suspicion.go and
C{suspicionTimeout} in util.go).

A suspicion starts at the maximum timeout and shrinks towards the minimum
as independent confirmations arrive, so a node suspected by many is
declared dead quickly while a lone (possibly unhealthy) accuser gives the
suspect plenty of time to refute.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from cluster.gossip.broadcast import retransmit_limit
from cluster.gossip.config import GossipConfig

__all__ = [
    "LIKELY_PROBE_ROUNDS",
    "Suspicion",
    "expected_confirmations",
    "remaining_suspicion_time",
    "suspicion_timeout",
    "worst_case_detection",
]

#: Probe rounds within which some survivor of a crash has begun a probe of
#: the crashed member, but for a chance of about e**-10 (1 in 22,000): each
#: of the n - 1 survivors walks its own shuffled order, which reaches a
#: given member within t rounds with a chance of about t / (n - 1), and
#: (1 - t / (n - 1)) ** (n - 1) <= e**-t.
LIKELY_PROBE_ROUNDS = 10


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """
    The minimum suspicion timeout for a cluster of C{n} members:
    C{mult * max(1, log10(n)) * interval}, at millisecond precision as Go.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * math.floor(node_scale * 1000) * interval / 1000


def expected_confirmations(suspicion_mult: int, n: int) -> int:
    """
    How many independent confirmations a suspicion in a cluster of C{n}
    members waits for before its timeout reaches the minimum (memberlist's
    C{k}): C{suspicion_mult - 2}, or none when the cluster holds fewer
    members than that besides the suspect and its accuser; then the
    suspicion runs the minimum timeout alone.
    """
    k = suspicion_mult - 2
    return 0 if n - 2 < k else k


def worst_case_detection(config: GossipConfig, n: int) -> float:
    """
    The longest a member that crashed in a cluster of C{n} members (itself
    included) takes to be declared dead by every survivor, in seconds, with
    C{config}'s timings: the sum of

      - probing, until a survivor's probe of it fails.  One survivor's
        shuffled round-robin order reaches any member within two passes,
        so its failed probe ends within 2 (n - 1) probe intervals of the
        crash (SWIM's bound); with n - 1 survivors probing, one of them
        has begun within L{LIKELY_PROBE_ROUNDS} intervals, and its round
        fails one interval later.  The smaller of the two counts.
      - suspicion, unconfirmed: the maximum timeout,
        C{suspicion_max_timeout_mult} times L{suspicion_timeout}; or the
        minimum itself when the cluster is too small to expect a
        confirmation (L{expected_confirmations} is 0).
      - dissemination of the death: its retransmissions
        (L{retransmit_limit}), one gossip interval apart.

    It assumes healthy survivors and gossip that reaches everyone.  Add
    margins where that does not hold: Lifeguard stretches an unhealthy
    prober's rounds up to C{awareness_max_multiplier} times, and a member
    that misses every retransmission learns of the death at its next
    push/pull.
    """
    rounds = min(2 * (n - 1), LIKELY_PROBE_ROUNDS + 1)
    minimum = suspicion_timeout(config.suspicion_mult, n, config.probe_interval)
    if expected_confirmations(config.suspicion_mult, n) >= 1:
        suspicion = config.suspicion_max_timeout_mult * minimum
    else:
        suspicion = minimum
    retransmits = retransmit_limit(config.retransmit_mult, n)
    return (
        rounds * config.probe_interval
        + suspicion
        + retransmits * config.gossip_interval
    )


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed: float, minimum: float, maximum: float
) -> float:
    """
    How much longer a suspicion with C{confirmations} of C{k} expected
    confirmations has to run, given C{elapsed} seconds since it started.
    """
    fraction = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = maximum - fraction * (maximum - minimum)
    timeout = math.floor(1000.0 * raw) / 1000.0
    return max(timeout, minimum) - elapsed


@attrs.define(eq=False)
class Suspicion:
    """
    The timer of one suspected member.

    @ivar k: confirmations expected before the timeout reaches C{minimum}.
    """

    clock: IReactorTime
    accuser: str
    k: int
    minimum: float
    maximum: float
    on_timeout: Callable[[int], object]
    confirmations: set[str] = attrs.field(init=False)
    count: int = attrs.field(init=False, default=0)
    start: float = attrs.field(init=False)
    _timer: IDelayedCall | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        # The accuser's own word counts as seen, not as a confirmation.
        self.confirmations = {self.accuser}
        self.start = self.clock.seconds()
        timeout = self.maximum if self.k >= 1 else self.minimum
        self._timer = self.clock.callLater(timeout, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.on_timeout(self.count)

    def confirm(self, accuser: str) -> bool:
        """
        Count an independent suspicion from C{accuser}.

        @return: C{True} if it was new (and should be re-gossiped).
        """
        if self.count >= self.k or accuser in self.confirmations:
            return False
        self.confirmations.add(accuser)
        self.count += 1
        if self._timer is None:
            return True
        elapsed = self.clock.seconds() - self.start
        remaining = remaining_suspicion_time(
            self.count, self.k, elapsed, self.minimum, self.maximum
        )
        self._timer.cancel()
        if remaining > 0:
            self._timer = self.clock.callLater(remaining, self._fire)
        else:
            self._timer = self.clock.callLater(0, self._fire)
        return True

    def cancel(self) -> None:
        """
        Stop the timer (the suspect was refuted or is already dead).
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
