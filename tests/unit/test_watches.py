"""The operator's watches against a fake API: they survive anything and say when they are stuck."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from limetask_operator.kube import KubeError
from limetask_operator.watches import ResourceWatch


class FakeResponse:
    def __init__(self, status: int, lines: list[bytes], broken: Exception | None = None) -> None:
        self.status = status
        self.lines = lines
        self.broken = broken

    async def __aenter__(self) -> FakeResponse:
        if self.broken is not None:
            raise self.broken
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def text(self) -> str:
        return b"".join(self.lines).decode()

    @property
    def content(self) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for line in self.lines:
                if isinstance(line, Exception):
                    raise line  # the connection breaks here
                yield line
            await asyncio.sleep(3600)  # a watch that stays open
        return gen()


class FakeKube:
    """Lists come from `pages`; each watch from `streams` (one list of lines per watch)."""

    server = "https://fake"

    def __init__(self, pages: list[Any], streams: list[Any]) -> None:
        self.pages = pages
        self.streams = streams  # per watch: its lines, an HTTP status, or an exception
        self.lists = 0
        self.watched_from: list[str] = []
        self.logins = 0

    async def request(self, method: str, path: str, params: dict[str, str] | None = None, **_: Any) -> Any:
        self.lists += 1
        page = self.pages.pop(0) if len(self.pages) > 1 else self.pages[0]
        if isinstance(page, Exception):
            raise page
        return copy.deepcopy(page)

    def watch_session(self) -> FakeKube:
        return self

    def get(self, url: str, params: dict[str, str], timeout: Any) -> FakeResponse:
        self.watched_from.append(params["resourceVersion"])
        stream = self.streams.pop(0) if self.streams else []
        if isinstance(stream, int):
            return FakeResponse(stream, [b"gone"])
        if isinstance(stream, Exception):
            return FakeResponse(200, [], broken=stream)
        return FakeResponse(200, stream)

    async def refresh_credentials(self) -> bool:
        self.logins += 1
        return True


def listing(*names: str, rv: str = "10") -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv},
            "items": [{"metadata": {"name": n, "namespace": "ns", "resourceVersion": rv}} for n in names]}


def event(kind: str, name: str, rv: str, extra: str = "") -> bytes:
    body = '{"type": "%s", "object": {"metadata": {"name": "%s", "namespace": "ns", "resourceVersion": "%s"}%s}}' % (
        kind, name, rv, extra)
    return body.encode() + b"\n"


async def run_for(watch: ResourceWatch, seconds: float) -> None:
    task = asyncio.create_task(watch.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def make(kube: FakeKube, seen: list[Any], resyncs: list[Any]) -> ResourceWatch:
    return ResourceWatch(kube, "/apis/limetask.io/v1alpha1", "limetasks", "", "ns", None,  # type: ignore[arg-type]
                         lambda kind, obj: kind == "LISTED" or seen.append((kind, obj["metadata"]["name"])),
                         lambda names, ns: resyncs.append(sorted(n for _, n in names)))


def test_a_deeply_nested_object_does_not_stop_the_watch() -> None:
    deep = ', "spec": {"args": ' + "[" * 3000 + "]" * 3000 + "}"
    kube = FakeKube([listing("a", "deep")], [[event("ADDED", "deep", "11", deep), event("ADDED", "b", "12")]])
    seen: list[Any] = []
    resyncs: list[Any] = []

    async def main() -> None:
        await run_for(make(kube, seen, resyncs), 0.2)

    asyncio.run(main())
    assert resyncs == [["a", "deep"]]
    assert seen == [("ADDED", "deep"), ("ADDED", "b")]


def test_an_unexpected_error_is_retried_and_reported_by_the_probe(caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube([RuntimeError("boom"), listing("a")], [[event("ADDED", "b", "11")]])
    seen: list[Any] = []
    resyncs: list[Any] = []

    async def main() -> list[str | None]:
        watch = make(kube, seen, resyncs)
        task = asyncio.create_task(watch.run())
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        failing = watch.problem(loop.time() + 120, grace=60)  # as if it had failed for two minutes
        await asyncio.sleep(0.7)  # the back-off is 0.5 s
        recovered = watch.problem(loop.time() + 120, grace=60)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return [failing, recovered]

    failing, recovered = asyncio.run(main())
    assert failing is not None and "RuntimeError: boom" in failing
    assert recovered is None
    assert resyncs == [["a"]] and seen == [("ADDED", "b")]
    assert any("Traceback" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_a_watch_that_never_lists_is_reported() -> None:
    kube = FakeKube([KubeError(500, "etcd is down", "GET", "/x")], [])

    async def main() -> str | None:
        watch = make(kube, [], [])
        task = asyncio.create_task(watch.run())
        await asyncio.sleep(0.05)
        problem = watch.problem(asyncio.get_running_loop().time() + 61, grace=60)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return problem

    problem = asyncio.run(main())
    assert problem is not None and "500" in problem and "limetasks in ns" in problem


@pytest.mark.parametrize("namespace", ["ns", None])
def test_a_forbidden_namespace_is_degraded_and_a_forbidden_cluster_is_a_problem(namespace: str | None) -> None:
    """A 403 in one namespace (its Role deleted) is that namespace's trouble, not a reason to
    restart the operator; a 403 on a cluster-wide watch leaves the operator blind."""
    kube = FakeKube([KubeError(403, "forbidden", "GET", "/x")], [])
    changes: list[bool] = []

    async def main() -> tuple[str | None, str | None]:
        watch = ResourceWatch(kube, "/apis/limetask.io/v1alpha1", "limetasks", "", namespace, None,  # type: ignore[arg-type]
                              lambda kind, obj: None, lambda names, ns: None,
                              on_change=lambda: changes.append(watch.forbidden))
        task = asyncio.create_task(watch.run())
        await asyncio.sleep(0.05)
        problem = watch.problem(asyncio.get_running_loop().time() + 61, grace=60)
        degraded = watch.degraded()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return problem, degraded

    problem, degraded = asyncio.run(main())
    if namespace:
        assert problem is None and degraded is not None and "limetasks in ns cannot be listed" in degraded
        assert changes == [True]  # told once, not at every retry
    else:
        assert problem is not None and "403" in problem and degraded is None


def test_reconciler_health_reports_dead_watch_tasks() -> None:
    from limetask_operator.reconciler import Reconciler
    from limetask_operator.settings import OperatorSettings

    async def main() -> list[str]:
        rec = Reconciler(FakeKube([listing()], []), OperatorSettings())  # type: ignore[arg-type]

        async def dies() -> None:
            raise ValueError("a bug")

        rec.watch_tasks = [asyncio.create_task(dies(), name="watch-limetasks-ns")]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return rec.health()

    problems = asyncio.run(main())
    assert problems and "watch-limetasks-ns stopped" in problems[0] and "a bug" in problems[0]


def test_the_probe_fails_while_a_watch_is_unhealthy() -> None:
    import kopf
    from limetask_operator.handlers import OperatorMemo, watches_probe
    from limetask_operator.settings import OperatorSettings

    class Rec:
        watches = [object(), object()]

        def __init__(self, problems: list[str], degraded: list[str] | None = None) -> None:
            self.problems = problems
            self.degraded_ = degraded or []

        def health(self) -> list[str]:
            return self.problems

        def degraded(self) -> list[str]:
            return self.degraded_

    memo = OperatorMemo(settings=OperatorSettings(), namespaces=None)
    assert asyncio.run(watches_probe(memo=memo)) == "starting"
    memo.reconciler = Rec([])  # type: ignore[assignment]
    assert asyncio.run(watches_probe(memo=memo)) == "2 watches ok"
    memo.reconciler = Rec(["watching limetasks has failed for 90s: boom"])  # type: ignore[assignment]
    with pytest.raises(kopf.PermanentError, match="boom"):
        asyncio.run(watches_probe(memo=memo))
    why = "namespace team-b: limetasks in team-b cannot be listed: 403"
    memo.reconciler = Rec([], [why])  # type: ignore[assignment]
    assert asyncio.run(watches_probe(memo=memo)) == f"degraded: {why}"


def test_events_are_parsed_line_by_line() -> None:
    assert json.loads(event("ADDED", "x", "1"))["object"]["metadata"]["name"] == "x"


class HangingWatchServer:
    """A local API server: lists are empty, watches stay open and send nothing; it notes the
    credentials of every request and watch."""

    def __init__(self) -> None:
        self.open_watches = 0
        self.tokens: list[tuple[str, str]] = []  # (what, Authorization)
        self.runner: Any = None
        self.url = ""

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        if request.query.get("watch") != "true":
            self.tokens.append(("request", request.headers.get("Authorization", "")))
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        self.tokens.append(("watch", request.headers.get("Authorization", "")))
        response = web.StreamResponse()
        await response.prepare(request)
        self.open_watches += 1
        try:
            await asyncio.sleep(3600)
        finally:
            self.open_watches -= 1
        return response

    async def __aenter__(self) -> HangingWatchServer:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.runner.cleanup()


def test_watches_of_30_namespaces_leave_requests_their_connections() -> None:
    """90 long-lived watches (three per namespace) must not take the connections of API requests."""
    import kopf
    from limetask_operator.kube import REQUEST_CONNECTIONS, Kube

    async def main() -> None:
        async with HangingWatchServer() as server:
            kube = Kube(kopf.ConnectionInfo(server=server.url, insecure=True, token="first"))
            watches = [ResourceWatch(kube, base, plural, "", f"ns-{i}", None, lambda kind, obj: None,
                                     lambda items, ns: None)
                       for i in range(30)
                       for base, plural in (("/apis/limetask.io/v1alpha1", "limetasks"),
                                            ("/apis/batch/v1", "jobs"), ("/api/v1", "pods"))]
            assert len(watches) > REQUEST_CONNECTIONS
            running = [asyncio.create_task(w.run()) for w in watches]
            try:
                await asyncio.wait_for(asyncio.gather(*(w.synced.wait() for w in watches)), timeout=10)
                for _ in range(100):
                    if server.open_watches == len(watches):
                        break
                    await asyncio.sleep(0.05)
                assert server.open_watches == len(watches)
                assert await asyncio.wait_for(kube.request("GET", "/version"), timeout=5) is not None
                assert kube.session() is not kube.watch_session()
                assert kube.session().connector is not kube.watch_session().connector

                # New credentials: both pools are made again with them, the old ones closed.
                old_sessions = (kube.session(), kube.watch_session())
                kube.use(kopf.ConnectionInfo(server=server.url, insecure=True, token="second"))
                await kube.request("GET", "/version")
                late = ResourceWatch(kube, "/api/v1", "pods", "", "ns-late", None, lambda kind, obj: None,
                                     lambda items, ns: None)
                running.append(asyncio.create_task(late.run()))
                await asyncio.wait_for(late.synced.wait(), timeout=5)
                for _ in range(100):
                    if ("watch", "Bearer second") in server.tokens:
                        break
                    await asyncio.sleep(0.05)
                assert {("request", "Bearer second"), ("watch", "Bearer second")} <= set(server.tokens)
                assert all(s.closed for s in old_sessions)
            finally:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                sessions = (kube.session(), kube.watch_session())
                await kube.close()
            assert all(s.closed for s in sessions)

    asyncio.run(main())


def test_after_a_broken_connection_the_watch_resumes_from_the_last_version() -> None:
    """client-go's reflector: no relist after a connection error, a timeout or a 5xx."""
    import aiohttp

    kube = FakeKube([listing("a", rv="10")], [
        [event("ADDED", "b", "11"), event("MODIFIED", "b", "12"), aiohttp.ClientPayloadError("reset")],
        aiohttp.ClientConnectionError("refused"),
        [event("MODIFIED", "b", "13")],
    ])
    seen: list[Any] = []

    async def main() -> None:
        await run_for(make(kube, seen, []), 2.0)

    asyncio.run(main())
    assert kube.lists == 1, "a broken connection must not relist"
    assert kube.watched_from == ["10", "12", "12"]
    assert seen == [("ADDED", "b"), ("MODIFIED", "b"), ("MODIFIED", "b")]


def test_gone_relists_with_a_back_off() -> None:
    kube = FakeKube([listing("a", rv="10")], [410, 410, 410])
    relists: list[Any] = []

    async def main() -> None:
        await run_for(make(kube, [], relists), 1.2)

    asyncio.run(main())
    # 0.5 s, then 1 s between listings: not a tight loop.
    assert 2 <= len(relists) <= 3, relists


def test_a_401_asks_for_fresh_credentials() -> None:
    kube = FakeKube([listing("a", rv="10")], [401])

    async def main() -> None:
        await run_for(make(kube, [], []), 0.2)

    asyncio.run(main())
    assert kube.logins == 1


def test_a_stop_during_startup_cancels_the_start_and_leaves_nothing_running(monkeypatch: Any) -> None:
    """A SIGTERM while the operator still asks the API server what it offers: the start is
    cancelled, not left to fail on a closed connection with a traceback in the log."""
    import kopf
    from limetask_operator import handlers
    from limetask_operator.settings import OperatorSettings

    asked = asyncio.Event()

    async def detect_for_ever(*_: Any, **__: Any) -> Any:
        asked.set()
        await asyncio.Event().wait()

    class FakeKube:
        closed = False

        async def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(handlers, "detect", detect_for_ever)
    # the watchdog would os._exit the test run if cleanup hung; it must not fire here
    monkeypatch.setattr(handlers, "_force_exit", lambda: None)

    async def main() -> list[asyncio.Task[Any]]:
        memo = handlers.OperatorMemo(settings=OperatorSettings(metrics_port=0), namespaces=None)
        kube = FakeKube()
        memo.kube = kube  # type: ignore[assignment]
        await handlers.startup(settings=kopf.OperatorSettings(), memo=memo)
        await asyncio.wait_for(asked.wait(), 5)
        await handlers.cleanup(memo=memo)
        await asyncio.sleep(0)
        assert kube.closed
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]

    assert asyncio.run(main()) == []


def test_the_leader_gauge_says_who_leads_and_a_standby_reports_no_queue_of_its_own(monkeypatch: Any) -> None:
    """limetask_leader is 1 on the replica that leads; once it steps down it is 0, the lost Lease is
    counted, and the queue gauges only a leader knows go instead of staying at their last values."""
    import kopf
    from limetask_operator import handlers, metrics
    from limetask_operator.settings import OperatorSettings
    from prometheus_client import REGISTRY

    class Rec:
        def __init__(self, *_: Any) -> None:
            self.admission = type("A", (), {"enabled": False})()
            self.schedules_installed = False

        def start_watches(self, namespaces: Any) -> None:
            pass

        def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

    async def nothing(*_: Any, **__: Any) -> Any:
        return False

    monkeypatch.setattr(handlers, "detect", nothing)
    monkeypatch.setattr(handlers, "Reconciler", Rec)
    monkeypatch.setattr(handlers, "schedules_installed", nothing)
    monkeypatch.setattr(handlers, "queues_installed", nothing)
    monkeypatch.setattr(handlers, "_force_exit", lambda: None)

    class FakeKube:
        async def close(self) -> None:
            pass

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return REGISTRY.get_sample_value(name, labels or {})

    async def main() -> None:
        metrics.LEADER.set(0)
        memo = handlers.OperatorMemo(settings=OperatorSettings(metrics_port=0), namespaces=None)
        memo.kube = FakeKube()  # type: ignore[assignment]
        await handlers.startup(settings=kopf.OperatorSettings(), memo=memo)
        assert memo.starting is not None
        await asyncio.wait_for(memo.starting, 5)
        assert value("limetask_leader") == 1
        await handlers.cleanup(memo=memo)

    asyncio.run(main())
    metrics.set_queue("reports", 3, 2, 40.0)
    lost = value("limetask_lease_lost_total") or 0.0
    metrics.stepped_down()
    assert value("limetask_leader") == 0
    assert value("limetask_lease_lost_total") == lost + 1
    assert value("limetask_queue_waiting", {"queue": "reports"}) is None
    assert value("limetask_queue_oldest_wait_seconds", {"queue": "reports"}) is None
    assert metrics.queue_names() == set()
