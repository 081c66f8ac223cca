"""Dense retrieval: user vectors against item vectors by exact inner product (both L2-normalised,
so cosine). Plain numpy on a chunk of users; an ANN index (``recsys.index``) can replace
:meth:`DenseSource.scores` for catalogs too large to score exhaustively."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class DenseSource:
    name = "user_tower"

    def __init__(self, user_vectors: np.ndarray, item_vectors: np.ndarray):
        self.user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)

    def scores(self, histories: Sequence[np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), I) inner products of users ``rows`` (default: the first len(histories))
        with every item; the histories themselves are already in the user vectors."""
        rows = np.arange(len(histories)) if rows is None else np.asarray(rows)
        return self.user_vectors[rows] @ self.item_vectors.T

    def tie_break(self, scores: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Equal scores ordered by popularity ``order`` (in (0, 1]). Float similarities tie exactly only
        at 0, where items with a zero vector (no ID embedding, no content vector) all sit: those get
        ``order`` scaled below half the smallest non-zero |score|, so they stay between the negative and
        the positive scores. Cheaper than ``break_ties`` (no sort of a users x items chunk)."""
        zero = scores == 0
        if not zero.any():
            return scores
        nonzero = np.abs(scores[~zero])
        step = float(nonzero.min()) if len(nonzero) else 1.0
        out = scores.astype(np.float64)
        out[zero] = 0.5 * step * np.broadcast_to(np.asarray(order, dtype=np.float64), scores.shape)[zero]
        return out

    def valid(self, scores: np.ndarray) -> np.ndarray | None:
        return None
