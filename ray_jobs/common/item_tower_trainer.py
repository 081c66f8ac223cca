"""Item-tower training glue shared by ``train_item_tower`` (one tower, exported vectors),
``evaluate_item_towers`` (the ablation) and ``evaluate_seq``: stage 1 and stage 2 on Ray Train over
the prepared catalog of ``recsys.data.item_catalog``."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from recsys.data.item_catalog import ItemTowerData, SplitConfig
from recsys.metrics.neighbours import neighbour_report
from recsys.models.item_towers import ItemTowerConfig, adapt, encode_items, load_adapter, load_tower
from recsys.train_loops.item_tower import AdapterConfig, SimCSEConfig, adapter_loop, simcse_loop
from recsys.train_loops.scaling import ScalingSettings
from ray_jobs.common.trainer import fit_torch


def fit_tower(data: ItemTowerData, tower: str, tower_cfg: ItemTowerConfig, simcse: SimCSEConfig,
              scaling: ScalingSettings, storage_dir: Path) -> dict:
    """Stage 1 on Ray Train; returns the fit result plus 512-d vectors for every item."""
    fitted = fit_torch(simcse_loop, {"tower": tower, "tower_config": asdict(tower_cfg), "train": asdict(simcse),
                                     "vocab_size": data.featurizer.vocab_size, "n_fields": data.featurizer.n_fields},
                       {"train": data.rows(data.train), "val": data.rows(data.val)}, scaling, storage_dir,
                       f"{tower}_simcse", "val_category_hit@10")
    fitted["vectors"] = encode_items(load_tower(fitted["best_model"]), data.features)
    return fitted


def fit_metric_adapter(data: ItemTowerData, vectors: np.ndarray, adapter: AdapterConfig, scaling: ScalingSettings,
                       storage_dir: Path, name: str, out_dim: int = 128) -> dict:
    """Stage 2 on Ray Train over frozen tower vectors; returns the fit plus adapted vectors."""
    def columns(rows):
        return {"vector": vectors[rows], "fine": data.fine[rows], "parent": data.parent[rows]}

    fitted = fit_torch(adapter_loop, {"train": asdict(adapter), "in_dim": vectors.shape[1], "out_dim": out_dim},
                       {"train": columns(data.train), "val": columns(data.val)}, scaling, storage_dir, name,
                       "val_category_hit@10")
    fitted["vectors"] = adapt(load_adapter(fitted["best_model"]), vectors)
    return fitted


def fit_tower_and_adapter(data: ItemTowerData, tower: str, tower_cfg: ItemTowerConfig, simcse: SimCSEConfig,
                          adapter: AdapterConfig, adapter_dim: int, scaling: ScalingSettings,
                          storage_dir: Path) -> tuple[dict, dict]:
    """Both stages of one tower (``storage_dir``/stage1 and /stage2): the tower's fit and the adapter's."""
    fitted = fit_tower(data, tower, tower_cfg, simcse, scaling, storage_dir / "stage1")
    return fitted, fit_metric_adapter(data, fitted["vectors"], adapter, scaling, storage_dir / "stage2",
                                      f"adapter_{adapter.sampler}", adapter_dim)


def warm_cold_report(data: ItemTowerData, vectors: np.ndarray, k: int, split: SplitConfig) -> dict:
    """Neighbour metrics for warm (trained) and cold (held-out) query items against the whole catalog."""
    warm = np.concatenate([data.train, data.val])
    rng = np.random.default_rng(split.seed)
    if len(warm) > split.max_eval_queries:
        warm = np.sort(rng.choice(warm, split.max_eval_queries, replace=False))
    out = {}
    for name, rows in (("warm", warm), ("cold", data.cold)):
        if len(rows):
            out[name] = neighbour_report(vectors[rows], vectors, rows, data.fine, data.parent, data.token_sets,
                                         k=k, seed=split.seed)
    return out
