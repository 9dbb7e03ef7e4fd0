"""The Admission: the queues, their waiting tasks, and the grants of slots.

It asks the limits (limits.py) whether a task may start, keeps the waiting ones in line
(line.py), paces Job creations (token_bucket.py), counts the places its statuses show
(positions.py), and writes each LimeTaskQueue's status. One pass (`dispatch`) admits as many
waiting tasks as the limits and the tokens allow.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lime_task.resource import DEFAULT_QUEUE, FINAL_STATES, GROUP, PRIORITY_MAX, VERSION
from lime_task.validation import parse_time

from .. import metrics
from ..caches import Caches, Key
from ..kube import Kube, KubeError
from ..model import TaskView
from .limits import KUEUE, KUEUE_GROUP, QueueSpec, SlotCounts, holds_slot, queue_name, queue_path, waits_for_kueue
from .line import Entry, Line, Merge, stamp
from .positions import COUNT_PERIOD, POSITION_WRITES_PER_SECOND, POSITIONS_COUNTED, place_to_show, shown_place
from .tenancy import Tenancy, namespace_members
from .token_bucket import HORIZON, TokenBucket
from .waiting import (
           KUEUE_WAITING,
           QUEUE_FORBIDDEN,
           QUEUE_NOT_FOUND,
           QUEUE_PAUSED,
           QUEUE_RATE_LIMITED,
           WAITING,
           Waiting,
           queued_now,
           waiting_attempt,
)

LOG = logging.getLogger("limetask.operator.queues")

GRANT_TTL = 60.0  # a grant whose Job has not appeared in this long is given up (its task asks again)
MIN_PASS_INTERVAL = 0.05
QUEUE_STATUS_PERIOD = 5.0  # a LimeTaskQueue's status is written at most this often
USAGE_HALF_LIFE = 60.0  # fair share: an application's recent starts count half after this long
KUEUE_CHECK_SECONDS = 60.0  # while a queue hands over to Kueue that is not served, it is asked again


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


class Admission:
    """The queues, their waiting tasks, and the grants of slots."""

    def __init__(self, kube: Kube, caches: Caches, enqueue: Callable[[Key], None],
                 enqueue_later: Callable[[Key, float], None], all_synced: Callable[[], bool] = lambda: True,
                 rate: float = 20.0, burst: int = 20,
                 refresh_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 default_queue: str = DEFAULT_QUEUE, open_queues: Iterable[str] = (),
                 max_priority: int = PRIORITY_MAX, namespace_max_priority: Mapping[str, int] | None = None) -> None:
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
        # Each queue's own pace (maxStartsPerSecond), made empty: see `_pace`.
        self.paces: dict[str, TokenBucket] = {}
        # When a pass last left a task of the queue waiting for its pace while the queue had room.
        self._rate_held: dict[str, float] = {}
        # When a paced queue's last Job was let be made, and whose (see `_due`).
        self._last_made: dict[str, tuple[float, Key]] = {}
        # The installation's ceiling of priorities, and the namespaces' own (see `ceiling`).
        self.max_priority = max_priority
        self.namespace_max_priority = dict(namespace_max_priority or {})
        self.refresh_seconds = refresh_seconds
        self.enabled = True  # False: the LimeTaskQueue CRD is not installed (every queue unlimited)
        self.queues: dict[str, QueueSpec] = {}
        self.entries: dict[Key, Entry] = {}
        self.lines: dict[str, Line] = {}  # the waiting tasks of each queue
        self.grants: dict[Key, Grant] = {}
        # The places of each queue's first POSITIONS_COUNTED as last counted: (position, waiting).
        self.places: dict[Key, tuple[int, int]] = {}
        # Which namespaces may use which queue (namespaceSelector), and the tasks held out of a line
        # because theirs may not (tenancy.py): in no line, they hold no slot and have no place.
        self.tenancy = Tenancy()
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
        self._pace(self.queue(name))
        line = self.lines.get(name)
        ceiling_moved = (old.max_priority if old else None) != (new.max_priority if new else None)
        if line is not None and ceiling_moved:
            for entry in line.members.values():
                self._clamp(entry, self.queue(name))
        if line is not None and (ceiling_moved or line.aging_seconds != self.queue(name).aging_seconds):
            line.rescore(self.queue(name).aging_seconds)
        if line is not None and ((old is None) != (new is None) or ceiling_moved or (old and new and (
                old.max_running != new.max_running or old.limits_text() != new.limits_text()))):
            # The reason its tasks wait, or the limits their message names, changed: say so.
            for key in list(line.members):
                self.enqueue(key)
        if new is not None and new.admission == KUEUE and self.kueue_served is not True:
            self._kueue_asked = -math.inf  # ask again at the next pass
        if self.tenancy.queue_changed(name, None if event_type == "DELETED" else body):
            self.regroup(queue=name)
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

    def _pace(self, q: QueueSpec) -> TokenBucket | None:
        """The queue's own token bucket (maxStartsPerSecond, a burst of one), or None without one.

        Made empty, when the queue is first seen or its pace changes: no token is saved from
        before. So a new leader (whose queues are all new to it: the reconciler is made at each
        leadership) or a restarted operator starts nothing of the queue before 1/rate seconds
        have passed, and the previous leader sent its last Job before its lease ended: the two
        leaders' starts are never closer than the pace."""
        rate = q.starts_per_second if q.exists else None
        bucket = self.paces.get(q.name)
        if rate is None:
            if bucket is not None:
                del self.paces[q.name]
            return None
        if bucket is None or bucket.rate != rate:
            bucket = self.paces[q.name] = TokenBucket(rate, 1, self.clock, full=False)
        return bucket

    def ceiling(self, q: QueueSpec, namespace: str) -> tuple[int, str]:
        """The highest priority a task of `namespace` counts with in queue q, and whose ceiling
        that is: the lower of the queue's maxPriority and the namespace's ceiling (its own in
        LIMETASK_NAMESPACE_MAX_PRIORITY, else the installation's LIMETASK_MAX_PRIORITY)."""
        own = self.namespace_max_priority.get(namespace)
        found = (own, f"the ceiling of namespace {namespace}") if own is not None else (
            self.max_priority, "the installation's ceiling")
        if q.max_priority is not None and q.max_priority < found[0]:
            return q.max_priority, f"maxPriority of queue {q.name}"
        return found

    def _clamp(self, entry: Entry, q: QueueSpec) -> None:
        """The priority the entry counts with: its task's own, at most the ceiling (`asked` keeps
        the task's own when it was lowered, for its status to say so)."""
        asked = entry.asked if entry.asked is not None else entry.priority
        top, _ = self.ceiling(q, entry.namespace)
        entry.priority = min(asked, top)
        entry.asked = asked if asked > top else None

    def _reserve(self, q: QueueSpec, pace: TokenBucket | None) -> float | None:
        """The tokens of one Job of queue q: the installation's, then the queue's own for no
        sooner than that (see TokenBucket.reserve); the seconds until both are due, or None
        when either is not within the horizon (then neither is taken)."""
        if pace is not None and pace.next_due() > 0:
            return None
        delay = self.bucket.reserve(HORIZON)
        if delay is None or pace is None:
            return delay
        return pace.reserve(HORIZON, after=delay)

    def _rate_bound(self, q: QueueSpec, now: float) -> bool:
        """Whether the queue's pace held a task of it back lately (a pass in the last
        COUNT_PERIOD seconds, while the queue had room): its waiting tasks say so. A state that
        lasts while the pace holds the queue, not one that turns at every token, so that their
        statuses are not rewritten at each."""
        return q.starts_per_second is not None and now - self._rate_held.get(q.name, -math.inf) <= COUNT_PERIOD

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
        except KubeError as exc:
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
            return Admitted(self._due(key, grant, now), grant.kueue_queue)
        q = self.queue(queue_name(task, self.default_queue))
        entry = self.entries.get(key)
        if entry is not None and (entry.uid != task.uid or entry.attempt != attempt):
            self._drop_entry(key)
            entry = None
        if self.tenancy.selects(q.name):
            why = self.tenancy.forbids(q.name, task.namespace)
            if why is not None:
                return self._hold_out(key, task, attempt, q, why, now)
        self.tenancy.release(key)
        if entry is None and self._may_start_now(q, task, now):
            pace = self._pace(q)
            delay = self._reserve(q, pace)
            if delay is None and pace is not None and pace.next_due() > 0:
                self._rate_held[q.name] = now
            if delay is not None:
                grant = self._grant(key, task.uid, attempt, q, task.namespace, str(task.spec.get("app", "")),
                                    now, delay, waited=0.0)
                return Admitted(self._due(key, grant, now), grant.kueue_queue)
        if entry is None:
            entry = self._add_entry(key, task, attempt, q, now)
            self._joined = True
            self.poke()
        return self._waiting(entry, task, now)

    def _due(self, key: Key, grant: Grant, now: float) -> float:
        """Seconds until the grant's Job may be made (0: now, and the reconciler makes it): when
        its tokens are due, and in a paced queue no sooner than 1/rate after the queue's last Job
        made, so that a task whose reconcile came late and the next one on time do not make two
        Jobs closer than the pace."""
        due = max(0.0, grant.not_before - now)
        pace = self.paces.get(grant.queue)
        if pace is None or pace.rate <= 0:
            return due
        last = self._last_made.get(grant.queue)
        if last is not None and last[1] != key:
            due = max(due, last[0] + 1.0 / pace.rate - now)
        if due <= 0:
            self._last_made[grant.queue] = (now, key)
        return due

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
                q = self.queue(queue_name(task, self.default_queue))
                if self.tenancy.known and self.tenancy.forbids(q.name, task.namespace) is not None:
                    self.tenancy.hold_out(self._make_entry(key, task, attempt, q, now))
                    continue
                self._add_entry(key, task, attempt, q, now)
                added += 1
        if added:
            self._joined = True
            self.poke()
        return added

    def _may_start_now(self, q: QueueSpec, task: TaskView, now: float) -> bool:
        if not q.exists or q.max_running == 0 or self._held(q, now) or not self.decidable(q.name):
            return False
        if q.name in self.lines:
            return False  # others wait already: no one jumps the line
        if not q.limited:
            return True
        return self.count_running().full(q, task.namespace, str(task.spec.get("app", ""))) is None

    def leave(self, key: Key) -> None:
        """The task no longer waits, nor holds a grant (it finished, went, or has its Job)."""
        self._drop_entry(key)
        self.tenancy.release(key)
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

    def _make_entry(self, key: Key, task: TaskView, attempt: int, q: QueueSpec, now: float) -> Entry:
        priority = task.spec.get("priority")
        entry = Entry(key, task.uid, attempt, q.name, task.namespace, str(task.spec.get("app", "")),
                      priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
                      self._since(task, attempt, now))
        self._clamp(entry, q)
        return entry

    def _add_entry(self, key: Key, task: TaskView, attempt: int, q: QueueSpec, now: float) -> Entry:
        entry = self._make_entry(key, task, attempt, q, now)
        self.entries[key] = entry
        self.lines.setdefault(q.name, Line(q.aging_seconds)).add(entry)
        return entry

    def _drop_entry(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.places.pop(key, None)
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
        elif self._rate_bound(q, now):
            reason = QUEUE_RATE_LIMITED
        else:
            reason = WAITING
        shown = shown_place(task.status, q.name, entry.attempt, reason)
        counted = self.places.get(entry.key)
        if counted is None and shown is None and line is not None and len(line) <= POSITIONS_COUNTED:
            # A short line: its place is counted now (cheap), not only at the next count.
            ahead = self.positions(q.name, now, limit=len(line))
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
        else:
            paced = f" at its pace of {q.starts_per_second:g} a second" if reason == QUEUE_RATE_LIMITED else ""
            if position is not None:
                message = f"waiting in queue {q.name}{paced}: position {position} of {total} ({q.limits_text()})"
            else:
                message = (f"waiting in queue {q.name}{paced}; its position is written once it is among the first "
                           f"{POSITIONS_COUNTED} ({q.limits_text()})")
        if entry.asked is not None:
            _, whose = self.ceiling(q, entry.namespace)
            message += f"; its priority {entry.asked} counts as {entry.priority} here ({whose})"
        return Waiting(q.name, reason, message, position, total, entry.since_text)

    def usage(self, key: tuple[str, str, str], now: float) -> float:
        """An application's recent starts in a queue, halving every USAGE_HALF_LIFE seconds."""
        count, at = self._usage.get(key, (0.0, now))
        return float(count * 0.5 ** (max(0.0, now - at) / USAGE_HALF_LIFE))

    def _started(self, key: tuple[str, str, str], now: float) -> None:
        self._usage[key] = (self.usage(key, now) + 1.0, now)
        if len(self._usage) > 10000:  # forget applications that have not started anything lately
            self._usage = {k: v for k, v in self._usage.items() if self.usage(k, now) > 0.01}

    # -- tenants (namespaceSelector) ------------------------------------------------------
    def decidable(self, name: str) -> bool:
        """Whether it is known which namespaces may use the queue (it has no namespaceSelector, or
        the namespaces were listed, or cannot be read): until then it gives no slot."""
        return self.tenancy.known or not self.tenancy.selects(name)

    def _hold_out(self, key: Key, task: TaskView, attempt: int, q: QueueSpec, why: str, now: float) -> Waiting:
        """The task's namespace may not use its queue: out of the line (no slot, no place), held
        until its namespace's labels or the queue's selector change (`regroup`)."""
        self._drop_entry(key)
        held = self.tenancy.shut.get(key)
        if held is None or held.uid != task.uid or held.attempt != attempt or held.queue != q.name:
            held = self._make_entry(key, task, attempt, q, now)
            self.tenancy.hold_out(held)
        return Waiting(q.name, QUEUE_FORBIDDEN, why, None, 0, held.since_text)

    def regroup(self, namespace: str | None = None, queue: str | None = None, refresh: bool = False) -> None:
        """The labels of `namespace`, or the namespaceSelector of `queue`, changed (neither: every
        selector, as when the namespaces were first listed): the tasks held out that may use their
        queue now are reconciled (and join its line), and those in a line that may not are held out
        (and reconciled, for their status to say so). Only the tasks concerned are looked at: those
        of that namespace, or of that queue. `refresh`: every task still held out is reconciled too
        (what its message says changed)."""
        if not self.tenancy.known:
            return
        if namespace is not None:
            held = self.tenancy.held_in(namespace=namespace)
        elif queue is not None:
            held = self.tenancy.held_in(queue=queue)
            refresh = True  # the message names the selector
        else:
            held = list(self.tenancy.shut.values())
        for entry in held:
            if self.tenancy.forbids(entry.queue, entry.namespace) is None:
                self.tenancy.release(entry.key)
                self.enqueue(entry.key)  # it asks for its slot again: in line, or admitted
            elif refresh:
                self.enqueue(entry.key)
        names = [queue] if queue is not None else [n for n in self.lines if self.tenancy.selects(n)]
        for name in names:
            line = self.lines.get(name)
            if line is None or not self.tenancy.selects(name):
                continue
            members = namespace_members(line, namespace) if namespace is not None else list(line.members.values())
            for entry in members:
                if self.tenancy.forbids(name, entry.namespace) is not None:
                    self._drop_entry(entry.key)
                    self.tenancy.hold_out(entry)
                    self.enqueue(entry.key)
        self.poke()

    def namespace_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A Namespace from its watch: only a change of its labels matters."""
        changed = self.tenancy.namespace_event(event_type, body)
        if changed is not None and self.tenancy.listed:
            self.regroup(namespace=changed)

    def listed_namespaces(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        first, gone = self.tenancy.listed_namespaces(name for _, name in seen)
        if first:
            self.regroup()
        for name in gone:
            self.regroup(namespace=name)

    def namespaces_unreadable(self, why: str | None) -> None:
        """The operator may not read namespaces (why), or may again (None)."""
        if self.tenancy.set_unreadable(why):
            self.regroup(refresh=True)

    # -- counting -----------------------------------------------------------------------
    def count_running(self) -> SlotCounts:
        """What holds a slot now: from the caches (the cluster), plus grants not yet seen as Jobs;
        and the Jobs that wait for Kueue."""
        run = SlotCounts()
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
        """Queues whose oldest waiting task waited longest first (they go first in each round)."""
        def oldest(name: str) -> float:
            entry = self.lines[name].oldest()
            return entry.since if entry is not None else math.inf
        return sorted(self.lines, key=oldest)

    def dispatch(self) -> int:
        """Admit as many waiting tasks as the limits and the token bucket allow; how many.

        The queues take the Job-creation tokens in turns, one task each per round (the queue
        whose oldest task waited longest first in each round), not one queue all it can before
        the next: a flood in one queue, whose oldest task has waited longest, would otherwise
        take every token of the installation's pace until it drained, and the other queues'
        tasks would wait as long as the flood, however few they are. Within a queue, fair share
        (line.py) puts the applications that run and started fewest first."""
        if not self.entries:
            return 0
        now = self.clock()
        run = self.count_running()
        admitted = 0
        turns: list[tuple[QueueSpec, TokenBucket | None, Merge]] = []
        for name in self._line_order():
            q = self.queue(name)
            if not q.exists or q.max_running == 0 or self._held(q, now) or (
                    q.max_running is not None and not self.all_synced()) or not self.decidable(name):
                continue
            if self._full(q, run):
                continue
            if self.bucket.next_due() > 0:
                return admitted  # no token within the horizon: the next pass goes on
            pace = self._pace(q)
            if pace is not None and pace.next_due() > 0:
                self._rate_held[name] = now  # this queue's pace: the other queues go on
                continue

            def eligible(namespace: str, app: str, q: QueueSpec = q) -> bool:
                return q.admission == KUEUE or run.full(q, namespace, app) is None

            turns.append((q, pace, Merge(self.lines[name], name, now, running=lambda k: run.app[k],
                                         usage=lambda k: self.usage(k, now), eligible=eligible)))
        while turns:
            for turn in list(turns):
                q, pace, merge = turn
                entry = None if self._full(q, run) else merge.peek()
                if entry is None:
                    turns.remove(turn)
                    continue
                if pace is not None and pace.next_due() > 0:
                    self._rate_held[q.name] = now  # this queue's pace: the other queues go on
                    turns.remove(turn)
                    continue
                delay = self._reserve(q, pace)
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
    def _full(q: QueueSpec, run: SlotCounts) -> bool:
        return q.max_running is not None and q.admission != KUEUE and run.queue[q.name] >= q.max_running

    def positions(self, name: str, now: float | None = None, running: SlotCounts | None = None,
                  limit: int | None = None) -> list[Entry]:
        """The waiting tasks of a queue in the order they would start, if nothing ended meanwhile
        (limits aside): their positions. The first `limit` only, at O(A + limit log A) for A
        applications waiting (line.py)."""
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
            for i, entry in enumerate(self.positions(name, now, run, limit=POSITIONS_COUNTED), 1):
                counted[entry.key] = (i, waiting)
            oldest_entry = line.oldest() if line is not None else None
            oldest = oldest_entry.since if oldest_entry is not None else None
            # Jobs made suspended for Kueue wait too (in Kueue's line, not this one).
            metrics.set_queue(name, waiting=waiting + run.kueue[name], running=run.queue[name],
                              oldest_wait=(now - oldest) if oldest is not None else 0.0)
            q = self.queues.get(name)
            if q is not None:
                self._write_queue_status(q, run.queue[name], waiting + run.kueue[name], oldest, now)
        previous, self.places = self.places, counted
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
            except KubeError as exc:
                # A conflict (the queue changed): its watch event brings the new version; try again then.
                LOG.debug("queue %s: status not written: %s", q.name, exc)
            finally:
                self._writing.discard(q.name)

        self._spawn(write(), f"queue-status-{q.name}")
