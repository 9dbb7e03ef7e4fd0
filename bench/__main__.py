"""`make bench`: what the operator costs, measured side by side on the local cluster (a real node).

    python -m bench [--n 300] [--burst 500] [--scale 1000,10000] [--watchlayer 1000,5000]
                    [--only podstart,overhead,burst,submit,scale,ceiling,archive,watchlayer,queues,dashboard,
                     tenants,soak]
    python -m bench --only archive30m     the archive at 30 million tasks (bench/archive_scale.py):
                                          PostgreSQL alone, about an hour on 2 cores; not in the default run

`soak` is `make soak` (bench/soak.py) with its defaults, or the SOAK_DURATION, SOAK_RATE,
SOAK_BURST and SOAK_FAULTS of the environment: on a cluster of simulated nodes of its own, not
the local cluster's real node, so it is run only when named.

Prints a table and writes every figure as JSON to bench-results/ (the path is printed).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devtools" / "cluster"))

import localcluster  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from bench.measure import NOOP, free_port, pct, proc_cpu, proc_mb, say  # noqa: E402

# Scenarios that need PostgreSQL alone (no cluster), and are run only when named with --only.
DATABASE_ONLY = {"archive30m"}

THREADS = 16
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
# Tasks run in the example solution's image on the local node, with small requests so that a
# burst fits on the node's two cores (bare Jobs get the same pod spec, built by the operator's code).
os.environ.setdefault("LIMETASK_RUNNER_IMAGE", localcluster.IMAGES["acme-runner"])
os.environ.setdefault("LIMETASK_RUNNER_RESOURCES", json.dumps({"requests": {"cpu": "10m", "memory": "32Mi"},
                                                               "limits": {"memory": "512Mi"}}))
WATCH_MODES = ("ours", "ours-kopf", "kopf", "kopf-index")  # see bench/watchlayer.py
WATCH_M = 1000  # modifications per watching process
SETTLE_S = 6.0  # after a listing or the modifications: kopf's idle per-object workers exit after 5 s
LIST_CAP_S = 30.0  # a listing not done by then is given up (kopf with an index takes minutes at 5,000)


def answers(url: str, within: float = 30.0) -> bool:
    """Whether a URL answers within `within` seconds (a server starting)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kubeconfig = localcluster.up()
        self.kubectl = str(localcluster.kubectl_path())
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = THREADS * 2
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.results: dict[str, Any] = {"started": dt.datetime.now(dt.timezone.utc).isoformat(),
                                        "machine": {"cpus": os.cpu_count()}}
        self.operator: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        # This run's namespaces only: a previous run's may still be terminating.
        self.run_id = uuid.uuid4().hex[:4]
        subprocess.run([self.kubectl, f"--kubeconfig={self.kubeconfig}", "apply", "-f", str(REPO / "crds")],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([self.kubectl, f"--kubeconfig={self.kubeconfig}", "wait", "--for=condition=Established",
                        "crd/limetasks.limetask.io", "--timeout=30s"], check=True, stdout=subprocess.DEVNULL)

    # -- helpers ------------------------------------------------------------------------------
    def namespace(self, prefix: str) -> str:
        name = f"bench-{self.run_id}-{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
        probe = {"metadata": {"name": "probe"}, "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "none", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}
        for _ in range(300):
            try:
                self.core.create_namespaced_pod(name, probe, dry_run="All")
                break
            except client.ApiException:
                time.sleep(0.1)
        return name

    def drop_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except client.ApiException:
            pass

    def drop_namespace_surely(self, name: str, within: float = 90) -> None:
        """drop_namespace, waiting out an API server that is away for a while (restarted by a test)."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.core.delete_namespace(name)
                return
            except client.ApiException:
                return  # gone already, or going
            except Exception as exc:  # noqa: BLE001 - the connection's errors: try again for a while
                if time.monotonic() > deadline:
                    say(f"could not delete namespace {name}: {exc}")
                    return
                time.sleep(3)

    def start_operator(self, **extra: str) -> None:
        # No Job-creation pacing (LIMETASK_JOB_CREATES_PER_SECOND, 20 by default): the scenarios
        # measure how fast the operator itself goes; the queues scenario measures its limits.
        env = dict(os.environ, LIMETASK_KUBECONFIG=str(self.kubeconfig), LIMETASK_METRICS_PORT=str(self.metrics_port),
                   PYTHONUNBUFFERED="1", LIMETASK_JOB_CREATES_PER_SECOND="0", **extra)
        if self.args.broker:
            env["LIMETASK_BROKER_URL"] = self.args.broker
        log = open(REPO / ".cluster" / "logs" / "bench-operator.log", "ab")
        self.operator = subprocess.Popen([sys.executable, "-m", "limetask_operator", "--namespace",
                                          f"bench-{self.run_id}-*"],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        if not answers(f"http://127.0.0.1:{self.metrics_port}/metrics"):
            raise RuntimeError("the operator did not start; see .cluster/logs/bench-operator.log")

    def stop_operator(self) -> None:
        if self.operator and self.operator.poll() is None:
            self.operator.terminate()
            self.operator.wait(timeout=30)

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def rss_mb(self) -> float:
        assert self.operator is not None
        return proc_mb(self.operator.pid)

    def cpu_seconds(self) -> float:
        assert self.operator is not None
        return proc_cpu(self.operator.pid)

    def task_body(self, name: str, task: str = NOOP, args: list[Any] | None = None) -> dict[str, Any]:
        return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
                "metadata": {"name": name, "labels": {"limetask.io/app": "bench"}},
                "spec": {"task": task, "app": "bench", "args": args or [], "kwargs": {}, "acksLate": False}}

    def add_finished(self, ns: str, name: str, i: int, when: str) -> None:
        """A LimeTask made as the operator leaves a finished one: SUCCESS, its event confirmed."""
        body = self.custom.create_namespaced_custom_object("limetask.io", "v1alpha1", ns, "limetasks",
                                                           self.task_body(name, args=[i]))
        body["status"] = {"state": "SUCCESS", "result": "ok", "attempts": 1, "startedAt": when,
                          "completedAt": when, "event": {"confirmed": True, "messageId": f"{name}.SUCCESS"}}
        self.custom.replace_namespaced_custom_object_status("limetask.io", "v1alpha1", ns, "limetasks", name, body)

    def parallel(self, fn: Any, items: list[Any]) -> list[Any]:
        with cf.ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(fn, items))

    def wait_watch(self, list_fn: Any, namespace: str, done: Any, total: int, timeout: float) -> dict[str, float]:
        """Watch until `done(obj)` holds for `total` objects; returns name -> time first seen done."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        version = None
        while len(seen) < total and time.monotonic() < deadline:
            w = watch.Watch()
            kwargs = {"resource_version": version} if version else {}
            try:
                for ev in w.stream(list_fn, namespace, timeout_seconds=30, **kwargs):
                    obj = ev["raw_object"]
                    version = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"]["name"]
                    if name not in seen and done(obj):
                        seen[name] = time.monotonic()
                        if len(seen) >= total:
                            w.stop()
                            break
            except client.ApiException as exc:
                if exc.status == 410:
                    version = None
                    continue
                raise
        return seen

    # -- 1. overhead --------------------------------------------------------------------------
    def overhead(self) -> None:
        n = self.args.n
        say(f"1/7 overhead: {n} bare Jobs, then {n} LimeTasks with the same pod spec")
        from limetask_operator.manifests import build_job
        from limetask_operator.model import TaskView
        from limetask_operator.settings import OperatorSettings

        ns = self.namespace("bare")
        settings = OperatorSettings.from_env()

        def bare_job(i: int) -> dict[str, Any]:
            view = TaskView.from_body({**self.task_body(f"bare-{i}"), "metadata": {
                "name": f"bare-{i}", "namespace": ns, "uid": "0"}})
            job = build_job(view, 1, settings)
            job["metadata"].pop("ownerReferences")
            return job

        jobs = [bare_job(i) for i in range(n)]
        complete = lambda o: any(c.get("type") == "Complete" and c.get("status") == "True"  # noqa: E731
                                 for c in (o.get("status") or {}).get("conditions") or [])
        watcher: dict[str, Any] = {}
        t = threading.Thread(target=lambda: watcher.update(
            seen=self.wait_watch(self.batch.list_namespaced_job, ns, complete, n, 600)))
        t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        self.parallel(lambda j: self.batch.create_namespaced_job(ns, j), jobs)
        t.join()
        bare = max(watcher["seen"].values()) - t0 if len(watcher["seen"]) == n else float("nan")
        self.drop_namespace(ns)

        from lime_task import TaskClient

        ns = self.namespace("lt")
        tc = TaskClient(kubeconfig=self.kubeconfig, namespace=ns)
        final = lambda o: (o.get("status") or {}).get("state") in ("SUCCESS", "FAILURE")  # noqa: E731
        watcher = {}
        t = threading.Thread(target=lambda: watcher.update(
            seen=self.wait_watch(lambda namespace, **kw: self.custom.list_namespaced_custom_object(
                "limetask.io", "v1alpha1", namespace, "limetasks", **kw), ns, final, n, 600)))
        t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        self.parallel(lambda i: tc.send(NOOP, "bench"), list(range(n)))
        t.join()
        lt = max(watcher["seen"].values()) - t0 if len(watcher["seen"]) == n else float("nan")
        self.drop_namespace(ns)
        self.results["overhead"] = {"n": n, "bare_jobs_s": round(bare, 2), "limetasks_s": round(lt, 2),
                                    "ratio": round(lt / bare, 3), "target_ratio": 1.15}

    # -- 2. reaction latency under a burst ------------------------------------------------------
    def burst(self) -> None:
        n = self.args.burst
        say(f"2/7 reaction latency: a burst of {n} LimeTasks")
        ns = self.namespace("burst")
        created: dict[str, float] = {}
        job_seen: dict[str, float] = {}
        pod_end: dict[str, float] = {}
        final_seen: dict[str, float] = {}
        stop = threading.Event()

        def watch_all(list_fn: Any, on_event: Any) -> None:
            version = None
            while not stop.is_set():
                w = watch.Watch()
                try:
                    kw = {"resource_version": version} if version else {}
                    for ev in w.stream(list_fn, ns, timeout_seconds=5, **kw):
                        obj = ev["raw_object"]
                        version = obj["metadata"]["resourceVersion"]
                        on_event(obj, time.monotonic())
                        if stop.is_set():
                            w.stop()
                except client.ApiException:
                    version = None

        def on_job(obj: dict[str, Any], now: float) -> None:
            tid = obj["metadata"].get("labels", {}).get("limetask.io/task-id")
            if tid:
                job_seen.setdefault(tid, now)

        def on_pod(obj: dict[str, Any], now: float) -> None:
            tid = obj["metadata"].get("labels", {}).get("limetask.io/task-id")
            for s in (obj.get("status") or {}).get("containerStatuses") or []:
                if tid and "terminated" in (s.get("state") or {}):
                    pod_end.setdefault(tid, now)

        def on_task(obj: dict[str, Any], now: float) -> None:
            if (obj.get("status") or {}).get("state") in ("SUCCESS", "FAILURE"):
                final_seen.setdefault(obj["metadata"]["name"], now)

        lt_list = lambda namespace, **kw: self.custom.list_namespaced_custom_object(  # noqa: E731
            "limetask.io", "v1alpha1", namespace, "limetasks", **kw)
        threads = [threading.Thread(target=watch_all, args=a, daemon=True) for a in
                   ((self.batch.list_namespaced_job, on_job), (self.core.list_namespaced_pod, on_pod),
                    (lt_list, on_task))]
        for t in threads:
            t.start()
        time.sleep(1)
        names = [f"b-{i}" for i in range(n)]

        def create(name: str) -> None:
            self.custom.create_namespaced_custom_object("limetask.io", "v1alpha1", ns, "limetasks",
                                                        self.task_body(name))
            created[name] = time.monotonic()

        t0 = time.monotonic()
        self.parallel(create, names)
        deadline = time.monotonic() + 900
        while len(final_seen) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        to_job = [job_seen[k] - created[k] for k in names if k in job_seen and k in created]
        to_final = [final_seen[k] - pod_end[k] for k in names if k in final_seen and k in pod_end]
        first, last_job = t0, max(job_seen.values()) if job_seen else float("nan")
        self.results["burst"] = {
            "n": n,
            "create_to_job_ms": {"p50": round(pct(to_job, 50) * 1000, 1), "p99": round(pct(to_job, 99) * 1000, 1)},
            "pod_end_to_final_ms": {"p50": round(pct(to_final, 50) * 1000, 1),
                                    "p99": round(pct(to_final, 99) * 1000, 1)},
            "jobs_per_second": round(len(job_seen) / (last_job - first), 1),
            "all_final_s": round(max(final_seen.values()) - t0, 2) if final_seen else None,
            "targets_ms": {"p50": 50, "p99": 500},
        }
        self.drop_namespace(ns)

    # -- 3. submit cost ---------------------------------------------------------------------------
    def submit(self) -> None:
        n = 200
        say(f"3/7 submit cost: {n} send_task calls against {n} bare creates (in a namespace not watched)")
        from lime_task import TaskClient

        ns = f"submit-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": ns}})
        tc = TaskClient(kubeconfig=self.kubeconfig, namespace=ns)
        tc.send(NOOP, "bench")  # warm both paths: imports, connections
        self.custom.create_namespaced_custom_object("limetask.io", "v1alpha1", ns, "limetasks", self.task_body("warm"))
        bare: list[float] = []
        send: list[float] = []
        for i in range(n):  # interleaved, so that drift hits both alike
            body = self.task_body(f"bare-{i}")
            t = time.perf_counter()
            self.custom.create_namespaced_custom_object("limetask.io", "v1alpha1", ns, "limetasks", body)
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            tc.send(NOOP, "bench")
            send.append(time.perf_counter() - t)
        self.drop_namespace(ns)
        self.results["submit"] = {
            "n": n,
            "bare_create_ms": {"p50": round(pct(bare, 50) * 1000, 2), "p99": round(pct(bare, 99) * 1000, 2)},
            "send_task_ms": {"p50": round(pct(send, 50) * 1000, 2), "p99": round(pct(send, 99) * 1000, 2)},
            "ratio_p50": round(pct(send, 50) / pct(bare, 50), 3), "target_ratio_p50": 1.2,
        }

    # -- 4. scale ---------------------------------------------------------------------------------
    def scale(self) -> None:
        sizes = [int(x) for x in self.args.scale.split(",") if x]
        say(f"4/7 scale: operator memory and CPU with {', '.join(map(str, sizes))} LimeTasks present")
        ns = self.namespace("scale")
        present = 0
        out: dict[str, Any] = {}
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        def add(i: int) -> None:
            self.add_finished(ns, f"s-{i}", i, now)

        for size in sizes:
            self.stop_operator()
            say(f"   creating {size - present} finished LimeTasks (operator stopped)")
            self.parallel(add, list(range(present, size)))
            present = size
            t0 = time.monotonic()
            self.start_operator()
            while True:
                m = self.metrics()
                seen = sum(v for k, v in m.items() if k.startswith("limetask_tasks{"))
                if seen >= size and m.get("limetask_workqueue_depth", 1) == 0:
                    break
                time.sleep(0.2)
            resync = time.monotonic() - t0
            time.sleep(3)
            c0, w0 = self.cpu_seconds(), time.monotonic()
            time.sleep(10)
            idle_cpu = (self.cpu_seconds() - c0) / (time.monotonic() - w0)
            idle_rss = self.rss_mb()
            # Under load: 100 tasks run while the others sit there.
            from lime_task import TaskClient

            load_ns = self.namespace("load")
            tc = TaskClient(kubeconfig=self.kubeconfig, namespace=load_ns)
            c0, w0 = self.cpu_seconds(), time.monotonic()
            sent = self.parallel(lambda i, tc=tc: tc.send(NOOP, "bench"), list(range(100)))
            peak = self.rss_mb()
            for s in sent:
                tc.wait(s.id, "bench", timeout=300)
                peak = max(peak, self.rss_mb())
            load_cpu = (self.cpu_seconds() - c0) / (time.monotonic() - w0)
            self.drop_namespace(load_ns)
            out[str(size)] = {"resync_s": round(resync, 2), "idle_rss_mb": round(idle_rss, 1),
                              "idle_cpu_cores": round(idle_cpu, 3), "load_rss_mb": round(peak, 1),
                              "load_cpu_cores": round(load_cpu, 3)}
            say(f"   {size}: {out[str(size)]}")
        self.drop_namespace(ns)
        out["target_rss_mb_at_10000"] = 150
        self.results["scale"] = out

    # -- 5. the API server's ceiling ------------------------------------------------------------------
    def ceiling(self) -> None:
        n = 1000
        say(f"5/7 ceiling: the API server's create rate for {n} small ConfigMaps ({THREADS} threads)")
        ns = f"ceiling-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": ns}})
        t0 = time.monotonic()
        self.parallel(lambda i: self.core.create_namespaced_config_map(
            ns, {"metadata": {"name": f"c-{i}"}, "data": {"k": "v"}}), list(range(n)))
        rate = n / (time.monotonic() - t0)
        self.drop_namespace(ns)
        # The operator alone: runner pods that no node takes (a nodeSelector nothing matches)
        # leave the machine to the operator and the API server, as the ConfigMaps above did.
        say(f"   conversion: {n} LimeTasks into Jobs whose pods stay Pending")
        self.stop_operator()
        self.start_operator(LIMETASK_RUNNER_NODE_SELECTOR='{"limetask.io/bench": "nowhere"}')
        try:
            ns = self.namespace("convert")
            seen = {}
            t = threading.Thread(target=lambda: seen.update(self.wait_watch(
                self.batch.list_namespaced_job, ns, lambda o: True, n, 600)))
            t.start()
            time.sleep(0.5)
            t0 = time.monotonic()
            self.parallel(lambda i: self.custom.create_namespaced_custom_object(
                "limetask.io", "v1alpha1", ns, "limetasks", self.task_body(f"c-{i}")), list(range(n)))
            t.join()
            conv = len(seen) / (max(seen.values()) - t0) if seen else float("nan")
            self.drop_namespace(ns)
        finally:
            self.stop_operator()
            self.start_operator()
        self.results["ceiling"] = {"creates_per_second": round(rate, 1), "operator_jobs_per_second": round(conv, 1),
                                   "fraction": round(conv / rate, 3), "target_fraction": 0.5}
        if "burst" in self.results:
            self.results["ceiling"]["jobs_per_second_in_burst_with_pods_running"] = \
                self.results["burst"]["jobs_per_second"]

    # -- 6. history out of etcd: the archive -----------------------------------------------------
    def archive(self) -> None:
        say("6/7 archive: PostgreSQL history (bench/archive.py)")
        from bench import archive

        archive.run(self)

    # -- 8. queues: a limit and fair share ---------------------------------------------------------
    def queues(self) -> None:
        from bench import queues

        queues.run(self)

    # -- 9. the dashboard at thousands of tasks (bench/dashboard.py) ------------------------------
    def dashboard(self) -> None:
        from bench import dashboard

        dashboard.run(self)

    # -- 7. the watching layer: the operator's own watches against kopf's --------------------------
    def watchlayer(self) -> None:
        sizes = [int(x) for x in self.args.watchlayer.split(",") if x]
        say(f"7/7 watchlayer: one process per way of watching ({', '.join(WATCH_MODES)}), "
            f"{', '.join(map(str, sizes))} LimeTasks present, then {WATCH_M} modifications")
        # The bench's operator watches bench-* (a pattern, so every namespace, filtered as events
        # come): it would receive these LimeTasks' events too, and compete for the CPU.
        self.stop_operator()
        load = [round(x, 2) for x in os.getloadavg()]  # the timings, not the CPU figures, suffer on a busy machine
        ns = f"watchlayer-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": ns}})
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        def finished(i: int) -> None:
            # Finished, so that they just sit there even if an operator (a test's, say) watches
            # every namespace: it would otherwise run them and change them under the watchers.
            name = f"w-{i}"
            self.custom.create_namespaced_custom_object("limetask.io", "v1alpha1", ns, "limetasks",
                                                        self.task_body(name))
            status = {"state": "SUCCESS", "result": "ok", "attempts": 1, "startedAt": now, "completedAt": now,
                      "event": {"confirmed": True, "messageId": f"{name}.SUCCESS"}}
            self.custom.patch_namespaced_custom_object_status(  # a merge patch: whatever wrote first
                "limetask.io", "v1alpha1", ns, "limetasks", name, {"status": status})

        out: dict[str, Any] = {}
        try:
            present = 0
            for size in sizes:
                say(f"   creating {size - present} finished LimeTasks")
                self.parallel(finished, list(range(present, size)))
                present = size
                for mode in WATCH_MODES:
                    fig = self.watch_process(mode, ns, size, min(WATCH_M, size))
                    out.setdefault(mode, {})[str(size)] = fig
                    say(f"   {size} {mode}: {fig}")
        finally:
            self.drop_namespace_surely(ns)
        self.results["watchlayer"] = {"settle_s": SETTLE_S, "loadavg_at_start": load, "modes": out}

    def watch_process(self, mode: str, ns: str, n: int, m: int) -> dict[str, Any]:
        """One watching process (bench/watchlayer.py): its CPU and memory to list n LimeTasks and
        to follow m modifications of them, and the cost of its /healthz (where kopf serves one)."""
        port = free_port()
        log = open(REPO / ".cluster" / "logs" / f"bench-watchlayer-{mode}.log", "ab")
        touch = f"{mode}-{n}-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "watchlayer.py"), mode, ns, str(n), str(m),
                                 touch, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                env=dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1"))
        lines: queue.Queue[dict[str, float] | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(b"{"):
                    lines.put(json.loads(line))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()

        def wait_for(what: str, timeout: float, give_up: bool = False) -> float | None:
            try:
                msg = lines.get(timeout=timeout)
            except queue.Empty:
                if give_up:
                    return None
                raise RuntimeError(f"watchlayer {mode}: no {what!r} within {timeout:.0f}s; "
                                   f"see .cluster/logs/bench-watchlayer-{mode}.log") from None
            if msg is None or what not in msg:
                raise RuntimeError(f"watchlayer {mode}: {msg!r} instead of {what!r}; "
                                   f"see .cluster/logs/bench-watchlayer-{mode}.log")
            return msg[what]

        pid = proc.pid
        fig: dict[str, Any] = {"modifications": m}
        try:
            wait_for("ready", 60)  # imported
            fig["ready_rss_mb"] = round(proc_mb(pid), 1)  # imports only
            c0, t0 = proc_cpu(pid), time.monotonic()
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            listed = wait_for("listed", LIST_CAP_S, give_up=True)
            if listed is None:  # kopf with an index, at 5,000: minutes
                fig.update(list_s=None, list_capped_s=LIST_CAP_S, list_cpu_s=round(proc_cpu(pid) - c0, 2),
                           peak_rss_mb=round(proc_mb(pid, "VmHWM"), 1))
                return fig
            fig["list_s"] = round(listed - t0, 2)
            time.sleep(SETTLE_S)
            fig["list_cpu_s"] = round(proc_cpu(pid) - c0, 2)
            fig["idle_rss_mb"] = round(proc_mb(pid), 1)
            c0, t0 = proc_cpu(pid), time.monotonic()
            time.sleep(3)
            fig["idle_cpu_ms_per_s"] = round((proc_cpu(pid) - c0) / (time.monotonic() - t0) * 1000, 1)
            patch = {"metadata": {"annotations": {"bench.limetask.io/touch": touch}}}
            c0, t0 = proc_cpu(pid), time.monotonic()
            self.parallel(lambda i: self.custom.patch_namespaced_custom_object(
                "limetask.io", "v1alpha1", ns, "limetasks", f"w-{i}", patch), list(range(m)))
            fig["modify_s"] = round((wait_for("modified", 120) or 0) - t0, 2)  # the patches' own time included
            time.sleep(SETTLE_S)
            fig["modify_cpu_s"] = round(proc_cpu(pid) - c0, 2)
            fig["after_rss_mb"] = round(proc_mb(pid), 1)
            fig["peak_rss_mb"] = round(proc_mb(pid, "VmHWM"), 1)
            if mode != "ours":  # kopf serves /healthz (ours alone has no HTTP server)
                fig.update(self.probe_cost(pid, port))
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            log.close()
        return fig

    def probe_cost(self, pid: int, port: int, k: int = 200) -> dict[str, float]:
        """kopf's /healthz: the first request runs the probe handlers; kopf keeps their result
        for 10 s, so the next k (back to back) show what serving a request costs."""
        url = f"http://127.0.0.1:{port}/healthz"
        t0 = time.perf_counter()
        urllib.request.urlopen(url, timeout=10).read()
        first = time.perf_counter() - t0
        c0, t0 = proc_cpu(pid), time.perf_counter()
        for _ in range(k):
            urllib.request.urlopen(url, timeout=10).read()
        wall, cpu = time.perf_counter() - t0, proc_cpu(pid) - c0
        return {"probe_first_ms": round(first * 1000, 1), "probe_ms": round(wall / k * 1000, 2),
                "probe_cpu_ms": round(cpu / k * 1000, 2)}

    # -- 10. a good tenant beside hostile ones (bench/tenants.py) -----------------------------------
    def tenants(self) -> None:
        from bench import tenants

        tenants.run(self)

    # -- 0. what the node costs: one pod at a time, create -> running -> terminated --------------
    def podstart(self) -> None:
        n = 20
        say(f"0/7 pod start: {n} pods of the runner image, one at a time")
        ns = self.namespace("podstart")
        image = os.environ["LIMETASK_RUNNER_IMAGE"]
        sc = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
        to_running: list[float] = []
        to_done: list[float] = []
        for i in range(n):
            body = {"metadata": {"name": f"p-{i}"}, "spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                                "command": ["python", "-c", "pass"], "securityContext": sc,
                                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]}}
            t0 = time.monotonic()
            self.core.create_namespaced_pod(ns, body)
            running = None
            while time.monotonic() - t0 < 120:
                pod = self.core.read_namespaced_pod_status(f"p-{i}", ns)
                states = [s.state for s in pod.status.container_statuses or []]
                if running is None and states and (states[0].running or states[0].terminated):
                    running = time.monotonic() - t0
                if pod.status.phase in ("Succeeded", "Failed"):
                    to_done.append(time.monotonic() - t0)
                    break
                time.sleep(0.02)
            if running is not None:
                to_running.append(running)
        self.drop_namespace(ns)
        self.results["podstart"] = {
            "n": n, "image": image,
            "create_to_started_ms": {"p50": round(pct(to_running, 50) * 1000, 1),
                                     "p90": round(pct(to_running, 90) * 1000, 1)},
            "create_to_succeeded_ms": {"p50": round(pct(to_done, 50) * 1000, 1),
                                       "p90": round(pct(to_done, 90) * 1000, 1)},
        }

    def run(self) -> None:
        steps = {"podstart": self.podstart, "overhead": self.overhead, "burst": self.burst, "submit": self.submit,
                 "scale": self.scale,
                 "ceiling": self.ceiling, "archive": self.archive, "watchlayer": self.watchlayer,
                 "queues": self.queues, "dashboard": self.dashboard, "tenants": self.tenants}
        only = [s for s in self.args.only.split(",") if s] if self.args.only else list(steps)
        unknown = set(only) - set(steps)
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(steps)}")
        if any(name != "watchlayer" for name in only):  # watchlayer wants no operator running
            self.start_operator()
        try:
            for name in steps:
                if name in only:
                    steps[name]()
        finally:
            self.stop_operator()


def table(results: dict[str, Any]) -> str:
    rows = []
    if "podstart" in results:
        p = results["podstart"]
        rows.append(f"pod start {p['n']} pods one by one: create->started p50 {p['create_to_started_ms']['p50']} ms "
                    f"p90 {p['create_to_started_ms']['p90']} ms; create->Succeeded p50 "
                    f"{p['create_to_succeeded_ms']['p50']} ms p90 {p['create_to_succeeded_ms']['p90']} ms")
    if "overhead" in results:
        o = results["overhead"]
        rows.append(f"overhead  {o['n']} no-op: bare Jobs {o['bare_jobs_s']}s, LimeTasks {o['limetasks_s']}s, "
                    f"ratio {o['ratio']} (target <= {o['target_ratio']})")
    if "burst" in results:
        b = results["burst"]
        rows.append(f"reaction  burst {b['n']}: create->Job p50 {b['create_to_job_ms']['p50']} ms, p99 "
                    f"{b['create_to_job_ms']['p99']} ms; pod end->final p50 {b['pod_end_to_final_ms']['p50']} ms, "
                    f"p99 {b['pod_end_to_final_ms']['p99']} ms (targets 50/500)")
    if "submit" in results:
        s = results["submit"]
        rows.append(f"submit    send_task p50 {s['send_task_ms']['p50']} ms p99 {s['send_task_ms']['p99']} ms; "
                    f"bare create p50 {s['bare_create_ms']['p50']} ms p99 {s['bare_create_ms']['p99']} ms; "
                    f"ratio {s['ratio_p50']} (target <= 1.2)")
    if "scale" in results:
        for size, v in results["scale"].items():
            if isinstance(v, dict):
                rows.append(f"scale     {size} present: resync {v['resync_s']}s, idle {v['idle_rss_mb']} MB "
                            f"{v['idle_cpu_cores']} cores, load {v['load_rss_mb']} MB {v['load_cpu_cores']} cores")
    if "ceiling" in results:
        c = results["ceiling"]
        rows.append(f"ceiling   API creates {c['creates_per_second']}/s; operator Jobs "
                    f"{c.get('operator_jobs_per_second', '-')}/s; fraction {c.get('fraction', '-')} (target >= 0.5)")
    if "archive" in results:
        a = results["archive"]
        side = a["operator_with_1000_in_cluster"]
        rows.append(f"archive   1,000 in the cluster, 0 vs {a['archived']:,} more archived: resync "
                    f"{' vs '.join(str(v['resync_s']) + 's' for v in side.values())}, idle "
                    f"{' vs '.join(str(v['idle_rss_mb']) + ' MB' for v in side.values())} (RSS ratio {a['rss_ratio']}, "
                    f"resync ratio {a['resync_ratio']}; target within 10%)")
        g = a["get_status"]
        rows.append(f"archive   get_status p50 live {g['live_ms_p50']} ms, archived {g['archived_ms_p50']} ms "
                    f"(ratio {g['ratio_p50']}, target <= 2)")
        o = a["operator_archive"]
        rows.append(f"archive   write path {a['write']['rows_per_second']} tasks/s; the operator archived {o['tasks']} "
                    f"found at start at {o['archived_per_second']}/s, deleted at {o['deleted_per_second']}/s; "
                    f"conversion {a['conversion_jobs_per_second'] or '-'} Jobs/s; "
                    f"{a['size']['mb_per_100k']} MB per 100,000 tasks")
    if "archive30m" in results:
        from bench import archive_scale

        rows.extend(archive_scale.row(results))
    if "watchlayer" in results:
        w = results["watchlayer"]
        sizes = dict.fromkeys(size for by_size in w["modes"].values() for size in by_size)
        for size in sizes:
            for mode, by_size in w["modes"].items():
                if size not in by_size:
                    continue
                v = by_size[size]
                if v.get("list_s") is None:
                    rows.append(f"watch     {mode:<10} {size:>5} LimeTasks: not listed within {v['list_capped_s']}s "
                                f"({v['list_cpu_s']} CPU-s so far, peak {v['peak_rss_mb']} MB); given up")
                    continue
                probe = (f"; /healthz {v['probe_cpu_ms']} ms CPU" if "probe_cpu_ms" in v else "")
                rows.append(f"watch     {mode:<10} {size:>5} LimeTasks: listed in {v['list_s']}s "
                            f"{v['list_cpu_s']} CPU-s, idle {v['idle_rss_mb']} MB (peak {v['peak_rss_mb']}); "
                            f"{v['modifications']} changes {v['modify_cpu_s']} CPU-s in {v['modify_s']}s{probe}")
    if "queues" in results:
        from bench import queues

        rows.extend(queues.row(results))
    if "dashboard" in results:
        from bench import dashboard

        rows.extend(dashboard.row(results))
    if "tenants" in results:
        from bench import tenants

        rows.extend(tenants.row(results))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N", "300")))
    parser.add_argument("--burst", type=int, default=int(os.environ.get("BENCH_BURST", "500")))
    parser.add_argument("--scale", default=os.environ.get("BENCH_SCALE", "1000,10000"))
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                        help="comma-separated: podstart,overhead,burst,submit,scale,ceiling,archive,watchlayer,queues,"
                             "dashboard,tenants,soak; archive30m (PostgreSQL alone, named only)")
    parser.add_argument("--watchlayer", default=os.environ.get("BENCH_WATCHLAYER", "1000,5000"),
                        help="watchlayer: how many LimeTasks are present (cumulative sizes)")
    parser.add_argument("--broker", default=os.environ.get("LIMETASK_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    only = {s for s in args.only.split(",") if s}
    status = 0
    if "soak" in only:
        from bench import soak

        status = soak.main([])
        only.discard("soak")
        if not only:
            return status
        args.only = ",".join(sorted(only))
    results: dict[str, Any] = {"started": dt.datetime.now(dt.timezone.utc).isoformat(),
                               "machine": {"cpus": os.cpu_count()}}
    if only & DATABASE_ONLY:
        from bench import archive_scale

        args.only = ",".join(sorted(only - DATABASE_ONLY))
        archive_scale.run(results)
    if not only or only - DATABASE_ONLY:
        bench = Bench(args)
        bench.results.update(results)
        bench.run()
        results = bench.results
    out = Path(args.out or REPO / "bench-results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"figures: {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
