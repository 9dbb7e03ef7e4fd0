"""The dashboard's every-application views: archived tasks of a namespace, newest first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A platform token's list pages through every application's tasks by completion time; without
    # this index each page sorts the whole window (limetask_archive_by_app serves one application).
    op.execute("CREATE INDEX IF NOT EXISTS limetask_archive_by_time "
               "ON limetask_archive (namespace, completed_at DESC, uid DESC)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS limetask_archive_by_time")
