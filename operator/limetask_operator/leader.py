"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

With two replicas, one leads (watches and reconciles) and the other waits, ready to take over
within a lease duration when the leader dies. kopf's peering is priority-based, not a lease,
so it is not used.

Expiry is judged by this process's own clock: a lease is expired when its record has not
changed for `lease_duration` seconds since this process last saw it change. Clocks of other
machines are never compared, only the pace of their time.

Why two leaders never act at once, and the limits of the queues hold across a change:
- Renewals run in a task of their own from the moment the lease is taken, before the leader
  does anything else; each renewal is bounded by the time left to the renew deadline, through
  a session of its own, without retries (Kube.lease_request).
- A leader's deadlines count from the moment it *started* its last successful renewal, which is
  before the record changed, so before any other replica saw the change: its renew deadline
  (`renew_deadline` later) and its lease's end (`lease_duration` later) come no later than the
  others would reckon them.
- Every write of the leader goes through one fence (`write_budget`, kube.py): none is sent
  after the renew deadline, and each one sent carries a timeout, for the client and for the API
  server, that ends with the lease. The leader then steps down: every worker stops.
- So once another replica takes the lease over (`lease_duration` after it last saw the record
  change), no write of the old leader is still in flight: a Job it was about to make for a slot
  it granted is either made, and listed by the new leader, or never made. The new leader gives
  no slot in a limited queue before its own listings are done and `takeover_margin` has passed
  (queues.Admission.hold), to cover scheduling and the pace of clocks. The old leader's grants
  live on only as Jobs in the cluster, and are counted there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .kube import Kube, KubeError

LOG = logging.getLogger("limetask.operator.leader")


def lease_path(namespace: str, name: str = "") -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases" + (f"/{name}" if name else "")


def _micro(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ElectionTiming:
    lease_duration: float = 15.0  # how long others wait after the last renewal before taking over
    renew_deadline: float = 10.0  # how long the leader keeps trying to renew before stepping down
    retry_period: float = 2.0  # how often candidates and the leader look at the lease
    takeover_margin: float = 2.0  # a new leader gives no slot in a limited queue before this


class LeaderElector:
    """Runs `lead()` while this process holds the lease; cancels it when leadership is lost."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str | None = None,
                 timing: ElectionTiming | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        # The pod's name: a container restarted in the same pod takes its lease back at once; a
        # new pod waits until the old one released it, or it expired.
        self.identity = identity or socket.gethostname() or f"limetask-operator-{uuid.uuid4().hex[:6]}"
        self.timing = timing or ElectionTiming()
        self.leading = asyncio.Event()
        self._observed: tuple[Any, float] | None = None  # (the lease's record, when it last changed here)
        # When (loop time) the last successful acquisition or renewal started; None: not leading.
        self._renewed_at: float | None = None
        # Since when (loop time) the lease could not be read at all, and why: for the health probe.
        self.failing_since: float | None = None
        self.last_error = ""

    def problem(self, now: float, grace: float) -> str | None:
        """Why this replica is unhealthy, or None: it has not reached the lease for over `grace` s."""
        if self.failing_since is not None and now - self.failing_since > grace:
            return (f"the Lease {self.namespace}/{self.name} has been out of reach for "
                    f"{now - self.failing_since:.0f}s: {self.last_error}")
        return None

    def write_budget(self) -> float:
        """How long a write sent now may take: the seconds until this replica's lease can expire,
        or 0 once its renew deadline has passed (or it does not lead): then it sends none."""
        if self._renewed_at is None:
            return 0.0
        now = asyncio.get_running_loop().time()
        if now >= self._renewed_at + self.timing.renew_deadline:
            return 0.0
        return self._renewed_at + self.timing.lease_duration - now

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]],
                  step_down: Callable[[], Awaitable[None]]) -> None:
        """Campaign forever: lead while the lease is ours, step down when it is not."""
        while True:
            await self._acquire()
            LOG.info("%s leads (Lease %s/%s)", self.identity, self.namespace, self.name)
            self.leading.set()
            renewing = asyncio.create_task(self._keep_renewing(), name="lease-renewal")
            # lead()'s own I/O (feature detection, discovery) runs while the lease is renewed.
            leading: asyncio.Task[None] = asyncio.create_task(lead(), name="lead")
            try:
                await asyncio.wait({renewing, leading}, return_when=asyncio.FIRST_COMPLETED)
                if leading.done() and not leading.cancelled() and leading.exception() is not None:
                    LOG.error("%s could not start leading: %r; stepping down", self.identity, leading.exception())
                    renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
            finally:
                # Also when the campaign itself is cancelled (shutdown: `release` follows).
                for task in (renewing, leading):
                    task.cancel()
                await asyncio.gather(renewing, leading, return_exceptions=True)
            LOG.warning("%s lost the lease %s/%s: stepping down", self.identity, self.namespace, self.name)
            self._renewed_at = None  # no write is sent from now on (Kube.fence)
            self.leading.clear()
            try:
                await asyncio.wait_for(step_down(), self.timing.lease_duration)
            except asyncio.TimeoutError:
                LOG.warning("stepping down took over %.0fs; its writes were refused meanwhile",
                            self.timing.lease_duration)

    async def _keep_renewing(self) -> None:
        """Renew every retry_period, each try bounded by the renew deadline; return when it passed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.timing.retry_period)
            assert self._renewed_at is not None
            deadline = self._renewed_at + self.timing.renew_deadline
            if loop.time() >= deadline:
                return
            started = loop.time()
            if await self._attempt(deadline):
                self._renewed_at = started
            elif loop.time() >= self._renewed_at + self.timing.renew_deadline:
                return

    async def _attempt(self, deadline: float) -> bool:
        """One try to take or renew the lease, given up at `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(self._try_acquire_or_renew(deadline), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            self.failing_since = self.failing_since if self.failing_since is not None else loop.time()
            self.last_error = f"no answer within {self.timing.renew_deadline:.0f}s"
            return False

    async def release(self) -> None:
        """Give the lease up (on shutdown), so that another replica takes over at once."""
        if not self.leading.is_set():
            return
        path = lease_path(self.namespace, self.name)
        try:
            lease = await self.kube.lease_request("GET", path, timeout=2.0)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                             "renewTime": _micro(dt.datetime.now(dt.timezone.utc))}
            await self.kube.lease_request("PUT", path, lease, timeout=2.0)
            LOG.info("%s released the lease %s/%s", self.identity, self.namespace, self.name)
        except KubeError as exc:
            LOG.warning("releasing the lease failed: %s", exc)
        finally:
            self._renewed_at = None
            self.leading.clear()

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if await self._attempt(started + self.timing.renew_deadline):
                self._renewed_at = started
                return
            await asyncio.sleep(self.timing.retry_period)

    async def _try_acquire_or_renew(self, deadline: float) -> bool:
        loop = asyncio.get_running_loop()

        def left() -> float:
            return max(0.01, deadline - loop.time())

        now = dt.datetime.now(dt.timezone.utc)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.timing.lease_duration),
                "acquireTime": _micro(now), "renewTime": _micro(now), "leaseTransitions": 0}
        path = lease_path(self.namespace, self.name)
        try:
            try:
                lease = await self.kube.lease_request("GET", path, timeout=left())
            except KubeError as exc:
                if exc.status == 404:
                    lease = None
                else:
                    if exc.status == 0 or exc.status >= 500 or exc.status in (401, 403):
                        self.failing_since = self.failing_since if self.failing_since is not None else loop.time()
                        self.last_error = str(exc)
                    raise
            self.failing_since = None
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
                await self.kube.lease_request("POST", lease_path(self.namespace), body, timeout=left())
                return True
            current = dict(lease.get("spec") or {})
            record = (current.get("holderIdentity"), current.get("renewTime"), current.get("leaseDurationSeconds"))
            if self._observed is None or self._observed[0] != record:
                self._observed = (record, loop.time())
            holder = current.get("holderIdentity") or ""
            if holder and holder != self.identity:
                duration = float(current.get("leaseDurationSeconds") or self.timing.lease_duration)
                if loop.time() - self._observed[1] < duration:
                    return False  # another replica holds it, and renewed it lately
            if holder == self.identity:
                spec["acquireTime"] = current.get("acquireTime") or spec["acquireTime"]
                spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
            else:
                spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
            lease["spec"] = spec
            # The resourceVersion makes this a compare-and-swap: of two candidates, one wins.
            await self.kube.lease_request("PUT", path, lease, timeout=left())
            self._observed = ((self.identity, spec["renewTime"], spec["leaseDurationSeconds"]), loop.time())
            return True
        except KubeError as exc:
            if exc.status not in (409, 0):
                LOG.warning("leader election: %s", exc)
            return False
