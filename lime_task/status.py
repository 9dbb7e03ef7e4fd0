"""`TaskStatus`: what a LimeTask says about one task, as the client sees it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .resource import FINAL_STATES, PENDING, SUCCESS
from .validation import parse_time

if TYPE_CHECKING:
    from .client import TaskClient


@dataclass(frozen=True)
class TaskError:
    """Why a task failed: the exception type and message, and a CamelCase reason."""

    type: str
    message: str
    reason: str

    def __str__(self) -> str:
        return f"{self.type}: {self.message} ({self.reason})"


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class TaskStatus:
    """The state of a task: PENDING, STARTED, SUCCESS or FAILURE, with its result or error."""

    id: str
    task: str
    app: str
    status: str
    result: Any = None
    error: TaskError | None = None
    attempts: int = 0
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    event_confirmed: bool = False
    namespace: str = "default"
    history: tuple[dict[str, Any], ...] = ()
    # Read from the archive: the task has finished and left the cluster (see lime_task.archive).
    archived: bool = False
    # Delayed start and expiry (send_task's countdown/eta and expires), if any.
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    # Retries after exceptions the task's autoretry_for names, and when the next one starts.
    retries: int = 0
    retry_at: dt.datetime | None = None
    _client: "TaskClient | None" = field(default=None, repr=False, compare=False)

    @property
    def state(self) -> str:
        return self.status

    def is_completed(self) -> bool:
        return self.status in FINAL_STATES

    def is_successful(self) -> bool:
        return self.status == SUCCESS

    def wait(self, timeout: float | None = None, on_change: Any = None) -> "TaskStatus":
        """Block until the task has finished; watches the resource rather than polling.

        Raises `WaitTimeoutError` after `timeout` seconds. `on_change(status)` is called on
        every change, for progress output.
        """
        if self.is_completed():
            return self
        from .client import default_client

        client = self._client or default_client()
        return client.wait(self.id, self.app, timeout=timeout, on_change=on_change)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "task": self.task, "app": self.app, "status": self.status,
            "result": self.result,
            "error": None if self.error is None else {
                "type": self.error.type, "message": self.error.message, "reason": self.error.reason},
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "event_confirmed": self.event_confirmed,
            "namespace": self.namespace,
            "history": [dict(h) for h in self.history],
            "archived": self.archived,
            "eta": self.eta.isoformat() if self.eta else None,
            "expires": self.expires.isoformat() if self.expires else None,
            "retries": self.retries,
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], client: "TaskClient | None" = None) -> "TaskStatus":
        """The inverse of `to_dict` (what the HTTP endpoint answers)."""
        err = d.get("error")
        return cls(
            id=str(d.get("id") or ""), task=str(d.get("task") or ""), app=str(d.get("app") or ""),
            status=str(d.get("status") or PENDING), result=d.get("result"),
            error=TaskError(str(err.get("type", "")), str(err.get("message", "")), str(err.get("reason", "")))
            if isinstance(err, dict) else None,
            attempts=int(d.get("attempts") or 0), created_at=_time(d.get("created_at")),
            started_at=_time(d.get("started_at")), completed_at=_time(d.get("completed_at")),
            event_confirmed=bool(d.get("event_confirmed")), namespace=str(d.get("namespace") or "default"),
            history=tuple(h for h in d.get("history") or () if isinstance(h, dict)),
            archived=bool(d.get("archived")), eta=_time(d.get("eta")), expires=_time(d.get("expires")),
            retries=int(d.get("retries") or 0), retry_at=_time(d.get("retry_at")),
            _client=client,
        )

    @classmethod
    def from_resource(cls, body: dict[str, Any], client: "TaskClient | None" = None,
                      archived: bool = False) -> "TaskStatus":
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        st = body.get("status") or {}
        err = st.get("error")
        event = st.get("event") or {}
        return cls(
            id=meta.get("name", ""),
            task=spec.get("task", ""),
            app=spec.get("app", ""),
            status=st.get("state") or PENDING,
            result=st.get("result"),
            error=TaskError(err.get("type", ""), err.get("message", ""), err.get("reason", ""))
            if isinstance(err, dict) else None,
            attempts=int(st.get("attempts") or 0),
            created_at=_time(meta.get("creationTimestamp")),
            started_at=_time(st.get("startedAt")),
            completed_at=_time(st.get("completedAt")),
            event_confirmed=bool(event.get("confirmed")),
            namespace=meta.get("namespace", "default"),
            history=tuple(st.get("history") or ()),
            archived=archived,
            eta=parse_time(spec.get("eta")),
            expires=parse_time(spec.get("expires")),
            retries=int(st.get("retries") or 0),
            retry_at=parse_time(st.get("retryAt")),
            _client=client,
        )
