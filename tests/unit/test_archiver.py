"""The archive writer's bookkeeping, without a database (the writes themselves: tests/test_archive.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from limetask_operator import archive as archive_module
from limetask_operator.archive import Archiver
from limetask_operator.caches import Caches
from limetask_operator.model import TaskView
from limetask_operator.settings import OperatorSettings


def body(name: str, uid: str = "u-1", state: str | None = "SUCCESS", confirmed: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if state:
        status = {"state": state, "result": "r", "completedAt": "2020-01-01T10:00:00Z",
                  "event": {"confirmed": confirmed}}
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": "1",
                         "creationTimestamp": "2026-11-30T09:00:00Z"},
            "spec": {"task": "a.b", "app": "app", "args": [1]}, "status": status}


def archiver() -> Archiver:
    return Archiver(None, OperatorSettings(), "postgresql://u:p@127.0.0.1:1/db")  # type: ignore[arg-type]


def test_the_caches_hand_over_each_settled_task_whole_before_compacting_it() -> None:
    caches, seen = Caches(), []
    caches.on_settled = seen.append
    caches.put_task(body("running", state="STARTED"))
    caches.put_task(body("unconfirmed", confirmed=False))
    caches.put_task(body("done"))
    assert [v.name for v in seen] == ["done"]
    assert seen[0].spec["args"] == [1] and seen[0].status["result"] == "r"  # the whole task
    assert caches.tasks[("ns", "done")].spec == {}  # the cache keeps the compact copy only


def test_a_task_waits_once_however_often_it_is_seen() -> None:
    a = archiver()
    view = TaskView.from_body(body("t"))
    for _ in range(3):
        a.on_settled(view)
    assert list(a.pending) == [("ns", "t")] and a.held == 1
    a.on_settled(TaskView.from_body(body("t", uid="u-2")))  # a new incarnation replaces the old one
    assert a.pending[("ns", "t")].uid == "u-2" and a.held == 1
    a.forget(("ns", "t"))
    assert a.pending == {} and a.held == 0


def test_a_status_someone_else_wrote_is_never_archived() -> None:
    a = archiver()
    a.on_settled(dataclasses.replace(TaskView.from_body(body("forged")), trusted=False))
    assert a.pending == {}


def test_past_the_rows_held_a_task_is_remembered_by_name(monkeypatch: Any) -> None:
    monkeypatch.setattr(archive_module, "MAX_HELD_ROWS", 2)
    a = archiver()
    for i in range(5):
        a.on_settled(TaskView.from_body(body(f"t{i}", uid=f"u{i}")))
    assert a.held == 2 and [p.row is not None for p in a.pending.values()] == [True, True, False, False, False]


def test_archived_tasks_are_due_for_deletion_after_their_keep_time() -> None:
    import asyncio

    async def go() -> list[Any]:
        a = Archiver(None, OperatorSettings(archive_keep_seconds=600), "postgresql://u:p@127.0.0.1:1/db")  # type: ignore[arg-type]
        a.on_settled(TaskView.from_body(body("old")))  # completed long ago: due at once
        fresh = body("fresh", uid="u-9")
        import datetime as dt

        fresh["status"]["completedAt"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        a.on_settled(TaskView.from_body(fresh))
        a._recorded(list(a.pending.items()))
        now = asyncio.get_running_loop().time()
        return [(key[1], round(due - now)) for due, key, _ in sorted(a.due)]

    due = asyncio.run(go())
    assert due[0] == ("old", 0) and due[1][0] == "fresh" and 590 <= due[1][1] <= 600


def test_a_refused_task_is_not_taken_again_and_leaves_with_the_clusters_retention() -> None:
    import asyncio

    async def go() -> Archiver:
        a = Archiver(None, OperatorSettings(retention_seconds=3600), "postgresql://u:p@127.0.0.1:1/db")  # type: ignore[arg-type]
        a.on_settled(TaskView.from_body(body("bad")))
        a.on_settled(TaskView.from_body(body("good", uid="u-2")))
        batch = list(a.pending.items())
        row = batch[0][1].row
        assert row is not None
        a._refused(batch, [(row, 'new row violates check constraint "no_bad"')])
        a._recorded([b for b in batch if b[0] in a.pending])
        return a

    a = asyncio.run(go())
    assert a.pending == {} and a.held == 0
    assert a.refused == {("ns", "bad"): "u-1"} and a.archived == {("ns", "good"): "u-2"}
    assert {key for _, key, _ in a.due} == {("ns", "bad"), ("ns", "good")}  # completed in 2020: both due
    a.on_settled(TaskView.from_body(body("bad")))  # seen again (a resync): not taken again
    assert a.pending == {}
    a.on_settled(TaskView.from_body(body("bad", uid="u-3")))  # a new task of the same name is
    assert a.pending[("ns", "bad")].uid == "u-3"
    a.forget(("ns", "bad"))
    assert a.refused == {} and a.pending == {}


def test_a_refused_task_is_kept_when_the_cluster_keeps_finished_tasks() -> None:
    import asyncio

    async def go() -> Archiver:
        a = Archiver(None, OperatorSettings(retention_seconds=0), "postgresql://u:p@127.0.0.1:1/db")  # type: ignore[arg-type]
        a.on_settled(TaskView.from_body(body("bad")))
        batch = list(a.pending.items())
        row = batch[0][1].row
        assert row is not None
        a._refused(batch, [(row, "refused")])
        return a

    a = asyncio.run(go())
    assert a.refused == {("ns", "bad"): "u-1"} and a.due == []


def test_a_partition_is_attached_never_made_as_part_of_the_archive() -> None:
    """CREATE TABLE ... PARTITION OF would lock the whole archive; LIKE + ATTACH locks no read or write."""
    import datetime as dt

    from lime_task.archive import partition_day, partition_statements

    statements = partition_statements(dt.date(2026, 12, 31))
    assert statements == [
        "CREATE TABLE IF NOT EXISTS limetask_archive_p20261231 (LIKE limetask_archive INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS)",
        "ALTER TABLE limetask_archive ATTACH PARTITION limetask_archive_p20261231 FOR VALUES FROM "
        "('2026-12-31 00:00:00+00') TO ('2027-01-01 00:00:00+00')"]
    assert partition_day("limetask_archive_p20261231") == dt.date(2026, 12, 31)
    assert partition_day("limetask_archive_pXYZ") is None and partition_day("other") is None
