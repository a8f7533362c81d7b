"""
The rules of C{deploy/prometheus/}, checked with Debian's C{promtool}
(package C{prometheus}, which C{.ci/run} installs):

  - C{promtool check rules} accepts C{cluster-rules.yml}, and C{promtool
    test rules} passes C{cluster-rules.test.yml};
  - every alert of the rules has a runbook paragraph in the Alerts section
    of C{docs/observing.md}, its C{runbook_url} names that paragraph, and
    the section's table gives its C{for};
  - every alert has a test case that expects it to fire and one that
    expects it quiet, and no case names an alert the rules lack;
  - each firing case is real: with the alert renamed in a copy of the
    rules, C{promtool test rules} fails on it.

The rule and test files are read as they are written (one C{- alert:} per
rule, C{exp_alerts} right after C{alertname}), with no YAML library.  The
tests that run C{promtool} are skipped, with the reason, where it is
missing; the others need nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs
from twisted.trial.unittest import SkipTest, SynchronousTestCase

CHECKOUT = Path(__file__).resolve().parents[2]
RULES = CHECKOUT / "deploy" / "prometheus" / "cluster-rules.yml"
RULE_TESTS = RULES.with_name("cluster-rules.test.yml")
PAGE = CHECKOUT / "docs" / "observing.md"
PAGE_PATH = "docs/observing.md"
PROMTOOL = "promtool"
# promtool reads two small files and evaluates about forty minutes of
# series at one-minute steps: under a second on an idle machine. The bound
# is for a machine loaded by every other test.
PROMTOOL_BOUND = 120.0
# A runbook paragraph says what the alert means, what to check and what to
# do: far more than a placeholder.
RUNBOOK_MIN_WORDS = 40

_RULE = re.compile(r"^\s*- (alert|record): (\S+)\s*$", re.MULTILINE)
_FOR = re.compile(r"^\s+for: (\S+)\s*$", re.MULTILINE)
_RUNBOOK_URL = re.compile(r"^\s+runbook_url: (\S+)\s*$", re.MULTILINE)
_ALERTNAME = re.compile(r"\balertname:")
_CASE = re.compile(r"\balertname:\s*(\w+)\s*[,\n]\s*exp_alerts:\s*(\[\])?")
_SECTION = re.compile(r"^## Alerts\n(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)
_RUNBOOK = re.compile(r"^### (\S+)\n(.*?)(?=^#|\Z)", re.MULTILINE | re.DOTALL)
_TABLE_ROW = re.compile(r"^\| `(\w+)` \|.*\| *(\S*) *\|$", re.MULTILINE)


@attrs.frozen
class AlertRule:
    """
    What these tests read of one alerting rule.

    @ivar name: the C{alert} name.
    @ivar hold: its C{for}, C{""} when it has none.
    @ivar runbook_url: its C{runbook_url} annotation, C{""} when it has none.
    """

    name: str
    hold: str
    runbook_url: str


def alert_rules(rules: str) -> list[AlertRule]:
    """
    The alerting rules of a rule file's text, in order: each rule's block
    runs from its C{- alert:} line to the next rule.
    """
    starts = list(_RULE.finditer(rules))
    found = []
    for rule, following in zip(starts, [*starts[1:], None], strict=True):
        if rule.group(1) != "alert":
            continue
        block = rules[rule.end() : following.start() if following else len(rules)]
        hold = _FOR.search(block)
        url = _RUNBOOK_URL.search(block)
        found.append(
            AlertRule(
                rule.group(2),
                hold.group(1) if hold else "",
                url.group(1) if url else "",
            )
        )
    return found


def rule_test_cases(tests: str) -> list[tuple[str, bool]]:
    """
    The C{alert_rule_test} cases of a promtool test file's text, in order:
    each alert name with whether the case expects it to fire.

    @raise AssertionError: when a case is written in another shape (its
        C{exp_alerts} not right after its C{alertname}), which these tests
        would miss.
    """
    cases = [(m.group(1), m.group(2) is None) for m in _CASE.finditer(tests)]
    if len(cases) != len(_ALERTNAME.findall(tests)):
        raise AssertionError(
            f"{RULE_TESTS.name}: a case whose exp_alerts does not follow its "
            "alertname; write `alertname: X` then `exp_alerts:`"
        )
    return cases


def alerts_section(page: str) -> str:
    """
    The text of the C{## Alerts} section of C{docs/observing.md}.
    """
    section = _SECTION.search(page)
    if section is None:
        raise AssertionError(f"{PAGE_PATH} has no '## Alerts' section")
    return section.group(1)


def runbooks(section: str) -> dict[str, str]:
    """
    The runbook paragraphs of the Alerts section, by their heading.
    """
    return {m.group(1): m.group(2).strip() for m in _RUNBOOK.finditer(section)}


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{promtool} with C{arguments} in the checkout.

    @raise SkipTest: when C{promtool} is not installed.
    """
    if shutil.which(PROMTOOL) is None:
        raise SkipTest("no promtool on PATH (Debian's package prometheus provides it)")
    return subprocess.run(
        [PROMTOOL, *arguments],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_BOUND,
        check=False,
    )


class PromtoolTests(SynchronousTestCase):
    """
    promtool accepts the rules and passes their unit tests.
    """

    def test_check_rules(self) -> None:
        """
        C{promtool check rules} finds every rule of the file and no error.
        """
        done = promtool("check", "rules", str(RULES.relative_to(CHECKOUT)))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        rules = len(_RULE.findall(RULES.read_text()))
        self.assertIn(f"SUCCESS: {rules} rules found", done.stdout)

    def test_unit_tests(self) -> None:
        """
        C{promtool test rules} passes every test of C{cluster-rules.test.yml}.
        """
        done = promtool("test", "rules", str(RULE_TESTS.relative_to(CHECKOUT)))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("SUCCESS", done.stdout)
        self.assertNotIn("FAILED", done.stdout + done.stderr)

    def test_firing_cases_are_real(self) -> None:
        """
        Each alert renamed in a copy of the rules fails the unit tests, on
        that alert: some case expects it to fire, and it does.
        """
        rules = RULES.read_text()
        names = [alert.name for alert in alert_rules(rules)]
        self.assertTrue(names, f"no alert in {RULES.name}")
        with tempfile.TemporaryDirectory() as directory:
            copy = Path(directory)
            shutil.copy(RULE_TESTS, copy / RULE_TESTS.name)
            for name in names:
                line = re.compile(rf"^(\s*- alert: ){name}\s*$", re.MULTILINE)
                renamed, count = line.subn(rf"\g<1>Renamed{name}", rules)
                self.assertEqual(count, 1, name)
                (copy / RULES.name).write_text(renamed)
                done = promtool("test", "rules", str(copy / RULE_TESTS.name))
                self.assertNotEqual(
                    done.returncode, 0, f"{name} renamed, the tests still pass"
                )
                # promtool reports failed cases on its standard error.
                self.assertIn(f"alertname: {name},", done.stderr, name)


class CoverageTests(SynchronousTestCase):
    """
    Every alert has its runbook paragraph and its tests.
    """

    def setUp(self) -> None:
        self.alerts = alert_rules(RULES.read_text())
        self.names = [alert.name for alert in self.alerts]
        self.assertTrue(self.names, f"no alert in {RULES.name}")

    def test_names_are_unique(self) -> None:
        """
        No two alerts share a name (an anchor would name two paragraphs).
        """
        self.assertEqual(len(set(self.names)), len(self.names), self.names)

    def test_runbooks(self) -> None:
        """
        Every alert's C{runbook_url} is the anchor of its heading in the
        Alerts section, whose paragraph says enough; every heading there is
        an alert's.
        """
        section = alerts_section(PAGE.read_text())
        paragraphs = runbooks(section)
        for alert in self.alerts:
            # GitHub's anchor of a heading that is one word: lower case.
            self.assertEqual(
                alert.runbook_url, f"{PAGE_PATH}#{alert.name.lower()}", alert.name
            )
            self.assertIn(alert.name, paragraphs, f"no '### {alert.name}'")
            words = len(paragraphs[alert.name].split())
            self.assertGreaterEqual(words, RUNBOOK_MIN_WORDS, alert.name)
        self.assertEqual(sorted(paragraphs), sorted(self.names))

    def test_table(self) -> None:
        """
        The table of the Alerts section has a row for every alert, with the
        rule's C{for} (empty for none), and no other alert.
        """
        section = alerts_section(PAGE.read_text())
        rows = dict(_TABLE_ROW.findall(section))
        self.assertEqual(
            rows, {alert.name: alert.hold for alert in self.alerts}, PAGE_PATH
        )

    def test_every_alert_fires_and_stays_quiet(self) -> None:
        """
        Every alert has a case where it fires and one where it is quiet,
        and every case names an alert of the rules.
        """
        cases = rule_test_cases(RULE_TESTS.read_text())
        unknown = {name for name, _ in cases} - set(self.names)
        self.assertEqual(unknown, set(), "cases for alerts the rules lack")
        for name in self.names:
            self.assertIn((name, True), cases, f"no case where {name} fires")
            self.assertIn((name, False), cases, f"no case where {name} is quiet")
