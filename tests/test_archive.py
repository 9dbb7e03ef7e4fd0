"""The archive against the real PostgreSQL: schema migrations, writes, partitions, retention, reads.

(End to end, with the operator and the local cluster: tests/test_e2e_archive.py.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest
from conftest import ARCHIVE_ADMIN_URL, REPO, archive_url

from lime_task.archive import (
    TABLE,
    ArchiveError,
    ArchiveReader,
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
             result: Any = "done", uid: str | None = None, state: str = "SUCCESS") -> Any:
    from limetask_operator.model import TaskView

    status: dict[str, Any] = {"state": state, "attempts": 1, "startedAt": "2026-11-30T09:59:59Z",
                              "completedAt": completed, "event": {"confirmed": True},
                              "conditions": [{"type": "Succeeded", "status": "True"}],
                              "history": [{"attempt": 1, "outcome": state}]}
    if state == "SUCCESS":
        status["result"] = result
    else:
        status["error"] = {"type": "ValueError", "message": "no", "reason": "TaskRaised"}
    return TaskView.from_body({
        "metadata": {"namespace": namespace, "name": name, "uid": uid or str(uuid.uuid4()),
                     "creationTimestamp": "2026-11-30T09:59:58Z", "resourceVersion": "1"},
        "spec": {"task": "acme.tasks.x", "app": app, "args": [1, {"a": None}], "kwargs": {}},
        "status": status})


def archiver(url: str, **settings: Any) -> Any:
    from limetask_operator.archive import Archiver
    from limetask_operator.settings import OperatorSettings

    return Archiver(None, OperatorSettings(**settings), url)  # type: ignore[arg-type]


async def write(url: str, views: list[Any]) -> Any:
    a = archiver(url)
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
    reader = ArchiveReader(archive_url(port=1), timeout=1)
    try:
        with pytest.raises(ArchiveError) as info:
            reader.get("ns", "x", "app")
        assert "limetask:limetask" not in str(info.value)
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
