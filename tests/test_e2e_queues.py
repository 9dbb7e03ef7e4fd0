"""Queues end to end on the local cluster: limits, order, fair share, cancel and expiry of
waiting tasks, an operator SIGKILL, and the Kueue hand-off.

How many tasks run at once is counted by a watch of the namespace's pods (a pod holds its
slot from its creation until it ends or is deleted), never by the operator's own word.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Cluster, Operator, wait_until
from kubernetes import client, watch

from lime_task import FAILURE, SUCCESS, TaskClient
from lime_task.resource import GROUP, LABEL_APP, LABEL_TASK_ID, QUEUE_PLURAL, VERSION

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"


class PodWatch:
    """The pods of a namespace as a watch sees them: how many ran at once (the most), and the
    tasks (and applications) in the order their pods were made. A pod runs from its creation
    until its container terminates."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.alive: dict[str, str] = {}
        self.seen: set[str] = set()
        self.order: list[str] = []  # task ids
        self.apps: list[str] = []
        self.most = 0
        self.lock = threading.Lock()
        self.w = watch.Watch()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        version = self.core.list_namespaced_pod(self.namespace).metadata.resource_version
        self.ready.set()
        while True:
            try:
                for event in self.w.stream(self.core.list_namespaced_pod, self.namespace,
                                           resource_version=version, timeout_seconds=30):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    self._see(event["type"], pod)
            except Exception:  # noqa: BLE001 - an expired watch: list again
                if self.w._stop:  # noqa: SLF001
                    return
                time.sleep(0.2)
                version = self.core.list_namespaced_pod(self.namespace).metadata.resource_version
            if self.w._stop:  # noqa: SLF001
                return

    def _see(self, kind: str, pod: Any) -> None:
        name, labels = pod.metadata.name, pod.metadata.labels or {}
        # Ended: the task's container has terminated (the kubelet may report that before the
        # pod's phase turns terminal), the pod failed or succeeded, or it is being deleted.
        terminated = any(c.state and c.state.terminated for c in pod.status.container_statuses or [])
        ended = (terminated or pod.status.phase in ("Succeeded", "Failed")
                 or pod.metadata.deletion_timestamp is not None or kind == "DELETED")
        with self.lock:
            if name not in self.seen:
                self.seen.add(name)
                self.order.append(labels.get(LABEL_TASK_ID, ""))
                self.apps.append(labels.get(LABEL_APP, ""))
            if ended:
                self.alive.pop(name, None)
            else:
                self.alive[name] = labels.get(LABEL_TASK_ID, "")
            self.most = max(self.most, len(self.alive))

    def stop(self) -> None:
        self.w.stop()


@pytest.fixture
def pods(api_client: Any, namespace: str) -> Iterator[PodWatch]:
    watcher = PodWatch(api_client, namespace)
    yield watcher
    watcher.stop()


@pytest.fixture
def queues(api_client: Any, namespace: str) -> Iterator[Any]:
    """Make LimeTaskQueues (cluster-scoped, named for the test); they go when the test ends."""
    api = client.CustomObjectsApi(api_client)
    made: list[str] = []

    def make(**spec: Any) -> str:
        name = f"q{len(made)}-{uuid.uuid4().hex[:8]}"
        api.create_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": {"name": name}, "spec": spec})
        made.append(name)
        return name

    def patch(name: str, **spec: Any) -> None:
        api.patch_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, name, {"spec": spec})

    make.patch = patch  # type: ignore[attr-defined]
    make.get = lambda name: api.get_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, name)  # type: ignore[attr-defined]
    yield make
    for name in made:
        try:
            api.delete_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, name)
        except client.ApiException:
            pass


def all_final(tasks: TaskClient, ids: list[str], app: str = "my-app", timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = {i: tasks.get_status(i, app) for i in ids}
        return found if all(s.is_completed() for s in found.values()) else None
    return wait_until(done, timeout=timeout, interval=0.5, message=f"{len(ids)} tasks to finish")


def queued(tasks: TaskClient, task_id: str, app: str = "my-app") -> Any:
    status = tasks.get_status(task_id, app)
    return status if status.queued else None


def test_the_limit_holds_through_an_operator_sigkill(local: Cluster, tasks: TaskClient, running_operator: Operator,
                                                     pods: PodWatch, queues: Any) -> None:
    q = queues(maxRunning=2)
    sent = [tasks.send(f"{T}.sleep", "my-app", [3], qos=q) for _ in range(8)]
    wait_until(lambda: len(pods.order) >= 2, timeout=60, message="two tasks to start")
    # The others wait, PENDING, with a Queued condition and a position; no pod.
    waiting = wait_until(lambda: [s for s in (queued(tasks, x.id) for x in sent) if s], timeout=30,
                         message="tasks to wait in the queue")
    assert all(s.status == "PENDING" and s.queue == q and (s.queue_position or 0) >= 1 for s in waiting)
    assert all(s.attempts == 0 for s in waiting), "a task that waits for its first slot has made no attempt"
    running_operator.kill(9)
    time.sleep(1)
    running_operator.start()
    found = all_final(tasks, [s.id for s in sent])
    assert all(s.status == SUCCESS for s in found.values()), found
    assert pods.most <= 2, f"{pods.most} tasks ran at once in a queue of 2"
    assert sorted(pods.order) == sorted(s.id for s in sent)  # one pod each: nothing ran twice
    # The queue's status follows (written at most every few seconds).
    wait_until(lambda: (queues.get(q).get("status") or {}).get("waiting") == 0
               and queues.get(q)["status"].get("running") == 0, timeout=30, message="the queue's status to say idle")


def test_priority_then_first_in_first_out(tasks: TaskClient, pods: PodWatch, queues: Any) -> None:
    q = queues(maxRunning=0)  # paused while the line forms
    low = [tasks.send(f"{T}.sleep", "my-app", [0.5], qos=q) for _ in range(3)]
    high = [tasks.send(f"{T}.sleep", "my-app", [0.5], qos=q, priority=10) for _ in range(2)]
    # Positions follow the order: the two of priority 10 first, then the others as they came.
    expected = [s.id for s in high + low]

    def positions() -> list[str] | None:
        found = {s.id: queued(tasks, s.id) for s in high + low}
        if not all(found.values()) or any(s.queue_reason != "QueuePaused" for s in found.values()):
            return None
        ranked = sorted(found, key=lambda i: found[i].queue_position or 0)
        return ranked if [found[i].queue_position for i in ranked] == [1, 2, 3, 4, 5] else None

    # Each starts at the end of the line; the positions are then computed again and rewritten.
    wait_until(lambda: positions() == expected, timeout=60, message="positions in the order of priority")
    assert pods.order == []  # a waiting task costs no pod
    queues.patch(q, maxRunning=1)
    all_final(tasks, expected)
    assert pods.order == expected
    assert pods.most == 1


def test_fair_share_between_applications(tasks: TaskClient, pods: PodWatch, queues: Any) -> None:
    q = queues(maxRunning=0)
    flood = [tasks.send(f"{T}.sleep", "flood", [1], qos=q) for _ in range(6)]
    others = [tasks.send(f"{T}.sleep", app, [1], qos=q) for app in ("app-b", "app-c") for _ in range(2)]
    wait_until(lambda: all(queued(tasks, s.id, s.app) for s in flood + others), timeout=30,
               message="all to wait")
    queues.patch(q, maxRunning=2)
    for s in flood + others:
        wait_until(lambda s=s: tasks.get_status(s.id, s.app).is_completed(), timeout=120,
                   message=f"{s.id} to finish")
    # Sent last, the two small applications still get their turns: two of each of the first six.
    assert Counter(pods.apps[:6]) == {"flood": 2, "app-b": 2, "app-c": 2}, pods.apps
    assert pods.most <= 2


def test_a_queues_pace_spaces_its_starts(tasks: TaskClient, api_client: Any, namespace: str, queues: Any) -> None:
    """maxStartsPerSecond 1: four tasks sent at once have their Jobs made at least a second
    apart, by the API server's creationTimestamps (whole seconds: a second apart or more is a
    difference of one or more), and those held back meanwhile say QueueRateLimited. Finished
    tasks' Jobs are deleted, so the Jobs are read as they come."""
    q = queues(maxStartsPerSecond=1)
    sent = [tasks.send(f"{T}.add", "my-app", [i, 1], qos=q) for i in range(4)]
    ids = {s.id for s in sent}
    batch = client.BatchV1Api(api_client)
    made: dict[str, Any] = {}
    reasons: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for job in batch.list_namespaced_job(namespace).items:
            if (job.metadata.labels or {}).get(LABEL_TASK_ID) in ids:
                made.setdefault(job.metadata.name, job.metadata.creation_timestamp)
        found = [tasks.get_status(i, "my-app") for i in ids]
        reasons |= {f.queue_reason for f in found if f.queue_reason}
        if all(f.is_completed() for f in found):
            break
        time.sleep(0.2)
    assert all(f.status == SUCCESS for f in found), found
    assert len(made) == 4, made
    times = sorted(made.values())
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 1, gaps
    assert (times[-1] - times[0]).total_seconds() <= 3 + 3, times  # paced, not held back longer
    assert "QueueRateLimited" in reasons, reasons


def test_cancel_and_expiry_of_waiting_tasks(tasks: TaskClient, api_client: Any, namespace: str, pods: PodWatch,
                                            queues: Any) -> None:
    q = queues(maxRunning=0)
    doomed = tasks.send(f"{T}.add", "my-app", [1, 2], qos=q)
    brief = tasks.send(f"{T}.add", "my-app", [3, 4], qos=q, expires=5)
    kept = tasks.send(f"{T}.add", "my-app", [5, 6], qos=q)
    wait_until(lambda: all(queued(tasks, s.id) for s in (doomed, brief, kept)), timeout=30, message="all to wait")
    cancelled = tasks.cancel(doomed.id, "my-app")
    cancelled = wait_until(lambda: (s := tasks.get_status(doomed.id, "my-app")).is_completed() and s, timeout=30,
                           message="the cancel")
    assert cancelled.status == FAILURE and cancelled.error.reason == "Cancelled"
    expired = wait_until(lambda: (s := tasks.get_status(brief.id, "my-app")).is_completed() and s, timeout=30,
                         message="the expiry")
    assert expired.status == FAILURE and expired.error.reason == "Expired"
    assert "while it waited in its queue" in expired.error.message
    assert not client.BatchV1Api(api_client).list_namespaced_job(namespace).items  # no Job, no pod
    queues.patch(q, maxRunning=5)
    assert all_final(tasks, [kept.id])[kept.id].result == 11
    assert pods.order == [kept.id]


def test_a_late_ack_task_that_keeps_failing_holds_no_slot_past_its_attempts(
        tasks: TaskClient, pods: PodWatch, queues: Any) -> None:
    q = queues(maxRunning=1)
    doomed = tasks.send(f"{T}.flaky", "my-app", [None, 10], qos=q)  # its worker dies in every attempt
    behind = [tasks.send(f"{T}.add", "my-app", [i, 1], qos=q) for i in range(3)]
    found = all_final(tasks, [doomed.id, *(s.id for s in behind)])
    final = found[doomed.id]
    assert final.status == FAILURE and final.error.reason == "RetriesExhausted" and final.attempts == 3
    assert [found[s.id].result for s in behind] == [1, 2, 3]
    assert pods.most == 1
    # Nothing is left holding the slot: a task sent now starts at once.
    after = tasks.send(f"{T}.add", "my-app", [41, 1], qos=q)
    assert all_final(tasks, [after.id], timeout=60)[after.id].result == 42


def test_a_kueue_queue_makes_suspended_jobs_that_run_once_resumed(tasks: TaskClient, api_client: Any,
                                                                   namespace: str, queues: Any) -> None:
    """The hand-off to Kueue: the Job is made suspended with Kueue's queue label, and the task
    waits (Queued, reason Kueue) until the Job is resumed, which here the test does in Kueue's
    place (no Kueue controller runs on the local cluster)."""
    q = queues(admission="Kueue", kueueQueueName="team-a")
    sent = tasks.send(f"{T}.add", "my-app", [20, 22], qos=q)
    batch = client.BatchV1Api(api_client)
    job = wait_until(lambda: next(iter(batch.list_namespaced_job(namespace).items), None), timeout=30,
                     message="the suspended Job")
    assert job.spec.suspend is True and job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a"
    waiting = wait_until(lambda: queued(tasks, sent.id), timeout=30, message="the task to say it waits for Kueue")
    assert waiting.queue_reason == "Kueue" and waiting.status == "PENDING"
    # This cluster does not serve Kueue's API: the task's condition says nothing will admit it.
    wait_until(lambda: "does not serve Kueue's API" in (tasks.get_status(sent.id, "my-app").queue_message or ""),
               timeout=30, message="the task's condition to say that Kueue is not installed")
    # It waits (in Kueue's line), and the queue's status counts it so.
    wait_until(lambda: (queues.get(q).get("status") or {}).get("waiting") == 1
               and queues.get(q)["status"].get("running") == 0, timeout=30, message="the queue to count it waiting")
    time.sleep(2)
    assert not client.CoreV1Api(api_client).list_namespaced_pod(namespace).items  # suspended: no pod
    batch.patch_namespaced_job(job.metadata.name, namespace, {"spec": {"suspend": False}})
    done = all_final(tasks, [sent.id], timeout=60)[sent.id]
    assert done.status == SUCCESS and done.result == 42


def test_the_limit_holds_when_the_second_replica_takes_over(cluster: Cluster, operator: Operator, tasks: TaskClient,
                                                           pods: PodWatch, queues: Any, tmp_path: Any) -> None:
    """Two replicas, the leader SIGKILLed while the queue is full: the next one counts what
    runs from the cluster and never runs more than the limit."""
    from conftest import start_replicas

    q = queues(maxRunning=2)
    operator.stop()
    replicas: list[Operator] = []
    try:
        start_replicas(operator, tmp_path, replicas=replicas)
        first, second = replicas
        sent = [tasks.send(f"{T}.sleep", "my-app", [4], qos=q) for _ in range(6)]
        wait_until(lambda: len(pods.alive) == 2, timeout=60, message="two tasks to run")
        first.kill(9)
        wait_until(lambda: "replica-b leads" in second.log_path.read_text(), timeout=60, message="replica-b to lead")
        found = all_final(tasks, [s.id for s in sent])
        assert all(s.status == SUCCESS for s in found.values()), found
        assert pods.most <= 2, f"{pods.most} tasks ran at once in a queue of 2"
        assert sorted(pods.order) == sorted(s.id for s in sent)
    finally:
        for replica in replicas:
            replica.stop()
        operator.start()


def test_a_stuck_worker_gives_its_slot_back_after_the_start_timeout(api_client: Any, namespace: str,
                                                                    tasks: TaskClient, pods: PodWatch,
                                                                    queues: Any) -> None:
    """A pod that can never be scheduled (a node selector no node has; the session operator
    allows task placement) holds the only slot for startTimeoutSeconds at most: the task behind
    it runs, and the stuck one waits in line again, then fails WorkerLost, never having run."""
    q = queues(maxRunning=1, startTimeoutSeconds=5)
    stuck = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "metadata": {"name": "stuck"},
             "spec": {"task": f"{T}.add", "app": "my-app", "args": [1, 1], "queue": q,
                      "nodeSelector": {"limetask.io/no-such-node": "true"}}}
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, "limetasks", stuck)
    wait_until(lambda: len(pods.order) == 1, timeout=30, message="the stuck task's pod")
    behind = tasks.send(f"{T}.add", "my-app", [2, 3], qos=q)
    assert all_final(tasks, [behind.id], timeout=60)[behind.id].result == 5
    final = all_final(tasks, ["stuck"], timeout=120)["stuck"]
    assert final.status == FAILURE and final.error.reason == "WorkerLost" and final.attempts == 4, \
        (final.error, final.history)
    assert all(h["outcome"] == "NotStarted" for h in final.history)
    assert "startTimeoutSeconds" in final.history[0]["message"]
    assert pods.most == 1


def test_a_namespace_whose_rolebinding_is_deleted_holds_back_only_its_own_tasks(
        cluster: Cluster, api_client: Any, running_operator: Operator, namespace: str, queues: Any,
        tmp_path: Any) -> None:
    """The chart installed for two namespaces; one's RoleBinding is deleted (a tenant removed
    before the operator's settings were), and the operator restarts. A task of the other
    namespace in a queue with maxRunning still runs; /healthz passes, saying which namespace is
    degraded (no restart loop); the queue's status names it."""
    import json
    import urllib.request

    import helm_python as helm
    from conftest import ACME_IMAGE, CHART, OPERATOR_IMAGE, RUNNER_RESOURCES, _free_port, release_operator

    core = client.CoreV1Api(api_client)
    suffix = uuid.uuid4().hex[:6]
    release, home, gone = f"nsr-{suffix}", f"limetask-nsr-{suffix}", f"t-gone-{suffix}"
    for ns in (home, gone):
        core.create_namespace({"metadata": {"name": ns, "labels": {"limetask.io/test": "true"}}})
    health = _free_port()
    values = {
        "crds": {"install": False},
        "watch": {"scope": "namespaces", "namespaces": [namespace, gone]},
        "runner": {"image": dict(zip(("repository", "tag"), ACME_IMAGE.rsplit(":", 1), strict=True)),
                   "resources": RUNNER_RESOURCES},
        "operator": {"metricsPort": 0, "healthPort": health,
                     "image": dict(zip(("repository", "tag"), OPERATOR_IMAGE.rsplit(":", 1), strict=True)),
                     "nodeSelector": {"limetask.io/no-such-node": "true"}},
    }
    running_operator.stop()  # the session's operator watches every namespace: it pauses
    op: Operator | None = None
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=home) as config:
        try:
            config.install(CHART, release, values, namespace=home, timeout=120)
            rbac = client.RbacAuthorizationV1Api(api_client)
            bindings = rbac.list_namespaced_role_binding(gone, label_selector=f"app.kubernetes.io/instance={release}")
            assert bindings.items, "the chart binds a Role in each watched namespace"
            for binding in bindings.items:
                rbac.delete_namespaced_role_binding(binding.metadata.name, gone)
            op = release_operator(cluster, api_client, home, f"{release}-limetask", tmp_path)
            op.start()
            q = queues(maxRunning=1)
            tasks = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
            sent = tasks.send(f"{T}.add", "my-app", [40, 2], qos=q)
            assert all_final(tasks, [sent.id], timeout=120)[sent.id].result == 42

            def degraded() -> str | None:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as resp:
                    assert resp.status == 200  # alive: no restart
                    text = json.dumps(json.loads(resp.read()))
                return text if "degraded" in text else None
            answer = wait_until(degraded, timeout=30, message="/healthz to say degraded")
            assert gone in answer and namespace not in answer
            wait_until(lambda: (queues.get(q).get("status") or {}).get("unlistedNamespaces") == [gone], timeout=30,
                       message="the queue's status to name the namespace that cannot be listed")
            assert f"namespace {gone} cannot be listed" in op.log_path.read_text()
        finally:
            if op is not None:
                op.stop()
            config.uninstall(release, ignore_not_found=True, timeout=60)
            cluster.run_kubectl("delete", "clusterroles,clusterrolebindings", "-l",
                                f"app.kubernetes.io/instance={release}", "--ignore-not-found", check=False)
            for ns in (home, gone):
                cluster.run_kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
            running_operator.start()
