"""The dead-letter path on the real RabbitMQ (devtools/broker-up.sh), no cluster: the operator's
event dispatcher, with its real BrokerSink, against an application exchange that can never be
published to. The task's status lives in a stand-in for the API server (as in the unit tests);
tests/test_e2e_events.py does the same through a real operator and cluster."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import pytest
from conftest import BROKER_HOST, BROKER_PORT, broker_url
from limetask_operator.caches import Caches
from limetask_operator.events import BrokerSink, EventDispatcher
from limetask_operator.settings import OperatorSettings

from tests.unit.test_event_bounds import KEY, FakeClock, StoringKube, run_until

pytestmark = [pytest.mark.broker]


@pytest.fixture(autouse=True)
def broker_answers() -> None:
    import socket

    try:
        socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=3).close()
    except OSError:
        pytest.fail(f"RabbitMQ does not answer on {BROKER_HOST}:{BROKER_PORT}: run `make broker-up`")


async def declare(name: str, kind: aio_pika.ExchangeType) -> None:
    connection = await aio_pika.connect(broker_url())
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(name, kind, durable=False, auto_delete=False)


async def dead_letters(dlx: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(broker_url())
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        found = []
        while (message := await q.get(fail=False, no_ack=True)) is not None:
            found.append(message)
        await q.delete(if_unused=False, if_empty=False)
        await channel.exchange_delete(dlx)
        return found


def test_an_exchange_of_another_type_sends_the_event_to_the_dead_letter_queue_and_the_task_settles() -> None:
    run = uuid.uuid4().hex[:8]
    app, dlx, queue = f"acme-{run}", f"limetask.dead-letter.test-{run}", f"limetask.dead-letter.test-{run}"

    async def main() -> tuple[StoringKube, list[Any], int]:
        # Someone made the application's exchange a fanout: the operator's topic declaration is
        # refused with 406 PRECONDITION_FAILED, at every try.
        await declare(f"lime.{app}", aio_pika.ExchangeType.FANOUT)
        settings = OperatorSettings(broker_url=broker_url(), event_retry_max_seconds=1, broker_publish_timeout=5,
                                    event_dead_letter_after_refusals=3, event_dead_letter_exchange=dlx,
                                    event_dead_letter_queue=queue)
        clock, kube = FakeClock(), StoringKube()
        kube.stored["spec"]["app"] = app
        caches = Caches()
        caches.put_task(kube.stored, listed=True)
        dispatcher = EventDispatcher(kube, settings, caches, clock=clock)  # type: ignore[arg-type]
        assert isinstance(dispatcher.sink, BrokerSink)
        kube.caches, kube.dispatcher = caches, dispatcher
        try:
            await run_until(dispatcher, clock, 60)
        finally:
            await dispatcher.stop()
            connection = await aio_pika.connect(broker_url())
            async with connection:
                await (await connection.channel()).exchange_delete(f"lime.{app}")
        return kube, await dead_letters(dlx, queue), sum(1 for _ in caches.tasks.values() if _.settled)

    kube, messages, settled = asyncio.run(main())
    assert settled == 1  # the task settles: history and retention go on
    record = kube.stored["status"]["event"]
    assert record["confirmed"] is True
    assert record["deadLetter"]["exchange"] == dlx and record["deadLetter"]["reason"] == "Refused"
    [message] = messages
    assert message.routing_key == "core.task.acme.add.success.v1"
    assert message.message_id == "uid-1.SUCCESS"
    body = json.loads(message.body)
    assert body["app"] == app and body["state"] == "SUCCESS" and body["result"] == 3
    headers = message.headers
    assert headers["x-limetask-reason"] == "Refused"
    assert headers["x-limetask-exchange"] == f"lime.{app}"
    assert headers["x-limetask-tries"] == 3 and headers["x-limetask-refusals"] == 3
    assert "PRECONDITION_FAILED" in str(headers["x-limetask-last-error"])
    assert headers["x-limetask-first-failed-at"] == "2026-03-01T12:00:00Z"


def test_a_dead_letter_exchange_no_queue_takes_from_is_a_failure_until_one_is_bound() -> None:
    """The dead-letter publish is mandatory: with no queue bound, the broker returns the message,
    and the event stays owed (nothing is lost) until a queue is there."""
    from prometheus_client import REGISTRY

    run = uuid.uuid4().hex[:8]
    app, dlx, queue = f"acme-{run}", f"limetask.dead-letter.test-{run}", f"limetask.dead-letter.test-{run}"

    def unroutable() -> float:
        return REGISTRY.get_sample_value("limetask_events_dead_letter_failures_total", {"reason": "Unroutable"}) or 0

    async def main() -> tuple[StoringKube, list[Any], bool, float]:
        await declare(f"lime.{app}", aio_pika.ExchangeType.FANOUT)
        settings = OperatorSettings(broker_url=broker_url(), event_retry_max_seconds=1, broker_publish_timeout=5,
                                    event_dead_letter_after_refusals=2, event_dead_letter_exchange=dlx,
                                    event_dead_letter_queue="")
        clock, kube = FakeClock(), StoringKube()
        kube.stored["spec"]["app"] = app
        caches = Caches()
        caches.put_task(kube.stored, listed=True)
        dispatcher = EventDispatcher(kube, settings, caches, clock=clock)  # type: ignore[arg-type]
        kube.caches, kube.dispatcher = caches, dispatcher
        before = unroutable()
        try:
            await run_until(dispatcher, clock, 10)
            settled_before = caches.tasks[KEY].settled
            failures = unroutable() - before
            connection = await aio_pika.connect(broker_url())
            async with connection:  # someone binds a queue
                channel = await connection.channel()
                q = await channel.declare_queue(queue, durable=True)
                await q.bind(dlx, routing_key="#")
            await run_until(dispatcher, clock, 20)
        finally:
            await dispatcher.stop()
            connection = await aio_pika.connect(broker_url())
            async with connection:
                await (await connection.channel()).exchange_delete(f"lime.{app}")
        assert not settled_before and failures >= 3
        return kube, await dead_letters(dlx, queue), caches.tasks[KEY].settled, failures

    kube, messages, settled, _ = asyncio.run(main())
    assert settled
    [message] = messages
    assert message.headers["x-limetask-reason"] == "Refused" and message.message_id == "uid-1.SUCCESS"
    assert kube.stored["status"]["event"]["deadLetter"]["exchange"] == dlx
