"""The packages' layout, read from their source with `ast` (nothing is imported): no import
cycles, no module taking another's private names, every relative import resolvable, and the
client library never importing its server or its command line.

Every import counts, wherever it is written (inside functions and `if TYPE_CHECKING:` too): an
import deferred into a function still ties the two modules together. A package joins by adding
itself to PACKAGES.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.test_operator_layout import cycles as strongly_connected

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Package:
    name: str
    root: Path
    # Module → the only modules that may import it.
    only_imported_by: dict[str, frozenset[str]] = field(default_factory=dict)
    # Modules (and the modules under them) that the rest of the package must not import.
    kept_apart: tuple[str, ...] = ()


PACKAGES = [
    Package(
        "lime_task", REPO / "lime_task",
        # create_app is the wiring: the entry points import it, nothing under it does.
        only_imported_by={"lime_task.server.app": frozenset({"lime_task.cli.web", "lime_task.web"})},
        # What a solution imports never pulls in the server or the command line.
        kept_apart=("lime_task.server", "lime_task.cli"),
    ),
    Package("limetask_runner", REPO / "runner" / "limetask_runner"),
    # Its import graph and the README's tree of it have tests of their own too (test_operator_layout.py).
    Package("limetask_operator", REPO / "operator" / "limetask_operator"),
]


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    names: tuple[str, ...]  # the names taken with `from ... import`
    line: int


def modules_of(package: str, root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def edges_of(package: str, root: Path) -> tuple[dict[str, Path], list[Edge], list[str]]:
    """The package's modules, every import between them, and the imports that name no module
    of the package (unresolvable)."""
    modules = modules_of(package, root)
    edges: list[Edge] = []
    unresolved: list[str] = []
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        target = alias.name
                        if target not in modules:
                            unresolved.append(f"{name}:{node.lineno} import {target}")
                        else:
                            edges.append(Edge(name, target, (), node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                    if not (target == package or target.startswith(package + ".")):
                        continue
                if target not in modules:
                    unresolved.append(f"{name}:{node.lineno} from {target}")
                    continue
                # `from pkg import module` is an import of that module; other names, of the package.
                taken = [a.name for a in node.names if f"{target}.{a.name}" not in modules]
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:
                        edges.append(Edge(name, f"{target}.{alias.name}", (), node.lineno))
                if taken:
                    edges.append(Edge(name, target, tuple(taken), node.lineno))
    return modules, [e for e in edges if e.importer != e.imported], unresolved


def cycles(modules: dict[str, Path], edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (the operator's
    layout test finds them, in the same graph shape)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        graph[e.importer].add(e.imported)
    return strongly_connected(graph)


def private_imports(edges: list[Edge]) -> list[str]:
    return [f"{e.importer}:{e.line} takes {name} from {e.imported}" for e in edges for name in e.names
            if name.startswith("_") and not name.startswith("__")]


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def problems(package: Package) -> list[str]:
    modules, edges, unresolved = edges_of(package.name, package.root)
    found = [f"cycle: {' <-> '.join(c)}" for c in cycles(modules, edges)]
    found += [f"private name: {p}" for p in private_imports(edges)]
    found += [f"unresolved: {u}" for u in unresolved]
    for module, allowed in package.only_imported_by.items():
        found += [f"{e.importer}:{e.line} imports {module} (only {sorted(allowed)} may)" for e in edges
                  if e.imported == module and e.importer not in allowed]
    for part in package.kept_apart:
        found += [f"{e.importer}:{e.line} imports {e.imported}, kept apart from the rest of {package.name}"
                  for e in edges if under(e.imported, part) and not under(e.importer, part)
                  and not any(e.importer in allowed for allowed in package.only_imported_by.values())
                  and not any(under(e.importer, other) for other in package.kept_apart)]
    return found


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_layout(package: Package) -> None:
    assert problems(package) == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """Each check finds its fault in a small package made to have it."""
    root = tmp_path / "pkg"
    (root / "server").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from .b import thing\n")
    (root / "b.py").write_text("def f():\n    from . import a\n\nthing = 1\n")
    (root / "c.py").write_text("from .b import _hidden\nfrom . import missing\n")
    (root / "server" / "__init__.py").write_text("")
    (root / "server" / "app.py").write_text("")
    (root / "server" / "routes.py").write_text("from .app import x\n")
    (root / "d.py").write_text("import pkg.server.routes\n")
    found = problems(Package("pkg", root, only_imported_by={"pkg.server.app": frozenset()},
                             kept_apart=("pkg.server",)))
    assert "cycle: pkg.a <-> pkg.b" in found
    assert "private name: pkg.c:1 takes _hidden from pkg.b" in found
    assert "unresolved: pkg.c:2 from pkg.missing" not in found  # a name of the package, not a module
    assert "pkg.server.routes:1 imports pkg.server.app (only [] may)" in found
    assert "pkg.d:1 imports pkg.server.routes, kept apart from the rest of pkg" in found
    (root / "e.py").write_text("from .nowhere import x\n")
    assert "unresolved: pkg.e:1 from pkg.nowhere" in problems(Package("pkg", root))


def test_every_package_ships() -> None:
    """setuptools lists the packages it ships by name: one not listed is left out of the wheel
    (and the images), and works only from a checkout."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for package in PACKAGES:
        on_disk = {name for name, path in modules_of(package.name, package.root).items() if path.name == "__init__.py"}
        assert on_disk - listed == set()


def test_what_a_solution_imports() -> None:
    """`import lime_task` gives every name of its __all__, and loads neither the server, the
    command line, nor their libraries (fastapi, typer)."""
    import subprocess
    import sys

    script = ("import sys, lime_task\n"
              "missing = [n for n in lime_task.__all__ if not hasattr(lime_task, n)]\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'typer', 'uvicorn')\n"
              "                or m.split('.')[:2] in (['lime_task', 'server'], ['lime_task', 'cli']))\n"
              "print(missing, loaded)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[] []"
    import lime_task

    assert {"task", "send_task", "get_status", "cancel_task", "list_tasks", "run_eager", "configure", "TaskClient",
            "TaskStatus", "CronTab", "ScheduledTask", "TaskSession", "LimeTaskError"} <= set(lime_task.__all__)
