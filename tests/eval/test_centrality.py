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
