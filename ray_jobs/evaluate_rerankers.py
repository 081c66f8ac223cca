"""Rerank retrieved candidate lists: DeepFM, a listwise transformer and MMR against the input order.

    python -m ray_jobs.evaluate_rerankers --candidates DIR [--item-tower RUN_DIR] [--items PATH] --out OUT

DIR is a retrieval output in the contract of ``recsys.data.candidate_lists`` (candidates.parquet +
sequences.parquet, e.g. from ``ray_jobs.evaluate_seq``). The rerankers train on the "val" lists
(a share of those users selects checkpoints) and every method is evaluated on the "test" lists.
``--item-tower`` (a ``train_item_tower`` run) gives the token table the rerankers start from, the
featurizer, and the 128-d item vectors used for diversity, MMR and the user-item cosine feature;
``--items`` a canonical item table or an FPI / H&M catalog file (default with a tower: the tower's
own catalog). Without a tower,
diversity is measured on the items' attribute-token bags, or without items on DeepFM's item vectors.

Writes OUT/metrics.json (``methods``: one report per method; ``mmr``: the lambda sweeps; training
histories; definitions), OUT/tradeoff.png (NDCG@10 against ILD@10), OUT/comparison.png,
OUT/training_charts.png and per model OUT/<model>/ with its Ray Train run and ``checkpoints/best_model.pt``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ray_jobs.common.cli import init_ray, run_main, stage_config, stage_parser
from ray_jobs.common.reranker_trainer import fit_reranker
from recsys.artifacts import write_json
from recsys.config import ConfigError
from recsys.data.candidate_lists import read_contract
from recsys.eval.report import print_metric_table
from recsys.eval.rerankers import tradeoff_plot, training_curves
from recsys.models.rerankers import load_reranker, score_lists
from recsys.plots import grouped_bars
from recsys.ranking.rerankers import RerankEvalConfig, item_side, rerank_metrics, reranker_inputs, variants

SHOWN = ("hr@10", "ndcg@10", "map@10", "ild@10", "coverage@10")


def run(cfg: RerankEvalConfig, candidates_dir: Path, out_dir: Path, tower_dir: Path | None = None,
        items_path: str | None = None) -> dict:
    candidates, sequences, score_columns = read_contract(candidates_dir)
    side = item_side(candidates, sequences, tower_dir, items_path)
    inputs = reranker_inputs(cfg, candidates, sequences, side, score_columns, cfg.ranker_features)
    val_lists, test, train, select = inputs.lists["val"], inputs.lists["test"], inputs.train, inputs.select
    print(f"evaluate_rerankers: {len(val_lists)} val lists ({len(train)} train, {len(select)} checkpoint "
          f"selection), {len(test)} test lists of up to {test.items.shape[1]} candidates; {len(side.index)} items; "
          f"sources {score_columns}; test candidate recall {test.target_listed.mean():.3f}; "
          f"diversity vectors: {side.vectors_source}")
    init_ray()
    fitted, timings = {}, {}
    # Lists are in input order (ranker_score descending, ties in file order): rank by position, so
    # equal ranker scores are never resolved in the target's favour.
    base = {"input order": -np.broadcast_to(np.arange(test.items.shape[1], dtype=np.float64), test.items.shape)}
    test_rows = test.rows(scaler=inputs.scaler)
    for name, (kind, model_cfg, train_cfg) in variants(cfg).items():
        started = time.perf_counter()
        fitted[name] = fit_reranker(name, kind, model_cfg, train_cfg, cfg, side, inputs.datasets, inputs.scaler,
                                    val_lists.feature_names, out_dir, cfg.scaling)
        timings[name] = round(time.perf_counter() - started, 1)
        model = load_reranker(fitted[name]["best_model"])
        base[name] = score_lists(model, test_rows)
        if name == "DeepFM" and side.vectors is None:
            side.vectors = model.embedder.item_vectors().detach().numpy()

    methods, curves, metrics = rerank_metrics(cfg, base, inputs, side, fitted, timings, tower_dir)
    write_json(out_dir / "metrics.json", metrics)
    title = (f"{len(test)} test users, lists of ≤{test.items.shape[1]}; "
             f"candidate recall {test.target_listed.mean():.2f}")
    tradeoff_plot(curves, {name: methods[name] for name in base}, out_dir / "tradeoff.png",
                  f"Accuracy vs diversity: MMR λ sweeps and rerankers\n{title}")
    middle = min(cfg.mmr_lambdas, key=lambda lam: abs(lam - 0.5))
    shown = list(base) + [f"MMR(DeepFM) λ={middle:g}"]
    grouped_bars({name: {m: methods[name][m] for m in SHOWN} for name in shown}, out_dir / "comparison.png",
                 f"Rerankers on test lists ({title})")
    training_curves({name: f["history"] for name, f in fitted.items()}, out_dir / "training_charts.png",
                    f"Reranker training: {len(train)} training lists, {len(select)} for checkpoint selection")
    print(f"test lists, per user (a target missing from its list is a miss for every method; ceiling = "
          f"candidate recall {test.target_listed.mean():.3f}):")
    print_metric_table(methods, SHOWN, name_width=30, digits=3)
    print(f"report {out_dir / 'metrics.json'}, plots tradeoff.png, comparison.png")
    return metrics


def main(argv: list[str] | None = None) -> dict:
    parser = stage_parser(__doc__.splitlines()[0], "configs/rerankers.yaml")
    parser.add_argument("--candidates", required=True,
                        help="retrieval output dir (candidates.parquet, sequences.parquet)")
    parser.add_argument("--item-tower", help="a train_item_tower run directory")
    parser.add_argument("--items", help="canonical item table (parquet file or directory) or an FPI / H&M catalog file")
    parser.add_argument("--out", required=True, help="report directory")
    args = parser.parse_args(argv)
    cfg = stage_config(args, RerankEvalConfig)
    tower = Path(args.item_tower).resolve() if args.item_tower else None
    if tower and not (tower / "checkpoints" / "featurizer.json").is_file():
        raise ConfigError(f"--item-tower {tower}: no checkpoints/featurizer.json (not a train_item_tower run)")
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return run(cfg, Path(args.candidates), out_dir, tower, args.items)


if __name__ == "__main__":
    run_main(main)
