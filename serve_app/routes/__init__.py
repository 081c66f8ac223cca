"""The HTTP routes, one router per area (search, recommend, users, items, dashboard, ops), over
:class:`Services`: the typed deployment clients and the ingress's own settings and stats.

A route validates what HTTP alone can tell (sizes, k, which inputs are present), makes one call per
model deployment (``serve_app.clients``) and returns that answer: the Recommender builds it whole.
"""
from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from fastapi import Header, UploadFile

from serve_app import schemas
from serve_app.clients import ImageEmbedderClient, RecommenderClient
from serve_app.config import ServeAppConfig
from serve_app.errors import AppError, InputError
from serve_app.metrics import LiveStats

ERRORS = {status: {"model": schemas.ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 415, 422, 503)}


@dataclass
class Services:
    config: ServeAppConfig
    recommender: RecommenderClient
    image_embedder: ImageEmbedderClient
    stats: LiveStats
    all_stats: Callable[[], Awaitable[list[dict]]]   # every ingress replica's window
    backend: str                                     # "ray-serve" | "in-process"

    def resolve_k(self, k: int | None) -> int:
        search = self.config.search
        k = search.default_k if k is None else k
        if not 1 <= k <= search.max_k:
            raise InputError(f"k: expected an integer in [1, {search.max_k}], got {k}", field="k")
        return k

    def n_candidates(self, k: int) -> int:
        """Retrieved before re-ranking: ``search.candidates``, at most 5 x k, at least k."""
        return max(k, min(self.config.search.candidates, 5 * k))

    async def read_upload(self, upload: UploadFile, what: str) -> bytes:
        limit = self.config.uploads.max_bytes
        data = await upload.read(limit + 1)
        if not data:
            raise InputError(f"{what} is empty (0 bytes); expected an image file", status=400, code="empty_upload",
                             field=what)
        if len(data) > limit:
            raise InputError(f"{what} is larger than the limit of {limit} bytes", status=413,
                             code="upload_too_large", field=what)
        return data

    def admin(self):
        """A FastAPI dependency: the admin token in ``X-Admin-Token`` (or ``Authorization: Bearer``)."""
        env = self.config.admin_token_env

        def check(x_admin_token: str | None = Header(None, description="the admin token (env var named by "
                                                                         "admin_token_env)"),
                  authorization: str | None = Header(None)) -> None:
            expected = os.environ.get(env)
            given = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ")
                                      else None)
            if not given:
                raise AppError("admin token required: send it in the X-Admin-Token header", status=401,
                               code="unauthorized")
            if not expected:
                raise AppError(f"admin endpoints are disabled: the server has no {env} set", status=403,
                               code="forbidden")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise AppError("admin token is wrong", status=403, code="forbidden")

        return check


def timed(answer: dict, started: float) -> dict:
    answer["took_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return answer
