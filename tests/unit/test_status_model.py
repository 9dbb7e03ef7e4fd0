"""TaskStatus as the client reads it, and the operator's status clean-up before a write."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from limetask_operator.reconciler import without_empty_strings

from lime_task.status import TaskError, TaskStatus

UTC = dt.UTC

FULL: dict[str, Any] = {
    "apiVersion": "limetask.io/v1alpha1",
    "kind": "LimeTask",
    "metadata": {"name": "t-1234", "namespace": "solutions", "creationTimestamp": "2024-05-01T10:00:00Z",
                 "generation": 1},
    "spec": {"task": "acme_solution.tasks.lime.add", "app": "acme-crm", "args": [1, 2], "kwargs": {}},
    "status": {
        "state": "SUCCESS", "result": {"sum": 3}, "attempts": 2, "jobName": "t-1234-2",
        "startedAt": "2024-05-01T10:00:05Z", "completedAt": "2024-05-01T10:00:09Z",
        "event": {"confirmed": True},
        "history": [{"attempt": 1, "outcome": "WorkerLost"}, {"attempt": 2, "outcome": "SUCCESS"}],
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
    },
}


def test_from_resource_full() -> None:
    s = TaskStatus.from_resource(FULL)
    assert s.id == "t-1234"
    assert s.task == "acme_solution.tasks.lime.add"
    assert s.app == "acme-crm"
    assert s.status == s.state == "SUCCESS"
    assert s.result == {"sum": 3}
    assert s.error is None
    assert s.attempts == 2
    assert s.created_at == dt.datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    assert s.started_at == dt.datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    assert s.completed_at == dt.datetime(2024, 5, 1, 10, 0, 9, tzinfo=UTC)
    assert s.started_at.tzinfo is not None
    assert s.event_confirmed is True
    assert s.namespace == "solutions"
    assert s.history == ({"attempt": 1, "outcome": "WorkerLost"}, {"attempt": 2, "outcome": "SUCCESS"})
    assert s.is_completed() and s.is_successful()


def test_a_dead_lettered_event_is_not_reported_as_confirmed() -> None:
    event = {"confirmed": True, "deadLetter": {"reason": "Refused", "exchange": "limetask.dead-letter",
                                               "at": "2024-05-02T10:00:09Z"}}
    s = TaskStatus.from_resource({**FULL, "status": {**FULL["status"], "event": event}})
    assert s.event_confirmed is False  # it left the outbox, but its exchange never took it


def test_from_resource_failure() -> None:
    body = {**FULL, "status": {"state": "FAILURE", "attempts": 1, "error": {
        "type": "ValueError", "message": "no", "reason": "TaskRaised"}}}
    s = TaskStatus.from_resource(body)
    assert s.error == TaskError("ValueError", "no", "TaskRaised")
    assert str(s.error) == "ValueError: no (TaskRaised)"
    assert s.result is None
    assert s.is_completed() and not s.is_successful()
    assert s.event_confirmed is False


def test_error_with_dropped_empty_message() -> None:
    # The operator drops "" fields before writing; the client reads them back as "".
    body = {**FULL, "status": {"state": "FAILURE", "error": {"type": "WorkerLost", "reason": "WorkerLost"}}}
    assert TaskStatus.from_resource(body).error == TaskError("WorkerLost", "", "WorkerLost")


def test_from_resource_without_status_is_pending() -> None:
    body = {k: v for k, v in FULL.items() if k != "status"}
    s = TaskStatus.from_resource(body)
    assert s.status == "PENDING"
    assert s.attempts == 0
    assert s.started_at is None and s.completed_at is None
    assert s.result is None and s.error is None
    assert s.history == ()
    assert not s.is_completed()


@pytest.mark.parametrize("state, done", [("PENDING", False), ("STARTED", False), ("SUCCESS", True),
                                         ("FAILURE", True)])
def test_is_completed(state: str, done: bool) -> None:
    assert TaskStatus(id="x", task="a.b", app="app", status=state).is_completed() is done


def test_wait_on_a_completed_status_returns_at_once_without_a_client() -> None:
    s = TaskStatus.from_resource(FULL)
    assert s.wait(timeout=0) is s


def test_to_dict() -> None:
    d = TaskStatus.from_resource(FULL).to_dict()
    assert d == {
        "id": "t-1234", "task": "acme_solution.tasks.lime.add", "app": "acme-crm", "status": "SUCCESS",
        "result": {"sum": 3}, "error": None, "attempts": 2,
        "created_at": "2024-05-01T10:00:00+00:00", "started_at": "2024-05-01T10:00:05+00:00",
        "completed_at": "2024-05-01T10:00:09+00:00", "event_confirmed": True, "namespace": "solutions",
        "history": [{"attempt": 1, "outcome": "WorkerLost"}, {"attempt": 2, "outcome": "SUCCESS"}],
        "archived": False, "eta": None, "expires": None, "retries": 0, "retry_at": None,
        "queue": {"name": "default", "priority": 0, "queued": False, "reason": None, "message": None,
                  "position": None, "waiting": None, "since": None, "updated_at": None},
    }
    import json
    json.dumps(d)  # plain JSON


def test_from_dict_is_to_dict_read_back() -> None:
    """What the HTTP endpoint answers (to_dict) reads back as the same status (the results API)."""
    s = TaskStatus.from_resource(FULL)
    assert TaskStatus.from_dict(s.to_dict()) == s
    archived = TaskStatus.from_resource(FULL, archived=True)
    assert TaskStatus.from_dict(archived.to_dict()).archived is True
    failed = TaskStatus.from_dict({"id": "x", "status": "FAILURE", "error": {"type": "E", "message": "m",
                                                                          "reason": "TaskRaised"}})
    assert failed.error is not None and failed.error.reason == "TaskRaised" and failed.is_completed()


def test_to_dict_failure() -> None:
    body = {**FULL, "status": {"state": "FAILURE", "error": {"type": "T", "message": "m", "reason": "R"}}}
    d = TaskStatus.from_resource(body).to_dict()
    assert d["error"] == {"type": "T", "message": "m", "reason": "R"}
    assert d["started_at"] is None


def test_equality_ignores_the_client() -> None:
    a = TaskStatus.from_resource(FULL)
    b = TaskStatus.from_resource(FULL, client=object())  # type: ignore[arg-type]
    assert a == b


# --- without_empty_strings --------------------------------------------------------------------

def test_without_empty_strings_drops_empty_typed_fields() -> None:
    status = {
        "state": "FAILURE", "jobName": "", "startedAt": "",
        "error": {"type": "WorkerLost", "message": "", "reason": "WorkerLost"},
        "conditions": [{"type": "Succeeded", "status": "False", "reason": "WorkerLost", "message": ""}],
        "history": [{"attempt": 1, "message": "", "reason": "Succeeded"}],
        "attempts": 0, "event": {"confirmed": False, "error": ""},
    }
    assert without_empty_strings(status) == {
        "state": "FAILURE",
        "error": {"type": "WorkerLost", "reason": "WorkerLost"},
        "conditions": [{"type": "Succeeded", "status": "False", "reason": "WorkerLost"}],
        "history": [{"attempt": 1, "reason": "Succeeded"}],
        "attempts": 0, "event": {"confirmed": False},
    }


@pytest.mark.parametrize("result", ["", {"a": "", "b": ["", {"c": ""}]}, ["", ""], 0, None, False])
def test_without_empty_strings_keeps_the_result_untouched(result: Any) -> None:
    status = {"state": "SUCCESS", "result": result, "message": ""}
    cleaned = without_empty_strings(status)
    assert cleaned == {"state": "SUCCESS", "result": result}
    assert cleaned["result"] is result


def test_without_empty_strings_keeps_falsy_non_strings_and_does_not_mutate() -> None:
    status = {"attempts": 0, "confirmed": False, "history": [], "error": {"message": ""}, "x": None}
    before = {"attempts": 0, "confirmed": False, "history": [], "error": {"message": ""}, "x": None}
    assert without_empty_strings(status) == {"attempts": 0, "confirmed": False, "history": [], "error": {},
                                             "x": None}
    assert status == before


class RecordingWaiter:
    """A client that answers `wait` with a finished status and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, float | None]] = []

    def wait(self, task_id: str, app_name: str, timeout: float | None = None, on_change: Any = None) -> TaskStatus:
        self.asked.append((task_id, app_name, timeout))
        return TaskStatus(id=task_id, task="a.b", app=app_name, status="SUCCESS")


def test_a_status_waits_with_its_own_client() -> None:
    mine = RecordingWaiter()
    pending = TaskStatus.from_resource({"metadata": {"name": "t-1"}, "spec": {"app": "my-app"}}, mine)
    assert pending.wait(timeout=5).status == "SUCCESS"
    assert mine.asked == [("t-1", "my-app", 5)]


def test_a_status_without_a_client_waits_with_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A status made by hand (or from the endpoint's JSON) waits with the client that
    `configure` sets up, as `get_status` would."""
    import lime_task.client

    shared = RecordingWaiter()
    monkeypatch.setattr(lime_task.client, "_default", shared)
    pending = TaskStatus.from_dict({"id": "t-2", "task": "a.b", "app": "my-app", "status": "PENDING"})
    assert pending.wait(timeout=7).status == "SUCCESS"
    assert shared.asked == [("t-2", "my-app", 7)]
    # A finished status asks no one.
    assert TaskStatus(id="t-3", task="a.b", app="my-app", status="FAILURE").wait().status == "FAILURE"
    assert len(shared.asked) == 1


def test_a_task_without_a_queue_of_its_own_shows_the_queue_the_operator_names() -> None:
    """The installation's default queue need not be called "default" (LIMETASK_DEFAULT_QUEUE):
    while the task waits, the operator's status names it."""
    waiting = {"type": "Queued", "status": "True", "reason": "Waiting", "message": "position 1 of 1"}
    body = {"metadata": {"name": "t1", "namespace": "ns"}, "spec": {"task": "pkg.t", "app": "a"},
            "status": {"state": "PENDING", "conditions": [waiting],
                       "queue": {"name": "standard", "attempt": 1, "waiting": 1, "since": "2026-01-01T00:00:00Z"}}}
    status = TaskStatus.from_resource(body)
    assert status.queued and status.queue == "standard"
    body["spec"]["queue"] = "asap"
    assert TaskStatus.from_resource(body).queue == "asap"
    assert TaskStatus.from_resource({"metadata": {"name": "t2"}, "spec": {"task": "pkg.t", "app": "a"}}).queue == \
        "default"
