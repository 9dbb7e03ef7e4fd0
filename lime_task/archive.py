"""The archive of finished tasks in PostgreSQL: its schema, and reading it.

The operator writes each finished task whose completion event is confirmed into the archive
(operator/limetask_operator/archive.py), then deletes its LimeTask after a short while: etcd
keeps the live tasks, PostgreSQL the month of history. The HTTP endpoint (lime_task.web) reads
archived tasks for clients, which need no database credentials (lime_task.results).

One table, `limetask_archive`, range-partitioned by day of completion (UTC): retention drops
whole partitions (`DROP TABLE`), never deletes rows one by one. A row is one incarnation of a
task (its LimeTask's UID); writing it again is a no-op, so a write repeated after a crash never
makes a second row. `spec` and `status` are kept as JSON text made of ASCII only: any task's
arguments and result (NUL characters and lone surrogates included, which `jsonb` refuses) are
kept exactly, and none can make a write fail.

The schema is versioned with Alembic (lime_task/migrations); `migrate(url)` brings a database
to the newest version, safely from several processes at once.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import safejson
from .errors import ClusterError, InvalidTaskError
from .events import redact as redact  # URLs without their password, for logs and messages

TABLE = "limetask_archive"
PARTITION_PREFIX = f"{TABLE}_p"  # + YYYYMMDD: the day (UTC) its tasks completed
PARTITION_RE = re.compile(rf"^{TABLE}_p(\d{{8}})$")
# pg_advisory_lock keys: migrations, and partition upkeep (creating and dropping partitions).
MIGRATION_LOCK = 0x11AE7A5C
PARTITION_LOCK = 0x11AE7A5D
URL_ENV, URL_FILE_ENV = "LIMETASK_ARCHIVE_URL", "LIMETASK_ARCHIVE_URL_FILE"

COLUMNS = ("uid", "namespace", "name", "app", "task", "state", "reason", "attempts",
           "created_at", "started_at", "completed_at", "spec", "status")


class ArchiveError(ClusterError):
    """The archive cannot be reached, or answered with an error."""


# -- settings -------------------------------------------------------------------------------

def check_url(url: str) -> str:
    """A PostgreSQL URL (postgresql://user:password@host:port/database?sslmode=...)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise InvalidTaskError(f"the archive URL must start with postgresql://, not {redact(url)!r}")
    if not parts.path.strip("/"):
        raise InvalidTaskError(f"the archive URL names no database: {redact(url)!r}")
    return url


def url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """LIMETASK_ARCHIVE_URL, else the content of LIMETASK_ARCHIVE_URL_FILE (a mounted Secret)."""
    env = os.environ if env is None else env
    url = env.get(URL_ENV, "").strip()
    if not url and env.get(URL_FILE_ENV):
        try:
            url = open(env[URL_FILE_ENV], encoding="utf-8").read().strip()
        except OSError as exc:
            raise InvalidTaskError(f"cannot read the archive URL file {env[URL_FILE_ENV]}: {exc.strerror}") from None
    return check_url(url) if url else None


# -- rows -----------------------------------------------------------------------------------

def dumps(value: Any) -> str:
    """JSON text of ASCII only (see the module's docstring)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)


def _stamp(value: Any) -> dt.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def _text(value: Any, limit: int = 1000) -> str:
    return str(value if value is not None else "").replace("\x00", "")[:limit]


@dataclass(frozen=True)
class Row:
    """One archived task: what a finished LimeTask holds, flattened for the table."""

    uid: str
    namespace: str
    name: str
    app: str
    task: str
    state: str
    reason: str
    attempts: int
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    completed_at: dt.datetime
    spec: str
    status: str

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)

    @property
    def day(self) -> dt.date:
        return self.completed_at.astimezone(dt.timezone.utc).date()


def row_of(namespace: str, name: str, uid: str, created: str | None, spec: Mapping[str, Any],
           status: Mapping[str, Any]) -> Row:
    """The archive row of a finished task. Its conditions are left out: they repeat the state
    and error. The completion time never changes once final, so the row's key is stable."""
    kept = {k: v for k, v in status.items() if k not in ("conditions", "observedGeneration")}
    created_at = _stamp(created)
    completed = _stamp(status.get("completedAt")) or created_at or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    error = status.get("error")
    attempts = status.get("attempts")
    return Row(uid=uid, namespace=_text(namespace, 253), name=_text(name, 253), app=_text(spec.get("app"), 253),
               task=_text(spec.get("task"), 300), state=_text(status.get("state"), 16),
               reason=_text(error.get("reason"), 100) if isinstance(error, dict) else "",
               attempts=attempts if isinstance(attempts, int) and 0 <= attempts < 2**31 else 0,
               created_at=created_at, started_at=_stamp(status.get("startedAt")), completed_at=completed,
               spec=dumps(dict(spec)), status=dumps(kept))


def body_of(namespace: str, name: str, uid: str, created_at: dt.datetime | None, spec: str,
            status: str) -> dict[str, Any]:
    """A LimeTask-shaped body of an archived row (what `TaskStatus.from_resource` reads)."""
    meta: dict[str, Any] = {"namespace": namespace, "name": name, "uid": str(uid)}
    if created_at is not None:
        meta["creationTimestamp"] = created_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": meta, "spec": safejson.loads(spec), "status": safejson.loads(status)}


def partition_name(day: dt.date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_sql(day: dt.date) -> str:
    """CREATE the partition of one day, if it is not there."""
    nxt = day + dt.timedelta(days=1)
    return (f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{nxt.isoformat()} 00:00:00+00')")


def expired_partitions(names: Iterable[str], retention_days: int, today: dt.date) -> list[str]:
    """The partitions wholly older than the retention: every task in them completed before
    the first day kept (today minus `retention_days`)."""
    first_kept = today - dt.timedelta(days=retention_days)
    out = []
    for name in names:
        m = PARTITION_RE.match(name)
        if m and dt.datetime.strptime(m.group(1), "%Y%m%d").date() < first_kept:
            out.append(name)
    return sorted(out)


# -- reading (the HTTP endpoint) ------------------------------------------------------------

SELECT = f"SELECT namespace, name, uid, created_at, spec, status, completed_at FROM {TABLE}"


@dataclass(frozen=True)
class Page:
    """Archived tasks, newest first, and the cursor of the next page (None: no more)."""

    items: list[dict[str, Any]]
    next: str | None


def encode_cursor(completed_at: dt.datetime, uid: str) -> str:
    return f"{completed_at.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}.{uid}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    stamp, _, uid = cursor.partition(".")
    frac, _, uid = uid.partition(".")
    try:
        when = dt.datetime.strptime(f"{stamp}.{frac}", "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.timezone.utc)
        if not re.fullmatch(r"[0-9a-f-]{36}", uid):
            raise ValueError(uid)
    except ValueError:
        raise InvalidTaskError(f"invalid cursor {cursor[:80]!r}") from None
    return when, uid


class ArchiveReader:
    """Reads archived tasks (a small pool of connections; psycopg)."""

    def __init__(self, url: str, max_size: int = 4, timeout: float = 5.0) -> None:
        from psycopg_pool import ConnectionPool

        self.url = check_url(url)
        self.timeout = timeout
        # No prepared statements: the dashboard's queries take arrays of names whose size varies,
        # and a generic plan of `name = ANY($1)` cannot hash them (custom plans do).
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=timeout,
                                   kwargs={"connect_timeout": max(1, int(timeout)), "autocommit": True,
                                           "prepare_threshold": None, "application_name": "limetask-web"})
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise ArchiveError(f"the archive cannot be reached: {str(exc).splitlines()[0] if str(exc) else exc!r}") \
                from exc
        except psycopg.errors.UndefinedTable as exc:
            raise ArchiveError("the archive has no schema yet (the operator creates it at start: "
                               "`limetask archive migrate`)") from exc
        except psycopg.Error as exc:
            raise ArchiveError(f"reading the archive failed: {str(exc).splitlines()[0]}") from exc

    def get(self, namespace: str, task_id: str, app: str) -> dict[str, Any] | None:
        """The newest archived incarnation of a task of `app`, or None (missing, or another
        application's: the two look the same)."""
        rows = self._fetch(f"{SELECT} WHERE namespace = %s AND name = %s AND app = %s "
                           "ORDER BY completed_at DESC LIMIT 1", (namespace, task_id, app))
        return body_of(*rows[0][:6]) if rows else None

    def archived_uids(self, namespace: str, names: Sequence[str]) -> set[str]:
        """The UIDs of the archived incarnations of these tasks (the endpoint's live pages leave
        out the tasks the archive has already)."""
        rows = self._fetch(f"SELECT uid::text FROM {TABLE} WHERE namespace = %s AND name = ANY(%s)",
                           (namespace, builtins.list(names)))
        return {str(r[0]) for r in rows}

    def ping(self) -> None:
        """Raises `ArchiveError` unless the archive answers (the endpoint's /readyz)."""
        self._fetch("SELECT 1", ())

    def list(self, namespace: str, app: str | None = None, state: str | None = None, limit: int = 100,
             cursor: str | None = None) -> Page:
        """Archived tasks of the namespace (of one application), newest first."""
        return self.search(namespace, apps=None if app is None else [app], state=state, limit=limit, cursor=cursor)

    # -- the dashboard: filters, counts and chart figures, computed in the database ---------

    @staticmethod
    def _where(namespace: str, apps: Sequence[str] | None, task: str | None, state: str | None,
               reason: str | None, since: dt.datetime | None, until: dt.datetime | None,
               exclude: Sequence[str], name_prefix: str | None = None
               ) -> tuple[builtins.list[str], builtins.list[Any]]:
        # (builtins.list: in the class's scope, `list` names the method ArchiveReader.list.)
        where: list[str] = ["namespace = %s"]
        params: list[Any] = [namespace]
        if apps is not None:
            where.append("app = ANY(%s)")
            params.append(list(apps))
        if task:
            # A prefix: a package's tasks. LIKE's own wildcards in the name are taken literally.
            where.append("task LIKE %s ESCAPE '\\'")
            params.append(task.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if name_prefix:
            # Task ids that start so: a schedule's runs ({schedule}-{tick}).
            where.append("name LIKE %s ESCAPE '\\'")
            params.append(_like_prefix(name_prefix))
        if state:
            where.append("state = %s")
            params.append(state)
        if reason:
            where.append("reason = %s")
            params.append(reason)
        if since is not None:
            where.append("completed_at >= %s")
            params.append(since)
        if until is not None:
            where.append("completed_at < %s")
            params.append(until)
        if exclude:
            # Tasks still in the cluster (archived but not yet deleted) are counted there.
            where.append("NOT (name = ANY(%s))")
            params.append(list(exclude))
        return where, params

    def search(self, namespace: str, *, apps: Sequence[str] | None = None, task: str | None = None,
               state: str | None = None, reason: str | None = None, since: dt.datetime | None = None,
               until: dt.datetime | None = None, exclude: Sequence[str] = (), limit: int = 50,
               cursor: str | None = None, name_prefix: str | None = None) -> Page:
        """Archived tasks matching the dashboard's filters (and ids that start with `name_prefix`),
        newest first, paged by cursor."""
        where, params = self._where(namespace, apps, task, state, reason, since, until, exclude, name_prefix)
        if cursor:
            when, uid = decode_cursor(cursor)
            where.append("(completed_at, uid) < (%s, %s)")
            params += [when, uid]
        rows = self._fetch(f"{SELECT} WHERE {' AND '.join(where)} ORDER BY completed_at DESC, uid DESC LIMIT %s",
                           (*params, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1][6], str(rows[-1][2])) if more and rows else None
        return Page([body_of(*r[:6]) for r in rows], nxt)

    def count_states(self, namespace: str, *, apps: Sequence[str] | None = None, task: str | None = None,
                     reason: str | None = None, since: dt.datetime | None = None,
                     until: dt.datetime | None = None, exclude: Sequence[str] = ()) -> dict[str, int]:
        """How many archived tasks match, by state."""
        where, params = self._where(namespace, apps, task, None, reason, since, until, exclude)
        rows = self._fetch(f"SELECT state, count(*) FROM {TABLE} WHERE {' AND '.join(where)} GROUP BY state",
                           tuple(params))
        return {str(state): int(n) for state, n in rows}

    def chart_figures(self, namespace: str, *, apps: Sequence[str] | None, since: dt.datetime,
                      until: dt.datetime, step: int, exclude: Sequence[str] = (),
                      live: Sequence[tuple[str, float]] = (), top: int = 15) -> dict[str, Any]:
        """Figures of the archived tasks in a window, by bucket of `step` seconds: sent, started
        and finished (by state); failures by reason; and run-time percentiles per task name,
        over the archived runs and the `live` ones (task, seconds) together."""
        where, params = self._where(namespace, apps, None, None, None, since, None, exclude)
        base = " AND ".join(where)
        bucket = "floor(extract(epoch FROM ({col} - %s)) / %s)::int"
        counts = self._fetch(
            f"SELECT kind, b, reason, count(*) FROM ("
            f" SELECT 'sent' AS kind, {bucket.format(col='created_at')} AS b, '' AS reason FROM {TABLE}"
            f"  WHERE {base} AND created_at >= %s AND created_at < %s"
            f" UNION ALL SELECT 'started', {bucket.format(col='started_at')}, '' FROM {TABLE}"
            f"  WHERE {base} AND started_at >= %s AND started_at < %s"
            f" UNION ALL SELECT state, {bucket.format(col='completed_at')}, reason FROM {TABLE}"
            f"  WHERE {base} AND completed_at < %s"
            f") x GROUP BY kind, b, reason",
            (since, step, *params, since, until, since, step, *params, since, until, since, step, *params, until))
        tasks = [t for t, _ in live]
        seconds = [float(d) for _, d in live]
        percentiles = self._fetch(
            f"SELECT task, count(*), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY d), max(d) FROM ("
            f" SELECT task, greatest(0, extract(epoch FROM (completed_at - started_at)))::float8 AS d FROM {TABLE}"
            f"  WHERE {base} AND completed_at < %s AND started_at IS NOT NULL"
            f" UNION ALL SELECT * FROM unnest(%s::text[], %s::float8[])"
            f") x GROUP BY task ORDER BY count(*) DESC, task LIMIT %s",
            (*params, until, tasks, seconds, top))
        return {
            "counts": [(str(k), int(b), str(r), int(n)) for k, b, r, n in counts],
            "runtimes": [{"task": t, "count": int(n), "p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]),
                          "max": float(m)} for t, n, p, m in percentiles],
        }


def _like_prefix(text: str) -> str:
    """A LIKE pattern for what starts with `text` (its own wildcards taken literally)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# -- migrations -----------------------------------------------------------------------------

def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy (Alembic) names it: the psycopg 3 dialect."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


def migrate(url: str, revision: str = "head") -> str:
    """Bring the archive's schema to `revision` (Alembic); the version it is at afterwards.

    Several processes may run it at once (two operator replicas starting): an advisory lock
    makes them take turns, and the later ones find nothing left to do.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "lime_task:migrations")
    cfg.attributes["url"] = sqlalchemy_url(check_url(url))
    command.upgrade(cfg, revision)
    return current_revision(url) or ""


def current_revision(url: str) -> str | None:
    """The schema version of the archive (None: never migrated)."""
    import psycopg

    with psycopg.connect(check_url(url), connect_timeout=5, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not found or not found[0]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None


def head_revision() -> str:
    """The newest schema version this release knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", "lime_task:migrations")
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def describe(url: str) -> dict[str, Any]:
    """The archive's schema version, task count, size on disk and partitions (oldest first)."""
    import psycopg

    version = current_revision(url)
    if version is None:
        return {"version": None, "tasks": 0, "bytes": 0, "partitions": []}
    with psycopg.connect(check_url(url), connect_timeout=5, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass", (TABLE,)).fetchall()]
        size = conn.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i "
                            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                            (TABLE,)).fetchone()
        count = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    days = sorted(f"{m.group(1)[:4]}-{m.group(1)[4:6]}-{m.group(1)[6:]}" for n in names if (m := PARTITION_RE.match(n)))
    return {"version": version, "tasks": int(count[0]) if count else 0, "bytes": int(size[0]) if size else 0,
            "partitions": days}
