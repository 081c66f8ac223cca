"""How the HTTP layer reaches the deployments: Serve DeploymentHandles, or in-process objects.

The FastAPI routes (``serve_app.api``) only ever ``await backend.call(component, method, ...)``,
so the same routes run behind Ray Serve (each component its own deployment, called through its
handle: no HTTP between deployments) and in one plain uvicorn process (the baseline of
``bench/serve.py``). Errors raised by a deployment come back as the original :class:`AppError`.
"""
from __future__ import annotations

import asyncio
from typing import Any

from serve_app.errors import app_error_of

COMPONENTS = ("image_embedder", "query_encoder", "retriever", "reranker")


class ServeBackend:
    kind = "ray-serve"

    def __init__(self, handles: dict[str, Any]):
        missing = set(COMPONENTS) - set(handles)
        if missing:
            raise ValueError(f"missing deployment handles: {sorted(missing)}")
        self.handles = handles

    async def call(self, component: str, method: str, *args, **kwargs):
        try:
            return await getattr(self.handles[component], method).remote(*args, **kwargs)
        except Exception as exc:
            error = app_error_of(exc)
            if error is not None:
                raise error from None
            raise

    async def broadcast(self, component: str, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every replica of a deployment (reloads)."""
        response = self.handles[component].broadcast(method, *args, **kwargs)
        try:
            return await response.results_async()
        except Exception as exc:
            error = app_error_of(exc)
            if error is not None:
                raise error from None
            raise


class LocalBackend:
    """The same components as plain objects in this process; blocking calls run in threads."""
    kind = "in-process"

    def __init__(self, components: dict[str, Any]):
        self.components = components

    async def call(self, component: str, method: str, *args, **kwargs):
        return await asyncio.to_thread(getattr(self.components[component], method), *args, **kwargs)

    async def broadcast(self, component: str, method: str, *args, **kwargs) -> list:
        return [await self.call(component, method, *args, **kwargs)]
