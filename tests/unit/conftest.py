"""Unit tests: no cluster. Each test leaves the task registry as it found it."""

from __future__ import annotations

from collections.abc import Iterator

import acme_solution.tasks.lime  # noqa: F401 - registered once, before any snapshot of the registry
import pytest

from lime_task import registry


@pytest.fixture(autouse=True)
def isolated_registry() -> Iterator[None]:
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
