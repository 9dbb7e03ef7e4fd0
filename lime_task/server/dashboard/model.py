"""What the dashboard shows, as pure functions: a task's summary, who sees what, filters, pages,
counts and the figures behind the charts. No I/O here: the watch (`watch.py`) and the archive
hand their data in, and the routes (`../routes/dashboard.py`) hand the results out."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ...resource import FAILURE, STATES
from ...status import TaskStatus

# Steps of the time axis, in seconds: the smallest that gives at most MAX_BUCKETS bars.
STEPS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 24 * 3600)
MAX_BUCKETS = 120
# Run-time percentiles are drawn for the task names run most often in the window.
TOP_TASKS = 15
MESSAGE_MAX = 300


def _epoch(when: dt.datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


def summary_of(body: Mapping[str, Any], archived: bool = False) -> dict[str, Any]:
    """A task as a row of the list: small, JSON-ready, without arguments or result (those are in
    the detail). Times are RFC 3339, and also Unix seconds for sorting and charts."""
    s = TaskStatus.from_resource(dict(body), archived=archived)
    created, started, completed = _epoch(s.created_at), _epoch(s.started_at), _epoch(s.completed_at)
    duration = completed - started if completed is not None and started is not None else None
    return {
        "id": s.id, "app": s.app, "task": s.task, "state": s.status,
        "reason": s.error.reason if s.error else "",
        "message": (s.error.message[:MESSAGE_MAX] if s.error else (s.queue_message or ""))[:MESSAGE_MAX],
        "attempts": s.attempts, "queue": s.queue, "priority": s.priority, "queued": s.queued,
        "queue_reason": s.queue_reason, "position": s.queue_position,
        "queued_since": _epoch(s.queued_since),
        "created_at": s.created_at.isoformat() if s.created_at else None,
        "started_at": s.started_at.isoformat() if s.started_at else None,
        "completed_at": s.completed_at.isoformat() if s.completed_at else None,
        "created": created, "started": started, "completed": completed, "duration": duration,
        "when": completed if completed is not None else (created or 0.0),
        "event_confirmed": s.event_confirmed, "archived": archived, "namespace": s.namespace,
    }


@dataclass(frozen=True)
class Scope:
    """Who looks: one application's token sees that application only; a platform token or an
    allowed Kubernetes identity sees every application (`apps` None)."""

    kind: str  # "app", "platform" or "kubernetes"
    apps: frozenset[str] | None
    may_cancel: bool
    name: str = ""

    def allows(self, app: str) -> bool:
        return self.apps is None or app in self.apps

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "apps": None if self.apps is None else sorted(self.apps),
                "cancel": self.may_cancel, "name": self.name}


@dataclass(frozen=True)
class Filters:
    """The list's filters: all optional; a task name matches by prefix (a package's tasks)."""

    app: str | None = None
    task: str | None = None
    state: str | None = None
    reason: str | None = None
    since: float | None = None  # a finished task's completion, an unfinished one's creation
    until: float | None = None
    id: str | None = None

    def matches(self, row: Mapping[str, Any]) -> bool:
        return ((self.app is None or row["app"] == self.app)
                and (self.task is None or str(row["task"]).startswith(self.task))
                and (self.state is None or row["state"] == self.state)
                and (self.reason is None or row["reason"] == self.reason)
                and (self.since is None or row["when"] >= self.since)
                and (self.until is None or row["when"] < self.until)
                and (self.id is None or row["id"] == self.id))

    def without_state(self) -> "Filters":
        return replace(self, state=None)


def visible(rows: Iterable[Mapping[str, Any]], scope: Scope, filters: Filters) -> list[Mapping[str, Any]]:
    """The rows the scope may see that match the filters, newest first (ties by id: a stable
    order, so that offsets page reliably)."""
    found = [r for r in rows if scope.allows(r["app"]) and filters.matches(r)]
    found.sort(key=lambda r: (-r["when"], r["id"]))
    return found


def count_states(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return counts


def add_counts(*parts: Mapping[str, int]) -> dict[str, int]:
    total = dict.fromkeys(STATES, 0)
    for part in parts:
        for state, n in part.items():
            total[state] = total.get(state, 0) + n
    return total


# -- charts ---------------------------------------------------------------------------------

def pick_step(since: float, until: float) -> int:
    """Seconds per bar: the smallest step that keeps the window within MAX_BUCKETS bars, once
    its start is put on a whole step (see `axis`); ValueError when even a day is too short."""
    for step in STEPS:
        if bucket_count(since // step * step, until, step) <= MAX_BUCKETS:
            return step
    raise ValueError(f"a chart has at most {MAX_BUCKETS} bars of at most a day: the window spans "
                     f"{math.ceil((until - since) / STEPS[-1])} days")


def axis(since: float, until: float) -> tuple[float, int, int]:
    """The time axis of a window: its start on a whole step (minutes, hours, days; UTC), the
    step, and how many bars."""
    step = pick_step(since, until)
    start = since // step * step
    return start, step, bucket_count(start, until, step)


def bucket_count(since: float, until: float, step: int) -> int:
    return max(1, math.ceil((until - since) / step))


def _bucket(t: float | None, since: float, until: float, step: int) -> int | None:
    if t is None or t < since or t >= until:
        return None
    return int((t - since) // step)


@dataclass
class Series:
    """Counts per bucket of the time axis, by a key (a state, a reason)."""

    size: int

    def __post_init__(self) -> None:
        self.by: dict[str, list[int]] = {}

    def add(self, key: str, index: int, n: int = 1) -> None:
        if 0 <= index < self.size:
            self.by.setdefault(key, [0] * self.size)[index] += n

    def as_dict(self) -> dict[str, list[int]]:
        return {k: self.by[k] for k in sorted(self.by)}


def live_throughput(rows: Iterable[Mapping[str, Any]], since: float, until: float, step: int,
                    throughput: Series, reasons: Series) -> None:
    """Sent, started and finished (by state) per bucket, and failure reasons per bucket."""
    for r in rows:
        for key, t in (("sent", r["created"]), ("started", r["started"])):
            i = _bucket(t, since, until, step)
            if i is not None:
                throughput.add(key, i)
        i = _bucket(r["completed"], since, until, step)
        if i is not None:
            throughput.add(r["state"], i)
            if r["state"] == FAILURE:
                reasons.add(r["reason"] or "Unknown", i)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def runtimes(durations: Mapping[str, Sequence[float]], top: int = TOP_TASKS) -> list[dict[str, Any]]:
    """Run-time percentiles per task name, for the names run most often."""
    out: list[dict[str, Any]] = []
    for task, values in durations.items():
        ordered = sorted(values)
        if ordered:
            out.append({"task": task, "count": len(ordered), "p50": percentile(ordered, 0.5),
                        "p90": percentile(ordered, 0.9), "p99": percentile(ordered, 0.99), "max": ordered[-1]})
    out.sort(key=lambda x: (-x["count"], x["task"]))
    return out[:top]


def live_durations(rows: Iterable[Mapping[str, Any]], since: float, until: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["duration"] is not None and since <= r["completed"] < until:
            out.setdefault(r["task"], []).append(max(0.0, r["duration"]))
    return out


def queues(rows: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    """Per queue: how many wait and run now, and how long the waiting ones have waited."""
    found: dict[str, dict[str, Any]] = {}
    waits: dict[str, list[float]] = {}
    for r in rows:
        if r["state"] not in ("PENDING", "STARTED"):
            continue
        q = found.setdefault(r["queue"], {"queue": r["queue"], "waiting": 0, "running": 0})
        if r["queued"]:
            q["waiting"] += 1
            waits.setdefault(r["queue"], []).append(max(0.0, now - (r["queued_since"] or r["created"] or now)))
        elif r["state"] == "STARTED":
            q["running"] += 1
    for name, q in found.items():
        ordered = sorted(waits.get(name, ()))
        q["wait_p50"] = percentile(ordered, 0.5) if ordered else None
        q["wait_max"] = ordered[-1] if ordered else None
    return sorted(found.values(), key=lambda q: (-q["waiting"], q["queue"]))


def next_runs(schedules: Iterable[Mapping[str, Any]], now: dt.datetime, count: int = 3) -> list[dict[str, Any]]:
    """The next runs of each schedule (none while suspended, or when its expression is wrong)."""
    from ... import crontab
    from ...errors import InvalidTaskError

    out = []
    for s in schedules:
        runs: list[str] = []
        problem = s.get("problem")
        if not s.get("suspend") and s.get("schedule"):
            try:
                tz = crontab.zone(s.get("time_zone"))
                # cronsim's own error is no ValueError: check first, for InvalidTaskError and its words.
                crontab.check(str(s["schedule"]), seconds=True)
                after = now
                for _ in range(count):
                    tick = crontab.next_tick(str(s["schedule"]), tz, after)
                    if tick is None:
                        break
                    runs.append(tick.isoformat())
                    after = tick
            except (InvalidTaskError, ValueError) as exc:
                problem = problem or str(exc)
        out.append({"name": s.get("name"), "app": s.get("app"), "task": s.get("task"),
                    "schedule": s.get("schedule"), "time_zone": s.get("time_zone") or "UTC",
                    "suspend": bool(s.get("suspend")), "active": s.get("active", 0),
                    "last_schedule_time": s.get("last_schedule_time"), "next": runs, "problem": problem})
    out.sort(key=lambda x: (x["next"][0] if x["next"] else "~", x["name"] or ""))
    return out


def clean(value: Any) -> Any:
    """NaN as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value
