"""What became of one attempt, read from its Job and pods: a verdict, a lost worker, a
timeout, or still running. Nothing here decides what the task does next."""

from __future__ import annotations

import datetime as dt
import signal
from dataclasses import dataclass

from lime_task import verdict as verdicts
from lime_task.validation import parse_time

from ..model import JobView, PodView
from .plan import age


@dataclass(frozen=True)
class Lost:
    message: str
    # Whether the task may have run: False when no container of the attempt ever started
    # (evicted or refused before it started), which is safe to run again under any ack.
    started: bool = True
    # The kernel killed the container for its memory limit (OOMKilled): with memoryOnOOM the
    # task runs again with more (oom.py); without, it is a lost worker as any other.
    oom: bool = False


@dataclass(frozen=True)
class TimedOut:
    message: str


@dataclass(frozen=True)
class AttemptRunning:
    """The attempt has not ended: its worker runs (`started`), or is still to start."""

    started: str | None  # None: still pending
    waiting: tuple[str, str] | None = None  # why a pending pod waits, beyond the usual start-up


Outcome = verdicts.Verdict | Lost | TimedOut | AttemptRunning


def oom_killed(pod: PodView) -> bool:
    """Whether the pod's container was OOMKilled (not the pod evicted, which says that first)."""
    return not (pod.reason == "Evicted" or pod.disruption) and (pod.terminated or {}).get("reason") == "OOMKilled"


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


def may_have_run(pods: list[PodView]) -> bool:
    """False only when the pods were evicted or refused by their node before any container
    ran (a container that could not start has a zero start time): then nothing of the task ran.
    A pod stopped for any other reason (a deadline, a deletion) counts as having run."""
    for p in pods:
        if container_ran([p]):
            return True
        if not (p.disruption or (p.reason and p.reason != "DeadlineExceeded")):
            return True
    return not pods


def container_ran(pods: list[PodView]) -> bool:
    """Whether any of these pods' task container ever started."""
    return any(p.running_since is not None
               or not str((p.terminated or {}).get("startedAt") or "1970").startswith(("1970", "0001"))
               for p in pods)


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


def attempt_outcome(job: JobView | None, pods: list[PodView], job_gone: bool = False) -> Outcome | None:
    """The outcome of one attempt, or None when the caches cannot tell yet.

    One pod per attempt: when the job controller replaced a pod that was deleted or evicted
    (a Job made without podReplacementPolicy: features.py), the first pod decides: its verdict,
    or a lost worker. A replacement's own verdict never counts.
    """
    if len(pods) > 1:
        first = min(pods, key=lambda p: (p.created, p.name))
        if first.ended or first.deleting:
            found = verdicts.parse((first.terminated or {}).get("message")) if first.ended else None
            if found is not None:
                return found
            if not first.ended and not first.gone:
                return AttemptRunning(first.running_since)  # its end (and maybe a verdict) is still to come
            return Lost(f"{describe_lost(first)}; the job controller started a replacement pod, which does "
                        f"not count (one pod per attempt)", started=may_have_run([first]), oom=oom_killed(first))
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
        return Lost(describe_lost(ended[0]), started=may_have_run(ended), oom=oom_killed(ended[0]))
    deleted = [p for p in pods if p.gone and not p.ended]
    if deleted and not running:
        why = f": {deleted[0].disruption}" if deleted[0].disruption else ""
        return Lost(f"the pod was deleted while the task ran{why}", started=may_have_run(deleted))
    if running:
        started = next((p.running_since for p in running if p.running_since is not None), None)
        return AttemptRunning(started, next((p.waiting for p in running if p.waiting), None))
    if job_gone:
        return Lost("the Job of this attempt was deleted before the task finished")
    if job is not None and job.finished:
        return None  # finished, but its pod is not in the cache: read it from the API
    if job is not None and job.deleting:
        return Lost("the Job of this attempt is being deleted")
    return AttemptRunning(None)


def past_deadline(limit: object, job: JobView | None, pods: list[PodView], now: dt.datetime) -> bool:
    """Whether the attempt has run longer than the task's timeoutSeconds (`limit`), counted from
    its Job's start (or creation, or its first pod's)."""
    made = (job.started or job.created) if job is not None else min((p.created for p in pods), default="")
    return bool(limit) and bool(made) and age(made, now) >= float(limit or 0)  # type: ignore[arg-type]


def lost_past_deadline(outcome: Outcome | None, limit: object, deadline_passed: bool) -> Outcome | None:
    """At its deadline the job controller deletes the pod, and may do so before the Job says
    DeadlineExceeded: a worker lost past the deadline timed out."""
    if isinstance(outcome, Lost) and deadline_passed:
        return TimedOut(f"the attempt passed its deadline of {limit} seconds")
    return outcome


def replaced_pod_jobs(job: JobView | None, pods: list[PodView], deadline_passed: bool) -> list[str]:
    """A pod of this attempt was deleted or evicted: the job controller replaces it, and the
    replacement must not run the task again. Its Job is stopped now; the first pod decides."""
    if (job is not None and not job.finished and not job.deleting and not deadline_passed
            and (len(pods) > 1 or any((p.deleting or p.disruption) and not p.ended for p in pods))):
        return [job.name]
    return []
