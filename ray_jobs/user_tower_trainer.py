"""Ray Train glue for the user tower, independent of any protocol: item sequences in, a trained
tower out.

:func:`sequence_datasets` builds the datasets ``recsys.train_loops.user_tower.user_tower_loop``
reads (causal training windows, validation histories/targets, the items' counts) from plain
per-user sequences; :func:`fit_user_tower` trains on a TorchTrainer (``ray_jobs.trainer.fit_torch``,
checkpoint = best validation HR@10) and returns the best model loaded on CPU. A protocol decides
what the sequences are: E3 passes ``split.training_sequences("val")``, ``split.history("val")``,
``split.targets("val")``; E2 (``ray_jobs.evaluate_next_purchase``) passes the purchase sequences
before each customer's validation day and one article of that day.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from recsys.models.user_tower import UserTower, UserTowerConfig, load_user_tower, pad_right, training_windows
from recsys.train_loops.user_tower import SCORE, UserTowerTrainConfig, user_tower_loop
from ray_jobs.trainer import ScalingSettings, fit_torch


def sequence_datasets(train_sequences: Sequence[np.ndarray], val_histories: Sequence[np.ndarray],
                      val_targets: np.ndarray, n_items: int, max_len: int,
                      train_columns: dict[str, np.ndarray] | None = None,
                      val_columns: dict[str, np.ndarray] | None = None,
                      item_vectors: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The loop's datasets. ``train_columns``/``val_columns``: optional per-user arrays
    (``context``, ``profile_*``), rows = ``train_sequences`` / ``val_histories``."""
    inputs, targets, owner = training_windows(train_sequences, max_len)
    train = {"items": inputs, "targets": targets, **{k: v[owner] for k, v in (train_columns or {}).items()}}
    val = {"items": pad_right(val_histories, max_len), "target": np.asarray(val_targets, dtype=np.int64),
           **(val_columns or {})}
    seen = {"row": np.repeat(np.arange(len(val_histories)), [len(h) for h in val_histories]),
            "item": (np.concatenate(list(val_histories)) if len(val_histories) else np.zeros(0)).astype(np.int64)}
    flat = np.concatenate(list(train_sequences)) if len(train_sequences) else np.zeros(0, np.int64)
    items = {"count": np.bincount(flat.astype(np.int64), minlength=n_items).astype(np.int64)}
    if item_vectors is not None:
        items["vector"] = np.asarray(item_vectors, dtype=np.float32)
    return {"train": train, "val": val, "val_seen": seen, "items": items}


def fit_user_tower(datasets: dict[str, dict[str, np.ndarray]], n_items: int, model: UserTowerConfig,
                   train: UserTowerTrainConfig, scaling: ScalingSettings, storage_dir: str | Path, name: str,
                   profile_stats: dict | None = None) -> tuple[UserTower, dict]:
    """Train on Ray Train; returns (the best tower in eval mode, {"best_model", "history",
    "best_metrics"}). The same ``storage_dir``/``name`` resumes a finished or interrupted run."""
    if len(datasets["train"]["items"]) == 0:
        raise ValueError("the user tower needs at least one sequence with two items")
    fitted = fit_torch(user_tower_loop, {"model": asdict(model), "train": asdict(train), "n_items": int(n_items),
                                         "profile_stats": profile_stats},
                       datasets, scaling, Path(storage_dir), name, SCORE)
    return load_user_tower(fitted["best_model"]), fitted
