"""Protocol E2 of EVAL.md: next purchase day on a purchase log (H&M transactions), set-valued targets.

- :func:`dedupe` keeps one row per (customer, article, day) (H&M logs a row per unit bought).
- :func:`last_day_split`: per customer, the target = the set of articles bought on their last
  purchase day, the history = their rows strictly before it; customers with both. Applied to the
  deduplicated log it is E2's test stage; applied again to the test stage's history it is the
  validation stage (each customer's last training day as the target), which is what a learned
  ranker trains on without ever seeing the test day.
- :class:`Catalogue`: the ranked items (every article of the test stage's history, E2's "all
  articles seen in training") and customers as integer indices, days as integers.
- Baselines: :func:`most_popular` (history counts), :func:`recent_popular` (counts in the
  ``window`` days before each customer's target day, MostPop fill), :func:`repurchase_popular`
  (own history most recent first, MostPop fill).
- :func:`evaluate_lists` scores top-k lists with ``recsys.metrics.ranking`` (MAP@k, Kaggle
  definition, and Recall@k) and keeps the per-customer AP for :func:`paired_bootstrap`.
- :func:`candidate_features` gives the ranker its features for (customer, candidate) pairs.
- The recipe ``ray_jobs.evaluate_next_purchase`` runs: :class:`NextPurchaseConfig`, :func:`read_inputs`,
  :func:`tower_inputs` (what the user tower may learn from), :func:`stage_candidates` (the E2
  candidate stage: repurchase, user tower and ItemKNN from ``recsys.retrieval.sources``, recent
  popularity, MostPop; merged with features) and :func:`ranked_lists`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from recsys.config import ConfigError, to_dict
from recsys.metrics.bootstrap import bootstrap_means
from recsys.metrics.ranking import average_precision_at_k, recall_at_k
from recsys.models.user_tower import UserTowerConfig
from recsys.progress import progress_bar
from recsys.retrieval.candidates import CandidateSet, merge, top_n
from recsys.retrieval.ranker import RankerConfig
from recsys.retrieval.repurchase import NEVER, Repurchase
from recsys.retrieval.sources import SourceInputs, SourcesConfig, build_sources
from recsys.retrieval.transitions import TransitionConfig
from recsys.train_loops.user_tower import UserTowerTrainConfig
from recsys.train_loops.scaling import EvalTasks, ScalingSettings

COLUMNS = ("customer_id", "article_id", "t_dat")


def dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer_id, article_id, t_dat), the first one; the log's row order is kept."""
    return frame.drop_duplicates(list(COLUMNS), keep="first").reset_index(drop=True)


@dataclass
class PurchaseStage:
    """A target day per customer and what came before it."""
    customers: np.ndarray            # (U,) str, sorted
    day: np.ndarray                  # (U,) datetime64[D]: the target day
    history: pd.DataFrame            # rows strictly before their customer's target day (log order)
    targets: list[set[str]]          # per customer: the articles bought on the target day
    n_target_rows: int

    @property
    def counts(self) -> dict[str, int]:
        return {"customers": int(len(self.customers)), "history_rows": int(len(self.history)),
                "target_rows": int(self.n_target_rows)}


def last_day_split(frame: pd.DataFrame) -> PurchaseStage:
    """E2 on a (deduplicated) log with columns customer_id, article_id, t_dat."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"a purchase log needs columns {list(COLUMNS)}; missing {missing}")
    day = pd.to_datetime(frame["t_dat"]).dt.floor("D")
    last = day.groupby(frame["customer_id"]).transform("max")
    before = day < last
    with_history = set(frame.loc[before, "customer_id"])
    target_rows = frame[(day == last) & frame["customer_id"].isin(with_history)]
    customers = np.array(sorted(with_history), dtype=object).astype(str)
    grouped = target_rows.groupby("customer_id")
    targets = grouped["article_id"].agg(set).reindex(customers)
    target_day = pd.to_datetime(grouped["t_dat"].first()).dt.floor("D").reindex(customers)
    return PurchaseStage(customers, target_day.to_numpy().astype("datetime64[D]"),
                         frame[before].reset_index(drop=True), list(targets), int(len(target_rows)))


def day_number(values) -> np.ndarray:
    """Days since 1970-01-01 as int64."""
    return np.asarray(pd.to_datetime(values).to_numpy().astype("datetime64[D]").astype(np.int64))


@dataclass
class Catalogue:
    """Integer indices: items = every article of ``items_from`` (sorted), customers = a stage's."""
    item_ids: np.ndarray

    @classmethod
    def of(cls, history: pd.DataFrame) -> "Catalogue":
        return cls(np.array(sorted(set(history["article_id"])), dtype=object).astype(str))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def index(self, articles) -> np.ndarray:
        """Item index per article, -1 for articles outside the catalogue."""
        articles = np.asarray(articles).astype(str)
        at = np.searchsorted(self.item_ids, articles).clip(0, max(self.n_items - 1, 0))
        return np.where(self.item_ids[at] == articles, at, -1).astype(np.int64)


@dataclass
class StageArrays:
    """A stage's history as integer arrays in log order (customer row, item index, day number)."""
    customer: np.ndarray
    item: np.ndarray
    day: np.ndarray
    price: np.ndarray
    ref_day: np.ndarray              # (U,) day number of each customer's target day
    n_customers: int

    @classmethod
    def of(cls, stage: PurchaseStage, catalogue: Catalogue) -> "StageArrays":
        history = stage.history
        customer = np.searchsorted(stage.customers, history["customer_id"].to_numpy().astype(str))
        item = catalogue.index(history["article_id"])
        keep = item >= 0
        price = (history["price"].to_numpy(np.float64) if "price" in history else np.full(len(history), np.nan))
        return cls(customer[keep], item[keep], day_number(history["t_dat"])[keep], price[keep],
                   day_number(stage.day), len(stage.customers))

    def sequences(self) -> list[np.ndarray]:
        """Per customer, the items in purchase order (day, then log order)."""
        order = np.lexsort((np.arange(len(self.customer)), self.day, self.customer))
        bounds = np.searchsorted(self.customer[order], np.arange(1, self.n_customers))
        return np.split(self.item[order], bounds)

    def repurchase(self, n_items: int) -> Repurchase:
        return Repurchase.fit(self.customer, self.item, self.day, self.n_customers, n_items)


# ---------------------------------------------------------------- baselines and metrics

def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item indices by count, highest first; equal counts: lower index (article id) first."""
    counts = np.asarray(counts)
    return np.lexsort((np.arange(len(counts)), -counts))


def most_popular(arrays: StageArrays, n_items: int, k: int) -> np.ndarray:
    """E2 MostPop: the k items bought most often in the history (same list for every customer)."""
    return popularity_order(np.bincount(arrays.item, minlength=n_items))[:k]


def fill(first: Sequence[int], filler: Sequence[int], k: int) -> np.ndarray:
    """``first`` then ``filler`` items not already listed, cut at k."""
    first = list(first)[:k]
    seen = set(first)
    return np.asarray(first + [i for i in filler if i not in seen][:k - len(first)], dtype=np.int64)


def recent_popular(arrays: StageArrays, n_items: int, k: int, window: int = 30) -> list[np.ndarray]:
    """E2 RecentPop: per customer the items bought most in [target day - window, target day),
    filled with MostPop."""
    mostpop = most_popular(arrays, n_items, k)
    lists, cache = [], {}
    for ref in arrays.ref_day:
        if ref not in cache:
            inside = (arrays.day >= ref - window) & (arrays.day < ref)
            counts = np.bincount(arrays.item[inside], minlength=n_items)
            top = popularity_order(counts)[:k]
            cache[ref] = fill(top[counts[top] > 0], mostpop, k)
        lists.append(cache[ref])
    return lists


def repurchase_popular(repurchase: Repurchase, mostpop: np.ndarray, k: int) -> list[np.ndarray]:
    """E2 Repurchase + MostPop: own history most recent first, then MostPop."""
    return [fill(items, mostpop, k) for items in repurchase.lists(np.arange(repurchase.n_customers))]


def evaluate_lists(lists: Sequence[Sequence[int]], targets: Sequence[set[str]], item_ids: np.ndarray,
                   k: int = 12) -> dict:
    """{"map@k", "recall@k", "per_customer_ap"} of top-k item-index lists against article-id sets
    (targets outside the catalogue count in the denominators and can never be hit)."""
    ap, recall = [], []
    for items, target in zip(lists, targets):
        recommended = [item_ids[i] for i in list(items)[:k]]
        ap.append(average_precision_at_k(recommended, target, k))
        recall.append(recall_at_k(recommended, target, k))
    return {f"map@{k}": float(np.mean(ap)), f"recall@{k}": float(np.mean(recall)),
            "per_customer_ap": np.asarray(ap)}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of a - b (per customer) and its percentile bootstrap CI over customers."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = bootstrap_means(diff, n, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean_difference": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi), "level": level,
            "resamples": n, "share_of_resamples_above_0": float((means > 0).mean())}


# ---------------------------------------------------------------- ranker features

@dataclass
class ItemTimeline:
    """Per-item purchase counts before any day: cumulative daily counts (days x items, int32)."""
    first: int
    cumulative: np.ndarray           # (D + 1, I): purchases on days < first + d
    first_day: np.ndarray            # (I,) first purchase day (NEVER-far when none)
    price: np.ndarray                # (I,) mean price in the history (NaN: unknown)

    @classmethod
    def fit(cls, arrays: StageArrays, n_items: int) -> "ItemTimeline":
        first = int(arrays.day.min()) if len(arrays.day) else 0
        last = int(max(arrays.day.max() if len(arrays.day) else 0, arrays.ref_day.max()))
        daily = np.zeros((last - first + 2, n_items), dtype=np.int32)
        np.add.at(daily, (arrays.day - first + 1, arrays.item), 1)
        first_day = np.full(n_items, np.iinfo(np.int64).max // 2, dtype=np.int64)
        np.minimum.at(first_day, arrays.item, arrays.day)
        total = np.bincount(arrays.item, weights=np.nan_to_num(arrays.price), minlength=n_items)
        counted = np.bincount(arrays.item[~np.isnan(arrays.price)], minlength=n_items)
        price = np.where(counted > 0, total / np.maximum(counted, 1), np.nan)
        return cls(first, np.cumsum(daily, axis=0, dtype=np.int32), first_day, price)

    def before(self, day: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Purchases of ``items`` on days < ``day`` (elementwise)."""
        at = (np.asarray(day) - self.first).clip(0, len(self.cumulative) - 1)
        return self.cumulative[at, items]

    def window(self, day: np.ndarray, items: np.ndarray, days: int) -> np.ndarray:
        return self.before(day, items) - self.before(np.asarray(day) - days, items)

    def top_recent(self, day: int, days: int, n: int) -> np.ndarray:
        """The n items bought most in [day - days, day) (only items bought there)."""
        at = lambda d: int(np.clip(d - self.first, 0, len(self.cumulative) - 1))
        counts = self.cumulative[at(day)] - self.cumulative[at(day - days)]
        top = popularity_order(counts)[:n]
        return top[counts[top] > 0]


@dataclass
class CustomerProfile:
    """Per-customer aggregates of a stage's history (plus optional profile columns)."""
    mean_price: np.ndarray
    last_day: np.ndarray
    n_days: np.ndarray
    n_rows: np.ndarray
    age: np.ndarray

    @classmethod
    def fit(cls, arrays: StageArrays, age: np.ndarray | None = None) -> "CustomerProfile":
        n = arrays.n_customers
        counts = np.bincount(arrays.customer, minlength=n)
        price_sum = np.bincount(arrays.customer, weights=np.nan_to_num(arrays.price), minlength=n)
        last = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last, arrays.customer, arrays.day)
        days = np.unique(np.stack([arrays.customer, arrays.day]), axis=1)[0]
        return cls(price_sum / np.maximum(counts, 1), last, np.bincount(days, minlength=n), counts,
                   np.full(n, np.nan) if age is None else np.asarray(age, dtype=np.float64))


def group_keys(item_ids: np.ndarray, groups: Mapping[str, Mapping[str, object]] | None) -> dict[str, np.ndarray]:
    """Per item, an integer code for each grouping: ``product_code`` (the article id's first 7
    digits, every H&M article) and any {article_id: value} mapping given (e.g. product_type_no);
    -1 = unknown."""
    out = {"product_code": pd.factorize(pd.Series(item_ids).str[:7])[0].astype(np.int64)}
    for name, mapping in (groups or {}).items():
        values = pd.Series(item_ids).map(mapping)
        codes = pd.factorize(values)[0].astype(np.int64)          # NaN -> -1
        out[name] = codes
    return out


class GroupAffinity:
    """Per (customer, group value): last day and number of rows of the customer's history in it."""

    def __init__(self, arrays: StageArrays, codes: np.ndarray):
        self.codes = codes
        self.size = int(codes.max()) + 2 if len(codes) else 1
        c = codes[arrays.item]
        known = c >= 0
        key = arrays.customer[known] * self.size + c[known]
        self.keys, inverse = np.unique(key, return_inverse=True)
        self.count = np.bincount(inverse, minlength=len(self.keys))
        self.last = np.full(len(self.keys), -1, dtype=np.int64)
        np.maximum.at(self.last, inverse, arrays.day[known])

    def features(self, rows: np.ndarray, items: np.ndarray, ref: np.ndarray, n_rows: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(share of the customer's history rows in the item's group, days since the last one:
        NEVER if none); NaN share for items of unknown group."""
        c = self.codes[items]
        key = rows * self.size + np.maximum(c, 0)
        at = np.searchsorted(self.keys, key).clip(0, max(len(self.keys) - 1, 0))
        found = (self.keys[at] == key) & (c >= 0) if len(self.keys) else np.zeros(len(key), bool)
        share = np.where(found, self.count[at] / np.maximum(n_rows, 1), 0.0) if len(self.keys) else np.zeros(len(key))
        share = np.where(c >= 0, share, np.nan)
        since = np.where(found, ref - self.last[at], NEVER) if len(self.keys) else np.full(len(key), NEVER)
        return share.astype(np.float32), since.astype(np.float32)


def candidate_features(rows: np.ndarray, items: np.ndarray, arrays: StageArrays, repurchase: Repurchase,
                       timeline: ItemTimeline, profile: CustomerProfile,
                       affinities: Mapping[str, GroupAffinity]) -> dict[str, np.ndarray]:
    """Ranker features of (customer ``rows``, item ``items``) pairs at each customer's target day.
    Everything is computed from the stage's history before that day; "days since" and the
    repurchase rank are log1p(value) with NEVER for pairs that never happened."""
    ref = arrays.ref_day[rows]
    out = {name: (np.log1p(value) if "days_since" in name or name.endswith("rank") else value)
           for name, value in repurchase.features(rows, items, ref).items()}
    for days in (7, 30):
        out[f"item_bought_{days}d"] = np.log1p(timeline.window(ref, items, days)).astype(np.float32)
    out["item_bought_before"] = np.log1p(timeline.before(ref, items)).astype(np.float32)
    age = ref - timeline.first_day[items]
    out["item_age_days"] = np.log1p(np.where(age > 0, age, NEVER)).astype(np.float32)   # not yet sold: NEVER
    price = timeline.price[items]
    out["price_vs_customer_mean"] = (price / np.maximum(profile.mean_price[rows], 1e-6)).astype(np.float32)
    out["customer_days_since_last"] = np.log1p(ref - profile.last_day[rows]).astype(np.float32)
    out["customer_days"] = np.log1p(profile.n_days[rows]).astype(np.float32)
    out["customer_age"] = profile.age[rows].astype(np.float32)
    for name, affinity in affinities.items():
        share, since = affinity.features(rows, items, ref, profile.n_rows[rows])
        out[f"same_{name}_share"], out[f"same_{name}_days_since"] = share, np.log1p(since).astype(np.float32)
    # unknown (no age, item of unknown group) -> -1: every ranker kind takes the features as they are
    return {name: np.nan_to_num(value, nan=-1.0).astype(np.float32) for name, value in out.items()}


# ---------------------------------------------------------------------- the E2 recipe

@dataclass
class PurchaseSourcesConfig:
    """E2's candidate sources: how many items each proposes."""
    repurchase: int = 100        # most recent own purchases proposed
    user_tower: int = 50
    itemknn: int = 50
    recent: int = 50             # items bought most in the recent_days before the target day
    recent_days: int = 7
    mostpop: int = 12
    chunk_size: int = 256        # customers scored at once


@dataclass
class NextPurchaseConfig:
    """E2's settings."""
    scaling: ScalingSettings = field(default_factory=ScalingSettings)  # Ray Train workers of the stage's fits
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
    # the user tower's frozen item vectors: attributes = a truncated SVD of TF-IDF of the articles' category,
    # attribute and title tokens (``articles``) | none (item-ID embeddings only)
    tower_item_vectors: str = "attributes"
    attributes_dim: int = 128
    train: UserTowerTrainConfig = field(default_factory=UserTowerTrainConfig)
    itemknn: TransitionConfig = field(default_factory=TransitionConfig)
    sources: PurchaseSourcesConfig = field(default_factory=PurchaseSourcesConfig)
    ranker: RankerConfig = field(default_factory=lambda: RankerConfig(kind="gbdt", k=12))
    tasks: EvalTasks = field(default_factory=EvalTasks)   # Ray tasks of the heavy steps (ray_jobs.common.tasks)
    bootstrap: int = 10_000
    seed: int = 0
    # test: report each customer's last purchase day | validation: report the day before it, the test
    # days removed (make choices there; recsys.eval.next_purchase.purchase_stages)
    holdout: str = "test"

    def __post_init__(self):
        if self.tower_item_vectors not in ("attributes", "none"):
            raise ValueError(f"tower_item_vectors must be 'attributes' or 'none', got {self.tower_item_vectors!r}")
        if self.holdout not in ("test", "validation"):
            raise ValueError(f"holdout must be 'test' or 'validation', got {self.holdout!r}")


HOLDOUT = {"test": "test (each customer's last purchase day)",
           "validation": "VALIDATION (each customer's last purchase day removed; the day before it reported)"}


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def read_inputs(cfg: NextPurchaseConfig) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
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


def article_attributes(cfg: NextPurchaseConfig, item_ids: np.ndarray) -> tuple[object | None, dict]:
    """TF-IDF of the articles' category, attribute and title tokens in ``item_ids`` order (zero rows:
    articles without metadata) for the tower's item side; None without an articles file."""
    if cfg.tower_item_vectors == "none":
        return None, {"source": "none (tower_item_vectors: none)"}
    path = _optional(Path(cfg.data_dir) / cfg.articles) if cfg.articles else None
    if path is None:
        return None, {"source": "none (no articles file)"}
    from recsys.data.item_catalog import CatalogConfig
    from recsys.retrieval.content import catalog_attribute_vectors

    return catalog_attribute_vectors(CatalogConfig(catalog=str(path)), item_ids.astype(str))


def tower_item_vectors(cfg: NextPurchaseConfig, attributes) -> np.ndarray | None:
    """(I, k) item vectors for the user tower's item side (``tower_item_vectors``), or None."""
    if cfg.tower_item_vectors == "none" or attributes is None:
        return None
    from recsys.retrieval.content import dense_vectors

    return dense_vectors(attributes, cfg.attributes_dim, cfg.seed)


def article_vectors(cfg: NextPurchaseConfig, item_ids: np.ndarray) -> tuple[np.ndarray | None, dict]:
    """The tower's item vectors from the articles (one Ray task in E2) and what they came from."""
    attributes, info = article_attributes(cfg, item_ids)
    return tower_item_vectors(cfg, attributes), info


def run_name(cfg: NextPurchaseConfig, frame: pd.DataFrame) -> str:
    """The tower resumes only a run with the same tower settings on the same log."""
    # holdout and ranker_stages change the tower's training rows (tower_inputs): another run
    settings = {key: to_dict(cfg)[key] for key in ("user_tower", "tower_item_vectors", "attributes_dim", "train",
                                                    "seed", "articles", "holdout", "ranker_stages")}
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


def stage_candidates(cfg: NextPurchaseConfig, arrays: StageArrays, n_items: int, user_vectors: np.ndarray,
                     item_vectors: np.ndarray, customer_age: np.ndarray | None, groups: dict[str, np.ndarray],
                     progress: str | None = None) -> tuple[CandidateSet, np.ndarray]:
    """Merged candidates with features for every customer of a stage, and the stage's MostPop list."""
    src = cfg.sources
    sequences = arrays.sequences()
    repurchase = arrays.repurchase(n_items)
    fitted = build_sources(SourcesConfig(sources=["user_tower", "itemknn"], itemknn=cfg.itemknn),
                           SourceInputs(sequences, n_items, user_vectors, item_vectors))
    tower, transitions = fitted["user_tower"], fitted["itemknn"]
    timeline = ItemTimeline.fit(arrays, n_items)
    profile = CustomerProfile.fit(arrays, customer_age)
    affinities = {name: GroupAffinity(arrays, codes) for name, codes in groups.items()}
    mostpop = most_popular(arrays, n_items, max(src.mostpop, cfg.k))
    recent_cache: dict[int, np.ndarray] = {}
    parts = []
    for start in progress_bar(range(0, arrays.n_customers, src.chunk_size), progress):
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


def candidate_labels(candidates: CandidateSet, targets: list[set[int]]) -> np.ndarray:
    return np.array([item in targets[row] for row, item in zip(candidates.row, candidates.item)], dtype=np.int8)


def labelled_candidates(cfg: NextPurchaseConfig, arrays: StageArrays, n_items: int, user_vectors: np.ndarray,
                        item_vectors: np.ndarray, customer_age: np.ndarray | None, groups: dict[str, np.ndarray],
                        targets: list[set[int]]) -> tuple[CandidateSet, np.ndarray, np.ndarray]:
    """A stage's candidates, its MostPop list and the candidates' labels (one Ray task per stage in E2)."""
    candidates, mostpop = stage_candidates(cfg, arrays, n_items, user_vectors, item_vectors, customer_age, groups)
    return candidates, mostpop, candidate_labels(candidates, targets)


def purchase_stages(frame: pd.DataFrame, ranker_stages: int, where: str = "the log",
                    holdout: str = "test") -> dict[str, PurchaseStage]:
    """The test stage and the validation stages val1 (one purchase day earlier), val2, ... the ranker
    learns from (up to ``ranker_stages``). ``holdout: validation`` first removes every customer's last
    purchase day, so the reported stage is the validation day and the test days are never read: the
    split to make choices on (features, settings) before the one final run on the test days."""
    if holdout == "validation":
        frame = last_day_split(frame).history
    stages = {"test": last_day_split(frame)}
    previous = stages["test"]
    for depth in range(1, max(1, ranker_stages) + 1):     # val1 = one purchase day earlier, ...
        previous = last_day_split(previous.history)
        if not len(previous.customers):
            break
        stages[f"val{depth}"] = previous
    if "val1" not in stages:
        raise ConfigError(f"{where}: no customer buys on 3 or more days ({4 if holdout == 'validation' else 3} with "
                          f"holdout: {holdout}): nothing to train a ranker on")
    return stages


def customer_and_item_groups(customers_table: pd.DataFrame | None, articles_table: pd.DataFrame | None,
                             stages: dict[str, PurchaseStage], catalogue: Catalogue
                             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per stage the customers' ages (where the customers table has them) and the items' group keys."""
    customer_age = {}
    if customers_table is not None and "age" in customers_table:
        ages = customers_table.assign(customer_id=customers_table["customer_id"].astype(str)).drop_duplicates(
            "customer_id").set_index("customer_id")["age"]
        customer_age = {s: pd.to_numeric(ages.reindex(stages[s].customers), errors="coerce").to_numpy() for s in stages}
    mapping = ({"product_type": dict(zip(articles_table["article_id"].astype(str), articles_table["product_type_no"]))}
               if articles_table is not None else {})
    groups = group_keys(catalogue.item_ids, mapping)
    return customer_age, groups


def fit_stage_ranker(config: RankerConfig, candidates: dict[str, CandidateSet], labels: dict[str, np.ndarray],
                     n_customers: dict[str, int]):
    """The ranker trained on every validation stage's candidates; (ranker, scores of val1 and test).
    ``n_customers``: per stage (test, val1, ...), its number of customers."""
    from recsys.retrieval.ranker import CandidateRanker

    val_names = [s for s in n_customers if s != "test"]
    names = sorted(candidates["test"].features)
    matrix = lambda s: np.stack([candidates[s].features[n] for n in names], axis=1)  # noqa: E731
    # every validation stage's customers are their own groups (row offsets keep them apart)
    offsets = np.cumsum([0] + [n_customers[s] for s in val_names])
    ranker = CandidateRanker(config, names).fit(
        np.concatenate([matrix(s) for s in val_names]), np.concatenate([labels[s] for s in val_names]),
        np.concatenate([candidates[s].row + offset for s, offset in zip(val_names, offsets)]))
    return ranker, {s: ranker.predict(matrix(s)) for s in ("val1", "test")}


def e2_report(cfg: NextPurchaseConfig, stages: dict, arrays: dict, catalogue: Catalogue, lists: dict,
              candidates: dict, labels: dict, scores: dict, stage_mostpop: dict, counts: dict, ranker,
              fitted: dict) -> tuple[dict, dict, dict]:
    """metrics.json of E2: (report, {method: MAP@k / Recall@k}, model vs Repurchase + MostPop)."""
    from recsys.train_loops.user_tower import SCORE

    k = cfg.k
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
              "reported_split": HOLDOUT[cfg.holdout],
              "config": to_dict(cfg)}
    return report, metrics, comparison


def print_e2_summary(report: dict, metrics: dict, comparison: dict, k: int, out_dir: Path) -> None:
    from recsys.eval.report import print_metric_table

    print(f"reported split: {report['reported_split']}")
    print_metric_table(metrics, [f"map@{k}", f"recall@{k}"], [f"MAP@{k}", f"Recall@{k}"], name_width=34)
    print(f"model - Repurchase+MostPop AP: {comparison['mean_difference']:+.4f} "
          f"(95% CI {comparison['ci_low']:+.4f} .. {comparison['ci_high']:+.4f})")
    print(f"timings (s): {report['timings_s']}")
    print(f"report: {out_dir / 'metrics.json'}; plot {out_dir / 'comparison.png'}")
