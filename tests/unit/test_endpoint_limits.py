"""What one token may take of the HTTP endpoint (lime_task.server.limits): rates with 429 and
Retry-After, caps on open event streams, bounded pages, and /metrics. The rate limiters' clock is
the test's: nothing here waits or times anything."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lime_task.errors import InvalidTaskError
from lime_task.server.app import create_app
from lime_task.server.dashboard.watch import SUBSCRIBER_BACKLOG, Subscriber
from lime_task.server.limits import Limits, RateLimiter, StreamSlots, TooManyStreams, retry_after, token_key
from tests.unit.fake_api import FakeCustomObjects, fake_client

T = "acme_solution.tasks.lime"
TOKENS = {"app-one": "token-one", "app-two": "token-two"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(app: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[app]}"}


def endpoint(tmp_path: Path, clock: Clock, api: FakeCustomObjects | None = None, **limits: Any) -> TestClient:
    return TestClient(create_app(client=fake_client(tmp_path, api or FakeCustomObjects()), tokens=TOKENS,
                                 imports=[T], limits=Limits(**limits), clock=clock))


# -- the token bucket ---------------------------------------------------------------------------

def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = RateLimiter(rate=2, burst=3, clock=clock)
    assert [bucket.take("a") for _ in range(3)] == [0, 0, 0]
    assert bucket.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take("a") == 0
    assert bucket.take("a") > 0
    clock.now += 100  # idle: full again, never more than the burst
    assert [bucket.take("a") for _ in range(3)] == [0, 0, 0] and bucket.take("a") > 0


def test_buckets_are_per_key_and_bounded_in_number() -> None:
    bucket = RateLimiter(rate=1, burst=1, clock=Clock(), max_keys=100)
    assert bucket.take("a") == 0 and bucket.take("a") > 0
    assert bucket.take("b") == 0
    for n in range(1000):  # a flood of made-up tokens
        bucket.take(f"made-up-{n}")
    assert len(bucket) == 100


def test_a_rate_of_zero_is_no_limit() -> None:
    bucket = RateLimiter(rate=0, burst=1, clock=Clock())
    assert all(bucket.take("a") == 0 for _ in range(1000)) and len(bucket) == 0


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after(s) for s in (0.01, 1.0, 1.2, 59.9)] == ["1", "1", "2", "60"]


def test_token_keys_never_hold_the_token() -> None:
    key = token_key("Bearer secret-token")
    assert "secret" not in key and key == token_key("Bearer   secret-token ") and token_key(None) == ""


def test_limits_from_the_environment() -> None:
    limits = Limits.from_env({"LIMETASK_WEB_WRITES_PER_SECOND": "5.5", "LIMETASK_WEB_WRITE_BURST": "7",
                              "LIMETASK_WEB_STREAMS": "0"})
    assert (limits.writes_per_second, limits.write_burst, limits.streams) == (5.5, 7, 0)
    assert limits.reads_per_second == Limits().reads_per_second
    for bad in ("-1", "many", "1e9", "nan"):
        with pytest.raises(InvalidTaskError, match="LIMETASK_WEB_READS_PER_SECOND"):
            Limits.from_env({"LIMETASK_WEB_READS_PER_SECOND": bad})
    with pytest.raises(InvalidTaskError, match="LIMETASK_WEB_READ_BURST"):
        Limits.from_env({"LIMETASK_WEB_READ_BURST": "2.5"})


# -- 429 at the endpoint ------------------------------------------------------------------------

def test_a_flooding_token_gets_429_while_another_tokens_requests_pass(tmp_path: Path) -> None:
    clock, api = Clock(), FakeCustomObjects()
    http = endpoint(tmp_path, clock, api, writes_per_second=1, write_burst=3)
    body = {"task": f"{T}.add", "args": [1, 2]}
    codes = [http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json=body).status_code
             for _ in range(10)]
    assert codes == [202] * 3 + [429] * 7
    refused = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json=body)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "TooManyRequests" and "writes" in refused.json()["detail"]
    # The other application's token still passes, and the flooding one's reads too.
    assert http.post("/v1/apps/app-two/tasks", headers=bearer("app-two"), json=body).status_code == 202
    assert http.get("/v1/apps/app-one/tasks", headers=bearer("app-one")).status_code == 200
    assert len(api.created) == 4
    clock.now += 1
    assert http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json=body).status_code == 202
    metrics = http.get("/metrics").text
    assert 'limetask_web_rejected_total{reason="writes"} 8.0' in metrics
    assert 'limetask_web_requests_total{method="POST",route="/v1/apps/{app}/tasks",status="429"} 8.0' in metrics


def test_reads_have_their_own_bucket_and_a_long_wait_says_so(tmp_path: Path) -> None:
    http = endpoint(tmp_path, Clock(), reads_per_second=0.1, read_burst=2)
    codes = [http.get("/v1/apps/app-one/tasks", headers=bearer("app-one")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = http.get("/v1/apps/app-one/tasks/x", headers=bearer("app-one"))
    assert refused.headers["retry-after"] == "10" and "reads" in refused.json()["detail"]
    # Cancel is a write: its bucket is still full.
    assert http.post("/v1/apps/app-one/tasks/x/cancel", headers=bearer("app-one")).status_code == 404


def test_health_and_metrics_are_never_limited(tmp_path: Path) -> None:
    http = endpoint(tmp_path, Clock(), reads_per_second=1, read_burst=1)
    assert all(http.get(p).status_code == 200 for p in ("/healthz", "/readyz", "/metrics") for _ in range(5))


# -- open streams -------------------------------------------------------------------------------

def test_stream_slots_per_token_and_in_all() -> None:
    slots = StreamSlots(per_key=2, total=3)
    a1, a2 = slots.take("a"), slots.take("a")
    with pytest.raises(TooManyStreams, match="this token has 2 event streams open") as per:
        slots.take("a")
    assert per.value.reason == "streams_per_token"
    b1 = slots.take("b")
    with pytest.raises(TooManyStreams, match="the endpoint has 3 event streams open") as total:
        slots.take("c")
    assert total.value.reason == "streams" and slots.open() == 3
    a1.release()
    a1.release()  # once only
    assert slots.open() == 2
    del a2
    gc.collect()  # a stream whose body never started gives its place back too
    assert slots.open() == 1
    b1.release()
    assert slots.open() == 0


class Watch:
    """The dashboard's watch, ready and empty."""

    healthy = True

    def rows(self) -> list[dict[str, Any]]:
        return []

    def subscribe(self) -> Subscriber:
        return Subscriber(asyncio.get_running_loop())

    def unsubscribe(self, sub: Subscriber) -> None:
        pass


def stream_endpoint(tmp_path: Path, **limits: Any) -> Any:
    app = create_app(client=fake_client(tmp_path, FakeCustomObjects()), tokens=TOKENS, imports=[T],
                     limits=Limits(**limits), clock=Clock())
    app.state.services._watches.append(Watch())
    app.state.services.task_watch = lambda: Watch()
    return app


def test_a_tokens_streams_past_its_cap_are_429_naming_it(tmp_path: Path) -> None:
    app = stream_endpoint(tmp_path, streams_per_token=1, streams=5)
    services = app.state.services
    with TestClient(app) as http:
        own = services.streams.take(token_key("Bearer token-one"))  # this token's one stream, open
        refused = http.get("/v1/dashboard/stream", headers=bearer("app-one"))
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "TooManyStreams" and refused.headers["retry-after"] == "5"
        assert "this token has 1 event streams open, its limit" in refused.json()["detail"]
        assert 'limetask_web_rejected_total{reason="streams_per_token"} 1.0' in http.get("/metrics").text
        assert "limetask_web_open_streams 1.0" in http.get("/metrics").text
        own.release()


def test_streams_past_the_endpoints_cap_are_429_for_every_token(tmp_path: Path) -> None:
    app = stream_endpoint(tmp_path, streams_per_token=5, streams=2)
    services = app.state.services
    with TestClient(app) as http:
        held = [services.streams.take("another"), services.streams.take("a third")]
        refused = http.get("/v1/dashboard/stream", headers=bearer("app-two"))
        assert refused.status_code == 429 and "the endpoint has 2 event streams open" in refused.json()["detail"]
        assert 'limetask_web_rejected_total{reason="streams"} 1.0' in http.get("/metrics").text
        for slot in held:
            slot.release()


def test_a_stream_gives_its_place_back_when_it_ends(tmp_path: Path) -> None:
    from lime_task.server.dashboard.model import Filters, Scope
    from lime_task.server.routes.dashboard import events

    services = stream_endpoint(tmp_path, streams_per_token=1, streams=1).state.services

    class Request:
        async def is_disconnected(self) -> bool:
            return True

    async def read_two_then_leave() -> list[str]:
        slot = services.streams.take("k")
        stream = events(Request(), services, Watch(), Scope("app", frozenset({"app-one"}), True, "app-one"),
                        Filters(), "", slot)  # type: ignore[arg-type]
        got = [await stream.__anext__(), await stream.__anext__()]
        assert services.streams.open() == 1
        await stream.aclose()
        return got

    got = asyncio.run(read_two_then_leave())
    assert got[0].startswith("retry:") and got[1].startswith("event: hello")
    assert services.streams.open() == 0


def test_a_reader_that_never_reads_holds_a_bounded_backlog() -> None:
    async def flood() -> Subscriber:
        sub = Subscriber(asyncio.get_running_loop())
        for n in range(SUBSCRIBER_BACKLOG * 5):
            sub.offer(("task", {"id": str(n), "app": "app-one"}))
        return sub

    sub = asyncio.run(flood())
    # Past the backlog, what was queued is dropped and the page is told to reload its view.
    assert sub.overflowed and sub.queue.qsize() == 1 and sub.queue.get_nowait() == ("reset", None)


# -- bounded pages ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/apps/app-one/tasks?limit=1001", "/v1/apps/app-one/results?limit=100000",
                                  "/v1/apps/app-one/schedules/s/runs?limit=5000", "/v1/results?limit=1001",
                                  "/v1/dashboard/tasks?limit=201", "/v1/apps/app-one/tasks?limit=0"])
def test_no_request_asks_for_unbounded_rows(tmp_path: Path, path: str) -> None:
    api = FakeCustomObjects()
    http = endpoint(tmp_path, Clock(), api)
    response = http.get(path, headers=bearer("app-one"))
    assert response.status_code == 422, response.text
    assert api.listed == 0


def test_the_archive_reader_never_reads_more_than_a_page_whoever_asks() -> None:
    from lime_task.archive.reader import MAX_PAGE, ArchiveReader, ReadLimits

    asked: list[Any] = []
    reader = ArchiveReader.__new__(ArchiveReader)  # no database: what it would ask of one
    reader.limits = ReadLimits()
    reader._fetch = lambda kind, sql, params: asked.append(params[-1]) or []  # type: ignore[method-assign]
    reader.list("solutions", "app-one", limit=10**9)
    reader.search("solutions", limit=10**9)
    reader.list("solutions", "app-one", limit=0)
    assert asked == [MAX_PAGE + 1, MAX_PAGE + 1, 2]  # one row more than the page: whether there is a next


def test_the_limits_hold_behind_a_proxy_that_adds_a_prefix(tmp_path: Path) -> None:
    app = create_app(client=fake_client(tmp_path, FakeCustomObjects()), tokens=TOKENS, imports=[T],
                     limits=Limits(reads_per_second=1, read_burst=1), clock=Clock())
    http = TestClient(app, root_path="/tasks")  # the path keeps the prefix, as behind such a proxy
    codes = [http.get("/tasks/v1/apps/app-one/tasks", headers=bearer("app-one")).status_code for _ in range(2)]
    assert codes == [200, 429]
