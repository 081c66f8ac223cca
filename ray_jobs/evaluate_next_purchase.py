"""Protocol E2 (next purchase day on H&M): the two-stage recommender beside MostPop, RecentPop and
Repurchase + MostPop, in one run with the same metric code (MAP@12, Kaggle definition; Recall@12).

    python -m ray_jobs.evaluate_next_purchase [--config configs/evaluate_next_purchase.yaml] [--set key=value ...]

Split (``recsys.eval.next_purchase``): rows deduplicated on (customer, article, day); per customer
the test target is the set of articles of their last purchase day, the history every row before
it; customers with both. The ranked catalogue is every article of that history. The same split
applied once more to the history gives validation stage val1 (each customer's last history day
is its target), again to val1's history val2, ... (``ranker_stages``, default 6): the ranker
learns from all of them (~150 positives per stage; one stage alone was too few), the user tower
from each customer's purchases before the earliest of those target days. Neither sees a test day.

Model: candidates per customer from the customer's own purchases (repurchase), the user tower
(trained on Ray Train on purchase sequences before the validation days), ItemKNN transitions, the
items bought most in the days before the customer's target day, and MostPop; a gradient-boosted
ranker (``recsys.retrieval.ranker``) orders them on repurchase recency/frequency, recent item
popularity, item age, tower and transition scores, same product code / product type as the
customer's purchases, price vs the customer's mean price and customer age; top 12, MostPop fill. Heavy steps (the articles' TF-IDF, every stage's candidates side
by side, the ranker's fit) are Ray tasks declaring ``tasks`` (``ray_jobs.common.tasks``).

Writes ``out``/metrics.json ({"methods": {name: {"map@12", "recall@12"}}, "model_vs_repurchase"
(paired bootstrap CI of the per-customer AP difference), "counts", "candidates" (per source
target recall), "ranker", "user_tower_training", "config", "timings_s"}), ``out``/training_charts.png,
``out``/comparison.png and the tower's Ray Train run under ``out``/user_tower/.
"""
from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from ray_jobs.common.cli import init_ray, load_stage_config, run_main
from ray_jobs.common.tasks import run_task, run_tasks
from ray_jobs.common.user_tower_trainer import fit_user_tower
from recsys.artifacts import write_json
from recsys.config import ConfigError
from recsys.eval.next_purchase import (HOLDOUT, Catalogue, NextPurchaseConfig, PurchaseStage, StageArrays,
                                       article_vectors, customer_and_item_groups, dedupe, e2_report, fill,
                                       fit_stage_ranker, labelled_candidates, most_popular, print_e2_summary,
                                       purchase_stages, ranked_lists, read_inputs, recent_popular,
                                       repurchase_popular, run_name, tower_inputs)
from recsys.models.user_tower import encode_users, item_matrix, pad_right
from recsys.plots import grouped_bars, line_panels
from recsys.retrieval.candidates import top_n
from recsys.timing import timed
from recsys.train_loops.user_tower import SCORE, sequence_datasets


def train_tower(cfg: NextPurchaseConfig, stages: dict[str, PurchaseStage], arrays: dict[str, StageArrays],
                targets: dict[str, list[set[int]]], item_ids: np.ndarray, out_dir: Path, name: str, seconds: dict,
                placements: dict) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Trains the tower on Ray Train (see :func:`tower_inputs`); returns user vectors per stage (each
    customer's purchases before that stage's target day) and item vectors."""
    vectors, attributes_info = run_task("e2.content", partial(article_vectors, cfg, item_ids), cfg.tasks.content,
                                        "tasks.content", seconds, placements)
    n_items = len(item_ids)
    train_sequences, val_histories, val_targets = tower_inputs(stages, arrays, targets, cfg.seed)
    datasets = sequence_datasets(train_sequences, val_histories, val_targets, n_items, cfg.user_tower.max_len,
                                 item_vectors=vectors)
    print(f"user tower: {len(datasets['train']['items'])} training windows, {len(val_targets)} validation customers; "
          f"item side: IDs{' + article vectors' if vectors is not None else ''} (articles: {attributes_info})")
    tower = replace(cfg.user_tower, item_vector_dim=0 if vectors is None else int(vectors.shape[1]))
    model, fitted = fit_user_tower(datasets, n_items, tower, cfg.train, cfg.scaling, out_dir / "user_tower", name)
    users = {stage: encode_users(model, {"items": pad_right(arrays[stage].sequences(), cfg.user_tower.max_len)})
             for stage in stages}
    return users, item_matrix(model), fitted


def run(cfg: NextPurchaseConfig) -> dict:
    out_dir, seconds, placements, started = Path(cfg.out).resolve(), {}, {}, time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with timed(seconds, "load_and_split"):
        raw, customers_table, articles_table = read_inputs(cfg)
        frame = dedupe(raw)
        stages = purchase_stages(frame, cfg.ranker_stages, cfg.data_dir, cfg.holdout)
        catalogue = Catalogue.of(stages["test"].history)
        arrays = {s: StageArrays.of(stages[s], catalogue) for s in stages}
        index_targets = {s: [{int(i) for i in catalogue.index(sorted(t)) if i >= 0} for t in stages[s].targets]
                         for s in stages}
    counts = {"rows_read": int(len(raw)), "rows_after_dedupe": int(len(frame)), "items_ranked": catalogue.n_items,
              "test": stages["test"].counts, "validation": stages["val1"].counts,
              "ranker_stages": {s: stages[s].counts for s in stages if s != "test"}}
    print(f"E2 on {cfg.data_dir} (reported split: {HOLDOUT[cfg.holdout]}): {len(raw)} rows, {len(frame)} after dedupe; "
          f"test: {stages['test'].counts}; "
          f"validation (one purchase day earlier): {stages['val1'].counts}; ranking {catalogue.n_items} articles")
    if cfg.expected_counts is not None and cfg.holdout == "test" and stages["test"].counts != cfg.expected_counts:
        raise ConfigError(f"E2 split counts {stages['test'].counts} differ from expected_counts {cfg.expected_counts}")
    customer_age, groups = customer_and_item_groups(customers_table, articles_table, stages, catalogue)
    k, test = cfg.k, arrays["test"]
    with timed(seconds, "baselines"):
        mostpop = most_popular(test, catalogue.n_items, k)
        lists = {"MostPop": [mostpop] * test.n_customers,
                 f"RecentPop ({cfg.recent_window}d)": recent_popular(test, catalogue.n_items, k, cfg.recent_window),
                 "Repurchase + MostPop": repurchase_popular(test.repurchase(catalogue.n_items), mostpop, k)}

    init_ray()
    with timed(seconds, "user_tower_train"):
        user_vectors, item_vectors, fitted = train_tower(cfg, stages, arrays, index_targets, catalogue.item_ids,
                                                         out_dir, run_name(cfg, frame), seconds, placements)
    line_panels(fitted["history"], {"loss": ["train_loss"], "validation (one article of the validation day)":
                                    [SCORE, "val_ndcg@10", "val_mrr"]},
                out_dir / "training_charts.png", "user tower: next-purchase InfoNCE")

    # every stage's candidates as Ray tasks, side by side; then the ranker's fit as one more
    built = run_tasks({f"e2.candidates_{s}": partial(labelled_candidates, cfg, arrays[s], catalogue.n_items,
                                                     user_vectors[s], item_vectors, customer_age.get(s), groups,
                                                     index_targets[s]) for s in stages},
                      cfg.tasks.candidates, "tasks.candidates", seconds, placements, "candidates", "candidates")
    candidates, stage_mostpop, labels = ({s: built[f"e2.candidates_{s}"][i] for s in stages} for i in (0, 1, 2))
    sizes = {s: len(stages[s].customers) for s in stages}
    ranker, scores = run_task("e2.ranker", partial(fit_stage_ranker, cfg.ranker, candidates, labels, sizes),
                              cfg.tasks.ranker, "tasks.ranker", seconds, placements)
    lists["two-stage recommender (model)"] = ranked_lists(candidates["test"], scores["test"], test.n_customers,
                                                          stage_mostpop["test"], k)
    tower_top = top_n(user_vectors["test"] @ item_vectors.T, k)[0]
    lists["user tower alone"] = [fill(row[row >= 0], mostpop, k) for row in tower_top]

    report, metrics, comparison = e2_report(cfg, stages, arrays, catalogue, lists, candidates, labels, scores,
                                            stage_mostpop, counts, ranker, fitted)
    with timed(seconds, "write"):
        grouped_bars(metrics, out_dir / "comparison.png",
                     f"E2 next purchase, {len(stages['test'].customers)} customers, "
                     f"{catalogue.n_items} articles ranked")
    report["ray_tasks"] = placements  # where each heavy step ran (not in the driver), with what resources
    report["timings_s"] = {**seconds, "total": round(time.perf_counter() - started, 1)}
    write_json(out_dir / "metrics.json", report)
    print_e2_summary(report, metrics, comparison, k, out_dir)
    return report


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], NextPurchaseConfig,
                                 "configs/evaluate_next_purchase.yaml", argv))


if __name__ == "__main__":
    run_main(main)
