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

__all__ = ["Suspicion", "remaining_suspicion_time", "suspicion_timeout"]


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """
    The minimum suspicion timeout for a cluster of C{n} members:
    C{mult * max(1, log10(n)) * interval}, at millisecond precision as Go.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * math.floor(node_scale * 1000) * interval / 1000


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

    reactor: IReactorTime
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
        self.start = self.reactor.seconds()
        timeout = self.maximum if self.k >= 1 else self.minimum
        self._timer = self.reactor.callLater(timeout, self._fire)

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
        elapsed = self.reactor.seconds() - self.start
        remaining = remaining_suspicion_time(
            self.count, self.k, elapsed, self.minimum, self.maximum
        )
        self._timer.cancel()
        if remaining > 0:
            self._timer = self.reactor.callLater(remaining, self._fire)
        else:
            self._timer = self.reactor.callLater(0, self._fire)
        return True

    def cancel(self) -> None:
        """
        Stop the timer (the suspect was refuted or is already dead).
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
