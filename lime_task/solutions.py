"""Where task modules come from: the places a runner (and a client) learns which modules to import.

Three sources, as Lime CRM's own task handler reads them:
- `LIMETASK_IMPORTS` (comma-separated module names): when set, these and nothing else;
- otherwise the modules installed packages declare as `limetask.tasks` entry points;
- and a solution's `get_task_modules()`: a module that installed packages declare as a solution
  (entry points `lime_plugins`, Lime CRM's own, or `limetask.scheduled_tasks`, the module with
  `register_scheduled_tasks()`), or any module named above, that has a function
  `get_task_modules()` returning module names gets those imported too. A name that starts with
  a dot counts from the solution's package (`.tasks.lime`), as in `importlib.import_module`.

A module is imported only because one of these sources names it: a task name alone never
imports anything (see registry.py). Whatever goes wrong is a `TaskModuleError` that names the
solution and the module.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType

from .errors import TaskModuleError

IMPORTS_ENV = "LIMETASK_IMPORTS"
TASKS_GROUP = "limetask.tasks"
# Entry point groups whose modules are solutions (their get_task_modules() is read). lime_plugins
# is the group Lime CRM solutions declare themselves in, so such a package needs no new entry.
SOLUTION_GROUPS = ("lime_plugins", "limetask.scheduled_tasks")
HOOK = "get_task_modules"
# A module name get_task_modules() may give: dotted, optionally relative (leading dots).
MODULE_NAME_RE = re.compile(r"\.*[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Source:
    """A module to import and what named it (for messages)."""

    module: str
    origin: str


def imports_from_env(env: Mapping[str, str]) -> list[str]:
    return [m.strip() for m in env.get(IMPORTS_ENV, "").split(",") if m.strip()]


def declared(group: str) -> list[Source]:
    """The modules of an entry point group, by module name (an entry's `:attr` is ignored)."""
    from importlib.metadata import entry_points

    found: dict[str, Source] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: (e.value, e.name)):
        module = ep.value.partition(":")[0].strip()
        dist = getattr(getattr(ep, "dist", None), "name", None)
        found.setdefault(module, Source(module, f"entry point {group} {ep.name!r}"
                                                + (f" of {dist}" if dist else "")))
    return list(found.values())


def sources(env: Mapping[str, str], tasks: Iterable[str] | None = None) -> tuple[list[Source], list[Source]]:
    """(task modules, solutions) to import. `tasks`: the `limetask.tasks` modules when given
    (default: read the entry points). With LIMETASK_IMPORTS set, its modules are the only ones,
    each also read as a solution."""
    explicit = imports_from_env(env)
    if explicit:
        return [Source(m, IMPORTS_ENV) for m in explicit], []
    roots = ([Source(m, f"entry point {TASKS_GROUP}") for m in tasks] if tasks is not None
             else declared(TASKS_GROUP))
    solutions: dict[str, Source] = {}
    for group in SOLUTION_GROUPS:
        for s in declared(group):
            solutions.setdefault(s.module, s)
    return roots, list(solutions.values())


def _import(name: str, why: str, package: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(name, package)
    except SystemExit as exc:
        raise TaskModuleError(f"importing {name!r} ({why}) called sys.exit({exc.code!r})") from exc
    except Exception as exc:  # noqa: BLE001 - a solution's own code: one line that says where
        raise TaskModuleError(f"importing {name!r} ({why}) failed: {type(exc).__name__}: {exc}") from exc


def solution_task_modules(solution: ModuleType, origin: str = "") -> list[str]:
    """The modules a solution's get_task_modules() names, as absolute names ([] without one)."""
    hook = getattr(solution, HOOK, None)
    if hook is None:
        return []
    what = f"solution {solution.__name__!r}" + (f" ({origin})" if origin else "")
    if not callable(hook):
        raise TaskModuleError(f"{what}: {HOOK} must be a function returning a list of module names, "
                              f"got {type(hook).__name__}")
    try:
        names = hook()
    except SystemExit as exc:
        raise TaskModuleError(f"{what}: {HOOK}() called sys.exit({exc.code!r})") from exc
    except Exception as exc:  # noqa: BLE001
        raise TaskModuleError(f"{what}: {HOOK}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(names, (list, tuple)):
        raise TaskModuleError(f"{what}: {HOOK}() must return a list of module names, got "
                              f"{type(names).__name__} {names!r:.80}")
    package = solution.__name__ if hasattr(solution, "__path__") else solution.__name__.rpartition(".")[0]
    out: list[str] = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or not MODULE_NAME_RE.fullmatch(name.strip()):
            raise TaskModuleError(f"{what}: {HOOK}() item {i} is {name!r:.80}, not a module name (a dotted name "
                                  f"such as 'acme_solution.tasks.lime', or '.tasks.lime' within the solution)")
        name = name.strip()
        if name.startswith("."):
            try:
                name = importlib.util.resolve_name(name, package)
            except (ImportError, ValueError) as exc:
                raise TaskModuleError(f"{what}: {HOOK}() item {i} {name!r}: {exc}") from exc
        out.append(name)
    return out


def import_task_modules(roots: Iterable[Source], solutions: Iterable[Source] = ()) -> list[str]:
    """Import the task modules and the solutions' own (each a get_task_modules() away), in
    order; the names of the task modules imported. Raises TaskModuleError at the first failure."""
    done: dict[str, None] = {}
    for source in roots:
        module = _import(source.module, source.origin)
        done.setdefault(source.module)
        for name in solution_task_modules(module, source.origin):
            _import(name, f"listed by {HOOK}() of solution {source.module!r}")
            done.setdefault(name)
    for source in solutions:
        module = _import(source.module, f"solution, {source.origin}")
        for name in solution_task_modules(module, source.origin):
            _import(name, f"listed by {HOOK}() of solution {source.module!r}")
            done.setdefault(name)
    return list(done)
