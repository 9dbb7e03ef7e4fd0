"""kopf wiring: login, settings, metrics, and starting and stopping the reconciler.

kopf watches no resource here: the reconciler's own watches do (see watches.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import kopf

from .kube import Kube
from .reconciler import Reconciler
from .settings import OperatorSettings

LOG = logging.getLogger("limetask.operator")
STATE: dict[str, Any] = {}


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
    # kopf watches nothing here (see watches.py: ours have bounded timeouts); its own API calls
    # (the liveness probe's, posting) get bounded timeouts too.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    # Every INFO line would become a Kubernetes Event, an API write: post warnings only.
    settings.posting.level = logging.WARNING
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
    LOG.info("limetask operator: runner image %s, %d workers", ours.runner_image, ours.workers)
    # The reconciler starts once kopf has logged in (it reuses those credentials).
    asyncio.get_running_loop().create_task(_start_after_login(ours), name="start-reconciler")


async def _start_after_login(settings: OperatorSettings) -> None:
    while "kube" not in STATE:
        await asyncio.sleep(0.05)
    rec = Reconciler(STATE["kube"], settings)
    rec.start_watches(STATE.get("namespaces"))  # LimeTasks, Jobs and Pods: see watches.py
    rec.start()
    STATE["reconciler"] = rec


def _force_exit() -> None:
    LOG.warning("the operator did not stop within 15 s of the signal; exiting now")
    logging.shutdown()
    os._exit(0)


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
