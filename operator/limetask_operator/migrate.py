"""`python -m limetask_operator.migrate`: bring the archive's schema to this release's version.

The URL comes from LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE. The operator runs this
in a process of its own at start; `limetask archive migrate` does the same by hand.
"""

from __future__ import annotations

import sys


def main() -> int:
    from lime_task.archive import head_revision, migrate, redact, url_from_env
    from lime_task.errors import LimeTaskError

    try:
        url = url_from_env()
    except LimeTaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if url is None:
        print("error: no archive configured: set LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE", file=sys.stderr)
        return 2
    try:
        version = migrate(url)
    except Exception as exc:  # noqa: BLE001 - one line for the operator's log
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {type(exc).__name__}: {redact(first)}", file=sys.stderr)
        return 1
    print(f"schema at version {version} (newest known: {head_revision()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
