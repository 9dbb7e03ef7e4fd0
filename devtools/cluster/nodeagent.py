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
is looked up on the container's PATH.

What a container sees (as root, which the cluster needs for this; see containerinit.py):
  - its user: the container's securityContext runAsUser/runAsGroup, else the pod's; a pod
    that names no user runs as nobody (65534:65534), since the image's user is unknown,
    and a container never runs as root: runAsUser 0 or group 0 fails to start. The
    supplementary groups are the group, fsGroup and supplementalGroups, never root's;
  - its environment: the pod's, plus what a runtime adds (PATH, HOME, HOSTNAME, LANG as the
    Python images set it, KUBERNETES_SERVICE_HOST/PORT); nothing of the agent's own;
  - its files: a private working folder (owned by its user, mode 0700, also its HOME) and a
    private /tmp, both outside the cluster's state folder, each emptyDir volume the pod
    mounts as a private folder on its mountPath, and a private termination-message file
    on its `terminationMessagePath`, all in a mount namespace of its own, where the
    cluster's state folder (`--hide`) is an empty, unreadable folder.
At start the agent checks that the runner's user (10001) can run the interpreter and
import limetask_runner; folders on the way that other users cannot traverse (a home
folder, a CI checkout) are replaced in the container by the folders the interpreter needs,
read-only. When that still fails, pods that run the interpreter fail with a message
naming the folders to open.

Without root the agent can switch neither users nor mount namespaces: containers run as
the agent's user, which owns the cluster's state; it says so loudly at start. Every
environment variable whose value is the terminationMessagePath or a mount path is then
pointed at the private file or folder instead.

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
import pwd
import shutil
import signal
import stat
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
INIT = Path(__file__).resolve().with_name("containerinit.py")
REPO = Path(__file__).resolve().parents[2]
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNNER_UID = 10001  # the operator's runner user (operator/limetask_operator/settings.py)
NOBODY = 65534  # the user of a pod that names none
# Run by LIMETASK_NODE_PYTHON as root: the folders it reads to run limetask_runner.
INTERPRETER_PATHS = """
import json, os, sys
import limetask_runner
paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path,
         os.path.dirname(os.path.realpath(sys.executable))]
for module in list(sys.modules.values()):
    if module.__name__.startswith("__editable__"):
        paths += [str(p) for p in getattr(module, "MAPPING", {}).values()]
    if getattr(module, "__file__", None):
        paths.append(os.path.dirname(module.__file__))
print(json.dumps(paths))
"""


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
        self.dir = agent.state_dir / "pods" / pod_folder_name(pod) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "container.log"
        self.msg_path = self.dir / "termination-log"
        self.error_path = self.dir / "start-error"
        # Outside the cluster's state folder: the container's own folders.
        self.work = agent.pod_work_dir(pod) / "containers" / self.name
        self.tmp = agent.pod_work_dir(pod) / "tmp" / self.name

    # -- starting -------------------------------------------------------------------------
    def command(self, env: dict[str, str]) -> list[str]:
        argv = list(self.spec.get("command") or []) + list(self.spec.get("args") or [])
        if not argv:
            raise RuntimeError(
                "the local node agent cannot read an image's entrypoint: set `command` in the container"
            )
        argv = [expand(a, env) for a in argv]
        if os.path.basename(argv[0]) in PYTHON_NAMES:
            if self.agent.python_problem:
                raise RuntimeError(self.agent.python_problem)
            argv[0] = self.agent.python
        elif "/" not in argv[0]:
            found = shutil.which(argv[0], path=env.get("PATH", CONTAINER_PATH))
            if not found:
                raise RuntimeError(f"executable file not found in $PATH: {argv[0]!r}")
            argv[0] = found
        return argv

    def environment(self) -> dict[str, str]:
        """The pod's environment and what a runtime adds; never the agent's own."""
        pod = self.pod
        env: dict[str, str] = {
            "PATH": CONTAINER_PATH,
            "HOME": str(self.work),
            "LANG": "C.UTF-8",
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

    def mounts(self, uid: int, gid: int) -> list[dict[str, Any]]:
        """The private folders and file the container mounts, parents before children."""
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes") or [] if "emptyDir" in v}
        mounts = []
        for m in self.spec.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                continue  # other volume types are not emulated
            source = self.agent.empty_dir(self.pod, m["name"])
            sub = m.get("subPath") or ""
            if sub:
                if sub.startswith("/") or ".." in Path(sub).parts:
                    raise RuntimeError(f"subPath {sub!r} must be a relative path without '..'")
                volume, source = source, source / sub
                if not os.path.lexists(source):
                    self.agent.private_dir(source, uid, gid, 0o700)
                # The volume is the container's to change: a symbolic link must not lead out of it.
                if not os.path.realpath(source).startswith(os.path.realpath(volume) + "/"):
                    raise RuntimeError(f"subPath {sub!r} leads out of volume {m['name']!r}")
            mounts.append({"source": str(source), "target": m["mountPath"], "readonly": bool(m.get("readOnly"))})
        if not any(os.path.normpath(m["target"]) == "/tmp" for m in mounts):
            mounts.append({"source": str(self.tmp), "target": "/tmp", "readonly": False})
        mounts.sort(key=lambda m: len(Path(m["target"]).parts))
        target = self.spec.get("terminationMessagePath") or "/dev/termination-log"
        return [*mounts, {"source": str(self.msg_path), "target": target, "readonly": False}]

    def start(self) -> None:
        env = self.environment()
        argv = self.command(env)
        uid, gid, groups = self.agent.identity(self.pod, self.spec)
        self.msg_path.write_bytes(b"")
        self.error_path.write_bytes(b"")
        self.agent.private_dir(self.work, uid, gid, 0o700)
        self.agent.private_dir(self.tmp, uid, gid, 0o700)
        mounts = self.mounts(uid, gid)
        workdir = self.spec.get("workingDir")
        if not workdir or not os.path.isdir(workdir):
            workdir = str(self.work)
        log = open(self.log_path, "ab")
        try:
            if self.agent.use_mount_namespace:
                os.chown(self.msg_path, uid, gid)
                self.proc = self.agent.spawn_container({
                    "argv": argv, "env": env, "uid": uid, "gid": gid, "groups": groups, "cwd": workdir,
                    "mounts": mounts, "error_file": str(self.error_path),
                }, stdout=log, stderr=subprocess.STDOUT)
            else:
                env = {k: host_path(v, mounts) for k, v in env.items()}
                env.setdefault("TMPDIR", str(self.tmp))
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
        # containerinit.py execs the command, so this is the command's own status.
        if rc < 0:
            self.signal = -rc
            self.exit_code = 128 - rc
        else:
            self.exit_code = rc
        self.message = self.read_message()
        try:
            start_error = self.error_path.read_text(errors="replace").strip()
        except OSError:
            start_error = ""
        if start_error:
            self.reason, self.message = "StartError", start_error

    def read_message(self) -> str | None:
        try:
            with open(self.msg_path, "rb") as f:
                data = f.read(4096)
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


def pod_folder_name(pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


def host_path(value: str, mounts: list[dict[str, Any]]) -> str:
    """Without a mount namespace: a value naming a mounted path names its private source."""
    for m in mounts:
        target, source = str(m["target"]).rstrip("/") or "/", str(m["source"])
        if value == target or value.startswith(target + "/"):
            return source + value[len(target):]
    return value


def closed_to_others(path: str) -> bool:
    """Users other than its owner and group cannot enter this folder."""
    try:
        return not os.stat(path).st_mode & stat.S_IXOTH
    except OSError:
        return True


def plan_exposure(paths: list[str], hidden: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """For each folder other users cannot traverse, the needed folders below it; and the
    needed folders that no exposure can help (closed themselves, or hidden)."""
    plan: dict[str, list[str]] = {}
    stuck: list[str] = []
    real = sorted({os.path.realpath(p) for p in paths if os.path.isabs(p) and os.path.isdir(p)})
    for path in real:
        if any(path == h or path.startswith(h.rstrip("/") + "/") for h in hidden):
            stuck.append(path)
            continue
        parts = Path(path).parts
        ancestors = [str(Path(*parts[:i])) for i in range(2, len(parts))]
        blocked = next((a for a in ancestors if closed_to_others(a)), None)
        if closed_to_others(path) or closed_to_others("/"):
            stuck.append(path)
        elif blocked:
            kept = plan.setdefault(blocked, [])
            if not any(path.startswith(k + "/") for k in kept):
                kept.append(path)
    return plan, stuck


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
            if all(c.proc is None or c.proc.poll() is not None for c in self.containers):
                self.agent.forget_pod_files(self.pod)
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
    def __init__(self, node_name: str, state_dir: Path, python: str, work_dir: Path,
                 hide: list[Path]) -> None:
        self.node_name = node_name
        self.state_dir = state_dir
        self.python = python
        self.work_dir = work_dir
        self.hide = [str(p.resolve()) for p in [*hide, state_dir]]
        # What containers run must stay visible even where a container mount covers it (the
        # repository with its .venv, cloned below /tmp, under the private /tmp): bound back.
        self.keep = sorted({str(REPO), str(Path(python).absolute().parent.parent)})
        self.use_mount_namespace = os.geteuid() == 0
        self.expose: dict[str, list[str]] = {}  # see plan_exposure
        self.python_problem: str | None = None  # why pods cannot run the interpreter
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

    # -- containers -----------------------------------------------------------------------
    def identity(self, pod: dict[str, Any], spec: dict[str, Any]) -> tuple[int, int, list[int]]:
        """User, group and supplementary groups of a container, as a runtime resolves them."""
        pod_sc = pod["spec"].get("securityContext") or {}
        sc = spec.get("securityContext") or {}
        uid = sc.get("runAsUser") if sc.get("runAsUser") is not None else pod_sc.get("runAsUser")
        gid = sc.get("runAsGroup") if sc.get("runAsGroup") is not None else pod_sc.get("runAsGroup")
        if uid is None:
            uid = NOBODY
        if gid is None:
            try:
                gid = pwd.getpwuid(int(uid)).pw_gid
            except KeyError:
                gid = uid
        extra = [pod_sc["fsGroup"]] if pod_sc.get("fsGroup") is not None else []
        groups = list(dict.fromkeys(int(g) for g in [gid, *extra, *(pod_sc.get("supplementalGroups") or [])]))
        if 0 in (int(uid), int(gid), *groups):
            raise RuntimeError("the local node agent never runs a container as root or in group root "
                               f"(runAsUser {uid}, runAsGroup {gid}, groups {groups})")
        if not self.use_mount_namespace:
            return os.getuid(), os.getgid(), os.getgroups()
        return int(uid), int(gid), groups

    def pod_work_dir(self, pod: dict[str, Any]) -> Path:
        return self.work_dir / pod_folder_name(pod)

    def private_dir(self, path: Path, uid: int, gid: int, mode: int) -> None:
        """A folder only `uid` (and `gid` when the mode says so) may use; its parents only
        let others through, so no container can list the pods of this node."""
        for parent in reversed(path.relative_to(self.work_dir).parents):
            folder = self.work_dir / parent
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                folder.chmod(0o711)
        path.mkdir(exist_ok=True)
        if self.use_mount_namespace:
            os.lchown(path, uid, gid)
        path.chmod(mode)

    def empty_dir(self, pod: dict[str, Any], volume: str) -> Path:
        """An emptyDir volume: one folder per pod, owned by the pod's user (and fsGroup)."""
        path = self.pod_work_dir(pod) / "volumes" / volume
        if not path.is_dir():
            uid, gid, _ = self.identity(pod, {})
            fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
            self.private_dir(path, uid, gid if fs_group is None else int(fs_group),
                             0o770 if fs_group is None else 0o2770)
        return path

    def forget_pod_files(self, pod: dict[str, Any]) -> None:
        shutil.rmtree(self.pod_work_dir(pod), ignore_errors=True)

    def spawn_container(self, spec: dict[str, Any], stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
        """containerinit.py with `spec` on a pipe (the environment may hold secrets)."""
        spec = {**spec, "expose": self.expose, "hide": self.hide, "keep": self.keep}
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(INIT), str(read_end)], env={}, cwd="/",
                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True,
                pass_fds=(read_end,),
            )
        finally:
            os.close(read_end)
        try:
            with open(write_end, "wb") as pipe:
                pipe.write(json.dumps(spec).encode())
        except BrokenPipeError:
            pass  # the process died first: its status says so
        return proc

    def check_python(self) -> None:
        """Make sure the runner's user can run the interpreter, or say loudly why not.

        The repository (and its .venv, and the interpreter that .venv points to) may sit in
        a folder other users cannot enter, such as root's home or a CI checkout.
        """
        if not self.use_mount_namespace:
            LOG.warning("*** not running as root: containers run as this agent's user (uid %d), which owns "
                        "the cluster's state, and see its files; run the cluster as root to isolate them ***",
                        os.getuid())
            return
        out = subprocess.run([self.python, "-c", INTERPRETER_PATHS], env={"PATH": CONTAINER_PATH}, cwd="/",
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            self.python_problem = (f"the node's Python {self.python} (LIMETASK_NODE_PYTHON) cannot import "
                                   f"limetask_runner: {last_line(out.stderr)}")
            LOG.error("*** %s ***", self.python_problem)
            return
        self.expose, stuck = plan_exposure(json.loads(out.stdout), self.hide)
        problem = self.probe()
        if problem:
            if stuck:
                folders = f"open these folders to other users (chmod o+rx): {', '.join(stuck)}"
            else:
                folders = f"make these folders traversable by other users (chmod o+x): {', '.join(self.expose)}"
            self.python_problem = (
                f"the node's Python {self.python} (LIMETASK_NODE_PYTHON) cannot run as uid {RUNNER_UID}, the "
                f"runner's user: {problem}. To fix it, {folders if stuck or self.expose else 'check its files'}; "
                f"or point LIMETASK_NODE_PYTHON at an interpreter every user can run")
            LOG.error("*** %s ***", self.python_problem)
        elif self.expose:
            LOG.info("containers see, read-only, only what the interpreter needs below %s (other users "
                     "cannot traverse those folders): %s", ", ".join(self.expose),
                     ", ".join(p for paths in self.expose.values() for p in paths))

    def probe(self) -> str | None:
        """Why the runner's user cannot import limetask_runner in a container, or None."""
        error = self.state_dir / "python-probe-error"
        error.write_bytes(b"")
        script = "import os, limetask_runner; print(os.getuid())"
        proc = self.spawn_container({
            "argv": [self.python, "-c", script], "env": {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/"},
            "uid": RUNNER_UID, "gid": RUNNER_UID, "groups": [RUNNER_UID], "cwd": "/", "mounts": [],
            "error_file": str(error),
        }, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode == 0 and out.decode().strip() == str(RUNNER_UID):
            return None
        start_error = error.read_text(errors="replace").strip()
        return start_error or last_line(err.decode(errors="replace")) or f"exit status {proc.returncode}"

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
        self.check_python()
        self.register()
        threading.Thread(target=self.housekeeping, name="housekeeping", daemon=True).start()
        api_client = self.api.api_client
        LOG.info("node %s ready (containers isolated: %s, python: %s, container folders: %s)", self.node_name,
                 self.use_mount_namespace, self.python, self.work_dir)
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


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def prepare_work_dir(path: Path) -> Path:
    """The folder of the containers' private folders: this agent's own, enterable by all."""
    path.mkdir(parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise SystemExit(f"--work-dir {path} must be a folder owned by this agent's user")
    path.chmod(0o711)
    return path.resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="local-node")
    parser.add_argument("--state-dir", required=True, type=Path, help="the agent's own files (logs, messages)")
    parser.add_argument("--work-dir", required=True, type=Path,
                        help="the containers' private folders: outside --state-dir and /tmp")
    parser.add_argument("--hide", action="append", type=Path, default=[],
                        help="a folder containers must not see (the cluster's state); repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    python = os.environ.get("LIMETASK_NODE_PYTHON") or sys.executable
    args.state_dir.mkdir(parents=True, exist_ok=True)
    args.state_dir.chmod(0o700)
    agent = NodeAgent(args.node_name, args.state_dir, python, prepare_work_dir(args.work_dir), args.hide)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    agent.run()


if __name__ == "__main__":
    main()
