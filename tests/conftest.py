"""Shared fixtures: a ready Kubernetes cluster and a fresh namespace per test.

The cluster is the local control plane (devtools/cluster), started once per session or
reused when it already runs. Set `LIMETASK_KUBECONFIG` to run the same suite against any
other cluster (kind, for example); the current kubeconfig is not used implicitly, so a test
run never lands on a cluster by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devtools" / "cluster"))

import localcluster  # noqa: E402


@dataclass
class Cluster:
    kubeconfig: Path
    local: bool  # the local control plane (node agent faults available)
    kubectl: Path

    def run_kubectl(self, *args: str, namespace: str | None = None, check: bool = True,
                    input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(self.kubectl), f"--kubeconfig={self.kubeconfig}"]
        if namespace:
            argv.append(f"--namespace={namespace}")
        return subprocess.run([*argv, *args], check=check, text=True, input=input,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    external = os.environ.get("LIMETASK_KUBECONFIG")
    if external:
        import shutil
        kubectl = shutil.which("kubectl")
        if not kubectl:
            pytest.fail("LIMETASK_KUBECONFIG is set but no kubectl is on PATH")
        return Cluster(Path(external), local=False, kubectl=Path(kubectl))
    try:
        kubeconfig = localcluster.up()
    except localcluster.ClusterError as exc:
        pytest.fail(f"the local control plane did not start: {exc}")
    return Cluster(kubeconfig, local=True, kubectl=localcluster.kubectl_path())


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


@pytest.fixture
def namespace(cluster: Cluster, api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (with everything in it)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    core.create_namespace({"metadata": {"name": name, "labels": {"limetask.io/test": "true"}}})
    # Pods need the namespace's default service account, which a controller creates.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException:
            time.sleep(0.1)
    yield name
    try:
        core.delete_namespace(name)
    except ApiException:
        pass


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2,
               message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `message` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")
