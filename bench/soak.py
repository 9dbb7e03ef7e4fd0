"""`make soak`: the operator under a platform's day, against simulated nodes, faults included.

    python -m bench.soak [--duration 30m] [--rate 12] [--burst 20000] [--faults leader,postgres,rabbitmq,apiserver]
                         [--real-outages] [--ceiling 12,25,50,100] [--out FILE]
                         [--flood 100000] [--flood-queue default] [--flood-after 10m]

What runs (each its own process): a control plane with KWOK's simulated nodes in a state folder
of its own (`LIMETASK_SOAK_CLUSTER_DIR`, default `.cluster-soak/`; localcluster.py `up
--simulated`), two operator replicas with leader election, this driver (the load and the
faults) and the independent checker (bench/soak_check.py). The operator reaches RabbitMQ and
PostgreSQL through TCP proxies of the driver's, which an outage cuts (`--real-outages` stops
the services themselves instead: only on a machine nobody else uses).

1. Sustained: `--rate` tasks a second for `--duration` over 30 namespaces and 10 applications,
   three queues (one with `maxRunning: 50`), 100 schedules firing every minute, completion events
   and the archive on; the faults of `--faults` spread over it.
   With `--flood N`: after `--flood-after` of it (the baseline stretch; default a third), one
   more namespace, of an application of its own, creates N tasks into `--flood-queue` as fast
   as the API server takes them (soak_load.flood), while the other tenants' load goes on. The
   report sets the others' reaction before the flood, while it drains and after it beside the
   flooding namespace's own, the LimeTasks stored at the peak, and how long the flood took to
   create and to drain: a namespace that floods must slow its own tasks, not the others'.
2. Burst: `--burst` tasks within `--burst-seconds` from every tenant into the limited queue.
3. Drain: until every task is final, its event confirmed and its row archived.
Then the checker's observations become one table (bench/soak_report.py) and a JSON file of every
figure. `--ceiling R1,R2,...` runs the sustained phase at each rate in turn (no burst, no
faults) and stops at the first that breaks an invariant or a target, naming what gave out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devtools" / "cluster"))
sys.path.insert(0, str(REPO / "tests"))

import localcluster  # noqa: E402

from bench import soak_faults, soak_load, soak_report  # noqa: E402
from bench.soak_api import Api, ApiError  # noqa: E402

STATE = Path(os.environ.get("LIMETASK_SOAK_CLUSTER_DIR") or REPO / ".cluster-soak")
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
LEASE_NAMESPACE = "limetask-soak"
LEASE_NAME = "limetask-operator"
BROKER = os.environ.get("LIMETASK_SOAK_BROKER", "127.0.0.1:5672")
ARCHIVE = os.environ.get("LIMETASK_SOAK_POSTGRES", "127.0.0.1:5432")
ARCHIVE_ADMIN_URL = f"postgresql://limetask:limetask@{ARCHIVE}/limetask"


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def seconds(text: str) -> float:
    """`90`, `90s`, `5m`, `1h` as seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


class Replica:
    """One operator process (a Deployment's pod): killed and replaced under a new identity."""

    def __init__(self, identity: str, env: dict[str, str], log_dir: Path) -> None:
        self.identity = identity
        self.port = localcluster.free_port()
        self.log = log_dir / f"operator-{identity}.log"
        env = {**env, "LIMETASK_LEADER_ELECTION_IDENTITY": identity}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "limetask_operator", "--all-namespaces",
                 f"--liveness=http://127.0.0.1:{self.port}/healthz"],
                stdout=log, stderr=subprocess.STDOUT, env=env)

    @property
    def liveness(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:4]
        self.out_dir = Path(args.out_dir or REPO / "bench-results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.layout = soak_load.Layout.make(self.run_id, args.namespaces, args.apps, args.limit)
        self.replicas: dict[str, Replica] = {}
        self.generation = 0
        self.database = f"soak_{self.run_id}"
        self.proxies: dict[str, Any] = {}
        self.faults: list[soak_faults.FaultRecord] = []
        self.sent: list[soak_load.Sent] = []
        self.phases: dict[str, tuple[float, float]] = {}
        self.flood: dict[str, Any] = {}  # the flood's own record (soak_report.flood_figures)
        self.exchange_template = f"soak-{self.run_id}.{{app}}"
        self.api: Api | None = None
        self.kubeconfig: Path | None = None

    # -- set-up -------------------------------------------------------------------------
    def cluster(self) -> Path:
        say(f"the soak's cluster of simulated nodes ({STATE})")
        kubeconfig: Path = localcluster.up(STATE, simulate=True)
        kubectl = localcluster.kubectl_path()
        subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "apply", "-f", str(REPO / "crds")],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "wait", "--for=condition=Established",
                        "crd", "--all", "--timeout=60s"], check=True, stdout=subprocess.DEVNULL)
        return kubeconfig

    async def create(self, path: str, body: dict[str, Any]) -> None:
        assert self.api is not None
        try:
            await self.api.request("POST", path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def tenants(self) -> None:
        assert self.api is not None
        for ns in (LEASE_NAMESPACE, *self.tenant_namespaces()):
            await self.create("/api/v1/namespaces", {"metadata": {"name": ns, "labels": RESTRICTED}})
        for name, limit in self.layout.queues.items():
            if name == "default":
                continue
            spec: dict[str, Any] = {"maxRunning": limit} if limit else {"maxRunningPerApp": 100}
            await self.create("/apis/limetask.io/v1alpha1/limetaskqueues", {
                "apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskQueue", "metadata": {"name": name},
                "spec": spec})
        # Pods need each namespace's default ServiceAccount, which a controller makes.
        for ns in self.tenant_namespaces():
            for _ in range(120):
                try:
                    await self.api.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")
                    break
                except ApiError:
                    await asyncio.sleep(0.5)

    def tenant_namespaces(self) -> tuple[str, ...]:
        """The tenants' namespaces, and the flooding one when there is a flood."""
        return (*self.layout.namespaces, *((self.layout.flood_namespace,) if self.args.flood else ()))

    def applications(self) -> tuple[str, ...]:
        return (*self.layout.apps, *((self.layout.flood_app,) if self.args.flood else ()))

    async def schedules(self, suspend: bool = False) -> None:
        """`--schedules` LimeTaskSchedules firing every minute, over the tenants in turn (half
        Forbid, half Allow); with `suspend`, suspended (before the burst and the drain)."""
        assert self.api is not None
        for i in range(self.args.schedules):
            ns_index = i % len(self.layout.namespaces)
            ns = self.layout.namespaces[ns_index]
            path = f"/apis/limetask.io/v1alpha1/namespaces/{ns}/limetaskschedules"
            if suspend:
                await self._suspend(path, i)
                continue
            await self.create(path, {
                "apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskSchedule",
                "metadata": {"name": f"sched-{i:03d}"},
                "spec": {"task": soak_load.SUCCEED, "app": self.layout.app_of(ns_index), "args": [],
                         "kwargs": {"seconds": 1}, "schedule": "* * * * *",
                         "concurrencyPolicy": "Forbid" if i % 2 else "Allow"}})

    async def _suspend(self, path: str, i: int) -> None:
        assert self.api is not None
        async with self.api.session.patch(
                f"{self.api.server}{path}/sched-{i:03d}", data=json.dumps({"spec": {"suspend": True}}),
                headers={"Content-Type": "application/merge-patch+json"}) as resp:
            await resp.read()

    def services(self) -> tuple[str, str]:
        """The run's database (migrated) and the proxies the operator reaches the services by."""
        import psycopg
        from tcpproxy import TcpProxy

        from lime_task.archive import migrate

        with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {self.database}")
        host, port = ARCHIVE.rsplit(":", 1)
        migrate(f"postgresql://limetask:limetask@{ARCHIVE}/{self.database}")
        bhost, bport = BROKER.rsplit(":", 1)
        self.proxies = {"postgres": TcpProxy(int(port), host), "rabbitmq": TcpProxy(int(bport), bhost)}
        broker = f"amqp://guest:guest@127.0.0.1:{self.proxies['rabbitmq'].port}/"
        archive = f"postgresql://limetask:limetask@127.0.0.1:{self.proxies['postgres'].port}/{self.database}"
        return broker, archive

    def operator_env(self, kubeconfig: Path, broker: str, archive: str) -> dict[str, str]:
        env = dict(os.environ)
        for key in [k for k in env if k.startswith("LIMETASK_")]:
            del env[key]
        toleration = {**localcluster.SIMULATED_TAINT, "operator": "Equal"}
        env.update({
            "LIMETASK_KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", "LIMETASK_METRICS_PORT": "0",
            "LIMETASK_LEADER_ELECTION": "true", "LIMETASK_LEADER_ELECTION_NAMESPACE": LEASE_NAMESPACE,
            "LIMETASK_LEADER_ELECTION_LEASE": LEASE_NAME,
            # Runner pods go to the simulated nodes only (their label and taint).
            "LIMETASK_RUNNER_IMAGE": "localhost/limetask/runner:dev",
            "LIMETASK_RUNNER_NODE_SELECTOR": json.dumps(localcluster.SIMULATED_NODE_LABELS),
            "LIMETASK_RUNNER_TOLERATIONS": json.dumps([toleration]),
            "LIMETASK_RUNNER_RESOURCES": json.dumps({"requests": {"cpu": "10m", "memory": "32Mi"},
                                                     "limits": {"memory": "512Mi"}}),
            "LIMETASK_BROKER_URL": broker, "LIMETASK_BROKER_EXCHANGE": self.exchange_template,
            "LIMETASK_ARCHIVE_URL": archive, "LIMETASK_ARCHIVE_KEEP_SECONDS": str(self.args.keep_seconds),
            "LIMETASK_JOB_CREATES_PER_SECOND": str(self.args.job_creates_per_second),
            "LIMETASK_JOB_CREATES_BURST": str(max(20, int(self.args.job_creates_per_second))),
        })
        return env

    def start_replica(self, env: dict[str, str], base: str) -> Replica:
        self.generation += 1
        identity = f"{base}-{self.generation}"
        replica = Replica(identity, env, self.out_dir)
        self.replicas[identity] = replica
        self.write_replicas()
        return replica

    def write_replicas(self) -> None:
        live = {name: {"pid": r.proc.pid, "liveness": r.liveness} for name, r in self.replicas.items() if r.alive()}
        tmp = self.out_dir / "replicas.json.tmp"
        tmp.write_text(json.dumps(live))
        tmp.replace(self.out_dir / "replicas.json")

    async def holder(self) -> str:
        assert self.api is not None
        lease = await self.api.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{LEASE_NAME}")
        return str(lease["spec"].get("holderIdentity") or "")

    async def wait_leader(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                who = await self.holder()
                if who in self.replicas and self.replicas[who].alive():
                    return who
            except Exception:  # noqa: BLE001 - no lease yet, or the API away
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError(f"no replica leads after {timeout:.0f}s; see {self.out_dir}/operator-*.log")

    # -- the checker --------------------------------------------------------------------
    def start_checker(self, kubeconfig: Path) -> subprocess.Popen[bytes]:
        cfg = {
            "kubeconfig": str(kubeconfig), "run": self.run_id, "namespace_prefix": f"soak-{self.run_id}-",
            "queues": self.layout.queues, "apps": list(self.applications()),
            "exchange_template": self.exchange_template,
            "broker_url": f"amqp://guest:guest@{BROKER}/",
            "archive_url": f"postgresql://limetask:limetask@{ARCHIVE}/{self.database}",
            "lease_namespace": LEASE_NAMESPACE, "lease_name": LEASE_NAME,
            "replicas_file": str(self.out_dir / "replicas.json"), "cluster_state": str(STATE),
            "stop_file": str(self.out_dir / "checker.stop"), "ready_file": str(self.out_dir / "checker.ready"),
        }
        path = self.out_dir / "checker.json"
        path.write_text(json.dumps(cfg, indent=2))
        with open(self.out_dir / "checker.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "bench.soak_check", str(path),
                                     str(self.out_dir / "observations.json")], cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT)

    # -- phases -------------------------------------------------------------------------
    async def sustained(self, env: dict[str, str], rate: float, duration: float, faults: list[str]) -> None:
        n = int(rate * duration)
        say(f"sustained: {n} tasks at {rate}/s for {duration:.0f}s over {len(self.layout.namespaces)} namespaces; "
            f"faults: {', '.join(faults) or 'none'}")
        plans = [soak_load.TaskPlan(**{**asdict(p), "name": f"r{rate:g}-{p.name}".replace(".", "-")})
                 for p in soak_load.sustained_plan(self.layout, n, run_seconds=self.args.run_seconds)]
        start = time.monotonic()
        sender = asyncio.create_task(soak_load.send(self.api_or_fail(), plans, rate))
        fault_tasks = []
        for at, kind in soak_faults.timetable(faults, duration):
            fault_tasks.append(asyncio.create_task(self.fault_at(start + at, kind, env)))
        flooding = None
        if self.args.flood and not self.flood:
            after = seconds(self.args.flood_after) if self.args.flood_after else duration / 3
            flooding = asyncio.create_task(self.flood_at(start + after))
        self.sent += await sender
        for t in fault_tasks:
            self.faults.append(await t)
        if flooding is not None:
            self.sent += await flooding
        self.phases[f"sustained@{rate:g}"] = (start, time.monotonic())

    async def flood_at(self, when: float) -> list[soak_load.Sent]:
        """The flood (`--flood`): one namespace creates its tasks as fast as the API server takes
        them, through a connection pool of its own (another client than the other tenants')."""
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        queue = self.layout.queue_named(self.args.flood_queue)
        plans = soak_load.flood_plan(self.layout, self.args.flood, queue)
        say(f"flood: {len(plans)} tasks from {self.layout.flood_namespace} into {queue}, "
            f"{self.args.flood_concurrency} creates in flight")
        assert self.kubeconfig is not None
        api = Api(self.kubeconfig, limit=self.args.flood_concurrency)
        start = time.monotonic()
        try:
            sent = await soak_load.flood(api, plans, self.args.flood_concurrency)
        finally:
            await api.close()
        end = time.monotonic()
        self.flood = {"namespace": self.layout.flood_namespace, "app": self.layout.flood_app, "queue": queue,
                      "n": len(plans), "concurrency": self.args.flood_concurrency, "start": start, "created_end": end}
        say(f"flood: {sum(1 for s in sent if s.uid)} created in {end - start:.0f}s")
        return sent

    def api_or_fail(self) -> Api:
        assert self.api is not None
        return self.api

    async def fault_at(self, when: float, kind: str, env: dict[str, str]) -> soak_faults.FaultRecord:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        say(f"fault: {kind}")
        if kind == "leader":
            def kill(identity: str) -> None:
                self.replicas[identity].kill()
                self.write_replicas()

            def restart(identity: str) -> None:
                self.start_replica(env, identity.rsplit("-", 1)[0])

            record = await soak_faults.kill_leader(self.holder, kill, restart)
        elif kind == "apiserver":
            record = await soak_faults.restart_apiserver(lambda: localcluster.restart_apiserver(STATE))
        else:
            switch = (soak_faults.postgres_switch() if kind == "postgres" else soak_faults.rabbitmq_switch()) \
                if self.args.real_outages else self.proxies[kind]
            record = await soak_faults.outage(kind, switch, self.args.outage_seconds)
        say(f"fault: {kind} over ({record.restored - record.start if record.restored else 0:.1f}s)")
        return record

    async def burst(self, n: int, within: float) -> None:
        say(f"burst: {n} tasks within {within:.0f}s into {self.layout.limited} "
            f"(maxRunning {self.layout.queues[self.layout.limited]})")
        start = time.monotonic()
        self.sent += await soak_load.send(self.api_or_fail(), soak_load.burst_plan(self.layout, n), n / within)
        self.phases["burst"] = (start, time.monotonic())

    async def drain(self, timeout: float) -> bool:
        """Until every LimeTask of the run is final, its event confirmed, and archived."""
        import psycopg

        api = self.api_or_fail()
        say("draining: waiting for every task to be final, its event confirmed and its row archived")
        deadline = time.monotonic() + timeout
        url = f"postgresql://limetask:limetask@{ARCHIVE}/{self.database}"
        while time.monotonic() < deadline:
            try:
                live: dict[str, bool] = {}
                for ns in self.tenant_namespaces():
                    # In pages: a flood's namespace may still hold 100,000 of them.
                    params = {"limit": "1000"}
                    while True:
                        listing = await api.request(
                            "GET", f"/apis/limetask.io/v1alpha1/namespaces/{ns}/limetasks", params=params, timeout=60)
                        for item in listing.get("items") or []:
                            st = item.get("status") or {}
                            live[item["metadata"]["uid"]] = st.get("state") in ("SUCCESS", "FAILURE") and bool(
                                (st.get("event") or {}).get("confirmed"))
                        more = (listing.get("metadata") or {}).get("continue")
                        if not more:
                            break
                        params = {"limit": "1000", "continue": more}
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    archived = {r[0] for r in conn.execute("SELECT uid::text FROM limetask_archive").fetchall()}
                waiting = [u for u, settled in live.items() if not settled or u not in archived]
                if not waiting:
                    say(f"drained: {len(live)} in the cluster, {len(archived)} archived")
                    return True
                say(f"draining: {len(waiting)} of {len(live)} in the cluster not yet final, confirmed and archived")
            except Exception as exc:  # noqa: BLE001 - keep trying until the deadline
                say(f"draining: {exc}")
            await asyncio.sleep(10)
        say(f"not drained within {timeout:.0f}s")
        return False

    # -- the whole run ------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        kubeconfig = await asyncio.to_thread(self.cluster)
        self.api = Api(kubeconfig, limit=self.args.concurrency)
        self.kubeconfig = kubeconfig
        broker, archive = await asyncio.to_thread(self.services)
        checker: subprocess.Popen[bytes] | None = None
        report: dict[str, Any] = {}
        try:
            await self.tenants()
            env = self.operator_env(kubeconfig, broker, archive)
            for base in ("replica-a", "replica-b")[: self.args.replicas]:
                self.start_replica(env, base)
            leader = await self.wait_leader()
            say(f"{len(self.replicas)} operator replicas; {leader} leads")
            checker = self.start_checker(kubeconfig)
            while not (self.out_dir / "checker.ready").exists():
                if checker.poll() is not None:
                    raise RuntimeError(f"the checker exited; see {self.out_dir / 'checker.log'}")
                await asyncio.sleep(0.2)
            ready = json.loads((self.out_dir / "checker.ready").read_text())
            await asyncio.sleep(3)  # its watches listed
            await self.schedules()
            rates = self.args.ceiling or [self.args.rate]
            duration = seconds(self.args.duration)
            for rate in rates:
                faults = [] if self.args.ceiling else self.args.faults
                await self.sustained(env, rate, duration, faults)
                if self.args.ceiling and not await self.drain(max(120.0, duration)):
                    say(f"the operator did not catch up after {rate}/s: the ceiling is below it; stopping")
                    break
            await self.schedules(suspend=True)
            if self.args.burst and not self.args.ceiling:
                await self.burst(self.args.burst, seconds(self.args.burst_seconds))
            drained = await self.drain(seconds(self.args.drain_timeout))
            await asyncio.sleep(5)  # the last events and rows reach the checker
            (self.out_dir / "checker.stop").write_text("")
            await asyncio.to_thread(checker.wait, 300)
            config = {"rate": self.args.rate, "duration_s": duration, "limit": self.args.limit,
                      "namespaces": self.args.namespaces, "apps": self.args.apps, "schedules": self.args.schedules,
                      "replicas": self.args.replicas, "burst": self.args.burst, "drained": drained,
                      "real_outages": self.args.real_outages, "outage_s": self.args.outage_seconds,
                      "ceiling": self.args.ceiling, "flood": self.args.flood,
                      "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}}
            driver = {"sent": [asdict(s) for s in self.sent], "faults": [asdict(f) for f in self.faults],
                      "phases": self.phases, "t0": ready["t0"], "config": config, "flood": self.flood}
            (self.out_dir / "driver.json").write_text(json.dumps(driver))
            report = analyze(self.out_dir)
        finally:
            if checker is not None and checker.poll() is None:
                (self.out_dir / "checker.stop").write_text("")
                try:
                    checker.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    checker.kill()
            for r in self.replicas.values():
                r.stop()
            for p in self.proxies.values():
                p.close()
            await self.cleanup()
        return report

    async def cleanup(self) -> None:
        import psycopg

        if self.api is not None:
            await self.api.close()
        try:
            with psycopg.connect(ARCHIVE_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        except Exception as exc:  # noqa: BLE001 - nothing to keep the run from reporting
            say(f"could not drop the database {self.database}: {exc}")
        try:
            import aio_pika

            broker = await aio_pika.connect(f"amqp://guest:guest@{BROKER}/", timeout=10)
            async with broker:
                channel = await broker.channel()
                await channel.queue_delete(f"soak-{self.run_id}-checker")
                for app in self.applications():
                    await channel.exchange_delete(self.exchange_template.replace("{app}", app))
        except Exception as exc:  # noqa: BLE001
            say(f"could not delete the run's exchanges: {exc}")
        if not self.args.keep_cluster:
            await asyncio.to_thread(localcluster.down, STATE)


def analyze(out_dir: Path) -> dict[str, Any]:
    """The report of a run's folder: the checker's observations and the driver's records."""
    observations = json.loads((out_dir / "observations.json").read_text())
    driver = json.loads((out_dir / "driver.json").read_text())
    phases = {name: (float(a), float(b)) for name, (a, b) in driver["phases"].items()}
    return soak_report.analyze(observations, driver["sent"], driver["faults"], phases, driver["t0"],
                               driver["config"], flood=driver.get("flood") or None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", default=os.environ.get("SOAK_DURATION", "30m"), help="sustained phase (90s, 30m)")
    p.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", "12")), help="tasks a second")
    p.add_argument("--namespaces", type=int, default=30)
    p.add_argument("--apps", type=int, default=10)
    p.add_argument("--schedules", type=int, default=int(os.environ.get("SOAK_SCHEDULES", "100")))
    p.add_argument("--limit", type=int, default=50, help="maxRunning of the limited queue")
    p.add_argument("--burst", type=int, default=int(os.environ.get("SOAK_BURST", "20000")),
                   help="tasks of the burst (0: none)")
    p.add_argument("--burst-seconds", default="60s")
    p.add_argument("--faults", type=lambda s: [f for f in s.split(",") if f],
                   default=os.environ.get("SOAK_FAULTS", ",".join(soak_faults.KINDS)).split(","),
                   help=f"comma-separated, of {', '.join(soak_faults.KINDS)} (empty: none)")
    p.add_argument("--outage-seconds", type=float, default=60.0)
    p.add_argument("--real-outages", action="store_true",
                   help="stop RabbitMQ and PostgreSQL themselves rather than the operator's proxies to them")
    p.add_argument("--ceiling", type=lambda s: [float(r) for r in s.split(",") if r], default=[],
                   help="rates to try in turn (tasks/s); stops at the first that breaks a target")
    p.add_argument("--flood", type=int, default=int(os.environ.get("SOAK_FLOOD", "0")),
                   help="tasks one more namespace creates as fast as the API server takes them, during the "
                        "sustained phase (0: no flood)")
    p.add_argument("--flood-queue", default="default", choices=("default", "standard", "limited"),
                   help="the queue of the flood: default (no LimeTaskQueue, unlimited), standard (unlimited "
                        "but maxRunningPerApp 100) or limited (the burst's, maxRunning --limit)")
    p.add_argument("--flood-after", default="", help="the baseline stretch before the flood (default: a third "
                                                     "of --duration)")
    p.add_argument("--flood-concurrency", type=int, default=32, help="the flood's creates in flight")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--run-seconds", type=lambda s: tuple(float(x) for x in s.split("-")), default=(0.5, 3.0),
                   help="a task's run time on its simulated node, drawn from this range (e.g. 0.5-3)")
    p.add_argument("--keep-seconds", type=int, default=120, help="LIMETASK_ARCHIVE_KEEP_SECONDS")
    p.add_argument("--job-creates-per-second", type=float, default=200.0,
                   help="LIMETASK_JOB_CREATES_PER_SECOND (the chart's default is 20)")
    p.add_argument("--concurrency", type=int, default=64, help="creates in flight at most")
    p.add_argument("--drain-timeout", default="20m")
    p.add_argument("--keep-cluster", action="store_true", help="leave the soak's cluster running")
    p.add_argument("--out-dir", default="")
    p.add_argument("--report", default="", metavar="DIR", help="only print the report of a finished run's folder")
    args = p.parse_args(argv)
    if args.flood and args.ceiling:
        p.error("--flood measures one sustained rate: leave out --ceiling")
    unknown = set(args.faults) - set(soak_faults.KINDS)
    if unknown:
        p.error(f"unknown fault(s): {', '.join(sorted(unknown))}; choose from {', '.join(soak_faults.KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        report = analyze(Path(args.report))
        print(soak_report.table(report))
        return 0 if report.get("ok") else 1
    soak = Soak(args)
    report = asyncio.run(soak.run())
    (soak.out_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(soak_report.table(report))
    print(f"figures: {soak.out_dir / 'report.json'}")
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
