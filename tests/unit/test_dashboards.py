"""
Tests for C{deploy/grafana/}: the dashboards and their table in
C{docs/observing.md} are what C{deploy/grafana/generate.py} makes of its
description, and every panel's queries read metrics a node exports, by
labels those metrics have, through pickers the dashboard defines.

The queries are read by L{read_query}, a small reader of the PromQL these
dashboards use (selectors, ranges, functions, aggregations and binary
operators), enough to name every metric and label a query touches.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from cluster.alloy.service import SERVICE_METRICS
from cluster.ckit.metrics import METRICS, MetricKind

#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
#: Grafana's own variables, which a dashboard uses without defining.
BUILTIN_VARIABLE = re.compile(r"__\w+")
#: Every PromQL function and aggregation a dashboard may call.
FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "avg",
        "avg_over_time",
        "bottomk",
        "ceil",
        "changes",
        "clamp_max",
        "clamp_min",
        "count",
        "count_values",
        "delta",
        "deriv",
        "floor",
        "group",
        "histogram_quantile",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "quantile",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "stddev",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
OPERATOR_WORDS = frozenset({"and", "or", "unless", "bool", "offset"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<matchers>\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<punctuation>[-+*/%^(),]|[=!<>]=?)
    """,
    re.VERBOSE,
)
_MATCHER = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\)")


@attrs.frozen
class Selector:
    """
    A metric in a query with its label matchers: C{(label, operator, value)}.
    """

    metric: str
    matchers: tuple[tuple[str, str, str], ...]


@attrs.frozen
class ReadQuery:
    """
    What L{read_query} found in a query: its selectors, the labels of its
    grouping clauses (C{by}, C{on}, ...) and the functions it calls.
    """

    selectors: tuple[Selector, ...]
    grouping: frozenset[str]
    functions: frozenset[str]


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    """
    C{(kind, text)} of each token of C{expr} but spaces.

    @raise ValueError: at a character no token starts with.
    """
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read {expr[position:]!r} in {expr!r}")
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            yield kind, match.group()


def _matchers(block: str) -> tuple[tuple[str, str, str], ...]:
    """
    The matchers of a C{{...}} block.

    @raise ValueError: when the block holds something else.
    """
    inner = block[1:-1]
    found = []
    position = 0
    while inner[position:].strip():
        match = _MATCHER.match(inner, position)
        if match is None:
            raise ValueError(f"cannot read the matchers {block!r}")
        found.append((match.group(1), match.group(2), match.group(3)))
        position = match.end()
    return tuple(found)


def read_query(expr: str) -> ReadQuery:
    """
    Read the metrics, grouping labels and functions of the PromQL C{expr}.

    @raise ValueError: when C{expr} holds what this reader does not know: an
        unknown function, a selector without a metric name, or a character
        no token starts with.
    """
    tokens = list(_tokens(expr))
    selectors = []
    grouping: set[str] = set()
    functions = set()
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        index += 1
        if kind == "matchers":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if kind != "name" or text in OPERATOR_WORDS:
            continue
        if text in FUNCTIONS and following in (("name", "by"), ("name", "without")):
            # An aggregation with its grouping first: sum by (x) (...).
            functions.add(text)
            continue
        if following == ("punctuation", "("):
            if text in GROUPING:
                close = tokens.index(("punctuation", ")"), index)
                grouping.update(t for k, t in tokens[index + 1 : close] if k == "name")
                index = close + 1
            elif text in FUNCTIONS:
                functions.add(text)
            else:
                raise ValueError(f"unknown function {text}() in {expr!r}")
            continue
        matchers: tuple[tuple[str, str, str], ...] = ()
        if following[0] == "matchers":
            matchers = _matchers(following[1])
            index += 1
        selectors.append(Selector(text, matchers))
    return ReadQuery(tuple(selectors), frozenset(grouping), frozenset(functions))


def exported_labels() -> dict[str, frozenset[str]]:
    """
    @return: every series name a node's scrape holds (a histogram's
        C{_bucket}, C{_sum} and C{_count}), with the labels it can be
        selected or grouped by once Prometheus has scraped it.
    """
    names: dict[str, frozenset[str]] = {}
    for spec in (*METRICS, *SERVICE_METRICS):
        labels = frozenset(spec.labels()) | TARGET_LABELS
        if spec.kind is MetricKind.HISTOGRAM:
            names[f"{spec.name}_bucket"] = labels | {"le"}
            names[f"{spec.name}_sum"] = labels
            names[f"{spec.name}_count"] = labels
        else:
            names[spec.name] = labels
    return names


def query_problems(expr: str, legend: str = "") -> list[str]:
    """
    @return: what is wrong with C{expr} (and its C{legend}) as a query of
        a node's metrics: a metric no node exports, a label its metrics do
        not have; empty when nothing is.
    """
    try:
        read = read_query(expr)
    except ValueError as error:
        return [str(error)]
    exported = exported_labels()
    problems = []
    known: set[str] = set()
    if not read.selectors:
        problems.append(f"no metric in {expr!r}")
    for selector in read.selectors:
        labels = exported.get(selector.metric)
        if labels is None:
            problems.append(f"{selector.metric} is not a metric a node exports")
            continue
        known |= labels
        for label, _, _ in selector.matchers:
            if label not in labels:
                problems.append(f"{selector.metric} has no label {label}")
    for label in sorted(read.grouping - known):
        problems.append(f"no metric of {expr!r} has the label {label}")
    for label in _LEGEND_LABEL.findall(legend):
        if label not in known:
            problems.append(f"the legend {legend!r} names {label}, which no metric has")
    return problems


def checkout() -> Path:
    """
    @return: the checkout these tests are in (the folder holding C{deploy/}).
    """
    for directory in Path(__file__).resolve().parents:
        if (directory / "deploy" / "grafana" / "generate.py").is_file():
            return directory
    raise FileNotFoundError("no deploy/grafana/generate.py above the tests")


def load_generator() -> ModuleType:
    """
    @return: C{deploy/grafana/generate.py}, the script that writes the
        dashboards and their table.
    """
    path = checkout() / "deploy" / "grafana" / "generate.py"
    spec = importlib.util.spec_from_file_location("generate_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checked_in() -> dict[str, dict[str, Any]]:
    """
    @return: every dashboard file of C{deploy/grafana/}, by file name.
    """
    folder = checkout() / "deploy" / "grafana"
    return {
        path.name: json.loads(path.read_text())
        for path in sorted(folder.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """
    @return: the panels of C{dashboard}, those of its rows included.
    """
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """
    @return: C{dashboard}'s template variables, in order.
    """
    listed: list[dict[str, Any]] = dashboard["templating"]["list"]
    return listed


def used_variables(text: str) -> set[str]:
    """
    @return: the variables C{text} refers to (C{$name}, C{${name}} or
        C{[[name]]}), Grafana's own left out.
    """
    return {
        next(name for name in match.groups() if name)
        for match in _VARIABLE.finditer(text)
    } - {name for name in _all_names(text) if BUILTIN_VARIABLE.fullmatch(name)}


def _all_names(text: str) -> set[str]:
    return {next(n for n in m.groups() if n) for m in _VARIABLE.finditer(text)}


def _stale(case: SynchronousTestCase, what: str, have: str, want: str) -> None:
    diff = difflib.unified_diff(
        have.splitlines(keepends=True),
        want.splitlines(keepends=True),
        what,
        "generated",
    )
    case.fail(
        f"{what} is stale; run: python deploy/grafana/generate.py\n"
        + "".join(list(diff)[:60])
    )


class QueryReaderTests(SynchronousTestCase):
    """
    L{read_query} and L{query_problems}, which the dashboard tests rely on
    to find a metric or label no node has.
    """

    def test_reads_selectors_grouping_and_functions(self) -> None:
        """
        Metrics with their matchers, the labels of C{by} and C{on}, and the
        functions; strings, numbers, ranges and operators are none of them.
        """
        read = read_query(
            'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"$v", y="1"}'
            "[$__rate_interval]))) / on(instance) b or on() label_replace("
            'vector(0), "reason", "none", "", "") > bool 1e3'
        )
        self.assertEqual(
            read.selectors,
            (
                Selector("a_bucket", (("x", "=~", "$v"), ("y", "=", "1"))),
                Selector("b", ()),
            ),
        )
        self.assertEqual(read.grouping, {"le", "instance"})
        self.assertEqual(
            read.functions,
            {"histogram_quantile", "sum", "rate", "label_replace", "vector"},
        )

    def test_unknown_function(self) -> None:
        """
        A function the reader does not know is an error, not a metric.
        """
        self.assertRaises(ValueError, read_query, "rates(cluster_node_peers[1m])")

    def test_selector_without_name(self) -> None:
        """
        C{{__name__=...}} hides the metric's name from the check: refused.
        """
        self.assertRaises(
            ValueError, read_query, 'sum({__name__="cluster_node_peers"})'
        )

    def test_exported_query_has_no_problem(self) -> None:
        """
        A query of exported metrics by their labels passes, histogram
        series and the labels Prometheus adds included.
        """
        self.assertEqual(
            query_problems(
                "sum by (instance, le) (rate("
                'cluster_node_gossip_probe_duration_seconds_bucket{job="x"}[1m]))'
                ' / sum by (instance, state) (cluster_node_peers{state="viewer"})',
                "{{instance}} {{state}}",
            ),
            [],
        )

    def test_renamed_metric(self) -> None:
        """
        A metric no node exports is named.
        """
        self.assertEqual(
            query_problems("sum(rate(cluster_node_gossip_dropped[1m]))"),
            ["cluster_node_gossip_dropped is not a metric a node exports"],
        )

    def test_histogram_without_suffix(self) -> None:
        """
        A histogram is selected by its series' names, never its own.
        """
        self.assertEqual(
            query_problems("cluster_node_update_duration_seconds"),
            ["cluster_node_update_duration_seconds is not a metric a node exports"],
        )

    def test_unknown_labels(self) -> None:
        """
        A matcher, a grouping label or a legend naming a label the metric
        does not have is named.
        """
        self.assertEqual(
            query_problems(
                'sum by (kind) (cluster_node_gossip_members{reason="x"})', "{{type}}"
            ),
            [
                "cluster_node_gossip_members has no label reason",
                "no metric of 'sum by (kind) (cluster_node_gossip_members"
                '{reason="x"})\' has the label kind',
                "the legend '{{type}}' names type, which no metric has",
            ],
        )

    def test_used_variables(self) -> None:
        """
        The three spellings of a variable are found; Grafana's own are not.
        """
        self.assertEqual(
            used_variables(
                'a{x=~"$one"}[$__rate_interval] ${two} [[three]] ${four:csv}'
            ),
            {"one", "two", "three", "four"},
        )


class GeneratedTests(SynchronousTestCase):
    """
    The files are what C{deploy/grafana/generate.py} writes.
    """

    def test_dashboards_are_generated(self) -> None:
        """
        Each checked-in dashboard is what the description renders, and no
        other dashboard is in the folder.
        """
        generator = load_generator()
        folder = checkout() / "deploy" / "grafana"
        boards = generator.DASHBOARDS
        self.assertEqual(
            sorted(path.name for path in folder.glob("*.json")),
            sorted(board.file for board in boards),
        )
        for board in boards:
            have = (folder / board.file).read_text()
            want = generator.rendered(board)
            if have != want:
                _stale(self, f"deploy/grafana/{board.file}", have, want)

    def test_table_is_generated(self) -> None:
        """
        The panel table of C{docs/observing.md} is what the description
        renders: rewriting the page changes nothing.
        """
        generator = load_generator()
        page = (checkout() / "docs" / "observing.md").read_text()
        want = generator.rewritten(page)
        if page != want:
            _stale(self, "docs/observing.md", page, want)

    def test_table_lists_every_panel(self) -> None:
        """
        One row per panel of each dashboard, with each of its queries.
        """
        generator = load_generator()
        for board in generator.DASHBOARDS:
            table = generator.panel_table(board)
            self.assertEqual(len(table.splitlines()), 2 + len(board.panels))
            for panel in board.panels:
                (row,) = [
                    line
                    for line in table.splitlines()
                    if line.startswith(f"| {panel.title} |")
                ]
                self.assertEqual(row.count("`") // 2, len(panel.queries))

    def test_markers_are_required(self) -> None:
        """
        A page without the markers is an error, not a page left alone.
        """
        generator = load_generator()
        self.assertRaises(ValueError, generator.rewritten, "# Observing\n")


class DashboardTests(SynchronousTestCase):
    """
    The checked-in dashboards, read as Grafana reads them.
    """

    def test_two_dashboards(self) -> None:
        """
        An overview and a node dashboard, with distinct uids.
        """
        boards = checked_in()
        self.assertEqual(sorted(boards), ["node.json", "overview.json"])
        self.assertEqual(len({board["uid"] for board in boards.values()}), 2)

    def test_panel_ids_are_unique(self) -> None:
        """
        No two panels of a dashboard share an id.
        """
        for name, board in checked_in().items():
            ids = [panel["id"] for panel in panels(board)]
            self.assertEqual(len(ids), len(set(ids)), name)

    def test_panels_do_not_overlap(self) -> None:
        """
        Every panel lies on Grafana's grid, 24 columns wide, and covers no
        other.
        """
        for name, board in checked_in().items():
            taken: set[tuple[int, int]] = set()
            for panel in panels(board):
                grid = panel["gridPos"]
                self.assertLessEqual(grid["x"] + grid["w"], 24, (name, panel["title"]))
                cells = {
                    (x, y)
                    for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])
                }
                self.assertFalse(cells & taken, (name, panel["title"]))
                taken |= cells

    def test_every_panel_has_a_query(self) -> None:
        """
        Each panel (rows aside) has at least one target with a query, and a
        description saying what it shows.
        """
        for name, board in checked_in().items():
            for panel in panels(board):
                if panel["type"] == "row":
                    continue
                exprs = [target.get("expr", "") for target in panel.get("targets", [])]
                self.assertTrue(exprs, (name, panel["title"]))
                self.assertTrue(all(e.strip() for e in exprs), (name, panel["title"]))
                self.assertTrue(panel.get("description"), (name, panel["title"]))

    def test_queries_read_exported_metrics(self) -> None:
        """
        Every query names metrics a node exports (a histogram by its
        C{_bucket}, C{_sum} and C{_count} series) and labels they have.
        """
        for name, board in checked_in().items():
            for panel in panels(board):
                for target in panel.get("targets", []):
                    problems = query_problems(target["expr"], target["legendFormat"])
                    self.assertEqual(problems, [], (name, panel["title"]))

    def test_every_selector_is_picked(self) -> None:
        """
        Every metric of every query is narrowed by each picker: a
        regular-expression matcher of the picker's label against its
        variable, so that the pickers' "All" (C{.*}) matches every series.
        """
        for name, board in checked_in().items():
            pickers = set()
            for variable in variables(board):
                if variable["type"] == "query":
                    match = _LABEL_VALUES.fullmatch(variable["query"])
                    assert match is not None, variable["query"]
                    pickers.add((match.group(2), "=~", f"${variable['name']}"))
            self.assertEqual(
                {label for label, _, _ in pickers},
                {
                    "cluster_name",
                    "job",
                    "instance",
                },
            )
            for panel in panels(board):
                for target in panel.get("targets", []):
                    for selector in read_query(target["expr"]).selectors:
                        self.assertLessEqual(
                            pickers,
                            set(selector.matchers),
                            (name, panel["title"], selector.metric),
                        )

    def test_pickers_read_cluster_node_info(self) -> None:
        """
        Each picker lists the values of a label of C{cluster_node_info},
        narrowed only by the pickers before it; the data source picker
        lists Prometheus sources.
        """
        for name, board in checked_in().items():
            defined: set[str] = set()
            for variable in variables(board):
                if variable["type"] == "datasource":
                    self.assertEqual(variable["query"], "prometheus")
                else:
                    match = _LABEL_VALUES.fullmatch(variable["query"])
                    assert match is not None, variable["query"]
                    self.assertEqual(query_problems(match.group(1)), [])
                    self.assertEqual(
                        [s.metric for s in read_query(match.group(1)).selectors],
                        ["cluster_node_info"],
                    )
                    self.assertIn(
                        match.group(2), exported_labels()["cluster_node_info"]
                    )
                    self.assertLessEqual(
                        used_variables(json.dumps(variable)), defined, (name, variable)
                    )
                defined.add(variable["name"])

    def test_used_variables_are_defined(self) -> None:
        """
        Every variable a dashboard refers to anywhere (queries, data
        sources, links) is one of its template variables, or Grafana's own.
        """
        for name, board in checked_in().items():
            defined = {variable["name"] for variable in variables(board)}
            self.assertLessEqual(used_variables(json.dumps(board)), defined, name)
