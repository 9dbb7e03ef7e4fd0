"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

With two replicas, one leads (watches and reconciles) and the other waits, ready to take over
within a lease duration when the leader dies. kopf's peering is priority-based, not a lease,
so it is not used.

Expiry is judged by this process's own clock: a lease is expired when its record has not
changed for `lease_duration` seconds since this process last saw it change. Clocks of other
machines are never compared. A leader that cannot renew within `renew_deadline` steps down
(stops reconciling) before its lease can expire for the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .kube import ApiError, Kube

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
        # Since when (loop time) the lease could not be read at all, and why: for the health probe.
        self.failing_since: float | None = None
        self.last_error = ""

    def problem(self, now: float, grace: float) -> str | None:
        """Why this replica is unhealthy, or None: it has not reached the lease for over `grace` s."""
        if self.failing_since is not None and now - self.failing_since > grace:
            return (f"the Lease {self.namespace}/{self.name} has been out of reach for "
                    f"{now - self.failing_since:.0f}s: {self.last_error}")
        return None

    async def run(self, lead: Callable[[], Awaitable[None]], step_down: Callable[[], Awaitable[None]]) -> None:
        """Campaign forever: lead while the lease is ours, step down when it is not."""
        loop = asyncio.get_running_loop()
        while True:
            await self._acquire()
            LOG.info("%s leads (Lease %s/%s)", self.identity, self.namespace, self.name)
            self.leading.set()
            await lead()
            last_renewal = loop.time()
            while True:
                await asyncio.sleep(self.timing.retry_period)
                if await self._try_acquire_or_renew():
                    last_renewal = loop.time()
                elif loop.time() - last_renewal > self.timing.renew_deadline:
                    break
            LOG.warning("%s lost the lease %s/%s: stepping down", self.identity, self.namespace, self.name)
            self.leading.clear()
            await step_down()

    async def release(self) -> None:
        """Give the lease up (on shutdown), so that another replica takes over at once."""
        if not self.leading.is_set():
            return
        try:
            lease = await self.kube.get(lease_path(self.namespace, self.name))
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                             "renewTime": _micro(dt.datetime.now(dt.timezone.utc))}
            await self.kube.request("PUT", lease_path(self.namespace, self.name), lease)
            LOG.info("%s released the lease %s/%s", self.identity, self.namespace, self.name)
        except ApiError as exc:
            LOG.warning("releasing the lease failed: %s", exc)
        finally:
            self.leading.clear()

    async def _acquire(self) -> None:
        while not await self._try_acquire_or_renew():
            await asyncio.sleep(self.timing.retry_period)

    async def _try_acquire_or_renew(self) -> bool:
        loop = asyncio.get_running_loop()
        now = dt.datetime.now(dt.timezone.utc)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.timing.lease_duration),
                "acquireTime": _micro(now), "renewTime": _micro(now), "leaseTransitions": 0}
        try:
            try:
                lease = await self.kube.get(lease_path(self.namespace, self.name))
            except ApiError as exc:
                if exc.status == 0 or exc.status >= 500 or exc.status in (401, 403):
                    self.failing_since = self.failing_since if self.failing_since is not None else loop.time()
                    self.last_error = str(exc)
                raise
            self.failing_since = None
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
                return await self.kube.create(lease_path(self.namespace), body) is not None
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
            await self.kube.request("PUT", lease_path(self.namespace, self.name), lease)
            self._observed = ((self.identity, spec["renewTime"], spec["leaseDurationSeconds"]), loop.time())
            return True
        except ApiError as exc:
            if exc.status not in (409, 0):
                LOG.warning("leader election: %s", exc)
            return False
