"""Lean watches of the operator's children (Jobs and Pods), filtered by label on the server.

kopf watches LimeTasks. A task's Jobs and Pods make most of the events, though, and kopf
can neither filter them by label on the server nor handle them cheaply (each event goes
through its whole cause-detection machinery). These watches list, then watch from the
listed resourceVersion, with bounded timeouts; on a 410 or a broken stream they list again
and report what vanished meanwhile, so the caches stay level-correct.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from .kube import ApiError, Kube

LOG = logging.getLogger("limetask.operator.watch")
Handler = Callable[[str, dict[str, Any]], None]
Resync = Callable[[list[dict[str, Any]]], None]


class ChildWatch:
    def __init__(self, kube: Kube, base: str, plural: str, label_selector: str, namespaces: list[str] | None,
                 on_event: Handler, on_resync: Resync, server_timeout: int = 120) -> None:
        self.kube = kube
        self.base = base  # "/api/v1" or "/apis/batch/v1"
        self.plural = plural
        self.selector = label_selector
        self.patterns = namespaces  # None: every namespace
        self.on_event = on_event
        self.on_resync = on_resync
        self.server_timeout = server_timeout
        self.synced = asyncio.Event()

    def _wanted(self, obj: dict[str, Any]) -> bool:
        if self.patterns is None:
            return True
        ns = (obj.get("metadata") or {}).get("namespace", "")
        return any(fnmatch.fnmatchcase(ns, p) for p in self.patterns)

    def _path(self) -> str:
        exact = self.patterns is not None and len(self.patterns) == 1 and not any(c in self.patterns[0] for c in "*?[")
        if exact:
            return f"{self.base}/namespaces/{self.patterns[0]}/{self.plural}"  # type: ignore[index]
        return f"{self.base}/{self.plural}"

    async def _list(self) -> str:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            params = {"labelSelector": self.selector, "limit": "500"}
            if token:
                params["continue"] = token
            page = await self.kube.request("GET", self._path(), params=params)
            items += [i for i in page.get("items", []) if self._wanted(i)]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                self.on_resync(items)
                self.synced.set()
                return str(page["metadata"]["resourceVersion"])

    async def run(self) -> None:
        version: str | None = None
        delay = 0.5
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except _Gone:
                version = None
            except (ApiError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                LOG.warning("watching %s: %s; again in %.1fs", self.plural, exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
                version = None  # list again: events may have been missed

    async def _watch(self, version: str) -> str:
        params = {"labelSelector": self.selector, "watch": "true", "resourceVersion": version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(self.server_timeout)}
        timeout = aiohttp.ClientTimeout(total=self.server_timeout + 30, sock_connect=5)
        async with self.kube.session().get(self.kube.server + self._path(), params=params, timeout=timeout) as resp:
            if resp.status == 410:
                raise _Gone()
            if resp.status >= 300:
                raise ApiError(resp.status, (await resp.text())[:200], "WATCH", self._path())
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
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
