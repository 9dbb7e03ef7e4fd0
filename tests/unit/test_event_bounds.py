"""Bounds on undeliverable completion events (dead_letter.py, applied by the dispatcher).

Days of broker outage run on a fake clock: the dispatcher's timers fire when the test moves the
clock on, so nothing here waits, and the counts are exact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
from typing import Any

import pytest
from aiormq import exceptions as amqp
from limetask_operator import dead_letter as dl
from limetask_operator.caches import Caches
from limetask_operator.events import Event, EventDispatcher, LogSink
from limetask_operator.model import TaskView
from limetask_operator.settings import OperatorSettings, SettingsError
from prometheus_client import REGISTRY

KEY = ("ns", "t1")
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
HOUR = 3600.0


class FakeClock:
    """Event-loop time, wall time and timers that only move when the test says so."""

    def __init__(self) -> None:
        self.t = 0.0
        self.timers: list[tuple[float, int, Any, tuple[Any, ...]]] = []
        self.seq = itertools.count()

    def time(self) -> float:
        return self.t

    def now(self) -> dt.datetime:
        return START + dt.timedelta(seconds=self.t)

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        heapq.heappush(self.timers, (self.t + delay, next(self.seq), callback, args))

    def fire_next(self) -> None:
        due, _, callback, args = heapq.heappop(self.timers)
        self.t = max(self.t, due)
        callback(*args)


def finished_task(name: str = "t1", uid: str = "uid-1") -> dict[str, Any]:
    return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1"},
            "spec": {"app": "acme", "task": "acme.add", "args": [1, 2]},
            "status": {"state": "SUCCESS", "result": 3, "attempts": 1,
                       "completedAt": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "event": {"messageId": "uid-1.SUCCESS", "routingKey": "core.task.acme.add.success.v1",
                                 "confirmed": False}}}


class StoringKube:
    """Stores each status PUT and echoes it to the dispatcher as the LimeTask watch would."""

    def __init__(self) -> None:
        self.stored = finished_task()
        self.caches: Caches | None = None
        self.dispatcher: EventDispatcher | None = None
        self.status_writes = 0
        self.posted: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        assert method == "PUT" and path.endswith("/status"), (method, path)
        self.status_writes += 1
        self.stored = {**self.stored, "status": body["status"],
                       "metadata": {**self.stored["metadata"],
                                    "resourceVersion": str(int(self.stored["metadata"]["resourceVersion"]) + 1)}}
        asyncio.get_running_loop().call_soon(self.echo, self.stored)
        return self.stored

    def echo(self, body: dict[str, Any]) -> None:
        assert self.caches is not None and self.dispatcher is not None
        view = self.caches.put_task(body)
        if view.trusted and not view.settled:
            self.dispatcher.submit((view.namespace, view.name))

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.posted.append(body)
        return body

    async def get(self, path: str) -> None:
        return None


class Broker:
    """A sink whose exchange and dead-letter exchange fail as told (None: they take the event)."""

    name = "broker"

    def __init__(self, send_error: BaseException | None, dead_letter_error: BaseException | None = None) -> None:
        self.send_error = send_error
        self.dead_letter_error = dead_letter_error
        self.sends = 0
        self.dead_letter_tries = 0
        self.dead_lettered: list[tuple[Event, dict[str, Any]]] = []

    async def send(self, event: Event, task: TaskView) -> None:
        self.sends += 1
        if self.send_error is not None:
            raise self.send_error

    async def dead_letter(self, event: Event, task: TaskView, headers: dict[str, Any]) -> str:
        self.dead_letter_tries += 1
        if self.dead_letter_error is not None:
            raise self.dead_letter_error
        self.dead_lettered.append((event, headers))
        return "limetask.dead-letter"

    async def close(self) -> None:
        return None


def operator(kube: StoringKube, sink: Any, clock: FakeClock, **settings: Any) -> tuple[EventDispatcher, Caches]:
    """An operator that has just started: it finds the task as stored."""
    caches = Caches()
    caches.put_task(kube.stored, listed=True)
    dispatcher = EventDispatcher(kube, OperatorSettings(**settings), caches, clock=clock)  # type: ignore[arg-type]
    dispatcher.sink = sink
    kube.caches, kube.dispatcher = caches, dispatcher
    return dispatcher, caches


async def run_until(dispatcher: EventDispatcher, clock: FakeClock, until: float) -> None:
    """Deliver what is queued, fire the next timer, and so on until `until` (fake seconds)."""
    dispatcher.submit(KEY)
    while True:
        await asyncio.sleep(0)  # the watch's echoes of status writes
        while not dispatcher.work.empty():
            await dispatcher.deliver_next()
            await asyncio.sleep(0)
        if not clock.timers or clock.timers[0][0] > until:
            return
        clock.fire_next()


def counter(name: str, reason: str) -> float:
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


def test_a_long_outage_writes_the_status_at_the_bounded_rate_not_per_try() -> None:
    async def main() -> None:
        clock, kube, sink = FakeClock(), StoringKube(), Broker(ConnectionError("connection refused"))
        dispatcher, caches = operator(kube, sink, clock)
        await run_until(dispatcher, clock, 12 * HOUR)
        # Tries follow the backoff (at most a minute apart): some 720 in 12 hours.
        assert sink.sends >= 12 * 60
        # One write per LIMETASK_EVENT_STATUS_WRITE_SECONDS (300): 144 in 12 hours (the fake clock
        # makes it exact to a write at either end), where every try used to write one (~720) and
        # a state written once and never again would leave a restarted operator at its start.
        assert 12 * HOUR / 300 - 2 <= kube.status_writes <= 12 * HOUR / 300
        event = caches.tasks[KEY].status["event"]
        assert event["confirmed"] is False and event["lastReason"] == "Unreachable"
        assert event["firstFailedAt"] == "2026-03-01T12:00:00Z"
        assert event["deliveryAttempts"] > sink.sends - 300 / 60 - 1  # the count is at most one interval behind
        assert sink.dead_letter_tries == 0  # not yet: the bound is a day

        sink.send_error = None  # the broker is back
        await run_until(dispatcher, clock, 13 * HOUR)
        assert caches.tasks[KEY].settled
        event = kube.stored["status"]["event"]
        assert event["confirmed"] is True and event["deliveryAttempts"] == sink.sends
        assert "deadLetter" not in event and dispatcher.backoff == {}

    asyncio.run(main())


def test_a_restarted_operator_resumes_the_count_and_dead_letters_a_day_after_the_first_failure() -> None:
    async def main() -> None:
        clock, kube, sink = FakeClock(), StoringKube(), Broker(ConnectionError("connection refused"))
        dispatcher, _ = operator(kube, sink, clock)
        await run_until(dispatcher, clock, 20 * HOUR)
        tries_before = sink.sends
        clock.timers.clear()  # the operator is gone, its timers with it

        clock.t += HOUR  # down for an hour
        restarted, caches = operator(kube, sink, clock)
        await run_until(restarted, clock, 22 * HOUR)
        assert sink.dead_letter_tries == 0  # 22 h after the first failure: still tried

        await run_until(restarted, clock, 25 * HOUR)
        assert len(sink.dead_lettered) == 1
        event, headers = sink.dead_lettered[0]
        assert clock.t <= 24 * HOUR + 60  # the day counts from the first failure, not the restart
        assert event.routing_key == "core.task.acme.add.success.v1" and event.body["state"] == "SUCCESS"
        assert headers["x-limetask-reason"] == "Unreachable"
        assert headers["x-limetask-first-failed-at"] == "2026-03-01T12:00:00Z"
        assert headers["x-limetask-exchange"] == "lime.acme"
        assert "24 h" in headers["x-limetask-why"]
        # What was not yet written when the operator went is lost: at most one interval's tries.
        assert headers["x-limetask-tries"] >= tries_before - 300 / 60 - 1
        task = caches.tasks[KEY]
        assert task.settled  # archive and retention may proceed
        record = kube.stored["status"]["event"]
        assert record["confirmed"] is True
        assert record["deadLetter"]["exchange"] == "limetask.dead-letter"
        assert record["deadLetter"]["reason"] == "Unreachable" and record["deadLetter"]["at"]

    asyncio.run(main())


@pytest.mark.parametrize("error, reason", [
    (amqp.ChannelNotFoundEntity(404, "NOT_FOUND - no exchange 'lime.acme' in vhost '/'"), "ExchangeMissing"),
    (amqp.ChannelAccessRefused(403, "ACCESS_REFUSED - write access to exchange 'lime.acme' refused"), "Refused"),
    (amqp.ChannelPreconditionFailed(406, "PRECONDITION_FAILED - inequivalent arg 'type'"), "Refused"),
])
def test_an_exchange_that_refuses_every_event_does_not_keep_its_tasks(error: BaseException, reason: str) -> None:
    async def main() -> None:
        clock, kube, sink = FakeClock(), StoringKube(), Broker(error)
        dispatcher, caches = operator(kube, sink, clock)
        before = counter("limetask_events_dead_lettered_total", reason)
        await run_until(dispatcher, clock, 2 * HOUR)
        assert sink.sends == 30  # LIMETASK_EVENT_DEAD_LETTER_AFTER_REFUSALS
        assert clock.t < HOUR  # about half an hour of backoff, not a day
        [(_, headers)] = sink.dead_lettered
        assert headers["x-limetask-reason"] == reason and headers["x-limetask-refusals"] == 30
        assert "refused by the broker 30 times" in headers["x-limetask-why"]
        assert caches.tasks[KEY].settled
        assert counter("limetask_events_dead_lettered_total", reason) == before + 1
        assert dispatcher.backoff == {}

    asyncio.run(main())


def test_when_even_the_dead_letter_exchange_fails_it_is_tried_at_the_bounded_rate_then_logged() -> None:
    async def main() -> None:
        clock, kube = FakeClock(), StoringKube()
        sink = Broker(ConnectionError("connection refused"), dead_letter_error=ConnectionError("connection refused"))
        dispatcher, caches = operator(kube, sink, clock)
        failures = counter("limetask_events_dead_letter_failures_total", "Unreachable")
        dropped = counter("limetask_events_dropped_total", "Unreachable")
        await run_until(dispatcher, clock, 24 * HOUR + 300)
        writes = kube.status_writes
        record = kube.stored["status"]["event"]
        assert record["confirmed"] is False and record["deadLetter"]["message"]  # written at the turn
        assert "at" not in record["deadLetter"]

        await run_until(dispatcher, clock, 7 * 24 * HOUR - 60)
        assert not caches.tasks[KEY].settled
        assert sink.dead_letter_tries > 6 * 24 * 60 - 10  # still tried, once a minute
        assert kube.status_writes - writes <= 6 * 24 * 12 + 1  # and still written once per 5 minutes
        assert counter("limetask_events_dead_letter_failures_total", "Unreachable") - failures == \
            sink.dead_letter_tries

        await run_until(dispatcher, clock, 7 * 24 * HOUR + 120)
        assert caches.tasks[KEY].settled
        record = kube.stored["status"]["event"]
        assert record["confirmed"] is True and record["deadLetter"]["logged"] is True
        assert "exchange" not in record["deadLetter"]
        assert counter("limetask_events_dropped_total", "Unreachable") == dropped + 1
        [posted] = kube.posted  # and `kubectl describe lt` says so
        assert posted["involvedObject"]["uid"] == "uid-1"
        assert sink.dead_lettered == []

    asyncio.run(main())


class RefusingKube(StoringKube):
    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise PermissionError("events is forbidden")


def test_without_a_broker_the_log_is_the_dead_letter_path() -> None:
    async def main() -> None:
        clock, kube = FakeClock(), RefusingKube()
        dispatcher, caches = operator(kube, None, clock, event_dead_letter_after_seconds=HOUR)
        dispatcher.sink = LogSink(kube)  # type: ignore[arg-type]
        await run_until(dispatcher, clock, 2 * HOUR)
        assert caches.tasks[KEY].settled
        dead = kube.stored["status"]["event"]["deadLetter"]
        assert dead["logged"] is True and dead["reason"] == "Failed" and "1 h" in dead["message"]

    asyncio.run(main())


def test_the_reasons_of_failed_tries() -> None:
    assert dl.classify(asyncio.TimeoutError()) == "TimedOut"
    assert dl.classify(ConnectionRefusedError()) == "Unreachable"
    assert dl.classify(amqp.AMQPConnectionError("closed")) == "Unreachable"
    assert dl.classify(amqp.ChannelNotFoundEntity(404, "NOT_FOUND")) == "ExchangeMissing"
    assert dl.classify(amqp.ChannelAccessRefused(403, "ACCESS_REFUSED")) == "Refused"
    assert dl.classify(amqp.ChannelClosed(320, "CONNECTION_FORCED")) == "Failed"  # not a refusal
    assert dl.classify(ValueError("odd")) == "Failed"


def test_the_drop_bound_may_not_come_before_the_dead_letter_bound() -> None:
    with pytest.raises(SettingsError, match="LIMETASK_EVENT_DROP_AFTER_SECONDS: 60 s is shorter"):
        OperatorSettings.from_env({"LIMETASK_EVENT_DROP_AFTER_SECONDS": "60"})
    settings = OperatorSettings.from_env({})
    assert settings.event_dead_letter_after_seconds == 24 * HOUR and settings.retention_seconds == 24 * HOUR
