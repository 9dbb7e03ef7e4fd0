"""A queue's namespaceSelector (admission/selector.py): a Kubernetes label selector, read and
matched as the API server does, and refused when it is not one."""

from __future__ import annotations

from typing import Any

import pytest
from limetask_operator.admission import LabelSelector, SelectorError, parse_selector

TEAM_A = {"team": "a", "kubernetes.io/metadata.name": "ns-a"}
TEAM_B = {"team": "b"}
BARE: dict[str, str] = {}


def matches(raw: dict[str, Any], labels: dict[str, str] | None) -> bool:
    return parse_selector(raw).matches(labels)


def test_an_empty_selector_matches_every_namespace() -> None:
    for labels in (TEAM_A, TEAM_B, BARE, None):
        assert matches({}, labels)
        assert matches({"matchLabels": {}, "matchExpressions": []}, labels)
    assert parse_selector({}) == LabelSelector(()) and parse_selector({}).text() == "{}"


def test_match_labels_needs_every_label_with_its_value() -> None:
    raw = {"matchLabels": {"team": "a", "tier": "gold"}}
    assert matches(raw, {"team": "a", "tier": "gold", "other": "x"})
    assert not matches(raw, {"team": "a"})
    assert not matches(raw, {"team": "a", "tier": "silver"})
    assert not matches(raw, BARE)
    assert not matches(raw, None)
    assert parse_selector(raw).text() == "team=a,tier=gold"


@pytest.mark.parametrize("operator, values, labels, expected", [
    ("In", ["a", "b"], TEAM_A, True),
    ("In", ["a", "b"], TEAM_B, True),
    ("In", ["b"], TEAM_A, False),
    ("In", ["a"], BARE, False),  # a missing label is in no set
    ("NotIn", ["a"], TEAM_A, False),
    ("NotIn", ["a"], TEAM_B, True),
    ("NotIn", ["a"], BARE, True),  # a missing label is in no set: NotIn holds
    ("Exists", None, TEAM_A, True),
    ("Exists", None, {"team": ""}, True),  # an empty value is still a label
    ("Exists", None, BARE, False),
    ("DoesNotExist", None, TEAM_A, False),
    ("DoesNotExist", None, BARE, True),
    ("DoesNotExist", [], BARE, True),  # values: [] is no values
])
def test_each_operator(operator: str, values: list[str] | None, labels: dict[str, str], expected: bool) -> None:
    expr: dict[str, Any] = {"key": "team", "operator": operator}
    if values is not None:
        expr["values"] = values
    assert matches({"matchExpressions": [expr]}, labels) is expected


def test_labels_and_expressions_must_all_hold() -> None:
    raw = {"matchLabels": {"team": "a"},
           "matchExpressions": [{"key": "frozen", "operator": "DoesNotExist"},
                                {"key": "tier", "operator": "NotIn", "values": ["bronze"]}]}
    assert matches(raw, {"team": "a"})
    assert matches(raw, {"team": "a", "tier": "gold"})
    assert not matches(raw, {"team": "a", "frozen": "yes"})
    assert not matches(raw, {"team": "a", "tier": "bronze"})
    assert not matches(raw, {"team": "b"})
    assert parse_selector(raw).text() == "team=a,!frozen,tier notin (bronze)"


def test_text_is_what_kubectl_takes() -> None:
    raw = {"matchExpressions": [{"key": "limetask.io/tenant", "operator": "Exists"},
                                {"key": "tier", "operator": "In", "values": ["silver", "gold"]}]}
    assert parse_selector(raw).text() == "limetask.io/tenant,tier in (gold,silver)"


@pytest.mark.parametrize("raw, words", [
    ([], "namespaceSelector must be an object, not list"),
    ("team=a", "namespaceSelector must be an object, not str"),
    ({"matchLabel": {"team": "a"}}, "unknown fields ['matchLabel']"),
    ({"matchLabels": ["team"]}, "matchLabels must be an object"),
    ({"matchLabels": {"team": 1}}, "1 is not a valid label value"),
    ({"matchLabels": {"team": "-a"}}, "'-a' is not a valid label value"),
    ({"matchLabels": {"team": "a" * 64}}, "is not a valid label value"),
    ({"matchLabels": {"bad key": "a"}}, "'bad key' is not a valid label key"),
    ({"matchLabels": {"Example.COM/team": "a"}}, "is not a valid label key"),
    ({"matchLabels": {"": "a"}}, "a label key must be a non-empty string"),
    ({"matchExpressions": {"key": "team"}}, "matchExpressions must be a list"),
    ({"matchExpressions": ["team"]}, "matchExpressions[0] must be an object"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key: a label key must be a non-empty"),
    ({"matchExpressions": [{"key": "team", "operator": "Equals", "values": ["a"]}]},
     "operator must be one of In, NotIn, Exists, DoesNotExist, not 'Equals'"),
    ({"matchExpressions": [{"key": "team", "operator": "in", "values": ["a"]}]}, "not 'in'"),
    ({"matchExpressions": [{"key": "team"}]}, "not None"),
    ({"matchExpressions": [{"key": "team", "operator": "In"}]}, "operator In needs values"),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": []}]}, "operator NotIn needs values"),
    ({"matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]},
     "operator Exists takes no values"),
    ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist", "values": ["a"]}]},
     "operator DoesNotExist takes no values"),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": "a"}]}, "values must be a list"),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b c"]}]},
     "matchExpressions[0].values[1]: 'b c' is not a valid label value"),
])
def test_what_is_not_a_selector_is_refused_saying_why(raw: Any, words: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(raw)
    assert words in str(caught.value)


def test_valid_keys_and_values() -> None:
    raw = {"matchLabels": {"limetask.io/tenant": "acme", "a.b-c/d_e.f": "", "x": "A-1_b.2"}}
    assert matches(raw, {"limetask.io/tenant": "acme", "a.b-c/d_e.f": "", "x": "A-1_b.2"})
