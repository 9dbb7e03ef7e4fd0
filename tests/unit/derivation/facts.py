"""The Facts a rule reads, made from the same realistic objects as the derivation's golden tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from limetask_operator.derivation import Facts, facts_of
from limetask_operator.model import JobView, PodView, TaskView

from tests.unit.test_status_derivation import NOW


def facts(t: TaskView, jobs: list[JobView] = (), pods: list[PodView] = (),  # type: ignore[assignment]
          now: dt.datetime = NOW, jobs_gone: frozenset[int] = frozenset()) -> Facts:
    by_attempt: dict[int, list[PodView]] = {}
    for p in pods:
        by_attempt.setdefault(p.attempt, []).append(p)
    return facts_of(t, {j.attempt: j for j in jobs}, by_attempt, now, jobs_gone)


def condition_of(status: dict[str, Any], kind: str = "Succeeded") -> dict[str, Any]:
    [found] = [c for c in status["conditions"] if c["type"] == kind]
    return found
