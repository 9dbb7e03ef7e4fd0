"""The soak's load: what it sends (a pure plan) and sending it at a steady rate.

A tenant is a namespace; each belongs to one of the applications (so 30 namespaces and 10
applications make three namespaces per application). A task's outcome is chosen by its name,
which the simulated nodes' Stages read (devtools/kwok/stages.yaml), and its run time by its
keyword argument `seconds`.

The flood (`--flood N`): one more namespace, of an application of its own, whose loop creates
N tasks into one queue as fast as the API server takes them (`flood`: a few creates in flight,
each sent as soon as the one before it is answered), while the other tenants' load goes on.
It is a tenant's runaway loop, not a burst on a timetable: nothing paces it but the API server.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.soak_api import Api, ApiError

SUCCEED, FAIL, OOM, EVICT = "soak.tasks.succeed", "soak.tasks.fail", "soak.tasks.oom", "soak.tasks.evict"
# What a mature platform sees on an ordinary day: most tasks succeed, some raise, a few lose
# their worker. Shares of the sustained load.
OUTCOMES = ((SUCCEED, 0.90), (FAIL, 0.06), (OOM, 0.02), (EVICT, 0.02))
ACKS_LATE_SHARE = 0.10  # late acknowledgement: a lost worker is retried


@dataclass(frozen=True)
class Layout:
    """Names of one run's tenants, applications and queues."""

    run: str
    namespaces: tuple[str, ...]
    apps: tuple[str, ...]
    queues: dict[str, int | None]  # name: maxRunning (None: no limit); "default" has no object
    limited: str  # the queue of the burst
    flood_namespace: str  # the flooding tenant (`--flood`): not one of `namespaces`
    flood_app: str  # its application: not one of `apps`

    @classmethod
    def make(cls, run: str, namespaces: int, apps: int, limit: int) -> "Layout":
        return cls(run=run,
                   namespaces=tuple(f"soak-{run}-t{i:02d}" for i in range(namespaces)),
                   apps=tuple(f"soak-{run}-app{i:02d}" for i in range(apps)),
                   queues={"default": None, f"soak-{run}-standard": None, f"soak-{run}-limited": limit},
                   limited=f"soak-{run}-limited", flood_namespace=f"soak-{run}-flood",
                   flood_app=f"soak-{run}-flooder")

    def queue_named(self, short: str) -> str:
        """A queue by its short name (default, standard, limited), as `--flood-queue` says it."""
        full = "default" if short == "default" else f"soak-{self.run}-{short}"
        if full not in self.queues:
            raise ValueError(f"no queue {short!r} in the soak: choose default, standard or limited")
        return full

    def app_of(self, namespace_index: int) -> str:
        return self.apps[namespace_index % len(self.apps)]


@dataclass(frozen=True)
class TaskPlan:
    namespace: str
    name: str
    app: str
    task: str
    queue: str
    seconds: float
    acks_late: bool
    phase: str  # "sustained", "burst" or "flood"

    def body(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"task": self.task, "app": self.app, "args": [], "kwargs": {"seconds": self.seconds},
                                "acksLate": self.acks_late}
        if self.queue != "default":
            spec["queue"] = self.queue
        return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {"limetask.io/app": self.app, "soak.limetask.io/phase": self.phase}},
                "spec": spec}


def sustained_plan(layout: Layout, n: int, seed: int = 12, run_seconds: tuple[float, float] = (0.5, 3.0),
                   queue_shares: tuple[float, float, float] = (0.6, 0.3, 0.1)) -> list[TaskPlan]:
    """`n` tasks spread over every tenant in turn, with the outcome mix, run times and queues
    drawn from a seeded generator (the same plan every run)."""
    rng = random.Random(seed)
    queues = list(layout.queues)
    plans = []
    for i in range(n):
        ns_index = i % len(layout.namespaces)
        task = rng.choices([t for t, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
        plans.append(TaskPlan(
            namespace=layout.namespaces[ns_index], name=f"s-{i:07d}", app=layout.app_of(ns_index), task=task,
            queue=rng.choices(queues, queue_shares)[0], seconds=round(rng.uniform(*run_seconds), 2),
            acks_late=rng.random() < ACKS_LATE_SHARE, phase="sustained"))
    return plans


def burst_plan(layout: Layout, n: int, seconds: float = 1.0) -> list[TaskPlan]:
    """`n` tasks of every tenant in turn into the limited queue: all succeed, each runs `seconds`."""
    return [TaskPlan(namespace=layout.namespaces[i % len(layout.namespaces)], name=f"b-{i:07d}",
                     app=layout.app_of(i % len(layout.namespaces)), task=SUCCEED, queue=layout.limited,
                     seconds=seconds, acks_late=False, phase="burst") for i in range(n)]


def flood_plan(layout: Layout, n: int, queue: str = "default", seconds: float = 1.0) -> list[TaskPlan]:
    """`n` tasks of the flooding namespace into `queue` (a full name): all succeed, each runs `seconds`."""
    return [TaskPlan(namespace=layout.flood_namespace, name=f"f-{i:07d}", app=layout.flood_app, task=SUCCEED,
                     queue=queue, seconds=seconds, acks_late=False, phase="flood") for i in range(n)]


@dataclass
class Sent:
    """What became of one planned task: when it was due, sent, and created (or why not)."""

    namespace: str
    name: str
    app: str
    task: str
    queue: str
    acks_late: bool
    phase: str
    due: float  # monotonic
    created: float | None = None  # monotonic, when the API answered the create
    uid: str = ""
    tries: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def send(api: Api, plans: list[TaskPlan], rate: float, stop: asyncio.Event | None = None,
               concurrency: int = 64) -> list[Sent]:
    """Create every planned task at `rate` a second from now (on a fixed timetable: a create held
    up by an outage is sent late, not skipped). A create is retried until the API answers it;
    "already exists" counts as created (the same body, sent again after a lost answer)."""
    start = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    out: list[Sent] = []

    async def one(plan: TaskPlan, due: float) -> None:
        sent = Sent(plan.namespace, plan.name, plan.app, plan.task, plan.queue, plan.acks_late, plan.phase, due)
        out.append(sent)
        async with gate:
            await _create(api, plan, sent)

    tasks: list[asyncio.Task[None]] = []
    for i, plan in enumerate(plans):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            try:
                if stop is not None:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    break
                await asyncio.sleep(delay)
            except asyncio.TimeoutError:
                pass
        tasks.append(asyncio.create_task(one(plan, due)))
    await asyncio.gather(*tasks)
    return out


async def flood(api: Api, plans: list[TaskPlan], concurrency: int = 32) -> list[Sent]:
    """Create every planned task as fast as the API server takes them: `concurrency` loops, each
    sending its next create as soon as the one before is answered (a 429 or an error is tried
    again after a pause, as `send` does). A task's `due` is when its loop took it."""
    out: list[Sent] = []
    todo = iter(plans)

    async def loop() -> None:
        for plan in todo:
            sent = Sent(plan.namespace, plan.name, plan.app, plan.task, plan.queue, plan.acks_late, plan.phase,
                        time.monotonic())
            out.append(sent)
            await _create(api, plan, sent)

    await asyncio.gather(*(loop() for _ in range(max(1, concurrency))))
    return out


async def _create(api: Api, plan: TaskPlan, sent: Sent) -> None:
    """Create one task, retried until the API answers (at most ten minutes); "already exists"
    counts as created."""
    path = f"/apis/limetask.io/v1alpha1/namespaces/{plan.namespace}/limetasks"
    body = plan.body()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        sent.tries += 1
        try:
            created = await api.request("POST", path, body, timeout=30)
            sent.uid = created["metadata"]["uid"]
            sent.created = time.monotonic()
            return
        except ApiError as exc:
            if exc.status == 409:
                existing = await _get(api, f"{path}/{plan.name}")
                sent.uid = (existing or {}).get("metadata", {}).get("uid", "")
                sent.created = time.monotonic()
                return
            if exc.status < 500 and exc.status != 429:
                sent.error = str(exc)
                return
            sent.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the API server away (a fault): try again
            sent.error = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.5)


async def _get(api: Api, path: str) -> dict[str, Any] | None:
    for _ in range(60):
        try:
            return dict(await api.request("GET", path))
        except ApiError as exc:
            if exc.status == 404:
                return None
        except Exception:  # noqa: BLE001 - away for a moment
            pass
        await asyncio.sleep(1)
    return None


def sent_record(sent: Sent) -> dict[str, Any]:
    return asdict(sent)
