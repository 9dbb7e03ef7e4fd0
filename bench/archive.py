"""`python -m bench --only archive`: history out of etcd, measured side by side in one run.

- archive rate: 100,000 tasks written through the operator's own batched write path, and the
  operator archiving (and deleting) 2,000 finished LimeTasks it finds at start, against its
  conversion rate (LimeTasks into Jobs, from the ceiling step when it ran);
- database size per 100,000 tasks;
- the operator's RSS and resync time with 1,000 tasks in the cluster and 0 vs 100,000 archived;
- get_status p50 for a live task and for an archived one (through the HTTP endpoint's results API,
  served by `limetask web` in a process of its own).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

ADMIN_URL = os.environ.get("BENCH_ARCHIVE_URL", "postgresql://limetask:limetask@127.0.0.1:5432/limetask")
ARCHIVED = int(os.environ.get("BENCH_ARCHIVED", "100000"))


def database(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def fake_task(i: int, now: dt.datetime, days: int = 30) -> Any:
    """A finished task as the operator would archive it, spread over the last `days` days."""
    from limetask_operator.model import TaskView

    done = now - dt.timedelta(seconds=(i * 86400 * days) // max(ARCHIVED, 1))
    stamp = done.strftime("%Y-%m-%dT%H:%M:%SZ")
    return TaskView.from_body({
        "metadata": {"namespace": "bench-archive", "name": f"a-{i}", "uid": str(uuid.uuid4()),
                     "creationTimestamp": stamp, "resourceVersion": "1"},
        "spec": {"task": "acme_solution.tasks.lime.get_lime_company", "app": f"app-{i % 20}",
                 "args": [1000 + i, ["name", "phone"]], "kwargs": {}, "acksLate": False},
        "status": {"state": "SUCCESS" if i % 10 else "FAILURE", "result": "updated 50 deals" if i % 10 else None,
                   "error": None if i % 10 else {"type": "ValueError", "message": "the CRM said no",
                                                 "reason": "TaskRaised"},
                   "attempts": 1, "startedAt": stamp, "completedAt": stamp, "jobName": f"a-{i}-1",
                   "history": [{"attempt": 1, "jobName": f"a-{i}-1", "startedAt": stamp, "finishedAt": stamp,
                                "outcome": "SUCCESS" if i % 10 else "TaskRaised"}],
                   "event": {"confirmed": True, "messageId": f"{i}.SUCCESS", "deliveryAttempts": 1, "sink": "broker",
                             "routingKey": "core.task.acme_solution.tasks.lime.get_lime_company.success.v1",
                             "confirmedAt": stamp}}})


def write_archived(url: str, n: int, batch: int = 500) -> dict[str, float]:
    """n tasks through the operator's batched write (Archiver._write): rows per second."""
    from limetask_operator.archive import Archiver
    from limetask_operator.settings import OperatorSettings

    from lime_task.archive import row_of

    now = dt.datetime.now(dt.timezone.utc)

    async def go() -> float:
        a = Archiver(None, OperatorSettings(), url)  # type: ignore[arg-type]
        spent = 0.0
        try:
            for start in range(0, n, batch):
                views = [fake_task(i, now) for i in range(start, min(n, start + batch))]
                rows = [row_of(v.namespace, v.name, v.uid, v.created, v.spec, v.status) for v in views]
                t = time.perf_counter()
                await a._write(rows)
                spent += time.perf_counter() - t
        finally:
            await a.stop()
        return spent

    spent = asyncio.run(go())
    return {"rows": n, "seconds_writing": round(spent, 2), "rows_per_second": round(n / spent, 1)}


def size_of(url: str) -> dict[str, float]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE limetask_archive")
        row = conn.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0), count(*) FROM pg_inherits i "
                           "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'limetask_archive'::regclass"
                           ).fetchone()
        rows = conn.execute("SELECT count(*) FROM limetask_archive").fetchone()
    assert row is not None and rows is not None
    return {"bytes": int(row[0]), "partitions": int(row[1]), "rows": int(rows[0]),
            "mb_per_100k": round(int(row[0]) / 2**20 * 100000 / max(int(rows[0]), 1), 1)}


def run(bench: Any) -> None:
    import psycopg

    from lime_task.archive import migrate

    say = _main().say
    out: dict[str, Any] = {}
    name = f"limetask_bench_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = database(name)
    migrate(url)
    try:
        say("archive: 1,000 finished tasks in the cluster; the operator with them alone archived, then with "
            f"{ARCHIVED:,} more archived (two starts each)")
        bench.stop_operator()
        wait_namespaces_gone(bench)  # an earlier step's namespaces: their deletion would weigh on the first start
        ns = bench.namespace("archive")
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        bench.parallel(lambda i: bench.add_finished(ns, f"live-{i}", i, now), list(range(1000)))
        # Kept a day in the cluster, the 1,000 stay. A first start archives them; every start
        # after it writes them again (a no-op) while it lists, so each measured start does the same work.
        measure_start(bench, url)
        bench.stop_operator()
        side: dict[str, Any] = {}
        for label in ("0", str(ARCHIVED)):
            if label != "0":
                say(f"archive: writing {ARCHIVED:,} tasks through the operator's batched write path")
                out["write"] = write_archived(url, ARCHIVED)
                out["size"] = size_of(url)
                say(f"   {out['write']}; {out['size']}")
            runs = []
            for _ in range(2):
                runs.append(measure_start(bench, url))
                bench.stop_operator()
            side[label] = {"resync_s": round(sum(r[0] for r in runs) / 2, 2),
                           "idle_rss_mb": round(sum(r[1] for r in runs) / 2, 1),
                           "runs": [{"resync_s": round(r[0], 2), "idle_rss_mb": round(r[1], 1)} for r in runs]}
            say(f"   {label} more archived: {side[label]}")
        bench.start_operator(LIMETASK_ARCHIVE_URL=url, LIMETASK_ARCHIVE_KEEP_SECONDS="86400")
        out["operator_with_1000_in_cluster"] = side
        out["archived"] = ARCHIVED
        a, b = side["0"], side[str(ARCHIVED)]
        out["rss_ratio"] = round(b["idle_rss_mb"] / a["idle_rss_mb"], 3)
        out["resync_ratio"] = round(b["resync_s"] / a["resync_s"], 3)
        out["target_within"] = 0.10

        say("archive: get_status p50, a live task against an archived one (results API in `limetask web`)")
        out["get_status"] = get_status_figures(bench, ns, url)
        say(f"   {out['get_status']}")
        bench.stop_operator()
        bench.drop_namespace(ns)

        say("archive: the operator archives and deletes 2,000 finished LimeTasks it finds at start")
        ns = bench.namespace("archive-rate")
        n = 2000

        bench.parallel(lambda i: bench.add_finished(ns, f"f-{i}", i, now), list(range(n)))
        written0 = 0.0
        t0 = time.monotonic()
        bench.start_operator(LIMETASK_ARCHIVE_URL=url, LIMETASK_ARCHIVE_KEEP_SECONDS="0")
        archived_at = deleted_at = None
        while deleted_at is None and time.monotonic() - t0 < 600:
            m = bench.metrics()
            if archived_at is None and m.get("limetask_archive_written_total", 0) - written0 >= n:
                archived_at = time.monotonic()
            if m.get("limetask_archive_deleted_total", 0) >= n:
                deleted_at = time.monotonic()
            time.sleep(0.1)
        bench.stop_operator()
        bench.drop_namespace(ns)
        operator_rate = {"tasks": n, "archived_s": round((archived_at or float("nan")) - t0, 2),
                         "archived_and_deleted_s": round((deleted_at or float("nan")) - t0, 2)}
        operator_rate["archived_per_second"] = round(n / operator_rate["archived_s"], 1)
        operator_rate["deleted_per_second"] = round(n / operator_rate["archived_and_deleted_s"], 1)
        out["operator_archive"] = operator_rate
        conversion = (bench.results.get("ceiling") or {}).get("operator_jobs_per_second")
        out["conversion_jobs_per_second"] = conversion
        say(f"   {operator_rate}; conversion {conversion or 'not measured in this run (ceiling)'} Jobs/s")
    finally:
        bench.stop_operator()
        bench.start_operator()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    bench.results["archive"] = out


def measure_start(bench: Any, url: str) -> tuple[float, float]:
    """Start the operator with the archive: seconds until it has listed the 1,000 tasks, worked
    its queue off and written them all (again), and its RSS (MB) 10 s later."""
    t0 = time.monotonic()
    bench.start_operator(LIMETASK_ARCHIVE_URL=url, LIMETASK_ARCHIVE_KEEP_SECONDS="86400")
    while True:
        m = bench.metrics()
        seen = sum(v for k, v in m.items() if k.startswith("limetask_tasks{"))
        if seen >= 1000 and m.get("limetask_workqueue_depth", 1) == 0 and m.get(
                "limetask_archive_pending", 1) == 0 and m.get("limetask_archive_written_total", 0) >= 1000:
            break
        time.sleep(0.1)
    resync = time.monotonic() - t0
    time.sleep(10)
    return resync, bench.rss_mb()


def wait_namespaces_gone(bench: Any, within: float = 180) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not [n for n in bench.core.list_namespace().items if n.metadata.name.startswith(f"bench-{bench.run_id}-")]:
            return
        time.sleep(1)


def _reader_account(bench: Any, ns: str, name: str) -> None:
    """A ServiceAccount that may read and list LimeTasks in `ns` (made once; kept, as the namespace is)."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(bench.api_client)
    objects = [
        (bench.core.create_namespaced_service_account, {"metadata": {"name": name}}),
        (rbac.create_namespaced_role, {"metadata": {"name": name}, "rules": [
            {"apiGroups": ["limetask.io"], "resources": ["limetasks"], "verbs": ["get", "list"]}]}),
        (rbac.create_namespaced_role_binding, {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
    ]
    for create, body in objects:
        try:
            create(ns, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise


def get_status_figures(bench: Any, ns: str, url: str, n: int = 300) -> dict[str, Any]:
    """get_status of a live task against an archived one, interleaved, through `limetask web`."""
    from lime_task import TaskClient

    port = _main().free_port()
    tokens = {"bench": "bench-token-" + uuid.uuid4().hex}
    env = dict(os.environ, LIMETASK_KUBECONFIG=str(bench.kubeconfig), LIMETASK_ARCHIVE_URL=url,
               LIMETASK_WEB_TOKENS=json.dumps(tokens), PYTHONUNBUFFERED="1",
               # What is measured is the endpoint's own work, not its per-token rate limit.
               LIMETASK_WEB_READS_PER_SECOND="0")
    env.pop("LIMETASK_RESULTS_URL", None)
    web = subprocess.Popen([sys.executable, "-m", "lime_task.cli", "web", "--port", str(port), "-n", "bench-archive",
                            "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not _main().answers(f"http://127.0.0.1:{port}/healthz"):
            raise RuntimeError("limetask web did not start")
        # The live one in the namespace the archived ones claim too (bench-archive): both paths
        # ask the cluster first, as a solution's get_status does.
        if not _exists(bench, "bench-archive"):
            bench.core.create_namespace({"metadata": {"name": "bench-archive"}})
        # No token of app-1 here: the client presents a Kubernetes token for the endpoint's audience
        # (a ServiceAccount's, from the TokenRequest API), which the endpoint checks at the API
        # server (a TokenReview and a SubjectAccessReview, kept 30 s).
        _reader_account(bench, "bench-archive", "bench-reader")
        tc = TaskClient(kubeconfig=bench.kubeconfig, namespace="bench-archive", results_url=f"http://127.0.0.1:{port}",
                        results_service_account="bench-reader")
        live_id = "live-probe"
        bench.custom.create_namespaced_custom_object("limetask.io", "v1alpha1", "bench-archive", "limetasks",
                                                     bench.task_body(live_id))
        archived_id = "a-1"  # fake_task: app-{i % 20}
        tc.get_status(live_id, "bench")
        tc.get_status(archived_id, "app-1")
        live, archived = [], []
        for _ in range(n):
            t = time.perf_counter()
            tc.get_status(live_id, "bench")
            live.append(time.perf_counter() - t)
            t = time.perf_counter()
            st = tc.get_status(archived_id, "app-1")
            archived.append(time.perf_counter() - t)
            assert st.archived
        pct = _main().pct
        return {"n": n, "live_ms_p50": round(pct(live, 50) * 1000, 2),
                "archived_ms_p50": round(pct(archived, 50) * 1000, 2), "live_ms_p99": round(pct(live, 99) * 1000, 2),
                "archived_ms_p99": round(pct(archived, 99) * 1000, 2),
                "ratio_p50": round(pct(archived, 50) / pct(live, 50), 3), "target_ratio_p50": 2.0}
    finally:
        web.terminate()
        web.wait(timeout=15)
        bench.drop_namespace("bench-archive")


def _exists(bench: Any, namespace: str) -> bool:
    from kubernetes import client

    try:
        bench.core.read_namespace(namespace)
        return True
    except client.ApiException:
        return False


def _main() -> Any:
    """bench/__main__.py, whose helpers (say, pct, free_port) this step uses."""
    return sys.modules.get("bench.__main__") or sys.modules["__main__"]
