"""Completion events: the contract, and a small consumer for event handlers.

When a task ends, the operator publishes one event to a durable topic exchange (default
`lime.{app}`) with routing key `core.task.{task_name}.success.v1` or `.failure.v1`, a JSON
body, persistent delivery and a deterministic `message_id` (`{task uid}.{state}`). Delivery is
at least once: deduplicate by message id, as `consume` does.

    import asyncio
    from lime_task.events import consume

    async def on_failure(event):
        print(event["task"], event["error"]["message"])

    asyncio.run(consume("amqp://guest:guest@localhost/", "my-app", on_failure,
                        patterns=["core.task.#.failure.v1"]))

Task names contain dots, so bind with `#`: `core.task.#.failure.v1`,
`core.task.my_package.tasks.#`. Needs the `events` extra (aio-pika).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from . import safejson
from .errors import InvalidTaskError
from .resource import FAILURE, SUCCESS
from .validation import check_app_name

LOG = logging.getLogger("limetask.events")
DEFAULT_EXCHANGE = "lime.{app}"
ALL_TASKS = "core.task.#"


def routing_key(task_name: str, state: str) -> str:
    if state not in (SUCCESS, FAILURE):
        raise ValueError(f"no event for state {state!r}")
    return f"core.task.{task_name}.{'success' if state == SUCCESS else 'failure'}.v1"


def message_id(task_uid: str, state: str) -> str:
    """Unique per task incarnation and state: the LimeTask's UID, never reused, not its name.

    The same name in two namespaces, or a task deleted and created again under its name,
    gets another id, so consumers that drop redeliveries by id never drop a new task's event.
    """
    return f"{task_uid}.{state}"


def exchange_name(app: str, template: str = DEFAULT_EXCHANGE) -> str:
    return template.replace("{app}", app)


def event_body(task_id: str, namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any],
               created_at: str | None, uid: str = "") -> dict[str, Any]:
    """The JSON body of a completion event, from a LimeTask's spec and final status."""
    state = status.get("state")
    body: dict[str, Any] = {
        "id": task_id,
        "uid": uid,
        "task": spec.get("task"),
        "app": spec.get("app"),
        "namespace": namespace,
        "state": state,
        "attempts": status.get("attempts", 0),
        "created_at": created_at,
        "started_at": status.get("startedAt"),
        "completed_at": status.get("completedAt"),
    }
    if state == SUCCESS:
        body["result"] = status.get("result")
    else:
        error = dict(status.get("error") or {})
        body["error"] = {"type": error.get("type", ""), "message": error.get("message", ""),
                         "reason": error.get("reason", "")}
    return body


# A query parameter, or a `key=value` word of a connection string, whose value is a secret or
# names where one is kept: libpq's password, sslpassword, passfile and sslkey, and any
# *secret*, *token*, *credential*.
_SECRET_KEY = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)
_SECRET_PAIR = re.compile(r"(?i)(\b[\w.%-]*(?:pass|secret|token|key|credential)[\w.%-]*\s*=\s*)"
                          r"('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&;#,]+)")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact(text: str) -> str:
    """A URL, or a text quoting URLs or a connection string, without its secrets: the password
    of the user information, and the value of every query parameter or `key=value` word that
    is one (see _SECRET_KEY). For logs and messages."""
    if _URL.fullmatch(text):
        return _redact_url(text)
    return _SECRET_PAIR.sub(r"\1***", _URL.sub(lambda m: _redact_url(m.group()), text))


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a malformed port or host raises here
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_param(param: str) -> str:
    key, eq, _ = param.partition("=")
    return f"{key}=***" if eq and _SECRET_KEY.search(unquote(key)) else param


def check_broker_url(url: str) -> str:
    """A clear error for a malformed broker URL (amqp:// or amqps://, with a host)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidTaskError(f"malformed broker URL {redact(url)!r}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise InvalidTaskError(f"broker URL {redact(url)!r} must start with amqp:// or amqps://")
    if not parts.hostname:
        raise InvalidTaskError(f"broker URL {redact(url)!r} has no host")
    del port
    return url


def check_exchange_name(name: str) -> str:
    """A clear error for an exchange name RabbitMQ refuses or reserves."""
    if not name or len(name.encode()) > 255:
        raise InvalidTaskError(f"exchange name {name[:60]!r}: 1 to 255 bytes")
    if name.startswith("amq."):
        raise InvalidTaskError(f"exchange {name!r}: names starting with 'amq.' are RabbitMQ's own")
    return name


class Deduplicator:
    """Remembers the last `size` message ids, to drop redeliveries."""

    def __init__(self, size: int = 10000) -> None:
        self.size = size
        self.seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, message_id: str | None) -> bool:
        if not message_id:
            return True
        if message_id in self.seen:
            self.seen.move_to_end(message_id)
            return False
        self.seen[message_id] = None
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return True


async def consume(
    url: str, app: str, handler: Callable[[dict[str, Any]], Awaitable[Any]],
    patterns: list[str] | None = None, queue: str | None = None, exchange: str | None = None,
    prefetch: int = 10, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None,
) -> None:
    """Call `handler(event)` for each task event of `app` until `stop` is set.

    `queue`: a durable named queue (events wait there while the consumer is away); without
    one, an exclusive queue that lives as long as the consumer. Each message is acked as
    soon as the handler returns (a slow handler past the broker's consumer_timeout loses its
    channel). A handler that raises has the message requeued once, then dropped.
    """
    import aio_pika

    check_app_name(app)
    check_broker_url(url)
    check_exchange_name(exchange or exchange_name(app))
    dedupe = Deduplicator()
    stop = stop or asyncio.Event()
    connection = await aio_pika.connect_robust(url, timeout=10)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        ex = await channel.declare_exchange(exchange or exchange_name(app), aio_pika.ExchangeType.TOPIC,
                                            durable=True)
        q = await (channel.declare_queue(queue, durable=True) if queue
                   else channel.declare_queue(exclusive=True, auto_delete=True))
        for pattern in patterns or [ALL_TASKS]:
            await q.bind(ex, routing_key=pattern)
        async def on_message(message: Any) -> None:
            if not dedupe.first_time(message.message_id):
                await message.ack()
                return
            try:
                event = safejson.loads(message.body)
                if not isinstance(event, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                # Not an event of ours (anyone may publish to the exchange): dropped, not requeued.
                LOG.warning("dropped message %s on %s: its body is not a task event (%s)", message.message_id,
                            message.routing_key, exc)
                await message.ack()
                return
            try:
                event["routing_key"] = message.routing_key
                event["message_id"] = message.message_id
                await handler(event)
            except Exception:  # noqa: BLE001 - one bad event must not stop the consumer
                LOG.exception("event handler failed for %s", message.message_id)
                if message.message_id:
                    dedupe.seen.pop(message.message_id, None)
                await message.nack(requeue=not message.redelivered)
                return
            await message.ack()

        tag = await q.consume(on_message)
        if ready is not None:
            ready.set()
        await stop.wait()
        await q.cancel(tag)
    finally:
        await connection.close()
