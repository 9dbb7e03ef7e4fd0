"""Shared fixtures: a ready Kubernetes cluster and a fresh namespace per test.

The cluster is the local one (devtools/cluster: a control plane and a real node), started
once per session or reused when it already runs. Set `LIMETASK_KUBECONFIG` to run the same suite against any
other cluster (kind, for example); the current kubeconfig is not used implicitly, so a test
run never lands on a cluster by accident.
"""

from __future__ import annotations

import contextlib
import json
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
    local: bool  # the local cluster (its node's processes and containerd are on this machine)
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
        pytest.fail(f"the local cluster did not start: {exc}")
    return Cluster(kubeconfig, local=True, kubectl=localcluster.kubectl_path())


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
# The images the local cluster builds and loads into its node (devtools/images): the runner
# base, and the example solution's runner image, which tasks of these tests run in.
RUNNER_IMAGE = localcluster.IMAGES["runner"]
ACME_IMAGE = localcluster.IMAGES["acme-runner"]
OPERATOR_IMAGE = localcluster.IMAGES["operator"]
# Small requests, so that bursts of tasks fit on the one node of two cores.
RUNNER_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "512Mi"}}
RUNNER_RESOURCES_JSON = json.dumps(RUNNER_RESOURCES)


@contextlib.contextmanager
def fresh_namespace(api_client: Any, label: str) -> Iterator[str]:
    """A fresh namespace named after `label` (a test's name), ready for pods, deleted afterwards
    (with everything in it)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    name = f"t-{label[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    # Task namespaces enforce the Pod Security Standard "restricted", as a platform team's would.
    core.create_namespace({"metadata": {"name": name, "labels": {"limetask.io/test": "true", **RESTRICTED}}})
    # Pods need the namespace's default service account, which a controller creates: wait
    # until a dry-run pod is admitted.
    probe = {"metadata": {"name": "probe"}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "none", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}
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


@pytest.fixture
def namespace(cluster: Cluster, api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (with everything in it)."""
    with fresh_namespace(api_client, request.node.name) as name:
        yield name


@pytest.fixture
def local(cluster: Cluster) -> Cluster:
    """The local cluster: its node's containerd and container processes are on this machine,
    and the project's images are loaded into it."""
    if not cluster.local:
        pytest.skip("needs the local cluster (its node's processes, containerd and images on this machine)")
    return cluster


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
                    "LIMETASK_METRICS_PORT": "0",
                    # Tasks run in the example solution's image (as with the chart's values below).
                    "LIMETASK_RUNNER_IMAGE": ACME_IMAGE, "LIMETASK_RUNNER_RESOURCES": RUNNER_RESOURCES_JSON})
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


CHART = REPO / "charts" / "limetask"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
# Unique per test session, so that two sessions on one cluster never uninstall each other's.
SESSION_RELEASE = f"e2e-{uuid.uuid4().hex[:6]}"
SESSION_NAMESPACE = f"limetask-{SESSION_RELEASE}"


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crd: None, broker_proxy: Any, api_client: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator as the Helm chart deploys it, watching every namespace.

    The chart is installed with real Helm; the operator then runs here as a process with the
    Deployment's own arguments and environment and its ServiceAccount's token, so every
    end-to-end test also proves the chart's RBAC and settings, and tests can kill, pause and
    restart it. (tests/test_e2e_incluster.py runs it as the Deployment's pod, from its image.)
    """
    import helm_python as helm
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    tmp = tmp_path_factory.mktemp("operator")
    try:
        core.create_namespace({"metadata": {"name": SESSION_NAMESPACE}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    values = {
        "crds": {"install": False},
        "watch": {"scope": "cluster"},
        # Platform limits the end-to-end tests exercise (test_e2e_tasks: placement and caps).
        "limits": {"allowPlacementOverride": True, "maxRunnerResources": {"memory": "2Gi"}},
        # Tasks run in the example solution's image, as a solution's would.
        "runner": {"image": dict(zip(("repository", "tag"), ACME_IMAGE.rsplit(":", 1), strict=True)),
                   "resources": RUNNER_RESOURCES},
        # The operator runs here as a process (tests kill and restart it), not as the Deployment's
        # pod: a node selector no node matches keeps that pod from ever starting, and the
        # Deployment is scaled to zero once installed.
        "operator": {"metricsPort": 0, "healthPort": _free_port(),
                     "image": dict(zip(("repository", "tag"), OPERATOR_IMAGE.rsplit(":", 1), strict=True)),
                     "nodeSelector": {"limetask.io/no-such-node": "true"}},
        "broker": {"url": broker_url(broker_proxy.port), "retryMaxSeconds": 2, "publishTimeoutSeconds": 3},
        # A failing event's state is written within seconds (tests read it), not 5 minutes; an
        # exchange that refuses every event dead-letters it after 3 refusals, not 30.
        "events": {"statusWriteSeconds": 5, "deadLetter": {"afterRefusals": 3}},
        # Waiting tasks' positions are rewritten within seconds (tests read them), not 30 s.
        "queueing": {"positionRefreshSeconds": 2},
        # No LimeTaskQueues of the chart's (default, asap, background): the queue tests make their
        # own, and the other tests' tasks are not limited by a queue they did not ask for.
        "queues": None,
    }
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=SESSION_NAMESPACE) as config:
        config.install(CHART, SESSION_RELEASE, values, namespace=SESSION_NAMESPACE, timeout=120)
        # Seconds-level schedules (tests only): schedules' tests need not wait minutes per tick.
        op = release_operator(cluster, api_client, SESSION_NAMESPACE, f"{SESSION_RELEASE}-limetask", tmp,
                              {"LIMETASK_SCHEDULE_SECONDS": "true"})
        op.start()
        yield op
        op.stop()
        config.uninstall(SESSION_RELEASE, ignore_not_found=True, timeout=60)
        cluster.run_kubectl("delete", "clusterroles,clusterrolebindings", "-l",
                            f"app.kubernetes.io/instance={SESSION_RELEASE}", "--ignore-not-found", check=False)
    cluster.run_kubectl("delete", "namespace", SESSION_NAMESPACE, "--wait=false", "--ignore-not-found", check=False)


def release_operator(cluster: Cluster, api_client: Any, namespace: str, fullname: str, tmp: Path,
                     extra_env: dict[str, str] | None = None) -> Operator:
    """The operator of an installed release as a process (not started): the Deployment, scaled to
    zero, gives its arguments and environment, its ServiceAccount its token."""
    import base64

    from kubernetes import client

    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment_scale(fullname, namespace, {"spec": {"replicas": 0}})
    deployment = apps.read_namespaced_deployment(fullname, namespace)
    container = api_client.sanitize_for_serialization(deployment.spec.template.spec.containers[0])
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in (item.get("valueFrom") or {}):  # what the kubelet would resolve
            ref = item["valueFrom"]["secretKeyRef"]
            secret = core.read_namespaced_secret(ref["name"], namespace)
            env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
    token = service_account_token(api_client, namespace, fullname)
    kubeconfig = kubeconfig_for_token(cluster, token, tmp / "operator.kubeconfig")
    return Operator(cluster, tmp, extra_env={**env, "LIMETASK_KUBECONFIG": str(kubeconfig),
                                             "LIMETASK_METRICS_PORT": "0", **(extra_env or {})},
                    args=tuple(container.get("args") or ()))


def start_replicas(operator: Operator, tmp_path: Path, names: tuple[str, ...] = ("replica-a", "replica-b"),
                   replicas: list[Operator] | None = None) -> list[Operator]:
    """Replicas of the session operator (its arguments and environment, the chart's leader
    election), each under its own identity, the first one leading. They are appended to
    `replicas` as they start, so that the caller can stop them whatever happens."""
    replicas = [] if replicas is None else replicas
    for name in names:
        (tmp_path / name).mkdir()
        args = tuple(a for a in operator.args if not a.startswith("--liveness"))
        replica = Operator(operator.cluster, tmp_path / name, args=args,
                           extra_env={**operator.extra_env, "LIMETASK_LEADER_ELECTION_IDENTITY": name})
        replica.start()
        replicas.append(replica)
        if name == names[0]:
            wait_until(lambda r=replica, n=name: f"{n} leads" in r.log_path.read_text(), timeout=60,
                       message=f"{name} to lead")
    return replicas


def service_account_token(api_client: Any, namespace: str, name: str) -> str:
    """A token of the ServiceAccount: from the TokenRequest API, else (Kubernetes < 1.24 without
    it) from the token Secret the controller makes."""
    import base64

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    try:
        request = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 3600}})
        return str(request.status.token)
    except ApiException:
        pass

    def from_secret() -> str | None:
        sa = core.read_namespaced_service_account(name, namespace)
        for ref in sa.secrets or []:
            secret = core.read_namespaced_secret(ref.name, namespace)
            if secret.type == "kubernetes.io/service-account-token" and (secret.data or {}).get("token"):
                return base64.b64decode(secret.data["token"]).decode()
        return None

    return str(wait_until(from_secret, timeout=30, message=f"a token for ServiceAccount {name}"))


def kubeconfig_for_token(cluster: Cluster, token: str, path: Path) -> Path:
    import yaml

    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    entry = next(c for c in admin["clusters"] if c["name"] == current["cluster"])
    cluster_entry = dict(entry["cluster"])
    ca = cluster_entry.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        cluster_entry["certificate-authority"] = str((cluster.kubeconfig.parent / ca).resolve())
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "cluster", "cluster": cluster_entry}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": "operator"}}],
    }))
    return path


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


# -- the archive (PostgreSQL) -------------------------------------------------------------------

ARCHIVE_HOST, ARCHIVE_PORT = "127.0.0.1", int(os.environ.get("LIMETASK_TEST_POSTGRES_PORT", "5432"))
ARCHIVE_ADMIN_URL = f"postgresql://limetask:limetask@{ARCHIVE_HOST}:{ARCHIVE_PORT}/limetask"


def archive_url(port: int = ARCHIVE_PORT, database: str = "limetask") -> str:
    return f"postgresql://limetask:limetask@{ARCHIVE_HOST}:{port}/{database}"


@pytest.fixture(scope="session")
def archive_db() -> Iterator[str]:
    """A database of its own for this test session on the real PostgreSQL (devtools/postgres-up.sh),
    with the archive's schema; dropped at the end."""
    import psycopg

    name = f"limetask_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL does not answer on {ARCHIVE_HOST}:{ARCHIVE_PORT} ({exc}): run `make postgres-up`")
    from lime_task.archive import migrate

    url = archive_url(database=name)
    migrate(url)
    yield url
    with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def archive_proxy(archive_db: str) -> Iterator[Any]:
    """The real PostgreSQL through a proxy that tests can switch off (an outage)."""
    from tcpproxy import TcpProxy

    proxy = TcpProxy(ARCHIVE_PORT, ARCHIVE_HOST)
    yield proxy
    proxy.close()


def archive_rows(url: str, namespace: str) -> list[tuple[Any, ...]]:
    """(name, uid, state, app) of every archived row of a namespace."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT name, uid::text, state, app FROM limetask_archive WHERE namespace = %s ORDER BY name",
            (namespace,)).fetchall()]
