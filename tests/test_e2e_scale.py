"""The operator at scale: many watched namespaces."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from conftest import Cluster, Operator, wait_until

from lime_task import SUCCESS, TaskClient

pytestmark = [pytest.mark.e2e]

T = "acme_solution.tasks.lime"


def ready_for_pods(core: Any, namespace: str) -> None:
    """Pods need the namespace's default service account: wait until a dry-run pod is admitted."""
    from kubernetes.client.rest import ApiException

    probe = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "none"}]}}

    def admitted() -> bool:
        try:
            core.create_namespaced_pod(namespace, probe, dry_run="All")
            return True
        except ApiException:
            return False

    wait_until(admitted, timeout=30, message=f"namespace {namespace} to admit pods")


def test_thirty_watched_namespaces_leave_api_calls_their_connections(
        cluster: Cluster, api_client: Any, running_operator: Operator, tmp_path: Any) -> None:
    """90 watches (three per namespace) are more than the 64 connections of API requests:
    tasks in the first and the last namespace must still finish in a normal time."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    run = uuid.uuid4().hex[:6]
    namespaces = [f"t-scale-{run}-{i:02d}" for i in range(30)]
    app = f"app-{run}"
    running_operator.stop()
    operator = Operator(cluster, tmp_path, args=tuple(a for ns in namespaces for a in ("--namespace", ns)))
    try:
        for ns in namespaces:
            core.create_namespace({"metadata": {"name": ns, "labels": {"limetask.io/test": "true"}}})
        for ns in (namespaces[-1], namespaces[0]):
            ready_for_pods(core, ns)
        operator.start()
        started = time.monotonic()
        clients = [TaskClient(kubeconfig=cluster.kubeconfig, namespace=ns) for ns in (namespaces[-1], namespaces[0])]
        sent = [(c, c.send(f"{T}.add", app, [i, 1])) for i, c in enumerate(clients)]
        for c, s in sent:
            final = c.wait(s.id, app, timeout=60)
            assert final.status == SUCCESS, final
        assert time.monotonic() - started < 60
        assert operator.alive(), operator.log_tail()
        failed_watches = re.findall(r"watching \w+ in \S+: .*", operator.log_path.read_text(errors="replace"))
        assert failed_watches == []
    finally:
        operator.stop()
        for ns in namespaces:
            try:
                core.delete_namespace(ns)
            except ApiException:
                pass
        running_operator.start()
