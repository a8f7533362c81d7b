"""
The import graph of C{cluster/}, read from the source: layers import
downward only, no module reaches itself again through its imports, and the
README's "Layout" section states both the layers and the order of
C{cluster/gossip/}'s modules as they are.

Every import counts: at module level, inside functions, and under
C{if TYPE_CHECKING:} (a circle that only the type checker sees still ties
two modules together).  C{from package import name} depends on the module
C{package.name} when there is one, else on the package itself.
"""

from __future__ import annotations

import ast
import configparser
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cluster"
README = ROOT / "README.md"

# Bottom first.  A module belongs to the layer of the longest prefix that
# names it; it may import its own layer and the layers below.  The package
# itself (cluster/__init__.py) only re-exports public names, so it sits on
# top with the testing module, and nothing inside cluster/ imports it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cluster.gossip", "cluster.peer"),
    ("cluster.shard",),
    ("cluster.serf",),
    ("cluster.ckit",),
    ("cluster.alloy",),
    ("cluster.web",),
    ("cluster.daemon",),
    ("cluster.testing", "cluster"),
)

# The README marks its two checked blocks with these HTML comments.
LAYERS_MARK = "<!-- layers: checked by tests/test_layout.py -->"
GOSSIP_MARK = "<!-- gossip modules: checked by tests/test_layout.py -->"


@attrs.frozen
class Import:
    """
    One import statement's dependency on a module of C{cluster/}.

    @ivar importer: the importing module's dotted name.
    @ivar imported: the imported module's dotted name.
    @ivar line: the line of the statement in the importer's file.
    """

    importer: str
    imported: str
    line: int


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """
    @return: every module under C{package} by dotted name (a package by the
        name of its C{__init__}).
    """
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """
    @return: C{name} or its longest prefix that is a module, or L{None}.
    """
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> Iterator[Import]:
    """
    @return: the dependencies of module C{name} (its source at C{path}) on
        modules in C{modules}, one per imported module and statement.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            line = node.lineno
            targets = [_known(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            line = node.lineno
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.append(
                    submodule if submodule in modules else _known(source, modules)
                )
        for target in dict.fromkeys(targets):
            if target is not None and target != name:
                yield Import(name, target, line)


def import_graph(package: Path = PACKAGE) -> list[Import]:
    """
    @return: every dependency of a module under C{package} on another.
    """
    modules = module_files(package)
    return [
        found
        for name, path in modules.items()
        for found in imports_of(name, path, modules)
    ]


def layer_of(module: str) -> int | None:
    """
    @return: the index in L{LAYERS} of C{module}'s layer, or L{None}.
    """
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            nested = prefix != "cluster" and module.startswith(prefix + ".")
            if (module == prefix or nested) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def layer_name(index: int) -> str:
    return ", ".join(LAYERS[index])


def circles(edges: Sequence[Import]) -> list[list[str]]:
    """
    The import circles among C{edges}: Tarjan's strongly connected
    components of more than one module.

    @return: each component's modules, sorted, the components sorted too.
    """
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def circle_path(component: Sequence[str], edges: Sequence[Import]) -> str:
    """
    @return: one circle through C{component}'s first module, each step
        with its line: C{"a -> b (a.py:3) -> a (b.py:9)"}.
    """
    inside = set(component)
    steps = {
        (edge.importer, edge.imported): edge.line
        for edge in edges
        if edge.importer in inside and edge.imported in inside
    }
    start = component[0]
    # Breadth-first from the start back to it, inside the component.
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for importer, imported in sorted(steps):
            if importer != module:
                continue
            if imported == start:
                path = [*paths[module], start]
                return " -> ".join(
                    [path[0]]
                    + [
                        f"{b} (line {steps[(a, b)]} of {a})"
                        for a, b in itertools.pairwise(path)
                    ]
                )
            if imported not in paths:
                paths[imported] = [*paths[module], imported]
                queue.append(imported)
    raise AssertionError(f"no circle through {start}")


def gossip_tiers(edges: Sequence[Import]) -> list[list[str]]:
    """
    C{cluster/gossip/}'s modules by tier, top first: a module's tier is one
    above the highest it imports inside the package (0 when it imports none).

    @return: the short names of each tier, sorted, the top tier first.
    """
    modules = {name for name in module_files() if name.startswith("cluster.gossip.")}
    inside: dict[str, set[str]] = {module: set() for module in modules}
    for edge in edges:
        if edge.importer in modules and edge.imported in modules:
            inside[edge.importer].add(edge.imported)
    tier: dict[str, int] = {}

    def tier_of(module: str, seen: frozenset[str] = frozenset()) -> int:
        if module not in tier:
            if module in seen:
                return 0  # a circle, reported by its own test
            tier[module] = 1 + max(
                (tier_of(other, seen | {module}) for other in inside[module]),
                default=-1,
            )
        return tier[module]

    for module in modules:
        tier_of(module)
    top = max(tier.values(), default=0)
    return [
        sorted(m.rpartition(".")[2] for m in tier if tier[m] == level)
        for level in range(top, -1, -1)
    ]


def marked_block(text: str, mark: str) -> list[str]:
    """
    @return: the lines of the fenced block that follows C{mark} in C{text}.
    """
    after = text.partition(mark)[2]
    match = re.search(r"^```[a-z]*\n(.*?)^```", after, re.M | re.S)
    if mark not in text or match is None:
        raise AssertionError(f"README.md has no fenced block after {mark}")
    return match.group(1).splitlines()


def named(line: str) -> list[str]:
    """
    @return: the comma-separated names before the first run of two spaces.
    """
    head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
    return [part.strip() for part in head.split(",") if part.strip()]


class LayerTests(SynchronousTestCase):
    """
    Layers import downward only.
    """

    def test_everyModuleHasALayer(self) -> None:
        """
        Every module under C{cluster/} belongs to one of L{LAYERS}, so a new
        top-level module is placed in the order on purpose.
        """
        orphans = sorted(m for m in module_files() if layer_of(m) is None)
        self.assertEqual(orphans, [], "add these modules to LAYERS and README")

    def test_everyPackageIsInstalled(self) -> None:
        """
        Every package under C{cluster/} is listed in C{setup.cfg}'s
        C{packages}, which is explicit (see there): a package left out is
        missing from a regular install, and only the installed tests see it.
        """
        config = configparser.ConfigParser()
        config.read(ROOT / "setup.cfg")
        listed = set(config["options"]["packages"].split())
        packages = {
            ".".join(init.parent.relative_to(ROOT).parts)
            for init in PACKAGE.rglob("__init__.py")
        }
        self.assertEqual(sorted(packages - listed), [], "add these to setup.cfg")

    def test_noUpwardImport(self) -> None:
        """
        No module imports one of a higher layer.
        """
        upward = [
            f"{edge.importer} ({layer_name(low)}) imports {edge.imported} "
            f"({layer_name(high)}), line {edge.line}"
            for edge in import_graph()
            for low, high in [(layer_of(edge.importer), layer_of(edge.imported))]
            if low is not None and high is not None and high > low
        ]
        self.assertEqual(upward, [], "\n" + "\n".join(upward))

    def test_noImportCircle(self) -> None:
        """
        No module imports itself through others, not even for the type
        checker alone.
        """
        edges = import_graph()
        found = [circle_path(component, edges) for component in circles(edges)]
        self.assertEqual(found, [], "\n" + "\n".join(found))


class ReadmeLayoutTests(SynchronousTestCase):
    """
    README's "Layout" section states the graph as it is.
    """

    def test_layers(self) -> None:
        """
        The layers block lists L{LAYERS} top first, one layer a line.
        """
        stated = [
            tuple(
                "cluster"
                if path == "cluster/__init__.py"
                else path.removesuffix(".py").rstrip("/").replace("/", ".")
                for path in named(line)
            )
            for line in marked_block(README.read_text(), LAYERS_MARK)
            if line.startswith("cluster")
        ]
        self.assertEqual(stated, list(reversed(LAYERS)))

    def test_gossipModules(self) -> None:
        """
        The gossip block names every module of C{cluster/gossip/} once, and
        each imports only modules on lines below its own.
        """
        edges = import_graph()
        lines = [
            named(line)
            for line in marked_block(README.read_text(), GOSSIP_MARK)
            if line.strip()
        ]
        line_of = {name: number for number, names in enumerate(lines) for name in names}
        expected = "\n".join(", ".join(tier) for tier in gossip_tiers(edges))
        stated = sorted(name for names in lines for name in names)
        actual = sorted(
            name.rpartition(".")[2]
            for name in module_files()
            if name.startswith("cluster.gossip.")
        )
        self.assertEqual(
            stated, actual, f"README's gossip block; the tiers are:\n{expected}"
        )
        upward = [
            f"{edge.importer} imports {edge.imported} (line {edge.line})"
            for edge in edges
            if edge.importer.startswith("cluster.gossip.")
            and edge.imported.startswith("cluster.gossip.")
            and line_of[edge.importer.rpartition(".")[2]]
            >= line_of[edge.imported.rpartition(".")[2]]
        ]
        self.assertEqual(
            upward,
            [],
            "README's gossip block puts these on a line at or below what "
            f"they import; the tiers are:\n{expected}",
        )


class GraphReaderTests(SynchronousTestCase):
    """
    The reader finds every kind of import, and the checks catch what they
    are for: a fake package with an upward import and a circle.
    """

    def setUp(self) -> None:
        self.root = Path(self.mktemp()) / "cluster"
        files = {
            "__init__.py": "",
            "gossip/__init__.py": "from cluster.gossip.wire import X\n",
            "gossip/wire.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from cluster.gossip import codec\n"
            ),
            "gossip/codec.py": "def f():\n    import cluster.gossip.wire\n",
            "shard/__init__.py": "from . import _ring\nfrom ..peer import Peer\n",
            "shard/_ring.py": "from cluster.web.site import Site\n",
            "peer.py": "import os\n",
            "web/__init__.py": "",
            "web/site.py": "from cluster.shard import Op\n",
        }
        for name, source in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)

    def edges(self) -> set[tuple[str, str]]:
        return {(e.importer, e.imported) for e in import_graph(self.root)}

    def test_kinds(self) -> None:
        """
        Imports in functions, under C{TYPE_CHECKING}, relative ones and
        C{from package import module} are all read; stdlib ones are not.
        """
        self.assertEqual(
            self.edges(),
            {
                ("cluster.gossip", "cluster.gossip.wire"),
                ("cluster.gossip.wire", "cluster.gossip.codec"),
                ("cluster.gossip.codec", "cluster.gossip.wire"),
                ("cluster.shard", "cluster.shard._ring"),
                ("cluster.shard", "cluster.peer"),
                ("cluster.shard._ring", "cluster.web.site"),
                ("cluster.web.site", "cluster.shard"),
            },
        )

    def test_circles(self) -> None:
        """
        Both circles are found, each shown as a path with its lines.
        """
        edges = import_graph(self.root)
        found = circles(edges)
        self.assertEqual(
            found,
            [
                ["cluster.gossip.codec", "cluster.gossip.wire"],
                ["cluster.shard", "cluster.shard._ring", "cluster.web.site"],
            ],
        )
        self.assertEqual(
            circle_path(found[0], edges),
            "cluster.gossip.codec -> cluster.gossip.wire (line 2 of "
            "cluster.gossip.codec) -> cluster.gossip.codec (line 3 of "
            "cluster.gossip.wire)",
        )

    def test_upward(self) -> None:
        """
        C{shard._ring} importing C{web.site} goes up; the reverse does not.
        """
        up = [
            (e.importer, e.imported)
            for e in import_graph(self.root)
            if (layer_of(e.imported) or 0) > (layer_of(e.importer) or 0)
        ]
        self.assertEqual(up, [("cluster.shard._ring", "cluster.web.site")])
