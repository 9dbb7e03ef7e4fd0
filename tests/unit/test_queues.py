"""Queues on the client's side: `@task(qos=, priority=)`, `send_task(..., qos=, priority=)`, the
spec they make, and a waiting task's place as `TaskStatus` reads it. (The operator's side:
tests of limetask_operator.)"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import lime_task.client
from lime_task import InvalidTaskError, TaskClient, TaskOptions, list_tasks, send_task, task
from lime_task.errors import ClusterError
from lime_task.status import TaskStatus
from lime_task.validation import check_priority, check_queue
from tests.unit.fake_api import FakeCustomObjects, api_error, fake_client, live_task

UTC = dt.timezone.utc
ADD = "acme_solution.tasks.lime.add"


@task(name="tests.queues.report", qos="background", priority=-10)
def report(app: Any, n: int) -> int:
    return n


@pytest.fixture
def api() -> FakeCustomObjects:
    return FakeCustomObjects()


@pytest.fixture
def client(tmp_path: Path, api: FakeCustomObjects) -> TaskClient:
    return fake_client(tmp_path, api)


@pytest.fixture
def default_client(client: TaskClient, monkeypatch: pytest.MonkeyPatch) -> TaskClient:
    """`send_task` and the other module functions use this client."""
    monkeypatch.setattr(lime_task.client, "_default", client)
    return client


# -- options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["asap", "background", "default", "q", "a-1", "0", "x" * 63])
def test_queue_names_are_dns_labels(name: str) -> None:
    assert check_queue(name) == name
    assert TaskOptions(qos=name).qos == name


@pytest.mark.parametrize("name, words", [
    ("Fast Lane", "qos must be a queue name: lower-case letters, digits and '-'.* got 'Fast Lane'"),
    ("ASAP", "got 'ASAP'"),
    ("-asap", "starting and ending with a letter or digit"),
    ("asap-", "got 'asap-'"),
    ("a.b", "got 'a.b'"),
    ("", "got ''"),
    ("asap\n", "got 'asap\\\\n'"),
    ("x" * 64, "at most 63"),
    ("x" * 500, "'x{70}'\\.\\.\\.$"),  # a hostile value is cut, not echoed whole
])
def test_bad_queue_names_are_refused_naming_the_rule(name: str, words: str) -> None:
    with pytest.raises(InvalidTaskError, match=words):
        check_queue(name)


@pytest.mark.parametrize("value, kind", [(5, "int"), (["asap"], "list"), (True, "bool"), (b"asap", "bytes")])
def test_a_queue_that_is_not_a_string_is_refused_as_countdown_is(value: object, kind: str) -> None:
    with pytest.raises(InvalidTaskError, match=f"qos must be a queue name \\(a string\\) or None, not {kind}$"):
        check_queue(value)


def test_no_queue_is_the_default_queue() -> None:
    assert check_queue(None) is None
    assert TaskOptions().qos is None and TaskOptions().priority == 0


@pytest.mark.parametrize("priority", [-1000, -1, 0, 1, 1000])
def test_priorities_within_bounds(priority: int) -> None:
    assert check_priority(priority) == priority
    assert TaskOptions(priority=priority).priority == priority


@pytest.mark.parametrize("priority, words", [
    (1001, "from -1000 to 1000 \\(higher starts first\\), got 1001"),
    (-1001, "got -1001"),
    (10**20, "got 100000000000000000000"),
    (True, "not bool"),
    (1.0, "not float"),
    ("5", "not str"),
    (None, "not NoneType"),
])
def test_bad_priorities_are_refused(priority: object, words: str) -> None:
    with pytest.raises(InvalidTaskError, match=f"priority must be a whole number .*{words}"):
        check_priority(priority)


def test_task_options_carry_the_queue_and_priority() -> None:
    assert report.options.qos == "background" and report.options.priority == -10
    assert report(None, 3) == 3


@pytest.mark.parametrize("options, words", [
    ({"qos": "Fast Lane"}, "qos must be a queue name"),
    ({"qos": 7}, "not int"),
    ({"priority": 2000}, "got 2000"),
    ({"priority": False}, "not bool"),
])
def test_bad_queue_options_are_refused_at_decoration(options: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidTaskError, match=words):
        @task(name="tests.queues.bad", **options)
        def bad(app: Any) -> None: ...
    with pytest.raises(InvalidTaskError, match=words):
        TaskOptions(**options)


# -- the spec ----------------------------------------------------------------------------------

def test_without_a_queue_the_spec_says_nothing(client: TaskClient, api: FakeCustomObjects) -> None:
    status = client.send(ADD, "my-app", [1, 2])
    spec, labels = api.created[0]["spec"], api.created[0]["metadata"]["labels"]
    assert "queue" not in spec and "priority" not in spec
    assert labels == {"limetask.io/app": "my-app"}
    assert (status.queue, status.priority, status.queued) == ("default", 0, False)


def test_the_tasks_own_queue_and_priority_go_in_the_spec(client: TaskClient, api: FakeCustomObjects) -> None:
    status = client.send("tests.queues.report", "my-app", [1])
    assert api.created[0]["spec"]["queue"] == "background" and api.created[0]["spec"]["priority"] == -10
    assert api.created[0]["metadata"]["labels"]["limetask.io/queue"] == "background"
    assert (status.queue, status.priority) == ("background", -10)


def test_explicit_values_override_the_tasks_own(client: TaskClient, api: FakeCustomObjects) -> None:
    client.send("tests.queues.report", "my-app", [1], qos="asap", priority=500)
    client.send("tests.queues.report", "my-app", [1], priority=0)  # 0 overrides -10, and is left out
    client.send(ADD, "my-app", [1, 2], qos="default")  # named, so written
    first, second, third = (c["spec"] for c in api.created)
    assert (first["queue"], first["priority"]) == ("asap", 500)
    assert second["queue"] == "background" and "priority" not in second
    assert third["queue"] == "default" and "priority" not in third


def test_send_task_takes_qos_and_priority_as_options_not_arguments(default_client: TaskClient,
                                                                  api: FakeCustomObjects) -> None:
    status = send_task(ADD, "my-app", 1, 2, qos="asap", priority=7)
    spec = api.created[0]["spec"]
    assert (spec["queue"], spec["priority"]) == ("asap", 7)
    assert spec["args"] == [1, 2] and spec["kwargs"] == {}
    assert (status.queue, status.priority) == ("asap", 7)
    send_task("acme_solution.tasks.lime.get_lime_company", "my-app", 5, props=["name"])
    assert api.created[1]["spec"]["kwargs"] == {"props": ["name"]} and "queue" not in api.created[1]["spec"]


@pytest.mark.parametrize("kwargs, words", [
    ({"qos": "Fast Lane"}, "qos must be a queue name"),
    ({"qos": 3}, "qos must be a queue name \\(a string\\) or None, not int"),
    ({"priority": 1001}, "priority must be a whole number from -1000 to 1000"),
    ({"priority": "high"}, "not str"),
    ({"priority": True}, "not bool"),
])
def test_bad_values_create_nothing(default_client: TaskClient, api: FakeCustomObjects, kwargs: dict[str, Any],
                                   words: str) -> None:
    with pytest.raises(InvalidTaskError, match=words):
        send_task(ADD, "my-app", 1, 2, **kwargs)
    with pytest.raises(InvalidTaskError, match=words):
        default_client.send(ADD, "my-app", [1, 2], check=False, **kwargs)
    assert api.created == []


# -- a waiting task's place --------------------------------------------------------------------

WAITING = {"name": "asap", "position": 2, "waiting": 5, "since": "2026-05-01T10:00:01.5Z",
           "updatedAt": "2026-05-01T10:00:30Z"}


def test_a_waiting_task_has_its_place() -> None:
    s = TaskStatus.from_resource(live_task("t-1", queue="asap", priority=3, waiting=WAITING))
    assert s.status == "PENDING" and s.queued
    assert (s.queue, s.priority, s.queue_position, s.queue_waiting) == ("asap", 3, 2, 5)
    assert s.queued_since == dt.datetime(2026, 5, 1, 10, 0, 1, 500000, tzinfo=UTC)
    assert s.queue_updated_at == dt.datetime(2026, 5, 1, 10, 0, 30, tzinfo=UTC)
    assert (s.queue_reason, s.queue_message) == ("Waiting", None)


def test_why_a_task_waits_is_reachable() -> None:
    body = live_task("t-1", queue="nightly", waiting={"name": "nightly", "since": "2026-05-01T10:00:00Z"},
                     reason="QueueNotFound", message="no LimeTaskQueue named nightly: create it")
    s = TaskStatus.from_resource(body)
    assert s.queued and s.queue_reason == "QueueNotFound"
    assert s.queue_message == "no LimeTaskQueue named nightly: create it"
    assert s.queue_position is None and s.queue_waiting is None


@pytest.mark.parametrize("body", [
    live_task("t-1", queue="asap", waiting=WAITING, admitted=True),  # got its slot; the last count left behind
    live_task("t-1", queue="asap", state="STARTED", waiting=WAITING),  # a stale condition beside STARTED
    live_task("t-1", queue="asap"),  # nothing written yet
], ids=["admitted", "started", "new"])
def test_a_task_that_does_not_wait_has_no_place(body: dict[str, Any]) -> None:
    s = TaskStatus.from_resource(body)
    assert not s.queued and s.queue == "asap"
    assert (s.queue_reason, s.queue_message, s.queue_position, s.queue_waiting, s.queued_since,
            s.queue_updated_at) == (None, None, None, None, None, None)


def test_a_task_that_names_no_queue_is_in_the_default_queue() -> None:
    s = TaskStatus.from_resource(live_task("t-1"))
    assert (s.queue, s.priority, s.queued) == ("default", 0, False)


def test_garbage_in_the_queue_block_is_no_place() -> None:
    s = TaskStatus.from_resource(live_task("t-1", priority=True, waiting={  # type: ignore[arg-type]
        "position": "2", "waiting": -1, "since": "yesterday"}))
    assert s.queued and s.priority == 0
    assert (s.queue_position, s.queue_waiting, s.queued_since) == (None, None, None)


def test_the_queue_block_of_to_dict() -> None:
    waiting = TaskStatus.from_resource(live_task("t-1", queue="asap", priority=3, waiting=WAITING))
    assert waiting.to_dict()["queue"] == {
        "name": "asap", "priority": 3, "queued": True, "reason": "Waiting", "message": None,
        "position": 2, "waiting": 5, "since": "2026-05-01T10:00:01.500000+00:00",
        "updated_at": "2026-05-01T10:00:30+00:00"}
    assert TaskStatus.from_resource(live_task("t-2")).to_dict()["queue"] == {
        "name": "default", "priority": 0, "queued": False, "reason": None, "message": None,
        "position": None, "waiting": None, "since": None, "updated_at": None}
    json.dumps(waiting.to_dict())


@pytest.mark.parametrize("body", [
    live_task("t-1", queue="asap", priority=-3, waiting=WAITING),
    live_task("t-1", queue="nightly", waiting={"name": "nightly"}, reason="QueuePaused", message="paused"),
    live_task("t-1", queue="asap", admitted=True),
    live_task("t-1"),
], ids=["waiting", "paused", "admitted", "default"])
def test_from_dict_reads_the_queue_block_back(body: dict[str, Any]) -> None:
    s = TaskStatus.from_resource(body)
    back = TaskStatus.from_dict(s.to_dict())
    assert back == s and back.queued == s.queued
    assert json.loads(json.dumps(s.to_dict())) == back.to_dict()


def test_from_dict_without_a_queue_block_is_the_default_queue() -> None:
    """An answer of an endpoint older than queues (the results API of a previous release)."""
    old = TaskStatus.from_resource(live_task("t-1")).to_dict()
    del old["queue"]
    s = TaskStatus.from_dict(old)
    assert (s.queue, s.priority, s.queued, s.queue_position) == ("default", 0, False, None)
    assert s == TaskStatus.from_resource(live_task("t-1"))


# -- listing -----------------------------------------------------------------------------------

def listing() -> list[dict[str, Any]]:
    return [
        live_task("a-wait", queue="asap", waiting={**WAITING, "position": 1}),
        live_task("b-run", queue="asap", state="STARTED"),
        live_task("c-default-wait", waiting={"name": "default", "position": 1, "waiting": 1}),
        live_task("d-done", state="SUCCESS"),
        live_task("e-other-app", app="other", queue="asap", waiting={**WAITING, "position": 2}),
    ]


def test_list_queued_lists_the_waiting_tasks(client: TaskClient, api: FakeCustomObjects) -> None:
    api.tasks = listing()
    assert [s.id for s in client.list(queued=True)] == ["a-wait", "c-default-wait", "e-other-app"]
    assert [s.id for s in client.list("my-app", queued=True)] == ["a-wait", "c-default-wait"]
    assert [s.id for s in client.list(queued=True, queue="asap")] == ["a-wait", "e-other-app"]
    assert [s.id for s in client.list(queue="asap")] == ["a-wait", "b-run", "e-other-app"]
    assert [s.id for s in client.list(queue="default")] == ["c-default-wait", "d-done"]
    assert [s.id for s in client.list(queued=True, limit=1)] == ["a-wait"]
    assert client.list(queued=True, state="STARTED") == []


def test_list_queued_never_reads_the_archive(client: TaskClient, api: FakeCustomObjects) -> None:
    class Archive:
        def list(self, *args: Any) -> Any:
            raise AssertionError("queued tasks are never archived")

    api.tasks = listing()
    client.results = Archive()  # type: ignore[assignment]
    assert len(client.list(queued=True)) == 3


def test_list_by_queue_filters_the_archive_too(client: TaskClient, api: FakeCustomObjects) -> None:
    archived = [TaskStatus.from_resource(live_task(f"z-{q}", queue=q, state="SUCCESS"), archived=True).to_dict()
                for q in ("asap", "background")]

    class Archive:
        def list(self, app: Any, state: Any, limit: int, cursor: Any, namespace: str = "") -> Any:
            return archived, None

    api.tasks = listing()
    client.results = Archive()  # type: ignore[assignment]
    assert [s.id for s in client.list(queue="asap")] == ["a-wait", "b-run", "e-other-app", "z-asap"]
    assert [s.id for s in client.list()][-2:] == ["z-asap", "z-background"]


def test_list_tasks_passes_the_filters_on(default_client: TaskClient, api: FakeCustomObjects) -> None:
    api.tasks = listing()
    assert [s.id for s in list_tasks(queued=True, queue="default")] == ["c-default-wait"]


def test_list_with_a_bad_queue_name_is_refused(client: TaskClient) -> None:
    with pytest.raises(InvalidTaskError, match="qos must be a queue name"):
        client.list(queue="Fast Lane")


# -- queues ------------------------------------------------------------------------------------

def test_list_queues_gives_the_raw_objects_by_name(client: TaskClient, api: FakeCustomObjects) -> None:
    api.queues = [{"metadata": {"name": "background"}, "spec": {"maxRunning": 2}},
                  {"metadata": {"name": "asap"}, "spec": {}, "status": {"running": 1}}]
    assert client.list_queues() == [api.queues[1], api.queues[0]]


@pytest.mark.parametrize("status, words", [
    (404, "queues are not installed in this cluster \\(no limetaskqueues.limetask.io resource\\): install the CRDs"),
    (403, "not allowed to list limetaskqueues.limetask.io \\(cluster-scoped\\).*cannot list resource"),
    (400, "listing queues failed: 400"),
])
def test_list_queues_says_what_is_wrong(client: TaskClient, api: FakeCustomObjects, status: int,
                                        words: str) -> None:
    api.queues_error = api_error(status, 'limetaskqueues.limetask.io is forbidden: User "u" cannot list resource')
    with pytest.raises(ClusterError, match=words):
        client.list_queues()
