"""
Tests for the generated part of C{docs/}: the metric table of
C{docs/reference.md} is what the metric declarations render.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from cluster.alloy.service import SERVICE_METRICS
from cluster.ckit.metrics import METRICS, metric_reference

REGENERATE = "python docs/generate_reference.py"
SECTION = re.compile(
    r"<!-- BEGIN GENERATED METRICS[^\n]*-->\n(.*?)<!-- END GENERATED METRICS -->",
    re.DOTALL,
)


def reference_page() -> Path:
    """
    @return: C{docs/reference.md} of the checkout these tests are in.
    """
    for directory in Path(__file__).resolve().parents:
        page = directory / "docs" / "reference.md"
        if page.is_file():
            return page
    raise FileNotFoundError("no docs/reference.md above the tests")


class MetricReferenceTests(SynchronousTestCase):
    """
    The metric section of C{docs/reference.md}.
    """

    def test_section_is_rendered_from_the_declarations(self) -> None:
        """
        The text between the markers is L{metric_reference} of the node's and
        the service's metrics, with a blank line either side.
        """
        match = SECTION.search(reference_page().read_text())
        if match is None:
            self.fail("docs/reference.md lost its GENERATED METRICS markers")
        expected = "\n" + metric_reference((*METRICS, *SERVICE_METRICS)) + "\n"
        if match.group(1) != expected:
            diff = difflib.unified_diff(
                match.group(1).splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "docs/reference.md",
                "the declarations",
            )
            self.fail(
                f"docs/reference.md's metric table is stale; run: {REGENERATE}\n"
                + "".join(diff)
            )
