"""The item store: add (admin), read, delete (admin) products and their images."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, File, Form, Path as PathParam, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from serve_app import schemas
from serve_app.errors import InputError
from serve_app.routes import ERRORS, Services
from serve_app.routes.recommend import embedded_and_answered


def item_record(meta: schemas.ItemMetadata) -> dict:
    """Validated metadata -> the stored record (attribute values as lists, the category path filled)."""
    record = meta.model_dump()
    record["attributes"] = {k: [v] if isinstance(v, str) else v for k, v in record["attributes"].items()}
    record["category"] = record["category"] or (record["category_path"][-1] if record["category_path"] else None)
    if record["category"] and not record["category_path"]:
        record["category_path"] = [record["category"]]
    return record


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["items"])
    recommender = services.recommender

    @api.post("/api/items", response_model=schemas.ItemOut, status_code=201, responses=ERRORS,
              dependencies=[Depends(services.admin())], summary="Add a product: metadata (JSON) + image; "
                                                                "recommendable at once")
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
        data = await services.read_upload(file, "file")
        record = item_record(meta)

        async def added(embedded):
            return await recommender.add_item(record, embedded[0], data)

        return await embedded_and_answered(services, [(data, "file")], added)

    @api.get("/api/items/{item_id}", response_model=schemas.ItemOut, responses=ERRORS)
    async def get_item(item_id: str = PathParam(..., max_length=128)):
        return await recommender.get_item(item_id)

    @api.delete("/api/items/{item_id}", response_model=schemas.DeleteResponse, responses=ERRORS,
                dependencies=[Depends(services.admin())])
    async def delete_item(item_id: str = PathParam(..., max_length=128)):
        return await recommender.delete_item(item_id)

    @api.get("/images/{item_id}", responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
             response_class=Response, summary="The item's image (garment crop or uploaded photo)")
    async def item_image(item_id: str = PathParam(..., max_length=128)):
        data, media_type = await recommender.image(item_id)
        return Response(content=data, media_type=media_type, headers={"Cache-Control": "public, max-age=300"})

    return api
