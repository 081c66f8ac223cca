"""Starting the test application: one Serve app over the tiny artifact set, shared by the package.

The app is deployed the way ``serve deploy`` / ``serve run configs/serve.yaml`` deploy it: a Serve
config (import path + args + per-deployment settings) applied by Serve's controller, so a later
config that only changes the model deployments' ``user_config`` is Serve's in-place update.

The browser test module (test_browser_e2e.py) sorts before test_serve_app.py on purpose: it only
reads, so it sees the application as built; test_serve_app.py then adds/deletes items, restarts the
application and moves to a new version, in its file order.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import requests

from bench.ports import free_port  # noqa: F401 (conftest starts Serve on it)

from serve_app.config import ArtifactSettings, KpiSettings, SearchSettings, ServeAppConfig, UploadLimits

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-admin-token"
ADMIN = {"X-Admin-Token": TOKEN}
APP = "fashionrec_test"
MAX_K = 40
OPTIONS = {
    "FashionRecIngress": {"ray_actor_options": {"num_cpus": 0.1, "runtime_env": {
        "env_vars": {"FASHIONREC_ADMIN_TOKEN": TOKEN}}}, "max_ongoing_requests": 64},
    "ImageEmbedder": {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 8},
    "Recommender": {"ray_actor_options": {"num_cpus": 0.2}, "max_ongoing_requests": 32},
}
for _options in OPTIONS.values():  # the restart test should not wait out Serve's 20 s drain default
    _options.update(graceful_shutdown_timeout_s=2, graceful_shutdown_wait_loop_s=0.5)
for _name in ("Recommender", "ImageEmbedder"):  # a killed replica is noticed within 2 s (configs/serve.yaml too)
    OPTIONS[_name].update(health_check_period_s=2)


def app_config(root) -> ServeAppConfig:
    return ServeAppConfig(
        artifacts=ArtifactSettings(preprocess_root=str(root / "preprocess"), embed_root=str(root / "embed"),
                                   json_encoder_root=str(root / "train_json_encoder"),
                                   users_root=str(root / "train_users"), index_root=str(root / "index"),
                                   item_tower_root=str(root / "item_tower"), persona_root=str(root / "persona")),
        state_dir=str(root / "state"), uploads=UploadLimits(max_bytes=300_000, max_pixels=1_000_000),
        max_request_bytes=2_000_000, search=SearchSettings(default_k=5, max_k=MAX_K, candidates=60),
        kpi=KpiSettings(augmented_samples=2, augmented_views=2))


def serve_config(config: ServeAppConfig, version: dict | None = None, options: dict | None = None) -> dict:
    """The Serve config of the test app (what configs/serve.yaml holds for the demo)."""
    from serve_app.versions import with_version

    deployments = [{"name": name, **settings} for name, settings in (options or OPTIONS).items()]
    out = {"applications": [{"name": APP, "route_prefix": "/", "import_path": "serve_app.serve:app_builder",
                             "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
                             "args": asdict(config), "deployments": deployments}]}
    return with_version(out, version) if version is not None else out


def deploy(config_dict: dict, timeout_s: float = 180) -> float:
    """Apply a Serve config through Serve's controller (what `serve deploy` sends it over the
    dashboard's REST API, and `serve run config.yaml` directly) and wait until the application is
    RUNNING again; returns the seconds that took. Python's ``serve.run`` would give every call a
    new random code version, so even a ``user_config`` change would restart the replicas."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    started = time.perf_counter()
    client = _get_global_client()
    client.deploy_apps(ServeDeploySchema.model_validate(config_dict) if hasattr(ServeDeploySchema, "model_validate")
                       else ServeDeploySchema.parse_obj(config_dict))
    wait_running(timeout_s)
    return time.perf_counter() - started


def wait_running(timeout_s: float = 180) -> None:
    from ray import serve

    deadline = time.time() + timeout_s
    time.sleep(0.5)  # let the controller take the new target before reading the status
    while time.time() < deadline:
        app = serve.status().applications.get(APP)
        if app is not None and app.status == "RUNNING" and all(
                d.status == "HEALTHY" for d in app.deployments.values()):
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise AssertionError(f"{APP} failed to deploy: {app.message}")
        time.sleep(0.25)
    raise AssertionError(f"{APP} not RUNNING within {timeout_s} s: {serve.status().applications.get(APP)}")


def start(config: ServeAppConfig, version: dict | None = None) -> None:
    deploy(serve_config(config, version))


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
