"""Reranker: re-orders retrieved candidates before they are returned.

- User recommendations: the served users run's learned reranker (DeepFM or the listwise
  transformer of ``recsys.models.rerankers``, trained by ``ray_jobs.train_users`` on the same
  candidate sources and features, see ``serve_app.users.LearnedReranker``) scores each
  (user, candidate) pair. Without one (a run trained with ``reranker: null``, or
  ``reranker.name: mmr``) the declared fallback orders them by reciprocal-rank fusion of the
  sources' lists. Either way ``mmr_lambda`` < 1 then trades that order for diversity.
- Search / similar items: the learned rerankers score (user, item) pairs from a user's history,
  which a search query does not have, so these are ordered by Maximal Marginal Relevance
  (Carbonell & Goldstein, 1998) over the min-max scaled retrieval scores and the candidates' image vectors: each
  pick maximises ``lambda * relevance - (1 - lambda) * max cosine to the items already picked``.

Every response names the reranker that ran.
"""
from __future__ import annotations

import numpy as np

from recsys.models.rerankers import mmr_with_gains
from serve_app.config import ServeAppConfig
from serve_app.errors import InputError
from serve_app.users import LearnedReranker, has_reranker, reranker_served_order


class Reranker:
    """The ranking of one version: the users run's learned reranker (if any) and MMR, the library's
    (``recsys.models.rerankers.mmr_with_gains``, the one the offline evaluations use), over min-max
    scaled scores for search and users alike."""
    name = "mmr"

    def __init__(self, config: ServeAppConfig, version: dict):
        self.config = config
        self.default_lambda = config.reranker.mmr_lambda
        users_run = version.get("users_run")
        use_learned = config.reranker.name != "mmr" and users_run and has_reranker(users_run)
        # train_users compared its reranker with rank fusion on held-back users: the loser is not served
        self.served_order = reranker_served_order(users_run) if use_learned else None
        if self.served_order and self.served_order["order"] != "learned":
            use_learned = False
        self.learned = LearnedReranker(users_run) if use_learned else None

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
        order, gains = mmr_with_gains(relevance, vectors, lam, k, normalize=True)
        return {"order": order, "mmr_scores": gains, "reranker": self.info(lam)}

    def rerank_user(self, candidates: dict, history: list[str], k: int, mmr_lambda: float | None = None) -> dict:
        """Order a user's candidates (``Retriever.user_candidates``): learned scores (or the fallback
        fusion), then MMR with ``mmr_lambda`` over the image vectors (1 = the scores' order)."""
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
                      else f"the users run's reranker lost to rank fusion: {self.served_order['reason']}"
                      if self.served_order else "the served users run has no learned reranker")
            info = {"name": "mmr", "learned": False, "fallback": True,
                    "description": f"fallback ({reason}): reciprocal-rank fusion of the candidate sources' lists, "
                                   f"then MMR with lambda {lam:g} over image vectors"}
        order, gains = mmr_with_gains(scores, candidates["vectors"], lam, k, normalize=True)
        return {"order": order, "scores": scores[order].astype(np.float32), "mmr_scores": gains,
                "reranker": {**info, "lambda": lam}}

    def health(self) -> dict:
        learned = self.learned
        return {"ok": True, **self.info(self.default_lambda),
                "user_reranker": learned.kind if learned is not None else "mmr (fallback)"}
