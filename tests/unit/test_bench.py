"""
The harness the benchmark scripts share (C{bench._harness}): tables,
arguments and polling, in-process.  The scripts themselves run as smoke
tests in L{tests.integration.test_bench}.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bench import _harness as harness


class HarnessTableTests(SynchronousTestCase):
    def test_columns_fit_titles_cells_and_the_narrowest(self) -> None:
        cells = [["1", "123456"], ["22", "7"]]
        table = harness.Table.fitting(["n", "value"], cells, narrowest=3, aligns="<")
        self.assertEqual(
            table.lines(cells, rule=True),
            [
                "n   |  value",
                "------------",
                "1   | 123456",
                "22  |      7",
            ],
        )

    def test_fixed_columns_and_short_rows(self) -> None:
        table = harness.Table(
            [harness.Column("metric", 8, "<"), harness.Column("ours", 6)], " "
        )
        self.assertEqual(table.header(), "metric     ours")
        self.assertEqual(table.line(["rss"]), "rss")
        self.assertEqual(table.line(["rss", 1.5]), "rss         1.5")


class HarnessArgumentTests(SynchronousTestCase):
    def test_at_least(self) -> None:
        self.assertEqual(harness.at_least(3)("3"), 3)
        with self.assertRaisesRegex(argparse.ArgumentTypeError, "at least 3"):
            harness.at_least(3)("2")
        with self.assertRaisesRegex(argparse.ArgumentTypeError, "not a whole"):
            harness.at_least(3)("3.5")

    def test_seconds(self) -> None:
        self.assertEqual(harness.seconds("1.5"), 1.5)
        for bad in ("0", "-1", "inf", "nan", "soon"):
            with self.assertRaises(argparse.ArgumentTypeError, msg=bad):
                harness.seconds(bad)

    def test_output_path_needs_its_directory(self) -> None:
        self.assertEqual(harness.output_path("out.json"), "out.json")
        with self.assertRaisesRegex(argparse.ArgumentTypeError, "no such directory"):
            harness.output_path(os.path.join(self.mktemp(), "out.json"))


class HarnessPollerTests(SynchronousTestCase):
    """
    L{harness.Poller} on a L{Clock}: nothing sleeps.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        processes = harness.Processes(self.clock, now=self.clock.seconds)
        self.poller = harness.Poller(processes, interval=1.0)
        # When each watcher starts to answer "seen".
        self.ready = {"a": 2.0, "b": 3.0, "c": 99.0}

    async def seen(self, pending: Sequence[str]) -> dict[str, float]:
        now = self.clock.seconds()
        return {w: now for w in pending if now >= self.ready[w]}

    def each(self, watchers: list[str], bound: float) -> Deferred[dict[str, float]]:
        return Deferred.fromCoroutine(
            self.poller.each(
                watchers, self.seen, bound, lambda late: f"late: {', '.join(late)}"
            )
        )

    def test_each_watcher_when_first_seen(self) -> None:
        polled = self.each(["a", "b"], bound=10)
        self.clock.pump([1.0] * 5)
        self.assertEqual(self.successResultOf(polled), {"a": 2.0, "b": 3.0})

    def test_fails_after_the_bound_naming_the_late(self) -> None:
        polled = self.each(["a", "c"], bound=5)
        self.clock.pump([1.0] * 7)
        failure = self.failureResultOf(polled, harness.RunFailed)
        self.assertEqual(str(failure.value), "late: c")
