"""
The status page in a real browser: headless Chromium loads it from a
real C{twisted.web} server on 127.0.0.1 and we read the DOM it built:
from services on the simulated network (every state the page shows), and
from a live cluster of three C{clusternode} processes.

Skipped when no Chromium binary is installed (Debian: C{apt-get install
chromium}; C{CHROMIUM} names another binary).  Only 127.0.0.1 is ever
contacted: the browser's background services are off and every other
host name is unresolvable.

The live test also takes the screenshot the README shows: always into a
temporary file, checked to be a PNG of L{SCREENSHOT_SIZE}, the size of
C{docs/status-page.png}; with C{UPDATE_SCREENSHOT=1} in the environment
it replaces C{docs/status-page.png}::

    UPDATE_SCREENSHOT=1 python -m twisted.trial \\
        tests.integration.test_status_page.LiveClusterPageTests
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from datetime import datetime
from typing import cast
from urllib.parse import quote

import attrs
from prometheus_client import CollectorRegistry
from twisted.internet import reactor as _global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred, succeed
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
from cluster.web.status import DISTRIBUTION, package_version
from tests.helpers import address, node_of, now
from tests.processes import ProcessTestCase
from tests.unit.test_web import HOSTILE, Rows, parse

reactor = cast("IReactorTCP", _global_reactor)
processes = cast("IReactorProcess", _global_reactor)
clock = cast("IReactorTime", _global_reactor)

BROWSER_TIMEOUT = 60.0

SCREENSHOT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "status-page.png"
)
SCREENSHOT_SIZE = (1200, 720)


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
        # Only the two participants own keys for writes.
        owning = {
            name for name, cells in page.cells.items() if cells["share"] != "0.0%"
        }
        self.assertEqual(owning, {"alpha", "bravo"})
        self.assertEqual(
            sorted(page.times), ["alpha", "bravo", "charlie", "delta", "echo"]
        )

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


def png_size(path: str) -> tuple[int, int]:
    """
    The width and height of the PNG image at C{path}.

    @raise AssertionError: when it is not a PNG.
    """
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG image")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


class LiveClusterPageTests(ProcessTestCase):
    """
    The page of a live cluster of three processes, as Chromium renders it,
    with a lookup asked through the page's own form.
    """

    if CHROMIUM is None:
        skip = "chromium not found (install the Debian package chromium)"

    async def test_live_cluster(self) -> None:
        assert CHROMIUM is not None
        home = tempfile.mkdtemp(prefix="status-page-")
        self.addCleanup(shutil.rmtree, home, True)
        started = int(now())
        nodes = await self.formed("node", 3)
        names = [node.name for node in nodes]
        # What the form sends: the page itself, with the query.
        url = f"{nodes[0].url}/?key={quote('user/42', safe='')}&n=2&op=readwrite"
        dom = await run_chromium(CHROMIUM, home, "--dump-dom", url)
        page = parse(dom.decode("utf-8"))
        self.assertEqual(
            [(row["name"], row["badges"]) for row in page.rows],
            [(name, ["alive", "participant"]) for name in names],
        )
        self.check_shares(page, names)
        self.check_since(page, names, started)
        self.assertEqual(page.by_id["version"], f"{DISTRIBUTION} {package_version()}")
        for name in names:
            self.assertGreaterEqual(int(page.cells[name]["incarnation"]), started)
        # The lookup is answered on the page, as the JSON API answers it.
        self.assertEqual(
            page.labels,
            {"lookup-key": "Key", "lookup-n": "Owners", "lookup-op": "Operation"},
        )
        owners = await nodes[0].get("/api/v0/web/lookup?key=user%2F42&n=2")
        self.assertEqual(page.owners, [peer["name"] for peer in owners])
        self.assertEqual(page.controls["lookup-key"].get("value"), "user/42")
        await self.screenshot(home, url)

    def check_shares(self, page: Rows, names: list[str]) -> None:
        """
        Every participant owns some keys, the shares add up to the whole,
        and each bar is as wide as its percentage says.
        """
        percents = [float(page.cells[name]["share"].rstrip("%")) for name in names]
        for name, percent in zip(names, percents, strict=True):
            self.assertTrue(0 < percent < 100, (name, percent))
            self.assertEqual(page.bars[name], f"width: {percent:.1f}%")
        # Three shares, each rounded to 0.05 at most.
        self.assertLess(abs(sum(percents) - 100.0), 0.15, percents)

    def check_since(self, page: Rows, names: list[str], started: int) -> None:
        """
        Every member has been alive since a time after the test began and
        before the page was read, said as a time and a duration.
        """
        shown = re.compile(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d \(\d+ (s|min)\)")
        for name in names:
            self.assertRegex(page.cells[name]["since"], shown)
            stamp = page.times[name]
            assert stamp is not None
            at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()
            self.assertTrue(started - 1 <= at <= now() + 1, (name, stamp))

    async def screenshot(self, home: str, url: str) -> None:
        """
        Take the README's screenshot of C{url}; keep it with
        C{UPDATE_SCREENSHOT=1}.
        """
        taken = os.path.join(home, "status-page.png")
        width, height = SCREENSHOT_SIZE
        await run_chromium(
            CHROMIUM or "chromium",
            home,
            f"--screenshot={taken}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            url,
        )
        self.assertEqual(png_size(taken), SCREENSHOT_SIZE)
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(taken, SCREENSHOT)
        self.assertEqual(png_size(SCREENSHOT), SCREENSHOT_SIZE)
