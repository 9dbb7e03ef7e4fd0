"""End-to-end checks of the local cluster (devtools/cluster): a current control plane and a
real node (kubelet, containerd, runc, CNI) running the project's images.

Each test drives the real API server, job controller, garbage collector, scheduler and
kubelet. They fail if any of those does not do its part: Jobs complete or fail through the
job controller, pod status carries the exit code, reason and termination message, deleting
pods kills their processes, faults through real means (a signal from the host, a memory
limit, the Eviction API) end pods as on any cluster, Pod Security admission and the Node
authorizer hold, and the container environment is built as Kubernetes builds it.

Tests that look at container processes on this machine or at the node's files need the local
cluster and are skipped on any other (`LIMETASK_KUBECONFIG`).
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import localcluster
import pytest
from conftest import RESTRICTED, RUNNER_IMAGE, Cluster, wait_until
from kubernetes import client, config
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.e2e

IMAGE = RUNNER_IMAGE  # has Python; loaded into the local node, or pull it where it is published
RUNAS = 10001

# -- helpers --------------------------------------------------------------------------------

@pytest.fixture
def core(api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def batch(api_client: Any) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


def py(script: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(script)]


RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": RUNAS, "runAsGroup": RUNAS,
                  "seccompProfile": {"type": "RuntimeDefault"}}


def container(command: list[str], **extra: Any) -> dict[str, Any]:
    """A container of the runner image that meets the "restricted" Pod Security Standard."""
    return {"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": command,
            "securityContext": RESTRICTED_CONTAINER, **extra}


def make_job(batch: client.BatchV1Api, namespace: str, name: str, ctr: dict[str, Any],
             pod_spec: dict[str, Any] | None = None, **job_spec: Any) -> None:
    body = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **job_spec,
            "template": {
                "metadata": {"labels": {"test": name}},
                "spec": {"restartPolicy": "Never", "containers": [ctr], "securityContext": RESTRICTED_POD,
                         **(pod_spec or {})},
            },
        },
    }
    batch.create_namespaced_job(namespace, body)


def make_pod(core: client.CoreV1Api, namespace: str, name: str, ctr: dict[str, Any],
             **pod_spec: Any) -> None:
    body = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [ctr], "securityContext": RESTRICTED_POD, **pod_spec},
    }
    core.create_namespaced_pod(namespace, body)


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, kind: str) -> Any:
    """The Job's condition of type `kind` when it is True, else None."""
    job = batch.read_namespaced_job_status(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None


def wait_job_condition(batch: client.BatchV1Api, namespace: str, name: str, kind: str,
                       timeout: float = 30) -> Any:
    def check() -> Any:
        return job_condition(batch, namespace, name, kind)
    try:
        return wait_until(check, timeout=timeout, message=f"Job {name} condition {kind}=True")
    except AssertionError:
        job = batch.read_namespaced_job_status(name, namespace)
        raise AssertionError(f"Job {name} never got condition {kind}=True; status: {job.status}") from None


def job_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def only_job_pod(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    pods = job_pods(core, namespace, name)
    assert len(pods) == 1, f"expected one pod of Job {name}, found {[p.metadata.name for p in pods]}"
    return pods[0]


def terminated(pod: Any) -> Any:
    """containerStatuses[0].state.terminated of a pod, or None."""
    statuses = pod.status.container_statuses or []
    if not statuses or not statuses[0].state:
        return None
    return statuses[0].state.terminated


def wait_pod_terminated(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 20) -> Any:
    """The pod once its container has terminated and the pod reached a final phase."""
    def check() -> Any:
        pod = core.read_namespaced_pod_status(name, namespace)
        if terminated(pod) is not None and pod.status.phase in ("Succeeded", "Failed"):
            return pod
        return None
    return wait_until(check, timeout=timeout, message=f"pod {name} to terminate")


def wait_pod_gone(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 20) -> None:
    def gone() -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False
    wait_until(gone, timeout=timeout, message=f"pod {name} to be removed from the API")


def container_pid(core: client.CoreV1Api, namespace: str, name: str) -> int:
    """The host PID of the pod's running container, through the node's containerd."""
    pod = wait_running(core, namespace, name)
    return localcluster.container_pid(pod.status.container_statuses[0].container_id)


def process_gone(pid: int) -> bool:
    """The process no longer runs: it does not exist, or it is a zombie not yet reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the command name in parentheses, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_process_gone(pid: int, timeout: float = 20) -> None:
    wait_until(lambda: process_gone(pid), timeout=timeout, message=f"process {pid} to be gone")


def process_running(pid: int) -> bool:
    return not process_gone(pid)


def sleeper(**extra: Any) -> dict[str, Any]:
    """A container that sleeps for a minute, and ends on SIGTERM. (As process 1 of its container,
    a process without a SIGTERM handler would ignore the signal until the grace period ends.)"""
    return container(py("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
        time.sleep(60)
    """), **extra)


def wait_running(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 20) -> Any:
    """The pod once it is reported Running with its container running and ready."""
    def check() -> Any:
        pod = core.read_namespaced_pod_status(name, namespace)
        statuses = pod.status.container_statuses or []
        if (pod.status.phase == "Running" and statuses and statuses[0].state.running
                and statuses[0].ready):
            return pod
        return None
    return wait_until(check, timeout=timeout, message=f"pod {name} to be reported Running")


# -- jobs run to an end through the job controller -------------------------------------------

def test_job_completes_with_termination_message(batch: client.BatchV1Api, core: client.CoreV1Api,
                                                namespace: str, cluster: Cluster) -> None:
    message = "all done: 42 items\nsecond line"
    script = f"""
        import sys
        with open("/dev/termination-log", "w") as f:
            f.write({message!r})
        print("hello from the job")
        sys.exit(0)
    """
    make_job(batch, namespace, "ok", container(py(script)))

    wait_job_condition(batch, namespace, "ok", "Complete")
    assert job_condition(batch, namespace, "ok", "Failed") is None
    job = batch.read_namespaced_job_status("ok", namespace)
    assert job.status.succeeded == 1
    assert not job.status.failed

    pod = only_job_pod(core, namespace, "ok")
    assert pod.spec.node_name, "the pod was never bound to a node"
    if cluster.local:
        assert pod.spec.node_name == localcluster.NODE_NAME
    assert pod.status.phase == "Succeeded"
    state = terminated(pod)
    assert state is not None, pod.status.container_statuses
    assert state.exit_code == 0
    assert state.reason == "Completed"
    assert state.message == message
    assert state.signal is None


def test_failing_job_reports_exit_code_and_error(batch: client.BatchV1Api, core: client.CoreV1Api,
                                                 namespace: str) -> None:
    script = """
        import sys
        print("something went wrong", file=sys.stderr)
        sys.exit(3)
    """
    make_job(batch, namespace, "bad", container(py(script)))

    cond = wait_job_condition(batch, namespace, "bad", "Failed")
    assert cond.reason == "BackoffLimitExceeded"
    assert job_condition(batch, namespace, "bad", "Complete") is None
    job = batch.read_namespaced_job_status("bad", namespace)
    assert job.status.failed == 1
    assert not job.status.succeeded

    pod = only_job_pod(core, namespace, "bad")
    assert pod.status.phase == "Failed"
    state = terminated(pod)
    assert state is not None, pod.status.container_statuses
    assert state.exit_code == 3
    assert state.reason == "Error"
    assert state.signal is None
    # The default policy (File) does not fall back to the logs.
    assert not state.message


def test_fallback_to_logs_on_error_uses_log_tail(batch: client.BatchV1Api, core: client.CoreV1Api,
                                                 namespace: str) -> None:
    script = """
        import sys
        for i in range(5):
            print(f"line {i}", flush=True)
        print("fatal: the last words", file=sys.stderr, flush=True)
        sys.exit(2)
    """
    make_job(batch, namespace, "fallback",
             container(py(script), terminationMessagePolicy="FallbackToLogsOnError"))

    wait_job_condition(batch, namespace, "fallback", "Failed")
    state = terminated(only_job_pod(core, namespace, "fallback"))
    assert state is not None
    assert state.exit_code == 2
    assert state.reason == "Error"
    assert state.message, "FallbackToLogsOnError gave no message"
    # A real runtime reads stdout and stderr through separate pipes: their lines interleave in
    # whatever order they arrive, so only each line's presence is certain.
    assert "fatal: the last words" in state.message.splitlines(), state.message
    assert "line 4" in state.message


def test_fallback_to_logs_prefers_the_message_file(batch: client.BatchV1Api, core: client.CoreV1Api,
                                                   namespace: str) -> None:
    """With FallbackToLogsOnError a non-empty message file still wins over the logs."""
    script = """
        import sys
        open("/dev/termination-log", "w").write("from the file")
        print("from the logs", flush=True)
        sys.exit(1)
    """
    make_job(batch, namespace, "file-wins",
             container(py(script), terminationMessagePolicy="FallbackToLogsOnError"))
    wait_job_condition(batch, namespace, "file-wins", "Failed")
    state = terminated(only_job_pod(core, namespace, "file-wins"))
    assert state is not None
    assert (state.exit_code, state.reason, state.message) == (1, "Error", "from the file")


# -- deletion: garbage collection and process teardown ---------------------------------------

@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
def test_deleting_job_collects_pods_and_kills_process(
        batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str, local: Cluster, propagation: str) -> None:
    make_job(batch, namespace, "longrun", sleeper())
    pod_names = wait_until(lambda: [p.metadata.name for p in job_pods(core, namespace, "longrun")], timeout=20,
                           message="the Job's pod")
    assert len(pod_names) == 1
    pid = container_pid(core, namespace, pod_names[0])
    assert process_running(pid)

    batch.delete_namespaced_job("longrun", namespace, propagation_policy=propagation)

    wait_until(lambda: not job_pods(core, namespace, "longrun"), timeout=60,
               message=f"the Job's pods to be garbage-collected ({propagation})")
    wait_pod_gone(core, namespace, pod_names[0])
    wait_process_gone(pid, timeout=10)

    def job_gone() -> bool:
        try:
            batch.read_namespaced_job("longrun", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False
    wait_until(job_gone, timeout=20, message="the Job object to be removed")


def test_process_ignoring_sigterm_is_killed_after_grace(core: client.CoreV1Api, namespace: str,
                                                        local: Cluster) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, lambda signum, frame: print("SIGTERM", flush=True))
        while True:
            time.sleep(0.1)
    """
    make_pod(core, namespace, "stubborn", container(py(script)), terminationGracePeriodSeconds=3)
    pid = container_pid(core, namespace, "stubborn")

    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)  # the pod's own grace period: 3 s
    time.sleep(1)
    assert process_running(pid), "the process died on SIGTERM although it ignores it"
    pod = core.read_namespaced_pod("stubborn", namespace)  # 404 here: removed too early
    assert pod.metadata.deletion_timestamp is not None

    wait_process_gone(pid, timeout=15)
    elapsed = time.monotonic() - started
    assert elapsed >= 2.5, f"killed after {elapsed:.1f}s, before the 3s grace period ended"
    wait_pod_gone(core, namespace, "stubborn", timeout=15)


# -- faults through real means ----------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, 137), (signal.SIGTERM, 143)])
def test_a_signal_from_the_host_ends_the_container(batch: client.BatchV1Api, core: client.CoreV1Api,
                                                   namespace: str, local: Cluster, sig: int, code: int) -> None:
    make_job(batch, namespace, "victim", sleeper())
    pod_name = wait_until(lambda: job_pods(core, namespace, "victim"), timeout=20, message="the pod")[0].metadata.name
    pid = container_pid(core, namespace, pod_name)

    os.kill(pid, sig)

    wait_job_condition(batch, namespace, "victim", "Failed")
    pod = wait_pod_terminated(core, namespace, pod_name)
    assert pod.status.phase == "Failed"
    state = terminated(pod)
    assert (state.exit_code, state.reason) == (code, "Error"), state
    assert process_gone(pid)


def test_memory_limit_oom_kills(batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str) -> None:
    # bytes objects filled with data (not zero pages), so the memory is really resident.
    script = """
        import time
        chunks = []
        for i in range(30):
            chunks.append(b"x" * (10 * 1024 * 1024))
            time.sleep(0.01)
        print("allocated 300 MB", flush=True)
        time.sleep(30)
    """
    ctr = container(py(script), resources={"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}})
    make_job(batch, namespace, "hog", ctr)

    wait_job_condition(batch, namespace, "hog", "Failed", timeout=60)
    pod = only_job_pod(core, namespace, "hog")
    state = terminated(pod)
    assert state is not None, pod.status.container_statuses
    assert state.reason == "OOMKilled"
    assert state.exit_code == 137


def test_eviction_through_the_eviction_api(core: client.CoreV1Api, namespace: str, local: Cluster) -> None:
    make_pod(core, namespace, "evictee", sleeper(), terminationGracePeriodSeconds=2)
    pid = container_pid(core, namespace, "evictee")

    core.create_namespaced_pod_eviction("evictee", namespace, {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "evictee"}})

    pod = core.read_namespaced_pod("evictee", namespace)
    conditions = {c.type: c for c in pod.status.conditions or []}
    assert "DisruptionTarget" in conditions, [c.type for c in pod.status.conditions or []]
    assert conditions["DisruptionTarget"].reason == "EvictionByEvictionAPI"
    assert pod.metadata.deletion_timestamp is not None
    wait_process_gone(pid, timeout=15)
    wait_pod_gone(core, namespace, "evictee", timeout=20)


# -- deadlines ---------------------------------------------------------------------------------

def test_job_active_deadline_fails_job_and_kills_process(
        batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str, local: Cluster) -> None:
    make_job(batch, namespace, "slow", sleeper(), activeDeadlineSeconds=6)
    pod_name = wait_until(lambda: job_pods(core, namespace, "slow"), timeout=20, message="the pod")[0].metadata.name
    pid = container_pid(core, namespace, pod_name)

    cond = wait_job_condition(batch, namespace, "slow", "Failed", timeout=30)
    assert cond.reason == "DeadlineExceeded"
    assert job_condition(batch, namespace, "slow", "Complete") is None
    wait_process_gone(pid, timeout=40)
    wait_until(lambda: not job_pods(core, namespace, "slow"), timeout=40,
               message="the job controller to delete the active pod")


def test_pod_active_deadline(core: client.CoreV1Api, namespace: str, local: Cluster) -> None:
    """A pod's own activeDeadlineSeconds is enforced by the node (the kubelet's job)."""
    make_pod(core, namespace, "pod-deadline", sleeper(), activeDeadlineSeconds=5)
    pid = container_pid(core, namespace, "pod-deadline")

    def failed() -> Any:
        pod = core.read_namespaced_pod_status("pod-deadline", namespace)
        return pod if pod.status.phase == "Failed" else None
    pod = wait_until(failed, timeout=30, message="pod phase Failed after its deadline")
    assert pod.status.reason == "DeadlineExceeded"
    wait_process_gone(pid, timeout=30)


# -- the container environment --------------------------------------------------------------

def test_environment_values_field_refs_and_expansion(batch: client.BatchV1Api, core: client.CoreV1Api,
                                                     namespace: str) -> None:
    script = """
        import json, os, sys
        keys = ["GREETING", "POD_NAME", "POD_NAMESPACE", "COMBINED"]
        report = {"env": {k: os.environ.get(k) for k in keys}, "argv": sys.argv[1:]}
        open("/dev/termination-log", "w").write(json.dumps(report))
    """
    ctr = container(
        ["python", "-c", textwrap.dedent(script)],
        args=["$(GREETING)", "pod=$(POD_NAME)", "ns=$(POD_NAMESPACE)", "$(UNDEFINED_VAR)", "$$(GREETING)"],
        env=[
            {"name": "GREETING", "value": "hello world"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "COMBINED", "value": "$(GREETING) from $(POD_NAMESPACE)"},
        ],
    )
    make_job(batch, namespace, "env", ctr)

    wait_job_condition(batch, namespace, "env", "Complete")
    pod = only_job_pod(core, namespace, "env")
    state = terminated(pod)
    assert state is not None and state.exit_code == 0, pod.status.container_statuses
    report = json.loads(state.message)
    assert report["env"] == {
        "GREETING": "hello world",
        "POD_NAME": pod.metadata.name,
        "POD_NAMESPACE": namespace,
        "COMBINED": f"hello world from {namespace}",
    }
    assert report["argv"] == [
        "hello world", f"pod={pod.metadata.name}", f"ns={namespace}", "$(UNDEFINED_VAR)", "$(GREETING)",
    ]


# -- what the node enforces: Pod Security, the Node authorizer, the state's privacy ------------

def test_restricted_namespaces_refuse_privileged_pods(core: client.CoreV1Api, namespace: str) -> None:
    ns = core.read_namespace(namespace)
    assert {k: ns.metadata.labels.get(k) for k in RESTRICTED} == RESTRICTED
    for name, spec in [
        ("root", {"securityContext": {"runAsUser": 0}, "containers": [container(["id"])]}),
        ("capabilities", {"containers": [container(["id"], securityContext={
            **RESTRICTED_CONTAINER, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}})]}),
        ("no-seccomp", {"securityContext": {"runAsNonRoot": True, "runAsUser": RUNAS},
                        "containers": [container(["id"])]}),
        ("host-path", {"containers": [container(["id"])],
                       "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}),
    ]:
        with pytest.raises(ApiException) as info:
            core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": spec})
        assert info.value.status == 403, (name, info.value.body)
        assert "violates PodSecurity" in str(info.value.body), (name, info.value.body)


def test_a_restricted_container_runs_confined(core: client.CoreV1Api, namespace: str, local: Cluster) -> None:
    """Non-root, read-only root, no capabilities, no new privileges, the runtime's seccomp
    filter, and the node's etcd and kubelet out of reach."""
    cfg = json.loads((local.kubeconfig.parent / "cluster.json").read_text())
    script = """
        import json, os, socket
        status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
        report = {"uid": os.getuid(), "caps": status["CapEff"].strip(), "nnp": status["NoNewPrivs"].strip(),
                  "seccomp": status["Seccomp"].strip()}
        try:
            open("/written", "w")
            report["rootfs"] = "writable"
        except OSError as exc:
            report["rootfs"] = type(exc).__name__
        reach = {}
        for port in os.environ["PORTS"].split():
            s = socket.socket()
            s.settimeout(3)
            reach[port] = s.connect_ex((os.environ["HOST"], int(port))) == 0
            s.close()
        report["reach"] = reach
        open("/dev/termination-log", "w").write(json.dumps(report))
    """
    ports = f"{cfg['etcd_port']} {cfg['kubelet_port']} 443"
    make_pod(core, namespace, "confined", container(py(script), env=[
        {"name": "HOST", "value": cfg["api_ip"]}, {"name": "PORTS", "value": ports}]))
    state = terminated(wait_pod_terminated(core, namespace, "confined", timeout=60))
    assert state.exit_code == 0, state
    report = json.loads(state.message)
    assert report["uid"] == RUNAS
    assert int(report["caps"], 16) == 0
    assert report["nnp"] == "1"
    assert report["seccomp"] == "2", "no seccomp filter (RuntimeDefault) on the container"
    assert report["rootfs"] == "OSError" or report["rootfs"].endswith("Error"), report
    assert report["rootfs"] != "writable"
    # The API server is there for pods (in-cluster config); etcd and the kubelet are not.
    assert report["reach"] == {str(cfg["etcd_port"]): False, str(cfg["kubelet_port"]): False, "443": True}


def test_the_kubelet_reads_only_what_its_pods_need(local: Cluster, api_client: Any, namespace: str) -> None:
    """The Node authorizer: the kubelet's own credentials may not read a Secret no pod of its
    node uses, nor change another node."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}})
    kubelet_cfg = client.Configuration()
    config.load_kube_config(config_file=str(local.kubeconfig.parent / "kubelet.kubeconfig"),
                            client_configuration=kubelet_cfg)
    as_kubelet = client.CoreV1Api(client.ApiClient(kubelet_cfg))
    with pytest.raises(ApiException) as info:
        as_kubelet.read_namespaced_secret("unrelated", namespace)
    assert info.value.status == 403
    with pytest.raises(ApiException) as info:
        as_kubelet.list_namespaced_secret(namespace)
    assert info.value.status == 403
    node = as_kubelet.read_node(localcluster.NODE_NAME)  # its own node: allowed
    assert node.metadata.name == localcluster.NODE_NAME
    with pytest.raises(ApiException) as info:  # NodeRestriction: not another node's object
        as_kubelet.create_node({"metadata": {"name": "another-node"}})
    assert info.value.status == 403


def test_cluster_state_is_private(local: Cluster) -> None:
    """Only the cluster's user may enter its state folder; the files holding secrets are 0600."""
    state = local.kubeconfig.parent
    assert state.stat().st_mode & 0o777 == 0o700
    secret_files = [state / "kubeconfig", state / "tokens.csv", state / "cluster.json",
                    *state.glob("*.kubeconfig"), *(state / "pki").glob("*.key")]
    modes = {str(p.relative_to(state)): oct(p.stat().st_mode & 0o777) for p in secret_files}
    assert set(modes.values()) == {"0o600"}, modes


def test_a_second_cluster_runs_beside_the_first_and_leaves_nothing_behind(local: Cluster) -> None:
    """Two clones may each run a cluster: the second gets a network, cgroup root and folders of
    its own, runs a pod, and `down` removes all it made (processes, mounts, bridge, cgroups)."""
    import shutil
    import subprocess
    import tempfile

    first = localcluster.config(local.kubeconfig.parent)
    parent = Path(tempfile.mkdtemp(prefix="limetask-second-", dir="/var/tmp"))
    state = parent / "cluster"
    cfg: dict[str, Any] = {}
    try:
        kubeconfig = localcluster.up(state)
        cfg = localcluster.config(state)
        assert (cfg["subnet"], cfg["bridge"], cfg["cgroup_root"]) != \
            (first["subnet"], first["bridge"], first["cgroup_root"])
        kcfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=kcfg)
        core = client.CoreV1Api(client.ApiClient(kcfg))
        core.create_namespace({"metadata": {"name": "second", "labels": RESTRICTED}})
        wait_until(lambda: core.list_namespaced_service_account("second").items, timeout=60,
                   message="the default service account")
        make_pod(core, "second", "hello", container(py("print('hello from the second cluster')")))
        pod = wait_pod_terminated(core, "second", "hello", timeout=90)
        assert pod.status.phase == "Succeeded", pod.status
        assert localcluster.healthy(local.kubeconfig.parent), "the first cluster suffered"
    finally:
        localcluster.down(state)
        shutil.rmtree(parent, ignore_errors=True)
    assert not state.exists()
    assert localcluster.mounts_under(state) == []
    assert subprocess.run(["ip", "link", "show", cfg["bridge"]], capture_output=True).returncode != 0
    assert not [p for p in localcluster.cgroup_root_dirs(cfg["cgroup_root"]) if p.exists()]
    leftovers = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(state) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                leftovers.append(proc.name)
        except OSError:
            pass
    assert leftovers == []
