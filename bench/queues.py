"""`python -m bench --only queues`: a queue's limit and fair share, side by side in one run.

2,000 no-op tasks (BENCH_QUEUE_N) from three applications, one of which sends 80 % of them,
interleaved, into a LimeTaskQueue with `maxRunning: 20`, then the same into one with no limit.
For each, from watches of the namespace (never from the operator's word):
- the most pods running at once (a pod holds its slot from its creation until its container
  terminates);
- each application's share of the starts made while all three had work waiting, against its
  fair share (a third);
- p50 and p99 wait: from send_task returning to the task's pod appearing (without a limit, the
  pods appear at once and then wait for the node: that wait is in the total, not here);
- the total time, from the first send to the last task final.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

N = int(os.environ.get("BENCH_QUEUE_N", "2000"))
LIMIT = 20
APPS = {"flood": 0.8, "app-b": 0.1, "app-c": 0.1}


def run(bench: Any) -> None:
    from bench.measure import pct, say

    say(f"8/8 queues: {N} no-op tasks from three applications (80 % from one), limit {LIMIT} vs none")
    out: dict[str, Any] = {"n": N, "max_running": LIMIT, "apps": APPS}
    for arm, spec in (("limit", {"maxRunning": LIMIT}), ("none", {})):
        out[arm] = one_arm(bench, arm, spec, pct)
        say(f"queues {arm}: {out[arm]}")
    out["time_ratio"] = round(out["limit"]["total_s"] / out["none"]["total_s"], 2)
    bench.results["queues"] = out


def one_arm(bench: Any, arm: str, spec: dict[str, Any], pct: Any) -> dict[str, Any]:
    from kubernetes import client, watch

    from bench.measure import NOOP
    from lime_task import TaskClient
    from lime_task.resource import GROUP, QUEUE_PLURAL, VERSION

    ns = bench.namespace(f"queues-{arm}")
    qname = f"bench-{bench.run_id}-{arm}-{uuid.uuid4().hex[:4]}"
    bench.custom.create_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": {"name": qname}, "spec": spec})
    rng = random.Random(16)
    apps = [app for app, share in APPS.items() for _ in range(int(N * share))]
    rng.shuffle(apps)
    sent: dict[str, tuple[float, str]] = {}  # task id: (when send_task returned, app)
    first_pod: dict[str, float] = {}
    alive: set[str] = set()
    final: dict[str, float] = {}
    most = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def follow(list_fn: Any, args: tuple[Any, ...], on_event: Any) -> None:
        """Watch until stopped, from the last resourceVersion seen (again from a listing on errors)."""
        version = None
        while not stop.is_set():
            w = watch.Watch()
            try:
                kw = {"resource_version": version} if version else {}
                for ev in w.stream(list_fn, *args, timeout_seconds=5, **kw):
                    obj = ev["raw_object"]
                    version = obj["metadata"]["resourceVersion"]
                    on_event(ev["type"], obj)
                    if stop.is_set():
                        w.stop()
            except client.ApiException:
                version = None

    def on_pod(kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        tid = (obj["metadata"].get("labels") or {}).get("limetask.io/task-id", "")
        st = obj.get("status") or {}
        ended = (st.get("phase") in ("Succeeded", "Failed")
                 or any("terminated" in (c.get("state") or {}) for c in st.get("containerStatuses") or [])
                 or obj["metadata"].get("deletionTimestamp") or kind == "DELETED")
        with lock:
            first_pod.setdefault(tid, time.monotonic())
            (alive.discard if ended else alive.add)(name)
            most[0] = max(most[0], len(alive))

    def on_task(kind: str, obj: dict[str, Any]) -> None:
        if (obj.get("status") or {}).get("state") in ("SUCCESS", "FAILURE"):
            final.setdefault(obj["metadata"]["name"], time.monotonic())

    watchers = [threading.Thread(target=follow, args=a, daemon=True) for a in (
        (bench.core.list_namespaced_pod, (ns,), on_pod),
        (bench.custom.list_namespaced_custom_object, (GROUP, VERSION, ns, "limetasks"), on_task))]
    for t in watchers:
        t.start()
    time.sleep(1)
    tc = TaskClient(kubeconfig=bench.kubeconfig, namespace=ns)

    def send(app: str) -> None:
        status = tc.send(NOOP, app, qos=qname)
        sent[status.id] = (time.monotonic(), app)

    t0 = time.monotonic()
    bench.parallel(send, apps)
    sending_s = time.monotonic() - t0
    deadline = time.monotonic() + 1800
    while len(final) < len(apps) and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    total = max(final.values()) - t0 if len(final) == len(apps) else float("nan")
    # Starts while all three applications had work waiting (sent and not yet started).
    events = sorted([(at, 0, app, tid) for tid, (at, app) in sent.items()]
                    + [(first_pod[tid], 1, app, tid) for tid, (_, app) in sent.items() if tid in first_pod])
    waiting: Counter[str] = Counter()
    shares: Counter[str] = Counter()
    for _, kind, app, _ in events:
        if kind == 0:
            waiting[app] += 1
            continue
        if all(waiting[a] > 0 for a in APPS):
            shares[app] += 1
        waiting[app] -= 1
    contested = sum(shares.values())
    waits = [first_pod[tid] - at for tid, (at, _) in sent.items() if tid in first_pod]
    bench.custom.delete_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, qname)
    bench.drop_namespace(ns)
    return {
        "most_running": most[0],
        "contested_starts": contested,
        "share": {a: round(shares[a] / contested, 3) if contested else None for a in APPS},
        "fair_share": round(1 / len(APPS), 3),
        "wait_s": {"p50": round(pct(waits, 50), 2), "p99": round(pct(waits, 99), 2)},
        "sending_s": round(sending_s, 1),
        "total_s": round(total, 1),
        "finished": len(final),
    }


def row(results: dict[str, Any]) -> list[str]:
    q = results["queues"]
    rows = []
    for arm in ("limit", "none"):
        v = q[arm]
        label = f"maxRunning {q['max_running']}" if arm == "limit" else "no limit"
        shares = ", ".join(f"{a} {s}" for a, s in v["share"].items())
        rows.append(f"queues    {q['n']} no-op, {label}: most running {v['most_running']}; shares while all wait "
                    f"({v['contested_starts']} starts) {shares} (fair {v['fair_share']}); wait p50 "
                    f"{v['wait_s']['p50']}s p99 {v['wait_s']['p99']}s; total {v['total_s']}s")
    rows.append(f"queues    total time with the limit / without: {q['time_ratio']}")
    return rows
