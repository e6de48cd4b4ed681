"""No import circles in moss_tf/ and bench/ (issue 30): every arrow between modules points one way.

Pure ``ast``: nothing is imported. Imports inside functions count too (a
circle through a lazy import is still a circle, only one that fails later);
imports under ``if TYPE_CHECKING:`` do not, they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("moss_tf", "bench")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """The ``import``/``from`` statements of ``tree`` that run, at any depth."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The dotted module a ``from`` statement names, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` (its source at ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        target = _absolute(node, module, is_package)
        for alias in node.names:
            # ``from bench import convolutions`` imports a module; ``from bench.x import f`` a name.
            submodule = f"{target}.{alias.name}"
            found.add(submodule if submodule in known else target)
    return {name for name in found if name in known and name != module}


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """``{module: modules it imports}`` within ``packages``."""
    files = module_files(root, packages)
    known = set(files)
    return {module: imported_modules(module, path, known) for module, path in files.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of ``graph``: its strongly connected components of two or more modules
    (Tarjan's algorithm, iterative), each sorted, largest first."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found, key=lambda c: (-len(c), c))


def _describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    arrows = [f"{a} -> {b}" for a in cycle for b in sorted(graph[a]) if b in cycle]
    return f"{len(cycle)} modules: " + "; ".join(arrows)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    graph = import_graph(REPO, (package,))
    assert len(graph) > 5, f"found only {sorted(graph)} under {REPO / package}"
    cycles = import_cycles(graph)
    assert not cycles, f"import circles in {package}/:\n" + "\n".join(
        _describe(c, graph) for c in cycles
    )


def test_the_checker_finds_a_circle_through_a_lazy_import_and_resolves_relative_ones(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import helper\n")
    (package / "b.py").write_text("def helper():\n    from . import c\n")
    (package / "c.py").write_text("from .a import x\nimport os\n")
    (package / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set()  # TYPE_CHECKING only
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (package / "c.py").write_text("import os\n")
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == []
