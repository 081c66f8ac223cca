"""Item-space quality from nearest neighbours, for any item vectors and a category hierarchy.

For each query item we take its top-k neighbours by inner product in the gallery (itself excluded)
and ask what a merchandiser would: are they the same product type, or its confusable siblings?

- ``category_hit@k``: share of the k neighbours with the query's finest category (same
  articleType); a precision, so it is not saturated the way "any hit in k" would be.
- ``sibling_confusion@k``: share of neighbours from a sibling category: same parent (e.g.
  subCategory Topwear), different finest category (Shirts for a Tshirt).
- ``same_vs_sibling_gap``: mean cosine of same-category pairs minus mean cosine of sibling pairs
  (sampled), how far the space keeps a coat from a jacket.
- ``ild@k``: intra-list diversity, mean pairwise distance inside each top-k list measured on the
  items' attribute token sets (1 - Jaccard), so every variant is judged on the same scale rather
  than by its own embedding.
- ``coverage@k``: share of the gallery that appears in at least one top-k list.

Vectors may be dense arrays or scipy sparse rows (TF-IDF baselines), L2-normalised.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp


def top_k_neighbours(queries: np.ndarray, gallery: np.ndarray, k: int, query_ids: np.ndarray | None = None,
                     chunk: int = 2048) -> np.ndarray:
    """(Q, k) gallery indices of the best inner products, best first; ``query_ids[i]`` (the query's
    own gallery index, or -1) is never returned for query i."""
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start:start + chunk] @ gallery.T
        scores = scores.toarray() if sp.issparse(scores) else scores
        if query_ids is not None:
            rows = np.arange(len(scores))
            own = query_ids[start:start + chunk]
            scores[rows[own >= 0], own[own >= 0]] = -np.inf
        index = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, index, axis=1), axis=1)
        out[start:start + chunk] = np.take_along_axis(index, order, axis=1)
    return out


def category_hit(neighbours: np.ndarray, query_fine: np.ndarray, gallery_fine: np.ndarray) -> float:
    return float((gallery_fine[neighbours] == query_fine[:, None]).mean())


def sibling_confusion(neighbours: np.ndarray, query_fine: np.ndarray, query_parent: np.ndarray,
                      gallery_fine: np.ndarray, gallery_parent: np.ndarray) -> float:
    sibling = (gallery_parent[neighbours] == query_parent[:, None]) & (gallery_fine[neighbours] != query_fine[:, None])
    return float(sibling.mean())


def same_vs_sibling_gap(vectors: np.ndarray, fine: np.ndarray, parent: np.ndarray, pairs: int = 200_000,
                        seed: int = 0) -> dict[str, float]:
    """Mean cosine of sampled same-category pairs and of sampled sibling-category pairs, and the gap."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, vectors.shape[0], size=(2, pairs * 4))
    keep = i != j
    i, j = i[keep], j[keep]
    same = fine[i] == fine[j]
    sibling = (parent[i] == parent[j]) & ~same
    cosine = _pair_cosines(vectors, i, j)
    if not same.any() or not sibling.any():
        return {"same_mean": float("nan"), "sibling_mean": float("nan"), "gap": float("nan")}
    same_mean, sibling_mean = float(cosine[same][:pairs].mean()), float(cosine[sibling][:pairs].mean())
    return {"same_mean": same_mean, "sibling_mean": sibling_mean, "gap": same_mean - sibling_mean}


def _pair_cosines(vectors, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    # In chunks of pairs: 800k pairs of 512-d rows gathered at once would take 3.3 GB.
    if not sp.issparse(vectors):
        return np.concatenate([np.einsum("ij,ij->i", vectors[i[s:s + chunk]], vectors[j[s:s + chunk]])
                               for s in range(0, len(i), chunk)] or [np.zeros(0, vectors.dtype)])
    vectors = vectors.tocsr()
    return np.concatenate([np.asarray(vectors[i[s:s + chunk]].multiply(vectors[j[s:s + chunk]]).sum(axis=1)).ravel()
                           for s in range(0, len(i), chunk)] or [np.zeros(0)])


def intra_list_diversity(neighbours: np.ndarray, token_sets: Sequence[frozenset]) -> float:
    """Mean over lists of the mean pairwise (1 - Jaccard) distance of the listed items' attributes."""
    k = neighbours.shape[1]
    a, b = np.triu_indices(k, 1)
    totals = []
    for row in neighbours:
        sets = [token_sets[g] for g in row]
        distances = [1.0 - len(sets[x] & sets[y]) / max(1, len(sets[x] | sets[y])) for x, y in zip(a, b)]
        totals.append(np.mean(distances))
    return float(np.mean(totals))


def coverage(neighbours: np.ndarray, gallery_size: int) -> float:
    return float(len(np.unique(neighbours)) / gallery_size)


def neighbour_report(queries: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray, fine: np.ndarray,
                     parent: np.ndarray, token_sets: Sequence[frozenset], k: int = 10, seed: int = 0) -> dict:
    """Every metric above for ``queries`` (gallery rows ``query_ids``) against the whole gallery.
    ``fine``/``parent``/``token_sets`` describe the gallery rows; the gap uses the query rows."""
    neighbours = top_k_neighbours(queries, gallery, k, query_ids)
    query_fine, query_parent = fine[query_ids], parent[query_ids]
    gap = same_vs_sibling_gap(queries, query_fine, query_parent, seed=seed)
    return {f"category_hit@{k}": category_hit(neighbours, query_fine, fine),
            f"sibling_confusion@{k}": sibling_confusion(neighbours, query_fine, query_parent, fine, parent),
            "same_vs_sibling_gap": gap["gap"], "same_mean_cosine": gap["same_mean"],
            "sibling_mean_cosine": gap["sibling_mean"],
            f"ild@{k}": intra_list_diversity(neighbours, token_sets),
            f"coverage@{k}": coverage(neighbours, gallery.shape[0]), "n_queries": int(queries.shape[0])}


def chance_category_hit(labels: np.ndarray) -> float:
    """``category_hit`` of neighbours drawn at random from the other items: the chance that another
    item shares the query's label, averaged over queries (sum of n_c (n_c - 1) / (N (N - 1)))."""
    n = len(labels)
    if n < 2:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))
