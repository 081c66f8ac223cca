"""Ranking metrics for recommendation lists, defined once for every evaluation.

Accuracy (one held-out target per user, protocol E3 of EVAL.md, from 0-based target ranks):
``hit_rate_at_k`` (HR@k), ``ndcg_at_k`` (one relevant item: 1/log2(rank+2) when rank < k), ``mrr``.
Set-valued targets (protocol E2, e.g. a day's basket): ``average_precision_at_k`` with the Kaggle
H&M definition (precision at each hit / min(|targets|, k)) and ``recall_at_k``.
Beyond accuracy: ``intra_list_diversity`` (mean pairwise 1 - cosine of the listed items' vectors)
and ``catalog_coverage`` (share of the catalog recommended to anyone).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def target_ranks(scores: np.ndarray, targets: np.ndarray, excluded: Sequence[Iterable[int]] | None = None
                 ) -> np.ndarray:
    """0-based rank of ``targets[u]`` in row u of ``scores`` (U, I), counting only items scoring
    strictly higher (ties in the target's favour) and ignoring ``excluded[u]`` (e.g. the user's
    history; the target itself is never excluded)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows = np.arange(len(scores))
    if excluded is not None:
        for u, items in enumerate(excluded):
            items = [i for i in items if i != targets[u]]
            scores[u, items] = -np.inf
    target_scores = scores[rows, targets]
    return (scores > target_scores[:, None]).sum(axis=1)


def hit_rate_at_k(ranks: np.ndarray, k: int = 10) -> float:
    return float(np.mean(np.asarray(ranks) < k))


def ndcg_at_k(ranks: np.ndarray, k: int = 10) -> float:
    ranks = np.asarray(ranks)
    return float(np.mean(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)))


def mrr(ranks: np.ndarray) -> float:
    return float(np.mean(1.0 / (np.asarray(ranks) + 1.0)))


def rank_summary(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """{"hr@k", "ndcg@k", "mrr", "n_users"} from 0-based target ranks."""
    if len(ranks) == 0:
        raise ValueError("no users to evaluate")
    return {f"hr@{k}": hit_rate_at_k(ranks, k), f"ndcg@{k}": ndcg_at_k(ranks, k), "mrr": mrr(ranks),
            "n_users": int(len(ranks))}


def average_precision_at_k(recommended: Sequence, targets: set, k: int = 12) -> float:
    """Kaggle H&M MAP@k term for one user: sum of precision@i at each hit i <= k, / min(|targets|, k)."""
    if not targets:
        return 0.0
    hits, total = 0, 0.0
    for i, item in enumerate(list(recommended)[:k]):
        if item in targets:
            hits += 1
            total += hits / (i + 1)
    return total / min(len(targets), k)


def recall_at_k(recommended: Sequence, targets: set, k: int = 12) -> float:
    return len(set(list(recommended)[:k]) & targets) / len(targets) if targets else 0.0


def intra_list_diversity(lists: np.ndarray, item_vectors: np.ndarray) -> float:
    """Mean over lists (U, k) of item indices of the mean pairwise cosine distance within a list."""
    lists = np.asarray(lists)
    k = lists.shape[1]
    if k < 2:
        return 0.0
    vectors = item_vectors[lists]                                 # (U, k, d)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-12)
    similarity = np.einsum("ukd,uld->ukl", vectors, vectors)
    upper = np.triu_indices(k, 1)
    return float(np.mean(1.0 - similarity[:, upper[0], upper[1]]))


def catalog_coverage(lists: np.ndarray, n_items: int) -> float:
    return float(len(np.unique(np.asarray(lists))) / n_items)
