"""Alembic migrations of the task archive (run by lime_task.archive.revisions.migrate)."""
