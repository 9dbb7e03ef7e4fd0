"""The reconciler's side effects, in order, against a fake API (no cluster needed)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from limetask_operator import derivation
from limetask_operator.kube import KubeError
from limetask_operator.model import TaskView
from limetask_operator.reconciler import Reconciler
from limetask_operator.settings import OperatorSettings

BODY: dict[str, Any] = {
    "apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
    "metadata": {"name": "t1", "namespace": "ns", "uid": "uid-1", "resourceVersion": "5", "generation": 1},
    "spec": {"task": "acme_solution.tasks.lime.add", "app": "my-app", "args": [1, 2]},
    "status": {"state": "STARTED", "attempts": 1, "jobName": "t1-1"},
}
FINAL = {"state": "SUCCESS", "result": 3, "attempts": 1, "completedAt": "2024-01-01T00:00:00Z",
         "event": {"messageId": "uid-1.SUCCESS", "routingKey": "core.task.x.success.v1", "confirmed": False}}


class FakeKube:
    """Answers PUTs of the status with a scripted list of results (KubeError or 'ok')."""

    server = "https://fake"

    def __init__(self, puts: list[Any], fresh: dict[str, Any] | None = None) -> None:
        self.puts = puts
        self.fresh = fresh
        self.calls: list[tuple[str, str, Any]] = []

    async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
        self.calls.append((method, path, copy.deepcopy(body)))
        if method == "PUT":
            outcome = self.puts.pop(0)
            if isinstance(outcome, KubeError):
                raise outcome
            stored = copy.deepcopy(BODY)
            stored["metadata"]["resourceVersion"] = str(10 + len(self.calls))
            stored["status"] = body["status"]
            return stored
        raise AssertionError(f"unexpected {method} {path}")

    async def get(self, path: str) -> dict[str, Any] | None:
        self.calls.append(("GET", path, None))
        return copy.deepcopy(self.fresh)

    async def delete(self, path: str, propagation: str = "Background") -> None:
        self.calls.append(("DELETE", path, None))

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("POST", path, body))
        return body


class Watch:
    """A watch as the reconciler asks it: its namespace, and whether its listing is done."""

    forbidden = False

    def __init__(self, namespace: str, synced: bool) -> None:
        self.namespace = namespace
        self.synced = asyncio.Event()
        if synced:
            self.synced.set()

    def degraded(self) -> str | None:
        return None


def reconciler(kube: FakeKube, **settings: Any) -> Reconciler:
    async def make() -> Reconciler:
        return Reconciler(kube, OperatorSettings(**settings))  # type: ignore[arg-type]
    return asyncio.run(make())


def test_a_final_status_lands_even_when_the_task_changed_meanwhile() -> None:
    """The verdict is read (and its event maybe published): a cancel annotation added meanwhile
    must not lead to another state being stored than the one published."""
    fresh = copy.deepcopy(BODY)
    fresh["metadata"]["resourceVersion"] = "6"
    fresh["metadata"]["annotations"] = {"limetask.io/cancel": "true"}
    kube = FakeKube([KubeError(409, "conflict", "PUT", "/x"), "ok"], fresh=fresh)
    rec = reconciler(kube)

    async def main() -> None:
        await rec.carry_out(TaskView.from_body(BODY), derivation.Plan(status=dict(FINAL)))

    asyncio.run(main())
    puts = [c for c in kube.calls if c[0] == "PUT"]
    assert len(puts) == 2
    assert puts[1][2]["status"]["state"] == "SUCCESS" and puts[1][2]["status"]["result"] == 3
    assert puts[1][2]["metadata"]["resourceVersion"] == "6"  # written over the fresh object
    assert rec.caches.tasks[("ns", "t1")].status["state"] == "SUCCESS"


def test_a_final_status_of_someone_else_is_not_overwritten() -> None:
    fresh = copy.deepcopy(BODY)
    fresh["metadata"]["resourceVersion"] = "6"
    fresh["status"] = {**FINAL, "state": "FAILURE", "error": {"reason": "Cancelled"}}
    kube = FakeKube([KubeError(409, "conflict", "PUT", "/x")], fresh=fresh)
    rec = reconciler(kube)
    asyncio.run(rec.carry_out(TaskView.from_body(BODY), derivation.Plan(status=dict(FINAL))))
    assert [c[0] for c in kube.calls] == ["PUT", "GET"]


def test_a_conflict_on_a_running_status_is_read_again_not_forced() -> None:
    fresh = copy.deepcopy(BODY)
    fresh["metadata"]["resourceVersion"] = "6"
    kube = FakeKube([KubeError(409, "conflict", "PUT", "/x")], fresh=fresh)
    rec = reconciler(kube)

    async def main() -> None:
        await rec.carry_out(TaskView.from_body(BODY), derivation.Plan(status={**BODY["status"], "state": "PENDING"}))

    asyncio.run(main())
    assert [c[0] for c in kube.calls] == ["PUT", "GET"]


def test_keeping_finished_jobs_still_stops_running_ones() -> None:
    kube = FakeKube(["ok"])
    rec = reconciler(kube, delete_finished_jobs=False)
    cancelled = {**FINAL, "state": "FAILURE", "error": {"reason": "Cancelled"}}
    plan = derivation.Plan(status=cancelled, stop_jobs=["t1-2"], delete_jobs=["t1-1"])
    asyncio.run(rec.carry_out(TaskView.from_body(BODY), plan))
    deletes = [c[1] for c in kube.calls if c[0] == "DELETE"]
    assert deletes == ["/apis/batch/v1/namespaces/ns/jobs/t1-2"]


def test_finished_jobs_are_deleted_by_default_only_after_the_status_is_stored() -> None:
    kube = FakeKube(["ok"])
    rec = reconciler(kube)
    asyncio.run(rec.carry_out(TaskView.from_body(BODY), derivation.Plan(status=dict(FINAL), delete_jobs=["t1-1"])))
    assert [c[0] for c in kube.calls] == ["PUT", "DELETE"]
    kube = FakeKube([KubeError(500, "etcd is down", "PUT", "/x")])
    rec = reconciler(kube)
    try:
        asyncio.run(rec.carry_out(TaskView.from_body(BODY), derivation.Plan(status=dict(FINAL),
                                                                               delete_jobs=["t1-1"])))
    except KubeError:
        pass
    assert [c[0] for c in kube.calls] == ["PUT"]  # the Job, and its verdict, stay until the result is stored


def _child(kind: str, name: str, status: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "9",
                         "labels": {"limetask.io/task-id": "t1", "limetask.io/task-uid": uid,
                                    "limetask.io/attempt": "1"}},
            "status": status}


POD_DONE = {"phase": "Succeeded", "containerStatuses": [{"name": "task", "state": {"terminated": {
    "exitCode": 0, "finishedAt": "2024-01-01T00:00:09Z", "message": '{"state":"SUCCESS","result":3}'}}}]}
JOB_DONE = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}


def test_a_finished_pod_and_job_deleted_before_the_verdict_was_stored_still_give_it() -> None:
    """Gone is not lost: the last state of a deleted Job and pod (a TTL of 0, say) keeps the
    verdict until the task's final status is stored; a deleted running pod is not kept."""
    import datetime as dt

    rec = reconciler(FakeKube([]))
    rec.task_event("ADDED", copy.deepcopy(BODY))
    rec.job_event("ADDED", _child("Job", "t1-1", JOB_DONE))
    rec.pod_event("ADDED", _child("Pod", "t1-1-abc", POD_DONE))
    rec.pod_event("DELETED", _child("Pod", "t1-1-abc", POD_DONE))
    rec.job_event("DELETED", _child("Job", "t1-1", JOB_DONE))
    key = ("ns", "t1")
    task = rec.caches.tasks[key]
    plan = derivation.derive(task, rec.caches.jobs_of(key, task.uid), rec.caches.pods_of(key, task.uid),
                             dt.datetime.now(dt.timezone.utc), 10)
    assert plan.status is not None and plan.status["state"] == "SUCCESS" and plan.status["result"] == 3
    assert plan.delete_jobs == [] and plan.stop_jobs == []  # gone already
    # Once the final status is stored, nothing of them is kept.
    rec.task_event("MODIFIED", {**copy.deepcopy(BODY), "status": plan.status})
    rec.caches.forget_gone(key)
    assert key not in rec.caches.jobs and key not in rec.caches.pods
    running = {"phase": "Running", "containerStatuses": [{"name": "task", "state": {"running": {}}}]}
    rec.pod_event("ADDED", _child("Pod", "t1-1-def", running))
    rec.pod_event("DELETED", _child("Pod", "t1-1-def", running))
    assert key not in rec.caches.pods


def test_children_of_an_earlier_task_of_the_same_name_are_not_taken() -> None:
    rec = reconciler(FakeKube([]))
    rec.task_event("ADDED", copy.deepcopy(BODY))
    rec.pod_event("ADDED", _child("Pod", "t1-1-old", POD_DONE, uid="uid-0"))
    rec.job_event("ADDED", _child("Job", "t1-1", JOB_DONE, uid="uid-0"))
    assert rec.caches.jobs_of(("ns", "t1"), "uid-1") == {} and rec.caches.pods_of(("ns", "t1"), "uid-1") == {}


def test_a_namespace_whose_listing_fails_holds_back_only_its_own_tasks() -> None:
    async def main() -> tuple[list[Any], set[Any]]:
        kube = FakeKube(["ok", "ok"])
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = [Watch("good", True), Watch("bad", False)]
        for ns in ("good", "bad"):
            body = copy.deepcopy(BODY)
            body["metadata"]["namespace"] = ns
            body["status"] = {}
            rec.task_event("ADDED", body)
        await rec.reconcile(("bad", "t1"))
        await rec.reconcile(("good", "t1"))
        return kube.calls, rec.deferred

    calls, deferred = asyncio.run(main())
    assert [c[1] for c in calls if c[0] == "POST"] == ["/apis/batch/v1/namespaces/good/jobs"]
    assert deferred == {("bad", "t1")}


def test_tasks_held_back_go_once_the_last_listing_of_their_namespace_ends() -> None:
    """Whatever order the three listings end in, the task that waited for them is reconciled."""
    from limetask_operator.watches import ResourceWatch

    class Kube(FakeKube):
        def __init__(self) -> None:
            super().__init__(["ok"])

        async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
            if method == "GET":
                items = [copy.deepcopy(BODY)] if "limetasks" in path else []
                return {"metadata": {"resourceVersion": "1"}, "items": items}
            return await super().request(method, path, body, params)

    async def main() -> list[Any]:
        kube = Kube()
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = []
        for plural in ("limetasks", "jobs", "pods"):
            w = ResourceWatch(kube, "/x", plural, "", "ns", None,  # type: ignore[arg-type]
                              rec.task_event if plural == "limetasks" else rec.job_event,
                              rec.listed_tasks if plural == "limetasks" else
                              (lambda seen, ns, p=plural: rec.listed_children(p, seen, ns)))
            rec.watches.append(w)
        for w in rec.watches:  # the tasks' listing first: the task waits for the other two
            await w._list()
            key = ("ns", "t1")
            if key in rec.work:
                rec.work.take_nowait()
                await rec.reconcile(key)
        return kube.calls

    calls = asyncio.run(main())
    assert any(c[0] == "PUT" for c in calls), "the task was never reconciled"


def test_tasks_held_back_go_whichever_watch_of_the_operator_lists_last() -> None:
    """The operator's own watches (make_watches: LimeTasks, Jobs, Pods, LimeTaskSchedules, LimeTaskQueues), with the
    tasks' listing first and each other one last in turn: the held-back task is always released.
    (The schedules' listing once did not release it: tasks stayed PENDING after a start.)"""
    import itertools

    class Kube(FakeKube):
        def __init__(self) -> None:
            super().__init__(["ok"] * 10)

        async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
            if method == "GET":
                items = [copy.deepcopy(BODY)] if path.endswith("/limetasks") else []
                return {"metadata": {"resourceVersion": "1"}, "items": items}
            return await super().request(method, path, body, params)

    async def run(order: tuple[int, ...]) -> list[Any]:
        kube = Kube()
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = rec.make_watches(["ns"])
        assert [w.plural for w in rec.watches] == ["limetasks", "jobs", "pods", "limetaskschedules",
                                                   "limetaskqueues"]
        for i in (0, *order):
            await rec.watches[i]._list()
            while rec.work:
                key = rec.work.take_nowait()
                await rec.reconcile(key)
        return kube.calls

    for order in itertools.permutations((1, 2, 3, 4)):
        calls = asyncio.run(run(order))
        assert any(c[0] == "PUT" for c in calls), f"the task was never reconciled (listings in order {order})"


def test_one_listing_of_refusals_serves_every_waiting_task_of_a_namespace() -> None:
    """Hundreds of Jobs waiting for pods in a burst must not make hundreds of event listings."""
    class Kube(FakeKube):
        async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
            self.calls.append((method, path, params))
            return {"items": [{"involvedObject": {"name": "t7-1"}, "message": "forbidden: LimitRange",
                               "lastTimestamp": "2024-01-01T00:00:00Z"}]}

    async def main() -> list[str]:
        kube = Kube([])
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        answers = []
        for n in range(10):
            body = copy.deepcopy(BODY)
            body["metadata"]["name"] = f"t{n}"
            answers.append(await rec._pod_refusal(TaskView.from_body(body), 1))
        assert len(kube.calls) == 1
        return answers

    answers = asyncio.run(main())
    assert answers[7] == "forbidden: LimitRange" and answers[0] == "" and answers.count("") == 9


def test_a_task_past_its_queues_limit_gets_a_queued_status_and_no_job() -> None:
    """Through the reconciler: the first task of a queue of one gets its Job; the second is
    written PENDING with a Queued condition, and no Job is made for it; until every listing is
    done, a queue limited over every namespace gives no slot at all."""
    async def main() -> tuple[list[Any], Any, set[Any]]:
        kube = FakeKube(["ok"] * 4)
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.admission.queue_event("ADDED", {"metadata": {"name": "q"}, "spec": {"maxRunning": 1}})
        rec.watches = [Watch("ns", True), Watch("other", False)]  # another namespace not listed yet
        for name in ("t1", "t2"):
            body = copy.deepcopy(BODY)
            body["metadata"]["name"] = name
            body["spec"]["queue"] = "q"
            body["status"] = {}
            rec.task_event("ADDED", body)
        await rec.reconcile(("ns", "t1"))
        deferred = set(rec.deferred_admission)
        rec.watches = [Watch("ns", True), Watch("other", True)]
        rec.deferred_admission.clear()
        await rec.reconcile(("ns", "t1"))
        await rec.reconcile(("ns", "t2"))
        return kube.calls, deferred, set(rec.admission.entries)

    calls, deferred, waiting = asyncio.run(main())
    assert deferred == {("ns", "t1")}
    posts = [c for c in calls if c[0] == "POST"]
    assert [c[2]["metadata"]["name"] for c in posts] == ["t1-1"]
    puts = [c[2]["status"] for c in calls if c[0] == "PUT"]
    second = puts[-1]
    assert second["state"] == "PENDING" and second["queue"]["name"] == "q"
    assert any(c["type"] == "Queued" and c["status"] == "True" for c in second["conditions"])
    assert waiting == {("ns", "t2")}


def test_a_worker_that_started_just_before_the_start_timeout_is_not_stopped() -> None:
    """The cache still has the pod waiting past the queue's startTimeoutSeconds, but the API has it
    running: the reconciler reads the pods fresh, and the task is STARTED, its Job kept."""
    import datetime as dt

    made = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    waiting = {"phase": "Pending", "containerStatuses": [{"name": "task", "state": {
        "waiting": {"reason": "ContainerCreating"}}}]}
    running = {"phase": "Running", "containerStatuses": [{"name": "task", "state": {
        "running": {"startedAt": made}}}]}

    def pod(status: dict[str, Any]) -> dict[str, Any]:
        body = _child("Pod", "t1-1-abc", status)
        body["metadata"]["creationTimestamp"] = made
        return body

    class Kube(FakeKube):
        async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
            if method == "GET" and path.endswith("/pods"):
                self.calls.append((method, path, params))
                return {"items": [pod(running)]}
            return await super().request(method, path, body, params)

    async def main() -> list[Any]:
        kube = Kube(["ok"])
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = [Watch("ns", True)]
        rec.admission.queue_event("ADDED", {"metadata": {"name": "default"}, "spec": {"startTimeoutSeconds": 60}})
        body = copy.deepcopy(BODY)
        body["status"] = {"state": "PENDING", "attempts": 1, "jobName": "t1-1"}
        rec.task_event("ADDED", body)
        job = _child("Job", "t1-1", {"active": 1})
        job["metadata"]["creationTimestamp"] = made
        rec.job_event("ADDED", job)
        rec.pod_event("ADDED", pod(waiting))
        await rec.reconcile(("ns", "t1"))
        return kube.calls

    calls = asyncio.run(main())
    assert [c[0] for c in calls] == ["GET", "PUT"]
    assert calls[1][2]["status"]["state"] == "STARTED"


def test_a_stuck_worker_past_the_start_timeout_waits_in_line_again_in_a_full_queue() -> None:
    """The queue's only slot is the stuck attempt's own: once the pods, read fresh, show that its
    worker never started, the next attempt waits in line (its status says so) and the stuck Job
    is stopped. What the fresh read taught holds for every decision of the reconcile: without
    that, the decision made for the wait in line asks for fresh pods again, nothing is written,
    and the task spins on the same read for ever."""
    import datetime as dt

    made = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    unschedulable = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                         "reason": "Unschedulable", "message": "no node"}]}

    def pod() -> dict[str, Any]:
        body = _child("Pod", "t1-1-abc", unschedulable)
        body["metadata"]["creationTimestamp"] = made
        return body

    class Kube(FakeKube):
        async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
            if method == "GET" and path.endswith("/pods"):
                self.calls.append((method, path, params))
                return {"items": [pod()]}
            return await super().request(method, path, body, params)

    async def main() -> list[Any]:
        kube = Kube(["ok"])
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = [Watch("ns", True)]
        rec.admission.queue_event("ADDED", {"metadata": {"name": "default"},
                                            "spec": {"maxRunning": 1, "startTimeoutSeconds": 60}})
        body = copy.deepcopy(BODY)
        body["status"] = {"state": "PENDING", "attempts": 1, "jobName": "t1-1"}
        rec.task_event("ADDED", body)
        job = _child("Job", "t1-1", {"active": 1})
        job["metadata"]["creationTimestamp"] = made
        rec.job_event("ADDED", job)
        rec.pod_event("ADDED", pod())
        await rec.reconcile(("ns", "t1"))
        return kube.calls

    calls = asyncio.run(main())
    assert [c[0] for c in calls] == ["GET", "PUT", "DELETE"], calls
    status = calls[1][2]["status"]
    assert status["queue"]["attempt"] == 2 and status["history"][0]["outcome"] == "NotStarted", status
    assert calls[2][1].endswith("/jobs/t1-1")


def test_a_status_the_api_server_keeps_refusing_is_retried_with_a_bounded_backoff_and_logged_once(
        caplog: Any) -> None:
    """A status write refused as invalid (422: a LimeTask whose spec the CRD's rules cannot read,
    say) is not retried every few seconds for ever: the task waits, with a growing but bounded
    delay, and the refusal is logged once and posted as one Warning event."""
    import logging

    from limetask_operator.reconciler import STATUS_REFUSED_MAX_SECONDS, refused_write_delay

    refusal = "LimeTask.limetask.io \"t1\" is invalid: spec: Invalid value: \"object\": Invalid date-time"

    async def main() -> tuple[list[Any], Reconciler]:
        kube = FakeKube([KubeError(422, refusal, "PUT", "/x") for _ in range(5)])
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = [Watch("ns", True)]
        body = copy.deepcopy(BODY)
        body["status"] = {}
        body["spec"]["eta"] = "2024-01-01t00:00:00z"
        rec.task_event("ADDED", body)
        for _ in range(4):  # watch events (a pod, the task itself) keep asking
            await rec.reconcile(("ns", "t1"))
        return kube.calls, rec

    with caplog.at_level(logging.WARNING, logger="limetask"):
        calls, rec = asyncio.run(main())
    assert [c[0] for c in calls].count("PUT") == 1
    assert [c[1] for c in calls if c[0] == "POST"] == ["/api/v1/namespaces/ns/events"]  # one Warning, no Job
    assert [r.getMessage() for r in caplog.records].count(next(
        r.getMessage() for r in caplog.records if "refuses its status" in r.getMessage())) == 1
    delays = [refused_write_delay(n) for n in range(1, 12)]
    assert delays == sorted(delays) and delays[-1] == STATUS_REFUSED_MAX_SECONDS and delays[0] >= 10


def test_a_namespace_that_cannot_be_listed_holds_back_only_its_own_and_is_degraded_not_dead() -> None:
    """The operator watches two namespaces; the Role of one was deleted (403 on every listing).
    A task in the other, in a queue with maxRunning, still gets its slot and its Job; the health
    probe finds nothing dead (no restart loop), and the forbidden namespace is named as degraded,
    in the admission's view (log, metric, queue status) too."""

    class Kube(FakeKube):
        def __init__(self) -> None:
            super().__init__(["ok"] * 5)

        async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
            if method == "GET" and "/namespaces/bad/" in path:
                raise KubeError(403, 'limetasks.limetask.io is forbidden: User "op" cannot list resource', "GET", path)
            if method == "GET":
                queues = [{"metadata": {"name": "q"}, "spec": {"maxRunning": 2}}] if path.endswith("queues") else []
                return {"metadata": {"resourceVersion": "1"}, "items": queues}
            return await super().request(method, path, body, params)

        def watch_session(self) -> Any:
            class Stream:
                status = 200

                async def __aenter__(self) -> Any:
                    return self

                async def __aexit__(self, *exc: Any) -> None:
                    return None

                @property
                def content(self) -> Any:
                    async def lines() -> Any:
                        await asyncio.sleep(3600)
                        yield b""
                    return lines()

            class Session:
                def get(self, *args: Any, **kwargs: Any) -> Any:
                    return Stream()
            return Session()

    async def main() -> tuple[list[Any], list[str], list[str], dict[str, str]]:
        kube = Kube()
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = rec.make_watches(["good", "bad"])
        tasks = [asyncio.create_task(w.run()) for w in rec.watches]
        await asyncio.sleep(0.2)
        body = copy.deepcopy(BODY)
        body["metadata"]["namespace"] = "good"
        body["spec"]["queue"] = "q"
        body["status"] = {}
        rec.task_event("ADDED", body)
        await rec.reconcile(("good", "t1"))
        problems, degraded = rec.health(grace=0.0), rec.degraded()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return kube.calls, problems, degraded, rec.admission.unlisted

    calls, problems, degraded, unlisted = asyncio.run(main())
    assert [c[1] for c in calls if c[0] == "POST"] == ["/apis/batch/v1/namespaces/good/jobs"]
    assert problems == []
    assert degraded and all(d.startswith("namespace bad:") for d in degraded) and "403" in degraded[0]
    assert list(unlisted) == ["bad"]


def test_a_job_deleted_once_is_not_deleted_again_before_its_watch_says_it_is_gone() -> None:
    """The final status is stored and the finished Job deleted; the status write's echo brings the
    task back before the Job watch's DELETED: that reconcile must not DELETE the Job again (an
    answer of 404 for every task, at a million tasks a day a million wasted writes)."""
    import datetime as dt

    rec = reconciler(FakeKube([]))
    rec.task_event("ADDED", copy.deepcopy(BODY))
    rec.job_event("ADDED", _child("Job", "t1-1", JOB_DONE))
    rec.pod_event("ADDED", _child("Pod", "t1-1-abc", POD_DONE))
    key = ("ns", "t1")

    def plan() -> derivation.Plan:
        task = rec.caches.tasks[key]
        return derivation.derive(task, rec.caches.jobs_of(key, task.uid), rec.caches.pods_of(key, task.uid),
                                 dt.datetime.now(dt.timezone.utc), 10)

    first = plan()
    assert first.status is not None and first.status["state"] == "SUCCESS" and first.delete_jobs == ["t1-1"]
    kube = FakeKube(["ok"])
    rec.kube = kube  # type: ignore[assignment]
    asyncio.run(rec.carry_out(rec.caches.tasks[key], first))
    assert [c[0] for c in kube.calls] == ["PUT", "DELETE"]
    # the echo of the status write (the cache holds the stored status), the Job's watch event not yet
    rec.task_event("MODIFIED", {**copy.deepcopy(BODY), "metadata": {**BODY["metadata"], "resourceVersion": "12"},
                                "status": first.status})
    second = plan()
    assert second.delete_jobs == [] and second.stop_jobs == [], second


def test_the_attempt_after_an_oom_killed_one_is_made_with_the_next_size_of_memory() -> None:
    """Through the reconciler: the plan's memory reaches the Job it creates (request and limit),
    and the status it writes counts the OOMKilled attempt on its own budget."""
    oom = {"phase": "Failed", "containerStatuses": [{"name": "task", "state": {"terminated": {
        "exitCode": 137, "reason": "OOMKilled", "startedAt": "2024-01-01T00:00:01Z",
        "finishedAt": "2024-01-01T00:00:09Z"}}}]}

    async def main() -> list[Any]:
        kube = FakeKube(["ok"])
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.watches = [Watch("ns", True)]
        body = copy.deepcopy(BODY)
        body["spec"]["memoryOnOOM"] = ["1Gi", "2Gi"]
        rec.task_event("ADDED", body)
        rec.job_event("ADDED", _child("Job", "t1-1", {"conditions": [{"type": "Failed", "status": "True"}],
                                                       "failed": 1}))
        rec.pod_event("ADDED", _child("Pod", "t1-1-abc", oom))
        await rec.reconcile(("ns", "t1"))
        return kube.calls

    calls = asyncio.run(main())
    [post] = [c for c in calls if c[0] == "POST"]
    assert post[2]["metadata"]["name"] == "t1-2"
    assert post[2]["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    [put] = [c[2]["status"] for c in calls if c[0] == "PUT"]
    assert (put["attempts"], put["oomKilled"], put["workersLost"]) == (2, 1, 0)
    assert put["history"][0]["memory"] == "512Mi" and put["history"][0]["outcome"] == "OOMKilled"
