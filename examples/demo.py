"""`make demo`: a real task end to end on the local cluster (a real node), then one FAILURE.

Installs the CRD, starts the operator, sends the acme solution's tasks with `send_task`, and
shows each status change as it happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devtools" / "cluster"))

import localcluster  # noqa: E402

NAMESPACE = "limetask-demo"


def step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def main() -> int:
    kubeconfig = localcluster.up()
    # kubectl's discovery cache (~/.kube/cache) may predate the CRD: it would not know `lt`.
    # The demo's kubectl calls share a cache of their own, made after the CRD is established.
    cache = tempfile.mkdtemp(prefix="limetask-demo-kubectl-")
    kubectl = [str(localcluster.kubectl_path()), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}"]
    os.environ["LIMETASK_KUBECONFIG"] = str(kubeconfig)
    step("installing the LimeTask CRD")
    subprocess.run([*kubectl, "apply", "-f", str(REPO / "crds")], check=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established",
                    "crd/limetasks.limetask.io", "--timeout=30s"], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(cache, ignore_errors=True)
    step(f"a task namespace '{NAMESPACE}' that enforces Pod Security 'restricted'")
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}}}
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(manifest), text=True, check=True)
    step(f"starting the operator; tasks run in {localcluster.IMAGES['acme-runner']} on the node "
         "(log: .cluster/logs/demo-operator.log)")
    log = open(REPO / ".cluster" / "logs" / "demo-operator.log", "ab")
    env = {**os.environ, "LIMETASK_RUNNER_IMAGE": localcluster.IMAGES["acme-runner"]}
    operator = subprocess.Popen([sys.executable, "-m", "limetask_operator", "--namespace", NAMESPACE],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        from lime_task import Application, configure, get_status, send_task

        configure(kubeconfig=kubeconfig, namespace=NAMESPACE)
        app = Application("my-app-name")
        started = time.monotonic()

        def show(status) -> None:  # type: ignore[no-untyped-def]
            extra = ""
            if status.status == "SUCCESS":
                extra = f"  result={status.result!r}"
            elif status.status == "FAILURE":
                extra = f"  error={status.error}"
            print(f"   {time.monotonic() - started:6.2f}s  {status.status:8}{extra}", flush=True)

        step("send_task('acme_solution.tasks.lime.get_lime_company', app, 1001, ['name', 'phone'])")
        status = send_task("acme_solution.tasks.lime.get_lime_company", app, 1001, ["name", "phone"])
        print(f"   task id {status.id}")
        final = status.wait(timeout=120, on_change=show)
        again = get_status(final.id, "my-app-name")
        print(f"   get_status(id, 'my-app-name') -> {again.status}, {again.result!r}")

        step("send_task('acme_solution.tasks.lime.fail', app, 'the CRM said no')  # raises ValueError")
        started = time.monotonic()
        failed = send_task("acme_solution.tasks.lime.fail", app, "the CRM said no").wait(timeout=120, on_change=show)

        step("kubectl get limetasks")
        subprocess.run([*kubectl, "get", "lt", "-n", NAMESPACE], check=True)
        ok = final.status == "SUCCESS" and failed.status == "FAILURE"
        print("\ndemo", "finished: one SUCCESS with its result, one FAILURE with its error" if ok else "FAILED")
        print(f"the cluster keeps running; `export KUBECONFIG={kubeconfig}` to look around, "
              f"`make cluster-down` to stop it")
        return 0 if ok else 1
    finally:
        operator.terminate()
        operator.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
