"""The reconcile loop: a de-duplicating work queue of tasks and a few workers.

The operator's own watches (watches.py) feed the caches (caches.py: LimeTasks, Jobs, Pods) and
put task keys on the work queue (work.py). A worker takes a key, derives the plan from what the caches hold
now (derivation.derive), and carries it out (carry_out: create the attempt's Job, publish,
write the status, stop or delete Jobs). A key is never worked on by two workers at once; one
that changes meanwhile is queued again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from typing import Any

from lime_task.resource import (
    FINAL_STATES,
    GROUP,
    LABEL_ATTEMPT,
    LABEL_TASK_ID,
    LABEL_TASK_UID,
    PLURAL,
    QUEUE_PLURAL,
    SCHEDULE_PLURAL,
    VERSION,
)

from . import derivation, metrics, tracing
from .admission import Admission, Waiting, queue_name
from .archive import Archiver
from .caches import Caches, Key
from .events import owes_event
from .features import NONE, ServerFeatures
from .kube import Kube, KubeError, jobs_path, pods_path, task_path
from .manifests import build_job, job_name
from .model import JobView, PodView, TaskView
from .settings import OperatorSettings
from .work import WorkQueue

LOG = logging.getLogger("limetask.operator")


def without_empty_strings(status: dict[str, Any]) -> dict[str, Any]:
    """Drop "" values from the typed status fields (the result is kept as it is).

    The status schema refuses an empty string in its times (format date-time) and enums
    (state), and the whole write with it; an absent field means the same to every reader.
    """
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v != ""}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return {k: (v if k == "result" else clean(v)) for k, v in status.items() if v != "" or k == "result"}


REFUSALS_FRESH_SECONDS = 5.0
# A status the API server refuses as invalid (422) is written again after a growing delay, at
# most this long: a task whose status no write can store must not cost a request every few
# seconds for ever, and one whose refusal passes (a CRD fixed) is written within the bound.
STATUS_REFUSED_FIRST_SECONDS = 30.0
STATUS_REFUSED_MAX_SECONDS = 900.0


def refused_write_delay(refusals: int) -> float:
    """How long to wait after the `refusals`-th refused status write of a task in a row."""
    return min(STATUS_REFUSED_FIRST_SECONDS * 2.0 ** min(max(refusals - 1, 0), 30), STATUS_REFUSED_MAX_SECONDS)


class PredecessorsJob(Exception):
    """The Job name of this attempt is taken by the Job of an earlier task of the same name."""


class JobRefused(Exception):
    """The API server refused to create a Job (400, 403 or 422)."""

    def __init__(self, error: KubeError) -> None:
        super().__init__(str(error))
        self.error = error


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings, features: ServerFeatures = NONE) -> None:
        self.kube = kube
        self.settings = settings
        self.features = features  # what the API server was found to offer (features.py)
        self.caches = Caches()
        self.work: WorkQueue[Key] = WorkQueue()  # the tasks to reconcile (not a LimeTaskQueue)
        self.active: set[Key] = set()
        self.dirty: set[Key] = set()
        self.workers: list[asyncio.Task[None]] = []
        self.retries: dict[Key, int] = {}
        self.watches: list[Any] = []
        # The Namespaces' labels, for the queues' namespaceSelectors (admission/tenancy.py): apart
        # from `watches`, since no count of what runs waits for it.
        self.namespace_watch: Any = None
        self.watch_tasks: list[asyncio.Task[None]] = []
        from .events import EventDispatcher

        self.events = EventDispatcher(kube, settings, self.caches)
        self.archiver: Archiver | None = None
        if settings.archive_url is not None:
            # History goes to the archive; LimeTasks stay in etcd only a short while (archive.py).
            self.archiver = Archiver(kube, settings, settings.archive_url.get_secret_value())
            self.caches.on_settled = self.archiver.on_settled
        from .scheduler import Scheduler

        # LimeTaskSchedules: one LimeTask per schedule and tick (scheduler.py); with the archive,
        # a run leaves for the history limits only once archived, and none is made twice.
        self.scheduler = Scheduler(kube, settings.schedule_seconds, synced=self._synced, archive=self.archiver,
                                   archive_keep_seconds=settings.archive_keep_seconds,
                                   enabled=settings.enable_scheduled_tasks,
                                   default_zone=settings.default_time_zone or None)
        self.schedules_installed = True
        # Queues (admission/): an attempt's Job is made only once its task has a slot.
        self.admission = Admission(kube, self.caches, self.enqueue, self.enqueue_later, self._counting_ready,
                                   rate=settings.job_creates_per_second, burst=settings.job_creates_burst,
                                   refresh_seconds=settings.queue_position_refresh_seconds,
                                   default_queue=settings.default_queue, open_queues=settings.open_queues,
                                   max_priority=settings.max_priority,
                                   namespace_max_priority=settings.namespace_max_priority)
        self.deferred_admission: set[Key] = set()  # tasks waiting for every listing (that can be made) before a slot
        self._seeded = False  # the waiting tasks found at start put in line (Admission.seed)
        self.overwritten: set[Key] = set()  # tasks whose foreign status was already reported
        self.deferred: set[Key] = set()  # tasks waiting for their namespace's first listings
        self._refusals: dict[str, tuple[float, dict[str, str]]] = {}  # namespace: (read at, Job: message)
        # Tasks whose status writes the API server refuses (422): (resourceVersion, not before, refusals).
        self.status_refused: dict[Key, tuple[str, float, int]] = {}

    # -- feeding ------------------------------------------------------------------------
    def enqueue(self, key: Key) -> None:
        if key in self.active:
            self.dirty.add(key)
        else:
            self.work.add(key)

    def enqueue_later(self, key: Key, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    def task_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        self.scheduler.task_event(str(event_type), body)
        if event_type == "DELETED":
            self._forget(key)
            self.admission.poke()
            return
        view = self.caches.put_task(body, listed=event_type == "LISTED")
        self.enqueue(key)
        if view.status.get("state") in FINAL_STATES:
            self.admission.poke()

    def job_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        self._child_event(self.caches.jobs, JobView.from_body, event_type, body)

    def pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        self._child_event(self.caches.pods, PodView.from_body, event_type, body)

    def _child_event(self, cache: dict[Key, dict[str, Any]], make: Any, event_type: str | None,
                     body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        task_id = (meta.get("labels") or {}).get(LABEL_TASK_ID)
        if not task_id:
            return
        key = (meta.get("namespace", ""), task_id)
        if event_type == "DELETED":  # (a LISTED one is as an ADDED one)
            children = cache.get(key)
            if children is not None:
                task = self.caches.tasks.get(key)
                final = make(body)
                if task is not None and task.status.get("state") not in FINAL_STATES and (
                        final.finished or isinstance(final, PodView)):
                    # Gone is not lost: a Job or pod removed after it finished (TTL, garbage
                    # collection, a user) keeps its last state, and its verdict, until the task's
                    # final status is stored. So does a pod deleted while it ran: its attempt is
                    # lost, whatever a replacement pod says.
                    children[meta.get("name", "")] = dataclasses.replace(final, deleting=True, gone=True)
                else:
                    children.pop(meta.get("name", ""), None)
                    if not children:
                        del cache[key]  # no empty entry left behind per finished task
        else:
            cache.setdefault(key, {})[meta.get("name", "")] = make(body)
        if key in self.caches.tasks:
            self.enqueue(key)
            self.admission.poke()  # a slot may have been freed

    def listed_children(self, kind: str, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        """A listing of Jobs or Pods (of one namespace, or all) ended; its items came as LISTED
        events. Those it did not hold vanished while the watch was away: they go, except the
        last states kept of finished ones (see `gone`)."""
        cache = self.caches.jobs if kind == "jobs" else self.caches.pods
        for key in [k for k in cache if namespace is None or k[0] == namespace]:
            children = cache[key]
            vanished = [n for n, child in children.items() if (key[0], n) not in seen and not child.gone]
            for name in vanished:
                del children[name]
            if not children:
                del cache[key]
            if vanished and key in self.caches.tasks:
                self.enqueue(key)
        self._sync_done(namespace)

    def listed_tasks(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        """A listing of LimeTasks ended: what it did not hold was deleted while the watch was away."""
        for key in [k for k in self.caches.tasks if k not in seen and (namespace is None or k[0] == namespace)]:
            self._forget(key)
        self.scheduler.listed_tasks(seen, namespace)
        self._sync_done(namespace)

    def _listed_schedules(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        """A listing of LimeTaskSchedules ended. Like every listing, it may be the namespace's last
        one: the tasks that waited for it may go."""
        self.scheduler.listed_schedules(seen, namespace)
        self._sync_done(namespace)

    def _forget(self, key: Key) -> None:
        """A LimeTask is gone."""
        self.caches.drop_task(key)
        self.overwritten.discard(key)
        self.status_refused.pop(key, None)
        self.deferred.discard(key)
        self.deferred_admission.discard(key)
        self.admission.leave(key)
        if self.archiver is not None:
            self.archiver.forget(key)

    def start_watches(self, namespaces: list[str] | None) -> None:
        self.watches = self.make_watches(namespaces)
        self.watch_tasks = [asyncio.create_task(w.run(), name=f"watch-{w.plural}-{w.namespace or 'all'}")
                            for w in self.watches]
        if self.admission.enabled:
            self.namespace_watch = self.make_namespace_watch()
            self.watch_tasks.append(asyncio.create_task(self.namespace_watch.run(), name="watch-namespaces-all"))

    def make_namespace_watch(self) -> Any:
        """The one cluster-wide watch of Namespaces, whose labels the queues' namespaceSelectors
        match (only the labels are kept). A 403 (no list and watch on namespaces) is handled:
        a queue with a selector then admits no one and its tasks say why; no other queue minds."""
        from .watches import ResourceWatch

        return ResourceWatch(self.kube, "/api/v1", "namespaces", "", None, None, self.admission.namespace_event,
                             self._listed_namespaces, on_change=self._namespace_watch_changed, handled=(403,))

    def _listed_namespaces(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        self.admission.listed_namespaces(seen, namespace)
        self._sync_done(None)  # tasks held back until their queue's selector could be decided

    def _namespace_watch_changed(self) -> None:
        w = self.namespace_watch
        refused = w is not None and w.failing_since is not None and w.last_status == 403
        self.admission.namespaces_unreadable(f"namespaces cannot be listed: {w.last_error}" if refused else None)
        self._sync_done(None)

    def make_watches(self, namespaces: list[str] | None) -> list[Any]:
        """The watches of LimeTasks, Jobs, Pods and LimeTaskSchedules, for each scope, and the one
        cluster-wide watch of LimeTaskQueues."""
        from .watches import ResourceWatch, scopes

        selector = LABEL_TASK_ID
        watches: list[Any] = []
        changed = self._watch_changed
        for namespace, patterns in scopes(namespaces):
            watches += [
                ResourceWatch(self.kube, f"/apis/{GROUP}/{VERSION}", PLURAL, "", namespace, patterns,
                              self.task_event, self.listed_tasks, on_change=changed),
                ResourceWatch(self.kube, "/apis/batch/v1", "jobs", selector, namespace, patterns, self.job_event,
                              lambda seen, ns: self.listed_children("jobs", seen, ns), on_change=changed),
                ResourceWatch(self.kube, "/api/v1", "pods", selector, namespace, patterns, self.pod_event,
                              lambda seen, ns: self.listed_children("pods", seen, ns), on_change=changed),
            ]
            if self.schedules_installed:
                watches.append(ResourceWatch(
                    self.kube, f"/apis/{GROUP}/{VERSION}", SCHEDULE_PLURAL, "", namespace, patterns,
                    self.scheduler.schedule_event, self._listed_schedules, on_change=changed))
        if self.admission.enabled:
            # LimeTaskQueues are cluster-scoped: one watch, which every namespace waits for.
            watches.append(ResourceWatch(self.kube, f"/apis/{GROUP}/{VERSION}", QUEUE_PLURAL, "", None, None,
                                         self.admission.queue_event, self._listed_queues, on_change=changed))
        return watches

    def _listed_queues(self, seen: set[tuple[str, str]], namespace: str | None = None) -> None:
        self.admission.listed_queues(seen, namespace)
        self._sync_done(None)

    def _counting_ready(self) -> bool:
        """Whether what runs can be counted over every namespace: every watch has listed, but
        those of a namespace the operator may not list (forbidden). Such a namespace holds back
        its own tasks only: what it ran when last listed still counts (its Jobs stay in the
        caches), what it runs unseen does not, and `unlisted` names it (log, metric, the
        queues' status)."""
        return bool(self.watches) and all(w.synced.is_set() or w.forbidden for w in self.watches)

    def unlisted(self) -> dict[str, str]:
        """The watched namespaces that cannot be listed now, and why."""
        found: dict[str, str] = {}
        for w in self.watches:
            why = w.degraded()
            if why is not None and w.namespace is not None:
                found.setdefault(w.namespace, why)
        return found

    def _watch_changed(self) -> None:
        """A watch started or stopped failing: a forbidden namespace no longer holds back the
        count of what runs (and one that can be listed again is counted again)."""
        self.admission.set_unlisted(self.unlisted())
        self._sync_done(None)

    def _synced(self, namespace: str) -> bool:
        """Whether the LimeTasks, Jobs, Pods (and LimeTaskSchedules) of this namespace, and the
        LimeTaskQueues, have been listed."""
        return all(w.synced.is_set() for w in self.watches if w.namespace in (None, namespace))

    def _sync_done(self, namespace: str | None) -> None:
        """A listing ended: the tasks that waited for their namespace's listings may go."""
        ready = [k for k in self.deferred if (namespace is None or k[0] == namespace) and self._synced(k[0])]
        for key in ready:
            self.deferred.discard(key)
            self.enqueue(key)
        if self._counting_ready():
            # Every listing that can be made is done: what runs is counted, and the tasks that
            # waited in line before a start are in line again, in their order, before any is admitted.
            if not self._seeded:
                self._seeded = True
                self.admission.seed()
            for key in list(self.deferred_admission):
                self.enqueue(key)
            self.deferred_admission.clear()

    def health(self, grace: float = 60.0) -> list[str]:
        """What is wrong with the operator's watches (for the health probe): empty when all is
        well. A namespace it may not list is not among them: see `degraded`."""
        now = asyncio.get_running_loop().time()
        watches = [*self.watches, *([self.namespace_watch] if self.namespace_watch is not None else [])]
        problems = [p for w in watches if (p := w.problem(now, grace)) is not None]
        for t in self.watch_tasks:
            if t.done() and not t.cancelled():
                problems.append(f"{t.get_name()} stopped: {t.exception()!r}")
        return problems

    def degraded(self) -> list[str]:
        """What works only in part: the namespaces that cannot be listed (their tasks wait), and
        the queues with a namespaceSelector while namespaces cannot be read (they admit no one)."""
        found = [f"namespace {ns}: {why}" for ns, why in sorted(self.unlisted().items())]
        tenancy = self.admission.tenancy
        if tenancy.unreadable is not None and tenancy.selectors:
            found.append(f"queues {sorted(tenancy.selectors)} admit no one: they have a namespaceSelector, and "
                         f"{tenancy.unreadable}")
        return found

    # -- working ------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.settings.workers):
            self.workers.append(asyncio.create_task(self._worker(), name=f"reconcile-{i}"))
        self.events.start()
        self.scheduler.start()
        self.admission.start()
        if self.archiver is not None:
            # Archived tasks leave etcd after archive_keep_seconds; none leaves before it is archived.
            self.archiver.start()
        elif self.settings.retention_seconds:
            self.workers.append(asyncio.create_task(self._retention(), name="retention"))
        self.workers.append(asyncio.create_task(self._trim_memory(), name="trim-memory"))

    async def stop(self) -> None:
        for w in [*self.workers, *self.watch_tasks]:
            w.cancel()
        await asyncio.gather(*self.workers, *self.watch_tasks, return_exceptions=True)
        self.workers.clear()
        self.watch_tasks.clear()
        await self.events.stop()
        await self.scheduler.stop()
        await self.admission.stop()
        if self.archiver is not None:
            await self.archiver.stop()

    async def _worker(self) -> None:
        while True:
            key = await self.work.take()
            self.active.add(key)
            try:
                await self.reconcile(key)
                self.retries.pop(key, None)
                metrics.RECONCILES.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one task's trouble must not stop the others
                metrics.RECONCILES.labels("error").inc()
                n = self.retries.get(key, 0) + 1
                self.retries[key] = n
                delay = min(0.5 * 2 ** (n - 1), 60)
                level = logging.WARNING if isinstance(exc, KubeError) else logging.ERROR
                LOG.log(level, "task %s/%s: %s; retrying in %.1fs", key[0], key[1], exc, delay,
                        exc_info=not isinstance(exc, KubeError))
                self.enqueue_later(key, delay)
            finally:
                self.active.discard(key)
                if key in self.dirty:
                    self.dirty.discard(key)
                    self.enqueue(key)

    async def _trim_memory(self) -> None:
        """Give memory freed after a large listing back to the system (glibc only)."""
        import ctypes
        import gc

        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            return
        period = 5.0  # soon after the initial listing, then less often
        while True:
            await asyncio.sleep(period)
            gc.collect()
            trim(0)
            period = min(period * 2, 60.0)

    async def _retention(self) -> None:
        """Delete finished LimeTasks once they are older than the retention (etcd is no archive)."""
        period = min(60.0, max(self.settings.retention_seconds / 10, 1.0))
        while True:
            await asyncio.sleep(period)
            cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=self.settings.retention_seconds)
            stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
            expired = [t for t in list(self.caches.tasks.values())
                       if t.settled and str(t.status.get("completedAt") or "9") < stamp]
            for t in expired:
                try:
                    await self.kube.delete(task_path(t.namespace, t.name), uid=t.uid)
                    metrics.RETENTION_DELETES.inc()
                except KubeError as exc:
                    LOG.warning("retention: deleting %s/%s failed: %s", t.namespace, t.name, exc)

    async def reconcile(self, key: Key) -> None:
        task = self.caches.tasks.get(key)
        if task is None:
            return
        refused = self.status_refused.get(key)
        if refused is not None and refused[0] == task.resource_version \
                and asyncio.get_running_loop().time() < refused[1]:
            return  # its status was refused as invalid: wait (a reconcile is due when the delay ends)
        if not self._synced(key[0]):
            # Decide nothing before the namespace's Jobs and Pods are listed (an empty cache
            # would only cost needless API reads); a namespace whose listing fails (forbidden,
            # say) holds back its own tasks, never the others'.
            self.deferred.add(key)
            return
        now = dt.datetime.now(dt.timezone.utc)
        jobs = self.caches.jobs_of(key, task.uid)
        pods = self.caches.pods_of(key, task.uid)
        if not task.trusted:
            task = await self._distrust(task, bool(jobs or pods))
            if task is None:
                return
        # What this reconcile learned from the API (a Job gone, pods read fresh, why a pod is
        # refused, the queue's answer): every later decision of it keeps what an earlier read taught.
        learned: dict[str, Any] = {}
        queue = queue_name(task, self.settings.default_queue)

        def decide(jobs: dict[int, JobView], pods: dict[int, list[PodView]], **kw: Any) -> derivation.Plan:
            learned.update(kw)
            return derivation.derive(task, jobs, pods, now, self.settings.max_attempts_ceiling,
                                     allow_image_override=self.settings.allow_image_override,
                                     resource_caps=self.settings.max_runner_resources,
                                     allow_placement_override=self.settings.allow_placement_override,
                                     runner_resources=self.settings.runner_resources,
                                     deny_unlisted_resources=self.settings.deny_unlisted_resources,
                                     max_memory_on_oom=self.settings.max_memory_on_oom,
                                     start_timeout=self.admission.queue(queue).start_timeout,
                                     kueue_note=self.admission.kueue_note(queue), **learned)

        plan = decide(jobs, pods)
        if plan.verify_job is not None:
            body = await self.kube.get(jobs_path(task.namespace, job_name(task.name, plan.verify_job)))
            if body is not None:
                self.job_event("ADDED", body)
                jobs = self.caches.jobs_of(key, task.uid)
                plan = decide(jobs, pods)
            else:
                plan = decide(jobs, pods, jobs_gone=frozenset({plan.verify_job}))
        if plan.need_fresh_pods is not None:
            fresh = await self.kube.request("GET", pods_path(task.namespace), params={
                "labelSelector": f"{LABEL_TASK_ID}={task.name},{LABEL_ATTEMPT}={plan.need_fresh_pods}"})
            for item in (fresh or {}).get("items", []):
                self.pod_event("MODIFIED", item)
            pods = self.caches.pods_of(key, task.uid)
            plan = decide(jobs, pods, pods_fresh=True)
        if plan.check_admission is not None:
            plan = decide(jobs, pods, admission=await self._pod_refusal(task, plan.check_admission))
        if plan.create_attempt is not None:
            if (self.admission.queue(queue).max_running is not None and not self._counting_ready()) or \
                    not self.admission.decidable(queue):
                # A queue limited over every namespace gives no slot before every namespace that
                # can be listed is (what runs is counted from the listings). Other queues count
                # only their namespace's, listed already. A queue with a namespaceSelector gives
                # none before the namespaces' labels are listed (or known to be unreadable).
                self.deferred_admission.add(key)
                return
            ticket = self.admission.admit(task, plan.create_attempt)
            if isinstance(ticket, Waiting):
                plan = decide(jobs, pods, queued=ticket)
            elif ticket.delay > 0:
                self.enqueue_later(key, ticket.delay)  # its Job's token is due then; nothing to write now
                return
            else:
                plan.kueue_queue = ticket.kueue_queue
                tracing.admitted(task, plan.create_attempt, queue=queue_name(task), kueue=ticket.kueue_queue)
        elif not plan.queued:
            self.admission.leave(key)
        LOG.debug("task %s/%s: %s", key[0], key[1], plan)
        if task.status.get("state") in FINAL_STATES:
            self.caches.forget_gone(key)
        try:
            await self.carry_out(task, plan)
        except PredecessorsJob as stale:
            # Its Job is being deleted: try again soon, with nothing written meanwhile.
            LOG.info("task %s/%s: %s", key[0], key[1], stale)
            self.enqueue_later(key, 2.0)
            return
        except JobRefused as refusal:
            # The API server will not take this attempt's Job as it is: decide again knowing that.
            LOG.warning("task %s/%s: %s", key[0], key[1], refusal.error)
            self.admission.release(key)
            plan = decide(jobs, pods, job_refused=(refusal.error.status, refusal.error.message))
            await self.carry_out(task, plan)
        if plan.recheck_after is not None:
            self.enqueue_later(key, plan.recheck_after)
        current = self.caches.tasks.get(key)
        if current is not None and owes_event(current):
            self.events.submit(key)

    async def _claim_existing_job(self, task: TaskView, name: str) -> None:
        """A Job of this name exists already (409). Ours, made before a restart: fine. An
        earlier task's of the same name (deleted, its Job orphaned or not yet collected): that
        one is deleted, with its pods, and this attempt waits for the name (PredecessorsJob)."""
        existing = await self.kube.get(jobs_path(task.namespace, name))
        if existing is None:
            raise PredecessorsJob(f"Job {name} was just deleted; making it again")
        meta = existing.get("metadata") or {}
        owners = {o.get("uid") for o in meta.get("ownerReferences") or []}
        uid = (meta.get("labels") or {}).get(LABEL_TASK_UID)
        if task.uid in owners or uid == task.uid:
            return
        if not meta.get("deletionTimestamp"):
            await self.kube.delete(jobs_path(task.namespace, name), propagation="Foreground")
        raise PredecessorsJob(f"Job {name} belongs to an earlier task of the same name; waiting for it to go")

    async def write_status(self, task: TaskView, status: dict[str, Any]) -> dict[str, Any] | None:
        """Write a task's status; the stored object, or None when it was not written.

        A PUT with the resourceVersion the status was derived from: a conflict means the task
        changed meanwhile, and it is read again and reconciled anew. A final status is the
        exception: its verdict is already read (and its event may already be published), and
        nothing that changes a task meanwhile (a cancel annotation, a label) can take it back,
        so it is written again over the fresh object. The state published is the state stored.
        (A PUT of the whole status rather than a patch: it carries the resourceVersion, and a
        merge patch would drop the null values inside a result.)
        """
        key = (task.namespace, task.name)
        sent = without_empty_strings(status)
        for _ in range(5):
            self.caches.writing(task, sent)
            try:
                updated: dict[str, Any] = await self.kube.request(
                    "PUT", task_path(task.namespace, task.name, "status"), task.with_status(sent))
            except KubeError as exc:
                if exc.status == 404:
                    return None
                if exc.status == 422:
                    await self._status_refused(task, exc)
                    return None
                if exc.status != 409:
                    raise
                LOG.debug("task %s/%s: status write conflicted; reading it again", *key)
                fresh = await self.kube.get(task_path(task.namespace, task.name))
                if fresh is None:
                    self._forget(key)
                    return None
                view = self.caches.put_task(fresh, listed=True)
                if (sent.get("state") in FINAL_STATES and view.uid == task.uid and view.trusted
                        and view.status.get("state") not in FINAL_STATES):
                    task = dataclasses.replace(task, metadata=TaskView.from_body(fresh).metadata)
                    continue
                self.enqueue(key)
                return None
            self.caches.put_task(updated, written=True)
            self.status_refused.pop(key, None)
            return updated
        self.enqueue(key)
        return None

    async def _status_refused(self, task: TaskView, error: KubeError) -> None:
        """The API server refuses this task's status as invalid: try again after a bounded,
        growing delay (or when the task changes), and say so once per task, not at every try."""
        key = (task.namespace, task.name)
        previous = self.status_refused.get(key)
        refusals = previous[2] + 1 if previous is not None else 1
        delay = refused_write_delay(refusals)
        self.status_refused[key] = (task.resource_version, asyncio.get_running_loop().time() + delay, refusals)
        self.enqueue_later(key, delay + 0.05)
        if previous is None:
            LOG.warning("task %s/%s: the API server refuses its status (422): %s; writing it again after %.0fs, "
                        "then at most every %.0fs", *key, error.message, delay, STATUS_REFUSED_MAX_SECONDS)
            await self._warn(task, "StatusRefused", f"the API server refuses this task's status, so its state "
                             f"cannot be stored: {error.message}")
        else:
            LOG.debug("task %s/%s: status refused again (%d times); next try in %.0fs", *key, refusals, delay)

    async def _distrust(self, task: TaskView, evidence: bool) -> TaskView | None:
        """A task whose status someone else wrote: never act on what it says.

        While its Job or pod still exists, the status is derived again from them, as if none
        had been written, and the true one is written over it. Otherwise the task is left as
        it is (nothing is deleted, nothing published) and the overwrite reported.
        """
        key = (task.namespace, task.name)
        if evidence:
            metrics.STATUS_OVERWRITES.inc()
            LOG.warning("task %s/%s: its status was written by someone other than the operator; deriving it "
                        "again from its Job and pods", *key)
            await self._warn(task, "StatusOverwritten", "the status was written by someone other than the "
                             "limetask operator; it was derived again from the task's Job and pods")
            return dataclasses.replace(task, status={}, trusted=True)
        if key not in self.overwritten:
            self.overwritten.add(key)
            metrics.STATUS_OVERWRITES.inc()
            LOG.warning("task %s/%s: its status was written by someone other than the operator, and no Job or "
                        "pod is left to derive it from: it is left as it is, and no event is published", *key)
            await self._warn(task, "StatusOverwritten", "the status was written by someone other than the limetask "
                             "operator and cannot be derived again: nothing is done with it, and no completion "
                             "event is published for it")
        return None

    async def _warn(self, task: TaskView, reason: str, message: str) -> None:
        """A Warning Event on the LimeTask (one per task, reason and incarnation)."""
        import hashlib

        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hashlib.sha256(f"{task.uid}.{reason}".encode()).hexdigest()[:10]
        try:
            await self.kube.create(f"/api/v1/namespaces/{task.namespace}/events", {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{task.name[:200]}.{digest}", "namespace": task.namespace},
                "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "name": task.name,
                                   "namespace": task.namespace, "uid": task.uid},
                "reason": reason, "message": message[:1000], "type": "Warning",
                "source": {"component": "limetask-operator"},
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            })
        except KubeError as exc:
            LOG.warning("task %s/%s: could not post a %s event: %s", task.namespace, task.name, reason, exc)

    async def _pod_refusal(self, task: TaskView, attempt: int) -> str:
        """The job controller's last complaint about creating this attempt's pod, or "".

        One listing of a namespace's FailedCreate events serves every waiting task there for a
        few seconds: with hundreds of Jobs waiting for pods, one request, not hundreds.
        """
        loop = asyncio.get_running_loop()
        read_at, by_job = self._refusals.get(task.namespace, (-1e9, {}))
        if loop.time() - read_at > REFUSALS_FRESH_SECONDS:
            found = await self.kube.request("GET", f"/api/v1/namespaces/{task.namespace}/events", params={
                "fieldSelector": "involvedObject.kind=Job,reason=FailedCreate", "limit": "500"})
            items = (found or {}).get("items") or []
            items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
            by_job = {str((e.get("involvedObject") or {}).get("name")): str(e.get("message") or "refused")
                      for e in items}
            self._refusals[task.namespace] = (loop.time(), by_job)
        return by_job.get(job_name(task.name, attempt), "")

    async def carry_out(self, task: TaskView, plan: derivation.Plan) -> None:
        """What the operator writes for one plan, in the one order that is safe at any crash point:

        1. create the attempt's Job (deterministic name: a re-run finds it, 409);
        2. publish the completion event inline, while the broker answers (else the dispatcher
           delivers it from the outbox once the status is stored);
        3. write the status (a final one always lands: see write_status);
        4. stop Jobs still running, and delete finished ones (only once the result is stored:
           a Job's pod holds the verdict until then).

        A step that finds its object gone (the namespace, the task) ends the sequence there.
        tests/unit/test_write_sequence.py holds it to these requests, in this order.
        """
        if plan.create_attempt is not None and not await self._create_job(task, plan.create_attempt,
                                                                            plan.kueue_queue, plan.memory):
            return
        if plan.status is not None:
            plan.status = await self._publish_inline(task, plan.status)
            if not await self._store_status(task, plan.status):
                return
        final = (plan.status or task.status).get("state") in FINAL_STATES
        await self._remove_jobs(task, plan.stop_jobs, plan.delete_jobs, final)

    async def _create_job(self, task: TaskView, attempt: int, kueue_queue: str | None,
                          memory: str | None = None) -> bool:
        """Step 1: the attempt's Job (with `memory`, the plan's size of memoryOnOOM). False when its
        namespace is going away (nothing more to do); JobRefused when the API server will not take
        it as it is."""
        job = build_job(task, attempt, self.settings, self.features, kueue_queue,
                        created_at=dt.datetime.now(dt.timezone.utc), memory=memory)
        with tracing.span("limetask create Job", task, "CLIENT", attempt=attempt, job=job["metadata"]["name"]):
            try:
                created = await self.kube.create(jobs_path(task.namespace), job)
            except KubeError as exc:
                if exc.status == 404:
                    return False  # the namespace is going away
                if exc.status in (400, 403, 422):
                    raise JobRefused(exc) from exc
                raise
        if created is None:
            await self._claim_existing_job(task, job["metadata"]["name"])
        else:
            metrics.JOBS_CREATED.inc()
            LOG.info("task %s/%s: created Job %s (attempt %d)", task.namespace, task.name,
                     job["metadata"]["name"], attempt)
        return True

    async def _publish_inline(self, task: TaskView, status: dict[str, Any]) -> dict[str, Any]:
        """Step 2: the status to write, with the event's confirmation when it was published now."""
        if not owes_event(dataclasses.replace(task, status=status)):
            return status
        confirmed = await self.events.publish_inline(task, status)
        return status if confirmed is None else {**status, "event": confirmed}

    async def _store_status(self, task: TaskView, status: dict[str, Any]) -> bool:
        """Step 3: the status, and the metrics of what it says. False when it was not written."""
        updated = await self.write_status(task, status)
        if updated is None:
            return False
        # The whole new status (the cache keeps only a compact copy of a settled task).
        view = TaskView.from_body(updated)
        if view.status.get("state") == "STARTED" and task.status.get("state") != "STARTED":
            metrics.observe_started(view)
        if view.status.get("state") in ("SUCCESS", "FAILURE"):
            metrics.observe_final(view)
            if not task.status.get("startedAt") and view.status.get("startedAt"):
                metrics.observe_started(view)
            LOG.info("task %s/%s: %s after %s attempt(s)", task.namespace, task.name, view.status["state"],
                     view.status.get("attempts"))
        return True

    async def _remove_jobs(self, task: TaskView, stop: list[str], delete: list[str], final: bool) -> None:
        """Step 4: Jobs still running are stopped; finished ones deleted, unless the platform keeps them.

        Once the task's final status is stored, a Job asked to go counts as going until its watch
        says more: the reconcile of the status write's echo would delete it again. Not before: a
        Job stopped because its pod is being disrupted still gives the attempt's outcome from
        that pod (evicted, deleted), not "its Job is being deleted"."""
        for name in [*stop, *(delete if self.settings.delete_finished_jobs else [])]:
            await self.kube.delete(jobs_path(task.namespace, name))
            if final:
                self.caches.job_deleted((task.namespace, task.name), name)
