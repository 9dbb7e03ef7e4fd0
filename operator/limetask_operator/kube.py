"""A small async Kubernetes API client: one place, one policy for errors and for writes.

It reuses the credentials kopf logged in with, so the operator does not load the (large)
official client. Create tolerates 409 (already there), delete tolerates 404 (already gone);
everything else raises `KubeError`.

With leader election, every write goes through one fence (`Kube.fence`, the elector's
`write_budget`): none is sent once this replica's renew deadline has passed, and none that is
sent can outlive its lease, since its client timeout and its `timeout` parameter (which the API
server applies to the request) end when the lease would expire. The lease itself has a session
of its own, one attempt per request and short timeouts (`lease_request`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

from lime_task import safejson

from .metrics import API_ERRORS

LOG = logging.getLogger("limetask.operator.kube")


class KubeError(Exception):
    """An error answer of the Kubernetes API server (status 0: never sent)."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status
        self.message = message


# The former name, for code written against it (the HTTP endpoint's ApiError is another class).
ApiError = KubeError


class NotLeading(KubeError):
    """A write refused before it was sent: this replica does not hold the lease (any more)."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(0, "not sent: this replica does not hold the leader lease", method, path)


REQUEST_CONNECTIONS = 64
REQUEST_TIMEOUT = 30.0
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Kube:
    """API requests and watches each have a connection pool of their own: a watch holds its
    connection for minutes, and with three per namespace they would take a shared pool (60 of
    64 connections with 20 namespaces, all of them from 22), leaving requests, even the
    watches' own listings, waiting for ever."""

    def __init__(self, info: kopf.ConnectionInfo,
                 login: Callable[[], kopf.ConnectionInfo | None] | None = None) -> None:
        self.info = info
        self.server = info.server.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._lease_session: aiohttp.ClientSession | None = None
        # With leader election: the seconds a write sent now may take before this replica's
        # lease can expire, or <= 0 when it may send none (leader.LeaderElector.write_budget).
        self.fence: Callable[[], float] | None = None
        # Logs in again (reads the credentials afresh): a 401 means they were rotated or expired.
        self._login = login
        self._last_login = 0.0

    async def refresh_credentials(self) -> bool:
        """Log in again after a 401 (at most every 5 s); True when the credentials changed."""
        loop = asyncio.get_running_loop()
        if self._login is None or loop.time() - self._last_login < 5:
            return False
        self._last_login = loop.time()
        try:
            info = await asyncio.to_thread(self._login)
        except Exception as exc:  # noqa: BLE001 - logging in again is a best effort; the 401 stands
            LOG.warning("logging in again after a 401 failed: %s", exc)
            return False
        if info is None or info == self.info:
            return False
        LOG.info("the API answered 401: logged in again with fresh credentials")
        self.use(info)
        return True

    def use(self, info: kopf.ConnectionInfo) -> None:
        """New credentials: both sessions are made again with them. (A watch still reading from
        the old session is not woken by its closing: it resumes with them at its timeout.)"""
        self.info = info
        self.server = info.server.rstrip("/")
        stale = (self._session, self._watch_session, self._lease_session)
        self._session = self._watch_session = self._lease_session = None
        for old in stale:
            if old is not None and not old.closed:
                asyncio.get_event_loop().create_task(old.close())

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.info.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.info.ca_path or None)
        if self.info.ca_data:
            ctx.load_verify_locations(cadata=self.info.ca_data.decode() if isinstance(self.info.ca_data, bytes)
                                      else self.info.ca_data)
        if self.info.certificate_path and self.info.private_key_path:
            ctx.load_cert_chain(self.info.certificate_path, self.info.private_key_path)
        return ctx

    def _new_session(self, connections: int) -> aiohttp.ClientSession:
        headers = {"Accept": "application/json", "User-Agent": "limetask-operator"}
        if self.info.token:
            headers["Authorization"] = f"Bearer {self.info.token}"
        auth = None
        if self.info.username and self.info.password:
            auth = aiohttp.BasicAuth(self.info.username, self.info.password)
        return aiohttp.ClientSession(
            headers=headers, auth=auth,
            connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=connections),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, connect=5),
            # A watch event is one line, and aiohttp refuses lines over twice this buffer:
            # with the default (64 KiB) a Job or pod carrying 32 KiB of arguments leaves
            # little headroom, and a refused line would make the watch relist forever.
            read_bufsize=2**20,
        )

    def session(self) -> aiohttp.ClientSession:
        """For requests: at most REQUEST_CONNECTIONS at once."""
        if self._session is None or self._session.closed:
            self._session = self._new_session(REQUEST_CONNECTIONS)
        return self._session

    def watch_session(self) -> aiohttp.ClientSession:
        """For watches only, with no connection limit: there are as many as the operator runs
        (three per watched namespace), each on one connection; each call sets its timeout."""
        if self._watch_session is None or self._watch_session.closed:
            self._watch_session = self._new_session(0)  # 0: no limit
        return self._watch_session

    def lease_session(self) -> aiohttp.ClientSession:
        """For the leader lease only: never queued behind other requests."""
        if self._lease_session is None or self._lease_session.closed:
            self._lease_session = self._new_session(2)
        return self._lease_session

    async def close(self) -> None:
        for session in (self._session, self._watch_session, self._lease_session):
            if session is not None:
                await session.close()

    async def lease_request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        """One attempt, no retry, done within `timeout` seconds (the elector's deadlines)."""
        try:
            async with self.lease_session().request(
                method, self.server + path, data=None if body is None else json.dumps(body),
                headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=max(timeout, 0.01)),
            ) as resp:
                text = await resp.text()
                if resp.status < 300:
                    return safejson.loads(text) if text else None
                try:
                    message = safejson.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    message = text[:200]
                raise KubeError(resp.status, message, method, path)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            API_ERRORS.labels(method, "connection").inc()
            raise KubeError(0, f"no answer: {exc or type(exc).__name__}", method, path) from exc

    def _fenced(self, method: str, path: str, params: dict[str, str] | None) -> tuple[dict[str, str] | None, Any]:
        """A write's parameters and client timeout within this replica's lease (or NotLeading)."""
        if self.fence is None or method not in WRITES:
            return params, None
        budget = self.fence()
        if budget <= 0:
            raise NotLeading(method, path)
        # The API server gives up on the request at its `timeout` parameter; the client too.
        return ({**(params or {}), "timeout": f"{max(1, int(budget * 1000))}ms"},
                aiohttp.ClientTimeout(total=min(REQUEST_TIMEOUT, budget), connect=min(5.0, budget)))

    async def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        delay = 0.2
        for attempt in range(6):
            sent_params, timeout = self._fenced(method, path, params)  # again at every attempt
            try:
                async with self.session().request(
                    method, self.server + path, params=sent_params,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type}, **({"timeout": timeout} if timeout else {}),
                ) as resp:
                    text = await resp.text()
                    if resp.status < 300:
                        return safejson.loads(text) if text else None
                    try:
                        message = safejson.loads(text).get("message", text)
                    except (ValueError, AttributeError):
                        message = text[:200]
                    if resp.status not in (404, 409):
                        API_ERRORS.labels(method, str(resp.status)).inc()
                    if resp.status in (429, 500, 502, 503, 504) and attempt < 5:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5)
                        continue
                    if resp.status == 401 and attempt < 5 and await self.refresh_credentials():
                        continue
                    raise KubeError(resp.status, message, method, path)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                API_ERRORS.labels(method, "connection").inc()
                if attempt >= 5:
                    raise KubeError(0, f"connection failed: {exc}", method, path) from exc
                LOG.warning("%s %s: %s; retrying in %.1fs", method, path, exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
        raise AssertionError("unreachable")

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists (409)."""
        try:
            result: dict[str, Any] = await self.request("POST", path, body)
            return result
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    async def delete(self, path: str, propagation: str = "Background", uid: str | None = None) -> None:
        """Delete; nothing when it is gone already (404). With `uid`, only that incarnation:
        an object re-created under the same name meanwhile is left alone (409)."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path, options)
        except KubeError as exc:
            if exc.status == 409 and uid:
                return  # another incarnation: not ours to delete
            if exc.status != 404:
                raise

    async def get(self, path: str) -> dict[str, Any] | None:
        """Get; None when it does not exist (404)."""
        try:
            result: dict[str, Any] = await self.request("GET", path)
            return result
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise


def jobs_path(namespace: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs" + (f"/{name}" if name else "")


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def task_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/apis/limetask.io/v1alpha1/namespaces/{namespace}/limetasks/{name}" + (f"/{sub}" if sub else "")
