"""LimeTaskSchedules: one LimeTask per schedule and tick, with CronJob's semantics.

At each tick of a schedule (its cron expression in its time zone, lime_task.crontab) the
operator creates a LimeTask named `{schedule}-{tick as Unix seconds}`, labelled with the
schedule and the tick and owned by the schedule. The name makes a tick's run unique: an
operator restarted, or a second replica, that makes it again gets 409 and nothing else.

- Only the latest tick that has no run yet is ever run: after downtime, at most one catch-up,
  never a storm; and none at all once `startingDeadlineSeconds` have passed since that tick.
- `concurrencyPolicy`: Allow (runs may overlap); Forbid (while a run is active, a tick waits,
  and runs when the active one ends if it is still within its starting deadline, as a CronJob
  does; a later tick supersedes it); Replace (the active runs are cancelled, then the new one
  made).
- `suspend`: no new runs. History: finished runs beyond `successfulRunsHistoryLimit` and
  `failedRunsHistoryLimit` are deleted, oldest first.
- Status: lastScheduleTime, lastSuccessfulTime, active runs, skipped ticks and why, and the
  problem with an invalid expression or time zone.
The clock is injectable (tests); so is a seconds-level schedule (`@every Ns`), accepted only
with LIMETASK_SCHEDULE_SECONDS=true.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lime_task import crontab
from lime_task.errors import InvalidTaskError
from lime_task.resource import (
    ANNOTATION_CANCEL,
    API_VERSION,
    FAILURE,
    FINAL_STATES,
    GROUP,
    KIND,
    LABEL_APP,
    LABEL_SCHEDULE,
    LABEL_TICK,
    SCHEDULE_KIND,
    SCHEDULE_PLURAL,
    SUCCESS,
    VERSION,
)
from lime_task.validation import parse_time

from .kube import ApiError, Kube, task_path

LOG = logging.getLogger("limetask.operator.schedules")
Key = tuple[str, str]
STAMP = "%Y-%m-%dT%H:%M:%SZ"
# Fields of a schedule's spec a run takes over as they are.
RUN_FIELDS = ("task", "app", "args", "kwargs", "acksLate", "maxAttempts", "timeoutSeconds", "session", "queue",
              "priority")


def schedule_path(namespace: str, name: str = "", sub: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCHEDULE_PLURAL}"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def run_name(schedule: str, tick: dt.datetime) -> str:
    return f"{schedule}-{int(tick.timestamp())}"


@dataclass(frozen=True)
class Run:
    name: str
    uid: str
    tick: int  # Unix seconds
    state: str
    completed: str

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class Decision:
    """What one reconcile of a schedule does."""

    create: dt.datetime | None = None  # the tick to make a run for
    cancel: list[str] | None = None  # Replace: active runs to cancel first
    delete: list[Run] | None = None  # history beyond the limits
    status: dict[str, Any] | None = None
    wake_at: dt.datetime | None = None


def decide(schedule: dict[str, Any], runs: list[Run], now: dt.datetime, seconds_ok: bool = False) -> Decision:
    """The plan for one schedule, from what exists now (pure: the tests drive it with any clock)."""
    meta, spec, st = schedule.get("metadata") or {}, schedule.get("spec") or {}, schedule.get("status") or {}
    out = Decision()
    status: dict[str, Any] = {k: v for k, v in st.items()}
    status["observedGeneration"] = int(meta.get("generation") or 1)
    active = sorted((r for r in runs if not r.finished), key=lambda r: r.tick)
    successes = sorted((r for r in runs if r.state == SUCCESS), key=lambda r: r.tick, reverse=True)
    failures = sorted((r for r in runs if r.state == FAILURE), key=lambda r: r.tick, reverse=True)
    if successes:
        newest = max((r.completed for r in successes if r.completed), default="")
        if newest and newest > str(st.get("lastSuccessfulTime") or ""):
            status["lastSuccessfulTime"] = newest
    keep_ok = int(spec.get("successfulRunsHistoryLimit", 3))
    keep_failed = int(spec.get("failedRunsHistoryLimit", 1))
    out.delete = successes[keep_ok:] + failures[keep_failed:]
    try:
        expression = crontab.check(str(spec.get("schedule") or ""), seconds=seconds_ok)
        tz = crontab.zone(spec.get("timeZone"))
    except InvalidTaskError as exc:
        status["problem"] = str(exc)
        out.status = _active(status, active)
        return out
    status.pop("problem", None)
    if spec.get("suspend"):
        out.status = _active(status, active)
        return out
    created = parse_time(meta.get("creationTimestamp")) or now
    last = parse_time(st.get("lastScheduleTime"))
    made = {r.tick for r in runs}
    tick = crontab.previous_tick(expression, tz, now)
    due = tick is not None and tick > created and (last is None or tick > last) \
        and int(tick.timestamp()) not in made
    if due and tick is not None:
        deadline = spec.get("startingDeadlineSeconds")
        late = (now - tick).total_seconds()
        policy = spec.get("concurrencyPolicy") or "Allow"
        reason = None
        if deadline is not None and late > float(deadline):
            reason = f"the tick of {tick.strftime(STAMP)} was missed by {late:.0f}s, past the starting deadline " \
                     f"of {deadline}s"
        elif policy == "Forbid" and active:
            reason = f"the tick of {tick.strftime(STAMP)} waits: run {active[-1].name} is still active " \
                     f"(concurrencyPolicy Forbid)"
        if reason is not None:
            if st.get("lastSkippedTime") != tick.strftime(STAMP):
                status["skipped"] = int(st.get("skipped") or 0) + 1
                status["lastSkippedTime"] = tick.strftime(STAMP)
                status["lastSkipReason"] = reason
        else:
            out.create = tick
            if policy == "Replace" and active:
                out.cancel = [r.name for r in active]
                active = []
            status["lastScheduleTime"] = tick.strftime(STAMP)
    out.status = _active(status, active, [run_name(meta.get("name", ""), out.create)] if out.create else [])
    out.wake_at = crontab.next_tick(expression, tz, now)
    return out


def _active(status: dict[str, Any], active: list[Run], new: list[str] | None = None) -> dict[str, Any]:
    names = [r.name for r in active] + (new or [])
    status["active"] = [{"name": n} for n in names]
    status["activeCount"] = len(names)
    return status


def run_body(schedule: dict[str, Any], tick: dt.datetime) -> dict[str, Any]:
    meta, spec = schedule["metadata"], schedule.get("spec") or {}
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {
            "name": run_name(meta["name"], tick), "namespace": meta["namespace"],
            "labels": {LABEL_APP: str(spec.get("app")), LABEL_SCHEDULE: meta["name"],
                       LABEL_TICK: str(int(tick.timestamp()))},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": SCHEDULE_KIND, "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}],
        },
        "spec": {k: spec[k] for k in RUN_FIELDS if k in spec},
    }


class Scheduler:
    """The schedules the operator sees, their runs, and a worker that reconciles them."""

    def __init__(self, kube: Kube, seconds_ok: bool = False,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 synced: Callable[[str], bool] = lambda ns: True) -> None:
        self.kube = kube
        self.seconds_ok = seconds_ok
        self.clock = clock
        self.synced = synced
        self.schedules: dict[Key, dict[str, Any]] = {}
        self.runs: dict[Key, dict[str, Run]] = defaultdict(dict)
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        # The resourceVersion of this operator's last status write per schedule: its watch event
        # (the echo) changes nothing to decide again, and must not start another round.
        self.written: dict[Key, str] = {}
        self.worker: asyncio.Task[None] | None = None

    # -- what the watches tell ------------------------------------------------------------
    def schedule_event(self, event_type: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.schedules.pop(key, None)
            self.written.pop(key, None)
            self._cancel_timer(key)
            return
        echo = self.written.get(key) == meta.get("resourceVersion")
        self.schedules[key] = {"metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                                 "generation", "creationTimestamp") if k in meta},
                               "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}
        if not echo:
            self.enqueue(key)

    def listed_schedules(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        for key in [k for k in self.schedules if k not in seen and (namespace is None or k[0] == namespace)]:
            self.schedules.pop(key, None)
            self._cancel_timer(key)
        for key in self.schedules:
            if namespace is None or key[0] == namespace:
                self.enqueue(key)

    def task_event(self, event_type: str, body: dict[str, Any]) -> None:
        """A LimeTask changed: a schedule's run, when it carries the schedule's label."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        schedule = labels.get(LABEL_SCHEDULE)
        if not schedule:
            return
        key = (meta.get("namespace", ""), schedule)
        name = meta.get("name", "")
        if event_type == "DELETED":
            self.runs[key].pop(name, None)
        else:
            st = body.get("status") or {}
            try:
                tick = int(labels.get(LABEL_TICK) or 0)
            except ValueError:
                tick = 0
            old = self.runs[key].get(name)
            run = Run(name, meta.get("uid", ""), tick, str(st.get("state") or "PENDING"),
                      str(st.get("completedAt") or ""))
            self.runs[key][name] = run
            if old is not None and old.state == run.state:
                return
        if not self.runs[key]:
            del self.runs[key]
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
        if key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    def _cancel_timer(self, key: Key) -> None:
        handle = self.timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _wake_at(self, key: Key, when: dt.datetime) -> None:
        self._cancel_timer(key)
        delay = max((when - self.clock()).total_seconds(), 0.0) + 0.05
        self.timers[key] = asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    def start(self) -> None:
        self.worker = asyncio.create_task(self._work(), name="schedules")

    async def stop(self) -> None:
        for key in list(self.timers):
            self._cancel_timer(key)
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
            self.worker = None

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one schedule's trouble must not stop the others
                LOG.warning("schedule %s/%s: %s; again in 5 s", key[0], key[1], exc,
                            exc_info=not isinstance(exc, ApiError))
                asyncio.get_running_loop().call_later(5, self.enqueue, key)

    async def reconcile(self, key: Key) -> None:
        schedule = self.schedules.get(key)
        if schedule is None:
            return
        if not self.synced(key[0]):
            asyncio.get_running_loop().call_later(0.5, self.enqueue, key)
            return
        plan = decide(schedule, list(self.runs.get(key, {}).values()), self.clock(), self.seconds_ok)
        for name in plan.cancel or []:
            LOG.info("schedule %s/%s: cancelling run %s (concurrencyPolicy Replace)", key[0], key[1], name)
            await self.kube.request("PATCH", task_path(key[0], name),
                                    {"metadata": {"annotations": {ANNOTATION_CANCEL: "true"}}},
                                    content_type="application/merge-patch+json")
        if plan.create is not None:
            body = run_body(schedule, plan.create)
            created = await self.kube.create(task_path(key[0], "").rstrip("/"), body)
            LOG.info("schedule %s/%s: %s run %s for the tick of %s", key[0], key[1],
                     "made" if created is not None else "found", body["metadata"]["name"],
                     plan.create.strftime(STAMP))
        for run in plan.delete or []:
            await self.kube.delete(task_path(key[0], run.name), uid=run.uid)
        if plan.status is not None and plan.status != schedule.get("status"):
            await self._write_status(key, schedule, plan.status)
        if plan.wake_at is not None:
            self._wake_at(key, plan.wake_at)

    async def _write_status(self, key: Key, schedule: dict[str, Any], status: dict[str, Any]) -> None:
        meta = schedule["metadata"]
        body = {"apiVersion": API_VERSION, "kind": SCHEDULE_KIND,
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta},
                "status": status}
        try:
            updated = await self.kube.request("PUT", schedule_path(key[0], key[1], "status"), body)
        except ApiError as exc:
            if exc.status == 404:
                return
            if exc.status != 409:
                raise
            fresh = await self.kube.get(schedule_path(key[0], key[1]))
            if fresh is not None:
                self.schedule_event("MODIFIED", fresh)  # decided again on the fresh object
            return
        self.schedule_event_quiet(updated)

    def schedule_event_quiet(self, body: dict[str, Any]) -> None:
        """Our own write's answer: cached, not queued again (its watch event may be too)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        self.written[key] = str(meta.get("resourceVersion"))
        if key in self.schedules:
            self.schedules[key]["status"] = dict(body.get("status") or {})
            self.schedules[key]["metadata"]["resourceVersion"] = meta.get("resourceVersion")
