"""The KPI dashboard's data: the served version's training/evaluation reports and live serving KPIs."""
from __future__ import annotations

from fastapi import APIRouter, Path as PathParam
from fastapi.responses import Response

from serve_app import schemas
from serve_app.metrics import summarize
from serve_app.routes import ERRORS, Services


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["dashboard"])

    @api.get("/api/kpi", response_model=schemas.KpiResponse,
             summary="KPI dashboard: training/evaluation reports of the served version + live serving KPIs")
    async def kpi():
        payload = await services.recommender.kpi()
        catalog = payload.pop("catalog")
        payload["serving"] = {**summarize(await services.all_stats()), "backend": services.backend,
                              "catalog": catalog}
        return payload

    @api.get("/api/kpi/augmented/{item_id}/{view}", response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
             summary="One augmented training view of an item image (the embed run's augmentation)")
    async def augmented(item_id: str = PathParam(..., max_length=128), view: int = PathParam(..., ge=0, le=16)):
        data, _ = await services.recommender.image(item_id)
        augment = await services.recommender.augment_settings()
        jpeg = await services.image_embedder.augmented_view(data, item_id, view, augment)
        return Response(content=jpeg, media_type="image/jpeg")

    return api
