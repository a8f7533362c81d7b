"""
A Lamport clock with ckit's uint64 semantics.
"""

from __future__ import annotations

__all__ = ["MAX_TIME", "LamportClock"]

MAX_TIME = (1 << 64) - 1
"""
Largest representable time; arithmetic wraps modulo 2**64 like Go's uint64.
"""


class LamportClock:
    """
    A logical clock used to order state gossip (ckit's C{lamport.Clock}).

    Not thread-safe: it is meant to be used from the reactor thread.
    """

    def __init__(self, start: int = 0) -> None:
        """
        Create a clock whose current time is C{start} (default 0).

        @raise ValueError: when C{start} is not a uint64.
        """
        self._time = _check_time(start)

    def now(self) -> int:
        """
        The current time, left unchanged.
        """
        return self._time

    def tick(self) -> int:
        """
        Advance the clock by one.

        @return: the new time.
        """
        # Wraps to 0 after MAX_TIME, as Go's atomic uint64 add does.
        self._time = (self._time + 1) & MAX_TIME
        return self._time

    def observe(self, t: int) -> None:
        """
        Move the clock past a remote time C{t}.

        When C{t >= now()} the clock becomes C{t + 1}; an older C{t} leaves
        it unchanged.  Call this for every time received from another node.

        @raise ValueError: when C{t} is not a uint64.
        """
        t = _check_time(t)
        if t >= self._time:
            self._time = (t + 1) & MAX_TIME

    def __repr__(self) -> str:
        return f"LamportClock({self._time})"


def _check_time(t: int) -> int:
    # Reject values a uint64 cannot hold instead of silently truncating them.
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_TIME:
        raise ValueError(f"Lamport time must be a uint64, got {t!r}")
    return t
