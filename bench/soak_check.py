"""The soak's independent checker: what happened, as the cluster, the broker and the archive saw it.

    python -m bench.soak_check CONFIG.json OUT.json

A process of its own, which never asks the operator anything nor reads its metrics. It records:
- its own watches of LimeTasks, Jobs and Pods (every namespace), LimeTaskSchedules and the
  operator's Lease: each task's states and final statuses, each attempt's Jobs and pods, what
  holds a slot in each queue, and every renewal of the Lease;
- every completion event, from a queue of its own bound with `#` to each application's exchange;
- the archive's rows (SQL), counted as they come and read whole at the end;
- the API server's own request metrics (apiserver_request_total) and stored objects;
- the CPU and memory of the operator's replicas and of the cluster's processes (/proc), and the
  latency of each replica's liveness endpoint, which kopf serves from the operator's event loop:
  a slow answer is a blocked loop.
It stops when the file CONFIG names as `stop` appears, and writes its observations to OUT.json;
bench/soak_report.py turns them into the invariants and figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.soak_api import Api

FINAL = ("SUCCESS", "FAILURE")
SLOT_HOLDING_PHASES = ("Pending", "Running")


def proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def parse_metrics(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """The API server's write requests by `VERB resource/subresource` (summed over scopes; those
    it refused get their code class appended, e.g. `DELETE jobs 4xx`), and its stored objects by
    `resource.group`."""
    writes: dict[str, float] = defaultdict(float)
    stored: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name not in ("apiserver_request_total", "apiserver_storage_objects", "apiserver_resource_objects"):
            continue
        labels_text, _, value = rest.rpartition("} ")
        labels = {k: v.strip('"') for k, v in (part.split("=", 1) for part in labels_text.split('",') if "=" in part)}
        if name == "apiserver_request_total":
            verb = labels.get("verb", "")
            if verb not in ("POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION") or labels.get("dry_run"):
                continue
            key = f"{verb} {labels.get('resource', '')}" + (f"/{labels['subresource']}" if labels.get("subresource")
                                                             else "")
            code = labels.get("code", "")
            if not code.startswith("2"):
                key += f" {code[:1]}xx"
            writes[key] += float(value)
        elif name == "apiserver_resource_objects":  # 1.33 and later
            stored[f"{labels.get('resource')}.{labels.get('group')}".rstrip(".")] = float(value)
        else:
            stored.setdefault(str(labels.get("resource")), float(value))
    return dict(writes), stored


class Checker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.api = Api(Path(cfg["kubeconfig"]), limit=16)
        self.prefix = cfg["namespace_prefix"]
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.limits: dict[str, int] = {q: n for q, n in cfg["queues"].items() if n}
        # Observations (see soak_report.py for what becomes of them).
        self.tasks: dict[str, dict[str, Any]] = {}
        self.job_uids: dict[str, set[str]] = defaultdict(set)  # "task uid/attempt": Job uids
        self.job_first: dict[str, float] = {}  # task uid: when its first Job was seen
        self.jobs_alive: dict[str, dict[str, str]] = defaultdict(dict)  # queue: Job uid -> task uid
        self.pods: dict[str, dict[str, Any]] = {}
        self.pod_uids: dict[str, set[str]] = defaultdict(set)  # "task uid/attempt": pod uids
        self.alive: dict[str, set[str]] = defaultdict(set)  # queue: uids of pods holding a slot
        self.most: dict[str, dict[str, Any]] = defaultdict(lambda: {"pods": 0, "jobs": 0, "over_s": 0.0})
        self.occupancy: list[tuple[float, dict[str, int]]] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.unknown_events = 0
        self.lease: list[tuple[float, str, str, int]] = []
        self.probes: list[tuple[float, str, float | None]] = []
        self.samples: list[dict[str, Any]] = []
        self.scrapes: list[tuple[float, dict[str, float], dict[str, float]]] = []
        self.archive_counts: list[tuple[float, int]] = []
        self.archive_rows: list[dict[str, Any]] = []
        self.archive_duplicates: dict[str, int] = {}
        self.schedules: dict[str, dict[str, Any]] = {}
        self.watch_restarts: Counter[str] = Counter()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    # -- watches ------------------------------------------------------------------------
    def mine(self, obj: dict[str, Any]) -> bool:
        return str((obj.get("metadata") or {}).get("namespace", "")).startswith(self.prefix)

    async def watch_tasks(self) -> None:
        async for kind, obj in self.api.watch("/apis/limetask.io/v1alpha1/limetasks"):
            if not self.mine(obj):
                continue
            meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
            uid = meta["uid"]
            t = self.tasks.get(uid)
            if t is None:
                labels = meta.get("labels") or {}
                t = self.tasks[uid] = {
                    "ns": meta["namespace"], "name": meta["name"], "app": spec.get("app"), "task": spec.get("task"),
                    "queue": spec.get("queue") or "default", "acks": bool(spec.get("acksLate")),
                    "schedule": labels.get("limetask.io/schedule"), "tick": labels.get("limetask.io/tick"),
                    "phase": labels.get("soak.limetask.io/phase"), "created": meta.get("creationTimestamp"),
                    "seen": self.now(), "started": None, "finals": [], "deleted": None}
            if kind == "DELETED":
                t["deleted"] = self.now()
                continue
            state = st.get("state")
            if state in ("STARTED", *FINAL) and t["started"] is None:
                t["started"] = self.now()
            if state in FINAL:
                err = st.get("error") or {}
                result = st.get("result")
                final = [state, err.get("reason", "") if state == "FAILURE" else "",
                         result.get("id") if isinstance(result, dict) else None, st.get("attempts"), self.now(),
                         bool((st.get("event") or {}).get("confirmed"))]
                last = t["finals"][-1] if t["finals"] else None
                if last is None or last[:4] != final[:4]:
                    t["finals"].append(final)
                elif final[5] and not last[5]:
                    last[5] = True

    async def watch_jobs(self) -> None:
        async for kind, obj in self.api.watch("/apis/batch/v1/jobs", {"labelSelector": "limetask.io/task-uid"}):
            if not self.mine(obj):
                continue
            meta = obj["metadata"]
            labels = meta.get("labels") or {}
            task_uid, attempt = labels.get("limetask.io/task-uid", ""), labels.get("limetask.io/attempt", "")
            queue = labels.get("limetask.io/queue", "default")
            self.job_uids[f"{task_uid}/{attempt}"].add(meta["uid"])
            self.job_first.setdefault(task_uid, self.now())
            conds = {c.get("type") for c in (obj.get("status") or {}).get("conditions") or []
                     if c.get("status") == "True"}
            if kind == "DELETED" or conds & {"Complete", "Failed"}:
                self.jobs_alive[queue].pop(meta["uid"], None)
            else:
                self.jobs_alive[queue][meta["uid"]] = task_uid
            self.most[queue]["jobs"] = max(self.most[queue]["jobs"], len(self.jobs_alive[queue]))

    async def watch_pods(self) -> None:
        def listed(items: list[dict[str, Any]]) -> None:
            present = {i["metadata"]["uid"] for i in items}
            for _queue, uids in self.alive.items():
                for uid in uids - present:  # deleted while the watch was away
                    uids.discard(uid)
                    self.pods[uid]["ended"] = self.pods[uid]["ended"] or self.now()

        async for kind, obj in self.api.watch("/api/v1/pods", {"labelSelector": "limetask.io/task-uid"},
                                              on_listed=listed):
            if not self.mine(obj):
                continue
            meta, st = obj["metadata"], obj.get("status") or {}
            labels = meta.get("labels") or {}
            uid = meta["uid"]
            p = self.pods.get(uid)
            if p is None:
                task_uid, attempt = labels.get("limetask.io/task-uid", ""), labels.get("limetask.io/attempt", "")
                p = self.pods[uid] = {"task": task_uid, "attempt": attempt, "queue": labels.get("limetask.io/queue",
                                                                                                  "default"),
                                      "app": labels.get("limetask.io/app"), "seen": self.now(), "running": None,
                                      "ended": None}
                self.pod_uids[f"{task_uid}/{attempt}"].add(uid)
            statuses = st.get("containerStatuses") or []
            if p["running"] is None and any("running" in (s.get("state") or {}) for s in statuses):
                p["running"] = self.now()
            ended = (kind == "DELETED" or st.get("phase") in ("Succeeded", "Failed")
                     or any("terminated" in (s.get("state") or {}) for s in statuses))
            if ended and p["ended"] is None:
                p["ended"] = self.now()
            queue = p["queue"]
            if ended:
                self.alive[queue].discard(uid)
            else:
                self.alive[queue].add(uid)
            self.most[queue]["pods"] = max(self.most[queue]["pods"], len(self.alive[queue]))

    async def watch_lease(self) -> None:
        ns, name = self.cfg["lease_namespace"], self.cfg["lease_name"]
        async for _kind, obj in self.api.watch(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                                              {"fieldSelector": f"metadata.name={name}"}):
            spec = obj.get("spec") or {}
            self.lease.append((self.now(), str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""),
                               int(spec.get("leaseTransitions") or 0)))

    async def watch_schedules(self) -> None:
        async for kind, obj in self.api.watch("/apis/limetask.io/v1alpha1/limetaskschedules"):
            if not self.mine(obj):
                continue
            meta = obj["metadata"]
            self.schedules[f"{meta['namespace']}/{meta['name']}"] = {
                "created": meta.get("creationTimestamp"), "policy": (obj.get("spec") or {}).get("concurrencyPolicy"),
                "schedule": (obj.get("spec") or {}).get("schedule"), "deleted": kind == "DELETED"}

    # -- the broker and the archive -----------------------------------------------------
    async def consume(self) -> None:
        import aio_pika

        queue_name = f"soak-{self.cfg['run']}-checker"
        while True:
            try:
                conn = await aio_pika.connect_robust(self.cfg["broker_url"], timeout=10)
                async with conn:
                    channel = await conn.channel()
                    await channel.set_qos(prefetch_count=500)
                    queue = await channel.declare_queue(queue_name, durable=True)
                    for app in self.cfg["apps"]:
                        exchange = await channel.declare_exchange(
                            self.cfg["exchange_template"].replace("{app}", app), aio_pika.ExchangeType.TOPIC,
                            durable=True)
                        await queue.bind(exchange, "#")
                    async with queue.iterator() as messages:
                        async for message in messages:
                            self.on_event(message.message_id or "", message.body, bool(message.redelivered))
                            await message.ack()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broker outage: connect again
                print(f"[checker] broker: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(2)

    def on_event(self, message_id: str, body: bytes, redelivered: bool) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            self.unknown_events += 1
            return
        e = self.events.get(message_id)
        if e is None:
            result = data.get("result")
            e = self.events[message_id] = {"uid": data.get("uid"), "state": data.get("state"),
                                           "ns": data.get("namespace"), "id": data.get("id"),
                                           "result_id": result.get("id") if isinstance(result, dict) else None,
                                           "first": self.now(), "count": 0, "redelivered": 0}
        e["count"] += 1
        e["redelivered"] += int(redelivered)

    async def poll_archive(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.cfg["archive_url"], autocommit=True,
                                                                 connect_timeout=5) as conn:
                    while True:
                        row = await (await conn.execute("SELECT count(*) FROM limetask_archive")).fetchone()
                        self.archive_counts.append((self.now(), int(row[0]) if row else 0))
                        await asyncio.sleep(5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the archive away: try again
                print(f"[checker] archive: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(2)

    async def read_archive(self) -> None:
        import psycopg

        for _ in range(30):
            try:
                async with await psycopg.AsyncConnection.connect(self.cfg["archive_url"], autocommit=True,
                                                                 connect_timeout=5) as conn:
                    cur = await conn.execute(
                        "SELECT uid::text, namespace, name, state, reason, attempts, "
                        "status::json->'result'->>'id', extract(epoch FROM archived_at) FROM limetask_archive "
                        "WHERE namespace LIKE %s", (self.prefix + "%",))
                    self.archive_rows = [{"uid": r[0], "ns": r[1], "name": r[2], "state": r[3], "reason": r[4],
                                          "attempts": r[5], "result_id": r[6],
                                          "archived": round(float(r[7]) - self.wall0 + 0.0, 3)}
                                         for r in await cur.fetchall()]
                    return
            except Exception as exc:  # noqa: BLE001
                print(f"[checker] reading the archive: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(2)

    # -- samplers -----------------------------------------------------------------------
    def replicas(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads(Path(self.cfg["replicas_file"]).read_text()))
        except (OSError, ValueError):
            return {}

    async def sample(self) -> None:
        """Every second: CPU and memory of each replica and cluster process, and what holds a slot."""
        while True:
            t = self.now()
            row: dict[str, Any] = {"t": t, "procs": {}}
            for name, r in self.replicas().items():
                row["procs"][f"operator:{name}"] = (proc_cpu(r["pid"]), proc_rss_mb(r["pid"]))
            for pid_file in Path(self.cfg["cluster_state"], "pids").glob("*.pid"):
                try:
                    pid = int(pid_file.read_text())
                except (OSError, ValueError):
                    continue
                row["procs"][pid_file.stem] = (proc_cpu(pid), proc_rss_mb(pid))
            self.samples.append(row)
            occupancy = {q: len(uids) for q, uids in self.alive.items()}
            self.occupancy.append((t, occupancy))
            for q, n in occupancy.items():
                if q in self.limits and n > self.limits[q]:
                    self.most[q]["over_s"] += 1.0
            await asyncio.sleep(1)

    async def probe(self) -> None:
        """Latency of each replica's /healthz: kopf answers it on the operator's event loop."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while True:
                for name, r in self.replicas().items():
                    if not r.get("liveness"):
                        continue
                    start = time.monotonic()
                    try:
                        async with session.get(r["liveness"], timeout=aiohttp.ClientTimeout(total=5)) as resp:
                            await resp.read()
                        self.probes.append((self.now(), name, round((time.monotonic() - start) * 1000, 2)))
                    except Exception:  # noqa: BLE001 - down (killed, starting): recorded as such
                        self.probes.append((self.now(), name, None))
                await asyncio.sleep(self.cfg.get("probe_interval", 0.2))

    async def scrape(self) -> None:
        while True:
            try:
                writes, stored = parse_metrics(await self.api.metrics())
                self.scrapes.append((self.now(), writes, stored))
            except Exception as exc:  # noqa: BLE001 - the API server restarting
                print(f"[checker] metrics: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(self.cfg.get("scrape_interval", 10))

    # -- running ------------------------------------------------------------------------
    async def run(self) -> None:
        stop = Path(self.cfg["stop_file"])
        jobs = [asyncio.create_task(c()) for c in (
            self.watch_tasks, self.watch_jobs, self.watch_pods, self.watch_lease, self.watch_schedules,
            self.consume, self.poll_archive, self.sample, self.probe, self.scrape)]
        Path(self.cfg["ready_file"]).write_text(json.dumps({"t0": self.t0, "wall0": self.wall0}))
        while not stop.exists():
            await asyncio.sleep(0.5)
        try:
            writes, stored = parse_metrics(await self.api.metrics())
            self.scrapes.append((self.now(), writes, stored))
        except Exception:  # noqa: BLE001
            pass
        await self.read_archive()
        for j in jobs:
            j.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await self.api.close()

    def observations(self) -> dict[str, Any]:
        return {
            "t0": self.t0, "wall0": self.wall0, "tasks": self.tasks,
            "job_counts": {k: len(v) for k, v in self.job_uids.items()}, "job_first": self.job_first,
            "pods": self.pods, "pod_counts": {k: len(v) for k, v in self.pod_uids.items()},
            "most": dict(self.most), "occupancy": self.occupancy, "limits": self.limits,
            "events": self.events, "unknown_events": self.unknown_events, "lease": self.lease,
            "probes": self.probes, "samples": self.samples, "scrapes": self.scrapes,
            "archive_counts": self.archive_counts, "archive_rows": self.archive_rows,
            "schedules": self.schedules,
        }


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    checker = Checker(cfg)
    asyncio.run(checker.run())
    Path(sys.argv[2]).write_text(json.dumps(checker.observations()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
