"""Search: attribute-JSON and/or free-text queries, and the attribute fields a query may use."""
from __future__ import annotations

import time

from fastapi import APIRouter

from serve_app import schemas
from serve_app.errors import InputError
from serve_app.routes import ERRORS, Services, timed


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["search"])

    @api.post("/api/search", response_model=schemas.SearchResponse, responses=ERRORS,
              summary="Attribute-JSON (and/or free-text) query -> top-K products")
    async def search(body: schemas.SearchRequest):
        started = time.perf_counter()
        k = services.resolve_k(body.k)
        text = body.text if body.text and body.text.strip() else None
        if not body.attributes and text is None:
            raise InputError("give attributes (an object of attribute fields) and/or text", field="attributes")
        answer = await services.recommender.search(body.attributes or None, text, k, services.n_candidates(k),
                                                   body.mmr_lambda, body.exclude_ids, body.scope)
        answer["query"]["text"] = body.text
        return timed(answer, started)

    @api.get("/api/attributes", summary="Fields an attribute query may use and their known values")
    async def attributes():
        return await services.recommender.describe()

    return api
