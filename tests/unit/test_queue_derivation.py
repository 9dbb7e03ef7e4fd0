"""What a task's status says while it waits in its queue, and when it leaves it (derivation.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from limetask_operator.derivation import derive
from limetask_operator.manifests import build_job
from limetask_operator.model import JobView
from limetask_operator.queues import QUEUE_NOT_FOUND, WAITING, Waiting
from limetask_operator.settings import OperatorSettings

from tests.unit.test_status_derivation import CEILING, NOW, job, job_body, running_pod, task

SINCE = "2024-05-01T10:00:00Z"


def waiting(position: int | None = 3, reason: str = WAITING, total: int = 9) -> Waiting:
    return Waiting("background", reason, f"waiting in queue background: position {position} of {total}",
                   position, total, SINCE)


def queued_of(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Queued"), None)


def test_a_task_without_a_slot_waits_pending_with_its_position_and_no_job() -> None:
    p = derive(task(), {}, {}, NOW, CEILING, queued=waiting())
    assert p.create_attempt is None and p.queued and p.status is not None
    st = p.status
    # No attempt has made a Job: attempts says 0 (kubectl get lt); the queue block names the one that waits.
    assert st["state"] == "PENDING" and st["attempts"] == 0 and "jobName" not in st
    assert st["queue"] == {"name": "background", "attempt": 1, "position": 3, "waiting": 9, "since": SINCE,
                           "updatedAt": "2024-05-01T10:05:00Z"}
    cond = queued_of(st)
    assert cond is not None and cond["status"] == "True" and cond["reason"] == WAITING
    assert "position 3 of 9" in cond["message"]
    succeeded = st["conditions"][0]
    assert succeeded["type"] == "Succeeded" and succeeded["status"] == "Unknown" and succeeded["reason"] == "Queued"
    # Asked again: the attempt is still the one to start.
    again = derive(task(status=st), {}, {}, NOW, CEILING)
    assert again.create_attempt == 1


def test_the_same_place_is_not_written_again_and_another_one_is() -> None:
    """When a place is due to be rewritten is the queues' decision (queues.place_to_show):
    derive writes what it is given, and nothing when that is what the status says."""
    st = derive(task(), {}, {}, NOW, CEILING, queued=waiting(3)).status
    same = derive(task(status=st), {}, {}, NOW + dt.timedelta(seconds=31), CEILING, queued=waiting(3))
    assert same.status is None and same.queued  # nothing written
    moved = derive(task(status=st), {}, {}, NOW + dt.timedelta(seconds=10), CEILING, queued=waiting(2))
    assert moved.status is not None and moved.status["queue"]["position"] == 2
    recounted = derive(task(status=st), {}, {}, NOW + dt.timedelta(seconds=10), CEILING, queued=waiting(3, total=4))
    assert recounted.status is not None and recounted.status["queue"]["waiting"] == 4
    # Further back than the first ones counted, the status has no position.
    back = derive(task(status=st), {}, {}, NOW, CEILING, queued=waiting(None, total=400))
    assert back.status is not None and "position" not in back.status["queue"]
    # A new reason is written at once.
    missing = derive(task(status=st), {}, {}, NOW + dt.timedelta(seconds=1), CEILING,
                     queued=waiting(1, reason=QUEUE_NOT_FOUND))
    assert missing.status is not None and queued_of(missing.status)["reason"] == QUEUE_NOT_FOUND  # type: ignore[index]


def test_admission_creates_the_job_and_says_how_long_the_task_waited() -> None:
    st = derive(task(), {}, {}, NOW, CEILING, queued=waiting()).status
    later = NOW + dt.timedelta(seconds=40)
    p = derive(task(status=st), {}, {}, later, CEILING)
    assert p.create_attempt == 1 and p.status is not None and "queue" not in p.status
    cond = queued_of(p.status)
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "Admitted"
    assert "after waiting 340s" in cond["message"]  # since 10:00:00, admitted 10:05:40
    # The Queued condition stays (False) while it runs and when it ends.
    running = derive(task(status=p.status), {1: job(1)}, {1: [running_pod()]}, later, CEILING)
    assert running.status is not None and running.status["state"] == "STARTED"
    assert queued_of(running.status)["reason"] == "Admitted"  # type: ignore[index]


def test_a_task_cancelled_or_expired_while_it_waits_ends_and_leaves_the_queue() -> None:
    st = derive(task(), {}, {}, NOW, CEILING, queued=waiting()).status
    cancelled = derive(task(status=st, annotations={"limetask.io/cancel": "true"}), {}, {}, NOW, CEILING)
    assert cancelled.status is not None and cancelled.status["state"] == "FAILURE"
    assert cancelled.status["attempts"] == 0  # it never ran
    assert cancelled.status["error"]["reason"] == "Cancelled" and cancelled.create_attempt is None
    cond = queued_of(cancelled.status)
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "Cancelled"
    expiring = "2024-05-01T10:06:00Z"
    st = derive(task(expires=expiring), {}, {}, NOW, CEILING, queued=waiting()).status
    p = derive(task(status=st, expires=expiring), {}, {}, NOW, CEILING, queued=waiting())
    assert p.status is None and 59 < (p.recheck_after or 0) < 61  # a reconcile is due at expiry
    expired = derive(task(status=st, expires=expiring), {}, {}, NOW + dt.timedelta(seconds=61), CEILING)
    assert expired.status is not None and expired.status["error"]["reason"] == "Expired"
    assert expired.status["attempts"] == 0
    assert "while it waited in its queue" in expired.status["error"]["message"]
    assert expired.create_attempt is None


def test_a_late_ack_retry_waits_in_line_with_its_history() -> None:
    lost = {"phase": "Failed", "reason": "Evicted", "message": "node pressure",
            "containerStatuses": [{"name": "task", "state": {"terminated": {
                "exitCode": 137, "reason": "Error", "startedAt": "2024-05-01T10:01:00Z",
                "finishedAt": "2024-05-01T10:02:00Z"}}}]}
    from limetask_operator.model import PodView  # noqa: PLC0415

    from tests.unit.test_status_derivation import pod_body  # noqa: PLC0415

    pod = PodView.from_body({**pod_body(1), "status": lost})
    st = {"state": "STARTED", "attempts": 1, "jobName": "x", "startedAt": "2024-05-01T10:01:00Z"}
    failed_job = JobView.from_body(job_body(1, condition=("Failed", "BackoffLimitExceeded", "x"), active=0))
    p = derive(task(status=st, acksLate=True, maxAttempts=3), {1: failed_job}, {1: [pod]}, NOW, CEILING,
               queued=waiting())
    assert p.create_attempt is None and p.status is not None
    # One attempt made a Job; the second waits in line.
    assert p.status["attempts"] == 1 and p.status["queue"]["attempt"] == 2
    assert p.status["history"][-1]["outcome"] == "WorkerLost"
    # Its Job gone meanwhile, the task asks for attempt 2's slot again, history kept once.
    again = derive(task(status=p.status, acksLate=True, maxAttempts=3), {}, {}, NOW, CEILING)
    assert again.create_attempt == 2 and len(again.status["history"]) == 1  # type: ignore[index]


def test_a_job_suspended_for_kueue_is_queued_until_kueue_admits_it() -> None:
    suspended = JobView.from_body({**job_body(1, active=0), "spec": {"suspend": True}})
    assert suspended.suspended
    p = derive(task(status={"state": "PENDING", "attempts": 1, "jobName": "x"}), {1: suspended}, {}, NOW, CEILING)
    assert p.status is not None and p.queued and p.check_admission is None
    cond = queued_of(p.status)
    assert cond is not None and cond["status"] == "True" and cond["reason"] == "Kueue"
    resumed = derive(task(status=p.status), {1: job(1)}, {1: [running_pod()]}, NOW, CEILING)
    assert resumed.status is not None and queued_of(resumed.status)["status"] == "False"  # type: ignore[index]


def test_the_job_of_a_kueue_queue_is_made_suspended_with_its_label() -> None:
    settings = OperatorSettings(runner_image="runner:1")
    t = task(queue="gpu")
    plain = build_job(t, 1, settings)
    assert "suspend" not in plain["spec"] and plain["metadata"]["labels"]["limetask.io/queue"] == "gpu"
    handed = build_job(t, 1, settings, kueue_queue="team-a")
    assert handed["spec"]["suspend"] is True
    assert handed["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_queue_and_priority_are_part_of_the_immutable_spec() -> None:
    st = derive(task(queue="a"), {}, {}, NOW, CEILING, queued=waiting()).status
    changed = derive(task(status=st, queue="b"), {}, {}, NOW, CEILING)
    assert changed.status is not None and changed.status["error"]["reason"] == "SpecChanged"


def test_a_worker_that_never_starts_gives_its_slot_back_after_the_queues_start_timeout() -> None:
    from limetask_operator.model import PodView

    from tests.unit.test_status_derivation import pod_body

    stuck = PodView.from_body(pod_body(1, "Pending", {"waiting": {"reason": "ImagePullBackOff",
                                                                  "message": "Back-off pulling image"}}))
    st = {"state": "PENDING", "attempts": 1, "jobName": "x"}
    # The Job was made 270 s ago: within a start timeout of 300 s it waits, and a reconcile is due.
    waiting = derive(task(status=st), {1: job(1)}, {1: [stuck]}, NOW, CEILING, start_timeout=300)
    assert waiting.create_attempt is None and waiting.stop_jobs == []
    assert waiting.recheck_after is not None and 30 <= waiting.recheck_after <= 31
    # Past it: attempt 1 stopped, attempt 2 asks for a slot again (nothing of the task ran).
    p = derive(task(status=st), {1: job(1)}, {1: [stuck]}, NOW, CEILING, start_timeout=200, pods_fresh=True)
    assert p.create_attempt == 2 and p.stop_jobs == [job(1).name]
    entry = p.status["history"][-1]  # type: ignore[index]
    assert entry["outcome"] == "NotStarted" and "startTimeoutSeconds" in entry["message"]
    assert "ImagePullBackOff" in entry["message"]
    # Without a start timeout, it waits as before; a worker that runs is never stopped by it.
    assert derive(task(status=st), {1: job(1)}, {1: [stuck]}, NOW, CEILING).create_attempt is None
    started = {"state": "STARTED", "attempts": 1, "jobName": "x", "startedAt": "2024-05-01T10:00:42Z"}
    assert derive(task(status=started), {1: job(1)}, {1: [running_pod()]}, NOW, CEILING,
                  start_timeout=1).stop_jobs == []
    # Stuck again and again: after three re-runs, FAILURE WorkerLost.
    history = [{"attempt": n, "outcome": "NotStarted"} for n in (1, 2, 3)]
    last = {"state": "PENDING", "attempts": 4, "jobName": "x", "history": history}
    stuck4 = PodView.from_body(pod_body(4, "Pending", {"waiting": {"reason": "ImagePullBackOff"}}))
    final = derive(task(status=last), {4: job(4)}, {4: [stuck4]}, NOW, CEILING, start_timeout=200,
                   pods_fresh=True)
    assert final.status is not None and final.status["state"] == "FAILURE"
    assert final.status["error"]["reason"] == "WorkerLost" and final.stop_jobs == [job(4).name]


def test_a_kueue_queue_has_no_start_timeout_of_its_own() -> None:
    from limetask_operator.queues import QueueSpec

    plain = QueueSpec.from_body({"metadata": {"name": "q"}, "spec": {"startTimeoutSeconds": 60}})
    handed = QueueSpec.from_body({"metadata": {"name": "q"}, "spec": {"startTimeoutSeconds": 60,
                                                                     "admission": "Kueue"}})
    assert plain.start_timeout == 60 and handed.start_timeout is None


def test_the_start_timeout_reads_the_pods_fresh_before_it_takes_an_attempt_as_not_started() -> None:
    """The cache may not have seen the container start yet: a worker that did start must not be
    stopped and its task run again (a duplicate under early acknowledgement)."""
    from limetask_operator.model import PodView

    from tests.unit.test_status_derivation import pod_body

    cached = PodView.from_body(pod_body(1, "Pending", {"waiting": {"reason": "ContainerCreating"}}))
    st = {"state": "PENDING", "attempts": 1, "jobName": "x"}
    asks = derive(task(status=st), {1: job(1)}, {1: [cached]}, NOW, CEILING, start_timeout=200)
    assert asks.need_fresh_pods == 1
    assert asks.status is None and asks.create_attempt is None and asks.stop_jobs == []
    # Fresh from the API: it runs. STARTED, nothing stopped.
    runs = derive(task(status=st), {1: job(1)}, {1: [running_pod()]}, NOW, CEILING, start_timeout=200,
                  pods_fresh=True)
    assert runs.status is not None and runs.status["state"] == "STARTED"
    assert runs.stop_jobs == [] and runs.create_attempt is None
    # Fresh, and still not started: now it is NotStarted.
    stuck = derive(task(status=st), {1: job(1)}, {1: [cached]}, NOW, CEILING, start_timeout=200, pods_fresh=True)
    assert stuck.create_attempt == 2 and stuck.stop_jobs == [job(1).name]


@pytest.mark.parametrize("status, attempt", [
    ({"attempts": 0, "queue": {"name": "q", "attempt": 1}}, 1),
    ({"attempts": 1, "jobName": "t-1", "queue": {"name": "q", "attempt": 2}, "history": [{"attempt": 1}]}, 2),
    # Without the block's attempt (written before it was, or pruned by an older CRD): from the history.
    ({"attempts": 0, "queue": {"name": "q"}}, 1),
    ({"attempts": 1, "jobName": "t-1", "queue": {"name": "q"}}, 1),  # as written before attempts meant Jobs
    ({"attempts": 2, "queue": {"name": "q"}, "history": [{"attempt": 1}, {"attempt": 2}]}, 3),
    ({"attempts": 2, "queue": {"name": "q"}, "history": [{"attempt": 1}]}, 2),
])
def test_the_attempt_that_waits(status: dict[str, Any], attempt: int) -> None:
    from limetask_operator.queues import waiting_attempt

    queued = {**status, "state": "PENDING", "conditions": [{"type": "Queued", "status": "True", "reason": "Waiting"}]}
    assert waiting_attempt(queued) == attempt
    assert waiting_attempt({**status, "state": "PENDING"}) is None  # not queued


def test_a_job_refused_after_the_wait_keeps_the_attempt_in_line_and_the_history_as_it_was() -> None:
    """Attempt 2 waited in its queue, got its slot, and the API server refused its Job (a
    quota on Jobs): the task stays in line for attempt 2 (its place kept), and attempt 1's end
    is not recorded a second time."""
    history = [{"attempt": 1, "jobName": "x-1", "outcome": "NotStarted", "reason": "NotStarted"}]
    queued = [{"type": "Queued", "status": "True", "reason": WAITING, "message": "waiting"}]
    st = {"state": "PENDING", "attempts": 1, "jobName": "x-1", "history": history, "conditions": queued,
          "queue": {"name": "background", "attempt": 2, "waiting": 1, "since": SINCE, "updatedAt": SINCE}}
    # (attempt 1's Job stays, finished, until the task ends)
    old = {1: JobView.from_body(job_body(1, condition=("Failed", "DeadlineExceeded", "x"), active=0))}
    refused = derive(task(status=st), old, {}, NOW, CEILING, job_refused=(403, 'jobs is forbidden: exceeded quota'))
    assert refused.status is not None and refused.create_attempt is None and refused.recheck_after == 15.0
    assert refused.status["queue"]["attempt"] == 2 and len(refused.status["history"]) == 1
    again = derive(task(status=refused.status), old, {}, NOW + dt.timedelta(seconds=15), CEILING)
    assert again.create_attempt == 2 and len(again.status["history"]) == 1  # type: ignore[index]
