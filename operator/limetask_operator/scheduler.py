"""LimeTaskSchedules: one LimeTask per schedule and tick, with CronJob's semantics.

At each tick of a schedule (its cron expression in its time zone, lime_task.crontab) the
operator creates a LimeTask named `{schedule}-{tick as Unix seconds}`, labelled with the
schedule's name and UID and the tick. The schedule does not own its runs (no owner reference):
deleting it makes no new runs, and those it made end and leave as any task does, with their
events and archive rows (a run made before had an owner reference; the scheduler removes it).
A schedule's runs are only the LimeTasks made for its UID, of its application and task, and
named after their tick (lime_task.schedule.is_run_of): a label alone makes nothing a run.

A tick's run is made at most once, whatever is lost in between:
- its name: an operator restarted, or a second replica, that makes it again gets 409;
- `status.lastScheduleTime` is the latest tick of the runs that exist as much as of the status,
  written back at every pass, so a status write lost after a create (a crash, a conflict, a new
  leader) is made good by the next pass, which sees the run;
- the history limits delete a run only once that status is stored, and only once the run is
  settled (its event confirmed) and, with an archive, archived;
- with an archive, the archive is asked before a run is made whether a run of that name, task
  and application was archived (one indexed query per run made). When it cannot answer, a tick
  younger than the archive's keep time is made all the same (its run, had it been made, could
  not have left the cluster yet); an older one waits until the archive answers.
What can still make a tick twice: its run deleted by hand before the operator recorded its tick.

- Only the latest tick that has no run yet is ever run: after downtime, at most one catch-up,
  never a storm; and none at all once `startingDeadlineSeconds` have passed since that tick.
- `concurrencyPolicy`: Allow (runs may overlap; a run that has not started by the next tick
  expires then, FAILURE Expired, so that runs never pile up behind a slow queue); Forbid (while
  a run is active, a tick waits, and runs when the active one ends if it is still within its
  starting deadline, as a CronJob does; a later tick supersedes it); Replace (the new run is
  made, then the older active runs are cancelled; a run that has not started yet is left to
  run, and stands for the tick, since cancelling it would only put the same task at the back
  of its queue).
- `suspend`: no new runs; nor while the installation's scheduled tasks are turned off
  (LIMETASK_ENABLE_SCHEDULED_TASKS=false), which every schedule's Ready condition then says.
  A schedule with no `timeZone` ticks in the installation's (LIMETASK_DEFAULT_TIME_ZONE, else
  UTC). History: finished runs beyond `successfulRunsHistoryLimit` and
  `failedRunsHistoryLimit` are deleted, oldest first, once they may go (above).
- Status: lastScheduleTime, lastSuccessfulTime, active runs, the tick that waits, skipped ticks
  (those that never run) and why, the problem with an invalid spec, and a Ready condition.
The clock is injectable (tests); so is a seconds-level schedule (`@every Ns`), accepted only
with LIMETASK_SCHEDULE_SECONDS=true.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from lime_task import crontab
from lime_task.errors import InvalidArgumentsError, InvalidTaskError
from lime_task.resource import (
    ANNOTATION_CANCEL,
    API_VERSION,
    FAILURE,
    FINAL_STATES,
    GROUP,
    KIND,
    LABEL_APP,
    LABEL_SCHEDULE,
    LABEL_SCHEDULE_UID,
    LABEL_TICK,
    SCHEDULE_KIND,
    SCHEDULE_PLURAL,
    STARTED,
    SUCCESS,
    VERSION,
)
from lime_task.schedule import SCHEDULES_DISABLED, is_run_body_of, is_run_of, run_schedule_uid, run_tick
from lime_task.validation import check_arguments, parse_time, rfc3339

from .kube import Kube, KubeError, task_path
from .work import WorkQueue

LOG = logging.getLogger("limetask.operator.schedules")
Key = tuple[str, str]
STAMP = "%Y-%m-%dT%H:%M:%SZ"
# Fields of a schedule's spec a run takes over as they are.
RUN_FIELDS = ("task", "app", "args", "kwargs", "acksLate", "maxAttempts", "timeoutSeconds", "session", "queue",
              "priority", "memoryOnOOM")
READY = "Ready"
# How soon a tick the archive could not rule out is tried again, and how long the archive is
# given to answer (the scheduler's one worker waits meanwhile).
UNSURE_RETRY_SECONDS = 5.0
ARCHIVE_ANSWER_SECONDS = 5.0


def schedule_path(namespace: str, name: str = "", sub: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCHEDULE_PLURAL}"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def run_name(schedule: str, tick: dt.datetime) -> str:
    return f"{schedule}-{int(tick.timestamp())}"


def _stamp(when: dt.datetime) -> str:
    return when.strftime(STAMP)


@dataclass(frozen=True)
class Run:
    """A LimeTask labelled with a schedule's name, as the scheduler needs it."""

    name: str
    uid: str
    tick: int  # Unix seconds
    state: str
    completed: str
    # What it says it belongs to (lime_task.schedule.is_run_of decides whether it does).
    schedule_uid: str = ""
    app: str = ""
    task: str = ""
    started: bool = False  # its worker has started (or it has finished)
    settled: bool = False  # finished, and its completion event confirmed
    archived: bool = False  # in the archive (only known with one)
    cancelling: bool = False  # asked to cancel already
    owner_index: int | None = None  # its schedule's owner reference, on runs made before the UID label

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def of(self, schedule: Mapping[str, Any]) -> bool:
        return is_run_of(schedule, name=self.name, schedule_uid=self.schedule_uid, app=self.app, task=self.task,
                         tick=self.tick)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Run | None":
        """The run a LimeTask is, if it carries a schedule's label (None otherwise)."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        if not labels.get(LABEL_SCHEDULE):
            return None
        spec, st = body.get("spec") or {}, body.get("status") or {}
        state = str(st.get("state") or "PENDING")
        owner_index = None
        if not labels.get(LABEL_SCHEDULE_UID):
            owner_index = next((i for i, ref in enumerate(meta.get("ownerReferences") or [])
                                if isinstance(ref, dict) and ref.get("kind") == SCHEDULE_KIND), None)
        event: dict[str, Any] = st["event"] if isinstance(st.get("event"), dict) else {}
        return cls(name=str(meta.get("name") or ""), uid=str(meta.get("uid") or ""), tick=run_tick(meta), state=state,
                   completed=str(st.get("completedAt") or ""), schedule_uid=run_schedule_uid(meta),
                   app=str(spec.get("app") or ""), task=str(spec.get("task") or ""),
                   started=state in (STARTED, *FINAL_STATES) or bool(st.get("startedAt")),
                   settled=state in FINAL_STATES and bool(event.get("confirmed")),
                   cancelling=(meta.get("annotations") or {}).get(ANNOTATION_CANCEL) == "true",
                   owner_index=owner_index)


@dataclass(frozen=True)
class Found:
    """What making a tick's run found out that the caches do not hold."""

    archived: bool = False  # the archive holds the tick's run: it was made, ran and left
    taken_by: str = ""  # another object has the run's name (what it is)
    unsure: str = ""  # the archive could not say whether the run was made before (why)


@dataclass
class Decision:
    """What one reconcile of a schedule does."""

    create: dt.datetime | None = None  # the tick to make a run for
    expires: dt.datetime | None = None  # the new run's expiry (spec.expires)
    cancel: list[str] | None = None  # Replace: older active runs to cancel, once the new one is made
    release: list[Run] | None = None  # runs still owned by the schedule: their owner reference goes
    delete: list[Run] | None = None  # history beyond the limits
    status: dict[str, Any] | None = None
    wake_at: dt.datetime | None = None


def decide(schedule: dict[str, Any], runs: list[Run], now: dt.datetime, seconds_ok: bool = False,
           archive: bool = False, found: Mapping[int, Found] | None = None, enabled: bool = True,
           default_zone: str | None = None) -> Decision:
    """The plan for one schedule, from what exists now (pure: the tests drive it with any clock).

    `runs`: the LimeTasks labelled with the schedule's name (only its own count); `archive`:
    whether an archive is configured (then only archived runs leave for the history limits);
    `found`: what making a tick's run found out (see Found), by tick. `enabled`: the
    installation's switch for every schedule (LIMETASK_ENABLE_SCHEDULED_TASKS, Lime's
    enable_scheduled_tasks); off, no schedule makes runs, as if each were suspended.
    `default_zone`: the time zone of a schedule that names none (None: UTC).
    """
    meta, spec, st = schedule.get("metadata") or {}, schedule.get("spec") or {}, schedule.get("status") or {}
    generation = int(meta.get("generation") or 1)
    out = Decision()
    status: dict[str, Any] = dict(st)
    status["observedGeneration"] = generation
    own = [r for r in runs if r.of(schedule)]
    strangers = {r.name: r for r in runs if not r.of(schedule)}
    active = sorted((r for r in own if not r.finished), key=lambda r: r.tick)
    _record_success(status, own)
    _record_last(status, own)
    out.delete = _history(spec, own, archive)
    out.release = [r for r in own if r.owner_index is not None] or None
    zone_name = spec.get("timeZone") or default_zone
    problem = _problem(spec, seconds_ok, zone_name)
    if problem is not None:
        status["problem"] = problem
        _ready(status, st, now, generation, False, "InvalidSpec", problem)
        out.status = _active(status, active)
        return out
    status.pop("problem", None)
    if spec.get("suspend"):
        _ready(status, st, now, generation, True, "Suspended", "suspended: no new runs are made")
        out.status = _active(status, active)
        return out
    if not enabled:
        _ready(status, st, now, generation, False, SCHEDULES_DISABLED, DISABLED_MESSAGE)
        out.status = _active(status, active)
        return out
    _ready(status, st, now, generation, True, "Scheduling", "a run is made at each tick")
    expression, tz = str(spec.get("schedule")), crontab.zone(zone_name)
    policy = spec.get("concurrencyPolicy") or "Allow"
    out.wake_at = crontab.next_tick(expression, tz, now)
    tick = crontab.previous_tick(expression, tz, now)
    created = parse_time(meta.get("creationTimestamp")) or now
    done = max((t for t in (parse_time(status.get("lastScheduleTime")), parse_time(st.get("lastSkippedTime")))
                if t is not None), default=None)
    if tick is not None and tick > created and (done is None or tick > done):
        _missed(status, expression, tz, max(t for t in (done, created) if t is not None), tick,
                parse_time(status.get("waitingTime")))
        _tick(out, status, schedule, tick, tz, now, active, strangers,
              (found or {}).get(int(tick.timestamp()), Found()))
    if policy == "Replace":
        newest = max([r.tick for r in own] + ([int(out.create.timestamp())] if out.create else []), default=0)
        replaced = [r for r in active if r.tick < newest]
        out.cancel = [r.name for r in replaced if not r.cancelling] or None
        active = [r for r in active if r not in replaced]
    out.status = _active(status, active, [run_name(meta.get("name", ""), out.create)] if out.create else [])
    return out


def _tick(out: Decision, status: dict[str, Any], schedule: dict[str, Any], tick: dt.datetime, tz: dt.tzinfo,
          now: dt.datetime, active: list[Run], strangers: dict[str, Run], found: Found) -> None:
    """A tick that is due: its run is made, or it waits, or it is skipped for good (and why)."""
    meta, spec = schedule.get("metadata") or {}, schedule.get("spec") or {}
    policy = spec.get("concurrencyPolicy") or "Allow"
    deadline = spec.get("startingDeadlineSeconds")
    late = (now - tick).total_seconds()
    name = run_name(meta.get("name", ""), tick)
    waiting = parse_time(status.get("waitingTime"))
    if waiting is not None and waiting < tick:
        why = f"while run {active[-1].name} was still active" if active else "before it could run"
        _skip(status, waiting, f"the tick of {_stamp(waiting)} was superseded by the tick of {_stamp(tick)} {why} "
                               f"(concurrencyPolicy Forbid)")
    status.pop("waitingTime", None)
    stranger = strangers.get(name)
    unstarted = [r for r in active if not r.started]
    if deadline is not None and late > float(deadline) and waiting == tick and active:
        _skip(status, tick, f"the tick of {_stamp(tick)} waited while run {active[-1].name} was still active, "
                            f"past its starting deadline of {deadline}s (concurrencyPolicy Forbid)")
    elif deadline is not None and late > float(deadline):
        _skip(status, tick, f"the tick of {_stamp(tick)} was missed by {late:.0f}s, past the starting deadline of "
                            f"{deadline}s")
    elif found.taken_by or stranger is not None:
        taken = found.taken_by or (f"LimeTask {name} exists and is not this schedule's run (application "
                                   f"{stranger.app if stranger else '?'}, task {stranger.task if stranger else '?'})")
        _skip(status, tick, f"the tick of {_stamp(tick)} was skipped: {taken}")
    elif found.archived:
        status["lastScheduleTime"] = _stamp(tick)  # its run was made before, and is archived
    elif policy == "Forbid" and active:
        status["waitingTime"] = _stamp(tick)
        if deadline is not None:
            # Counted as skipped once its deadline has passed: look again then.
            due = tick + dt.timedelta(seconds=float(deadline) + 1)
            out.wake_at = due if out.wake_at is None else min(out.wake_at, due)
    elif policy == "Replace" and unstarted:
        _skip(status, tick, f"the tick of {_stamp(tick)} is left to run {unstarted[-1].name}, which has not started "
                            f"yet (concurrencyPolicy Replace)")
    elif found.unsure:
        retry = now + dt.timedelta(seconds=UNSURE_RETRY_SECONDS)
        out.wake_at = retry if out.wake_at is None else min(out.wake_at, retry)
        if waiting is not None and waiting == tick:
            status["waitingTime"] = _stamp(tick)
    else:
        out.create = tick
        status["lastScheduleTime"] = _stamp(tick)
        if policy == "Allow":
            out.expires = crontab.next_tick(str(spec.get("schedule")), tz, tick)


# The Ready reason of every schedule while the installation's scheduled tasks are turned off
# (lime_task.schedule.SCHEDULES_DISABLED, which `limetask schedules list` reads).
DISABLED_MESSAGE = ("scheduled tasks are turned off for this installation (the operator's "
                    "LIMETASK_ENABLE_SCHEDULED_TASKS, the chart's schedules.enabled): no runs are made")

# Schedules reconciled at once. One reconcile waits on the archive, a create and a status write:
# with a single worker, a hundred schedules on the same minute took longer than the minute on a
# busy operator, and later ticks came before earlier ones were made.
SCHEDULE_WORKERS = 8
MISSED_COUNT_MAX = 1000  # a schedule every second, an operator away for a day: counted up to this


def _missed(status: dict[str, Any], expression: str, tz: dt.tzinfo, since: dt.datetime, tick: dt.datetime,
            waiting: dt.datetime | None) -> None:
    """Ticks after the last one decided and before the due one, that no reconcile saw while they
    were the latest (the schedule suspended, scheduled tasks turned off, the operator down or
    behind): only the latest tick runs, as a CronJob's without a starting deadline does; those
    before it are counted skipped, and said. A tick that waited (Forbid) is counted by _tick."""
    missed: list[dt.datetime] = []
    at = crontab.next_tick(expression, tz, since)
    while at is not None and at < tick and len(missed) < MISSED_COUNT_MAX:
        if at != waiting:
            missed.append(at)
        at = crontab.next_tick(expression, tz, at)
    if not missed:
        return
    count = f"more than {len(missed)}" if len(missed) >= MISSED_COUNT_MAX else str(len(missed))
    span = _stamp(missed[0]) if len(missed) == 1 else f"{_stamp(missed[0])} to {_stamp(missed[-1])}"
    status["skipped"] = int(status.get("skipped") or 0) + len(missed)
    status["lastSkippedTime"] = _stamp(missed[-1])
    status["lastSkipReason"] = (f"{count} tick(s) ({span}) passed before a run could be made for them (the schedule "
                                f"was suspended, scheduled tasks were turned off, or the operator was down or "
                                f"behind); only the latest tick, {_stamp(tick)}, runs")


def _skip(status: dict[str, Any], tick: dt.datetime, reason: str) -> None:
    """A tick that will never run: counted once (decide runs again from the stored status)."""
    status["skipped"] = int(status.get("skipped") or 0) + 1
    status["lastSkippedTime"] = _stamp(tick)
    status["lastSkipReason"] = reason


def _record_success(status: dict[str, Any], own: list[Run]) -> None:
    newest = max((r.completed for r in own if r.state == SUCCESS and r.completed), default="")
    if newest and newest > str(status.get("lastSuccessfulTime") or ""):
        status["lastSuccessfulTime"] = newest


def _record_last(status: dict[str, Any], own: list[Run]) -> None:
    """The latest tick a run was made for: the status says so, or a run that exists does (the
    status write after its create may have been lost)."""
    last = parse_time(status.get("lastScheduleTime"))
    newest = max((r.tick for r in own), default=0)
    if newest and (last is None or newest > last.timestamp()):
        status["lastScheduleTime"] = _stamp(dt.datetime.fromtimestamp(newest, dt.timezone.utc))


def _history(spec: Mapping[str, Any], own: list[Run], archive: bool) -> list[Run]:
    """Finished runs beyond the limits (oldest first) that may leave: settled, and archived when
    there is an archive. Those that may not go yet still count against the limits."""
    out: list[Run] = []
    for state, keep in ((SUCCESS, int(spec.get("successfulRunsHistoryLimit", 3))),
                        (FAILURE, int(spec.get("failedRunsHistoryLimit", 1)))):
        finished = sorted((r for r in own if r.state == state), key=lambda r: r.tick, reverse=True)
        out += [r for r in reversed(finished[keep:]) if r.settled and (r.archived or not archive)]
    return out


def _problem(spec: Mapping[str, Any], seconds_ok: bool, zone_name: str | None = None) -> str | None:
    """What is wrong with a schedule's spec, such that no run of it could ever run (None: nothing)."""
    try:
        crontab.check(str(spec.get("schedule") or ""), seconds=seconds_ok)
        crontab.zone(zone_name)
    except InvalidTaskError as exc:
        return str(exc)
    args, kwargs = spec.get("args") or [], spec.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return "spec.args must be an array and spec.kwargs an object"
    try:
        # The checks every run's arguments get (the client's own): each run would fail them.
        check_arguments(args, kwargs)
    except InvalidArgumentsError as exc:
        return f"spec.args/kwargs: {exc}"
    return None


def _ready(status: dict[str, Any], st: Mapping[str, Any], now: dt.datetime, generation: int, ready: bool,
           reason: str, message: str) -> None:
    """The Ready condition (its transition time moves only when its status does)."""
    old = next((c for c in st.get("conditions") or [] if isinstance(c, dict) and c.get("type") == READY), None)
    value = "True" if ready else "False"
    since = old.get("lastTransitionTime") if old is not None and old.get("status") == value else None
    condition = {"type": READY, "status": value, "reason": reason, "message": message,
                 "observedGeneration": generation, "lastTransitionTime": since or _stamp(now)}
    others = [c for c in st.get("conditions") or [] if isinstance(c, dict) and c.get("type") != READY]
    status["conditions"] = [condition, *others]


def _active(status: dict[str, Any], active: list[Run], new: list[str] | None = None) -> dict[str, Any]:
    names = [r.name for r in active] + (new or [])
    status["active"] = [{"name": n} for n in names]
    status["activeCount"] = len(names)
    return status


def run_body(schedule: dict[str, Any], tick: dt.datetime, expires: dt.datetime | None = None) -> dict[str, Any]:
    meta, spec = schedule["metadata"], schedule.get("spec") or {}
    run_spec = {k: spec[k] for k in RUN_FIELDS if k in spec}
    if expires is not None:
        run_spec["expires"] = rfc3339(expires)
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {
            "name": run_name(meta["name"], tick), "namespace": meta["namespace"],
            "labels": {LABEL_APP: str(spec.get("app")), LABEL_SCHEDULE: meta["name"],
                       LABEL_TICK: str(int(tick.timestamp())), LABEL_SCHEDULE_UID: meta["uid"]},
        },
        "spec": run_spec,
    }


class RunArchive(Protocol):
    """What the scheduler asks the operator's archive (archive.Archiver)."""

    def has_archived(self, key: Key, uid: str) -> bool:
        """Whether this incarnation of the task is written to the archive (from memory)."""

    async def holds_run(self, namespace: str, name: str, app: str, task: str) -> bool:
        """Whether the archive holds a task of this name, application and task (one query);
        raises when it cannot say."""


class Scheduler:
    """The schedules the operator sees, their runs, and a worker that reconciles them."""

    def __init__(self, kube: Kube, seconds_ok: bool = False,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 synced: Callable[[str], bool] = lambda ns: True, archive: RunArchive | None = None,
                 archive_keep_seconds: float = 600.0, workers: int = SCHEDULE_WORKERS, enabled: bool = True,
                 default_zone: str | None = None) -> None:
        self.kube = kube
        self.seconds_ok = seconds_ok
        # The installation's defaults (settings.py): every schedule on or off, and the zone of
        # a schedule that names none.
        self.enabled = enabled
        self.default_zone = default_zone
        self.clock = clock
        self.synced = synced
        # With an archive: runs leave for the history limits only once archived, and a run is
        # made only once the archive has no run of its name (the archive keeps a task's
        # LimeTask archive_keep_seconds after it completed).
        self.archive = archive
        self.archive_keep_seconds = archive_keep_seconds
        self.schedules: dict[Key, dict[str, Any]] = {}
        self.runs: dict[Key, dict[str, Run]] = {}
        self.work: WorkQueue[Key] = WorkQueue()  # the schedules to reconcile
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        # resourceVersions are opaque (never compared as numbers), as in caches.py: per schedule,
        # those the watch delivered lately, and the one of this operator's last status write
        # while the watch has not delivered it yet (events before it are older than the cache).
        self.watched: dict[Key, deque[str]] = {}
        self.echo: dict[Key, str] = {}
        self.unsure: dict[Key, int] = {}  # the tick whose run the archive could not rule out, once said
        # Several schedules are reconciled at once (each waits on the archive and the API server);
        # one schedule never by two workers: a key queued again while it is worked on waits.
        self.worker_count = workers
        self.busy: set[Key] = set()
        self.again: set[Key] = set()
        self.workers: list[asyncio.Task[None]] = []

    # -- what the watches tell ------------------------------------------------------------
    def schedule_event(self, event_type: str, body: dict[str, Any]) -> None:
        """A LimeTaskSchedule from the watch, or from a listing or a fresh read ("LISTED")."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._forget(key)
            return
        rv = str(meta.get("resourceVersion") or "")
        old = self.schedules.get(key)
        if event_type == "LISTED":
            self.echo.pop(key, None)
        else:
            self.watched.setdefault(key, deque(maxlen=8)).append(rv)
            pending = self.echo.pop(key, None)
            if pending is not None and old is not None and old["metadata"].get("uid") == meta.get("uid"):
                if rv != pending:
                    self.echo[key] = pending
                    return  # from before this operator's own write, which the cache holds
                return  # the echo of that write: nothing new to decide on
        self.schedules[key] = {"metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                                 "generation", "creationTimestamp") if k in meta},
                               "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}
        self.enqueue(key)

    def schedule_event_quiet(self, body: dict[str, Any]) -> None:
        """Our own write's answer: cached, not queued again (its watch event may be too)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        rv = str(meta.get("resourceVersion") or "")
        if rv in self.watched.get(key, ()):
            return  # the watch was there first, maybe further
        self.echo[key] = rv
        if key in self.schedules:
            self.schedules[key]["status"] = dict(body.get("status") or {})
            self.schedules[key]["metadata"]["resourceVersion"] = rv

    def listed_schedules(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        for key in [k for k in self.schedules if k not in seen and (namespace is None or k[0] == namespace)]:
            self._forget(key)
        for key in self.schedules:
            if namespace is None or key[0] == namespace:
                self.enqueue(key)

    def _forget(self, key: Key) -> None:
        """A schedule is gone (its runs are not: they are not its to delete)."""
        self.schedules.pop(key, None)
        self.watched.pop(key, None)
        self.echo.pop(key, None)
        self.unsure.pop(key, None)
        self._cancel_timer(key)

    def task_event(self, event_type: str, body: dict[str, Any]) -> None:
        """A LimeTask changed: maybe a schedule's run (whether it is one, decide says)."""
        run = Run.from_body(body)
        if run is None:
            return
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), str((meta.get("labels") or {}).get(LABEL_SCHEDULE)))
        runs = self.runs.get(key)
        if event_type == "DELETED":
            if runs is not None:
                runs.pop(run.name, None)
                if not runs:
                    del self.runs[key]
        else:
            old = runs.get(run.name) if runs is not None else None
            self.runs.setdefault(key, {})[run.name] = run
            if old is not None and dataclasses.replace(old, completed=run.completed) == run:
                return
        if key in self.schedules:
            self.enqueue(key)

    def listed_tasks(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        for key in list(self.runs):
            if namespace is not None and key[0] != namespace:
                continue
            for name in [n for n in self.runs[key] if (key[0], n) not in seen]:
                del self.runs[key][name]
            if not self.runs[key]:
                del self.runs[key]

    # -- working --------------------------------------------------------------------------
    def enqueue(self, key: Key) -> None:
        self.work.add(key)

    def _cancel_timer(self, key: Key) -> None:
        handle = self.timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _wake_at(self, key: Key, when: dt.datetime) -> None:
        self._cancel_timer(key)
        delay = max((when - self.clock()).total_seconds(), 0.0) + 0.05
        self.timers[key] = asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    def start(self) -> None:
        self.workers = [asyncio.create_task(self._work(), name=f"schedules-{i}") for i in range(self.worker_count)]

    async def stop(self) -> None:
        for key in list(self.timers):
            self._cancel_timer(key)
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            key = await self.work.take()
            if key in self.busy:
                self.again.add(key)  # another worker has it: once more when that one is done
                continue
            self.busy.add(key)
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one schedule's trouble must not stop the others
                LOG.warning("schedule %s/%s: %s; again in 5 s", key[0], key[1], exc,
                            exc_info=not isinstance(exc, KubeError))
                asyncio.get_running_loop().call_later(5, self.enqueue, key)
            finally:
                self.busy.discard(key)
                if key in self.again:
                    self.again.discard(key)
                    self.enqueue(key)

    def _runs(self, key: Key) -> list[Run]:
        runs = list(self.runs.get(key, {}).values())
        archive = self.archive
        if archive is None:
            return runs
        return [dataclasses.replace(r, archived=archive.has_archived((key[0], r.name), r.uid)) if r.finished else r
                for r in runs]

    async def reconcile(self, key: Key) -> None:
        """Carry out a schedule's plan, in the one order that is safe at any crash point:

        1. before a run is made, ask the archive whether it was made before (with one);
        2. make the run (its name is its tick's: a re-run finds it, 409, and looks whose it is);
        3. cancel the runs it replaces (Replace), and release runs still owned by the schedule;
        4. write the status, which records the tick;
        5. only then delete history: no run leaves before the status holds its tick.
        """
        schedule = self.schedules.get(key)
        if schedule is None:
            return
        if not self.synced(key[0]):
            asyncio.get_running_loop().call_later(0.5, self.enqueue, key)
            return
        now = self.clock()
        runs = self._runs(key)

        def decided(found: Found | None = None, tick: dt.datetime | None = None) -> Decision:
            facts = {int(tick.timestamp()): found} if found is not None and tick is not None else None
            return decide(schedule, runs, now, self.seconds_ok, archive=self.archive is not None, found=facts,
                          enabled=self.enabled, default_zone=self.default_zone)

        plan = decided()
        if plan.create is not None:
            tick = plan.create
            found = await self._ask_archive(key, schedule, tick, now)
            if found is not None:
                plan = decided(found, tick)
        if plan.create is not None:
            tick = plan.create
            body = run_body(schedule, tick, plan.expires)
            made = await self.kube.create(task_path(key[0], "").rstrip("/"), body)
            if made is None:
                found = await self._whose(key, schedule, body)
                if found is not None:
                    plan = decided(found, tick)
            LOG.info("schedule %s/%s: %s run %s for the tick of %s", key[0], key[1],
                     "made" if made is not None else "found" if plan.create is not None else "could not make",
                     body["metadata"]["name"], _stamp(tick))
        for name in plan.cancel or []:
            LOG.info("schedule %s/%s: cancelling run %s (concurrencyPolicy Replace)", key[0], key[1], name)
            await self.kube.request("PATCH", task_path(key[0], name),
                                    {"metadata": {"annotations": {ANNOTATION_CANCEL: "true"}}},
                                    content_type="application/merge-patch+json")
        for run in plan.release or []:
            await self._release(key, schedule, run)
        if plan.status is not None and plan.status != schedule.get("status"):
            if not await self._write_status(key, schedule, plan.status):
                return
        for run in plan.delete or []:
            await self.kube.delete(task_path(key[0], run.name), uid=run.uid)
        if plan.wake_at is not None:
            self._wake_at(key, plan.wake_at)

    async def _ask_archive(self, key: Key, schedule: dict[str, Any], tick: dt.datetime,
                           now: dt.datetime) -> Found | None:
        """Whether the archive holds this tick's run (None: it does not, or there is no archive)."""
        if self.archive is None:
            return None
        spec = schedule.get("spec") or {}
        name = run_name(key[1], tick)
        try:
            held = await asyncio.wait_for(self.archive.holds_run(key[0], name, str(spec.get("app")),
                                                                 str(spec.get("task"))), ARCHIVE_ANSWER_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the archive is down: decided below
            if (now - tick).total_seconds() < self.archive_keep_seconds:
                return None  # had its run been made, it could not have left the cluster yet
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.unsure.get(key) != int(tick.timestamp()):
                self.unsure[key] = int(tick.timestamp())
                LOG.warning("schedule %s/%s: the archive cannot say whether run %s was made before (%s); the tick "
                            "waits until it can", key[0], key[1], name, why)
            return Found(unsure=why)
        self.unsure.pop(key, None)
        if held:
            LOG.info("schedule %s/%s: run %s was made before and is archived; it is not made again", key[0], key[1],
                     name)
            return Found(archived=True)
        return None

    async def _whose(self, key: Key, schedule: dict[str, Any], body: dict[str, Any]) -> Found | None:
        """A run's name is taken (409): by this schedule's run (None: fine), or by another object."""
        name = body["metadata"]["name"]
        existing = await self.kube.get(task_path(key[0], name))
        if existing is None:
            return Found(unsure=f"LimeTask {name} was there, and is gone")
        if is_run_body_of(schedule, existing):
            return None
        spec = existing.get("spec") or {}
        LOG.warning("schedule %s/%s: LimeTask %s is not this schedule's run; its tick is skipped", key[0], key[1],
                    name)
        return Found(taken_by=f"LimeTask {name} exists and is not this schedule's run (application "
                              f"{spec.get('app')}, task {spec.get('task')})")

    async def _release(self, key: Key, schedule: dict[str, Any], run: Run) -> None:
        """Remove the schedule's owner reference from a run made before runs carried its UID as a
        label: the garbage collector would delete the run with its schedule (running, not
        archived, its event not sent)."""
        uid = schedule["metadata"]["uid"]
        try:
            await self.kube.request("PATCH", task_path(key[0], run.name), [
                {"op": "test", "path": f"/metadata/ownerReferences/{run.owner_index}/uid", "value": uid},
                {"op": "remove", "path": f"/metadata/ownerReferences/{run.owner_index}"},
                {"op": "add", "path": f"/metadata/labels/{LABEL_SCHEDULE_UID.replace('/', '~1')}", "value": uid},
            ], content_type="application/json-patch+json")
        except KubeError as exc:
            if exc.status not in (404, 409, 422):
                raise
            # Gone, or changed meanwhile: its watch event brings it back here.

    async def _write_status(self, key: Key, schedule: dict[str, Any], status: dict[str, Any]) -> bool:
        """Whether the status is stored (False: the schedule changed or went; decided again)."""
        meta = schedule["metadata"]
        body = {"apiVersion": API_VERSION, "kind": SCHEDULE_KIND,
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta},
                "status": status}
        try:
            updated = await self.kube.request("PUT", schedule_path(key[0], key[1], "status"), body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            if exc.status != 409:
                raise
            fresh = await self.kube.get(schedule_path(key[0], key[1]))
            if fresh is not None:
                self.schedule_event("LISTED", fresh)  # decided again on the fresh object
            return False
        self.schedule_event_quiet(updated)
        return True
