"""`TaskStatus`: what a LimeTask says about one task, as the client sees it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .resource import CONDITION_QUEUED, DEFAULT_QUEUE, FINAL_STATES, PENDING, PRIORITY_MIN, SUCCESS
from .validation import parse_time


class TaskWaiter(Protocol):
    """What a status waits with: a `TaskClient` (lime_task.client imports this module, never the
    other way round)."""

    def wait(self, task_id: str, app_name: str, timeout: float | None = None,
             on_change: Callable[["TaskStatus"], Any] | None = None) -> "TaskStatus": ...


# What a status made without a client waits with: the shared client, which lime_task.client
# names here when it is imported (`import lime_task` imports it).
_shared_waiter: list[Callable[[], TaskWaiter]] = []


def wait_with(shared: Callable[[], TaskWaiter]) -> None:
    """Statuses made without a client wait with `shared()` (the shared client)."""
    _shared_waiter[:] = [shared]


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


def _count(value: Any, least: int) -> int | None:
    """A whole number of at least `least`, or None (absent, or not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        return None
    return value


def _queued_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    """The `Queued` condition of a task that waits in its queue for a slot, or None.

    Only a PENDING task waits: a True condition beside another state is stale, not a wait.
    """
    if (status.get("state") or PENDING) != PENDING:
        return None
    for condition in status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == CONDITION_QUEUED:
            return condition if condition.get("status") == "True" else None
    return None


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
    # Its queue (spec.queue; "default" when it names none) and its priority there. While the task
    # waits in the queue for a slot (PENDING, with a Queued condition that is True): why
    # (queue_reason: Waiting, QueueNotFound, QueuePaused, QueueRateLimited, QueueForbidden or Kueue; queue_message
    # says more), its
    # place (1 is next; None further back than the queue's first 100), how many waited in that
    # queue (every application's tasks there), since when this attempt waits, and when the
    # operator counted. All None once the task has its slot. `attempts` counts the attempts that
    # made a Job: 0 while the first one waits in its queue.
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    queue_reason: str | None = None
    queue_message: str | None = None
    queue_position: int | None = None
    queue_waiting: int | None = None
    queued_since: dt.datetime | None = None
    queue_updated_at: dt.datetime | None = None
    _client: TaskWaiter | None = field(default=None, repr=False, compare=False)
    # Whether `send` found this task already started by an earlier call with the same
    # idempotency key (the HTTP endpoint then answers 200 instead of 202).
    replayed: bool = field(default=False, compare=False)

    @property
    def state(self) -> str:
        return self.status

    @property
    def queued(self) -> bool:
        """Whether the task waits in its queue for a slot (it is PENDING meanwhile)."""
        return self.queue_reason is not None

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
        client = self._client or _shared_waiter[0]()
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
            "queue": {
                "name": self.queue, "priority": self.priority, "queued": self.queued,
                "reason": self.queue_reason, "message": self.queue_message,
                "position": self.queue_position, "waiting": self.queue_waiting,
                "since": self.queued_since.isoformat() if self.queued_since else None,
                "updated_at": self.queue_updated_at.isoformat() if self.queue_updated_at else None,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], client: TaskWaiter | None = None) -> "TaskStatus":
        """The inverse of `to_dict` (what the HTTP endpoint answers)."""
        err = d.get("error")
        # Answers of an endpoint older than queues have no block: the default queue, not waiting.
        block = d.get("queue")
        q: dict[str, Any] = block if isinstance(block, dict) else {}
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
            queue=str(q.get("name") or DEFAULT_QUEUE), priority=_count(q.get("priority"), PRIORITY_MIN) or 0,
            queue_reason=str(q["reason"]) if q.get("reason") else None,
            queue_message=str(q["message"]) if q.get("message") else None,
            queue_position=_count(q.get("position"), 1), queue_waiting=_count(q.get("waiting"), 0),
            queued_since=_time(q.get("since")), queue_updated_at=_time(q.get("updated_at")),
            _client=client,
        )

    @classmethod
    def from_resource(cls, body: dict[str, Any], client: TaskWaiter | None = None,
                      archived: bool = False) -> "TaskStatus":
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        st = body.get("status") or {}
        err = st.get("error")
        event = st.get("event") or {}
        queued = _queued_condition(st)
        block = st.get("queue")
        place: dict[str, Any] = block if queued is not None and isinstance(block, dict) else {}
        queue = spec.get("queue")
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
            # A dead-lettered event left the outbox, but its exchange never confirmed it.
            event_confirmed=bool(event.get("confirmed")) and not event.get("deadLetter"),
            namespace=meta.get("namespace", "default"),
            history=tuple(st.get("history") or ()),
            archived=archived,
            eta=parse_time(spec.get("eta")),
            expires=parse_time(spec.get("expires")),
            retries=int(st.get("retries") or 0),
            retry_at=parse_time(st.get("retryAt")),
            # No queue of its own: the operator names the installation's default queue while it waits.
            queue=queue if isinstance(queue, str) and queue else str(place.get("name") or DEFAULT_QUEUE),
            priority=_count(spec.get("priority"), PRIORITY_MIN) or 0,
            queue_reason=str(queued.get("reason") or "Waiting") if queued is not None else None,
            queue_message=str(queued["message"]) if queued is not None and queued.get("message") else None,
            queue_position=_count(place.get("position"), 1), queue_waiting=_count(place.get("waiting"), 0),
            queued_since=parse_time(place.get("since")), queue_updated_at=parse_time(place.get("updatedAt")),
            _client=client,
        )
