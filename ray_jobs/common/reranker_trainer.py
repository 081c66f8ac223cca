"""Ray Train glue for the rerankers: one variant of ``recsys.ranking.rerankers`` fitted on a TorchTrainer
(``ray_jobs.common.trainer.fit_torch``, checkpoint = best validation NDCG@10)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from recsys.train_loops.scaling import ScalingSettings
from ray_jobs.common.trainer import fit_torch
from recsys.config import config_hash
from recsys.data.candidate_lists import DenseScaler, absent_dense
from recsys.ranking.rerankers import ItemSide
from recsys.train_loops.rerankers import LOOPS


def fit_reranker(name: str, kind: str, model_cfg, train_cfg, cfg, side: ItemSide, datasets: dict,
                 scaler: DenseScaler, feature_names: list[str], out_dir: Path, scaling: ScalingSettings) -> dict:
    """Train variant ``name`` (``kind`` deepfm | listwise) under ``out_dir/<slug>``; ``cfg`` (the
    recipe's settings) names the run. Returns {"best_model", "history", "best_metrics"}."""
    popularity_col = feature_names.index("popularity")
    loop_config = {"model": kind, "model_config": asdict(model_cfg), "train": asdict(train_cfg),
                   "vocab_size": side.vocab_size, "n_categories": side.n_categories, "n_dense": len(feature_names),
                   "init_tower": side.tower_state, "popularity_col": popularity_col,
                   "popularity_mean": float(scaler.mean[popularity_col]),
                   "popularity_std": float(scaler.std[popularity_col]),
                   "absent_dense_z": scaler.transform(absent_dense(feature_names)).tolist()}
    slug = "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())  # "listwise_diversity_0"
    # The config hash in the run name: Ray Train resumes a run of the same name, which must only
    # happen for the same settings.
    return fit_torch(LOOPS[kind], loop_config, datasets, scaling, out_dir / slug, f"{slug}-{config_hash(cfg)}",
                     "val_ndcg@10")
