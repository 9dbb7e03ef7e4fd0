"""End to end on a real API server: send_task → LimeTask → operator → Job → runner → status."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import Cluster, wait_until
from kubernetes import client

from lime_task import (
    FAILURE,
    PENDING,
    STARTED,
    SUCCESS,
    InvalidArgumentsError,
    InvalidTaskError,
    NotFoundError,
    TaskClient,
    UnknownTaskError,
)

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
APP = "my-app"


def limetasks(api_client: Any, namespace: str) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(api_client)
    return api.list_namespaced_custom_object("limetask.io", "v1alpha1", namespace, "limetasks")["items"]


def jobs(api_client: Any, namespace: str) -> list[Any]:
    return client.BatchV1Api(api_client).list_namespaced_job(namespace).items


def test_success_with_result(tasks: TaskClient, api_client: Any, namespace: str) -> None:
    status = tasks.send(f"{T}.get_lime_company", "my-app", [1001, ["name", "phone"]])
    assert status.status == PENDING
    assert status.app == "my-app"
    seen: list[str] = []
    final = tasks.wait(status.id, "my-app", timeout=60, on_change=lambda s: seen.append(s.status))
    assert final.status == SUCCESS, final
    assert final.result == "company 1001 of my-app: updated 2 properties on 50 deals"
    assert final.error is None
    assert final.attempts == 1
    assert final.created_at and final.started_at and final.completed_at
    assert final.created_at <= final.started_at <= final.completed_at
    assert seen[-1] == SUCCESS and seen[0] == PENDING
    again = tasks.get_status(status.id, "my-app")
    assert again.result == final.result and again.is_completed()
    # The result is safe in the LimeTask, so the Job and its pod are cleaned up.
    wait_until(lambda: not jobs(api_client, namespace), timeout=30, message="the finished Job to be deleted")
    assert tasks.get_status(status.id, "my-app").result == final.result


def test_started_while_running(tasks: TaskClient) -> None:
    status = tasks.send(f"{T}.sleep", "my-app", [3])
    started = wait_until(lambda: (s := tasks.get_status(status.id, "my-app")).status == STARTED and s,
                         timeout=30, message="STARTED")
    assert started.started_at is not None and started.completed_at is None
    assert not started.is_completed()
    final = started.wait(timeout=60)
    assert final.status == SUCCESS and final.result == "slept 3s"


def test_task_that_raises(tasks: TaskClient) -> None:
    final = tasks.send(f"{T}.fail", "my-app", ["no such deal"]).wait(timeout=60)
    assert final.status == FAILURE
    assert final.error is not None
    assert (final.error.type, final.error.message, final.error.reason) == ("ValueError", "no such deal", "TaskRaised")
    assert final.result is None
    assert final.attempts == 1


def test_job_shape(tasks: TaskClient, api_client: Any, namespace: str) -> None:
    status = tasks.send(f"{T}.sleep", "my-app", [5])
    job = wait_until(lambda: jobs(api_client, namespace), timeout=30, message="the Job")[0]
    assert job.metadata.name == f"{status.id}-1"
    assert job.spec.backoff_limit == 0
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("LimeTask", status.id, True)
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never" and pod.automount_service_account_token is False
    tasks.cancel(status.id, "my-app")


@pytest.mark.parametrize("name, error", [
    (f"{T}.undecorated", UnknownTaskError),           # a function not registered with @task
    (f"{T}.no_such_task", UnknownTaskError),
    ("acme_solution.nowhere.task", UnknownTaskError),
    ("os.system", UnknownTaskError),                  # never runs anything but a task
    ("subprocess.run", UnknownTaskError),
    ("acme_solution.tasks", UnknownTaskError),       # a module
    ("nodots", InvalidTaskError),
    ("core.task.#.failure", InvalidTaskError),       # AMQP wildcards are not names
    ("a.*", InvalidTaskError),
])
def test_bad_task_names_create_nothing(tasks: TaskClient, api_client: Any, namespace: str, name: str,
                                       error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        tasks.send(name, "my-app", ["ls"])
    assert repr(name) in str(info.value) or name in str(info.value)
    assert limetasks(api_client, namespace) == []


class Opaque:
    pass


@pytest.mark.parametrize("args, kwargs, fragment", [
    ([Opaque()], {}, "argument 1 is a Opaque"),
    ([{1, 2}], {}, "argument 1 is a set"),
    ([b"bytes"], {}, "argument 1 is a bytes"),
    ([float("nan")], {}, "JSON cannot represent"),
    ([], {"when": object()}, "keyword argument 'when'"),
    ([{1: "x"}], {}, "not a string"),
    (["x" * 40000], {}, "over the limit"),
])
def test_bad_arguments_create_nothing(tasks: TaskClient, api_client: Any, namespace: str, args: list[Any],
                                      kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentsError, match=fragment.replace("(", r"\(")):
        tasks.send(f"{T}.add", "my-app", args, kwargs)
    assert isinstance(InvalidArgumentsError("x"), TypeError)
    assert limetasks(api_client, namespace) == []


@pytest.mark.parametrize("app", ["", "has space", "-leading", "x" * 64, "a/b", None, 42])
def test_bad_app_names_create_nothing(tasks: TaskClient, api_client: Any, namespace: str, app: Any) -> None:
    with pytest.raises(InvalidTaskError, match="application"):
        tasks.send(f"{T}.add", app, [1, 2])
    assert limetasks(api_client, namespace) == []


def test_app_scoping(tasks: TaskClient) -> None:
    status = tasks.send(f"{T}.add", "app-one", [1, 2])
    tasks.wait(status.id, "app-one", timeout=60)
    with pytest.raises(NotFoundError) as other:
        tasks.get_status(status.id, "app-two")
    with pytest.raises(NotFoundError) as missing:
        tasks.get_status("00000000-0000-0000-0000-000000000000", "app-two")
    # The two cases cannot be told apart but by the id the caller already knows.
    assert str(other.value).replace(status.id, "ID") == str(missing.value).replace(
        "00000000-0000-0000-0000-000000000000", "ID")
    with pytest.raises(NotFoundError):
        tasks.cancel(status.id, "app-two")
    with pytest.raises(NotFoundError):
        tasks.wait(status.id, "app-two", timeout=5)
    assert tasks.get_status(status.id, "app-one").result == 3
    assert [s.id for s in tasks.list("app-one")] == [status.id]
    assert tasks.list("app-two") == []


def test_result_rules(tasks: TaskClient) -> None:
    huge = tasks.send(f"{T}.huge", "my-app", [10000])
    not_json = tasks.send(f"{T}.not_json", "my-app")
    fits = tasks.send(f"{T}.huge", "my-app", [3000])
    h = huge.wait(timeout=60)
    assert h.status == FAILURE and h.error and h.error.reason == "ResultTooLarge"
    assert "summary" in h.error.message and h.result is None
    n = not_json.wait(timeout=60)
    assert n.status == FAILURE and n.error and n.error.reason == "ResultNotJSON"
    f = fits.wait(timeout=60)
    assert f.status == SUCCESS and f.result == "x" * 3000


def test_worker_lost_is_never_success(tasks: TaskClient) -> None:
    final = tasks.send(f"{T}.crash", "my-app").wait(timeout=60)
    assert final.status == FAILURE
    assert final.error and final.error.reason == "WorkerLost" and "SIGKILL" in final.error.message


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> Any:
    return cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(body), check=False)


def test_kubectl_apply_works_like_send_task(cluster: Cluster, namespace: str, tasks: TaskClient) -> None:
    body = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": "by-hand"},
            "spec": {"task": f"{T}.add", "app": "my-app", "args": [20, 22]}}
    result = apply(cluster, namespace, body)
    assert result.returncode == 0, result.stderr
    final = tasks.wait("by-hand", "my-app", timeout=60)
    assert final.status == SUCCESS and final.result == 42
    table = cluster.run_kubectl("get", "lt", namespace=namespace).stdout
    header = table.splitlines()[0].split()
    assert header[:6] == ["NAME", "TASK", "APP", "STATE", "ATTEMPTS", "AGE"], table
    row = table.splitlines()[1].split()
    assert row[:5] == ["by-hand", f"{T}.add", "my-app", "SUCCESS", "1"], table
    cond = json.loads(cluster.run_kubectl("get", "lt", "by-hand", "-o", "json", namespace=namespace).stdout)
    succeeded = [c for c in cond["status"]["conditions"] if c["type"] == "Succeeded"]
    assert succeeded and succeeded[0]["status"] == "True"


@pytest.mark.parametrize("spec, fragment", [
    ({"app": "my-app"}, "spec.task"),                                          # missing field
    ({"task": f"{T}.add"}, "spec.app"),
    ({"task": f"{T}.add", "app": "my-app", "args": "1,2"}, "spec.args"),       # wrong type
    ({"task": f"{T}.add", "app": "my-app", "kwargs": [1]}, "spec.kwargs"),
    ({"task": "core.task.#", "app": "my-app"}, "spec.task"),                   # wildcard in a name
    ({"task": f"{T}.add", "app": "bad app"}, "spec.app"),
    ({"task": f"{T}.add", "app": "my-app", "maxAttempts": 0}, "spec.maxAttempts"),
    ({"task": f"{T}.add", "app": "my-app", "timeoutSeconds": "soon"}, "spec.timeoutSeconds"),
    ({"task": f"{T}.add", "app": "my-app", "acksLate": "yes"}, "spec.acksLate"),
])
def test_kubectl_apply_rejects_bad_resources(cluster: Cluster, namespace: str, api_client: Any,
                                             spec: dict[str, Any], fragment: str) -> None:
    body = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": "bad"}, "spec": spec}
    result = cluster.run_kubectl("apply", "--validate=false", "-f", "-", namespace=namespace,
                                 input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr
    assert limetasks(api_client, namespace) == []


def test_hand_written_unknown_task_fails_and_operator_carries_on(cluster: Cluster, namespace: str,
                                                                  tasks: TaskClient) -> None:
    for name, task in [("unknown", f"{T}.no_such_task"), ("shell", "os.system"), ("mod", "acme_solution.tasks")]:
        body = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": name},
                "spec": {"task": task, "app": "my-app", "args": ["touch /tmp/pwned"]}}
        assert apply(cluster, namespace, body).returncode == 0
    for name in ("unknown", "shell", "mod"):
        final = tasks.wait(name, "my-app", timeout=60)
        assert final.status == FAILURE and final.error and final.error.reason == "UnknownTask", final
    assert tasks.send(f"{T}.add", "my-app", [1, 1]).wait(timeout=60).result == 2


def test_oversized_hand_written_arguments(cluster: Cluster, namespace: str, tasks: TaskClient) -> None:
    body = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": "big"},
            "spec": {"task": f"{T}.add", "app": "my-app", "args": ["x" * 40000, 1]}}
    assert apply(cluster, namespace, body).returncode == 0
    final = tasks.wait("big", "my-app", timeout=60)
    assert final.status == FAILURE and final.error and final.error.reason == "InvalidSpec"
    assert "limit" in final.error.message and final.attempts == 0


def test_send_is_idempotent_under_retry(tasks: TaskClient, api_client: Any, namespace: str) -> None:
    first = tasks.send(f"{T}.add", "my-app", [2, 3], task_id="fixed-id-1")
    second = tasks.send(f"{T}.add", "my-app", [2, 3], task_id="fixed-id-1")
    assert first.id == second.id == "fixed-id-1"
    assert len(limetasks(api_client, namespace)) == 1
    assert tasks.wait("fixed-id-1", "my-app", timeout=60).result == 5


def test_per_task_placement_and_resource_caps(cluster: Cluster, namespace: str, tasks: TaskClient,
                                              api_client: Any) -> None:
    # The session operator runs with the chart's limits.allowPlacementOverride=true and
    # limits.maxRunnerResources={memory: 2Gi}.
    placed = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": "placed"},
              "spec": {"task": f"{T}.sleep", "app": "my-app", "args": [3],
                       "nodeSelector": {"kubernetes.io/os": "linux"},
                       "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "1Gi"}}}}
    assert apply(cluster, namespace, placed).returncode == 0
    job = wait_until(lambda: jobs(api_client, namespace), timeout=30, message="the Job")[0]
    pod = job.spec.template.spec
    assert pod.node_selector == {"kubernetes.io/os": "linux"}
    assert pod.containers[0].resources.limits["memory"] == "1Gi"
    assert tasks.wait("placed", "my-app", timeout=60).status == SUCCESS
    greedy = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": "greedy"},
              "spec": {"task": f"{T}.add", "app": "my-app", "args": [1, 1],
                       "resources": {"limits": {"memory": "64Gi"}}}}
    assert apply(cluster, namespace, greedy).returncode == 0
    final = tasks.wait("greedy", "my-app", timeout=60)
    assert final.status == FAILURE and final.error and final.error.reason == "InvalidSpec"
    assert "over the cap of 2Gi" in final.error.message and final.attempts == 0


def test_the_api_server_refuses_spec_changes_and_takes_null_arguments(cluster: Cluster, namespace: str,
                                                                       tasks: TaskClient) -> None:
    """The CRD's validation rules make the spec immutable at the API, and never trip over JSON
    null in the arguments (a rule comparing them would fail every status write of such a task)."""
    status = tasks.send(f"{T}.sleep", "my-app", [0.1, None])
    final = tasks.wait(status.id, "my-app", timeout=90)
    assert final.status == SUCCESS and final.result == "slept 0.1s", final
    for patch in ('{"spec":{"task":"acme_solution.tasks.lime.add"}}', '{"spec":{"app":"another-app"}}',
                  '{"spec":{"timeoutSeconds":5}}', '{"spec":{"acksLate":true}}'):
        result = cluster.run_kubectl("patch", "lt", status.id, "--type=merge", "-p", patch, namespace=namespace,
                                     check=False)
        assert result.returncode != 0, patch
        assert "immutable once created" in result.stderr, result.stderr
    again = tasks.get_status(status.id, "my-app")
    assert (again.status, again.result) == (SUCCESS, "slept 0.1s")


# -- delayed start and expiry -----------------------------------------------------------------

def jobs_of(api_client: Any, namespace: str, task_id: str) -> list[Any]:
    return client.BatchV1Api(api_client).list_namespaced_job(
        namespace, label_selector=f"limetask.io/task-id={task_id}").items


def test_countdown_delays_the_start_and_costs_no_pod_meanwhile(tasks: TaskClient, api_client: Any,
                                                              namespace: str) -> None:
    import datetime as dt

    sent = tasks.send(f"{T}.add", APP, [2, 2], countdown=5)
    assert sent.eta is not None and sent.status == "PENDING"
    waiting = wait_until(lambda: (s := tasks.get_status(sent.id, APP)) and s.history == () and s, timeout=10,
                         message="the waiting status")
    time.sleep(2)
    assert jobs_of(api_client, namespace, sent.id) == [], "a Job before the eta"
    assert not client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"limetask.io/task-id={sent.id}").items
    raw = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetasks", sent.id)
    assert raw["status"]["conditions"][0]["reason"] == "Scheduled", raw["status"]
    assert waiting.status == "PENDING"
    final = tasks.wait(sent.id, APP, timeout=120)
    assert final.status == SUCCESS and final.result == 4
    assert final.started_at is not None and final.started_at >= sent.eta - dt.timedelta(seconds=1)


def test_a_task_that_expires_before_its_start_never_runs(tasks: TaskClient, api_client: Any, namespace: str,
                                                         cluster: Cluster) -> None:
    # The client refuses an expiry before the start: such a task could only end Expired.
    with pytest.raises(InvalidTaskError, match="is not after the task's start"):
        tasks.send(f"{T}.add", APP, [1, 1], countdown=60, expires=2)
    assert tasks.list(app_name=APP) == []
    # kubectl: the same fields on the resource; already expired, it never runs.
    manifest = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": "expired-by-kubectl"},
                "spec": {"task": f"{T}.add", "app": APP, "args": [1, 1], "expires": "2020-01-01T00:00:00Z"}}
    cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(manifest))
    by_kubectl = tasks.wait("expired-by-kubectl", APP, timeout=30)
    assert by_kubectl.error is not None and by_kubectl.error.reason == "Expired"
    assert "never ran" in by_kubectl.error.message and by_kubectl.attempts == 0 and by_kubectl.history == ()
    assert jobs_of(api_client, namespace, "expired-by-kubectl") == []
    # The times are immutable, like the rest of the spec.
    patched = cluster.run_kubectl("patch", "lt", "expired-by-kubectl", "--type=merge", "-p",
                                  '{"spec": {"expires": "2030-01-01T00:00:00Z"}}', namespace=namespace, check=False)
    assert patched.returncode != 0 and "immutable" in patched.stderr
    bad = dict(manifest, metadata={"name": "bad-eta"}, spec={**manifest["spec"], "eta": "tomorrow"})
    refused = cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(bad), check=False)
    assert refused.returncode != 0 and "eta" in refused.stderr


# -- retry policies and the soft time limit ---------------------------------------------------

def test_autoretry_ends_in_success_with_each_try_in_the_history(tasks: TaskClient) -> None:
    sent = tasks.send(f"{T}.unreliable", APP, [2])  # fails twice, max_retries 2: the third try works
    final = tasks.wait(sent.id, APP, timeout=180)
    assert final.status == SUCCESS and final.result == "synced on attempt 3", final
    assert final.attempts == 3 and final.retries == 2
    assert [(h["attempt"], h["outcome"]) for h in final.history] == [(1, "Retry"), (2, "Retry"), (3, SUCCESS)]
    assert "the CRM hung up on attempt 1" in final.history[0]["message"]


def test_autoretry_ends_in_retries_exhausted(tasks: TaskClient) -> None:
    sent = tasks.send(f"{T}.unreliable", APP, [5])
    final = tasks.wait(sent.id, APP, timeout=180)
    assert final.status == FAILURE and final.error is not None, final
    assert final.error.reason == "RetriesExhausted" and final.error.type == "ConnectionError"
    assert final.attempts == 3 and [h["outcome"] for h in final.history] == ["Retry", "Retry", "FAILURE"]


def test_any_other_exception_is_still_never_re_run(tasks: TaskClient) -> None:
    final = tasks.send(f"{T}.fail", APP, ["no"]).wait(timeout=120)
    assert final.status == FAILURE and final.attempts == 1 and final.retries == 0


def test_the_soft_time_limit_lets_the_task_clean_up(tasks: TaskClient) -> None:
    final = tasks.send(f"{T}.soft_limited", APP, [45]).wait(timeout=90)
    assert final.status == SUCCESS and final.result == "stopped at the soft time limit and cleaned up"
    assert final.started_at is not None and final.completed_at is not None
    assert (final.completed_at - final.started_at).total_seconds() < 30  # stopped well before its 45 s
