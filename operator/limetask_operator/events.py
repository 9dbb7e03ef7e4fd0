"""Completion events, delivered at least once.

The outbox is the LimeTask itself: a finished task whose `status.event.confirmed` is not true
still owes its event. The dispatcher publishes it (with publisher confirms and a timeout on
every publish), then records the confirmation in the status. Failures are retried with
backoff, across broker outages and operator restarts (a restarted operator finds every
unconfirmed task again). Publishing runs on workers of its own, so a broker that is down
never holds up task processing.

Failures are bounded (dead_letter.py): their state is written into the status at a bounded
rate, not per try, and an event past its bounds goes to the installation's dead-letter
exchange, so that its task settles instead of waiting in etcd for ever.
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

from . import dead_letter as dl
from . import tracing
from .caches import Caches
from .dead_letter import Bounds, Delivery
from .kube import Kube, KubeError, task_path
from .metrics import DEAD_LETTER_FAILURES, DEAD_LETTERED, EVENTS, EVENTS_DROPPED
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
                    error: str | None = None, delay: float = 0, delivery: Delivery | None = None,
                    dead_letter: dict[str, Any] | None = None) -> dict[str, Any]:
    """`status.event`: the outbox entry of a task's completion event."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    record: dict[str, Any] = {"messageId": event.message_id, "routingKey": event.routing_key,
                              "confirmed": confirmed, "deliveryAttempts": attempts, "sink": sink}
    if delivery is not None and delivery.first_failed is not None:
        record.update(firstFailedAt=delivery.first_failed.strftime(stamp), lastAttemptAt=now.strftime(stamp),
                      refusedAttempts=delivery.refusals)
        if delivery.reason:
            record["lastReason"] = delivery.reason
    if dead_letter is not None:
        record["deadLetter"] = dead_letter
    if confirmed:
        record["confirmedAt"] = now.strftime(stamp)
    else:
        record["lastError"] = error or "unknown error"
        record["nextAttemptAt"] = (now + dt.timedelta(seconds=delay)).strftime(stamp)
    return record


class Clock:
    """The event loop's time (for retries) and the wall clock (for what the status records);
    tests inject one that they move on by hand."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        asyncio.get_running_loop().call_later(delay, callback, *args)


def owes_event(task: TaskView) -> bool:
    """Finished, its event not yet confirmed, and its status written by this operator."""
    return (task.trusted and task.status.get("state") in FINAL_STATES
            and not (task.status.get("event") or {}).get("confirmed"))


class Sink(Protocol):
    name: str

    async def send(self, event: Event, task: TaskView) -> None: ...

    async def dead_letter(self, event: Event, task: TaskView, headers: dict[str, Any]) -> str:
        """Hand an event that cannot be delivered to the dead-letter path; return where it went."""

    async def close(self) -> None: ...


class BrokerSink:
    """RabbitMQ through aio-pika: durable topic exchanges, persistent messages, confirms.

    One connection, and a channel of its own for each exchange (each application's, and the
    dead-letter exchange): RabbitMQ closes a channel on an error of one of its operations (an
    exchange declared as another type, a publish to an exchange deleted meanwhile), failing every
    publish in flight on it. On a shared channel one application's broken exchange failed the
    others' events with its error, again and again, and counted their refusals towards
    dead-lettering them; on its own channel it fails only its own. The channels of the
    MAX_CHANNELS exchanges used least lately are closed past that many.
    """

    name = "broker"
    MAX_CHANNELS = 256

    def __init__(self, url: str, timeout: float, dead_letter_exchange: str = "limetask.dead-letter",
                 dead_letter_queue: str = "limetask.dead-letter") -> None:
        self.url = url
        self.timeout = timeout
        self.dead_letter_exchange = dead_letter_exchange
        self.dead_letter_queue = dead_letter_queue
        self.connection: Any = None
        # exchange name: (its channel, the exchange declared on it), the latest used last
        self.exchanges: dict[str, tuple[Any, Any]] = {}
        self.lock = asyncio.Lock()

    @property
    def answering(self) -> bool:
        """Whether the broker's connection is open (as far as this side knows)."""
        return self.connection is not None and not self.connection.is_closed

    async def _connect(self) -> Any:
        import aio_pika

        async with self.lock:
            if self.answering:
                return self.connection
            await self._reset_locked()
            self.connection = await aio_pika.connect(self.url, timeout=self.timeout)
            LOG.info("connected to the broker at %s", redact(self.url))
            return self.connection

    async def _exchange(self, name: str, used: list[Any] | None = None) -> Any:
        """The exchange, declared on a channel of its own (opened, and declared, when it has none
        or its channel was closed). `used` gets the connection and the channel it rides on."""
        import aio_pika

        connection = await self._connect()
        if used is not None:
            used.append(connection)
        found = self.exchanges.pop(name, None)
        if found is not None and not found[0].is_closed and connection is self.connection:
            self.exchanges[name] = found  # the latest used last
        else:
            # A mandatory publish that no queue takes raises (only dead-lettered events are
            # mandatory: an ordinary event nobody has bound a queue for is not an error).
            # (A connection that says it is open may still refuse a channel: see _guarded.)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            if used is not None:
                used.append(channel)
            try:
                exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
                if name == self.dead_letter_exchange and self.dead_letter_queue:
                    # A durable queue bound to all of it, so that a dead-lettered event is kept
                    # even before anyone looks (the publish is mandatory: an exchange no queue
                    # takes from is a failure).
                    queue = await channel.declare_queue(self.dead_letter_queue, durable=True)
                    await queue.bind(exchange, routing_key="#")
            except BaseException:
                await _close_quietly(channel)
                raise
            found = (channel, exchange)
            raced = self.exchanges.get(name)
            if raced is not None and not raced[0].is_closed:  # another publish declared it meanwhile
                await _close_quietly(channel)
                found = raced
            self.exchanges[name] = found
            while len(self.exchanges) > self.MAX_CHANNELS:
                oldest, _ = self.exchanges.pop(next(iter(self.exchanges)))
                await _close_quietly(oldest)
        if used is not None and len(used) < 2:
            used.append(found[0])
        return found[1]

    async def _publish(self, event: Event, headers: dict[str, Any] | None = None,
                       used: list[Any] | None = None) -> None:
        import aio_pika

        name = event.exchange if headers is None else self.dead_letter_exchange
        exchange = await self._exchange(name, used)
        message = aio_pika.Message(
            body=json.dumps(event.body, separators=(",", ":")).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.message_id,
            type=event.routing_key,
            app_id="limetask-operator",
            timestamp=dt.datetime.now(dt.timezone.utc),
            headers=headers,
        )
        # With publisher confirms, this returns once the broker has taken responsibility.
        # Not mandatory: an event nobody has bound a queue for is not an error. A dead-lettered
        # one is: it must land in a queue.
        await exchange.publish(message, routing_key=event.routing_key, timeout=self.timeout,
                               mandatory=headers is not None)

    async def send(self, event: Event, task: TaskView) -> None:
        used: list[Any] = []
        await self._guarded(self._publish(event, used=used), used)

    async def dead_letter(self, event: Event, task: TaskView, headers: dict[str, Any]) -> str:
        """The same body, routing key and message id, on the dead-letter exchange."""
        used: list[Any] = []
        await self._guarded(self._publish(event, headers, used), used)
        return self.dead_letter_exchange

    async def _guarded(self, publish: Any, used: list[Any]) -> None:
        """A publish that fails drops what it rode on, and only that: its exchange's channel when
        the broker refused one of the channel's operations, else the connection (a timeout, a
        connection lost), if no later publish opened another.
        The others in flight on them fail with it, and must not drop what a later publish opened
        (with many in flight, each failure closing whatever connection was current kept every new
        connection from living long enough to confirm anything, well after the broker was back)."""
        try:
            await asyncio.wait_for(publish, timeout=self.timeout * 2)
        except BaseException as error:
            async with self.lock:
                if used and used[0] is self.connection:
                    if len(used) < 2 or used[0].is_closed or not _channel_only(error):
                        await self._reset_locked()
                    else:
                        for name, (channel, _) in list(self.exchanges.items()):
                            if channel is used[1]:
                                del self.exchanges[name]
                        await _close_quietly(used[1])
            raise

    async def _reset_locked(self) -> None:
        connection, self.connection = self.connection, None
        self.exchanges.clear()  # the channels go with their connection
        if connection is not None:
            await _close_quietly(connection)

    async def close(self) -> None:
        async with self.lock:
            await self._reset_locked()


def _channel_only(error: BaseException) -> bool:
    """Whether the error is the broker's answer to one channel's operation (an exchange of another
    type, a publish returned), which leaves the connection sound. Anything else (a timeout, a
    connection lost or never known closed) drops the connection too."""
    from aiormq import exceptions

    return isinstance(error, (exceptions.AMQPChannelError, exceptions.ChannelInvalidStateError,
                              exceptions.DeliveryError, exceptions.PublishError))


async def _close_quietly(thing: Any) -> None:
    """Close a channel or connection that is being dropped anyway, within 2 s."""
    try:
        await asyncio.wait_for(thing.close(), timeout=2)
    except BaseException:  # noqa: BLE001 - it is being dropped anyway
        pass


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

    async def dead_letter(self, event: Event, task: TaskView, headers: dict[str, Any]) -> str:
        """Without a broker, the log is the dead-letter path (Kubernetes Events could not be made)."""
        LOG.error("event %s %s dead-lettered to this log (%s): %s", event.routing_key, event.message_id,
                  json.dumps(headers, separators=(",", ":")), json.dumps(event.body, separators=(",", ":")))
        return ""

    async def close(self) -> None:
        return None


class EventDispatcher:
    def __init__(self, kube: Kube, settings: OperatorSettings, caches: Caches, workers: int = 8,
                 clock: Clock | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.caches = caches
        self.tasks = caches.tasks
        self.clock = clock or Clock()
        self.bounds = Bounds.from_settings(settings)
        url = settings.broker_url.get_secret_value() if settings.broker_url else None
        self.sink: Sink = BrokerSink(url, settings.broker_publish_timeout, settings.event_dead_letter_exchange,
                                     settings.event_dead_letter_queue) if url else LogSink(kube)
        self.work: asyncio.Queue[Key] = asyncio.Queue()  # the tasks whose event to deliver
        self.pending: set[Key] = set()
        # Per task whose last try failed: its delivery state, held here and written into the
        # status at a bounded rate (dead_letter.py). Dropped on success, or once it owes no
        # event (or is gone).
        self.backoff: dict[Key, Delivery] = {}
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
        task. It is only tried while the broker answers (an open connection, and no task backing
        off, this one included: its retry belongs to the dispatcher) and with a short timeout,
        so a broker in trouble never slows the reconcile workers: the dispatcher then delivers
        the event after the status is written, as usual.
        """
        sink = self.sink
        if not isinstance(sink, BrokerSink) or not sink.answering or self.backoff:
            return None
        view = dataclasses.replace(task, status=status)
        event = build_event(view, self.settings.broker_exchange)
        try:
            with tracing.span("limetask publish", task, "PRODUCER", routing_key=event.routing_key, sink=sink.name):
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
            elif self.clock.time() < waiting.due:
                return
        self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        if key not in self.pending:
            self.pending.add(key)
            self.work.put_nowait(key)

    def _retry(self, key: Key, waiting: Delivery, due: float) -> None:
        """The scheduled retry of one failure (a later failure or a success makes it moot)."""
        if self.backoff.get(key) is waiting and waiting.due == due:
            self._enqueue(key)

    async def _worker(self) -> None:
        while True:
            await self.deliver_next()

    async def deliver_next(self) -> None:
        """Take one task from the queue and deliver its event (what each worker does)."""
        key = await self.work.get()
        try:
            await self._deliver(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never lose the worker
            LOG.exception("event for %s/%s: unexpected error", *key)
            self.pending.discard(key)
            self.clock.call_later(5, self.submit, key)
        else:
            self.pending.discard(key)

    def _delivery(self, key: Key, task: TaskView) -> Delivery:
        delivery = self.backoff.get(key)
        if delivery is None or delivery.uid != task.uid:
            delivery = Delivery.from_status(task, self.clock.now())
        return delivery

    async def _deliver(self, key: Key) -> None:
        """One try: to the event's exchange while it is within its bounds, else to the
        dead-letter path; then the outcome goes into the status, or waits in memory."""
        task = self.tasks.get(key)
        if task is None or not owes_event(task):
            self.backoff.pop(key, None)
            return
        event = build_event(task, self.settings.broker_exchange)
        delivery = self._delivery(key, task)
        if not delivery.past_bound(self.bounds, self.clock.now()):
            try:
                with tracing.span("limetask publish", task, "PRODUCER", routing_key=event.routing_key,
                                  sink=self.sink.name):
                    await self.sink.send(event, task)
            except Exception as exc:  # noqa: BLE001 - any failure: counted, tried again later
                EVENTS.labels(self.sink.name, "failed").inc()
                now = self.clock.now()
                delivery.failed(dl.classify(exc), self._without_secrets(f"{type(exc).__name__}: {exc}"), now)
                why = delivery.past_bound(self.bounds, now)
                if not why:
                    await self._failed(key, event, delivery, now)
                    return
                delivery.dead_letter = why
                LOG.warning("event %s goes to the dead-letter path: %s", event.message_id, why)
            else:
                self.backoff.pop(key, None)
                EVENTS.labels(self.sink.name, "confirmed").inc()
                delivery.tries += 1
                await self._record(key, event, confirmed=True, attempts=delivery.tries, delivery=delivery)
                return
        await self._dead_letter(key, event, task, delivery)

    async def _dead_letter(self, key: Key, event: Event, task: TaskView, delivery: Delivery) -> None:
        """Past its bounds, the event goes to the dead-letter exchange, and the task settles.
        If that fails too, it is tried again like any event; past event_drop_after_seconds the
        event is written to the log (in full) and a Kubernetes Event, and the task settles."""
        now = self.clock.now()
        delivery.dead_letter = delivery.dead_letter or delivery.past_bound(self.bounds, now)
        try:
            where = await self.sink.dead_letter(event, task, dl.headers(event, delivery, now))
        except Exception as exc:  # noqa: BLE001 - counted, tried again, bounded by the drop
            reason = dl.classify(exc)
            DEAD_LETTER_FAILURES.labels(reason).inc()
            error = self._without_secrets(f"dead-letter exchange: {type(exc).__name__}: {exc}")
            if not delivery.past_drop(self.bounds, now):
                first = "deadLetter" not in (task.status.get("event") or {})
                delivery.tries += 1
                delivery.failures += 1
                delivery.error = error
                await self._failed(key, event, delivery, now, dead_letter=True, force=first)
                return
            EVENTS_DROPPED.labels(delivery.reason or dl.FAILED).inc()
            LOG.error("event %s %s: neither its exchange nor the dead-letter exchange took it (%s; %s); it is "
                      "dropped, here in full: %s", event.routing_key, event.message_id, delivery.dead_letter,
                      error, json.dumps(event.body, separators=(",", ":")))
            await self._post_dropped(event, task, delivery)
            self.backoff.pop(key, None)
            await self._record(key, event, confirmed=True, attempts=delivery.tries,
                               dead_letter=dl.record(delivery, now, logged=True))
            return
        DEAD_LETTERED.labels(delivery.reason or dl.FAILED).inc()
        LOG.warning("event %s %s dead-lettered%s: %s", event.routing_key, event.message_id,
                    f" to the exchange {where}" if where else " to this log", delivery.dead_letter)
        self.backoff.pop(key, None)
        await self._record(key, event, confirmed=True, attempts=delivery.tries,
                           dead_letter=dl.record(delivery, now, exchange=where, logged=not where))

    async def _failed(self, key: Key, event: Event, delivery: Delivery, now: dt.datetime,
                      dead_letter: bool = False, force: bool = False) -> None:
        """Schedule the next try; write the state into the status only when the last write is
        old enough (or `force`: it has just turned to the dead-letter path)."""
        # The exponent is capped: past any sensible maximum, and 2 ** 1100 would overflow a float.
        delay = min(0.5 * 2 ** min(max(delivery.failures, 1) - 1, 30), self.settings.event_retry_max_seconds)
        delivery.due = self.clock.time() + delay
        self.backoff[key] = delivery
        LOG.warning("event %s not confirmed (%s: %s); try %d again in %.1fs", event.message_id, delivery.reason,
                    delivery.error, delivery.tries, delay)
        try:
            if force or delivery.write_due(self.bounds, now):
                record = dl.record(delivery, now) if dead_letter else None
                if await self._record(key, event, confirmed=False, error=delivery.error[:500], delay=delay,
                                      attempts=delivery.tries, delivery=delivery, dead_letter=record):
                    delivery.written = now
        finally:
            self.pending.discard(key)
            self.clock.call_later(delay, self._retry, key, delivery, delivery.due)

    async def _post_dropped(self, event: Event, task: TaskView, delivery: Delivery) -> None:
        """A Kubernetes Event on the task, so that `kubectl describe` says what became of it."""
        try:
            await LogSink(self.kube).send(event, task)
        except Exception as exc:  # noqa: BLE001 - the operator log has it in full
            LOG.warning("event %s: could not post it as a Kubernetes Event: %s", event.message_id, exc)

    async def _record(self, key: Key, event: Event, confirmed: bool, error: str | None = None,
                      delay: float = 0, attempts: int = 1, delivery: Delivery | None = None,
                      dead_letter: dict[str, Any] | None = None) -> bool:
        """Write the delivery state into the LimeTask's status (the outbox); False when the
        task no longer owes it."""
        now = self.clock.now()
        for _ in range(3):
            task = self.tasks.get(key)
            if task is None or not owes_event(task):
                return False
            record = delivery_record(event, self.sink.name, attempts, confirmed, now, error, delay,
                                     delivery=delivery, dead_letter=dead_letter)
            status = {**task.status, "event": record}
            self.caches.writing(task, status)
            try:
                updated = await self.kube.request("PUT", task_path(task.namespace, task.name, "status"),
                                                  task.with_status(status))
            except KubeError as exc:
                if exc.status == 404:
                    return False
                if exc.status != 409:
                    raise
                fresh = await self.kube.get(task_path(task.namespace, task.name))
                if fresh is None:
                    return False
                self.caches.put_task(fresh, listed=True)
                continue
            self.caches.put_task(updated, written=True)
            return True
        return False
