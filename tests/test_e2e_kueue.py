"""Tasks admitted by a real Kueue (devtools/cluster/kueue.py) on the local cluster.

A LimeTaskQueue with `admission: Kueue` hands its tasks' Jobs to a Kueue LocalQueue: each is made
suspended with Kueue's queue label, and Kueue's own controllers (its webhooks included) admit,
hold back, preempt and evict them. What the tests check is what a user sees in the task's status.

Kueue is installed for this module only when it is not installed already, and uninstalled after
it: other modules expect a cluster without Kueue's API (test_e2e_queues checks that the operator
says so). Kueue's waitForPodsReady timeout is kueue.WAIT_FOR_PODS_READY's (30 s).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kueue as kueue_install
import localcluster
import pytest
from conftest import ACME_IMAGE, RUNNER_RESOURCES, Cluster, Operator, wait_until
from kubernetes import client
from test_e2e_queues import PodWatch

from lime_task import FAILURE, SUCCESS, TaskClient
from lime_task.registry import TaskOptions
from lime_task.resource import GROUP, VERSION

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
KUEUE = "kueue.x-k8s.io"
KV = "v1beta2"
QUEUE_LABEL = f"{KUEUE}/queue-name"
# One runner pod requests 10m of CPU (conftest.RUNNER_RESOURCES): this quota holds one, not two.
ONE_TASK_CPU = "15m"


@pytest.fixture(scope="module")
def kueue(cluster: Cluster, operator: Operator) -> Iterator[None]:
    """Kueue on the local cluster for this module: installed if absent, and then uninstalled."""
    if not cluster.local:
        pytest.skip("installs Kueue's manager as a process of the local cluster")
    already = kueue_install.installed(localcluster.STATE)
    if not already:
        try:
            kueue_install.up(localcluster.STATE)
        except localcluster.ClusterError as exc:
            pytest.fail(f"Kueue did not start: {exc}")
    yield
    if not already:
        kueue_install.down(localcluster.STATE)
        # The operator asks whether Kueue's API is served only until it is: the session's operator
        # starts afresh, so that it sees the cluster without Kueue as the modules after this one do.
        if operator.alive():
            operator.restart()


@pytest.fixture
def pods(api_client: Any, namespace: str) -> Iterator[PodWatch]:
    """The namespace's pods as a watch sees them (how many ran at once, in what order)."""
    watcher = PodWatch(api_client, namespace)
    yield watcher
    watcher.stop()


@dataclass
class KueueQueue:
    name: str  # the LimeTaskQueue's (what tasks name as qos)
    local_queue: str
    cluster_queue: str


@pytest.fixture
def kueue_queue(kueue: None, api_client: Any, namespace: str) -> Iterator[Any]:
    """make(cpu=..., preemption=...): a ResourceFlavor, a ClusterQueue for this test's namespace
    with that much CPU, a LocalQueue, and a LimeTaskQueue that hands its tasks to it. Cluster-
    scoped objects go when the test ends (the namespace, with the LocalQueue, goes anyway)."""
    api = client.CustomObjectsApi(api_client)
    made: list[tuple[str, str, str]] = []  # (group, plural, name) of cluster-scoped objects

    def make(cpu: str = "1", preemption: bool = False) -> KueueQueue:
        suffix = uuid.uuid4().hex[:8]
        flavor, cq, lq = f"flavor-{suffix}", f"cq-{suffix}", f"lq-{suffix}"
        api.create_cluster_custom_object(KUEUE, KV, "resourceflavors", {
            "apiVersion": f"{KUEUE}/{KV}", "kind": "ResourceFlavor", "metadata": {"name": flavor}})
        made.append((KUEUE, "resourceflavors", flavor))
        spec: dict[str, Any] = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{"name": flavor, "resources": [
                {"name": "cpu", "nominalQuota": cpu}, {"name": "memory", "nominalQuota": "4Gi"}]}]}],
        }
        if preemption:
            spec["preemption"] = {"withinClusterQueue": "LowerPriority"}
        api.create_cluster_custom_object(KUEUE, KV, "clusterqueues", {
            "apiVersion": f"{KUEUE}/{KV}", "kind": "ClusterQueue", "metadata": {"name": cq}, "spec": spec})
        made.append((KUEUE, "clusterqueues", cq))
        api.create_namespaced_custom_object(KUEUE, KV, namespace, "localqueues", {
            "apiVersion": f"{KUEUE}/{KV}", "kind": "LocalQueue", "metadata": {"name": lq},
            "spec": {"clusterQueue": cq}})
        name = f"kq-{suffix}"
        api.create_cluster_custom_object(GROUP, VERSION, "limetaskqueues", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": {"name": name},
            "spec": {"admission": "Kueue", "kueueQueueName": lq}})
        made.append((GROUP, "limetaskqueues", name))
        wait_until(lambda: _active(api, cq), timeout=30, message=f"ClusterQueue {cq} to be active")
        return KueueQueue(name, lq, cq)

    def priority_class(value: int) -> str:
        name = f"prio-{uuid.uuid4().hex[:8]}"
        api.create_cluster_custom_object(KUEUE, KV, "workloadpriorityclasses", {
            "apiVersion": f"{KUEUE}/{KV}", "kind": "WorkloadPriorityClass", "metadata": {"name": name},
            "value": value})
        made.append((KUEUE, "workloadpriorityclasses", name))
        return name

    make.priority_class = priority_class  # type: ignore[attr-defined]
    yield make
    for group, plural, name in reversed(made):
        try:
            api.delete_cluster_custom_object(group, KV if group == KUEUE else VERSION, plural, name)
        except client.ApiException:
            pass


def _active(api: client.CustomObjectsApi, cq: str) -> bool:
    found = api.get_cluster_custom_object(KUEUE, KV, "clusterqueues", cq)
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Active" and c["status"] == "True" for c in conditions)


def workload_of(api_client: Any, namespace: str, job_name: str) -> dict[str, Any] | None:
    """The Workload Kueue made for a Job (it owns it)."""
    found = client.CustomObjectsApi(api_client).list_namespaced_custom_object(KUEUE, KV, namespace, "workloads")
    for wl in found["items"]:
        owners = wl["metadata"].get("ownerReferences") or []
        if any(o.get("kind") == "Job" and o.get("name") == job_name for o in owners):
            return wl  # type: ignore[no-any-return]
    return None


def job_of(api_client: Any, namespace: str, task_id: str) -> str | None:
    """The name of the task's current Job, as its status says."""
    found = client.CustomObjectsApi(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, "limetasks",
                                                                              task_id)
    return (found.get("status") or {}).get("jobName")  # type: ignore[no-any-return]


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return c  # type: ignore[no-any-return]
    return {}


def final(tasks: TaskClient, task_id: str, timeout: float = 120) -> Any:
    return wait_until(lambda: (s := tasks.get_status(task_id, "my-app")).is_completed() and s, timeout=timeout,
                      interval=0.5, message=f"task {task_id} to finish")


def started(tasks: TaskClient, task_id: str, timeout: float = 90) -> Any:
    return wait_until(lambda: (s := tasks.get_status(task_id, "my-app")).status == "STARTED" and s, timeout=timeout,
                      interval=0.3, message=f"task {task_id} to start")


def high_priority_job(namespace: str, local_queue: str, priority_class: str, seconds: int = 5) -> dict[str, Any]:
    """A plain Job of someone else's, in the same LocalQueue, with a higher WorkloadPriorityClass;
    it asks for what one task asks for."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"urgent-{uuid.uuid4().hex[:6]}", "namespace": namespace,
                     "labels": {QUEUE_LABEL: local_queue, f"{KUEUE}/priority-class": priority_class}},
        "spec": {"backoffLimit": 0, "suspend": True, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "urgent", "image": ACME_IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", f"import time; time.sleep({seconds})"],
                            "resources": RUNNER_RESOURCES,
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        }}},
    }


@pytest.mark.timeout(3600)  # the first run builds Kueue (make test builds it beforehand)
def test_kueue_admits_a_task_through_its_local_queue(tasks: TaskClient, api_client: Any, namespace: str,
                                                     kueue_queue: Any) -> None:
    """The task's Job carries the LocalQueue's label; Kueue makes a Workload for it, the
    ClusterQueue admits it, and the task runs. (The operator deletes a finished task's Job, and
    the Workload goes with it: both are looked at while the task runs.)"""
    q = kueue_queue()
    sent = tasks.send(f"{T}.sleep", "my-app", [6], qos=q.name)
    started(tasks, sent.id)
    job = client.BatchV1Api(api_client).read_namespaced_job(job_of(api_client, namespace, sent.id), namespace)
    assert job.metadata.labels[QUEUE_LABEL] == q.local_queue and job.spec.suspend is False
    wl = wait_until(lambda: workload_of(api_client, namespace, job.metadata.name), timeout=30,
                    message="the Job's Workload")
    assert wl["status"]["admission"]["clusterQueue"] == q.cluster_queue
    assert condition(wl, "Admitted").get("status") == "True"
    done = final(tasks, sent.id)
    assert done.status == SUCCESS and done.result == "slept 6s", done.error


def test_a_task_beyond_the_quota_waits_visibly_and_runs_after(tasks: TaskClient, api_client: Any, namespace: str,
                                                              kueue_queue: Any, pods: PodWatch) -> None:
    """Quota for one task: the second waits in Kueue's queue, PENDING with reason Kueue, its
    Workload held for quota; it runs once the first has finished, never beside it."""
    q = kueue_queue(cpu=ONE_TASK_CPU)
    first = tasks.send(f"{T}.sleep", "my-app", [8], qos=q.name)
    started(tasks, first.id)
    second = tasks.send(f"{T}.sleep", "my-app", [1], qos=q.name)
    waiting = wait_until(lambda: (s := tasks.get_status(second.id, "my-app")).queued and s, timeout=30,
                         message="the second task to say it waits")
    assert waiting.status == "PENDING" and waiting.queue_reason == "Kueue"
    assert "waiting for Kueue to admit Job" in (waiting.queue_message or "")
    job_name = wait_until(lambda: job_of(api_client, namespace, second.id), timeout=30, message="its Job")
    wl = wait_until(lambda: (w := workload_of(api_client, namespace, job_name))
                    and "insufficient" in condition(w, "QuotaReserved").get("message", "") and w,
                    timeout=30, message="Kueue to hold the second Workload for quota")
    assert condition(wl, "QuotaReserved")["status"] == "False"
    assert client.BatchV1Api(api_client).read_namespaced_job(job_name, namespace).spec.suspend is True
    first_done, second_done = final(tasks, first.id), final(tasks, second.id)
    assert first_done.status == SUCCESS and second_done.status == SUCCESS, (first_done.error, second_done.error)
    assert second_done.attempts == 1
    # Never beside it: one pod at a time, the first's before the second's.
    assert pods.most == 1 and pods.order == [first.id, second.id], (pods.most, pods.order)


def test_an_early_ack_task_preempted_after_it_started_fails_preempted(tasks: TaskClient, api_client: Any,
                                                                      namespace: str, kueue_queue: Any) -> None:
    """Early acknowledgement: a task that had started is never run a second time. Kueue preempts
    its Job for a higher-priority workload: FAILURE, reason Preempted (not WorkerLost)."""
    q = kueue_queue(cpu=ONE_TASK_CPU, preemption=True)
    sent = tasks.send(f"{T}.sleep", "my-app", [120], qos=q.name)
    started(tasks, sent.id)
    urgent = high_priority_job(namespace, q.local_queue, kueue_queue.priority_class(1000))
    client.BatchV1Api(api_client).create_namespaced_job(namespace, urgent)
    done = final(tasks, sent.id)
    assert done.status == FAILURE and done.error.reason == "Preempted", done.error
    assert "early acknowledgement" in done.error.message and done.attempts == 1
    # Kueue says it preempted the task's Workload (which went with the Job the operator deleted).
    wait_until(lambda: any(e.reason == "Preempted" and e.involved_object.kind == "Workload"
                           for e in client.CoreV1Api(api_client).list_namespaced_event(namespace).items),
               timeout=30, message="Kueue's Preempted event on the task's Workload")
    # The preemptor ran in its place.
    wait_until(lambda: client.BatchV1Api(api_client).read_namespaced_job(urgent["metadata"]["name"], namespace)
               .status.succeeded == 1, timeout=90, message="the higher-priority Job to run")


def test_a_late_ack_task_preempted_waits_in_kueue_and_runs_again(tasks: TaskClient, api_client: Any, namespace: str,
                                                                kueue_queue: Any) -> None:
    """Late acknowledgement: the preempted task is not a lost worker. Its Job waits in Kueue's
    queue again (the same attempt), and runs to the end once the preemptor has finished."""
    q = kueue_queue(cpu=ONE_TASK_CPU, preemption=True)
    sent = tasks.send(f"{T}.sleep", "my-app", [10], qos=q.name, options=TaskOptions(acks_late=True, max_attempts=3))
    started(tasks, sent.id)
    first_job = job_of(api_client, namespace, sent.id)
    urgent = high_priority_job(namespace, q.local_queue, kueue_queue.priority_class(1000), seconds=10)
    client.BatchV1Api(api_client).create_namespaced_job(namespace, urgent)
    again = wait_until(lambda: (s := tasks.get_status(sent.id, "my-app")).queued
                       and "admitted again" in (s.queue_message or "") and s,
                       timeout=60, message="the task to wait in Kueue's queue again")
    assert again.status == "PENDING" and again.queue_reason == "Kueue", again
    assert "its worker started" in (again.queue_message or "") and again.attempts == 1
    done = final(tasks, sent.id, timeout=180)
    assert done.status == SUCCESS, done.error
    assert done.attempts == 1 and job_of(api_client, namespace, sent.id) == first_job  # the same Job, resumed
    urgent_job = client.BatchV1Api(api_client).read_namespaced_job(urgent["metadata"]["name"], namespace)
    assert urgent_job.status.succeeded == 1


def test_a_pod_that_never_gets_ready_is_evicted_by_kueue_and_requeued(tasks: TaskClient, api_client: Any,
                                                                      namespace: str, kueue_queue: Any) -> None:
    """waitForPodsReady: a pod that cannot be scheduled (a node selector no node has; the session
    operator allows task placement) is not ready within Kueue's timeout. Kueue evicts the Job and
    requeues it; the task says it waits for Kueue again, its worker never having started, and is no
    lost worker. Cancelled, it ends Cancelled."""
    q = kueue_queue()
    task = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "metadata": {"name": "never-ready"},
            "spec": {"task": f"{T}.add", "app": "my-app", "args": [1, 1], "queue": q.name,
                     "nodeSelector": {"limetask.io/no-such-node": "true"}}}
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, "limetasks", task)
    job_name = wait_until(lambda: job_of(api_client, namespace, "never-ready"), timeout=30, message="its Job")
    core = client.CoreV1Api(api_client)
    # Admitted: Kueue resumed the Job, whose pod waits for a node, and the task waits no more in a queue.
    wait_until(lambda: core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items, timeout=60,
               message="Kueue to admit the Job (its pod)")
    admitted = wait_until(lambda: (s := tasks.get_status("never-ready", "my-app")).queue_reason is None and s,
                          timeout=30, message="the task to leave Kueue's queue")
    assert admitted.status == "PENDING"
    timeout = int(str(kueue_install.WAIT_FOR_PODS_READY["timeout"]).rstrip("s"))
    wl = wait_until(lambda: (w := workload_of(api_client, namespace, job_name))
                    and condition(w, "Evicted").get("reason") == "PodsReadyTimeout" and w,
                    timeout=timeout + 60, message="Kueue to evict the Workload for its pods not ready in time")
    assert (wl["status"].get("requeueState") or {}).get("count", 0) >= 1, wl["status"]
    # Evicted and requeued: the task waits for Kueue again, the same attempt, no lost worker.
    waiting = wait_until(lambda: (s := tasks.get_status("never-ready", "my-app")).queue_reason == "Kueue" and s,
                         timeout=60, message="the task to wait in Kueue's queue again")
    assert waiting.status == "PENDING" and waiting.attempts == 1 and waiting.error is None, waiting
    tasks.cancel("never-ready", "my-app")
    done = final(tasks, "never-ready", timeout=60)
    assert done.status == FAILURE and done.error.reason == "Cancelled", done.error
