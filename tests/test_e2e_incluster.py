"""The operator as platform teams run it: installed with the chart as a real pod from its image,
on the local cluster's real node, with tasks running in the solution's runner image.

The session's other end-to-end tests run the operator as a process here (they kill it,
restart it, run a second replica); this one proves the image, the chart's pod settings
under Pod Security "restricted", the in-cluster credentials and the paths from the pod to
the broker and to the archive (PostgreSQL: migrations, writes, deletes from its image).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import localcluster
import pytest
from conftest import ACME_IMAGE, CHART, OPERATOR_IMAGE, RESTRICTED, Cluster, Operator, archive_rows, wait_until
from kubernetes import client
from test_e2e_events import Collector

from lime_task import SUCCESS, TaskClient

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
# A broker user that may log in from other hosts (RabbitMQ's guest may not): see broker-up.sh.
POD_BROKER_USER = "limetask-pods:limetask-pods"


@pytest.fixture
def release(local: Cluster, api_client: Any, namespace: str, operator: Operator,
            archive_db: str) -> Iterator[dict[str, str]]:
    """The chart installed with the operator image, watching the test's namespace. The session's
    operator process watches every namespace, so it steps aside meanwhile."""
    import helm_python as helm

    core = client.CoreV1Api(api_client)
    name = f"ic-{uuid.uuid4().hex[:6]}"
    release_ns = f"limetask-{name}"
    core.create_namespace({"metadata": {"name": release_ns, "labels": RESTRICTED}})
    api_ip = json.loads((local.kubeconfig.parent / "cluster.json").read_text())["api_ip"]
    values = {
        "crds": {"install": False},
        "watch": {"scope": "namespaces", "namespaces": [namespace]},
        "operator": {"image": dict(zip(("repository", "tag"), OPERATOR_IMAGE.rsplit(":", 1), strict=True))
                     | {"pullPolicy": "Never"}},
        "runner": {"image": dict(zip(("repository", "tag"), ACME_IMAGE.rsplit(":", 1), strict=True)),
                   "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
        # The broker runs on this machine; pods reach it at the node's bridge address.
        "broker": {"url": f"amqp://{POD_BROKER_USER}@{api_ip}:5672/"},
        # So does PostgreSQL (devtools/postgres-up.sh lets the pods' range in).
        "archive": {"url": archive_db.replace("@127.0.0.1:", f"@{api_ip}:"), "keepInClusterSeconds": 1},
    }
    operator.stop()
    try:
        with helm.Config(kubeconfig_path=local.kubeconfig, namespace=release_ns) as config:
            config.install(CHART, name, values, namespace=release_ns, timeout=180)
            try:
                yield {"name": name, "namespace": release_ns, "deployment": f"{name}-limetask"}
            finally:
                config.uninstall(name, ignore_not_found=True, timeout=60)
                local.run_kubectl("delete", "clusterroles,clusterrolebindings", "-l",
                                  f"app.kubernetes.io/instance={name}", "--ignore-not-found", check=False)
                local.run_kubectl("delete", "namespace", release_ns, "--wait=false", check=False)
    finally:
        operator.start()


def operator_pods(core: client.CoreV1Api, release: dict[str, str]) -> list[Any]:
    return [p for p in core.list_namespaced_pod(
        release["namespace"], label_selector=f"app.kubernetes.io/instance={release['name']}").items
        if p.metadata.deletion_timestamp is None]


def ready_pod(core: client.CoreV1Api, release: dict[str, str], not_named: str | None = None) -> Any:
    def check() -> Any:
        for pod in operator_pods(core, release):
            statuses = pod.status.container_statuses or []
            if pod.metadata.name != not_named and statuses and statuses[0].ready:
                return pod
        return None
    return wait_until(check, timeout=120, message="a ready operator pod")


def test_the_chart_runs_the_operator_image_as_a_pod(local: Cluster, api_client: Any, namespace: str,
                                                    release: dict[str, str], archive_db: str) -> None:
    core = client.CoreV1Api(api_client)
    pod = ready_pod(core, release)
    assert pod.spec.node_name == localcluster.NODE_NAME
    assert pod.spec.containers[0].image == OPERATOR_IMAGE
    assert pod.status.container_statuses[0].restart_count == 0

    tasks = TaskClient(kubeconfig=local.kubeconfig, namespace=namespace)
    app = f"app-{uuid.uuid4().hex[:6]}"
    collector = Collector(app)
    try:
        status = tasks.send(f"{T}.get_lime_company", app, [1001, ["name"]])
        final = tasks.wait(status.id, app, timeout=120)
        assert final.status == SUCCESS, final
        assert final.result == f"company 1001 of {app}: updated 1 properties on 50 deals"
        task_pod = core.list_namespaced_pod(namespace, label_selector=f"limetask.io/task-id={status.id}").items[0]
        assert task_pod.spec.containers[0].image == ACME_IMAGE
        wait_until(lambda: f"{status.id}.SUCCESS" in collector.ids(), timeout=60, message="the event from the pod")
        # Then archived from the pod (its image migrates the schema and writes), and gone from etcd.
        wait_until(lambda: [r[0] for r in archive_rows(archive_db, namespace)] == [status.id], timeout=60,
                   message="the task in the archive")
        wait_until(lambda: local.run_kubectl("get", "lt", status.id, namespace=namespace, check=False).returncode != 0,
                   timeout=60, message="the archived task to leave the cluster")

        # The Deployment replaces a lost operator pod, and the new one carries on.
        core.delete_namespaced_pod(pod.metadata.name, release["namespace"], grace_period_seconds=0)
        second = ready_pod(core, release, not_named=pod.metadata.name)
        assert second.metadata.name != pod.metadata.name
        again = tasks.send(f"{T}.add", app, [2, 3])
        assert tasks.wait(again.id, app, timeout=120).result == 5
        wait_until(lambda: f"{again.id}.SUCCESS" in collector.ids(), timeout=60, message="the second event")
    finally:
        collector.stop()
