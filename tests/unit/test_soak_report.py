"""The soak's checker counts what went wrong (bench/soak_report.py, bench/soak_check.py): each count
is shown to see what it is meant to see, from observations made by hand."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench import soak_faults, soak_load, soak_report
from bench.soak_check import parse_metrics

UID = "00000000-0000-0000-0000-00000000000{}"


def observations() -> dict[str, Any]:
    """Two tasks that went right: one succeeded, one raised; each with its Job, pod, event and row."""
    tasks, rows, events, pods = {}, [], {}, {}
    for i, (task, state, reason) in enumerate([(soak_load.SUCCEED, "SUCCESS", ""),
                                               (soak_load.FAIL, "FAILURE", "TaskRaised")]):
        uid, name = UID.format(i), f"s-{i}"
        result = name if state == "SUCCESS" else None
        tasks[uid] = {"ns": "soak-x-t00", "name": name, "app": "a", "task": task, "queue": "default", "acks": False,
                      "schedule": None, "tick": None, "phase": "sustained", "created": "2026-01-01T00:00:00Z",
                      "seen": 1.0 + i, "started": 2.0 + i, "finals": [[state, reason, result, 1, 4.0 + i, True]],
                      "deleted": None}
        rows.append({"uid": uid, "ns": "soak-x-t00", "name": name, "state": state, "reason": reason, "attempts": 1,
                     "result_id": result, "archived": 6.0 + i})
        events[f"{uid}.{state}"] = {"uid": uid, "state": state, "ns": "soak-x-t00", "id": name, "result_id": result,
                                    "first": 5.0 + i, "count": 1, "redelivered": 0}
        pods[f"pod-{i}"] = {"task": uid, "attempt": "1", "queue": "default", "app": "a", "seen": 1.5 + i,
                            "running": 2.0 + i, "ended": 3.5 + i}
    return {"t0": 100.0, "wall0": 1_767_225_600.0, "tasks": tasks, "job_counts": {f"{UID.format(0)}/1": 1},
            "job_first": {UID.format(0): 1.2, UID.format(1): 2.2}, "pods": pods,
            "pod_counts": {f"{UID.format(0)}/1": 1, f"{UID.format(1)}/1": 1},
            "most": {"q-limited": {"pods": 3, "jobs": 3, "over_s": 0.0}}, "occupancy": [],
            "limits": {"q-limited": 3}, "events": events, "unknown_events": 0,
            "lease": [[0.5, "replica-a-1", "r1", 0], [2.5, "replica-a-1", "r2", 0]],
            "probes": [[1.0, "replica-a-1", 2.0], [2.0, "replica-a-1", 3.0]], "samples": [], "scrapes": [],
            "archive_counts": [], "archive_rows": rows, "schedules": {}}


def sent() -> list[dict[str, Any]]:
    return [{"namespace": "soak-x-t00", "name": f"s-{i}", "app": "a", "task": task, "queue": "default",
             "acks_late": False, "phase": "sustained", "due": 100.5 + i, "created": 100.8 + i, "uid": UID.format(i),
             "tries": 1, "error": "", "extra": {}} for i, task in enumerate([soak_load.SUCCEED, soak_load.FAIL])]


def invariants(obs: dict[str, Any], sent_tasks: list[dict[str, Any]] | None = None) -> dict[str, int]:
    report = soak_report.analyze(obs, sent() if sent_tasks is None else sent_tasks, [],
                                 {"sustained@2": (100.0, 110.0)}, 100.0, {"rate": 2})
    return dict(report["invariants"])


def broken(obs: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in invariants(obs).items() if v}


def test_a_run_where_everything_went_right_breaks_no_invariant() -> None:
    assert broken(observations()) == {}


def test_a_task_never_final_anywhere_is_lost() -> None:
    obs = observations()
    obs["tasks"][UID.format(0)]["finals"] = []
    obs["archive_rows"] = obs["archive_rows"][1:]
    del obs["events"][f"{UID.format(0)}.SUCCESS"]
    assert broken(obs) == {"tasks without a final state (lost)": 1}


def test_a_created_task_the_watches_never_saw_is_lost() -> None:
    obs = observations()
    del obs["tasks"][UID.format(0)]
    obs["archive_rows"] = obs["archive_rows"][1:]
    del obs["events"][f"{UID.format(0)}.SUCCESS"]
    assert broken(obs) == {"tasks without a final state (lost)": 1}


def test_a_final_state_that_changes_is_two_final_states() -> None:
    obs = observations()
    obs["tasks"][UID.format(0)]["finals"].insert(0, ["FAILURE", "WorkerLost", None, 1, 3.9, False])
    assert broken(obs) == {"tasks with two final states": 1}


def test_a_verdict_of_another_task_is_another_outcome() -> None:
    obs = observations()
    obs["tasks"][UID.format(0)]["finals"][0][2] = "s-1"
    assert broken(obs) == {"tasks with another outcome than their pod's": 1}


def test_a_lost_worker_is_worker_lost_early_and_retries_exhausted_late() -> None:
    assert soak_report.expected_outcome(soak_load.OOM, False) == ("FAILURE", ("WorkerLost",))
    assert soak_report.expected_outcome(soak_load.EVICT, True) == ("FAILURE", ("RetriesExhausted",))
    assert soak_report.expected_outcome(soak_load.FAIL, True) == ("FAILURE", ("TaskRaised",))


def test_events_missing_duplicated_and_of_another_state_are_counted_apart() -> None:
    obs = observations()
    del obs["events"][f"{UID.format(0)}.SUCCESS"]
    obs["events"][f"{UID.format(0)}.FAILURE"] = {"uid": UID.format(0), "state": "FAILURE", "ns": "x", "id": "s-0",
                                                 "result_id": None, "first": 5.0, "count": 1, "redelivered": 0}
    obs["events"][f"{UID.format(1)}.FAILURE"]["count"] = 3
    obs["events"]["ffffffff-0000-0000-0000-000000000000.SUCCESS"] = {
        "uid": "ffffffff-0000-0000-0000-000000000000", "state": "SUCCESS", "count": 1, "redelivered": 0}
    report = soak_report.analyze(obs, sent(), [], {"sustained@2": (100.0, 110.0)}, 100.0, {})
    assert {k: v for k, v in report["invariants"].items() if v} == {
        "events missing": 1, "events of another state than the final": 1, "events of unknown tasks": 1}
    assert report["duplicated_events_delivered"] == 2  # at least once: counted, not an invariant


def test_archive_rows_missing_duplicated_and_of_another_state() -> None:
    obs = observations()
    row = copy.deepcopy(obs["archive_rows"][1])
    obs["archive_rows"] = [obs["archive_rows"][1], row]
    assert broken(obs) == {"archive rows missing": 1, "archive rows duplicated": 1}
    obs = observations()
    obs["archive_rows"][0]["state"] = "FAILURE"
    assert broken(obs) == {"tasks with two final states": 1, "archive rows of another state": 1}


def test_a_second_job_or_pod_for_one_attempt_is_a_task_run_twice() -> None:
    obs = observations()
    obs["job_counts"][f"{UID.format(0)}/1"] = 2
    obs["pod_counts"][f"{UID.format(1)}/1"] = 3
    assert broken(obs) == {"attempts run twice (a 2nd Job or pod)": 3}


def test_more_pods_than_the_limit_is_an_overrun() -> None:
    obs = observations()
    obs["most"]["q-limited"]["pods"] = 5
    assert broken(obs) == {"queue limit overruns (most pods over the limit)": 2}


def test_schedule_ticks_missed_and_run_twice() -> None:
    obs = observations()
    wall0 = obs["wall0"]  # 2026-01-01T00:00:00Z
    obs["schedules"] = {"ns/sched-000": {"created": "2026-01-01T00:00:10Z", "policy": "Allow",
                                         "schedule": "* * * * *", "deleted": False}}
    for i, tick in enumerate((60, 120, 120)):  # 180 is missed; 120 ran twice
        obs["tasks"][f"run-{i}"] = {**copy.deepcopy(obs["tasks"][UID.format(0)]), "ns": "ns",
                                    "schedule": "sched-000", "tick": str(int(wall0) + tick), "seen": tick + 0.5,
                                    "name": f"sched-000-{int(wall0) + tick}"}
        obs["tasks"][f"run-{i}"]["finals"][0][2] = f"sched-000-{int(wall0) + tick}"
    result = soak_report.schedules(obs, until=240.0, grace=30.0)
    assert result["missed"] == [f"ns/sched-000@{int(wall0) + 180}"]
    assert result["run_twice"] == [f"ns/sched-000@{int(wall0) + 120}"]
    # While no operator could act (the API server away), a tick may be missed by policy.
    away = soak_report.schedules(obs, until=240.0, grace=30.0, outages=[(170.0, 200.0)])
    assert away["missed"] == [] and away["missed_during_outages"] == [f"ns/sched-000@{int(wall0) + 180}"]


def test_fair_share_flags_an_application_that_got_less_than_half_its_share() -> None:
    obs = observations()
    burst = []
    obs["pods"] = {}
    for i in range(40):
        app = "a" if i % 2 else "b"
        uid = f"b-{i}"
        burst.append({"namespace": "n", "name": uid, "app": app, "task": soak_load.SUCCEED, "queue": "q",
                      "acks_late": False, "phase": "burst", "due": 100.0, "created": 100.0, "uid": uid})
    # b's tasks start only after every one of a's: a takes every contested start.
    for i, s in enumerate(sorted(burst, key=lambda s: s["app"])):
        obs["pods"][f"p{i}"] = {"task": s["uid"], "attempt": "1", "queue": "q", "app": s["app"], "seen": 1.0 + i,
                                "running": None, "ended": None}
    fair = soak_report.fair_share(burst, obs, 100.0)
    assert fair["unfair"] == ["a", "b"]
    for i, s in enumerate(burst):  # interleaved: each its share
        obs["pods"][f"p{i}"] = {"task": s["uid"], "attempt": "1", "queue": "q", "app": s["app"], "seen": 1.0 + i,
                                "running": None, "ended": None}
    assert soak_report.fair_share(burst, obs, 100.0)["unfair"] == []


def test_leader_and_its_lag() -> None:
    obs = observations()
    obs["lease"].append([5.0, "replica-b-2", "r3", 1])
    obs["probes"] += [[6.0, "replica-a-1", 900.0], [6.0, "replica-b-2", 4.0]]
    assert soak_report.leader_at(obs["lease"], 1.0) == "replica-a-1"
    assert soak_report.leader_at(obs["lease"], 6.0) == "replica-b-2"
    assert soak_report.probes_of_leader(obs, 0.0, 10.0) == [2.0, 3.0, 4.0]


def test_api_writes_add_up_across_a_restart_of_the_api_server() -> None:
    obs = observations()
    obs["scrapes"] = [[0.0, {"POST jobs": 10.0, "PUT limetasks/status": 30.0}, {}],
                      [5.0, {"POST jobs": 14.0, "PUT limetasks/status": 42.0}, {}],
                      [9.0, {"POST jobs": 2.0, "PUT limetasks/status": 6.0, "PATCH pods/status": 8.0}, {}]]
    writes = soak_report.api_writes(obs, 0.0, 10.0, tasks=6, creates_by_driver=6)
    # 4 + 2 Jobs, 12 + 6 status writes, 8 pod status patches, over 6 tasks.
    assert writes["operator_per_task"] == 4.0
    assert writes["per_task"] == round(32 / 6, 2)


def test_the_api_servers_metrics_are_read_by_verb_resource_and_code() -> None:
    text = "\n".join([
        '# HELP apiserver_request_total Counter of apiserver requests',
        'apiserver_request_total{code="200",component="apiserver",dry_run="",group="batch",resource="jobs",'
        'scope="resource",subresource="",verb="DELETE",version="v1"} 109',
        'apiserver_request_total{code="404",component="apiserver",dry_run="",group="batch",resource="jobs",'
        'scope="resource",subresource="",verb="DELETE",version="v1"} 94',
        'apiserver_request_total{code="201",component="apiserver",dry_run="All",group="batch",resource="jobs",'
        'scope="resource",subresource="",verb="POST",version="v1"} 1',
        'apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",'
        'scope="resource",subresource="",verb="GET",version="v1"} 7',
        'apiserver_request_total{code="200",component="apiserver",dry_run="",group="limetask.io",'
        'resource="limetasks",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 319',
        'apiserver_resource_objects{group="limetask.io",resource="limetasks"} 87',
    ])
    writes, stored = parse_metrics(text)
    assert writes == {"DELETE jobs": 109.0, "DELETE jobs 4xx": 94.0, "PUT limetasks/status": 319.0}
    assert stored == {"limetasks.limetask.io": 87.0}


def test_the_load_is_spread_over_every_tenant_and_the_same_every_run() -> None:
    layout = soak_load.Layout.make("x", namespaces=30, apps=10, limit=50)
    plans = soak_load.sustained_plan(layout, 3000)
    assert plans == soak_load.sustained_plan(layout, 3000)
    assert {p.namespace for p in plans} == set(layout.namespaces)
    assert {p.app for p in plans} == set(layout.apps)
    assert {p.queue for p in plans} == set(layout.queues)
    assert len({p.name for p in plans}) == 3000
    shares = {t: sum(p.task == t for p in plans) / 3000 for t, _ in soak_load.OUTCOMES}
    assert shares[soak_load.SUCCEED] == pytest.approx(0.9, abs=0.03)
    body = plans[0].body()
    assert body["spec"]["kwargs"]["seconds"] == plans[0].seconds
    burst = soak_load.burst_plan(layout, 100)
    assert {p.queue for p in burst} == {layout.limited} and {p.task for p in burst} == {soak_load.SUCCEED}


def test_faults_are_spread_over_the_sustained_phase_in_order() -> None:
    table = soak_faults.timetable(list(soak_faults.KINDS), 1000.0)
    assert [kind for _, kind in table] == list(soak_faults.KINDS)
    assert all(150.0 <= at < 950.0 for at, _ in table)
    assert soak_faults.timetable([], 1000.0) == []


def test_a_duration_is_read_with_its_unit() -> None:
    from bench.soak import seconds

    assert seconds("90") == 90 and seconds("90s") == 90 and seconds("30m") == 1800 and seconds("1h") == 3600


def flood_run(drain: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """A sustained phase (checker seconds 0..300) with a flood from second 100 (created by 120):
    the other tenants' tasks before (0.1..0.3 s to their Job), during (0.4..0.9 s) and after
    (0.1..0.2 s) it, and four of the flood's (29..136 s to their Job), the last final at 241.5 s
    (with `drain` False, one is never final)."""
    obs = observations()
    obs["tasks"], obs["pods"], obs["job_first"], obs["events"], obs["archive_rows"] = {}, {}, {}, {}, []
    sent_tasks: list[dict[str, Any]] = []

    def task(i: int, ns: str, phase: str, created: float, to_job: float, to_final: float | None) -> None:
        uid = f"uid-{i}"
        job = created + to_job
        finals = [["SUCCESS", "", f"n-{i}", 1, job + 1.0 + to_final, True]] if to_final is not None else []
        obs["tasks"][uid] = {"ns": ns, "name": f"n-{i}", "app": "a", "task": soak_load.SUCCEED, "queue": "default",
                             "acks": False, "schedule": None, "tick": None, "phase": phase, "created": "",
                             "seen": created, "started": job, "finals": finals, "deleted": None}
        obs["job_first"][uid] = job
        obs["pods"][f"pod-{i}"] = {"task": uid, "attempt": "1", "queue": "default", "app": "a", "seen": job + 0.1,
                                   "running": job + 0.2, "ended": job + 1.0}
        sent_tasks.append({"namespace": ns, "name": f"n-{i}", "app": "a", "task": soak_load.SUCCEED,
                           "queue": "default", "acks_late": False, "phase": phase, "due": 100.0 + created,
                           "created": 100.0 + created, "uid": uid, "tries": 1, "error": "", "extra": {}})

    for i, (created, to_job, to_final) in enumerate([(10, 0.1, 0.3), (20, 0.2, 0.3), (30, 0.3, 0.3),
                                                     (130, 0.4, 0.4), (140, 0.5, 0.4), (150, 0.9, 0.4),
                                                     (260, 0.1, 0.3), (270, 0.2, 0.3)]):
        task(i, "soak-x-t00", "sustained", created, to_job, to_final)
    for i, (created, to_job) in enumerate([(101, 29), (102, 59), (103, 89), (104, 136.0)], 10):
        task(i, "soak-x-flood", "flood", created, to_job, 0.5 if drain or i < 13 else None)
    obs["scrapes"] = [[t, {}, {"limetasks.limetask.io": n}] for t, n in ((90, 50), (150, 4000), (240, 3000),
                                                                         (330, 9999))]
    flood = {"namespace": "soak-x-flood", "app": "soak-x-flooder", "queue": "default", "n": 4, "concurrency": 32,
             "start": 200.0, "created_end": 220.0}
    return obs, sent_tasks, flood


def test_the_flood_sets_the_others_reaction_before_during_and_after_beside_its_own() -> None:
    obs, sent_tasks, flood = flood_run()
    report = soak_report.analyze(obs, sent_tasks, [], {"sustained@2": (100.0, 400.0)}, 100.0, {"rate": 2},
                                 flood=flood)
    f = report["flood"]
    assert (f["created"], f["final"], f["create_s"], f["create_per_s"], f["drain_s"]) == (4, 4, 20.0, 0.2, 141.5)
    assert f["windows"] == {"before": [0.0, 100.0], "during": [100.0, 241.5], "after": [241.5, 300.0]}
    o = f["others"]
    assert (o["before"]["n"], o["before"]["create_to_job_p50_s"], o["before"]["create_to_job_p99_s"]) == (3, 0.2, 0.3)
    assert (o["during"]["n"], o["during"]["create_to_job_p50_s"], o["during"]["create_to_job_p99_s"]) == (3, 0.5, 0.9)
    assert (o["after"]["n"], o["after"]["create_to_job_p50_s"], o["after"]["create_to_job_p99_s"]) == (2, 0.1, 0.2)
    assert (o["during"]["pod_end_to_final_p99_s"], o["after"]["pod_end_to_final_p99_s"]) == (0.4, 0.3)
    own = f["own"]
    assert (own["n"], own["create_to_job_p50_s"], own["create_to_job_p99_s"]) == (4, 59.0, 136.0)
    assert f["stored_peak"] == 4000  # from its first create to a minute after it drained
    # The flood's tasks are not the other tenants': the sustained phase's figures leave them out.
    assert report["phases"]["sustained@2"]["create_to_job_p99_s"] == 0.9
    row = next(t for t in report["targets"] if t["phase"] == "flood")
    assert (row["value"], row["met"]) == (0.9, True)
    text = soak_report.table(report)
    assert ("flood: 4 of 4 tasks from soak-x-flood into default: created in 20.0s (0.2/s), all final 141.5s after "
            "its first create; LimeTasks in etcd at the peak 4000") in text
    assert "others during (100.0..241.5s), 3 tasks: create->Job p50 0.5s p99 0.9s" in text
    assert "flooder's own (" not in text and "flooder's own, 4 tasks: create->Job p50 59.0s p99 136.0s" in text


def test_a_flood_not_drained_within_the_sustained_phase_has_no_after() -> None:
    obs, sent_tasks, flood = flood_run(drain=False)
    report = soak_report.analyze(obs, sent_tasks, [], {"sustained@2": (100.0, 400.0)}, 100.0, {"rate": 2},
                                 flood=flood)
    f = report["flood"]
    assert (f["final"], f["drain_s"], f["others"]["after"], f["windows"]["during"]) == (3, None, None, [100.0, 300.0])
    assert f["others"]["during"]["n"] == 5  # the others' tasks until the sustained phase ended
    text = soak_report.table(report)
    assert "others after: none (the flood did not end within the sustained phase)" in text
    assert "(0.2/s), only 3 final; LimeTasks" in text
    assert soak_report.analyze(obs, sent_tasks, [], {"sustained@2": (100.0, 400.0)}, 100.0, {"rate": 2})[
        "flood"] is None


def test_the_flood_is_one_more_namespace_of_its_own_application_into_one_queue() -> None:
    layout = soak_load.Layout.make("x", namespaces=30, apps=10, limit=50)
    plans = soak_load.flood_plan(layout, 1000, layout.queue_named("default"))
    assert {p.namespace for p in plans} == {"soak-x-flood"} and layout.flood_namespace not in layout.namespaces
    assert {p.app for p in plans} == {"soak-x-flooder"} and layout.flood_app not in layout.apps
    assert len({p.name for p in plans}) == 1000 and {p.phase for p in plans} == {"flood"}
    assert {p.task for p in plans} == {soak_load.SUCCEED}
    assert "queue" not in plans[0].body()["spec"]  # the default queue: named by no task
    assert plans[0].body()["metadata"]["labels"]["soak.limetask.io/phase"] == "flood"
    assert layout.queue_named("limited") == layout.limited and layout.queue_named("standard") == "soak-x-standard"
    with pytest.raises(ValueError, match="choose default, standard or limited"):
        layout.queue_named("gold")


def test_the_flood_sends_as_fast_as_the_api_answers_with_a_bounded_number_in_flight() -> None:
    import asyncio

    from bench.soak_api import ApiError

    class FakeApi:
        def __init__(self) -> None:
            self.in_flight = self.most = self.calls = 0

        async def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
            self.calls += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await asyncio.sleep(0)
                if self.calls % 50 == 0:
                    raise ApiError(429, "too many requests")  # taken again after a pause
                return {"metadata": {"uid": f"uid-{body['metadata']['name']}"}}
            finally:
                self.in_flight -= 1

    layout = soak_load.Layout.make("x", namespaces=3, apps=1, limit=5)
    api = FakeApi()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(soak_load.asyncio, "sleep", _no_pause(asyncio.sleep))
        out = asyncio.run(soak_load.flood(api, soak_load.flood_plan(layout, 500), concurrency=8))  # type: ignore[arg-type]
    assert len(out) == 500 and all(s.uid == f"uid-{s.name}" for s in out)
    assert api.most == 8 and api.calls > 500 and max(s.tries for s in out) == 2


def _no_pause(sleep: Any) -> Any:
    async def pause(seconds: float) -> None:
        await sleep(0)
    return pause


def test_a_flood_is_asked_for_with_one_sustained_rate() -> None:
    from bench.soak import parse_args

    args = parse_args(["--flood", "100000"])
    assert (args.flood, args.flood_queue, args.flood_concurrency) == (100000, "default", 32)
    assert parse_args([]).flood == 0
    with pytest.raises(SystemExit):
        parse_args(["--flood", "10", "--ceiling", "12,25"])
    with pytest.raises(SystemExit):
        parse_args(["--flood", "10", "--flood-queue", "gold"])


def test_the_flood_starts_after_the_baseline_stretch_while_the_tenants_load_goes_on(tmp_path: Any) -> None:
    """The driver's sustained phase with a flood (no cluster: the senders and the API are stand-ins):
    the flood begins after --flood-after, from its own client, its tasks join what was sent, and
    its record says when it began and when its last create was answered."""
    import asyncio
    import time

    from bench import soak

    calls: list[tuple[str, float, int]] = []

    async def send(api: Any, plans: list[Any], rate: float, **_: Any) -> list[soak_load.Sent]:
        calls.append(("send", time.monotonic(), len(plans)))
        await asyncio.sleep(0.3)
        return [soak_load.Sent(p.namespace, p.name, p.app, p.task, p.queue, p.acks_late, p.phase, 0.0, uid="u")
                for p in plans]

    async def flood(api: Any, plans: list[Any], concurrency: int = 32) -> list[soak_load.Sent]:
        calls.append(("flood", time.monotonic(), len(plans)))
        assert isinstance(api, FakeApi) and api.limit == concurrency == 4
        return [soak_load.Sent(p.namespace, p.name, p.app, p.task, p.queue, p.acks_late, p.phase, 0.0, uid="u")
                for p in plans]

    class FakeApi:
        closed = 0

        def __init__(self, kubeconfig: Any, limit: int = 64) -> None:
            self.limit = limit

        async def close(self) -> None:
            FakeApi.closed += 1

    args = soak.parse_args(["--flood", "50", "--flood-after", "0.1s", "--flood-concurrency", "4", "--flood-queue",
                            "standard", "--out-dir", str(tmp_path)])
    run = soak.Soak(args)
    run.api, run.kubeconfig = FakeApi(None), tmp_path  # type: ignore[assignment]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(soak_load, "send", send)
        mp.setattr(soak_load, "flood", flood)
        mp.setattr(soak, "Api", FakeApi)
        begun = time.monotonic()
        asyncio.run(run.sustained({}, 10, 1.0, []))
    (_, sent_at, n), (_, flood_at, m) = calls
    assert (n, m) == (10, 50) and 0.1 <= flood_at - begun < 0.25 and flood_at > sent_at
    assert FakeApi.closed == 1
    assert [s.phase for s in run.sent].count("flood") == 50 and {s.queue for s in run.sent if s.phase == "flood"} == {
        run.layout.limited.replace("limited", "standard")}
    f = run.flood
    assert (f["namespace"], f["app"], f["n"], f["concurrency"]) == (run.layout.flood_namespace, run.layout.flood_app,
                                                                     50, 4)
    assert begun + 0.1 <= f["start"] <= f["created_end"] <= run.phases["sustained@10"][1]
    assert run.tenant_namespaces()[-1] == run.layout.flood_namespace and run.layout.flood_app in run.applications()
