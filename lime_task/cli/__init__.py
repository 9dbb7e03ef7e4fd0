"""`limetask`: the command line, a module per command group.

    app.py          the `limetask` command: every group registered, in the order --help lists them
    tasks.py        send, status, wait, list, cancel, run-local
    queues.py       queues
    events.py       events (the broker's completion events)
    operator.py     operator (the `operator` extra)
    web.py          web: the HTTP endpoint (the `web` extra)
    schedules.py    schedules render, apply, list, runs
    archive.py      archive migrate, status
    generate.py     generate tasks, scheduled-tasks
    dev.py          dev: a solution's own tasks on the local cluster
    options.py      what many commands take (the cluster client, common options, JSON arguments)
    output.py       how they show tasks
    failures.py     how they fail: one line, a documented exit code

`main` is the console script (`limetask = lime_task.cli:main`); typer is imported only when it runs.
"""

from __future__ import annotations

import sys


def main() -> int:
    from .app import app

    try:
        app()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
