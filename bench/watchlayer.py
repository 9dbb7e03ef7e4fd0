"""One watching process for `python -m bench --only watchlayer` (started by it; not a module to import).

    python bench/watchlayer.py MODE NAMESPACE N M TOUCH [LIVENESS_PORT]

MODE is what watches LimeTasks, and Jobs and Pods labelled `limetask.io/task-id`, in NAMESPACE:
  ours        the operator's ResourceWatch objects (watches.py) with no-op callbacks, nothing else;
  ours-kopf   the same, run as the operator runs them: inside kopf.operator (login, start-up,
              /healthz with a probe handler like the operator's), kopf watching nothing itself;
  kopf        kopf's own watching: @kopf.on.event no-op handlers for all three;
  kopf-index  the same plus an @kopf.index on LimeTasks.

The protocol with the bench, one JSON line each on stdout: {"ready": t} once imported; then it
waits for a line on stdin before it logs in and starts watching; {"listed": t} once the N
LimeTasks have been listed (ours: every watch's on_listed; kopf: the handler has seen all N);
{"modified": t} once M MODIFIED events of LimeTasks have come with the annotation
bench.limetask.io/touch=TOUCH (what anything else changes is not counted). t is time.monotonic(), the
system-wide CLOCK_MONOTONIC, so the bench can compare it with its own clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

MODE, NAMESPACE, N, M, TOUCH = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
PROBE_PORT = int(sys.argv[6]) if len(sys.argv) > 6 else 0
LABEL = "limetask.io/task-id"
TOUCH_KEY = "bench.limetask.io/touch"

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
for noisy in ("kopf.objects", "kopf.activities.startup", "aiohttp.access"):  # as the operator's main.py
    logging.getLogger(noisy).setLevel(logging.WARNING)

import kopf  # noqa: E402
from limetask_operator.kube import Kube  # noqa: E402
from limetask_operator.watches import ResourceWatch  # noqa: E402


def report(what: str) -> None:
    print(json.dumps({what: time.monotonic()}), flush=True)


class Counts:
    listed = 0
    modified = 0


def task_seen(kind: str | None, annotations: Any) -> None:
    """Counts what the bench waits for: each LimeTask listed once, then M modifications."""
    if kind in (None, "LISTED"):
        Counts.listed += 1
        if Counts.listed == N and MODE.startswith("kopf"):
            report("listed")
    elif kind == "MODIFIED" and (annotations or {}).get(TOUCH_KEY) == TOUCH:
        Counts.modified += 1
        if Counts.modified == M:
            report("modified")


# -- ours -------------------------------------------------------------------------------------
def start_watches(kube: Kube) -> list[ResourceWatch]:
    pending = {"limetasks", "jobs", "pods"}

    def on_listed(plural: str) -> Any:
        def listed(seen: set[tuple[str, str]], namespace: str | None) -> None:
            pending.discard(plural)
            if not pending:
                report("listed")
        return listed

    def on_task(kind: str, obj: dict[str, Any]) -> None:
        task_seen(kind, (obj.get("metadata") or {}).get("annotations"))

    def nothing(kind: str, obj: dict[str, Any]) -> None:
        pass

    watches = [
        ResourceWatch(kube, "/apis/limetask.io/v1alpha1", "limetasks", "", NAMESPACE, None, on_task,
                      on_listed("limetasks")),
        ResourceWatch(kube, "/apis/batch/v1", "jobs", LABEL, NAMESPACE, None, nothing, on_listed("jobs")),
        ResourceWatch(kube, "/api/v1", "pods", LABEL, NAMESPACE, None, nothing, on_listed("pods")),
    ]
    for w in watches:
        asyncio.get_running_loop().create_task(w.run(), name=f"watch-{w.plural}")
    return watches


async def ours() -> None:
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    kube = Kube(info)
    start_watches(kube)
    await asyncio.Event().wait()


# -- kopf -------------------------------------------------------------------------------------
SHARED: dict[str, Any] = {"watches": []}  # ours-kopf: the Kube once logged in, the watches


class NoDiffBase(kopf.DiffBaseStorage):
    """Remembers nothing, writes nothing: event handlers need no diff base."""

    def fetch(self, **_: Any) -> None:
        return None

    def store(self, **_: Any) -> None:
        pass


class NoProgress(kopf.ProgressStorage):
    """Remembers nothing, writes nothing: event handlers keep no progress."""

    def fetch(self, **_: Any) -> None:
        return None

    def store(self, **_: Any) -> None:
        pass

    def purge(self, **_: Any) -> None:
        pass

    def touch(self, **_: Any) -> None:
        pass

    def clear(self, *, essence: Any) -> Any:
        return essence


def kopf_registry() -> kopf.OperatorRegistry:
    # A plain registry: no fallback logins (kopf's smart one would log in via the kubernetes client).
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info: kopf.ConnectionInfo | None = kopf.login_with_kubeconfig(**kwargs)
        if info is not None and MODE == "ours-kopf" and "kube" not in SHARED:
            SHARED["kube"] = Kube(info)
            SHARED["logged_in"].set()
        return info

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.networking.request_timeout = 30  # as the operator's handlers.py
        settings.networking.connect_timeout = 5
        settings.posting.enabled = False
        settings.watching.server_timeout = 120  # as ResourceWatch's
        settings.watching.client_timeout = 150
        settings.watching.connect_timeout = 5
        settings.watching.chunk_size = 500  # as ResourceWatch's pages
        settings.watching.label_selectors["batch", "jobs"] = LABEL  # on the server, as ours
        settings.watching.label_selectors["", "pods"] = LABEL
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.persistence.progress_storage = NoProgress()
        if MODE == "ours-kopf":
            async def start() -> None:
                await SHARED["logged_in"].wait()
                SHARED["watches"] = start_watches(SHARED["kube"])
            asyncio.get_running_loop().create_task(start())

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if "kube" in SHARED:
            await SHARED["kube"].close()

    @kopf.on.probe(id="watches", registry=registry)
    async def probe(**_: Any) -> str:
        # Like the operator's: each watch says whether it has been failing (or unlisted) too long.
        now = asyncio.get_running_loop().time()
        problems = [p for w in SHARED["watches"] if (p := w.problem(now, 60.0)) is not None]
        if problems:
            raise kopf.PermanentError("; ".join(problems))
        return f"{len(SHARED['watches'])} watches ok"

    if MODE in ("kopf", "kopf-index"):
        @kopf.on.event("limetask.io", "v1alpha1", "limetasks", registry=registry)
        async def task_event(type: str | None, annotations: Any, **_: Any) -> None:  # noqa: A002 - kopf's name
            task_seen(type, annotations)

        @kopf.on.event("batch", "v1", "jobs", labels={LABEL: kopf.PRESENT}, registry=registry)
        async def job_event(**_: Any) -> None:
            pass

        @kopf.on.event("", "v1", "pods", labels={LABEL: kopf.PRESENT}, registry=registry)
        async def pod_event(**_: Any) -> None:
            pass

    if MODE == "kopf-index":
        @kopf.index("limetask.io", "v1alpha1", "limetasks", registry=registry)
        async def by_name(namespace: str | None, name: str, spec: Any, **_: Any) -> Any:
            return {(namespace, name): spec.get("task")}

    return registry


async def with_kopf() -> None:
    SHARED["logged_in"] = asyncio.Event()
    await kopf.operator(
        registry=kopf_registry(), standalone=True, clusterwide=False, namespaces=[NAMESPACE],
        liveness_endpoint=f"http://127.0.0.1:{PROBE_PORT}/healthz" if PROBE_PORT else None,
    )


def main() -> None:
    os.environ.setdefault("KUBECONFIG", os.environ.get("LIMETASK_KUBECONFIG", ""))
    report("ready")
    sys.stdin.readline()
    try:
        asyncio.run(ours() if MODE == "ours" else with_kopf())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
