"""LimeTaskSchedules end to end: runs at each tick, Forbid, Replace, downtime, two replicas, a
deleted schedule, a paused queue, and history with the archive.

The session's operator accepts seconds-level schedules (`@every Ns`, LIMETASK_SCHEDULE_SECONDS:
tests only), so that ticks come every few seconds rather than every minute.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from conftest import Cluster, Operator, archive_rows, archive_url, broker_url, start_replicas, wait_until
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


def suspend(api_client: Any, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name, {"spec": {"suspend": True}})


def schedule_uid(api_client: Any, namespace: str, name: str) -> str:
    return str(client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name)["metadata"]["uid"])


def test_a_schedule_makes_one_run_per_tick(cluster: Cluster, api_client: Any, namespace: str,
                                           running_operator: Operator) -> None:
    every = 5  # Allow: a run must start before the next tick (its expiry)
    name = make_schedule(api_client, namespace, every, successfulRunsHistoryLimit=2)
    wait_until(lambda: sum(state(r) == SUCCESS for r in runs(api_client, namespace, name)) >= 2, timeout=60,
               message="two successful runs")
    found = runs(api_client, namespace, name)
    ticks = [int(r["metadata"]["labels"]["limetask.io/tick"]) for r in found]
    assert all(t % every == 0 for t in ticks) and len(set(ticks)) == len(ticks)
    assert all(r["metadata"]["name"] == f"{name}-{t}" for r, t in zip(found, ticks, strict=True))
    first = found[0]
    assert first["spec"]["task"] == f"{T}.add" and first["spec"]["args"] == [1, 2]
    # Made for this schedule (its UID), not owned by it, and expiring at the next tick.
    assert first["metadata"]["labels"]["limetask.io/schedule-uid"] == schedule_uid(api_client, namespace, name)
    assert not first["metadata"].get("ownerReferences")
    assert first["spec"]["expires"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ticks[0] + every)))
    assert (first.get("status") or {}).get("result") in (3, None)
    st = wait_until(lambda: (s := schedule_status(api_client, namespace, name)).get("lastSuccessfulTime") and s,
                    timeout=30, message="lastSuccessfulTime")
    assert st["lastScheduleTime"] and "activeCount" in st
    # The history limit: at most 2 finished successful runs stay.
    time.sleep(10)
    wait_until(lambda: sum(state(r) == SUCCESS for r in runs(api_client, namespace, name)) <= 2, timeout=20,
               message="the history limit")
    table = cluster.run_kubectl("get", "lts", name, namespace=namespace).stdout
    assert table.split()[:10] == ["NAME", "TASK", "APP", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST",
                                  "SCHEDULE", "READY"], table
    assert table.splitlines()[1].split()[-2] == "True", table
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


def test_deleting_a_schedule_lets_its_running_run_finish_and_announce_it(
        api_client: Any, namespace: str, running_operator: Operator) -> None:
    """No owner reference: a deleted schedule's run in progress ends as a task does, with its
    event, and nothing of it leaves the cluster with the schedule."""
    name = make_schedule(api_client, namespace, 3, task="sleep", args=[6], concurrencyPolicy="Forbid")
    started = wait_until(lambda: next((r for r in runs(api_client, namespace, name) if state(r) == "STARTED"), None),
                         timeout=60, message="a run to start")
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules", name)
    wait_until(lambda: not [s for s in client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules")["items"] if s["metadata"]["name"] == name],
        timeout=30, message="the schedule to go")
    made = {r["metadata"]["name"] for r in runs(api_client, namespace, name)}
    done = wait_until(lambda: next((r for r in runs(api_client, namespace, name)
                                    if r["metadata"]["name"] == started["metadata"]["name"] and state(r) == SUCCESS
                                    and (r["status"].get("event") or {}).get("confirmed")), None),
                      timeout=60, message="the deleted schedule's run to finish, its event confirmed")
    assert done["status"]["result"] == "slept 6s" and done["status"]["attempts"] == 1
    time.sleep(4)  # a tick or more: the deleted schedule makes no run
    assert {r["metadata"]["name"] for r in runs(api_client, namespace, name)} == made


def test_an_invalid_schedule_says_so_and_makes_no_runs(api_client: Any, namespace: str, cluster: Cluster,
                                                       running_operator: Operator) -> None:
    name = f"s-{uuid.uuid4().hex[:6]}"
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "limetask.io", "v1alpha1", namespace, "limetaskschedules",
        {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskSchedule", "metadata": {"name": name},
         "spec": {"task": f"{T}.add", "app": APP, "args": [1, 2], "schedule": "*/2 * * * * *"}})
    st = wait_until(lambda: (s := schedule_status(api_client, namespace, name)).get("problem") and s, timeout=30,
                    message="the problem")
    assert "it has 6 fields, and a schedule takes 5" in st["problem"]
    table = cluster.run_kubectl("get", "lts", name, "-o", "wide", namespace=namespace).stdout
    assert "READY" in table and " False " in table and "6 fields" in table, table
    time.sleep(3)
    assert runs(api_client, namespace, name) == []


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
    from lime_task.server.app import create_app

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


@pytest.fixture
def paused_queue(api_client: Any) -> Any:
    """A queue that starts nothing (maxRunning 0), deleted afterwards."""
    name = f"paused-{uuid.uuid4().hex[:6]}"
    api = client.CustomObjectsApi(api_client)
    api.create_cluster_custom_object("limetask.io", "v1alpha1", "limetaskqueues", {
        "apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskQueue", "metadata": {"name": name},
        "spec": {"maxRunning": 0}})
    yield name
    api.delete_cluster_custom_object("limetask.io", "v1alpha1", "limetaskqueues", name)


def test_runs_never_pile_up_behind_a_paused_queue(api_client: Any, namespace: str, paused_queue: str,
                                                  running_operator: Operator) -> None:
    """Allow: a run that has not started by the next tick expires. Replace: the waiting run is
    never cancelled for a new one that would only wait behind it; it stands for the ticks."""
    allowed = make_schedule(api_client, namespace, 3, queue=paused_queue, failedRunsHistoryLimit=20)
    replaced = make_schedule(api_client, namespace, 3, queue=paused_queue, concurrencyPolicy="Replace")
    most_waiting = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        most_waiting = max(most_waiting, sum(state(r) == "PENDING" for r in runs(api_client, namespace, allowed)))
        time.sleep(0.5)
    suspend(api_client, namespace, allowed)
    suspend(api_client, namespace, replaced)
    found = wait_until(lambda: (f := runs(api_client, namespace, allowed)) and all(state(r) == FAILURE
                                                                                    for r in f[:-1]) and f,
                       timeout=30, message="the earlier runs to expire")
    assert len(found) >= 4, [r["metadata"]["name"] for r in found]
    assert {r["status"]["error"]["reason"] for r in found[:-1]} == {"Expired"}
    assert most_waiting <= 2  # the one waiting, and the next made as it expires
    [waiting] = runs(api_client, namespace, replaced)
    assert state(waiting) == "PENDING" and not (waiting["metadata"].get("annotations") or {}).get(
        "limetask.io/cancel")
    st = schedule_status(api_client, namespace, replaced)
    assert st["skipped"] >= 3 and "has not started yet" in st["lastSkipReason"], st
    assert st["active"] == [{"name": waiting["metadata"]["name"]}]


# -- history with the archive (last in this module: it stops the session operator) ----------------

@pytest.fixture
def archiving_operator(cluster: Cluster, operator: Operator, archive_db: str, archive_proxy: Any,
                       broker_proxy: Any, tmp_path: Any) -> Any:
    """The session operator makes way for one with the archive (through a proxy a test switches
    off) and a keep time of 2 s; it is back afterwards."""
    operator.stop()
    archived = Operator(cluster, tmp_path, extra_env={
        "LIMETASK_BROKER_URL": broker_url(broker_proxy.port), "LIMETASK_EVENT_RETRY_MAX_SECONDS": "2",
        "LIMETASK_ARCHIVE_URL": archive_url(archive_proxy.port, archive_db.rsplit("/", 1)[1]),
        "LIMETASK_ARCHIVE_KEEP_SECONDS": "2", "LIMETASK_SCHEDULE_SECONDS": "true"})
    archived.start()
    yield archived
    archived.stop()
    archive_proxy.enable()
    operator.start()


@pytest.mark.archive
def test_history_limit_zero_leaves_nothing_unarchived(cluster: Cluster, api_client: Any, namespace: str,
                                                      archiving_operator: Operator, archive_db: str,
                                                      archive_proxy: Any) -> None:
    """With the limits at 0, each run leaves as soon as it may: once archived, never before, not
    even while the archive is down. The endpoint lists the archived runs with the live ones."""
    from fastapi.testclient import TestClient

    from lime_task import TaskClient
    from lime_task.server.app import create_app

    name = make_schedule(api_client, namespace, 3, successfulRunsHistoryLimit=0, failedRunsHistoryLimit=0,
                         concurrencyPolicy="Forbid")
    seen: set[str] = set()

    def finished() -> list[str]:
        found = runs(api_client, namespace, name)
        seen.update(r["metadata"]["name"] for r in found)
        return [r["metadata"]["name"] for r in found if state(r) in (SUCCESS, FAILURE)]

    def archived() -> set[str]:
        return {row[0] for row in archive_rows(archive_db, namespace)}

    # With the archive up: each run is archived, then leaves.
    wait_until(lambda: finished() is not None and len(seen & archived()) >= 2, timeout=90,
               message="two runs archived")
    archive_proxy.disable()
    try:
        # While the archive is down, finished runs stay in the cluster: none is lost.
        wait_until(lambda: len(set(finished()) - archived()) >= 2, timeout=90,
                   message="finished runs kept during the outage")
        kept = set(finished()) - archived()
        time.sleep(4)  # ticks, passes of the scheduler, and the archive's keep time go by
        assert kept <= set(finished())
    finally:
        archive_proxy.enable()
    suspend(api_client, namespace, name)
    wait_until(lambda: not finished() and not runs(api_client, namespace, name) and seen <= archived(),
               timeout=120, message="every run archived, then gone")
    rows = {row[0]: row for row in archive_rows(archive_db, namespace)}
    assert kept <= set(rows) and {rows[n][2] for n in seen} == {SUCCESS} and {rows[n][3] for n in seen} == {APP}
    # The endpoint lists a schedule's runs from the archive too.
    token = "t-" + uuid.uuid4().hex
    http = TestClient(create_app(client=TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url=""),
                                 tokens={APP: token}, imports=[], archive=archive_db))
    listed = http.get(f"/v1/apps/{APP}/schedules/{name}/runs?limit=1000", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200, listed.text
    assert runs(api_client, namespace, name) == []  # suspended, and every run gone: all of them archived
    assert seen <= {r["id"] for r in listed.json()} and all(r["archived"] for r in listed.json())
