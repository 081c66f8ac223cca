"""Ray Train glue for the user tower, independent of any protocol: item sequences in, a trained
tower out.

``recsys.train_loops.user_tower.sequence_datasets`` builds the datasets the loop reads (causal
training windows, validation histories/targets, the items' counts) from plain per-user sequences
(``tower_datasets``: from an E3 split); :func:`fit_user_tower` trains on a TorchTrainer
(``ray_jobs.common.trainer.fit_torch``, checkpoint = best validation HR@10) and returns the best model loaded on CPU. A protocol decides
what the sequences are: E3 passes ``split.training_sequences("val")``, ``split.history("val")``,
``split.targets("val")``; E2 (``recsys.eval.next_purchase``) passes the purchase sequences
before each customer's validation day and one article of that day.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from recsys.models.user_tower import UserTower, UserTowerConfig, load_user_tower
from recsys.train_loops.user_tower import SCORE, UserTowerTrainConfig, user_tower_loop
from recsys.train_loops.scaling import ScalingSettings
from ray_jobs.common.trainer import fit_torch


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
