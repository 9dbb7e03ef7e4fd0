"""What the soak's checker saw, turned into invariants, figures and targets (pure: tested without a cluster).

Every time here is seconds since the checker started (its observations are kept that way); the
driver's own records (what it sent, its faults, its phases) are in monotonic seconds and are
moved onto the same clock with the checker's start.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

SUCCEED, FAIL, OOM, EVICT = "soak.tasks.succeed", "soak.tasks.fail", "soak.tasks.oom", "soak.tasks.evict"
LOST_REASONS = ("WorkerLost", "RetriesExhausted")
# What the operator itself writes to the API server for its tasks; everything else in
# apiserver_request_total (pods, bindings, Job status, Events, node Leases) is the control
# plane's and KWOK's, which a real cluster's kubelets and controllers would write too.
OPERATOR_WRITES = ("PUT limetasks/status", "PATCH limetasks/status", "DELETE limetasks", "POST jobs", "DELETE jobs",
                   "PUT limetaskqueues/status", "PATCH limetaskqueues/status", "PUT limetaskschedules/status",
                   "PATCH limetaskschedules/status")
# The targets, each with where it comes from.
TARGETS = {
    "operator_cores": 0.5,  # the leader's mean CPU over the sustained phase
    "rss_flat": 0.10,  # the leader's RSS from its 5th minute on stays within 10 %
    "reaction_p99_s": 1.0,  # create -> Job and pod end -> final status
    "writes_per_task": 8.0,  # the operator's API writes per task, end to end
    "burst_lag_p99_ms": 100.0,  # event-loop lag during the burst
    "burst_slots_used": 0.9,  # the burst drains at the queue's limit: its slots in use, on average
}


def pct(values: Iterable[float], p: float) -> float | None:
    s = sorted(values)
    if not s:
        return None
    return s[min(len(s) - 1, int(math.ceil(p / 100 * len(s))) - 1 if p > 0 else 0)]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def expected_outcome(task: str, acks_late: bool) -> tuple[str, tuple[str, ...]]:
    """The final state, and the reasons allowed, that the Stages give a task of this name."""
    if task == FAIL:
        return "FAILURE", ("TaskRaised",)
    if task in (OOM, EVICT):
        return "FAILURE", ("RetriesExhausted",) if acks_late else ("WorkerLost",)
    return "SUCCESS", ("",)


def universe(obs: dict[str, Any], sent: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every task of the run by UID: what the driver created, what the watches saw (schedule runs
    included) and what the archive holds, with what each source says of it."""
    tasks: dict[str, dict[str, Any]] = {}
    for s in sent:
        if s.get("uid"):
            tasks[s["uid"]] = {"sent": s, "watch": None, "rows": [], "events": {}}
    for uid, t in obs["tasks"].items():
        tasks.setdefault(uid, {"sent": None, "watch": None, "rows": [], "events": {}})["watch"] = t
    for row in obs["archive_rows"]:
        tasks.setdefault(row["uid"], {"sent": None, "watch": None, "rows": [], "events": {}})["rows"].append(row)
    for mid, e in obs["events"].items():
        uid = e.get("uid") or mid.rsplit(".", 1)[0]
        if uid in tasks:
            tasks[uid]["events"][mid] = e
    return tasks


def final_of(t: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(state, reason, result id) the task ended with, from its watch or else its archive row."""
    w = t["watch"]
    if w and w["finals"]:
        state, reason, result_id = w["finals"][-1][:3]
        return state, reason, result_id
    if t["rows"]:
        r = t["rows"][0]
        return r["state"], r["reason"] or "", r["result_id"]
    return None


def describe(t: dict[str, Any]) -> dict[str, Any]:
    w, s = t["watch"] or {}, t["sent"] or {}
    return {"ns": w.get("ns") or s.get("namespace"), "name": w.get("name") or s.get("name"),
            "task": w.get("task") or s.get("task"), "finals": w.get("finals"), "rows": len(t["rows"]),
            "events": {k: v["count"] for k, v in t["events"].items()}}


def lifecycle(tasks: dict[str, dict[str, Any]], obs: dict[str, Any]) -> dict[str, Any]:
    """Every task exactly one final state, one event, one archive row; one Job and pod per attempt."""
    out: dict[str, Any] = {"tasks": len(tasks), "lost": [], "two_finals": [], "wrong_outcome": [],
                           "events_missing": [], "events_duplicated": 0, "events_redelivered": 0,
                           "events_wrong_state": [], "rows_missing": [], "rows_duplicated": [],
                           "rows_wrong_state": []}
    for uid, t in tasks.items():
        final = final_of(t)
        if final is None:
            out["lost"].append(uid)
            continue
        state, reason, result_id = final
        states = {f[0] for f in (t["watch"] or {}).get("finals") or []} | {r["state"] for r in t["rows"]}
        outcomes = {tuple(f[:3]) for f in (t["watch"] or {}).get("finals") or []}
        if len(states) > 1 or len(outcomes) > 1:
            out["two_finals"].append(uid)
        sent, w = t["sent"], t["watch"] or {}
        task = (sent or {}).get("task") or w.get("task")
        acks = bool((sent or {}).get("acks_late") or w.get("acks"))
        name = (sent or {}).get("name") or w.get("name")
        want_state, want_reasons = expected_outcome(str(task), acks)
        if state != want_state or reason not in want_reasons or (state == "SUCCESS" and result_id != name):
            out["wrong_outcome"].append(uid)
        mid = f"{uid}.{state}"
        if mid not in t["events"]:
            out["events_missing"].append(uid)
        for other, e in t["events"].items():
            out["events_duplicated"] += e["count"] - 1
            out["events_redelivered"] += e["redelivered"]
            if other != mid:
                out["events_wrong_state"].append(uid)
        if not t["rows"]:
            out["rows_missing"].append(uid)
        elif len(t["rows"]) > 1:
            out["rows_duplicated"].append(uid)
        if any(r["state"] != state for r in t["rows"]):
            out["rows_wrong_state"].append(uid)
    out["jobs_duplicated"] = sum(n - 1 for n in obs["job_counts"].values() if n > 1)
    out["pods_duplicated"] = sum(n - 1 for n in obs["pod_counts"].values() if n > 1)
    out["events_foreign"] = sum(1 for e in obs["events"].values() if (e.get("uid") or "") not in tasks)
    out["events_unreadable"] = obs.get("unknown_events", 0)
    return out


def schedules(obs: dict[str, Any], until: float, grace: float = 30.0,
              outages: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """Each schedule's ticks from its creation until `until` (checker seconds, the suspension):
    missed (no run) and run twice (two tasks for one tick), and how late runs were made. A tick
    that fell while no operator could act (`outages`: the leader lost, the API server away) may be
    missed by policy (after downtime only the latest missed tick runs): such are counted apart."""
    import datetime as dt

    runs: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in obs["tasks"].values():
        if t.get("schedule") and t.get("tick"):
            runs[f"{t['ns']}/{t['schedule']}"][int(t["tick"])].append(t["seen"])
    wall0 = obs["wall0"]
    missed: list[str] = []
    excused: list[str] = []
    twice: list[str] = []
    late: list[float] = []
    for key, s in obs["schedules"].items():
        created = dt.datetime.fromisoformat(str(s["created"]).replace("Z", "+00:00")).timestamp()
        first = int(created // 60 + 1) * 60
        last = wall0 + until - grace
        ticks = range(first, int(last) + 1, 60)
        got = runs.get(key, {})
        for tick in ticks:
            if tick not in got:
                during = any(a <= tick - wall0 <= b for a, b in outages or [])
                (excused if during else missed).append(f"{key}@{tick}")
        for tick, seen in got.items():
            if len(seen) > 1:
                twice.append(f"{key}@{tick}")
            late.append(min(seen) - (tick - wall0))
    return {"schedules": len(obs["schedules"]), "runs": sum(len(v) for v in runs.values()), "missed": missed,
            "missed_during_outages": excused,
            "run_twice": twice, "late_p50_s": rounded(pct(late, 50)), "late_p99_s": rounded(pct(late, 99)),
            "late_max_s": rounded(max(late) if late else None)}


def fair_share(sent: list[dict[str, Any]], obs: dict[str, Any], t0: float, tolerance: float = 0.5) -> dict[str, Any]:
    """Of the burst's starts (a pod made: a slot taken) while every application had tasks waiting,
    each application's share, against an equal share."""
    burst = [s for s in sent if s["phase"] == "burst" and s.get("uid")]
    if not burst:
        return {}
    first_pod: dict[str, float] = {}
    for p in obs["pods"].values():
        if p["task"] not in first_pod or p["seen"] < first_pod[p["task"]]:
            first_pod[p["task"]] = p["seen"]
    apps = sorted({s["app"] for s in burst})
    events = sorted([(s["created"] - t0, 0, s["app"]) for s in burst if s.get("created")]
                    + [(first_pod[s["uid"]], 1, s["app"]) for s in burst if s["uid"] in first_pod])
    waiting: Counter[str] = Counter()
    starts: Counter[str] = Counter()
    for _, kind, app in events:
        if kind == 0:
            waiting[app] += 1
            continue
        if all(waiting[a] > 0 for a in apps):
            starts[app] += 1
        waiting[app] -= 1
    contested = sum(starts.values())
    fair = 1 / len(apps)
    shares = {a: round(starts[a] / contested, 4) if contested else None for a in apps}
    unfair = [a for a, v in shares.items() if v is not None and not (fair * (1 - tolerance) <= v <= fair *
                                                                       (1 + tolerance))]
    waits: dict[str, list[float]] = defaultdict(list)
    for s in burst:
        if s["uid"] in first_pod and s.get("created"):
            waits[s["app"]].append(first_pod[s["uid"]] - (s["created"] - t0))
    queue = burst[0]["queue"]
    start, end = min(s["created"] for s in burst if s.get("created")) - t0, max(first_pod.get(s["uid"], 0.0)
                                                                                 for s in burst)
    used = [o.get(queue, 0) for t, o in obs["occupancy"] if start <= t <= end]
    return {"queue": queue, "slots_used_mean": round(sum(used) / len(used), 1) if used else None,
            "slots_used_max": max(used, default=None), "limit": obs["limits"].get(queue),
            "contested_starts": contested, "fair_share": round(fair, 4), "shares": shares, "unfair": unfair,
            "wait_p99_s": {a: rounded(pct(v, 99), 1) for a, v in sorted(waits.items())}}


def leader_at(lease: list[list[Any]], t: float) -> str:
    holder = ""
    for at, who, _, _ in lease:
        if at > t:
            break
        holder = who
    return holder


def probes_of_leader(obs: dict[str, Any], start: float, end: float) -> list[float]:
    return [ms for at, who, ms in obs["probes"] if start <= at <= end and ms is not None
            and who == leader_at(obs["lease"], at)]


def process_series(obs: dict[str, Any], name: str) -> list[tuple[float, float, float]]:
    """(t, cores since the previous sample, RSS MB) of one process."""
    out = []
    prev: tuple[float, float] | None = None
    for row in obs["samples"]:
        cpu, rss = (row["procs"].get(name) or (None, None))
        if cpu is None or rss is None:
            prev = None
            continue
        if prev is not None and row["t"] > prev[0]:
            out.append((row["t"], max(0.0, (cpu - prev[1]) / (row["t"] - prev[0])), rss))
        prev = (row["t"], cpu)
    return out


def resources(obs: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """Each process's mean CPU and RSS over [start, end]; the leaders' RSS flatness (from their
    5th minute of leading on), and the busiest processes."""
    names = sorted({n for row in obs["samples"] for n in row["procs"]})
    per: dict[str, Any] = {}
    for name in names:
        pts = [p for p in process_series(obs, name) if start <= p[0] <= end]
        if pts:
            per[name] = {"cores": round(sum(p[1] for p in pts) / len(pts), 3),
                         "cores_p95": rounded(pct([p[1] for p in pts], 95)),
                         "rss_mb": round(pts[-1][2], 1), "rss_max_mb": round(max(p[2] for p in pts), 1)}
    leaders: dict[str, Any] = {}
    spans: list[tuple[str, float, float]] = []
    for at, who, _, _ in obs["lease"]:
        if spans and spans[-1][0] == who:
            continue
        spans.append((who, at, math.inf))
        if len(spans) > 1:
            spans[-2] = (spans[-2][0], spans[-2][1], at)
    for who, a, b in spans:
        if not who:
            continue
        pts = [p for p in process_series(obs, f"operator:{who}") if max(a, start) <= p[0] <= min(b, end)]
        if not pts:
            continue
        minutes = (pts[-1][0] - pts[0][0]) / 60
        steady = [p[2] for p in pts if p[0] >= pts[0][0] + 300]
        leaders[who] = {"led_min": round(minutes, 1), "cores": round(sum(p[1] for p in pts) / len(pts), 3),
                        "rss_start_mb": round(pts[0][2], 1), "rss_end_mb": round(pts[-1][2], 1),
                        "rss_steady_spread": round(max(steady) / min(steady) - 1, 3) if len(steady) > 30 else None}
    busiest = sorted(((v["cores"], k) for k, v in per.items()), reverse=True)[:4]
    return {"processes": per, "leaders": leaders, "busiest": [f"{k} {c:.2f}" for c, k in busiest]}


def api_writes(obs: dict[str, Any], start: float, end: float, tasks: int, creates_by_driver: int) -> dict[str, Any]:
    """Writes the API server counted between `start` and `end` (apiserver_request_total deltas,
    across its restarts), per task: all of them, and the operator's own."""
    scrapes = [s for s in obs["scrapes"] if start - 30 <= s[0] <= end + 60]
    if len(scrapes) < 2 or not tasks:
        return {}
    total: dict[str, float] = defaultdict(float)
    for (_, before, _), (_, after, _) in zip(scrapes, scrapes[1:], strict=False):
        for key, value in after.items():
            delta = value - before.get(key, 0.0)
            total[key] += value if delta < 0 else delta  # a restarted server counts from zero
    own = sum((v for k, v in total.items() if k.rsplit(" ", 1)[0] in OPERATOR_WRITES or k in OPERATOR_WRITES), 0.0)
    # LimeTasks the operator made: the schedules' runs (the driver made the rest).
    own += max(0.0, total.get("POST limetasks", 0.0) - creates_by_driver)
    return {"per_task": round(sum(total.values()) / tasks, 2), "operator_per_task": round(own / tasks, 2),
            "by_kind": {k: round(v / tasks, 2) for k, v in sorted(total.items(), key=lambda kv: -kv[1])[:14]},
            "tasks": tasks}


def stored(obs: dict[str, Any], resource: str = "limetasks.limetask.io", start: float = -math.inf,
           end: float = math.inf) -> dict[str, Any]:
    # A restarted API server reports -1 until it has counted again.
    series = [(t, st[resource]) for t, _, st in obs["scrapes"]
              if (st.get(resource) or -1) >= 0 and start <= t <= end]
    return {"max": max((v for _, v in series), default=None), "last": series[-1][1] if series else None}


def archive_rate(obs: dict[str, Any], start: float, end: float) -> float | None:
    pts = [(float(t), int(n)) for t, n in obs["archive_counts"] if start <= t <= end]
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return None
    return round((pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]), 2)


def lease_figures(obs: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    pts = [p for p in obs["lease"] if start <= p[0] <= end]
    renewals = [p for i, p in enumerate(pts) if i == 0 or p[2] != pts[i - 1][2]]
    gaps = [b[0] - a[0] for a, b in zip(renewals, renewals[1:], strict=False)]
    holders = [p[1] for p in pts]
    changes = sum(1 for a, b in zip(holders, holders[1:], strict=False) if a != b)
    minutes = max((end - start) / 60, 1e-9)
    return {"renewals_per_min": round(len(renewals) / minutes, 1), "max_gap_s": rounded(max(gaps) if gaps else None, 1),
            "holder_changes": changes}


def latencies(tasks: dict[str, dict[str, Any]], obs: dict[str, Any], t0: float, phase: str,
              start: float, end: float, outages: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """create -> first Job (tasks of unlimited queues: a limited one's wait is by design) and
    pod end -> final status (every task), for tasks created in [start, end]; with `outages`,
    only of the tasks whose life (creation to final status) crossed none of them."""
    ended: dict[str, float] = {}
    first_pod: dict[str, dict[str, Any]] = {}
    for p in obs["pods"].values():
        if p["ended"] is not None and (p["task"] not in ended or p["ended"] > ended[p["task"]]):
            ended[p["task"]] = p["ended"]
        if p["task"] not in first_pod or p["seen"] < first_pod[p["task"]]["seen"]:
            first_pod[p["task"]] = p
    to_job, to_final, finals, to_pod, to_running = [], [], [], [], []
    for uid, t in tasks.items():
        s, w = t["sent"], t["watch"]
        if not s or s["phase"] != phase or not s.get("created") or not start <= s["created"] - t0 <= end:
            continue
        if outages is not None:
            done = w["finals"][0][4] if w and w["finals"] else math.inf
            if any(s["created"] - t0 <= b and done >= a for a, b in outages):
                continue
        if uid in obs["job_first"] and obs["limits"].get(s["queue"]) is None:
            to_job.append(obs["job_first"][uid] - (s["created"] - t0))
        pod = first_pod.get(uid)
        if pod is not None and uid in obs["job_first"]:
            to_pod.append(pod["seen"] - obs["job_first"][uid])  # the job controller
            if pod["running"] is not None:
                to_running.append(pod["running"] - pod["seen"])  # the scheduler and the (simulated) node
        if w and w["finals"]:
            finals.append(w["finals"][0][4])
            if uid in ended:
                to_final.append(w["finals"][0][4] - ended[uid])
    span = (max(finals) - min(finals)) if len(finals) > 1 else None
    return {"create_to_job_p50_s": rounded(pct(to_job, 50)), "create_to_job_p99_s": rounded(pct(to_job, 99)),
            "pod_end_to_final_p50_s": rounded(pct(to_final, 50)), "pod_end_to_final_p99_s": rounded(pct(to_final, 99)),
            "job_to_pod_p50_s": rounded(pct(to_pod, 50)), "job_to_pod_p99_s": rounded(pct(to_pod, 99)),
            "pod_to_running_p50_s": rounded(pct(to_running, 50)), "pod_to_running_p99_s": rounded(pct(to_running, 99)),
            "final_per_s": round(len(finals) / span, 2) if span else None, "n": len(finals)}


REACTION = ("n", "create_to_job_p50_s", "create_to_job_p99_s", "pod_end_to_final_p50_s", "pod_end_to_final_p99_s")


def flood_figures(tasks: dict[str, dict[str, Any]], obs: dict[str, Any], t0: float, flood: dict[str, Any],
                  sustained: tuple[float, float], outages: list[tuple[float, float]]) -> dict[str, Any]:
    """The flood (`--flood`): the other tenants' reaction (their tasks away from faults) before
    it, while it lasted (from its first create until its last task was final) and after, beside
    the flooding namespace's own (every task of it); the LimeTasks stored at the peak; how long
    it took to create and to drain. `flood` is the driver's record (monotonic seconds)."""
    start, created_end = flood["start"] - t0, flood["created_end"] - t0
    s_start, s_end = sustained
    mine = [t for t in tasks.values() if (t["sent"] or {}).get("phase") == "flood"]
    finals = [t["watch"]["finals"][0][4] for t in mine if t["watch"] and t["watch"]["finals"]]
    drained = max(finals) if finals and len(finals) == len(mine) else None
    windows: dict[str, tuple[float, float] | None] = {
        "before": (s_start, start),
        "during": (start, min(drained if drained is not None else math.inf, s_end)),
        "after": (drained, s_end) if drained is not None and drained < s_end else None}

    def reaction(phase: str, a: float, b: float, away: list[tuple[float, float]] | None) -> dict[str, Any]:
        figures = latencies(tasks, obs, t0, phase, a, b, away)
        return {k: figures[k] for k in REACTION}

    others = {name: (reaction("sustained", *w, outages) if w is not None else None) for name, w in windows.items()}
    created = sum(1 for t in mine if (t["sent"] or {}).get("uid"))
    return {
        "namespace": flood.get("namespace"), "queue": flood.get("queue"), "n": flood.get("n"), "created": created,
        "final": len(finals), "create_s": round(created_end - start, 1),
        "create_per_s": round(created / (created_end - start), 1) if created_end > start else None,
        "drain_s": rounded(drained - start, 1) if drained is not None else None,
        "windows": {k: [round(w[0], 1), round(w[1], 1)] if w is not None else None for k, w in windows.items()},
        "others": others, "own": reaction("flood", start, math.inf, None),
        "stored_peak": stored(obs, start=start, end=(drained if drained is not None else math.inf) + 60)["max"],
    }


def fault_figures(faults: list[dict[str, Any]], tasks: dict[str, dict[str, Any]], obs: dict[str, Any],
                  t0: float, lc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fault: how long it took to heal, and what of the tasks that crossed it went wrong."""
    bad = {k: set(lc[k]) for k in ("lost", "two_finals", "wrong_outcome", "events_missing", "rows_missing",
                                    "rows_duplicated")}
    ended: dict[str, float] = {}
    for p in obs["pods"].values():
        if p["ended"] is not None:
            ended[p["task"]] = max(ended.get(p["task"], 0.0), p["ended"])
    out = []
    for f in faults:
        start = f["start"] - t0
        restored = (f["restored"] or f["start"]) - t0
        window = (start - 5, restored + 30)
        crossed = []
        for uid, t in tasks.items():
            w = t["watch"] or {}
            first_final = (w.get("finals") or [[None] * 5])[0][4]
            seen = w.get("seen")
            if (seen is not None and seen <= window[1]) and (first_final is None or first_final >= window[0]):
                crossed.append(uid)
        heal: float | None = None
        if f["kind"] == "leader":
            killed = f["detail"].get("killed")
            heal = next((at - start for at, who, _, _ in obs["lease"] if at > start and who and who != killed), None)
        elif f["kind"] in ("postgres", "rabbitmq"):
            done_by = []
            for uid in crossed:
                t = tasks[uid]
                w = t["watch"] or {}
                if not w.get("finals") or w["finals"][0][4] > restored:
                    continue
                if f["kind"] == "postgres":
                    done_by += [r["archived"] for r in t["rows"]]
                else:
                    done_by += [e["first"] for e in t["events"].values()]
            heal = max([d - restored for d in done_by], default=0.0)
            heal = max(heal, 0.0)
        elif f["kind"] == "apiserver":
            backlog = [tasks[u]["watch"]["finals"][0][4] - restored for u in crossed
                       if u in ended and start <= ended[u] <= restored and (tasks[u]["watch"] or {}).get("finals")]
            heal = max(max(backlog, default=0.0), 0.0)
        out.append({"kind": f["kind"], "at_s": round(start, 1), "lasted_s": round(restored - start, 1),
                    "heal_s": rounded(heal, 1), "tasks_crossing": len(crossed),
                    "wrong": {k: len(v & set(crossed)) for k, v in bad.items() if v & set(crossed)},
                    "detail": f["detail"]})
    return out


def analyze(obs: dict[str, Any], sent: list[dict[str, Any]], faults: list[dict[str, Any]],
            phases: dict[str, tuple[float, float]], t0: float, cfg: dict[str, Any],
            flood: dict[str, Any] | None = None) -> dict[str, Any]:
    tasks = universe(obs, sent)
    lc = lifecycle(tasks, obs)
    rel = {k: (a - t0, b - t0) for k, (a, b) in phases.items()}
    sustained = [v for k, v in rel.items() if k.startswith("sustained")]
    s_start, s_end = (sustained[0][0], sustained[-1][1]) if sustained else (0.0, 0.0)
    faults_seen = fault_figures(faults, tasks, obs, t0, lc)
    down = [(f["at_s"], f["at_s"] + f["lasted_s"] + (f["heal_s"] or 0.0)) for f in faults_seen
            if f["kind"] in ("leader", "apiserver")]
    sched = schedules(obs, s_end, outages=down)
    limits = obs["limits"]
    overruns = {q: obs["most"].get(q, {}) for q in limits}
    invariants = {
        "tasks without a final state (lost)": len(lc["lost"]),
        "tasks with two final states": len(lc["two_finals"]),
        "tasks with another outcome than their pod's": len(lc["wrong_outcome"]),
        "attempts run twice (a 2nd Job or pod)": lc["jobs_duplicated"] + lc["pods_duplicated"],
        "events missing": len(lc["events_missing"]),
        "events of another state than the final": len(lc["events_wrong_state"]),
        "events of unknown tasks": lc["events_foreign"],
        "archive rows missing": len(lc["rows_missing"]),
        "archive rows duplicated": len(lc["rows_duplicated"]),
        "archive rows of another state": len(lc["rows_wrong_state"]),
        "queue limit overruns (most pods over the limit)": sum(max(0, int(v.get("pods", 0)) - limits[q])
                                                              for q, v in overruns.items()),
        "schedule ticks missed (outside outages)": len(sched["missed"]),
        "schedule ticks run twice": len(sched["run_twice"]),
    }
    fair = fair_share(sent, obs, t0)
    if fair:
        invariants["applications outside fair share (burst)"] = len(fair["unfair"])
    report: dict[str, Any] = {
        "config": cfg,
        "created": sum(1 for s in sent if s.get("uid")), "create_failures": sum(1 for s in sent if not s.get("uid")),
        "tasks": lc["tasks"], "invariants": invariants,
        "duplicated_events_delivered": lc["events_duplicated"], "redelivered": lc["events_redelivered"],
        "examples": {k: [describe(tasks[u]) for u in lc[k][:3]] for k in (
            "lost", "two_finals", "wrong_outcome", "events_missing", "rows_missing", "rows_duplicated")
            if lc[k]},
        "schedules": sched, "fair_share": fair, "queues": overruns, "phases": {},
    }
    report["faults"] = faults_seen
    outages = [(f["at_s"], f["at_s"] + f["lasted_s"] + (f["heal_s"] if f["heal_s"] is not None else 30.0))
               for f in report["faults"]]
    by_phase = phase_of(sent, t0, rel)
    for name, (a, b) in rel.items():
        phase = "burst" if name == "burst" else "sustained"
        figures: dict[str, Any] = latencies(tasks, obs, t0, phase, a, b)
        steady = latencies(tasks, obs, t0, phase, a, b, outages)
        figures["steady"] = {k: v for k, v in steady.items() if k.endswith("_s") or k == "n"}
        mine = {u for u, p in by_phase.items() if p == name}
        figures["invariants"] = {k: len(set(lc[k]) & mine) for k in (
            "lost", "two_finals", "wrong_outcome", "events_missing", "rows_missing", "rows_duplicated")}
        lag = probes_of_leader(obs, a, b)
        figures["loop_lag_p50_ms"] = rounded(pct(lag, 50), 1)
        figures["loop_lag_p99_ms"] = rounded(pct(lag, 99), 1)
        figures["resources"] = resources(obs, a, b)
        figures["lease"] = lease_figures(obs, a, b)
        figures["archive_rows_per_s"] = archive_rate(obs, a, b)
        creates = sum(1 for s in sent if s.get("uid") and a <= s["created"] - t0 <= b)
        runs = sum(1 for t in obs["tasks"].values() if t.get("schedule") and a <= t["seen"] <= b)
        figures["api_writes"] = api_writes(obs, a, b, creates + runs, creates)
        figures["seconds"] = round(b - a, 1)
        report["phases"][name] = figures
    report["stored_limetasks"] = stored(obs)
    report["flood"] = flood_figures(tasks, obs, t0, flood, (s_start, s_end), outages) if flood else None
    if rel:
        first, last = min(a for a, _ in rel.values()), max(b for _, b in rel.values())
        created = report["created"]
        report["api_writes"] = api_writes(obs, first, math.inf, len(tasks), created)
        report["timeline"] = timeline(obs, first, last + 60)
    report["targets"] = targets(report)
    report["ceiling"] = ceiling(report)
    report["ok"] = all(v == 0 for v in invariants.values()) and bool(cfg.get("drained", True))
    return report


def phase_of(sent: list[dict[str, Any]], t0: float, phases: dict[str, tuple[float, float]]) -> dict[str, str]:
    """Which phase each sent task belongs to (by when it was created)."""
    out = {}
    for s in sent:
        if not s.get("uid") or not s.get("created"):
            continue
        at = s["created"] - t0
        for name, (a, b) in phases.items():
            if (name == "burst") == (s["phase"] == "burst") and a <= at <= b + 1:
                out[s["uid"]] = name
    return out


def timeline(obs: dict[str, Any], start: float, end: float) -> list[dict[str, Any]]:
    """Minute by minute: the leader's CPU and RSS, its event-loop lag, tasks finished, archive
    rows and LimeTasks stored."""
    finals = sorted(f[0][4] for f in (t["finals"] for t in obs["tasks"].values()) if f)
    rows = []
    minute = start
    while minute < end:
        nxt = minute + 60
        leader = leader_at(obs["lease"], nxt)
        pts = [p for p in process_series(obs, f"operator:{leader}") if minute <= p[0] < nxt]
        lag = probes_of_leader(obs, minute, nxt)
        counts = [n for t, n in obs["archive_counts"] if minute <= t < nxt]
        st = [v.get("limetasks.limetask.io") for t, _, v in obs["scrapes"]
              if minute <= t < nxt and (v.get("limetasks.limetask.io") or -1) >= 0]
        rows.append({"minute": round((minute - start) / 60), "leader": leader,
                     "cores": round(sum(p[1] for p in pts) / len(pts), 3) if pts else None,
                     "rss_mb": round(pts[-1][2], 1) if pts else None,
                     "lag_p99_ms": rounded(pct(lag, 99), 1),
                     "final_per_s": round(sum(1 for f in finals if minute <= f < nxt) / 60, 2),
                     "archive_rows_per_s": round((counts[-1] - counts[0]) / 60 * len(counts) / max(len(counts) - 1, 1),
                                                 2) if len(counts) > 1 else None,
                     "limetasks_stored": next((v for v in reversed(st) if v is not None), None)})
        minute = nxt
    return rows


def ceiling(report: dict[str, Any]) -> dict[str, Any] | None:
    """Of the rates tried in turn, the first at which an invariant or a target broke, and what."""
    rates = [n for n in report["phases"] if n.startswith("sustained@")]
    if len(rates) < 2:
        return None
    for name in rates:
        f = report["phases"][name]
        broke = [f"{k} {v}" for k, v in f["invariants"].items() if v]
        broke += [f"{t['what']} {t['value']} > {t['target']}" for t in report["targets"]
                  if t["phase"] == name and t["met"] is False]
        if broke:
            return {"rate": name.split("@", 1)[1], "broke": broke, "busiest": f["resources"]["busiest"],
                    "lag_p99_ms": f["loop_lag_p99_ms"]}
    return {"rate": None, "broke": [], "note": f"every rate tried held: the ceiling is above {rates[-1]}"}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, met or not, per phase."""
    rows = []
    for name, f in report["phases"].items():
        leaders = f["resources"]["leaders"]
        cores = max((v["cores"] for v in leaders.values()), default=None)
        spreads = [v["rss_steady_spread"] for v in leaders.values() if v["rss_steady_spread"] is not None]
        steady = f["steady"]
        react = max([v for v in (steady["create_to_job_p99_s"], steady["pod_end_to_final_p99_s"]) if v is not None],
                    default=None)
        checks = [("operator CPU (cores, leader mean)", cores, TARGETS["operator_cores"]),
                  ("reaction p99 away from faults (s)", react, TARGETS["reaction_p99_s"])]
        if name.startswith("sustained@") and sum(1 for n in report["phases"] if n.startswith("sustained@")) > 1:
            # The ceiling's rates, each its own phase: the writes of each.
            checks.append(("operator API writes per task", (f["api_writes"] or {}).get("operator_per_task"),
                           TARGETS["writes_per_task"]))
        if spreads:
            checks.append(("leader RSS spread from minute 5", max(spreads), TARGETS["rss_flat"]))
        if name == "burst":
            checks.append(("event-loop lag p99 (ms)", f["loop_lag_p99_ms"], TARGETS["burst_lag_p99_ms"]))
            checks.append(("leases lost (holder changes)", f["lease"]["holder_changes"], 0))
        for what, value, limit in checks:
            rows.append({"phase": name, "what": what, "value": value, "target": limit,
                         "met": None if value is None else value <= limit})
        fair = report.get("fair_share") or {}
        if name == "burst" and fair.get("limit") and fair.get("slots_used_mean") is not None:
            used = round(fair["slots_used_mean"] / fair["limit"], 2)
            rows.append({"phase": name, "what": "slots in use / the queue's limit (mean)", "value": used,
                         "target": TARGETS["burst_slots_used"], "at_least": True,
                         "met": used >= TARGETS["burst_slots_used"]})
    flood = report.get("flood") or {}
    if flood:
        # A namespace that floods slows its own tasks, not the others'.
        during = flood["others"]["during"] or {}
        react = max([v for v in (during.get("create_to_job_p99_s"), during.get("pod_end_to_final_p99_s"))
                     if v is not None], default=None)
        rows.append({"phase": "flood", "what": "the other tenants' reaction p99 during the flood (s)", "value": react,
                     "target": TARGETS["reaction_p99_s"], "met": None if react is None else react <= TARGETS[
                         "reaction_p99_s"]})
    writes = (report.get("api_writes") or {}).get("operator_per_task")
    rows.append({"phase": "run", "what": "operator API writes per task", "value": writes,
                 "target": TARGETS["writes_per_task"], "met": None if writes is None else writes <= TARGETS[
                     "writes_per_task"]})
    return rows


def sec(value: float | None) -> str:
    return "-" if value is None else f"{value}s"


def flood_table(f: dict[str, Any]) -> list[str]:
    """The flood's lines of the table: the others before, during and after it; its own."""
    drained = (f"all final {sec(f['drain_s'])} after its first create" if f["drain_s"] is not None
               else f"only {f['final']} final")
    lines = [f"flood: {f['created']} of {f['n']} tasks from {f['namespace']} into {f['queue']}: created in "
             f"{sec(f['create_s'])} ({f['create_per_s']}/s), {drained}; LimeTasks in etcd at the peak "
             f"{f['stored_peak']}"]
    rows = [(f"others {name}", f["windows"][name], figures) for name, figures in f["others"].items()]
    rows.append(("flooder's own", None, f["own"]))
    for what, window, r in rows:
        span = f" ({window[0]}..{window[1]}s)" if window else ""
        if r is None:
            lines.append(f"  {what}{span}: none (the flood did not end within the sustained phase)")
            continue
        lines.append(f"  {what}{span}, {r['n']} tasks: create->Job p50 {sec(r['create_to_job_p50_s'])} p99 "
                     f"{sec(r['create_to_job_p99_s'])}; pod end->final p50 {sec(r['pod_end_to_final_p50_s'])} p99 "
                     f"{sec(r['pod_end_to_final_p99_s'])}")
    return lines


def table(report: dict[str, Any]) -> str:
    if not report:
        return "no report (the run did not finish)"
    c = report["config"]
    lines = [f"soak: {report['created']} tasks created ({report['create_failures']} not), {report['tasks']} in all "
             f"with schedule runs; {c.get('rate')}/s for {c.get('duration_s')}s, burst {c.get('burst')}, "
             f"{c.get('replicas')} replicas; machine {c.get('machine')}"]
    lines.append("invariants (each must be 0)")
    for what, n in report["invariants"].items():
        lines.append(f"  {'ok  ' if n == 0 else 'FAIL'} {n:>7}  {what}")
    lines.append(f"  (at-least-once: {report['duplicated_events_delivered']} duplicate deliveries, "
                 f"{report['redelivered']} flagged redelivered; drained: {c.get('drained')})")
    s = report["schedules"]
    lines.append(f"schedules: {s['schedules']} with {s['runs']} runs, {len(s['missed_during_outages'])} ticks missed "
                 f"while the leader or the API server was away; run late p50 {sec(s['late_p50_s'])} p99 "
                 f"{sec(s['late_p99_s'])} max {sec(s['late_max_s'])} after the tick")
    for q, v in report["queues"].items():
        lines.append(f"queue {q}: most pods at once {v.get('pods')} (Jobs {v.get('jobs')}), "
                     f"{v.get('over_s', 0):.0f}s over its limit")
    if report["fair_share"]:
        f = report["fair_share"]
        known = [v for v in f["shares"].values() if v is not None]
        lines.append(f"burst into {f['queue']} (maxRunning {f['limit']}): pods holding a slot {f['slots_used_mean']} "
                     f"on average, {f['slots_used_max']} at most; fair share: {f['contested_starts']} contested "
                     f"starts, each application {min(known, default=None)}..{max(known, default=None)} "
                     f"(fair {f['fair_share']})")
    for name, f in report["phases"].items():
        lines.append(f"phase {name} ({f['seconds']}s, {f['n']} tasks final, {f['final_per_s']}/s):")
        lines.append(f"  create->Job p50 {sec(f['create_to_job_p50_s'])} p99 {sec(f['create_to_job_p99_s'])}; "
                     f"pod end->final p50 {sec(f['pod_end_to_final_p50_s'])} p99 {sec(f['pod_end_to_final_p99_s'])}")
        lines.append(f"  the control plane: Job->pod (job controller) p50 {sec(f['job_to_pod_p50_s'])} p99 "
                     f"{sec(f['job_to_pod_p99_s'])}; pod->running (scheduler, KWOK) p50 "
                     f"{sec(f['pod_to_running_p50_s'])} p99 {sec(f['pod_to_running_p99_s'])}")
        st = f["steady"]
        lines.append(f"  away from faults ({st['n']} tasks): create->Job p50 {sec(st['create_to_job_p50_s'])} p99 "
                     f"{sec(st['create_to_job_p99_s'])}; pod end->final p50 {sec(st['pod_end_to_final_p50_s'])} p99 "
                     f"{sec(st['pod_end_to_final_p99_s'])}")
        lines.append(f"  event-loop lag (liveness probe of the leader) p50 {f['loop_lag_p50_ms']} ms "
                     f"p99 {f['loop_lag_p99_ms']} ms")
        for who, v in f["resources"]["leaders"].items():
            lines.append(f"  leader {who}: {v['led_min']} min, {v['cores']} cores, RSS {v['rss_start_mb']} -> "
                         f"{v['rss_end_mb']} MB (spread from minute 5: {v['rss_steady_spread']})")
        lines.append(f"  busiest: {', '.join(f['resources']['busiest'])}")
        inv = ", ".join(f"{k} {v}" for k, v in f["invariants"].items() if v) or "none"
        lines.append(f"  invariants broken by this phase's tasks: {inv}")
        le = f["lease"]
        lines.append(f"  lease: {le['renewals_per_min']} renewals/min, longest gap {le['max_gap_s']}s, "
                     f"{le['holder_changes']} holder changes; archive {f['archive_rows_per_s']} rows/s")
    st = report["stored_limetasks"]
    lines.append(f"LimeTasks in etcd: at most {st['max']}, at the end {st['last']}")
    if report.get("flood"):
        lines += flood_table(report["flood"])
    w = report.get("api_writes") or {}
    if w:
        kinds = ", ".join(f"{k} {v}" for k, v in w["by_kind"].items())
        lines.append(f"API writes per task over the run ({w['tasks']} tasks): {w['per_task']} in all, "
                     f"{w['operator_per_task']} the operator's; {kinds}")
    if report.get("timeline"):
        lines.append("minute  leader            cores  RSS MB  lag p99 ms  final/s  archived/s  LimeTasks")
        for r in report["timeline"]:
            lines.append(f"{r['minute']:>6}  {r['leader'][:16]:<16}  {r['cores'] if r['cores'] is not None else '-':>5}"
                         f"  {r['rss_mb'] if r['rss_mb'] is not None else '-':>6}  "
                         f"{r['lag_p99_ms'] if r['lag_p99_ms'] is not None else '-':>10}  {r['final_per_s']:>7}  "
                         f"{r['archive_rows_per_s'] if r['archive_rows_per_s'] is not None else '-':>10}  "
                         f"{r['limetasks_stored'] if r['limetasks_stored'] is not None else '-':>9}")
    if report.get("ceiling"):
        c = report["ceiling"]
        lines.append(f"ceiling: first broken at {c.get('rate')}/s: {'; '.join(c.get('broke') or []) or c.get('note')}"
                     f" (busiest: {', '.join(c.get('busiest') or [])})")
    for f in report["faults"]:
        wrong = ", ".join(f"{k} {v}" for k, v in f["wrong"].items()) or "nothing lost"
        lines.append(f"fault {f['kind']} at {f['at_s']}s for {f['lasted_s']}s: healed {f['heal_s']}s after; "
                     f"{f['tasks_crossing']} tasks crossed it: {wrong}")
    lines.append("targets")
    for t in report["targets"]:
        mark = "n/a " if t["met"] is None else ("met " if t["met"] else "MISS")
        lines.append(f"  {mark} {t['phase']}: {t['what']} {t['value']} (target {'>=' if t.get('at_least') else '<='} "
                     f"{t['target']})")
    for k, v in report["examples"].items():
        lines.append(f"example {k}: {v[0]}")
    return "\n".join(lines)
