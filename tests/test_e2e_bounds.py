"""Bounds on what the cluster holds, on the real cluster: a ResourceQuota on LimeTasks (as the
chart's tasks.quota makes it), past which send_task raises QuotaExceededError naming the quota and
how full the namespace is; and the size of a finished LimeTask, which README's "Bounds" counts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Cluster, wait_until

from lime_task import SUCCESS, QuotaExceededError, TaskClient

pytestmark = [pytest.mark.e2e]

T = "acme_solution.tasks.lime"


def test_send_task_past_the_namespaces_quota_is_a_clear_error(tasks: TaskClient, cluster: Cluster, namespace: str,
                                                              api_client: Any) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    core.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "limetasks"}, "spec": {"hard": {"count/limetasks.limetask.io": "2"}}})
    # A quota applies once its status says what it holds. The local cluster runs no resource-quota
    # controller (devtools/cluster/localcluster.py), so the test writes the count it would write
    # for a quota it has just found; the API server's admission keeps it from there on.
    count = "count/limetasks.limetask.io"
    core.patch_namespaced_resource_quota_status("limetasks", namespace, {
        "status": {"hard": {count: "2"}, "used": {count: "0"}}})
    first = [tasks.send(f"{T}.add", "quota-app", [i, 1]) for i in range(2)]
    with pytest.raises(QuotaExceededError) as refused:
        tasks.send(f"{T}.add", "quota-app", [3, 1])
    error = refused.value
    assert (error.quota, error.namespace, error.used, error.limit) == ("limetasks", namespace, 2, 2)
    assert f"namespace {namespace!r} is at its quota (ResourceQuota 'limetasks': 2 of 2 LimeTasks)" in str(error)
    assert "Try again later" in str(error)
    # Nothing was made of the refused call, and the two tasks before it run as ever.
    listed = cluster.run_kubectl("get", "lt", "-o", "name", namespace=namespace).stdout.split()
    assert sorted(listed) == sorted(f"limetask.limetask.io/{s.id}" for s in first)


# README, "Bounds": a typical finished LimeTask measured 2,180 bytes as stored (JSON, managedFields
# included); the table counts 2.5 KB with its key and etcd's own overhead.
README_BYTES = 2500


def test_a_finished_task_takes_no_more_than_the_readme_counts(tasks: TaskClient, cluster: Cluster,
                                                              namespace: str) -> None:
    sent = tasks.send(f"{T}.add", "size-app", [2, 3])
    assert tasks.wait(sent.id, "size-app", timeout=120).status == SUCCESS

    def settled() -> Any:
        body = json.loads(cluster.run_kubectl("get", "lt", sent.id, "-o", "json", "--show-managed-fields",
                                              namespace=namespace).stdout)
        return (body.get("status") or {}).get("event", {}).get("confirmed") and body

    body = wait_until(settled, timeout=60, message="the event confirmed")
    stored = len(json.dumps(body, separators=(",", ":")).encode())  # as the API server keeps it
    managed = len(json.dumps(body["metadata"].get("managedFields") or [], separators=(",", ":")).encode())
    print(f"a finished LimeTask: {stored} bytes, of which managedFields {managed}")
    assert stored <= README_BYTES, (stored, managed)
