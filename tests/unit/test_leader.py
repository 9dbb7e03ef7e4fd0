"""Leader election on a Lease, against a fake API with compare-and-swap writes."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from limetask_operator.kube import ApiError
from limetask_operator.leader import ElectionTiming, LeaderElector

FAST = ElectionTiming(lease_duration=0.6, renew_deadline=0.4, retry_period=0.05)


class FakeLeases:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down: set[str] = set()  # identities whose API calls fail (a partitioned replica)

    def client(self, identity: str) -> Any:
        leases = self

        class Client:
            async def get(self, path: str) -> dict[str, Any] | None:
                leases.check(identity)
                return copy.deepcopy(leases.lease)

            async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
                leases.check(identity)
                if leases.lease is not None:
                    return None
                leases.version += 1
                leases.lease = {**copy.deepcopy(body), "metadata": {**body["metadata"],
                                                                    "resourceVersion": str(leases.version)}}
                return leases.lease

            async def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
                leases.check(identity)
                assert method == "PUT" and leases.lease is not None
                if body["metadata"]["resourceVersion"] != leases.lease["metadata"]["resourceVersion"]:
                    raise ApiError(409, "conflict", method, path)
                leases.version += 1
                leases.lease = copy.deepcopy(body)
                leases.lease["metadata"]["resourceVersion"] = str(leases.version)
                return leases.lease

        return Client()

    def check(self, identity: str) -> None:
        if identity in self.down:
            raise ApiError(0, "connection failed", "GET", "/leases")


async def campaign(leases: FakeLeases, identity: str, log: list[str]) -> tuple[LeaderElector, asyncio.Task[None]]:
    elector = LeaderElector(leases.client(identity), "ns", "op", identity, FAST)

    async def lead() -> None:
        log.append(f"{identity} leads")

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
