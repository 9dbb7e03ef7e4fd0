"""The `limetask` command line."""

from __future__ import annotations

import sys


def main() -> int:
    from ._cli import app

    try:
        app()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
