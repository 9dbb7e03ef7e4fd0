"""The operator core under conditions production meets: re-created names, kept Jobs, races."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import wait_until
from kubernetes import client

from lime_task import SUCCESS, TaskClient

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
GROUP, VERSION, PLURAL = "limetask.io", "v1alpha1", "limetasks"


def jobs(api_client: Any, namespace: str) -> list[Any]:
    return client.BatchV1Api(api_client).list_namespaced_job(namespace).items


@pytest.mark.parametrize("old_finished", [False, True], ids=["old-running", "old-finished"])
def test_a_task_recreated_under_its_name_runs_afresh(tasks: TaskClient, api_client: Any, namespace: str,
                                                     old_finished: bool) -> None:
    """Identity is the UID: the new task never inherits the old one's Job, pod, result or event id."""
    api = client.CustomObjectsApi(api_client)
    tasks.send(f"{T}.sleep", "my-app", [1 if old_finished else 60], task_id="again")
    if old_finished:  # its Job and pod still hold a SUCCESS verdict ("slept 1s")
        wait_until(lambda: tasks.get_status("again", "my-app").status == SUCCESS, timeout=60, message="SUCCESS")
    else:
        wait_until(lambda: tasks.get_status("again", "my-app").status == "STARTED", timeout=60, message="STARTED")
    old_uid = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")["metadata"]["uid"]
    # Deleted with its Jobs orphaned: they (and their pods) outlive it, as when GC lags.
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again",
                                        body={"propagationPolicy": "Orphan"})
    wait_until(lambda: "again" not in {s.id for s in tasks.list()}, timeout=30, message="the old task to go")
    if not old_finished:
        assert [j.metadata.name for j in jobs(api_client, namespace)] == ["again-1"]
    new = tasks.send(f"{T}.add", "my-app", [1, 2], task_id="again")
    final = tasks.wait(new.id, "my-app", timeout=90)
    assert final.status == SUCCESS and final.result == 3 and final.attempts == 1, final
    body = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")
    assert body["metadata"]["uid"] != old_uid
    wait_until(lambda: (body := api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again"))
               ["status"].get("event", {}).get("confirmed") and body, timeout=60, message="the event")
    body = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")
    assert body["status"]["event"]["messageId"] == f"{body['metadata']['uid']}.SUCCESS"
    # Nothing of the predecessor is left running.
    wait_until(lambda: not [p for p in client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
                            if (p.metadata.labels or {}).get("limetask.io/task-uid") == old_uid
                            and p.status.phase == "Running"], timeout=60, message="the old pod to stop")


@pytest.mark.broker
def test_two_replicas_one_leads_and_the_next_takes_over(cluster: Any, operator: Any, api_client: Any,
                                                          namespace: str, tmp_path: Any) -> None:
    """Two operators on the same scope while 100 tasks run, the leader killed midway: exactly one
    Job per attempt, one event per task."""
    import re
    import uuid

    from conftest import Operator, start_replicas
    from test_e2e_events import Collector
    from test_e2e_faults import JobRecorder

    app = f"app-{uuid.uuid4().hex[:8]}"
    collector = Collector(app)
    recorder = JobRecorder(api_client, namespace)
    operator.stop()
    replicas: list[Operator] = []
    try:
        start_replicas(operator, tmp_path, replicas=replicas)
        first, second = replicas
        tasks = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
        sent = [tasks.send(f"{T}.noop", app) for _ in range(100)]
        wait_until(lambda: sum(s.status == SUCCESS for s in tasks.list()) >= 30, timeout=120, message="30 done")
        first.kill(9)
        wait_until(lambda: "replica-b leads" in second.log_path.read_text(), timeout=60, message="replica-b to lead")
        wait_until(lambda: sum(s.status == SUCCESS for s in tasks.list()) == 100, timeout=240, message="all done")
        wait_until(lambda: len(collector.ids()) >= 100, timeout=120, message="100 events")
        time.sleep(2)
        assert collector.ids() == {f"{s.id}.SUCCESS" for s in sent}
        assert len(collector.events) == 100, "one event per task (redeliveries are dropped by message id)"
        per_task: dict[str, list[str]] = {}
        for job, uids in recorder.uids.items():
            assert len(uids) == 1, f"Job {job} was made {len(uids)} times"
            per_task.setdefault(re.sub(r"-\d+$", "", job), []).append(job)
        assert {t: len(j) for t, j in per_task.items()} == {s.id: 1 for s in sent}
        assert "replica-b leads" not in first.log_path.read_text()
    finally:
        for replica in replicas:
            replica.stop()
        recorder.stop()
        collector.stop()
        operator.start()


def _running_pod(api_client: Any, namespace: str, task_id: str) -> Any:
    core = client.CoreV1Api(api_client)

    def find() -> Any:
        for p in core.list_namespaced_pod(namespace, label_selector=f"limetask.io/task-id={task_id}").items:
            if any(s.state.running for s in p.status.container_statuses or []):
                return p
        return None
    return wait_until(find, timeout=60, message=f"the pod of {task_id} to run")


@pytest.mark.parametrize("how", ["delete", "evict"])
@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "late-ack"])
def test_a_deleted_or_evicted_pod_is_a_lost_worker_not_a_second_run(tasks: TaskClient, api_client: Any,
                                                                      namespace: str, how: str,
                                                                      acks_late: bool) -> None:
    """The job controller replaces a deleted or evicted pod; its replacement never makes the attempt
    a SUCCESS: early ack ends WorkerLost after one attempt, late ack makes it the next attempt."""
    from lime_task import TaskOptions

    status = tasks.send(f"{T}.sleep", "my-app", [4], options=TaskOptions(acks_late=acks_late), check=False)
    pod = _running_pod(api_client, namespace, status.id)
    core = client.CoreV1Api(api_client)
    if how == "delete":
        core.delete_namespaced_pod(pod.metadata.name, namespace)
    else:
        core.create_namespaced_pod_eviction(pod.metadata.name, namespace, {
            "apiVersion": "policy/v1beta1", "kind": "Eviction",
            "metadata": {"name": pod.metadata.name, "namespace": namespace}})
    final = tasks.wait(status.id, "my-app", timeout=90)
    if acks_late:
        assert final.status == SUCCESS and final.attempts == 2, final
        assert final.history[0]["outcome"] == "WorkerLost"
    else:
        assert final.status == "FAILURE" and final.error is not None, final
        assert final.error.reason == "WorkerLost" and final.attempts == 1, final


def test_a_job_deleted_by_its_ttl_while_the_operator_was_stopped_still_gives_its_verdict(
        cluster: Any, operator: Any, api_client: Any, namespace: str, tmp_path: Any) -> None:
    """Gone is not lost: with the Job TTL at 0 and the operator stopped (SIGSTOP) while the pod
    finishes, the Job and pod are deleted before the operator sees them end; their final state,
    from the DELETED events it reads when it goes on, still gives SUCCESS, not WorkerLost."""
    import signal

    from conftest import Operator

    operator.stop()
    alone = Operator(cluster, tmp_path, args=("--namespace", namespace),
                     extra_env={**operator.extra_env, "LIMETASK_JOB_TTL_SECONDS": "0",
                                "LIMETASK_LEADER_ELECTION": "false"})
    try:
        alone.start()
        tasks = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
        status = tasks.send(f"{T}.sleep", "my-app", [3])
        wait_until(lambda: tasks.get_status(status.id, "my-app").status == "STARTED", timeout=60, message="STARTED")
        assert alone.proc is not None
        alone.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: not jobs(api_client, namespace), timeout=60, message="the TTL to delete the Job")
            wait_until(lambda: not client.CoreV1Api(api_client).list_namespaced_pod(namespace).items, timeout=60,
                       message="its pod to be deleted")
        finally:
            alone.proc.send_signal(signal.SIGCONT)
        final = tasks.wait(status.id, "my-app", timeout=60)
        assert final.status == SUCCESS and final.result == "slept 3s", final
    finally:
        alone.stop()
        operator.start()


def test_the_operator_asks_the_api_server_what_it_offers(running_operator: Any, cluster: Any, tasks: Any,
                                                         api_client: Any, namespace: str) -> None:
    """A dry run tells which Job features the server has (the local cluster's 1.37 has them all),
    nothing is created by asking, and the Jobs use what was found: one pod per attempt."""
    from kubernetes import client

    log = wait_until(lambda: "API server features" in (t := running_operator.log_path.read_text(errors="replace"))
                     and t, timeout=30, message="the feature probe")
    line = next(x for x in log.splitlines() if "API server features" in x)
    if cluster.local:
        assert "podReplacementPolicy yes" in line, line
        status = tasks.send("acme_solution.tasks.lime.sleep", "my-app", [5])
        job = wait_until(lambda: client.BatchV1Api(api_client).list_namespaced_job(
            namespace, label_selector=f"limetask.io/task-id={status.id}").items, timeout=30, message="the Job")[0]
        assert job.spec.pod_replacement_policy == "Failed"
        assert tasks.wait(status.id, "my-app", timeout=60).result == "slept 5s"
    assert "limetask-feature-probe" not in cluster.run_kubectl("get", "jobs", "-A", "-o", "name").stdout
