"""The HTTP API: one FastAPI app of the routers in ``serve_app.routes`` over :class:`Services`
(typed clients of Serve deployments, or of the same objects in one process).

Every refusal is a JSON ``{"error", "detail", "field"?, "problems"?}`` with a 4xx status naming the
problem; nothing a client sends can take the application down or change its state on failure.
"""
from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.errors import AppError
from serve_app.metrics import ray_metrics_or_none
from serve_app.routes import Services, dashboard, items, ops, recommend, search, users
from serve_app.web import add_web_routes

log = logging.getLogger("ray.serve")

TAGS = [{"name": "search", "description": "attribute-JSON and free-text product search"},
        {"name": "recommend", "description": "similar and new products from items or uploaded images; "
                                             "recommendations for users (stored or described in the request)"},
        {"name": "items", "description": "the item store (mutations need the admin token)"},
        {"name": "dashboard", "description": "training/evaluation KPIs and live serving metrics"},
        {"name": "ops", "description": "health and metrics"}]


def create_api(services: Services) -> FastAPI:
    config, stats = services.config, services.stats
    app = FastAPI(title="FashionRec", version="0.1.0", openapi_tags=TAGS,
                  description="Fashion search and recommendation over the FashionRec artifacts. Image vectors come "
                              "from the embed run's open_clip encoder (offline default: a seeded stand-in, "
                              "`pretrained: none (stand-in)`); attribute queries from the stage-2 JSON encoder.")
    ray_metrics = ray_metrics_or_none()

    # -- cross-cutting: body limit, metrics, errors --------------------------------------------
    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_request_bytes):
            response = JSONResponse(status_code=413, content={
                "error": "request_too_large", "detail": f"request body of {length} bytes is larger than the limit "
                                                        f"of {config.max_request_bytes} bytes"})
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # an error no handler caught: answer 500, stay up
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                response = JSONResponse(status_code=500, content={"error": "internal_error",
                                                                  "detail": f"{type(exc).__name__}: {exc}"})
        route = getattr(request.scope.get("route"), "path", "unmatched")
        elapsed_ms = (time.perf_counter() - started) * 1000
        stats.record(route, request.method, response.status_code, elapsed_ms)
        if ray_metrics is not None:
            ray_metrics.record(route, request.method, response.status_code, elapsed_ms)
        return response

    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError):
        return JSONResponse(status_code=exc.status, content=exc.payload())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        malformed = [e for e in errors if e.get("type") == "json_invalid"]
        if malformed:
            ctx = malformed[0].get("ctx") or {}
            return JSONResponse(status_code=400, content={
                "error": "malformed_json", "detail": f"request body is not valid JSON: {ctx.get('error', 'parse error')}"
                                                     f" (at position {malformed[0]['loc'][-1]})"})
        problems = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"],
                     "type": e["type"]} for e in errors]
        detail = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems)
        return JSONResponse(status_code=422, content={"error": "invalid_request", "detail": detail,
                                                      "field": problems[0]["field"] if problems else None,
                                                      "problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
            exc.status_code, "http_error")
        return JSONResponse(status_code=exc.status_code, content={"error": code, "detail": str(exc.detail)},
                            headers=getattr(exc, "headers", None))

    for area in (search, recommend, users, items, dashboard, ops):
        app.include_router(area.router(services))
    add_web_routes(app)
    return app
