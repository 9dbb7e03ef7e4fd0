"""spec.py: a spec that cannot run here fails before its first attempt; a spec that changed fails."""

from __future__ import annotations

import datetime as dt

from limetask_operator.derivation.spec import (
    NAME_MAX,
    SpecPolicy,
    check_spec,
    name_problem,
    spec_changed,
    spec_problem,
    times_problem,
)
from limetask_operator.manifests import spec_hash

from tests.unit.test_status_derivation import BASE_SPEC

CREATED = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
POLICY = SpecPolicy(max_attempts_ceiling=5)


def test_a_spec_the_cluster_allows_has_no_problem() -> None:
    assert spec_problem(dict(BASE_SPEC), "sync-1", CREATED, POLICY) is None


def test_the_clusters_policy_decides_what_a_spec_may_ask() -> None:
    with_image = {**BASE_SPEC, "image": "mine:1"}
    assert spec_problem(with_image, "t", CREATED, POLICY) is None
    refused = spec_problem(with_image, "t", CREATED, SpecPolicy(5, allow_image_override=False))
    assert refused is not None and "spec.image" in refused
    placed = {**BASE_SPEC, "nodeSelector": {"disk": "ssd"}}
    assert "spec.nodeSelector" in (spec_problem(placed, "t", CREATED, SpecPolicy(5, allow_placement_override=False))
                                   or "")
    greedy = {**BASE_SPEC, "resources": {"limits": {"memory": "64Gi"}}}
    capped = SpecPolicy(5, resource_caps={"memory": "1Gi"})
    assert "asks for more than this cluster allows" in (spec_problem(greedy, "t", CREATED, capped) or "")


def test_max_attempts_over_the_ceiling_counts_only_under_late_acknowledgement() -> None:
    assert check_spec({**BASE_SPEC, "maxAttempts": 9}, 5) is None  # early ack: not used
    assert check_spec({**BASE_SPEC, "acksLate": True, "maxAttempts": 9}, 5) == \
        "maxAttempts 9 is over this cluster's ceiling of 5"


def test_a_name_too_long_to_label_jobs_wins_over_any_other_problem() -> None:
    assert name_problem("x" * NAME_MAX) is None
    long = "x" * (NAME_MAX + 1)
    problem = spec_problem({**BASE_SPEC, "args": "not a list"}, long, CREATED, POLICY)
    assert problem is not None and problem.startswith("the name xxxxxxxxxxxxxxxxxxxx... has 64 characters")


def test_times_are_checked_from_the_tasks_creation() -> None:
    assert times_problem({"eta": "2024-05-01T10:30:00Z"}, CREATED) is None
    inverted = times_problem({"eta": "2024-05-01T10:30:00Z", "expires": "2024-05-01T10:10:00Z"}, CREATED)
    assert inverted is not None and inverted.startswith("spec.")
    assert times_problem({"eta": "not a time"}, CREATED) is not None
    assert times_problem({}, CREATED) is None


def test_the_spec_is_immutable_once_accepted() -> None:
    accepted = {"specHash": spec_hash(BASE_SPEC)}
    assert spec_changed(accepted, spec_hash(BASE_SPEC)) is None
    assert spec_changed({}, spec_hash(BASE_SPEC)) is None  # not accepted yet
    changed = spec_changed(accepted, spec_hash({**BASE_SPEC, "args": ["2025-01-01"]}))
    assert changed is not None and "immutable" in changed
