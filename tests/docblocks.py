"""
The fenced code blocks of C{README.md} and C{docs/*.md}, as the tests that
run them read them (C{tests/integration/test_readme.py}).

Shell blocks (C{sh}, C{bash}, C{shell}, and C{console}, whose commands
follow a C{$ } prompt) and Python blocks (C{python}, C{py}) are programs;
C{text} blocks are what a program prints, or a table; L{DATA} blocks are
files.  A C{text} block right after a program (only blank lines between)
is that program's output: L{missing_lines} checks it.  A Python block
whose first line is L{CONTINUED} goes on from the Python block above it,
and L{programs} joins the two into one.  L{NOT_RUN} lists the programs
that cannot run on a test machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[1]
SHELL = frozenset({"sh", "bash", "console", "shell"})
PYTHON = frozenset({"python", "py"})
OUTPUT = "text"
# Blocks that are files or data, never run.
DATA = frozenset({OUTPUT, "json", "toml", "ini", "yaml"})
PROMPT = "$ "
# Programs that cannot run on a test machine, by page and a phrase of the
# block, with the reason; the tests only parse them (docs/testing.md
# states this list).
NOT_RUN: dict[tuple[str, str], str] = {
    ("docs/running.md", "dns+cluster-headless"): (
        "joins a real cluster through its DNS name"
    ),
}
# The first line of a Python block that goes on from the one above it.
CONTINUED = "# ... continued from the block above"
ELLIPSIS = "..."

_FENCE = re.compile(r"^(```+)\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")


@attrs.frozen
class Block:
    """
    One fenced block.

    @ivar path: the page, relative to the checkout (C{docs/tls.md}).
    @ivar line: the line of the opening fence (1-based).
    @ivar language: the fence's info string, lower case (C{""} if none).
    @ivar text: the lines between the fences.
    @ivar heading: the nearest heading above the block.
    @ivar output: the C{text} block right after this one, if any.
    """

    path: str
    line: int
    language: str
    text: str
    heading: str
    output: Block | None = None

    @property
    def where(self) -> str:
        """
        C{path:line}, for messages.
        """
        return f"{self.path}:{self.line}"

    @property
    def runnable(self) -> bool:
        """
        Whether the block is a shell or Python program.
        """
        return self.language in SHELL | PYTHON

    @property
    def script(self) -> str:
        """
        The program: the text, or a C{console} block's commands (the lines
        after a C{$ } prompt, and the lines that a C{\\} at the end of the
        line before continues).
        """
        return self._console()[0] if self.language == "console" else self.text

    @property
    def expected(self) -> str | None:
        """
        What the program prints (L{missing_lines}): the C{text} block
        after it, or a C{console} block's lines that are not commands.
        """
        if self.language == "console":
            printed = self._console()[1]
            if printed.strip():
                return printed
        return None if self.output is None else self.output.text

    def _console(self) -> tuple[str, str]:
        commands, printed = [], []
        going_on = False
        for line in self.text.splitlines():
            if line.startswith(PROMPT) or going_on:
                command = line.removeprefix(PROMPT) if not going_on else line
                commands.append(command)
                going_on = command.endswith("\\")
            else:
                printed.append(line)
        return "\n".join(commands) + "\n", "\n".join(printed) + "\n"


def pages(root: Path = ROOT) -> list[Path]:
    """
    C{README.md} and every C{docs/*.md}, in that order.
    """
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(page: Path, root: Path = ROOT) -> list[Block]:
    """
    The fenced blocks of C{page}, each with the C{text} block after it.

    @raise ValueError: for a fence that is never closed.
    """
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    heading = ""
    # (index into found) of the last block whose closing fence was
    # followed only by blank lines so far.
    follows: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            title = _HEADING.match(line)
            if title is not None:
                heading = title.group(1)
            if line.strip():
                follows = None
            i += 1
            continue
        marks, language = fence.group(1), fence.group(2).lower()
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != marks:
            end += 1
        if end == len(lines):
            raise ValueError(f"{page.name}:{i + 1}: a fence that is never closed")
        block = Block(
            str(page.relative_to(root)),
            i + 1,
            language,
            "\n".join(lines[i + 1 : end]) + "\n",
            heading,
        )
        if language == OUTPUT and follows is not None:
            found[follows] = attrs.evolve(found[follows], output=block)
        found.append(block)
        follows = len(found) - 1 if block.runnable else None
        i = end + 1
    return found


def documented_blocks(root: Path = ROOT) -> list[Block]:
    """
    Every fenced block of C{README.md} and C{docs/*.md}.
    """
    return [block for page in pages(root) for block in blocks(page, root)]


def programs(found: Iterable[Block]) -> list[Block]:
    """
    The runnable blocks of C{found}, each Python block that starts with
    L{CONTINUED} joined to the Python program above it on its page (the
    joined program keeps the first block's place, and the last block's
    output).

    @raise ValueError: for a continuation with no Python block above it.
    """
    result: list[Block] = []
    for block in found:
        if not block.runnable:
            continue
        first = block.text.lstrip().splitlines()[:1]
        if block.language in PYTHON and first == [CONTINUED]:
            if (
                not result
                or result[-1].path != block.path
                or result[-1].language not in PYTHON
            ):
                raise ValueError(f"{block.where}: continues no Python block")
            above = result[-1]
            result[-1] = attrs.evolve(
                above, text=above.text + block.text, output=block.output
            )
            continue
        result.append(block)
    return result


def _spaced(line: str) -> str:
    return " ".join(line.split())


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = _spaced(expected).split(ELLIPSIS)
    return re.compile(".*".join(re.escape(part) for part in parts))


def missing_lines(expected: str, printed: str) -> list[str]:
    """
    The lines of C{expected} (a C{text} block) that C{printed} lacks.

    Each line of C{expected} must be found in a line of C{printed} of its
    own, in any order (several processes may print at once, and log lines
    come between); C{...} in a line stands for any text, a line of only
    C{...} for lines left out, and a run of spaces for any run of spaces.
    """
    unused = [_spaced(line) for line in printed.splitlines() if line.strip()]
    missing = []
    for line in expected.splitlines():
        if _spaced(line) in ("", ELLIPSIS):
            continue
        pattern = _line_pattern(line)
        for index, candidate in enumerate(unused):
            if pattern.search(candidate):
                del unused[index]
                break
        else:
            missing.append(line)
    return missing


def substitute_ports(text: str, ports: Sequence[tuple[int, int]]) -> str:
    """
    C{text} with each port number C{old} of C{ports} replaced by its
    C{new} (whole numbers only).
    """
    for old, new in ports:
        text = re.sub(rf"(?<!\d){old}(?!\d)", str(new), text)
    return text
