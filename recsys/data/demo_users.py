"""The demo's users: a synthetic interaction log over the embedded demo items (a stand-in, no real
customers exist offline), their table (history, stand-in profile, context text) and the tower
inputs. The layout of a users run (``ray_jobs.train_users`` writes it, the Serve app reads it):
``recsys.retrieval.user_model``.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.config import ConfigError
from recsys.data.synthetic_interactions import SyntheticInteractionsConfig, generate_interactions
from recsys.models.user_tower import UserTowerConfig
from recsys.ranking.rerankers import RerankEvalConfig
from recsys.retrieval.recommender import CandidateConfig
from recsys.retrieval.sources import SourcesConfig
from recsys.retrieval.user_model import DEMO_SOURCES
from recsys.train_loops.user_tower import UserTowerTrainConfig
from recsys.train_loops.scaling import ScalingSettings

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
class TrainUsersConfig(SourcesConfig):
    """The users step's settings; the candidate sources' come from :class:`SourcesConfig` and
    serving rebuilds the same sources from the run's config.yaml."""
    scaling: ScalingSettings = field(default_factory=ScalingSettings)  # Ray Train workers of the stage's fits
    sources: list[str] = field(default_factory=lambda: list(DEMO_SOURCES))
    embed_run: str | None = None    # whose items get users; None: the newest run under embed_root
    embed_root: str = "artifacts/embed"
    output_root: str = "artifacts/train_users"
    log: UserLogConfig = field(default_factory=UserLogConfig)
    user_tower: UserTowerConfig = field(default_factory=lambda: UserTowerConfig(dim=32, max_len=20, layers=1,
                                                                                ffn_dim=64))
    train: UserTowerTrainConfig = field(default_factory=lambda: UserTowerTrainConfig(
        epochs=5, batch_size=128, patience=0, threads=1))
    val_max_users: int | None = 500
    candidates: CandidateConfig = field(default_factory=lambda: CandidateConfig(n_per_source=30))
    reranker: str | None = "deepfm"   # deepfm | listwise | null (the Serve app then falls back to MMR)
    rerankers: RerankEvalConfig = field(default_factory=RerankEvalConfig)   # as evaluate_rerankers

    def __post_init__(self):
        super().__post_init__()
        if self.reranker is not None and self.reranker not in RERANKER_NAMES:
            raise ConfigError(f"reranker must be one of {sorted(RERANKER_NAMES)} or null, got {self.reranker!r}")


def demo_items(embed_run: Path) -> tuple[pd.DataFrame, str]:
    """The embed run's items that have an image vector (what the Serve app serves), and their table."""
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


def write_user_tower_files(out_dir: Path, model, checkpoint: Path, item_ids: list[str], styles: list[str],
                           text_model: str | None) -> None:
    """The demo tower's served files (``recsys.models.user_tower.save_user_model``): its profile
    vocabulary and title-text context."""
    from recsys.models.user_tower import save_user_model

    save_user_model(out_dir, model, checkpoint, item_ids, {"style": styles}, text_model, "title", STAND_IN)


def candidate_lists(split, model, columns: dict, cfg: TrainUsersConfig, run_dir: Path) -> dict:
    """Validation and test candidates of the configured sources in the reranker contract."""
    from recsys.models.user_tower import encode_users, item_matrix
    from recsys.retrieval.e3 import stage_sources, user_arrays
    from recsys.retrieval.export import write_candidates, write_sequences
    from recsys.retrieval.recommender import run_stage

    rows, item_vectors = split.eval_rows, item_matrix(model)
    stages, recall = [], {}
    for stage in ("val", "test"):
        history, targets = split.history(stage), split.targets(stage)
        users = encode_users(model, user_arrays(history, rows, columns, cfg.user_tower.max_len))
        sources = stage_sources(cfg, split, stage, users, item_vectors, None)
        result = run_stage(sources, sources["mostpop"], history, targets, cfg.candidates)
        # The lists' input order: the user tower's score (the app's retrieval order too).
        stages.append((stage, result.candidates, result.labels, result.candidates.features["user_tower_score"]))
        recall[stage] = {k: round(v, 4) for k, v in result.recall.items()}
    write_candidates(run_dir / "candidates.parquet", stages, split.user_ids[rows], split.item_ids)
    write_sequences(run_dir / "sequences.parquet", split.user_ids[rows], split.history("val"), split.history("test"),
                    split.targets("val"), split.targets("test"), split.item_ids)
    return recall
