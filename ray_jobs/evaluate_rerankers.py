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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from recsys.artifacts import write_json
from recsys.config import ConfigError, config_hash, to_dict
from recsys.data.candidate_lists import (DenseScaler, ItemIndex, absent_dense, build_lists, generic_feature_config,
                                         item_categories, item_tokens, popularity, read_contract, token_bag_vectors)
from recsys.data.item_features import ItemFeaturizer
from recsys.eval.rerankers import order_scores, rerank_report, tradeoff_plot, training_curves
from recsys.models.rerankers import DeepFMConfig, ListwiseConfig, mmr_lists
from recsys.plots import grouped_bars
from recsys.train_loops.rerankers import (DeepFMTrainConfig, ListwiseTrainConfig, LOOPS, load_reranker,
                                          score_lists)
from ray_jobs.cli import init_ray, run_main, stage_config, stage_parser
from ray_jobs.trainer import ScalingSettings, fit_torch

SHOWN = ("hr@10", "ndcg@10", "map@10", "ild@10", "coverage@10")


@dataclass
class RerankEvalConfig:
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
    scaling: ScalingSettings = field(default_factory=ScalingSettings)


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


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    return np.asarray(values.flatten(), dtype=np.float32).reshape(len(values), -1)


def _tower_items(tower_dir: Path) -> pa.Table | None:
    """The canonical items the tower was trained on, from its resolved config (None if unreadable)."""
    from ray_jobs.item_tower_trainer import CatalogConfig, load_items

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
    tower_vectors = pq.read_table(tower_dir / "item_vectors.parquet") if tower_dir else None
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
        featurizer = ItemFeaturizer.load(tower_dir / "checkpoints" / "featurizer.json")
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
        vectors[index.index(tower_vectors.column("item_id").to_pylist())] = _vectors(tower_vectors, "vector")
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


def fit_reranker(name: str, kind: str, model_cfg, train_cfg, cfg: RerankEvalConfig, side: ItemSide, datasets: dict,
                 scaler: DenseScaler, feature_names: list[str], out_dir: Path) -> dict:
    popularity_col = feature_names.index("popularity")
    loop_config = {"model": kind, "model_config": asdict(model_cfg), "train": asdict(train_cfg),
                   "vocab_size": side.vocab_size, "n_categories": side.n_categories, "n_dense": len(feature_names),
                   "init_tower": side.tower_state, "popularity_col": popularity_col,
                   "popularity_mean": float(scaler.mean[popularity_col]),
                   "popularity_std": float(scaler.std[popularity_col]),
                   "absent_dense_z": scaler.transform(absent_dense(feature_names)).tolist()}
    slug = "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())  # "listwise_diversity_0"
    # The config hash in the run name: Ray Train resumes a run of the same name, which must only
    # happen for the same settings.
    return fit_torch(LOOPS[kind], loop_config, datasets, cfg.scaling, out_dir / slug, f"{slug}-{config_hash(cfg)}",
                     "val_ndcg@10")


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


def run(cfg: RerankEvalConfig, candidates_dir: Path, out_dir: Path, tower_dir: Path | None = None,
        items_path: str | None = None) -> dict:
    candidates, sequences, score_columns = read_contract(candidates_dir)
    side = item_side(candidates, sequences, tower_dir, items_path)
    lists = {split: build_lists(candidates, sequences, split, side.index, score_columns, side.vectors,
                                cfg.max_history, cfg.ranker_features) for split in ("val", "test")}
    val_lists, test = lists["val"], lists["test"]
    names = val_lists.feature_names
    order = np.random.default_rng(cfg.seed).permutation(len(val_lists))
    n_select = max(1, int(round(len(order) * cfg.val_fraction)))
    select, train = np.sort(order[:n_select]), np.sort(order[n_select:])
    scaler = DenseScaler.fit(val_lists.dense[train], val_lists.mask[train])
    items_rows = {"index": np.arange(side.index.size), "tokens": side.tokens, "category": side.category,
                  "popularity": np.log1p(popularity(sequences["history_val"].map(
                      lambda h: [] if h is None else list(h)), side.index)).astype(np.float32)}
    if side.vectors is not None:
        items_rows["vector"] = side.vectors.astype(np.float32)
    print(f"evaluate_rerankers: {len(val_lists)} val lists ({len(train)} train, {len(select)} checkpoint "
          f"selection), {len(test)} test lists of up to {test.items.shape[1]} candidates; {len(side.index)} items; "
          f"sources {score_columns}; test candidate recall {test.target_listed.mean():.3f}; "
          f"diversity vectors: {side.vectors_source}")
    init_ray()
    fitted, timings = {}, {}
    # Lists are in input order (ranker_score descending, ties in file order): rank by position, so
    # equal ranker scores are never resolved in the target's favour.
    base = {"input order": -np.broadcast_to(np.arange(test.items.shape[1], dtype=np.float64), test.items.shape)}
    datasets = {"train": val_lists.rows(train, scaler), "val": val_lists.rows(select, scaler), "items": items_rows}
    test_rows = test.rows(scaler=scaler)
    for name, (kind, model_cfg, train_cfg) in variants(cfg).items():
        started = time.perf_counter()
        fitted[name] = fit_reranker(name, kind, model_cfg, train_cfg, cfg, side, datasets, scaler, names, out_dir)
        timings[name] = round(time.perf_counter() - started, 1)
        model = load_reranker(fitted[name]["best_model"])
        base[name] = score_lists(model, test_rows)
        if name == "DeepFM" and side.vectors is None:
            side.vectors = model.embedder.item_vectors().detach().numpy()

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
    for name, values in methods.items():
        print(f"  {name:28s} " + "  ".join(f"{m} {values[m]:.3f}" for m in SHOWN), flush=True)
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
