"""A real Kubernetes cluster on this machine, without Docker: one control plane, one real node.

    python devtools/cluster/localcluster.py up       # start (or reuse) it; prints the kubeconfig
    python devtools/cluster/localcluster.py up --simulated   # a control plane and KWOK's simulated nodes
    python devtools/cluster/localcluster.py down     # stop it and remove its state
    python devtools/cluster/localcluster.py status
    python devtools/cluster/localcluster.py images   # build the project's images, load changed ones
    python devtools/cluster/localcluster.py restart-apiserver

Control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler of a current
Kubernetes release, built from Go modules by build-kubernetes.sh (cached). The node: a real
kubelet with containerd 2 (built with it), Debian's runc and the CNI bridge plugin. Images
are the project's own Dockerfiles, built with podman from a local Debian base
(devtools/images/build-images.sh) and imported into the node's containerd; there is no
registry, so pods use the images by name with `imagePullPolicy: IfNotPresent` or `Never`.

Network: the node's pods live on a bridge of the cluster's own (a free 10.244.N.0/24). The
bridge's address, 10.244.N.1, is also the `kubernetes` Service's cluster IP, and the API
server listens there on port 443, so pods reach it the standard way (in-cluster config)
without kube-proxy. The API server listens on no other address; the kubelet, etcd and
containerd listen on loopback or on sockets in the state folder.

Security: TLS everywhere, token authentication, `Node,RBAC` authorization with the
`NodeRestriction` admission plugin (the kubelet is `system:node:localhost` in `system:nodes`),
the kubelet asks the API server before it serves anyone (webhook authorization), etcd takes
only clients with a certificate of its own CA, and Pod Security admission is on (task
namespaces label themselves `restricted`).

State lives in `.cluster/` at the top of the repository (or `LIMETASK_CLUSTER_DIR`; with
`LIMETASK_REUSE_IMAGES=1`, `up` of a running cluster keeps the images it has loaded, so that
another work tree can share it without loading its own images). It holds
the admin token and every key, so only its owner may enter it (mode 0700, secrets 0600).
The kubelet and containerd also use a few fixed host paths (`/var/lib/kubelet/device-plugins`,
`/run/containerd`, `/var/run/netns`, `/var/lib/cni`); `down` cleans what this cluster made.
Pods' cgroups live under a cgroup root of the cluster's own, so two clusters on one machine
(two clones) keep apart.

Simulated nodes (`up --simulated`, for scale: `make soak`): the same control plane, without a
real node, and KWOK (sigs.k8s.io/kwok, built by build-kwok.sh) in its place. KWOK keeps
`SIMULATED_NODES` fake nodes alive and takes their pods through their lifecycle by the Stages
of devtools/kwok/stages.yaml, which end a runner pod as a real worker would (its verdict in the
termination message). Nothing runs in a container, so thousands of pods cost no more than
their API objects. The fake nodes carry the taint and label of `SIMULATED_TAINT` and
`SIMULATED_NODE_LABELS`, which pods must tolerate and select. Such a cluster needs no root, no
bridge and no images: its API server listens on a free port of 127.0.0.1 only. Give it a state
folder of its own (`LIMETASK_CLUSTER_DIR`), beside a cluster with a real node.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE = Path(os.environ.get("LIMETASK_CLUSTER_DIR") or REPO / ".cluster")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet")
# A cluster of simulated nodes runs KWOK where the other runs containerd and a kubelet.
SIMULATED_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_DIR = REPO / "devtools" / "kwok"
# How many simulated nodes, and what each offers (far beyond what a soak's pods request, so that
# the scheduler never holds a pod back for room).
SIMULATED_NODES = int(os.environ.get("LIMETASK_SIMULATED_NODES", "4"))
SIMULATED_CAPACITY = {"cpu": "64", "memory": "512Gi", "pods": "2000"}
SIMULATED_NODE_LABELS = {"type": "kwok"}
# Only pods that tolerate this taint land on a simulated node; a real node's pods never do.
SIMULATED_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
NODE_NAME = "localhost"
PAUSE_IMAGE = "localhost/limetask/pause:3.10"
# The images the project builds (devtools/images/build-images.sh), by the names tests and the
# demo use. A tag that never changes (`dev`), so pods take whatever was loaded last.
IMAGES = {
    "runner": "localhost/limetask/runner:dev",
    "operator": "localhost/limetask/operator:dev",
    "acme-runner": "localhost/limetask/acme-runner:dev",
}
CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")


def say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def built(script: Path, what: str) -> Path:
    """The folder a build script of devtools prints last (its cached binaries), built on first use."""
    try:
        out = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True).stdout
    except subprocess.CalledProcessError as exc:
        raise ClusterError(f"building {what} failed (the step is named above)") from exc
    return Path(out.strip().splitlines()[-1])


def binaries() -> Path:
    """The cached Kubernetes, etcd and containerd binaries, built on first use."""
    return built(HERE / "build-kubernetes.sh", "Kubernetes")


def kubeconfig_path(state: Path = STATE) -> Path:
    return state / "kubeconfig"


def config(state: Path = STATE) -> dict[str, object]:
    return json.loads((state / "cluster.json").read_text())  # type: ignore[no-any-return]


def pid_of(name: str, state: Path = STATE) -> int | None:
    try:
        pid = int((state / "pids" / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:  # a zombie (an exited child not yet reaped) is not running
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return None
    except (OSError, IndexError):
        pass
    return pid


def components(state: Path = STATE) -> tuple[str, ...]:
    """The processes of this cluster: a real node's, or KWOK for simulated ones."""
    try:
        return SIMULATED_COMPONENTS if config(state).get("simulated") else COMPONENTS
    except (OSError, ValueError):
        return COMPONENTS


def simulated(state: Path = STATE) -> bool:
    try:
        return bool(config(state).get("simulated"))
    except (OSError, ValueError):
        return False


def healthy(state: Path = STATE) -> bool:
    """Every component runs and the API server answers /readyz."""
    if not all(pid_of(c, state) for c in components(state)):
        return False
    try:
        cfg = config(state)
        return api_ready(str(cfg["server"]), str(cfg["token"]), state / "pki" / "ca.crt")
    except (OSError, KeyError, ValueError):
        return False


def api_ready(server: str, token: str, ca: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=3) as resp:
            return bool(resp.status == 200)
    except Exception:  # noqa: BLE001 - any failure means not ready yet
        return False


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_pki(pki: Path, api_ip: str) -> None:
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=limetask-local-ca",
            "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))
    sign(pki, "apiserver", "ca", ("-newkey", "rsa:2048"), "/CN=kube-apiserver",
         f"subjectAltName=IP:{api_ip},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
         "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
         "extendedKeyUsage=serverAuth\n")
    # The API server's client certificate towards the kubelet (logs, exec, port-forward).
    sign(pki, "apiserver-kubelet-client", "ca", ("-newkey", "rsa:2048"),
         "/O=system:masters/CN=kube-apiserver-kubelet-client", "extendedKeyUsage=clientAuth\n")
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    # etcd trusts only certificates of its own CA: a process on this machine that reaches its
    # port cannot read or write the cluster's data (its secrets, its RBAC) behind the API.
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
    openssl("req", "-x509", *ec, "-nodes", "-days", "3650", "-subj", "/CN=limetask-local-etcd-ca",
            "-keyout", str(pki / "etcd-ca.key"), "-out", str(pki / "etcd-ca.crt"))
    sign(pki, "etcd", "etcd-ca", ec, "/CN=etcd",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    sign(pki, "apiserver-etcd-client", "etcd-ca", ec, "/CN=kube-apiserver-etcd-client",
         "extendedKeyUsage=clientAuth\n")
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def sign(pki: Path, name: str, ca: str, newkey: tuple[str, ...], subject: str, extensions: str) -> None:
    """A key and a certificate for `name`, signed by the CA `ca` (both in `pki`)."""
    ext = pki / f"{name}.ext"
    ext.write_text(extensions)
    openssl("req", *newkey, "-nodes", "-subj", subject,
            "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.csr"))
    openssl("x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(pki / f"{ca}.crt"),
            "-CAkey", str(pki / f"{ca}.key"), "-CAcreateserial", "-days", "3650", "-extfile", str(ext),
            "-out", str(pki / f"{name}.crt"))


def secure_state(state: Path) -> None:
    """Only the cluster's user may enter its state folder; its secrets are 0600 besides."""
    state.chmod(0o700)
    for entry in state.iterdir():
        if entry.is_symlink() or not entry.is_file():
            continue
        entry.chmod(0o600)
    for entry in (state / "pki").glob("*"):
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(0o600)


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, user: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "limetask-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "limetask-local", "context": {"cluster": "limetask-local", "user": user}}],
        "current-context": "limetask-local",
    }, indent=2))
    path.chmod(0o600)


def spawn(name: str, argv: list[str], state: Path, env: dict[str, str] | None = None) -> None:
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, umask=0o022)
    (state / "pids").mkdir(exist_ok=True)
    (state / "pids" / f"{name}.pid").write_text(str(proc.pid))


def wait_for(what: str, check, timeout: float, state: Path, component: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not pid_of(component, state):
            tail = tail_log(state, component)
            raise ClusterError(f"{component} exited while waiting for {what}; last log lines:\n{tail}")
        time.sleep(0.2)
    log = state / "logs" / f"{component}.log"
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; log: {log}\n"
                       f"{tail_log(state, component)}")


def tail_log(state: Path, component: str, lines: int = 15) -> str:
    try:
        return "\n".join((state / "logs" / f"{component}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- network ----------------------------------------------------------------------------------

def used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], stdout=subprocess.PIPE, text=True, check=False).stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    routes = subprocess.run(["ip", "-4", "route", "show"], stdout=subprocess.PIPE, text=True, check=False).stdout
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if first and first != "default":
            try:
                nets.append(ipaddress.ip_network(first, strict=False))
            except ValueError:
                pass
    return nets


def pick_subnet() -> ipaddress.IPv4Network:
    used = used_networks()
    for n in range(1, 255):
        net = ipaddress.ip_network(f"10.244.{n}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise ClusterError("no free 10.244.N.0/24 for the node's pod network")


def make_bridge(name: str, gateway: str, prefix: int) -> None:
    def ip(*args: str) -> None:
        res = subprocess.run(["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            raise ClusterError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    delete_bridge(name)  # a crashed run's, whose state folder is gone
    ip("link", "add", "name", name, "type", "bridge")
    ip("addr", "add", f"{gateway}/{prefix}", "dev", name)
    ip("link", "set", name, "up")


def delete_bridge(name: str) -> None:
    subprocess.run(["ip", "link", "delete", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- images -----------------------------------------------------------------------------------

def pause_archive(pause_binary: Path, ref: str) -> bytes:
    """A docker-archive tarball of the sandbox image: the static `pause` as its only file."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = pause_binary.read_bytes()
        info = tarfile.TarInfo("pause")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    cfg = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    }).encode()
    cfg_name = f"{hashlib.sha256(cfg).hexdigest()}.json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, payload in ((cfg_name, cfg), (f"{diff_id}/layer.tar", layer_bytes), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def ctr(state: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(str(config(state)["bin_dir"]))
    res = subprocess.run([str(bin_dir / "ctr"), "--address", str(state / "containerd" / "containerd.sock"),
                          "--namespace", "k8s.io", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise ClusterError(f"ctr {' '.join(args)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def import_image(state: Path, tarball: Path, what: str) -> None:
    started = time.monotonic()
    ctr(state, "images", "import", "--platform", "linux/amd64", str(tarball))
    say(f"  loaded {what} into the node's containerd in {time.monotonic() - started:.1f}s")


def container_pid(container_id: str, state: Path = STATE) -> int:
    """The host PID of a running container's first process (`containerd://ID` or `ID`)."""
    wanted = container_id.split("://", 1)[-1]
    for line in ctr(state, "tasks", "list", timeout=30).stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == wanted:
            return int(parts[1])
    raise ClusterError(f"no running container {wanted} on the node")


def load_images(state: Path = STATE) -> None:
    """Build the project's images (cached: seconds when nothing changed) and import into the
    node's containerd those whose archive changed since the last import."""
    say("images: building the project's images (devtools/images/build-images.sh)")
    try:
        out = subprocess.run(["bash", str(REPO / "devtools" / "images" / "build-images.sh")], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
    except subprocess.CalledProcessError as exc:
        raise ClusterError("building the images failed (the step is named above)") from exc
    out_dir = Path(out.strip().splitlines()[-1])
    loaded_file = state / "images.json"
    try:
        loaded = json.loads(loaded_file.read_text())
    except (OSError, ValueError):
        loaded = {}
    for key in IMAGES:
        tarball = out_dir / f"{key}.tar"
        if not tarball.exists():
            raise ClusterError(f"no image archive {tarball}")
        stat = tarball.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        if loaded.get(key) == stamp:
            continue
        import_image(state, tarball, IMAGES[key])
        loaded[key] = stamp
        loaded_file.write_text(json.dumps(loaded))


# -- components -------------------------------------------------------------------------------

def start_etcd(state: Path, bin_dir: Path, cfg: dict[str, object]) -> None:
    pki = state / "pki"
    peer = f"https://127.0.0.1:{cfg['etcd_peer_port']}"
    spawn("etcd", [
        str(bin_dir / "etcd"), "--name=default", f"--data-dir={state / 'etcd'}",
        f"--listen-client-urls=https://127.0.0.1:{cfg['etcd_port']}",
        f"--advertise-client-urls=https://127.0.0.1:{cfg['etcd_port']}",
        f"--cert-file={pki / 'etcd.crt'}", f"--key-file={pki / 'etcd.key'}",
        "--client-cert-auth", f"--trusted-ca-file={pki / 'etcd-ca.crt'}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--peer-cert-file={pki / 'etcd.crt'}", f"--peer-key-file={pki / 'etcd.key'}",
        "--peer-client-cert-auth", f"--peer-trusted-ca-file={pki / 'etcd-ca.crt'}",
        f"--initial-cluster=default={peer}", "--quota-backend-bytes=4294967296",
        "--snapshot-count=50000", "--log-level=warn", "--listen-metrics-urls=",
    ], state)


def start_apiserver(state: Path, bin_dir: Path, cfg: dict[str, object]) -> None:
    pki = state / "pki"
    spawn("kube-apiserver", [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=https://127.0.0.1:{cfg['etcd_port']}", f"--etcd-cafile={pki / 'etcd-ca.crt'}",
        f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
        f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
        f"--bind-address={cfg['api_ip']}", f"--secure-port={cfg.get('api_port', 443)}",
        f"--advertise-address={cfg['api_ip']}",
        # Simulated nodes: no pod reaches the API server through the `kubernetes` Service, whose
        # endpoint could not be the loopback address it listens on.
        f"--endpoint-reconciler-type={'none' if cfg.get('simulated') else 'lease'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=Hostname",
        f"--token-auth-file={state / 'tokens.csv'}", "--anonymous-auth=false",
        "--authorization-mode=Node,RBAC",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--api-audiences=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={cfg['service_range']}",
        "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,LimitRanger,ResourceQuota,"
        "DefaultTolerationSeconds,NodeRestriction,PodSecurity",
        # A lost node's pods are evicted after 20 s rather than 5 minutes.
        "--default-not-ready-toleration-seconds=20", "--default-unreachable-toleration-seconds=20",
        "--max-requests-inflight=800", "--max-mutating-requests-inflight=400",
        "--event-ttl=15m", "--profiling=false", "--v=1",
    ], state)


def start_controller_manager(state: Path, bin_dir: Path) -> None:
    pki = state / "pki"
    controllers = ("job-controller", "garbage-collector-controller", "ttl-after-finished-controller",
                   "namespace-controller", "serviceaccount-token-controller", "serviceaccount-controller",
                   "root-ca-certificate-publisher-controller", "node-lifecycle-controller",
                   "taint-eviction-controller", "pod-garbage-collector-controller",
                   "deployment-controller", "replicaset-controller", "disruption-controller")
    spawn("kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={state / 'controller-manager.kubeconfig'}",
        f"--controllers={','.join(controllers)}",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        "--bind-address=127.0.0.1", "--secure-port=0",
        "--leader-elect=false", "--use-service-account-credentials=false",
        # A node is NotReady 20 s after its last heartbeat (the kubelet renews every 3 s).
        "--node-monitor-period=2s", "--node-monitor-grace-period=20s",
        # The defaults (20 QPS, burst 30) make the job controller the bottleneck under bursts.
        "--kube-api-qps=300", "--kube-api-burst=600",
        "--concurrent-gc-syncs=20", "--v=1",
    ], state)


def start_scheduler(state: Path, bin_dir: Path) -> None:
    path = state / "scheduler.yaml"
    path.write_text(json.dumps({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(state / "scheduler.kubeconfig"), "qps": 200, "burst": 400},
        "leaderElection": {"leaderElect": False},
    }))
    spawn("kube-scheduler", [str(bin_dir / "kube-scheduler"), f"--config={path}", "--secure-port=0", "--v=1"],
          state)


def containerd_config(state: Path, cfg: dict[str, object]) -> Path:
    root = state / "containerd"
    text = f"""version = 3
root = "{root / 'root'}"
state = "{root / 'state'}"
oom_score = 0
[grpc]
  address = "{root / 'containerd.sock'}"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins.'io.containerd.internal.v1.opt']
  path = "{root / 'opt'}"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  # This machine has no CAP_SYS_RESOURCE: a sandbox asking for a lower OOM score would fail.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"
        Root = "{root / 'runc'}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cfg['cni_bin_dir']}"]
    conf_dir = "{state / 'cni' / 'net.d'}"
    max_conf_num = 1
"""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.toml"
    path.write_text(text)
    net_d = state / "cni" / "net.d"
    net_d.mkdir(parents=True, exist_ok=True)
    subnet = ipaddress.ip_network(str(cfg["subnet"]))
    (net_d / "10-limetask.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "limetask",
        "plugins": [{
            "type": "bridge", "bridge": cfg["bridge"], "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(state / "cni" / "ipam"),
                     "ranges": [[{"subnet": str(subnet), "gateway": str(cfg["api_ip"]),
                                  "rangeStart": str(subnet.network_address + 16),
                                  "rangeEnd": str(subnet.broadcast_address - 1)}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
        }],
    }, indent=2))
    return path


def start_containerd(state: Path, bin_dir: Path, cfg: dict[str, object]) -> None:
    path = containerd_config(state, cfg)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"  # its shim is found on PATH
    spawn("containerd", [str(bin_dir / "containerd"), f"--config={path}"], state, env=env)


def cgroup_root_dirs(name: str) -> list[Path]:
    """The cluster's own cgroup root in each mounted hierarchy (v1 controllers, named, unified)."""
    if not CGROUP_FS.is_dir():
        return []
    return [h / name for h in CGROUP_FS.iterdir() if h.is_dir() and not h.is_symlink()]


def make_cgroup_root(name: str) -> None:
    for path in cgroup_root_dirs(name):
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            continue
        if path.parent.name.startswith("cpuset") or (path / "cpuset.cpus").exists():
            for f in ("cpuset.cpus", "cpuset.mems"):
                src = path.parent / f
                if src.exists() and not (path / f).read_text().strip():
                    (path / f).write_text(src.read_text())


def remove_cgroup_root(name: str) -> None:
    """Kill what still runs in the cluster's cgroups, then remove them, deepest first."""
    for path in cgroup_root_dirs(name):
        if not path.exists():
            continue
        deepest_first = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [path]
        for sub in deepest_first:
            try:
                pids = (sub / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for sub in deepest_first:
            for _ in range(20):
                try:
                    sub.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def start_kubelet(state: Path, bin_dir: Path, cfg: dict[str, object]) -> None:
    sock = f"unix://{state / 'containerd' / 'containerd.sock'}"
    kubelet_dir = state / "kubelet"
    (kubelet_dir / "pki").mkdir(parents=True, exist_ok=True)
    (state / "pod-logs").mkdir(exist_ok=True)
    path = kubelet_dir / "config.yaml"
    path.write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": cfg["kubelet_port"], "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": cfg["kubelet_healthz_port"],
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(state / "pki" / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": sock, "imageServiceEndpoint": sock,
        "cgroupDriver": "cgroupfs", "cgroupsPerQOS": True, "cgroupRoot": f"/{cfg['cgroup_root']}",
        "enforceNodeAllocatable": ["pods"],
        # This machine has hybrid cgroups (v1 controllers); Kubernetes 1.35+ refuses them unless told.
        "failCgroupV1": False, "failSwapOn": False,
        "maxOpenFiles": 20000, "oomScoreAdj": 0, "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False, "podLogsDir": str(state / "pod-logs"),
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "5%", "imagefs.available": "5%"},
        # Never remove the loaded images: there is no registry to pull them again from.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "maxPods": 110,
        "nodeStatusUpdateFrequency": "4s", "nodeLeaseDurationSeconds": 12,
        "syncFrequency": "10s", "fileCheckFrequency": "20s", "shutdownGracePeriod": "0s",
        "resolvConf": "/etc/resolv.conf", "registerNode": True,
    }, indent=2))
    spawn("kubelet", [
        str(bin_dir / "kubelet"), f"--config={path}", f"--kubeconfig={state / 'kubelet.kubeconfig'}",
        f"--root-dir={kubelet_dir / 'root'}", f"--cert-dir={kubelet_dir / 'pki'}",
        f"--hostname-override={NODE_NAME}", "--v=1",
    ], state)


def up(state: Path = STATE, simulate: bool = False) -> Path:
    if healthy(state) and simulated(state) != simulate:
        kinds = ("a real node", "simulated nodes")
        raise ClusterError(f"{state} holds a running cluster of {kinds[simulated(state)]}, not of "
                           f"{kinds[simulate]}: give the other one its own LIMETASK_CLUSTER_DIR")
    if simulate:
        return up_simulated(state)
    if healthy(state):
        secure_state(state)
        if os.environ.get("LIMETASK_REUSE_IMAGES") and (state / "images.json").exists():
            # Several work trees sharing one cluster (LIMETASK_CLUSTER_DIR): keep the images it has.
            say("keeping the images already loaded (LIMETASK_REUSE_IMAGES)")
        else:
            load_images(state)
        say(f"already running; kubeconfig: {kubeconfig_path(state)}")
        return kubeconfig_path(state)
    if state.exists():
        say("a previous run is not healthy: cleaning it up")
        down(state, quiet=True)
    missing = [c for c in ("openssl", "ip", "runc", "podman") if not shutil.which(c)]
    cni_bin = next((d for d in ("/usr/lib/cni", "/opt/cni/bin") if Path(d, "bridge").exists()), None)
    if missing or not cni_bin:
        raise ClusterError(f"missing {', '.join(missing) or 'the CNI plugins'}: run `make deps` "
                           "(apt-get install -y openssl iproute2 runc podman containernetworking-plugins)")
    if os.geteuid() != 0:
        raise ClusterError("a real node (kubelet, containerd, a bridge) needs root")
    bin_dir = binaries()
    started = time.monotonic()
    state.mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    say("1/7 network, certificates and tokens")
    ident = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:8]
    subnet = pick_subnet()
    api_ip = str(subnet.network_address + 1)
    cfg: dict[str, object] = {
        "bin_dir": str(bin_dir), "cni_bin_dir": cni_bin,
        "etcd_port": free_port(), "etcd_peer_port": free_port(),
        "kubelet_port": free_port(), "kubelet_healthz_port": free_port(),
        "token": secrets.token_hex(24), "subnet": str(subnet), "api_ip": api_ip,
        # The first address of the Service range is the `kubernetes` Service's: the bridge's.
        "service_range": str(ipaddress.ip_network(f"{subnet.network_address}/28")),
        "bridge": f"lt-{ident}", "cgroup_root": f"limetask-{ident}",
    }
    cfg["server"] = f"https://{api_ip}:443"
    (state / "cluster.json").write_text(json.dumps(cfg))
    make_bridge(str(cfg["bridge"]), api_ip, subnet.prefixlen)
    make_pki(state / "pki", api_ip)
    tokens = {name: secrets.token_hex(24) for name in ("controller-manager", "scheduler", "kubelet")}
    (state / "tokens.csv").write_text(
        f'{cfg["token"]},limetask-admin,limetask-admin,"system:masters"\n'
        f'{tokens["controller-manager"]},system:kube-controller-manager,system:kube-controller-manager,'
        '"system:masters"\n'
        f'{tokens["scheduler"]},system:kube-scheduler,system:kube-scheduler\n'
        f'{tokens["kubelet"]},system:node:{NODE_NAME},system:node:{NODE_NAME},"system:nodes"\n'
    )
    ca = state / "pki" / "ca.crt"
    server = str(cfg["server"])
    write_kubeconfig(kubeconfig_path(state), server, ca, str(cfg["token"]), "limetask-admin")
    write_kubeconfig(state / "controller-manager.kubeconfig", server, ca, tokens["controller-manager"],
                     "system:kube-controller-manager")
    write_kubeconfig(state / "scheduler.kubeconfig", server, ca, tokens["scheduler"], "system:kube-scheduler")
    write_kubeconfig(state / "kubelet.kubeconfig", server, ca, tokens["kubelet"], f"system:node:{NODE_NAME}")
    secure_state(state)

    say(f"2/7 etcd on 127.0.0.1:{cfg['etcd_port']}")
    start_etcd(state, bin_dir, cfg)
    wait_for("etcd", lambda: port_open(int(cfg["etcd_port"])), 30, state, "etcd")  # type: ignore[arg-type]

    say(f"3/7 kube-apiserver on {server}")
    start_apiserver(state, bin_dir, cfg)
    wait_for("kube-apiserver /readyz", lambda: api_ready(server, str(cfg["token"]), ca), 120, state,
             "kube-apiserver")

    say("4/7 kube-controller-manager and kube-scheduler")
    start_controller_manager(state, bin_dir)
    start_scheduler(state, bin_dir)

    say("5/7 containerd, runc and the CNI bridge")
    start_containerd(state, bin_dir, cfg)
    wait_for("containerd", lambda: ctr(state, "version", check=False, timeout=10).returncode == 0, 60, state,
             "containerd")
    pause = state / "pause.tar"
    pause.write_bytes(pause_archive(bin_dir / "pause", PAUSE_IMAGE))
    import_image(state, pause, PAUSE_IMAGE)
    ctr(state, "images", "label", PAUSE_IMAGE, "io.cri-containerd.pinned=pinned", check=False)

    say(f"6/7 kubelet (node '{NODE_NAME}')")
    make_cgroup_root(str(cfg["cgroup_root"]))
    start_kubelet(state, bin_dir, cfg)
    wait_for("the node to be Ready", lambda: node_ready(state), 120, state, "kubelet")
    wait_for("default service account", lambda: default_sa(state), 60, state, "kube-controller-manager")

    say("7/7 the project's images")
    load_images(state)
    secure_state(state)
    say(f"ready in {time.monotonic() - started:.1f}s")
    say(f"kubeconfig: {kubeconfig_path(state)}   (export KUBECONFIG={kubeconfig_path(state)})")
    return kubeconfig_path(state)


def kwok_binaries() -> Path:
    """The cached KWOK binary's folder, built on first use (build-kwok.sh)."""
    return built(HERE / "build-kwok.sh", "KWOK")


def up_simulated(state: Path = STATE) -> Path:
    """A control plane whose nodes KWOK simulates (see the module's docstring)."""
    if healthy(state):
        secure_state(state)
        say(f"already running; kubeconfig: {kubeconfig_path(state)}")
        return kubeconfig_path(state)
    if state.exists():
        say("a previous run is not healthy: cleaning it up")
        down(state, quiet=True)
    if not shutil.which("openssl"):
        raise ClusterError("missing openssl: run `make deps` (apt-get install -y openssl)")
    bin_dir = binaries()
    kwok_dir = kwok_binaries()
    started = time.monotonic()
    state.mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    say("1/5 certificates and tokens")
    api_ip = "127.0.0.1"
    cfg: dict[str, object] = {
        "simulated": True, "bin_dir": str(bin_dir), "kwok_bin_dir": str(kwok_dir),
        "etcd_port": free_port(), "etcd_peer_port": free_port(),
        "token": secrets.token_hex(24), "api_ip": api_ip, "api_port": free_port(),
        # Cluster IPs are only allocated here, never routed: no pod runs, no kube-proxy.
        "service_range": "10.96.0.0/24",
    }
    cfg["server"] = f"https://{api_ip}:{cfg['api_port']}"
    (state / "cluster.json").write_text(json.dumps(cfg))
    make_pki(state / "pki", api_ip)
    tokens = {name: secrets.token_hex(24) for name in ("controller-manager", "scheduler", "kwok")}
    (state / "tokens.csv").write_text(
        f'{cfg["token"]},limetask-admin,limetask-admin,"system:masters"\n'
        f'{tokens["controller-manager"]},system:kube-controller-manager,system:kube-controller-manager,'
        '"system:masters"\n'
        f'{tokens["scheduler"]},system:kube-scheduler,system:kube-scheduler\n'
        # KWOK stands in for every node's kubelet at once, which the Node authorizer (one node
        # per identity) cannot express.
        f'{tokens["kwok"]},kwok-controller,kwok-controller,"system:masters"\n'
    )
    ca = state / "pki" / "ca.crt"
    server = str(cfg["server"])
    write_kubeconfig(kubeconfig_path(state), server, ca, str(cfg["token"]), "limetask-admin")
    write_kubeconfig(state / "controller-manager.kubeconfig", server, ca, tokens["controller-manager"],
                     "system:kube-controller-manager")
    write_kubeconfig(state / "scheduler.kubeconfig", server, ca, tokens["scheduler"], "system:kube-scheduler")
    write_kubeconfig(state / "kwok.kubeconfig", server, ca, tokens["kwok"], "kwok-controller")
    secure_state(state)

    say(f"2/5 etcd on 127.0.0.1:{cfg['etcd_port']}")
    start_etcd(state, bin_dir, cfg)
    wait_for("etcd", lambda: port_open(int(str(cfg["etcd_port"]))), 30, state, "etcd")

    say(f"3/5 kube-apiserver on {server}")
    start_apiserver(state, bin_dir, cfg)
    wait_for("kube-apiserver /readyz", lambda: api_ready(server, str(cfg["token"]), ca), 120, state,
             "kube-apiserver")

    say("4/5 kube-controller-manager and kube-scheduler")
    start_controller_manager(state, bin_dir)
    start_scheduler(state, bin_dir)

    say(f"5/5 KWOK and {SIMULATED_NODES} simulated nodes")
    start_kwok(state)
    for i in range(SIMULATED_NODES):
        kubectl_apply(state, simulated_node(f"kwok-node-{i}"))
    wait_for(f"{SIMULATED_NODES} simulated nodes to be Ready", lambda: simulated_nodes_ready(state), 60, state,
             "kwok")
    wait_for("default service account", lambda: default_sa(state), 60, state, "kube-controller-manager")
    secure_state(state)
    say(f"ready in {time.monotonic() - started:.1f}s")
    say(f"kubeconfig: {kubeconfig_path(state)}   (export KUBECONFIG={kubeconfig_path(state)})")
    return kubeconfig_path(state)


def simulated_node(name: str) -> dict[str, object]:
    """A Node that KWOK manages (by its label) and that only pods tolerating its taint land on."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {**SIMULATED_NODE_LABELS, "kubernetes.io/hostname": name,
                                               "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"taints": [SIMULATED_TAINT]},
        "status": {"allocatable": SIMULATED_CAPACITY, "capacity": SIMULATED_CAPACITY},
    }


def simulated_nodes_ready(state: Path) -> bool:
    selector = ",".join(f"{k}={v}" for k, v in SIMULATED_NODE_LABELS.items())
    nodes: Any = kubectl_json(state, "get", "nodes", "-l", selector) or {}
    ready = [n for n in nodes.get("items") or []
             if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))]
    return len(ready) >= SIMULATED_NODES


def kubectl_apply(state: Path, obj: dict[str, object]) -> None:
    kubectl = Path(str(config(state)["bin_dir"])) / "kubectl"
    res = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig_path(state)}", "apply", "-f", "-"],
                         input=json.dumps(obj), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise ClusterError(f"kubectl apply: {res.stderr.strip()}")


def start_kwok(state: Path) -> None:
    cfg = config(state)
    selector = ",".join(f"{k}={v}" for k, v in SIMULATED_NODE_LABELS.items())
    spawn("kwok", [
        str(Path(str(cfg["kwok_bin_dir"])) / "kwok"), f"--kubeconfig={state / 'kwok.kubeconfig'}",
        f"--config={KWOK_DIR / 'kwok.yaml'},{KWOK_DIR / 'stages.yaml'}",
        f"--manage-nodes-with-label-selector={selector}",
        # Its INFO logs a line per change of every pod: hundreds of MB in a soak.
        "--v=WARN",
    ], state)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def kubectl_json(state: Path, *args: str) -> dict[str, object] | None:
    kubectl = Path(str(config(state)["bin_dir"])) / "kubectl"  # no build-script run per poll
    out = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig_path(state)}", *args, "-o", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def kubectl_path() -> Path:
    return binaries() / "kubectl"


def node_ready(state: Path) -> bool:
    """The node reports Ready and carries no taint (the not-ready taint goes once the node
    lifecycle controller has seen it Ready)."""
    node = kubectl_json(state, "get", "node", NODE_NAME)
    if not node:
        return False
    conds = node.get("status", {}).get("conditions", [])  # type: ignore[attr-defined]
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
    return ready and not node.get("spec", {}).get("taints")  # type: ignore[attr-defined]


def default_sa(state: Path) -> bool:
    return kubectl_json(state, "get", "serviceaccount", "default", "-n", "default") is not None


def stop_pid(name: str, state: Path, grace: float = 10) -> None:
    pid = pid_of(name, state)
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_of(name, state):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if pid_of(name, state):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_component(name: str, state: Path = STATE) -> None:
    """Start one stopped component again (for tests of faults: a node lost and back)."""
    cfg = config(state)
    bin_dir = Path(str(cfg["bin_dir"]))
    starters = {
        "kubelet": lambda: start_kubelet(state, bin_dir, cfg),
        "containerd": lambda: start_containerd(state, bin_dir, cfg),
        "kube-apiserver": lambda: start_apiserver(state, bin_dir, cfg),
        "kube-scheduler": lambda: start_scheduler(state, bin_dir),
        "kube-controller-manager": lambda: start_controller_manager(state, bin_dir),
        "kwok": lambda: start_kwok(state),
    }
    if pid_of(name, state):
        return
    starters[name]()


def stop_component(name: str, state: Path = STATE, grace: float = 10) -> None:
    """Stop one component (for tests of faults). containerd alone, not its process group: its
    shims, and so the running containers, outlive it, as on a node whose runtime restarts."""
    if name != "containerd":
        stop_pid(name, state, grace)
        return
    pid = pid_of(name, state)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and pid_of(name, state):
            time.sleep(0.1)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def down(state: Path = STATE, quiet: bool = False) -> None:
    try:
        cfg = config(state)
    except (OSError, ValueError):
        cfg = {}
    if cfg and pid_of("kubelet", state) and pid_of("kube-apiserver", state):
        # Let the kubelet take its pods down (their network namespaces and addresses too).
        subprocess.run([str(Path(str(cfg["bin_dir"])) / "kubectl"), f"--kubeconfig={kubeconfig_path(state)}",
                        "delete", "pods", "--all", "--all-namespaces", "--force", "--grace-period=0",
                        "--wait=false"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            res = ctr(state, "containers", "list", "-q", check=False, timeout=10)
            if res.returncode != 0 or not res.stdout.strip():
                break
            time.sleep(0.5)
    for name in reversed(dict.fromkeys(COMPONENTS + SIMULATED_COMPONENTS)):
        stop_pid(name, state)
    kill_orphans(state)  # containerd's shims name the state folder in their command line
    if cfg.get("cgroup_root"):
        remove_cgroup_root(str(cfg["cgroup_root"]))
    for point in mounts_under(state):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if cfg.get("bridge"):
        delete_bridge(str(cfg["bridge"]))
    if state.exists():
        shutil.rmtree(state, ignore_errors=True)
    if not quiet:
        say("stopped; state removed")


def kill_orphans(state: Path) -> None:
    """Processes whose command line names the state directory (leftovers of a crashed run)."""
    marker = str(state)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def restart_apiserver(state: Path = STATE, pause: float = 0.0) -> None:
    """Stop and start the API server (for tests of clients that must ride it out)."""
    cfg = config(state)
    stop_pid("kube-apiserver", state)
    time.sleep(pause)
    start_apiserver(state, Path(str(cfg["bin_dir"])), cfg)
    wait_for("kube-apiserver /readyz",
             lambda: api_ready(str(cfg["server"]), str(cfg["token"]), state / "pki" / "ca.crt"),
             120, state, "kube-apiserver")


def status(state: Path = STATE) -> int:
    for name in components(state):
        pid = pid_of(name, state)
        print(f"{name:26} {'running (pid %d)' % pid if pid else 'stopped'}")
    ok = healthy(state)
    print(f"{'api':26} {'ready' if ok else 'not ready'}")
    if ok:
        print(f"{'kubeconfig':26} {kubeconfig_path(state)}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "images", "restart-apiserver", "kubeconfig"])
    parser.add_argument("--simulated", action="store_true",
                        help="up: a control plane with KWOK's simulated nodes instead of a real node")
    args = parser.parse_args()
    try:
        if args.command == "up":
            print(up(simulate=args.simulated))
        elif args.command == "down":
            down()
        elif args.command == "images":
            if not healthy():
                raise ClusterError("the cluster is not running: `make cluster-up` first")
            if simulated():
                raise ClusterError("a cluster of simulated nodes runs no images")
            load_images()
        elif args.command == "restart-apiserver":
            restart_apiserver()
        elif args.command == "kubeconfig":
            print(kubeconfig_path())
        else:
            return status()
    except ClusterError as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
