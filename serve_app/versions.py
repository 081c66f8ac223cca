"""Which model/index version is served: the runs of the JSON encoder, the embed job and the users job.

A version is a small dict of run directories. It reaches the replicas through Serve's own
``user_config`` (``serve_app.deployments.base``): the app builder resolves the newest runs at deploy
time, and a Serve config naming other runs moves every replica in place (``serve deploy``;
``python -m serve_app.versions`` writes such a config).
"""
from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from recsys import storage
from recsys.artifacts import NOT_COPIED, latest_location, location_of
from serve_app.config import ServeAppConfig


def _location(path: str | None) -> str | None:
    return location_of(path) if path else None


def _items_of_embed_run(embed_run: str) -> str | None:
    manifest = storage.join(embed_run, "manifest.json")
    if storage.is_file(manifest):
        items = storage.read_json(manifest).get("inputs", {}).get("items")
        if items and storage.exists(items):
            return location_of(items)
    return None


def newest_version(config: ServeAppConfig) -> dict:
    """The pinned runs of the config, else the newest run of each stage. Every run is named by its
    location (an absolute path, or an object-store URI that replicas copy to their node: ``localise``)."""
    art = config.artifacts
    json_run = _location(art.json_encoder_run) or latest_location(art.json_encoder_root)
    embed_run = _location(art.embed_run) or latest_location(art.embed_root)
    items = (_location(art.items) or _items_of_embed_run(embed_run)
             or storage.join(latest_location(art.preprocess_root), "items"))
    users_run = _users_run(config)
    for what, path in (("JSON encoder checkpoint", storage.join(json_run, "checkpoints", "best_model.pt")),
                       ("JSON encoder vocabulary", storage.join(json_run, "checkpoints", "vocab.json")),
                       ("image embeddings", storage.join(embed_run, "image_embeddings")), ("items", items),
                       *((("users", storage.join(users_run, "users.parquet")),
                          ("user tower", storage.join(users_run, "user_tower", "user_model.json"))) if users_run else ())):
        if not storage.exists(path):
            raise FileNotFoundError(f"{what}: {path} does not exist")
    return {"json_encoder_run": json_run, "embed_run": embed_run, "items": items, "users_run": users_run,
            "index_run": _index_run(config, embed_run), "item_tower_run": _item_tower_run(config, items),
            "persona_run": _persona_run(config, items),
            "resolved_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _users_run(config: ServeAppConfig) -> str | None:
    """The pinned train_users run, else the newest one; None when users are off or none was trained."""
    art = config.artifacts
    if not config.users.enabled:
        return None
    if art.users_run:
        return location_of(art.users_run)
    return latest_location(art.users_root) if storage.is_file(storage.join(art.users_root, "LATEST")) else None


def _runs_newest_first(root: str) -> list[str]:
    """Complete runs (with a manifest) under ``root``, newest first, as locations."""
    if not storage.is_dir(root):
        return []
    runs = [storage.join(location_of(root), name) for name in sorted(storage.list_dir(root), reverse=True)]
    return [run for run in runs if storage.is_file(storage.join(run, "manifest.json"))]


def _manifest_input(run: str, key: str) -> str | None:
    value = storage.read_json(storage.join(run, "manifest.json")).get("inputs", {}).get(key)
    return location_of(value) if value else None


def _item_tower_run(config: ServeAppConfig, items: str) -> str | None:
    """The pinned train_item_tower run, else the newest one trained on the served items (its
    manifest names them); None: ``similar`` compares image vectors only."""
    art = config.artifacts
    if art.item_tower_run:
        return location_of(art.item_tower_run)
    for run in _runs_newest_first(art.item_tower_root):
        if _manifest_input(run, "items") == items and storage.exists(storage.join(run, "item_vectors.parquet")):
            return run
    return None


def _persona_run(config: ServeAppConfig, items: str) -> str | None:
    """The pinned train_persona run, else the newest whose products are mostly served items (a
    persona model of another catalog would recommend ids the app cannot show); None: profile-only
    requests go to the user tower."""
    import pyarrow.parquet as pq

    art = config.artifacts
    if art.persona_run:
        return location_of(art.persona_run)
    runs = [r for r in _runs_newest_first(art.persona_root) if storage.is_file(storage.join(r, "products.parquet"))
            and storage.is_file(storage.join(r, "checkpoints", "best_model.pt"))]
    if not runs:
        return None
    served = set(pq.read_table(**storage.arrow_args(items, "source"), columns=["item_id"])["item_id"].to_pylist())
    for run in runs:
        products = pq.read_table(**storage.arrow_args(storage.join(run, "products.parquet"), "source"),
                                 columns=["article_id"])["article_id"].to_pylist()
        if products and sum(str(p) in served for p in products) >= 0.5 * len(products):
            return run
    return None


def _index_run(config: ServeAppConfig, embed_run: str) -> str | None:
    """The pinned build_index run, else the newest one of the served ``index.backend`` built over this
    embed run's image vectors (its manifest names them); None: the Retriever builds its index from the
    vectors at load (FAISS only; the pgvector backend then says which run to build)."""
    art = config.artifacts
    if art.index_run:
        return location_of(art.index_run)
    wanted = storage.join(embed_run, "image_embeddings")
    for run in _runs_newest_first(art.index_root):
        meta = storage.join(run, "index_meta.json")
        if _manifest_input(run, "vectors") == wanted and storage.is_file(meta):
            # a run of the served backend (index.backend): FAISS files, or a pgvector table's meta
            if storage.read_json(meta).get("backend", "faiss") == config.index.backend:
                return run
    return None


def localise(version: dict, cache_dir: str) -> dict:
    """The version with every object-store run replaced by its node-local copy (downloaded once per
    content hash into ``cache_dir``; ``recsys.storage.local_cache``): what a replica loads from."""
    out = dict(version)
    for key in VERSION_KEYS:
        if version.get(key) and not storage.is_local(version[key]):
            out[key] = str(storage.local_cache(version[key], cache_dir, exclude=NOT_COPIED))
    return out


VERSION_KEYS = ("json_encoder_run", "embed_run", "items", "users_run", "index_run", "item_tower_run", "persona_run")


def same_version(a: dict | None, b: dict | None) -> bool:
    """Equal runs (the resolution time does not count)."""
    return bool(a and b) and all(a.get(k) == b.get(k) for k in VERSION_KEYS)


def version_label(version: dict) -> dict:
    """Short names for responses: run directory names instead of absolute paths."""
    def name(key: str) -> str | None:
        return _run_name(version[key]) if version.get(key) else None

    return {"json_encoder_run": name("json_encoder_run"), "embed_run": name("embed_run"),
            "items": _run_name(version["items"], parent=True), "users_run": name("users_run"),
            "index_run": name("index_run"), "item_tower_run": name("item_tower_run"), "persona_run": name("persona_run")}


@functools.lru_cache(maxsize=256)  # every response carries the labels: no file-system calls per request
def _run_name(path: str, parent: bool = False) -> str:
    """A run's folder name (``parent``: of the run holding this folder); a node-local copy of an
    object-store run is named after the run it copies."""
    location = location_of(path)
    return storage.name(storage.parent(location) if parent else location)


def embed_run_config(version: dict) -> dict:
    """The embed run's resolved config (image/text encoder settings), {} when absent."""
    path = storage.join(version["embed_run"], "config.yaml")
    return (yaml.safe_load(storage.read_text(path)) or {}) if storage.is_file(path) else {}


def embed_report(version: dict) -> dict:
    path = storage.join(version["embed_run"], "embed_report.json")
    return storage.read_json(path) if storage.is_file(path) else {}


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
    for key in VERSION_KEYS:
        parser.add_argument(f"--{key.replace('_', '-')}", default=None, help="default: the newest")
    args = parser.parse_args(argv)
    serve_config = yaml.safe_load(Path(args.config).read_text())
    app_args = dict(serve_config["applications"][0].get("args") or {})
    artifacts = dict(app_args.get("artifacts") or {})
    for key in VERSION_KEYS:
        if getattr(args, key):
            artifacts[key] = getattr(args, key)
    version = newest_version(resolve_paths(config_from_args({**app_args, "artifacts": artifacts})))
    Path(args.out).write_text(yaml.safe_dump(with_version(serve_config, version), allow_unicode=True,
                                             sort_keys=False))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in version_label(version).items() if v)
          + f"\nmove the running application in place: serve deploy {args.out}")


if __name__ == "__main__":
    main()
