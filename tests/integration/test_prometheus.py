"""
The dashboards and rules of C{deploy/} against a real Prometheus
(C{/usr/bin/prometheus}, Debian's 2.42) scraping four real C{clusternode}
processes on loopback every second, with a copy of
C{deploy/prometheus/cluster-rules.yml} made at test time whose C{for}
durations (L{SHORT_FOR}) and group intervals are shortened, so that an
alert goes pending at the first evaluation its condition holds at:

  - every query of every panel of C{deploy/grafana/*.json} returns data on
    a healthy cluster, its pickers set as Grafana sets them (each
    C{label_values} query asked of Prometheus; the first value of each,
    and I{All});
  - Prometheus loads every alert of the file and evaluates every rule
    without an error, and no alert fires while the cluster is healthy (no
    condition holds for L{SHORT_FOR}; one pending for an evaluation, as a
    probe's ack late on a loaded machine may make it, is logged);
  - then, one after the other, each fault sets off its alert (pending or
    firing, read from Prometheus' C{ALERTS} series, so that one pending
    for a single evaluation counts) and no other alert that names another
    problem: a node killed with C{SIGKILL} (the node count mismatch:
    survivors list it until they declare it dead), a second node of a
    member's name (the name conflict), and a stranger with another gossip
    key, refused (the decryption failures; the seed refused one stranger
    before Prometheus first scraped it, as the rules count the first
    series of a drop reason only on a node scraped for 10 minutes).

Skipped, with the reason, where Prometheus is not installed (C{.ci/run}
installs it).  Bounds are the configuration's worst case (a cold
interpreter, L{worst_case_detection}) plus the scrape and evaluation
intervals; the times taken are logged.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import attrs
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest
from twisted.web.client import Agent

from cluster.daemon.demo import (
    FETCH_TIMEOUT,
    LocalNode,
    ProcessExit,
    SpawnedProcess,
    read_body,
)
from cluster.daemon.ports import free_loopback_port
from cluster.gossip.suspicion import worst_case_detection
from tests.helpers import now, wait_for
from tests.processes import LOCAL, SPREAD, STARTUP, ProcessTestCase

_log = Logger()

CHECKOUT = Path(__file__).resolve().parents[2]
RULES = CHECKOUT / "deploy" / "prometheus" / "cluster-rules.yml"
DASHBOARDS = sorted((CHECKOUT / "deploy" / "grafana").glob("*.json"))
PROMETHEUS = "prometheus"

SIZE = 4
CLUSTER_NAME = "observed"
JOB = "cluster"
SCRAPE = 1.0  # seconds between scrapes of a node
EVALUATION = 1.0  # seconds between rule evaluations
# The shortened `for` of every alert: an alert whose condition holds goes
# pending at the next evaluation, firing one more evaluation later.
SHORT_FOR = 2 * EVALUATION
# Grafana's $__rate_interval at its floor: four scrape intervals.
RATE_INTERVAL = 4 * SCRAPE
# What a condition takes to show in an alert: a scrape, then an evaluation
# (each may just have passed), and the margin of a loaded machine.
SEEN = SCRAPE + EVALUATION + 5.0
# The queries' windows filled with samples.
DATA = RATE_INTERVAL + 2 * SCRAPE + SEEN
# How long the healthy cluster is watched for alerts.
QUIET = 5 * EVALUATION
# Grafana's own variables, as Grafana sets them for these intervals.
GRAFANA_VARIABLES = {
    "__rate_interval": f"{RATE_INTERVAL:g}s",
    "__interval": f"{SCRAPE:g}s",
}
KEY = base64.b64encode(bytes(range(16))).decode("ascii")
OTHER_KEY = base64.b64encode(bytes(range(100, 116))).decode("ascii")
FLAGS = ("--cluster-name", CLUSTER_NAME, "--encrypt-key", KEY)
# A node crashed is dead to every survivor.
DETECTION = worst_case_detection(LOCAL, SIZE)
# A newcomer starts (a cold interpreter) and joins: one push/pull, within
# the TCP timeout to connect and twice it to answer.
NEWCOMER = STARTUP + 3 * LOCAL.tcp_timeout
# Prometheus' discovery hands new targets to its scrapers at most every 5 s.
DISCOVERY = 5.0
# Prometheus stops in well under this; past it, it is killed.
STOP = 10.0

_FOR = re.compile(r"^(\s+for:\s*)\S+\s*$", re.MULTILINE)
_INTERVAL = re.compile(r"^(\s+interval:\s*)\S+\s*$", re.MULTILINE)
_ALERT = re.compile(r"^\s*-?\s*alert:\s*['\"]?([A-Za-z_:][\w:]*)", re.MULTILINE)
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\)\s*$", re.DOTALL)
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def prometheus_missing() -> str | None:
    """
    Why the test cannot run here, if it cannot.
    """
    if shutil.which(PROMETHEUS) is None:
        return "no prometheus on PATH (Debian's package prometheus provides it)"
    return None


def instance(node: LocalNode) -> str:
    """
    The C{instance} label Prometheus gives C{node}'s metrics.
    """
    return f"127.0.0.1:{node.http_port}"


def alert_names(rules: str) -> list[str]:
    """
    The names of the alerting rules in a rule file's text, in order.
    """
    return _ALERT.findall(rules)


def shortened(rules: str) -> str:
    """
    C{rules} (a rule file's text) with every C{for} at L{SHORT_FOR} and
    every group evaluated every L{EVALUATION} seconds.
    """
    rules = _FOR.sub(lambda m: f"{m.group(1)}{SHORT_FOR:g}s", rules)
    return _INTERVAL.sub(lambda m: f"{m.group(1)}{EVALUATION:g}s", rules)


@attrs.frozen
class Panel:
    """
    One query of one dashboard panel.
    """

    dashboard: str
    title: str
    expr: str


def panel_queries(dashboard: Mapping[str, Any], name: str) -> Iterator[Panel]:
    """
    Every query of every panel of C{dashboard} (rows' panels included).
    """

    def walk(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield Panel(name, panel.get("title", "?"), target["expr"])


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """
    C{expr} with each C{$name} or C{${name}} of C{values} replaced.

    @raise KeyError: for a variable C{values} lacks.
    """
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)


@attrs.frozen
class Fault:
    """
    A fault the test makes, and the alert it must set off.

    @ivar what: the fault, for messages.
    @ivar alert: the alert's name.
    """

    what: str
    alert: str


KILLED = Fault(
    "a node killed",
    # Survivors list it until they declare it dead, while Prometheus
    # scrapes one node fewer.
    "ClusterNodeCountMismatch",
)
CONFLICT = Fault("a second node of a member's name", "ClusterNodeNameConflict")
WRONG_KEY = Fault(
    "a stranger with another gossip key", "ClusterNodeGossipDecryptFailures"
)
# Alerts that none of the faults may set off.
NEVER = frozenset(
    {
        "ClusterNodeGossipClusterNameMismatch",
        "ClusterNodeTLSRefusals",
        "ClusterNodeStuckTerminating",
        "ClusterNodeNotReady",
    }
)


@attrs.define
class Answers:
    """
    What the dashboards' queries answered.

    @ivar asked: how many queries were asked.
    @ivar empty: the queries that returned no series, described.
    @ivar nan: the queries whose every value was NaN, described.
    """

    asked: int = 0
    empty: list[str] = attrs.field(factory=list)
    nan: list[str] = attrs.field(factory=list)


@attrs.define(eq=False)
class PrometheusServer(SpawnedProcess):
    """
    A Prometheus on 127.0.0.1 with its configuration and data in
    C{directory}.
    """

    reactor: IReactorTime
    directory: Path
    port: int = attrs.field(factory=free_loopback_port)
    _protocol: ProcessExit = attrs.field(factory=ProcessExit, init=False)
    _pid: int | None = attrs.field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(shutil.which(PROMETHEUS)),
            f"--config.file={self.directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def configure(self, targets: Sequence[str], rules: str) -> None:
        """
        Write its configuration: C{targets} scraped every L{SCRAPE} seconds
        as job L{JOB}, and C{rules} (a rule file's text) evaluated every
        L{EVALUATION} seconds.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rules.yml").write_text(rules)
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE:g}s",
                "scrape_timeout": f"{SCRAPE:g}s",
                "evaluation_interval": f"{EVALUATION:g}s",
            },
            "rule_files": [str(self.directory / "rules.yml")],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": list(targets)}]}
            ],
        }
        # JSON is YAML.
        (self.directory / "prometheus.yml").write_text(json.dumps(config, indent=2))

    async def api(self, path: str, **params: str) -> Any:
        """
        C{GET /api/v1/PATH?PARAMS}: the C{data} of Prometheus' answer.

        @raise AssertionError: when Prometheus answers an error.
        """
        agent = Agent(self.reactor)
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urlencode(params, quote_via=quote)
        response = await Deferred.fromCoroutine(
            _request(agent, url.encode("ascii"))
        ).addTimeout(FETCH_TIMEOUT, self.reactor)
        answer = json.loads(response)
        if answer.get("status") != "success":
            raise AssertionError(f"{url}: {answer.get('error', answer)}")
        return answer["data"]

    async def ready(self) -> bool:
        """
        Whether it answers its readiness probe.
        """
        if self.ended.called:
            raise AssertionError(f"prometheus exited:\n{self.output[-3000:]}")
        try:
            agent = Agent(self.reactor)
            response = await agent.request(b"GET", f"{self.url}/-/ready".encode())
            await read_body(response)
        except Exception:
            return False
        return bool(response.code == 200)


async def _request(agent: Agent, url: bytes) -> bytes:
    response = await agent.request(b"GET", url)
    return await read_body(response)


class PrometheusTests(ProcessTestCase):
    """
    Four nodes of one cluster (C{--cluster-name}, a gossip key) scraped by
    one Prometheus with the shortened rules.
    """

    # Four nodes started and converged, Prometheus' first scrapes, the
    # queries' windows, the quiet watch, then three faults.
    timeout = (
        2 * STARTUP
        + SPREAD
        + DISCOVERY
        + DATA
        + QUIET
        + DETECTION
        + 2 * NEWCOMER
        + 4 * SEEN
        + STOP
        + 60
    )

    def setUp(self) -> None:
        reason = prometheus_missing()
        if reason:
            raise SkipTest(reason)
        self.rules = RULES.read_text()

    async def cluster(self) -> list[LocalNode]:
        """
        L{SIZE} nodes joined through the first, all participants.
        """
        seed = self.node(f"{CLUSTER_NAME}-00", *FLAGS)
        await self.started([seed], "the seed answers")
        nodes = [seed] + [
            self.node(
                f"{CLUSTER_NAME}-{i:02}",
                *FLAGS,
                "--join-addresses",
                seed.gossip_address,
            )
            for i in range(1, SIZE)
        ]
        await self.converged(nodes, STARTUP + SPREAD, f"{SIZE} nodes formed")
        return nodes

    async def prometheus(self, nodes: Sequence[LocalNode]) -> PrometheusServer:
        """
        A Prometheus scraping C{nodes} with the shortened rules, once it
        has scraped every one of them.
        """
        server = PrometheusServer(reactor, Path(self.mktemp()).absolute())
        server.configure([instance(node) for node in nodes], shortened(self.rules))
        server.start()
        self.addCleanup(self.stopped, server)
        await wait_for(server.ready, STARTUP, "prometheus is ready")

        async def scraped() -> bool:
            found = await server.api("query", query=f'sum(up{{job="{JOB}"}})')
            values = [float(series["value"][1]) for series in found["result"]]
            return values == [len(nodes)]

        await wait_for(scraped, DISCOVERY + SEEN, "prometheus scraped every node")
        return server

    async def stranger(self, seed: LocalNode) -> None:
        """
        A node with another gossip key tries to join C{seed}, which drops
        its input (reason C{decrypt}), and exits 1.
        """
        stranger = self.node(
            "stranger",
            "--cluster-name",
            CLUSTER_NAME,
            "--encrypt-key",
            OTHER_KEY,
            "--join-addresses",
            seed.gossip_address,
        )
        await wait_for(lambda: stranger.ended.called, NEWCOMER, "the stranger exits")
        self.assertEqual(await stranger.ended, 1, stranger.output)

    async def stopped(self, server: PrometheusServer) -> None:
        """
        Stop C{server} by its PID: SIGTERM, SIGKILL past L{STOP}.
        """
        server.signal("TERM")
        try:
            await wait_for(lambda: server.ended.called, STOP, "prometheus stops")
        except AssertionError:
            server.signal("KILL")
        await server.ended

    async def selections(
        self, server: PrometheusServer, dashboard: Mapping[str, Any]
    ) -> list[dict[str, str]]:
        """
        The values a user picks on C{dashboard}: each picker on its first
        value, and each on I{All} where it offers it.  A picker's values are
        asked of Prometheus with its C{label_values} query, the pickers
        before it substituted, as Grafana asks them.

        @raise AssertionError: for a picker that lists nothing.
        """
        found = []
        for everything in (False, True):
            picked: dict[str, str] = {}
            for variable in dashboard.get("templating", {}).get("list", []):
                if variable.get("type") != "query":
                    continue
                name = variable["name"]
                query = variable.get("query")
                if isinstance(query, Mapping):
                    query = query.get("query")
                match = _LABEL_VALUES.match(str(query))
                if match is None:
                    raise AssertionError(f"picker {name}: not label_values: {query!r}")
                selector, label = match.groups()
                values = await server.api(
                    f"label/{label}/values", **{"match[]": substitute(selector, picked)}
                )
                self.assertTrue(
                    values, f"{dashboard['title']}: picker {name} lists nothing"
                )
                if everything and variable.get("includeAll"):
                    # Grafana's All: the allValue, or every value as a regex.
                    picked[name] = variable.get("allValue") or "|".join(values)
                else:
                    picked[name] = sorted(values)[0]
            if picked not in found:
                found.append(picked)
        return found

    async def answers(self, server: PrometheusServer) -> Answers:
        """
        Every query of every dashboard, asked for every selection of its
        pickers (L{selections}).
        """
        answers = Answers()
        for path in DASHBOARDS:
            dashboard = json.loads(path.read_text())
            for picked in await self.selections(server, dashboard):
                values = {**picked, **GRAFANA_VARIABLES}
                for panel in panel_queries(dashboard, path.name):
                    expr = substitute(panel.expr, values)
                    found = (await server.api("query", query=expr))["result"]
                    answers.asked += 1
                    where = f"{panel.dashboard} {panel.title!r}: {expr}"
                    if not found:
                        answers.empty.append(where)
                    elif all(series["value"][1] == "NaN" for series in found):
                        answers.nan.append(where)
        return answers

    async def check_rules(self, server: PrometheusServer) -> None:
        """
        Prometheus loaded every alert of the rule file, each with the
        shortened C{for}, and evaluated every rule without an error.
        """
        groups = (await server.api("rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        loaded = [rule["name"] for rule in rules if rule["type"] == "alerting"]
        self.assertEqual(sorted(loaded), sorted(alert_names(self.rules)))
        checked = NEVER | {fault.alert for fault in (KILLED, CONFLICT, WRONG_KEY)}
        self.assertEqual(sorted(checked - set(loaded)), [], "alerts not in the rules")
        self.assertEqual(
            [
                rule["name"]
                for rule in rules
                if rule["type"] == "alerting" and rule["duration"] > SHORT_FOR
            ],
            [],
            "alerts whose for was not shortened",
        )
        self.assertEqual(
            [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"],
            [],
            "rules that Prometheus could not evaluate",
        )

    async def raised(self, server: PrometheusServer, since: float) -> dict[str, str]:
        """
        The alerts pending or firing at any evaluation since C{since} (this
        reactor's time, Prometheus' clock being the same), from Prometheus'
        C{ALERTS} series, and those pending or firing now: each name's
        state, C{firing} if it ever was.
        """
        window = max(1, int((now() - since) * 1000))
        history = await server.api(
            "query",
            query=f"max by (alertname, alertstate) (max_over_time(ALERTS[{window}ms]))",
        )
        states = [
            (found["metric"]["alertname"], found["metric"]["alertstate"])
            for found in history["result"]
        ]
        live = (await server.api("alerts"))["alerts"]
        states += [(alert["labels"]["alertname"], alert["state"]) for alert in live]
        raised: dict[str, str] = {}
        for name, state in sorted(states, key=lambda pair: pair[1] == "firing"):
            raised[name] = state
        return raised

    async def quiet(self, server: PrometheusServer, seconds: float) -> None:
        """
        No alert fires at any evaluation for C{seconds}: no condition holds
        for the shortened C{for}.  (One that holds for an evaluation or two,
        pending, is logged: the loaded machine may delay a probe's ack.)
        """
        began = now()
        raised: dict[str, str] = {}
        while now() - began < seconds:
            await task.deferLater(reactor, EVALUATION, lambda: None)
            raised = await self.raised(server, began)
            firing = sorted(name for name, state in raised.items() if state == "firing")
            self.assertEqual(firing, [], f"alerts on a healthy cluster: {raised}")
        if raised:
            _log.info("pending on a healthy cluster: {raised}", raised=raised)

    async def sets_off(
        self,
        server: PrometheusServer,
        fault: Fault,
        began: float,
        bound: float,
        *later: Fault,
    ) -> None:
        """
        Wait until C{fault}'s alert has been pending or firing since the
        fault C{began}, and check that no alert of C{later} faults or of
        L{NEVER} has.
        """
        seen: dict[str, str] = {}

        async def raised() -> bool:
            seen.clear()
            seen.update(await self.raised(server, began))
            return fault.alert in seen

        try:
            await wait_for(raised, bound, f"{fault.what}: {fault.alert}")
        except AssertionError as e:
            raise AssertionError(f"{e}; alerts by then: {seen}") from None
        _log.info("{what}: alerts {seen}", what=fault.what, seen=seen)
        others = NEVER | {f.alert for f in later}
        self.assertEqual(
            sorted(others & seen.keys()), [], f"{fault.what}: other alerts {seen}"
        )

    async def test_dashboards_and_alerts(self) -> None:
        """
        Healthy: every dashboard query returns data, every rule evaluates,
        no alert fires.  Then a killed node, a second node of a member's
        name and a stranger with another gossip key each set off their
        alert, and none of the alerts of L{NEVER} or of the faults to come.
        """
        nodes = await self.cluster()
        # The rules count a reason's first series whole only on a node
        # Prometheus has scraped for 10 minutes (drops from before it
        # scraped are not news), which a test cannot wait for: the seed
        # drops a stranger's input before the first scrape, so that the
        # stranger below raises a count Prometheus has seen.
        await self.stranger(nodes[0])
        server = await self.prometheus(nodes)
        began = now()
        answers = Answers()

        async def answered() -> bool:
            nonlocal answers
            answers = await self.answers(server)
            return not answers.empty

        try:
            await wait_for(answered, DATA, "every dashboard query returns data")
        except AssertionError as e:
            raise AssertionError(
                f"{e}; no data:\n" + "\n".join(answers.empty)
            ) from None
        self.assertTrue(answers.asked, "no dashboard query in deploy/grafana")
        for where in answers.nan:
            # A ratio of rates when nothing happened in the window: Grafana
            # draws no point.
            _log.info("only NaN: {where}", where=where)
        await self.check_rules(server)
        await self.quiet(server, QUIET)
        _log.info(
            "{asked} queries answered, then quiet, {took:.1f} s after the first "
            "scrapes",
            asked=answers.asked,
            took=now() - began,
        )

        # Each fault in turn: the alerts of one stay a while (their windows
        # are 10 minutes), so a fault must not set off a later one's.
        began = now()
        nodes[-1].signal("KILL")
        await self.sets_off(
            server, KILLED, began, DETECTION + SEEN, CONFLICT, WRONG_KEY
        )

        began = now()
        self.node(nodes[1].name, *FLAGS, "--join-addresses", nodes[0].gossip_address)
        await self.sets_off(server, CONFLICT, began, NEWCOMER + SEEN, WRONG_KEY)

        began = now()
        refused = Deferred.fromCoroutine(self.stranger(nodes[0]))
        await self.sets_off(server, WRONG_KEY, began, NEWCOMER + SEEN)
        await refused
