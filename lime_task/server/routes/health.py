"""/healthz and /readyz. Both answer on the event loop, never in the worker threads that
requests share (a slow cluster or archive may hold them all), and ask nothing of anyone while
the request waits."""

from fastapi import APIRouter

from ..contract import Health, Readiness
from ..deps import ServicesDep

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
