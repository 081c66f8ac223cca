"""The served user model's files: one reader/writer pair for ``user_model.json`` + ``item_vectors.npy``,
and the layout of a users run (``ray_jobs.train_users`` writes it, the Serve app reads it):

    <run>/users.parquet     the user store (user_id, history, profile fields, context)
    <run>/user_tower/       user_model.json + item_vectors.npy + the checkpoint (this module)
    <run>/reranker/         reranker.json + item_vectors.npy + the checkpoint (``recsys.data.candidate_lists``)
    <run>/config.yaml       the run's settings: serving rebuilds the same candidate sources (:func:`served_sources`)

Written by ``recsys.models.user_tower.save_user_model`` (a training job), read by serving: the
Retriever needs only the item ids and vectors (this module imports no torch), the QueryEncoder
also the tower (``recsys.models.user_tower.load_user_model``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.artifacts import ModelFiles

USER_MODEL_FILE = "user_model.json"
ITEM_VECTORS_FILE = "item_vectors.npy"
USERS_FILE = "users.parquet"
USER_TOWER_DIR = "user_tower"
RERANKER_DIR = "reranker"
DEMO_SOURCES = ["user_tower", "itemknn", "mostpop"]    # what serving computes for one user at a time


@dataclass
class UserModelFiles(ModelFiles):
    directory: Path
    checkpoint: str                                   # relative to directory
    item_ids: list[str]                               # item index i = token i + 1
    profile_numeric: list[str] = field(default_factory=list)
    profile_categorical: dict[str, list[str]] = field(default_factory=dict)   # field -> values (id = position + 1)
    context: dict = field(default_factory=dict)       # {"source", "text_model", "dim"}
    max_len: int = 0
    note: str | None = None
    item_vectors_file: str = ITEM_VECTORS_FILE


def write_user_model(directory: str | Path, item_vectors: np.ndarray, checkpoint: str | Path, item_ids: list[str],
                     profile_numeric: list[str], profile_categorical: dict[str, list[str]], context: dict,
                     max_len: int, note: str | None = None) -> Path:
    """``item_vectors.npy`` and ``user_model.json`` in ``directory`` (``checkpoint`` inside it)."""
    from recsys.artifacts import write_json

    directory = Path(directory)
    np.save(directory / ITEM_VECTORS_FILE, np.asarray(item_vectors, dtype=np.float32))
    relative = Path(checkpoint).resolve().relative_to(directory.resolve())
    return write_json(directory / USER_MODEL_FILE, {
        "checkpoint": str(relative), "item_vectors": ITEM_VECTORS_FILE, "item_ids": list(item_ids),
        "profile_numeric": list(profile_numeric), "profile_categorical": dict(profile_categorical),
        "context": context, "max_len": int(max_len), "note": note})


def read_user_model(directory: str | Path, required: bool = True) -> UserModelFiles | None:
    """What :func:`write_user_model` wrote; None when absent and not ``required``."""
    from recsys.data.candidate_lists import read_artifact_json

    directory = Path(directory)
    meta = read_artifact_json(directory / USER_MODEL_FILE, required)
    if meta is None:
        return None
    return UserModelFiles(directory, meta["checkpoint"], list(meta["item_ids"]),
                          list(meta.get("profile_numeric") or []), dict(meta.get("profile_categorical") or {}),
                          dict(meta.get("context") or {}), int(meta.get("max_len") or 0), meta.get("note"),
                          meta.get("item_vectors", ITEM_VECTORS_FILE))


def served_sources(run_dir: str | Path):
    """The candidate sources (``recsys.retrieval.sources.SourcesConfig``) a users run was trained
    with, from its config.yaml (default: :data:`DEMO_SOURCES`)."""
    import yaml

    from recsys.config import from_dict
    from recsys.retrieval.sources import SourcesConfig

    path = Path(run_dir) / "config.yaml"
    saved = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    keys = {"sources", "itemknn", "baskets", "content"}
    return from_dict(SourcesConfig, {"sources": list(DEMO_SOURCES), **{k: v for k, v in saved.items() if k in keys}})
