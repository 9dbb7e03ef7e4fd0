"""Alembic's environment for the archive: online migrations only, one at a time.

The URL and the lock timeout come from `lime_task.archive.revisions.migrate` (config.attributes). A
session-level advisory lock makes concurrent runs (two operator replicas starting) take turns.
A run waiting its turn asks for the lock once a second rather than blocking on it: a blocked
statement would hold a snapshot that the other run's concurrent index builds wait for.
Every statement of a migration waits at most the lock timeout for a lock (a long read of the
archive then makes the migration fail, to be run again, rather than queue every read and
write behind it); the migrations that need more say so.
"""

from __future__ import annotations

import logging
import time

from alembic import context
from sqlalchemy import create_engine, text

from lime_task.archive.schema import MIGRATION_LOCK

LOG = logging.getLogger("limetask.archive.migrate")
config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no archive URL given to the migrations")
lock_timeout_ms = max(1, int(float(config.attributes.get("lock_timeout", 5.0)) * 1000))
engine = create_engine(url, connect_args={"connect_timeout": 10}, pool_pre_ping=False)
with engine.connect() as connection:
    waiting = False
    while not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK}).scalar():
        connection.commit()
        if not waiting:
            LOG.info("another process migrates the archive: waiting for it")
            waiting = True
        time.sleep(1)
    connection.execute(text(f"SET lock_timeout = {lock_timeout_ms}"))
    connection.commit()
    try:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if not connection.invalidated:  # else the session is gone, and its lock with it
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
engine.dispose()
