"""`python -m bench.admission`: what the queues cost the operator's event loop (no cluster needed).

    python -m bench.admission [--waiting 20000] [--pairs 300] [--namespaces 30] [--seconds 15]

An `Admission` (operator/limetask_operator/admission/) over caches holding WAITING tasks, spread
over PAIRS (namespace, application) pairs of one queue with `maxRunning: 50`, all 50 slots taken.
Then, in one event loop:
- the CPU of one pass of positions (`refresh_positions`) and of one pass of admission
  (`dispatch`) with a slot free;
- the queues' own loop (`Admission.start`) for SECONDS, while a running task ends every 0.2 s
  (its slot goes to the next in line, whose Job then appears), and a sampler measures the loop's
  lag: how late a 20 ms sleep wakes up. Its maximum is the longest the loop was held (no watch
  read, no task reconciled, no lease renewed meanwhile).
The Kubernetes API is a stub that answers at once; nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from limetask_operator.admission import Admission
from limetask_operator.caches import Caches
from limetask_operator.model import JobView

QUEUE = "bg"
MAX_RUNNING = 50
SAMPLE = 0.02  # the lag sampler's sleep
START = time.time() - 3600  # the tasks were made an hour ago, a hundred a second


class StubKube:
    async def request(self, *_: Any, **__: Any) -> Any:
        return None


def task_body(i: int, pairs: int, namespaces: int) -> dict[str, Any]:
    ns, app = f"ns{i % namespaces}", f"app{i % pairs}"
    return {"metadata": {"name": f"t{i}", "namespace": ns, "uid": f"u{i}", "resourceVersion": "1",
                         "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + i * 0.01))},
            "spec": {"task": "a.b", "app": app, "queue": QUEUE, "priority": i % 3}, "status": {}}


async def measure(waiting: int, pairs: int, namespaces: int, seconds: float) -> dict[str, Any]:
    caches = Caches()
    granted: list[tuple[str, str]] = []
    adm = Admission(StubKube(), caches, granted.append, lambda k, d: granted.append(k),  # type: ignore[arg-type]
                    rate=0, refresh_seconds=30.0)
    adm.queue_event("ADDED", {"metadata": {"name": QUEUE, "resourceVersion": "1"}, "spec": {"maxRunning": MAX_RUNNING}})
    running: list[tuple[str, str]] = []
    for i in range(waiting + MAX_RUNNING):
        task = caches.put_task(task_body(i, pairs, namespaces), listed=True)
        adm.admit(task, 1)
        key = (task.namespace, task.name)
        if i < MAX_RUNNING:
            caches.jobs.setdefault(key, {})[f"t{i}-1"] = JobView(f"t{i}-1", f"t{i}", 1, task_uid=task.uid)
            running.append(key)
    adm.count_running()  # the grants are seen as Jobs

    async def timed(step: Any) -> float:
        cpu = time.process_time()
        result = step()
        if asyncio.iscoroutine(result):
            await result
        return time.process_time() - cpu

    positions_cpu = await timed(adm.refresh_positions)
    del caches.jobs[running.pop(0)]  # a slot is free
    dispatch_cpu = await timed(adm.dispatch)

    def appear() -> None:
        """Granted tasks get their Job (as the reconciler would make it; the others were asked to
        rewrite their positions)."""
        while granted:
            key = granted.pop()
            task = caches.tasks.get(key)
            if task is not None and key in adm.grants and key not in caches.jobs:
                caches.jobs.setdefault(key, {})[f"{key[1]}-1"] = JobView(f"{key[1]}-1", key[1], 1, task_uid=task.uid)
                running.append(key)

    lags: list[float] = []

    async def sample() -> None:
        loop = asyncio.get_running_loop()
        while True:
            at = loop.time()
            await asyncio.sleep(SAMPLE)
            lags.append(max(0.0, loop.time() - at - SAMPLE))

    async def churn() -> None:
        while True:
            await asyncio.sleep(0.2)
            appear()
            if running:
                del caches.jobs[running.pop(0)]
                adm.poke()

    adm.start()
    background = [asyncio.create_task(sample()), asyncio.create_task(churn())]
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    for t in background:
        t.cancel()
    await adm.stop()
    lags.sort()
    return {
        "waiting": waiting, "pairs": pairs, "namespaces": namespaces,
        "positions_pass_cpu_s": round(positions_cpu, 4), "dispatch_pass_cpu_s": round(dispatch_cpu, 4),
        "loop_seconds": round(wall, 1), "loop_cpu_share": round(cpu / wall, 3),
        "lag_max_s": round(lags[-1], 4) if lags else None,
        "lag_p99_s": round(lags[int(0.99 * (len(lags) - 1))], 4) if lags else None,
        "lag_median_s": round(statistics.median(lags), 4) if lags else None,
        "lag_samples": len(lags), "still_waiting": len(adm.entries),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=20000)
    parser.add_argument("--pairs", type=int, default=300, help="(namespace, application) pairs")
    parser.add_argument("--namespaces", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the queues' loop runs")
    args = parser.parse_args(argv)
    out = asyncio.run(measure(args.waiting, args.pairs, args.namespaces, args.seconds))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
