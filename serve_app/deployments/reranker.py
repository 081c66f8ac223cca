"""Reranker: re-orders retrieved candidates before they are returned.

For now Maximal Marginal Relevance (Carbonell & Goldstein, 1998) over the candidates' image
vectors: each pick maximises ``lambda * relevance - (1 - lambda) * max cosine to the items already
picked``, so near-duplicates give way to the next different product. It is a placeholder for the
learned rerankers; every response names the reranker that ran.
"""
from __future__ import annotations

import numpy as np

from serve_app.config import ServeAppConfig
from serve_app.errors import InputError


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, mmr_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` picks in order, and each pick's MMR score at the time it was picked."""
    n = len(relevance)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    relevance = np.asarray(relevance, dtype=np.float64)
    similarity = vectors @ vectors.T
    chosen, gains = [], []
    max_sim = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = mmr_lambda * relevance - (1.0 - mmr_lambda) * redundancy
        score[~available] = -np.inf
        pick = int(np.argmax(score))
        chosen.append(pick)
        gains.append(score[pick])
        available[pick] = False
        max_sim = np.maximum(max_sim, similarity[pick])
    return np.array(chosen, dtype=np.int64), np.array(gains, dtype=np.float32)


class Reranker:
    name = "mmr"

    def __init__(self, config: ServeAppConfig):
        if config.reranker.name != "mmr":
            raise ValueError(f"reranker.name: only 'mmr' exists so far, got {config.reranker.name!r}")
        self.default_lambda = config.reranker.mmr_lambda

    def info(self, mmr_lambda: float) -> dict:
        return {"name": self.name, "lambda": mmr_lambda, "placeholder": True,
                "description": "MMR diversity re-ranking over the retrieved candidates (placeholder until the "
                               "learned rerankers land)"}

    def rerank(self, relevance: np.ndarray, vectors: np.ndarray, k: int, mmr_lambda: float | None = None) -> dict:
        lam = self.default_lambda if mmr_lambda is None else float(mmr_lambda)
        if not 0.0 <= lam <= 1.0:
            raise InputError(f"mmr_lambda: expected a number in [0, 1], got {lam}", field="mmr_lambda")
        order, gains = mmr(np.asarray(relevance), np.asarray(vectors, dtype=np.float32), k, lam)
        return {"order": order, "mmr_scores": gains, "reranker": self.info(lam)}

    def health(self) -> dict:
        return {"ok": True, **self.info(self.default_lambda)}
