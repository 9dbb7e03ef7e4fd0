"""Whether a task's spec can run here: checked once, before its first attempt, and never changed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from lime_task.errors import InvalidArgumentsError, InvalidTaskError
from lime_task.resource import DEFAULT_MAX_ATTEMPTS
from lime_task.validation import check_arguments, memory_on_oom_problem, spec_time, timing_problem

from ..resources import memory_cap, merge_resources, quantity, requests_over_limits, resources_over

NAME_MAX = 63  # a label value
# How far a client's clock may run ahead of the API server's: an eta the client took for "a year
# from now" is not refused for the minutes its clock was ahead.
CLOCK_SKEW_SECONDS = 3600.0


@dataclass(frozen=True)
class SpecPolicy:
    """What this cluster allows a task's spec (the operator's settings)."""

    max_attempts_ceiling: int
    allow_image_override: bool = True
    resource_caps: dict[str, Any] = field(default_factory=dict)
    allow_placement_override: bool = True
    runner_resources: dict[str, Any] = field(default_factory=dict)
    deny_unlisted_resources: bool = False
    # The most memory a size of memoryOnOOM may have (LIMETASK_MAX_MEMORY_ON_OOM); "": the memory
    # cap of resource_caps, if any.
    max_memory_on_oom: str = ""

    def memory_cap(self) -> tuple[str | None, str]:
        """The cap of memoryOnOOM's sizes, and the setting it comes from (resources.memory_cap)."""
        return memory_cap(self.resource_caps, self.max_memory_on_oom, self.deny_unlisted_resources)


def check_spec(spec: dict[str, Any], ceiling: int, allow_image_override: bool = True,
               resource_caps: dict[str, Any] | None = None, allow_placement_override: bool = True,
               runner_resources: dict[str, Any] | None = None, deny_unlisted_resources: bool = False,
               created: dt.datetime | None = None, max_memory_on_oom: str = "") -> str | None:
    """What is wrong with a spec the schema let through, or None.

    Everything the API server would refuse in the Job is caught here first, so that the task
    fails with a message that speaks of its own spec. So is a time (eta, expires) that the
    client would refuse, or that the CRD's rules cannot read (its status could never be
    written: no Job is made whose result would be lost). `created`: the task's creation, which
    the client's rule for times counts from.
    """
    if spec.get("image") and not allow_image_override:
        return "this cluster does not allow a task to choose its image (spec.image); ask the platform team"
    placement = [f for f in ("nodeSelector", "tolerations", "imagePullSecrets") if spec.get(f)]
    if placement and not allow_placement_override:
        return (f"this cluster does not allow a task to set {', '.join('spec.' + f for f in placement)}; "
                f"ask the platform team")
    asked = spec.get("resources") or {}
    over = resources_over(asked, resource_caps or {}, deny_unlisted_resources)
    if over:
        return "spec.resources asks for more than this cluster allows: " + "; ".join(over)
    inverted = requests_over_limits(merge_resources(runner_resources or {}, asked))
    if inverted:
        return ("spec.resources, with the cluster's defaults for runners, has " + "; ".join(inverted)
                + ": raise the limit in spec.resources.limits too")
    if spec.get("memoryOnOOM") is not None:
        problem = memory_on_oom_problem_here(spec, memory_cap(resource_caps or {}, max_memory_on_oom,
                                                              deny_unlisted_resources),
                                             merge_resources(runner_resources or {}, asked))
        if problem:
            return problem
    args, kwargs = spec.get("args") or [], spec.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return "spec.args must be an array and spec.kwargs an object"
    try:
        # The client's own checks: depth, numbers the API keeps exactly, size.
        check_arguments(args, kwargs)
    except InvalidArgumentsError as exc:
        return f"spec.args/kwargs: {exc}"
    if spec.get("acksLate") and int(spec.get("maxAttempts") or DEFAULT_MAX_ATTEMPTS) > ceiling:
        return f"maxAttempts {spec.get('maxAttempts')} is over this cluster's ceiling of {ceiling}"
    return times_problem(spec, created)


def memory_on_oom_problem_here(spec: dict[str, Any], cap: tuple[str | None, str],
                               resources: dict[str, Any]) -> str | None:
    """What is wrong with spec.memoryOnOOM here: the client's rules (with the runner's defaults
    as part of the memory the task has without it), and the installation's cap. Refused before
    any attempt: no Job is ever made with memory over the cap."""
    steps = spec.get("memoryOnOOM")
    problem = memory_on_oom_problem(steps, resources, "spec.memoryOnOOM")
    if problem:
        return problem
    limit, setting = cap
    if limit is None:
        return None
    over = [str(s) for s in steps if quantity(s) > quantity(limit)]  # type: ignore[union-attr]
    if not over:
        return None
    if quantity(limit) == 0:
        return (f"spec.memoryOnOOM asks for memory, which this cluster does not let a task set ({setting}); "
                f"ask the platform team")
    return (f"spec.memoryOnOOM asks for more memory than this cluster allows: {and_words(over)} over the cap of "
            f"{limit} ({setting}); lower the sizes, or ask the platform team to raise the cap")


def and_words(items: list[str]) -> str:
    return (items[0] + " is") if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]} are"


def times_problem(spec: dict[str, Any], created: dt.datetime | None) -> str | None:
    """The client's rule for eta and expires, counted from the task's creation."""
    try:
        eta = spec_time(spec["eta"], "eta") if spec.get("eta") is not None else None
        expires = spec_time(spec["expires"], "expires") if spec.get("expires") is not None else None
    except InvalidTaskError as exc:
        return str(exc)
    if created is None or (eta is None and expires is None):
        return None
    problem = timing_problem(eta, expires, created, slack=CLOCK_SKEW_SECONDS, sent_words="after the task was created",
                             expires_after_sent=False)
    return f"spec.{problem}" if problem else None


def name_problem(name: str) -> str | None:
    """A name too long to label the task's Jobs and pods with."""
    if len(name) <= NAME_MAX:
        return None
    return (f"the name {name[:20]}... has {len(name)} characters; a LimeTask's name has at "
            f"most {NAME_MAX}, since it labels the task's Jobs and pods")


def spec_problem(spec: dict[str, Any], name: str, created: dt.datetime, policy: SpecPolicy) -> str | None:
    """Why a new task cannot run here (its name first), or None."""
    problem = check_spec(spec, policy.max_attempts_ceiling, policy.allow_image_override, policy.resource_caps,
                         policy.allow_placement_override, policy.runner_resources,
                         policy.deny_unlisted_resources, created=created,
                         max_memory_on_oom=policy.max_memory_on_oom)
    return name_problem(name) or problem


def spec_changed(status: dict[str, Any], current_hash: str) -> str | None:
    """The spec is immutable: one that differs from the spec the task was accepted with fails it."""
    if status.get("specHash") and status["specHash"] != current_hash:
        return ("the spec changed after the task was accepted; the spec is immutable: create a new LimeTask "
                "instead")
    return None
