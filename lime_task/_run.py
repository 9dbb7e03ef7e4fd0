"""`run_eager`: a task run in this process, returning a `TaskStatus` like the cluster would."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from .application import app_name_of
from .eager import execute
from .registry import resolve_task
from .resource import SUCCESS
from .status import TaskError, TaskStatus
from .validation import check_arguments, check_task_name


def run_eager(name: str, app: Any, /, *args: Any, **kwargs: Any) -> TaskStatus:
    """Run a task now, in this process, with the runner's rules (like Celery's eager mode).

    Bad names and arguments raise, as `send_task` does; the task's own failure is a FAILURE
    status with its error. The application object passed is given to the task as it is.
    """
    check_task_name(name)
    resolve_task(name)
    app_name = app_name_of(app)
    check_arguments(args, kwargs)
    created = dt.datetime.now(dt.timezone.utc)
    factory = (lambda _name: app) if not isinstance(app, str) else None
    verdict = execute(name, app_name, args, kwargs, app_factory=factory)
    done = dt.datetime.now(dt.timezone.utc)
    error = None if verdict.state == SUCCESS else TaskError(**verdict.error)
    return TaskStatus(
        id=str(uuid.uuid4()), task=name, app=app_name, status=verdict.state,
        result=verdict.result, error=error, attempts=1,
        created_at=created, started_at=created, completed_at=done,
    )
