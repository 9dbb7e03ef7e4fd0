"""Completion events, delivered at least once.

The outbox is the LimeTask itself: a finished task whose `status.event.confirmed` is not true
still owes its event. The dispatcher publishes it (with publisher confirms and a timeout on
every publish), then records the confirmation in the status. Failures are retried with
backoff, across broker outages and operator restarts (a restarted operator finds every
unconfirmed task again). Publishing runs on workers of its own, so a broker that is down
never holds up task processing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from lime_task.events import event_body, exchange_name, message_id, redact, routing_key
from lime_task.resource import FINAL_STATES

from .caches import Caches
from .kube import Kube, KubeError, task_path
from .metrics import EVENTS
from .model import TaskView
from .settings import OperatorSettings

LOG = logging.getLogger("limetask.operator.events")
Key = tuple[str, str]


@dataclass(frozen=True)
class Event:
    exchange: str
    routing_key: str
    message_id: str
    body: dict[str, Any]


def build_event(task: TaskView, exchange_template: str) -> Event:
    state = str(task.status.get("state"))
    app = str(task.spec.get("app"))
    return Event(
        exchange=exchange_name(app, exchange_template),
        routing_key=routing_key(str(task.spec.get("task")), state),
        message_id=message_id(task.uid, state),
        body=event_body(task.name, task.namespace, task.spec, task.status, task.created, task.uid),
    )


def delivery_record(event: Event, sink: str, attempts: int, confirmed: bool, now: dt.datetime,
                    error: str | None = None, delay: float = 0) -> dict[str, Any]:
    """`status.event`: the outbox entry of a task's completion event."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    record: dict[str, Any] = {"messageId": event.message_id, "routingKey": event.routing_key,
                              "confirmed": confirmed, "deliveryAttempts": attempts, "sink": sink}
    if confirmed:
        record["confirmedAt"] = now.strftime(stamp)
    else:
        record["lastError"] = error or "unknown error"
        record["nextAttemptAt"] = (now + dt.timedelta(seconds=delay)).strftime(stamp)
    return record


@dataclass(frozen=True)
class Backoff:
    """A task whose event failed `failures` times in a row; its next try is due at `due`
    (event-loop time). Nothing publishes it before then, whoever submits it."""

    uid: str
    failures: int
    due: float


def owes_event(task: TaskView) -> bool:
    """Finished, its event not yet confirmed, and its status written by this operator."""
    return (task.trusted and task.status.get("state") in FINAL_STATES
            and not (task.status.get("event") or {}).get("confirmed"))


class Sink(Protocol):
    name: str

    async def send(self, event: Event, task: TaskView) -> None: ...

    async def close(self) -> None: ...


class BrokerSink:
    """RabbitMQ through aio-pika: durable topic exchanges, persistent messages, confirms."""

    name = "broker"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.connection: Any = None
        self.channel: Any = None
        self.exchanges: dict[str, Any] = {}
        self.lock = asyncio.Lock()

    async def _open(self) -> Any:
        import aio_pika

        async with self.lock:
            if self.channel is not None and not self.channel.is_closed:
                return self.channel
            await self._reset_locked()
            self.connection = await aio_pika.connect(self.url, timeout=self.timeout)
            self.channel = await self.connection.channel(publisher_confirms=True)
            LOG.info("connected to the broker at %s", redact(self.url))
            return self.channel

    async def _exchange(self, name: str) -> Any:
        import aio_pika

        channel = await self._open()
        exchange = self.exchanges.get(name)
        if exchange is None:
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            self.exchanges[name] = exchange
        return exchange

    async def _publish(self, event: Event) -> None:
        import aio_pika

        exchange = await self._exchange(event.exchange)
        message = aio_pika.Message(
            body=json.dumps(event.body, separators=(",", ":")).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.message_id,
            type=event.routing_key,
            app_id="limetask-operator",
            timestamp=dt.datetime.now(dt.timezone.utc),
        )
        # With publisher confirms, this returns once the broker has taken responsibility.
        # Not mandatory: an event nobody has bound a queue for is not an error.
        await exchange.publish(message, routing_key=event.routing_key, timeout=self.timeout, mandatory=False)

    async def send(self, event: Event, task: TaskView) -> None:
        try:
            await asyncio.wait_for(self._publish(event), timeout=self.timeout * 2)
        except BaseException:
            async with self.lock:
                await self._reset_locked()
            raise

    async def _reset_locked(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        self.exchanges.clear()
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except BaseException:  # noqa: BLE001 - it is being dropped anyway
                pass

    async def close(self) -> None:
        async with self.lock:
            await self._reset_locked()


class LogSink:
    """No broker: the event goes to the operator log and a Kubernetes Event on the LimeTask."""

    name = "log"

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def send(self, event: Event, task: TaskView) -> None:
        text = json.dumps(event.body, separators=(",", ":"))
        LOG.info("event %s %s %s", event.routing_key, event.message_id, text[:2000])
        state = str(task.status.get("state"))
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hashlib.sha256(event.message_id.encode()).hexdigest()[:10]
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{task.name[:200]}.{digest}", "namespace": task.namespace},
            "involvedObject": {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "name": task.name,
                               "namespace": task.namespace, "uid": task.uid},
            "reason": "TaskSucceeded" if state == "SUCCESS" else "TaskFailed",
            "message": f"{event.routing_key} {text}"[:1000],
            "type": "Normal" if state == "SUCCESS" else "Warning",
            "source": {"component": "limetask-operator"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        await self.kube.create(f"/api/v1/namespaces/{task.namespace}/events", body)

    async def close(self) -> None:
        return None


class EventDispatcher:
    def __init__(self, kube: Kube, settings: OperatorSettings, caches: Caches, workers: int = 8) -> None:
        self.kube = kube
        self.settings = settings
        self.caches = caches
        self.tasks = caches.tasks
        url = settings.broker_url.get_secret_value() if settings.broker_url else None
        self.sink: Sink = BrokerSink(url, settings.broker_publish_timeout) if url else LogSink(kube)
        self.work: asyncio.Queue[Key] = asyncio.Queue()  # the tasks whose event to deliver
        self.pending: set[Key] = set()
        # Per task whose last try failed; dropped on success, or once it owes no event (or is gone).
        self.backoff: dict[Key, Backoff] = {}
        self.n_workers = workers
        self.workers: list[asyncio.Task[None]] = []
        if url:
            LOG.info("completion events go to the broker at %s, exchange %s", redact(url), settings.broker_exchange)
        else:
            LOG.warning("no broker configured (LIMETASK_BROKER_URL): completion events go to this log and to "
                        "Kubernetes Events on each LimeTask")

    def start(self) -> None:
        for i in range(self.n_workers):
            self.workers.append(asyncio.create_task(self._worker(), name=f"events-{i}"))

    async def stop(self) -> None:
        for w in self.workers:
            w.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        await self.sink.close()

    def _without_secrets(self, text: str) -> str:
        if self.settings.broker_url is None:
            return text
        url = self.settings.broker_url.get_secret_value()
        text = text.replace(url, redact(url))
        password = urlsplit(url).password
        return text.replace(password, "***") if password else text

    async def publish_inline(self, task: TaskView, status: dict[str, Any]) -> dict[str, Any] | None:
        """Publish a task's event before its final status is written, when the broker is up.

        On success the final status carries the confirmation, which saves a status write per
        task. It is only tried while the broker answers (an open channel, and no task backing
        off, this one included: its retry belongs to the dispatcher) and with a short timeout,
        so a broker in trouble never slows the reconcile workers: the dispatcher then delivers
        the event after the status is written, as usual.
        """
        sink = self.sink
        if not isinstance(sink, BrokerSink) or sink.channel is None or sink.channel.is_closed or self.backoff:
            return None
        view = dataclasses.replace(task, status=status)
        event = build_event(view, self.settings.broker_exchange)
        try:
            await asyncio.wait_for(sink.send(event, view), timeout=min(1.0, self.settings.broker_publish_timeout))
        except Exception:  # noqa: BLE001 - the dispatcher will deliver it later
            EVENTS.labels(sink.name, "failed").inc()
            return None
        EVENTS.labels(sink.name, "confirmed").inc()
        return delivery_record(event, sink.name, attempts=1, confirmed=True, now=dt.datetime.now(dt.timezone.utc))

    def submit(self, key: Key) -> None:
        """Queue a task's event, unless its next try is not due yet: the retry scheduled at its
        failure publishes it then. (Each failure writes the outbox, whose watch event makes the
        reconciler submit the task again at once.)"""
        waiting = self.backoff.get(key)
        if waiting is not None:
            task = self.tasks.get(key)
            if task is not None and task.uid != waiting.uid:
                del self.backoff[key]  # a new task of the same name
            elif asyncio.get_running_loop().time() < waiting.due:
                return
        self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        if key not in self.pending:
            self.pending.add(key)
            self.work.put_nowait(key)

    def _retry(self, key: Key, waiting: Backoff) -> None:
        """The scheduled retry of one failure (a later failure or a success makes it moot)."""
        if self.backoff.get(key) is waiting:
            self._enqueue(key)

    async def _worker(self) -> None:
        while True:
            key = await self.work.get()
            try:
                await self._deliver(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - never lose the worker
                LOG.exception("event for %s/%s: unexpected error", *key)
                self.pending.discard(key)
                asyncio.get_running_loop().call_later(5, self.submit, key)
            else:
                self.pending.discard(key)

    async def _deliver(self, key: Key) -> None:
        task = self.tasks.get(key)
        if task is None or not owes_event(task):
            self.backoff.pop(key, None)
            return
        event = build_event(task, self.settings.broker_exchange)
        try:
            await self.sink.send(event, task)
        except Exception as exc:  # noqa: BLE001 - any failure: record it, retry later
            previous = self.backoff.get(key)
            n = previous.failures + 1 if previous is not None and previous.uid == task.uid else 1
            # The exponent is capped: past any sensible maximum, and 2 ** 1100 would overflow a float.
            delay = min(0.5 * 2 ** min(n - 1, 30), self.settings.event_retry_max_seconds)
            loop = asyncio.get_running_loop()
            waiting = self.backoff[key] = Backoff(task.uid, n, loop.time() + delay)
            EVENTS.labels(self.sink.name, "failed").inc()
            reason = self._without_secrets(f"{type(exc).__name__}: {exc}")
            LOG.warning("event %s not confirmed (%s); try %d again in %.1fs", event.message_id, reason, n, delay)
            try:
                await self._record(key, event, confirmed=False, error=reason[:500], delay=delay)
            finally:
                self.pending.discard(key)
                loop.call_at(waiting.due, self._retry, key, waiting)
            return
        self.backoff.pop(key, None)
        EVENTS.labels(self.sink.name, "confirmed").inc()
        await self._record(key, event, confirmed=True)

    async def _record(self, key: Key, event: Event, confirmed: bool, error: str | None = None,
                      delay: float = 0) -> None:
        """Write the delivery state into the LimeTask's status (the outbox)."""
        now = dt.datetime.now(dt.timezone.utc)
        for _ in range(3):
            task = self.tasks.get(key)
            if task is None or not owes_event(task):
                return
            attempts = int((task.status.get("event") or {}).get("deliveryAttempts") or 0) + 1
            record = delivery_record(event, self.sink.name, attempts, confirmed, now, error, delay)
            status = {**task.status, "event": record}
            self.caches.writing(task, status)
            try:
                updated = await self.kube.request("PUT", task_path(task.namespace, task.name, "status"),
                                                  task.with_status(status))
            except KubeError as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
                fresh = await self.kube.get(task_path(task.namespace, task.name))
                if fresh is None:
                    return
                self.caches.put_task(fresh, listed=True)
                continue
            self.caches.put_task(updated, written=True)
            return
