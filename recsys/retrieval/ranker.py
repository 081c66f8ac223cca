"""The learned ranker that orders merged candidates.

A gradient-boosted tree classifier (scikit-learn's ``HistGradientBoostingClassifier``) on the
candidates' per-source scores and ranks, pointwise (the user's next item or not), trained on the
validation targets. Why this one: which source to trust depends on the user and the item (a
transition count means a lot after a frequently-followed item and little after a rare one, the
tower matters when transitions are absent), which trees learn from raw, unscaled features without
feature engineering; histogram GBDT fits millions of rows in seconds on 2 cores. There is one
relevant item per user, so a pairwise/listwise objective (LambdaMART) has little to add over a
pointwise one and scikit-learn ships none. ``kind: logistic`` (standardised logistic regression)
is the linear control. ``kind: auto`` (the default) keeps the one with the better hit@k on
held-out users, by ``selection_folds``-fold cross-validation over users (each fold held out once,
hits summed): trees need data, and on a small log (H&M's 1,100 users give ~200 validation targets
among the candidates) the linear model may generalise better; one random half split decided that
on ~100 targets and flipped between seeds, every user counting once lowers that noise.
The same folds give every fitted row a held-out score (``held_out_scores``, a model fitted
without that row's user): ``recsys.retrieval.ordering`` compares the learned order with its
fallbacks on them. Negatives are subsampled per user (``negatives_per_user``); the positive is
always kept, which shifts probabilities but not the order within a user.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

KINDS = ("auto", "gbdt", "logistic")


@dataclass
class RankerConfig:
    kind: str = "auto"
    negatives_per_user: int = 50
    k: int = 10                   # hit@k among a user's candidates decides ``auto``
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    selection_folds: int = 2      # folds of users for held-out scores (2: each half held out once)
    threads: int | None = 1       # OpenMP threads for fitting/scoring; None: all cores (see fit)
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ranker.kind must be one of {KINDS}, got {self.kind!r}")


def sample_per_group(labels: np.ndarray, groups: np.ndarray, negatives: int, seed: int = 0) -> np.ndarray:
    """Row indices: every positive plus up to ``negatives`` random negatives of each group."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    rng = np.random.default_rng(seed)
    negative = labels == 0
    # Rank the negatives of each group in random order, keep the first ``negatives``.
    neg_rows = np.flatnonzero(negative)
    order = neg_rows[np.lexsort((rng.random(len(neg_rows)), groups[neg_rows]))]
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = np.concatenate([np.flatnonzero(~negative), order[position < negatives]])
    return np.sort(keep)


def hits_within_groups(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Share of groups (users) whose positive has fewer than k candidates scoring strictly higher;
    groups without a positive count as misses."""
    groups = np.unique(groups, return_inverse=True)[1].reshape(-1)
    n = groups.max() + 1 if len(groups) else 0
    positive = np.full(n, np.inf)
    positive[groups[labels == 1]] = scores[labels == 1]
    higher = np.bincount(groups, weights=scores > positive[groups], minlength=n)
    return float(np.mean(np.isfinite(positive) & (higher < k))) if n else 0.0


class CandidateRanker:
    def __init__(self, config: RankerConfig, feature_names: Sequence[str]):
        self.config = config
        self.feature_names = list(feature_names)
        self.model = None
        self.kind = config.kind
        self.n_train_rows = 0
        self.selection: dict[str, float] = {}
        self.held_out_scores: np.ndarray | None = None   # cross-fitted scores of the fitted rows (``fit``)

    def _build(self, kind: str):
        if kind == "gbdt":
            from sklearn.ensemble import HistGradientBoostingClassifier

            config = self.config
            return HistGradientBoostingClassifier(max_iter=config.max_iter, learning_rate=config.learning_rate,
                                                  max_leaf_nodes=config.max_leaf_nodes, early_stopping=True,
                                                  validation_fraction=0.1, n_iter_no_change=20,
                                                  random_state=config.seed)
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))

    def fit(self, features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
            held_out_scores: bool = False) -> "CandidateRanker":
        """Fit on every group's sampled rows; ``kind: auto`` first compares the kinds on held-out
        scores. ``held_out_scores`` keeps the chosen kind's (cross-fitted for a fixed kind, which
        costs ``selection_folds`` more fits) in :attr:`held_out_scores`."""
        if labels.sum() == 0 or labels.sum() == len(labels):
            raise ValueError("the ranker needs positive and negative candidates (no target among the candidates?)")
        from threadpoolctl import threadpool_limits

        rows = sample_per_group(labels, groups, self.config.negatives_per_user, self.config.seed)
        # Why a thread limit: on a shared 2-core machine OpenMP's spinning threads made the same
        # fit 30x slower than one thread; set ``threads`` on dedicated machines.
        with threadpool_limits(self.config.threads):
            kinds = ("gbdt", "logistic") if self.config.kind == "auto" else (self.config.kind,)
            needed = self.config.kind == "auto" or held_out_scores
            held_out = self._cross_fit(kinds, features, labels, groups, rows) if needed else None
            if self.config.kind == "auto":
                self.kind = self._select(held_out, labels, groups)
            self.held_out_scores = held_out[self.kind] if held_out and held_out_scores else None
            self.model = self._build(self.kind).fit(features[rows], labels[rows])
        self.n_train_rows = int(len(rows))
        return self

    def _cross_fit(self, kinds, features, labels, groups, rows) -> dict[str, np.ndarray] | None:
        """Each kind's scores of every row by a model fitted without that row's user: users in
        ``selection_folds`` folds, each fold scored by a model trained on the others' sampled rows.
        None when a fold leaves too few targets to fit."""
        users = np.unique(groups)
        folds = max(2, self.config.selection_folds)
        fold_of_user = np.empty(len(users), np.int64)
        fold_of_user[np.random.default_rng(self.config.seed).permutation(len(users))] = np.arange(len(users)) % folds
        fold = fold_of_user[np.searchsorted(users, groups)]
        out = {kind: np.zeros(len(labels), np.float64) for kind in kinds}
        for held_fold in range(folds):
            held = fold == held_fold
            fit_rows = rows[~held[rows]]
            if labels[fit_rows].min() == labels[fit_rows].max():
                return None
            for kind in kinds:
                out[kind][held] = self._build(kind).fit(features[fit_rows], labels[fit_rows]).predict_proba(
                    features[held])[:, 1]
        return out

    def _select(self, held_out: dict[str, np.ndarray] | None, labels, groups) -> str:
        """The kind with more users hit in the top k by held-out scores (every user held out once)."""
        if held_out is None:
            return "logistic"                     # too few targets to compare; the simpler model
        self.selection = {kind: round(hits_within_groups(scores, labels, groups, self.config.k), 4)
                          for kind, scores in held_out.items()}
        return max(("logistic", "gbdt"), key=lambda kind: self.selection[kind])   # a tie: the simpler

    def predict(self, features: np.ndarray, batch_size: int = 1_000_000) -> np.ndarray:
        """P(next item) per candidate, float32, in batches (bounded memory on millions of rows)."""
        from threadpoolctl import threadpool_limits

        if self.model is None:
            raise RuntimeError("fit the ranker first")
        with threadpool_limits(self.config.threads):
                return np.concatenate([self.model.predict_proba(features[s:s + batch_size])[:, 1].astype(np.float32)
                                   for s in range(0, len(features), batch_size)] or [np.zeros(0, np.float32)])

    def summary(self) -> dict:
        out = {"kind": self.kind, "configured": self.config.kind, "features": self.feature_names,
               "train_rows": self.n_train_rows}
        if self.selection:
            out[f"selection_hit@{self.config.k}_held_out_users"] = self.selection
        if self.kind == "gbdt" and self.model is not None:
            out["iterations"] = int(self.model.n_iter_)
        return out
