"""User recommendations: a stored user, or one described in the request."""
from __future__ import annotations

import time

from fastapi import APIRouter, Path as PathParam, Query

from serve_app import schemas
from serve_app.routes import ERRORS, Services, timed


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["recommend"])

    @api.get("/api/recommend/user/{user_id}", response_model=schemas.UserRecommendResponse, responses=ERRORS,
             summary="A stored user's history, profile and context -> top-K products "
                     "(user tower + ItemKNN + popularity candidates, learned reranker)")
    async def recommend_stored_user(user_id: str = PathParam(..., max_length=128, examples=["user-000000"]),
                                    k: int | None = Query(None, ge=1),
                                    mmr_lambda: float | None = Query(None, ge=0, le=1, description=(
                                        "diversity: 1 = the reranker's order, lower = more varied"))):
        started = time.perf_counter()
        k = services.resolve_k(k)
        return timed(await services.recommender.recommend_stored_user(user_id, k, mmr_lambda), started)

    @api.post("/api/recommend/user", response_model=schemas.UserRecommendResponse, responses=ERRORS,
              summary="A user not in the store (history item ids and/or profile fields and/or context text) -> "
                      "top-K products")
    async def recommend_user(body: schemas.UserRecommendRequest):
        started = time.perf_counter()
        k = services.resolve_k(body.k)
        answer = await services.recommender.recommend_user(body.history, body.profile, body.context, k,
                                                           body.mmr_lambda, body.exclude_ids)
        return timed(answer, started)

    return api
