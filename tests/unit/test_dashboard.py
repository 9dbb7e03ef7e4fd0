"""The dashboard (lime_task.server.dashboard), without a cluster or a network.

- model: a task's summary, filters, scopes, counts, and the figures behind the charts;
- watch: `TaskWatch` fed watch events and list pages by hand (no thread), and its subscribers;
- routes: the HTTP API through `create_app` with a fake client and a filled watch: who sees
  what (an application's token never sees another's tasks, not even their counts), filters,
  paging, a task's detail, cancelling, charts and schedules, and the page with its headers.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lime_task.archive import URL_ENV, URL_FILE_ENV, Page, StateCounts
from lime_task.errors import ClusterError, NotFoundError
from lime_task.resource import ANNOTATION_CANCEL
from lime_task.server.app import create_app
from lime_task.server.auth import PLATFORM_TOKENS_ENV, PLATFORM_TOKENS_FILE_ENV
from lime_task.server.dashboard import model
from lime_task.server.dashboard.model import Filters, Scope
from lime_task.server.dashboard.watch import SUBSCRIBER_BACKLOG, Subscriber, TaskWatch
from lime_task.status import TaskStatus

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 5, 1, 10, 0, tzinfo=UTC).timestamp()  # a fixed "now" for the model's tests
TOKENS = {"app-a": "ta", "app-b": "tb"}
PLATFORM = {"ops": "tp"}
NAMESPACE = "solutions"


# -- helpers: LimeTask bodies, watch events ----------------------------------------------------

def stamp(t: float) -> str:
    """RFC 3339 in UTC with a Z, as the API server writes times."""
    return dt.datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def lime_task(name: str, *, app: str = "app-a", task: str = "acme.reports.daily", state: str = "PENDING",
              created: float = T0, started: float | None = None, completed: float | None = None,
              error: tuple[str, str, str] | None = None, attempts: int = 1, queue: str | None = None,
              priority: int | None = None, waiting: tuple[int, float] | None = None, confirmed: bool = False,
              **spec_extra: Any) -> dict[str, Any]:
    """A LimeTask as the operator leaves it. `error`: (type, message, reason); `waiting`:
    (position, since) of a task that waits in its queue (a True Queued condition)."""
    spec: dict[str, Any] = {"task": task, "app": app, "args": [], "kwargs": {}, **spec_extra}
    if queue is not None:
        spec["queue"] = queue
    if priority is not None:
        spec["priority"] = priority
    status: dict[str, Any] = {"state": state, "attempts": attempts, "event": {"confirmed": confirmed}}
    if started is not None:
        status["startedAt"] = stamp(started)
    if completed is not None:
        status["completedAt"] = stamp(completed)
    if error is not None:
        status["error"] = {"type": error[0], "message": error[1], "reason": error[2]}
    if waiting is not None:
        status["conditions"] = [{"type": "Queued", "status": "True", "reason": "Waiting"}]
        status["queue"] = {"position": waiting[0], "waiting": waiting[0] + 1, "since": stamp(waiting[1])}
    return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
            "metadata": {"name": name, "namespace": NAMESPACE, "creationTimestamp": stamp(created),
                         "resourceVersion": "1", "labels": {"limetask.io/app": app}},
            "spec": spec, "status": status}


def row(name: str, **kwargs: Any) -> dict[str, Any]:
    """The list's row of a LimeTask (see `lime_task`)."""
    return model.summary_of(lime_task(name, **kwargs))


def event(kind: str, obj: dict[str, Any], version: str | None = None) -> bytes:
    """One line of a watch's stream; `version` goes into the object's metadata."""
    if version is not None:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = version
    return json.dumps({"type": kind, "object": obj}).encode()


def fake_thread() -> threading.Thread:
    """A thread never started: with it in place, `TaskWatch.start()` starts nothing."""
    return threading.Thread(target=lambda: None)


APP_A = Scope("app", frozenset({"app-a"}), may_cancel=True, name="app-a")
EVERYONE = Scope("platform", None, may_cancel=False, name="ops")


# -- model: a task's summary ------------------------------------------------------------------------

def test_summary_of_a_finished_task() -> None:
    body = lime_task("t-1", task="acme.reports.daily", state="FAILURE", created=T0, started=T0 + 2.5,
                     completed=T0 + 15, error=("ValueError", "no such deal " + "x" * 500, "TaskRaised"),
                     attempts=3, queue="bulk", priority=5, confirmed=True)
    s = model.summary_of(body)
    assert (s["id"], s["app"], s["task"], s["state"]) == ("t-1", "app-a", "acme.reports.daily", "FAILURE")
    assert s["reason"] == "TaskRaised" and s["message"].startswith("no such deal ")
    assert len(s["message"]) == model.MESSAGE_MAX
    assert s["attempts"] == 3 and s["queue"] == "bulk" and s["priority"] == 5
    assert s["duration"] == pytest.approx(12.5)
    assert s["created"] == T0 and s["started"] == T0 + 2.5 and s["completed"] == T0 + 15
    assert s["when"] == T0 + 15  # a finished task: its completion
    assert s["created_at"] == "2026-05-01T10:00:00+00:00" and s["completed_at"] == "2026-05-01T10:00:15+00:00"
    assert s["event_confirmed"] is True and s["archived"] is False and s["namespace"] == NAMESPACE
    assert s["queued"] is False and s["position"] is None and s["queued_since"] is None
    json.dumps(s, allow_nan=False)  # JSON-ready as it is


def test_summary_of_unfinished_and_waiting_tasks() -> None:
    running = model.summary_of(lime_task("t-2", state="STARTED", created=T0, started=T0 + 1))
    assert running["state"] == "STARTED" and running["reason"] == "" and running["message"] == ""
    assert running["duration"] is None and running["completed"] is None
    assert running["when"] == T0  # an unfinished task: its creation
    assert running["queued"] is False and running["queue"] == "default"

    waiting = model.summary_of(lime_task("t-3", created=T0, queue="bulk", waiting=(2, T0 + 5)))
    assert waiting["state"] == "PENDING" and waiting["queued"] is True
    assert waiting["position"] == 2 and waiting["queue_reason"] == "Waiting"
    assert waiting["queued_since"] == T0 + 5 and waiting["when"] == T0

    archived = model.summary_of(lime_task("t-4", state="SUCCESS", completed=T0 + 1), archived=True)
    assert archived["archived"] is True


# -- model: filters, scopes, counts ------------------------------------------------------------------

def test_filters_match_each_field() -> None:
    r = row("t-1", app="app-a", task="acme.reports.daily", state="FAILURE", created=T0 - 100,
            completed=T0, error=("E", "m", "TimedOut"))
    assert Filters().matches(r)
    assert Filters(task="acme.reports").matches(r) and Filters(task="acme.reports.daily").matches(r)
    assert not Filters(task="reports").matches(r)  # a prefix, not a substring
    assert Filters(state="FAILURE").matches(r) and not Filters(state="SUCCESS").matches(r)
    assert Filters(reason="TimedOut").matches(r) and not Filters(reason="TaskRaised").matches(r)
    # since and until are on `when`: here the completion, not the creation
    assert Filters(since=T0).matches(r) and not Filters(since=T0 + 1).matches(r)
    assert Filters(until=T0 + 1).matches(r) and not Filters(until=T0).matches(r)  # until is exclusive
    assert not Filters(since=T0 - 200, until=T0 - 50).matches(r)
    assert Filters(app="app-a").matches(r) and not Filters(app="app-b").matches(r)
    assert Filters(id="t-1").matches(r) and not Filters(id="t-2").matches(r)
    assert not Filters(state="FAILURE").without_state().state
    assert Filters(task="x", state="FAILURE").without_state() == Filters(task="x")


def test_visible_keeps_to_the_scope_and_orders_newest_first() -> None:
    rows = [row("a-2", created=T0 - 10), row("a-1", created=T0 - 10), row("a-3", created=T0 - 50),
            row("a-0", state="SUCCESS", created=T0 - 500, completed=T0),
            row("b-1", app="app-b", created=T0), row("b-2", app="app-b", created=T0 + 100)]
    assert [r["id"] for r in model.visible(rows, APP_A, Filters())] == ["a-0", "a-1", "a-2", "a-3"]
    # An application's scope never returns another application's rows, even when asked for them.
    assert model.visible(rows, APP_A, Filters(app="app-b")) == []
    assert [r["id"] for r in model.visible(rows, EVERYONE, Filters())] == ["b-2", "a-0", "b-1", "a-1", "a-2", "a-3"]
    assert [r["id"] for r in model.visible(rows, EVERYONE, Filters(app="app-b"))] == ["b-2", "b-1"]
    assert Scope("app", frozenset({"app-a"}), True).describe() == {
        "kind": "app", "apps": ["app-a"], "cancel": True, "name": ""}


def test_count_states_has_every_state() -> None:
    rows = [row("1", state="SUCCESS", completed=T0), row("2", state="SUCCESS", completed=T0), row("3")]
    assert model.count_states(rows) == {"PENDING": 1, "STARTED": 0, "SUCCESS": 2, "FAILURE": 0}
    assert model.count_states([]) == {"PENDING": 0, "STARTED": 0, "SUCCESS": 0, "FAILURE": 0}
    assert model.add_counts({"SUCCESS": 2, "PENDING": 1}, {"SUCCESS": 3, "FAILURE": 1}) == {
        "PENDING": 1, "STARTED": 0, "SUCCESS": 5, "FAILURE": 1}


# -- model: charts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("span, step", [(3600, 60), (2 * 3600, 60), (6 * 3600, 300), (24 * 3600, 900),
                                        (30 * 86400, 86400), (90 * 86400, 86400)])
def test_pick_step(span: int, step: int) -> None:
    assert model.pick_step(T0 - span, T0) == step


def test_pick_step_gives_the_smallest_step_within_120_buckets() -> None:
    """Counted from the start put on a whole step, as the axis draws it."""
    assert model.pick_step(T0 - 7 * 86400, T0) >= 3600
    for span in [60, 61, 7199, 7200, 7201, 3600 * 30, 3600 * 30 + 1, 7 * 86400, 30 * 86400, 90 * 86400]:
        for end in (T0, T0 + 17.5, T0 + 3599):
            step = model.pick_step(end - span, end)
            start, axis_step, size = model.axis(end - span, end)
            assert (axis_step, start % step) == (step, 0) and start <= end - span < start + step, span
            assert size == model.bucket_count(start, end, step) <= model.MAX_BUCKETS, span
            smaller = [s for s in model.STEPS if s < step]
            assert all(model.bucket_count((end - span) // s * s, end, s) > model.MAX_BUCKETS for s in smaller), span
    assert model.bucket_count(T0, T0, 60) == 1 and model.bucket_count(T0 - 61, T0, 60) == 2


def test_percentile_is_postgresqls_percentile_cont() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert model.percentile(values, 0.5) == pytest.approx(2.5)
    assert model.percentile(values, 0.9) == pytest.approx(3.7)
    assert model.percentile(values, 0.0) == 1.0 and model.percentile(values, 1.0) == 4.0
    assert model.percentile([10.0, 20.0, 30.0], 0.5) == 20.0
    assert model.percentile([7.0], 0.99) == 7.0
    assert math.isnan(model.percentile([], 0.5))


def test_runtimes_keep_the_tasks_run_most_often() -> None:
    durations = {"c.few": [5.0], "a.many": [4.0, 1.0, 3.0, 2.0], "b.some": [9.0, 1.0], "d.some": [1.0, 1.0],
                 "e.none": []}
    out = model.runtimes(durations, top=3)
    assert [r["task"] for r in out] == ["a.many", "b.some", "d.some"]  # by count, then by name
    first = out[0]
    assert first["count"] == 4 and first["max"] == 4.0
    assert first["p50"] == pytest.approx(2.5) and first["p90"] == pytest.approx(3.7)
    assert first["p99"] == pytest.approx(3.97)
    assert [r["task"] for r in model.runtimes(durations)] == ["a.many", "b.some", "d.some", "c.few"]


def test_live_durations_take_finished_runs_in_the_window() -> None:
    rows = [row("1", task="x.a", state="SUCCESS", started=T0 + 10, completed=T0 + 40),
            row("2", task="x.a", state="FAILURE", started=T0 + 100, completed=T0 + 101, error=("E", "", "R")),
            row("3", task="x.b", state="SUCCESS", started=T0 - 500, completed=T0 - 1),  # before the window
            row("4", task="x.b", state="STARTED", started=T0 + 5)]
    assert model.live_durations(rows, T0, T0 + 3600) == {"x.a": [30.0, 1.0]}


def test_live_throughput_puts_each_time_in_its_bucket() -> None:
    since, until, step = T0, T0 + 600, 60  # ten buckets
    rows = [
        row("1", state="SUCCESS", created=T0 + 5, started=T0 + 70, completed=T0 + 130),
        row("2", state="FAILURE", created=T0 + 61, started=T0 + 62, completed=T0 + 599, error=("E", "", "TimedOut")),
        row("3", state="FAILURE", created=T0 + 300, completed=T0 + 301, error=("E", "", "")),
        row("4", state="STARTED", created=T0 - 30, started=T0 + 10),  # sent before the window
        row("5", state="SUCCESS", created=T0 + 550, started=T0 + 590, completed=T0 + 600),  # done at `until`
    ]
    throughput, reasons = model.Series(10), model.Series(10)
    model.live_throughput(rows, since, until, step, throughput, reasons)
    assert throughput.as_dict() == {
        "FAILURE": [0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        "SUCCESS": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        "sent": [1, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        "started": [1, 2, 0, 0, 0, 0, 0, 0, 0, 1],
    }
    assert reasons.as_dict() == {"TimedOut": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                                 "Unknown": [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]}
    series = model.Series(2)
    series.add("x", 2)
    series.add("x", -1)
    assert series.as_dict() == {}  # out of range: dropped


def test_queues_count_waiting_and_running() -> None:
    rows = [
        row("w1", queue="bulk", created=T0 - 100, waiting=(1, T0 - 90)),
        row("w2", queue="bulk", created=T0 - 50, waiting=(2, T0 - 30)),
        row("w3", queue="bulk", created=T0 - 10, waiting=(3, T0 - 10)),
        row("r1", queue="bulk", state="STARTED", started=T0 - 5),
        row("r2", state="STARTED", started=T0 - 5),
        row("p1", created=T0 - 1),  # pending, its slot given: neither
        row("d1", queue="done", state="SUCCESS", completed=T0 - 1),  # finished: no queue shown
    ]
    assert model.queues(rows, T0) == [
        {"queue": "bulk", "waiting": 3, "running": 1, "wait_p50": 30.0, "wait_max": 90.0},
        {"queue": "default", "waiting": 0, "running": 1, "wait_p50": None, "wait_max": None},
    ]


def test_next_runs_of_schedules() -> None:
    now = dt.datetime(2026, 5, 1, 10, 2, 30, tzinfo=UTC)
    out = model.next_runs([
        {"name": "every-5", "app": "app-a", "task": "t", "schedule": "*/5 * * * *", "active": 1},
        {"name": "suspended", "app": "app-a", "task": "t", "schedule": "*/5 * * * *", "suspend": True},
        {"name": "broken", "app": "app-a", "task": "t", "schedule": "61 * * * *"},
        {"name": "garbage", "app": "app-a", "task": "t", "schedule": "not a cron"},
        {"name": "nowhere", "app": "app-a", "task": "t", "schedule": "0 9 * * *", "time_zone": "Nowhere/Bogus"},
        {"name": "stockholm", "app": "app-a", "task": "t", "schedule": "0 9 * * *",
         "time_zone": "Europe/Stockholm"},
    ], now)
    by = {s["name"]: s for s in out}
    assert by["every-5"]["next"] == ["2026-05-01T10:05:00+00:00", "2026-05-01T10:10:00+00:00",
                                     "2026-05-01T10:15:00+00:00"]
    assert by["every-5"]["time_zone"] == "UTC" and by["every-5"]["problem"] is None and by["every-5"]["active"] == 1
    assert by["suspended"]["next"] == [] and by["suspended"]["suspend"] is True and by["suspended"]["problem"] is None
    for name in ("broken", "garbage", "nowhere"):
        assert by[name]["next"] == [] and by[name]["problem"], name
    assert "cron" in by["garbage"]["problem"] and "time zone" in by["nowhere"]["problem"]
    # 09:00 in Stockholm in May (CEST) is 07:00 UTC; the first one is tomorrow's.
    assert by["stockholm"]["next"][0] == "2026-05-02T07:00:00+00:00"
    # The next runs first, soonest first; then those that do not run.
    assert [s["name"] for s in out] == ["every-5", "stockholm", "broken", "garbage", "nowhere", "suspended"]


def test_clean_turns_nan_into_null() -> None:
    value = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": "nan", "e": 2.5, "f": None}
    assert model.clean(value) == {"a": None, "b": [1.0, None, {"c": None}], "d": "nan", "e": 2.5, "f": None}
    json.dumps(model.clean(value), allow_nan=False)


# -- watch ------------------------------------------------------------------------------------------

def test_a_task_watch_is_made_without_a_cluster() -> None:
    from kubernetes import client

    watch = TaskWatch(None, "ns")  # CustomObjectsApi(None) makes its own ApiClient: no request is sent
    assert isinstance(watch.api, client.CustomObjectsApi)
    assert watch.namespace == "ns" and watch.rows() == []
    assert not watch.healthy and not watch.wait_ready(0)


def test_watch_events_add_change_and_delete_rows() -> None:
    watch = TaskWatch(None, "ns")
    assert watch._apply(event("ADDED", lime_task("t-1"), "11"), "10") == "11"
    assert watch._apply(event("ADDED", lime_task("t-2"), "12"), "11") == "12"
    assert sorted(r["id"] for r in watch.rows()) == ["t-1", "t-2"]
    first = watch.get("t-1")
    assert first is not None and first["state"] == "PENDING" and first["app"] == "app-a"

    done = lime_task("t-1", state="SUCCESS", started=T0 + 1, completed=T0 + 4)
    assert watch._apply(event("MODIFIED", done, "13"), "12") == "13"
    changed = watch.get("t-1")
    assert changed is not None and changed["state"] == "SUCCESS" and changed["duration"] == 3.0
    assert len(watch.rows()) == 2

    assert watch._apply(event("DELETED", lime_task("t-2"), "14"), "13") == "14"
    assert [r["id"] for r in watch.rows()] == ["t-1"]
    assert watch._apply(event("DELETED", lime_task("never-seen"), "15"), "14") == "15"
    assert [r["id"] for r in watch.rows()] == ["t-1"]


def test_watch_bookmarks_errors_and_garbage() -> None:
    watch = TaskWatch(None, "ns")
    watch._apply(event("ADDED", lime_task("t-1"), "5"), "4")
    rows = watch.rows()
    bookmark = {"kind": "LimeTask", "metadata": {"resourceVersion": "99"}}
    assert watch._apply(event("BOOKMARK", bookmark), "5") == "99"
    assert watch.rows() == rows  # a bookmark changes nothing else
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
    assert watch._apply(event("ERROR", gone), "99") == ""  # list again
    assert watch._apply(event("ERROR", {"kind": "Status", "code": 500, "message": "boom"}), "99") == ""
    assert watch._apply(b"this is not JSON {", "99") == "99"  # skipped, same version
    assert watch._apply(b'{"type": "ADDED", "object": {"metadata": ', "99") == "99"
    # JSON, but not an event: skipped too (the watch goes on, no relist).
    for odd in (b"[1, 2]", b'"text"', b"42", b'{"type": "ADDED", "object": [1]}'):
        assert watch._apply(odd, "99") == "99"
    unversioned = lime_task("no-version")
    del unversioned["metadata"]["resourceVersion"]
    assert watch._apply(event("ADDED", unversioned), "99") == "99"  # kept when none is given
    assert sorted(r["id"] for r in watch.rows()) == ["no-version", "t-1"]


@pytest.mark.parametrize("breakage", [
    {"status": {"attempts": "x"}},
    {"metadata": {"creationTimestamp": "yesterday"}},
    {"status": {"startedAt": "not a time", "state": "STARTED"}},
])
def test_an_unreadable_task_is_left_out(breakage: dict[str, Any]) -> None:
    body = lime_task("broken")
    for part, values in breakage.items():
        body[part].update(values)
    with pytest.raises(ValueError):
        model.summary_of(body)  # it really cannot be read ...
    watch = TaskWatch(None, "ns")
    watch._apply(event("ADDED", lime_task("fine"), "1"), "0")
    assert watch._apply(event("ADDED", body, "2"), "1") == "2"  # ... and the watch goes on without it
    assert [r["id"] for r in watch.rows()] == ["fine"]


class FakeWatchApi:
    """`list_namespaced_custom_object` as the watch calls it: list pages, then one event stream."""

    def __init__(self, pages: list[dict[str, Any]], chunks: Sequence[bytes] = ()) -> None:
        self.pages, self.chunks = pages, list(chunks)
        self.calls: list[dict[str, Any]] = []
        self.released = False

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                      **kwargs: Any) -> Any:
        self.calls.append({"namespace": namespace, "plural": plural, **kwargs})
        if kwargs.get("watch"):
            return SimpleNamespace(stream=lambda *a, **k: iter(self.chunks), release_conn=self._release)
        page = self.pages[len(self.calls) - 1]
        return SimpleNamespace(data=json.dumps(page).encode())

    def _release(self) -> None:
        self.released = True


def test_list_reads_every_page_and_replaces_the_rows() -> None:
    pages = [
        {"items": [lime_task("t-1"), lime_task("t-2", app="app-b")], "metadata": {"continue": "more"}},
        {"items": [lime_task("t-3", state="STARTED"), lime_task("bad", attempts="x")],  # type: ignore[arg-type]
         "metadata": {"resourceVersion": "42"}},
    ]
    watch = TaskWatch(None, "ns")
    watch._apply(event("ADDED", lime_task("stale"), "1"), "0")
    fake = FakeWatchApi(pages)
    watch.api = fake
    assert watch._list() == "42"
    assert sorted(r["id"] for r in watch.rows()) == ["t-1", "t-2", "t-3"]  # the stale one is gone
    assert watch.wait_ready(0)
    assert "_continue" not in fake.calls[0] and fake.calls[1]["_continue"] == "more"
    assert all(c["namespace"] == "ns" and c["plural"] == "limetasks" for c in fake.calls)


def test_watch_reads_lines_split_across_chunks() -> None:
    stream = (event("ADDED", lime_task("t-1"), "7") + b"\n\n" + event("ADDED", lime_task("t-2"), "8") + b"\n"
              + b"garbage\n" + event("DELETED", lime_task("t-1"), "9") + b"\n")
    chunks = [stream[i:i + 50] for i in range(0, len(stream), 50)]
    watch = TaskWatch(None, "ns")
    fake = FakeWatchApi([], chunks)
    watch.api = fake
    assert watch._watch("6") == "9"
    assert [r["id"] for r in watch.rows()] == ["t-2"]
    assert fake.released
    call = fake.calls[0]
    assert call["watch"] is True and call["resource_version"] == "6" and call["allow_watch_bookmarks"] is True

    expired = event("ERROR", {"kind": "Status", "code": 410}) + b"\n" + event("ADDED", lime_task("t-9"), "11") + b"\n"
    fake = FakeWatchApi([], [expired])
    watch.api = fake
    assert watch._watch("9") is None  # list again; what follows the error is not applied
    assert watch.get("t-9") is None and fake.released


def test_a_subscriber_that_falls_behind_is_told_to_reset_once() -> None:
    async def body() -> None:
        sub = Subscriber(asyncio.get_running_loop())
        for i in range(SUBSCRIBER_BACKLOG):
            sub.offer(("task", {"id": str(i)}))
        assert sub.queue.qsize() == SUBSCRIBER_BACKLOG and not sub.overflowed
        sub.offer(("task", {"id": "one too many"}))
        sub.offer(("task", {"id": "later"}))
        sub.offer(("deleted", {"id": "later"}))
        assert sub.overflowed
        assert sub.queue.qsize() == 1 and await sub.queue.get() == ("reset", None)
        assert sub.queue.empty()
        sub.overflowed = False  # the page has reloaded: changes reach it again
        sub.offer(("task", {"id": "after"}))
        assert await sub.queue.get() == ("task", {"id": "after"})

    asyncio.run(body())


def test_watch_publishes_changes_to_its_subscribers() -> None:
    async def body() -> None:
        watch = TaskWatch(None, "ns")
        sub = watch.subscribe()
        watch._apply(event("ADDED", lime_task("t-1"), "1"), "0")
        watch._apply(event("BOOKMARK", {"metadata": {"resourceVersion": "2"}}), "1")
        watch._apply(event("DELETED", lime_task("t-1"), "3"), "2")
        await asyncio.sleep(0)  # the offers are scheduled on this loop
        kinds = []
        while not sub.queue.empty():
            kind, item = sub.queue.get_nowait()
            kinds.append((kind, item["id"]))
        assert kinds == [("task", "t-1"), ("deleted", "t-1")]

        for i in range(SUBSCRIBER_BACKLOG + 5):
            watch._apply(event("ADDED", lime_task(f"t-{i}"), str(10 + i)), "3")
        await asyncio.sleep(0)
        assert sub.queue.qsize() == 1 and sub.queue.get_nowait() == ("reset", None)

        watch.unsubscribe(sub)
        watch._apply(event("ADDED", lime_task("t-x"), "9999"), "9998")
        await asyncio.sleep(0)
        assert sub.queue.empty()

    asyncio.run(body())


# -- routes -----------------------------------------------------------------------------------------

class FakeClient:
    """What the dashboard asks of a `TaskClient`: a task of an application (another
    application's is missing, as in `TaskClient._get_for_app`), cancel, and schedules."""

    namespace = NAMESPACE

    def __init__(self, tasks: list[dict[str, Any]], schedules: list[dict[str, Any]] | None = None) -> None:
        self.tasks = {t["metadata"]["name"]: copy.deepcopy(t) for t in tasks}
        self.schedules = schedules or []
        self.schedules_error: Exception | None = None
        self.cancelled: list[tuple[str, str, bool]] = []
        self.api = SimpleNamespace(list_namespaced_custom_object=lambda *a, **k: None)

    def _get_for_app(self, task_id: str, app: str) -> dict[str, Any]:
        body = self.tasks.get(task_id)
        if body is None or body["spec"]["app"] != app:
            raise NotFoundError(f"task {task_id!r} not found")
        return copy.deepcopy(body)

    def cancel(self, task_id: str, app: str, archive: bool = True) -> TaskStatus:
        self.cancelled.append((task_id, app, archive))
        body = self._get_for_app(task_id, app)
        body["metadata"].setdefault("annotations", {})[ANNOTATION_CANCEL] = "true"
        return TaskStatus.from_resource(body)

    def _read_checked(self, what: str, fn: Any, *args: Any, label_selector: str = "", **kwargs: Any) -> Any:
        """Lists schedules; these carry no labels, so only "" and "!label" select them."""
        assert args[-1] == "limetaskschedules" and args[-2] == NAMESPACE
        if self.schedules_error is not None:
            raise self.schedules_error
        chosen = self.schedules if not label_selector or label_selector.startswith("!") else []
        return {"items": copy.deepcopy(chosen)}


def schedule(name: str, app: str, expression: str) -> dict[str, Any]:
    return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskSchedule",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"app": app, "task": "acme.reports.daily", "schedule": expression}, "status": {}}


NOW = float(int(time.time()))


def live_tasks(now: float) -> list[dict[str, Any]]:
    """app-a: finished tasks and one running; app-b: what app-a has not (waiting, PENDING tasks and a
    failure reason of its own), and a task of the same name as one of app-a's."""
    a, b = "app-a", "app-b"
    return [
        lime_task("a-fail-2", app=a, task="acme.sync.pull", state="FAILURE", created=now - 50, started=now - 40,
                  completed=now - 30, error=("ValueError", "bad deal", "TaskRaised")),
        lime_task("a-fail-1", app=a, task="acme.reports.weekly", state="FAILURE", created=now - 100,
                  started=now - 80, completed=now - 60, error=("TimeoutError", "too slow", "TimedOut"), attempts=2),
        lime_task("a-ok-1", app=a, task="acme.reports.daily", state="SUCCESS", created=now - 140, started=now - 130,
                  completed=now - 120, confirmed=True),
        lime_task("a-run", app=a, task="acme.reports.daily", state="STARTED", created=now - 600, started=now - 590),
        lime_task("a-old", app=a, task="acme.sync.pull", state="SUCCESS", created=now - 11000, started=now - 10900,
                  completed=now - 10800),
        lime_task("b-wait", app=b, task="bravo.jobs.run", created=now - 20, queue="bulk", waiting=(1, now - 20)),
        lime_task("b-new", app=b, task="bravo.jobs.run", created=now - 10),
        lime_task("b-run", app=b, task="bravo.jobs.run", state="STARTED", created=now - 300, started=now - 290),
        lime_task("b-fail", app=b, task="bravo.jobs.run", state="FAILURE", created=now - 60, started=now - 55,
                  completed=now - 45, error=("OSError", "gone", "WorkerLost")),
        lime_task("b-same", app=b, task="acme.reports.daily", state="SUCCESS", created=now - 90, started=now - 85,
                  completed=now - 70),
    ]


A_IDS = ["a-fail-2", "a-fail-1", "a-ok-1", "a-run", "a-old"]  # newest first


@pytest.fixture
def fake() -> FakeClient:
    bodies = live_tasks(NOW)
    for body in bodies:
        if body["metadata"]["name"] == "a-fail-1":
            body["spec"].update(args=[1001, "x"], kwargs={"props": ["name"]}, maxAttempts=3)
            body["status"].update(history=[{"attempt": 1, "reason": "TimedOut"}, {"attempt": 2, "reason": "TimedOut"}],
                                  jobName="a-fail-1-2")
            body["status"]["event"].update(confirmed=True, id="evt-1")
    return FakeClient(bodies, [schedule("sched-a", "app-a", "*/5 * * * *"), schedule("sched-b", "app-b", "0 * * * *")])


@pytest.fixture
def http(fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for var in (URL_ENV, URL_FILE_ENV, PLATFORM_TOKENS_ENV, PLATFORM_TOKENS_FILE_ENV):
        monkeypatch.delenv(var, raising=False)
    watch = TaskWatch(None, NAMESPACE)
    for i, body in enumerate(fake.tasks.values()):
        watch._apply(event("ADDED", body, str(i + 1)), str(i))
    watch._ready.set()
    watch._thread = fake_thread()
    app = create_app(client=fake, tokens=TOKENS, platform_tokens=PLATFORM, imports=[], archive=None,
                     kubernetes_auth=False, dashboard_watch=watch)
    with TestClient(app) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["id"] for item in answer["items"]]


def test_me_says_who_the_token_is(http: TestClient) -> None:
    a = http.get("/v1/dashboard/me", headers=auth("ta"))
    assert a.status_code == 200, a.text
    assert a.json() == {"kind": "app", "apps": ["app-a"], "cancel": True, "name": "app-a", "archive": False,
                        "namespace": NAMESPACE}
    b = http.get("/v1/dashboard/me", headers=auth("tb")).json()
    assert (b["kind"], b["apps"], b["cancel"]) == ("app", ["app-b"], True)
    ops = http.get("/v1/dashboard/me", headers=auth("tp")).json()
    assert (ops["kind"], ops["apps"], ops["cancel"], ops["name"]) == ("platform", None, False, "ops")


class EstimatingArchive:
    """An archive too large to count: its counts are the planner's estimates; no task is archived."""

    def ping(self) -> None:
        """It answers (the endpoint's readiness asks)."""

    def count_states(self, namespace: str, **filters: Any) -> StateCounts:
        return StateCounts({"SUCCESS": 1_200_000, "FAILURE": 40_000}, estimated=True)

    def search(self, namespace: str, **filters: Any) -> Page:
        return Page([], None)


def test_counts_say_when_the_archives_are_estimates(fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (URL_ENV, URL_FILE_ENV, PLATFORM_TOKENS_ENV, PLATFORM_TOKENS_FILE_ENV):
        monkeypatch.delenv(var, raising=False)
    watch = TaskWatch(None, NAMESPACE)
    for i, body in enumerate(fake.tasks.values()):
        watch._apply(event("ADDED", body, str(i + 1)), str(i))
    watch._ready.set()
    watch._thread = fake_thread()
    app = create_app(client=fake, tokens=TOKENS, platform_tokens=PLATFORM, imports=[],
                     archive=EstimatingArchive(), kubernetes_auth=False, dashboard_watch=watch)  # type: ignore[arg-type]
    with TestClient(app) as client:
        answer = client.get("/v1/dashboard/tasks", headers=auth("tp")).json()
        assert answer["counts_estimated"] is True
        assert answer["counts"]["SUCCESS"] == 1_200_000 + 3 and answer["total"] == sum(answer["counts"].values())
        assert client.get("/healthz").json() == {"status": "ok"}


def test_counts_are_exact_without_the_archive(http: TestClient) -> None:
    answer = http.get("/v1/dashboard/tasks", headers=auth("tp")).json()
    assert answer["counts_estimated"] is False
    assert http.get("/readyz").json()["archive"] == "none"


@pytest.mark.parametrize("headers", [{}, auth("wrong"), auth("ta ta"), {"Authorization": "ta"},
                                     {"Authorization": "Basic dGE6"}, auth("app-a")])
def test_no_valid_token_is_401(http: TestClient, headers: dict[str, str]) -> None:
    for url in ("/v1/dashboard/me", "/v1/dashboard/tasks", "/v1/dashboard/tasks/app-a/a-run",
                "/v1/dashboard/charts"):
        response = http.get(url, headers=headers)
        assert response.status_code == 401, (url, response.text)
        assert response.json()["code"] == "Unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert http.post("/v1/dashboard/tasks/app-a/a-run/cancel", headers=headers).status_code == 401


def test_an_applications_token_sees_its_own_tasks_only(http: TestClient) -> None:
    answer = http.get("/v1/dashboard/tasks", headers=auth("ta")).json()
    assert ids(answer) == A_IDS and answer["next"] is None
    assert {item["app"] for item in answer["items"]} == {"app-a"}
    # app-b has waiting tasks, app-a none: not even app-b's counts show.
    assert answer["counts"] == {"PENDING": 0, "STARTED": 1, "SUCCESS": 2, "FAILURE": 2}
    assert answer["total"] == 5

    for query in ("?app=app-b", "?app=app-b&state=PENDING", "?app=app-b&task=bravo", "?app=app-b&reason=WorkerLost"):
        other = http.get(f"/v1/dashboard/tasks{query}", headers=auth("ta"))
        assert other.status_code == 200, other.text
        assert other.json() == {"items": [], "next": None, "total": 0, "counts_estimated": False,
                                "counts": {"PENDING": 0, "STARTED": 0, "SUCCESS": 0, "FAILURE": 0}}, query
    assert "b-" not in http.get("/v1/dashboard/tasks?task=bravo", headers=auth("ta")).text

    b = http.get("/v1/dashboard/tasks", headers=auth("tb")).json()
    assert {item["app"] for item in b["items"]} == {"app-b"}
    assert b["counts"] == {"PENDING": 2, "STARTED": 1, "SUCCESS": 1, "FAILURE": 1}


def test_a_platform_token_sees_every_application(http: TestClient) -> None:
    answer = http.get("/v1/dashboard/tasks", headers=auth("tp")).json()
    assert sorted(ids(answer)) == sorted([*A_IDS, "b-wait", "b-new", "b-run", "b-fail", "b-same"])
    assert answer["counts"] == {"PENDING": 2, "STARTED": 2, "SUCCESS": 3, "FAILURE": 3} and answer["total"] == 10
    whens = [item["when"] for item in answer["items"]]
    assert whens == sorted(whens, reverse=True)
    only_b = http.get("/v1/dashboard/tasks?app=app-b", headers=auth("tp")).json()
    assert {item["app"] for item in only_b["items"]} == {"app-b"} and only_b["total"] == 5
    waiting = next(item for item in only_b["items"] if item["id"] == "b-wait")
    assert waiting["queued"] is True and waiting["position"] == 1 and waiting["queue"] == "bulk"


def test_list_filters(http: TestClient) -> None:
    def get(query: str, token: str = "ta") -> dict[str, Any]:
        response = http.get(f"/v1/dashboard/tasks?{query}", headers=auth(token))
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    failed = get("state=FAILURE")
    assert ids(failed) == ["a-fail-2", "a-fail-1"]
    # counts are by state whatever `state` is; total is how many in the state asked for
    assert failed["counts"] == {"PENDING": 0, "STARTED": 1, "SUCCESS": 2, "FAILURE": 2} and failed["total"] == 2
    reports = get("task=acme.reports")
    assert ids(reports) == ["a-fail-1", "a-ok-1", "a-run"]  # not app-b's task of the same name
    assert reports["counts"] == {"PENDING": 0, "STARTED": 1, "SUCCESS": 1, "FAILURE": 1}
    assert ids(get("reason=TimedOut")) == ["a-fail-1"]
    assert ids(get("reason=WorkerLost")) == [] and ids(get("reason=WorkerLost", "tp")) == ["b-fail"]
    assert ids(get("window=3600")) == ["a-fail-2", "a-fail-1", "a-ok-1", "a-run"]  # a-old is 3 h ago
    assert get("window=3600")["total"] == 4
    assert ids(get("state=SUCCESS&task=acme.sync")) == ["a-old"]
    since = stamp(NOW - 100)
    assert ids(get(f"since={since}&until={stamp(NOW - 45)}")) == ["a-fail-1"]


def test_list_pages(http: TestClient) -> None:
    first = http.get("/v1/dashboard/tasks?limit=2", headers=auth("ta")).json()
    assert ids(first) == A_IDS[:2] and first["next"] == "live.2" and first["total"] == 5
    rest = http.get("/v1/dashboard/tasks", params={"cursor": first["next"]}, headers=auth("ta")).json()
    assert ids(rest) == A_IDS[2:] and rest["next"] is None
    middle = http.get("/v1/dashboard/tasks?limit=2&cursor=live.2", headers=auth("ta")).json()
    assert ids(middle) == A_IDS[2:4] and middle["next"] == "live.4"
    assert ids(http.get("/v1/dashboard/tasks?cursor=live.99", headers=auth("ta")).json()) == []
    for cursor in ("live.x", "live.", "live.-1", "live.1234567890"):
        bad = http.get("/v1/dashboard/tasks", params={"cursor": cursor}, headers=auth("ta"))
        assert bad.status_code == 422, (cursor, bad.text)
        assert bad.json()["code"] == "InvalidRequest"


@pytest.mark.parametrize("query", [
    f"window=3600&since={stamp(NOW - 60)}",
    "state=DONE", "state=pending", "limit=0", "limit=201", "window=10", "task=a%20b", "reason=not-camel",
    "app=-bad-", "since=2026-05-01T10:00:00",  # no time zone
    f"since={stamp(NOW)}&until={stamp(NOW - 60)}",
])
def test_an_invalid_list_request_is_422(http: TestClient, query: str) -> None:
    response = http.get(f"/v1/dashboard/tasks?{query}", headers=auth("ta"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "InvalidRequest"


def test_a_task_whole(http: TestClient) -> None:
    response = http.get("/v1/dashboard/tasks/app-a/a-fail-1", headers=auth("ta"))
    assert response.status_code == 200, response.text
    task = response.json()
    assert (task["id"], task["app"], task["state"], task["reason"]) == ("a-fail-1", "app-a", "FAILURE", "TimedOut")
    assert task["args"] == [1001, "x"] and task["kwargs"] == {"props": ["name"]}
    assert task["history"] == [{"attempt": 1, "reason": "TimedOut"}, {"attempt": 2, "reason": "TimedOut"}]
    assert task["event"] == {"confirmed": True, "id": "evt-1"} and task["job"] == "a-fail-1-2"
    assert task["error"] == {"type": "TimeoutError", "message": "too slow", "reason": "TimedOut"}
    assert task["options"]["max_attempts"] == 3 and task["options"]["queue"] == "default"
    assert task["may_cancel"] is False  # it has finished

    running = http.get("/v1/dashboard/tasks/app-a/a-run", headers=auth("ta")).json()
    assert running["may_cancel"] is True and running["args"] == [] and running["event"] == {"confirmed": False}
    assert http.get("/v1/dashboard/tasks/app-a/a-run", headers=auth("tp")).json()["may_cancel"] is False
    assert http.get("/v1/dashboard/tasks/app-b/b-run", headers=auth("tp")).json()["app"] == "app-b"


def test_another_applications_task_is_404_like_a_missing_one(http: TestClient) -> None:
    answers = [http.get(url, headers=auth("ta")) for url in (
        "/v1/dashboard/tasks/app-b/b-run",    # another application's, asked for as its
        "/v1/dashboard/tasks/app-a/b-run",    # another application's, asked for as app-a's
        "/v1/dashboard/tasks/app-a/no-such",  # missing
        "/v1/dashboard/tasks/app-b/no-such",
        "/v1/dashboard/tasks/Bad_App/a-run",
    )]
    assert [r.status_code for r in answers] == [404] * 5
    assert {r.json()["code"] for r in answers} == {"NotFound"}
    assert answers[0].text.replace("b-run", "ID") == answers[2].text.replace("no-such", "ID")
    assert all("app-b" not in r.text for r in answers)


def test_a_platform_token_may_not_cancel(http: TestClient, fake: FakeClient) -> None:
    response = http.post("/v1/dashboard/tasks/app-a/a-run/cancel", headers=auth("tp"))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "Forbidden"
    assert fake.cancelled == []


def test_an_applications_token_cancels_its_own_tasks_only(http: TestClient, fake: FakeClient) -> None:
    other = http.post("/v1/dashboard/tasks/app-b/b-run/cancel", headers=auth("ta"))
    assert other.status_code == 404 and other.json()["code"] == "NotFound"
    assert fake.cancelled == []

    response = http.post("/v1/dashboard/tasks/app-a/a-run/cancel", headers=auth("ta"))
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "a-run", "status": "STARTED"}
    assert fake.cancelled == [("a-run", "app-a", False)]  # the live task only: never the archive

    # app-b's task asked for as app-a's: the client says it is missing.
    assert http.post("/v1/dashboard/tasks/app-a/b-run/cancel", headers=auth("ta")).status_code == 404


def test_charts_show_the_tokens_application_only(http: TestClient) -> None:
    response = http.get("/v1/dashboard/charts?window=3600", headers=auth("ta"))
    assert response.status_code == 200, response.text
    charts = response.json()
    assert charts["step"] == 60 and charts["since"] % 60 == 0
    totals = {key: sum(values) for key, values in charts["throughput"].items()}
    assert totals == {"sent": 4, "started": 4, "SUCCESS": 1, "FAILURE": 2}  # not a-old, nothing of app-b's
    assert set(charts["reasons"]) == {"TaskRaised", "TimedOut"}  # no WorkerLost
    assert {r["task"]: r["count"] for r in charts["runtimes"]} == {
        "acme.sync.pull": 1, "acme.reports.weekly": 1, "acme.reports.daily": 1}
    assert charts["queues"] == [{"queue": "default", "waiting": 0, "running": 1, "wait_p50": None,
                                 "wait_max": None}]
    assert [s["name"] for s in charts["schedules"]] == ["sched-a"] and charts["schedules_problem"] is None
    assert len(charts["schedules"][0]["next"]) == 3

    everyone = http.get("/v1/dashboard/charts?window=3600", headers=auth("tp")).json()
    assert sum(everyone["throughput"]["FAILURE"]) == 3 and "WorkerLost" in everyone["reasons"]
    assert {r["task"]: r["count"] for r in everyone["runtimes"]}["acme.reports.daily"] == 2
    assert [(q["queue"], q["waiting"], q["running"]) for q in everyone["queues"]] == [
        ("bulk", 1, 0), ("default", 0, 2)]
    assert sorted(s["name"] for s in everyone["schedules"]) == ["sched-a", "sched-b"]

    asked_for_b = http.get("/v1/dashboard/charts?app=app-b", headers=auth("ta")).json()
    assert asked_for_b["throughput"] == {} and asked_for_b["runtimes"] == [] and asked_for_b["queues"] == []
    assert asked_for_b["schedules"] == []
    for window, step in [(None, 60), (3600, 60), (86400, 900), (604800, 3 * 3600), (90 * 86400, 86400)]:
        query = "" if window is None else f"?window={window}"  # none: the last hour
        figures = http.get(f"/v1/dashboard/charts{query}", headers=auth("ta")).json()
        since, until, buckets = figures["since"], figures["until"], figures["buckets"]
        span = window or 3600
        # bars on whole steps (UTC), from the step at or before the window's start to now
        assert figures["step"] == step and since % step == 0 and buckets[0] == since, window
        assert until - span - step < since <= until - span, window
        assert buckets == [since + i * step for i in range(math.ceil((until - since) / step))], window
        assert len(figures["throughput"]["sent"]) == len(buckets), window
    assert http.get(f"/v1/dashboard/charts?window=60&since={stamp(NOW)}", headers=auth("ta")).status_code == 422


def test_charts_say_why_schedules_are_missing(http: TestClient, fake: FakeClient) -> None:
    fake.schedules_error = ClusterError("list schedules failed: 503 unavailable")
    charts = http.get("/v1/dashboard/charts", headers=auth("ta")).json()
    assert charts["schedules"] == []
    assert "cannot be listed" in charts["schedules_problem"] and "503" in charts["schedules_problem"]
    assert sum(charts["throughput"]["FAILURE"]) == 2  # the rest is there


def test_a_wrong_schedule_does_not_hide_the_others(http: TestClient, fake: FakeClient) -> None:
    fake.schedules.append(schedule("sched-bad", "app-a", "61 * * * *"))
    charts = http.get("/v1/dashboard/charts", headers=auth("ta")).json()
    assert charts["schedules_problem"] is None
    by = {s["name"]: s for s in charts["schedules"]}
    assert set(by) == {"sched-a", "sched-bad"}
    assert len(by["sched-a"]["next"]) == 3 and by["sched-a"]["problem"] is None
    assert by["sched-bad"]["next"] == [] and "cron" in by["sched-bad"]["problem"]


def test_the_page_runs_under_a_strict_content_security_policy(http: TestClient) -> None:
    page = http.get("/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    assert 'src="static/vendor/chart.umd.min.js"' in html
    # Nothing inline, which the policy would block: every script has a src, no handlers, no styles.
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html

    chart = http.get("/dashboard/static/vendor/chart.umd.min.js")
    assert chart.status_code == 200 and len(chart.content) > 10_000
    assert "javascript" in chart.headers["content-type"]
    for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', html):
        assert http.get(f"/dashboard/{asset}").status_code == 200, asset
    redirect = http.get("/dashboard", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "dashboard/"


# -- the span of a window: bounded, as `window` is ------------------------------------------------

FAR_PAST, FAR_FUTURE = "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"


@pytest.mark.parametrize("query", [
    f"since={FAR_PAST}&until={FAR_FUTURE}",
    f"until={FAR_FUTURE}",  # from the last hour (the default) to the year 9999
    f"since={FAR_PAST}",
    f"since={stamp(NOW - 91 * 86400)}",
    f"since={stamp(NOW - 10)}&until={stamp(NOW + 91 * 86400)}",
])
def test_charts_over_more_than_90_days_are_422(http: TestClient, query: str) -> None:
    """One request for 3.65 million daily buckets took 32 s and 450 MB: the span is bounded like
    `window`, with a message that says so."""
    response = http.get(f"/v1/dashboard/charts?{query}", headers=auth("ta"))
    assert response.status_code == 422, response.text[:300]
    assert response.json()["code"] == "InvalidRequest" and "at most 90 days" in response.json()["detail"]


@pytest.mark.parametrize("query", [
    f"since={FAR_PAST}&until={FAR_FUTURE}",
    f"since={FAR_PAST}",
    f"since={stamp(NOW - 91 * 86400)}",
    f"since={stamp(NOW - 100 * 86400)}&until={stamp(NOW)}",
])
def test_a_list_over_more_than_90_days_is_422(http: TestClient, query: str) -> None:
    response = http.get(f"/v1/dashboard/tasks?{query}", headers=auth("ta"))
    assert response.status_code == 422, response.text[:300]
    assert "at most 90 days" in response.json()["detail"]


def test_windows_of_90_days_and_before_a_time_are_answered(http: TestClient) -> None:
    now = time.time()  # (NOW is as old as the test session: since=NOW-90d would be more than 90 days ago)
    for url in (f"/v1/dashboard/charts?since={stamp(now - 90 * 86400 + 3600)}",
                f"/v1/dashboard/charts?since={stamp(now - 200 * 86400)}&until={stamp(now - 111 * 86400)}",
                f"/v1/dashboard/tasks?since={stamp(now - 90 * 86400 + 3600)}",
                f"/v1/dashboard/tasks?until={stamp(now - 86400)}"):  # everything before a time: no span
        assert http.get(url, headers=auth("ta")).status_code == 200, url


def test_the_axis_never_has_more_than_its_buckets() -> None:
    assert model.axis(0, 90 * 86400)[2] == 90
    with pytest.raises(ValueError, match="at most 120 bars"):
        model.axis(0, 200 * 86400)
