"""The archive of finished tasks in PostgreSQL: its schema, reading it, and its migrations.

The operator writes each finished task whose completion event is confirmed into the archive
(operator/limetask_operator/archive.py), then deletes its LimeTask after a short while: etcd
keeps the live tasks, PostgreSQL the month of history. The HTTP endpoint (lime_task.server)
reads archived tasks for clients, which need no database credentials (lime_task.results).

    schema.py       the table, its partitions and rows, and the archive's URL
    reader.py       ArchiveReader: what the endpoint reads (results API, dashboard)
    revisions.py    migrate(url): the schema to the newest version (Alembic, `migrations/`),
                    safely from several processes at once, resuming where a stopped run left off

The names below are the package's API (the operator and the endpoint import them from here).
"""

from .reader import (
    ArchiveError,
    ArchiveReader,
    ArchiveTimeout,
    Page,
    ReadKind,
    ReadLimits,
    StateCounts,
    decode_cursor,
    encode_cursor,
)
from .revisions import LOCK_TIMEOUT_ENV, current_revision, describe, head_revision, migrate, sqlalchemy_url
from .schema import (
    COLUMNS,
    MIGRATION_LOCK,
    PARTITION_LOCK,
    PARTITION_PREFIX,
    PARTITION_RE,
    TABLE,
    URL_ENV,
    URL_FILE_ENV,
    Row,
    body_of,
    check_url,
    dumps,
    expired_partitions,
    partition_day,
    partition_name,
    partition_statements,
    redact,
    row_of,
    url_from_env,
)

__all__ = [
    "COLUMNS", "LOCK_TIMEOUT_ENV", "MIGRATION_LOCK", "PARTITION_LOCK", "PARTITION_PREFIX", "PARTITION_RE", "TABLE",
    "URL_ENV", "URL_FILE_ENV", "ArchiveError", "ArchiveReader", "ArchiveTimeout", "Page", "ReadKind", "ReadLimits",
    "Row", "StateCounts", "body_of", "check_url", "current_revision", "decode_cursor", "describe", "dumps",
    "encode_cursor", "expired_partitions", "head_revision", "migrate", "partition_day", "partition_name",
    "partition_statements", "redact", "row_of", "sqlalchemy_url", "url_from_env",
]
