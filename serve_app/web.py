"""The small web page the ingress serves at ``/``: plain HTML + vanilla JS over the JSON API.

    GET /                 the page (serve_app/static/index.html)
    GET /kpi              the KPI dashboard (serve_app/static/kpi.html over GET /api/kpi)
    GET /static/{file}    its script and style sheet

The page builds its attribute-search form from ``GET /api/attributes`` and calls ``POST /api/search``,
``POST /api/recommend/customer_input`` (photo upload), ``GET /api/similar/{item_id}`` and
``GET /api/recommend/user/{user_id}``; results are an image grid (``/images/{item_id}``) with ranks
and scores, and every 4xx/5xx answer's ``detail`` is shown on the page. No build step, no CDN: it
works offline. Neither route is part of the OpenAPI schema.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def add_web_routes(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/static`` on ``app``."""
    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    async def web_page():
        return FileResponse(index, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @app.get("/kpi", include_in_schema=False)
    async def kpi_page():
        return FileResponse(STATIC_DIR / "kpi.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
