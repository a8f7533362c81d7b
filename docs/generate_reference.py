"""
Rewrite the metric table of C{docs/reference.md} from the declarations:
C{python docs/generate_reference.py}.  The table is what
L{cluster.ckit.metrics.metric_reference} renders for the node's metrics
and the cluster service's, and the C{test_docs} tests fail when the page
differs from it.
"""

from __future__ import annotations

import re
from pathlib import Path

from cluster.alloy.service import SERVICE_METRICS
from cluster.ckit.metrics import METRICS, metric_reference

REFERENCE = Path(__file__).resolve().parent / "reference.md"
SECTION = re.compile(
    r"(<!-- BEGIN GENERATED METRICS[^\n]*-->\n)(.*?)(<!-- END GENERATED METRICS -->)",
    re.DOTALL,
)
COMMAND = "python docs/generate_reference.py"


def generated() -> str:
    """
    @return: the section between the markers, as the declarations render it.
    """
    return "\n" + metric_reference((*METRICS, *SERVICE_METRICS)) + "\n"


def current(page: str) -> str:
    """
    @return: the section between the markers of C{page}.
    @raise ValueError: when C{page} has no markers.
    """
    match = SECTION.search(page)
    if match is None:
        raise ValueError("docs/reference.md has no GENERATED METRICS markers")
    return match.group(2)


def main() -> None:
    """
    Replace the section of C{docs/reference.md} with L{generated}.
    """
    page = REFERENCE.read_text()
    current(page)
    table = generated()
    REFERENCE.write_text(
        SECTION.sub(lambda m: m.group(1) + table + m.group(3), page, count=1)
    )


if __name__ == "__main__":
    main()
