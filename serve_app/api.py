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
from serve_app.metrics import LiveStats
from serve_app.routes import Services, crm, dashboard, items, ops, recommend, search, users
from serve_app.web import add_web_routes

log = logging.getLogger("ray.serve")

TAGS = [{"name": "search", "description": "attribute-JSON and free-text product search"},
        {"name": "recommend", "description": "similar and new products from items or uploaded images; "
                                             "recommendations for users (stored or described in the request)"},
        {"name": "items", "description": "the item store (mutations need the admin token)"},
        {"name": "dashboard", "description": "training/evaluation KPIs and live serving metrics"},
        {"name": "ops", "description": "health and metrics"}]


class RequestGate:
    """Every request, as plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task and
    memory streams per request): refuse bodies over the limit by their Content-Length (413), answer
    500 with a JSON body for an error no handler caught (and stay up), and record route, status and
    latency in the live window."""

    def __init__(self, app, max_request_bytes: int, stats: LiveStats):
        self.app, self.limit, self.stats = app, max_request_bytes, stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500, False]   # (status code, response started)

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0], status[1] = message["status"], True
            await send(message)

        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            text = length.decode("latin-1")
            await JSONResponse(status_code=413, content={
                "error": "request_too_large",
                "detail": f"request body of {text} bytes is larger than the limit of {self.limit} bytes"})(
                scope, receive, send_and_note)
        else:
            try:
                await self.app(scope, receive, send_and_note)
            except Exception as exc:  # an error no handler caught: answer 500, stay up
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                if status[1]:
                    raise
                await JSONResponse(status_code=500, content={"error": "internal_error",
                                                             "detail": f"{type(exc).__name__}: {exc}"})(
                    scope, receive, send_and_note)
        # the router sets scope["route"]: its template, never the raw path (bounded label set)
        route = getattr(scope.get("route"), "path", "unmatched")
        self.stats.record(route, scope["method"], status[0], (time.perf_counter() - started) * 1000)


def create_api(services: Services) -> FastAPI:
    config, stats = services.config, services.stats
    app = FastAPI(title="FashionRec", version="0.1.0", openapi_tags=TAGS,
                  description="Fashion search and recommendation over the FashionRec artifacts. Image vectors come "
                              "from the embed run's image encoder (offline default: a hand-crafted stand-in of colour, "
                              "edge and silhouette statistics, `pretrained: none (hand-crafted stand-in)`); attribute "
                              "queries from the stage-2 JSON encoder.")
    app.add_middleware(RequestGate, max_request_bytes=config.max_request_bytes, stats=stats)

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

    for area in (search, recommend, users, crm, items, dashboard, ops):
        app.include_router(area.router(services))
    add_web_routes(app)
    return app
