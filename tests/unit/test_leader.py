"""Leader election on a Lease, against a fake API with compare-and-swap writes."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from limetask_operator.kube import KubeError, NotLeading
from limetask_operator.leader import ElectionTiming, LeaderElector

FAST = ElectionTiming(lease_duration=0.6, renew_deadline=0.4, retry_period=0.05)


class FakeLeases:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down: set[str] = set()  # identities whose API calls fail (a partitioned replica)
        self.hung: set[str] = set()  # identities whose API calls never answer (a hung connection)

    def client(self, identity: str) -> Any:
        leases = self

        class Client:
            async def lease_request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
                await leases.check(identity)
                if method == "GET":
                    if leases.lease is None:
                        raise KubeError(404, "not found", method, path)
                    return copy.deepcopy(leases.lease)
                if method == "POST":
                    if leases.lease is not None:
                        raise KubeError(409, "exists", method, path)
                    leases.version += 1
                    leases.lease = {**copy.deepcopy(body), "metadata": {**body["metadata"],
                                                                        "resourceVersion": str(leases.version)}}
                    return leases.lease
                assert method == "PUT" and leases.lease is not None
                if body["metadata"]["resourceVersion"] != leases.lease["metadata"]["resourceVersion"]:
                    raise KubeError(409, "conflict", method, path)
                leases.version += 1
                leases.lease = copy.deepcopy(body)
                leases.lease["metadata"]["resourceVersion"] = str(leases.version)
                return leases.lease

            # The general request path (as the rest of the operator uses it).
            async def get(self, path: str) -> dict[str, Any] | None:
                try:
                    return await self.lease_request("GET", path)  # type: ignore[no-any-return]
                except KubeError as exc:
                    if exc.status == 404:
                        return None
                    raise

            async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
                try:
                    return await self.lease_request("POST", path, body)  # type: ignore[no-any-return]
                except KubeError as exc:
                    if exc.status == 409:
                        return None
                    raise

            async def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
                return await self.lease_request(method, path, body)

        return Client()

    async def check(self, identity: str) -> None:
        if identity in self.hung:
            await asyncio.sleep(3600)
        if identity in self.down:
            raise KubeError(0, "connection failed", "GET", "/leases")


async def campaign(leases: FakeLeases, identity: str, log: list[str],
                   starting: float = 0.0) -> tuple[LeaderElector, asyncio.Task[None]]:
    """A replica; its lead() takes `starting` seconds of I/O (feature detection, discovery)."""
    elector = LeaderElector(leases.client(identity), "ns", "op", identity, FAST)

    async def lead() -> None:
        log.append(f"{identity} leads")
        await asyncio.sleep(starting)

    async def step_down() -> None:
        log.append(f"{identity} steps down")

    return elector, asyncio.create_task(elector.run(lead, step_down))


def test_one_leads_and_the_other_takes_over_when_it_is_gone() -> None:
    async def main() -> list[str]:
        leases, log = FakeLeases(), []
        a, ta = await campaign(leases, "a", log)
        await asyncio.sleep(0.2)
        b, tb = await campaign(leases, "b", log)
        await asyncio.sleep(0.5)
        assert log == ["a leads"] and a.leading.is_set() and not b.leading.is_set()
        ta.cancel()  # a dies without releasing: b waits for the lease to expire
        await asyncio.sleep(0.3)
        assert log == ["a leads"]
        await asyncio.sleep(0.8)
        tb.cancel()
        return log

    assert asyncio.run(main()) == ["a leads", "b leads"]


def test_a_released_lease_is_taken_at_once() -> None:
    async def main() -> list[str]:
        leases, log = FakeLeases(), []
        a, ta = await campaign(leases, "a", log)
        await asyncio.sleep(0.1)
        b, tb = await campaign(leases, "b", log)
        await asyncio.sleep(0.1)
        ta.cancel()
        await a.release()
        await asyncio.sleep(0.2)  # well within the lease duration
        tb.cancel()
        return log

    assert asyncio.run(main()) == ["a leads", "b leads"]


def test_a_leader_that_cannot_renew_steps_down_before_the_lease_expires() -> None:
    async def main() -> list[str]:
        leases, log = FakeLeases(), []
        a, ta = await campaign(leases, "a", log)
        await asyncio.sleep(0.1)
        b, tb = await campaign(leases, "b", log)
        leases.down.add("a")  # a is cut off from the API
        await asyncio.sleep(0.55)
        stepped_down_first = log[-1] == "a steps down" and "b leads" not in log
        await asyncio.sleep(0.6)
        ta.cancel()
        tb.cancel()
        assert stepped_down_first, log
        return log

    assert asyncio.run(main()) == ["a leads", "a steps down", "b leads"]


def test_two_candidates_for_a_free_lease_make_one_leader() -> None:
    async def main() -> list[str]:
        leases, log = FakeLeases(), []
        tasks = [(await campaign(leases, name, log))[1] for name in ("a", "b", "c")]
        await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()
        return log

    assert len(asyncio.run(main())) == 1


def test_a_replica_that_cannot_reach_the_lease_says_so() -> None:
    """A standby (or a new pod) that cannot reach the API server is unhealthy after the grace
    time, and healthy again once it reaches the lease: /healthz reports it instead of "waiting"."""
    async def main() -> None:
        leases = FakeLeases()
        leases.down.add("b")
        log: list[str] = []
        elector, task = await campaign(leases, "b", log)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.2)
        assert elector.problem(loop.time(), grace=10) is None  # within the grace time
        problem = elector.problem(loop.time() + 11, grace=10)
        assert problem and "ns/op" in problem and "connection failed" in problem
        leases.down.clear()
        await asyncio.sleep(0.2)
        assert elector.problem(loop.time() + 11, grace=10) is None
        task.cancel()
    asyncio.run(main())


def test_in_a_pod_the_api_server_comes_from_the_service_variables() -> None:
    from limetask_operator.handlers import in_cluster_server

    default = "https://kubernetes.default.svc"
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env, default) == "https://10.96.0.1:443"
    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
                             default) == "https://[fd00::1]:6443"
    assert in_cluster_server({}, default) == default


def test_a_renewal_that_hangs_makes_the_leader_step_down_before_its_lease_can_expire() -> None:
    """The API server accepts the leader's connections and never answers: each renewal is given
    up at the renew deadline, and the leader steps down (its writes refused from then on) before
    the lease can expire for the standby, which then leads: never two at once."""
    async def main() -> tuple[list[str], dict[str, float]]:
        leases, log = FakeLeases(), []
        loop = asyncio.get_running_loop()
        a, ta = await campaign(leases, "a", log)
        await asyncio.sleep(0.1)
        b, tb = await campaign(leases, "b", log)
        await asyncio.sleep(0.2)
        at: dict[str, float] = {}
        leases.hung.add("a")
        renewed_last = loop.time()  # at the latest: a renews every 0.05 s
        budget_before = a.write_budget()
        while "b leads" not in log and loop.time() - renewed_last < 3:
            if "a steps down" in log and "down" not in at:
                at["down"] = loop.time() - renewed_last
            await asyncio.sleep(0.005)
        at["b"] = loop.time() - renewed_last
        at["budget_before"], at["budget_after"] = budget_before, a.write_budget()
        ta.cancel()
        tb.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
        return log, at

    log, at = asyncio.run(main())
    assert log == ["a leads", "a steps down", "b leads"], log
    assert at["down"] < FAST.lease_duration and at["down"] < at["b"]
    assert 0 < at["budget_before"] <= FAST.lease_duration and at["budget_after"] == 0


def test_renewals_start_at_once_and_do_not_wait_for_the_start_of_leading() -> None:
    """lead() takes long (feature detection and discovery against a slow API server): the lease
    is renewed meanwhile, so the standby never takes over from a leader that is starting."""
    async def main() -> list[str]:
        leases, log = FakeLeases(), []
        a, ta = await campaign(leases, "a", log, starting=10.0)
        await asyncio.sleep(0.1)
        b, tb = await campaign(leases, "b", log)
        await asyncio.sleep(4 * FAST.lease_duration)
        ta.cancel()
        tb.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
        return log

    assert asyncio.run(main()) == ["a leads"]


def test_no_write_is_sent_past_the_renew_deadline_and_none_outlives_the_lease() -> None:
    """The fence of every write (Kube.fence): refused before anything is sent once the budget is
    spent; otherwise sent with a timeout, for the API server and the client, that ends with the
    lease."""
    import kopf
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from limetask_operator.kube import Kube

    async def main() -> tuple[list[Any], Any]:
        seen: list[Any] = []

        async def jobs(request: web.Request) -> web.Response:
            seen.append((request.method, dict(request.query)))
            return web.json_response({"kind": "Job"}, status=201)

        app = web.Application()
        app.router.add_post("/apis/batch/v1/namespaces/ns/jobs", jobs)
        app.router.add_get("/apis/batch/v1/namespaces/ns/jobs", jobs)
        server = TestServer(app)
        await server.start_server()
        kube = Kube(kopf.ConnectionInfo(server=str(server.make_url(""))))
        budget = [3.0]
        kube.fence = lambda: budget[0]
        await kube.create("/apis/batch/v1/namespaces/ns/jobs", {"kind": "Job"})
        await kube.request("GET", "/apis/batch/v1/namespaces/ns/jobs")  # reads are not fenced
        budget[0] = 0.0
        refused: Any = None
        try:
            await kube.create("/apis/batch/v1/namespaces/ns/jobs", {"kind": "Job"})
        except NotLeading as exc:
            refused = exc
        await kube.close()
        await server.close()
        return seen, refused

    seen, refused = asyncio.run(main())
    assert seen == [("POST", {"timeout": "3000ms"}), ("GET", {})]  # the refused one never reached the server
    assert isinstance(refused, NotLeading) and "does not hold the leader lease" in str(refused)


def test_a_new_leader_gives_no_slot_in_a_limited_queue_until_the_takeover_margin_has_passed() -> None:
    """The old leader's last Job creations (for slots it granted) land before its lease ends; the
    new one waits a margin more before it grants (its listings count those Jobs by then).
    Queues without a limit are not held."""
    from limetask_operator.admission import Admitted, Waiting

    from tests.unit.test_admission import Harness, body, queue

    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=5))
    h.adm.hold(FAST.takeover_margin * 4)
    assert isinstance(h.ask(body("t1")), Waiting)
    assert isinstance(h.ask(body("u1", queue=None)), Admitted)  # the default queue has no limit
    assert h.adm.dispatch() == 0
    h.clock.now += FAST.takeover_margin * 4
    assert h.adm.dispatch() == 1 and h.enqueued == [("ns", "t1")]
