"""A Kubernetes label selector (metav1.LabelSelector), read and matched as the API server does.

A LimeTaskQueue's `namespaceSelector` names the namespaces whose tasks may use the queue (as a
Kueue ClusterQueue's does). `matchLabels` and `matchExpressions` must all hold; operators In,
NotIn, Exists and DoesNotExist. An empty selector (`{}`) matches every namespace, as in
Kubernetes; a queue without one is open to every namespace (the admission never asks).

The CRD's schema refuses a malformed selector when it is applied. One that reaches the operator
anyway (a CRD of an older version, with no such checks) is read as `SelectorError`, and the queue
then admits no namespace: a tenancy rule that cannot be read is not taken to allow everything.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "In", "NotIn", "Exists", "DoesNotExist"
OPERATORS = (IN, NOT_IN, EXISTS, DOES_NOT_EXIST)

# Label keys and values as Kubernetes validates them (apimachinery's IsQualifiedName, IsValidLabelValue).
_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
VALUE_RE = re.compile(rf"^{_NAME}?$")


class SelectorError(ValueError):
    """A namespaceSelector that is not a valid label selector (the message says what is wrong)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()
    equals: bool = False  # from matchLabels: written key=value

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == IN:
            return self.key in labels and labels[self.key] in self.values
        if self.operator == NOT_IN:
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return self.key in labels
        return self.key not in labels

    def text(self) -> str:
        """In kubectl's words (`kubectl get ns -l '<text>'` lists the namespaces it matches)."""
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.equals:
            return f"{self.key}={next(iter(self.values))}"
        word = "in" if self.operator == IN else "notin"
        return f"{self.key} {word} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    """Every requirement must hold; none: every set of labels matches."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)

    def text(self) -> str:
        """The selector as `kubectl -l` takes it; an empty selector is "{}" (every namespace)."""
        return ",".join(r.text() for r in self.requirements) or "{}"


def _key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SelectorError(f"{where}: a label key must be a non-empty string, not {value!r}")
    if len(value) > 317 or not KEY_RE.match(value) or len(value.rpartition("/")[0]) > 253:
        raise SelectorError(f"{where}: {value!r} is not a valid label key (an optional DNS subdomain prefix "
                            f"and '/', then a name of at most 63 letters, digits, '-', '_' or '.')")
    return value


def _value(value: Any, where: str) -> str:
    if not isinstance(value, str) or not VALUE_RE.match(value):
        raise SelectorError(f"{where}: {value!r} is not a valid label value (at most 63 letters, digits, "
                            f"'-', '_' or '.', beginning and ending with a letter or digit)")
    return value


def parse(raw: Any) -> LabelSelector:
    """A selector from a LimeTaskQueue's `spec.namespaceSelector`; SelectorError if it is not one."""
    if not isinstance(raw, Mapping):
        raise SelectorError(f"namespaceSelector must be an object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise SelectorError(f"namespaceSelector has unknown fields {unknown} (only matchLabels and matchExpressions)")
    found: list[Requirement] = []
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise SelectorError("namespaceSelector.matchLabels must be an object of label keys and values")
    for key, value in labels.items():
        where = f"namespaceSelector.matchLabels[{key!r}]"
        found.append(Requirement(_key(key, where), IN, frozenset({_value(value, where)}), equals=True))
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError("namespaceSelector.matchExpressions must be a list")
    for i, expr in enumerate(expressions):
        where = f"namespaceSelector.matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise SelectorError(f"{where} must be an object with key, operator and values")
        key = _key(expr.get("key"), f"{where}.key")
        operator = expr.get("operator")
        if operator not in OPERATORS:
            raise SelectorError(f"{where}.operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
        values = expr.get("values")
        if values is None:
            values = []
        if not isinstance(values, list):
            raise SelectorError(f"{where}.values must be a list of label values")
        if operator in (IN, NOT_IN) and not values:
            raise SelectorError(f"{where}: operator {operator} needs values")
        if operator in (EXISTS, DOES_NOT_EXIST) and values:
            raise SelectorError(f"{where}: operator {operator} takes no values")
        found.append(Requirement(key, str(operator),
                                 frozenset(_value(v, f"{where}.values[{j}]") for j, v in enumerate(values))))
    return LabelSelector(tuple(found))
