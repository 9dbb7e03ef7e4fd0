"""What a task's status should be, derived from the current LimeTask, Jobs and Pods.

Pure and level-based: the answer depends only on what exists now, never on which events
were seen, so batched or missed events cannot lead it astray.
"""

from __future__ import annotations

import datetime as dt
import signal
from dataclasses import dataclass, field
from typing import Any, Literal

from lime_task import verdict as verdicts
from lime_task.errors import InvalidArgumentsError, InvalidTaskError
from lime_task.events import message_id, routing_key
from lime_task.resource import (
    ANNOTATION_CANCEL,
    CONDITION_QUEUED,
    DEFAULT_MAX_ATTEMPTS,
    FAILURE,
    FINAL_STATES,
    PENDING,
    STARTED,
    SUCCESS,
)
from lime_task.validation import check_arguments, parse_time, spec_time, timing_problem

from .budgets import NOT_STARTED, RETRY, WORKER_LOST, Tally, and_list
from .manifests import job_name, merge_resources, requests_over_limits, resources_over, spec_hash
from .model import JobView, PodView, TaskView
from .queues import Waiting, queued_now, waiting_attempt

TIMED_OUT = "TimedOut"
CANCELLED = "Cancelled"
RETRIES_EXHAUSTED = "RetriesExhausted"
SPEC_CHANGED = "SpecChanged"
INVALID_SPEC = "InvalidSpec"
QUOTA_EXCEEDED = "QuotaExceeded"
JOB_REFUSED = "JobRefused"
POD_REFUSED = "PodRefused"
EXPIRED = "Expired"
PREEMPTED = "Preempted"  # Kueue evicted a Job whose task had started, under early acknowledgement
SCHEDULED = "Scheduled"  # waiting for its eta: no Job, no pod
RETRY_SCHEDULED = "RetryScheduled"
HISTORY_MAX = 10
# How many attempts whose worker never started are run again, whatever the acknowledgement.
MAX_NOT_STARTED_RERUNS = 3
NAME_MAX = 63  # a label value
# A Job with no pod this long after it was made: ask why (the job controller's events). Long
# enough that a busy node or a burst of tasks, where pods come late, asks nothing.
ADMISSION_GRACE_SECONDS = 10.0
# How far a client's clock may run ahead of the API server's: an eta the client took for "a year
# from now" is not refused for the minutes its clock was ahead.
CLOCK_SKEW_SECONDS = 3600.0


@dataclass
class Plan:
    """What the reconciler must do: at most one Job to create, a status, Jobs to stop or delete."""

    status: dict[str, Any] | None = None
    create_attempt: int | None = None
    # Jobs that have finished: deleted once the status is stored (unless the platform keeps them).
    delete_jobs: list[str] = field(default_factory=list)
    # Jobs whose pod still runs although the task is over (cancelled, spec changed): always stopped.
    stop_jobs: list[str] = field(default_factory=list)
    # The caches cannot tell: read the pods of this attempt from the API, then decide again.
    need_fresh_pods: int | None = None
    # The status says this attempt's Job was made, the cache does not have it: check the API.
    verify_job: int | None = None
    # This attempt's Job has no pod yet: read the job controller's events to learn why.
    check_admission: int | None = None
    # Nothing will change by itself that a watch would see: reconcile again after this long.
    recheck_after: float | None = None
    # The task waits in its queue (its status says so; no Job is made).
    queued: bool = False
    # The attempt's Job is made suspended, for Kueue to admit (the LocalQueue's name).
    kueue_queue: str | None = None


@dataclass(frozen=True)
class Lost:
    message: str
    # Whether the task may have run: False when no container of the attempt ever started
    # (evicted or refused before it started), which is safe to run again under any ack.
    started: bool = True


@dataclass(frozen=True)
class TimedOut:
    message: str


@dataclass(frozen=True)
class Running:
    started: str | None  # None: still pending
    waiting: tuple[str, str] | None = None  # why a pending pod waits, beyond the usual start-up


Outcome = verdicts.Verdict | Lost | TimedOut | Running


def now_iso(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_lost(pod: PodView) -> str:
    """What happened to a worker that ended without a verdict, in the words a user needs."""
    term = pod.terminated or {}
    if pod.reason == "Evicted" or pod.disruption:
        return f"the pod was evicted: {pod.message or pod.disruption or 'no reason given'}"
    if term.get("reason") == "OOMKilled":
        return "the container was OOMKilled: it ran out of memory (exit code 137); raise its memory limit"
    code = term.get("exitCode")
    sig = term.get("signal") or (code - 128 if isinstance(code, int) and 128 < code <= 128 + 64 else None)
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"the worker was killed by {name} (exit code {code})"
    if term.get("reason") == "ContainerStatusUnknown":
        return f"the node lost the container: {term.get('message') or 'status unknown'}"
    if code is not None:
        return f"the worker exited with code {code} without a verdict ({term.get('reason') or 'Error'})"
    if pod.reason:
        return f"the pod failed: {pod.reason}: {pod.message or ''}".rstrip(": ")
    return "the pod ended without a verdict"


def _may_have_run(pods: list[PodView]) -> bool:
    """False only when the pods were evicted or refused by their node before any container
    ran (a container that could not start has a zero start time): then nothing of the task ran.
    A pod stopped for any other reason (a deadline, a deletion) counts as having run."""
    for p in pods:
        if _container_ran([p]):
            return True
        if not (p.disruption or (p.reason and p.reason != "DeadlineExceeded")):
            return True
    return not pods


def admitted_before(job: JobView | None, pods: list[PodView]) -> tuple[list[PodView], list[PodView]]:
    """The attempt's pods split in those of an earlier admission of its Job, which Kueue evicted
    (a suspended Job runs none of its own; a resumed one's run from its resumption on), and the
    rest. A Job never suspended, or suspended only before it first ran, has no earlier ones."""
    if job is None or not (job.suspended or job.suspend_changed):
        return [], list(pods)
    if job.suspended:
        return list(pods), []
    since = parse_time(job.suspend_changed)
    earlier = [p for p in pods if since is not None and (made := parse_time(p.created)) is not None and made < since]
    return earlier, [p for p in pods if p not in earlier]


def _container_ran(pods: list[PodView]) -> bool:
    """Whether any of these pods' task container ever started."""
    return any(p.running_since is not None
               or not str((p.terminated or {}).get("startedAt") or "1970").startswith(("1970", "0001"))
               for p in pods)


def attempt_outcome(job: JobView | None, pods: list[PodView], job_gone: bool = False) -> Outcome | None:
    """The outcome of one attempt, or None when the caches cannot tell yet.

    One pod per attempt: when the job controller replaced a pod that was deleted or evicted
    (it does so before Kubernetes 1.29's podReplacementPolicy), the first pod decides: its
    verdict, or a lost worker. A replacement's own verdict never counts.
    """
    if len(pods) > 1:
        first = min(pods, key=lambda p: (p.created, p.name))
        if first.ended or first.deleting:
            found = verdicts.parse((first.terminated or {}).get("message")) if first.ended else None
            if found is not None:
                return found
            if not first.ended and not first.gone:
                return Running(first.running_since)  # its end (and maybe a verdict) is still to come
            return Lost(f"{describe_lost(first)}; the job controller started a replacement pod, which does "
                        f"not count (one pod per attempt)", started=_may_have_run([first]))
    ended = sorted((p for p in pods if p.ended), key=lambda p: (p.terminated or {}).get("finishedAt") or "")
    for pod in ended:
        found = verdicts.parse((pod.terminated or {}).get("message"))
        if found is not None:
            return found
    if job is not None and job.failed and job.failed_reason == "DeadlineExceeded":
        return TimedOut(job.failed_message or "the attempt passed its deadline")
    for pod in ended:
        if pod.reason == "DeadlineExceeded":
            return TimedOut(pod.message or "the attempt passed its deadline")
    running = [p for p in pods if not p.ended and not p.deleting]
    if ended and not running:
        return Lost(describe_lost(ended[0]), started=_may_have_run(ended))
    deleted = [p for p in pods if p.gone and not p.ended]
    if deleted and not running:
        why = f": {deleted[0].disruption}" if deleted[0].disruption else ""
        return Lost(f"the pod was deleted while the task ran{why}", started=_may_have_run(deleted))
    if running:
        started = next((p.running_since for p in running if p.running_since is not None), None)
        return Running(started, next((p.waiting for p in running if p.waiting), None))
    if job_gone:
        return Lost("the Job of this attempt was deleted before the task finished")
    if job is not None and job.finished:
        return None  # finished, but its pod is not in the cache: read it from the API
    if job is not None and job.deleting:
        return Lost("the Job of this attempt is being deleted")
    return Running(None)


def condition(previous: list[dict[str, Any]], status: str, reason: str, message: str, generation: int,
              now: str, kind: str = "Succeeded") -> list[dict[str, Any]]:
    """The conditions with the one of type `kind` set (Succeeded first; the others kept)."""
    old = next((c for c in previous if c.get("type") == kind), None)
    changed = old is None or old.get("status") != status
    new = {
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),  # type: ignore[union-attr]
        "observedGeneration": generation,
    }
    others = [c for c in previous if c.get("type") != kind]
    return [new, *others] if kind == "Succeeded" else [*others, new]


def leave_queue(status: dict[str, Any], generation: int, now: dt.datetime) -> dict[str, Any]:
    """A status that no longer waits in a queue: Queued is False (Admitted, or the final reason
    of a task that ended while it waited), and the position goes."""
    if queued_now(status) is None:
        return status
    new = dict(status)
    block = new.pop("queue", None) or {}
    since = parse_time(block.get("since")) if isinstance(block, dict) else None
    waited = f" after waiting {max(0, int((now - since).total_seconds()))}s" if since is not None else ""
    name = f"queue {block['name']}" if block.get("name") else "its queue"
    if new.get("state") in FINAL_STATES:
        reason = str((new.get("error") or {}).get("reason") or "Finished")
        message = f"left {name}{waited}: the task ended before it got a slot"
    else:
        reason, message = "Admitted", f"admitted to {name}{waited}"
    new["conditions"] = condition(new.get("conditions") or [], "False", reason, message, generation,
                                  now_iso(now), kind=CONDITION_QUEUED)
    return new


def check_spec(spec: dict[str, Any], ceiling: int, allow_image_override: bool = True,
               resource_caps: dict[str, Any] | None = None, allow_placement_override: bool = True,
               runner_resources: dict[str, Any] | None = None, deny_unlisted_resources: bool = False,
               created: dt.datetime | None = None) -> str | None:
    """What is wrong with a spec the schema let through, or None.

    Everything the API server would refuse in the Job is caught here first, so that the task
    fails with a message that speaks of its own spec. So is a time (eta, expires) that the
    client would refuse, or that the CRD's rules cannot read (its status could never be
    written: no Job is made whose result would be lost). `created`: the task's creation, which
    the client's rule for times counts from.
    """
    if spec.get("image") and not allow_image_override:
        return "this cluster does not allow a task to choose its image (spec.image); ask the platform team"
    placement = [f for f in ("nodeSelector", "tolerations", "imagePullSecrets") if spec.get(f)]
    if placement and not allow_placement_override:
        return (f"this cluster does not allow a task to set {', '.join('spec.' + f for f in placement)}; "
                f"ask the platform team")
    asked = spec.get("resources") or {}
    over = resources_over(asked, resource_caps or {}, deny_unlisted_resources)
    if over:
        return "spec.resources asks for more than this cluster allows: " + "; ".join(over)
    inverted = requests_over_limits(merge_resources(runner_resources or {}, asked))
    if inverted:
        return ("spec.resources, with the cluster's defaults for runners, has " + "; ".join(inverted)
                + ": raise the limit in spec.resources.limits too")
    args, kwargs = spec.get("args") or [], spec.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return "spec.args must be an array and spec.kwargs an object"
    try:
        # The client's own checks: depth, numbers the API keeps exactly, size.
        check_arguments(args, kwargs)
    except InvalidArgumentsError as exc:
        return f"spec.args/kwargs: {exc}"
    if spec.get("acksLate") and int(spec.get("maxAttempts") or DEFAULT_MAX_ATTEMPTS) > ceiling:
        return f"maxAttempts {spec.get('maxAttempts')} is over this cluster's ceiling of {ceiling}"
    return _times_problem(spec, created)


def _times_problem(spec: dict[str, Any], created: dt.datetime | None) -> str | None:
    """The client's rule for eta and expires, counted from the task's creation."""
    try:
        eta = spec_time(spec["eta"], "eta") if spec.get("eta") is not None else None
        expires = spec_time(spec["expires"], "expires") if spec.get("expires") is not None else None
    except InvalidTaskError as exc:
        return str(exc)
    if created is None or (eta is None and expires is None):
        return None
    problem = timing_problem(eta, expires, created, slack=CLOCK_SKEW_SECONDS, sent_words="after the task was created",
                             expires_after_sent=False)
    return f"spec.{problem}" if problem else None


def derive(task: TaskView, jobs: dict[int, JobView], pods: dict[int, list[PodView]], now: dt.datetime,
           max_attempts_ceiling: int, pods_fresh: bool = False, jobs_gone: frozenset[int] = frozenset(),
           allow_image_override: bool = True, resource_caps: dict[str, Any] | None = None,
           allow_placement_override: bool = True, runner_resources: dict[str, Any] | None = None,
           deny_unlisted_resources: bool = False, job_refused: tuple[int, str] | None = None,
           admission: str | None = None, queued: Waiting | None = None,
           start_timeout: float | None = None, kueue_note: str = "") -> Plan:
    """The plan for one task, from what exists now.

    `job_refused`: the API server's answer (status, message) when creating this attempt's Job
    failed. `admission`: the message of the job controller's last failure to create the
    attempt's pod ("" when the reconciler looked and found none). `queued`: the attempt to
    start has no slot in its queue yet (queues.py): it waits, and its status says where.
    `start_timeout`: the queue's startTimeoutSeconds: an attempt whose worker has not started
    this long after its Job was made gives its slot back (a NotStarted attempt: it waits in
    line again). `kueue_note`: what a task whose Job waits for Kueue must also be told (that the
    cluster does not serve Kueue's API, say).
    """
    plan = _derive(task, jobs, pods, now, max_attempts_ceiling, pods_fresh, jobs_gone, allow_image_override,
                   resource_caps, allow_placement_override, runner_resources, deny_unlisted_resources,
                   job_refused, admission, queued, start_timeout, kueue_note)
    if plan.status is not None and not plan.queued:
        plan.status = leave_queue(plan.status, task.generation, now)
    return plan


def _derive(task: TaskView, jobs: dict[int, JobView], pods: dict[int, list[PodView]], now: dt.datetime,
            max_attempts_ceiling: int, pods_fresh: bool, jobs_gone: frozenset[int], allow_image_override: bool,
            resource_caps: dict[str, Any] | None, allow_placement_override: bool,
            runner_resources: dict[str, Any] | None, deny_unlisted_resources: bool,
            job_refused: tuple[int, str] | None, admission: str | None, queued: Waiting | None,
            start_timeout: float | None, kueue_note: str) -> Plan:
    st = task.status
    ts = now_iso(now)
    plan = Plan()

    def clean_up() -> None:
        """A finished task's Jobs: stop what still runs, delete what has finished."""
        for j in jobs.values():
            if j.deleting:
                continue
            # A suspended Job is stopped too: Kueue would resume it, and it would run the task again.
            running = not j.finished and (j.suspended or not pods.get(j.attempt)
                                          or any(not p.ended for p in pods[j.attempt]))
            (plan.stop_jobs if running else plan.delete_jobs).append(j.name)
        plan.stop_jobs.sort()
        plan.delete_jobs.sort()

    if st.get("state") in FINAL_STATES:
        clean_up()
        return plan

    base: dict[str, Any] = {k: v for k, v in st.items()}
    base["observedGeneration"] = task.generation
    current_hash = spec_hash(task.spec)
    waits_for = waiting_attempt(st)
    attempt = max([int(st.get("attempts") or 0), waits_for or 0, *jobs.keys(), *pods.keys()])
    # status.attempts counts the attempts that made a Job: not one that still waits in line.
    attempts_made = attempt - 1 if waits_for == attempt and not ({attempt} & (jobs.keys() | pods.keys() | jobs_gone)) \
        else attempt

    def final(state: str, reason: str, message: str, result: Any = None, error_type: str | None = None,
              history: list[dict[str, Any]] | None = None, completed_at: str | None = None) -> Plan:
        new = dict(base)
        new.pop("retryAt", None)
        new.update(state=state, completedAt=completed_at or ts, attempts=attempts_made)
        if history is not None:
            new["history"] = history[-HISTORY_MAX:]
        if state == SUCCESS:
            new.pop("result", None)
            if result is not None:  # null is not stored; a missing result reads as None
                new["result"] = result
            new.pop("error", None)
            cond = condition(st.get("conditions") or [], "True", "Succeeded", "the task returned", task.generation, ts)
        else:
            new.pop("result", None)
            new["error"] = {"type": error_type or reason, "message": message, "reason": reason}
            cond = condition(st.get("conditions") or [], "False", reason, message, task.generation, ts)
        new["conditions"] = cond
        # The outbox: the completion event is owed until the broker confirms it.
        new["event"] = {"messageId": message_id(task.uid, state),
                        "routingKey": routing_key(str(task.spec.get("task")), state), "confirmed": False}
        plan.status = new
        clean_up()
        return plan

    if task.annotations.get(ANNOTATION_CANCEL, "").lower() in ("true", "yes", "1"):
        # A verdict already written wins: a task that has finished cannot be cancelled, even
        # when its pod finished just before the cancel and its status does not say so yet.
        current = attempt_outcome(jobs.get(attempt), pods.get(attempt, []), job_gone=attempt in jobs_gone) \
            if attempt and (attempt in jobs or attempt in pods) else None
        if current is None and attempt in jobs and jobs[attempt].finished and not pods_fresh:
            plan.need_fresh_pods = attempt  # its verdict may be in a pod the cache has not seen
            return plan
        if not isinstance(current, verdicts.Verdict) or _will_retry(current, st, attempt):
            return final(FAILURE, CANCELLED, "the task was cancelled", error_type=CANCELLED)
    if st.get("specHash") and st["specHash"] != current_hash:
        return final(FAILURE, SPEC_CHANGED, "the spec changed after the task was accepted; the spec is "
                     "immutable: create a new LimeTask instead", error_type=SPEC_CHANGED)
    if attempt == 0:
        problem = check_spec(task.spec, max_attempts_ceiling, allow_image_override, resource_caps,
                             allow_placement_override, runner_resources, deny_unlisted_resources,
                             created=parse_time(task.created) or now)
        if len(task.name) > NAME_MAX:
            problem = (f"the name {task.name[:20]}... has {len(task.name)} characters; a LimeTask's name has at "
                       f"most {NAME_MAX}, since it labels the task's Jobs and pods")
        if problem:
            return final(FAILURE, INVALID_SPEC, problem, error_type=INVALID_SPEC)

    def start(n: int, history: list[dict[str, Any]] | None = None) -> Plan:
        if job_refused is not None:
            return refused(n, *job_refused, history)
        if queued is not None:
            return wait_in_queue(n, history, queued)
        new = dict(base)
        new.pop("retryAt", None)
        new.update(state=PENDING, attempts=n, jobName=job_name(task.name, n), specHash=current_hash)
        if history is not None:
            new["history"] = history[-HISTORY_MAX:]
        msg = "waiting for the worker to start" if n == 1 else f"attempt {n}: waiting for the worker to start"
        new["conditions"] = condition(st.get("conditions") or [], "Unknown", "Pending", msg, task.generation, ts)
        plan.status = new
        plan.create_attempt = n
        # An earlier attempt's Job that still runs (a replacement pod) must not run the task too.
        plan.stop_jobs = sorted(j.name for a, j in jobs.items() if a < n and not j.finished and not j.deleting)
        return plan

    def wait_in_queue(n: int, history: list[dict[str, Any]] | None, where: Waiting) -> Plan:
        """No slot for attempt n yet: PENDING, with a Queued condition and the place in line (no
        Job, no pod). The queue block names attempt n, so that the next reconcile asks for its
        slot again; `attempts` counts the n - 1 that made a Job. What place to show, and when to
        show another, queues.py decides: the same place and words are not written again."""
        new = dict(base)
        new.pop("retryAt", None)
        new.update(state=PENDING, attempts=n - 1, specHash=current_hash)
        if n > 1:
            new["jobName"] = job_name(task.name, n - 1)
        else:
            new.pop("jobName", None)
        if history is not None:
            new["history"] = history[-HISTORY_MAX:]
        block: dict[str, Any] = {"name": where.queue, "attempt": n, "waiting": where.waiting, "since": where.since}
        if where.position is not None:
            block["position"] = where.position
        message = where.message
        old_cond = queued_now(st)
        old_block = st.get("queue") if isinstance(st.get("queue"), dict) else None
        same = old_cond is not None and old_block is not None and old_cond.get("reason") == where.reason \
            and old_cond.get("message") == message and {k: v for k, v in old_block.items() if k != "updatedAt"} == block
        block["updatedAt"] = old_block.get("updatedAt") or ts if same and old_block is not None else ts
        new["queue"] = block
        conds = condition(st.get("conditions") or [], "Unknown", "Queued", message, task.generation, ts)
        new["conditions"] = condition(conds, "True", where.reason, message, task.generation, ts, kind=CONDITION_QUEUED)
        plan.status = None if _same(new, st) else new
        plan.queued = True
        # An earlier attempt's Job that still runs (a replacement pod) must not run the task too.
        plan.stop_jobs = sorted(j.name for a, j in jobs.items() if a < n and not j.finished and not j.deleting)
        if expires is not None and never_started:
            plan.recheck_after = max((expires - now).total_seconds(), 0.0) + 0.05
        return plan

    def wait_for_kueue(job: JobView, text: str, since: str) -> Plan:
        """The attempt's Job is suspended for Kueue to admit (resume): PENDING, Queued with reason
        Kueue. No Job is made or stopped: Kueue resumes this one."""
        new = dict(base)
        new.update(state=PENDING, attempts=attempt, jobName=job_name(task.name, attempt), specHash=current_hash)
        queue_block: dict[str, Any] = st["queue"] if isinstance(st.get("queue"), dict) else {}
        new["queue"] = {"name": str(task.spec.get("queue") or "default"),
                        "since": queue_block.get("since") or since or ts,
                        "updatedAt": queue_block.get("updatedAt") or ts}
        new["conditions"] = condition(condition(st.get("conditions") or [], "Unknown", "Queued", text,
                                                task.generation, ts),
                                      "True", "Kueue", text, task.generation, ts, kind=CONDITION_QUEUED)
        plan.queued = True
        if expires is not None and never_started:
            plan.recheck_after = max((expires - now).total_seconds(), 0.0) + 0.05
        plan.status = None if _same(new, st) else new
        return plan

    def refused(n: int, code: int, message: str, history: list[dict[str, Any]] | None) -> Plan:
        """The API server refused this attempt's Job: a bad spec fails, a quota or a
        permission waits (the status keeps the attempt unstarted, so it is tried again; one
        that waited in its queue stays in line, its place and history as they were)."""
        text = f"the Kubernetes API refused the Job of attempt {n}: {message}"
        if code in (400, 422):
            return final(FAILURE, INVALID_SPEC, text, error_type=INVALID_SPEC, history=history)
        new = dict(base)
        new["state"] = st.get("state") or PENDING
        reason = QUOTA_EXCEEDED if "exceeded quota" in message else JOB_REFUSED
        new["conditions"] = condition(st.get("conditions") or [], "Unknown", reason, text, task.generation, ts)
        plan.status = None if _same(new, st) else new
        plan.queued = waits_for == n
        plan.recheck_after = 15.0
        return plan

    eta, expires = _when(task.spec.get("eta")), _when(task.spec.get("expires"))
    tally = Tally.of(st)  # the attempts that ended in each way that runs the task again
    never_started = not st.get("startedAt") and not any(h.get("outcome") not in (NOT_STARTED, None)
                                                         for h in st.get("history") or [])
    def retry(outcome: verdicts.Verdict, entry: dict[str, Any], history: list[dict[str, Any]],
              ended_at: str) -> Plan:
        """The attempt raised an exception its task's autoretry_for names: the next attempt after
        the policy's delay (no Job or pod meanwhile), or FAILURE RetriesExhausted once max_retries
        retries have run. Any other exception is never re-run."""
        policy = outcome.retry or {}
        err = outcome.error
        done, most = tally.retries, int(policy.get("maxRetries", 0))
        if done >= most:
            history.append({**entry, "reason": RETRIES_EXHAUSTED})
            return final(FAILURE, RETRIES_EXHAUSTED,
                         f"{err.get('message', '')} (it raised {err.get('type')}, which autoretry_for names, in "
                         f"{_n_of(done + 1, attempt)}; max_retries is {most}{_others(tally, 'retries')})",
                         error_type=err.get("type"), history=history, completed_at=ended_at)
        delay = retry_delay(policy, done, f"{task.uid}.{attempt}")
        retry_at = (parse_time(ended_at) or now) + dt.timedelta(seconds=delay)
        history.append({**entry, "outcome": RETRY,
                        "message": f"{err.get('message', '')} (retry {done + 1} of {most} at {now_iso(retry_at)})"})
        new = dict(base)
        new.update(Tally(tally.lost, done + 1, tally.not_started).counters())
        new.update(state=PENDING, attempts=attempt, retryAt=now_iso(retry_at), history=history[-HISTORY_MAX:])
        new["conditions"] = condition(st.get("conditions") or [], "Unknown", RETRY_SCHEDULED,
                                      f"attempt {attempt} raised {err.get('type')}: {err.get('message', '')[:200]}; "
                                      f"retry {done + 1} of {most} at {now_iso(retry_at)}", task.generation, ts)
        plan.status = new
        plan.recheck_after = max((retry_at - now).total_seconds(), 0.0) + 0.05
        return plan

    if attempt == 0:
        if expires is not None and now >= expires:
            return final(FAILURE, EXPIRED, f"the task expired at {now_iso(expires)} before it started; it never ran",
                         error_type=EXPIRED)
        if eta is not None and now < eta:
            # Delayed start: no Job and no pod until the eta; a reconcile is due then (or at expiry).
            new = dict(base)
            new.update(state=PENDING, specHash=current_hash)
            new["conditions"] = condition(st.get("conditions") or [], "Unknown", SCHEDULED,
                                          f"waiting until {now_iso(eta)} to start (eta)", task.generation, ts)
            plan.status = None if _same(new, st) else new
            until = eta if expires is None else min(eta, expires)
            plan.recheck_after = max((until - now).total_seconds(), 0.0) + 0.05
            return plan
        return start(1)

    if _retry_recorded(st, attempt):
        # The attempt raised an exception its task retries: its Job and pod are not needed any
        # more (they may be gone, after a long delay). At the retry's time, the next attempt.
        retry_at = parse_time(st.get("retryAt"))
        if retry_at is not None and now < retry_at:
            plan.recheck_after = (retry_at - now).total_seconds() + 0.05
            return plan
        return start(attempt + 1, list(st.get("history") or []))
    job = jobs.get(attempt)
    attempt_pods = pods.get(attempt, [])
    if job is None and not attempt_pods and attempt not in jobs_gone and waits_for == attempt:
        # Waiting in its queue: no Job was made for this attempt. Still waiting, or its turn.
        if expires is not None and never_started and now >= expires:
            return final(FAILURE, EXPIRED, f"the task expired at {now_iso(expires)} while it waited in its "
                         f"queue; it never ran", error_type=EXPIRED)
        return start(attempt, list(st["history"]) if st.get("history") else None)
    if job is None and not attempt_pods and attempt not in jobs_gone:
        if st.get("jobName") == job_name(task.name, attempt) and int(st.get("attempts") or 0) == attempt:
            plan.verify_job = attempt
            return plan
        return start(attempt)
    evicted, admitted_now = admitted_before(job, attempt_pods)
    if job is not None and evicted and not any(verdicts.parse((p.terminated or {}).get("message")) for p in evicted):
        # Kueue evicted the Job after it started (preempted, or its pods not ready in time): it
        # suspended the Job, and the job controller deleted the pod. Not a lost worker: the same
        # Job waits in Kueue's queue and runs when resumed; its earlier pods do not count.
        ran = _container_ran(evicted) or (st.get("state") == STARTED and int(st.get("attempts") or 0) == attempt)
        what = (f"Job {job.name} was suspended after {'its worker started' if ran else 'it was admitted'} (Kueue "
                f"preempted or evicted it), and its pod deleted")
        if ran and not task.spec.get("acksLate"):
            history = [*(st.get("history") or []), {
                "attempt": attempt, "jobName": job.name, "outcome": PREEMPTED, "reason": PREEMPTED,
                "message": what, "finishedAt": job.suspend_changed or ts}]
            return final(FAILURE, PREEMPTED, f"{what}; early acknowledgement: not re-run, since Kueue would run the "
                         f"whole task again (with acks_late=True it waits to be admitted again)",
                         error_type=PREEMPTED, history=history)
        if job.suspended:
            if expires is not None and never_started and now >= expires:
                return final(FAILURE, EXPIRED, f"the task expired at {now_iso(expires)} while it waited for Kueue "
                             f"to admit it again; it never ran", error_type=EXPIRED)
            return wait_for_kueue(job, f"{what}; it waits in Kueue's queue to be admitted again",
                                  since=job.suspend_changed)
        attempt_pods = admitted_now
    outcome = attempt_outcome(job, attempt_pods, job_gone=attempt in jobs_gone)
    limit = task.spec.get("timeoutSeconds") or (job.deadline if job is not None else None)  # None: the default
    made = (job.started or job.created) if job is not None else min((p.created for p in attempt_pods), default="")
    past_deadline = bool(limit) and bool(made) and _age(made, now) >= float(limit or 0)
    if isinstance(outcome, Lost) and past_deadline:
        # At its deadline the job controller deletes the pod, and may do so before the Job says
        # DeadlineExceeded: a worker lost past the deadline timed out.
        outcome = TimedOut(f"the attempt passed its deadline of {limit} seconds")
    if (job is not None and not job.finished and not job.deleting and not past_deadline
            and (len(attempt_pods) > 1 or any((p.deleting or p.disruption) and not p.ended for p in attempt_pods))):
        # A pod of this attempt was deleted or evicted: the job controller replaces it, and the
        # replacement must not run the task again. Stop the Job now; the first pod decides.
        plan.stop_jobs = [job.name]
    if outcome is None:
        if pods_fresh:
            outcome = Lost("the pod of this attempt was removed before its verdict was read")
        else:
            plan.need_fresh_pods = attempt
            return plan

    if (isinstance(outcome, Running) and outcome.started is None and start_timeout is not None and job is not None
            and not job.suspended and not job.deleting and st.get("state") != STARTED
            and _age(job.created, now) >= start_timeout):
        # Stuck before its worker started (an image that cannot be pulled, a pod that cannot be
        # scheduled): the slot goes back, and the task waits in line again (nothing of it ran).
        # Only on the pods as the API has them now: a container that started just before the
        # timeout may not be in the cache yet, and stopping it would run the task twice.
        if not pods_fresh:
            plan.need_fresh_pods = attempt
            return plan
        why = f": {outcome.waiting[0]}: {outcome.waiting[1]}" if outcome.waiting else ""
        outcome = Lost(f"the worker had not started {int(start_timeout)}s after its Job was made (the queue's "
                       f"startTimeoutSeconds){why}".rstrip(": "), started=False)
    if isinstance(outcome, Running):
        if outcome.started is None and st.get("state") == STARTED and int(st.get("attempts") or 0) == attempt:
            return plan  # a pod not (yet) in the cache never takes a started attempt back to PENDING
        if outcome.started is None and expires is not None and never_started and st.get("state") != STARTED:
            if now >= expires:
                # Its worker has not started: stopped before it does, so the task never runs.
                return final(FAILURE, EXPIRED, f"the task expired at {now_iso(expires)} before its worker "
                             f"started; it was stopped and never ran", error_type=EXPIRED)
        new = dict(base)
        new.update(attempts=attempt, jobName=job_name(task.name, attempt), specHash=current_hash)
        if outcome.started is not None:
            new["state"] = STARTED
            new.setdefault("startedAt", outcome.started or ts)
            cond = condition(st.get("conditions") or [], "Unknown", "Running",
                             f"attempt {attempt} is running", task.generation, ts)
        else:
            new["state"] = PENDING
            reason, message = "Pending", "waiting for the worker to start"
            if outcome.waiting is not None:
                reason, message = outcome.waiting[0], f"{message}: {outcome.waiting[0]}: {outcome.waiting[1]}"
            elif job is not None and job.suspended and not attempt_pods:
                # Made suspended for Kueue: it waits for Kueue to admit (resume) it.
                return wait_for_kueue(job, f"waiting for Kueue to admit Job {job.name}{kueue_note}", since=job.created)
            elif job is not None and not attempt_pods and _age(job.created, now) <= ADMISSION_GRACE_SECONDS:
                # No watch event will come if the pod is refused: look again after the grace.
                plan.recheck_after = ADMISSION_GRACE_SECONDS - _age(job.created, now) + 0.5
            elif job is not None and not attempt_pods:
                # The job controller has made no pod: it may have been refused (LimitRange,
                # quota, admission). Only the controller's events say so.
                if admission is None:
                    plan.check_admission = attempt
                    return plan
                plan.recheck_after = 10.0
                if admission:
                    text = f"the pod of attempt {attempt} was refused: {admission}"
                    if admission_is_permanent(admission):
                        return final(FAILURE, INVALID_SPEC, text, error_type=INVALID_SPEC)
                    reason = QUOTA_EXCEEDED if "exceeded quota" in admission else POD_REFUSED
                    message = text
            cond = condition(st.get("conditions") or [], "Unknown", reason.rstrip(".") or "Pending",
                             message.rstrip(": "), task.generation, ts)
            if start_timeout is not None and job is not None and job.created:
                left = max(start_timeout - _age(job.created, now), 0.0) + 0.5  # the start timeout is due then
                plan.recheck_after = left if plan.recheck_after is None else min(plan.recheck_after, left)
            if expires is not None and never_started:
                left = max((expires - now).total_seconds(), 0.0) + 0.05
                plan.recheck_after = left if plan.recheck_after is None else min(plan.recheck_after, left)
        new["conditions"] = cond
        if _same(new, st):
            return plan
        plan.status = new
        return plan

    history = list(st.get("history") or [])
    # When the attempt ended: its pod's finish time, not the time this was noticed.
    ended_at = max(((p.terminated or {}).get("finishedAt") or "" for p in attempt_pods), default="") or ts
    if isinstance(outcome, verdicts.Verdict):
        entry = {"attempt": attempt, "jobName": job_name(task.name, attempt), "outcome": outcome.state,
                 "reason": "Succeeded" if outcome.state == SUCCESS else outcome.error.get("reason", ""),
                 "message": "" if outcome.state == SUCCESS else outcome.error.get("message", ""),
                 "finishedAt": ended_at}
        base.setdefault("startedAt", ts)
        if outcome.state == FAILURE and outcome.retry is not None:
            return retry(outcome, entry, history, ended_at)
        history.append(entry)
        if outcome.state == SUCCESS:
            return final(SUCCESS, "Succeeded", "", result=outcome.result, history=history, completed_at=ended_at)
        err = outcome.error
        return final(FAILURE, err.get("reason") or verdicts.TASK_RAISED, err.get("message", ""),
                     error_type=err.get("type"), history=history, completed_at=ended_at)
    if isinstance(outcome, TimedOut):
        limit = task.spec.get("timeoutSeconds") or (job.deadline if job is not None else None)
        history.append({"attempt": attempt, "jobName": job_name(task.name, attempt), "outcome": FAILURE,
                        "reason": TIMED_OUT, "message": outcome.message, "finishedAt": ts})
        return final(FAILURE, TIMED_OUT, f"the task did not finish within its timeout of {limit} seconds"
                     if limit else f"the task passed its deadline: {outcome.message}",
                     error_type=TIMED_OUT, history=history)
    # The worker was lost.
    seen_running = st.get("state") == STARTED and int(st.get("attempts") or 0) == attempt
    if not outcome.started and not seen_running:
        # Nothing of the task ran: safe to run again, even under early acknowledgement.
        history.append({"attempt": attempt, "jobName": job_name(task.name, attempt), "outcome": NOT_STARTED,
                        "reason": NOT_STARTED, "message": outcome.message, "finishedAt": ended_at})
        counts = Tally(tally.lost, tally.retries, tally.not_started + 1)
        base.update(counts.counters())
        if tally.not_started < MAX_NOT_STARTED_RERUNS:
            return start(attempt + 1, history)
        return final(FAILURE, WORKER_LOST, f"no worker started in {_n_of(counts.not_started, attempt)} (an "
                     f"attempt whose worker never started runs again at most {MAX_NOT_STARTED_RERUNS} times"
                     f"{_others(counts, 'not_started')}); last: {outcome.message}",
                     error_type=WORKER_LOST, history=history)
    history.append({"attempt": attempt, "jobName": job_name(task.name, attempt), "outcome": WORKER_LOST,
                    "reason": WORKER_LOST, "message": outcome.message, "finishedAt": ended_at})
    counts = Tally(tally.lost + 1, tally.retries, tally.not_started)
    base.update(counts.counters())
    if not task.spec.get("acksLate"):
        which = f"; it was attempt {attempt}{_others(counts, 'lost')}" if attempt > 1 else ""
        return final(FAILURE, WORKER_LOST, f"{outcome.message} (early acknowledgement: not re-run{which})",
                     error_type=WORKER_LOST, history=history)
    limit = min(int(task.spec.get("maxAttempts") or DEFAULT_MAX_ATTEMPTS), max_attempts_ceiling)
    if counts.lost < limit:
        return start(attempt + 1, history)
    return final(FAILURE, RETRIES_EXHAUSTED,
                 f"the worker was lost in {_n_of(counts.lost, attempt)} (maxAttempts is {limit})"
                 f"{_others(counts, 'lost')}; last: {outcome.message}",
                 error_type=WORKER_LOST, history=history)


def _n_of(n: int, attempts: int) -> str:
    """"all 3 attempts", or "2 of 5 attempts"."""
    return f"all {n} attempts" if n >= attempts else f"{n} of {attempts} attempts"


def _others(tally: Tally, kind: Literal["lost", "retries", "not_started"]) -> str:
    """What became of the other attempts, for a message ("" when they all ended this way)."""
    others = tally.others(kind)
    return f"; of the other attempts, {and_list(others)}" if others else ""


def retry_delay(policy: dict[str, Any], done: int, seed: str) -> float:
    """Seconds before retry `done + 1`: Celery's exponential backoff with full jitter, or its
    fixed default_retry_delay. The jitter is drawn from `seed` (the task's UID and attempt), so
    that deriving the plan again gives the same time."""
    import hashlib

    backoff = float(policy.get("backoff") or 0)
    if backoff <= 0:
        return float(policy.get("delay", 180))
    delay = min(float(policy.get("backoffMax", 600)), backoff * 2 ** min(done, 30))
    if policy.get("jitter", True):
        delay *= int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return float(delay)


def _retry_recorded(st: dict[str, Any], attempt: int) -> bool:
    """Whether the status already holds the retry of this attempt (its time to run again)."""
    return bool(st.get("retryAt")) and int(st.get("attempts") or 0) == attempt


def _will_retry(outcome: verdicts.Verdict, st: dict[str, Any], attempt: int) -> bool:
    """Whether this verdict is not the last word: it will be retried (a cancel then wins)."""
    if outcome.state != FAILURE or outcome.retry is None:
        return False
    return _retry_recorded(st, attempt) or int(st.get("retries") or 0) < int(outcome.retry.get("maxRetries", 0))


def admission_is_permanent(message: str) -> bool:
    """Whether the job controller's failure to create a pod will never pass by itself.

    A LimitRange or Pod Security refusal, or an invalid pod, stays; a full quota, or a
    namespace whose service account is not made yet, passes.
    """
    text = message.lower()
    if "exceeded quota" in text or "serviceaccount" in text or "service account" in text:
        return False
    return "is forbidden" in text or "is invalid" in text


def _when(value: Any) -> dt.datetime | None:
    """A time of the spec (eta, expires: RFC 3339, which the schema checks), or None."""
    return parse_time(value)


def _age(stamp: str, now: dt.datetime) -> float:
    try:
        made = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (now - made).total_seconds()


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Equal but for times that only move when something else changed."""
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        out = dict(d)
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in d.get("conditions") or []]
        return out
    return strip(new) == strip(old)
