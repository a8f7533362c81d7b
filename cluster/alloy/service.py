"""
L{ClusterService}: Grafana Alloy's C{cluster} service (Alloy
C{internal/service/cluster}) as a Twisted
L{IService<twisted.application.service.IService>}.

Starting the service discovers peers, joins a random subset of them as a
I{viewer} (or bootstraps a new cluster when that fails), rejoins every
C{rejoin_interval} to heal split brains, and tells every L{IComponent} of
the host about peer and readiness changes, coalesced and at most once a
second.  The embedding program moves the node to I{participant} with
L{ClusterService.change_state} once it is ready to take work, and reads
ownership through L{ClusterService.data}.  Stopping moves to
I{terminating} (bounded to 5 s), leaves (5 s) and shuts down.

A node whose name another live node of the cluster already uses never
takes part: L{ClusterService.when_joined} fails with L{NameConflictError}
and the service is never ready (see L{cluster.ckit.node}).  With
C{fail_on_discovery_error}, a discovery that fails at start-up does not
bootstrap a new cluster: L{ClusterService.when_joined} fails with its error
and the service stops.

A join that nobody answers bootstraps a new cluster, as in Alloy (the
first node of a cluster finds nobody).  A join that peers answered and
refused (TLS, another cluster name or gossip key, a protocol version: see
L{cluster.gossip.join}) does not, where Alloy bootstraps on any join
error: a refused node alone would own every key beside the cluster that
refused it.  L{ClusterService.when_joined} fails with L{JoinRefused}
naming the cause in words; the service keeps running, not ready, a viewer
(a change to I{participant} waits until it has joined), and tries again
every C{rejoin_interval} until a join gets in.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping

import attrs
from prometheus_client import Gauge
from twisted.application import service
from twisted.internet.defer import (
    Deferred,
    TimeoutError,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cluster.alloy.interfaces import ICluster, IComponent, IServiceHost
from cluster.alloy.options import Options, split_advertise_address
from cluster.ckit.metrics import MetricKind, MetricSpec, NodeMetrics
from cluster.ckit.node import FuncObserver, NameConflictError, Node
from cluster.gossip.advertise import AdvertiseError
from cluster.gossip.errors import BindError, JoinRefused
from cluster.gossip.interfaces import ITransport, reactor_or_global
from cluster.gossip.nodelog import node_logger, tagged
from cluster.peer import Peer, PeerState
from cluster.serf.tags import tags_meta
from cluster.shard import Op, Sharder, ring

__all__ = [
    "SERVICE_METRICS",
    "SERVICE_NAME",
    "ClusterService",
    "ClusterView",
    "ComponentBlock",
    "Definition",
    "JoinRefused",
    "SimpleServiceHost",
]

SERVICE_NAME = "cluster"
TOKENS_PER_NODE = 512
STATE_UPDATE_MIN_INTERVAL = 1.0
TERMINATING_TIMEOUT = 5.0

READY_FOR_TRAFFIC = MetricSpec(
    "cluster_ready_for_traffic",
    MetricKind.GAUGE,
    "Reports 1 when the cluster is ready to admit traffic, 0 otherwise.",
)
MINIMUM_SIZE = MetricSpec(
    "cluster_minimum_size",
    MetricKind.GAUGE,
    "The configured minimum cluster size required before admitting "
    "traffic to components that use clustering.",
)
SERVICE_METRICS = (READY_FOR_TRAFFIC, MINIMUM_SIZE)
"""
Alloy's metrics of the service, which it sets itself, on the registry of
C{Options.metrics} beside its node's (L{cluster.ckit.metrics.METRICS}).
"""


@attrs.frozen
class ComponentBlock:
    """
    A component's C{clustering { enabled = ... }} block.
    """

    enabled: bool = False


@attrs.frozen
class Definition:
    """
    What the service is (Alloy's C{service.Definition}).
    """

    name: str
    config_type: type | None
    depends_on: tuple[str, ...]


@implementer(IServiceHost)
@attrs.define(eq=False)
class SimpleServiceHost:
    """
    A L{IServiceHost} that components register on.
    """

    _components: list[object] = attrs.field(factory=list)

    def register(self, component: object) -> None:
        """
        Add C{component}; if it provides L{IComponent} it hears changes.
        """
        self._components.append(component)

    def unregister(self, component: object) -> None:
        """
        Remove C{component}.
        """
        self._components.remove(component)

    def list_components(self) -> list[object]:
        return list(self._components)


class _Readiness(enum.Enum):
    NOT_READY = 0
    READY = 1
    DEADLINE_PASSED = 2
    # For good: our node may not take part (its name is another's).
    REFUSED = 3


@implementer(ICluster)
@attrs.define(eq=False)
class ClusterView:
    """
    The read-only L{ICluster} handed to components (Alloy's C{alloyCluster}),
    which also keeps the readiness state machine.

    Readiness: always true when clustering is off or the minimum size is 0.
    Otherwise true once the non-viewer peers reach the minimum, or once
    C{minimum_size_wait_timeout} has passed since the service was created
    (as in Alloy; sticky until the minimum is met again); dropping below
    the minimum after being ready starts the wait over.  Never, whatever
    the settings, once L{refuse}d, nor while L{hold} says that the peers
    refused our join.
    """

    sharder: Sharder
    options: Options
    reactor: IReactorTime
    on_change: Callable[[], object]
    ready_gauge: Gauge | None = None
    _state: _Readiness = attrs.field(default=_Readiness.NOT_READY, init=False)
    _deadline: IDelayedCall | None = attrs.field(default=None, init=False)
    _join_refused: bool = attrs.field(default=False, init=False)
    _log: Logger = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda view: node_logger(view, view.options.node_name), takes_self=True
        ),
    )

    def _always_ready(self) -> bool:
        return (
            not self.options.enable_clustering or self.options.minimum_cluster_size == 0
        )

    def __attrs_post_init__(self) -> None:
        # As Alloy's newAlloyCluster: the wait for the minimum size is
        # counted from the service's creation.
        if self._always_ready():
            self._set(_Readiness.READY)
        else:
            self._set(_Readiness.NOT_READY)
            self._start_deadline()

    def _start_deadline(self) -> None:
        self._cancel_deadline()
        if self.options.minimum_size_wait_timeout:
            self._deadline = self.reactor.callLater(
                self.options.minimum_size_wait_timeout, self._deadline_passed
            )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _set(self, state: _Readiness) -> None:
        self._state = state
        self._publish()

    def _publish(self) -> None:
        if self.ready_gauge is not None:
            self.ready_gauge.set(1 if self.ready() else 0)

    def hold(self, join_refused: bool) -> None:
        """
        Not ready while C{join_refused}: the peers our node found refused
        its join, and it has not joined since.
        """
        self._join_refused = join_refused
        self._publish()

    def refuse(self) -> None:
        """
        Never be ready again: our node may not take part in the cluster
        (another live node uses its name).
        """
        self._cancel_deadline()
        self._set(_Readiness.REFUSED)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._state != _Readiness.NOT_READY:
            return
        self._log.warn(
            "deadline passed, marking cluster as ready to admit traffic "
            "(minimum_cluster_size={minimum}, peers={count})",
            minimum=self.options.minimum_cluster_size,
            count=len(self.sharder.peers()),
        )
        self._set(_Readiness.DEADLINE_PASSED)
        self.on_change()

    def update_ready_state(self) -> None:
        """
        Re-evaluate readiness against the current peers.
        """
        if self._always_ready() or self._state == _Readiness.REFUSED:
            return
        if len(self.sharder.peers()) >= self.options.minimum_cluster_size:
            if self._state != _Readiness.READY:
                self._cancel_deadline()
                self._set(_Readiness.READY)
                self._log.info("minimum cluster size reached, ready for traffic")
            return
        if self._state == _Readiness.READY:
            self._set(_Readiness.NOT_READY)
            self._start_deadline()
            self._log.warn("minimum cluster size not met, not ready for traffic")

    def shutdown(self) -> None:
        self._cancel_deadline()

    def lookup(self, key: int, replication_factor: int, op: Op) -> list[Peer]:
        return self.sharder.lookup(key, replication_factor, op)

    def peers(self) -> list[Peer]:
        return self.sharder.peers()

    def ready(self) -> bool:
        if self._state == _Readiness.REFUSED or self._join_refused:
            return False
        if self._always_ready():
            return True
        return self._state != _Readiness.NOT_READY


@attrs.define(eq=False, slots=False)
class ClusterService(service.Service):
    """
    The cluster service.

    @param options: fixed for the service's life.
    @param reactor: time and sockets (default: the global reactor).
    @param host: lists the components to notify (default: a
        L{SimpleServiceHost}, available as C{.host}).
    @param transport: the gossip transport (for L{cluster.testing}).
    @param rng: every random choice (seed it for a reproducible run).
    """

    options: Options
    reactor: IReactorTime = attrs.field(default=None, converter=reactor_or_global)
    host: IServiceHost = attrs.field(factory=SimpleServiceHost)
    transport: ITransport | None = None
    rng: random.Random = attrs.field(factory=random.Random)

    sharder: Sharder = attrs.field(init=False)
    node: Node | None = attrs.field(default=None, init=False)
    view: ClusterView = attrs.field(init=False)
    _notify_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _last_notify: float | None = attrs.field(default=None, init=False)
    _rejoin_loop: LoopingCall | None = attrs.field(default=None, init=False)
    _joined: list[Failure | None] = attrs.field(factory=list, init=False)
    _join_waiters: list[Deferred[None]] = attrs.field(factory=list, init=False)
    # While the peers refuse our join: the refusal, and the changes of our
    # state that wait for a join to get in.
    _refusal: Failure | None = attrs.field(default=None, init=False)
    _held_states: list[tuple[PeerState, Deferred[None]]] = attrs.field(
        factory=list, init=False
    )
    # Our tags while clustering is disabled (the node holds them otherwise).
    _lone_tags: dict[str, str] = attrs.field(
        init=False,
        default=attrs.Factory(lambda svc: dict(svc.options.tags), takes_self=True),
    )
    _log: Logger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.name = SERVICE_NAME
        self._log = tagged(self.options.log or Logger(), self.options.node_name)
        if self.options.enable_tls and self.options.gossip_config().keyring is None:
            self._log.warn(
                "TLS protects the TCP streams only: gossip over UDP is in "
                "plaintext (allow_plaintext_udp is set)"
            )
        self.sharder = ring(TOKENS_PER_NODE)
        ready_gauge = self._register_gauges()
        self.view = ClusterView(
            self.sharder, self.options, self.reactor, self._trigger, ready_gauge
        )
        if self.options.enable_clustering:
            self.node = Node(
                self.options.gossip_config(),
                sharder=self.sharder,
                reactor=self.reactor,
                transport=self.transport,
                rng=self.rng,
                tags=self.options.tags,
            )
            if self.options.metrics is not None:
                # As Alloy: the node's metrics live on the service's registry.
                self.options.metrics.register(NodeMetrics(self.node))
        else:
            self.sharder.set_peers([self._lone_peer()])

    def _lone_peer(self) -> Peer:
        host, port = "127.0.0.1", self.options.bind_port
        if self.options.advertise_address:
            host, advertised = split_advertise_address(self.options.advertise_address)
            port = advertised or port
        return Peer(
            self.options.node_name, f"{host}:{port}", True, PeerState.PARTICIPANT
        )

    def _register_gauges(self) -> Gauge | None:
        registry = self.options.metrics
        if registry is None or not self.options.enable_clustering:
            return None
        gauges = [
            Gauge(
                spec.name, spec.help, labelnames=spec.labels(), registry=registry
            ).labels(self.options.cluster_name)
            for spec in SERVICE_METRICS
        ]
        ready, minimum = gauges
        minimum.set(self.options.minimum_cluster_size)
        ready.set(0)
        return ready

    # --- Alloy's service methods ---

    def definition(self) -> Definition:
        """
        Name, configuration type (none) and dependencies.
        """
        return Definition(SERVICE_NAME, None, ("http",))

    def data(self) -> ClusterView:
        """
        The read-only L{ICluster} view for components.
        """
        return self.view

    def update(self, config: object) -> None:
        """
        Refused: the cluster service takes no runtime configuration.
        """
        raise ValueError("cluster service does not support configuration")

    def change_state(self, target: PeerState) -> Deferred[None]:
        """
        Move our node to C{target} (see L{Node.change_state}).  With
        clustering disabled the node is always a participant: a no-op.
        Once started, a move to I{participant} waits for the start-up join
        to settle (see L{when_joined}), and while the peers refuse our join,
        until a join gets in: a node that is alone for want of being let in
        must not own every key.  It fails when the node cannot start.
        """
        if self.node is None:
            return succeed(None)
        joining = self.running and not self._joined
        if target == PeerState.PARTICIPANT and (joining or self._refusal is not None):
            waiter: Deferred[None] = Deferred()
            self._held_states.append((target, waiter))
            if self._refusal is not None:
                self._log.info(
                    "not taking the participant role: the peers refused our join"
                )
            return waiter
        return self.node.change_state(target)

    @property
    def tags(self) -> dict[str, str]:
        """
        Our Serf tags as advertised now: C{Options.tags} until L{set_tags}.
        """
        return dict(self._lone_tags if self.node is None else self.node.tags)

    def set_tags(self, tags: Mapping[str, str]) -> Deferred[bool]:
        """
        Advertise C{tags} in place of ours, by an alive message with our
        next incarnation (see L{Node.set_tags}); with clustering disabled
        they are only kept.

        @raise ValueError: naming the tag, when they do not fit in a node
            meta; ours stay as they were.
        """
        if self.node is not None:
            return self.node.set_tags(tags)
        tags_meta(tags)
        self._lone_tags = dict(tags)
        return succeed(True)

    @property
    def port(self) -> int:
        """
        The bound gossip port (once started; the configured one when
        clustering is disabled).
        """
        if self.node is None:
            return self.options.bind_port
        return self.node.memberlist.port

    # --- lifecycle ---

    def startService(self) -> None:
        """
        Bind the node's sockets, then discover and join peers in the
        background.

        @raise BindError: when the node cannot bind its address (the
            message names it and the cause), or L{AdvertiseError} when it
            has no address to advertise; the service is then not running
            and no loop was started.  (With a transport that binds later,
            the same failure is logged and reaches L{when_joined}.)
        """
        super().startService()
        if self.node is None:
            self._settle_join(None)
            self._trigger()
            return
        self.node.observe(FuncObserver(self._peers_changed))
        started = Deferred.fromCoroutine(self._start())
        outcome: list[Failure | None] = []
        started.addBoth(
            lambda result: outcome.append(
                result if isinstance(result, Failure) else None
            )
        )
        if (
            outcome
            and outcome[0] is not None
            and outcome[0].check(BindError, AdvertiseError)
        ):
            # The node could not bind: fail now, before anything runs.
            self._settle_join(outcome[0])
            outcome[0].raiseException()
        started.addCallback(lambda _: self._settle_join(outcome[0]))

    def _abandon(self, failure: Failure) -> None:
        if not failure.check(NameConflictError):  # the node said it, once
            self._log.error(
                "cluster node failed to start: {error}",
                error=failure.getErrorMessage(),
            )
        service.Service.stopService(self)
        self.view.shutdown()

    def _settle_join(self, outcome: Failure | None) -> None:
        if outcome is not None and outcome.check(NameConflictError):
            self.view.refuse()
        if outcome is not None and outcome.check(JoinRefused):
            pass  # still running, and trying again (see _refused)
        elif outcome is not None and self.running:
            self._abandon(outcome)
        self._joined = [outcome]
        if outcome is None:
            self._release_held()
        elif not outcome.check(JoinRefused):
            self._fail_held(outcome)
        waiters, self._join_waiters = self._join_waiters, []
        for waiter in waiters:
            if outcome is None:
                waiter.callback(None)
            else:
                waiter.errback(outcome)

    def when_joined(self) -> Deferred[None]:
        """
        A Deferred firing once start-up has joined the discovered peers
        (or bootstrapped a new cluster when that failed), and failing when
        the node could not start: with L{NameConflictError} when another
        live node uses our name (the service is then never ready), and with
        the discovery's error (L{cluster.alloy.discovery.DiscoveryError}
        for join addresses of which none resolved) when discovery failed
        and C{fail_on_discovery_error} is set.  The service has then
        stopped, and its node with it.

        It fails with L{JoinRefused} (naming each address and the cause in
        words) when the peers answered and refused us: the service keeps
        running, not ready and a viewer, and tries to join again every
        C{rejoin_interval}; once a join gets in, the service becomes ready
        as usual and a call made then fires.
        """
        if self._joined:
            (outcome,) = self._joined
            return succeed(None) if outcome is None else fail(outcome)
        waiter: Deferred[None] = Deferred()
        self._join_waiters.append(waiter)
        return waiter

    def _peers_changed(self, peers: list[Peer]) -> bool:
        if not self.running:
            return False
        self._trigger()
        return True

    async def _start(self) -> None:
        assert self.node is not None
        # Bind first, as Alloy's node binds when it is created: a port in
        # use must stop the service, not leave a node without sockets.
        await self.node.memberlist.start()
        try:
            peers = await self._random_peers()
        except Exception as e:
            if self.options.fail_on_discovery_error:
                # Never joined: nobody to tell that we leave.
                await self.node.stop()
                raise
            self._log.warn(
                "failed to get peers to join at startup; will create a new "
                "cluster: {error}",
                error=e,
            )
            peers = []
        self._log.info(
            "starting cluster node {name} with {count} peers{listed}",
            name=self.options.node_name,
            count=len(peers),
            peers=",".join(peers),
            listed=f": {','.join(peers)}" if peers else "",
        )
        try:
            await self.node.start(peers)
        except NameConflictError:
            raise
        except JoinRefused as e:
            # Peers answered and refused us: alone, we would split the
            # cluster.  Stay out and try again.
            self._refused(Failure(e))
            self._schedule_rejoin()
            raise
        except Exception as e:
            self._log.warn(
                "failed to connect to peers; bootstrapping a new cluster: {error}",
                error=e,
            )
            await self.node.start([])
        self._schedule_rejoin()

    async def _random_peers(self) -> list[str]:
        discover = self.options.discover_peers
        if not self.options.enable_clustering or discover is None:
            return []
        peers = [str(peer) for peer in await maybeDeferred(discover)]
        limit = self.options.cluster_max_join_peers
        if limit == 0 or len(peers) < limit:
            return peers
        self.rng.shuffle(peers)
        return peers[:limit]

    def _schedule_rejoin(self) -> None:
        """
        Rejoin on Alloy's ticker: every C{rejoin_interval} from start-up;
        a tick that comes while a rejoin still runs is skipped.
        """
        if self.running and self.options.rejoin_interval > 0:
            self._rejoin_loop = LoopingCall(self._rejoin)
            self._rejoin_loop.clock = self.reactor
            self._rejoin_loop.start(self.options.rejoin_interval, now=False)

    def _rejoin(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._rejoin_once())
        # A failed tick must not stop the loop.
        return d.addErrback(lambda f: self._log.failure("rejoin failed", f))

    async def _rejoin_once(self) -> None:
        assert self.node is not None
        try:
            peers = await self._random_peers()
        except Exception as e:
            self._log.warn("failed to refresh list of peers: {error}", error=e)
            return
        self._log.debug("rejoining peers: {peers}", peers=",".join(peers))
        try:
            contacted = await self.node.start(peers)
        except JoinRefused as e:
            if self._refusal is not None:
                self._refused(Failure(e))
            else:
                self._log.warn("failed to rejoin list of peers: {error}", error=e)
        except NameConflictError:
            # Our first successful join, late: it found our name in use
            # (the node said so).  Nothing to rejoin as, ever again.
            self.view.refuse()
            if self._rejoin_loop is not None and self._rejoin_loop.running:
                self._rejoin_loop.stop()
        except Exception as e:
            self._log.warn("failed to rejoin list of peers: {error}", error=e)
        else:
            if self._refusal is not None and contacted > 0:
                self._let_in(contacted)

    def _refused(self, failure: Failure) -> None:
        """
        The peers refused our join: not ready, and say why (once per try:
        once per C{rejoin_interval}).
        """
        self._refusal = failure
        self.view.hold(True)
        interval = self.options.rejoin_interval
        retry = (
            f"trying again every {interval:g} s"
            if interval > 0
            else "not trying again (rejoin_interval is 0)"
        )
        self._log.warn(
            "join refused, not bootstrapping a cluster of our own: {error}; "
            "not ready, {retry}",
            error=failure.getErrorMessage(),
            retry=retry,
        )

    def _let_in(self, contacted: int) -> None:
        """
        A join got in after the peers refused us: ready as usual from now,
        and the held state changes go ahead.
        """
        self._refusal = None
        self.view.hold(False)
        self._log.info("joined {count} peer(s) after being refused", count=contacted)
        self._settle_join(None)
        self._trigger()

    def _release_held(self) -> None:
        """
        Make the state changes that waited for a join.
        """
        held, self._held_states = self._held_states, []
        for target, waiter in held:
            if self.node is None:
                waiter.callback(None)
            else:
                self.node.change_state(target).chainDeferred(waiter)

    def _fail_held(self, failure: Failure) -> None:
        """
        Fail the state changes that waited for a join that will not come.
        """
        held, self._held_states = self._held_states, []
        for _, waiter in held:
            waiter.errback(failure)

    def _trigger(self) -> None:
        """
        Re-evaluate readiness at once, then ask for a component
        notification: coalesced, at most one a second (Alloy updates the
        ready state before its rate limiter, so that C{ready()} never lags
        the peers it is computed from).
        """
        self.view.update_ready_state()
        if self._notify_call is not None or not self.running:
            return
        delay = 0.0
        if self._last_notify is not None:
            delay = max(
                0.0,
                self._last_notify + STATE_UPDATE_MIN_INTERVAL - self.reactor.seconds(),
            )
        self._notify_call = self.reactor.callLater(delay, self._notify_components)

    def _notify_components(self) -> None:
        self._notify_call = None
        self._last_notify = self.reactor.seconds()
        for component in self.host.list_components():
            if not IComponent.providedBy(component):
                continue
            try:
                component.notify_cluster_change()
            except Exception:
                self._log.failure(
                    "component {component!r} failed to handle a cluster change",
                    component=component,
                )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._notify_call is not None and self._notify_call.active():
            self._notify_call.cancel()
        self._notify_call = None
        if self._rejoin_loop is not None and self._rejoin_loop.running:
            self._rejoin_loop.stop()
        self._rejoin_loop = None
        self._fail_held(
            self._refusal or Failure(RuntimeError("stopped before joining"))
        )
        self.view.shutdown()
        if self.node is None:
            return succeed(None)
        return Deferred.fromCoroutine(self._stop(self.node))

    async def _stop(self, node: Node) -> None:
        if node.current_state() == PeerState.PARTICIPANT:
            terminating = node.change_state(PeerState.TERMINATING)
            terminating.addTimeout(TERMINATING_TIMEOUT, self.reactor)
            try:
                await terminating
            except TimeoutError:
                self._log.warn(
                    "timed out after {timeout} s announcing the terminating state",
                    timeout=TERMINATING_TIMEOUT,
                )
            except Exception:
                self._log.failure("failed to change state to terminating")
        await node.stop()
