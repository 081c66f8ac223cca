"""The same routes and models in one plain FastAPI/uvicorn process, without Ray Serve.

    python -m serve_app.standalone --config configs/serve.yaml --port 8001

The baseline ``bench/serve.py`` compares Serve against; also handy for debugging a route.
"""
from __future__ import annotations

import argparse

from fastapi import FastAPI

from serve_app.api import create_api
from serve_app.backend import LocalBackend
from serve_app.config import ServeAppConfig, load_serve_yaml, resolve_paths
from serve_app.deployments.image_embedder import ImageEmbedder
from serve_app.deployments.query_encoder import QueryEncoder
from serve_app.deployments.reranker import Reranker
from serve_app.deployments.retriever import Retriever
from serve_app.metrics import LiveStats


def build_local_app(config: ServeAppConfig) -> FastAPI:
    config = resolve_paths(config)
    backend = LocalBackend({"image_embedder": ImageEmbedder(config), "query_encoder": QueryEncoder(config),
                            "retriever": Retriever(config), "reranker": Reranker(config)})
    return create_api(backend, config, LiveStats(config.latency_window))


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
