"""The item-tower evaluation's baselines and pictures: TF-IDF of the towers' own input tokens and
zero-shot MiniLM of the same inputs as text (both see exactly what the towers see, withheld fields
included), the ablation as grouped bars and a 2-D projection by category."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from recsys.plots import plt, save_figure, use_korean_font


BASELINES = ("tfidf", "minilm")
TOKEN_GROUPS = ("std", "re", "title")  # the towers' input token arrays (<group>_ids, <group>_mask)


def token_tfidf(features: Mapping[str, np.ndarray], fit_rows: np.ndarray) -> sp.csr_matrix:
    """(N, vocab) L2-normalised TF-IDF rows over the featurizer's token ids (STD, RE and title
    tokens: the towers' inputs). Document frequencies come from ``fit_rows`` only (the training
    items), smoothed as idf = ln((1 + n) / (1 + df)) + 1 so a token no training item has still counts."""
    from recsys.retrieval.content import normalise_rows

    ids = np.concatenate([np.where(features[f"{g}_mask"], features[f"{g}_ids"], 0) for g in TOKEN_GROUPS], axis=1)
    n_rows, width = ids.shape
    vocab = int(ids.max()) + 1
    rows = np.repeat(np.arange(n_rows), width)
    flat = ids.reshape(-1)  # id 0 is padding: weight 0, dropped
    counts = sp.csr_matrix(((flat > 0).astype(np.float32), (rows, flat)), shape=(n_rows, vocab))
    counts.eliminate_zeros()
    df = np.asarray((counts[fit_rows] > 0).sum(axis=0)).ravel()
    idf = np.log((1 + len(fit_rows)) / (1 + df)) + 1
    return normalise_rows(counts @ sp.diags(idf.astype(np.float32)))


def baseline_vectors(name: str, data, cache_dir: str | Path, device: str | None = None):
    """``tfidf`` or ``minilm`` vectors for every item of a prepared catalog
    (``recsys.data.item_catalog.ItemTowerData``): fitted on its training rows / zero-shot.
    ``device``: MiniLM's (None: CUDA when visible)."""
    if name == "tfidf":
        return token_tfidf(data.features, data.train)
    if name == "minilm":
        from recsys.encoders.text import TextEncoderConfig, encode_cached

        return encode_cached(data.texts, TextEncoderConfig(device=device), cache_dir,
                             "item inputs as text (MiniLM, zero-shot)")
    raise ValueError(f"unknown baseline {name!r}; known {list(BASELINES)}")


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
