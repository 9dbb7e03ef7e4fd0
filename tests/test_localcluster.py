"""End-to-end checks of the local control plane and its node agent (devtools/cluster).

Each test drives the real API server, job controller and garbage collector, and the node
agent that runs containers as local processes. They fail if any of those does not do its
part: Jobs complete or fail through the job controller, pod status carries the exit code,
reason and termination message a kubelet would report, deleting pods kills their
processes, faults requested by annotation are simulated, and the container environment is
built as Kubernetes builds it.

Tests that look at container processes on this machine (PIDs, files under `tmp_path`) or
that inject faults through the node agent need the local cluster and are skipped on any
other (`LIMETASK_KUBECONFIG`).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Cluster, wait_until
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.e2e

FAULT_ANNOTATION = "devtools.limetask.io/fault"
IMAGE = "python:3.11-slim"  # ignored by the node agent; real enough for any other cluster


# -- helpers --------------------------------------------------------------------------------

@pytest.fixture
def core(api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def batch(api_client: Any) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


@pytest.fixture
def local(cluster: Cluster) -> Cluster:
    """The local cluster: its containers are processes on this machine, faults available."""
    if not cluster.local:
        pytest.skip("needs the local node agent (container processes on this machine, fault "
                    "annotations); this cluster is not the local one")
    return cluster


def py(script: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(script)]


def container(command: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": IMAGE, "command": command, **extra}


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
                "spec": {"restartPolicy": "Never", "containers": [ctr], **(pod_spec or {})},
            },
        },
    }
    batch.create_namespaced_job(namespace, body)


def make_pod(core: client.CoreV1Api, namespace: str, name: str, ctr: dict[str, Any],
             **pod_spec: Any) -> None:
    body = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [ctr], **pod_spec},
    }
    # In a brand-new namespace the ServiceAccount admission plugin refuses pods (500,
    # "No API token found") until the token controller has made the default account's
    # token secret, a little after the account itself. The job controller retries on its
    # own; a plain pod is retried here.
    deadline = time.monotonic() + 30
    while True:
        try:
            core.create_namespaced_pod(namespace, body)
            return
        except ApiException as exc:
            if exc.status != 500 or "No API token found" not in str(exc.body) \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_pid(path: Path, timeout: float = 20) -> int:
    return int(wait_until(lambda: read_pid(path), timeout=timeout,
                          message=f"the container to write its PID to {path}"))


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


SLEEPER = """
    import os, time
    path = os.environ["PID_FILE"]
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(60)
"""


def sleeper(pid_file: Path, **extra: Any) -> dict[str, Any]:
    """A container that writes its PID to `pid_file` and sleeps for a minute."""
    return container(py(SLEEPER), env=[{"name": "PID_FILE", "value": str(pid_file)}], **extra)


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


def annotate(core: client.CoreV1Api, namespace: str, name: str, fault: str) -> None:
    core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {FAULT_ANNOTATION: fault}}})


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
        assert pod.spec.node_name == "local-node"
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
    assert state.message.rstrip("\n").endswith("fatal: the last words"), state.message
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
        batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str, local: Cluster,
        tmp_path: Path, propagation: str) -> None:
    pid_file = tmp_path / "pid"
    make_job(batch, namespace, "longrun", sleeper(pid_file))
    pid = wait_pid(pid_file)
    assert process_running(pid)
    pod_names = [p.metadata.name for p in job_pods(core, namespace, "longrun")]
    assert len(pod_names) == 1

    batch.delete_namespaced_job("longrun", namespace, propagation_policy=propagation)

    wait_until(lambda: not job_pods(core, namespace, "longrun"), timeout=20,
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
                                                        local: Cluster, tmp_path: Path) -> None:
    pid_file, term_file = tmp_path / "pid", tmp_path / "got-sigterm"
    script = """
        import os, signal, time
        def on_term(signum, frame):
            with open(os.environ["TERM_FILE"], "a") as f:
                f.write("SIGTERM\\n")
        signal.signal(signal.SIGTERM, on_term)
        path = os.environ["PID_FILE"]
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(path + ".tmp", path)
        while True:
            time.sleep(0.1)
    """
    ctr = container(py(script), env=[{"name": "PID_FILE", "value": str(pid_file)},
                                     {"name": "TERM_FILE", "value": str(term_file)}])
    make_pod(core, namespace, "stubborn", ctr, terminationGracePeriodSeconds=2)
    pid = wait_pid(pid_file)

    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)  # the pod's own grace period: 2 s
    wait_until(term_file.exists, timeout=10, message="the container to receive SIGTERM")
    assert process_running(pid), "the process died on SIGTERM although it ignores it"
    # Anyone may still change a terminating pod (a controller, an operator): the node must
    # keep the object, Terminating, for as long as its containers run.
    core.patch_namespaced_pod("stubborn", namespace, {"metadata": {"labels": {"touched": "yes"}}})
    time.sleep(0.5)
    assert process_running(pid), "the process was killed well before its grace period ended"
    pod = core.read_namespaced_pod("stubborn", namespace)  # 404 here: removed too early
    assert pod.metadata.deletion_timestamp is not None

    wait_process_gone(pid, timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.5, f"killed after {elapsed:.1f}s, before the 2s grace period ended"
    assert term_file.read_text() == "SIGTERM\n"
    wait_pod_gone(core, namespace, "stubborn", timeout=10)


# -- faults simulated by the node agent ------------------------------------------------------

def test_fault_signal_sigkill(core: client.CoreV1Api, namespace: str, local: Cluster,
                              tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    make_pod(core, namespace, "victim", sleeper(pid_file))
    pid = wait_pid(pid_file)
    wait_running(core, namespace, "victim")

    annotate(core, namespace, "victim", "signal:SIGKILL")

    pod = wait_pod_terminated(core, namespace, "victim")
    assert pod.status.phase == "Failed"
    state = terminated(pod)
    assert state.exit_code == 137
    assert state.signal == 9
    assert state.reason == "Error"
    assert process_gone(pid)


def test_fault_signal_sigterm_in_job_fails_job(batch: client.BatchV1Api, core: client.CoreV1Api,
                                               namespace: str, local: Cluster, tmp_path: Path) -> None:
    """Any signal name works, and a Job whose pod is killed fails through the job controller."""
    pid_file = tmp_path / "pid"
    make_job(batch, namespace, "signalled", sleeper(pid_file))
    pid = wait_pid(pid_file)
    pod_name = only_job_pod(core, namespace, "signalled").metadata.name

    annotate(core, namespace, pod_name, "signal:TERM")

    wait_job_condition(batch, namespace, "signalled", "Failed")
    state = terminated(core.read_namespaced_pod_status(pod_name, namespace))
    assert (state.exit_code, state.signal, state.reason) == (143, 15, "Error")
    assert process_gone(pid)


def test_fault_oom(core: client.CoreV1Api, namespace: str, local: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    make_pod(core, namespace, "oom", sleeper(pid_file))
    pid = wait_pid(pid_file)
    wait_running(core, namespace, "oom")

    annotate(core, namespace, "oom", "oom")

    pod = wait_pod_terminated(core, namespace, "oom")
    assert pod.status.phase == "Failed"
    state = terminated(pod)
    assert state.reason == "OOMKilled"
    assert state.exit_code == 137
    assert process_gone(pid)


def test_fault_evict(core: client.CoreV1Api, namespace: str, local: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    make_pod(core, namespace, "evictee", sleeper(pid_file))
    pid = wait_pid(pid_file)
    wait_running(core, namespace, "evictee")

    annotate(core, namespace, "evictee", "evict")

    def evicted() -> Any:
        pod = core.read_namespaced_pod_status("evictee", namespace)
        return pod if pod.status.phase == "Failed" and pod.status.reason == "Evicted" else None
    pod = wait_until(evicted, timeout=20, message="pod phase Failed with reason Evicted")
    conditions = {c.type: c for c in pod.status.conditions or []}
    assert "DisruptionTarget" in conditions, [c.type for c in pod.status.conditions or []]
    assert conditions["DisruptionTarget"].status == "True"
    assert conditions["Ready"].status == "False"
    assert pod.status.message
    assert terminated(pod) is not None, pod.status.container_statuses
    wait_process_gone(pid, timeout=10)


def test_memory_limit_oom_kills(batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str,
                                tmp_path: Path) -> None:
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
    ctr = container(py(script), resources={"limits": {"memory": "64Mi"},
                                           "requests": {"memory": "64Mi"}})
    make_job(batch, namespace, "hog", ctr)

    wait_job_condition(batch, namespace, "hog", "Failed")
    pod = only_job_pod(core, namespace, "hog")
    state = terminated(pod)
    assert state is not None, pod.status.container_statuses
    assert state.reason == "OOMKilled"
    assert state.exit_code == 137


# -- deadlines ---------------------------------------------------------------------------------

def test_job_active_deadline_fails_job_and_kills_process(
        batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str, local: Cluster,
        tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    make_job(batch, namespace, "slow", sleeper(pid_file), activeDeadlineSeconds=2)
    pid = wait_pid(pid_file)

    cond = wait_job_condition(batch, namespace, "slow", "Failed", timeout=20)
    assert cond.reason == "DeadlineExceeded"
    assert job_condition(batch, namespace, "slow", "Complete") is None
    wait_process_gone(pid, timeout=15)
    wait_until(lambda: not job_pods(core, namespace, "slow"), timeout=15,
               message="the job controller to delete the active pod")


def test_pod_active_deadline(core: client.CoreV1Api, namespace: str, local: Cluster,
                             tmp_path: Path) -> None:
    """A pod's own activeDeadlineSeconds is enforced by the node (the kubelet's job)."""
    pid_file = tmp_path / "pid"
    make_pod(core, namespace, "pod-deadline", sleeper(pid_file), activeDeadlineSeconds=2)
    pid = wait_pid(pid_file)

    def failed() -> Any:
        pod = core.read_namespaced_pod_status("pod-deadline", namespace)
        return pod if pod.status.phase == "Failed" else None
    pod = wait_until(failed, timeout=15, message="pod phase Failed after its deadline")
    assert pod.status.reason == "DeadlineExceeded"
    wait_process_gone(pid, timeout=5)


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


# -- what a container sees: its user, its folders, its environment ---------------------------

RUNAS = 10001  # the operator's runner user
RUNTIME_ENV = {"PATH", "HOME", "HOSTNAME", "LANG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}

SNOOP = """
    import json, os, ssl, stat, subprocess, tempfile, urllib.request
    state = os.environ["STATE_DIR"]
    report = {"id": subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip(),
              "groups": sorted(os.getgroups()), "cwd": os.getcwd(), "env": sorted(os.environ)}
    here = os.stat(".")
    report["cwd_owner"], report["cwd_mode"] = here.st_uid, stat.S_IMODE(here.st_mode)
    denied = {}
    for path in [state, *json.loads(os.environ["SECRETS"])]:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                open(path, "rb").read()
            denied[path] = "read"
        except OSError as exc:
            denied[path] = type(exc).__name__
    report["denied"] = denied
    etcd = {}
    unverified = ssl._create_unverified_context()
    for scheme in ("http", "https"):
        url = f"{scheme}://127.0.0.1:{os.environ['ETCD_PORT']}/v3/kv/range"
        request = urllib.request.Request(url, data=b'{"key": "Lw==", "range_end": "MA=="}')
        try:
            urllib.request.urlopen(request, timeout=5, context=unverified if scheme == "https" else None)
            etcd[scheme] = "read"
        except OSError as exc:
            etcd[scheme] = type(exc).__name__
    report["etcd"] = etcd
    # Only the file made here, and the repository's top folder when the checkout lives below /tmp
    # (the node binds the code back there, read-only: see containerinit.py).
    repo_top = os.environ["REPO"].split("/")[2] if os.environ["REPO"].startswith("/tmp/") else None
    with tempfile.NamedTemporaryFile(dir="/tmp") as f:
        report["tmp"] = sorted(os.listdir("/tmp")) == sorted([os.path.basename(f.name), *filter(None, [repo_top])])
    open("/dev/termination-log", "w").write(json.dumps(report))
"""


def snoop(core: client.CoreV1Api, namespace: str, name: str, state: Path, **pod_spec: Any) -> dict[str, Any]:
    """Run SNOOP in a pod and return its report: what the container could reach of the node."""
    secrets = [state / "kubeconfig", state / "tokens.csv", state / "cluster.json", state / "pki" / "ca.key",
               state / "nodeagent.kubeconfig", state / "controller-manager.kubeconfig"]
    etcd_port = json.loads((state / "cluster.json").read_text())["etcd_port"]
    env = [{"name": "STATE_DIR", "value": str(state)}, {"name": "ETCD_PORT", "value": str(etcd_port)},
           {"name": "REPO", "value": str(REPO)},
           {"name": "SECRETS", "value": json.dumps([str(s) for s in secrets])}]
    make_pod(core, namespace, name, container(py(SNOOP), env=env, **pod_spec.pop("container", {})), **pod_spec)
    ended = terminated(wait_pod_terminated(core, namespace, name, timeout=30))
    assert ended.exit_code == 0, ended
    report: dict[str, Any] = json.loads(ended.message)
    return report


def assert_sees_no_cluster_state(report: dict[str, Any], state: Path, uid: int) -> None:
    allowed = {"PermissionError", "FileNotFoundError"}
    assert all(outcome in allowed for outcome in report["denied"].values()), report["denied"]
    assert all(outcome != "read" for outcome in report["etcd"].values()), report["etcd"]
    assert report["id"] == str(uid)
    cwd = Path(report["cwd"])
    assert not cwd.is_relative_to(state), f"the container works in the cluster's state: {cwd}"
    assert (report["cwd_owner"], report["cwd_mode"]) == (uid, 0o700), report
    assert report["tmp"], "/tmp is not the container's own"
    assert "KUBECONFIG" not in report["env"] and "LIMETASK_KUBECONFIG" not in report["env"], report["env"]
    assert set(report["env"]) <= RUNTIME_ENV | {"STATE_DIR", "ETCD_PORT", "SECRETS", "REPO"}, report["env"]


def test_container_runs_as_pod_user_and_cannot_read_cluster_secrets(core: client.CoreV1Api, namespace: str,
                                                                   local: Cluster) -> None:
    """The runner's pod shape: user 10001 and fsGroup, /tmp an emptyDir. The cluster's admin
    kubeconfig, tokens and keys, its state folder and etcd are out of reach."""
    state = local.kubeconfig.parent
    sc = {"runAsNonRoot": True, "runAsUser": RUNAS, "runAsGroup": RUNAS, "fsGroup": RUNAS}
    report = snoop(core, namespace, "snoop", state, securityContext=sc,
                   volumes=[{"name": "tmp", "emptyDir": {}}],
                   container={"volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]})
    assert_sees_no_cluster_state(report, state, RUNAS)
    assert report["groups"] == [RUNAS]


def test_container_user_comes_from_container_security_context(core: client.CoreV1Api, namespace: str,
                                                              local: Cluster) -> None:
    state = local.kubeconfig.parent
    report = snoop(core, namespace, "own-user", state, securityContext={"runAsUser": 4242},
                   container={"securityContext": {"runAsUser": 20002, "runAsGroup": 20003}})
    assert_sees_no_cluster_state(report, state, 20002)
    assert report["groups"] == [20003]


def test_pod_naming_no_user_runs_as_nobody(core: client.CoreV1Api, namespace: str, local: Cluster) -> None:
    """The image's user is unknown to the local node: never root, but nobody."""
    state = local.kubeconfig.parent
    report = snoop(core, namespace, "no-user", state)
    assert_sees_no_cluster_state(report, state, 65534)


def test_root_user_is_refused(core: client.CoreV1Api, namespace: str, local: Cluster) -> None:
    make_pod(core, namespace, "root", container(["id", "-u"]), securityContext={"runAsUser": 0})
    state = terminated(wait_pod_terminated(core, namespace, "root"))
    assert (state.exit_code, state.reason) == (128, "StartError"), state
    assert "root" in state.message


def test_cluster_state_is_private(local: Cluster) -> None:
    """Only the cluster's user may enter its state folder; the files holding secrets are 0600."""
    state = local.kubeconfig.parent
    assert state.stat().st_mode & 0o777 == 0o700
    secret_files = [state / "kubeconfig", state / "tokens.csv", state / "cluster.json",
                    *state.glob("*.kubeconfig"), *(state / "pki").glob("*.key")]
    modes = {str(p.relative_to(state)): oct(p.stat().st_mode & 0o777) for p in secret_files}
    assert set(modes.values()) == {"0o600"}, modes


def test_a_mount_over_the_repositorys_folder_leaves_the_code_visible(core: client.CoreV1Api, namespace: str,
                                                                     local: Cluster) -> None:
    """A checkout below /tmp (as CI may clone it) sits under every container's private /tmp: the
    interpreter, the code and the termination message must still be there. An emptyDir mounted
    over the repository's parent folder stands for that, wherever the repository is."""
    parent = str(REPO.parent)
    script = "import limetask_runner, os; open('/dev/termination-log', 'w').write('seen ' + str(os.getuid()))"
    make_pod(core, namespace, "covered", container(py(script), volumeMounts=[{"name": "cover", "mountPath": parent}]),
             securityContext={"runAsUser": RUNAS, "runAsGroup": RUNAS}, volumes=[{"name": "cover", "emptyDir": {}}])
    state = terminated(wait_pod_terminated(core, namespace, "covered", timeout=60))
    assert (state.exit_code, state.message) == (0, f"seen {RUNAS}"), state
