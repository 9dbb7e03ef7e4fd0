"""Alembic migrations of the task archive (see lime_task.archive.migrate)."""
