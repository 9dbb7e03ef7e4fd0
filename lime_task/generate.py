"""`limetask generate tasks`: tasks, their test, an HTTP endpoint and a runner image for a package.

Run in a package directory (one with pyproject.toml or setup.py and a Python package inside,
flat or under src/). It adds, and never overwrites without `force`:

    <package>/tasks/__init__.py
    <package>/tasks/tasks.py          an example @task that returns a short summary
    <package>/tasks/test_tasks.py     its test, with run_eager: no cluster needed
    <package>/tasks/endpoints.py      a FastAPI router that starts the tasks with a POST request
    Dockerfile.tasks                  the runner image: FROM the runner base, pip installs the package
    Dockerfile.tasks.dockerignore
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

RUNNER_BASE_IMAGE = "ghcr.io/limetask/runner:0.1.0"
PROJECT_FILES = ("pyproject.toml", "setup.py")
# Folders that hold a package's companions, never the package itself.
NOT_PACKAGES = frozenset({"tests", "test", "docs", "doc", "examples", "build", "dist", "scripts", "benchmarks"})
# Modules of a tasks package that define no tasks.
NOT_TASK_MODULES = frozenset({"__init__", "endpoints", "conftest"})

CREATED, KEPT, OVERWRITTEN, UNCHANGED = "created", "exists, kept", "overwritten", "unchanged"


class GenerateError(Exception):
    """Not a package directory, or no single package to put the tasks in."""


@dataclass(frozen=True)
class Project:
    """A package directory and the importable package the tasks go into."""

    root: Path
    package: str
    package_dir: Path
    distribution: str


@dataclass(frozen=True)
class Outcome:
    path: Path
    action: str


def distribution_name(root: Path) -> str | None:
    """The `[project] name` of root's pyproject.toml, if it has one that says it."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        return None
    return name if isinstance(name, str) and name else None


def _candidates(root: Path) -> list[Path]:
    found = []
    for base in (root, root / "src"):
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if (d.is_dir() and d.name.isidentifier() and d.name not in NOT_PACKAGES
                    and not d.name.startswith((".", "_")) and (d / "__init__.py").is_file()):
                found.append(d)
    return found


def find_project(directory: str | Path = ".", package: str | None = None) -> Project:
    """The package directory at `directory` and its single top-level package (or `package`)."""
    root = Path(directory).resolve()
    if not any((root / f).is_file() for f in PROJECT_FILES):
        raise GenerateError(
            f"{root} is not a package directory: it has no pyproject.toml or setup.py. "
            f"Run this in the folder of your solution package (where pyproject.toml is)"
        )
    dist = distribution_name(root)
    candidates = _candidates(root)
    if package is not None:
        if not package.isidentifier():
            raise GenerateError(f"--package {package!r} is not a Python package name")
        chosen = [d for d in candidates if d.name == package] or [
            d for d in (root / package, root / "src" / package) if (d / "__init__.py").is_file()]
        if not chosen:
            raise GenerateError(f"no package {package!r} in {root} (a folder {package}/ or src/{package}/ "
                                f"with an __init__.py)")
        pkg_dir = chosen[0]
    elif not candidates:
        raise GenerateError(f"no Python package in {root}: expected a folder with an __init__.py "
                            f"(or one under src/)")
    elif len(candidates) == 1:
        pkg_dir = candidates[0]
    else:
        # Several packages: the one named like the distribution, if any.
        wanted = re.sub(r"[-.]+", "_", dist).lower() if dist else None
        named = [d for d in candidates if d.name.lower() == wanted]
        if len(named) != 1:
            names = ", ".join(d.name for d in candidates)
            raise GenerateError(f"{root} has several packages ({names}): choose one with --package NAME")
        pkg_dir = named[0]
    clash = pkg_dir / "tasks.py"
    if clash.exists():
        raise GenerateError(f"{clash.relative_to(root)} exists: a tasks/ package cannot sit beside a "
                            f"tasks.py module. Move it into tasks/ first (e.g. tasks/lime.py)")
    return Project(root=root, package=pkg_dir.name, package_dir=pkg_dir,
                   distribution=dist or pkg_dir.name.replace("_", "-"))


def _template(name: str) -> str:
    return resources.files("lime_task").joinpath("templates", name).read_text(encoding="utf-8")


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.search(r"\{\{\w+\}\}", text)
    assert left is None, f"template placeholder {left.group()} has no value"
    return text


def task_modules(project: Project) -> list[str]:
    """The modules the runner image imports: tasks.py and every other module of the tasks package."""
    tasks_dir = project.package_dir / "tasks"
    names = {"tasks"} | {p.stem for p in tasks_dir.glob("*.py")}
    keep = sorted(n for n in names if n not in NOT_TASK_MODULES and not n.startswith("test_")
                  and not n.endswith("_test") and n.isidentifier())
    return [f"{project.package}.tasks.{n}" for n in keep]


def plan(project: Project) -> list[tuple[Path, str]]:
    """Every file to write, with its content."""
    values = {"package": project.package, "distribution": project.distribution,
              "imports": ",".join(task_modules(project))}
    tasks_dir = project.package_dir / "tasks"
    files = [(tasks_dir / name, f"tasks/{name}.tmpl")
             for name in ("__init__.py", "tasks.py", "test_tasks.py", "endpoints.py")]
    files += [(project.root / "Dockerfile.tasks", "Dockerfile.tasks.tmpl"),
              (project.root / "Dockerfile.tasks.dockerignore", "Dockerfile.tasks.dockerignore.tmpl")]
    return [(path, _render(_template(template), values)) for path, template in files]


def write(files: list[tuple[Path, str]], force: bool = False, dry_run: bool = False) -> list[Outcome]:
    """Write what does not exist yet; with `force`, also what differs. Never touches the rest."""
    outcomes = []
    for path, content in files:
        if path.exists():
            if force and not path.is_file():
                raise GenerateError(f"{path} exists and is not a file: move it away first")
            if not force:
                outcomes.append(Outcome(path, KEPT))
                continue
            if path.is_file() and path.read_text(encoding="utf-8", errors="replace") == content:
                outcomes.append(Outcome(path, UNCHANGED))
                continue
            action = OVERWRITTEN
        else:
            action = CREATED
        if not dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        outcomes.append(Outcome(path, action))
    return outcomes


ENTRY_POINTS = '[project.entry-points."limetask.scheduled_tasks"]'


def plan_scheduled(project: Project) -> list[tuple[Path, str]]:
    """The scheduled tasks module and its test (`limetask generate scheduled-tasks`)."""
    values = {"package": project.package}
    tasks_dir = project.package_dir / "tasks"
    files = [(tasks_dir / name, f"tasks/{name}.tmpl") for name in ("scheduled_tasks.py", "test_scheduled_tasks.py")]
    if not (tasks_dir / "__init__.py").exists():
        files.insert(0, (tasks_dir / "__init__.py", "tasks/__init__.py.tmpl"))
    return [(path, _render(_template(template), values)) for path, template in files]


def register_scheduled(project: Project, dry_run: bool = False) -> Outcome | None:
    """Declare the module as a `limetask.scheduled_tasks` entry point in pyproject.toml, so that
    `limetask schedules apply` finds it; None when there is no pyproject.toml to declare it in."""
    pyproject = project.root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    text = pyproject.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GenerateError(f"{pyproject} is not valid TOML ({exc}): fix it, then run this again") from None
    declared = data.get("project", {}).get("entry-points", {}).get("limetask.scheduled_tasks", {})
    module = f"{project.package}.tasks.scheduled_tasks"
    if module in declared.values():
        return Outcome(pyproject, UNCHANGED)
    if declared:
        raise GenerateError(f"{pyproject} declares other limetask.scheduled_tasks entry points "
                            f"({', '.join(declared.values())}): add {module} there yourself")
    if ENTRY_POINTS in text:
        raise GenerateError(f"{pyproject} has a {ENTRY_POINTS} section already: add {module} there yourself")
    addition = ("\n" if text.endswith("\n") else "\n\n") + \
        f"# `limetask schedules apply` finds register_scheduled_tasks() here.\n{ENTRY_POINTS}\n" + \
        f'{project.package} = "{module}"\n'
    if not dry_run:
        pyproject.write_text(text + addition, encoding="utf-8")
    return Outcome(pyproject, "updated (entry point)")


def next_steps_scheduled(project: Project) -> str:
    tests = (project.package_dir / "tasks" / "test_scheduled_tasks.py").relative_to(project.root)
    return "\n".join([
        "Next:",
        f"  1. run the test:     python -m pytest {tests}",
        "  2. reinstall the package (pip install -e .) so that its new entry point is seen",
        "  3. see the schedules: limetask schedules render --app my-app",
        "  4. apply them:        limetask schedules apply --app my-app --app other-app --prune",
    ])


def next_steps(project: Project) -> str:
    tests = (project.package_dir / "tasks" / "test_tasks.py").relative_to(project.root)
    name = f"{project.package}.tasks.tasks.refresh_company"
    image = f"registry.example.com/{project.distribution}-tasks:0.1.0"
    return "\n".join([
        "Next:",
        f"  1. run the test:     python -m pytest {tests}",
        f"  2. send a task:      limetask send {name} my-app '[1001, [\"name\"]]' --wait",
        "                       (the operator's runner image must hold this package: step 3)",
        f"  3. build the image:  docker build -f Dockerfile.tasks -t {image} .",
        "                       and set runner.image in the Lime Task chart's values;",
        "                       on the local cluster, `limetask dev --watch` builds, loads and runs it",
        f"  4. over HTTP:        mount {project.package}.tasks.endpoints.router in your FastAPI app,",
        "                       or run `limetask web` (see `limetask web --help`)",
    ])
