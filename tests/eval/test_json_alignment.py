import json

import numpy as np
import pytest
from PIL import Image

from recsys.eval.json_alignment import JsonEvalConfig, evaluate_json_encoder, per_category_accuracy


def test_per_category_accuracy_by_hand():
    gallery = np.eye(3)
    # query 0 finds its own item first; query 1 ranks its item second (behind item 0); query 2 first.
    queries = np.array([[1.0, 0.0, 0.0], [0.9, 0.5, 0.0], [0.0, 0.0, 1.0]])
    report = per_category_accuracy(queries, gallery, ["coat", "coat", "skirt"])
    assert report == {"coat": {"n": 2, "top1": 0.5, "top5": 1.0}, "skirt": {"n": 1, "top1": 1.0, "top5": 1.0}}


def test_search_k_is_bounded():
    with pytest.raises(ValueError, match="between 1 and 100"):
        JsonEvalConfig(search_k=101)


def test_report_has_both_directions_both_protocols_and_every_picture(tmp_path):
    rng = np.random.default_rng(0)
    n = 130
    images = rng.normal(size=(n, 16))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    queries = images + 0.3 * rng.normal(size=images.shape)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    paths = []
    for i in range(n):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (i, 0, 0)).save(paths[-1])
    categories = ["coat" if i % 2 else "skirt" for i in range(n)]
    records = [{"category": c, "color": [str(i)]} for i, c in enumerate(categories)]
    metrics = evaluate_json_encoder(queries, images, categories, [str(i) for i in range(n)], paths, records,
                                    tmp_path / "out", JsonEvalConfig(search_k=7, search_samples=3),
                                    "pretrained: none (stand-in)")
    assert metrics["json_to_image"]["full"]["n_queries"] == n
    assert metrics["json_to_image"]["inbatch64"]["n_queries"] == 128
    # noise 0.3 in 16-d keeps most pairs closest; in-batch (63 negatives) is never harder than full.
    assert metrics["json_to_image"]["full"]["top1"] > 0.5
    assert metrics["json_to_image"]["inbatch64"]["top1"] >= metrics["json_to_image"]["full"]["top1"] - 0.02
    assert metrics["image_to_json"]["full"]["n_queries"] == n
    assert metrics["json_to_image"]["full"]["recall@5"] == metrics["json_to_image"]["full"]["top5"]
    assert metrics["centrality_queries"]["all"]["n_queries"] == n and metrics["anchor_mean_above_overall"]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["note"] == "pretrained: none (stand-in)"
    grid = json.loads((tmp_path / "out" / "similarity_search" / "results.json").read_text())
    assert len(grid) == 3 and all(len(q["hits"]) == 7 for q in grid)
    panels = json.loads((tmp_path / "out" / "image_to_json.json").read_text())
    assert len(panels) == 3 and all(len(p["hits"]) == 5 for p in panels)
    for name in ("similarity_distribution.png", "image_to_json.png", "centrality_per_category.png",
                 "retrieval_protocols.png", "per_category_top5.png", "centrality.json"):
        assert (tmp_path / "out" / name).is_file(), name
