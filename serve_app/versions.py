"""Which model/index version is served: the runs of the JSON encoder and of the embed job.

A version is a small dict of run directories. Every replica loads the version named in
``<state_dir>/serving_version.json`` (written atomically by ``POST /api/admin/reload``), or the
newest runs when no version was pinned yet, so replicas started later by the autoscaler load the
same version as the ones already running.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

from recsys.artifacts import latest_run
from serve_app.config import ServeAppConfig

PIN_FILE = "serving_version.json"


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _items_of_embed_run(embed_run: Path) -> str | None:
    manifest = embed_run / "manifest.json"
    if manifest.is_file():
        items = json.loads(manifest.read_text()).get("inputs", {}).get("items")
        if items and Path(items).exists():
            return items
    return None


def newest_version(config: ServeAppConfig) -> dict:
    """The pinned runs of the config, else the newest run of each stage."""
    art = config.artifacts
    json_run = Path(art.json_encoder_run) if art.json_encoder_run else latest_run(art.json_encoder_root)
    embed_run = Path(art.embed_run) if art.embed_run else latest_run(art.embed_root)
    items = art.items or _items_of_embed_run(embed_run) or str(latest_run(art.preprocess_root) / "items")
    users_run = _users_run(config)
    for what, path in (("JSON encoder checkpoint", json_run / "checkpoints" / "best_model.pt"),
                       ("JSON encoder vocabulary", json_run / "checkpoints" / "vocab.json"),
                       ("image embeddings", embed_run / "image_embeddings"), ("items", Path(items)),
                       *((("users", users_run / "users.parquet"),
                          ("user tower", users_run / "user_tower" / "user_model.json")) if users_run else ())):
        if not path.exists():
            raise FileNotFoundError(f"{what}: {path} does not exist")
    return {"json_encoder_run": str(json_run.resolve()), "embed_run": str(embed_run.resolve()),
            "items": str(Path(items).resolve()), "users_run": str(users_run.resolve()) if users_run else None,
            "resolved_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _users_run(config: ServeAppConfig) -> Path | None:
    """The pinned train_users run, else the newest one; None when users are off or none was trained."""
    art = config.artifacts
    if not config.users.enabled:
        return None
    if art.users_run:
        return Path(art.users_run)
    return latest_run(art.users_root) if (Path(art.users_root) / "LATEST").is_file() else None


def pinned_version(config: ServeAppConfig) -> dict | None:
    path = Path(config.state_dir) / PIN_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def current_version(config: ServeAppConfig) -> dict:
    """What a replica starting now should load."""
    return pinned_version(config) or newest_version(config)


def pin_version(config: ServeAppConfig, version: dict) -> None:
    write_atomic(Path(config.state_dir) / PIN_FILE, json.dumps(version, indent=1).encode())


VERSION_KEYS = ("json_encoder_run", "embed_run", "items", "users_run")


def same_version(a: dict | None, b: dict | None) -> bool:
    """Equal runs (the resolution time does not count)."""
    return bool(a and b) and all(a.get(k) == b.get(k) for k in VERSION_KEYS)


def version_label(version: dict) -> dict:
    """Short names for responses: run directory names instead of absolute paths."""
    users = version.get("users_run")
    return {"json_encoder_run": Path(version["json_encoder_run"]).name, "embed_run": Path(version["embed_run"]).name,
            "items": str(Path(version["items"]).parent.name), "users_run": Path(users).name if users else None}


def embed_run_config(version: dict) -> dict:
    """The embed run's resolved config (image/text encoder settings), {} when absent."""
    path = Path(version["embed_run"]) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def embed_report(version: dict) -> dict:
    path = Path(version["embed_run"]) / "embed_report.json"
    return json.loads(path.read_text()) if path.is_file() else {}
