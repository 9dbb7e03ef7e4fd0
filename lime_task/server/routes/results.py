"""Archived tasks: an application's (/v1/apps/{app}/results, the client asks here once a task has
left the cluster) and every application's (/v1/results, Kubernetes identities only)."""

from typing import Any

from fastapi import APIRouter, HTTPException

from ...errors import NotFoundError
from ..auth import CHALLENGE, AppMayGet, AppMayList, Bearer, may_list_every_app
from ..contract import AppQuery, CursorQuery, LimitQuery, NamespaceQuery, StateQuery, TaskPage, TaskStatusBody
from ..deps import COMMON_ERRORS, UNAUTHORIZED, ServicesDep, archive_call, archived_dict, doc

router = APIRouter(prefix="/v1/apps/{app}/results", tags=["results"], responses={
    **COMMON_ERRORS, **doc(503, "the cluster or the archive cannot be reached")})


@router.get("/{task_id}", response_model=TaskStatusBody, summary="Read an archived task",
            responses={**doc(404, "no such archived task for this application")})
def read_result(app: AppMayGet, task_id: str, services: ServicesDep) -> dict[str, Any]:
    """A finished task from the archive (the client asks here once a task has left the
    cluster); 404 when it is not archived or belongs to another application."""
    found = services.archived(task_id, app)
    if found is None:
        raise NotFoundError(f"task {task_id!r} not found in the archive")
    return found


@router.get("", response_model=TaskPage, summary="List the application's archived tasks")
def list_results(app: AppMayList, services: ServicesDep, state: StateQuery = None, limit: LimitQuery = 100,
                 cursor: CursorQuery = None) -> dict[str, Any]:
    """The application's archived tasks, newest first; pass `next` as `cursor` for more."""
    if services.reader is None:
        return {"items": [], "next": None}
    page = archive_call(services.reader.list, services.namespace(), app, state, limit, cursor)
    return {"items": [archived_dict(b) for b in page.items], "next": page.next}


every_app = APIRouter()


@every_app.get("/v1/results", response_model=TaskPage, tags=["results"], responses=COMMON_ERRORS,
               summary="List every application's archived tasks")
def list_all_results(credentials: Bearer, services: ServicesDep, app: AppQuery = None, state: StateQuery = None,
                     limit: LimitQuery = 100, cursor: CursorQuery = None,
                     asked: NamespaceQuery = None) -> dict[str, Any]:
    """Archived tasks of every application in the namespace, for a Kubernetes identity that
    may list LimeTasks there (an application's token opens its own application only)."""
    if not may_list_every_app(services, credentials):
        raise HTTPException(401, UNAUTHORIZED, CHALLENGE)
    services.served(asked)
    if services.reader is None:
        return {"items": [], "next": None}
    page = archive_call(services.reader.list, services.namespace(), app, state, limit, cursor)
    return {"items": [archived_dict(b) for b in page.items], "next": page.next}
