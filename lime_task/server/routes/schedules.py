"""/v1/apps/{app}/schedules: an application's LimeTaskSchedules and their runs."""

from typing import Any

from fastapi import APIRouter

from ... import schedule as scheduling
from ..auth import AppMayList
from ..contract import LimitQuery, ScheduleBody, TaskStatusBody
from ..deps import COMMON_ERRORS, ServicesDep, archive_call, archived_dict, doc

router = APIRouter(prefix="/v1/apps/{app}/schedules", tags=["schedules"], responses=COMMON_ERRORS)


@router.get("", response_model=list[ScheduleBody], summary="List the application's schedules")
def list_schedules(app: AppMayList, services: ServicesDep) -> list[dict[str, Any]]:
    """The application's LimeTaskSchedules: when each runs, its last tick and active runs."""
    return scheduling.list_schedules(services.client(), app)


@router.get("/{name}/runs", response_model=list[TaskStatusBody], summary="List a schedule's runs",
            responses={**doc(404, "no such schedule for this application"),
                       **doc(503, "the cluster or the archive cannot be reached")})
def schedule_runs(app: AppMayList, name: str, services: ServicesDep, limit: LimitQuery = 100) -> list[dict[str, Any]]:
    """The runs of one of the application's schedules, newest first: those in the cluster,
    then the archived ones."""
    schedule = scheduling.get_schedule(services.client(), name, app)
    live = scheduling.live_runs(services.client(), schedule)[:limit]
    items = [s.to_dict() for s in live]
    reader = services.reader
    if reader is not None and len(items) < limit:
        page = archive_call(lambda: reader.search(
            services.namespace(), apps=[app], task=schedule["spec"].get("task"), name_prefix=f"{name}-",
            exclude=[s.id for s in live], limit=limit - len(items)))
        items += [archived_dict(b) for b in page.items if scheduling.is_archived_run_of(schedule, b)]
    return items
