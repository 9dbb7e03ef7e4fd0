"""Guards around every request, outside FastAPI's routing: a body over the limit is 413 before
anything reads it into memory, and an unexpected error is a logged 400, never a 500 with a stack
trace."""

import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .deps import error_response

LOG = logging.getLogger("limetask.web")
# Arguments take at most 32 KiB as compact JSON; a body has room for names and indentation.
MAX_BODY_BYTES = 64 * 1024

ASGIScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """413 for a request body over the limit, before anything reads it into memory."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = error_response(413, "TooLarge", f"the request body is over {self.limit} bytes: "
                                            f"pass identifiers and let the task load the data")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class CatchAll:
    """Any unexpected error: logged with an id, answered 400, never a 500 with a stack trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            LOG.exception("request %s %s failed (error id %s)", scope.get("method"), scope.get("path"), error_id)
            if started:
                raise
            await error_response(400, "RequestFailed", f"the request could not be processed (error id {error_id})")(
                scope, receive, send)

