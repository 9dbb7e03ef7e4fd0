"""The soak, short (about three minutes): `make soak` cannot rot while this passes.

A cluster of KWOK's simulated nodes of its own (a temporary state folder, torn down after), two
operator replicas, a minute of load over six tenants with every fault (the leader killed, the
archive and the broker cut for ten seconds each, the API server restarted) and, from its 20th
second, one more namespace flooding the default queue with 200 tasks as fast as the API server
takes them; then a burst into a limited queue. The independent checker must count nothing lost,
duplicated or overrun; its figures (latencies, CPU, API writes) are printed, never asserted:
speed is the soak's own business (`make soak`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.archive]


@pytest.mark.timeout(900)
def test_a_short_soak_with_every_fault_loses_duplicates_and_overruns_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "LIMETASK_SOAK_CLUSTER_DIR": str(tmp_path / "cluster")}
    args = ["--duration", "60s", "--rate", "3", "--namespaces", "6", "--apps", "3", "--schedules", "6",
            "--limit", "10", "--burst", "150", "--burst-seconds", "10s", "--outage-seconds", "10",
            "--keep-seconds", "20", "--drain-timeout", "5m", "--flood", "200", "--flood-after", "20s",
            "--out-dir", str(out)]
    run = subprocess.run([sys.executable, "-m", "bench.soak", *args], cwd=REPO, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=840)
    print(run.stdout)
    assert (out / "report.json").exists(), f"the soak made no report:\n{run.stdout[-3000:]}"
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["drained"], "not every task was final, confirmed and archived in time"
    assert report["created"] == 3 * 60 + 150 + 200 and report["create_failures"] == 0
    flood = report["flood"]
    assert (flood["created"], flood["final"], flood["queue"]) == (200, 200, "default") and flood["drain_s"]
    assert set(flood["others"]) == {"before", "during", "after"} and flood["own"]["n"] == 200
    assert {f["kind"] for f in report["faults"]} == {"leader", "postgres", "rabbitmq", "apiserver"}
    broken = {k: v for k, v in report["invariants"].items() if v}
    assert broken == {}, f"{broken}; examples: {report['examples']}"
    assert report["queues"], "the limited queue was not watched"
    assert run.returncode == 0
    assert not (tmp_path / "cluster").exists(), "the soak's cluster was not torn down"


@pytest.mark.timeout(300)
def test_simulated_nodes_end_runner_pods_as_the_runner_contract_says(tmp_path: Path) -> None:
    """The Stages (devtools/kwok/stages.yaml) on a cluster of simulated nodes: a pod of each
    task name ends as a real worker's would, and a pod deleted while it runs ends without one."""
    sys.path.insert(0, str(REPO / "devtools" / "cluster"))
    import localcluster
    from kubernetes import client, config

    from lime_task.verdict import parse

    state = tmp_path / "cluster"
    try:
        kubeconfig = localcluster.up(state, simulate=True)
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        toleration = {**localcluster.SIMULATED_TAINT, "operator": "Equal"}

        def job(name: str, task: str, seconds: float) -> None:
            env = {"LIMETASK_TASK_ID": name, "LIMETASK_TASK": task, "LIMETASK_ATTEMPT": "2",
                   "LIMETASK_KWARGS": json.dumps({"seconds": seconds})}
            batch.create_namespaced_job("default", {"metadata": {"name": name}, "spec": {
                "backoffLimit": 0, "template": {"metadata": {"labels": {"app": "stages"}}, "spec": {
                    "restartPolicy": "Never", "nodeSelector": localcluster.SIMULATED_NODE_LABELS,
                    "tolerations": [toleration],
                    "containers": [{"name": "task", "image": "localhost/limetask/runner:dev",
                                    "env": [{"name": k, "value": v} for k, v in env.items()]}]}}}})

        for name, task in (("ok", "soak.tasks.succeed"), ("raises", "soak.tasks.fail"), ("oom", "soak.tasks.oom"),
                           ("evicted", "soak.tasks.evict")):
            job(name, task, 1)
        job("cancelled", "soak.tasks.succeed", 600)

        def pod(job_name: str) -> Any:
            pods = core.list_namespaced_pod("default", label_selector=f"job-name={job_name}").items
            return pods[0] if pods else None

        def ended(job_name: str) -> Any:
            p = pod(job_name)
            return p if p is not None and p.status.phase in ("Succeeded", "Failed") else None

        from conftest import wait_until

        wait_until(lambda: (p := pod("cancelled")) is not None and p.status.phase == "Running", timeout=60,
                   message="the long pod to run")
        batch.delete_namespaced_job("cancelled", "default", propagation_policy="Background")
        results = {name: wait_until(lambda n=name: ended(n), timeout=60, message=f"pod {name} to end")
                   for name in ("ok", "raises", "oom", "evicted")}
        term = {name: p.status.container_statuses[0].state.terminated for name, p in results.items()}
        ok = parse(term["ok"].message)
        assert (results["ok"].status.phase, term["ok"].exit_code) == ("Succeeded", 0)
        assert ok is not None and ok.state == "SUCCESS" and ok.result == {"id": "ok", "attempt": 2}
        raised = parse(term["raises"].message)
        assert (results["raises"].status.phase, term["raises"].exit_code) == ("Failed", 1)
        assert raised is not None and raised.state == "FAILURE" and raised.error["type"] == "RuntimeError"
        assert (term["oom"].reason, term["oom"].exit_code, parse(term["oom"].message)) == ("OOMKilled", 137, None)
        assert results["evicted"].status.reason == "Evicted" and parse(term["evicted"].message) is None
        assert any(c.type == "DisruptionTarget" for c in results["evicted"].status.conditions)
        wait_until(lambda: pod("cancelled") is None, timeout=60, message="the deleted pod to go")
    finally:
        localcluster.down(state)
