"""Users for the demo catalog: a synthetic interaction log over the embedded items (a stand-in, no
real customers exist offline), a user tower trained on it (Ray Train) and, optionally, a learned
reranker over the tower's candidate lists: what the Serve app's user endpoints load.

    python -m ray_jobs.train_users --config configs/train_users.yaml [--set embed_run=DIR ...]
    (or the ``train_users`` step of ``ray_jobs.pipeline``)

Steps:
1. the log: ``recsys.data.synthetic_interactions`` (fashion-like sequences: favourite categories,
   complementary items, Zipfian popularity) generated over as many items as the embed run holds,
   its categories mapped onto the demo's categories by size (largest onto largest), so a user's
   items cluster in a few K-Fashion categories. Per user a stand-in profile (``age``, seeded;
   ``style``: the most common style of the user's items) and a context text (the title of the
   user's first item, embedded with the embed run's title vectors, the MiniLM space the Serve
   app encodes context text in).
2. the user tower (``recsys.models.user_tower``, history + profile + context) on Ray Train,
   protocol E3 split (leave-last-out; checkpoint by validation HR@10).
3. candidate lists for the validation and test targets from the library's sources (user tower,
   ItemKNN transitions, popularity; ``recsys.retrieval.recommender.run_stage``), written in the
   reranker contract (candidates.parquet, sequences.parquet).
4. ``reranker`` (deepfm | listwise | null): trained on the validation lists as
   ``ray_jobs.evaluate_rerankers`` does, reported on the test lists against the user-tower order.

Writes ``<output_root>/<run>/``: interactions.parquet, users.parquet (user_id, history, age, style,
context), user_tower/ (checkpoints/best_model.pt, item_vectors.npy, user_model.json),
reranker/ (checkpoints/best_model.pt, item_vectors.npy, reranker.json), report.json, manifest.json.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ray_jobs.cli import init_ray, load_stage_config, run_main
from ray_jobs.evaluate_rerankers import RerankEvalConfig
from ray_jobs.user_tower_trainer import fit_user_tower
from ray_jobs.trainer import ScalingSettings
from recsys.artifacts import latest_run, new_run_dir, write_json, write_manifest
from recsys.config import ConfigError, config_hash
from recsys.data.synthetic_interactions import SyntheticInteractionsConfig, generate_interactions
from recsys.eval.sequential import leave_last_out
from recsys.models.user_tower import UserTowerConfig, encode_users, item_matrix, pad_right, zscore_stats
from recsys.retrieval.dense import DenseSource
from recsys.retrieval.export import write_candidates, write_sequences
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.recommender import CandidateConfig, run_stage
from recsys.retrieval.transitions import TransitionConfig, TransitionKNN
from recsys.train_loops.user_tower import SCORE, UserTowerTrainConfig, tower_datasets

STAND_IN = ("synthetic stand-in: users, profiles and interactions are generated "
            "(recsys.data.synthetic_interactions), not real customers")
PROFILE_NUMERIC = ["age"]
PROFILE_CATEGORICAL = ["style"]
RERANKER_NAMES = {"deepfm": "DeepFM", "listwise": "listwise"}


@dataclass
class UserLogConfig:
    n_users: int = 2000
    seed: int = 0
    median_length: float = 8.0
    categories: int = 25            # generator categories (the demo corpus has ~25)
    p_sequential: float = 0.6


@dataclass
class TrainUsersConfig:
    embed_run: str | None = None    # whose items get users; None: the newest run under embed_root
    embed_root: str = "artifacts/embed"
    output_root: str = "artifacts/train_users"
    log: UserLogConfig = field(default_factory=UserLogConfig)
    user_tower: UserTowerConfig = field(default_factory=lambda: UserTowerConfig(dim=32, max_len=20, layers=1,
                                                                                ffn_dim=64))
    train: UserTowerTrainConfig = field(default_factory=lambda: UserTowerTrainConfig(
        epochs=5, batch_size=128, patience=0, threads=1))
    val_max_users: int | None = 500
    itemknn: TransitionConfig = field(default_factory=TransitionConfig)
    candidates: CandidateConfig = field(default_factory=lambda: CandidateConfig(n_per_source=30))
    reranker: str | None = "deepfm"   # deepfm | listwise | null (the Serve app then falls back to MMR)
    rerankers: RerankEvalConfig = field(default_factory=RerankEvalConfig)   # model/train settings as evaluate_rerankers
    scaling: ScalingSettings = field(default_factory=ScalingSettings)

    def __post_init__(self):
        if self.reranker is not None and self.reranker not in RERANKER_NAMES:
            raise ConfigError(f"reranker must be one of {sorted(RERANKER_NAMES)} or null, got {self.reranker!r}")


# -- 1. the stand-in log -------------------------------------------------------------------------
def demo_items(embed_run: Path) -> tuple[pd.DataFrame, str]:
    """The embed run's items that have an image vector (what the Serve app serves), and their table."""
    import json

    items_dir = json.loads((embed_run / "manifest.json").read_text())["inputs"]["items"]
    items = pq.read_table(items_dir, columns=["item_id", "category", "styles", "title"]).to_pandas()
    embedded = set(pq.read_table(embed_run / "image_embeddings", columns=["item_id"])["item_id"].to_pylist())
    return items[items["item_id"].isin(embedded)].drop_duplicates("item_id").reset_index(drop=True), items_dir


def _by_category_size(categories: pd.Series) -> np.ndarray:
    """Row order: rows of the largest category first, then the next (ties by name), stable within."""
    sizes = categories.fillna("").map(categories.fillna("").value_counts())
    return np.lexsort((np.arange(len(categories)), categories.fillna("").to_numpy(), -sizes.to_numpy()))


def generate_log(items: pd.DataFrame, cfg: UserLogConfig) -> pd.DataFrame:
    """(user_id, item_id, timestamp) over ``items``: the generator's catalog mapped onto the demo
    items, category blocks by size onto category blocks by size."""
    groups = max(1, min(8, round(cfg.categories ** 0.5)))
    generator = SyntheticInteractionsConfig(out_dir="", seed=cfg.seed, n_users=cfg.n_users, n_items=len(items),
                                            n_groups=groups, categories_per_group=max(1, cfg.categories // groups),
                                            median_length=cfg.median_length, p_sequential=cfg.p_sequential)
    log, generated, _ = generate_interactions(generator)
    source = generated["item_id"].to_numpy()[_by_category_size(generated["category"])]
    target = items["item_id"].to_numpy()[_by_category_size(items["category"])]
    mapping = dict(zip(source, target))
    return log.assign(item_id=log["item_id"].map(mapping), user_id=log["user_id"].str.replace("u", "user-", n=1))


def user_table(log: pd.DataFrame, items: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per user: history (time order), stand-in profile (age, style) and context text."""
    style_of = items.set_index("item_id")["styles"].map(lambda s: s[0] if s is not None and len(s) else None)
    title_of = items.set_index("item_id")["title"]
    ordered = log.sort_values(["user_id", "timestamp"], kind="stable")
    histories = ordered.groupby("user_id", sort=True)["item_id"].agg(list)
    rng = np.random.default_rng(seed)
    styles = [Counter(s for s in style_of.reindex(h).dropna()).most_common(1) for h in histories]
    return pd.DataFrame({"user_id": histories.index, "history": histories.to_numpy(),
                         "age": rng.integers(18, 66, len(histories)).astype(np.float32),
                         "style": [s[0][0] if s else None for s in styles],
                         "context": [title_of.get(h[0]) for h in histories]})


def user_columns(users: pd.DataFrame, user_ids: np.ndarray, text_vectors: dict[str, np.ndarray], dim: int
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """Tower inputs per split user (rows = ``user_ids``) and the profile vocabulary the app needs."""
    table = users.set_index("user_id").reindex(user_ids)
    styles = sorted(table["style"].dropna().unique())
    codes = {value: n + 1 for n, value in enumerate(styles)}             # 0 = missing
    context = np.full((len(table), dim), np.nan, dtype=np.float32)
    for row, history in enumerate(table["history"]):
        vector = text_vectors.get(history[0]) if history is not None and len(history) else None
        if vector is not None:
            context[row] = vector
    columns = {"profile_numeric": table[PROFILE_NUMERIC].to_numpy(np.float32),
               "profile_categorical": table["style"].map(codes).fillna(0).to_numpy(np.int64)[:, None],
               "context": context}
    return columns, {"style": styles}


def title_vectors(embed_run: Path) -> tuple[dict[str, np.ndarray], str | None]:
    """The embed run's title vectors by item id, and its text model."""
    import pyarrow.compute as pc
    import yaml

    path = embed_run / "text_embeddings"
    if not path.exists():
        return {}, None
    table = pq.read_table(path, columns=["item_id", "source", "vector"])
    table = table.filter(pc.equal(table["source"], "title"))
    config = yaml.safe_load((embed_run / "config.yaml").read_text()) or {}
    vectors = table["vector"].to_numpy(zero_copy_only=False)
    return ({i: np.asarray(v, dtype=np.float32) for i, v in zip(table["item_id"].to_pylist(), vectors)},
            (config.get("text") or {}).get("model"))


# -- 2./3. the tower and its candidate lists -------------------------------------------------------
def candidate_lists(split, model, columns: dict, cfg: TrainUsersConfig, run_dir: Path) -> dict:
    """Validation and test candidates of the library's sources in the reranker contract."""
    rows, item_vectors = split.eval_rows, item_matrix(model)
    stages, recall = [], {}
    for stage in ("val", "test"):
        history, targets = split.history(stage), split.targets(stage)
        arrays = {"items": pad_right(history, cfg.user_tower.max_len), **{k: v[rows] for k, v in columns.items()}}
        sequences = split.training_sequences(stage)
        popularity = Popularity.fit(sequences, split.n_items)
        sources = {"user_tower": DenseSource(encode_users(model, arrays), item_vectors),
                   "itemknn": TransitionKNN.fit(sequences, split.n_items, cfg.itemknn), "mostpop": popularity}
        result = run_stage(sources, popularity, history, targets, cfg.candidates)
        # The lists' input order: the user tower's score (the app's retrieval order too).
        stages.append((stage, result.candidates, result.labels, result.candidates.features["user_tower_score"]))
        recall[stage] = {k: round(v, 4) for k, v in result.recall.items()}
    write_candidates(run_dir / "candidates.parquet", stages, split.user_ids[rows], split.item_ids)
    write_sequences(run_dir / "sequences.parquet", split.user_ids[rows], split.history("val"), split.history("test"),
                    split.targets("val"), split.targets("test"), split.item_ids)
    return recall


# -- 4. the reranker ------------------------------------------------------------------------------
def train_reranker(cfg: TrainUsersConfig, run_dir: Path, items_dir: str) -> dict:
    """Train ``cfg.reranker`` on the validation lists (the evaluate_rerankers recipe) and save what
    the Serve app needs to build the same features for one user at request time."""
    from ray_jobs.evaluate_rerankers import fit_reranker, item_side, variants
    from recsys.data.candidate_lists import DenseScaler, build_lists, popularity, read_contract
    from recsys.eval.rerankers import list_target_ranks
    from recsys.metrics.ranking import hit_rate_at_k, ndcg_at_k
    from recsys.train_loops.rerankers import load_reranker, score_lists

    settings = cfg.rerankers
    candidates, sequences, score_columns = read_contract(run_dir)
    side = item_side(candidates, sequences, None, items_dir)
    lists = {split: build_lists(candidates, sequences, split, side.index, score_columns, side.vectors,
                                settings.max_history, ranker_features=False) for split in ("val", "test")}
    val, test = lists["val"], lists["test"]
    order = np.random.default_rng(settings.seed).permutation(len(val))
    n_select = max(1, round(len(order) * settings.val_fraction))
    select, train = np.sort(order[:n_select]), np.sort(order[n_select:])
    scaler = DenseScaler.fit(val.dense[train], val.mask[train])
    items_rows = {"index": np.arange(side.index.size), "tokens": side.tokens, "category": side.category,
                  "popularity": np.log1p(popularity(sequences["history_val"].map(list), side.index)).astype(np.float32),
                  "vector": side.vectors.astype(np.float32)}
    datasets = {"train": val.rows(train, scaler), "val": val.rows(select, scaler), "items": items_rows}
    name = RERANKER_NAMES[cfg.reranker]
    kind, model_cfg, train_cfg = variants(settings)[name]
    out_dir = run_dir / "reranker"
    fitted = fit_reranker(name, kind, model_cfg, train_cfg, settings, side, datasets, scaler, val.feature_names,
                          out_dir)
    model = load_reranker(fitted["best_model"])
    test_rows = test.rows(scaler=scaler)
    ranks = {"reranker": list_target_ranks(score_lists(model, test_rows), test.label, test.mask),
             "user tower order": list_target_ranks(np.where(test.mask, test.ranker_score, -np.inf), test.label,
                                                   test.mask)}
    write_reranker_files(out_dir, kind, Path(fitted["best_model"]), list(side.index.ids), val.feature_names,
                         score_columns, scaler, settings.max_history, side.vectors, side.vectors_source)
    return {"kind": kind, "best_val_ndcg@10": round(float(fitted["best_metrics"]["val_ndcg@10"]), 4),
            "test": {name: {"hr@10": round(hit_rate_at_k(r, 10), 4), "ndcg@10": round(ndcg_at_k(r, 10), 4)}
                     for name, r in ranks.items()},
            "test_candidate_recall": round(float(test.target_listed.mean()), 4)}


# -- what the Serve app reads (serve_app.users) ---------------------------------------------------
def write_user_tower_files(out_dir: Path, model, checkpoint: Path, item_ids: list[str], styles: list[str],
                           text_model: str | None) -> None:
    """user_model.json (item ids in token order, profile vocabulary, context) + item_vectors.npy."""
    np.save(out_dir / "item_vectors.npy", item_matrix(model))
    write_json(out_dir / "user_model.json", {
        "checkpoint": str(checkpoint.relative_to(out_dir)), "item_vectors": "item_vectors.npy", "item_ids": item_ids,
        "profile_numeric": PROFILE_NUMERIC, "profile_categorical": {"style": styles},
        "context": {"source": "title", "text_model": text_model, "dim": model.config.context_dim},
        "max_len": model.config.max_len, "note": STAND_IN})


def write_reranker_files(out_dir: Path, kind: str, checkpoint: Path, item_ids: list[str], feature_names: list[str],
                         score_columns: list[str], scaler, max_history: int, vectors: np.ndarray,
                         vectors_source: str) -> None:
    """reranker.json (item index, dense features and their scaling) + item_vectors.npy (cosine feature)."""
    np.save(out_dir / "item_vectors.npy", np.asarray(vectors, dtype=np.float32))
    write_json(out_dir / "reranker.json", {
        "kind": kind, "checkpoint": str(checkpoint.relative_to(out_dir)), "item_ids": list(item_ids),
        "feature_names": feature_names, "score_columns": score_columns, "scaler_mean": scaler.mean.tolist(),
        "scaler_std": scaler.std.tolist(), "max_history": max_history, "item_vectors": "item_vectors.npy",
        "item_vectors_source": vectors_source})


def run(cfg: TrainUsersConfig) -> dict:
    started = time.perf_counter()
    embed_run = Path(cfg.embed_run).resolve() if cfg.embed_run else latest_run(cfg.embed_root).resolve()
    items, items_dir = demo_items(embed_run)
    if len(items) < 10:
        raise ConfigError(f"{embed_run}: only {len(items)} embedded items; users need a catalog of at least 10")
    run_dir = new_run_dir(cfg.output_root, replace(cfg, embed_run=str(embed_run)))
    log = generate_log(items, cfg.log)
    users = user_table(log, items, cfg.log.seed)
    log.to_parquet(run_dir / "interactions.parquet", index=False)
    users.to_parquet(run_dir / "users.parquet", index=False)
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
                                   split.n_items, tower_cfg, cfg.train, cfg.scaling, run_dir / "user_tower",
                                   f"user_tower-{config_hash(cfg)}", {"mean": mean, "std": std})
    write_user_tower_files(run_dir / "user_tower", model, Path(fitted["best_model"]), split.item_ids.tolist(),
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
                   {"users": str(run_dir / "users.parquet"), "user_tower": str(run_dir / "user_tower"),
                    "reranker": str(run_dir / "reranker") if cfg.reranker else ""})
    line = f"user tower val HR@10 {report['user_tower'][f'best_{SCORE}']:.3f}"
    if cfg.reranker:
        test = report["reranker"]["test"]
        line += (f"; {cfg.reranker} test NDCG@10 {test['reranker']['ndcg@10']:.3f} vs user-tower order "
                 f"{test['user tower order']['ndcg@10']:.3f}")
    print(f"[users] {line} ({report['seconds']['total']} s: {report['seconds']}) -> {run_dir}")
    return {**report, "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TrainUsersConfig, "configs/train_users.yaml", argv))


if __name__ == "__main__":
    run_main(main)
