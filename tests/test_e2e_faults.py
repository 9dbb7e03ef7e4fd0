"""Acknowledgement, timeouts, cancellation and faults, end to end on the local cluster.

Faults come through real means on the real node: the container's process is killed from
the host, a task exceeds its memory limit, a pod is evicted through the Eviction API.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import localcluster
import pytest
from conftest import Cluster, Operator, wait_until
from kubernetes import client, watch

from lime_task import FAILURE, STARTED, SUCCESS, TaskAlreadyFinishedError, TaskClient

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"


class JobRecorder:
    """Every Job ever created in a namespace, by name, with the uids it had (a watch)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.uids: dict[str, set[str]] = defaultdict(set)
        self.api = client.BatchV1Api(api_client)
        self.namespace = namespace
        self.w = watch.Watch()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def run(self) -> None:
        version = self.api.list_namespaced_job(self.namespace).metadata.resource_version
        self.ready.set()
        while True:
            try:
                for event in self.w.stream(self.api.list_namespaced_job, self.namespace,
                                           resource_version=version, timeout_seconds=30):
                    job = event["object"]
                    version = job.metadata.resource_version
                    self.uids[job.metadata.name].add(job.metadata.uid)
            except Exception:  # noqa: BLE001 - the API server restarts in one test
                if self.w._stop:  # noqa: SLF001
                    return
                time.sleep(0.5)
                try:
                    version = self.api.list_namespaced_job(self.namespace).metadata.resource_version
                except Exception:  # noqa: BLE001
                    pass
            if self.w._stop:  # noqa: SLF001
                return

    def jobs_of(self, task_id: str) -> dict[str, set[str]]:
        return {name: uids for name, uids in self.uids.items() if name.startswith(task_id + "-")}

    def stop(self) -> None:
        self.w.stop()


@pytest.fixture
def recorder(api_client: Any, namespace: str) -> Any:
    rec = JobRecorder(api_client, namespace)
    yield rec
    rec.stop()


def running_pod(api_client: Any, namespace: str, task_id: str, attempt: int) -> Any:
    core = client.CoreV1Api(api_client)

    def find() -> Any:
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"limetask.io/task-id={task_id},limetask.io/attempt={attempt}").items
        for p in pods:
            for s in p.status.container_statuses or []:
                if s.state.running:
                    return p
        return None
    return wait_until(find, timeout=30, message=f"attempt {attempt} of {task_id} to run")


def container_pid(pod: Any) -> int:
    """The host PID of the pod's task container (the runner), through the node's containerd."""
    statuses = pod.status.container_statuses or []
    assert statuses and statuses[0].container_id, pod.status
    return localcluster.container_pid(statuses[0].container_id)


def fault(api_client: Any, namespace: str, pod: Any, kind: str) -> None:
    """A fault through real means: a signal to the container's process from the host, or an
    eviction through the Eviction API."""
    if kind.startswith("signal:"):
        sig, pid = getattr(signal, kind.split(":", 1)[1]), container_pid(pod)
        if sig == signal.SIGTERM:  # once the runner has its handler, its first act
            wait_until(lambda: catches(pid, sig), timeout=10, message="the runner to catch SIGTERM")
        os.kill(pid, sig)
    elif kind == "evict":
        client.CoreV1Api(api_client).create_namespaced_pod_eviction(
            pod.metadata.name, namespace,
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod.metadata.name}})
    else:
        raise AssertionError(f"unknown fault {kind}")


def catches(pid: int, sig: int) -> bool:
    """The process has a handler for `sig` (the SigCgt mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def running_task_pid(api_client: Any, namespace: str, task_id: str, attempt: int = 1) -> int:
    return container_pid(running_pod(api_client, namespace, task_id, attempt))


@pytest.mark.parametrize("kind, words", [
    ("signal:SIGKILL", "SIGKILL"),
    # The runner is process 1 of its container, which ignores a signal it has no handler for:
    # without the runner's own handler, SIGTERM (a deleted pod) would leave the task running.
    ("signal:SIGTERM", "SIGTERM"),
    ("evict", "evicted"),
])
def test_early_ack_worker_lost(local: Cluster, tasks: TaskClient, api_client: Any, namespace: str,
                               recorder: JobRecorder, kind: str, words: str) -> None:
    status = tasks.send(f"{T}.sleep", "my-app", [60])
    pod = running_pod(api_client, namespace, status.id, 1)
    fault(api_client, namespace, pod, kind)
    final = tasks.wait(status.id, "my-app", timeout=90)
    assert final.status == FAILURE
    assert final.error and final.error.reason == "WorkerLost", final.error
    assert words in final.error.message
    assert final.attempts == 1
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1"]
    assert all(len(uids) == 1 for uids in recorder.jobs_of(status.id).values())


def test_a_task_over_its_memory_limit_is_oom_killed(local: Cluster, tasks: TaskClient,
                                                      recorder: JobRecorder) -> None:
    status = tasks.send(f"{T}.hog", "my-app", [256, 30],
                        resources={"requests": {"memory": "32Mi"}, "limits": {"memory": "64Mi"}})
    final = tasks.wait(status.id, "my-app", timeout=90)
    assert final.status == FAILURE
    assert final.error and final.error.reason == "WorkerLost", final.error
    assert "OOMKilled" in final.error.message
    assert final.attempts == 1
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1"]


def test_an_oom_killed_task_with_memory_on_oom_runs_again_with_more_memory(local: Cluster, tasks: TaskClient,
                                                                          api_client: Any, namespace: str,
                                                                          recorder: JobRecorder) -> None:
    # 150 MiB of resident memory: the first attempt's 64Mi limit is OOMKilled, the second's 256Mi
    # is enough; early acknowledgement, which never re-runs a lost worker.
    status = tasks.send(f"{T}.hog", "my-app", [150, 1],
                        resources={"requests": {"memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                        memory_on_oom=["256Mi", "512Mi"])
    final = tasks.wait(status.id, "my-app", timeout=120)
    assert final.status == SUCCESS, final
    assert final.result == "held 150 MiB"
    assert final.attempts == 2
    assert [(h["attempt"], h["outcome"], h["memory"]) for h in final.history] == [
        (1, "OOMKilled", "64Mi"), (2, "SUCCESS", "256Mi")]
    assert "OOMKilled" in final.history[0]["message"]
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1", f"{status.id}-2"]
    body = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetasks", status.id)
    assert (body["status"]["oomKilled"], body["status"]["workersLost"]) == (1, 0)


def test_late_ack_reruns_lost_worker(local: Cluster, tasks: TaskClient, recorder: JobRecorder) -> None:
    # The task kills its own worker on the first attempt, then succeeds.
    status = tasks.send(f"{T}.flaky", "my-app", [None, 1])
    final = tasks.wait(status.id, "my-app", timeout=90)
    assert final.status == SUCCESS, final
    assert final.result == "succeeded after 1 crash(es)"
    assert final.attempts == 2
    assert [h["outcome"] for h in final.history] == ["WorkerLost", "SUCCESS"]
    assert "SIGKILL" in final.history[0]["message"]
    assert sorted(recorder.jobs_of(status.id)) == [f"{status.id}-1", f"{status.id}-2"]


def test_late_ack_retries_are_bounded(local: Cluster, tasks: TaskClient, api_client: Any, namespace: str,
                                      recorder: JobRecorder) -> None:
    from lime_task import TaskOptions

    status = tasks.send(f"{T}.sleep", "my-app", [60], options=TaskOptions(acks_late=True, max_attempts=3),
                        check=False)
    for attempt in (1, 2, 3):
        fault(api_client, namespace, running_pod(api_client, namespace, status.id, attempt), "signal:SIGKILL")
    final = tasks.wait(status.id, "my-app", timeout=90)
    assert final.status == FAILURE
    assert final.error and final.error.reason == "RetriesExhausted"
    assert "all 3 attempts" in final.error.message
    assert final.attempts == 3
    assert [h["outcome"] for h in final.history] == ["WorkerLost"] * 3
    time.sleep(2)  # no fourth attempt comes later
    assert sorted(recorder.jobs_of(status.id)) == [f"{status.id}-{n}" for n in (1, 2, 3)]
    assert tasks.get_status(status.id, "my-app").attempts == 3


def test_task_that_raises_is_never_rerun(local: Cluster, tasks: TaskClient, recorder: JobRecorder) -> None:
    from lime_task import TaskOptions

    status = tasks.send(f"{T}.fail", "my-app", ["boom"], options=TaskOptions(acks_late=True, max_attempts=5),
                        check=False)
    final = tasks.wait(status.id, "my-app", timeout=60)
    assert final.status == FAILURE and final.error and final.error.reason == "TaskRaised"
    assert final.attempts == 1
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1"]


@pytest.mark.parametrize("kwargs", [[0], [None], {"interrupt": True}], ids=["exit-0", "exit-none", "interrupt"])
def test_sys_exit_in_a_late_ack_task_is_its_own_failure(local: Cluster, tasks: TaskClient, recorder: JobRecorder,
                                                         kwargs: Any) -> None:
    args, kw = (kwargs, {}) if isinstance(kwargs, list) else ([], kwargs)
    status = tasks.send(f"{T}.exits", "my-app", args, kw)
    final = tasks.wait(status.id, "my-app", timeout=60)
    assert final.status == FAILURE and final.error is not None and final.error.reason == "TaskRaised", final
    assert final.attempts == 1
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1"]


def test_timeout(local: Cluster, tasks: TaskClient, recorder: JobRecorder) -> None:
    status = tasks.send(f"{T}.slow", "my-app", [60])  # @task(timeout=2)
    final = tasks.wait(status.id, "my-app", timeout=60)
    assert final.status == FAILURE
    assert final.error and final.error.reason == "TimedOut"
    assert "2 seconds" in final.error.message
    assert final.attempts == 1
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1"]


def test_timeout_is_not_rerun_with_late_ack(local: Cluster, tasks: TaskClient, api_client: Any, namespace: str,
                                            recorder: JobRecorder) -> None:
    from lime_task import TaskOptions

    status = tasks.send(f"{T}.sleep", "my-app", [60],
                        options=TaskOptions(acks_late=True, max_attempts=3, timeout=8), check=False)
    pid = running_task_pid(api_client, namespace, status.id)
    final = tasks.wait(status.id, "my-app", timeout=60)
    assert final.status == FAILURE and final.error and final.error.reason == "TimedOut"
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1"]
    wait_until(lambda: gone(pid), timeout=30, message="the timed-out process to be gone")


def test_cancel_running_task(local: Cluster, tasks: TaskClient, api_client: Any, namespace: str) -> None:
    status = tasks.send(f"{T}.sleep", "my-app", [120])
    pid = running_task_pid(api_client, namespace, status.id)
    wait_until(lambda: tasks.get_status(status.id, "my-app").status == STARTED, timeout=30,
               message="the task to be STARTED")
    assert not gone(pid)
    tasks.cancel(status.id, "my-app")
    final = tasks.wait(status.id, "my-app", timeout=30)
    assert final.status == FAILURE
    assert final.error and final.error.reason == "Cancelled"
    wait_until(lambda: gone(pid), timeout=30, message="the cancelled process to be gone")
    core = client.CoreV1Api(api_client)
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, timeout=30, message="pods to go")
    with pytest.raises(TaskAlreadyFinishedError):
        tasks.cancel(status.id, "my-app")


def test_cancel_pending_with_kubectl(local: Cluster, tasks: TaskClient, namespace: str,
                                     running_operator: Operator) -> None:
    running_operator.stop()  # nothing starts while the operator is away: the task stays PENDING
    try:
        status = tasks.send(f"{T}.add", "my-app", [1, 2])
        local.run_kubectl("annotate", "lt", status.id, "limetask.io/cancel=true", namespace=namespace)
    finally:
        running_operator.start()
    final = tasks.wait(status.id, "my-app", timeout=30)
    assert final.status == FAILURE and final.error and final.error.reason == "Cancelled"
    assert final.attempts == 0


def test_finished_task_cannot_be_cancelled(tasks: TaskClient) -> None:
    status = tasks.send(f"{T}.add", "my-app", [1, 2])
    assert tasks.wait(status.id, "my-app", timeout=60).status == SUCCESS
    with pytest.raises(TaskAlreadyFinishedError, match="already finished"):
        tasks.cancel(status.id, "my-app")
    assert tasks.get_status(status.id, "my-app").status == SUCCESS


def test_delete_limetask_deletes_jobs_and_pods_even_without_operator(
        local: Cluster, tasks: TaskClient, api_client: Any, namespace: str,
        running_operator: Operator) -> None:
    status = tasks.send(f"{T}.sleep", "my-app", [120])
    pid = running_task_pid(api_client, namespace, status.id)
    running_operator.stop()
    try:
        result = local.run_kubectl("delete", "lt", status.id, "--wait=true", "--timeout=30s",
                                   namespace=namespace, check=False)
        assert result.returncode == 0, result.stderr  # no finalizer to hang on
        batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
        wait_until(lambda: not batch.list_namespaced_job(namespace).items, timeout=30, message="Jobs to go")
        wait_until(lambda: not core.list_namespaced_pod(namespace).items, timeout=30, message="pods to go")
        wait_until(lambda: gone(pid), timeout=30, message="the process to be gone")
    finally:
        running_operator.start()


def test_operator_killed_at_random_moments(local: Cluster, tasks: TaskClient, running_operator: Operator,
                                           recorder: JobRecorder) -> None:
    rng = random.Random(int(os.environ.get("LIMETASK_CHAOS_SEED", "1234")))
    expected: dict[str, Any] = {}
    for i in range(100):
        kind = i % 4
        if kind == 0:
            s = tasks.send(f"{T}.add", "my-app", [i, 1])
            expected[s.id] = (SUCCESS, i + 1)
        elif kind == 1:
            s = tasks.send(f"{T}.fail", "my-app", [f"no {i}"])
            expected[s.id] = (FAILURE, f"no {i}")
        elif kind == 2:
            s = tasks.send(f"{T}.sleep", "my-app", [rng.choice([0.1, 0.5, 1.5])])
            expected[s.id] = (SUCCESS, None)
        else:
            s = tasks.send(f"{T}.flaky", "my-app", [None, 1])
            expected[s.id] = (SUCCESS, "succeeded after 1 crash(es)")
        if rng.random() < 0.06:
            running_operator.kill(9)
            time.sleep(rng.uniform(0, 0.5))
            running_operator.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = {t.id: t for t in tasks.list("my-app")}
        if all(states[i].is_completed() for i in expected if i in states) and len(states) == len(expected):
            break
        running_operator.kill(9)
        time.sleep(rng.uniform(0.2, 1.5))
        running_operator.start()
        time.sleep(rng.uniform(1, 4))
    states = {t.id: t for t in tasks.list("my-app")}
    unfinished = {i: states[i].status for i in expected if not states[i].is_completed()}
    assert not unfinished, f"{len(unfinished)} tasks never finished: {unfinished}"
    for task_id, (state, value) in expected.items():
        got = states[task_id]
        assert got.status == state, (task_id, got)
        if state == SUCCESS and value is not None:
            assert got.result == value, (task_id, got)
        if state == FAILURE:
            assert got.error and got.error.message == value, (task_id, got)
        jobs = recorder.jobs_of(task_id)
        assert all(len(uids) == 1 for uids in jobs.values()), f"a second Job for one attempt: {jobs}"
        assert len(jobs) == got.attempts, (task_id, jobs, got)


def test_api_server_restart(local: Cluster, tasks: TaskClient, running_operator: Operator) -> None:
    before = [tasks.send(f"{T}.sleep", "my-app", [4]) for _ in range(5)]
    time.sleep(1)
    localcluster.restart_apiserver(pause=2)
    after = [tasks.send(f"{T}.add", "my-app", [i, i]) for i in range(5)]
    for s in before:
        assert tasks.wait(s.id, "my-app", timeout=120).status == SUCCESS
    for i, s in enumerate(after):
        assert tasks.wait(s.id, "my-app", timeout=120).result == 2 * i
    assert running_operator.alive(), "the operator died with the API server"


def test_a_lost_node(local: Cluster, tasks: TaskClient, api_client: Any, namespace: str,
                     recorder: JobRecorder) -> None:
    """The kubelet stops: the node goes NotReady, and its running pods stay as they were (with
    one node, the whole zone is down, and the node lifecycle controller evicts nothing). A task
    on it keeps its attempt: it is not taken for lost while its node is silent. When an admin
    force-deletes the pod, as one does for a node that will not come back, a late-ack task runs
    again, on the node once it is back."""
    core = client.CoreV1Api(api_client)
    quiet = tasks.send(f"{T}.sleep", "my-app", [25])
    status = tasks.send(f"{T}.sleep_first", "my-app", [300])
    running_pod(api_client, namespace, quiet.id, 1)
    pod = running_pod(api_client, namespace, status.id, 1)
    localcluster.stop_component("kubelet")
    try:
        def not_ready() -> bool:
            node = core.read_node(localcluster.NODE_NAME)
            return any(c.type == "Ready" and c.status != "True" for c in node.status.conditions)
        wait_until(not_ready, timeout=90, interval=1, message="the node to be NotReady")
        assert tasks.get_status(status.id, "my-app").status == STARTED
        assert tasks.get_status(quiet.id, "my-app").status == STARTED
        core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
        wait_until(lambda: len(recorder.jobs_of(status.id)) == 2, timeout=60,
                   message="the next attempt's Job")
    finally:
        localcluster.start_component("kubelet")
    final = tasks.wait(status.id, "my-app", timeout=180)
    assert final.status == SUCCESS, final
    assert final.result == "attempt 2 done"
    assert [h["outcome"] for h in final.history] == ["WorkerLost", "SUCCESS"]
    assert sorted(recorder.jobs_of(status.id)) == [f"{status.id}-1", f"{status.id}-2"]
    # The task that ran through the outage finished in its only attempt.
    calm = tasks.wait(quiet.id, "my-app", timeout=120)
    assert (calm.status, calm.result, calm.attempts) == (SUCCESS, "slept 25s", 1)
    wait_until(lambda: localcluster.node_ready(localcluster.STATE), timeout=120, message="the node to be back")


def test_a_task_outlives_a_containerd_restart(local: Cluster, tasks: TaskClient, api_client: Any,
                                             namespace: str, recorder: JobRecorder) -> None:
    """containerd restarts under a running task: the container runs on (its shim outlives the
    daemon), and the task ends as if nothing happened."""
    status = tasks.send(f"{T}.sleep", "my-app", [8])
    pid = running_task_pid(api_client, namespace, status.id)
    localcluster.stop_component("containerd")
    try:
        assert not gone(pid), "the container died with containerd"
        time.sleep(2)
    finally:
        localcluster.start_component("containerd")
    final = tasks.wait(status.id, "my-app", timeout=120)
    assert final.status == SUCCESS, final
    assert final.result == "slept 8s"
    assert final.attempts == 1
    assert list(recorder.jobs_of(status.id)) == [f"{status.id}-1"]
