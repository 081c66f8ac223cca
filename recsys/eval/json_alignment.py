"""Evaluation of a JSON encoder aligned to image embeddings: one report used by training and by the
``ray_jobs.evaluate_json_encoder`` command, so both always compute the same numbers.

Both directions (JSON->image and image->JSON), full gallery and in-batch-64 (labelled as such),
Precision/Recall@K, MRR, similarity statistics, per-category accuracy, the similarity distribution,
JSON->image grids, image->JSON panels and the centrality (best-seller proxy) report.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from recsys.data.images import open_checked

from recsys.artifacts import write_json
from recsys.eval.centrality import centrality_report
from recsys.eval.similarity_search import MAX_K, search_grids, similarity_distribution, top_k
from recsys.metrics.retrieval import evaluate_pairs, positive_ranks
from recsys.plots import grouped_bars, plt, save_figure, use_korean_font


@dataclass
class JsonEvalConfig:
    search_k: int = 20          # images per JSON->image grid (1..100)
    search_samples: int = 4     # JSON queries drawn as grids, and image queries drawn as panels
    inbatch: int = 64           # block size of the in-batch protocol
    anchor_share: float = 0.1   # centrality anchor set (best-seller proxy)
    seed: int = 42

    def __post_init__(self):
        if not 1 <= self.search_k <= MAX_K:
            raise ValueError(f"search_k must be between 1 and {MAX_K}, got {self.search_k}")


def per_category_accuracy(queries: np.ndarray, targets: np.ndarray, categories: Sequence[str]) -> dict:
    """Full-gallery Top-1 and Top-5 per category of the query's item (with the category's size)."""
    ranks = positive_ranks(queries, targets)
    grouped: dict[str, list[int]] = {}
    for category, rank in zip(categories, ranks):
        grouped.setdefault(category, []).append(int(rank))
    return {c: {"n": len(r), "top1": round(float(np.mean(np.array(r) < 1)), 4),
                "top5": round(float(np.mean(np.array(r) < 5)), 4)} for c, r in sorted(grouped.items())}


def image_to_json_panels(image_vectors: np.ndarray, json_vectors: np.ndarray, images: Sequence[str],
                         json_texts: Sequence[str], picks: Sequence[int], path: str | Path, k: int = 5,
                         note: str = "") -> list[dict]:
    """One row per picked image query: the image and its top-k attribute JSONs with scores; the
    image's own JSON in green. Returns the listing written beside the PNG."""
    use_korean_font()
    index, scores = top_k(image_vectors[list(picks)], json_vectors, k)
    fig, axes = plt.subplots(len(picks), 2, figsize=(12, 2.4 * len(picks)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 5]})
    listing = []
    for row, query in enumerate(picks):
        axes[row, 0].imshow(open_checked(images[query]))
        axes[row, 0].axis("off")
        text_ax = axes[row, 1]
        text_ax.axis("off")
        hits = []
        for rank, (j, score) in enumerate(zip(index[row], scores[row])):
            own = int(j) == int(query)
            line = textwrap.shorten(f"#{rank + 1} {score:.3f}  {json_texts[j]}", 150)
            text_ax.text(0, 1 - rank / k, line, fontsize=7, va="top", color="green" if own else "black",
                         weight="bold" if own else "normal", transform=text_ax.transAxes)
            hits.append({"rank": rank + 1, "score": round(float(score), 4), "json": json_texts[j], "own": own})
        listing.append({"image": images[query], "hits": hits})
    fig.suptitle(f"image -> JSON: top-{k} attribute records per image (own record in green) {note}".strip(),
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    Path(path).with_suffix(".json").write_text(json.dumps(listing, ensure_ascii=False, indent=1))
    return listing


def evaluate_json_encoder(json_vectors: np.ndarray, image_vectors: np.ndarray, categories: Sequence[str],
                          item_ids: Sequence[str], images: Sequence[str], records: Sequence[dict],
                          out_dir: str | Path, config: JsonEvalConfig | None = None, note: str = "") -> dict:
    """Every number and picture of the JSON<->image evaluation, written under ``out_dir``
    (``metrics.json``, ``*.png``, ``similarity_search/``, ``centrality.json``); returns the metrics.

    Row i of ``json_vectors`` and ``image_vectors`` describe the same item. ``note`` (e.g. the image
    encoder's ``pretrained: none (stand-in)``) is printed on every plot and stored in the metrics.
    """
    config = config or JsonEvalConfig()
    out_dir = Path(out_dir)
    n = len(json_vectors)
    json_texts = [json.dumps(r, ensure_ascii=False) for r in records]
    json_to_image = evaluate_pairs(json_vectors, image_vectors, config.inbatch)
    image_to_json = evaluate_pairs(image_vectors, json_vectors, config.inbatch)
    per_category = {"json_to_image": per_category_accuracy(json_vectors, image_vectors, categories),
                    "image_to_json": per_category_accuracy(image_vectors, json_vectors, categories)}
    distribution = similarity_distribution(json_vectors, image_vectors, out_dir / "similarity_distribution.png",
                                           f"JSON -> image, validation ({note})")
    picks = np.random.default_rng(config.seed).choice(n, size=min(config.search_samples, n), replace=False)
    search_grids([json_texts[i] for i in picks], json_vectors[picks], image_vectors, images, item_ids,
                 out_dir / "similarity_search", k=min(config.search_k, n),
                 relevant=[item_ids[i] for i in picks], note=note)
    image_to_json_panels(image_vectors, json_vectors, images, json_texts, picks, out_dir / "image_to_json.png",
                         k=min(5, n), note=f"({note})")
    central = centrality_report(image_vectors, json_vectors, categories, out_dir / "centrality_per_category.png",
                                anchor_share=config.anchor_share, note=f"({note})")
    write_json(out_dir / "centrality.json", central)
    _protocol_bars(json_to_image, image_to_json, config.inbatch, out_dir / "retrieval_protocols.png", note)
    _per_category_bars(per_category["json_to_image"], out_dir / "per_category_top5.png", note)
    metrics = {"note": note, "n_queries": int(n),
               "protocols": {"full": f"each query ranks all {n} validation items",
                             f"inbatch{config.inbatch}": f"each query ranks its block of {config.inbatch} items"},
               "json_to_image": json_to_image, "image_to_json": image_to_json,
               "per_category": per_category, "similarity_distribution": distribution,
               "centrality_queries": central["queries"],
               "anchor_mean_above_overall": central["anchor_mean_above_overall"]}
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _protocol_bars(json_to_image: dict, image_to_json: dict, block: int, path: Path, note: str) -> None:
    groups = {f"{direction}, {protocol}": {k: report[protocol][k] for k in ("top1", "top5", "top10", "mrr")}
              for direction, report in (("JSON->image", json_to_image), ("image->JSON", image_to_json))
              for protocol in ("full", f"inbatch{block}")}
    grouped_bars(groups, path, f"Retrieval, full gallery vs in-batch-{block} ({note})")


def _per_category_bars(per_category: dict, path: Path, note: str) -> None:
    use_korean_font()
    names = sorted(per_category, key=lambda c: -per_category[c]["top5"])
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4))
    ax.bar(range(len(names)), [per_category[c]["top5"] for c in names])
    ax.set_xticks(range(len(names)), [f"{c} ({per_category[c]['n']})" for c in names], rotation=70, fontsize=7)
    ax.set_ylabel("JSON -> image Top-5 (full gallery)")
    ax.set_title(f"Per-category accuracy ({note})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
