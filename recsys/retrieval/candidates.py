"""Each source's top-N, and their union with per-source features.

:func:`top_n` takes a chunk of full-catalog scores, optionally removes the history (final lists)
and items a source cannot really propose (e.g. zero transitions), and keeps the N best, best first.
:func:`merge` unions the sources' lists per user: one row per (user, item) with, per source,
``score`` (0 when that source did not propose the item: the reranker contract),
``rank`` (0-based position in its list, N when absent) and ``proposed``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np


def exclude_history(scores: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
    """A float32 copy of ``scores`` with every user's history items at -inf."""
    out = np.array(scores, dtype=np.float32, copy=True)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    if len(rows):
        out[rows, np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])] = -np.inf
    return out


def top_n(scores: np.ndarray, n: int, histories: Sequence[np.ndarray] | None = None,
          valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(items, values), each (B, n), best first, without ``histories`` (when given) and items not
    ``valid``; -1 / 0 where a user has fewer than n items left. Equal scores: lower item index first."""
    masked = (exclude_history(scores, histories) if histories is not None
              else np.array(scores, dtype=np.float32, copy=True))
    if valid is not None:
        masked[~valid] = -np.inf
    n = min(n, masked.shape[1])
    if n == 0:
        return np.zeros((len(masked), 0), np.int64), np.zeros((len(masked), 0), np.float32)
    part = np.argpartition(-masked, n - 1, axis=1)[:, :n]
    values = np.take_along_axis(masked, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    items = np.take_along_axis(part, order, axis=1).astype(np.int64)
    values = np.take_along_axis(values, order, axis=1)
    missing = ~np.isfinite(values)
    items[missing] = -1
    values[missing] = 0.0
    return items, values


def break_ties(scores: np.ndarray, order: np.ndarray) -> np.ndarray:
    """float64 ``scores`` plus popularity ``order`` (in (0, 1]) scaled below half the smallest gap
    between distinct scores of the chunk: equal scores are ordered by popularity, unequal ones never
    swap. Why: ``target_ranks`` counts ties in the target's favour, and a list shown to a user would
    order them somehow; sources whose scores are arbitrary reals use this (no fixed step)."""
    values = np.unique(np.r_[0.0, scores[scores != 0]].astype(np.float64))
    step = float(np.diff(values).min()) if len(values) > 1 else 1.0
    return scores.astype(np.float64) + 0.5 * step * np.asarray(order, dtype=np.float64)


@dataclass
class CandidateSet:
    row: np.ndarray                                   # (M,) user row (index into the stage's users)
    item: np.ndarray                                  # (M,) item index
    score: dict[str, np.ndarray]                      # source -> (M,) float32, 0 when not proposed
    rank: dict[str, np.ndarray]                       # source -> (M,) int32, n when not proposed
    proposed: dict[str, np.ndarray]                   # source -> (M,) bool
    features: dict[str, np.ndarray] = field(default_factory=dict)   # ranker inputs, (M,) float32 each

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def concat(cls, parts: Sequence["CandidateSet"]) -> "CandidateSet":
        first = parts[0]
        join = lambda key, attr: np.concatenate([getattr(p, attr)[key] for p in parts])  # noqa: E731
        return cls(np.concatenate([p.row for p in parts]), np.concatenate([p.item for p in parts]),
                   {k: join(k, "score") for k in first.score}, {k: join(k, "rank") for k in first.rank},
                   {k: join(k, "proposed") for k in first.proposed},
                   {k: join(k, "features") for k in first.features})


def merge(rows: np.ndarray, proposals: Mapping[str, tuple[np.ndarray, np.ndarray]], n: int, n_items: int
          ) -> CandidateSet:
    """Union of the sources' lists for users ``rows`` (proposals[name] = (items, values), (B, n)).
    Output rows are sorted by user, then item."""
    rows = np.asarray(rows, dtype=np.int64)
    flat = {}
    for name, (items, values) in proposals.items():
        local, position = np.nonzero(items >= 0)
        flat[name] = (local * n_items + items[local, position], position, values[local, position])
    keys = np.unique(np.concatenate([key for key, _, _ in flat.values()])) if flat else np.zeros(0, np.int64)
    score, rank, proposed = {}, {}, {}
    for name, (key, position, value) in flat.items():
        at = np.searchsorted(keys, key)
        score[name] = np.zeros(len(keys), np.float32)
        rank[name] = np.full(len(keys), n, np.int32)
        proposed[name] = np.zeros(len(keys), bool)
        score[name][at], rank[name][at], proposed[name][at] = value, position, True
    return CandidateSet(rows[keys // n_items], keys % n_items, score, rank, proposed)
