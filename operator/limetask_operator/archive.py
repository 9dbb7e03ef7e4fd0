"""History out of etcd: finished tasks go to the PostgreSQL archive, then their LimeTasks go.

The order, safe at any crash point:
1. a task is final and its completion event is confirmed (settled: nothing left to do);
2. it is written to the archive, in batches (a row per incarnation: written again, it is a
   no-op, so a write repeated after a crash never makes a second row);
3. only once the write has committed, and `archive_keep_seconds` after the task completed,
   its LimeTask is deleted (with a UID precondition: never a newer task of the same name).
An operator killed between 2 and 3 finds the task again when it lists, writes it again (no
second row) and deletes it. While the archive cannot be reached, settled tasks simply stay in
etcd: nothing is deleted, `limetask_archive_up` is 0, `limetask_archive_pending` counts them,
and a warning is logged (then once a minute) until the archive answers again.

Retention drops whole daily partitions (lime_task.archive), never rows one by one. The schema
is migrated at start, in a process of its own (Alembic and SQLAlchemy stay out of the
operator's memory).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import logging
import os
import sys
import time
from typing import Any

from lime_task.archive import (
    COLUMNS,
    PARTITION_LOCK,
    PARTITION_RE,
    TABLE,
    URL_ENV,
    Row,
    expired_partitions,
    partition_sql,
    redact,
    row_of,
)

from . import metrics
from .kube import ApiError, Kube, task_path
from .model import TaskView
from .settings import OperatorSettings

LOG = logging.getLogger("limetask.operator.archive")
Key = tuple[str, str]
INSERT = (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
          "ON CONFLICT DO NOTHING")
# Rows held in memory while they wait (an outage, a first listing of a large history); past
# this, a task is only remembered by name and read again from the API when its turn comes.
MAX_HELD_ROWS = 2000
WARN_EVERY_SECONDS = 60.0
PROGRESS_EVERY_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Pending:
    uid: str
    completed_at: str
    row: Row | None  # None: not held (see MAX_HELD_ROWS); read again from the API


class Archiver:
    def __init__(self, kube: Kube, settings: OperatorSettings, url: str) -> None:
        self.kube = kube
        self.settings = settings
        self.url = url
        self.pool: Any = None
        self.pending: dict[Key, Pending] = {}
        self.held = 0
        # Archived, awaiting deletion from etcd: a heap of (due, key, uid), and key -> uid.
        self.due: list[tuple[float, Key, str]] = []
        self.archived: dict[Key, str] = {}
        self.wake = asyncio.Event()
        self.opening = asyncio.Lock()
        self.tasks: list[asyncio.Task[None]] = []
        self.migrated = False
        self.up: bool | None = None
        self.failures = 0
        self.last_warning = -1e9
        self.last_progress = time.monotonic()
        self.known_days: set[dt.date] = set()
        self.written = 0
        self.m = metrics.archive_metrics()

    # -- what the caches tell -------------------------------------------------------------
    def settled(self, task: TaskView) -> None:
        """A task with nothing left to do (its whole view, before the cache compacts it)."""
        if not task.trusted:
            return  # a status this operator did not write is never archived (nor deleted)
        key = (task.namespace, task.name)
        if self.archived.get(key) == task.uid:
            return
        known = self.pending.get(key)
        if known is not None and known.uid == task.uid:
            return
        row = None
        if self.held < MAX_HELD_ROWS:
            row = row_of(task.namespace, task.name, task.uid, task.created, task.spec, task.status)
            self.held += 1
        if known is not None and known.row is not None:
            self.held -= 1
        self.pending[key] = Pending(task.uid, str(task.status.get("completedAt") or ""), row)
        self.m.pending.set(len(self.pending))
        self.wake.set()

    def has_archived(self, key: Key, uid: str) -> bool:
        """Whether this incarnation of the task is written to the archive and awaits deletion."""
        return self.archived.get(key) == uid

    async def holds_run(self, namespace: str, name: str, app: str, task: str) -> bool:
        """Whether the archive holds a task of this name, application and task: the scheduler
        asks before it makes a run (one query on the name's index). Raises ArchiveDown, or the
        database's error, when the archive cannot say; never waits for a pool to open."""
        pool = self.pool
        if pool is None or self.up is not True:
            raise ArchiveDown("the archive is not reachable now")
        async with pool.connection(timeout=5) as conn:
            async with conn.transaction():
                cur = await conn.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE namespace = %s AND name = %s "
                                         "AND app = %s AND task = %s)", (namespace, name, app, task))
                row = await cur.fetchone()
        return bool(row and row[0])

    def forget(self, key: Key) -> None:
        """The LimeTask is gone (deleted by us or anyone): nothing left to archive or delete."""
        known = self.pending.pop(key, None)
        if known is not None and known.row is not None:
            self.held -= 1
        self.archived.pop(key, None)
        self.m.pending.set(len(self.pending))

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._writer(), name="archive-writer"),
                      asyncio.create_task(self._deleter(), name="archive-deleter"),
                      asyncio.create_task(self._retention(), name="archive-retention")]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self._drop_pool()

    async def _drop_pool(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(timeout=1), timeout=3)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - it is being dropped anyway
                pass

    async def _open(self) -> Any:
        """The pool, opened (and the schema migrated) on first use; after a failure, a new one."""
        async with self.opening:
            return await self._open_locked()

    async def _open_locked(self) -> Any:
        if not self.migrated:
            await self._migrate()
        if self.pool is None:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                self.url, min_size=1, max_size=2, open=False, timeout=10,
                kwargs={"connect_timeout": 5, "application_name": "limetask-operator"})
            try:
                await pool.open(wait=True, timeout=10)
            except BaseException:
                await pool.close(timeout=1)
                raise
            self.pool = pool
        return self.pool

    async def _migrate(self) -> None:
        """Alembic in a process of its own (its imports stay out of this one's memory)."""
        env = {**os.environ, URL_ENV: self.url}
        env.pop("LIMETASK_ARCHIVE_URL_FILE", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "limetask_operator.migrate", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
        except asyncio.TimeoutError:
            proc.kill()
            raise ArchiveDown("migrating the archive's schema took over 120 s") from None
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise ArchiveDown(f"migrating the archive's schema failed: {text.splitlines()[-1] if text else '?'}")
        LOG.info("archive at %s: %s", redact(self.url), text.splitlines()[-1] if text else "schema ready")
        self.migrated = True

    def _batch(self) -> list[tuple[Key, Pending]]:
        size = self.settings.archive_batch_size
        out = []
        for key, item in self.pending.items():
            out.append((key, item))
            if len(out) >= size:
                break
        return out

    async def _writer(self) -> None:
        delay = 0.5
        while True:
            if not self.pending and self.up is True:
                self.wake.clear()
                await self.wake.wait()
                await asyncio.sleep(0.05)  # let a burst gather into one batch
            batch = self._batch()
            try:
                rows = await self._rows(batch)
                if rows:
                    await self._write(rows)
                else:
                    await self._open()  # at start and after an outage: whether the archive answers
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the archive is down: tasks wait in etcd
                self._down(exc, delay)
                await self._drop_pool()  # a fresh pool next time: no connection broken by the outage is reused
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            self._recorded(batch)

    async def _rows(self, batch: list[tuple[Key, Pending]]) -> list[Row]:
        """The rows of a batch; those not held are read again from the API (gone: dropped)."""
        rows = [item.row for _, item in batch if item.row is not None]

        async def read(key: Key, item: Pending) -> None:
            body = await self.kube.get(task_path(*key))
            view = TaskView.from_body(body) if body is not None else None
            if view is None or view.uid != item.uid:
                if self.pending.get(key) is item:
                    del self.pending[key]
                return
            rows.append(row_of(view.namespace, view.name, view.uid, view.created, view.spec, view.status))

        await _gather_limited([read(k, i) for k, i in batch if i.row is None], 16)
        return rows

    async def _write(self, rows: list[Row]) -> None:
        pool = await self._open()
        started = time.monotonic()
        days = {r.day for r in rows}
        async with pool.connection() as conn:
            async with conn.transaction():
                new_days = days - self.known_days
                if new_days:
                    # Partitions are made as days come (one transaction with the rows, under a
                    # lock, so that two writers never race to make the same one).
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                    for day in sorted(new_days):
                        await conn.execute(partition_sql(day))
                async with conn.cursor() as cur:
                    await cur.executemany(INSERT, [r.values() for r in rows])
        self.known_days |= days
        self.m.batch.observe(time.monotonic() - started)
        self.m.written.inc(len(rows))
        self.written += len(rows)

    def _recorded(self, batch: list[tuple[Key, Pending]]) -> None:
        """The batch is in the archive: its LimeTasks may go once they have been kept long enough."""
        if self.up is not True:
            if self.up is False:
                LOG.warning("the archive answers again; %d finished task(s) wait to be archived", len(self.pending))
            self.up, self.failures = True, 0
            self.m.up.set(1)
        now_wall, now = time.time(), asyncio.get_running_loop().time()
        for key, item in batch:
            if self.pending.get(key) is not item:
                continue  # replaced meanwhile (a newer incarnation): it is archived in its turn
            del self.pending[key]
            if item.row is not None:
                self.held -= 1
            completed = _epoch(item.completed_at)
            due = now + max(0.0, (completed or now_wall) + self.settings.archive_keep_seconds - now_wall)
            self.archived[key] = item.uid
            heapq.heappush(self.due, (due, key, item.uid))
        self.m.pending.set(len(self.pending))
        if self.pending and time.monotonic() - self.last_progress >= PROGRESS_EVERY_SECONDS:
            # A long backlog (a first start over a large history, the end of an outage): progress.
            self.last_progress = time.monotonic()
            LOG.info("archive: %d task(s) written since start; %d finished task(s) wait", self.written,
                     len(self.pending))
        self.wake.set()

    def _down(self, exc: BaseException, delay: float) -> None:
        self.failures += 1
        self.up = False
        self.migrated = self.migrated and not isinstance(exc, ArchiveDown)
        self.m.up.set(0)
        self.m.failures.inc()
        now = time.monotonic()
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if now - self.last_warning >= WARN_EVERY_SECONDS or self.failures == 1:
            self.last_warning = now
            LOG.warning("the archive at %s cannot be written (%s: %s): %d finished task(s) wait in the cluster, "
                        "none is deleted; trying again in %.1fs", redact(self.url), type(exc).__name__,
                        redact(first), len(self.pending), delay)

    async def _deleter(self) -> None:
        """Delete archived LimeTasks once they are due (their keep time after completion)."""
        while True:
            loop = asyncio.get_running_loop()
            due: list[tuple[Key, str]] = []
            while self.due and self.due[0][0] <= loop.time():
                _, key, uid = heapq.heappop(self.due)
                if self.archived.get(key) == uid:
                    due.append((key, uid))
            if due:
                await _gather_limited([self._delete(k, u) for k, u in due], 16)
            wait = self.due[0][0] - loop.time() if self.due else 1.0
            await asyncio.sleep(min(max(wait, 0.05), 1.0))

    async def _delete(self, key: Key, uid: str) -> None:
        try:
            await self.kube.delete(task_path(*key), uid=uid)
        except ApiError as exc:
            LOG.warning("deleting the archived task %s/%s failed: %s; trying again in 10 s", *key, exc)
            heapq.heappush(self.due, (asyncio.get_running_loop().time() + 10, key, uid))
            return
        self.m.deleted.inc()
        if self.archived.get(key) == uid:
            del self.archived[key]

    async def _retention(self) -> None:
        """Drop the daily partitions older than the retention, hourly (and soon after start)."""
        days = self.settings.archive_retention_days
        if not days:
            return
        await asyncio.sleep(5)
        while True:
            try:
                await self.drop_expired(days)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again within the hour
                await self._drop_pool()
                LOG.warning("archive retention: %s: %s", type(exc).__name__, redact(str(exc).splitlines()[0]
                                                                                     if str(exc) else ""))
            await asyncio.sleep(3600)

    async def drop_expired(self, retention_days: int, today: dt.date | None = None) -> list[str]:
        """Drop the partitions wholly older than the retention; their names."""
        pool = await self._open()
        today = today or dt.datetime.now(dt.timezone.utc).date()
        async with pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                cur = await conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass", (TABLE,))
                names = [r[0] for r in await cur.fetchall()]
                expired = expired_partitions(names, retention_days, today)
                for name in expired:
                    assert PARTITION_RE.match(name)
                    await conn.execute(f"DROP TABLE IF EXISTS {name}")
        if expired:
            self.known_days -= {dt.datetime.strptime(PARTITION_RE.match(n).group(1), "%Y%m%d").date()  # type: ignore[union-attr]
                                for n in expired}
            self.m.partitions_dropped.inc(len(expired))
            LOG.info("archive retention: dropped %d partition(s) older than %d days: %s", len(expired),
                     retention_days, ", ".join(expired))
        return expired


class ArchiveDown(Exception):
    """The archive's schema could not be made ready."""


def _epoch(stamp: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def _gather_limited(coros: list[Any], limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(c: Any) -> None:
        async with semaphore:
            await c

    await asyncio.gather(*(one(c) for c in coros))
