"""`run_eager`: the runner's rules, in this process, returning a `TaskStatus`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from lime_task import (
    FAILURE,
    SUCCESS,
    Application,
    InvalidArgumentsError,
    InvalidTaskError,
    TaskError,
    TaskStatus,
    UnknownTaskError,
    run_eager,
    task,
)

CALLS: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []


@task(name="eager_tests.record")
def record(app: Any, *args: Any, **kwargs: Any) -> str:
    CALLS.append((app, args, kwargs))
    return "recorded"


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    CALLS.clear()
    # The module-level task is registered at import; the registry fixture may have dropped it.
    from lime_task.registry import _REGISTRY
    _REGISTRY[record.name] = record


class LimeApp:
    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.connections = object()


def test_success_status() -> None:
    before = dt.datetime.now(dt.UTC)
    status = run_eager("acme_solution.tasks.lime.add", "my-app", 2, 3)
    after = dt.datetime.now(dt.UTC)
    assert isinstance(status, TaskStatus)
    assert status.status == SUCCESS == status.state
    assert status.result == 5
    assert status.error is None
    assert status.is_completed() and status.is_successful()
    assert status.task == "acme_solution.tasks.lime.add"
    assert status.app == "my-app"
    assert status.attempts == 1
    uuid.UUID(status.id)
    assert status.created_at is not None and status.completed_at is not None
    assert before <= status.created_at <= status.completed_at <= after


def test_each_run_has_its_own_id() -> None:
    a = run_eager("acme_solution.tasks.lime.add", "app", 1, 1)
    b = run_eager("acme_solution.tasks.lime.add", "app", 1, 1)
    assert a.id != b.id


def test_failure_status() -> None:
    status = run_eager("acme_solution.tasks.lime.fail", "app", message="deal 7 is locked")
    assert status.status == FAILURE
    assert status.is_completed() and not status.is_successful()
    assert status.result is None
    assert status.error == TaskError("ValueError", "deal 7 is locked", "TaskRaised")


def test_result_rules_apply() -> None:
    huge = run_eager("acme_solution.tasks.lime.huge", "app", 10_000)
    assert huge.status == FAILURE and huge.result is None
    assert huge.error is not None and huge.error.reason == "ResultTooLarge"
    not_json = run_eager("acme_solution.tasks.lime.not_json", "app")
    assert not_json.error is not None and not_json.error.reason == "ResultNotJSON"


def test_the_application_object_is_passed_through() -> None:
    app = LimeApp("lime-crm")
    status = run_eager("eager_tests.record", app, 1, (2, 3), key={"a": (4,)})
    assert status.status == SUCCESS
    assert status.app == "lime-crm"
    assert len(CALLS) == 1
    got_app, args, kwargs = CALLS[0]
    assert got_app is app
    # Arguments as the runner would see them: through JSON.
    assert args == (1, [2, 3])
    assert kwargs == {"key": {"a": [4]}}


def test_an_app_with_only_a_name_attribute() -> None:
    app = Application("named-app")
    status = run_eager("eager_tests.record", app)
    assert status.app == "named-app"
    assert CALLS[0][0] is app


def test_a_plain_name_builds_the_default_application(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIMETASK_APP_FACTORY", raising=False)
    run_eager("eager_tests.record", "plain-name")
    assert CALLS[0][0] == Application("plain-name")


@pytest.mark.parametrize("name", ["acme_solution.tasks.lime.nope", "os.system",
                                  "acme_solution.tasks.lime.undecorated"])
def test_unknown_tasks_raise(name: str) -> None:
    with pytest.raises(UnknownTaskError):
        run_eager(name, "app", "true")


def test_invalid_task_name_raises() -> None:
    with pytest.raises(InvalidTaskError):
        run_eager("no_dot", "app")


@pytest.mark.parametrize("app", ["-bad-", "", object(), LimeApp("has space")])
def test_bad_application_raises_before_running(app: object) -> None:
    with pytest.raises(InvalidTaskError):
        run_eager("eager_tests.record", app)
    assert CALLS == []


@pytest.mark.parametrize("args, kwargs", [
    (({1, 2},), {}),
    ((), {"when": dt.datetime(2024, 1, 1)}),
    ((float("nan"),), {}),
    ((), {"d": {1: "x"}}),
    (("x" * 40_000,), {}),
])
def test_bad_arguments_raise_before_running(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentsError):
        run_eager("eager_tests.record", "app", *args, **kwargs)
    assert CALLS == []
