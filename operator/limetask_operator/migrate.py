"""`python -m limetask_operator.migrate`: bring the archive's schema to this release's version.

The URL comes from LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE, the longest wait for a
lock from LIMETASK_ARCHIVE_LOCK_TIMEOUT_SECONDS (5). The operator runs this in a process of its
own at start, and logs each line it prints: the progress of a long migration, then the version.
`limetask archive migrate` does the same by hand. SIGTERM stops it cleanly: the statement that
runs is cancelled, and the next run resumes where this one stopped.
"""

from __future__ import annotations

import logging
import signal
import sys


def main() -> int:
    from lime_task.archive import LOCK_TIMEOUT_ENV, head_revision, migrate, redact, url_from_env
    from lime_task.errors import LimeTaskError

    # psycopg cancels the running statement on KeyboardInterrupt before it lets it through.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        url = url_from_env()
        lock_timeout = _seconds(LOCK_TIMEOUT_ENV)
    except LimeTaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if url is None:
        print("error: no archive configured: set LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE", file=sys.stderr)
        return 2
    progress = logging.StreamHandler(sys.stdout)
    progress.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("limetask.archive.migrate").addHandler(progress)
    logging.getLogger("limetask.archive.migrate").setLevel(logging.INFO)
    try:
        version = migrate(url, lock_timeout=lock_timeout)
    except KeyboardInterrupt:
        print(STOPPED, file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the operator's log
        if _interrupted(exc):  # what cleaning up after the interruption ran into
            print(STOPPED, file=sys.stderr)
            return 1
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {type(exc).__name__}: {redact(first)}", file=sys.stderr)
        return 1
    print(f"schema at version {version} (newest known: {head_revision()})")
    return 0


STOPPED = "error: stopped; the next run resumes where this one stopped"


def _interrupted(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False


def _seconds(var: str, default: float = 5.0) -> float:
    import os

    from lime_task.errors import InvalidTaskError

    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidTaskError(f"{var} must be a number of seconds, not {raw[:40]!r}") from None
    if not 0 < value <= 3600:
        raise InvalidTaskError(f"{var} must be above 0 and at most 3600, not {raw[:40]!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
