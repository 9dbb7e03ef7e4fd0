"""`make demo`: a real task end to end on the local cluster (a real node), then one FAILURE,
then the same task read back from the archive once it has left the cluster.

Installs the CRD, starts the operator (with the local PostgreSQL as its archive, and a short
time in the cluster for finished tasks), sends the acme solution's tasks with `send_task`, shows
each status change as it happens, and reads the finished task through the HTTP endpoint's
results API after the operator has archived it and deleted its LimeTask.
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
ARCHIVE = os.environ.get("LIMETASK_DEMO_ARCHIVE_URL", "postgresql://limetask:limetask@127.0.0.1:5432/limetask")
KEEP_SECONDS = 5


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
    env = {**os.environ, "LIMETASK_RUNNER_IMAGE": localcluster.IMAGES["acme-runner"],
           "LIMETASK_ARCHIVE_URL": ARCHIVE, "LIMETASK_ARCHIVE_KEEP_SECONDS": str(KEEP_SECONDS)}
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

        step(f"history: the operator archives finished tasks in PostgreSQL and deletes their LimeTasks "
             f"{KEEP_SECONDS}s after they finished; the HTTP endpoint's results API serves them")
        archived = read_from_archive(kubeconfig, final.id, "my-app-name")
        print(f"   get_status(id, 'my-app-name') -> {archived.status}, {archived.result!r}, "
              f"archived={archived.archived}")
        ok = final.status == "SUCCESS" and failed.status == "FAILURE" and archived.archived and (
            archived.result == final.result)
        print("\ndemo", "finished: one SUCCESS with its result, one FAILURE with its error, and the SUCCESS "
              "read back from the archive" if ok else "FAILED")
        print(f"the cluster keeps running; `export KUBECONFIG={kubeconfig}` to look around, "
              f"`make cluster-down` to stop it")
        return 0 if ok else 1
    finally:
        operator.terminate()
        operator.wait(timeout=15)


def read_from_archive(kubeconfig: Path, task_id: str, app: str):  # type: ignore[no-untyped-def]
    """Serve the HTTP endpoint (with the archive) here, wait for the task to leave the cluster,
    and read it as a solution would: the client asks the results API, with the application's token."""
    import secrets
    import socket
    import threading

    import uvicorn

    from lime_task import NotFoundError, TaskClient, configure, get_status
    from lime_task.server.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tokens = {app: secrets.token_hex(16)}
    web = create_app(client=TaskClient(kubeconfig=kubeconfig, namespace=NAMESPACE, results_url=""), tokens=tokens,
                     imports=[], archive=ARCHIVE)
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    live = TaskClient(kubeconfig=kubeconfig, namespace=NAMESPACE, results_url="")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            live.get_status(task_id, app)
        except NotFoundError:
            print(f"   the LimeTask {task_id} has left the cluster (kubectl get lt no longer shows it)")
            break
        time.sleep(0.5)
    configure(kubeconfig=kubeconfig, namespace=NAMESPACE, results_url=f"http://127.0.0.1:{port}", results_tokens=tokens)
    try:
        return get_status(task_id, app)
    finally:
        server.should_exit = True


if __name__ == "__main__":
    sys.exit(main())
