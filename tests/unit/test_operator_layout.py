"""The operator's modules form no circle of imports, and none takes another's private names.

The graph is read from the source with `ast` (every import, those inside functions too: an
import deferred to a function is still a dependency), so a circle shows here before it shows
as an ImportError at start-up, or hides behind an import moved into a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import limetask_operator

ROOT = Path(limetask_operator.__file__).parent
PACKAGE = "limetask_operator"
BENCH = Path(__file__).resolve().parents[2] / "bench"


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}


def is_package(name: str, known: dict[str, Path]) -> bool:
    return known[name].name == "__init__.py"


def imports_of(name: str, known: dict[str, Path], package: str = PACKAGE) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of a project module."""
    tree = ast.parse(known[name].read_text(), str(known[name]))
    here = name if is_package(name, known) else name.rpartition(".")[0]
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != package:
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{target}.{n}" in known]
            found += [(f"{target}.{n}", [], node.lineno) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest or not submodules:
                found.append((target, rest, node.lineno))
    return found


def graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the project modules it makes Python import (a package's __init__ included)."""
    known = modules(root, package)
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name in known:
        for target, _, _ in imports_of(name, known, package):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ first
                ancestor = ".".join(parts[:i])
                if ancestor in known and not name.startswith(ancestor + ".") and ancestor != name:
                    edges[name].add(ancestor)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges[v]:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports_it_must() -> None:
    edges = graph()
    assert "limetask_operator.derivation" in edges["limetask_operator.reconciler"]
    assert "limetask_operator.events" in edges["limetask_operator.reconciler"]  # imported inside a function
    assert "limetask_operator.admission" in edges["limetask_operator.derivation.queue"]  # a package's __init__
    assert "limetask_operator.admission.waiting" in edges["limetask_operator.derivation.queue"]


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_operators_modules_import_no_circle() -> None:
    assert cycles(graph()) == []


def test_no_module_takes_another_modules_private_names() -> None:
    known = modules()
    taken = [f"{known[name].relative_to(ROOT)}:{line}: from {target} import {n}"
             for name in known for target, names, line in imports_of(name, known)
             for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
    assert taken == []


def test_the_benchmarks_scenarios_never_import_the_runner_back() -> None:
    """`python -m bench` imports its scenarios; they take what they share from bench.measure."""
    edges = graph(BENCH, "bench")
    assert "bench.dashboard" in edges["bench.__main__"]
    assert cycles(edges) == []


def test_the_readmes_tree_of_the_operator_names_every_module() -> None:
    """README's tree ("Where the operator's code lives") is where a newcomer looks first: a module
    it does not name would be found only by reading the code."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    tree = readme.split("### Where the operator's code lives", 1)[1].split("```", 2)[1]

    def named(path: Path) -> bool:
        if path.name == "__init__.py":
            return path.parent == ROOT or f"{path.parent.name}/" in tree
        return path.name in tree

    assert [str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob("*.py")) if not named(p)] == []
