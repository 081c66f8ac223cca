"""Starting the test application: one Serve app over the tiny artifact set, shared by the package.

The browser test module (test_browser_e2e.py) sorts before test_serve_app.py on purpose: it only
reads, so it sees the application as built; test_serve_app.py then adds/deletes items, restarts the
application and reloads a new version, in its file order.
"""
from __future__ import annotations

import socket
import time

import requests

from serve_app.config import ArtifactSettings, KpiSettings, SearchSettings, ServeAppConfig, UploadLimits

TOKEN = "test-admin-token"
ADMIN = {"X-Admin-Token": TOKEN}
APP = "fashionrec_test"
MAX_K = 40
OPTIONS = {
    "FashionRecIngress": {"ray_actor_options": {"num_cpus": 0.1, "runtime_env": {
        "env_vars": {"FASHIONREC_ADMIN_TOKEN": TOKEN}}}, "max_ongoing_requests": 64},
    "ImageEmbedder": {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 8},
    **{name: {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 32}
       for name in ("QueryEncoder", "Retriever", "Reranker")},
}
for _options in OPTIONS.values():  # the restart test should not wait out Serve's 20 s drain default
    _options.update(graceful_shutdown_timeout_s=2, graceful_shutdown_wait_loop_s=0.5)


def app_config(root) -> ServeAppConfig:
    return ServeAppConfig(
        artifacts=ArtifactSettings(preprocess_root=str(root / "preprocess"), embed_root=str(root / "embed"),
                                   json_encoder_root=str(root / "train_json_encoder"),
                                   users_root=str(root / "train_users")),
        state_dir=str(root / "state"), uploads=UploadLimits(max_bytes=300_000, max_pixels=1_000_000),
        max_request_bytes=2_000_000, search=SearchSettings(default_k=5, max_k=MAX_K, candidates=60),
        kpi=KpiSettings(augmented_samples=2, augmented_views=2))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(config: ServeAppConfig) -> None:
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(config, OPTIONS), name=APP, route_prefix="/")


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}/healthz never answered 200 within {timeout} s")
