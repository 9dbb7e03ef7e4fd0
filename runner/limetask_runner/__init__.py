"""The runner: what runs inside each task's Job container (`python -m limetask_runner`).

The package imports nothing at first, so that `python -m limetask_runner` can take SIGTERM
before it imports the runner and the task modules (see signals.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["ENV", "main", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import main as module

        return getattr(module, name)
    raise AttributeError(f"module 'limetask_runner' has no attribute {name!r}")
