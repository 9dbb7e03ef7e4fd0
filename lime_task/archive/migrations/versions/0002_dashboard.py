"""The dashboard's every-application views: archived tasks of a namespace, newest first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Built a partition at a time, so that upgrading a large archive takes no lock that writes wait
for while an index is built, and runs as many short statements rather than one long one: the
index is made on the archive alone (ON ONLY: no partition is touched, and it stays invalid),
then CONCURRENTLY on each partition (outside a transaction), and each is attached; once every
partition's is, the archive's index is valid. Each step is skipped when already done (an
index that a stopped build left invalid is made again), so a migration stopped halfway
resumes where it stopped. An archive with no partition yet gets the index in one statement.
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LOG = logging.getLogger("limetask.archive.migrate")
TABLE = "limetask_archive"
INDEX = "limetask_archive_by_time"
COLUMNS = "(namespace, completed_at DESC, uid DESC)"
ROUNDS = 3  # partitions made while the migration runs get the index when made; a round more finds any other


def upgrade() -> None:
    # A platform token's list pages through every application's tasks by completion time; without
    # this index each page sorts the whole window (limetask_archive_by_app serves one application).
    with op.get_context().autocommit_block():
        conn = op.get_bind()
        if conn.execute(text("SELECT to_regclass(:i)"), {"i": INDEX}).scalar() is None:
            only = "ONLY " if partitions(conn) else ""
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {INDEX} ON {only}{TABLE} {COLUMNS}"))
        for _ in range(ROUNDS):
            missing = unindexed(conn)
            if not missing:
                break
            for n, partition in enumerate(missing, 1):
                LOG.info("index %s: partition %s (%d of %d)", INDEX, partition, n, len(missing))
                index_partition(conn, partition)
        left = unindexed(conn)
        if left:
            raise RuntimeError(f"the partitions {', '.join(left)} have no {INDEX} yet: run the migration again")


def partitions(conn: Connection) -> list[str]:
    """The archive's partitions (those being detached left out), oldest first."""
    return [str(r[0]) for r in conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:t AS regclass) AND NOT i.inhdetachpending ORDER BY c.relname"), {"t": TABLE})]


def unindexed(conn: Connection) -> list[str]:
    """Partitions with no index attached to the archive's INDEX."""
    done = {str(r[0]) for r in conn.execute(text(
        "SELECT t.relname FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
        "JOIN pg_class t ON t.oid = x.indrelid WHERE i.inhparent = CAST(:i AS regclass)"), {"i": INDEX})}
    return [p for p in partitions(conn) if p not in done]


def index_partition(conn: Connection, partition: str) -> None:
    """Build one partition's index without blocking its writes, then attach it."""
    name = f"{partition}_by_time"
    valid = conn.execute(text("SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass(:n)"),
                         {"n": name}).scalar()
    if valid is False:  # a build that was stopped: made again
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
    if valid is not True:
        # It waits for older transactions of the partition, holding no lock that they or any
        # write wait for: no lock timeout here (it would throw the built index away).
        before = conn.execute(text("SHOW lock_timeout")).scalar()
        conn.execute(text("SET lock_timeout = 0"))
        conn.execute(text(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {partition} {COLUMNS}"))
        conn.execute(text("SELECT set_config('lock_timeout', :v, false)"), {"v": before})
    conn.execute(text(f"ALTER INDEX {INDEX} ATTACH PARTITION {name}"))


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
