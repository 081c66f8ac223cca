"""The same routes and models in one plain FastAPI/uvicorn process, without Ray Serve.

    python -m serve_app.standalone --config configs/serve.yaml --port 8001

The baseline ``bench/serve.py`` compares Serve against; also handy for debugging a route.
"""
from __future__ import annotations

import argparse

from fastapi import FastAPI

from serve_app.api import create_api
from serve_app.clients import ImageEmbedderClient, LocalCaller, RecommenderClient
from serve_app.config import ServeAppConfig, load_serve_yaml, resolve_paths
from serve_app.deployments.image_embedder import ImageEmbedder
from serve_app.deployments.recommender import Recommender
from serve_app.metrics import LiveStats
from serve_app.routes import Services
from serve_app.versions import newest_version


def build_local_app(config: ServeAppConfig, version: dict | None = None) -> FastAPI:
    config = resolve_paths(config)
    version = version or newest_version(config)
    stats = LiveStats(config.latency_window)

    async def own_stats() -> list[dict]:
        return [stats.raw()]

    services = Services(config, RecommenderClient(LocalCaller(Recommender(config, version))),
                        ImageEmbedderClient(LocalCaller(ImageEmbedder(config, version))), stats, own_stats,
                        LocalCaller.kind)
    return create_api(services)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/serve.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    config, _ = load_serve_yaml(args.config)
    uvicorn.run(build_local_app(config), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
