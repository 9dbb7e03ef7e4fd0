"""The chart's bounds on what the cluster holds: the LimeTask quota per namespace, the
dead-letter settings of events, and the short default retention. Rendered by real Helm."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
import test_chart
from limetask_operator.settings import OperatorSettings
from test_chart import RELEASE_NAMESPACE, of_kind, operator_env, render

chart = test_chart.chart


def quotas(objects: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, str]]]:
    return [(q["metadata"]["namespace"], q["metadata"]["name"], q["spec"]["hard"])
            for q in of_kind(objects, "ResourceQuota")]


def test_no_quota_by_default(chart: Any) -> None:
    assert quotas(render(chart)) == []


def test_the_quota_goes_to_the_watched_namespaces_unless_others_are_listed(chart: Any) -> None:
    hard = {"count/limetasks.limetask.io": "100000"}
    assert quotas(render(chart, {"tasks": {"quota": {"enabled": True}}})) == [
        (RELEASE_NAMESPACE, "lt-limetask-limetasks", hard)]
    watched = {"watch": {"namespaces": ["team-a", "team-b"]}, "tasks": {"quota": {"enabled": True, "limeTasks": 500}}}
    assert quotas(render(chart, watched)) == [
        ("team-a", "lt-limetask-limetasks", {"count/limetasks.limetask.io": "500"}),
        ("team-b", "lt-limetask-limetasks", {"count/limetasks.limetask.io": "500"})]
    listed = {"watch": {"scope": "cluster"}, "tasks": {"quota": {"enabled": True, "namespaces": ["tenant-x"]}}}
    assert quotas(render(chart, listed)) == [("tenant-x", "lt-limetask-limetasks", hard)]
    report = helm.lint(test_chart.CHART, watched, strict=True, namespace=RELEASE_NAMESPACE)
    assert report["errors"] == [], report


def test_a_cluster_wide_operator_must_name_the_namespaces_of_the_quota(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="list the namespaces that get the quota in tasks.quota.namespaces"):
        render(chart, {"watch": {"scope": "cluster"}, "tasks": {"quota": {"enabled": True}}})


@pytest.mark.parametrize("values, message", [
    ({"tasks": {"quota": {"limeTasks": -1}}}, "at '/tasks/quota/limeTasks': minimum: got -1, want 0"),
    ({"tasks": {"quota": {"namespaces": ["Team A"]}}}, "at '/tasks/quota/namespaces/0'"),
    ({"events": {"deadLetter": {"afterSeconds": 0}}}, "at '/events/deadLetter/afterSeconds'"),
    ({"events": {"deadLetter": {"exchange": ""}}}, "at '/events/deadLetter/exchange'"),
    ({"events": {"deadLetters": {}}}, "additional properties 'deadLetters' not allowed"),
])
def test_the_schema_rejects_bad_bounds(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as error:
        render(chart, values)
    assert message in str(error.value)


def test_the_drop_bound_may_not_come_before_the_dead_letter_bound(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="dropAfterSeconds must not be shorter"):
        render(chart, {"events": {"deadLetter": {"afterSeconds": 7200, "dropAfterSeconds": 3600}}})


def test_event_bounds_and_retention_reach_the_operator(chart: Any) -> None:
    defaults = OperatorSettings.from_env(operator_env(render(chart)))
    assert (defaults.retention_seconds, defaults.event_status_write_seconds, defaults.event_dead_letter_after_seconds,
            defaults.event_dead_letter_after_refusals, defaults.event_dead_letter_exchange,
            defaults.event_dead_letter_queue, defaults.event_drop_after_seconds) == \
        (86400, 300, 86400, 30, "limetask.dead-letter", "limetask.dead-letter", 604800)
    env = operator_env(render(chart, {"tasks": {"retentionSeconds": 2592000}, "events": {
        "statusWriteSeconds": 60, "deadLetter": {"afterSeconds": 3600, "afterRefusals": 0, "exchange": "acme.dlx",
                                                 "queue": "", "dropAfterSeconds": 1500000}}}))
    settings = OperatorSettings.from_env(env)
    assert (settings.retention_seconds, settings.event_status_write_seconds, settings.event_dead_letter_after_seconds,
            settings.event_dead_letter_after_refusals, settings.event_dead_letter_exchange,
            settings.event_dead_letter_queue, settings.event_drop_after_seconds) == \
        (2592000, 60, 3600, 0, "acme.dlx", "", 1500000)
