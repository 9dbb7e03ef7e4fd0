"""The event dispatcher against a fake API and a broker that is down: retries follow the backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiormq.exceptions import ChannelInvalidStateError, ChannelPreconditionFailed
from limetask_operator.caches import Caches
from limetask_operator.events import BrokerSink, Event, EventDispatcher, build_event
from limetask_operator.model import TaskView
from limetask_operator.settings import OperatorSettings

KEY = ("ns", "t1")


def finished_task(name: str = "t1", uid: str = "uid-1") -> dict[str, Any]:
    return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1"},
            "spec": {"app": "acme", "task": "acme.add", "args": [1, 2]},
            "status": {"state": "SUCCESS", "result": 3, "attempts": 1, "completedAt": "2024-01-01T00:00:00Z"}}


class FailingSink:
    """A broker that never confirms."""

    name = "broker"

    def __init__(self) -> None:
        self.sends = 0

    async def send(self, event: Event, task: TaskView) -> None:
        self.sends += 1
        raise ConnectionError("the broker is unreachable")

    async def close(self) -> None:
        return None


class FlakySink(FailingSink):
    """Fails `failures` times, then confirms."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def send(self, event: Event, task: TaskView) -> None:
        self.sends += 1
        if self.sends <= self.failures:
            raise ConnectionError("the broker is unreachable")


class EchoingKube:
    """Accepts every status PUT; its watch echoes each write back to the dispatcher at once,
    as the operator's LimeTask watch does (the reconciler then submits the task again)."""

    def __init__(self, caches: Caches) -> None:
        self.caches = caches
        self.dispatcher: EventDispatcher | None = None
        self.status_writes = 0
        self.version = 1

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        assert method == "PUT" and path.endswith("/status"), (method, path)
        self.status_writes += 1
        self.version += 1
        meta = body["metadata"]
        stored = finished_task(meta["name"], meta["uid"])
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["status"] = body["status"]
        asyncio.get_running_loop().call_soon(self.echo, stored)
        return stored

    def echo(self, body: dict[str, Any]) -> None:
        view = self.caches.put_task(body)
        assert self.dispatcher is not None
        if view.trusted and not view.settled:
            self.dispatcher.submit((view.namespace, view.name))

    async def get(self, path: str) -> None:
        return None


def dispatcher_with(sink: Any, max_delay: float = 60) -> tuple[EventDispatcher, EchoingKube, Caches]:
    caches = Caches()
    kube = EchoingKube(caches)
    settings = OperatorSettings(event_retry_max_seconds=max_delay)
    dispatcher = EventDispatcher(kube, settings, caches, workers=2)  # type: ignore[arg-type]
    dispatcher.sink = sink
    kube.dispatcher = dispatcher
    caches.put_task(finished_task(), written=True)
    return dispatcher, kube, caches


def test_failed_publishes_follow_the_backoff_and_their_status_is_written_once() -> None:
    sink = FailingSink()

    async def main() -> tuple[EventDispatcher, EchoingKube]:
        dispatcher, kube, _ = dispatcher_with(sink)
        dispatcher.start()
        dispatcher.submit(KEY)
        await asyncio.sleep(3.0)
        await dispatcher.stop()
        return dispatcher, kube

    dispatcher, kube = asyncio.run(main())
    # Tries at 0, 0.5, 1.5 and 3.5 s (base 0.5 s, doubling): three within 3 s, one spare.
    assert 2 <= sink.sends <= 4, sink.sends
    # The task finished long ago: its first failure is written at once, the next ones wait for
    # LIMETASK_EVENT_STATUS_WRITE_SECONDS (test_event_bounds.py counts them over a day).
    assert kube.status_writes == 1, kube.status_writes


def test_submit_before_the_next_try_is_due_does_not_publish() -> None:
    sink = FailingSink()

    async def main() -> int:
        dispatcher, _, _ = dispatcher_with(sink)
        dispatcher.start()
        dispatcher.submit(KEY)
        while sink.sends == 0:  # the first try
            await asyncio.sleep(0.01)
        for _ in range(50):  # well within the 0.5 s to the next try, however busy the machine
            dispatcher.submit(KEY)
            await asyncio.sleep(0)
        sends = sink.sends
        await dispatcher.stop()
        return sends

    assert asyncio.run(main()) == 1


def test_the_retry_delay_is_capped_by_the_setting() -> None:
    sink = FailingSink()

    async def main() -> None:
        dispatcher, _, _ = dispatcher_with(sink, max_delay=0.2)
        dispatcher.start()
        dispatcher.submit(KEY)
        await asyncio.sleep(1.05)
        await dispatcher.stop()

    asyncio.run(main())
    # 0 s, then every 0.2 s at most: about six tries in a second, never a storm.
    assert 4 <= sink.sends <= 7, sink.sends


def test_success_and_deleted_tasks_leave_no_backoff_behind() -> None:
    async def main() -> None:
        sink = FlakySink(failures=2)
        dispatcher, kube, caches = dispatcher_with(sink)
        dispatcher.start()
        dispatcher.submit(KEY)
        await asyncio.sleep(2.0)  # fails at 0 and 0.5 s, confirmed at 1.5 s
        assert sink.sends == 3
        assert caches.tasks[KEY].settled
        assert dispatcher.backoff == {} and dispatcher.pending == set()

        caches.put_task(finished_task("t2", "uid-2"), written=True)
        sink.failures, sink.sends = 10**6, 0
        dispatcher.submit(("ns", "t2"))
        await asyncio.sleep(0.1)
        assert set(dispatcher.backoff) == {("ns", "t2")}
        caches.drop_task(("ns", "t2"))  # deleted while it waits for its next try
        await asyncio.sleep(0.6)
        assert dispatcher.backoff == {} and dispatcher.pending == set()
        assert sink.sends == 1
        await dispatcher.stop()

    asyncio.run(main())


def test_a_new_task_of_the_same_name_is_not_held_back_by_the_old_ones_backoff() -> None:
    async def main() -> None:
        sink = FailingSink()
        dispatcher, _, caches = dispatcher_with(sink)
        dispatcher.start()
        dispatcher.submit(KEY)
        await asyncio.sleep(0.1)
        caches.drop_task(KEY)
        caches.put_task(finished_task(uid="uid-again"), written=True)
        dispatcher.submit(KEY)
        await asyncio.sleep(0.1)
        assert sink.sends == 2
        await dispatcher.stop()

    asyncio.run(main())


class OpenChannel:
    is_closed = False


def test_inline_publishing_respects_a_task_backing_off() -> None:
    async def main() -> None:
        dispatcher, _, caches = dispatcher_with(FailingSink())
        broker = BrokerSink("amqp://guest:guest@127.0.0.1:1/", timeout=1)
        broker.connection = OpenChannel()
        sent: list[str] = []

        async def send(event: Event, task: TaskView) -> None:
            sent.append(event.message_id)

        broker.send = send  # type: ignore[method-assign]
        task = caches.tasks[KEY]
        dispatcher.sink = broker
        assert await dispatcher.publish_inline(task, task.status) is not None  # the broker answers
        assert sent == ["uid-1.SUCCESS"]

        dispatcher.sink = FailingSink()
        dispatcher.start()
        dispatcher.submit(KEY)
        await asyncio.sleep(0.1)
        assert KEY in dispatcher.backoff
        dispatcher.sink = broker  # the broker answers again, but this task's next try is not due
        assert await dispatcher.publish_inline(caches.tasks[KEY], caches.tasks[KEY].status) is None
        assert sent == ["uid-1.SUCCESS"]
        await dispatcher.stop()

    asyncio.run(main())


class ConfirmingConnection:
    """A broker connection whose publishes confirm after a moment, and fail with it once it is
    closed (as aiormq's do: every confirm in flight on a closed connection raises)."""

    opened = 0

    def __init__(self, fail_first: bool) -> None:
        ConfirmingConnection.opened += 1
        self.closed = asyncio.Event()
        self.fail_first = fail_first
        self.is_closed = False
        self.in_flight = 0

    async def channel(self, **_: Any) -> "ConfirmingConnection":
        return self

    async def declare_exchange(self, *_: Any, **__: Any) -> "ConfirmingConnection":
        return self

    async def publish(self, *_: Any, **__: Any) -> None:
        if self.fail_first:
            self.fail_first = False
            await asyncio.sleep(0.01)
            raise asyncio.TimeoutError("no confirm in time")
        self.in_flight += 1
        done = asyncio.ensure_future(self.closed.wait())
        finished, _ = await asyncio.wait([done], timeout=0.05)
        if finished:
            # The failures of a closed connection's publishes come over a while, not at once.
            await asyncio.sleep(0.002 * self.in_flight)
            raise ConnectionError("connection closed")
        done.cancel()

    async def close(self) -> None:
        self.is_closed = True
        self.closed.set()


def test_one_failed_publish_drops_only_its_own_connection(monkeypatch: Any) -> None:
    """Many events in flight and one publish failing: the connection it rode on is dropped (the
    others on it fail with it), and the connection opened after that serves every later event.
    Each failure used to close whatever connection was current, so a failure went on making
    failures: no connection lived long enough to confirm, long after the broker was back."""
    import aio_pika

    first = [True]

    async def connect(url: str, timeout: float) -> ConfirmingConnection:
        fail, first[0] = first[0], False
        return ConfirmingConnection(fail_first=fail)

    monkeypatch.setattr(aio_pika, "connect", connect)
    ConfirmingConnection.opened = 0
    task = TaskView.from_body(finished_task())

    async def main() -> list[bool]:
        broker = BrokerSink("amqp://guest:guest@127.0.0.1:1/", timeout=1)
        outcomes: list[bool] = []

        async def one(i: int) -> None:
            await asyncio.sleep(i * 0.005)  # a steady stream, as events come while tasks end
            try:
                await broker.send(build_event(task, "lime.{app}"), task)
                outcomes.append(True)
            except Exception:  # noqa: BLE001 - counted
                outcomes.append(False)

        await asyncio.gather(*(one(i) for i in range(200)))
        return outcomes

    outcomes = asyncio.run(main())
    assert ConfirmingConnection.opened == 2
    # Only the publishes in flight on the first connection when it failed fail (the failure comes
    # 10 ms in, a confirm takes 50 ms: at most a dozen); every later one is confirmed.
    assert outcomes.count(False) <= 13
    assert all(outcomes[20:])


class Channel:
    """A channel of a fake broker: an exchange declared as another type closes it (as RabbitMQ
    does, PRECONDITION_FAILED), failing every publish in flight on it."""

    def __init__(self, broken: set[str], dead: bool = False) -> None:
        self.broken = broken
        self.dead = dead  # its connection is gone, and nobody has said so: nothing is confirmed
        self.is_closed = False
        self.name = ""
        self.published: list[str] = []

    async def declare_exchange(self, name: str, *_: Any, **__: Any) -> "Channel":
        await asyncio.sleep(0.001)
        if name in self.broken:
            self.is_closed = True
            raise ChannelPreconditionFailed(f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}'")
        self.name = name
        return self

    async def publish(self, message: Any, routing_key: str, **_: Any) -> None:
        await asyncio.sleep(60 if self.dead else 0.005)
        if self.is_closed:
            raise ChannelInvalidStateError("channel closed by another operation's error")
        self.published.append(self.name)

    async def close(self) -> None:
        self.is_closed = True


class Connection:
    def __init__(self, broken: set[str], dead: bool = False) -> None:
        self.broken = broken
        self.dead = dead
        self.is_closed = False
        self.channels: list[Channel] = []

    async def channel(self, **_: Any) -> Channel:
        self.channels.append(Channel(self.broken, self.dead))
        return self.channels[-1]

    async def close(self) -> None:
        self.is_closed = True


def test_an_exchange_that_refuses_fails_only_its_own_applications_events(monkeypatch: Any) -> None:
    """One application's exchange cannot be declared (another type): its events fail, every time,
    while the other applications' events go on being confirmed on channels of their own, and
    none of them is failed with its error."""
    import aio_pika

    connections: list[Connection] = []

    async def connect(url: str, timeout: float) -> Connection:
        connections.append(Connection({"lime.hostile"}))
        return connections[-1]

    monkeypatch.setattr(aio_pika, "connect", connect)

    def task_of(app: str, i: int) -> TaskView:
        body = finished_task(name=f"t{i}", uid=f"uid-{app}-{i}")
        body["spec"]["app"] = app
        return TaskView.from_body(body)

    async def main() -> dict[str, list[bool]]:
        broker = BrokerSink("amqp://guest:guest@127.0.0.1:1/", timeout=1)
        outcomes: dict[str, list[bool]] = {"good": [], "hostile": []}

        async def one(app: str, i: int) -> None:
            await asyncio.sleep(i * 0.002)
            task = task_of(app, i)
            try:
                await broker.send(build_event(task, "lime.{app}"), task)
                outcomes[app].append(True)
            except Exception:  # noqa: BLE001 - counted
                outcomes[app].append(False)

        await asyncio.gather(*(one(app, i) for i in range(100) for app in ("good", "hostile")))
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes["good"] == [True] * 100
    assert outcomes["hostile"] == [False] * 100
    assert len(connections) == 1 and not connections[0].is_closed
    good = [c for c in connections[0].channels if c.name == "lime.good"]
    assert len(good) == 1 and len(good[0].published) == 100


class SayingOpenConnection(Connection):
    """A connection that was lost while it still says it is open, and refuses a new channel (as
    aio-pika's does, with a RuntimeError)."""

    async def channel(self, **_: Any) -> Channel:
        raise RuntimeError(f"<Connection: {id(self)}> closed")


@pytest.mark.parametrize("lost", [
    lambda: Connection(set(), dead=True),  # died without closing (a cut network): publishes time out
    lambda: SayingOpenConnection(set()),  # says it is open, and refuses a channel
], ids=["publishes-time-out", "refuses-channels"])
def test_a_connection_gone_without_a_word_is_dropped(monkeypatch: Any, lost: Callable[[], Connection]) -> None:
    """A connection that is gone while nobody said so is dropped after the first publish fails on
    it, not only the exchange's channel, and the next publish goes over a new connection."""
    import aio_pika

    connections: list[Connection] = []

    async def connect(url: str, timeout: float) -> Connection:
        connections.append(lost() if not connections else Connection(set()))
        return connections[-1]

    monkeypatch.setattr(aio_pika, "connect", connect)
    task = TaskView.from_body(finished_task())

    async def main() -> list[bool]:
        broker = BrokerSink("amqp://guest:guest@127.0.0.1:1/", timeout=0.05)
        outcomes = []
        for _ in range(3):
            try:
                await broker.send(build_event(task, "lime.{app}"), task)
                outcomes.append(True)
            except Exception:  # noqa: BLE001 - counted
                outcomes.append(False)
        return outcomes

    assert asyncio.run(main()) == [False, True, True]
    assert len(connections) == 2 and connections[0].is_closed
