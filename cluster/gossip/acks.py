"""
Outstanding probes (memberlist's C{ackHandlers}): one table, keyed by
sequence number, of what to do when an ack or a nack arrives and of the
timeout that gives up, shared by direct and indirect pings.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["AckTable"]


@attrs.define(eq=False)
class _Waiting:
    on_ack: Callable[[bytes | None], object]
    on_nack: Callable[[], object] | None
    timer: IDelayedCall


@attrs.define(eq=False)
class AckTable:
    """
    Handlers for acks we wait for.

    @ivar guard: wraps each timeout callback (so that an error is logged
        rather than raised into the reactor).
    """

    clock: IReactorTime
    guard: Callable[[Callable[[], object]], Callable[[], object]]
    _waiting: dict[int, _Waiting] = attrs.field(factory=dict, init=False)
    _seq: int = attrs.field(default=0, init=False)

    def next_seq(self) -> int:
        """
        A fresh sequence number (uint32, wrapping).
        """
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def expect(
        self,
        seq: int,
        on_ack: Callable[[bytes | None], object],
        on_nack: Callable[[], object] | None,
        timeout: float,
        on_timeout: Callable[[], object],
    ) -> None:
        """
        Wait C{timeout} seconds for the ack to C{seq}: C{on_ack(payload)}
        once it comes, C{on_nack()} for each nack meanwhile, else
        C{on_timeout()}.
        """

        def expired() -> None:
            if self._waiting.get(seq) is waiting:
                del self._waiting[seq]
                on_timeout()

        timer = self.clock.callLater(timeout, self.guard(expired))
        waiting = _Waiting(on_ack, on_nack, timer)
        self._waiting[seq] = waiting

    def ack(self, seq: int, payload: bytes | None) -> None:
        """
        An ack arrived: run its handler, once.
        """
        waiting = self._waiting.pop(seq, None)
        if waiting is not None:
            if waiting.timer.active():
                waiting.timer.cancel()
            waiting.on_ack(payload)

    def nack(self, seq: int) -> None:
        """
        A nack arrived: the helper could not reach the target.
        """
        waiting = self._waiting.get(seq)
        if waiting is not None and waiting.on_nack is not None:
            waiting.on_nack()

    def clear(self) -> None:
        """
        Forget every handler and stop every timer.
        """
        for waiting in self._waiting.values():
            if waiting.timer.active():
                waiting.timer.cancel()
        self._waiting.clear()
