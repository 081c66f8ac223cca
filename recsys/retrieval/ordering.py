"""Which order the recommender puts its merged candidates in: the learned ranker's, or a fallback,
chosen on validation users only.

Why: a ranker trained on few targets can order the union of the sources' candidates worse than the
best single source already did (a real sequences-only clothing log: HR@10 0.0325 against its own
ItemKNN source's 0.0336), and nothing would notice. The fallbacks are the sources' reciprocal-rank
fusion (``rank_fusion``, untrained) and each source's own order (``source:<name>``). The learned
order is judged by the ranker's held-out scores (``CandidateRanker.held_out_scores``: each
validation user scored by a model fitted without them), every order by the same full-ranking
metric on the validation targets; the learned order is kept when its HR@k + NDCG@k is at least the
best fallback's, else the best fallback is served. The test targets are never looked at.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recsys.metrics.ranking import hit_rate_at_k, ndcg_at_k
from recsys.retrieval.candidates import CandidateSet
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.recommender import StageResult, recommender_ranks, reciprocal_rank_fusion

LEARNED, FUSION, SOURCE = "learned", "rank_fusion", "source:"


def orders(candidates: CandidateSet) -> list[str]:
    """Every order the candidates can be served in: the learned one first, then the fallbacks."""
    return [LEARNED, FUSION, *(SOURCE + name for name in candidates.rank)]


def strict_order(rows: np.ndarray, scores: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """(M,) float32 in (0, 1]: each candidate's place in its user's list by ``scores``, equal scores by
    ``popularity`` (then item order), as 1 - position / size. Why not the scores themselves: float32
    (and ``ranked_scores``' 2 + score) merges close values, and ``target_ranks`` counts ties in the
    target's favour; positions stay apart at any catalog size."""
    order = np.lexsort((-np.asarray(popularity, np.float64), -np.asarray(scores, np.float64), rows))
    sorted_rows = rows[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_rows)) + 1] if len(rows) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(rows)])
    position = np.arange(len(rows)) - np.repeat(starts, sizes)
    out = np.empty(len(rows), np.float32)
    out[order] = 1.0 - position / np.repeat(sizes, sizes).astype(np.float64)
    return out


def order_scores(candidates: CandidateSet, order: str, ranker_scores: np.ndarray | None,
                 popularity: Popularity) -> np.ndarray:
    """(M,) scores in (0, 1] ordering each user's candidates by ``order`` (``ranked_scores`` puts
    them above every non-candidate), strictly (:func:`strict_order`, equal scores by popularity).
    A source's order: its own list first, then the candidates it did not propose by popularity, as
    the source's own ranking goes on where it has no score."""
    if order == LEARNED:
        if ranker_scores is None:
            raise ValueError("the learned order needs the ranker's scores")
        base = np.asarray(ranker_scores, dtype=np.float64)
    elif order == FUSION:
        base = reciprocal_rank_fusion(candidates.rank, candidates.proposed).astype(np.float64)
    elif order.startswith(SOURCE) and order[len(SOURCE):] in candidates.rank:
        name = order[len(SOURCE):]
        # listed: minus the rank (0 first); not listed: all equal below, so popularity orders them
        base = np.where(candidates.proposed[name], -candidates.rank[name].astype(np.float64), -np.inf)
    else:
        raise ValueError(f"unknown order {order!r}; expected one of {orders(candidates)}")
    return strict_order(candidates.row, base, popularity.order[candidates.item])


@dataclass
class OrderChoice:
    order: str                                           # the order served (and reported as the model)
    reason: str
    validation: dict[str, dict[str, float]] = field(default_factory=dict)   # order -> held-out metrics
    k: int = 10

    @property
    def learned(self) -> bool:
        return self.order == LEARNED

    def summary(self) -> dict:
        return {"served": self.order, "learned_ranker_chosen": self.learned, "reason": self.reason,
                f"validation_held_out (hr@{self.k}, ndcg@{self.k})": self.validation}


def _score(metrics: dict[str, float], k: int) -> float:
    return metrics[f"hr@{k}"] + metrics[f"ndcg@{k}"]


def choose_order(stage: StageResult, held_out_scores: np.ndarray | None, popularity: Popularity,
                 histories: Sequence[np.ndarray], targets: np.ndarray, k: int = 10, chunk_size: int = 1024,
                 configured: str = "auto") -> OrderChoice:
    """The order to serve, from the validation stage (``stage``: its candidates and targets) and the
    ranker's held-out scores of those candidates. ``configured`` other than ``auto`` forces one."""
    candidates = stage.candidates
    if configured != "auto":
        if configured not in orders(candidates):
            raise ValueError(f"order {configured!r} is not one of auto, {', '.join(orders(candidates))}")
        return OrderChoice(configured, "configured", k=k)
    validation = {}
    for order in orders(candidates):
        if order == LEARNED and held_out_scores is None:
            continue
        ranks = recommender_ranks(candidates, order_scores(candidates, order, held_out_scores, popularity),
                                  popularity, histories, targets, chunk_size)
        validation[order] = {f"hr@{k}": round(hit_rate_at_k(ranks, k), 4), f"ndcg@{k}": round(ndcg_at_k(ranks, k), 4)}
    if LEARNED not in validation:
        fallback = max(validation, key=lambda o: _score(validation[o], k))
        return OrderChoice(fallback, "no held-out ranker scores (too few validation targets to cross-fit)",
                           validation, k)
    return OrderChoice(*pick_order(validation, k), validation, k)


def pick_order(metrics: dict[str, dict[str, float]], k: int = 10, scored_on: str = "held-out") -> tuple[str, str]:
    """(order, reason): ``learned`` when its HR@k + NDCG@k is at least the best fallback's, else
    that fallback. ``metrics``: order -> {hr@k, ndcg@k} on users the learned model was not fitted on."""
    fallback = max((o for o in metrics if o != LEARNED), key=lambda o: _score(metrics[o], k))
    learned, best = _score(metrics[LEARNED], k), _score(metrics[fallback], k)
    if learned >= best:
        return LEARNED, f"{scored_on} HR@{k}+NDCG@{k} {learned:.4f} >= best fallback {fallback} {best:.4f}"
    return fallback, f"{scored_on} HR@{k}+NDCG@{k} of the learned ranker {learned:.4f} < {fallback} {best:.4f}"
