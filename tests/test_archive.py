"""The archive against the real PostgreSQL: schema migrations, writes, partitions, retention, reads.

(End to end, with the operator and the local cluster: tests/test_e2e_archive.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import ARCHIVE_ADMIN_URL, ARCHIVE_HOST, ARCHIVE_PORT, REPO, archive_url, wait_until

from lime_task.archive import (
    TABLE,
    ArchiveError,
    ArchiveReader,
    ArchiveTimeout,
    Page,
    ReadLimits,
    body_of,
    current_revision,
    decode_cursor,
    expired_partitions,
    head_revision,
    migrate,
    partition_name,
    row_of,
)
from lime_task.errors import InvalidTaskError
from lime_task.status import TaskStatus

pytestmark = pytest.mark.archive


def finished(name: str, app: str = "app-a", namespace: str = "ns", completed: str = "2026-11-30T10:00:00Z",
             result: Any = "done", uid: str | None = None, state: str = "SUCCESS", task: str = "acme.tasks.x",
             reason: str = "TaskRaised", created: str | None = "2026-11-30T09:59:58Z",
             started: str | None = "2026-11-30T09:59:59Z") -> Any:
    """A finished task's LimeTask (as the operator sees it). `created`/`started` None: not set."""
    from limetask_operator.model import TaskView

    status: dict[str, Any] = {"state": state, "attempts": 1, "startedAt": started,
                              "completedAt": completed, "event": {"confirmed": True},
                              "conditions": [{"type": "Succeeded", "status": "True"}],
                              "history": [{"attempt": 1, "outcome": state}]}
    if started is None:
        del status["startedAt"]
    if state == "SUCCESS":
        status["result"] = result
    else:
        status["error"] = {"type": "ValueError", "message": "no", "reason": reason}
    meta: dict[str, Any] = {"namespace": namespace, "name": name, "uid": uid or str(uuid.uuid4()),
                            "creationTimestamp": created, "resourceVersion": "1"}
    if created is None:
        del meta["creationTimestamp"]
    return TaskView.from_body({
        "metadata": meta,
        "spec": {"task": task, "app": app, "args": [1, {"a": None}], "kwargs": {}},
        "status": status})


def archiver(url: str, **settings: Any) -> Any:
    from limetask_operator.archive import Archiver
    from limetask_operator.settings import OperatorSettings

    return Archiver(None, OperatorSettings(**settings), url)  # type: ignore[arg-type]


async def write(url: str, views: list[Any], migrated: bool = False) -> Any:
    """Write finished tasks through the operator's write path (`migrated`: as if its schema were
    at the newest version already, so that it migrates nothing first)."""
    a = archiver(url)
    a.migrated = migrated
    try:
        await a._write([row_of(v.namespace, v.name, v.uid, v.created, v.spec, v.status) for v in views])
    finally:
        await a.stop()
    return a


def count(url: str, namespace: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE namespace = %s", (namespace,)).fetchone()
        return int(row[0]) if row else 0


def test_migrations_are_versioned_and_idempotent(archive_db: str) -> None:
    assert current_revision(archive_db) == head_revision()
    assert migrate(archive_db) == head_revision()  # again: nothing to do


def test_two_processes_migrate_a_new_database_at_once() -> None:
    """Two operator replicas starting together: the advisory lock makes them take turns."""
    name = f"limetask_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = archive_url(database=name)
    try:
        env = {"LIMETASK_ARCHIVE_URL": url, "PATH": "/usr/bin:/bin"}
        procs = [subprocess.Popen([sys.executable, "-m", "limetask_operator.migrate"], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
        assert all(f"schema at version {head_revision()}" in o for o in outs)
    finally:
        with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrate_names_what_is_wrong_in_one_line() -> None:
    env = {"LIMETASK_ARCHIVE_URL": archive_url(port=1), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "limetask_operator.migrate"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "OperationalError" in proc.stderr, proc.stderr
    assert "limetask:limetask" not in proc.stderr  # no password in the message
    proc = subprocess.run([sys.executable, "-m", "limetask_operator.migrate"], env={"PATH": "/usr/bin:/bin"},
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "LIMETASK_ARCHIVE_URL" in proc.stderr


def test_a_task_is_written_once_however_often_it_is_written(archive_db: str) -> None:
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    views = [finished(f"t{i}", namespace=ns) for i in range(20)]
    asyncio.run(write(archive_db, views))
    asyncio.run(write(archive_db, views))  # an operator killed before its deletes writes them again
    asyncio.run(write(archive_db, views[:5] + [finished("t-new", namespace=ns)]))
    assert count(archive_db, ns) == 21


def test_whatever_a_task_returned_is_kept_exactly(archive_db: str) -> None:
    """jsonb refuses NUL and lone surrogates: such a result must neither fail a batch nor change."""
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    odd = {"nul": "a\x00b", "surrogate": "\ud800", "deep": [[[[[["x"]]]]]], "unicode": "åäö ✓", "big": 2**62,
           "float": 1.5, "none": None}
    views = [finished("odd", namespace=ns, result=odd), finished("plain", namespace=ns)]
    asyncio.run(write(archive_db, views))
    reader = ArchiveReader(archive_db)
    try:
        body = reader.get(ns, "odd", "app-a")
        assert body is not None
        st = TaskStatus.from_resource(body, archived=True)
        assert st.result == odd and st.status == "SUCCESS" and st.archived
        assert body["spec"]["args"] == [1, {"a": None}]
        assert "conditions" not in body["status"]  # they repeat state and error
        assert st.history == ({"attempt": 1, "outcome": "SUCCESS"},)
    finally:
        reader.close()


def test_reads_are_scoped_to_the_application(archive_db: str) -> None:
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    asyncio.run(write(archive_db, [finished("mine", app="app-a", namespace=ns),
                                   finished("theirs", app="app-b", namespace=ns)]))
    reader = ArchiveReader(archive_db)
    try:
        assert reader.get(ns, "mine", "app-a") is not None
        assert reader.get(ns, "theirs", "app-a") is None  # exactly as a missing one
        assert reader.get(ns, "missing", "app-a") is None
        assert reader.get("other-namespace", "mine", "app-a") is None
        assert [b["metadata"]["name"] for b in reader.list(ns, "app-a").items] == ["mine"]
    finally:
        reader.close()


def test_the_newest_incarnation_of_a_name_is_read(archive_db: str) -> None:
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    asyncio.run(write(archive_db, [finished("again", namespace=ns, completed="2026-11-29T10:00:00Z", result="old"),
                                   finished("again", namespace=ns, completed="2026-11-30T10:00:00Z", result="new")]))
    reader = ArchiveReader(archive_db)
    try:
        body = reader.get(ns, "again", "app-a")
        assert body is not None and body["status"]["result"] == "new"
    finally:
        reader.close()


def test_listing_pages_newest_first_with_a_cursor(archive_db: str) -> None:
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    base = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
    views = [finished(f"t{i:03}", namespace=ns, state="SUCCESS" if i % 3 else "FAILURE",
                      completed=(base + dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")) for i in range(70)]
    asyncio.run(write(archive_db, views))
    reader = ArchiveReader(archive_db)
    try:
        names, cursor, pages = [], None, 0
        while True:
            page = reader.list(ns, "app-a", limit=25, cursor=cursor)
            names += [b["metadata"]["name"] for b in page.items]
            pages += 1
            cursor = page.next
            if cursor is None:
                break
        assert pages == 3 and names == [f"t{i:03}" for i in reversed(range(70))]
        failures = reader.list(ns, "app-a", state="FAILURE", limit=1000).items
        assert len(failures) == 24 and all(b["status"]["state"] == "FAILURE" for b in failures)
        with pytest.raises(InvalidTaskError):
            reader.list(ns, "app-a", cursor="not-a-cursor")
    finally:
        reader.close()


def test_partitions_are_made_per_day_and_dropped_whole(archive_db: str) -> None:
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    days = [dt.date(2020, 1, d) for d in (1, 2, 3)]
    asyncio.run(write(archive_db, [finished(f"d{d.day}", namespace=ns, completed=f"{d.isoformat()}T12:00:00Z")
                                   for d in days]))

    def partitions() -> set[str]:
        with psycopg.connect(archive_db, autocommit=True) as conn:
            return {r[0] for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass", (TABLE,)).fetchall()}

    assert {partition_name(d) for d in days} <= partitions()
    a = archiver(archive_db)

    async def drop() -> list[str]:
        try:
            return await a.drop_expired(30, today=dt.date(2020, 2, 1))  # keeps 2020-01-02 onwards
        finally:
            await a.stop()

    dropped = asyncio.run(drop())
    assert partition_name(dt.date(2020, 1, 1)) in dropped
    assert partition_name(dt.date(2020, 1, 2)) not in dropped
    assert [r for r in partitions() if r == partition_name(dt.date(2020, 1, 1))] == []
    assert count(archive_db, ns) == 2


def test_expired_partitions_by_name() -> None:
    names = [partition_name(dt.date(2026, 10, 30)), partition_name(dt.date(2026, 10, 31)),
             partition_name(dt.date(2026, 11, 30)), "limetask_archive_pXYZ", "other"]
    assert expired_partitions(names, 30, dt.date(2026, 11, 30)) == [partition_name(dt.date(2026, 10, 30))]
    assert expired_partitions(names, 0, dt.date(2026, 11, 30)) == [partition_name(dt.date(2026, 10, 30)),
                                                                  partition_name(dt.date(2026, 10, 31))]


def test_an_unreachable_archive_is_an_archive_error_without_the_password() -> None:
    reader = ArchiveReader(archive_url(port=1))
    try:
        with pytest.raises(ArchiveError) as info:
            reader.get("ns", "x", "app")
        assert "limetask:limetask" not in str(info.value)
        assert ARCHIVE_HOST not in str(info.value) and "port 1" not in str(info.value)  # nor where it is
    finally:
        reader.close()


def test_rows_and_cursors() -> None:
    v = finished("x", completed="not a time")
    row = row_of(v.namespace, v.name, v.uid, v.created, v.spec, v.status)
    assert row.completed_at == dt.datetime(2026, 11, 30, 9, 59, 58, tzinfo=dt.timezone.utc)  # the creation time
    assert row.spec.isascii() and row.status.isascii()
    body = body_of("ns", "x", v.uid, row.created_at, row.spec, row.status)
    assert body["metadata"]["creationTimestamp"] == "2026-11-30T09:59:58Z"
    when = dt.datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
    from lime_task.archive import encode_cursor

    assert decode_cursor(encode_cursor(when, v.uid)) == (when, v.uid)


def test_the_cli_migrates_and_describes_the_archive(archive_db: str) -> None:
    import json
    import os

    env = {**os.environ, "LIMETASK_ARCHIVE_URL": archive_db}
    env.pop("LIMETASK_ARCHIVE_URL_FILE", None)
    asyncio.run(write(archive_db, [finished("cli", namespace=f"ns-{uuid.uuid4().hex[:6]}")]))

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lime_task.cli", "archive", *args], capture_output=True,
                              text=True, timeout=120, env={**env, **extra}, cwd=REPO)

    migrated = cli("migrate")
    assert migrated.returncode == 0 and f"schema at version {head_revision()}" in migrated.stdout
    assert "limetask:limetask" not in migrated.stderr  # the password is redacted
    status = cli("status", "-o", "json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["version"] == head_revision() and info["tasks"] >= 1 and info["partitions"]
    text = cli("status")
    assert text.returncode == 0 and "schema version" in text.stdout and "partitions" in text.stdout
    missing = cli("status", LIMETASK_ARCHIVE_URL="")
    assert missing.returncode == 2 and "LIMETASK_ARCHIVE_URL" in missing.stderr and missing.stderr.count("\n") == 1
    bad = cli("status", LIMETASK_ARCHIVE_URL="mysql://x@y/z")
    assert bad.returncode == 2 and "postgresql://" in bad.stderr
    down = cli("status", LIMETASK_ARCHIVE_URL=archive_url(port=1))
    assert down.returncode == 2 and down.stderr.count("\n") == 1 and "limetask:limetask" not in down.stderr


# -- the dashboard's reads: search, count_states, chart_figures ------------------------------

WINDOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)  # `since` of the dashboard tests


def at(seconds: float, base: dt.datetime = WINDOW) -> str:
    """The time `seconds` after `base`, as a LimeTask's status writes it."""
    return (base + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def own_namespace() -> str:
    return f"ns-{uuid.uuid4().hex}"


def names(page: Page) -> list[str]:
    return [b["metadata"]["name"] for b in page.items]


@pytest.fixture
def reader(archive_db: str) -> Iterator[ArchiveReader]:
    r = ArchiveReader(archive_db)
    try:
        yield r
    finally:
        r.close()


def test_search_filters_by_app_task_prefix_state_reason_and_time(archive_db: str, reader: ArchiveReader) -> None:
    ns, other = own_namespace(), own_namespace()
    hour = 3600
    views = [
        finished("a1", app="app-a", namespace=ns, task="acme.tasks.a_b", completed=at(1 * hour)),
        finished("a2", app="app-a", namespace=ns, task="acme.tasks.axb", completed=at(2 * hour),
                 state="FAILURE", reason="Timeout"),
        finished("b1", app="app-b", namespace=ns, task="acme.tasks.a_b", completed=at(3 * hour),
                 state="FAILURE", reason="TaskRaised"),
        finished("c1", app="app-c", namespace=ns, task="other.job", completed=at(4 * hour)),
        finished("p1", app="app-a", namespace=ns, task="acme.tasks.5%x", completed=at(5 * hour)),
        finished("p2", app="app-a", namespace=ns, task="acme.tasks.5yz", completed=at(6 * hour)),
        finished("s1", app="app-a", namespace=ns, task="acme\\tasks.q", completed=at(7 * hour)),
        finished("s2", app="app-a", namespace=ns, task="acmextasks.q", completed=at(8 * hour)),
        finished("a1", app="app-a", namespace=other, task="acme.tasks.a_b", completed=at(1 * hour)),
    ]
    asyncio.run(write(archive_db, views))

    def found(**filters: Any) -> list[str]:
        page = reader.search(ns, limit=1000, **filters)
        assert page.next is None
        return names(page)

    newest_first = ["s2", "s1", "p2", "p1", "c1", "b1", "a2", "a1"]
    assert found() == newest_first  # apps=None: every application's
    assert found(apps=None) == newest_first
    assert found(apps=[]) == []  # no application: nothing
    assert found(apps=["app-a"]) == ["s2", "s1", "p2", "p1", "a2", "a1"]
    assert found(apps=["app-b", "app-c"]) == ["c1", "b1"]
    assert found(apps=["app-missing"]) == []
    assert reader.search(own_namespace(), limit=1000).items == []  # another namespace's rows are not seen

    # A prefix of the task's name; LIKE's wildcards (_ %) and its escape (\) are taken literally.
    assert found(task="acme.tasks.a") == ["b1", "a2", "a1"]
    assert found(task="acme.tasks.a_") == ["b1", "a1"]  # not acme.tasks.axb
    assert found(task="acme.tasks.a_b") == ["b1", "a1"]
    assert found(task="acme.tasks.5%") == ["p1"]  # not acme.tasks.5yz
    assert found(task="acme\\") == ["s1"]  # not acmextasks.q
    assert found(task="acme.tasks.b") == []
    assert found(task="tasks") == []  # a prefix, not a substring
    assert found(task="") == newest_first  # no prefix: every task

    assert found(state="FAILURE") == ["b1", "a2"]
    assert found(state="SUCCESS") == ["s2", "s1", "p2", "p1", "c1", "a1"]
    assert found(reason="Timeout") == ["a2"]
    assert found(reason="TaskRaised") == ["b1"]
    assert found(state="FAILURE", apps=["app-a"]) == ["a2"]

    # since: completed at or after; until: completed before.
    assert found(since=WINDOW + dt.timedelta(hours=2)) == ["s2", "s1", "p2", "p1", "c1", "b1", "a2"]
    assert found(until=WINDOW + dt.timedelta(hours=2)) == ["a1"]
    assert found(since=WINDOW + dt.timedelta(hours=2), until=WINDOW + dt.timedelta(hours=4)) == ["b1", "a2"]
    assert found(since=WINDOW + dt.timedelta(hours=2, seconds=1), until=WINDOW + dt.timedelta(hours=3)) == []

    # exclude: names left out (tasks still in the cluster are counted there).
    assert found(exclude=["a1", "b1", "missing"]) == ["s2", "s1", "p2", "p1", "c1", "a2"]
    assert found(apps=["app-a"], task="acme.tasks.a", exclude=["a1"]) == ["a2"]

    body = reader.search(ns, apps=["app-b"]).items[0]  # the whole archived task, as `list` gives it
    assert body["spec"]["task"] == "acme.tasks.a_b" and body["status"]["error"]["reason"] == "TaskRaised"
    assert body["metadata"]["namespace"] == ns


def test_search_pages_newest_first_without_duplicates_or_gaps(archive_db: str, reader: ArchiveReader) -> None:
    ns = own_namespace()
    views = []
    for i in range(30):
        # Every third completes at the same instant as others: the uid orders those.
        seconds = (i // 3) * 60 if i % 2 else i * 60 + 0.25
        views.append(finished(f"t{i:02}", namespace=ns, app="app-a" if i % 4 else "app-b",
                              state="FAILURE" if i % 5 == 0 else "SUCCESS", completed=at(seconds)))
    asyncio.run(write(archive_db, views))
    rows = [(v.status["completedAt"], v.uid, v) for v in views]
    assert len({r[0] for r in rows}) < len(rows)  # some completion times are shared

    def expected(keep: Any) -> list[str]:
        chosen = [r for r in rows if keep(r[2])]
        # Newest first, then by uid (descending); the times above all have the same format.
        chosen.sort(key=lambda r: (dt.datetime.fromisoformat(r[0].replace("Z", "+00:00")), r[1]), reverse=True)
        return [r[2].name for r in chosen]

    def pages(limit: int, **filters: Any) -> list[list[str]]:
        out, cursor = [], None
        while True:
            page = reader.search(ns, limit=limit, cursor=cursor, **filters)
            out.append(names(page))
            cursor = page.next
            if cursor is None:
                return out
            assert len(out) < 100, "the cursor does not advance"

    every = pages(7)
    assert [len(p) for p in every] == [7, 7, 7, 7, 2]
    flat = [n for p in every for n in p]
    assert flat == expected(lambda v: True) and len(set(flat)) == 30

    exact = pages(10)  # the last page is full: no empty page after it
    assert [len(p) for p in exact] == [10, 10, 10]
    assert [n for p in exact for n in p] == expected(lambda v: True)

    # The filters hold on every page.
    app_a = pages(4, apps=["app-a"], exclude=["t01"])
    assert sum(len(p) for p in app_a) >= 2 * 4 and len(app_a) >= 3
    assert [n for p in app_a for n in p] == expected(lambda v: v.spec["app"] == "app-a" and v.name != "t01")
    failures = pages(2, state="FAILURE")
    assert len(failures) == 3
    assert [n for p in failures for n in p] == expected(lambda v: v.status["state"] == "FAILURE")

    with pytest.raises(InvalidTaskError):
        reader.search(ns, cursor="not-a-cursor")


def test_count_states_counts_what_search_finds_by_state(archive_db: str, reader: ArchiveReader) -> None:
    ns = own_namespace()
    hour = 3600
    views = [
        finished("a1", app="app-a", namespace=ns, task="acme.tasks.a_b", completed=at(1 * hour)),
        finished("a2", app="app-a", namespace=ns, task="acme.tasks.a_b", completed=at(2 * hour)),
        finished("a3", app="app-a", namespace=ns, task="acme.tasks.axb", completed=at(3 * hour),
                 state="FAILURE", reason="Timeout"),
        finished("b1", app="app-b", namespace=ns, task="acme.tasks.a_b", completed=at(4 * hour),
                 state="FAILURE", reason="TaskRaised"),
        finished("b2", app="app-b", namespace=ns, task="other.job", completed=at(5 * hour), state="CANCELLED"),
        finished("a1", app="app-a", namespace=own_namespace(), completed=at(1 * hour)),
    ]
    asyncio.run(write(archive_db, views))

    assert reader.count_states(ns, apps=["app-a"]) == {"SUCCESS": 2, "FAILURE": 1}
    assert reader.count_states(ns) == {"SUCCESS": 2, "FAILURE": 2, "CANCELLED": 1}  # apps=None: every one
    assert reader.count_states(ns, apps=None) == {"SUCCESS": 2, "FAILURE": 2, "CANCELLED": 1}
    assert reader.count_states(ns, apps=[]) == {}
    assert reader.count_states(ns, apps=["app-b"]) == {"FAILURE": 1, "CANCELLED": 1}
    assert reader.count_states(own_namespace()) == {}
    assert reader.count_states(ns, task="acme.tasks.a_") == {"SUCCESS": 2, "FAILURE": 1}  # not axb
    assert reader.count_states(ns, task="acme.tasks.a") == {"SUCCESS": 2, "FAILURE": 2}
    assert reader.count_states(ns, reason="Timeout") == {"FAILURE": 1}
    assert reader.count_states(ns, since=WINDOW + dt.timedelta(hours=2),
                               until=WINDOW + dt.timedelta(hours=4)) == {"SUCCESS": 1, "FAILURE": 1}
    assert reader.count_states(ns, exclude=["a1", "b2"]) == {"SUCCESS": 1, "FAILURE": 2}
    assert reader.count_states(ns, apps=["app-a", "app-b"], task="acme.tasks.a_b", exclude=["a2"]) == {
        "SUCCESS": 1, "FAILURE": 1}
    # The same as search finds, counted.
    items = reader.search(ns, apps=["app-a", "app-b"], task="acme.tasks", limit=1000).items
    by_state: dict[str, int] = {}
    for b in items:
        by_state[b["status"]["state"]] = by_state.get(b["status"]["state"], 0) + 1
    assert reader.count_states(ns, apps=["app-a", "app-b"], task="acme.tasks") == by_state


def test_chart_figures_count_sent_started_and_finished_per_bucket(archive_db: str, reader: ArchiveReader) -> None:
    ns = own_namespace()
    until = WINDOW + dt.timedelta(minutes=10)
    views = [
        # sent in bucket 0 (59.5 s: floor, not round), started 1, succeeded 2
        finished("r1", namespace=ns, created=at(59.5), started=at(60), completed=at(130)),
        # sent 1, started 1, failed 3 (Timeout)
        finished("r2", namespace=ns, created=at(65), started=at(90), completed=at(200), state="FAILURE",
                 reason="Timeout"),
        # sent before the window (not counted), started 0, failed 4 (TaskRaised)
        finished("r3", namespace=ns, created=at(-30), started=at(5), completed=at(250), state="FAILURE",
                 reason="TaskRaised"),
        # failed 4 (TaskRaised) too, sent and started 3
        finished("r3b", namespace=ns, created=at(180), started=at(181), completed=at(299.999), state="FAILURE",
                 reason="TaskRaised"),
        # completed at `since` (inclusive): sent and started before, succeeded 0
        finished("r4", namespace=ns, created=at(-100), started=at(-50), completed=at(0)),
        # wholly before the window: not counted
        finished("r5", namespace=ns, created=at(-300), started=at(-200), completed=at(-0.5)),
        # completed at `until` (exclusive): not counted as finished. Sent and started in the
        # window, it counts there, as the dashboard's live tasks do (model.live_throughput).
        finished("r6", namespace=ns, created=at(500), started=at(530), completed=at(600)),
        # wholly after the window: not counted
        finished("r7", namespace=ns, created=at(600), started=at(610), completed=at(700)),
        # no creation or start time: only its end counts
        finished("r8", namespace=ns, created=None, started=None, completed=at(420)),
        # another application's, a name left out, another namespace's: not counted
        finished("x1", namespace=ns, app="app-b", created=at(10), started=at(10), completed=at(20)),
        finished("x2", namespace=ns, created=at(10), started=at(10), completed=at(20)),
        finished("r1", namespace=own_namespace(), created=at(10), started=at(10), completed=at(20)),
    ]
    asyncio.run(write(archive_db, views))

    figures = reader.chart_figures(ns, apps=["app-a"], since=WINDOW, until=until, step=60, exclude=["x2"])
    assert sorted(figures["counts"]) == sorted([
        ("sent", 0, "", 1),  # r1
        ("sent", 1, "", 1),  # r2
        ("sent", 3, "", 1),  # r3b
        ("sent", 8, "", 1),  # r6
        ("started", 0, "", 1),  # r3
        ("started", 1, "", 2),  # r1, r2
        ("started", 3, "", 1),  # r3b
        ("started", 8, "", 1),  # r6
        ("SUCCESS", 0, "", 1),  # r4
        ("SUCCESS", 2, "", 1),  # r1
        ("SUCCESS", 7, "", 1),  # r8
        ("FAILURE", 3, "Timeout", 1),  # r2
        ("FAILURE", 4, "TaskRaised", 2),  # r3, r3b
    ])
    kinds = {k for k, _, _, _ in figures["counts"]}
    assert kinds == {"sent", "started", "SUCCESS", "FAILURE"}
    assert all(isinstance(b, int) and isinstance(n, int) for _, b, _, n in figures["counts"])

    # Every application (None), nothing left out: x1 and x2 are counted too (bucket 0).
    every = reader.chart_figures(ns, apps=None, since=WINDOW, until=until, step=60)
    assert sorted(every["counts"]) == sorted(
        [c for c in figures["counts"] if c[1] != 0]
        + [("sent", 0, "", 3), ("started", 0, "", 3), ("SUCCESS", 0, "", 3)])
    # No application: nothing.
    assert reader.chart_figures(ns, apps=[], since=WINDOW, until=until, step=60) == {"counts": [], "runtimes": []}

    # Buckets of another size, from another start.
    wide = reader.chart_figures(ns, apps=["app-a"], since=WINDOW + dt.timedelta(seconds=60), until=until,
                                step=300, exclude=["x2"])
    assert sorted(wide["counts"]) == sorted([
        ("sent", 0, "", 2),  # r2 (65), r3b (180); r1 was sent before this start
        ("sent", 1, "", 1),  # r6 (500)
        ("started", 0, "", 3),  # r1 (60: inclusive), r2, r3b
        ("started", 1, "", 1),  # r6
        ("SUCCESS", 0, "", 1),  # r1 (130); r4 completed before this start
        ("SUCCESS", 1, "", 1),  # r8 (420)
        ("FAILURE", 0, "Timeout", 1),
        ("FAILURE", 0, "TaskRaised", 2),
    ])


def test_chart_figures_runtime_percentiles_of_archived_and_live_runs(archive_db: str,
                                                                     reader: ArchiveReader) -> None:
    ns = own_namespace()
    until = WINDOW + dt.timedelta(hours=1)
    t, u = "acme.tasks.t", "acme.tasks.u"

    def run(name: str, task: str, start: float, seconds: float, **more: Any) -> Any:
        return finished(name, namespace=ns, task=task, created=at(start - 1), started=at(start),
                        completed=at(start + seconds), **more)

    views = [
        run("t1", t, 100, 1), run("t2", t, 200, 2), run("t3", t, 300, 3, state="FAILURE"),
        run("u1", u, 100, 10), run("u2", u, 200, 20),
        run("u-before", u, -1000, 500),  # completed before `since`
        run("u-after", u, 3500, 500),  # completed after `until`
        run("u-other-app", u, 100, 900, app="app-b"),
        run("u-left-out", u, 100, 900),
        finished("u-never-started", namespace=ns, task=u, created=at(10), started=None, completed=at(20)),
        finished("u1", namespace=own_namespace(), task=u, started=at(100), completed=at(1000)),  # elsewhere
    ]
    asyncio.run(write(archive_db, views))

    figures = reader.chart_figures(ns, apps=["app-a"], since=WINDOW, until=until, step=60, exclude=["u-left-out"],
                                   live=[(t, 4.0), ("acme.tasks.v", 5.0), ("acme.tasks.b", 0.5)])
    runtimes = figures["runtimes"]
    assert [r["task"] for r in runtimes] == [t, u, "acme.tasks.b", "acme.tasks.v"]  # by count, then name
    assert runtimes[0] == {"task": t, "count": 4, "p50": pytest.approx(2.5), "p90": pytest.approx(3.7),
                           "p99": pytest.approx(3.97), "max": pytest.approx(4.0)}
    assert runtimes[1] == {"task": u, "count": 2, "p50": pytest.approx(15.0), "p90": pytest.approx(19.0),
                           "p99": pytest.approx(19.9), "max": pytest.approx(20.0)}
    assert runtimes[2] == {"task": "acme.tasks.b", "count": 1, "p50": 0.5, "p90": 0.5, "p99": 0.5, "max": 0.5}
    assert runtimes[3]["count"] == 1 and runtimes[3]["max"] == pytest.approx(5.0)
    assert all(isinstance(r["p50"], float) and isinstance(r["count"], int) for r in runtimes)

    top = reader.chart_figures(ns, apps=["app-a"], since=WINDOW, until=until, step=60, exclude=["u-left-out"],
                               live=[(t, 4.0), ("acme.tasks.v", 5.0), ("acme.tasks.b", 0.5)], top=2)
    assert [r["task"] for r in top["runtimes"]] == [t, u]

    archived_only = reader.chart_figures(ns, apps=["app-a"], since=WINDOW, until=until, step=60)["runtimes"]
    # u-left-out is counted now; equal counts: by name.
    assert [(r["task"], r["count"]) for r in archived_only] == [(t, 3), (u, 3)]
    assert archived_only[0]["p50"] == pytest.approx(2.0) and archived_only[1]["max"] == pytest.approx(900.0)

    live_only = reader.chart_figures(ns, apps=[], since=WINDOW, until=until, step=60, live=[(t, 4.0), (t, 6.0)])
    # apps=[]: the caller asks the archive for none; the live runs it passes are still summed.
    assert live_only["runtimes"] == [{"task": t, "count": 2, "p50": 5.0, "p90": pytest.approx(5.8),
                                      "p99": pytest.approx(5.98), "max": 6.0}]


def by_time(url: str) -> tuple[bool | None, set[str]]:
    """Whether the archive's every-application index is valid (None: none), and the partitions
    whose index is attached to it."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('limetask_archive_by_time')"
                           ).fetchone()
        if row is None:
            return None, set()
        return bool(row[0]), {r[0] for r in conn.execute(
            "SELECT t.relname FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
            "JOIN pg_class t ON t.oid = x.indrelid WHERE i.inhparent = 'limetask_archive_by_time'::regclass")}


def building(url: str) -> list[str]:
    """Index builds that run now in the database."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE "
            "'CREATE INDEX CONCURRENTLY%%' AND state = 'active'")]


def old_snapshot(url: str) -> psycopg.Connection[Any]:
    """A transaction holding a snapshot of the archive (a long read): concurrent index builds wait
    for it to end before they finish."""
    conn = psycopg.connect(url)
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    conn.execute(f"SELECT count(*) FROM {TABLE}")
    return conn


@pytest.fixture
def first_schema() -> Iterator[str]:
    """A database of its own at the first schema version, with tasks over three days."""
    name = f"limetask_test_up_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = archive_url(database=name)
    try:
        assert migrate(url, "0001") == "0001"
        asyncio.run(write(url, [finished(f"t-{i}", completed=f"2026-11-{10 + i % 3}T10:00:00Z") for i in range(30)],
                          migrated=True))
        assert current_revision(url) == "0001"
        yield url
    finally:
        with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


PARTITIONS = {partition_name(dt.date(2026, 11, d)) for d in (10, 11, 12)}


def test_a_new_archive_has_the_dashboards_index(archive_db: str) -> None:
    valid, _ = by_time(archive_db)
    assert valid is True


def test_the_dashboards_index_is_made_by_the_upgrade_from_the_first_schema(first_schema: str) -> None:
    """0001 -> 0002 on a database with tasks: the every-application index on each partition, and
    the newest page of a namespace read through it."""
    url = first_schema
    assert migrate(url) == head_revision() == "0002"
    valid, indexed = by_time(url)
    assert valid is True and PARTITIONS <= indexed
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            f"EXPLAIN SELECT uid FROM {TABLE} WHERE namespace = 'ns' ORDER BY completed_at DESC, uid DESC "
            "LIMIT 10").fetchall())
        assert "Index" in plan and "Sort" not in plan.split("->")[1], plan
    reader = ArchiveReader(url)
    try:
        newest = [b["metadata"]["name"] for b in reader.search("ns", limit=3).items]
        assert len(newest) == 3 and all(int(n[2:]) % 3 == 2 for n in newest), newest  # the 12th's
    finally:
        reader.close()
    asyncio.run(write(url, [finished("next-day", completed="2026-11-13T10:00:00Z")]))  # a partition made after
    assert by_time(url) == (True, PARTITIONS | {partition_name(dt.date(2026, 11, 13))})


def test_the_upgrade_stopped_halfway_resumes_where_it_stopped(first_schema: str) -> None:
    """A long read holds a partition's concurrent index build back, and the migration is stopped
    (SIGTERM, as the operator's time limit does): no build is left running, writes go on, and the
    next run finishes the job, keeping what was done."""
    import os
    import signal

    url = first_schema
    env = {**os.environ, "LIMETASK_ARCHIVE_URL": url}
    env.pop("LIMETASK_ARCHIVE_URL_FILE", None)
    reading = old_snapshot(url)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "limetask_operator.migrate"], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: building(url), timeout=60, message="a concurrent index build")
        asyncio.run(write(url, [finished("written-meanwhile", completed="2026-11-10T11:00:00Z")], migrated=True))
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        reading.close()
    assert proc.returncode == 1 and "resumes" in out, out
    assert "index limetask_archive_by_time: partition limetask_archive_p20261110 (1 of 3)" in out, out
    assert building(url) == []
    assert current_revision(url) == "0001"
    valid, indexed = by_time(url)
    assert valid is False and indexed < PARTITIONS
    assert migrate(url) == "0002"
    assert by_time(url) == (True, PARTITIONS)
    assert count(url, "ns") == 31


def test_an_index_made_by_the_former_single_statement_is_kept(first_schema: str) -> None:
    """An archive whose index the former migration made whole (at 0001 or stamped 0002): the upgrade
    finds nothing left to do."""
    url = first_schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE INDEX limetask_archive_by_time ON {TABLE} (namespace, completed_at DESC, uid DESC)")
        before = {r[0] for r in conn.execute("SELECT indexrelid::regclass::text FROM pg_index")}
    assert migrate(url) == "0002"
    with psycopg.connect(url, autocommit=True) as conn:
        assert {r[0] for r in conn.execute("SELECT indexrelid::regclass::text FROM pg_index")} == before
    assert by_time(url) == (True, PARTITIONS)


def test_a_migration_over_the_operators_time_limit_is_stopped_and_tried_again(first_schema: str) -> None:
    from limetask_operator.archive import ArchiveDown

    url = first_schema

    async def migrating(a: Any) -> None:
        try:
            await a._migrate()
        finally:
            await a.stop()

    limited = archiver(url, archive_migrate_timeout_seconds=3)
    reading = old_snapshot(url)
    try:
        with pytest.raises(ArchiveDown, match="took over 3 s.*resumes"):
            asyncio.run(migrating(limited))
        assert building(url) == [] and not limited.migrated
    finally:
        reading.close()
    unlimited = archiver(url)
    asyncio.run(migrating(unlimited))
    assert unlimited.migrated and current_revision(url) == "0002"


# -- reads under load, timeouts and outages ----------------------------------------------------

def limits(**dashboard: Any) -> ReadLimits:
    """The default limits with the dashboard's changed (a test's own pools, short waits)."""
    d = ReadLimits()
    return dataclasses.replace(d, dashboard=dataclasses.replace(d.dashboard, **dashboard), probe_every=0.2)


def sleeping(url: str, application: str) -> int:
    """How many pg_sleep statements of an application_name run now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
                           "AND query LIKE 'SELECT pg_sleep%%'", (application,)).fetchone()
        return int(row[0]) if row else 0


def test_the_results_api_answers_while_the_dashboards_reads_are_all_busy(archive_db: str) -> None:
    """Slow dashboard queries hold every dashboard connection: `get` and `list` of an archived
    task still answer, on connections of their own; one more dashboard read is refused as busy."""
    ns = own_namespace()
    asyncio.run(write(archive_db, [finished("kept", namespace=ns)]))
    reader = ArchiveReader(archive_db, limits(connections=2, timeout=120, wait=0.5))
    dashboard = reader.limits.dashboard
    outcomes: list[BaseException | None] = []

    def slow() -> None:
        try:
            reader._fetch(dashboard, "SELECT pg_sleep(60)", ())  # a dashboard scan of a month, say
            outcomes.append(None)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            outcomes.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(dashboard.connections)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: sleeping(archive_db, "limetask-web-dashboard") == dashboard.connections, timeout=30,
                   message="every dashboard connection busy")
        with pytest.raises(ArchiveError, match="busy"):
            reader.search(ns)
        body = reader.get(ns, "kept", "app-a")
        assert body is not None and body["metadata"]["name"] == "kept"
        assert names(reader.list(ns, "app-a")) == ["kept"]
        assert sleeping(archive_db, "limetask-web-dashboard") == dashboard.connections  # still busy meanwhile
    finally:
        with psycopg.connect(archive_db, autocommit=True) as conn:
            conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = "
                         "'limetask-web-dashboard'")
        for t in threads:
            t.join(30)
        reader.close()
    assert len(outcomes) == dashboard.connections and all(isinstance(o, ArchiveTimeout) for o in outcomes)


def test_every_read_has_a_statement_timeout(archive_db: str) -> None:
    d = ReadLimits()
    reader = ArchiveReader(archive_db, dataclasses.replace(d, results=dataclasses.replace(d.results, timeout=0.2),
                                                           dashboard=dataclasses.replace(d.dashboard, timeout=0.3)))
    try:
        for kind in (reader.limits.results, reader.limits.dashboard):
            with pytest.raises(ArchiveTimeout, match=f"within {kind.timeout:g} s"):
                reader._fetch(kind, "SELECT pg_sleep(30)", ())
        assert reader.get(own_namespace(), "x", "app-a") is None  # the connection serves the next read
        assert reader.state == "up"
    finally:
        reader.close()


def test_the_limits_come_from_the_environment() -> None:
    got = ReadLimits.from_env({"LIMETASK_ARCHIVE_RESULTS_TIMEOUT_SECONDS": "2.5",
                               "LIMETASK_ARCHIVE_DASHBOARD_CONNECTIONS": "3",
                               "LIMETASK_ARCHIVE_EXACT_COUNT_LIMIT": "5000"})
    assert (got.results.timeout, got.results.connections) == (2.5, ReadLimits().results.connections)
    assert (got.dashboard.timeout, got.dashboard.connections, got.exact_count_limit) == (
        ReadLimits().dashboard.timeout, 3, 5000)
    assert ReadLimits.from_env({}) == ReadLimits()
    for var, raw in (("LIMETASK_ARCHIVE_RESULTS_TIMEOUT_SECONDS", "soon"),
                     ("LIMETASK_ARCHIVE_DASHBOARD_CONNECTIONS", "0"),
                     ("LIMETASK_ARCHIVE_DASHBOARD_TIMEOUT_SECONDS", "-1")):
        with pytest.raises(InvalidTaskError, match=var):
            ReadLimits.from_env({var: raw})


def test_counts_beyond_the_limit_are_the_planners_estimates_and_say_so(archive_db: str) -> None:
    ns = own_namespace()
    views = [finished(f"e{i}", namespace=ns, state="FAILURE" if i % 4 == 0 else "SUCCESS",
                      completed=at(i * 60, base=dt.datetime(2021, 3, 1, tzinfo=dt.timezone.utc))) for i in range(400)]
    asyncio.run(write(archive_db, views))
    with psycopg.connect(archive_db, autocommit=True) as conn:
        conn.execute(f"ANALYZE {partition_name(dt.date(2021, 3, 1))}")
    exact_reader = ArchiveReader(archive_db, dataclasses.replace(ReadLimits(), exact_count_limit=10_000))
    estimating = ArchiveReader(archive_db, dataclasses.replace(ReadLimits(), exact_count_limit=100))
    try:
        exact = exact_reader.count_states(ns)
        assert exact == {"SUCCESS": 300, "FAILURE": 100} and exact.estimated is False
        estimate = estimating.count_states(ns)
        assert estimate.estimated is True
        assert set(estimate) == {"SUCCESS", "FAILURE"}
        assert 150 <= estimate["SUCCESS"] <= 600 and 50 <= estimate["FAILURE"] <= 200, estimate
        assert estimating.count_states(ns, apps=[]) == {}  # no application: nothing, counted
        small = estimating.count_states(ns, reason="NoSuchReason")  # few rows: counted exactly
        assert small == {} and small.estimated is False
    finally:
        exact_reader.close()
        estimating.close()


def test_an_archive_known_down_fails_reads_at_once_and_is_found_again(archive_db: str) -> None:
    """Reads through a proxy that is switched off: the first one finds the archive down; the next
    ones fail without asking it (no connection is tried); once it answers, reads do again."""
    from tcpproxy import TcpProxy

    ns = own_namespace()
    asyncio.run(write(archive_db, [finished("back", namespace=ns)]))
    proxy = TcpProxy(ARCHIVE_PORT, ARCHIVE_HOST)
    reader = ArchiveReader(archive_url(port=proxy.port, database=archive_db.rsplit("/", 1)[1]), limits())
    try:
        assert reader.get(ns, "back", "app-a") is not None
        assert reader.state == "up"
        proxy.disable()
        with pytest.raises(ArchiveError, match="cannot be reached"):
            reader.get(ns, "back", "app-a")
        assert reader.state == "down"
        tried: list[str] = []
        for name, pool in reader.pools.items():
            pool.connection = lambda *a, name=name, **k: tried.append(name)  # type: ignore[method-assign]
        for read in (lambda: reader.get(ns, "back", "app-a"), lambda: reader.search(ns),
                     lambda: reader.count_states(ns), lambda: reader.list(ns, "app-a")):
            with pytest.raises(ArchiveError, match="cannot be reached"):
                read()
        assert tried == []
    finally:
        proxy.enable()
    try:
        wait_until(lambda: reader.state == "up", timeout=30, message="the probe to find the archive again")
        del reader.pools["results"].connection, reader.pools["dashboard"].connection
        body = reader.get(ns, "back", "app-a")
        assert body is not None and body["metadata"]["name"] == "back"
    finally:
        reader.close()
        proxy.close()


def test_a_wrong_password_is_known_at_start_and_told_without_the_databases_words(
        archive_db: str, caplog: pytest.LogCaptureFixture) -> None:
    """The HTTP endpoint: /healthz stays ok and /readyz says the archive is down; an archived read is a
    503 at once whose body names neither the database's host nor its user; the log says why,
    without the password."""
    from fastapi.testclient import TestClient

    from lime_task.errors import NotFoundError
    from lime_task.server.app import create_app

    class NoLiveTasks:
        namespace = "ns"

        def get_status(self, task_id: str, app: str, archive: bool = True) -> Any:
            raise NotFoundError(f"task {task_id!r} not found")

    secret = "wrong-" + uuid.uuid4().hex[:8]
    url = f"postgresql://limetask@{ARCHIVE_HOST}:{ARCHIVE_PORT}/{archive_db.rsplit('/', 1)[1]}?password={secret}"
    reader = ArchiveReader(url, limits())
    app = create_app(client=NoLiveTasks(), tokens={"app-a": "token-a"}, imports=[],
                     archive=reader, kubernetes_auth=False)
    try:
        with caplog.at_level("WARNING", logger="limetask.archive"), TestClient(app) as http:
            wait_until(lambda: reader.state == "down", timeout=30, message="the probe at start")
            assert http.get("/healthz").json() == {"status": "ok"}
            ready = wait_until(lambda: (r := http.get("/readyz")).json()["archive"] != "unknown" and r, timeout=30)
            assert ready.status_code == 200 and ready.json()["archive"] == "unavailable", ready.text
            for path in ("/v1/apps/app-a/results/x", "/v1/apps/app-a/results", "/v1/apps/app-a/tasks/x"):
                answer = http.get(path, headers={"Authorization": "Bearer token-a"})
                assert answer.status_code == 503, (path, answer.text)
                body = answer.json()
                assert body["code"] == "ArchiveUnavailable" and "cannot be reached" in body["detail"]
                for internal in (ARCHIVE_HOST, str(ARCHIVE_PORT), "limetask", "password", secret, "FATAL"):
                    assert internal not in answer.text, (internal, answer.text)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "password authentication failed" in logged and secret not in logged
    finally:
        reader.close()


# -- partitions: made ahead without blocking reads; dropped concurrently ------------------------

def attached(url: str) -> dict[str, bool]:
    """The archive's partitions, and whether each is being detached."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {r[0]: bool(r[1]) for r in conn.execute(
            "SELECT c.relname, i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass", (TABLE,)).fetchall()}


def reading_the_archive(url: str) -> psycopg.Connection[Any]:
    """A connection in the middle of a long read of the archive (it holds its lock until closed)."""
    conn = psycopg.connect(url)
    conn.execute(f"SELECT count(*) FROM {TABLE}")
    return conn


def test_partitions_are_made_ahead_while_a_long_read_runs(archive_db: str) -> None:
    """Making the next days' partitions waits for no read (nor does it queue reads behind it)."""
    a = archiver(archive_db, archive_lock_timeout_seconds=1)
    today = dt.date(2031, 5, 10)
    reading = reading_the_archive(archive_db)

    async def go() -> list[str]:
        try:
            return await a.ensure_partitions(today)
        finally:
            await a.stop()

    try:
        made = asyncio.run(go())
    finally:
        reading.close()
    days = [today + dt.timedelta(days=i) for i in range(3)]
    assert made == [partition_name(d) for d in days]
    assert {partition_name(d) for d in days} <= set(attached(archive_db))
    assert set(days) <= a.known_days
    with psycopg.connect(archive_db, autocommit=True) as conn:  # each with the archive's indexes
        indexes = {r[0] for r in conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = "
                                              "%s::regclass", (partition_name(today),)).fetchall()}
    assert len(indexes) == 4, indexes  # primary key, by name, by application, by time


def test_a_missing_partition_is_made_in_a_transaction_of_its_own_by_the_writer(archive_db: str) -> None:
    ns = own_namespace()
    reading = reading_the_archive(archive_db)
    try:
        asyncio.run(write(archive_db, [finished("late", namespace=ns, completed="2031-06-01T10:00:00Z")]))
    finally:
        reading.close()
    assert count(archive_db, ns) == 1


def test_expired_partitions_are_detached_concurrently_then_dropped(archive_db: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A long read holds the detach back: the partition waits, detach pending (no read or write
    queues behind it), and the next round finishes and drops it."""
    from limetask_operator import archive as archive_module

    monkeypatch.setattr(archive_module, "DETACH_WAIT_SECONDS", 1)
    ns = own_namespace()
    asyncio.run(write(archive_db, [finished("old", namespace=ns, completed="2019-02-01T10:00:00Z"),
                                   finished("kept", namespace=ns, completed="2019-03-10T10:00:00Z")]))
    a = archiver(archive_db, archive_lock_timeout_seconds=1)
    old = partition_name(dt.date(2019, 2, 1))

    async def drop() -> list[str]:
        try:
            return await a.drop_expired(30, today=dt.date(2019, 3, 10))
        finally:
            await a.stop()

    reading = reading_the_archive(archive_db)
    try:
        with pytest.raises(psycopg.errors.LockNotAvailable):
            asyncio.run(drop())
        assert attached(archive_db).get(old) is True  # detach pending: new reads leave it out
        reader = ArchiveReader(archive_db)
        try:
            assert names(reader.search(ns)) == ["kept"]
        finally:
            reader.close()
    finally:
        reading.close()
    assert old in asyncio.run(drop())
    assert old not in attached(archive_db) and count(archive_db, ns) == 1
    with psycopg.connect(archive_db, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (old,)).fetchone() == (None,)


# -- a row the database refuses: the others are written ------------------------------------------

def test_a_partition_dropped_behind_the_writers_back_is_made_again(archive_db: str) -> None:
    """The writer believes a day's partition is there; someone dropped it: the batch is written."""
    ns = own_namespace()
    day = dt.date(2031, 7, 1)

    async def go() -> list[Any]:
        a = archiver(archive_db)
        try:
            await a._write([row_of(v.namespace, v.name, v.uid, v.created, v.spec, v.status)
                            for v in [finished("first", namespace=ns, completed=f"{day}T10:00:00Z")]])
            assert day in a.known_days
            with psycopg.connect(archive_db, autocommit=True) as conn:
                conn.execute(f"DROP TABLE {partition_name(day)}")
            views = [finished(f"t{i}", namespace=ns, completed=f"{day}T1{i}:00:00Z") for i in range(5)]
            return await a._write([row_of(v.namespace, v.name, v.uid, v.created, v.spec, v.status) for v in views])
        finally:
            await a.stop()

    assert asyncio.run(go()) == []
    assert count(archive_db, ns) == 5


def test_a_row_the_database_refuses_does_not_hold_back_the_others(archive_db: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """One row of a batch breaks a rule of the database (here a CHECK a DBA added): every other row
    is written, and the refused task is logged by name, counted, and left to the cluster's retention."""
    from prometheus_client import REGISTRY

    def refused_total() -> float:
        return REGISTRY.get_sample_value("limetask_archive_refused_total") or 0.0

    ns = own_namespace()
    day = dt.date(2031, 8, 1)
    asyncio.run(write(archive_db, [finished("before", namespace=ns, completed=f"{day}T01:00:00Z")]))
    with psycopg.connect(archive_db, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {partition_name(day)} ADD CONSTRAINT no_bad_names CHECK (name NOT LIKE 'bad%%')")
    views = [finished(f"good-{i}", namespace=ns, completed=f"{day}T{10 + i % 10}:00:00Z") for i in range(40)]
    views.insert(17, finished("bad-one", namespace=ns, completed=f"{day}T12:00:00Z"))
    refused_before = refused_total()

    async def go() -> Any:
        a = archiver(archive_db, archive_batch_size=500, retention_seconds=3600)
        try:
            for v in views:
                a.on_settled(v)
            a.start()
            for _ in range(600):
                if not a.pending:
                    break
                await asyncio.sleep(0.05)
        finally:
            await a.stop()
        return a

    with caplog.at_level("WARNING", logger="limetask.operator.archive"):
        a = asyncio.run(go())
    assert count(archive_db, ns) == 41  # "before" and the 40 good ones
    assert a.pending == {} and a.up is True
    assert set(a.archived) == {(ns, v.name) for v in views if v.name != "bad-one"}
    assert a.refused == {(ns, "bad-one"): views[17].uid}
    assert refused_total() == refused_before + 1
    warning = [r.getMessage() for r in caplog.records if "bad-one" in r.getMessage()]
    assert len(warning) == 1 and ns in warning[0] and "no_bad_names" in warning[0], warning
    # Its LimeTask stays in the cluster and is deleted by the cluster's retention (from its completion).
    due = {key: when for when, key, _ in a.due}
    assert (ns, "bad-one") in due


# -- no secret in a log line or an output -------------------------------------------------------

def test_no_log_line_or_output_shows_a_password_given_in_the_query(archive_db: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """libpq takes the password as a query parameter too: the operator's log at leadership (the
    migration), its warnings, and the CLI's output never show it."""
    import os

    database = archive_db.rsplit("/", 1)[1]
    url = f"postgresql://limetask@{ARCHIVE_HOST}:{ARCHIVE_PORT}/{database}?sslmode=prefer&password=limetask"
    shown = "password=limetask"

    async def migrated() -> None:
        a = archiver(url)
        try:
            await a._migrate()
        finally:
            await a.stop()

    async def down() -> None:
        secret_url = f"postgresql://limetask@{ARCHIVE_HOST}:1/{database}?password=hunter2"
        a = archiver(secret_url)
        a.start()
        try:
            for _ in range(200):
                if a.failures:
                    break
                await asyncio.sleep(0.05)
        finally:
            await a.stop()

    with caplog.at_level("INFO", logger="limetask.operator.archive"):
        asyncio.run(migrated())
        asyncio.run(down())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "schema at version" in logged and "cannot be written" in logged
    assert shown not in logged and "hunter2" not in logged and "password=***" in logged

    env = {**os.environ, "LIMETASK_ARCHIVE_URL": url}
    env.pop("LIMETASK_ARCHIVE_URL_FILE", None)
    cli = subprocess.run([sys.executable, "-m", "lime_task.cli", "archive", "migrate"], capture_output=True, text=True,
                         timeout=120, env=env, cwd=REPO)
    assert cli.returncode == 0 and shown not in cli.stderr + cli.stdout and "password=***" in cli.stderr


# -- the scale bench, small: it keeps running ----------------------------------------------------

def test_the_archive_scale_bench_runs_at_a_small_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m bench --only archive30m` at 20,000 tasks instead of 30 million (its figures are
    the bench's business; here, that every step still runs and reports)."""
    from bench import archive_scale

    monkeypatch.setattr(archive_scale, "ADMIN_URL", ARCHIVE_ADMIN_URL)
    results: dict[str, Any] = {}
    out = archive_scale.run(results, rows=20_000, days=3, samples=30)
    assert results["archive30m"] is out
    assert out["generate"]["rows"] == 19_998 and out["generate"]["days"] == 3
    assert out["migration"]["version"].startswith(f"schema at version {head_revision()}")
    assert out["migration"]["insert_errors"] == 0 and out["migration"]["inserts"] > 0
    assert out["get_idle"]["n"] == out["get_dashboard_busy"]["n"] == 30
    for label in ("every_app", "one_app"):
        assert out["dashboard"][f"counts_{label}"]["total"] == out["dashboard"][f"exact_counts_{label}"]["total"] > 0
    for label in ("create_former", "create_operator", "drop_former", "drop_operator"):
        assert out["partitions"][label]["statement_ms"] > 0
    assert out["partitions"]["insert_errors"] == out["partitions"]["results_read_errors"] == 0
    assert len(archive_scale.row(results)) == 8
    with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True) as conn:  # its database is gone
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (out["conditions"]["database"],)).fetchone() == (0,)
