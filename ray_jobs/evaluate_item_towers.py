"""Item-tower ablation on any catalog: towers x (no adapter | adapter, random batches | adapter,
hierarchical sampler), warm and cold-start items, in one run.

    python -m ray_jobs.evaluate_item_towers --catalog styles_full.parquet --out artifacts/eval/item_towers_fpi
    python -m ray_jobs.evaluate_item_towers --catalog my_items.csv --hierarchy dept,class,subclass \
        --std-fields colour,gender --re-fields material,fit --id-col sku --out DIR

Writes DIR/metrics.json ({"variants": {name: {"warm": {...}, "cold": {...}}}, "n_items", "n_cold",
"config"}), DIR/ablation.png, DIR/projection.png, and per tower the Ray Train runs and checkpoints.
Variant names: ``<tower>`` = stage 1 (SimCSE) 512-d vectors; ``<tower>+adapter(random)`` and
``<tower>+adapter(hierarchical)`` = stage 2 128-d vectors, triplet loss with a hard-negative miner,
batches uniform or from the hierarchical sampler.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

from recsys.artifacts import write_json
from recsys.config import ConfigError, to_dict
from recsys.eval.item_space import ablation_chart, projection_plot
from recsys.data.item_catalog import feature_config, load_tower_items
from recsys.models.item_towers import TOWERS
from recsys.train_loops.item_tower import ItemTowerEvalConfig
from ray_jobs.common.cli import init_ray, run_main, stage_config, stage_parser
from ray_jobs.common.item_tower_trainer import fit_metric_adapter, fit_tower, warm_cold_report

REPORTED = ("category_hit@10", "sibling_confusion@10", "same_vs_sibling_gap", "ild@10", "coverage@10")
DEFINITIONS = {"category_hit@10": "share of the 10 nearest items with the same finest category",
               "sibling_confusion@10": "share of the 10 nearest items from a sibling category "
                                       "(same parent, different finest category)",
               "same_vs_sibling_gap": "mean cosine of same-category pairs minus sibling pairs",
               "ild@10": "mean pairwise 1 - Jaccard of attribute tokens within each top-10 list",
               "coverage@10": "share of the catalog appearing in at least one top-10 list",
               "warm": "queries trained on (sampled); cold: held out of all training"}


def run(cfg: ItemTowerEvalConfig, out_dir: Path) -> dict:
    unknown = [t for t in cfg.towers if t not in TOWERS]
    if unknown:
        raise ConfigError(f"towers: unknown {unknown}; known {sorted(TOWERS)}")
    started = time.perf_counter()
    data = load_tower_items(cfg.catalog, cfg.split, cfg.tower.title_mode, out_dir / "cache")
    source = data.source
    print(f"{len(data.item_ids)} items ({source}): train {len(data.train)}, val {len(data.val)}, cold "
          f"{len(data.cold)}; tokens per item {data.token_stats}; featurized in {time.perf_counter() - started:.0f}s")
    init_ray()
    variants, timings, histories, vectors_by_variant = {}, {}, {}, {}
    for tower in cfg.towers:
        started = time.perf_counter()
        fitted = fit_tower(data, tower, cfg.tower, cfg.simcse, cfg.scaling, out_dir / tower)
        timings[tower] = round(time.perf_counter() - started, 1)
        histories[tower] = fitted["history"]
        variants[tower] = warm_cold_report(data, fitted["vectors"], cfg.k, cfg.split)
        vectors_by_variant[tower] = fitted["vectors"]
        for sampler in cfg.samplers:
            name = f"{tower}+adapter({sampler})"
            started = time.perf_counter()
            adapted = fit_metric_adapter(data, fitted["vectors"], replace(cfg.adapter, sampler=sampler),
                                         cfg.scaling, out_dir / tower, f"adapter_{sampler}")
            timings[name] = round(time.perf_counter() - started, 1)
            histories[name] = adapted["history"]
            variants[name] = warm_cold_report(data, adapted["vectors"], cfg.k, cfg.split)
            vectors_by_variant[name] = adapted["vectors"]
        _print_rows(variants, [tower] + [f"{tower}+adapter({s})" for s in cfg.samplers])

    best = max(variants, key=lambda v: variants[v]["cold"]["category_hit@10"] if "cold" in variants[v]
               else variants[v]["warm"]["category_hit@10"])
    ablation_chart(variants, REPORTED[:3], out_dir / "ablation.png",
                   f"Item-tower ablation, {len(data.item_ids)} items ({source}); k={cfg.k}")
    projection_plot(vectors_by_variant[best], data.categories, data.cold, out_dir / "projection.png",
                    f"{best}: item space (t-SNE of a sample), coloured by category; x = cold-start items",
                    seed=cfg.split.seed)
    metrics = {"variants": variants, "n_items": int(len(data.item_ids)), "n_cold": int(len(data.cold)),
               "n_train": int(len(data.train)), "n_val": int(len(data.val)), "best_variant_cold": best,
               "train_seconds": timings, "token_stats": data.token_stats,
               "definitions": DEFINITIONS,
               "config": {**to_dict(cfg), "features": asdict(feature_config(cfg.catalog, source))}}
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "histories.json", histories)
    print(f"best on cold items: {best}; report {out_dir / 'metrics.json'}, plots ablation.png, projection.png")
    return metrics


def _print_rows(variants: dict, names: list[str]) -> None:
    for name in names:
        for split, report in variants[name].items():
            print(f"  {name:34s} {split:4s} " + "  ".join(f"{k} {report[k]:.3f}" for k in REPORTED), flush=True)


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
    parser.add_argument("--out", required=True, help="report directory")
    args = parser.parse_args(argv)
    overrides = {}
    split = lambda text: [v.strip() for v in text.split(",") if v.strip()]  # noqa: E731
    for key, value in (("catalog.catalog", args.catalog), ("catalog.items", args.items),
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
