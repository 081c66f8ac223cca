"""Best-seller proxy by embedding centrality (for catalogs without sales data).

The global centroid of the L2-normalised image embeddings stands for the "typical" product; an item's
centrality is its cosine to that centroid, and the top ``anchor_share`` are the anchor set (the
proxy best sellers). Retrieval is then reported for all queries and for anchor queries alone.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from recsys.metrics.retrieval import positive_ranks, ranking_summary
from recsys.plots import plt, save_figure, use_korean_font


def centrality(vectors: np.ndarray) -> np.ndarray:
    centroid = vectors.mean(axis=0)
    centroid /= max(np.linalg.norm(centroid), 1e-12)
    return vectors @ centroid


def anchor_mask(scores: np.ndarray, anchor_share: float = 0.1) -> np.ndarray:
    n_anchors = max(1, int(round(len(scores) * anchor_share)))
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores)[:n_anchors]] = True
    return mask


def centrality_report(image_vectors: np.ndarray, queries: np.ndarray, categories: Sequence[str],
                      plot_path: str | Path, anchor_share: float = 0.1, note: str = "") -> dict:
    """Centrality per category (plot + numbers), the anchor check, and query-aware retrieval."""
    scores = centrality(image_vectors)
    anchors = anchor_mask(scores, anchor_share)
    by_category = defaultdict(list)
    for category, score in zip(categories, scores):
        by_category[category].append(float(score))
    ranks = positive_ranks(queries, image_vectors)

    def retrieval(selected: np.ndarray) -> dict:
        summary = ranking_summary(ranks[selected], ks=(1, 5, 10))
        return {"top1": summary["top1"], "recall@5": summary["top5"], "recall@10": summary["top10"],
                "n_queries": summary["n_queries"]}

    report = {"anchor_share": anchor_share, "n_items": int(len(scores)), "n_anchors": int(anchors.sum()),
              "mean_centrality": float(scores.mean()), "anchor_mean_centrality": float(scores[anchors].mean()),
              "per_category": {c: {"n": len(v), "mean": float(np.mean(v)), "anchors": int(sum(
                  anchors[i] for i, cat in enumerate(categories) if cat == c))} for c, v in sorted(by_category.items())},
              "queries": {"all": retrieval(np.ones(len(scores), dtype=bool)), "anchor": retrieval(anchors)}}
    report["anchor_mean_above_overall"] = report["anchor_mean_centrality"] > report["mean_centrality"]

    use_korean_font()
    names = sorted(by_category, key=lambda c: -np.median(by_category[c]))
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(names) + 2), 4.5))
    ax.boxplot([by_category[c] for c in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=70, fontsize=7)
    ax.axhline(np.quantile(scores, 1 - anchor_share), color="red", linestyle="--",
               label=f"anchor threshold (top {anchor_share:.0%})")
    ax.set_ylabel("cosine to the global centroid")
    ax.set_title(f"Embedding centrality per category {note}".strip(), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, plot_path)
    return report
