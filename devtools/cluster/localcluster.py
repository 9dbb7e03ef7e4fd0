"""A real Kubernetes control plane on this machine, without Docker.

    python devtools/cluster/localcluster.py up       # start (or reuse) it; prints the kubeconfig
    python devtools/cluster/localcluster.py down     # stop it and remove its state
    python devtools/cluster/localcluster.py status
    python devtools/cluster/localcluster.py restart-apiserver

etcd (Debian's etcd-server), kube-apiserver and kube-controller-manager (built from Debian's
`kubernetes` source package by build-binaries.sh), and the local node agent (nodeagent.py)
in place of a kubelet. The API server listens on loopback only, with TLS, token
authentication and RBAC. Ports are chosen free at start, so several clones can each run one.

State lives in `.cluster/` at the top of the repository (or `LIMETASK_CLUSTER_DIR`). It holds
the admin token and every key, so only its owner may enter it (mode 0700, secrets 0600; fixed
again each time `up` reuses it), etcd accepts only clients with a certificate of its own CA,
and the node agent hides it from containers. The containers' private folders live outside
it, in a folder of their own under /var/tmp that `down` removes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE = Path(os.environ.get("LIMETASK_CLUSTER_DIR") or REPO / ".cluster")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "nodeagent")
NODE_NAME = "local-node"
NODE_WORK_ROOT = Path("/var/tmp")  # not /tmp: every container gets a private /tmp
NODE_WORK_PREFIX = "limetask-node-"


def say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries() -> Path:
    """The cached Kubernetes binaries, built on first use."""
    try:
        out = subprocess.run(
            ["bash", str(HERE / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise ClusterError("building the Kubernetes binaries failed (see above)") from exc
    return Path(out.strip().splitlines()[-1])


def kubeconfig_path(state: Path = STATE) -> Path:
    return state / "kubeconfig"


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
    return pid


def healthy(state: Path = STATE) -> bool:
    """Every component runs and the API server answers /readyz."""
    if not all(pid_of(c, state) for c in COMPONENTS):
        return False
    try:
        cfg = json.loads((state / "cluster.json").read_text())
        return api_ready(cfg["server"], cfg["token"], state / "pki" / "ca.crt")
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


def make_pki(pki: Path) -> None:
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=limetask-local-ca",
            "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))
    sign(pki, "apiserver", "ca", ("-newkey", "rsa:2048"), "/CN=kube-apiserver",
         "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
         "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\n"
         "extendedKeyUsage=serverAuth\n")
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
        if entry.is_symlink():
            continue
        entry.chmod(0o700 if entry.is_dir() else 0o600)
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
                                start_new_session=True, env=env, umask=0o077)
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


def start_apiserver(state: Path, bin_dir: Path, cfg: dict[str, object]) -> None:
    pki = state / "pki"
    if cfg.get("etcd_tls"):
        etcd = [f"--etcd-servers=https://127.0.0.1:{cfg['etcd_port']}", f"--etcd-cafile={pki / 'etcd-ca.crt'}",
                f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
                f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}"]
    else:  # a cluster started before etcd required certificates
        etcd = [f"--etcd-servers=http://127.0.0.1:{cfg['etcd_port']}"]
    spawn("kube-apiserver", [
        str(bin_dir / "kube-apiserver"), *etcd,
        "--bind-address=127.0.0.1", f"--secure-port={cfg['api_port']}", "--insecure-port=0",
        "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--token-auth-file={state / 'tokens.csv'}", "--anonymous-auth=false",
        "--authorization-mode=RBAC",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--api-audiences=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,LimitRanger,ResourceQuota,"
        "DefaultTolerationSeconds",
        "--feature-gates=TTLAfterFinished=true",
        "--max-requests-inflight=800", "--max-mutating-requests-inflight=400",
        "--watch-cache=true", "--event-ttl=15m",
        "--profiling=false", "--v=1",
    ], state)


def start_controller_manager(state: Path, bin_dir: Path) -> None:
    pki = state / "pki"
    spawn("kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={state / 'controller-manager.kubeconfig'}",
        "--controllers=job,garbagecollector,ttl-after-finished,namespace,serviceaccount-token,serviceaccount",
        "--feature-gates=TTLAfterFinished=true",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        "--bind-address=127.0.0.1", "--secure-port=0", "--port=0",
        "--leader-elect=false", "--use-service-account-credentials=false",
        # The defaults (20 QPS, burst 30) make the job controller the bottleneck under bursts.
        "--kube-api-qps=300", "--kube-api-burst=600",
        "--concurrent-gc-syncs=20", "--v=1",
    ], state)


def start_nodeagent(state: Path, work_dir: Path) -> None:
    env = dict(os.environ)
    env.setdefault("LIMETASK_NODE_PYTHON", sys.executable)
    spawn("nodeagent", [sys.executable, str(HERE / "nodeagent.py"),
                        f"--kubeconfig={state / 'nodeagent.kubeconfig'}", f"--node-name={NODE_NAME}",
                        f"--state-dir={state / 'node'}", f"--work-dir={work_dir}", f"--hide={state}"],
          state, env=env)


def node_work_dir(state: Path) -> Path | None:
    """The containers' folders of the cluster in `state`, if it made one."""
    try:
        path = Path(json.loads((state / "cluster.json").read_text())["node_dir"])
    except (OSError, KeyError, ValueError, TypeError):
        return None
    ok = path.parent == NODE_WORK_ROOT and path.name.startswith(NODE_WORK_PREFIX)
    return path if ok else None


def up(state: Path = STATE) -> Path:
    if healthy(state):
        secure_state(state)
        say(f"already running; kubeconfig: {kubeconfig_path(state)}")
        return kubeconfig_path(state)
    if state.exists():
        say("a previous run is not healthy: cleaning it up")
        down(state, quiet=True)
    missing = [c for c in ("etcd", "openssl") if not shutil.which(c)]
    if missing:
        raise ClusterError(f"missing {', '.join(missing)}: apt-get install -y etcd-server openssl (or run `make deps`)")
    bin_dir = binaries()
    started = time.monotonic()
    state.mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    say("1/5 certificates and tokens")
    make_pki(state / "pki")
    try:
        work_dir = Path(tempfile.mkdtemp(prefix=NODE_WORK_PREFIX, dir=NODE_WORK_ROOT))
    except OSError as exc:
        raise ClusterError(f"cannot make the containers' folder in {NODE_WORK_ROOT}: {exc}") from exc
    cfg: dict[str, object] = {
        "etcd_port": free_port(), "etcd_peer_port": free_port(), "api_port": free_port(),
        "token": secrets.token_hex(24), "etcd_tls": True, "node_dir": str(work_dir),
    }
    cfg["server"] = f"https://127.0.0.1:{cfg['api_port']}"
    cm_token, agent_token = secrets.token_hex(24), secrets.token_hex(24)
    (state / "tokens.csv").write_text(
        f'{cfg["token"]},limetask-admin,limetask-admin,"system:masters"\n'
        f'{cm_token},system:kube-controller-manager,system:kube-controller-manager,"system:masters"\n'
        f'{agent_token},system:node:{NODE_NAME},system:node:{NODE_NAME},"system:masters"\n'
    )
    (state / "tokens.csv").chmod(0o600)
    ca = state / "pki" / "ca.crt"
    write_kubeconfig(kubeconfig_path(state), str(cfg["server"]), ca, str(cfg["token"]), "limetask-admin")
    write_kubeconfig(state / "controller-manager.kubeconfig", str(cfg["server"]), ca, cm_token,
                     "system:kube-controller-manager")
    write_kubeconfig(state / "nodeagent.kubeconfig", str(cfg["server"]), ca, agent_token, f"system:node:{NODE_NAME}")
    (state / "cluster.json").write_text(json.dumps(cfg))
    secure_state(state)

    say(f"2/5 etcd on 127.0.0.1:{cfg['etcd_port']}")
    pki = state / "pki"
    peer = f"https://127.0.0.1:{cfg['etcd_peer_port']}"
    spawn("etcd", [
        "etcd", "--name=default", f"--data-dir={state / 'etcd'}",
        f"--listen-client-urls=https://127.0.0.1:{cfg['etcd_port']}",
        f"--advertise-client-urls=https://127.0.0.1:{cfg['etcd_port']}",
        f"--cert-file={pki / 'etcd.crt'}", f"--key-file={pki / 'etcd.key'}",
        "--client-cert-auth", f"--trusted-ca-file={pki / 'etcd-ca.crt'}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--peer-cert-file={pki / 'etcd.crt'}", f"--peer-key-file={pki / 'etcd.key'}",
        "--peer-client-cert-auth", f"--peer-trusted-ca-file={pki / 'etcd-ca.crt'}",
        f"--initial-cluster=default={peer}", "--quota-backend-bytes=4294967296",
        "--snapshot-count=50000", "--log-level=warn",
    ], state)
    wait_for("etcd", lambda: port_open(int(cfg["etcd_port"])), 30, state, "etcd")  # type: ignore[arg-type]

    say(f"3/5 kube-apiserver on {cfg['server']}")
    start_apiserver(state, bin_dir, cfg)
    wait_for("kube-apiserver /readyz", lambda: api_ready(str(cfg["server"]), str(cfg["token"]), ca), 90, state,
             "kube-apiserver")

    say("4/5 kube-controller-manager (job, garbage collector, ttl-after-finished, namespace, service accounts)")
    start_controller_manager(state, bin_dir)
    say("5/5 local node agent")
    start_nodeagent(state, work_dir)
    wait_for("node Ready", lambda: node_ready(state), 60, state, "nodeagent")
    wait_for("default service account", lambda: default_sa(state), 60, state, "kube-controller-manager")
    secure_state(state)
    say(f"ready in {time.monotonic() - started:.1f}s")
    say(f"kubeconfig: {kubeconfig_path(state)}   (export KUBECONFIG={kubeconfig_path(state)})")
    return kubeconfig_path(state)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def kubectl_json(state: Path, *args: str) -> dict[str, object] | None:
    kubectl = kubectl_path()
    out = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig_path(state)}", *args, "-o", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def kubectl_path() -> Path:
    return binaries() / "kubectl"


def node_ready(state: Path) -> bool:
    node = kubectl_json(state, "get", "node", NODE_NAME)
    if not node:
        return False
    conds = node.get("status", {}).get("conditions", [])  # type: ignore[attr-defined]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


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


def down(state: Path = STATE, quiet: bool = False) -> None:
    for name in reversed(COMPONENTS):
        stop_pid(name, state)
    # Container processes the node agent started run in sessions of their own.
    for pidfile in (state / "node").glob("pods/*/*/pid"):
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    kill_orphans(state)
    work_dir = node_work_dir(state)
    if work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
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
    cfg = json.loads((state / "cluster.json").read_text())
    stop_pid("kube-apiserver", state)
    time.sleep(pause)
    start_apiserver(state, binaries(), cfg)
    wait_for("kube-apiserver /readyz", lambda: api_ready(cfg["server"], cfg["token"], state / "pki" / "ca.crt"),
             90, state, "kube-apiserver")


def status(state: Path = STATE) -> int:
    for name in COMPONENTS:
        pid = pid_of(name, state)
        print(f"{name:26} {'running (pid %d)' % pid if pid else 'stopped'}")
    ok = healthy(state)
    print(f"{'api':26} {'ready' if ok else 'not ready'}")
    if ok:
        print(f"{'kubeconfig':26} {kubeconfig_path(state)}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "restart-apiserver", "kubeconfig"])
    args = parser.parse_args()
    try:
        if args.command == "up":
            print(up())
        elif args.command == "down":
            down()
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
