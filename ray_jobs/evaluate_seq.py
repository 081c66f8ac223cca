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

Candidate sources (``recsys.retrieval``): the user tower (dense retrieval), ItemKNN on transitions,
basket co-occurrence (when the order column is a timestamp with ties: a user's rows at one time
are one basket), item content (with ``--items``: TF-IDF of the catalog's attributes, or the item
tower's vectors) and popularity. Stages: the validation stage sees each user's items before the
validation target (and learns from those); the test stage sees the items before the test target.
The user tower is trained on Ray Train on the validation stage's sequences (checkpoint = best
validation HR@10). Sources are fitted per stage; the ranker is trained on the validation stage's
candidates (label: the validation target) and scores the test stage's candidates. ``--items``:
item metadata for the content source and the item tower (trained here, or ``item_vectors.path``
reuses a train_item_tower export), whose frozen vectors join the tower's learned item-ID
embeddings. ``--users``: profile fields named in ``profile`` (numeric z-scored, categorical embedded).

Writes DIR/metrics.json ({"model", "user_tower", "baselines": {"mostpop", "itemknn"}, "sources",
"comparison" (paired bootstrap of the model against each baseline), "n_users", "n_items", "config",
...timings, candidate recall, validation-stage numbers}), DIR/comparison.png,
DIR/candidates.parquet and DIR/sequences.parquet (the reranker contract, ``recsys.retrieval.export``),
DIR/training_charts.png and the tower's Ray Train run under DIR/user_tower/.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.timing import timed
from recsys.artifacts import write_json
from recsys.config import ConfigError, config_hash, to_dict
from recsys.data.interactions import load_interaction_log
from recsys.data.result import read_table_file
from recsys.eval.sequential import MIN_INTERACTIONS, SequenceSplit, leave_last_out, paired_bootstrap
from recsys.metrics.ranking import rank_summary
from recsys.models.item_towers import ItemTowerConfig
from recsys.models.user_tower import UserTowerConfig, encode_users, item_matrix, pad_right, zscore_stats
from recsys.plots import grouped_bars, line_panels
from recsys.retrieval.baskets import BasketConfig, BasketKNN
from recsys.retrieval.content import ContentConfig, ContentSource, attribute_vectors
from recsys.retrieval.dense import DenseSource
from recsys.retrieval.export import write_candidates, write_sequences
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.ranker import CandidateRanker, RankerConfig
from recsys.retrieval.recommender import CandidateConfig, recommender_ranks, run_stage
from recsys.retrieval.transitions import TransitionConfig, TransitionKNN
from recsys.train_loops.item_tower import AdapterConfig, SimCSEConfig
from recsys.train_loops.user_tower import SCORE, UserTowerTrainConfig, tower_datasets
from ray_jobs.cli import init_ray, run_main, stage_config, stage_parser
from ray_jobs.item_tower_trainer import CatalogConfig, SplitConfig
from ray_jobs.user_tower_trainer import fit_user_tower
from ray_jobs.trainer import ScalingSettings

METRICS = ("hr@10", "ndcg@10", "mrr")


@dataclass
class ItemVectorsConfig:
    path: str | None = None            # reuse an item_vectors.parquet (train_item_tower); else trained from --items
    column: str = "vector"
    catalog: CatalogConfig = field(default_factory=CatalogConfig)   # --items sets catalog.catalog
    tower_name: str = "unified"
    tower: ItemTowerConfig = field(default_factory=ItemTowerConfig)
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    adapter_dim: int = 128
    split: SplitConfig = field(default_factory=lambda: SplitConfig(cold_fraction=0.0))


@dataclass
class ProfileConfig:
    user_col: str | None = None        # id column of --users; None: the log's --user-col
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)


@dataclass
class EvaluateSeqConfig:
    dedupe: bool = True
    k: int = 10
    user_tower: UserTowerConfig = field(default_factory=UserTowerConfig)
    train: UserTowerTrainConfig = field(default_factory=UserTowerTrainConfig)
    val_max_users: int | None = 5000   # validation users ranked every epoch (checkpoint selection)
    itemknn: TransitionConfig = field(default_factory=TransitionConfig)
    baskets: BasketConfig = field(default_factory=BasketConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    bootstrap_samples: int = 2000      # paired bootstrap of the model against each baseline
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    item_vectors: ItemVectorsConfig = field(default_factory=ItemVectorsConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)


def _short(summary: dict) -> dict:
    return {key: round(summary[key], 4) for key in METRICS}


def load_log(path: str, user_col: str, item_col: str, order_col: str, dedupe: bool) -> tuple[pd.DataFrame, dict]:
    result = load_interaction_log(path, user_col, item_col, order_col)
    frame = result.table.select(["user_id", "item_id", "timestamp", "position"]).to_pandas()
    info = {"rows_read": result.records_read, "quarantined": result.quarantine.num_rows, "duplicates_dropped": 0}
    if dedupe and frame["timestamp"].notna().any():
        repeated = frame.duplicated(["user_id", "item_id", "timestamp"], keep="first")
        info["duplicates_dropped"] = int(repeated.sum())
        frame = frame[~repeated]
    return frame, info


def item_vectors_for(cfg: ItemVectorsConfig, items_path: str | None, item_ids: np.ndarray, out_dir: Path,
                     scaling: ScalingSettings) -> tuple[np.ndarray | None, dict]:
    """(I, k) frozen item vectors in the log's item order (zeros where the catalog has no row)."""
    if cfg.path:
        table = pq.read_table(cfg.path, columns=["item_id", cfg.column])
        ids, vectors = np.asarray(table.column("item_id").to_pylist(), dtype=str), np.stack(
            table.column(cfg.column).to_numpy(zero_copy_only=False))
        source = cfg.path
    elif items_path:
        from ray_jobs.item_tower_trainer import feature_config, fit_metric_adapter, fit_tower, load_items, prepare_items

        catalog = CatalogConfig(**{**asdict(cfg.catalog), "catalog": items_path})
        table, kind = load_items(catalog)
        data = prepare_items(table, feature_config(catalog, kind), cfg.split, kind,
                             out_dir / "cache" if cfg.tower.title_mode == "vector" else None)
        root = out_dir / "item_tower" / config_hash(cfg)
        tower = fit_tower(data, cfg.tower_name, cfg.tower, cfg.simcse, scaling, root / "stage1")
        adapter = fit_metric_adapter(data, tower["vectors"], cfg.adapter, scaling, root / "stage2",
                                     f"adapter_{cfg.adapter.sampler}", cfg.adapter_dim)
        ids, vectors, source = data.item_ids.astype(str), adapter["vectors"], str(root)
    else:
        return None, {"source": "none (learned item-ID embeddings only)"}
    where = {item: row for row, item in enumerate(ids)}
    out = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    known = np.array([where.get(item, -1) for item in item_ids])
    out[known >= 0] = vectors[known[known >= 0]]
    return out, {"source": source, "dim": int(vectors.shape[1]), "coverage": round(float((known >= 0).mean()), 4)}


def profile_columns(cfg: ProfileConfig, users_path: str | None, user_col: str, user_ids: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], dict]:
    """Per-user profile arrays in the split's user order, and the fields' sizes/statistics."""
    if not users_path or not (cfg.numeric or cfg.categorical):
        return {}, {}
    id_col = cfg.user_col or user_col
    frame = read_table_file(users_path, [id_col, *cfg.numeric, *cfg.categorical], "a users table")
    ids = frame[id_col].astype(str).str.strip()
    frame = frame.assign(_id=ids).drop_duplicates("_id").set_index("_id").reindex(user_ids)
    columns, info = {}, {"numeric": cfg.numeric, "categorical": cfg.categorical, "cardinalities": []}
    if cfg.numeric:
        columns["profile_numeric"] = frame[cfg.numeric].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
        info["mean"], info["std"] = zscore_stats(columns["profile_numeric"])
    if cfg.categorical:
        ids = []
        for name in cfg.categorical:
            values = frame[name].astype("string").str.strip()
            codes, uniques = pd.factorize(values.where(values.notna() & (values != ""), None))
            ids.append(codes + 1)                                  # -1 (missing) -> 0
            info["cardinalities"].append(int(len(uniques) + 1))
        columns["profile_categorical"] = np.stack(ids, axis=1).astype(np.int64)
    info["coverage"] = round(float(frame.notna().any(axis=1).mean()), 4)
    return columns, info


def content_vectors(cfg: EvaluateSeqConfig, items_path: str | None, item_ids: np.ndarray,
                    tower_vectors: np.ndarray | None) -> tuple[object | None, dict]:
    """The content source's item vectors in the log's item order (None: no content source)."""
    if not cfg.content.enabled:
        return None, {"source": "off (content.enabled: false)"}
    if cfg.content.vectors == "item_tower":
        if tower_vectors is None:
            return None, {"source": "none (content.vectors: item_tower needs --items or item_vectors.path)"}
        return tower_vectors, {"source": "item tower vectors",
                               "coverage": round(float((np.abs(tower_vectors).sum(1) > 0).mean()), 4)}
    if not items_path:
        return None, {"source": "none (no --items)"}
    from ray_jobs.item_tower_trainer import load_items

    table, _ = load_items(CatalogConfig(**{**asdict(cfg.item_vectors.catalog), "catalog": items_path}))
    columns = [c for c in ("item_id", "category_path", "std_attributes", "re_attributes", "title")
               if c in table.column_names]
    matrix = attribute_vectors(table.select(columns).to_pylist(), item_ids, cfg.content.title)
    if matrix.nnz == 0:
        raise ConfigError(f"{items_path}: no catalog item matches an item of the log (generic catalogs: name the id "
                          f"column with item_vectors.catalog.id_col, now {cfg.item_vectors.catalog.id_col!r})")
    return matrix, {"source": f"attributes of {items_path} (TF-IDF)", "tokens": int(matrix.shape[1]),
                    "coverage": round(float((matrix.getnnz(axis=1) > 0).mean()), 4)}


def stage_sources(cfg: EvaluateSeqConfig, split: SequenceSplit, stage: str, user_vectors: np.ndarray,
                  item_vectors: np.ndarray, content) -> dict:
    """The candidate sources fitted on what ``stage`` may see, popularity last."""
    sequences = split.training_sequences(stage)
    sources = {"user_tower": DenseSource(user_vectors, item_vectors),
               "itemknn": TransitionKNN.fit(sequences, split.n_items, cfg.itemknn)}
    if cfg.baskets.enabled and split.has_baskets:
        sources["basket"] = BasketKNN.fit_baskets(sequences, split.basket_ids(f"train_{stage}"), split.n_items,
                                                  split.basket_ids(stage), cfg.baskets)
    if content is not None:
        sources["content"] = ContentSource(content, cfg.content.weights)
    sources["mostpop"] = Popularity.fit(sequences, split.n_items)
    return sources


def _user_arrays(histories, rows, columns: dict, max_len: int) -> dict:
    return {"items": pad_right(histories, max_len), **{k: v[rows] for k, v in columns.items()}}


def _run_name(cfg: EvaluateSeqConfig, *paths: str | None) -> str:
    """Ray Train resumes a run of the same name: only the same tower settings on the same files
    may (ranker or candidate settings do not retrain the tower)."""
    tower_settings = {key: to_dict(cfg)[key] for key in ("dedupe", "user_tower", "train", "val_max_users",
                                                          "item_vectors", "profile")}
    stamp = "|".join(f"{Path(p).resolve()}:{Path(p).stat().st_size}" for p in paths if p)
    digest = hashlib.sha1((json.dumps(tower_settings, sort_keys=True, default=str) + stamp).encode()).hexdigest()
    return f"user_tower-{digest[:10]}"


def run(interactions: str, user_col: str, item_col: str, order_col: str, items: str | None, users: str | None,
        out: str, cfg: EvaluateSeqConfig) -> dict:
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds, started = {}, time.perf_counter()
    with timed(seconds, "load_and_split"):
        frame, load_info = load_log(interactions, user_col, item_col, order_col, cfg.dedupe)
        # equal timestamps of one user = one basket (a position order column has no baskets)
        baskets = frame["timestamp"].to_numpy() if frame["timestamp"].notna().all() else None
        split = leave_last_out(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), frame["position"].to_numpy(),
                               baskets=baskets)
        rows = split.eval_rows
        history = {stage: split.history(stage) for stage in ("val", "test")}
        target = {stage: split.targets(stage) for stage in ("val", "test")}
    n_users, n_items = len(rows), split.n_items
    if n_users == 0:
        raise ConfigError(f"{interactions}: no user with >= {MIN_INTERACTIONS} interactions")
    repeated = np.array([t in set(h.tolist()) for t, h in zip(target["test"], history["test"])], dtype=bool)
    repeats = float(repeated.mean())
    print(f"E3 on {interactions}: {len(frame)} interactions ({load_info['duplicates_dropped']} repeated "
          f"(user, item, time) rows dropped, {load_info['quarantined']} quarantined), {len(split.user_ids)} users, "
          f"{n_items} items; evaluated users (>= {MIN_INTERACTIONS}): {n_users}; test targets already in the "
          f"history: {repeats:.1%}")

    with timed(seconds, "item_vectors"):
        vectors, vector_info = item_vectors_for(cfg.item_vectors, items, split.item_ids, out_dir, cfg.scaling)
    columns, profile_info = profile_columns(cfg.profile, users, user_col, split.user_ids)
    tower_cfg = UserTowerConfig(**{**asdict(cfg.user_tower),
                                   "item_vector_dim": 0 if vectors is None else int(vectors.shape[1]),
                                   "profile_numeric": cfg.profile.numeric if "profile_numeric" in columns else [],
                                   "profile_categorical": (cfg.profile.categorical if "profile_categorical" in columns
                                                           else []),
                                   "profile_cardinalities": profile_info.get("cardinalities", [])})
    content, content_info = content_vectors(cfg, items, split.item_ids, vectors)
    print(f"item vectors: {vector_info}; content source: {content_info}; profile: {profile_info or 'none'}")

    init_ray()
    with timed(seconds, "user_tower_train"):
        datasets = tower_datasets(split, tower_cfg.max_len, cfg.val_max_users, 0, columns, vectors)
        print(f"user tower: {len(datasets['train']['items'])} training windows, {len(datasets['val']['target'])} "
              f"validation users per epoch")
        stats = {"mean": profile_info["mean"], "std": profile_info["std"]} if "mean" in profile_info else None
        model, fitted = fit_user_tower(datasets, n_items, tower_cfg, cfg.train, cfg.scaling, out_dir / "user_tower",
                                       _run_name(cfg, interactions, items, users), stats)
        item_vecs = item_matrix(model)
        user_vecs = {stage: encode_users(model, _user_arrays(history[stage], rows, columns, tower_cfg.max_len))
                     for stage in ("val", "test")}
    line_panels(fitted["history"], {"loss": ["train_loss"], "learning rate": ["lr"],
                                    "validation (full ranking)": [SCORE, "val_ndcg@10", "val_mrr"]},
                out_dir / "training_charts.png", "user tower: next-item InfoNCE, validation targets")

    stages, sources = {}, {}
    for stage in ("val", "test"):
        with timed(seconds, f"candidates_{stage}"):
            sources[stage] = stage_sources(cfg, split, stage, user_vecs[stage], item_vecs, content)
            stages[stage] = run_stage(sources[stage], sources[stage]["mostpop"], history[stage], target[stage],
                                      cfg.candidates, evaluate=True, progress=f"{stage} candidates")
        print(f"{stage}: {len(stages[stage].candidates) / n_users:.0f} candidates per user; recall@"
              f"{cfg.candidates.n_per_source} per source {stages[stage].recall}")

    with timed(seconds, "ranker"):
        names = sorted(stages["val"].candidates.features)
        matrix = lambda s: np.stack([stages[s].candidates.features[n] for n in names], axis=1)  # noqa: E731
        ranker = CandidateRanker(cfg.ranker, names).fit(matrix("val"), stages["val"].labels,
                                                        stages["val"].candidates.row)
        ranker_scores = {s: ranker.predict(matrix(s)) for s in ("val", "test")}
    with timed(seconds, "ranking"):
        model_ranks = {s: recommender_ranks(stages[s].candidates, ranker_scores[s], sources[s]["mostpop"], history[s],
                                            target[s], cfg.candidates.chunk_size, progress=f"{s} recommender ranks")
                       for s in ("val", "test")}

    test_ranks = stages["test"].ranks
    report = {"model": _short(rank_summary(model_ranks["test"], cfg.k)),
              "user_tower": _short(rank_summary(test_ranks["user_tower"], cfg.k)),
              "baselines": {"mostpop": _short(rank_summary(test_ranks["mostpop"], cfg.k)),
                            "itemknn": _short(rank_summary(test_ranks["itemknn"], cfg.k))},
              "sources": {name: _short(rank_summary(test_ranks[name], cfg.k)) for name in test_ranks},
              "comparison": {f"model_vs_{name}": paired_bootstrap(model_ranks["test"], test_ranks[name], cfg.k,
                                                                  cfg.bootstrap_samples)
                             for name in ("itemknn", "mostpop")},
              "n_users": int(n_users), "n_items": int(n_items),
              "config": {**to_dict(cfg), "user_tower_resolved": asdict(tower_cfg)}}
    val_ranks = stages["val"].ranks
    report["validation"] = {"model (in-sample: the ranker is trained on these targets)":
                            _short(rank_summary(model_ranks["val"], cfg.k)),
                            **{name: _short(rank_summary(val_ranks[name], cfg.k)) for name in val_ranks}}
    report["candidate_recall"] = {"n_per_source": cfg.candidates.n_per_source,
                                  **{s: {k: round(v, 4) for k, v in stages[s].recall.items()} for s in ("val", "test")}}
    # The metric excludes the history but never the target, so a target the user already had can be
    # hit by any method that scores history items; shown apart so a gain is not that artefact.
    report["hits_on_repeated_test_targets"] = {
        "repeated_targets": int(repeated.sum()),
        **{name: {"hits@k": int(np.sum(ranks < cfg.k)), "of_which_repeated": int(np.sum((ranks < cfg.k) & repeated))}
           for name, ranks in {"model": model_ranks["test"], **test_ranks}.items()}}
    report["candidates_per_user"] = {s: round(len(stages[s].candidates) / n_users, 1) for s in ("val", "test")}
    report["ranker"] = ranker.summary()
    report["user_tower_training"] = {"best_epoch": fitted["best_metrics"]["epoch"],
                                     "epochs_run": len(fitted["history"]),
                                     f"best_{SCORE}": round(fitted["best_metrics"][SCORE], 4),
                                     "checkpoint": fitted["best_model"]}
    report["data"] = {"interactions": str(Path(interactions).resolve()), "n_interactions": int(len(frame)),
                      "n_log_users": int(len(split.user_ids)), **load_info,
                      "test_targets_in_history": round(repeats, 4), "item_vectors": vector_info,
                      "content": content_info, "baskets": split.has_baskets,
                      "profile": {k: v for k, v in profile_info.items() if k not in ("mean", "std")}}
    report["protocol"] = ("E3 leave-last-out: order by the order column (ties: file order); test = last item, "
                          "validation = second-to-last; users with >= 3 interactions; full ranking over all "
                          f"{n_items} items with the user's history excluded (the target never); equal scores "
                          "ordered by popularity")

    with timed(seconds, "write"):
        write_candidates(out_dir / "candidates.parquet",
                         [(s, stages[s].candidates, stages[s].labels, ranker_scores[s]) for s in ("val", "test")],
                         split.user_ids[rows], split.item_ids)
        write_sequences(out_dir / "sequences.parquet", split.user_ids[rows], history["val"], history["test"],
                        target["val"], target["test"], split.item_ids)
        shown = {"recommender (model)": report["model"], "user tower": report["user_tower"],
                 "ItemKNN (transitions)": report["baselines"]["itemknn"], "MostPop": report["baselines"]["mostpop"]}
        grouped_bars(shown, out_dir / "comparison.png",
                     f"E3 leave-last-out, {n_users} users, full ranking over {n_items} items (test targets)")
    report["timings_s"] = {**seconds, "total": round(time.perf_counter() - started, 1)}
    write_json(out_dir / "metrics.json", report)
    print(f"{'':24s} {'HR@10':>7s} {'NDCG@10':>8s} {'MRR':>7s}")
    for name, values in shown.items():
        print(f"{name:24s} {values['hr@10']:7.4f} {values['ndcg@10']:8.4f} {values['mrr']:7.4f}")
    for name, paired in report["comparison"].items():
        print(f"{name}: " + ", ".join(f"{m} {paired[m]['difference']:+.4f} (95% CI {paired[m]['ci95'][0]:+.4f}.."
                                      f"{paired[m]['ci95'][1]:+.4f})" for m in METRICS))
    print(f"timings (s): {report['timings_s']}")
    print(f"report: {out_dir / 'metrics.json'}; plot comparison.png; candidates.parquet, sequences.parquet")
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
    cfg = stage_config(args, EvaluateSeqConfig)
    return run(args.interactions, args.user_col, args.item_col, args.order_col, args.items, args.users, args.out, cfg)


if __name__ == "__main__":
    run_main(main)
