"""Train one item tower (stage 1 SimCSE + stage 2 metric adapter) and export item vectors.

    python -m ray_jobs.train_item_tower --config configs/item_tower.yaml
    python -m ray_jobs.train_item_tower --set catalog.catalog=styles_full.parquet --set tower_name=coarse_to_fine
    ray job submit -- python -m ray_jobs.train_item_tower --config configs/item_tower.yaml   # on a cluster (README, "On a cluster")

Input: canonical items (latest preprocess run by default) or a catalog file. Output run directory:
checkpoints/tower.pt, checkpoints/adapter.pt, checkpoints/featurizer.json, item_vectors/ (parquet:
item_id, category, cold, vector_512 from the tower, vector = the 128-d L2-normalised adapter output
that indexes use; inner product is the metric), metrics.json (warm/cold neighbour metrics for both
vectors), training_charts_<stage>.png and projection.png. Cold-start items are held out of training
and get vectors from their attributes alone, like a new product would.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from recsys import storage
from recsys.artifacts import cache_root, location_of, new_run_dir, write_json, write_manifest
from recsys.config import ConfigError
from recsys.data.item_catalog import data_source, load_tower_items
from recsys.eval.item_space import projection_plot
from recsys.models.item_towers import (ADAPTER_FILE, FEATURIZER_FILE, ITEM_VECTORS_FILE, TOWERS, TOWER_FILE,
                                       write_item_vectors)
from recsys.plots import line_panels
from recsys.train_loops.item_tower import TrainItemTowerConfig
from ray_jobs.common.cli import init_ray, load_stage_config, run_main
from ray_jobs.common.item_tower_trainer import fit_tower_and_adapter, split_report

__all__ = ["TrainItemTowerConfig", "main", "run"]  # the config: recsys.train_loops.item_tower


def run(cfg: TrainItemTowerConfig) -> dict:
    if cfg.tower_name not in TOWERS:
        raise ConfigError(f"tower_name: unknown {cfg.tower_name!r}; known {sorted(TOWERS)}")
    cache = (Path(cfg.output_root) if storage.is_local(cfg.output_root) else cache_root()) / "cache"  # node-local
    data = load_tower_items(cfg.catalog, cfg.split, cfg.tower.title_mode, cache)
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    print(f"train_item_tower ({cfg.tower_name}): {len(data.item_ids)} items, train {len(data.train)}, val "
          f"{len(data.val)}, cold {len(data.cold)}; run {run_dir}")
    init_ray()
    started = time.perf_counter()
    tower, adapter = fit_tower_and_adapter(data, cfg.tower_name, cfg.tower, cfg.simcse, cfg.adapter, cfg.adapter_dim,
                                           cfg.scaling, run_dir)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    shutil.copy(tower["best_model"], run_dir / TOWER_FILE)
    shutil.copy(adapter["best_model"], run_dir / ADAPTER_FILE)
    data.featurizer.save(run_dir / FEATURIZER_FILE)
    cold = np.zeros(len(data.item_ids), dtype=bool)
    cold[data.cold] = True
    vectors_path = write_item_vectors(run_dir / ITEM_VECTORS_FILE, data.item_ids, data.categories, cold,
                                      tower["vectors"], adapter["vectors"])
    metrics = {"tower": cfg.tower_name, "n_items": int(len(data.item_ids)), "n_cold": int(len(data.cold)),
               "train_seconds": round(time.perf_counter() - started, 1), "metric": "inner product (L2-normalised)",
               "tower_512": split_report(data, tower["vectors"], cfg.k, cfg.split),
               "adapter_128": split_report(data, adapter["vectors"], cfg.k, cfg.split),
               "token_stats": data.token_stats,
               "history": {"stage1": tower["history"], "stage2": adapter["history"]}}
    write_json(run_dir / "metrics.json", metrics)
    for stage, fitted in (("stage1", tower), ("stage2", adapter)):
        line_panels(fitted["history"], {"loss": ["train_loss"], "validation category_hit@10": ["val_category_hit@10"],
                                        "same vs sibling cosine": ["val_same_cosine", "val_sibling_cosine"],
                                        "learning rate": ["lr"]},
                    run_dir / f"training_charts_{stage}.png", f"{cfg.tower_name} {stage}")
    projection_plot(adapter["vectors"], data.categories, data.cold, run_dir / "projection.png",
                    f"{cfg.tower_name} + adapter: item space (t-SNE sample); x = cold-start items", seed=cfg.split.seed)
    write_manifest(run_dir, "train_item_tower", {"items": data_source(cfg.catalog)},  # Serve matches this to its items
                   {"item_vectors": str(vectors_path), "tower": str(run_dir / TOWER_FILE),
                    "adapter": str(run_dir / ADAPTER_FILE)})
    for name, report in (("tower 512-d", metrics["tower_512"]), ("adapter 128-d", metrics["adapter_128"])):
        for split, values in report.items():
            print(f"{name} {split}: category_hit@10 {values['category_hit@10']:.3f} sibling_confusion@10 "
                  f"{values['sibling_confusion@10']:.3f} gap {values['same_vs_sibling_gap']:.3f}")
    print("  (the category is one of the tower's input tokens and its triplet label: these numbers check that the "
          "space keeps it, not that the tower could infer it; they are not a quality measure)")
    print(f"item vectors: {location_of(vectors_path)}")
    return metrics | {"run_dir": location_of(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TrainItemTowerConfig, "configs/item_tower.yaml", argv))


if __name__ == "__main__":
    run_main(main)
