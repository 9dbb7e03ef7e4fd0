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

A row the database refuses (a rule of its own, a day whose partition cannot be made) never
holds back the others: the batch is written again in halves until the refused rows are alone.
Such a task is not archived: it is logged by name, counted in `limetask_archive_refused_total`,
and stays in the cluster as it would without an archive, deleted `retention_seconds` after it
completed (tried again by the next operator to lead).

Daily partitions are made days ahead, hourly, with a lock timeout, so that a write never waits
to make one (it still can, in a transaction of its own, for a day that has none); retention
detaches whole partitions concurrently, then drops them, never rows one by one. The schema is
migrated at start, in a process of its own (Alembic and SQLAlchemy stay out of the operator's
memory), with no time limit unless one is set: it shows its progress in the log.
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
    LOCK_TIMEOUT_ENV,
    PARTITION_LOCK,
    PARTITION_RE,
    TABLE,
    URL_ENV,
    Row,
    expired_partitions,
    partition_day,
    partition_name,
    partition_statements,
    redact,
    row_of,
)

from . import metrics
from .kube import Kube, KubeError, task_path
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
# Partitions are made for today and this many days ahead, every MAINTENANCE_SECONDS; a round
# that could not take a lock is tried again after RETRY_MAINTENANCE_SECONDS.
PARTITIONS_AHEAD_DAYS = 2
MAINTENANCE_SECONDS = 3600.0
RETRY_MAINTENANCE_SECONDS = 60.0
# A statement of the writer that runs longer than this has hung: the batch is tried again.
WRITE_TIMEOUT_MS = 60_000
# A concurrent detach waits for every read and write of the archive older than itself, blocking
# none meanwhile: as long as the longest of them may run (the writer's statement timeout).
DETACH_WAIT_SECONDS = WRITE_TIMEOUT_MS / 1000
# Errors of the rows themselves (the database, or the driver, refuses a value): isolated by
# writing the batch in halves. Any other error is the archive's and holds every row back.
ROW_ERRORS: tuple[type[BaseException], ...] = (ValueError,)  # and psycopg's, added in _row_errors()


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
        # Tasks whose rows the database refused: key -> uid (see the module's docstring).
        self.refused: dict[Key, str] = {}
        self.written = 0
        self.m = metrics.archive_metrics()

    # -- what the caches tell -------------------------------------------------------------
    def on_settled(self, task: TaskView) -> None:
        """A task with nothing left to do (its whole view, before the cache compacts it)."""
        if not task.trusted:
            return  # a status this operator did not write is never archived (nor deleted)
        key = (task.namespace, task.name)
        if self.archived.get(key) == task.uid or self.refused.get(key) == task.uid:
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
        self.refused.pop(key, None)
        self.m.pending.set(len(self.pending))

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._writer(), name="archive-writer"),
                      asyncio.create_task(self._deleter(), name="archive-deleter"),
                      asyncio.create_task(self._maintain(), name="archive-maintenance")]

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
                self.url, min_size=1, max_size=2, open=False, timeout=10, configure=_configure_writer,
                kwargs={"connect_timeout": 5, "application_name": "limetask-operator"})
            try:
                await pool.open(wait=True, timeout=10)
            except BaseException:
                await pool.close(timeout=1)
                raise
            self.pool = pool
        return self.pool

    async def _migrate(self) -> None:
        """Alembic in a process of its own (its imports stay out of this one's memory); each
        line it prints (its progress on a large archive) is logged as it comes."""
        env = {**os.environ, URL_ENV: self.url, LOCK_TIMEOUT_ENV: str(self.settings.archive_lock_timeout_seconds)}
        env.pop("LIMETASK_ARCHIVE_URL_FILE", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "limetask_operator.migrate", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        lines: list[str] = []

        async def follow() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = redact(raw.decode(errors="replace").rstrip())
                if line:
                    lines.append(line)
                    LOG.info("archive migration: %s", line)
            await proc.wait()

        limit = self.settings.archive_migrate_timeout_seconds or None
        try:
            await asyncio.wait_for(follow(), timeout=limit)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            await _stop(proc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ArchiveDown(f"migrating the archive's schema took over {limit} s "
                              "(LIMETASK_ARCHIVE_MIGRATE_TIMEOUT_SECONDS); it resumes where it stopped") from None
        if proc.returncode != 0:
            raise ArchiveDown(f"migrating the archive's schema failed: {lines[-1] if lines else '?'}")
        LOG.info("archive at %s: %s", redact(self.url), lines[-1] if lines else "schema ready")
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
            refused: list[tuple[Row, str]] = []
            try:
                rows = await self._rows(batch)
                if rows:
                    refused = await self._write(rows)
                else:
                    await self._open()  # at start and after an outage: whether the archive answers
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the archive is down: tasks wait in etcd
                self.known_days.clear()  # a partition believed there may be gone: look again
                self._down(exc, delay)
                await self._drop_pool()  # a fresh pool next time: no connection broken by the outage is reused
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            self._refused(batch, refused)
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

    async def _write(self, rows: list[Row]) -> list[tuple[Row, str]]:
        """Write the rows; those the database refuses, each with its reason (the rest are written).

        A batch that fails for its rows is written once more with the partitions looked up
        afresh (one may have been dropped behind this writer's back), then in halves, down to
        single rows, so that a refused row holds back none of the others."""
        errors = _row_errors()
        try:
            await self._insert(rows)
            return []
        except errors:
            self.known_days.clear()
        try:
            await self._insert(rows)
            return []
        except errors as exc:
            if len(rows) == 1:
                return [(rows[0], _first_line(exc))]
        return await self._isolate(rows)

    async def _isolate(self, rows: list[Row]) -> list[tuple[Row, str]]:
        refused: list[tuple[Row, str]] = []
        half = len(rows) // 2
        for part in (rows[:half], rows[half:]):
            try:
                await self._insert(part)
            except _row_errors() as exc:
                refused += [(part[0], _first_line(exc))] if len(part) == 1 else await self._isolate(part)
        return refused

    async def _insert(self, rows: list[Row]) -> None:
        """One transaction of rows, once their days have partitions."""
        pool = await self._open()
        started = time.monotonic()
        days = {r.day for r in rows}
        if days - self.known_days:
            await self._make_partitions(days - self.known_days)
        async with pool.connection() as conn:
            async with conn.transaction():
                async with conn.cursor() as cur:
                    await cur.executemany(INSERT, [r.values() for r in rows])
        self.m.batch.observe(time.monotonic() - started)
        self.m.written.inc(len(rows))
        self.written += len(rows)

    async def _make_partitions(self, days: set[dt.date]) -> list[str]:
        """Make the partitions these days lack (in a transaction of its own, under a lock so that
        two operators never race to make the same one, and within the lock timeout); their names."""
        pool = await self._open()
        made = []
        listing = ("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                   "WHERE i.inhparent = %s::regclass")
        async with pool.connection() as conn:
            async with conn.transaction():
                present = {r[0] for r in await (await conn.execute(listing, (TABLE,))).fetchall()}
                if any(partition_name(day) not in present for day in days):  # the lock only then
                    await conn.execute(f"SET LOCAL lock_timeout = {self._lock_timeout_ms()}")
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                    present = {r[0] for r in await (await conn.execute(listing, (TABLE,))).fetchall()}
                for day in sorted(days):
                    if partition_name(day) not in present:
                        for statement in partition_statements(day):
                            await conn.execute(statement)
                        made.append(partition_name(day))
        self.known_days |= days
        if made:
            self.m.partitions_created.inc(len(made))
            LOG.info("archive: made the partition(s) %s", ", ".join(made))
        return made

    async def ensure_partitions(self, today: dt.date | None = None) -> list[str]:
        """Make today's partition and the next PARTITIONS_AHEAD_DAYS' (those missing; their names)."""
        today = today or dt.datetime.now(dt.timezone.utc).date()
        return await self._make_partitions({today + dt.timedelta(days=i) for i in range(PARTITIONS_AHEAD_DAYS + 1)})

    def _lock_timeout_ms(self) -> int:
        return max(1, int(self.settings.archive_lock_timeout_seconds * 1000))

    def _refused(self, batch: list[tuple[Key, Pending]], refused: list[tuple[Row, str]]) -> None:
        """Rows the database refused: their tasks are not archived, and stay in the cluster until
        the cluster's own retention (see the module's docstring)."""
        items = {(key, item.uid): item for key, item in batch}
        now_wall, now = time.time(), asyncio.get_running_loop().time()
        for row, reason in refused:
            key = (row.namespace, row.name)
            item = items.get((key, row.uid))
            if item is None or self.pending.get(key) is not item:
                continue
            del self.pending[key]
            if item.row is not None:
                self.held -= 1
            self.refused[key] = item.uid
            self.m.refused.inc()
            keep = self.settings.retention_seconds
            when = "it is kept" if not keep else f"it is deleted {keep} s after it completed"
            LOG.warning("the archive refused the task %s/%s (uid %s): %s; it stays in the cluster, not archived "
                        "(%s); the next operator to lead tries again", row.namespace, row.name, row.uid,
                        redact(reason), when)
            if keep:
                completed = _epoch(item.completed_at) or now_wall
                heapq.heappush(self.due, (now + max(0.0, completed + keep - now_wall), key, item.uid))
        self.m.pending.set(len(self.pending))

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
                if self.archived.get(key) == uid or self.refused.get(key) == uid:
                    due.append((key, uid))
            if due:
                await _gather_limited([self._delete(k, u) for k, u in due], 16)
            wait = self.due[0][0] - loop.time() if self.due else 1.0
            await asyncio.sleep(min(max(wait, 0.05), 1.0))

    async def _delete(self, key: Key, uid: str) -> None:
        try:
            await self.kube.delete(task_path(*key), uid=uid)
        except KubeError as exc:
            LOG.warning("deleting the archived task %s/%s failed: %s; trying again in 10 s", *key, exc)
            heapq.heappush(self.due, (asyncio.get_running_loop().time() + 10, key, uid))
            return
        self.m.deleted.inc()
        if self.archived.get(key) == uid:
            del self.archived[key]
        if self.refused.get(key) == uid:
            del self.refused[key]

    async def _maintain(self) -> None:
        """Partition upkeep, soon after start and then hourly: make the next days' partitions,
        and detach and drop those older than the retention. A round that cannot take its lock
        in time (a long read) is tried again a minute later."""
        await asyncio.sleep(5)
        while True:
            wait = MAINTENANCE_SECONDS
            for what, step in (("making partitions", self.ensure_partitions), ("retention", self._drop_expired)):
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - tried again later
                    if _is_lock_timeout(exc):
                        wait = RETRY_MAINTENANCE_SECONDS
                        LOG.info("archive %s: a lock was not free within %gs; trying again in %gs", what,
                                 self.settings.archive_lock_timeout_seconds, wait)
                        continue
                    if not isinstance(exc, ArchiveDown):
                        await self._drop_pool()
                    LOG.warning("archive %s: %s: %s", what, type(exc).__name__, redact(_first_line(exc)))
            await asyncio.sleep(wait)

    async def _drop_expired(self) -> list[str]:
        days = self.settings.archive_retention_days
        return await self.drop_expired(days) if days else []

    async def drop_expired(self, retention_days: int, today: dt.date | None = None) -> list[str]:
        """Drop the partitions wholly older than the retention; their names.

        Each is detached first, concurrently (PostgreSQL 14 and later: no lock that reads or
        writes of the archive wait for), then dropped, within the lock timeout. A concurrent
        detach waits for the reads and writes older than itself (DETACH_WAIT_SECONDS at most);
        one that timed out is left pending, and finished the next time."""
        import psycopg

        await self._open()  # migrated
        today = today or dt.datetime.now(dt.timezone.utc).date()
        dropped: list[str] = []
        async with await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5, application_name="limetask-operator") as conn:
            await conn.execute(f"SET lock_timeout = {self._lock_timeout_ms()}")
            await conn.execute("SELECT pg_advisory_lock(%s)", (PARTITION_LOCK,))
            try:
                cur = await conn.execute(
                    "SELECT c.relname, i.inhdetachpending FROM pg_class c LEFT JOIN pg_inherits i "
                    "ON i.inhrelid = c.oid AND i.inhparent = %s::regclass "
                    "WHERE c.relkind = 'r' AND c.relname LIKE %s AND pg_table_is_visible(c.oid)",
                    (TABLE, f"{TABLE}_p%"))
                found = {str(name): pending for name, pending in await cur.fetchall()}
                version = await (await conn.execute("SHOW server_version_num")).fetchone()
                concurrently = version is not None and int(version[0]) >= 140000
                for name in expired_partitions(found, retention_days, today):
                    assert PARTITION_RE.match(name)
                    pending = found[name]
                    if pending is not None:  # attached, or being detached (None: a table left detached)
                        if pending or concurrently:
                            # It waits for the reads and writes older than itself, blocking none.
                            wait = max(int(DETACH_WAIT_SECONDS * 1000), self._lock_timeout_ms())
                            await conn.execute(f"SET lock_timeout = {wait}")
                        await conn.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name} "
                                           f"{'FINALIZE' if pending else 'CONCURRENTLY' if concurrently else ''}")
                        await conn.execute(f"SET lock_timeout = {self._lock_timeout_ms()}")
                    await conn.execute(f"DROP TABLE IF EXISTS {name}")
                    dropped.append(name)
            finally:
                if not conn.closed:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (PARTITION_LOCK,))
                self.known_days -= {d for n in dropped if (d := partition_day(n)) is not None}
                if dropped:
                    self.m.partitions_dropped.inc(len(dropped))
                    LOG.info("archive retention: dropped %d partition(s) older than %d days: %s", len(dropped),
                             retention_days, ", ".join(dropped))
        return dropped


class ArchiveDown(Exception):
    """The archive's schema could not be made ready."""


def _row_errors() -> tuple[type[BaseException], ...]:
    """ROW_ERRORS and psycopg's errors of data and integrity (imported when first written)."""
    import psycopg

    return (*ROW_ERRORS, psycopg.DataError, psycopg.IntegrityError)


def _is_lock_timeout(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.errors.LockNotAvailable)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def _configure_writer(conn: Any) -> None:
    """Each writer connection: a statement that hangs (a lock never granted) ends in time."""
    await conn.execute(f"SET statement_timeout = {WRITE_TIMEOUT_MS}")
    await conn.commit()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Stop a migration: it is asked to end (it cancels its statement), then killed."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=10)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


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
