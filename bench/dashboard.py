"""`python -m bench --only dashboard`: the dashboard at thousands of tasks.

`limetask web` in a process of its own serves a namespace holding BENCH_DASHBOARD_LIVE (5,000)
LimeTasks of ten applications in every state, with BENCH_DASHBOARD_ARCHIVED (100,000) more in
the archive. The operator is stopped meanwhile, so the statuses stay as written. Measured:
- the first list (the endpoint's watch lists the namespace), and the endpoint's RSS after;
- /v1/dashboard/tasks p50/p99: the newest page, filtered pages, an archived page, for a
  platform token and an application's (each answer also counts by state);
- /v1/dashboard/charts p50/p99 over a day;
- the stream: 20 pages open, 100 status changes: from the change's write to each page's event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from typing import Any

LIVE = int(os.environ.get("BENCH_DASHBOARD_LIVE", "5000"))
ARCHIVED = int(os.environ.get("BENCH_DASHBOARD_ARCHIVED", "100000"))
APPS = [f"app-{i}" for i in range(10)]
STREAMS, CHANGES = 20, 100
NAMES = ["acme_solution.tasks.lime.add", "acme_solution.tasks.lime.sync_deals", "acme_solution.tasks.reports.nightly"]


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(i: int, now: dt.datetime) -> dict[str, Any]:
    created = now - dt.timedelta(seconds=i * 7)
    state = ("SUCCESS", "SUCCESS", "SUCCESS", "FAILURE", "STARTED", "PENDING")[i % 6]
    st: dict[str, Any] = {"state": state, "attempts": 1}
    if state != "PENDING":
        st["startedAt"] = stamp(created + dt.timedelta(seconds=1))
    if state in ("SUCCESS", "FAILURE"):
        st["completedAt"] = stamp(created + dt.timedelta(seconds=1 + i % 30))
        st["event"] = {"confirmed": True, "messageId": f"m{i}"}
    if state == "SUCCESS":
        st["result"] = f"updated {i} deals"
    if state == "FAILURE":
        st["error"] = {"type": "ValueError", "message": "no", "reason": ("TaskRaised", "WorkerLost", "TimedOut")[i % 3]}
    return st


def write_archived(url: str, namespace: str, n: int, batch: int = 1000) -> float:
    """n finished tasks over the last 30 days, through the operator's own batched write."""
    from limetask_operator.archive import Archiver
    from limetask_operator.settings import OperatorSettings

    from lime_task.archive import row_of

    now = dt.datetime.now(dt.timezone.utc)

    def row(i: int) -> Any:
        done = now - dt.timedelta(seconds=60 + (i * 86400 * 30) // max(n, 1))
        st = status_of(i % 4 if i % 4 != 3 else 3, done)  # SUCCESS or FAILURE
        st["completedAt"] = stamp(done)
        st["startedAt"] = stamp(done - dt.timedelta(seconds=1 + i % 40))
        spec = {"task": NAMES[i % 3], "app": APPS[i % 10], "args": [i], "kwargs": {}}
        return row_of(namespace, f"a-{i}", str(uuid.uuid4()), stamp(done - dt.timedelta(seconds=50)), spec, st)

    async def go() -> float:
        a = Archiver(None, OperatorSettings(), url)  # type: ignore[arg-type]
        t = time.perf_counter()
        try:
            for start in range(0, n, batch):
                await a._write([row(i) for i in range(start, min(n, start + batch))])
        finally:
            await a.stop()
        return time.perf_counter() - t

    return asyncio.run(go())


def get(url: str, token: str) -> tuple[float, Any]:
    t = time.perf_counter()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        body = json.loads(resp.read())
    return time.perf_counter() - t, body


def timed(url: str, token: str, n: int, pct: Any) -> dict[str, float]:
    spent = [get(url, token)[0] for _ in range(n)]
    return {"p50_ms": round(pct(spent, 50) * 1000, 1), "p99_ms": round(pct(spent, 99) * 1000, 1),
            "slowest_call": spent.index(max(spent)) + 1}


class Stream:
    """One open page: reads `task` events and notes when each marker arrived."""

    def __init__(self, port: int, token: str) -> None:
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.request("GET", "/v1/dashboard/stream", headers={"Authorization": f"Bearer {token}"})
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        resp = self.conn.getresponse()
        try:
            for raw in resp:
                line = raw.decode().strip()
                if line.startswith("event: hello"):
                    self.ready.set()
                if line.startswith("data:") and '"row"' in line:
                    row = json.loads(line[5:])["row"]
                    if row.get("attempts", 0) >= 100:
                        self.seen.setdefault(f"{row['id']}:{row['attempts']}", time.monotonic())
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # closed (http.client drops its file object on shutdown)

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(2)  # type: ignore[union-attr]
        except OSError:
            pass
        self.conn.close()


def run(bench: Any) -> None:
    import psycopg

    from bench.archive import ADMIN_URL
    from bench.measure import free_port, pct, proc_cpu, proc_mb, say
    from lime_task.archive import migrate

    say(f"dashboard: {LIVE:,} live tasks of {len(APPS)} applications, {ARCHIVED:,} archived")
    bench.stop_operator()  # the statuses stay as written: no Jobs, no pods
    ns = bench.namespace("dashboard")
    now = dt.datetime.now(dt.timezone.utc)

    def make(i: int) -> None:
        body = bench.task_body(f"t-{i}", task=NAMES[i % 3], args=[i])
        body["metadata"]["labels"]["limetask.io/app"] = body["spec"]["app"] = APPS[i % 10]
        made = bench.custom.create_namespaced_custom_object("limetask.io", "v1alpha1", ns, "limetasks", body)
        made["status"] = status_of(i, now)
        bench.custom.replace_namespaced_custom_object_status("limetask.io", "v1alpha1", ns, "limetasks", f"t-{i}",
                                                             made)

    t = time.perf_counter()
    bench.parallel(make, list(range(LIVE)))
    say(f"   {LIVE:,} LimeTasks made in {time.perf_counter() - t:.0f}s")
    admin = ADMIN_URL
    name = f"limetask_bench_dash_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    out: dict[str, Any] = {"live": LIVE, "archived": ARCHIVED}
    web: subprocess.Popen[bytes] | None = None
    try:
        out["archive_write_s"] = round(write_archived(url, ns, ARCHIVED), 1)
        port = free_port()
        tokens = {app: f"token-{app}-{uuid.uuid4().hex}" for app in APPS}
        platform = "platform-" + uuid.uuid4().hex
        env = dict(os.environ, LIMETASK_KUBECONFIG=str(bench.kubeconfig), LIMETASK_ARCHIVE_URL=url,
                   LIMETASK_WEB_TOKENS=json.dumps(tokens), LIMETASK_WEB_PLATFORM_TOKENS=json.dumps({"ops": platform}),
                   PYTHONUNBUFFERED="1")
        web = subprocess.Popen([sys.executable, "-m", "lime_task.cli", "web", "--port", str(port), "-n", ns,
                                "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("limetask web did not start") from None
                time.sleep(0.2)
        out["idle_rss_mb"] = round(proc_mb(web.pid), 1)
        first, page = get(base + "/v1/dashboard/tasks?limit=50", platform)
        out["first_list_s"] = round(first, 2)
        out["total_platform"] = page["total"]
        out["rss_after_list_mb"] = round(proc_mb(web.pid), 1)
        app_token = tokens[APPS[0]]
        q = "/v1/dashboard/tasks?limit=50"
        out["tasks"] = {
            "platform_newest": timed(base + q, platform, 50, pct),
            "platform_failures_7d": timed(base + q + "&state=FAILURE&window=604800", platform, 50, pct),
            "platform_archived_page": timed(base + q + "&window=2592000&cursor=archive", platform, 50, pct),
            "app_newest": timed(base + q, app_token, 50, pct),
            "app_reason_30d": timed(base + q + "&reason=WorkerLost&window=2592000", app_token, 50, pct),
        }
        out["charts_day"] = {"platform": timed(base + "/v1/dashboard/charts?window=86400", platform, 20, pct),
                             "app": timed(base + "/v1/dashboard/charts?window=86400", app_token, 20, pct)}
        out["stream"] = stream_figures(bench, ns, port, platform, pct, proc_cpu, web.pid)
        out["rss_end_mb"] = round(proc_mb(web.pid), 1)
        say(f"   dashboard: {out}")
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=15)
        bench.drop_namespace(ns)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        bench.start_operator()
    bench.results["dashboard"] = out


def stream_figures(bench: Any, ns: str, port: int, token: str, pct: Any, proc_cpu: Any, pid: int) -> dict[str, Any]:
    streams = [Stream(port, token) for _ in range(STREAMS)]
    try:
        for s in streams:
            if not s.ready.wait(30):
                raise RuntimeError("a stream did not open")
        rng = random.Random(17)
        written: dict[str, float] = {}
        cpu0 = proc_cpu(pid)
        t0 = time.monotonic()
        for k in range(CHANGES):
            i = rng.randrange(LIVE)
            body = bench.custom.get_namespaced_custom_object("limetask.io", "v1alpha1", ns, "limetasks", f"t-{i}")
            body["status"]["attempts"] = 100 + k
            bench.custom.replace_namespaced_custom_object_status("limetask.io", "v1alpha1", ns, "limetasks",
                                                                 f"t-{i}", body)
            written[f"t-{i}:{100 + k}"] = time.monotonic()
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(s.seen) < len(written) for s in streams):
            time.sleep(0.1)
        spent = time.monotonic() - t0
        cpu = proc_cpu(pid) - cpu0
        lags = [s.seen[key] - at for s in streams for key, at in written.items() if key in s.seen]
        missed = sum(1 for s in streams for key in written if key not in s.seen)
        return {"pages": STREAMS, "changes": CHANGES, "delivered": len(lags), "missed": missed,
                "lag_ms_p50": round(pct(lags, 50) * 1000, 1), "lag_ms_p99": round(pct(lags, 99) * 1000, 1),
                "web_cpu_cores": round(cpu / spent, 3)}
    finally:
        for s in streams:
            s.close()


def row(results: dict[str, Any]) -> list[str]:
    d = results["dashboard"]
    t = d["tasks"]
    s = d["stream"]
    return [
        f"dashboard {d['live']:,} live + {d['archived']:,} archived: first list {d['first_list_s']}s, RSS "
        f"{d['idle_rss_mb']} -> {d['rss_after_list_mb']} MB (end {d['rss_end_mb']} MB)",
        "dashboard /tasks p50/p99 ms: " + ", ".join(f"{k} {v['p50_ms']}/{v['p99_ms']}" for k, v in t.items()),
        f"dashboard /charts (a day) p50/p99 ms: platform {d['charts_day']['platform']['p50_ms']}/"
        f"{d['charts_day']['platform']['p99_ms']}, app {d['charts_day']['app']['p50_ms']}/"
        f"{d['charts_day']['app']['p99_ms']}",
        f"dashboard stream: {s['pages']} pages x {s['changes']} changes, delivered {s['delivered']} (missed "
        f"{s['missed']}), lag p50 {s['lag_ms_p50']} ms p99 {s['lag_ms_p99']} ms, endpoint {s['web_cpu_cores']} cores",
    ]
