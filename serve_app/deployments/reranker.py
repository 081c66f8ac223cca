"""Reranker: re-orders retrieved candidates before they are returned.

- User recommendations: the served users run's learned reranker (DeepFM or the listwise
  transformer of ``recsys.models.rerankers``, trained by ``ray_jobs.train_users`` on the same
  candidate sources and features, see ``serve_app.users.LearnedReranker``) scores each
  (user, candidate) pair. Without one (a run trained with ``reranker: null``, or
  ``reranker.name: mmr``) the declared fallback orders them by reciprocal-rank fusion of the
  sources' lists. Either way ``mmr_lambda`` < 1 then trades that order for diversity.
- Search / similar items: the learned rerankers score (user, item) pairs from a user's history,
  which a search query does not have, so these are ordered by Maximal Marginal Relevance
  (Carbonell & Goldstein, 1998) over the retrieval scores and the candidates' image vectors: each
  pick maximises ``lambda * relevance - (1 - lambda) * max cosine to the items already picked``.

Every response names the reranker that ran.
"""
from __future__ import annotations

import numpy as np

from serve_app.config import ServeAppConfig
from serve_app.deployments.base import Versioned
from serve_app.errors import InputError
from serve_app.users import LearnedReranker, has_reranker


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


def min_max(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] (all equal: all 1), so lambda weighs relevance against cosine on one scale."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.ones_like(values)


class Reranker(Versioned):
    name = "mmr"

    def __init__(self, config: ServeAppConfig):
        super().__init__(config)
        self.default_lambda = config.reranker.mmr_lambda
        self.learned = self._load(self.version)

    def _load(self, version: dict) -> LearnedReranker | None:
        users_run = version.get("users_run")
        if self.config.reranker.name == "mmr" or not users_run or not has_reranker(users_run):
            return None
        return LearnedReranker(users_run)

    def _swap(self, version: dict, state: LearnedReranker | None) -> None:
        self.learned = state

    @staticmethod
    def _lambda(mmr_lambda: float | None, default: float) -> float:
        lam = default if mmr_lambda is None else float(mmr_lambda)
        if not 0.0 <= lam <= 1.0:
            raise InputError(f"mmr_lambda: expected a number in [0, 1], got {lam}", field="mmr_lambda")
        return lam

    def info(self, mmr_lambda: float) -> dict:
        return {"name": self.name, "lambda": mmr_lambda, "learned": False,
                "description": "MMR diversity re-ranking over the retrieval scores and image vectors (the learned "
                               "rerankers score (user, item) pairs and need a user; see /api/recommend/user)"}

    def rerank(self, relevance: np.ndarray, vectors: np.ndarray, k: int, mmr_lambda: float | None = None) -> dict:
        lam = self._lambda(mmr_lambda, self.default_lambda)
        order, gains = mmr(np.asarray(relevance), np.asarray(vectors, dtype=np.float32), k, lam)
        return {"order": order, "mmr_scores": gains, "reranker": self.info(lam)}

    def rerank_user(self, candidates: dict, history: list[str], k: int, mmr_lambda: float | None = None) -> dict:
        """Order a user's candidates (``Retriever.user_candidates``): learned scores (or the fallback
        fusion), then MMR with ``mmr_lambda`` over the image vectors (1 = the scores' order)."""
        self.follow_pin()
        lam = self._lambda(mmr_lambda, self.config.users.mmr_lambda)
        learned = self.learned
        ids = [item["item_id"] for item in candidates["items"]]
        if learned is not None:
            scores = learned.score(ids, candidates["source_scores"], candidates["popularity"], history)
            info = {"name": learned.kind, "learned": True, "run": learned.run,
                    "description": f"{learned.kind} trained on the users run's candidate lists "
                                   f"(ray_jobs.train_users), then MMR with lambda {lam:g} over image vectors"}
        else:
            scores = np.asarray(candidates["scores"], dtype=np.float32)
            reason = ("reranker.name is mmr" if self.config.reranker.name == "mmr"
                      else "the served users run has no learned reranker")
            info = {"name": "mmr", "learned": False, "fallback": True,
                    "description": f"fallback ({reason}): reciprocal-rank fusion of the candidate sources' lists, "
                                   f"then MMR with lambda {lam:g} over image vectors"}
        order, gains = mmr(min_max(scores), np.asarray(candidates["vectors"], dtype=np.float32), k, lam)
        return {"order": order, "scores": scores[order].astype(np.float32), "mmr_scores": gains,
                "reranker": {**info, "lambda": lam}}

    def health(self) -> dict:
        learned = self.learned
        return {"ok": True, **self.info(self.default_lambda),
                "user_reranker": learned.kind if learned is not None else "mmr (fallback)",
                "version": self.version_info()}
