"""The dashboard's HTTP side: the page and its JSON and event-stream API, in the endpoint's
own process and behind its own tokens.

    GET  /dashboard/                                 the page (and /dashboard/static/...)
    GET  /v1/dashboard/me                            who the token is, what it may see and do
    GET  /v1/dashboard/tasks?app=&task=&state=&reason=&window=|since=&until=&limit=&cursor=
                                                     live, then archived tasks, newest first, with
                                                     counts by state (server-side filters, paged)
    GET  /v1/dashboard/tasks/{app}/{id}              one task, whole: arguments, result or error,
                                                     every attempt, the completion event
    POST /v1/dashboard/tasks/{app}/{id}/cancel       only for a token that may cancel it
    GET  /v1/dashboard/stream?(the list's filters)   server-sent events: a task changed, counts
    GET  /v1/dashboard/charts?app=&window=|since=&until=  the figures behind the charts

Who sees what: an application's token sees that application's tasks and nothing of others',
not even how many there are, but for one figure: a waiting task's place in a shared queue
("position 57 of 1200") counts every application's tasks waiting there. A platform token
(LIMETASK_WEB_PLATFORM_TOKENS_FILE or LIMETASK_WEB_PLATFORM_TOKENS, `name=token` lines or a JSON
object) sees every application's and cancels nothing. A Kubernetes token bound to the endpoint's
audience whose identity may list LimeTasks in the namespace sees every application's, and cancels
if it may patch them.

A window (`window`, or `since` and `until`) spans 90 days at most; `since` alone reaches up
to now. A wider one is 422.
"""

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ... import schedule as scheduling
from ...archive import StateCounts
from ...errors import NotFoundError, TaskAlreadyFinishedError
from ...resource import APP_NAME_RE, FINAL_STATES, TASK_NAME_MAX
from ...status import TaskStatus
from ..auth import DASHBOARD_UNAUTHORIZED, Viewer, scope_of
from ..dashboard import model
from ..dashboard.counts import ARCHIVE_COUNTS_TTL
from ..dashboard.model import Filters, Scope
from ..dashboard.watch import TaskWatch
from ..deps import COMMON_ERRORS, ErrorAnswer, Services, ServicesDep, archive_call, doc

STATIC = resources.files("lime_task.server.dashboard") / "static"
# The page loads nothing from elsewhere, runs no inline script, and is never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
HEARTBEAT_SECONDS = 15.0
COUNTS_EVERY_SECONDS = 2.0
# A stream checks its token again this often (a revoked token stops seeing changes).
RECHECK_SECONDS = 60.0
MAX_WINDOW_SECONDS = 90 * 24 * 3600
CHART_WINDOW_DEFAULT = 3600

AppFilter = Annotated[str | None, Query(min_length=1, max_length=63, pattern=APP_NAME_RE.pattern,
                                        description="only this application's tasks")]
TaskFilter = Annotated[str | None, Query(min_length=1, max_length=TASK_NAME_MAX, pattern=r"^[A-Za-z0-9_.]+$",
                                         description="only tasks whose name starts with this")]
StateFilter = Annotated[str | None, Query(pattern=r"^(PENDING|STARTED|SUCCESS|FAILURE)$",
                                          description="only tasks in this state")]
ReasonFilter = Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9]*$",
                                           description="only failures with this reason (CamelCase)")]
WindowFilter = Annotated[int | None, Query(ge=60, le=MAX_WINDOW_SECONDS,
                                           description="the last this many seconds (instead of since)")]
TimeFilter = Annotated[dt.datetime | None, Query(description="RFC 3339; a finished task's completion, an "
                                                             "unfinished one's creation")]
IdFilter = Annotated[str | None, Query(min_length=1, max_length=253, pattern=r"^[a-z0-9][-a-z0-9.]*$")]


def _seconds(when: dt.datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise HTTPException(422, "since and until need a time zone (e.g. 2026-11-30T08:00:00Z)")
    return when.timestamp()


def _filters(app: str | None, task: str | None, state: str | None, reason: str | None, window: int | None,
             since: dt.datetime | None, until: dt.datetime | None, id: str | None = None,
             now: float | None = None) -> Filters:
    now = time.time() if now is None else now
    if window is not None and since is not None:
        raise HTTPException(422, "give window or since, not both")
    start = now - window if window is not None else _seconds(since)
    end = _seconds(until)
    if start is not None and end is not None and end <= start:
        raise HTTPException(422, "until must be after since")
    if start is not None:  # (no since: everything before until, as with no filter at all)
        _check_span(start, end if end is not None else now)
    return Filters(app=app, task=task, state=state, reason=reason, since=start, until=end, id=id)


def _check_span(start: float, end: float) -> None:
    """A window spans 90 days at most, however it is given: one over centuries costs the
    endpoint millions of buckets and rows."""
    if end - start > MAX_WINDOW_SECONDS:
        raise HTTPException(422, f"since and until may span at most {MAX_WINDOW_SECONDS // 86400} days "
                                 f"(since alone: up to now); narrow the window")


def _stamp(seconds: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc) if seconds is not None else None


def apps_of(scope: Scope, filters: Filters) -> list[str] | None:
    """The applications the archive may answer for: the filter's, within the scope."""
    if filters.app is not None:
        return [filters.app] if scope.allows(filters.app) else []
    return None if scope.apps is None else sorted(scope.apps)


def finished_live(scope: Scope, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    return [r["id"] for r in rows if r["state"] in FINAL_STATES and scope.allows(r["app"])]


def archived_counts(services: Services, scope: Scope, filters: Filters, exclude: list[str],
                    fresh: bool = True) -> dict[str, int]:
    """How many archived tasks match, by state. `fresh=False` takes an answer up to 10 s old;
    pages asking the same at once share one query."""
    reader = services.reader
    if reader is None or filters.id is not None:
        return {}
    apps = apps_of(scope, filters)
    if apps == []:
        return {}
    # Windows that end now start a little later at each request: those within the same 10 s
    # share their counts.
    since = None if filters.since is None else int(filters.since // ARCHIVE_COUNTS_TTL)
    key = (tuple(apps) if apps is not None else None, filters.task, filters.reason, since, filters.until,
           len(exclude))
    return services.archive_counts.get(key, lambda: archive_call(lambda: reader.count_states(
        services.namespace(), apps=apps, task=filters.task, reason=filters.reason, since=_stamp(filters.since),
        until=_stamp(filters.until), exclude=exclude)), fresh)


def counts_of(services: Services, scope: Scope, filters: Filters, rows: list[dict[str, Any]], fresh: bool = True,
              exclude: list[str] | None = None) -> StateCounts:
    """Counts by state; they ignore the state filter: the page shows every state's count.
    Estimated when the archive's are (too many archived tasks to count in time)."""
    live_counts = model.count_states(model.visible(rows, scope, filters.without_state()))
    if exclude is None:
        exclude = finished_live(scope, rows)
    archived = archived_counts(services, scope, filters, exclude, fresh)
    return StateCounts(model.add_counts(live_counts, archived), estimated=getattr(archived, "estimated", False))


def own(scope: Scope, app: str, task_id: str) -> None:
    """Another application's task is 404, exactly like a missing one."""
    if not scope.allows(app) or not APP_NAME_RE.match(app):
        raise NotFoundError(f"task {task_id!r} not found")


api = APIRouter(prefix="/v1/dashboard", tags=["dashboard"], responses={
    **COMMON_ERRORS, **doc(403, "this token may look but not cancel"),
    **doc(404, "no such task for this token"), **doc(409, "the task has already finished"),
    **doc(503, "the cluster or the archive cannot be reached")})


@api.get("/me", summary="Who the token is and what it may see")
def me(scope: Viewer, services: ServicesDep) -> dict[str, Any]:
    return {**scope.describe(), "archive": services.reader is not None, "namespace": services.namespace()}


@api.get("/tasks", summary="Tasks for the dashboard's list")
def tasks(scope: Viewer, services: ServicesDep, app: AppFilter = None, task: TaskFilter = None,
          state: StateFilter = None, reason: ReasonFilter = None, window: WindowFilter = None,
          since: TimeFilter = None, until: TimeFilter = None, limit: Annotated[int, Query(ge=1, le=200)] = 50,
          cursor: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    """Live tasks, then archived ones, newest first, filtered on the server; `counts` gives
    how many match in each state (whatever `state` is), `total` how many match in all;
    `counts_estimated`: they are the archive's estimates (too many to count in time)."""
    reader = services.reader
    filters = _filters(app, task, state, reason, window, since, until)
    rows = services.task_watch().rows()
    matching = model.visible(rows, scope, filters)
    exclude = finished_live(scope, rows)  # archived, but counted and listed as live
    # The first page counts afresh; the next ones, with the same filters, may reuse it.
    counts = counts_of(services, scope, filters, rows, fresh=cursor is None, exclude=exclude)
    total = counts.get(state, 0) if state else sum(counts.values())
    items: list[dict[str, Any]] = []
    archive_cursor = cursor
    if cursor is None or cursor.startswith("live."):
        text = (cursor or "live.0")[5:]
        if not text.isdigit() or len(text) > 9:
            raise HTTPException(422, f"invalid cursor {cursor[:80]!r}" if cursor else "invalid cursor")
        offset = int(text)
        items = [dict(r) for r in matching[offset:offset + limit]]
        if len(matching) > offset + limit:
            return {"items": items, "next": f"live.{offset + limit}", "counts": counts, "total": total,
                    "counts_estimated": counts.estimated}
        archive_cursor = None
    apps = apps_of(scope, filters)
    if reader is None or apps == [] or (filters.state is not None and filters.state not in FINAL_STATES) \
            or len(items) >= limit:
        more = reader is not None and apps != [] and len(items) >= limit and \
            (filters.state is None or filters.state in FINAL_STATES)
        return {"items": items, "next": "archive" if more else None, "counts": counts, "total": total,
                "counts_estimated": counts.estimated}
    page = archive_call(lambda: reader.search(
        services.namespace(), apps=apps, task=filters.task, state=filters.state, reason=filters.reason,
        since=_stamp(filters.since), until=_stamp(filters.until), exclude=exclude, limit=limit - len(items),
        cursor=None if archive_cursor in (None, "archive") else archive_cursor))
    items += [model.summary_of(body, archived=True) for body in page.items]
    return {"items": items, "next": page.next, "counts": counts, "total": total,
            "counts_estimated": counts.estimated}


@api.get("/tasks/{app}/{task_id}", summary="One task, whole")
def detail(scope: Viewer, app: str, task_id: str, services: ServicesDep) -> dict[str, Any]:
    """Arguments, result or error, every attempt and the completion event of a live or
    archived task. Another application's task is 404, exactly like a missing one."""
    own(scope, app, task_id)
    reader = services.reader
    body: dict[str, Any] | None = None
    try:
        body, archived = services.client()._get_for_app(task_id, app), False
    except NotFoundError:
        if reader is not None:
            body = archive_call(lambda: reader.get(services.namespace(), task_id, app))
        archived = True
    if body is None:
        raise NotFoundError(f"task {task_id!r} not found")
    return detail_of(body, archived, scope)


@api.post("/tasks/{app}/{task_id}/cancel", summary="Cancel a task")
def cancel(scope: Viewer, app: str, task_id: str, services: ServicesDep) -> dict[str, Any]:
    """Only a token that may cancel the application's tasks: its own token, or a Kubernetes
    identity that may patch LimeTasks. A platform token is 403."""
    own(scope, app, task_id)
    if not scope.may_cancel:
        raise HTTPException(403, "this token may look at tasks but not cancel them")
    try:
        status = services.client().cancel(task_id, app, archive=False)
    except NotFoundError:
        if services.archived(task_id, app) is None:
            raise
        raise TaskAlreadyFinishedError(f"task {task_id!r} has already finished (archived)") from None
    return {"id": status.id, "status": status.status}


@api.get("/charts", summary="The figures behind the charts")
def charts(scope: Viewer, services: ServicesDep, app: AppFilter = None, window: WindowFilter = None,
           since: TimeFilter = None, until: TimeFilter = None) -> dict[str, Any]:
    """Per bucket of the window: tasks sent, started, succeeded and failed, failures by
    reason; run-time percentiles per task name; queues now; the schedules' next runs."""
    reader = services.reader
    # One `now` for both ends: a window is then exactly its buckets (not one more, a moment wide).
    now = time.time()
    filters = _filters(app, None, None, None, window if window or since else CHART_WINDOW_DEFAULT, since, until,
                       now=now)
    start = filters.since if filters.since is not None else now - CHART_WINDOW_DEFAULT
    end = filters.until if filters.until is not None else now
    if end <= start:
        raise HTTPException(422, "until must be after since (the last hour when since is not given)")
    _check_span(start, end)
    try:
        start, step, size = model.axis(start, end)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    rows = model.visible(services.task_watch().rows(), scope, Filters(app=app))
    throughput, reasons = model.Series(size), model.Series(size)
    model.live_throughput(rows, start, end, step, throughput, reasons)
    durations = model.live_durations(rows, start, end)
    runtimes = model.runtimes(durations)
    apps = apps_of(scope, filters)
    if reader is not None and apps != []:
        figures = archive_call(lambda: reader.chart_figures(
            services.namespace(), apps=apps, since=dt.datetime.fromtimestamp(start, dt.timezone.utc),
            until=dt.datetime.fromtimestamp(end, dt.timezone.utc), step=step,
            exclude=finished_live(scope, rows),
            live=[(t, d) for t, values in durations.items() for d in values]))
        for kind, index, why, n in figures["counts"]:
            throughput.add(kind, index, n)
            if kind == "FAILURE":
                reasons.add(why or "Unknown", index, n)
        runtimes = figures["runtimes"]
    schedules, schedule_problem = [], None
    try:
        listed = scheduling.list_schedules(services.client(), app if app is not None else None)
        schedules = model.next_runs([s for s in listed if scope.allows(str(s.get("app")))],
                                    dt.datetime.now(dt.timezone.utc))
    except Exception as exc:  # noqa: BLE001 - schedules are one panel: say why it is empty
        schedule_problem = f"the schedules cannot be listed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    answer: dict[str, Any] = model.clean({
        "since": start, "until": end, "step": step,
        "buckets": [start + i * step for i in range(size)],
        "throughput": throughput.as_dict(), "reasons": reasons.as_dict(), "runtimes": runtimes,
        "queues": model.queues(rows, now), "schedules": schedules, "schedules_problem": schedule_problem,
    })
    return answer


@api.get("/stream", summary="Changes, as server-sent events")
async def stream(request: Request, scope: Viewer, services: ServicesDep, app: AppFilter = None,
                 task: TaskFilter = None, state: StateFilter = None, reason: ReasonFilter = None,
                 window: WindowFilter = None, since: TimeFilter = None, until: TimeFilter = None,
                 id: IdFilter = None) -> StreamingResponse:
    """`task` events (a task in the scope changed: `row`, and whether it `match`es the
    filters), `deleted`, `counts` (at most every 2 s, after changes) and `reset` (reload:
    the view was rebuilt, or this page fell behind). Comments keep the connection open."""
    filters = _filters(app, task, state, reason, window, since, until, id)
    watch_now = await run_in_threadpool(services.task_watch)
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    return StreamingResponse(events(request, services, watch_now, scope, filters, token),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def events(request: Request, services: Services, source: TaskWatch, scope: Scope, filters: Filters,
                 token: str) -> AsyncIterator[str]:
    sub = source.subscribe()
    try:
        yield "retry: 3000\n\n"
        yield _event("hello", {"healthy": source.healthy})
        dirty, last_counts, last_check = False, 0.0, time.monotonic()
        while True:
            since_counts = time.monotonic() - last_counts
            wait = HEARTBEAT_SECONDS if not dirty else max(0.05, COUNTS_EVERY_SECONDS - since_counts)
            try:
                kind, row = await asyncio.wait_for(sub.queue.get(), wait)
            except asyncio.TimeoutError:
                kind, row = "", None
            if await request.is_disconnected():
                return
            if time.monotonic() - last_check > RECHECK_SECONDS:
                last_check = time.monotonic()
                try:
                    now_scope = await run_in_threadpool(scope_of, services, token)
                except HTTPException:  # too many new tokens to check just now: at the next turn
                    now_scope = scope
                if now_scope != scope:
                    yield _event("unauthorized", {"detail": DASHBOARD_UNAUTHORIZED})
                    return
            if kind == "reset":
                sub.overflowed = False
                yield _event("reset", {})
                dirty = True
            elif kind in ("task", "deleted") and scope.allows(row["app"]):
                if filters.id is None or row["id"] == filters.id:
                    yield _event(kind, {"row": row, "match": filters.matches(row)})
                    dirty = True
            elif not kind and not dirty:
                yield ": keep-alive\n\n"
            # Counts wait for a quiet moment (nothing queued for this page), or 10 s at most:
            # changes are never held back behind a count.
            quiet = sub.queue.empty() or time.monotonic() - last_counts >= ARCHIVE_COUNTS_TTL
            if dirty and quiet and time.monotonic() - last_counts >= COUNTS_EVERY_SECONDS and filters.id is None:
                rows = source.rows()
                try:
                    counts = await run_in_threadpool(counts_of, services, scope, filters, rows, False)
                except ErrorAnswer:
                    counts = StateCounts(model.add_counts(model.count_states(model.visible(
                        rows, scope, filters.without_state()))))
                total = counts.get(filters.state, 0) if filters.state else sum(counts.values())
                yield _event("counts", {"counts": counts, "total": total, "healthy": source.healthy,
                                        "counts_estimated": counts.estimated})
                dirty, last_counts = False, time.monotonic()
            elif filters.id is not None:
                dirty = False
    finally:
        source.unsubscribe(sub)


def detail_of(body: dict[str, Any], archived: bool, scope: Scope) -> dict[str, Any]:
    summary = model.summary_of(body, archived=archived)
    spec, st = body.get("spec") or {}, body.get("status") or {}
    status = TaskStatus.from_resource(body, archived=archived).to_dict()
    answer: dict[str, Any] = model.clean({
        **summary,
        "args": spec.get("args", []), "kwargs": spec.get("kwargs", {}),
        "result": status.get("result"), "error": status.get("error"),
        "history": [dict(h) for h in st.get("history") or () if isinstance(h, dict)],
        "job": st.get("jobName"), "event": st.get("event") or None,
        "conditions": [dict(c) for c in st.get("conditions") or () if isinstance(c, dict)],
        "options": {"acks_late": bool(spec.get("acksLate")), "max_attempts": spec.get("maxAttempts"),
                    "timeout_seconds": spec.get("timeoutSeconds"), "eta": spec.get("eta"),
                    "expires": spec.get("expires"), "queue": spec.get("queue") or "default",
                    "priority": spec.get("priority", 0), "retries": st.get("retries", 0),
                    "retry_at": st.get("retryAt")},
        "may_cancel": scope.may_cancel and not archived and summary["state"] not in FINAL_STATES,
    })
    return answer


# The page itself; its static files are mounted at /dashboard/static by `create_app`.
page = APIRouter(include_in_schema=False)


@page.get("/dashboard")
def dashboard_redirect() -> RedirectResponse:
    return RedirectResponse("dashboard/", status_code=308)


@page.get("/dashboard/")
def dashboard_page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html", headers=SECURITY_HEADERS)


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False, default=str)}\n\n"
