"""
Write the Sphinx inventories that let pydoctor link our docstrings to
Twisted's, Python's and attrs' documentation without fetching anything:
C{python docs/inventories.py DIRECTORY} writes C{twisted.inv},
C{python.inv} and C{attrs.inv} there, for C{--intersphinx-file}.

An inventory maps a dotted name to a page of the project's documentation.
The names are those that C{cluster/} can refer to: every module it imports
from Twisted, the standard library or attrs, or names in an C{L{...}}
link, with each module's public names and their classes' public members,
read from the installed packages.  The pages follow each site's scheme:
pydoctor's for Twisted (a class has a page, anything else an anchor on its
module's page), the library reference for Python (builtins on the
functions, exceptions and constants pages), the API page for attrs.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from zope.interface.interface import InterfaceClass

SITES = {
    "twisted": "https://docs.twisted.org/en/stable/api",
    "python": "https://docs.python.org/3",
    "attrs": "https://www.attrs.org/en/stable",
}

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"L\{(?:[^}<]*<)?([A-Za-z_][\w.]*)>?\}")


def site_of(module: str) -> str | None:
    """
    @return: the key in L{SITES} that documents C{module}, or L{None}.
    """
    top = module.partition(".")[0]
    if top == "twisted":
        return "twisted"
    if top in ("attr", "attrs"):
        return "attrs"
    if top in sys.stdlib_module_names and not top.startswith("_"):
        return "python"
    return None


def referenced_modules(package: Path) -> set[str]:
    """
    @return: the external modules that C{package}'s code imports or its
        docstrings link to (the longest importable prefix of a link).
    """
    found: set[str] = set()
    for path in package.rglob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        found.update(LINK.findall(source))
    modules = set()
    for name in found:
        while name and site_of(name):
            try:
                importlib.import_module(name)
            except ImportError:
                name = name.rpartition(".")[0]
                continue
            modules.add(name)
            break
    return modules


def _public(name: str) -> bool:
    return not name.startswith("_")


def _private_module(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _members(value: object) -> list[str]:
    """
    @return: the public members of a class or a zope interface.
    """
    names = value.names() if isinstance(value, InterfaceClass) else vars(value)
    return sorted(name for name in names if _public(name))


def _documented_home(
    value: object, attribute: str, importer: str, exported: bool
) -> str | None:
    """
    The Twisted module whose page documents C{value}, reached as
    C{importer.attribute}: where it is defined, or, for a private module's
    name, the nearest public parent that re-exports it, else C{importer}
    when C{importer} exports it.

    @return: the module's name, or L{None} for another project's name or a
        private one that Twisted does not document.
    """
    home = getattr(value, "__module__", None)
    if not isinstance(home, str) or home.partition(".")[0] != "twisted":
        return None
    parts = home.split(".")
    while _private_module(".".join(parts)) and len(parts) > 1:
        parts.pop()
        parent = sys.modules.get(".".join(parts))
        if parent is not None and getattr(parent, attribute, None) is value:
            return ".".join(parts)
    if not _private_module(home):
        return home
    return importer if exported else None


def twisted_entries(module: ModuleType) -> Iterator[tuple[str, str, str]]:
    """
    @return: (name, role, page) for C{module}, its public names and their
        classes' public members, on pydoctor's pages.
    """
    name = module.__name__
    yield name, "py:module", f"{name}.html"
    for attribute, value in sorted(vars(module).items()):
        if not _public(attribute):
            continue
        if inspect.ismodule(value):
            continue
        exported = attribute in getattr(module, "__all__", ())
        kind = inspect.isclass(value) or isinstance(value, InterfaceClass)
        if not (kind or inspect.isroutine(value)):
            # Data: documented where its module exports it.
            if exported:
                yield f"{name}.{attribute}", "py:data", f"{name}.html#{attribute}"
            continue
        home = _documented_home(value, attribute, name, exported)
        if home is None:
            continue
        if inspect.isclass(value) or isinstance(value, InterfaceClass):
            qualname = getattr(value, "__qualname__", attribute)
            page = f"{home}.{qualname}.html"
            if home == name:
                page = f"{name}.{attribute}.html"
            yield f"{name}.{attribute}", "py:class", page
            for member in _members(value):
                yield f"{name}.{attribute}.{member}", "py:attribute", f"{page}#{member}"
        else:
            yield f"{name}.{attribute}", "py:function", f"{home}.html#{attribute}"


def python_entries(module: ModuleType) -> Iterator[tuple[str, str, str]]:
    """
    @return: (name, role, page) for C{module}, its public names and their
        classes' public members, on the library reference's pages.
    """
    name = module.__name__
    page = f"library/{name.lower()}.html"
    yield name, "py:module", f"{page}#module-{name}"
    for attribute, value in sorted(vars(module).items()):
        if not _public(attribute) or inspect.ismodule(value):
            continue
        full = f"{name}.{attribute}"
        yield full, "py:data", f"{page}#{full}"
        if inspect.isclass(value):
            for member in _members(value):
                yield f"{full}.{member}", "py:attribute", f"{page}#{full}.{member}"


def builtin_entries() -> Iterator[tuple[str, str, str]]:
    """
    @return: (name, role, page) for every builtin name.
    """
    for name, value in sorted(vars(builtins).items()):
        if not _public(name):
            continue
        if inspect.isclass(value) and issubclass(value, BaseException):
            page = "library/exceptions.html"
        elif callable(value):
            page = "library/functions.html"
        else:
            page = "library/constants.html"
        yield name, "py:data", f"{page}#{name}"
        if inspect.isclass(value) and not issubclass(value, BaseException):
            for member in _members(value):
                page = "library/stdtypes.html"
                yield f"{name}.{member}", "py:attribute", f"{page}#{name}.{member}"


def attrs_entries(module: ModuleType) -> Iterator[tuple[str, str, str]]:
    """
    @return: (name, role, page) for the public names of C{attrs} or C{attr}.
    """
    name = module.__name__
    yield name, "py:module", "api.html"
    for attribute in sorted(vars(module)):
        if _public(attribute):
            yield f"{name}.{attribute}", "py:data", f"api.html#{name}.{attribute}"


def inventory(project: str, entries: Iterator[tuple[str, str, str]]) -> bytes:
    """
    @return: a Sphinx inventory (version 2) of C{entries}.
    """
    seen: dict[str, str] = {}
    lines = []
    for name, role, page in entries:
        if name not in seen:
            seen[name] = page
            lines.append(f"{name} {role} 1 {page} -")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    return header.encode() + zlib.compress(("\n".join(lines) + "\n").encode())


def main(directory: str) -> None:
    """
    Write the inventories into C{directory}, and print the pydoctor flags
    that use them.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    modules = sorted(referenced_modules(ROOT / "cluster"))
    by_site: dict[str, list[tuple[str, str, str]]] = {site: [] for site in SITES}
    by_site["python"].extend(builtin_entries())
    makers = {
        "twisted": twisted_entries,
        "python": python_entries,
        "attrs": attrs_entries,
    }
    for name in modules:
        site = site_of(name)
        if site is not None:
            by_site[site].extend(makers[site](importlib.import_module(name)))
    for site, entries in by_site.items():
        (out / f"{site}.inv").write_bytes(inventory(site, iter(entries)))
        print(f"--intersphinx-file={out / site}.inv::{SITES[site]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/inventories")
