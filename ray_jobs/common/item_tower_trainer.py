"""Item-tower training glue shared by ``train_item_tower`` (one tower, exported vectors),
``evaluate_item_towers`` (the ablation) and ``evaluate_seq``: stage 1 and stage 2 on Ray Train over
the prepared catalog of ``recsys.data.item_catalog``."""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np

from recsys.config import config_hash
from recsys.data.item_catalog import ItemTowerData, SplitConfig
from recsys.eval.item_space import baseline_vectors
from recsys.metrics.neighbours import neighbour_report
from recsys.models.item_towers import ItemTowerConfig, adapt, encode_items, load_adapter, load_tower, read_item_vectors
from recsys.retrieval.e3 import ItemVectorsConfig, align_item_vectors
from recsys.train_loops.item_tower import AdapterConfig, ItemTowerEvalConfig, SimCSEConfig, adapter_loop, simcse_loop
from recsys.train_loops.scaling import ScalingSettings
from ray_jobs.common.tasks import run_tasks
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


def split_report(data: ItemTowerData, vectors, k: int, split: SplitConfig) -> dict:
    """Neighbour metrics against the whole catalog for warm (trained) query items, cold ones (unseen
    items of seen categories) and ``unseen_category`` ones (categories no training item had)."""
    warm = np.concatenate([data.train, data.val])
    rng = np.random.default_rng(split.seed)
    if len(warm) > split.max_eval_queries:
        warm = np.sort(rng.choice(warm, split.max_eval_queries, replace=False))
    out = {}
    for name, rows in (("warm", warm), ("cold", data.cold), ("unseen_category", data.unseen_category)):
        if len(rows):
            out[name] = neighbour_report(vectors[rows], vectors, rows, data.fine, data.parent, data.token_sets,
                                         k=k, seed=split.seed)
    return out


def evaluate_catalog(data: ItemTowerData, cfg: ItemTowerEvalConfig, out_dir: Path, cache_dir: Path,
                     prefix: str = "") -> dict:
    """The baselines and every tower x (no adapter | adapter per sampler) on one prepared catalog:
    ``{"variants", "seconds", "histories", "vectors", "ray_tasks"}`` keyed by ``prefix + variant name``.
    The baselines (TF-IDF, MiniLM) are Ray tasks declaring ``baseline_task``, side by side."""
    out = {"variants": {}, "seconds": {}, "histories": {}, "vectors": {}, "ray_tasks": {}}

    def record(name: str, vectors, started: float, history=None) -> None:
        out["variants"][prefix + name] = split_report(data, vectors, cfg.k, cfg.split)
        out["seconds"][prefix + name] = round(time.perf_counter() - started, 1)
        out["vectors"][prefix + name] = vectors
        if history is not None:
            out["histories"][prefix + name] = history
        print_rows(out["variants"], [prefix + name])

    names = {f"{prefix}baseline:{b}": b for b in cfg.baselines}
    device = None if cfg.baseline_task.num_gpus > 0 else "cpu"  # off any GPU Ray did not give the task
    done = run_tasks({name: partial(baseline_vectors, b, data, cache_dir, device) for name, b in names.items()},
                     cfg.baseline_task, "baseline_task", placements=out["ray_tasks"])
    for name, vectors in done.items():  # its seconds: the task's, then the report's
        record(name.removeprefix(prefix), vectors, time.perf_counter() - out["ray_tasks"][name]["seconds"])
    for tower in cfg.towers:
        started = time.perf_counter()
        fitted = fit_tower(data, tower, cfg.tower, cfg.simcse, cfg.scaling, out_dir / tower)
        record(tower, fitted["vectors"], started, fitted["history"])
        for sampler in cfg.samplers:
            started = time.perf_counter()
            adapted = fit_metric_adapter(data, fitted["vectors"], replace(cfg.adapter, sampler=sampler),
                                         cfg.scaling, out_dir / tower, f"adapter_{sampler}")
            record(f"{tower}+adapter({sampler})", adapted["vectors"], started, adapted["history"])
    return out


REPORTED = ("category_hit@10", "sibling_confusion@10", "same_vs_sibling_gap", "ild@10", "coverage@10")


def print_rows(variants: dict, names: list[str]) -> None:
    for name in names:
        for split, report in variants[name].items():
            print(f"  {name:42s} {split:15s} " + "  ".join(f"{k} {report[k]:.3f}" for k in REPORTED), flush=True)


def item_vectors_for(cfg: ItemVectorsConfig, items_path: str | None, item_ids: np.ndarray, out_dir: Path,
                     scaling: ScalingSettings) -> tuple[np.ndarray | None, dict]:
    """E3's (I, k) frozen item vectors in the log's item order: a train_item_tower export, or the item
    tower trained here on ``items_path`` (Ray Train), or none."""
    if cfg.path:
        return align_item_vectors(*read_item_vectors(cfg.path, cfg.column), item_ids, cfg.path)
    if not items_path:
        return None, {"source": "none (learned item-ID embeddings only)"}
    from recsys.data.item_catalog import CatalogConfig, load_tower_items

    catalog = CatalogConfig(**{**asdict(cfg.catalog), "catalog": items_path})
    data = load_tower_items(catalog, cfg.split, cfg.tower.title_mode, out_dir / "cache")
    root = out_dir / "item_tower" / config_hash(cfg)
    _, adapter = fit_tower_and_adapter(data, cfg.tower_name, cfg.tower, cfg.simcse, cfg.adapter, cfg.adapter_dim,
                                       scaling, root)
    return align_item_vectors(data.item_ids.astype(str), adapter["vectors"], item_ids, str(root))
