"""The exceptions of `lime_task`: one small tree under `LimeTaskError`."""

from __future__ import annotations


class LimeTaskError(Exception):
    """Base class of every error this library raises."""


class NotFoundError(LimeTaskError, LookupError):
    """The task does not exist, or belongs to another application (the two look the same)."""


class UnknownTaskError(LimeTaskError, ValueError):
    """The name does not resolve to a function registered with `@task`."""


class InvalidTaskError(LimeTaskError, ValueError):
    """A task name, application name or option is not valid."""


class TaskModuleError(LimeTaskError, ImportError):
    """A task module, or a solution's `get_task_modules()`, cannot be imported or read."""


class InvalidArgumentsError(LimeTaskError, TypeError):
    """Task arguments are not JSON, or are larger than the documented limit."""


class TaskAlreadyFinishedError(LimeTaskError):
    """The task has finished, so it cannot be cancelled."""


class ClusterError(LimeTaskError):
    """The Kubernetes API could not be reached or refused the request."""


class QuotaExceededError(ClusterError):
    """The namespace holds as many LimeTasks as its ResourceQuota allows: no new task until
    finished ones leave (retention, the archive) or the quota is raised. Try again later."""

    def __init__(self, message: str, quota: str = "", namespace: str = "", used: int | None = None,
                 limit: int | None = None) -> None:
        super().__init__(message)
        self.quota = quota
        self.namespace = namespace
        self.used = used
        self.limit = limit


class WaitTimeoutError(LimeTaskError, TimeoutError):
    """The task did not finish within the time given to `wait`."""


class SoftTimeLimitExceeded(LimeTaskError):
    """Raised inside a task when its `soft_time_limit` passes: catch it to clean up before the
    hard `timeout` stops the task (Celery's and Lime's `SoftTimeLimitExceeded`)."""
