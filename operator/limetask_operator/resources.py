"""Kubernetes resource quantities: what a task's or the platform's requests and limits hold.

Read by the settings (the platform's caps and runner defaults), the spec check (a task's own)
and the Job builder (the two merged); so it depends on none of them. The grammar of a quantity
is the client's (lime_task.validation), which checks `memory_on_oom` with it before sending.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lime_task.validation import base_memory, quantity

__all__ = ["merge_resources", "quantity", "quantity_problems", "requests_over_limits", "resources_over",
           "with_memory", "memory_cap", "memory_steps", "step_for", "attempt_memory"]


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



def with_memory(resources: dict[str, Any], memory: str | None) -> dict[str, Any]:
    """The resources with memory request and limit both `memory` (a step of memoryOnOOM), or as
    they are (None): the attempt after an OOMKilled one has exactly that much, neither less
    guaranteed nor more allowed."""
    if memory is None:
        return resources
    return {**resources, "requests": {**(resources.get("requests") or {}), "memory": memory},
            "limits": {**(resources.get("limits") or {}), "memory": memory}}


def memory_cap(caps: dict[str, Any], max_memory_on_oom: str, deny_unlisted: bool) -> tuple[str | None, str]:
    """The most memory a step of memoryOnOOM may have here, and the setting it comes from.

    The installation's own cap for them (LIMETASK_MAX_MEMORY_ON_OOM) when set, else the memory
    cap of what a task may ask for (LIMETASK_MAX_RUNNER_RESOURCES). With caps that do not list
    memory and unlisted resources refused, no step is allowed: ("0", ...).
    """
    if max_memory_on_oom:
        return max_memory_on_oom, "LIMETASK_MAX_MEMORY_ON_OOM"
    if "memory" in caps:
        return str(caps["memory"]), "LIMETASK_MAX_RUNNER_RESOURCES"
    if caps and deny_unlisted:
        return "0", "LIMETASK_MAX_RUNNER_RESOURCES, which does not list memory"
    return None, ""


def memory_steps(spec: Mapping[str, Any]) -> list[str]:
    """The task's sizes for the attempts after OOMKilled ones (spec.memoryOnOOM), or []."""
    steps = spec.get("memoryOnOOM")
    return [str(s) for s in steps] if isinstance(steps, list) else []


def step_for(spec: Mapping[str, Any], ooms: int) -> str | None:
    """The memory of an attempt after `ooms` OOMKilled ones: size `ooms` of memoryOnOOM (the last
    one at most); None before the first, or without memoryOnOOM: the task's own resources."""
    steps = memory_steps(spec)
    if not steps or ooms <= 0:
        return None
    return steps[min(ooms, len(steps)) - 1]


def attempt_memory(spec: Mapping[str, Any], ooms: int, runner_resources: Mapping[str, Any]) -> str | None:
    """The memory limit an attempt after `ooms` OOMKilled ones has: its size of memoryOnOOM, else
    the task's own (its spec.resources over the runner's defaults), else None (no limit)."""
    own = merge_resources(dict(runner_resources), spec.get("resources") or {})
    return step_for(spec, ooms) or base_memory(own)
