"""Item-tower ablation on any catalog, leak-free: baselines and towers x (no adapter | adapter,
random batches | adapter, hierarchical sampler) on warm items, cold items and unseen categories.

    python -m ray_jobs.evaluate_item_towers --catalog styles_full.parquet --out artifacts/eval/item_towers_fpi
    python -m ray_jobs.evaluate_item_towers --catalog my_items.csv --hierarchy dept,class,subclass \
        --std-fields colour,gender --re-fields material,fit --id-col sku --out DIR
    python -m ray_jobs.evaluate_item_towers --enriched artifacts/enrich/fpi/<run>/items --towers unified --out DIR

The metrics' label is the finest category, so that level (and any field copying it) is withheld from
every input, training and evaluation alike (``leak_free``); the baselines get exactly the same
inputs: ``baseline:tfidf`` (TF-IDF of the towers' input tokens) and ``baseline:minilm`` (zero-shot
MiniLM of the same inputs as text). Held out of all training: ``cold`` items (unseen items of seen
categories) and ``unseen_category`` items (whole finest categories). ``--enriched`` compares the
same catalog without (``raw: ``) and with (``enriched: ``) an enrich run's additions, on one split.

Writes DIR/metrics.json ({"variants": {name: {"warm"|"cold"|"unseen_category": {...}}}, "withheld",
"n_items", "n_cold", "n_unseen_category", "config"[, "enrichment_gain"]}), DIR/ablation.png,
DIR/projection.png, and per tower the Ray Train runs and checkpoints. Variant names: ``<tower>`` =
stage 1 (SimCSE) 512-d vectors; ``<tower>+adapter(<sampler>)`` = stage 2 128-d vectors (triplet loss,
hard-negative miner, uniform or hierarchical batches).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.artifacts import write_json
from recsys.config import ConfigError, to_dict
from recsys.data.item_catalog import feature_config, load_tower_items
from recsys.eval.item_space import ablation_chart, projection_plot
from recsys.models.item_towers import TOWERS
from recsys.train_loops.item_tower import ItemTowerEvalConfig
from ray_jobs.common.cli import init_ray, run_main, stage_config, stage_parser
from ray_jobs.common.item_tower_trainer import REPORTED, evaluate_catalog

SPLITS = ("warm", "cold", "unseen_category")
DEFINITIONS = {"category_hit@10": "share of the 10 nearest items with the same finest category",
               "sibling_confusion@10": "share of the 10 nearest items from a sibling category "
                                       "(same parent, different finest category)",
               "same_vs_sibling_gap": "mean cosine of same-category pairs minus sibling pairs",
               "ild@10": "mean pairwise 1 - Jaccard of attribute tokens within each top-10 list",
               "coverage@10": "share of the catalog appearing in at least one top-10 list",
               "warm": "queries trained on (sampled); cold: unseen items of trained categories; "
                       "unseen_category: items of finest categories no training item had",
               "withheld": "inputs removed because they are (or copy) the metrics' label"}


def catalog_sides(cfg: ItemTowerEvalConfig) -> dict:
    """``{"": None}`` (the configured catalog) or, with ``enriched``, the enrich run's items without
    and with its additions: ``{"raw: ": table, "enriched: ": table}`` (same items, same order)."""
    if not cfg.enriched:
        return {"": None}
    from recsys.llm.enrich_job import withhold_enrichment

    enriched = pq.read_table(cfg.enriched)
    if "enriched_values" not in enriched.column_names:
        raise ConfigError(f"enriched: {cfg.enriched} has no enriched_values column; expected an enrich run's items/")
    return {"raw: ": withhold_enrichment(enriched), "enriched: ": enriched}


def run(cfg: ItemTowerEvalConfig, out_dir: Path) -> dict:
    unknown = [t for t in cfg.towers if t not in TOWERS]
    if unknown:
        raise ConfigError(f"towers: unknown {unknown}; known {sorted(TOWERS)}")
    init_ray()
    results, sides = {}, {}
    for prefix, table in catalog_sides(cfg).items():
        started = time.perf_counter()
        data = sides[prefix] = load_tower_items(cfg.catalog, cfg.split, cfg.tower.title_mode, out_dir / "cache",
                                                cfg.leak_free, table)
        print(f"{prefix}{len(data.item_ids)} items ({data.source}): train {len(data.train)}, val {len(data.val)}, "
              f"cold {len(data.cold)}, unseen categories {len(data.unseen_category)} items; withheld "
              f"{data.withheld or 'nothing (leak_free off)'}; tokens per item {data.token_stats}; "
              f"featurized in {time.perf_counter() - started:.0f}s")
        side_dir = out_dir / prefix.strip(": ") if prefix else out_dir
        for key, value in evaluate_catalog(data, cfg, side_dir, out_dir / "cache", prefix).items():
            results.setdefault(key, {}).update(value)
    data = next(iter(sides.values()))
    variants = results["variants"]
    towers = [v for v in variants if "baseline:" not in v]   # the projection needs dense vectors
    best = max(towers or variants, key=lambda v: variants[v].get("cold", variants[v]["warm"])["category_hit@10"])
    ablation_chart(variants, REPORTED[:3], out_dir / "ablation.png",
                   f"Item-tower ablation (leak-free: {data.withheld.get('levels')} withheld), "
                   f"{len(data.item_ids)} items ({data.source}); k={cfg.k}")
    if towers:
        projection_plot(results["vectors"][best], data.categories, np.concatenate([data.cold, data.unseen_category]),
                        out_dir / "projection.png", f"{best}: item space (t-SNE of a sample), coloured by category; "
                        "x = cold-start items and unseen categories", seed=cfg.split.seed)
    metrics = {"variants": variants, "withheld": data.withheld, "n_items": int(len(data.item_ids)),
               "n_cold": int(len(data.cold)), "n_unseen_category": int(len(data.unseen_category)),
               "n_train": int(len(data.train)), "n_val": int(len(data.val)), "best_tower_cold": best,
               "train_seconds": results["seconds"], "ray_tasks": results["ray_tasks"], "token_stats": {p: d.token_stats for p, d in sides.items()},
               "definitions": DEFINITIONS,
               "config": {**to_dict(cfg), "features": asdict(feature_config(cfg.catalog, data.source)),
                          "input_features": asdict(data.featurizer.config)}}
    if len(sides) > 1:
        metrics["enrichment_gain"] = enrichment_gain(variants)
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "histories.json", results["histories"])
    print(f"best tower on cold items: {best}; report {out_dir / 'metrics.json'}, plots ablation.png, projection.png")
    return metrics


def enrichment_gain(variants: dict) -> dict:
    """Per variant and split: enriched minus raw category_hit@10 (same items, split and metric code)."""
    gains = {}
    for name in variants:
        if name.startswith("raw: ") and f"enriched: {name[5:]}" in variants:
            raw, enriched = variants[name], variants[f"enriched: {name[5:]}"]
            gains[name[5:]] = {split: round(enriched[split]["category_hit@10"] - raw[split]["category_hit@10"], 4)
                               for split in SPLITS if split in raw}
    return gains


def main(argv: list[str] | None = None) -> dict:
    parser = stage_parser(__doc__.splitlines()[0], "configs/evaluate_item_towers.yaml")
    parser.add_argument("--catalog", help="catalog file (FPI styles csv/parquet, H&M articles, any CSV/parquet)")
    parser.add_argument("--items", help="or a canonical items parquet directory")
    parser.add_argument("--std-fields", help="comma-separated STD fields (default: the catalog's preset)")
    parser.add_argument("--re-fields", help="comma-separated RE fields")
    parser.add_argument("--hierarchy", help="comma-separated category levels, coarse to fine")
    parser.add_argument("--id-col", help="id column of a generic catalog")
    parser.add_argument("--title-col", help="title column of a generic catalog")
    parser.add_argument("--towers", help="comma-separated subset of concat,coarse_to_fine,unified")
    parser.add_argument("--enriched", help="an enrich run's items/: raw vs enriched on one split")
    parser.add_argument("--out", required=True, help="report directory")
    args = parser.parse_args(argv)
    overrides = {}
    split = lambda text: [v.strip() for v in text.split(",") if v.strip()]  # noqa: E731
    for key, value in (("catalog.catalog", args.catalog), ("catalog.items", args.items), ("enriched", args.enriched),
                       ("catalog.id_col", args.id_col), ("catalog.title_col", args.title_col)):
        if value:
            overrides[key] = value
    for key, value in (("catalog.std_fields", args.std_fields), ("catalog.re_fields", args.re_fields),
                       ("catalog.hierarchy", args.hierarchy), ("towers", args.towers)):
        if value:
            overrides[key] = split(value)
    cfg = stage_config(args, ItemTowerEvalConfig, overrides)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return run(cfg, out_dir)


if __name__ == "__main__":
    run_main(main)
