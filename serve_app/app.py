"""The Ray Serve application: four model/index deployments behind a FastAPI ingress.

    FashionRecIngress (FastAPI routes of serve_app.api)
      ├─ ImageEmbedder   uploaded image -> 512-d (open_clip)
      ├─ QueryEncoder    attribute JSON -> 512-d (JSON encoder), text -> text vector, user -> user-tower vector
      ├─ Retriever       vector index + durable item store; user candidates (user tower, ItemKNN, popularity)
      └─ Reranker        learned reranker (DeepFM/listwise) for users, MMR fallback; MMR for search

The ingress calls the others through DeploymentHandles (no HTTP between deployments). Each
deployment has its own resources and autoscaling, set in ``configs/serve.yaml`` (defaults below).
"""
from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from serve_app.api import create_api
from serve_app.backend import ServeBackend
from serve_app.config import ServeAppConfig, resolve_paths
from serve_app.deployments.image_embedder import ImageEmbedder
from serve_app.deployments.query_encoder import QueryEncoder
from serve_app.deployments.reranker import Reranker
from serve_app.deployments.retriever import Retriever
from serve_app.metrics import LiveStats

INGRESS = "FashionRecIngress"

# Small enough for a 2-CPU laptop; configs/serve.yaml (or deployment_options) overrides them.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    INGRESS: {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 64},
    "ImageEmbedder": {"ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 4},
    "QueryEncoder": {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 16},
    "Retriever": {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 32},
    "Reranker": {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 32},
}


@serve.ingress()
class FashionRecIngress:
    def __init__(self, config: ServeAppConfig, image_embedder, query_encoder, retriever, reranker):
        self.config = config
        self.backend = ServeBackend({"image_embedder": image_embedder, "query_encoder": query_encoder,
                                     "retriever": retriever, "reranker": reranker})
        self.stats = LiveStats(config.latency_window)

    def __serve_build_asgi_app__(self):
        return create_api(self.backend, self.config, self.stats, self._all_stats)

    async def raw_stats(self) -> dict:
        return self.stats.raw()

    async def _all_stats(self) -> list[dict]:
        """Live stats of every ingress replica (each keeps its own window)."""
        try:
            context = serve.get_replica_context()
            handle = serve.get_deployment_handle(context.deployment, context.app_name)
            return await handle.broadcast("raw_stats").results_async(timeout_s=5)
        except Exception:
            return [self.stats.raw()]


def _deployment(cls, name: str, options: dict[str, dict]):
    merged = {**DEFAULT_OPTIONS.get(name, {}), **options.get(name, {})}
    if "autoscaling_config" in merged:
        merged.pop("num_replicas", None)
    return serve.deployment(cls, name=name).options(**merged)


def build_app(config: ServeAppConfig, deployment_options: dict[str, dict] | None = None) -> Application:
    """Bind the deployments into one application. Relative paths resolve against the current
    directory here, in the process that builds the app, not in the replicas."""
    config = resolve_paths(config)
    options = deployment_options or {}
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"deployment options for unknown deployment(s) {sorted(unknown)}; "
                         f"known: {sorted(DEFAULT_OPTIONS)}")
    return _deployment(FashionRecIngress, INGRESS, options).bind(
        config,
        _deployment(ImageEmbedder, "ImageEmbedder", options).bind(config),
        _deployment(QueryEncoder, "QueryEncoder", options).bind(config),
        _deployment(Retriever, "Retriever", options).bind(config),
        _deployment(Reranker, "Reranker", options).bind(config))
