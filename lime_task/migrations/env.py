"""Alembic's environment for the archive: online migrations only, one at a time.

The URL comes from `lime_task.archive.migrate` (config.attributes["url"]). A session-level
advisory lock makes concurrent runs (two operator replicas starting) take turns.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from lime_task.archive import MIGRATION_LOCK

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no archive URL given to the migrations")
engine = create_engine(url, connect_args={"connect_timeout": 10}, pool_pre_ping=False)
with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()
    try:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
engine.dispose()
