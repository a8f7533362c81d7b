"""
L{Timers}: every delayed call and loop of one member, on its clock, so
that they can all be stopped at once, and none can raise into the reactor;
and the member's L{Lifecycle}, which its parts read to go quiet once it
stopped.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["Lifecycle", "Phase", "Ticker", "Timers"]


class Phase(enum.Enum):
    """
    Where a member is in its life: it runs once bound, and stops for good.
    """

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@attrs.define(eq=False)
class Lifecycle:
    """
    The one flag of a member's life, shared by its parts: once it is
    L{stopped}, nothing is sent, no packet is handled and no probe round
    ends.
    """

    phase: Phase = Phase.NEW

    @property
    def running(self) -> bool:
        """
        Whether the member is bound and not stopped.
        """
        return self.phase is Phase.RUNNING

    @property
    def stopped(self) -> bool:
        """
        Whether the member was shut down (it never runs again).
        """
        return self.phase is Phase.STOPPED

    def stop(self) -> bool:
        """
        Stop for good.

        @return: whether the member was running.
        """
        running = self.running
        self.phase = Phase.STOPPED
        return running


@attrs.define(eq=False)
class Timers:
    """
    Delayed calls and loops on C{clock}, each guarded: an error raised by
    its function (a faulty delegate, say) is logged and the loop goes on.
    """

    clock: IReactorTime
    log: Logger = attrs.field(factory=Logger)
    _calls: set[IDelayedCall] = attrs.field(factory=set, init=False)
    _prune_at: int = attrs.field(default=64, init=False)
    _loops: list[LoopingCall] = attrs.field(factory=list, init=False)
    _tickers: list[Ticker] = attrs.field(factory=list, init=False)

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
        if len(self._calls) >= self._prune_at:
            # Calls cancelled by their owners are only dropped here: keep
            # the set at most twice the live ones.
            self._calls = {c for c in self._calls if c.active()}
            self._prune_at = max(64, 2 * len(self._calls))
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

    def ticker(
        self, interval: float, f: Callable[[], bool], now: bool = True
    ) -> Ticker:
        """
        Call C{f} every C{interval} seconds (first at once unless C{now} is
        false), until it returns C{False}; then wait for L{Ticker.wake}
        (see L{Ticker}).
        """
        ticker = Ticker(self, interval, f)
        self._tickers.append(ticker)
        ticker.start(now)
        return ticker

    def stop(self) -> None:
        """
        Cancel every pending call and stop every loop and ticker.
        """
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        for ticker in self._tickers:
            ticker.stop()
        self._tickers.clear()
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls.clear()


@attrs.define(eq=False)
class Ticker:
    """
    A fixed ticker that sleeps while it has nothing to do.

    It calls C{f} at C{start + k * interval}, as a C{LoopingCall} would
    (a late call skips the ticks it missed).  When C{f} returns C{False}
    (nothing to do) the ticker stops waking the reactor; L{wake} brings it
    back at the next point of the same grid, so C{f} runs exactly when an
    always-running ticker would first have found work.  An idle process
    wakes only for what it has to do: each wake-up of a Python reactor
    costs about 0.1 ms of CPU, five gossip ticks a second a third of an
    idle node's CPU.
    """

    timers: Timers
    interval: float
    f: Callable[[], bool]
    _origin: float = attrs.field(default=0.0, init=False)
    _call: IDelayedCall | None = attrs.field(default=None, init=False)
    _asleep: bool = attrs.field(default=False, init=False)
    _stopped: bool = attrs.field(default=False, init=False)

    @property
    def asleep(self) -> bool:
        """
        Whether the ticker waits for L{wake}.
        """
        return self._asleep

    def start(self, now: bool = True) -> None:
        """
        Start the grid here, with a first tick at once or, unless C{now},
        one interval later.
        """
        self._origin = self.timers.clock.seconds()
        if now:
            self._tick()
        else:
            self._schedule()

    def wake(self) -> None:
        """
        There may be work again: tick at the next point of the grid.
        """
        if self._asleep and not self._stopped:
            self._asleep = False
            self._schedule()

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        self._call = None
        busy = True
        try:
            busy = self.f()
        except Exception:
            self.timers.log.failure(
                "unhandled error in {name}", name=getattr(self.f, "__name__", self.f)
            )
        if self._stopped:
            return
        if busy:
            self._schedule()
        else:
            self._asleep = True

    def _schedule(self) -> None:
        now = self.timers.clock.seconds()
        ticks = math.floor((now - self._origin) / self.interval) + 1
        when = self._origin + ticks * self.interval
        while when <= now:  # rounding put the next point at (or before) now
            ticks += 1
            when = self._origin + ticks * self.interval
        self._call = self.timers.clock.callLater(when - now, self._tick)
