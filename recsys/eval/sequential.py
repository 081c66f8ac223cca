"""Protocol E3 of EVAL.md: sequential next item, leave-last-out, full ranking over all items.

- :func:`leave_last_out`: per user, order the items by the order column (ties keep file order);
  the last item is the test target, the second-to-last the validation target. Every user's
  sequence stays available as training data; only users with >= ``MIN_INTERACTIONS`` are evaluated.
- :class:`SequenceSplit`: the item vocabulary (every item of the log: full ranking is over all of
  them) and the sequences as item indices, with the histories each stage may see:
  ``history("val")`` = items before the validation target, ``history("test")`` = items before the
  test target, and ``training_sequences(stage)`` = what a model fitted for that stage may learn
  from (evaluated users cut before the stage's target, short users whole).
- Baskets: with ``baskets`` (e.g. the purchase day), rows of a user sharing a value form one basket;
  :meth:`SequenceSplit.basket_ids` gives, per sequence, a basket number aligned with the items
  (0, 0, 1, 2, 2, ...). Inside a basket the file order is arbitrary (H&M logs a day's purchases
  in no meaningful order), so basket-aware sources use it instead of adjacency.
- :func:`full_ranking_ranks`: 0-based target ranks of any scorer, computed in user chunks with
  the user's history excluded (``recsys.metrics.ranking.target_ranks``), never a dense U x I matrix.
- :func:`paired_bootstrap`: is method A better than method B on the same users? Per-user metric
  differences, resampled over users (the same resample for both methods), give a 95% interval of
  the mean difference for HR@k, NDCG@k and MRR.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from recsys.metrics.bootstrap import bootstrap_means
from recsys.metrics.ranking import target_ranks
from recsys.progress import progress_bar

MIN_INTERACTIONS = 3
STAGES = ("val", "test")


@dataclass
class SequenceSplit:
    user_ids: np.ndarray              # (U,) str, every user of the log
    item_ids: np.ndarray              # (I,) str, every item of the log (sorted)
    sequences: list[np.ndarray]       # per user, item indices in order
    evaluated: np.ndarray             # (U,) bool: >= MIN_INTERACTIONS, has val and test targets
    baskets: list[np.ndarray] | None = None   # per user, basket number of each item (None: no baskets given)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def eval_rows(self) -> np.ndarray:
        return np.flatnonzero(self.evaluated)

    def history(self, stage: str) -> list[np.ndarray]:
        """Per evaluated user: the items the model sees before the stage's target."""
        cut = _cut(stage)
        return [self.sequences[u][:-cut] for u in self.eval_rows]

    def targets(self, stage: str) -> np.ndarray:
        cut = _cut(stage)
        return np.array([self.sequences[u][-cut] for u in self.eval_rows], dtype=np.int64)

    @property
    def has_baskets(self) -> bool:
        """Whether any basket holds two or more items."""
        return self.baskets is not None and any(len(b) > 1 and bool((np.diff(b) == 0).any()) for b in self.baskets)

    def basket_ids(self, which: str) -> list[np.ndarray]:
        """Basket numbers aligned with ``history(stage)`` (``which`` = "val" | "test") or with
        ``training_sequences(stage)`` (``which`` = "train_val" | "train_test"); without baskets every
        item is its own basket."""
        stage = which.removeprefix("train_")
        cut = _cut(stage)
        baskets = self.baskets or [np.arange(len(s), dtype=np.int64) for s in self.sequences]
        if which.startswith("train_"):
            return [b[:-cut] if ev else b for b, ev in zip(baskets, self.evaluated)]
        return [baskets[u][:-cut] for u in self.eval_rows]

    def training_sequences(self, stage: str) -> list[np.ndarray]:
        """Everything a model for ``stage`` may learn from: evaluated users up to (not including)
        the stage's target, users too short to evaluate with their whole sequence."""
        cut = _cut(stage)
        return [seq[:-cut] if ev else seq for seq, ev in zip(self.sequences, self.evaluated)]


def _cut(stage: str) -> int:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return 2 if stage == "val" else 1


def leave_last_out(users: Sequence, items: Sequence, order: Sequence,
                   min_interactions: int = MIN_INTERACTIONS, baskets: Sequence | None = None) -> SequenceSplit:
    """Group a log into ordered per-user sequences. ``order`` is a timestamp or a position; equal
    values keep the rows' order in the input (a stable sort), as the interaction adapters do.
    ``baskets``: optional per-row basket key (e.g. the timestamp); a user's consecutive rows with
    equal keys are one basket."""
    users = np.asarray(users).astype(str)
    items = np.asarray(items).astype(str)
    order = np.asarray(order)
    if not (len(users) == len(items) == len(order)) or (baskets is not None and len(baskets) != len(users)):
        raise ValueError("users, items, order (and baskets) must have the same length")
    user_ids, user_index = np.unique(users, return_inverse=True)
    item_ids, item_index = np.unique(items, return_inverse=True)
    # lexsort is stable: the last key (user) first, then order, then input position.
    rows = np.lexsort((np.arange(len(users)), order, user_index))
    sorted_items = item_index[rows].astype(np.int64)
    bounds = np.flatnonzero(np.diff(user_index[rows])) + 1
    sequences = np.split(sorted_items, bounds) if len(rows) else []
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    basket_ids = None
    if baskets is not None and len(rows):
        key = np.unique(np.asarray(baskets), return_inverse=True)[1].reshape(-1)[rows]
        # a new basket where the user or the key changes; numbered from 0 within each user
        new = np.r_[True, (np.diff(key) != 0) | (np.diff(user_index[rows]) != 0)]
        counter = np.cumsum(new) - 1
        basket_ids = [c - c[0] for c in np.split(counter, bounds)]
    return SequenceSplit(user_ids, item_ids, sequences, lengths >= min_interactions, basket_ids)


def full_ranking_ranks(score_chunk: Callable[[np.ndarray], np.ndarray], targets: np.ndarray,
                       histories: Sequence[np.ndarray], chunk_size: int = 1024,
                       progress: str | None = None) -> np.ndarray:
    """Target ranks of a scorer over all items. ``score_chunk(rows)`` returns the (len(rows), I)
    scores of those users (rows index ``targets``/``histories``); history items are excluded."""
    out = []
    starts = range(0, len(targets), chunk_size)
    for start in progress_bar(starts, progress):
        rows = np.arange(start, min(start + chunk_size, len(targets)))
        out.append(target_ranks(score_chunk(rows), targets[rows], [histories[r] for r in rows]))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def per_user_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Each user's HR@k, NDCG@k and reciprocal rank from 0-based target ranks (their means are
    ``recsys.metrics.ranking.rank_summary``)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return {f"hr@{k}": (ranks < k).astype(np.float64),
            f"ndcg@{k}": np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0),
            "mrr": 1.0 / (ranks + 1.0)}


def paired_bootstrap(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int = 10, samples: int = 2000,
                     seed: int = 0) -> dict:
    """A minus B on the same users: per metric the mean difference, its 95% percentile bootstrap
    interval (users drawn with replacement, ``samples`` times) and the share of resamples where A
    is not better (a one-sided bootstrap p-value); plus how many users only A / only B hit in the
    top k. ``ranks_a[u]`` and ``ranks_b[u]`` must be the same user's target."""
    ranks_a, ranks_b = np.asarray(ranks_a), np.asarray(ranks_b)
    if ranks_a.shape != ranks_b.shape or ranks_a.ndim != 1 or len(ranks_a) == 0:
        raise ValueError("paired_bootstrap needs two equally long, non-empty rank arrays of the same users")
    a, b = per_user_metrics(ranks_a, k), per_user_metrics(ranks_b, k)
    rng = np.random.default_rng(seed)
    out = {"samples": samples, "users": int(len(ranks_a))}
    for name in a:
        difference = a[name] - b[name]
        means = bootstrap_means(difference, samples, rng)
        low, high = np.percentile(means, [2.5, 97.5])
        out[name] = {"difference": round(float(difference.mean()), 4), "ci95": [round(float(low), 4),
                                                                               round(float(high), 4)],
                     "p_not_better": round(float(np.mean(means <= 0)), 4)}
    hit_a, hit_b = ranks_a < k, ranks_b < k
    out[f"users_hit_only_a@{k}"] = int(np.sum(hit_a & ~hit_b))
    out[f"users_hit_only_b@{k}"] = int(np.sum(hit_b & ~hit_a))
    return out
