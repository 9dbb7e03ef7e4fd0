"""The soak, short (about three minutes): `make soak` cannot rot while this passes.

A cluster of KWOK's simulated nodes of its own (a temporary state folder, torn down after), two
operator replicas, a minute of load over six tenants with every fault (the leader killed, the
archive and the broker cut for ten seconds each, the API server restarted), then a burst into
a limited queue. The independent checker must count nothing lost, duplicated or overrun; its
figures (latencies, CPU, API writes) are printed, never asserted: speed is the soak's own
business (`make soak`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.archive]


@pytest.mark.timeout(900)
def test_a_short_soak_with_every_fault_loses_duplicates_and_overruns_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "LIMETASK_SOAK_CLUSTER_DIR": str(tmp_path / "cluster")}
    args = ["--duration", "60s", "--rate", "3", "--namespaces", "6", "--apps", "3", "--schedules", "6",
            "--limit", "10", "--burst", "150", "--burst-seconds", "10s", "--outage-seconds", "10",
            "--keep-seconds", "20", "--drain-timeout", "5m", "--out-dir", str(out)]
    run = subprocess.run([sys.executable, "-m", "bench.soak", *args], cwd=REPO, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=840)
    print(run.stdout)
    assert (out / "report.json").exists(), f"the soak made no report:\n{run.stdout[-3000:]}"
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["drained"], "not every task was final, confirmed and archived in time"
    assert report["created"] == 3 * 60 + 150 and report["create_failures"] == 0
    assert {f["kind"] for f in report["faults"]} == {"leader", "postgres", "rabbitmq", "apiserver"}
    broken = {k: v for k, v in report["invariants"].items() if v}
    assert broken == {}, f"{broken}; examples: {report['examples']}"
    assert report["queues"], "the limited queue was not watched"
    assert run.returncode == 0
    assert not (tmp_path / "cluster").exists(), "the soak's cluster was not torn down"
