"""Health and metrics."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from serve_app import schemas
from serve_app.metrics import prometheus_text
from serve_app.routes import Services

HEALTH_TIMEOUT_S = 10


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["ops"])

    @api.get("/healthz", response_model=schemas.HealthResponse, responses={503: {"model": schemas.HealthResponse}})
    async def healthz():
        names = ("image_embedder", "recommender")
        clients = (services.image_embedder, services.recommender)
        results = await asyncio.gather(*(asyncio.wait_for(c.health(), HEALTH_TIMEOUT_S) for c in clients),
                                       return_exceptions=True)
        deployments = {n: (r if not isinstance(r, BaseException) else {"ok": False, "error": f"{type(r).__name__}: {r}"})
                       for n, r in zip(names, results)}
        ok = all(d.get("ok") for d in deployments.values())
        return JSONResponse(status_code=200 if ok else 503,
                            content={"status": "ok" if ok else "degraded", "deployments": deployments})

    @api.get("/metrics", response_class=PlainTextResponse,
             summary="This application's request/error/latency metrics (Prometheus text format)")
    async def metrics():
        return PlainTextResponse(prometheus_text(await services.all_stats()), media_type="text/plain; version=0.0.4")

    return api
