"""Lime's installation defaults on a real cluster: the default queue's name, queues that exist
before their LimeTaskQueue (the chart's asap and background), and schedules turned off.

Each test stops the session operator and runs one with the settings the chart would give it
(tests/test_chart.py renders those with real Helm), then hands back."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, Operator, wait_until
from kubernetes import client

from lime_task import SUCCESS, TaskClient
from lime_task.resource import GROUP, QUEUE_PLURAL, VERSION

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"


@pytest.fixture
def configured(running_operator: Operator, tmp_path: Path) -> Iterator[Any]:
    """start(env): an operator like the session's, with these settings too, in its place."""
    started: list[Operator] = []

    def start(env: dict[str, str]) -> Operator:
        running_operator.stop()
        op = Operator(running_operator.cluster, tmp_path, extra_env={**running_operator.extra_env, **env},
                      args=tuple(a for a in running_operator.args if not a.startswith("--liveness")))
        started.append(op)
        op.start()
        return op

    yield start
    for op in started:
        op.stop()
    running_operator.start()


@pytest.fixture
def made_queues(api_client: Any) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        try:
            client.CustomObjectsApi(api_client).delete_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, name)
        except client.ApiException:
            pass


def test_a_task_without_qos_goes_to_the_installations_default_queue_and_open_queues_run_at_once(
        cluster: Cluster, api_client: Any, namespace: str, configured: Any, made_queues: list[str]) -> None:
    suffix = uuid.uuid4().hex[:6]
    default, open_queue = f"standard-{suffix}", f"asap-{suffix}"
    configured({"LIMETASK_DEFAULT_QUEUE": default, "LIMETASK_OPEN_QUEUES": json.dumps([open_queue])})
    api = client.CustomObjectsApi(api_client)
    api.create_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": {"name": default},
        "spec": {"maxRunning": 0}})  # paused: a task of it waits
    made_queues.append(default)
    tasks = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
    waiting = tasks.send(f"{T}.add", "my-app", [1, 2])
    queued = wait_until(lambda: (s := tasks.get_status(waiting.id, "my-app")).queued and s, timeout=60,
                        message="the task without qos to wait in the default queue")
    assert queued.queue == default and f"queue {default} is paused" in (queued.queue_message or "")
    # A queue of the open ones has no LimeTaskQueue: its task runs, unlimited, at once.
    quick = tasks.send(f"{T}.add", "my-app", [2, 2], qos=open_queue)
    assert tasks.wait(quick.id, "my-app", timeout=120).result == 4
    assert tasks.get_status(waiting.id, "my-app").queued
    api.patch_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, default, {"spec": {"maxRunning": 1}})
    assert tasks.wait(waiting.id, "my-app", timeout=120).status == SUCCESS


def test_scheduled_tasks_turned_off_make_no_runs_and_say_why(cluster: Cluster, api_client: Any, namespace: str,
                                                              configured: Any) -> None:
    configured({"LIMETASK_ENABLE_SCHEDULED_TASKS": "false", "LIMETASK_SCHEDULE_SECONDS": "true"})
    api = client.CustomObjectsApi(api_client)
    name = f"off-{uuid.uuid4().hex[:6]}"
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "limetaskschedules", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskSchedule", "metadata": {"name": name},
        "spec": {"task": f"{T}.add", "app": "my-app", "schedule": "@every 2s", "args": [1, 1]}})

    def ready() -> dict[str, Any] | None:
        st = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "limetaskschedules", name).get("status") or {}
        return next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)

    condition = wait_until(ready, timeout=60, message="the schedule's Ready condition")
    assert (condition["status"], condition["reason"]) == ("False", "ScheduledTasksDisabled"), condition
    time.sleep(6)  # three ticks of the schedule, which an operator with schedules on would have run
    runs = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "limetasks",
                                             label_selector=f"limetask.io/schedule={name}")["items"]
    assert runs == []
