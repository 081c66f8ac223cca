"""Typed clients of the application's deployments, for the HTTP routes.

A route calls ``await services.recommender.search(...)``: the same method whether the Recommender
is a Serve deployment (a DeploymentHandle call, no HTTP between deployments) or a plain object in
this process (``serve_app.standalone``, the benchmark's baseline). Errors raised by a deployment
come back as the original :class:`~serve_app.errors.AppError`.

Reads are idempotent, so a call whose replica died under it (``ray.kill``, a lost node) is sent
once more, to another replica; mutations are not repeated.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import numpy as np

from serve_app.errors import app_error_of

log = logging.getLogger("ray.serve")
RETRIES_ON_REPLICA_LOSS = 2


def _replica_lost(exc: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError))


class HandleCaller:
    """Method calls through a Serve DeploymentHandle."""
    kind = "ray-serve"

    def __init__(self, handle):
        self.handle = handle

    async def __call__(self, method: str, *args, idempotent: bool = False, **kwargs):
        attempts = 1 + (RETRIES_ON_REPLICA_LOSS if idempotent else 0)
        for attempt in range(attempts):
            try:
                return await getattr(self.handle, method).remote(*args, **kwargs)
            except Exception as exc:
                error = app_error_of(exc)
                if error is not None:
                    raise error from None
                if attempt + 1 < attempts and _replica_lost(exc):
                    log.warning("%s.%s: replica lost (%s); retrying on another replica",
                                self.handle.deployment_name, method, type(exc).__name__)
                    continue
                raise

    async def broadcast(self, method: str, *args, **kwargs) -> list:
        """``method`` on every replica (control plane only: stats, never per request)."""
        return await self.handle.broadcast(method, *args, **kwargs).results_async(timeout_s=10)


class LocalCaller:
    """Method calls on an object in this process; blocking ones run in a worker thread."""
    kind = "in-process"

    def __init__(self, target):
        self.target = target

    async def __call__(self, method: str, *args, idempotent: bool = False, **kwargs):
        function = getattr(self.target, method)
        if inspect.iscoroutinefunction(function):
            return await function(*args, **kwargs)
        return await asyncio.to_thread(function, *args, **kwargs)

    async def broadcast(self, method: str, *args, **kwargs) -> list:
        return [await self(method, *args, **kwargs)]


class RecommenderClient:
    """``serve_app.deployments.recommender.Recommender``: query encoding, retrieval and ranking."""

    def __init__(self, call: HandleCaller | LocalCaller):
        self.call = call

    async def search(self, attributes: dict | None, text: str | None, k: int, n_candidates: int,
                     mmr_lambda: float | None, exclude_ids: list[str], scope: str) -> dict:
        return await self.call("search", attributes, text, k, n_candidates, mmr_lambda, exclude_ids, scope,
                               idempotent=True)

    async def similar(self, item_id: str, k: int, n_candidates: int, mmr_lambda: float | None, scope: str,
                      query: dict | None = None) -> dict:
        return await self.call("similar", item_id, k, n_candidates, mmr_lambda, scope, query, idempotent=True)

    async def search_image(self, embedded: dict, k: int, n_candidates: int, mmr_lambda: float | None,
                           scope: str, query: dict) -> dict:
        return await self.call("search_image", embedded, k, n_candidates, mmr_lambda, scope, query,
                               idempotent=True)

    async def recommend_stored_user(self, user_id: str, k: int, mmr_lambda: float | None) -> dict:
        return await self.call("recommend_stored_user", user_id, k, mmr_lambda, idempotent=True)

    async def recommend_user(self, history: list[str] | None, profile: dict | None, context: str | None, k: int,
                             mmr_lambda: float | None, exclude_ids: list[str]) -> dict:
        return await self.call("recommend_user", history, profile, context, k, mmr_lambda, exclude_ids,
                               idempotent=True)

    async def top10_to_new(self, item_ids: list[str], uploads: list[dict], k: int, n_candidates: int,
                           share: float | None, mmr_lambda: float | None, scope: str) -> dict:
        return await self.call("top10_to_new", item_ids, uploads, k, n_candidates, share, mmr_lambda, scope,
                               idempotent=True)

    async def crm_messages(self, persona: str | None, user_id: str | None, profile: dict | None,
                           product_ids: list[str] | None, goal: str, channel: str) -> dict:
        # idempotent: it changes nothing, so a lost replica's request may be asked again
        return await self.call("crm_messages", persona, user_id, profile, product_ids, goal, channel, idempotent=True)

    async def add_item(self, record: dict, embedded: dict, image: bytes) -> dict:
        return await self.call("add_item", record, embedded, image)

    async def get_item(self, item_id: str) -> dict:
        return await self.call("get_item", item_id, idempotent=True)

    async def delete_item(self, item_id: str) -> dict:
        return await self.call("delete_item", item_id)

    async def image(self, item_id: str) -> tuple[bytes, str]:
        return await self.call("image", item_id, idempotent=True)

    async def describe(self) -> dict:
        return await self.call("describe", idempotent=True)

    async def kpi(self) -> dict:
        return await self.call("kpi", idempotent=True)

    async def augment_settings(self) -> dict:
        return await self.call("augment_settings", idempotent=True)

    async def health(self) -> dict:
        return await self.call("health", idempotent=True)


class ImageEmbedderClient:
    """``serve_app.deployments.image_embedder.ImageEmbedder``: uploaded images -> vectors."""

    def __init__(self, call: HandleCaller | LocalCaller):
        self.call = call

    async def embed(self, data: bytes, what: str) -> dict[str, Any]:
        """-> {"vector": np.ndarray, "width", "height", "format", "extension", "pretrained", "embed_run"}"""
        out = await self.call("embed", data, what, idempotent=True)
        out["vector"] = np.asarray(out["vector"], dtype=np.float32)
        return out

    async def augmented_view(self, data: bytes, key: str, view: int, augment: dict) -> bytes:
        return await self.call("augmented_view", data, key, view, augment, idempotent=True)

    async def health(self) -> dict:
        return await self.call("health", idempotent=True)
