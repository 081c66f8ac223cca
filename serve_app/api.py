"""The HTTP API: FastAPI routes over a backend (Serve handles or in-process components).

Every refusal is a JSON ``{"error", "detail", "field"?, "problems"?}`` with a 4xx status naming the
problem; nothing a client sends can take the application down or change its state on failure.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from typing import Awaitable, Callable, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Header, Path as PathParam, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import schemas
from serve_app.config import ServeAppConfig
from serve_app.deployments.retriever import top10_to_new
from serve_app.errors import AppError, InputError, Unavailable
from serve_app.kpi import dashboard, image_url
from serve_app.metrics import LiveStats, prometheus_text, ray_metrics_or_none, summarize
from serve_app.versions import newest_version, pin_version, version_label
from serve_app.web import add_web_routes

log = logging.getLogger("ray.serve")

ERRORS = {status: {"model": schemas.ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 415, 422, 503)}
MAX_BEST_SELLER_UPLOADS = 20
MODEL_DEPLOYMENTS = ("image_embedder", "query_encoder", "retriever", "reranker")
TAGS = [{"name": "search", "description": "attribute-JSON and free-text product search"},
        {"name": "recommend", "description": "similar and new products from items or uploaded images; "
                                             "recommendations for users (stored or described in the request)"},
        {"name": "items", "description": "the item store (mutations need the admin token)"},
        {"name": "dashboard", "description": "training/evaluation KPIs and live serving metrics"},
        {"name": "admin", "description": "model/index version management (admin token)"},
        {"name": "ops", "description": "health and metrics"}]


def item_out(item: dict) -> dict:
    return {**item, "image_url": image_url(item["item_id"])}


def create_api(backend, config: ServeAppConfig, stats: LiveStats,
               all_stats: Callable[[], Awaitable[list[dict]]] | None = None) -> FastAPI:
    app = FastAPI(title="FashionRec", version="0.1.0", openapi_tags=TAGS,
                  description="Fashion search and recommendation over the FashionRec artifacts. Image vectors come "
                              "from the embed run's open_clip encoder (offline default: a seeded stand-in, "
                              "`pretrained: none (stand-in)`); attribute queries from the stage-2 JSON encoder.")
    ray_metrics = ray_metrics_or_none()
    all_stats = all_stats or (lambda: _single(stats))

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

    # -- helpers -------------------------------------------------------------------------------
    def admin(x_admin_token: str | None = Header(None, description="the admin token (env var named by "
                                                                    "admin_token_env)"),
              authorization: str | None = Header(None)) -> None:
        expected = os.environ.get(config.admin_token_env)
        given = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        if not given:
            raise AppError("admin token required: send it in the X-Admin-Token header", status=401,
                           code="unauthorized")
        if not expected:
            raise AppError(f"admin endpoints are disabled: the server has no {config.admin_token_env} set",
                           status=403, code="forbidden")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise AppError("admin token is wrong", status=403, code="forbidden")

    def resolve_k(k: int | None) -> int:
        k = config.search.default_k if k is None else k
        if not 1 <= k <= config.search.max_k:
            raise InputError(f"k: expected an integer in [1, {config.search.max_k}], got {k}", field="k")
        return k

    def n_candidates(k: int) -> int:
        return max(k, min(config.search.candidates, 5 * k))

    async def read_upload(upload: UploadFile, what: str) -> bytes:
        data = await upload.read(config.uploads.max_bytes + 1)
        if not data:
            raise InputError(f"{what} is empty (0 bytes); expected an image file", status=400, code="empty_upload",
                             field=what)
        if len(data) > config.uploads.max_bytes:
            raise InputError(f"{what} is larger than the limit of {config.uploads.max_bytes} bytes", status=413,
                             code="upload_too_large", field=what)
        return data

    async def rerank(retrieved: dict, k: int, mmr_lambda: float | None) -> tuple[list[dict], dict]:
        scores = np.asarray(retrieved["scores"], dtype=np.float32)
        if len(scores) == 0:
            info = (await backend.call("reranker", "rerank", scores, np.zeros((0, 1), np.float32), k, mmr_lambda))
            return [], info["reranker"]
        ranked = await backend.call("reranker", "rerank", scores, retrieved["vectors"], k, mmr_lambda)
        hits = [{"rank": n + 1, "score": round(float(scores[i]), 6), "mmr_score": round(float(g), 6),
                 "item": item_out(retrieved["items"][i]), "_index": int(i)}
                for n, (i, g) in enumerate(zip(ranked["order"], ranked["mmr_scores"]))]
        return hits, ranked["reranker"]

    def model_info(retrieved: dict) -> dict:
        return retrieved["version"]

    async def answer_search(retrieved: dict, k: int, mmr_lambda: float | None, query: dict, unknown: dict,
                            started: float) -> dict:
        hits, reranker = await rerank(retrieved, k, mmr_lambda)
        for hit in hits:
            hit.pop("_index")
        return {"query": query, "unknown_values": unknown, "results": hits, "reranker": reranker,
                "scope": retrieved["scope"], "note": retrieved["note"], "model": model_info(retrieved),
                "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    # -- search and recommendations ------------------------------------------------------------
    @app.post("/api/search", response_model=schemas.SearchResponse, tags=["search"], responses=ERRORS,
              summary="Attribute-JSON (and/or free-text) query -> top-K products")
    async def search(body: schemas.SearchRequest):
        started = time.perf_counter()
        k = resolve_k(body.k)
        if not body.attributes and not (body.text and body.text.strip()):
            raise InputError("give attributes (an object of attribute fields) and/or text", field="attributes")
        calls = []
        if body.attributes:
            calls.append(backend.call("query_encoder", "encode_attributes", body.attributes))
        if body.text and body.text.strip():
            calls.append(backend.call("query_encoder", "encode_text", [body.text]))
        encoded = await asyncio.gather(*calls)
        attribute_part = encoded[0] if body.attributes else None
        text_vector = encoded[-1][0] if body.text and body.text.strip() else None
        retrieved = await backend.call("retriever", "search", attribute_part["vector"] if attribute_part else None,
                                       text_vector, n_candidates(k), body.exclude_ids, body.scope)
        query = {"attributes": attribute_part["record"] if attribute_part else None, "text": body.text}
        return await answer_search(retrieved, k, body.mmr_lambda, query,
                                   attribute_part["unknown_values"] if attribute_part else {}, started)

    @app.get("/api/similar/{item_id}", response_model=schemas.SearchResponse, tags=["recommend"], responses=ERRORS,
             summary="Products that look like an item (image vectors)")
    async def similar(item_id: str = PathParam(..., max_length=128),
                      k: int | None = Query(None, ge=1), mmr_lambda: float | None = Query(None, ge=0, le=1),
                      scope: Literal["all", "new"] = Query("all")):
        started = time.perf_counter()
        k = resolve_k(k)
        retrieved = await backend.call("retriever", "similar", item_id, n_candidates(k), scope)
        return await answer_search(retrieved, k, mmr_lambda, {"item_id": item_id}, {}, started)

    @app.post("/api/recommend/customer_input", response_model=schemas.SearchResponse, tags=["recommend"],
              responses=ERRORS, summary="A customer's photo (multipart `file`) or clicked item (`item_id`) -> "
                                        "top-K new products")
    async def customer_input(file: UploadFile | None = File(None, description="a photo (JPEG/PNG/WebP/...)"),
                             item_id: str | None = Form(None, max_length=128, description="a clicked item"),
                             k: int | None = Form(None), mmr_lambda: float | None = Form(None, ge=0, le=1),
                             scope: Literal["all", "new"] = Form("new")):
        started = time.perf_counter()
        k = resolve_k(k)
        has_file = file is not None and (file.filename or file.size)
        if bool(has_file) == bool(item_id):
            raise InputError("give exactly one of: an image upload (multipart field 'file') or 'item_id'",
                             field="file" if has_file else "item_id")
        if item_id:
            retrieved = await backend.call("retriever", "similar", item_id, n_candidates(k), scope)
            query = {"type": "item", "item_id": item_id}
        else:
            data = await read_upload(file, "file")
            embedded = await backend.call("image_embedder", "embed", data, "file")
            retrieved = await backend.call("retriever", "search", embedded["vector"], None, n_candidates(k), (), scope)
            query = {"type": "image", "filename": file.filename, "width": embedded["width"],
                     "height": embedded["height"], "image_encoder_pretrained": embedded["pretrained"]}
        return await answer_search(retrieved, k, mmr_lambda, query, {}, started)

    async def answer_user(query: dict, k: int, mmr_lambda: float | None, exclude_ids: list[str],
                          started: float) -> dict:
        """A user query (QueryEncoder) -> candidates (Retriever) -> learned reranker + MMR (Reranker)."""
        retrieved = await backend.call("retriever", "user_candidates", query["vector"], query["history"], k,
                                       exclude_ids, query["source"] == "request")
        ranked = await backend.call("reranker", "rerank_user", retrieved, query["history"], k, mmr_lambda)
        sources = retrieved["source_scores"]
        hits = [{"rank": n + 1, "score": round(float(score), 6), "mmr_score": round(float(gain), 6),
                 "sources": {name: round(float(values[i]), 6) for name, values in sources.items()},
                 "item": item_out(retrieved["items"][i])}
                for n, (i, score, gain) in enumerate(zip(ranked["order"], ranked["scores"], ranked["mmr_scores"]))]
        user = {**{key: query["query"][key] for key in ("user_id", "history", "profile", "context")},
                "source": query["source"], "not_in_user_model": query["not_in_user_model"]}
        return {"user": user, "unknown_values": query["unknown_values"], "results": hits,
                "reranker": ranked["reranker"], "candidates": len(retrieved["items"]), "note": query["note"],
                "model": model_info(retrieved), "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    @app.get("/api/recommend/user/{user_id}", response_model=schemas.UserRecommendResponse, tags=["recommend"],
             responses=ERRORS, summary="A stored user's history, profile and context -> top-K products "
                                       "(user tower + ItemKNN + popularity candidates, learned reranker)")
    async def recommend_stored_user(user_id: str = PathParam(..., max_length=128, examples=["user-000000"]),
                                    k: int | None = Query(None, ge=1),
                                    mmr_lambda: float | None = Query(None, ge=0, le=1, description=(
                                        "diversity: 1 = the reranker's order, lower = more varied"))):
        started = time.perf_counter()
        k = resolve_k(k)
        query = await backend.call("query_encoder", "encode_stored_user", user_id)
        return await answer_user(query, k, mmr_lambda, [], started)

    @app.post("/api/recommend/user", response_model=schemas.UserRecommendResponse, tags=["recommend"],
              responses=ERRORS, summary="A user not in the store (history item ids and/or profile fields and/or "
                                        "context text) -> top-K products")
    async def recommend_user(body: schemas.UserRecommendRequest):
        started = time.perf_counter()
        k = resolve_k(body.k)
        query = await backend.call("query_encoder", "encode_user", body.history, body.profile, body.context)
        return await answer_user(query, k, body.mmr_lambda, body.exclude_ids, started)

    @app.post("/api/recommend/top10_to_new", response_model=schemas.Top10ToNewResponse, tags=["recommend"],
              responses=ERRORS, summary="Best sellers (uploads, item ids, or the current top 10% by the centrality "
                                        "proxy) -> the most similar new products, with category/colour/style trends")
    async def best_to_new(files: list[UploadFile] = File(default=[], description="best sellers' photos"),
                          item_ids: list[str] = Form(default=[], description="best sellers' item ids (repeat the "
                                                                                 "field or separate with commas)"),
                          k: int | None = Form(None), share: float | None = Form(None, gt=0, le=1),
                          mmr_lambda: float | None = Form(None, ge=0, le=1),
                          scope: Literal["all", "new"] = Form("new")):
        started = time.perf_counter()
        k = resolve_k(k)
        files = [f for f in files if f is not None and (f.filename or f.size)]
        ids = [i.strip() for value in item_ids for i in value.split(",") if i.strip()]
        if len(files) > MAX_BEST_SELLER_UPLOADS:
            raise InputError(f"files: at most {MAX_BEST_SELLER_UPLOADS} images, got {len(files)}", status=413,
                             field="files")
        best, vectors = [], []
        if ids:
            given = await backend.call("retriever", "items_with_vectors", ids)
            best += given["items"]
            vectors.append(given["vectors"])
        if files:
            uploads = [await read_upload(f, f"files[{n}]") for n, f in enumerate(files)]
            embedded = await asyncio.gather(*(backend.call("image_embedder", "embed", data, f"files[{n}]")
                                              for n, data in enumerate(uploads)))
            upload_vectors = np.stack([e["vector"] for e in embedded])
            labels = await backend.call("retriever", "nearest_labels", upload_vectors)
            for n, (upload, label) in enumerate(zip(files, labels)):
                best.append({"item_id": f"upload:{n}:{upload.filename or 'image'}", "title": upload.filename,
                             "category": label.get("category"), "attributes": label.get("attributes", {}),
                             "styles": label.get("styles", []), "inferred_from": label.get("item_id"),
                             "inferred_similarity": label.get("similarity")})
            vectors.append(upload_vectors)
        if ids or files:
            source = "given: " + ", ".join(p for p in (f"{len(ids)} item ids" if ids else "",
                                                        f"{len(files)} uploaded images" if files else "") if p)
        else:
            chosen = await backend.call("retriever", "best_sellers", share)
            best, source = chosen["items"], chosen["source"]
            vectors.append(chosen["vectors"])
            if not best:
                raise InputError("no best sellers: the catalog has no existing (non-new) items", status=409,
                                 code="no_best_sellers")
        best_vectors = np.concatenate(vectors).astype(np.float32)
        retrieved = await backend.call("retriever", "match_set", best_vectors, n_candidates(k),
                                       [b["item_id"] for b in best], scope)
        hits, reranker = await rerank(retrieved, k, mmr_lambda)
        order = [h["_index"] for h in hits]
        reordered = {"items": [retrieved["items"][i] for i in order], "scores": retrieved["scores"][order],
                     "vectors": retrieved["vectors"][order]}
        matched = top10_to_new(best, best_vectors, reordered, k)
        for hit, result in zip(hits, matched["results"]):
            hit.pop("_index")
            hit["matched_best_sellers"] = result["matched_best_sellers"]
        listed = [{**b, "image_url": image_url(b["item_id"])} if not b["item_id"].startswith("upload:") else b
                  for b in best[:50]]
        return {"best_sellers": {"source": source, "n": len(best), "items": listed}, "results": hits,
                "trends": matched["trends"], "reranker": reranker, "scope": retrieved["scope"],
                "note": retrieved["note"], "model": model_info(retrieved),
                "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    # -- the item store ------------------------------------------------------------------------
    @app.post("/api/items", response_model=schemas.ItemOut, status_code=201, tags=["items"], responses=ERRORS,
              dependencies=[Depends(admin)], summary="Add a product: metadata (JSON) + image; recommendable at once")
    async def add_item(metadata: str = Form(..., description="JSON object, see ItemMetadata",
                                            examples=[json.dumps(schemas.ItemMetadata.model_config[
                                                "json_schema_extra"]["examples"][0], ensure_ascii=False)]),
                       file: UploadFile = File(..., description="the product image")):
        try:
            raw = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise InputError(f"metadata: not valid JSON: {exc.msg} at position {exc.pos}", status=400,
                             code="malformed_json", field="metadata") from None
        try:
            meta = schemas.ItemMetadata.model_validate(raw)
        except ValidationError as exc:
            problems = [{"field": "metadata." + ".".join(str(p) for p in e["loc"]), "problem": e["msg"],
                         "type": e["type"]} for e in exc.errors()]
            return JSONResponse(status_code=422, content={
                "error": "invalid_request", "field": problems[0]["field"], "problems": problems,
                "detail": "; ".join(f"{p['field']}: {p['problem']}" for p in problems)})
        data = await read_upload(file, "file")
        embedded = await backend.call("image_embedder", "embed", data, "file")
        text_vector = None
        if meta.title and config.text.enabled:
            try:
                text_vector = (await backend.call("query_encoder", "encode_text", [meta.title]))[0]
            except Unavailable:
                text_vector = None
        record = meta.model_dump()
        record["attributes"] = {k: [v] if isinstance(v, str) else v for k, v in record["attributes"].items()}
        record["category"] = record["category"] or (record["category_path"][-1] if record["category_path"] else None)
        if record["category"] and not record["category_path"]:
            record["category_path"] = [record["category"]]
        item = await backend.call("retriever", "add_item", record, embedded["vector"], text_vector, data,
                                  embedded["extension"])
        return item_out(item)

    @app.get("/api/items/{item_id}", response_model=schemas.ItemOut, tags=["items"], responses=ERRORS)
    async def get_item(item_id: str = PathParam(..., max_length=128)):
        return item_out(await backend.call("retriever", "get_item", item_id))

    @app.delete("/api/items/{item_id}", response_model=schemas.DeleteResponse, tags=["items"], responses=ERRORS,
                dependencies=[Depends(admin)])
    async def delete_item(item_id: str = PathParam(..., max_length=128)):
        return await backend.call("retriever", "delete_item", item_id)

    @app.get("/images/{item_id}", tags=["items"], responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
             response_class=Response, summary="The item's image (garment crop or uploaded photo)")
    async def item_image(item_id: str = PathParam(..., max_length=128)):
        data, media_type = await backend.call("retriever", "image", item_id)
        return Response(content=data, media_type=media_type, headers={"Cache-Control": "public, max-age=300"})

    @app.get("/api/attributes", tags=["search"], summary="Fields an attribute query may use and their known values")
    async def attributes():
        return await backend.call("query_encoder", "describe")

    # -- dashboard, ops, admin -----------------------------------------------------------------
    @app.get("/api/kpi", response_model=schemas.KpiResponse, tags=["dashboard"],
             summary="KPI dashboard: training/evaluation reports of the served version + live serving KPIs")
    async def kpi():
        health = await backend.call("retriever", "health")
        version = await backend.call("retriever", "full_version")
        fallback = await backend.call("retriever", "sample_ids", config.kpi.augmented_samples)
        payload = await asyncio.to_thread(dashboard, version, config.kpi, fallback)
        payload["serving"] = {**summarize(await all_stats()), "backend": backend.kind,
                              "catalog": {k: v for k, v in health.items() if k not in ("ok", "version")}}
        return payload

    @app.get("/api/kpi/augmented/{item_id}/{view}", tags=["dashboard"], response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
             summary="One augmented training view of an item image (the embed run's augmentation)")
    async def augmented(item_id: str = PathParam(..., max_length=128), view: int = PathParam(..., ge=0, le=16)):
        data, _ = await backend.call("retriever", "image", item_id)
        version = await backend.call("retriever", "full_version")
        from serve_app.versions import embed_run_config

        augment = {k: v for k, v in (embed_run_config(version).get("augment") or {}).items() if k != "views"}
        jpeg = await backend.call("image_embedder", "augmented_view", data, item_id, view, augment)
        return Response(content=jpeg, media_type="image/jpeg")

    @app.get("/healthz", response_model=schemas.HealthResponse, tags=["ops"],
             responses={503: {"model": schemas.HealthResponse}})
    async def healthz():
        names = ("image_embedder", "query_encoder", "retriever", "reranker")
        results = await asyncio.gather(*(asyncio.wait_for(backend.call(n, "health"), 10) for n in names),
                                       return_exceptions=True)
        deployments = {n: (r if not isinstance(r, BaseException) else {"ok": False, "error": f"{type(r).__name__}: {r}"})
                       for n, r in zip(names, results)}
        ok = all(d.get("ok") for d in deployments.values())
        return JSONResponse(status_code=200 if ok else 503,
                            content={"status": "ok" if ok else "degraded", "deployments": deployments})

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"],
             summary="This application's request/error/latency metrics (Prometheus text format)")
    async def metrics():
        return PlainTextResponse(prometheus_text(await all_stats()), media_type="text/plain; version=0.0.4")

    @app.post("/api/admin/reload", response_model=schemas.ReloadResponse, tags=["admin"], responses=ERRORS,
              dependencies=[Depends(admin)],
              summary="Move every replica to the newest model/index version (built beside live traffic, then swapped)")
    async def reload():
        started = time.perf_counter()
        previous = await backend.call("retriever", "full_version")
        try:
            version = await asyncio.to_thread(newest_version, config)
        except FileNotFoundError as exc:
            raise AppError(f"no complete newer version to load: {exc}", status=409, code="no_version") from None
        await asyncio.to_thread(pin_version, config, version)
        replicas = {}
        for name in MODEL_DEPLOYMENTS:  # sequential: never two models loading at once on small machines
            replicas[name] = await backend.broadcast(name, "reload", version)
        return {"previous": version_label(previous), "current": version_label(version), "replicas": replicas,
                "seconds": round(time.perf_counter() - started, 2)}

    add_web_routes(app)
    return app


async def _single(stats: LiveStats) -> list[dict]:
    return [stats.raw()]

