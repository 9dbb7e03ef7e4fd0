"""How the commands show tasks: a status, how long ago, where a waiting task stands."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import typer

from ..resource import DEFAULT_QUEUE
from ..status import TaskStatus
from .failures import one_line
from .options import Output


def print_status(status: TaskStatus, output: Output) -> None:
    if output is Output.json:
        typer.echo(json.dumps(status.to_dict()))
        return
    line = f"{status.id}  {status.status:8}  {status.task}  app={status.app}  attempts={status.attempts}"
    if status.queue != DEFAULT_QUEUE or status.priority:
        line += f"  queue={status.queue}" + (f"  priority={status.priority}" if status.priority else "")
    if status.archived:
        line += "  (archived)"
    typer.echo(line)
    if status.queued:
        place = f"position {status.queue_position} of {dash(status.queue_waiting)}, " \
            if status.queue_position is not None else ""
        why = f" ({why_queued(status)})" if why_queued(status) else ""
        typer.echo(f"  queued: {place}waited {age(status.queued_since)}{why}")
    if status.result is not None:
        typer.echo(f"  result: {json.dumps(status.result)}")
    if status.error is not None:
        typer.echo(f"  error:  {status.error}")
    memories = [f"attempt {h.get('attempt')} {h['memory']} ({h.get('outcome')})" for h in status.history
                if isinstance(h, dict) and h.get("memory")]
    if memories:
        # A task with memory_on_oom: the memory each attempt that ended had.
        typer.echo(f"  memory: {', '.join(memories)}")


def age(since: Any, now: dt.datetime | None = None) -> str:
    """How long ago, as kubectl says it (45s, 5m3s, 2h5m, 3d4h); "-" for no time."""
    if since is None:
        return "-"
    seconds = max(0, int(((now or dt.datetime.now(dt.timezone.utc)) - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s" if seconds < 600 else f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def dash(value: Any) -> str:
    return "-" if value is None else str(value)


def why_queued(s: TaskStatus) -> str:
    """Why a task waits, unless it merely waits its turn: the reason and its message."""
    if not s.queued or s.queue_reason == "Waiting":
        return ""
    return f"{s.queue_reason}: {one_line(s.queue_message)[:160]}" if s.queue_message else str(s.queue_reason)


def queued_note(s: TaskStatus) -> str:
    """Where a waiting task stands in its queue ("" when it does not wait)."""
    if not s.queued:
        return ""
    place = f", position {s.queue_position} of {dash(s.queue_waiting)}" if s.queue_position is not None else ""
    why = f"; {why_queued(s)}" if why_queued(s) else ""
    return f" (queue {s.queue}{place}{why})"


def wait_for(client: Any, status: TaskStatus, timeout: float | None, output: Output) -> TaskStatus:
    started = time.monotonic()

    def progress(s: TaskStatus) -> None:
        if output is Output.text:
            typer.echo(f"  {time.monotonic() - started:7.1f}s  {s.status}{queued_note(s)}", err=True)

    return client.wait(status.id, status.app, timeout=timeout, on_change=progress)  # type: ignore[no-any-return]
