"""
Rewrite the table of detection bounds in C{docs/profiles.md} from the code:
C{python docs/generate_profiles.py}.  Each row is a profile of
L{cluster.daemon.flags.PROFILES}; its numbers come from
L{cluster.gossip.suspicion}, and C{tests/unit/test_profiles.py} fails when
the page differs from what L{rewritten} makes of it.
"""

from __future__ import annotations

import re
from pathlib import Path

from cluster.daemon.flags import PROFILES
from cluster.gossip import GossipConfig
from cluster.gossip.suspicion import (
    expected_confirmations,
    suspicion_timeout,
    worst_case_detection,
)

PAGE = Path(__file__).resolve().parent / "profiles.md"
SECTION = re.compile(
    r"(<!-- BEGIN GENERATED PROFILES[^\n]*-->\n)(.*?)(<!-- END GENERATED PROFILES -->)",
    re.DOTALL,
)
COMMAND = "python docs/generate_profiles.py"
#: The cluster sizes the table has columns for.
SIZES = (3, 10, 100)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def suspicion_range(config: GossipConfig, n: int) -> str:
    """
    How long a suspicion runs in a cluster of C{n} members: from the
    minimum (enough confirmations) to the maximum (none), or the minimum
    alone when the cluster is too small to expect a confirmation.
    """
    minimum = suspicion_timeout(config.suspicion_mult, n, config.probe_interval)
    if expected_confirmations(config.suspicion_mult, n) == 0:
        return _seconds(minimum)
    maximum = config.suspicion_max_timeout_mult * minimum
    return f"{minimum:g} - {_seconds(maximum)}"


def bounds_table() -> str:
    """
    @return: the Markdown table: one row per profile, with its probe
        interval and timeout, and for each of L{SIZES} its suspicion
        range and its L{worst_case_detection}.
    """
    header = ["profile", "probe every, timeout"]
    header += [f"suspicion ({n} members)" for n in SIZES]
    header += [f"worst case ({n} members)" for n in SIZES]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, preset in PROFILES.items():
        config = preset()
        cells = [
            f"`{name}`",
            f"{_seconds(config.probe_interval)}, {_seconds(config.probe_timeout)}",
        ]
        cells += [suspicion_range(config, n) for n in SIZES]
        cells += [f"{worst_case_detection(config, n):.1f} s" for n in SIZES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rewritten(page: str) -> str:
    """
    @return: C{page} with the section between its markers replaced by
        L{bounds_table}, a blank line either side; C{page} itself when it
        is up to date.
    @raise ValueError: when C{page} has no markers.
    """
    table = "\n" + bounds_table() + "\n"
    result, found = SECTION.subn(lambda m: m.group(1) + table + m.group(3), page, 1)
    if not found:
        raise ValueError("docs/profiles.md has no GENERATED PROFILES markers")
    return result


def main() -> None:
    """
    Rewrite the table of C{docs/profiles.md}.
    """
    PAGE.write_text(rewritten(PAGE.read_text()))


if __name__ == "__main__":
    main()
