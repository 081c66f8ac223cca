"""Pictures a person can judge: query -> top-K image grids and the similarity distribution."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from recsys.data.images import open_checked

from recsys.plots import plt, save_figure, use_korean_font

MAX_K = 100


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k highest inner products per query, best first."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    k = min(k, len(gallery))
    scores = queries @ gallery.T
    index = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, index, axis=1), axis=1)
    index = np.take_along_axis(index, order, axis=1)
    return index, np.take_along_axis(scores, index, axis=1)


def search_grids(query_texts: Sequence[str], queries: np.ndarray, gallery: np.ndarray,
                 gallery_images: Sequence[str], gallery_ids: Sequence[str], out_dir: str | Path,
                 k: int = 20, relevant: Sequence[str] | None = None, note: str = "") -> list[dict]:
    """One PNG per query: its JSON text and the top-k gallery images with scores (the query's own
    item framed in green when ``relevant`` gives it); plus ``results.json`` listing every hit."""
    use_korean_font()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index, scores = top_k(queries, gallery, k)
    listing = []
    columns = min(10, index.shape[1])
    for q, text in enumerate(query_texts):
        rows = int(np.ceil(index.shape[1] / columns))
        fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.1 * rows + 0.8), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        hits = []
        for rank, (g, score) in enumerate(zip(index[q], scores[q])):
            ax = axes.flat[rank]
            ax.imshow(open_checked(gallery_images[g]))
            is_match = relevant is not None and gallery_ids[g] == relevant[q]
            ax.set_title(f"#{rank + 1} {score:.2f}", fontsize=7, color="green" if is_match else "black")
            if is_match:
                ax.axis("on")
                ax.set_xticks([]), ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_edgecolor("green"), spine.set_linewidth(3)
            hits.append({"rank": rank + 1, "item_id": gallery_ids[g], "score": round(float(score), 4),
                         "image": gallery_images[g]})
        fig.suptitle("\n".join(textwrap.wrap(f"query: {text}", 110)) + (f"\n{note}" if note else ""), fontsize=8)
        fig.tight_layout()
        path = save_figure(fig, out_dir / f"query_{q:03d}.png", dpi=90)
        listing.append({"query": text, "grid": str(path), "hits": hits,
                        "own_item_rank": next((h["rank"] for h in hits if relevant and h["item_id"] == relevant[q]), None)})
    (out_dir / "results.json").write_text(json.dumps(listing, ensure_ascii=False, indent=1))
    return listing


def similarity_distribution(queries: np.ndarray, targets: np.ndarray, path: str | Path, title: str,
                            seed: int = 0) -> dict:
    """Histogram of matched-pair vs mismatched-pair cosine similarity; returns the summary numbers."""
    rng = np.random.default_rng(seed)
    positive = np.einsum("ij,ij->i", queries, targets)
    i = rng.integers(0, len(queries), 20 * len(queries))
    j = (i + rng.integers(1, len(queries), len(i))) % len(queries)
    negative = np.einsum("ij,ij->i", queries[i], targets[j])
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(min(positive.min(), negative.min()), max(positive.max(), negative.max()), 60)
    ax.hist(negative, bins=bins, alpha=0.6, density=True, label=f"mismatched pairs (mean {negative.mean():.3f})")
    ax.hist(positive, bins=bins, alpha=0.6, density=True, label=f"matched pairs (mean {positive.mean():.3f})")
    ax.set_xlabel("cosine similarity")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return {"mean_positive": float(positive.mean()), "mean_negative": float(negative.mean()),
            "separation": float(positive.mean() - negative.mean())}
