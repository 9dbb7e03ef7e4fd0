"""Operator settings, from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator

from lime_task.resource import DEFAULT_QUEUE, MAX_ATTEMPTS_CEILING, PRIORITY_MAX, PRIORITY_MIN, QUEUE_NAME_RE

from .resources import quantity, quantity_problems, requests_over_limits


class SettingsError(ValueError):
    """A setting is missing or malformed: a clear start-up error."""


class OperatorSettings(BaseModel):
    # The runner image used when a LimeTask names none.
    runner_image: str = "ghcr.io/limetask/runner:0.1.0"
    # Command of the runner container; the image's Python must have the solution installed.
    runner_command: list[str] = Field(default_factory=lambda: ["python", "-m", "limetask_runner"])
    # Extra environment for every runner (e.g. LIMETASK_APP_FACTORY), as a JSON object.
    runner_env: dict[str, str] = Field(default_factory=dict)
    # Default resources of runner containers.
    runner_resources: dict[str, Any] = Field(default_factory=lambda: {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}})
    # Pod-level placement of runner pods.
    runner_node_selector: dict[str, str] = Field(default_factory=dict)
    runner_tolerations: list[dict[str, Any]] = Field(default_factory=list)
    runner_image_pull_secrets: list[str] = Field(default_factory=list)
    runner_service_account: str | None = None
    runner_user_id: int = 10001
    # A per-task image override is allowed only when this is true.
    allow_image_override: bool = False
    # The most a task may ask for in spec.resources (requests and limits), e.g.
    # {"cpu": "4", "memory": "8Gi"}; a task asking for more fails with InvalidSpec. Empty: no cap.
    max_runner_resources: dict[str, str | int | float] = Field(default_factory=dict)
    # The most memory a size of a task's memoryOnOOM (the memory of an attempt after OOMKilled
    # ones) may have, e.g. "8Gi"; a task asking for more fails with InvalidSpec before it runs.
    # Empty: the memory cap of max_runner_resources, if it has one (else no cap).
    max_memory_on_oom: str = ""
    # With caps set, a task may set only the resources the caps list: `nvidia.com/gpu: 64` is
    # refused unless the caps name nvidia.com/gpu. False lets unlisted resources through.
    deny_unlisted_resources: bool = True
    # Let a task set its own nodeSelector, tolerations and imagePullSecrets (placement).
    allow_placement_override: bool = False
    # Upper bound of maxAttempts a task may ask for.
    max_attempts_ceiling: int = MAX_ATTEMPTS_CEILING
    # Backstop: Kubernetes deletes a finished Job after this many seconds even if the operator
    # is down. The operator captures the verdict (and deletes the Job) long before.
    job_ttl_seconds: int = Field(default=3600, ge=0)
    # Delete a task's Jobs and pods as soon as its final status is stored.
    delete_finished_jobs: bool = True
    # Reconcile workers: how many tasks are handled at once.
    workers: int = Field(default=32, ge=1, le=1000)
    # Completion events: the broker URL (amqp:// or amqps://, with credentials), or a file
    # holding it (a mounted Secret). Without either, events go to the log and Kubernetes Events.
    broker_url: SecretStr | None = None
    broker_url_file: str | None = None
    # The topic exchange; {app} is replaced by the task's application name.
    broker_exchange: str = "lime.{app}"
    # Seconds to wait for one publish and its confirmation before counting it as failed.
    broker_publish_timeout: float = Field(default=10, gt=0)
    # Longest wait between two tries of an unconfirmed event.
    event_retry_max_seconds: float = Field(default=60, gt=0)
    # A failing event's delivery state (tries, last error) is held in memory and written into
    # its LimeTask's status at most this often, and when the event leaves the outbox: a broker
    # outage costs a task one status write per interval, not one per try. A restarted operator
    # resumes from what was written (it loses at most this much of the count). 0: at every try.
    event_status_write_seconds: float = Field(default=300, ge=0)
    # An event not confirmed this long after its first failed try goes to the dead-letter
    # exchange instead (with the reason in its headers), and its task settles.
    event_dead_letter_after_seconds: float = Field(default=24 * 3600, gt=0)
    # ... or once the broker refused it this many times (a NACK; an exchange missing, of another
    # type or not allowed to this user): an exchange that can never take an application's events
    # keeps its tasks about half an hour with the default backoff, not for ever. 0: no such bound.
    event_dead_letter_after_refusals: int = Field(default=30, ge=0)
    # The installation's dead-letter exchange (durable, topic; the operator declares it) and a
    # durable queue the operator binds to all of it ("" binds none: bind your own, since the
    # publish is mandatory). Dead-lettered events keep their body, routing key and message id.
    event_dead_letter_exchange: str = Field(default="limetask.dead-letter", min_length=1, max_length=255)
    event_dead_letter_queue: str = Field(default="limetask.dead-letter", max_length=255)
    # If even the dead-letter exchange takes no event for this long after its first failed try,
    # the event is written in full to the operator log and a Kubernetes Event, and the task
    # settles: etcd does not hold it for ever. Must not be shorter than the dead-letter bound.
    event_drop_after_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    # Finished LimeTasks (with their event delivered) are deleted this long after they
    # finished, like Lime's result expiry; 0 keeps them forever. One day by default: etcd is no
    # archive (the README's "Bounds" says what a month costs); keep longer only when asked.
    retention_seconds: int = Field(default=24 * 3600, ge=0)
    # The archive of finished tasks (PostgreSQL): postgresql://user:password@host:port/database,
    # or a file holding it (a mounted Secret). Without either, finished tasks stay in etcd for
    # retention_seconds. With it, a finished task whose event is confirmed is written to the
    # archive, and its LimeTask deleted archive_keep_seconds after it completed.
    archive_url: SecretStr | None = None
    archive_url_file: str | None = None
    archive_keep_seconds: int = Field(default=600, ge=0)
    # Archived tasks are dropped, a whole day at a time, after this many days; 0 keeps them.
    archive_retention_days: int = Field(default=30, ge=0, le=36500)
    # Tasks written to the archive in one transaction at most.
    archive_batch_size: int = Field(default=500, ge=1, le=10000)
    # Longest wait for a table lock when the archive's daily partitions are made or dropped: a
    # long read then makes the operator try again later, never queues every other read and
    # write behind the waiting statement.
    archive_lock_timeout_seconds: float = Field(default=5, gt=0, le=600)
    # Longest time a schema migration may take before the operator stops it and tries again
    # later (0: none). Large migrations go partition by partition and resume where they stopped.
    archive_migrate_timeout_seconds: int = Field(default=0, ge=0)
    # Jobs created per second at most, over every queue (a token bucket of job_creates_burst):
    # a burst of tasks becomes pods at this pace, a bounded churn for the API server rather than
    # thousands of objects at once. 0: no limit.
    job_creates_per_second: float = Field(default=20, ge=0, le=10000)
    job_creates_burst: int = Field(default=20, ge=1, le=10000)
    # A small move of a waiting task's place near the head of its queue is rewritten at most
    # this often (a move by a quarter at once): places move with every start, and rewriting
    # statuses each time would be churn of its own (queues.place_to_show; status.queue.updatedAt
    # says when the place was counted).
    queue_position_refresh_seconds: int = Field(default=30, ge=1, le=3600)
    # Installation-wide defaults, as Lime CRM's tasks_config has them:
    # false stops every schedule: no runs are made, and each schedule's Ready condition says why
    # (a switch for maintenance, or for a copy of production that must not run its jobs).
    enable_scheduled_tasks: bool = True
    # The time zone (IANA) of a schedule that names none; empty: UTC.
    default_time_zone: str = ""
    # The hard time limit (seconds) of a task that sets no timeout: its Job's deadline, after
    # which it ends FAILURE TimedOut. 0: none.
    default_time_limit: int = Field(default=0, ge=0, le=7 * 86400)
    # The soft time limit (seconds) of a task that sets none: SoftTimeLimitExceeded is raised in
    # the task, which may clean up. Given only to a task whose hard limit (its own or the
    # default) is longer. 0: none.
    default_soft_time_limit: float = Field(default=0, ge=0, le=7 * 86400)
    # The queue of a task that names none (no qos): a LimeTaskQueue of this name limits it, and
    # without one it has no limit.
    default_queue: str = DEFAULT_QUEUE
    # Queues that, like the default queue, exist without a LimeTaskQueue (then with no limit):
    # the chart's own (asap, background), so that their tasks run on the install that creates
    # the CRDs, before Helm can make the LimeTaskQueues. Any other queue that does not exist is
    # waited for.
    open_queues: list[str] = Field(default_factory=list)
    # The highest priority a task counts with in its queue's line: a task asking for more waits
    # as if it asked for this (its Queued condition says so), so that no tenant's priority puts
    # it out of reach of the others' ageing. A queue's maxPriority may set a lower one. With the
    # default ageing (60 s a point), a task of priority 0 competes with the highest class after
    # at most this many minutes (the README's "Queues, priorities and concurrency").
    max_priority: int = Field(default=100, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    # The ceiling of some namespaces, instead of max_priority, as a JSON object
    # ({"batch": 0, "platform": 1000}): the platform team's word, in the operator's settings,
    # not in anything a namespace's own users may edit.
    namespace_max_priority: dict[str, int] = Field(default_factory=dict)
    # Tests only: accept seconds-level schedules (`@every 3s`), so that tests need not wait minutes.
    schedule_seconds: bool = False
    # Leader election on a Lease, so that several replicas can run: one leads, the others wait
    # to take over. The Lease's namespace (default: the pod's own) and name.
    leader_election: bool = False
    leader_election_namespace: str | None = None
    # Who this replica is in the Lease (default: the host name, i.e. the pod's name).
    leader_election_identity: str | None = None
    leader_election_lease: str = Field(default="limetask-operator", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    # Prometheus metrics on this port (0: off).
    metrics_port: int = Field(default=9090, ge=0, le=65535)

    @field_validator("max_runner_resources", mode="before")
    @classmethod
    def _caps(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v  # the type check says what is wrong
        for name, value in v.items():
            try:
                quantity(value)
            except ValueError as exc:
                raise ValueError(f"the cap of {name!r}: {exc}") from None
        return v

    @field_validator("max_memory_on_oom")
    @classmethod
    def _memory_on_oom_cap(cls, v: str) -> str:
        if v.strip():
            try:
                if quantity(v) <= 0:
                    raise ValueError(f"{v!r} is no memory at all")
            except ValueError as exc:
                raise ValueError(f"the cap of memoryOnOOM: {exc} (empty: no cap of its own)") from None
        return v.strip()

    @field_validator("runner_resources")
    @classmethod
    def _defaults(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = set(v) - {"requests", "limits"}
        if unknown:
            raise ValueError(f"only requests and limits are allowed, not {', '.join(sorted(unknown))}")
        problems = quantity_problems(v, "runner resources") or requests_over_limits(v)
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("event_drop_after_seconds")
    @classmethod
    def _drop_after_dead_letter(cls, v: float, info: ValidationInfo) -> float:
        dead_letter = info.data.get("event_dead_letter_after_seconds")
        if dead_letter is not None and v < dead_letter:
            raise ValueError(f"{v:g} s is shorter than LIMETASK_EVENT_DEAD_LETTER_AFTER_SECONDS ({dead_letter:g} s): "
                             "an event is dropped only after the dead-letter exchange had its chance")
        return v

    @field_validator("default_queue")
    @classmethod
    def _default_queue(cls, v: str) -> str:
        if not QUEUE_NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a queue name: lower-case letters, digits and '-', starting and ending "
                             f"with a letter or digit, at most 63 characters")
        return v

    @field_validator("open_queues")
    @classmethod
    def _open_queues(cls, v: list[str]) -> list[str]:
        bad = [q for q in v if not QUEUE_NAME_RE.fullmatch(q)]
        if bad:
            raise ValueError(f"not queue names: {', '.join(map(repr, bad))} (lower-case letters, digits and '-')")
        return v

    @field_validator("namespace_max_priority")
    @classmethod
    def _namespace_ceilings(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [f"{ns!r}: {p}" for ns, p in v.items() if not PRIORITY_MIN <= p <= PRIORITY_MAX]
        if bad:
            raise ValueError(f"priorities go from {PRIORITY_MIN} to {PRIORITY_MAX}, not {', '.join(bad)}")
        return v

    @field_validator("default_time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from lime_task import crontab
        from lime_task.errors import InvalidTaskError

        try:
            crontab.zone(v.strip())
        except InvalidTaskError as exc:
            raise ValueError(str(exc)) from None
        return v.strip()

    @model_validator(mode="after")
    def _time_limits(self) -> "OperatorSettings":
        soft, hard = self.default_soft_time_limit, self.default_time_limit
        if soft and hard and soft >= hard:
            raise ValueError(f"LIMETASK_DEFAULT_SOFT_TIME_LIMIT ({soft:g}) must be below LIMETASK_DEFAULT_TIME_LIMIT "
                             f"({hard}): the soft limit warns a task before the hard one stops it")
        return self

    @field_validator("max_attempts_ceiling")
    @classmethod
    def _ceiling(cls, v: int) -> int:
        if not 1 <= v <= MAX_ATTEMPTS_CEILING:
            raise ValueError(f"must be between 1 and {MAX_ATTEMPTS_CEILING}")
        return v

    @model_validator(mode="after")
    def _urls(self) -> "OperatorSettings":
        from lime_task.archive import check_url
        from lime_task.events import check_broker_url

        self.broker_url = _secret_url(self.broker_url, self.broker_url_file, "broker", check_broker_url)
        self.archive_url = _secret_url(self.archive_url, self.archive_url_file, "archive", check_url)
        if "{app}" not in self.broker_exchange and not self.broker_exchange:
            raise ValueError("broker_exchange must not be empty")
        return self

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "OperatorSettings":
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            key = f"LIMETASK_{name.upper()}"
            if key not in env:
                continue
            raw = env[key]
            annotation = str(field.annotation)
            try:
                if "list" in annotation or "dict" in annotation:
                    values[name] = json.loads(raw)
                else:
                    values[name] = raw
            except ValueError as exc:
                raise SettingsError(f"{key} must be JSON: {exc}") from None
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'LIMETASK_' + '.'.join(map(str, e['loc'])).upper() if e['loc'] else 'settings'}: "
                f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
            raise SettingsError(problems) from None


def _secret_url(url: SecretStr | None, path: str | None, what: str, check: Any) -> SecretStr | None:
    """A URL with credentials: as given, else read from its file (a mounted Secret), then checked."""
    from lime_task.errors import InvalidTaskError

    if url is None and path:
        try:
            text = open(path, encoding="utf-8").read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the {what} URL file: {exc.strerror}") from None
        url = SecretStr(text) if text else None
    if url is not None:
        try:
            check(url.get_secret_value())
        except InvalidTaskError as exc:
            raise ValueError(str(exc)) from None
    return url
