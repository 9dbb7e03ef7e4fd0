"""The soak's own way into the Kubernetes API: raw HTTP (aiohttp), no code of the operator's.

The load generator, the checker and the fault injector each open one of these with the cluster's
admin token, so that what they see and do never goes through the client library or the operator
they are measuring.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Api:
    """One connection pool to the API server, from a kubeconfig with a token (the local clusters')."""

    def __init__(self, kubeconfig: Path, limit: int = 64) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        context = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == context["cluster"])["cluster"]
        user = next(u for u in cfg["users"] if u["name"] == context["user"])["user"]
        self.server = cluster["server"].rstrip("/")
        ca = Path(cluster["certificate-authority"])
        if not ca.is_absolute():
            ca = kubeconfig.parent / ca
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self.headers = {"Authorization": f"Bearer {user['token']}"}
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers, connector=aiohttp.TCPConnector(ssl=self.ssl, limit=self.limit))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                      timeout: float = 30) -> Any:
        """One call; the decoded answer. ApiError for an HTTP error, aiohttp's own errors (and
        asyncio.TimeoutError) when the server cannot be reached."""
        async with self.session.request(method, self.server + path, json=body, params=params,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise ApiError(resp.status, str(message)[:300])
            if resp.content_type == "application/json":
                return json.loads(text)
            return text

    async def watch(self, path: str, params: dict[str, str] | None = None,
                    on_listed: Callable[[list[dict[str, Any]]], Awaitable[None] | None] | None = None,
                    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) for every change, forever: a listing first (each item as "LISTED",
        then `on_listed` with them all), then a watch from its resourceVersion; again from a
        listing when the watch expires (410) or the server goes away."""
        params = dict(params or {})
        version = ""
        while True:
            try:
                if not version:
                    listing = await self.request("GET", path, params=params, timeout=120)
                    version = listing["metadata"]["resourceVersion"]
                    items = listing.get("items") or []
                    for item in items:
                        yield "LISTED", item
                    if on_listed is not None:
                        result = on_listed(items)
                        if result is not None:
                            await result
                watch_params = {**params, "watch": "true", "resourceVersion": version,
                                "allowWatchBookmarks": "true", "timeoutSeconds": "60"}
                async with self.session.get(self.server + path, params=watch_params,
                                            timeout=aiohttp.ClientTimeout(total=90, sock_read=75)) as resp:
                    if resp.status == 410:
                        version = ""
                        continue
                    if resp.status >= 400:
                        raise ApiError(resp.status, (await resp.text())[:300])
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            if obj.get("code") == 410:
                                version = ""
                            break
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if event.get("type") == "BOOKMARK":
                            continue
                        yield str(event.get("type")), obj
            except (aiohttp.ClientError, asyncio.TimeoutError, ApiError, ConnectionError):
                await asyncio.sleep(1)

    async def metrics(self) -> str:
        return str(await self.request("GET", "/metrics", timeout=30))
