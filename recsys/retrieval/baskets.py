"""Basket co-occurrence: items bought together (a candidate source for logs with baskets).

Why beside ItemKNN on transitions: in a purchase log a day's items form one basket whose row order
means nothing (H&M), so "adjacent" pairs inside a basket are an arbitrary subset of the pairs that
were really bought together, and the next item is most often another item of the current basket
(on the H&M subset 77% of test targets share the day of the item before them).

Fit: every ordered pair (i, j), i != j, of items in one basket of a training sequence counts
``1 / (basket size - 1)`` (each item spreads one unit over its partners: a 37-item haul does not
outweigh many small baskets; ``normalise: false`` counts 1 per pair). Score: the items of the
user's last ``recent_baskets`` baskets, the most recent with weight 1, the one before ``decay``,
then ``decay**2``...; an item in several of them adds up. Sparse end to end, like
:class:`~recsys.retrieval.transitions.TransitionKNN`; only items with a co-occurrence are proposed,
equal scores are ordered by popularity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.candidates import break_ties


@dataclass
class BasketConfig:
    enabled: bool = True          # used only when the log has baskets (tied order values)
    recent_baskets: int = 3       # the user's last baskets that score
    decay: float = 0.5            # weight of each older basket relative to the next one
    normalise: bool = True        # pair weight 1 / (basket size - 1); False: 1 per pair


def basket_pairs(sequences: Sequence[np.ndarray], baskets: Sequence[np.ndarray], normalise: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, weight) for every ordered pair of different positions in one basket (same item twice
    in a basket: no pair)."""
    parts_a, parts_b, parts_w = [], [], []
    for seq, basket in zip(sequences, baskets):
        if len(seq) < 2:
            continue
        seq, basket = np.asarray(seq, np.int64), np.asarray(basket, np.int64)
        # all position pairs of the sequence inside one basket: baskets are runs, so pair each
        # position with the positions of its own run
        start = np.searchsorted(basket, basket, side="left")
        end = np.searchsorted(basket, basket, side="right")
        size = end - start
        left = np.repeat(np.arange(len(seq)), size)
        right = np.concatenate([np.arange(s, e) for s, e in zip(start, end)])
        keep = seq[left] != seq[right]
        left, right = left[keep], right[keep]
        parts_a.append(seq[left])
        parts_b.append(seq[right])
        parts_w.append(1.0 / np.maximum(size[left] - 1, 1) if normalise else np.ones(len(left)))
    if not parts_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_w)


class BasketKNN:
    name = "basket"

    def __init__(self, matrix: sp.csr_matrix, config: BasketConfig, history_baskets: Sequence[np.ndarray]):
        self.matrix = matrix.tocsr()
        self.config = config
        self.history_baskets = history_baskets      # per stage user, aligned with the histories scored

    @classmethod
    def fit_baskets(cls, sequences: Sequence[np.ndarray], baskets: Sequence[np.ndarray], n_items: int,
                    history_baskets: Sequence[np.ndarray], config: BasketConfig = BasketConfig()) -> "BasketKNN":
        a, b, w = basket_pairs(sequences, baskets, config.normalise)
        matrix = sp.coo_matrix((w, (a, b)), shape=(n_items, n_items)).tocsr()
        matrix.sum_duplicates()
        return cls(matrix, config, history_baskets)

    def user_weights(self, histories: Sequence[np.ndarray], rows: np.ndarray | None = None) -> sp.csr_matrix:
        """(B, I) sparse: the items of each user's last ``recent_baskets`` baskets, weighted by recency."""
        rows = np.arange(len(histories)) if rows is None else np.asarray(rows)
        out_rows, cols, values = [], [], []
        for local, (history, row) in enumerate(zip(histories, rows)):
            basket = np.asarray(self.history_baskets[row])[:len(history)]
            if len(history) == 0:
                continue
            age = basket[-1] - basket                      # 0 = the most recent basket
            recent = age < self.config.recent_baskets
            out_rows.append(np.full(int(recent.sum()), local))
            cols.append(np.asarray(history)[recent])
            values.append(self.config.decay ** age[recent].astype(np.float64))
        if not out_rows:
            return sp.csr_matrix((len(histories), self.matrix.shape[0]))
        return sp.coo_matrix((np.concatenate(values), (np.concatenate(out_rows), np.concatenate(cols))),
                             shape=(len(histories), self.matrix.shape[0])).tocsr()

    def scores(self, histories: Sequence[np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        """(len(histories), I) float32 basket co-occurrence scores of users ``rows`` (0: none)."""
        return (self.user_weights(histories, rows) @ self.matrix).toarray().astype(np.float32)

    def tie_break(self, scores: np.ndarray, order: np.ndarray) -> np.ndarray:
        return break_ties(scores, order)

    def valid(self, scores: np.ndarray) -> np.ndarray:
        return scores > 0
