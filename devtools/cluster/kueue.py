"""Kueue (sigs.k8s.io/kueue) on the running local cluster, webhooks included.

    python devtools/cluster/kueue.py up       # install it (idempotent); prints its log's path
    python devtools/cluster/kueue.py down     # uninstall it: nothing of Kueue stays in the cluster
    python devtools/cluster/kueue.py status

Kueue's manager runs as a host process beside the control plane (as the cluster's own
components do), built from its Go module by build-kueue.sh (cached), with the cluster's admin
kubeconfig. Its CRDs are the release's own (config/components/crd/bases), and the CRDs that
the release converts by webhook get that webhook. Its webhooks are the release's
(config/components/webhook/manifests.yaml), reached by `url: https://127.0.0.1:<port>/<path>`
with a serving certificate of a CA of its own, since no Service can lead to a host process.

Only what it is configured for is registered, so that nothing else in the cluster depends on
it: the webhooks of Kueue's own resources and of batch/v1 Jobs (the one integration enabled),
and the Jobs' only for Jobs that carry `kueue.x-k8s.io/queue-name` (an objectSelector). With
`manageJobsWithoutQueueName: false`, Kueue ignores every other Job too: other tests' Jobs are
neither touched nor held up when Kueue is down.

`waitForPodsReady` is on (WAIT_FOR_PODS_READY): a Job whose pods are not ready within the
timeout is evicted (suspended) and requeued after a short backoff.

State lives in `kueue/` of the cluster's state folder (so `localcluster.py down` removes it, and
stops the process, whose command line names it). One fixed host path: Kueue reads a metrics
serving certificate from /etc/kueue/metrics/certs whenever it does not manage certificates
itself (its metrics server is off here); `up` writes one there if none is, and `down` removes
what `up` wrote.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import localcluster  # noqa: E402
from localcluster import STATE, ClusterError  # noqa: E402

GROUP = "kueue.x-k8s.io"
COMPONENT = "kueue"
NAMESPACE = "kueue-system"
QUEUE_LABEL = f"{GROUP}/queue-name"
# The release's kustomization prefixes every name with "kueue-".
WEBHOOK_CONFIGS = {"MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
                   "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration"}
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")  # fixed in Kueue's main.go
# Kueue's waitForPodsReady: a Job whose pods are not all ready this long after admission is
# evicted and requeued. Short, so that tests see it within a minute; still long enough for a
# runner pod on a busy two-core machine (its image is on the node: a few seconds).
WAIT_FOR_PODS_READY = {
    "timeout": "30s",
    "blockAdmission": False,
    # Requeued after about 5 s, then 10, 20, ... at most 60 s; never given up (null).
    "requeuingStrategy": {"timestamp": "Eviction", "backoffBaseSeconds": 5, "backoffMaxSeconds": 60},
}


def say(msg: str) -> None:
    print(f"[kueue] {msg}", file=sys.stderr, flush=True)


def build() -> Path:
    """The cached release (bin/kueue, config/), built on first use (build-kueue.sh)."""
    return localcluster.built(HERE / "build-kueue.sh", "Kueue")


def home(state: Path = STATE) -> Path:
    return state / "kueue"


def settings(state: Path = STATE) -> dict[str, Any]:
    try:
        return json.loads((home(state) / "kueue.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def kubectl(state: Path, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = Path(str(localcluster.config(state)["bin_dir"])) / "kubectl"
    res = subprocess.run([str(binary), f"--kubeconfig={localcluster.kubeconfig_path(state)}", *args], input=input,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if check and res.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args[:3])}: {res.stderr.strip()}")
    return res


def ready(state: Path = STATE) -> bool:
    """The manager runs and says it is ready (its webhook server serves)."""
    port = settings(state).get("health_port")
    if not port or not localcluster.pid_of(COMPONENT, state):
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
            return bool(resp.status == 200)
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def installed(state: Path = STATE) -> bool:
    """Kueue serves: the manager is ready and both webhook configurations point at it."""
    if not ready(state):
        return False
    url = f"https://127.0.0.1:{settings(state)['webhook_port']}/"
    for kind, name in WEBHOOK_CONFIGS.items():
        res = kubectl(state, "get", kind.lower(), name, "-o", "json", check=False)
        if res.returncode != 0:
            return False
        hooks = json.loads(res.stdout).get("webhooks") or []
        if not hooks or not all(str(h["clientConfig"].get("url", "")).startswith(url) for h in hooks):
            return False
    return True


# -- manifests ------------------------------------------------------------------------------------

def crds(release: Path, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """The release's CRDs; those its kustomization converts by webhook convert through ours."""
    converted = {yaml.safe_load(p.read_text())["metadata"]["name"]
                 for p in sorted((release / "config" / "crd" / "patches").glob("webhook_in_*.yaml"))}
    found = []
    for path in sorted((release / "config" / "crd" / "bases").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["metadata"]["name"] in converted:
            crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "clientConfig": {"url": f"{url}/convert", "caBundle": ca_bundle},
                "conversionReviewVersions": ["v1"]}}
        found.append(crd)
    return found


def _served(hook: dict[str, Any]) -> bool:
    """Whether the manager, as configured here, serves this webhook: Kueue's own resources and
    batch/v1 Jobs. The other integrations' paths are not served, and a webhook that nothing
    serves would refuse every Pod, Deployment or StatefulSet of the cluster."""
    for rule in hook.get("rules") or []:
        groups = set(rule.get("apiGroups") or [])
        if groups == {GROUP}:
            continue
        if groups == {"batch"} and set(rule.get("resources") or []) == {"jobs"}:
            continue
        return False
    return True


def _is_job_hook(hook: dict[str, Any]) -> bool:
    return any("batch" in (r.get("apiGroups") or []) for r in hook.get("rules") or [])


def webhooks(release: Path, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """The release's webhook configurations, reduced to what is served, pointed at `url`."""
    found = []
    for doc in yaml.safe_load_all((release / "config" / "webhook" / "manifests.yaml").read_text()):
        if not doc or doc.get("kind") not in WEBHOOK_CONFIGS:
            continue
        doc["metadata"] = {"name": WEBHOOK_CONFIGS[doc["kind"]]}
        hooks = []
        for hook in doc.get("webhooks") or []:
            if not _served(hook):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": ca_bundle}
            if _is_job_hook(hook):
                # Only Jobs handed to Kueue reach it: the others never wait on it, up or down.
                hook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
            hooks.append(hook)
        doc["webhooks"] = hooks
        found.append(doc)
    return found


def configuration(webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},  # off: nothing scrapes it here
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        # One manager: no lease to wait for.
        "leaderElection": {"leaderElect": False},
        # Our own certificate (the internal one names a Service, which the API server cannot
        # reach a host process by).
        "internalCertManagement": {"enable": False},
        # Only Jobs labelled with a LocalQueue are Kueue's: every other test's Jobs run untouched.
        "manageJobsWithoutQueueName": False,
        "waitForPodsReady": WAIT_FOR_PODS_READY,
        "integrations": {"frameworks": ["batch/job"]},
        # The visibility API server would need an APIService and a port of its own; not used.
        "featureGates": {"VisibilityOnDemand": False},
    }


# -- up, down, status ------------------------------------------------------------------------------

def _certificates(pki: Path) -> None:
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    localcluster.openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                         "-subj", "/CN=limetask-local-kueue-ca", "-keyout", str(pki / "ca.key"),
                         "-out", str(pki / "ca.crt"))
    localcluster.sign(pki, "webhook", "ca", ("-newkey", "rsa:2048"), "/CN=kueue-webhook",
                      "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    serving = pki / "serving"
    serving.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(pki / "webhook.crt", serving / "tls.crt")
    shutil.copy(pki / "webhook.key", serving / "tls.key")
    for key in pki.rglob("*.key"):
        key.chmod(0o600)


def _metrics_certificate(pki: Path) -> bool:
    """Kueue's fixed metrics certificate path; True when this wrote it (down removes it then)."""
    if (METRICS_CERT_DIR / "tls.crt").exists() and (METRICS_CERT_DIR / "tls.key").exists():
        return False
    try:
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki / "webhook.crt", METRICS_CERT_DIR / "tls.crt")
        shutil.copy(pki / "webhook.key", METRICS_CERT_DIR / "tls.key")
        (METRICS_CERT_DIR / "tls.key").chmod(0o600)
    except OSError as exc:
        raise ClusterError(f"Kueue reads a certificate from {METRICS_CERT_DIR}, which cannot be written: "
                           f"{exc}") from exc
    return True


def _apply(state: Path, objects: list[dict[str, Any]]) -> None:
    # Server-side: the largest CRDs are beyond client-side apply's annotation limit.
    kubectl(state, "apply", "--server-side", "--force-conflicts", "--field-manager=limetask-kueue", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def _wait(what: str, check: Any, timeout: float, state: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not localcluster.pid_of(COMPONENT, state):
            raise ClusterError(f"kueue exited while waiting for {what}; last log lines:\n"
                               f"{localcluster.tail_log(state, COMPONENT, 25)}")
        time.sleep(0.3)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; log: {state / 'logs' / 'kueue.log'}\n"
                       f"{localcluster.tail_log(state, COMPONENT, 25)}")


def up(state: Path = STATE) -> Path:
    """Install Kueue into the running local cluster, or find it installed."""
    if not localcluster.healthy(state):
        raise ClusterError("the local cluster is not running: `make cluster-up` first")
    log = state / "logs" / "kueue.log"
    if installed(state):
        say(f"already running; log: {log}")
        return log
    release = build()
    started = time.monotonic()
    if localcluster.pid_of(COMPONENT, state):
        localcluster.stop_pid(COMPONENT, state)  # a manager that is not ready: start afresh
    kh = home(state)
    made_metrics_cert = bool(settings(state).get("metrics_cert_made"))
    shutil.rmtree(kh, ignore_errors=True)
    kh.mkdir(mode=0o700, parents=True)
    cfg = {"release": str(release), "webhook_port": localcluster.free_port(),
           "health_port": localcluster.free_port()}
    url = f"https://127.0.0.1:{cfg['webhook_port']}"
    say(f"1/4 certificates; webhooks at {url}")
    _certificates(kh / "pki")
    cfg["metrics_cert_made"] = _metrics_certificate(kh / "pki") or made_metrics_cert
    (kh / "kueue.json").write_text(json.dumps(cfg))
    ca_bundle = base64.b64encode((kh / "pki" / "ca.crt").read_bytes()).decode()

    say("2/4 CRDs")
    found_crds = crds(release, url, ca_bundle)
    _apply(state, found_crds)
    for crd in found_crds:
        kubectl(state, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}")
    kubectl(state, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))

    say("3/4 the manager")
    (kh / "config.yaml").write_text(yaml.safe_dump(
        configuration(int(cfg["webhook_port"]), int(cfg["health_port"]), kh / "pki" / "serving")))
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(localcluster.kubeconfig_path(state))}
    localcluster.spawn(COMPONENT, [str(release / "bin" / "kueue"), f"--config={kh / 'config.yaml'}",
                                   "--zap-log-level=info"], state, env=env)
    _wait("the manager to be ready", lambda: ready(state), 120, state)

    say("4/4 webhooks")
    _apply(state, webhooks(release, url, ca_bundle))
    # A dry-run create goes through the webhooks: the API server reaches them and trusts them.
    probe = {"apiVersion": f"{GROUP}/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "limetask-probe"}}
    _wait("the API server to call the webhooks",
          lambda: kubectl(state, "create", "--dry-run=server", "-f", "-", input=json.dumps(probe),
                          check=False).returncode == 0, 60, state)
    say(f"ready in {time.monotonic() - started:.1f}s; log: {log}")
    return log


def down(state: Path = STATE) -> None:
    """Uninstall: webhooks first (nothing calls a manager that is going), then the manager, then
    the CRDs with every object of theirs (finalizers the stopped manager cannot clear are cleared)."""
    cfg = settings(state)
    cluster_up = localcluster.healthy(state)
    if cluster_up:
        for kind, name in WEBHOOK_CONFIGS.items():
            kubectl(state, "delete", kind.lower(), name, "--ignore-not-found", check=False)
    localcluster.stop_pid(COMPONENT, state)
    (state / "pids" / f"{COMPONENT}.pid").unlink(missing_ok=True)
    if cluster_up:
        names = [crd["metadata"]["name"] for crd in _served_crds(state)]
        for name in names:
            res = kubectl(state, "get", name, "--all-namespaces", "-o", "json", check=False)
            items = json.loads(res.stdout).get("items") or [] if res.returncode == 0 else []
            for item in items:
                if item["metadata"].get("finalizers"):
                    where = ["-n", item["metadata"]["namespace"]] if item["metadata"].get("namespace") else []
                    kubectl(state, "patch", name, item["metadata"]["name"], *where, "--type=merge",
                            "-p", '{"metadata":{"finalizers":null}}', check=False)
        if names:
            kubectl(state, "delete", "crd", *names, "--ignore-not-found", "--timeout=120s", check=False)
        kubectl(state, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
    if cfg.get("metrics_cert_made"):
        for name in ("tls.crt", "tls.key"):
            (METRICS_CERT_DIR / name).unlink(missing_ok=True)
        for folder in (METRICS_CERT_DIR, METRICS_CERT_DIR.parent, METRICS_CERT_DIR.parent.parent):
            try:
                folder.rmdir()
            except OSError:
                break
    shutil.rmtree(home(state), ignore_errors=True)
    say("uninstalled")


def _served_crds(state: Path) -> list[dict[str, Any]]:
    res = kubectl(state, "get", "crd", "-o", "json", check=False)
    if res.returncode != 0:
        return []
    return [c for c in json.loads(res.stdout).get("items") or [] if c["spec"]["group"] == GROUP]


def status(state: Path = STATE) -> int:
    pid = localcluster.pid_of(COMPONENT, state)
    print(f"{'kueue':26} {'running (pid %d)' % pid if pid else 'stopped'}")
    ok = installed(state) if localcluster.healthy(state) else False
    print(f"{'webhooks':26} {'served' if ok else 'not served'}")
    if pid:
        print(f"{'log':26} {state / 'logs' / 'kueue.log'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args()
    try:
        if args.command == "up":
            print(up())
        elif args.command == "down":
            down()
        else:
            return status()
    except ClusterError as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
