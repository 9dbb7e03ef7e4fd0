"""The archive of finished tasks: one table, partitioned by day of completion.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per task incarnation (its LimeTask's UID). The primary key holds the partition
    # key, as PostgreSQL requires; a task's completion time never changes once it is final.
    # spec and status are JSON text of ASCII only (lime_task.archive.dumps): jsonb refuses NUL.
    op.execute("""
        CREATE TABLE limetask_archive (
            uid          uuid        NOT NULL,
            namespace    text        NOT NULL,
            name         text        NOT NULL,
            app          text        NOT NULL,
            task         text        NOT NULL,
            state        text        NOT NULL,
            reason       text        NOT NULL DEFAULT '',
            attempts     integer     NOT NULL DEFAULT 0,
            created_at   timestamptz,
            started_at   timestamptz,
            completed_at timestamptz NOT NULL,
            archived_at  timestamptz NOT NULL DEFAULT now(),
            spec         text        NOT NULL,
            status       text        NOT NULL,
            PRIMARY KEY (uid, completed_at)
        ) PARTITION BY RANGE (completed_at)
    """)
    # get_status: a task by name; list_tasks: an application's tasks, newest first.
    op.execute("CREATE INDEX limetask_archive_by_name ON limetask_archive (namespace, name)")
    op.execute("CREATE INDEX limetask_archive_by_app ON limetask_archive (namespace, app, completed_at DESC, uid DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE limetask_archive")
