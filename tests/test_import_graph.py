"""The package's import graph: every import statement, lazy and type-checking ones too, is acyclic.

A cycle hidden in a function body or under ``if TYPE_CHECKING:`` still ties two modules
together: neither can be understood, moved or tested without the other. So the graph counts
every ``import`` and ``from ... import`` the ``ast`` finds, wherever it sits.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "otel_resilience"

Graph = Mapping[str, Iterable[str]]


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's ``__init__`` is the package."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _with_parents(target: str, importer: str, modules: Mapping[str, Path]) -> set[str]:
    """``target`` and the packages Python runs on the way to it, less the importer's own."""
    found = {target}
    parts = target.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent in modules and parent not in _ancestors(importer):
            found.add(parent)
    return {name for name in found if name in modules and name != importer}


def import_edges(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package modules its import statements load, at any depth of the file."""
    modules = module_names(package_dir, package)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for importer, path in modules.items():
        # The package a relative import starts from: the module's own package.
        here = importer if _is_package(path) else importer.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        edges[importer] |= _with_parents(alias.name, importer, modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: -(node.level - 1)]
                    base = ".".join([*base_parts, *([node.module] if node.module else [])])
                elif node.module is not None and (
                    node.module == package or node.module.startswith(package + ".")
                ):
                    base = node.module
                else:
                    continue
                targets = _with_parents(base, importer, modules)
                if base in modules and base != importer:
                    # ``from pkg import name`` runs pkg's __init__, whatever name is.
                    targets.add(base)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in modules:
                        targets.add(submodule)
                edges[importer] |= targets - {importer}
    return edges


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as a path whose first and last names are the same module, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in sorted(graph):
        if colour[start] != white:
            continue
        path = [start]
        colour[start] = grey
        stack = [iter(sorted(graph[start]))]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                colour[path.pop()] = black
                stack.pop()
            elif colour.get(following, white) == grey:
                return [*path[path.index(following) :], following]
            elif colour.get(following, white) == white:
                colour[following] = grey
                path.append(following)
                stack.append(iter(sorted(graph.get(following, ()))))
    return None


def test_cycle_finder_finds_a_cycle_and_only_a_real_one() -> None:
    """The finder names a hand-made cycle's path and finds none in a diamond-shaped graph."""
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["d", "b"], "d": []}) == ["b", "c", "b"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}) is None


def test_edges_count_lazy_type_checking_and_package_imports(tmp_path: Path) -> None:
    """Lazy, TYPE_CHECKING, absolute, ``from . import`` and two-dot imports all become edges."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from ._a import A\n",
        "_a.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from ._b import B\n"
            "def f():\n    from .sub import _c\n"
            "A = 1\n"
        ),
        "_b.py": "import pkg._a\nimport os\n",
        "_d.py": "from . import A\n",
        "sub/__init__.py": "",
        "sub/_c.py": "from .._b import B\nfrom . import _e\n",
        "sub/_e.py": "from pkg.sub._c import x\n",
    }
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")
    assert import_edges(package, "pkg") == {
        "pkg": {"pkg._a"},
        "pkg._a": {"pkg._b", "pkg.sub", "pkg.sub._c"},
        "pkg._b": {"pkg._a"},
        "pkg._d": {"pkg"},
        "pkg.sub": set(),
        "pkg.sub._c": {"pkg._b", "pkg.sub", "pkg.sub._e"},
        "pkg.sub._e": {"pkg.sub._c"},
    }


def test_the_package_has_no_import_cycle() -> None:
    """No chain of imports in otel_resilience/ (lazy and TYPE_CHECKING ones too) leads back."""
    edges = import_edges(ROOT / PACKAGE, PACKAGE)
    assert len(edges) > 40, sorted(edges)  # the walk found the package's modules
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())
