"""Pictures of an item space: the ablation as grouped bars and a 2-D projection by category."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from recsys.plots import plt, save_figure, use_korean_font


def ablation_chart(variants: dict, metrics: Sequence[str], path: str | Path, title: str) -> Path:
    """One panel per metric; bars per variant, warm and cold side by side."""
    use_korean_font()
    names = list(variants)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 0.42 * len(names) + 2.2), squeeze=False)
    y = np.arange(len(names))
    for ax, metric in zip(axes[0], metrics):
        for offset, split, colour in ((-0.2, "warm", "tab:blue"), (0.2, "cold", "tab:orange")):
            values = [variants[n].get(split, {}).get(metric, np.nan) for n in names]
            bars = ax.barh(y + offset, values, 0.4, label=split, color=colour)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def projection_plot(vectors: np.ndarray, categories: Sequence[str], cold_rows: np.ndarray, path: str | Path,
                    title: str, sample: int = 3000, top_categories: int = 12, seed: int = 0) -> Path:
    """t-SNE of a sample of items (the most frequent categories coloured, the rest grey; cold-start
    items drawn as crosses)."""
    from sklearn.manifold import TSNE

    use_korean_font()
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False))
    points = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(2, len(rows) // 4))
                  ).fit_transform(vectors[rows])
    categories = np.asarray(categories)[rows]
    is_cold = np.isin(rows, cold_rows)
    names, counts = np.unique(categories, return_counts=True)
    shown = names[np.argsort(-counts)][:top_categories]
    fig, ax = plt.subplots(figsize=(10, 8))
    other = ~np.isin(categories, shown)
    ax.scatter(points[other, 0], points[other, 1], s=4, c="lightgrey", label="other categories")
    colours = plt.get_cmap("tab20")
    for i, name in enumerate(shown):
        for cold, marker, size in ((False, "o", 6), (True, "x", 18)):
            mask = (categories == name) & (is_cold == cold)
            ax.scatter(points[mask, 0], points[mask, 1], s=size, marker=marker, color=colours(i % 20),
                       label=name if not cold else None)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
