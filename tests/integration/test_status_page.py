"""
The status page in a real browser: headless Chromium loads it from a
real C{twisted.web} server on 127.0.0.1 and we read the DOM it built.

Skipped when no Chromium binary is installed (Debian: C{apt-get install
chromium}; C{CHROMIUM} names another binary).  Only 127.0.0.1 is ever
contacted: the browser's background services are off and every other
host name is unresolvable.

Run as a program, this module serves the same showcase cluster and saves
a screenshot of its page (how C{docs/status-page.png} is made)::

    python -m tests.integration.test_status_page docs/status-page.png
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import cast

import attrs
from prometheus_client import CollectorRegistry
from twisted.internet import reactor as _global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import (
    Deferred,
    TimeoutError,
    ensureDeferred,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IListeningPort,
    IProcessTransport,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol, ServerFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from cluster import ClusterService, Options, PeerState
from cluster.alloy.discovery import static
from cluster.gossip import MemberState
from cluster.testing import SimulatedNetwork
from cluster.web.site import status_site
from tests.helpers import address, node_of
from tests.unit.test_web import HOSTILE, parse

reactor = cast("IReactorTCP", _global_reactor)
processes = cast("IReactorProcess", _global_reactor)
clock = cast("IReactorTime", _global_reactor)

BROWSER_TIMEOUT = 60.0


def find_chromium() -> str | None:
    """
    The Chromium binary to use: C{$CHROMIUM}, else the first of the usual
    names on C{PATH}.
    """
    names = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser"]
    names += ["google-chrome", "google-chrome-stable"]
    for name in names:
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


CHROMIUM = find_chromium()


class _Collect(ProcessProtocol):
    """
    Gathers a process's output and tells L{ended} waiters its exit code
    (-1 when a signal ended it).
    """

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.code: int | None = None
        self._waiters: list[Deferred[int]] = []

    def ended(self) -> Deferred[int]:
        """
        A Deferred firing with the exit code once the process has ended.
        """
        if self.code is not None:
            return succeed(self.code)
        waiter: Deferred[int] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code = -1
        if isinstance(reason.value, (ProcessDone, ProcessTerminated)):
            code = -1 if reason.value.exitCode is None else reason.value.exitCode
        self.code = code
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            # A waiter that timed out was cancelled: skip it.
            if not waiter.called:
                waiter.callback(code)


async def run_chromium(binary: str, home: str, *args: str) -> bytes:
    """
    Run headless Chromium with C{args} (never blocking the reactor) and
    return its standard output.

    @param home: a private directory for its profile and caches.
    @raise AssertionError: when it fails or takes over
        L{BROWSER_TIMEOUT} seconds (it is killed then).
    """
    flags = [
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={os.path.join(home, 'profile')}",
        # Not --blink-settings=scriptEnabled=false: --dump-dom needs
        # script; the page has none (tests.unit.test_web checks).
    ]
    env = {
        "HOME": home,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_CONFIG_HOME": os.path.join(home, "config"),
        "XDG_CACHE_HOME": os.path.join(home, "cache"),
        "LANG": "C.UTF-8",
    }
    collect = _Collect()
    process: IProcessTransport = processes.spawnProcess(
        collect, binary, [binary, *flags, *args], env=env, path=home
    )
    try:
        code = await collect.ended().addTimeout(BROWSER_TIMEOUT, clock)
    except TimeoutError:
        process.signalProcess("KILL")
        # Reap it, so that no process outlives the test.
        await collect.ended()
        raise AssertionError(
            f"{binary} did not finish within {BROWSER_TIMEOUT} s"
        ) from None
    if code != 0:
        errors = b"".join(collect.err).decode("utf-8", "replace")[-2000:]
        raise AssertionError(f"{binary} exited with {code}: {errors}")
    return b"".join(collect.out)


@attrs.define
class Showcase:
    """
    Five services on a simulated network in every state the page shows:
    two participants, a viewer, a terminating node and a crashed one.
    """

    network: SimulatedNetwork
    services: list[ClusterService]

    @classmethod
    def build(cls) -> Showcase:
        network = SimulatedNetwork(seed=900)
        names = ["alpha", "bravo", "charlie", "delta", "echo"]
        services: list[ClusterService] = []
        for name in names:
            seeds = [address(s) for s in services[:1]]
            options = Options(
                enable_clustering=True,
                node_name=name,
                cluster_name="demo",
                discover_peers=static(seeds),
            )
            services.append(network.cluster_service(options))
        for svc in services:
            svc.startService()
        network.run(3)
        for svc in services[:2] + services[3:]:
            svc.change_state(PeerState.PARTICIPANT)
        network.run(3)
        services[3].change_state(PeerState.TERMINATING)
        network.run(3)
        network.crash(node_of(services[4]))
        alpha = node_of(services[0]).memberlist

        def echo_dead() -> bool:
            member = alpha.member("echo")
            return member is not None and member.state == MemberState.DEAD

        if network.run_until(echo_dead, 120) is None:
            raise AssertionError("alpha never declared echo dead")
        return cls(network, services)

    def stop(self) -> None:
        for svc in self.services[:4]:
            svc.stopService()
        self.network.run(10)


def serve(service: ClusterService) -> IListeningPort:
    """
    Serve C{service}'s status site on a free port of 127.0.0.1.
    """
    # Site's generic parameters do not match what listenTCP declares.
    site = cast(ServerFactory, Site(status_site(service, CollectorRegistry())))
    return reactor.listenTCP(0, site, interface="127.0.0.1")


def url_of(port: IListeningPort) -> str:
    host = port.getHost()
    assert isinstance(host, IPv4Address)
    return f"http://127.0.0.1:{host.port}/"


class StatusPageInBrowserTests(TestCase):
    """
    The page as Chromium renders it.
    """

    timeout = BROWSER_TIMEOUT * 2

    if CHROMIUM is None:
        skip = "chromium not found (install the Debian package chromium)"

    def setUp(self) -> None:
        self.home = tempfile.mkdtemp(prefix="status-page-")
        self.addCleanup(shutil.rmtree, self.home, True)

    def dump_dom(self, service: ClusterService) -> Deferred[str]:
        assert CHROMIUM is not None
        port = serve(service)
        self.addCleanup(port.stopListening)

        async def load() -> str:
            dom = await run_chromium(CHROMIUM, self.home, "--dump-dom", url_of(port))
            if not dom.strip():
                raise AssertionError(f"{CHROMIUM} printed no DOM")
            return dom.decode("utf-8")

        return ensureDeferred(load())

    async def test_peer_table(self) -> None:
        showcase = Showcase.build()
        self.addCleanup(showcase.stop)
        dom = await self.dump_dom(showcase.services[1])
        page = parse(dom)
        self.assertEqual(
            [(row["name"], row["class"], row["badges"]) for row in page.rows],
            [
                ("alpha", "member", ["alive", "participant"]),
                ("bravo", "member self", ["alive", "participant"]),
                ("charlie", "member", ["alive", "viewer"]),
                ("delta", "member", ["alive", "terminating"]),
                ("echo", "member", ["dead", "unknown"]),
            ],
        )
        self.assertIn({"http-equiv": "refresh", "content": "5"}, page.meta)
        self.assertIn('<h1 id="node-name">bravo</h1>', dom)
        self.assertIn("cluster demo", dom)

    async def test_hostile_name_stays_text(self) -> None:
        network = SimulatedNetwork(seed=901)
        svc = network.cluster_service(
            Options(enable_clustering=False, node_name=HOSTILE)
        )
        svc.startService()
        self.addCleanup(svc.stopService)
        dom = await self.dump_dom(svc)
        page = parse(dom)
        self.assertEqual([row["name"] for row in page.rows], [HOSTILE])
        # The browser built no element from the name.
        self.assertNotIn("script", page.tags)
        self.assertIn("&lt;script&gt;", dom)


async def screenshot(path: str) -> None:
    """
    Save a 1200x700 screenshot of the showcase's page to C{path}.
    """
    if CHROMIUM is None:
        raise SystemExit("chromium not found")
    showcase = Showcase.build()
    port = serve(showcase.services[1])
    home = tempfile.mkdtemp(prefix="status-page-")
    try:
        await run_chromium(
            CHROMIUM,
            home,
            f"--screenshot={os.path.abspath(path)}",
            "--window-size=1200,700",
            "--hide-scrollbars",
            url_of(port),
        )
    finally:
        await maybeDeferred(port.stopListening)
        showcase.stop()
        shutil.rmtree(home, True)


if __name__ == "__main__":
    from twisted.internet.task import react

    target = sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png"
    react(lambda _reactor: ensureDeferred(screenshot(target)))
