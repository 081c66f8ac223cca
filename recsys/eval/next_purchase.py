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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from recsys.metrics.bootstrap import bootstrap_means
from recsys.metrics.ranking import average_precision_at_k, recall_at_k
from recsys.retrieval.repurchase import NEVER, Repurchase

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
