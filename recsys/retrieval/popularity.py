"""MostPop: items by their interaction count in the training sequences, for every user alike.

Counts tie a lot (thousands of items bought once), and ``target_ranks`` counts ties in the
target's favour, so :attr:`Popularity.order` gives a strict order (count, then item index) in
(0, 1]: the list a real MostPop system would show. Other scorers use it to break their own ties.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class Popularity:
    name = "mostpop"

    def __init__(self, counts: np.ndarray):
        self.counts = np.asarray(counts, dtype=np.float64)
        n = len(self.counts)
        # rank 0 = most popular; equal counts: lower item index first
        ranking = np.lexsort((np.arange(n), -self.counts))
        rank = np.empty(n, dtype=np.int64)
        rank[ranking] = np.arange(n)
        self.order = ((n - rank) / max(n, 1)).astype(np.float64)

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], n_items: int) -> "Popularity":
        flat = np.concatenate(list(sequences)) if len(sequences) else np.zeros(0, dtype=np.int64)
        return cls(np.bincount(flat, minlength=n_items))

    def scores(self, histories: Sequence[np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        """(len(histories), I): the strict popularity order, the same row for everyone."""
        return np.broadcast_to(self.order.astype(np.float32), (len(histories), len(self.order))).copy()

    def tie_break(self, scores: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        return scores  # already a strict order

    def valid(self, scores: np.ndarray) -> np.ndarray | None:
        return None

    def feature(self, items: np.ndarray) -> np.ndarray:
        """log(1 + count): the popularity a ranker sees (scale-free across fits of different size)."""
        return np.log1p(self.counts[items]).astype(np.float32)
