"""
L{Timers}: every delayed call and loop of one member, on its clock, so
that they can all be stopped at once, and none can raise into the reactor.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["Timers"]


@attrs.define(eq=False)
class Timers:
    """
    Delayed calls and loops on C{clock}, each guarded: an error raised by
    its function (a faulty delegate, say) is logged and the loop goes on.
    """

    clock: IReactorTime
    log: Logger = attrs.field(factory=Logger)
    _calls: set[IDelayedCall] = attrs.field(factory=set, init=False)
    _loops: list[LoopingCall] = attrs.field(factory=list, init=False)

    def guard(self, f: Callable[..., object]) -> Callable[..., None]:
        """
        C{f}, logging its errors instead of raising them.
        """

        def run(*args: object) -> None:
            try:
                f(*args)
            except Exception:
                self.log.failure(
                    "unhandled error in {name}", name=getattr(f, "__name__", f)
                )

        return run

    def later(
        self, delay: float, f: Callable[..., object], *args: object
    ) -> IDelayedCall:
        """
        Call C{f(*args)} after C{delay} seconds.
        """
        call: IDelayedCall
        guarded = self.guard(f)

        def run() -> None:
            self._calls.discard(call)
            guarded(*args)

        call = self.clock.callLater(delay, run)
        self._calls.add(call)
        return call

    def every(self, interval: float, f: Callable[[], object], now: bool = True) -> None:
        """
        Call C{f} every C{interval} seconds (first at once unless C{now} is
        false); a call that runs late skips the ticks it missed.
        """
        loop = LoopingCall(self.guard(f))
        loop.clock = self.clock
        self._loops.append(loop)
        loop.start(interval, now=now)

    def stop(self) -> None:
        """
        Cancel every pending call and stop every loop.
        """
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls.clear()
