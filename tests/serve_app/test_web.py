"""The web page's routes without Ray or a browser (test_browser_e2e.py drives the page for real).

The app comes from the same factory the Serve ingress and the standalone server use, with no
backend: the page and its assets never call one.
"""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from serve_app.api import create_api
from serve_app.config import ServeAppConfig
from serve_app.metrics import LiveStats
from serve_app.routes import Services
from serve_app.web import STATIC_DIR


@pytest.fixture(scope="module")
def app():
    stats = LiveStats(100)

    async def own_stats():
        return [stats.raw()]

    return create_api(Services(ServeAppConfig(), None, None, stats, own_stats, "none"))


def _get(app, path: str) -> tuple[int, dict, bytes]:
    """One GET through the ASGI app (no HTTP client needed)."""
    messages, sent_request = [], []

    async def receive():  # the (empty) request body once, then disconnect when the response is done
        if not sent_request:
            sent_request.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        while not any(m["type"] == "http.response.body" and not m.get("more_body") for m in messages):
            await asyncio.sleep(0.001)
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
             "server": ("testserver", 80), "client": ("127.0.0.1", 1234)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], headers, body


def test_page_and_assets_are_served(app):
    status, headers, body = _get(app, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    for ref in ("/static/app.js", "/static/style.css", 'id="search-form"', 'id="upload-file"', 'id="user-form"',
                'id="results"', 'id="error"'):
        assert ref in page, ref
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, headers, body = _get(app, f"/static/{asset}")
        assert status == 200 and kind in headers["content-type"] and body == (STATIC_DIR / asset).read_bytes()
    status, _, body = _get(app, "/static/missing.js")
    assert status == 404 and json.loads(body)["error"] == "not_found"


def test_page_is_not_in_the_api_schema(app):
    paths = app.openapi()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") or p == "/favicon.ico" for p in paths)


def test_every_endpoint_the_page_calls_exists(app):
    script = (STATIC_DIR / "app.js").read_text()
    called = set(re.findall(r"""api\(\s*[`"'](/[^`"'?$]*)""", script))
    assert {"/api/attributes", "/api/search", "/api/recommend/customer_input", "/api/recommend/user/",
            "/api/similar/"} <= called
    routes = list(app.openapi()["paths"])  # routers are included as a whole: the schema lists their routes
    for prefix in called:
        # "/api/similar/" + an id: a route with a path parameter right after the prefix
        matches = [r for r in routes if (r == prefix if not prefix.endswith("/") else
                                         r.startswith(prefix) and r[len(prefix):].startswith("{"))]
        assert matches, f"the page calls {prefix}… but the API has no such route"
    assert "/images/{item_id}" in routes
