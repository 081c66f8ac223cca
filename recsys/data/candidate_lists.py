"""Candidate lists from retrieval (the ``ray_jobs.evaluate_seq`` output) as padded per-user arrays
for the rerankers.

The contract, ``DIR/``:

- ``candidates.parquet``: user_id (str), item_id (str), split ("val" / "test"), label (int8: 1 if
  the item is that split's target), one ``score_<source>`` float column per candidate source (0 when
  that source did not retrieve the item), ranker_score (float, the input order).
- ``sequences.parquet``: user_id, history_val, history_test (list<str>, oldest first), target_val,
  target_test.

A split's :class:`CandidateLists` holds one row per user: the candidates in input order
(``ranker_score`` descending), padded to the longest list with item index 0. The target may be
missing from a user's list: ``label`` is then all 0 and the user counts as a miss in every metric.

Dense features per candidate (``feature_names``): every ``score_<source>``; ``ranker_score`` and the
input rank as a share of the list (0 = first) unless left out; log popularity (count in that
split's histories); the cosine between the item's vector and the user's mean history vector (0
without vectors); ``in_history``; ``retrieved`` (1 for every listed candidate; 0 only for the
catalog negatives DeepFM samples in training, so they never look like retrieved items).

The item side (tokens, categories, vectors) is indexed the same way, by :class:`ItemIndex`.

A trained reranker is served with what builds these features for one user at request time:
:func:`write_reranker_files` / :func:`read_reranker_files` (``reranker.json``: item index, feature
names, score columns, scaler, history length; ``item_vectors.npy``: the cosine feature's vectors),
the one reader/writer pair of the training job and serving (the model itself:
``recsys.models.rerankers.load_reranker_artifact``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.artifacts import ModelFiles
from recsys.data.result import AdapterError, read_table_file

SPLITS = ("val", "test")
CANDIDATE_COLUMNS = ("user_id", "item_id", "split", "label", "ranker_score")
SEQUENCE_COLUMNS = ("user_id", "history_val", "history_test", "target_val", "target_test")
EXTRA_FEATURES = ("ranker_score", "ranker_rank", "popularity", "user_item_cosine", "in_history", "retrieved")
RANKER_FEATURES = ("ranker_score", "ranker_rank")


def read_contract(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(candidates, sequences, score columns) from DIR, checking the contract's columns and splits."""
    directory = Path(directory)
    candidates = read_table_file(directory / "candidates.parquet", CANDIDATE_COLUMNS, "candidate lists")
    sequences = read_table_file(directory / "sequences.parquet", SEQUENCE_COLUMNS, "user sequences")
    score_columns = sorted(c for c in candidates.columns if c.startswith("score_"))
    unknown = sorted(set(candidates["split"].unique()) - set(SPLITS))
    if unknown:
        raise AdapterError(f"{directory / 'candidates.parquet'}: split values {unknown}; expected {list(SPLITS)}")
    for split in SPLITS:
        if not (candidates["split"] == split).any():
            raise AdapterError(f"{directory / 'candidates.parquet'}: no {split!r} candidate lists")
    for column in ("user_id", "item_id"):
        candidates[column] = candidates[column].astype(str)
    sequences["user_id"] = sequences["user_id"].astype(str)
    return candidates, sequences, score_columns


class ItemIndex:
    """Item id <-> index 1..N (0 is padding and "unknown item")."""

    def __init__(self, item_ids):
        self.ids = pd.Index(pd.unique(pd.Series(list(item_ids), dtype=str)))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        """Rows of an item lookup table: N items + the padding row."""
        return len(self.ids) + 1

    def index(self, ids) -> np.ndarray:
        return (self.ids.get_indexer(pd.Series(list(ids), dtype=str)) + 1).astype(np.int64)


@dataclass
class CandidateLists:
    """One split's candidate lists, one row per user (module doc)."""
    split: str
    users: np.ndarray          # (U,) user ids
    items: np.ndarray          # (U, L) item indices, 0 = padding
    mask: np.ndarray           # (U, L) real candidates
    label: np.ndarray          # (U, L) int8, 1 = the split's target
    dense: np.ndarray          # (U, L, F) raw dense features (feature_names)
    history: np.ndarray        # (U, H) last H history items, oldest first, 0 = padding
    target: np.ndarray         # (U,) target item index (0 if not in the catalog index)
    feature_names: list[str]
    ranker_score: np.ndarray   # (U, L) the input order's scores (descending along each row)

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, which=None, scaler: "DenseScaler | None" = None) -> dict[str, np.ndarray]:
        """Columns for Ray Train (one row per list), dense features standardized by ``scaler``."""
        which = np.arange(len(self)) if which is None else np.asarray(which)
        dense = self.dense[which] if scaler is None else scaler.transform(self.dense[which])
        return {"items": self.items[which], "mask": self.mask[which], "label": self.label[which],
                "dense": dense.astype(np.float32), "history": self.history[which]}

    @property
    def target_listed(self) -> np.ndarray:
        """(U,) is the target among the user's candidates (the reranker's ceiling)?"""
        return (self.label > 0).any(axis=1)


@dataclass
class DenseScaler:
    """Per-feature z-scoring fitted on training lists (a constant feature keeps scale 1)."""
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, dense: np.ndarray, mask: np.ndarray) -> "DenseScaler":
        values = dense[mask.astype(bool)]
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 1e-6, std, 1.0))

    def transform(self, dense: np.ndarray) -> np.ndarray:
        return ((dense - self.mean) / self.std).astype(np.float32)


RERANKER_FILE = "reranker.json"
ITEM_VECTORS_FILE = "item_vectors.npy"


@dataclass
class RerankerFiles(ModelFiles):
    directory: Path
    kind: str                          # deepfm | listwise
    checkpoint: str                    # relative to directory
    item_ids: list[str]                # the ItemIndex order
    feature_names: list[str]
    score_columns: list[str]
    scaler: DenseScaler
    max_history: int
    item_vectors_source: str = ""
    item_vectors_file: str = ITEM_VECTORS_FILE


def write_reranker_files(directory: str | Path, kind: str, checkpoint: str | Path, item_ids: list[str],
                         feature_names: list[str], score_columns: list[str], scaler: DenseScaler, max_history: int,
                         vectors: np.ndarray, vectors_source: str, served_order: dict | None = None) -> Path:
    """reranker.json (item index, dense features and their scaling, the order Serve uses: the
    reranker's or a fallback, ``served_order``) + item_vectors.npy (cosine feature)."""
    from recsys.artifacts import write_json

    directory = Path(directory)
    np.save(directory / ITEM_VECTORS_FILE, np.asarray(vectors, dtype=np.float32))
    return write_json(directory / RERANKER_FILE, {
        "kind": kind, "checkpoint": str(Path(checkpoint).resolve().relative_to(directory.resolve())),
        "item_ids": list(item_ids), "feature_names": feature_names, "score_columns": score_columns,
        "scaler_mean": np.asarray(scaler.mean).tolist(), "scaler_std": np.asarray(scaler.std).tolist(),
        "max_history": max_history, "item_vectors": ITEM_VECTORS_FILE, "item_vectors_source": vectors_source,
        "served_order": served_order or {"order": "learned", "reason": "not compared"}})


def read_artifact_json(path: Path, required: bool = True) -> dict | None:
    """A served artifact's JSON description; None when absent and not ``required``."""
    import json

    if path.is_file():
        return json.loads(path.read_text())
    if required:
        raise FileNotFoundError(f"{path} does not exist")
    return None


def read_reranker_files(directory: str | Path, required: bool = True) -> RerankerFiles | None:
    """What :func:`write_reranker_files` wrote; None when absent and not ``required``."""
    directory = Path(directory)
    meta = read_artifact_json(directory / RERANKER_FILE, required)
    if meta is None:
        return None
    scaler = DenseScaler(np.asarray(meta["scaler_mean"], np.float32), np.asarray(meta["scaler_std"], np.float32))
    return RerankerFiles(directory, meta["kind"], meta["checkpoint"], list(meta["item_ids"]),
                         list(meta["feature_names"]), list(meta["score_columns"]), scaler, int(meta["max_history"]),
                         meta.get("item_vectors_source", ""), meta.get("item_vectors", ITEM_VECTORS_FILE))


def popularity(histories, index: ItemIndex) -> np.ndarray:
    """(N+1,) how often each item occurs in the given histories."""
    flat = [item for history in histories for item in history]
    counts = np.bincount(index.index(flat), minlength=index.size) if flat else np.zeros(index.size)
    counts[0] = 0
    return counts.astype(np.float64)


def build_lists(candidates: pd.DataFrame, sequences: pd.DataFrame, split: str, index: ItemIndex,
                score_columns: list[str], item_vectors: np.ndarray | None = None,
                max_history: int = 20, ranker_features: bool = True) -> CandidateLists:
    """One split's lists as arrays (module doc); ``item_vectors`` (N+1, d) feed the cosine feature.
    ``ranker_features=False`` leaves out ``ranker_score`` and ``ranker_rank`` (the lists stay in
    input order either way)."""
    frame = candidates[candidates["split"] == split]
    frame = frame.sort_values(["user_id", "ranker_score"], ascending=[True, False], kind="stable")
    users = frame["user_id"].unique()
    row = pd.Index(users).get_indexer(frame["user_id"])
    position = frame.groupby("user_id", sort=False).cumcount().to_numpy()
    length = np.bincount(row)
    n_users, width = len(users), int(length.max())

    sequences = sequences.set_index("user_id")
    missing = pd.Index(users).difference(sequences.index)
    if len(missing):
        raise AdapterError(f"sequences.parquet: no row for {len(missing)} users with {split} candidates, "
                           f"e.g. {list(missing[:5])}")
    histories = sequences.loc[users, f"history_{split}"].map(lambda h: [str(i) for i in (h if h is not None else [])])
    recent = [h[-max_history:] for h in histories]
    history = np.zeros((n_users, max_history), dtype=np.int64)
    lengths = np.array([len(h) for h in recent], dtype=np.int64)
    owner = np.repeat(np.arange(n_users), lengths)
    slot = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    history[owner, slot] = index.index([item for h in recent for item in h])
    counts = popularity(sequences[f"history_{split}"].map(lambda h: [] if h is None else list(h)), index)

    items = np.zeros((n_users, width), dtype=np.int64)
    mask = np.zeros((n_users, width), dtype=bool)
    label = np.zeros((n_users, width), dtype=np.int8)
    item_ids = index.index(frame["item_id"])
    items[row, position], mask[row, position] = item_ids, True
    label[row, position] = frame["label"].to_numpy().astype(np.int8)

    history_sets = [set(h[h > 0].tolist()) for h in history]
    values = {column: frame[column].fillna(0.0).to_numpy() for column in list(score_columns) + ["ranker_score"]}
    values |= {"ranker_rank": position / np.maximum(length[row] - 1, 1), "popularity": np.log1p(counts[item_ids]),
               "user_item_cosine": (user_item_cosine(items, history, item_vectors)[row, position]
                                    if item_vectors is not None else 0.0),
               "in_history": np.array([item in history_sets[r] for r, item in zip(row, item_ids)], dtype=np.float32),
               "retrieved": 1.0}
    names = [n for n in list(score_columns) + list(EXTRA_FEATURES) if ranker_features or n not in RANKER_FEATURES]
    dense = np.zeros((n_users, width, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        dense[row, position, j] = values[name]
    targets = index.index(sequences.loc[users, f"target_{split}"].astype(str))
    ranker_score = np.zeros((n_users, width), dtype=np.float64)
    ranker_score[row, position] = values["ranker_score"]
    return CandidateLists(split, np.asarray(users), items, mask, label, dense, history, targets, names, ranker_score)


def user_item_cosine(items: np.ndarray, history: np.ndarray, item_vectors: np.ndarray,
                     chunk: int = 1024) -> np.ndarray:
    """(U, L) cosine between each candidate's vector and the mean of the user's history vectors."""
    unit = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    unit[0] = 0.0
    out = np.zeros(items.shape, dtype=np.float32)
    for start in range(0, len(items), chunk):
        user = unit[history[start:start + chunk]].sum(axis=1)
        user /= np.maximum(np.linalg.norm(user, axis=1, keepdims=True), 1e-12)
        out[start:start + chunk] = np.einsum("uld,ud->ul", unit[items[start:start + chunk]], user)
    return out


def absent_dense(feature_names: list[str]) -> np.ndarray:
    """The raw dense row of an item no source retrieved (a catalog negative): every score 0,
    last in the list, not retrieved; popularity is filled in per item by the caller."""
    row = np.zeros(len(feature_names), dtype=np.float32)
    if "ranker_rank" in feature_names:
        row[feature_names.index("ranker_rank")] = 1.0
    return row


# --- item side: lookups indexed like the lists ------------------------------------------------------

def generic_feature_config(items, num_buckets: int = 1 << 15):
    """An ``ItemFeatureConfig`` for any canonical item table: the catalog's preset when its source
    has one, else every category level, STD attribute and RE attribute the table holds."""
    from recsys.data.item_features import PRESETS, ItemFeatureConfig

    sources = set(items.column("source").to_pylist()) if "source" in items.column_names else set()
    if len(sources) == 1 and (source := sources.pop()) in PRESETS:
        return PRESETS[source]()
    depth = max((len(p or []) for p in items.column("category_path").to_pylist()), default=1)

    def keys(column: str) -> list[str]:
        if column not in items.column_names:
            return []
        return sorted({a["field"] for row in items.column(column).to_pylist() for a in row or []})

    std = keys("std_attributes")
    return ItemFeatureConfig(hierarchy=[f"category_level_{i}" for i in range(max(depth, 1))], std_fields=std,
                             re_fields=[f for f in keys("re_attributes") if f not in std], num_buckets=num_buckets,
                             max_std_tokens=max(12, depth + len(std)))


def item_tokens(features: dict[str, np.ndarray], item_ids, index: ItemIndex) -> np.ndarray:
    """(N+1, T) STD then RE token ids per item (0 = pad or an item without attributes) from
    ``ItemFeaturizer.transform`` arrays whose rows are ``item_ids``."""
    tokens = np.concatenate([np.where(features["std_mask"], features["std_ids"], 0),
                             np.where(features["re_mask"], features["re_ids"], 0)], axis=1)
    out = np.zeros((index.size, tokens.shape[1]), dtype=np.int64)
    rows = index.index(item_ids)
    out[rows[rows > 0]] = tokens[rows > 0]
    out[0] = 0
    return out


def item_categories(item_ids, categories, index: ItemIndex) -> tuple[np.ndarray, list[str]]:
    """(N+1,) category index per item (0 = unknown) and the category names (index 1..)."""
    names = sorted({str(c) for c in categories if c})
    lookup = {name: i + 1 for i, name in enumerate(names)}
    out = np.zeros(index.size, dtype=np.int64)
    rows = index.index(item_ids)
    out[rows] = [lookup.get(str(c), 0) if c else 0 for c in categories]
    out[0] = 0
    return out, names


def token_bag_vectors(tokens: np.ndarray, dim: int = 128, seed: int = 0) -> np.ndarray:
    """(N+1, dim) items' attribute-token bags under a fixed random projection: cosine between two
    items approximates their token overlap / sqrt(|A| |B|) without a vocabulary-wide matrix."""
    rng = np.random.default_rng(seed)
    used, inverse = np.unique(tokens, return_inverse=True)
    projection = rng.normal(0, 1 / np.sqrt(dim), (len(used), dim)).astype(np.float32)
    projection[used == 0] = 0.0
    return projection[inverse.reshape(tokens.shape)].sum(axis=1)
