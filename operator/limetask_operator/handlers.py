"""kopf wiring: login, settings, metrics, the health probe, and starting and stopping the reconciler.

kopf watches no resource here: the reconciler's own watches do (see watches.py). What the
handlers share travels in kopf's memo (an `OperatorMemo`), made by main.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from lime_task.client import SA_NAMESPACE_FILE

from . import metrics
from .features import detect
from .kube import Kube
from .leader import LeaderElector
from .reconciler import Reconciler
from .settings import OperatorSettings
from .watches import scopes

# How long an unreachable API server is tolerated before /healthz fails.
API_GRACE_SECONDS = 60.0

LOG = logging.getLogger("limetask.operator")


@dataclass
class OperatorMemo:
    """What the handlers of one operator process share."""

    settings: OperatorSettings
    namespaces: list[str] | None  # None: every namespace
    kube: Kube | None = None
    reconciler: Reconciler | None = None
    logged_in: asyncio.Event | None = None
    elector: LeaderElector | None = None
    election: asyncio.Task[None] | None = None
    lag_watch: asyncio.Task[None] | None = None  # samples the event loop's lag (metrics)
    starting: asyncio.Task[None] | None = None  # waits for the login, then leads or campaigns


def _memo(memo: Any) -> OperatorMemo:
    if not isinstance(memo, OperatorMemo):
        raise kopf.PermanentError("the operator was started without its memo: use python -m limetask_operator")
    return memo


@kopf.on.login()
def login(memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere LIMETASK_KUBECONFIG, KUBECONFIG or ~/.kube/config."""
    shared = _memo(memo)
    if os.environ.get("LIMETASK_KUBECONFIG"):
        os.environ["KUBECONFIG"] = os.environ["LIMETASK_KUBECONFIG"]
    info = _login(**kwargs)
    if info is not None:
        if shared.kube is None:
            shared.kube = Kube(info, login=lambda: _login(**kwargs))
        elif shared.kube.info != info:
            shared.kube.use(info)  # new credentials (a rotated token): every user of it sees them
        if shared.logged_in is not None:
            shared.logged_in.set()
    return info


def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is not None:
        return dataclasses.replace(info, server=in_cluster_server(os.environ, info.server))
    info = kopf.login_with_kubeconfig(**kwargs)
    return info


def in_cluster_server(env: Mapping[str, str], default: str) -> str:
    """The API server as a pod finds it, as client-go's in-cluster config does: from the
    `kubernetes` Service's variables, which the kubelet sets in every container. kopf's own
    login names `kubernetes.default.svc`, which needs cluster DNS that not every cluster (nor
    every pod's DNS policy) has."""
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        return default
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    shared = _memo(memo)
    ours = shared.settings
    # kopf watches nothing here (see watches.py: ours have bounded timeouts); its own API calls
    # (the liveness probe's, posting) get bounded timeouts too.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    # Every INFO line would become a Kubernetes Event, an API write: post warnings only.
    settings.posting.level = logging.WARNING
    shared.logged_in = asyncio.Event()
    if shared.kube is not None:
        shared.logged_in.set()
    if ours.metrics_port:
        def tasks() -> dict[Any, Any]:
            return shared.reconciler.caches.tasks if shared.reconciler is not None else {}

        def depth() -> int:
            return len(shared.reconciler.work) if shared.reconciler is not None else 0

        metrics.serve(ours.metrics_port, tasks, depth)
        shared.lag_watch = asyncio.get_running_loop().create_task(metrics.watch_loop_lag(), name="loop-lag")
        LOG.info("metrics on :%d/metrics", ours.metrics_port)
    LOG.info("limetask operator: runner image %s, %d workers", ours.runner_image, ours.workers)
    # The reconciler starts once kopf has logged in (it reuses those credentials).
    # A stop that comes before it is done cancels it (cleanup).
    shared.starting = asyncio.get_running_loop().create_task(_start_after_login(shared), name="start-reconciler")


async def _start_after_login(shared: OperatorMemo) -> None:
    assert shared.logged_in is not None
    await shared.logged_in.wait()
    kube = shared.kube
    assert kube is not None

    async def lead() -> None:
        # With leader election this runs while the lease is renewed (leader.py), and is cancelled
        # if it is lost meanwhile. Asked once per leadership: an upgraded API server is noticed
        # at the next one. In a namespace it watches by name (where it may create Jobs), else
        # in "default".
        features = await detect(kube, next((ns for ns, _ in scopes(shared.namespaces) if ns), "default"))
        rec = Reconciler(kube, shared.settings, features)
        rec.schedules_installed = await schedules_installed(kube)
        rec.admission.enabled = await queues_installed(kube)
        if shared.elector is not None:
            # The previous leader's last writes have landed (or were dropped) before its lease
            # ended; a margin more, and its Jobs are in the listings that count what runs.
            rec.admission.hold(shared.elector.timing.takeover_margin)
        rec.start_watches(shared.namespaces)  # LimeTasks, Jobs, Pods, schedules, queues, Namespaces: watches.py
        rec.start()
        shared.reconciler = rec
        metrics.leading()

    async def step_down() -> None:
        metrics.stepped_down()
        rec, shared.reconciler = shared.reconciler, None
        if rec is not None:
            await rec.stop()

    if not shared.settings.leader_election:
        await lead()
        return
    shared.elector = LeaderElector(kube, shared.settings.leader_election_namespace or _own_namespace(),
                                   shared.settings.leader_election_lease, shared.settings.leader_election_identity)
    kube.fence = shared.elector.write_budget  # no write once the lease may be lost (kube.py)
    LOG.info("leader election: %s campaigns for Lease %s/%s", shared.elector.identity, shared.elector.namespace,
             shared.elector.name)
    shared.election = asyncio.get_running_loop().create_task(shared.elector.run(lead, step_down), name="election")


async def served(kube: Kube, plural: str, kind: str, without: str) -> bool:
    """Whether the API server serves this kind of the limetask.io group. A cluster with an older
    set of CRDs runs tasks as before, without that kind, and the log says so (`without`)."""
    from lime_task.resource import GROUP, VERSION

    try:
        found = await kube.get(f"/apis/{GROUP}/{VERSION}")
    except Exception as exc:  # noqa: BLE001 - assume it is: the watch then says what is wrong
        LOG.warning("cannot tell whether %ss are installed: %s", kind, exc)
        return True
    names = {r.get("name") for r in (found or {}).get("resources") or []}
    if plural not in names:
        LOG.warning("the %s CRD (%s.%s) is not installed: %s; install crds/ or the chart to use them",
                    kind, plural, GROUP, without)
        return False
    return True


async def schedules_installed(kube: Kube) -> bool:
    from lime_task.resource import SCHEDULE_KIND, SCHEDULE_PLURAL

    return await served(kube, SCHEDULE_PLURAL, SCHEDULE_KIND, "schedules are off")


async def queues_installed(kube: Kube) -> bool:
    """Without the CRD, queues have no limits: every task starts at once, at the pace of the Job
    creation rate."""
    from lime_task.resource import QUEUE_KIND, QUEUE_PLURAL

    return await served(kube, QUEUE_PLURAL, QUEUE_KIND, "queues have no limits")


def _own_namespace() -> str:
    try:
        return SA_NAMESPACE_FILE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return os.environ.get("POD_NAMESPACE") or "default"


@kopf.on.probe(id="watches", errors=kopf.ErrorsMode.PERMANENT)
async def watches_probe(memo: Any, **_: Any) -> str:
    """The liveness and readiness probe (/healthz) fails while a watch keeps failing.

    An operator whose watches are dead processes nothing while looking alive; failing the
    probe makes that visible, and lets Kubernetes restart it. A namespace it may not list (its
    Role gone) is no such case: a restart would not help, and the other namespaces work. The
    probe then passes and names it as degraded (as the log and limetask_namespace_unlisted do).
    """
    shared = _memo(memo)
    rec = shared.reconciler
    if rec is None:
        if shared.elector is None:
            return "starting"
        problem = shared.elector.problem(asyncio.get_running_loop().time(), API_GRACE_SECONDS)
        if problem:
            raise kopf.PermanentError(problem)
        return "waiting for the lease"
    problems = rec.health()
    if problems:
        raise kopf.PermanentError("; ".join(problems))
    degraded = rec.degraded()
    if degraded:
        return f"degraded: {'; '.join(degraded)}"
    return f"{len(rec.watches)} watches ok"


def _force_exit() -> None:
    LOG.warning("the operator did not stop within 15 s of the signal; exiting now")
    logging.shutdown()
    os._exit(0)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    # A stop must not hang on a stuck connection: whatever is not done in 15 s is cut short.
    # Nothing is lost by that: all state lives in the LimeTasks.
    watchdog = threading.Timer(15, _force_exit)
    watchdog.daemon = True
    watchdog.start()
    shared = _memo(memo)
    for task in (shared.starting, shared.election, shared.lag_watch):
        if task is not None:
            task.cancel()
    rec, shared.reconciler = shared.reconciler, None
    if rec is not None:
        try:
            await asyncio.wait_for(rec.stop(), timeout=10)
        except asyncio.TimeoutError:
            LOG.warning("reconcile workers did not stop within 10 s; leaving them")
    if shared.elector is not None:
        # Only once this replica has stopped writing: the next one takes over at once.
        try:
            await asyncio.wait_for(shared.elector.release(), timeout=3)
        except asyncio.TimeoutError:
            LOG.warning("could not release the lease within 3 s; the next replica waits for it to expire")
    kube, shared.kube = shared.kube, None
    if kube is not None:
        await kube.close()
