"""Rerankers over retrieved candidate lists: the recipe shared by ``ray_jobs.evaluate_rerankers`` and
``ray_jobs.train_users``: the config, the item side (index, tokens, categories, diversity vectors),
the variants to train, their datasets (:func:`reranker_inputs`) and the MMR sweep. Fitting on Ray
Train: ``ray_jobs.common.reranker_trainer.fit_reranker``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from recsys.data.candidate_lists import (CandidateLists, DenseScaler, ItemIndex, build_lists, generic_feature_config,
                                         item_categories, item_tokens, popularity, token_bag_vectors)
from recsys.data.item_features import ItemFeaturizer
from recsys.data.vectors import column_matrix
from recsys.eval.rerankers import order_scores
from recsys.models.item_towers import FEATURIZER_FILE, ITEM_VECTORS_FILE
from recsys.models.rerankers import DeepFMConfig, ListwiseConfig, mmr_lists
from recsys.train_loops.rerankers import DeepFMTrainConfig, ListwiseTrainConfig
from recsys.train_loops.scaling import ScalingSettings


@dataclass
class RerankEvalConfig:
    """The rerankers' models, training and evaluation settings."""
    scaling: ScalingSettings = field(default_factory=ScalingSettings)  # Ray Train workers of the stage's fits
    deepfm: DeepFMConfig = field(default_factory=DeepFMConfig)
    deepfm_train: DeepFMTrainConfig = field(default_factory=DeepFMTrainConfig)
    listwise: ListwiseConfig = field(default_factory=ListwiseConfig)
    listwise_train: ListwiseTrainConfig = field(default_factory=ListwiseTrainConfig)
    # More listwise models differing only in diversity_weight (0.0 = the relevance-only control).
    listwise_diversity_sweep: list[float] = field(default_factory=lambda: [0.0, 3.0])
    mmr_lambdas: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.7, 0.5, 0.3, 0.1])
    max_history: int = 20          # most recent history items a user is described by
    # ranker_score / its rank as features. Off by default: evaluate_seq trains its ranker on the
    # "val" rows themselves, so on "val" (our training lists) ranker_score has seen the labels and
    # a reranker would learn to trust it far more than it deserves on "test".
    ranker_features: bool = False
    val_fraction: float = 0.2      # of the users with "val" lists: checkpoint selection
    seed: int = 42
    k: int = 10


@dataclass
class ItemSide:
    index: ItemIndex
    tokens: np.ndarray             # (N+1, T)
    category: np.ndarray           # (N+1,)
    n_categories: int
    vocab_size: int
    vectors: np.ndarray | None     # (N+1, d) for diversity / MMR / cosine feature
    vectors_source: str
    tower_state: str | None


def _tower_items(tower_dir: Path) -> pa.Table | None:
    """The canonical items the tower was trained on, from its resolved config (None if unreadable)."""
    from recsys.data.item_catalog import CatalogConfig, load_items

    try:
        catalog = yaml.safe_load((tower_dir / "config.yaml").read_text())["catalog"]
        return load_items(CatalogConfig(**catalog))[0]
    except Exception as exc:  # the tower's inputs may have moved; tokens are optional
        print(f"warning: cannot reload the item tower's catalog ({exc}); pass --items for item tokens")
        return None


def read_items(path: str) -> pa.Table:
    """A canonical item table (parquet file or directory with item_id + category_path), or a catalog
    file that ``recsys.data.catalogs.load_item_catalog`` recognises (Fashion Product Images, H&M)."""
    from recsys.data.catalogs import load_item_catalog

    if Path(path).is_dir() or "category_path" in pq.read_schema(path).names:
        return pq.read_table(path)
    result = load_item_catalog(path)
    print(f"catalog {path}: {result.records_read} rows read = {result.table.num_rows} items + "
          f"{result.quarantine.num_rows} quarantined")
    return result.table


def item_side(candidates: pd.DataFrame, sequences: pd.DataFrame, tower_dir: Path | None,
              items_path: str | None) -> ItemSide:
    """Item index over everything known, tokens/categories from the items, diversity vectors."""
    items = read_items(items_path) if items_path else (_tower_items(tower_dir) if tower_dir else None)
    tower_vectors = pq.read_table(tower_dir / ITEM_VECTORS_FILE) if tower_dir else None
    known = [candidates["item_id"].unique()]
    for column in ("history_val", "history_test"):
        known.append(np.concatenate([np.asarray(h, dtype=str) for h in sequences[column] if h is not None] or [[]]))
    known += [sequences["target_val"].astype(str), sequences["target_test"].astype(str)]
    if items is not None:
        known.insert(0, items.column("item_id").to_pylist())
    if tower_vectors is not None:
        known.insert(0, tower_vectors.column("item_id").to_pylist())
    index = ItemIndex(np.concatenate([np.asarray(k, dtype=str) for k in known]))

    featurizer = None
    if tower_dir:
        featurizer = ItemFeaturizer.load(tower_dir / FEATURIZER_FILE)
    elif items is not None:
        featurizer = ItemFeaturizer.fit(items, generic_feature_config(items))
    if items is not None:
        tokens = item_tokens(featurizer.transform(items), items.column("item_id").to_pylist(), index)
        category, names = item_categories(items.column("item_id").to_pylist(),
                                          items.column("category").to_pylist() if "category" in items.column_names
                                          else [None] * items.num_rows, index)
    else:
        tokens = np.zeros((index.size, 1), dtype=np.int64)
        category, names = (item_categories(tower_vectors.column("item_id").to_pylist(),
                                           tower_vectors.column("category").to_pylist(), index)
                           if tower_vectors is not None else (np.zeros(index.size, dtype=np.int64), []))
    vectors, source = None, "DeepFM item vectors (item id + tokens + category embeddings; no tower, no items)"
    if tower_vectors is not None:
        vectors = np.zeros((index.size, len(tower_vectors.column("vector")[0])), dtype=np.float32)
        vectors[index.index(tower_vectors.column("item_id").to_pylist())] = column_matrix(tower_vectors, "vector")
        vectors[0] = 0.0
        source = f"item tower {tower_dir} (vector, 128-d adapter output)"
    elif items is not None:
        vectors, source = token_bag_vectors(tokens), "attribute-token bags (STD+RE), random projection to 128-d"
    return ItemSide(index, tokens, category, len(names), featurizer.vocab_size if featurizer else 2, vectors,
                    source, str(tower_dir / "checkpoints" / "tower.pt") if tower_dir else None)


def variants(cfg: RerankEvalConfig) -> dict[str, tuple[str, object, object]]:
    """{report name: (model kind, model config, train config)}: DeepFM, the configured listwise
    model and one listwise model per extra diversity weight."""
    out = {"DeepFM": ("deepfm", cfg.deepfm, cfg.deepfm_train),
           "listwise": ("listwise", cfg.listwise, cfg.listwise_train)}
    for weight in cfg.listwise_diversity_sweep:
        if weight != cfg.listwise_train.diversity_weight:
            out[f"listwise (diversity {weight:g})"] = ("listwise", cfg.listwise,
                                                      replace(cfg.listwise_train, diversity_weight=weight))
    return out


@dataclass
class RerankerInputs:
    lists: dict[str, CandidateLists]   # "val" (training lists) and "test"
    train: np.ndarray                  # rows of the "val" lists trained on
    select: np.ndarray                 # rows of the "val" lists selecting checkpoints
    scaler: DenseScaler
    datasets: dict[str, dict[str, np.ndarray]]   # the loops' train / val / items


def reranker_inputs(cfg: RerankEvalConfig, candidates: pd.DataFrame, sequences: pd.DataFrame, side: ItemSide,
                    score_columns: list[str], ranker_features: bool) -> RerankerInputs:
    """The "val" and "test" lists, a seeded share of the "val" users for checkpoint selection, the
    dense scaler fitted on the training lists and the loops' datasets."""
    lists = {split: build_lists(candidates, sequences, split, side.index, score_columns, side.vectors,
                                cfg.max_history, ranker_features) for split in ("val", "test")}
    val = lists["val"]
    order = np.random.default_rng(cfg.seed).permutation(len(val))
    n_select = max(1, int(round(len(order) * cfg.val_fraction)))
    select, train = np.sort(order[:n_select]), np.sort(order[n_select:])
    scaler = DenseScaler.fit(val.dense[train], val.mask[train])
    items_rows = {"index": np.arange(side.index.size), "tokens": side.tokens, "category": side.category,
                  "popularity": np.log1p(popularity(sequences["history_val"].map(
                      lambda h: [] if h is None else list(h)), side.index)).astype(np.float32)}
    if side.vectors is not None:
        items_rows["vector"] = side.vectors.astype(np.float32)
    datasets = {"train": val.rows(train, scaler), "val": val.rows(select, scaler), "items": items_rows}
    return RerankerInputs(lists, train, select, scaler, datasets)


def mmr_in_chunks(relevance: np.ndarray, items: np.ndarray, mask: np.ndarray, vectors: np.ndarray, lam: float,
                  k: int, chunk: int = 2048) -> np.ndarray:
    """:func:`mmr_lists` over blocks of users (candidate vectors are (users, L, d))."""
    return np.concatenate([mmr_lists(relevance[s:s + chunk], vectors[items[s:s + chunk]], mask[s:s + chunk], lam, k)
                           for s in range(0, len(items), chunk)])


def mmr_sweep(relevance: np.ndarray, lists, vectors: np.ndarray, lambdas: list[float], report, k: int) -> list[dict]:
    """One report per lambda: MMR picks the top k over ``relevance``, the rest keep its order."""
    depth = min(k, int(lists.mask.sum(axis=1).min()))
    return [report(order_scores(mmr_in_chunks(relevance, lists.items, lists.mask, vectors, lam, depth), relevance,
                                lists.mask)) | {"lambda": lam} for lam in lambdas]


def rerank_metrics(cfg: RerankEvalConfig, base: dict[str, np.ndarray], inputs: RerankerInputs, side: ItemSide,
                   fitted: dict, timings: dict, tower_dir: Path | None) -> tuple[dict, dict, dict]:
    """metrics.json of the reranker evaluation from each method's (U, L) test scores ``base``:
    (methods, MMR curves, the whole report)."""
    from recsys.config import to_dict
    from recsys.eval.rerankers import rerank_report

    val_lists, test, train, select = inputs.lists["val"], inputs.lists["test"], inputs.train, inputs.select
    names = val_lists.feature_names
    k, vectors = cfg.k, side.vectors
    n_catalog = len(side.index)
    has_vector = np.abs(vectors).sum(axis=1) > 0

    def report(s):
        return rerank_report(s, test.items, test.label, test.mask, vectors, n_catalog, k)

    methods = {name: report(s) for name, s in base.items()}
    # MMR over the input order, DeepFM and the relevance-only listwise model when there is one.
    listwise_plain = next((n for n, (kind, _, t) in variants(cfg).items() if kind == "listwise"
                           and t.diversity_weight == 0), "listwise")
    curves = {}
    for source in ("input order", "DeepFM", listwise_plain):
        relevance = test.ranker_score if source == "input order" else base[source]
        curves[f"MMR over {source}"] = mmr_sweep(relevance, test, vectors, cfg.mmr_lambdas, report, k)
        methods |= {f"MMR({source}) λ={c['lambda']:g}": {m: v for m, v in c.items() if m != "lambda"}
                    for c in curves[f"MMR over {source}"]}

    metrics = {
        "methods": methods, "mmr": curves,
        "n_users": {"train": int(len(train)), "checkpoint_selection": int(len(select)), "test": int(len(test))},
        "candidate_recall": {"val": float(val_lists.target_listed.mean()), "test": float(test.target_listed.mean())},
        "list_length": {"max": int(test.items.shape[1]), "mean": float(test.mask.sum(1).mean())},
        "n_catalog": n_catalog, "features": names, "diversity_vectors": side.vectors_source,
        "test_candidates_with_vector": float(has_vector[test.items[test.mask]].mean()),
        "item_tower": str(tower_dir) if tower_dir else None, "train_seconds": timings,
        "training": {name: {"best_epoch": int(f["best_metrics"]["epoch"]),
                            "best_val_ndcg@10": float(f["best_metrics"]["val_ndcg@10"]),
                            "best_model": f["best_model"], "history": f["history"]} for name, f in fitted.items()},
        "definitions": {
            "hr@10 / ndcg@10 / map@10 / mrr": "per test user, one target; a target absent from the user's candidate "
                                              "list is a miss for every method (the ceiling is candidate_recall)",
            "hr@10_listed": "hr@10 among users whose target is in their list",
            "ild@10": "mean pairwise 1 - cosine of the top-10 items' vectors (diversity_vectors)",
            "coverage@10": "share of the n_catalog known items in at least one top-10 list",
            "MMR(x) λ": "maximal marginal relevance over x's scores (min-max scaled per list) for the top 10, "
                        "the rest in x's order; λ = 1 is x's own order"},
        "config": to_dict(cfg)}
    return methods, curves, metrics


def served_order(model, candidates: pd.DataFrame, sequences: pd.DataFrame, side: ItemSide, score_columns: list[str],
                 inputs: RerankerInputs, max_history: int) -> dict:
    """What Serve orders a user's candidates by (``recsys.retrieval.ordering.pick_order``): the
    reranker, or rank fusion (the app's fallback) when fusion does better on the selection lists
    (validation users the reranker was not trained on; its best epoch was chosen on them)."""
    from recsys.eval.rerankers import fusion_target_ranks, list_target_ranks
    from recsys.metrics.ranking import hit_rate_at_k, ndcg_at_k
    from recsys.models.rerankers import score_lists
    from recsys.retrieval.ordering import FUSION, LEARNED, pick_order

    val, select = inputs.lists["val"], inputs.select
    ranks = {LEARNED: list_target_ranks(score_lists(model, val.rows(select, scaler=inputs.scaler)), val.label[select],
                                        val.mask[select])}
    if "rank_fusion" not in candidates.columns:
        return {"order": LEARNED, "reason": "no rank fusion column to compare with"}
    ranks[FUSION] = fusion_target_ranks(candidates, sequences, side.index, side.vectors, score_columns, max_history,
                                        split="val", users=val.users[select])
    metrics = {name: {"hr@10": round(hit_rate_at_k(r, 10), 4), "ndcg@10": round(ndcg_at_k(r, 10), 4)}
               for name, r in ranks.items()}
    order, reason = pick_order(metrics, 10, f"selection lists ({len(select)} users)")
    return {"order": order, "reason": reason, "selection": metrics}
