"""The dashboard's view of the live tasks: one list-then-watch of the namespace's LimeTasks,
kept as small summaries, and pushed to every open page as it changes.

One watch per process, however many pages are open: each page costs a queue, not a request
to the API server. Events are read line by line with `safejson`, so one hostile object (too
deep for Python's json) cannot stop the stream. After an expired resource version (410), or a
dropped connection, the watch lists again and tells pages to reload what they show.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ... import safejson
from ...resource import GROUP, PLURAL, VERSION
from .model import summary_of

LOG = logging.getLogger("limetask.web.dashboard")

LIST_PAGE = 500
WATCH_SECONDS = 240
# What a slow page may fall behind by before it is told to reload instead.
SUBSCRIBER_BACKLOG = 1000
RETRY_MAX_SECONDS = 30.0


@dataclass(eq=False)
class Subscriber:
    """One open page: changes reach it through its own queue, on its own event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_BACKLOG))
    overflowed: bool = False

    def offer(self, item: tuple[str, Any]) -> None:
        """Runs on the subscriber's loop."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # Too far behind: drop what is queued and tell the page to reload its view.
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(("reset", None))


class TaskWatch:
    """Summaries of the namespace's LimeTasks, kept current by a watch in a thread of its own."""

    def __init__(self, api_client: Any, namespace: str,
                 summarize: Callable[[Mapping[str, Any]], dict[str, Any]] = summary_of) -> None:
        from kubernetes import client

        self.api: Any = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.summarize = summarize
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber] = set()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.healthy = False
        self.error: str | None = None

    # -- reading ----------------------------------------------------------------------------

    def start(self) -> "TaskWatch":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dashboard-watch", daemon=True)
                self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._rows.values())

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._rows.get(name)

    def stop(self) -> None:
        self._stop.set()

    # -- pages ------------------------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        sub = Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def _publish(self, kind: str, row: Any) -> None:
        with self._lock:
            subs = list(self._subscribers)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, (kind, row))
            except RuntimeError:  # its loop has closed: the page is gone
                self.unsubscribe(sub)

    # -- the watch --------------------------------------------------------------------------

    def _summary(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            return self.summarize(obj)
        except Exception as exc:  # noqa: BLE001 - one malformed object must not stop the view
            name = (obj.get("metadata") or {}).get("name") if isinstance(obj, Mapping) else None
            LOG.warning("dashboard: task %r is left out, it cannot be read: %s", name, exc)
            return None

    def _list(self) -> str:
        rows: dict[str, dict[str, Any]] = {}
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False, "_request_timeout": 60}
            if token:
                kwargs["_continue"] = token
            response = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, **kwargs)
            body = safejson.loads(response.data)
            for item in body.get("items") or ():
                row = self._summary(item)
                if row is not None:
                    rows[row["id"]] = row
            meta = body.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            token = meta.get("continue")
            if not token:
                break
        with self._lock:
            self._rows = rows
        self._ready.set()
        self._publish("reset", None)
        return version

    def _watch(self, version: str) -> str | None:
        """Applies events until the watch ends; the version to go on from, or None to list again."""
        response = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, watch=True, resource_version=version,
            allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS, _preload_content=False,
            _request_timeout=(10, WATCH_SECONDS + 30))
        pending = b""
        try:
            for chunk in response.stream(65536, decode_content=True):
                if self._stop.is_set():
                    return None
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        version = self._apply(line, version)
                        if not version:
                            return None
        finally:
            response.release_conn()
        return version

    def _apply(self, line: bytes, version: str) -> str:
        try:
            event = safejson.loads(line)
        except ValueError:
            LOG.warning("dashboard: an event that is not JSON was skipped")
            return version
        if not isinstance(event, dict) or not isinstance(event.get("object") or {}, dict):
            LOG.warning("dashboard: an event that is not an object was skipped")
            return version
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") != 410:
                LOG.warning("dashboard: the watch ended: %s", str(obj.get("message", ""))[:200])
            return ""
        meta = obj.get("metadata") or {}
        version = meta.get("resourceVersion") or version
        if kind == "BOOKMARK":
            return version
        name = meta.get("name")
        if kind == "DELETED":
            with self._lock:
                row = self._rows.pop(str(name), None)
            if row is not None:
                self._publish("deleted", row)
            return version
        row = self._summary(obj)
        if row is not None:
            with self._lock:
                self._rows[row["id"]] = row
            self._publish("task", row)
        return version

    def _run(self) -> None:
        delay = 1.0
        version: str | None = None
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                    self.healthy, self.error, delay = True, None, 1.0
                version = self._watch(version)
            except Exception as exc:  # noqa: BLE001 - an outage: say so, wait, list again
                first = str(exc).splitlines()[0] if str(exc) else ""
                self.healthy, self.error = False, f"{type(exc).__name__}: {first}"[:300]
                if getattr(exc, "status", None) != 410:
                    LOG.warning("dashboard: watching tasks failed (%s); trying again in %.0fs", self.error, delay)
                    self._stop.wait(delay)
                    delay = min(RETRY_MAX_SECONDS, delay * 2)
                version = None
