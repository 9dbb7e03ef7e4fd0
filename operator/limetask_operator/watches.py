"""Lean watches of LimeTasks and of their Jobs and Pods (those filtered by label on the server).

kopf runs the operator (login, probes, signals, start-up and clean-up), but its watches cost
too much here: every event goes through its whole cause-detection machinery, which took more
CPU than the reconcile itself, it cannot filter by label on the server, and it kept each
listing alive (tracemalloc: 27 MB for 5,000 LimeTasks). These watches list in pages, then
watch from the listed resourceVersion with bounded timeouts; on a 410 or a broken stream they
list again and report what vanished meanwhile, so the caches stay level-correct.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from lime_task import safejson

from .kube import ApiError, Kube

LOG = logging.getLogger("limetask.operator.watch")
Handler = Callable[[str, dict[str, Any]], None]
Resync = Callable[[list[dict[str, Any]], "str | None"], None]


def scopes(namespaces: list[str] | None) -> list[tuple[str | None, list[str] | None]]:
    """(namespace, patterns) of the watches to run: one per namespace when they are plain names
    (a Role in each is enough), else one cluster-wide watch filtered by the patterns."""
    if namespaces is None:
        return [(None, None)]
    if all(not any(c in ns for c in "*?[!") for ns in namespaces):
        return [(ns, None) for ns in dict.fromkeys(namespaces)]
    return [(None, namespaces)]


class ResourceWatch:
    """One kind of object (LimeTasks, or the Jobs or Pods of tasks) in one scope, kept in a cache."""

    def __init__(self, kube: Kube, base: str, plural: str, label_selector: str, namespace: str | None,
                 patterns: list[str] | None, on_event: Handler, on_resync: Resync, server_timeout: int = 120) -> None:
        self.kube = kube
        self.base = base  # "/api/v1" or "/apis/batch/v1"
        self.plural = plural
        self.selector = label_selector
        self.namespace = namespace  # None: every namespace (filtered by the patterns, if any)
        self.patterns = patterns
        self.on_event = on_event
        self.on_resync = on_resync
        self.server_timeout = server_timeout
        self.synced = asyncio.Event()
        self.created = asyncio.get_running_loop().time()
        self.failing_since: float | None = None
        self.last_error = ""

    def _wanted(self, obj: dict[str, Any]) -> bool:
        if self.patterns is None:
            return True
        ns = (obj.get("metadata") or {}).get("namespace", "")
        return any(fnmatch.fnmatchcase(ns, p) for p in self.patterns)

    def _path(self) -> str:
        if self.namespace:
            return f"{self.base}/namespaces/{self.namespace}/{self.plural}"
        return f"{self.base}/{self.plural}"

    async def _list(self) -> str:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            params = {"limit": "500"}
            if self.selector:
                params["labelSelector"] = self.selector
            if token:
                params["continue"] = token
            page = await self.kube.request("GET", self._path(), params=params)
            items += [i for i in page.get("items", []) if self._wanted(i)]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                self.on_resync(items, self.namespace)
                self.synced.set()
                self.failing_since = None
                return str(page["metadata"]["resourceVersion"])

    async def run(self) -> None:
        """List, then watch; on any failure back off, list again and go on. Never returns.

        Whatever goes wrong (the API, the network, an object no one expected) is logged and
        retried: a watch that stopped would leave the operator blind while it still looks
        alive. `problem()` tells the health probe when one keeps failing.
        """
        version: str | None = None
        delay = 0.5
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                delay = 0.5
                self.failing_since = None
            except asyncio.CancelledError:
                raise
            except _Gone:
                version = None
            except Exception as exc:  # noqa: BLE001 - see the docstring
                loop = asyncio.get_running_loop()
                if self.failing_since is None:
                    self.failing_since = loop.time()
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                expected = isinstance(exc, (ApiError, aiohttp.ClientError, asyncio.TimeoutError))
                LOG.log(logging.WARNING if expected else logging.ERROR, "watching %s%s: %s; again in %.1fs",
                        self.plural, f" in {self.namespace}" if self.namespace else "", self.last_error, delay,
                        exc_info=not expected)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
                version = None  # list again: events may have been missed

    def problem(self, now: float, grace: float) -> str | None:
        """Why this watch is unhealthy, or None: failing (or not yet listed) for over `grace` s."""
        where = f"{self.plural}{' in ' + self.namespace if self.namespace else ''}"
        if self.failing_since is not None and now - self.failing_since > grace:
            return f"watching {where} has failed for {now - self.failing_since:.0f}s: {self.last_error}"
        if not self.synced.is_set() and now - self.created > grace:
            return f"{where} not listed yet after {now - self.created:.0f}s"
        return None

    async def _watch(self, version: str) -> str:
        params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.server_timeout)}
        if self.selector:
            params["labelSelector"] = self.selector
        timeout = aiohttp.ClientTimeout(total=self.server_timeout + 30, sock_connect=5)
        url = self.kube.server + self._path()
        async with self.kube.watch_session().get(url, params=params, timeout=timeout) as resp:
            if resp.status == 410:
                raise _Gone()
            if resp.status >= 300:
                raise ApiError(resp.status, (await resp.text())[:200], "WATCH", self._path())
            self.failing_since = None
            async for line in resp.content:
                if not line.strip():
                    continue
                event = safejson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiError(int(obj.get("code") or 0), str(obj.get("message")), "WATCH", self._path())
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK" or not self._wanted(obj):
                    continue
                self.on_event(str(kind), obj)
        return version


class _Gone(Exception):
    """The resourceVersion is too old: list again."""
