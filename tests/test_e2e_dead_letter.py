"""Undeliverable completion events on the real cluster and RabbitMQ: a task whose application
exchange can never take its event ends up in the installation's dead-letter queue with the
reason, and the task settles (the session operator dead-letters after 3 refusals, conftest)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import pytest
from conftest import Cluster, broker_url, wait_until

from lime_task import SUCCESS, TaskClient

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

T = "acme_solution.tasks.lime"
DEAD_LETTER = "limetask.dead-letter"  # the chart's default events.deadLetter.exchange


async def refuse_events_of(app: str, queue: str) -> None:
    connection = await aio_pika.connect(broker_url())
    async with connection:
        channel = await connection.channel()
        # Someone made the application's exchange a fanout: the operator's topic declaration is
        # refused (406 PRECONDITION_FAILED) at every try.
        await channel.declare_exchange(f"lime.{app}", aio_pika.ExchangeType.FANOUT, durable=True)
        dead = await channel.declare_exchange(DEAD_LETTER, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await channel.declare_queue(queue, durable=False, auto_delete=False)
        await q.bind(dead, routing_key="#")


async def dead_letters_of(app: str, queue: str) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    connection = await aio_pika.connect(broker_url())
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=False, auto_delete=False)
        found = []
        while (message := await q.get(fail=False, no_ack=True)) is not None:
            body = json.loads(message.body)
            if body.get("app") == app:
                found.append((body, dict(message.headers), str(message.routing_key)))
        return found


async def remove_exchange_and_queue(app: str, queue: str) -> None:
    connection = await aio_pika.connect(broker_url())
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(f"lime.{app}")


def test_an_event_no_exchange_takes_goes_to_the_dead_letter_queue_and_the_task_settles(
        tasks: TaskClient, cluster: Cluster, namespace: str) -> None:
    app = f"app-{uuid.uuid4().hex[:10]}"
    queue = f"dead-letters-{app}"
    asyncio.run(refuse_events_of(app, queue))
    try:
        sent = tasks.send(f"{T}.add", app, [2, 3])
        assert tasks.wait(sent.id, app, timeout=120).status == SUCCESS
        found: list[Any] = []

        def arrived() -> bool:
            found.extend(asyncio.run(dead_letters_of(app, queue)))
            return bool(found)

        wait_until(arrived, timeout=90, interval=1, message="the event in the dead-letter queue")
        body, headers, routing_key = found[0]
        assert body["id"] == sent.id and body["state"] == "SUCCESS" and body["result"] == 5
        assert routing_key == f"core.task.{T}.add.success.v1"
        assert headers["x-limetask-reason"] == "Refused"
        assert headers["x-limetask-exchange"] == f"lime.{app}"
        assert headers["x-limetask-refusals"] == 3
        assert "PRECONDITION_FAILED" in str(headers["x-limetask-last-error"])

        def settled() -> Any:
            raw = cluster.run_kubectl("get", "lt", sent.id, "-o", "jsonpath={.status.event}",
                                      namespace=namespace).stdout
            event = json.loads(raw) if raw else {}
            return event.get("confirmed") and event

        event = wait_until(settled, timeout=30, message="the task settled")
        assert event["deadLetter"]["exchange"] == DEAD_LETTER and event["deadLetter"]["reason"] == "Refused"
        assert event["deadLetter"]["at"]
    finally:
        asyncio.run(remove_exchange_and_queue(app, queue))
