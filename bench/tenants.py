"""`python -m bench --only tenants`: a well-behaved tenant's reaction beside each hostile tenant.

The good tenant (a namespace and application of its own) sends BENCH_TENANTS_N (20) no-op tasks,
one at a time, into a LimeTaskQueue of `maxRunning: 2, maxPriority: 0`, and reads each one's
get_status until its Job is made. Measured, from a watch of its namespace's Jobs and its own
calls (never from the operator's word): create -> Job p50/p99, and get_status p50/p99. Once
alone (none), then beside each hostile tenant, which starts first in a namespace of its own and
keeps at it:
- flood: BENCH_TENANTS_FLOOD (300) no-op tasks into the same queue, at once;
- priority: 100 no-op tasks of priority 1000 into the same queue (they count as 0 there);
- retrying: one send with the same idempotency key, again and again from 8 threads (one task);
- unpublishable: 50 tasks of an application whose exchange refuses every event (made a fanout),
  so that the operator tries each event again until it is dead-lettered.
The stream hog is not here: it holds the HTTP endpoint's stream slots, which neither the operator
nor a task client uses (tests/test_e2e_hostile_tenants.py checks its refusal and the good
tenant's stream beside it). About 5 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

N = int(os.environ.get("BENCH_TENANTS_N", "20"))
FLOOD = int(os.environ.get("BENCH_TENANTS_FLOOD", "300"))
QUEUE = {"maxRunning": 2, "maxPriority": 0}
ARMS = ("none", "flood", "priority", "retrying", "unpublishable")
JOB_TIMEOUT_S = 120.0


def run(bench: Any) -> None:
    from bench.measure import say

    say(f"10/10 tenants: the good tenant's {N} tasks, alone and beside each hostile tenant ({', '.join(ARMS[1:])})")
    out: dict[str, Any] = {"n": N, "queue": QUEUE, "flood": FLOOD}
    for arm in ARMS:
        out[arm] = one_arm(bench, arm)
        say(f"tenants {arm}: {out[arm]}")
    bench.results["tenants"] = out


def one_arm(bench: Any, arm: str) -> dict[str, Any]:
    from kubernetes import client, watch

    from bench.measure import NOOP, pct
    from lime_task import TaskClient
    from lime_task.resource import GROUP, LABEL_TASK_ID, QUEUE_PLURAL, VERSION

    qname = f"bench-{bench.run_id}-tenants-{arm}-{uuid.uuid4().hex[:4]}"
    bench.custom.create_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": {"name": qname}, "spec": QUEUE})
    good_ns, bad_ns = bench.namespace(f"good-{arm}"), bench.namespace(f"bad-{arm}")
    good, bad = (TaskClient(kubeconfig=bench.kubeconfig, namespace=ns) for ns in (good_ns, bad_ns))
    stop = threading.Event()
    job_seen: dict[str, float] = {}
    seen = threading.Condition()

    def follow_jobs() -> None:
        version = None
        while not stop.is_set():
            w = watch.Watch()
            try:
                kw = {"resource_version": version} if version else {}
                for ev in w.stream(bench.batch.list_namespaced_job, good_ns, timeout_seconds=5, **kw):
                    obj = ev["raw_object"]
                    version = obj["metadata"]["resourceVersion"]
                    tid = (obj["metadata"].get("labels") or {}).get(LABEL_TASK_ID)
                    with seen:
                        if tid and tid not in job_seen:
                            job_seen[tid] = time.monotonic()
                            seen.notify_all()
                    if stop.is_set():
                        w.stop()
            except client.ApiException:
                version = None

    hostile = threading.Thread(target=hostile_load(bench, arm, bad, qname, stop, NOOP), daemon=True)
    watcher = threading.Thread(target=follow_jobs, daemon=True)
    watcher.start()
    hostile.start()
    time.sleep(3)  # the hostile tenant first
    to_job: list[float] = []
    get_status: list[float] = []
    missed = 0
    for _ in range(N):
        t0 = time.monotonic()
        sent = good.send(NOOP, "good", qos=qname)
        deadline = t0 + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            with seen:
                if sent.id in job_seen:
                    to_job.append(job_seen[sent.id] - t0)
                    break
            t1 = time.monotonic()
            good.get_status(sent.id, "good")
            get_status.append(time.monotonic() - t1)
            with seen:
                seen.wait(0.05)
        else:
            missed += 1
    stop.set()
    hostile.join(60)
    watcher.join(10)
    bench.custom.delete_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, qname)
    bench.drop_namespace(good_ns)
    bench.drop_namespace(bad_ns)
    return {
        "create_to_job_ms": {"p50": round(pct(to_job, 50) * 1000, 1), "p99": round(pct(to_job, 99) * 1000, 1)},
        "get_status_ms": {"p50": round(pct(get_status, 50) * 1000, 1), "p99": round(pct(get_status, 99) * 1000, 1)},
        "get_status_calls": len(get_status),
        "no_job_within_s": {"s": JOB_TIMEOUT_S, "tasks": missed},
    }


def hostile_load(bench: Any, arm: str, bad: Any, qname: str, stop: threading.Event, noop: str) -> Callable[[], None]:
    """What the hostile tenant of `arm` does, on its own thread, until `stop` (or it is done)."""

    def none() -> None:
        pass

    def flood() -> None:
        bench.parallel(lambda _: bad.send(noop, "flood", qos=qname), list(range(FLOOD)))

    def priority() -> None:
        bench.parallel(lambda _: bad.send(noop, "abuser", qos=qname, priority=1000), list(range(100)))

    def retrying() -> None:
        key = f"order-{uuid.uuid4()}"

        def again(_: int) -> None:
            while not stop.is_set():
                bad.send(noop, "retrying", qos=qname, idempotency_key=key)

        bench.parallel(again, list(range(8)))

    def unpublishable() -> None:
        app = f"unpublishable-{uuid.uuid4().hex[:6]}"
        asyncio.run(fanout_exchange(bench.args.broker, app))
        try:
            bench.parallel(lambda _: bad.send(noop, app, qos=qname), list(range(50)))
            stop.wait()
        finally:
            asyncio.run(fanout_exchange(bench.args.broker, app, delete=True))

    return {"none": none, "flood": flood, "priority": priority, "retrying": retrying,
            "unpublishable": unpublishable}[arm]


async def fanout_exchange(url: str, app: str, delete: bool = False) -> None:
    """The application's exchange made a fanout: the operator's topic declaration is refused
    (406 PRECONDITION_FAILED) at every try, as tests/test_e2e_dead_letter.py arranges; or,
    with `delete`, deleted again."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        if delete:
            await channel.exchange_delete(f"lime.{app}")
        else:
            await channel.declare_exchange(f"lime.{app}", aio_pika.ExchangeType.FANOUT, durable=True)


def row(results: dict[str, Any]) -> list[str]:
    t = results["tenants"]
    rows = [f"tenants   the good tenant's {t['n']} tasks, queue maxRunning {t['queue']['maxRunning']} maxPriority "
            f"{t['queue']['maxPriority']}:  create->Job p50/p99 ms | get_status p50/p99 ms | no Job in "
            f"{JOB_TIMEOUT_S:g}s"]
    for arm in ARMS:
        v = t[arm]
        rows.append(f"tenants   {arm:<14} {v['create_to_job_ms']['p50']:>8} / {v['create_to_job_ms']['p99']:<8} | "
                    f"{v['get_status_ms']['p50']:>6} / {v['get_status_ms']['p99']:<6} | "
                    f"{v['no_job_within_s']['tasks']}")
    return rows
