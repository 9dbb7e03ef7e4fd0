"""kopf wiring: thin handlers that feed the reconciler's caches and queue."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import kopf

from lime_task.resource import GROUP, PLURAL, VERSION

from .kube import Kube
from .reconciler import Reconciler
from .settings import OperatorSettings

LOG = logging.getLogger("limetask.operator")
STATE: dict[str, Any] = {}


class NoDiffBase(kopf.DiffBaseStorage):
    """Nothing to compare and nothing to store: the operator has only event and index handlers."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere LIMETASK_KUBECONFIG, KUBECONFIG or ~/.kube/config."""
    if os.environ.get("LIMETASK_KUBECONFIG"):
        os.environ["KUBECONFIG"] = os.environ["LIMETASK_KUBECONFIG"]
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        kube = STATE.get("kube")
        if kube is None:
            STATE["kube"] = Kube(info)
        elif kube.info != info:
            kube.use(info)  # new credentials (a rotated token): every user of it sees them
    return info


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    ours: OperatorSettings = STATE.setdefault("settings", OperatorSettings.from_env())
    # Events of one object within this window collapse into one; status is derived from the
    # current objects, so a short window only buys latency (kopf's default is 0.1 s).
    settings.batching.batch_window = ours.batch_window
    # Watches that die silently are a known kopf trap: bound every watch request.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    # Every INFO line would become a Kubernetes Event, an API write: post warnings only.
    settings.posting.level = logging.WARNING
    # No handler here detects changes, so kopf need not deep-copy every object it sees to
    # compare it with the last one (that copying was the largest CPU cost under load).
    settings.persistence.diffbase_storage = NoDiffBase()
    if ours.metrics_port:
        from . import metrics

        def tasks() -> dict[Any, Any]:
            rec = STATE.get("reconciler")
            return rec.caches.tasks if rec is not None else {}

        def depth() -> int:
            rec = STATE.get("reconciler")
            return rec.queue.qsize() if rec is not None else 0

        metrics.serve(ours.metrics_port, tasks, depth)
        LOG.info("metrics on :%d/metrics", ours.metrics_port)
    LOG.info("limetask operator: runner image %s, %d workers, batch window %.3fs", ours.runner_image,
             ours.workers, ours.batch_window)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def task_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _ensure_reconciler().task_event(event.get("type"), dict(body))


def _force_exit() -> None:
    LOG.warning("the operator did not stop within 15 s of the signal; exiting now")
    logging.shutdown()
    os._exit(0)


def _ensure_reconciler() -> Reconciler:
    rec = STATE.get("reconciler")
    if rec is None:
        settings = STATE.setdefault("settings", OperatorSettings.from_env())
        rec = Reconciler(STATE["kube"], settings)
        rec.start_child_watches(STATE.get("namespaces"))  # Jobs and Pods: see watches.py
        rec.start()
        STATE["reconciler"] = rec
    return rec


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    # A stop must not hang on a stuck connection: whatever is not done in 15 s is cut short.
    # Nothing is lost by that: all state lives in the LimeTasks.
    watchdog = threading.Timer(15, _force_exit)
    watchdog.daemon = True
    watchdog.start()
    rec = STATE.pop("reconciler", None)
    if rec is not None:
        try:
            await asyncio.wait_for(rec.stop(), timeout=10)
        except asyncio.TimeoutError:
            LOG.warning("reconcile workers did not stop within 10 s; leaving them")
    kube = STATE.pop("kube", None)
    if kube is not None:
        await kube.close()
