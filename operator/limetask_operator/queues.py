"""Queues: an attempt's Job is made only once its task has a slot in its queue.

A LimeTask names its queue in `spec.queue` (`@task(qos=...)`; none: "default"). The limits of a
queue are a cluster-scoped LimeTaskQueue of that name: `maxRunning` (the whole queue),
`maxRunningPerNamespace` and `maxRunningPerApp`. A queue that has no LimeTaskQueue is unlimited
if it is "default", and waits for one (reason QueueNotFound) otherwise.

What runs is counted from the caches, which mirror the cluster (a task holds a slot while the
Job of its current attempt exists and has not finished), plus the grants made and not yet
seen as Jobs. Nothing is counted from memory of past decisions, so the limits hold after a
restart or a change of leader; and no admission is made before every listing is done.

Order among the waiting tasks of a queue:
- priority first, aged: a task's priority rises by one for every `agingSeconds` it has waited,
  up to the highest priority waiting, so that no task waits forever behind newer ones of
  higher priority;
- then fair share: of the applications whose next task has the highest aged priority, the one
  with the fewest running tasks starts next, and of those the one that started fewest lately
  (a count that halves every minute), so that no application takes every slot by sending more;
- then first in, first out.
Within one application the order is static: aged priority is `priority + (now - since) /
agingSeconds`, so `priority - since / agingSeconds` orders its tasks at any time, and a heap
per application keeps them. Between applications, the cap keeps ageing from undoing fair
share: tasks of one class all reach its top, and there the application running fewest goes.

Job creations are paced by a token bucket (`job_creates_per_second`, `job_creates_burst`),
over every queue: a burst of tasks becomes pods at that pace. A grant may reserve a token up to
a second ahead; its task comes back when the token is due, with nothing written meanwhile.
Many tasks are admitted in one pass, never one per pass.

A queue with `admission: Kueue` is not limited here: each attempt's Job is made suspended, with
Kueue's queue label, and Kueue admits it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lime_task.resource import CONDITION_QUEUED, DEFAULT_QUEUE, FINAL_STATES, GROUP, QUEUE_PLURAL, VERSION
from lime_task.validation import parse_time

from . import metrics
from .caches import Caches, Key
from .kube import ApiError, Kube
from .model import JobView, TaskView

LOG = logging.getLogger("limetask.operator.queues")

OPERATOR = "Operator"
KUEUE = "Kueue"
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
USAGE_HALF_LIFE = 60.0  # fair share: an application's recent starts count half after this long


def queue_path(name: str = "", sub: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/{QUEUE_PLURAL}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def queue_name(task: TaskView) -> str:
    return str(task.spec.get("queue") or DEFAULT_QUEUE)


def queued_now(status: dict[str, Any]) -> dict[str, Any] | None:
    """The task's Queued condition while it is True (the task waits in line), else None."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION_QUEUED
                 and c.get("status") == "True"), None)


def stamp(epoch: float) -> str:
    """Unix seconds as the API's RFC 3339 time (UTC)."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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

    def limits_text(self) -> str:
        parts = [f"{n} {v}" for n, v in (("maxRunning", self.max_running),
                                          ("maxRunningPerNamespace", self.per_namespace),
                                          ("maxRunningPerApp", self.per_app)) if v is not None]
        return ", ".join(parts) or "no limit"


@dataclass(frozen=True)
class Waiting:
    """Why and where a task waits: what its status says while it is queued."""

    queue: str
    reason: str
    message: str
    position: int
    waiting: int
    since: str
    refresh_seconds: float = 30.0


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


@dataclass
class Entry:
    key: Key
    uid: str
    attempt: int
    queue: str
    namespace: str
    app: str
    priority: int
    since: float  # epoch seconds: when this attempt began to wait (FIFO and ageing)

    @property
    def since_text(self) -> str:
        return stamp(self.since)


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
        """Seconds until a reservation within the horizon can be made again."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate - HORIZON)


@dataclass
class Running:
    """Tasks holding a slot, per queue, per (queue, namespace) and per (queue, namespace, app)."""

    queue: Counter[str] = field(default_factory=Counter)
    namespace: Counter[tuple[str, str]] = field(default_factory=Counter)
    app: Counter[tuple[str, str, str]] = field(default_factory=Counter)

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


def aged(entry: Entry, q: QueueSpec, now: float, top: int) -> int:
    """A waiting task's priority, raised by one for every agingSeconds it has waited, up to `top`
    (the highest priority waiting): a task that waited long enough competes with the highest
    class, where fair share and then age decide; ageing never puts an application ahead of
    another of the same class."""
    return min(entry.priority + int(max(0.0, now - entry.since) // q.aging_seconds), max(top, entry.priority))


def rank(entry: Entry, q: QueueSpec, now: float, top: int, running: int, usage: float) -> tuple[Any, ...]:
    """The order of applications' next tasks (lowest first): aged priority, then the application
    running fewest, then the one that started fewest lately, then the oldest."""
    return (-aged(entry, q, now, top), running, round(usage, 6), entry.since, entry.key)


def holds_slot(task: TaskView, jobs: dict[str, JobView], pods: dict[str, Any]) -> bool:
    """Whether a task holds a slot: unfinished, with a pod that has not ended and is not being
    deleted (the pod is what runs: also one whose Job went first), or a Job that has not
    finished, is not being deleted, and whose pods have not all ended (its pod is yet to come).
    Stuck work never holds one past its end: a cancelled, timed-out or lost attempt's Job is
    finished or being deleted, and its pod follows."""
    if task.status.get("state") in FINAL_STATES:
        return False
    for pod in pods.values():
        if pod.task_uid in (task.uid, "") and not (pod.ended or pod.deleting or pod.gone):
            return True
    for job in jobs.values():
        if job.task_uid not in (task.uid, "") or job.finished or job.deleting or job.gone:
            continue
        mine = [p for p in pods.values() if p.attempt == job.attempt and p.task_uid in (task.uid, "")]
        if mine and all(p.ended or p.deleting for p in mine):
            continue
        return True
    return False


class Admission:
    """The queues, their waiting tasks, and the grants of slots."""

    def __init__(self, kube: Kube, caches: Caches, enqueue: Callable[[Key], None],
                 enqueue_later: Callable[[Key, float], None], all_synced: Callable[[], bool] = lambda: True,
                 rate: float = 20.0, burst: int = 20,
                 refresh_seconds: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.caches = caches
        self.enqueue = enqueue
        self.enqueue_later = enqueue_later
        # Whether every namespace has been listed: a queue limited over all of them (maxRunning)
        # gives no slot before (tasks reach admit() only once their own namespace is listed).
        self.all_synced = all_synced
        self.clock = clock
        self.bucket = TokenBucket(rate, burst, clock)
        self.refresh_seconds = refresh_seconds
        self.enabled = True  # False: the LimeTaskQueue CRD is not installed (every queue unlimited)
        self.queues: dict[str, QueueSpec] = {}
        self.entries: dict[Key, Entry] = {}
        self.waiting: Counter[str] = Counter()  # entries per queue
        # queue -> (namespace, app) -> heap of (-static score, since, sequence, entry)
        self.heaps: dict[str, dict[tuple[str, str], list[tuple[float, float, int, Entry]]]] = {}
        self.grants: dict[Key, Grant] = {}
        self.positions: dict[Key, tuple[int, int]] = {}
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions_at = 0.0
        self._queue_status: dict[str, tuple[int, int, str]] = {}
        self._queue_status_at: dict[str, float] = {}
        self._writing: set[str] = set()
        # Fair share: recent starts per (queue, namespace, app), decaying: (count, when).
        self._usage: dict[tuple[str, str, str], tuple[float, float]] = {}

    # -- queues -------------------------------------------------------------------------
    def queue(self, name: str) -> QueueSpec:
        found = self.queues.get(name)
        if found is not None:
            return found
        # No LimeTaskQueue: the default queue (and, without the CRD, every queue) has no limit.
        return QueueSpec(name, exists=not self.enabled or name == DEFAULT_QUEUE)

    def queue_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name", ""))
        old = self.queues.get(name)
        if event_type == "DELETED":
            self.queues.pop(name, None)
        else:
            self.queues[name] = QueueSpec.from_body(body)
        new = self.queues.get(name)
        if old is None or new is None or old.aging_seconds != new.aging_seconds:
            self._rebuild(name)
        if (old is None) != (new is None) or (old and new and old.max_running != new.max_running):
            # The reason its tasks wait changed (QueueNotFound, QueuePaused): say so in their statuses.
            for key, entry in list(self.entries.items()):
                if entry.queue == name:
                    self.enqueue(key)
        self.poke()

    def listed_queues(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        for name in [n for n in self.queues if ("", n) not in seen]:
            self.queue_event("DELETED", {"metadata": {"name": name}})

    # -- asking for a slot ----------------------------------------------------------------
    def admit(self, task: TaskView, attempt: int) -> Admitted | Waiting:
        """A slot for this attempt of the task (maybe a token due later), or why it waits."""
        key = (task.namespace, task.name)
        now = self.clock()
        grant = self.grants.get(key)
        if grant is not None and grant.uid == task.uid and grant.attempt == attempt:
            return Admitted(max(0.0, grant.not_before - now), grant.kueue_queue)
        q = self.queue(queue_name(task))
        entry = self.entries.get(key)
        if entry is not None and (entry.uid != task.uid or entry.attempt != attempt):
            self._drop_entry(key)
            entry = None
        if entry is None and self._may_start_now(q, task):
            delay = self.bucket.reserve(HORIZON)
            if delay is not None:
                grant = self._grant(key, task.uid, attempt, q, task.namespace, str(task.spec.get("app", "")),
                                    now, delay, waited=0.0)
                return Admitted(delay, grant.kueue_queue)
        if entry is None:
            entry = self._add_entry(key, task, attempt, q, now)
            self.poke()
        return self._waiting(entry)

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
            attempt = int(st.get("attempts") or 0)
            if attempt >= 1:
                self._add_entry(key, task, attempt, self.queue(queue_name(task)), now)
                added += 1
        if added:
            self.poke()
        return added

    def _may_start_now(self, q: QueueSpec, task: TaskView) -> bool:
        if not q.exists or q.max_running == 0:
            return False
        if self.waiting[q.name]:
            return False  # others wait already: no one jumps the line
        if q.admission == KUEUE or (q.max_running is None and q.per_namespace is None and q.per_app is None):
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
        if queued_now(st) is not None and int(st.get("attempts") or 0) == attempt:
            stamp = parse_time(block.get("since"))
            if stamp is not None:
                return stamp.timestamp()
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
        self.waiting[entry.queue] += 1
        self._push(entry, q)
        return entry

    def _push(self, entry: Entry, q: QueueSpec) -> None:
        score = entry.priority - entry.since / q.aging_seconds
        heap = self.heaps.setdefault(entry.queue, {}).setdefault((entry.namespace, entry.app), [])
        heapq.heappush(heap, (-score, entry.since, next(self._seq), entry))

    def _rebuild(self, name: str) -> None:
        self.heaps.pop(name, None)
        q = self.queue(name)
        for entry in self.entries.values():
            if entry.queue == name:
                self._push(entry, q)

    def _drop_entry(self, key: Key) -> None:
        # Its heap item goes lazily (_head skips what is no longer an entry).
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.positions.pop(key, None)
            self.waiting[entry.queue] -= 1
            if self.waiting[entry.queue] <= 0:
                del self.waiting[entry.queue]

    def _head(self, heap: list[tuple[float, float, int, Entry]]) -> Entry | None:
        while heap and self.entries.get(heap[0][3].key) is not heap[0][3]:
            heapq.heappop(heap)
        return heap[0][3] if heap else None

    def _waiting(self, entry: Entry) -> Waiting:
        q = self.queue(entry.queue)
        in_queue = self.waiting[entry.queue]
        position, total = self.positions.get(entry.key, (in_queue, in_queue))
        if not q.exists:
            reason = QUEUE_NOT_FOUND
            message = (f"no LimeTaskQueue named {q.name!r}: the task waits until one is made "
                       f"(kubectl get ltq lists the queues)")
        elif q.max_running == 0:
            reason, message = QUEUE_PAUSED, f"queue {q.name} is paused (maxRunning: 0)"
        else:
            reason = WAITING
            message = f"waiting in queue {q.name}: position {position} of {total} ({q.limits_text()})"
        return Waiting(q.name, reason, message, position, total, entry.since_text, self.refresh_seconds)

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
        """What holds a slot now: from the caches (the cluster), plus grants not yet seen as Jobs."""
        run = Running()
        now = self.clock()
        for key in {*self.caches.jobs, *self.caches.pods}:
            task = self.caches.tasks.get(key)
            if task is None:
                continue
            if holds_slot(task, self.caches.jobs.get(key) or {}, self.caches.pods.get(key) or {}):
                run.add(queue_name(task), task.namespace, str(task.spec.get("app", "")))
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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            # With tasks waiting, a pass at least every second (tokens come due, grants expire);
            # without, every few seconds for the queues' metrics and statuses.
            timeout = max(0.05, min(self.bucket.next_due() or 1.0, 1.0)) if self.entries else QUEUE_STATUS_PERIOD
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                self.dispatch()
                now = self.clock()
                if now - self._positions_at >= min(5.0, self.refresh_seconds / 2):
                    self._positions_at = now
                    self.refresh_positions()
            except Exception:  # noqa: BLE001 - a bad pass must not stop the queues
                LOG.exception("queue pass failed")
            await asyncio.sleep(MIN_PASS_INTERVAL)

    def dispatch(self) -> int:
        """Admit as many waiting tasks as the limits and the token bucket allow; how many."""
        if not self.entries:
            return 0
        now = self.clock()
        run = self.count_running()
        admitted = 0
        # Queues whose oldest waiting task waited longest go first for the tokens.
        order = sorted(self.heaps, key=lambda n: min((e.since for e in self._heads(n)), default=math.inf))
        for name in order:
            q = self.queue(name)
            if not q.exists or q.max_running == 0 or (q.max_running is not None and not self.all_synced()):
                continue
            while True:
                entry = self._pick(q, run, now)
                if entry is None:
                    break
                delay = self.bucket.reserve(HORIZON)
                if delay is None:
                    return admitted  # no token within the horizon: the next pass goes on
                self._drop_entry(entry.key)
                self._grant(entry.key, entry.uid, entry.attempt, q, entry.namespace, entry.app, now, delay,
                            waited=max(0.0, now - entry.since))
                run.add(q.name, entry.namespace, entry.app)
                admitted += 1
                if delay > 0:
                    self.enqueue_later(entry.key, delay)
                else:
                    self.enqueue(entry.key)
        return admitted

    def _heads(self, name: str) -> list[Entry]:
        heads = []
        for heap in self.heaps.get(name, {}).values():
            head = self._head(heap)
            if head is not None:
                heads.append(head)
        return heads

    def _pick(self, q: QueueSpec, run: Running, now: float) -> Entry | None:
        """The next task of queue q: highest aged priority, then the application running the
        fewest, then the oldest; None when the queue is full or every head is at a limit."""
        if q.max_running is not None and q.admission != KUEUE and run.queue[q.name] >= q.max_running:
            return None
        best: tuple[Any, ...] | None = None
        found: Entry | None = None
        apps = self.heaps.get(q.name, {})
        heads = []
        for app_key in list(apps):
            head = self._head(apps[app_key])
            if head is None:
                del apps[app_key]
            elif q.admission == KUEUE or run.full(q, head.namespace, head.app) is None:
                heads.append(head)
        top = max((h.priority for h in heads), default=0)
        for head in heads:
            app = (q.name, head.namespace, head.app)
            ranked = rank(head, q, now, top, run.app[app], self.usage(app, now))
            if best is None or ranked < best:
                best, found = ranked, head
        return found

    def order(self, name: str, now: float | None = None, running: Running | None = None) -> list[Entry]:
        """Every waiting task of a queue in the order they would start, if nothing ended meanwhile
        (limits aside): their positions."""
        q = self.queue(name)
        now = self.clock() if now is None else now
        heaps = {k: list(h) for k, h in self.heaps.get(name, {}).items()}
        counted = running if running is not None else self.count_running()
        run = Counter({k: v for k, v in counted.app.items() if k[0] == name})
        usage = {k: self.usage(k, now) for k in self._usage if k[0] == name}
        out: list[Entry] = []
        while True:
            best: tuple[Any, ...] | None = None
            pick: tuple[str, str] | None = None
            heads = {app_key: head for app_key, heap in heaps.items() if (head := self._head(heap)) is not None}
            top = max((h.priority for h in heads.values()), default=0)
            for app_key, head in heads.items():
                app = (name, head.namespace, head.app)
                ranked = rank(head, q, now, top, run[app], usage.get(app, 0.0))
                if best is None or ranked < best:
                    best, pick = ranked, app_key
            if pick is None:
                return out
            entry = heapq.heappop(heaps[pick])[3]
            out.append(entry)
            run[(name, entry.namespace, entry.app)] += 1
            usage[(name, entry.namespace, entry.app)] = usage.get((name, entry.namespace, entry.app), 0.0) + 1

    def refresh_positions(self) -> None:
        """Compute every waiting task's position; the statuses of those whose position moved are
        rewritten, nearest the head first, at most POSITION_WRITES_PER_SECOND; the queues' metrics
        and statuses follow."""
        now = self.clock()
        budget = int(POSITION_WRITES_PER_SECOND * min(5.0, self.refresh_seconds / 2)) or 1
        stale: list[tuple[int, Key]] = []
        run = self.count_running()
        names = set(self.heaps) | set(self.queues) | set(metrics.queue_names())
        for name in names:
            line = self.order(name, now, run) if name in self.heaps else []
            for i, entry in enumerate(line, 1):
                self.positions[entry.key] = (i, len(line))
                task = self.caches.tasks.get(entry.key)
                block = (task.status.get("queue") if task is not None else None) or {}
                if isinstance(block, dict) and block.get("position") != i:
                    updated = parse_time(block.get("updatedAt"))
                    if updated is None or now - updated.timestamp() >= self.refresh_seconds:
                        stale.append((i, entry.key))
            oldest = min((e.since for e in line), default=None)
            metrics.set_queue(name, waiting=len(line), running=run.queue[name],
                              oldest_wait=(now - oldest) if oldest is not None else 0.0)
            q = self.queues.get(name)
            if q is not None:
                self._write_queue_status(q, run.queue[name], len(line), oldest, now)
        for _, key in sorted(stale)[:budget]:
            self.enqueue(key)

    def _write_queue_status(self, q: QueueSpec, running: int, waiting: int, oldest: float | None, now: float) -> None:
        since = "" if oldest is None else stamp(oldest)
        state = (running, waiting, since)
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

        asyncio.get_running_loop().create_task(write(), name=f"queue-status-{q.name}")
