"""`@task` registers functions; only registered functions ever resolve."""

from __future__ import annotations

import importlib
import textwrap
import uuid
from pathlib import Path

import pytest

from lime_task import Task, TaskOptions, registered_tasks, task
from lime_task.errors import InvalidTaskError, UnknownTaskError
from lime_task.registry import resolve_task
from lime_task.resource import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_CEILING

TASKS = """
from lime_task import task

@task
def plain(app, x):
    return [app, x]

@task(acks_late=True, max_attempts=5, timeout=60)
def configured(app):
    return "configured"

@task()
def empty_parens(app):
    return "empty"

@task(name="custom.registered_name")
def renamed(app):
    return "renamed"

class Holder:
    @staticmethod
    @task
    def method(app):
        return "method"

def undecorated(app):
    return "not a task"

CONSTANT = 42
"""


def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str],
                 prefix: str = "pkg") -> str:
    """A fresh package with a unique name on sys.path; returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("PKG", name))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return name


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return make_package(tmp_path, monkeypatch, {"tasks.py": TASKS})


# --- registration -----------------------------------------------------------------------------

def test_decorators_register_under_module_and_qualname(pkg: str) -> None:
    mod = importlib.import_module(f"{pkg}.tasks")
    names = set(registered_tasks())
    assert f"{pkg}.tasks.plain" in names
    assert f"{pkg}.tasks.configured" in names
    assert f"{pkg}.tasks.empty_parens" in names
    assert f"{pkg}.tasks.Holder.method" in names
    assert "custom.registered_name" in names
    assert f"{pkg}.tasks.renamed" not in names
    assert f"{pkg}.tasks.undecorated" not in names
    assert isinstance(mod.plain, Task)
    assert mod.plain.name == f"{pkg}.tasks.plain"
    assert registered_tasks()[f"{pkg}.tasks.plain"] is mod.plain


def test_default_and_explicit_options(pkg: str) -> None:
    mod = importlib.import_module(f"{pkg}.tasks")
    assert mod.plain.options == TaskOptions(acks_late=False, max_attempts=DEFAULT_MAX_ATTEMPTS, timeout=None)
    assert mod.empty_parens.options == TaskOptions()
    assert mod.configured.options == TaskOptions(acks_late=True, max_attempts=5, timeout=60)


def test_task_object_calls_the_function_and_keeps_metadata(pkg: str) -> None:
    mod = importlib.import_module(f"{pkg}.tasks")
    assert mod.plain("app", 3) == ["app", 3]
    assert mod.plain.__name__ == "plain"
    assert mod.plain.fn.__name__ == "plain"
    assert "plain" in repr(mod.plain)


def test_registered_tasks_is_a_copy(pkg: str) -> None:
    importlib.import_module(f"{pkg}.tasks")
    copy = registered_tasks()
    copy.clear()
    assert f"{pkg}.tasks.plain" in registered_tasks()


def test_a_local_function_cannot_be_registered_without_a_name() -> None:
    # Its qualname contains '<locals>', which no runner could import by name.
    with pytest.raises(InvalidTaskError, match="<locals>"):
        @task
        def local(app: object) -> None: ...


def test_a_local_function_with_an_explicit_name_registers() -> None:
    @task(name="explicit.local_task")
    def local(app: object) -> str:
        return "ok"

    assert resolve_task("explicit.local_task") is local
    assert local.name == "explicit.local_task"


@pytest.mark.parametrize("options, word", [
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": MAX_ATTEMPTS_CEILING + 1}, "max_attempts"),
    ({"max_attempts": 11}, "max_attempts"),
    ({"max_attempts": True}, "max_attempts"),
    ({"max_attempts": 2.0}, "max_attempts"),
    ({"max_attempts": "3"}, "max_attempts"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": -5}, "timeout"),
    ({"timeout": 1.5}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"acks_late": "yes"}, "acks_late"),
    ({"acks_late": 1}, "acks_late"),
])
def test_bad_options_are_rejected_at_decoration(options: dict[str, object], word: str) -> None:
    with pytest.raises(InvalidTaskError, match=word):
        task(name="bad.options_task", **options)  # type: ignore[call-overload]
    assert "bad.options_task" not in registered_tasks()


@pytest.mark.parametrize("max_attempts", [1, MAX_ATTEMPTS_CEILING])
def test_max_attempts_bounds_are_inclusive(max_attempts: int) -> None:
    assert TaskOptions(max_attempts=max_attempts).max_attempts == max_attempts


def test_timeout_of_one_second_is_accepted() -> None:
    assert TaskOptions(timeout=1).timeout == 1


def test_invalid_explicit_name_is_rejected() -> None:
    with pytest.raises(InvalidTaskError):
        @task(name="no_dot")
        def f(app: object) -> None: ...


def test_decorating_a_non_callable_is_rejected() -> None:
    with pytest.raises(InvalidTaskError, match="needs a function"):
        task(name="x.y")(42)  # type: ignore[arg-type]


# --- resolution -------------------------------------------------------------------------------

def test_resolve_imports_the_module_and_finds_the_task(pkg: str) -> None:
    found = resolve_task(f"{pkg}.tasks.plain")
    assert found.name == f"{pkg}.tasks.plain"
    assert found("A", 1) == ["A", 1]


def test_resolve_a_method_task(pkg: str) -> None:
    assert resolve_task(f"{pkg}.tasks.Holder.method").fn(None) == "method"


def test_resolve_example_task() -> None:
    found = resolve_task("acme_solution.tasks.lime.add")
    assert found.fn(None, 2, 3) == 5


def test_resolve_without_imports_needs_a_registered_name(pkg: str) -> None:
    with pytest.raises(UnknownTaskError, match="no task of that name is registered"):
        resolve_task(f"{pkg}.tasks.plain", import_modules=False)
    importlib.import_module(f"{pkg}.tasks")
    assert resolve_task(f"{pkg}.tasks.plain", import_modules=False).name == f"{pkg}.tasks.plain"


@pytest.mark.parametrize("name", ["os.system", "subprocess.run", "builtins.eval", "os.path.join"])
def test_resolving_a_standard_library_function_is_refused(name: str) -> None:
    with pytest.raises(UnknownTaskError) as info:
        resolve_task(name)
    message = str(info.value)
    assert repr(name) in message
    assert "not a task" in message
    assert "@task" in message


def test_resolving_an_undecorated_function_is_refused(pkg: str) -> None:
    with pytest.raises(UnknownTaskError, match=r"is not a task.*found function"):
        resolve_task(f"{pkg}.tasks.undecorated")


def test_resolving_the_example_undecorated_function_is_refused() -> None:
    with pytest.raises(UnknownTaskError, match="is not a task"):
        resolve_task("acme_solution.tasks.lime.undecorated")


def test_resolving_a_constant_or_class_is_refused(pkg: str) -> None:
    with pytest.raises(UnknownTaskError, match="found int"):
        resolve_task(f"{pkg}.tasks.CONSTANT")
    with pytest.raises(UnknownTaskError, match="found type"):
        resolve_task(f"{pkg}.tasks.Holder")


def test_resolving_a_module_is_refused(pkg: str) -> None:
    importlib.import_module(f"{pkg}.tasks")
    with pytest.raises(UnknownTaskError, match=r"is not a task.*found module"):
        resolve_task(f"{pkg}.tasks")
    with pytest.raises(UnknownTaskError, match=r"is not a task.*found module"):
        resolve_task("os.path")


def test_resolving_a_missing_module(tmp_path: Path) -> None:
    name = f"no_such_pkg_{uuid.uuid4().hex[:8]}.tasks.fn"
    with pytest.raises(UnknownTaskError) as info:
        resolve_task(name)
    assert "no module of that name can be imported" in str(info.value)
    assert repr(name) in str(info.value)


def test_resolving_a_missing_attribute(pkg: str) -> None:
    with pytest.raises(UnknownTaskError) as info:
        resolve_task(f"{pkg}.tasks.nope")
    assert f"'{pkg}.tasks' has no task of that name" in str(info.value)


def test_resolving_a_missing_submodule(pkg: str) -> None:
    with pytest.raises(UnknownTaskError, match=f"'{pkg}' has no task of that name"):
        resolve_task(f"{pkg}.missing_module.fn")


def test_a_module_with_a_missing_dependency_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dep = f"absent_dep_{uuid.uuid4().hex[:8]}"
    name = make_package(tmp_path, monkeypatch, {"tasks.py": f"import {dep}\n"})
    with pytest.raises(UnknownTaskError) as info:
        resolve_task(f"{name}.tasks.fn")
    assert f"importing '{name}.tasks' failed" in str(info.value)
    assert dep in str(info.value)


def test_a_module_that_raises_on_import_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = make_package(tmp_path, monkeypatch, {"tasks.py": "raise RuntimeError('boom at import')\n"})
    with pytest.raises(UnknownTaskError) as info:
        resolve_task(f"{name}.tasks.fn")
    assert "RuntimeError: boom at import" in str(info.value)


def test_a_missing_dependency_whose_name_prefixes_the_package_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dep = f"dep_{uuid.uuid4().hex[:8]}"
    # The package name starts with the missing dependency's name, as 'lime_crm_tasks' with 'lime_crm'.
    name = make_package(tmp_path, monkeypatch, {"tasks.py": f"import {dep}\n"}, prefix=f"{dep}_tasks")
    with pytest.raises(UnknownTaskError) as info:
        resolve_task(f"{name}.tasks.fn")
    assert "failed" in str(info.value)
    assert dep in str(info.value)


@pytest.mark.parametrize("name", ["nodot", "os.*", "a.#", ""])
def test_resolving_an_invalid_name_is_refused_before_any_import(name: str) -> None:
    with pytest.raises(InvalidTaskError):
        resolve_task(name)


def test_unknown_task_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        resolve_task("os.system")
