"""Lean watches of LimeTasks, LimeTaskSchedules, LimeTaskQueues, Namespaces (their labels, for the
queues' namespaceSelectors) and the tasks' Jobs and Pods (those filtered by label on the server).

kopf runs the operator (login, probes, signals, start-up and clean-up); these watches feed the
reconciler's caches, with client-go's reflector semantics:
- list in pages, each page handed to the cache as it comes (no whole listing is held), then
  report what the listing did not contain, so that what vanished meanwhile goes too;
- watch from the listed resourceVersion, with bookmarks and bounded timeouts;
- after a connection error, a timeout, a 429 or a 5xx, watch again from the last
  resourceVersion seen; list again only on 410 Gone (or an event that cannot be read), with
  a back-off between listings;
- a 401 asks for fresh credentials (a rotated token) first;
- a 403 in one namespace (its Role or RoleBinding gone) is that namespace's trouble: the watch
  is "forbidden" (`forbidden`, `degraded()`), it holds back its own namespace's tasks and no
  other's, and it is no reason to restart the operator (`problem()` leaves it out).
Why not kopf's watches: kopf 1.45 can filter labels on the server and list in pages too, but its
per-object machinery costs 5 to 15 times the CPU of these watches and about 13 KB of memory per
object (`python -m bench --only watchlayer`; the figures are in the README's operator section).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from lime_task import safejson

from .kube import Kube, KubeError

LOG = logging.getLogger("limetask.operator.watch")
Handler = Callable[[str, dict[str, Any]], None]  # ("ADDED"/"MODIFIED"/"DELETED"/"LISTED", object)
Listed = Callable[[set[tuple[str, str]], "str | None"], None]  # (what a listing held, its namespace)


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
                 patterns: list[str] | None, on_event: Handler, on_listed: Listed, server_timeout: int = 120,
                 on_change: Callable[[], None] | None = None, handled: tuple[int, ...] = ()) -> None:
        self.kube = kube
        self.base = base  # "/api/v1" or "/apis/batch/v1"
        self.plural = plural
        self.selector = label_selector
        self.namespace = namespace  # None: every namespace (filtered by the patterns, if any)
        self.patterns = patterns
        self.on_event = on_event
        self.on_listed = on_listed
        self.server_timeout = server_timeout
        self.synced = asyncio.Event()
        self.created = asyncio.get_running_loop().time()
        self.failing_since: float | None = None
        self.last_error = ""
        self.last_status: int | None = None  # the HTTP status of the last failure, if it had one
        self.on_change = on_change  # told when the watch starts or stops failing, or fails otherwise
        # HTTP statuses its owner handles (told through on_change, and says so once): a failure with
        # one is logged at debug level only, and is no problem for the health probe.
        self.handled = handled
        self.version: str | None = None  # the last resourceVersion seen; None: list first

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
        """List in pages into the cache; then report what was there (names only)."""
        seen: set[tuple[str, str]] = set()
        token = None
        while True:
            params = {"limit": "500"}
            if self.selector:
                params["labelSelector"] = self.selector
            if token:
                params["continue"] = token
            page = await self.kube.request("GET", self._path(), params=params)
            for item in page.get("items", []):
                if self._wanted(item):
                    meta = item.get("metadata") or {}
                    seen.add((meta.get("namespace", ""), meta.get("name", "")))
                    self.on_event("LISTED", item)
            page.pop("items", None)  # the page's objects are in the cache now: hold no copy
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                self.synced.set()  # first: on_listed may ask whether every listing is done
                self._failing(None)
                self.on_listed(seen, self.namespace)
                return str(page["metadata"]["resourceVersion"])

    async def run(self) -> None:
        """List, then watch, and go on watching from the last resourceVersion seen; list again
        only on 410 Gone or an event that cannot be read, always after a back-off. Never returns.

        Whatever goes wrong (the API, the network, an object no one expected) is logged and
        retried: a watch that stopped would leave the operator blind while it still looks
        alive. `problem()` tells the health probe when one keeps failing.
        """
        self.version = None
        delay = relist_delay = 0.5
        while True:
            try:
                if self.version is None:
                    self.version = await self._list()
                await self._watch()
                delay = 0.5
                self._failing(None)
            except asyncio.CancelledError:
                raise
            except _Gone:
                # Too old a resourceVersion: list again, but never in a tight loop.
                LOG.info("watching %s%s: resourceVersion too old; listing again in %.1fs", self.plural,
                         f" in {self.namespace}" if self.namespace else "", relist_delay)
                self.version = None
                await asyncio.sleep(relist_delay)
                relist_delay = min(relist_delay * 2, 30)
                continue
            except Exception as exc:  # noqa: BLE001 - see the docstring
                loop = asyncio.get_running_loop()
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self._failing(loop.time(), exc.status if isinstance(exc, KubeError) else None)
                expected = isinstance(exc, (KubeError, aiohttp.ClientError, asyncio.TimeoutError))
                handled = isinstance(exc, KubeError) and exc.status in self.handled
                level = logging.DEBUG if handled else logging.WARNING if expected else logging.ERROR
                LOG.log(level, "watching %s%s: %s; again in %.1fs",
                        self.plural, f" in {self.namespace}" if self.namespace else "", self.last_error, delay,
                        exc_info=not expected)
                if isinstance(exc, KubeError) and exc.status == 401:
                    await self.kube.refresh_credentials()
                if not expected or isinstance(exc, ValueError) or (isinstance(exc, KubeError) and exc.status == 404):
                    self.version = None  # an event that cannot be read, or a resource that went: list again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            relist_delay = 0.5

    def _failing(self, since: float | None, status: int | None = None) -> None:
        """Failing since then (None: not failing), with that HTTP status; `on_change` hears of a change."""
        before = (self.failing_since is not None, self.last_status)
        if since is None:
            self.failing_since, self.last_status = None, None
        else:
            self.failing_since = self.failing_since if self.failing_since is not None else since
            self.last_status = status
        if self.on_change is not None and before != (self.failing_since is not None, self.last_status):
            self.on_change()

    @property
    def forbidden(self) -> bool:
        """Failing because the API server forbids it (403), in its namespace only."""
        return self.namespace is not None and self.failing_since is not None and self.last_status == 403

    def degraded(self) -> str | None:
        """Why this watch's namespace cannot be listed, or None."""
        if not self.forbidden:
            return None
        return f"{self.plural} in {self.namespace} cannot be listed: {self.last_error}"

    def problem(self, now: float, grace: float) -> str | None:
        """Why this watch is unhealthy, or None: failing (or not yet listed) for over `grace` s.
        A namespace the operator may not list is not its problem (see `degraded`)."""
        where = f"{self.plural}{' in ' + self.namespace if self.namespace else ''}"
        if self.forbidden or (self.failing_since is not None and self.last_status in self.handled):
            return None
        if self.failing_since is not None and now - self.failing_since > grace:
            return f"watching {where} has failed for {now - self.failing_since:.0f}s: {self.last_error}"
        if not self.synced.is_set() and now - self.created > grace:
            return f"{where} not listed yet after {now - self.created:.0f}s"
        return None

    async def _watch(self) -> None:
        """Watch from `self.version`, which follows every event (and bookmark) seen."""
        assert self.version is not None
        params = {"watch": "true", "resourceVersion": self.version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.server_timeout)}
        if self.selector:
            params["labelSelector"] = self.selector
        timeout = aiohttp.ClientTimeout(total=self.server_timeout + 30, sock_connect=5)
        url = self.kube.server + self._path()
        async with self.kube.watch_session().get(url, params=params, timeout=timeout) as resp:
            if resp.status == 410:
                raise _Gone()
            if resp.status >= 300:
                raise KubeError(resp.status, (await resp.text())[:200], "WATCH", self._path())
            self._failing(None)
            async for line in resp.content:
                if not line.strip():
                    continue
                event = safejson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise KubeError(int(obj.get("code") or 0), str(obj.get("message")), "WATCH", self._path())
                if kind == "BOOKMARK" or not self._wanted(obj):
                    self.version = str((obj.get("metadata") or {}).get("resourceVersion") or self.version)
                    continue
                self.on_event(str(kind), obj)
                self.version = str((obj.get("metadata") or {}).get("resourceVersion") or self.version)


class _Gone(Exception):
    """The resourceVersion is too old: list again."""
