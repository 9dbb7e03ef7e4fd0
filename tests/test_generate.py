"""`limetask generate tasks` on fresh packages: what it writes, that the result works, and what it keeps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lime_task.cli.app import app

REPO = Path(__file__).resolve().parent.parent
GENERATED = ["my_solution/tasks/__init__.py", "my_solution/tasks/tasks.py", "my_solution/tasks/test_tasks.py",
             "my_solution/tasks/endpoints.py", "Dockerfile.tasks", "Dockerfile.tasks.dockerignore"]


def make_package(root: Path, name: str = "my_solution", dist: str = "my-solution") -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text('"""A solution package."""\n')
    (root / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{dist}"\nversion = "0.1.0"\ndependencies = ["limetask"]\n')
    return root


def generate(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["generate", "tasks", "--directory", str(root), *args])
    return result.exit_code, result.output


def said(out: str, action: str, name: str) -> bool:
    return re.search(rf"^{re.escape(action)}\s+{re.escape(name)}\b", out, re.MULTILINE) is not None


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (p.read_text(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def run_pytest(root: Path, target: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("LIMETASK_APP_FACTORY", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
                          cwd=root, env=env, text=True, capture_output=True, timeout=120)


def test_generates_files_whose_test_passes(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj")
    code, out = generate(root)
    assert code == 0, out
    for name in GENERATED:
        assert (root / name).is_file(), name
        assert said(out, "created", name), out
    # It says what to do next: run the test, send a task, build the image.
    assert "python -m pytest my_solution/tasks/test_tasks.py" in out
    assert "limetask send my_solution.tasks.tasks.refresh_company" in out
    assert "docker build -f Dockerfile.tasks" in out
    tasks_py = (root / "my_solution/tasks/tasks.py").read_text()
    assert "@task\ndef refresh_company(app: Any," in tasks_py
    dockerfile = (root / "Dockerfile.tasks").read_text()
    assert "FROM ${RUNNER_IMAGE}" in dockerfile and "ARG RUNNER_IMAGE=ghcr.io/limetask/runner:0.1.0" in dockerfile
    assert "RUN pip install -c /usr/local/share/limetask/requirements/constraints.txt /tmp/my-solution" in dockerfile
    assert "ENV LIMETASK_IMPORTS=my_solution.tasks.tasks\n" in dockerfile
    endpoints = (root / "my_solution/tasks/endpoints.py").read_text()
    assert "send_task(registered.name, app" in endpoints and "APIRouter" in endpoints

    result = run_pytest(root, "my_solution/tasks/test_tasks.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout, result.stdout


def test_generated_code_is_clean(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj")
    assert generate(root)[0] == 0
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated",
                           "--select", "E,F,W,I,B,UP", "--line-length", "120", "my_solution"],
                          cwd=root, text=True, capture_output=True)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_second_run_keeps_everything_and_force_rewrites(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj")
    assert generate(root)[0] == 0
    before = snapshot(root)
    code, out = generate(root)
    assert code == 0, out
    assert snapshot(root) == before  # same contents, same mtimes
    for name in GENERATED:
        assert said(out, "exists, kept", name), out
    assert "nothing changed" in out and "--force" in out

    # An edited file is the user's: kept without --force, rewritten with it.
    tasks_py = root / "my_solution/tasks/tasks.py"
    tasks_py.write_text("# mine\n")
    assert generate(root)[0] == 0
    assert tasks_py.read_text() == "# mine\n"
    code, out = generate(root, "--force")
    assert code == 0, out
    assert said(out, "overwritten", "my_solution/tasks/tasks.py"), out
    assert said(out, "unchanged", "Dockerfile.tasks"), out
    assert tasks_py.read_text() == before["my_solution/tasks/tasks.py"][0]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj")
    before = snapshot(root)
    code, out = generate(root, "--dry-run")
    assert code == 0, out
    assert said(out, "would be created", "my_solution/tasks/tasks.py"), out
    assert "nothing was written" in out
    assert snapshot(root) == before


@pytest.mark.parametrize("setup", ["empty", "package-without-project-file"])
def test_outside_a_package_directory(tmp_path: Path, setup: str) -> None:
    if setup == "package-without-project-file":
        (tmp_path / "pkg").mkdir()
        (tmp_path / "pkg" / "__init__.py").write_text("")
    code, out = generate(tmp_path)
    assert code == 2
    assert "is not a package directory" in out and "pyproject.toml" in out
    assert not (tmp_path / "Dockerfile.tasks").exists()


def test_run_in_the_current_directory_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_package(tmp_path / "proj")
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["generate", "tasks"])
    assert result.exit_code == 0, result.output
    assert (root / "my_solution/tasks/tasks.py").is_file()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["generate", "tasks"])
    assert result.exit_code == 2 and "not a package directory" in result.output


def test_package_detection(tmp_path: Path) -> None:
    # setup.py project, src layout, companions (tests/, docs/) that are not the package.
    root = tmp_path / "proj"
    (root / "src" / "acme").mkdir(parents=True)
    (root / "src" / "acme" / "__init__.py").write_text("")
    (root / "tests").mkdir()
    (root / "tests" / "__init__.py").write_text("")
    (root / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    code, out = generate(root)
    assert code == 0, out
    assert (root / "src/acme/tasks/tasks.py").is_file()
    assert "ENV LIMETASK_IMPORTS=acme.tasks.tasks" in (root / "Dockerfile.tasks").read_text()


def test_several_packages_need_package_option(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj", name="alpha", dist="something-else")
    (root / "beta").mkdir()
    (root / "beta" / "__init__.py").write_text("")
    code, out = generate(root)
    assert code == 2 and "several packages (alpha, beta)" in out and "--package" in out
    code, out = generate(root, "--package", "beta")
    assert code == 0, out
    assert (root / "beta/tasks/tasks.py").is_file() and not (root / "alpha/tasks").exists()
    code, out = generate(root, "--package", "gamma")
    assert code == 2 and "no package 'gamma'" in out


def test_package_named_like_the_distribution_wins(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj", name="my_solution", dist="My.Solution")
    (root / "helpers").mkdir()
    (root / "helpers" / "__init__.py").write_text("")
    assert generate(root)[0] == 0
    assert (root / "my_solution/tasks/tasks.py").is_file()


def test_existing_tasks_package_is_extended(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj")
    tasks_dir = root / "my_solution" / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "__init__.py").write_text("# mine\n")
    (tasks_dir / "lime.py").write_text("from lime_task import task\n")
    code, out = generate(root)
    assert code == 0, out
    assert said(out, "exists, kept", "my_solution/tasks/__init__.py"), out
    assert (tasks_dir / "__init__.py").read_text() == "# mine\n"
    assert "ENV LIMETASK_IMPORTS=my_solution.tasks.lime,my_solution.tasks.tasks\n" in (
        root / "Dockerfile.tasks").read_text()


def test_tasks_module_beside_is_refused(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj")
    (root / "my_solution" / "tasks.py").write_text("")
    code, out = generate(root)
    assert code == 2 and "tasks.py exists" in out
    assert not (root / "my_solution" / "tasks").exists()


def test_templates_ship_with_the_package() -> None:
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = {p for package, globs in setuptools["package-data"].items() if package in setuptools["packages"]
               for g in globs for p in (REPO / package.replace(".", "/")).glob(g)}
    templates = set((REPO / "lime_task" / "templates").rglob("*.tmpl"))
    assert templates and templates <= shipped


# -- limetask generate scheduled-tasks ------------------------------------------------------------

def generate_scheduled(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["generate", "scheduled-tasks", "--directory", str(root), *args])
    return result.exit_code, result.output


def test_scheduled_tasks_are_scaffolded_registered_and_tested(tmp_path: Path) -> None:
    import tomllib

    root = make_package(tmp_path / "proj")
    assert generate(root)[0] == 0
    code, out = generate_scheduled(root)
    assert code == 0, out
    assert said(out, "created", "my_solution/tasks/scheduled_tasks.py"), out
    assert said(out, "created", "my_solution/tasks/test_scheduled_tasks.py"), out
    assert said(out, "updated (entry point)", "pyproject.toml"), out
    assert "limetask schedules apply --app my-app" in out
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared == {"limetask.scheduled_tasks": {"my_solution": "my_solution.tasks.scheduled_tasks"}}
    module = (root / "my_solution/tasks/scheduled_tasks.py").read_text()
    assert "def register_scheduled_tasks() -> list[ScheduledTask]:" in module
    assert "CronTab(hour=7, minute=30, day_of_week=1)" in module
    result = run_pytest(root, "my_solution/tasks/test_scheduled_tasks.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
    # Again: nothing written twice, the entry point not declared twice.
    before = snapshot(root)
    code, out = generate_scheduled(root)
    assert code == 0 and said(out, "unchanged", "pyproject.toml")
    assert said(out, "exists, kept", "my_solution/tasks/scheduled_tasks.py")
    assert snapshot(root) == before


def test_scheduled_tasks_leave_other_entry_points_to_their_owner(tmp_path: Path) -> None:
    root = make_package(tmp_path / "proj")
    with open(root / "pyproject.toml", "a") as f:
        f.write('\n[project.entry-points."limetask.scheduled_tasks"]\nother = "other.module"\n')
    before = (root / "pyproject.toml").read_text()
    code, out = generate_scheduled(root)
    assert code == 2 and "add my_solution.tasks.scheduled_tasks there yourself" in out
    assert (root / "pyproject.toml").read_text() == before
    assert not (root / "my_solution/tasks").exists()  # refused before anything was written
    (root / "pyproject.toml").write_text("[project\nname=")
    code, out = generate_scheduled(root)
    assert code == 2 and "is not valid TOML" in out
