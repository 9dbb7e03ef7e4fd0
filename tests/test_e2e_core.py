"""The operator core under conditions production meets: re-created names, kept Jobs, races."""

from __future__ import annotations

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
