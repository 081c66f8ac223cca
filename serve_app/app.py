"""The Ray Serve application: two model deployments behind a FastAPI ingress.

    FashionRecIngress (FastAPI routers of serve_app.routes)
      ├─ Recommender     query encoding (JSON encoder, MiniLM text, user tower) + vector index and item
      │                  store + candidate sources + ranking (learned reranker, MMR): one call per route
      └─ ImageEmbedder   uploaded image -> vector (the embed run's image encoder), only for uploads

Why this split. Every DeploymentHandle call costs a few milliseconds of Ray's proxy/router/actor
hops and a (de)serialisation on both sides (``make bench-serve`` measures it beside a constant
app). A separate deployment pays for itself only where resources or scaling differ:

- the image encoder is the heaviest model per request and GPU-bound on a cluster (``num_gpus`` in
  configs/serve.yaml), needed only by uploads: its own deployment, scaled on upload traffic;
- the catalog, index and models need memory per replica and load in seconds: kept out of the
  ingress, whose replicas scale with HTTP connections and start fast;
- query encoding, retrieval and ranking are cheap CPU steps that always run together and pass
  candidate vectors between them: one deployment, so a route makes one call, the candidates never
  leave the process and a response never mixes versions (earlier, the ingress called a query
  encoder, a retriever and a reranker in turn: three hops, with candidate vectors sent through the
  ingress twice).

Versions reach the model deployments as Serve ``user_config`` (``serve_app.deployments.base``):
the builder resolves the newest runs once, at deploy time; a config naming other runs moves the
replicas in place. Each deployment's resources and autoscaling are set in ``configs/serve.yaml``.
"""
from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from serve_app.api import create_api
from serve_app.clients import HandleCaller, ImageEmbedderClient, RecommenderClient
from serve_app.config import ServeAppConfig, resolve_paths
from serve_app.deployments.image_embedder import ImageEmbedder
from serve_app.deployments.recommender import Recommender
from serve_app.metrics import LiveStats
from serve_app.routes import Services
from serve_app.versions import newest_version

INGRESS = "FashionRecIngress"
MODEL_DEPLOYMENTS = ("Recommender", "ImageEmbedder")

# Small enough for a 2-CPU laptop; configs/serve.yaml (or deployment_options) overrides them.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    INGRESS: {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 64},
    "ImageEmbedder": {"ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 4},
    "Recommender": {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 32},
}


@serve.ingress()
class FashionRecIngress:
    def __init__(self, config: ServeAppConfig, image_embedder, recommender):
        self.stats = LiveStats(config.latency_window)
        self.services = Services(config, RecommenderClient(HandleCaller(recommender)),
                                 ImageEmbedderClient(HandleCaller(image_embedder)), self.stats, self._all_stats,
                                 HandleCaller.kind)

    def __serve_build_asgi_app__(self):
        return create_api(self.services)

    async def raw_stats(self) -> dict:
        return self.stats.raw()

    async def _all_stats(self) -> list[dict]:
        """Live stats of every ingress replica (each keeps its own window)."""
        try:
            context = serve.get_replica_context()
            handle = serve.get_deployment_handle(context.deployment, context.app_name)
            return await HandleCaller(handle).broadcast("raw_stats")
        except Exception:
            return [self.stats.raw()]


def _deployment(cls, name: str, options: dict[str, dict]):
    merged = {**DEFAULT_OPTIONS.get(name, {}), **options.get(name, {})}
    if "autoscaling_config" in merged:
        merged.pop("num_replicas", None)
    return serve.deployment(cls, name=name).options(**merged)


def build_app(config: ServeAppConfig, deployment_options: dict[str, dict] | None = None,
              version: dict | None = None) -> Application:
    """Bind the deployments into one application. Relative paths resolve against the current
    directory here, in the process that builds the app, not in the replicas. ``version`` (default:
    the newest runs, resolved now) becomes the model deployments' ``user_config`` unless
    ``deployment_options`` give one."""
    config = resolve_paths(config)
    options = {name: dict(value) for name, value in (deployment_options or {}).items()}
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"deployment options for unknown deployment(s) {sorted(unknown)}; "
                         f"known: {sorted(DEFAULT_OPTIONS)}")
    version = version or newest_version(config)
    for name in MODEL_DEPLOYMENTS:
        options.setdefault(name, {}).setdefault("user_config", {"version": version})
    return _deployment(FashionRecIngress, INGRESS, options).bind(
        config,
        _deployment(ImageEmbedder, "ImageEmbedder", options).bind(config),
        _deployment(Recommender, "Recommender", options).bind(config))
