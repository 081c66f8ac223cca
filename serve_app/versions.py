"""Which model/index version is served: the runs of the JSON encoder, the embed job and the users job.

A version is a small dict of run directories. It reaches the replicas through Serve's own
``user_config`` (``serve_app.deployments.base``): the app builder resolves the newest runs at deploy
time, and a Serve config naming other runs moves every replica in place (``serve deploy``;
``python -m serve_app.versions`` writes such a config).
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
    index_run = _index_run(config, embed_run)
    for what, path in (("JSON encoder checkpoint", json_run / "checkpoints" / "best_model.pt"),
                       ("JSON encoder vocabulary", json_run / "checkpoints" / "vocab.json"),
                       ("image embeddings", embed_run / "image_embeddings"), ("items", Path(items)),
                       *((("users", users_run / "users.parquet"),
                          ("user tower", users_run / "user_tower" / "user_model.json")) if users_run else ())):
        if not path.exists():
            raise FileNotFoundError(f"{what}: {path} does not exist")
    return {"json_encoder_run": str(json_run.resolve()), "embed_run": str(embed_run.resolve()),
            "items": str(Path(items).resolve()), "users_run": str(users_run.resolve()) if users_run else None,
            "index_run": str(index_run.resolve()) if index_run else None,
            "resolved_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _users_run(config: ServeAppConfig) -> Path | None:
    """The pinned train_users run, else the newest one; None when users are off or none was trained."""
    art = config.artifacts
    if not config.users.enabled:
        return None
    if art.users_run:
        return Path(art.users_run)
    return latest_run(art.users_root) if (Path(art.users_root) / "LATEST").is_file() else None


def _index_run(config: ServeAppConfig, embed_run: Path) -> Path | None:
    """The pinned build_index run, else the newest one built over this embed run's image vectors
    (its manifest names them); None: the Retriever builds its index from the vectors at load."""
    art = config.artifacts
    if art.index_run:
        return Path(art.index_run)
    root = Path(art.index_root)
    if not root.is_dir():
        return None
    wanted = (embed_run / "image_embeddings").resolve()
    for run in sorted((p for p in root.iterdir() if (p / "manifest.json").is_file()), reverse=True):
        vectors = json.loads((run / "manifest.json").read_text()).get("inputs", {}).get("vectors")
        if vectors and Path(vectors).resolve() == wanted and (run / "index_meta.json").is_file():
            return run
    return None


VERSION_KEYS = ("json_encoder_run", "embed_run", "items", "users_run", "index_run")


def same_version(a: dict | None, b: dict | None) -> bool:
    """Equal runs (the resolution time does not count)."""
    return bool(a and b) and all(a.get(k) == b.get(k) for k in VERSION_KEYS)


def version_label(version: dict) -> dict:
    """Short names for responses: run directory names instead of absolute paths."""
    users, index = version.get("users_run"), version.get("index_run")
    return {"json_encoder_run": Path(version["json_encoder_run"]).name, "embed_run": Path(version["embed_run"]).name,
            "items": str(Path(version["items"]).parent.name), "users_run": Path(users).name if users else None,
            "index_run": Path(index).name if index else None}


def embed_run_config(version: dict) -> dict:
    """The embed run's resolved config (image/text encoder settings), {} when absent."""
    path = Path(version["embed_run"]) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def embed_report(version: dict) -> dict:
    path = Path(version["embed_run"]) / "embed_report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


MODEL_DEPLOYMENTS = ("Recommender", "ImageEmbedder")


def with_version(serve_config: dict, version: dict, app_name: str | None = None) -> dict:
    """A Serve config (the YAML's dict) whose model deployments get ``user_config: {version}``:
    deploying it moves running replicas in place (Serve's lightweight update: no restart)."""
    out = json.loads(json.dumps(serve_config))
    apps = out.get("applications") or []
    app = next((a for a in apps if app_name in (None, a.get("name"))), None)
    if app is None:
        raise ValueError(f"no application {app_name!r} in the Serve config")
    deployments = app.setdefault("deployments", [])
    for name in MODEL_DEPLOYMENTS:
        entry = next((d for d in deployments if d.get("name") == name), None)
        if entry is None:
            entry = {"name": name}
            deployments.append(entry)
        entry["user_config"] = {**(entry.get("user_config") or {}), "version": version}
    return out


def main(argv: list[str] | None = None) -> None:
    """Write a Serve config that serves given runs (default: the newest) for ``serve deploy``."""
    import argparse

    from serve_app.config import config_from_args, resolve_paths

    parser = argparse.ArgumentParser(description="write configs/serve.yaml with the model deployments' user_config "
                                                 "naming the runs to serve; `serve deploy` it to move in place")
    parser.add_argument("--config", default="configs/serve.yaml")
    parser.add_argument("--out", required=True)
    for key in ("json_encoder_run", "embed_run", "items", "users_run", "index_run"):
        parser.add_argument(f"--{key.replace('_', '-')}", default=None, help="default: the newest")
    args = parser.parse_args(argv)
    serve_config = yaml.safe_load(Path(args.config).read_text())
    app_args = dict(serve_config["applications"][0].get("args") or {})
    artifacts = dict(app_args.get("artifacts") or {})
    for key in ("json_encoder_run", "embed_run", "items", "users_run", "index_run"):
        if getattr(args, key):
            artifacts[key] = getattr(args, key)
    version = newest_version(resolve_paths(config_from_args({**app_args, "artifacts": artifacts})))
    Path(args.out).write_text(yaml.safe_dump(with_version(serve_config, version), allow_unicode=True,
                                             sort_keys=False))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in version_label(version).items() if v)
          + f"\nmove the running application in place: serve deploy {args.out}")


if __name__ == "__main__":
    main()
