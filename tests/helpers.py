"""
Scaffolding shared by the tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError

from cluster.gossip import Member, Memberlist

_log = Logger()


def now() -> float:
    """
    The global reactor's time.
    """
    return float(reactor.seconds())  # type: ignore[attr-defined]


async def wait_for(
    condition: Callable[[], Any], bound: float, what: str = "condition"
) -> float:
    """
    Poll C{condition} (which may return a Deferred or a coroutine) every
    50 ms on the real reactor until it holds.

    Real-socket tests assert outcomes, not timings: C{bound} is the worst
    case the configuration allows (a push/pull interval, a suspicion
    maximum), and the time actually taken is logged, never asserted.

    @return: the seconds it took.
    @raise AssertionError: naming C{what}, the bound and the time waited.
    """
    start = now()
    while True:
        result = condition()
        if inspect.iscoroutine(result):
            result = await Deferred.fromCoroutine(result)
        elif isinstance(result, Deferred):
            result = await result
        took = now() - start
        if result:
            _log.info("{what}: {took:.2f} s", what=what, took=took)
            return took
        if took > bound:
            raise AssertionError(
                f"{what}: not within {bound:.1f} s, the configuration's worst "
                f"case (waited {took:.1f} s)"
            )
        await task.deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]


def known(node: Memberlist, name: str) -> Member:
    """
    C{node}'s record of C{name}, failing the test when it has none.
    """
    member = node.member(name)
    if member is None:
        raise AssertionError(f"{node.name} has no record of {name}")
    return member


Answer = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]

_NAMES = {dns.A: "A", dns.AAAA: "AAAA", dns.SRV: "SRV"}


class FakeResolver(ResolverBase):
    """
    An L{IResolver} answering from fixed tables.  The public lookup methods
    are ResolverBase's, so the code under test calls the real interface;
    they all end in L{_lookup}, which records each query.

    With C{hold=True} nothing is answered until L{release} is called, to
    see what runs concurrently and to cancel.
    """

    def __init__(
        self,
        a: dict[str, list[str]] | None = None,
        aaaa: dict[str, list[str]] | None = None,
        srv: dict[str, list[tuple[str, int]]] | None = None,
        cname: dict[str, str] | None = None,
        hold: bool = False,
    ) -> None:
        super().__init__()
        self.a = a or {}
        self.aaaa = aaaa or {}
        self.srv = srv or {}
        self.cname = cname or {}
        self.hold = hold
        self.queries: list[tuple[str, str]] = []
        self.timeouts: list[Any] = []
        self.held: list[tuple[Deferred[Answer], str, int]] = []
        self.cancelled: list[tuple[str, str]] = []

    def _records(self, name: str, kind: int) -> list[Any]:
        if kind == dns.A:
            return [dns.Record_A(ip) for ip in self.a.get(name, [])]
        if kind == dns.AAAA:
            return [dns.Record_AAAA(ip) for ip in self.aaaa.get(name, [])]
        return [dns.Record_SRV(0, 0, port, t) for t, port in self.srv.get(name, [])]

    def _answer(self, name: str, kind: int) -> Deferred[Answer]:
        records = self._records(name, kind)
        if not records:
            return fail(DNSNameError(name))
        answers = [dns.RRHeader(name, kind, payload=r) for r in records]
        if name in self.cname:
            # Real answers may carry the CNAME chain as well.
            alias = dns.Record_CNAME(self.cname[name])
            answers.insert(0, dns.RRHeader(name, dns.CNAME, payload=alias))
        return succeed((answers, [], []))

    def _lookup(
        self, name: bytes, cls: int, type: int, timeout: Any
    ) -> Deferred[Answer]:
        text = name.decode("ascii")
        self.queries.append((_NAMES[type], text))
        self.timeouts.append(timeout)
        if not self.hold:
            return self._answer(text, type)
        query = (_NAMES[type], text)
        waiting: Deferred[Answer] = Deferred(lambda _: self.cancelled.append(query))
        self.held.append((waiting, text, type))
        return waiting

    def release(self, reverse: bool = False) -> None:
        """
        Answer every held query (newest first with C{reverse}).
        """
        held, self.held = self.held, []
        for waiting, name, kind in reversed(held) if reverse else held:
            self._answer(name, kind).chainDeferred(waiting)
