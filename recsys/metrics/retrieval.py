"""Paired retrieval metrics: query i's one correct answer is gallery item i.

Rank convention: the 0-based rank of the positive is the number of gallery items scoring strictly
higher (ties resolved in the positive's favour, as in most CLIP-style reports). Top-k accuracy =
share of queries with rank < k (= Recall@k with one relevant item; Precision@k = Top-k / k).
"""
from __future__ import annotations

import numpy as np


def positive_ranks(queries: np.ndarray, gallery: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Rank of gallery[i] for queries[i] among all of ``gallery`` (inner product)."""
    if queries.shape != gallery.shape:
        raise ValueError(f"paired retrieval needs equal shapes, got {queries.shape} and {gallery.shape}")
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        scores = q @ gallery.T
        rows = np.arange(len(q))
        # The positive's score is read from the same matrix, so rounding cannot rank it above itself.
        positive = scores[rows, start + rows]
        ranks[start:start + chunk] = (scores > positive[:, None]).sum(axis=1)
    return ranks


def blockwise_ranks(queries: np.ndarray, gallery: np.ndarray, block: int = 64) -> np.ndarray:
    """Ranks within consecutive blocks of ``block`` pairs (the "in-batch-64" protocol); a last
    partial block is dropped so every query competes with exactly block-1 negatives."""
    usable = (len(queries) // block) * block
    return np.concatenate([positive_ranks(queries[s:s + block], gallery[s:s + block])
                           for s in range(0, usable, block)]) if usable else np.empty(0, dtype=np.int64)


def ranking_summary(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Top-k accuracy for each k, precision@k and MRR from 0-based positive ranks."""
    if len(ranks) == 0:
        raise ValueError("no queries to evaluate")
    out = {f"top{k}": float(np.mean(ranks < k)) for k in ks}
    out |= {f"recall@{k}": out[f"top{k}"] for k in ks}  # one relevant item: recall@k = top-k
    out |= {f"precision@{k}": out[f"top{k}"] / k for k in ks}
    out["mrr"] = float(np.mean(1.0 / (ranks + 1)))
    out["n_queries"] = int(len(ranks))
    return out


def similarity_stats(queries: np.ndarray, gallery: np.ndarray, max_negatives: int = 200_000,
                     seed: int = 0) -> dict[str, float]:
    """Mean cosine of positive pairs vs of sampled mismatched pairs, norms and embedding variance."""
    rng = np.random.default_rng(seed)
    positive = np.einsum("ij,ij->i", queries, gallery)
    n = len(queries)
    i = rng.integers(0, n, size=min(max_negatives, n * (n - 1)))
    j = (i + rng.integers(1, n, size=len(i))) % n  # never the pair's own partner
    negative = np.einsum("ij,ij->i", queries[i], gallery[j])
    norms = np.linalg.norm(queries, axis=1)
    return {"mean_positive_similarity": float(positive.mean()), "mean_negative_similarity": float(negative.mean()),
            "query_norm_min": float(norms.min()), "query_norm_max": float(norms.max()),
            "query_embedding_variance": float(queries.var(axis=0).sum())}


def evaluate_pairs(queries: np.ndarray, targets: np.ndarray, block: int = 64) -> dict:
    """Full-gallery and in-batch-``block`` retrieval metrics plus similarity statistics. With fewer
    than ``block`` pairs the in-batch numbers are NaN (n_queries 0) rather than a smaller block's."""
    inbatch = blockwise_ranks(queries, targets, block)
    return {"full": ranking_summary(positive_ranks(queries, targets)),
            f"inbatch{block}": ranking_summary(inbatch) if len(inbatch) else
            {k: (0 if k == "n_queries" else float("nan")) for k in ranking_summary(np.zeros(1, dtype=np.int64))},
            "similarity": similarity_stats(queries, targets)}
