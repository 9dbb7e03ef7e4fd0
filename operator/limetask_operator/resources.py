"""Kubernetes resource quantities: what a task's or the platform's requests and limits hold.

Read by the settings (the platform's caps and runner defaults), the spec check (a task's own)
and the Job builder (the two merged); so it depends on none of them.
"""

from __future__ import annotations

import math
from typing import Any

from lime_task.resource import QUANTITY_RE

_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": 10**-9, "u": 10**-6, "m": 10**-3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "P": 10**15, "E": 10**18}


def quantity(value: object) -> float:
    """A non-negative Kubernetes quantity ("500m", "1Gi", 2) as a number.

    ValueError for anything else: "inf", "-1Gi", "lots", True. The same grammar as the API
    server's, so what passes here is what a pod accepts.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a quantity")
    text = str(value).strip()
    match = QUANTITY_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity (e.g. 500m, 2, 1Gi)")
    number, suffix = float(match.group(1)), match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        amount = number * 10.0 ** int(suffix[1:]) if int(suffix[1:]) < 300 else math.inf
    else:
        amount = number * _SUFFIXES.get(suffix, 1)
    if not math.isfinite(amount):
        raise ValueError(f"{value!r} is too large")
    return amount


def quantity_problems(resources: dict[str, Any], where: str) -> list[str]:
    """What in a requests/limits map is not a non-negative quantity."""
    problems = []
    for kind in ("requests", "limits"):
        section = resources.get(kind) or {}
        if not isinstance(section, dict):
            problems.append(f"{where}.{kind} must be a map of resource name to quantity")
            continue
        for name, value in section.items():
            try:
                quantity(value)
            except ValueError as exc:
                problems.append(f"{where}.{kind}.{name}: {exc}")
    return problems


def resources_over(asked: dict[str, Any], caps: dict[str, Any], deny_unlisted: bool = False) -> list[str]:
    """What in a task's resources is over the platform's caps, not a quantity, or (with
    `deny_unlisted` and caps set) a resource the caps do not list."""
    problems = quantity_problems(asked, "spec.resources")
    if problems:
        return problems
    for kind in ("requests", "limits"):
        for name, value in (asked.get(kind) or {}).items():
            if name not in caps:
                if caps and deny_unlisted:
                    problems.append(f"{kind}.{name} is not a resource this cluster lets a task set "
                                    f"(allowed: {', '.join(sorted(caps))})")
                continue
            if quantity(value) > quantity(caps[name]):
                problems.append(f"{kind}.{name}={value} is over the cap of {caps[name]}")
    return problems


def requests_over_limits(resources: dict[str, Any]) -> list[str]:
    """Requests above their limits, which the API server refuses for a pod."""
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    return [f"requests.{name}={value} is above limits.{name}={limits[name]}"
            for name, value in requests.items() if name in limits and quantity(value) > quantity(limits[name])]


def merge_resources(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("requests", "limits"):
        merged = {**(defaults.get(key) or {}), **(override.get(key) or {})}
        if merged:
            out[key] = {k: str(v) for k, v in merged.items()}
    return out

