"""Repurchase: the customer's own past purchases as candidates (the strongest H&M signal).

Fitted on a purchase log already reduced to item indices: per customer, the distinct items they
bought, most recently bought first (equal last-purchase days: the order of the log's rows on
that day, first row first), with per (customer, item) the last and first purchase day and the
number of distinct days it was bought. :meth:`Repurchase.lists` is EVAL.md E2's "Repurchase (own
history, most recent first)" list; :meth:`Repurchase.scores` is the same order as a candidate
source (the common ``scores(histories, rows)`` signature of ``recsys.retrieval``, items never
bought score 0 and are not proposed); :meth:`Repurchase.features` gives the ranker recency and
frequency of any (customer, item) pair.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

NEVER = 10_000.0   # "days since" of a pair that never happened (far beyond any history)


class Repurchase:
    name = "repurchase"

    def __init__(self, customer: np.ndarray, item: np.ndarray, last_day: np.ndarray, first_day: np.ndarray,
                 days_bought: np.ndarray, n_customers: int, n_items: int):
        # (customer, item) pairs sorted by customer, then most recent first (the list order)
        self.customer, self.item = customer, item
        self.last_day, self.first_day, self.days_bought = last_day, first_day, days_bought
        self.n_customers, self.n_items = n_customers, n_items
        self.starts = np.searchsorted(customer, np.arange(n_customers + 1))
        self._key = customer.astype(np.int64) * n_items + item
        self._key_order = np.argsort(self._key, kind="stable")

    @classmethod
    def fit(cls, customers: Sequence[int], items: Sequence[int], days: Sequence[int], n_customers: int,
            n_items: int) -> "Repurchase":
        """``customers``/``items``/``days`` (int day numbers): one row per purchase, in log order."""
        customers = np.asarray(customers, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        days = np.asarray(days, dtype=np.int64)
        position = np.arange(len(customers))
        # Most recent first; on the same day, the earlier row first (stable order of the log).
        order = np.lexsort((position, -days, customers))
        c, i, d = customers[order], items[order], days[order]
        key = c * n_items + i
        _, first_seen, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        # number of distinct days per pair (rows of a pair on one day count once)
        distinct_days = np.unique(np.stack([key, d]), axis=1)
        days_per_key = np.bincount(np.searchsorted(np.unique(key), distinct_days[0]), minlength=len(counts))
        first_day = np.full(len(counts), np.iinfo(np.int64).max)
        np.minimum.at(first_day, inverse, d)
        keep = np.sort(first_seen)                       # the pair's most recent row, in list order
        pair = inverse[keep]
        return cls(c[keep], i[keep], d[keep], first_day[pair], days_per_key[pair], n_customers, n_items)

    def lists(self, rows: Sequence[int]) -> list[np.ndarray]:
        """Each customer's distinct past items, most recent first."""
        return [self.item[self.starts[r]:self.starts[r + 1]] for r in np.asarray(rows, dtype=np.int64)]

    def scores(self, histories: Sequence[np.ndarray] | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), I) float32: the list order as a score (first item = list length, last = 1), 0 for
        items the customer never bought. ``histories`` is unused (the fitted log is the history)."""
        rows = np.arange(len(histories)) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.n_items), dtype=np.float32)
        for local, r in enumerate(rows):
            items = self.item[self.starts[r]:self.starts[r + 1]]
            out[local, items] = np.arange(len(items), 0, -1, dtype=np.float32)
        return out

    def tie_break(self, scores: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        return scores  # a strict order among proposed items

    def valid(self, scores: np.ndarray) -> np.ndarray:
        return scores > 0

    def features(self, rows: np.ndarray, items: np.ndarray, ref_day: np.ndarray) -> dict[str, np.ndarray]:
        """Per (customer ``rows``, item ``items``) pair at reference day ``ref_day`` (per pair):
        ``repurchase_days_since`` (days since last bought, NEVER if not), ``repurchase_days_since_first``,
        ``repurchase_count`` (distinct days bought) and ``repurchase_rank`` (position in the list;
        NEVER when absent)."""
        rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
        key = rows * self.n_items + items
        sorted_keys = self._key[self._key_order]
        at = np.searchsorted(sorted_keys, key).clip(0, max(len(sorted_keys) - 1, 0))
        found = (sorted_keys[at] == key) if len(sorted_keys) else np.zeros(len(key), bool)
        pair = self._key_order[at]
        ref = np.asarray(ref_day, dtype=np.float64)
        since = np.where(found, ref - self.last_day[pair] if len(pair) else 0.0, NEVER)
        since_first = np.where(found, ref - self.first_day[pair] if len(pair) else 0.0, NEVER)
        count = np.where(found, self.days_bought[pair] if len(pair) else 0, 0)
        rank = np.where(found, pair - self.starts[rows], NEVER)
        return {"repurchase_days_since": since.astype(np.float32),
                "repurchase_days_since_first": since_first.astype(np.float32),
                "repurchase_count": count.astype(np.float32), "repurchase_rank": rank.astype(np.float32)}
