"""CRM messages: a customer segment -> three grounded messages about its products (recsys.crm)."""
from __future__ import annotations

import time

from fastapi import APIRouter

from serve_app import schemas
from serve_app.errors import InputError
from serve_app.routes import ERRORS, Services, timed


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["crm"])

    @api.post("/api/crm/messages", response_model=schemas.CrmResponse, responses={**ERRORS, 502: ERRORS[503]},
              summary="A segment (persona, customer or profile) -> one message per tone about its products, "
                      "grounded in their facts and checked (502 when no draft passes)")
    async def crm_messages(body: schemas.CrmRequest):
        started = time.perf_counter()
        given = [name for name in ("persona", "user_id", "profile") if getattr(body, name) is not None]
        if len(given) != 1:
            raise InputError(f"give exactly one segment: persona, user_id or profile (got {given or 'none'})",
                             field=given[1] if len(given) > 1 else "persona")
        answer = await services.recommender.crm_messages(body.persona, body.user_id, body.profile, body.product_ids,
                                                         body.goal, body.channel)
        return timed(answer, started)

    return api
