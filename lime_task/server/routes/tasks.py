"""/v1/apps/{app}/tasks: start, read, list and cancel an application's tasks, live or archived."""

import json
import logging
from typing import Any

from fastapi import APIRouter, Request, Response

from ...archive import ArchiveError, decode_cursor
from ...errors import NotFoundError, TaskAlreadyFinishedError, UnknownTaskError
from ...registry import resolve_task
from ...resource import FINAL_STATES, MAX_ARGUMENTS_BYTES
from ..auth import AppMayCreate, AppMayGet, AppMayList, AppMayPatch
from ..contract import (
    LimitQuery,
    QueuedQuery,
    QueueQuery,
    StartTask,
    StateQuery,
    TaskPage,
    TasksCursorQuery,
    TaskStatusBody,
)
from ..deps import COMMON_ERRORS, ErrorAnswer, Services, ServicesDep, archive_call, archived_dict, doc, live_dict

LOG = logging.getLogger("limetask.web")

# Cursors of GET /v1/apps/{app}/tasks: live tasks from where the last page stopped (the client's
# `list_page` cursor, which holds the cluster's `continue` token), the start of the archived
# ones, or the archive's own cursor.
LIVE_CURSOR = "live."
ARCHIVE_START = "archive"

router = APIRouter(prefix="/v1/apps/{app}/tasks", tags=["tasks"], responses=COMMON_ERRORS)


@router.post("", status_code=202, response_model=TaskStatusBody, summary="Start a task",
             responses={**doc(413, "request body or arguments too large")})
def start_task(app: AppMayCreate, body: StartTask, request: Request, response: Response,
               services: ServicesDep) -> dict[str, Any]:
    """Start a registered task for the application; returns its status (PENDING).

    The task runs as a Kubernetes Job; read its status at the URL in `Location`.
    """
    try:
        registered = resolve_task(body.task, import_modules=False)
    except UnknownTaskError as exc:
        raise ErrorAnswer(422, "UnknownTask", str(exc)) from None
    size = len(json.dumps([body.args, body.kwargs], separators=(",", ":")).encode())
    if size > MAX_ARGUMENTS_BYTES:
        raise ErrorAnswer(413, "TooLarge", f"task arguments take {size} bytes as JSON, over the limit "
                                           f"of {MAX_ARGUMENTS_BYTES}: pass identifiers and let the task "
                                           f"load the data")
    status = services.client().send(body.task, app, body.args, body.kwargs, check=False,
                                    options=registered.options, countdown=body.countdown, eta=body.eta,
                                    expires=body.expires, qos=body.qos, priority=body.priority)
    response.headers["Location"] = f"{request.scope.get('root_path', '')}/v1/apps/{app}/tasks/{status.id}"
    return status.to_dict()  # type: ignore[no-any-return]


@router.get("/{task_id}", response_model=TaskStatusBody, summary="Read a task's status",
            responses={**doc(404, "no such task for this application")})
def read_task(app: AppMayGet, task_id: str, services: ServicesDep) -> dict[str, Any]:
    """The task's status, live or archived; 404 when it does not exist or belongs to another
    application."""
    try:
        return services.live("get_status", task_id, app).to_dict()  # type: ignore[no-any-return]
    except NotFoundError:
        found = services.archived(task_id, app)
        if found is None:
            raise
        return found


@router.get("", response_model=TaskPage, summary="List the application's tasks",
            responses={**doc(404, "no such application")})
def list_tasks(app: AppMayList, services: ServicesDep, state: StateQuery = None, queue: QueueQuery = None,
               queued: QueuedQuery = False, limit: LimitQuery = 100,
               cursor: TasksCursorQuery = None) -> dict[str, Any]:
    """The application's live tasks (in the cluster's order), then its archived ones (newest
    first). Pass `next` as `cursor` for the next page.

    Each page of live tasks reads on where the last one stopped; with filters, a page may
    hold fewer than `limit` and still have a `next`. `queue`: only that queue's tasks.
    `queued=true`: only the tasks waiting in a queue for a slot, which are live. An expired
    cursor (the cluster keeps a listing for a few minutes) is 422: list again.
    """
    reader = services.reader
    items: list[dict[str, Any]] = []
    archive_cursor = cursor
    if cursor is not None and not cursor.startswith(LIVE_CURSOR) and cursor != ARCHIVE_START:
        decode_cursor(cursor)  # an invalid one is 422, archive or not
    if cursor is None or cursor.startswith(LIVE_CURSOR):
        filters = {"queued": queued, "queue": queue} if queued or queue else {}
        bodies, after = services.live("list_page", app, state, limit,
                                      cursor[len(LIVE_CURSOR):] if cursor else None, **filters)
        items = [live_dict(body, services.client()) for body in not_archived(services, bodies)]
        if after is not None:
            return {"items": items, "next": LIVE_CURSOR + after}
        archive_cursor = None
    if queued:  # waiting tasks are never archived
        return {"items": items, "next": None}
    if reader is None:
        return {"items": items, "next": None}
    if len(items) >= limit:
        return {"items": items, "next": ARCHIVE_START}
    page = archive_call(reader.list, services.namespace(), app, state, limit - len(items),
                        None if archive_cursor == ARCHIVE_START else archive_cursor)
    items += [d for d in (archived_dict(b) for b in page.items) if queue is None or d["queue"]["name"] == queue]
    return {"items": items, "next": page.next}


def not_archived(services: Services, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live tasks, less the finished ones the archive has already (same incarnation): those
    are listed with the archived tasks, so that a walk through the pages meets each task once."""
    finished = {str((b.get("metadata") or {}).get("name")) for b in bodies
                if (b.get("status") or {}).get("state") in FINAL_STATES}
    if services.reader is None or not finished:
        return bodies
    try:
        held = services.reader.archived_uids(services.namespace(), sorted(finished))
    except ArchiveError as exc:
        LOG.warning("listing live tasks without asking the archive which it has: %s", exc)
        return bodies
    return [b for b in bodies if (b.get("metadata") or {}).get("uid") not in held]


@router.post("/{task_id}/cancel", response_model=TaskStatusBody, summary="Cancel a task",
             responses={**doc(404, "no such task for this application"),
                        **doc(409, "the task has already finished")})
def cancel_task(app: AppMayPatch, task_id: str, services: ServicesDep) -> dict[str, Any]:
    """Stop a pending or running task: it ends as FAILURE, reason Cancelled."""
    try:
        return services.live("cancel", task_id, app).to_dict()  # type: ignore[no-any-return]
    except NotFoundError:
        if services.archived(task_id, app) is None:
            raise
        raise TaskAlreadyFinishedError(f"task {task_id!r} has already finished (archived)") from None
