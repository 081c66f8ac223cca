"""Hit rates of top-k recommendation lists against held-out purchases.

- ``hit@k``: share of customers with at least one of their held-out articles in their top k.
- ``category_hit@k``: share of customers with at least one top-k article whose category is among
  the categories of their held-out articles (a coarser "right kind of product" signal).
- :func:`chance_hit_at_k`: the expected ``hit@k`` of a uniformly random top k, the floor any
  ranking must clear.

Flags are returned per customer so callers can aggregate overall and per group (persona).
"""
from __future__ import annotations

from math import comb
from typing import Sequence

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) column indices of the highest scores, best first; equal scores keep column order
    (stable), so ties are broken by candidate order and never by chance."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def top_k_distinct(scores: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) like :func:`top_k`, but at most one candidate per group (``groups[i]``: candidate i's
    category): each row's best candidate of each of its k best groups; with fewer than k groups the
    rest of the list continues in score order."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty((len(scores), k), dtype=np.int64)
    for row, ranked in enumerate(order):
        _, first = np.unique(groups[ranked], return_index=True)      # each group's best position
        positions = np.sort(first)[:k]
        if len(positions) < k:
            positions = np.r_[positions, np.setdiff1d(np.arange(len(ranked)), positions)[:k - len(positions)]]
        out[row] = ranked[positions]
    return out


def hit_flags(top: np.ndarray, relevant: Sequence[set]) -> np.ndarray:
    """Per row: is any of the top-k candidate indices in the row's relevant set?"""
    return np.array([bool(relevant[row] & set(top[row].tolist())) for row in range(len(top))], dtype=bool)


def category_hit_flags(top: np.ndarray, relevant_categories: Sequence[set], category: np.ndarray) -> np.ndarray:
    """Per row: is any top-k candidate's category (``category[i]``) among the row's held-out categories?
    Categories, not candidate indices: a held-out article outside the candidates still names its category."""
    return np.array([any(category[i] in relevant_categories[row] for i in top[row]) for row in range(len(top))],
                    dtype=bool)


def hit_at_k(top: np.ndarray, relevant: Sequence[set]) -> float:
    return float(hit_flags(top, relevant).mean()) if len(top) else float("nan")


def category_hit_at_k(top: np.ndarray, relevant_categories: Sequence[set], category: np.ndarray) -> float:
    return float(category_hit_flags(top, relevant_categories, category).mean()) if len(top) else float("nan")


def chance_hit_at_k(n_relevant: Sequence[int], n_candidates: int, k: int) -> float:
    """Mean over rows of P(a uniformly random k-subset of n candidates contains one of r relevant)
    = 1 - C(n - r, k) / C(n, k)."""
    if not len(n_relevant):
        return float("nan")
    k = min(k, n_candidates)
    return float(np.mean([1 - comb(n_candidates - r, k) / comb(n_candidates, k) for r in n_relevant]))
