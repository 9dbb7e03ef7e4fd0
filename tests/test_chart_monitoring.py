"""The chart's monitoring: its PrometheusRule and its Grafana dashboard.

Every alert and every dashboard query may name only series the operator exports (read from its
metrics module) and must select this release's operator by namespace and job. Prometheus' own
promtool (built from the Go module proxy, devtools/monitoring/build-promtool.sh) checks the
rules, parses the dashboard's queries, and runs each alert against the series it is written for
and against healthy ones. The e2e test installs the chart with every option on into a cluster
that has the Prometheus operator's CRDs, so the API server checks the ServiceMonitor and the
PrometheusRule against the real schemas.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_chart
import yaml
from conftest import REPO, Cluster, wait_until
from test_chart import CHART, MODES, RELEASE, RELEASE_NAMESPACE, exists, kubectl_json, of_kind, one, render

# The chart's fixtures: the loaded chart, a Helm client of the cluster, a release name.
chart = test_chart.chart
helm_config = test_chart.helm_config
release = test_chart.release

MONITORING = REPO / "devtools" / "monitoring"
DASHBOARD = CHART / "dashboards" / "limetask.json"
JOB = f"{RELEASE}-limetask-metrics"
SELECTOR = f'namespace="{RELEASE_NAMESPACE}", job="{JOB}"'
# The alerts, by name, and their severity.
ALERTS = {"LimeTaskOperatorDown": "critical", "LimeTaskNoLeader": "critical", "LimeTaskLeaseLost": "warning",
          "LimeTaskOperatorStalled": "warning", "LimeTaskArchiveDown": "critical",
          "LimeTaskEventsBacklog": "warning", "LimeTaskEventsDeadLettered": "warning",
          "LimeTaskEventsDeadLetterFailing": "critical", "LimeTaskEventsDropped": "critical",
          "LimeTaskQueueWaitTooLong": "warning", "LimeTaskEventLoopLag": "warning"}
# Series Prometheus makes itself for each target, which the operator does not export.
PROMETHEUS_SERIES = {"up"}
RULES_ON = {"metrics": {"prometheusRule": {"enabled": True, "alertLabels": {"team": "platform"}}}}


# --------------------------------------------------------------------------------------------
# What the operator exports, and what a query names
# --------------------------------------------------------------------------------------------

# The series of each kind of metric family (prometheus_client's names: a counter's family is
# named without _total).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "stateset": ("",),
            "gaugehistogram": ("_bucket", "_gcount", "_gsum"), "unknown": ("",)}


def exported() -> tuple[set[str], dict[str, set[str]]]:
    """The series names the operator's metrics endpoint serves (its registry, the archive's
    metrics and the collector of tasks by state), and the `le` bounds of each histogram that has
    a series without labels."""
    from limetask_operator import metrics
    from prometheus_client import REGISTRY

    metrics.archive_metrics()  # registered only by an operator that has an archive
    families = [*REGISTRY.collect(), *metrics.StateCollector(lambda: {}, lambda: 0).collect()]
    names: set[str] = set()
    bounds: dict[str, set[str]] = {}
    for family in families:
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        for sample in family.samples:
            names.add(sample.name)
            if sample.name.endswith("_bucket"):
                bounds.setdefault(sample.name, set()).add(sample.labels["le"])
    return names, bounds


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan"}


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and numbers
    left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1).lower() not in KEYWORDS:
            names.add(match.group(1))
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """Each vector selector of an expression: (metric name, its label matchers)."""
    text = re.sub(r"\[[^\]]*\]", " ", expr)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = re.findall(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![A-Za-z0-9_:])\s*(?:\{([^}]*)\})?(?!\s*\()", text)
    return [(name, matchers) for name, matchers in found if name.lower() not in KEYWORDS]


def test_series_names_finds_what_a_query_selects() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, pod) (rate(limetask_x_bucket{job="a", le="+Inf"}[5m])))'
            ' > on (pod) group_left(queue) max without (queue) (limetask_y) * 1e3 or absent(up{job="q"} == 1)'
            ' unless sum(rate(b_total[$__rate_interval] offset 5m)) by (reason) > bool 0.5')
    assert series_names(expr) == {"limetask_x_bucket", "limetask_y", "up", "b_total"}
    assert selectors(expr) == [("limetask_x_bucket", 'job="a", le="+Inf"'), ("limetask_y", ""), ("up", 'job="q"'),
                               ("b_total", "")]
    assert series_names('label_values(limetask_workqueue_depth{namespace="$namespace"}, job)') == {
        "limetask_workqueue_depth", "job"}, "a label function's arguments read as names: check those queries apart"


def test_the_operator_exports_what_the_alerts_rely_on() -> None:
    """The series the chart's alerts and dashboard are built on, and the 10 s bound of the
    event-loop lag (the Lease's renew deadline, which LimeTaskOperatorStalled reads)."""
    names, bounds = exported()
    assert {"limetask_archive_up", "limetask_events_unconfirmed", "limetask_queue_oldest_wait_seconds",
            "limetask_event_loop_lag_seconds_bucket", "limetask_tasks_finished_total",
            "limetask_queue_latency_seconds_bucket", "limetask_workqueue_depth", "limetask_leader",
            "limetask_lease_lost_total"} <= names
    assert {"10.0", "+Inf"} <= bounds["limetask_event_loop_lag_seconds_bucket"]
    from limetask_operator.leader import ElectionTiming

    assert ElectionTiming().renew_deadline == 10.0, "LimeTaskOperatorStalled and its texts assume 10 s"
    assert ElectionTiming().lease_duration == 15.0, "the alerts' texts say a standby takes over within 15 s"


# --------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def promtool() -> Path:
    """Prometheus' promtool, built once into the cache (a few minutes the first time)."""
    result = subprocess.run(["bash", str(MONITORING / "build-promtool.sh")], text=True, capture_output=True,
                            check=False)
    if result.returncode != 0:
        pytest.fail(f"promtool could not be built (devtools/monitoring/build-promtool.sh):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1]) / "promtool"


def run_promtool(promtool: Path, *args: str, cwd: Path) -> str:
    result = subprocess.run([str(promtool), *args], text=True, capture_output=True, check=False, cwd=cwd)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --------------------------------------------------------------------------------------------
# The PrometheusRule
# --------------------------------------------------------------------------------------------

def rule_groups(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rule = one(render(chart, values or RULES_ON), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return rule["spec"]["groups"]  # type: ignore[no-any-return]


def alerts(chart: Any, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rule_groups(chart, values) for r in group["rules"]}


def test_no_rules_by_default(chart: Any) -> None:
    assert of_kind(render(chart), "PrometheusRule") == []
    assert of_kind(render(chart, {"metrics": {"serviceMonitor": {"enabled": True}}}), "PrometheusRule") == []


def test_each_alert_says_what_happened_and_what_to_do(chart: Any) -> None:
    found = alerts(chart)
    assert found.keys() == ALERTS.keys()
    for name, rule in found.items():
        whose = {"namespace": RELEASE_NAMESPACE, "job": JOB} if name == "LimeTaskOperatorDown" else {}
        assert rule["labels"] == {"severity": ALERTS[name], "team": "platform", **whose}, name
        assert rule["annotations"].keys() == {"summary", "description", "runbook"}, name
        assert all(len(text) > 40 for text in rule["annotations"].values()), name
    # The schema's list of alerts to leave out names exactly these.
    schema = json.loads((CHART / "values.schema.json").read_text())
    disabled = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["disabled"]
    assert set(disabled["items"]["enum"]) == ALERTS.keys()


def test_alerts_name_only_what_the_operator_exports(chart: Any) -> None:
    """An alert on a series the operator does not export never fires: each name must be one it
    serves (or Prometheus' own `up`), and each `le` a bound its histogram has."""
    names, bounds = exported()
    for name, rule in alerts(chart).items():
        used = series_names(rule["expr"])
        assert used, name
        assert used <= names | PROMETHEUS_SERIES, f"{name} names series the operator does not export: " \
                                                    f"{sorted(used - names - PROMETHEUS_SERIES)}"
        for metric, bound in re.findall(r'(\w+_bucket)\{[^}]*le="([^"]+)"', rule["expr"]):
            assert bound in bounds[metric], f"{name}: {metric} has no bucket le={bound}"


def test_alerts_select_this_releases_operator(chart: Any) -> None:
    """Two releases in one cluster never raise each other's alerts: every selector names the
    release's namespace and its metrics job (the metrics Service's name, the job label the
    ServiceMonitor gives)."""
    objects = render(chart, {**RULES_ON, "metrics": {**RULES_ON["metrics"], "serviceMonitor": {"enabled": True}}})
    service = next(s for s in of_kind(objects, "Service") if s["metadata"]["name"] == JOB)
    monitor = one(objects, "ServiceMonitor")
    assert "jobLabel" not in monitor["spec"], "the job label is the Service's name only without jobLabel"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    for name, rule in alerts(chart).items():
        found = selectors(rule["expr"])
        assert found, name
        for metric, matchers in found:
            assert SELECTOR in matchers, f"{name}: {metric}{{{matchers}}} does not select {SELECTOR}"


def test_alert_thresholds_and_durations_come_from_values(chart: Any) -> None:
    values = {"metrics": {"prometheusRule": {
        "enabled": True, "operatorDown": {"for": "2m"}, "noLeader": {"for": "90s"}, "archiveDown": {"for": "15m"},
        "eventsBacklog": {"threshold": 7, "for": "1h"}, "queueWait": {"thresholdSeconds": 90, "for": "0"},
        "eventLoopLag": {"thresholdSeconds": 0.25, "for": "30m"}}}}
    found = alerts(chart, values)
    assert {name: rule.get("for") for name, rule in found.items()} == {
        "LimeTaskOperatorDown": "2m", "LimeTaskNoLeader": "90s", "LimeTaskLeaseLost": None,
        "LimeTaskOperatorStalled": None, "LimeTaskArchiveDown": "15m",
        "LimeTaskEventsBacklog": "1h", "LimeTaskQueueWaitTooLong": "0", "LimeTaskEventLoopLag": "30m",
        # Any one event is worth an alert at once: no values.
        "LimeTaskEventsDeadLettered": None, "LimeTaskEventsDeadLetterFailing": None, "LimeTaskEventsDropped": None}
    assert found["LimeTaskEventsBacklog"]["expr"].endswith("> 7")
    assert "More than 7 finished tasks" in found["LimeTaskEventsBacklog"]["annotations"]["description"]
    assert found["LimeTaskQueueWaitTooLong"]["expr"].endswith("> 90")
    assert found["LimeTaskEventLoopLag"]["expr"].endswith("> 0.25")
    assert found["LimeTaskArchiveDown"]["labels"] == {"severity": "critical"}, "no alertLabels, none added"


def test_alerts_can_be_left_out(chart: Any) -> None:
    off = ["LimeTaskQueueWaitTooLong", "LimeTaskOperatorStalled"]
    found = alerts(chart, {"metrics": {"prometheusRule": {"enabled": True, "disabled": off}}})
    assert found.keys() == ALERTS.keys() - set(off)


@pytest.mark.parametrize("values, message", [
    ({"metrics": {"prometheusRule": {"disabled": ["LimeTaskArchiveGone"]}}},
     "at '/metrics/prometheusRule/disabled/0': value must be one of"),
    ({"metrics": {"prometheusRule": {"archiveDown": {"for": "5 minutes"}}}},
     "at '/metrics/prometheusRule/archiveDown/for': '5 minutes' does not match pattern"),
    ({"metrics": {"prometheusRule": {"archiveDown": {"for": "30s5m"}}}},
     "at '/metrics/prometheusRule/archiveDown/for': '30s5m' does not match pattern"),
    ({"metrics": {"prometheusRule": {"eventsBacklog": {"threshold": 0}}}},
     "at '/metrics/prometheusRule/eventsBacklog/threshold': minimum: got 0, want 1"),
    ({"metrics": {"prometheusRule": {"queueWait": {"thresholdSeconds": -1}}}},
     "at '/metrics/prometheusRule/queueWait/thresholdSeconds': exclusiveMinimum: got -1, want 0"),
    ({"metrics": {"serviceMonitor": {"interval": ""}}}, "at '/metrics/serviceMonitor/interval': minLength: got 0"),
    ({"metrics": {"serviceMonitor": {"labels": {"release": 1}}}},
     "at '/metrics/serviceMonitor/labels/release': got number, want string"),
    ({"metrics": {"grafanaDashboard": {"namespace": "Monitoring"}}},
     "at '/metrics/grafanaDashboard/namespace': 'Monitoring' does not match pattern"),
    ({"metrics": {"prometheus": {}}}, "at '/metrics': additional properties 'prometheus' not allowed"),
    ({"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1"]}}},
     "at '/networkPolicy/apiServer/cidrs/0': '10.0.0.1' does not match pattern"),
    ({"networkPolicy": {"metricsFrom": [{"namespace": "monitoring"}]}},
     "at '/networkPolicy/metricsFrom/0': additional properties 'namespace' not allowed"),
    ({"networkPolicy": {"webFrom": [{}]}}, "at '/networkPolicy/webFrom/0': minProperties: got 0, want 1"),
    ({"networkPolicy": {"broker": {"ports": []}}}, "at '/networkPolicy/broker/ports': minItems: got 0, want 1"),
    ({"networkPolicy": {"archive": {"ports": [70000]}}},
     "at '/networkPolicy/archive/ports/0': maximum: got 70,000, want 65,535"),
    ({"networkPolicy": {"extraEgress": [{"ports": [{"port": 80, "protocol": "HTTP"}]}]}},
     "at '/networkPolicy/extraEgress/0/ports/0/protocol': value must be one of"),
    ({"web": {"ingress": {"hosts": [{"host": "https://tasks.example.com"}]}}},
     "at '/web/ingress/hosts/0/host': 'https://tasks.example.com' does not match pattern"),
    ({"web": {"ingress": {"hosts": [{"host": "a.example.com", "paths": [{"path": "v1"}]}]}}},
     "at '/web/ingress/hosts/0/paths/0/path': 'v1' does not match pattern"),
    ({"web": {"ingress": {"tls": [{"hosts": ["a.example.com"]}]}}},
     "at '/web/ingress/tls/0': missing property 'secretName'"),
    ({"web": {"podDisruptionBudget": {"minAvailable": 1}}},
     "at '/web/podDisruptionBudget': additional properties 'minAvailable' not allowed"),
])
def test_schema_rejects_bad_monitoring_network_and_ingress_values(chart: Any, values: dict[str, Any],
                                                                  message: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as error:
        chart.validate_schema(values)
    assert message in str(error.value)


def test_promtool_accepts_the_rules(chart: Any, promtool: Path, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(chart)}))
    out = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


# Each alert against the series it is written for, and against healthy ones: (input series as
# (name, extra labels, values), [(eval time, expected alerts as (extra labels, the text
# $value gives))]). Series are a minute apart; "1x4 0x20" is 1 for five minutes, then 0.
Series = tuple[str, dict[str, str], str]
Expect = tuple[str, list[tuple[dict[str, str], str]]]
LAG = "limetask_event_loop_lag_seconds_bucket"
SCENARIOS: dict[str, list[tuple[list[Series], list[Expect]]]] = {
    "LimeTaskOperatorDown": [
        # The only replica stops answering at minute 5; another release's operator runs on.
        ([("up", {"pod": "a"}, "1x4 0x20"), ("up", {"job": "other-limetask-metrics", "pod": "x"}, "1x25")],
         [("3m", []), ("8m", []), ("12m", [({}, "")])]),
        ([("up", {"pod": "a"}, "1x25"), ("up", {"pod": "b"}, "0x25")], [("12m", [])]),
    ],
    "LimeTaskOperatorStalled": [
        # One lag sample above 10 s, between minutes 10 and 11 (the loop samples twice a second).
        ([(LAG, {"pod": "a", "le": "10.0"}, "0+120x30"), (LAG, {"pod": "a", "le": "+Inf"}, "0+120x10 1321+120x20"),
          (LAG, {"pod": "b", "le": "10.0"}, "0+120x30"), (LAG, {"pod": "b", "le": "+Inf"}, "0+120x30")],
         [("9m", []), ("15m", [({"pod": "a"}, "")]), ("25m", [])]),
    ],
    "LimeTaskNoLeader": [
        # a leads until minute 5 and stands by after; b never leads; another release's leads on.
        ([("limetask_leader", {"pod": "a"}, "1x4 0x20"), ("limetask_leader", {"pod": "b"}, "0x25"),
          ("limetask_leader", {"job": "other-limetask-metrics", "pod": "x"}, "1x25")],
         [("3m", []), ("6m", []), ("9m", [({}, "")])]),
        # the Lease changes hands: a minute with no leader is not an outage
        ([("limetask_leader", {"pod": "a"}, "1x4 0x20"), ("limetask_leader", {"pod": "b"}, "0x5 1x20")],
         [("9m", [])]),
    ],
    "LimeTaskLeaseLost": [
        ([("limetask_lease_lost_total", {"pod": "a"}, "0x5 1x30"), ("limetask_lease_lost_total", {"pod": "b"}, "0x35")],
         [("4m", []), ("8m", [({"pod": "a"}, "")]), ("20m", [])]),
    ],
    "LimeTaskArchiveDown": [
        ([("limetask_archive_up", {"pod": "a"}, "1x4 0x20"), ("limetask_leader", {"pod": "a"}, "1x25")],
         [("8m", []), ("12m", [({"pod": "a"}, "")])]),
        ([("limetask_archive_up", {"pod": "a"}, "1x25"), ("limetask_leader", {"pod": "a"}, "1x25")], [("12m", [])]),
        # a standby's gauge from when it last led, while the leader writes
        ([("limetask_archive_up", {"pod": "b"}, "0x25"), ("limetask_leader", {"pod": "b"}, "0x25"),
          ("limetask_archive_up", {"pod": "a"}, "1x25"), ("limetask_leader", {"pod": "a"}, "1x25")],
         [("12m", [])]),
    ],
    "LimeTaskEventsBacklog": [
        # The leader's backlog; the standby reports 0.
        ([("limetask_events_unconfirmed", {"pod": "a"}, "0x4 150x30"),
          ("limetask_events_unconfirmed", {"pod": "b"}, "0x35")],
         [("10m", []), ("20m", [({}, "150")])]),
        ([("limetask_events_unconfirmed", {"pod": "a"}, "50x35")], [("20m", [])]),
    ],
    "LimeTaskEventsDeadLettered": [
        # One event dead-lettered (Refused) at minute 10 on the leader; the standby and another
        # release's operator count none. Quiet before it, and once it is 15 minutes old.
        ([("limetask_events_dead_lettered_total", {"pod": "a", "reason": "Refused"}, "0x9 1x30"),
          ("limetask_events_dead_lettered_total", {"pod": "a", "reason": "ExchangeMissing"}, "0x40"),
          ("limetask_events_dead_lettered_total", {"pod": "b", "reason": "Refused"}, "0x40"),
          ("limetask_events_dead_lettered_total", {"job": "other-limetask-metrics", "pod": "x", "reason": "Nacked"},
           "0+1x40")],
         [("8m", []), ("12m", [({"reason": "Refused"}, "")]), ("30m", [])]),
        # A counter that starts at a value (a restart) and stays: nothing new was dead-lettered.
        ([("limetask_events_dead_lettered_total", {"pod": "a", "reason": "Refused"}, "4x40")], [("20m", [])]),
    ],
    "LimeTaskEventsDeadLetterFailing": [
        ([("limetask_events_dead_letter_failures_total", {"pod": "a", "reason": "Unroutable"}, "0x4 0+2x10 20x30"),
          ("limetask_events_dead_letter_failures_total", {"pod": "b", "reason": "Unroutable"}, "0x45")],
         [("3m", []), ("10m", [({"reason": "Unroutable"}, "")]), ("40m", [])]),
    ],
    "LimeTaskEventsDropped": [
        ([("limetask_events_dropped_total", {"pod": "a", "reason": "ExchangeMissing"}, "0x4 1x30"),
          ("limetask_events_dropped_total", {"pod": "a", "reason": "Refused"}, "3x35")],
         [("3m", []), ("6m", [({"reason": "ExchangeMissing"}, "")]), ("25m", [])]),
    ],
    "LimeTaskQueueWaitTooLong": [
        # reports: its oldest task waits a minute longer each minute (past 1800 s at minute 31).
        ([("limetask_queue_oldest_wait_seconds", {"pod": "a", "queue": "reports"}, "0+60x60"),
          ("limetask_queue_oldest_wait_seconds", {"pod": "a", "queue": "default"}, "0x60")],
         [("33m", []), ("40m", [({"queue": "reports"}, "40m 0s")])]),
        ([("limetask_queue_oldest_wait_seconds", {"pod": "a", "queue": "reports"}, "600x60")], [("40m", [])]),
    ],
    "LimeTaskEventLoopLag": [
        # a: every sample between 2.5 and 5 s late; b: every sample within 0.5 s.
        ([*[(LAG, {"pod": "a", "le": le}, "0x30") for le in ("0.5", "1.0", "2.5")],
          *[(LAG, {"pod": "a", "le": le}, "0+120x30") for le in ("5.0", "+Inf")],
          *[(LAG, {"pod": "b", "le": le}, "0+120x30") for le in ("0.5", "1.0", "2.5", "5.0", "+Inf")]],
         [("8m", []), ("20m", [({"pod": "a"}, "4.975s")])]),
    ],
}


def expand(template: str, labels: dict[str, str], value: str) -> str:
    """An annotation as Prometheus fills it in for an alert with these labels and this $value."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    text = re.sub(r"\{\{ \$value(?: \| humanizeDuration)? \}\}", value, text)
    assert "{{" not in text, f"a template the test does not fill in: {text}"
    return text


def rule_test(rule: dict[str, Any], scenario: list[tuple[list[Series], list[Expect]]]) -> list[dict[str, Any]]:
    """promtool's test groups for one alert."""
    base = {"namespace": RELEASE_NAMESPACE, "job": JOB}
    tests = []
    for inputs, expectations in scenario:
        series = []
        for name, extra, values in inputs:
            labels = {**base, **extra}
            series.append({"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
                           "values": values})
        checks = []
        for at, expected in expectations:
            exp_alerts = []
            for extra, value in expected:
                labels = {**base, **extra, **rule["labels"]}
                exp_alerts.append({"exp_labels": labels,
                                   "exp_annotations": {k: expand(v, labels, value)
                                                       for k, v in rule["annotations"].items()}})
            checks.append({"eval_time": at, "alertname": rule["alert"], "exp_alerts": exp_alerts})
        tests.append({"interval": "1m", "input_series": series, "alert_rule_test": checks})
    return tests


@pytest.mark.timeout(1800)  # the first run builds promtool
@pytest.mark.parametrize("name", sorted(ALERTS))
def test_each_alert_fires_when_it_should_and_not_otherwise(chart: Any, promtool: Path, tmp_path: Path,
                                                            name: str) -> None:
    """promtool's rule tests: the alert fires, with its labels and its annotations filled in, on
    the series it is written for, after its `for`; and stays quiet on healthy series and on
    another release's."""
    groups = rule_groups(chart)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    rule = next(r for group in groups for r in group["rules"] if r["alert"] == name)
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": rule_test(rule, SCENARIOS[name])}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    out = run_promtool(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert "SUCCESS" in out


def test_the_rule_tests_can_fail(chart: Any, promtool: Path, tmp_path: Path) -> None:
    """The harness itself: an alert expected where none fires fails promtool's test."""
    groups = rule_groups(chart)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    rule = next(r for group in groups for r in group["rules"] if r["alert"] == "LimeTaskArchiveDown")
    healthy = [([("limetask_archive_up", {"pod": "a"}, "1x25")], [("12m", [({"pod": "a"}, "")])])]
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": rule_test(rule, healthy)}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([str(promtool), "test", "rules", "tests.yaml"], text=True, capture_output=True,
                            check=False, cwd=tmp_path)
    assert result.returncode != 0 and "LimeTaskArchiveDown" in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# The Grafana dashboard
# --------------------------------------------------------------------------------------------

def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, query) of every panel target."""
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] if panel["type"] != "row"
            for target in panel["targets"]]


def as_promql(query: str) -> str:
    """A dashboard query with Grafana's variables filled in, as Prometheus would receive it."""
    for variable, value in (("$__rate_interval", "2m"), ("$__range", "6h"), ("$namespace", RELEASE_NAMESPACE),
                            ("$job", JOB)):
        query = query.replace(variable, value)
    assert "$" not in query, query
    return query


def test_dashboard_ships_in_a_configmap_for_grafanas_sidecar(chart: Any) -> None:
    assert of_kind(render(chart), "ConfigMap") == []
    objects = render(chart, MODES["web-complete"])
    configmap = one(objects, "ConfigMap")
    assert configmap["metadata"]["name"] == "lt-limetask-dashboard"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["labels"]["team"] == "platform"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Lime Task"}
    assert json.loads(configmap["data"]["limetask.json"]) == json.loads(DASHBOARD.read_text())
    default = one(render(chart, {"metrics": {"grafanaDashboard": {"enabled": True}}}), "ConfigMap")
    assert default["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert "annotations" not in default["metadata"]


def test_dashboard_shows_what_operations_need() -> None:
    """Queue waits, reaction times, failures by reason, the events backlog, the event loop and
    the archive, each from the series that tell it."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "limetask" and dashboard["title"] == "Lime Task"
    queries = [q for _, q in dashboard_queries(dashboard)]
    wanted = {
        "queue waits": r"limetask_queue_oldest_wait_seconds\{",
        "waiting per queue": r"by \(queue\) \(limetask_queue_waiting\{",
        "running per queue": r"by \(queue\) \(limetask_queue_running\{",
        "reaction times": r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(limetask_queue_latency_seconds_bucket",
        "failures by reason": r'sum by \(reason\) \(rate\(limetask_tasks_finished_total\{[^}]*state="FAILURE"',
        "events backlog": r"limetask_events_unconfirmed\{",
        "events dead-lettered": r"sum by \(reason\) \(rate\(limetask_events_dead_lettered_total\{",
        "event-loop lag": r"limetask_event_loop_lag_seconds_bucket\{",
        "archive health": r"limetask_archive_up\{",
    }
    missing = [what for what, pattern in wanted.items() if not any(re.search(pattern, q) for q in queries)]
    assert not missing, f"the dashboard does not show: {missing}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables.keys() == {"datasource", "namespace", "job"}


def test_dashboard_names_only_what_the_operator_exports() -> None:
    names, _ = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    for title, query in dashboard_queries(dashboard):
        used = series_names(query)
        assert used, title
        assert used <= names | PROMETHEUS_SERIES, f"{title}: {sorted(used - names - PROMETHEUS_SERIES)}"
        for metric, matchers in selectors(query):
            assert 'namespace="$namespace", job="$job"' in matchers, f"{title}: {metric}{{{matchers}}}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+)(?:\{[^}]*\})?, \w+\)", variable["definition"])
            assert metric and metric.group(1) in names, variable["definition"]


def test_promtool_parses_every_dashboard_query(promtool: Path, tmp_path: Path) -> None:
    """Each query, its variables filled in, as a recording rule: `promtool check rules` parses
    and checks them all."""
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(query)} for i, (_, query) in enumerate(queries)]
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool(promtool, "check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out


# --------------------------------------------------------------------------------------------
# End to end: every option on, next to the Prometheus operator's CRDs
# --------------------------------------------------------------------------------------------

MONITORING_CRDS = ["servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"]


@pytest.fixture(scope="module")
def monitoring_crds(cluster: Cluster) -> Iterator[None]:
    """The Prometheus operator's ServiceMonitor and PrometheusRule CRDs, from its Go module
    (devtools/monitoring/prometheus-operator-crds.sh). Those this fixture installed are removed
    afterwards; any that were there before stay."""
    result = subprocess.run(["bash", str(MONITORING / "prometheus-operator-crds.sh")], text=True,
                            capture_output=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"the Prometheus operator's CRDs could not be fetched:\n{result.stderr[-3000:]}")
    folder = Path(result.stdout.strip().splitlines()[-1])
    there = [name for name in MONITORING_CRDS if exists(cluster, "crd", name)]
    cluster.run_kubectl("apply", "--server-side", "--field-manager=limetask-tests",
                        "-f", str(folder / "monitoring.coreos.com_servicemonitors.yaml"),
                        "-f", str(folder / "monitoring.coreos.com_prometheusrules.yaml"))
    for name in MONITORING_CRDS:
        wait_until(lambda name=name: cluster.run_kubectl(
            "get", "crd", name, "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            check=False).stdout == "True", timeout=30, message=f"the CRD {name}")
    shutil.rmtree(cluster.cache_dir, ignore_errors=True)  # kubectl's discovery cache
    yield
    added = [name for name in MONITORING_CRDS if name not in there]
    if added:
        cluster.run_kubectl("delete", "crd", *added, "--ignore-not-found", check=False)
        shutil.rmtree(cluster.cache_dir, ignore_errors=True)


@pytest.mark.e2e
def test_install_with_every_option_on(cluster: Cluster, crd: None, monitoring_crds: None, namespace: str,
                                      helm_config: Any, release: str) -> None:
    """Two replicas of each, NetworkPolicies, the Ingress, the ServiceMonitor, the PrometheusRule
    and the dashboard: the API server accepts each (the monitoring objects against the Prometheus
    operator's own schemas, which it enforces), the budgets find their pods, and uninstalling
    removes it all."""
    complete = MODES["web-complete"]
    small = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}
    values = {
        **complete,
        "crds": {"install": False},
        "operator": {**complete["operator"], "resources": small},
        "broker": {"url": "amqp://lime:secret@rabbitmq:5672/%2F"},
        "archive": {"url": "postgresql://lime:secret@postgres:5432/limetask"},
        "web": {**complete["web"], "resources": small, "tokens": {"values": {"my-app": "s3cret-token"}}},
        "metrics": {**complete["metrics"],
                    "grafanaDashboard": {**complete["metrics"]["grafanaDashboard"], "namespace": ""}},
    }
    installed = helm_config.install(CHART, release, values, namespace=namespace, timeout=120)
    assert installed["status"] == "deployed", installed
    fullname, web = f"{release}-limetask", f"{release}-limetask-web"
    made = {("poddisruptionbudget", fullname), ("poddisruptionbudget", web), ("networkpolicy", fullname),
            ("networkpolicy", web), ("ingress", web), ("service", f"{fullname}-metrics"),
            ("servicemonitor", fullname), ("prometheusrule", fullname), ("configmap", f"{fullname}-dashboard")}
    assert {(kind, name) for kind, name in made if not exists(cluster, kind, name, namespace)} == set()

    # The budgets count the pods their selectors find (the disruption controller's view).
    for name in (fullname, web):
        wait_until(lambda name=name: kubectl_json(cluster, "get", "poddisruptionbudget", name,
                                                  namespace=namespace).get("status", {}).get("expectedPods") == 2,
                   timeout=60, message=f"PodDisruptionBudget {name} to find its two pods")
    # The monitoring objects, as the API server stored them.
    monitor = kubectl_json(cluster, "get", "servicemonitor", fullname, namespace=namespace)
    service = kubectl_json(cluster, "get", "service", f"{fullname}-metrics", namespace=namespace)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    rule = kubectl_json(cluster, "get", "prometheusrule", fullname, namespace=namespace)
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == ALERTS.keys()
    dashboard = kubectl_json(cluster, "get", "configmap", f"{fullname}-dashboard", namespace=namespace)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["limetask.json"])["uid"] == "limetask"
    ingress = kubectl_json(cluster, "get", "ingress", web, namespace=namespace)
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == web
    # The API server does check them against the CRDs' schemas: a rule with a `for` Prometheus
    # could not read is refused.
    bad = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "bad", "namespace": namespace},
           "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "for": "5 minutes"}]}]}}
    refused = cluster.run_kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0 and "spec.groups[0].rules[0].for" in refused.stderr, refused.stderr

    helm_config.uninstall(release, timeout=120)
    wait_until(lambda: {(kind, name) for kind, name in made if exists(cluster, kind, name, namespace)} == set(),
               timeout=60, message="every object of the release to be gone")
    assert helm_config.list(all_states=True) == []


def test_the_readme_names_the_monitoring_versions() -> None:
    """README's table of versions says what the scripts decide."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Dependencies and versions"):readme.index("## The local cluster")]
    for script, variable in (("build-promtool.sh", "PROMETHEUS_VERSION"),
                             ("prometheus-operator-crds.sh", "PROMETHEUS_OPERATOR_VERSION")):
        version = re.search(rf"^{variable}=(\S+)$", (MONITORING / script).read_text(), re.MULTILINE)
        assert version and version.group(1) in table and variable in table, variable


# --------------------------------------------------------------------------------------------
# The HTTP endpoint's metrics and limits
# --------------------------------------------------------------------------------------------

def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected the {kind} {name}"
    return found[0]


def test_the_endpoint_is_scraped_behind_the_same_value(chart: Any) -> None:
    web = {"enabled": True, "imports": ["acme_solution.tasks.lime"], "tokens": {"existingSecret": "acme-web-tokens"}}
    assert len(of_kind(render(chart, {"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")) == 1
    assert len(of_kind(render(chart, {"web": web}), "ServiceMonitor")) == 0
    objects = render(chart, {"web": web, "metrics": {"serviceMonitor": {"enabled": True, "labels": {"team": "a"}}}})
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "ServiceMonitor")}
    service = named(objects, "Service", f"{RELEASE}-limetask-web")
    monitor = monitors[service["metadata"]["name"]]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["team"] == "a"


def test_rate_limits_reach_the_endpoint_from_values(chart: Any) -> None:
    web = {"enabled": True, "imports": ["acme_solution.tasks.lime"], "tokens": {"existingSecret": "acme-web-tokens"}}

    def env(values: dict[str, Any]) -> dict[str, str]:
        deployment = named(render(chart, {"web": {**web, **values}}), "Deployment", f"{RELEASE}-limetask-web")
        return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    defaults = env({})
    assert {k: v for k, v in defaults.items() if k.startswith("LIMETASK_WEB_") and k.endswith(
            ("PER_SECOND", "BURST", "STREAMS", "PER_TOKEN"))} == {
        "LIMETASK_WEB_WRITES_PER_SECOND": "20", "LIMETASK_WEB_WRITE_BURST": "100",
        "LIMETASK_WEB_READS_PER_SECOND": "50", "LIMETASK_WEB_READ_BURST": "200",
        "LIMETASK_WEB_STREAMS_PER_TOKEN": "10", "LIMETASK_WEB_STREAMS": "200",
        "LIMETASK_WEB_TOKEN_REVIEWS_PER_SECOND": "10"}
    given = env({"rateLimits": {"writesPerSecond": 2.5, "streams": 0}})
    assert given["LIMETASK_WEB_WRITES_PER_SECOND"] == "2.5" and given["LIMETASK_WEB_STREAMS"] == "0"
    # What the chart writes, the endpoint reads.
    from lime_task.server.limits import Limits
    limits = Limits.from_env({k: v for k, v in given.items() if v is not None})
    assert (limits.writes_per_second, limits.streams, limits.write_burst) == (2.5, 0, 100)


@pytest.mark.parametrize("values, fragment", [
    ({"rateLimits": {"writesPerSecond": -1}}, "/web/rateLimits/writesPerSecond"),
    ({"rateLimits": {"readBurst": 2.5}}, "/web/rateLimits/readBurst"),
    ({"rateLimits": {"perMinute": 5}}, "perMinute"),
])
def test_bad_rate_limits_are_refused(chart: Any, values: dict[str, Any], fragment: str) -> None:
    web = {"enabled": True, "imports": ["acme_solution.tasks.lime"], "tokens": {"existingSecret": "acme-web-tokens"}}
    with pytest.raises(Exception, match=re.escape(fragment)):
        render(chart, {"web": {**web, **values}})
