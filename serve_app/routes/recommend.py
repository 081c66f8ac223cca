"""Recommendations from items and images: similar products, a customer's photo or click, best
sellers -> new products."""
from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, File, Form, Path as PathParam, Query, UploadFile

from serve_app import schemas
from serve_app.errors import InputError, VersionMoved
from serve_app.routes import ERRORS, Services, timed

MAX_BEST_SELLER_UPLOADS = 20
VERSION_MOVE_RETRIES = 3


async def embedded_and_answered(services: Services, uploads: list[tuple[bytes, str]], answer):
    """Embed ``uploads`` (bytes, field name), then ``answer(embedded)``; when the two deployments
    are mid-move between versions (the vectors belong to the other one), embed again."""
    for attempt in range(VERSION_MOVE_RETRIES):
        embedded = await asyncio.gather(*(services.image_embedder.embed(data, what) for data, what in uploads))
        try:
            return await answer(list(embedded))
        except VersionMoved:
            if attempt + 1 == VERSION_MOVE_RETRIES:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["recommend"])
    recommender = services.recommender

    @api.get("/api/similar/{item_id}", response_model=schemas.SearchResponse, responses=ERRORS,
             summary="Products that look like an item (image vectors)")
    async def similar(item_id: str = PathParam(..., max_length=128),
                      k: int | None = Query(None, ge=1), mmr_lambda: float | None = Query(None, ge=0, le=1),
                      scope: Literal["all", "new"] = Query("all")):
        started = time.perf_counter()
        k = services.resolve_k(k)
        return timed(await recommender.similar(item_id, k, services.n_candidates(k), mmr_lambda, scope), started)

    @api.post("/api/recommend/customer_input", response_model=schemas.SearchResponse, responses=ERRORS,
              summary="A customer's photo (multipart `file`) or clicked item (`item_id`) -> top-K new products")
    async def customer_input(file: UploadFile | None = File(None, description="a photo (JPEG/PNG/WebP/...)"),
                             item_id: str | None = Form(None, max_length=128, description="a clicked item"),
                             k: int | None = Form(None), mmr_lambda: float | None = Form(None, ge=0, le=1),
                             scope: Literal["all", "new"] = Form("new")):
        started = time.perf_counter()
        k = services.resolve_k(k)
        n = services.n_candidates(k)
        has_file = file is not None and (file.filename or file.size)
        if bool(has_file) == bool(item_id):
            raise InputError("give exactly one of: an image upload (multipart field 'file') or 'item_id'",
                             field="file" if has_file else "item_id")
        if item_id:
            answer = await recommender.similar(item_id, k, n, mmr_lambda, scope, {"type": "item", "item_id": item_id})
            return timed(answer, started)
        data = await services.read_upload(file, "file")

        async def answer(embedded):
            (image,) = embedded
            query = {"type": "image", "filename": file.filename, "width": image["width"],
                     "height": image["height"], "image_encoder_pretrained": image["pretrained"]}
            return await recommender.search_image(image, k, n, mmr_lambda, scope, query)

        return timed(await embedded_and_answered(services, [(data, "file")], answer), started)

    @api.post("/api/recommend/top10_to_new", response_model=schemas.Top10ToNewResponse, responses=ERRORS,
              summary="Best sellers (uploads, item ids, or the current top 10% by the centrality proxy) -> the "
                      "most similar new products, with category/colour/style trends")
    async def best_to_new(files: list[UploadFile] = File(default=[], description="best sellers' photos"),
                          item_ids: list[str] = Form(default=[], description="best sellers' item ids (repeat the "
                                                                                 "field or separate with commas)"),
                          k: int | None = Form(None), share: float | None = Form(None, gt=0, le=1),
                          mmr_lambda: float | None = Form(None, ge=0, le=1),
                          scope: Literal["all", "new"] = Form("new")):
        started = time.perf_counter()
        k = services.resolve_k(k)
        n = services.n_candidates(k)
        files = [f for f in files if f is not None and (f.filename or f.size)]
        ids = [i.strip() for value in item_ids for i in value.split(",") if i.strip()]
        if len(files) > MAX_BEST_SELLER_UPLOADS:
            raise InputError(f"files: at most {MAX_BEST_SELLER_UPLOADS} images, got {len(files)}", status=413,
                             field="files")
        uploads = [(await services.read_upload(f, f"files[{n_}]"), f"files[{n_}]") for n_, f in enumerate(files)]

        async def answer(embedded):
            described = [{**e, "item_id": f"upload:{n_}:{f.filename or 'image'}", "filename": f.filename}
                         for n_, (e, f) in enumerate(zip(embedded, files))]
            return await recommender.top10_to_new(ids, described, k, n, share, mmr_lambda, scope)

        if not uploads:
            return timed(await answer([]), started)
        return timed(await embedded_and_answered(services, uploads, answer), started)

    return api
