"""The HTTP contract: what requests carry and answers hold (pydantic models, which also make
/openapi.json), and the query parameters the routers share."""

from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from fastapi import Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationInfo, field_validator

from ..resource import (
    APP_NAME_RE,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_NAME_RE,
    STATES,
    TASK_NAME_MAX,
    TASK_NAME_RE,
)
from ..validation import MAX_DELAY_SECONDS, check_priority, check_queue, check_timing


class StartTask(BaseModel):
    """What to run: a registered task and its JSON arguments (the application is in the path)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "my_package.tasks.lime.get_lime_company", "args": [1001, ["name", "phone"]], "kwargs": {}},
    ]})

    task: Annotated[str, Field(min_length=3, max_length=TASK_NAME_MAX, pattern=TASK_NAME_RE.pattern,
                               description="dotted name of a function registered with @task")]
    args: list[JsonValue] = Field(default_factory=list, description="positional arguments after the application")
    kwargs: dict[str, JsonValue] = Field(default_factory=dict, description="keyword arguments")
    countdown: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS,
                                    description="start no earlier than this many seconds from now")
    eta: AwareDatetime | None = Field(default=None, description="start no earlier than this time (not with countdown)")
    expires: Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS)] | AwareDatetime | None = Field(
        default=None, description="seconds from now, or a time: a task not started by then ends as FAILURE, "
                                  "reason Expired, and never runs")
    qos: str | None = Field(default=None, min_length=1, max_length=63, pattern=QUEUE_NAME_RE.pattern,
                            description="the queue to wait in for a slot (default: the task's own @task(qos=), "
                                        "else the queue 'default')", examples=["asap"])
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX,
                                 description="order among the tasks waiting in the queue, higher first "
                                             "(default: the task's own @task(priority=), else 0)")

    # The client's own checks, before pydantic's: the same clear message as send_task's, and no
    # "5" or true taken for a priority.
    @field_validator("qos", mode="before")
    @classmethod
    def _queue_name(cls, value: Any) -> Any:
        return check_queue(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return None if value is None else check_priority(value)

    # Times by send_task's own rule: a string is a time, never seconds ("3600" is refused as
    # send_task refuses it), NaN is not a number of seconds, nothing before 1970 or over a year
    # ahead. (How the three go together, send_task checks too.)
    @field_validator("countdown", "eta", "expires", mode="before")
    @classmethod
    def _time(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            check_timing(**{str(info.field_name): value})
        return value


class TaskErrorBody(BaseModel):
    """Why a task failed."""

    type: str = Field(description="the exception type")
    message: str
    reason: str = Field(description="CamelCase: TaskRaised, WorkerLost, TimedOut, Cancelled, ...")


class QueueBody(BaseModel):
    """The task's queue and, while it waits there for a slot, its place."""

    name: str = Field(description="the queue (a LimeTaskQueue); 'default' when the task names none")
    priority: int = Field(description="order among waiting tasks, higher first")
    queued: bool = Field(description="whether the task waits in the queue for a slot (it is PENDING meanwhile)")
    reason: str | None = Field(default=None, description="while queued: Waiting, QueueNotFound, QueuePaused, "
                                                         "QueueRateLimited, QueueForbidden or Kueue")
    message: str | None = Field(default=None, description="while queued: why, in words")
    position: int | None = Field(default=None, description="while queued: 1 is the next to start; none further "
                                                           "back than the queue's first 100")
    waiting: int | None = Field(default=None, description="while queued: how many tasks waited in the queue, of "
                                                          "every application, when the position was counted")
    since: str | None = Field(default=None, description="while queued: when this attempt began to wait",
                              json_schema_extra={"format": "date-time"})
    updated_at: str | None = Field(default=None, description="while queued: when the position was counted",
                                   json_schema_extra={"format": "date-time"})


class TaskStatusBody(BaseModel):
    """A task's status, as `TaskStatus.to_dict()` gives it."""

    id: str
    task: str
    app: str
    status: Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]
    result: JsonValue = Field(default=None, description="the task's return value, once SUCCESS")
    error: TaskErrorBody | None = Field(default=None, description="why it failed, once FAILURE")
    attempts: int
    created_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    completed_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    event_confirmed: bool = Field(description="whether the broker has confirmed the completion event")
    namespace: str
    history: list[dict[str, JsonValue]] = Field(default_factory=list, description="every attempt")
    archived: bool = Field(default=False, description="read from the archive (the task has left the cluster)")
    eta: str | None = Field(default=None, description="delayed start: not before this time",
                            json_schema_extra={"format": "date-time"})
    expires: str | None = Field(default=None, description="a task not started by then ends as FAILURE, Expired",
                                json_schema_extra={"format": "date-time"})
    retries: int = Field(default=0, description="retries after exceptions the task's autoretry_for names")
    retry_at: str | None = Field(default=None, description="when the next retry starts",
                                 json_schema_extra={"format": "date-time"})
    queue: QueueBody = Field(description="its queue and, while it waits there, its place")


class ScheduleBody(BaseModel):
    """A LimeTaskSchedule: a task run for the application on a cron schedule."""

    name: str
    task: str | None
    app: str | None
    schedule: str | None
    time_zone: str | None = Field(description="IANA time zone; null: UTC")
    concurrency_policy: str
    suspend: bool
    active: int = Field(description="runs not finished yet")
    last_schedule_time: str | None
    last_successful_time: str | None
    skipped: int
    last_skip_reason: str | None
    problem: str | None = Field(description="what is wrong with the schedule, if anything")


class TaskPage(BaseModel):
    """A page of tasks, and the cursor of the next one (null: the last page)."""

    items: list[TaskStatusBody]
    next: str | None = Field(default=None, description="pass as `cursor` for the next page")


class ErrorBody(BaseModel):
    """Every error: a CamelCase code, a human message and, for invalid requests, what was wrong."""

    code: str
    detail: str
    errors: list[dict[str, JsonValue]] | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """What the endpoint depends on, as last seen; answered at once, never waiting for it."""

    status: Literal["ok", "degraded"] = Field(description="degraded: something below is not ok; live tasks "
                                                          "are still served")
    archive: Literal["ok", "unavailable", "unknown", "none"] = Field(
        description="unavailable: archived tasks cannot be read (503 ArchiveUnavailable); unknown: not "
                    "checked yet; none: no archive configured")
    tokens: Literal["ok", "invalid"] = Field(description="invalid: the tokens file cannot be read, and every "
                                                         "application token is refused until it is fixed")
    platform_tokens: Literal["ok", "invalid"] = Field(description="the same, for the dashboard's platform tokens")


StateQuery = Annotated[Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"] | None,
                       Query(description="only tasks in this state")]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="at most this many tasks")]
QueueQuery = Annotated[str | None, Query(min_length=1, max_length=63, pattern=QUEUE_NAME_RE.pattern,
                                         description="only this queue's tasks ('default': those that name none)")]
QueuedQuery = Annotated[bool, Query(description="only the tasks waiting in a queue for a slot (PENDING, with a "
                                                "Queued condition); these are live, never archived")]
CursorQuery = Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")]
# The live pages' cursors hold the cluster's `continue` tokens, which name the last task read.
TasksCursorQuery = Annotated[str | None, Query(max_length=2100, description="the `next` of the previous page")]
AppQuery = Annotated[str | None, Query(min_length=1, max_length=63, pattern=APP_NAME_RE.pattern,
                                       description="only this application's tasks")]
NamespaceQuery = Annotated[str | None, Query(
    alias="namespace", min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    description="the namespace the client means: the endpoint serves its own only, and answers 400 "
                "WrongNamespace for another (the client sends it; without it, the endpoint's own)")]
assert set(STATES) == {"PENDING", "STARTED", "SUCCESS", "FAILURE"}


AppInPath = Annotated[str, PathParam(min_length=1, max_length=63, pattern=APP_NAME_RE.pattern,
                                     description="application name", examples=["my-app"])]
