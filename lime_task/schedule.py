"""Scheduled tasks in code, as Lime CRM solutions write them, and the resources they become.

    from lime_task.schedule import CronTab, ScheduledTask, TaskSession

    def register_scheduled_tasks():
        return [ScheduledTask(task=tasks.my_task,
                              session=TaskSession(user_name='integration-user', language='sv'),
                              args=['arg1', {'key': 'value'}, True, 1337, None],
                              schedule=CronTab(hour=7, minute=30, day_of_week=1))]

A scheduled task runs for each application the solution serves: `schedule_resources()` (and
`limetask schedules render/apply --app A --app B`) turns the list into one LimeTaskSchedule per
application and scheduled task, labelled so that a later apply updates them and (with
`--prune`) deletes those the code no longer has. The operator makes the runs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import crontab
from .application import app_name_of
from .errors import ClusterError, InvalidTaskError, NotFoundError
from .registry import Task
from .resource import (
    API_VERSION,
    GROUP,
    LABEL_APP,
    LABEL_SCHEDULE,
    LABEL_SCHEDULE_UID,
    LABEL_TICK,
    PLURAL,
    SCHEDULE_KIND,
    SCHEDULE_PLURAL,
    VERSION,
)
from .validation import check_app_name, check_arguments, check_task_name, parse_time

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "limetask-schedules"
LABEL_SOURCE = f"{GROUP}/schedule-source"
ENTRY_POINT_GROUP = "limetask.scheduled_tasks"
# The Ready reason of every schedule while the installation's scheduled tasks are turned off.
SCHEDULES_DISABLED = "ScheduledTasksDisabled"
NAME_MAX = 52  # a run is named {schedule}-{tick}: 52 + 1 + 10 characters
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
POLICIES = ("Allow", "Forbid", "Replace")
# What a scheduled tasks module may be: a dotted module name, never a path or a relative import.
MODULE_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
NOT_INSTALLED = (f"schedules are not installed in this cluster (no {SCHEDULE_PLURAL}.{GROUP} resource): install "
                 f"the CRDs from crds/ or the Helm chart")


def _field(value: Any, what: str, low: int, high: int) -> str:
    """One cron field from Celery's forms: an int, a string ('*/15', '1-5', 'mon,wed'), or ints."""
    if isinstance(value, bool):
        raise InvalidTaskError(f"CronTab {what}: {value!r} is not a cron field")
    if isinstance(value, int):
        if not low <= value <= high:
            raise InvalidTaskError(f"CronTab {what}: {value} is not within {low}-{high}")
        return str(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if not text or not re.fullmatch(r"[0-9a-z*/,\-]+", text):
            raise InvalidTaskError(f"CronTab {what}: {value!r} is not a cron field")
        return text
    if isinstance(value, Iterable):
        items = sorted(set(value))
        if not items:
            raise InvalidTaskError(f"CronTab {what}: an empty set of values")
        return ",".join(_field(v, what, low, high) for v in items)
    raise InvalidTaskError(f"CronTab {what}: {value!r} is not a cron field")


@dataclass(frozen=True)
class CronTab:
    """When a task runs, in cron's terms and Celery's names (day_of_week: 0 or 'sun' is Sunday)."""

    minute: Any = "*"
    hour: Any = "*"
    day_of_week: Any = "*"
    day_of_month: Any = "*"
    month_of_year: Any = "*"

    @property
    def expression(self) -> str:
        text = " ".join((_field(self.minute, "minute", 0, 59), _field(self.hour, "hour", 0, 23),
                         _field(self.day_of_month, "day_of_month", 1, 31),
                         _field(self.month_of_year, "month_of_year", 1, 12),
                         _field(self.day_of_week, "day_of_week", 0, 7)))
        return crontab.check(text)

    def __post_init__(self) -> None:
        self.expression  # noqa: B018 - checked when made, as Celery's crontab is

    def __str__(self) -> str:
        return self.expression


@dataclass(frozen=True)
class TaskSession:
    """Who a scheduled task runs as: passed to each run (the task's `app.session`)."""

    user_name: str | None = None
    language: str | None = None

    def to_spec(self) -> dict[str, str]:
        out = {}
        if self.user_name:
            out["userName"] = str(self.user_name)
        if self.language:
            out["language"] = str(self.language)
        return out


@dataclass(frozen=True)
class ScheduledTask:
    """A task, its arguments, who it runs as and when: one LimeTaskSchedule per application."""

    task: Task[..., Any] | str
    schedule: CronTab | str
    session: TaskSession | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # CronJob's settings: an IANA time zone (default: the installation's, else UTC), what to do
    # with overlapping runs, how late a missed tick may still run, and the finished runs kept in
    # the cluster.
    time_zone: str | None = None
    concurrency_policy: str = "Forbid"
    starting_deadline_seconds: int | None = None
    successful_runs_history_limit: int = 3
    failed_runs_history_limit: int = 1
    name: str | None = None  # the resource's name (default: from the task, application and schedule)

    @property
    def task_name(self) -> str:
        return self.task.name if isinstance(self.task, Task) else check_task_name(self.task)

    @property
    def expression(self) -> str:
        if isinstance(self.schedule, CronTab):
            return self.schedule.expression
        # `@every Ns` only where the operator takes it too: tests (LIMETASK_SCHEDULE_SECONDS=true).
        return crontab.check(self.schedule, seconds=os.environ.get("LIMETASK_SCHEDULE_SECONDS") == "true")

    def __post_init__(self) -> None:
        self.task_name  # noqa: B018 - every check at once, where the code made it
        self.expression  # noqa: B018
        check_arguments(list(self.args), dict(self.kwargs))
        crontab.zone(self.time_zone)
        if self.concurrency_policy not in POLICIES:
            raise InvalidTaskError(f"concurrency_policy must be one of {', '.join(POLICIES)}, "
                                   f"not {self.concurrency_policy!r}")
        if self.session is not None and not isinstance(self.session, TaskSession):
            raise InvalidTaskError(f"session must be a TaskSession, not {type(self.session).__name__}")


def run_schedule_uid(meta: Mapping[str, Any]) -> str:
    """The UID of the schedule a LimeTask says it is a run of: its label, or the owner reference
    that runs made before the label carried ("" for none)."""
    uid = (meta.get("labels") or {}).get(LABEL_SCHEDULE_UID)
    if uid:
        return str(uid)
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("kind") == SCHEDULE_KIND and \
                str(ref.get("apiVersion") or "").startswith(f"{GROUP}/"):
            return str(ref.get("uid") or "")
    return ""


def run_tick(meta: Mapping[str, Any]) -> int:
    """The tick (Unix seconds) a LimeTask says it is a run for (0 for none)."""
    try:
        return int((meta.get("labels") or {}).get(LABEL_TICK) or 0)
    except ValueError:
        return 0


def is_run_of(schedule: Mapping[str, Any], *, name: str, schedule_uid: str, app: Any, task: Any, tick: int) -> bool:
    """Whether a LimeTask is really this schedule's run: made for this schedule's UID (one
    deleted and made again under the same name is another), of its application and task, and
    named after its tick. The schedule's label alone proves nothing: whoever may create
    LimeTasks may set it."""
    meta, spec = schedule.get("metadata") or {}, schedule.get("spec") or {}
    return (bool(meta.get("uid")) and schedule_uid == meta.get("uid") and app == spec.get("app")
            and task == spec.get("task") and name == f"{meta.get('name')}-{tick}")


def is_run_body_of(schedule: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """`is_run_of` for a LimeTask as the API gives it."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    return is_run_of(schedule, name=str(meta.get("name") or ""), schedule_uid=run_schedule_uid(meta),
                     app=spec.get("app"), task=spec.get("task"), tick=run_tick(meta))


def is_archived_run_of(schedule: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether an archived task (lime_task.archive.body_of) is a run of this schedule, as far as
    the archive can tell (it keeps no labels): of its application and task, and named after a
    tick after the schedule was made (an earlier schedule of the same name made the others)."""
    meta, spec = schedule.get("metadata") or {}, schedule.get("spec") or {}
    task_meta, task_spec = body.get("metadata") or {}, body.get("spec") or {}
    m = re.fullmatch(rf"{re.escape(str(meta.get('name')))}-(\d{{1,12}})", str(task_meta.get("name") or ""))
    made = parse_time(meta.get("creationTimestamp"))
    return (m is not None and task_spec.get("app") == spec.get("app") and task_spec.get("task") == spec.get("task")
            and (made is None or int(m.group(1)) > made.timestamp()))


def _slug(text: str, size: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:size].strip("-") or "x"


def schedule_name(scheduled: ScheduledTask, app: str) -> str:
    """A name that stays the same for the same task, application, schedule and arguments."""
    if scheduled.name:
        return scheduled.name
    digest = hashlib.sha256(json.dumps([app, scheduled.task_name, scheduled.expression, list(scheduled.args),
                                        dict(scheduled.kwargs), scheduled.time_zone], sort_keys=True,
                                       default=str).encode()).hexdigest()[:8]
    short = scheduled.task_name.rsplit(".", 1)[-1]
    return f"{_slug(short, 20)}-{_slug(app, NAME_MAX - 30)}-{digest}"


def schedule_resource(scheduled: ScheduledTask, app: Any, source: str = "") -> dict[str, Any]:
    """The LimeTaskSchedule of one scheduled task for one application."""
    app_name = check_app_name(app_name_of(app))
    name = schedule_name(scheduled, app_name)
    if len(name) > NAME_MAX or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        raise InvalidTaskError(f"schedule name {name!r}: lower-case letters, digits and '-', at most {NAME_MAX}")
    args, kwargs = check_arguments(list(scheduled.args), dict(scheduled.kwargs))
    spec: dict[str, Any] = {"task": scheduled.task_name, "app": app_name, "args": args, "kwargs": kwargs,
                            "schedule": scheduled.expression, "concurrencyPolicy": scheduled.concurrency_policy,
                            "successfulRunsHistoryLimit": scheduled.successful_runs_history_limit,
                            "failedRunsHistoryLimit": scheduled.failed_runs_history_limit}
    if scheduled.time_zone:
        spec["timeZone"] = scheduled.time_zone
    if scheduled.starting_deadline_seconds:
        spec["startingDeadlineSeconds"] = scheduled.starting_deadline_seconds
    if scheduled.session is not None and scheduled.session.to_spec():
        spec["session"] = scheduled.session.to_spec()
    if isinstance(scheduled.task, Task):
        options = scheduled.task.options
        spec["acksLate"] = options.acks_late
        if options.acks_late:
            spec["maxAttempts"] = options.max_attempts
        if options.timeout:
            spec["timeoutSeconds"] = options.timeout
        if options.qos:
            spec["queue"] = options.qos
        if options.priority:
            spec["priority"] = options.priority
        if options.memory_on_oom:
            spec["memoryOnOOM"] = list(options.memory_on_oom)
    labels = {LABEL_APP: app_name, LABEL_MANAGED_BY: MANAGED_BY}
    if source:
        labels[LABEL_SOURCE] = _slug(source, 63)
    return {"apiVersion": API_VERSION, "kind": SCHEDULE_KIND, "metadata": {"name": name, "labels": labels},
            "spec": spec}


def schedule_resources(scheduled: Iterable[ScheduledTask], apps: Iterable[Any],
                       source: str = "") -> list[dict[str, Any]]:
    """One LimeTaskSchedule per application and scheduled task; names must not collide."""
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    apps = list(apps)
    if not apps:
        raise InvalidTaskError("no application: a scheduled task runs for each application the solution serves")
    for item in scheduled:
        if not isinstance(item, ScheduledTask):
            raise InvalidTaskError(f"register_scheduled_tasks() must return ScheduledTask objects, got {item!r}")
        for app in apps:
            body = schedule_resource(item, app, source)
            name = body["metadata"]["name"]
            if name in seen:
                raise InvalidTaskError(f"two scheduled tasks would both be named {name!r} ({seen[name]}); give "
                                       f"one a name=")
            seen[name] = f"{item.task_name} for {body['spec']['app']}"
            out.append(body)
    return out


def load_registered(module: str | None = None) -> tuple[list[ScheduledTask], str]:
    """The scheduled tasks of a module's register_scheduled_tasks() (default: every module that
    installed packages declare as `limetask.scheduled_tasks` entry points), and their source."""
    modules = [module] if module else _declared_modules()
    if not modules:
        raise InvalidTaskError(f"no scheduled tasks module: name one with --module, or declare it as a "
                               f"'{ENTRY_POINT_GROUP}' entry point (limetask generate scheduled-tasks does)")
    found: list[ScheduledTask] = []
    for name in modules:
        if not isinstance(name, str) or not MODULE_RE.fullmatch(name):
            raise InvalidTaskError(f"cannot import {name!r}: not a module name (a dotted name such as "
                                   f"acme_solution.tasks.scheduled_tasks)")
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:
            raise InvalidTaskError(f"cannot import {name!r}: {exc}") from None
        except SystemExit as exc:
            raise InvalidTaskError(f"importing {name!r} called sys.exit({exc.code!r}): a scheduled tasks module "
                                   f"must not exit when imported") from None
        except Exception as exc:  # noqa: BLE001 - the solution's own code: one line that says where
            raise InvalidTaskError(f"importing {name!r} raised {_raised(exc)}") from None
        register: Callable[[], Any] | None = getattr(mod, "register_scheduled_tasks", None)
        if not callable(register):
            raise InvalidTaskError(f"{name!r} has no register_scheduled_tasks() function")
        try:
            items = register()
        except SystemExit as exc:
            raise InvalidTaskError(f"{name}.register_scheduled_tasks() called sys.exit({exc.code!r})") from None
        except Exception as exc:  # noqa: BLE001 - as above
            raise InvalidTaskError(f"{name}.register_scheduled_tasks() raised {_raised(exc)}") from None
        if not isinstance(items, (list, tuple)):
            raise InvalidTaskError(f"{name}.register_scheduled_tasks() must return a list of ScheduledTask")
        found += list(items)
    return found, ",".join(modules)


def _raised(exc: BaseException) -> str:
    """An exception of a solution's code in one line: its type, message, and where it was raised."""
    import traceback

    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ is not None else []
    place = f" (at {os.path.basename(where[0].filename)}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{place}" if str(exc) else f"{type(exc).__name__}{place}"


def _declared_modules() -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)})


def to_yaml(resources: list[dict[str, Any]], namespace: str | None = None) -> str:
    """The resources as one YAML stream (for GitOps: commit it, or `kubectl apply -f` it)."""
    import yaml

    docs = []
    for body in resources:
        body = json.loads(json.dumps(body))
        if namespace:
            body["metadata"]["namespace"] = namespace
        docs.append(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return "---\n".join(docs)


def _schedules_api(client: Any) -> Any:
    return client.api  # the TaskClient's CustomObjectsApi


def apply_resources(client: Any, resources: list[dict[str, Any]], source: str,
                    prune_apps: Iterable[str] | None = None) -> list[str]:
    """Create or replace each schedule (its status stays); with `prune_apps`, delete the schedules
    of this source and these applications that are not among `resources`. What was done, a line each."""
    api, ns, lines = _schedules_api(client), client.namespace, []
    for body in resources:
        name = body["metadata"]["name"]
        existing = client._read_or_none("read schedule", api.get_namespaced_custom_object, GROUP, VERSION, ns,
                                        SCHEDULE_PLURAL, name)
        if existing is None:
            try:
                client._read_checked(f"create schedule {name}", api.create_namespaced_custom_object, GROUP,
                                     VERSION, ns, SCHEDULE_PLURAL, body)
            except NotFoundError:
                _list(client, limit=1)  # says so when schedules are not installed
                raise
            lines.append(f"created     {name}  ({body['spec']['task']} for {body['spec']['app']}, "
                         f"{body['spec']['schedule']})")
            continue
        update = json.loads(json.dumps(body))
        update["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        update["metadata"]["labels"] = {**(existing["metadata"].get("labels") or {}), **body["metadata"]["labels"]}
        if _same_spec(existing.get("spec") or {}, body["spec"]) and \
                existing["metadata"].get("labels") == update["metadata"]["labels"]:
            lines.append(f"unchanged   {name}")
            continue
        client._read_checked(f"update schedule {name}", api.replace_namespaced_custom_object, GROUP, VERSION, ns,
                             SCHEDULE_PLURAL, name, update)
        lines.append(f"updated     {name}")
    if prune_apps is not None:
        wanted = {b["metadata"]["name"] for b in resources}
        apps = set(prune_apps)
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SOURCE}={_slug(source, 63)}"
        for item in _list(client, label_selector=selector).get("items") or []:
            name = item["metadata"]["name"]
            if name not in wanted and (item.get("spec") or {}).get("app") in apps:
                client._read_checked(f"delete schedule {name}", api.delete_namespaced_custom_object, GROUP, VERSION,
                                     ns, SCHEDULE_PLURAL, name)
                lines.append(f"deleted     {name}  (no longer in the code)")
    return lines


# What the API server fills in when a field is left out (the CRD's defaults).
SPEC_DEFAULTS = {"suspend": False, "concurrencyPolicy": "Allow", "successfulRunsHistoryLimit": 3,
                 "failedRunsHistoryLimit": 1}


def _same_spec(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a stored spec is the wanted one, but for the defaults the API server filled in."""
    return all(stored.get(k) == v for k, v in wanted.items()) and all(
        k in wanted or SPEC_DEFAULTS.get(k, object()) == v for k, v in stored.items())


def _list(client: Any, **params: Any) -> dict[str, Any]:
    """A listing of the namespace's schedules; `ClusterError` saying so when they are not installed
    (a namespaced list is 404 only when the resource is not served)."""
    try:
        listed: dict[str, Any] = client._read_checked("list schedules",
                                                      _schedules_api(client).list_namespaced_custom_object, GROUP,
                                                      VERSION, client.namespace, SCHEDULE_PLURAL, **params)
    except NotFoundError:
        raise ClusterError(NOT_INSTALLED) from None
    return listed


def list_schedules(client: Any, app: str | None = None) -> list[dict[str, Any]]:
    """The namespace's schedules (of one application, if given), in the API's plain form."""
    # As with tasks, the label is only a filter on the server: kubectl-made schedules may not
    # carry it, and spec.app decides.
    selectors = [f"{LABEL_APP}={check_app_name(app)}", f"!{LABEL_APP}"] if app else [""]
    items: list[dict[str, Any]] = []
    for selector in selectors:
        items += _list(client, label_selector=selector).get("items") or []
    out = []
    for item in items:
        spec, st = item.get("spec") or {}, item.get("status") or {}
        if app and spec.get("app") != app:
            continue
        out.append({"name": item["metadata"]["name"], "task": spec.get("task"), "app": spec.get("app"),
                    "schedule": spec.get("schedule"), "time_zone": spec.get("timeZone"),
                    "concurrency_policy": spec.get("concurrencyPolicy", "Allow"), "suspend": bool(spec.get("suspend")),
                    "active": int(st.get("activeCount") or 0), "last_schedule_time": st.get("lastScheduleTime"),
                    "last_successful_time": st.get("lastSuccessfulTime"), "skipped": int(st.get("skipped") or 0),
                    "last_skip_reason": st.get("lastSkipReason"), "problem": st.get("problem"),
                    # The installation's scheduled tasks are turned off (the operator's Ready says so).
                    "disabled": any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "False"
                                    and c.get("reason") == SCHEDULES_DISABLED for c in st.get("conditions") or [])})
    return sorted(out, key=lambda s: s["name"])


def get_schedule(client: Any, name: str, app: str | None = None) -> dict[str, Any]:
    """A schedule as the API gives it; `NotFoundError` when there is none of that name (or it is
    another application's, if `app` is given: the two look the same)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
        raise NotFoundError(f"schedule {name!r} not found")
    # A listing by name, not a get: what may list schedules (the HTTP endpoint) needs no more.
    listed = _list(client, field_selector=f"metadata.name={name}").get("items") or []
    body = next((b for b in listed if (b.get("metadata") or {}).get("name") == name), None)
    if body is None or (app is not None and (body.get("spec") or {}).get("app") != app):
        raise NotFoundError(f"schedule {name!r} not found")
    return dict(body)


def live_runs(client: Any, schedule: Mapping[str, Any]) -> list[Any]:
    """A schedule's runs in the cluster (TaskStatus), newest first: only its own (is_run_of)."""
    from .status import TaskStatus

    name = (schedule.get("metadata") or {}).get("name")
    listed = client._read_checked("list runs", _schedules_api(client).list_namespaced_custom_object, GROUP, VERSION,
                                  client.namespace, PLURAL, label_selector=f"{LABEL_SCHEDULE}={name}")
    runs = [TaskStatus.from_resource(item, client) for item in listed.get("items") or []
            if is_run_body_of(schedule, item)]
    return _newest_first(runs)


def schedule_runs(client: Any, name: str, app: str | None = None, limit: int = 100, archive: bool = True
                  ) -> list[Any]:
    """A schedule's runs (TaskStatus), newest first, at most `limit`: those in the cluster, then
    (with the results API, `archive`) the archived ones. `NotFoundError` when there is no such
    schedule (of the application, if `app` is given)."""
    from .status import TaskStatus

    schedule = get_schedule(client, name, app)
    runs = live_runs(client, schedule)
    results = getattr(client, "results", None)
    if archive and results is not None and len(runs) < limit:
        seen = {r.id for r in runs}
        app_name = str((schedule.get("spec") or {}).get("app"))
        for found in results.schedule_runs(app_name, name, limit, namespace=client.namespace) or []:
            st = TaskStatus.from_dict(found, client)
            if st.archived and st.id not in seen:
                runs.append(st)
    return _newest_first(runs)[:limit]


def _newest_first(runs: list[Any]) -> list[Any]:
    return sorted(runs, key=lambda r: r.created_at.timestamp() if r.created_at else 0.0, reverse=True)
