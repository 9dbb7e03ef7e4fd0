"""Queues: an attempt's Job is made only once its task has a slot in its queue.

A LimeTask names its queue in `spec.queue` (`@task(qos=...)`; none: "default"). The limits of a
queue are a cluster-scoped LimeTaskQueue of that name: `maxRunning` (the whole queue),
`maxRunningPerNamespace` and `maxRunningPerApp`. A queue that has no LimeTaskQueue is unlimited
if it is "default", and waits for one (reason QueueNotFound) otherwise.

What runs is counted from the caches, which mirror the cluster (a task holds a slot while the
Job of its current attempt exists and has not finished), plus the grants made and not yet
seen as Jobs. Nothing is counted from memory of past decisions, so the limits hold after a
restart or a change of leader (see `hold` for the grants of a leader that lost its lease); and
no admission is made in a queue with maxRunning before every namespace that can be listed is.

Order among the waiting tasks of a queue (waiting_line.py keeps them, and says what it costs):
- priority first, aged: a task's priority rises by one for every `agingSeconds` it has waited,
  up to the highest priority waiting, so that a task of lower priority is not overtaken for
  ever by newer ones of higher priority (a gap of n points closes in n x agingSeconds);
- then fair share: of the applications whose next task has the highest aged priority, the one
  with the fewest running tasks starts next, and of those the one that started fewest lately
  (a count that halves every minute), so that no application takes every slot by sending more;
- then first in, first out.

Positions: a waiting task's status shows its exact place while it is among the first
POSITIONS_COUNTED of its queue, counted every few seconds; further back it says how many wait
and that its place is written once it is among the first ones. A place is rewritten when it
moved by a quarter (any move near the head) or the count of waiting tasks did, at most every
`refresh_seconds` per task and POSITION_WRITES_PER_SECOND in all: each task's rewrites are few,
and bounded whatever the length of the queue.

Job creations are paced by a token bucket (`job_creates_per_second`, `job_creates_burst`),
over every queue: a burst of tasks becomes pods at that pace. A grant may reserve a token up to
a second ahead; its task comes back when the token is due, with nothing written meanwhile.
Many tasks are admitted in one pass, never one per pass.

A queue with `admission: Kueue` is not limited here: each attempt's Job is made suspended, with
Kueue's queue label, and Kueue admits it. Whether the cluster serves Kueue's API is asked (and
asked again while it does not): without it, the tasks' conditions and the log say that nothing
will admit their Jobs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lime_task.resource import CONDITION_QUEUED, DEFAULT_QUEUE, FINAL_STATES, GROUP, QUEUE_PLURAL, VERSION
from lime_task.validation import parse_time

from . import metrics
from .caches import Caches, Key
from .kube import ApiError, Kube
from .model import JobView, PodView, TaskView
from .waiting_line import Entry, Line, Merge, aged, rank, stamp

__all__ = ["Admission", "Admitted", "Entry", "Grant", "QueueSpec", "Running", "TokenBucket", "Waiting", "aged",
           "holds_slot", "place_to_show", "queue_name", "queued_now", "rank", "stamp", "waiting_attempt",
           "waits_for_kueue"]

LOG = logging.getLogger("limetask.operator.queues")

OPERATOR = "Operator"
KUEUE = "Kueue"
KUEUE_GROUP = "kueue.x-k8s.io"
# Reasons of the Queued condition.
WAITING = "Waiting"
QUEUE_NOT_FOUND = "QueueNotFound"
QUEUE_PAUSED = "QueuePaused"
KUEUE_WAITING = "Kueue"
ADMITTED = "Admitted"

HORIZON = 1.0  # a grant may reserve its Job-creation token this far ahead
GRANT_TTL = 60.0  # a grant whose Job has not appeared in this long is given up (its task asks again)
MIN_PASS_INTERVAL = 0.05
QUEUE_STATUS_PERIOD = 5.0  # a LimeTaskQueue's status is written at most this often
POSITION_WRITES_PER_SECOND = 10.0  # rewrites of waiting tasks' positions, at most
POSITIONS_COUNTED = 100  # a queue's first this many have their exact place in their status
POSITION_NEAR = 10  # within this many of the head, any move of a place is written
POSITION_DRIFT = 0.25  # further back, a move by this share of the place (or of the count waiting)
COUNT_PERIOD = 5.0  # positions are counted this often (and within a second of a task joining)
USAGE_HALF_LIFE = 60.0  # fair share: an application's recent starts count half after this long
KUEUE_CHECK_SECONDS = 60.0  # while a queue hands over to Kueue that is not served, it is asked again


def queue_path(name: str = "", sub: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/{QUEUE_PLURAL}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def queue_name(task: TaskView, default: str = DEFAULT_QUEUE) -> str:
    """The task's queue: its own, else the installation's default queue."""
    return str(task.spec.get("queue") or default)


def queued_now(status: dict[str, Any]) -> dict[str, Any] | None:
    """The task's Queued condition while it is True (the task waits in line), else None."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION_QUEUED
                 and c.get("status") == "True"), None)


def waiting_attempt(status: dict[str, Any]) -> int | None:
    """The attempt a task waits in line for, or None when it does not wait: its status's queue
    block names it (`attempts` counts only the attempts that made a Job). Without that (a status
    written before it did, or a CRD that does not keep the field), it is the attempt after the
    last one that ended: every attempt that made a Job ends in the history before the next."""
    if queued_now(status) is None:
        return None
    block = status.get("queue")
    attempt = block.get("attempt") if isinstance(block, dict) else None
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
        return attempt
    ended = [h.get("attempt") for h in status.get("history") or [] if isinstance(h, dict)]
    return max((a for a in ended if isinstance(a, int) and not isinstance(a, bool)), default=0) + 1


def _limit(spec: dict[str, Any], name: str, low: int) -> int | None:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        return None
    return value


@dataclass(frozen=True)
class QueueSpec:
    name: str
    max_running: int | None = None
    per_namespace: int | None = None
    per_app: int | None = None
    aging_seconds: float = 60.0
    start_timeout: float | None = None  # startTimeoutSeconds: a worker not started by then gives its slot back
    admission: str = OPERATOR
    kueue_queue: str = ""
    exists: bool = True
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "QueueSpec":
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        aging = spec.get("agingSeconds")
        return cls(
            name=str(meta.get("name", "")), max_running=_limit(spec, "maxRunning", 0),
            per_namespace=_limit(spec, "maxRunningPerNamespace", 1), per_app=_limit(spec, "maxRunningPerApp", 1),
            aging_seconds=float(aging) if isinstance(aging, (int, float)) and not isinstance(aging, bool)
            and aging >= 1 else 60.0,
            # Kueue's own waitForPodsReady is the start timeout of the Jobs it admits.
            start_timeout=(float(_limit(spec, "startTimeoutSeconds", 1) or 0) or None)
            if spec.get("admission") != KUEUE else None,
            admission=KUEUE if spec.get("admission") == KUEUE else OPERATOR,
            kueue_queue=str(spec.get("kueueQueueName") or meta.get("name", "")),
            metadata={k: meta[k] for k in ("name", "resourceVersion", "uid") if k in meta},
        )

    @property
    def limited(self) -> bool:
        """Whether the operator counts slots for this queue (it has a limit, and no Kueue)."""
        return self.admission != KUEUE and (self.max_running is not None or self.per_namespace is not None
                                            or self.per_app is not None)

    def limits_text(self) -> str:
        parts = [f"{n} {v}" for n, v in (("maxRunning", self.max_running),
                                          ("maxRunningPerNamespace", self.per_namespace),
                                          ("maxRunningPerApp", self.per_app)) if v is not None]
        return ", ".join(parts) or "no limit"


@dataclass(frozen=True)
class Waiting:
    """Why and where a task waits: what its status says while it is queued. `position` is None
    while the task is not among the first POSITIONS_COUNTED of its queue (or not counted yet);
    `waiting` is how many waited in the queue when the place was counted."""

    queue: str
    reason: str
    message: str
    position: int | None
    waiting: int
    since: str


@dataclass(frozen=True)
class Admitted:
    delay: float = 0.0  # > 0: the token of its Job is reserved this far ahead: come back then
    kueue_queue: str | None = None  # the Job is made suspended, for Kueue


@dataclass
class Grant:
    uid: str
    attempt: int
    queue: str
    namespace: str
    app: str
    not_before: float
    made: float
    kueue_queue: str | None = None


@dataclass(frozen=True)
class Shown:
    """The place a waiting task's status shows (see `shown_place`)."""

    position: int | None
    waiting: int
    updated: float  # epoch seconds


def place_to_show(shown: Shown | None, counted: tuple[int, int] | None, waiting_now: int, now: float,
                  refresh_seconds: float) -> tuple[int | None, int] | None:
    """What a waiting task's status is to show now, (position or None, how many wait), or None
    to keep what it shows. `counted`: its place and the queue's count as last counted, when it
    is among the first ones; `shown`: what its status says, None when it says nothing yet of
    this wait.

    Written at once: the first word of a wait, a first position, a place or a count that moved
    by a quarter (POSITION_DRIFT; near the head that is a move by one). Smaller moves near the
    head wait until the last write is `refresh_seconds` old (so that two tasks trading places
    do not write at every count), and so does a place left for the back of the line. So a
    task's rewrites are few, a handful per halving of its place or of the queue, however long
    it waits."""
    if shown is None:
        return counted if counted is not None else (None, waiting_now)
    stale = now - shown.updated >= refresh_seconds
    if counted is None:
        if shown.position is None:
            return None  # "its position is written once it is among the first ones": still true
        return (None, waiting_now) if stale else None
    if shown.position is None:
        return counted
    position, waiting = counted
    if abs(waiting - shown.waiting) >= max(1.0, POSITION_DRIFT * shown.waiting):
        return counted
    if abs(position - shown.position) >= max(1.0, POSITION_DRIFT * shown.position):
        return counted
    if position != shown.position and position <= POSITION_NEAR and stale:
        return counted
    return None


def shown_place(status: dict[str, Any], queue: str, attempt: int, reason: str) -> Shown | None:
    """The place a task's status shows for this wait (same queue, attempt and reason), or None."""
    cond = queued_now(status)
    block = status.get("queue")
    if cond is None or cond.get("reason") != reason or not isinstance(block, dict) or block.get("name") != queue \
            or waiting_attempt(status) != attempt:
        return None
    updated = parse_time(block.get("updatedAt"))
    position, waiting = block.get("position"), block.get("waiting")
    if updated is None or not isinstance(waiting, int) or (position is not None and not isinstance(position, int)):
        return None
    return Shown(position, waiting, updated.timestamp())


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; a reservation may take a token not yet due."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.at = clock()

    def reserve(self, horizon: float) -> float | None:
        """Take a token: the seconds until it is due (0: now), or None when that is past `horizon`."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        due = max(0.0, (1.0 - self.tokens) / self.rate)
        if due > horizon:
            return None
        self.tokens -= 1.0
        return due

    def next_due(self) -> float:
        """Seconds until a reservation within the horizon can be made again (0: now)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate - HORIZON)


@dataclass
class Running:
    """Tasks holding a slot, per queue, per (queue, namespace) and per (queue, namespace, app);
    and per queue, the Jobs made suspended that wait for Kueue."""

    queue: Counter[str] = field(default_factory=Counter)
    namespace: Counter[tuple[str, str]] = field(default_factory=Counter)
    app: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    kueue: Counter[str] = field(default_factory=Counter)

    def add(self, queue: str, namespace: str, app: str) -> None:
        self.queue[queue] += 1
        self.namespace[(queue, namespace)] += 1
        self.app[(queue, namespace, app)] += 1

    def full(self, q: QueueSpec, namespace: str, app: str) -> str | None:
        """Which limit a task of (namespace, app) would pass in queue q, or None."""
        if q.max_running is not None and self.queue[q.name] >= q.max_running:
            return f"the queue runs {self.queue[q.name]} of its maxRunning {q.max_running}"
        if q.per_namespace is not None and self.namespace[(q.name, namespace)] >= q.per_namespace:
            return f"namespace {namespace} runs {q.per_namespace} (maxRunningPerNamespace)"
        if q.per_app is not None and self.app[(q.name, namespace, app)] >= q.per_app:
            return f"application {app} runs {q.per_app} (maxRunningPerApp)"
        return None


def _mine(task: TaskView, child: JobView | PodView) -> bool:
    return child.task_uid in (task.uid, "")


def holds_slot(task: TaskView, jobs: dict[str, JobView], pods: dict[str, PodView]) -> bool:
    """Whether a task holds a slot: unfinished, with a pod that has not ended and is not being
    deleted (the pod is what runs: also one whose Job went first), or a Job that has not
    finished, is not being deleted, and whose pods have not all ended (its pod is yet to come).
    A Job made suspended for Kueue holds none until Kueue lets its pod be made. Stuck work never
    holds one past its end: a cancelled, timed-out or lost attempt's Job is finished or being
    deleted, and its pod follows."""
    if task.status.get("state") in FINAL_STATES:
        return False
    for pod in pods.values():
        if _mine(task, pod) and not (pod.ended or pod.deleting or pod.gone):
            return True
    for job in jobs.values():
        if not _mine(task, job) or job.finished or job.deleting or job.gone:
            continue
        mine = [p for p in pods.values() if p.attempt == job.attempt and _mine(task, p)]
        if (mine and all(p.ended or p.deleting for p in mine)) or (job.suspended and not mine):
            continue
        return True
    return False


def waits_for_kueue(task: TaskView, jobs: dict[str, JobView], pods: dict[str, PodView]) -> bool:
    """Whether the task's Job is made, suspended, and waits for Kueue to admit it (no pod yet)."""
    if task.status.get("state") in FINAL_STATES:
        return False
    return any(_mine(task, job) and job.suspended and not (job.finished or job.deleting or job.gone)
               and not any(p.attempt == job.attempt and _mine(task, p) for p in pods.values())
               for job in jobs.values())


class Admission:
    """The queues, their waiting tasks, and the grants of slots."""

    def __init__(self, kube: Kube, caches: Caches, enqueue: Callable[[Key], None],
                 enqueue_later: Callable[[Key, float], None], all_synced: Callable[[], bool] = lambda: True,
                 rate: float = 20.0, burst: int = 20,
                 refresh_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 default_queue: str = DEFAULT_QUEUE, open_queues: Iterable[str] = ()) -> None:
        self.kube = kube
        # The queue of a task that names none, and the queues that exist without a LimeTaskQueue.
        self.default_queue = default_queue
        self.open_queues = frozenset(open_queues) | {default_queue}
        self.caches = caches
        self.enqueue = enqueue
        self.enqueue_later = enqueue_later
        # Whether every namespace that can be listed has been: a queue limited over all of them
        # (maxRunning) gives no slot before (tasks reach admit() only once their own namespace is listed).
        self.all_synced = all_synced
        self.clock = clock
        self.bucket = TokenBucket(rate, burst, clock)
        self.refresh_seconds = refresh_seconds
        self.enabled = True  # False: the LimeTaskQueue CRD is not installed (every queue unlimited)
        self.queues: dict[str, QueueSpec] = {}
        self.entries: dict[Key, Entry] = {}
        self.lines: dict[str, Line] = {}  # the waiting tasks of each queue
        self.grants: dict[Key, Grant] = {}
        # The places of each queue's first POSITIONS_COUNTED as last counted: (position, waiting).
        self.positions: dict[Key, tuple[int, int]] = {}
        # Until then (the clock's seconds) no slot is given in a limited queue: see `hold`.
        self.hold_until = 0.0
        # Whether the API server serves Kueue's API (None: not asked yet).
        self.kueue_served: bool | None = None
        self._kueue_asked = -math.inf
        self._kueue_waiting: set[Key] = set()
        # Watched namespaces that cannot be listed: why (see the reconciler's `unlisted`).
        self.unlisted: dict[str, str] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions_at = -math.inf
        self._joined = False  # tasks joined a line since the last count
        self._queue_status: dict[str, tuple[Any, ...]] = {}
        self._queue_status_at: dict[str, float] = {}
        self._writing: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        # Fair share: recent starts per (queue, namespace, app), decaying: (count, when).
        self._usage: dict[tuple[str, str, str], tuple[float, float]] = {}

    # -- queues -------------------------------------------------------------------------
    def queue(self, name: str) -> QueueSpec:
        found = self.queues.get(name)
        if found is not None:
            return found
        # No LimeTaskQueue: the default queue (and, without the CRD, every queue) has no limit.
        return QueueSpec(name, exists=not self.enabled or name in self.open_queues)

    def queue_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name", ""))
        old = self.queues.get(name)
        if event_type == "DELETED":
            self.queues.pop(name, None)
        else:
            self.queues[name] = QueueSpec.from_body(body)
        new = self.queues.get(name)
        line = self.lines.get(name)
        if line is not None and line.aging_seconds != self.queue(name).aging_seconds:
            line.rescore(self.queue(name).aging_seconds)
        if line is not None and ((old is None) != (new is None) or (old and new and (
                old.max_running != new.max_running or old.limits_text() != new.limits_text()))):
            # The reason its tasks wait, or the limits their message names, changed: say so.
            for key in list(line.members):
                self.enqueue(key)
        if new is not None and new.admission == KUEUE and self.kueue_served is not True:
            self._kueue_asked = -math.inf  # ask again at the next pass
        self.poke()

    def listed_queues(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        for name in [n for n in self.queues if ("", n) not in seen]:
            self.queue_event("DELETED", {"metadata": {"name": name}})

    def hold(self, seconds: float) -> None:
        """Give no slot in a limited queue for `seconds`: after taking over a lease, until the
        writes the previous leader may still have had in flight have landed or been dropped
        (leader.py: none outlives its lease), so that the listings count its Jobs."""
        self.hold_until = max(self.hold_until, self.clock() + seconds)
        self.poke()

    def _held(self, q: QueueSpec, now: float) -> bool:
        return q.limited and now < self.hold_until

    def set_unlisted(self, namespaces: dict[str, str]) -> None:
        """The watched namespaces that cannot be listed now, and why (the reconciler's word).
        Their Jobs count as last seen; what they run unseen is not counted."""
        for ns in self.unlisted.keys() - namespaces.keys():
            LOG.info("namespace %s can be listed again: its tasks and Jobs are counted again", ns)
            metrics.NAMESPACE_UNLISTED.labels(ns).set(0)
        for ns in namespaces.keys() - self.unlisted.keys():
            LOG.warning("namespace %s cannot be listed (%s): its tasks wait until it can; its Jobs count "
                        "against maxRunning as last seen, and what it runs unseen is not counted", ns, namespaces[ns])
            metrics.NAMESPACE_UNLISTED.labels(ns).set(1)
        self.unlisted = dict(namespaces)
        self.poke()

    def kueue_note(self, name: str) -> str:
        """What a task waiting for Kueue must also be told: that nothing will admit its Job."""
        if self.queue(name).admission != KUEUE or self.kueue_served is not False:
            return ""
        return (f"; but this cluster does not serve Kueue's API ({KUEUE_GROUP}), so nothing admits it: install "
                f"Kueue, or set admission: Operator on LimeTaskQueue {name}")

    async def check_kueue(self) -> None:
        """Ask the API server whether it serves Kueue's API group; say so when that changes."""
        self._kueue_asked = self.clock()
        try:
            found = await self.kube.get(f"/apis/{KUEUE_GROUP}")
        except ApiError as exc:
            LOG.debug("could not ask whether Kueue is installed: %s", exc)
            return
        served = found is not None
        if served == self.kueue_served:
            return
        self.kueue_served = served
        handed = sorted(n for n, q in self.queues.items() if q.admission == KUEUE)
        if served:
            LOG.info("Kueue's API (%s) is served: Jobs of the queues %s are admitted by Kueue", KUEUE_GROUP, handed)
        elif handed:
            LOG.warning("the queues %s hand admission to Kueue (admission: Kueue), but the API server does not serve "
                        "Kueue's API (%s): their Jobs are made suspended and wait until Kueue is installed",
                        handed, KUEUE_GROUP)
        for key in list(self._kueue_waiting):
            self.enqueue(key)  # their conditions say it

    def _kueue_check_due(self, now: float) -> bool:
        return self.kueue_served is not True and now - self._kueue_asked >= KUEUE_CHECK_SECONDS and any(
            q.admission == KUEUE for q in self.queues.values())

    # -- asking for a slot ----------------------------------------------------------------
    def admit(self, task: TaskView, attempt: int) -> Admitted | Waiting:
        """A slot for this attempt of the task (maybe a token due later), or why it waits."""
        key = (task.namespace, task.name)
        now = self.clock()
        grant = self.grants.get(key)
        if grant is not None and grant.uid == task.uid and grant.attempt == attempt:
            return Admitted(max(0.0, grant.not_before - now), grant.kueue_queue)
        q = self.queue(queue_name(task, self.default_queue))
        entry = self.entries.get(key)
        if entry is not None and (entry.uid != task.uid or entry.attempt != attempt):
            self._drop_entry(key)
            entry = None
        if entry is None and self._may_start_now(q, task, now):
            delay = self.bucket.reserve(HORIZON)
            if delay is not None:
                grant = self._grant(key, task.uid, attempt, q, task.namespace, str(task.spec.get("app", "")),
                                    now, delay, waited=0.0)
                return Admitted(delay, grant.kueue_queue)
        if entry is None:
            entry = self._add_entry(key, task, attempt, q, now)
            self._joined = True
            self.poke()
        return self._waiting(entry, task, now)

    def _grant(self, key: Key, uid: str, attempt: int, q: QueueSpec, namespace: str, app: str, now: float,
               delay: float, waited: float) -> Grant:
        """Give a slot (its Job's token due after `delay`), and count it for fair share and metrics."""
        kueue = q.kueue_queue if q.exists and q.admission == KUEUE else None
        grant = self.grants[key] = Grant(uid, attempt, q.name, namespace, app, now + delay, now, kueue)
        self._started((q.name, namespace, app), now)
        metrics.QUEUE_ADMITTED.labels(q.name).inc()
        metrics.QUEUE_WAIT.labels(q.name).observe(waited)
        return grant

    def seed(self) -> int:
        """Put every task whose status says it waits in line, before any is admitted: after a
        start, a task reconciled early must not take a slot ahead of older ones not reconciled
        yet. How many were put in line."""
        now = self.clock()
        added = 0
        for key, task in self.caches.tasks.items():
            st = task.status
            if key in self.entries or st.get("state") in FINAL_STATES or not task.trusted:
                continue
            waits = queued_now(st)
            if waits is None or waits.get("reason") == KUEUE_WAITING:
                continue
            attempt = waiting_attempt(st)
            if attempt is not None:
                self._add_entry(key, task, attempt, self.queue(queue_name(task, self.default_queue)), now)
                added += 1
        if added:
            self._joined = True
            self.poke()
        return added

    def _may_start_now(self, q: QueueSpec, task: TaskView, now: float) -> bool:
        if not q.exists or q.max_running == 0 or self._held(q, now):
            return False
        if q.name in self.lines:
            return False  # others wait already: no one jumps the line
        if not q.limited:
            return True
        return self.count_running().full(q, task.namespace, str(task.spec.get("app", ""))) is None

    def leave(self, key: Key) -> None:
        """The task no longer waits, nor holds a grant (it finished, went, or has its Job)."""
        self._drop_entry(key)
        self.grants.pop(key, None)

    def release(self, key: Key) -> None:
        """A grant was not used (the API server refused its Job): its slot is free again."""
        if self.grants.pop(key, None) is not None:
            self.poke()

    def _since(self, task: TaskView, attempt: int, now: float) -> float:
        """When this attempt began to wait: kept in its status across restarts, else its
        creation (or its eta) for a first attempt, else now."""
        st = task.status
        block: dict[str, Any] = st["queue"] if isinstance(st.get("queue"), dict) else {}
        if waiting_attempt(st) == attempt:
            since = parse_time(block.get("since"))
            if since is not None:
                return since.timestamp()
        if attempt == 1:
            created = parse_time(task.created)
            eta = parse_time(task.spec.get("eta"))
            found = max([t.timestamp() for t in (created, eta) if t is not None], default=now)
            return min(found, now)
        return now

    def _add_entry(self, key: Key, task: TaskView, attempt: int, q: QueueSpec, now: float) -> Entry:
        priority = task.spec.get("priority")
        entry = Entry(key, task.uid, attempt, q.name, task.namespace, str(task.spec.get("app", "")),
                      priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
                      self._since(task, attempt, now))
        self.entries[key] = entry
        self.lines.setdefault(q.name, Line(q.aging_seconds)).add(entry)
        return entry

    def _drop_entry(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.positions.pop(key, None)
        line = self.lines.get(entry.queue)
        if line is not None:
            line.remove(key)
            if not line:
                del self.lines[entry.queue]

    def _waiting(self, entry: Entry, task: TaskView, now: float) -> Waiting:
        q = self.queue(entry.queue)
        line = self.lines.get(entry.queue)
        if not q.exists:
            reason = QUEUE_NOT_FOUND
        elif q.max_running == 0:
            reason = QUEUE_PAUSED
        else:
            reason = WAITING
        shown = shown_place(task.status, q.name, entry.attempt, reason)
        counted = self.positions.get(entry.key)
        if counted is None and shown is None and line is not None and len(line) <= POSITIONS_COUNTED:
            # A short line: its place is counted now (cheap), not only at the next count.
            ahead = self.order(q.name, now, limit=len(line))
            counted = next(((i, len(line)) for i, e in enumerate(ahead, 1) if e is entry), None)
        place = place_to_show(shown, counted, len(line) if line is not None else 1, now, self.refresh_seconds)
        if place is None:
            assert shown is not None
            place = (shown.position, shown.waiting)
        position, total = place
        if reason == QUEUE_NOT_FOUND:
            message = (f"no LimeTaskQueue named {q.name!r}: the task waits until one is made "
                       f"(kubectl get ltq lists the queues)")
        elif reason == QUEUE_PAUSED:
            message = f"queue {q.name} is paused (maxRunning: 0)"
        elif position is not None:
            message = f"waiting in queue {q.name}: position {position} of {total} ({q.limits_text()})"
        else:
            message = (f"waiting in queue {q.name}; its position is written once it is among the first "
                       f"{POSITIONS_COUNTED} ({q.limits_text()})")
        return Waiting(q.name, reason, message, position, total, entry.since_text)

    def usage(self, key: tuple[str, str, str], now: float) -> float:
        """An application's recent starts in a queue, halving every USAGE_HALF_LIFE seconds."""
        count, at = self._usage.get(key, (0.0, now))
        return float(count * 0.5 ** (max(0.0, now - at) / USAGE_HALF_LIFE))

    def _started(self, key: tuple[str, str, str], now: float) -> None:
        self._usage[key] = (self.usage(key, now) + 1.0, now)
        if len(self._usage) > 10000:  # forget applications that have not started anything lately
            self._usage = {k: v for k, v in self._usage.items() if self.usage(k, now) > 0.01}

    # -- counting -----------------------------------------------------------------------
    def count_running(self) -> Running:
        """What holds a slot now: from the caches (the cluster), plus grants not yet seen as Jobs;
        and the Jobs that wait for Kueue."""
        run = Running()
        now = self.clock()
        kueue_waiting: set[Key] = set()
        for key in {*self.caches.jobs, *self.caches.pods}:
            task = self.caches.tasks.get(key)
            if task is None:
                continue
            jobs, pods = self.caches.jobs.get(key) or {}, self.caches.pods.get(key) or {}
            if holds_slot(task, jobs, pods):
                run.add(queue_name(task, self.default_queue), task.namespace, str(task.spec.get("app", "")))
            elif waits_for_kueue(task, jobs, pods):
                run.kueue[queue_name(task, self.default_queue)] += 1
                kueue_waiting.add(key)
        self._kueue_waiting = kueue_waiting
        for key, grant in list(self.grants.items()):
            made = any(j.attempt >= grant.attempt and j.task_uid in (grant.uid, "")
                       for j in (self.caches.jobs.get(key) or {}).values())
            if made:
                del self.grants[key]  # counted from its Job now (or finished already)
            elif now - grant.made > GRANT_TTL:
                del self.grants[key]
                self.enqueue(key)  # ask again
            else:
                run.add(grant.queue, grant.namespace, grant.app)
        return run

    # -- the dispatcher -----------------------------------------------------------------
    def poke(self) -> None:
        """Something changed that may free a slot or need one: a pass is due (cheap when none waits)."""
        if self._wake is not None and self.entries:
            self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="queues")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._background) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._background.clear()

    def _spawn(self, coro: Any, name: str) -> None:
        """A write or a question that must not hold up the pass; stopped with the queues."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            # With tasks waiting, a pass at least every second (tokens come due, grants expire);
            # without, every few seconds for the queues' metrics and statuses.
            now = self.clock()
            timeout = max(0.05, min(self.bucket.next_due() or 1.0, 1.0)) if self.entries else QUEUE_STATUS_PERIOD
            if now < self.hold_until:
                timeout = max(0.05, min(timeout, self.hold_until - now))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                now = self.clock()
                if self._kueue_check_due(now):
                    self._kueue_asked = now
                    self._spawn(self.check_kueue(), "kueue-check")
                self.dispatch()
                since = now - self._positions_at
                if since >= min(COUNT_PERIOD, self.refresh_seconds / 2) or (self._joined and since >= 1.0):
                    self._positions_at = now
                    self._joined = False
                    self.refresh_positions()
            except Exception:  # noqa: BLE001 - a bad pass must not stop the queues
                LOG.exception("queue pass failed")
            await asyncio.sleep(MIN_PASS_INTERVAL)

    def _line_order(self) -> list[str]:
        """Queues whose oldest waiting task waited longest first (they go first for the tokens)."""
        def oldest(name: str) -> float:
            entry = self.lines[name].oldest()
            return entry.since if entry is not None else math.inf
        return sorted(self.lines, key=oldest)

    def dispatch(self) -> int:
        """Admit as many waiting tasks as the limits and the token bucket allow; how many."""
        if not self.entries:
            return 0
        now = self.clock()
        run = self.count_running()
        admitted = 0
        for name in self._line_order():
            q = self.queue(name)
            if not q.exists or q.max_running == 0 or self._held(q, now) or (
                    q.max_running is not None and not self.all_synced()):
                continue
            if self._full(q, run):
                continue
            if self.bucket.next_due() > 0:
                return admitted  # no token within the horizon: the next pass goes on

            def eligible(namespace: str, app: str, q: QueueSpec = q) -> bool:
                return q.admission == KUEUE or run.full(q, namespace, app) is None

            merge = Merge(self.lines[name], name, now, running=lambda k: run.app[k],
                          usage=lambda k: self.usage(k, now), eligible=eligible)
            while not self._full(q, run):
                entry = merge.peek()
                if entry is None:
                    break
                delay = self.bucket.reserve(HORIZON)
                if delay is None:
                    return admitted
                self._drop_entry(entry.key)
                self._grant(entry.key, entry.uid, entry.attempt, q, entry.namespace, entry.app, now, delay,
                            waited=max(0.0, now - entry.since))
                run.add(q.name, entry.namespace, entry.app)
                admitted += 1
                if delay > 0:
                    self.enqueue_later(entry.key, delay)
                else:
                    self.enqueue(entry.key)
                merge.taken(entry)
                merge.recheck(entry.namespace)
        return admitted

    @staticmethod
    def _full(q: QueueSpec, run: Running) -> bool:
        return q.max_running is not None and q.admission != KUEUE and run.queue[q.name] >= q.max_running

    def order(self, name: str, now: float | None = None, running: Running | None = None,
              limit: int | None = None) -> list[Entry]:
        """The waiting tasks of a queue in the order they would start, if nothing ended meanwhile
        (limits aside): their positions. The first `limit` only, at O(A + limit log A) for A
        applications waiting (waiting_line.py)."""
        line = self.lines.get(name)
        if line is None:
            return []
        now = self.clock() if now is None else now
        counted = running if running is not None else self.count_running()
        run: Counter[tuple[str, str, str]] = Counter()
        started: Counter[tuple[str, str, str]] = Counter()
        merge = Merge(line, name, now, running=lambda k: counted.app[k] + run[k],
                      usage=lambda k: self.usage(k, now) + started[k])
        out: list[Entry] = []
        while limit is None or len(out) < limit:
            entry = merge.peek()
            if entry is None:
                break
            out.append(entry)
            app = (name, entry.namespace, entry.app)
            run[app] += 1
            started[app] += 1
            merge.taken(entry)
        return out

    def refresh_positions(self) -> None:
        """Count the places of each queue's first POSITIONS_COUNTED; the statuses that are to
        show another place (`place_to_show`) are rewritten, nearest the head first, at most
        POSITION_WRITES_PER_SECOND; the queues' metrics and statuses follow. Its cost does not
        grow with the number waiting beyond the first ones."""
        now = self.clock()
        budget = int(POSITION_WRITES_PER_SECOND * min(COUNT_PERIOD, self.refresh_seconds / 2)) or 1
        run = self.count_running()
        counted: dict[Key, tuple[int, int]] = {}
        for name in set(self.lines) | set(self.queues) | metrics.queue_names():
            line = self.lines.get(name)
            waiting = len(line) if line is not None else 0
            for i, entry in enumerate(self.order(name, now, run, limit=POSITIONS_COUNTED), 1):
                counted[entry.key] = (i, waiting)
            oldest_entry = line.oldest() if line is not None else None
            oldest = oldest_entry.since if oldest_entry is not None else None
            # Jobs made suspended for Kueue wait too (in Kueue's line, not this one).
            metrics.set_queue(name, waiting=waiting + run.kueue[name], running=run.queue[name],
                              oldest_wait=(now - oldest) if oldest is not None else 0.0)
            q = self.queues.get(name)
            if q is not None:
                self._write_queue_status(q, run.queue[name], waiting + run.kueue[name], oldest, now)
        previous, self.positions = self.positions, counted
        due: list[tuple[int, Key]] = []
        for key in counted.keys() | previous.keys():
            waiter, task = self.entries.get(key), self.caches.tasks.get(key)
            if waiter is None or task is None:
                continue
            wait = self._waiting(waiter, task, now)
            shown = shown_place(task.status, wait.queue, waiter.attempt, wait.reason)
            if shown is None or (shown.position, shown.waiting) != (wait.position, wait.waiting):
                due.append((counted.get(key, (POSITIONS_COUNTED + 1, 0))[0], key))
        for _, key in sorted(due)[:budget]:
            self.enqueue(key)

    def _write_queue_status(self, q: QueueSpec, running: int, waiting: int, oldest: float | None, now: float) -> None:
        since = "" if oldest is None else stamp(oldest)
        unlisted = sorted(self.unlisted) if q.max_running is not None else []
        state = (running, waiting, since, tuple(unlisted))
        if self._queue_status.get(q.name) == state or q.name in self._writing:
            return
        if now - self._queue_status_at.get(q.name, 0.0) < QUEUE_STATUS_PERIOD:
            return
        self._writing.add(q.name)
        self._queue_status_at[q.name] = now

        async def write() -> None:
            status: dict[str, Any] = {"running": running, "waiting": waiting, "updatedAt": stamp(now)}
            if since:
                status["oldestWaitingSince"] = since
            if unlisted:
                status["unlistedNamespaces"] = unlisted
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": q.metadata,
                    "status": status}
            try:
                await self.kube.request("PUT", queue_path(q.name, "status"), body)
                self._queue_status[q.name] = state
            except ApiError as exc:
                # A conflict (the queue changed): its watch event brings the new version; try again then.
                LOG.debug("queue %s: status not written: %s", q.name, exc)
            finally:
                self._writing.discard(q.name)

        self._spawn(write(), f"queue-status-{q.name}")
