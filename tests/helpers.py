"""
Scaffolding shared by the tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError
from zope.interface import implementer

from cluster.alloy.discovery import static
from cluster.alloy.options import Options
from cluster.alloy.service import ClusterService, SimpleServiceHost
from cluster.ckit.node import Node
from cluster.gossip import IEventDelegate, ITransport, Member, Memberlist, MemberState
from cluster.gossip.codec import pack
from cluster.gossip.serf import SERF_PUSH_PULL
from cluster.peer import PeerState
from cluster.testing import SimulatedNetwork

_log = Logger()

# The global reactor, typed as what these helpers use of it.
_clock = cast(IReactorTime, reactor)


def now() -> float:
    """
    The global reactor's time.
    """
    return float(_clock.seconds())


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
        await task.deferLater(_clock, 0.05, lambda: None)


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """
    Every sample of a Prometheus text exposition (C{/metrics}), as
    C{(sample name, labels, value)}: the one parser the tests use.
    """
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def sample_value(text: str, name: str, **labels: str) -> float:
    """
    The value of the sample C{name} carrying at least C{labels} in a
    Prometheus text exposition, 0 when absent (a counter never counted).
    """
    for found, found_labels, value in samples(text):
        if found == name and labels.items() <= found_labels.items():
            return value
    return 0.0


def known(node: Memberlist, name: str) -> Member:
    """
    C{node}'s record of C{name}, failing the test when it has none.
    """
    member = node.member(name)
    if member is None:
        raise AssertionError(f"{node.name} has no record of {name}")
    return member


def serf_state(ltime: int) -> bytes:
    """
    A Serf push/pull user state (C{0x02} then C{messagePushPull}, as in
    C{shared/WIRE.md} section 8) with member clock C{ltime}.
    """
    return bytes([SERF_PUSH_PULL]) + pack(
        {
            "EventLTime": 3,
            "Events": [None] * 512,
            "LTime": ltime,
            "LeftMembers": ["gone"],
            "QueryLTime": 1,
            "StatusLTimes": {"gone": ltime - 1},
        }
    )


def node_of(service: ClusterService) -> Node:
    """
    C{service}'s cluster node, failing the test when it has none (before
    it starts, or with clustering disabled).
    """
    if service.node is None:
        raise AssertionError(f"{service.options.node_name} has no cluster node")
    return service.node


def start_and_join(
    network: SimulatedNetwork,
    *names: str,
    each: Sequence[Mapping[str, Any]] = (),
    settle: float | None = None,
    **overrides: Any,
) -> list[Memberlist]:
    """
    Create a memberlist on C{network} for each of C{names}, in that order,
    start them all, then have every one but the first join through the
    first.  The order of these calls is what the seeded outcomes of the
    simulations depend on.

    @param each: options for the node at the same index, on top of
        C{overrides} (one mapping per name, or none at all).
    @param settle: if given, run the network this many seconds afterwards.
    @return: the nodes, in the order of C{names}.
    """
    if each and len(each) != len(names):
        raise ValueError(f"{len(each)} option sets for {len(names)} names")
    nodes = [
        network.memberlist(name, **{**overrides, **(each[i] if each else {})})
        for i, name in enumerate(names)
    ]
    for node in nodes:
        node.start()
    seed = nodes[0].local_member().full_address()
    for node in nodes[1:]:
        node.join([seed])
    if settle is not None:
        network.run(settle)
    return nodes


@implementer(IEventDelegate)
class EventRecorder:
    """
    An event delegate that records the names of the members it is told
    about.

    @ivar joined: members that became alive, in order.
    @ivar left: members that left (a leave in state I{left}).
    @ivar dead: members declared dead (any other leave).
    @ivar updated: members whose metadata changed.
    """

    def __init__(self) -> None:
        self.joined: list[str] = []
        self.left: list[str] = []
        self.dead: list[str] = []
        self.updated: list[str] = []

    def notify_join(self, member: Member) -> None:
        self.joined.append(member.name)

    def notify_leave(self, member: Member) -> None:
        if member.state == MemberState.LEFT:
            self.left.append(member.name)
        else:
            self.dead.append(member.name)

    def notify_update(self, member: Member) -> None:
        self.updated.append(member.name)


def transport_of(service: ClusterService) -> ITransport:
    """
    The transport C{service} was given (a simulated one), failing the test
    when it has none.
    """
    if service.transport is None:
        raise AssertionError(f"{service.options.node_name} has no transport")
    return service.transport


def host_of(service: ClusterService) -> SimpleServiceHost:
    """
    C{service}'s default component host, to register components on.
    """
    if not isinstance(service.host, SimpleServiceHost):
        raise AssertionError(f"{service.options.node_name} has its own host")
    return service.host


def address(service: ClusterService) -> str:
    """
    The C{host:port} that C{service}'s transport listens on.
    """
    transport = transport_of(service)
    return f"{transport.host}:{transport.port}"


def cluster_services(
    network: SimulatedNetwork,
    count: int,
    prefix: str = "svc",
    *,
    seeds: int = 1,
    stagger: float | None = None,
    **options: Any,
) -> list[ClusterService]:
    """
    C{count} cluster services on C{network}, named C{prefix-0},
    C{prefix-1} and so on, with clustering enabled and C{options}.  Each
    discovers (statically) the first C{seeds} services built before it, so
    the first bootstraps a new cluster.

    @param stagger: if given, start each service as soon as it is built
        and run the network this many seconds before building the next;
        otherwise none is started.
    @return: the services, in the order they were built.
    """
    services: list[ClusterService] = []
    for i in range(count):
        svc = network.cluster_service(
            Options(
                enable_clustering=True,
                node_name=f"{prefix}-{i}",
                discover_peers=static([address(s) for s in services[:seeds]]),
                **options,
            )
        )
        services.append(svc)
        if stagger is not None:
            svc.startService()
            network.run(stagger)
    return services


#: The version bytes our memberlist sends in C{Alive} and push/pull
#: records: protocol versions 1 to 5, speaking 2; delegate versions 0.
VSN = bytes([1, 5, 2, 0, 0, 0])


def start_through_first(network: SimulatedNetwork, nodes: Sequence[Node]) -> str:
    """
    Start C{nodes[0]} alone (a new cluster), then every other node joining
    through it, in order, without running the network between them.

    @return: the first node's full gossip address.
    """
    nodes[0].start()
    network.run(0.01)
    first = nodes[0].memberlist.local_member().full_address()
    for node in nodes[1:]:
        node.start([first])
    return first


def started_services(
    network: SimulatedNetwork,
    count: int,
    settle: float,
    prefix: str = "svc",
    **options: Any,
) -> list[ClusterService]:
    """
    L{cluster_services} started all at once, then C{network} run for
    C{settle} seconds.
    """
    services = cluster_services(network, count, prefix, **options)
    start_all(network, services, settle)
    return services


def services_joining_first(
    network: SimulatedNetwork,
    each: Sequence[Mapping[str, Any]],
    settle: float,
    prefix: str = "svc",
) -> list[ClusterService]:
    """
    One service per entry of C{each}, named C{prefix-I}, with that entry's
    options, every one after the first joining the first; started all at
    once, then C{network} run for C{settle} seconds.
    """
    services: list[ClusterService] = []
    for i, options in enumerate(each):
        seeds = [address(s) for s in services[:1]]
        services.append(
            network.cluster_service(
                Options(
                    enable_clustering=True,
                    node_name=f"{prefix}-{i}",
                    discover_peers=static(seeds),
                    **options,
                )
            )
        )
    start_all(network, services, settle)
    return services


def start_all(
    network: SimulatedNetwork, services: Sequence[ClusterService], settle: float
) -> None:
    """
    Start every one of C{services}, then run C{network} for C{settle}
    seconds.
    """
    for svc in services:
        svc.startService()
    network.run(settle)


def make_participants(
    network: SimulatedNetwork, services: Sequence[ClusterService], settle: float
) -> None:
    """
    Make every one of C{services} a participant, then run C{network} for
    C{settle} seconds.
    """
    for svc in services:
        svc.change_state(PeerState.PARTICIPANT)
    network.run(settle)


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


def tls_flags(ca: str, cert: str, key: str) -> list[str]:
    """
    The command line's TLS files: the CA, the node's certificate and its key.
    """
    return ["--tls-ca-path", ca, "--tls-cert-path", cert, "--tls-key-path", key]
