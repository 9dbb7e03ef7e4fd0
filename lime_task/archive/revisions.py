"""The archive's schema versions (Alembic, `migrations/`): bring a database to the newest,
and say where one stands."""

from __future__ import annotations

from typing import Any

from .schema import PARTITION_RE, TABLE, check_url


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy (Alembic) names it: the psycopg 3 dialect."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


LOCK_TIMEOUT_ENV = "LIMETASK_ARCHIVE_LOCK_TIMEOUT_SECONDS"


def migrate(url: str, revision: str = "head", lock_timeout: float = 5.0) -> str:
    """Bring the archive's schema to `revision` (Alembic); the version it is at afterwards.

    Several processes may run it at once (two operator replicas starting): an advisory lock
    makes them take turns, and the later ones find nothing left to do. A statement waits at
    most `lock_timeout` seconds for a lock (the migration then fails, and can be run again:
    each resumes where it stopped). Progress is logged to `limetask.archive.migrate`.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "lime_task.archive:migrations")
    cfg.attributes["url"] = sqlalchemy_url(check_url(url))
    cfg.attributes["lock_timeout"] = lock_timeout
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
    cfg.set_main_option("script_location", "lime_task.archive:migrations")
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
