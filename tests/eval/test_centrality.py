import numpy as np
import pytest

from recsys.eval.centrality import anchor_mask, centrality, centrality_report


def test_centrality_is_cosine_to_the_normalised_centroid():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # centroid (2/3, 1/3) normalised = (2, 1)/sqrt(5)
    assert centrality(vectors) == pytest.approx([2 / 5 ** 0.5, 1 / 5 ** 0.5, 2 / 5 ** 0.5])
    assert anchor_mask(np.array([0.1, 0.9, 0.5, 0.3]), 0.25).tolist() == [False, True, False, False]


def test_report_checks_anchors_and_splits_queries(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    report = centrality_report(vectors, vectors, ["a", "b"] * 25, tmp_path / "c.png")
    assert report["n_anchors"] == 5 and report["anchor_mean_above_overall"]
    assert report["queries"]["all"]["top1"] == 1.0 and report["queries"]["anchor"]["n_queries"] == 5
    assert set(report["per_category"]) == {"a", "b"} and (tmp_path / "c.png").is_file()


def test_similarity_outputs_create_their_folders(tmp_path):
    from recsys.eval.similarity_search import search_grids, similarity_distribution, top_k
    from PIL import Image

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index, scores = top_k(vectors, vectors, 3)
    assert index[:, 0].tolist() == list(range(6)) and (np.diff(scores, axis=1) <= 0).all()
    stats = similarity_distribution(vectors, vectors, tmp_path / "new" / "dist.png", "t")
    assert stats["mean_positive"] == pytest.approx(1.0) and (tmp_path / "new" / "dist.png").is_file()
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.new("RGB", (20, 30), (40 * i, 0, 0)).save(paths[-1])
    listing = search_grids(["q0"], vectors[:1], vectors, paths, [f"i{i}" for i in range(6)], tmp_path / "grid", k=3,
                           relevant=["i0"])
    assert listing[0]["own_item_rank"] == 1 and (tmp_path / "grid" / "query_000.png").is_file()
    with pytest.raises(ValueError, match="between 1 and 100"):
        top_k(vectors, vectors, 101)
