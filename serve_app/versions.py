"""Which model/index version is served: the runs of the JSON encoder, the embed job and the users job.

A version is a small dict of run directories. It reaches the replicas through Serve's own
``user_config`` (``serve_app.deployments.base``): the app builder resolves the newest runs at deploy
time, and a Serve config naming other runs moves every replica in place (``serve deploy``;
``python -m serve_app.versions`` writes such a config).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from recsys.artifacts import latest_run
from serve_app.config import ServeAppConfig


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
    item_tower_run = _item_tower_run(config, Path(items))
    persona_run = _persona_run(config, Path(items))
    for what, path in (("JSON encoder checkpoint", json_run / "checkpoints" / "best_model.pt"),
                       ("JSON encoder vocabulary", json_run / "checkpoints" / "vocab.json"),
                       ("image embeddings", embed_run / "image_embeddings"), ("items", Path(items)),
                       *((("users", users_run / "users.parquet"),
                          ("user tower", users_run / "user_tower" / "user_model.json")) if users_run else ())):
        if not path.exists():
            raise FileNotFoundError(f"{what}: {path} does not exist")
    return {"json_encoder_run": str(json_run.resolve()), "embed_run": str(embed_run.resolve()),
            "items": str(Path(items).resolve()), "users_run": str(users_run.resolve()) if users_run else None,
            "index_run": index_run,  # resolved local path or object-store URI (_index_run)
            "item_tower_run": str(item_tower_run.resolve()) if item_tower_run else None,
            "persona_run": str(persona_run.resolve()) if persona_run else None,
            "resolved_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _users_run(config: ServeAppConfig) -> Path | None:
    """The pinned train_users run, else the newest one; None when users are off or none was trained."""
    art = config.artifacts
    if not config.users.enabled:
        return None
    if art.users_run:
        return Path(art.users_run)
    return latest_run(art.users_root) if (Path(art.users_root) / "LATEST").is_file() else None


def _runs_newest_first(root: str) -> list[Path]:
    root = Path(root)
    return sorted((p for p in root.iterdir() if (p / "manifest.json").is_file()), reverse=True) if root.is_dir() else []


def _item_tower_run(config: ServeAppConfig, items: Path) -> Path | None:
    """The pinned train_item_tower run, else the newest one trained on the served items (its
    manifest names them); None: ``similar`` compares image vectors only."""
    art = config.artifacts
    if art.item_tower_run:
        return Path(art.item_tower_run)
    wanted = items.resolve()
    for run in _runs_newest_first(art.item_tower_root):
        trained_on = json.loads((run / "manifest.json").read_text()).get("inputs", {}).get("items")
        if trained_on and Path(trained_on).resolve() == wanted and (run / "item_vectors.parquet").exists():
            return run
    return None


def _persona_run(config: ServeAppConfig, items: Path) -> Path | None:
    """The pinned train_persona run, else the newest whose products are mostly served items (a
    persona model of another catalog would recommend ids the app cannot show); None: profile-only
    requests go to the user tower."""
    import pyarrow.parquet as pq

    art = config.artifacts
    if art.persona_run:
        return Path(art.persona_run)
    runs = [r for r in _runs_newest_first(art.persona_root) if (r / "products.parquet").is_file()
            and (r / "checkpoints" / "best_model.pt").is_file()]
    if not runs:
        return None
    served = set(pq.read_table(items, columns=["item_id"])["item_id"].to_pylist())
    for run in runs:
        products = pq.read_table(run / "products.parquet", columns=["article_id"])["article_id"].to_pylist()
        if products and sum(str(p) in served for p in products) >= 0.5 * len(products):
            return run
    return None


def _index_run(config: ServeAppConfig, embed_run: Path) -> str | None:
    """The pinned build_index run, else the newest one of the served ``index.backend`` built over this
    embed run's image vectors (its manifest names them); None: the Retriever builds its index from the
    vectors at load (FAISS only; the pgvector backend then says which run to build).
    A local run is returned resolved, an object-store URI (``s3://...``, which replicas copy to their
    node-local cache) as the URI string, never a ``Path`` (that would turn it into a local path)."""
    from recsys import storage

    art = config.artifacts
    if art.index_run:
        if not storage.is_local(art.index_run):  # s3://, gs://, ...
            return storage.normalise(art.index_run)
        return str(storage.local_path(art.index_run).resolve())
    root = Path(art.index_root)
    if not root.is_dir():
        return None
    wanted = (embed_run / "image_embeddings").resolve()
    for run in sorted((p for p in root.iterdir() if (p / "manifest.json").is_file()), reverse=True):
        vectors = json.loads((run / "manifest.json").read_text()).get("inputs", {}).get("vectors")
        if vectors and Path(vectors).resolve() == wanted and (run / "index_meta.json").is_file():
            # a run of the served backend (index.backend): FAISS files, or a pgvector table's meta
            if json.loads((run / "index_meta.json").read_text()).get("backend", "faiss") == config.index.backend:
                return str(run.resolve())
    return None


VERSION_KEYS = ("json_encoder_run", "embed_run", "items", "users_run", "index_run", "item_tower_run", "persona_run")


def same_version(a: dict | None, b: dict | None) -> bool:
    """Equal runs (the resolution time does not count)."""
    return bool(a and b) and all(a.get(k) == b.get(k) for k in VERSION_KEYS)


def version_label(version: dict) -> dict:
    """Short names for responses: run directory names instead of absolute paths."""
    def name(key: str) -> str | None:
        return Path(version[key]).name if version.get(key) else None

    return {"json_encoder_run": name("json_encoder_run"), "embed_run": name("embed_run"),
            "items": str(Path(version["items"]).parent.name), "users_run": name("users_run"),
            "index_run": name("index_run"), "item_tower_run": name("item_tower_run"), "persona_run": name("persona_run")}


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
