"""Lime Task: background tasks that run as Kubernetes Jobs.

    from lime_task import task, send_task, get_status

    @task
    def get_lime_company(app, id, props):
        ...
        return "updated 50 deals"

    status = send_task('my_package.tasks.lime.get_lime_company', my_limeapp, 1001, props)
    status = get_status(status.id, 'my-app-name')

The names below (`__all__`) are what a solution imports; the schedule API is here too
(`CronTab`, `ScheduledTask`, `TaskSession`, also in lime_task.schedule). The server
(lime_task.server) and the command line (lime_task.cli) are never imported from here.
"""

from ._run import run_eager
from .application import Application
from .client import TaskClient, cancel_task, configure, get_status, list_tasks, send_task
from .errors import (
    ClusterError,
    InvalidArgumentsError,
    InvalidTaskError,
    LimeTaskError,
    NotFoundError,
    QuotaExceededError,
    SoftTimeLimitExceeded,
    TaskAlreadyFinishedError,
    TaskModuleError,
    UnknownTaskError,
    WaitTimeoutError,
)
from .registry import Task, TaskOptions, registered_tasks, task
from .resource import FAILURE, PENDING, STARTED, SUCCESS
from .results import ResultsUnavailableError
from .schedule import CronTab, ScheduledTask, TaskSession
from .status import TaskError, TaskStatus

__all__ = [
    "Application",
    "ClusterError",
    "CronTab",
    "FAILURE",
    "InvalidArgumentsError",
    "InvalidTaskError",
    "LimeTaskError",
    "NotFoundError",
    "PENDING",
    "QuotaExceededError",
    "ResultsUnavailableError",
    "SoftTimeLimitExceeded",
    "STARTED",
    "SUCCESS",
    "ScheduledTask",
    "Task",
    "TaskAlreadyFinishedError",
    "TaskClient",
    "TaskModuleError",
    "TaskError",
    "TaskOptions",
    "TaskSession",
    "TaskStatus",
    "UnknownTaskError",
    "WaitTimeoutError",
    "cancel_task",
    "configure",
    "get_status",
    "list_tasks",
    "registered_tasks",
    "run_eager",
    "send_task",
    "task",
]
