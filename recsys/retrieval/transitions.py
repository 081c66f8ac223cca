"""ItemKNN on transitions (EVAL.md E3's baseline, and a candidate source).

Fit: count how often two items are adjacent in the training sequences (``symmetric``: a->b and
b->a both count, "co-occurrence of adjacent items"; else only a->b). Self-transitions (the same
item twice in a row) are dropped: the user's history is excluded from every list anyway.
Score: for a user whose last three items are (..., c, b, a), item j scores
``1 * M[a, j] + 0.5 * M[b, j] + 0.25 * M[c, j]``; an item among the last three twice adds up.
Most items score 0 for a user (no transition), and ``target_ranks`` counts ties in the target's
favour, so :meth:`TransitionKNN.tie_break` orders equal scores by popularity (what the list shown
to a user would do); only items with a transition count are proposed as candidates.
Sparse end to end: a chunk of users is a sparse (B, I) weight matrix times the sparse (I, I) counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp


@dataclass
class TransitionConfig:
    weights: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])  # last item first
    symmetric: bool = True


class TransitionKNN:
    name = "itemknn"

    def __init__(self, matrix: sp.csr_matrix, weights: Sequence[float]):
        self.matrix = matrix.tocsr()
        self.weights = np.asarray(weights, dtype=np.float64)

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], n_items: int, config: TransitionConfig = TransitionConfig()
            ) -> "TransitionKNN":
        sources, targets = [], []
        for seq in sequences:
            if len(seq) > 1:
                sources.append(seq[:-1])
                targets.append(seq[1:])
        a = np.concatenate(sources) if sources else np.zeros(0, dtype=np.int64)
        b = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
        keep = a != b
        a, b = a[keep], b[keep]
        if config.symmetric:
            a, b = np.concatenate([a, b]), np.concatenate([b, a])
        matrix = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_items, n_items)).tocsr()
        matrix.sum_duplicates()
        return cls(matrix, config.weights)

    def user_weights(self, histories: Sequence[np.ndarray], weights: np.ndarray | None = None) -> sp.csr_matrix:
        """(B, I) sparse: each user's last len(weights) items with their weights (last item first)."""
        weights = self.weights if weights is None else weights
        return recent_item_weights(histories, weights, self.matrix.shape[0])

    def scores(self, histories: Sequence[np.ndarray], rows: np.ndarray | None = None,
               weights: Sequence[float] | None = None) -> np.ndarray:
        """(len(histories), I) float32 transition scores (0: no transition from the recent items);
        ``rows`` is accepted for the common source signature and unused."""
        product = self.user_weights(histories, weights) @ self.matrix
        return product.toarray().astype(np.float32)

    def tie_break(self, scores: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Scores, then popularity ``order`` (in (0, 1]) among equal scores. Exact when the weights
        are multiples of the smallest one (the default 1, 0.5, 0.25): scores then differ by at
        least that weight, and the popularity term stays below half of it."""
        return scores.astype(np.float64) + 0.5 * float(self.weights.min()) * order

    def valid(self, scores: np.ndarray) -> np.ndarray | None:
        return scores > 0


def recent_item_weights(histories: Sequence[np.ndarray], weights: Sequence[float], n_items: int) -> sp.csr_matrix:
    """(B, n_items) sparse: each user's last len(weights) items with their weights (last item first);
    an item twice among them adds up. Shared by the sources that score from the recent items."""
    weights = np.asarray(weights, dtype=np.float64)
    rows, cols, values = [], [], []
    for row, history in enumerate(histories):
        recent = np.asarray(history[::-1][:len(weights)], dtype=np.int64)
        rows.append(np.full(len(recent), row))
        cols.append(recent)
        values.append(weights[:len(recent)])
    if not rows:
        return sp.csr_matrix((0, n_items))
    return sp.coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(histories), n_items)).tocsr()  # duplicates add up
