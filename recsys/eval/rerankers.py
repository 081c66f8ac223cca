"""Reranked candidate lists -> accuracy and diversity, and the report plots.

Every method is given as scores over the padded lists of ``recsys.data.candidate_lists.CandidateLists``
(higher first; an explicit top-k order such as MMR's becomes scores by :func:`order_scores`). Accuracy
is per user with the metric code of ``recsys.metrics.ranking``: a user whose target is not among
the candidates gets rank ``MISS`` (a miss at every k), so every method shares the ceiling
``candidate_recall`` (also reported, with HR@10 among the users whose target was listed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from recsys.metrics.ranking import (average_precision_at_k, catalog_coverage, hit_rate_at_k, intra_list_diversity,
                                    mrr, ndcg_at_k, target_ranks)
from recsys.plots import save_figure

MISS = 10 ** 9  # rank of a target that is not among the candidates


def list_target_ranks(scores: np.ndarray, label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(U,) 0-based rank of each list's positive among its valid candidates; ``MISS`` if absent."""
    listed = ((label > 0) & mask).any(axis=1)
    ranks = target_ranks(np.where(mask, scores, -np.inf), np.argmax((label > 0) & mask, axis=1))
    return np.where(listed, ranks, MISS)


def fusion_target_ranks(candidates, sequences, index, item_vectors, score_columns: list[str],
                        max_history: int, split: str = "test", users: np.ndarray | None = None) -> np.ndarray:
    """(U,) targets' ranks in a contract's lists ordered by their ``rank_fusion`` column (the sources'
    reciprocal-rank fusion: the untrained order Serve falls back to), ties in the lists' input order
    (``ranker_score``), as Serve breaks them. ``users``: these users' ranks, in that order."""
    import pandas as pd

    from recsys.data.candidate_lists import build_lists

    frame = candidates.sort_values(["user_id", "rank_fusion", "ranker_score"], ascending=[True, False, False],
                                   kind="stable")
    frame = frame.assign(ranker_score=-frame.groupby("user_id").cumcount().astype(np.float32))
    lists = build_lists(frame, sequences, split, index, score_columns, item_vectors, max_history,
                        ranker_features=False)
    ranks = list_target_ranks(lists.ranker_score, lists.label, lists.mask)
    if users is None:
        return ranks
    at = pd.Index(lists.users).get_indexer(users)   # in the order of ``users`` (another build's lists)
    if (at < 0).any():
        raise ValueError(f"{int((at < 0).sum())} users have no {split} candidates")
    return ranks[at]


def order_scores(order: np.ndarray, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scores that put the (U, k) list positions of ``order`` first, in that order, and every other
    candidate after them in the order of ``base`` scores (U, L)."""
    k = order.shape[1]
    base_rank = np.argsort(np.argsort(-np.where(mask, base, -np.inf), axis=1, kind="stable"), axis=1, kind="stable")
    scores = -(k + base_rank).astype(np.float64)
    np.put_along_axis(scores, order, -np.arange(k, dtype=np.float64)[None], axis=1)
    return scores


def top_k_positions(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """(U, k) list positions of the k best valid candidates (stable: ties keep the input order)."""
    return np.argsort(-np.where(mask, scores, -np.inf), axis=1, kind="stable")[:, :k]


def rerank_report(scores: np.ndarray, items: np.ndarray, label: np.ndarray, mask: np.ndarray,
                  item_vectors: np.ndarray, n_catalog: int, k: int = 10) -> dict[str, float]:
    """Accuracy (HR/NDCG/MAP@k, MRR, per user) and diversity (ILD@k from ``item_vectors``,
    catalog coverage of the top k over ``n_catalog`` items) of one method's scores."""
    ranks = list_target_ranks(scores, label, mask)
    listed = ranks < MISS
    top = np.take_along_axis(items, top_k_positions(scores, mask, k), axis=1)
    targets = np.where(listed, items[np.arange(len(items)), np.argmax(label > 0, axis=1)], -1)
    return {f"hr@{k}": hit_rate_at_k(ranks, k), f"ndcg@{k}": ndcg_at_k(ranks, k),
            f"map@{k}": float(np.mean([average_precision_at_k(row, {t}, k) for row, t in zip(top, targets)])),
            "mrr": mrr(ranks), "candidate_recall": float(listed.mean()),
            f"hr@{k}_listed": hit_rate_at_k(ranks[listed], k) if listed.any() else 0.0,
            f"ild@{k}": intra_list_diversity(top, item_vectors), f"coverage@{k}": catalog_coverage(top, n_catalog),
            "n_users": int(len(ranks))}


def tradeoff_plot(curves: Mapping[str, list[dict]], points: Mapping[str, dict], path: str | Path,
                  title: str, accuracy: str = "ndcg@10", diversity: str = "ild@10") -> Path:
    """Accuracy against diversity: one line per MMR curve ({name: [report + "lambda"]}, points
    labelled by lambda), one marker per single method ({name: report})."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, curve in curves.items():
        xs, ys = [c[diversity] for c in curve], [c[accuracy] for c in curve]
        ax.plot(xs, ys, marker="o", label=name)
        for c, x, y in zip(curve, xs, ys):
            ax.annotate(f"λ={c['lambda']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for marker, (name, report) in zip("s^Dv*P", points.items()):
        ax.scatter(report[diversity], report[accuracy], marker=marker, s=70, label=name, zorder=3)
    ax.set_xlabel(f"{diversity} (intra-list diversity, 1 - cosine)")
    ax.set_ylabel(accuracy)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def training_curves(histories: Mapping[str, list[dict]], path: str | Path, title: str) -> Path:
    """Training loss and validation NDCG@10 per epoch, one line per model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] + 1 for h in history]
        axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", markersize=3, label=name)
        axes[1].plot(epochs, [h["val_ndcg@10"] for h in history], marker="o", markersize=3, label=name)
    for ax, name in zip(axes, ("training loss (BCE for DeepFM, listwise loss otherwise)", "validation NDCG@10")):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
