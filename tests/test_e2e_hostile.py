"""Hostile input, end to end: nothing a user can send stops, corrupts or fools the system.

Each case is at most its own task's FAILURE, with a message that says why; every other task
goes on. The cases that already passed when this suite was written are kept here too, so that
none of them comes back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from typing import Any

import pytest
from conftest import REPO, Cluster, Operator, wait_until
from kubernetes import client

from lime_task import (
    FAILURE,
    SUCCESS,
    InvalidArgumentsError,
    InvalidTaskError,
    TaskClient,
)
from lime_task.events import message_id

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
GROUP, VERSION, PLURAL = "limetask.io", "v1alpha1", "limetasks"


def create_raw(api_client: Any, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A LimeTask made straight through the API, as kubectl or any client could."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "metadata": {"name": name}, "spec": spec}
    created: dict[str, Any] = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body)
    return created


def create_raw_text(cluster: Cluster, namespace: str, text: str) -> None:
    """Create from a JSON document as it is, with kubectl (Python's json fails on deep ones)."""
    cluster.run_kubectl("create", "-f", "-", namespace=namespace, input=text)


def final_of(tasks: TaskClient, task_id: str, app: str, timeout: float = 60) -> Any:
    return tasks.wait(task_id, app, timeout=timeout)


def deep(levels: int, leaf: str = "1") -> str:
    return "[" * levels + leaf + "]" * levels


# -- 1. one object never stops everything -------------------------------------------------------

def test_deeply_nested_args_fail_alone(tasks: TaskClient, api_client: Any, namespace: str, cluster: Cluster,
                                       running_operator: Operator) -> None:
    name = f"deep-{uuid.uuid4().hex[:6]}"
    create_raw_text(cluster, namespace, json.dumps({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "metadata": {"name": name},
        "spec": {"task": f"{T}.add", "app": "my-app", "args": ["PLACEHOLDER"]}}).replace(
            '"PLACEHOLDER"', deep(3000)))
    # Tasks keep running, in this namespace and in others.
    ok = tasks.send(f"{T}.add", "my-app", [1, 2])
    assert final_of(tasks, ok.id, "my-app").result == 3
    bad = final_of(tasks, name, "my-app")
    assert bad.status == FAILURE and bad.error is not None
    assert bad.error.reason == "InvalidSpec"
    assert "deeper than 64 levels" in bad.error.message
    # Listing the namespace works, for the client and the CLI.
    assert {s.id for s in tasks.list()} >= {name, ok.id}
    cli = subprocess.run([sys.executable, "-m", "lime_task.cli", "list", "-n", namespace,
                          f"--kubeconfig={cluster.kubeconfig}"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert name in cli.stdout and "Traceback" not in cli.stderr
    # A restarted operator lists it again and goes on.
    running_operator.restart()
    again = tasks.send(f"{T}.add", "my-app", [2, 2])
    assert final_of(tasks, again.id, "my-app").result == 4
    assert "RecursionError" not in running_operator.log_path.read_text(errors="replace")


def test_health_probe_answers(running_operator: Operator) -> None:
    """The probe runs the watch check (a dead watch makes it fail: see the unit tests)."""
    liveness = next(a.split("=", 1)[1] for a in running_operator.args if a.startswith("--liveness="))
    url = liveness.replace("0.0.0.0", "127.0.0.1")
    body = wait_until(lambda: _get(url), timeout=30, message="the health endpoint")
    assert "watches ok" in body


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode() if resp.status == 200 else None
    except OSError:
        return None


# -- 2. arguments reach the task byte for byte --------------------------------------------------

@pytest.mark.parametrize("text", ["price: $$5", "$(LIMETASK_APP)/$(HOME)", "$$(LIMETASK_APP)", "$", "\\$(X)",
                                  "caf\u00e9 \u2603 $\u00e9"])
def test_arguments_are_not_expanded(tasks: TaskClient, text: str) -> None:
    status = tasks.send(f"{T}.add", "my-app", [text, ""])
    assert final_of(tasks, status.id, "my-app").result == text
    kw = tasks.send(f"{T}.add", "my-app", [], {"a": "", "b": text})
    assert final_of(tasks, kw.id, "my-app").result == text


# -- 3. message ids per incarnation -------------------------------------------------------------

def confirmed_event(api_client: Any, namespace: str, name: str) -> dict[str, Any]:
    """The LimeTask once its completion event is confirmed."""
    api = client.CustomObjectsApi(api_client)

    def read() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return body if ((body.get("status") or {}).get("event") or {}).get("confirmed") else None

    found: dict[str, Any] = wait_until(read, timeout=60, message=f"the event of {namespace}/{name}")
    return found


def test_same_name_in_two_namespaces_and_recreated_gets_new_event_ids(
        tasks: TaskClient, api_client: Any, namespace: str, cluster: Cluster) -> None:
    core = client.CoreV1Api(api_client)
    other = f"{namespace[:40]}-b"
    core.create_namespace({"metadata": {"name": other}})
    try:
        twin = TaskClient(kubeconfig=cluster.kubeconfig, namespace=other)
        ids = []
        for round_, c in enumerate((tasks, twin, tasks)):
            c.send(f"{T}.add", "my-app", [1, 1], task_id="same-name")
            assert final_of(c, "same-name", "my-app").status == SUCCESS
            body = confirmed_event(api_client, c.namespace, "same-name")
            assert body["status"]["event"]["messageId"] == message_id(body["metadata"]["uid"], SUCCESS)
            ids.append(body["status"]["event"]["messageId"])
            if round_ == 0:  # delete it: the third round re-creates it under the same name
                client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "same-name")
                wait_until(lambda: "same-name" not in {s.id for s in tasks.list()}, timeout=30,
                           message="the first task to be deleted")
        assert len(set(ids)) == 3, ids
    finally:
        core.delete_namespace(other)


# -- 4. what the API server refuses ends the task -----------------------------------------------

@pytest.mark.parametrize("resources, words", [
    # The runner default limit is 512Mi: a request above it.
    ({"requests": {"memory": "1Gi"}}, "requests.memory=1Gi is above limits.memory=512Mi"),
    # (The suite's chart caps memory only, and refuses other resources.)
    ({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}, "requests.memory=2Gi is above limits.memory=1Gi"),
    ({"limits": {"nvidia.com/gpu": 64}}, "nvidia.com/gpu is not a resource this cluster lets a task set"),
    ({"limits": {"cpu": -1}}, "not a quantity"),
])
def test_resources_the_api_would_refuse_fail_at_once(tasks: TaskClient, api_client: Any, namespace: str,
                                                     resources: dict[str, Any], words: str) -> None:
    name = f"res-{uuid.uuid4().hex[:6]}"
    create_raw(api_client, namespace, name, {"task": f"{T}.add", "app": "my-app", "args": [1, 2],
                                             "resources": resources})
    final = final_of(tasks, name, "my-app", timeout=30)
    assert final.status == FAILURE and final.error is not None
    assert final.error.reason == "InvalidSpec" and words in final.error.message, final.error


@pytest.mark.parametrize("resources", [{"limits": {"cpu": "inf"}}, {"limits": {"memory": "-1Gi"}},
                                       {"requests": {"memory": "lots"}}])
def test_the_crd_refuses_what_is_not_a_quantity(api_client: Any, namespace: str, resources: dict[str, Any]) -> None:
    with pytest.raises(client.ApiException) as refused:
        create_raw(api_client, namespace, "bad-quantity", {"task": f"{T}.add", "app": "my-app",
                                                          "resources": resources})
    assert refused.value.status == 422


def test_a_name_too_long_for_a_label_is_refused(api_client: Any, namespace: str) -> None:
    with pytest.raises(client.ApiException) as refused:
        create_raw(api_client, namespace, "n" * 70, {"task": f"{T}.add", "app": "my-app"})
    assert refused.value.status == 422 and "63" in refused.value.body


def test_a_job_the_api_refuses_ends_the_task(tasks: TaskClient, api_client: Any, namespace: str) -> None:
    # Placement is allowed in the suite's chart values; this toleration is invalid for a pod.
    name = f"refused-{uuid.uuid4().hex[:6]}"
    create_raw(api_client, namespace, name, {"task": f"{T}.add", "app": "my-app", "args": [1, 2],
                                             "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]})
    final = final_of(tasks, name, "my-app", timeout=30)
    assert final.status == FAILURE and final.error is not None
    assert final.error.reason == "InvalidSpec"
    assert "refused the Job" in final.error.message and "Exists" in final.error.message


def test_a_pod_a_limitrange_forbids_ends_the_task(tasks: TaskClient, api_client: Any, namespace: str) -> None:
    client.CoreV1Api(api_client).create_namespaced_limit_range(namespace, {
        "metadata": {"name": "small"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "256Mi"}}]}})
    status = tasks.send(f"{T}.add", "my-app", [1, 2])
    final = final_of(tasks, status.id, "my-app", timeout=60)
    assert final.status == FAILURE and final.error is not None
    assert final.error.reason == "InvalidSpec"
    assert "was refused" in final.error.message and "256Mi" in final.error.message, final.error.message


def test_a_full_quota_is_a_visible_wait(tasks: TaskClient, api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    # The local cluster runs no quota controller: give the quota the status it would.
    core.replace_namespaced_resource_quota_status("no-pods", namespace, {
        "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}},
        "status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}})
    status = tasks.send(f"{T}.add", "my-app", [1, 2])
    api = client.CustomObjectsApi(api_client)

    def waiting_reason() -> str | None:
        body = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, status.id)
        cond = next((c for c in (body.get("status") or {}).get("conditions") or []), {})
        return cond.get("reason") if cond.get("reason") == "QuotaExceeded" else None

    wait_until(waiting_reason, timeout=60, message="a QuotaExceeded condition")
    assert tasks.get_status(status.id, "my-app").status == "PENDING"
    client.CoreV1Api(api_client).delete_namespaced_resource_quota("no-pods", namespace)
    assert final_of(tasks, status.id, "my-app", timeout=90).result == 3


# -- 5. only registered tasks of declared modules run -------------------------------------------

@pytest.mark.parametrize("name", ["this.x", "unittest.__main__.x", "os.system"])
def test_any_module_is_refused_without_import(tasks: TaskClient, api_client: Any, namespace: str, name: str) -> None:
    task_id = f"mod-{uuid.uuid4().hex[:6]}"
    create_raw(api_client, namespace, task_id, {"task": name, "app": "my-app", "args": ["true"], "acksLate": True})
    final = final_of(tasks, task_id, "my-app")
    assert final.status == FAILURE and final.error is not None
    assert final.error.reason == "UnknownTask" and final.attempts == 1, final


# -- 6. distinct tasks get distinct Jobs --------------------------------------------------------

def test_a_name_like_a_shortened_job_name_gets_its_own_job(tasks: TaskClient) -> None:
    from limetask_operator.manifests import job_name

    long = "l" + uuid.uuid4().hex[:8] + "x" * 52  # 61 characters: its Job name is shortened
    mimic = job_name(long, 1).rsplit("-", 1)[0]
    first = tasks.send(f"{T}.add", "my-app", [1, 1], task_id=mimic)
    second = tasks.send(f"{T}.add", "my-app", [2, 2], task_id=long)
    assert final_of(tasks, first.id, "my-app").result == 2
    assert final_of(tasks, second.id, "my-app").result == 4


# -- 7. listing finds tasks made with kubectl ---------------------------------------------------

def test_list_finds_tasks_made_without_the_label(tasks: TaskClient, cluster: Cluster, namespace: str) -> None:
    made = tasks.send(f"{T}.add", "my-app", [1, 1])
    cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "metadata": {"name": "by-kubectl"},
        "spec": {"task": f"{T}.add", "app": "my-app", "args": [2, 2]}}))
    cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask",
        "metadata": {"name": "mislabelled", "labels": {"limetask.io/app": "my-app"}},
        "spec": {"task": f"{T}.add", "app": "other-app", "args": [3, 3]}}))
    assert {s.id for s in tasks.list(app_name="my-app")} == {made.id, "by-kubectl"}
    # A label that names another application than spec.app never shows the task to it.
    assert "mislabelled" not in {s.id for s in tasks.list(app_name="my-app")}
    cli = subprocess.run([sys.executable, "-m", "lime_task.cli", "list", "--app", "my-app", "-n", namespace,
                          f"--kubeconfig={cluster.kubeconfig}", "-o", "json"], capture_output=True, text=True,
                         timeout=60)
    assert {s["id"] for s in json.loads(cli.stdout)} == {made.id, "by-kubectl"}


# -- 8. numbers stay what they were -------------------------------------------------------------

@pytest.mark.parametrize("number", [2**63, 2**64 - 1, -(2**63) - 1, 1e19])
def test_numbers_the_api_would_change_are_refused_at_send(tasks: TaskClient, number: float) -> None:
    with pytest.raises(InvalidArgumentsError):
        tasks.send(f"{T}.add", "my-app", [number, 0])


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63), 2**53 + 1, 0.1, -1.5e18, 1e-300])
def test_numbers_at_the_edge_arrive_exactly(tasks: TaskClient, number: float) -> None:
    status = tasks.send(f"{T}.add", "my-app", [number, 0])
    final = final_of(tasks, status.id, "my-app")
    # Exact values; a whole float may come back as an int (the Kubernetes API keeps no difference).
    assert final.result == number
    if isinstance(number, int):
        assert type(final.result) is int


def test_numbers_beyond_64_bits_from_kubectl_fail(tasks: TaskClient, cluster: Cluster, namespace: str) -> None:
    cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=(
        '{"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": {"name": "big"}, '
        '"spec": {"task": "acme_solution.tasks.lime.add", "app": "my-app", "args": [18446744073709551615, 0]}}'))
    final = final_of(tasks, "big", "my-app")
    assert final.status == FAILURE and final.error is not None
    assert final.error.reason == "InvalidSpec" and "64-bit" in final.error.message


# -- already handled, kept so that they stay so -------------------------------------------------

@pytest.mark.parametrize("name", ["os.*", "a.#", "core.task.#", "x", "a..b", "1a.b", "a.b; rm -rf /"])
def test_bad_task_names_never_reach_the_cluster(tasks: TaskClient, name: str) -> None:
    with pytest.raises(InvalidTaskError):
        tasks.send(name, "my-app", [], check=False)


@pytest.mark.parametrize("name", ["os.*", "a.#", "x"])
def test_the_crd_refuses_bad_task_names(api_client: Any, namespace: str, name: str) -> None:
    with pytest.raises(client.ApiException) as refused:
        create_raw(api_client, namespace, "bad-name", {"task": name, "app": "my-app"})
    assert refused.value.status == 422


def test_a_result_too_large_is_never_a_truncated_success(tasks: TaskClient) -> None:
    final = final_of(tasks, tasks.send(f"{T}.huge", "my-app", [100000]).id, "my-app")
    assert final.status == FAILURE and final.error is not None and final.error.reason == "ResultTooLarge"


def test_client_refuses_deep_arguments_cleanly(tasks: TaskClient) -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    with pytest.raises(InvalidArgumentsError, match="deeper than 64"):
        tasks.send(f"{T}.add", "my-app", [value, 0])


def test_demo_passes_with_a_discovery_cache_from_before_the_crd(
        cluster: Cluster, crd: None, operator: Operator, tmp_path: Any) -> None:
    """`make demo`'s last step, `kubectl get lt`, failed with a discovery cache made before the CRD
    was installed (as on every freshly started cluster)."""
    import os
    import shutil

    home = tmp_path / "home"
    home.mkdir()
    # Only kubectl's cache moves to the new home; the cluster's binaries stay where they are.
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME")
           or os.path.expanduser("~/.cache")}
    env.pop("KUBECONFIG", None)
    subprocess.run([str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", "api-resources"], env=env,
                   check=True, capture_output=True)
    for servers in (home / ".kube" / "cache" / "discovery").iterdir():  # forget the CRD, as a stale cache
        groups = json.loads((servers / "servergroups.json").read_text())
        groups["groups"] = [g for g in groups["groups"] if g["name"] != GROUP]
        (servers / "servergroups.json").write_text(json.dumps(groups))
        shutil.rmtree(servers / GROUP, ignore_errors=True)
    # kubectl of 1.20 failed here; kubectl of 1.37 (aggregated discovery) looks again when a
    # resource is unknown to its cache. The demo must pass with the stale cache either way.
    subprocess.run([str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", "get", "lt"], env=env,
                   capture_output=True, text=True)
    operator.stop()  # the demo runs an operator of its own
    try:
        demo = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py")], env=env, capture_output=True,
                              text=True, timeout=240)
    finally:
        operator.start()
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "one SUCCESS with its result, one FAILURE with its error" in demo.stdout


# -- times the API server takes on create but its own rules cannot read ------------------------

@pytest.mark.parametrize("times", [
    {"eta": "2026-12-07t18:00:00z"}, {"eta": "2026-12-07T18:20:00+25:00"}, {"eta": "2026-12-07T18:20:00z"},
    {"expires": "2027-01-01t00:00:00z"},
])
def test_the_crd_refuses_times_its_rules_cannot_read(cluster: Cluster, namespace: str, crd: None,
                                                     times: dict[str, str]) -> None:
    """Once created, every status write of such a task failed the immutability rule (422), while
    its Job ran: its result was lost. The API server now refuses it at create."""
    name = f"eta-{uuid.uuid4().hex[:6]}"
    made = cluster.run_kubectl("apply", "-f", "-", namespace=namespace, check=False, input=json.dumps({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "metadata": {"name": name},
        "spec": {"task": f"{T}.add", "app": "app-b", "args": [2, 2], **times}}))
    assert made.returncode != 0 and "should match" in made.stderr, made
    field = next(iter(times))
    assert f"spec.{field}" in made.stderr
    assert cluster.run_kubectl("get", "lt", name, namespace=namespace, check=False).returncode != 0


def test_an_eta_years_ahead_from_kubectl_fails_at_once_without_a_job(
        tasks: TaskClient, cluster: Cluster, namespace: str) -> None:
    """The client and the HTTP endpoint refuse an eta more than a year ahead; so does the operator,
    for a task made with kubectl, rather than let it wait for ever."""
    cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTask", "metadata": {"name": "eta-9999"},
        "spec": {"task": f"{T}.add", "app": "app-b", "args": [2, 2], "eta": "9999-12-31T23:59:59Z"}}))
    final = final_of(tasks, "eta-9999", "app-b", timeout=30)
    assert final.status == FAILURE and final.error is not None and final.error.reason == "InvalidSpec"
    assert "eta 9999-12-31T23:59:59Z is over a year after the task was created" in final.error.message
    jobs = cluster.run_kubectl("get", "jobs", "-l", "limetask.io/task-id=eta-9999", "-o", "name",
                               namespace=namespace)
    assert jobs.stdout.strip() == ""


def test_an_absurd_eta_is_refused_by_the_client_with_its_own_words(tasks: TaskClient) -> None:
    import datetime as dt

    with pytest.raises(InvalidTaskError) as refused:
        tasks.send(f"{T}.add", "app-b", [1, 2], eta=dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc))
    assert str(refused.value).startswith("eta 0001-01-01T00:00:00Z is before 1970")
    assert "cluster" not in str(refused.value)
    assert tasks.list(app_name="app-b") == []
