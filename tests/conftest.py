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
import tempfile
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
    # kubectl's discovery cache, dropped once the CRD is installed (or `lt` is unknown to it).
    cache_dir: Path = Path(tempfile.mkdtemp(prefix="limetask-kubectl-cache-"))

    def run_kubectl(self, *args: str, namespace: str | None = None, check: bool = True,
                    input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}"]
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
    # Pods need the namespace's default service account (and, before 1.24, its token), which
    # controllers create: wait until a dry-run pod is admitted.
    probe = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "none"}]}}
    deadline = time.monotonic() + 30
    while True:
        try:
            core.create_namespaced_pod(name, probe, dry_run="All")
            break
        except ApiException:
            if time.monotonic() > deadline:
                raise
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


class Operator:
    """The operator as a separate process, as it runs in production (kill and restart it at will)."""

    def __init__(self, cluster: Cluster, log_dir: Path, extra_env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ("--all-namespaces",)) -> None:
        self.cluster = cluster
        self.log_path = log_dir / "operator.log"
        self.extra_env = extra_env or {}
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update({"LIMETASK_KUBECONFIG": str(self.cluster.kubeconfig), "PYTHONUNBUFFERED": "1",
                    "LIMETASK_METRICS_PORT": "0"})
        env.update(self.extra_env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "limetask_operator", *self.args],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        wait_until(lambda: "Initial authentication has finished" in self.log_path.read_text(errors="replace")
                   or self.proc.poll() is not None, timeout=30, message="the operator to start")
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited at start:\n{self.log_tail()}")

    def kill(self, sig: int = 9) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    cluster.run_kubectl("apply", "-f", str(REPO / "crds"))
    wait_until(lambda: cluster.run_kubectl("get", "crd", "limetasks.limetask.io", "-o",
                                           "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                                           check=False).stdout == "True", timeout=30, message="the CRD")
    import shutil

    shutil.rmtree(cluster.cache_dir, ignore_errors=True)


BROKER_HOST, BROKER_PORT = "127.0.0.1", int(os.environ.get("LIMETASK_TEST_BROKER_PORT", "5672"))


@pytest.fixture(scope="session")
def broker_proxy() -> Iterator[Any]:
    """The real RabbitMQ, reached through a proxy that tests can switch off (an outage)."""
    import socket

    from tcpproxy import TcpProxy

    try:
        socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=3).close()
    except OSError:
        pytest.fail(f"RabbitMQ does not answer on {BROKER_HOST}:{BROKER_PORT}: run `make broker-up`")
    proxy = TcpProxy(BROKER_PORT, BROKER_HOST)
    yield proxy
    proxy.close()


def broker_url(port: int = BROKER_PORT) -> str:
    return f"amqp://guest:guest@{BROKER_HOST}:{port}/"


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crd: None, broker_proxy: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """One operator for the session, watching every namespace, publishing through the proxy."""
    op = Operator(cluster, tmp_path_factory.mktemp("operator"), extra_env={
        "LIMETASK_BROKER_URL": broker_url(broker_proxy.port),
        "LIMETASK_EVENT_RETRY_MAX_SECONDS": "2",
        "LIMETASK_BROKER_PUBLISH_TIMEOUT": "3",
    })
    op.start()
    yield op
    op.stop()


@pytest.fixture
def running_operator(operator: Operator) -> Operator:
    """The session operator, restarted if a test left it stopped."""
    if not operator.alive():
        operator.start()
    return operator


@pytest.fixture
def tasks(cluster: Cluster, namespace: str, running_operator: Operator) -> Any:
    """A `TaskClient` for the test's namespace, with the operator running."""
    from lime_task import TaskClient

    return TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
