"""Operations: ``/healthz`` (the process answers), ``/readyz`` (it can take work: database,
queue, storage reachable) and Prometheus ``/metrics``. Not under ``/api``: no API key, meant for
the orchestrator and the scraper on the internal network."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from restora.service.routing import Router

router = Router(tags=["Operations"], include_in_schema=True)


def _role(request: Request) -> str:
    return "api" if request.app.state.settings.distributed else "embedded"


@router.get("/healthz", summary="Liveness")
async def healthz(request: Request) -> dict[str, Any]:
    return {"status": "ok", "role": _role(request)}


def _check(request: Request) -> str | None:
    m = request.app.state.manager
    try:
        m.store.ping()
        m.storage.ping()
        ping = getattr(m.queue, "ping", None)
        if ping is not None:
            ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@router.get("/readyz", summary="Readiness: database, queue and storage reachable")
async def readyz(request: Request) -> JSONResponse:
    problem = await run_in_threadpool(_check, request)
    if problem is not None:
        return JSONResponse({"status": "unavailable", "role": _role(request),
                             "reason": problem}, status_code=503)
    return JSONResponse({"status": "ready", "role": _role(request)})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    from restora.service.metrics import CONTENT_TYPE

    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
