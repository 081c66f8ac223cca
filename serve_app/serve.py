"""Entry points Serve imports.

    serve run configs/serve.yaml          # local: import_path serve_app.serve:app_builder, args from the YAML
    serve deploy configs/serve.yaml       # on a running cluster (same file)
    serve run serve_app.serve:app         # the app with configs/serve.yaml's args and deployment settings

``app_builder(args)`` receives the YAML's ``args`` (Serve applies its ``deployments:`` itself);
``app`` is built on first access from ``$FASHIONREC_SERVE_CONFIG`` or ``configs/serve.yaml``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ray.serve import Application

from serve_app.app import build_app
from serve_app.config import config_from_args, load_serve_yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "serve.yaml"


def app_builder(args: dict) -> Application:
    return build_app(config_from_args(args))


def __getattr__(name: str):
    if name == "app":
        config, deployments = load_serve_yaml(os.environ.get("FASHIONREC_SERVE_CONFIG", DEFAULT_CONFIG))
        return build_app(config, deployments)
    raise AttributeError(name)
