"""Users for the demo catalog: a synthetic interaction log over the embedded items (a stand-in, no
real customers exist offline), a user tower trained on it (Ray Train) and, optionally, a learned
reranker over the tower's candidate lists: what the Serve app's user endpoints load.

    python -m ray_jobs.train_users --config configs/train_users.yaml [--set embed_run=DIR ...]
    ray job submit -- python -m ray_jobs.train_users --config configs/train_users.yaml   # on a cluster (README, "On a cluster")
    (or the ``train_users`` step of ``ray_jobs.pipeline``)

Steps:
1. the log (``recsys.data.demo_users``): ``recsys.data.synthetic_interactions`` (fashion-like sequences: favourite categories,
   complementary items, Zipfian popularity) generated over as many items as the embed run holds,
   its categories mapped onto the demo's categories by size (largest onto largest), so a user's
   items cluster in a few K-Fashion categories. Per user a stand-in profile (``age``, seeded;
   ``style``: the most common style of the user's items) and a context text (the title of the
   user's first item, embedded with the embed run's title vectors, the MiniLM space the Serve
   app encodes context text in).
2. the user tower (``recsys.models.user_tower``, history + profile + context) on Ray Train,
   protocol E3 split (leave-last-out; checkpoint by validation HR@10).
3. candidate lists for the validation and test targets from the configured sources
   (``sources``: user tower, ItemKNN transitions, popularity; ``recsys.retrieval.sources``), written
   in the reranker contract (candidates.parquet, sequences.parquet).
4. ``reranker`` (deepfm | listwise | null): trained on the validation lists by the recipe of
   ``recsys.ranking.rerankers`` (as ``ray_jobs.evaluate_rerankers``), reported on the test lists
   against the user-tower order.

Writes ``<output_root>/<run>/``: interactions.parquet, users.parquet (user_id, history, age, style,
context), user_tower/ (checkpoints/best_model.pt, item_vectors.npy, user_model.json),
reranker/ (checkpoints/best_model.pt, item_vectors.npy, reranker.json), report.json, manifest.json.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ray_jobs.common.cli import init_ray, load_stage_config, run_main
from ray_jobs.common.reranker_trainer import fit_reranker
from ray_jobs.common.user_tower_trainer import fit_user_tower
from recsys.artifacts import latest_run, local_copy, location_of, new_run_dir, write_json, write_manifest
from recsys.config import ConfigError, config_hash
from recsys.data.candidate_lists import read_contract, write_reranker_files
from recsys.data.demo_users import (PROFILE_CATEGORICAL, PROFILE_NUMERIC, RERANKER_NAMES, STAND_IN,
                                    TrainUsersConfig, candidate_lists, demo_items, generate_log,
                                    title_vectors, user_columns, user_table, write_user_tower_files)
from recsys.eval.rerankers import fusion_target_ranks, list_target_ranks
from recsys.eval.sequential import leave_last_out
from recsys.metrics.ranking import hit_rate_at_k, ndcg_at_k
from recsys.models.rerankers import load_reranker, score_lists
from recsys.models.user_tower import zscore_stats
from recsys.ranking.rerankers import item_side, reranker_inputs, served_order, variants
from recsys.retrieval.user_model import RERANKER_DIR, USER_TOWER_DIR, USERS_FILE
from recsys.train_loops.user_tower import SCORE, tower_datasets


def train_reranker(cfg: TrainUsersConfig, run_dir: Path, items_dir: str) -> dict:
    """Train ``cfg.reranker`` on the validation lists (``recsys.ranking.rerankers``) and save what the
    Serve app needs to build the same features for one user at request time."""
    settings = cfg.rerankers
    candidates, sequences, score_columns = read_contract(run_dir)
    side = item_side(candidates, sequences, None, items_dir)
    inputs = reranker_inputs(settings, candidates, sequences, side, score_columns, ranker_features=False)
    val, test = inputs.lists["val"], inputs.lists["test"]
    name = RERANKER_NAMES[cfg.reranker]
    kind, model_cfg, train_cfg = variants(settings)[name]
    out_dir = run_dir / RERANKER_DIR
    fitted = fit_reranker(name, kind, model_cfg, train_cfg, settings, side, inputs.datasets, inputs.scaler,
                          val.feature_names, out_dir, cfg.scaling)
    model = load_reranker(fitted["best_model"])
    served = served_order(model, candidates, sequences, side, score_columns, inputs, settings.max_history)
    test_rows = test.rows(scaler=inputs.scaler)
    ranks = {"reranker": list_target_ranks(score_lists(model, test_rows), test.label, test.mask),
             "user tower order": list_target_ranks(np.where(test.mask, test.ranker_score, -np.inf), test.label,
                                                   test.mask)}
    if "rank_fusion" in candidates.columns:  # the untrained order Serve falls back to, ties in input order
        ranks["rank fusion order"] = fusion_target_ranks(candidates, sequences, side.index, side.vectors,
                                                         score_columns, settings.max_history)
    write_reranker_files(out_dir, kind, Path(fitted["best_model"]), list(side.index.ids), val.feature_names,
                         score_columns, inputs.scaler, settings.max_history, side.vectors, side.vectors_source,
                         served)
    return {"kind": kind, "best_val_ndcg@10": round(float(fitted["best_metrics"]["val_ndcg@10"]), 4),
            "served_order": served,
            "test": {name: {"hr@10": round(hit_rate_at_k(r, 10), 4), "ndcg@10": round(ndcg_at_k(r, 10), 4)}
                     for name, r in ranks.items()},
            "test_candidate_recall": round(float(test.target_listed.mean()), 4)}


def run(cfg: TrainUsersConfig) -> dict:
    started = time.perf_counter()
    embed_run = (local_copy(cfg.embed_run) if cfg.embed_run else latest_run(cfg.embed_root)).resolve()
    items, items_dir = demo_items(embed_run)
    if len(items) < 10:
        raise ConfigError(f"{embed_run}: only {len(items)} embedded items; users need a catalog of at least 10")
    run_dir = new_run_dir(cfg.output_root, replace(cfg, embed_run=str(embed_run)))
    log = generate_log(items, cfg.log)
    users = user_table(log, items, cfg.log.seed)
    log.to_parquet(run_dir / "interactions.parquet", index=False)
    users.to_parquet(run_dir / USERS_FILE, index=False)
    print(f"[users] {STAND_IN}: {len(log)} interactions of {len(users)} users over "
          f"{log['item_id'].nunique()} of {len(items)} demo items")

    split = leave_last_out(log["user_id"].to_numpy(), log["item_id"].to_numpy(), log["timestamp"].to_numpy())
    text, text_model = title_vectors(embed_run)
    context_dim = len(next(iter(text.values()))) if text else 0
    columns, vocab = user_columns(users, split.user_ids, text, context_dim or 1)
    if not context_dim:
        columns.pop("context")
    tower_cfg = replace(cfg.user_tower, context_dim=context_dim, profile_numeric=PROFILE_NUMERIC,
                        profile_categorical=PROFILE_CATEGORICAL, profile_cardinalities=[len(vocab["style"]) + 1],
                        item_vector_dim=0)
    mean, std = zscore_stats(columns["profile_numeric"])
    seconds = {"log": round(time.perf_counter() - started, 1)}
    init_ray()
    model, fitted = fit_user_tower(tower_datasets(split, tower_cfg.max_len, cfg.val_max_users, 0, columns),
                                   split.n_items, tower_cfg, cfg.train, cfg.scaling, run_dir / USER_TOWER_DIR,
                                   f"user_tower-{config_hash(cfg)}", {"mean": mean, "std": std})
    write_user_tower_files(run_dir / USER_TOWER_DIR, model, Path(fitted["best_model"]), split.item_ids.tolist(),
                           vocab["style"], text_model)
    seconds["user_tower"] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    recall = candidate_lists(split, model, columns, cfg, run_dir)
    seconds["candidates"] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    report = {"note": STAND_IN, "users": len(users), "interactions": len(log), "items_with_interactions": split.n_items,
              "catalog_items": len(items), "evaluated_users": len(split.eval_rows),
              "user_tower": {"best_epoch": int(fitted["best_metrics"]["epoch"]),
                             f"best_{SCORE}": round(float(fitted["best_metrics"][SCORE]), 4)},
              "candidate_recall": recall}
    if cfg.reranker:
        report["reranker"] = train_reranker(cfg, run_dir, items_dir)
        seconds["reranker"] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    report["seconds"] = {**seconds, "total": round(time.perf_counter() - started, 1)}
    write_json(run_dir / "report.json", report)
    write_manifest(run_dir, "train_users", {"embed_run": str(embed_run), "items": items_dir},
                   {"users": str(run_dir / USERS_FILE), "user_tower": str(run_dir / USER_TOWER_DIR),
                    "reranker": str(run_dir / RERANKER_DIR) if cfg.reranker else ""})
    line = f"user tower val HR@10 {report['user_tower'][f'best_{SCORE}']:.3f}"
    if cfg.reranker:
        test = report["reranker"]["test"]
        line += (f"; {cfg.reranker} test NDCG@10 {test['reranker']['ndcg@10']:.3f} vs user-tower order "
                 f"{test['user tower order']['ndcg@10']:.3f}, rank fusion {test['rank fusion order']['ndcg@10']:.3f}; "
                 f"served: {report['reranker']['served_order']['order']}")
    print(f"[users] {line} ({report['seconds']['total']} s) -> {run_dir}")
    return {**report, "run_dir": location_of(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TrainUsersConfig, "configs/train_users.yaml", argv))


if __name__ == "__main__":
    run_main(main)
