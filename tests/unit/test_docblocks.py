"""
L{tests.docblocks}: how the code blocks of the documentation are read, and
that every block of C{README.md} and C{docs/*.md} is either a program that
C{tests/integration/test_readme.py} runs or data it never runs.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.docblocks import (
    CONTINUED,
    DATA,
    NOT_RUN,
    Block,
    blocks,
    documented_blocks,
    missing_lines,
    programs,
    substitute_ports,
)

PAGE = """\
# Title

```sh
echo one
```

```text
one
```

## Second

```python
x = 1
```

Prose between: the text block below is no program's output.

```text
a table
```

```python
# ... continued from the block above
print(x)
```

```text
1
```

```console
$ echo a \\
    b
a b
```
"""


def page_blocks(case: SynchronousTestCase, text: str) -> list[Block]:
    """
    The blocks of C{text} as a page C{docs/page.md} of a new checkout.
    """
    root = Path(case.mktemp())
    (root / "docs").mkdir(parents=True)
    page = root / "docs" / "page.md"
    page.write_text(text)
    return blocks(page, root)


class BlocksTests(SynchronousTestCase):
    """
    L{blocks}, L{programs} and L{Block}'s views of a page.
    """

    def test_blocks(self) -> None:
        """
        Each block has its page, line, language, text and heading; a C{text}
        block right after a program is its output, one after prose is not.
        """
        found = page_blocks(self, PAGE)
        self.assertEqual(
            [(b.path, b.line, b.language, b.heading) for b in found],
            [
                ("docs/page.md", 3, "sh", "Title"),
                ("docs/page.md", 7, "text", "Title"),
                ("docs/page.md", 13, "python", "Second"),
                ("docs/page.md", 19, "text", "Second"),
                ("docs/page.md", 23, "python", "Second"),
                ("docs/page.md", 28, "text", "Second"),
                ("docs/page.md", 32, "console", "Second"),
            ],
        )
        self.assertEqual(found[0].text, "echo one\n")
        self.assertEqual(found[0].expected, "one\n")
        self.assertIsNone(found[2].expected)
        self.assertEqual(found[4].expected, "1\n")

    def test_unclosed_fence(self) -> None:
        with self.assertRaises(ValueError) as raised:
            page_blocks(self, "# T\n\n```sh\necho\n")
        self.assertIn("page.md:3", str(raised.exception))

    def test_console(self) -> None:
        """
        A C{console} block's commands follow C{$ } (and a line a backslash
        continues); its other lines are what they print.
        """
        (console,) = [b for b in page_blocks(self, PAGE) if b.language == "console"]
        self.assertEqual(console.script, "echo a \\\n    b\n")
        self.assertEqual(console.expected, "a b\n")

    def test_programs_join_continuations(self) -> None:
        """
        A Python block that starts with the marker goes on from the Python
        program above it, and brings its output along.
        """
        found = programs(page_blocks(self, PAGE))
        self.assertEqual([b.line for b in found], [3, 13, 32])
        self.assertEqual(found[1].script, f"x = 1\n{CONTINUED}\nprint(x)\n")
        self.assertEqual(found[1].expected, "1\n")

    def test_continuation_of_nothing(self) -> None:
        with self.assertRaises(ValueError) as raised:
            programs(page_blocks(self, f"```python\n{CONTINUED}\n```\n"))
        self.assertIn("page.md:1", str(raised.exception))


class MissingLinesTests(SynchronousTestCase):
    """
    L{missing_lines}: what a program printed against its C{text} block.
    """

    def test_all_present(self) -> None:
        """
        Lines count in any order, among other lines, inside longer lines,
        with any run of spaces; C{...} stands for any text.
        """
        printed = "log: start\nb  =   2\n2026 [x] a = 1, more\nlog: end\n"
        self.assertEqual(missing_lines("...\na = ...\nb = 2\n", printed), [])

    def test_missing(self) -> None:
        self.assertEqual(missing_lines("a = 1\nc = 3\n", "a = 1\n"), ["c = 3"])

    def test_each_line_once(self) -> None:
        """
        Two equal expected lines need two printed ones.
        """
        self.assertEqual(missing_lines("ok\nok\n", "ok\n"), ["ok"])

    def test_ellipsis_is_not_a_pattern(self) -> None:
        """
        Only C{...} is special: other characters match themselves.
        """
        self.assertEqual(missing_lines("[a.b]\n", "[aXb]\n"), ["[a.b]"])

    def test_substitute_ports(self) -> None:
        self.assertEqual(
            substitute_ports("127.0.0.1:7946 17946 8001", [(7946, 30000), (8001, 8)]),
            "127.0.0.1:30000 17946 8",
        )


class DocumentationTests(SynchronousTestCase):
    """
    The blocks of C{README.md} and C{docs/*.md}.
    """

    def test_every_block_is_a_program_or_data(self) -> None:
        """
        No block is left out of the tests by a missing or unknown language.
        """
        unknown = [
            f"{b.where} ({b.language or 'no language'})"
            for b in documented_blocks()
            if not b.runnable and b.language not in DATA
        ]
        self.assertEqual(unknown, [])

    def test_programs(self) -> None:
        """
        The pages read, continuations and all, and the README has programs.
        """
        found = programs(documented_blocks())
        self.assertTrue([b for b in found if b.path == "README.md"])

    def test_not_run_names_one_program_each(self) -> None:
        """
        Each entry of L{NOT_RUN} names exactly one program.
        """
        found = programs(documented_blocks())
        for page, phrase in NOT_RUN:
            named = [b.where for b in found if b.path == page and phrase in b.text]
            self.assertEqual(len(named), 1, f"{page}, {phrase!r}: {named}")
