"""A local node agent that stands in for the kubelet on a machine without a container runtime.

Development and test tooling only: it is never part of what the chart ships.

It registers one Ready Node, binds pending pods to it (there is no scheduler), runs each
container's command as a local process with the pod's environment, and reports pod and
container status the way a kubelet does: Pending, Running, then `terminated` with exit
code, reason and the termination message read from the container's
`terminationMessagePath`. Deleting a pod sends SIGTERM, then SIGKILL after the grace
period, and the agent then removes the pod object, as a kubelet does.

The image is ignored. The interpreter: a command whose first word is `python`, `python3`
or `python3.X` (bare or as a path) runs with `LIMETASK_NODE_PYTHON`, by default the
interpreter that runs this agent (the project's virtual environment). Any other command
runs as it is, found on the agent's PATH.

The termination message file: as root, each container runs in its own mount namespace
with a private file bind-mounted on its `terminationMessagePath` (as the kubelet mounts
one). Without root, every environment variable whose value is that path is pointed at the
private file instead.

Faults for tests, requested through a pod annotation `devtools.limetask.io/fault`:
  `signal:SIGKILL` (or any signal name): the process is killed by that signal;
  `oom`: the process is killed and reported `OOMKilled` with exit code 137;
  `evict`: the pod is evicted: killed, phase Failed, reason `Evicted`, and a
          `DisruptionTarget` condition.
A container with a memory limit whose resident memory passes it is OOM-killed too.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

FAULT_ANNOTATION = "devtools.limetask.io/fault"
PYTHON_NAMES = {"python", "python3"} | {f"python3.{n}" for n in range(6, 20)}
LOG = logging.getLogger("nodeagent")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_quantity(value: str) -> int:
    """Bytes in a Kubernetes memory quantity such as `128Mi` or `1G`."""
    units = {
        "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
        "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    }
    for suffix in sorted(units, key=len, reverse=True):
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * units[suffix])
    if value.endswith("m"):
        return int(float(value[:-1]) / 1000)
    return int(float(value))


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (best effort, from /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Container:
    """One container of a pod: a local process and the state a kubelet would report."""

    def __init__(self, agent: "NodeAgent", pod: dict[str, Any], spec: dict[str, Any]) -> None:
        self.agent = agent
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.reason: str | None = None  # forced reason: OOMKilled, ...
        self.message: str | None = None
        self.restart_count = 0
        uid = pod["metadata"]["uid"]
        meta = pod["metadata"]
        self.dir = agent.state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{uid}" / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "container.log"
        self.msg_path = self.dir / "termination-log"

    # -- starting -------------------------------------------------------------------------
    def command(self) -> list[str]:
        argv = list(self.spec.get("command") or []) + list(self.spec.get("args") or [])
        if not argv:
            raise RuntimeError(
                "the local node agent cannot read an image's entrypoint: set `command` in the container"
            )
        env = self.environment()
        argv = [expand(a, env) for a in argv]
        if os.path.basename(argv[0]) in PYTHON_NAMES:
            argv[0] = self.agent.python
        elif "/" not in argv[0]:
            found = shutil.which(argv[0])
            if not found:
                raise RuntimeError(f"executable file not found in $PATH: {argv[0]!r}")
            argv[0] = found
        return argv

    def environment(self) -> dict[str, str]:
        pod = self.pod
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOSTNAME": pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": self.agent.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.agent.api_port),
        }
        for source in self.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for key, value in self.agent.read_ref_data(pod, source).items():
                env[prefix + key] = value
        for item in self.spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = expand(item.get("value") or "", env)
            elif "valueFrom" in item:
                value = self.agent.resolve_value_from(pod, self.spec, item["valueFrom"])
                if value is not None:
                    env[item["name"]] = value
        return env

    def start(self) -> None:
        env = self.environment()
        argv = self.command()
        target = self.spec.get("terminationMessagePath") or "/dev/termination-log"
        self.msg_path.write_bytes(b"")
        workdir = self.spec.get("workingDir")
        if not workdir or not os.path.isdir(workdir):
            workdir = str(self.dir)
        if self.agent.use_mount_namespace:
            try:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                if not os.path.exists(target):
                    Path(target).touch()
                argv = [
                    "unshare", "--mount", "--propagation", "private", "--",
                    "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"',
                    "sh", str(self.msg_path), target, *argv,
                ]
            except OSError as exc:
                LOG.warning("cannot prepare %s (%s); pointing environment at the file instead", target, exc)
                env = {k: (str(self.msg_path) if v == target else v) for k, v in env.items()}
        else:
            env = {k: (str(self.msg_path) if v == target else v) for k, v in env.items()}
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()
        (self.dir / "pid").write_text(str(self.proc.pid))
        self.started_at = now()
        self.finished_at = self.exit_code = self.signal = self.reason = self.message = None

    # -- stopping -------------------------------------------------------------------------
    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, grace: float, reason: str | None = None) -> None:
        """SIGTERM, then SIGKILL after the grace period, as a kubelet stops a container."""
        if reason:
            self.reason = reason
        if self.proc is None or self.proc.poll() is not None:
            return
        self.send(signal.SIGTERM)
        try:
            self.proc.wait(timeout=max(grace, 0))
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.proc.wait()

    def wait(self) -> None:
        assert self.proc is not None
        rc = self.proc.wait()
        self.finished_at = now()
        # `unshare` and `sh` exec the command, so this is the command's own status.
        if rc < 0:
            self.signal = -rc
            self.exit_code = 128 - rc
        else:
            self.exit_code = rc
        self.message = self.read_message()

    def read_message(self) -> str | None:
        try:
            data = self.msg_path.read_bytes()[:4096]
        except OSError:
            data = b""
        if data:
            return data.decode("utf-8", "replace")
        if self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and self.exit_code:
            try:
                lines = self.log_path.read_bytes().splitlines()[-80:]
                return b"\n".join(lines)[-2048:].decode("utf-8", "replace") or None
            except OSError:
                return None
        return None

    # -- reporting ------------------------------------------------------------------------
    def status(self, ready: bool = True) -> dict[str, Any]:
        base = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "restartCount": self.restart_count,
            "started": self.exit_code is None and self.started_at is not None,
        }
        if self.proc is None and self.exit_code is None:
            return {**base, "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
        if self.exit_code is None:
            return {
                **base, "ready": ready,
                "containerID": f"local://{self.proc.pid if self.proc else 0}",
                "state": {"running": {"startedAt": self.started_at}},
            }
        terminated: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason or ("Completed" if self.exit_code == 0 else "Error"),
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": f"local://{self.proc.pid if self.proc else 0}",
        }
        if self.signal:
            terminated["signal"] = self.signal
        if self.message:
            terminated["message"] = self.message
        return {**base, "ready": False, "state": {"terminated": terminated}}


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion in commands and env values (`$$` escapes)."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2 : end]
            out.append(env.get(name, value[i : end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


class PodWorker:
    """Runs one pod to its end on a thread of its own."""

    def __init__(self, agent: "NodeAgent", pod: dict[str, Any]) -> None:
        self.agent = agent
        self.pod = pod
        self.meta = pod["metadata"]
        self.key = f"{self.meta['namespace']}/{self.meta['name']}"
        self.containers = [Container(agent, pod, c) for c in pod["spec"].get("containers", [])]
        self.start_time = now()
        self.started_mono = time.monotonic()
        self.phase = "Pending"
        self.pod_reason: str | None = None
        self.pod_message: str | None = None
        self.extra_conditions: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.deleted = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.key}", daemon=True)

    # -- life cycle -----------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.report()
            restart = self.pod["spec"].get("restartPolicy", "Always")
            for c in self.containers:
                try:
                    c.start()
                except Exception as exc:  # noqa: BLE001 - reported as the kubelet would
                    c.exit_code, c.reason, c.message = 128, "StartError", str(exc)
                    c.started_at = c.finished_at = now()
            self.phase = "Running"
            self.report()
            waiters = [threading.Thread(target=self.watch_container, args=(c, restart), daemon=True)
                       for c in self.containers if c.proc is not None]
            for w in waiters:
                w.start()
            for w in waiters:
                w.join()
            if self.deleted.is_set():
                return
            if self.phase not in ("Failed", "Succeeded"):
                ok = all(c.exit_code == 0 for c in self.containers)
                self.phase = "Succeeded" if ok else "Failed"
            self.report()
        except Exception:  # noqa: BLE001 - one pod must never take the agent down
            LOG.exception("pod %s: unexpected error", self.key)
        finally:
            self.agent.forget(self, finished=True)

    def watch_container(self, c: Container, restart: str) -> None:
        limit = (c.spec.get("resources") or {}).get("limits", {}).get("memory")
        limit_bytes = parse_quantity(str(limit)) if limit else None
        while True:
            assert c.proc is not None
            while c.proc.poll() is None:
                if limit_bytes and rss_bytes(c.proc.pid) > limit_bytes:
                    c.reason = "OOMKilled"
                    c.send(signal.SIGKILL)
                try:
                    c.proc.wait(timeout=0.2 if limit_bytes else 1.0)
                except subprocess.TimeoutExpired:
                    pass
            c.wait()
            if c.reason == "OOMKilled":
                c.exit_code, c.signal = 137, None
            LOG.info("pod %s container %s exited %s (%s)", self.key, c.name, c.exit_code, c.reason or "")
            again = not self.stopping.is_set() and (
                restart == "Always" or (restart == "OnFailure" and c.exit_code != 0)
            )
            if not again:
                return
            self.report()
            time.sleep(min(10, 2 ** c.restart_count))
            if self.stopping.is_set():
                return
            c.restart_count += 1
            try:
                c.start()
            except Exception as exc:  # noqa: BLE001
                c.exit_code, c.reason, c.message = 128, "StartError", str(exc)
                return
            self.report()

    def stop(self, grace: float, phase: str | None = None, reason: str | None = None,
             message: str | None = None, container_reason: str | None = None,
             conditions: list[dict[str, Any]] | None = None) -> None:
        """Stop every container; with a phase, the pod ends in that phase (eviction, deadline)."""
        with self.lock:
            if self.stopping.is_set():
                return
            self.stopping.set()
            if phase:
                self.phase, self.pod_reason, self.pod_message = phase, reason, message
                self.extra_conditions = conditions or []
        threads = [threading.Thread(target=c.kill, args=(grace, container_reason), daemon=True)
                   for c in self.containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def fault(self, kind: str) -> None:
        LOG.info("pod %s: simulating fault %r", self.key, kind)
        if kind.startswith("signal:"):
            name = kind.split(":", 1)[1].upper()
            sig = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
            if sig is None:
                LOG.warning("pod %s: unknown signal %r", self.key, name)
                return
            for c in self.containers:
                c.send(sig)
        elif kind == "oom":
            for c in self.containers:
                c.reason = "OOMKilled"
                c.send(signal.SIGKILL)
        elif kind == "evict":
            self.stop(
                grace=float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
                phase="Failed", reason="Evicted",
                message="The node was low on resource: memory. Container was using more than its request.",
                conditions=[{
                    "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                    "message": "The node was low on resource: memory.",
                    "lastTransitionTime": now(),
                }],
            )
        else:
            LOG.warning("pod %s: unknown fault %r", self.key, kind)

    def check_deadline(self) -> None:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline and not self.stopping.is_set() and time.monotonic() - self.started_mono > deadline:
            self.stop(
                grace=0, phase="Failed", reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )

    # -- status ---------------------------------------------------------------------------
    def report(self) -> None:
        if self.deleted.is_set():
            return
        running = self.phase == "Running" and all(c.exit_code is None for c in self.containers)
        statuses = [c.status(ready=running) for c in self.containers]
        ts = now()
        conditions = [
            {"type": "Initialized", "status": "True", "lastTransitionTime": self.start_time},
            {"type": "Ready", "status": "True" if running else "False",
             "lastTransitionTime": ts, **({} if running else {"reason": "ContainersNotReady"})},
            {"type": "ContainersReady", "status": "True" if running else "False",
             "lastTransitionTime": ts, **({} if running else {"reason": "ContainersNotReady"})},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.start_time},
            *self.extra_conditions,
        ]
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        }
        if self.pod_reason:
            status["reason"] = self.pod_reason
        if self.pod_message:
            status["message"] = self.pod_message
        self.agent.patch_status(self.meta["namespace"], self.meta["name"], status)


class NodeAgent:
    def __init__(self, node_name: str, state_dir: Path, python: str) -> None:
        self.node_name = node_name
        self.state_dir = state_dir
        self.python = python
        self.use_mount_namespace = os.geteuid() == 0 and shutil.which("unshare") is not None
        cfg = client.Configuration.get_default_copy()
        cfg.connection_pool_maxsize = 64
        self.api = client.CoreV1Api(client.ApiClient(cfg))
        host = cfg.host.split("://", 1)[-1]
        self.api_host, _, port = host.rpartition(":")
        self.api_port = int(port or 443)
        self.labels = {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux",
                       "node.limetask.io/local-agent": "true"}
        self.workers: dict[str, PodWorker] = {}
        self.done: dict[str, float] = {}  # uid -> when its worker finished
        self.lock = threading.Lock()

    # -- node -----------------------------------------------------------------------------
    def register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "labels": self.labels}}
        try:
            self.api.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.heartbeat()

    def heartbeat(self) -> None:
        ts = now()
        status = {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "local node agent is posting ready status",
                 "lastHeartbeatTime": ts, "lastTransitionTime": ts},
            ],
            "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "10000"},
            "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "10000"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "nodeInfo": {"kubeletVersion": "local-agent", "operatingSystem": "linux",
                         "architecture": os.uname().machine, "containerRuntimeVersion": "local://process",
                         "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                         "osImage": "local", "kubeProxyVersion": ""},
        }
        try:
            self.api.patch_node_status(self.node_name, {"status": status})
        except Exception as exc:  # noqa: BLE001 - the next beat will do
            LOG.warning("node heartbeat failed: %s", exc)

    # -- API helpers ----------------------------------------------------------------------
    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Report a pod's status, retrying until the API server takes it, as a kubelet does.

        A status lost while the API server restarts would leave the pod Running forever.
        """
        delay, deadline = 0.2, time.monotonic() + 600
        while True:
            try:
                self.api.patch_namespaced_pod_status(name, namespace, {"status": status})
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                problem = f"{exc.status} {exc.reason}"
            except Exception as exc:  # noqa: BLE001 - connection trouble: retry
                problem = str(exc)
            if time.monotonic() > deadline:
                LOG.error("pod %s/%s: giving up reporting status: %s", namespace, name, problem)
                return
            LOG.warning("pod %s/%s: status update failed (%s), retrying", namespace, name, problem)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def read_ref_data(self, pod: dict[str, Any], source: dict[str, Any]) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        if "configMapRef" in source:
            try:
                cm = self.api.read_namespaced_config_map(source["configMapRef"]["name"], ns)
                return dict(cm.data or {})
            except ApiException:
                return {}
        if "secretRef" in source:
            try:
                s = self.api.read_namespaced_secret(source["secretRef"]["name"], ns)
                return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
            except ApiException:
                return {}
        return {}

    def resolve_value_from(self, pod: dict[str, Any], spec: dict[str, Any], ref: dict[str, Any]) -> str | None:
        ns = pod["metadata"]["namespace"]
        if "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": pod["metadata"]["name"], "metadata.namespace": ns,
                "metadata.uid": pod["metadata"]["uid"], "spec.nodeName": self.node_name,
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
                "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1",
            }
            if path.startswith("metadata.labels['"):
                return (pod["metadata"].get("labels") or {}).get(path[17:-2])
            if path.startswith("metadata.annotations['"):
                return (pod["metadata"].get("annotations") or {}).get(path[22:-2])
            return fields.get(path)
        try:
            if "secretKeyRef" in ref:
                s = self.api.read_namespaced_secret(ref["secretKeyRef"]["name"], ns)
                raw = (s.data or {}).get(ref["secretKeyRef"]["key"])
                return base64.b64decode(raw).decode() if raw else None
            if "configMapKeyRef" in ref:
                cm = self.api.read_namespaced_config_map(ref["configMapKeyRef"]["name"], ns)
                return (cm.data or {}).get(ref["configMapKeyRef"]["key"])
        except ApiException:
            return None
        return None

    def bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
        try:
            # _preload_content=False: the client cannot parse the Status this call returns.
            self.api.create_namespaced_binding(meta["namespace"], body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                LOG.warning("pod %s/%s: bind failed: %s", meta["namespace"], meta["name"], exc.reason)

    def finalize_delete(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.api.delete_namespaced_pod(
                name, namespace, grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                LOG.warning("pod %s/%s: final delete failed: %s", namespace, name, exc.reason)

    # -- event handling -------------------------------------------------------------------
    def forget(self, worker: PodWorker, finished: bool) -> None:
        with self.lock:
            uid = worker.meta["uid"]
            if self.workers.get(uid) is worker:
                del self.workers[uid]
                self.done[uid] = time.monotonic()
        if finished and worker.stopping.is_set() and self.pod_deleting(worker):
            self.finalize_delete(worker.meta["namespace"], worker.meta["name"], worker.meta["uid"])

    def pod_deleting(self, worker: PodWorker) -> bool:
        try:
            pod = self.api.read_namespaced_pod(worker.meta["name"], worker.meta["namespace"])
        except ApiException:
            return False
        return pod.metadata.uid == worker.meta["uid"] and pod.metadata.deletion_timestamp is not None

    def handle(self, event_type: str, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        uid = meta["uid"]
        node = spec.get("nodeName")
        if event_type == "DELETED":
            with self.lock:
                worker = self.workers.pop(uid, None)
                self.done.pop(uid, None)
            if worker:
                worker.deleted.set()
                threading.Thread(target=worker.stop, args=(0,), daemon=True).start()
            return
        if not node:
            # As the scheduler would: a pod whose nodeSelector this node does not match stays
            # Pending (the benchmark uses that to measure the operator alone).
            selector = spec.get("nodeSelector") or {}
            if any(self.labels.get(k) != v for k, v in selector.items()):
                return
            if not meta.get("deletionTimestamp"):
                threading.Thread(target=self.bind, args=(pod,), daemon=True).start()
            return
        if node != self.node_name:
            return
        with self.lock:
            worker = self.workers.get(uid)
            finished_before = uid in self.done
        if meta.get("deletionTimestamp"):
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            if worker:
                worker.deleted.set()
                def stop_then_delete(w: PodWorker = worker) -> None:
                    w.stop(grace)
                    # stop() returns at once when the pod is already stopping (an earlier
                    # event of this deletion, an eviction, a deadline): the object goes only
                    # once every container has exited, as with a kubelet.
                    w.thread.join()
                    self.finalize_delete(meta["namespace"], meta["name"], uid)
                threading.Thread(target=stop_then_delete, daemon=True).start()
            else:
                threading.Thread(target=self.finalize_delete, args=(meta["namespace"], meta["name"], uid),
                                 daemon=True).start()
            return
        if worker:
            worker.pod = pod
            fault = (meta.get("annotations") or {}).get(FAULT_ANNOTATION)
            if fault and getattr(worker, "fault_done", None) != fault:
                worker.fault_done = fault  # type: ignore[attr-defined]
                threading.Thread(target=worker.fault, args=(fault,), daemon=True).start()
            return
        phase = status.get("phase", "Pending")
        if finished_before or phase in ("Succeeded", "Failed"):
            return
        if status.get("startTime") and phase == "Running":
            # Running before this agent started: its process is gone, as after a node reboot.
            threading.Thread(target=self.report_lost, args=(pod,), daemon=True).start()
            return
        worker = PodWorker(self, pod)
        with self.lock:
            self.workers[uid] = worker
        worker.thread.start()

    def report_lost(self, pod: dict[str, Any]) -> None:
        ts = now()
        statuses = [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
            "restartCount": 0, "started": False,
            "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                     "message": "The container could not be located when the pod was terminated",
                                     "startedAt": ts, "finishedAt": ts}},
        } for c in pod["spec"].get("containers", [])]
        self.patch_status(pod["metadata"]["namespace"], pod["metadata"]["name"],
                          {"phase": "Failed", "containerStatuses": statuses})

    def housekeeping(self) -> None:
        while True:
            try:
                self._housekeeping()
            except Exception:  # noqa: BLE001 - e.g. the API server restarting: never stop enforcing
                LOG.exception("housekeeping failed; going on")
                time.sleep(1)

    def _housekeeping(self) -> None:
        last_beat = 0.0
        while True:
            time.sleep(0.5)
            with self.lock:
                workers = list(self.workers.values())
                cutoff = time.monotonic() - 600
                for uid in [u for u, t in self.done.items() if t < cutoff]:
                    del self.done[uid]
            for w in workers:
                w.check_deadline()
            if time.monotonic() - last_beat > 20:
                last_beat = time.monotonic()
                self.heartbeat()

    def run(self) -> None:
        self.register()
        threading.Thread(target=self.housekeeping, name="housekeeping", daemon=True).start()
        api_client = self.api.api_client
        LOG.info("node %s ready (mount namespaces: %s, python: %s)", self.node_name,
                 self.use_mount_namespace, self.python)
        while True:
            try:
                listing = self.api.list_pod_for_all_namespaces(_preload_content=False)
                data = json.loads(listing.data)
                version = data["metadata"]["resourceVersion"]
                for item in data["items"]:
                    self.handle("ADDED", item)
                w = watch.Watch()
                for event in w.stream(self.api.list_pod_for_all_namespaces, resource_version=version,
                                      timeout_seconds=60, allow_watch_bookmarks=True,
                                      _request_timeout=90):
                    raw = event.get("raw_object") or api_client.sanitize_for_serialization(event["object"])
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.handle(event["type"], raw)
                    version = raw.get("metadata", {}).get("resourceVersion", version)
            except ApiException as exc:
                if exc.status != 410:
                    LOG.warning("pod watch failed: %s; relisting", exc.reason)
                    time.sleep(1)
            except Exception as exc:  # noqa: BLE001 - API server restarts: relist and go on
                LOG.warning("pod watch interrupted: %s; relisting", exc)
                time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="local-node")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    python = os.environ.get("LIMETASK_NODE_PYTHON") or sys.executable
    agent = NodeAgent(args.node_name, args.state_dir, python)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    agent.run()


if __name__ == "__main__":
    main()
