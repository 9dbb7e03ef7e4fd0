"""/healthz, /readyz and /metrics. Both answer on the event loop, never in the worker threads that
requests share (a slow cluster or archive may hold them all), and ask nothing of anyone while
the request waits."""

from fastapi import APIRouter, Response

from ..contract import Health, Readiness
from ..deps import ServicesDep
from ..metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> dict[str, str]:
    """Whether the server answers (for liveness: it asks neither the cluster nor the archive)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, summary="Readiness, and what is degraded")
async def readyz(services: ServicesDep) -> dict[str, str]:
    """200 while the server answers, with the state of what it depends on as last seen (the
    archive is looked at in the background, at most every 15 s). A broken dependency makes
    it `degraded`, never 503: every replica shares it, and live tasks are still served."""
    answer = {"archive": services.archive_probe.state(),
              "tokens": "invalid" if services.store.problem else "ok",
              "platform_tokens": "invalid" if services.platform.problem else "ok"}
    healthy = answer["archive"] in ("ok", "none", "unknown") and \
        answer["tokens"] == answer["platform_tokens"] == "ok"
    return {"status": "ok" if healthy else "degraded", **answer}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus's text format"}})
async def metrics(services: ServicesDep) -> Response:
    """The endpoint's requests by route and status, its 429s by reason, its open event streams
    and its idempotent replays (server/metrics.py). Without a token, as the operator's: it names
    no application and no task."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)
