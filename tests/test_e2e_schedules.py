"""LimeTaskSchedules end to end: runs at each tick, Forbid, Replace, downtime, two replicas.

The session's operator accepts seconds-level schedules (`@every Ns`, LIMETASK_SCHEDULE_SECONDS:
tests only), so that ticks come every few seconds rather than every minute.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from conftest import Cluster, Operator, start_replicas, wait_until
from kubernetes import client

from lime_task import FAILURE, SUCCESS

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
APP = "app-scheduled"


def make_schedule(api_client: Any, namespace: str, every: int, task: str = "add", args: list[Any] | None = None,
                  **spec: Any) -> str:
    name = f"s-{uuid.uuid4().hex[:6]}"
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules",
        {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskSchedule", "metadata": {"name": name},
         "spec": {"task": f"{T}.{task}", "app": APP, "args": args if args is not None else [1, 2],
                  "schedule": f"@every {every}s", **spec}})
    return name


def runs(api_client: Any, namespace: str, schedule: str) -> list[dict[str, Any]]:
    items = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetasks", label_selector=f"limetask.io/schedule={schedule}")["items"]
    return sorted(items, key=lambda r: int(r["metadata"]["labels"]["limetask.io/tick"]))


def schedule_status(api_client: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name).get("status") or {})


def state(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("state") or "PENDING")


def test_a_schedule_makes_one_run_per_tick(cluster: Cluster, api_client: Any, namespace: str,
                                           running_operator: Operator) -> None:
    name = make_schedule(api_client, namespace, 3, successfulRunsHistoryLimit=2)
    wait_until(lambda: sum(state(r) == SUCCESS for r in runs(api_client, namespace, name)) >= 2, timeout=60,
               message="two successful runs")
    found = runs(api_client, namespace, name)
    ticks = [int(r["metadata"]["labels"]["limetask.io/tick"]) for r in found]
    assert all(t % 3 == 0 for t in ticks) and len(set(ticks)) == len(ticks)
    assert all(r["metadata"]["name"] == f"{name}-{t}" for r, t in zip(found, ticks, strict=True))
    first = found[0]
    assert first["spec"]["task"] == f"{T}.add" and first["spec"]["args"] == [1, 2]
    assert first["metadata"]["ownerReferences"][0]["kind"] == "LimeTaskSchedule"
    assert (first.get("status") or {}).get("result") in (3, None)
    st = wait_until(lambda: (s := schedule_status(api_client, namespace, name)).get("lastSuccessfulTime") and s,
                    timeout=30, message="lastSuccessfulTime")
    assert st["lastScheduleTime"] and "activeCount" in st
    # The history limit: at most 2 finished successful runs stay.
    time.sleep(10)
    wait_until(lambda: sum(state(r) == SUCCESS for r in runs(api_client, namespace, name)) <= 2, timeout=20,
               message="the history limit")
    table = cluster.run_kubectl("get", "lts", name, namespace=namespace).stdout
    assert table.split()[:9] == ["NAME", "TASK", "APP", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST",
                                 "SCHEDULE"], table
    # Suspended: no new runs.
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name, {"spec": {"suspend": True}})
    time.sleep(1)
    before = {r["metadata"]["name"] for r in runs(api_client, namespace, name)}
    time.sleep(7)
    after = {r["metadata"]["name"] for r in runs(api_client, namespace, name)}
    assert not after - before, "a suspended schedule made runs"


def test_forbid_skips_ticks_while_a_run_is_active(api_client: Any, namespace: str,
                                                  running_operator: Operator) -> None:
    name = make_schedule(api_client, namespace, 3, task="sleep", args=[7], concurrencyPolicy="Forbid",
                         startingDeadlineSeconds=1)
    deadline = time.monotonic() + 25
    most_active, reasons = 0, set()
    while time.monotonic() < deadline:
        found = runs(api_client, namespace, name)
        most_active = max(most_active, sum(state(r) not in (SUCCESS, FAILURE) for r in found))
        reasons.add(schedule_status(api_client, namespace, name).get("lastSkipReason", ""))
        time.sleep(0.3)
    found = runs(api_client, namespace, name)
    assert most_active == 1, "two runs were active at once under Forbid"
    assert 2 <= len(found) <= 4, [r["metadata"]["name"] for r in found]  # 25 s of 7 s runs, ticks every 3 s
    st = schedule_status(api_client, namespace, name)
    # Each skipped tick counted once: about 25 s / 3 s ticks, less the runs made.
    assert 3 <= st.get("skipped", 0) <= 9, st
    assert any("still active" in r for r in reasons), reasons


def test_replace_cancels_the_active_run(api_client: Any, namespace: str, running_operator: Operator) -> None:
    name = make_schedule(api_client, namespace, 5, task="sleep", args=[60], concurrencyPolicy="Replace")
    wait_until(lambda: len(runs(api_client, namespace, name)) >= 2, timeout=30, message="a second run")
    first = wait_until(lambda: (r := runs(api_client, namespace, name)[0]) and state(r) == FAILURE and r,
                       timeout=30, message="the first run cancelled")
    assert first["status"]["error"]["reason"] == "Cancelled"
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name, {"spec": {"suspend": True}})


def test_the_operator_down_across_three_ticks_makes_one_catch_up(api_client: Any, namespace: str,
                                                                 running_operator: Operator) -> None:
    every = 4
    name = make_schedule(api_client, namespace, every)
    wait_until(lambda: runs(api_client, namespace, name), timeout=30, message="the first run")
    running_operator.stop()
    down_from = time.time()
    time.sleep(every * 3 + 2)  # three ticks (at least) pass
    down_until = time.time()
    running_operator.start()
    missed = [t for t in range(int(down_from) + 1, int(down_until)) if t % every == 0]
    assert len(missed) >= 3
    # The latest missed tick runs (once); the ones before it never do.
    wait_until(lambda: any(int(r["metadata"]["labels"]["limetask.io/tick"]) >= missed[-1]
                           for r in runs(api_client, namespace, name)), timeout=30, message="the catch-up run")
    ticks = {int(r["metadata"]["labels"]["limetask.io/tick"]) for r in runs(api_client, namespace, name)}
    assert not ticks & set(missed[:-1]), f"a storm: runs for {sorted(ticks & set(missed))}"
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name, {"spec": {"suspend": True}})


def test_two_replicas_make_one_run_per_tick(cluster: Cluster, operator: Operator, api_client: Any, namespace: str,
                                            tmp_path: Any) -> None:
    """Two operators with leader election; the leader is killed midway: every tick has one run, and
    no tick but the one (at most) that fell in the takeover is left without one."""
    every = 3
    operator.stop()
    replicas: list[Operator] = []
    try:
        start_replicas(operator, tmp_path, replicas=replicas)
        name = make_schedule(api_client, namespace, every)
        wait_until(lambda: len(runs(api_client, namespace, name)) >= 3, timeout=60, message="three runs")
        replicas[0].kill(9)
        killed_at = time.time()
        wait_until(lambda: "replica-b leads" in replicas[1].log_path.read_text(), timeout=60,
                   message="replica-b to take over")
        wait_until(lambda: any(int(r["metadata"]["labels"]["limetask.io/tick"]) > time.time() - every
                               for r in runs(api_client, namespace, name)), timeout=30, message="runs again")
        time.sleep(every * 2)
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            "limetask.io", "v1alpha1", namespace, "limetaskschedules", name, {"spec": {"suspend": True}})
        time.sleep(1)
        found = runs(api_client, namespace, name)
        names = [r["metadata"]["name"] for r in found]
        ticks = [int(r["metadata"]["labels"]["limetask.io/tick"]) for r in found]
        assert len(names) == len(set(names)) == len(set(ticks))
        gaps = [(a, b) for a, b in zip(ticks, ticks[1:], strict=False) if b - a != every]
        # The takeover (a lease of 15 s) may skip ticks: then one catch-up, one gap in all.
        assert len(gaps) <= 1, f"ticks {ticks}"
        if gaps:
            assert gaps[0][0] <= killed_at + 1, gaps
    finally:
        for replica in replicas:
            replica.stop()
        operator.start()


def test_runs_are_listed_with_their_schedule(api_client: Any, namespace: str, running_operator: Operator,
                                             cluster: Cluster) -> None:
    name = make_schedule(api_client, namespace, 3)
    wait_until(lambda: runs(api_client, namespace, name), timeout=30, message="a run")
    listed = cluster.run_kubectl("get", "lt", "-l", f"limetask.io/schedule={name}", "-o", "json", namespace=namespace)
    assert json.loads(listed.stdout)["items"]
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name)
    # Its runs go with it (owner references), as a CronJob's Jobs do.
    wait_until(lambda: not runs(api_client, namespace, name), timeout=60, message="the runs to go")


MODULE = '''
from lime_task.schedule import CronTab, ScheduledTask, TaskSession

def register_scheduled_tasks():
    return [
        ScheduledTask(task="acme_solution.tasks.lime.whoami", args=["nightly"], schedule="@every 3s",
                      session=TaskSession(user_name="integration-user", language="sv"), name=None),
        {adder}
    ]
'''
ADDER = 'ScheduledTask(task="acme_solution.tasks.lime.add", args=[1, 2], schedule=CronTab(hour=3, minute=0)),'


def test_a_solutions_scheduled_tasks_become_schedules_for_each_application(
        cluster: Cluster, namespace: str, running_operator: Operator, api_client: Any, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    module = f"scheduled_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(MODULE.replace("{adder}", ADDER))
    env = {**os.environ, "LIMETASK_KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": str(tmp_path),
           "LIMETASK_SCHEDULE_SECONDS": "true"}

    def cli(*args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "lime_task.cli", "schedules", *args, "-n", namespace],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == code, done.stderr
        return done.stdout

    apps = ["-a", "app-one", "-a", "app-two"]
    created = cli("apply", "-m", module, *apps)
    assert created.count("created") == 4, created
    assert cli("apply", "-m", module, *apps).count("unchanged") == 4
    listed = json.loads(cli("list", "-a", "app-one", "-o", "json"))
    assert sorted(s["task"] for s in listed) == ["acme_solution.tasks.lime.add", "acme_solution.tasks.lime.whoami"]
    whoami = next(s["name"] for s in listed if s["task"].endswith("whoami"))
    # Each run has the schedule's session: the task says whom it runs as.
    wait_until(lambda: any(state(r) == SUCCESS for r in runs(api_client, namespace, whoami)), timeout=60,
               message="a run of the session's schedule")
    done = next(r for r in runs(api_client, namespace, whoami) if state(r) == SUCCESS)
    assert done["status"]["result"] == "app-one as integration-user (sv): nightly"
    shown = json.loads(cli("runs", whoami, "-o", "json"))
    assert shown and all(r["app"] == "app-one" for r in shown)
    # The code drops a scheduled task: --prune deletes its schedules, for both applications.
    (tmp_path / f"{module}.py").write_text(MODULE.replace("{adder}", ""))
    pruned = cli("apply", "-m", module, *apps, "--prune")
    assert pruned.count("deleted") == 2 and pruned.count("unchanged") == 2, pruned
    # The rendered YAML is what kubectl applies (GitOps).
    rendered = cli("render", "-m", module, *apps)
    applied = cluster.run_kubectl("apply", "-f", "-", namespace=namespace, input=rendered)
    assert applied.stdout.count("limetaskschedule.limetask.io") == 2
    assert cli("apply", "-m", module, "--prune", code=2) == ""  # no application named: one line, exit 2
    for s in json.loads(cli("list", "-o", "json")):
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            "limetask.io", "v1alpha1", namespace, "limetaskschedules", s["name"], {"spec": {"suspend": True}})


def test_the_http_endpoint_shows_an_applications_schedules_and_runs(
        cluster: Cluster, namespace: str, running_operator: Operator, api_client: Any) -> None:
    from fastapi.testclient import TestClient

    from lime_task import TaskClient
    from lime_task.web import create_app

    name = make_schedule(api_client, namespace, 3)
    wait_until(lambda: runs(api_client, namespace, name), timeout=30, message="a run")
    tokens = {APP: "t-" + uuid.uuid4().hex, "other-app": "t-" + uuid.uuid4().hex}
    http = TestClient(create_app(client=TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url=""),
                                 tokens=tokens, imports=[], archive=None))
    mine = {"Authorization": f"Bearer {tokens[APP]}"}
    listed = http.get(f"/v1/apps/{APP}/schedules", headers=mine)
    assert listed.status_code == 200 and [s["name"] for s in listed.json()] == [name]
    assert listed.json()[0]["schedule"] == "@every 3s" and listed.json()[0]["concurrency_policy"] == "Allow"
    shown = http.get(f"/v1/apps/{APP}/schedules/{name}/runs", headers=mine)
    assert shown.status_code == 200 and shown.json() and all(r["id"].startswith(name) for r in shown.json())
    theirs = {"Authorization": f"Bearer {tokens['other-app']}"}
    assert http.get("/v1/apps/other-app/schedules", headers=theirs).json() == []
    assert http.get(f"/v1/apps/other-app/schedules/{name}/runs", headers=theirs).status_code == 404
    assert http.get(f"/v1/apps/{APP}/schedules", headers=theirs).status_code == 401
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name, {"spec": {"suspend": True}})
