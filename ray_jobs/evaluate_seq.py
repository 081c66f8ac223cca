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
Heavy steps (TF-IDF, each stage's candidates side by side, the ranker, the cold targets) are Ray
tasks declaring ``tasks`` (``ray_jobs.common.tasks``): on a cluster they run on worker nodes.

Writes DIR/metrics.json (model, user_tower, baselines, sources, paired-bootstrap comparison, config,
timings, candidate recall, validation-stage numbers), DIR/comparison.png, DIR/candidates.parquet and
DIR/sequences.parquet (the reranker contract), DIR/training_charts.png, the tower's run in DIR/user_tower/.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from ray_jobs.common.cli import init_ray, run_main, stage_config, stage_parser
from ray_jobs.common.tasks import run_task, run_tasks
from ray_jobs.common.item_tower_trainer import item_vectors_for
from ray_jobs.common.user_tower_trainer import fit_user_tower
from recsys.artifacts import write_json
from recsys.config import ConfigError
from recsys.eval.sequential import MIN_INTERACTIONS, leave_last_out
from recsys.models.user_tower import encode_users, item_matrix
from recsys.plots import line_panels
from recsys.retrieval.e3 import (SequentialEvalConfig, cold_target_content, e3_report, item_content, load_log,
                                 print_e3_summary, profile_columns, rank_candidates, resolved_tower, run_name,
                                 stage_candidates, user_arrays, write_e3_outputs)
from recsys.timing import timed
from recsys.train_loops.user_tower import SCORE, tower_datasets


def candidates(cfg: SequentialEvalConfig, split, user_vecs: dict, item_vecs: np.ndarray, content, history: dict,
               target: dict, seconds: dict, placements: dict) -> tuple[dict, dict]:
    """Each stage's popularity source and candidates: the stages side by side, as Ray tasks."""
    built = run_tasks({f"e3.candidates_{s}": partial(stage_candidates, cfg, split, s, user_vecs[s], item_vecs, content,
                                                     history[s], target[s]) for s in history},
                      cfg.tasks.candidates, "tasks.candidates", seconds, placements, timing_key="candidates")
    popularity, stages = ({s: built[f"e3.candidates_{s}"][i] for s in history} for i in (0, 1))
    for s in history:
        print(f"{s}: {len(stages[s].candidates) / len(history[s]):.0f} candidates per user; recall@"
              f"{cfg.candidates.n_per_source} per source {stages[s].recall}")
    return popularity, stages


def run(interactions: str, user_col: str, item_col: str, order_col: str, items: str | None, users: str | None,
        out: str, cfg: SequentialEvalConfig) -> dict:
    out_dir, seconds, placements, started = Path(out).resolve(), {}, {}, time.perf_counter()
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
    content, content_info, user_item_vectors, vector_info["user_tower"] = run_task(
        "e3.content", partial(item_content, cfg, items, split.item_ids, vectors), cfg.tasks.content, "tasks.content",
        seconds, placements)
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
    popularity, stages = candidates(cfg, split, user_vecs, item_vecs, content, history, target, seconds, placements)
    ranking = run_task("e3.ranker", partial(rank_candidates, cfg, stages, popularity, history, target), cfg.tasks.ranker,
                       "tasks.ranker", seconds, placements)
    seconds.update(ranking.seconds)
    data = {"interactions": str(Path(interactions).resolve()), "n_interactions": int(len(frame)),
            "n_log_users": int(len(split.user_ids)), **load_info, "item_vectors": vector_info, "content": content_info,
            "profile": {k: v for k, v in profile_info.items() if k not in ("mean", "std")}}
    report = e3_report(cfg, split, stages, ranking, repeated, tower_cfg, fitted, data)
    report["cold_test_targets"] = run_task("e3.cold_targets", partial(
        cold_target_content, cfg, split, items, vectors, content, history["test"], target["test"],
        popularity["test"], ranking.ranks["test"], stages["test"].ranks), cfg.tasks.candidates,
        "tasks.candidates", seconds, placements)
    report["ray_tasks"] = placements  # where each heavy step ran (not in the driver), with what resources
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
