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
customer's purchases, price vs the customer's mean price and customer age; top 12, MostPop fill.

Writes ``out``/metrics.json ({"methods": {name: {"map@12", "recall@12"}}, "model_vs_repurchase"
(paired bootstrap CI of the per-customer AP difference), "counts", "candidates" (per source
target recall), "ranker", "user_tower_training", "config", "timings_s"}), ``out``/training_charts.png,
``out``/comparison.png and the tower's Ray Train run under ``out``/user_tower/.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.timing import timed
from recsys.artifacts import write_json
from recsys.config import ConfigError, load_config, parse_overrides, to_dict
from recsys.eval.next_purchase import (Catalogue, CustomerProfile, GroupAffinity, ItemTimeline, PurchaseStage,
                                       StageArrays, candidate_features, dedupe, evaluate_lists, fill, group_keys,
                                       last_day_split, most_popular, paired_bootstrap, recent_popular,
                                       repurchase_popular)
from recsys.models.user_tower import UserTowerConfig, encode_users, item_matrix, pad_right
from recsys.plots import grouped_bars, line_panels
from recsys.retrieval.candidates import CandidateSet, merge, top_n
from recsys.retrieval.dense import DenseSource
from recsys.retrieval.ranker import CandidateRanker, RankerConfig
from recsys.retrieval.transitions import TransitionConfig, TransitionKNN
from recsys.train_loops.user_tower import SCORE, UserTowerTrainConfig
from ray_jobs.cli import init_ray, run_main
from ray_jobs.trainer import ScalingSettings
from ray_jobs.user_tower_trainer import fit_user_tower, sequence_datasets


@dataclass
class SourcesConfig:
    repurchase: int = 100        # most recent own purchases proposed
    user_tower: int = 50
    itemknn: int = 50
    recent: int = 50             # items bought most in the recent_days before the target day
    recent_days: int = 7
    mostpop: int = 12
    chunk_size: int = 256        # customers scored at once


@dataclass
class EvaluateNextPurchaseConfig:
    data_dir: str = "../shared/data/hm_pse_subset"
    transactions: str = "transactions.parquet"
    customers: str | None = "customers.parquet"      # age (optional; missing file: no age feature)
    articles: str | None = "articles.parquet"        # product_type_no where known (optional)
    out: str = "artifacts/eval/next_purchase"
    k: int = 12
    recent_window: int = 30                          # RecentPop's window (days before the test day)
    expected_counts: dict[str, int] | None = None    # fail unless the split has exactly these counts
    ranker_stages: int = 6                           # validation stages the ranker learns from (1, 2, .. days earlier)
    user_tower: UserTowerConfig = field(default_factory=UserTowerConfig)
    train: UserTowerTrainConfig = field(default_factory=UserTowerTrainConfig)
    itemknn: TransitionConfig = field(default_factory=TransitionConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    ranker: RankerConfig = field(default_factory=lambda: RankerConfig(kind="gbdt", k=12))
    bootstrap: int = 10_000
    seed: int = 0
    scaling: ScalingSettings = field(default_factory=ScalingSettings)


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _read_inputs(cfg: EvaluateNextPurchaseConfig) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    root = Path(cfg.data_dir)
    path = root / cfg.transactions
    if not path.is_file():
        raise ConfigError(f"transactions file {path} does not exist (data_dir={cfg.data_dir})")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"article_id": str})
    frame["article_id"] = frame["article_id"].astype(str)
    frame["customer_id"] = frame["customer_id"].astype(str)
    customers = _optional(root / cfg.customers) if cfg.customers else None
    articles = _optional(root / cfg.articles) if cfg.articles else None
    return (frame, pd.read_parquet(customers) if customers else None,
            pd.read_parquet(articles, columns=["article_id", "product_type_no"]) if articles else None)


def _run_name(cfg: EvaluateNextPurchaseConfig, frame: pd.DataFrame) -> str:
    """The tower resumes only a run with the same tower settings on the same log."""
    settings = {key: to_dict(cfg)[key] for key in ("user_tower", "train", "seed")}
    stamp = f"{len(frame)}:{pd.util.hash_pandas_object(frame[['customer_id', 'article_id']], index=False).sum()}"
    digest = hashlib.sha1((json.dumps(settings, sort_keys=True, default=str) + stamp).encode()).hexdigest()
    return f"user_tower-{digest[:10]}"


def tower_inputs(stages: dict[str, PurchaseStage], arrays: dict[str, StageArrays], targets: dict[str, list[set[int]]],
                 seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """What the tower may learn from: each test-stage customer's purchases before the earliest target
    day any ranker stage gives them (the ranker's labels must be news to the tower), and, to pick the
    checkpoint, one article of that earliest target day. Returns (training sequences, validation
    histories, validation targets)."""
    test = arrays["test"]
    earliest = np.full(test.n_customers, np.iinfo(np.int64).max)
    first_target: dict[int, set[int]] = {}
    for name in [s for s in stages if s != "test"]:        # val1, val2, ...: deeper stages come later
        rows = np.searchsorted(stages["test"].customers, stages[name].customers)
        earlier = arrays[name].ref_day < earliest[rows]
        earliest[rows[earlier]] = arrays[name].ref_day[earlier]
        first_target.update({int(r): targets[name][i] for i, r in enumerate(rows) if earlier[i]})
    keep = test.day < earliest[test.customer]
    kept = StageArrays(test.customer[keep], test.item[keep], test.day[keep], test.price[keep], test.ref_day,
                       test.n_customers)
    sequences = kept.sequences()
    rng = np.random.default_rng(seed)
    rows = [r for r in sorted(first_target) if first_target[r] and len(sequences[r])]
    return (sequences, [sequences[r] for r in rows],
            np.array([rng.choice(sorted(first_target[r])) for r in rows], dtype=np.int64))


def train_tower(cfg: EvaluateNextPurchaseConfig, stages: dict[str, PurchaseStage], arrays: dict[str, StageArrays],
                targets: dict[str, list[set[int]]], n_items: int, out_dir: Path, name: str
                ) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Trains the tower on Ray Train (see :func:`tower_inputs`); returns user vectors per stage (each
    customer's purchases before that stage's target day) and item vectors."""
    train_sequences, val_histories, val_targets = tower_inputs(stages, arrays, targets, cfg.seed)
    datasets = sequence_datasets(train_sequences, val_histories, val_targets, n_items, cfg.user_tower.max_len)
    print(f"user tower: {len(datasets['train']['items'])} training windows, {len(val_targets)} validation customers")
    model, fitted = fit_user_tower(datasets, n_items, cfg.user_tower, cfg.train, cfg.scaling, out_dir / "user_tower",
                                   name)
    users = {stage: encode_users(model, {"items": pad_right(arrays[stage].sequences(), cfg.user_tower.max_len)})
             for stage in stages}
    return users, item_matrix(model), fitted


def stage_candidates(cfg: EvaluateNextPurchaseConfig, arrays: StageArrays, n_items: int, user_vectors: np.ndarray,
                     item_vectors: np.ndarray, customer_age: np.ndarray | None, groups: dict[str, np.ndarray],
                     progress: str) -> tuple[CandidateSet, np.ndarray]:
    """Merged candidates with features for every customer of a stage, and the stage's MostPop list."""
    from tqdm.auto import tqdm

    src = cfg.sources
    sequences = arrays.sequences()
    repurchase = arrays.repurchase(n_items)
    tower = DenseSource(user_vectors, item_vectors)
    transitions = TransitionKNN.fit(sequences, n_items, cfg.itemknn)
    timeline = ItemTimeline.fit(arrays, n_items)
    profile = CustomerProfile.fit(arrays, customer_age)
    affinities = {name: GroupAffinity(arrays, codes) for name, codes in groups.items()}
    mostpop = most_popular(arrays, n_items, max(src.mostpop, cfg.k))
    recent_cache: dict[int, np.ndarray] = {}
    parts = []
    for start in tqdm(range(0, arrays.n_customers, src.chunk_size), desc=progress, mininterval=2):
        rows = np.arange(start, min(start + src.chunk_size, arrays.n_customers))
        histories = [sequences[r] for r in rows]
        raw = {"repurchase": repurchase.scores(histories, rows), "user_tower": tower.scores(histories, rows),
               "itemknn": transitions.scores(histories)}
        proposals = {"repurchase": top_n(raw["repurchase"], src.repurchase, None, raw["repurchase"] > 0),
                     "user_tower": top_n(raw["user_tower"], src.user_tower),
                     "itemknn": top_n(transitions.tie_break(raw["itemknn"], np.zeros(n_items)), src.itemknn, None,
                                      raw["itemknn"] > 0)}
        recent = []
        for ref in arrays.ref_day[rows]:
            if ref not in recent_cache:
                recent_cache[ref] = timeline.top_recent(int(ref), src.recent_days, src.recent)
            recent.append(recent_cache[ref])
        width = max(1, max(len(r) for r in recent))
        recent_items = np.full((len(rows), width), -1, np.int64)
        for local, items in enumerate(recent):
            recent_items[local, :len(items)] = items
        proposals["recent"] = (recent_items, -np.tile(np.arange(width, dtype=np.float32), (len(rows), 1)))
        top = mostpop[:src.mostpop]
        proposals["mostpop"] = (np.tile(top, (len(rows), 1)), -np.tile(np.arange(len(top), dtype=np.float32),
                                                                       (len(rows), 1)))
        part = merge(rows, proposals, max(src.repurchase, src.user_tower, src.itemknn, src.recent), n_items)
        local = part.row - start
        part.features = candidate_features(part.row, part.item, arrays, repurchase, timeline, profile, affinities)
        part.features["user_tower_score"] = raw["user_tower"][local, part.item].astype(np.float32)
        part.features["itemknn_score"] = np.log1p(raw["itemknn"][local, part.item]).astype(np.float32)
        last_basket = transitions.scores(histories, weights=[1.0])
        part.features["itemknn_last_score"] = np.log1p(last_basket[local, part.item]).astype(np.float32)
        for name in ("user_tower", "itemknn", "recent"):
            part.features[f"{name}_rank"] = part.rank[name].astype(np.float32)
        part.features["n_sources"] = np.sum([part.proposed[n] for n in proposals], axis=0).astype(np.float32)
        parts.append(part)
    return CandidateSet.concat(parts), mostpop


def ranked_lists(candidates: CandidateSet, scores: np.ndarray, n_customers: int, mostpop: np.ndarray,
                 k: int) -> list[np.ndarray]:
    """Per customer, the candidates by ranker score (best first), cut at k, MostPop fill."""
    order = np.lexsort((candidates.item, -scores, candidates.row))
    rows, items = candidates.row[order], candidates.item[order]
    bounds = np.searchsorted(rows, np.arange(n_customers + 1))
    return [fill(items[bounds[u]:bounds[u + 1]][:k], mostpop, k) for u in range(n_customers)]


def _labels(candidates: CandidateSet, targets: list[set[int]]) -> np.ndarray:
    return np.array([item in targets[row] for row, item in zip(candidates.row, candidates.item)], dtype=np.int8)


def run(cfg: EvaluateNextPurchaseConfig) -> dict:
    out_dir = Path(cfg.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds, started = {}, time.perf_counter()
    with timed(seconds, "load_and_split"):
        raw, customers_table, articles_table = _read_inputs(cfg)
        frame = dedupe(raw)
        stages = {"test": last_day_split(frame)}
        previous = stages["test"]
        for depth in range(1, max(1, cfg.ranker_stages) + 1):     # val1 = one purchase day earlier, ...
            previous = last_day_split(previous.history)
            if not len(previous.customers):
                break
            stages[f"val{depth}"] = previous
        if "val1" not in stages:
            raise ConfigError(f"{cfg.data_dir}: no customer buys on 3 or more days: nothing to train a ranker on")
        catalogue = Catalogue.of(stages["test"].history)
        arrays = {s: StageArrays.of(stages[s], catalogue) for s in stages}
        index_targets = {s: [{int(i) for i in catalogue.index(sorted(t)) if i >= 0} for t in stages[s].targets]
                         for s in stages}
    val_names = [s for s in stages if s != "test"]
    counts = {"rows_read": int(len(raw)), "rows_after_dedupe": int(len(frame)), "items_ranked": catalogue.n_items,
              "test": stages["test"].counts, "validation": stages["val1"].counts,
              "ranker_stages": {s: stages[s].counts for s in val_names}}
    print(f"E2 on {cfg.data_dir}: {len(raw)} rows, {len(frame)} after dedupe; test: {stages['test'].counts}; "
          f"validation (one purchase day earlier): {stages['val1'].counts}; ranking {catalogue.n_items} articles")
    if cfg.expected_counts is not None and stages["test"].counts != cfg.expected_counts:
        raise ConfigError(f"E2 split counts {stages['test'].counts} differ from expected_counts {cfg.expected_counts}")

    customer_age = {}
    if customers_table is not None and "age" in customers_table:
        ages = customers_table.assign(customer_id=customers_table["customer_id"].astype(str)).drop_duplicates(
            "customer_id").set_index("customer_id")["age"]
        customer_age = {s: pd.to_numeric(ages.reindex(stages[s].customers), errors="coerce").to_numpy() for s in stages}
    mapping = ({"product_type": dict(zip(articles_table["article_id"].astype(str), articles_table["product_type_no"]))}
               if articles_table is not None else {})
    groups = group_keys(catalogue.item_ids, mapping)

    k, test = cfg.k, arrays["test"]
    with timed(seconds, "baselines"):
        mostpop = most_popular(test, catalogue.n_items, k)
        lists = {"MostPop": [mostpop] * test.n_customers,
                 f"RecentPop ({cfg.recent_window}d)": recent_popular(test, catalogue.n_items, k, cfg.recent_window),
                 "Repurchase + MostPop": repurchase_popular(test.repurchase(catalogue.n_items), mostpop, k)}

    init_ray()
    with timed(seconds, "user_tower_train"):
        user_vectors, item_vectors, fitted = train_tower(cfg, stages, arrays, index_targets, catalogue.n_items,
                                                         out_dir, _run_name(cfg, frame))
    line_panels(fitted["history"], {"loss": ["train_loss"], "validation (one article of the validation day)":
                                    [SCORE, "val_ndcg@10", "val_mrr"]},
                out_dir / "training_charts.png", "user tower: next-purchase InfoNCE")

    candidates, stage_mostpop, labels = {}, {}, {}
    for stage in stages:
        with timed(seconds, f"candidates_{stage}"):
            candidates[stage], stage_mostpop[stage] = stage_candidates(
                cfg, arrays[stage], catalogue.n_items, user_vectors[stage], item_vectors,
                customer_age.get(stage), groups, f"{stage} candidates")
            labels[stage] = _labels(candidates[stage], index_targets[stage])
    names = sorted(candidates["test"].features)
    matrix = lambda s: np.stack([candidates[s].features[n] for n in names], axis=1)
    with timed(seconds, "ranker"):
        # every validation stage's customers are their own groups (row offsets keep them apart)
        offsets = np.cumsum([0] + [len(stages[s].customers) for s in val_names])
        ranker = CandidateRanker(cfg.ranker, names).fit(
            np.concatenate([matrix(s) for s in val_names]), np.concatenate([labels[s] for s in val_names]),
            np.concatenate([candidates[s].row + offset for s, offset in zip(val_names, offsets)]))
        scores = {s: ranker.predict(matrix(s)) for s in ("val1", "test")}
    lists["two-stage recommender (model)"] = ranked_lists(candidates["test"], scores["test"], test.n_customers,
                                                          stage_mostpop["test"], k)
    tower_top = top_n(user_vectors["test"] @ item_vectors.T, k)[0]
    lists["user tower alone"] = [fill(row[row >= 0], mostpop, k) for row in tower_top]

    evaluated = {name: evaluate_lists(value, stages["test"].targets, catalogue.item_ids, k)
                 for name, value in lists.items()}
    metrics = {name: {f"map@{k}": round(v[f"map@{k}"], 4), f"recall@{k}": round(v[f"recall@{k}"], 4)}
               for name, v in evaluated.items()}
    comparison = paired_bootstrap(evaluated["two-stage recommender (model)"]["per_customer_ap"],
                                  evaluated["Repurchase + MostPop"]["per_customer_ap"], cfg.bootstrap, cfg.seed)
    val_model = evaluate_lists(ranked_lists(candidates["val1"], scores["val1"], arrays["val1"].n_customers,
                                            stage_mostpop["val1"], k), stages["val1"].targets, catalogue.item_ids, k)
    val_rep_lists = repurchase_popular(arrays["val1"].repurchase(catalogue.n_items), stage_mostpop["val1"], k)
    val_rep = evaluate_lists(val_rep_lists, stages["val1"].targets, catalogue.item_ids, k)

    def recall_of(stage, mask=None):
        hit = labels[stage].astype(bool) if mask is None else labels[stage].astype(bool) & mask
        found = np.bincount(candidates[stage].row[hit], minlength=len(stages[stage].customers))
        sizes = np.array([max(len(t), 1) for t in stages[stage].targets])
        return round(float(np.mean(found / sizes)), 4)

    report = {"methods": metrics, "model_vs_repurchase": {k2: (round(v, 5) if isinstance(v, float) else v)
                                                         for k2, v in comparison.items()},
              "counts": counts,
              "candidates": {"per_customer": {s: round(len(candidates[s]) / len(stages[s].customers), 1)
                                              for s in stages},
                             "target_recall": {s: {"merged": recall_of(s),
                                                   **{n: recall_of(s, candidates[s].proposed[n])
                                                      for n in candidates[s].proposed}} for s in stages},
                             "positives": {s: int(labels[s].sum()) for s in stages}},
              f"validation_stage_val1_map@{k}": {
                  "model (in-sample: the ranker is trained on these targets)": round(val_model[f"map@{k}"], 4),
                  "Repurchase + MostPop": round(val_rep[f"map@{k}"], 4)},
              "ranker": ranker.summary(),
              "user_tower_training": {"best_epoch": fitted["best_metrics"]["epoch"],
                                      "epochs_run": len(fitted["history"]),
                                      f"best_{SCORE}": round(fitted["best_metrics"][SCORE], 4),
                                      "checkpoint": fitted["best_model"]},
              "protocol": ("E2: dedupe (customer, article, day); test = articles of each customer's last purchase day, "
                           "training = rows strictly before it; customers with both; ranking every article seen in "
                           f"training; MAP@{k} (Kaggle) and Recall@{k}. Ranker and tower trained on the validation "
                           "stage (each customer's last training day as target)."),
              "config": to_dict(cfg)}
    with timed(seconds, "write"):
        grouped_bars(metrics, out_dir / "comparison.png",
                     f"E2 next purchase, {len(stages['test'].customers)} customers, "
                     f"{catalogue.n_items} articles ranked")
    report["timings_s"] = {**seconds, "total": round(time.perf_counter() - started, 1)}
    write_json(out_dir / "metrics.json", report)
    print(f"{'':34s} {'MAP@' + str(k):>8s} {'Recall@' + str(k):>10s}")
    for name, values in metrics.items():
        print(f"{name:34s} {values[f'map@{k}']:8.4f} {values[f'recall@{k}']:10.4f}")
    print(f"model - Repurchase+MostPop AP: {comparison['mean_difference']:+.4f} "
          f"(95% CI {comparison['ci_low']:+.4f} .. {comparison['ci_high']:+.4f})")
    print(f"timings (s): {report['timings_s']}")
    print(f"report: {out_dir / 'metrics.json'}; plot {out_dir / 'comparison.png'}")
    return report


def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/evaluate_next_purchase.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    return run(load_config(args.config, EvaluateNextPurchaseConfig, parse_overrides(args.overrides)))


if __name__ == "__main__":
    run_main(main)
