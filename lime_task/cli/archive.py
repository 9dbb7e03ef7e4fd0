"""The archive: migrate its schema, show its state."""

from __future__ import annotations

import json
import logging
import sys

import typer

from .failures import fail, guard
from .options import Output, OutputOpt

app = typer.Typer(no_args_is_help=True, help="The archive of finished tasks (PostgreSQL).")


def _archive_url() -> str:
    from ..archive import url_from_env

    url = url_from_env()
    if url is None:
        fail("no archive configured: set LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE "
              "(postgresql://user:password@host:port/database)")
    return url


@app.command("migrate")
@guard
def archive_migrate() -> None:
    """Bring the archive's schema to this release's version (the operator does it at start too).

    Example: LIMETASK_ARCHIVE_URL_FILE=/etc/limetask/archive-url limetask archive migrate
    """
    import os

    from ..archive import LOCK_TIMEOUT_ENV, migrate, redact

    url = _archive_url()
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    try:
        lock_timeout = float(raw) if raw else 5.0
    except ValueError:
        fail(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, not {raw[:40]!r}")
    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("limetask.archive.migrate").addHandler(progress)
    logging.getLogger("limetask.archive.migrate").setLevel(logging.INFO)
    typer.echo(f"migrating the archive at {redact(url)}", err=True)
    typer.echo(f"schema at version {migrate(url, lock_timeout=lock_timeout)}")


@app.command("status")
@guard
def archive_status(output: OutputOpt = Output.text) -> None:
    """Show the archive's schema version, tasks, size and daily partitions.

    Example: limetask archive status -o json
    """
    from ..archive import describe

    info = describe(_archive_url())
    if output is Output.json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"schema version {info['version'] or 'none (run: limetask archive migrate)'}")
    typer.echo(f"tasks {info['tasks']}  size {info['bytes'] / 2**20:.1f} MiB  partitions {len(info['partitions'])}")
    if info["partitions"]:
        typer.echo(f"oldest day {info['partitions'][0]}, newest {info['partitions'][-1]}")
