"""Newer-server features, found by asking the server (a dry run), and what they change."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from limetask_operator.features import ServerFeatures, detect, features_of, probe_job
from limetask_operator.kube import KubeError
from limetask_operator.manifests import build_job
from limetask_operator.model import TaskView
from limetask_operator.settings import OperatorSettings

TASK = TaskView.from_body({"metadata": {"name": "t1", "namespace": "ns", "uid": "u1"},
                           "spec": {"task": "a.b", "app": "x", "args": []}})


class Server:
    """Answers a dry-run create as a server of one version would: unknown fields dropped."""

    def __init__(self, knows: set[str] | None = None, refuses: bool = False) -> None:
        self.knows = knows or set()
        self.refuses = refuses
        self.asked: list[tuple[str, Any]] = []

    async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
        self.asked.append((path, params))
        if self.refuses:
            raise KubeError(403, "forbidden", method, path)
        answer = copy.deepcopy(body)
        answer["spec"] = {k: v for k, v in answer["spec"].items() if k in {"backoffLimit", "template"} | self.knows}
        return answer


def test_an_old_server_drops_the_field_and_jobs_stay_as_they_were() -> None:
    server = Server()
    found = asyncio.run(detect(server, "team-a"))  # type: ignore[arg-type]
    assert found == ServerFeatures()
    assert server.asked == [("/apis/batch/v1/namespaces/team-a/jobs", {"dryRun": "All"})]
    assert "podReplacementPolicy" not in build_job(TASK, 1, OperatorSettings(), found)["spec"]


def test_a_new_server_keeps_it_and_jobs_ask_for_one_pod_per_attempt() -> None:
    found = asyncio.run(detect(Server({"podReplacementPolicy"}), "team-a"))  # type: ignore[arg-type]
    assert found.pod_replacement_policy
    job = build_job(TASK, 1, OperatorSettings(), found)
    assert job["spec"]["podReplacementPolicy"] == "Failed" and job["spec"]["backoffLimit"] == 0


def test_a_server_that_will_not_answer_means_no_features() -> None:
    assert asyncio.run(detect(Server(refuses=True), "ns")) == ServerFeatures()  # type: ignore[arg-type]


def test_the_probe_is_only_ever_a_dry_run_of_a_job_that_asks_for_the_feature() -> None:
    probe = probe_job("ns")
    assert probe["spec"]["podReplacementPolicy"] == "Failed"
    assert features_of(probe).pod_replacement_policy and not features_of({}).pod_replacement_policy
