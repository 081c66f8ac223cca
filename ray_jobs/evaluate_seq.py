"""Protocol E3 (sequential next item, leave-last-out) on any interaction log: the user tower and the
full recommender (candidate sources merged and ordered by a learned ranker) beside the MostPop and
ItemKNN-transition baselines, all in one run with the same metric code.

    python -m ray_jobs.evaluate_seq --interactions PATH --user-col COL --item-col COL --order-col COL \
        [--items ITEMS] [--users USERS] --out DIR [--config configs/evaluate_seq.yaml] [--set key=value ...]

Protocol (EVAL.md E3): per user the items ordered by the order column (ties: file order); the last
is the test target, the second-to-last the validation target; users with >= 3 interactions are
evaluated; every item of the log is ranked, the user's history excluded; HR@10, NDCG@10, MRR.
With ``dedupe`` (default) rows repeating (user, item, timestamp) count once: H&M logs a row per
unit bought, and a second unit is not a next item.

Recipe: ``recsys.retrieval.e3`` (config, inputs, candidate sources from ``recsys.retrieval.sources``,
ranker, report). Sources: the user tower (trained on Ray Train on the validation stage's sequences,
checkpoint = best validation HR@10), ItemKNN on transitions, basket co-occurrence (a timestamp order
column with ties), item content (``--items``) and popularity, fitted per stage on what it may see;
the ranker learns from the validation stage's candidates and scores the test stage's. ``--items``
also trains the item tower (or ``item_vectors.path`` reuses an export); ``--users``: profile fields.

Writes DIR/metrics.json ({"model", "user_tower", "baselines": {"mostpop", "itemknn"}, "sources",
"comparison" (paired bootstrap of the model against each baseline), "n_users", "n_items", "config",
...timings, candidate recall, validation-stage numbers}), DIR/comparison.png,
DIR/candidates.parquet and DIR/sequences.parquet (the reranker contract, ``recsys.retrieval.export``),
DIR/training_charts.png and the tower's Ray Train run under DIR/user_tower/.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ray_jobs.common.cli import init_ray, run_main, stage_config, stage_parser
from recsys.train_loops.scaling import ScalingSettings
from ray_jobs.common.user_tower_trainer import fit_user_tower
from recsys.artifacts import write_json
from recsys.config import ConfigError, config_hash
from recsys.eval.sequential import MIN_INTERACTIONS, leave_last_out
from recsys.models.item_towers import read_item_vectors
from recsys.models.user_tower import encode_users, item_matrix
from recsys.plots import line_panels
from recsys.retrieval.e3 import (ItemVectorsConfig, SequentialEvalConfig, align_item_vectors,
                                 cold_target_content, content_vectors, e3_report, load_log, print_e3_summary,
                                 profile_columns, rank_candidates, resolved_tower, run_name, stage_sources,
                                 tower_vectors, user_arrays, write_e3_outputs)
from recsys.retrieval.recommender import run_stage
from recsys.timing import timed
from recsys.train_loops.user_tower import SCORE, tower_datasets


def item_vectors_for(cfg: ItemVectorsConfig, items_path: str | None, item_ids: np.ndarray, out_dir: Path,
                     scaling: ScalingSettings) -> tuple[np.ndarray | None, dict]:
    """(I, k) frozen item vectors in the log's item order: a train_item_tower export, or the item
    tower trained here on ``items_path`` (Ray Train), or none."""
    if cfg.path:
        return align_item_vectors(*read_item_vectors(cfg.path, cfg.column), item_ids, cfg.path)
    if not items_path:
        return None, {"source": "none (learned item-ID embeddings only)"}
    from ray_jobs.common.item_tower_trainer import fit_tower_and_adapter
    from recsys.data.item_catalog import CatalogConfig, load_tower_items

    catalog = CatalogConfig(**{**asdict(cfg.catalog), "catalog": items_path})
    data = load_tower_items(catalog, cfg.split, cfg.tower.title_mode, out_dir / "cache")
    root = out_dir / "item_tower" / config_hash(cfg)
    _, adapter = fit_tower_and_adapter(data, cfg.tower_name, cfg.tower, cfg.simcse, cfg.adapter, cfg.adapter_dim,
                                       scaling, root)
    return align_item_vectors(data.item_ids.astype(str), adapter["vectors"], item_ids, str(root))


def run(interactions: str, user_col: str, item_col: str, order_col: str, items: str | None, users: str | None,
        out: str, cfg: SequentialEvalConfig) -> dict:
    out_dir, seconds, started = Path(out).resolve(), {}, time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with timed(seconds, "load_and_split"):
        frame, load_info = load_log(interactions, user_col, item_col, order_col, cfg.dedupe)
        # equal timestamps of one user = one basket (a position order column has no baskets)
        baskets = frame["timestamp"].to_numpy() if frame["timestamp"].notna().all() else None
        split = leave_last_out(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), frame["position"].to_numpy(),
                               baskets=baskets)
        rows, stage_names, n_items = split.eval_rows, ("val", "test"), split.n_items
        history, target = {s: split.history(s) for s in stage_names}, {s: split.targets(s) for s in stage_names}
    if (n_users := len(rows)) == 0:
        raise ConfigError(f"{interactions}: no user with >= {MIN_INTERACTIONS} interactions")
    repeated = np.array([t in set(h.tolist()) for t, h in zip(target["test"], history["test"])], dtype=bool)
    print(f"E3 on {interactions}: {len(frame)} interactions ({load_info['duplicates_dropped']} repeated (user, item, "
          f"time) rows dropped, {load_info['quarantined']} quarantined), {len(split.user_ids)} users, {n_items} items; "
          f"evaluated users (>= {MIN_INTERACTIONS}): {n_users}; test targets already in the history: {repeated.mean():.1%}")
    init_ray()  # before the item tower's Ray Train fit, which would otherwise start Ray on its own terms
    with timed(seconds, "item_vectors"):
        vectors, vector_info = item_vectors_for(cfg.item_vectors, items, split.item_ids, out_dir, cfg.scaling)
    columns, profile_info = profile_columns(cfg.profile, users, user_col, split.user_ids)
    content, content_info = content_vectors(cfg, items, split.item_ids, vectors)
    user_item_vectors, vector_info["user_tower"] = tower_vectors(cfg, items, split.item_ids, vectors, content)
    tower_cfg = resolved_tower(cfg, user_item_vectors, columns, profile_info)
    print(f"item vectors: {vector_info}; content source: {content_info}; profile: {profile_info or 'none'}")
    with timed(seconds, "user_tower_train"):
        datasets = tower_datasets(split, tower_cfg.max_len, cfg.val_max_users, 0, columns, user_item_vectors)
        print(f"user tower: {len(datasets['train']['items'])} training windows, {len(datasets['val']['target'])} "
              f"validation users per epoch")
        stats = {"mean": profile_info["mean"], "std": profile_info["std"]} if "mean" in profile_info else None
        model, fitted = fit_user_tower(datasets, n_items, tower_cfg, cfg.train, cfg.scaling, out_dir / "user_tower",
                                       run_name(cfg, interactions, items, users), stats)
        item_vecs = item_matrix(model)
        user_vecs = {s: encode_users(model, user_arrays(history[s], rows, columns, tower_cfg.max_len))
                     for s in stage_names}
    line_panels(fitted["history"], {"loss": ["train_loss"], "learning rate": ["lr"],
                                    "validation (full ranking)": [SCORE, "val_ndcg@10", "val_mrr"]},
                out_dir / "training_charts.png", "user tower: next-item InfoNCE, validation targets")
    stages, sources = {}, {}
    for s in stage_names:
        with timed(seconds, f"candidates_{s}"):
            sources[s] = stage_sources(cfg, split, s, user_vecs[s], item_vecs, content)
            stages[s] = run_stage(sources[s], sources[s]["mostpop"], history[s], target[s], cfg.candidates,
                                  evaluate=True, progress=f"{s} candidates")
        print(f"{s}: {len(stages[s].candidates) / n_users:.0f} candidates per user; recall@"
              f"{cfg.candidates.n_per_source} per source {stages[s].recall}")
    ranking = rank_candidates(cfg, stages, sources, history, target, seconds)
    data = {"interactions": str(Path(interactions).resolve()), "n_interactions": int(len(frame)),
            "n_log_users": int(len(split.user_ids)), **load_info, "item_vectors": vector_info, "content": content_info,
            "profile": {k: v for k, v in profile_info.items() if k not in ("mean", "std")}}
    report = e3_report(cfg, split, stages, ranking, repeated, tower_cfg, fitted, data)
    report["cold_test_targets"] = cold_target_content(cfg, split, items, vectors, content, history["test"], target["test"],
                                                      sources["test"]["mostpop"], ranking.ranks["test"], stages["test"].ranks)
    with timed(seconds, "write"):
        write_e3_outputs(out_dir, split, stages, ranking.scores, report)
    report["timings_s"] = {**seconds, "total": round(time.perf_counter() - started, 1)}
    write_json(out_dir / "metrics.json", report)
    print_e3_summary(report, out_dir)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = stage_parser(__doc__.splitlines()[0], "configs/evaluate_seq.yaml")
    parser.add_argument("--interactions", required=True, help="interaction log (.parquet or .csv)")
    parser.add_argument("--user-col", default="user_id")
    parser.add_argument("--item-col", default="item_id")
    parser.add_argument("--order-col", default="timestamp", help="timestamp or position column")
    parser.add_argument("--items", default=None, help="item metadata for the item tower (catalog file)")
    parser.add_argument("--users", default=None, help="user profiles (fields named in profile.numeric/categorical)")
    parser.add_argument("--out", required=True, help="report directory")
    args = parser.parse_args(argv)
    cfg = stage_config(args, SequentialEvalConfig)
    return run(args.interactions, args.user_col, args.item_col, args.order_col, args.items, args.users, args.out, cfg)


if __name__ == "__main__":
    run_main(main)
