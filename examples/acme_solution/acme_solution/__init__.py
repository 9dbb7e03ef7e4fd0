"""The acme solution, laid out as a Lime CRM solution: the package says where its tasks are.

The runner imports the modules get_task_modules() lists (LIMETASK_IMPORTS=acme_solution, or
the package declared as a `lime_plugins` entry point), and `limetask schedules apply` reads
register_scheduled_tasks() beside it.
"""

from __future__ import annotations

from typing import Any


def get_task_modules() -> list[str]:
    """The modules whose @task functions this solution's runner may run."""
    return [".tasks.lime"]


def register_scheduled_tasks() -> list[Any]:
    from .tasks.scheduled_tasks import register_scheduled_tasks as scheduled

    return scheduled()
