"""The archive's table: its name, columns and daily partitions, where it is (the URL), and a
finished task as a row. The operator writes rows (operator/limetask_operator/archive.py), the
reader (`reader.py`) reads them, and the migrations (`migrations/`) make the table.

One table, `limetask_archive`, range-partitioned by day of completion (UTC): partitions are
attached ahead of their day, and retention detaches and drops whole partitions, never deletes
rows one by one; neither takes a lock that reads or writes wait for. A row is one incarnation of a
task (its LimeTask's UID); writing it again is a no-op, so a write repeated after a crash never
makes a second row. `spec` and `status` are kept as JSON text made of ASCII only: any task's
arguments and result (NUL characters and lone surrogates included, which `jsonb` refuses) are
kept exactly, and none can make a write fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .. import safejson
from ..errors import InvalidTaskError
from ..events import redact as redact  # URLs and texts without their secrets, for logs and messages

TABLE = "limetask_archive"
PARTITION_PREFIX = f"{TABLE}_p"  # + YYYYMMDD: the day (UTC) its tasks completed
PARTITION_RE = re.compile(rf"^{TABLE}_p(\d{{8}})$")
# pg_advisory_lock keys: migrations, and partition upkeep (creating and dropping partitions).
MIGRATION_LOCK = 0x11AE7A5C
PARTITION_LOCK = 0x11AE7A5D
URL_ENV, URL_FILE_ENV = "LIMETASK_ARCHIVE_URL", "LIMETASK_ARCHIVE_URL_FILE"

COLUMNS = ("uid", "namespace", "name", "app", "task", "state", "reason", "attempts",
           "created_at", "started_at", "completed_at", "spec", "status")


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
    """Text PostgreSQL takes: no NUL, no lone surrogate (UTF-8 cannot encode it)."""
    text = str(value if value is not None else "").replace("\x00", "")[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")


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


def partition_statements(day: dt.date) -> list[str]:
    """Make the partition of one day: a table of the archive's shape, then attached. `CREATE
    TABLE ... PARTITION OF` would take an ACCESS EXCLUSIVE lock on the archive, and so wait
    for every running read while queueing every later read and write behind it; `ATTACH
    PARTITION` takes a SHARE UPDATE EXCLUSIVE lock, which neither reads nor writes conflict
    with. Attaching makes the table's copies of the archive's indexes. (Run in one
    transaction, when the day has no partition.)"""
    nxt = day + dt.timedelta(days=1)
    name = partition_name(day)
    return [f"CREATE TABLE IF NOT EXISTS {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{nxt.isoformat()} 00:00:00+00')"]


def partition_day(name: str) -> dt.date | None:
    m = PARTITION_RE.match(name)
    return dt.datetime.strptime(m.group(1), "%Y%m%d").date() if m else None


def expired_partitions(names: Iterable[str], retention_days: int, today: dt.date) -> list[str]:
    """The partitions wholly older than the retention: every task in them completed before
    the first day kept (today minus `retention_days`)."""
    first_kept = today - dt.timedelta(days=retention_days)
    return sorted(n for n in names if (day := partition_day(n)) is not None and day < first_kept)
