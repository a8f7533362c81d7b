"""
Lifeguard local health awareness (memberlist's awareness.go).

A node that misses its own probes' acks is more likely slow itself than
surrounded by failures; the score makes it probe less often and wait
longer, so it does not accuse healthy peers.
"""

from __future__ import annotations

import attrs

__all__ = ["Awareness"]


@attrs.define
class Awareness:
    """
    A health score in C{[0, max_multiplier - 1]}; 0 is healthy.
    """

    max_multiplier: int
    score: int = 0

    def apply_delta(self, delta: int) -> None:
        """
        Move the score by C{delta}, clamped to its range.
        """
        self.score = max(0, min(self.max_multiplier - 1, self.score + delta))

    def scale(self, timeout: float) -> float:
        """
        C{timeout} stretched by our current ill health.
        """
        return timeout * (self.score + 1)
