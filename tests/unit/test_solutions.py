"""A solution's get_task_modules() as a source of task modules: runner, client registry, web."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from lime_task import registry, solutions
from lime_task.errors import TaskModuleError, UnknownTaskError
from lime_task.resource import SUCCESS

runner = importlib.import_module("limetask_runner.main")

TASKS = '''
from lime_task import task

@task
def add(app, a, b):
    return a + b

@task(name="{pkg}.renamed")
def renamed(app):
    return "renamed"
'''


def make_solution(root: Path, hook: str, tasks: str = TASKS) -> str:
    """A solution package `<name>` with tasks/lime.py and an __init__ holding `hook`."""
    name = f"sol_{uuid.uuid4().hex[:10]}"
    (root / name / "tasks").mkdir(parents=True)
    (root / name / "__init__.py").write_text(textwrap.dedent(hook))
    (root / name / "tasks" / "__init__.py").write_text("")
    (root / name / "tasks" / "lime.py").write_text(tasks.replace("{pkg}", name))
    return name


def declare(root: Path, dist: str, group: str, value: str) -> None:
    """A fake installed distribution with one entry point (importlib.metadata reads sys.path)."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{dist} = {value}\n")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("LIMETASK_IMPORTS", raising=False)
    return tmp_path


def env(task: str, *args: object, **extra: str) -> dict[str, str]:
    return {"LIMETASK_TASK_ID": "t-1", "LIMETASK_TASK": task, "LIMETASK_APP": "acme",
            "LIMETASK_ARGS": json.dumps(list(args)), "LIMETASK_KWARGS": "{}", "LIMETASK_ATTEMPT": "1", **extra}


def test_the_runner_imports_what_get_task_modules_lists(root: Path) -> None:
    sol = make_solution(root, "def get_task_modules():\n    return ['.tasks.lime']\n")
    verdict = runner.run(env(f"{sol}.tasks.lime.add", 2, 3, LIMETASK_IMPORTS=sol))
    assert verdict.state == SUCCESS and verdict.result == 5
    # A task registered under a name of its own is found too: its module was imported.
    assert runner.run(env(f"{sol}.renamed", LIMETASK_IMPORTS=sol)).result == "renamed"


def test_absolute_names_and_a_solution_without_the_hook(root: Path) -> None:
    sol = make_solution(root, "")
    other = make_solution(root, f"def get_task_modules():\n    return ['{sol}.tasks.lime']\n")
    assert runner.run(env(f"{sol}.tasks.lime.add", 1, 1, LIMETASK_IMPORTS=other)).result == 2
    # A module without get_task_modules() is a plain task module: nothing more is imported.
    plain = make_solution(root, "")
    verdict = runner.run(env(f"{plain}.tasks.lime.add", 1, 1, LIMETASK_IMPORTS=plain))
    assert f"{plain}.tasks.lime" not in sys.modules
    assert verdict.error["reason"] == "UnknownTask" and "registered" in verdict.error["message"]


@pytest.mark.parametrize("group", ["lime_plugins", "limetask.scheduled_tasks"])
def test_a_solution_declared_as_an_entry_point(root: Path, group: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sol = make_solution(root, "def get_task_modules():\n    return ['.tasks.lime']\n"
                              "def register_scheduled_tasks():\n    return []\n")
    declare(root, sol, group, sol)
    monkeypatch.setattr(runner, "declared_task_modules", lambda: [])  # no limetask.tasks entry points
    assert runner.run(env(f"{sol}.tasks.lime.add", 4, 5)).result == 9


@pytest.mark.parametrize(("hook", "words"), [
    ("def get_task_modules():\n    return {'a': 1}\n", ["must return a list of module names", "got dict"]),
    ("def get_task_modules():\n    return ['.tasks.lime', 42]\n", ["item 1 is 42", "not a module name"]),
    ("def get_task_modules():\n    return ['../etc']\n", ["item 0", "not a module name"]),
    ("def get_task_modules():\n    return ['.tasks.missing']\n", [".tasks.missing'", "ModuleNotFoundError",
                                                                   "listed by get_task_modules() of solution"]),
    ("def get_task_modules():\n    raise RuntimeError('no config')\n", ["get_task_modules() raised RuntimeError: "
                                                                        "no config"]),
    ("get_task_modules = ['.tasks.lime']\n", ["get_task_modules must be a function", "got list"]),
    ("raise ImportError('lime_core is not installed')\n", ["failed: ImportError: lime_core is not installed"]),
])
def test_a_bad_solution_is_a_clear_refusal_naming_it(root: Path, hook: str, words: list[str]) -> None:
    sol = make_solution(root, hook)
    verdict = runner.run(env(f"{sol}.tasks.lime.add", 1, 2, LIMETASK_IMPORTS=sol))
    assert verdict.error["reason"] == "UnknownTask"
    message = verdict.error["message"]
    assert sol in message
    for word in words:
        assert word in message, message


def test_a_module_whose_own_import_fails_names_the_solution_and_the_module(root: Path) -> None:
    sol = make_solution(root, "def get_task_modules():\n    return ['.tasks.lime']\n",
                        tasks="import no_such_dependency_xyz\n")
    with pytest.raises(TaskModuleError) as caught:
        solutions.import_task_modules([solutions.Source(sol, "LIMETASK_IMPORTS")])
    text = str(caught.value)
    assert f"'{sol}.tasks.lime'" in text and f"solution '{sol}'" in text and "no_such_dependency_xyz" in text
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_the_client_registry_finds_tasks_through_a_declared_solution(root: Path) -> None:
    sol = make_solution(root, "def get_task_modules():\n    return ['.tasks.lime']\n")
    declare(root, sol, "lime_plugins", sol)
    # Named after no module: only the solution's get_task_modules() leads to it.
    found = registry.resolve_task(f"{sol}.renamed")
    assert found.fn(None) == "renamed"


def test_the_client_registry_says_what_failed_in_a_declared_solution(root: Path) -> None:
    sol = make_solution(root, "def get_task_modules():\n    return 'tasks.lime'\n")
    declare(root, sol, "lime_plugins", sol)
    with pytest.raises(UnknownTaskError) as caught:
        registry.resolve_task(f"{sol}.renamed")
    assert "declared task modules could not be imported" in str(caught.value)
    assert f"solution '{sol}'" in str(caught.value) and "got str" in str(caught.value)


def test_the_web_server_follows_a_solution_named_in_its_imports(root: Path) -> None:
    pytest.importorskip("fastapi")
    from lime_task.web import create_app

    sol = make_solution(root, "def get_task_modules():\n    return ['.tasks.lime']\n")
    create_app(client=object(), tokens={}, imports=[sol], platform_tokens={}, archive=None, kubernetes_auth=False)
    assert f"{sol}.tasks.lime" in sys.modules
    assert f"{sol}.renamed" in registry.registered_tasks()


def test_the_example_solution_lists_its_task_modules() -> None:
    import acme_solution

    assert solutions.solution_task_modules(acme_solution) == ["acme_solution.tasks.lime"]
    assert runner.run(env("acme_solution.tasks.lime.add", 2, 2, LIMETASK_IMPORTS="acme_solution")).result == 4
